//! The chart installed on a cluster of its own, with what its pods reach
//! outside the cluster: a shared lfx, an artifact store, a Saleor store, a
//! GitOps remote and Argo CD, all on the node network's machine side.

use std::path::{Path, PathBuf};

use cmp_testenv::argocd::ArgoCd;
use cmp_testenv::git_http::GitHttpServer;
use cmp_testenv::lfx::Lfx;
use cmp_testenv::node::probe::create;
use cmp_testenv::node::{Cluster, state_dir};
use cmp_testenv::saleor::SaleorStandIn;
use cmp_testenv::workspace_binary;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use xtask::image::{BINARIES, build_cmp};
use xtask::oci::Compression;

use super::reads::ready_pods;
use super::{ARGOCD_NAMESPACE, NAMESPACE, RUNTIME_KEY};

/// The release, its pods and what they reach. Dropping it stops Argo CD,
/// the servers and lfx, then the cluster.
pub struct Installed {
    pub argocd: ArgoCd,
    /// Serves the GitOps remote while it lives.
    pub _git: GitHttpServer,
    pub store: SaleorStandIn,
    pub lfx: Lfx,
    pub outside: Outside,
    /// The echo flow's URL on the artifact store, and its sha256.
    pub artifact: (String, String),
    pub kubeconfig: String,
    pub client: kube::Client,
    pub operators: Vec<Pod>,
    pub gateways: Vec<Pod>,
    pub cluster: Cluster,
    pub dir: PathBuf,
}

impl Installed {
    /// The gateway pods' API base URLs.
    pub fn gateway_bases(&self) -> Vec<String> {
        self.gateways.iter().map(|g| format!("http://{}:8080", super::reads::ip(g))).collect()
    }
}

/// Starts a cluster and what the chart's pods reach, and installs the chart
/// with `helm install`; answers once its pods are ready.
pub async fn install() -> Installed {
    let dir = state_dir("chart-on-node");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the state directory");
    let (archive, tag) = cmp_image(&dir);
    let cluster = Cluster::start(&dir.join("cluster")).await.unwrap_or_else(|e| panic!("the cluster starts: {e}"));
    let cmp_image = cluster.node.push_image(&archive, "cmp.local/cmp").await.expect("the CMP image is pushed");
    assert_eq!(cmp_image, format!("cmp.local/cmp:{tag}"));
    let _ = std::fs::remove_file(&archive);
    let client = cluster.client().await.expect("client");
    let host = cluster.network().host_address();

    // The shared runtime and the artifact store, outside the cluster on the node network's machine side.
    let port = cmp_testenv::control_plane::free_port_on(host).expect("a port");
    let lfx = Lfx::start_at(&dir.join("lfx"), RUNTIME_KEY, host, port).await.expect("lfx starts");
    let flow = std::fs::read(cmp_testenv::workspace_root().join("examples/flows/echo.json")).expect("the echo flow");
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&flow));
    let artifacts = tokio::net::TcpListener::bind((host, 0)).await.expect("the artifact store binds");
    let artifacts_address = artifacts.local_addr().expect("an address");
    let router = axum::Router::new().route("/echo.json", axum::routing::get(move || async move { flow.clone() }));
    tokio::spawn(async move { axum::serve(artifacts, router).await });

    // A Saleor store (its JWKS and API; deliveries signed by PyJWT), where the webhook's pods reach it.
    let store = SaleorStandIn::start_at(host).await.expect("the store stand-in starts");

    // The GitOps remote (pushes as the operator's user only) and Argo CD, syncing from it into the cluster.
    let git_root = dir.join("git");
    cmp_testenv::git::BareRemote::create(&git_root.join("tenants.git")).expect("the bare remote");
    let git = GitHttpServer::start_at(&git_root, "cmp-operator", "the-push-token", host).await.expect("git serves");
    let kubeconfig = cluster.plane.kubeconfig().display().to_string();
    let argocd = ArgoCd::start(&client, cluster.plane.kubeconfig(), ARGOCD_NAMESPACE, &dir.join("argocd"))
        .await
        .expect("Argo CD starts");
    let (runtime_archive, runtime_tag) = xtask::runtime_image::cached_archive().expect("the runtime image");
    let runtime_image = cluster.node.push_image(&runtime_archive, "cmp.local/runtime").await.expect("pushed");
    assert_eq!(runtime_image, format!("cmp.local/runtime:{runtime_tag}"));
    let outside = Outside {
        store_api_url: store.api_url().to_string(),
        git_url: git.url("tenants.git"),
        artifact_egress: format!("{}/32:{}", artifacts_address.ip(), artifacts_address.port()),
        runtime_image,
    };

    // helm install, as a user would, with the shared runtime's key and the remote's credentials in place.
    create(&client, None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})).await;
    create(
        &client,
        Some(NAMESPACE),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lfx-shared"},
               "stringData": {"apiKey": RUNTIME_KEY}}),
    )
    .await;
    create(
        &client,
        Some(NAMESPACE),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "git-credentials"},
               "stringData": {"username": "cmp-operator", "password": "the-push-token"}}),
    )
    .await;
    let values = dir.join("values.yaml");
    std::fs::write(&values, serde_json::to_string(&chart_values(&tag, &outside)).expect("JSON")).expect("the values");
    let chart = cmp_testenv::helm::chart();
    let values = values.display().to_string();
    helm(&[
        "install",
        "cmp",
        &chart.to_string_lossy(),
        "--namespace",
        NAMESPACE,
        "--kubeconfig",
        &kubeconfig,
        "--values",
        &values,
        "--wait",
        "--timeout",
        "5m",
    ]);
    let operators = ready_pods(&client, "operator", 2).await;
    let gateways = ready_pods(&client, "gateway", 2).await;
    let webhooks = ready_pods(&client, "webhook", 2).await;
    for (pods, account) in [(&operators, "cmp-operator"), (&gateways, "cmp-gateway"), (&webhooks, "cmp-webhook")] {
        for pod in pods {
            let spec = pod.spec.as_ref().expect("a spec");
            assert_eq!(spec.service_account_name.as_deref(), Some(account), "each runs as the chart's identity");
        }
    }

    Installed {
        argocd,
        _git: git,
        store,
        lfx,
        artifact: (format!("http://{artifacts_address}/echo.json"), sha256),
        outside,
        kubeconfig,
        client,
        operators,
        gateways,
        cluster,
        dir,
    }
}

/// The CMP image with the suite's debug binaries, as an OCI archive: its path and tag.
pub fn cmp_image(dir: &Path) -> (PathBuf, String) {
    let mut binaries = None;
    for binary in BINARIES {
        let path = workspace_binary(binary, binary).expect("the binary builds");
        binaries = path.parent().map(Path::to_path_buf);
    }
    let layout = dir.join("layout");
    let built = build_cmp(&binaries.expect("a binaries directory"), &layout, Compression::None).expect("the image");
    let archive = dir.join("cmp.tar");
    xtask::oci::archive(&layout, &archive).expect("the archive");
    std::fs::remove_dir_all(&layout).expect("the layout is removed");
    (archive, built.reference)
}

/// What the chart's pods reach outside the cluster, on the node network's machine side.
pub struct Outside {
    /// The Saleor store's API URL.
    pub store_api_url: String,
    /// The GitOps remote (Argo CD reads the same URL).
    pub git_url: String,
    /// The artifact store, as `CIDR:PORT`.
    pub artifact_egress: String,
    /// The runtime image, also the Dedicated pods' fetch image.
    pub runtime_image: String,
}

/// The chart's values for a cluster of 2 cores: small requests, and leases
/// short enough that a crashed gateway's credits come back within seconds.
pub fn chart_values(tag: &str, outside: &Outside) -> Value {
    let small = json!({"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"memory": "512Mi"}});
    json!({
        "image": {"repository": "cmp.local/cmp", "tag": tag, "pullPolicy": "IfNotPresent"},
        "logFormat": "text",
        "operator": {
            "replicas": 2, "resources": small, "extraArgs": ["--lease-duration-seconds=6"],
            "artifactEgress": [outside.artifact_egress],
            "gitops": {"repo": outside.git_url, "credentialsSecret": format!("{NAMESPACE}/git-credentials"),
                       "fetchImage": outside.runtime_image},
            "argocd": {"namespace": ARGOCD_NAMESPACE, "repoUrl": outside.git_url},
        },
        "gateway": {
            "replicas": 2, "resources": small,
            "runtimeKeySecrets": [{"namespace": NAMESPACE, "name": "lfx-shared"}],
            "extraArgs": ["--lease-seconds=2", "--idle-seconds=1", "--flush-ms=500"],
        },
        "webhook": {
            "replicas": 2, "resources": small, "saleorApiUrls": [outside.store_api_url],
            "creditPacks": [{"sku": "CREDITS-1000", "credits": 1000, "displayName": "1,000 credits"}],
        },
    })
}

pub fn helm(args: &[&str]) {
    let output = cmp_testenv::helm::helm(args).expect("helm runs");
    assert!(output.success, "helm {args:?}: {}{}", output.stdout, output.stderr);
}
