//! An Instance's API keys: which to issue, which plaintexts to remove, and
//! what status says of them. Pure functions of the spec, the key Secrets
//! seen in the cache (metadata only: the operator never reads a plaintext
//! back) and the previous status.
//!
//! A key is issued once: its Secret is created (never overwritten), and
//! status is derived from the Secret. A key whose Secret was deleted by hand
//! keeps working from status and is reported; it is never silently replaced.

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

/// What the cache shows of one key Secret.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySecret {
    /// The key's name (`spec.apiKeys[].name`).
    pub key: String,
    /// The Secret's name.
    pub secret: String,
    /// The key's public id.
    pub public_id: String,
    /// The key's hash.
    pub hash: String,
    /// When the Secret was created.
    pub created: Option<Time>,
}

impl KeySecret {
    /// Reads a key Secret's metadata; None when it is not one (or lacks its annotations).
    pub fn of(secret: &PartialObjectMeta<Secret>) -> Option<Self> {
        let annotations = secret.metadata.annotations.as_ref()?;
        Some(Self {
            key: secret.labels().get(API_KEY_LABEL)?.clone(),
            secret: secret.name_any(),
            public_id: annotations.get(KEY_PUBLIC_ID_ANNOTATION)?.clone(),
            hash: annotations.get(KEY_HASH_ANNOTATION)?.clone(),
            created: secret.metadata.creation_timestamp.clone(),
        })
    }
}

/// A key to issue: a new Secret holding its plaintext.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyToIssue {
    /// The key's name.
    pub key: String,
    /// The Secret's metadata (name, namespace, labels); the operator adds the key and its annotations.
    pub metadata: ObjectMeta,
}

/// The keys' part of an Instance's desired state.
#[derive(Debug, Clone, PartialEq)]
pub struct Keys {
    /// What status lists.
    pub status: Vec<ApiKeyStatus>,
    /// Keys to issue.
    pub issue: Vec<KeyToIssue>,
    /// Secrets of keys removed from the spec: their plaintexts go.
    pub remove: Vec<String>,
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

/// The keys of `instance` (in `organization`), given its key Secrets and the previous status.
pub fn keys(instance: &Instance, organization: &str, secrets: &[KeySecret]) -> Keys {
    let previous = instance.status.as_ref().map(|s| s.api_keys.as_slice()).unwrap_or_default();
    let name = instance.name_any();
    let mut status = Vec::new();
    let mut issue = Vec::new();
    let mut missing = Vec::new();
    for spec in instance.spec.api_keys.iter().filter(|k| !k.revoked) {
        let secret = secrets.iter().find(|s| s.key == spec.name);
        let before = previous.iter().find(|k| k.name == spec.name);
        match (secret, before) {
            (Some(secret), _) => status.push(ApiKeyStatus {
                name: spec.name.clone(),
                public_id: secret.public_id.clone(),
                hash: secret.hash.clone(),
                created_at: before
                    .filter(|b| b.hash == secret.hash)
                    .map(|b| b.created_at.clone())
                    .or(secret.created.clone())
                    .unwrap_or(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
                expires_at: spec.expires_at.clone(),
                secret: SecretLocation {
                    store: SecretStore::Secret,
                    name: secret.secret.clone(),
                    key: KEY_SECRET_DATA_KEY.to_string(),
                },
            }),
            (None, Some(before)) => {
                missing.push(format!("{} (Secret {})", spec.name, before.secret.name));
                status.push(ApiKeyStatus { expires_at: spec.expires_at.clone(), ..before.clone() });
            }
            (None, None) => issue.push(KeyToIssue {
                key: spec.name.clone(),
                metadata: ObjectMeta {
                    name: Some(key_secret_name(&name, &spec.name)),
                    namespace: instance.namespace(),
                    labels: Some(secret_labels(instance, organization, &spec.name)),
                    ..Default::default()
                },
            }),
        }
    }
    let remove = secrets
        .iter()
        .filter(|s| !instance.spec.api_keys.iter().any(|k| k.name == s.key))
        .map(|s| s.secret.clone())
        .collect();
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

    fn secret(key: &str) -> KeySecret {
        KeySecret {
            key: key.into(),
            secret: key_secret_name("bot", key),
            public_id: format!("id{key}"),
            hash: format!("sha256:{key}"),
            created: None,
        }
    }

    #[test]
    fn a_new_key_is_issued_into_a_labelled_secret() {
        let k = keys(&instance(&[("main", false)]), "acme", &[]);
        assert_eq!(k.issue.len(), 1);
        let meta = &k.issue[0].metadata;
        assert_eq!(meta.name.as_deref(), Some("bot-key-main"));
        assert_eq!(meta.labels.as_ref().and_then(|l| l.get(API_KEY_LABEL)).map(String::as_str), Some("main"));
        assert!(k.status.is_empty());
        assert_eq!(k.condition.status, "False");
    }

    #[test]
    fn an_issued_key_is_listed_from_its_secret_and_not_issued_again() {
        let k = keys(&instance(&[("main", false)]), "acme", &[secret("main")]);
        assert!(k.issue.is_empty());
        assert_eq!(k.status[0].public_id, "idmain");
        assert_eq!(k.status[0].secret.name, "bot-key-main");
        assert_eq!(k.condition.reason, "KeysIssued");
    }

    #[test]
    fn revoked_keys_leave_status_and_removed_keys_lose_their_secret() {
        let k = keys(&instance(&[("old", true), ("new", false)]), "acme", &[secret("old"), secret("new")]);
        assert_eq!(k.status.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["new"]);
        assert!(k.remove.is_empty(), "a revoked key keeps its Secret");
        let k = keys(&instance(&[("new", false)]), "acme", &[secret("old"), secret("new")]);
        assert_eq!(k.remove, ["bot-key-old"]);
    }

    #[test]
    fn a_deleted_secret_is_reported_and_no_other_key_is_minted() {
        let mut i = instance(&[("main", false)]);
        let before = keys(&i, "acme", &[secret("main")]).status;
        i.status = Some(cmp_crds::InstanceStatus { api_keys: before.clone(), ..Default::default() });
        let k = keys(&i, "acme", &[]);
        assert!(k.issue.is_empty(), "never re-issued silently");
        assert_eq!(k.status, before, "the key keeps working");
        assert_eq!(k.condition.reason, "KeySecretMissing");
        assert!(k.condition.message.contains("bot-key-main"), "{}", k.condition.message);
    }
}
