//! The gateway fails closed, and loses no usage event it can keep:
//! - caches that cannot sync (no API server): every run is 503 `gateway_not_ready`;
//! - an identity that may read the CRs but not write Wallet meters: 503
//!   `credits_unverifiable`, and the runtime never sees the run;
//! - a usage sink that is down: events wait in the bounded buffer and are
//!   delivered once it is back, each exactly once; what overflows is
//!   counted and logged.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use cmp_testenv::chart_identity::Component;
use cmp_testenv::free_port;
use cmp_testenv::process::TestProcess;
use cmp_testenv::test::{http_get, kubeconfig_as, test_kubeconfig};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::{OnStandIn, World, converge, refusal};

/// A gateway started with `kubeconfig`, once its health endpoint answers (ready or not).
async fn gateway_with(w: &World, name: &str, kubeconfig: &std::path::Path) -> (TestProcess, String) {
    let port = free_port().expect("a free port");
    let args = ["--addr".to_string(), format!("127.0.0.1:{port}"), "--replica-name".into(), name.into()];
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_cmp-gateway"));
    let process = TestProcess::spawn_with_kubeconfig(binary, &format!("{}-{name}", w.run), "info", &args, kubeconfig)
        .expect("cmp-gateway starts");
    let health = process.health;
    converge("the gateway's health endpoint", || async move {
        matches!(http_get(health, "/healthz").await, Ok((200, _))).then_some(())
    })
    .await;
    (process, format!("http://127.0.0.1:{port}"))
}

#[tokio::test]
async fn without_synced_caches_every_run_is_refused() {
    let w = World::new("gw-nosync").await;
    let text = std::fs::read_to_string(test_kubeconfig()).expect("the test kubeconfig");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    let nowhere = format!("https://127.0.0.1:{}", free_port().expect("a free port"));
    for cluster in config["clusters"].as_sequence_mut().expect("clusters") {
        cluster["cluster"]["server"] = nowhere.clone().into();
    }
    let path = std::env::temp_dir().join(format!("{}-kubeconfig", w.run));
    std::fs::write(&path, serde_yaml::to_string(&config).expect("YAML")).expect("written");
    let (process, base) = gateway_with(&w, "gw", &path).await;
    let key = cmp_crds::apikey::generate().plaintext;
    let answer = w.http.post(format!("{base}/v1/runs")).header("x-api-key", key).json(&json!({})).send().await;
    assert_eq!(refusal(answer.expect("answered")).await, (503, "gateway_not_ready".into()));
    assert!(matches!(http_get(process.health, "/readyz").await, Ok((503, _))), "/readyz says not ready");
}

#[tokio::test]
async fn a_gateway_that_cannot_write_meters_refuses_runs_as_unverifiable() {
    let OnStandIn { w, runtime, key, operator: _operator, .. } =
        OnStandIn::start("gw-rbac", json!([{"id": "basic", "creditsPerRun": 1}]), 100).await;
    // A reader: the five kinds and Secrets, but not Wallet status.
    let user = format!("{}-reader", w.run);
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": user},
        "rules": [
            {"apiGroups": ["cmp.gsv.dev"], "resources": ["organizations", "projects", "offerings", "instances", "wallets"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        ],
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    });
    let params = PatchParams::apply("cmp-tests").force();
    Api::<ClusterRole>::all(w.client.clone()).patch(&user, &params, &Patch::Apply(role)).await.expect("the role");
    Api::<ClusterRoleBinding>::all(w.client.clone())
        .patch(&user, &params, &Patch::Apply(binding))
        .await
        .expect("the binding");
    let path = kubeconfig_as(&user, &std::env::temp_dir().join(format!("{}-kubeconfig", w.run))).expect("a kubeconfig");
    let (process, base) = gateway_with(&w, "gw", &path).await;
    process.ready(support::CONVERGE).await;
    let answer = w.http.post(format!("{base}/v1/runs")).header("x-api-key", &key).json(&json!({})).send().await;
    assert_eq!(refusal(answer.expect("answered")).await, (503, "credits_unverifiable".into()));
    assert_eq!(runtime.runs(), 0, "the run never reached the runtime");
    assert!(process.log().contains("forbidden"), "the log says why: {}", process.log());
}

/// Stands in for OpenMeter's ingest endpoint (which does not run here):
/// answers 503 until it is switched on, and keeps the batches it takes.
#[derive(Clone, Default)]
struct IngestSinkStandIn {
    up: Arc<Mutex<bool>>,
    events: Arc<Mutex<Vec<Value>>>,
}

async fn serve_sink(sink: IngestSinkStandIn) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let url = format!("http://{}/api/v1/events", listener.local_addr().expect("an address"));
    let router = axum::Router::new().route(
        "/api/v1/events",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let sink = sink.clone();
            async move {
                if !*sink.up.lock().expect("a lock") {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                assert_eq!(headers["content-type"], "application/cloudevents-batch+json");
                let batch: Vec<Value> = serde_json::from_str(&body).expect("a batch is a JSON array");
                sink.events.lock().expect("a lock").extend(batch);
                StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

#[tokio::test]
async fn usage_events_wait_out_a_sink_outage_and_overflow_is_counted() {
    let OnStandIn { w, key, runtime: _runtime, operator: _operator, .. } =
        OnStandIn::start("gw-sink", json!([{"id": "basic", "creditsPerRun": 1, "requestsPerMinute": 100000}]), 100)
            .await;
    let sink = IngestSinkStandIn::default();
    let url = serve_sink(sink.clone()).await;
    let port = free_port().expect("a free port");
    let args = [
        "--addr".to_string(),
        format!("127.0.0.1:{port}"),
        "--usage-url".into(),
        url,
        "--usage-buffer".into(),
        "5".into(),
    ];
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_cmp-gateway"));
    let log = format!("{}-gw", w.run);
    let process =
        TestProcess::spawn_as(Component::Gateway, &w.run, &w.runtime_key_values(), binary, &log, "info", &args)
            .expect("cmp-gateway starts as the chart's gateway");
    process.ready(support::CONVERGE).await;
    // More runs than the buffer, plus the batch the sink task holds (what came within its 20 ms linger), can take.
    const RUNS: usize = 60;
    let mut ids = BTreeSet::new();
    for _ in 0..RUNS {
        let answer = w
            .http
            .post(format!("http://127.0.0.1:{port}/v1/runs"))
            .header("x-api-key", &key)
            .json(&json!({"input_value": "x"}))
            .send()
            .await
            .expect("answered");
        assert_eq!(answer.status(), 200);
        ids.insert(answer.headers()["x-request-id"].to_str().expect("text").to_string());
    }
    let dropped = |metrics: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("cmp_gateway_usage_events_total{result=\"dropped\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
            .unwrap_or(0)
    };
    let lost = dropped(&process.metrics().await.expect("metrics"));
    assert!(lost > 0, "{RUNS} events, a buffer of 5 and one batch in flight: {lost} dropped");
    assert!(process.log().contains("events are being dropped"), "the drop is logged");
    *sink.up.lock().expect("a lock") = true;
    let delivered = converge("the buffered events delivered", || async {
        let events = sink.events.lock().expect("a lock").clone();
        (events.len() + lost == RUNS).then_some(events)
    })
    .await;
    let delivered_ids: BTreeSet<String> =
        delivered.iter().map(|e| e["id"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(delivered_ids.len(), delivered.len(), "each event delivered once");
    assert!(delivered_ids.is_subset(&ids));
}
