//! A real lfx runs a flow whose MCP Tools component (lfx 1.13
//! `MCPToolsComponent`, Streamable HTTP, no LLM: the tool is chosen in the
//! flow) opens a ticket through CMP: the gateway forwards the run with its
//! token in lfx's request globals, the flow presents it to the connector
//! gateway, and the gateway calls the tenant's own ticket desk (a real MCP
//! server that checks the credential) with the credential it read from a
//! real OpenBao. The flow is `examples/flows/ticket-desk.json`, pointed at
//! this test's gateway.

mod support;

use cmp_testenv::lfx::{Lfx, example_flow_through};
use serde_json::{Value, json};
use support::tools::{ALPHA_SECRET, BETA_SECRET, ConnectorParts};
use support::{RUNTIME_KEY, World, refusal};

#[tokio::test]
async fn a_flow_on_lfx_opens_a_ticket_with_its_own_tenants_credential_through_cmp() {
    let w = World::new("gw-mcp-lfx").await;
    let parts = ConnectorParts::start(&w).await;
    let dir = std::env::temp_dir().join(format!("{}-lfx", w.run));
    let lfx = Lfx::start(&dir, RUNTIME_KEY).await.expect("lfx starts");
    let gw = parts.gateway(&w, "gw", &[]).await;

    // The seller's flow, calling tools through this gateway; the Offering bounds the desk's tools and prices calls.
    let (url, sha256) = example_flow_through("ticket-desk.json", &gw.base, &dir).expect("the ticket desk flow");
    let offering = format!("{}-desk", w.run);
    let plans = json!([{"id": "basic", "creditsPerRun": 1, "creditsPerToolCall": 3, "timeoutSeconds": 60,
                        "requestsPerMinute": 100000}]);
    let more = json!({
        "connectors": [{"type": "tickets", "tools": ["create_ticket", "get_ticket"]}],
        "versions": [{"name": "1", "flowId": "ticket-desk", "artifact": {"url": url, "sha256": sha256}}],
    });
    w.offering_with(&offering, "v2", lfx.url(), plans, more).await;

    // Alpha and beta bind their own desks under the same name; alpha's `narrow` Instance allows only get_ticket.
    let (a, b) = (format!("{}-a", w.run), format!("{}-b", w.run));
    let mut keys = Vec::new();
    for (org, secret) in [(&a, ALPHA_SECRET), (&b, BETA_SECRET)] {
        w.organization(org, 100).await;
        let path = parts.credential(org, "tickets", secret);
        let binding = |allowed: Value| {
            json!({"connectors": [{"name": "tickets", "type": "tickets", "vaultPath": path, "url": parts.desk_url(),
                                   "allowedTools": allowed}]})
        };
        let main = json!([{"name": "main"}]);
        let key = w.instance_more(org, "bot", &offering, "basic", main, binding(json!(["create_ticket"]))).await;
        keys.push(key[0].1.clone());
    }
    let narrow = json!({"connectors": [{"name": "tickets", "type": "tickets", "url": parts.desk_url(),
                                        "vaultPath": format!("connectors/{a}/support/tickets"),
                                        "allowedTools": ["get_ticket"]}]});
    let narrow_key =
        w.instance_more(&a, "narrow", &offering, "basic", json!([{"name": "main"}]), narrow).await.remove(0).1;
    let http = &w.http;

    // Each tenant's run opens a ticket in its own desk, with its own credential.
    let mut runs = Vec::new();
    for (key, tenant) in [(&keys[0], "alpha"), (&keys[1], "beta")] {
        let answer = gw.post(http, "/v1/runs", key, &json!({"input_value": "printer on fire"})).await;
        assert_eq!(answer.status(), 200);
        runs.push(answer.headers()["x-request-id"].to_str().expect("a run id").to_string());
        let body: Value = answer.json().await.expect("JSON");
        assert_eq!(body["status"], "completed", "{body}");
        assert_eq!(body["output"]["text"], format!("{tenant}: opened ticket 'printer on fire'"), "{body}");
        // lfx echoes the run's globals; the caller never gets the run's token.
        assert_eq!(body["globals"]["CMP_RUN_TOKEN"], "[the run's token]", "{body}");
        assert!(!body.to_string().contains("cmpr_"), "{body}");
    }

    // A tool the Instance does not allow is hidden from the flow's list, so the flow fails naming it: lfx answers
    // 200 with "status": "failed", which the gateway relays as a runtime error, charged nothing.
    let answer = gw.post(http, "/v1/runs", &narrow_key, &json!({"input_value": "not allowed"})).await;
    let narrow_run = answer.headers()["x-request-id"].to_str().expect("a run id").to_string();
    assert_eq!(answer.headers()["x-credits-charged"], "0");
    let (status, body) = (answer.status().as_u16(), answer.json::<Value>().await.expect("JSON"));
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("runtime_error")), "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("create_ticket")), "{body}");

    // A streamed run of an Instance with bindings is refused: lfx honours request globals in sync mode only.
    let streamed = gw.post(http, "/v1/runs", &keys[0], &json!({"input_value": "x", "stream": true})).await;
    assert_eq!(refusal(streamed).await, (400, "malformed_request".into()));

    // Charged: each tenant one run (1) and one call (3); the failed run nothing.
    for (org, balance) in [(&a, 100 - 1 - 3), (&b, 100 - 1 - 3)] {
        w.wallet_at(org, balance).await;
    }

    // Audit: each create_ticket joined to its run; the narrow run only listed tools, and settled as a runtime error.
    let mut gw = gw;
    assert!(gw.process.terminate().expect("stops").success());
    let settled = gw.usage_events().into_iter().find(|e| e["id"] == narrow_run.as_str()).expect("its usage event");
    assert_eq!(
        (settled["data"]["outcome"].as_str(), settled["data"]["credits"].as_i64()),
        (Some("runtime_error"), Some(0))
    );
    let calls: Vec<Value> = gw
        .usage_events()
        .into_iter()
        .filter(|e| e["type"] == "dev.gsv.cmp.tool.called")
        .map(|e| e["data"].clone())
        .collect();
    let created: Vec<(String, String, i64)> = calls
        .iter()
        .filter(|c| c["tool"] == "create_ticket")
        .map(|c| {
            let text = |f: &str| c[f].as_str().unwrap_or_default().to_string();
            (text("run"), text("outcome"), c["credits"].as_i64().unwrap_or(-1))
        })
        .collect();
    let expected: Vec<(String, String, i64)> = runs.iter().map(|r| (r.clone(), "success".into(), 3)).collect();
    assert_eq!(created, expected, "{calls:?}");
    let narrow_methods: Vec<&str> =
        calls.iter().filter(|c| c["run"] == narrow_run.as_str()).filter_map(|c| c["method"].as_str()).collect();
    assert!(narrow_methods.contains(&"tools/list") && !narrow_methods.contains(&"tools/call"), "{narrow_methods:?}");

    // The credential appears nowhere on the runtime's side, nor in the gateway's log or events.
    let lfx_log = std::fs::read_to_string(dir.join("lfx.log")).unwrap_or_default();
    let flow = std::fs::read_to_string(dir.join("ticket-desk.json")).expect("the flow");
    let usage = std::fs::read_to_string(&gw.usage).unwrap_or_default();
    let log = gw.process.log();
    for secret in [ALPHA_SECRET, BETA_SECRET] {
        for (place, text) in [("lfx's log", &lfx_log), ("the flow", &flow), ("the events", &usage), ("the log", &log)] {
            assert!(!text.contains(secret), "a credential in {place}");
        }
    }
    drop(lfx);
}
