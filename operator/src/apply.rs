//! The thin layer that writes desired state: server-side apply under the
//! field manager `cmp-operator`, skipped when the cached object already
//! holds every desired field, so a converged cluster sees no writes and no
//! reads at all.
//!
//! After a write it waits (briefly) until the cache holds what it wrote, so
//! the next reconcile compares against its own write instead of writing
//! again.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use cmp_crds::{Instance, Offering, Organization, Project, Wallet};
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cache::{CachedChild, Caches, Guarded, Watched, valid};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// How long a write waits for the cache to hold it, at most. The watch
/// usually delivers in milliseconds; past this the reconcile goes on (at
/// worst the next one writes the same fields again, which changes nothing).
const CACHE_CATCH_UP: Duration = Duration::from_secs(3);

/// True when every field of `desired` is present in `live` with the same
/// value. Objects may hold extra keys (defaults, other managers' fields);
/// lists must have the same length, compared item by item.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, v)| l.get(k).is_some_and(|lv| is_subset(v, lv))),
        (Value::Array(d), Value::Array(l)) => d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_subset(dv, lv)),
        (d, l) => d == l,
    }
}

/// Encodes a value for comparison or for a patch.
pub fn encode<T: Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(|source| Error::Encode { what: std::any::type_name::<T>().to_string(), source })
}

/// Waits until `store` holds `key` at `resource_version` (or a later one), or [`CACHE_CATCH_UP`] passes.
pub async fn await_cached<K>(store: &Store<K>, key: &ObjectRef<K>, resource_version: Option<String>)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let Some(written) = resource_version else { return };
    let written_number = written.parse::<u64>().ok();
    let caught_up = |cached: Option<Arc<K>>| {
        cached.and_then(|c| c.resource_version()).is_some_and(|rv| {
            rv == written
                || rv.parse::<u64>().ok().zip(written_number).is_some_and(|(cached, written)| cached > written)
        })
    };
    let deadline = tokio::time::Instant::now() + CACHE_CATCH_UP;
    while !caught_up(store.get(key)) {
        if tokio::time::Instant::now() >= deadline {
            tracing::debug!(object = %key, "the cache did not catch up with a write in time; going on");
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A kind whose API the operator builds for an object: namespaced or cluster-scoped.
pub trait Scoped: Resource<DynamicType = ()> + Sized {
    /// The API of this kind in `namespace` (ignored for cluster-scoped kinds).
    fn api(client: kube::Client, namespace: Option<&str>) -> Api<Self>;
}

macro_rules! scoped {
    (namespaced: $($namespaced:ty),*; cluster: $($cluster:ty),*) => {
        $(impl Scoped for $namespaced {
            fn api(client: kube::Client, namespace: Option<&str>) -> Api<Self> {
                Api::namespaced(client, namespace.unwrap_or_default())
            }
        })*
        $(impl Scoped for $cluster {
            fn api(client: kube::Client, _namespace: Option<&str>) -> Api<Self> {
                Api::all(client)
            }
        })*
    };
}

scoped! {
    namespaced: Project, Instance, Wallet, ResourceQuota, LimitRange, NetworkPolicy, ServiceAccount, Role, RoleBinding;
    cluster: Organization, Offering, Namespace
}

/// Writes objects for the operator.
#[derive(Clone)]
pub struct Applier {
    client: kube::Client,
    caches: Arc<Caches>,
    metrics: Arc<Metrics>,
    manager: String,
}

impl Applier {
    /// An applier writing as `manager`, comparing against `caches`.
    pub fn new(client: kube::Client, caches: Arc<Caches>, metrics: Arc<Metrics>, manager: impl Into<String>) -> Self {
        Self { client, caches, metrics, manager: manager.into() }
    }

    /// The client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The API of `K` where `object` lives.
    pub fn api_for<K: Scoped>(&self, object: &impl Resource) -> Api<K> {
        K::api(self.client.clone(), object.meta().namespace.as_deref())
    }

    /// Ensures a child object holds the desired fields, comparing with its cache.
    pub async fn ensure<K>(&self, desired: &K) -> Result<()>
    where
        K: CachedChild + Scoped + Serialize + DeserializeOwned,
    {
        let watched = K::watched(&self.caches);
        let key = ObjectRef::from_obj(desired);
        let live = watched.store().get(&key).map(|l| encode(&*l)).transpose()?;
        let api = self.api_for::<K>(desired);
        let (name, desired) = (desired.name_any(), encode(desired)?);
        if let Some(version) = self.apply_if_changed(&api, &name, &desired, live.as_ref(), &self.manager).await? {
            await_cached(&watched.store(), &key, version).await;
        }
        Ok(())
    }

    /// Ensures each of `desired`, all at once (they must not depend on each other).
    pub async fn ensure_all<K>(&self, desired: &[K]) -> Result<()>
    where
        K: CachedChild + Scoped + Serialize + DeserializeOwned,
    {
        futures::future::try_join_all(desired.iter().map(|object| self.ensure(object))).await.map(|_| ())
    }

    /// Ensures the CMP object `name` (cached behind a guard) holds the fields of `desired`, applied as `manager`.
    pub async fn ensure_object<K>(
        &self,
        watched: &Watched<Guarded<K>>,
        namespace: Option<&str>,
        name: &str,
        desired: &Value,
        manager: &str,
    ) -> Result<()>
    where
        K: Scoped + Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static,
    {
        let live = watched.get(name, namespace).as_deref().and_then(valid).map(encode).transpose()?;
        let api = K::api(self.client.clone(), namespace);
        if let Some(version) = self.apply_if_changed(&api, name, desired, live.as_ref(), manager).await? {
            let mut key = ObjectRef::<Guarded<K>>::new(name);
            if let Some(ns) = namespace {
                key = key.within(ns);
            }
            await_cached(&watched.store(), &key, version).await;
        }
        Ok(())
    }

    /// Ensures the object `name` of `api` holds the fields of `desired`,
    /// applied as `manager`, given the `live` object (from a cache). Returns
    /// the written resourceVersion, or None when nothing was written.
    pub async fn apply_if_changed<K>(
        &self,
        api: &Api<K>,
        name: &str,
        desired: &Value,
        live: Option<&Value>,
        manager: &str,
    ) -> Result<Option<Option<String>>>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
    {
        if live.is_some_and(|live| is_subset(desired, live)) {
            return Ok(None);
        }
        let kind = K::kind(&());
        self.metrics.write(&kind, "apply");
        let written = api
            .patch(name, &PatchParams::apply(manager).force(), &Patch::Apply(desired))
            .await
            .map_err(Error::kube(format!("applying {kind} {name}")))?;
        tracing::debug!(%kind, name, manager, "applied");
        Ok(Some(written.resource_version()))
    }

    /// Ensures an object that is not cached (read first): for what the operator writes once at start.
    pub async fn ensure_uncached<K>(&self, api: &Api<K>, name: &str, desired: &Value) -> Result<()>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
    {
        let kind = K::kind(&());
        let live = api.get_opt(name).await.map_err(Error::kube(format!("reading {kind} {name}")))?;
        let live = live.map(|l| encode(&l)).transpose()?;
        self.apply_if_changed(api, name, desired, live.as_ref(), &self.manager).await.map(|_| ())
    }

    /// Applies `status` to the status subresource of `object` as the
    /// operator. Returns the written resourceVersion.
    pub async fn apply_status<K, S>(&self, object: &K, status: &S) -> Result<Option<String>>
    where
        K: Scoped + DeserializeOwned + Clone + Debug,
        S: Serialize,
    {
        let kind = K::kind(&());
        let name = object.name_any();
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": kind,
            "status": encode(status)?,
        });
        self.metrics.write(&kind, "apply_status");
        let api = self.api_for::<K>(object);
        let written = api
            .patch_status(&name, &PatchParams::apply(&self.manager).force(), &Patch::Apply(&patch))
            .await
            .map_err(Error::kube(format!("writing the status of {kind} {name}")))?;
        Ok(written.resource_version())
    }

    /// Deletes a cluster-scoped child that the cache holds and that is not
    /// already being deleted; one that is gone meanwhile is fine.
    pub async fn delete<K>(&self, name: &str) -> Result<()>
    where
        K: CachedChild + Scoped + DeserializeOwned,
    {
        let Some(cached) = K::watched(&self.caches).get(name, None) else { return Ok(()) };
        if cached.meta().deletion_timestamp.is_some() {
            return Ok(());
        }
        let kind = K::kind(&());
        self.metrics.write(&kind, "delete");
        match Api::<K>::all(self.client.clone()).delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(Error::kube(format!("deleting {kind} {name}"))(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extra_live_fields_do_not_matter() {
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"hard": {"pods": "20"}}});
        let live = json!({"metadata": {"name": "a", "uid": "u", "labels": {"x": "1", "y": "2"}}, "spec": {"hard": {"pods": "20"}, "scopes": []}, "status": {}});
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn a_changed_or_missing_value_is_drift() {
        let desired = json!({"spec": {"hard": {"pods": "20"}}});
        assert!(!is_subset(&desired, &json!({"spec": {"hard": {"pods": "50"}}})));
        assert!(!is_subset(&desired, &json!({"spec": {}})));
    }

    #[test]
    fn lists_must_match_in_length_and_order() {
        let desired = json!({"rules": [{"cidr": "a"}, {"cidr": "b"}]});
        assert!(is_subset(&desired, &json!({"rules": [{"cidr": "a", "x": 1}, {"cidr": "b"}]})));
        assert!(!is_subset(&desired, &json!({"rules": [{"cidr": "a"}]})), "a removed entry is drift");
        assert!(
            !is_subset(&desired, &json!({"rules": [{"cidr": "a"}, {"cidr": "b"}, {"cidr": "c"}]})),
            "an extra entry is drift"
        );
    }
}
