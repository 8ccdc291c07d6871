//! The versions of objects that a reconcile wrote itself (the finalizer it
//! added, the status it wrote) and went on with. Their watch events wake
//! nothing: the reconcile that wrote them already saw them, and the status
//! is a function of the object and what was observed, so reading it back
//! would only compute the same status again. Under a burst of 1,000
//! Instances these echoes were half of all reconciles.
//!
//! A version is skipped only when it still carries what the reconcile read
//! of its own object besides spec and status: the generation (the spec),
//! labels, annotations and the deletion timestamp. A change by someone else
//! merged into the same version (a relist can show only the last one) makes
//! it wake as usual. Status is not compared, so this holds only for kinds
//! whose status the operator writes alone
//! ([`super::Reconcile::SOLE_STATUS_WRITER`]; not Wallets, whose meters the
//! gateway writes).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use kube::Resource;

use super::Reconcile;

/// What a reconcile reads of its own object besides spec and status, as a hash.
fn read_of<K: Resource>(object: &K) -> u64 {
    let meta = object.meta();
    let mut hasher = DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    meta.labels.hash(&mut hasher);
    meta.annotations.hash(&mut hasher);
    meta.deletion_timestamp.as_ref().map(|t| t.0.as_second()).hash(&mut hasher);
    hasher.finish()
}

/// The writes of one reconcile remembered per object at most: the finalizer and the status.
const REMEMBERED: usize = 2;

/// A version a reconcile wrote, and what it had read.
#[derive(Debug)]
struct Written {
    version: String,
    read: u64,
}

/// Per object key (`Kind/namespace/name`), the last versions its reconciles wrote.
#[derive(Debug, Default)]
pub struct OwnWrites(Mutex<HashMap<String, Vec<Written>>>);

impl OwnWrites {
    /// Remembers that a reconcile of `read` (the object as it was read)
    /// wrote it as `resource_version`; nothing for kinds whose status has
    /// other writers (their events are never skipped).
    pub fn record<K: Reconcile>(&self, read: &K, resource_version: Option<String>) {
        let Some(version) = resource_version.filter(|_| K::SOLE_STATUS_WRITER) else { return };
        if let Ok(mut all) = self.0.lock() {
            let written = all.entry(super::key(read)).or_default();
            if written.len() == REMEMBERED {
                written.remove(0);
            }
            written.push(Written { version, read: read_of(read) });
        }
    }

    /// Whether `seen` (from a watch event) is a version a reconcile wrote
    /// itself from what `seen` still carries. Forgets that version and
    /// those written before it: their events are past (a deletion's event
    /// forgets the object).
    pub fn echoes<K: Resource<DynamicType = ()>>(&self, seen: &K) -> bool {
        let Some(version) = seen.meta().resource_version.as_deref() else { return false };
        let Ok(mut all) = self.0.lock() else { return false };
        let key = super::key(seen);
        let Some(written) = all.get_mut(&key) else { return false };
        let echo = written.iter().any(|w| w.version == version && w.read == read_of(seen));
        let past = |w: &Written| match (w.version.parse::<u64>(), version.parse::<u64>()) {
            (Ok(written), Ok(seen)) => written <= seen,
            _ => w.version == version,
        };
        written.retain(|w| !past(w));
        if written.is_empty() {
            all.remove(&key);
        }
        echo
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_crds::{Instance, InstanceSpec};

    fn instance(version: &str) -> Instance {
        let spec: InstanceSpec =
            serde_json::from_value(serde_json::json!({"project": "p", "offering": "o", "version": "1", "plan": "b"}))
                .expect("spec");
        let mut instance = Instance::new("bot", spec);
        instance.metadata.namespace = Some("cmp-acme".into());
        instance.metadata.generation = Some(1);
        instance.metadata.resource_version = Some(version.into());
        instance
    }

    #[test]
    fn the_version_a_reconcile_wrote_echoes_once_and_any_other_wakes() {
        let own = OwnWrites::default();
        let read = instance("10");
        own.record(&read, Some("11".into()));
        assert!(!own.echoes(&instance("12")), "a later version is someone else's");
        assert!(!own.echoes(&instance("11")), "the record was forgotten by the later event");
        let mut with_finalizer = instance("11");
        with_finalizer.metadata.finalizers = Some(vec!["cmp.gsv.dev/cleanup".into()]);
        own.record(&read, Some("11".into()));
        own.record(&with_finalizer, Some("12".into()));
        assert!(own.echoes(&with_finalizer), "the finalizer a reconcile added is its own");
        assert!(own.echoes(&instance("12")), "and so is the status it then wrote");
        assert!(!own.echoes(&instance("12")), "an echo is skipped once");
    }

    #[test]
    fn a_wallets_own_writes_are_not_remembered_as_the_gateway_writes_its_status_too() {
        let own = OwnWrites::default();
        let spec: cmp_crds::WalletSpec = serde_json::from_value(serde_json::json!({})).expect("spec");
        let mut wallet = cmp_crds::Wallet::new("acme", spec);
        wallet.metadata.namespace = Some("cmp-acme".into());
        own.record(&wallet, Some("11".into()));
        wallet.metadata.resource_version = Some("11".into());
        assert!(!own.echoes(&wallet), "its status write wakes it");
        assert!(own.0.lock().expect("lock").is_empty(), "and nothing is kept for it");
    }

    #[test]
    fn a_written_version_that_carries_someone_elses_change_wakes() {
        let own = OwnWrites::default();
        let read = instance("10");
        let mut respecified = instance("11");
        respecified.metadata.generation = Some(2);
        own.record(&read, Some("11".into()));
        assert!(!own.echoes(&respecified), "a new spec merged into the written version");
        let mut paused = instance("11");
        paused.metadata.annotations = Some([("cmp.gsv.dev/paused".to_string(), "true".to_string())].into());
        own.record(&read, Some("11".into()));
        assert!(!own.echoes(&paused), "an annotation merged into the written version");
        let mut other = instance("11");
        other.metadata.name = Some("other".into());
        own.record(&read, Some("11".into()));
        assert!(!own.echoes(&other), "another object");
        assert!(own.echoes(&instance("11")), "another object's event leaves this one's record");
        own.record(&read, None);
        assert!(!own.echoes(&instance("11")), "a write that returned no version records nothing");
    }
}
