//! Watch caches: a reflector store of every object of a kind, and the task
//! that keeps it, for binaries that read through caches (the gateway, the
//! webhook). Only one task should wait on a store's readiness: kube's
//! `Store::wait_until_ready` wakes a single waiter.

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

/// A watch cache of every `K` in the cluster, and the task that feeds it (to be spawned).
pub fn cache_all<K>(client: &kube::Client) -> (Store<K>, impl Future<Output = ()> + Send + 'static)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let events = reflector::reflector(writer, watcher(Api::<K>::all(client.clone()), watcher::Config::default()))
        .default_backoff()
        .for_each(|event| async move {
            if let Err(error) = event {
                tracing::warn!(%error, kind = %K::kind(&()), "watching");
            }
        });
    (store, events)
}
