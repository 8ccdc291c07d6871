//! The CMP operator binary.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = cmp_operator::config::Config::parse();
    cmp_core::telemetry::init(config.log_format);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), health_addr = %config.health_addr, "cmp-operator starting");
    let result = cmp_operator::run::run(config).await;
    match &result {
        Ok(()) => tracing::info!("cmp-operator stopped"),
        Err(error) => tracing::error!(error = format!("{error:#}"), "cmp-operator failed"),
    }
    result
}
