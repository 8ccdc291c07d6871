//! Labels and annotations the operator reads and writes.

use std::collections::BTreeMap;

use cmp_crds::names::{MANAGED_BY_LABEL, OPERATOR_MANAGER, ORGANIZATION_LABEL, PROJECT_LABEL, TENANT_LABEL};

/// `cmp.gsv.dev/paused: "true"` stops reconciling an object (deletion still proceeds).
pub const PAUSED_ANNOTATION: &str = "cmp.gsv.dev/paused";
/// Any new value of `cmp.gsv.dev/reconcile-requested-at` triggers a reconcile;
/// the handled value is copied to `status.lastHandledReconcileAt`.
pub const RECONCILE_REQUESTED_ANNOTATION: &str = "cmp.gsv.dev/reconcile-requested-at";
/// `cmp.gsv.dev/abandon-cleanup: "true"` on an object being deleted removes
/// its finalizer without deleting what the operator created.
pub const ABANDON_CLEANUP_ANNOTATION: &str = "cmp.gsv.dev/abandon-cleanup";
/// The finalizer on Organizations and Projects.
pub const FINALIZER: &str = "cmp.gsv.dev/cleanup";

/// Value of the tenant label on an organization's control namespace.
pub const TENANT_CONTROL: &str = "control";
/// Value of the tenant label on a project's runtime namespace.
pub const TENANT_RUNTIME: &str = "runtime";

/// The label selector that finds every object the operator manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={OPERATOR_MANAGER}")
}

/// Labels of an object that belongs to an organization (and maybe a project).
pub fn owned_labels(organization: &str, project: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), OPERATOR_MANAGER.to_string()),
        (ORGANIZATION_LABEL.to_string(), organization.to_string()),
    ]);
    if let Some(project) = project {
        labels.insert(PROJECT_LABEL.to_string(), project.to_string());
    }
    labels
}

/// Labels of a tenant namespace: the owned labels plus the tenant label.
pub fn namespace_labels(organization: &str, project: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = owned_labels(organization, project);
    let tenant = if project.is_some() { TENANT_RUNTIME } else { TENANT_CONTROL };
    labels.insert(TENANT_LABEL.to_string(), tenant.to_string());
    labels
}

/// True when the annotation is set to "true".
pub fn flag(annotations: Option<&BTreeMap<String, String>>, key: &str) -> bool {
    annotations.and_then(|a| a.get(key)).is_some_and(|v| v == "true")
}

/// The value of an annotation.
pub fn annotation<'a>(annotations: Option<&'a BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    annotations.and_then(|a| a.get(key)).map(String::as_str)
}
