//! Status conditions (the standard `metav1.Condition` shape).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition status values.
pub const TRUE: &str = "True";
/// Condition status values.
pub const FALSE: &str = "False";
/// Condition status values.
pub const UNKNOWN: &str = "Unknown";

/// A condition to set, without the bookkeeping fields that [`set_condition`] fills in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCondition<'a> {
    /// Condition type, for example `Ready`.
    pub type_: &'a str,
    /// `True`, `False` or `Unknown`.
    pub status: &'a str,
    /// A CamelCase reason a program can match on.
    pub reason: &'a str,
    /// A sentence a person can act on.
    pub message: String,
}

/// Sets (adds or replaces) the condition of `new.type_` in `conditions`.
///
/// `lastTransitionTime` is kept unless the status changed (or the condition is
/// new), in which case it becomes `now`. `observedGeneration` is always set to
/// `generation`. Returns true when anything other than the bookkeeping changed
/// (status, reason or message): a caller can publish an Event only then.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    new: NewCondition<'_>,
    generation: Option<i64>,
    now: Time,
) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            let transitioned = existing.status != new.status;
            let changed = transitioned || existing.reason != new.reason || existing.message != new.message;
            if transitioned {
                existing.last_transition_time = now;
            }
            existing.status = new.status.to_string();
            existing.reason = new.reason.to_string();
            existing.message = new.message;
            existing.observed_generation = generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: new.type_.to_string(),
                status: new.status.to_string(),
                reason: new.reason.to_string(),
                message: new.message,
                last_transition_time: now,
                observed_generation: generation,
            });
            true
        }
    }
}

/// The condition of the given type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of the given type is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == TRUE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid timestamp"))
    }

    fn ready(status: &'static str, reason: &'static str, message: &str) -> NewCondition<'static> {
        NewCondition { type_: "Ready", status, reason, message: message.to_string() }
    }

    #[test]
    fn adding_a_condition_stamps_time_and_generation() {
        let mut conditions = Vec::new();
        assert!(set_condition(&mut conditions, ready(TRUE, "Reconciled", "ok"), Some(3), at(10)));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].observed_generation, Some(3));
    }

    #[test]
    fn same_status_keeps_last_transition_time_but_updates_generation_and_message() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, ready(TRUE, "Reconciled", "ok"), Some(1), at(10));
        let changed = set_condition(&mut conditions, ready(TRUE, "Reconciled", "still ok"), Some(2), at(20));
        assert!(changed, "a new message is a change");
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].observed_generation, Some(2));
        assert_eq!(conditions[0].message, "still ok");
    }

    #[test]
    fn identical_condition_is_not_a_change() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, ready(TRUE, "Reconciled", "ok"), Some(1), at(10));
        assert!(!set_condition(&mut conditions, ready(TRUE, "Reconciled", "ok"), Some(1), at(30)));
        assert_eq!(conditions[0].last_transition_time, at(10));
    }

    #[test]
    fn status_change_moves_last_transition_time() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, ready(TRUE, "Reconciled", "ok"), Some(1), at(10));
        set_condition(&mut conditions, ready(FALSE, "NamespaceMissing", "gone"), Some(1), at(40));
        assert_eq!(conditions[0].last_transition_time, at(40));
        assert_eq!(conditions[0].status, FALSE);
        assert!(!is_true(&conditions, "Ready"));
    }

    #[test]
    fn conditions_of_other_types_are_left_alone() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, ready(TRUE, "Reconciled", "ok"), Some(1), at(10));
        let funded = NewCondition { type_: "Funded", status: FALSE, reason: "Exhausted", message: "0".into() };
        set_condition(&mut conditions, funded, Some(1), at(20));
        assert_eq!(conditions.len(), 2);
        assert!(is_true(&conditions, "Ready"));
        assert_eq!(find(&conditions, "Funded").map(|c| c.reason.as_str()), Some("Exhausted"));
    }
}
