//! The gateway's routes, behind one middleware layer ([`crate::middleware`]:
//! every answer carries the request's id, and a refusal is counted and logged
//! the same way on every route); an admitted run is relayed and settled
//! ([`crate::relay`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use k8s_openapi::jiff::Timestamp;

use crate::admission::Route;
use crate::authorize::PathTarget;
use crate::knowledge::documents::{self, Operation};
pub use crate::middleware::REQUEST_ID;
use crate::middleware::{Refused, RequestId};
use crate::refusal::{Code, Refusal};
use crate::state::Gateway;
use crate::widget::SESSION_HEADER;

/// The credits a run was charged (for a stream: what it costs if it completes).
pub const CREDITS_CHARGED: &str = "x-credits-charged";
/// The key's rate limit, per minute.
pub const RATE_LIMIT: &str = "x-ratelimit-limit";
/// Runs the key has left now.
pub const RATE_REMAINING: &str = "x-ratelimit-remaining";

/// The run routes.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/runs", post(run_by_key))
        .route("/v1/instances/{organization}/{instance}/runs", post(run_on_path))
        .route("/v1/widget/session:init", post(init_widget_session))
        .route("/v1/widget/runs", post(run_widget))
        .route("/v1/mcp", post(mcp_by_key))
        .route("/v1/instances/{organization}/{instance}/mcp", post(mcp_on_path))
        .route("/v1/knowledge/documents", get(list_documents))
        .route("/v1/knowledge/documents/{id}", put(put_document).delete(remove_document))
        .route("/v1/instances/{organization}/{instance}/knowledge/documents", get(list_documents))
        .route(
            "/v1/instances/{organization}/{instance}/knowledge/documents/{id}",
            put(put_document).delete(remove_document),
        )
        .route("/v1/me", get(me))
        .merge(crate::buyer::router())
        .merge(crate::console::router())
        .route(crate::connectors::ROUTE, post(connector_message).get(connector_stream).delete(connector_session_end))
        .fallback(|| async {
            Refusal::new(Code::NotFound, "no such route: POST /v1/runs or /v1/instances/{organization}/{instance}/runs")
        })
        .layer(axum::middleware::from_fn_with_state(gateway.clone(), crate::middleware::layer))
        .with_state(gateway)
}

async fn run_by_key(
    State(gateway): State<Arc<Gateway>>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run(gateway, id, Route::Run(None), headers, body).await
}

async fn run_on_path(
    State(gateway): State<Arc<Gateway>>,
    Extension(id): Extension<RequestId>,
    Path((organization, instance)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run(gateway, id, Route::Run(Some(PathTarget { organization, instance })), headers, body).await
}

async fn mcp_by_key(
    State(gateway): State<Arc<Gateway>>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    crate::outward::serve(gateway, id, None, headers, body).await
}

async fn mcp_on_path(
    State(gateway): State<Arc<Gateway>>,
    Extension(id): Extension<RequestId>,
    Path((organization, instance)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    crate::outward::serve(gateway, id, Some(PathTarget { organization, instance }), headers, body).await
}

/// The Instance a knowledge route's path names (`/v1/instances/{organization}/{instance}/...`), or none (the key's).
fn named_instance(params: &Option<Path<HashMap<String, String>>>) -> Option<PathTarget> {
    let params = params.as_ref()?;
    Some(PathTarget { organization: params.get("organization")?.clone(), instance: params.get("instance")?.clone() })
}

/// The document id a knowledge route's path names.
fn document_id(params: &Option<Path<HashMap<String, String>>>) -> String {
    params.as_ref().and_then(|p| p.get("id").cloned()).unwrap_or_default()
}

async fn list_documents(
    State(gateway): State<Arc<Gateway>>,
    Extension(id): Extension<RequestId>,
    params: Option<Path<HashMap<String, String>>>,
    headers: HeaderMap,
) -> Response {
    documents::serve(gateway, id, named_instance(&params), Operation::List, headers, Body::empty()).await
}

async fn put_document(
    State(gateway): State<Arc<Gateway>>,
    Extension(id): Extension<RequestId>,
    params: Option<Path<HashMap<String, String>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let operation = Operation::Put(document_id(&params));
    documents::serve(gateway, id, named_instance(&params), operation, headers, body).await
}

async fn remove_document(
    State(gateway): State<Arc<Gateway>>,
    Extension(id): Extension<RequestId>,
    params: Option<Path<HashMap<String, String>>>,
    headers: HeaderMap,
) -> Response {
    let operation = Operation::Remove(document_id(&params));
    documents::serve(gateway, id, named_instance(&params), operation, headers, Body::empty()).await
}

async fn connector_message(
    State(gateway): State<Arc<Gateway>>,
    Path(binding): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    crate::connectors::serve(gateway, binding, headers, crate::connectors::Incoming::Message(body)).await
}

/// The connector gateway sends runtimes no messages of its own: no stream to open (MCP allows 405 here).
async fn connector_stream() -> Response {
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, [(axum::http::header::ALLOW, "POST, DELETE")]).into_response()
}

/// A session's end, forwarded to the MCP server.
async fn connector_session_end(
    State(gateway): State<Arc<Gateway>>,
    Path(binding): Path<String>,
    headers: HeaderMap,
) -> Response {
    crate::connectors::serve(gateway, binding, headers, crate::connectors::Incoming::EndSession).await
}

async fn run_widget(
    State(gateway): State<Arc<Gateway>>,
    Extension(id): Extension<RequestId>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let client = gateway.client_address(&headers, peer);
    run(gateway, id, Route::Widget(client), headers, body).await
}

async fn init_widget_session(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let client = gateway.client_address(&headers, peer);
    match widget_session(&gateway, client, body).await {
        Ok(answer) => answer.into_response(),
        Err(refusal) => refused(refusal),
    }
}

async fn me(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    crate::me::serve(gateway, headers).await.unwrap_or_else(refused)
}

/// A refusal's answer, marked for the middleware layer to count and log.
pub fn refused(refusal: Refusal) -> Response {
    let (code, reason) = (refusal.code.as_str(), refusal.message.clone());
    Refused::mark(refusal.into_response(), code, reason)
}

fn header(response: &mut Response, name: &'static str, value: impl Into<HeaderValue>) {
    response.headers_mut().insert(HeaderName::from_static(name), value.into());
}

/// A run on any route: admitted ([`crate::admission`]), then relayed and
/// settled; or refused (counted and logged by the middleware layer).
async fn run(gateway: Arc<Gateway>, id: RequestId, route: Route, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    match gateway.admit(route, &headers, body).await {
        Ok(admitted) => {
            let limit = admitted.rate;
            let mut response = crate::relay::relay(gateway.clone(), admitted, id.0, started).await;
            header(&mut response, RATE_LIMIT, limit.limit);
            header(&mut response, RATE_REMAINING, limit.remaining);
            response
        }
        Err(refusal) => refused(refusal),
    }
}

/// Starts a demo session of the Offering the body names.
async fn widget_session(
    gateway: &Gateway,
    client: IpAddr,
    body: Body,
) -> Result<axum::Json<serde_json::Value>, Refusal> {
    gateway.ready()?;
    let sessions = gateway.widget.as_ref().ok_or_else(|| Refusal::new(Code::NotFound, "widget sessions are off"))?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Init {
        offering: String,
    }
    let init: Init = crate::refusal::small_json_body(body, r#"{"offering": "<name>"}"#).await?;
    let (_, demo) = gateway.demo(&init.offering)?;
    gateway.rate_limit(&format!("demo:{}:{client}", init.offering), demo.requests_per_minute)?;
    let (token, ends) = sessions.issue(&init.offering, Timestamp::now());
    Ok(axum::Json(serde_json::json!({
        "token": token, "expiresAt": ends.to_string(), "runsPerSession": demo.runs_per_session,
        "header": SESSION_HEADER,
    })))
}
