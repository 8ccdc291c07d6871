//! Helpers every reconciler uses to build its status.

use std::collections::BTreeMap;

use cmp_crds::conditions::{FALSE, NewCondition, TRUE, set_condition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::labels::{PAUSED_ANNOTATION, RECONCILE_REQUESTED_ANNOTATION, annotation, flag};

/// Condition types.
pub mod types {
    /// Everything is in place.
    pub const READY: &str = "Ready";
    /// Reconciling is paused by the `cmp.gsv.dev/paused` annotation.
    pub const PAUSED: &str = "Paused";
    /// The organization (or the object itself) is suspended: the gateway refuses runs.
    pub const SUSPENDED: &str = "Suspended";
}

/// The current time as a `metav1.Time`.
pub fn now() -> Time {
    Time(Timestamp::now())
}

/// A condition that is True when `ok`.
pub fn condition<'a>(type_: &'a str, ok: bool, reason: &'a str, message: impl Into<String>) -> NewCondition<'a> {
    NewCondition { type_, status: if ok { TRUE } else { FALSE }, reason, message: message.into() }
}

/// What the annotations ask of a reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requests {
    /// `cmp.gsv.dev/paused: "true"`.
    pub paused: bool,
    /// The value of `cmp.gsv.dev/reconcile-requested-at`.
    pub reconcile_requested_at: Option<String>,
}

/// Reads the annotations that steer reconciling.
pub fn requests(annotations: Option<&BTreeMap<String, String>>) -> Requests {
    Requests {
        paused: flag(annotations, PAUSED_ANNOTATION),
        reconcile_requested_at: annotation(annotations, RECONCILE_REQUESTED_ANNOTATION).map(str::to_string),
    }
}

/// Sets the `Paused` condition from the annotation.
pub fn set_paused(conditions: &mut Vec<Condition>, paused: bool, generation: Option<i64>) {
    let c = if paused {
        condition(
            types::PAUSED,
            true,
            "PausedByAnnotation",
            format!("reconciling is paused; remove the annotation {PAUSED_ANNOTATION} to resume"),
        )
    } else {
        condition(types::PAUSED, false, "Reconciling", "reconciling normally")
    };
    set_condition(conditions, c, generation, now());
}

/// The status and reason of a condition, to detect transitions.
pub fn state(conditions: &[Condition], type_: &str) -> Option<(String, String)> {
    cmp_crds::conditions::find(conditions, type_).map(|c| (c.status.clone(), c.reason.clone()))
}
