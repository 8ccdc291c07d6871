//! A Dedicated Instance's runtime as a pod on a real node: the operator's
//! rendered ConfigMap, Deployment and Service, in a runtime namespace with
//! the operator's NetworkPolicies (the artifact store opened with
//! `--artifact-egress`), on the runtime image (`cargo xtask image --runtime`), pulled from the
//! node's registry.
//! The init container fetches the artifact from a store outside the cluster
//! and checks its sha256, the runtime serves it under the version's flowId
//! with its own key (the Secret the operator writes), and a run sent from the
//! gateway's namespace with that key answers; the Offering's key, or none, is
//! refused.
//!
//! What stands in: the test applies what the operator would commit and write
//! (no Git, no Argo CD here: those are tested in operator/tests/gitops.rs),
//! and the run is sent by a probe pod in the gateway's namespace, not by the
//! gateway (the chart's test). Needs root, as the suite does.

use cmp_crds::offering::RuntimeMode;
use cmp_crds::{Instance, Offering, OrganizationSpec, ProjectSpec};
use cmp_operator::gitops::render::{RenderInput, RenderSettings, render};
use cmp_operator::project::desired::children;
use cmp_operator::settings::NetworkSettings;
use cmp_testenv::apply::{ApplyOptions, apply_object, apply_yaml};
use cmp_testenv::node::probe::{self, Expect, create};
use cmp_testenv::node::{Cluster, state_dir};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::DynamicObject;
use serde_json::json;
use sha2::Digest;

const GATEWAY_NAMESPACE: &str = "cmp-system";
const GATEWAY_LABEL: (&str, &str) = ("app.kubernetes.io/component", "gateway");
const FLOW_ID: &str = "0d7e3c52-4f2a-4b7e-8c11-2b9d5f6a7e10";
const OFFERING_KEY: &str = "the-offerings-own-key";

/// Applies every object, through JSON.
async fn apply_all(client: &kube::Client, objects: Vec<serde_json::Value>) {
    let options = ApplyOptions { field_manager: "cmp-operator".into(), ..Default::default() };
    for object in objects {
        let object: DynamicObject = serde_json::from_value(object).expect("an object");
        apply_object(client, &object, &options)
            .await
            .unwrap_or_else(|e| panic!("applying {:?}: {e}", object.metadata.name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedicated_runtime_fetches_checks_and_serves_its_flow_from_a_pod_with_its_own_key() {
    let dir = state_dir("dedicated-on-node");
    let (archive, tag) = xtask::runtime_image::cached_archive().expect("the runtime image");
    let cluster = Cluster::start(&dir.join("cluster")).await.unwrap_or_else(|e| panic!("the cluster starts: {e}"));
    let image = cluster.node.push_image(&archive, "cmp.local/runtime").await.expect("the runtime image is pushed");
    assert_eq!(image, format!("cmp.local/runtime:{tag}"));
    let client = cluster.client().await.expect("client");

    // The artifact store, outside the cluster, on the machine's side of the node's network.
    let flow = std::fs::read(cmp_testenv::workspace_root().join("examples/flows/echo.json")).expect("the echo flow");
    let sha256 = hex::encode(sha2::Sha256::digest(&flow));
    let store = tokio::net::TcpListener::bind((cluster.network().host_address(), 0)).await.expect("the store binds");
    let store_address = store.local_addr().expect("an address");
    let router = axum::Router::new().route("/echo.json", axum::routing::get(move || async move { flow.clone() }));
    tokio::spawn(async move { axum::serve(store, router).await });

    // The Offering, Instance and Project as the operator reads them; the runtime namespace as it makes it.
    let offering: Offering = serde_json::from_value(json!({
        "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Offering", "metadata": {"name": "echo"},
        "spec": {"displayName": "Echo", "runtime": {"mode": "Dedicated", "api": "v2", "image": image, "port": 7860,
                 "apiKeySecretRef": {"namespace": "cmp-system", "name": "echo-key", "key": "key"}},
                 "versions": [{"name": "1", "flowId": FLOW_ID,
                               "artifact": {"url": format!("http://{store_address}/echo.json"), "sha256": sha256}}],
                 "plans": [{"id": "basic", "creditsPerRun": 1}]}
    }))
    .expect("an Offering");
    assert_eq!(offering.spec.runtime.mode, RuntimeMode::Dedicated);
    let instance: Instance = serde_json::from_value(json!({
        "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
        "metadata": {"name": "bot", "namespace": "cmp-acme", "uid": "6f1d1b9e-2a51-4f63-9d2c-3c4b5a697081"},
        "spec": {"project": "support", "offering": "echo", "version": "1", "plan": "basic"}
    }))
    .expect("an Instance");
    let network = NetworkSettings {
        gateway_namespace: GATEWAY_NAMESPACE.into(),
        artifact_egress: vec![
            format!("{}/32:{}", store_address.ip(), store_address.port()).parse().expect("CIDR:PORT"),
        ],
        ..Default::default()
    };
    let project = children("acme", &OrganizationSpec::default(), "support", &ProjectSpec::default(), &network);
    let namespace = project.namespace.metadata.name.clone().expect("the runtime namespace");
    let mut objects = vec![serde_json::to_value(&project.namespace).expect("JSON")];
    objects.extend(project.network_policies.iter().map(|p| serde_json::to_value(p).expect("JSON")));
    objects.push(serde_json::to_value(&project.service_account).expect("JSON"));
    objects.push(serde_json::to_value(&project.limits).expect("JSON"));
    apply_all(&client, objects).await;
    create(&client, None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": GATEWAY_NAMESPACE}}))
        .await;

    // The runtime's own key, as the operator writes it; then what the operator commits, as Argo CD would apply it.
    let uid = instance.metadata.uid.clone().expect("uid");
    let runtime_key = cmp_crds::runtime_key::for_instance(OFFERING_KEY, &uid);
    create(
        &client,
        Some(&namespace),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": cmp_crds::runtime_key::secret_name("bot")},
               "stringData": {cmp_crds::runtime_key::SECRET_DATA_KEY: runtime_key}}),
    )
    .await;
    let settings = RenderSettings { root: "tenants".into(), fetch_image: image.clone() };
    let input = RenderInput {
        instance: &instance,
        organization: "acme",
        offering: &offering,
        version: &offering.spec.versions[0],
        namespace: &namespace,
        container_cpu: "1",
        container_memory: "1Gi",
    };
    let tree = render(&input, &settings).expect("renders");
    let options = ApplyOptions { field_manager: "argocd-stand-in".into(), ..Default::default() };
    for file in ["configmap.yaml", "deployment.yaml", "service.yaml"] {
        apply_yaml(&client, file, &tree.files[file], &options).await.unwrap_or_else(|e| panic!("applying {file}: {e}"));
    }

    // The pod: its init container fetches and checks the artifact under the Project's egress; the runtime serves.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let available = cmp_testenv::test::eventually(
        "the runtime Deployment available",
        std::time::Duration::from_secs(300),
        || async {
            let status = deployments.get("bot").await.ok()?.status?;
            (status.available_replicas.unwrap_or(0) >= 1).then_some(())
        },
    );
    available.await;

    // A run from the gateway's namespace, with the Instance's key, answers; with the Offering's key it is refused.
    let url = format!("http://bot.{namespace}.svc.cluster.local:7860/api/v2/workflows");
    let run = json!({"flow_id": FLOW_ID, "input_value": "hello from a pod", "tweaks": {}, "mode": "sync"});
    let (ok, output) = probe::post(&client, GATEWAY_NAMESPACE, "run", &[GATEWAY_LABEL], &url, &run, &runtime_key).await;
    assert!(ok && output.contains("hello from a pod"), "the run answers with the Instance's key: {output}");
    let (ok, output) =
        probe::post(&client, GATEWAY_NAMESPACE, "offering-key", &[GATEWAY_LABEL], &url, &run, OFFERING_KEY).await;
    assert!(!ok && output.contains("401"), "the Offering's own key does not open an Instance's runtime: {output}");
    // And another tenant's pod cannot reach it at all.
    create(&client, None, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "elsewhere"}})).await;
    let health = format!("http://bot.{namespace}.svc.cluster.local:7860/health");
    let (refused, output) = probe::check(&client, "elsewhere", "stranger", &[], &health, Expect::Refusal).await;
    assert!(refused, "a pod outside the gateway's namespace is refused: {output}");

    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
