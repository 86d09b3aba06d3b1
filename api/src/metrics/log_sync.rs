//! The event log's appends and the agents' sync streams, read on scrape:
//! - counter `log_appends_total{outcome}`: appends by `outcome` (`ok`; `conflict`: another
//!   server appended first, decided again; `unavailable`: storage unreachable, nothing
//!   written; `error`: refused for good). Any `error` or sustained `unavailable` is an alert.
//! - histogram `log_append_duration_seconds`: committed appends, request to durable (group
//!   commit and, on PostgreSQL, the round trip included), buckets 50 µs to 5 s.
//! - gauge `agents_connected`: agents with an open sync stream.
//! - histogram `agent_sync_lag_records`: for each connected agent, how many records its sync
//!   stream is behind the log head, as of this scrape (a distribution of the fleet now, not
//!   accumulated over time: read it with `histogram_quantile` on the buckets as they are,
//!   never through `rate`).

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use tessera_actors::server::supervisor::Server;
use tessera_eventlog::metrics::{AppendOutcome, LatencySnapshot};

const APPENDS: &str = "log_appends_total";
const APPEND_DURATION: &str = "log_append_duration_seconds";
const CONNECTED: &str = "agents_connected";
const LAG: &str = "agent_sync_lag_records";

/// Upper bounds of the lag buckets, in records.
const LAG_BOUNDS: [u64; 12] = [0, 1, 2, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000, 100_000];

/// Copies the log's append counters and the sync cursors into families on each scrape.
#[derive(Debug)]
pub(super) struct LogSyncCollector {
    server: Server,
    descs: Vec<Desc>,
}

impl LogSyncCollector {
    pub(super) fn new(server: Server) -> Result<Self, prometheus::Error> {
        let desc = |name: &str, help: &str, labels: &[&str]| {
            Desc::new(
                name.into(),
                help.into(),
                labels.iter().map(|l| (*l).to_owned()).collect(),
                Default::default(),
            )
        };
        let descs = vec![
            desc(
                APPENDS,
                "Appends to the event log by outcome (ok; conflict: another server appended \
                 first; unavailable: storage unreachable, nothing written; error: refused).",
                &["outcome"],
            )?,
            desc(
                APPEND_DURATION,
                "Time from an append's request to its records being durable, per committed append.",
                &[],
            )?,
            desc(CONNECTED, "Agents with an open sync stream.", &[])?,
            desc(
                LAG,
                "Per connected agent, records its sync stream is behind the log head, as of \
                 this scrape.",
                &[],
            )?,
        ];
        Ok(Self { server, descs })
    }
}

impl Collector for LogSyncCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stats = self.server.append_stats.snapshot();
        let appends = AppendOutcome::ALL
            .iter()
            .map(|&outcome| {
                let mut counter = proto::Counter::default();
                counter.set_value(stats.count(outcome) as f64);
                let mut m = proto::Metric::from_label(vec![label("outcome", outcome.label())]);
                m.set_counter(counter);
                m
            })
            .collect();
        let head = self.server.log.raw().head().seq;
        let lags = self.server.sync_cursors.lags(head);
        let mut connected = proto::Gauge::default();
        connected.set_value(lags.len() as f64);
        let mut connected_metric = proto::Metric::default();
        connected_metric.set_gauge(connected);
        [
            (APPENDS, MetricType::COUNTER, appends),
            (
                APPEND_DURATION,
                MetricType::HISTOGRAM,
                vec![latency_metric(stats.latency(), vec![])],
            ),
            (CONNECTED, MetricType::GAUGE, vec![connected_metric]),
            (LAG, MetricType::HISTOGRAM, vec![lag_metric(&lags)]),
        ]
        .into_iter()
        .zip(&self.descs)
        .map(|((name, kind, metrics), desc)| family(name, &desc.help, kind, metrics))
        .collect()
    }
}

/// A histogram metric of `latency`, with `labels`.
pub(super) fn latency_metric(
    latency: &LatencySnapshot,
    labels: Vec<proto::LabelPair>,
) -> proto::Metric {
    let mut h = proto::Histogram::default();
    h.set_sample_count(latency.count());
    h.set_sample_sum(latency.sum_seconds());
    h.set_bucket(
        latency
            .buckets()
            .map(|(upper, n)| bucket(upper, n))
            .collect(),
    );
    let mut m = proto::Metric::from_label(labels);
    m.set_histogram(h);
    m
}

/// The lag histogram of one scrape.
fn lag_metric(lags: &[u64]) -> proto::Metric {
    let mut h = proto::Histogram::default();
    h.set_sample_count(lags.len() as u64);
    // Exact below 2^53 records.
    h.set_sample_sum(lags.iter().map(|&l| l as f64).sum());
    h.set_bucket(
        LAG_BOUNDS
            .iter()
            .map(|&bound| {
                let n = lags.iter().filter(|&&l| l <= bound).count() as u64;
                bucket(bound as f64, n)
            })
            .collect(),
    );
    let mut m = proto::Metric::default();
    m.set_histogram(h);
    m
}

fn bucket(upper: f64, cumulative: u64) -> proto::Bucket {
    let mut b = proto::Bucket::default();
    b.set_upper_bound(upper);
    b.set_cumulative_count(cumulative);
    b
}

/// A metric family.
pub(super) fn family(
    name: &str,
    help: &str,
    kind: MetricType,
    metrics: Vec<proto::Metric>,
) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.into());
    family.set_help(help.into());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

/// A label pair.
pub(super) fn label(name: &str, value: &str) -> proto::LabelPair {
    let mut pair = proto::LabelPair::default();
    pair.set_name(name.into());
    pair.set_value(value.into());
    pair
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_buckets_are_cumulative_over_the_agents_of_one_scrape() {
        let m = lag_metric(&[0, 3, 3, 700, 2_000_000]);
        let h = m.get_histogram();
        assert_eq!(h.get_sample_count(), 5);
        assert_eq!(h.get_sample_sum(), 2_000_706.0);
        let buckets: Vec<(f64, u64)> = h
            .get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect();
        assert_eq!(buckets[0], (0.0, 1));
        assert_eq!(buckets[3], (5.0, 3));
        assert_eq!(buckets[8], (1_000.0, 4));
        assert_eq!(
            buckets.last(),
            Some(&(100_000.0, 4)),
            "the outlier is only in +Inf"
        );
        assert_eq!(lag_metric(&[]).get_histogram().get_sample_count(), 0);
    }
}
