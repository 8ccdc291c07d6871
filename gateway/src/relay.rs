//! Forwarding an admitted run to its runtime and settling it on every
//! ending. A [`Settlement`] travels with the run (inside the streamed body
//! for a stream) and settles when dropped, so a run is charged exactly once
//! however it ends: completed, failed, timed out, or abandoned by its caller.
//! A run whose flow failed (an error status, or lfx's `"status": "failed"`
//! with 200) is a `runtime_error` and costs nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::admission::Admitted;
use crate::authorize::RunTarget;
use crate::credits::Held;
use crate::forward::{RUN_TOKEN_VARIABLE, upstream};
use crate::refusal::{Code, Refusal};
use crate::routes::CREDITS_CHARGED;
use crate::scrub::TokenScrub;
use crate::state::Gateway;
use crate::usage::{Outcome, SettledRun};

/// How much of a failed runtime answer is quoted in the error.
const QUOTED: usize = 300;

/// Settles a run when dropped, with the outcome it was left at.
struct Settlement {
    gateway: Arc<Gateway>,
    held: Option<Held>,
    target: RunTarget,
    run_id: String,
    started: Instant,
    outcome: Outcome,
    run_token: Option<MintedToken>,
}

/// A run token given to the runtime, ended with its run.
struct MintedToken {
    token: String,
    exp: i64,
}

/// The header a run's token reaches the runtime in (beside the flow's global variable).
pub const RUN_TOKEN_HEADER: &str = "x-cmp-run-token";

/// A token for the connector gateway, when the Instance has bindings and the connector gateway is on.
fn mint_run_token(gateway: &Gateway, target: &RunTarget, run_id: &str, timeout: Duration) -> Option<MintedToken> {
    let connectors = gateway.connectors.as_ref().filter(|_| target.has_connectors)?;
    let deadline = k8s_openapi::jiff::Timestamp::now()
        + k8s_openapi::jiff::SignedDuration::from_secs(i64::try_from(timeout.as_secs()).unwrap_or(60));
    let token = connectors.tokens.mint(run_id, &target.namespace, &target.instance, deadline);
    Some(MintedToken { token, exp: deadline.as_second() })
}

impl Drop for Settlement {
    fn drop(&mut self) {
        if let (Some(minted), Some(connectors)) = (self.run_token.take(), &self.gateway.connectors) {
            connectors.tokens.end(&self.run_id, minted.exp);
        }
        let Some(held) = self.held.take() else { return };
        let price = held.credits();
        let credits = self.outcome.charge(price);
        self.gateway.credits.settle(held, credits);
        let duration = self.started.elapsed();
        let code = match self.outcome {
            Outcome::Success | Outcome::ClientDisconnected | Outcome::Cancelled => "ok",
            Outcome::RuntimeError => Code::RuntimeError.as_str(),
            Outcome::Timeout => Code::RuntimeTimeout.as_str(),
        };
        self.gateway.metrics.run(code);
        self.gateway.metrics.duration(duration.as_secs_f64());
        let t = &self.target;
        let run = SettledRun {
            id: self.run_id.clone(),
            organization: t.organization.clone(),
            project: t.project.clone(),
            instance: t.instance.clone(),
            offering: t.offering.clone(),
            version: t.version.clone(),
            plan: t.plan.id.clone(),
            credits,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            outcome: self.outcome,
            at: k8s_openapi::jiff::Timestamp::now(),
        };
        tracing::debug!(run = %self.run_id, organization = %t.organization, instance = %t.instance, outcome = ?self.outcome, credits, duration_ms = run.duration_ms, "run settled");
        self.gateway.usage.emit(run);
    }
}

/// Forwards the run and answers with the runtime's response (or a 502/504).
pub async fn relay(gateway: Arc<Gateway>, admitted: Admitted, run_id: String, started: Instant) -> Response {
    let Admitted { target, request, runtime_key, held, .. } = admitted;
    let price = held.credits();
    let timeout = Duration::from_secs(u64::try_from(target.plan.timeout_seconds).unwrap_or(1));
    let deadline = tokio::time::Instant::now() + timeout;
    let run_token = mint_run_token(&gateway, &target, &run_id, timeout);
    let (url, body) = upstream(&target, &request, run_token.as_ref().map(|t| t.token.as_str()));
    let mut call = match gateway.urls.get(&url) {
        Some(parsed) => gateway.http.post(parsed),
        None => gateway.http.post(&url),
    }
    .header(header::CONTENT_TYPE, "application/json")
    .body(body);
    if let Some(key) = &runtime_key {
        call = call.header("x-api-key", key);
    }
    if let Some(run_token) = &run_token {
        call = call
            .header(RUN_TOKEN_HEADER, &run_token.token)
            .header(format!("x-langflow-global-var-{RUN_TOKEN_VARIABLE}"), &run_token.token);
    }
    // Full Langflow (v1) takes request globals as headers (their values were checked to hold no control characters).
    if target.api == cmp_crds::offering::RuntimeApi::V1 {
        for (name, value) in &request.globals {
            if let Some(value) = value.as_str().and_then(|v| HeaderValue::from_str(v).ok()) {
                call = call.header(format!("x-langflow-global-var-{name}"), value);
            }
        }
    }
    let mut settlement =
        Settlement { gateway, held: Some(held), target, run_id, started, outcome: Outcome::Cancelled, run_token };
    let answered = match tokio::time::timeout_at(deadline, call.send()).await {
        Err(_) => return timed_out(&mut settlement, timeout),
        Ok(Err(error)) => {
            settlement.outcome = Outcome::RuntimeError;
            return failed(format!("the runtime did not answer: {error}"));
        }
        Ok(Ok(answer)) => answer,
    };
    let status = answered.status();
    if !status.is_success() {
        settlement.outcome = Outcome::RuntimeError;
        let text =
            tokio::time::timeout_at(deadline, answered.text()).await.ok().and_then(Result::ok).unwrap_or_default();
        let quoted: String = text.chars().take(QUOTED).collect();
        return failed(format!("the runtime answered {status}: {quoted}"));
    }
    let content_type = answered.headers().get(header::CONTENT_TYPE).cloned();
    let mut response = if request.stream {
        settlement.outcome = Outcome::ClientDisconnected;
        stream(answered, settlement, deadline).into_response()
    } else {
        match tokio::time::timeout_at(deadline, answered.bytes()).await {
            Err(_) => return timed_out(&mut settlement, timeout),
            Ok(Err(error)) => {
                settlement.outcome = Outcome::RuntimeError;
                return failed(format!("the runtime's answer broke off: {error}"));
            }
            Ok(Ok(bytes)) => {
                if let Some(why) = flow_failure(settlement.target.api, &bytes) {
                    settlement.outcome = Outcome::RuntimeError;
                    return failed(format!("the flow failed in the runtime: {why}"));
                }
                settlement.outcome = Outcome::Success;
                let bytes = match &settlement.run_token {
                    Some(minted) => TokenScrub::whole(&minted.token, bytes),
                    None => bytes,
                };
                drop(settlement);
                Body::from(bytes).into_response()
            }
        }
    };
    *response.status_mut() = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::OK);
    if let Some(content_type) = content_type.and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    }
    response.headers_mut().insert(CREDITS_CHARGED, HeaderValue::from(price));
    response
}

/// lfx's `v2` answer to a sync run whose flow failed: HTTP 200 with `"status": "failed"` and its errors. Such a
/// run is a runtime error, charged nothing, like one the runtime answers with an error status.
fn flow_failure(api: cmp_crds::offering::RuntimeApi, body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        status: Option<String>,
        #[serde(default)]
        errors: Vec<serde_json::Value>,
    }
    if api != cmp_crds::offering::RuntimeApi::V2 {
        return None;
    }
    let answer: Answer = serde_json::from_slice(body).ok()?;
    if answer.status.as_deref() != Some("failed") {
        return None;
    }
    let first = answer.errors.first().and_then(|e| e["error"].as_str()).unwrap_or("no error given");
    Some(first.chars().take(QUOTED).collect())
}

fn failed(message: String) -> Response {
    tracing::warn!(reason = %message, "the runtime failed the run");
    let mut response = Refusal::new(Code::RuntimeError, message).into_response();
    response.headers_mut().insert(CREDITS_CHARGED, HeaderValue::from(0));
    response
}

fn timed_out(settlement: &mut Settlement, timeout: Duration) -> Response {
    settlement.outcome = Outcome::Timeout;
    let mut response = Refusal::new(
        Code::RuntimeTimeout,
        format!("the run took longer than its plan's {} s and was stopped", timeout.as_secs()),
    )
    .into_response();
    response.headers_mut().insert(CREDITS_CHARGED, HeaderValue::from(0));
    response
}

/// The runtime's stream passed through as it arrives (without the run's
/// token), until it ends, breaks or the deadline passes; the settlement rides
/// along and settles at the end (or when the caller goes away and the body is
/// dropped).
fn stream(answered: reqwest::Response, settlement: Settlement, deadline: tokio::time::Instant) -> Body {
    let chunks = answered.bytes_stream();
    let scrub = settlement.run_token.as_ref().map(|minted| TokenScrub::new(&minted.token));
    let state = Some((chunks.boxed(), settlement, scrub));
    Body::from_stream(futures::stream::unfold(state, move |state| async move {
        let (mut chunks, mut settlement, mut scrub) = state?;
        match tokio::time::timeout_at(deadline, chunks.next()).await {
            Ok(Some(Ok(bytes))) => {
                let bytes = match scrub.as_mut() {
                    Some(scrub) => scrub.next_chunk(&bytes),
                    None => bytes,
                };
                Some((Ok::<_, std::io::Error>(bytes), Some((chunks, settlement, scrub))))
            }
            Ok(Some(Err(error))) => {
                tracing::warn!(%error, "the runtime's stream broke off");
                settlement.outcome = Outcome::RuntimeError;
                None
            }
            Ok(None) => {
                settlement.outcome = Outcome::Success;
                // What was held back as a possible beginning of the token was not it: send it, then end.
                let rest = scrub.as_mut().map(TokenScrub::finish).filter(|rest| !rest.is_empty())?;
                Some((Ok(rest), None))
            }
            Err(_) => {
                tracing::warn!("the streamed run passed its plan's timeout and was cut");
                settlement.outcome = Outcome::Timeout;
                None
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_crds::offering::RuntimeApi;

    #[test]
    fn an_lfx_answer_whose_flow_failed_is_a_runtime_error_and_nothing_else_is() {
        let failed = br#"{"status":"failed","output":{"text":null},"errors":[{"error":"Error building Component MCP Tools","code":"EXECUTION_ERROR"}]}"#;
        assert_eq!(flow_failure(RuntimeApi::V2, failed).as_deref(), Some("Error building Component MCP Tools"));
        let completed = br#"{"status":"completed","output":{"text":"hi"},"errors":[]}"#;
        assert_eq!(flow_failure(RuntimeApi::V2, completed), None);
        assert_eq!(flow_failure(RuntimeApi::V1, failed), None, "v1 reports failures with an error status");
        assert_eq!(flow_failure(RuntimeApi::V2, b"not json"), None, "an answer that is not lfx's is passed on");
        assert_eq!(flow_failure(RuntimeApi::V2, br#"{"status":"failed"}"#).as_deref(), Some("no error given"));
    }
}
