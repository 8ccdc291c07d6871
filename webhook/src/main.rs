//! The CMP webhook: turns paid Saleor orders into CRs and serves Kubernetes validating admission.
//!
//! Skeleton: it starts from the shared process runtime (logging, `/healthz`,
//! `/readyz`, `/metrics`, clean SIGTERM). The real work lands with its own issue.

use clap::Parser;
use cmp_core::runtime::{ProcessArgs, Runtime};

#[derive(Parser)]
#[command(
    version,
    about = "The CMP webhook: turns paid Saleor orders into CRs and serves Kubernetes validating admission."
)]
struct Args {
    #[command(flatten)]
    process: ProcessArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    Runtime::new("cmp-webhook", ([127, 0, 0, 1], 8082).into(), &args.process).run_idle().await
}
