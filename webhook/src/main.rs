//! The CMP webhook: turns paid Saleor orders into CRs, and serves validating
//! admission for the rules CEL cannot express.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use cmp_core::runtime::{ProcessArgs, Runtime};
use cmp_crds::{Offering, Project};
use cmp_webhook::admission_server::{self, Admission};
use cmp_webhook::catalog::CreditPackFile;
use cmp_webhook::jwks::JwksCache;
use cmp_webhook::metrics::Metrics;
use cmp_webhook::order_record::OrderRecords;
use cmp_webhook::provisioner::{Provisioner, ProvisionerSettings};
use cmp_webhook::server::{self, SaleorApp, SaleorSettings};
use cmp_webhook::webhook_sync::SyncGate;

#[derive(Parser)]
#[command(
    version,
    about = "The CMP webhook: turns paid Saleor orders into CRs, and serves validating admission for the rules CEL cannot express."
)]
struct Args {
    #[command(flatten)]
    process: ProcessArgs,

    /// Address of the Saleor routes (manifest, registration, webhooks).
    #[arg(long, env = "CMP_SALEOR_ADDR", default_value = "127.0.0.1:8090")]
    saleor_addr: SocketAddr,

    /// The URL Saleor reaches the Saleor routes at, written into the app manifest.
    #[arg(long, env = "CMP_PUBLIC_URL", default_value = "http://127.0.0.1:8090")]
    public_url: String,

    /// A store's API URL, exactly as Saleor sends it in Saleor-Api-Url (repeat, or comma-separate). Deliveries from any other are refused with 401.
    #[arg(long = "saleor-api-url", env = "CMP_SALEOR_API_URLS", value_delimiter = ',')]
    saleor_api_urls: Vec<String>,

    /// The legacy HMAC-SHA256 shared secret. Unset: only JWS signatures are accepted.
    #[arg(long, env = "CMP_SALEOR_HMAC_SECRET", hide_env_values = true)]
    saleor_hmac_secret: Option<String>,

    /// The credit-pack file: `creditPacks: [{sku, credits, displayName}]`. Unset: no credit packs.
    #[arg(long, env = "CMP_CREDIT_PACKS")]
    credit_packs: Option<PathBuf>,

    /// The largest delivery body accepted; larger ones get 413.
    #[arg(long, env = "CMP_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    max_body_bytes: usize,

    /// How long a paid order waits for the operator to create the buyer's Wallet before answering 503 (Saleor retries).
    #[arg(long, env = "CMP_WALLET_WAIT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=15))]
    wallet_wait_seconds: u64,

    /// The least time between two fetches of one store's JWKS.
    #[arg(long, env = "CMP_JWKS_MIN_REFETCH_SECONDS", default_value_t = 10)]
    jwks_min_refetch_seconds: u64,

    /// A label (key=value) put on every Organization the provisioner creates; repeat for more.
    #[arg(long = "organization-label", env = "CMP_ORGANIZATION_LABELS", value_delimiter = ',', value_parser = parse_label)]
    organization_labels: Vec<(String, String)>,

    /// Address of the validating admission endpoint (TLS), served when --admission-cert and --admission-key are given.
    #[arg(long, env = "CMP_ADMISSION_ADDR", default_value = "127.0.0.1:8443")]
    admission_addr: SocketAddr,

    /// PEM certificate (chain) of the admission endpoint. Unset: no admission endpoint.
    #[arg(long, env = "CMP_ADMISSION_CERT", requires = "admission_key")]
    admission_cert: Option<PathBuf>,

    /// PEM private key of the admission endpoint.
    #[arg(long, env = "CMP_ADMISSION_KEY", requires = "admission_cert")]
    admission_key: Option<PathBuf>,

    /// A user name (as the API server authenticates it) allowed to append grants from SaleorOrder: the provisioner's own. Repeat for more.
    #[arg(
        long = "provisioner-username",
        env = "CMP_PROVISIONER_USERNAMES",
        value_delimiter = ',',
        default_value = "system:serviceaccount:cmp-system:cmp-webhook"
    )]
    provisioner_usernames: Vec<String>,

    /// The namespace of the Secrets that keep the stores' app tokens, and of the records of withdrawn orders.
    #[arg(long, env = "CMP_NAMESPACE", default_value = "cmp-system")]
    namespace: String,

    /// How long the record of a cancelled or fully refunded order is kept (a payment of it delivered within this time is never provisioned).
    #[arg(long, env = "CMP_ORDER_RECORD_RETENTION_DAYS", default_value_t = 400, value_parser = clap::value_parser!(u64).range(1..))]
    order_record_retention_days: u64,

    /// The least time between two updates of one store's webhooks (made when the store sends an older install's queries).
    #[arg(long, env = "CMP_WEBHOOK_SYNC_INTERVAL_SECONDS", default_value_t = 600)]
    webhook_sync_interval_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let credit_packs = match &args.credit_packs {
        Some(path) => CreditPackFile::load(path)?,
        None => Vec::new(),
    };
    if args.saleor_api_urls.is_empty() {
        tracing::warn!("no --saleor-api-url: every Saleor delivery will be refused with 401");
    }
    let mut runtime = Runtime::new("cmp-webhook", ([127, 0, 0, 1], 8082).into(), &args.process);
    let metrics = Arc::new(Metrics::register(runtime.registry()));
    let client = runtime.client().await?;
    let http =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().context("building the HTTP client")?;
    let (offerings, offering_events) = cmp_core::watch::cache_all::<Offering>(&client);
    let (projects, project_events) = cmp_core::watch::cache_all::<Project>(&client);
    let admission_tls = match (&args.admission_cert, &args.admission_key) {
        (Some(cert), Some(key)) => {
            Some((admission_server::tls_config(cert, key)?, admission_server::bind(args.admission_addr).await?))
        }
        _ => {
            tracing::info!("no --admission-cert/--admission-key: the admission endpoint is off");
            None
        }
    };
    let admission = Arc::new(Admission {
        client: client.clone(),
        offerings: offerings.clone(),
        projects: projects.clone(),
        provisioners: args.provisioner_usernames.clone(),
    });
    let records = OrderRecords::new(client.clone(), &args.namespace);
    let retention = Duration::from_secs(args.order_record_retention_days.saturating_mul(86_400));
    let app = Arc::new(SaleorApp {
        settings: SaleorSettings {
            allowed_api_urls: args.saleor_api_urls.clone(),
            hmac_secret: args.saleor_hmac_secret.clone().map(String::into_bytes),
            max_body_bytes: args.max_body_bytes,
            public_url: args.public_url.clone(),
            token_namespace: args.namespace.clone(),
        },
        jwks: JwksCache::new(http.clone(), Duration::from_secs(args.jwks_min_refetch_seconds)),
        provisioner: Provisioner::new(
            client.clone(),
            offerings.clone(),
            records.clone(),
            ProvisionerSettings {
                credit_packs,
                wallet_wait: Duration::from_secs(args.wallet_wait_seconds),
                organization_labels: args.organization_labels.iter().cloned().collect(),
            },
            metrics.clone(),
        ),
        metrics,
        client,
        http,
        webhook_sync: SyncGate::new(Duration::from_secs(args.webhook_sync_interval_seconds)),
    });
    let listener = tokio::net::TcpListener::bind(args.saleor_addr)
        .await
        .with_context(|| format!("listening on {} (--saleor-addr)", args.saleor_addr))?;
    tracing::info!(addr = %args.saleor_addr, public_url = %args.public_url, "serving the Saleor routes");
    runtime
        .run(|process| async move {
            tokio::spawn(offering_events);
            tokio::spawn(project_events);
            tokio::spawn(records.sweep_forever(retention, Duration::from_secs(6 * 3600)));
            let moving = app.clone();
            tokio::spawn(async move {
                loop {
                    match moving.provisioner.move_store_suspensions().await {
                        Ok(moved) => {
                            tracing::info!(moved, "store suspensions held in spec.suspended moved to their annotation");
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "moving store suspensions out of spec.suspended failed; trying again in a minute");
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                    }
                }
            });
            let ready = process.readiness.clone();
            let (offerings_synced, projects_synced) = (offerings.clone(), projects.clone());
            tokio::spawn(async move {
                if offerings_synced.wait_until_ready().await.is_ok() && projects_synced.wait_until_ready().await.is_ok()
                {
                    tracing::info!("the Offering and Project caches are synced");
                    ready.set(true);
                }
            });
            if let Some((tls, listener)) = admission_tls {
                let router = admission_server::router(admission);
                tokio::spawn(cmp_core::tls::serve("admission", listener, tls, router, process.shutdown.clone()));
            }
            let shutdown = process.shutdown.clone();
            axum::serve(listener, server::router(app))
                .with_graceful_shutdown(shutdown)
                .await
                .context("serving the Saleor routes")
        })
        .await
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("{text:?} is not key=value"))?;
    if key.is_empty() {
        return Err(format!("{text:?} has an empty key"));
    }
    Ok((key.to_string(), value.to_string()))
}
