//! The connector gateway: the only path from a runtime to a tool credential.
//!
//! `POST /v1/connectors/{binding}/mcp` speaks MCP Streamable HTTP to the
//! runtime and to the binding's MCP server. A message passes these steps,
//! and the first that fails answers with a JSON-RPC error naming its rule:
//!
//! 1. the run token ([`crate::run_tokens`]): a current run's, naming the
//!    Instance; its binding of that name (another tenant's binding is not
//!    on this Instance, so it is unknown here);
//! 2. the Instance may run now, and its plan's price per tool call;
//! 3. the message ([`jsonrpc`]) and the session id, which must be one this
//!    run opened on this binding ([`session`]);
//! 4. for `tools/call`, the tool is allowed
//!    ([`cmp_crds::connectors::allowed_tools`]);
//! 5. a slot for the audit record (no slot, no call: audit fails closed);
//! 6. the credits of a priced call, held from the Wallet's lease;
//! 7. the destination, after DNS resolution ([`cmp_core::egress`]), and
//!    the credential from OpenBao ([`credentials`]);
//! 8. the call; `tools/list` answers only the allowed tools.
//!
//! Every message ends in one audit record, a CloudEvent of type
//! `dev.gsv.cmp.tool.called`. A call that fails or times out is free; the
//! replica that serves a call charges it, from its own lease.

mod call;
pub mod credentials;
pub mod jsonrpc;
mod knowledge;
pub mod probe;
pub mod session;
pub mod upstream;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use cmp_core::egress::Egress;
use cmp_crds::Instance;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use serde_json::Value;

use self::call::{Call, json_answer};
use self::credentials::Credentials;
use self::jsonrpc::{Message, Reason, RpcError};
use self::session::Sessions;
use self::upstream::SESSION_HEADER;
use crate::authorize::RunTarget;
use crate::run_tokens::{RunClaims, RunTokens};
use crate::state::Gateway;
use crate::usage::{Record, ToolCall, ToolOutcome};

/// The 2026-07-28 header that repeats a message's method.
const METHOD_HEADER: &str = "mcp-method";
/// The 2026-07-28 header that repeats a message's target (a tool's name).
const NAME_HEADER: &str = "mcp-name";

/// The route of a binding's MCP endpoint.
pub const ROUTE: &str = "/v1/connectors/{binding}/mcp";
/// The largest message taken from a runtime.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// What the connector gateway needs beside the gateway's state.
pub struct Connectors {
    /// Run tokens: minted by the relay, checked here.
    pub tokens: Arc<RunTokens>,
    /// Session ids.
    pub sessions: Sessions,
    /// Where bindings may connect.
    pub egress: Egress,
    /// The tenants' credentials.
    pub credentials: Credentials,
    /// This replica (named in every audit record).
    pub replica: String,
}

/// One message's context, for its audit record.
struct Audit {
    started: Instant,
    claims: Option<RunClaims>,
    target: Option<RunTarget>,
    binding: String,
    method: String,
    tool: Option<String>,
    bytes_sent: u64,
    bytes_received: u64,
    recorded: bool,
}

impl Audit {
    fn record(
        &mut self,
        gateway: &Gateway,
        replica: &str,
        outcome: ToolOutcome,
        refusal: Option<Reason>,
        credits: i64,
    ) -> Record {
        let (organization, project, instance) = match &self.target {
            Some(t) => (t.organization.clone(), t.project.clone(), t.instance.clone()),
            None => self.claims.as_ref().map_or_else(Default::default, |c| {
                let org = cmp_crds::names::organization_of_control_namespace(&c.ns).unwrap_or(&c.ns).to_string();
                (org, String::new(), c.instance.clone())
            }),
        };
        self.recorded = true;
        gateway.metrics.tool_call(match outcome {
            ToolOutcome::Success => "success",
            ToolOutcome::ToolError => "tool_error",
            ToolOutcome::UpstreamError => "upstream_error",
            ToolOutcome::Timeout => "timeout",
            ToolOutcome::Refused => "refused",
            ToolOutcome::Served => "served",
        });
        Record::Tool(ToolCall {
            id: format!("call_{}", hex::encode(rand::random::<[u8; 12]>())),
            run: self.claims.as_ref().map(|c| c.run.clone()).unwrap_or_default(),
            organization,
            project,
            instance,
            binding: self.binding.clone(),
            method: self.method.clone(),
            tool: self.tool.clone(),
            outcome,
            refusal: refusal.map(|r| r.as_str().to_string()),
            credits,
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            replica: replica.to_string(),
            at: Timestamp::now(),
        })
    }
}

/// What a runtime sent to a binding's MCP endpoint.
pub enum Incoming {
    /// `POST`: one JSON-RPC message.
    Message(Body),
    /// `DELETE`: the end of the session its `Mcp-Session-Id` names.
    EndSession,
}

/// Serves one message (or a session's end) to `binding`'s MCP endpoint.
pub async fn serve(gateway: Arc<Gateway>, binding: String, headers: HeaderMap, incoming: Incoming) -> Response {
    let Some(connectors) = gateway.connectors.clone() else {
        return RpcError::new(
            &Value::Null,
            Reason::MethodNotFound,
            "the connector gateway is off: no --run-token-secret",
        )
        .into_response();
    };
    let mut audit = Audit {
        started: Instant::now(),
        claims: None,
        target: None,
        binding,
        method: String::new(),
        tool: None,
        bytes_sent: 0,
        bytes_received: 0,
        recorded: false,
    };
    match handle(&gateway, &connectors, &mut audit, &headers, incoming).await {
        Ok(answered) => answered,
        Err(error) => {
            if error.reason.is_security_event() {
                gateway.metrics.connector_security_refusal(error.reason.as_str());
                tracing::warn!(security_event = error.reason.as_str(), run = audit.claims.as_ref().map(|c| c.run.as_str()).unwrap_or(""), binding = %audit.binding, method = %audit.method, tool = audit.tool.as_deref().unwrap_or(""), reason = %error.message, "a connector call was refused");
            } else {
                tracing::info!(code = error.reason.as_str(), binding = %audit.binding, method = %audit.method, reason = %error.message, "a connector call was not carried out");
            }
            let outcome = match error.reason {
                Reason::UpstreamTimeout => ToolOutcome::Timeout,
                Reason::UpstreamError | Reason::CredentialUnavailable => ToolOutcome::UpstreamError,
                _ => ToolOutcome::Refused,
            };
            if !audit.recorded {
                gateway.usage.queue(audit.record(&gateway, &connectors.replica, outcome, Some(error.reason), 0));
            }
            error.into_response()
        }
    }
}

/// Steps 1-8; the answer, or the first refusal.
async fn handle(
    gateway: &Arc<Gateway>,
    connectors: &Connectors,
    audit: &mut Audit,
    headers: &HeaderMap,
    incoming: Incoming,
) -> Result<Response, RpcError> {
    let null = Value::Null;
    if gateway.ready().is_err() {
        return Err(RpcError::new(&null, Reason::NotReady, "the gateway is starting; try again shortly"));
    }
    // 1. The run token and the binding.
    let claims = run_token(connectors, headers)?;
    audit.claims = Some(claims.clone());
    let instance = gateway
        .directory
        .instances
        .get(&ObjectRef::new(&claims.instance).within(&claims.ns))
        .ok_or_else(|| RpcError::new(&null, Reason::NotRunnable, "the run's Instance no longer exists"))?;
    if audit.binding == crate::knowledge::BINDING {
        return knowledge::serve(gateway, connectors, audit, &instance, headers, incoming).await;
    }
    let binding = instance
        .spec
        .connectors
        .iter()
        .find(|b| b.name == audit.binding)
        .cloned()
        .ok_or_else(|| unknown_binding(&instance, &audit.binding))?;
    let organization = cmp_crds::names::organization_of_control_namespace(&claims.ns).unwrap_or_default();
    if !cmp_crds::connectors::inside_tenant(organization, &instance.spec.project, &binding) {
        return Err(RpcError::new(
            &null,
            Reason::OutsideTenant,
            format!(
                "the binding {} names {}, outside this Instance's {}: refused",
                binding.name,
                binding.vault_path,
                cmp_crds::names::connector_prefix(organization, &instance.spec.project)
            ),
        ));
    }
    // 2. The Instance may run, at its plan's price.
    let target =
        gateway.runnable(&instance).map_err(|refusal| RpcError::new(&null, Reason::NotRunnable, refusal.message))?;
    audit.target = Some(target.clone());
    // 3. The session, then the message.
    let session = match headers.get(SESSION_HEADER) {
        None => None,
        Some(value) => {
            Some(connectors.sessions.verify(value.to_str().unwrap_or_default(), &claims.run, &binding.name)?)
        }
    };
    let offering = gateway.directory.offering(&instance.spec.offering);
    let rule = cmp_crds::connectors::allowed_tools(offering.as_ref().map(|o| &o.spec), &binding);
    let call = Call {
        gateway,
        connectors,
        binding: &binding,
        target: &target,
        rule: &rule,
        headers,
        session: session.as_ref(),
    };
    let body = match incoming {
        Incoming::Message(body) => body,
        Incoming::EndSession => {
            audit.method = "session/end (DELETE)".into();
            return call.end(audit).await;
        }
    };
    let body = axum::body::to_bytes(body, MAX_MESSAGE_BYTES).await.map_err(|_| {
        RpcError::new(&null, Reason::TooLarge, format!("the message is over {MAX_MESSAGE_BYTES} bytes"))
    })?;
    let message = jsonrpc::parse(&body)?;
    routing_headers_match(headers, &message)?;
    match message {
        Message::Notification { method } => {
            audit.method = method.clone();
            call.notify(&method, body, audit).await
        }
        Message::Request { id, method, params } => {
            audit.method = method.clone();
            match method.as_str() {
                "ping" => Ok(json_answer(&jsonrpc::result(&id, serde_json::json!({})))),
                "initialize" => call.initialize(&id, body, audit).await,
                "tools/list" => call.list(&id, body, audit).await,
                "server/discover" => call.discover(&id, body, audit).await,
                "tools/call" => call.tool(&id, params, body, audit).await,
                other => Err(RpcError::new(
                    &id,
                    Reason::MethodNotFound,
                    format!(
                        "{other} is not served: the connector gateway relays initialize, server/discover, ping, tools/list and tools/call"
                    ),
                )),
            }
        }
    }
}

/// The 2026-07-28 routing headers, when sent, must say what the body says:
/// the MCP server may route by them, and the rules here read the body.
pub(crate) fn routing_headers_match(headers: &HeaderMap, message: &Message) -> Result<(), RpcError> {
    let (id, method, name) = match message {
        Message::Request { id, method, params } => {
            (id.clone(), method.as_str(), params.as_ref().and_then(|p| p.get("name")).and_then(Value::as_str))
        }
        Message::Notification { method } => (Value::Null, method.as_str(), None),
    };
    let header = |n: &str| headers.get(n).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if header(METHOD_HEADER).is_some_and(|h| h != method) {
        return Err(RpcError::new(
            &id,
            Reason::InvalidRequest,
            format!("the Mcp-Method header does not match the body's method {method}"),
        ));
    }
    if header(NAME_HEADER).is_some_and(|h| Some(h) != name) {
        return Err(RpcError::new(
            &id,
            Reason::InvalidRequest,
            "the Mcp-Name header does not match the body's params.name",
        ));
    }
    Ok(())
}

fn run_token(connectors: &Connectors, headers: &HeaderMap) -> Result<RunClaims, RpcError> {
    let null = Value::Null;
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .ok_or_else(|| {
            RpcError::new(&null, Reason::Unauthorized, "no run token: send Authorization: Bearer <the run's token>")
        })?;
    connectors
        .tokens
        .verify(token.trim(), Timestamp::now())
        .map_err(|refusal| RpcError::new(&null, Reason::Unauthorized, refusal.to_string()))
}

fn unknown_binding(instance: &Instance, name: &str) -> RpcError {
    let names: Vec<&str> = instance.spec.connectors.iter().map(|b| b.name.as_str()).collect();
    RpcError::new(
        &Value::Null,
        Reason::UnknownBinding,
        format!("this run's Instance has no connector binding {name:?} (it has: {})", names.join(", ")),
    )
}
