//! The command line: process flags (shared by every CMP binary), leader
//! election, and the operator's own settings.

use clap::Parser;
use cmp_core::lease::LeaseArgs;
use cmp_core::runtime::ProcessArgs;
use k8s_openapi::jiff::SignedDuration;

use crate::gitops::render::RenderSettings;
use crate::gitops::{ArgoCdSettings, GitOpsSettings};
use crate::settings::{ArtifactEgress, NetworkSettings, Settings, VaultSettings};
use sha2::Digest;

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

    /// The gateway pods' API port: runtime namespaces may reach it (the connector gateway), and only it, in the gateway's namespace.
    #[arg(long, env = "CMP_GATEWAY_PORT", default_value_t = 8080, value_parser = clap::value_parser!(i32).range(1..=65535))]
    pub gateway_port: i32,

    /// Where Dedicated runtimes fetch flow artifacts from, as CIDR:PORT (comma-separated; for example 203.0.113.10/32:443): opened in every runtime namespace's egress, which otherwise refuses the fetch.
    #[arg(long, env = "CMP_ARTIFACT_EGRESS", value_delimiter = ',')]
    pub artifact_egress: Vec<ArtifactEgress>,

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

    /// The Vault/OpenBao address: connector policies and roles per Project (and API keys with `--secret-store vault`). Empty: no Vault.
    #[arg(long, env = "VAULT_ADDR", default_value = "")]
    pub vault_addr: String,

    /// The Vault token (from the environment, never the command line, in production).
    #[arg(long, env = "VAULT_TOKEN", default_value = "", hide_env_values = true)]
    pub vault_token: String,

    /// The KV v2 mount of API keys and connector secrets.
    #[arg(long, env = "CMP_VAULT_MOUNT", default_value = "secret")]
    pub vault_mount: String,

    /// The path of the Kubernetes auth method the gateway logs in with; the operator writes the gateway's role there.
    #[arg(long, env = "CMP_VAULT_KUBERNETES_AUTH", default_value = "kubernetes")]
    pub vault_kubernetes_auth: String,

    /// The gateway's ServiceAccount, `<namespace>/<name>`: the operator writes it a policy and Kubernetes-auth role that read every connector secret (`<mount>/data/connectors/*`) and nothing else. Empty: none.
    #[arg(long, env = "CMP_VAULT_GATEWAY_SERVICE_ACCOUNT", default_value = "")]
    pub vault_gateway_service_account: String,

    /// The hosts connector bindings may call, as the gateway's --connector-allowed-hosts (comma-separated; "*.example.com" for every host below a domain): bindings elsewhere are reported ConnectorsReady=False. The gateway enforces it on every call.
    #[arg(long, env = "CMP_CONNECTOR_ALLOWED_HOSTS", value_delimiter = ',')]
    pub connector_allowed_hosts: Vec<String>,

    /// The knowledge store (PostgreSQL with pgvector) to provision, as a role that may create roles and schemas
    /// (postgres://user:password@host:port/database): a schema and role per Project, dropped with it. Empty: none.
    #[arg(long, env = "CMP_KNOWLEDGE_STORE_URL", default_value = "", hide_env_values = true)]
    pub knowledge_store_url: String,

    /// The gateway's login role in the knowledge store, which is granted each Project's role (without inheriting it).
    #[arg(long, env = "CMP_KNOWLEDGE_GATEWAY_ROLE", default_value = "cmp_gateway")]
    pub knowledge_gateway_role: String,

    /// `--secret-store vault`: the path prefix; keys go under `<prefix>/<organization>/instances/<instance>/keys/<key>`.
    #[arg(long, env = "CMP_VAULT_PREFIX", default_value = "cmp")]
    pub vault_prefix: String,

    /// Install the ValidatingAdmissionPolicy that keeps tenancy labels on namespaces for the operator alone.
    #[arg(long, env = "CMP_ADMISSION_POLICY", default_value_t = true, action = clap::ArgAction::Set)]
    pub admission_policy: bool,

    /// Users besides the operator itself who may set tenancy labels (for example the provisioner's service account).
    #[arg(long = "tenancy-label-writer", env = "CMP_TENANCY_LABEL_WRITERS", value_delimiter = ',')]
    pub tenancy_label_writers: Vec<String>,

    /// The GitOps repository Dedicated runtimes are committed to (`file:///...`, `https://...`, `ssh://...` or `user@host:path`); empty: no GitOps.
    #[arg(long, env = "CMP_GITOPS_REPO", default_value = "")]
    pub gitops_repo: String,

    /// A Secret `<namespace>/<name>` with the remote's credentials, read at start: `username` and `password` (an access token) for HTTP(S), optional `ca.crt`; `ssh-privatekey` and `known_hosts` (optional `passphrase`, `username`) for SSH.
    #[arg(long, env = "CMP_GITOPS_CREDENTIALS_SECRET", default_value = "")]
    pub gitops_credentials_secret: String,

    /// The branch the operator commits to and Argo CD follows.
    #[arg(long, env = "CMP_GITOPS_BRANCH", default_value = "main")]
    pub gitops_branch: String,

    /// The folder of the repository that holds the tenants' trees.
    #[arg(long, env = "CMP_GITOPS_ROOT", default_value = "tenants")]
    pub gitops_root: String,

    /// Where the writer keeps its clone (a bare mirror, rebuilt when unusable); default: a folder under the temp dir named after the repository.
    #[arg(long, env = "CMP_GITOPS_CLONE_DIR")]
    pub gitops_clone_dir: Option<std::path::PathBuf>,

    /// The image of the init container that fetches a flow artifact and checks its sha256 (needs sh, wget and sha256sum).
    #[arg(long, env = "CMP_GITOPS_FETCH_IMAGE", default_value = "alpine:3.22")]
    pub gitops_fetch_image: String,

    /// Commit author name.
    #[arg(long, env = "CMP_GITOPS_AUTHOR_NAME", default_value = "CMP operator")]
    pub gitops_author_name: String,

    /// Commit author e-mail.
    #[arg(long, env = "CMP_GITOPS_AUTHOR_EMAIL", default_value = "cmp-operator@cmp.gsv.dev")]
    pub gitops_author_email: String,

    /// Argo CD's namespace: the operator applies an AppProject and an Application per Project there; empty: no Argo CD (Deployment availability alone decides Ready).
    #[arg(long, env = "CMP_ARGOCD_NAMESPACE", default_value = "")]
    pub argocd_namespace: String,

    /// The repository URL as Argo CD reaches it; default: --gitops-repo.
    #[arg(long, env = "CMP_ARGOCD_REPO_URL", default_value = "")]
    pub argocd_repo_url: String,

    /// How many objects of each kind are reconciled at once.
    #[arg(long, env = "CMP_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
}

/// Where API-key plaintexts are written.
impl Args {
    /// Refuses GitOps flags that cannot work, naming the flag.
    fn check_gitops(&self) -> anyhow::Result<()> {
        if self.gitops_repo.is_empty() {
            if !self.argocd_namespace.is_empty() {
                anyhow::bail!("--argocd-namespace needs --gitops-repo: Argo CD syncs what the operator commits there");
            }
            return Ok(());
        }
        let root = self.gitops_root.trim_matches('/');
        if root.is_empty() || root.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
            anyhow::bail!(
                "--gitops-root {:?} must be a folder inside the repository such as \"tenants\" (no empty, '.' or '..' parts)",
                self.gitops_root
            );
        }
        if !self.gitops_credentials_secret.is_empty() && self.credentials_secret().is_none() {
            anyhow::bail!(
                "--gitops-credentials-secret {:?} must be <namespace>/<name>, such as \"cmp-system/gitops-credentials\"",
                self.gitops_credentials_secret
            );
        }
        if self.gitops_credentials_secret.is_empty() {
            crate::gitops::Credentials::check_for(None, &self.gitops_repo)?;
        }
        if self.gitops_branch.trim().is_empty() {
            anyhow::bail!("--gitops-branch must name a branch, such as \"main\"");
        }
        Ok(())
    }

    /// `--gitops-credentials-secret` as (namespace, name), when set and well formed.
    pub fn credentials_secret(&self) -> Option<(&str, &str)> {
        let (namespace, name) = self.gitops_credentials_secret.split_once('/')?;
        (!namespace.is_empty() && !name.is_empty() && !name.contains('/')).then_some((namespace, name))
    }

    fn gitops(&self) -> GitOpsSettings {
        let url = self.gitops_repo.clone();
        let clone_dir = self.gitops_clone_dir.clone().unwrap_or_else(|| {
            let digest = hex::encode(&sha2::Sha256::digest(url.as_bytes())[..8]);
            std::env::temp_dir().join("cmp-gitops").join(digest)
        });
        let argocd = (!self.argocd_namespace.is_empty()).then(|| ArgoCdSettings {
            namespace: self.argocd_namespace.clone(),
            repo_url: if self.argocd_repo_url.is_empty() { url.clone() } else { self.argocd_repo_url.clone() },
        });
        GitOpsSettings {
            url,
            branch: self.gitops_branch.clone(),
            clone_dir,
            author_name: self.gitops_author_name.clone(),
            author_email: self.gitops_author_email.clone(),
            credentials: None,
            render: RenderSettings {
                root: self.gitops_root.trim_matches('/').to_string(),
                fetch_image: self.gitops_fetch_image.clone(),
            },
            argocd,
        }
    }
}

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
        let vault = if self.vault_addr.is_empty() {
            None
        } else {
            if self.vault_token.is_empty() {
                anyhow::bail!("--vault-addr {} needs a token in VAULT_TOKEN (or --vault-token)", self.vault_addr);
            }
            let auth = self.vault_kubernetes_auth.trim_matches('/');
            if auth.is_empty() {
                anyhow::bail!("--vault-kubernetes-auth must name the auth method's path, such as \"kubernetes\"");
            }
            let gateway = match self.vault_gateway_service_account.trim() {
                "" => None,
                named => match named.split_once('/') {
                    Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
                        Some((namespace.to_string(), name.to_string()))
                    }
                    _ => anyhow::bail!(
                        "--vault-gateway-service-account {named:?} must be <namespace>/<name>, such as cmp-system/cmp-gateway"
                    ),
                },
            };
            Some(VaultSettings {
                addr: self.vault_addr.clone(),
                token: self.vault_token.clone(),
                mount: self.vault_mount.trim_matches('/').to_string(),
                prefix: self.vault_prefix.trim_matches('/').to_string(),
                kubernetes_auth: auth.to_string(),
                gateway,
            })
        };
        let keys_in_vault = self.secret_store == SecretStoreArg::Vault;
        if keys_in_vault && vault.is_none() {
            anyhow::bail!("--secret-store vault needs --vault-addr (VAULT_ADDR) and a token in VAULT_TOKEN");
        }
        self.check_gitops()?;
        let gitops = (!self.gitops_repo.is_empty()).then(|| self.gitops());
        let connector_hosts = self
            .connector_allowed_hosts
            .iter()
            .filter(|h| !h.trim().is_empty())
            .map(|h| h.parse::<cmp_crds::connectors::HostPattern>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("--connector-allowed-hosts: {e}"))?;
        let knowledge = (!self.knowledge_store_url.is_empty()).then(|| crate::settings::KnowledgeSettings {
            url: self.knowledge_store_url.clone(),
            gateway_role: self.knowledge_gateway_role.clone(),
        });
        Ok(Settings {
            gitops,
            connector_hosts,
            knowledge,
            starter_credits: self.starter_credits,
            low_balance_threshold: self.low_balance_threshold,
            meter_stale_after: SignedDuration::from_secs(self.meter_stale_after_seconds),
            network: NetworkSettings {
                gateway_namespace: self.gateway_namespace.clone(),
                dns_namespace: self.dns_namespace.clone(),
                gateway_port: self.gateway_port,
                artifact_egress: self.artifact_egress.clone(),
            },
            organization_selector: Some(self.organization_selector.clone()).filter(|s| !s.is_empty()),
            offering_selector: Some(self.offering_selector.clone()).filter(|s| !s.is_empty()),
            vault,
            keys_in_vault,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Settings> {
        let mut all = vec!["cmp-operator"];
        all.extend_from_slice(args);
        Args::try_parse_from(all)?.settings()
    }

    #[test]
    fn gitops_flags_that_cannot_work_are_refused_naming_the_flag() {
        let error = |args: &[&str]| parse(args).expect_err("refused").to_string();
        assert!(error(&["--argocd-namespace", "argocd"]).contains("--argocd-namespace needs --gitops-repo"));
        assert!(error(&["--gitops-repo", "file:///r.git", "--gitops-root", "../up"]).contains("--gitops-root"));
        assert!(error(&["--gitops-repo", "file:///r.git", "--gitops-root", "/"]).contains("--gitops-root"));
        assert!(error(&["--gitops-repo", "file:///r.git", "--gitops-branch", " "]).contains("--gitops-branch"));
        let secret = ["--gitops-repo", "http://git.example/r.git", "--gitops-credentials-secret", "no-slash"];
        assert!(error(&secret).contains("must be <namespace>/<name>"));
        let settings = parse(&["--gitops-repo", "file:///r.git", "--gitops-root", "/tenants/"]).expect("valid");
        let gitops = settings.gitops.expect("GitOps configured");
        assert_eq!(gitops.render.root, "tenants");
        assert!(gitops.argocd.is_none());
        assert!(parse(&[]).expect("valid").gitops.is_none(), "no repository, no GitOps");
    }

    #[test]
    fn the_gateways_openbao_account_is_namespace_and_name() {
        let vault = ["--vault-addr", "http://127.0.0.1:8200", "--vault-token", "t"];
        let with = |account: &str| {
            let mut args = vault.to_vec();
            args.extend(["--vault-gateway-service-account", account]);
            parse(&args)
        };
        let settings = with("cmp-system/cmp-gateway").expect("valid");
        let gateway = settings.vault.and_then(|v| v.gateway);
        assert_eq!(gateway, Some(("cmp-system".to_string(), "cmp-gateway".to_string())));
        for bad in ["cmp-gateway", "/cmp-gateway", "cmp-system/", "a/b/c"] {
            let error = with(bad).expect_err("refused").to_string();
            assert!(
                error.contains("--vault-gateway-service-account") && error.contains("<namespace>/<name>"),
                "{error}"
            );
        }
        assert!(parse(&vault).expect("valid").vault.and_then(|v| v.gateway).is_none(), "none unless asked");
    }
}
