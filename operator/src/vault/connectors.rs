//! Connector secrets in Vault/OpenBao. The gateway alone reads them: with
//! `--vault-gateway-service-account`, a policy that reads every connector
//! secret and nothing else, and a Kubernetes-auth role that binds the
//! gateway's ServiceAccount to it. The per-Project runtime policy and role of
//! earlier releases (`cmp.<org>.<project>`) are deleted. Per binding, a look
//! at whether its secret exists (remembered, so that status is a pure
//! function of what was last seen).

use std::sync::PoisonError;

use k8s_openapi::jiff::Timestamp;
use vaultrs::api::auth::kubernetes::requests::CreateKubernetesRoleRequest;
use vaultrs::error::ClientError;

use super::{VaultError, VaultStore};

/// How long the token the gateway gets lives (it logs in again before).
const TOKEN_TTL: &str = "1h";

/// What an identity may read in Vault: its policy and its Kubernetes-auth role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorAccess {
    /// The policy and role name, `cmp.gateway.connectors`.
    pub name: String,
    /// The policy (HCL).
    pub policy: String,
    /// The namespace whose ServiceAccount the role binds.
    pub namespace: String,
    /// That ServiceAccount.
    pub service_account: String,
}

impl ConnectorAccess {
    /// The gateway's access: every connector secret under `mount`, read-only, for `service_account` in `namespace` (pure).
    pub fn gateway(mount: &str, namespace: &str, service_account: &str) -> Self {
        let root = cmp_crds::names::CONNECTORS_ROOT;
        let policy = format!(
            "# CMP: the gateway reads tenants' connector secrets to call their tools; it writes nothing and reads nothing else.\n\
             path \"{mount}/data/{root}*\" {{\n  capabilities = [\"read\"]\n}}\n"
        );
        Self {
            name: cmp_crds::names::GATEWAY_CONNECTOR_ROLE.to_string(),
            policy,
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        }
    }
}

/// What the last look at a connector secret found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretCheck {
    /// Whether the secret exists (its current version neither deleted nor destroyed), or why Vault could not say.
    pub found: Result<bool, String>,
    /// When.
    pub at: Timestamp,
}

impl VaultStore {
    /// Writes the policy and role of `access` unless this process already wrote exactly these.
    pub async fn ensure_access(&self, access: &ConnectorAccess) -> Result<(), VaultError> {
        if self.access_written.lock().unwrap_or_else(PoisonError::into_inner).get(&access.name) == Some(access) {
            return Ok(());
        }
        vaultrs::sys::policy::set(&self.client, &access.name, &access.policy)
            .await
            .map_err(self.error(format!("writing the policy {}", access.name)))?;
        let auth = &self.settings.kubernetes_auth;
        let mut role = CreateKubernetesRoleRequest::builder();
        role.bound_service_account_names(vec![access.service_account.clone()])
            .bound_service_account_namespaces(vec![access.namespace.clone()])
            .token_policies(vec![access.name.clone()])
            .token_ttl(TOKEN_TTL);
        vaultrs::auth::kubernetes::role::create(&self.client, auth, &access.name, Some(&mut role)).await.map_err(
            self.error(format!(
                "writing the role auth/{auth}/role/{} (is the Kubernetes auth method enabled at {auth}/? see --vault-kubernetes-auth)",
                access.name
            )),
        )?;
        tracing::info!(
            role = access.name,
            namespace = access.namespace,
            "wrote the Project's connector policy and role"
        );
        self.access_written.lock().unwrap_or_else(PoisonError::into_inner).insert(access.name.clone(), access.clone());
        Ok(())
    }

    /// Deletes the role and the policy `name`; what is gone is fine.
    /// Deletes the runtime policy and role `name` of an earlier release, once per process.
    pub async fn retire_runtime_access(&self, name: &str) -> Result<(), VaultError> {
        if self.retired.lock().unwrap_or_else(PoisonError::into_inner).contains(name) {
            return Ok(());
        }
        self.delete_access(name).await?;
        tracing::info!(role = name, "deleted the runtime's connector policy and role of an earlier release, if any");
        self.retired.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_string());
        Ok(())
    }

    pub async fn delete_access(&self, name: &str) -> Result<(), VaultError> {
        self.access_written.lock().unwrap_or_else(PoisonError::into_inner).remove(name);
        let auth = &self.settings.kubernetes_auth;
        match vaultrs::auth::kubernetes::role::delete(&self.client, auth, name).await {
            Ok(()) | Err(ClientError::APIError { code: 404, .. }) => {}
            Err(e) => return Err(self.error(format!("deleting the role auth/{auth}/role/{name}"))(e)),
        }
        match vaultrs::sys::policy::delete(&self.client, name).await {
            Ok(()) | Err(ClientError::APIError { code: 404, .. }) => Ok(()),
            Err(e) => Err(self.error(format!("deleting the policy {name}"))(e)),
        }
    }

    /// Looks at whether the connector secret `path` (below the mount) exists, and remembers what it found.
    pub async fn check_secret(&self, path: &str) -> SecretCheck {
        let found = match vaultrs::kv2::read_metadata(&self.client, &self.settings.mount, path).await {
            Ok(metadata) => Ok(metadata
                .versions
                .get(&metadata.current_version.to_string())
                .is_some_and(|v| v.deletion_time.is_empty() && !v.destroyed)),
            Err(ClientError::APIError { code: 404, .. }) => Ok(false),
            Err(e) => Err(self.error(format!("reading the metadata of {path}"))(e).to_string()),
        };
        let check = SecretCheck { found, at: Timestamp::now() };
        self.secret_checks.lock().unwrap_or_else(PoisonError::into_inner).insert(path.to_string(), check.clone());
        check
    }

    /// The last look at `path` by this process.
    pub fn secret_check(&self, path: &str) -> Option<SecretCheck> {
        self.secret_checks.lock().unwrap_or_else(PoisonError::into_inner).get(path).cloned()
    }

    /// The gateway's access to connector secrets, when `--vault-gateway-service-account` names its ServiceAccount.
    pub fn gateway_access(&self) -> Option<ConnectorAccess> {
        let (namespace, name) = self.settings.gateway.as_ref()?;
        Some(ConnectorAccess::gateway(&self.settings.mount, namespace, name))
    }

    /// The KV v2 mount.
    pub fn mount(&self) -> &str {
        &self.settings.mount
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_policy_reads_every_connector_secret_and_nothing_else() {
        let access = ConnectorAccess::gateway("secret", "cmp-system", "cmp-gateway");
        assert_eq!((access.name.as_str(), access.namespace.as_str()), ("cmp.gateway.connectors", "cmp-system"));
        assert!(access.policy.contains("path \"secret/data/connectors/*\""), "{}", access.policy);
        assert_eq!(access.policy.matches("path ").count(), 1, "one path, nothing else");
        assert!(access.policy.contains("capabilities = [\"read\"]"));
        assert!(
            !access.policy.contains("list") && !access.policy.contains("update") && !access.policy.contains("create")
        );
    }
}
