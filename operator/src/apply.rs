//! The thin layer that writes desired state: server-side apply under the
//! field manager `cmp-operator`, skipped when the live object already holds
//! every desired field, so a converged cluster sees no writes at all.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// What an ensure call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The live object already matched.
    Unchanged,
    /// The object was created or updated.
    Applied,
    /// The object is being deleted; nothing was written.
    Terminating,
}

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

/// Writes objects for the operator.
#[derive(Clone)]
pub struct Applier {
    client: kube::Client,
    metrics: Arc<Metrics>,
    manager: String,
}

impl Applier {
    /// An applier writing as `manager`.
    pub fn new(client: kube::Client, metrics: Arc<Metrics>, manager: impl Into<String>) -> Self {
        Self { client, metrics, manager: manager.into() }
    }

    /// The client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Ensures a namespaced object holds the desired fields.
    pub async fn ensure<K>(&self, desired: &K) -> Result<Outcome>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
    {
        let api = Api::<K>::namespaced(self.client.clone(), &desired.namespace().unwrap_or_default());
        self.ensure_in(&api, &desired.name_any(), &encode(desired)?, &self.manager).await
    }

    /// Ensures a cluster-scoped object holds the desired fields.
    pub async fn ensure_cluster<K>(&self, desired: &K) -> Result<Outcome>
    where
        K: Resource<Scope = ClusterResourceScope, DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
    {
        let api = Api::<K>::all(self.client.clone());
        self.ensure_in(&api, &desired.name_any(), &encode(desired)?, &self.manager).await
    }

    /// Ensures the object `name` of `api` holds the fields of `desired`, applied as `manager`.
    pub async fn ensure_in<K>(&self, api: &Api<K>, name: &str, desired: &Value, manager: &str) -> Result<Outcome>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
    {
        let kind = K::kind(&());
        let live = api.get_opt(name).await.map_err(Error::kube(format!("reading {kind} {name}")))?;
        if let Some(live) = live {
            if live.meta().deletion_timestamp.is_some() {
                return Ok(Outcome::Terminating);
            }
            if is_subset(desired, &encode(&live)?) {
                return Ok(Outcome::Unchanged);
            }
        }
        self.metrics.write(&kind, "apply");
        api.patch(name, &PatchParams::apply(manager).force(), &Patch::Apply(desired))
            .await
            .map_err(Error::kube(format!("applying {kind} {name}")))?;
        tracing::debug!(%kind, name, manager, "applied");
        Ok(Outcome::Applied)
    }

    /// Applies `status` to the object's status subresource as the operator,
    /// unless it equals `current`.
    pub async fn apply_status<K, S>(&self, api: &Api<K>, name: &str, current: Option<&S>, status: &S) -> Result<Outcome>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
        S: Serialize + PartialEq,
    {
        if current == Some(status) {
            return Ok(Outcome::Unchanged);
        }
        let kind = K::kind(&());
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": kind,
            "status": encode(status)?,
        });
        self.metrics.write(&kind, "apply_status");
        api.patch_status(name, &PatchParams::apply(&self.manager).force(), &Patch::Apply(&patch))
            .await
            .map_err(Error::kube(format!("writing the status of {kind} {name}")))?;
        Ok(Outcome::Applied)
    }

    /// Deletes a cluster-scoped object; one that is already gone is fine.
    /// Returns true while it still exists (being finalized).
    pub async fn delete_cluster<K>(&self, name: &str) -> Result<bool>
    where
        K: Resource<Scope = ClusterResourceScope, DynamicType = ()> + DeserializeOwned + Clone + Debug,
    {
        let api = Api::<K>::all(self.client.clone());
        let kind = K::kind(&());
        match api.get_opt(name).await.map_err(Error::kube(format!("reading {kind} {name}")))? {
            None => Ok(false),
            Some(live) if live.meta().deletion_timestamp.is_some() => Ok(true),
            Some(_) => {
                self.metrics.write(&kind, "delete");
                match api.delete(name, &DeleteParams::background()).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
                    Err(e) => Err(Error::kube(format!("deleting {kind} {name}"))(e)),
                }
            }
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(|source| Error::Encode { what: std::any::type_name::<T>().to_string(), source })
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
