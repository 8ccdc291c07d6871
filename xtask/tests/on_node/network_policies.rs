//! The runtime namespaces' NetworkPolicies, as the operator renders them for a
//! Project, enforced on a real node (kube-router) and checked with real
//! packets: a tenant cannot reach another tenant's runtime, the gateway can;
//! a runtime reaches the gateway's tool port; and the artifact store a
//! Dedicated runtime fetches from is refused until the platform opens it
//! (`--artifact-egress`), which is what the chart's `operator.artifactEgress`
//! sets.
//!
//! Needs root (a network namespace, containerd, iptables), as the suite does.

use cmp_crds::organization::OrganizationSpec;
use cmp_crds::project::ProjectSpec;
use cmp_operator::project::desired::children;
use cmp_operator::settings::NetworkSettings;
use cmp_testenv::apply::{ApplyOptions, apply_object};
use cmp_testenv::node::probe::{self, Expect, create};
use cmp_testenv::node::{Cluster, state_dir};
use kube::api::DynamicObject;
use serde_json::json;

/// The gateway's namespace and the label its pods carry, as the chart sets them.
const GATEWAY_NAMESPACE: &str = "cmp-system";
const GATEWAY_LABEL: (&str, &str) = ("app.kubernetes.io/component", "gateway");

/// Applies the runtime namespace and the NetworkPolicies the operator renders
/// for `project` of `organization` with `network`, and returns the namespace.
async fn tenant(client: &kube::Client, organization: &str, project: &str, network: &NetworkSettings) -> String {
    let rendered = children(organization, &OrganizationSpec::default(), project, &ProjectSpec::default(), network);
    let namespace = rendered.namespace.metadata.name.clone().expect("the runtime namespace's name");
    let options = ApplyOptions { field_manager: "cmp-operator".into(), ..Default::default() };
    let objects = std::iter::once(serde_json::to_value(&rendered.namespace))
        .chain(rendered.network_policies.iter().map(serde_json::to_value));
    for object in objects {
        let mut object: DynamicObject = serde_json::from_value(object.expect("JSON")).expect("an object");
        if object.types.is_none() {
            panic!("the rendered object has no apiVersion/kind: {:?}", object.metadata.name);
        }
        object.metadata.managed_fields = None;
        apply_object(client, &object, &options).await.unwrap_or_else(|e| panic!("applying the rendered policies: {e}"));
    }
    namespace
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_and_runtimes_reach_only_what_the_platform_opens() {
    let dir = state_dir("network-policies");
    let cluster = Cluster::start(&dir).await.unwrap_or_else(|e| panic!("the cluster starts: {e}"));
    let client = cluster.client().await.expect("client");

    // The artifact store, outside the cluster: a server on the machine's side of the node's network.
    let store_address = cluster.network().host_address();
    let netprobe = cmp_testenv::node::binaries().expect("the node's binaries").join("netprobe");
    let serve_on_machine = |port: u16| {
        tokio::process::Command::new(&netprobe)
            .args(["serve", &format!("{store_address}:{port}")])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("netprobe starts on the machine")
    };
    let store_port = cmp_testenv::free_port().expect("a port");
    let _store = serve_on_machine(store_port);
    // Another server on the same host, which the opening must not reach.
    let other_port = cmp_testenv::free_port().expect("a port");
    let _other = serve_on_machine(other_port);
    let store_url = format!("http://{store_address}:{store_port}/flow.json");

    let defaults = NetworkSettings { gateway_namespace: GATEWAY_NAMESPACE.into(), ..Default::default() };
    let alpha = tenant(&client, "acme", "alpha", &defaults).await;
    let beta = tenant(&client, "globex", "beta", &defaults).await;
    create(&client, None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": GATEWAY_NAMESPACE}}))
        .await;
    probe::serve(&client, &beta, "runtime", &[]).await;
    probe::serve(&client, GATEWAY_NAMESPACE, "gateway", &[GATEWAY_LABEL]).await;
    let beta_runtime = format!("http://runtime.{beta}.svc.cluster.local/");

    // The gateway reaches beta's runtime (ingress from the gateway's namespace), by its Service's DNS name.
    let (ok, output) =
        probe::check(&client, GATEWAY_NAMESPACE, "gateway-to-beta", &[GATEWAY_LABEL], &beta_runtime, Expect::Answer)
            .await;
    assert!(ok, "the gateway reaches beta's runtime: {output}");
    assert!(output.contains("netprobe runtime"), "beta's runtime answered: {output}");

    // alpha's pods do not: alpha's egress and beta's ingress both refuse it.
    let (ok, output) = probe::check(&client, &alpha, "alpha-to-beta", &[], &beta_runtime, Expect::Refusal).await;
    assert!(ok, "a pod of tenant alpha must not reach tenant beta's runtime: {output}");

    // A runtime reaches the gateway's tool port (the connector gateway), resolving its name through cluster DNS.
    let gateway = format!("http://gateway.{GATEWAY_NAMESPACE}.svc.cluster.local/");
    let (ok, output) = probe::check(&client, &alpha, "alpha-to-gateway", &[], &gateway, Expect::Answer).await;
    assert!(ok, "alpha's runtime reaches the gateway's port {}: {output}", defaults.gateway_port);

    // Under the default egress, the artifact fetch of a Dedicated runtime's init container is refused ...
    let (ok, output) = probe::check(&client, &alpha, "fetch-refused", &[], &store_url, Expect::Refusal).await;
    assert!(ok, "the default egress does not open the artifact store: {output}");

    // ... and gets through once the platform names the store (--artifact-egress, the chart's operator.artifactEgress).
    let opened = NetworkSettings {
        artifact_egress: vec![format!("{store_address}/32:{store_port}").parse().expect("CIDR:PORT")],
        ..defaults.clone()
    };
    tenant(&client, "acme", "alpha", &opened).await;
    let (ok, output) = probe::check(&client, &alpha, "fetch-allowed", &[], &store_url, Expect::Answer).await;
    assert!(ok, "the artifact store is reachable once opened: {output}");
    // Only that port of it: the opening is not a hole to the machine, where another server listens.
    let other = format!("http://{store_address}:{other_port}/");
    let (ok, output) = probe::check(&client, &alpha, "fetch-other-port", &[], &other, Expect::Refusal).await;
    assert!(ok, "another port of the store's host stays closed: {output}");
    // And beta, whose Project was rendered without it, still cannot fetch.
    let (ok, output) = probe::check(&client, &beta, "beta-fetch", &[], &store_url, Expect::Refusal).await;
    assert!(ok, "beta's policies were not changed: {output}");

    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
