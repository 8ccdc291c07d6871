//! A real Langflow backend (the full server, `langflow` from PyPI, installed
//! with uv into a venv under the cache by `xtask/python/uv-venv.sh`; pip
//! spends many minutes resolving its dependencies, uv about a minute cold).
//!
//! It runs on loopback with its own SQLite database under the test's
//! directory, a superuser and automatic login off, so every call needs the API
//! key [`Langflow::start`] creates. Unlike lfx it keeps each run's messages
//! per session, serves the `v1` run API and registers flows through
//! `/api/v1/flows/`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::{Error, free_port};

/// The Langflow release the tests run.
pub const LANGFLOW: &str = "langflow==1.13.0";

const SUPERUSER: &str = "cmp-admin";

/// The directory of the Langflow venv, installing it first when it is missing.
/// `CMP_LANGFLOW_DIR` points at another install.
pub fn install() -> Result<PathBuf, Error> {
    match std::env::var_os("CMP_LANGFLOW_DIR") {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => crate::control_plane::run_install_script("xtask/python/uv-venv.sh", &["langflow", LANGFLOW]),
    }
}

/// A running Langflow backend. Dropping it stops its whole process group.
pub struct Langflow {
    child: std::process::Child,
    url: String,
    api_key: String,
    log: PathBuf,
}

impl Langflow {
    /// Starts Langflow on a free port with its state under `dir`, waits until it is healthy (about 40 s on two
    /// cores) and creates an API key for its superuser.
    pub async fn start(dir: &Path) -> Result<Self, Error> {
        let venv = install()?;
        let port = free_port()?;
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        let log = dir.join("langflow.log");
        let file = std::fs::File::create(&log).map_err(|source| Error::Io { path: log.clone(), source })?;
        let err = file.try_clone().map_err(|source| Error::Io { path: log.clone(), source })?;
        let password = hex::encode(rand::random::<[u8; 16]>());
        let binary = venv.join("bin/langflow");
        let child = Command::new(&binary)
            .args(["run", "--backend-only", "--workers", "1", "--host", "127.0.0.1", "--port", &port.to_string()])
            .env("LANGFLOW_CONFIG_DIR", dir.join("config"))
            .env("LANGFLOW_DATABASE_URL", format!("sqlite:///{}", dir.join("langflow.db").display()))
            .env("LANGFLOW_AUTO_LOGIN", "false")
            .env("LANGFLOW_SUPERUSER", SUPERUSER)
            .env("LANGFLOW_SUPERUSER_PASSWORD", &password)
            .env("LANGFLOW_LOG_LEVEL", "warning")
            .env("DO_NOT_TRACK", "true")
            .stdout(file)
            .stderr(err)
            // Its own process group: Langflow forks a server and a worker, and all of them stop together.
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn { binary: binary.display().to_string(), source })?;
        let mut langflow = Self { child, url: format!("http://127.0.0.1:{port}"), api_key: String::new(), log };
        langflow.wait_healthy().await?;
        langflow.api_key = langflow.create_api_key(&password).await?;
        Ok(langflow)
    }

    async fn wait_healthy(&self) -> Result<(), Error> {
        let http = reqwest::Client::new();
        let url = format!("{}/health_check", self.url);
        for _ in 0..720 {
            if http.get(&url).send().await.is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(Error::not_ready(format!("Langflow did not answer GET {url} within 180 s"), &self.log))
    }

    /// Logs in as the superuser and creates an API key (`POST /api/v1/login`, `POST /api/v1/api_key/`).
    async fn create_api_key(&self, password: &str) -> Result<String, Error> {
        let http = reqwest::Client::new();
        let login =
            http.post(format!("{}/api/v1/login", self.url)).form(&[("username", SUPERUSER), ("password", password)]);
        let login = answer(login, "the superuser's login").await?;
        let token = login["access_token"]
            .as_str()
            .ok_or_else(|| Error::Process(format!("Langflow's login gave no access token: {login}")))?;
        let create =
            http.post(format!("{}/api/v1/api_key/", self.url)).bearer_auth(token).json(&json!({"name": "cmp"}));
        let created = answer(create, "creating an API key").await?;
        created["api_key"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| Error::Process(format!("Langflow created no API key: {created}")))
    }

    /// The messages Langflow stored for `session_id` (`GET /api/v1/monitor/messages`), oldest first.
    pub async fn messages(&self, session_id: &str) -> Result<Vec<Value>, Error> {
        let list = reqwest::Client::new()
            .get(format!("{}/api/v1/monitor/messages", self.url))
            .query(&[("session_id", session_id)])
            .header("x-api-key", &self.api_key);
        let answer = answer(list, &format!("listing the messages of {session_id}")).await?;
        Ok(answer.as_array().cloned().unwrap_or_default())
    }

    /// The base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The superuser's API key, which Langflow requires in `x-api-key`.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// Its log.
    pub fn log(&self) -> &Path {
        &self.log
    }
}

/// The JSON answer to `request`, or an error saying what `what` was and why it failed.
async fn answer(request: reqwest::RequestBuilder, what: &str) -> Result<Value, Error> {
    let failed = |e: &dyn std::fmt::Display| Error::Process(format!("Langflow: {what} failed: {e}"));
    let response = request.send().await.and_then(reqwest::Response::error_for_status).map_err(|e| failed(&e))?;
    response.json().await.map_err(|e| failed(&e))
}

impl Drop for Langflow {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
