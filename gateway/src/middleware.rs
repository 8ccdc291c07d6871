//! The one middleware layer every gateway route is behind. For each request it
//!
//! - mints the request's id (a run's id, on the run routes), puts it in the
//!   request's extensions ([`RequestId`]) and in the answer's `x-request-id`;
//! - runs the handler inside a `request` span carrying the id, the method and
//!   the path, to which admission adds the organization and the Instance;
//! - counts and logs a refusal once, the same way on every route: a handler
//!   marks its refusing answer with [`Refused`], and the layer counts it in
//!   `cmp_gateway_runs_total{code}` (when it refuses a run, an MCP run or a
//!   knowledge request) and logs it with its code and reason.
//!
//! The connector gateway's refusals are audit records and security events
//! of their own ([`crate::connectors`]): they carry the id but are not marked.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::state::Gateway;

/// The header every answer carries the request's id in.
pub const REQUEST_ID: &str = "x-request-id";

/// The id of a request (a run's id on the run routes).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    /// A new id.
    pub fn new() -> Self {
        Self(format!("run_{}", hex::encode(rand::random::<[u8; 12]>())))
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

/// Marks an answer as a refusal, for the layer to count and log.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The refusal's code.
    pub code: &'static str,
    /// Why.
    pub reason: String,
}

impl Refused {
    /// Marks `response` as refused with `code` for `reason`.
    pub fn mark(mut response: Response, code: &'static str, reason: impl Into<String>) -> Response {
        response.extensions_mut().insert(Refused { code, reason: reason.into() });
        response
    }
}

/// The layer itself (`axum::middleware::from_fn_with_state`).
pub async fn layer(State(gateway): State<Arc<Gateway>>, mut request: Request, next: Next) -> Response {
    let id = RequestId::new();
    let span = tracing::info_span!(
        "request",
        id = %id.0,
        method = %request.method(),
        path = request.uri().path(),
        organization = tracing::field::Empty,
        instance = tracing::field::Empty,
    );
    let header = HeaderValue::from_str(&id.0).ok();
    request.extensions_mut().insert(id);
    let mut response = next.run(request).instrument(span.clone()).await;
    if let Some(refused) = response.extensions_mut().remove::<Refused>() {
        gateway.metrics.run(refused.code);
        span.in_scope(|| tracing::info!(code = refused.code, reason = %refused.reason, "refused"));
    }
    if let Some(header) = header {
        response.headers_mut().insert(HeaderName::from_static(REQUEST_ID), header);
    }
    response
}
