//! Prometheus metrics of the node side, registered in the agent's registry (served on
//! `/metrics` with the Workload API's): which server the agent uses, how often it switched,
//! and how each sync stream started (resumed from the cursor, or a full snapshot).

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// The node side's metrics.
#[derive(Debug, Clone)]
pub(crate) struct NodeMetrics {
    server: IntGaugeVec,
    switches: IntCounter,
    sync_starts: IntCounterVec,
}

impl NodeMetrics {
    /// Registers the metrics in `registry`.
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
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
        registry.register(Box::new(server.clone()))?;
        registry.register(Box::new(switches.clone()))?;
        registry.register(Box::new(sync_starts.clone()))?;
        Ok(Self {
            server,
            switches,
            sync_starts,
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
}
