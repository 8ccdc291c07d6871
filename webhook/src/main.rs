//! The CMP webhook: turns paid Saleor orders into CRs, and serves validating
//! admission for the rules CEL cannot express.

use clap::Parser;
use cmp_core::runtime::Runtime;
use cmp_webhook::cli::Args;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = Runtime::new("cmp-webhook", ([127, 0, 0, 1], 8082).into(), &args.process);
    cmp_webhook::run::run(runtime, args).await
}
