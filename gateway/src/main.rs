//! The CMP gateway: authorizes agent runs against the CRs, rate-limits them,
//! pays for them from credits leased on the Wallet and forwards them to the
//! runtimes. See the crate docs and the README's "The gateway" section.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use cmp_core::runtime::{ProcessArgs, Runtime};
use cmp_gateway::credits::Credits;
use cmp_gateway::directory::Directory;
use cmp_gateway::ledger::LeasePolicy;
use cmp_gateway::metrics::Metrics;
use cmp_gateway::oidc::{Oidc, OidcSettings};
use cmp_gateway::peers::{PeerSettings, Peers, Shared};
use cmp_gateway::ratelimit::RateLimiter;
use cmp_gateway::routes;
use cmp_gateway::runtime_keys::RuntimeKeys;
use cmp_gateway::state::Gateway;
use cmp_gateway::usage::{Sink, Usage};
use cmp_gateway::widget::WidgetSessions;

/// mimalloc: the run path allocates per request (headers, JSON, the usage
/// event), and glibc's allocator showed as a quarter of the gateway's CPU
/// under load (`perf`), contended between worker threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "The CMP gateway: authorizes agent runs against the CRs, rate-limits them, pays for them from credits leased on the Wallet and forwards them to the runtimes."
)]
struct Args {
    #[command(flatten)]
    process: ProcessArgs,
    /// Address of the run API.
    #[arg(long, env = "CMP_GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// This replica's name (the pod name); a random suffix per process start makes its meter name.
    #[arg(long, env = "POD_NAME", default_value = "cmp-gateway")]
    replica_name: String,
    /// A credit lease's lifetime beyond the longest run it pays for: how long a dead replica's lease stays away.
    #[arg(long, env = "CMP_GATEWAY_LEASE_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    lease_seconds: u64,
    /// How long a run waits for a lease when the replica holds none.
    #[arg(long, env = "CMP_GATEWAY_LEASE_WAIT_MS", default_value_t = 3000)]
    lease_wait_ms: u64,
    /// How often spending is written to the Wallet meters.
    #[arg(long, env = "CMP_GATEWAY_FLUSH_MS", default_value_t = 1000)]
    flush_ms: u64,
    /// After this long without runs on a Wallet, its lease is handed back.
    #[arg(long, env = "CMP_GATEWAY_IDLE_SECONDS", default_value_t = 30)]
    idle_seconds: u64,
    /// The largest run body taken.
    #[arg(long, env = "CMP_GATEWAY_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Append usage events to this file (one CloudEvent per line).
    #[arg(long, env = "CMP_GATEWAY_USAGE_FILE", conflicts_with = "usage_url")]
    usage_file: Option<PathBuf>,
    /// POST usage events to this URL (OpenMeter's ingest format).
    #[arg(long, env = "CMP_GATEWAY_USAGE_URL")]
    usage_url: Option<String>,
    /// The namespace of the replicas' peer Leases.
    #[arg(long, env = "POD_NAMESPACE", default_value = "cmp-system")]
    namespace: String,
    /// Where the peer endpoint listens. Set it when more than one replica runs,
    /// so that rate limits hold across them; unset, this replica limits alone.
    #[arg(long, env = "CMP_GATEWAY_PEER_ADDR")]
    peer_addr: Option<SocketAddr>,
    /// The URL the other replicas reach the peer endpoint at. Default: http://<--peer-addr>.
    #[arg(long, env = "CMP_GATEWAY_PEER_URL")]
    peer_url: Option<String>,
    /// The replicas that share rate limits (one gateway Deployment).
    #[arg(long, env = "CMP_GATEWAY_PEER_GROUP", default_value = "cmp-gateway")]
    peer_group: String,
    /// Accept OIDC access tokens of this issuer (`iss`) from first-party callers, beside API keys.
    #[arg(long, env = "CMP_GATEWAY_OIDC_ISSUER", requires = "oidc_audience")]
    oidc_issuer: Option<String>,
    /// The audience (`aud`) tokens must name.
    #[arg(long, env = "CMP_GATEWAY_OIDC_AUDIENCE")]
    oidc_audience: Option<String>,
    /// The issuer's JWKS URL. Default: `jwks_uri` of `<issuer>/.well-known/openid-configuration`.
    #[arg(long, env = "CMP_GATEWAY_OIDC_JWKS_URL")]
    oidc_jwks_url: Option<String>,
    /// The claim that names the caller as Organizations list it (like kube-apiserver's --oidc-username-claim).
    #[arg(long, env = "CMP_GATEWAY_OIDC_USERNAME_CLAIM", default_value = "sub")]
    oidc_username_claim: String,
    /// The claim that lists the caller's groups.
    #[arg(long, env = "CMP_GATEWAY_OIDC_GROUPS_CLAIM", default_value = "groups")]
    oidc_groups_claim: String,
    /// The issuer's JWKS is fetched again (for an unknown key id) at most this often.
    #[arg(long, env = "CMP_GATEWAY_OIDC_MIN_REFETCH_SECONDS", default_value_t = 10)]
    oidc_min_refetch_seconds: u64,
    /// The secret widget demo session tokens are signed with, the same on every replica (from a Secret). Unset: no widget sessions.
    #[arg(long, env = "CMP_GATEWAY_WIDGET_SECRET", hide_env_values = true)]
    widget_secret: Option<String>,
    /// How long a widget demo session lasts.
    #[arg(long, env = "CMP_GATEWAY_WIDGET_SESSION_SECONDS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(60..=86400))]
    widget_session_seconds: u64,
    /// The header that carries a widget client's address behind a trusted ingress (for example x-forwarded-for). Unset: the connection's address.
    #[arg(long, env = "CMP_GATEWAY_CLIENT_ADDRESS_HEADER")]
    client_address_header: Option<String>,
    /// How many usage events wait for the sink before new ones are dropped.
    #[arg(long, env = "CMP_GATEWAY_USAGE_BUFFER", default_value_t = 100_000)]
    usage_buffer: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runtime = Runtime::new("cmp-gateway", ([127, 0, 0, 1], 8081).into(), &args.process);
    let metrics = Arc::new(Metrics::register(runtime.registry()));
    let client = runtime.client().await?;
    let meter = format!("{}-{}", args.replica_name, hex::encode(rand::random::<[u8; 4]>()));
    let (directory, watches) = Directory::watch(&client);
    let policy = LeasePolicy {
        base_ttl: Duration::from_secs(args.lease_seconds),
        flush_interval: Duration::from_millis(args.flush_ms),
        idle_after: Duration::from_secs(args.idle_seconds),
        ..LeasePolicy::default()
    };
    let credits = Credits::new(
        client.clone(),
        directory.clone(),
        meter.clone(),
        policy,
        Duration::from_millis(args.lease_wait_ms),
        metrics.clone(),
    );
    let sink = match (&args.usage_file, &args.usage_url) {
        (Some(path), _) => Sink::File(path.clone()),
        (None, Some(url)) => Sink::Http(url.clone()),
        (None, None) => {
            tracing::warn!("no --usage-file or --usage-url: usage events are only counted");
            Sink::Discard
        }
    };
    let (usage, delivery) = Usage::new(sink, format!("cmp-gateway/{meter}"), args.usage_buffer, metrics.clone());
    let runtime_keys = RuntimeKeys::default();
    let limiter = Arc::new(RateLimiter::default());
    let peers = args.peer_addr.map(|listen| PeerSettings {
        namespace: args.namespace.clone(),
        group: args.peer_group.clone(),
        listen,
        url: args.peer_url.clone().unwrap_or_else(|| format!("http://{listen}")),
    });
    if peers.is_none() {
        tracing::info!("no --peer-addr: rate limits are this replica's alone");
    }
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(256)
        .build()
        .context("building the HTTP client")?;
    let oidc = match (&args.oidc_issuer, &args.oidc_audience) {
        (Some(issuer), Some(audience)) => {
            let jwks_url = match &args.oidc_jwks_url {
                Some(url) => url.clone(),
                None => discover_jwks(&http, issuer).await?,
            };
            tracing::info!(%issuer, %audience, %jwks_url, "accepting OIDC tokens");
            Some(Oidc::new(
                OidcSettings {
                    issuer: issuer.clone(),
                    audience: audience.clone(),
                    jwks_url,
                    username_claim: args.oidc_username_claim.clone(),
                    groups_claim: args.oidc_groups_claim.clone(),
                },
                http.clone(),
                Duration::from_secs(args.oidc_min_refetch_seconds),
            ))
        }
        _ => None,
    };
    let widget = match &args.widget_secret {
        Some(secret) if secret.len() >= 32 => {
            Some(Arc::new(WidgetSessions::new(secret.as_bytes(), Duration::from_secs(args.widget_session_seconds))))
        }
        Some(_) => anyhow::bail!("--widget-secret must be at least 32 characters (every replica must share it)"),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("listening on {} (--addr)", args.addr))?;
    tracing::info!(addr = %args.addr, meter = %meter, "serving the run API");
    runtime
        .run(|process| async move {
            for watch in watches {
                tokio::spawn(watch);
            }
            let delivery = tokio::spawn(delivery);
            let peering = peers.map(|settings| {
                let shared = Shared { limiter: limiter.clone(), widget: widget.clone() };
                tokio::spawn(Peers::run(client.clone(), settings, meter.clone(), shared, process.shutdown.clone()))
            });
            let gateway = Arc::new(Gateway {
                directory: directory.clone(),
                credits: credits.clone(),
                limiter: limiter.clone(),
                runtime_keys,
                http,
                usage,
                metrics,
                readiness: process.readiness.clone(),
                max_body_bytes: args.max_body_bytes,
                oidc,
                widget,
                client_address_header: args.client_address_header.clone(),
                urls: Default::default(),
            });
            let ready = process.readiness.clone();
            let keys_read = gateway.runtime_keys.clone();
            tokio::spawn(async move {
                if directory.synced().await {
                    tokio::spawn(keys_read.clone().keep_reading(client, directory));
                    keys_read.read_once().await;
                    tracing::info!("the caches are synced and the runtime keys read: taking runs");
                    ready.set(true);
                }
            });
            let shutdown = process.shutdown.clone();
            let app = routes::router(gateway).into_make_service_with_connect_info::<SocketAddr>();
            let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
            tracing::info!("drained: writing the meters one last time");
            credits.close().await;
            if let Some(peering) = peering {
                match peering.await {
                    Ok(Err(error)) => tracing::error!(%error, "the peer endpoint failed"),
                    Err(error) => tracing::error!(%error, "the peer task failed"),
                    Ok(Ok(())) => {}
                }
            }
            if tokio::time::timeout(Duration::from_secs(10), delivery).await.is_err() {
                tracing::error!("usage events were still undelivered after 10 s; stopping anyway");
            }
            served.context("serving the run API")
        })
        .await
}

/// The `jwks_uri` of an issuer's discovery document.
async fn discover_jwks(http: &reqwest::Client, issuer: &str) -> anyhow::Result<String> {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    let document: serde_json::Value = http
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("fetching {url} (--oidc-issuer); set --oidc-jwks-url to skip discovery"))?
        .json()
        .await
        .with_context(|| format!("{url} is not JSON"))?;
    document["jwks_uri"]
        .as_str()
        .map(String::from)
        .with_context(|| format!("{url} has no jwks_uri; set --oidc-jwks-url"))
}
