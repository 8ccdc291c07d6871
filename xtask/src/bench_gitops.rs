//! `cargo xtask bench-gitops`: N Dedicated Instances across P Projects,
//! committed by the release operator's GitOps writer to a real bare
//! repository on a fresh local control plane.
//!
//! 1. **Created at once**: commits, time until all are `Synced` (pushed),
//!    pushes retried, p50/p95 of create -> `Synced`.
//! 2. **Converged**: commits and API writes over a minute (the goal is 0).
//! 3. **Changed at once, with a rival writer** (the `git` CLI committing and
//!    pushing to the same branch in a loop): the same figures, which prove
//!    the retry path under contention.
//!
//! The baseline, measured in the same run: the `git` CLI committing the
//! operator's final tree in one commit and pushing it to a fresh bare repository.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::bail;
use cmp_crds::{Instance, Offering};
use cmp_testenv::git::{BareRemote, git};
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::bench::{
    apply, apply_instances, operator_binary, operator_writes, percentile, scrape, start_operator, sum, tenants, wait,
};

const QUIET_WINDOW: Duration = Duration::from_secs(60);
const ORGANIZATIONS: usize = 10;

/// When each Instance was first seen `Synced=True` for each generation.
type SyncedAt = Arc<Mutex<HashMap<(String, i64), Instant>>>;

fn synced_count(synced_at: &SyncedAt, generation: i64) -> usize {
    synced_at.lock().unwrap_or_else(PoisonError::into_inner).keys().filter(|(_, g)| *g == generation).count()
}

/// Follows every Instance, recording when each generation is first `Synced`.
fn record_synced(client: &kube::Client) -> (SyncedAt, tokio::task::JoinHandle<()>) {
    let synced_at: SyncedAt = Arc::default();
    let recorder = synced_at.clone();
    let events = watcher(Api::<Instance>::all(client.clone()), watcher::Config::default()).applied_objects();
    let task = tokio::spawn(events.for_each(move |event| {
        if let Ok(instance) = event
            && let Some(status) = &instance.status
            && let Some(synced) = cmp_crds::conditions::find(&status.conditions, cmp_crds::conditions::SYNCED)
            && synced.status == cmp_crds::conditions::TRUE
            && synced.observed_generation == instance.meta().generation
        {
            let key = format!("{}/{}", instance.namespace().unwrap_or_default(), instance.name_any());
            let generation = instance.meta().generation.unwrap_or_default();
            recorder
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry((key, generation))
                .or_insert_with(Instant::now);
        }
        std::future::ready(())
    }));
    (synced_at, task)
}

/// What one phase measured.
struct Phase {
    elapsed: Duration,
    /// How long the bench's own writes (one per Instance) took to be accepted.
    sent_in: Duration,
    /// The operator's API writes during the phase (as it counts them: applies, status writes, patches, deletes).
    operator_writes: u64,
    /// The same by kind and verb.
    writes_by_kind: Vec<(String, u64)>,
    /// Reconciles run by kind, with the seconds they took together.
    reconciles_by_kind: Vec<(String, f64, f64)>,
    /// Events the operator published on the bench's objects (not in its write count).
    events: usize,
    commits: u64,
    retries: u64,
    p50: Duration,
    p95: Duration,
}

/// Sends every Instance at `version` (generation `generation`) and waits until all are `Synced` for it.
async fn phase(
    client: &kube::Client,
    port: u16,
    synced_at: &SyncedAt,
    (instances, per_org, per_project): (usize, usize, usize),
    version: &str,
    generation: i64,
) -> anyhow::Result<Phase> {
    let before = scrape(port).await?;
    let events_before = bench_events(client).await?;
    let started = Instant::now();
    let spec =
        |project: &str| json!({"project": project, "offering": "dedicated", "version": version, "plan": "basic"});
    let sent = apply_instances(client, instances, per_org, per_project, spec).await?;
    let sent_in = started.elapsed();
    wait("instances Synced", || synced_count(synced_at, generation) >= instances).await?;
    let elapsed = started.elapsed();
    let after = scrape(port).await?;
    let delta = |name: &str| sum(&after, name).saturating_sub(sum(&before, name));
    let mut latencies: Vec<Duration> = {
        let synced_at = synced_at.lock().unwrap_or_else(PoisonError::into_inner);
        sent.iter()
            .filter_map(|(key, at)| Some(synced_at.get(&(key.clone(), generation))?.saturating_duration_since(*at)))
            .collect()
    };
    latencies.sort();
    Ok(Phase {
        elapsed,
        sent_in,
        operator_writes: delta("cmp_operator_api_writes_total{"),
        writes_by_kind: series_deltas(&before, &after, "cmp_operator_api_writes_total{")
            .into_iter()
            .map(|(series, grew)| (series, grew as u64))
            .collect(),
        reconciles_by_kind: reconciles_by_kind(&before, &after),
        events: bench_events(client).await?.saturating_sub(events_before),
        commits: delta("cmp_operator_gitops_commits_total"),
        retries: delta("cmp_operator_gitops_push_retries_total"),
        p50: percentile(&latencies, 0.50),
        p95: percentile(&latencies, 0.95),
    })
}

/// Each series of `after` that starts with `prefix`, with how much it grew since `before`; the ones that grew.
fn series_deltas(before: &str, after: &str, prefix: &str) -> Vec<(String, f64)> {
    let series = |metrics: &str| -> std::collections::BTreeMap<String, f64> {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.trim_start_matches(prefix).trim_end_matches('}').to_string(), value.parse().ok()?))
            })
            .collect()
    };
    let earlier = series(before);
    series(after)
        .into_iter()
        .map(|(name, value)| (value - earlier.get(&name).copied().unwrap_or(0.0), name))
        .filter(|(grew, _)| *grew > 0.0)
        .map(|(grew, name)| (name, grew))
        .collect()
}

/// Reconciles run per kind during a phase, and the seconds they took together.
fn reconciles_by_kind(before: &str, after: &str) -> Vec<(String, f64, f64)> {
    let seconds: HashMap<String, f64> =
        series_deltas(before, after, "cmp_operator_reconcile_duration_seconds_sum{").into_iter().collect();
    series_deltas(before, after, "cmp_operator_reconciles_total{")
        .into_iter()
        .map(|(kind, count)| {
            let took = seconds.get(&kind).copied().unwrap_or(0.0);
            (kind.trim_start_matches("kind=\"").trim_end_matches('"').to_string(), count, took)
        })
        .collect()
}

/// Events regarding objects in the bench's namespaces.
async fn bench_events(client: &kube::Client) -> anyhow::Result<usize> {
    let events =
        Api::<k8s_openapi::api::events::v1::Event>::all(client.clone()).list(&kube::api::ListParams::default()).await?;
    Ok(events
        .items
        .iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.namespace.as_deref()).is_some_and(|ns| ns.starts_with("cmp-bench-"))
        })
        .count())
}

/// The `git` CLI pushing a commit to `remote`'s branch every `interval` until
/// `stop` (plumbing in a bare clone, no working tree: fetch, commit-tree,
/// push), so that our writer's pushes meet a moved branch: pushes made and refused.
fn rival_writer(
    remote: &BareRemote,
    dir: &Path,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(std::thread::JoinHandle<()>, Arc<AtomicU64>, Arc<AtomicU64>)> {
    let _ = std::fs::remove_dir_all(dir);
    git(None, &["clone", "--quiet", "--bare", &remote.url(), &dir.to_string_lossy()]).map_err(anyhow::Error::msg)?;
    let (pushed, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (p, r, here) = (pushed.clone(), refused.clone(), dir.to_path_buf());
    let thread = std::thread::spawn(move || {
        let here = Some(here.as_path());
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let attempt = git(here, &["fetch", "--quiet", "origin", "+refs/heads/main:refs/heads/main"])
                .and_then(|_| git(here, &["commit-tree", "main^{tree}", "-p", "main", "-m", &format!("rival {n}")]))
                .and_then(|commit| {
                    git(here, &["push", "--quiet", "origin", &format!("{}:refs/heads/main", commit.trim())])
                });
            match attempt {
                Ok(_) => p.fetch_add(1, Ordering::Relaxed),
                Err(_) => r.fetch_add(1, Ordering::Relaxed),
            };
            std::thread::sleep(interval);
        }
    });
    Ok((thread, pushed, refused))
}

/// The baseline: the `git` CLI committing `remote`'s tree in one commit and pushing it to a fresh bare repository.
fn git_cli_baseline(remote: &BareRemote, dir: &Path) -> anyhow::Result<Duration> {
    let work = dir.join("baseline-work");
    let target = BareRemote::create(&dir.join("baseline.git")).map_err(anyhow::Error::msg)?;
    git(None, &["clone", "--quiet", &remote.url(), &work.to_string_lossy()]).map_err(anyhow::Error::msg)?;
    std::fs::remove_dir_all(work.join(".git"))?;
    let here = Some(work.as_path());
    let started = Instant::now();
    for args in [
        &["init", "--quiet", "-b", "main"][..],
        &["add", "--all"],
        &["-c", "user.name=baseline", "-c", "user.email=b@example.com", "commit", "--quiet", "-m", "baseline"],
        &["push", "--quiet", &target.url(), "main"],
    ] {
        git(here, args).map_err(anyhow::Error::msg)?;
    }
    Ok(started.elapsed())
}

fn print_phase(title: &str, instances: usize, p: &Phase) {
    println!("  {title}");
    println!("    commits:                      {} (goal: at most 20)", p.commits);
    println!("    time until all Synced+pushed: {:.2} s (goal: under 10 s)", p.elapsed.as_secs_f64());
    println!("    pushes retried:               {}", p.retries);
    println!("    change -> Synced, p50:        {:.2} s", p.p50.as_secs_f64());
    println!("    change -> Synced, p95:        {:.2} s ({instances} Instances)", p.p95.as_secs_f64());
    // The writes behind the figures: the bench's creates or changes (and how fast it sent them), and the
    // operator's, which go through the same API server and etcd on the same cores.
    let rate = instances as f64 / p.sent_in.as_secs_f64().max(f64::EPSILON);
    println!(
        "    API writes:                   the bench's {instances} took {:.2} s ({rate:.0}/s); the operator's {} ({:.1} per Instance)",
        p.sent_in.as_secs_f64(),
        p.operator_writes,
        p.operator_writes as f64 / instances as f64
    );
    let by_kind: Vec<String> = p.writes_by_kind.iter().map(|(series, n)| format!("{series}: {n}")).collect();
    println!("      by kind and verb:           {}", by_kind.join("; "));
    let reconciles: Vec<String> =
        p.reconciles_by_kind.iter().map(|(kind, count, took)| format!("{kind}: {count:.0} ({took:.1} s)")).collect();
    println!("    reconciles (their time summed): {}", reconciles.join("; "));
    println!(
        "      Events published:           {} ({:.1} per Instance; not in the count above)",
        p.events,
        p.events as f64 / instances as f64
    );
}

/// Runs the benchmark: `instances` Dedicated Instances across `projects` Projects in ten Organizations.
pub async fn run(
    instances: usize,
    projects: usize,
    rival_interval: Duration,
    binary: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    if projects == 0 || !projects.is_multiple_of(ORGANIZATIONS) || !instances.is_multiple_of(projects) {
        bail!("--projects must be a multiple of {ORGANIZATIONS}, and --instances a multiple of --projects");
    }
    let shape = (instances, projects / ORGANIZATIONS, instances / projects);
    let binary = operator_binary(binary).await?;
    let dir = cmp_testenv::control_plane::cache_dir().join("bench").join(std::process::id().to_string());
    let (plane, client) = crate::start(&dir).await?;
    let remote = BareRemote::create(&dir.join("tenants.git")).map_err(anyhow::Error::msg)?;
    let clone = dir.join("operator-clone").to_string_lossy().into_owned();
    let flags = ["--gitops-repo", &remote.url(), "--gitops-clone-dir", &clone];
    let (mut operator, port) = start_operator(&binary, &dir, &plane, &flags).await?;

    let (url, sha256) = cmp_testenv::lfx::example_flow("echo.json")?;
    let version = |name: &str| json!({"name": name, "artifact": {"url": url, "sha256": sha256}, "flowId": "echo"});
    let offering = json!({"apiVersion": Offering::api_version(&()), "kind": "Offering", "metadata": {"name": "dedicated"},
        "spec": {"displayName": "Dedicated", "runtime": {"mode": "Dedicated", "image": "langflowai/langflow:1.5.0", "port": 7860},
                 "versions": [version("1"), version("2")], "plans": [{"id": "basic", "creditsPerRun": 1}]}});
    apply(&Api::<Offering>::all(client.clone()), "dedicated", offering).await?;
    tenants(&client, ORGANIZATIONS, shape.1, shape.2).await?;
    let (synced_at, recorder) = record_synced(&client);

    eprintln!("creating {instances} Dedicated Instances at once ...");
    let created = phase(&client, port, &synced_at, shape, "1", 1).await?;
    println!(
        "bench-gitops: {instances} Dedicated Instances across {projects} Projects, one bare repository (file://), release operator, 2 cores"
    );
    print_phase("created at once:", instances, &created);
    let commits_converged = remote.log().len();
    let writes = operator_writes(port).await?;
    eprintln!("converged; watching commits and API writes for {QUIET_WINDOW:?} ...");
    tokio::time::sleep(QUIET_WINDOW).await;
    println!("  converged, over {QUIET_WINDOW:?}:");
    println!("    commits:                      {} (goal 0)", remote.log().len() - commits_converged);
    println!("    operator API writes:          {} (goal 0)", operator_writes(port).await? - writes);
    let baseline = git_cli_baseline(&remote, &dir)?;
    println!(
        "  baseline, the git CLI:         {:.2} s to commit the same {instances} folders in one commit and push them (same run)",
        baseline.as_secs_f64()
    );

    eprintln!("changing all {instances} to version 2 at once, with a rival writer pushing to the same branch ...");
    let stop = Arc::new(AtomicBool::new(false));
    let (rival, rival_pushed, rival_refused) = rival_writer(&remote, &dir.join("rival"), rival_interval, stop.clone())?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let changed = phase(&client, port, &synced_at, shape, "2", 2).await;
    stop.store(true, Ordering::Relaxed);
    let _ = rival.join();
    let changed = changed?;
    let files = git(Some(remote.path()), &["ls-tree", "-r", "--name-only", "HEAD"]).map_err(anyhow::Error::msg)?;
    let folders = files.lines().filter(|f| f.ends_with("/configmap.yaml")).count();
    let version_two = git(Some(remote.path()), &["grep", "-c", "version: '2'", "HEAD", "--", "tenants"]);
    let version_two: usize =
        version_two.unwrap_or_default().lines().filter_map(|l| l.rsplit(':').next()?.parse::<usize>().ok()).sum();
    let title = format!(
        "changed at once (version 1 -> 2), with a rival writer pushing to the same branch every {} ms:",
        rival_interval.as_millis()
    );
    print_phase(&title, instances, &changed);
    println!(
        "    rival writer:                 {} pushes landed, {} refused (the git CLI: fetch, commit-tree, push)",
        rival_pushed.load(Ordering::Relaxed),
        rival_refused.load(Ordering::Relaxed)
    );
    println!("    after: {folders} Instance folders in the tree, {version_two} of them at version 2");

    recorder.abort();
    let _ = operator.start_kill();
    let _ = operator.wait().await;
    drop(plane);
    crate::bench::clean_up_keeping_log(&dir, "bench-gitops");
    Ok(())
}
