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
    cmp_core::tls::install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(path)
        .map_err(|e| Error::Kubeconfig { path: path.to_path_buf(), message: e.to_string() })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig { path: path.to_path_buf(), message: e.to_string() })?;
    Ok(kube::Client::try_from(config)?)
}

/// True when the API server answers `/readyz` with `ok`.
pub async fn is_ready(client: &kube::Client) -> bool {
    let Ok(request) = http::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    client.request_text(request).await.is_ok_and(|body| body.trim() == "ok")
}

/// A client of the test control plane that acts as `user` in `groups`
/// (the admin impersonates them), to test what other users may do.
pub async fn client_as(user: &str, groups: &[&str]) -> kube::Client {
    cmp_core::tls::install_crypto_provider();
    let path = test_kubeconfig();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    kube::Client::try_from(config).unwrap_or_else(|e| panic!("client for {user}: {e}"))
}

/// Polls `check` every 200ms until it returns `Some`, failing the test with
/// `what` after `timeout`. The timeout bounds a hang; it is not a speed check.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The kubeconfig the tests use: `$CMP_TEST_KUBECONFIG`, else the one of
/// `cargo xtask cluster`.
pub fn test_kubeconfig() -> PathBuf {
    std::env::var_os(KUBECONFIG_ENV).map(PathBuf::from).unwrap_or_else(|| crate::default_state_dir().join("kubeconfig"))
}

/// Writes a copy of the test kubeconfig to `path` that impersonates `user`
/// (the admin identity of the test control plane may impersonate anyone), so
/// a binary runs with only the rights RBAC gives `user`.
pub fn kubeconfig_as(user: &str, path: &Path) -> Result<PathBuf, Error> {
    rewrite_users(&test_kubeconfig(), path, |auth| {
        auth.insert("as".into(), user.into());
    })
}

/// Writes a copy of the kubeconfig `admin` to `path` that authenticates with
/// `token` (a ServiceAccount's, from the TokenRequest API) instead of the
/// admin's certificate: requests are then the ServiceAccount's own, as in a
/// pod, and the audit log names it as the user.
pub fn kubeconfig_with_token(admin: &Path, token: &str, path: &Path) -> Result<PathBuf, Error> {
    rewrite_users(admin, path, |auth| {
        auth.clear();
        auth.insert("token".into(), token.into());
    })
}

/// Writes the kubeconfig `source` to `path` with each user's auth changed by `change`.
fn rewrite_users(source: &Path, path: &Path, change: impl Fn(&mut serde_yaml::Mapping)) -> Result<PathBuf, Error> {
    let source = source.to_path_buf();
    let text = std::fs::read_to_string(&source).map_err(|e| Error::Io { path: source.clone(), source: e })?;
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| Error::Process(format!("{}: {e}", source.display())))?;
    if let Some(users) = config.get_mut("users").and_then(|u| u.as_sequence_mut()) {
        for entry in users {
            if let Some(auth) = entry.get_mut("user").and_then(|u| u.as_mapping_mut()) {
                change(auth);
            }
        }
    }
    let text = serde_yaml::to_string(&config).map_err(|e| Error::Process(format!("writing a kubeconfig: {e}")))?;
    // Written beside and renamed over, so that nobody reads it half written.
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&partial, text).map_err(|e| Error::Io { path: partial.clone(), source: e })?;
    // It holds a credential (a ServiceAccount's token, or the admin's key): for its owner only.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::Io { path: partial.clone(), source: e })?;
    std::fs::rename(&partial, path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
    Ok(path.to_path_buf())
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
            metadata: kube::api::ObjectMeta { name: Some(name.clone()), ..Default::default() },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
        Ok(Self { name, client: client.clone() })
    }

    /// Deletes the namespace (the namespace controller removes what is in it).
    pub async fn delete(self) -> Result<(), Error> {
        Api::<Namespace>::all(self.client).delete(&self.name, &DeleteParams::default()).await?;
        Ok(())
    }
}

/// `<prefix>-<8 random lower-case characters>`.
pub fn unique_name(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let suffix: String = (0..8).map(|_| char::from(b'a' + rng.random_range(0..26u8))).collect();
    format!("{prefix}-{suffix}")
}

/// A plain HTTP/1.1 GET on loopback: (status code, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// A namespace of its own (named from `prefix`) holding the ServiceAccount `cmp-gateway`, as the chart's gateway
/// runs; and `<namespace>/cmp-gateway`, as the operator's --vault-gateway-service-account takes it.
pub async fn gateway_service_account(client: &kube::Client, prefix: &str) -> Result<(TestNamespace, String), Error> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let namespace = TestNamespace::create(client, prefix).await?;
    let mut account = ServiceAccount::default();
    account.metadata.name = Some("cmp-gateway".into());
    account.metadata.namespace = Some(namespace.name.clone());
    kube::Api::<ServiceAccount>::namespaced(client.clone(), &namespace.name)
        .create(&kube::api::PostParams::default(), &account)
        .await?;
    let named = format!("{}/cmp-gateway", namespace.name);
    Ok((namespace, named))
}

/// A token of ServiceAccount `namespace/name` from the TokenRequest API (one hour; for `audiences`, else the API server's).
pub async fn service_account_token(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    audiences: Option<Vec<String>>,
) -> Result<String, Error> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audiences.unwrap_or_default(),
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let accounts = kube::Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), namespace);
    let issued = accounts.create_token_request(name, &kube::api::PostParams::default(), &request).await?;
    issued
        .status
        .map(|s| s.token)
        .ok_or_else(|| Error::Process(format!("no token in the TokenRequest of {namespace}/{name}")))
}
