//! Each admission step in-process, against caches filled by hand: the
//! refusal a step owns, and what it lets through.

use std::sync::Arc;

use axum::http::HeaderMap;
use cmp_crds::apikey::{self, GeneratedKey};
use cmp_crds::{Instance, Offering, Organization};
use serde_json::json;

use super::*;
use crate::credits::Credits;
use crate::directory::Directory;
use crate::ledger::LeasePolicy;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::runtime_keys::RuntimeKeys;
use crate::usage::{Sink, Usage};

/// An Instance `name` of Organization `org` with one issued key, Ready.
fn instance(org: &str, name: &str, key: &GeneratedKey, annotations: serde_json::Value) -> Instance {
    serde_json::from_value(json!({
        "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
        "metadata": {"name": name, "namespace": format!("cmp-{org}"), "uid": format!("{org}-{name}"), "annotations": annotations},
        "spec": {"project": "support", "offering": "echo", "version": "1", "plan": "free", "apiKeys": [{"name": "main"}]},
        "status": {
            "phase": "Ready", "endpoint": "http://127.0.0.1:7861", "flowId": "f-1", "version": "1",
            "apiKeys": [{"name": "main", "publicId": key.public_id, "hash": key.hash, "createdAt": "2026-01-01T00:00:00Z",
                         "secret": {"store": "Secret", "name": "bot-key-main", "key": "apiKey"}}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "RuntimeReady", "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]
        }
    }))
    .expect("a valid Instance")
}

fn organization(name: &str) -> Organization {
    serde_json::from_value(json!({
        "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Organization", "metadata": {"name": name},
        "spec": {"displayName": name, "owners": [{"kind": "User", "name": "ada"}]}
    }))
    .expect("a valid Organization")
}

fn offering(requests_per_minute: i32) -> Offering {
    serde_json::from_value(json!({
        "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Offering", "metadata": {"name": "echo"},
        "spec": {"displayName": "Echo", "runtime": {"mode": "Shared", "api": "v2", "endpoint": "http://127.0.0.1:7861"},
                 "versions": [{"name": "1", "flowId": "echo", "artifact": {"url": "file:///x", "sha256": "0".repeat(64)}}],
                 "plans": [{"id": "free", "creditsPerRun": 2, "requestsPerMinute": requests_per_minute, "timeoutSeconds": 30}]}
    }))
    .expect("a valid Offering")
}

/// A gateway over `directory`; its API client points nowhere (no step here writes).
fn gateway(directory: Directory) -> Gateway {
    // In the whole workspace, rustls has more than one crypto provider: name the process's one.
    cmp_core::tls::install_crypto_provider();
    let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
    let client = kube::Client::try_from(config).expect("a client");
    let metrics = Arc::new(Metrics::register(&mut prometheus_client::registry::Registry::default()));
    let credits = Credits::new(
        client,
        directory.clone(),
        "test".into(),
        LeasePolicy::default(),
        std::time::Duration::from_millis(10),
        metrics.clone(),
    );
    let (usage, _delivery) = Usage::new(Sink::Discard, "test".into(), 8, metrics.clone());
    let readiness = cmp_core::health::Readiness::default();
    readiness.set(true);
    Gateway {
        directory,
        credits,
        limiter: Arc::new(RateLimiter::default()),
        runtime_keys: RuntimeKeys::default(),
        http: reqwest::Client::new(),
        usage,
        metrics,
        readiness,
        max_body_bytes: 1024,
        oidc: None,
        widget: None,
        client_address_header: None,
        urls: Default::default(),
        connectors: None,
        knowledge: None,
        signup: None,
        buyer_api: None,
        console: None,
    }
}

fn bearer(key: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("authorization", format!("Bearer {key}").parse().expect("a header"));
    headers
}

fn path(organization: &str, instance: &str) -> Option<PathTarget> {
    Some(PathTarget { organization: organization.into(), instance: instance.into() })
}

fn refused<T>(result: Result<T, Refusal>) -> Code {
    match result {
        Ok(_) => panic!("admitted"),
        Err(refusal) => refusal.code,
    }
}

struct World {
    gateway: Gateway,
    acme: GeneratedKey,
    globex: GeneratedKey,
}

fn world(requests_per_minute: i32, withdrawn: bool) -> World {
    let (acme, globex) = (apikey::generate(), apikey::generate());
    let store =
        if withdrawn { json!({cmp_crds::names::STORE_SUSPENSION_ANNOTATION: "order #7 cancelled"}) } else { json!({}) };
    let directory = Directory::filled(
        vec![organization("acme"), organization("globex")],
        vec![offering(requests_per_minute)],
        vec![instance("acme", "bot", &acme, store), instance("globex", "bot", &globex, json!({}))],
    );
    World { gateway: gateway(directory), acme, globex }
}

#[tokio::test]
async fn identify_knows_a_key_and_refuses_a_made_up_one() {
    let w = world(60, false);
    let identified = w.gateway.identify(Route::Run(None), &bearer(&w.acme.plaintext)).await;
    assert!(matches!(identified, Ok(Identified::Key { ref public_id, .. }) if *public_id == w.acme.public_id));
    let made_up = apikey::generate();
    assert_eq!(refused(w.gateway.identify(Route::Run(None), &bearer(&made_up.plaintext)).await), Code::InvalidApiKey);
    assert_eq!(refused(w.gateway.identify(Route::Run(None), &HeaderMap::new()).await), Code::InvalidApiKey);
    assert_eq!(
        refused(w.gateway.identify(Route::Widget([127, 0, 0, 1].into()), &HeaderMap::new()).await),
        Code::NotFound,
        "widget sessions are off here"
    );
}

#[tokio::test]
async fn tenant_refuses_a_key_on_another_tenants_path() {
    let w = world(60, false);
    let (gateway, acme) = (&w.gateway, &w.acme.plaintext);
    let on = |p| async move {
        let identified = gateway.identify(Route::Run(p), &bearer(acme)).await.expect("identified");
        gateway.tenant(identified).map(|t| t.instance.metadata.namespace.clone())
    };
    assert_eq!(on(None).await.ok().flatten().as_deref(), Some("cmp-acme"));
    assert_eq!(on(path("acme", "bot")).await.ok().flatten().as_deref(), Some("cmp-acme"));
    assert_eq!(refused(on(path("globex", "bot")).await), Code::WrongTenant);
    // The other tenant's key is theirs alone.
    let theirs = w.gateway.identify(Route::Run(path("acme", "bot")), &bearer(&w.globex.plaintext)).await;
    assert_eq!(refused(w.gateway.tenant(theirs.expect("identified"))), Code::WrongTenant);
}

#[tokio::test]
async fn runnable_refuses_an_instance_its_store_withdrew() {
    let w = world(60, true);
    let acme = w.gateway.directory.instance_of_key(&w.acme.public_id).expect("the acme Instance");
    let refusal = w.gateway.runnable(&acme).expect_err("suspended");
    assert_eq!(refusal.code, Code::Suspended);
    assert!(refusal.message.contains("order #7 cancelled"), "{}", refusal.message);
    let globex = w.gateway.directory.instance_of_key(&w.globex.public_id).expect("the globex Instance");
    let target = w.gateway.runnable(&globex).expect("runnable");
    assert_eq!((target.organization.as_str(), target.plan.credits_per_run), ("globex", 2));
}

#[tokio::test]
async fn rate_takes_the_plans_requests_per_minute_per_caller() {
    let w = world(1, false);
    let admit = |key: &GeneratedKey| {
        let key = key.plaintext.clone();
        let gateway = &w.gateway;
        async move {
            let identified = gateway.identify(Route::Run(None), &bearer(&key)).await.expect("identified");
            let tenant = gateway.tenant(identified).expect("its tenant");
            let target = gateway.runnable(&tenant.instance).expect("runnable");
            gateway.rate(&tenant, &target)
        }
    };
    assert!(admit(&w.acme).await.is_ok_and(|d| d.limit == 1));
    assert_eq!(refused(admit(&w.acme).await), Code::RateLimited);
    assert!(admit(&w.globex).await.is_ok(), "another caller has a bucket of its own");
}

#[tokio::test]
async fn every_route_is_behind_one_layer_that_ids_each_answer_and_counts_each_refusal_once() {
    use tower::ServiceExt;
    let w = world(60, false);
    let gateway = Arc::new(w.gateway);
    let router = crate::routes::router(gateway.clone());
    let send = |method: &str, uri: &str, key: &str, body: &'static str| {
        axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .expect("a request")
    };
    let globex = w.globex.plaintext.as_str();
    let cases = [
        // A run on another tenant's path, an MCP message and a knowledge request with the same key: each refused by
        // its own route, each counted once under its code.
        (send("POST", "/v1/instances/acme/bot/runs", globex, r#"{"input_value":"hi"}"#), 403, Some("wrong_tenant")),
        (
            send("POST", "/v1/instances/acme/bot/mcp", globex, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            200,
            Some("wrong_tenant"),
        ),
        (send("PUT", "/v1/instances/acme/bot/knowledge/documents/a", globex, "text"), 403, Some("wrong_tenant")),
        // No such route: answered with an id, not counted as a run.
        (send("POST", "/v1/nothing", globex, ""), 404, None),
    ];
    let mut ids = std::collections::BTreeSet::new();
    let mut wrong_tenant = 0;
    for (request, status, counted) in cases {
        let uri = request.uri().to_string();
        let answer = router.clone().oneshot(request).await.expect("an answer");
        assert_eq!(answer.status().as_u16(), status, "{uri}");
        let id = answer.headers()[crate::middleware::REQUEST_ID].to_str().expect("text").to_string();
        assert!(id.starts_with("run_") && ids.insert(id), "{uri}: a new id on every answer");
        wrong_tenant += u64::from(counted.is_some());
        assert_eq!(gateway.metrics.runs_answered("wrong_tenant"), wrong_tenant, "{uri}");
    }
    assert_eq!(gateway.metrics.runs_answered("not_found"), 0, "an unknown route is no refused run");
}

#[test]
fn a_dedicated_runtime_takes_its_instances_own_key_and_a_shared_one_the_offerings() {
    let key = apikey::generate();
    let bot = instance("acme", "bot", &key, json!({}));
    let shared = offering(60);
    let target = crate::authorize::run_target(&bot, Some(&organization("acme")), Some(&shared)).expect("runnable");
    assert_eq!(runtime_key_of(&target, "offering-key".into()), "offering-key");

    let mut dedicated = shared.clone();
    dedicated.spec.runtime.mode = cmp_crds::offering::RuntimeMode::Dedicated;
    let target = crate::authorize::run_target(&bot, Some(&organization("acme")), Some(&dedicated)).expect("runnable");
    let derived = runtime_key_of(&target, "offering-key".into());
    assert_eq!(derived, cmp_crds::runtime_key::for_instance("offering-key", "acme-bot"), "derived with the uid");
    let other = instance("globex", "bot", &key, json!({}));
    let target =
        crate::authorize::run_target(&other, Some(&organization("globex")), Some(&dedicated)).expect("runnable");
    assert_ne!(runtime_key_of(&target, "offering-key".into()), derived, "another tenant's runtime, another key");
}
