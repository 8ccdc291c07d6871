//! What a Project should produce in its runtime namespace, and its status:
//! pure functions of the Project, its Organization (from the cache), the
//! settings and `now`.

use std::collections::BTreeMap;
use std::time::Duration;

use cmp_crds::conditions::{self, NewCondition, reasons, set_condition};
use cmp_crds::names::{namespace_labels, owned_labels, runtime_namespace};
use cmp_crds::organization::OrganizationSpec;
use cmp_crds::project::{ProjectSpec, Protocol};
use cmp_crds::{Organization, Project, ProjectStatus};
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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::gitops::argocd::{ProjectApps, project_apps};
use crate::rbac;
use crate::settings::{NetworkSettings, Settings};
use crate::shell::{self, Desired};

/// How often a converged Project is looked at again. Watches repair drift
/// within seconds; this is only a safety net.
pub const RESYNC: Duration = Duration::from_secs(3600);
/// How soon to look again while the runtime namespace is being deleted.
pub const TERMINATING_RECHECK: Duration = Duration::from_secs(5);

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
    /// The NetworkPolicy allowing egress to DNS, the gateway's connector route and the spec's destinations.
    pub const ALLOW_EGRESS: &str = "cmp-allow-egress";
    /// The ServiceAccount of the agent runtimes.
    pub const RUNTIME_SA: &str = "cmp-runtime";
}

/// What the Project pipeline reads from the caches.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The Project's Organization.
    pub organization: Organization,
    /// The runtime namespace exists and is being deleted.
    pub namespace_terminating: bool,
    /// How many Instances name the Project.
    pub instance_count: i64,
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
    /// Argo CD's AppProject and Application for the Project's tree, when Argo CD is configured.
    pub argocd: Option<ProjectApps>,
    /// The Vault policy and Kubernetes-auth role by which earlier releases let the runtime read its connector
    /// secrets, to delete when Vault is configured: only the gateway reads them now.
    pub retired_runtime_access: Option<String>,
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
    // Runtimes call tools only through the gateway's connector route (it holds the credentials).
    let gateway = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(namespace_selector(&network.gateway_namespace)),
            pod_selector: Some(LabelSelector {
                match_labels: Some(
                    [("app.kubernetes.io/component".to_string(), "gateway".to_string())].into_iter().collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(vec![port(network.gateway_port, "TCP")]),
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
    // Dedicated runtimes fetch their flow from the artifact store the platform names.
    let artifacts = network.artifact_egress.iter().map(|store| NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock { cidr: store.cidr.to_string(), except: None }),
            ..Default::default()
        }]),
        ports: Some(vec![port(i32::from(store.port), "TCP")]),
    });
    [dns, gateway].into_iter().chain(artifacts).chain(allowed).collect()
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
        argocd: None,
        retired_runtime_access: None,
    }
}

/// The `Suspended` condition of a Project: its Organization's.
fn suspended(org: &Organization) -> NewCondition<'static> {
    match cmp_crds::suspension::of_organization(org) {
        Some(suspension) => NewCondition::new(conditions::SUSPENDED, true, suspension.reason(), suspension.message("")),
        None => {
            let message = format!("Organization {} is active", org.name_any());
            NewCondition::new(conditions::SUSPENDED, false, reasons::ORGANIZATION_ACTIVE, message)
        }
    }
}

/// The children and the status of `project`, given what was observed.
pub fn desired(
    project: &Project,
    observed: &Observed,
    settings: &Settings,
    now: Timestamp,
) -> Desired<Children, ProjectStatus> {
    let now = Time(now);
    let generation = project.meta().generation;
    let mut status = project.status.clone().unwrap_or_default();
    let steering = shell::steer(project, &mut status.conditions, &now);
    if steering.paused {
        return Desired::paused(status);
    }
    let set = |status: &mut ProjectStatus, c: NewCondition<'static>| {
        set_condition(&mut status.conditions, c, generation, now.clone())
    };
    let org = &observed.organization;
    let (org_name, name) = (org.name_any(), project.name_any());
    let runtime_ns = runtime_namespace(&org_name, &name);
    status.observed_generation = generation;
    status.runtime_namespace = Some(runtime_ns.clone());
    status.instance_count = observed.instance_count;
    status.last_handled_reconcile_at = steering.reconcile_requested_at;
    set(&mut status, suspended(org));
    if observed.namespace_terminating {
        let message = format!("namespace {runtime_ns} is being deleted; it is recreated once it is gone");
        for type_ in [conditions::ISOLATION_READY, conditions::READY] {
            set(&mut status, NewCondition::new(type_, false, reasons::NAMESPACE_TERMINATING, message.clone()));
        }
        return Desired { children: None, status, requeue: Some(TERMINATING_RECHECK) };
    }
    let isolation = format!("quota, limits, default-deny network policies and RBAC are in place in {runtime_ns}");
    set(&mut status, NewCondition::new(conditions::ISOLATION_READY, true, reasons::ISOLATION_APPLIED, isolation));
    let ready = format!("runtime namespace {runtime_ns} is ready");
    set(&mut status, NewCondition::new(conditions::READY, true, reasons::RECONCILED, ready));
    let mut children = children(&org_name, &org.spec, &name, &project.spec, &settings.network);
    children.argocd = settings.gitops.as_ref().and_then(|gitops| {
        let argocd = gitops.argocd.as_ref()?;
        Some(project_apps(
            &argocd.namespace,
            &argocd.repo_url,
            &gitops.branch,
            &gitops.render.root,
            &org_name,
            &name,
            &runtime_ns,
        ))
    });
    children.retired_runtime_access =
        settings.vault.as_ref().map(|_| cmp_crds::names::connector_role(&org_name, &name));
    Desired { children: Some(children), status, requeue: Some(RESYNC) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_crds::project::{EgressRule, Port, ProjectNetwork};

    fn settings() -> NetworkSettings {
        NetworkSettings {
            gateway_namespace: "cmp-system".into(),
            dns_namespace: "kube-system".into(),
            gateway_port: 8080,
            artifact_egress: Vec::new(),
        }
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
        assert_eq!(rules.len(), 3, "DNS, the gateway's connector route, and one spec rule");
        assert_eq!(rules[0].ports.as_ref().map(Vec::len), Some(2), "DNS over UDP and TCP");
        let to_gateway = rules[1].to.clone().expect("to");
        let gateway_ns = to_gateway[0].namespace_selector.as_ref().and_then(|s| s.match_labels.clone()).expect("ns");
        assert_eq!(gateway_ns["kubernetes.io/metadata.name"], "cmp-system");
        let pods = to_gateway[0].pod_selector.as_ref().and_then(|s| s.match_labels.clone()).expect("pods");
        assert_eq!(pods["app.kubernetes.io/component"], "gateway", "the gateway's pods only, not the namespace");
        assert_eq!(rules[1].ports.as_ref().and_then(|p| p[0].port.clone()), Some(IntOrString::Int(8080)));
        let block = rules[2].to.as_ref().and_then(|t| t[0].ip_block.clone()).expect("ipBlock");
        assert_eq!(block.cidr, "203.0.113.0/24");
    }

    #[test]
    fn the_artifact_store_is_opened_on_its_port_only() {
        let network =
            NetworkSettings { artifact_egress: vec!["198.51.100.7/32:8443".parse().expect("CIDR:PORT")], ..settings() };
        let c = children("acme", &OrganizationSpec::default(), "support", &ProjectSpec::default(), &network);
        let rules = c.network_policies[2].spec.as_ref().and_then(|s| s.egress.clone()).expect("egress");
        assert_eq!(rules.len(), 3, "DNS, the gateway, the artifact store");
        let block = rules[2].to.as_ref().and_then(|t| t[0].ip_block.clone()).expect("ipBlock");
        assert_eq!(block.cidr, "198.51.100.7/32");
        let ports = rules[2].ports.clone().expect("ports");
        assert_eq!((ports.len(), ports[0].port.clone()), (1, Some(IntOrString::Int(8443))));
        assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
    }

    #[test]
    fn artifact_egress_must_be_cidr_and_port() {
        use crate::settings::ArtifactEgress;
        let parsed: ArtifactEgress = "2001:db8::/64:443".parse().expect("IPv6 CIDR:PORT");
        assert_eq!((parsed.cidr.to_string(), parsed.port), ("2001:db8::/64".to_string(), 443));
        for (bad, says) in [
            ("203.0.113.10/32", "is not CIDR:PORT"),
            ("example.com:443", "is not a CIDR"),
            ("203.0.113.10/32:0", "is not a port"),
            ("203.0.113.10/32:https", "is not a port"),
        ] {
            let error = bad.parse::<ArtifactEgress>().expect_err(bad);
            assert!(error.contains(says) && error.contains("CIDR:PORT"), "{bad}: {error}");
        }
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

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    fn observed(suspended: bool) -> Observed {
        let mut organization = Organization::new("acme", OrganizationSpec::default());
        organization.spec.suspended = suspended;
        Observed { organization, namespace_terminating: false, instance_count: 2 }
    }

    fn project() -> Project {
        let mut p = Project::new("support", ProjectSpec::default());
        p.metadata.namespace = Some("cmp-acme".into());
        p.metadata.generation = Some(4);
        p
    }

    fn condition(status: &ProjectStatus, type_: &str) -> (String, String) {
        conditions::state(&status.conditions, type_).unwrap_or_else(|| panic!("{type_} is set"))
    }

    #[test]
    fn a_project_gets_its_isolation_and_a_ready_status() {
        let d = desired(&project(), &observed(false), &Settings::default(), at(10));
        assert!(d.children.is_some());
        let s = d.status;
        assert_eq!(s.runtime_namespace.as_deref(), Some("cmp-acme-support"));
        assert_eq!((s.instance_count, s.observed_generation), (2, Some(4)));
        assert_eq!(condition(&s, "Ready"), ("True".into(), "Reconciled".into()));
        assert_eq!(condition(&s, "IsolationReady"), ("True".into(), "IsolationApplied".into()));
        assert_eq!(condition(&s, "Suspended"), ("False".into(), "OrganizationActive".into()));
        assert_eq!(d.requeue, Some(RESYNC));
    }

    #[test]
    fn a_project_of_a_suspended_organization_is_suspended() {
        let s = desired(&project(), &observed(true), &Settings::default(), at(10)).status;
        assert_eq!(condition(&s, "Suspended"), ("True".into(), "OrganizationSuspended".into()));
    }

    #[test]
    fn a_paused_project_writes_only_the_paused_condition() {
        let mut p = project();
        p.metadata.annotations = Some([("cmp.gsv.dev/paused".to_string(), "true".to_string())].into());
        let d = desired(&p, &observed(false), &Settings::default(), at(10));
        assert!(d.children.is_none() && d.requeue.is_none());
        assert_eq!(condition(&d.status, "Paused"), ("True".into(), "PausedByAnnotation".into()));
        assert!(conditions::find(&d.status.conditions, "Ready").is_none());
    }

    #[test]
    fn a_terminating_runtime_namespace_is_reported() {
        let mut o = observed(false);
        o.namespace_terminating = true;
        let d = desired(&project(), &o, &Settings::default(), at(10));
        assert!(d.children.is_none());
        assert_eq!(condition(&d.status, "IsolationReady"), ("False".into(), "NamespaceTerminating".into()));
        assert_eq!(condition(&d.status, "Ready"), ("False".into(), "NamespaceTerminating".into()));
        assert_eq!(d.requeue, Some(TERMINATING_RECHECK));
    }
}
