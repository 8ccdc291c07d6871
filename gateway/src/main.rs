//! The CMP gateway: authorizes agent runs against CR status, debits prepaid credits and forwards to the runtimes.
//!
//! Skeleton: it starts, logs, serves `/healthz` and `/readyz`, and shuts
//! down cleanly on SIGTERM. The real work lands with its own issue.

use std::net::SocketAddr;

use clap::Parser;
use cmp_core::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    version,
    about = "The CMP gateway: authorizes agent runs against CR status, debits prepaid credits and forwards to the runtimes."
)]
struct Args {
    /// Address of the health endpoints (/healthz, /readyz).
    #[arg(long, env = "CMP_HEALTH_ADDR", default_value = "127.0.0.1:8081")]
    health_addr: SocketAddr,
    /// Log format: text or json.
    #[arg(long, env = "CMP_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), health_addr = %args.health_addr, "cmp-gateway starting");
    cmp_core::health::serve_until_signal(args.health_addr).await?;
    tracing::info!("cmp-gateway stopped");
    Ok(())
}
