//! Whether an Instance may run now: the one rule every route that admits a
//! run reads (the run API, and a run's tool calls), beside the suspension
//! rule it builds on ([`crate::suspension`]).
//!
//! An Instance runs when its Organization is known, nothing suspends it,
//! it is not being deleted, and its status says it serves (`Ready=True`,
//! with an endpoint and a flow id).

use kube::ResourceExt;

use crate::conditions::{READY, TRUE, find};
use crate::suspension::{self, Suspension};
use crate::{Instance, Organization};

/// Why an Instance may not run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotRunnable {
    /// Suspended (403): who suspended it says who lifts it.
    Suspended(Suspension),
    /// Not serving now (503): why, in a sentence that says what to wait for.
    NotReady(String),
}

impl NotRunnable {
    /// What a caller is told.
    pub fn message(&self, instance: &Instance) -> String {
        match self {
            NotRunnable::Suspended(suspension) => suspension.message(&format!("Instance {}", instance.name_any())),
            NotRunnable::NotReady(why) => why.clone(),
        }
    }
}

/// Where a runnable Instance's runtime serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    /// The runtime's base URL.
    pub endpoint: String,
    /// The flow the runtime serves for the Instance.
    pub flow_id: String,
}

/// Whether `instance` (of `organization`, when found) may run now, and where.
pub fn check(instance: &Instance, organization: Option<&Organization>) -> Result<Serving, NotRunnable> {
    let name = instance.name_any();
    let Some(organization) = organization else {
        let org = crate::names::organization_of_control_namespace(&instance.namespace().unwrap_or_default())
            .unwrap_or_default()
            .to_string();
        return Err(NotRunnable::NotReady(format!("Organization {org} was not found")));
    };
    if let Some(suspension) = suspension::of_instance(instance, Some(organization)) {
        return Err(NotRunnable::Suspended(suspension));
    }
    if instance.metadata.deletion_timestamp.is_some() {
        return Err(NotRunnable::NotReady(format!("Instance {name} is being deleted")));
    }
    let Some(status) = instance.status.as_ref() else {
        return Err(NotRunnable::NotReady(format!(
            "Instance {name}'s runtime is not ready (not reported yet); try again shortly"
        )));
    };
    let ready = find(&status.conditions, READY);
    if ready.is_none_or(|c| c.status != TRUE) {
        let why = ready.map_or_else(|| "not reported yet".to_string(), |c| format!("{}: {}", c.reason, c.message));
        return Err(NotRunnable::NotReady(format!(
            "Instance {name}'s runtime is not ready ({why}); try again shortly"
        )));
    }
    match (status.endpoint.clone(), status.flow_id.clone()) {
        (Some(endpoint), Some(flow_id)) => Ok(Serving { endpoint, flow_id }),
        _ => Err(NotRunnable::NotReady(format!("Instance {name} has no runtime endpoint yet; try again shortly"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn instance(status: serde_json::Value) -> Instance {
        serde_json::from_value(json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
            "metadata": {"name": "bot", "namespace": "cmp-acme"},
            "spec": {"project": "p", "offering": "o", "version": "1", "plan": "free"},
            "status": status
        }))
        .expect("an Instance")
    }

    fn organization() -> Organization {
        serde_json::from_value(json!({"apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Organization",
            "metadata": {"name": "acme"}, "spec": {"displayName": "Acme"}}))
        .expect("an Organization")
    }

    fn ready(endpoint: Option<&str>) -> serde_json::Value {
        json!({"endpoint": endpoint, "flowId": "f", "conditions": [{"type": "Ready", "status": "True",
            "reason": "RuntimeReady", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
    }

    #[test]
    fn an_instance_runs_only_when_its_status_says_it_serves() {
        let org = organization();
        let serving = check(&instance(ready(Some("http://rt"))), Some(&org));
        assert_eq!(serving, Ok(Serving { endpoint: "http://rt".into(), flow_id: "f".into() }));
        let not_ready = |i: &Instance, o: Option<&Organization>| match check(i, o) {
            Err(NotRunnable::NotReady(why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(not_ready(&instance(ready(Some("http://rt"))), None).contains("Organization acme was not found"));
        assert!(not_ready(&instance(ready(None)), Some(&org)).contains("no runtime endpoint"));
        assert!(not_ready(&instance(json!({})), Some(&org)).contains("not reported yet"));
        let mut deleted = instance(ready(Some("http://rt")));
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-01-01T00:00:00Z".parse().expect("a time")));
        assert!(not_ready(&deleted, Some(&org)).contains("being deleted"));
        let mut own = instance(ready(Some("http://rt")));
        own.spec.suspended = true;
        assert!(matches!(check(&own, Some(&org)), Err(NotRunnable::Suspended(Suspension::BySpec))));
    }
}
