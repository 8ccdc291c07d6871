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

pub mod credentials;
pub mod jsonrpc;
pub mod session;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cmp_core::egress::Egress;
use cmp_crds::Instance;
use cmp_crds::connectors::ToolRule;
use cmp_crds::instance::ConnectorBinding;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use serde_json::Value;

use self::credentials::Credentials;
use self::jsonrpc::{Message, Reason, RpcError};
use self::session::{SessionClaims, Sessions};
use self::upstream::{Failure, Outgoing, PROTOCOL_HEADER, SESSION_HEADER};

/// The 2026-07-28 header that repeats a message's method.
const METHOD_HEADER: &str = "mcp-method";
/// The 2026-07-28 header that repeats a message's target (a tool's name).
const NAME_HEADER: &str = "mcp-name";
use crate::authorize::RunTarget;
use crate::run_tokens::{RunClaims, RunTokens};
use crate::state::Gateway;
use crate::usage::{Record, ToolCall, ToolOutcome};

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
    let binding = instance
        .spec
        .connectors
        .iter()
        .find(|b| b.name == audit.binding)
        .cloned()
        .ok_or_else(|| unknown_binding(&instance, &audit.binding))?;
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
fn routing_headers_match(headers: &HeaderMap, message: &Message) -> Result<(), RpcError> {
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

fn json_answer(value: &Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

/// Where a binding's messages go, and with what credential.
struct Destination {
    client: reqwest::Client,
    url: reqwest::Url,
    header: String,
    value: String,
}

/// A message to one binding, past steps 1-3.
struct Call<'a> {
    gateway: &'a Arc<Gateway>,
    connectors: &'a Connectors,
    binding: &'a ConnectorBinding,
    target: &'a RunTarget,
    rule: &'a ToolRule,
    headers: &'a HeaderMap,
    session: Option<&'a SessionClaims>,
}

impl Call<'_> {
    /// The client's MCP headers to pass on: the protocol revision and the routing headers.
    fn passed(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .filter(|(name, _)| {
                let name = name.as_str();
                name == PROTOCOL_HEADER
                    || name == METHOD_HEADER
                    || name == NAME_HEADER
                    || name.starts_with("mcp-param-")
            })
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
            .collect()
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.binding.timeout_seconds).unwrap_or(30).max(1))
    }

    fn upstream_session(&self) -> Option<&str> {
        self.session.and_then(|s| s.upstream.as_deref())
    }

    /// Steps 7 and 8: the destination and the credential, then the exchange.
    async fn send(
        &self,
        id: Option<&Value>,
        body: bytes::Bytes,
        audit: &mut Audit,
    ) -> Result<upstream::Answer, RpcError> {
        let answer_id = id.cloned().unwrap_or(Value::Null);
        let Destination { client, url, header, value } = self.destination(&answer_id).await?;
        audit.bytes_sent = body.len() as u64;
        let sent = upstream::send(Outgoing {
            client: &client,
            url,
            body,
            credential: (&header, &value),
            session: self.upstream_session(),
            passed: self.passed(),
            id,
            timeout: self.timeout(),
        })
        .await;
        match sent {
            Ok(answer) => {
                audit.bytes_received = answer.bytes;
                Ok(answer)
            }
            Err(Failure::Timeout(seconds)) => Err(RpcError::new(
                &answer_id,
                Reason::UpstreamTimeout,
                format!("the MCP server of binding {} did not answer within {seconds} s", self.binding.name),
            )),
            Err(Failure::SessionGone) => {
                Err(RpcError::new(&answer_id, Reason::UnknownSession, Failure::SessionGone.to_string()))
            }
            Err(Failure::Failed(why)) => Err(RpcError::new(
                &answer_id,
                Reason::UpstreamError,
                format!("the MCP server of binding {} failed: {why}", self.binding.name),
            )),
        }
    }

    /// Step 7: the client pinned to the binding's checked addresses, its URL, and the credential's header and value.
    async fn destination(&self, answer_id: &Value) -> Result<Destination, RpcError> {
        let url = self.binding.url.as_deref().ok_or_else(|| {
            RpcError::new(
                answer_id,
                Reason::NoUrl,
                format!("the binding {} has no url: its Instance must name its MCP server", self.binding.name),
            )
        })?;
        let internal = self.gateway.internal_endpoints(self.target);
        let (client, url) = self
            .connectors
            .egress
            .client(url, &internal)
            .await
            .map_err(|refusal| RpcError::new(answer_id, Reason::DestinationRefused, refusal.to_string()))?;
        let (header, value) = self
            .connectors
            .credentials
            .presented(self.binding)
            .await
            .map_err(|message| RpcError::new(answer_id, Reason::CredentialUnavailable, message))?;
        Ok(Destination { client, url, header, value })
    }

    /// Ends the session with the MCP server (its DELETE), audited; a server that keeps no sessions, or has
    /// already forgotten this one, is fine.
    async fn end(&self, audit: &mut Audit) -> Result<Response, RpcError> {
        let null = Value::Null;
        let Some(upstream) = self.upstream_session() else {
            let why = if self.session.is_some() { "" } else { " (no Mcp-Session-Id was sent)" };
            tracing::debug!(binding = %self.binding.name, "no MCP server session to end{why}");
            return Ok(StatusCode::NO_CONTENT.into_response());
        };
        let permit = self.reserve_audit(&null)?;
        let Destination { client, url, header, value } = self.destination(&null).await?;
        let ended = client
            .delete(url)
            .header(header.as_str(), value.as_str())
            .header(SESSION_HEADER, upstream)
            .timeout(self.timeout())
            .send()
            .await
            .map_err(|e| {
                let why = e.to_string().replace(&value, "[credential]");
                RpcError::new(&null, Reason::UpstreamError, format!("ending the session with the MCP server: {why}"))
            })?;
        let status = ended.status();
        if !(status.is_success()
            || status == reqwest::StatusCode::NOT_FOUND
            || status == reqwest::StatusCode::METHOD_NOT_ALLOWED)
        {
            return Err(RpcError::new(
                &null,
                Reason::UpstreamError,
                format!("the MCP server answered {status} to the session's end"),
            ));
        }
        permit.send(audit.record(self.gateway, &self.connectors.replica, ToolOutcome::Served, None, 0));
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    /// A message that is not a tool call still gets an audit record; without a slot for it, it is not sent.
    fn reserve_audit(&self, id: &Value) -> Result<tokio::sync::mpsc::OwnedPermit<Record>, RpcError> {
        self.gateway.usage.reserve().ok_or_else(|| {
            RpcError::new(
                id,
                Reason::AuditUnavailable,
                "the audit log cannot take another record (its sink is down): the call was not made; try again later",
            )
        })
    }

    async fn notify(&self, method: &str, body: bytes::Bytes, audit: &mut Audit) -> Result<Response, RpcError> {
        if matches!(method, "notifications/initialized" | "notifications/cancelled") && self.session.is_some() {
            let permit = self.reserve_audit(&Value::Null)?;
            self.send(None, body, audit).await?;
            permit.send(audit.record(self.gateway, &self.connectors.replica, ToolOutcome::Served, None, 0));
        }
        Ok(StatusCode::ACCEPTED.into_response())
    }

    async fn initialize(&self, id: &Value, body: bytes::Bytes, audit: &mut Audit) -> Result<Response, RpcError> {
        let permit = self.reserve_audit(id)?;
        let answer = self.send(Some(id), body, audit).await?;
        let claims = SessionClaims {
            run: audit.claims.as_ref().map(|c| c.run.clone()).unwrap_or_default(),
            binding: self.binding.name.clone(),
            upstream: answer.session.clone(),
        };
        permit.send(audit.record(self.gateway, &self.connectors.replica, ToolOutcome::Served, None, 0));
        let mut response = json_answer(&answer.message.unwrap_or_default());
        if let Ok(value) = HeaderValue::from_str(&self.connectors.sessions.sign(&claims)) {
            response.headers_mut().insert(SESSION_HEADER, value);
        }
        Ok(response)
    }

    async fn discover(&self, id: &Value, body: bytes::Bytes, audit: &mut Audit) -> Result<Response, RpcError> {
        let permit = self.reserve_audit(id)?;
        let answer = self.send(Some(id), body, audit).await?;
        permit.send(audit.record(self.gateway, &self.connectors.replica, ToolOutcome::Served, None, 0));
        Ok(json_answer(&answer.message.unwrap_or_default()))
    }

    async fn list(&self, id: &Value, body: bytes::Bytes, audit: &mut Audit) -> Result<Response, RpcError> {
        let permit = self.reserve_audit(id)?;
        let answer = self.send(Some(id), body, audit).await?;
        let mut message = answer.message.unwrap_or_default();
        if let Some(tools) = message.pointer_mut("/result/tools").and_then(Value::as_array_mut) {
            tools.retain(|tool| tool.get("name").and_then(Value::as_str).is_some_and(|name| self.rule.allows(name)));
        }
        permit.send(audit.record(self.gateway, &self.connectors.replica, ToolOutcome::Served, None, 0));
        Ok(json_answer(&message))
    }

    async fn tool(
        &self,
        id: &Value,
        params: Option<Value>,
        body: bytes::Bytes,
        audit: &mut Audit,
    ) -> Result<Response, RpcError> {
        let name = params.as_ref().and_then(|p| p.get("name")).and_then(Value::as_str).ok_or_else(|| {
            RpcError::new(id, Reason::InvalidParams, "tools/call needs params.name, the tool to call")
        })?;
        audit.tool = Some(name.to_string());
        if !self.rule.allows(name) {
            let allowed: Vec<&str> = self.rule.allowed.iter().map(String::as_str).collect();
            return Err(RpcError::new(
                id,
                Reason::ToolNotAllowed,
                format!(
                    "tool {name:?} is not allowed on binding {}: the allowed tools are the Instance's allowedTools within the Offering's tools for type {} ({})",
                    self.binding.name,
                    self.binding.type_,
                    if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
                ),
            ));
        }
        let permit = self.reserve_audit(id)?;
        let price = self.target.plan.credits_per_tool_call;
        let held = if price > 0 {
            let wallet = (self.target.wallet.0.as_str(), self.target.wallet.1.as_str());
            Some(
                self.gateway
                    .credits
                    .hold(wallet, price, self.timeout())
                    .await
                    .map_err(|refusal| RpcError::new(id, Reason::InsufficientCredits, refusal.message))?,
            )
        } else {
            None
        };
        let sent = self.send(Some(id), body, audit).await;
        let (outcome, answer) = match sent {
            Ok(answer) => {
                let message = answer.message.unwrap_or_default();
                let failed = message.get("error").is_some()
                    || message.pointer("/result/isError").and_then(Value::as_bool) == Some(true);
                (if failed { ToolOutcome::ToolError } else { ToolOutcome::Success }, Ok(message))
            }
            Err(error) => {
                let outcome = if error.reason == Reason::UpstreamTimeout {
                    ToolOutcome::Timeout
                } else {
                    ToolOutcome::UpstreamError
                };
                (outcome, Err(error))
            }
        };
        let charged = if outcome == ToolOutcome::Success { price } else { 0 };
        if let Some(held) = held {
            self.gateway.credits.settle(held, charged);
        }
        self.gateway.metrics.charged(charged);
        let refusal = answer.as_ref().err().map(|e| e.reason);
        permit.send(audit.record(self.gateway, &self.connectors.replica, outcome, refusal, charged));
        answer.map(|message| json_answer(&message))
    }
}
