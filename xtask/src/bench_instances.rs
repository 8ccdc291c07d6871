//! `cargo xtask bench-instances`: N Instances (one API key each) across P
//! Projects on a Shared Offering, from cold, on a fresh local control plane
//! and a real lfx runtime. Prints the time until all are Ready, p50 and p95
//! of create -> Ready, the operator's API writes against the minimum, its
//! peak RSS, and its writes per minute once converged (the goal is 0).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::bail;
use cmp_crds::{Instance, Offering};
use futures::{StreamExt, TryStreamExt};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::bench::{
    apply, apply_instances, minimum_writes, operator_binary, operator_writes, peak_rss_kib, percentile, plane_with_lfx,
    ready, scrape, start_operator, sum, tenants, wait,
};

const CLIENT_CONCURRENCY: usize = 16;
const QUIET_WINDOW: Duration = Duration::from_secs(60);
const ORGANIZATIONS: usize = 10;
const RUNTIME_KEY: &str = "bench-runtime-key";

/// Writes the operator makes at least per Instance: its finalizer, its key Secret, its status.
const PER_INSTANCE: u64 = 3;

/// Tries a request to lfx again, as the operator does, when the runtime resets the connection (or fails it with
/// a 5xx): lfx under load resets connections now and then ("Connection reset by peer"). Each such failure is
/// counted in `resets`; after `ATTEMPTS` the last error stands.
async fn with_retries(
    resets: &AtomicU64,
    request: impl Fn() -> reqwest::RequestBuilder,
    what: &str,
) -> anyhow::Result<reqwest::Response> {
    const ATTEMPTS: u32 = 8;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let failure = match request().send().await {
            Ok(response) if !response.status().is_server_error() => return Ok(response),
            Ok(response) => format!("lfx answered {} to {what}", response.status()),
            Err(error) => format!("{what}: {error}"),
        };
        resets.fetch_add(1, Ordering::Relaxed);
        if attempt >= ATTEMPTS {
            bail!("{failure} ({ATTEMPTS} attempts)");
        }
        tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
    }
}

/// The baseline, measured on the same runtime before the operator starts:
/// `count` flow uploads straight to lfx, `CLIENT_CONCURRENCY` at a time (the
/// runtime's own floor for registering that many flows), then removed; a
/// reset connection is retried and counted in `resets`.
async fn direct_uploads(lfx: &cmp_testenv::lfx::Lfx, count: usize, resets: &AtomicU64) -> anyhow::Result<Duration> {
    let (url, _) = cmp_testenv::lfx::example_flow("echo.json")?;
    let path = url.strip_prefix("file://").unwrap_or(&url);
    let flow: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
    let http = reqwest::Client::new();
    let ids: Vec<String> = (0..count).map(|i| cmp_crds::names::flow_id("bench", "direct", &i.to_string())).collect();
    let started = Instant::now();
    futures::stream::iter(ids.iter())
        .map(|id| {
            let body = json!({"id": id, "name": "direct", "data": flow["data"], "replace": true});
            let http = &http;
            async move {
                let request =
                    || http.post(format!("{}/flows/upload/", lfx.url())).header("x-api-key", lfx.api_key()).json(&body);
                let response = with_retries(resets, request, "an upload").await?;
                anyhow::ensure!(response.status().is_success(), "lfx answered {} to an upload", response.status());
                Ok(())
            }
        })
        .buffer_unordered(CLIENT_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let elapsed = started.elapsed();
    futures::stream::iter(ids.iter())
        .map(|id| {
            let http = &http;
            async move {
                let request = || http.delete(format!("{}/flows/{id}", lfx.url())).header("x-api-key", lfx.api_key());
                with_retries(resets, request, "a removal").await
            }
        })
        .buffer_unordered(CLIENT_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(elapsed)
}

/// Runs the benchmark: `instances` Instances across `projects` Projects in ten Organizations.
pub async fn run(instances: usize, projects: usize, binary: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    if projects == 0 || !projects.is_multiple_of(ORGANIZATIONS) || !instances.is_multiple_of(projects) {
        bail!("--projects must be a multiple of {ORGANIZATIONS}, and --instances a multiple of --projects");
    }
    let (per_org, per_project) = (projects / ORGANIZATIONS, instances / projects);
    let binary = operator_binary(binary).await?;
    let (dir, plane, client, lfx) = plane_with_lfx(RUNTIME_KEY).await?;
    eprintln!("baseline: {instances} uploads straight to lfx ...");
    let baseline_resets = AtomicU64::new(0);
    let baseline = direct_uploads(&lfx, instances, &baseline_resets).await?;
    let (mut operator, port) = start_operator(&binary, &dir, &plane, &[]).await?;
    let pid = operator.id().unwrap_or_default();

    eprintln!("setting up a Shared Offering, {ORGANIZATIONS} organizations and {projects} projects ...");
    let (url, sha256) = cmp_testenv::lfx::example_flow("echo.json")?;
    let offering = json!({"apiVersion": Offering::api_version(&()), "kind": "Offering", "metadata": {"name": "echo"},
        "spec": {"displayName": "Echo", "runtime": {"mode": "Shared", "endpoint": lfx.url(),
                 "apiKeySecretRef": {"namespace": "default", "name": "bench-lfx", "key": "apiKey"}},
                 "versions": [{"name": "1", "artifact": {"url": url, "sha256": sha256}, "flowId": "echo"}],
                 "plans": [{"id": "basic", "creditsPerRun": 1}]}});
    apply(&Api::<Offering>::all(client.clone()), "echo", offering).await?;
    tenants(&client, ORGANIZATIONS, per_org, per_project).await?;

    // Record when each Instance is first seen Ready.
    let ready_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let recorder = {
        let ready_at = ready_at.clone();
        let events = watcher(Api::<Instance>::all(client.clone()), watcher::Config::default()).applied_objects();
        tokio::spawn(events.for_each(move |event| {
            if let Ok(instance) = event
                && ready(instance.status.as_ref().map(|s| &s.conditions))
            {
                let key = format!("{}/{}", instance.namespace().unwrap_or_default(), instance.name_any());
                ready_at.lock().unwrap_or_else(PoisonError::into_inner).entry(key).or_insert_with(Instant::now);
            }
            std::future::ready(())
        }))
    };
    let writes_before = operator_writes(port).await?;
    eprintln!("creating {instances} instances, {per_project} per project ...");
    let started = Instant::now();
    let spec = |project: &str| json!({"project": project, "offering": "echo", "version": "1", "plan": "basic", "apiKeys": [{"name": "main"}]});
    let created = apply_instances(&client, instances, per_org, per_project, spec).await?;
    wait("instances Ready", || ready_at.lock().unwrap_or_else(PoisonError::into_inner).len() >= instances).await?;
    let elapsed = started.elapsed();
    let metrics = scrape(port).await?;
    let writes = sum(&metrics, "cmp_operator_api_writes_total{");
    let rss = peak_rss_kib(pid);
    // Reconciles that lfx failed (a reset connection, a 5xx): the operator retried each with backoff.
    let operator_resets: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("cmp_operator_reconcile_errors_total{") && l.contains("reason=\"RuntimeUnavailable\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    let mut latencies: Vec<Duration> = {
        let ready_at = ready_at.lock().unwrap_or_else(PoisonError::into_inner);
        created.iter().filter_map(|(key, at)| Some(ready_at.get(key)?.saturating_duration_since(*at))).collect()
    };
    latencies.sort();
    eprintln!("converged; watching the operator's writes for {QUIET_WINDOW:?} ...");
    tokio::time::sleep(QUIET_WINDOW).await;
    let quiet_writes = operator_writes(port).await? - writes;
    let minimum_instances = instances as u64 * PER_INSTANCE + 1;
    let minimum = minimum_writes(ORGANIZATIONS, per_org) + minimum_instances;

    println!(
        "bench-instances: {instances} Instances (one API key each) across {projects} Projects, Shared Offering, real lfx runtime, from cold, 2 cores"
    );
    println!("  time until all Instances Ready: {:.1} s (from the first create)", elapsed.as_secs_f64());
    println!("  create -> Ready, p50:           {:.2} s", percentile(&latencies, 0.50).as_secs_f64());
    println!("  create -> Ready, p95:           {:.2} s", percentile(&latencies, 0.95).as_secs_f64());
    println!(
        "  baseline, lfx alone:            {:.1} s for {instances} uploads straight to the runtime, {CLIENT_CONCURRENCY} at a time (same run, same runtime)",
        baseline.as_secs_f64()
    );
    println!(
        "  lfx resets met (retried):       baseline {}, operator {operator_resets} (reconciles failed RuntimeUnavailable)",
        baseline_resets.load(Ordering::Relaxed)
    );
    println!(
        "  operator API writes:            {writes} (of which {} while the Instances converged)",
        writes - writes_before
    );
    println!(
        "  minimum writes needed:          {minimum} (tenancy, plus per Instance: finalizer, key Secret, status; plus the Offering status)"
    );
    println!("  writes / minimum:               {:.3}", writes as f64 / minimum as f64);
    println!(
        "  operator peak RSS:              {}",
        rss.map_or("unknown".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
    );
    println!("  writes per minute, converged:   {quiet_writes} (over {QUIET_WINDOW:?}; goal 0)");
    println!("  writes by kind and verb:");
    for line in metrics.lines().filter_map(|l| l.strip_prefix("cmp_operator_api_writes_total")) {
        println!("    {line}");
    }

    recorder.abort();
    let _ = operator.start_kill();
    let _ = operator.wait().await;
    drop(lfx);
    drop(plane);
    crate::bench::clean_up_keeping_log(&dir, "bench-instances");
    Ok(())
}
