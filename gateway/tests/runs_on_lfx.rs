//! Runs through the real gateway to a real lfx runtime (`v2`), on
//! Instances the real operator made Ready: the answer is the flow's, every
//! refusal of the run API comes from a real request with its code, a
//! revocation, an expiry and a suspension are honoured as soon as the watch
//! brings them, and every settled run gives exactly one usage event with its
//! run id, whose credits the Wallet's meter records exactly.

mod support;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::time::Instant;

use cmp_testenv::lfx::Lfx;
use serde_json::{Value, json};
use support::{RUNTIME_KEY, World, converge, refusal};

#[tokio::test]
async fn runs_on_lfx_are_answered_refused_and_settled_as_the_crs_say() {
    let w = World::new("gw-lfx").await;
    let dir = std::env::temp_dir().join(format!("{}-lfx", w.run));
    let lfx = Lfx::start(&dir, RUNTIME_KEY).await.expect("lfx starts");
    let _operator = w.operator();
    let offering = format!("{}-echo", w.run);
    let plans = json!([
        {"id": "basic", "creditsPerRun": 2, "requestsPerMinute": 100000, "timeoutSeconds": 30},
        {"id": "tight", "creditsPerRun": 1, "requestsPerMinute": 2, "timeoutSeconds": 30},
    ]);
    w.offering(&offering, "v2", lfx.url(), plans).await;
    let org = format!("{}-a", w.run);
    w.organization(&org, 1000).await;
    let soon = (k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(25)).to_string();
    let keys = w
        .instance(
            &org,
            "bot",
            &offering,
            "basic",
            json!([{"name": "main"}, {"name": "brief", "expiresAt": soon}, {"name": "spare"}]),
        )
        .await;
    let key = |name: &str| keys.iter().find(|(n, _)| n == name).map(|(_, k)| k.clone()).expect("the key");
    let (main, brief, spare) = (key("main"), key("brief"), key("spare"));
    let tight = w.instance(&org, "tight", &offering, "tight", json!([{"name": "main"}])).await.remove(0).1;
    let gw = w.gateway("gw", &["--max-body-bytes", "4096"]).await;
    let http = &w.http;
    let settled = RefCell::new(BTreeSet::new());

    // A run: the flow's answer, with the run id, the charge and the rate limit.
    let answer = gw.post(http, "/v1/runs", &main, &json!({"input_value": "hello there"})).await;
    assert_eq!(answer.status(), 200);
    let header = |name: &str| answer.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let run_id = header("x-request-id");
    assert!(run_id.starts_with("run_"), "{run_id}");
    assert_eq!((header("x-credits-charged").as_str(), header("x-ratelimit-limit").as_str()), ("2", "100000"));
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!(body["output"]["text"], "hello there", "the real flow's answer: {body}");
    settled.borrow_mut().insert(run_id);

    // The path route, for the key's own Instance, and for another one.
    let own = gw.post(http, &format!("/v1/instances/{org}/bot/runs"), &main, &json!({"input": "x"})).await;
    assert_eq!(own.status(), 200);
    settled.borrow_mut().insert(own.headers()["x-request-id"].to_str().expect("text").to_string());
    let other = gw.post(http, &format!("/v1/instances/{org}/tight/runs"), &main, &json!({})).await;
    assert_eq!(refusal(other).await, (403, "wrong_tenant".into()));
    assert!(gw.process.log().contains("security_event=\"wrong_tenant\""), "logged as a security event");

    // Keys: none, malformed, unknown.
    let none = http.post(format!("{}/v1/runs", gw.base)).json(&json!({})).send().await.expect("answered");
    assert_eq!(refusal(none).await, (401, "invalid_api_key".into()));
    assert_eq!(refusal(gw.post(http, "/v1/runs", "cmp_nope", &json!({})).await).await, (401, "invalid_api_key".into()));
    let unknown = cmp_crds::apikey::generate().plaintext;
    assert_eq!(refusal(gw.post(http, "/v1/runs", &unknown, &json!({})).await).await, (401, "invalid_api_key".into()));
    let bearer = http
        .post(format!("{}/v1/runs", gw.base))
        .bearer_auth(&main)
        .json(&json!({"input": "b"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(bearer.status(), 200, "Authorization: Bearer works too");
    settled.borrow_mut().insert(bearer.headers()["x-request-id"].to_str().expect("text").to_string());

    // Bodies: a flow named by the client, and one over the limit.
    let named = gw.post(http, "/v1/runs", &main, &json!({"input_value": "x", "flow_id": "another"})).await;
    assert_eq!(refusal(named).await, (400, "malformed_request".into()));
    let large = gw.post(http, "/v1/runs", &main, &json!({"input_value": "x".repeat(5000)})).await;
    assert_eq!(refusal(large).await, (413, "body_too_large".into()));

    // The rate limit: 2 a minute, then 429 with Retry-After.
    for _ in 0..2 {
        let ok = gw.post(http, "/v1/runs", &tight, &json!({"input": "t"})).await;
        assert_eq!(ok.status(), 200);
        settled.borrow_mut().insert(ok.headers()["x-request-id"].to_str().expect("text").to_string());
    }
    let limited = gw.post(http, "/v1/runs", &tight, &json!({"input": "t"})).await;
    let retry_after = limited.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(String::from);
    assert_eq!(refusal(limited).await, (429, "rate_limited".into()));
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok_and(|n| (1..=60).contains(&n))));

    // A streamed run arrives as a stream and is charged once.
    let streamed = gw.post(http, "/v1/runs", &main, &json!({"input_value": "stream me", "stream": true})).await;
    assert_eq!(streamed.status(), 200);
    let content_type = streamed.headers()["content-type"].to_str().expect("text").to_string();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let stream_id = streamed.headers()["x-request-id"].to_str().expect("text").to_string();
    let text = streamed.text().await.expect("the stream");
    assert!(text.contains("stream me") && text.contains("data:"), "{text}");
    settled.borrow_mut().insert(stream_id.clone());

    // Revocation, measured from the write to the first 401.
    w.patch_instance(&org, "bot", json!({"apiKeys": [{"name": "main", "revoked": true}, {"name": "brief", "expiresAt": soon}, {"name": "spare"}]})).await;
    let revoked_at = Instant::now();
    converge("the revoked key refused", || async {
        let answer = gw.post(http, "/v1/runs", &main, &json!({"input": "r"})).await;
        if answer.status() == 200 {
            settled.borrow_mut().insert(answer.headers()["x-request-id"].to_str().expect("text").to_string());
            return None;
        }
        (refusal(answer).await == (401, "key_revoked".into())).then_some(())
    })
    .await;
    println!("revocation honoured {} ms after the write", revoked_at.elapsed().as_millis());

    // Expiry: the key works until its expiresAt, then it is key_expired.
    converge("the brief key expired", || async {
        let answer = gw.post(http, "/v1/runs", &brief, &json!({"input": "e"})).await;
        if answer.status() == 200 {
            settled.borrow_mut().insert(answer.headers()["x-request-id"].to_str().expect("text").to_string());
            return None;
        }
        (refusal(answer).await == (401, "key_expired".into())).then_some(())
    })
    .await;

    // Suspension of the Instance.
    w.patch_instance(&org, "bot", json!({"suspended": true})).await;
    converge("the suspended Instance refused", || async {
        let answer = gw.post(http, "/v1/runs", &spare, &json!({"input": "s"})).await;
        if answer.status() == 200 {
            settled.borrow_mut().insert(answer.headers()["x-request-id"].to_str().expect("text").to_string());
            return None;
        }
        (refusal(answer).await == (403, "suspended".into())).then_some(())
    })
    .await;
    w.patch_instance(&org, "bot", json!({"suspended": false})).await;
    // A suspended Instance is not Ready (it does not serve): runs resume once the operator says it serves again.
    converge("runs resumed after the suspension", || async {
        let answer = gw.post(http, "/v1/runs", &spare, &json!({"input": "back"})).await;
        let resumed = answer.status() == 200;
        if resumed {
            settled.borrow_mut().insert(answer.headers()["x-request-id"].to_str().expect("text").to_string());
        }
        resumed.then_some(())
    })
    .await;

    // The runtime gone: 502, charged nothing.
    drop(lfx);
    let failed = converge("a run on the stopped runtime", || async {
        let answer = gw.post(http, "/v1/runs", &spare, &json!({"input": "f"})).await;
        (answer.status() == 502).then_some(answer)
    })
    .await;
    assert_eq!(failed.headers()["x-credits-charged"], "0");
    settled.borrow_mut().insert(failed.headers()["x-request-id"].to_str().expect("text").to_string());
    assert_eq!(refusal(failed).await, (502, "runtime_error".into()));

    // SIGTERM: the meter is written one last time, the events are delivered.
    let mut gw = gw;
    assert!(gw.process.terminate().expect("stops").success(), "a clean exit on SIGTERM");
    let events = gw.usage_events();
    let ids: BTreeSet<String> = events.iter().map(|e| e["id"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(ids.len(), events.len(), "one event per run id");
    assert_eq!(ids, *settled.borrow(), "exactly the settled runs have events");
    let streamed_event = events.iter().find(|e| e["id"] == stream_id.as_str()).expect("the streamed run's event");
    assert_eq!(
        (streamed_event["data"]["credits"].as_i64(), streamed_event["data"]["outcome"].as_str()),
        (Some(2), Some("success"))
    );
    assert_eq!(streamed_event["type"], "dev.gsv.cmp.run.settled");
    let charged: i64 = events.iter().map(|e| e["data"]["credits"].as_i64().unwrap_or_default()).sum();
    let wallet = w.wallets(&org).get(&org).await.expect("the Wallet");
    let meters = wallet.status.map(|s| s.meters).unwrap_or_default();
    assert_eq!(meters.len(), 1);
    assert_eq!((meters[0].consumed, meters[0].lease), (charged, 0), "every credit recorded, the lease handed back");
    assert_eq!(meters[0].runs, events.len() as i64);
}
