//! The reconcile shell: what every kind shares. It owns the per-object key,
//! the tracing span, timing and metrics, backoff, the finalizer dispatch,
//! the error policy and the status write; each kind supplies only its
//! pipeline ([`Reconcile`]):
//!
//! 1. **observe**: read what it needs, from the caches (synchronous: no API call can hide here);
//! 2. **desired**: a pure function of the object, what was observed and `now`: the children and the status;
//! 3. **apply**: write the children;
//! 4. the shell writes the status, when it changed, as the object's only writer.
//!
//! The watch events of what a reconcile wrote itself (its finalizer, its
//! status) wake nothing ([`own_writes`]).
//!
//! An error anywhere (finalizer included) is written to the object's `Ready`
//! condition with its reason, counted under that reason, and retried with
//! per-object exponential backoff.

mod finalizer;
pub mod own_writes;
pub mod status;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use cmp_crds::conditions::reasons;
use cmp_crds::names::{FINALIZER, Steering};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::apply::Scoped;
use crate::cache::{Caches, Guarded, Watched};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::settings::Settings;

/// What a kind's pure `desired` step decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired<C, S> {
    /// The children to apply; None when nothing is to be written (paused, waiting).
    pub children: Option<C>,
    /// The status, written by the shell when it differs from the current one.
    pub status: S,
    /// When to look again without a change; None: only on a change.
    pub requeue: Option<Duration>,
}

impl<C, S> Desired<C, S> {
    /// A paused object: its status (with `Paused=True`) and nothing else.
    pub fn paused(status: S) -> Self {
        Self { children: None, status, requeue: None }
    }
}

/// The start every kind's `desired` shares: reads the steering annotations
/// and sets the `Paused` condition from them.
pub fn steer(object: &impl Resource, conditions: &mut Vec<Condition>, now: &Time) -> Steering {
    let steering = Steering::of(object.annotations());
    let paused = cmp_crds::conditions::paused(steering.paused);
    cmp_crds::conditions::set_condition(conditions, paused, object.meta().generation, now.clone());
    steering
}

/// How long ago `since` was at `now` (zero if the clock went back).
pub fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    now.duration_since(since).try_into().unwrap_or_default()
}

/// A kind the operator reconciles: its pipeline, in steps the shell runs.
pub trait Reconcile: Scoped + Clone + Serialize + DeserializeOwned + Debug + Send + Sync + 'static {
    /// What `observe` reads from the caches.
    type Observed: Send + Sync;
    /// What `apply` writes.
    type Children: Send + Sync;
    /// The part of the status the operator writes (for most kinds, all of it).
    type Status: Clone + Default + Serialize + PartialEq + Debug + Send + Sync;

    /// Whether deletion waits for [`Reconcile::cleanup`], behind the finalizer `cmp.gsv.dev/cleanup`.
    const FINALIZER: bool;
    /// The conditions whose transitions are published as Events.
    const EVENT_CONDITIONS: &'static [&'static str] = &[cmp_crds::conditions::READY];
    /// Whether the operator is the only writer of the status. Only then is
    /// the watch event of its own write skipped ([`own_writes`]): another
    /// writer's change merged into that version (a relist after a watch gap
    /// shows only the last) would otherwise go unseen.
    const SOLE_STATUS_WRITER: bool = true;

    /// The cache of this kind.
    fn watched(caches: &Caches) -> &Watched<Guarded<Self>>;

    /// Whether this operator reconciles the object (`--organization-selector`), from its metadata alone.
    fn selected(meta: &ObjectMeta, caches: &Caches) -> bool {
        caches.selects_namespaced(meta)
    }

    /// Whether the status is computed from a second observation after
    /// `apply`: for kinds whose apply step finds things out (artifact
    /// checks, runtime probes, issued keys) rather than only writing.
    const OBSERVE_AFTER_APPLY: bool = false;

    /// Whether writing `status` after `apply` can wait: the apply step
    /// handed work to a task that wakes the object when it is done (or has
    /// failed), and the status would only say that the work is on its way.
    /// The next reconcile then writes once where it landed.
    fn status_can_wait(&self, _status: &Self::Status) -> bool {
        false
    }

    /// Whether a change of `condition` is worth an Event on this object
    /// (beyond the waiting reasons, which never are).
    fn announces(&self, _condition: &Condition) -> bool {
        true
    }

    /// Step 1: what the object's pipeline needs, from memory only: the
    /// caches, and what earlier apply steps of this process found out.
    fn observe(&self, ctx: &Context) -> Result<Self::Observed>;

    /// Step 2: the children and the status, a pure function.
    fn desired(
        &self,
        observed: &Self::Observed,
        settings: &Settings,
        now: Timestamp,
    ) -> Desired<Self::Children, Self::Status>;

    /// Step 3: writes the children.
    fn apply(&self, children: &Self::Children, ctx: &Context) -> impl Future<Output = Result<()>> + Send;

    /// On deletion (kinds with [`Reconcile::FINALIZER`]): honour `deletionPolicy`.
    fn cleanup(&self, _ctx: &Context) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// The status to show while the finalizer's cleanup runs (kinds with a
    /// `Terminating` phase), also the base of the status of a failed
    /// cleanup; None: the status is left as it is.
    fn terminating_status(&self, _now: Timestamp) -> Option<Self::Status> {
        None
    }

    /// The operator's part of the current status.
    fn operator_status(&self) -> Self::Status;

    /// The conditions of a status.
    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition>;
}

/// The key that names an object in logs, metrics and backoff: `Kind/namespace/name`.
pub fn key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    match object.meta().namespace.as_deref() {
        Some(ns) => format!("{}/{ns}/{}", K::kind(&()), object.name_any()),
        None => format!("{}/{}", K::kind(&()), object.name_any()),
    }
}

/// Reconciles one object of kind `K`: the function every controller runs.
pub async fn reconcile<K: Reconcile>(guard: Arc<Guarded<K>>, ctx: Arc<Context>) -> Result<Action> {
    let key = key(&*guard);
    let span = tracing::info_span!("reconcile", object = %key);
    async move {
        if !K::selected(guard.meta(), &ctx.caches) {
            tracing::debug!("not selected by this operator's --organization-selector; skipping");
            return Ok(Action::await_change());
        }
        let kind = K::kind(&());
        let _timer = ctx.metrics.reconcile(&kind);
        let object = match &guard.0 {
            Ok(object) => object,
            Err(invalid) => {
                report_invalid(&*guard, invalid, &ctx).await;
                return Ok(Action::await_change());
            }
        };
        match run(object, &ctx).await {
            Ok(action) => {
                ctx.backoff.succeeded(&key);
                Ok(action)
            }
            Err(error) => {
                let failed = status::on_error(object, &error, Timestamp::now());
                if let Err(write) = status::write(object, failed, &ctx).await {
                    tracing::warn!(error = %write, "could not write the error to the status");
                }
                Err(error)
            }
        }
    }
    .instrument(span)
    .await
}

/// Retries a failed reconcile with per-object exponential backoff, and
/// counts the error under its own reason.
pub fn error_policy<K: Reconcile>(guard: Arc<Guarded<K>>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = key(&*guard);
    ctx.metrics.error(&K::kind(&()), error.reason());
    let delay = ctx.backoff.failed(&key);
    tracing::warn!(object = %key, reason = error.reason(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Deletion and the finalizer first, then the kind's pipeline.
async fn run<K: Reconcile>(object: &K, ctx: &Context) -> Result<Action> {
    let finalized = K::FINALIZER && object.finalizers().iter().any(|f| f == FINALIZER);
    if object.meta().deletion_timestamp.is_some() {
        if finalized {
            if let Some(terminating) = object.terminating_status(Timestamp::now()) {
                status::write(object, terminating, ctx).await?;
            }
            if Steering::of(object.annotations()).abandon_cleanup {
                tracing::info!("cleanup abandoned by annotation; leaving everything in place");
            } else {
                object.cleanup(ctx).await?;
            }
            finalizer::remove(object, ctx).await?;
        }
        return Ok(Action::await_change());
    }
    let with_finalizer;
    let object = if K::FINALIZER && !finalized {
        // Go on with the object as written, rather than wait for its watch event.
        with_finalizer = finalizer::add(object, ctx).await?;
        &with_finalizer
    } else {
        object
    };
    let observed = object.observe(ctx)?;
    let mut desired = object.desired(&observed, &ctx.settings, Timestamp::now());
    if let Some(children) = &desired.children {
        object.apply(children, ctx).await?;
        if K::OBSERVE_AFTER_APPLY {
            desired = object.desired(&object.observe(ctx)?, &ctx.settings, Timestamp::now());
        }
        if object.status_can_wait(&desired.status) {
            return Ok(desired.requeue.map_or_else(Action::await_change, Action::requeue));
        }
    }
    status::write(object, desired.status, ctx).await?;
    Ok(desired.requeue.map_or_else(Action::await_change, Action::requeue))
}

/// An object the API server accepted but the operator cannot read: a
/// Warning Event on it (what `kubectl describe` shows) and the error metric.
/// It is left alone until it changes; every other object goes on.
async fn report_invalid<K: Reconcile>(guard: &Guarded<K>, invalid: &InvalidObject, ctx: &Context) {
    let kind = K::kind(&());
    ctx.metrics.error(&kind, reasons::INVALID_OBJECT);
    tracing::warn!(error = %invalid.error, "the object cannot be read; fix it (the error names the field)");
    let note = format!(
        "the operator cannot read this {kind}: {}; fix the field it names (for example a timestamp needs a time zone, such as 2030-01-01T00:00:00Z)",
        invalid.error
    );
    ctx.publish(guard, true, reasons::INVALID_OBJECT, note).await;
}
