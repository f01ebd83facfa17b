//! Retry decisions and backoff delays. Pure.

use std::time::Duration;

use crate::executor::TaskError;
use crate::wdl::{Backoff, RetryPolicy};

/// Whether a failure after `failures` failed attempts (this one included)
/// gets another attempt.
pub fn should_retry(policy: &RetryPolicy, error: &TaskError, failures: u32) -> bool {
    error.retryable
        && failures < policy.max_attempts
        && !policy.non_retryable.iter().any(|c| c == &error.class)
}

/// Delay before the attempt that follows failure number `failures` (from 1).
///
/// Exponential backoff doubles `initial` per failure up to `max`, then picks
/// uniformly in the upper half of that ("equal jitter": never less than half
/// the nominal delay, so retries of many items spread out without collapsing
/// to zero). `random` is a uniform draw in `[0, 1)`.
pub fn backoff_delay(policy: &RetryPolicy, failures: u32, random: f64) -> Duration {
    let nominal = match policy.backoff {
        Backoff::Fixed => policy.initial,
        Backoff::Exponential => {
            let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(31));
            policy.initial.saturating_mul(factor).min(policy.max)
        }
    };
    if policy.backoff == Backoff::Fixed {
        return nominal;
    }
    let half = nominal / 2;
    half + half.mul_f64(random.clamp(0.0, 1.0))
}

/// Error class of an attempt whose node was declared down.
pub const NODE_LOST: &str = "node_lost";
/// Error class of an attempt refused by a full node.
pub const OVERLOADED: &str = "overloaded";
/// Error class of an attempt no node can take (placement labels).
pub const UNPLACEABLE: &str = "unplaceable";

/// Failures that are not the task's fault: the attempt is placed again and
/// the retry budget is not charged.
pub fn uncharged(class: &str) -> bool {
    matches!(class, NODE_LOST | OVERLOADED | UNPLACEABLE)
}

/// Delay before placing an uncharged failure again: at once after a lost
/// node, 20–40 ms after an `overloaded` reply (the node needs a moment), and
/// 250–500 ms while no node matches the placement labels.
pub fn replace_delay(class: &str, random: f64) -> Duration {
    let base = match class {
        NODE_LOST => return Duration::ZERO,
        OVERLOADED => Duration::from_millis(20),
        _ => Duration::from_millis(250),
    };
    base + base.mul_f64(random.clamp(0.0, 1.0))
}

/// A small deterministic generator (splitmix64): jitter must be reproducible
/// in tests and needs no cryptographic quality.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Jitter(seed)
    }

    /// Next draw in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            backoff: Backoff::Exponential,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            non_retryable: vec!["input".into()],
        }
    }

    #[test]
    fn retries_until_the_attempt_budget_is_spent() {
        let p = policy(3);
        let e = TaskError::retryable("exit", "x");
        assert!(should_retry(&p, &e, 1));
        assert!(should_retry(&p, &e, 2));
        assert!(!should_retry(&p, &e, 3));
    }

    #[test]
    fn non_retryable_classes_and_fatal_errors_stop_at_once() {
        let p = policy(5);
        assert!(!should_retry(&p, &TaskError::retryable("input", "x"), 1));
        assert!(!should_retry(&p, &TaskError::fatal("exit", "x"), 1));
    }

    #[test]
    fn exponential_delay_doubles_is_capped_and_jittered_in_upper_half() {
        let p = policy(10);
        assert_eq!(backoff_delay(&p, 1, 0.0), Duration::from_millis(50));
        assert_eq!(backoff_delay(&p, 1, 1.0), Duration::from_millis(100));
        assert_eq!(backoff_delay(&p, 3, 1.0), Duration::from_millis(400));
        assert_eq!(backoff_delay(&p, 30, 1.0), Duration::from_millis(1000));
        let mut j = Jitter::new(7);
        for _ in 0..1000 {
            let d = backoff_delay(&p, 2, j.next_f64());
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(200));
        }
    }

    #[test]
    fn fixed_delay_is_constant() {
        let mut p = policy(3);
        p.backoff = Backoff::Fixed;
        assert_eq!(backoff_delay(&p, 1, 0.3), Duration::from_millis(100));
        assert_eq!(backoff_delay(&p, 9, 0.9), Duration::from_millis(100));
    }
}
