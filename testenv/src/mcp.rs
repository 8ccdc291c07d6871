//! A real MCP server and a real MCP client, both the official MCP Python SDK
//! (PyPI `mcp`, installed into a venv under the cache by
//! `xtask/python/venv.sh`), for the connector gateway's tests:
//!
//! - [`TicketDesk`]: `gateway/tests/mcp/tickets_server.py`, a ticket desk
//!   over Streamable HTTP on loopback that refuses (401) any request without
//!   one of the credentials it was started with, and answers each tool call
//!   with the tenant whose credential it got;
//! - [`client`]: `gateway/tests/mcp/client.py`, the SDK's `Client`, which
//!   runs steps (list the tools, call one) and reports each as JSON.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::control_plane::workspace_root;
use crate::{Error, free_port};

/// The `mcp` release the tests run.
pub const MCP: &str = "mcp==2.3.0";

/// The venv with the MCP SDK, installed into the cache on first use.
pub fn venv() -> Result<PathBuf, Error> {
    crate::lfx::python_venv("mcp", MCP)
}

fn python() -> Result<PathBuf, Error> {
    Ok(venv()?.join("bin/python"))
}

fn script(name: &str) -> PathBuf {
    workspace_root().join("gateway/tests/mcp").join(name)
}

/// A running ticket desk; dropping it stops the process.
pub struct TicketDesk {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl TicketDesk {
    /// Serves on a free loopback port, taking the credentials of `credentials`
    /// (presented header value, tenant) in the header `header`.
    pub async fn start(credentials: &[(&str, &str)], header: &str, log: PathBuf) -> Result<Self, Error> {
        Self::start_on(credentials, header, log, free_port()?).await
    }

    /// Like [`TicketDesk::start`], on `port`.
    pub async fn start_on(credentials: &[(&str, &str)], header: &str, log: PathBuf, port: u16) -> Result<Self, Error> {
        let map: serde_json::Map<String, Value> =
            credentials.iter().map(|(value, tenant)| (value.to_string(), Value::from(*tenant))).collect();
        let file = std::fs::File::create(&log).map_err(|source| Error::Io { path: log.clone(), source })?;
        let err = file.try_clone().map_err(|source| Error::Io { path: log.clone(), source })?;
        let python = python()?;
        let child = Command::new(&python)
            .arg(script("tickets_server.py"))
            .arg(port.to_string())
            .env("TICKETS_CREDENTIALS", Value::Object(map).to_string())
            .env("TICKETS_HEADER", header)
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Spawn { binary: python.display().to_string(), source })?;
        let desk = Self { child, port, log };
        for _ in 0..120 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(desk);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(Error::not_ready(format!("the MCP ticket desk did not listen on port {port} within 30 s"), &desk.log))
    }

    /// The port it serves on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TicketDesk {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the SDK's client against `url` with `Authorization: Bearer <token>`
/// in `mode` (`auto` or `legacy`) through `steps` (`["list"]`, `["call", name, args]`):
/// one JSON report per step, or one `{"error"}` when it could not connect.
pub async fn client(url: &str, token: &str, mode: &str, steps: &Value) -> Result<Vec<Value>, Error> {
    let python = python()?;
    let output = tokio::process::Command::new(&python)
        .arg(script("client.py"))
        .args([url, token, mode, &steps.to_string()])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), output)
        .await
        .map_err(|_| Error::Process("the MCP client did not finish within 90 s".into()))?
        .map_err(|source| Error::Spawn { binary: python.display().to_string(), source })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let reports: Vec<Value> = stdout.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    if reports.is_empty() {
        return Err(Error::Process(format!(
            "the MCP client reported nothing: {}",
            String::from_utf8_lossy(&output.stderr).chars().take(2000).collect::<String>()
        )));
    }
    Ok(reports)
}
