//! Per-object exponential backoff on errors, reset on success.
//!
//! kube-runtime's `error_policy` is synchronous and is not told about
//! successes, so the reconcilers record both here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The first retry delay.
pub const BASE: Duration = Duration::from_secs(1);
/// The longest retry delay.
pub const MAX: Duration = Duration::from_secs(300);

/// The delay before retry number `failures` (1-based): BASE * 2^(failures-1), capped at MAX.
pub fn delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BASE.saturating_mul(1u32 << exponent).min(MAX)
}

/// Failure counts per object key.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Records a failure and returns the delay before the next try.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = failures.entry(key.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        delay(*count)
    }

    /// Forgets the failures of an object that reconciled.
    pub fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_are_capped() {
        assert_eq!(delay(1), Duration::from_secs(1));
        assert_eq!(delay(2), Duration::from_secs(2));
        assert_eq!(delay(5), Duration::from_secs(16));
        assert_eq!(delay(9), Duration::from_secs(256));
        assert_eq!(delay(10), MAX);
        assert_eq!(delay(u32::MAX), MAX);
    }

    #[test]
    fn success_resets_only_that_object() {
        let b = Backoff::default();
        b.failed("a");
        b.failed("a");
        b.failed("b");
        assert_eq!(b.failed("a"), Duration::from_secs(4));
        b.succeeded("a");
        assert_eq!(b.failed("a"), BASE, "reset after success");
        assert_eq!(b.failed("b"), Duration::from_secs(2), "b keeps its count");
    }
}
