//! How Argo CD picks a Project's tree up: one AppProject and one Application
//! per Project, applied by the operator. The AppProject confines the
//! Application to the Project's runtime namespace (every other destination and
//! every cluster-scoped kind is refused), which one ApplicationSet over all
//! tenants could not: its Applications would share one AppProject, and any
//! tenant's tree could then name any tenant's namespace.
//!
//! Only the fields the operator sets or reads are modelled; the rest of Argo
//! CD's schema passes through untouched.

use cmp_crds::names::owned_labels;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::render::project_dir;

/// Argo CD's name for the cluster it runs in (with `ARGOCD_FAKE_IN_CLUSTER`, the kubeconfig's API server).
pub const IN_CLUSTER: &str = "https://kubernetes.default.svc";

/// The kinds a tenant's tree may hold: exactly what the renderer writes.
pub const TENANT_KINDS: [(&str, &str); 3] = [("apps", "Deployment"), ("", "Service"), ("", "ConfigMap")];

/// Argo CD's Application (argoproj.io/v1alpha1), the fields CMP uses.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "argoproj.io",
    version = "v1alpha1",
    kind = "Application",
    namespaced,
    status = "ApplicationStatus",
    derive = "PartialEq",
    derive = "Default",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    /// The AppProject.
    pub project: String,
    /// Where the manifests are.
    pub source: ApplicationSource,
    /// Where they go.
    pub destination: ApplicationDestination,
    /// Automated sync, pruning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_policy: Option<serde_json::Value>,
}

/// An Application's source.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSource {
    /// The repository.
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    /// The folder.
    pub path: String,
    /// The branch.
    pub target_revision: String,
}

/// An Application's destination.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationDestination {
    /// The cluster's API server.
    pub server: String,
    /// The namespace.
    pub namespace: String,
}

/// What Argo CD reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStatus {
    /// Sync state.
    #[serde(default)]
    pub sync: Option<SyncStatus>,
    /// Health.
    #[serde(default)]
    pub health: Option<HealthStatus>,
    /// The last sync operation.
    #[serde(default)]
    pub operation_state: Option<OperationState>,
    /// Problems Argo CD found (for example, a destination the AppProject does not permit).
    #[serde(default)]
    pub conditions: Option<Vec<ApplicationCondition>>,
}

/// `status.sync`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SyncStatus {
    /// `Synced`, `OutOfSync`, `Unknown`.
    #[serde(default)]
    pub status: String,
    /// The commit compared against.
    #[serde(default)]
    pub revision: Option<String>,
}

/// `status.health`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct HealthStatus {
    /// `Healthy`, `Progressing`, `Degraded`, `Suspended`, `Missing`, `Unknown`.
    #[serde(default)]
    pub status: String,
}

/// `status.operationState`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct OperationState {
    /// `Running`, `Succeeded`, `Failed`, `Error`, `Terminating`.
    #[serde(default)]
    pub phase: String,
    /// What happened.
    #[serde(default)]
    pub message: Option<String>,
    /// The result, with the revision synced.
    #[serde(default)]
    pub sync_result: Option<SyncResult>,
}

/// `status.operationState.syncResult`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SyncResult {
    /// The commit synced.
    #[serde(default)]
    pub revision: String,
}

/// `status.conditions[]`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ApplicationCondition {
    /// For example `InvalidSpecError`, `SyncError`.
    #[serde(rename = "type", default)]
    pub type_: String,
    /// What is wrong.
    #[serde(default)]
    pub message: String,
}

/// Argo CD's AppProject (argoproj.io/v1alpha1), the fields CMP sets.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "argoproj.io",
    version = "v1alpha1",
    kind = "AppProject",
    namespaced,
    derive = "PartialEq",
    derive = "Default",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct AppProjectSpec {
    /// What the project is for.
    pub description: String,
    /// The repositories its Applications may use.
    pub source_repos: Vec<String>,
    /// Where they may deploy.
    pub destinations: Vec<ApplicationDestination>,
    /// Cluster-scoped kinds allowed: none.
    pub cluster_resource_whitelist: Vec<GroupKind>,
    /// Namespaced kinds allowed: what the renderer writes.
    pub namespace_resource_whitelist: Vec<GroupKind>,
}

/// A group and kind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct GroupKind {
    /// API group ("" for the core group).
    pub group: String,
    /// Kind.
    pub kind: String,
}

/// The AppProject and Application of one Project.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectApps {
    /// Confines the Application.
    pub app_project: AppProject,
    /// Syncs the Project's folder into its runtime namespace.
    pub application: Application,
}

/// The name of a Project's Application and AppProject in Argo CD's namespace: its runtime namespace's name.
pub fn application_name(runtime_namespace: &str) -> String {
    runtime_namespace.to_string()
}

/// What Argo CD needs to sync one Project (pure).
pub fn project_apps(
    argocd_namespace: &str,
    repo_url: &str,
    branch: &str,
    root: &str,
    organization: &str,
    project: &str,
    runtime_namespace: &str,
) -> ProjectApps {
    let name = application_name(runtime_namespace);
    let metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(argocd_namespace.into()),
        labels: Some(owned_labels(organization, Some(project))),
        ..Default::default()
    };
    let destination = ApplicationDestination { server: IN_CLUSTER.into(), namespace: runtime_namespace.into() };
    let app_project = AppProject {
        metadata: metadata.clone(),
        spec: AppProjectSpec {
            description: format!("CMP Project {organization}/{project}: its runtime namespace only"),
            source_repos: vec![repo_url.into()],
            destinations: vec![destination.clone()],
            cluster_resource_whitelist: Vec::new(),
            namespace_resource_whitelist: TENANT_KINDS
                .iter()
                .map(|(group, kind)| GroupKind { group: (*group).into(), kind: (*kind).into() })
                .collect(),
        },
    };
    let application = Application {
        metadata,
        spec: ApplicationSpec {
            project: name,
            source: ApplicationSource {
                repo_url: repo_url.into(),
                path: project_dir(root, organization, project),
                target_revision: branch.into(),
            },
            destination,
            sync_policy: Some(serde_json::json!({
                // allowEmpty: deleting a Project's last Instance must prune its objects (Argo CD refuses to empty an Application otherwise).
                "automated": {"prune": true, "selfHeal": true, "allowEmpty": true},
                // Bounded: a sync Argo CD keeps retrying blocks every later commit (a refused tree must not wedge the Project).
                "retry": {"limit": 3, "backoff": {"duration": "5s", "factor": 2, "maxDuration": "1m"}},
            })),
        },
        status: None,
    };
    ProjectApps { app_project, application }
}

/// What an Application says about one commit of its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncState {
    /// Synced at `revision`.
    Synced { revision: String },
    /// Not (yet) synced; `why` carries Argo CD's own words.
    Pending { why: String },
    /// The last sync failed, or the Application is invalid (for example, refused by its AppProject).
    Failed { why: String },
}

/// Reads an Application's status (pure).
pub fn sync_state(application: &Application) -> SyncState {
    let status = application.status.clone().unwrap_or_default();
    let problems: Vec<String> = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_.ends_with("Error"))
        .map(|c| format!("{}: {}", c.type_, c.message))
        .collect();
    if !problems.is_empty() {
        return SyncState::Failed { why: problems.join("; ") };
    }
    let synced_revision = status.sync.as_ref().filter(|s| s.status == "Synced").and_then(|s| s.revision.clone());
    if let Some(op) = &status.operation_state
        && matches!(op.phase.as_str(), "Failed" | "Error")
        // A failed sync of an older commit no longer matters once a later one is synced.
        && (synced_revision.is_none() || op.sync_result.as_ref().map(|r| &r.revision) == synced_revision.as_ref())
    {
        let message = op.message.clone().unwrap_or_default();
        return SyncState::Failed { why: format!("the last sync {}: {message}", op.phase.to_lowercase()) };
    }
    match status.sync {
        Some(SyncStatus { status, revision: Some(revision) }) if status == "Synced" => SyncState::Synced { revision },
        Some(SyncStatus { status, revision }) => SyncState::Pending {
            why: format!(
                "Argo CD reports {} at {}",
                if status.is_empty() { "no sync status" } else { status.as_str() },
                revision.as_deref().unwrap_or("no revision yet")
            ),
        },
        None => SyncState::Pending { why: "Argo CD has not looked at the Application yet".into() },
    }
}

#[cfg(test)]
mod tests;
