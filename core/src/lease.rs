//! Leader election through a `coordination.k8s.io` Lease, for the binaries
//! of which only one replica may write (the operator). A replica that loses
//! the lease stops its work and exits with an error, so that it restarts as
//! a standby; SIGTERM releases the lease.

use anyhow::Context as _;
use futures::FutureExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use kube_lease_manager::LeaseManagerBuilder;

use crate::shutdown::Shutdown;

/// Leader-election flags.
#[derive(clap::Args, Debug, Clone)]
pub struct LeaseArgs {
    /// Elect a leader through a Lease, so that only one replica writes.
    #[arg(long, env = "CMP_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// The Lease's name.
    #[arg(long, env = "CMP_LEASE_NAME")]
    pub lease_name: Option<String>,

    /// The Lease's namespace (created if missing).
    #[arg(long, env = "CMP_LEASE_NAMESPACE", default_value = "cmp-system")]
    pub lease_namespace: String,

    /// Seconds a leader holds the Lease without renewing it.
    #[arg(long, env = "CMP_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..))]
    pub lease_duration_seconds: u64,

    /// This replica's identity in the Lease (default: $POD_NAME, else the host name and process id).
    #[arg(long, env = "CMP_IDENTITY")]
    pub identity: Option<String>,
}

impl LeaseArgs {
    /// This replica's identity.
    pub fn identity(&self) -> String {
        self.identity.clone().or_else(|| std::env::var("POD_NAME").ok()).unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
            format!("{host}-{}", std::process::id())
        })
    }
}

async fn ensure_namespace(client: &kube::Client, name: &str, manager: &str) -> anyhow::Result<()> {
    let api = Api::<Namespace>::all(client.clone());
    if api.get_metadata_opt(name).await.with_context(|| format!("reading the lease namespace {name}"))?.is_none() {
        let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        api.patch(name, &PatchParams::apply(manager), &Patch::Apply(ns))
            .await
            .with_context(|| format!("creating the lease namespace {name}"))?;
    }
    Ok(())
}

/// Waits for the lease named `lease_name` (or `args.lease_name`), then runs
/// `work` with a shutdown that fires on SIGTERM or on losing the lease.
/// Returns an error when the lease was lost, so the process restarts as a standby.
pub async fn run_as_leader<F, Fut>(
    client: &kube::Client,
    args: &LeaseArgs,
    default_name: &str,
    stop: Shutdown,
    work: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let name = args.lease_name.clone().unwrap_or_else(|| default_name.to_string());
    ensure_namespace(client, &args.lease_namespace, default_name).await?;
    let identity = args.identity();
    let manager = LeaseManagerBuilder::new(client.clone(), &name)
        .with_namespace(&args.lease_namespace)
        .with_identity(&identity)
        .with_duration(args.lease_duration_seconds)
        .with_grace(args.lease_duration_seconds.div_ceil(3).max(1))
        .build()
        .await
        .context("setting up leader election")?;
    let (mut leader, lease_task) = manager.watch().await;
    tracing::info!(%identity, lease = %name, namespace = %args.lease_namespace, "waiting to become the leader");
    let stopped = tokio::select! {
        _ = leader.wait_for(|is_leader| *is_leader) => false,
        () = stop.clone() => true,
    };
    if stopped {
        drop(leader);
        let _ = lease_task.await;
        return Ok(());
    }
    tracing::info!(%identity, "became the leader");

    let mut watch_loss = leader.clone();
    let lost = async move {
        let _ = watch_loss.wait_for(|is_leader| !*is_leader).await;
    }
    .boxed()
    .shared();
    let work_stop = futures::future::select(stop.clone(), lost.clone()).map(|_| ()).boxed().shared();
    let result = work(work_stop).await;
    let lost_leadership = lost.now_or_never().is_some() && stop.now_or_never().is_none();
    drop(leader);
    let _ = lease_task.await;
    if lost_leadership {
        anyhow::bail!("lost the leader lease; exiting so that a fresh process can stand by");
    }
    tracing::info!("released the leader lease");
    result
}
