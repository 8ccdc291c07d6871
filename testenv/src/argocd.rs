//! A real Argo CD, built from Go modules (`xtask/go/argocd.sh`), run outside
//! a cluster against the test control plane: Redis on loopback, the
//! repo server, and the application controller, scoped to a namespace of the
//! test's own. Its settings carry CMP's health checks (Lua) from the chart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::apply::{ApplyOptions, apply_yaml};
use crate::control_plane::{run_install_script, workspace_root};
use crate::process::spawn_logged;
use crate::{Error, free_port};

/// Builds (once) and returns the folder with `argocd`, its two servers, `kustomize`, Redis and the CRDs.
pub fn binaries() -> Result<PathBuf, Error> {
    run_install_script("xtask/go/argocd.sh", &[])
}

/// The folder of CMP's health checks, in Argo CD's layout (`<group>/<kind>/health.lua`).
pub fn health_checks_dir() -> PathBuf {
    workspace_root().join("charts/cmp/files/argocd/health")
}

/// `argocd-cm` entries for CMP's health checks: `resource.customizations.health.<group>_<kind>` → Lua.
pub fn health_customizations() -> Result<BTreeMap<String, String>, Error> {
    let mut entries = BTreeMap::new();
    let root = health_checks_dir();
    let read_dir = |dir: &Path| std::fs::read_dir(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source });
    for group in read_dir(&root)? {
        let group = group.map_err(|source| Error::Io { path: root.clone(), source })?.path();
        for kind in read_dir(&group)? {
            let kind = kind.map_err(|source| Error::Io { path: group.clone(), source })?.path();
            let lua = kind.join("health.lua");
            let script = std::fs::read_to_string(&lua).map_err(|source| Error::Io { path: lua.clone(), source })?;
            let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            entries.insert(format!("resource.customizations.health.{}_{}", name(&group), name(&kind)), script);
        }
    }
    Ok(entries)
}

/// Runs the real `argocd` CLI with `args`.
pub fn cli(args: &[&str]) -> Result<Output, Error> {
    let binary = binaries()?.join("argocd");
    Command::new(&binary)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn { binary: binary.display().to_string(), source })
}

/// The label Argo CD's settings informer requires on its ConfigMaps and Secret.
const PART_OF: (&str, &str) = ("app.kubernetes.io/part-of", "argocd");

/// Redis, the repo server and the application controller. Dropping it stops all three.
pub struct ArgoCd {
    children: Vec<Child>,
    namespace: String,
    dir: PathBuf,
}

impl ArgoCd {
    /// Starts Argo CD for `namespace` (created here, with its settings and the `default` AppProject), logging under `dir`.
    pub async fn start(client: &kube::Client, kubeconfig: &Path, namespace: &str, dir: &Path) -> Result<Self, Error> {
        let bin = binaries()?;
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        install(client, &bin, namespace).await?;
        let mut argo = Self { children: Vec::new(), namespace: namespace.into(), dir: dir.into() };

        let redis_port = free_port()?;
        let redis_dir = bin.join("redis/usr");
        argo.children.push(spawn_logged(
            Command::new(redis_dir.join("bin/redis-server"))
                .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .env("LD_LIBRARY_PATH", redis_dir.join("lib/x86_64-linux-gnu"))
                .current_dir(dir),
            &dir.join("redis.log"),
        )?);
        let redis = format!("127.0.0.1:{redis_port}");

        let scratch = dir.join("home");
        for sub in ["tls", "ssh", "gnupg", "tmp"] {
            let path = scratch.join(sub);
            std::fs::create_dir_all(&path).map_err(|source| Error::Io { path, source })?;
        }
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let environment = |command: &mut Command| {
            command
                .env("PATH", &path)
                .env("HOME", &scratch)
                .env("TMPDIR", scratch.join("tmp"))
                .env("ARGOCD_TLS_DATA_PATH", scratch.join("tls"))
                .env("ARGOCD_SSH_DATA_PATH", scratch.join("ssh"))
                .env("ARGOCD_GNUPGHOME", scratch.join("gnupg"))
                .env("ARGOCD_GPG_ENABLED", "false")
                // The "in-cluster" destination is read from KUBECONFIG: name the control plane's, not whatever the caller had.
                .env("KUBECONFIG", kubeconfig)
                .env("ARGOCD_FAKE_IN_CLUSTER", "true");
        };
        let repo_port = free_port()?;
        let mut repo_server = Command::new(bin.join("argocd-repo-server"));
        environment(&mut repo_server);
        repo_server.args(["--address", "127.0.0.1", "--port", &repo_port.to_string()]).args([
            "--metrics-address",
            "127.0.0.1",
            "--metrics-port",
            &free_port()?.to_string(),
            "--redis",
            &redis,
            "--disable-tls",
            // Its default (an in-cluster Secret path) is refused together with --disable-tls (v3.5.3).
            "--client-ca-path",
            "",
        ]);
        argo.children.push(spawn_logged(&mut repo_server, &dir.join("repo-server.log"))?);

        let mut controller = Command::new(bin.join("argocd-application-controller"));
        environment(&mut controller);
        controller
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--namespace", namespace, "--redis", &redis])
            .args(["--repo-server", &format!("127.0.0.1:{repo_port}"), "--repo-server-plaintext"])
            .args(["--app-resync", "10", "--app-resync-jitter", "1", "--self-heal-timeout-seconds", "1"])
            .args(["--metrics-port", &free_port()?.to_string()]);
        argo.children.push(spawn_logged(&mut controller, &dir.join("application-controller.log"))?);
        Ok(argo)
    }

    /// The namespace it serves.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The last lines of a component's log (`redis`, `repo-server`, `application-controller`).
    pub fn log_tail(&self, component: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("{component}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for ArgoCd {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The CRDs, the namespace, `argocd-cm` (with CMP's health checks), `argocd-rbac-cm`, `argocd-secret` and the `default` AppProject.
async fn install(client: &kube::Client, bin: &Path, namespace: &str) -> Result<(), Error> {
    let options = ApplyOptions { field_manager: "cmp-tests".into(), ..Default::default() };
    for crd in ["application-crd.yaml", "appproject-crd.yaml"] {
        let path = bin.join("crds").join(crd);
        let yaml = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        apply_yaml(client, crd, &yaml, &options).await?;
    }
    let params = PatchParams::apply("cmp-tests").force();
    let labels = json!({PART_OF.0: PART_OF.1});
    Api::<Namespace>::all(client.clone())
        .patch(
            namespace,
            &params,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})),
        )
        .await?;
    let mut settings = health_customizations()?;
    settings.insert("timeout.reconciliation".into(), "10s".into());
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    for (name, data) in [("argocd-cm", json!(settings)), ("argocd-rbac-cm", json!({}))] {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": data});
        config_maps.patch(name, &params, &Patch::Apply(body)).await?;
    }
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "argocd-secret", "labels": labels},
                        "stringData": {"server.secretkey": "cmp-test-secret-key"}});
    Api::<Secret>::namespaced(client.clone(), namespace).patch("argocd-secret", &params, &Patch::Apply(secret)).await?;
    // The API server serves the new CRDs a moment after they are applied.
    let project = format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: AppProject\nmetadata:\n  name: default\n  namespace: {namespace}\n\
         spec:\n  sourceRepos: ['*']\n  destinations: [{{server: '*', namespace: '*'}}]\n  clusterResourceWhitelist: [{{group: '*', kind: '*'}}]\n"
    );
    let mut last = None;
    for _ in 0..100 {
        match apply_yaml(client, "default AppProject", &project, &options).await {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last.unwrap_or_else(|| Error::Build("the AppProject CRD was never served".into())))
}
