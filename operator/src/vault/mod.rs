//! Vault/OpenBao through `vaultrs` (`--vault-addr`): connector access per
//! Project ([`connectors`]), and API-key plaintexts in KV v2
//! (`--secret-store vault`). A key is created with check-and-set 0, so it is never
//! overwritten: a key found already there (written before a crash, before
//! status recorded it) is adopted, not replaced. What this process issued is
//! remembered until status records it.

pub mod connectors;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use cmp_crds::instance::SecretLocation;
use cmp_crds::names::KEY_SECRET_DATA_KEY;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use vaultrs::api::kv2::requests::SetSecretRequestOptions;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use crate::instance::keys::IssuedKey;
use crate::settings::VaultSettings;

/// Why Vault could not be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "Vault at {addr}, {what}: {source}; check --vault-addr, --vault-token and the token's policy (on {mount}/, sys/policy and the Kubernetes auth roles)"
)]
pub struct VaultError {
    addr: String,
    mount: String,
    what: String,
    #[source]
    source: ClientError,
}

/// Vault, and what this process wrote and saw there: the keys it issued,
/// the Project access it wrote, the connector secrets it looked at.
pub struct VaultStore {
    client: VaultClient,
    settings: VaultSettings,
    issued: Mutex<HashMap<String, Vec<IssuedKey>>>,
    access_written: Mutex<HashMap<String, connectors::ConnectorAccess>>,
    retired: Mutex<std::collections::HashSet<String>>,
    secret_checks: Mutex<HashMap<String, connectors::SecretCheck>>,
}

impl VaultStore {
    /// A store for `settings`.
    pub fn new(settings: VaultSettings) -> anyhow::Result<Self> {
        let client_settings = VaultClientSettingsBuilder::default()
            .address(&settings.addr)
            .token(&settings.token)
            .build()
            .map_err(|e| anyhow::anyhow!("--vault-addr {:?}: {e}", settings.addr))?;
        let client = VaultClient::new(client_settings)?;
        Ok(Self {
            client,
            settings,
            issued: Mutex::default(),
            access_written: Mutex::default(),
            retired: Mutex::default(),
            secret_checks: Mutex::default(),
        })
    }

    /// The path prefix of every key.
    pub fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    fn error(&self, what: String) -> impl FnOnce(ClientError) -> VaultError + '_ {
        move |source| VaultError { addr: self.settings.addr.clone(), mount: self.settings.mount.clone(), what, source }
    }

    /// Writes `plaintext` at `location` unless a key is already there; returns the plaintext stored there.
    pub async fn create(&self, location: &SecretLocation, plaintext: &str) -> Result<String, VaultError> {
        let data = BTreeMap::from([(KEY_SECRET_DATA_KEY.to_string(), plaintext.to_string())]);
        let mount = &self.settings.mount;
        let written = vaultrs::kv2::set_with_options(
            &self.client,
            mount,
            &location.name,
            &data,
            SetSecretRequestOptions { cas: 0 },
        )
        .await;
        match written {
            Ok(_) => Ok(plaintext.to_string()),
            // check-and-set 0 refused: a key is already there; it is the one to keep.
            Err(ClientError::APIError { code: 400, .. }) => {
                let stored: BTreeMap<String, String> = vaultrs::kv2::read(&self.client, mount, &location.name)
                    .await
                    .map_err(self.error(format!("reading {}", location.name)))?;
                stored.get(KEY_SECRET_DATA_KEY).cloned().ok_or_else(|| VaultError {
                    addr: self.settings.addr.clone(),
                    mount: mount.clone(),
                    what: format!("{} holds no {KEY_SECRET_DATA_KEY}", location.name),
                    source: ClientError::APIError { code: 400, errors: vec![] },
                })
            }
            Err(e) => Err(self.error(format!("writing {}", location.name))(e)),
        }
    }

    /// Deletes the key at `location`, every version; one that is gone is fine.
    pub async fn delete(&self, location: &SecretLocation) -> Result<(), VaultError> {
        match vaultrs::kv2::delete_metadata(&self.client, &self.settings.mount, &location.name).await {
            Ok(()) | Err(ClientError::APIError { code: 404, .. }) => Ok(()),
            Err(e) => Err(self.error(format!("deleting {}", location.name))(e)),
        }
    }

    /// Remembers a key issued for the Instance `instance` (until its status records it).
    pub fn remember(&self, instance: &str, key: &str, location: &SecretLocation, plaintext: &str) {
        let parsed = cmp_crds::apikey::parse(plaintext).map(|p| p.public_id.to_string()).unwrap_or_default();
        let issued = IssuedKey {
            key: key.to_string(),
            location: location.clone(),
            public_id: parsed,
            hash: cmp_crds::apikey::hash(plaintext),
            created: Some(Time(Timestamp::now())),
        };
        let mut all = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        let keys = all.entry(instance.to_string()).or_default();
        keys.retain(|k| k.key != key);
        keys.push(issued);
    }

    /// The keys this process issued for `instance`.
    pub fn issued(&self, instance: &str) -> Vec<IssuedKey> {
        self.issued.lock().unwrap_or_else(PoisonError::into_inner).get(instance).cloned().unwrap_or_default()
    }

    /// Forgets `instance`.
    pub fn forget(&self, instance: &str) {
        self.issued.lock().unwrap_or_else(PoisonError::into_inner).remove(instance);
    }
}
