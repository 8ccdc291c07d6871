//! The CMP gateway: authorizes agent runs against the CRs, rate-limits them,
//! pays for them from credits leased on the Wallet and forwards them to the
//! runtimes. See the crate docs and the README's "The gateway" section.

use clap::Parser;
use cmp_core::runtime::Runtime;
use cmp_gateway::cli::Args;

/// mimalloc: the run path allocates per request (headers, JSON, the usage
/// event), and glibc's allocator showed as a quarter of the gateway's CPU
/// under load (`perf`), contended between worker threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = Runtime::new("cmp-gateway", ([127, 0, 0, 1], 8081).into(), &args.process);
    cmp_gateway::run::run(runtime, args).await
}
