//! An Instance's references to the catalog and to its Project, checked the
//! same way by the operator (as `Ready` reasons in status) and by the
//! admission webhook (as refusals): one set of rules, one set of messages,
//! each naming the field and its value.

use crate::conditions::reasons;
use crate::instance::InstanceSpec;
use crate::offering::{Offering, OfferingVersion, Plan};

/// A reference that does not resolve: a `Ready` reason and a message that names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// The reason (see [`crate::conditions::reasons`]).
    pub reason: &'static str,
    /// What is wrong and what to do, starting with the field.
    pub message: String,
}

/// The Offering, version and plan an Instance chose.
#[derive(Debug, Clone, Copy)]
pub struct CatalogChoice<'a> {
    /// The Offering.
    pub offering: &'a Offering,
    /// The version.
    pub version: &'a OfferingVersion,
    /// The plan.
    pub plan: &'a Plan,
}

/// The message for a Project that does not exist in the Instance's namespace.
pub fn project_not_found(spec: &InstanceSpec, namespace: &str) -> Unresolved {
    let project = &spec.project;
    Unresolved {
        reason: reasons::PROJECT_NOT_FOUND,
        message: format!(
            "spec.project is {project:?}, but no Project {project} exists in namespace {namespace}; create it or correct spec.project"
        ),
    }
}

/// Resolves `spec.offering`, `spec.version` and `spec.plan` against
/// `offering` (the Offering of that name, if it exists). A deprecated version
/// resolves only when `keeps_deprecated` (the Instance already runs it, or
/// an update leaves it unchanged): new choices must use another.
pub fn resolve_catalog<'a>(
    spec: &InstanceSpec,
    offering: Option<&'a Offering>,
    keeps_deprecated: bool,
) -> Result<CatalogChoice<'a>, Unresolved> {
    let Some(offering) = offering else {
        return Err(Unresolved {
            reason: reasons::OFFERING_NOT_FOUND,
            message: format!(
                "spec.offering is {:?}, but no Offering of that name exists; correct spec.offering (see kubectl get offerings)",
                spec.offering
            ),
        });
    };
    let Some(version) = offering.version(&spec.version) else {
        let known: Vec<&str> = offering.spec.versions.iter().map(|v| v.name.as_str()).collect();
        return Err(Unresolved {
            reason: reasons::VERSION_NOT_FOUND,
            message: format!(
                "spec.version is {:?}, but Offering {} has versions {}; pick one of them",
                spec.version,
                spec.offering,
                known.join(", ")
            ),
        });
    };
    let Some(plan) = offering.plan(&spec.plan) else {
        let known: Vec<&str> = offering.spec.plans.iter().map(|p| p.id.as_str()).collect();
        return Err(Unresolved {
            reason: reasons::PLAN_NOT_FOUND,
            message: format!(
                "spec.plan is {:?}, but Offering {} has plans {}; pick one of them",
                spec.plan,
                spec.offering,
                known.join(", ")
            ),
        });
    };
    if version.deprecated && !keeps_deprecated {
        return Err(Unresolved {
            reason: reasons::VERSION_DEPRECATED,
            message: format!(
                "spec.version is {:?}, which Offering {} deprecated: it keeps running where it runs, but new Instances must use another (latest: {})",
                spec.version,
                spec.offering,
                offering.latest_version().map_or("none", |v| v.name.as_str())
            ),
        });
    }
    Ok(CatalogChoice { offering, version, plan })
}
