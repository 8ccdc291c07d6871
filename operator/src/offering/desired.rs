//! An Offering's status: pure functions of the Offering, the Instances that
//! use it, what its artifacts were found to be, and `now`. The only work it
//! asks for is checking the artifacts that are not verified yet.

use std::collections::BTreeMap;
use std::time::Duration;

use cmp_crds::conditions::{ARTIFACTS_VERIFIED, NewCondition, READY, reasons, set_condition};
use cmp_crds::offering::{ArtifactState, PlanStatus, VersionStatus};
use cmp_crds::{Offering, OfferingStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;

use crate::artifact::Checked;
use crate::shell::{self, Desired, elapsed};

/// How soon an unreachable artifact is fetched again.
pub const UNREACHABLE_RETRY: Duration = Duration::from_secs(30);
/// How soon a mismatching artifact is fetched again (the file may be fixed in place).
pub const MISMATCH_RETRY: Duration = Duration::from_secs(300);

/// What the Offering pipeline reads: the Instances using it, and the artifact checks of this process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// `(version, plan)` of every Instance of the Offering.
    pub instances: Vec<(String, String)>,
    /// What this process found for each version's artifact (by version name), for the spec's URL and sha256.
    pub checked: BTreeMap<String, Checked>,
}

/// An artifact to check: a version's URL and pinned sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToCheck {
    /// The version.
    pub version: String,
    /// Its artifact URL.
    pub url: String,
    /// Its pinned sha256.
    pub sha256: String,
    /// What the version's inputs name, to check the flow against.
    pub inputs: Vec<cmp_crds::offering::CallerInput>,
}

fn retry_after(state: ArtifactState) -> Option<Duration> {
    match state {
        ArtifactState::Unreachable => Some(UNREACHABLE_RETRY),
        ArtifactState::Mismatch => Some(MISMATCH_RETRY),
        // The flow and its declarations change only with the Offering's spec.
        ArtifactState::Pending | ArtifactState::Verified | ArtifactState::Invalid => None,
    }
}

/// The Offering's status, and the artifacts to check.
pub fn desired(offering: &Offering, observed: &Observed, now: Timestamp) -> Desired<Vec<ToCheck>, OfferingStatus> {
    let time = Time(now);
    let generation = offering.meta().generation;
    let mut status = offering.status.clone().unwrap_or_default();
    if shell::steer(offering, &mut status.conditions, &time).paused {
        return Desired::paused(status);
    }
    let count = |f: &dyn Fn(&(String, String)) -> bool| observed.instances.iter().filter(|i| f(i)).count() as i64;
    let mut to_check = Vec::new();
    let mut requeue: Option<Duration> = None;
    status.versions = offering
        .spec
        .versions
        .iter()
        .map(|v| {
            let (url, sha256) = (&v.artifact.url, &v.artifact.sha256);
            let known = offering.artifact_state(&v.name);
            let (state, message, due) = match observed.checked.get(&v.name) {
                Some(c) => {
                    let retry = retry_after(c.state);
                    if let Some(after) = retry {
                        let left = after.saturating_sub(elapsed(c.at, now));
                        requeue = Some(requeue.map_or(left, |r| r.min(left)));
                    }
                    let due = retry.is_some_and(|after| elapsed(c.at, now) >= after);
                    (c.state, c.message.clone(), due)
                }
                // Verified before (by this process or another replica): not fetched again, unless the version
                // declares inputs, which this process has not checked the flow against yet.
                None if known == ArtifactState::Verified && v.inputs.is_empty() => (known, String::new(), false),
                None => (ArtifactState::Pending, String::new(), true),
            };
            if due {
                let inputs = v.inputs.clone();
                to_check.push(ToCheck { version: v.name.clone(), url: url.clone(), sha256: sha256.clone(), inputs });
            }
            VersionStatus {
                name: v.name.clone(),
                artifact: state,
                url: url.clone(),
                sha256: sha256.clone(),
                message,
                deprecated: v.deprecated,
                instances: count(&|(version, _)| version == &v.name),
            }
        })
        .collect();
    status.plans = offering
        .spec
        .plans
        .iter()
        .map(|p| PlanStatus { id: p.id.clone(), instances: count(&|(_, plan)| plan == &p.id) })
        .collect();
    status.instance_count = observed.instances.len() as i64;
    status.latest_version = offering.latest_version().map(|v| v.name.clone());
    status.observed_generation = generation;
    set_condition(&mut status.conditions, artifacts_verified(&status.versions), generation, time.clone());
    let ready = ready(&status);
    set_condition(&mut status.conditions, ready, generation, time);
    Desired { children: Some(to_check), status, requeue }
}

/// `ArtifactsVerified`: the first problem, worst first.
fn artifacts_verified(versions: &[VersionStatus]) -> NewCondition<'static> {
    let first = |state| versions.iter().find(|v| v.artifact == state);
    if let Some(v) = first(ArtifactState::Mismatch) {
        let message = format!("version {}: {}", v.name, v.message);
        return NewCondition::new(ARTIFACTS_VERIFIED, false, reasons::ARTIFACT_MISMATCH, message);
    }
    if let Some(v) = first(ArtifactState::Invalid) {
        let message = format!("version {}: {}", v.name, v.message);
        return NewCondition::new(ARTIFACTS_VERIFIED, false, reasons::FLOW_INPUTS_INVALID, message);
    }
    if let Some(v) = first(ArtifactState::Unreachable) {
        let message =
            format!("version {}: {} (fetched again every {}s)", v.name, v.message, UNREACHABLE_RETRY.as_secs());
        return NewCondition::new(ARTIFACTS_VERIFIED, false, reasons::ARTIFACT_UNREACHABLE, message);
    }
    if let Some(v) = first(ArtifactState::Pending) {
        let message = format!("the artifact of version {} is not checked yet", v.name);
        return NewCondition::new(ARTIFACTS_VERIFIED, false, reasons::ARTIFACT_PENDING, message);
    }
    NewCondition::new(
        ARTIFACTS_VERIFIED,
        true,
        reasons::ARTIFACTS_VERIFIED,
        "every version's artifact matches its sha256",
    )
}

/// `Ready`: the latest version that is not deprecated can be subscribed to.
fn ready(status: &OfferingStatus) -> NewCondition<'static> {
    let Some(latest) = status.latest_version.as_ref().and_then(|l| status.versions.iter().find(|v| &v.name == l))
    else {
        let message = "every version is deprecated: add a version, or un-deprecate one, for new Instances";
        return NewCondition::new(READY, false, reasons::NO_USABLE_VERSION, message);
    };
    let name = &latest.name;
    match latest.artifact {
        ArtifactState::Verified => NewCondition::new(
            READY,
            true,
            reasons::RECONCILED,
            format!("version {name} is verified and open to new Instances"),
        ),
        ArtifactState::Mismatch => NewCondition::new(
            READY,
            false,
            reasons::ARTIFACT_MISMATCH,
            format!("latest version {name}: {}", latest.message),
        ),
        ArtifactState::Unreachable => NewCondition::new(
            READY,
            false,
            reasons::ARTIFACT_UNREACHABLE,
            format!("latest version {name}: {}", latest.message),
        ),
        ArtifactState::Invalid => NewCondition::new(
            READY,
            false,
            reasons::FLOW_INPUTS_INVALID,
            format!("latest version {name}: {}", latest.message),
        ),
        ArtifactState::Pending => NewCondition::new(
            READY,
            false,
            reasons::ARTIFACT_PENDING,
            format!("the artifact of latest version {name} is not checked yet"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::version;
    use cmp_crds::conditions::{self, FALSE, TRUE};
    use cmp_crds::offering::RuntimeMode;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    fn offering(versions: Vec<cmp_crds::offering::OfferingVersion>) -> Offering {
        crate::fixtures::offering(RuntimeMode::Dedicated, versions)
    }

    fn checked(state: ArtifactState, at_secs: i64) -> Checked {
        let message = if state == ArtifactState::Verified { String::new() } else { "it went wrong".into() };
        Checked { state, message, at: at(at_secs) }
    }

    fn condition(status: &OfferingStatus, type_: &str) -> (String, String) {
        conditions::state(&status.conditions, type_).unwrap_or_else(|| panic!("{type_} is set"))
    }

    #[test]
    fn unchecked_artifacts_are_checked_and_the_offering_waits_for_them() {
        let d = desired(&offering(vec![version("1", false), version("2", false)]), &Observed::default(), at(10));
        let checks: Vec<_> = d.children.expect("checks").into_iter().map(|c| c.version).collect();
        assert_eq!(checks, ["1", "2"]);
        assert_eq!(condition(&d.status, "Ready"), (FALSE.into(), "ArtifactPending".into()));
        assert_eq!(d.status.latest_version.as_deref(), Some("2"));
    }

    #[test]
    fn verified_latest_version_makes_it_ready_with_counts_per_version_and_plan() {
        let observed = Observed {
            instances: vec![("1".into(), "basic".into()), ("2".into(), "pro".into()), ("2".into(), "basic".into())],
            checked: [
                ("1".into(), checked(ArtifactState::Verified, 5)),
                ("2".into(), checked(ArtifactState::Verified, 5)),
            ]
            .into(),
        };
        let d = desired(&offering(vec![version("1", false), version("2", false)]), &observed, at(10));
        assert_eq!(d.children, Some(vec![]), "nothing is fetched again");
        assert_eq!(condition(&d.status, "Ready"), (TRUE.into(), "Reconciled".into()));
        assert_eq!(condition(&d.status, "ArtifactsVerified"), (TRUE.into(), "ArtifactsVerified".into()));
        assert_eq!(d.status.instance_count, 3);
        let per_version: Vec<_> = d.status.versions.iter().map(|v| (v.name.as_str(), v.instances)).collect();
        assert_eq!(per_version, [("1", 1), ("2", 2)]);
        let per_plan: Vec<_> = d.status.plans.iter().map(|p| (p.id.as_str(), p.instances)).collect();
        assert_eq!(per_plan, [("basic", 2), ("pro", 1)]);
        assert_eq!(d.requeue, None);
    }

    #[test]
    fn a_version_verified_in_status_is_not_fetched_again_after_a_restart() {
        let observed =
            Observed { checked: [("1".into(), checked(ArtifactState::Verified, 5))].into(), ..Default::default() };
        let mut o = offering(vec![version("1", false)]);
        o.status = Some(desired(&o, &observed, at(10)).status);
        let after_restart = desired(&o, &Observed::default(), at(20));
        assert_eq!(after_restart.children, Some(vec![]));
        assert_eq!(condition(&after_restart.status, "Ready").0, TRUE);
        o.spec.versions[0].artifact.sha256 = "b".repeat(64);
        let changed = desired(&o, &Observed::default(), at(30));
        assert_eq!(changed.children.expect("checks").len(), 1, "a changed sha256 is checked again");
    }

    #[test]
    fn a_mismatch_names_the_version_and_is_retried_later() {
        let observed = Observed {
            checked: [
                ("1".into(), checked(ArtifactState::Mismatch, 100)),
                ("2".into(), checked(ArtifactState::Verified, 100)),
            ]
            .into(),
            ..Default::default()
        };
        let d = desired(&offering(vec![version("1", false), version("2", false)]), &observed, at(110));
        let verified = conditions::find(&d.status.conditions, "ArtifactsVerified").expect("set");
        assert_eq!((verified.status.as_str(), verified.reason.as_str()), (FALSE, "ArtifactMismatch"));
        assert!(verified.message.starts_with("version 1:"), "{}", verified.message);
        assert_eq!(condition(&d.status, "Ready").0, TRUE, "the latest version is fine");
        assert_eq!(d.children, Some(vec![]));
        assert_eq!(d.requeue, Some(MISMATCH_RETRY - Duration::from_secs(10)));
        let later = desired(&offering(vec![version("1", false), version("2", false)]), &observed, at(100 + 300));
        assert_eq!(later.children.expect("checks").len(), 1);
    }

    #[test]
    fn a_flow_lacking_its_declared_inputs_is_not_ready_and_not_retried_until_the_spec_changes() {
        let observed =
            Observed { checked: [("1".into(), checked(ArtifactState::Invalid, 5))].into(), ..Default::default() };
        let d = desired(&offering(vec![version("1", false)]), &observed, at(1000));
        assert_eq!(condition(&d.status, "Ready"), (FALSE.into(), "FlowInputsInvalid".into()));
        assert_eq!(condition(&d.status, "ArtifactsVerified"), (FALSE.into(), "FlowInputsInvalid".into()));
        assert_eq!((d.children, d.requeue), (Some(vec![]), None), "only a change of the Offering changes the answer");
        // A version verified in status but declaring inputs is checked by this process before it is trusted.
        let mut o = offering(vec![version("1", false)]);
        let verified =
            Observed { checked: [("1".into(), checked(ArtifactState::Verified, 5))].into(), ..Default::default() };
        o.status = Some(desired(&o, &verified, at(10)).status);
        o.spec.versions[0].inputs = serde_json::from_value(serde_json::json!(
            [{"name": "tone", "type": "string", "target": {"global": "TONE"}}]
        ))
        .expect("inputs");
        let checks = desired(&o, &Observed::default(), at(20)).children.expect("checks");
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].inputs.len(), 1, "checked against the declarations");
    }

    #[test]
    fn deprecated_versions_are_not_latest_and_all_deprecated_is_not_ready() {
        let d = desired(&offering(vec![version("1", false), version("2", true)]), &Observed::default(), at(1));
        assert_eq!(d.status.latest_version.as_deref(), Some("1"));
        let d = desired(&offering(vec![version("1", true)]), &Observed::default(), at(1));
        assert_eq!(condition(&d.status, "Ready"), (FALSE.into(), "NoUsableVersion".into()));
    }
}
