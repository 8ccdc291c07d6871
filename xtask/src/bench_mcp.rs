//! `cargo xtask bench-mcp`: what the connector gateway adds to a tool call.
//! On a fresh local control plane, with the release operator and gateway, a
//! dev OpenBao holding the binding's credential, and a trivial MCP server
//! (`bench-mcp-server`, release build, stateless, JSON answers):
//! 1. `tools/call` sent to the MCP server directly, with the credential;
//! 2. the same call through `POST /v1/connectors/{binding}/mcp` with a
//!    run's token: run token, binding, tool rule, audit record, a priced
//!    call held from the Wallet's lease, destination and credential.
//!
//! Both at a fixed rate (open loop, `--rate` calls/s, latency counted from
//! when each call was due), the load generator on CPU 0 and every server on
//! CPU 1. Prints p50 and p99 of each, what the gateway adds, and its CPU per
//! call. The run whose token is used is held open by the `LangflowStandIn`.

use std::time::Duration;

use serde_json::json;

use crate::bench::{operator_binary, release_binary, start_operator};
use crate::bench_gateway::{
    Load, ORG, apply, cpu_seconds, instance, measure_at, organization, ready_key, spawn, stand_in_key, wait_http,
};

const RUNTIME_KEY: &str = "bench-runtime-key";
const CREDENTIAL: &str = "Bearer bench-desk-credential";
const RUN_TOKEN_SECRET: &str = "a bench run-token secret of 32 characters or more";

/// A run of the Instance whose key is `key`, sent through the gateway at `base` and held open by the stand-in
/// `runtime`, and the run's token the runtime received: connector calls present it. The run ends when the runtime
/// releases it (`release_held`).
pub(crate) async fn held_run(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    runtime: &cmp_testenv::langflow_stand_in::LangflowStandIn,
) -> anyhow::Result<(tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>, String)> {
    let request = http.post(format!("{base}/v1/runs")).header("x-api-key", key).json(&json!({"input_value": "hold"}));
    let held = tokio::spawn(request.send());
    for _ in 0..600 {
        if let Some(token) = runtime.seen().first().and_then(|s| s.run_token.clone()) {
            return Ok((held, token));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the held run's token did not reach the runtime within 30 s")
}

/// Runs the benchmark: `rate` calls per second for `seconds`, over `connections`.
pub async fn run(rate: u64, seconds: u64, connections: usize) -> anyhow::Result<()> {
    let operator = operator_binary(None).await?;
    let gateway_bin = release_binary("cmp-gateway", "cmp-gateway").await?;
    let mcp_bin = release_binary("cmp-gateway-bench", "bench-mcp-server").await?;
    let load_bin = release_binary("cmp-gateway-bench", "bench-load").await?;
    let dir = cmp_testenv::control_plane::cache_dir().join("bench").join(std::process::id().to_string());
    let (plane, client) = crate::start(&dir).await?;
    let runtime = cmp_testenv::langflow_stand_in::LangflowStandIn::start(RUNTIME_KEY).await?;
    let bao = cmp_testenv::openbao::OpenBao::start(&dir.join("bao"), "bench-root").await?;
    let path = format!("connectors/{ORG}/support/desk");
    let secret = CREDENTIAL.trim_start_matches("Bearer ");
    bao.run(&["kv", "put", "-mount=secret", &path, &format!("token={secret}")])?;
    let (mcp_port, gw_port, gw_health) =
        (cmp_testenv::free_port()?, cmp_testenv::free_port()?, cmp_testenv::free_port()?);
    let mcp_url = format!("http://127.0.0.1:{mcp_port}/mcp");
    // Started on CPU 1, so their runtimes size themselves to it.
    let (mcp_path, mcp_addr) = (mcp_bin.display().to_string(), format!("127.0.0.1:{mcp_port}"));
    let taskset = std::path::Path::new("taskset");
    let _mcp_server = spawn(taskset, &["-c", "1", &mcp_path, &mcp_addr, CREDENTIAL], &dir.join("mcp.log"))?;
    let (_operator, _) = start_operator(&operator, &dir, &plane, &[]).await?;

    eprintln!("applying the bench Offering, Organization and Instance ...");
    stand_in_key(&client, RUNTIME_KEY).await?;
    let (flow_url, sha256) = cmp_testenv::lfx::example_flow("echo.json")?;
    apply(&client, json!({
        "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Offering", "metadata": {"name": "bench-desk"},
        "spec": {"displayName": "Desk",
                 "runtime": {"mode": "Shared", "api": "v1", "endpoint": runtime.url(),
                             "apiKeySecretRef": {"namespace": "default", "name": "bench-stand-in", "key": "apiKey"}},
                 "versions": [{"name": "1", "flowId": "echo", "artifact": {"url": flow_url, "sha256": sha256}}],
                 "connectors": [{"type": "tickets", "tools": ["echo"]}],
                 "plans": [{"id": "basic", "creditsPerRun": 1, "creditsPerToolCall": 1, "requestsPerMinute": 1000000,
                            "timeoutSeconds": 3600}]},
    }))
    .await?;
    organization(&client).await?;
    let mut desk = instance("desk", "bench-desk", json!([{"name": "main"}]));
    desk["spec"]["connectors"] = json!([{"name": "desk", "type": "tickets", "vaultPath": path, "url": mcp_url,
                                         "allowedTools": ["echo"]}]);
    apply(&client, desk).await?;
    let (_, key) = ready_key(&client, "desk", "main").await?;

    let gw_log = std::fs::File::create(dir.join("gateway.log"))?;
    let gateway = tokio::process::Command::new("taskset")
        .args(["-c", "1"])
        .arg(&gateway_bin)
        .env("KUBECONFIG", plane.kubeconfig())
        .env("RUST_LOG", "warn")
        .args(["--addr", &format!("127.0.0.1:{gw_port}"), "--health-addr", &format!("127.0.0.1:{gw_health}")])
        .args(["--usage-file", &dir.join("usage.jsonl").display().to_string(), "--replica-name", "bench"])
        .args(["--run-token-secret", RUN_TOKEN_SECRET, "--connector-allowed-hosts", "127.0.0.1"])
        .args(["--connector-denied-networks", "169.254.0.0/16", "--connector-probe-seconds", "0"])
        .args(["--vault-addr", bao.addr(), "--vault-token", bao.token()])
        .stdout(gw_log.try_clone()?)
        .stderr(gw_log)
        .kill_on_drop(true)
        .spawn()?;
    wait_http(&format!("http://127.0.0.1:{gw_health}/readyz"), "the gateway").await?;

    // A run the runtime holds open, whose token the calls present.
    let http = reqwest::Client::new();
    let (held, token) = held_run(&http, &format!("http://127.0.0.1:{gw_port}"), &key, &runtime).await?;

    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "echo", "arguments": {"text": "hello"}}});
    let mcp_headers = |authorization: &str| {
        vec![
            format!("authorization: {authorization}"),
            "accept: application/json, text/event-stream".to_string(),
            "mcp-protocol-version: 2025-06-18".to_string(),
        ]
    };
    // The first call reads the credential from OpenBao, pins the destination and takes the Wallet's first lease:
    // timed on its own, then both paths are warmed before they are measured.
    let first = std::time::Instant::now();
    let warm = |url: String, authorization: String| {
        let request = http
            .post(url)
            .header("authorization", authorization)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(&call);
        async move { request.send().await?.error_for_status()?.bytes().await }
    };
    let through_url = format!("http://127.0.0.1:{gw_port}/v1/connectors/desk/mcp");
    let bearer = format!("Bearer {token}");
    warm(through_url.clone(), bearer.clone()).await?;
    let first = first.elapsed();
    for _ in 0..200 {
        warm(through_url.clone(), bearer.clone()).await?;
        warm(mcp_url.clone(), CREDENTIAL.to_string()).await?;
    }
    let load = Load { connections, seconds };
    eprintln!("measuring each path at {rate} calls/s for {seconds} s ...");
    let direct = measure_at(&load_bin, &mcp_url, &call, &mcp_headers(CREDENTIAL), load, Some(rate)).await?;
    let cpu_before = cpu_seconds(gateway.id());
    let through = measure_at(&load_bin, &through_url, &call, &mcp_headers(&bearer), load, Some(rate)).await?;
    let cpu = cpu_seconds(gateway.id()) - cpu_before;
    runtime.release_held();
    let _ = held.await;

    println!(
        "\nconnector gateway benchmark: tools/call at {rate}/s (open loop) for {seconds} s, {connections} connections"
    );
    println!("load generator on CPU 0; the MCP server and the gateway on CPU 1; the control plane unpinned");
    println!("{:<44} {:>10} {:>10} {:>10} {:>8}", "path", "calls/s", "p50 ms", "p99 ms", "errors");
    for (name, f) in [("MCP server directly", direct), ("through the connector gateway", through)] {
        println!("{name:<44} {:>10.0} {:>10.3} {:>10.3} {:>8}", f.rps, f.p50, f.p99, f.errors);
    }
    println!(
        "added by the gateway: p50 {:+.3} ms, p99 {:+.3} ms (goal: at most 1 ms at p99); gateway CPU per call {:.1} us",
        through.p50 - direct.p50,
        through.p99 - direct.p99,
        1e6 * cpu / (through.rps * (seconds as f64 + 1.0)).max(1.0)
    );
    println!(
        "the first call through the gateway (credential read, destination pinned, first lease): {:.1} ms",
        first.as_secs_f64() * 1000.0
    );
    println!("\nlogs and the audit records: {}", dir.display());
    Ok(())
}
