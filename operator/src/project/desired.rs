//! What a Project should produce in its runtime namespace: pure functions of
//! the Project, its Organization and the operator's configuration.

use std::collections::BTreeMap;

use cmp_crds::names::runtime_namespace;
use cmp_crds::organization::OrganizationSpec;
use cmp_crds::project::{ProjectSpec, Protocol};
use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use crate::labels::{namespace_labels, owned_labels};
use crate::rbac;

/// Names of the objects in a runtime namespace.
pub mod names {
    /// The ResourceQuota.
    pub const QUOTA: &str = "cmp-quota";
    /// The LimitRange.
    pub const LIMITS: &str = "cmp-limits";
    /// The default-deny NetworkPolicy.
    pub const DENY_ALL: &str = "cmp-default-deny";
    /// The NetworkPolicy allowing ingress from the gateway and the namespace itself.
    pub const ALLOW_INGRESS: &str = "cmp-allow-ingress";
    /// The NetworkPolicy allowing egress to DNS and the spec's destinations.
    pub const ALLOW_EGRESS: &str = "cmp-allow-egress";
    /// The ServiceAccount of the agent runtimes.
    pub const RUNTIME_SA: &str = "cmp-runtime";
}

/// Where the project's network boundaries are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    /// The namespace of the gateway, the only outside source of ingress.
    pub gateway_namespace: String,
    /// The namespace of the cluster DNS.
    pub dns_namespace: String,
}

/// Everything the operator creates for a Project.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    /// The runtime namespace.
    pub namespace: Namespace,
    /// Its ResourceQuota.
    pub quota: ResourceQuota,
    /// Its LimitRange.
    pub limits: LimitRange,
    /// Default deny, allowed ingress, allowed egress.
    pub network_policies: Vec<NetworkPolicy>,
    /// The runtimes' ServiceAccount.
    pub service_account: ServiceAccount,
    /// Roles for the organization's people.
    pub roles: Vec<Role>,
    /// Their bindings.
    pub role_bindings: Vec<RoleBinding>,
}

fn meta(name: &str, namespace: &str, organization: &str, project: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(owned_labels(organization, Some(project))),
        ..Default::default()
    }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect()
}

fn namespace_selector(namespace: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([("kubernetes.io/metadata.name".to_string(), namespace.to_string())])),
        ..Default::default()
    }
}

fn port(number: i32, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort { port: Some(IntOrString::Int(number)), protocol: Some(protocol.to_string()), end_port: None }
}

fn egress_rules(spec: &ProjectSpec, network: &NetworkSettings) -> Vec<NetworkPolicyEgressRule> {
    let dns = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(namespace_selector(&network.dns_namespace)),
            ..Default::default()
        }]),
        ports: Some(vec![port(53, "UDP"), port(53, "TCP")]),
    };
    let allowed = spec.network.egress.iter().map(|rule| NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock { cidr: rule.cidr.clone(), except: None }),
            ..Default::default()
        }]),
        ports: (!rule.ports.is_empty()).then(|| {
            rule.ports.iter().map(|p| port(p.port, if p.protocol == Protocol::Udp { "UDP" } else { "TCP" })).collect()
        }),
    });
    std::iter::once(dns).chain(allowed).collect()
}

fn network_policies(
    ns: &str,
    organization: &str,
    project: &str,
    spec: &ProjectSpec,
    network: &NetworkSettings,
) -> Vec<NetworkPolicy> {
    let everything = LabelSelector::default();
    let policy = |name: &str, spec: NetworkPolicySpec| NetworkPolicy {
        metadata: meta(name, ns, organization, project),
        spec: Some(spec),
    };
    vec![
        policy(
            names::DENY_ALL,
            NetworkPolicySpec {
                pod_selector: Some(everything.clone()),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ..Default::default()
            },
        ),
        policy(
            names::ALLOW_INGRESS,
            NetworkPolicySpec {
                pod_selector: Some(everything.clone()),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![
                        NetworkPolicyPeer {
                            namespace_selector: Some(namespace_selector(&network.gateway_namespace)),
                            ..Default::default()
                        },
                        NetworkPolicyPeer { pod_selector: Some(everything.clone()), ..Default::default() },
                    ]),
                    ports: None,
                }]),
                ..Default::default()
            },
        ),
        policy(
            names::ALLOW_EGRESS,
            NetworkPolicySpec {
                pod_selector: Some(everything),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(egress_rules(spec, network)),
                ..Default::default()
            },
        ),
    ]
}

/// The desired children of the Project `project` of `organization`.
pub fn children(
    organization: &str,
    org_spec: &OrganizationSpec,
    project: &str,
    spec: &ProjectSpec,
    network: &NetworkSettings,
) -> Children {
    let ns = runtime_namespace(organization, project);
    let mut ns_labels = namespace_labels(organization, Some(project));
    ns_labels.insert("pod-security.kubernetes.io/enforce".into(), "restricted".into());
    let q = &spec.quota;
    let container = [("cpu", q.container_cpu.as_str()), ("memory", q.container_memory.as_str())];
    Children {
        namespace: Namespace {
            metadata: ObjectMeta { name: Some(ns.clone()), labels: Some(ns_labels), ..Default::default() },
            ..Default::default()
        },
        quota: ResourceQuota {
            metadata: meta(names::QUOTA, &ns, organization, project),
            spec: Some(ResourceQuotaSpec {
                hard: Some(quantities(&[
                    ("limits.cpu", &q.cpu),
                    ("limits.memory", &q.memory),
                    ("requests.cpu", &q.cpu),
                    ("requests.memory", &q.memory),
                    ("pods", &q.pods.to_string()),
                ])),
                ..Default::default()
            }),
            status: None,
        },
        limits: LimitRange {
            metadata: meta(names::LIMITS, &ns, organization, project),
            spec: Some(LimitRangeSpec {
                limits: vec![LimitRangeItem {
                    type_: "Container".into(),
                    default: Some(quantities(&container)),
                    default_request: Some(quantities(&container)),
                    ..Default::default()
                }],
            }),
        },
        network_policies: network_policies(&ns, organization, project, spec, network),
        service_account: ServiceAccount {
            metadata: meta(names::RUNTIME_SA, &ns, organization, project),
            automount_service_account_token: Some(false),
            ..Default::default()
        },
        roles: rbac::ROLES.iter().map(|r| rbac::role(*r, &ns, organization, Some(project))).collect(),
        role_bindings: rbac::ROLES
            .iter()
            .map(|r| rbac::role_binding(org_spec, *r, &ns, organization, Some(project)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_crds::project::{EgressRule, Port, ProjectNetwork};

    fn settings() -> NetworkSettings {
        NetworkSettings { gateway_namespace: "cmp-system".into(), dns_namespace: "kube-system".into() }
    }

    fn spec_with_egress() -> ProjectSpec {
        ProjectSpec {
            network: ProjectNetwork {
                egress: vec![EgressRule {
                    name: "llm".into(),
                    cidr: "203.0.113.0/24".into(),
                    ports: vec![Port { port: 443, protocol: Protocol::Tcp }],
                }],
            },
            ..Default::default()
        }
    }

    #[test]
    fn quota_and_limits_follow_the_spec_defaults() {
        let c = children("acme", &OrganizationSpec::default(), "support", &ProjectSpec::default(), &settings());
        assert_eq!(c.namespace.metadata.name.as_deref(), Some("cmp-acme-support"));
        let hard = c.quota.spec.and_then(|s| s.hard).expect("hard limits");
        assert_eq!(hard["limits.cpu"].0, "4");
        assert_eq!(hard["limits.memory"].0, "8Gi");
        assert_eq!(hard["pods"].0, "20");
        let item = &c.limits.spec.expect("limits").limits[0];
        assert_eq!(item.default.as_ref().expect("default")["cpu"].0, "500m");
    }

    #[test]
    fn network_is_default_deny_with_gateway_ingress_and_dns_egress() {
        let c = children("acme", &OrganizationSpec::default(), "support", &spec_with_egress(), &settings());
        let [deny, ingress, egress] = &c.network_policies[..] else { panic!("three policies") };
        let deny = deny.spec.as_ref().expect("spec");
        assert_eq!(deny.policy_types.as_deref(), Some(&["Ingress".to_string(), "Egress".to_string()][..]));
        assert!(deny.ingress.is_none() && deny.egress.is_none(), "deny-all allows nothing");

        let rules = ingress.spec.as_ref().and_then(|s| s.ingress.clone()).expect("ingress");
        let from = rules[0].from.clone().expect("from");
        let gateway = from[0].namespace_selector.as_ref().and_then(|s| s.match_labels.clone()).expect("selector");
        assert_eq!(gateway["kubernetes.io/metadata.name"], "cmp-system");
        assert!(from[1].pod_selector.is_some() && from[1].namespace_selector.is_none(), "same namespace");

        let rules = egress.spec.as_ref().and_then(|s| s.egress.clone()).expect("egress");
        assert_eq!(rules.len(), 2, "DNS plus one spec rule");
        assert_eq!(rules[0].ports.as_ref().map(Vec::len), Some(2), "DNS over UDP and TCP");
        let block = rules[1].to.as_ref().and_then(|t| t[0].ip_block.clone()).expect("ipBlock");
        assert_eq!(block.cidr, "203.0.113.0/24");
    }

    #[test]
    fn every_child_lives_in_the_runtime_namespace_with_tenant_labels() {
        let c = children("acme", &OrganizationSpec::default(), "support", &ProjectSpec::default(), &settings());
        let metas = [&c.quota.metadata, &c.limits.metadata, &c.service_account.metadata]
            .into_iter()
            .chain(c.network_policies.iter().map(|p| &p.metadata))
            .chain(c.roles.iter().map(|r| &r.metadata))
            .chain(c.role_bindings.iter().map(|r| &r.metadata));
        for m in metas {
            assert_eq!(m.namespace.as_deref(), Some("cmp-acme-support"));
            let labels = m.labels.as_ref().expect("labels");
            assert_eq!(labels["cmp.gsv.dev/project"], "support");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "cmp-operator");
        }
        assert_eq!(c.namespace.metadata.labels.expect("labels")["cmp.gsv.dev/tenant"], "runtime");
    }
}
