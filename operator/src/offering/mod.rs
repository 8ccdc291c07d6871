//! The Offering pipeline: checks each version's artifact against its sha256
//! (once: what is verified is not fetched again), and reports the latest
//! version, the plans and how many Instances use each.

pub mod desired;

use cmp_crds::Offering;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::cache::{Caches, Guarded, Watched, valid};
use crate::context::Context;
use crate::error::Result;
use crate::settings::Settings;
use crate::shell::{Desired, Reconcile};
use desired::{Observed, ToCheck};

impl Reconcile for Offering {
    type Observed = Observed;
    type Children = Vec<ToCheck>;
    type Status = cmp_crds::OfferingStatus;
    const FINALIZER: bool = false;
    const OBSERVE_AFTER_APPLY: bool = true;
    const EVENT_CONDITIONS: &'static [&'static str] =
        &[cmp_crds::conditions::READY, cmp_crds::conditions::ARTIFACTS_VERIFIED];

    fn watched(caches: &Caches) -> &Watched<Guarded<Self>> {
        &caches.offerings
    }

    fn observe(&self, ctx: &Context) -> Result<Observed> {
        let caches = &ctx.caches;
        let name = self.name_any();
        let instances = caches
            .instances
            .state()
            .iter()
            .filter_map(|i| valid(i))
            .filter(|i| i.spec.offering == name)
            .map(|i| (i.spec.version.clone(), i.spec.plan.clone()))
            .collect();
        let checked = self
            .spec
            .versions
            .iter()
            .filter_map(|v| {
                Some((v.name.clone(), ctx.artifacts.checked(&v.artifact.url, &v.artifact.sha256, &v.inputs)?))
            })
            .collect();
        Ok(Observed { instances, checked })
    }

    fn desired(
        &self,
        observed: &Observed,
        _settings: &Settings,
        now: Timestamp,
    ) -> Desired<Vec<ToCheck>, Self::Status> {
        desired::desired(self, observed, now)
    }

    async fn apply(&self, to_check: &Vec<ToCheck>, ctx: &Context) -> Result<()> {
        futures::future::join_all(to_check.iter().map(|c| ctx.artifacts.check(&c.url, &c.sha256, &c.inputs))).await;
        Ok(())
    }

    fn operator_status(&self) -> Self::Status {
        self.status.clone().unwrap_or_default()
    }

    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition> {
        &mut status.conditions
    }
}
