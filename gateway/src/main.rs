//! The CMP gateway: authorizes agent runs against CR status, debits prepaid credits and forwards to the runtimes.
//!
//! Skeleton: it starts, logs, serves `/healthz` and `/readyz`, and shuts
//! down cleanly on SIGTERM. The real work lands with its own issue.

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "The CMP gateway: authorizes agent runs against CR status, debits prepaid credits and forwards to the runtimes."
)]
struct Args {
    #[command(flatten)]
    serve: cmp_core::skeleton::ServeArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cmp_core::skeleton::run("cmp-gateway", ([127, 0, 0, 1], 8081).into(), Args::parse().serve).await
}
