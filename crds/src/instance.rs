//! `Instance`: one subscription of a Project to an Offering version and plan (in the org's control namespace).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{DNS_LABEL_RULE, DeletionPolicy, conditions_schema, is_false};

/// The desired state of an Instance.
#[allow(clippy::duplicated_attributes)] // kube printcolumn(...) attributes repeat type_ legitimately
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cmp.gsv.dev",
    version = "v1alpha1",
    kind = "Instance",
    plural = "instances",
    shortname = "inst",
    category = "cmp",
    namespaced,
    status = "InstanceStatus",
    derive = "PartialEq",
    doc = "A running agent: one Project's subscription to an Offering version and plan. The operator commits its runtime manifests to the GitOps repository, issues its API keys and binds its connectors; the gateway authorizes runs against it.",
    printcolumn(name = "Project", type_ = "string", json_path = ".spec.project"),
    printcolumn(name = "Offering", type_ = "string", json_path = ".spec.offering"),
    printcolumn(name = "Plan", type_ = "string", json_path = ".spec.plan"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version", priority = 1),
    printcolumn(
        name = "Synced",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Synced\")].status",
        priority = 1
    ),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint", priority = 1),
    printcolumn(name = "Commit", type_ = "string", json_path = ".status.gitops.commit", priority = 1)
)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSpec {
    /// The Project (in the same namespace) the Instance runs in. Cannot change after creation.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.project cannot change after creation: create a new Instance in the other Project instead"))]
    #[x_kube(validation = Rule::new(DNS_LABEL_RULE).message("spec.project must be the name of a Project (a DNS label)"))]
    #[schemars(length(min = 1, max = 63))]
    pub project: String,

    /// The Offering subscribed to. Cannot change after creation.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.offering cannot change after creation: create a new Instance for the other Offering instead"))]
    #[schemars(length(min = 1, max = 253))]
    pub offering: String,

    /// The Offering version to run (one of `spec.versions[].name` of the Offering). Changing it upgrades the runtime.
    #[schemars(length(min = 1, max = 64))]
    pub version: String,

    /// The Offering plan (one of `spec.plans[].id` of the Offering): price per run, rate limit and timeout.
    #[schemars(length(min = 1, max = 63))]
    pub plan: String,

    /// Stops new runs (the gateway answers 403) while keeping everything else.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspended: bool,

    /// The API keys callers use. Removing an entry or setting `revoked` stops the key at once; the plaintext is written once to a Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub api_keys: Vec<ApiKeySpec>,

    /// Bindings to external tools whose credentials live in Vault/OpenBao.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub connectors: Vec<ConnectorBinding>,

    /// Non-secret settings passed to the flow (as tweaks or global variables). Secrets belong in connectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 100))]
    pub config: BTreeMap<String, String>,

    /// What happens to the runtime manifests, keys and secrets when the Instance is deleted: `Delete` (default) or `Retain`.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// An API key of an Instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySpec {
    /// The key's name, unique in the list, for example "production".
    #[x_kube(validation = Rule::new(DNS_LABEL_RULE).message("spec.apiKeys[].name must be a DNS label such as \"production\""))]
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// When the key stops working (RFC 3339). Unset: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// A revoked key is refused by the gateway as soon as it sees the change.
    #[serde(default, skip_serializing_if = "is_false")]
    pub revoked: bool,
}

/// A connector binding: a tool the agent may call, with credentials kept in Vault/OpenBao.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorBinding {
    /// The binding's name, unique in the list, for example "crm".
    #[x_kube(validation = Rule::new(DNS_LABEL_RULE).message("spec.connectors[].name must be a DNS label such as \"crm\""))]
    #[x_kube(validation = Rule::new("self != 'knowledge'").message("spec.connectors[].name \"knowledge\" is reserved: it is the built-in binding flows search the Instance's knowledge base at; name the binding otherwise"))]
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The connector type, for example "hubspot", "slack" or "http".
    #[x_kube(validation = Rule::new(DNS_LABEL_RULE).message("spec.connectors[].type must be a DNS label such as \"hubspot\""))]
    #[schemars(length(min = 1, max = 63))]
    #[serde(rename = "type")]
    pub type_: String,
    /// The KV v2 path of the credentials, which must lie inside the tenant's prefix `connectors/<org>/<project>/`.
    #[x_kube(validation = Rule::new("self.matches('^connectors/[a-z0-9][-a-z0-9]*/[a-z0-9][-a-z0-9]*/[a-z0-9][-a-z0-9_]*$')").message("spec.connectors[].vaultPath must look like connectors/<org>/<project>/<binding>"))]
    #[schemars(length(min = 1, max = 512))]
    pub vault_path: String,
    /// The tools of the connector the agent may call, within what the Offering allows for this `type`; empty allows none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub allowed_tools: Vec<String>,
    /// The MCP server (Streamable HTTP) the gateway calls for this binding, for example "https://tickets.example.com/mcp". Its host must be on the platform's allow-list. Unset: the binding cannot be called (a condition says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#@]+(/[^?#]*)?$')").message("spec.connectors[].url must be an http(s) URL with no user info, query or fragment, such as \"https://tickets.example.com/mcp\""))]
    #[schemars(length(min = 1, max = 2048))]
    pub url: Option<String>,
    /// How the gateway presents the credential to the MCP server. Unset: `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialPresentation>,
    /// How long one call to the MCP server may take before the gateway answers with an error (and charges nothing).
    #[serde(default = "default_connector_timeout")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: i32,
}

fn default_connector_timeout() -> i32 {
    30
}

/// How a binding's credential is sent to its MCP server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialPresentation {
    /// The HTTP header, for example "Authorization" or "X-Api-Key".
    #[serde(default = "default_credential_header")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9-]+$') && !(self.lowerAscii() in ['host', 'content-length', 'content-type', 'mcp-session-id', 'mcp-protocol-version', 'transfer-encoding', 'connection'])").message("spec.connectors[].credential.header must be an HTTP header name other than Host, Content-*, Mcp-* or hop-by-hop headers"))]
    #[schemars(length(min = 1, max = 100))]
    pub header: String,
    /// The header's value, with `{secret}` where the secret goes, for example "Bearer {secret}" or "{secret}".
    #[serde(default = "default_credential_format")]
    #[x_kube(validation = Rule::new("self.contains('{secret}')").message("spec.connectors[].credential.format must contain {secret}, for example \"Bearer {secret}\""))]
    #[schemars(length(min = 8, max = 200))]
    pub format: String,
    /// The field of the KV v2 entry at `vaultPath` that holds the secret.
    #[serde(default = "default_credential_key")]
    #[x_kube(validation = Rule::new(DNS_LABEL_RULE).message("spec.connectors[].credential.key must be a DNS label such as \"token\""))]
    #[schemars(length(min = 1, max = 63))]
    pub key: String,
}

impl Default for CredentialPresentation {
    fn default() -> Self {
        Self { header: default_credential_header(), format: default_credential_format(), key: default_credential_key() }
    }
}

fn default_credential_header() -> String {
    "Authorization".into()
}
fn default_credential_format() -> String {
    "Bearer {secret}".into()
}
fn default_credential_key() -> String {
    "token".into()
}

/// The lifecycle phase of an Instance.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum InstancePhase {
    /// Accepted; nothing is provisioned yet.
    #[default]
    Pending,
    /// Manifests, keys or secrets are being written, or the runtime is starting.
    Provisioning,
    /// The runtime serves runs.
    Ready,
    /// Suspended by the Instance or its Organization.
    Suspended,
    /// Provisioning failed; the conditions say why.
    Failed,
    /// Being deleted.
    Terminating,
}

/// Where a GitOps commit put the Instance's manifests.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitOpsStatus {
    /// The repository URL.
    pub repo: String,
    /// The directory of the Instance in the repository.
    pub path: String,
    /// The commit that last changed the directory.
    pub commit: String,
}

/// Where the plaintext of an API key was written, once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretLocation {
    /// `Secret` (a Kubernetes Secret in the control namespace) or `Vault`.
    pub store: SecretStore,
    /// The Secret name or the Vault KV path.
    pub name: String,
    /// The key inside the Secret or the Vault entry.
    pub key: String,
}

/// A secret store.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SecretStore {
    /// A Kubernetes Secret.
    Secret,
    /// Vault/OpenBao KV v2.
    Vault,
}

/// What the operator found of a connector binding's secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorStatus {
    /// The binding's name (matches `spec.connectors[].name`).
    pub name: String,
    /// The KV v2 path of its secret.
    pub vault_path: String,
    /// `Found`, `Missing`, `OutsideTenant` or `Unknown`.
    pub secret: ConnectorSecret,
    /// Whether the gateway may call the binding's MCP server: `Allowed` (its addresses are checked again on every call), `NoUrl` or `NotAllowed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<ConnectorDestination>,
    /// The tools the agent may call: `allowedTools` within the Offering's tools for the binding's type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_tools: Vec<String>,
    /// What was found, or what to do.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// What an Instance's knowledge base holds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KnowledgeStatus {
    /// Documents.
    pub documents: i64,
    /// Chunks indexed from them.
    pub chunks: i64,
    /// When the last document was indexed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ingestion: Option<Time>,
    /// The embedding model the documents were indexed with.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
}

/// What the gateway found when it last called a binding's MCP server
/// (`initialize`, then `tools/list`) with the binding's own credential.
/// Written by the gateway alone (field manager `cmp-gateway-probes`); the
/// operator reads it into `ConnectorsReady`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorProbe {
    /// The binding's name (matches `spec.connectors[].name`).
    pub name: String,
    /// The binding as it was probed (`cmp_crds::connectors::fingerprint` of its type, url, vaultPath and credential): a probe of an earlier binding is not used.
    #[schemars(length(max = 64))]
    pub binding: String,
    /// When it was probed.
    pub probed_at: Time,
    /// Whether the server answered `initialize` and `tools/list`.
    pub answered: bool,
    /// The gateway would not connect: the binding's host resolved to an address no binding may reach (a denied
    /// network or a cluster-internal endpoint), or is off the allow-list. Nothing was sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// The tools the server listed (at most 500 names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 500))]
    pub tools: Vec<String>,
    /// Why it did not answer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 1024))]
    pub message: String,
}

/// Whether the gateway may call a binding's MCP server.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConnectorDestination {
    /// The host is on the platform's allow-list; the gateway checks its addresses on every call.
    Allowed,
    /// The binding names no MCP server (`url`): it cannot be called.
    NoUrl,
    /// The host is not on the platform's allow-list, or the URL is not usable: refused.
    NotAllowed,
    /// The host is on the allow-list, but the gateway found (after DNS resolution) that it resolves to an address no
    /// binding may reach: a denied network, or a cluster-internal endpoint. Refused; probed again as it may change.
    Denied,
}

/// The state of a connector binding's secret.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConnectorSecret {
    /// The secret exists at `vaultPath`; the gateway reads it on a call.
    Found,
    /// Nothing is at `vaultPath`: write the secret there.
    Missing,
    /// `vaultPath` lies outside the Project's `connectors/<org>/<project>/`: refused, nothing is written.
    OutsideTenant,
    /// Not looked at yet, or Vault/OpenBao could not be asked (the message says why).
    Unknown,
}

/// The issued state of an API key. Only a hash of the key is kept here.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyStatus {
    /// The key's name (matches `spec.apiKeys[].name`).
    pub name: String,
    /// The public id inside the key (`cmp_<publicId>_<secret>`), used for lookup.
    pub public_id: String,
    /// The hash of the key: `sha256:` followed by 64 lower-case hex characters.
    #[x_kube(validation = Rule::new("self.matches('^sha256:[a-f0-9]{64}$')").message("status.apiKeys[].hash must be sha256: followed by 64 lower-case hex characters"))]
    #[schemars(length(max = 71))]
    pub hash: String,
    /// When the key was issued.
    pub created_at: Time,
    /// When the key stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// Where the plaintext was written.
    pub secret: SecretLocation,
}

/// The observed state of an Instance.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the Instance is in its lifecycle.
    #[serde(default)]
    pub phase: InstancePhase,
    /// The runtime namespace the Instance runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_namespace: Option<String>,
    /// The in-cluster URL the gateway forwards runs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The flow id the runtime serves for this Instance: derived from the Instance in a Shared runtime, the version's own flow id in a Dedicated one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<String>,
    /// The Offering version the runtime serves now (the previous one until a change is rolled out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Where the manifests were committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<GitOpsStatus>,
    /// The issued API keys (hashes only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub api_keys: Vec<ApiKeyStatus>,
    /// Each connector binding: whether its secret is where `vaultPath` says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub connectors: Vec<ConnectorStatus>,
    /// What the gateway found when it last called each callable binding's MCP server; written by the gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub connector_probes: Vec<ConnectorProbe>,
    /// What the Instance's knowledge base holds, when its Offering has one; written by the gateway after each
    /// upload or removal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knowledge: Option<KnowledgeStatus>,
    /// `Synced` (the manifests are committed) and `Ready` (the runtime serves), each with its own observedGeneration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}
