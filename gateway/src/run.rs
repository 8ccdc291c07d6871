//! The `cmp-gateway` process: what it starts, inside the shared process runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cmp_core::runtime::Runtime;

use cmp_core::egress::Egress;
use cmp_core::openbao::{OpenBaoAuth, OpenBaoReader};
use cmp_crds::connectors::HostPattern;

use crate::cli::Args;
use crate::connectors::Connectors;
use crate::connectors::credentials::Credentials;
use crate::connectors::session::Sessions;
use crate::credits::Credits;
use crate::directory::Directory;
use crate::ledger::LeasePolicy;
use crate::metrics::Metrics;
use crate::oidc::{Oidc, OidcSettings};
use crate::peers::{PeerSettings, Peers, Shared};
use crate::ratelimit::RateLimiter;
use crate::routes;
use crate::run_tokens::RunTokens;
use crate::runtime_keys::RuntimeKeys;
use crate::state::Gateway;
use crate::usage::{Sink, Usage};
use crate::widget::WidgetSessions;

/// Runs the process with `args` in `runtime` until it is told to stop.
pub async fn run(mut runtime: Runtime, args: Args) -> anyhow::Result<()> {
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
    let mut console = None;
    let oidc = match (&args.oidc_issuer, &args.oidc_audience) {
        (Some(issuer), Some(audience)) => {
            let discovery = match args.oidc_jwks_url.is_none() || args.console_client_id.is_some() {
                true => Some(discover(&http, issuer).await?),
                false => None,
            };
            if let (Some(client_id), Some(document)) = (&args.console_client_id, &discovery) {
                let settings =
                    crate::console::Console::from_discovery(issuer, client_id, document).map_err(anyhow::Error::msg)?;
                tracing::info!(%client_id, "serving the buyer console at /console/");
                console = Some(settings);
            }
            let jwks_url =
                match &args.oidc_jwks_url {
                    Some(url) => url.clone(),
                    None => discovery.as_ref().and_then(|d| d["jwks_uri"].as_str()).map(String::from).with_context(
                        || format!("the discovery document of {issuer} has no jwks_uri; set --oidc-jwks-url"),
                    )?,
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
    let signup = args.signup.then(|| {
        tracing::info!(per_minute = args.signup_per_minute, "signing up OIDC callers who have no Organization");
        crate::signup::Signup::new(
            client.clone(),
            crate::signup::SignupSettings {
                starter_credits: args.signup_starter_credits,
                organization_labels: args.signup_organization_labels.clone(),
                per_minute: args.signup_per_minute,
                namespace_wait: Duration::from_secs(10),
            },
        )
    });
    let widget = match &args.widget_secret {
        Some(secret) if secret.len() >= 32 => {
            Some(Arc::new(WidgetSessions::new(secret.as_bytes(), Duration::from_secs(args.widget_session_seconds))))
        }
        Some(_) => anyhow::bail!("--widget-secret must be at least 32 characters (every replica must share it)"),
        None => None,
    };
    let api_server = kube::Config::infer().await.map(|c| c.cluster_url.to_string()).unwrap_or_default();
    let connectors = connectors(&args, &api_server, &meter)?;
    let probe_every = Duration::from_secs(args.connector_probe_seconds);
    let knowledge = crate::knowledge::Knowledge::from_args(&args, client.clone()).await?;
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
                let run_tokens = connectors.as_ref().map(|c| c.tokens.clone());
                let shared = Shared { limiter: limiter.clone(), widget: widget.clone(), run_tokens };
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
                connectors,
                knowledge,
                signup,
                buyer_api: args.buyer_api.then(|| client.clone()),
                console,
            });
            if gateway.connectors.is_some() && probe_every > Duration::ZERO {
                let selector = args.connector_probe_organization_selector.clone();
                let probing =
                    crate::connectors::probe::keep_probing(gateway.clone(), client.clone(), probe_every, selector);
                tokio::spawn(probing);
            }
            let ready = process.readiness.clone();
            let keys_read = gateway.runtime_keys.clone();
            tokio::spawn(async move {
                if directory.synced().await {
                    let secrets: Arc<dyn cmp_core::secrets::SecretSource> =
                        Arc::new(cmp_core::secrets::Secrets::new(client, None));
                    tokio::spawn(keys_read.clone().keep_reading(secrets, directory));
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

/// The connector gateway, when `--run-token-secret` is set.
fn connectors(args: &Args, api_server: &str, meter: &str) -> anyhow::Result<Option<Arc<Connectors>>> {
    let Some(secret) = &args.run_token_secret else {
        tracing::info!("no --run-token-secret: the connector gateway is off");
        return Ok(None);
    };
    if secret.len() < 32 {
        anyhow::bail!("--run-token-secret must be at least 32 characters (every replica must share it)");
    }
    let allowed = args
        .connector_allowed_hosts
        .iter()
        .filter(|h| !h.trim().is_empty())
        .map(|h| h.parse::<HostPattern>())
        .collect::<Result<Vec<_>, _>>()
        .context("--connector-allowed-hosts")?;
    let denied_networks = match &args.connector_denied_networks {
        None => Egress::default_denied_networks(),
        Some(networks) => networks
            .iter()
            .filter(|n| !n.trim().is_empty())
            .map(|n| {
                n.trim()
                    .parse()
                    .with_context(|| format!("--connector-denied-networks: {n:?} is not a CIDR such as 10.0.0.0/8"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
    };
    let mut denied_endpoints: Vec<String> =
        args.connector_denied_endpoints.iter().map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
    denied_endpoints.push(format!("http://{}", args.addr));
    denied_endpoints.extend(args.peer_addr.map(|a| format!("http://{a}")));
    denied_endpoints.extend(args.process.health_addr.map(|a| format!("http://{a}")));
    denied_endpoints.extend(args.vault_addr.clone());
    denied_endpoints.push(api_server.to_string());
    let source: Arc<dyn cmp_core::secrets::SecretSource> = match (&args.vault_addr, &args.vault_token, &args.vault_role)
    {
        (None, _, _) => {
            tracing::warn!("no --vault-addr: connector bindings cannot be called (their credentials are in OpenBao)");
            Arc::new(cmp_core::secrets::FakeSecrets::default())
        }
        (Some(addr), Some(token), _) => Arc::new(OpenBaoReader::new(addr, OpenBaoAuth::Token(token.clone()))),
        (Some(addr), None, Some(role)) => Arc::new(OpenBaoReader::new(
            addr,
            OpenBaoAuth::Kubernetes {
                mount: args.vault_kubernetes_auth.clone(),
                role: role.clone(),
                jwt_file: args.vault_jwt_file.clone(),
            },
        )),
        (Some(_), None, None) => anyhow::bail!("--vault-addr needs --vault-role (Kubernetes auth) or VAULT_TOKEN"),
    };
    tracing::info!(allowed_hosts = ?args.connector_allowed_hosts, "serving the connector gateway");
    Ok(Some(Arc::new(Connectors {
        tokens: Arc::new(RunTokens::new(secret.as_bytes())),
        sessions: Sessions::new(secret.as_bytes()),
        egress: Egress::new(allowed, denied_networks, denied_endpoints),
        credentials: Credentials::new(source, &args.vault_mount),
        replica: meter.to_string(),
    })))
}

/// An issuer's discovery document.
async fn discover(http: &reqwest::Client, issuer: &str) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    http.get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("fetching {url} (--oidc-issuer); set --oidc-jwks-url to skip discovery"))?
        .json()
        .await
        .with_context(|| format!("{url} is not JSON"))
}
