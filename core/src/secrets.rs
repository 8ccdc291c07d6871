//! One way to read a secret value, whoever keeps it: a key of a Kubernetes
//! Secret, or a key of an OpenBao (Vault) KV v2 secret. The gateway reads
//! runtime keys (and, with the connector gateway, tool credentials) through
//! it, and the operator reads the runtimes' keys for flows; unit tests use
//! [`FakeSecrets`] instead of a server.
//!
//! A value read is never logged; errors name where it was looked for and
//! what to do, never the value.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use vaultrs::client::VaultClient;
use vaultrs::error::ClientError;

/// Where a secret value is kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// The key `key` of the Kubernetes Secret `namespace/name`.
    Kubernetes {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The key in its data.
        key: String,
    },
    /// The key `key` of the KV v2 secret at `path` of the mount `mount`.
    OpenBao {
        /// The KV v2 mount.
        mount: String,
        /// The secret's path below the mount.
        path: String,
        /// The key in the secret's data.
        key: String,
    },
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Kubernetes { namespace, name, key } => write!(f, "key {key} of Secret {namespace}/{name}"),
            SecretRef::OpenBao { mount, path, key } => write!(f, "key {key} of OpenBao secret {mount}/{path}"),
        }
    }
}

/// Why a secret value could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The secret or its key does not exist: someone must create it.
    #[error("the {0} does not exist: create it")]
    Missing(String),
    /// The store could not be read now (unreachable, refused, not configured): it may work later.
    #[error("the {what} cannot be read: {reason}")]
    Unreadable {
        /// Where it was looked for.
        what: String,
        /// What went wrong.
        reason: String,
    },
}

/// Reads secret values.
pub trait SecretSource: Send + Sync {
    /// The value at `reference` (UTF-8, trimmed of surrounding whitespace).
    fn read<'a>(&'a self, reference: &'a SecretRef) -> BoxFuture<'a, Result<String, SecretError>>;
}

fn unreadable(reference: &SecretRef, reason: impl Into<String>) -> SecretError {
    SecretError::Unreadable { what: reference.to_string(), reason: reason.into() }
}

fn text(reference: &SecretRef, bytes: Vec<u8>) -> Result<String, SecretError> {
    String::from_utf8(bytes).map(|s| s.trim().to_string()).map_err(|_| unreadable(reference, "the value is not UTF-8"))
}

/// Kubernetes Secrets (and OpenBao, when a client is given), read as the process's identity.
pub struct Secrets {
    kubernetes: kube::Client,
    openbao: Option<VaultClient>,
}

impl Secrets {
    /// Secrets read with `kubernetes`, and OpenBao secrets with `openbao` when there is one.
    pub fn new(kubernetes: kube::Client, openbao: Option<VaultClient>) -> Self {
        Self { kubernetes, openbao }
    }

    async fn kubernetes(
        &self,
        reference: &SecretRef,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<String, SecretError> {
        let secrets = kube::Api::<Secret>::namespaced(self.kubernetes.clone(), namespace);
        let secret = secrets.get_opt(name).await.map_err(|e| unreadable(reference, e.to_string()))?;
        let value = secret
            .and_then(|s| s.data)
            .and_then(|mut data| data.remove(key))
            .ok_or_else(|| SecretError::Missing(reference.to_string()))?;
        text(reference, value.0)
    }

    async fn openbao(&self, reference: &SecretRef, mount: &str, path: &str, key: &str) -> Result<String, SecretError> {
        let client = self.openbao.as_ref().ok_or_else(|| unreadable(reference, "no OpenBao is configured"))?;
        let data: HashMap<String, String> = match vaultrs::kv2::read(client, mount, path).await {
            Ok(data) => data,
            Err(ClientError::APIError { code: 404, .. }) => return Err(SecretError::Missing(reference.to_string())),
            Err(error) => return Err(unreadable(reference, error.to_string())),
        };
        data.get(key).map(|v| v.trim().to_string()).ok_or_else(|| SecretError::Missing(reference.to_string()))
    }
}

impl SecretSource for Secrets {
    fn read<'a>(&'a self, reference: &'a SecretRef) -> BoxFuture<'a, Result<String, SecretError>> {
        Box::pin(async move {
            match reference {
                SecretRef::Kubernetes { namespace, name, key } => {
                    self.kubernetes(reference, namespace, name, key).await
                }
                SecretRef::OpenBao { mount, path, key } => self.openbao(reference, mount, path, key).await,
            }
        })
    }
}

/// A fake secret store, in memory, for unit tests: what was put is read back;
/// anything else is missing.
#[derive(Default)]
pub struct FakeSecrets(Mutex<HashMap<SecretRef, String>>);

impl FakeSecrets {
    /// Keeps `value` at `reference`.
    pub fn put(&self, reference: SecretRef, value: &str) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(reference, value.to_string());
    }
}

impl SecretSource for FakeSecrets {
    fn read<'a>(&'a self, reference: &'a SecretRef) -> BoxFuture<'a, Result<String, SecretError>> {
        let found = self.0.lock().unwrap_or_else(PoisonError::into_inner).get(reference).cloned();
        Box::pin(async move { found.ok_or_else(|| SecretError::Missing(reference.to_string())) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_fake_reads_back_what_was_put_and_names_what_is_missing() {
        let fake = FakeSecrets::default();
        let key = SecretRef::Kubernetes { namespace: "cmp-system".into(), name: "lfx".into(), key: "apiKey".into() };
        fake.put(key.clone(), "sk-1");
        assert_eq!(fake.read(&key).await, Ok("sk-1".into()));
        let other = SecretRef::OpenBao { mount: "cmp".into(), path: "connectors/acme/p/b".into(), key: "token".into() };
        assert_eq!(
            fake.read(&other).await.map_err(|e| e.to_string()),
            Err("the key token of OpenBao secret cmp/connectors/acme/p/b does not exist: create it".into())
        );
    }
}
