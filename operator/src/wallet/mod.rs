//! The Wallet reconciler: granted, consumed, balance, leased and `Funded`
//! from spec and the gateway meters; stale meters folded into a compacted
//! total without losing a credit.

pub mod desired;

use std::sync::Arc;
use std::time::Duration;

use cmp_crds::Wallet;
use cmp_crds::names::organization_of_control_namespace;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::status;

/// The kind, for metrics and logs.
pub const KIND: &str = "Wallet";
/// Condition: the Wallet can pay for runs.
pub const FUNDED: &str = "Funded";

fn key(wallet: &Wallet) -> String {
    format!("{KIND}/{}/{}", wallet.namespace().unwrap_or_default(), wallet.name_any())
}

/// Reconciles one Wallet.
pub async fn reconcile(wallet: Arc<Wallet>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let result = converge(&wallet, &ctx).await;
    if result.is_ok() {
        ctx.backoff.succeeded(&key(&wallet));
    }
    result
}

/// Retries a failed reconcile with per-object exponential backoff.
pub fn error_policy(wallet: Arc<Wallet>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(KIND, error.reason());
    let delay = ctx.backoff.failed(&key(&wallet));
    tracing::warn!(wallet = %key(&wallet), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn converge(wallet: &Wallet, ctx: &Context) -> Result<Action> {
    let namespace = wallet.namespace().unwrap_or_default();
    // Only an operator restricted to some organizations needs to look the organization up.
    if !ctx.config.organization_selector.is_empty()
        && let Some(org) = organization_of_control_namespace(&namespace)
    {
        match ctx.organization(org).await {
            Ok(Some(_)) | Err(Error::OrganizationNotFound { .. }) => {}
            Ok(None) => return Ok(Action::await_change()),
            Err(e) => return Err(e),
        }
    }
    let requests = status::requests(wallet.annotations().into());
    let api = Api::<Wallet>::namespaced(ctx.client.clone(), &namespace);
    let now = Timestamp::now();
    let stale_after = SignedDuration::from_secs(ctx.config.meter_stale_after_seconds);
    if !requests.paused
        && let Some(patch) = desired::compaction_patch(wallet, now, stale_after)
    {
        let name = wallet.name_any();
        ctx.metrics.write(KIND, "patch_status");
        let params =
            PatchParams { field_manager: Some(cmp_crds::names::OPERATOR_MANAGER.into()), ..Default::default() };
        match api.patch_status(&name, &params, &Patch::<()>::Json(patch)).await {
            Ok(_) => {
                tracing::info!(wallet = %key(wallet), "folded stale gateway meters into the compacted total")
            }
            // The resourceVersion test failed: a replica wrote meanwhile. Read again and retry.
            Err(kube::Error::Api(status)) if status.code == 422 || status.code == 409 => {
                tracing::debug!(wallet = %key(wallet), "wallet changed while folding meters; retrying");
            }
            Err(e) => {
                return Err(Error::kube(format!("folding stale meters of Wallet {namespace}/{name}"))(e));
            }
        }
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    let current = desired::OperatorStatus::of(wallet.status.as_ref());
    let threshold = wallet.spec.low_balance_threshold.unwrap_or(ctx.config.low_balance_threshold);
    let mut next = desired::status(wallet, threshold, now);
    status::set_paused(&mut next.conditions, requests.paused, wallet.meta().generation);
    next.last_handled_reconcile_at = requests.reconcile_requested_at;
    let before = status::state(&current.conditions, FUNDED);
    ctx.applier.apply_status(&api, &wallet.name_any(), Some(&current), &next).await?;
    let after = status::state(&next.conditions, FUNDED);
    if before != after
        && let Some(funded) = cmp_crds::conditions::find(&next.conditions, FUNDED)
    {
        ctx.publish(wallet, funded.status != "True", &funded.reason, funded.message.clone()).await;
    }
    Ok(Action::requeue(desired::next_check(wallet, now, stale_after)))
}
