//! The CMP webhook: turns paid Saleor orders into CRs and serves Kubernetes validating admission.
//!
//! Skeleton: it starts, logs, serves `/healthz` and `/readyz`, and shuts
//! down cleanly on SIGTERM. The real work lands with its own issue.

use std::net::SocketAddr;

use clap::Parser;
use cmp_core::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    version,
    about = "The CMP webhook: turns paid Saleor orders into CRs and serves Kubernetes validating admission."
)]
struct Args {
    /// Address of the health endpoints (/healthz, /readyz).
    #[arg(long, env = "CMP_HEALTH_ADDR", default_value = "127.0.0.1:8082")]
    health_addr: SocketAddr,
    /// Log format: text or json.
    #[arg(long, env = "CMP_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), health_addr = %args.health_addr, "cmp-webhook starting");
    cmp_core::health::serve_until_signal(args.health_addr).await?;
    tracing::info!("cmp-webhook stopped");
    Ok(())
}
