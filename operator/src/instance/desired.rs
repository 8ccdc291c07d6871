//! An Instance's status: pure functions of the Instance, its cached
//! Organization and Project, and `now`.

use cmp_crds::conditions::{self, NewCondition, READY, SUSPENDED, reasons, set_condition};
use cmp_crds::instance::InstancePhase;
use cmp_crds::{Instance, InstanceStatus, Organization, Project};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use crate::shell::{self, Desired};

/// Reason of `Ready=False` once every reference resolves: the runtime is not provisioned yet.
pub const PROVISIONING: &str = "Provisioning";

/// What the Instance pipeline reads from the caches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Its Organization (the one whose control namespace holds it), when it exists and can be read.
    pub organization: Option<Organization>,
    /// The Project `spec.project` names, when it exists and can be read.
    pub project: Option<Project>,
}

/// Whether the Instance is suspended, and why.
fn suspended(instance: &Instance, organization: Option<&Organization>) -> NewCondition<'static> {
    if instance.spec.suspended {
        let message = "spec.suspended is true: the gateway refuses runs of this Instance";
        NewCondition::new(SUSPENDED, true, reasons::SUSPENDED_BY_SPEC, message)
    } else if let Some(org) = organization.filter(|o| o.spec.suspended) {
        let message = format!("Organization {} is suspended: the gateway refuses runs", org.name_any());
        NewCondition::new(SUSPENDED, true, reasons::ORGANIZATION_SUSPENDED, message)
    } else {
        NewCondition::new(SUSPENDED, false, reasons::ACTIVE, "the Instance is active")
    }
}

/// Whether the references resolve: `Ready` with the first that does not.
fn ready(instance: &Instance, observed: &Observed) -> NewCondition<'static> {
    let namespace = instance.namespace().unwrap_or_default();
    let project = &instance.spec.project;
    match (&observed.organization, &observed.project) {
        (None, _) => NewCondition::new(
            READY,
            false,
            reasons::ORGANIZATION_NOT_FOUND,
            format!(
                "namespace {namespace} is not the control namespace of an existing Organization; create the Organization, or move the Instance to its namespace"
            ),
        ),
        (_, None) => NewCondition::new(
            READY,
            false,
            reasons::PROJECT_NOT_FOUND,
            format!(
                "spec.project is {project:?}, but no Project {project} exists in namespace {namespace}; create it or correct spec.project"
            ),
        ),
        (_, Some(p)) if !p.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, READY)) => {
            NewCondition::new(
                READY,
                false,
                reasons::PROJECT_NOT_READY,
                format!("spec.project is {project:?}, and Project {project} is not Ready yet; see its conditions"),
            )
        }
        _ => NewCondition::new(
            READY,
            false,
            PROVISIONING,
            format!("Project {project} is ready; the runtime of the Instance is not provisioned yet"),
        ),
    }
}

/// The status of `instance`, given what was observed. It has no children yet.
pub fn desired(instance: &Instance, observed: &Observed, now: Timestamp) -> Desired<(), InstanceStatus> {
    let now = Time(now);
    let generation = instance.meta().generation;
    let mut status = instance.status.clone().unwrap_or_default();
    if shell::steer(instance, &mut status.conditions, &now).paused {
        return Desired::paused(status);
    }
    let suspended = suspended(instance, observed.organization.as_ref());
    let is_suspended = suspended.status == conditions::TRUE;
    status.observed_generation = generation;
    status.phase = if is_suspended { InstancePhase::Suspended } else { InstancePhase::Pending };
    status.runtime_namespace = observed.project.as_ref().and_then(|p| p.status.as_ref()?.runtime_namespace.clone());
    set_condition(&mut status.conditions, suspended, generation, now.clone());
    set_condition(&mut status.conditions, ready(instance, observed), generation, now);
    Desired { children: Some(()), status, requeue: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_crds::conditions::TRUE;
    use cmp_crds::{InstanceSpec, OrganizationSpec, ProjectSpec, ProjectStatus};

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    fn instance() -> Instance {
        let mut i = Instance::new(
            "bot",
            InstanceSpec {
                project: "p".into(),
                offering: "o".into(),
                version: "1".into(),
                plan: "basic".into(),
                suspended: false,
                api_keys: vec![],
                connectors: vec![],
                config: Default::default(),
                deletion_policy: Default::default(),
            },
        );
        i.metadata.namespace = Some("cmp-acme".into());
        i
    }

    fn ready_project() -> Project {
        let mut p = Project::new("p", ProjectSpec::default());
        let mut conditions = Vec::new();
        set_condition(&mut conditions, NewCondition::new(READY, true, "Reconciled", "ok"), None, Time(at(1)));
        p.status =
            Some(ProjectStatus { runtime_namespace: Some("cmp-acme-p".into()), conditions, ..Default::default() });
        p
    }

    fn observed(org_suspended: bool) -> Observed {
        let mut org = Organization::new("acme", OrganizationSpec::default());
        org.spec.suspended = org_suspended;
        Observed { organization: Some(org), project: Some(ready_project()) }
    }

    fn condition(status: &InstanceStatus, type_: &str) -> (String, String) {
        conditions::state(&status.conditions, type_).unwrap_or_else(|| panic!("{type_} is set"))
    }

    #[test]
    fn an_instance_with_resolved_references_is_pending_provisioning() {
        let s = desired(&instance(), &observed(false), at(10)).status;
        assert_eq!(s.phase, InstancePhase::Pending);
        assert_eq!(s.runtime_namespace.as_deref(), Some("cmp-acme-p"));
        assert_eq!(condition(&s, "Suspended"), ("False".into(), "Active".into()));
        assert_eq!(condition(&s, "Ready"), ("False".into(), PROVISIONING.into()));
    }

    #[test]
    fn suspension_comes_from_the_instance_or_its_organization() {
        let s = desired(&instance(), &observed(true), at(10)).status;
        assert_eq!(condition(&s, "Suspended"), (TRUE.into(), "OrganizationSuspended".into()));
        assert_eq!(s.phase, InstancePhase::Suspended);
        let mut own = instance();
        own.spec.suspended = true;
        let s = desired(&own, &observed(false), at(10)).status;
        assert_eq!(condition(&s, "Suspended"), (TRUE.into(), "SuspendedBySpec".into()));
    }

    #[test]
    fn each_missing_reference_is_a_reason_that_names_the_field() {
        let no_project = Observed { project: None, ..observed(false) };
        let s = desired(&instance(), &no_project, at(10)).status;
        let ready = conditions::find(&s.conditions, "Ready").expect("Ready");
        assert_eq!(ready.reason, "ProjectNotFound");
        assert!(ready.message.contains("spec.project is \"p\""), "{}", ready.message);

        let mut unready = observed(false);
        unready.project = Some(Project::new("p", ProjectSpec::default()));
        assert_eq!(condition(&desired(&instance(), &unready, at(10)).status, "Ready").1, "ProjectNotReady");

        let no_org = Observed { organization: None, ..observed(false) };
        assert_eq!(condition(&desired(&instance(), &no_org, at(10)).status, "Ready").1, "OrganizationNotFound");
    }

    #[test]
    fn a_paused_instance_writes_only_the_paused_condition() {
        let mut i = instance();
        i.metadata.annotations = Some([("cmp.gsv.dev/paused".to_string(), "true".to_string())].into());
        let s = desired(&i, &observed(true), at(10)).status;
        assert_eq!(condition(&s, "Paused"), (TRUE.into(), "PausedByAnnotation".into()));
        assert!(conditions::find(&s.conditions, "Suspended").is_none());
    }
}
