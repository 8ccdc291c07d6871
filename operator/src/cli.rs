//! The command line: process flags (shared by every CMP binary), leader
//! election, and the operator's own settings.

use clap::Parser;
use cmp_core::lease::LeaseArgs;
use cmp_core::runtime::ProcessArgs;
use k8s_openapi::jiff::SignedDuration;

use crate::settings::{NetworkSettings, Settings, VaultSettings};

/// The CMP operator.
#[derive(Parser, Debug, Clone)]
#[command(
    version,
    about = "The CMP operator: reconciles Organizations, Projects, Instances and Wallets into tenant namespaces, isolation, RBAC and credit figures"
)]
pub struct Args {
    #[command(flatten)]
    pub process: ProcessArgs,

    #[command(flatten)]
    pub lease: LeaseArgs,

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

    /// Reconcile only Organizations matching this label selector (and their Projects, Instances and Wallets). Empty: all.
    #[arg(long, env = "CMP_ORGANIZATION_SELECTOR", default_value = "")]
    pub organization_selector: String,

    /// Reconcile only Offerings matching this label selector (Instances naming another are OfferingNotFound). Empty: all.
    #[arg(long, env = "CMP_OFFERING_SELECTOR", default_value = "")]
    pub offering_selector: String,

    /// Where API-key plaintexts are written: `secret` (a Secret in the control namespace) or `vault` (Vault/OpenBao KV v2).
    #[arg(long, env = "CMP_SECRET_STORE", value_enum, default_value = "secret")]
    pub secret_store: SecretStoreArg,

    /// `--secret-store vault`: the Vault/OpenBao address.
    #[arg(long, env = "VAULT_ADDR", default_value = "")]
    pub vault_addr: String,

    /// `--secret-store vault`: the token (from the environment, never the command line, in production).
    #[arg(long, env = "VAULT_TOKEN", default_value = "", hide_env_values = true)]
    pub vault_token: String,

    /// `--secret-store vault`: the KV v2 mount.
    #[arg(long, env = "CMP_VAULT_MOUNT", default_value = "secret")]
    pub vault_mount: String,

    /// `--secret-store vault`: the path prefix; keys go under `<prefix>/<organization>/instances/<instance>/keys/<key>`.
    #[arg(long, env = "CMP_VAULT_PREFIX", default_value = "cmp")]
    pub vault_prefix: String,

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

/// Where API-key plaintexts are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SecretStoreArg {
    /// A Kubernetes Secret in the organization's control namespace.
    Secret,
    /// Vault/OpenBao KV v2.
    Vault,
}

impl Args {
    /// The reconcilers' settings, or what is wrong with the flags.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let vault = match self.secret_store {
            SecretStoreArg::Secret => None,
            SecretStoreArg::Vault => {
                if self.vault_addr.is_empty() || self.vault_token.is_empty() {
                    anyhow::bail!("--secret-store vault needs --vault-addr (VAULT_ADDR) and a token in VAULT_TOKEN");
                }
                Some(VaultSettings {
                    addr: self.vault_addr.clone(),
                    token: self.vault_token.clone(),
                    mount: self.vault_mount.clone(),
                    prefix: self.vault_prefix.trim_matches('/').to_string(),
                })
            }
        };
        Ok(Settings {
            starter_credits: self.starter_credits,
            low_balance_threshold: self.low_balance_threshold,
            meter_stale_after: SignedDuration::from_secs(self.meter_stale_after_seconds),
            network: NetworkSettings {
                gateway_namespace: self.gateway_namespace.clone(),
                dns_namespace: self.dns_namespace.clone(),
            },
            organization_selector: Some(self.organization_selector.clone()).filter(|s| !s.is_empty()),
            offering_selector: Some(self.offering_selector.clone()).filter(|s| !s.is_empty()),
            vault,
        })
    }
}
