//! An Instance's desired state and status: pure functions of the Instance,
//! what the caches hold (its Organization, Project, Offering and key
//! Secrets), the last probe of its runtime, and `now`.

use cmp_crds::conditions::{self, NewCondition, SUSPENDED, SYNCED, reasons, set_condition};
use cmp_crds::instance::{InstancePhase, SecretLocation};
use cmp_crds::{Instance, InstanceStatus, Offering, Organization, Project};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use std::collections::BTreeMap;

use super::connectors::{Bounds, ConnectorsState, connectors};
use super::dedicated::GitOpsObserved;
use super::keys::{self, IssuedKey, KeyToIssue, Store};
use super::references::resolve;
use super::runtime::{RuntimeWork, runtime};
use crate::flows::Probe;
use crate::gitops::render::InstanceTree;
use crate::shell::{self, Desired};
use crate::vault::connectors::SecretCheck;
use cmp_crds::connectors::HostPattern;

/// What the Instance pipeline reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Its Organization (the one whose control namespace holds it), when it exists and can be read.
    pub organization: Option<Organization>,
    /// The Project `spec.project` names, when it exists and can be read.
    pub project: Option<Project>,
    /// The Offering `spec.offering` names, when it exists and can be read.
    pub offering: Option<Offering>,
    /// How many Instances of the same Project come before this one (oldest first): `maxInstances` admits the oldest.
    pub older_in_project: usize,
    /// Its keys seen issued: key Secrets in the cache, and Vault writes of this process.
    pub issued_keys: Vec<IssuedKey>,
    /// The last look at its flow in a shared runtime, by this process.
    pub probe: Option<Probe>,
    /// GitOps delivery, when a repository is configured.
    pub gitops: Option<GitOpsObserved>,
    /// The last looks at its connector secrets, by path; None when no Vault is configured.
    pub connector_checks: Option<BTreeMap<String, SecretCheck>>,
}

/// What the Instance pipeline writes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Children {
    /// Keys to issue.
    pub issue_keys: Vec<KeyToIssue>,
    /// Key plaintexts to delete.
    pub remove_keys: Vec<SecretLocation>,
    /// A registration to check and, if needed, upload.
    pub register: Option<RuntimeWork>,
    /// A Dedicated runtime's folder to hand the GitOps writer.
    pub commit: Option<InstanceTree>,
    /// Connector secrets to look at in Vault.
    pub check_connectors: Vec<String>,
    /// A Dedicated runtime's own key Secret.
    pub runtime_key: Option<super::runtime_key::RuntimeKeyWork>,
}

/// Whether the Instance is suspended, and why ([`cmp_crds::suspension`]).
fn suspended(instance: &Instance, organization: Option<&Organization>) -> NewCondition<'static> {
    match cmp_crds::suspension::of_instance(instance, organization) {
        Some(suspension) => {
            let what = format!("Instance {}", instance.name_any());
            NewCondition::new(SUSPENDED, true, suspension.reason(), suspension.message(&what))
        }
        None => NewCondition::new(SUSPENDED, false, reasons::ACTIVE, "the Instance is active"),
    }
}

/// The children and status of `instance`, given what was observed.
pub fn desired(
    instance: &Instance,
    observed: &Observed,
    store: Store,
    connector_hosts: &[HostPattern],
    now: Timestamp,
) -> Desired<Children, InstanceStatus> {
    let time = Time(now);
    let generation = instance.meta().generation;
    let mut status = crate::shell::Reconcile::operator_status(instance);
    if shell::steer(instance, &mut status.conditions, &time).paused {
        return Desired::paused(status);
    }
    let suspended = suspended(instance, observed.organization.as_ref());
    let is_suspended = suspended.status == conditions::TRUE;
    let not_serving = is_suspended.then(|| (suspended.reason, suspended.message.clone()));
    let mut children = Children::default();
    let mut bindings = ConnectorsState::default();
    if let Some(org) = &observed.organization {
        let keys = keys::keys(instance, &org.name_any(), &observed.issued_keys, store);
        status.api_keys = keys.status;
        children.issue_keys = keys.issue;
        children.remove_keys = keys.remove;
        set_condition(&mut status.conditions, keys.condition, generation, time.clone());
        let checks = observed.connector_checks.as_ref();
        let bounds = Bounds { offering: observed.offering.as_ref().map(|o| &o.spec), allowed_hosts: connector_hosts };
        let no_checks = BTreeMap::new();
        bindings = connectors(instance, &org.name_any(), checks.is_some(), checks.unwrap_or(&no_checks), &bounds, now);
        if let Some(callable) = bindings.callable.take() {
            set_condition(&mut status.conditions, callable, generation, time.clone());
        }
        status.connectors = std::mem::take(&mut bindings.status);
        let served = status.version.clone().unwrap_or_else(|| instance.spec.version.clone());
        match super::config::config_applied(instance, observed.offering.as_ref(), &served) {
            Some(config) => {
                set_condition(&mut status.conditions, config, generation, time.clone());
            }
            // Nothing to apply any more (the config emptied, the version without settings): no stale verdict.
            None => status.conditions.retain(|c| c.type_ != conditions::CONFIG_APPLIED),
        }
        children.check_connectors = std::mem::take(&mut bindings.check);
    }
    status.observed_generation = generation;
    status.runtime_namespace = observed.project.as_ref().and_then(|p| p.status.as_ref()?.runtime_namespace.clone());
    set_condition(&mut status.conditions, suspended, generation, time.clone());
    let mut requeue = None;
    let (phase, ready) = match (resolve(instance, observed), bindings.outside_tenant) {
        (Err(unresolved), _) => {
            let not_synced =
                NewCondition::new(SYNCED, false, unresolved.condition.reason, unresolved.condition.message.clone());
            set_condition(&mut status.conditions, not_synced, generation, time.clone());
            (if unresolved.failed { InstancePhase::Failed } else { InstancePhase::Pending }, unresolved.condition)
        }
        // Nothing of the runtime is written while a binding points outside the tenant.
        (Ok(_), Some(refusal)) => {
            let not_synced = NewCondition::new(SYNCED, false, refusal.reason, refusal.message.clone());
            set_condition(&mut status.conditions, not_synced, generation, time.clone());
            (InstancePhase::Failed, refusal)
        }
        (Ok(resolved), None) => {
            let state = runtime(instance, &resolved, observed, now);
            children.runtime_key = super::runtime_key::wanted(instance, &resolved);
            children.register = state.work;
            children.commit = state.commit;
            status.gitops = state.gitops;
            status.endpoint = state.endpoint;
            status.flow_id = state.flow_id;
            status.version = state.version;
            requeue = state.requeue;
            set_condition(&mut status.conditions, state.synced, generation, time.clone());
            // A missing connector secret does not keep the runtime from serving: ConnectorsReady says what is missing.
            let ready = state.ready;
            let phase =
                if ready.status == conditions::TRUE { InstancePhase::Ready } else { InstancePhase::Provisioning };
            (phase, ready)
        }
    };
    requeue = match (requeue, bindings.requeue) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    // Ready says whether the Instance serves: a suspended one does not, whatever its runtime.
    let ready = match not_serving {
        Some((reason, message)) => NewCondition::new(conditions::READY, false, reason, message),
        None => ready,
    };
    status.phase = if is_suspended { InstancePhase::Suspended } else { phase };
    set_condition(&mut status.conditions, ready, generation, time);
    Desired { children: Some(children), status, requeue }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::runtime::{PROBE_INTERVAL, PROBE_RETRY};
    use cmp_crds::conditions::READY;
    use cmp_crds::conditions::{FALSE, TRUE};
    use cmp_crds::offering::{ArtifactState, RuntimeMode};
    use cmp_crds::offering::{OfferingStatus, VersionStatus};
    use cmp_crds::{OrganizationSpec, ProjectSpec, ProjectStatus};

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    fn instance() -> Instance {
        crate::fixtures::instance("p")
    }

    fn ready_project() -> Project {
        let mut p = Project::new("p", ProjectSpec::default());
        let mut conditions = Vec::new();
        set_condition(&mut conditions, NewCondition::new(READY, true, "Reconciled", "ok"), None, Time(at(1)));
        p.status =
            Some(ProjectStatus { runtime_namespace: Some("cmp-acme-p".into()), conditions, ..Default::default() });
        p
    }

    fn offering(mode: RuntimeMode, state: ArtifactState) -> Offering {
        let versions = vec![crate::fixtures::version("1", false), crate::fixtures::version("old", true)];
        let mut o = crate::fixtures::offering(mode, versions);
        let versions = o
            .spec
            .versions
            .iter()
            .map(|v| VersionStatus {
                name: v.name.clone(),
                artifact: state,
                url: v.artifact.url.clone(),
                sha256: v.artifact.sha256.clone(),
                message: String::new(),
                deprecated: v.deprecated,
                instances: 0,
            })
            .collect();
        o.status = Some(OfferingStatus { versions, ..Default::default() });
        o
    }

    fn observed(mode: RuntimeMode) -> Observed {
        Observed {
            organization: Some(Organization::new("acme", OrganizationSpec::default())),
            project: Some(ready_project()),
            offering: Some(offering(mode, ArtifactState::Verified)),
            ..Default::default()
        }
    }

    fn condition(status: &InstanceStatus, type_: &str) -> (String, String) {
        conditions::state(&status.conditions, type_).unwrap_or_else(|| panic!("{type_} is set"))
    }

    fn reason(instance: &Instance, observed: &Observed) -> String {
        condition(&desired(instance, observed, Store::Secret, &[], at(10)).status, "Ready").1
    }

    #[test]
    fn a_shared_instance_registers_its_own_flow_then_is_ready() {
        let d = desired(&instance(), &observed(RuntimeMode::Shared), Store::Secret, &[], at(10));
        let work = d.children.as_ref().and_then(|c| c.register.clone()).expect("registration");
        let flow_id = cmp_crds::names::flow_id("cmp-acme", "bot", "uid-1");
        assert_eq!(work.registration.flow_id, flow_id, "derived from the Instance, not the export's id");
        assert_eq!(d.status.phase, InstancePhase::Provisioning);
        assert_eq!(d.status.flow_id.as_deref(), Some(flow_id.as_str()));

        let mut seen = observed(RuntimeMode::Shared);
        seen.probe = Some(Probe { registration: work.registration.clone(), outcome: Ok(()), at: at(10) });
        let d = desired(&instance(), &seen, Store::Secret, &[], at(11));
        assert!(d.children.expect("children").register.is_none(), "not probed again before the interval");
        assert_eq!(d.status.phase, InstancePhase::Ready);
        assert_eq!(condition(&d.status, "Synced"), (TRUE.into(), "FlowRegistered".into()));
        assert_eq!(condition(&d.status, "Ready"), (TRUE.into(), "RuntimeReady".into()));
        assert_eq!(d.status.version.as_deref(), Some("1"));
        assert_eq!(d.status.endpoint.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(d.requeue, Some(PROBE_INTERVAL));
        assert!(
            desired(&instance(), &seen, Store::Secret, &[], at(80)).children.expect("children").register.is_some(),
            "probed again"
        );
    }

    #[test]
    fn a_runtime_failure_is_on_synced_and_ready_and_retried_soon() {
        let d = desired(&instance(), &observed(RuntimeMode::Shared), Store::Secret, &[], at(10));
        let registration = d.children.and_then(|c| c.register).expect("registration").registration;
        let mut seen = observed(RuntimeMode::Shared);
        let outcome = Err((reasons::RUNTIME_UNAVAILABLE, "connection refused".to_string()));
        seen.probe = Some(Probe { registration, outcome, at: at(10) });
        let d = desired(&instance(), &seen, Store::Secret, &[], at(11));
        assert_eq!(condition(&d.status, "Synced"), (FALSE.into(), "RuntimeUnavailable".into()));
        assert_eq!(d.status.phase, InstancePhase::Provisioning);
        assert_eq!(d.requeue, Some(PROBE_RETRY));
    }

    #[test]
    fn a_dedicated_instance_waits_for_gitops_with_its_service_endpoint() {
        let d = desired(&instance(), &observed(RuntimeMode::Dedicated), Store::Secret, &[], at(10));
        assert_eq!(d.status.endpoint.as_deref(), Some("http://bot.cmp-acme-p.svc.cluster.local:8000"));
        assert_eq!(d.status.flow_id.as_deref(), Some("export-id"));
        assert_eq!(condition(&d.status, "Synced").1, "AwaitingGitOps");
    }

    #[test]
    fn each_reference_error_is_a_reason_that_names_the_field() {
        let i = instance();
        let shared = observed(RuntimeMode::Shared);
        assert_eq!(reason(&i, &Observed { organization: None, ..shared.clone() }), "OrganizationNotFound");
        assert_eq!(reason(&i, &Observed { project: None, ..shared.clone() }), "ProjectNotFound");
        let unready = Observed { project: Some(Project::new("p", ProjectSpec::default())), ..shared.clone() };
        assert_eq!(reason(&i, &unready), "ProjectNotReady");
        assert_eq!(reason(&i, &Observed { offering: None, ..shared.clone() }), "OfferingNotFound");
        let mut v = instance();
        v.spec.version = "9".into();
        let d = desired(&v, &shared, Store::Secret, &[], at(10)).status;
        let ready = conditions::find(&d.conditions, "Ready").expect("Ready");
        assert_eq!((ready.reason.as_str(), d.phase), ("VersionNotFound", InstancePhase::Failed));
        assert!(ready.message.contains("spec.version is \"9\""), "{}", ready.message);
        let mut p = instance();
        p.spec.plan = "gold".into();
        assert_eq!(reason(&p, &shared), "PlanNotFound");
        let mismatch =
            Observed { offering: Some(offering(RuntimeMode::Shared, ArtifactState::Mismatch)), ..shared.clone() };
        assert_eq!(reason(&i, &mismatch), "ArtifactMismatch");
        let pending =
            Observed { offering: Some(offering(RuntimeMode::Shared, ArtifactState::Pending)), ..shared.clone() };
        assert_eq!(reason(&i, &pending), "ArtifactPending");
    }

    #[test]
    fn a_deprecated_version_is_refused_to_new_instances_only() {
        let mut i = instance();
        i.spec.version = "old".into();
        assert_eq!(reason(&i, &observed(RuntimeMode::Shared)), "VersionDeprecated");
        i.status = Some(InstanceStatus { version: Some("old".into()), ..Default::default() });
        assert_eq!(reason(&i, &observed(RuntimeMode::Shared)), "Provisioning", "one already running keeps it");
    }

    #[test]
    fn max_instances_admits_the_oldest() {
        let mut full = observed(RuntimeMode::Shared);
        full.older_in_project = ProjectSpec::default().quota.max_instances as usize;
        let d = desired(&instance(), &full, Store::Secret, &[], at(10)).status;
        let ready = conditions::find(&d.conditions, "Ready").expect("Ready");
        assert_eq!((ready.reason.as_str(), d.phase), ("QuotaExceeded", InstancePhase::Failed));
        assert!(ready.message.contains("spec.maxInstances="), "{}", ready.message);
    }

    #[test]
    fn suspension_comes_from_the_instance_or_its_organization() {
        let mut seen = observed(RuntimeMode::Shared);
        if let Some(org) = seen.organization.as_mut() {
            org.spec.suspended = true;
        }
        let s = desired(&instance(), &seen, Store::Secret, &[], at(10)).status;
        assert_eq!(condition(&s, "Suspended"), (TRUE.into(), "OrganizationSuspended".into()));
        assert_eq!(s.phase, InstancePhase::Suspended);
        let mut own = instance();
        own.spec.suspended = true;
        let s = desired(&own, &observed(RuntimeMode::Shared), Store::Secret, &[], at(10)).status;
        assert_eq!(condition(&s, "Suspended"), (TRUE.into(), "SuspendedBySpec".into()));
    }

    #[test]
    fn a_suspended_instance_is_not_ready_and_the_stores_suspension_is_named_first() {
        let running = desired(&instance(), &observed(RuntimeMode::Shared), Store::Secret, &[], at(10)).status;
        let ready_when_running = condition(&running, "Ready");
        let mut withdrawn = instance();
        withdrawn.spec.suspended = false;
        withdrawn
            .annotations_mut()
            .insert(cmp_crds::names::STORE_SUSPENSION_ANNOTATION.into(), "order #7 cancelled".into());
        let s = desired(&withdrawn, &observed(RuntimeMode::Shared), Store::Secret, &[], at(10)).status;
        assert_eq!(condition(&s, "Suspended"), (TRUE.into(), "SuspendedByStore".into()));
        assert_eq!(condition(&s, "Ready"), ("False".into(), "SuspendedByStore".into()), "was {ready_when_running:?}");
        assert_eq!(s.phase, InstancePhase::Suspended);
        let ready = conditions::find(&s.conditions, "Ready").expect("Ready");
        assert!(ready.message.contains("order #7 cancelled") && ready.message.contains("only the store"));
        let mut own = instance();
        own.spec.suspended = true;
        let s = desired(&own, &observed(RuntimeMode::Shared), Store::Secret, &[], at(10)).status;
        assert_eq!(condition(&s, "Ready"), ("False".into(), "SuspendedBySpec".into()));
    }

    #[test]
    fn a_paused_instance_writes_only_the_paused_condition() {
        let mut i = instance();
        i.metadata.annotations = Some([("cmp.gsv.dev/paused".to_string(), "true".to_string())].into());
        let d = desired(&i, &observed(RuntimeMode::Shared), Store::Secret, &[], at(10));
        assert_eq!(condition(&d.status, "Paused"), (TRUE.into(), "PausedByAnnotation".into()));
        assert!(conditions::find(&d.status.conditions, "Suspended").is_none());
        assert!(d.children.is_none());
    }
}
