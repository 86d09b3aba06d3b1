//! HTTP `/live`, `/ready` and Prometheus `/metrics` (off by default; `[health_checks]`), served
//! by [`tessera_edge::health`].
//!
//! Families (prefix `tessera_server_`):
//! - gauges `entries`, `agents`, `join_tokens_pending`, `log_head_seq`,
//!   `actor_in_flight{actor}`, `signing_queued`, `bundle_sequence`, `x509_cas{status}`,
//!   `jwt_keys{status}`, `active_ca_not_after_seconds`, `active_jwt_key_not_after_seconds`,
//!   `signing_queue_capacity` (the `signing_queued` limit, for a saturation ratio);
//! - counter `svids_signed_total{kind,outcome}`: SVIDs by `kind` (`x509`, `jwt`) and `outcome`
//!   (`ok`; `error`: admitted, then refused or failed; `rejected`: not admitted, queue full or
//!   batch too large, i.e. `ResourceExhausted`). `rate(..{outcome="ok"}[1m])` is the signing
//!   rate;
//! - histogram `signing_duration_seconds{kind}`: per admitted SVID, the time from admission
//!   to the signed result (queueing included), buckets 50 µs to 5 s; its `_count` equals the
//!   `ok` plus `error` counts;
//! - the event log's appends and the agents' sync lag: `log_appends_total{outcome}`,
//!   `log_append_duration_seconds`, `agents_connected`, `agent_sync_lag_records` (see
//!   [`log_sync`]).
//!
//! Gauges are read from the actors when scraped, so they are never stale and cost nothing
//! between scrapes. The signing families are the signer's own atomic counters (every signing
//! path goes through it), copied out on scrape by a custom collector. `/live` answers 200 while the actors run; `/ready` answers 200 once the
//! registry answers a read, 503 otherwise (overloaded, failed, stopping).

mod log_sync;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Encoder, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use tessera_actors::server::authority::signer::{SignOutcome, Signer, SvidKind};
use tessera_actors::server::authority::SlotStatus;
use tessera_actors::server::supervisor::Server;
use tessera_edge::health::Health;
use tokio::net::TcpListener;

use self::log_sync::{family, label, latency_metric, LogSyncCollector};

/// What the endpoint reads.
#[derive(Debug)]
pub struct Metrics {
    server: Server,
    failed: AtomicBool,
    registry: Registry,
    entries: IntGauge,
    agents: IntGauge,
    tokens: IntGauge,
    log_head: IntGauge,
    in_flight: IntGaugeVec,
    signing_queued: IntGauge,
    bundle_sequence: IntGauge,
    x509_cas: IntGaugeVec,
    jwt_keys: IntGaugeVec,
    active_ca_expiry: IntGauge,
    active_jwt_expiry: IntGauge,
}

/// Building the metric families failed (a duplicate or malformed name: a bug).
#[derive(Debug, thiserror::Error)]
#[error("cannot register metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Metrics over `server`, which runs as `server_id` (exported as
    /// `tessera_server_info{server_id="..."} 1`, to join on in dashboards of several servers).
    pub fn new(server: Server, server_id: &str) -> Result<Arc<Self>, MetricsError> {
        let registry = Registry::new_custom(Some("tessera_server".into()), None)?;
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let entries = gauge("entries", "Registration entries held.")?;
        let agents = gauge("agents", "Attested agents (banned included).")?;
        let tokens = gauge(
            "join_tokens_pending",
            "Join tokens generated and not yet used or expired.",
        )?;
        let log_head = gauge(
            "log_head_seq",
            "Seq of the last committed record of the event log.",
        )?;
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "actor_in_flight",
                "Requests waiting for or running in each actor (bounded by limits.max_in_flight).",
            ),
            &["actor"],
        )?;
        registry.register(Box::new(in_flight.clone()))?;
        let signing_queued = gauge("signing_queued", "CSRs and JWTs admitted to the signer and not yet done (bounded by limits.max_signing_queue).")?;
        let bundle_sequence = gauge(
            "bundle_sequence",
            "Sequence number of the trust bundle; goes up on every rotation step.",
        )?;
        let active_ca_expiry = gauge(
            "active_ca_not_after_seconds",
            "Expiry (Unix seconds) of the X.509 CA that signs; 0 when none.",
        )?;
        let active_jwt_expiry = gauge(
            "active_jwt_key_not_after_seconds",
            "Expiry (Unix seconds) of the JWT key that signs; 0 when none.",
        )?;
        gauge(
            "signing_queue_capacity",
            "Most CSRs and JWTs admitted to the signer at once (limits.max_signing_queue).",
        )?
        .set(gauge_value(server.authority.signer().settings().max_queued));
        let x509_cas = IntGaugeVec::new(
            Opts::new(
                "x509_cas",
                "X.509 CAs by rotation status (prepared, active, old).",
            ),
            &["status"],
        )?;
        registry.register(Box::new(x509_cas.clone()))?;
        let jwt_keys = IntGaugeVec::new(
            Opts::new(
                "jwt_keys",
                "JWT signing keys by rotation status (prepared, active, old).",
            ),
            &["status"],
        )?;
        registry.register(Box::new(jwt_keys.clone()))?;
        let info = IntGaugeVec::new(
            Opts::new(
                "info",
                "Always 1; its label names this server in a log several servers share.",
            ),
            &["server_id"],
        )?;
        info.with_label_values(&[server_id]).set(1);
        registry.register(Box::new(info))?;
        registry.register(Box::new(SigningCollector::new(
            server.authority.signer().clone(),
        )?))?;
        registry.register(Box::new(LogSyncCollector::new(server.clone())?))?;
        Ok(Arc::new(Self {
            server,
            failed: AtomicBool::new(false),
            registry,
            entries,
            agents,
            tokens,
            log_head,
            in_flight,
            signing_queued,
            bundle_sequence,
            x509_cas,
            jwt_keys,
            active_ca_expiry,
            active_jwt_expiry,
        }))
    }

    /// The registry, for families kept elsewhere (the federation refresher's,
    /// `crate::federation::metrics`).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Marks the server as failed: `/live` and `/ready` answer 503 from now on.
    pub fn set_failed(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    /// Whether the server failed.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Reads every gauge from the actors.
    pub async fn refresh(&self) {
        let s = &self.server;
        for (actor, n) in [
            ("registry", s.registry.in_flight()),
            ("nodes", s.nodes.in_flight()),
            ("tokens", s.tokens.in_flight()),
            ("authority", s.authority.in_flight()),
            ("sync_hub", s.sync.in_flight()),
        ] {
            self.in_flight
                .with_label_values(&[actor])
                .set(gauge_value(n));
        }
        self.log_head
            .set(i64::try_from(s.log.raw().head().seq).unwrap_or(i64::MAX));
        if let Ok(n) = s.registry.read(|r| r.len()).await {
            self.entries.set(gauge_value(n));
        }
        if let Ok(n) = s.nodes.read(|n| n.len()).await {
            self.agents.set(gauge_value(n));
        }
        if let Ok(n) = s.tokens.read(|t| t.len()).await {
            self.tokens.set(gauge_value(n));
        }
        self.signing_queued
            .set(gauge_value(s.authority.signer().queued()));
        if let Ok(status) = s.authority.status().await {
            self.bundle_sequence
                .set(i64::try_from(status.bundle_sequence).unwrap_or(i64::MAX));
            for (family, slots) in [
                (&self.x509_cas, &status.cas),
                (&self.jwt_keys, &status.jwt_keys),
            ] {
                for st in [SlotStatus::Prepared, SlotStatus::Active, SlotStatus::Old] {
                    let n = slots.iter().filter(|slot| slot.status == st).count();
                    family
                        .with_label_values(&[slot_label(st)])
                        .set(gauge_value(n));
                }
            }
            let active = status.cas.iter().find(|c| c.status == SlotStatus::Active);
            self.active_ca_expiry.set(active.map_or(0, |c| c.not_after));
            let active = status
                .jwt_keys
                .iter()
                .find(|k| k.status == SlotStatus::Active);
            self.active_jwt_expiry
                .set(active.map_or(0, |k| k.not_after));
        }
    }

    /// The Prometheus text exposition.
    pub async fn render(&self) -> String {
        self.refresh().await;
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which `new` rules out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn ready(&self) -> bool {
        !self.is_failed() && self.server.registry.read(|_| ()).await.is_ok()
    }
}

// === impl SigningCollector ===

const SIGNED: &str = "svids_signed_total";
const DURATION: &str = "signing_duration_seconds";

/// Copies the signer's counters and latency histograms into families on each scrape.
#[derive(Debug)]
struct SigningCollector {
    signer: Signer,
    descs: Vec<Desc>,
}

impl SigningCollector {
    fn new(signer: Signer) -> Result<Self, prometheus::Error> {
        let descs = vec![
            Desc::new(
                SIGNED.into(),
                "SVIDs by kind (x509, jwt) and outcome (ok; error: admitted, then refused or \
                 failed; rejected: queue full or batch too large)."
                    .into(),
                vec!["kind".into(), "outcome".into()],
                Default::default(),
            )?,
            Desc::new(
                DURATION.into(),
                "Time from admission to the signer to the signed result, per admitted SVID, \
                 queueing included."
                    .into(),
                vec!["kind".into()],
                Default::default(),
            )?,
        ];
        Ok(Self { signer, descs })
    }
}

impl Collector for SigningCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snapshot = self.signer.metrics();
        let mut signed = Vec::new();
        let mut durations = Vec::new();
        for kind in SvidKind::ALL {
            for outcome in SignOutcome::ALL {
                let mut counter = proto::Counter::default();
                // Exact below 2^53 SVIDs.
                counter.set_value(snapshot.count(kind, outcome) as f64);
                let mut m = proto::Metric::from_label(vec![
                    label("kind", kind.label()),
                    label("outcome", outcome.label()),
                ]);
                m.set_counter(counter);
                signed.push(m);
            }
            durations.push(latency_metric(
                snapshot.latency(kind),
                vec![label("kind", kind.label())],
            ));
        }
        [
            (SIGNED, MetricType::COUNTER, signed),
            (DURATION, MetricType::HISTOGRAM, durations),
        ]
        .into_iter()
        .zip(&self.descs)
        .map(|((name, kind, metrics), desc)| family(name, &desc.help, kind, metrics))
        .collect()
    }
}

fn slot_label(s: SlotStatus) -> &'static str {
    match s {
        SlotStatus::Prepared => "prepared",
        SlotStatus::Active => "active",
        SlotStatus::Old => "old",
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Health for Metrics {
    async fn live(&self) -> Result<(), String> {
        if self.is_failed() {
            Err("an actor failed".into())
        } else {
            Ok(())
        }
    }

    async fn ready(&self) -> Result<(), String> {
        if self.ready().await {
            Ok(())
        } else {
            Err("the registry does not answer (overloaded, failed or stopping)".into())
        }
    }

    async fn metrics(&self) -> String {
        self.render().await
    }
}

/// Serves `/live`, `/ready` and `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tessera_edge::health::serve(listener, metrics, shutdown).await
}
