//! Configuration, from flags or the environment.

use std::net::SocketAddr;

use clap::Parser;
use cmp_core::telemetry::LogFormat;

use crate::project::desired::NetworkSettings;

/// The CMP operator.
#[derive(Parser, Debug, Clone)]
#[command(version, about = "The CMP operator: reconciles Organizations, Projects and Wallets")]
pub struct Config {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "CMP_HEALTH_ADDR", default_value = "127.0.0.1:8080")]
    pub health_addr: SocketAddr,

    /// Log format: text or json.
    #[arg(long, env = "CMP_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Starter credits of an Organization that does not set spec.starterCredits.
    #[arg(long, env = "CMP_STARTER_CREDITS", default_value_t = 1000, value_parser = clap::value_parser!(i64).range(0..))]
    pub starter_credits: i64,

    /// Below this balance a Wallet is `Funded=False` with reason `Low`, unless it sets spec.lowBalanceThreshold.
    #[arg(long, env = "CMP_LOW_BALANCE_THRESHOLD", default_value_t = 100, value_parser = clap::value_parser!(i64).range(0..))]
    pub low_balance_threshold: i64,

    /// A gateway meter untouched for this many seconds, with no live lease, is folded into the Wallet's compacted total.
    #[arg(long, env = "CMP_METER_STALE_AFTER_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(i64).range(1..))]
    pub meter_stale_after_seconds: i64,

    /// The gateway's namespace: the only source of ingress into runtime namespaces.
    #[arg(long, env = "CMP_GATEWAY_NAMESPACE", default_value = "cmp-system")]
    pub gateway_namespace: String,

    /// The cluster DNS namespace, reachable from runtime namespaces.
    #[arg(long, env = "CMP_DNS_NAMESPACE", default_value = "kube-system")]
    pub dns_namespace: String,

    /// Reconcile only Organizations matching this label selector (and their Projects and Wallets). Empty: all.
    #[arg(long, env = "CMP_ORGANIZATION_SELECTOR", default_value = "")]
    pub organization_selector: String,

    /// Elect a leader through a Lease, so that only one replica writes.
    #[arg(long, env = "CMP_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// The Lease's name.
    #[arg(long, env = "CMP_LEASE_NAME", default_value = "cmp-operator")]
    pub lease_name: String,

    /// The Lease's namespace (created if missing).
    #[arg(long, env = "CMP_LEASE_NAMESPACE", default_value = "cmp-system")]
    pub lease_namespace: String,

    /// Seconds a leader holds the Lease without renewing it.
    #[arg(long, env = "CMP_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..))]
    pub lease_duration_seconds: u64,

    /// This replica's identity in the Lease (default: $POD_NAME, else the host name and process id).
    #[arg(long, env = "CMP_IDENTITY")]
    pub identity: Option<String>,

    /// Install the ValidatingAdmissionPolicy that keeps tenancy labels on namespaces for the operator alone.
    #[arg(long, env = "CMP_ADMISSION_POLICY", default_value_t = true, action = clap::ArgAction::Set)]
    pub admission_policy: bool,

    /// Users besides the operator itself who may set tenancy labels (for example the provisioner's service account).
    #[arg(long = "tenancy-label-writer", env = "CMP_TENANCY_LABEL_WRITERS", value_delimiter = ',')]
    pub tenancy_label_writers: Vec<String>,

    /// How many objects of each kind are reconciled at once.
    #[arg(long, env = "CMP_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
}

impl Config {
    /// The network boundaries of runtime namespaces.
    pub fn network(&self) -> NetworkSettings {
        NetworkSettings { gateway_namespace: self.gateway_namespace.clone(), dns_namespace: self.dns_namespace.clone() }
    }

    /// This replica's identity.
    pub fn identity(&self) -> String {
        self.identity.clone().or_else(|| std::env::var("POD_NAME").ok()).unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
            format!("{host}-{}", std::process::id())
        })
    }
}
