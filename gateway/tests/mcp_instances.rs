//! Every Instance as an MCP server: the official MCP Python SDK's client
//! reaches an agent with its API key, lists it as one tool named after its
//! Offering, and calls it; a call is a run, admitted, charged and refused
//! exactly as `/v1/runs` is. Runtime: the `LangflowStandIn` (echo).

mod support;

use cmp_testenv::mcp::client;
use serde_json::{Value, json};
use support::OnStandIn;

#[tokio::test]
async fn an_instance_is_one_mcp_tool_whose_calls_are_runs() {
    let plans = json!([{"id": "basic", "creditsPerRun": 2, "requestsPerMinute": 100000}]);
    let OnStandIn { w, key, offering, org, runtime: _runtime, operator: _operator } =
        OnStandIn::start("gw-mcp-out", plans, 5).await;
    let other = format!("{}-other", w.run);
    w.organization(&other, 5).await;
    let other_key = w.instance(&other, "bot", &offering, "basic", json!([{"name": "main"}])).await.remove(0).1;
    let gw = w.gateway("gw", &[]).await;
    let own = format!("{}/v1/instances/{org}/bot/mcp", gw.base);

    // The SDK's default: server/discover, the 2026-07-28 revision (no handshake, no session).
    let steps = json!([["version"], ["list"], ["call", offering, {"input": "hello there"}],
                       ["call", offering, {"input": "again"}], ["call", offering, {"prompt": "wrong field"}],
                       ["call", "another_tool", {"input": "x"}], ["call", offering, {"input": "one too many"}]]);
    let reports = client(&own, &key, "auto", &steps).await.expect("the MCP client runs");
    assert_eq!(reports[0]["version"], "2026-07-28", "discovered, not initialized: {reports:?}");
    assert_eq!(reports[1]["tools"], json!([offering]), "{reports:?}");
    assert_eq!(reports[2], json!({"text": "hello there", "is_error": false}), "a call is a run of the agent");
    assert_eq!(reports[3]["is_error"], false, "{reports:?}");
    assert!(reports[4].to_string().contains("input"), "the arguments it takes: {:?}", reports[4]);
    assert!(reports[5].to_string().contains("one tool"), "{:?}", reports[5]);
    // 5 credits, 2 a run: the third run is refused as /v1/runs refuses it.
    assert!(reports[6].to_string().contains("insufficient_credits"), "{:?}", reports[6]);

    // The key by itself names its Instance; the initialize handshake of earlier revisions.
    let steps = json!([["version"], ["list"]]);
    let by_key = client(&format!("{}/v1/mcp", gw.base), &key, "legacy", &steps).await.expect("runs");
    assert!(by_key[0]["version"].as_str().is_some_and(|v| v.starts_with("2025-")), "{by_key:?}");
    assert_eq!(by_key[1]["tools"], json!([offering]));
    // Another tenant's key on this Instance's path, and no valid key at all.
    let answer = w
        .http
        .post(&own)
        .header("x-api-key", &other_key)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .expect("the gateway answers");
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!(body["error"]["data"]["reason"], "wrong_tenant", "{body}");
    let answer = w
        .http
        .post(&own)
        .header("x-api-key", "cmp_not_a_key")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(answer.status(), 401);

    // Both runs were charged and reported like any run.
    w.wallet_at(&org, 1).await;
    let mut gw = gw;
    assert!(gw.process.terminate().expect("stops").success());
    let settled = gw.usage_events().into_iter().filter(|e| e["type"] == "dev.gsv.cmp.run.settled").count();
    assert_eq!(settled, 2, "one usage event per run");
}
