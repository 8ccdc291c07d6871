//! The Wallet pipeline: granted, consumed, balance, leased, `Funded` and
//! `Ready` from the grants and the gateways' meters; stale meters folded
//! into a compacted total without losing a credit.
//!
//! Three kinds of writers share a Wallet's status, each owning its fields
//! by server-side apply: the operator (the figures and conditions), each
//! gateway replica (its own meter entry). Folding stale meters is a JSON
//! patch guarded by the resourceVersion, so it never loses a replica's write.

pub mod desired;

use cmp_crds::Wallet;
use cmp_crds::conditions::{FUNDED, READY};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;

use crate::apply::await_cached;
use crate::cache::{Caches, Guarded, Watched};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::settings::Settings;
use crate::shell::{Desired, Reconcile};
use desired::OperatorStatus;

impl Reconcile for Wallet {
    /// A Wallet needs nothing but itself.
    type Observed = ();
    /// The JSON patch that folds stale meters, when one is due.
    type Children = json_patch::Patch;
    type Status = OperatorStatus;
    const FINALIZER: bool = false;
    const EVENT_CONDITIONS: &'static [&'static str] = &[FUNDED, READY];
    /// The gateway replicas write their meters into the same status.
    const SOLE_STATUS_WRITER: bool = false;

    fn watched(caches: &Caches) -> &Watched<Guarded<Self>> {
        &caches.wallets
    }

    fn observe(&self, _ctx: &Context) -> Result<()> {
        Ok(())
    }

    fn desired(
        &self,
        _observed: &(),
        settings: &Settings,
        now: Timestamp,
    ) -> Desired<json_patch::Patch, OperatorStatus> {
        desired::desired(self, settings, now)
    }

    async fn apply(&self, fold: &json_patch::Patch, ctx: &Context) -> Result<()> {
        let name = self.name_any();
        ctx.metrics.write("Wallet", "patch_status");
        let params =
            PatchParams { field_manager: Some(cmp_crds::names::OPERATOR_MANAGER.into()), ..Default::default() };
        let api = ctx.applier.api_for::<Wallet>(self);
        match api.patch_status(&name, &params, &Patch::<()>::Json(fold.clone())).await {
            Ok(written) => {
                tracing::info!("folded stale gateway meters into the compacted total");
                let key = ObjectRef::new(&name).within(&self.namespace().unwrap_or_default());
                await_cached(&ctx.caches.wallets.store(), &key, written.resource_version()).await;
                Ok(())
            }
            // The resourceVersion test failed: a replica wrote meanwhile. Its write
            // brings the Wallet back, and the fold is computed again from it.
            Err(kube::Error::Api(status)) if status.code == 422 || status.code == 409 => {
                tracing::debug!("the wallet changed while folding meters; folding again from the new one");
                Ok(())
            }
            Err(e) => Err(Error::kube(format!("folding the stale meters of Wallet {name}"))(e)),
        }
    }

    fn operator_status(&self) -> OperatorStatus {
        OperatorStatus::of(self.status.as_ref())
    }

    fn conditions(status: &mut OperatorStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }
}
