//! One message to a binding, past the run token, the binding and the session
//! (steps 4-8 of [`super`]): the tool rule, the audit slot, the credits, the
//! destination and the credential, and the exchange with the MCP server.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cmp_crds::connectors::ToolRule;
use cmp_crds::instance::ConnectorBinding;
use serde_json::Value;

use super::jsonrpc::{Reason, RpcError};
use super::session::SessionClaims;
use super::upstream::{self, Failure, Outgoing, PROTOCOL_HEADER, SESSION_HEADER};
use super::{Audit, Connectors, METHOD_HEADER, NAME_HEADER};
use crate::authorize::RunTarget;
use crate::state::Gateway;
use crate::usage::{Record, ToolOutcome};

pub(super) fn json_answer(value: &Value) -> Response {
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
pub(super) struct Call<'a> {
    pub(super) gateway: &'a Arc<Gateway>,
    pub(super) connectors: &'a Connectors,
    pub(super) binding: &'a ConnectorBinding,
    pub(super) target: &'a RunTarget,
    pub(super) rule: &'a ToolRule,
    pub(super) headers: &'a HeaderMap,
    pub(super) session: Option<&'a SessionClaims>,
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
        let internal = self.gateway.internal_endpoints(Some(&self.target.endpoint));
        let (client, url) = self
            .connectors
            .egress
            .client(url, &internal)
            .await
            .map_err(|refusal| RpcError::new(answer_id, Reason::DestinationRefused, refusal.to_string()))?;
        let (header, value) = self
            .connectors
            .credentials
            .presented(&self.target.organization, &self.target.project, self.binding)
            .await
            .map_err(|message| RpcError::new(answer_id, Reason::CredentialUnavailable, message))?;
        Ok(Destination { client, url, header, value })
    }

    /// Ends the session with the MCP server (its DELETE), audited; a server that keeps no sessions, or has
    /// already forgotten this one, is fine.
    pub(super) async fn end(&self, audit: &mut Audit) -> Result<Response, RpcError> {
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

    pub(super) async fn notify(
        &self,
        method: &str,
        body: bytes::Bytes,
        audit: &mut Audit,
    ) -> Result<Response, RpcError> {
        if matches!(method, "notifications/initialized" | "notifications/cancelled") && self.session.is_some() {
            let permit = self.reserve_audit(&Value::Null)?;
            self.send(None, body, audit).await?;
            permit.send(audit.record(self.gateway, &self.connectors.replica, ToolOutcome::Served, None, 0));
        }
        Ok(StatusCode::ACCEPTED.into_response())
    }

    pub(super) async fn initialize(
        &self,
        id: &Value,
        body: bytes::Bytes,
        audit: &mut Audit,
    ) -> Result<Response, RpcError> {
        let answer = self.served(id, body, audit).await?;
        let claims = SessionClaims {
            run: audit.claims.as_ref().map(|c| c.run.clone()).unwrap_or_default(),
            binding: self.binding.name.clone(),
            upstream: answer.session.clone(),
        };
        let mut response = json_answer(&answer.message.unwrap_or_default());
        if let Ok(value) = HeaderValue::from_str(&self.connectors.sessions.sign(&claims)) {
            response.headers_mut().insert(SESSION_HEADER, value);
        }
        Ok(response)
    }

    pub(super) async fn discover(
        &self,
        id: &Value,
        body: bytes::Bytes,
        audit: &mut Audit,
    ) -> Result<Response, RpcError> {
        let answer = self.served(id, body, audit).await?;
        Ok(json_answer(&answer.message.unwrap_or_default()))
    }

    /// A request that is not a tool call, sent and audited (free).
    async fn served(&self, id: &Value, body: bytes::Bytes, audit: &mut Audit) -> Result<upstream::Answer, RpcError> {
        let permit = self.reserve_audit(id)?;
        let answer = self.send(Some(id), body, audit).await?;
        permit.send(audit.record(self.gateway, &self.connectors.replica, ToolOutcome::Served, None, 0));
        Ok(answer)
    }

    pub(super) async fn list(&self, id: &Value, body: bytes::Bytes, audit: &mut Audit) -> Result<Response, RpcError> {
        let mut message = self.served(id, body, audit).await?.message.unwrap_or_default();
        if let Some(tools) = message.pointer_mut("/result/tools").and_then(Value::as_array_mut) {
            tools.retain(|tool| tool.get("name").and_then(Value::as_str).is_some_and(|name| self.rule.allows(name)));
        }
        Ok(json_answer(&message))
    }

    pub(super) async fn tool(
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
        let refusal = answer.as_ref().err().map(|e| e.reason);
        permit.send(audit.record(self.gateway, &self.connectors.replica, outcome, refusal, charged));
        answer.map(|message| json_answer(&message))
    }
}
