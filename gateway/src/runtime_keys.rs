//! The runtimes' own API keys, read from the Secrets the Offerings name
//! (`spec.runtime.apiKeySecretRef`) by a background task, never on the run
//! path. The gateway reads no other Secret.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use cmp_crds::offering::SecretKeyRef;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::directory::Directory;

/// How often every key is read again (a rotated key is picked up within this).
const REFRESH: Duration = Duration::from_secs(60);
/// How soon a key that could not be read is tried again.
const RETRY_MISSING: Duration = Duration::from_secs(5);
/// How often the Offerings are looked at for keys not read yet.
const LOOK: Duration = Duration::from_millis(500);

/// The keys read so far.
#[derive(Clone, Default)]
pub struct RuntimeKeys {
    keys: Arc<RwLock<HashMap<SecretKeyRef, String>>>,
    read_once: Arc<tokio::sync::Notify>,
    was_read_once: Arc<std::sync::atomic::AtomicBool>,
}

impl RuntimeKeys {
    /// The key in `reference`, if it was read.
    pub fn get(&self, reference: &SecretKeyRef) -> Option<String> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner).get(reference).cloned()
    }

    /// Completes once the keys of every Offering in the synced cache were tried once.
    pub async fn read_once(&self) {
        let notified = self.read_once.notified();
        if !self.was_read_once.load(std::sync::atomic::Ordering::SeqCst) {
            notified.await;
        }
    }

    /// Reads the keys the Offerings name: new ones within half a second, all
    /// of them every minute. Start it once the caches are synced (a store's
    /// `wait_until_ready` wakes one waiter only, so only one task waits on it).
    pub async fn keep_reading(self, client: kube::Client, directory: Directory) {
        let mut last_full = tokio::time::Instant::now();
        let mut tried: HashMap<SecretKeyRef, tokio::time::Instant> = HashMap::new();
        loop {
            let full = last_full.elapsed() >= REFRESH;
            if full {
                last_full = tokio::time::Instant::now();
            }
            let wanted: Vec<SecretKeyRef> = directory
                .offerings
                .state()
                .iter()
                .filter_map(|o| o.spec.runtime.api_key_secret_ref.clone())
                .filter(|r| {
                    full || (self.get(r).is_none() && tried.get(r).is_none_or(|t| t.elapsed() >= RETRY_MISSING))
                })
                .collect();
            for reference in wanted {
                tried.insert(reference.clone(), tokio::time::Instant::now());
                let secrets = Api::<Secret>::namespaced(client.clone(), &reference.namespace);
                let value = match secrets.get_opt(&reference.name).await {
                    Ok(secret) => secret.and_then(|s| s.data).and_then(|mut d| d.remove(&reference.key)),
                    Err(error) => {
                        tracing::warn!(%error, secret = %reference.name, namespace = %reference.namespace, "reading a runtime key");
                        continue;
                    }
                };
                let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
                match value.map(|v| String::from_utf8_lossy(&v.0).trim().to_string()) {
                    Some(key) => {
                        keys.insert(reference, key);
                    }
                    None => {
                        if keys.remove(&reference).is_some() || full {
                            tracing::warn!(secret = %reference.name, namespace = %reference.namespace, key = %reference.key, "a runtime key is missing: runs of its Offering get 503");
                        }
                    }
                }
            }
            if !self.was_read_once.swap(true, std::sync::atomic::Ordering::SeqCst) {
                self.read_once.notify_waiters();
            }
            tokio::time::sleep(LOOK).await;
        }
    }
}
