//! Per-key rate limits: a token bucket per API key that holds the plan's
//! `requestsPerMinute` and refills at that rate, so a key may burst up to a
//! minute's allowance and averages the plan's rate. In memory; no call.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A decision for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Whether the request may run.
    pub allowed: bool,
    /// The limit (requests per minute).
    pub limit: u32,
    /// Whole requests left now.
    pub remaining: u32,
    /// When refused: whole seconds until one request is allowed.
    pub retry_after: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every key seen.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// How many keys before full buckets are swept away.
const SWEEP_ABOVE: usize = 100_000;

impl RateLimiter {
    /// Takes one request of key `key` at `per_minute`, at `now`.
    pub fn check(&self, key: &str, per_minute: u32, now: Instant) -> Decision {
        let capacity = f64::from(per_minute.max(1));
        let per_second = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() > SWEEP_ABOVE {
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_second < capacity);
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket { tokens: capacity, at: now });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * per_second;
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.at = now;
        let limit = per_minute.max(1);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Decision { allowed: true, limit, remaining: bucket.tokens.floor() as u32, retry_after: 0 }
        } else {
            let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / per_second);
            Decision { allowed: false, limit, remaining: 0, retry_after: wait.as_secs_f64().ceil().max(1.0) as u64 }
        }
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
}
