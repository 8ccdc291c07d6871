//! The runtimes' own API keys, read from the Secrets the Offerings name
//! (`spec.runtime.apiKeySecretRef`) through a [`SecretSource`] by a
//! background task, never on the run path. The gateway reads no other Secret.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use cmp_core::secrets::{SecretError, SecretRef, SecretSource};
use cmp_crds::offering::SecretKeyRef;

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
    pub async fn keep_reading(self, secrets: Arc<dyn SecretSource>, directory: Directory) {
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
                let at = SecretRef::Kubernetes {
                    namespace: reference.namespace.clone(),
                    name: reference.name.clone(),
                    key: reference.key.clone(),
                };
                let value = match secrets.read(&at).await {
                    Ok(value) => Some(value),
                    Err(SecretError::Missing(_)) => None,
                    Err(error) => {
                        tracing::warn!(%error, "reading a runtime key");
                        continue;
                    }
                };
                let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
                match value {
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

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_core::secrets::FakeSecrets;
    use cmp_crds::Offering;

    fn offering(name: &str, secret: &str) -> Offering {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Offering", "metadata": {"name": name},
            "spec": {"displayName": name, "runtime": {"mode": "Shared", "endpoint": "http://127.0.0.1:7861",
                     "apiKeySecretRef": {"namespace": "cmp-system", "name": secret, "key": "apiKey"}},
                     "versions": [{"name": "1", "flowId": "f", "artifact": {"url": "file:///x", "sha256": "0".repeat(64)}}],
                     "plans": [{"id": "free", "creditsPerRun": 1}]}
        }))
        .expect("an Offering")
    }

    #[tokio::test]
    async fn the_keys_the_offerings_name_are_read_from_the_secret_source() {
        let secrets = Arc::new(FakeSecrets::default());
        let at = |name: &str| SecretRef::Kubernetes {
            namespace: "cmp-system".into(),
            name: name.into(),
            key: "apiKey".into(),
        };
        secrets.put(at("lfx"), "sk-1");
        let directory =
            Directory::filled(Vec::new(), vec![offering("echo", "lfx"), offering("other", "absent")], Vec::new());
        let keys = RuntimeKeys::default();
        let reading = tokio::spawn(keys.clone().keep_reading(secrets, directory));
        keys.read_once().await;
        let reference =
            |name: &str| SecretKeyRef { namespace: "cmp-system".into(), name: name.into(), key: "apiKey".into() };
        assert_eq!(keys.get(&reference("lfx")).as_deref(), Some("sk-1"));
        assert_eq!(keys.get(&reference("absent")), None, "a missing key is not there: its runs get 503");
        reading.abort();
    }
}
