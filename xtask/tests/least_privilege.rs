//! The chart's RBAC is least privilege. (That it is enough is proven by the
//! integration tests, which run every binary as its chart identity.)
//! `kubectl auth can-i`, as each component's ServiceAccount, shows it refused
//! what it must not do, beside a control it is allowed. The one refusal RBAC
//! cannot express, the operator writing gateway meters (it may patch
//! wallets/status to fold them), is made by the chart's meter guard: real
//! writes as the operator are refused when they add or change a meter, and
//! allowed when they fold one.

use std::process::Command;
use std::time::Duration;

use cmp_crds::wallet::Wallet;
use cmp_testenv::apply::install_crds;
use cmp_testenv::chart_identity::{ChartIdentity, Component};
use cmp_testenv::test::{TestNamespace, client_for, eventually, test_client, test_kubeconfig};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

const RELEASE: &str = "least";
const NAMESPACE: &str = "cmp-least";
const RUNTIME_KEY: &str = "lfx-api-key";

fn identity(component: Component) -> ChartIdentity {
    let values = [
        "gateway.runtimeKeySecrets[0].namespace=default".to_string(),
        format!("gateway.runtimeKeySecrets[0].name={RUNTIME_KEY}"),
    ];
    ChartIdentity::apply(component, RELEASE, NAMESPACE, &values).expect("the chart's identity applies")
}

/// `kubectl auth can-i <question> --as <identity>`: yes or no.
fn can_i(identity: &ChartIdentity, question: &[&str]) -> bool {
    let kubectl = cmp_testenv::binaries().expect("kubectl").join("kubectl");
    let output = Command::new(kubectl)
        .env("KUBECONFIG", test_kubeconfig())
        .args(["auth", "can-i"])
        .args(question)
        .args(["--as", &identity.user])
        .output()
        .expect("kubectl runs");
    let answer = String::from_utf8_lossy(&output.stdout).trim().to_string();
    match answer.as_str() {
        "yes" => true,
        "no" => false,
        _ => panic!("kubectl auth can-i {question:?}: {answer} {}", String::from_utf8_lossy(&output.stderr)),
    }
}

/// Asserts each `(question, allowed)` for `identity`, naming every wrong answer.
fn assert_answers(identity: &ChartIdentity, answers: &[(&[&str], bool)]) {
    let wrong: Vec<String> = answers
        .iter()
        .filter(|(question, allowed)| can_i(identity, question) != *allowed)
        .map(|(question, allowed)| {
            format!("kubectl auth can-i {} --as {}: expected {}", question.join(" "), identity.user, yes_no(*allowed))
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn yes_no(allowed: bool) -> &'static str {
    if allowed { "yes" } else { "no" }
}

#[test]
fn the_gateway_may_not_create_namespaces_or_read_secrets_beyond_its_runtime_key() {
    let gateway = identity(Component::Gateway);
    let key = format!("secrets/{RUNTIME_KEY}");
    assert_answers(
        &gateway,
        &[
            (&["create", "namespaces"], false),
            (&["get", "secrets", "-n", "default"], false),
            (&["list", "secrets", "--all-namespaces"], false),
            (&["get", "secrets/another-key", "-n", "default"], false),
            (&["get", "secrets", "-n", NAMESPACE], false),
            (&["patch", "wallets.cmp.gsv.dev"], false),
            (&["create", "organizations.cmp.gsv.dev"], false),
            (&["update", "instances.cmp.gsv.dev"], false),
            // Controls: what it needs.
            (&["get", &key, "-n", "default"], true),
            (&["patch", "wallets.cmp.gsv.dev", "--subresource", "status"], true),
            (&["watch", "instances.cmp.gsv.dev", "--all-namespaces"], true),
            (&["delete", "leases.coordination.k8s.io", "-n", NAMESPACE], true),
        ],
    );
}

#[test]
fn the_webhook_may_not_delete_namespaces_or_write_wallet_status() {
    let webhook = identity(Component::Webhook);
    assert_answers(
        &webhook,
        &[
            (&["delete", "namespaces"], false),
            (&["create", "namespaces"], false),
            (&["delete", "organizations.cmp.gsv.dev"], false),
            (&["delete", "instances.cmp.gsv.dev", "--all-namespaces"], false),
            (&["patch", "wallets.cmp.gsv.dev", "--subresource", "status"], false),
            (&["get", "secrets", "-n", "default"], false),
            // It writes the stores' app tokens, and reads back only those of the allow-listed stores, by name.
            (&["get", "secrets", "-n", NAMESPACE], false),
            // Its order records live in its own namespace only, and are never rewritten.
            (&["create", "configmaps", "-n", "default"], false),
            (&["update", "configmaps", "-n", NAMESPACE], false),
            (&["patch", "configmaps", "-n", NAMESPACE], false),
            // Its Events are created once, never rewritten.
            (&["patch", "events.events.k8s.io", "-n", "default"], false),
            // Controls: orders create Organizations, and app tokens live in its namespace.
            (&["create", "organizations.cmp.gsv.dev"], true),
            (&["patch", "wallets.cmp.gsv.dev", "-n", "default"], true),
            (&["patch", "secrets", "-n", NAMESPACE], true),
            (&["create", "configmaps", "-n", NAMESPACE], true),
            (&["create", "events.events.k8s.io", "-n", "default"], true),
        ],
    );
}

#[test]
fn the_webhook_reads_back_only_the_app_tokens_of_its_allow_listed_stores() {
    let store = "https://shop.example.com/graphql/";
    let values = [format!("webhook.saleorApiUrls[0]={store}")];
    let webhook = ChartIdentity::apply(Component::Webhook, "least-tokens", NAMESPACE, &values).expect("applies");
    let own = format!("secrets/{}", cmp_webhook::manifest::token_secret_name(store));
    let other = format!("secrets/{}", cmp_webhook::manifest::token_secret_name("https://other.example.com/graphql/"));
    assert_answers(
        &webhook,
        &[
            (&["get", &own, "-n", NAMESPACE], true),
            (&["get", &other, "-n", NAMESPACE], false),
            (&["list", "secrets", "-n", NAMESPACE], false),
        ],
    );
}

#[test]
fn the_operator_may_not_overwrite_secrets_or_grant_itself_more() {
    let operator = identity(Component::Operator);
    assert_answers(
        &operator,
        &[
            (&["update", "secrets", "-n", "default"], false),
            (&["patch", "secrets", "-n", "default"], false),
            (&["delete", "wallets.cmp.gsv.dev", "-n", "default"], false),
            (&["create", "clusterroles"], false),
            (&["escalate", "roles", "-n", "default"], false),
            (&["bind", "clusterroles"], false),
            (&["create", "pods", "-n", "default"], false),
            // Controls: it folds meters (so RBAC lets it patch wallets/status) and makes namespaces.
            (&["patch", "wallets.cmp.gsv.dev", "--subresource", "status", "-n", "default"], true),
            (&["create", "namespaces"], true),
        ],
    );
}

#[tokio::test]
async fn the_operator_may_fold_gateway_meters_but_never_add_or_change_one() {
    let admin = test_client().await;
    install_crds(&admin, &cmp_crds::all_crds(), "cmp-tests").await.expect("CRDs");
    let operator = identity(Component::Operator);
    let as_operator = client_for(&operator.kubeconfig).await.expect("the operator's client");
    let ns = TestNamespace::create(&admin, "meters").await.expect("a namespace");
    let wallets = Api::<Wallet>::namespaced(admin.clone(), &ns.name);
    let wallet: Wallet = serde_json::from_value(json!({
        "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Wallet", "metadata": {"name": "w"}, "spec": {}
    }))
    .expect("a Wallet");
    wallets.create(&PostParams::default(), &wallet).await.expect("the Wallet");
    // A gateway replica's meter, written under its own field manager (as the admin: the guard
    // narrows only the operator).
    let meter = json!({"name": "gw-0", "consumed": 5, "runs": 5, "lease": 0, "updatedAt": "2026-01-01T00:00:00Z"});
    let status = json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Wallet", "status": {"meters": [meter]}});
    wallets
        .patch_status("w", &PatchParams::apply("cmp-gateway-gw-0").force(), &Patch::Apply(&status))
        .await
        .expect("the gateway's meter");

    let operator_wallets = Api::<Wallet>::namespaced(as_operator, &ns.name);
    let refused = |what: &str, result: Result<Wallet, kube::Error>| match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{what}: {status:?}");
            assert!(status.message.contains("the operator may remove (fold) a stale meter"), "{what}: {status:?}");
        }
        other => panic!("{what} was not refused: {other:?}"),
    };
    let forged = json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Wallet",
                        "status": {"meters": [{"name": "forged", "consumed": 0, "runs": 0, "lease": 0}]}});
    // A new policy takes effect once the API server has loaded it: wait, with dry runs, until it does.
    let dry_run = PatchParams { dry_run: true, ..PatchParams::apply("cmp-operator") };
    eventually("the meter guard in effect", Duration::from_secs(30), || async {
        operator_wallets.patch_status("w", &dry_run, &Patch::Apply(&forged)).await.is_err().then_some(())
    })
    .await;
    refused(
        "the operator adding a meter",
        operator_wallets.patch_status("w", &PatchParams::apply("cmp-operator"), &Patch::Apply(&forged)).await,
    );
    let changed = json!({"status": {"meters": [{"name": "gw-0", "consumed": 0, "runs": 5, "lease": 0,
                                                "updatedAt": "2026-01-01T00:00:00Z"}]}});
    refused(
        "the operator changing a meter",
        operator_wallets.patch_status("w", &PatchParams::default(), &Patch::Merge(&changed)).await,
    );
    let unchanged = wallets.get_status("w").await.expect("the Wallet");
    let meters = unchanged.status.as_ref().map(|s| s.meters.clone()).unwrap_or_default();
    assert_eq!(meters.len(), 1, "{meters:?}");
    assert_eq!(meters[0].consumed, 5, "the refused writes changed nothing: {meters:?}");

    // The figures and a fold (removing the meter into the compacted total) are the operator's to write.
    let fold: json_patch::Patch = serde_json::from_value(json!([
        {"op": "remove", "path": "/status/meters/0"},
        {"op": "add", "path": "/status/compacted", "value": {"consumed": 5, "runs": 5, "meters": ["gw-0"]}},
        {"op": "add", "path": "/status/consumed", "value": 5},
    ]))
    .expect("a JSON patch");
    let folded = operator_wallets
        .patch_status("w", &PatchParams::default(), &Patch::<()>::Json(fold))
        .await
        .expect("the operator folds the meter");
    let status = folded.status.expect("a status");
    assert!(status.meters.is_empty(), "{:?}", status.meters);
    assert_eq!(status.compacted.map(|c| c.consumed), Some(5));
}
