//! The Saleor-facing HTTP routes: the manifest, the app's page, the
//! registration and the order webhooks.
//!
//! A delivery is checked before anything in it is acted on, in this order:
//! its size (413), its `Saleor-Api-Url` against the allow-list (401), its
//! `Saleor-Signature` over the raw bytes (401; 503 when the store's keys
//! cannot be fetched or do not list the signing key yet, as during a key
//! rotation), its `Saleor-Event` against the route (400), its body (400),
//! and the event its signed body names against the route (400). Every
//! refusal is a JSON `{"error": {"code", "message"}}` and a log line, and
//! touches no object. A body that does not say what [`order_state`] needs
//! gets 503 (Saleor keeps it). Then the [`Provisioner`] acts as the order's
//! state allows: 200 when done (or when the state allows nothing, with why),
//! 503 when Kubernetes cannot be reached or the operator is late, so that
//! Saleor delivers again. Saleor treats any 30x or 40x as final, so nothing
//! that may succeed later is answered with one.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cmp_crds::names::PROVISIONER_MANAGER;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::jwks::{JwksCache, VerifyError};
use crate::manifest::{self, APP_PAGE_PATH, MANIFEST_PATH, REGISTER_PATH, WEBHOOKS_PATH};
use crate::metrics::Metrics;
use crate::order_state::{self, Decision, Undecidable};
use crate::payload::{OrderEvent, PayloadError, parse_delivery};
use crate::provisioner::{Outcome, ProvisionError, Provisioner};
use crate::signature::{self, Signature, SignatureError};
use crate::store_api::{self, StoreApiError};
use crate::webhook_sync::{self, SyncGate};

/// How the Saleor routes behave.
#[derive(Debug, Clone)]
pub struct SaleorSettings {
    /// The stores' API URLs (exactly as Saleor sends `Saleor-Api-Url`) whose deliveries are accepted.
    pub allowed_api_urls: Vec<String>,
    /// The legacy HMAC-SHA256 shared secret, when configured.
    pub hmac_secret: Option<Vec<u8>>,
    /// The largest body accepted.
    pub max_body_bytes: usize,
    /// The URL Saleor reaches this webhook at (for the manifest).
    pub public_url: String,
    /// Where app-token Secrets are kept.
    pub token_namespace: String,
}

/// What the routes share.
pub struct SaleorApp {
    /// How the routes behave.
    pub settings: SaleorSettings,
    /// The stores' keys.
    pub jwks: JwksCache,
    /// Carries orders out.
    pub provisioner: Provisioner,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// For the app-token Secrets.
    pub client: kube::Client,
    /// For the stores' GraphQL APIs.
    pub http: reqwest::Client,
    /// When each store's webhooks were last brought up to date.
    pub webhook_sync: SyncGate,
}

/// A refusal: its status, stable code and message.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({"error": {"code": self.code, "message": self.message}}))).into_response()
    }
}

/// The Saleor routes.
pub fn router(app: Arc<SaleorApp>) -> Router {
    Router::new()
        .route(MANIFEST_PATH, get(manifest_route))
        .route(APP_PAGE_PATH, get(app_page))
        .route(REGISTER_PATH, post(register))
        .route(&format!("{WEBHOOKS_PATH}/{{event}}"), post(delivery))
        .with_state(app)
}

async fn manifest_route(State(app): State<Arc<SaleorApp>>) -> Response {
    axum::Json(manifest::manifest(&app.settings.public_url)).into_response()
}

/// The page Saleor's dashboard shows for the app (the manifest's `appUrl`).
async fn app_page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("app_page.html"))
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Reads the body, refusing one over the limit with 413.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Refusal> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let too_large = std::error::Error::source(&error)
            .is_some_and(|s| s.downcast_ref::<http_body_util::LengthLimitError>().is_some());
        if too_large {
            Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("the body is over {limit} bytes"))
        } else {
            Refusal::new(StatusCode::BAD_REQUEST, "body_unreadable", format!("the body could not be read: {error}"))
        }
    })
}

/// The store's API URL, if it is on the allow-list.
fn allowed_api_url<'h>(app: &SaleorApp, headers: &'h HeaderMap) -> Result<&'h str, Refusal> {
    let api_url = header(headers, "saleor-api-url").ok_or_else(|| {
        Refusal::new(StatusCode::UNAUTHORIZED, "api_url_missing", "the Saleor-Api-Url header is missing")
    })?;
    if !app.settings.allowed_api_urls.iter().any(|allowed| allowed == api_url) {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "api_url_not_allowed",
            format!("Saleor-Api-Url {api_url:?} is not on the webhook's allow-list (--saleor-api-url)"),
        ));
    }
    Ok(api_url)
}

async fn verify(app: &SaleorApp, api_url: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
    let invalid =
        |e: signature::SignatureError| Refusal::new(StatusCode::UNAUTHORIZED, "invalid_signature", e.to_string());
    match signature::parse(header(headers, "saleor-signature")).map_err(invalid)? {
        Signature::Jws { header, encoded_header, signature } => {
            app.jwks.verify(api_url, &header, &encoded_header, &signature, body).await.map_err(|e| match e {
                VerifyError::Signature(SignatureError::UnknownKid(kid)) => Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "signing_key_unknown",
                    format!(
                        "the store's JWKS does not list the signing key {kid:?} yet (a key rotation under way); it is fetched again at most every --jwks-min-refetch-seconds, and Saleor delivers again"
                    ),
                ),
                VerifyError::Signature(e) => invalid(e),
                VerifyError::Jwks(e) => Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "jwks_unavailable",
                    format!("the store's signing keys cannot be fetched now: {e}"),
                ),
            })
        }
        Signature::Hmac(tag) => {
            signature::verify_hmac(&tag, body, app.settings.hmac_secret.as_deref()).map_err(invalid)
        }
    }
}

async fn delivery(
    State(app): State<Arc<SaleorApp>>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let event = OrderEvent::ALL.into_iter().find(|e| e.route_segment() == segment);
    let event_name = event.map_or("unknown", |e| e.header_value());
    let domain = header(&headers, "saleor-domain").unwrap_or("").to_string();
    let result = handle(&app, event, &headers, body).await;
    let code = match &result {
        Ok(_) => "ok",
        Err(refusal) => refusal.code,
    };
    app.metrics.delivery(event_name, code);
    match result {
        Ok(response) => response,
        Err(refusal) => {
            if refusal.status.is_server_error() {
                tracing::error!(event = event_name, saleor_domain = %domain, status = refusal.status.as_u16(), code = refusal.code, message = %refusal.message, "delivery not done; Saleor will retry");
            } else {
                tracing::warn!(event = event_name, saleor_domain = %domain, status = refusal.status.as_u16(), code = refusal.code, message = %refusal.message, "delivery refused");
            }
            refusal.into_response()
        }
    }
}

async fn handle(
    app: &Arc<SaleorApp>,
    event: Option<OrderEvent>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let event = event.ok_or_else(|| {
        Refusal::new(StatusCode::NOT_FOUND, "unknown_event", "no webhook route for this event: see the manifest")
    })?;
    let body = read_body(body, app.settings.max_body_bytes).await?;
    let api_url = allowed_api_url(app, headers)?;
    verify(app, api_url, headers, &body).await?;
    match header(headers, "saleor-event").map(OrderEvent::from_header) {
        Some(Some(named)) if named == event => {}
        Some(Some(named)) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "event_mismatch",
                format!("Saleor-Event {} was delivered to the {} route", named.header_value(), event.header_value()),
            ));
        }
        Some(None) => {
            let named = header(headers, "saleor-event").unwrap_or_default();
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "unknown_event",
                format!("Saleor-Event {named:?} is not an event this app handles"),
            ));
        }
        None => {
            return Err(Refusal::new(StatusCode::BAD_REQUEST, "unknown_event", "the Saleor-Event header is missing"));
        }
    }
    let delivery = parse_delivery(event, &body).map_err(|e| {
        let code = match e {
            PayloadError::MissingOrderId => "missing_order_id",
            _ => "malformed_payload",
        };
        Refusal::new(StatusCode::BAD_REQUEST, code, e.to_string())
    })?;
    let decision = order_state::decide(event, &delivery).map_err(|e| match e {
        Undecidable::EventMismatch { .. } => Refusal::new(StatusCode::BAD_REQUEST, "event_mismatch", e.to_string()),
        Undecidable::StateUnknown(_) => {
            app.metrics.state_unknown(event.header_value());
            if app.webhook_sync.try_start(api_url) {
                tokio::spawn(sync_store_webhooks(app.clone(), api_url.to_string()));
            } else {
                app.metrics.webhook_sync("skipped_recent");
            }
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "order_state_unknown", e.to_string())
        }
    })?;
    let order = &delivery.order;
    let provisioner = &app.provisioner;
    let outcome = match decision {
        Decision::Check => provisioner.check(api_url, order).await,
        Decision::Provision => provisioner.provision(api_url, order).await,
        Decision::Withdraw(why) => provisioner.withdraw(api_url, order, why).await,
        Decision::RefundLines(refunds) => provisioner.refund_lines(api_url, order, &refunds).await,
        Decision::Nothing(why) => Ok(Outcome { nothing_done: Some(why), ..Outcome::default() }),
    }
    .map_err(|e| match e {
        ProvisionError::NoBuyer(_) => Refusal::new(StatusCode::BAD_REQUEST, "no_buyer", e.to_string()),
        ProvisionError::NotYetProvisioned { .. } => {
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "order_not_provisioned_yet", e.to_string())
        }
        _ => Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "provisioning_incomplete", e.to_string()),
    })?;
    tracing::info!(event = event.header_value(), order = %order.id, number = order.number.as_deref().unwrap_or(""),
        status = order.status.as_ref().map_or("", |s| s.as_str()),
        charge_status = order.charge_status.as_ref().map_or("", |s| s.as_str()),
        organization = outcome.organization.as_deref().unwrap_or(""), instances = outcome.instances.len(),
        grants_appended = outcome.grants_appended, reversals_appended = outcome.reversals_appended,
        problems = outcome.problems.len(), unknown_order = outcome.unknown_order, remembered = outcome.remembered,
        nothing_done = outcome.nothing_done.as_deref().unwrap_or(""), "delivery done");
    Ok(axum::Json(outcome).into_response())
}

/// Brings the app's webhooks in the store at `api_url` up to date with the
/// manifest, with the app token the store registered; logs and counts how it went.
async fn sync_store_webhooks(app: Arc<SaleorApp>, api_url: String) {
    let token = match manifest::stored_token(&app.client, &app.settings.token_namespace, &api_url).await {
        Ok(Some(token)) => token,
        Ok(None) => {
            app.metrics.webhook_sync("no_token");
            tracing::warn!(
                api_url,
                "the store sends an older install's queries, and registered no app token to update them with: install the app again, or update its webhooks as the README says"
            );
            return;
        }
        Err(error) => {
            app.metrics.webhook_sync("failed");
            tracing::warn!(api_url, %error, "reading the app token failed; the webhooks are updated on a later delivery");
            return;
        }
    };
    match webhook_sync::sync(&app.http, &api_url, &token, &app.settings.public_url).await {
        Ok(changes) => {
            app.metrics.webhook_sync("updated");
            tracing::info!(
                api_url,
                changes = changes.len(),
                ?changes,
                "brought the app's webhooks in the store up to date; later events carry the order's state"
            );
        }
        Err(error) => {
            app.metrics.webhook_sync("failed");
            tracing::warn!(api_url, %error, "updating the app's webhooks in the store failed; tried again on a later delivery");
        }
    }
}

async fn register(State(app): State<Arc<SaleorApp>>, headers: HeaderMap, body: Body) -> Response {
    match register_token(&app, &headers, body).await {
        Ok(name) => {
            tracing::info!(secret = %name, "stored the Saleor app token");
            axum::Json(json!({"success": true})).into_response()
        }
        Err(refusal) => {
            tracing::warn!(status = refusal.status.as_u16(), code = refusal.code, message = %refusal.message, "app registration refused");
            refusal.into_response()
        }
    }
}

async fn register_token(app: &SaleorApp, headers: &HeaderMap, body: Body) -> Result<String, Refusal> {
    let body = read_body(body, app.settings.max_body_bytes).await?;
    let api_url = allowed_api_url(app, headers)?;
    let token = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("auth_token").and_then(|t| t.as_str()).map(str::to_string))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Refusal::new(StatusCode::BAD_REQUEST, "malformed_payload", "the body must be {\"auth_token\": \"...\"}")
        })?;
    // Only a token the store issued to this app is kept; on any failure the token kept before stays.
    let app_id = store_api::app_id(&app.http, api_url, &token).await.map_err(|e| match e {
        StoreApiError::Rejected { .. } => Refusal::new(
            StatusCode::UNAUTHORIZED,
            "token_rejected",
            format!("{e}; the token kept before (if any) stays"),
        ),
        StoreApiError::Unreachable { .. } => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unreachable",
            format!("{e}; the token cannot be checked, so it is not kept: install the app again"),
        ),
    })?;
    tracing::info!(api_url, app_id, "the store confirmed the app token");
    let secret = manifest::token_secret(&app.settings.token_namespace, api_url, &token);
    let name = manifest::token_secret_name(api_url);
    let secrets = Api::<Secret>::namespaced(app.client.clone(), &app.settings.token_namespace);
    secrets.patch(&name, &PatchParams::apply(PROVISIONER_MANAGER).force(), &Patch::Apply(&secret)).await.map_err(
        |e| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "kubernetes_unavailable",
                format!("storing the app token: {e}"),
            )
        },
    )?;
    Ok(name)
}
