//! An Instance's references: its Organization, Project (and its
//! `maxInstances`), Offering, version, plan and the version's artifact. Each
//! one that does not resolve is a `Ready` reason naming the field and value.

use cmp_crds::conditions::{self, NewCondition, READY, reasons};
use cmp_crds::offering::ArtifactState;
use cmp_crds::references::{CatalogChoice, resolve_catalog};
use cmp_crds::{Instance, Offering};
use kube::ResourceExt;

use super::desired::Observed;

/// The references an Instance resolved.
pub struct Resolved<'a> {
    /// The Offering.
    pub offering: &'a Offering,
    /// The version.
    pub version: &'a cmp_crds::offering::OfferingVersion,
    /// The Project's runtime namespace.
    pub runtime_namespace: String,
}

/// A reference that does not resolve: the `Ready` condition, and whether only a spec change can fix it.
pub struct Unresolved {
    /// The `Ready` condition.
    pub condition: NewCondition<'static>,
    /// Only a spec change can fix it (phase `Failed`).
    pub failed: bool,
}

fn waiting(reason: &'static str, message: String) -> Unresolved {
    Unresolved { condition: NewCondition::new(READY, false, reason, message), failed: false }
}

fn failed(reason: &'static str, message: String) -> Unresolved {
    Unresolved { condition: NewCondition::new(READY, false, reason, message), failed: true }
}

/// Resolves every reference, or says which does not, naming the field and its value.
pub fn resolve<'a>(instance: &Instance, observed: &'a Observed) -> Result<Resolved<'a>, Unresolved> {
    let namespace = instance.namespace().unwrap_or_default();
    let spec = &instance.spec;
    let project = &spec.project;
    if observed.organization.is_none() {
        return Err(waiting(
            reasons::ORGANIZATION_NOT_FOUND,
            format!(
                "namespace {namespace} is not the control namespace of an existing Organization; create the Organization, or move the Instance to its namespace"
            ),
        ));
    }
    let Some(p) = &observed.project else {
        let missing = cmp_crds::references::project_not_found(spec, &namespace);
        return Err(waiting(missing.reason, missing.message));
    };
    let runtime_namespace = p.status.as_ref().and_then(|s| s.runtime_namespace.clone());
    let (true, Some(runtime_namespace)) =
        (p.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, READY)), runtime_namespace)
    else {
        return Err(waiting(
            reasons::PROJECT_NOT_READY,
            format!("spec.project is {project:?}, and Project {project} is not Ready yet; see its conditions"),
        ));
    };
    let max = p.spec.quota.max_instances;
    if observed.older_in_project >= usize::try_from(max).unwrap_or(0) {
        return Err(failed(
            reasons::QUOTA_EXCEEDED,
            format!(
                "Project {project} allows spec.maxInstances={max} Instances, and {} older ones use them; raise the Project's spec.maxInstances or delete an Instance",
                observed.older_in_project
            ),
        ));
    }
    // Only a spec change fixes a missing version or plan, or a deprecated
    // version the Instance does not run yet; the Offering may still come.
    let running = instance.status.as_ref().and_then(|s| s.version.as_deref()) == Some(spec.version.as_str());
    let CatalogChoice { offering, version, .. } =
        resolve_catalog(spec, observed.offering.as_ref(), running).map_err(|u| {
            if u.reason == reasons::OFFERING_NOT_FOUND {
                waiting(u.reason, u.message)
            } else {
                failed(u.reason, u.message)
            }
        })?;
    match offering.artifact_state(&version.name) {
        ArtifactState::Verified => Ok(Resolved { offering, version, runtime_namespace }),
        ArtifactState::Mismatch => Err(failed(
            reasons::ARTIFACT_MISMATCH,
            format!(
                "spec.version is {:?}, whose artifact does not match its sha256 (see Offering {} status.versions); the publisher must fix the Offering",
                spec.version, spec.offering
            ),
        )),
        ArtifactState::Invalid => Err(failed(
            reasons::FLOW_INPUTS_INVALID,
            format!(
                "spec.version is {:?}, whose flow lacks what its inputs name (see Offering {} status.versions); the publisher must fix the Offering",
                spec.version, spec.offering
            ),
        )),
        ArtifactState::Unreachable => Err(waiting(
            reasons::ARTIFACT_UNREACHABLE,
            format!(
                "spec.version is {:?}, whose artifact cannot be fetched yet (see Offering {} status.versions)",
                spec.version, spec.offering
            ),
        )),
        ArtifactState::Pending => Err(waiting(
            reasons::ARTIFACT_PENDING,
            format!(
                "spec.version is {:?}, whose artifact Offering {} has not verified yet",
                spec.version, spec.offering
            ),
        )),
    }
}
