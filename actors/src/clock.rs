//! Time helpers over the injected [`Clock`], shared by the server and agent sides.

use tessera_eventlog::Clock;

/// Unix seconds from a clock (floored, also before 1970).
pub fn unix_secs(clock: &dyn Clock) -> i64 {
    clock.now_unix_nanos().div_euclid(1_000_000_000)
}
