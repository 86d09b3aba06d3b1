use super::*;
use crate::record::NewRecord;
use crate::store::memory::MemoryStore;
use crate::{LocalLog, LogLimits, ManualClock};

#[test]
fn histogram_buckets_are_cumulative_and_count_matches() {
    let h = LatencyHistogram::default();
    h.observe(Duration::from_micros(50), 2);
    h.observe(Duration::from_millis(3), 1);
    h.observe(Duration::from_secs(60), 1);
    h.observe(Duration::from_secs(1), 0); // Nothing observed.
    let s = h.snapshot();
    assert_eq!(s.count(), 4);
    let buckets: Vec<_> = s.buckets().collect();
    assert_eq!(buckets.len(), LATENCY_BUCKETS);
    assert_eq!(buckets[0], (0.00005, 2));
    let at_5ms = buckets
        .iter()
        .find(|(b, _)| (*b - 0.005).abs() < 1e-12)
        .unwrap();
    assert_eq!(at_5ms.1, 3);
    // Over the largest bound: only in +Inf (the count).
    assert_eq!(buckets.last().unwrap().1, 3);
    assert!(
        (s.sum_seconds() - 60.0031).abs() < 1e-6,
        "{}",
        s.sum_seconds()
    );
}

#[tokio::test]
async fn metered_log_counts_appends_by_outcome_and_times_the_committed_ones() {
    let store = Arc::new(MemoryStore::new("metered"));
    let clock = Arc::new(ManualClock::at_unix_secs(1_700_000_000));
    let inner = LocalLog::open(store, clock, LogLimits::default()).unwrap();
    let stats = Arc::new(AppendStats::default());
    let log = MeteredLog::new(Arc::new(inner), stats.clone());
    let record = || NewRecord {
        kind: "Test".into(),
        schema_version: 1,
        payload: b"payload".to_vec(),
    };

    log.append(vec![record()], AppendCondition::Any)
        .await
        .unwrap();
    log.append(vec![record(), record()], AppendCondition::ExpectHead(1))
        .await
        .unwrap();
    // A stale head: a conflict, nothing written.
    let conflict = log
        .append(vec![record()], AppendCondition::ExpectHead(1))
        .await;
    assert!(
        matches!(conflict, Err(LogError::Conflict { .. })),
        "{conflict:?}"
    );

    let s = stats.snapshot();
    assert_eq!(s.count(AppendOutcome::Ok), 2);
    assert_eq!(s.count(AppendOutcome::Conflict), 1);
    assert_eq!(s.count(AppendOutcome::Unavailable), 0);
    assert_eq!(s.count(AppendOutcome::Error), 0);
    assert_eq!(s.latency().count(), 2, "only committed appends are timed");
    // Reads go to the inner log unchanged.
    assert_eq!(log.head().seq, 3);
    assert_eq!(log.read(1, 10).await.unwrap().len(), 3);
}
