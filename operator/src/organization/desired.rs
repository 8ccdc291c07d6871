//! What an Organization should produce, and its status: pure functions of
//! the CR, what was observed in the caches, the settings and `now`.

use std::time::Duration;

use cmp_crds::conditions::{self, NewCondition, reasons, set_condition};
use cmp_crds::names::{control_namespace, namespace_labels, owned_labels};
use cmp_crds::{Organization, OrganizationStatus, Wallet};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::rbac;
use crate::settings::Settings;
use crate::shell::{self, Desired};

/// The id of the starter grant.
pub const STARTER_GRANT_ID: &str = "starter";
/// How often a converged Organization is looked at again. Watches repair
/// drift within seconds; this is only a safety net.
pub const RESYNC: Duration = Duration::from_secs(3600);
/// How soon to look again while the control namespace is being deleted.
pub const TERMINATING_RECHECK: Duration = Duration::from_secs(5);

/// What the Organization pipeline reads from the caches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The control namespace exists and is being deleted.
    pub namespace_terminating: bool,
    /// The Wallet exists and already holds the starter grant.
    pub wallet_has_starter_grant: bool,
    /// The names of the Projects in the control namespace, sorted.
    pub projects: Vec<String>,
}

/// Everything the operator creates for an Organization.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    /// The control namespace `cmp-<org>`.
    pub namespace: Namespace,
    /// The starter grant to append, once in the organization's life (see [`starter_grant`]).
    pub starter_grant: Option<Value>,
    /// The Wallet, without grants.
    pub wallet: Value,
    /// The admin, developer and viewer Roles.
    pub roles: Vec<Role>,
    /// Their RoleBindings.
    pub role_bindings: Vec<RoleBinding>,
}

/// The Wallet's name (see [`cmp_crds::names::wallet_name`]).
pub fn wallet_name(org: &Organization) -> String {
    cmp_crds::names::wallet_name(&org.name_any())
}

/// The desired children of `org`; `starter_grant` says whether the starter grant is still to be appended.
pub fn children(org: &Organization, starter_grant: Option<Value>) -> Children {
    let name = org.name_any();
    let ns = control_namespace(&name);
    Children {
        namespace: Namespace {
            metadata: ObjectMeta {
                name: Some(ns.clone()),
                labels: Some(namespace_labels(&name, None)),
                ..Default::default()
            },
            ..Default::default()
        },
        starter_grant,
        wallet: json!({
            "apiVersion": Wallet::api_version(&()),
            "kind": Wallet::kind(&()),
            "metadata": {"name": wallet_name(org), "namespace": ns, "labels": owned_labels(&name, None)},
            "spec": {}
        }),
        roles: rbac::ROLES.iter().map(|r| rbac::role(*r, &ns, &name, None)).collect(),
        role_bindings: rbac::ROLES.iter().map(|r| rbac::role_binding(&org.spec, *r, &ns, &name, None)).collect(),
    }
}

/// The starter grant to append, applied once under its own field manager
/// (with the Wallet's labels, so that it can create the Wallet in one write).
/// `None` when the configured amount is zero.
pub fn starter_grant(org: &Organization, default_credits: i64) -> Option<Value> {
    let credits = org.spec.starter_credits.unwrap_or(default_credits);
    let name = org.name_any();
    (credits > 0).then(|| {
        json!({
            "apiVersion": Wallet::api_version(&()),
            "kind": Wallet::kind(&()),
            "metadata": {"name": wallet_name(org), "namespace": control_namespace(&name), "labels": owned_labels(&name, None)},
            "spec": {"grants": [{
                "id": STARTER_GRANT_ID,
                "credits": credits,
                "reason": "Starter credits",
                "source": "Starter"
            }]}
        })
    })
}

/// The `Suspended` condition of an Organization, from its own spec.
fn suspended(org: &Organization) -> NewCondition<'static> {
    if cmp_crds::suspension::of_organization(org).is_some() {
        NewCondition::new(
            conditions::SUSPENDED,
            true,
            reasons::SUSPENDED_BY_SPEC,
            "spec.suspended is true: the gateway refuses runs of every Instance of the organization",
        )
    } else {
        NewCondition::new(conditions::SUSPENDED, false, reasons::ACTIVE, "the organization is active")
    }
}

/// The children and the status of `org`, given what was observed.
///
/// The starter grant is appended at most once in the organization's life:
/// `status.starterGranted` records it (written only after the grant was),
/// so a Wallet recreated later does not get it again.
pub fn desired(
    org: &Organization,
    observed: &Observed,
    settings: &Settings,
    now: Timestamp,
) -> Desired<Children, OrganizationStatus> {
    let now = Time(now);
    let generation = org.meta().generation;
    let mut status = org.status.clone().unwrap_or_default();
    let steering = shell::steer(org, &mut status.conditions, &now);
    if steering.paused {
        return Desired::paused(status);
    }
    let set = |status: &mut OrganizationStatus, c: NewCondition<'static>| {
        set_condition(&mut status.conditions, c, generation, now.clone())
    };
    let name = org.name_any();
    let ns = control_namespace(&name);
    status.observed_generation = generation;
    status.namespace = Some(ns.clone());
    status.wallet = Some(wallet_name(org));
    status.last_handled_reconcile_at = steering.reconcile_requested_at;
    if observed.namespace_terminating {
        let message = format!("namespace {ns} is being deleted; it is recreated once it is gone");
        for type_ in [conditions::NAMESPACE_READY, conditions::READY] {
            set(&mut status, NewCondition::new(type_, false, reasons::NAMESPACE_TERMINATING, message.clone()));
        }
        return Desired { children: None, status, requeue: Some(TERMINATING_RECHECK) };
    }
    let grant = (!status.starter_granted && !observed.wallet_has_starter_grant)
        .then(|| starter_grant(org, settings.starter_credits))
        .flatten();
    status.starter_granted = true;
    status.projects = observed.projects.clone();
    status.project_count = i64::try_from(observed.projects.len()).unwrap_or(i64::MAX);
    let namespace_ready = format!("control namespace {ns} exists");
    set(&mut status, NewCondition::new(conditions::NAMESPACE_READY, true, reasons::NAMESPACE_READY, namespace_ready));
    set(&mut status, suspended(org));
    let ready = format!("namespace {ns}, wallet, RBAC and {} project(s) in place", status.project_count);
    set(&mut status, NewCondition::new(conditions::READY, true, reasons::RECONCILED, ready));
    Desired { children: Some(children(org, grant)), status, requeue: Some(RESYNC) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_crds::OrganizationSpec;
    use cmp_crds::names::TENANT_LABEL;

    fn org(starter: Option<i64>) -> Organization {
        Organization::new(
            "acme",
            OrganizationSpec { display_name: "Acme".into(), starter_credits: starter, ..Default::default() },
        )
    }

    #[test]
    fn control_namespace_is_labelled_as_a_tenant() {
        let c = children(&org(None), None);
        assert_eq!(c.namespace.metadata.name.as_deref(), Some("cmp-acme"));
        let labels = c.namespace.metadata.labels.expect("labels");
        assert_eq!(labels.get(TENANT_LABEL).map(String::as_str), Some("control"));
        assert_eq!(labels.get("cmp.gsv.dev/organization").map(String::as_str), Some("acme"));
    }

    #[test]
    fn the_wallet_is_applied_without_grants() {
        let c = children(&org(Some(5)), None);
        assert_eq!(c.wallet["metadata"]["namespace"], "cmp-acme");
        assert!(c.wallet["spec"].get("grants").is_none(), "grants are appended separately, once");
    }

    #[test]
    fn starter_grant_uses_the_spec_then_the_default() {
        assert_eq!(starter_grant(&org(Some(250)), 1000).expect("grant")["spec"]["grants"][0]["credits"], 250);
        assert_eq!(starter_grant(&org(None), 1000).expect("grant")["spec"]["grants"][0]["credits"], 1000);
        assert!(starter_grant(&org(Some(0)), 1000).is_none());
    }

    #[test]
    fn three_roles_and_bindings_in_the_control_namespace() {
        let c = children(&org(None), None);
        let names: Vec<_> = c.roles.iter().filter_map(|r| r.metadata.name.clone()).collect();
        assert_eq!(names, ["cmp-admin", "cmp-developer", "cmp-viewer"]);
        assert!(c.role_bindings.iter().all(|b| b.metadata.namespace.as_deref() == Some("cmp-acme")));
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    fn observed(projects: &[&str]) -> Observed {
        Observed { projects: projects.iter().map(|p| p.to_string()).collect(), ..Default::default() }
    }

    fn condition(status: &OrganizationStatus, type_: &str) -> (String, String) {
        conditions::state(&status.conditions, type_).unwrap_or_else(|| panic!("{type_} is set"))
    }

    #[test]
    fn a_new_organization_gets_its_children_the_starter_grant_and_a_ready_status() {
        let mut o = org(Some(250));
        o.metadata.generation = Some(3);
        let d = desired(&o, &observed(&["b", "a"]), &Settings::default(), at(10));
        let children = d.children.expect("children");
        assert_eq!(children.starter_grant.expect("grant")["spec"]["grants"][0]["credits"], 250);
        let s = d.status;
        assert!(s.starter_granted, "recorded, so it is granted once");
        assert_eq!((s.namespace.as_deref(), s.wallet.as_deref()), (Some("cmp-acme"), Some("acme")));
        assert_eq!((s.project_count, s.observed_generation), (2, Some(3)));
        assert_eq!(condition(&s, "Ready"), ("True".into(), "Reconciled".into()));
        assert_eq!(condition(&s, "NamespaceReady"), ("True".into(), "NamespaceReady".into()));
        assert_eq!(condition(&s, "Suspended"), ("False".into(), "Active".into()));
        assert_eq!(condition(&s, "Paused"), ("False".into(), "Reconciling".into()));
        assert_eq!(d.requeue, Some(RESYNC));
    }

    #[test]
    fn the_starter_grant_is_not_appended_twice() {
        let mut o = org(Some(250));
        o.status = Some(OrganizationStatus { starter_granted: true, ..Default::default() });
        let d = desired(&o, &observed(&[]), &Settings::default(), at(10));
        assert!(d.children.expect("children").starter_grant.is_none(), "the org already granted it once");
        let fresh = org(Some(250));
        let has_it = Observed { wallet_has_starter_grant: true, ..Default::default() };
        assert!(
            desired(&fresh, &has_it, &Settings::default(), at(10)).children.expect("children").starter_grant.is_none()
        );
    }

    #[test]
    fn a_suspended_organization_says_so() {
        let mut o = org(None);
        o.spec.suspended = true;
        let s = desired(&o, &observed(&[]), &Settings::default(), at(10)).status;
        assert_eq!(condition(&s, "Suspended"), ("True".into(), "SuspendedBySpec".into()));
        assert_eq!(condition(&s, "Ready"), ("True".into(), "Reconciled".into()), "suspension is not an error");
    }

    #[test]
    fn a_paused_organization_writes_nothing_but_the_paused_condition() {
        let mut o = org(None);
        o.metadata.annotations = Some([("cmp.gsv.dev/paused".to_string(), "true".to_string())].into());
        let d = desired(&o, &observed(&["a"]), &Settings::default(), at(10));
        assert!(d.children.is_none() && d.requeue.is_none());
        assert_eq!(condition(&d.status, "Paused"), ("True".into(), "PausedByAnnotation".into()));
        assert!(conditions::find(&d.status.conditions, "Ready").is_none(), "nothing else is decided while paused");
    }

    #[test]
    fn a_terminating_control_namespace_is_reported_and_looked_at_again() {
        let terminating = Observed { namespace_terminating: true, ..Default::default() };
        let d = desired(&org(None), &terminating, &Settings::default(), at(10));
        assert!(d.children.is_none(), "nothing is applied into a namespace being deleted");
        assert_eq!(condition(&d.status, "Ready"), ("False".into(), "NamespaceTerminating".into()));
        assert_eq!(condition(&d.status, "NamespaceReady"), ("False".into(), "NamespaceTerminating".into()));
        assert_eq!(d.requeue, Some(TERMINATING_RECHECK));
    }

    #[test]
    fn the_reconcile_request_is_echoed_and_transition_times_are_kept() {
        let mut o = org(None);
        o.metadata.annotations = Some([("cmp.gsv.dev/reconcile-requested-at".to_string(), "r1".to_string())].into());
        let first = desired(&o, &observed(&[]), &Settings::default(), at(10)).status;
        assert_eq!(first.last_handled_reconcile_at.as_deref(), Some("r1"));
        o.status = Some(first.clone());
        let again = desired(&o, &observed(&[]), &Settings::default(), at(99)).status;
        assert_eq!(again, first, "a converged organization computes the same status: nothing to write");
    }
}
