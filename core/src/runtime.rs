//! The process runtime every CMP binary starts from: logging, the
//! `/healthz`, `/readyz` and `/metrics` server, a counted Kubernetes client
//! and graceful shutdown on SIGTERM. Leader election is in [`crate::lease`].
//!
//! ```no_run
//! # async fn doc(args: cmp_core::runtime::ProcessArgs) -> anyhow::Result<()> {
//! let runtime = cmp_core::runtime::Runtime::new("cmp-gateway", ([127, 0, 0, 1], 8081).into(), &args);
//! runtime.run(|process| async move {
//!     process.readiness.set(true);
//!     process.shutdown.await;
//!     Ok(())
//! }).await
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::api_requests::ApiRequests;
use crate::health::{self, Readiness};
use crate::shutdown::{self, Shutdown};
use crate::telemetry::{self, LogFormat};

/// Process flags every CMP binary takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ProcessArgs {
    /// Address of /healthz, /readyz and /metrics. Default: the binary's own port on 127.0.0.1.
    #[arg(long, env = "CMP_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,
    /// Log format: text (coloured only on a terminal) or json (one object per line, for machines).
    #[arg(long, env = "CMP_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// What the work of a process is handed.
pub struct Process {
    /// Set to true once the process can do its work.
    pub readiness: Readiness,
    /// Completes on SIGTERM or Ctrl-C.
    pub shutdown: Shutdown,
}

/// A process being set up: register metrics and routes, then [`Runtime::run`].
pub struct Runtime {
    name: &'static str,
    health_addr: SocketAddr,
    registry: Registry,
    api_requests: ApiRequests,
    routes: Router,
    shutdown: Shutdown,
}

impl Runtime {
    /// Starts logging and listens for SIGTERM. `default_addr` serves health
    /// and metrics unless `--health-addr` says otherwise.
    pub fn new(name: &'static str, default_addr: SocketAddr, args: &ProcessArgs) -> Self {
        telemetry::init(args.log_format);
        let health_addr = args.health_addr.unwrap_or(default_addr);
        tracing::info!(component = name, version = env!("CARGO_PKG_VERSION"), %health_addr, "starting");
        let mut registry = Registry::with_prefix(name.replace('-', "_"));
        let api_requests = ApiRequests::register(&mut registry);
        Self { name, health_addr, registry, api_requests, routes: Router::new(), shutdown: shutdown::on_signal() }
    }

    /// The metrics registry (prefix: the binary's name), to register the binary's own metrics.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Adds routes to the health server.
    pub fn with_routes(mut self, routes: Router) -> Self {
        self.routes = self.routes.merge(routes);
        self
    }

    /// Completes on SIGTERM or Ctrl-C.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// A Kubernetes client from KUBECONFIG or the in-cluster config, whose
    /// requests are counted in `<binary>_api_requests_total`.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        self.api_requests.client().await
    }

    /// Serves health and metrics, ready at once, until SIGTERM: the life of a
    /// binary that has no work of its own yet.
    pub async fn run_idle(self) -> anyhow::Result<()> {
        self.run(|process| async move {
            process.readiness.set(true);
            process.shutdown.await;
            Ok(())
        })
        .await
    }

    /// Serves `/healthz`, `/readyz` and `/metrics`, and runs `work` until it
    /// returns. `/readyz` stays 503 until the work sets the readiness.
    pub async fn run<F, Fut>(self, work: F) -> anyhow::Result<()>
    where
        F: FnOnce(Process) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let Self { name, health_addr, registry, routes, shutdown, .. } = self;
        let readiness = Readiness::default();
        let registry = Arc::new(registry);
        let metrics = Router::new().route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut text = String::new();
                    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
                        tracing::error!(%error, "encoding metrics");
                    }
                    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], text)
                }
            }),
        );
        let router = health::router(readiness.clone()).merge(metrics).merge(routes);
        let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
        let listener = health::bind(health_addr).await?;
        let server = tokio::spawn(health::serve(listener, router, async {
            let _ = serving_stopped.await;
        }));
        let result = work(Process { readiness: readiness.clone(), shutdown }).await;
        readiness.set(false);
        let _ = stop_serving.send(());
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "the health server failed"),
            Err(error) => tracing::error!(%error, "the health server panicked"),
        }
        match &result {
            Ok(()) => tracing::info!(component = name, "stopped"),
            Err(error) => tracing::error!(component = name, error = format!("{error:#}"), "failed"),
        }
        result
    }
}
