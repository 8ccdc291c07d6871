//! The tests' node is a real one: pods run on it, Services route, cluster DNS
//! answers, and NetworkPolicies are enforced on real packets.
//!
//! Needs root (network namespaces, containerd, iptables), as the suite does.

use cmp_testenv::node::probe::{self, Expect, create};
use cmp_testenv::node::{Cluster, state_dir};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_services_route_dns_answers_and_network_policies_are_enforced() {
    let dir = state_dir("node");
    let cluster = Cluster::start(&dir).await.unwrap_or_else(|e| panic!("the cluster starts: {e}"));
    let client = cluster.client().await.expect("client");
    for ns in ["alpha", "beta"] {
        create(&client, None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})).await;
    }
    probe::serve(&client, "beta", "web", &[]).await;

    // A Service name resolves through CoreDNS, kube-proxy routes its ClusterIP, and the answer comes from beta's pod.
    let (ok, output) =
        probe::check(&client, "alpha", "before", &[], "http://web.beta.svc.cluster.local/", Expect::Answer).await;
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
    let (ok, output) =
        probe::check(&client, "alpha", "after", &[], "http://web.beta.svc.cluster.local/", Expect::Refusal).await;
    assert!(ok, "alpha is refused once beta's policy is enforced: {output}");
    let (ok, output) =
        probe::check(&client, "beta", "inside", &[], "http://web.beta.svc.cluster.local/", Expect::Answer).await;
    assert!(ok, "beta's own pods still reach it: {output}");

    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
