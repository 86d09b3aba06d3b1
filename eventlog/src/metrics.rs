//! What the log counts about its own appends, for the processes' metrics endpoints: appends
//! by outcome and a latency histogram of the committed ones, kept in lock-free atomics by
//! [`MeteredLog`], a decorator over any [`EventLog`]. This crate knows nothing of Prometheus;
//! the server turns an [`AppendStatsSnapshot`] into metric families when scraped.
//!
//! [`LatencyHistogram`] is the one latency histogram of the workspace (the signer's uses it
//! too): fixed buckets from 50 µs to 5 s, cumulative on read, as Prometheus wants them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::log::{AppendCondition, AppendReceipt, EventLog, Head, Subscription, VerifyReport};
use crate::record::{NewRecord, Record};
use crate::snapshot::{Snapshot, SnapshotStream};
use crate::LogError;

/// Upper bounds (nanoseconds) of the latency buckets: 50 µs (one P-256 signature, one memory
/// append) to 5 s (a deep signing queue, a slow disk or database), about 1-2.5-5 per decade.
const BOUNDS_NANOS: [u64; 16] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
];

/// Number of finite latency buckets.
pub const LATENCY_BUCKETS: usize = BOUNDS_NANOS.len();

/// The current monotonic time, for latency only.
// A latency metric needs a monotonic clock, which `Clock` (wall time, manual in tests) is not;
// the reading never feeds a decision, so tests and simulations stay deterministic.
#[allow(clippy::disallowed_methods)]
pub fn monotonic_now() -> Instant {
    Instant::now()
}

/// A lock-free latency histogram.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per bucket (not cumulative); the last one is over the largest bound.
    buckets: [AtomicU64; LATENCY_BUCKETS + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    /// Observes `n` events that each took `elapsed`.
    pub fn observe(&self, elapsed: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NANOS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(LATENCY_BUCKETS);
        if let Some(b) = self.buckets.get(bucket) {
            b.fetch_add(n, Ordering::Relaxed);
        }
        self.sum_nanos
            .fetch_add(nanos.saturating_mul(n), Ordering::Relaxed);
    }

    /// The values now. Each atomic is read once; buckets and count agree by construction.
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut cumulative = [0u64; LATENCY_BUCKETS];
        let mut running = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            running = running.saturating_add(b.load(Ordering::Relaxed));
            if let Some(slot) = cumulative.get_mut(i) {
                *slot = running;
            }
        }
        LatencySnapshot {
            cumulative,
            count: running,
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

/// A latency histogram at one moment: cumulative counts per upper bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatencySnapshot {
    cumulative: [u64; LATENCY_BUCKETS],
    count: u64,
    sum_nanos: u64,
}

impl LatencySnapshot {
    /// `(upper bound in seconds, observations at or under it)`, ascending; the implicit
    /// `+Inf` bucket is [`LatencySnapshot::count`].
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        BOUNDS_NANOS
            .iter()
            .zip(self.cumulative.iter())
            .map(|(&bound, &n)| (nanos_to_secs(bound), n))
    }

    /// Observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        nanos_to_secs(self.sum_nanos)
    }
}

// Exact below 2^53 ns (104 days of summed latency); a float is what Prometheus carries.
fn nanos_to_secs(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// How one append ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AppendOutcome {
    /// Committed (durable).
    Ok,
    /// Another writer moved the head first (several servers); the caller decides again.
    Conflict,
    /// The storage was unreachable; nothing was written; the caller may retry.
    Unavailable,
    /// Refused for good: a storage fault, a closed log, a bad record.
    Error,
}

impl AppendOutcome {
    /// Every outcome, in label order.
    pub const ALL: [AppendOutcome; 4] = [
        AppendOutcome::Ok,
        AppendOutcome::Conflict,
        AppendOutcome::Unavailable,
        AppendOutcome::Error,
    ];

    /// Its metric label.
    pub fn label(self) -> &'static str {
        match self {
            AppendOutcome::Ok => "ok",
            AppendOutcome::Conflict => "conflict",
            AppendOutcome::Unavailable => "unavailable",
            AppendOutcome::Error => "error",
        }
    }

    /// The outcome of an append that returned `result`.
    pub fn of(result: &Result<AppendReceipt, LogError>) -> Self {
        match result {
            Ok(_) => AppendOutcome::Ok,
            Err(LogError::Conflict { .. }) => AppendOutcome::Conflict,
            Err(LogError::Unavailable { .. }) => AppendOutcome::Unavailable,
            Err(_) => AppendOutcome::Error,
        }
    }

    fn index(self) -> usize {
        match self {
            AppendOutcome::Ok => 0,
            AppendOutcome::Conflict => 1,
            AppendOutcome::Unavailable => 2,
            AppendOutcome::Error => 3,
        }
    }
}

/// Appends by outcome and the latency of committed ones.
#[derive(Debug, Default)]
pub struct AppendStats {
    counts: [AtomicU64; 4],
    latency: LatencyHistogram,
}

impl AppendStats {
    /// Records one append that ended with `outcome` after `elapsed`.
    pub fn record(&self, outcome: AppendOutcome, elapsed: Duration) {
        if let Some(c) = self.counts.get(outcome.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if outcome == AppendOutcome::Ok {
            self.latency.observe(elapsed, 1);
        }
    }

    /// The values now.
    pub fn snapshot(&self) -> AppendStatsSnapshot {
        AppendStatsSnapshot {
            counts: self.counts.each_ref().map(|c| c.load(Ordering::Relaxed)),
            latency: self.latency.snapshot(),
        }
    }
}

/// [`AppendStats`] at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendStatsSnapshot {
    counts: [u64; 4],
    latency: LatencySnapshot,
}

impl AppendStatsSnapshot {
    /// Appends that ended with `outcome`, since start.
    pub fn count(&self, outcome: AppendOutcome) -> u64 {
        self.counts.get(outcome.index()).copied().unwrap_or(0)
    }

    /// Latency of the committed appends (request to durable, group commit included).
    pub fn latency(&self) -> &LatencySnapshot {
        &self.latency
    }
}

/// An [`EventLog`] that counts its appends into [`AppendStats`]; everything else is the inner
/// log's, unchanged.
#[derive(Debug)]
pub struct MeteredLog {
    inner: Arc<dyn EventLog>,
    stats: Arc<AppendStats>,
}

impl MeteredLog {
    /// Wraps `inner`, counting into `stats`.
    pub fn new(inner: Arc<dyn EventLog>, stats: Arc<AppendStats>) -> Self {
        Self { inner, stats }
    }
}

impl EventLog for MeteredLog {
    fn append(
        &self,
        batch: Vec<NewRecord>,
        condition: AppendCondition,
    ) -> BoxFuture<'_, Result<AppendReceipt, LogError>> {
        Box::pin(async move {
            let started = monotonic_now();
            let result = self.inner.append(batch, condition).await;
            self.stats
                .record(AppendOutcome::of(&result), started.elapsed());
            result
        })
    }

    fn read(&self, from_seq: u64, limit: usize) -> BoxFuture<'_, Result<Vec<Record>, LogError>> {
        self.inner.read(from_seq, limit)
    }

    fn subscribe(&self, from_seq: u64) -> Subscription {
        self.inner.subscribe(from_seq)
    }

    fn head(&self) -> Head {
        self.inner.head()
    }

    fn verify(&self) -> BoxFuture<'_, Result<VerifyReport, LogError>> {
        self.inner.verify()
    }

    fn save_snapshot(&self, seq: u64, data: Vec<u8>) -> BoxFuture<'_, Result<(), LogError>> {
        self.inner.save_snapshot(seq, data)
    }

    fn latest_snapshot(&self) -> BoxFuture<'_, Result<Option<Snapshot>, LogError>> {
        self.inner.latest_snapshot()
    }

    fn latest_snapshot_stream(&self) -> BoxFuture<'_, Result<Option<SnapshotStream>, LogError>> {
        self.inner.latest_snapshot_stream()
    }

    fn location(&self) -> PathBuf {
        self.inner.location()
    }

    fn opened(&self) -> BoxFuture<'_, Result<(), LogError>> {
        self.inner.opened()
    }
}

#[cfg(test)]
mod tests;
