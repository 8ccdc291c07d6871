//! The Instance pipeline, as far as it goes today: the references to its
//! Organization and Project, `Suspended` derived from its own spec and its
//! cached Organization, and the runtime namespace. The Instance writes its
//! own status alone; provisioning the runtime (the Offering, API keys,
//! GitOps) is built on this pipeline next.

pub mod desired;

use cmp_crds::Instance;
use cmp_crds::names::organization_of_control_namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::cache::{Caches, Guarded, OrganizationLookup, Watched, valid};
use crate::context::Context;
use crate::error::Result;
use crate::settings::Settings;
use crate::shell::{Desired, Reconcile};
use desired::Observed;

impl Reconcile for Instance {
    type Observed = Observed;
    /// Nothing yet: the runtime arrives with provisioning.
    type Children = ();
    type Status = cmp_crds::InstanceStatus;
    const FINALIZER: bool = false;

    fn watched(caches: &Caches) -> &Watched<Guarded<Self>> {
        &caches.instances
    }

    fn observe(&self, caches: &Caches) -> Result<Observed> {
        let namespace = self.namespace().unwrap_or_default();
        let organization = match organization_of_control_namespace(&namespace).map(|o| caches.organization(o)) {
            Some(OrganizationLookup::Selected(org)) => valid(&org).cloned(),
            _ => None,
        };
        let project = caches.projects.get(&self.spec.project, Some(&namespace)).as_deref().and_then(valid).cloned();
        Ok(Observed { organization, project })
    }

    fn desired(&self, observed: &Observed, _settings: &Settings, now: Timestamp) -> Desired<(), Self::Status> {
        desired::desired(self, observed, now)
    }

    async fn apply(&self, _children: &(), _ctx: &Context) -> Result<()> {
        Ok(())
    }

    fn operator_status(&self) -> Self::Status {
        self.status.clone().unwrap_or_default()
    }

    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition> {
        &mut status.conditions
    }
}
