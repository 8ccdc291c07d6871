//! Demo runs for the store's widget, through two real gateway replicas that
//! share a widget secret and their session counts: an anonymous client
//! starts a session of an Offering with a demo allowance, gets exactly its
//! `runsPerSession` free runs of the demo Instance, spread over both
//! replicas, then 402 `demo_exhausted`; the publisher's Wallet pays for them.

mod support;

use std::time::Duration;

use cmp_testenv::free_port;
use cmp_testenv::langflow_stand_in::LangflowStandIn;
use serde_json::{Value, json};
use support::{RUNTIME_KEY, World, refusal};

const SECRET: &str = "widget-test-secret-of-32-characters!";

#[tokio::test]
async fn a_widget_session_gets_its_free_runs_across_replicas_then_402() {
    let w = World::new("gw-widget").await;
    let runtime = LangflowStandIn::start(RUNTIME_KEY).await.expect("the stand-in starts");
    let _operator = w.operator();
    let publisher = format!("{}-pub", w.run);
    let offering = format!("{}-v1", w.run);
    let plans = json!([{"id": "basic", "creditsPerRun": 2}]);
    let demo = json!({"demo": {"runsPerSession": 3, "requestsPerMinute": 60, "instance": {"organization": publisher, "name": "demo"}}});
    w.offering_with(&offering, "v1", runtime.url(), plans.clone(), demo).await;
    let plain = format!("{}-plain", w.run);
    w.offering(&plain, "v1", runtime.url(), plans).await;
    w.organization(&publisher, 100).await;
    w.instance(&publisher, "demo", &offering, "basic", json!([{"name": "main"}])).await;
    let mut gateways = Vec::new();
    for replica in ["gw-0", "gw-1"] {
        let peer = format!("127.0.0.1:{}", free_port().expect("a free port"));
        let flags = ["--peer-addr", &peer, "--namespace", "default", "--peer-group", &w.run, "--widget-secret", SECRET];
        gateways.push(w.gateway(replica, &flags).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let http = &w.http;
    let init = |base: String, body: Value| async move {
        http.post(format!("{base}/v1/widget/session:init")).json(&body).send().await.expect("answered")
    };

    let session: Value =
        init(gateways[0].base.clone(), json!({"offering": offering})).await.json().await.expect("JSON");
    assert_eq!(session["runsPerSession"], 3);
    let token = session["token"].as_str().expect("a token").to_string();
    let run = |base: String, token: String| async move {
        http.post(format!("{base}/v1/widget/runs"))
            .header("x-widget-session", token)
            .json(&json!({"input_value": "try me"}))
            .send()
            .await
            .expect("answered")
    };
    for i in 0..3 {
        let answer = run(gateways[i % 2].base.clone(), token.clone()).await;
        assert_eq!(answer.status(), 200, "free run {i}");
        // The replicas tell each other their session counts five times a second.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(refusal(run(gateways[1].base.clone(), token.clone()).await).await, (402, "demo_exhausted".into()));
    assert_eq!(refusal(run(gateways[0].base.clone(), token.clone()).await).await, (402, "demo_exhausted".into()));

    // Tokens are checked; Offerings without a demo have no sessions.
    let forged = format!("{}x", token);
    assert_eq!(refusal(run(gateways[0].base.clone(), forged).await).await, (401, "invalid_token".into()));
    let none =
        http.post(format!("{}/v1/widget/runs", gateways[0].base)).json(&json!({})).send().await.expect("answered");
    assert_eq!(refusal(none).await, (401, "invalid_token".into()));
    assert_eq!(
        refusal(init(gateways[0].base.clone(), json!({"offering": plain})).await).await,
        (404, "not_found".into())
    );
    assert_eq!(
        refusal(init(gateways[0].base.clone(), json!({"flow": "x"})).await).await,
        (400, "malformed_request".into())
    );

    for gateway in &mut gateways {
        assert!(gateway.process.terminate().expect("stops").success());
    }
    let wallet = w.wallets(&publisher).get(&publisher).await.expect("the Wallet").status.expect("a status");
    assert_eq!(wallet.meters.iter().map(|m| m.consumed).sum::<i64>(), 6, "the publisher paid the 3 demo runs");
}
