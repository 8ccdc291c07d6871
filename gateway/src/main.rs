//! The CMP gateway: authorizes agent runs against CR status, debits prepaid credits and forwards to the runtimes.
//!
//! Skeleton: it starts from the shared process runtime (logging, `/healthz`,
//! `/readyz`, `/metrics`, clean SIGTERM). The real work lands with its own issue.

use clap::Parser;
use cmp_core::runtime::{ProcessArgs, Runtime};

#[derive(Parser)]
#[command(
    version,
    about = "The CMP gateway: authorizes agent runs against CR status, debits prepaid credits and forwards to the runtimes."
)]
struct Args {
    #[command(flatten)]
    process: ProcessArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    Runtime::new("cmp-gateway", ([127, 0, 0, 1], 8081).into(), &args.process).run_idle().await
}
