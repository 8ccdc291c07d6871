//! The JSON-RPC 2.0 messages of MCP's Streamable HTTP transport, as the
//! connector gateway takes them: one message per POST (the 2025-06-18
//! revision removed batches), a request with an `id` or a notification
//! without, and errors that say what was wrong.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// One message a client sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request: it wants an answer.
    Request {
        /// Its id.
        id: Value,
        /// The method.
        method: String,
        /// The params, if any.
        params: Option<Value>,
    },
    /// A notification: no answer.
    Notification {
        /// The method.
        method: String,
    },
}

/// Why the connector gateway refuses a message: each a JSON-RPC error code,
/// an HTTP status and a stable name (for audit records and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not JSON.
    ParseError,
    /// Not a JSON-RPC 2.0 request or notification (a batch, a response, a request sent as a notification).
    InvalidRequest,
    /// A method the connector gateway does not serve.
    MethodNotFound,
    /// Params that are not what the method takes.
    InvalidParams,
    /// The body is over the limit.
    TooLarge,
    /// No run token, or not a current one.
    Unauthorized,
    /// The session id is not one this run opened on this binding.
    UnknownSession,
    /// The Instance has no such binding, or it cannot be called (no URL).
    UnknownBinding,
    /// The binding names no MCP server (`url`).
    NoUrl,
    /// The binding's `vaultPath` lies outside its own tenant's prefix.
    OutsideTenant,
    /// The tool is not allowed for the binding.
    ToolNotAllowed,
    /// The binding's destination is not allowed (allow-list, internal address).
    DestinationRefused,
    /// The credential could not be read.
    CredentialUnavailable,
    /// The MCP server failed or answered something unusable.
    UpstreamError,
    /// The MCP server took longer than the binding's timeout.
    UpstreamTimeout,
    /// The Wallet cannot pay for the call.
    InsufficientCredits,
    /// The Instance may not run now (suspended, not ready).
    NotRunnable,
    /// The audit record could not be buffered: the call is not made.
    AuditUnavailable,
    /// The gateway's caches have not synced.
    NotReady,
    /// A refusal of the run API (an Instance's own MCP endpoint), with its code.
    Run(crate::refusal::Code),
}

impl Reason {
    /// The JSON-RPC error code.
    pub fn code(self) -> i64 {
        match self {
            Reason::ParseError => -32700,
            Reason::InvalidRequest | Reason::TooLarge => -32600,
            Reason::MethodNotFound => -32601,
            Reason::InvalidParams => -32602,
            Reason::Unauthorized => -32001,
            Reason::UnknownSession => -32002,
            Reason::UnknownBinding => -32003,
            Reason::ToolNotAllowed => -32004,
            Reason::DestinationRefused => -32005,
            Reason::CredentialUnavailable => -32006,
            Reason::UpstreamError => -32007,
            Reason::UpstreamTimeout => -32008,
            Reason::InsufficientCredits => -32009,
            Reason::NotRunnable => -32010,
            Reason::AuditUnavailable => -32011,
            Reason::NotReady => -32012,
            Reason::NoUrl => -32013,
            Reason::OutsideTenant => -32014,
            Reason::Run(_) => -32020,
        }
    }

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ParseError => "parse_error",
            Reason::InvalidRequest => "invalid_request",
            Reason::MethodNotFound => "method_not_found",
            Reason::InvalidParams => "invalid_params",
            Reason::TooLarge => "body_too_large",
            Reason::Unauthorized => "invalid_run_token",
            Reason::UnknownSession => "unknown_session",
            Reason::UnknownBinding => "unknown_binding",
            Reason::ToolNotAllowed => "tool_not_allowed",
            Reason::DestinationRefused => "destination_refused",
            Reason::CredentialUnavailable => "credential_unavailable",
            Reason::UpstreamError => "upstream_error",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::InsufficientCredits => "insufficient_credits",
            Reason::NotRunnable => "not_runnable",
            Reason::AuditUnavailable => "audit_unavailable",
            Reason::NotReady => "gateway_not_ready",
            Reason::NoUrl => "binding_without_url",
            Reason::OutsideTenant => "credential_outside_tenant",
            Reason::Run(code) => code.as_str(),
        }
    }

    /// The HTTP status the error is answered with. A refusal of the message
    /// itself is a 4xx; a request the gateway took but could not carry out
    /// is a JSON-RPC error in a 200, as an MCP server answers.
    pub fn status(self) -> StatusCode {
        match self {
            Reason::ParseError | Reason::InvalidRequest | Reason::InvalidParams => StatusCode::BAD_REQUEST,
            Reason::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reason::Unauthorized => StatusCode::UNAUTHORIZED,
            Reason::UnknownSession | Reason::UnknownBinding => StatusCode::NOT_FOUND,
            Reason::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Reason::Run(code) if code.status() == 401 => StatusCode::UNAUTHORIZED,
            _ => StatusCode::OK,
        }
    }

    /// Whether the refusal is a security event (someone tried what a rule forbids).
    pub fn is_security_event(self) -> bool {
        matches!(
            self,
            Reason::Unauthorized
                | Reason::UnknownSession
                | Reason::UnknownBinding
                | Reason::ToolNotAllowed
                | Reason::DestinationRefused
                | Reason::OutsideTenant
        )
    }
}

/// A JSON-RPC error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The request's id (null when it is unknown).
    pub id: Value,
    /// Why.
    pub reason: Reason,
    /// What was wrong and what to do.
    pub message: String,
}

impl RpcError {
    /// An error of `reason` answering `id`.
    pub fn new(id: &Value, reason: Reason, message: impl Into<String>) -> Self {
        Self { id: id.clone(), reason, message: message.into() }
    }

    /// The error as a JSON-RPC response body.
    pub fn body(&self) -> Value {
        json!({
            "jsonrpc": "2.0", "id": self.id,
            "error": {"code": self.reason.code(), "message": self.message, "data": {"reason": self.reason.as_str()}},
        })
    }
}

impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        (self.reason.status(), axum::Json(self.body())).into_response()
    }
}

/// A JSON-RPC result answering `id`.
pub fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// The methods that must be requests (a client sending one as a notification gets an error).
const REQUESTS: &[&str] = &["initialize", "ping", "tools/list", "tools/call"];

/// Parses one message. Batches, responses, bad ids and requests sent as notifications are refused.
pub fn parse(body: &[u8]) -> Result<Message, RpcError> {
    let null = Value::Null;
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| RpcError::new(&null, Reason::ParseError, format!("the body is not JSON: {e}")))?;
    let object: &Map<String, Value> = match &value {
        Value::Object(object) => object,
        Value::Array(_) => {
            return Err(RpcError::new(
                &null,
                Reason::InvalidRequest,
                "batches are not taken: send one JSON-RPC message per request (MCP 2025-06-18 removed batching)",
            ));
        }
        _ => return Err(RpcError::new(&null, Reason::InvalidRequest, "the body must be a JSON-RPC 2.0 object")),
    };
    let id = object.get("id").cloned();
    let answer_id = id.clone().unwrap_or(Value::Null);
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(RpcError::new(&answer_id, Reason::InvalidRequest, "\"jsonrpc\" must be \"2.0\""));
    }
    let Some(method) = object.get("method").and_then(Value::as_str) else {
        let what = if object.contains_key("result") || object.contains_key("error") {
            "a response: the connector gateway sends clients no requests, so it takes no responses"
        } else {
            "a message with no \"method\""
        };
        return Err(RpcError::new(&answer_id, Reason::InvalidRequest, format!("the body is {what}")));
    };
    let params = object.get("params").cloned();
    if params.as_ref().is_some_and(|p| !p.is_object() && !p.is_array()) {
        return Err(RpcError::new(&answer_id, Reason::InvalidParams, "\"params\" must be an object"));
    }
    match id {
        None if REQUESTS.contains(&method) => Err(RpcError::new(
            &Value::Null,
            Reason::InvalidRequest,
            format!("{method} is a request: it needs an \"id\" (a notification gets no answer)"),
        )),
        None => Ok(Message::Notification { method: method.to_string() }),
        Some(id @ (Value::String(_) | Value::Number(_))) => {
            Ok(Message::Request { id, method: method.to_string(), params })
        }
        Some(_) => Err(RpcError::new(&Value::Null, Reason::InvalidRequest, "\"id\" must be a string or a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_notifications_are_told_apart() {
        let request = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#).expect("ok");
        assert_eq!(
            request,
            Message::Request { id: json!(1), method: "tools/call".into(), params: Some(json!({"name": "x"})) }
        );
        let notification = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).expect("ok");
        assert_eq!(notification, Message::Notification { method: "notifications/initialized".into() });
    }

    #[test]
    fn bad_messages_get_the_error_that_names_what_is_wrong() {
        let cases: [(&[u8], Reason, &str); 8] = [
            (b"{not json", Reason::ParseError, "not JSON"),
            (br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, Reason::InvalidRequest, "batches"),
            (br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, Reason::InvalidRequest, "2.0"),
            (br#"{"jsonrpc":"2.0","id":1,"result":{}}"#, Reason::InvalidRequest, "a response"),
            (br#"{"jsonrpc":"2.0","method":"tools/call","params":{}}"#, Reason::InvalidRequest, "needs an \"id\""),
            (br#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#, Reason::InvalidRequest, "string or a number"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#, Reason::InvalidParams, "object"),
            (br#""just a string""#, Reason::InvalidRequest, "object"),
        ];
        for (body, reason, says) in cases {
            let error = parse(body).expect_err("refused");
            assert_eq!(error.reason, reason, "{}", String::from_utf8_lossy(body));
            assert!(error.message.contains(says), "{}: {}", String::from_utf8_lossy(body), error.message);
            assert!(error.reason.status().is_client_error());
        }
    }

    #[test]
    fn an_error_body_carries_the_code_and_its_stable_reason() {
        let body = RpcError::new(&json!(7), Reason::ToolNotAllowed, "no").body();
        assert_eq!(body["id"], 7);
        assert_eq!(body["error"]["code"], -32004);
        assert_eq!(body["error"]["data"]["reason"], "tool_not_allowed");
    }
}
