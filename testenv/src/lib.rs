//! A real local Kubernetes control plane for development and tests.
//!
//! [`ControlPlane::start`] runs etcd, kube-apiserver and
//! kube-controller-manager (built from their Go modules by
//! `xtask/go/build.sh`) on loopback, the way controller-runtime's envtest
//! does: generated certificates, RBAC authorization, service-account signing
//! keys. [`apply`] applies YAML with server-side apply. [`test_client`] gives
//! integration tests a client for the control plane that the test command
//! started, and fails loudly when there is none.

pub mod apply;
pub mod argocd;
pub mod browser;
pub mod certs;
pub mod chart_identity;
pub mod control_plane;
pub mod docs;
pub mod git;
pub mod git_http;
pub mod git_ssh;
pub mod helm;
pub mod installs;
pub mod keycloak;
pub mod langflow;
pub mod langflow_stand_in;
pub mod lfx;
pub mod mcp;
pub mod node;
pub mod node_network;
pub mod openbao;
pub mod postgres;
pub mod process;
pub mod promtool;
pub mod rbac_usage;
pub mod saleor;
pub mod test;

use std::path::PathBuf;

pub use control_plane::{ControlPlane, binaries, default_state_dir, free_port, workspace_root};
pub use test::test_client;

/// What went wrong while running or reaching the local control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("generating the {what}: {source}")]
    Certificates {
        /// Which certificate.
        what: String,
        /// The cause.
        source: rcgen::Error,
    },
    /// The Go build of the control-plane binaries failed.
    #[error("building the control plane binaries failed: {0}")]
    Build(String),
    /// A binary could not be started.
    #[error("starting {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A component stopped or never became ready.
    #[error("{what}; last lines of {log}:\n{tail}")]
    NotReady {
        /// What did not happen.
        what: String,
        /// The component's log file.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// A kubeconfig could not be loaded.
    #[error("loading kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A YAML document could not be parsed.
    #[error("{source_name}: document {index}: {message}")]
    Document {
        /// Where the YAML came from.
        source_name: String,
        /// The document's position (1-based).
        index: usize,
        /// What was wrong.
        message: String,
    },
    /// Another control plane already runs from the state directory.
    #[error(
        "a control plane is already running from {dir}: stop it (Ctrl-C in its terminal) or use its kubeconfig ({dir}/kubeconfig)"
    )]
    AlreadyRunning {
        /// The state directory.
        dir: PathBuf,
    },
    /// The API server refused a request.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// A helper process or server misbehaved.
    #[error("{0}")]
    Process(String),
}

impl Error {
    /// `what` did not become ready; the error carries the last 30 lines of its `log`.
    pub fn not_ready(what: String, log: &std::path::Path) -> Self {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let mut tail: Vec<&str> = text.lines().rev().take(30).collect();
        tail.reverse();
        Error::NotReady { what, log: log.to_path_buf(), tail: tail.join("\n") }
    }
}

/// `cargo` (the one running us, else the one on the PATH) in the workspace
/// root, for a nested build. It drops the variables Cargo sets for the crate
/// it runs (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...): a build script that
/// watches one (ring's watches `CARGO_MANIFEST_DIR`) would otherwise rebuild
/// it, and everything above it, at every switch between `cargo xtask ...` and
/// a nested or plain `cargo build`.
pub fn cargo_command() -> std::process::Command {
    let mut command = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let crate_variable = name.to_str().is_some_and(|n| {
            n.starts_with("CARGO_PKG_")
                || matches!(
                    n,
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_BIN_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_RUSTC_CURRENT_DIR"
                )
        });
        if crate_variable {
            command.env_remove(name);
        }
    }
    command.current_dir(control_plane::workspace_root());
    command
}

/// A binary of the workspace (for example `cmp-operator`), built in the same
/// profile as the running test: `cargo test --workspace` has built it next to
/// the test's own directory; otherwise it is built now with `cargo build`.
pub fn workspace_binary(package: &str, binary: &str) -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::Process(format!("locating the test binary: {e}")))?;
    // <target>/<profile>/deps/<test> -> <target>/<profile>/<binary>
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).map(PathBuf::from).unwrap_or_default();
    let path = profile_dir.join(binary);
    if !path.exists() {
        let release = profile_dir.file_name().is_some_and(|p| p == "release");
        let mut command = cargo_command();
        command.args(["build", "-p", package, "--bin", binary]);
        if release {
            command.arg("--release");
        }
        let status = command.status().map_err(|source| Error::Spawn { binary: "cargo".into(), source })?;
        if !status.success() || !path.exists() {
            return Err(Error::Build(format!(
                "cargo build -p {package} --bin {binary} did not produce {}",
                path.display()
            )));
        }
    }
    Ok(path)
}
