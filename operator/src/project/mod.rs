//! The Project pipeline: the runtime namespace and its isolation (quota,
//! limits, network policies, service account, RBAC), and the status
//! (`Suspended` derived from the cached Organization). Deletion honours
//! `deletionPolicy`.

pub mod argocd;
pub mod desired;

/// How long a deletion waits for the removal commit of the Project's tree before it is retried.
const REMOVAL_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

use cmp_crds::names::{organization_of_control_namespace, runtime_namespace};
use cmp_crds::{DeletionPolicy, Project};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::cache::{Caches, Guarded, OrganizationLookup, Watched, valid};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::gitops::argocd::application_name;
use crate::gitops::render::project_dir;
use crate::settings::Settings;
use crate::shell::{Desired, Reconcile};
use desired::{Children, Observed};

impl Reconcile for Project {
    type Observed = Observed;
    type Children = Children;
    type Status = cmp_crds::ProjectStatus;
    const FINALIZER: bool = true;

    fn watched(caches: &Caches) -> &Watched<Guarded<Self>> {
        &caches.projects
    }

    fn observe(&self, ctx: &Context) -> Result<Observed> {
        let caches = &ctx.caches;
        let namespace = self.namespace().unwrap_or_default();
        let org = organization_of_control_namespace(&namespace)
            .ok_or_else(|| Error::NotInControlNamespace { namespace: namespace.clone() })?;
        let organization = match caches.organization(org) {
            OrganizationLookup::Selected(guard) => match &guard.0 {
                Ok(org) => org.clone(),
                Err(invalid) => {
                    return Err(Error::OrganizationInvalid { organization: org.into(), error: invalid.error.clone() });
                }
            },
            // Not selected is filtered out by the shell before observing.
            OrganizationLookup::NotSelected | OrganizationLookup::Missing => {
                return Err(Error::OrganizationNotFound { organization: org.into() });
            }
        };
        let name = self.name_any();
        let runtime_ns = runtime_namespace(org, &name);
        let instances = caches.instances_in(&namespace);
        let instance_count = instances.iter().filter_map(|i| valid(i)).filter(|i| i.spec.project == name).count();
        Ok(Observed {
            organization,
            namespace_terminating: caches
                .namespaces
                .get(&runtime_ns, None)
                .is_some_and(|n| n.metadata.deletion_timestamp.is_some()),
            instance_count: i64::try_from(instance_count).unwrap_or(i64::MAX),
        })
    }

    fn desired(&self, observed: &Observed, settings: &Settings, now: Timestamp) -> Desired<Children, Self::Status> {
        desired::desired(self, observed, settings, now)
    }

    async fn apply(&self, children: &Children, ctx: &Context) -> Result<()> {
        let applier = &ctx.applier;
        // The namespace first, then what lives in it at once; bindings last,
        // once the Roles they bind exist.
        applier.ensure(&children.namespace).await?;
        futures::try_join!(
            applier.ensure(&children.quota),
            applier.ensure(&children.limits),
            applier.ensure_all(&children.network_policies),
            applier.ensure(&children.service_account),
            applier.ensure_all(&children.roles),
        )?;
        applier.ensure_all(&children.role_bindings).await?;
        if let Some(apps) = &children.argocd {
            argocd::ensure(ctx, apps).await?;
        }
        if let (Some(knowledge), Some(org)) =
            (&ctx.knowledge, organization_of_control_namespace(&self.namespace().unwrap_or_default()))
        {
            knowledge.ensure_project(org, &self.name_any()).await?;
        }
        if let (Some(retired), Some(vault)) = (&children.retired_runtime_access, &ctx.vault) {
            // The gateway's access to every connector secret, written (once per process) with the first Project.
            if let Some(gateway) = vault.gateway_access() {
                vault.ensure_access(&gateway).await.map_err(|e| Error::Vault(e.to_string()))?;
            }
            // Runtimes no longer read connector secrets: what an earlier release granted them goes (once per process).
            vault.retire_runtime_access(retired).await.map_err(|e| Error::Vault(e.to_string()))?;
        }
        Ok(())
    }

    /// Needs no Organization: it also runs while the org's namespace is being deleted.
    async fn cleanup(&self, ctx: &Context) -> Result<()> {
        if self.spec.deletion_policy == DeletionPolicy::Retain {
            tracing::info!("deletionPolicy Retain: leaving the runtime namespace in place");
            return Ok(());
        }
        let namespace = self.namespace().unwrap_or_default();
        let Some(org) = organization_of_control_namespace(&namespace) else { return Ok(()) };
        let runtime_ns = runtime_namespace(org, &self.name_any());
        if let Some(gitops) = &ctx.gitops {
            let dir = project_dir(&gitops.settings.render.root, org, &self.name_any());
            let commit = gitops.remove(&dir, None, REMOVAL_WAIT).await?;
            tracing::info!(
                dir,
                commit = commit.as_deref().unwrap_or("none, the branch is empty"),
                "removed the Project's tree from git"
            );
            if let Some(argocd) = &gitops.settings.argocd {
                argocd::delete(ctx, &argocd.namespace, &application_name(&runtime_ns)).await?;
            }
        }
        if let Some(knowledge) = &ctx.knowledge {
            knowledge.drop_project(org, &self.name_any()).await?;
        }
        if let Some(vault) = &ctx.vault {
            let role = cmp_crds::names::connector_role(org, &self.name_any());
            vault.delete_access(&role).await.map_err(|e| Error::Vault(e.to_string()))?;
        }
        ctx.applier.delete::<Namespace>(&runtime_ns).await?;
        ctx.publish(self, false, "Deleting", format!("deleting runtime namespace {runtime_ns}")).await;
        Ok(())
    }

    fn operator_status(&self) -> Self::Status {
        self.status.clone().unwrap_or_default()
    }

    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition> {
        &mut status.conditions
    }
}
