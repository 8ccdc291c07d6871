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

    /// The tool connectors the flow uses, by type, each with the tools an Instance's binding of that type may allow. A binding of a type not listed here allows no tool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub connectors: Vec<OfferingConnector>,

    /// A knowledge base per Instance: buyers upload documents through the gateway, and the flow searches them
    /// with the tool `search_knowledge` of the connector binding `knowledge`. Unset: no knowledge base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knowledge: Option<KnowledgeAllowance>,
}

/// What an Instance's knowledge base may hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KnowledgeAllowance {
    /// Documents per Instance.
    #[serde(default = "default_max_documents")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_documents: i32,
    /// The largest document, in bytes.
    #[serde(default = "default_max_document_bytes")]
    #[schemars(range(min = 1, max = 16777216))]
    pub max_document_bytes: i64,
    /// The media types taken (UTF-8 text).
    #[serde(default = "default_document_types")]
    #[schemars(length(min = 1, max = 10), inner(regex(pattern = r"^text/(plain|markdown|csv|html)$")))]
    pub content_types: Vec<String>,
}

impl Default for KnowledgeAllowance {
    fn default() -> Self {
        Self {
            max_documents: default_max_documents(),
            max_document_bytes: default_max_document_bytes(),
            content_types: default_document_types(),
        }
    }
}

fn default_max_documents() -> i32 {
    100
}
fn default_max_document_bytes() -> i64 {
    1 << 20
}
fn default_document_types() -> Vec<String> {
    vec!["text/plain".into(), "text/markdown".into()]
}

/// A tool connector an Offering's flow uses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OfferingConnector {
    /// The connector type, matching `spec.connectors[].type` of an Instance, for example "tickets".
    #[serde(rename = "type")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("spec.connectors[].type must be a DNS label such as \"tickets\""))]
    #[schemars(length(min = 1, max = 63))]
    pub type_: String,
    /// The most an Instance's binding of this type may allow: its `allowedTools` may narrow this list, never widen it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub tools: Vec<String>,
}

/// The runtime an Offering runs on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'Shared' || (has(self.endpoint) && has(self.apiKeySecretRef))").message("spec.runtime: a Shared runtime needs spec.runtime.endpoint (its URL) and spec.runtime.apiKeySecretRef (the Secret holding its API key)"))]
#[x_kube(validation = Rule::new("self.mode != 'Dedicated' || self.image.size() > 0").message("spec.runtime: a Dedicated runtime needs spec.runtime.image (the container image each Instance runs)"))]
pub struct Runtime {
    /// The runtime engine. Only `Langflow` today.
    #[serde(default)]
    pub engine: Engine,
    /// Which run API the runtime serves: `v1` (`POST /api/v1/run/{flow}`, full Langflow) or `v2` (`POST /api/v2/workflows`, Langflow and lfx).
    #[serde(default)]
    pub api: RuntimeApi,
    /// `Dedicated` (default): every Instance gets its own runtime in its Project's runtime namespace, delivered by GitOps. `Shared`: one runtime at `endpoint` serves the flows of many tenants; the operator registers each Instance's flow in it.
    #[serde(default)]
    pub mode: RuntimeMode,
    /// The container image of the runtime, for example "langflowai/langflow:1.5.0". Required for `Dedicated`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 512))]
    pub image: String,
    /// The port the runtime listens on.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// `Shared`: the runtime's base URL, for example "http://langflow.cmp-runtimes.svc:7860".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/]+')").message("spec.runtime.endpoint must be an http:// or https:// URL"))]
    pub endpoint: Option<String>,
    /// `Shared`: the Secret that holds the runtime's own API key (never inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
}

/// A key of a Secret in a named namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The namespace of the Secret.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// The name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key inside the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// How an Offering's runtime is run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RuntimeMode {
    /// One runtime per Instance, in its Project's runtime namespace, delivered by GitOps.
    #[default]
    Dedicated,
    /// One runtime serving many tenants' flows; each Instance's flow is registered in it.
    Shared,
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
    /// The inputs callers may send with a run (`inputs` in the run's body), beside the input text and the session
    /// id: each with its type and bounds, and where it goes in the flow. Anything else is refused (`tweak_not_allowed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub inputs: Vec<CallerInput>,
    /// The settings a buyer may set per Instance (`Instance.spec.config`, strings parsed by these types), applied by
    /// the gateway on every run where each says; a caller cannot override them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub settings: Vec<CallerInput>,
}

/// An input a caller may send with a run (`inputs`), or a setting a buyer sets per Instance (`settings`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type == 'string' || (!has(self.maxLength) && !has(self.choices))").message("spec.versions[].inputs[] and settings[]: maxLength and choices apply to strings only"))]
#[x_kube(validation = Rule::new("self.type in ['integer', 'number'] || (!has(self.minimum) && !has(self.maximum))").message("spec.versions[].inputs[] and settings[]: minimum and maximum apply to integers and numbers only"))]
pub struct CallerInput {
    /// The name callers send it under, such as "tone".
    #[x_kube(validation = Rule::new("self.matches('^[a-z][a-z0-9_]*$')").message("spec.versions[].inputs[].name (and settings[]) must be lower-case letters, digits and '_', starting with a letter, such as \"tone\""))]
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// `string`, `integer`, `number` or `boolean`.
    #[serde(rename = "type")]
    pub type_: InputType,
    /// What it is, for callers (and the Instance's MCP tool schema).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 1024))]
    pub description: String,
    /// A string's most characters (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_length: Option<u32>,
    /// A string's only values, when set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub choices: Vec<String>,
    /// A number's least value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<i64>,
    /// A number's greatest value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<i64>,
    /// Where the value goes.
    pub target: InputTarget,
}

/// The type of a caller input.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// true or false.
    Boolean,
}

/// Where a caller input goes in the flow: a component's field (the run's tweaks, which full Langflow applies), or a
/// request global variable (lfx honours these, in sync runs).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.global) != (has(self.component) && has(self.field)) && (has(self.component) == has(self.field))").message("spec.versions[].inputs[].target (and settings[]) names either a component and its field, or a global"))]
pub struct InputTarget {
    /// The id of the component (the node's id in the flow), with `field`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub component: Option<String>,
    /// The field of `component`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub field: Option<String>,
    /// A request global variable's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Z][A-Z0-9_]*$') && !self.startsWith('CMP_')").message("spec.versions[].inputs[].target.global (and settings[]) must be upper-case letters, digits and '_', not starting with CMP_ (the platform's own)"))]
    #[schemars(length(min = 1, max = 128))]
    pub global: Option<String>,
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
    /// Credits debited per successful tool call through the connector gateway (0: tool calls are free). A failed or timed-out call is free.
    #[serde(default, skip_serializing_if = "crate::common::is_zero")]
    #[x_kube(validation = Rule::new("self >= 0").message("spec.plans[].creditsPerToolCall must be a whole number of credits, 0 or more"))]
    pub credits_per_tool_call: i64,
    /// Credits debited per chunk of a document added to the Instance's knowledge base (0: ingestion is free).
    /// A document re-sent unchanged is not charged again.
    #[serde(default, skip_serializing_if = "crate::common::is_zero")]
    #[x_kube(validation = Rule::new("self >= 0").message("spec.plans[].creditsPerChunk must be a whole number of credits, 0 or more"))]
    pub credits_per_chunk: i64,
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
    /// Runs (and new sessions) per minute for each anonymous client of the demo.
    #[serde(default = "default_rpm")]
    #[schemars(range(min = 1, max = 1000000))]
    pub requests_per_minute: i32,
    /// The Instance that serves the demo runs; its Organization's Wallet pays for them. Unset: the gateway serves no demo runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<DemoInstance>,
}

/// The Instance that serves an Offering's demo.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DemoInstance {
    /// Its Organization.
    #[schemars(length(min = 1, max = 59))]
    pub organization: String,
    /// Its name (in the Organization's control namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The observed state of an Offering.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OfferingStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The newest version (the last listed) that is not deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_version: Option<String>,
    /// How many Instances use the Offering.
    #[serde(default)]
    pub instance_count: i64,
    /// Each version: whether its artifact is verified, and how many Instances run it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub versions: Vec<VersionStatus>,
    /// Each plan, and how many Instances are on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"]))]
    pub plans: Vec<PlanStatus>,
    /// `Ready` (the latest version is verified and can be subscribed to) and `ArtifactsVerified`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// What the operator found for one version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatus {
    /// The version name.
    pub name: String,
    /// Whether its artifact matched its sha256.
    pub artifact: ArtifactState,
    /// The URL and sha256 the state was found for (a changed spec is checked again).
    pub url: String,
    /// The sha256 the spec pins.
    pub sha256: String,
    /// What went wrong, for `Mismatch` and `Unreachable`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Whether the version is deprecated (kept for its Instances, refused to new ones).
    #[serde(default, skip_serializing_if = "is_false")]
    pub deprecated: bool,
    /// How many Instances run this version.
    #[serde(default)]
    pub instances: i64,
}

/// The state of a version's artifact.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ArtifactState {
    /// Not checked yet.
    #[default]
    Pending,
    /// Fetched, and its sha256 matched.
    Verified,
    /// Fetched, and its sha256 did not match: Instances cannot use it.
    Mismatch,
    /// Could not be fetched; checked again later.
    Unreachable,
    /// Fetched and its sha256 matched, but the flow lacks what the version's `inputs` name: Instances cannot use it.
    Invalid,
}

/// How a plan is used.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanStatus {
    /// The plan id.
    pub id: String,
    /// How many Instances are on it.
    #[serde(default)]
    pub instances: i64,
}

impl Offering {
    /// The version `name`, if listed.
    pub fn version(&self, name: &str) -> Option<&OfferingVersion> {
        self.spec.versions.iter().find(|v| v.name == name)
    }

    /// The plan `id`, if listed.
    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.spec.plans.iter().find(|p| p.id == id)
    }

    /// The newest version that is not deprecated: the last listed.
    pub fn latest_version(&self) -> Option<&OfferingVersion> {
        self.spec.versions.iter().rev().find(|v| !v.deprecated)
    }

    /// What the status says of version `name`'s artifact, when it was found for the spec's current URL and sha256.
    pub fn artifact_state(&self, name: &str) -> ArtifactState {
        let (Some(version), Some(status)) = (self.version(name), self.status.as_ref()) else {
            return ArtifactState::Pending;
        };
        status
            .versions
            .iter()
            .find(|v| v.name == name && v.url == version.artifact.url && v.sha256 == version.artifact.sha256)
            .map_or(ArtifactState::Pending, |v| v.artifact)
    }
}
