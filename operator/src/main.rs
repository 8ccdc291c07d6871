//! The CMP operator binary.

use clap::Parser;
use cmp_core::runtime::Runtime;
use cmp_operator::cli::Args;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = Runtime::new("cmp-operator", ([127, 0, 0, 1], 8080).into(), &args.process);
    cmp_operator::run::run(runtime, args).await
}
