//! A CMP binary run by a test against the test control plane: its own
//! health port, its log in a file, killed when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use crate::Error;
use crate::chart_identity::{ChartIdentity, Component, OPERATOR_RELEASE};
use crate::test::{eventually, http_get, test_kubeconfig};

/// Starts `command` with no stdin and its stdout and stderr in the file `log`.
pub fn spawn_logged(command: &mut Command, log: &Path) -> Result<Child, Error> {
    let io = |source| Error::Io { path: log.to_path_buf(), source };
    let out = std::fs::File::create(log).map_err(io)?;
    let err = out.try_clone().map_err(io)?;
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| Error::Spawn { binary: command.get_program().to_string_lossy().into_owned(), source })
}

/// The long-running processes of one environment (a control plane, a node),
/// each logging to a file, stopped newest first.
#[derive(Default)]
pub(crate) struct Supervisor {
    components: Vec<Supervised>,
}

struct Supervised {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Supervisor {
    /// Starts `command` as the component `name`, its output in `log`.
    pub(crate) fn spawn(&mut self, name: &str, command: &mut Command, log: &Path) -> Result<(), Error> {
        let child = spawn_logged(command, log)?;
        tracing::debug!(component = name, pid = child.id(), log = %log.display(), "started");
        self.components.push(Supervised { name: name.to_string(), child, log: log.to_path_buf() });
        Ok(())
    }

    /// Fails with the component's log when it has exited.
    pub(crate) fn check_alive(&mut self, name: &str) -> Result<(), Error> {
        if let Some(c) = self.components.iter_mut().find(|c| c.name == name)
            && let Ok(Some(status)) = c.child.try_wait()
        {
            return Err(Error::not_ready(format!("{name} exited with {status}"), &c.log));
        }
        Ok(())
    }

    /// Stops every component, newest first: SIGTERM, then SIGKILL after 10s.
    pub(crate) fn stop(&mut self) {
        while let Some(mut c) = self.components.pop() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(c.child.id()).unwrap_or(i32::MAX));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                match c.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if std::time::Instant::now() >= deadline => {
                        let _ = c.child.kill();
                        let _ = c.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(std::time::Duration::from_millis(50)),
                }
            }
            tracing::debug!(component = c.name, "stopped");
        }
    }
}

/// A running binary.
pub struct TestProcess {
    child: Child,
    /// Where it serves `/healthz`, `/readyz` and `/metrics`.
    pub health: SocketAddr,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl TestProcess {
    /// Starts `binary` with the test kubeconfig, `RUST_LOG=rust_log`, a free
    /// `--health-addr` and `args`, logging to `$TMPDIR/<log_name>.log`.
    pub fn spawn(binary: &Path, log_name: &str, rust_log: &str, args: &[String]) -> Result<Self, Error> {
        Self::spawn_with_kubeconfig(binary, log_name, rust_log, args, &test_kubeconfig())
    }

    /// Like [`TestProcess::spawn`], as the chart's `component` of release
    /// `release` with `values` (see [`ChartIdentity::for_flags`]): the process
    /// has only the rights the chart gives it.
    pub fn spawn_as(
        component: Component,
        release: &str,
        values: &[String],
        binary: &Path,
        log_name: &str,
        rust_log: &str,
        args: &[String],
    ) -> Result<Self, Error> {
        let identity = ChartIdentity::for_flags(&test_kubeconfig(), component, release, args, values)?;
        Self::spawn_with_kubeconfig(binary, log_name, rust_log, args, &identity.kubeconfig)
    }

    /// Like [`TestProcess::spawn`], with another kubeconfig (another identity, or another server).
    pub fn spawn_with_kubeconfig(
        binary: &Path,
        log_name: &str,
        rust_log: &str,
        args: &[String],
        kubeconfig: &Path,
    ) -> Result<Self, Error> {
        let health = SocketAddr::from(([127, 0, 0, 1], crate::free_port()?));
        let log = std::env::temp_dir().join(format!("{log_name}.log"));
        let mut command = Command::new(binary);
        command
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", rust_log)
            .args(["--health-addr", &health.to_string()])
            .args(args);
        let child = spawn_logged(&mut command, &log)?;
        Ok(Self { child, health, log })
    }

    /// Its log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its `/metrics` text, if it serves.
    pub async fn metrics(&self) -> Option<String> {
        match http_get(self.health, "/metrics").await {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&self, timeout: std::time::Duration) {
        let health = self.health;
        eventually("the process to be ready", timeout, || async move {
            matches!(http_get(health, "/readyz").await, Ok((200, _))).then_some(())
        })
        .await;
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it at once (SIGKILL): no graceful shutdown.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::io::Result<ExitStatus> {
        let pid = i32::try_from(self.child.id()).map_err(std::io::Error::other)?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM)
            .map_err(std::io::Error::other)?;
        self.child.wait()
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for TestProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the workspace's `cmp-operator` for one test run: it reconciles only
/// the Organizations and Offerings labelled `<label>=<run>`, with its own
/// leader-election Lease, so tests run in parallel without seeing each other.
pub fn operator_for_run(label: &str, run: &str) -> Result<TestProcess, Error> {
    operator_for_run_with(label, run, &[])
}

/// Like [`operator_for_run`], with `extra` flags.
pub fn operator_for_run_with(label: &str, run: &str, extra: &[&str]) -> Result<TestProcess, Error> {
    let binary = crate::workspace_binary("cmp-operator", "cmp-operator")?;
    let selector = format!("{label}={run}");
    let lease = format!("cmp-operator-{run}");
    let mut args: Vec<String> =
        ["--organization-selector", &selector, "--offering-selector", &selector, "--lease-name", &lease]
            .map(String::from)
            .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    TestProcess::spawn_as(
        Component::Operator,
        OPERATOR_RELEASE,
        &[],
        &binary,
        &format!("{run}-operator"),
        "info",
        &args,
    )
}
