//! The chart, installed with `helm install` on a cluster of its own (a
//! control plane and a real node), with the CMP image built without Docker
//! (the suite's debug binaries): the operator, two gateway replicas and two
//! webhook replicas run as pods under the chart's identities. What they
//! reach outside the cluster listens on the node network's machine side: a
//! shared lfx, an artifact store, a Saleor store (deliveries signed by
//! PyJWT), a GitOps remote over HTTP and a real Argo CD.
//!
//! - The API server calls the webhook's pods: an Instance naming a missing
//!   Project, or a plan its Offering does not have, is refused.
//! - The operator's pods provision a tenant and a Shared Instance on lfx; a
//!   run through a gateway pod answers and is charged to the Wallet.
//! - Crashes (a pod's processes killed, kubelet restarting them) lose
//!   nothing: a gateway killed mid-spending never overspends the Wallet and
//!   its lease comes back; with the operator's leader killed an Instance is
//!   still provisioned and a deleted one leaves no finalizer behind; a paid
//!   order sent to a killed webhook pod lands, once, when the store retries.
//! - A Dedicated Instance: committed by the operator's pod, synced by Argo
//!   CD, its pod fetches and checks its artifact under the Project's egress
//!   (the chart's `operator.artifactEgress`); a run through a gateway pod
//!   reaches it with the Instance's own key and is charged; another tenant's
//!   pod cannot reach it.
//!
//! Needs root, as the suite does (the node).

mod install;
mod reads;

use std::time::Duration;

use cmp_crds::{Instance, Wallet};
use cmp_testenv::node::probe::{self, Expect};
use cmp_testenv::test::eventually;
use install::{Installed, helm, install};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use reads::{
    dedicated_ready, instance, ip, ready, ready_key, ready_pods, restarts, run_charged, spend, try_create, uid, wallet,
};
use serde_json::{Value, json};

const NAMESPACE: &str = "cmp-system";
const ARGOCD_NAMESPACE: &str = "argocd";
/// The Dedicated Offering's flow id (the runtime serves its flow under it).
const DEDICATED_FLOW_ID: &str = "0d7e3c52-4f2a-4b7e-8c11-2b9d5f6a7e10";
const RUNTIME_KEY: &str = "the-shared-runtimes-key";
/// The tenant's credits: small, so the gateways spend them all.
const BALANCE: i64 = 40;
const WAIT: Duration = Duration::from_secs(240);
/// The plan's SKU in the store.
const ORDER_SKU: &str = "ECHO-BASIC";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_on_a_node_admits_provisions_and_charges_and_loses_nothing_when_its_pods_crash() {
    let installed = install().await;
    tenant(&installed).await;
    refusals(&installed).await;
    let key = shared_run(&installed).await;
    gateway_crash(&installed, &key).await;
    operator_crash(&installed, &key).await;
    let buyer_runtime_namespace = webhook_crash(&installed).await;
    dedicated_run(&installed, &buyer_runtime_namespace).await;

    let Installed { kubeconfig, dir, .. } = &installed;
    helm(&["uninstall", "cmp", "--namespace", NAMESPACE, "--kubeconfig", kubeconfig, "--wait"]);
    let dir = dir.clone();
    drop(installed);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Applies `object` as the administrator.
async fn apply(client: &kube::Client, object: Value) {
    let object: kube::api::DynamicObject = serde_json::from_value(object).expect("an object");
    let options = cmp_testenv::apply::ApplyOptions { field_manager: "admin".into(), ..Default::default() };
    cmp_testenv::apply::apply_object(client, &object, &options).await.expect("applied");
}

/// A tenant (acme, with a Project) and the Shared Offering, provisioned by the operator's pods.
async fn tenant(installed: &Installed) {
    let Installed { client, lfx, artifact: (url, sha256), .. } = installed;
    apply(
        client,
        json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Organization", "metadata": {"name": "acme"},
                 "spec": {"displayName": "Acme", "starterCredits": BALANCE,
                          "owners": [{"kind": "User", "name": "alice@acme.example"}]}}),
    )
    .await;
    apply(client, json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Offering", "metadata": {"name": "echo"},
                 "spec": {"displayName": "Echo",
                          "runtime": {"mode": "Shared", "api": "v2", "endpoint": lfx.url(),
                                      "apiKeySecretRef": {"namespace": NAMESPACE, "name": "lfx-shared", "key": "apiKey"}},
                          "versions": [{"name": "1", "flowId": "echo",
                                        "artifact": {"url": url, "sha256": sha256}}],
                          "plans": [{"id": "basic", "creditsPerRun": 1, "requestsPerMinute": 100000, "timeoutSeconds": 5,
                                     "saleorSku": ORDER_SKU}]}}))
    .await;
    eventually("the control namespace cmp-acme", WAIT, || async {
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()).get("cmp-acme").await.ok()
    })
    .await;
    apply(
        client,
        json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Project",
                 "metadata": {"name": "support", "namespace": "cmp-acme"}, "spec": {"displayName": "Support"}}),
    )
    .await;
}

/// The API server asks the webhook's pods: cross-object refusals.
async fn refusals(installed: &Installed) {
    let client = &installed.client;
    let missing = try_create(client, "cmp-acme", instance("lost", "basic", "nope"), true).await;
    let missing = missing.expect_err("an Instance naming a missing Project is refused");
    assert!(missing.contains("denied the request") && missing.contains("nope"), "{missing}");
    let gold = try_create(client, "cmp-acme", instance("gold", "gold", "support"), true).await;
    let gold = gold.expect_err("an unknown plan is refused");
    assert!(gold.contains("denied the request") && gold.contains("basic"), "{gold}");
}

/// A run through a gateway pod answers and is charged; answers the Instance's key.
async fn shared_run(installed: &Installed) -> String {
    let client = &installed.client;
    let bases = installed.gateway_bases();
    try_create(client, "cmp-acme", instance("bot", "basic", "support"), false).await.expect("the Instance");
    let key = ready_key(client, "bot").await;
    run_charged(client, &bases[0], &key, "hello from the host", 1).await;

    key
}

/// A gateway pod crashes mid-spending: the Wallet is never overspent, and the crashed process's lease comes
/// back. What a crash loses is the runs the process answered but had not yet recorded (flushed every 500 ms).
async fn gateway_crash(installed: &Installed, key: &str) {
    let (client, bases) = (&installed.client, installed.gateway_bases());
    let victim = installed.gateways[1].clone();
    let node = &installed.cluster.node;
    let served = spend(&bases, key, || {
        node.crash_pod(&uid(&victim)).expect("the gateway's process is killed");
    })
    .await;
    let (granted, consumed) = wallet(client).await;
    assert_eq!(granted, BALANCE);
    assert!(consumed <= granted, "the Wallet is never overspent: {consumed} > {granted}");
    let restarted = ready_pods(client, "gateway", 2).await;
    assert!(restarted.iter().any(|p| uid(p) == uid(&victim) && restarts(p) >= 1), "kubelet restarted the gateway");
    // Its lease expires, the live replica hands its own back when idle, and the rest is spent: nothing stranded.
    let wallets: Api<Wallet> = Api::namespaced(client.clone(), "cmp-acme");
    eventually("every lease expired or handed back", WAIT, || async {
        let meters = wallets.get("acme").await.ok()?.status?.meters;
        (cmp_crds::credits::leased(&meters, k8s_openapi::jiff::Timestamp::now()) == 0).then_some(())
    })
    .await;
    let swept = spend(&bases, key, || {}).await;
    let meters = wallets.get("acme").await.expect("the Wallet").status.unwrap_or_default().meters;
    let consumed = cmp_crds::credits::consumed(&meters, None);
    let victim_name = victim.metadata.name.clone().expect("a name");
    let victim_recorded: i64 = meters.iter().filter(|m| m.name.starts_with(&victim_name)).map(|m| m.consumed).sum();
    let victim_served = served[1] + swept[1];
    let total = 1 + served.iter().chain(&swept).sum::<i64>();
    println!(
        "served {served:?} then {swept:?}; the crashed gateway answered {victim_served}, recorded {victim_recorded}; \
         the Wallet consumed {consumed} of {BALANCE}"
    );
    assert_eq!(consumed, BALANCE, "every credit was spent, none overspent");
    let unrecorded = (victim_served - victim_recorded).max(0);
    assert!(
        total <= BALANCE + unrecorded,
        "{total} runs: beyond the balance only the crashed process's unflushed runs"
    );
}

/// The operator's leader crashes: Instances are still provisioned, and deleted with no finalizer left.
async fn operator_crash(installed: &Installed, key: &str) {
    let (client, operators) = (&installed.client, &installed.operators);
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let leader = leases.get("cmp-operator").await.expect("the operator's Lease");
    let holder = leader.spec.and_then(|s| s.holder_identity).expect("a leader");
    let leader_pod = operators.iter().find(|p| p.metadata.name.as_deref() == Some(&holder)).expect("the leader's pod");
    installed.cluster.node.crash_pod(&uid(leader_pod)).expect("the operator's leader is killed");
    try_create(client, "cmp-acme", instance("second", "basic", "support"), false).await.expect("the Instance");
    let second = ready_key(client, "second").await;
    assert_ne!(second, key);
    let instances: Api<Instance> = Api::namespaced(client.clone(), "cmp-acme");
    instances.delete("bot", &DeleteParams::default()).await.expect("deleted");
    eventually("the deleted Instance gone (its finalizer removed)", WAIT, || async {
        instances.get_opt("bot").await.ok()?.is_none().then_some(())
    })
    .await;
    let operators = ready_pods(client, "operator", 2).await;
    assert!(operators.iter().any(|p| restarts(p) >= 1), "kubelet restarted the killed operator");
}

/// A webhook pod crashes as a paid order arrives: the store retries the delivery until it is answered, as
/// Saleor does, and sends it once more to the other pod; the order becomes CRs exactly once. Answers the
/// buyer's runtime namespace.
async fn webhook_crash(installed: &Installed) -> String {
    let Installed { client, store, .. } = installed;
    let http = reqwest::Client::new();
    let webhooks = ready_pods(client, "webhook", 2).await;
    installed.cluster.node.crash_pod(&uid(&webhooks[0])).expect("the webhook's process is killed");
    let order = std::fs::read_to_string(cmp_testenv::workspace_root().join("examples/saleor/order-fully-paid.json"))
        .expect("the example order")
        .replace("SUPPORT-ASSISTANT-PRO", ORDER_SKU);
    let paid = |pod: &Pod| format!("http://{}:8090/saleor/webhooks/order-fully-paid", ip(pod));
    let mut failed_deliveries = 0;
    let first = loop {
        match store.deliver(&http, &paid(&webhooks[0]), "order_fully_paid", order.as_bytes()).await {
            Ok((200, answer)) => break answer,
            _ if failed_deliveries < 120 => failed_deliveries += 1,
            other => panic!("the crashed webhook pod never came back: {other:?}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let again = store.deliver(&http, &paid(&webhooks[1]), "order_fully_paid", order.as_bytes()).await;
    let again = again.expect("the other pod answers").1;
    println!("the crashed pod's deliveries failed {failed_deliveries} times; then {first}; the other pod: {again}");
    assert_eq!((first["grantsAppended"].as_u64(), again["grantsAppended"].as_u64()), (Some(1), Some(0)));
    let organizations = Api::<cmp_crds::Organization>::all(client.clone()).list(&ListParams::default()).await;
    let buyers: Vec<_> = organizations
        .expect("Organizations")
        .items
        .into_iter()
        .filter(|o| o.spec.owners.iter().any(|owner| owner.name == "ada@example.com"))
        .collect();
    assert_eq!(buyers.len(), 1, "exactly one Organization for the buyer");
    let buyer_namespace = format!("cmp-{}", buyers[0].metadata.name.as_deref().expect("a name"));
    let bought = Api::<Instance>::namespaced(client.clone(), &buyer_namespace).list(&ListParams::default()).await;
    let bought = bought.expect("Instances").items;
    assert_eq!(bought.len(), 1, "one Instance for the one plan line");
    assert_eq!((bought[0].spec.offering.as_str(), bought[0].spec.plan.as_str()), ("echo", "basic"));
    let ready = ready(client, &buyer_namespace, bought[0].metadata.name.as_deref().expect("a name")).await;

    ready.runtime_namespace.expect("the buyer's runtime namespace")
}

/// A Dedicated Instance: the operator's pod commits its runtime, Argo CD syncs it, the pod fetches the artifact
/// (under the Project's egress with the chart's artifactEgress) and checks its sha256, and a run through a
/// gateway pod reaches it with the Instance's own key and is charged. Another tenant's pod cannot reach it.
async fn dedicated_run(installed: &Installed, other_tenant: &str) {
    let Installed { client, argocd, outside, artifact: (url, sha256), .. } = installed;
    let bases = installed.gateway_bases();
    apply(client, json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Offering", "metadata": {"name": "desk"},
                 "spec": {"displayName": "Desk",
                          "runtime": {"mode": "Dedicated", "api": "v2", "image": outside.runtime_image, "port": 7860,
                                      "apiKeySecretRef": {"namespace": NAMESPACE, "name": "lfx-shared", "key": "apiKey"}},
                          "versions": [{"name": "1", "flowId": DEDICATED_FLOW_ID,
                                        "artifact": {"url": url, "sha256": sha256}}],
                          "plans": [{"id": "basic", "creditsPerRun": 3, "requestsPerMinute": 100000, "timeoutSeconds": 30}]}}))
    .await;
    let wallets: Api<Wallet> = Api::namespaced(client.clone(), "cmp-acme");
    let top_up = json!([{"op": "add", "path": "/spec/grants/-",
                         "value": {"id": "top-up", "credits": 30, "reason": "For the Dedicated runs", "source": "Manual"}}]);
    let top_up = kube::api::Patch::Json::<()>(serde_json::from_value(top_up).expect("a JSON patch"));
    wallets.patch("acme", &kube::api::PatchParams::default(), &top_up).await.expect("a top-up");
    let mut desk = instance("desk-bot", "basic", "support");
    desk["spec"]["offering"] = json!("desk");
    try_create(client, "cmp-acme", desk, false).await.expect("the Dedicated Instance");
    dedicated_ready(client, argocd).await;
    let key = ready_key(client, "desk-bot").await;
    run_charged(client, &bases[0], &key, "hello, dedicated", 3).await;

    // Another tenant's pod (in the buyer's runtime namespace) is refused where the gateway's pods got through.
    let runtime_namespace = ready(client, "cmp-acme", "desk-bot").await.runtime_namespace.expect("a runtime namespace");
    let health = format!("http://desk-bot.{runtime_namespace}.svc.cluster.local:7860/health");
    let (refused, output) = probe::check(client, other_tenant, "stranger", &[], &health, Expect::Refusal).await;
    assert!(refused, "another tenant's pod cannot reach the Dedicated runtime: {output}");
}
