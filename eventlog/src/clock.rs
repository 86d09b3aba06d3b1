//! Time, as the rest of Tessera sees it.
//!
//! Library code never reads the wall clock directly (clippy bans `SystemTime::now` and
//! `Instant::now`): it asks a [`Clock`]. Production passes [`SystemClock`]; tests and the
//! simulator pass a [`ManualClock`] and move time themselves, so rotation schedules and expiry
//! checks are reproducible.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// The current time as nanoseconds since the Unix epoch, saturating at the `i64` range.
    fn now_unix_nanos(&self) -> i64 {
        unix_nanos(self.now())
    }
}

/// Converts a time into nanoseconds since the Unix epoch (negative before it), saturating.
pub fn unix_nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos())
            .map(|n| -n)
            .unwrap_or(i64::MIN),
    }
}

/// Converts nanoseconds since the Unix epoch back into a time.
pub fn from_unix_nanos(nanos: i64) -> SystemTime {
    if nanos >= 0 {
        UNIX_EPOCH + Duration::from_nanos(nanos.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_nanos(nanos.unsigned_abs())
    }
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one sanctioned reader of the wall clock in the library crates.
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// A clock stopped at `secs` seconds after the Unix epoch.
    pub fn at_unix_secs(secs: u64) -> Self {
        Self::new(UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }

    /// Sets the clock to `to` (which may be in the past: wall clocks do step back).
    pub fn set(&self, to: SystemTime) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::at_unix_secs(1_000);
        let shared = clock.clone();
        assert_eq!(clock.now_unix_nanos(), 1_000_000_000_000);
        shared.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now_unix_nanos(), 1_001_500_000_000);
        clock.set(UNIX_EPOCH);
        assert_eq!(shared.now_unix_nanos(), 0);
    }

    #[test]
    fn unix_nanos_round_trips_both_sides_of_the_epoch() {
        for n in [-5_000_000_123_i64, -1, 0, 1, 1_700_000_000_123_456_789] {
            assert_eq!(unix_nanos(from_unix_nanos(n)), n);
        }
    }
}
