//! The operator process: CRD check, admission policy, caches, leader
//! election and the controllers, inside the shared process runtime.

use std::sync::Arc;

use anyhow::Context as _;
use cmp_core::runtime::Runtime;
use cmp_crds::{Instance, Offering, Organization, Project, Wallet};
use kube::api::{Api, ListParams};

use crate::cache::Caches;
use crate::cli::Args;
use crate::context::Context;
use crate::metrics::Metrics;
use crate::{admission, controllers};

async fn check_crd<K>(client: &kube::Client) -> anyhow::Result<()>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Api::<K>::all(client.clone()).list_metadata(&ListParams::default().limit(1)).await.with_context(|| {
        format!("listing {}: is the CRD installed? (kubectl apply --server-side -f crds/)", K::plural(&()))
    })?;
    Ok(())
}

async fn check_crds(client: &kube::Client) -> anyhow::Result<()> {
    check_crd::<Organization>(client).await?;
    check_crd::<Project>(client).await?;
    check_crd::<Offering>(client).await?;
    check_crd::<Instance>(client).await?;
    check_crd::<Wallet>(client).await
}

async fn check_selector<K>(client: &kube::Client, flag: &str, selector: &str) -> anyhow::Result<()>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Api::<K>::all(client.clone())
        .list_metadata(&ListParams::default().labels(selector).limit(1))
        .await
        .with_context(|| format!("{flag} {selector:?} is not a valid label selector"))?;
    Ok(())
}

/// Runs the operator until SIGTERM/Ctrl-C, or until it loses leadership (an error: restart as a standby).
pub async fn run(mut runtime: Runtime, args: Args) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::register(runtime.registry()));
    let fleet = crate::fleet::FleetCollector::default();
    runtime.registry().register_collector(Box::new(fleet.clone()));
    let client = runtime.client().await?;
    runtime
        .run(|process| async move {
            let mut settings = args.settings()?;
            if let (Some(gitops), Some((namespace, name))) = (settings.gitops.as_mut(), args.credentials_secret()) {
                gitops.credentials = Some(crate::gitops::Credentials::from_secret(&client, namespace, name).await?);
            }
            if let Some(gitops) = &settings.gitops {
                crate::gitops::Credentials::check_for(gitops.credentials.as_ref(), &gitops.url)?;
            }
            check_crds(&client).await?;
            if let Some(selector) = &settings.organization_selector {
                check_selector::<Organization>(&client, "--organization-selector", selector).await?;
            }
            if let Some(selector) = &settings.offering_selector {
                check_selector::<cmp_crds::Offering>(&client, "--offering-selector", selector).await?;
            }
            let (caches, watches) = Caches::start(&client, &settings);
            let watches = tokio::spawn(futures::future::join_all(watches));
            let caches = Arc::new(caches);
            fleet.watch(caches.clone());
            tokio::select! {
                ready = caches.ready() => ready?,
                () = process.shutdown.clone() => return Ok(()),
            }
            let identity = args.lease.identity();
            let ctx = Arc::new(Context::new(client.clone(), settings, caches, metrics, identity)?);
            if args.admission_policy {
                let writers = admission::install(&ctx.applier, &args.tenancy_label_writers)
                    .await
                    .context("installing the tenancy-label admission policy")?;
                tracing::info!(?writers, policy = admission::POLICY_NAME, "tenancy labels are protected by admission");
            }
            process.readiness.set(true);
            let concurrency = args.concurrency;
            let controllers = |stop| async move {
                tracing::info!("starting the controllers");
                controllers::run(ctx, concurrency, stop).await;
                Ok(())
            };
            let result = if args.lease.leader_election {
                let lease = cmp_crds::names::OPERATOR_MANAGER;
                cmp_core::lease::run_as_leader(&client, &args.lease, lease, process.shutdown, controllers).await
            } else {
                controllers(process.shutdown).await
            };
            watches.abort();
            result
        })
        .await
}
