//! What the [`Signer`](super::Signer) counts: SVIDs by kind and outcome, and how long each took
//! from admission to its result, in lock-free atomics bumped on every request and read with
//! [`SigningMetrics::snapshot`]. This crate knows nothing of Prometheus; the server's metrics
//! endpoint turns a [`SigningMetricsSnapshot`] into families when it is scraped.
//!
//! Every SVID a request asks for is counted once: a batch of 50 CSRs refused for a full queue
//! counts 50 `rejected`. Latency is observed once per SVID that was admitted (outcome `ok` or
//! `error`), with the time of its whole request, so the histogram's count equals the `ok` plus
//! `error` counts. A request whose caller goes away before the result is not counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tessera_eventlog::metrics::LatencyHistogram;

use super::error::SignError;

/// The kind of SVID signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SvidKind {
    /// An X.509-SVID (workload, agent, or the server's own).
    X509,
    /// A JWT-SVID.
    Jwt,
}

impl SvidKind {
    /// Every kind, in label order.
    pub const ALL: [SvidKind; 2] = [SvidKind::X509, SvidKind::Jwt];

    /// Its metric label.
    pub fn label(self) -> &'static str {
        match self {
            SvidKind::X509 => "x509",
            SvidKind::Jwt => "jwt",
        }
    }

    fn index(self) -> usize {
        match self {
            SvidKind::X509 => 0,
            SvidKind::Jwt => 1,
        }
    }
}

/// How the signing of one SVID ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignOutcome {
    /// Signed.
    Ok,
    /// Admitted, then refused or failed: bad input, no active CA or key, a failed job.
    Error,
    /// Not admitted: the queue was full or the batch too large (`ResourceExhausted`).
    Rejected,
}

impl SignOutcome {
    /// Every outcome, in label order.
    pub const ALL: [SignOutcome; 3] = [SignOutcome::Ok, SignOutcome::Error, SignOutcome::Rejected];

    /// Its metric label.
    pub fn label(self) -> &'static str {
        match self {
            SignOutcome::Ok => "ok",
            SignOutcome::Error => "error",
            SignOutcome::Rejected => "rejected",
        }
    }

    /// The outcome of a request that failed as a whole with `e`.
    pub fn of_error(e: &SignError) -> Self {
        match e {
            SignError::Overloaded { .. } | SignError::BatchTooLarge { .. } => SignOutcome::Rejected,
            _ => SignOutcome::Error,
        }
    }

    fn index(self) -> usize {
        match self {
            SignOutcome::Ok => 0,
            SignOutcome::Error => 1,
            SignOutcome::Rejected => 2,
        }
    }
}

pub use tessera_eventlog::metrics::{monotonic_now, LatencySnapshot, LATENCY_BUCKETS};

/// Lock-free counters and histograms of the signer; shared by its clones.
#[derive(Debug, Default)]
pub struct SigningMetrics {
    counts: [[AtomicU64; 3]; 2],
    latency: [LatencyHistogram; 2],
}

impl SigningMetrics {
    /// Counts `n` SVIDs of `kind` that ended with `outcome`.
    pub fn count(&self, kind: SvidKind, outcome: SignOutcome, n: usize) {
        if n == 0 {
            return;
        }
        if let Some(c) = self
            .counts
            .get(kind.index())
            .and_then(|k| k.get(outcome.index()))
        {
            c.fetch_add(as_u64(n), Ordering::Relaxed);
        }
    }

    /// Observes `n` SVIDs of `kind` that each took `elapsed` from admission to result.
    pub fn observe(&self, kind: SvidKind, elapsed: Duration, n: usize) {
        if let Some(h) = self.latency.get(kind.index()) {
            h.observe(elapsed, as_u64(n));
        }
    }

    /// Counts (and, when admitted, observes) `n` SVIDs of one request that ended with `outcome`.
    pub fn record(&self, kind: SvidKind, outcome: SignOutcome, n: usize, admitted_at: Instant) {
        self.count(kind, outcome, n);
        if outcome != SignOutcome::Rejected {
            self.observe(
                kind,
                monotonic_now().saturating_duration_since(admitted_at),
                n,
            );
        }
    }

    /// The values now. Each atomic is read once; buckets and count agree by construction.
    pub fn snapshot(&self) -> SigningMetricsSnapshot {
        let counts = self
            .counts
            .each_ref()
            .map(|k| k.each_ref().map(|c| c.load(Ordering::Relaxed)));
        let latency = self.latency.each_ref().map(LatencyHistogram::snapshot);
        SigningMetricsSnapshot { counts, latency }
    }
}

/// A copy of the signer's counters and histograms at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningMetricsSnapshot {
    counts: [[u64; 3]; 2],
    latency: [LatencySnapshot; 2],
}

impl SigningMetricsSnapshot {
    /// SVIDs of `kind` that ended with `outcome`, since start.
    pub fn count(&self, kind: SvidKind, outcome: SignOutcome) -> u64 {
        self.counts
            .get(kind.index())
            .and_then(|k| k.get(outcome.index()))
            .copied()
            .unwrap_or(0)
    }

    /// The latency histogram of `kind`.
    pub fn latency(&self, kind: SvidKind) -> &LatencySnapshot {
        // `index` is 0 or 1 and the array has two elements.
        &self.latency[kind.index()]
    }
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind_and_outcome_and_buckets_are_cumulative() {
        let m = SigningMetrics::default();
        m.count(SvidKind::X509, SignOutcome::Ok, 3);
        m.count(SvidKind::X509, SignOutcome::Rejected, 50);
        m.count(SvidKind::Jwt, SignOutcome::Error, 1);
        m.observe(SvidKind::X509, Duration::from_micros(50), 2);
        m.observe(SvidKind::X509, Duration::from_millis(3), 1);
        m.observe(SvidKind::X509, Duration::from_secs(60), 1);
        let s = m.snapshot();
        assert_eq!(s.count(SvidKind::X509, SignOutcome::Ok), 3);
        assert_eq!(s.count(SvidKind::X509, SignOutcome::Rejected), 50);
        assert_eq!(s.count(SvidKind::X509, SignOutcome::Error), 0);
        assert_eq!(s.count(SvidKind::Jwt, SignOutcome::Error), 1);
        assert_eq!(s.count(SvidKind::Jwt, SignOutcome::Ok), 0);

        let x = s.latency(SvidKind::X509);
        let buckets: Vec<(f64, u64)> = x.buckets().collect();
        assert_eq!(buckets.len(), LATENCY_BUCKETS);
        assert_eq!(buckets[0], (0.00005, 2), "a bound is inclusive");
        assert_eq!(buckets[5], (0.0025, 2));
        assert_eq!(buckets[6], (0.005, 3));
        assert_eq!(buckets[LATENCY_BUCKETS - 1], (5.0, 3));
        assert_eq!(x.count(), 4, "the minute-long one is only in +Inf");
        assert!(
            (x.sum_seconds() - 60.0031).abs() < 1e-9,
            "{}",
            x.sum_seconds()
        );
        assert_eq!(s.latency(SvidKind::Jwt).count(), 0);
    }

    #[test]
    fn rejections_are_counted_but_not_timed() {
        let m = SigningMetrics::default();
        let t = monotonic_now();
        m.record(SvidKind::Jwt, SignOutcome::Rejected, 1, t);
        m.record(SvidKind::Jwt, SignOutcome::Ok, 2, t);
        let s = m.snapshot();
        assert_eq!(s.count(SvidKind::Jwt, SignOutcome::Rejected), 1);
        assert_eq!(s.latency(SvidKind::Jwt).count(), 2);
    }

    #[test]
    fn queue_and_batch_limits_are_rejections_other_failures_errors() {
        assert_eq!(
            SignOutcome::of_error(&SignError::Overloaded {
                requested: 1,
                limit: 1
            }),
            SignOutcome::Rejected
        );
        assert_eq!(
            SignOutcome::of_error(&SignError::BatchTooLarge { len: 2, max: 1 }),
            SignOutcome::Rejected
        );
        assert_eq!(
            SignOutcome::of_error(&SignError::NoActiveCa {
                reason: "none".into()
            }),
            SignOutcome::Error
        );
    }
}
