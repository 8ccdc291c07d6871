//! The load generator of `cargo xtask bench-gateway`: the same for every
//! contender. Closed loop: `--connections` workers, each on its own
//! connection, send the request back to back for `--seconds` (after a
//! one-second warm-up); or open loop with `--rate` requests per second in
//! total, each latency counted from when its request was due. Prints one
//! JSON line: requests, errors (non-2xx or failed), RPS, p50 and p99 in
//! milliseconds.

use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The URL to POST to.
    url: String,
    /// The JSON body.
    #[arg(long, default_value = "{}")]
    body: String,
    /// Headers, `name: value`.
    #[arg(long = "header")]
    headers: Vec<String>,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests per second in total (open loop); 0: as fast as answers come.
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("content-type", "application/json".parse()?);
    for header in &args.headers {
        let (name, value) =
            header.split_once(':').ok_or_else(|| anyhow::anyhow!("--header {header:?}: want `name: value`"))?;
        headers.insert(reqwest::header::HeaderName::from_bytes(name.trim().as_bytes())?, value.trim().parse()?);
    }
    let warm_up = Instant::now() + Duration::from_secs(1);
    let end = warm_up + Duration::from_secs(args.seconds);
    let per_worker_gap = (args.rate > 0).then(|| Duration::from_secs_f64(args.connections as f64 / args.rate as f64));
    let mut workers = Vec::new();
    for worker in 0..args.connections {
        let client = reqwest::Client::builder().pool_max_idle_per_host(1).default_headers(headers.clone()).build()?;
        let (url, body) = (args.url.clone(), args.body.clone());
        workers.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            let mut next = Instant::now() + per_worker_gap.map_or(Duration::ZERO, |g| g.mul_f64(worker as f64 / 32.0));
            loop {
                // Open loop: latency counts from when the request was due, so a slow answer that delays the
                // next request is not hidden (no coordinated omission).
                let sent = match per_worker_gap {
                    Some(gap) => {
                        tokio::time::sleep_until(next.into()).await;
                        next += gap;
                        next - gap
                    }
                    None => Instant::now(),
                };
                if sent >= end {
                    break;
                }
                let ok = match client.post(&url).body(body.clone()).send().await {
                    Ok(answer) => answer.status().is_success() && answer.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if sent >= warm_up {
                    latencies.push(sent.elapsed());
                    errors += u64::from(!ok);
                }
            }
            (latencies, errors)
        }));
    }
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for worker in futures::future::join_all(workers).await {
        let (l, e) = worker?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    let pick = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let result = serde_json::json!({
        "requests": latencies.len(), "errors": errors,
        "rps": latencies.len() as f64 / args.seconds as f64, "p50_ms": pick(0.5), "p99_ms": pick(0.99),
    });
    println!("{result}");
    Ok(())
}
