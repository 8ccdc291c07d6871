//! One secret source for Kubernetes Secrets and OpenBao KV v2, against a real
//! API server and a real OpenBao dev server: what is there is read, what is
//! missing is `Missing` naming where it was looked for, and a store that
//! refuses is `Unreadable`; no value is ever in an error.

use cmp_core::secrets::{SecretError, SecretRef, SecretSource, Secrets};
use cmp_testenv::openbao::OpenBao;
use cmp_testenv::test::{TestNamespace, test_client, unique_name};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

fn openbao_client(addr: &str, token: &str) -> VaultClient {
    let settings = VaultClientSettingsBuilder::default().address(addr).token(token).build().expect("settings");
    VaultClient::new(settings).expect("a client")
}

#[tokio::test]
async fn kubernetes_secrets_and_openbao_secrets_read_through_one_source() {
    let client = test_client().await;
    let ns = TestNamespace::create(&client, "secret-source").await.expect("a namespace");
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lfx", "namespace": ns.name},
        "stringData": {"apiKey": "sk-runtime-1\n"}
    }))
    .expect("a Secret");
    Api::<Secret>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &secret).await.expect("created");
    let run = unique_name("bao");
    let bao = OpenBao::start(&std::env::temp_dir().join(&run), "cmp-test-root").await.expect("OpenBao starts");
    bao.run(&["kv", "put", "-mount=secret", "connectors/acme/support/tickets", "token=tk-tenant-1"]).expect("kv put");

    let source = Secrets::new(client.clone(), Some(openbao_client(bao.addr(), bao.token())));
    let k8s = |name: &str, key: &str| SecretRef::Kubernetes {
        namespace: ns.name.clone(),
        name: name.into(),
        key: key.into(),
    };
    let openbao =
        |path: &str, key: &str| SecretRef::OpenBao { mount: "secret".into(), path: path.into(), key: key.into() };
    assert_eq!(source.read(&k8s("lfx", "apiKey")).await, Ok("sk-runtime-1".into()), "trimmed");
    assert!(matches!(source.read(&k8s("lfx", "other")).await, Err(SecretError::Missing(_))));
    assert!(matches!(source.read(&k8s("absent", "apiKey")).await, Err(SecretError::Missing(_))));
    let tickets = openbao("connectors/acme/support/tickets", "token");
    assert_eq!(source.read(&tickets).await, Ok("tk-tenant-1".into()));
    let missing = source.read(&openbao("connectors/acme/support/absent", "token")).await;
    assert!(matches!(&missing, Err(SecretError::Missing(what)) if what.contains("connectors/acme/support/absent")));
    assert!(matches!(
        source.read(&openbao("connectors/acme/support/tickets", "other")).await,
        Err(SecretError::Missing(_))
    ));

    // A token OpenBao refuses: unreadable, and the error carries no value.
    let refused = Secrets::new(client.clone(), Some(openbao_client(bao.addr(), "not-a-token")));
    let error = refused.read(&tickets).await.expect_err("refused");
    assert!(matches!(error, SecretError::Unreadable { .. }), "{error:?}");
    assert!(!error.to_string().contains("tk-tenant-1"));
    // No OpenBao configured: unreadable, saying so.
    let kubernetes_only = Secrets::new(client.clone(), None);
    let error = kubernetes_only.read(&tickets).await.expect_err("no OpenBao");
    assert!(error.to_string().contains("no OpenBao is configured"), "{error}");
    ns.delete().await.expect("cleanup");
}
