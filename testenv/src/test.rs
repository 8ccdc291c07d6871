//! Helpers for integration tests against the local control plane.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::Error;

/// The environment variable naming the kubeconfig of the control plane the
/// tests use. `cargo xtask test` sets it.
pub const KUBECONFIG_ENV: &str = "CMP_TEST_KUBECONFIG";

/// An admin client for the kubeconfig at `path`.
pub async fn client_for(path: &Path) -> Result<kube::Client, Error> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(kube::Client::try_from(config)?)
}

/// True when the API server answers `/readyz` with `ok`.
pub async fn is_ready(client: &kube::Client) -> bool {
    let Ok(request) = http::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    client
        .request_text(request)
        .await
        .is_ok_and(|body| body.trim() == "ok")
}

/// The kubeconfig the tests use: `$CMP_TEST_KUBECONFIG`, else the one of
/// `cargo xtask cluster`.
pub fn test_kubeconfig() -> PathBuf {
    std::env::var_os(KUBECONFIG_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::default_state_dir().join("kubeconfig"))
}

/// A client for the test control plane.
///
/// # Panics
/// When no control plane answers: integration tests must fail, not skip,
/// when they cannot reach the real API server.
pub async fn test_client() -> kube::Client {
    let path = test_kubeconfig();
    let client = match client_for(&path).await {
        Ok(client) => client,
        Err(e) => panic!(
            "no local control plane: {e}.\nRun the test suite with `cargo xtask test` (it starts etcd, kube-apiserver and kube-controller-manager), or start one with `cargo xtask cluster` and keep it running."
        ),
    };
    assert!(
        is_ready(&client).await,
        "the control plane of {} does not answer /readyz. Run the test suite with `cargo xtask test`, or restart `cargo xtask cluster`.",
        path.display()
    );
    client
}

/// The kubectl built with the control plane.
pub fn kubectl() -> Result<PathBuf, Error> {
    Ok(crate::binaries()?.join("kubectl"))
}

/// A namespace with a unique name, for one test. Call [`TestNamespace::delete`] at the end.
pub struct TestNamespace {
    /// The namespace name.
    pub name: String,
    client: kube::Client,
}

impl TestNamespace {
    /// Creates `<prefix>-<random>`.
    pub async fn create(client: &kube::Client, prefix: &str) -> Result<Self, Error> {
        let name = unique_name(prefix);
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(Self {
            name,
            client: client.clone(),
        })
    }

    /// Deletes the namespace (the namespace controller removes what is in it).
    pub async fn delete(self) -> Result<(), Error> {
        Api::<Namespace>::all(self.client)
            .delete(&self.name, &DeleteParams::default())
            .await?;
        Ok(())
    }
}

/// `<prefix>-<8 random lower-case characters>`.
pub fn unique_name(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let suffix: String = (0..8)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect();
    format!("{prefix}-{suffix}")
}
