//! What an Organization should produce: pure functions of the CR.

use cmp_crds::Organization;
use cmp_crds::names::control_namespace;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use kube::api::ObjectMeta;
use serde_json::{Value, json};

use crate::labels::{namespace_labels, owned_labels};
use crate::rbac;

/// The id of the starter grant.
pub const STARTER_GRANT_ID: &str = "starter";

/// Everything the operator creates for an Organization.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    /// The control namespace `cmp-<org>`.
    pub namespace: Namespace,
    /// The Wallet, without grants (see [`starter_grant`]).
    pub wallet: Value,
    /// The admin, developer and viewer Roles.
    pub roles: Vec<Role>,
    /// Their RoleBindings.
    pub role_bindings: Vec<RoleBinding>,
}

/// The Wallet's name: the organization's name.
pub fn wallet_name(org: &Organization) -> String {
    org.name_any()
}

/// The desired children of `org`.
pub fn children(org: &Organization) -> Children {
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
        wallet: json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1",
            "kind": "Wallet",
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
            "apiVersion": "cmp.gsv.dev/v1alpha1",
            "kind": "Wallet",
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
        let c = children(&org(None));
        assert_eq!(c.namespace.metadata.name.as_deref(), Some("cmp-acme"));
        let labels = c.namespace.metadata.labels.expect("labels");
        assert_eq!(labels.get(TENANT_LABEL).map(String::as_str), Some("control"));
        assert_eq!(labels.get("cmp.gsv.dev/organization").map(String::as_str), Some("acme"));
    }

    #[test]
    fn the_wallet_is_applied_without_grants() {
        let c = children(&org(Some(5)));
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
        let c = children(&org(None));
        let names: Vec<_> = c.roles.iter().filter_map(|r| r.metadata.name.clone()).collect();
        assert_eq!(names, ["cmp-admin", "cmp-developer", "cmp-viewer"]);
        assert!(c.role_bindings.iter().all(|b| b.metadata.namespace.as_deref() == Some("cmp-acme")));
    }
}
