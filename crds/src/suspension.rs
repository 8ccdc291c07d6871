//! Whether runs of an Instance or an Organization are refused as suspended,
//! and why: the one rule the gateway, the operator's status and `kubectl
//! cmp` all read.
//!
//! An Instance is suspended by its store (the annotation
//! [`STORE_SUSPENSION_ANNOTATION`], which only the provisioner may set or
//! lift), by its Organization's `spec.suspended`, or by its own
//! `spec.suspended` (the buyer's). The store's suspension is named first:
//! it is the one the buyer cannot lift.

use kube::ResourceExt;

use crate::conditions::reasons;
use crate::names::STORE_SUSPENSION_ANNOTATION;
use crate::{Instance, Organization};

/// Why runs are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Suspension {
    /// The store withdrew the Instance's order: why (the annotation's value).
    ByStore(String),
    /// The Organization `name` is suspended.
    Organization(String),
    /// The object's own `spec.suspended` is true.
    BySpec,
}

impl Suspension {
    /// The condition reason that names it.
    pub fn reason(&self) -> &'static str {
        match self {
            Suspension::ByStore(_) => reasons::SUSPENDED_BY_STORE,
            Suspension::Organization(_) => reasons::ORGANIZATION_SUSPENDED,
            Suspension::BySpec => reasons::SUSPENDED_BY_SPEC,
        }
    }

    /// What it means for the Instance (or Organization) `what`, and who lifts it.
    pub fn message(&self, what: &str) -> String {
        match self {
            Suspension::ByStore(why) => format!(
                "{what} is suspended by the store ({why}): the gateway refuses its runs, and only the store's provisioner can lift the suspension"
            ),
            Suspension::Organization(org) => {
                format!("Organization {org} is suspended: the gateway refuses runs; its owner must lift the suspension")
            }
            Suspension::BySpec => {
                format!(
                    "{what} is suspended (spec.suspended is true): the gateway refuses its runs; its owner must lift the suspension"
                )
            }
        }
    }
}

/// The store's suspension of `instance`, if its order was withdrawn.
pub fn by_store(instance: &Instance) -> Option<&str> {
    instance.annotations().get(STORE_SUSPENSION_ANNOTATION).map(String::as_str)
}

/// Why runs of `organization`'s Instances are refused, if they are.
pub fn of_organization(organization: &Organization) -> Option<Suspension> {
    organization.spec.suspended.then(|| Suspension::Organization(organization.name_any()))
}

/// Why runs of `instance` (of `organization`, when known) are refused, if they are.
pub fn of_instance(instance: &Instance, organization: Option<&Organization>) -> Option<Suspension> {
    if let Some(why) = by_store(instance) {
        let why = if why.trim().is_empty() { "its order was withdrawn" } else { why };
        return Some(Suspension::ByStore(why.to_string()));
    }
    organization.and_then(of_organization).or_else(|| instance.spec.suspended.then_some(Suspension::BySpec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InstanceSpec, OrganizationSpec};

    fn instance(suspended: bool, store: Option<&str>) -> Instance {
        let spec = InstanceSpec {
            project: "default".into(),
            offering: "echo".into(),
            version: "1".into(),
            plan: "pro".into(),
            suspended,
            api_keys: Vec::new(),
            connectors: Vec::new(),
            config: Default::default(),
            deletion_policy: Default::default(),
        };
        let mut instance = Instance::new("agent", spec);
        if let Some(why) = store {
            instance.annotations_mut().insert(STORE_SUSPENSION_ANNOTATION.into(), why.into());
        }
        instance
    }

    fn organization(suspended: bool) -> Organization {
        Organization::new("acme", OrganizationSpec { suspended, ..OrganizationSpec::default() })
    }

    #[test]
    fn the_stores_suspension_wins_and_the_buyers_own_flag_cannot_lift_it() {
        let store = of_instance(&instance(false, Some("order #7 cancelled")), Some(&organization(false)));
        assert_eq!(store, Some(Suspension::ByStore("order #7 cancelled".into())));
        let both = of_instance(&instance(true, Some("order #7 refunded in full")), Some(&organization(true)));
        assert_eq!(both.as_ref().map(Suspension::reason), Some(reasons::SUSPENDED_BY_STORE));
        assert!(both.is_some_and(|s| s.message("Instance cmp-acme/agent").contains("only the store")));
        let blank = of_instance(&instance(false, Some(" ")), None);
        assert_eq!(blank, Some(Suspension::ByStore("its order was withdrawn".into())));
    }

    #[test]
    fn an_organizations_suspension_then_the_instances_own() {
        assert_eq!(
            of_instance(&instance(true, None), Some(&organization(true))),
            Some(Suspension::Organization("acme".into()))
        );
        assert_eq!(of_instance(&instance(true, None), Some(&organization(false))), Some(Suspension::BySpec));
        assert_eq!(of_instance(&instance(true, None), None), Some(Suspension::BySpec));
        assert_eq!(of_instance(&instance(false, None), Some(&organization(false))), None);
        assert_eq!(of_organization(&organization(false)), None);
    }
}
