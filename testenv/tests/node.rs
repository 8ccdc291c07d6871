//! The tests' node is a real one: pods run on it, Services route, cluster DNS
//! answers, and NetworkPolicies are enforced on real packets.
//!
//! Needs root (network namespaces, containerd, iptables), as the suite does.

use std::time::Duration;

use cmp_testenv::apply::{ApplyOptions, apply_object};
use cmp_testenv::node::Cluster;
use cmp_testenv::test::eventually;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::DynamicObject;
use serde_json::json;

/// How long a pod may take to be scheduled, started and finished.
const POD_TIMEOUT: Duration = Duration::from_secs(120);

fn state_dir(name: &str) -> std::path::PathBuf {
    cmp_testenv::control_plane::cache_dir().join("test-runs").join(format!("{name}-{}", std::process::id()))
}

/// Creates (server-side applies) `object`, in `namespace` when it is namespaced.
async fn create(client: &kube::Client, namespace: Option<&str>, object: serde_json::Value) {
    let object: DynamicObject = serde_json::from_value(object).expect("a valid object");
    let options = ApplyOptions {
        field_manager: "node-test".into(),
        namespace: namespace.map(String::from),
        ..Default::default()
    };
    apply_object(client, &object, &options).await.expect("applied");
}

/// A netprobe server pod `name` in `namespace`, labelled `app: name`, behind a Service of the same name on port 80.
async fn server(client: &kube::Client, namespace: &str, name: &str) {
    create(
        client,
        Some(namespace),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"containers": [{
                "name": "netprobe", "image": "cmp.local/netprobe:node", "imagePullPolicy": "Never",
                "args": ["serve", ":8080"],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
            }]},
        }),
    )
    .await;
    create(
        client,
        Some(namespace),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
        }),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    eventually(&format!("pod {namespace}/{name} ready"), POD_TIMEOUT, || async {
        let pod = pods.get(name).await.ok()?;
        let ready = pod.status?.conditions?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(())
    })
    .await;
}

/// Runs `netprobe get url attempts` in a new pod `name` in `namespace` and
/// returns whether it got a 2xx answer, with what it printed. A probe that
/// expects to be let in tries several times (the enforcer learns a new pod's
/// address a moment after it starts); one that expects a refusal tries once.
async fn probe(client: &kube::Client, namespace: &str, name: &str, url: &str, attempts: u32) -> (bool, String) {
    create(
        client,
        Some(namespace),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"role": "client"}},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "netprobe", "image": "cmp.local/netprobe:node", "imagePullPolicy": "Never",
                "args": ["get", url, attempts.to_string()],
            }]},
        }),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let phase = eventually(&format!("pod {namespace}/{name} finished"), POD_TIMEOUT, || async {
        let phase = pods.get(name).await.ok()?.status?.phase?;
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    })
    .await;
    let output = pods.logs(name, &Default::default()).await.unwrap_or_else(|e| format!("(no log: {e})"));
    (phase == "Succeeded", output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_services_route_dns_answers_and_network_policies_are_enforced() {
    let dir = state_dir("node");
    let cluster = Cluster::start(&dir, &[]).await.unwrap_or_else(|e| panic!("the cluster starts: {e}"));
    let client = cluster.client().await.expect("client");
    for ns in ["alpha", "beta"] {
        create(&client, None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})).await;
    }
    server(&client, "beta", "web").await;

    // A Service name resolves through CoreDNS, kube-proxy routes its ClusterIP, and the answer comes from beta's pod.
    let (ok, output) = probe(&client, "alpha", "before", "http://web.beta.svc.cluster.local/", 10).await;
    assert!(ok, "alpha reaches beta's Service before any policy: {output}");
    assert!(output.contains("netprobe web"), "the answer comes from beta's pod: {output}");

    // beta denies all ingress but from its own namespace: kube-router drops alpha's packets.
    create(
        &client,
        Some("beta"),
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "same-namespace-only"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {}}]}]},
        }),
    )
    .await;
    let (ok, output) = probe(&client, "alpha", "after", "http://web.beta.svc.cluster.local/", 1).await;
    assert!(!ok, "alpha is refused once beta's policy is enforced: {output}");
    assert!(output.contains("unreachable"), "the packets are dropped, not answered: {output}");
    let (ok, output) = probe(&client, "beta", "inside", "http://web.beta.svc.cluster.local/", 10).await;
    assert!(ok, "beta's own pods still reach it: {output}");

    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
