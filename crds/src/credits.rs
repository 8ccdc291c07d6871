//! Credit arithmetic: a Wallet's balance from its grants and meters.
//!
//! Credits are integers. `balance = granted - consumed`, where `consumed` is
//! the compacted total plus every meter, and `granted` is the sum of the
//! grants less what expired unused. Consumption is charged to grants in
//! order of expiry (earliest first, grants that never expire last), so an
//! expiring grant is used up before a lasting one.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::wallet::{CompactedUsage, Grant, Meter};

/// A Wallet's figures, as written to its status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Credits of all grants, less what expired unused.
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
    meters
        .iter()
        .fold(compacted.map_or(0, |c| c.consumed), |sum, m| {
            sum.saturating_add(m.consumed.max(0))
        })
}

/// True when the meter's lease still holds credits at `now`. A lease without
/// an expiry is treated as live: it never frees credits it might still spend.
pub fn lease_is_live(meter: &Meter, now: Timestamp) -> bool {
    meter.lease > 0 && meter.lease_expires_at.as_ref().is_none_or(|t| t.0 > now)
}

/// Credits held by live leases.
pub fn leased(meters: &[Meter], now: Timestamp) -> i64 {
    meters
        .iter()
        .filter(|m| lease_is_live(m, now))
        .fold(0i64, |sum, m| sum.saturating_add(m.lease))
}

/// Computes a Wallet's figures at `now`.
pub fn figures(
    grants: &[Grant],
    meters: &[Meter],
    compacted: Option<&CompactedUsage>,
    now: Timestamp,
) -> Figures {
    let consumed = consumed(meters, compacted);
    let granted = granted_after_expiry(grants, consumed, now);
    Figures {
        granted,
        consumed,
        balance: granted.saturating_sub(consumed),
        leased: leased(meters, now),
    }
}

/// Sum of grants less the unused part of expired grants, when `consumed`
/// credits are charged to grants earliest expiry first.
fn granted_after_expiry(grants: &[Grant], consumed: i64, now: Timestamp) -> i64 {
    let mut order: Vec<&Grant> = grants.iter().collect();
    // Stable sort: grants without expiry keep their order at the end.
    order.sort_by_key(|g| g.expires_at.as_ref().map_or(Timestamp::MAX, |t| t.0));
    let mut left_to_charge = consumed.max(0);
    let mut granted = 0i64;
    for grant in order {
        let credits = grant.credits.max(0);
        let charged = left_to_charge.min(credits);
        left_to_charge -= charged;
        let expired = grant.expires_at.as_ref().is_some_and(|t| t.0 <= now);
        granted = granted.saturating_add(if expired { charged } else { credits });
    }
    granted
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
    let (stale, live): (Vec<&Meter>, Vec<&Meter>) = meters
        .iter()
        .partition(|m| meter_is_stale(m, now, stale_after));
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
