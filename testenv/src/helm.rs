//! Helm, built from Go modules (`xtask/go/helm.sh`), run against the chart
//! in `charts/cmp`, with the CRDs of the optional kinds it renders.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::Error;
use crate::control_plane::{run_install_script, workspace_root};

/// Builds (once) and returns the folder with `helm` and `crds/`.
pub fn binaries() -> Result<PathBuf, Error> {
    run_install_script("xtask/go/helm.sh", &[])
}

/// The chart's folder.
pub fn chart() -> PathBuf {
    workspace_root().join("charts/cmp")
}

/// What a helm command printed: its success, stdout and stderr.
#[derive(Debug)]
pub struct HelmOutput {
    /// True when it exited 0.
    pub success: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `helm` with `args`.
pub fn helm(args: &[&str]) -> Result<HelmOutput, Error> {
    let binary = binaries()?.join("helm");
    let scratch = std::env::temp_dir().join(format!("cmp-helm-{}", std::process::id()));
    let output = Command::new(&binary)
        .args(args)
        // Helm's own caches and config stay out of $HOME.
        .env("HELM_CACHE_HOME", scratch.join("cache"))
        .env("HELM_CONFIG_HOME", scratch.join("config"))
        .env("HELM_DATA_HOME", scratch.join("data"))
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn { binary: binary.display().to_string(), source })?;
    Ok(HelmOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// `helm template <release> charts/cmp -n <namespace>` with `extra` arguments (values files, --set).
pub fn template(release: &str, namespace: &str, extra: &[&str]) -> Result<HelmOutput, Error> {
    let chart = chart();
    let chart = chart.to_string_lossy();
    let mut args = vec!["template", release, chart.as_ref(), "--namespace", namespace];
    args.extend_from_slice(extra);
    helm(&args)
}
