//! The run API. Each request is checked in this order, and the first
//! failure answers: caches synced (503), key (401), path tenant (403),
//! suspension and readiness (403/503), body (413/400), rate (429), runtime
//! key (503), credits (402/503). Then the run is forwarded and settled.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cmp_core::health::Readiness;
use cmp_crds::Instance;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use tracing::Instrument;

use crate::authorize::{self, PathTarget, RunTarget};
use crate::credits::{Credits, Held};
use crate::directory::Directory;
use crate::forward::RunRequest;
use crate::metrics::Metrics;
use crate::oidc::Oidc;
use crate::ratelimit::{Decision, RateLimiter};
use crate::refusal::{Code, Refusal};
use crate::runtime_keys::RuntimeKeys;
use crate::usage::Usage;
use crate::widget::{SESSION_HEADER, Session, WidgetSessions};
use axum::extract::ConnectInfo;
use cmp_crds::offering::DemoAllowance;
use std::net::{IpAddr, SocketAddr};

/// The run id of every response.
pub const REQUEST_ID: &str = "x-request-id";
/// The credits a run was charged (for a stream: what it costs if it completes).
pub const CREDITS_CHARGED: &str = "x-credits-charged";
/// The key's rate limit, per minute.
pub const RATE_LIMIT: &str = "x-ratelimit-limit";
/// Runs the key has left now.
pub const RATE_REMAINING: &str = "x-ratelimit-remaining";

/// Everything a run needs.
pub struct Gateway {
    /// The watch caches.
    pub directory: Directory,
    /// The credit accounts.
    pub credits: Arc<Credits>,
    /// Per-key rate limits.
    pub limiter: Arc<RateLimiter>,
    /// The runtimes' keys.
    pub runtime_keys: RuntimeKeys,
    /// The client runs are forwarded with.
    pub http: reqwest::Client,
    /// Usage events.
    pub usage: Usage,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// True once the caches have synced.
    pub readiness: Readiness,
    /// The largest body taken.
    pub max_body_bytes: usize,
    /// First-party callers' tokens, when an issuer is configured.
    pub oidc: Option<Oidc>,
    /// Widget demo sessions, when a secret is configured.
    pub widget: Option<Arc<WidgetSessions>>,
    /// The header that names a widget client's address (behind an ingress), else the connection's.
    pub client_address_header: Option<String>,
    /// Runtime URLs, parsed once.
    pub urls: UrlCache,
}

/// Runtime URLs parsed once (parsing a URL, with its IDNA pass, showed in profiles of the run path).
#[derive(Default)]
pub struct UrlCache(std::sync::RwLock<HashMap<String, reqwest::Url>>);

impl UrlCache {
    /// The parsed `url`, parsing and keeping it the first time; `None` when it does not parse.
    pub fn get(&self, url: &str) -> Option<reqwest::Url> {
        if let Some(parsed) = self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(url) {
            return Some(parsed.clone());
        }
        let parsed = reqwest::Url::parse(url).ok()?;
        let mut urls = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if urls.len() >= 10_000 {
            urls.clear();
        }
        urls.insert(url.to_string(), parsed.clone());
        Some(parsed)
    }
}

/// Which route a run came by.
enum Route {
    /// `/v1/runs` or `/v1/instances/{organization}/{instance}/runs`: an API key or a token.
    Run(Option<PathTarget>),
    /// `/v1/widget/runs`: a demo session, from a client.
    Widget(IpAddr),
}

/// The run routes.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/runs", post(run_by_key))
        .route("/v1/instances/{organization}/{instance}/runs", post(run_on_path))
        .route("/v1/widget/session:init", post(init_widget_session))
        .route("/v1/widget/runs", post(run_widget))
        .fallback(|| async {
            Refusal::new(Code::NotFound, "no such route: POST /v1/runs or /v1/instances/{organization}/{instance}/runs")
        })
        .with_state(gateway)
}

async fn run_by_key(State(gateway): State<Arc<Gateway>>, headers: HeaderMap, body: Body) -> Response {
    gateway.run(Route::Run(None), headers, body).await
}

async fn run_widget(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let client = gateway.client_address(&headers, peer);
    gateway.run(Route::Widget(client), headers, body).await
}

async fn init_widget_session(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let client = gateway.client_address(&headers, peer);
    match gateway.init_widget_session(client, body).await {
        Ok(answer) => answer.into_response(),
        Err(refusal) => {
            gateway.metrics.run(refusal.code.as_str());
            tracing::info!(code = refusal.code.as_str(), reason = %refusal.message, %client, "widget session refused");
            refusal.into_response()
        }
    }
}

async fn run_on_path(
    State(gateway): State<Arc<Gateway>>,
    Path((organization, instance)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    gateway.run(Route::Run(Some(PathTarget { organization, instance })), headers, body).await
}

/// A run that passed every check, with its credits held.
pub struct Admitted {
    /// What to run.
    pub target: RunTarget,
    /// The caller's request.
    pub request: RunRequest,
    /// The runtime's key.
    pub runtime_key: Option<String>,
    /// The credits held.
    pub held: Held,
    /// The rate limit decision.
    pub rate: Decision,
}

fn header(response: &mut Response, name: &'static str, value: impl Into<HeaderValue>) {
    response.headers_mut().insert(HeaderName::from_static(name), value.into());
}

fn record_tenant(instance: &Instance) {
    let span = tracing::Span::current();
    let namespace = instance.metadata.namespace.as_deref().unwrap_or_default();
    span.record("organization", cmp_crds::names::organization_of_control_namespace(namespace).unwrap_or(namespace));
    span.record("instance", instance.metadata.name.as_deref().unwrap_or_default());
}

impl Gateway {
    async fn run(self: Arc<Self>, route: Route, headers: HeaderMap, body: Body) -> Response {
        let started = Instant::now();
        let run_id = format!("run_{}", hex::encode(rand::random::<[u8; 12]>()));
        let span = tracing::info_span!("run", run = %run_id, organization = tracing::field::Empty, instance = tracing::field::Empty);
        let mut response = async {
            match self.admit(route, &headers, body).await {
                Ok(admitted) => {
                    let limit = admitted.rate;
                    let mut response = crate::relay::relay(self.clone(), admitted, run_id.clone(), started).await;
                    header(&mut response, RATE_LIMIT, limit.limit);
                    header(&mut response, RATE_REMAINING, limit.remaining);
                    response
                }
                Err(refusal) => {
                    self.metrics.run(refusal.code.as_str());
                    tracing::info!(code = refusal.code.as_str(), reason = %refusal.message, "run refused");
                    refusal.into_response()
                }
            }
        }
        .instrument(span)
        .await;
        if let Ok(id) = HeaderValue::from_str(&run_id) {
            header(&mut response, REQUEST_ID, id);
        }
        response
    }

    fn ready(&self) -> Result<(), Refusal> {
        if self.readiness.is_ready() {
            Ok(())
        } else {
            Err(Refusal::new(
                Code::GatewayNotReady,
                "the gateway is starting (its caches have not synced); try again shortly",
            ))
        }
    }

    async fn admit(&self, route: Route, headers: &HeaderMap, body: Body) -> Result<Admitted, Refusal> {
        self.ready()?;
        let (instance, limited_as, demo) = match route {
            Route::Run(path) => {
                let credential = authorize::presented_key(headers)?;
                let (instance, limited_as) = match &self.oidc {
                    Some(oidc) if !credential.starts_with(cmp_crds::apikey::PREFIX) => {
                        self.identify_by_token(oidc, &credential, path.as_ref()).await?
                    }
                    _ => self.identify_by_key(&credential, path.as_ref())?,
                };
                (instance, limited_as, None)
            }
            Route::Widget(client) => {
                let (instance, demo) = self.identify_by_session(headers)?;
                (instance, format!("demo:{}:{client}", demo.0.offering), Some(demo))
            }
        };
        let organization = cmp_crds::names::organization_of_control_namespace(
            instance.metadata.namespace.as_deref().unwrap_or_default(),
        )
        .and_then(|org| self.directory.organization(org));
        let offering = self.directory.offering(&instance.spec.offering);
        let target = authorize::run_target(&instance, organization.as_deref(), offering.as_deref())?;
        let body = axum::body::to_bytes(body, self.max_body_bytes)
            .await
            .map_err(|_| Refusal::new(Code::BodyTooLarge, format!("the body is over {} bytes", self.max_body_bytes)))?;
        let request = RunRequest::parse(&body)?;
        let rpm = match &demo {
            Some((_, allowance)) => allowance.requests_per_minute,
            None => target.plan.requests_per_minute,
        };
        let rate = self.rate_limit(&limited_as, rpm)?;
        if let (Some((session, allowance)), Some(sessions)) = (&demo, &self.widget) {
            let runs = u32::try_from(allowance.runs_per_session).unwrap_or(0);
            sessions.take_run(session, runs, Instant::now())?;
        }
        let runtime_key = match &target.runtime_key {
            None => None,
            Some(reference) => Some(self.runtime_keys.get(reference).ok_or_else(|| {
                Refusal::new(
                    Code::RuntimeNotReady,
                    format!(
                        "the runtime's key (Secret {}/{}) has not been read; try again shortly",
                        reference.namespace, reference.name
                    ),
                )
            })?),
        };
        let timeout = std::time::Duration::from_secs(u64::try_from(target.plan.timeout_seconds).unwrap_or(1));
        let wallet = (target.wallet.0.as_str(), target.wallet.1.as_str());
        let held = self.credits.hold(wallet, target.plan.credits_per_run, timeout).await?;
        Ok(Admitted { target, request, runtime_key, held, rate })
    }

    /// The Instance an API key names, checked against the path; and the key's public id (its rate-limit bucket).
    fn identify_by_key(&self, key: &str, path: Option<&PathTarget>) -> Result<(Arc<Instance>, String), Refusal> {
        let public_id =
            cmp_crds::apikey::parse(key).map_err(|e| Refusal::new(Code::InvalidApiKey, e.to_string()))?.public_id;
        let Some(instance) = self.directory.instance_of_key(public_id) else {
            return Err(match self.directory.retired_key_hash(public_id) {
                Some(hash) if cmp_crds::apikey::verify(key, &hash) => Refusal::new(
                    Code::KeyRevoked,
                    "the API key was revoked, or removed with its Instance: ask its owner for a new key",
                ),
                _ => Refusal::new(Code::InvalidApiKey, "the API key is not valid: check it was copied whole"),
            });
        };
        authorize::check_key(&instance, key, Timestamp::now())?;
        record_tenant(&instance);
        if let Err(refusal) = authorize::check_tenant(&instance, path) {
            let (organization, named) =
                path.map(|p| (p.organization.as_str(), p.instance.as_str())).unwrap_or_default();
            tracing::warn!(security_event = "wrong_tenant", key = public_id, path_organization = %organization, path_instance = %named, "an API key was used on another tenant's Instance");
            return Err(refusal);
        }
        Ok((instance, public_id.to_string()))
    }

    /// The Instance a first-party caller's token may run: the path names it,
    /// and its Organization must list the caller; the bucket is per caller and Instance.
    async fn identify_by_token(
        &self,
        oidc: &Oidc,
        token: &str,
        path: Option<&PathTarget>,
    ) -> Result<(Arc<Instance>, String), Refusal> {
        let caller = oidc.authenticate(token, Timestamp::now()).await?;
        let path = path.ok_or_else(|| {
            Refusal::new(
                Code::MalformedRequest,
                "a token names no Instance: POST /v1/instances/{organization}/{instance}/runs",
            )
        })?;
        let member = self.directory.organization(&path.organization).is_some_and(|org| caller.belongs_to(&org));
        if !member {
            tracing::warn!(security_event = "wrong_tenant", caller = %caller.username, path_organization = %path.organization, "a token was used on an Organization that does not list its caller");
            return Err(Refusal::new(
                Code::WrongTenant,
                format!("{} is not an owner or member of Organization {}", caller.username, path.organization),
            ));
        }
        let namespace = cmp_crds::names::control_namespace(&path.organization);
        let instance =
            self.directory.instances.get(&ObjectRef::new(&path.instance).within(&namespace)).ok_or_else(|| {
                Refusal::new(
                    Code::NotFound,
                    format!("Organization {} has no Instance {}", path.organization, path.instance),
                )
            })?;
        record_tenant(&instance);
        Ok((instance, format!("oidc:{}:{namespace}/{}", caller.username, path.instance)))
    }

    /// Takes one request of bucket `limited_as` at `rpm` a minute, or refuses it with 429.
    fn rate_limit(&self, limited_as: &str, rpm: i32) -> Result<Decision, Refusal> {
        let rpm = u32::try_from(rpm).unwrap_or(1);
        let rate = self.limiter.check(limited_as, rpm, Instant::now());
        if rate.allowed {
            return Ok(rate);
        }
        let mut refusal = Refusal::new(
            Code::RateLimited,
            format!("the caller is over its {rpm} runs per minute; retry after {} s", rate.retry_after),
        );
        refusal.retry_after = Some(rate.retry_after);
        Err(refusal)
    }

    /// The client a widget request comes from: the configured header's first address, else the connection's.
    fn client_address(&self, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
        self.client_address_header
            .as_ref()
            .and_then(|name| headers.get(name.as_str()))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| peer.ip())
    }

    /// The demo of `offering`, when the gateway serves widget sessions and the Offering has a demo Instance.
    fn demo(&self, offering: &str) -> Result<(Arc<Instance>, DemoAllowance), Refusal> {
        let none = || Refusal::new(Code::NotFound, format!("Offering {offering} has no demo"));
        let offering = self.directory.offering(offering).ok_or_else(none)?;
        let demo = offering.spec.demo.clone().filter(|d| d.runs_per_session > 0).ok_or_else(none)?;
        let at = demo.instance.clone().ok_or_else(none)?;
        let namespace = cmp_crds::names::control_namespace(&at.organization);
        let instance = self.directory.instances.get(&ObjectRef::new(&at.name).within(&namespace)).ok_or_else(|| {
            Refusal::new(Code::RuntimeNotReady, format!("the demo Instance {namespace}/{} was not found", at.name))
        })?;
        Ok((instance, demo))
    }

    /// The demo Instance a widget session may run.
    fn identify_by_session(&self, headers: &HeaderMap) -> Result<(Arc<Instance>, (Session, DemoAllowance)), Refusal> {
        let sessions = self.widget.as_ref().ok_or_else(|| Refusal::new(Code::NotFound, "widget sessions are off"))?;
        let token = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()).ok_or_else(|| {
            Refusal::new(
                Code::InvalidToken,
                format!("no {SESSION_HEADER} header: start a session with POST /v1/widget/session:init"),
            )
        })?;
        let session = sessions.verify(token, Timestamp::now())?;
        let (instance, demo) = self.demo(&session.offering)?;
        record_tenant(&instance);
        Ok((instance, (session, demo)))
    }

    /// Starts a demo session of the Offering the body names.
    async fn init_widget_session(&self, client: IpAddr, body: Body) -> Result<axum::Json<serde_json::Value>, Refusal> {
        self.ready()?;
        let sessions = self.widget.as_ref().ok_or_else(|| Refusal::new(Code::NotFound, "widget sessions are off"))?;
        let body = axum::body::to_bytes(body, 4096)
            .await
            .map_err(|_| Refusal::new(Code::BodyTooLarge, "the body is over 4096 bytes"))?;
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Init {
            offering: String,
        }
        let init: Init = serde_json::from_slice(&body).map_err(|e| {
            Refusal::new(Code::MalformedRequest, format!("the body must be {{\"offering\": \"<name>\"}}: {e}"))
        })?;
        let (_, demo) = self.demo(&init.offering)?;
        self.rate_limit(&format!("demo:{}:{client}", init.offering), demo.requests_per_minute)?;
        let (token, ends) = sessions.issue(&init.offering, Timestamp::now());
        Ok(axum::Json(serde_json::json!({
            "token": token, "expiresAt": ends.to_string(), "runsPerSession": demo.runs_per_session,
            "header": SESSION_HEADER,
        })))
    }
}
