//! Developer tooling. `cargo xtask <command>`:
//!
//! - `up`: build, start the local control plane, install the CRDs, apply the
//!   examples and run the operator against it (Ctrl-C stops everything);
//! - `demo`: the same platform, then the buyer's journey (T1-T9) and time to first value;
//! - `test`: start a fresh control plane and run the whole test suite against it;
//! - `cluster`: only start the local control plane and keep it running;
//! - `install`: build or install every tool the tests run into the cache (`test` does it too);
//! - `image`: build the CMP image (or, with `--runtime`, the runtime image of Dedicated Instances) as an OCI layout, without Docker;
//! - `fuzz-webhook`: fuzz the webhook's parsers;
//! - `bench-*`: benchmarks.

mod bench;
mod bench_gateway;
mod bench_gitops;
mod bench_instances;
mod bench_knowledge;
mod bench_mcp;
mod bench_webhook;
mod chart_parity;
mod local_gitops;
mod rbac_usage;
mod up;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cmp_testenv::ControlPlane;
use cmp_testenv::apply::install_crds;

/// The field manager xtask applies with.
pub(crate) const MANAGER: &str = "cmp-xtask";

#[derive(Parser)]
#[command(about = "CMP developer tooling")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build, start the local control plane, a bare GitOps repository, Argo CD and OpenBao, install the CRDs, apply examples/ and run the operator.
    Up,
    /// Start the platform as `up` does, run the buyer's journey (T1-T9) with signed Saleor orders, print time to first value, and stop.
    Demo {
        /// How many paid orders are timed (the journey's own included).
        #[arg(long, default_value_t = 20)]
        orders: usize,
    },
    /// Start a fresh local control plane and run `cargo test --workspace` against it.
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Start the local control plane (state in ~/.cache/cmp/cluster) and keep it running.
    Cluster,
    /// Build or install into the cache every tool the tests run (what `test` does before the tests; a no-op when
    /// all is there): `.ci/run` starts it beside its lint step.
    Install,
    /// Build the CMP image (the three binaries on a base of Debian's packages, user 65532) as an OCI layout, without Docker.
    Image {
        /// The cargo profile whose binaries go in: release (what ships) or dev (quick, for local checks).
        #[arg(long, default_value = "release", value_parser = ["release", "dev"])]
        profile: String,
        /// Where the OCI layout is written (default: ~/.cache/cmp/image/cmp-<profile>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Leave the layers uncompressed (quicker; for images that stay on this machine).
        #[arg(long)]
        uncompressed: bool,
        /// Take the three binaries from this directory instead of building them (for example a CI job's release build).
        #[arg(long)]
        binaries: Option<PathBuf>,
        /// Build the runtime image of Dedicated Instances (lfx on Debian's Python) instead.
        #[arg(long, conflicts_with = "binaries")]
        runtime: bool,
    },
    /// Benchmark: N Organizations with one Project each, from cold; prints time, writes, RSS.
    BenchTenancy {
        /// How many Organizations.
        #[arg(long, default_value_t = 1000)]
        orgs: usize,
        /// Measure this operator binary instead of the release build of this checkout (for a before/after comparison).
        #[arg(long)]
        operator_binary: Option<PathBuf>,
    },
    /// Benchmark: N Instances across P Projects on a Shared Offering and a real lfx runtime, from cold.
    BenchInstances {
        /// How many Instances.
        #[arg(long, default_value_t = 1000)]
        instances: usize,
        /// How many Projects (in ten Organizations).
        #[arg(long, default_value_t = 100)]
        projects: usize,
        /// Measure this operator binary instead of the release build of this checkout.
        #[arg(long)]
        operator_binary: Option<PathBuf>,
    },
    /// Benchmark: Dedicated Instances created, then changed with a rival writer on the branch, through the GitOps writer; prints commits, time to Synced, push retries, p50/p95 and converged writes.
    BenchGitops {
        /// How many Instances.
        #[arg(long, default_value_t = 1000)]
        instances: usize,
        /// Across how many Projects (a multiple of 10: ten Organizations).
        #[arg(long, default_value_t = 100)]
        projects: usize,
        /// How often the rival writer pushes, in milliseconds (0: as fast as the git CLI goes).
        #[arg(long, default_value_t = 200)]
        rival_interval_ms: u64,
        /// Measure this operator binary instead of the release build of this checkout.
        #[arg(long)]
        operator_binary: Option<PathBuf>,
    },
    /// Benchmark: signed paid orders through the webhook, operator and lfx; prints verifications/s, webhook latency and order -> Ready.
    BenchWebhook {
        /// How many paid orders (one at a time).
        #[arg(long, default_value_t = 50)]
        orders: usize,
    },
    /// Benchmark: the gateway beside a bare reverse proxy and LiteLLM in front of one trivial upstream; then a real lfx run, revocation delay and Wallet writes at 1,000 runs/s.
    BenchGateway {
        /// Connections of the load generator, for every contender.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Seconds each contender is measured (after a one-second warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// What the connector gateway adds to an MCP tools/call, against the same MCP server called directly, at a fixed rate.
    BenchMcp {
        /// Calls per second (open loop), for both paths.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Seconds each path is measured (after a one-second warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Connections of the load generator.
        #[arg(long, default_value_t = 32)]
        connections: usize,
    },
    /// Knowledge-base ingestion (documents and chunks per second) and search (p50, p95) through the gateway, beside
    /// the store's own client doing the store's part of the same work.
    BenchKnowledge {
        /// Documents ingested (three paragraphs each).
        #[arg(long, default_value_t = 200)]
        documents: usize,
        /// Searches made, one at a time.
        #[arg(long, default_value_t = 300)]
        queries: usize,
    },
    /// Write docs/configuration.md: the chart's values and every binary's flags, from the schema and clap.
    Docs,
    /// Fuzz the webhook's signature and payload parsers (release build, every core); fails on a panic or an oversized allocation.
    FuzzWebhook {
        /// How many inputs.
        #[arg(long, default_value_t = 10_000_000)]
        inputs: u64,
        /// The random seed (the same seed replays the same inputs).
        #[arg(long, default_value_t = 12_648_430)]
        seed: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match Cli::parse().command {
        Command::Up => up::up().await,
        Command::Demo { orders } => up::demo(orders).await,
        Command::Test { cargo_args } => test(&cargo_args).await,
        Command::Cluster => cluster().await,
        Command::Install => tokio::task::spawn_blocking(install_tools)
            .await
            .map_err(anyhow::Error::from)
            .and_then(|installed| installed.map(|()| ExitCode::SUCCESS)),
        Command::Image { runtime: true, out, uncompressed, .. } => runtime_image(out, uncompressed).await,
        Command::Image { profile, out, uncompressed, binaries, runtime: false } => {
            image(&profile, out, uncompressed, binaries).await
        }
        Command::Docs => docs().await,
        Command::FuzzWebhook { inputs, seed } => fuzz_webhook(inputs, seed).await,
        Command::BenchGateway { connections, seconds } => {
            bench_gateway::run(bench_gateway::Load { connections, seconds }).await.map(|()| ExitCode::SUCCESS)
        }
        Command::BenchKnowledge { documents, queries } => {
            bench_knowledge::run(documents, queries).await.map(|()| ExitCode::SUCCESS)
        }
        Command::BenchMcp { rate, seconds, connections } => {
            bench_mcp::run(rate, seconds, connections).await.map(|()| ExitCode::SUCCESS)
        }
        Command::BenchGitops { instances, projects, rival_interval_ms, operator_binary } => {
            let rival = std::time::Duration::from_millis(rival_interval_ms);
            bench_gitops::run(instances, projects, rival, operator_binary).await.map(|()| ExitCode::SUCCESS)
        }
        Command::BenchWebhook { orders } => bench_webhook::run(orders).await.map(|()| ExitCode::SUCCESS),
        Command::BenchTenancy { orgs, operator_binary } => {
            bench::run(orgs, operator_binary).await.map(|()| ExitCode::SUCCESS)
        }
        Command::BenchInstances { instances, projects, operator_binary } => {
            bench_instances::run(instances, projects, operator_binary).await.map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask image`: builds the binaries of `profile` (unless `binaries` has them), then the image.
async fn image(
    profile: &str,
    out: Option<PathBuf>,
    uncompressed: bool,
    binaries: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    use xtask::oci::Compression;
    let started = std::time::Instant::now();
    let binaries = match binaries {
        Some(dir) => dir,
        None => {
            let mut build = cmp_testenv::cargo_command();
            build.args(["build", "--locked", "--profile", profile]);
            for binary in xtask::image::BINARIES {
                build.args(["-p", binary]);
            }
            if !build.status().context("running cargo build")?.success() {
                anyhow::bail!("cargo build --profile {profile} failed");
            }
            let target =
                std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
            target.join(if profile == "dev" { "debug" } else { profile })
        }
    };
    let built_in = started.elapsed();
    let out = out.unwrap_or_else(|| xtask::image::cache().join(format!("cmp-{profile}")));
    let compression = if uncompressed { Compression::None } else { Compression::Gzip };
    let written = std::time::Instant::now();
    let image = tokio::task::spawn_blocking(move || xtask::image::build_cmp(&binaries, &out, compression)).await??;
    eprintln!("cargo build took {built_in:.0?}");
    report(&image, written);
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask image --runtime`.
async fn runtime_image(out: Option<PathBuf>, uncompressed: bool) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let out = out.unwrap_or_else(|| xtask::image::cache().join("cmp-runtime"));
    let compression = if uncompressed { xtask::oci::Compression::None } else { xtask::oci::Compression::Gzip };
    let image = tokio::task::spawn_blocking(move || xtask::runtime_image::build_runtime(&out, compression)).await??;
    report(&image, started);
    Ok(ExitCode::SUCCESS)
}

/// Prints where an image is, its layers and how long it took.
fn report(image: &xtask::image::Built, started: std::time::Instant) {
    eprintln!("written in {:.0?}", started.elapsed());
    for layer in &image.layers {
        eprintln!("  layer {} {:.1} MB: {}", layer.digest, layer.size as f64 / 1e6, layer.created_by);
    }
    println!("{}:{} (manifest {})", image.layout.display(), image.reference, image.manifest);
}

pub(crate) fn root() -> PathBuf {
    cmp_testenv::workspace_root()
}

/// Starts a control plane in `dir` and installs the CRDs.
pub(crate) async fn start(dir: &Path) -> anyhow::Result<(ControlPlane, kube::Client)> {
    start_with(dir, ControlPlane::start(dir)).await
}

/// Waits for `starting` (a control plane in `dir`) and installs the CRDs.
async fn start_with(
    dir: &Path,
    starting: impl Future<Output = Result<ControlPlane, cmp_testenv::Error>>,
) -> anyhow::Result<(ControlPlane, kube::Client)> {
    eprintln!("starting the local control plane in {} ...", dir.display());
    let plane = starting.await.context("starting the local control plane")?;
    let client = plane.client().await?;
    install_crds(&client, &cmp_crds::all_crds(), MANAGER).await.context("installing the CRDs")?;
    eprintln!("control plane ready at {}; CRDs installed", plane.server());
    Ok((plane, client))
}

pub(crate) fn print_usage(plane: &ControlPlane) {
    eprintln!(
        "\nUse it with:\n  export KUBECONFIG={}\n  export PATH={}:$PATH   # kubectl built with the control plane\n  kubectl get cmp -A\n",
        plane.kubeconfig().display(),
        plane.bin_dir().display(),
    );
}

async fn cluster() -> anyhow::Result<ExitCode> {
    let (plane, _client) = start(&cmp_testenv::default_state_dir()).await?;
    print_usage(&plane);
    eprintln!("Ctrl-C stops it.");
    tokio::signal::ctrl_c().await?;
    eprintln!("stopping ...");
    drop(plane);
    Ok(ExitCode::SUCCESS)
}

async fn test(cargo_args: &[String]) -> anyhow::Result<ExitCode> {
    let dir = cmp_testenv::control_plane::cache_dir().join("test-runs").join(std::process::id().to_string());
    warn_if_disk_is_short(&[cmp_testenv::control_plane::cache_dir(), std::env::temp_dir()]);
    // Cargo compiles the tests while the tools the tests run are built and installed into the cache: each
    // leaves a core idle part of the time (links, downloads, unpacking), and on a cold machine both take
    // many minutes.
    let build_args = cargo_args.iter().take_while(|a| a.as_str() != "--");
    let mut compiling = tokio::process::Command::from(cmp_testenv::cargo_command())
        .args(["test", "--workspace", "--no-run"])
        .args(build_args)
        .kill_on_drop(true)
        .spawn()
        .context("starting cargo test --no-run")?;
    let installed = tokio::task::spawn_blocking(install_tools).await?;
    let compiled = compiling.wait().await.context("waiting for cargo test --no-run")?;
    installed?;
    if !compiled.success() {
        eprintln!("compiling the tests failed (above)");
        return Ok(ExitCode::FAILURE);
    }
    let (plane, _client) = start_with(&dir, ControlPlane::start_audited(&dir)).await?;
    let plane_audit = plane.audit_dir().map(Path::to_path_buf);
    eprintln!("running cargo test --workspace against {}", plane.server());
    let status = tokio::process::Command::from(cmp_testenv::cargo_command())
        .args(["test", "--workspace"])
        .args(cargo_args)
        .env(cmp_testenv::test::KUBECONFIG_ENV, plane.kubeconfig())
        .env("KUBECONFIG", plane.kubeconfig())
        .status()
        .await
        .context("running cargo test")?;
    drop(plane);
    // Whether every rule of the chart was used, when the whole suite ran (a filtered run makes fewer calls).
    let rbac_used = match plane_audit {
        Some(audit) if status.success() && cargo_args.is_empty() => rbac_usage::check(&audit)?,
        _ => true,
    };
    if status.success() && rbac_used {
        let _ = std::fs::remove_dir_all(&dir);
        Ok(ExitCode::SUCCESS)
    } else if status.success() {
        eprintln!(
            "the tests passed, but the chart grants verbs they never used (above); the control plane's logs are in {}",
            dir.display()
        );
        Ok(ExitCode::FAILURE)
    } else {
        eprintln!("tests failed; control plane logs are in {}", dir.display());
        Ok(ExitCode::FAILURE)
    }
}

/// Builds or installs into the cache everything the tests run (a no-op for what is there): the control
/// plane, [`cmp_testenv::installs::ALL`] and the Dedicated runtime's image. One after another: the Go builds
/// each use both cores.
fn install_tools() -> anyhow::Result<()> {
    let plane = cmp_testenv::control_plane::binaries().context("building the control plane")?;
    eprintln!("the control plane's binaries are in {}", plane.display());
    for (what, install) in cmp_testenv::installs::ALL {
        let place = install().with_context(|| format!("installing {what}"))?;
        eprintln!("{what}: {}", place.display());
    }
    let (archive, _) = xtask::runtime_image::cached_archive().context("building the runtime image")?;
    eprintln!("the Dedicated runtime's image: {}", archive.display());
    Ok(())
}

/// Builds the binaries and writes the configuration reference.
async fn docs() -> anyhow::Result<ExitCode> {
    use cmp_testenv::docs::{BINARIES, REFERENCE, configuration_reference};
    let mut build = tokio::process::Command::from(cmp_testenv::cargo_command());
    build.args(["build", "--bins"]);
    for (package, _) in BINARIES {
        build.args(["-p", package]);
    }
    if !build.status().await?.success() {
        anyhow::bail!("cargo build failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let binaries: Vec<(&str, PathBuf)> =
        BINARIES.iter().map(|(_, binary)| (*binary, target.join("debug").join(binary))).collect();
    let reference = configuration_reference(&cmp_testenv::helm::chart(), &binaries)?;
    let path = root().join(REFERENCE);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, reference).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Free space the suite wants: the cold cargo build, the tools in the cache
/// and what the tests write (git remotes, Keycloak's copy, logs), with
/// Langflow's venv and uv's downloads (about 2 GiB).
const TEST_DISK_GIB: u64 = 14;

/// Says so up front when a folder the tests write to has less than
/// [`TEST_DISK_GIB`] free: a full disk otherwise shows up as git pushes whose
/// packs "failed to unpack" or servers that never start, far from the cause.
fn warn_if_disk_is_short(dirs: &[PathBuf]) {
    for dir in dirs {
        let Ok(output) = std::process::Command::new("df").arg("-Pk").arg(dir).output() else { continue };
        let text = String::from_utf8_lossy(&output.stdout);
        let free_kib =
            text.lines().nth(1).and_then(|line| line.split_whitespace().nth(3)).and_then(|n| n.parse::<u64>().ok());
        if let Some(free_kib) = free_kib
            && free_kib < TEST_DISK_GIB * 1024 * 1024
        {
            eprintln!(
                "warning: only {:.1} GiB free under {}; the suite wants about {TEST_DISK_GIB} GiB. \
                 Free some (old runs are in {}) or tests will fail with write errors.",
                free_kib as f64 / 1024.0 / 1024.0,
                dir.display(),
                cmp_testenv::control_plane::cache_dir().join("test-runs").display(),
            );
        }
    }
}

/// Runs the webhook parsers' fuzzer in release mode.
async fn fuzz_webhook(inputs: u64, seed: u64) -> anyhow::Result<ExitCode> {
    let binary = bench::release_binary("cmp-webhook-fuzz", "fuzz-webhook-parsers").await?;
    let status = tokio::process::Command::new(&binary)
        .args(["--inputs", &inputs.to_string(), "--seed", &seed.to_string()])
        .status()
        .await
        .with_context(|| format!("running {}", binary.display()))?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
