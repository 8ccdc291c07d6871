//! The chart, installed with `helm install` on a cluster of its own (a
//! control plane and a real node), with the CMP image built without Docker
//! (the suite's debug binaries): the operator, two gateway replicas and the
//! webhook run as pods under the chart's identities.
//!
//! - The API server calls the webhook's pods: an Instance naming a missing
//!   Project, or a plan its Offering does not have, is refused.
//! - The operator's pods provision a tenant and a Shared Instance on a real
//!   lfx (outside the cluster, on the node network's machine side); a run
//!   through a gateway pod answers and is charged to the tenant's Wallet.
//! - Crashes lose nothing: with a gateway pod's process killed mid-spending
//!   the Wallet is never overspent and every credit stays spendable; with the
//!   operator's leader killed, an Instance is still provisioned and a deleted
//!   one leaves no finalizer behind.
//!
//! Needs root, as the suite does (the node).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use cmp_crds::{Instance, Wallet};
use cmp_testenv::lfx::Lfx;
use cmp_testenv::node::probe::create;
use cmp_testenv::node::{Cluster, state_dir};
use cmp_testenv::saleor::SaleorStandIn;
use cmp_testenv::test::eventually;
use cmp_testenv::workspace_binary;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use xtask::image::{BINARIES, build_cmp};
use xtask::oci::Compression;

const NAMESPACE: &str = "cmp-system";
const RUNTIME_KEY: &str = "the-shared-runtimes-key";
/// The tenant's credits: small, so the gateways spend them all.
const BALANCE: i64 = 40;
const WAIT: Duration = Duration::from_secs(240);
/// The plan's SKU in the store.
const ORDER_SKU: &str = "ECHO-BASIC";

/// The CMP image with the suite's debug binaries, as an OCI archive: its path and tag.
fn cmp_image(dir: &Path) -> (PathBuf, String) {
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

/// The chart's values for a cluster of 2 cores: small requests, and leases
/// short enough that a crashed gateway's credits come back within seconds.
fn chart_values(tag: &str, store_api_url: &str) -> Value {
    let small = json!({"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"memory": "512Mi"}});
    json!({
        "image": {"repository": "cmp.local/cmp", "tag": tag, "pullPolicy": "Never"},
        "logFormat": "text",
        "operator": {"replicas": 2, "resources": small, "extraArgs": ["--lease-duration-seconds=6"]},
        "gateway": {
            "replicas": 2, "resources": small,
            "runtimeKeySecrets": [{"namespace": NAMESPACE, "name": "lfx-shared"}],
            "extraArgs": ["--lease-seconds=2", "--idle-seconds=1", "--flush-ms=500"],
        },
        "webhook": {
            "replicas": 2, "resources": small, "saleorApiUrls": [store_api_url],
            "creditPacks": [{"sku": "CREDITS-1000", "credits": 1000, "displayName": "1,000 credits"}],
        },
    })
}

fn helm(args: &[&str]) {
    let output = cmp_testenv::helm::helm(args).expect("helm runs");
    assert!(output.success, "helm {args:?}: {}{}", output.stdout, output.stderr);
}

/// The pods of the chart's `component`, once `count` of them are ready.
async fn ready_pods(client: &kube::Client, component: &str, count: usize) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let selector = format!("app.kubernetes.io/component={component}");
    eventually(&format!("{count} ready {component} pods"), WAIT, || async {
        let list = pods.list(&ListParams::default().labels(&selector)).await.ok()?;
        let ready: Vec<Pod> = list.items.into_iter().filter(is_ready).collect();
        (ready.len() == count).then_some(ready)
    })
    .await
}

fn is_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn restarts(pod: &Pod) -> i32 {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses.map_or(0, |s| s.iter().map(|c| c.restart_count).sum())
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().expect("a pod's uid")
}

fn ip(pod: &Pod) -> String {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("a pod's address")
}

/// Creates (or dry-runs) an object as the administrator; the API server's refusal, if any.
async fn try_create(client: &kube::Client, namespace: &str, object: Value, dry_run: bool) -> Result<(), String> {
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("cmp.gsv.dev", "v1alpha1", "Instance")),
    );
    let object = serde_json::from_value(object).expect("an object");
    let params = PostParams { dry_run, ..Default::default() };
    api.create(&params, &object).await.map(|_| ()).map_err(|e| e.to_string())
}

fn instance(name: &str, plan: &str, project: &str) -> Value {
    json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance", "metadata": {"name": name},
           "spec": {"project": project, "offering": "echo", "version": "1", "plan": plan,
                    "apiKeys": [{"name": "main"}]}})
}

/// The Instance's status, once the operator made it Ready.
async fn ready(client: &kube::Client, namespace: &str, name: &str) -> cmp_crds::instance::InstanceStatus {
    let instances: Api<Instance> = Api::namespaced(client.clone(), namespace);
    eventually(&format!("Instance {namespace}/{name} Ready"), WAIT, || async {
        let status = instances.get(name).await.ok()?.status?;
        status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(status)
    })
    .await
}

/// The key of an Instance of cmp-acme, once the operator made it Ready.
async fn ready_key(client: &kube::Client, name: &str) -> String {
    let status = ready(client, "cmp-acme", name).await;
    let secret_name = &status.api_keys.first().expect("a key").secret.name;
    let secret = Api::<Secret>::namespaced(client.clone(), "cmp-acme").get(secret_name).await.expect("the key Secret");
    let bytes = secret.data.and_then(|d| d.get("apiKey").cloned()).expect("the key");
    String::from_utf8(bytes.0).expect("UTF-8")
}

/// The Wallet's (granted, consumed).
async fn wallet(client: &kube::Client) -> (i64, i64) {
    let wallet = Api::<Wallet>::namespaced(client.clone(), "cmp-acme").get("acme").await.expect("the Wallet");
    let grants: i64 = wallet.spec.grants.iter().map(|g| g.credits).sum();
    let status = wallet.status.unwrap_or_default();
    (grants, cmp_crds::credits::consumed(&status.meters, status.compacted.as_ref()))
}

/// Runs spent by callers spread over the gateway pods at `bases`, until each
/// has been refused (402) by every gateway several times in a row; a gateway
/// that does not answer (crashed, restarting) is tried again later.
/// `midway` runs once a third of the balance was served. Answers the runs
/// served by each gateway.
async fn spend(bases: &[String], key: &str, midway: impl FnOnce() + Send) -> Vec<i64> {
    let served: Arc<Vec<AtomicI64>> = Arc::new(bases.iter().map(|_| AtomicI64::new(0)).collect());
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("a client");
    let mut callers = Vec::new();
    for caller in 0..8 {
        let (served, bases, http, key) = (served.clone(), bases.to_vec(), http.clone(), key.to_string());
        callers.push(tokio::spawn(async move {
            let mut refused_in_a_row = 0;
            let mut turn = caller;
            while refused_in_a_row < 3 * bases.len() {
                turn += 1;
                let replica = turn % bases.len();
                let base = &bases[replica];
                let answer = http
                    .post(format!("{base}/v1/runs"))
                    .header("x-api-key", &key)
                    .json(&json!({"input_value": "spend"}))
                    .send()
                    .await;
                match answer.map(|a| a.status().as_u16()) {
                    Ok(200) => {
                        served[replica].fetch_add(1, Ordering::SeqCst);
                        refused_in_a_row = 0;
                    }
                    Ok(402) => {
                        refused_in_a_row += 1;
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(300)).await,
                }
            }
        }));
    }
    let mut midway = Some(midway);
    while callers.iter().any(|c| !c.is_finished()) {
        if served.iter().map(|s| s.load(Ordering::SeqCst)).sum::<i64>() >= BALANCE / 3
            && let Some(act) = midway.take()
        {
            act();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for caller in callers {
        caller.await.expect("a caller");
    }
    served.iter().map(|s| s.load(Ordering::SeqCst)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_on_a_node_admits_provisions_and_charges_and_loses_nothing_when_its_pods_crash() {
    let dir = state_dir("chart-on-node");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the state directory");
    let (archive, tag) = cmp_image(&dir);
    let cluster = Cluster::start(&dir.join("cluster"), &[]).await.unwrap_or_else(|e| panic!("the cluster starts: {e}"));
    cluster.node.import_image_as(&archive, "cmp.local/cmp").expect("the CMP image is imported");
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

    // helm install, as a user would, with the shared runtime's key in place.
    create(&client, None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})).await;
    create(
        &client,
        Some(NAMESPACE),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lfx-shared"},
               "stringData": {"apiKey": RUNTIME_KEY}}),
    )
    .await;
    let values = dir.join("values.yaml");
    std::fs::write(&values, serde_json::to_string(&chart_values(&tag, store.api_url())).expect("JSON"))
        .expect("the values");
    let chart = cmp_testenv::helm::chart();
    let kubeconfig = cluster.plane.kubeconfig().display().to_string();
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

    // A tenant, provisioned by the operator's pods.
    let apply = |object: Value| {
        let client = client.clone();
        async move {
            let object: kube::api::DynamicObject = serde_json::from_value(object).expect("an object");
            let options = cmp_testenv::apply::ApplyOptions { field_manager: "admin".into(), ..Default::default() };
            cmp_testenv::apply::apply_object(&client, &object, &options).await.expect("applied");
        }
    };
    apply(json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Organization", "metadata": {"name": "acme"},
                 "spec": {"displayName": "Acme", "starterCredits": BALANCE,
                          "owners": [{"kind": "User", "name": "alice@acme.example"}]}}))
    .await;
    apply(json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Offering", "metadata": {"name": "echo"},
                 "spec": {"displayName": "Echo",
                          "runtime": {"mode": "Shared", "api": "v2", "endpoint": lfx.url(),
                                      "apiKeySecretRef": {"namespace": NAMESPACE, "name": "lfx-shared", "key": "apiKey"}},
                          "versions": [{"name": "1", "flowId": "echo",
                                        "artifact": {"url": format!("http://{artifacts_address}/echo.json"), "sha256": sha256}}],
                          "plans": [{"id": "basic", "creditsPerRun": 1, "requestsPerMinute": 100000, "timeoutSeconds": 5,
                                     "saleorSku": ORDER_SKU}]}}))
    .await;
    eventually("the control namespace cmp-acme", WAIT, || async {
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()).get("cmp-acme").await.ok()
    })
    .await;
    apply(json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Project",
                 "metadata": {"name": "support", "namespace": "cmp-acme"}, "spec": {"displayName": "Support"}}))
    .await;

    // The API server asks the webhook's pods: cross-object refusals.
    let missing = try_create(&client, "cmp-acme", instance("lost", "basic", "nope"), true).await;
    let missing = missing.expect_err("an Instance naming a missing Project is refused");
    assert!(missing.contains("denied the request") && missing.contains("nope"), "{missing}");
    let gold = try_create(&client, "cmp-acme", instance("gold", "gold", "support"), true).await;
    let gold = gold.expect_err("an unknown plan is refused");
    assert!(gold.contains("denied the request") && gold.contains("basic"), "{gold}");

    // A run through a gateway pod answers and is charged.
    try_create(&client, "cmp-acme", instance("bot", "basic", "support"), false).await.expect("the Instance");
    let key = ready_key(&client, "bot").await;
    let bases: Vec<String> = gateways.iter().map(|g| format!("http://{}:8080", ip(g))).collect();
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{}/v1/runs", bases[0]))
        .header("x-api-key", &key)
        .json(&json!({"input_value": "hello from the host"}))
        .send()
        .await
        .expect("the gateway pod answers");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers().get("x-credits-charged").and_then(|v| v.to_str().ok()), Some("1"));
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!(body["output"]["text"], "hello from the host", "lfx's answer: {body}");
    eventually("the run recorded in the Wallet", WAIT, || async { (wallet(&client).await.1 == 1).then_some(()) }).await;

    // A gateway pod crashes mid-spending: the Wallet is never overspent, and the crashed process's lease comes
    // back. What a crash loses is the runs the process answered but had not yet recorded (flushed every 500 ms).
    let victim = gateways[1].clone();
    let node = &cluster.node;
    let served = spend(&bases, &key, || {
        node.crash_pod(&uid(&victim)).expect("the gateway's process is killed");
    })
    .await;
    let (granted, consumed) = wallet(&client).await;
    assert_eq!(granted, BALANCE);
    assert!(consumed <= granted, "the Wallet is never overspent: {consumed} > {granted}");
    let restarted = ready_pods(&client, "gateway", 2).await;
    assert!(restarted.iter().any(|p| uid(p) == uid(&victim) && restarts(p) >= 1), "kubelet restarted the gateway");
    // Its lease expires, the live replica hands its own back when idle, and the rest is spent: nothing stranded.
    let wallets: Api<Wallet> = Api::namespaced(client.clone(), "cmp-acme");
    eventually("every lease expired or handed back", WAIT, || async {
        let meters = wallets.get("acme").await.ok()?.status?.meters;
        (cmp_crds::credits::leased(&meters, k8s_openapi::jiff::Timestamp::now()) == 0).then_some(())
    })
    .await;
    let swept = spend(&bases, &key, || {}).await;
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

    // The operator's leader crashes: Instances are still provisioned, and deleted with no finalizer left.
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let leader = leases.get("cmp-operator").await.expect("the operator's Lease");
    let holder = leader.spec.and_then(|s| s.holder_identity).expect("a leader");
    let leader_pod = operators.iter().find(|p| p.metadata.name.as_deref() == Some(&holder)).expect("the leader's pod");
    cluster.node.crash_pod(&uid(leader_pod)).expect("the operator's leader is killed");
    try_create(&client, "cmp-acme", instance("second", "basic", "support"), false).await.expect("the Instance");
    let second = ready_key(&client, "second").await;
    assert_ne!(second, key);
    let instances: Api<Instance> = Api::namespaced(client.clone(), "cmp-acme");
    instances.delete("bot", &DeleteParams::default()).await.expect("deleted");
    eventually("the deleted Instance gone (its finalizer removed)", WAIT, || async {
        instances.get_opt("bot").await.ok()?.is_none().then_some(())
    })
    .await;
    let operators = ready_pods(&client, "operator", 2).await;
    assert!(operators.iter().any(|p| restarts(p) >= 1), "kubelet restarted the killed operator");

    // A webhook pod crashes as a paid order arrives: the store retries the delivery until it is answered, as
    // Saleor does, and sends it once more to the other pod; the order becomes CRs exactly once.
    let webhooks = ready_pods(&client, "webhook", 2).await;
    cluster.node.crash_pod(&uid(&webhooks[0])).expect("the webhook's process is killed");
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
    ready(&client, &buyer_namespace, bought[0].metadata.name.as_deref().expect("a name")).await;

    helm(&["uninstall", "cmp", "--namespace", NAMESPACE, "--kubeconfig", &kubeconfig, "--wait"]);
    drop(lfx);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
