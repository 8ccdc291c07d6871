//! The connector gateway with real parts: a real MCP server (the official
//! Python SDK's, checking the credential it receives), a real MCP client
//! (the same SDK's), a real OpenBao whose Kubernetes auth the gateway logs
//! in to as its own ServiceAccount (role `cmp.gateway.connectors`, written by
//! the real operator), and the real gateway. The runtime is the
//! `LangflowStandIn`: it receives the run's token and holds the run open
//! while the test calls tools with it, as a flow's MCP component would.
//! A third test breaks the audit sink, the MCP server and OpenBao in turn.

mod support;

use cmp_testenv::langflow_stand_in::{ECHO_RUN_TOKEN, LangflowStandIn};
use cmp_testenv::mcp::client;
use cmp_testenv::test::test_kubeconfig;
use serde_json::{Value, json};
use support::tools::{ALPHA_SECRET, BETA_SECRET, ConnectorParts};
use support::{RUNTIME_KEY, World, converge};

/// The API server's port, from the tests' kubeconfig.
fn api_server_port() -> u16 {
    let kubeconfig = std::fs::read_to_string(test_kubeconfig()).expect("the tests' kubeconfig");
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
        .and_then(|p| p.trim().parse().ok())
        .expect("the API server's port")
}

/// Starts a run that the runtime holds until it is released, and returns once the runtime has its token.
async fn open_run(
    w: &World,
    gateway: &str,
    key: &str,
    runtime: &LangflowStandIn,
) -> (String, tokio::task::JoinHandle<u16>) {
    let before = runtime.seen().len();
    let (http, url, key) = (w.http.clone(), format!("{gateway}/v1/runs"), key.to_string());
    let run = tokio::spawn(async move {
        let answer = http.post(url).header("x-api-key", key).json(&json!({"input_value": "hold"}));
        answer.send().await.map(|a| a.status().as_u16()).unwrap_or(0)
    });
    let token = converge("the runtime to get the run's token", || async {
        runtime.seen().get(before).and_then(|seen| seen.run_token.clone())
    })
    .await;
    (token, run)
}

/// POSTs `body` to the MCP endpoint of `binding` with `token` (and `session`); the status and the JSON answer.
async fn raw(
    w: &World,
    gateway: &str,
    binding: &str,
    token: &str,
    session: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = w
        .http
        .post(format!("{gateway}/v1/connectors/{binding}/mcp"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    let answer = request.send().await.expect("the gateway answers");
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

/// POSTs a body of `size` bytes over a bare connection, reading the answer while it is still being written (the
/// gateway answers 413 and closes without reading it all); the status line and the body.
async fn raw_oversized(gateway: &str, token: &str, size: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gateway.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&addr).await.expect("a connection");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /v1/connectors/desk/mcp HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n"
    );
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(head.as_bytes()).await;
        let _ = writer.write_all(&vec![b' '; size]).await;
    });
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = reader.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
        if String::from_utf8_lossy(&answer).contains("}}") {
            break;
        }
    }
    writing.abort();
    String::from_utf8_lossy(&answer).into_owned()
}

fn reason(answer: &Value) -> &str {
    answer["error"]["data"]["reason"].as_str().unwrap_or("<no reason>")
}

/// Two tenants, `a` and `b`, each with an Instance `bot` whose binding `desk` reaches the ticket desk with its
/// own credential; `a` also has bindings to the API server and to a host off the allow-list, `b` a binding `crm`.
struct ToolWorld {
    w: World,
    parts: ConnectorParts,
    runtime: LangflowStandIn,
    a: String,
    b: String,
    a_key: String,
    b_key: String,
}

impl ToolWorld {
    async fn start(prefix: &str) -> Self {
        let w = World::new(prefix).await;
        let parts = ConnectorParts::start(&w).await;
        let runtime = LangflowStandIn::start(RUNTIME_KEY).await.expect("the stand-in starts");

        let offering = format!("{}-desk", w.run);
        let plans = json!([{"id": "basic", "creditsPerRun": 1, "creditsPerToolCall": 2, "timeoutSeconds": 120,
                            "requestsPerMinute": 100000}]);
        // close_ticket is a tool the desk does not have: a binding allowing it is told so by the gateway's probe.
        let tools = json!([{"type": "tickets",
                            "tools": ["create_ticket", "get_ticket", "slow_report", "failing_lookup", "close_ticket"]}]);
        w.offering_with(&offering, "v1", runtime.url(), plans, json!({"connectors": tools})).await;
        let (a, b) = (format!("{}-a", w.run), format!("{}-b", w.run));
        for (org, secret) in [(&a, ALPHA_SECRET), (&b, BETA_SECRET)] {
            w.organization(org, 100).await;
            parts.credential(org, "desk", secret);
        }
        let desk_url = parts.desk_url();
        let binding = |org: &str, name: &str, url: &str, allowed: Value| {
            json!({"name": name, "type": "tickets", "vaultPath": format!("connectors/{org}/support/desk"), "url": url,
                   "allowedTools": allowed, "timeoutSeconds": 2})
        };
        let alpha_bindings = json!([
            binding(
                &a,
                "desk",
                &desk_url,
                json!(["get_ticket", "create_ticket", "slow_report", "failing_lookup", "delete_everything"])
            ),
            binding(&a, "apiserver", &format!("https://localhost:{}/", api_server_port()), json!(["get_ticket"])),
            binding(&a, "outside", "http://tools.example.net/mcp", json!(["get_ticket"])),
        ]);
        let keys = json!([{"name": "main"}]);
        let a_key = w
            .instance_more(&a, "bot", &offering, "basic", keys.clone(), json!({"connectors": alpha_bindings}))
            .await
            .remove(0)
            .1;
        let beta_bindings = json!([
            binding(&b, "desk", &desk_url, json!(["get_ticket"])),
            binding(&b, "crm", &desk_url, json!(["get_ticket", "close_ticket"]))
        ]);
        let b_key = w
            .instance_more(&b, "bot", &offering, "basic", keys, json!({"connectors": beta_bindings}))
            .await
            .remove(0)
            .1;
        Self { w, parts, runtime, a, b, a_key, b_key }
    }

    /// Starts gateway `replica` with the connector gateway on; `extra` adds flags.
    async fn gateway(&self, replica: &str, extra: &[&str]) -> support::Gateway {
        self.parts.gateway(&self.w, replica, extra).await
    }
}

#[tokio::test]
async fn a_runs_tool_calls_reach_its_own_tools_with_its_own_credential_and_nothing_else() {
    let t = ToolWorld::start("gw-mcp").await;
    let ToolWorld { w, runtime, a, b, a_key, b_key, .. } = &t;
    let gw = t.gateway("gw", &[]).await;

    // Status says which bindings can be called, and which tools each allows.
    let (message, desk_tools) = converge("alpha's ConnectorsReady", || async {
        let status = w.instances(a).get("bot").await.ok()?.status?;
        let ready = cmp_crds::conditions::find(&status.conditions, cmp_crds::conditions::CONNECTORS_READY)?.clone();
        let desk = status.connectors.iter().find(|c| c.name == "desk")?.allowed_tools.clone();
        (ready.status == "False").then_some((ready.message, desk))
    })
    .await;
    assert!(message.contains("outside (tools.example.net)"), "{message}");
    assert_eq!(desk_tools, ["create_ticket", "failing_lookup", "get_ticket", "slow_report"]);
    let mcp = |binding: &str| format!("{}/v1/connectors/{binding}/mcp", gw.base);

    // The gateway probes each callable binding's server with the binding's own credential, for status: beta's crm
    // allows a tool the desk lacks, and alpha's binding to the API server is refused by the gateway's egress check.
    let (probes, ready) = converge("beta's bindings probed", || async {
        let status = w.instances(b).get("bot").await.ok()?.status?;
        let ready = cmp_crds::conditions::find(&status.conditions, cmp_crds::conditions::CONNECTORS_READY)?.clone();
        (ready.reason == "ConnectorToolsMissing").then_some((status.connector_probes, ready))
    })
    .await;
    assert!(ready.message.contains("crm (close_ticket)") && !ready.message.contains("desk"), "{}", ready.message);
    let desk_probe = probes.iter().find(|p| p.name == "desk").expect("desk probed");
    assert!(desk_probe.answered, "{desk_probe:?}");
    assert_eq!(desk_probe.tools, ["create_ticket", "delete_everything", "failing_lookup", "get_ticket", "slow_report"]);
    let internal = converge("alpha's apiserver binding probed", || async {
        let status = w.instances(a).get("bot").await.ok()?.status?;
        status.connector_probes.into_iter().find(|p| p.name == "apiserver")
    })
    .await;
    assert!(
        !internal.answered && internal.refused && internal.message.contains("cluster-internal endpoint"),
        "{internal:?}"
    );
    // The operator reports it as denied, after the gateway's DNS resolution.
    let destination = converge("alpha's apiserver binding Denied", || async {
        let status = w.instances(a).get("bot").await.ok()?.status?;
        let apiserver = status.connectors.into_iter().find(|c| c.name == "apiserver")?;
        (apiserver.destination == Some(cmp_crds::instance::ConnectorDestination::Denied)).then_some(apiserver)
    })
    .await;
    assert_eq!(destination.allowed_tools, ["get_ticket"], "{destination:?}");
    let alpha = w.instances(a).get("bot").await.expect("alpha's bot").status.expect("status");
    assert!(alpha.connector_probes.iter().all(|p| p.name != "outside"), "a binding off the allow-list is not probed");

    let (alpha_token, alpha_run) = open_run(w, &gw.base, a_key, runtime).await;
    let (beta_token, beta_run) = open_run(w, &gw.base, b_key, runtime).await;

    // The SDK's client, in the current revision (server/discover) and in the initialize handshake with a session.
    for mode in ["auto", "legacy"] {
        let steps = json!([["list"], ["call", "get_ticket", {"ticket_id": "7"}], ["call", "delete_everything", {}],
                           ["call", "failing_lookup", {}], ["call", "slow_report", {"seconds": 5}]]);
        let reports = client(&mcp("desk"), &alpha_token, mode, &steps).await.expect("the MCP client runs");
        assert_eq!(reports.len(), 5, "{mode}: {reports:?}");
        assert_eq!(
            reports[0]["tools"],
            json!(["create_ticket", "failing_lookup", "get_ticket", "slow_report"]),
            "{mode}: only the allowed tools are listed (delete_everything is beyond the Offering)"
        );
        assert_eq!(reports[1]["text"], "alpha: ticket 7 is open", "{mode}: the tool got alpha's own credential");
        let refused = reports[2].to_string();
        assert!(refused.contains("not allowed") && refused.contains("delete_everything"), "{mode}: {refused}");
        assert_eq!(reports[3]["is_error"], true, "{mode}: {:?}", reports[3]);
        let slow = reports[4].to_string();
        assert!(slow.contains("did not answer within 2 s"), "{mode}: the binding's timeout: {slow}");
    }

    // Beta's run reaches beta's binding of the same name, with beta's credential...
    let beta = client(&mcp("desk"), &beta_token, "auto", &json!([["call", "get_ticket", {"ticket_id": "1"}]])).await;
    assert_eq!(beta.expect("the MCP client runs")[0]["text"], "beta: ticket 1 is open");
    // ...and alpha's token cannot name a binding only beta has.
    let crm = client(&mcp("crm"), &alpha_token, "auto", &json!([["list"]])).await.expect("the client runs");
    assert!(crm[0].to_string().contains("no connector binding \\\"crm\\\""), "{crm:?}");

    // Bindings that point inside the cluster or off the allow-list are refused at call time.
    let ping = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let (_, inside) = raw(w, &gw.base, "apiserver", &alpha_token, None, ping.to_vec()).await;
    assert_eq!(reason(&inside), "destination_refused", "{inside}");
    assert!(inside.to_string().contains("cluster-internal endpoint"), "{inside}");
    let (_, outside) = raw(w, &gw.base, "outside", &alpha_token, None, ping.to_vec()).await;
    assert!(outside.to_string().contains("not on the platform's allow-list"), "{outside}");

    // Bad input: each gets its error, and nothing reaches the MCP server or is charged.
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{not json".to_vec(), 400, "parse_error"),
        (br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#.to_vec(), 400, "invalid_request"),
        (br#"{"jsonrpc":"2.0","id":1,"method":"resources/list"}"#.to_vec(), 200, "method_not_found"),
        (br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"get_ticket"}}"#.to_vec(), 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = raw(w, &gw.base, "desk", &alpha_token, None, body).await;
        assert_eq!((got, reason(&answer)), (status, code), "{answer}");
    }
    let oversized = raw_oversized(&gw.base, &alpha_token, 4 << 20).await;
    assert!(oversized.starts_with("HTTP/1.1 413") && oversized.contains("body_too_large"), "{oversized}");
    // A session opened by beta's run is refused on alpha's.
    let opened = w
        .http
        .post(mcp("desk"))
        .header("authorization", format!("Bearer {beta_token}"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(ping.to_vec())
        .send()
        .await
        .expect("beta initializes");
    let beta_session = opened.headers()["mcp-session-id"].to_str().expect("a session id").to_string();
    let list = br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#.to_vec();
    let (status, answer) = raw(w, &gw.base, "desk", &alpha_token, Some(&beta_session), list.clone()).await;
    assert_eq!((status, reason(&answer)), (404, "unknown_session"), "{answer}");
    // No token, or a forged one.
    let (status, answer) = raw(w, &gw.base, "desk", "cmpr_forged.x", None, list.clone()).await;
    assert_eq!((status, reason(&answer)), (401, "invalid_run_token"), "{answer}");

    // Once the run ends, its token opens nothing.
    runtime.release_held();
    assert_eq!(alpha_run.await.expect("alpha's run"), 200);
    assert_eq!(beta_run.await.expect("beta's run"), 200);
    let (status, answer) = raw(w, &gw.base, "desk", &alpha_token, None, list.clone()).await;
    assert_eq!((status, reason(&answer)), (401, "invalid_run_token"), "{answer}");
    assert!(answer.to_string().contains("has ended"), "{answer}");

    // A runtime that echoes its run's token (as lfx echoes request globals) never hands it to the caller, whole or
    // streamed in pieces that split it.
    for stream in [false, true] {
        let before = runtime.seen().len();
        let answer = w
            .http
            .post(format!("{}/v1/runs", gw.base))
            .header("x-api-key", a_key.as_str())
            .json(&json!({"input_value": ECHO_RUN_TOKEN, "stream": stream}))
            .send()
            .await
            .expect("the gateway answers");
        assert_eq!(answer.status(), 200, "stream {stream}");
        let text = answer.text().await.expect("the whole answer");
        let token = runtime.seen()[before].run_token.clone().expect("the runtime got a token");
        assert!(!text.contains(&token), "stream {stream}: {text}");
        assert!(text.contains("[the run's token]"), "stream {stream}: the rest of the answer is intact: {text}");
        if stream {
            let frames: String = text
                .split("\n\n")
                .filter(|f| f.contains("\"token\""))
                .map(|f| {
                    serde_json::from_str::<Value>(f)
                        .map(|v| v["data"]["chunk"].as_str().unwrap_or_default().to_string())
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join(" ");
            assert_eq!(frames, "your run token is [the run's token]", "{text}");
        }
    }

    // Charges match the calls: 3 runs (1 each) and 2 successful calls at 2 credits each; beta a run and 1 call.
    for (org, balance) in [(&a, 93), (&b, 97)] {
        w.wallet_at(org, balance).await;
    }
    let mut gw = gw;
    assert!(gw.process.terminate().expect("stops").success());
    let calls: Vec<Value> = gw
        .usage_events()
        .into_iter()
        .filter(|e| e["type"] == "dev.gsv.cmp.tool.called")
        .map(|e| e["data"].clone())
        .collect();
    let of = |org: &str, tool: &str| -> Vec<(String, i64)> {
        calls
            .iter()
            .filter(|c| c["organization"] == org && c["tool"] == tool)
            .map(|c| (c["outcome"].as_str().unwrap_or_default().to_string(), c["credits"].as_i64().unwrap_or(-1)))
            .collect()
    };
    assert_eq!(of(a, "get_ticket"), vec![("success".to_string(), 2); 2]);
    assert_eq!(of(a, "delete_everything"), vec![("refused".to_string(), 0); 2]);
    assert_eq!(of(a, "failing_lookup"), vec![("tool_error".to_string(), 0); 2]);
    assert_eq!(of(a, "slow_report"), vec![("timeout".to_string(), 0); 2]);
    assert_eq!(of(b, "get_ticket"), vec![("success".to_string(), 2)]);
    let (tokenless, joined): (Vec<&Value>, Vec<&Value>) =
        calls.iter().partition(|c| c["refusal"] == "invalid_run_token");
    assert!(joined.iter().all(|c| c["run"].as_str().is_some_and(|r| r.starts_with("run_"))), "calls join their run");
    assert_eq!(tokenless.len(), 2, "the forged token and the ended run's token are audited too: {tokenless:?}");

    // The credential appears nowhere but on the MCP server's side.
    let everything_seen: String = runtime.seen().iter().map(|s| s.everything.clone()).collect();
    let usage = std::fs::read_to_string(&gw.usage).unwrap_or_default();
    let log = gw.process.log();
    for secret in [ALPHA_SECRET, BETA_SECRET] {
        assert!(!everything_seen.contains(secret), "the runtime never sees a credential");
        assert!(!usage.contains(secret), "no usage or audit event holds a credential");
        assert!(!log.contains(secret), "the gateway never logs a credential");
    }
}

/// A JSON-RPC request to the MCP endpoint of `desk` on `gateway`, in the initialize handshake's revision: the
/// status, the session id answered (if any) and the JSON answer.
async fn rpc(
    w: &World,
    gateway: &str,
    token: &str,
    session: Option<&str>,
    body: Value,
) -> (u16, Option<String>, Value) {
    let mut request = w
        .http
        .post(format!("{gateway}/v1/connectors/desk/mcp"))
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&body);
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    let answer = request.send().await.expect("the gateway answers");
    let session = answer.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(String::from);
    (answer.status().as_u16(), session, answer.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_session_outlives_the_replica_that_opened_it_and_a_run_ends_on_every_replica() {
    let t = ToolWorld::start("gw-mcp-ha").await;
    let mut replicas = Vec::new();
    for name in ["gw-0", "gw-1", "gw-2"] {
        let peer = format!("127.0.0.1:{}", cmp_testenv::free_port().expect("a free port"));
        let flags = ["--peer-addr", peer.as_str(), "--namespace", "default", "--peer-group", t.w.run.as_str()];
        replicas.push(t.gateway(name, &flags).await);
    }
    // gw-0 forwards the run; gw-1 opens the session with the MCP server; gw-1 stops; gw-2 carries on.
    let (token, run) = open_run(&t.w, &replicas[0].base, &t.a_key, &t.runtime).await;
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "cmp-test", "version": "1"}}});
    let (status, session, answer) = rpc(&t.w, &replicas[1].base, &token, None, initialize).await;
    assert_eq!(status, 200, "{answer}");
    let session = session.expect("a session id");
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(rpc(&t.w, &replicas[1].base, &token, Some(&session), initialized).await.0, 202);
    let call = |id: i64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                                "params": {"name": "get_ticket", "arguments": {"ticket_id": format!("{id}")}}})
    };
    let (_, _, first) = rpc(&t.w, &replicas[1].base, &token, Some(&session), call(2)).await;
    assert_eq!(first["result"]["content"][0]["text"], "alpha: ticket 2 is open", "{first}");
    // SIGTERM, as a rolling restart stops it (a SIGKILL would lose up to a second of its meter, charged to no one).
    assert!(replicas[1].process.terminate().expect("gw-1 stops").success());
    let (status, _, after) = rpc(&t.w, &replicas[2].base, &token, Some(&session), call(3)).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["result"]["content"][0]["text"], "alpha: ticket 3 is open", "the session continues on gw-2");

    // The runtime ends the session on gw-2: the MCP server forgets it, so it cannot be used again.
    let ended =
        t.w.http
            .delete(format!("{}/v1/connectors/desk/mcp", replicas[2].base))
            .header("authorization", format!("Bearer {token}"))
            .header("mcp-session-id", &session)
            .send()
            .await
            .expect("the gateway answers");
    assert_eq!(ended.status(), 204);
    let (status, _, gone) = rpc(&t.w, &replicas[2].base, &token, Some(&session), call(5)).await;
    assert_eq!((status, reason(&gone)), (404, "unknown_session"), "the MCP server ended it: {gone}");

    // The run ends on gw-0; gw-2 hears of it in a peer report and refuses its token from then on.
    t.runtime.release_held();
    assert_eq!(run.await.expect("the run"), 200);
    converge("gw-2 to refuse the ended run's token", || async {
        let (status, _, answer) = rpc(&t.w, &replicas[2].base, &token, Some(&session), call(4)).await;
        (status == 401 && reason(&answer) == "invalid_run_token").then_some(())
    })
    .await;
    // The two calls were charged once each, by the replicas that served them (a run at 1, two calls at 2).
    t.w.wallet_at(&t.a, 95).await;
}

#[tokio::test]
async fn the_connector_gateway_fails_closed_when_audit_the_mcp_server_or_openbao_cannot_be_had() {
    let t = ToolWorld::start("gw-mcp-closed").await;
    let gw = t.gateway("gw", &["--usage-buffer", "2"]).await;
    let (token, run) = open_run(&t.w, &gw.base, &t.a_key, &t.runtime).await;
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "cmp-test", "version": "1"}}});
    let (status, session, answer) = rpc(&t.w, &gw.base, &token, None, initialize.clone()).await;
    assert_eq!(status, 200, "{answer}");
    let session = session.expect("a session id");
    let call = |id: i64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                                "params": {"name": "get_ticket", "arguments": {"ticket_id": format!("{id}")}}})
    };

    // The usage sink breaks (its file becomes a directory): once the buffer of 2 is full, calls are refused.
    converge("the initialize record delivered", || async { gw.usage.exists().then_some(()) }).await;
    std::fs::remove_file(&gw.usage).expect("the usage file");
    std::fs::create_dir(&gw.usage).expect("a directory in its place");
    let mut answers = Vec::new();
    for id in 2..9 {
        let (_, _, answer) = rpc(&t.w, &gw.base, &token, Some(&session), call(id)).await;
        answers.push(answer);
    }
    let refused = answers.iter().filter(|a| reason(a) == "audit_unavailable").count();
    let served = answers.iter().filter(|a| a["result"]["content"][0]["text"].is_string()).count();
    assert!(refused >= 3 && served <= 4, "at most the buffer and the batch in flight are served: {answers:?}");
    assert!(answers.iter().all(|a| reason(a) == "audit_unavailable" || a["result"].is_object()), "{answers:?}");
    // The sink comes back: the records drain and calls are made again.
    std::fs::remove_dir(&gw.usage).expect("the directory");
    converge("a call once the audit records drained", || async {
        let (_, _, answer) = rpc(&t.w, &gw.base, &token, Some(&session), call(20)).await;
        answer["result"]["content"][0]["text"].is_string().then_some(())
    })
    .await;

    // A replica that has not read the credential yet (any replica takes any run's token).
    let fresh = t.gateway("gw-fresh", &[]).await;
    // The MCP server goes away: a clear error, nothing charged.
    let ToolWorld { w, parts, runtime, a, b, a_key, .. } = t;
    let ConnectorParts { bao, operator, desk, .. } = parts;
    drop(desk);
    let (_, _, down) = rpc(&w, &gw.base, &token, Some(&session), call(30)).await;
    assert_eq!(reason(&down), "upstream_error", "{down}");
    // OpenBao goes away: a replica that has not read the credential yet cannot call, and says why.
    drop(bao);
    let (status, _, answer) = rpc(&w, &fresh.base, &token, None, initialize.clone()).await;
    assert_eq!((status, reason(&answer)), (200, "credential_unavailable"), "{answer}");
    assert!(answer.to_string().contains("connectors/"), "names where it looked: {answer}");
    runtime.release_held();
    assert_eq!(run.await.expect("the run"), 200);
    // Charged: the run (1) and each call that was served (2 each); nothing for the refused or failed ones.
    let expected = 100 - 1 - 2 * (served as i64 + 1);
    w.wallet_at(&a, expected).await;

    // The buyer points a binding at another tenant's secret while no operator refuses it in status: the Instance
    // still says Ready, and the gateway (whose role reads every tenant's secrets) refuses it on the call itself.
    drop(operator);
    let (token, run) = open_run(&w, &gw.base, &a_key, &runtime).await;
    let theft = json!({"connectors": [{"name": "desk", "type": "tickets", "vaultPath": format!("connectors/{b}/support/desk"),
                                       "url": "http://localhost:1/mcp", "allowedTools": ["get_ticket"]}]});
    w.patch_instance(&a, "bot", theft).await;
    let refused = converge("beta's credential refused to alpha's binding", || async {
        let (_, _, answer) = rpc(&w, &gw.base, &token, None, initialize.clone()).await;
        (reason(&answer) == "credential_outside_tenant").then_some(answer)
    })
    .await;
    assert!(refused.to_string().contains(&format!("connectors/{a}/support/")), "names the allowed prefix: {refused}");
    let status = w.instances(&a).get("bot").await.expect("bot").status.expect("status");
    let ready = cmp_crds::conditions::find(&status.conditions, cmp_crds::conditions::READY).expect("Ready");
    assert_eq!(ready.status, "True", "the stale status the gateway did not trust");
    runtime.release_held();
    assert_eq!(run.await.expect("the run"), 200);
}
