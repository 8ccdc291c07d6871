//! `--secret-store vault` against a real OpenBao dev server: an API key's
//! plaintext goes to KV v2 under the organization's prefix and nowhere else,
//! is issued once across operator restarts, and leaves with its key.

mod support;

use cmp_crds::instance::SecretStore;
use cmp_crds::{Instance, Offering};
use cmp_testenv::openbao::OpenBao;
use cmp_testenv::test::eventually;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::{CONVERGE, RUN_LABEL, World};

/// What `bao kv get` finds at `path`: the plaintext, or None when there is no key.
fn stored(bao: &OpenBao, path: &str) -> Option<String> {
    let (ok, out) = bao.cli(&["kv", "get", "-format=json", "-mount=secret", path]).expect("bao runs");
    if !ok {
        return None;
    }
    let json: Value = serde_json::from_str(&out).expect("bao prints JSON");
    json["data"]["data"]["apiKey"].as_str().map(str::to_string)
}

#[tokio::test]
async fn the_vault_store_puts_the_plaintext_in_openbao_and_nowhere_else_once() {
    let w = World::new("vault").await;
    let dir = std::env::temp_dir().join(format!("{}-bao", w.run));
    let bao = OpenBao::start(&dir, "cmp-test-root").await.expect("OpenBao starts");
    // The operator writes each Project's connector role there.
    bao.enable_kubernetes_auth(&w.client, &cmp_testenv::test::test_kubeconfig()).await.expect("Kubernetes auth");
    let flags = ["--secret-store", "vault", "--vault-addr", bao.addr(), "--vault-token", bao.token()];
    let mut operator = w.operator("a", &flags);
    let (url, sha256) = cmp_testenv::lfx::example_flow("echo.json").expect("flow");
    let offering = format!("{}-ded", w.run);
    let body = json!({"apiVersion": Offering::api_version(&()), "kind": "Offering",
        "metadata": {"name": offering, "labels": {RUN_LABEL: w.run}},
        "spec": {"displayName": "Vaulted", "runtime": {"mode": "Dedicated", "image": "img"},
                 "versions": [{"name": "1", "artifact": {"url": url, "sha256": sha256}, "flowId": "f"}],
                 "plans": [{"id": "basic", "creditsPerRun": 1}]}});
    Api::<Offering>::all(w.client.clone())
        .patch(&offering, &PatchParams::apply("cmp-tests").force(), &Patch::Apply(body))
        .await
        .expect("Offering");
    let org = w.org_name("org");
    w.apply_org(&org, json!({"displayName": "Vault"})).await;
    w.org_ready(&org).await;
    let api = Api::<Instance>::namespaced(w.client.clone(), &format!("cmp-{org}"));
    let apply = |keys: Value| {
        let instance = json!({"apiVersion": Instance::api_version(&()), "kind": "Instance", "metadata": {"name": "bot"},
            "spec": {"project": "main", "offering": offering, "version": "1", "plan": "basic", "apiKeys": keys}});
        let api = api.clone();
        async move {
            api.patch("bot", &PatchParams::apply("cmp-tests").force(), &Patch::Apply(instance)).await.expect("Instance")
        }
    };
    apply(json!([{"name": "main"}])).await;
    let key = eventually("the key issued", CONVERGE, || async {
        api.get("bot").await.ok()?.status?.api_keys.into_iter().next()
    })
    .await;
    assert_eq!(key.secret.store, SecretStore::Vault);
    let path = format!("cmp/{org}/instances/bot/keys/main");
    assert_eq!(key.secret.name, path, "under the organization's prefix");
    let plaintext = stored(&bao, &path).expect("the plaintext is in OpenBao");
    assert!(cmp_crds::apikey::verify(&plaintext, &key.hash), "OpenBao holds the key whose hash status keeps");

    // Nowhere else: no key Secret in the cluster, nothing in status.
    let secrets = Api::<Secret>::namespaced(w.client.clone(), &format!("cmp-{org}"));
    let labelled = secrets.list(&ListParams::default().labels("cmp.gsv.dev/instance=bot")).await.expect("list");
    assert!(labelled.items.is_empty(), "no key Secret with the Vault store");
    let status = serde_json::to_string(&api.get("bot").await.expect("Instance").status).expect("json");
    assert!(!status.contains(&plaintext));

    // Issued once: a restarted operator neither re-issues nor overwrites.
    operator.kill();
    let restarted = w.operator("b", &flags);
    restarted.reconciled("Instance").await;
    let after = api.get("bot").await.expect("Instance").status.expect("status").api_keys;
    assert_eq!(after, vec![key.clone()], "never re-issued");
    assert_eq!(stored(&bao, &path).as_deref(), Some(plaintext.as_str()), "never overwritten");

    // Removing the key deletes its plaintext from OpenBao.
    apply(json!([])).await;
    eventually("the plaintext gone from OpenBao", CONVERGE, || async { stored(&bao, &path).is_none().then_some(()) })
        .await;
    assert!(api.get("bot").await.expect("Instance").status.expect("status").api_keys.is_empty());
    w.delete_org(&org).await;
}
