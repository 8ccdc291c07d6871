//! Admission of a run, as named steps, each one a method that refuses with
//! the [`Refusal`] its step owns; the first failure answers:
//!
//! 1. [`Gateway::identify`]: who calls: an API key (401 unknown, revoked or
//!    expired), a first-party token (401), or a widget session (401);
//! 2. [`Gateway::tenant`]: which Instance, checked against the caller's
//!    tenant (403 another tenant's; 404 none of that name);
//! 3. [`Gateway::runnable`]: whether the Instance may run now (403
//!    suspended, 503 not ready);
//! 4. the body (413, 400);
//! 5. [`Gateway::rate`]: the caller's rate (429), and a demo session's runs;
//! 6. [`Gateway::pay`]: the runtime's key (503) and the credits held (402, 503).
//!
//! A second protocol (the MCP routes) calls the same steps.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::HeaderMap;
use cmp_crds::Instance;
use cmp_crds::offering::DemoAllowance;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;

use crate::authorize::{self, PathTarget, RunTarget};
use crate::credits::Held;
use crate::forward::RunRequest;
use crate::oidc::Caller;
use crate::ratelimit::Decision;
use crate::refusal::{Code, Refusal};
use crate::state::Gateway;
use crate::widget::{SESSION_HEADER, Session};

/// Which route a run came by.
#[derive(Debug, Clone)]
pub enum Route {
    /// `/v1/runs` or `/v1/instances/{organization}/{instance}/runs`: an API key or a token.
    Run(Option<PathTarget>),
    /// `/v1/widget/runs`: a demo session, from a client.
    Widget(IpAddr),
}

/// Who calls, as [`Gateway::identify`] found.
pub enum Identified {
    /// A valid API key of `instance`; the path it was presented on, if any.
    Key { instance: Arc<Instance>, public_id: String, path: Option<PathTarget> },
    /// A first-party caller's verified token; the path names the Instance.
    Token { caller: Caller, path: Option<PathTarget> },
    /// A widget demo session, from `client`.
    Widget { session: Session, client: IpAddr },
}

/// The Instance a caller may run, as [`Gateway::tenant`] found.
pub struct Tenant {
    /// The Instance.
    pub instance: Arc<Instance>,
    /// The caller's rate-limit bucket.
    pub limited_as: String,
    /// A widget session and its Offering's demo allowance.
    pub demo: Option<(Session, DemoAllowance)>,
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

fn record_tenant(instance: &Instance) {
    let span = tracing::Span::current();
    let namespace = instance.metadata.namespace.as_deref().unwrap_or_default();
    span.record("organization", cmp_crds::names::organization_of_control_namespace(namespace).unwrap_or(namespace));
    span.record("instance", instance.metadata.name.as_deref().unwrap_or_default());
}

impl Gateway {
    /// Every step, in order: the run admitted with its credits held, or the first refusal.
    pub async fn admit(&self, route: Route, headers: &HeaderMap, body: Body) -> Result<Admitted, Refusal> {
        self.ready()?;
        let identified = self.identify(route, headers).await?;
        let tenant = self.tenant(identified)?;
        let target = self.runnable(&tenant.instance)?;
        let body = axum::body::to_bytes(body, self.max_body_bytes)
            .await
            .map_err(|_| Refusal::new(Code::BodyTooLarge, format!("the body is over {} bytes", self.max_body_bytes)))?;
        let mut request = RunRequest::parse(&body)?;
        request.place(&target)?;
        if request.stream && target.has_connectors && target.api == cmp_crds::offering::RuntimeApi::V2 {
            return Err(Refusal::new(
                Code::MalformedRequest,
                "this Instance's flow calls tools, and a v2 runtime (lfx) takes a run's token only in sync mode: send \"stream\": false",
            ));
        }
        let rate = self.rate(&tenant, &target)?;
        let (runtime_key, held) = self.pay(&target).await?;
        Ok(Admitted { target, request, runtime_key, held, rate })
    }

    /// Step 1: who calls.
    pub async fn identify(&self, route: Route, headers: &HeaderMap) -> Result<Identified, Refusal> {
        match route {
            Route::Run(path) => {
                let credential = authorize::presented_key(headers)?;
                match &self.oidc {
                    Some(oidc) if !credential.starts_with(cmp_crds::apikey::PREFIX) => {
                        let caller = oidc.authenticate(&credential, Timestamp::now()).await?;
                        Ok(Identified::Token { caller, path })
                    }
                    _ => {
                        let (instance, public_id) = self.identify_key(&credential)?;
                        Ok(Identified::Key { instance, public_id, path })
                    }
                }
            }
            Route::Widget(client) => {
                let sessions =
                    self.widget.as_ref().ok_or_else(|| Refusal::new(Code::NotFound, "widget sessions are off"))?;
                let token = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()).ok_or_else(|| {
                    Refusal::new(
                        Code::InvalidToken,
                        format!("no {SESSION_HEADER} header: start a session with POST /v1/widget/session:init"),
                    )
                })?;
                Ok(Identified::Widget { session: sessions.verify(token, Timestamp::now())?, client })
            }
        }
    }

    /// The Instance an API key names, if the key is valid; and its public id.
    fn identify_key(&self, key: &str) -> Result<(Arc<Instance>, String), Refusal> {
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
        Ok((instance, public_id.to_string()))
    }

    /// Step 2: the Instance the caller may run, checked against the caller's tenant.
    pub fn tenant(&self, identified: Identified) -> Result<Tenant, Refusal> {
        match identified {
            Identified::Key { instance, public_id, path } => {
                record_tenant(&instance);
                if let Err(refusal) = authorize::check_tenant(&instance, path.as_ref()) {
                    let (organization, named) =
                        path.as_ref().map(|p| (p.organization.as_str(), p.instance.as_str())).unwrap_or_default();
                    tracing::warn!(security_event = "wrong_tenant", key = %public_id, path_organization = %organization, path_instance = %named, "an API key was used on another tenant's Instance");
                    return Err(refusal);
                }
                Ok(Tenant { instance, limited_as: public_id, demo: None })
            }
            Identified::Token { caller, path } => {
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
                    self.directory.instances.get(&ObjectRef::new(&path.instance).within(&namespace)).ok_or_else(
                        || {
                            Refusal::new(
                                Code::NotFound,
                                format!("Organization {} has no Instance {}", path.organization, path.instance),
                            )
                        },
                    )?;
                record_tenant(&instance);
                let limited_as = format!("oidc:{}:{namespace}/{}", caller.username, path.instance);
                Ok(Tenant { instance, limited_as, demo: None })
            }
            Identified::Widget { session, client } => {
                let (instance, demo) = self.demo(&session.offering)?;
                record_tenant(&instance);
                let limited_as = format!("demo:{}:{client}", session.offering);
                Ok(Tenant { instance, limited_as, demo: Some((session, demo)) })
            }
        }
    }

    /// Step 3: whether the Instance may run now, and what a run of it needs.
    pub fn runnable(&self, instance: &Instance) -> Result<RunTarget, Refusal> {
        let organization = cmp_crds::names::organization_of_control_namespace(
            instance.metadata.namespace.as_deref().unwrap_or_default(),
        )
        .and_then(|org| self.directory.organization(org));
        let offering = self.directory.offering(&instance.spec.offering);
        authorize::run_target(instance, organization.as_deref(), offering.as_deref())
    }

    /// Step 5: takes one request of the caller's bucket at its plan's (or demo's) rate, and one of a demo session's runs.
    pub fn rate(&self, tenant: &Tenant, target: &RunTarget) -> Result<Decision, Refusal> {
        let rpm = match &tenant.demo {
            Some((_, allowance)) => allowance.requests_per_minute,
            None => target.plan.requests_per_minute,
        };
        let rate = self.rate_limit(&tenant.limited_as, rpm)?;
        if let (Some((session, allowance)), Some(sessions)) = (&tenant.demo, &self.widget) {
            let runs = u32::try_from(allowance.runs_per_session).unwrap_or(0);
            sessions.take_run(session, runs, Instant::now())?;
        }
        Ok(rate)
    }

    /// Takes one request of bucket `limited_as` at `rpm` a minute, or refuses it with 429.
    pub fn rate_limit(&self, limited_as: &str, rpm: i32) -> Result<Decision, Refusal> {
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

    /// Step 6: the runtime's key, and the run's price held from the Wallet's lease.
    pub async fn pay(&self, target: &RunTarget) -> Result<(Option<String>, Held), Refusal> {
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
        let runtime_key = runtime_key.map(|offering_key| runtime_key_of(target, offering_key));
        let timeout = std::time::Duration::from_secs(u64::try_from(target.plan.timeout_seconds).unwrap_or(1));
        let wallet = (target.wallet.0.as_str(), target.wallet.1.as_str());
        let held = self.credits.hold(wallet, target.plan.credits_per_run, timeout).await?;
        Ok((runtime_key, held))
    }
}

/// The key the runtime of `target` takes, from the Offering's: a Shared runtime takes the Offering's own; a
/// Dedicated one its Instance's, derived from it (`cmp_crds::runtime_key`), which the operator gave the runtime.
pub(crate) fn runtime_key_of(target: &RunTarget, offering_key: String) -> String {
    match &target.runtime_key_instance_uid {
        Some(uid) => cmp_crds::runtime_key::for_instance(&offering_key, uid),
        None => offering_key,
    }
}

#[cfg(test)]
mod tests;
