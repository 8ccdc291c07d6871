//! One replica's account of one Wallet: the lease it holds, what it has
//! reserved for runs in flight and what it has spent since its last write,
//! and the pure arithmetic of the next write of its meter.
//!
//! A replica's meter says `consumed` (spent and recorded) and `lease`
//! (credits it may still spend beyond that, until `leaseExpiresAt`). A write
//! is checked against the Wallet it read and sent with that Wallet's
//! resourceVersion as a precondition, so it only lands if, at that version,
//!
//! ```text
//! lease <= granted + overdraft - consumed(all meters and compacted) - live leases of the others
//! ```
//!
//! Runs are admitted in memory while `spent since the write + reserved +
//! price <= lease`. While a write is in flight, admission also stays within
//! the lease being written, so whichever of the two is in force after the
//! write covers every run admitted. Hence the credits admitted by all
//! replicas never exceed the balance.

use std::time::Duration;

use cmp_crds::Wallet;
use cmp_crds::credits;
use cmp_crds::wallet::Meter;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The window (seconds) spending is measured over to size leases.
const RATE_WINDOW: f64 = 0.25;

/// How the ledger sizes and renews leases.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeasePolicy {
    /// The lease's lifetime beyond the longest run it may pay for.
    pub base_ttl: Duration,
    /// How many seconds of spending at the current rate a lease holds.
    pub horizon: Duration,
    /// How often spending is written to the meter.
    pub flush_interval: Duration,
    /// After this long without runs, the lease is handed back.
    pub idle_after: Duration,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        Self {
            base_ttl: Duration::from_secs(30),
            horizon: Duration::from_secs(5),
            flush_interval: Duration::from_secs(1),
            idle_after: Duration::from_secs(30),
        }
    }
}

/// A write of the meter in flight: what it records as spent, and the lease it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    flushed: i64,
    lease: i64,
}

/// One replica's account of one Wallet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger {
    /// The lease of the last successful write.
    lease: i64,
    /// When that lease ends.
    lease_expires_at: Option<Timestamp>,
    /// Credits charged by settled runs since the last successful write.
    unflushed: i64,
    /// Runs settled since the last successful write.
    unflushed_runs: i64,
    /// Credits reserved by runs in flight.
    reserved: i64,
    /// The write in flight, if any.
    pending: Option<Pending>,
    /// The last successful write.
    last_write: Option<Timestamp>,
    /// The last run admitted.
    last_run: Option<Timestamp>,
    /// Credits per second, smoothed over windows of [`RATE_WINDOW`].
    rate: f64,
    /// The current window: when it began and what was charged in it.
    window: Option<(Timestamp, i64)>,
    /// The longest timeout (seconds) of the runs this Wallet paid for.
    longest_run: u64,
    /// A run is waiting for credits.
    wanted: i64,
}

/// What a run reserved; given back to [`Ledger::settle`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a reservation must be settled"]
pub struct Reservation {
    /// The credits reserved.
    pub credits: i64,
}

/// The next write of the meter.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterWrite {
    /// The meter entry to apply.
    pub meter: Meter,
    /// Credits (and runs) of the ledger it records, to subtract once written.
    pub flushed: i64,
    /// Runs it records.
    pub flushed_runs: i64,
    /// What was free for this replica when it was planned.
    pub free: i64,
}

fn seconds(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

impl Ledger {
    /// Credits this replica may still admit at `now` for a run that may last `timeout`.
    pub fn spendable(&self, now: Timestamp, timeout: Duration) -> i64 {
        let fits = self.lease_expires_at.is_some_and(|end| now + seconds(timeout) + SignedDuration::from_secs(2) < end);
        if !fits {
            return 0;
        }
        let used = self.unflushed + self.reserved;
        let mut left = self.lease - used;
        if let Some(p) = self.pending {
            left = left.min(p.flushed + p.lease - used);
        }
        left.max(0)
    }

    /// Reserves `credits` for a run, if the lease holds them.
    pub fn reserve(&mut self, credits: i64, timeout: Duration, now: Timestamp) -> Option<Reservation> {
        self.longest_run = self.longest_run.max(timeout.as_secs());
        if credits > self.spendable(now, timeout) {
            self.wanted = self.wanted.max(credits);
            return None;
        }
        self.reserved += credits;
        self.last_run = Some(now);
        Some(Reservation { credits })
    }

    /// Ends a run: its reservation is released and `charged` (at most the
    /// reservation) is spent.
    pub fn settle(&mut self, reservation: Reservation, charged: i64, now: Timestamp) {
        let charged = charged.clamp(0, reservation.credits);
        self.reserved -= reservation.credits;
        self.unflushed += charged;
        self.unflushed_runs += 1;
        self.observe_rate(charged, now);
    }

    /// Adds `charged` to the current window; a window of [`RATE_WINDOW`] or
    /// more moves the rate halfway towards its own rate (and the rate never
    /// lags a window that spent faster, so a burst grows leases at once).
    fn observe_rate(&mut self, charged: i64, now: Timestamp) {
        let (start, credits) = self.window.get_or_insert((now, 0));
        *credits += charged;
        let elapsed = now.duration_since(*start).as_secs_f64();
        if elapsed >= RATE_WINDOW {
            let windowed = *credits as f64 / elapsed;
            self.rate = windowed.max((self.rate + windowed) / 2.0);
            self.window = Some((now, 0));
        }
    }

    /// Whether a run is waiting for credits this ledger does not hold.
    pub fn wanting(&self) -> bool {
        self.wanted > 0
    }

    /// Credits of the lease not yet spent or reserved.
    pub fn remaining(&self) -> i64 {
        self.lease - self.unflushed - self.reserved
    }

    /// The lease this replica should hold now, or `None` when no write is due.
    pub fn due(&self, policy: &LeasePolicy, now: Timestamp) -> Option<i64> {
        if self.pending.is_some() {
            return None;
        }
        let since = |t: Option<Timestamp>| t.map_or(SignedDuration::MAX, |t| now.duration_since(t));
        let remaining = self.lease - self.unflushed - self.reserved;
        let target = self.target(policy);
        let ttl_left = self.lease_expires_at.map_or(SignedDuration::ZERO, |end| end.duration_since(now));
        let renew_before = seconds(policy.base_ttl / 2) + SignedDuration::from_secs(self.longest_run as i64);
        let idle = since(self.last_run) >= seconds(policy.idle_after);
        if idle && self.reserved == 0 && !self.wanting() {
            return (self.lease > 0 || self.unflushed > 0).then_some(0);
        }
        let low = remaining * 2 < target || self.wanting();
        let renew = self.lease > 0 && ttl_left <= renew_before;
        let flush = self.unflushed > 0 && since(self.last_write) >= seconds(policy.flush_interval);
        if low || renew {
            Some(target.max(remaining))
        } else if flush {
            Some(remaining.max(0))
        } else {
            None
        }
    }

    /// The lease size for the current rate: `horizon` of spending, at least
    /// twice what a waiting run needs.
    fn target(&self, policy: &LeasePolicy) -> i64 {
        let by_rate = (self.rate * policy.horizon.as_secs_f64()).ceil() as i64;
        by_rate.max(self.wanted.saturating_mul(2)).max(1)
    }

    /// Plans the write of meter `name` into `wallet` (as read, at its
    /// resourceVersion) asking for a lease of `want`; marks it in flight.
    pub fn plan(&mut self, wallet: &Wallet, name: &str, want: i64, policy: &LeasePolicy, now: Timestamp) -> MeterWrite {
        let status = wallet.status.clone().unwrap_or_default();
        let ours = status.meters.iter().find(|m| m.name == name);
        // The meter as the Wallet holds it: absent when never written, or
        // folded into the compacted total by the operator (then the total
        // holds what it recorded).
        let (base, base_runs) = ours.map_or((0, 0), |m| (m.consumed, m.runs));
        let mut meter = Meter {
            name: name.to_string(),
            consumed: base + self.unflushed,
            runs: base_runs + self.unflushed_runs,
            lease: 0,
            lease_expires_at: None,
            updated_at: Some(Time(now)),
        };
        let mut meters: Vec<Meter> = status.meters.iter().filter(|m| m.name != name).cloned().collect();
        let others_leased = credits::leased(&meters, now);
        meters.push(meter.clone());
        let figures =
            credits::figures(&wallet.spec.grants, &wallet.spec.reversals, &meters, status.compacted.as_ref(), now);
        let free = figures.balance.saturating_add(wallet.spec.overdraft).saturating_sub(others_leased);
        let share = ((free.max(0) + 1) / 2).max(self.wanted.min(free));
        meter.lease = want.min(share).max(self.reserved).max(0);
        if meter.lease > 0 {
            let ttl = policy.base_ttl + Duration::from_secs(2 * self.longest_run);
            meter.lease_expires_at = Some(Time(now + seconds(ttl)));
        }
        self.pending = Some(Pending { flushed: self.unflushed, lease: meter.lease });
        MeterWrite { meter, flushed: self.unflushed, flushed_runs: self.unflushed_runs, free }
    }

    /// The planned write landed.
    pub fn written(&mut self, write: &MeterWrite) {
        self.pending = None;
        self.unflushed -= write.flushed;
        self.unflushed_runs -= write.flushed_runs;
        self.lease = write.meter.lease;
        self.lease_expires_at = write.meter.lease_expires_at.as_ref().map(|t| t.0);
        self.last_write = write.meter.updated_at.as_ref().map(|t| t.0);
        // Waiting runs look again: they fit now, or the write's `free` says they never will.
        self.wanted = 0;
    }

    /// The planned write did not land; the old lease stays in force.
    pub fn failed(&mut self) {
        self.pending = None;
        self.wanted = 0;
    }
}

#[cfg(test)]
mod tests;
