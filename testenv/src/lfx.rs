//! A real lfx runtime (Langflow's executor, installed from PyPI into a venv
//! under the cache by `xtask/python/venv.sh`), serving flows on
//! loopback from a flow directory, behind an API key.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Error, free_port, workspace_root};

/// The lfx release the tests and `cargo xtask up` run.
pub const LFX: &str = "lfx==1.13.0";

/// The directory of the lfx venv, installing it first when it is missing.
/// `CMP_LFX_DIR` points at another install.
pub fn install() -> Result<PathBuf, Error> {
    match std::env::var_os("CMP_LFX_DIR") {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => python_venv("lfx", LFX),
    }
}

/// The venv `name` with the PyPI package `spec` (`package==version`),
/// installed by `xtask/python/venv.sh` under the cache when missing.
pub fn python_venv(name: &str, spec: &str) -> Result<PathBuf, Error> {
    crate::control_plane::run_install_script("xtask/python/venv.sh", &[name, spec])
}

/// An example flow of `examples/flows/` (for example "echo.json"), as a `file://` URL, with its sha256.
pub fn example_flow(file: &str) -> Result<(String, String), Error> {
    use sha2::Digest;
    let path = workspace_root().join("examples/flows").join(file);
    let bytes = std::fs::read(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
    Ok((format!("file://{}", path.display()), hex::encode(sha2::Sha256::digest(&bytes))))
}

/// The connector gateway the example flows call tools through: the one `cargo xtask up` runs.
pub const EXAMPLE_CONNECTOR_GATEWAY: &str = "http://127.0.0.1:8000";

/// The example flow `file` calling tools through the connector gateway at `gateway` instead of
/// [`EXAMPLE_CONNECTOR_GATEWAY`], written under `dir`: a `file://` URL with its sha256.
pub fn example_flow_through(file: &str, gateway: &str, dir: &Path) -> Result<(String, String), Error> {
    use sha2::Digest;
    let source = workspace_root().join("examples/flows").join(file);
    let text = std::fs::read_to_string(&source)
        .map_err(|source_error| Error::Io { path: source.clone(), source: source_error })?;
    let needle = format!("\"{EXAMPLE_CONNECTOR_GATEWAY}/v1/connectors/");
    if !text.contains(&needle) {
        return Err(Error::Process(format!("{} calls no tool through {EXAMPLE_CONNECTOR_GATEWAY}", source.display())));
    }
    let text = text.replace(&needle, &format!("\"{}/v1/connectors/", gateway.trim_end_matches('/')));
    std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
    let path = dir.join(file);
    std::fs::write(&path, &text).map_err(|source| Error::Io { path: path.clone(), source })?;
    Ok((format!("file://{}", path.display()), hex::encode(sha2::Sha256::digest(text.as_bytes()))))
}

/// A running `lfx serve`. Dropping it stops the process.
pub struct Lfx {
    child: std::process::Child,
    url: String,
    api_key: String,
    log: PathBuf,
}

impl Lfx {
    /// Starts `lfx serve` on a free port with an empty flow directory under `dir`, and waits until `/health` answers.
    pub async fn start(dir: &Path, api_key: &str) -> Result<Self, Error> {
        Self::start_on(dir, api_key, free_port()?).await
    }

    /// Like [`Lfx::start`], on `port` (lfx silently moves to the next port
    /// when `port` is taken, so a taken port fails the health check).
    pub async fn start_on(dir: &Path, api_key: &str, port: u16) -> Result<Self, Error> {
        Self::start_at(dir, api_key, std::net::Ipv4Addr::LOCALHOST, port).await
    }

    /// Like [`Lfx::start_on`], listening on `address` instead of loopback
    /// (a node's bridge, for pods to reach).
    pub async fn start_at(dir: &Path, api_key: &str, address: std::net::Ipv4Addr, port: u16) -> Result<Self, Error> {
        if std::net::TcpListener::bind((address, port)).is_err() {
            return Err(Error::Process(format!(
                "port {port} is taken; stop what listens there (lfx would silently move)"
            )));
        }
        wait_out_time_wait(address, port).await?;
        let venv = install()?;
        let flows = dir.join("flows");
        std::fs::create_dir_all(&flows).map_err(|source| Error::Io { path: flows.clone(), source })?;
        let log = dir.join("lfx.log");
        let file = std::fs::File::create(&log).map_err(|source| Error::Io { path: log.clone(), source })?;
        let err = file.try_clone().map_err(|source| Error::Io { path: log.clone(), source })?;
        let binary = venv.join("bin/lfx");
        let child = Command::new(&binary)
            .args(["serve", "--flow-dir"])
            .arg(&flows)
            .args(["--host", &address.to_string(), "--port", &port.to_string(), "--log-level", "warning"])
            .env("LANGFLOW_API_KEY", api_key)
            .env("DO_NOT_TRACK", "true")
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Spawn { binary: binary.display().to_string(), source })?;
        let lfx = Self { child, url: format!("http://{address}:{port}"), api_key: api_key.to_string(), log };
        lfx.wait_healthy().await?;
        Ok(lfx)
    }

    async fn wait_healthy(&self) -> Result<(), Error> {
        // A keep-alive client, dropped on return: this side closes first, so
        // the runtime's port is not left in TIME_WAIT when it stops.
        let http = reqwest::Client::new();
        let url = format!("{}/health", self.url);
        for _ in 0..240 {
            if http.get(&url).send().await.is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(Error::not_ready(format!("lfx did not answer GET {url} within 60 s"), &self.log))
    }

    /// The base URL, `http://<address>:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The API key it requires in `x-api-key`.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }
}

impl Drop for Lfx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// lfx checks its port with a bind that does not reuse addresses, so the
/// connections a stopped runtime left in TIME_WAIT (up to a minute) make it
/// move to another port. Waits until such a bind succeeds, saying why.
async fn wait_out_time_wait(address: std::net::Ipv4Addr, port: u16) -> Result<(), Error> {
    let bindable = || {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, socket};
        socket(AddressFamily::Inet, SockType::Stream, SockFlag::empty(), None)
            .and_then(|fd| {
                bind(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    &SockaddrIn::from(std::net::SocketAddrV4::new(address, port)),
                )
            })
            .is_ok()
    };
    if bindable() {
        return Ok(());
    }
    eprintln!(
        "port {port} still holds connections of a runtime that just stopped (TIME_WAIT); waiting for them to expire ..."
    );
    for _ in 0..150 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        if bindable() {
            return Ok(());
        }
    }
    Err(Error::Process(format!(
        "port {port} stayed unusable for 75 s (lfx would silently move); see `ss -tan sport = :{port}`"
    )))
}
