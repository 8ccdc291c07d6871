//! The bare reverse proxy of `cargo xtask bench-gateway`, the ceiling a
//! gateway is measured against: every request forwarded as it came (method,
//! path, `x-api-key`, body) with the same HTTP client the gateway uses, and
//! nothing else. `bare-proxy <listen-addr> <upstream-base-url>`

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(upstream)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: bare-proxy <listen-addr> <upstream-base-url>");
    };
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let app = axum::Router::new().fallback(forward).with_state((http, upstream));
    axum::serve(tokio::net::TcpListener::bind(addr).await?, app).await?;
    Ok(())
}

async fn forward(
    State((http, upstream)): State<(reqwest::Client, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Bytes) {
    let mut request = http.request(method, format!("{upstream}{uri}")).body(body);
    for name in ["x-api-key", "content-type", "authorization"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(answer) => (answer.status(), answer.bytes().await.unwrap_or_default()),
        Err(_) => (StatusCode::BAD_GATEWAY, Bytes::new()),
    }
}
