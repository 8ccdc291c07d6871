//! An Instance's API keys: which to issue, which plaintexts to remove, and
//! what status says of them. Pure functions of the spec, the keys seen
//! issued (the key Secrets in the cache, metadata only: the operator never
//! reads a plaintext back; or the Vault writes of this process) and the
//! previous status.
//!
//! A key is issued once: its plaintext is created (never overwritten), and
//! status is derived from what was issued. A key whose Secret was deleted by
//! hand keeps working from status and is reported; it is never silently
//! replaced. With the Vault store, status is the record of what was issued.

use std::collections::BTreeMap;

use cmp_crds::Instance;
use cmp_crds::conditions::{KEYS_ISSUED, NewCondition, reasons};
use cmp_crds::instance::{ApiKeyStatus, SecretLocation, SecretStore};
use cmp_crds::names::{
    API_KEY_LABEL, INSTANCE_LABEL, KEY_HASH_ANNOTATION, KEY_PUBLIC_ID_ANNOTATION, KEY_SECRET_DATA_KEY, key_secret_name,
    owned_labels,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{ObjectMeta, PartialObjectMeta};

/// A key seen issued: its plaintext is where `location` says.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuedKey {
    /// The key's name (`spec.apiKeys[].name`).
    pub key: String,
    /// Where the plaintext is.
    pub location: SecretLocation,
    /// The key's public id.
    pub public_id: String,
    /// The key's hash.
    pub hash: String,
    /// When it was issued.
    pub created: Option<Time>,
}

impl IssuedKey {
    /// Reads a key Secret's metadata; None when it is not one (or lacks its annotations).
    pub fn of_secret(secret: &PartialObjectMeta<Secret>) -> Option<Self> {
        let annotations = secret.metadata.annotations.as_ref()?;
        Some(Self {
            key: secret.labels().get(API_KEY_LABEL)?.clone(),
            location: SecretLocation {
                store: SecretStore::Secret,
                name: secret.name_any(),
                key: KEY_SECRET_DATA_KEY.to_string(),
            },
            public_id: annotations.get(KEY_PUBLIC_ID_ANNOTATION)?.clone(),
            hash: annotations.get(KEY_HASH_ANNOTATION)?.clone(),
            created: secret.metadata.creation_timestamp.clone(),
        })
    }
}

/// Where new keys' plaintexts go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store<'a> {
    /// A Secret `<instance>-key-<name>` in the control namespace.
    Secret,
    /// Vault/OpenBao KV v2, under `<prefix>/<organization>/`.
    Vault {
        /// The path prefix of every CMP key.
        prefix: &'a str,
    },
}

/// The Vault KV path of a key: `<prefix>/<organization>/instances/<instance>/keys/<key>`.
pub fn vault_path(prefix: &str, organization: &str, instance: &str, key: &str) -> String {
    format!("{prefix}/{organization}/instances/{instance}/keys/{key}")
}

/// A key to issue.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyToIssue {
    /// The key's name.
    pub key: String,
    /// Where its plaintext goes.
    pub location: SecretLocation,
    /// For the Secret store, the Secret's metadata (name, namespace, labels); the operator adds the key and its annotations.
    pub metadata: ObjectMeta,
}

/// The keys' part of an Instance's desired state.
#[derive(Debug, Clone, PartialEq)]
pub struct Keys {
    /// What status lists.
    pub status: Vec<ApiKeyStatus>,
    /// Keys to issue.
    pub issue: Vec<KeyToIssue>,
    /// The plaintexts of keys removed from the spec: they go.
    pub remove: Vec<SecretLocation>,
    /// `KeysIssued`.
    pub condition: NewCondition<'static>,
}

/// The labels of the Secrets of `instance`'s keys.
pub fn secret_labels(instance: &Instance, organization: &str, key: &str) -> BTreeMap<String, String> {
    let mut labels = owned_labels(organization, None);
    labels.insert(INSTANCE_LABEL.to_string(), instance.name_any());
    labels.insert(API_KEY_LABEL.to_string(), key.to_string());
    labels
}

/// The keys of `instance` (in `organization`), given the keys seen issued, the store for new ones and the previous status.
pub fn keys(instance: &Instance, organization: &str, issued: &[IssuedKey], store: Store) -> Keys {
    let previous = instance.status.as_ref().map(|s| s.api_keys.as_slice()).unwrap_or_default();
    let name = instance.name_any();
    let mut status = Vec::new();
    let mut issue = Vec::new();
    let mut missing = Vec::new();
    for spec in instance.spec.api_keys.iter().filter(|k| !k.revoked) {
        let seen = issued.iter().find(|s| s.key == spec.name);
        let before = previous.iter().find(|k| k.name == spec.name);
        match (seen, before) {
            (Some(seen), _) => status.push(ApiKeyStatus {
                name: spec.name.clone(),
                public_id: seen.public_id.clone(),
                hash: seen.hash.clone(),
                created_at: before
                    .filter(|b| b.hash == seen.hash)
                    .map(|b| b.created_at.clone())
                    .or(seen.created.clone())
                    .unwrap_or(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
                expires_at: spec.expires_at.clone(),
                secret: seen.location.clone(),
            }),
            (None, Some(before)) => {
                // A Secret is watched, so its absence is news; a Vault entry is not watched.
                if before.secret.store == SecretStore::Secret {
                    missing.push(format!("{} (Secret {})", spec.name, before.secret.name));
                }
                status.push(ApiKeyStatus { expires_at: spec.expires_at.clone(), ..before.clone() });
            }
            (None, None) => issue.push(KeyToIssue {
                key: spec.name.clone(),
                location: match store {
                    Store::Secret => SecretLocation {
                        store: SecretStore::Secret,
                        name: key_secret_name(&name, &spec.name),
                        key: KEY_SECRET_DATA_KEY.to_string(),
                    },
                    Store::Vault { prefix } => SecretLocation {
                        store: SecretStore::Vault,
                        name: vault_path(prefix, organization, &name, &spec.name),
                        key: KEY_SECRET_DATA_KEY.to_string(),
                    },
                },
                metadata: ObjectMeta {
                    name: Some(key_secret_name(&name, &spec.name)),
                    namespace: instance.namespace(),
                    labels: Some(secret_labels(instance, organization, &spec.name)),
                    ..Default::default()
                },
            }),
        }
    }
    let in_spec = |key: &str| instance.spec.api_keys.iter().any(|k| k.name == key);
    let mut remove: Vec<SecretLocation> =
        issued.iter().filter(|s| !in_spec(&s.key)).map(|s| s.location.clone()).collect();
    for gone in previous.iter().filter(|k| !in_spec(&k.name) && k.secret.store == SecretStore::Vault) {
        if !remove.contains(&gone.secret) {
            remove.push(gone.secret.clone());
        }
    }
    let condition = if !missing.is_empty() {
        NewCondition::new(
            KEYS_ISSUED,
            false,
            reasons::KEY_SECRET_MISSING,
            format!(
                "the plaintext Secret of key {} was deleted; the key still works, but cannot be shown again: remove or revoke the entry and add a new one to issue a new key",
                missing.join(", ")
            ),
        )
    } else if !issue.is_empty() {
        let names: Vec<&str> = issue.iter().map(|k| k.key.as_str()).collect();
        NewCondition::new(KEYS_ISSUED, false, reasons::PROVISIONING, format!("issuing key {}", names.join(", ")))
    } else {
        NewCondition::new(KEYS_ISSUED, true, reasons::KEYS_ISSUED, format!("{} key(s) issued", status.len()))
    };
    Keys { status, issue, remove, condition }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_crds::InstanceSpec;
    use cmp_crds::instance::ApiKeySpec;

    fn instance(keys: &[(&str, bool)]) -> Instance {
        let mut i = Instance::new(
            "bot",
            InstanceSpec {
                project: "p".into(),
                offering: "o".into(),
                version: "1".into(),
                plan: "basic".into(),
                suspended: false,
                api_keys: keys
                    .iter()
                    .map(|(name, revoked)| ApiKeySpec { name: name.to_string(), expires_at: None, revoked: *revoked })
                    .collect(),
                connectors: vec![],
                config: Default::default(),
                deletion_policy: Default::default(),
            },
        );
        i.metadata.namespace = Some("cmp-acme".into());
        i
    }

    fn secret(key: &str) -> IssuedKey {
        IssuedKey {
            key: key.into(),
            location: SecretLocation {
                store: SecretStore::Secret,
                name: key_secret_name("bot", key),
                key: KEY_SECRET_DATA_KEY.into(),
            },
            public_id: format!("id{key}"),
            hash: format!("sha256:{key}"),
            created: None,
        }
    }

    #[test]
    fn a_new_key_is_issued_into_a_labelled_secret() {
        let k = keys(&instance(&[("main", false)]), "acme", &[], Store::Secret);
        assert_eq!(k.issue.len(), 1);
        let meta = &k.issue[0].metadata;
        assert_eq!(meta.name.as_deref(), Some("bot-key-main"));
        assert_eq!(meta.labels.as_ref().and_then(|l| l.get(API_KEY_LABEL)).map(String::as_str), Some("main"));
        assert!(k.status.is_empty());
        assert_eq!(k.condition.status, "False");
    }

    #[test]
    fn an_issued_key_is_listed_from_its_secret_and_not_issued_again() {
        let k = keys(&instance(&[("main", false)]), "acme", &[secret("main")], Store::Secret);
        assert!(k.issue.is_empty());
        assert_eq!(k.status[0].public_id, "idmain");
        assert_eq!(k.status[0].secret.name, "bot-key-main");
        assert_eq!(k.condition.reason, "KeysIssued");
    }

    #[test]
    fn revoked_keys_leave_status_and_removed_keys_lose_their_secret() {
        let k =
            keys(&instance(&[("old", true), ("new", false)]), "acme", &[secret("old"), secret("new")], Store::Secret);
        assert_eq!(k.status.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["new"]);
        assert!(k.remove.is_empty(), "a revoked key keeps its Secret");
        let k = keys(&instance(&[("new", false)]), "acme", &[secret("old"), secret("new")], Store::Secret);
        assert_eq!(k.remove.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["bot-key-old"]);
    }

    #[test]
    fn vault_keys_go_under_the_organization_prefix_and_status_is_their_record() {
        let mut i = instance(&[("main", false)]);
        let store = Store::Vault { prefix: "cmp" };
        let k = keys(&i, "acme", &[], store);
        assert_eq!(k.issue[0].location.store, SecretStore::Vault);
        assert_eq!(k.issue[0].location.name, "cmp/acme/instances/bot/keys/main");
        let issued = IssuedKey { location: k.issue[0].location.clone(), ..secret("main") };
        let listed = keys(&i, "acme", &[issued], store).status;
        i.status = Some(cmp_crds::InstanceStatus { api_keys: listed.clone(), ..Default::default() });
        let after_restart = keys(&i, "acme", &[], store);
        assert!(after_restart.issue.is_empty(), "status is the record: nothing re-issued");
        assert_eq!(after_restart.status, listed);
        assert_eq!(after_restart.condition.reason, "KeysIssued");
        i.spec.api_keys.clear();
        let removed = keys(&i, "acme", &[], store);
        assert_eq!(
            removed.remove.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            ["cmp/acme/instances/bot/keys/main"]
        );
    }

    #[test]
    fn a_deleted_secret_is_reported_and_no_other_key_is_minted() {
        let mut i = instance(&[("main", false)]);
        let before = keys(&i, "acme", &[secret("main")], Store::Secret).status;
        i.status = Some(cmp_crds::InstanceStatus { api_keys: before.clone(), ..Default::default() });
        let k = keys(&i, "acme", &[], Store::Secret);
        assert!(k.issue.is_empty(), "never re-issued silently");
        assert_eq!(k.status, before, "the key keeps working");
        assert_eq!(k.condition.reason, "KeySecretMissing");
        assert!(k.condition.message.contains("bot-key-main"), "{}", k.condition.message);
    }
}
