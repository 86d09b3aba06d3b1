//! Exponential backoff with jitter, as a pure function of the attempt number and a random
//! roll, so its bounds are tested without clocks. Used between attestation attempts; the sync
//! stream's reconnections are paced the same way by `tessera_actors`' sync loop (`[sync]`
//! `backoff_initial`/`backoff_max`, ±20 %).

use std::time::Duration;

/// Share of the delay that jitter may add or remove, percent.
pub(super) const JITTER_PERCENT: u64 = 20;

/// Delays that double from `initial` up to `max`, each moved by up to ±[`JITTER_PERCENT`] so
/// that agents that lost the same server do not all come back at the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Backoff {
    /// Delay before the second attempt (the first is immediate).
    pub(super) initial: Duration,
    /// Longest delay, jitter included.
    pub(super) max: Duration,
}

impl Backoff {
    /// The delay after `failures` failed attempts (1 for the first failure), jittered by
    /// `roll` (any value; uniformly random in production).
    pub(super) fn delay(&self, failures: u32, roll: u64) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        let base = self
            .initial
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max)
            .min(self.max);
        // A uniform step in [-JITTER, +JITTER] percent, in thousandths of the base.
        let span = 2 * JITTER_PERCENT * 10 + 1;
        let permille = 1_000 - JITTER_PERCENT * 10 + roll % span;
        let nanos = base.as_nanos().saturating_mul(u128::from(permille)) / 1_000;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(30),
    };

    #[test]
    fn doubles_within_jitter_bounds_and_stays_under_max() {
        for failures in 1..=40u32 {
            let base = Duration::from_millis(500)
                .saturating_mul(1 << (failures - 1).min(20))
                .min(B.max);
            for roll in [
                0,
                1,
                199,
                200,
                399,
                400,
                401,
                u64::MAX,
                0x9e37_79b9_7f4a_7c15,
            ] {
                let d = B.delay(failures, roll);
                assert!(
                    d >= base.mul_f64(0.8),
                    "{failures} {roll}: {d:?} < 0.8 × {base:?}"
                );
                assert!(
                    d <= base.mul_f64(1.2),
                    "{failures} {roll}: {d:?} > 1.2 × {base:?}"
                );
                assert!(d <= B.max, "{failures}: {d:?}");
            }
        }
    }

    #[test]
    fn the_extremes_of_the_roll_are_the_extremes_of_the_jitter() {
        assert_eq!(B.delay(1, 0), Duration::from_millis(400));
        assert_eq!(B.delay(1, 200), Duration::from_millis(500));
        assert_eq!(B.delay(1, 400), Duration::from_millis(600));
        assert_eq!(B.delay(3, 200), Duration::from_secs(2));
        assert_eq!(B.delay(30, 0), Duration::from_secs(24));
        assert_eq!(B.delay(30, 400), B.max, "capped, jitter included");
        assert_eq!(B.delay(0, 200), B.initial, "no failure counts as the first");
    }
}
