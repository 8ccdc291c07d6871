//! The built-in binding `knowledge` ([`crate::knowledge::BINDING`]): an MCP
//! server the gateway serves itself, with one tool, `search_knowledge`, that
//! searches the run's Instance's knowledge base. The run's token decides the
//! Instance and so the collection; the tool takes a query and a limit and
//! nothing else, so no argument can name another collection.
//!
//! It passes the connector gateway's steps as any binding does (run token,
//! runnable, audit slot, credits at the plan's `creditsPerToolCall`), and
//! keeps no session: any replica answers any message.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cmp_crds::Instance;
use serde_json::{Value, json};

use super::call::json_answer;
use super::jsonrpc::{self, Message, Reason, RpcError};
use super::{Audit, Connectors, Incoming, MAX_MESSAGE_BYTES, routing_headers_match};
use crate::knowledge::{Knowledge, SEARCH_TOOL};
use crate::state::Gateway;
use crate::usage::ToolOutcome;

/// The most passages one search returns.
pub const MAX_PASSAGES: i64 = 10;
/// Passages returned when the call does not say.
const DEFAULT_PASSAGES: i64 = 3;
/// The longest query taken, in characters.
const MAX_QUERY_CHARS: usize = 2000;
/// How long a search's credits stay held.
const SEARCH_HOLD: Duration = Duration::from_secs(60);

/// The tool, as `tools/list` gives it.
fn tool() -> Value {
    json!({
        "name": SEARCH_TOOL,
        "description": "Searches this agent's knowledge base (the documents its buyer uploaded) and returns the passages nearest the query, best first.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS, "description": "What to look for"},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_PASSAGES, "description": "How many passages (default 3)"},
            },
            "required": ["query"],
            "additionalProperties": false,
        },
    })
}

/// Serves one message to the built-in binding, past the run token (step 1 of [`super`]).
pub(super) async fn serve(
    gateway: &Arc<Gateway>,
    connectors: &Connectors,
    audit: &mut Audit,
    instance: &Instance,
    headers: &HeaderMap,
    incoming: Incoming,
) -> Result<Response, RpcError> {
    let null = Value::Null;
    let target =
        gateway.runnable(instance).map_err(|refusal| RpcError::new(&null, Reason::NotRunnable, refusal.message))?;
    audit.target = Some(target.clone());
    let (knowledge, _) = gateway
        .knowledge_of(&target)
        .map_err(|refusal| RpcError::new(&null, Reason::UnknownBinding, refusal.message))?;
    let body = match incoming {
        Incoming::Message(body) => body,
        // No session is kept, so there is none to end.
        Incoming::EndSession => return Ok(StatusCode::NO_CONTENT.into_response()),
    };
    let body = axum::body::to_bytes(body, MAX_MESSAGE_BYTES).await.map_err(|_| {
        RpcError::new(&null, Reason::TooLarge, format!("the message is over {MAX_MESSAGE_BYTES} bytes"))
    })?;
    let message = jsonrpc::parse(&body)?;
    routing_headers_match(headers, &message)?;
    let (id, method, params) = match message {
        Message::Notification { method } => {
            audit.method = method;
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        Message::Request { id, method, params } => (id, method, params),
    };
    audit.method = method.clone();
    let permit = gateway.usage.reserve().ok_or_else(|| {
        RpcError::new(&id, Reason::AuditUnavailable, "the audit log cannot take another record: try again later")
    })?;
    if let Some(answer) = crate::outward::handshake(&id, &method, params.as_ref(), "cmp-knowledge", &target.version) {
        permit.send(audit.record(gateway, &connectors.replica, ToolOutcome::Served, None, 0));
        return Ok(json_answer(&answer));
    }
    match method.as_str() {
        "tools/list" => {
            permit.send(audit.record(gateway, &connectors.replica, ToolOutcome::Served, None, 0));
            Ok(json_answer(&jsonrpc::result(&id, json!({"resultType": "complete", "tools": [tool()]}))))
        }
        "tools/call" => {
            let (query, limit) = arguments(&id, params.as_ref(), audit)?;
            let price = target.plan.credits_per_tool_call;
            let wallet = (target.wallet.0.as_str(), target.wallet.1.as_str());
            let held = gateway
                .credits
                .hold(wallet, price, SEARCH_HOLD)
                .await
                .map_err(|refusal| RpcError::new(&id, Reason::InsufficientCredits, refusal.message))?;
            audit.bytes_sent = query.len() as u64;
            let found = search(&knowledge, &target, query, limit).await;
            let (outcome, charged) =
                if found.is_ok() { (ToolOutcome::Success, price) } else { (ToolOutcome::UpstreamError, 0) };
            gateway.credits.settle(held, charged);
            let answer = found.map_err(|why| RpcError::new(&id, Reason::UpstreamError, why))?;
            let answer = jsonrpc::result(&id, answer);
            audit.bytes_received = answer.to_string().len() as u64;
            permit.send(audit.record(gateway, &connectors.replica, outcome, None, charged));
            Ok(json_answer(&answer))
        }
        other => Err(RpcError::new(
            &id,
            Reason::MethodNotFound,
            format!(
                "{other} is not served: the knowledge binding answers initialize, server/discover, ping, tools/list and tools/call"
            ),
        )),
    }
}

/// The call's query and limit; any other tool or argument is refused.
fn arguments(id: &Value, params: Option<&Value>, audit: &mut Audit) -> Result<(String, i64), RpcError> {
    let invalid = |why: String| RpcError::new(id, Reason::InvalidParams, why);
    let name = params.and_then(|p| p.get("name")).and_then(Value::as_str).unwrap_or_default();
    audit.tool = Some(name.to_string());
    if name != SEARCH_TOOL {
        return Err(RpcError::new(
            id,
            Reason::ToolNotAllowed,
            format!("tool {name:?} is not served: the knowledge binding has one tool, {SEARCH_TOOL}"),
        ));
    }
    let empty = serde_json::Map::new();
    let arguments = match params.and_then(|p| p.get("arguments")) {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => return Err(invalid("arguments must be an object: {\"query\": \"...\", \"limit\": 3}".into())),
    };
    if let Some(other) = arguments.keys().find(|k| !matches!(k.as_str(), "query" | "limit")) {
        return Err(invalid(format!(
            "{SEARCH_TOOL} takes query and limit only, not {other:?}: the run decides which knowledge base is searched"
        )));
    }
    let query = arguments.get("query").and_then(Value::as_str).map(str::trim).unwrap_or_default();
    if query.is_empty() || query.chars().count() > MAX_QUERY_CHARS {
        return Err(invalid(format!("query must be text of 1 to {MAX_QUERY_CHARS} characters")));
    }
    let limit = match arguments.get("limit") {
        None | Some(Value::Null) => DEFAULT_PASSAGES,
        Some(value) => value
            .as_i64()
            .filter(|n| (1..=MAX_PASSAGES).contains(n))
            .ok_or_else(|| invalid(format!("limit must be a whole number from 1 to {MAX_PASSAGES}")))?,
    };
    Ok((query.to_string(), limit))
}

/// The passages nearest `query`, as a tool result: the texts (best first) and, structured, each with its source.
async fn search(
    knowledge: &Knowledge,
    target: &crate::authorize::RunTarget,
    query: String,
    limit: i64,
) -> Result<Value, String> {
    let vector = knowledge.embed(vec![query]).await?.pop().unwrap_or_default();
    let passages = knowledge
        .store
        .search(&crate::knowledge::collection(target), &vector, knowledge.embedder.model(), limit)
        .await
        .map_err(|error| {
            tracing::error!(%error, instance = %target.instance, "a knowledge search failed");
            match error {
                cmp_core::knowledge::StoreError::ModelMismatch { .. } => error.to_string(),
                _ => "the knowledge store is unavailable; try again shortly".to_string(),
            }
        })?;
    let text = if passages.is_empty() {
        "The knowledge base holds nothing for this query.".to_string()
    } else {
        passages.iter().map(|p| p.text.as_str()).collect::<Vec<_>>().join("\n\n")
    };
    Ok(json!({
        "content": [{"type": "text", "text": text}],
        "structuredContent": {"passages": passages},
        "isError": false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit() -> Audit {
        Audit {
            started: std::time::Instant::now(),
            claims: None,
            target: None,
            binding: "knowledge".into(),
            method: "tools/call".into(),
            tool: None,
            bytes_sent: 0,
            bytes_received: 0,
            recorded: false,
        }
    }

    #[test]
    fn the_search_takes_a_query_and_a_limit_and_nothing_that_names_a_collection() {
        let call = |params: Value| arguments(&json!(1), Some(&params), &mut audit()).map_err(|e| (e.reason, e.message));
        assert_eq!(call(json!({"name": SEARCH_TOOL, "arguments": {"query": " refunds "}})), Ok(("refunds".into(), 3)));
        assert_eq!(call(json!({"name": SEARCH_TOOL, "arguments": {"query": "x", "limit": 10}})), Ok(("x".into(), 10)));
        for (params, reason) in [
            (json!({"name": "drop_collection", "arguments": {}}), Reason::ToolNotAllowed),
            (
                json!({"name": SEARCH_TOOL, "arguments": {"query": "x", "collection": "cmp_i_other"}}),
                Reason::InvalidParams,
            ),
            (json!({"name": SEARCH_TOOL, "arguments": {"query": "x", "instance": "beta"}}), Reason::InvalidParams),
            (json!({"name": SEARCH_TOOL, "arguments": {"query": ""}}), Reason::InvalidParams),
            (json!({"name": SEARCH_TOOL, "arguments": {"query": "x", "limit": 11}}), Reason::InvalidParams),
            (json!({"name": SEARCH_TOOL, "arguments": {"query": "x", "limit": "3"}}), Reason::InvalidParams),
            (json!({"name": SEARCH_TOOL, "arguments": "x"}), Reason::InvalidParams),
        ] {
            assert_eq!(call(params.clone()).map_err(|e| e.0), Err(reason), "{params}");
        }
        let refused = call(json!({"name": SEARCH_TOOL, "arguments": {"query": "x", "collection": "c"}}));
        assert!(refused.is_err_and(|(_, m)| m.contains("\"collection\"")), "the refusal names the argument");
    }
}
