//! Adding and removing the finalizer `cmp.gsv.dev/cleanup`, with JSON
//! patches guarded by the object's resourceVersion (a concurrent change
//! makes them fail and retry, instead of losing that change). Failures are
//! ordinary errors: they reach the object's `Ready` condition.

use cmp_crds::names::FINALIZER;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::Reconcile;
use crate::apply::await_cached;
use crate::context::Context;
use crate::error::{Error, Result};

/// Sends the patch and returns the object as the API server wrote it.
async fn patch<K: Reconcile>(object: &K, ops: serde_json::Value, action: String, ctx: &Context) -> Result<K> {
    let patch: json_patch::Patch =
        serde_json::from_value(ops).map_err(|source| Error::Encode { what: "a finalizer patch".into(), source })?;
    let api: Api<K> = ctx.applier.api_for(object);
    ctx.metrics.write(&K::kind(&()), "patch");
    api.patch(&object.name_any(), &PatchParams::default(), &Patch::<()>::Json(patch)).await.map_err(Error::kube(action))
}

fn guard<K: Resource>(object: &K) -> serde_json::Value {
    json!({"op": "test", "path": "/metadata/resourceVersion", "value": object.meta().resource_version})
}

/// Adds the finalizer, waits until the cache holds the object with it (so
/// that a reconcile the next moment does not try again on the old version,
/// fail its guard and write that error), and returns the object as written.
pub async fn add<K: Reconcile>(object: &K, ctx: &Context) -> Result<K> {
    let add = if object.meta().finalizers.is_none() {
        json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]})
    } else {
        json!({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER})
    };
    let action = format!("adding the finalizer {FINALIZER} to {}", super::key(object));
    let written = patch(object, json!([guard(object), add]), action, ctx).await?;
    ctx.own_writes.record(object, written.resource_version());
    let mut key = ObjectRef::new(&written.name_any());
    if let Some(ns) = written.namespace() {
        key = key.within(&ns);
    }
    await_cached(&K::watched(&ctx.caches).store(), &key, written.resource_version()).await;
    Ok(written)
}

/// Removes the finalizer, once cleanup is done.
pub async fn remove<K: Reconcile>(object: &K, ctx: &Context) -> Result<()> {
    let Some(index) = object.finalizers().iter().position(|f| f == FINALIZER) else { return Ok(()) };
    let path = format!("/metadata/finalizers/{index}");
    let ops = json!([guard(object), {"op": "test", "path": path, "value": FINALIZER}, {"op": "remove", "path": path}]);
    let action = format!("removing the finalizer {FINALIZER} from {}", super::key(object));
    patch(object, ops, action, ctx).await.map(drop)
}
