//! The `cmp-webhook` process: what it starts, inside the shared process runtime.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use cmp_core::runtime::Runtime;
use cmp_crds::{Offering, Project};

use crate::admission_server::{self, Admission};
use crate::catalog::CreditPackFile;
use crate::cli::Args;
use crate::jwks::JwksCache;
use crate::metrics::Metrics;
use crate::order_record::OrderRecords;
use crate::provisioner::{Provisioner, ProvisionerSettings};
use crate::server::{self, SaleorApp, SaleorSettings};
use crate::webhook_sync::SyncGate;

/// Runs the process with `args` in `runtime` until it is told to stop.
pub async fn run(mut runtime: Runtime, args: Args) -> anyhow::Result<()> {
    let credit_packs = match &args.credit_packs {
        Some(path) => CreditPackFile::load(path)?,
        None => Vec::new(),
    };
    if args.saleor_api_urls.is_empty() {
        tracing::warn!("no --saleor-api-url: every Saleor delivery will be refused with 401");
    }
    let metrics = Arc::new(Metrics::register(runtime.registry()));
    let client = runtime.client().await?;
    let http =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().context("building the HTTP client")?;
    let (offerings, offering_events) = cmp_core::watch::cache_all::<Offering>(&client);
    let (projects, project_events) = cmp_core::watch::cache_all::<Project>(&client);
    let admission_tls = match (&args.admission_cert, &args.admission_key) {
        (Some(cert), Some(key)) => {
            let config = admission_server::tls_config(cert, key)?;
            metrics.admission_certificate_expiry(cmp_core::tls::not_after(cert)?);
            Some((config, admission_server::bind(args.admission_addr).await?))
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
