//! The life of a binary that has no work of its own yet: log, serve the
//! health endpoints, stop cleanly on SIGTERM.

use std::net::SocketAddr;

use crate::telemetry::{self, LogFormat};

/// Flags every CMP binary takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address of the health endpoints (/healthz, /readyz). Default: the binary's own port on 127.0.0.1.
    #[arg(long, env = "CMP_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,
    /// Log format: text or json.
    #[arg(long, env = "CMP_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// Runs `component` until SIGTERM or Ctrl-C, serving health on `args.health_addr` or `default_addr`.
pub async fn run(component: &'static str, default_addr: SocketAddr, args: ServeArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    let addr = args.health_addr.unwrap_or(default_addr);
    tracing::info!(component, version = env!("CARGO_PKG_VERSION"), health_addr = %addr, "starting");
    crate::health::serve_until_signal(addr).await?;
    tracing::info!(component, "stopped");
    Ok(())
}
