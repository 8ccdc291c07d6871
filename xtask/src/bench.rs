//! `cargo xtask bench-tenancy`: N Organizations with one Project each, from
//! cold, on a fresh local control plane, against the release operator (or
//! `--operator-binary`, to measure another build the same way). Prints the
//! time until all are Ready, the operator's API writes against the minimum
//! the desired state needs, its API reads per reconcile, its peak RSS, and
//! its writes per minute once converged (the goal is 0).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cmp_crds::{Organization, OrganizationSpec, Project, ProjectSpec};
use cmp_operator::organization::desired as org_desired;
use cmp_operator::project::desired as project_desired;
use cmp_operator::settings::NetworkSettings;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

use crate::{MANAGER, root, start};

/// How many requests the benchmark client sends at once.
const CLIENT_CONCURRENCY: usize = 16;
/// How long the converged operator is watched for writes.
const QUIET_WINDOW: Duration = Duration::from_secs(60);

pub(crate) fn ready(conditions: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>) -> bool {
    conditions.is_some_and(|c| cmp_crds::conditions::is_true(c, "Ready"))
}

/// The fewest writes the operator can make for `orgs` organizations with
/// `projects` projects each, counted from the same desired-state functions
/// the operator uses: every child once (the Wallet with its starter grant),
/// each finalizer once, each status once.
pub(crate) fn minimum_writes(orgs: usize, projects: usize) -> u64 {
    let org = Organization::new("o", OrganizationSpec::default());
    let oc = org_desired::children(&org, None);
    // finalizer, namespace, Wallet (created with its starter grant in one write), roles, bindings, org status, wallet status
    let per_org = 1 + 1 + 1 + oc.roles.len() + oc.role_bindings.len() + 1 + 1;
    let settings = NetworkSettings {
        gateway_namespace: "g".into(),
        dns_namespace: "d".into(),
        gateway_port: 8080,
        artifact_egress: Vec::new(),
    };
    let pc = project_desired::children("o", &OrganizationSpec::default(), "p", &ProjectSpec::default(), &settings);
    // finalizer, namespace, quota, limits, policies, service account, roles, bindings, status
    let per_project = 1 + 1 + 1 + 1 + pc.network_policies.len() + 1 + pc.roles.len() + pc.role_bindings.len() + 1;
    let admission_policy = 2;
    ((per_org + per_project * projects) * orgs + admission_policy) as u64
}

pub(crate) async fn scrape(port: u16) -> anyhow::Result<String> {
    let (status, body) = cmp_testenv::test::http_get(([127, 0, 0, 1], port).into(), "/metrics").await?;
    anyhow::ensure!(status == 200, "GET /metrics answered {status}");
    Ok(body)
}

/// The sum of the series of `metrics` that start with `prefix`.
pub(crate) fn sum(metrics: &str, prefix: &str) -> u64 {
    metrics.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum()
}

pub(crate) async fn operator_writes(port: u16) -> anyhow::Result<u64> {
    Ok(sum(&scrape(port).await?, "cmp_operator_api_writes_total{"))
}

/// Reads the operator sent (GETs that are not watches: gets and lists), if it counts them.
pub(crate) fn operator_reads(metrics: &str) -> Option<u64> {
    let series = "cmp_operator_api_requests_total{method=\"GET\",watch=\"false\"}";
    metrics.contains(series).then(|| sum(metrics, series))
}

pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The fresh benchmark directory of this process, a control plane in it,
/// and a real lfx runtime whose API key is in the Secret `default/bench-lfx`
/// (key `apiKey`), for Shared Offerings to name.
pub(crate) async fn plane_with_lfx(
    runtime_key: &str,
) -> anyhow::Result<(std::path::PathBuf, cmp_testenv::ControlPlane, kube::Client, cmp_testenv::lfx::Lfx)> {
    use k8s_openapi::api::core::v1::Secret;
    let dir = cmp_testenv::control_plane::cache_dir().join("bench").join(std::process::id().to_string());
    let (plane, client) = crate::start(&dir).await?;
    let lfx = cmp_testenv::lfx::Lfx::start(&dir, runtime_key).await?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some("bench-lfx".into()), ..Default::default() },
        string_data: Some([("apiKey".to_string(), runtime_key.to_string())].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), "default").create(&kube::api::PostParams::default(), &secret).await?;
    Ok((dir, plane, client, lfx))
}

/// The `p` quantile (0..=1) of sorted durations; zero when there are none.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// `binary`, or else the release build of this checkout (built now).
pub(crate) async fn operator_binary(binary: Option<std::path::PathBuf>) -> anyhow::Result<std::path::PathBuf> {
    match binary {
        Some(binary) => Ok(binary),
        None => release_binary("cmp-operator", "cmp-operator").await,
    }
}

/// Builds `binary` of `package` in release mode and returns its path.
pub(crate) async fn release_binary(package: &str, binary: &str) -> anyhow::Result<std::path::PathBuf> {
    eprintln!("building the release {binary} ...");
    let built = tokio::process::Command::from(cmp_testenv::cargo_command())
        .args(["build", "--release", "-p", package, "--bin", binary])
        .status()
        .await?;
    if !built.success() {
        bail!("cargo build --release -p {package} failed");
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| root().join("target"));
    Ok(target.join("release").join(binary))
}

/// Starts the operator against `plane`, logging to `dir/operator.log`, and waits for its metrics.
pub(crate) async fn start_operator(
    binary: &std::path::Path,
    dir: &std::path::Path,
    plane: &cmp_testenv::ControlPlane,
    extra: &[&str],
) -> anyhow::Result<(tokio::process::Child, u16)> {
    let port = cmp_testenv::free_port()?;
    let log = std::fs::File::create(dir.join("operator.log"))?;
    let operator = tokio::process::Command::new(binary)
        .env("KUBECONFIG", plane.kubeconfig())
        .args(["--health-addr", &format!("127.0.0.1:{port}"), "--concurrency", "16"])
        .args(extra)
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the operator {}", binary.display()))?;
    wait_for_metrics(port).await?;
    Ok((operator, port))
}

/// Removes a bench's run folder, keeping its operator's log as `<bench>-operator.log` beside it (the
/// last run's, for reading after the figures: the GitOps writer logs each batch it writes, for one).
pub(crate) fn clean_up_keeping_log(dir: &std::path::Path, bench: &str) {
    if let Some(parent) = dir.parent() {
        let kept = parent.join(format!("{bench}-operator.log"));
        if std::fs::rename(dir.join("operator.log"), &kept).is_ok() {
            eprintln!("the operator's log of this run: {}", kept.display());
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs the benchmark with `orgs` organizations, against `binary` or else the release build of this checkout.
pub async fn run(orgs: usize, binary: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let binary = operator_binary(binary).await?;
    let dir = cmp_testenv::control_plane::cache_dir().join("bench").join(std::process::id().to_string());
    let (plane, client) = start(&dir).await?;
    let (mut operator, port) = start_operator(&binary, &dir, &plane, &[]).await?;
    let pid = operator.id().unwrap_or_default();

    eprintln!("creating {orgs} organizations with one project each ...");
    let started = Instant::now();
    let params = PatchParams::apply(MANAGER);
    let org_api = Api::<Organization>::all(client.clone());
    futures::stream::iter(0..orgs)
        .map(|i| {
            let (api, params) = (org_api.clone(), params.clone());
            async move {
                let name = format!("bench-{i:04}");
                let org = json!({"apiVersion": Organization::api_version(&()), "kind": "Organization", "metadata": {"name": name},
                                 "spec": {"displayName": format!("Bench {i}")}});
                api.patch(&name, &params, &Patch::Apply(org)).await
            }
        })
        .buffer_unordered(CLIENT_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .context("creating organizations")?;
    create_projects_as_namespaces_appear(&client, orgs).await?;
    let converged = wait_until_ready(&client, orgs).await?;
    let elapsed = started.elapsed();
    let metrics = scrape(port).await?;
    let writes = sum(&metrics, "cmp_operator_api_writes_total{");
    let reads = operator_reads(&metrics);
    let reconciles = sum(&metrics, "cmp_operator_reconciles_total{");
    let breakdown: Vec<String> =
        metrics.lines().filter_map(|l| l.strip_prefix("cmp_operator_api_writes_total")).map(str::to_string).collect();
    let rss = peak_rss_kib(pid);
    eprintln!("converged; watching the operator's writes for {QUIET_WINDOW:?} ...");
    tokio::time::sleep(QUIET_WINDOW).await;
    let quiet_writes = operator_writes(port).await? - writes;
    let minimum = minimum_writes(orgs, 1);

    println!(
        "bench-tenancy: {orgs} organizations x 1 project, from cold, local control plane (etcd + kube-apiserver v1.35), 2 cores"
    );
    println!("  time until all Ready:           {:.1} s ({converged} objects Ready)", elapsed.as_secs_f64());
    println!("  operator API writes:            {writes}");
    println!("  minimum writes needed:          {minimum} (baseline: every child, grant and status written once)");
    println!("  writes / minimum:               {:.3}", writes as f64 / minimum as f64);
    println!("  reconciles:                     {reconciles}");
    match reads {
        Some(reads) => println!(
            "  operator API reads (get/list):  {reads} ({:.2} per reconcile)",
            reads as f64 / reconciles.max(1) as f64
        ),
        None => println!("  operator API reads (get/list):  not counted by this operator build"),
    }
    println!(
        "  operator peak RSS:              {}",
        rss.map_or("unknown".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
    );
    println!("  writes per minute, converged:   {quiet_writes} (over {QUIET_WINDOW:?}; goal 0)");
    println!("  writes by kind and verb:");
    for line in breakdown {
        println!("    {line}");
    }

    let _ = operator.start_kill();
    let _ = operator.wait().await;
    drop(plane);
    clean_up_keeping_log(&dir, "bench");
    Ok(())
}

pub(crate) async fn wait_for_metrics(port: u16) -> anyhow::Result<()> {
    for _ in 0..300 {
        if scrape(port).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the operator did not serve /metrics on port {port}")
}

/// Creates each Organization's Project as soon as its control namespace
/// appears, following a watch (polling lists would load the API server
/// that is being measured).
async fn create_projects_as_namespaces_appear(client: &kube::Client, orgs: usize) -> anyhow::Result<()> {
    let selector = format!("{}={}", cmp_crds::names::TENANT_LABEL, cmp_crds::names::TENANT_CONTROL);
    let namespaces = watcher(Api::<Namespace>::all(client.clone()), watcher::Config::default().labels(&selector));
    let mut seen = std::collections::BTreeSet::new();
    namespaces
        .applied_objects()
        .map_err(anyhow::Error::from)
        .try_filter_map(move |ns| {
            let name = ns.metadata.name.filter(|n| n.starts_with("cmp-bench-") && seen.insert(n.clone()));
            std::future::ready(Ok(name))
        })
        .take(orgs)
        .map_ok(|ns| {
            let api = Api::<Project>::namespaced(client.clone(), &ns);
            async move {
                let project = json!({"apiVersion": Project::api_version(&()), "kind": "Project", "metadata": {"name": "main"}, "spec": {}});
                api.patch("main", &PatchParams::apply(MANAGER), &Patch::Apply(project)).await.context("creating a project")
            }
        })
        .try_buffer_unordered(CLIENT_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .map(|_| ())
}

/// Server-side applies `object` as `name`.
pub(crate) async fn apply<K>(api: &Api<K>, name: &str, object: serde_json::Value) -> anyhow::Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::apply(MANAGER), &Patch::Apply(object))
        .await
        .with_context(|| format!("applying {name}"))?;
    Ok(())
}

/// Applies Instances `i0000`.. spread evenly over the Projects `tenants`
/// made, `spec(project)` each, 16 at a time: each one's key and when it was sent.
pub(crate) async fn apply_instances(
    client: &kube::Client,
    instances: usize,
    per_org: usize,
    per_project: usize,
    spec: impl Fn(&str) -> serde_json::Value,
) -> anyhow::Result<Vec<(String, Instant)>> {
    futures::stream::iter(0..instances)
        .map(|i| {
            let project = i / per_project;
            let namespace = format!("cmp-bench-{:02}", project / per_org);
            let (project, name) = (format!("p{:02}", project % per_org), format!("i{i:04}"));
            let api = Api::<cmp_crds::Instance>::namespaced(client.clone(), &namespace);
            let instance = json!({"apiVersion": cmp_crds::Instance::api_version(&()), "kind": "Instance",
                                  "metadata": {"name": name}, "spec": spec(&project)});
            async move {
                let at = Instant::now();
                apply(&api, &name, instance).await.map(|()| (format!("{namespace}/{name}"), at))
            }
        })
        .buffer_unordered(CLIENT_CONCURRENCY)
        .try_collect()
        .await
}

/// Waits until `check` holds (at most 30 minutes).
pub(crate) async fn wait<F: Fn() -> bool>(what: &str, check: F) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    while !check() {
        if Instant::now() > deadline {
            bail!("{what}: not done after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Creates `organizations` Organizations `bench-NN`, each with `per_org`
/// Projects `pNN` admitting `per_project` Instances, and waits until all are Ready.
pub(crate) async fn tenants(
    client: &kube::Client,
    organizations: usize,
    per_org: usize,
    per_project: usize,
) -> anyhow::Result<()> {
    eprintln!("setting up {organizations} organizations and {} projects ...", organizations * per_org);
    let (orgs, org_watch) = follow::<Organization>(client);
    let (project_store, project_watch) = follow::<Project>(client);
    let (namespaces, ns_watch) = follow::<Namespace>(client);
    for o in 0..organizations {
        let name = format!("bench-{o:02}");
        let org = json!({"apiVersion": Organization::api_version(&()), "kind": "Organization", "metadata": {"name": name},
                         "spec": {"displayName": name}});
        apply(&Api::<Organization>::all(client.clone()), &name, org).await?;
    }
    wait("control namespaces", || {
        namespaces
            .state()
            .iter()
            .filter(|n| n.metadata.name.as_deref().is_some_and(|n| n.starts_with("cmp-bench-")))
            .count()
            >= organizations
    })
    .await?;
    for o in 0..organizations {
        let api = Api::<Project>::namespaced(client.clone(), &format!("cmp-bench-{o:02}"));
        for p in 0..per_org {
            let name = format!("p{p:02}");
            let project = json!({"apiVersion": Project::api_version(&()), "kind": "Project", "metadata": {"name": name},
                                 "spec": {"quota": {"maxInstances": per_project}}});
            apply(&api, &name, project).await?;
        }
    }
    wait("projects Ready", || {
        project_store.state().iter().filter(|p| ready(p.status.as_ref().map(|s| &s.conditions))).count()
            == organizations * per_org
    })
    .await?;
    wait("organizations Ready", || {
        orgs.state().iter().filter(|o| ready(o.status.as_ref().map(|s| &s.conditions))).count() == organizations
    })
    .await?;
    for task in [org_watch, project_watch, ns_watch] {
        task.abort();
    }
    Ok(())
}

/// A cache of every `K`, kept by a watch for as long as the returned task runs.
pub(crate) fn follow<K>(client: &kube::Client) -> (reflector::Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let events = watcher(Api::<K>::all(client.clone()), watcher::Config::default()).default_backoff();
    let task = tokio::spawn(reflector::reflector(writer, events).for_each(|_| std::future::ready(())));
    (store, task)
}

async fn wait_until_ready(client: &kube::Client, orgs: usize) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    let (organizations, org_watch) = follow::<Organization>(client);
    let (projects, project_watch) = follow::<Project>(client);
    let counted = loop {
        let ready_orgs = organizations
            .state()
            .iter()
            .filter(|o| {
                ready(o.status.as_ref().map(|s| &s.conditions))
                    && o.status.as_ref().is_some_and(|s| s.project_count == 1)
            })
            .count();
        let ready_projects =
            projects.state().iter().filter(|p| ready(p.status.as_ref().map(|s| &s.conditions))).count();
        if ready_orgs == orgs && ready_projects == orgs {
            break Ok(ready_orgs + ready_projects);
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "not converged after an hour: {ready_orgs}/{orgs} organizations, {ready_projects}/{orgs} projects Ready"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    org_watch.abort();
    project_watch.abort();
    counted
}
