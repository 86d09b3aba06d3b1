//! Prometheus metrics of the Workload API: streams open, calls by outcome, latency (whole call
//! for unary RPCs; time to the first message for streams); and, once [`Metrics::watch_cache`]
//! is given the identity source, the cache read at each scrape: `cached_x509_svids` and
//! `earliest_x509_svid_not_after_seconds` (Unix seconds; 0 while none is held).

use std::sync::Arc;

use tessera_actors::agent::view::{IdentitySnapshot, WorkloadSource};
use tokio::sync::watch;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Building the metric families failed (a duplicate or malformed name: a bug).
#[derive(Debug, thiserror::Error)]
#[error("cannot register Workload API metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// The Workload API's metrics, in their own registry (prefix `tessera_agent_`).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    open_streams: IntGaugeVec,
    calls: IntCounterVec,
    latency: HistogramVec,
}

/// Decrements the open-stream gauge when the stream ends, however it ends.
#[derive(Debug)]
pub(crate) struct OpenStream {
    gauge: prometheus::IntGauge,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Metrics {
    /// Fresh metrics in a new registry.
    pub fn new() -> Result<Arc<Self>, MetricsError> {
        let registry = Registry::new_custom(Some("tessera_agent".into()), None)?;
        let open_streams = IntGaugeVec::new(
            Opts::new(
                "workload_api_open_streams",
                "Workload API streams open now, by method.",
            ),
            &["method"],
        )?;
        let calls = IntCounterVec::new(
            Opts::new(
                "workload_api_calls_total",
                "Workload API calls, by method and gRPC code.",
            ),
            &["method", "code"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "workload_api_call_duration_seconds",
                "Workload API latency by method: the whole call for unary RPCs, the time to the first message for streams.",
            )
            .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["method"],
        )?;
        registry.register(Box::new(open_streams.clone()))?;
        registry.register(Box::new(calls.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Arc::new(Self {
            registry,
            open_streams,
            calls,
            latency,
        }))
    }

    /// The registry, to serve or merge into another.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Streams of `method` open now.
    pub fn open_streams(&self, method: &str) -> i64 {
        self.open_streams.with_label_values(&[method]).get()
    }

    /// Calls of `method` that ended with `code` (`OK`, `PermissionDenied`, ...).
    pub fn calls(&self, method: &str, code: &str) -> u64 {
        self.calls.with_label_values(&[method, code]).get()
    }

    /// Exports the cache of `source` (X509-SVIDs held, the earliest expiry among them), read
    /// from its current snapshot at each scrape. Call once; a second call is refused by the
    /// registry and logged (a bug, not a reason to stop serving).
    pub fn watch_cache(&self, source: &Arc<dyn WorkloadSource>) {
        let collector = match CacheCollector::new(source.identities()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cache metrics not exported");
                return;
            }
        };
        if let Err(e) = self.registry.register(Box::new(collector)) {
            tracing::warn!(error = %e, "cache metrics not exported");
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid families, which `new` rules out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    pub(crate) fn stream_opened(&self, method: &str) -> OpenStream {
        let gauge = self.open_streams.with_label_values(&[method]);
        gauge.inc();
        OpenStream { gauge }
    }

    pub(crate) fn observe(&self, method: &str, code: tonic::Code, seconds: f64) {
        self.calls
            .with_label_values(&[method, code_name(code)])
            .inc();
        self.latency.with_label_values(&[method]).observe(seconds);
    }
}

const CACHED: &str = "cached_x509_svids";
const EARLIEST: &str = "earliest_x509_svid_not_after_seconds";

/// Reads the identity snapshot on each scrape, so the gauges are never stale.
#[derive(Debug)]
struct CacheCollector {
    identities: watch::Receiver<Arc<IdentitySnapshot>>,
    descs: Vec<Desc>,
}

impl CacheCollector {
    fn new(identities: watch::Receiver<Arc<IdentitySnapshot>>) -> Result<Self, prometheus::Error> {
        let desc = |name: &str, help: &str| {
            Desc::new(name.to_owned(), help.into(), Vec::new(), Default::default())
        };
        let descs = vec![
            desc(
                CACHED,
                "X509-SVIDs the agent holds now (signed, not yet dropped).",
            )?,
            desc(
                EARLIEST,
                "Expiry (Unix seconds) of the X509-SVID held that expires first; 0 when none.",
            )?,
        ];
        Ok(Self { identities, descs })
    }
}

impl Collector for CacheCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (held, earliest) = {
            let snapshot = self.identities.borrow();
            let mut held = 0usize;
            let mut earliest: Option<i64> = None;
            for svid in snapshot.identities.iter().filter_map(|i| i.svid.as_ref()) {
                held += 1;
                earliest = Some(earliest.map_or(svid.not_after, |e| e.min(svid.not_after)));
            }
            (held, earliest.unwrap_or(0))
        };
        // Exact below 2^53: counts and Unix seconds.
        [held as f64, earliest as f64]
            .into_iter()
            .zip(&self.descs)
            .map(|(value, desc)| {
                let mut gauge = proto::Gauge::default();
                gauge.set_value(value);
                let mut m = proto::Metric::default();
                m.set_gauge(gauge);
                let mut family = MetricFamily::default();
                family.set_name(desc.fq_name.clone());
                family.set_help(desc.help.clone());
                family.set_field_type(MetricType::GAUGE);
                family.set_metric(vec![m]);
                family
            })
            .collect()
    }
}

/// The gRPC code's canonical name.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_follow_guards_and_calls_are_counted() {
        let m = Metrics::new().unwrap();
        let g = m.stream_opened("FetchX509SVID");
        assert_eq!(m.open_streams("FetchX509SVID"), 1);
        drop(g);
        assert_eq!(m.open_streams("FetchX509SVID"), 0);
        m.observe("FetchJWTSVID", tonic::Code::PermissionDenied, 0.001);
        assert_eq!(m.calls("FetchJWTSVID", "PermissionDenied"), 1);
        let text = m.render();
        assert!(text.contains("tessera_agent_workload_api_calls_total{code=\"PermissionDenied\",method=\"FetchJWTSVID\"} 1"), "{text}");
        assert!(
            text.contains("tessera_agent_workload_api_call_duration_seconds_bucket"),
            "{text}"
        );
    }

    #[test]
    fn cache_gauges_read_the_snapshot_at_each_scrape() {
        let m = Metrics::new().unwrap();
        let (_tx, rx) = watch::channel(Arc::new(IdentitySnapshot::default()));
        m.registry()
            .register(Box::new(CacheCollector::new(rx).unwrap()))
            .unwrap();
        let text = m.render();
        assert!(
            text.contains("tessera_agent_cached_x509_svids 0\n"),
            "{text}"
        );
        assert!(
            text.contains("tessera_agent_earliest_x509_svid_not_after_seconds 0\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE tessera_agent_cached_x509_svids gauge"),
            "{text}"
        );
    }
}
