//! Creating, rotating and revoking an Instance's API key, for every client
//! that does it: `kubectl cmp keys` (with the user's kubeconfig) and the
//! buyer API (as the caller, by impersonation). Both ask the same way, so a
//! key made by one is rotated or revoked by the other.
//!
//! Each key's entry in `spec.apiKeys` is applied under a field manager of its
//! own (`<client>-key-<name>`), so applying one key never drops another. The
//! operator issues the key and writes its plaintext once, to a Secret in the
//! Instance's namespace (or to Vault/OpenBao); `create` and `rotate` wait for
//! it and read it.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::Instance;
use crate::instance::{ApiKeyStatus, SecretStore};

/// Why a key request did not do what it was asked. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyRequestError {
    /// No such Instance (or the caller may not see it).
    #[error("Instance {instance} not found in namespace {namespace}: check the name")]
    NoInstance {
        /// The Instance asked for.
        instance: String,
        /// Its namespace.
        namespace: String,
    },
    /// `create` of a name the Instance already has.
    #[error("Instance {instance} already has a key {name}: rotate it, or create one under another name")]
    AlreadyThere {
        /// The Instance.
        instance: String,
        /// The key's name.
        name: String,
    },
    /// `rotate` or `revoke` of a name the Instance does not have.
    #[error("Instance {instance} has no key {name}: create it first")]
    NoKey {
        /// The Instance.
        instance: String,
        /// The key's name.
        name: String,
    },
    /// The operator did not act in time.
    #[error("waited {seconds} s for {what}: is cmp-operator running? the Instance's conditions say what it is doing")]
    NotYet {
        /// How long.
        seconds: u64,
        /// For what.
        what: &'static str,
    },
    /// A rotation whose old key is out of the spec, but which the operator did not withdraw in time.
    #[error(
        "key {name} is removed from Instance {instance}'s spec but the operator has not withdrawn it yet \
         (waited {seconds} s): once it has, creating {name} again issues the new key"
    )]
    NotWithdrawn {
        /// The Instance.
        instance: String,
        /// The key's name.
        name: String,
        /// How long.
        seconds: u64,
    },
    /// The key's Secret is gone, or holds no plaintext.
    #[error("the Secret {secret} holds no `{field}`: the key's plaintext was taken; rotate the key for a new one")]
    PlaintextGone {
        /// The Secret.
        secret: String,
        /// Its data key.
        field: String,
    },
    /// The API server refused or failed the request.
    #[error("the Kubernetes API: {0}")]
    Api(#[from] kube::Error),
}

/// A key as issued, with its plaintext when it can be read here.
#[derive(Clone, PartialEq)]
pub struct IssuedKey {
    /// What the Instance's status says of it.
    pub status: ApiKeyStatus,
    /// The plaintext; None when it is kept in Vault/OpenBao (`status.secret` says where).
    pub plaintext: Option<String>,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("status", &self.status)
            .field("plaintext", &self.plaintext.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Key requests on the Instances of one namespace, made with a client (whoever it speaks for).
pub struct KeyRequests {
    namespace: String,
    instances: Api<Instance>,
    secrets: Api<Secret>,
    client_name: &'static str,
    wait: Duration,
}

/// The field manager of one key's entry: `<client>-key-<name>`.
pub fn manager(client_name: &str, name: &str) -> String {
    format!("{client_name}-key-{name}")
}

/// The apply patch of one key's entry (pure).
pub fn entry_patch(instance: &str, name: &str, revoked: bool) -> serde_json::Value {
    let mut entry = json!({"name": name});
    if revoked {
        entry["revoked"] = json!(true);
    }
    json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance", "metadata": {"name": instance},
           "spec": {"apiKeys": [entry]}})
}

/// A JSON patch that removes key `name` at `index`, testing first that it is still there (pure).
pub fn removal_patch(index: usize, name: &str) -> serde_json::Value {
    json!([{"op": "test", "path": format!("/spec/apiKeys/{index}/name"), "value": name},
           {"op": "remove", "path": format!("/spec/apiKeys/{index}")}])
}

/// What status says of key `name`, if it was issued.
pub fn issued<'i>(instance: &'i Instance, name: &str) -> Option<&'i ApiKeyStatus> {
    instance.status.as_ref()?.api_keys.iter().find(|k| k.name == name)
}

impl KeyRequests {
    /// Requests made with `client` in `namespace`, applied as `<client_name>-key-<name>`, waiting at most `wait`
    /// for the operator each time.
    pub fn new(client: kube::Client, namespace: &str, client_name: &'static str, wait: Duration) -> Self {
        Self {
            namespace: namespace.to_string(),
            instances: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client, namespace),
            client_name,
            wait,
        }
    }

    async fn instance(&self, name: &str) -> Result<Instance, KeyRequestError> {
        self.instances.get_opt(name).await?.ok_or_else(|| KeyRequestError::NoInstance {
            instance: name.to_string(),
            namespace: self.namespace.clone(),
        })
    }

    async fn apply(&self, instance: &str, name: &str, revoked: bool) -> Result<(), KeyRequestError> {
        let params = PatchParams::apply(&manager(self.client_name, name)).force();
        self.instances.patch(instance, &params, &Patch::Apply(entry_patch(instance, name, revoked))).await?;
        Ok(())
    }

    /// Adds key `name` to `instance` and returns it once issued.
    pub async fn create(&self, instance: &str, name: &str) -> Result<IssuedKey, KeyRequestError> {
        let found = self.instance(instance).await?;
        if found.spec.api_keys.iter().any(|k| k.name == name) {
            return Err(KeyRequestError::AlreadyThere { instance: instance.into(), name: name.into() });
        }
        // A key of this name that was just removed may still be in the status: wait for a new one.
        let before = issued(&found, name).map(|k| k.public_id.clone());
        self.apply(instance, name, false).await?;
        self.wait_for_new_key(instance, name, before.as_deref()).await
    }

    /// Replaces key `name`: the old key stops working, then a new one is issued under the same name.
    pub async fn rotate(&self, instance: &str, name: &str) -> Result<IssuedKey, KeyRequestError> {
        let found = self.instance(instance).await?;
        let Some(index) = found.spec.api_keys.iter().position(|k| k.name == name) else {
            return Err(KeyRequestError::NoKey { instance: instance.into(), name: name.into() });
        };
        let before = issued(&found, name).map(|k| k.public_id.clone());
        let removal: json_patch::Patch =
            serde_json::from_value(removal_patch(index, name)).map_err(kube::Error::SerdeError)?;
        self.instances.patch(instance, &PatchParams::default(), &Patch::<()>::Json(removal)).await?;
        let withdrawn = self
            .poll("the operator to withdraw the old key", || async {
                Ok(issued(&self.instances.get(instance).await?, name).is_none().then_some(()))
            })
            .await;
        if let Err(KeyRequestError::NotYet { seconds, .. }) = withdrawn {
            // The old key is out of the spec (so it no longer counts once the operator runs): say where things stand.
            return Err(KeyRequestError::NotWithdrawn { instance: instance.into(), name: name.into(), seconds });
        }
        withdrawn?;
        self.apply(instance, name, false).await?;
        self.wait_for_new_key(instance, name, before.as_deref()).await
    }

    /// Revokes key `name`: the gateway refuses it as soon as it sees the change.
    pub async fn revoke(&self, instance: &str, name: &str) -> Result<(), KeyRequestError> {
        let found = self.instance(instance).await?;
        if !found.spec.api_keys.iter().any(|k| k.name == name) {
            return Err(KeyRequestError::NoKey { instance: instance.into(), name: name.into() });
        }
        self.apply(instance, name, true).await
    }

    /// Waits until key `name` is issued with another public id than `old`, and reads its plaintext.
    async fn wait_for_new_key(
        &self,
        instance: &str,
        name: &str,
        old: Option<&str>,
    ) -> Result<IssuedKey, KeyRequestError> {
        let status = self
            .poll("the operator to issue the key", || async {
                let found = self.instances.get(instance).await?;
                Ok(issued(&found, name).filter(|k| Some(k.public_id.as_str()) != old).cloned())
            })
            .await?;
        let plaintext = match status.secret.store {
            SecretStore::Secret => Some(self.plaintext(&status).await?),
            _ => None,
        };
        Ok(IssuedKey { status, plaintext })
    }

    /// The plaintext of an issued key, from its Secret.
    pub async fn plaintext(&self, status: &ApiKeyStatus) -> Result<String, KeyRequestError> {
        let gone =
            || KeyRequestError::PlaintextGone { secret: status.secret.name.clone(), field: status.secret.key.clone() };
        let secret = self.secrets.get_opt(&status.secret.name).await?.ok_or_else(gone)?;
        let bytes = secret.data.as_ref().and_then(|d| d.get(&status.secret.key)).ok_or_else(gone)?;
        String::from_utf8(bytes.0.clone()).map_err(|_| gone())
    }

    /// Polls `check` every 250 ms until it yields, for at most the wait.
    async fn poll<T, F, Fut>(&self, what: &'static str, mut check: F) -> Result<T, KeyRequestError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, KeyRequestError>>,
    {
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            if let Some(value) = check().await? {
                return Ok(value);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(KeyRequestError::NotYet { seconds: self.wait.as_secs(), what });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_entry_names_only_that_key() {
        let patch = entry_patch("bot", "prod", false);
        assert_eq!(patch["spec"]["apiKeys"], json!([{"name": "prod"}]));
        assert_eq!(entry_patch("bot", "prod", true)["spec"]["apiKeys"], json!([{"name": "prod", "revoked": true}]));
        assert_eq!(manager("kubectl-cmp", "prod"), "kubectl-cmp-key-prod");
    }

    #[test]
    fn a_removal_tests_the_name_at_its_index_first() {
        let patch = removal_patch(2, "prod");
        assert_eq!(patch[0], json!({"op": "test", "path": "/spec/apiKeys/2/name", "value": "prod"}));
        assert_eq!(patch[1], json!({"op": "remove", "path": "/spec/apiKeys/2"}));
        let parsed: Result<json_patch::Patch, _> = serde_json::from_value(patch);
        assert!(parsed.is_ok(), "a valid JSON patch");
    }

    #[test]
    fn a_plaintext_never_shows_in_debug_output() {
        let status = ApiKeyStatus {
            name: "prod".into(),
            public_id: "AAAAAAAAAAAA".into(),
            hash: format!("sha256:{}", "0".repeat(64)),
            created_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            expires_at: None,
            secret: crate::instance::SecretLocation {
                store: SecretStore::Secret,
                name: "bot-key-prod".into(),
                key: "key".into(),
            },
        };
        let shown = format!("{:?}", IssuedKey { status, plaintext: Some("cmp_secret".into()) });
        assert!(!shown.contains("cmp_secret") && shown.contains("<redacted>"), "{shown}");
    }
}
