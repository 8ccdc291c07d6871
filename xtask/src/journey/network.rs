//! Reading NetworkPolicies as the API server stores them: does a namespace
//! admit ingress from pods of another namespace? No network runs here (no
//! kubelet, no CNI), so isolation is shown by what the policies say.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether the `policies` of a namespace let any of its pods take traffic
/// from pods of another namespace labelled `from`. A namespace whose pods
/// no policy isolates for ingress admits everything; an `ipBlock` peer is
/// counted as admitting (pod addresses may fall inside it).
pub fn admits_ingress_from(policies: &[NetworkPolicy], from: &BTreeMap<String, String>) -> bool {
    let ingress_policies: Vec<_> =
        policies.iter().filter_map(|p| p.spec.as_ref()).filter(|s| isolates_ingress(s)).collect();
    if ingress_policies.is_empty() {
        return true;
    }
    ingress_policies.iter().flat_map(|spec| spec.ingress.iter().flatten()).any(|rule| match &rule.from {
        None => true,
        Some(peers) if peers.is_empty() => true,
        Some(peers) => peers.iter().any(|peer| peer_admits(peer, from)),
    })
}

/// A policy isolates its pods for ingress when it lists `Ingress` in its
/// types, or lists no types (then Ingress is implied).
fn isolates_ingress(spec: &k8s_openapi::api::networking::v1::NetworkPolicySpec) -> bool {
    spec.policy_types.as_ref().is_none_or(|types| types.iter().any(|t| t == "Ingress"))
}

/// A peer reaches into other namespaces only through a `namespaceSelector`
/// (a bare `podSelector` means pods of the policy's own namespace).
fn peer_admits(peer: &NetworkPolicyPeer, from: &BTreeMap<String, String>) -> bool {
    if peer.ip_block.is_some() {
        return true;
    }
    peer.namespace_selector.as_ref().is_some_and(|selector| selects(selector, from))
}

/// Whether `selector` selects an object labelled `labels` (an empty selector selects all).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector.match_labels.iter().flatten().all(|(key, value)| labels.get(key) == Some(value));
    let expressions_match = selector.match_expressions.iter().flatten().all(|expression| {
        let value = labels.get(&expression.key);
        let values = expression.values.as_deref().unwrap_or_default();
        match expression.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_match && expressions_match
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).expect("a NetworkPolicy")
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn tenant_policies() -> Vec<NetworkPolicy> {
        vec![
            policy(json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})),
            policy(json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [
                {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cmp-system"}}}]},
                {"from": [{"podSelector": {}}]}]})),
        ]
    }

    #[test]
    fn a_tenant_namespace_admits_the_gateway_and_not_another_tenant() {
        let other = labels(&[("kubernetes.io/metadata.name", "cmp-a-default"), ("cmp.gsv.dev/tenant", "runtime")]);
        assert!(!admits_ingress_from(&tenant_policies(), &other));
        assert!(admits_ingress_from(&tenant_policies(), &labels(&[("kubernetes.io/metadata.name", "cmp-system")])));
    }

    #[test]
    fn no_isolating_policy_admits_everything_and_open_rules_admit_too() {
        let other = labels(&[("kubernetes.io/metadata.name", "x")]);
        assert!(admits_ingress_from(&[], &other));
        let egress_only = policy(json!({"podSelector": {}, "policyTypes": ["Egress"]}));
        assert!(admits_ingress_from(&[egress_only], &other));
        let open = policy(json!({"podSelector": {}, "ingress": [{}]}));
        assert!(admits_ingress_from(&[open], &other));
        let any_namespace = policy(json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}));
        assert!(admits_ingress_from(&[any_namespace], &other));
        let cidr = policy(json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}));
        assert!(admits_ingress_from(&[cidr], &other));
    }

    #[test]
    fn selector_expressions_are_read_as_the_api_server_reads_them() {
        let tenant = labels(&[("tier", "runtime")]);
        let expr = |op: &str, values: &[&str]| -> LabelSelector {
            serde_json::from_value(json!({"matchExpressions": [{"key": "tier", "operator": op, "values": values}]}))
                .expect("a selector")
        };
        assert!(selects(&expr("In", &["runtime"]), &tenant));
        assert!(!selects(&expr("NotIn", &["runtime"]), &tenant));
        assert!(selects(&expr("Exists", &[]), &tenant));
        assert!(!selects(&expr("DoesNotExist", &[]), &tenant));
        assert!(!selects(&expr("Unknown", &[]), &tenant));
    }
}
