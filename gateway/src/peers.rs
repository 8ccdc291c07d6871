//! Replicas find each other and share each key's demand, off the run path.
//!
//! Each replica keeps a `coordination.k8s.io` Lease named after its meter,
//! labelled with the peer group and annotated with the URL of its peer
//! endpoint, renewed every few seconds and deleted on shutdown. It watches
//! the group's Leases, and five times a second POSTs its per-key demand
//! ([`RateLimiter::demand_report`]) to every peer whose Lease is current.
//! Widget demo sessions' run counts travel in the same reports.
//! The peer endpoint listens on its own address, which only the replicas
//! should reach (the chart's NetworkPolicy); a report carries public key ids
//! and numbers, never a secret.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ratelimit::RateLimiter;
use crate::run_tokens::RunTokens;
use crate::widget::WidgetSessions;

/// The label that names a replica's peer group.
pub const PEER_GROUP_LABEL: &str = "cmp.gsv.dev/gateway-peers";
/// The annotation holding a replica's peer endpoint URL.
pub const PEER_URL_ANNOTATION: &str = "cmp.gsv.dev/peer-url";
/// The route reports are POSTed to.
pub const DEMAND_ROUTE: &str = "/internal/v1/demand";
/// How often a replica renews its Lease.
const RENEW: Duration = Duration::from_secs(3);
/// How long a Lease counts without renewal.
const LEASE_SECONDS: i32 = 10;
/// How often demand is reported.
const REPORT: Duration = Duration::from_millis(200);

/// Where this replica is found.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    /// The namespace of the Leases.
    pub namespace: String,
    /// The peer group: replicas of one gateway Deployment.
    pub group: String,
    /// Where the peer endpoint listens.
    pub listen: SocketAddr,
    /// The URL peers reach it at.
    pub url: String,
}

/// A demand report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemandReport {
    /// The reporting replica (its meter name).
    pub from: String,
    /// (public key id, requests per second).
    pub demands: Vec<(String, f64)>,
    /// (widget session id, runs this replica served it).
    #[serde(default)]
    pub sessions: Vec<(String, u32)>,
    /// (run id, its token's expiry): runs that ended here lately, whose tokens no replica may take.
    #[serde(default)]
    pub ended_runs: Vec<(String, i64)>,
}

/// What a replica shares with its peers.
#[derive(Clone)]
pub struct Shared {
    /// Per-key demand.
    pub limiter: Arc<RateLimiter>,
    /// Widget session run counts, when sessions are on.
    pub widget: Option<Arc<WidgetSessions>>,
    /// Ended runs, when the connector gateway is on.
    pub run_tokens: Option<Arc<RunTokens>>,
}

/// This replica's membership of its peer group.
pub struct Peers {
    client: kube::Client,
    settings: PeerSettings,
    name: String,
    meter: String,
    leases: Store<Lease>,
}

impl Peers {
    /// Joins the group as `meter`: serves the peer endpoint, keeps the Lease
    /// and reports demand until `shutdown`, then leaves (deletes the Lease).
    pub async fn run(
        client: kube::Client,
        settings: PeerSettings,
        meter: String,
        shared: Shared,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(settings.listen).await?;
        tracing::info!(addr = %settings.listen, url = %settings.url, group = %settings.group, "serving the peer endpoint");
        let (leases, writer) = reflector::store();
        let api = Api::<Lease>::namespaced(client.clone(), &settings.namespace);
        let selector = format!("{PEER_GROUP_LABEL}={}", settings.group);
        let watch = reflector::reflector(writer, watcher(api, watcher::Config::default().labels(&selector)))
            .default_backoff()
            .for_each(|event| async move {
                if let Err(error) = event {
                    tracing::warn!(%error, "watching the peer Leases");
                }
            });
        let peers = Arc::new(Self { client, name: format!("cmp-gateway-{meter}"), settings, meter, leases });
        let router = axum::Router::new().route(DEMAND_ROUTE, axum::routing::post(receive)).with_state(shared.clone());
        let serve = axum::serve(listener, router).into_future();
        let work = async {
            tokio::select! {
                () = watch => {}
                () = peers.clone().renew() => {}
                () = peers.clone().report(shared) => {}
                result = serve => if let Err(error) = result { tracing::error!(%error, "the peer endpoint failed") },
            }
        };
        tokio::select! {
            () = work => {}
            () = shutdown => {}
        }
        peers.leave().await;
        Ok(())
    }

    async fn renew(self: Arc<Self>) {
        let api = Api::<Lease>::namespaced(self.client.clone(), &self.settings.namespace);
        loop {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "labels": {PEER_GROUP_LABEL: self.settings.group},
                             "annotations": {PEER_URL_ANNOTATION: self.settings.url}},
                "spec": {"holderIdentity": self.meter, "leaseDurationSeconds": LEASE_SECONDS,
                         "renewTime": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()},
            });
            if let Err(error) =
                api.patch(&self.name, &PatchParams::apply("cmp-gateway").force(), &Patch::Apply(lease)).await
            {
                tracing::warn!(%error, lease = %self.name, "renewing the peer Lease");
            }
            tokio::time::sleep(RENEW).await;
        }
    }

    /// The peer endpoint URLs of the other replicas whose Leases are current.
    fn live_peers(&self) -> Vec<String> {
        let now = Timestamp::now();
        self.leases
            .state()
            .iter()
            .filter(|lease| lease.metadata.name.as_deref() != Some(self.name.as_str()))
            .filter(|lease| {
                let spec = lease.spec.as_ref();
                let renewed = spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
                let seconds = spec.and_then(|s| s.lease_duration_seconds).unwrap_or(LEASE_SECONDS);
                renewed.is_some_and(|t| t + k8s_openapi::jiff::SignedDuration::from_secs(seconds.into()) > now)
            })
            .filter_map(|lease| lease.metadata.annotations.as_ref()?.get(PEER_URL_ANNOTATION).cloned())
            .collect()
    }

    async fn report(self: Arc<Self>, shared: Shared) {
        let http = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap_or_default();
        loop {
            tokio::time::sleep(REPORT).await;
            let demands = shared.limiter.demand_report(Instant::now());
            let sessions = shared.widget.as_ref().map(|w| w.report(Timestamp::now())).unwrap_or_default();
            let ended_runs = shared.run_tokens.as_ref().map(|t| t.report(Timestamp::now())).unwrap_or_default();
            if demands.is_empty() && sessions.is_empty() && ended_runs.is_empty() {
                continue;
            }
            let report = DemandReport { from: self.meter.clone(), demands, sessions, ended_runs };
            let sends = self.live_peers().into_iter().map(|url| {
                let (http, report) = (http.clone(), &report);
                async move {
                    let target = format!("{}{DEMAND_ROUTE}", url.trim_end_matches('/'));
                    if let Err(error) = http.post(&target).json(report).send().await {
                        tracing::debug!(%error, peer = %url, "a demand report was not delivered");
                    }
                }
            });
            futures::future::join_all(sends).await;
        }
    }

    async fn leave(&self) {
        let api = Api::<Lease>::namespaced(self.client.clone(), &self.settings.namespace);
        if let Err(error) = api.delete(&self.name, &DeleteParams::default()).await {
            tracing::warn!(%error, lease = %self.name, "deleting the peer Lease");
        }
    }
}

async fn receive(State(shared): State<Shared>, Json(report): Json<DemandReport>) -> axum::http::StatusCode {
    let now = Instant::now();
    for (key, demand) in report.demands.iter().take(100_000) {
        shared.limiter.remote_demand(&report.from, key, *demand, now);
    }
    if let Some(widget) = &shared.widget {
        for (sid, runs) in report.sessions.iter().take(100_000) {
            widget.remote(&report.from, sid, *runs, now, Timestamp::now());
        }
    }
    if let Some(run_tokens) = &shared.run_tokens {
        for (run, exp) in report.ended_runs.iter().take(1_000_000) {
            run_tokens.ended_elsewhere(run, *exp, Timestamp::now());
        }
    }
    axum::http::StatusCode::NO_CONTENT
}
