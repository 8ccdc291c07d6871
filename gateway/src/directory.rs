//! The gateway's view of the CRs: a watch cache of each of the five kinds,
//! and an index folded from the Instance watch that finds the Instance of
//! an API key by its public id. Reads on the run path are map lookups; no
//! Kubernetes call is made while a run is authorized.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use cmp_crds::{Instance, Offering, Organization, Project, Wallet};
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

/// A key an Instance's status listed: its public id, name and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    public_id: String,
    name: String,
    hash: String,
}

/// How many keys that left their Instance's status are remembered.
const RETIRED_KEYS: usize = 100_000;

/// Public id of an API key → the Instance that issued it; and the keys
/// that left their Instance's status (the operator drops a revoked key's
/// hash at once), so that they are refused as revoked, not as unknown,
/// until this process restarts.
#[derive(Default)]
pub struct KeyIndex {
    by_public_id: HashMap<String, ObjectRef<Instance>>,
    by_instance: HashMap<ObjectRef<Instance>, Vec<Listed>>,
    retired: HashMap<String, Listed>,
    retired_order: std::collections::VecDeque<String>,
    /// Instances seen since a re-list began; the rest are dropped when it ends.
    relisting: Option<Vec<ObjectRef<Instance>>>,
}

impl KeyIndex {
    /// Folds one watch event into the index.
    pub fn fold(&mut self, event: &watcher::Event<Instance>) {
        match event {
            watcher::Event::Apply(instance) => self.put(instance),
            watcher::Event::Delete(instance) => self.remove(&ObjectRef::from_obj(instance)),
            watcher::Event::Init => self.relisting = Some(Vec::new()),
            watcher::Event::InitApply(instance) => {
                if let Some(seen) = self.relisting.as_mut() {
                    seen.push(ObjectRef::from_obj(instance));
                }
                self.put(instance);
            }
            watcher::Event::InitDone => {
                let seen: std::collections::HashSet<_> =
                    self.relisting.take().unwrap_or_default().into_iter().collect();
                let gone: Vec<_> = self.by_instance.keys().filter(|r| !seen.contains(*r)).cloned().collect();
                for reference in gone {
                    self.remove(&reference);
                }
            }
        }
    }

    fn put(&mut self, instance: &Instance) {
        let reference = ObjectRef::from_obj(instance);
        let listed: Vec<Listed> = instance
            .status
            .iter()
            .flat_map(|s| s.api_keys.iter())
            .map(|k| Listed { public_id: k.public_id.clone(), name: k.name.clone(), hash: k.hash.clone() })
            .collect();
        let kept = |id: &str| listed.iter().any(|l| l.public_id == id);
        for gone in self.by_instance.remove(&reference).unwrap_or_default().into_iter().filter(|l| !kept(&l.public_id))
        {
            self.retire(&reference, gone);
        }
        for key in &listed {
            self.by_public_id.insert(key.public_id.clone(), reference.clone());
            self.retired.remove(&key.public_id);
        }
        self.by_instance.insert(reference, listed);
    }

    fn remove(&mut self, reference: &ObjectRef<Instance>) {
        for gone in self.by_instance.remove(reference).unwrap_or_default() {
            self.retire(reference, gone);
        }
    }

    fn retire(&mut self, reference: &ObjectRef<Instance>, key: Listed) {
        if self.by_public_id.get(&key.public_id) == Some(reference) {
            self.by_public_id.remove(&key.public_id);
        }
        if self.retired_order.len() >= RETIRED_KEYS
            && let Some(oldest) = self.retired_order.pop_front()
        {
            self.retired.remove(&oldest);
        }
        self.retired_order.push_back(key.public_id.clone());
        self.retired.insert(key.public_id.clone(), key);
    }

    /// The hash of a key that left its Instance's status (revoked, removed, or its Instance deleted).
    pub fn retired(&self, public_id: &str) -> Option<&str> {
        self.retired.get(public_id).map(|k| k.hash.as_str())
    }

    /// The Instance that issued the key with `public_id`.
    pub fn lookup(&self, public_id: &str) -> Option<&ObjectRef<Instance>> {
        self.by_public_id.get(public_id)
    }
}

/// The watch caches and the key index.
#[derive(Clone)]
pub struct Directory {
    /// Organizations.
    pub organizations: Store<Organization>,
    /// Projects.
    pub projects: Store<Project>,
    /// Offerings.
    pub offerings: Store<Offering>,
    /// Instances.
    pub instances: Store<Instance>,
    /// Wallets.
    pub wallets: Store<Wallet>,
    keys: Arc<RwLock<KeyIndex>>,
}

impl Directory {
    /// The caches, and the tasks that feed them (to be spawned).
    pub fn watch(client: &kube::Client) -> (Self, Vec<futures::future::BoxFuture<'static, ()>>) {
        let keys = Arc::new(RwLock::new(KeyIndex::default()));
        let (organizations, organization_events) = cmp_core::watch::cache_all::<Organization>(client);
        let (projects, project_events) = cmp_core::watch::cache_all::<Project>(client);
        let (offerings, offering_events) = cmp_core::watch::cache_all::<Offering>(client);
        let (wallets, wallet_events) = cmp_core::watch::cache_all::<Wallet>(client);
        let (instances, writer) = reflector::store();
        let index = keys.clone();
        let instance_events =
            reflector::reflector(writer, watcher(Api::<Instance>::all(client.clone()), watcher::Config::default()))
                .default_backoff()
                .for_each(move |event| {
                    match event {
                        Ok(event) => index.write().unwrap_or_else(PoisonError::into_inner).fold(&event),
                        Err(error) => tracing::warn!(%error, kind = "Instance", "watching"),
                    }
                    std::future::ready(())
                });
        let tasks: Vec<futures::future::BoxFuture<'static, ()>> = vec![
            Box::pin(organization_events),
            Box::pin(project_events),
            Box::pin(offering_events),
            Box::pin(wallet_events),
            Box::pin(instance_events),
        ];
        (Self { organizations, projects, offerings, instances, wallets, keys }, tasks)
    }

    /// Caches holding exactly these objects, with no watch behind them: for
    /// in-process tests of the admission steps.
    pub fn filled(organizations: Vec<Organization>, offerings: Vec<Offering>, instances: Vec<Instance>) -> Self {
        fn store_of<K>(objects: Vec<K>) -> Store<K>
        where
            K: kube::Resource<DynamicType = ()> + Clone + 'static,
        {
            let (store, mut writer) = reflector::store();
            writer.apply_watcher_event(&watcher::Event::Init);
            for object in objects {
                writer.apply_watcher_event(&watcher::Event::InitApply(object));
            }
            writer.apply_watcher_event(&watcher::Event::InitDone);
            store
        }
        let mut keys = KeyIndex::default();
        for instance in &instances {
            keys.fold(&watcher::Event::Apply(instance.clone()));
        }
        Self {
            organizations: store_of(organizations),
            projects: store_of(Vec::<Project>::new()),
            offerings: store_of(offerings),
            instances: store_of(instances),
            wallets: store_of(Vec::<Wallet>::new()),
            keys: Arc::new(RwLock::new(keys)),
        }
    }

    /// Completes once every cache has listed its kind. Call it from one task
    /// only: kube's `Store::wait_until_ready` wakes a single waiter.
    pub async fn synced(&self) -> bool {
        self.organizations.wait_until_ready().await.is_ok()
            && self.projects.wait_until_ready().await.is_ok()
            && self.offerings.wait_until_ready().await.is_ok()
            && self.instances.wait_until_ready().await.is_ok()
            && self.wallets.wait_until_ready().await.is_ok()
    }

    /// The Instance that issued the key with `public_id`, from the cache.
    pub fn instance_of_key(&self, public_id: &str) -> Option<Arc<Instance>> {
        let reference = self.keys.read().unwrap_or_else(PoisonError::into_inner).lookup(public_id).cloned()?;
        self.instances.get(&reference)
    }

    /// The hash of a key that left its Instance (see [`KeyIndex::retired`]).
    pub fn retired_key_hash(&self, public_id: &str) -> Option<String> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner).retired(public_id).map(String::from)
    }

    /// An Organization by name.
    pub fn organization(&self, name: &str) -> Option<Arc<Organization>> {
        self.organizations.get(&ObjectRef::new(name))
    }

    /// The Organizations that list `caller` (or one of its groups) as an owner or a member, by name.
    pub fn organizations_of(&self, caller: &crate::oidc::Caller) -> Vec<Arc<Organization>> {
        let mut theirs: Vec<Arc<Organization>> =
            self.organizations.state().into_iter().filter(|o| caller.belongs_to(o)).collect();
        theirs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        theirs
    }

    /// A Project by namespace and name.
    pub fn project(&self, namespace: &str, name: &str) -> Option<Arc<Project>> {
        self.projects.get(&ObjectRef::new(name).within(namespace))
    }

    /// An Offering by name.
    pub fn offering(&self, name: &str) -> Option<Arc<Offering>> {
        self.offerings.get(&ObjectRef::new(name))
    }

    /// A Wallet by namespace and name.
    pub fn wallet(&self, namespace: &str, name: &str) -> Option<Arc<Wallet>> {
        self.wallets.get(&ObjectRef::new(name).within(namespace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn instance(name: &str, ids: &[&str]) -> Instance {
        let keys: Vec<_> = ids
            .iter()
            .map(|id| {
                json!({"name": id, "publicId": id, "hash": "sha256:0", "createdAt": "2026-01-01T00:00:00Z",
                             "secret": {"store": "Secret", "name": "s", "key": "k"}})
            })
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
            "metadata": {"name": name, "namespace": "cmp-acme"},
            "spec": {"project": "p", "offering": "o", "version": "1", "plan": "free"},
            "status": {"apiKeys": keys}
        }))
        .expect("a valid Instance")
    }

    fn found(index: &KeyIndex, id: &str) -> Option<String> {
        index.lookup(id).map(|r| r.name.clone())
    }

    #[test]
    fn keys_follow_their_instance_through_changes_and_deletion() {
        let mut index = KeyIndex::default();
        index.fold(&watcher::Event::Apply(instance("bot", &["k1", "k2"])));
        assert_eq!(found(&index, "k1").as_deref(), Some("bot"));
        index.fold(&watcher::Event::Apply(instance("bot", &["k2", "k3"])));
        assert_eq!((found(&index, "k1"), found(&index, "k3").as_deref()), (None, Some("bot")), "a dropped key is gone");
        index.fold(&watcher::Event::Delete(instance("bot", &["k2", "k3"])));
        assert_eq!(found(&index, "k2"), None);
        assert_eq!(
            (index.retired("k1"), index.retired("k2")),
            (Some("sha256:0"), Some("sha256:0")),
            "remembered as retired"
        );
        assert_eq!(index.retired("never"), None);
    }

    #[test]
    fn a_relist_drops_instances_deleted_while_the_watch_was_down() {
        let mut index = KeyIndex::default();
        index.fold(&watcher::Event::Apply(instance("kept", &["a"])));
        index.fold(&watcher::Event::Apply(instance("deleted", &["b"])));
        index.fold(&watcher::Event::Init);
        index.fold(&watcher::Event::InitApply(instance("kept", &["a"])));
        index.fold(&watcher::Event::InitDone);
        assert_eq!((found(&index, "a").as_deref(), found(&index, "b")), (Some("kept"), None));
    }
}
