//! Every Instance as an MCP server: a buyer reaches their agent from any MCP
//! client (an IDE, a desktop assistant, an agent framework) with their API
//! key or OIDC token, at `POST /v1/instances/{organization}/{instance}/mcp`
//! (or `POST /v1/mcp`, where the key names the Instance).
//!
//! - `tools/list` gives the agent as one tool, named after its Offering, with
//!   the Offering's display name and description, and input
//!   `{input, session_id}`.
//! - `tools/call` is a run: the same admission steps as `/v1/runs`
//!   ([`crate::admission`]: authentication, tenant, runnable, rate, credits),
//!   the same relay, settlement and usage event, and the same refusal codes,
//!   in the JSON-RPC error's `data.reason`.
//!
//! The server is stateless (no session id): `initialize` (the handshake of
//! 2025-03-26 to 2025-11-25), `server/discover` (the 2026-07-28 revision,
//! whose requests carry their own envelope) and `ping` are answered here,
//! and any replica serves any message. Results carry the 2026-07-28 fields
//! (`resultType`, and `cacheScope` private to the caller's credential with
//! `ttlMs` where the revision asks for them); earlier clients ignore them.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::admission::Route;
use crate::authorize::{PathTarget, RunTarget};
use crate::connectors::jsonrpc::{self, Message, Reason, RpcError};
use crate::forward::RunRequest;
use crate::middleware::{Refused, RequestId};
use crate::refusal::{Code, Refusal};
use crate::state::Gateway;

/// The revisions of the initialize handshake answered; the first is given to a client that asks for another.
const PROTOCOLS: &[&str] = &["2025-06-18", "2025-11-25", "2025-03-26"];
/// The revisions `server/discover` offers.
const MODERN_PROTOCOLS: &[&str] = &["2026-07-28"];
/// How long a client may keep the discovery and the tool list (the Offering's tool changes seldom).
const CACHE_TTL_MS: u64 = 60_000;
/// The largest message taken.
const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// A refusal of the run API as a JSON-RPC error, its code in `data.reason` and first in the message (which is all
/// many clients show).
fn refused(id: &Value, refusal: Refusal) -> RpcError {
    RpcError::new(id, Reason::Run(refusal.code), format!("{}: {}", refusal.code.as_str(), refusal.message))
}

/// Serves one MCP message to the Instance `path` names (or the key's, when `None`).
/// A `tools/call` is a run whose id is the request's.
pub async fn serve(
    gateway: Arc<Gateway>,
    id: RequestId,
    path: Option<PathTarget>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(&gateway, id, path, &headers, body).await {
        Ok(answer) => answer,
        Err(error) => match error.reason {
            // A refusal of the run API is counted as one; any other (a malformed message) is only logged.
            Reason::Run(code) => {
                let reason = error.message.clone();
                Refused::mark(error.into_response(), code.as_str(), reason)
            }
            _ => {
                tracing::info!(code = error.reason.as_str(), reason = %error.message, "an MCP message to an Instance was refused");
                error.into_response()
            }
        },
    }
}

async fn handle(
    gateway: &Arc<Gateway>,
    request: RequestId,
    path: Option<PathTarget>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RpcError> {
    let null = Value::Null;
    gateway.ready().map_err(|r| refused(&null, r))?;
    // Who calls, and which Instance: before anything else, so a stranger learns nothing of the Instance.
    let identified = gateway.identify(Route::Run(path), headers).await.map_err(|r| refused(&null, r))?;
    let tenant = gateway.tenant(identified).map_err(|r| refused(&null, r))?;
    let body = axum::body::to_bytes(body, MAX_MESSAGE_BYTES).await.map_err(|_| {
        RpcError::new(&null, Reason::TooLarge, format!("the message is over {MAX_MESSAGE_BYTES} bytes"))
    })?;
    let (id, method, params) = match jsonrpc::parse(&body)? {
        Message::Notification { .. } => return Ok(StatusCode::ACCEPTED.into_response()),
        Message::Request { id, method, params } => (id, method, params),
    };
    let target = gateway.runnable(&tenant.instance).map_err(|r| refused(&id, r))?;
    match method.as_str() {
        "initialize" | "server/discover" | "ping" => {
            let name = format!("cmp-{}", target.offering);
            Ok(answer(&handshake(&id, &method, params.as_ref(), &name, &target.version).unwrap_or_default()))
        }
        "tools/list" => Ok(answer(&jsonrpc::result(
            &id,
            json!({"resultType": "complete", "tools": [tool(gateway, &target)], "cacheScope": "private",
                   "ttlMs": CACHE_TTL_MS}),
        ))),
        "tools/call" => {
            let run = run_request(&id, &target, params.as_ref())?;
            let rate = gateway.rate(&tenant, &target).map_err(|r| refused(&id, r))?;
            let (runtime_key, held) = gateway.pay(&target).await.map_err(|r| refused(&id, r))?;
            let admitted = crate::admission::Admitted { target, request: run, runtime_key, held, rate };
            let run_id = request.0;
            let relayed = crate::relay::relay(gateway.clone(), admitted, run_id.clone(), Instant::now()).await;
            Ok(answer(&jsonrpc::result(&id, tool_result(relayed, &run_id).await)))
        }
        other => Err(RpcError::new(
            &id,
            Reason::MethodNotFound,
            format!(
                "{other} is not served: an Instance's MCP endpoint answers initialize, server/discover, ping, tools/list and tools/call"
            ),
        )),
    }
}

/// The answer to a handshake message (`initialize`, `server/discover`, `ping`) of an MCP server CMP serves itself,
/// named `name` at `version`, offering tools; `None` for any other method.
pub(crate) fn handshake(id: &Value, method: &str, params: Option<&Value>, name: &str, version: &str) -> Option<Value> {
    let result = match method {
        "initialize" => {
            let asked = params.and_then(|p| p.get("protocolVersion")).and_then(Value::as_str);
            let protocol = asked.filter(|v| PROTOCOLS.contains(v)).unwrap_or(PROTOCOLS[0]);
            json!({
                "protocolVersion": protocol,
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": {"name": name, "version": version},
            })
        }
        "server/discover" => json!({
            "resultType": "complete",
            "supportedVersions": MODERN_PROTOCOLS,
            "capabilities": {"tools": {"listChanged": false}},
            "cacheScope": "private",
            "ttlMs": CACHE_TTL_MS,
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": name, "version": version}},
        }),
        "ping" => json!({"resultType": "complete"}),
        _ => return None,
    };
    Some(jsonrpc::result(id, result))
}

fn answer(value: &Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

/// The agent as a tool, from its Offering.
fn tool(gateway: &Gateway, target: &RunTarget) -> Value {
    let offering = gateway.directory.offering(&target.offering);
    let (title, description) = offering
        .map(|o| (o.spec.display_name.clone(), o.spec.description.clone()))
        .unwrap_or_else(|| (target.offering.clone(), String::new()));
    let description = if description.is_empty() { title.clone() } else { format!("{title}: {description}") };
    let mut properties = serde_json::Map::new();
    properties.insert("input".into(), json!({"type": "string", "description": "What to ask the agent."}));
    properties.insert(
        "session_id".into(),
        json!({"type": "string", "description": "The conversation to continue (optional)."}),
    );
    // The inputs the Offering version declares (input and session_id stay the agent's own).
    for (name, schema) in cmp_crds::inputs::schema_properties(&target.inputs) {
        properties.entry(name).or_insert(schema);
    }
    json!({
        "name": target.offering,
        "title": title,
        "description": description,
        "inputSchema": {"type": "object", "properties": properties, "required": ["input"], "additionalProperties": false},
    })
}

/// The run a `tools/call` asks for: the agent's tool, with `{input, session_id}` and nothing else.
fn run_request(id: &Value, target: &RunTarget, params: Option<&Value>) -> Result<RunRequest, RpcError> {
    let invalid = |message: String| RpcError::new(id, Reason::InvalidParams, message);
    let name = params.and_then(|p| p.get("name")).and_then(Value::as_str).unwrap_or_default();
    if name != target.offering {
        return Err(invalid(format!(
            "no tool {name:?}: this Instance's MCP endpoint has one tool, {:?}",
            target.offering
        )));
    }
    let arguments = params.and_then(|p| p.get("arguments")).cloned().unwrap_or_else(|| json!({}));
    #[derive(serde::Deserialize)]
    struct Arguments {
        input: String,
        #[serde(default)]
        session_id: Option<String>,
        /// The declared inputs (anything else is refused when they are placed).
        #[serde(flatten)]
        inputs: serde_json::Map<String, Value>,
    }
    let arguments: Arguments = serde_json::from_value(arguments).map_err(|e| {
        invalid(format!(
            "the arguments must be {{\"input\": <text>, \"session_id\": <text, optional>}} and the agent's declared inputs: {e}"
        ))
    })?;
    let body = json!({"input_value": arguments.input, "session_id": arguments.session_id, "inputs": arguments.inputs});
    let mut request = RunRequest::parse(body.to_string().as_bytes()).map_err(|r| invalid(r.message))?;
    request.place(target).map_err(|r| invalid(format!("{}: {}", r.code.as_str(), r.message)))?;
    Ok(request)
}

/// The relayed run as a tool result: the agent's text answer, or the run's error with `isError`.
async fn tool_result(relayed: Response, run_id: &str) -> Value {
    let status = relayed.status();
    let credits = relayed
        .headers()
        .get(crate::routes::CREDITS_CHARGED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let body = axum::body::to_bytes(relayed.into_body(), 16 << 20).await.unwrap_or_default();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let meta = json!({"cmp/run": run_id, "cmp/credits": if status.is_success() { credits } else { 0 }});
    if !status.is_success() {
        let message = json.pointer("/error/message").and_then(Value::as_str).unwrap_or("the run failed");
        let code = json.pointer("/error/code").and_then(Value::as_str).unwrap_or(Code::RuntimeError.as_str());
        let text = format!("{code}: {message}");
        return json!({"resultType": "complete", "content": [{"type": "text", "text": text}], "isError": true, "_meta": meta});
    }
    let text = answer_text(&json, &body);
    json!({"resultType": "complete", "content": [{"type": "text", "text": text}], "isError": false, "_meta": meta})
}

/// The agent's text answer: lfx's `output.text` (v2), Langflow's first message (v1), else the whole answer.
fn answer_text(json: &Value, body: &[u8]) -> String {
    ["/output/text", "/outputs/0/outputs/0/results/message/text"]
        .iter()
        .find_map(|pointer| json.pointer(pointer).and_then(Value::as_str))
        .map_or_else(|| String::from_utf8_lossy(body).into_owned(), String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_the_flows_text_in_either_api() {
        let v2 = json!({"output": {"reason": "single", "text": "hello"}});
        assert_eq!(answer_text(&v2, b""), "hello");
        let v1 = json!({"outputs": [{"outputs": [{"results": {"message": {"text": "hi"}}}]}]});
        assert_eq!(answer_text(&v1, b""), "hi");
        assert_eq!(answer_text(&json!({"other": 1}), br#"{"other":1}"#), r#"{"other":1}"#);
    }
}
