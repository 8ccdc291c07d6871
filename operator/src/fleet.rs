//! Gauges of the fleet, counted from the operator's caches at each scrape:
//! how many Instances are Ready, still progressing or failed (by the reason
//! of their `Ready` condition), and how many Wallets are funded, low or
//! exhausted. The alert rules of the chart read them
//! (`charts/cmp/files/alerts.yaml`).
//!
//! Per-Wallet series are bounded: only Wallets whose `Funded` condition is
//! `Low` or `Exhausted` get a `cmp_operator_wallet_balance` series, and at
//! most [`MAX_WALLET_SERIES`] of them (the lowest balances); the counts by
//! state cover every Wallet. Every replica reports (standbys cache too), so
//! rules aggregate with `max`.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use cmp_crds::conditions::{self, reasons};
use cmp_crds::{Instance, Wallet};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::cache::Caches;

/// The most Wallets that get a balance series of their own.
pub const MAX_WALLET_SERIES: usize = 50;

/// Reasons of an Instance on its way to Ready, not stuck on a fault.
const PROGRESSING: &[&str] = &[
    reasons::PROVISIONING,
    reasons::ARTIFACT_PENDING,
    reasons::COMMITTING,
    reasons::COMMITTED,
    reasons::AWAITING_SYNC,
    reasons::AWAITING_GITOPS,
    reasons::TERMINATING,
];

/// What the caches hold now, counted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Instances by (`ready` | `progressing` | `failed`, the reason of `Ready`).
    pub instances: BTreeMap<(&'static str, String), i64>,
    /// Wallets by `funded` | `low` | `exhausted` | `unknown` (no `Funded` condition yet).
    pub wallets: BTreeMap<&'static str, i64>,
    /// The low and exhausted Wallets with the lowest balances: (organization, state, balance).
    pub lowest: Vec<(String, &'static str, i64)>,
}

/// The state of an Instance, with the reason of its `Ready` condition.
fn instance_state(instance: &Instance) -> (&'static str, String) {
    let ready = instance.status.as_ref().and_then(|s| conditions::find(&s.conditions, conditions::READY));
    match ready {
        None => ("progressing", reasons::PROVISIONING.to_string()),
        Some(c) if c.status == "True" => ("ready", c.reason.clone()),
        Some(c) if PROGRESSING.contains(&c.reason.as_str()) => ("progressing", c.reason.clone()),
        Some(c) => ("failed", c.reason.clone()),
    }
}

/// The funding state of a Wallet.
fn wallet_state(wallet: &Wallet) -> &'static str {
    let funded = wallet.status.as_ref().and_then(|s| conditions::find(&s.conditions, conditions::FUNDED));
    match funded {
        None => "unknown",
        Some(c) if c.status == "True" => "funded",
        Some(c) if c.reason == reasons::EXHAUSTED => "exhausted",
        Some(_) => "low",
    }
}

/// Counts `instances` and `wallets`.
pub fn tally<'a>(instances: impl Iterator<Item = &'a Instance>, wallets: impl Iterator<Item = &'a Wallet>) -> Tally {
    let mut tally = Tally::default();
    for instance in instances {
        *tally.instances.entry(instance_state(instance)).or_default() += 1;
    }
    for wallet in wallets {
        let state = wallet_state(wallet);
        *tally.wallets.entry(state).or_default() += 1;
        if matches!(state, "low" | "exhausted") {
            let balance = wallet.status.as_ref().map_or(0, |s| s.balance);
            tally.lowest.push((wallet.metadata.name.clone().unwrap_or_default(), state, balance));
        }
    }
    tally.lowest.sort_by(|a, b| a.2.cmp(&b.2).then_with(|| a.0.cmp(&b.0)));
    tally.lowest.truncate(MAX_WALLET_SERIES);
    tally
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    state: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WalletLabels {
    funded: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BalanceLabels {
    organization: String,
    funded: &'static str,
}

/// The collector: empty families until the caches are started (then counted at every scrape).
#[derive(Default, Clone)]
pub struct FleetCollector {
    caches: Arc<OnceLock<Arc<Caches>>>,
}

impl std::fmt::Debug for FleetCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetCollector").field("counting", &self.caches.get().is_some()).finish()
    }
}

impl FleetCollector {
    /// Counts from `caches` from now on.
    pub fn watch(&self, caches: Arc<Caches>) {
        let _ = self.caches.set(caches);
    }

    fn tally(&self) -> Tally {
        let Some(caches) = self.caches.get() else { return Tally::default() };
        let instances = caches.instances.state();
        let wallets = caches.wallets.state();
        tally(instances.iter().filter_map(|i| i.0.as_ref().ok()), wallets.iter().filter_map(|w| w.0.as_ref().ok()))
    }
}

impl Collector for FleetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let tally = self.tally();
        let instances = Family::<InstanceLabels, Gauge>::default();
        for ((state, reason), count) in tally.instances {
            instances.get_or_create(&InstanceLabels { state, reason }).set(count);
        }
        let wallets = Family::<WalletLabels, Gauge>::default();
        for (funded, count) in tally.wallets {
            wallets.get_or_create(&WalletLabels { funded }).set(count);
        }
        let balances = Family::<BalanceLabels, Gauge>::default();
        for (organization, funded, balance) in tally.lowest {
            balances.get_or_create(&BalanceLabels { organization, funded }).set(balance);
        }
        let help = "Instances by state (ready, progressing, failed) and the reason of their Ready condition";
        instances.encode(encoder.encode_descriptor("instances", help, None, instances.metric_type())?)?;
        let help = "Wallets by funding state (funded, low, exhausted, unknown)";
        wallets.encode(encoder.encode_descriptor("wallets", help, None, wallets.metric_type())?)?;
        let help = "The balance of each low or exhausted Wallet (at most 50, the lowest), by organization";
        balances.encode(encoder.encode_descriptor("wallet_balance", help, None, balances.metric_type())?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn instance(ready: Option<(&str, &str)>) -> Instance {
        let conditions = ready.map_or(json!([]), |(status, reason)| {
            json!([{"type": "Ready", "status": status, "reason": reason, "message": "m",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}])
        });
        serde_json::from_value(json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Instance",
            "metadata": {"name": "bot", "namespace": "cmp-acme"},
            "spec": {"project": "p", "offering": "o", "version": "1", "plan": "basic"},
            "status": {"conditions": conditions},
        }))
        .expect("an Instance")
    }

    fn wallet(name: &str, balance: i64, funded: Option<(&str, &str)>) -> Wallet {
        let conditions = funded.map_or(json!([]), |(status, reason)| {
            json!([{"type": "Funded", "status": status, "reason": reason, "message": "m",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}])
        });
        serde_json::from_value(json!({
            "apiVersion": "cmp.gsv.dev/v1alpha1", "kind": "Wallet",
            "metadata": {"name": name, "namespace": format!("cmp-{name}")},
            "spec": {},
            "status": {"balance": balance, "conditions": conditions},
        }))
        .expect("a Wallet")
    }

    #[test]
    fn instances_are_ready_progressing_or_failed_by_their_ready_reason() {
        let instances = [
            instance(Some(("True", "RuntimeReady"))),
            instance(Some(("False", "Provisioning"))),
            instance(Some(("False", "AwaitingSync"))),
            instance(None),
            instance(Some(("False", "SyncFailed"))),
            instance(Some(("False", "SyncFailed"))),
        ];
        let tally = tally(instances.iter(), std::iter::empty());
        let expected: BTreeMap<(&'static str, String), i64> = [
            (("ready", "RuntimeReady".to_string()), 1),
            (("progressing", "Provisioning".to_string()), 2),
            (("progressing", "AwaitingSync".to_string()), 1),
            (("failed", "SyncFailed".to_string()), 2),
        ]
        .into();
        assert_eq!(tally.instances, expected);
    }

    #[test]
    fn only_low_and_exhausted_wallets_get_a_series_and_at_most_fifty() {
        let mut wallets = vec![
            wallet("rich", 900, Some(("True", "Funded"))),
            wallet("new", 0, None),
            wallet("broke", 0, Some(("False", "Exhausted"))),
        ];
        wallets.extend((0..60).map(|i| wallet(&format!("low-{i:02}"), 100 - i, Some(("False", "Low")))));
        let tally = tally(std::iter::empty(), wallets.iter());
        assert_eq!(tally.wallets, [("funded", 1), ("unknown", 1), ("exhausted", 1), ("low", 60)].into());
        assert_eq!(tally.lowest.len(), MAX_WALLET_SERIES);
        assert_eq!(tally.lowest[0], ("broke".to_string(), "exhausted", 0));
        assert_eq!(tally.lowest[1], ("low-59".to_string(), "low", 41));
        assert!(tally.lowest.iter().all(|(name, _, _)| name != "rich" && name != "new"));
    }
}
