//! Prometheus metrics of the node side, registered in the agent's registry (served on
//! `/metrics` with the Workload API's): which server the agent uses, how often it switched,
//! how each sync stream started (resumed from the cursor, or a full snapshot), when the
//! agent last received a sync message and the cursor it holds.

use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tessera_actors::agent::server_client::SyncMessage;
use tessera_eventlog::Clock;

/// The node side's metrics.
#[derive(Debug, Clone)]
pub(crate) struct NodeMetrics {
    server: IntGaugeVec,
    switches: IntCounter,
    sync_starts: IntCounterVec,
    last_sync: IntGauge,
    cursor: IntGauge,
    /// Time of `last_sync`.
    clock: Arc<dyn Clock>,
}

impl NodeMetrics {
    /// Registers the metrics in `registry`, timed by the system clock (tests).
    #[cfg(test)]
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Self::register_with_clock(registry, Arc::new(tessera_eventlog::SystemClock))
    }

    /// Registers the metrics in `registry`, timed by `clock`.
    pub(crate) fn register_with_clock(
        registry: &Registry,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, prometheus::Error> {
        let server = IntGaugeVec::new(
            Opts::new(
                "server_connected",
                "1 for the server the agent talks to now, 0 for servers it used before.",
            ),
            &["address"],
        )?;
        let switches = IntCounter::new(
            "server_switches_total",
            "Times the agent moved to another server (the first connection included).",
        )?;
        let sync_starts = IntCounterVec::new(
            Opts::new(
                "sync_starts_total",
                "Sync streams opened, by how the server started them: resumed (from the agent's cursor) or snapshot.",
            ),
            &["kind"],
        )?;
        let last_sync = IntGauge::new(
            "last_sync_seconds",
            "Unix time (seconds) of the last sync message received from a server and handed to the agent's cache (snapshot, resumed, change or checkpoint); 0 before the first. Servers send one at least at every stream start (each agent_connection_max_age).",
        )?;
        let cursor = IntGauge::new(
            "sync_cursor",
            "Event-log seq of the agent's sync cursor, as of the last snapshot, resumption or checkpoint received; 0 before the first.",
        )?;
        registry.register(Box::new(server.clone()))?;
        registry.register(Box::new(switches.clone()))?;
        registry.register(Box::new(sync_starts.clone()))?;
        registry.register(Box::new(last_sync.clone()))?;
        registry.register(Box::new(cursor.clone()))?;
        Ok(Self {
            server,
            switches,
            sync_starts,
            last_sync,
            cursor,
            clock,
        })
    }

    /// Metrics in a registry of their own (tests; a registration failure there is a bug).
    #[cfg(test)]
    pub(crate) fn unregistered() -> Self {
        Self::register(&Registry::new()).expect("fresh registry")
    }

    /// The agent now talks to `to` (and no longer to `from`).
    pub(crate) fn switched(&self, from: Option<&str>, to: &str) {
        if let Some(from) = from {
            self.server.with_label_values(&[from]).set(0);
        }
        self.server.with_label_values(&[to]).set(1);
        self.switches.inc();
    }

    /// The agent no longer talks to `from` (it failed; the next call chooses another).
    pub(crate) fn disconnected(&self, from: &str) {
        self.server.with_label_values(&[from]).set(0);
    }

    /// A sync stream started as `kind` (`resumed` or `snapshot`).
    pub(crate) fn sync_started(&self, kind: &str) {
        self.sync_starts.with_label_values(&[kind]).inc();
    }

    /// `message` came from the server and goes to the cache: the time of the last sync is
    /// now, and the cursor moves as the cache's does (set by a snapshot or a resumption,
    /// raised by a checkpoint; changes do not move it).
    pub(crate) fn synced(&self, message: &SyncMessage) {
        let now = self.clock.now_unix_nanos().div_euclid(1_000_000_000);
        self.last_sync.set(now);
        let at = |seq: u64| i64::try_from(seq).unwrap_or(i64::MAX);
        match message {
            SyncMessage::Snapshot { seq, .. } => self.cursor.set(at(*seq)),
            SyncMessage::Resumed { cursor } => self.cursor.set(at(*cursor)),
            SyncMessage::Checkpoint { seq } => {
                self.cursor.set(self.cursor.get().max(at(*seq)));
            }
            SyncMessage::Upsert { .. }
            | SyncMessage::Remove { .. }
            | SyncMessage::BundleUpdated { .. }
            | SyncMessage::BundleRemoved { .. } => {}
        }
    }

    /// Unix seconds of the last sync message (0 before the first).
    #[cfg(test)]
    pub(crate) fn last_sync(&self) -> i64 {
        self.last_sync.get()
    }

    /// The cursor gauge.
    #[cfg(test)]
    pub(crate) fn cursor(&self) -> i64 {
        self.cursor.get()
    }

    /// The gauge of `address`.
    #[cfg(test)]
    pub(crate) fn connected(&self, address: &str) -> i64 {
        self.server.with_label_values(&[address]).get()
    }

    /// Switches so far.
    #[cfg(test)]
    pub(crate) fn switches(&self) -> u64 {
        self.switches.get()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tessera_eventlog::ManualClock;
    use tessera_identity::EntryId;

    use super::*;
    use crate::workload_api::Metrics;

    #[test]
    fn served_with_the_workload_api_metrics_under_the_agent_prefix() {
        let workload = Metrics::new().unwrap();
        let node = NodeMetrics::register(workload.registry()).unwrap();
        node.switched(None, "10.0.0.1:8081");
        node.switched(Some("10.0.0.1:8081"), "10.0.0.2:8081");
        node.sync_started("resumed");
        let text = workload.render();
        for line in [
            "tessera_agent_server_connected{address=\"10.0.0.1:8081\"} 0",
            "tessera_agent_server_connected{address=\"10.0.0.2:8081\"} 1",
            "tessera_agent_server_switches_total 2",
            "tessera_agent_sync_starts_total{kind=\"resumed\"} 1",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
        assert!(
            NodeMetrics::register(workload.registry()).is_err(),
            "registered once"
        );
    }

    #[test]
    fn a_sync_message_sets_the_time_from_the_clock_and_moves_the_cursor_like_the_cache() {
        let clock = ManualClock::at_unix_secs(1_700_000_000);
        let workload = Metrics::new().unwrap();
        let node =
            NodeMetrics::register_with_clock(workload.registry(), Arc::new(clock.clone())).unwrap();
        let text = workload.render();
        assert!(text.contains("tessera_agent_last_sync_seconds 0"), "{text}");
        assert!(text.contains("tessera_agent_sync_cursor 0"), "{text}");

        node.synced(&SyncMessage::Snapshot {
            seq: 40,
            entries: Vec::new(),
            bundles: Vec::new(),
        });
        assert_eq!((node.last_sync(), node.cursor()), (1_700_000_000, 40));

        clock.advance(Duration::from_millis(90_500));
        node.synced(&SyncMessage::Remove {
            seq: 41,
            id: EntryId::new("e1").unwrap(),
        });
        assert_eq!(
            (node.last_sync(), node.cursor()),
            (1_700_000_090, 40),
            "a change is a sync but does not move the cursor"
        );

        node.synced(&SyncMessage::Checkpoint { seq: 41 });
        node.synced(&SyncMessage::Checkpoint { seq: 39 });
        assert_eq!(
            node.cursor(),
            41,
            "a checkpoint never moves the cursor back"
        );

        clock.advance(Duration::from_secs(10));
        node.synced(&SyncMessage::Resumed { cursor: 41 });
        let text = workload.render();
        for line in [
            "tessera_agent_last_sync_seconds 1700000100",
            "tessera_agent_sync_cursor 41",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }
}
