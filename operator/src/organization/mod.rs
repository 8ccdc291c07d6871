//! The Organization pipeline: the control namespace, the Wallet with its
//! starter credits, RBAC, and the status (namespace, wallet, projects,
//! `Suspended` from its own spec). Deletion honours `deletionPolicy`.

pub mod desired;

use cmp_crds::names::control_namespace;
use cmp_crds::{DeletionPolicy, Organization, Wallet};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::ObjectMeta;

use crate::cache::{Caches, Guarded, Watched, valid};
use crate::context::Context;
use crate::error::Result;
use crate::settings::Settings;
use crate::shell::{Desired, Reconcile};
use desired::{Children, Observed};

/// The field manager of the starter grant, applied once and never again.
pub const STARTER_MANAGER: &str = "cmp-operator-starter";

impl Reconcile for Organization {
    type Observed = Observed;
    type Children = Children;
    type Status = cmp_crds::OrganizationStatus;
    const FINALIZER: bool = true;

    fn watched(caches: &Caches) -> &Watched<Guarded<Self>> {
        &caches.organizations
    }

    /// The cache holds only the selected Organizations.
    fn selected(meta: &ObjectMeta, caches: &Caches) -> bool {
        caches.organizations.get(meta.name.as_deref().unwrap_or_default(), None).is_some()
    }

    fn observe(&self, ctx: &Context) -> Result<Observed> {
        let caches = &ctx.caches;
        let name = self.name_any();
        let ns = control_namespace(&name);
        let wallet = caches.wallets.get(&desired::wallet_name(self), Some(&ns));
        let mut projects: Vec<String> = caches.projects_in(&ns).iter().map(|p| p.name_any()).collect();
        projects.sort();
        Ok(Observed {
            namespace_terminating: caches
                .namespaces
                .get(&ns, None)
                .is_some_and(|n| n.metadata.deletion_timestamp.is_some()),
            wallet_has_starter_grant: wallet
                .as_deref()
                .and_then(valid)
                .is_some_and(|w| w.spec.grants.iter().any(|g| g.id == desired::STARTER_GRANT_ID)),
            projects,
        })
    }

    fn desired(&self, observed: &Observed, settings: &Settings, now: Timestamp) -> Desired<Children, Self::Status> {
        desired::desired(self, observed, settings, now)
    }

    async fn apply(&self, children: &Children, ctx: &Context) -> Result<()> {
        let applier = &ctx.applier;
        applier.ensure(&children.namespace).await?;
        let wallet = async {
            let wallets = &ctx.caches.wallets;
            let (ns, wallet) = (control_namespace(&self.name_any()), desired::wallet_name(self));
            if let Some(grant) = &children.starter_grant {
                applier.ensure_object::<Wallet>(wallets, Some(&ns), &wallet, grant, STARTER_MANAGER).await?;
                let note =
                    format!("granted {} starter credits to Wallet {wallet}", grant["spec"]["grants"][0]["credits"]);
                ctx.publish(self, false, "StarterCreditsGranted", note).await;
            }
            let manager = cmp_crds::names::OPERATOR_MANAGER;
            applier.ensure_object::<Wallet>(wallets, Some(&ns), &wallet, &children.wallet, manager).await
        };
        futures::try_join!(wallet, applier.ensure_all(&children.roles))?;
        applier.ensure_all(&children.role_bindings).await
    }

    /// The namespace controller deletes what the control namespace holds;
    /// the Project pipeline finalizes the Projects in it (and their runtime namespaces).
    async fn cleanup(&self, ctx: &Context) -> Result<()> {
        if self.spec.deletion_policy == DeletionPolicy::Retain {
            tracing::info!("deletionPolicy Retain: leaving the control namespace in place");
            return Ok(());
        }
        let ns = control_namespace(&self.name_any());
        ctx.applier.delete::<Namespace>(&ns).await?;
        ctx.publish(self, false, "Deleting", format!("deleting control namespace {ns}")).await;
        Ok(())
    }

    fn operator_status(&self) -> Self::Status {
        self.status.clone().unwrap_or_default()
    }

    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition> {
        &mut status.conditions
    }
}
