//! Credit arithmetic: a Wallet's balance from its grants and meters.
//!
//! Credits are integers. `balance = granted - consumed`, where `consumed` is
//! the compacted total plus every meter, and `granted` is the sum of the
//! grants less what was reversed and what expired unused. Consumption is
//! charged to grants in order of expiry (earliest first, grants that never
//! expire last, then in the order they were appended), so an expiring grant
//! is used up before a lasting one. A reversal lowers its grant's credits:
//! what it withdrew can never be charged or expire again.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::wallet::{CompactedUsage, Grant, Meter, Reversal};

/// A Wallet's figures, as written to its status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Credits of all grants, less what was reversed and what expired unused.
    pub granted: i64,
    /// Credits consumed (compacted total plus every meter).
    pub consumed: i64,
    /// granted - consumed (negative only through overdraft).
    pub balance: i64,
    /// Credits held by leases that have not expired.
    pub leased: i64,
}

/// Credits consumed: the compacted total plus every meter.
pub fn consumed(meters: &[Meter], compacted: Option<&CompactedUsage>) -> i64 {
    meters.iter().fold(compacted.map_or(0, |c| c.consumed), |sum, m| sum.saturating_add(m.consumed.max(0)))
}

/// True when the meter's lease still holds credits at `now`. A lease without
/// an expiry is treated as live: it never frees credits it might still spend.
pub fn lease_is_live(meter: &Meter, now: Timestamp) -> bool {
    meter.lease > 0 && meter.lease_expires_at.as_ref().is_none_or(|t| t.0 > now)
}

/// Credits held by live leases.
pub fn leased(meters: &[Meter], now: Timestamp) -> i64 {
    meters.iter().filter(|m| lease_is_live(m, now)).fold(0i64, |sum, m| sum.saturating_add(m.lease))
}

/// Computes a Wallet's figures at `now`.
pub fn figures(
    grants: &[Grant],
    reversals: &[Reversal],
    meters: &[Meter],
    compacted: Option<&CompactedUsage>,
    now: Timestamp,
) -> Figures {
    let consumed = consumed(meters, compacted);
    let granted = charge(grants, reversals, consumed, now).iter().fold(0i64, |sum, c| sum.saturating_add(c.counted));
    Figures { granted, consumed, balance: granted.saturating_sub(consumed), leased: leased(meters, now) }
}

/// The credits of each grant that are neither consumed, reversed nor
/// expired at `now`, when `consumed` credits are charged as the module says.
/// What a reversal of the grant may withdraw.
pub fn unspent<'g>(grants: &'g [Grant], reversals: &[Reversal], consumed: i64, now: Timestamp) -> Vec<(&'g str, i64)> {
    charge(grants, reversals, consumed, now).into_iter().map(|c| (c.grant.id.as_str(), c.unspent)).collect()
}

/// How a grant stands once consumption is charged.
struct Charged<'g> {
    grant: &'g Grant,
    /// What the grant adds to `granted`: its credits after reversal, or only
    /// the charged part once it expired.
    counted: i64,
    /// Credits still spendable from the grant.
    unspent: i64,
}

/// Charges `consumed` credits to the grants, earliest expiry first; grants
/// without expiry keep their appended order at the end. Returns the grants in
/// their original order.
fn charge<'g>(grants: &'g [Grant], reversals: &[Reversal], consumed: i64, now: Timestamp) -> Vec<Charged<'g>> {
    let mut order: Vec<usize> = (0..grants.len()).collect();
    order.sort_by_key(|&i| grants[i].expires_at.as_ref().map_or(Timestamp::MAX, |t| t.0));
    let mut left_to_charge = consumed.max(0);
    let mut charged: Vec<Option<Charged<'g>>> = grants.iter().map(|_| None).collect();
    for i in order {
        let grant = &grants[i];
        let reversed =
            reversals.iter().filter(|r| r.grant == grant.id).fold(0i64, |sum, r| sum.saturating_add(r.credits.max(0)));
        let credits = grant.credits.max(0).saturating_sub(reversed).max(0);
        let taken = left_to_charge.min(credits);
        left_to_charge -= taken;
        let expired = grant.expires_at.as_ref().is_some_and(|t| t.0 <= now);
        let (counted, unspent) = if expired { (taken, 0) } else { (credits, credits - taken) };
        charged[i] = Some(Charged { grant, counted, unspent });
    }
    charged.into_iter().flatten().collect()
}

/// Whether a Wallet can pay, and why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Funding {
    /// Balance at or above the threshold.
    Funded,
    /// Balance above the overdraft floor but below the threshold.
    Low,
    /// Nothing left to spend (balance at or below `-overdraft`).
    Exhausted,
}

/// Classifies a balance against the overdraft and the low-balance threshold.
pub fn funding(balance: i64, overdraft: i64, low_threshold: i64) -> Funding {
    if balance <= overdraft.saturating_neg() {
        Funding::Exhausted
    } else if balance < low_threshold {
        Funding::Low
    } else {
        Funding::Funded
    }
}

/// A meter is stale when it has not been written for `stale_after` and holds
/// no live lease: its replica is gone and it can be folded into the total.
pub fn meter_is_stale(meter: &Meter, now: Timestamp, stale_after: SignedDuration) -> bool {
    let last_write = meter.updated_at.as_ref().map(|t| t.0);
    let old = last_write.is_none_or(|t| now.duration_since(t) >= stale_after);
    old && !lease_is_live(meter, now)
}

/// How many folded meter names a [`CompactedUsage`] remembers.
pub const MAX_REMEMBERED_METERS: usize = 50;

/// Folds stale meters into the compacted total. Returns the meters to keep
/// and the new compacted total, or `None` when no meter is stale. The
/// consumed total is unchanged by construction.
pub fn compact(
    meters: &[Meter],
    compacted: Option<&CompactedUsage>,
    now: Timestamp,
    stale_after: SignedDuration,
) -> Option<(Vec<Meter>, CompactedUsage)> {
    let (stale, live): (Vec<&Meter>, Vec<&Meter>) = meters.iter().partition(|m| meter_is_stale(m, now, stale_after));
    if stale.is_empty() {
        return None;
    }
    let mut total = compacted.cloned().unwrap_or_default();
    for meter in stale {
        total.consumed = total.consumed.saturating_add(meter.consumed.max(0));
        total.runs = total.runs.saturating_add(meter.runs.max(0));
        total.meters.push(meter.name.clone());
    }
    let excess = total.meters.len().saturating_sub(MAX_REMEMBERED_METERS);
    total.meters.drain(..excess);
    Some((live.into_iter().cloned().collect(), total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wallet::GrantSource;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use proptest::prelude::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid timestamp")
    }

    fn grant(id: &str, credits: i64, expires: Option<i64>) -> Grant {
        Grant {
            id: id.into(),
            credits,
            reason: String::new(),
            source: GrantSource::Manual,
            order_ref: None,
            expires_at: expires.map(|s| Time(at(s))),
        }
    }

    fn meter(name: &str, consumed: i64, lease: i64, lease_expires: Option<i64>, updated: Option<i64>) -> Meter {
        Meter {
            name: name.into(),
            consumed,
            runs: consumed,
            lease,
            lease_expires_at: lease_expires.map(|s| Time(at(s))),
            updated_at: updated.map(|s| Time(at(s))),
        }
    }

    #[test]
    fn balance_is_grants_minus_meters_and_compacted() {
        let grants = [grant("starter", 1000, None), grant("order-1", 500, None)];
        let meters = [meter("a", 100, 0, None, Some(10)), meter("b", 50, 0, None, Some(10))];
        let compacted = CompactedUsage { consumed: 25, runs: 25, meters: vec!["old".into()] };
        let f = figures(&grants, &[], &meters, Some(&compacted), at(100));
        assert_eq!(f, Figures { granted: 1500, consumed: 175, balance: 1325, leased: 0 });
    }

    #[test]
    fn only_live_leases_count() {
        let meters =
            [meter("a", 0, 30, Some(200), None), meter("b", 0, 20, Some(50), None), meter("c", 0, 5, None, None)];
        assert_eq!(leased(&meters, at(100)), 35, "b's lease expired; c's has no expiry and counts");
    }

    #[test]
    fn an_expired_grant_forfeits_only_its_unused_part() {
        // 100 expiring at t=50 and 1000 lasting; 30 consumed, charged to the expiring grant first.
        let grants = [grant("lasting", 1000, None), grant("promo", 100, Some(50))];
        let meters = [meter("a", 30, 0, None, None)];
        let before = figures(&grants, &[], &meters, None, at(10));
        assert_eq!((before.granted, before.balance), (1100, 1070));
        let after = figures(&grants, &[], &meters, None, at(60));
        assert_eq!((after.granted, after.balance), (1030, 1000), "70 unused promo credits expired");
    }

    #[test]
    fn consumption_beyond_an_expired_grant_is_charged_to_the_others() {
        let grants = [grant("lasting", 1000, None), grant("promo", 100, Some(50))];
        let meters = [meter("a", 300, 0, None, None)];
        let f = figures(&grants, &[], &meters, None, at(60));
        assert_eq!((f.granted, f.balance), (1100, 800), "the promo was fully used before it expired");
    }

    fn reversal(grant: &str, credits: i64) -> Reversal {
        Reversal {
            id: format!("{grant}.reversed"),
            grant: grant.into(),
            credits,
            reason: String::new(),
            order_ref: None,
        }
    }

    #[test]
    fn a_reversal_withdraws_what_is_unspent_and_no_more() {
        // 1000 starter then 500 from an order; 1200 consumed: the starter first, then 200 of the order.
        let grants = [grant("starter", 1000, None), grant("order", 500, None)];
        let meters = [meter("a", 1200, 0, None, None)];
        assert_eq!(unspent(&grants, &[], 1200, at(10)), vec![("starter", 0), ("order", 300)]);
        let reversals = [reversal("order", 300)];
        let f = figures(&grants, &reversals, &meters, None, at(10));
        assert_eq!((f.granted, f.balance), (1200, 0), "the 300 unspent credits were withdrawn");
        assert_eq!(unspent(&grants, &reversals, 1200, at(10)), vec![("starter", 0), ("order", 0)]);
    }

    #[test]
    fn a_reversed_part_of_an_expiring_grant_does_not_expire_again() {
        let grants = [grant("lasting", 1000, None), grant("promo", 100, Some(50))];
        let reversals = [reversal("promo", 60)];
        let meters = [meter("a", 30, 0, None, None)];
        let f = figures(&grants, &reversals, &meters, None, at(60));
        assert_eq!((f.granted, f.balance), (1030, 1000), "30 charged to the promo; its other 10 expired");
    }

    #[test]
    fn funding_classifies_against_overdraft_and_threshold() {
        assert_eq!(funding(1000, 0, 100), Funding::Funded);
        assert_eq!(funding(100, 0, 100), Funding::Funded);
        assert_eq!(funding(99, 0, 100), Funding::Low);
        assert_eq!(funding(0, 0, 100), Funding::Exhausted);
        assert_eq!(funding(-10, 50, 100), Funding::Low, "within the overdraft");
        assert_eq!(funding(-50, 50, 100), Funding::Exhausted);
    }

    #[test]
    fn a_meter_with_a_live_lease_is_never_stale() {
        let stale_after = SignedDuration::from_secs(3600);
        assert!(meter_is_stale(&meter("gone", 10, 0, None, Some(0)), at(7200), stale_after));
        assert!(!meter_is_stale(&meter("recent", 10, 0, None, Some(7000)), at(7200), stale_after));
        assert!(!meter_is_stale(&meter("leased", 10, 5, Some(9000), Some(0)), at(7200), stale_after));
        assert!(meter_is_stale(&meter("expired-lease", 10, 5, Some(100), Some(0)), at(7200), stale_after));
        assert!(compact(&[meter("recent", 1, 0, None, Some(7000))], None, at(7200), stale_after).is_none());
    }

    fn arb_meter() -> impl Strategy<Value = Meter> {
        (0i64..1_000_000, 0i64..1000, proptest::option::of(0i64..20_000), proptest::option::of(0i64..20_000))
            .prop_map(|(consumed, lease, lease_expires, updated)| meter("m", consumed, lease, lease_expires, updated))
    }

    proptest! {
        /// Compaction never changes the consumed total, the balance or the leases.
        #[test]
        fn compaction_loses_no_credit(
            mut meters in proptest::collection::vec(arb_meter(), 0..20),
            grants in proptest::collection::vec((1i64..100_000, proptest::option::of(0i64..20_000)), 0..10),
            prior in 0i64..1_000_000,
            now in 0i64..20_000,
            stale_secs in 0i64..10_000,
        ) {
            for (i, m) in meters.iter_mut().enumerate() {
                m.name = format!("replica-{i}");
            }
            let grants: Vec<Grant> = grants.iter().enumerate().map(|(i, (c, e))| grant(&format!("g{i}"), *c, *e)).collect();
            let compacted = CompactedUsage { consumed: prior, runs: prior, meters: vec![] };
            let now = at(now);
            let stale_after = SignedDuration::from_secs(stale_secs);
            let before = figures(&grants, &[], &meters, Some(&compacted), now);
            if let Some((kept, total)) = compact(&meters, Some(&compacted), now, stale_after) {
                let after = figures(&grants, &[], &kept, Some(&total), now);
                prop_assert_eq!(before, after);
                prop_assert!(kept.iter().all(|m| !meter_is_stale(m, now, stale_after)));
                prop_assert!(kept.len() < meters.len());
                // Compacting again right away changes nothing.
                prop_assert!(compact(&kept, Some(&total), now, stale_after).is_none());
            }
        }

        /// Reversing a grant's unspent credits lowers the balance by exactly
        /// that much, and leaves nothing of it to reverse again.
        #[test]
        fn reversing_the_unspent_part_is_exact(
            grants in proptest::collection::vec((1i64..100_000, proptest::option::of(0i64..20_000)), 1..10),
            consumed in 0i64..500_000,
            now in 0i64..20_000,
            pick in 0usize..10,
        ) {
            let grants: Vec<Grant> = grants.iter().enumerate().map(|(i, (c, e))| grant(&format!("g{i}"), *c, *e)).collect();
            let meters = [meter("m", consumed, 0, None, None)];
            let target = &grants[pick % grants.len()];
            let before = figures(&grants, &[], &meters, None, at(now));
            let left = unspent(&grants, &[], consumed, at(now));
            let (_, amount) = left.iter().find(|(id, _)| *id == target.id).copied().expect("every grant is listed");
            prop_assert!((0..=target.credits).contains(&amount));
            if amount > 0 {
                let reversals = [reversal(&target.id, amount)];
                let after = figures(&grants, &reversals, &meters, None, at(now));
                prop_assert_eq!(after.balance, before.balance - amount);
                let again = unspent(&grants, &reversals, consumed, at(now));
                prop_assert!(again.iter().any(|(id, n)| *id == target.id && *n == 0));
            }
        }

        /// The balance is granted - consumed, and granted never exceeds the sum of grants.
        #[test]
        fn balance_identity_holds(
            meters in proptest::collection::vec(arb_meter(), 0..10),
            grants in proptest::collection::vec((1i64..100_000, proptest::option::of(0i64..20_000)), 0..10),
            now in 0i64..20_000,
        ) {
            let grants: Vec<Grant> = grants.iter().enumerate().map(|(i, (c, e))| grant(&format!("g{i}"), *c, *e)).collect();
            let f = figures(&grants, &[], &meters, None, at(now));
            prop_assert_eq!(f.balance, f.granted - f.consumed);
            prop_assert!(f.granted <= grants.iter().map(|g| g.credits).sum::<i64>());
            prop_assert_eq!(f.consumed, meters.iter().map(|m| m.consumed).sum::<i64>());
        }
    }
}
