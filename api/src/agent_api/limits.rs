//! The agent API's bounds on what a peer controls: connections (in total and per source IP),
//! handshakes, HTTP/2, attestation per source IP, and per-agent work. Each is a key of the
//! server's `[limits]` table; a refusal names its key.
//!
//! Rates are generic cell-rate limiters ([`RateLimiter`]) keyed by source IP or agent SPIFFE
//! ID, fed with the server's clock, and bounded in how many keys they remember.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tessera_edge::limits::AudienceLimits;

/// The agent API's limits (server config `[limits]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentApiLimits {
    /// `limits.max_agent_connections`: agent API connections open at once (handshaking or
    /// established), all sources.
    pub max_connections: usize,
    /// `limits.max_agent_connections_per_ip`: the same, per source IP address.
    pub max_connections_per_ip: usize,
    /// `limits.agent_handshake_timeout`: longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// `limits.agent_max_concurrent_streams`: HTTP/2 streams (RPCs) open at once on one
    /// connection.
    pub max_concurrent_streams: u32,
    /// `limits.agent_max_header_list_bytes`: largest HTTP/2 header list.
    pub max_header_list_bytes: u32,
    /// `limits.agent_max_request_bytes`: largest request message.
    pub max_request_bytes: usize,
    /// `limits.agent_connection_max_age`: connections are asked to close (GOAWAY, and open
    /// sync streams end so the agent resumes elsewhere) at this age (SPIRE: 3 minutes).
    pub connection_max_age: Duration,
    /// `limits.agent_connection_max_age_grace`: after the max age, in-flight calls get this
    /// long before the connection is cut.
    pub connection_max_age_grace: Duration,
    /// `limits.attestations_per_ip_per_second`: attestation rate per source IP (SPIRE: 1).
    pub attestations_per_ip_per_second: u32,
    /// `limits.attestation_burst_per_ip`: attestations a source IP may make at once (SPIRE: 1).
    pub attestation_burst_per_ip: u32,
    /// `limits.attestation_max_wait`: an attestation over the rate waits its turn up to this
    /// long, then is refused.
    pub attestation_max_wait: Duration,
    /// `limits.attestation_step_timeout`: longest wait for each message of the agent during
    /// attestation (the params, the challenge response).
    pub attestation_step_timeout: Duration,
    /// `limits.attestation_timeout`: longest a whole attestation may take.
    pub attestation_timeout: Duration,
    /// `limits.max_sync_streams_per_agent`: `SyncEvents` streams one agent may hold open.
    pub max_sync_streams_per_agent: usize,
    /// `limits.agent_jwt_mints_per_second`: JWT-SVIDs one agent may have minted per second
    /// (also the burst).
    pub jwt_mints_per_agent_per_second: u32,
    /// `limits.agent_csr_batches_per_second`: `BatchSignX509SVID` calls per agent per second
    /// (also the burst).
    pub csr_batches_per_agent_per_second: u32,
    /// `limits.max_signing_batch`: CSRs in one `BatchSignX509SVID`.
    pub max_sign_batch: usize,
    /// `limits.max_audiences`, `limits.max_audience_len`: the JWT-SVID audiences (the same
    /// definitions the agent's Workload API uses).
    pub audiences: AudienceLimits,
}

impl Default for AgentApiLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_ip: 1_024,
            handshake_timeout: Duration::from_secs(5),
            max_concurrent_streams: 100,
            max_header_list_bytes: 16 * 1024,
            max_request_bytes: 4 * 1024 * 1024,
            connection_max_age: Duration::from_secs(180),
            connection_max_age_grace: Duration::from_secs(30),
            attestations_per_ip_per_second: 1,
            attestation_burst_per_ip: 1,
            attestation_max_wait: Duration::from_secs(5),
            attestation_step_timeout: Duration::from_secs(5),
            attestation_timeout: Duration::from_secs(30),
            max_sync_streams_per_agent: 2,
            jwt_mints_per_agent_per_second: 500,
            csr_batches_per_agent_per_second: 50,
            max_sign_batch: 1_000,
            audiences: AudienceLimits::default(),
        }
    }
}

/// A limit reached by a peer; answered `ResourceExhausted` (mapping in `crate::status`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Attestations from one source IP come faster than allowed.
    #[error("attestations from {ip} exceed {per_second}/s (limits.attestations_per_ip_per_second, limits.attestation_burst_per_ip); retry in {retry_after:?}")]
    AttestationRate {
        /// The source.
        ip: IpAddr,
        /// The rate.
        per_second: u32,
        /// When a retry would be admitted.
        retry_after: Duration,
    },
    /// An agent mints JWT-SVIDs faster than allowed.
    #[error("agent {agent} mints more than {per_second} JWT-SVIDs per second (limits.agent_jwt_mints_per_second); retry in {retry_after:?}")]
    JwtRate {
        /// The agent.
        agent: String,
        /// The rate.
        per_second: u32,
        /// When a retry would be admitted.
        retry_after: Duration,
    },
    /// An agent sends CSR batches faster than allowed.
    #[error("agent {agent} sends more than {per_second} CSR batches per second (limits.agent_csr_batches_per_second); retry in {retry_after:?}")]
    CsrRate {
        /// The agent.
        agent: String,
        /// The rate.
        per_second: u32,
        /// When a retry would be admitted.
        retry_after: Duration,
    },
    /// An agent holds as many sync streams as allowed.
    #[error("agent {agent} holds {max} SyncEvents streams already (limits.max_sync_streams_per_agent); close one before opening another")]
    SyncStreams {
        /// The agent.
        agent: String,
        /// The limit.
        max: usize,
    },
    /// A batch has more CSRs than allowed.
    #[error("{got} CSRs in one batch; 1..={max} allowed (limits.max_signing_batch)")]
    SignBatch {
        /// CSRs given.
        got: usize,
        /// The limit.
        max: usize,
    },
}

// === impl RateLimiter ===

/// A rate limiter per key (generic cell rate: `rate` per second, `burst` at once). A caller
/// may reserve a turn up to `max_wait` ahead; beyond, it is refused with the wait it would
/// need. Keys whose allowance has fully recovered are forgotten once more than `max_keys` are
/// remembered, so memory stays bounded whatever the peers send.
#[derive(Debug, Clone)]
pub struct RateLimiter<K> {
    inner: Arc<Mutex<HashMap<K, i64>>>,
    interval_nanos: i64,
    tolerance_nanos: i64,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_second` admissions per key per second, `burst` at once (both at least 1).
    pub fn new(per_second: u32, burst: u32, max_keys: usize) -> Self {
        let interval_nanos = 1_000_000_000 / i64::from(per_second.max(1));
        Self {
            inner: Arc::default(),
            interval_nanos,
            tolerance_nanos: interval_nanos * i64::from(burst.max(1) - 1),
            max_keys: max_keys.max(1),
        }
    }

    /// Reserves a turn for `key` at `now_nanos` (Unix nanoseconds): `Ok(wait)` (zero: go now),
    /// or `Err(retry_after)` if the turn is more than `max_wait` away (nothing reserved).
    pub fn reserve(
        &self,
        key: &K,
        now_nanos: i64,
        max_wait: Duration,
    ) -> Result<Duration, Duration> {
        let mut map = lock(&self.inner);
        let tat = map.get(key).copied().unwrap_or(now_nanos).max(now_nanos);
        let allowed_at = tat - self.tolerance_nanos;
        let wait = nanos(allowed_at - now_nanos);
        if wait > max_wait {
            return Err(wait - max_wait.min(wait));
        }
        if map.len() >= self.max_keys && !map.contains_key(key) {
            // Forget keys that are back to a full allowance: they behave as new ones.
            map.retain(|_, t| *t > now_nanos);
        }
        if map.len() >= self.max_keys && !map.contains_key(key) {
            // Every remembered key is mid-burst: refuse rather than grow.
            return Err(Duration::from_nanos(self.interval_nanos.unsigned_abs()));
        }
        map.insert(key.clone(), tat + self.interval_nanos);
        Ok(wait)
    }

    /// Admits `key` now or refuses with when to retry.
    pub fn check(&self, key: &K, now_nanos: i64) -> Result<(), Duration> {
        self.reserve(key, now_nanos, Duration::ZERO).map(|_| ())
    }
}

fn nanos(n: i64) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(0))
}

// === impl Counter ===

/// Counts open things (connections, streams) per key against a per-key and a total bound;
/// a [`Slot`] frees its place when dropped.
#[derive(Debug, Clone)]
pub struct Counter<K: Hash + Eq + Clone> {
    inner: Arc<Mutex<Counts<K>>>,
    max_total: usize,
    max_per_key: usize,
}

#[derive(Debug)]
struct Counts<K> {
    total: usize,
    per_key: HashMap<K, usize>,
}

/// Why a [`Counter`] refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The total bound is reached.
    Total(usize),
    /// The key's bound is reached.
    PerKey(usize),
}

/// One counted thing; dropping it frees the place.
#[derive(Debug)]
pub struct Slot<K: Hash + Eq + Clone> {
    inner: Arc<Mutex<Counts<K>>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Counter<K> {
    /// At most `max_total` in all, `max_per_key` per key.
    pub fn new(max_total: usize, max_per_key: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Counts {
                total: 0,
                per_key: HashMap::new(),
            })),
            max_total,
            max_per_key,
        }
    }

    /// Takes a place for `key`, or says which bound is reached.
    pub fn try_acquire(&self, key: K) -> Result<Slot<K>, Full> {
        let mut c = lock(&self.inner);
        if c.total >= self.max_total {
            return Err(Full::Total(self.max_total));
        }
        let n = c.per_key.entry(key.clone()).or_default();
        if *n >= self.max_per_key {
            return Err(Full::PerKey(self.max_per_key));
        }
        *n += 1;
        c.total += 1;
        Ok(Slot {
            inner: self.inner.clone(),
            key,
        })
    }

    /// How many are open.
    pub fn open(&self) -> usize {
        lock(&self.inner).total
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut c = lock(&self.inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_key.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_key.remove(&self.key);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counts and times stay consistent across a panic elsewhere: keep using them.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn one_per_second_burst_one_queues_up_to_the_wait_then_refuses() {
        let l = RateLimiter::new(1, 1, 100);
        let t0 = 1_000 * S;
        assert_eq!(
            l.reserve(&"a", t0, Duration::from_secs(2)),
            Ok(Duration::ZERO)
        );
        assert_eq!(
            l.reserve(&"a", t0, Duration::from_secs(2)),
            Ok(Duration::from_secs(1))
        );
        assert_eq!(
            l.reserve(&"a", t0, Duration::from_secs(2)),
            Ok(Duration::from_secs(2))
        );
        assert_eq!(
            l.reserve(&"a", t0, Duration::from_secs(2)),
            Err(Duration::from_secs(1))
        );
        // Another key is independent.
        assert_eq!(l.check(&"b", t0), Ok(()));
        assert!(l.check(&"b", t0).is_err());
        // Time restores the allowance.
        assert_eq!(l.check(&"b", t0 + S), Ok(()));
    }

    #[test]
    fn a_burst_is_admitted_at_once_then_the_rate_applies() {
        let l = RateLimiter::new(10, 10, 100);
        let t0 = 5 * S;
        for _ in 0..10 {
            l.check(&1u8, t0).unwrap();
        }
        let retry = l.check(&1u8, t0).unwrap_err();
        assert_eq!(retry, Duration::from_millis(100));
        l.check(&1u8, t0 + S / 10).unwrap();
    }

    #[test]
    fn memory_is_bounded_by_max_keys() {
        let l = RateLimiter::new(1, 1, 3);
        let t0 = 10 * S;
        for k in 0..3u32 {
            l.check(&k, t0).unwrap();
        }
        // All three are mid-interval: a fourth key is refused instead of growing the map.
        assert!(l.check(&3u32, t0).is_err());
        // A second later they have recovered and are forgotten to make room.
        l.check(&3u32, t0 + S).unwrap();
        assert!(lock(&l.inner).len() <= 3);
    }

    #[test]
    fn counters_bound_per_key_and_in_total_and_free_on_drop() {
        let c = Counter::new(3, 2);
        let a1 = c.try_acquire("a").unwrap();
        let _a2 = c.try_acquire("a").unwrap();
        assert_eq!(c.try_acquire("a").unwrap_err(), Full::PerKey(2));
        let _b = c.try_acquire("b").unwrap();
        assert_eq!(c.try_acquire("c").unwrap_err(), Full::Total(3));
        drop(a1);
        assert_eq!(c.open(), 2);
        c.try_acquire("a").unwrap();
    }

    #[test]
    fn limit_errors_name_their_keys() {
        let e = LimitError::SyncStreams {
            agent: "spiffe://example.org/spire/agent/x".into(),
            max: 2,
        };
        assert!(e.to_string().contains("limits.max_sync_streams_per_agent"));
        let e = LimitError::AttestationRate {
            ip: IpAddr::from([10, 0, 0, 1]),
            per_second: 1,
            retry_after: Duration::from_secs(1),
        };
        assert!(e
            .to_string()
            .contains("limits.attestations_per_ip_per_second"));
    }
}
