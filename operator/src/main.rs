//! The CMP operator: reconciles Organizations, Projects, Offerings, Instances
//! and Wallets into runtime namespaces, GitOps commits and secrets.
//!
//! Skeleton: it connects to the cluster, checks that the CRDs are installed,
//! serves `/healthz` and `/readyz`, and shuts down cleanly on SIGTERM.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use cmp_core::telemetry::{self, LogFormat};
use cmp_crds::{Instance, Offering, Organization, Project, Wallet};
use kube::api::{Api, ListParams};

#[derive(Parser)]
#[command(version, about = "The CMP operator")]
struct Args {
    /// Address of the health endpoints (/healthz, /readyz).
    #[arg(long, env = "CMP_HEALTH_ADDR", default_value = "127.0.0.1:8080")]
    health_addr: SocketAddr,
    /// Log format: text or json.
    #[arg(long, env = "CMP_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

/// Fails with a clear message when a CRD is not installed.
async fn check_crd<K>(client: &kube::Client) -> anyhow::Result<()>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Api::<K>::all(client.clone())
        .list_metadata(&ListParams::default().limit(1))
        .await
        .with_context(|| {
            format!(
                "listing {}: is the CRD installed? (kubectl apply --server-side -f crds/)",
                K::plural(&())
            )
        })?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), health_addr = %args.health_addr, "cmp-operator starting");
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster (KUBECONFIG or in-cluster config)")?;
    check_crd::<Organization>(&client).await?;
    check_crd::<Project>(&client).await?;
    check_crd::<Offering>(&client).await?;
    check_crd::<Instance>(&client).await?;
    check_crd::<Wallet>(&client).await?;
    tracing::info!("all CMP CRDs are served");
    cmp_core::health::serve_until_signal(args.health_addr).await?;
    tracing::info!("cmp-operator stopped");
    Ok(())
}
