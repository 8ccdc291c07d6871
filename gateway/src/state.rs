//! What every route of the gateway shares: the watch caches, the credit
//! accounts, the rate limits, the runtimes' keys and the clients.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::http::HeaderMap;
use cmp_core::health::Readiness;
use cmp_crds::Instance;
use cmp_crds::offering::DemoAllowance;
use kube::runtime::reflector::ObjectRef;

use crate::credits::Credits;
use crate::directory::Directory;
use crate::metrics::Metrics;
use crate::oidc::Oidc;
use crate::ratelimit::RateLimiter;
use crate::refusal::{Code, Refusal};
use crate::runtime_keys::RuntimeKeys;
use crate::usage::Usage;
use crate::widget::WidgetSessions;

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
    /// The connector gateway, when a run-token secret is configured.
    pub connectors: Option<Arc<crate::connectors::Connectors>>,
    /// The knowledge base (`--knowledge-store-url` and `--knowledge-model-dir`), when on.
    pub knowledge: Option<Arc<crate::knowledge::Knowledge>>,
    /// The client the buyer API asks with, as each caller (`--buyer-api`), when on.
    pub buyer_api: Option<kube::Client>,
    /// Sign-up on first login (`--signup`, with OIDC), when on.
    pub signup: Option<crate::signup::Signup>,
    /// The buyer console (`--console-client-id`), when on.
    pub console: Option<crate::console::Console>,
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

impl Gateway {
    /// Refuses with 503 until the caches have synced.
    pub fn ready(&self) -> Result<(), Refusal> {
        if self.readiness.is_ready() {
            Ok(())
        } else {
            Err(Refusal::new(
                Code::GatewayNotReady,
                "the gateway is starting (its caches have not synced); try again shortly",
            ))
        }
    }

    /// The client a widget request comes from: the configured header's first address, else the connection's.
    pub fn client_address(&self, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
        self.client_address_header
            .as_ref()
            .and_then(|name| headers.get(name.as_str()))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| peer.ip())
    }

    /// The runtimes' endpoints, which no connector binding may reach: `target`'s and every Offering's.
    pub fn internal_endpoints(&self, runtime: Option<&str>) -> Vec<String> {
        let mut endpoints: Vec<String> = runtime.map(String::from).into_iter().collect();
        endpoints.extend(self.directory.offerings.state().iter().filter_map(|o| o.spec.runtime.endpoint.clone()));
        endpoints.sort();
        endpoints.dedup();
        endpoints
    }

    /// The demo of `offering`, when the gateway serves widget sessions and the Offering has a demo Instance.
    pub fn demo(&self, offering: &str) -> Result<(Arc<Instance>, DemoAllowance), Refusal> {
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
}
