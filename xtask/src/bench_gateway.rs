//! `cargo xtask bench-gateway`: the gateway against its ceiling and its
//! peer, on a fresh local control plane, with one load generator
//! (`bench-load`, release build) and the same connections and duration for
//! every contender:
//! 1. the trivial upstream (`bench-upstream`, the Langflow stand-in) hit directly;
//! 2. a bare reverse proxy (`bare-proxy`, axum + reqwest, the ceiling) in front of it;
//! 3. `cmp-gateway` (release) in front of it: API-key auth, rate limit,
//!    credit leases and usage events (file sink) on;
//! 4. LiteLLM proxy (PyPI `litellm[proxy]`) in front of the same upstream,
//!    with a virtual key and an rpm limit (its `custom_auth`: virtual keys
//!    with a database need Prisma engines that do not install here).
//!
//! Then, at fixed rates of 1,000 and 3,000 requests/s (open loop), the p50
//! and p99 the gateway adds to the bare proxy's, with the servers on one CPU
//! and the load generator on the other. Then: a real lfx run through the gateway against lfx directly; the delay
//! from revoking a key to its first 401; and the Wallet writes per second
//! that 1,000 runs/s cause.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cmp_crds::Instance;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::bench::{operator_binary, percentile, plane_with_lfx, release_binary, start_operator, sum};

const RUNTIME_KEY: &str = "bench-runtime-key";
pub(crate) const ORG: &str = "bench";
/// The LiteLLM release compared against (see ../shared/notes/peers.md).
const LITELLM: &str = "litellm[proxy]==1.106.2";
const LITELLM_KEY: &str = "sk-bench-virtual";

/// Load settings shared by every contender.
#[derive(Clone, Copy)]
pub struct Load {
    pub connections: usize,
    pub seconds: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Figures {
    pub rps: f64,
    pub p50: f64,
    pub p99: f64,
    pub errors: u64,
}

pub(crate) fn spawn(binary: &Path, args: &[&str], log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    Command::new(binary)
        .args(args)
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

pub(crate) async fn wait_http(url: &str, what: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if http.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what} did not answer GET {url} within 60 s")
}

async fn measure(load_bin: &Path, url: &str, body: &Value, headers: &[String], load: Load) -> anyhow::Result<Figures> {
    measure_at(load_bin, url, body, headers, load, None).await
}

/// Like `measure`; with `rate`, open loop at that many requests per second in total (latency from when each was due),
/// the load generator pinned to CPU 0.
pub(crate) async fn measure_at(
    load_bin: &Path,
    url: &str,
    body: &Value,
    headers: &[String],
    load: Load,
    rate: Option<u64>,
) -> anyhow::Result<Figures> {
    let mut command = match rate {
        Some(_) => {
            let mut pinned = Command::new("taskset");
            pinned.args(["-c", "0"]).arg(load_bin);
            pinned
        }
        None => Command::new(load_bin),
    };
    command.arg(url).args(["--body", &body.to_string()]);
    command.args(["--connections", &load.connections.to_string(), "--seconds", &load.seconds.to_string()]);
    if let Some(rate) = rate {
        command.args(["--rate", &rate.to_string()]);
    }
    for header in headers {
        command.args(["--header", header]);
    }
    let out = command.stderr(Stdio::inherit()).output().await?;
    anyhow::ensure!(out.status.success(), "bench-load failed against {url}");
    let result: Value = serde_json::from_slice(&out.stdout)?;
    Ok(Figures {
        rps: result["rps"].as_f64().unwrap_or_default(),
        p50: result["p50_ms"].as_f64().unwrap_or_default(),
        p99: result["p99_ms"].as_f64().unwrap_or_default(),
        errors: result["errors"].as_u64().unwrap_or_default(),
    })
}

pub(crate) async fn apply(client: &kube::Client, object: Value) -> anyhow::Result<()> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    let params = PatchParams::apply(crate::MANAGER).force();
    match kind.as_str() {
        "Offering" => {
            Api::<cmp_crds::Offering>::all(client.clone()).patch(&name, &params, &Patch::Apply(object)).await?;
        }
        "Organization" => {
            Api::<cmp_crds::Organization>::all(client.clone()).patch(&name, &params, &Patch::Apply(object)).await?;
        }
        "Project" => {
            Api::<cmp_crds::Project>::namespaced(client.clone(), &format!("cmp-{ORG}"))
                .patch(&name, &params, &Patch::Apply(object))
                .await?;
        }
        _ => {
            Api::<Instance>::namespaced(client.clone(), &format!("cmp-{ORG}"))
                .patch(&name, &params, &Patch::Apply(object))
                .await?;
        }
    }
    Ok(())
}

fn offering(name: &str, api: &str, endpoint: &str) -> anyhow::Result<Value> {
    let (url, sha256) = cmp_testenv::lfx::example_flow("echo.json")?;
    Ok(json!({
        "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Offering", "metadata": {"name": name},
        "spec": {"displayName": name,
                 "runtime": {"mode": "Shared", "api": api, "endpoint": endpoint,
                             "apiKeySecretRef": {"namespace": "default", "name": "bench-lfx", "key": "apiKey"}},
                 "versions": [{"name": "1", "flowId": "echo", "artifact": {"url": url, "sha256": sha256}}],
                 "plans": [{"id": "basic", "creditsPerRun": 1, "requestsPerMinute": 1000000, "timeoutSeconds": 30}]},
    }))
}

/// The Secret `default/bench-stand-in` with the runtime stand-in's API key `key` (key `apiKey`).
pub(crate) async fn stand_in_key(client: &kube::Client, key: &str) -> anyhow::Result<()> {
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some("bench-stand-in".into()), ..Default::default() },
        string_data: Some([("apiKey".to_string(), key.to_string())].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), "default").create(&kube::api::PostParams::default(), &secret).await?;
    Ok(())
}

pub(crate) fn instance(name: &str, offering: &str, keys: Value) -> Value {
    json!({
        "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance", "metadata": {"name": name},
        "spec": {"project": "support", "offering": offering, "version": "1", "plan": "basic", "apiKeys": keys},
    })
}

/// Applies the bench Organization (a billion starter credits) and its Project `support`.
pub(crate) async fn organization(client: &kube::Client) -> anyhow::Result<()> {
    apply(client, json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Organization", "metadata": {"name": ORG},
                         "spec": {"displayName": "Bench", "owners": [{"name": "bench"}], "starterCredits": 1_000_000_000_i64}})).await?;
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    for _ in 0..600 {
        if namespaces.get_opt(&format!("cmp-{ORG}")).await?.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    apply(
        client,
        json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Project", "metadata": {"name": "support"},
                         "spec": {"displayName": "Support"}}),
    )
    .await
}

/// Waits until Instance `name` is Ready with key `key` issued; its flow id and that key's plaintext.
pub(crate) async fn ready_key(client: &kube::Client, name: &str, key: &str) -> anyhow::Result<(String, String)> {
    let instances = Api::<Instance>::namespaced(client.clone(), &format!("cmp-{ORG}"));
    let secrets = Api::<Secret>::namespaced(client.clone(), &format!("cmp-{ORG}"));
    for _ in 0..1200 {
        if let Some(status) = instances.get_opt(name).await?.and_then(|i| i.status) {
            let ready = cmp_crds::conditions::is_true(&status.conditions, cmp_crds::conditions::READY);
            if let (true, Some(issued), Some(flow)) =
                (ready, status.api_keys.iter().find(|k| k.name == key), status.flow_id.clone())
                && let Some(data) = secrets.get_opt(&issued.secret.name).await?.and_then(|s| s.data)
                && let Some(value) = data.get(&issued.secret.key)
            {
                return Ok((flow, String::from_utf8(value.0.clone())?));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("Instance {name} was not Ready with key {key} within 120 s")
}

/// LiteLLM's process group: its workers are child processes, so stopping it
/// means signalling the whole group (dropping this does).
struct ProcessGroup(Child);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        }
    }
}

/// Writes LiteLLM's config and auth hook into `dir` and starts it in its own process group; its base URL.
async fn start_litellm(dir: &Path, upstream: &str) -> anyhow::Result<(ProcessGroup, String)> {
    let venv = cmp_testenv::lfx::python_venv("litellm", LITELLM)?;
    let port = cmp_testenv::free_port()?;
    let auth = format!(
        "from fastapi import Request\nfrom litellm.proxy._types import UserAPIKeyAuth\n\nasync def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:\n    if api_key != '{LITELLM_KEY}':\n        raise Exception('invalid key')\n    return UserAPIKeyAuth(api_key=api_key, rpm_limit=100000000)\n"
    );
    std::fs::write(dir.join("bench_auth.py"), auth)?;
    let config = format!(
        "model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/bench\n      api_base: {upstream}/v1\n      api_key: unused\ngeneral_settings:\n  master_key: sk-bench-master\n  custom_auth: bench_auth.user_api_key_auth\n"
    );
    std::fs::write(dir.join("litellm.yaml"), config)?;
    let log = std::fs::File::create(dir.join("litellm.log"))?;
    let child = Command::new(venv.join("bin/litellm"))
        .current_dir(dir)
        .args(["--config", "litellm.yaml", "--host", "127.0.0.1", "--port", &port.to_string(), "--num_workers", "2"])
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("PYTHONPATH", dir)
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .context("starting LiteLLM")?;
    let group = ProcessGroup(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{base}/health/liveliness"), "LiteLLM").await?;
    Ok((group, base))
}

/// `n` sequential runs; p50 and p95 in milliseconds.
async fn sequential(n: usize, request: impl Fn() -> reqwest::RequestBuilder) -> anyhow::Result<(f64, f64)> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let answer = request().send().await?;
        anyhow::ensure!(answer.status().is_success(), "a run answered {}", answer.status());
        answer.bytes().await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok((ms(percentile(&samples, 0.5)), ms(percentile(&samples, 0.95))))
}

/// Runs the benchmark.
pub async fn run(load: Load) -> anyhow::Result<()> {
    let operator = operator_binary(None).await?;
    let gateway_bin = release_binary("cmp-gateway", "cmp-gateway").await?;
    let upstream_bin = release_binary("cmp-gateway-bench", "bench-upstream").await?;
    let proxy_bin = release_binary("cmp-gateway-bench", "bare-proxy").await?;
    let load_bin = release_binary("cmp-gateway-bench", "bench-load").await?;
    let (dir, plane, client, lfx) = plane_with_lfx(RUNTIME_KEY).await?;
    let (up_port, proxy_port, gw_port, gw_health) =
        (cmp_testenv::free_port()?, cmp_testenv::free_port()?, cmp_testenv::free_port()?, cmp_testenv::free_port()?);
    let upstream = format!("http://127.0.0.1:{up_port}");
    let upstream_process =
        spawn(&upstream_bin, &[&format!("127.0.0.1:{up_port}"), RUNTIME_KEY], &dir.join("upstream.log"))?;
    let (_operator, _) = start_operator(&operator, &dir, &plane, &[]).await?;

    eprintln!("applying the bench Offerings, Organization and Instances ...");
    apply(&client, offering("bench-trivial", "v1", &upstream)?).await?;
    apply(&client, offering("bench-lfx", "v2", lfx.url())?).await?;
    organization(&client).await?;
    apply(&client, instance("trivial", "bench-trivial", json!([{"name": "main"}]))).await?;
    apply(&client, instance("echo", "bench-lfx", json!([{"name": "main"}]))).await?;
    let (trivial_flow, trivial_key) = ready_key(&client, "trivial", "main").await?;
    let (echo_flow, echo_key) = ready_key(&client, "echo", "main").await?;

    let gw_log = std::fs::File::create(dir.join("gateway.log"))?;
    let gateway_process = Command::new(&gateway_bin)
        .env("KUBECONFIG", plane.kubeconfig())
        .env("RUST_LOG", "warn")
        .args(["--addr", &format!("127.0.0.1:{gw_port}"), "--health-addr", &format!("127.0.0.1:{gw_health}")])
        .args(["--usage-file", &dir.join("usage.jsonl").display().to_string(), "--replica-name", "bench"])
        .stdout(gw_log.try_clone()?)
        .stderr(gw_log)
        .kill_on_drop(true)
        .spawn()?;
    wait_http(&format!("http://127.0.0.1:{gw_health}/readyz"), "the gateway").await?;
    let proxy_process = spawn(&proxy_bin, &[&format!("127.0.0.1:{proxy_port}"), &upstream], &dir.join("proxy.log"))?;
    wait_http(&format!("http://127.0.0.1:{proxy_port}/flows/none/info"), "the bare proxy").await.ok();
    let run_body = json!({"input_value": "hi"});
    let runtime_header = vec![format!("x-api-key: {RUNTIME_KEY}")];
    eprintln!("measuring each contender for {} s with {} connections ...", load.seconds, load.connections);
    let direct =
        measure(&load_bin, &format!("{upstream}/api/v1/run/{trivial_flow}"), &run_body, &runtime_header, load).await?;
    let proxy_cpu = cpu_seconds(proxy_process.id());
    let bare = measure(
        &load_bin,
        &format!("http://127.0.0.1:{proxy_port}/api/v1/run/{trivial_flow}"),
        &run_body,
        &runtime_header,
        load,
    )
    .await?;
    let proxy_cpu = cpu_seconds(proxy_process.id()) - proxy_cpu;
    let gateway_cpu = cpu_seconds(gateway_process.id());
    let gateway = measure(
        &load_bin,
        &format!("http://127.0.0.1:{gw_port}/v1/runs"),
        &run_body,
        &[format!("x-api-key: {trivial_key}")],
        load,
    )
    .await?;
    let gateway_cpu = cpu_seconds(gateway_process.id()) - gateway_cpu;
    // Fixed rates (open loop): what the gateway adds to the bare proxy's latency, with every server on CPU 1 and
    // the load generator on CPU 0.
    for pid in [proxy_process.id(), gateway_process.id(), upstream_process.id()] {
        pin(pid, "1")?;
    }
    let mut fixed = Vec::new();
    for rate in [1000, 3000] {
        let url = format!("http://127.0.0.1:{proxy_port}/api/v1/run/{trivial_flow}");
        let bare_at = measure_at(&load_bin, &url, &run_body, &runtime_header, load, Some(rate)).await?;
        let url = format!("http://127.0.0.1:{gw_port}/v1/runs");
        let key_header = [format!("x-api-key: {trivial_key}")];
        let gateway_at = measure_at(&load_bin, &url, &run_body, &key_header, load, Some(rate)).await?;
        fixed.push((rate, bare_at, gateway_at));
    }
    for pid in [proxy_process.id(), gateway_process.id(), upstream_process.id()] {
        pin(pid, "0-1")?;
    }
    // LiteLLM runs only for its own measurement (its idle workers would load the others' runs).
    eprintln!("installing/starting LiteLLM ({LITELLM}) ...");
    let (litellm_group, litellm) = start_litellm(&dir, &upstream).await?;
    let chat = json!({"model": "bench", "messages": [{"role": "user", "content": "hi"}]});
    let peer = measure(
        &load_bin,
        &format!("{litellm}/v1/chat/completions"),
        &chat,
        &[format!("authorization: Bearer {LITELLM_KEY}")],
        load,
    )
    .await?;
    drop(litellm_group);

    println!(
        "\ncmp-gateway benchmark: {} connections, {} s each, one load generator (bench-load)",
        load.connections, load.seconds
    );
    println!("{:<36} {:>10} {:>10} {:>10} {:>8}", "contender", "RPS", "p50 ms", "p99 ms", "errors");
    for (name, f) in [
        ("trivial upstream, direct", direct),
        ("bare reverse proxy (axum+reqwest)", bare),
        ("cmp-gateway (auth, limit, credits)", gateway),
        ("LiteLLM proxy (virtual key, rpm)", peer),
    ] {
        println!("{name:<36} {:>10.0} {:>10.2} {:>10.2} {:>8}", f.rps, f.p50, f.p99, f.errors);
    }
    println!(
        "gateway / bare proxy: {:.1}% of the RPS (goal >= 90%); gateway / LiteLLM: {:.1}x the RPS (goal >= 20x)",
        100.0 * gateway.rps / bare.rps.max(f64::MIN_POSITIVE),
        gateway.rps / peer.rps.max(f64::MIN_POSITIVE)
    );
    // CPU over the warm-up and the measurement, against requests at the measured rate over both.
    let per_request = |cpu: f64, f: Figures| 1e6 * cpu / (f.rps * (load.seconds as f64 + 1.0)).max(1.0);
    println!(
        "CPU per request: bare proxy {:.1} us, cmp-gateway {:.1} us (process user+system time over the measurement)",
        per_request(proxy_cpu, bare),
        per_request(gateway_cpu, gateway)
    );

    println!(
        "\nat fixed rates (open loop, latency from when each request was due): the load generator on CPU 0; the upstream, the bare proxy and the gateway on CPU 1; the control plane unpinned"
    );
    println!(
        "{:<10} {:>14} {:>14} {:>14} {:>14} {:>12} {:>12}",
        "rate/s", "bare p50 ms", "bare p99 ms", "gateway p50", "gateway p99", "added p50", "added p99"
    );
    for (rate, b, g) in &fixed {
        println!(
            "{rate:<10} {:>14.3} {:>14.3} {:>14.3} {:>14.3} {:>+12.3} {:>+12.3}",
            b.p50,
            b.p99,
            g.p50,
            g.p99,
            g.p50 - b.p50,
            g.p99 - b.p99
        );
        if b.errors + g.errors > 0 {
            println!("           errors: bare {}, gateway {}", b.errors, g.errors);
        }
    }
    println!("(goal: +0.2 ms at p99; agentgateway's public figure, without auth or credits, is about +0.3 ms)");

    // A real lfx run through the gateway, against lfx directly.
    let http = reqwest::Client::new();
    let through = sequential(50, || {
        http.post(format!("http://127.0.0.1:{gw_port}/v1/runs"))
            .header("x-api-key", &echo_key)
            .json(&json!({"input_value": "hello"}))
    })
    .await?;
    let direct_lfx = sequential(50, || {
        http.post(format!("{}/api/v2/workflows", lfx.url()))
            .header("x-api-key", RUNTIME_KEY)
            .json(&json!({"flow_id": echo_flow, "input_value": "hello", "mode": "sync"}))
    })
    .await?;
    println!(
        "a real lfx run (50, one at a time): through the gateway p50 {:.1} ms / p95 {:.1} ms; lfx directly p50 {:.1} ms / p95 {:.1} ms",
        through.0, through.1, direct_lfx.0, direct_lfx.1
    );

    // Revocation: from the write to the first 401.
    let mut delays = Vec::new();
    for round in 0..5 {
        let name = format!("rev-{round}");
        apply(&client, instance(&name, "bench-trivial", json!([{"name": "main"}]))).await?;
        let (_, key) = ready_key(&client, &name, "main").await?;
        let gw_run =
            || http.post(format!("http://127.0.0.1:{gw_port}/v1/runs")).header("x-api-key", &key).json(&run_body);
        while !gw_run().send().await?.status().is_success() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = Instant::now();
        apply(&client, instance(&name, "bench-trivial", json!([{"name": "main", "revoked": true}]))).await?;
        while gw_run().send().await?.status() != 401 {}
        delays.push(started.elapsed());
    }
    delays.sort();
    println!(
        "revoking a key -> its first 401 (5 keys): p50 {:.1} ms, max {:.1} ms (from sending the write; the watch delivers it)",
        percentile(&delays, 0.5).as_secs_f64() * 1000.0,
        delays.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );

    // Wallet writes at 1,000 runs/s.
    let metrics_url = format!("http://127.0.0.1:{gw_health}/metrics");
    let writes = |text: &str| sum(text, "cmp_gateway_lease_writes_total{");
    let before = writes(&http.get(&metrics_url).send().await?.text().await?);
    let out = Command::new(&load_bin)
        .arg(format!("http://127.0.0.1:{gw_port}/v1/runs"))
        .args(["--body", &run_body.to_string(), "--header", &format!("x-api-key: {trivial_key}")])
        .args(["--connections", "32", "--seconds", "10", "--rate", "1000"])
        .output()
        .await?;
    let result: Value = serde_json::from_slice(&out.stdout)?;
    let after = writes(&http.get(&metrics_url).send().await?.text().await?);
    println!(
        "at {:.0} runs/s for 10 s (open loop, asked 1,000/s): {:.1} Wallet writes/s (meter writes, conflicts included: {} in ~11 s)",
        result["rps"].as_f64().unwrap_or_default(),
        (after - before) as f64 / 11.0,
        after - before
    );
    println!("\nlogs and the usage events: {}", dir.display());
    Ok(())
}

/// Pins process `pid` (all its threads) to the CPUs `cpus` (a taskset list such as "1" or "0-1").
pub(crate) fn pin(pid: Option<u32>, cpus: &str) -> anyhow::Result<()> {
    let pid = pid.context("a process without a pid")?;
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "taskset could not pin process {pid} to CPUs {cpus}");
    Ok(())
}

/// User plus system CPU seconds of process `pid` so far (Linux `/proc`), 0 when unknown.
pub(crate) fn cpu_seconds(pid: Option<u32>) -> f64 {
    let Some(stat) = pid.and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at ") ".
    let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, rest)| rest.split(' ').collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name; 100 ticks a second.
    (ticks(11) + ticks(12)) / 100.0
}
