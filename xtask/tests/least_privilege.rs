//! The chart's RBAC is least privilege. (That it is enough is proven by the
//! integration tests, which run every binary as its chart identity.)
//! `kubectl auth can-i`, as each component's ServiceAccount, shows it refused
//! what it must not do, beside a control it is allowed. The one refusal RBAC
//! cannot express, the operator writing gateway meters (it may patch
//! wallets/status to fold them), is made by the chart's meter guard: real
//! writes as the operator are refused when they add or change a meter, and
//! allowed when they fold one. Likewise the gateway, which may patch
//! instances/status to record its probes of connector bindings, is kept to
//! `status.connectorProbes` by its status guard.

use std::process::Command;
use std::time::Duration;

use cmp_crds::Instance;
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
    ChartIdentity::apply(&test_kubeconfig(), component, RELEASE, NAMESPACE, &values)
        .expect("the chart's identity applies")
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
            (&["patch", "instances.cmp.gsv.dev", "--subresource", "status"], true),
            (&["watch", "instances.cmp.gsv.dev", "--all-namespaces"], true),
            (&["delete", "leases.coordination.k8s.io", "-n", NAMESPACE], true),
        ],
    );
}

#[test]
fn with_sign_up_and_the_buyer_api_the_gateway_may_create_organizations_and_projects_and_impersonate_people() {
    // The gateway as release `release` with OIDC and `switch` on.
    let gateway_with = |release: &str, switch: &str| {
        let values = [format!("{switch}=true"), "gateway.oidc.issuer=https://sso.example/realms/cmp".to_string()];
        ChartIdentity::apply(&test_kubeconfig(), Component::Gateway, release, NAMESPACE, &values)
            .expect("the chart's identity applies")
    };
    let gateway = gateway_with("least-signup", "gateway.signup.enabled");
    assert_answers(
        &gateway,
        &[
            (&["create", "organizations.cmp.gsv.dev"], true),
            (&["create", "projects.cmp.gsv.dev", "-n", "cmp-anyone"], true),
            (&["update", "organizations.cmp.gsv.dev"], false),
            (&["patch", "organizations.cmp.gsv.dev"], false),
            (&["delete", "organizations.cmp.gsv.dev"], false),
            (&["patch", "projects.cmp.gsv.dev", "-n", "cmp-anyone"], false),
            (&["delete", "projects.cmp.gsv.dev", "-n", "cmp-anyone"], false),
            (&["create", "instances.cmp.gsv.dev", "-n", "cmp-anyone"], false),
            (&["create", "wallets.cmp.gsv.dev", "-n", "cmp-anyone"], false),
            (&["impersonate", "users"], false),
        ],
    );
    let reader = gateway_with("least-buyer", "gateway.buyerApi.enabled");
    assert_answers(
        &reader,
        &[
            (&["impersonate", "users"], true),
            (&["impersonate", "groups"], true),
            (&["impersonate", "serviceaccounts"], false),
            (&["impersonate", "userextras/scopes"], false),
            (&["impersonate", "uids"], false),
            (&["create", "organizations.cmp.gsv.dev"], false),
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
    let webhook = ChartIdentity::apply(&test_kubeconfig(), Component::Webhook, "least-tokens", NAMESPACE, &values)
        .expect("applies");
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

#[tokio::test]
async fn the_gateway_may_write_connector_probes_but_nothing_else_of_an_instances_status() {
    let admin = test_client().await;
    install_crds(&admin, &cmp_crds::all_crds(), "cmp-tests").await.expect("CRDs");
    let gateway = identity(Component::Gateway);
    let as_gateway = client_for(&gateway.kubeconfig).await.expect("the gateway's client");
    let ns = TestNamespace::create(&admin, "probes").await.expect("a namespace");
    let instances = Api::<Instance>::namespaced(admin.clone(), &ns.name);
    let instance: Instance = serde_json::from_value(json!({
        "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance", "metadata": {"name": "bot"},
        "spec": {"project": "support", "offering": "desk", "version": "1", "plan": "pro"},
    }))
    .expect("an Instance");
    instances.create(&PostParams::default(), &instance).await.expect("the Instance");
    // The operator's status (as the admin: the guard narrows only the gateway).
    let operators = json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
                           "status": {"phase": "Ready", "endpoint": "http://lfx:7860",
                                      "connectors": [{"name": "desk", "vaultPath": "connectors/a/support/desk",
                                                      "secret": "Found", "destination": "Allowed"}]}});
    instances
        .patch_status("bot", &PatchParams::apply("cmp-operator").force(), &Patch::Apply(&operators))
        .await
        .expect("the operator's status");

    let gateway_instances = Api::<Instance>::namespaced(as_gateway, &ns.name);
    let as_prober = PatchParams::apply(cmp_crds::names::GATEWAY_PROBE_FIELD_MANAGER).force();
    let refused = |what: &str, result: Result<Instance, kube::Error>| match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{what}: {status:?}");
            assert!(
                status.message.contains("the gateway writes only status.connectorProbes and status.knowledge"),
                "{what}: {status:?}"
            );
        }
        other => panic!("{what} was not refused: {other:?}"),
    };
    let forged =
        |status: serde_json::Value| json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance", "status": status});
    let key = json!({"apiKeys": [{"name": "stolen", "publicId": "abc", "hash": format!("sha256:{}", "0".repeat(64)),
                                  "createdAt": "2026-01-01T00:00:00Z", "secret": {"store": "Secret", "name": "x", "key": "apiKey"}}]});
    // A new policy takes effect once the API server has loaded it: wait, with dry runs, until it does.
    let dry_run = PatchParams { dry_run: true, ..as_prober.clone() };
    eventually("the status guard in effect", Duration::from_secs(30), || async {
        let tried = gateway_instances.patch_status("bot", &dry_run, &Patch::Apply(&forged(key.clone()))).await;
        matches!(tried, Err(kube::Error::Api(status)) if status.code == 403).then_some(())
    })
    .await;
    refused(
        "the gateway adding an API key hash",
        gateway_instances.patch_status("bot", &as_prober, &Patch::Apply(&forged(key))).await,
    );
    let failed = forged(json!({"phase": "Failed"}));
    refused(
        "the gateway changing the phase",
        gateway_instances.patch_status("bot", &as_prober, &Patch::Apply(&failed)).await,
    );
    let moved = json!({"status": {"endpoint": "http://evil:80"}});
    refused(
        "the gateway moving the endpoint",
        gateway_instances.patch_status("bot", &PatchParams::default(), &Patch::Merge(&moved)).await,
    );

    // Its probes are its to write, and leave the operator's status as it was.
    let probe = json!({"name": "desk", "binding": "0123456789abcdef0123456789abcdef", "probedAt": "2026-01-01T00:00:00Z",
                       "answered": true, "tools": ["get_ticket"]});
    let probed = gateway_instances
        .patch_status("bot", &as_prober, &Patch::Apply(&forged(json!({"connectorProbes": [probe]}))))
        .await
        .expect("the gateway writes its probes");
    let status = probed.status.expect("a status");
    assert_eq!(status.connector_probes.len(), 1);
    assert_eq!(
        (status.phase, status.endpoint.as_deref()),
        (cmp_crds::instance::InstancePhase::Ready, Some("http://lfx:7860"))
    );
    assert!(status.api_keys.is_empty());
}

#[test]
fn the_gateways_status_guard_covers_every_status_field_but_its_probes_and_the_knowledge_base() {
    let rendered = cmp_testenv::helm::template(RELEASE, NAMESPACE, &[]).expect("helm template");
    let crd = cmp_crds::all_crds().into_iter().find(|c| c.spec.names.kind == "Instance").expect("the Instance CRD");
    let schema = crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).expect("a schema");
    let status = schema.properties.as_ref().and_then(|p| p.get("status")).expect("status");
    let fields: Vec<&String> = status.properties.as_ref().expect("status fields").keys().collect();
    assert!(fields.iter().any(|f| *f == "connectorProbes"));
    assert!(fields.iter().any(|f| *f == "knowledge"));
    for field in fields.into_iter().filter(|f| *f != "connectorProbes" && *f != "knowledge") {
        let guarded = format!("object.status.{field} == oldObject.status.{field}");
        assert!(rendered.stdout.contains(&guarded), "status.{field} is not guarded in templates/status-guard.yaml");
    }
}
