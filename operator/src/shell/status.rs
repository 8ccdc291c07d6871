//! Writing a status, as the object's only writer: only when it changed,
//! with an Event when a watched condition transitions; and the status of a
//! failed reconcile (a pure function).

use cmp_crds::conditions::{self, NewCondition, READY, set_condition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;

use super::Reconcile;
use crate::apply::await_cached;
use crate::context::Context;
use crate::error::{Error, Result};

/// The status after `error`: the current one with `Ready=False`, the
/// error's reason, and its message (which says what to fix).
pub fn on_error<K: Reconcile>(object: &K, error: &Error, now: Timestamp) -> K::Status {
    let mut status = object.operator_status();
    let failed = NewCondition::new(READY, false, error.reason(), error.to_string());
    set_condition(K::conditions(&mut status), failed, object.meta().generation, Time(now));
    status
}

/// Writes `next` when it differs from the object's status, waits until the
/// cache holds it, and publishes an Event for each watched condition whose
/// status or reason changed.
pub async fn write<K: Reconcile>(object: &K, mut next: K::Status, ctx: &Context) -> Result<()> {
    let mut current = object.operator_status();
    if current == next {
        return Ok(());
    }
    let written = ctx.applier.apply_status(object, &next).await?;
    let mut key = ObjectRef::new(&object.meta().name.clone().unwrap_or_default());
    if let Some(ns) = object.meta().namespace.as_deref() {
        key = key.within(ns);
    }
    await_cached(&K::watched(&ctx.caches).store(), &key, written).await;
    for type_ in K::EVENT_CONDITIONS {
        let before = conditions::state(K::conditions(&mut current), type_);
        if let Some(after) = conditions::find(K::conditions(&mut next), type_)
            && before != Some((after.status.clone(), after.reason.clone()))
        {
            ctx.publish(object, after.status != conditions::TRUE, &after.reason, after.message.clone()).await;
        }
    }
    Ok(())
}
