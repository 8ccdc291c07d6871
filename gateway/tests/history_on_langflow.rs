//! Conversations on a real Langflow backend (the full server, which keeps
//! every run's messages per session; lfx keeps none). The Offering runs
//! `examples/flows/recall.json`, whose answer is the question and the
//! conversation so far, on Langflow's `v1` run API; the operator registers
//! each Instance's flow through Langflow's own flow API.
//!
//! Two Instances whose callers both say `s1` hold two conversations: each
//! agent recalls only what was said to it, a caller who sends another
//! Instance's session id lands in a conversation of its own, and Langflow
//! itself stored nothing under the caller's `s1`. A caller input the
//! Offering declares reaches its component field as a Langflow tweak; a
//! tweak naming any other field (the history's own session id) is refused.
//! Deleting an Instance removes its flow from Langflow.

mod support;

use cmp_testenv::langflow::Langflow;
use serde_json::{Value, json};
use support::{World, converge};

/// The agent's answer: Langflow's first message (`v1`).
fn answer(body: &Value) -> &str {
    body.pointer("/outputs/0/outputs/0/results/message/text").and_then(Value::as_str).unwrap_or_default()
}

#[tokio::test]
async fn conversations_belong_to_their_instance_on_a_real_langflow() {
    let w = World::new("gw-history").await;
    let dir = std::env::temp_dir().join(format!("{}-langflow", w.run));
    let langflow = Langflow::start(&dir).await.expect("Langflow starts");
    let _operator = w.operator();
    let (url, sha256) = cmp_testenv::lfx::example_flow("recall.json").expect("the recall flow");
    let offering = format!("{}-recall", w.run);
    let plans = json!([{"id": "basic", "creditsPerRun": 1, "requestsPerMinute": 100000, "timeoutSeconds": 60}]);
    // Callers may choose whose messages the history shows: the Message History component's sender filter.
    let inputs = json!([{"name": "speaker", "type": "string", "choices": ["User", "Machine and User"],
                         "target": {"component": "Memory-recall", "field": "sender_type"}}]);
    let versions =
        json!([{"name": "1", "flowId": "recall", "artifact": {"url": url, "sha256": sha256}, "inputs": inputs}]);
    let runtime = (langflow.url(), langflow.api_key());
    w.offering_on(&offering, "v1", runtime, plans, json!({"versions": versions})).await;
    let [(a, a_key), (b, b_key)] = w.two_tenants(&offering, "basic", 20).await;
    let gw = w.gateway("gw", &[]).await;
    let http = &w.http;
    let run_with = |key: &str, body: Value| {
        let key = key.to_string();
        let gw = &gw;
        async move {
            let answer = gw.post(http, "/v1/runs", &key, &body).await;
            assert_eq!(answer.status(), 200, "a run on Langflow");
            answer.json::<Value>().await.expect("JSON")
        }
    };
    let run =
        |key: &str, input: &str, session: &str| run_with(key, json!({"input_value": input, "session_id": session}));

    // Alpha's agent remembers what alpha's caller said in s1.
    let told = run(&a_key, "my name is Ada", "s1").await;
    let alpha_session = told["session_id"].as_str().expect("Langflow gives the session back").to_string();
    assert!(alpha_session.ends_with(":s1") && alpha_session != "s1", "{alpha_session}");
    let recalled = run(&a_key, "who am I?", "s1").await;
    assert!(answer(&recalled).starts_with("who am I? | so far:"), "{recalled}");
    assert!(answer(&recalled).contains("my name is Ada"), "alpha's s1 continues: {recalled}");
    assert_eq!(recalled["session_id"], alpha_session.as_str());
    assert!(answer(&recalled).contains("AI: "), "both sides by default: {recalled}");
    // The declared input reaches its field as a tweak: only the caller's side of the conversation.
    let users =
        run_with(&a_key, json!({"input_value": "who am I?", "session_id": "s1", "inputs": {"speaker": "User"}})).await;
    assert!(answer(&users).contains("User: my name is Ada") && !answer(&users).contains("AI: "), "{users}");
    // A tweak of any other field, such as the history's session id, is refused before the runtime.
    let reach = json!({"input_value": "who am I?", "tweaks": {"Memory-recall": {"session_id": alpha_session}}});
    assert_eq!(
        support::refusal(gw.post(http, "/v1/runs", &b_key, &reach).await).await,
        (400, "tweak_not_allowed".into())
    );

    // Beta's s1 is another conversation, and so is alpha's s2.
    let beta = run(&b_key, "who am I?", "s1").await;
    assert!(answer(&beta).starts_with("who am I? | so far:") && !answer(&beta).contains("Ada"), "{beta}");
    assert_ne!(beta["session_id"], alpha_session.as_str());
    let other = run(&a_key, "who am I?", "s2").await;
    assert!(!answer(&other).contains("Ada"), "alpha's s2 is new: {other}");
    // Beta sending alpha's whole session id still lands in a conversation of beta's own.
    let guess = run(&b_key, "who am I?", &alpha_session).await;
    assert!(!answer(&guess).contains("Ada"), "{guess}");
    assert_ne!(guess["session_id"], alpha_session.as_str());

    // At the runtime: nothing was stored under the callers' own ids; alpha's conversation holds alpha's words.
    assert_eq!(langflow.messages("s1").await.expect("messages"), Vec::<Value>::new());
    let stored = langflow.messages(&alpha_session).await.expect("messages");
    assert!(stored.iter().any(|m| m["text"] == "my name is Ada"), "{stored:?}");
    let beta_session = beta["session_id"].as_str().expect("beta's session").to_string();
    let beta_stored = langflow.messages(&beta_session).await.expect("messages");
    assert!(!beta_stored.is_empty() && beta_stored.iter().all(|m| !m.to_string().contains("Ada")), "{beta_stored:?}");

    // Deleting beta's Instance removes its flow from Langflow; alpha's stays.
    let flow_of = |org: String| {
        let instances = w.instances(&org);
        async move { instances.get("bot").await.expect("the Instance").status.and_then(|s| s.flow_id).expect("flowId") }
    };
    let (alpha_flow, beta_flow) = (flow_of(a.clone()).await, flow_of(b.clone()).await);
    w.instances(&b).delete("bot", &Default::default()).await.expect("beta's Instance deleted");
    let served = |flow: String| {
        let request =
            http.get(format!("{}/api/v1/flows/{flow}", langflow.url())).header("x-api-key", langflow.api_key());
        async move { request.send().await.expect("Langflow answers").status().as_u16() }
    };
    converge("beta's flow removed from Langflow", || async { (served(beta_flow.clone()).await == 404).then_some(()) })
        .await;
    assert_eq!(served(alpha_flow).await, 200, "alpha's flow is still served");

    // Charged: alpha's four runs and beta's two; nothing for the refusal.
    w.wallet_at(&a, 20 - 4).await;
    w.wallet_at(&b, 20 - 2).await;
    drop(langflow);
}
