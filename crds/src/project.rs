//! `Project`: the isolation boundary, one runtime namespace (in the org's control namespace).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{DNS_LABEL_RULE, DeletionPolicy, conditions_schema};

/// The desired state of a Project.
#[allow(clippy::duplicated_attributes)] // kube printcolumn(...) attributes repeat type_ legitimately
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "cmp.gsv.dev",
    version = "v1alpha1",
    kind = "Project",
    plural = "projects",
    shortname = "proj",
    category = "cmp",
    namespaced,
    status = "ProjectStatus",
    derive = "PartialEq",
    doc = "An isolation boundary inside an Organization. Lives in the organization's control namespace `cmp-<org>`; the operator gives it a runtime namespace `cmp-<org>-<project>` with a ResourceQuota, a LimitRange, default-deny NetworkPolicies, a ServiceAccount for the agent runtimes and RoleBindings for the organization's members.",
    printcolumn(name = "Display Name", type_ = "string", json_path = ".spec.displayName"),
    printcolumn(name = "Runtime Namespace", type_ = "string", json_path = ".status.runtimeNamespace"),
    printcolumn(name = "Instances", type_ = "integer", json_path = ".status.instanceCount"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Max Instances", type_ = "integer", json_path = ".spec.quota.maxInstances", priority = 1),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS label (at most 63 lower-case letters, digits and '-'), because it becomes part of the runtime namespace name")
)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSpec {
    /// The name people see, for example "Support bots".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 200))]
    pub display_name: String,

    /// Compute limits of the runtime namespace (a ResourceQuota and a LimitRange). Every field has a default.
    #[serde(default)]
    pub quota: ProjectQuota,

    /// Network access of the runtime namespace. Everything is denied except ingress from the gateway and from inside the namespace, egress to DNS, and the egress listed here.
    #[serde(default)]
    pub network: ProjectNetwork,

    /// What happens to the runtime namespace when the Project is deleted: `Delete` (default) or `Retain`.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_cpu() -> String {
    "4".into()
}
fn default_memory() -> String {
    "8Gi".into()
}
fn default_pods() -> i32 {
    20
}
fn default_max_instances() -> i32 {
    10
}
fn default_container_cpu() -> String {
    "500m".into()
}
fn default_container_memory() -> String {
    "512Mi".into()
}

/// Compute limits of a runtime namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectQuota {
    /// Total CPU limit of all pods in the namespace (ResourceQuota `limits.cpu`), as a Kubernetes quantity such as "4" or "1500m".
    #[serde(default = "default_cpu")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("spec.quota.cpu must be a positive Kubernetes quantity such as \"4\" or \"1500m\""))]
    pub cpu: String,
    /// Total memory limit of all pods in the namespace (ResourceQuota `limits.memory`), as a quantity such as "8Gi".
    #[serde(default = "default_memory")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("spec.quota.memory must be a positive Kubernetes quantity such as \"8Gi\""))]
    pub memory: String,
    /// Maximum number of pods in the namespace.
    #[serde(default = "default_pods")]
    #[schemars(range(min = 1, max = 10000))]
    pub pods: i32,
    /// Maximum number of Instances in the Project.
    #[serde(default = "default_max_instances")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_instances: i32,
    /// CPU limit (and request) given to a container that sets none (LimitRange default), as a quantity such as "500m".
    #[serde(default = "default_container_cpu")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("spec.quota.containerCpu must be a positive Kubernetes quantity such as \"500m\""))]
    pub container_cpu: String,
    /// Memory limit (and request) given to a container that sets none (LimitRange default), as a quantity such as "512Mi".
    #[serde(default = "default_container_memory")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("spec.quota.containerMemory must be a positive Kubernetes quantity such as \"512Mi\""))]
    pub container_memory: String,
}

impl Default for ProjectQuota {
    fn default() -> Self {
        Self {
            cpu: default_cpu(),
            memory: default_memory(),
            pods: default_pods(),
            max_instances: default_max_instances(),
            container_cpu: default_container_cpu(),
            container_memory: default_container_memory(),
        }
    }
}

/// Network access of a runtime namespace, on top of the defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectNetwork {
    /// Extra destinations the runtimes may reach (for example an LLM API), each by CIDR and optional ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub egress: Vec<EgressRule>,
}

/// One allowed egress destination.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// A name for the rule, unique in the list, for example "openai".
    #[x_kube(validation = Rule::new(DNS_LABEL_RULE).message("spec.network.egress[].name must be a DNS label such as \"openai\""))]
    #[schemars(length(max = 63))]
    pub name: String,
    /// The destination network in CIDR notation, for example "203.0.113.0/24" or "0.0.0.0/0".
    #[x_kube(validation = Rule::new("isCIDR(self)").message("spec.network.egress[].cidr must be a CIDR such as 203.0.113.0/24"))]
    #[schemars(length(max = 64))]
    pub cidr: String,
    /// TCP ports allowed to that network; empty allows every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub ports: Vec<Port>,
}

/// A destination port.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// The port number.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// `TCP` (default) or `UDP`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A transport protocol.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Protocol {
    /// TCP.
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
}

/// The observed state of a Project.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The runtime namespace's real name: `cmp-<org>-<project>`, shortened with a hash suffix when longer than 63 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_namespace: Option<String>,
    /// The value of the `cmp.gsv.dev/reconcile-requested-at` annotation the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// How many Instances the Project has.
    #[serde(default)]
    pub instance_count: i64,
    /// `Ready` and `IsolationReady` (quota, limits, network policies and RBAC are in place), among others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// The Project an Organization that CMP creates for a buyer starts with (a paid order, a sign-up):
/// [`crate::names::DEFAULT_PROJECT`] in the Organization's control namespace, with the defaults.
pub fn default_project(organization: &str) -> Project {
    let mut project = Project::new(
        crate::names::DEFAULT_PROJECT,
        ProjectSpec { display_name: "Default".into(), ..Default::default() },
    );
    project.metadata.namespace = Some(crate::names::control_namespace(organization));
    project
}
