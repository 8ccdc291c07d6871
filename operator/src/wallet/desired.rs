//! A Wallet's status as the operator computes it, and the fold of stale
//! meters: pure functions of the Wallet, the settings and `now`.

use std::time::Duration;

use cmp_crds::Wallet;
use cmp_crds::conditions::{self, FUNDED, NewCondition, READY, reasons, set_condition};
use cmp_crds::credits::{self, Funding};
use cmp_crds::names::Steering;
use cmp_crds::wallet::WalletStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Resource, ResourceExt};
use serde::Serialize;

use crate::settings::Settings;
use crate::shell::Desired;

/// How soon to look again after folding meters (the fold's own write
/// brings the Wallet back sooner, with its new figures).
pub const AFTER_FOLD: Duration = Duration::from_secs(1);

/// The part of a Wallet's status the operator owns (server-side apply):
/// everything but the gateways' meters and the compacted total.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorStatus {
    /// The generation of the spec this status describes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// See [`WalletStatus::granted`].
    pub granted: i64,
    /// See [`WalletStatus::consumed`].
    pub consumed: i64,
    /// See [`WalletStatus::balance`].
    pub balance: i64,
    /// See [`WalletStatus::leased`].
    pub leased: i64,
    /// The annotation value last acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// `Funded`, `Ready` and `Paused`.
    pub conditions: Vec<Condition>,
}

impl OperatorStatus {
    /// The operator's part of an existing status.
    pub fn of(status: Option<&WalletStatus>) -> Self {
        status.map_or_else(Self::default, |s| Self {
            observed_generation: s.observed_generation,
            granted: s.granted,
            consumed: s.consumed,
            balance: s.balance,
            leased: s.leased,
            last_handled_reconcile_at: s.last_handled_reconcile_at.clone(),
            conditions: s.conditions.clone(),
        })
    }
}

/// The figures, `Funded` and `Ready` of `wallet` at `now`. Figures are
/// observations, so they are kept up to date even while the Wallet is paused
/// (pausing stops only the fold of stale meters).
pub fn status(wallet: &Wallet, low_threshold: i64, now: Timestamp) -> OperatorStatus {
    let current = wallet.status.as_ref();
    let meters = current.map(|s| s.meters.as_slice()).unwrap_or_default();
    let compacted = current.and_then(|s| s.compacted.as_ref());
    let f = credits::figures(&wallet.spec.grants, &wallet.spec.reversals, meters, compacted, now);
    let steering = Steering::of(wallet.annotations());
    let mut next = OperatorStatus::of(current);
    next.observed_generation = wallet.meta().generation;
    next.granted = f.granted;
    next.consumed = f.consumed;
    next.balance = f.balance;
    next.leased = f.leased;
    next.last_handled_reconcile_at = steering.reconcile_requested_at;
    let available = f.balance.saturating_add(wallet.spec.overdraft);
    let funded = match credits::funding(f.balance, wallet.spec.overdraft, low_threshold) {
        Funding::Funded => NewCondition::new(FUNDED, true, reasons::FUNDED, format!("{available} credits available")),
        Funding::Low => NewCondition::new(
            FUNDED,
            false,
            reasons::LOW,
            format!(
                "{available} credits available, below the threshold of {low_threshold}: add a grant (top up) to keep runs going"
            ),
        ),
        Funding::Exhausted => NewCondition::new(
            FUNDED,
            false,
            reasons::EXHAUSTED,
            format!("no credits left (balance {}): runs are refused until a grant is added", f.balance),
        ),
    };
    let ready = NewCondition::new(READY, true, reasons::RECONCILED, "the figures cover every grant and meter");
    for c in [funded, ready, conditions::paused(steering.paused)] {
        set_condition(&mut next.conditions, c, next.observed_generation, Time(now));
    }
    next
}

/// The Wallet pipeline's decision: fold stale meters first (unless paused),
/// else the figures.
pub fn desired(wallet: &Wallet, settings: &Settings, now: Timestamp) -> Desired<json_patch::Patch, OperatorStatus> {
    let paused = Steering::of(wallet.annotations()).paused;
    if !paused && let Some(fold) = compaction_patch(wallet, now, settings.meter_stale_after) {
        return Desired {
            children: Some(fold),
            status: OperatorStatus::of(wallet.status.as_ref()),
            requeue: Some(AFTER_FOLD),
        };
    }
    let threshold = wallet.spec.low_balance_threshold.unwrap_or(settings.low_balance_threshold);
    let requeue = next_check(wallet, now, settings.meter_stale_after);
    Desired { children: None, status: status(wallet, threshold, now), requeue: Some(requeue) }
}

/// A JSON patch of the status subresource that folds the stale meters into
/// the compacted total, or `None` when no meter is stale. It first tests the
/// resourceVersion that was read, so a concurrent meter write makes it fail
/// instead of losing that write; it removes only the stale entries (by index,
/// from the last) and leaves every other meter byte for byte as its replica
/// wrote it, so each replica keeps owning its own entry.
pub fn compaction_patch(wallet: &Wallet, now: Timestamp, stale_after: SignedDuration) -> Option<json_patch::Patch> {
    let status = wallet.status.as_ref()?;
    let (_, total) = credits::compact(&status.meters, status.compacted.as_ref(), now, stale_after)?;
    let mut ops = vec![serde_json::json!({
        "op": "test", "path": "/metadata/resourceVersion", "value": wallet.metadata.resource_version,
    })];
    for (index, _) in
        status.meters.iter().enumerate().rev().filter(|(_, m)| credits::meter_is_stale(m, now, stale_after))
    {
        ops.push(serde_json::json!({"op": "remove", "path": format!("/status/meters/{index}")}));
    }
    ops.push(serde_json::json!({"op": "add", "path": "/status/compacted", "value": total}));
    serde_json::from_value(serde_json::Value::Array(ops)).ok()
}

/// When to look at the Wallet again: when the next lease expires (the
/// leased figure drops) or the next meter turns stale; at most 10 minutes.
pub fn next_check(wallet: &Wallet, now: Timestamp, stale_after: SignedDuration) -> Duration {
    const LONGEST: Duration = Duration::from_secs(600);
    let meters = wallet.status.as_ref().map(|s| s.meters.as_slice()).unwrap_or_default();
    let lease_expiries = meters.iter().filter_map(|m| m.lease_expires_at.as_ref().map(|t| t.0)).filter(|t| *t > now);
    let stale_times = meters
        .iter()
        .filter_map(|m| m.updated_at.as_ref().and_then(|t| t.0.checked_add(stale_after).ok()))
        .filter(|t| *t > now);
    lease_expiries
        .chain(stale_times)
        .min()
        .and_then(|t| Duration::try_from(now.duration_until(t)).ok())
        .map_or(LONGEST, |d| (d + Duration::from_secs(1)).min(LONGEST))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmp_crds::WalletSpec;
    use cmp_crds::wallet::{Grant, GrantSource, Meter};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    fn wallet(credits: i64, meters: Vec<Meter>) -> Wallet {
        let mut w = Wallet::new(
            "acme",
            WalletSpec {
                grants: vec![Grant {
                    id: "starter".into(),
                    credits,
                    reason: String::new(),
                    source: GrantSource::Starter,
                    order_ref: None,
                    expires_at: None,
                }],
                ..Default::default()
            },
        );
        w.status = Some(WalletStatus { meters, ..Default::default() });
        w
    }

    fn meter(name: &str, consumed: i64, updated: i64, lease: i64, lease_expires: i64) -> Meter {
        Meter {
            name: name.into(),
            consumed,
            runs: consumed,
            lease,
            lease_expires_at: Some(Time(at(lease_expires))),
            updated_at: Some(Time(at(updated))),
        }
    }

    fn funded(s: &OperatorStatus) -> (String, String) {
        conditions::state(&s.conditions, FUNDED).expect("Funded is set")
    }

    #[test]
    fn funded_low_and_exhausted() {
        let s = status(&wallet(1000, vec![meter("a", 100, 0, 0, 0)]), 100, at(10));
        assert_eq!((s.granted, s.consumed, s.balance), (1000, 100, 900));
        assert_eq!(funded(&s), ("True".into(), "Funded".into()));
        let s = status(&wallet(1000, vec![meter("a", 950, 0, 0, 0)]), 100, at(10));
        assert_eq!(funded(&s), ("False".into(), "Low".into()));
        let s = status(&wallet(1000, vec![meter("a", 1000, 0, 0, 0)]), 100, at(10));
        assert_eq!(funded(&s), ("False".into(), "Exhausted".into()));
    }

    #[test]
    fn the_compaction_patch_removes_only_stale_meters_and_keeps_the_balance() {
        let mut w = wallet(
            1000,
            vec![meter("gone-1", 300, 0, 0, 0), meter("live", 50, 5000, 10, 9000), meter("gone-2", 7, 10, 0, 0)],
        );
        w.metadata.resource_version = Some("42".into());
        let stale_after = SignedDuration::from_secs(3600);
        let before = status(&w, 100, at(6000));
        let patch = compaction_patch(&w, at(6000), stale_after).expect("two meters are stale");
        let ops = serde_json::to_value(&patch).expect("json");
        assert_eq!(ops[0], serde_json::json!({"op": "test", "path": "/metadata/resourceVersion", "value": "42"}));
        assert_eq!(ops[1]["path"], "/status/meters/2", "removed from the last index first");
        assert_eq!(ops[2]["path"], "/status/meters/0");

        let mut folded = serde_json::to_value(&w).expect("json");
        json_patch::patch(&mut folded, &patch).expect("the patch applies");
        let folded: Wallet = serde_json::from_value(folded).expect("a wallet");
        let meters = &folded.status.as_ref().expect("status").meters;
        assert_eq!(meters.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["live"]);
        let after = status(&folded, 100, at(6000));
        assert_eq!((before.balance, before.consumed, before.leased), (after.balance, after.consumed, after.leased));
        assert!(compaction_patch(&folded, at(6000), stale_after).is_none(), "nothing left to fold");
    }

    #[test]
    fn next_check_is_the_next_lease_expiry() {
        let w = wallet(1000, vec![meter("a", 0, 100, 5, 130)]);
        assert_eq!(next_check(&w, at(100), SignedDuration::from_secs(3600)), Duration::from_secs(31));
        assert_eq!(next_check(&wallet(1, vec![]), at(100), SignedDuration::from_secs(3600)), Duration::from_secs(600));
    }

    #[test]
    fn stale_meters_are_folded_first_and_the_figures_follow() {
        let mut w = wallet(1000, vec![meter("gone", 300, 0, 0, 0)]);
        w.metadata.resource_version = Some("7".into());
        let d = desired(&w, &Settings::default(), at(6000));
        assert!(d.children.is_some(), "the fold comes first");
        assert_eq!(d.status, OperatorStatus::of(w.status.as_ref()), "no status is written with the fold");
        assert_eq!(d.requeue, Some(AFTER_FOLD));
    }

    #[test]
    fn a_paused_wallet_keeps_its_figures_current_but_folds_nothing() {
        let mut w = wallet(1000, vec![meter("gone", 300, 0, 0, 0)]);
        w.metadata.annotations = Some([("cmp.gsv.dev/paused".to_string(), "true".to_string())].into());
        let d = desired(&w, &Settings::default(), at(6000));
        assert!(d.children.is_none(), "no fold while paused");
        assert_eq!((d.status.granted, d.status.consumed, d.status.balance), (1000, 300, 700));
        assert_eq!(
            conditions::state(&d.status.conditions, "Paused"),
            Some(("True".into(), "PausedByAnnotation".into()))
        );
    }

    #[test]
    fn a_converged_wallet_is_ready_and_computes_the_same_status_again() {
        let mut w = wallet(1000, vec![meter("live", 10, 5000, 0, 0)]);
        let first = desired(&w, &Settings::default(), at(6000)).status;
        assert_eq!(conditions::state(&first.conditions, "Ready"), Some(("True".into(), "Reconciled".into())));
        let status = w.status.get_or_insert_with(Default::default);
        (status.granted, status.consumed, status.balance, status.conditions) =
            (first.granted, first.consumed, first.balance, first.conditions.clone());
        status.observed_generation = first.observed_generation;
        let again = desired(&w, &Settings::default(), at(6001)).status;
        assert_eq!(again, first, "nothing to write");
    }
}
