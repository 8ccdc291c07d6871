//! The CMP webhook: turns paid Saleor orders into CRs and serves Kubernetes validating admission.
//!
//! Skeleton: it starts, logs, serves `/healthz` and `/readyz`, and shuts
//! down cleanly on SIGTERM. The real work lands with its own issue.

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "The CMP webhook: turns paid Saleor orders into CRs and serves Kubernetes validating admission."
)]
struct Args {
    #[command(flatten)]
    serve: cmp_core::skeleton::ServeArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cmp_core::skeleton::run("cmp-webhook", ([127, 0, 0, 1], 8082).into(), Args::parse().serve).await
}
