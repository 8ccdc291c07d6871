//! Caller inputs on a real lfx: the Offering version declares one input,
//! `greeting` (a choice), which the gateway places in the run's request
//! global GREETING, where `examples/flows/tone.json`'s prompt reads it. A
//! caller's tweaks that name a component, a field or a platform global are
//! refused (`tweak_not_allowed`) and cost nothing, a value outside its
//! choices is `invalid_input`, the Instance's MCP tool advertises the input,
//! and the session id the runtime sees belongs to the Instance. A buyer's
//! setting (`spec.config`, declared in the version's `settings`) is applied
//! on every run, and a key that is not a setting is reported in status.

mod support;

use cmp_testenv::lfx::Lfx;
use serde_json::{Value, json};
use support::{RUNTIME_KEY, World, converge, refusal};

#[tokio::test]
async fn a_caller_sends_only_the_inputs_its_offering_declares_and_they_go_where_declared() {
    let w = World::new("gw-inputs").await;
    let dir = std::env::temp_dir().join(format!("{}-lfx", w.run));
    let lfx = Lfx::start(&dir, RUNTIME_KEY).await.expect("lfx starts");
    let _operator = w.operator();
    let (url, sha256) = cmp_testenv::lfx::example_flow("tone.json").expect("the tone flow");
    let offering = format!("{}-tone", w.run);
    let plans = json!([{"id": "basic", "creditsPerRun": 1, "requestsPerMinute": 100000, "timeoutSeconds": 30}]);
    let inputs = json!([{"name": "greeting", "type": "string", "choices": ["Hello", "Good evening"],
                         "description": "How to greet", "target": {"global": "GREETING"}}]);
    let versions =
        json!([{"name": "1", "flowId": "tone", "artifact": {"url": url, "sha256": sha256}, "inputs": inputs}]);
    w.offering_with(&offering, "v2", lfx.url(), plans, json!({"versions": versions})).await;
    let [(a, a_key), (b, b_key)] = w.two_tenants(&offering, "basic", 20).await;
    let gw = w.gateway("gw", &[]).await;
    let http = &w.http;

    // The declared input reaches the flow where the Offering says.
    let body = json!({"input_value": "Ada", "inputs": {"greeting": "Good evening"}, "session_id": "s1"});
    let answer = gw.post(http, "/v1/runs", &a_key, &body).await;
    assert_eq!(answer.status(), 200);
    let answered: Value = answer.json().await.expect("JSON");
    assert_eq!(answered["output"]["text"], "Good evening, Ada!", "{answered}");
    // The session the runtime saw is the caller's s1 inside alpha's Instance; beta's s1 is another conversation.
    let alpha_session = answered["session_id"].as_str().expect("lfx gives the session back").to_string();
    assert!(alpha_session.ends_with(":s1") && alpha_session != "s1", "{alpha_session}");
    let beta = gw.post(http, "/v1/runs", &b_key, &json!({"input_value": "Bo", "session_id": "s1"})).await;
    let beta: Value = beta.json().await.expect("JSON");
    assert!(beta["session_id"].as_str().is_some_and(|s| s.ends_with(":s1") && s != alpha_session), "{beta}");
    // Beta sending alpha's whole id still lands in beta's own conversations.
    let guess = gw.post(http, "/v1/runs", &b_key, &json!({"input_value": "Bo", "session_id": alpha_session})).await;
    let guess: Value = guess.json().await.expect("JSON");
    let guessed = guess["session_id"].as_str().unwrap_or_default();
    assert!(guessed != alpha_session && guessed.ends_with(&alpha_session), "{guessed}");
    // Alpha sending back the id lfx gave continues the same conversation.
    let again = json!({"input_value": "Ada", "session_id": alpha_session});
    let again: Value = gw.post(http, "/v1/runs", &a_key, &again).await.json().await.expect("JSON");
    assert_eq!(again["session_id"], alpha_session.as_str());

    // What a caller might use to reach the seller's key, the prompt, another collection or the run token: refused.
    let attempts = [
        json!({"input_value": "x", "tweaks": {"Prompt-tone": {"template": "leak {name}"}}}),
        json!({"input_value": "x", "tweaks": {"OpenAIModel-1": {"openai_api_base": "https://evil.example"}}}),
        json!({"input_value": "x", "inputs": {"collection": "other-tenant"}}),
        json!({"input_value": "x", "inputs": {"CMP_RUN_TOKEN": "forged"}}),
    ];
    for attempt in attempts {
        let answer = gw.post(http, "/v1/runs", &a_key, &attempt).await;
        assert_eq!(answer.headers().get("x-credits-charged").map(|v| v.as_bytes()), None, "refused before paying");
        let answer_text = answer.text().await.expect("a body");
        assert!(
            answer_text.contains("tweak_not_allowed") && answer_text.contains("it takes greeting"),
            "{answer_text}"
        );
    }
    let outside = json!({"input_value": "x", "inputs": {"greeting": "Yo"}});
    assert_eq!(refusal(gw.post(http, "/v1/runs", &a_key, &outside).await).await, (400, "invalid_input".into()));

    // The Instance's MCP tool advertises the input, and a call places it the same way.
    let mcp = format!("{}/v1/instances/{a}/bot/mcp", gw.base);
    let rpc = |message: &Value| {
        let request = http.post(&mcp).header("x-api-key", &a_key).json(message);
        async move { request.send().await.expect("answered").json::<Value>().await.expect("JSON") }
    };
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let listed = rpc(&list).await;
    let schema = &listed["result"]["tools"][0]["inputSchema"]["properties"]["greeting"];
    assert_eq!(schema["enum"], json!(["Hello", "Good evening"]), "{listed}");
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": offering, "arguments": {"input": "Cy", "greeting": "Hello"}}});
    let called = rpc(&call).await;
    assert_eq!(called["result"]["content"][0]["text"], "Hello, Cy!", "{called}");
    let sneaky = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                        "params": {"name": offering, "arguments": {"input": "Cy", "api_base": "https://evil.example"}}});
    let refused = rpc(&sneaky).await;
    assert!(refused.to_string().contains("tweak_not_allowed"), "{refused}");

    // A buyer's setting: applied on every run, reported when a key is not a setting, and never the caller's to send.
    let set = format!("{}-set", w.run);
    let settings = json!([{"name": "greeting", "type": "string", "choices": ["Hello", "Good evening"],
                           "target": {"global": "GREETING"}}]);
    let versions =
        json!([{"name": "1", "flowId": "tone", "artifact": {"url": url, "sha256": sha256}, "settings": settings}]);
    let plans = json!([{"id": "basic", "creditsPerRun": 1, "requestsPerMinute": 100000}]);
    w.offering_with(&set, "v2", lfx.url(), plans, json!({"versions": versions})).await;
    let config = json!({"config": {"greeting": "Good evening", "api_base": "https://evil.example"}});
    let keys = json!([{"name": "main"}]);
    let set_key = w.instance_more(&b, "set", &set, "basic", keys, config).await.remove(0).1;
    let answer = gw.post(http, "/v1/runs", &set_key, &json!({"input_value": "Dee"})).await;
    let answered: Value = answer.json().await.expect("JSON");
    assert_eq!(answered["output"]["text"], "Good evening, Dee!", "{answered}");
    let overriding = json!({"input_value": "Dee", "inputs": {"greeting": "Hello"}});
    assert_eq!(
        refusal(gw.post(http, "/v1/runs", &set_key, &overriding).await).await,
        (400, "tweak_not_allowed".into())
    );
    let message = converge("ConfigApplied names api_base", || async {
        let status = w.instances(&b).get("set").await.ok()?.status?;
        let applied = cmp_crds::conditions::find(&status.conditions, cmp_crds::conditions::CONFIG_APPLIED)?.clone();
        (applied.reason == "ConfigNotApplied").then_some(applied.message)
    })
    .await;
    assert!(message.contains("api_base is not a setting") && !message.contains("greeting ="), "{message}");

    // A version whose declaration names a global the flow never reads is not Ready, and an Instance on it fails.
    let broken = format!("{}-broken", w.run);
    let missing = json!([{"name": "tone", "type": "string", "target": {"global": "TONE"}}]);
    let versions =
        json!([{"name": "1", "flowId": "tone", "artifact": {"url": url, "sha256": sha256}, "inputs": missing}]);
    let plans = json!([{"id": "basic", "creditsPerRun": 1}]);
    w.offering_with(&broken, "v2", lfx.url(), plans, json!({"versions": versions})).await;
    let offerings = kube::Api::<cmp_crds::Offering>::all(w.client.clone());
    let message = converge("the broken Offering refused", || async {
        let status = offerings.get(&broken).await.ok()?.status?;
        let ready = cmp_crds::conditions::find(&status.conditions, cmp_crds::conditions::READY)?.clone();
        (ready.reason == "FlowInputsInvalid").then_some(ready.message)
    })
    .await;
    assert!(message.contains("input \"tone\"") && message.contains("global TONE"), "{message}");
    w.instance_unready(&a, "broken", &broken, "basic", json!([{"name": "main"}])).await;
    converge("the Instance on it failed", || async {
        let status = w.instances(&a).get("broken").await.ok()?.status?;
        let ready = cmp_crds::conditions::find(&status.conditions, cmp_crds::conditions::READY)?.clone();
        (ready.reason == "FlowInputsInvalid").then_some(())
    })
    .await;

    // Charged: alpha's three runs (two on /v1/runs, one as its MCP tool); none of the refusals.
    w.wallet_at(&a, 20 - 3).await;
    drop(lfx);
}
