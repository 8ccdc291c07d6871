//! Graceful shutdown on SIGTERM (Kubernetes) or Ctrl-C (a terminal).

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

/// A future every part of the process can wait on (and clone) for shutdown.
pub type Shutdown = Shared<BoxFuture<'static, ()>>;

/// A [`Shutdown`] that completes on SIGTERM or SIGINT.
pub fn on_signal() -> Shutdown {
    signal().boxed().shared()
}

/// Completes when the process receives SIGTERM or SIGINT.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C; relying on SIGTERM");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; relying on Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
        () = terminate => tracing::info!(signal = "SIGTERM", "shutting down"),
    }
}
