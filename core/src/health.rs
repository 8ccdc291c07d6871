//! `/healthz` (the process is alive) and `/readyz` (it can do its work).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

/// Whether the process is ready; shared between the work and the endpoint.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the process ready (or not).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
    /// True when ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why the health server could not run.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}; choose another address with the health/metrics address flag")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("health server failed: {0}")]
    Serve(std::io::Error),
}

/// The routes `/healthz` and `/readyz`; merge more (such as `/metrics`) into it.
pub fn router(readiness: Readiness) -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(readyz)).with_state(readiness)
}

async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    if readiness.is_ready() { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
}

/// Binds `addr` (a clear error when it is taken).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, HealthError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| HealthError::Bind { addr, source })
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), HealthError> {
    if let Ok(local) = listener.local_addr() {
        tracing::info!(addr = %local, "serving /healthz, /readyz and /metrics");
    }
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await.map_err(HealthError::Serve)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, response.rsplit("\r\n\r\n").next().unwrap_or_default().to_string())
    }

    #[tokio::test]
    async fn healthz_is_ok_and_readyz_follows_readiness_over_real_http() {
        let readiness = Readiness::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            axum::serve(listener, router(readiness.clone()))
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .into_future(),
        );
        assert_eq!(get(addr, "/healthz").await, (200, "ok".into()));
        assert_eq!(get(addr, "/readyz").await.0, 503);
        readiness.set(true);
        assert_eq!(get(addr, "/readyz").await, (200, "ok".into()));
        assert_eq!(get(addr, "/nope").await.0, 404);
        let _ = stop.send(());
        server.await.expect("join").expect("server stops cleanly");
    }

    #[tokio::test]
    async fn a_taken_port_is_a_clear_error() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("addr");
        let error = bind(addr).await.expect_err("port is taken");
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
    }
}
