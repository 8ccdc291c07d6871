//! The process: health and metrics endpoints, CRD check, admission policy,
//! leader election, the controllers, and graceful shutdown.

use std::sync::Arc;

use anyhow::Context as _;
use axum::routing::get;
use cmp_core::health::{self, Readiness};
use cmp_crds::{Instance, Offering, Organization, Project, Wallet};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube_lease_manager::LeaseManagerBuilder;

use crate::config::Config;
use crate::context::Context;
use crate::metrics::Metrics;
use crate::{admission, controllers};

/// A future every part of the process can wait on for shutdown.
type Stop = Shared<BoxFuture<'static, ()>>;

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

fn metrics_route(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move { ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], metrics.encode()) }
        }),
    )
}

/// Runs the operator until SIGTERM/Ctrl-C, or until it loses leadership (an error: restart as a standby).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let client =
        kube::Client::try_default().await.context("connecting to the cluster (KUBECONFIG or in-cluster config)")?;
    let metrics = Arc::new(Metrics::default());
    let readiness = Readiness::default();
    let stop: Stop = cmp_core::shutdown::signal().boxed().shared();

    let router = health::router(readiness.clone()).merge(metrics_route(metrics.clone()));
    let server = tokio::spawn(health::serve(config.health_addr, router, stop.clone()));

    check_crds(&client).await?;
    if !config.organization_selector.is_empty() {
        Api::<Organization>::all(client.clone())
            .list_metadata(&ListParams::default().labels(&config.organization_selector).limit(1))
            .await
            .with_context(|| {
                format!("--organization-selector {:?} is not a valid label selector", config.organization_selector)
            })?;
    }
    let ctx = Arc::new(Context::new(client.clone(), config.clone(), metrics));
    if config.admission_policy {
        let writers = admission::install(&ctx.applier, &config.tenancy_label_writers)
            .await
            .context("installing the tenancy-label admission policy")?;
        tracing::info!(?writers, policy = admission::POLICY_NAME, "tenancy labels are protected by admission");
    }
    readiness.set(true);

    let result = if config.leader_election {
        run_as_leader(ctx, &config, stop).await
    } else {
        controllers::run(ctx, stop).await;
        Ok(())
    };
    readiness.set(false);
    server.abort();
    result
}

async fn ensure_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let api = Api::<Namespace>::all(client.clone());
    if api.get_metadata_opt(name).await?.is_none() {
        let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        api.patch(name, &PatchParams::apply(cmp_crds::names::OPERATOR_MANAGER), &Patch::Apply(ns))
            .await
            .with_context(|| format!("creating the lease namespace {name}"))?;
    }
    Ok(())
}

async fn run_as_leader(ctx: Arc<Context>, config: &Config, stop: Stop) -> anyhow::Result<()> {
    ensure_namespace(&ctx.client, &config.lease_namespace).await?;
    let identity = config.identity();
    let manager = LeaseManagerBuilder::new(ctx.client.clone(), &config.lease_name)
        .with_namespace(&config.lease_namespace)
        .with_identity(&identity)
        .with_duration(config.lease_duration_seconds)
        .with_grace(config.lease_duration_seconds.div_ceil(3).max(1))
        .build()
        .await
        .context("setting up leader election")?;
    let (mut leader, lease_task) = manager.watch().await;
    tracing::info!(%identity, lease = %config.lease_name, namespace = %config.lease_namespace, "waiting to become the leader");
    let became_leader = async {
        let _ = leader.wait_for(|is_leader| *is_leader).await;
    };
    tokio::select! {
        () = became_leader => {}
        () = stop.clone() => {
            drop(leader);
            let _ = lease_task.await;
            return Ok(());
        }
    }
    tracing::info!(%identity, "became the leader; starting the controllers");

    let mut watch_loss = leader.clone();
    let lost = async move {
        let _ = watch_loss.wait_for(|is_leader| !*is_leader).await;
    }
    .shared();
    let controllers_stop = futures::future::select(stop.clone(), lost.clone()).map(|_| ()).boxed().shared();
    controllers::run(ctx, controllers_stop).await;
    let lost_leadership = lost.now_or_never().is_some() && stop.clone().now_or_never().is_none();
    drop(leader);
    let _ = lease_task.await;
    if lost_leadership {
        anyhow::bail!("lost the leader lease; exiting so that a fresh process can stand by");
    }
    tracing::info!("released the leader lease");
    Ok(())
}
