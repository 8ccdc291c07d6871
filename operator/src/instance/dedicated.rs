//! A Dedicated Instance's runtime, delivered by GitOps: the folder to commit,
//! `Synced` (its folder is pushed), `Ready` (Argo CD synced a commit that
//! contains it, and its Deployment is available), all pure functions of the
//! CRs and of what the writer, Argo CD and the Deployment reported.

use cmp_crds::Instance;
use cmp_crds::conditions::{NewCondition, READY, SYNCED, reasons};
use cmp_crds::instance::GitOpsStatus;
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;

use super::desired::Observed;
use super::references::Resolved;
use crate::gitops::Delivery;
use crate::gitops::argocd::SyncState;
use crate::gitops::render::{InstanceTree, RenderInput, RenderSettings, render};

/// What the Instance controller reads about GitOps.
#[derive(Debug, Clone, PartialEq)]
pub struct GitOpsObserved {
    /// The renderer's settings.
    pub render: RenderSettings,
    /// The remote, for `status.gitops.repo`.
    pub repo: String,
    /// What became of the Instance's last folder.
    pub delivery: Option<Delivery>,
    /// Argo CD's view of the Project's Application: `None` when no Argo CD is configured, `Some(None)` while it does not exist.
    pub application: Option<Option<SyncState>>,
    /// True when the Application's synced revision contains the delivered commit.
    pub synced_contains_commit: bool,
    /// The runtime Deployment, if it exists.
    pub deployment: Option<DeploymentState>,
}

/// What a Deployment's status says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentState {
    /// At least one replica of the current generation is available.
    pub available: bool,
    /// Why not, in the Deployment's words.
    pub message: String,
}

impl DeploymentState {
    /// Reads a Deployment's status (pure).
    pub fn of(deployment: &Deployment) -> Self {
        let status = deployment.status.clone().unwrap_or_default();
        let current = status.observed_generation >= deployment.metadata.generation;
        let available_condition = status.conditions.iter().flatten().find(|c| c.type_ == "Available");
        let available = current
            && status.available_replicas.unwrap_or(0) >= 1
            && status.updated_replicas.unwrap_or(0) >= 1
            && available_condition.is_none_or(|c| c.status == "True");
        let message = match available_condition {
            _ if !current => "the Deployment's controller has not seen its latest spec yet".to_string(),
            Some(c) if c.status != "True" => c.message.clone().unwrap_or_else(|| c.reason.clone().unwrap_or_default()),
            _ if available => "available".into(),
            _ => format!(
                "{} of {} replicas available",
                status.available_replicas.unwrap_or(0),
                deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
            ),
        };
        Self { available, message }
    }
}

/// The Dedicated side of an Instance.
pub struct DedicatedState {
    /// The folder to hand the writer (when it is not delivered yet).
    pub commit: Option<InstanceTree>,
    /// `Synced`.
    pub synced: NewCondition<'static>,
    /// `Ready`.
    pub ready: NewCondition<'static>,
    /// `status.gitops`.
    pub gitops: Option<GitOpsStatus>,
}

/// The folder, `Synced`, `Ready` and `status.gitops` of a Dedicated Instance.
pub fn dedicated(
    instance: &Instance,
    resolved: &Resolved,
    observed: &Observed,
    gitops: &GitOpsObserved,
) -> DedicatedState {
    let previous = instance.status.as_ref().and_then(|s| s.gitops.clone());
    let not_ready = |reason: &'static str, message: String| DedicatedState {
        commit: None,
        synced: NewCondition::new(SYNCED, false, reason, message.clone()),
        ready: NewCondition::new(READY, false, reason, message),
        gitops: previous.clone(),
    };
    let organization = observed.organization.as_ref().map(|o| o.name_any()).unwrap_or_default();
    let Some(project) = &observed.project else {
        return not_ready(reasons::PROJECT_NOT_FOUND, "the Project is not in the cache".into());
    };
    let input = RenderInput {
        instance,
        organization: &organization,
        offering: resolved.offering,
        version: resolved.version,
        namespace: &resolved.runtime_namespace,
        container_cpu: &project.spec.quota.container_cpu,
        container_memory: &project.spec.quota.container_memory,
    };
    let tree = match render(&input, &gitops.render) {
        Ok(tree) => tree,
        Err(message) => return not_ready(reasons::RENDER_FAILED, message),
    };
    let digest = tree.digest();
    let version = &resolved.version.name;
    let (synced, status) = match &gitops.delivery {
        Some(Delivery::Delivered { digest: d, commit }) if *d == digest => (
            NewCondition::new(
                SYNCED,
                true,
                reasons::COMMITTED,
                format!("version {version} is pushed to {} at {commit} ({})", gitops.repo, tree.dir),
            ),
            Some(GitOpsStatus { repo: gitops.repo.clone(), path: tree.dir.clone(), commit: commit.clone() }),
        ),
        Some(Delivery::Failed { digest: d, reason, message }) if *d == digest => {
            (NewCondition::new(SYNCED, false, reason, message.clone()), previous.clone())
        }
        _ => (
            NewCondition::new(
                SYNCED,
                false,
                reasons::COMMITTING,
                format!("committing version {version} to {} ({})", gitops.repo, tree.dir),
            ),
            previous.clone(),
        ),
    };
    let commit = (synced.status != cmp_crds::conditions::TRUE).then_some(tree);
    let ready = match (&status, synced.status == cmp_crds::conditions::TRUE) {
        (Some(at), true) => ready(at, gitops),
        _ => NewCondition::new(READY, false, synced.reason, synced.message.clone()),
    };
    DedicatedState { commit, synced, ready, gitops: status }
}

/// `Ready` once the commit is pushed: Argo CD (when configured) synced a commit containing it, and the Deployment is available.
fn ready(at: &GitOpsStatus, gitops: &GitOpsObserved) -> NewCondition<'static> {
    let commit = &at.commit;
    match &gitops.application {
        None => {}
        Some(None) => {
            return NewCondition::new(
                READY,
                false,
                reasons::AWAITING_SYNC,
                "the Project's Argo CD Application does not exist yet".to_string(),
            );
        }
        Some(Some(SyncState::Failed { why })) => {
            return NewCondition::new(READY, false, reasons::SYNC_FAILED, format!("Argo CD: {why}"));
        }
        Some(Some(SyncState::Pending { why })) => {
            return NewCondition::new(
                READY,
                false,
                reasons::AWAITING_SYNC,
                format!("waiting for Argo CD to sync {commit}: {why}"),
            );
        }
        Some(Some(SyncState::Synced { revision })) if !gitops.synced_contains_commit => {
            return NewCondition::new(
                READY,
                false,
                reasons::AWAITING_SYNC,
                format!("Argo CD is synced at {revision}, which does not contain {commit} yet"),
            );
        }
        Some(Some(SyncState::Synced { .. })) => {}
    }
    match &gitops.deployment {
        Some(d) if d.available => NewCondition::new(
            READY,
            true,
            reasons::RUNTIME_READY,
            format!("the runtime Deployment at {commit} is available"),
        ),
        Some(d) => NewCondition::new(
            READY,
            false,
            reasons::DEPLOYMENT_UNAVAILABLE,
            format!("the runtime Deployment is not available: {}", d.message),
        ),
        None => NewCondition::new(
            READY,
            false,
            reasons::DEPLOYMENT_UNAVAILABLE,
            "the runtime Deployment does not exist yet".to_string(),
        ),
    }
}

#[cfg(test)]
mod tests;
