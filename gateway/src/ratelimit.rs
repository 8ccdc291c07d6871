//! Per-key rate limits that hold across replicas with no call on the run
//! path.
//!
//! Each replica keeps a token bucket per API key and measures the key's
//! demand (requests offered per second, smoothed). Replicas tell each other
//! their demands a few times a second ([`crate::peers`]). A replica's bucket
//! holds its share (of the key's total demand) of a minute's allowance and
//! refills at its share of the plan's rate: the bucket is kept as the
//! fraction it is full, which refills at the same pace on every replica, so
//! a share that changes rescales the tokens with it. Shares add up to one,
//! so the replicas together admit the plan's rate, and one minute's burst,
//! whichever of them the key's traffic reaches. A replica that has heard of
//! no other demand takes all of it; a report older than [`REPORT_TTL`] no
//! longer counts. A share's bucket holds at least one request, so a plan
//! slower than one request per replica per minute may admit a little more.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a peer's demand report counts.
pub const REPORT_TTL: Duration = Duration::from_secs(2);
/// The time constant of the demand average.
const DEMAND_WINDOW: f64 = 2.0;
/// How many keys before idle buckets are swept away.
const SWEEP_ABOVE: usize = 100_000;

/// A decision for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Whether the request may run.
    pub allowed: bool,
    /// The limit (requests per minute).
    pub limit: u32,
    /// Whole requests left now on this replica.
    pub remaining: u32,
    /// When refused: whole seconds until one request is allowed.
    pub retry_after: u64,
}

#[derive(Debug, Clone)]
struct Bucket {
    /// How full the bucket is, from 0 to 1.
    fill: f64,
    at: Option<Instant>,
    /// Requests offered per second here, smoothed.
    demand: f64,
    /// Other replicas' demand for the key: replica → (demand, when heard).
    remote: HashMap<String, (f64, Instant)>,
}

impl Default for Bucket {
    fn default() -> Self {
        Self { fill: 1.0, at: None, demand: 0.0, remote: HashMap::new() }
    }
}

impl Bucket {
    fn share(&self, now: Instant) -> f64 {
        let others: f64 = self
            .remote
            .values()
            .filter(|(_, heard)| now.saturating_duration_since(*heard) < REPORT_TTL)
            .map(|(demand, _)| demand)
            .sum();
        if others <= 0.0 { 1.0 } else { self.demand / (self.demand + others) }
    }

    /// The demand as it stands at `now` (it fades with time since the last request).
    fn demand_at(&self, now: Instant) -> f64 {
        let elapsed = self.at.map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        self.demand * (-elapsed / DEMAND_WINDOW).exp()
    }

    fn decay(&mut self, now: Instant) {
        self.demand = self.demand_at(now);
    }
}

/// Takes one request from `bucket` at `limit` per minute.
fn take(bucket: &mut Bucket, limit: u32, now: Instant) -> Decision {
    let per_second = f64::from(limit) / 60.0;
    bucket.decay(now);
    let elapsed = bucket.at.map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
    bucket.demand += 1.0 / DEMAND_WINDOW;
    bucket.at = Some(now);
    // The fill refills at the plan's rate over its minute, on every replica alike.
    bucket.fill = (bucket.fill + elapsed * per_second / f64::from(limit)).min(1.0);
    let capacity = (f64::from(limit) * bucket.share(now)).max(1.0);
    let tokens = bucket.fill * capacity;
    if tokens >= 1.0 {
        bucket.fill -= 1.0 / capacity;
        Decision { allowed: true, limit, remaining: (tokens - 1.0).floor() as u32, retry_after: 0 }
    } else {
        // (1 - tokens) more tokens, at capacity/minute-of-allowance per second.
        let wait = (1.0 - tokens) / (capacity * per_second / f64::from(limit));
        Decision { allowed: false, limit, remaining: 0, retry_after: wait.ceil().clamp(1.0, 60.0) as u64 }
    }
}

/// The buckets of every key seen.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Takes one request of key `key` at `per_minute`, at `now`.
    pub fn check(&self, key: &str, per_minute: u32, now: Instant) -> Decision {
        let limit = per_minute.max(1);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() > SWEEP_ABOVE {
            buckets.retain(|_, b| b.at.is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(120)));
        }
        match buckets.get_mut(key) {
            Some(bucket) => take(bucket, limit, now),
            None => take(buckets.entry(key.to_string()).or_default(), limit, now),
        }
    }

    /// This replica's demand per key, for its peers (keys with no demand left out).
    pub fn demand_report(&self, now: Instant) -> Vec<(String, f64)> {
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        buckets
            .iter()
            .filter_map(|(key, bucket)| {
                let decayed = bucket.demand_at(now);
                (decayed > 0.01).then(|| (key.clone(), decayed))
            })
            .collect()
    }

    /// Records peer `replica`'s demand for `key`.
    pub fn remote_demand(&self, replica: &str, key: &str, demand: f64, now: Instant) {
        if !demand.is_finite() || demand < 0.0 {
            return;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(key.to_string()).or_default();
        bucket.remote.insert(replica.to_string(), (demand, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_minute_then_waits_for_refill() {
        let limiter = RateLimiter::default();
        let start = Instant::now();
        let allowed = (0..10).filter(|_| limiter.check("k", 6, start).allowed).count();
        assert_eq!(allowed, 6);
        let refused = limiter.check("k", 6, start);
        assert_eq!((refused.allowed, refused.remaining, refused.retry_after), (false, 0, 10));
        assert!(limiter.check("k", 6, start + Duration::from_secs(10)).allowed, "one request refills in 10 s");
        assert!(limiter.check("other", 6, start).allowed, "keys have their own buckets");
    }

    #[test]
    fn over_a_long_run_a_key_averages_its_rate() {
        let limiter = RateLimiter::default();
        let start = Instant::now();
        // 10 requests a second for 10 minutes against 120 per minute.
        let allowed =
            (0..6000).filter(|i| limiter.check("k", 120, start + Duration::from_millis(100 * i)).allowed).count();
        // One minute's burst, then 2 a second for the 600 s: 120 + 1200, less the last refill's fraction.
        assert!((1318..=1320).contains(&allowed), "{allowed} allowed");
    }

    /// Three replicas exchanging demand reports every 200 ms: together they
    /// admit the plan's rate, whether the key's traffic is spread evenly or
    /// reaches only one of them.
    fn admitted_by_three(spread: impl Fn(usize) -> usize) -> usize {
        let replicas: Vec<RateLimiter> = (0..3).map(|_| RateLimiter::default()).collect();
        let start = Instant::now();
        let mut admitted = 0;
        // 30 requests a second for 5 minutes against 600 per minute: one minute's burst, then 10 a second.
        for i in 0..9000u64 {
            let now = start + Duration::from_millis(i * 1000 / 30);
            if i % 6 == 0 {
                for (from, limiter) in replicas.iter().enumerate() {
                    for (key, demand) in limiter.demand_report(now) {
                        for (to, peer) in replicas.iter().enumerate() {
                            if to != from {
                                peer.remote_demand(&from.to_string(), &key, demand, now);
                            }
                        }
                    }
                }
            }
            let allowed = replicas[spread(i as usize)].check("k", 600, now).allowed;
            if allowed {
                admitted += 1;
            }
        }
        admitted
    }

    #[test]
    fn replicas_together_hold_the_plans_rate() {
        let expected = 600 + 10 * 300;
        for (name, admitted) in
            [("round robin", admitted_by_three(|i| i % 3)), ("one replica", admitted_by_three(|_| 0))]
        {
            let off = (admitted as f64 - expected as f64).abs() / expected as f64;
            println!("{name}: {admitted} admitted of {expected}");
            assert!(
                off <= 0.10,
                "{name}: {admitted} admitted in 300 s, expected {expected} (off by {:.1}%)",
                off * 100.0
            );
        }
    }
}
