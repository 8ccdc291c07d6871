//! `Offering`: a catalog item (cluster-scoped): versions of a flow and the plans it is sold under.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{conditions_schema, is_false};

/// The desired state of an Offering.
#[allow(clippy::duplicated_attributes)] // kube printcolumn(...) attributes repeat type_ legitimately
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cmp.gsv.dev",
    version = "v1alpha1",
    kind = "Offering",
    plural = "offerings",
    shortname = "offer",
    category = "cmp",
    status = "OfferingStatus",
    derive = "PartialEq",
    doc = "An agent sold in the catalog: the runtime it needs, its versions (flow artifacts pinned by sha256) and its plans (price per run, included credits, rate limit, timeout, Saleor SKU). Instances subscribe a Project to one version and one plan.",
    printcolumn(name = "Display Name", type_ = "string", json_path = ".spec.displayName"),
    printcolumn(name = "Publisher", type_ = "string", json_path = ".spec.publisher"),
    printcolumn(name = "Runtime API", type_ = "string", json_path = ".spec.runtime.api"),
    printcolumn(name = "Latest", type_ = "string", json_path = ".status.latestVersion"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.runtime.image", priority = 1)
)]
#[serde(rename_all = "camelCase")]
pub struct OfferingSpec {
    /// The name buyers see, for example "Support Assistant".
    #[x_kube(validation = Rule::new("self.size() > 0").message("spec.displayName must not be empty"))]
    #[schemars(length(max = 200))]
    pub display_name: String,

    /// What the agent does, shown in the catalog.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 10000))]
    pub description: String,

    /// Who publishes the agent, for example "Digitlify".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 200))]
    pub publisher: String,

    /// The runtime that executes the agent's flow.
    pub runtime: Runtime,

    /// The published versions of the flow. Names are unique.
    #[x_kube(validation = Rule::new("self.size() > 0").message("spec.versions must list at least one version"))]
    #[schemars(length(max = 100), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub versions: Vec<OfferingVersion>,

    /// The plans the agent is sold under. Plan ids are unique.
    #[x_kube(validation = Rule::new("self.size() > 0").message("spec.plans must list at least one plan"))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.id == p.id))").message("spec.plans: plan ids must be unique; two plans share an id"))]
    #[x_kube(validation = Rule::new("self.all(p, !has(p.saleorSku) || self.exists_one(q, has(q.saleorSku) && q.saleorSku == p.saleorSku))").message("spec.plans: each saleorSku may map to one plan only"))]
    #[schemars(length(max = 50), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"]))]
    pub plans: Vec<Plan>,

    /// Free runs for anonymous widget sessions (a try-before-you-buy allowance). Unset: no demo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo: Option<DemoAllowance>,
}

/// The runtime an Offering runs on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Runtime {
    /// The runtime engine. Only `Langflow` today.
    #[serde(default)]
    pub engine: Engine,
    /// Which run API the runtime serves: `v1` (`POST /api/v1/run/{flow}`, full Langflow) or `v2` (`POST /api/v2/workflows`, Langflow and lfx).
    #[serde(default)]
    pub api: RuntimeApi,
    /// The container image of the runtime, for example "langflowai/langflow:1.5.0".
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// The port the runtime listens on.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

fn default_port() -> i32 {
    7860
}

/// A runtime engine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Engine {
    /// Langflow (or its lightweight executor, lfx).
    #[default]
    Langflow,
}

/// A runtime's run API flavour.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RuntimeApi {
    /// `POST /api/v1/run/{flow_id}` (full Langflow).
    #[serde(rename = "v1")]
    V1,
    /// `POST /api/v2/workflows` (Langflow with the developer API, and lfx).
    #[default]
    #[serde(rename = "v2")]
    V2,
}

/// One published version of an Offering's flow.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OfferingVersion {
    /// The version name, for example "1.2.0". Unique in the list.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9][-A-Za-z0-9_.]*$')").message("spec.versions[].name must start with a letter or digit and hold only letters, digits, '-', '_' and '.'"))]
    pub name: String,
    /// Where the flow artifact is, pinned by its sha256.
    pub artifact: Artifact,
    /// The id of the flow inside the artifact, as the runtime's run API names it.
    #[schemars(length(min = 1, max = 253))]
    pub flow_id: String,
    /// A deprecated version is kept for the Instances that use it but cannot be chosen by new ones.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deprecated: bool,
}

/// A flow artifact.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Where to fetch the flow JSON (https://, oci:// or a path in the GitOps repository).
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^(https://|http://|oci://|git://|file://)')").message("spec.versions[].artifact.url must start with https://, http://, oci://, git:// or file://"))]
    pub url: String,
    /// The sha256 of the artifact, 64 lower-case hex characters.
    #[x_kube(validation = Rule::new("self.matches('^[a-f0-9]{64}$')").message("spec.versions[].artifact.sha256 must be 64 lower-case hex characters (the output of sha256sum)"))]
    #[schemars(length(max = 64))]
    pub sha256: String,
}

/// A plan an Offering is sold under.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The plan id, for example "starter". Unique in the list.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("spec.plans[].id must be a DNS label such as \"pro\""))]
    #[schemars(length(min = 1, max = 63))]
    pub id: String,
    /// The name buyers see, for example "Pro".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 200))]
    pub display_name: String,
    /// Credits debited per run.
    #[x_kube(validation = Rule::new("self >= 0").message("spec.plans[].creditsPerRun must be a whole number of credits, 0 or more"))]
    pub credits_per_run: i64,
    /// Credits granted to the buyer's Wallet when the plan is bought.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0").message("spec.plans[].includedCredits must be a whole number of credits, 0 or more"))]
    pub included_credits: i64,
    /// Runs allowed per minute and API key.
    #[serde(default = "default_rpm")]
    #[schemars(range(min = 1, max = 1000000))]
    pub requests_per_minute: i32,
    /// How long a run may take before the gateway answers 504.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i32,
    /// The Saleor product variant SKU that sells this plan; a paid order line with this SKU creates an Instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub saleor_sku: Option<String>,
}

fn default_rpm() -> i32 {
    60
}
fn default_timeout() -> i32 {
    60
}

/// Free runs for anonymous widget sessions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DemoAllowance {
    /// Free runs per anonymous session.
    #[schemars(range(min = 0, max = 1000))]
    pub runs_per_session: i32,
    /// Runs per minute across all anonymous sessions of the Offering.
    #[serde(default = "default_rpm")]
    #[schemars(range(min = 1, max = 1000000))]
    pub requests_per_minute: i32,
}

/// The observed state of an Offering.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OfferingStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The newest version that is not deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_version: Option<String>,
    /// How many Instances use the Offering.
    #[serde(default)]
    pub instance_count: i64,
    /// `Ready` (the Offering can be subscribed to), among others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}
