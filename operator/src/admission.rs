//! Admission: tenancy labels on namespaces are trusted by NetworkPolicies, so
//! only the operator (and the users it is told about) may set, change or
//! remove them. Enforced by a ValidatingAdmissionPolicy (CEL) that the API
//! server evaluates, so it holds whether or not the operator is running.

use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::apply::Applier;
use crate::error::{Error, Result};

/// The policy's (and its binding's) name.
pub const POLICY_NAME: &str = "cmp-tenancy-labels";
/// The labels the policy protects.
pub const PROTECTED_LABELS: [&str; 3] =
    [cmp_crds::names::TENANT_LABEL, cmp_crds::names::ORGANIZATION_LABEL, cmp_crds::names::PROJECT_LABEL];

/// The policy: on namespace create and update by anyone but `writers`,
/// every protected label must keep its old value (absent stays absent).
pub fn policy(writers: &[String]) -> Value {
    let keys = PROTECTED_LABELS.iter().map(|k| format!("'{k}'")).collect::<Vec<_>>().join(", ");
    let value_of = |obj: &str| {
        format!(
            "({obj} != null && has({obj}.metadata.labels) && k in {obj}.metadata.labels ? {obj}.metadata.labels[k] : '')"
        )
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY_NAME, "labels": {cmp_crds::names::MANAGED_BY_LABEL: cmp_crds::names::OPERATOR_MANAGER}},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"], "resources": ["namespaces"], "operations": ["CREATE", "UPDATE"]
            }]},
            "matchConditions": [{
                "name": "not-a-tenancy-label-writer",
                "expression": format!("!(request.userInfo.username in {})", serde_json::to_string(writers).unwrap_or_else(|_| "[]".into())),
            }],
            "validations": [{
                "expression": format!("[{keys}].all(k, {} == {})", value_of("object"), value_of("oldObject")),
                "messageExpression": format!(
                    "'the namespace labels {} are managed by the CMP operator: ' + request.userInfo.username + ' may not set, change or remove them'",
                    PROTECTED_LABELS.join(", ")
                ),
                "reason": "Forbidden",
            }],
        }
    })
}

/// The binding that enforces the policy on every namespace.
pub fn binding() -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY_NAME, "labels": {cmp_crds::names::MANAGED_BY_LABEL: cmp_crds::names::OPERATOR_MANAGER}},
        "spec": {"policyName": POLICY_NAME, "validationActions": ["Deny"]}
    })
}

/// The user name the API server knows this process by.
pub async fn own_username(client: &kube::Client) -> Result<String> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(Error::kube("asking the API server who the operator is (SelfSubjectReview)"))?;
    Ok(review.status.and_then(|s| s.user_info).and_then(|u| u.username).unwrap_or_default())
}

/// Installs the policy and its binding, allowing the operator's own user and `extra_writers`.
pub async fn install(applier: &Applier, extra_writers: &[String]) -> Result<Vec<String>> {
    let mut writers = vec![own_username(applier.client()).await?];
    writers.extend(extra_writers.iter().cloned());
    writers.sort();
    writers.dedup();
    let policies = Api::<ValidatingAdmissionPolicy>::all(applier.client().clone());
    applier.ensure_uncached(&policies, POLICY_NAME, &policy(&writers)).await?;
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(applier.client().clone());
    applier.ensure_uncached(&bindings, POLICY_NAME, &binding()).await?;
    Ok(writers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_are_excluded_by_match_condition() {
        let p = policy(&["system:serviceaccount:cmp-system:cmp-operator".into()]);
        let expr = p["spec"]["matchConditions"][0]["expression"].as_str().expect("expression");
        assert_eq!(expr, r#"!(request.userInfo.username in ["system:serviceaccount:cmp-system:cmp-operator"])"#);
    }

    #[test]
    fn every_protected_label_is_compared_old_to_new() {
        let p = policy(&[]);
        let expr = p["spec"]["validations"][0]["expression"].as_str().expect("expression");
        for label in PROTECTED_LABELS {
            assert!(expr.contains(label), "{label} is protected");
        }
        assert!(expr.contains("oldObject != null"), "creation (no old object) compares against absent labels");
    }
}
