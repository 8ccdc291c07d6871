//! What the reconcilers need to know from outside the CRs: defaults,
//! thresholds and network boundaries. Independent of how the process was
//! started (the command line is in [`crate::cli`]).

use k8s_openapi::jiff::SignedDuration;

/// The network boundaries of runtime namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    /// The namespace of the gateway, the only outside source of ingress.
    pub gateway_namespace: String,
    /// The namespace of the cluster DNS.
    pub dns_namespace: String,
    /// The gateway pods' API port, which runtimes reach for the connector gateway.
    pub gateway_port: i32,
    /// Where Dedicated runtimes fetch their flow artifacts from (the store
    /// Offerings' versions point at), opened in every runtime namespace's
    /// egress: without it, the init container's fetch is refused.
    pub artifact_egress: Vec<ArtifactEgress>,
}

/// A network and TCP port the runtimes may fetch artifacts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactEgress {
    /// The network, as a CIDR.
    pub cidr: ipnet::IpNet,
    /// The TCP port.
    pub port: u16,
}

impl std::str::FromStr for ArtifactEgress {
    type Err = String;

    /// `CIDR:PORT`, for example `203.0.113.10/32:443` (the port follows the last colon).
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let shape = || format!("{value:?} is not CIDR:PORT, such as 203.0.113.10/32:443");
        let (cidr, port) = value.rsplit_once(':').ok_or_else(shape)?;
        let cidr = cidr.parse().map_err(|_| format!("{}: {cidr:?} is not a CIDR", shape()))?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{}: {port:?} is not a port", shape()))?;
        Ok(ArtifactEgress { cidr, port })
    }
}

impl Default for NetworkSettings {
    fn default() -> Self {
        Self {
            gateway_namespace: "cmp-system".into(),
            dns_namespace: "kube-system".into(),
            gateway_port: 8080,
            artifact_egress: Vec::new(),
        }
    }
}

/// The reconcilers' settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Starter credits of an Organization that does not set `spec.starterCredits`.
    pub starter_credits: i64,
    /// Below this balance a Wallet is `Funded=False` with reason `Low`, unless it sets its own.
    pub low_balance_threshold: i64,
    /// A gateway meter untouched this long, with no live lease, is folded into the compacted total.
    pub meter_stale_after: SignedDuration,
    /// Where the runtime namespaces' network boundaries are.
    pub network: NetworkSettings,
    /// Reconcile only the Organizations matching this label selector (and what lives in their namespaces).
    pub organization_selector: Option<String>,
    /// Reconcile only the Offerings matching this label selector.
    pub offering_selector: Option<String>,
    /// Vault/OpenBao, when an address is configured: connector policies and roles, and API keys with `keys_in_vault`.
    pub vault: Option<VaultSettings>,
    /// API-key plaintexts go to Vault (`--secret-store vault`) rather than Secrets in the control namespace.
    pub keys_in_vault: bool,
    /// GitOps delivery of Dedicated runtimes, when a repository is configured.
    pub gitops: Option<crate::gitops::GitOpsSettings>,
    /// The hosts connector bindings may call (the gateway's allow-list), to report bindings in status.
    pub connector_hosts: Vec<cmp_crds::connectors::HostPattern>,
    /// The knowledge store to provision, with `--knowledge-store-url`.
    pub knowledge: Option<KnowledgeSettings>,
}

/// The knowledge store the operator provisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnowledgeSettings {
    /// The store, as a role that may create roles and schemas.
    pub url: String,
    /// The gateway's login role, granted each Project's role.
    pub gateway_role: String,
}

/// Vault/OpenBao: KV v2 for API-key plaintexts and connector secrets, and
/// the Kubernetes auth method the runtimes log in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultSettings {
    /// The server, for example `http://127.0.0.1:8200`.
    pub addr: String,
    /// The token.
    pub token: String,
    /// The KV v2 mount, for example `secret`.
    pub mount: String,
    /// The path prefix of API keys; each organization's keys are under `<prefix>/<organization>/`.
    pub prefix: String,
    /// The path of the Kubernetes auth method that the gateway logs in with, for example `kubernetes`.
    pub kubernetes_auth: String,
    /// The gateway's ServiceAccount (namespace, name), given a policy that reads every connector secret.
    pub gateway: Option<(String, String)>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            starter_credits: 1000,
            low_balance_threshold: 100,
            meter_stale_after: SignedDuration::from_secs(3600),
            network: NetworkSettings::default(),
            organization_selector: None,
            offering_selector: None,
            vault: None,
            keys_in_vault: false,
            gitops: None,
            connector_hosts: Vec::new(),
            knowledge: None,
        }
    }
}
