//! `Organization`: a tenant and billing owner (cluster-scoped).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{DeletionPolicy, conditions_schema, is_false};

/// The desired state of an Organization.
#[allow(clippy::duplicated_attributes)] // kube printcolumn(...) attributes repeat type_ legitimately
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "cmp.gsv.dev",
    version = "v1alpha1",
    kind = "Organization",
    plural = "organizations",
    shortname = "org",
    category = "cmp",
    status = "OrganizationStatus",
    derive = "PartialEq",
    doc = "A tenant of CMP and the owner of its bill. The operator gives it a control namespace `cmp-<name>` (holding its Projects, Instances and Wallet), a Wallet with starter credits, and RBAC for its owners and members.",
    printcolumn(name = "Display Name", type_ = "string", json_path = ".spec.displayName"),
    printcolumn(name = "Namespace", type_ = "string", json_path = ".status.namespace"),
    printcolumn(name = "Projects", type_ = "integer", json_path = ".status.projectCount"),
    printcolumn(name = "Suspended", type_ = "string", json_path = ".status.conditions[?(@.type==\"Suspended\")].status"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Wallet", type_ = "string", json_path = ".status.wallet", priority = 1),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    validation = Rule::new("self.metadata.name.size() <= 59 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS label of at most 59 characters (lower-case letters, digits and '-'), because it becomes the namespace name cmp-<name>")
)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationSpec {
    /// The name people see, for example "Acme Corp".
    #[x_kube(validation = Rule::new("self.size() > 0").message("spec.displayName must not be empty"))]
    #[schemars(length(max = 200))]
    pub display_name: String,

    /// Where invoices and low-balance notices go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[^@\\\\s]+@[^@\\\\s]+$')").message("spec.billingEmail must be an e-mail address such as billing@example.com"))]
    pub billing_email: Option<String>,

    /// Owners of the organization. Owners always get the admin role in the control namespace and every runtime namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["kind", "name"]))]
    pub owners: Vec<Subject>,

    /// Other people and groups with access, each with a role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["kind", "name"]))]
    pub members: Vec<Member>,

    /// Credits granted once, as grant `starter`, when the organization's Wallet is first created. Unset: the operator's configured default. 0: no starter grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("spec.starterCredits must be a whole number of credits, 0 or more"))]
    pub starter_credits: Option<i64>,

    /// Suspends every Project and Instance of the organization: the gateway refuses their runs until this is false again.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspended: bool,

    /// What happens to the control namespace, the Wallet and the RBAC when the Organization is deleted: `Delete` (default) or `Retain`.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Whether a subject is a single user or a group, as the OIDC identity provider names them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum SubjectKind {
    /// A single user (the OIDC `sub` or user name the API server sees).
    #[default]
    User,
    /// A group (an OIDC groups claim the API server sees).
    Group,
}

/// A user or group of the identity provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    /// `User` (default) or `Group`.
    #[serde(default)]
    pub kind: SubjectKind,
    /// The user or group name, as the Kubernetes API server authenticates it.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What a member may do.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum Role {
    /// Everything a developer can do, plus managing the organization's members and projects.
    Admin,
    /// Manage Projects and Instances; read Wallets.
    Developer,
    /// Read Wallets and Instances.
    #[default]
    Viewer,
}

/// A member of the organization.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// `User` (default) or `Group`.
    #[serde(default)]
    pub kind: SubjectKind,
    /// The user or group name, as the Kubernetes API server authenticates it.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `Admin`, `Developer` or `Viewer` (default).
    #[serde(default)]
    pub role: Role,
}

/// The observed state of an Organization.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The control namespace (`cmp-<name>`) that holds the organization's Projects, Instances and Wallet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The name of the organization's Wallet, in the control namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet: Option<String>,
    /// The names of the organization's Projects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    /// The value of the `cmp.gsv.dev/reconcile-requested-at` annotation the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// True once the starter grant was appended to the Wallet (it is appended at most once, ever).
    #[serde(default)]
    pub starter_granted: bool,
    /// How many Projects the organization has.
    #[serde(default)]
    pub project_count: i64,
    /// `Ready` (everything is in place) and `NamespaceReady` (the control namespace exists), among others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}
