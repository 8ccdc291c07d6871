//! The GitOps side of `cargo xtask up`: a local bare repository the operator
//! commits Dedicated runtimes to, a real Argo CD (repo server + application
//! controller) that syncs them, and an OpenBao dev server whose Kubernetes
//! auth method holds the gateway's role (the connector gateway itself is off in `up`).

use std::path::Path;

use anyhow::Context;
use cmp_testenv::ControlPlane;
use cmp_testenv::argocd::ArgoCd;
use cmp_testenv::git::BareRemote;
use cmp_testenv::openbao::OpenBao;

/// Argo CD's namespace in the local platform.
pub const ARGOCD_NAMESPACE: &str = "argocd";
/// The OpenBao dev server's root token (local only).
const OPENBAO_TOKEN: &str = "cmp-local-root";
/// The example connector secret `examples/50-instance.yaml` binds.
const EXAMPLE_CONNECTOR: &str = "connectors/acme/support/crm";

/// What runs for GitOps and connectors; dropping it stops Argo CD and OpenBao.
pub struct LocalGitOps {
    remote: BareRemote,
    clone: String,
    _argocd: ArgoCd,
    openbao: OpenBao,
}

impl LocalGitOps {
    /// Creates (or reuses) the bare repository under `state`, and starts Argo CD and OpenBao against `plane`.
    pub async fn start(client: &kube::Client, plane: &ControlPlane, state: &Path) -> anyhow::Result<Self> {
        let remote = BareRemote::create(&state.join("gitops/tenants.git")).map_err(anyhow::Error::msg)?;
        eprintln!("GitOps repository: {}", remote.url());
        eprintln!("starting Argo CD (repo server + application controller) in namespace {ARGOCD_NAMESPACE} ...");
        let argocd = ArgoCd::start(client, plane.kubeconfig(), ARGOCD_NAMESPACE, &state.join("argocd"))
            .await
            .context("starting Argo CD")?;
        eprintln!("starting OpenBao (dev) ...");
        let openbao = OpenBao::start(&state.join("openbao"), OPENBAO_TOKEN).await.context("starting OpenBao")?;
        openbao.enable_kubernetes_auth(client, plane.kubeconfig()).await.context("OpenBao's Kubernetes auth")?;
        openbao
            .run(&["kv", "put", "-mount=secret", EXAMPLE_CONNECTOR, "apiKey=local-demo-credential"])
            .context("writing the example connector secret")?;
        let clone = state.join("gitops/operator-clone").to_string_lossy().into_owned();
        Ok(Self { remote, clone, _argocd: argocd, openbao })
    }

    /// The operator's flags for this repository, Argo CD and OpenBao (the token goes in the environment: [`Self::vault_token`]).
    pub fn operator_flags(&self) -> Vec<String> {
        [
            "--gitops-repo",
            &self.remote.url(),
            "--gitops-clone-dir",
            &self.clone,
            "--argocd-namespace",
            ARGOCD_NAMESPACE,
            "--vault-addr",
            self.openbao.addr(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The OpenBao server (the journey writes and reads connector secrets with it).
    pub fn openbao(&self) -> &OpenBao {
        &self.openbao
    }

    /// OpenBao's token, for the operator's `VAULT_TOKEN`.
    pub fn vault_token(&self) -> &str {
        self.openbao.token()
    }

    /// What to tell people about it.
    pub fn usage(&self) -> String {
        format!(
            "GitOps: the operator commits Dedicated runtimes to {} (git log --git-dir {}); Argo CD syncs them (kubectl -n {ARGOCD_NAMESPACE} get applications).\n\
             OpenBao (dev, in memory): BAO_ADDR={} BAO_TOKEN={OPENBAO_TOKEN}; connector secrets go under secret/connectors/<org>/<project>/ (the example's is at {EXAMPLE_CONNECTOR}).",
            self.remote.url(),
            self.remote.path().display(),
            self.openbao.addr(),
        )
    }
}
