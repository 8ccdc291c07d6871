//! How a run ends, and what it costs, through the real gateway to a
//! `LangflowStandIn` (lfx serves no `v1` run API and cannot fail or stall on
//! demand): success, runtime error (free), timeout (504, free), a caller
//! who goes away mid-stream (charged), an exhausted Wallet (402) unblocked
//! by a top-up, and a runtime that is not ready (503).

mod support;

use futures::StreamExt;
use serde_json::{Value, json};
use support::{OnStandIn, converge, refusal};

fn run_id(answer: &reqwest::Response) -> String {
    answer.headers()["x-request-id"].to_str().expect("text").to_string()
}

#[tokio::test]
async fn every_ending_of_a_v1_run_is_answered_and_charged_as_documented() {
    let plans = json!([{"id": "basic", "creditsPerRun": 3, "requestsPerMinute": 100000, "timeoutSeconds": 1}]);
    let OnStandIn { w, runtime, org, key, operator: _operator, .. } = OnStandIn::start("gw-v1", plans, 10).await;
    let nowhere = format!("{}-nowhere", w.run);
    w.offering(&nowhere, "v1", "http://127.0.0.1:9", json!([{"id": "basic", "creditsPerRun": 1}])).await;
    let gw = w.gateway("gw", &[]).await;
    let http = &w.http;

    // Success, in Langflow's v1 shape.
    let ok = gw.post(http, "/v1/runs", &key, &json!({"input_value": "hi", "output_type": "chat"})).await;
    let ok_id = run_id(&ok);
    assert_eq!((ok.status().as_u16(), ok.headers()["x-credits-charged"].to_str().ok()), (200, Some("3")));
    let body: Value = ok.json().await.expect("JSON");
    assert_eq!(body["outputs"][0]["outputs"][0]["results"]["message"]["text"], "hi");

    // The runtime fails: 502, free.
    let failed = gw.post(http, "/v1/runs", &key, &json!({"input_value": "fail"})).await;
    let failed_id = run_id(&failed);
    assert_eq!(failed.headers()["x-credits-charged"], "0");
    assert_eq!(refusal(failed).await, (502, "runtime_error".into()));

    // The plan's 1 s passes: 504, free.
    let slow = gw.post(http, "/v1/runs", &key, &json!({"input_value": "sleep 3000"})).await;
    let slow_id = run_id(&slow);
    assert_eq!(slow.headers()["x-credits-charged"], "0");
    assert_eq!(refusal(slow).await, (504, "runtime_timeout".into()));

    // The caller goes away mid-stream: charged, and the runtime sees the cut.
    let streamed =
        gw.post(http, "/v1/runs", &key, &json!({"input_value": "one two three four five six", "stream": true})).await;
    let cut_id = run_id(&streamed);
    assert_eq!(streamed.status(), 200);
    let mut chunks = streamed.bytes_stream();
    let first = chunks.next().await.expect("a first frame").expect("bytes");
    assert!(String::from_utf8_lossy(&first).contains("add_message"), "frames arrive as they are made");
    drop(chunks);
    converge("the runtime to see the stream cut", || async { (runtime.streams_cut() == 1).then_some(()) }).await;

    // 3 + 3 of 10 spent; 4 left: one more run, then 402.
    let last = gw.post(http, "/v1/runs", &key, &json!({"input_value": "last"})).await;
    assert_eq!(last.status(), 200);
    let last_id = run_id(&last);
    let broke = gw.post(http, "/v1/runs", &key, &json!({"input_value": "broke"})).await;
    assert_eq!(refusal(broke).await, (402, "insufficient_credits".into()));
    assert_eq!(runtime.runs(), 5, "the refused run never reached the runtime");

    // A top-up unblocks the Wallet.
    w.grant(&org, "top-up-1", 30).await;
    let topped = converge("a run after the top-up", || async {
        let answer = gw.post(http, "/v1/runs", &key, &json!({"input_value": "again"})).await;
        (answer.status() == 200).then_some(answer)
    })
    .await;
    let topped_id = run_id(&topped);

    // An Instance whose runtime is not ready: 503, nothing held.
    let idle = w.instance_unready(&org, "idle", &nowhere, "basic", json!([{"name": "main"}])).await.remove(0).1;
    let unready = gw.post(http, "/v1/runs", &idle, &json!({})).await;
    assert_eq!(refusal(unready).await, (503, "runtime_not_ready".into()));

    let mut gw = gw;
    assert!(gw.process.terminate().expect("stops").success());
    let events = gw.usage_events();
    let outcome = |id: &str| {
        let event = events.iter().find(|e| e["id"] == id).unwrap_or_else(|| panic!("an event for {id}"));
        (
            event["data"]["outcome"].as_str().unwrap_or_default().to_string(),
            event["data"]["credits"].as_i64().unwrap_or(-1),
        )
    };
    assert_eq!(outcome(&ok_id), ("success".into(), 3));
    assert_eq!(outcome(&failed_id), ("runtime_error".into(), 0));
    assert_eq!(outcome(&slow_id), ("timeout".into(), 0));
    assert_eq!(outcome(&cut_id), ("client_disconnected".into(), 3));
    assert_eq!(outcome(&last_id), ("success".into(), 3));
    assert_eq!(outcome(&topped_id), ("success".into(), 3));
    assert_eq!(events.len(), 6, "one event per settled run, none for refusals");
    let wallet = w.wallets(&org).get(&org).await.expect("the Wallet").status.expect("a status");
    assert_eq!(wallet.meters.iter().map(|m| m.consumed).sum::<i64>(), 12, "the meter records exactly what was charged");
}
