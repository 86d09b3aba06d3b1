//! Prometheus counters of SDS streams, registered in the Workload API's registry (so they are
//! served on the same `/metrics`): requests on streams by what they were under the xDS rules,
//! and responses by what triggered them. Calls, latency and open streams are counted by the
//! Workload API's own metrics under the methods `StreamSecrets` and `FetchSecrets`.

use prometheus::{IntCounterVec, Opts, Registry};

/// What a request on a stream was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// The first request, or one naming other resources: answered.
    Subscribe,
    /// Acknowledges the last response.
    Ack,
    /// Rejects the last response (`error_detail` set).
    Nack,
    /// Answers an older response than the last one sent: ignored.
    Stale,
}

impl RequestKind {
    fn label(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Ack => "ack",
            Self::Nack => "nack",
            Self::Stale => "stale",
        }
    }
}

/// The SDS counters.
#[derive(Debug, Clone)]
pub struct SdsMetrics {
    requests: IntCounterVec,
    pushes: IntCounterVec,
}

impl SdsMetrics {
    /// Counters registered in `registry`. A registry that holds them already (a second server
    /// sharing the metrics) keeps the first ones; these then count unexported.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "sds_stream_requests_total",
                "SDS StreamSecrets requests, by kind: subscribe, ack, nack, stale.",
            ),
            &["kind"],
        )?;
        let pushes = IntCounterVec::new(
            Opts::new(
                "sds_stream_responses_total",
                "SDS StreamSecrets responses, by trigger: request (a subscription) or change (of the caller's secrets).",
            ),
            &["trigger"],
        )?;
        for c in [&requests, &pushes] {
            match registry.register(Box::new(c.clone())) {
                Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Self { requests, pushes })
    }

    /// Counts a request.
    pub fn request(&self, kind: RequestKind) {
        self.requests.with_label_values(&[kind.label()]).inc();
    }

    /// Requests of `kind` counted so far.
    pub fn requests(&self, kind: RequestKind) -> u64 {
        self.requests.with_label_values(&[kind.label()]).get()
    }

    /// Counts a response, triggered by a request (`true`) or a change.
    pub fn response(&self, by_request: bool) {
        let trigger = if by_request { "request" } else { "change" };
        self.pushes.with_label_values(&[trigger]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_and_exported_once_per_registry() {
        let registry = Registry::new_custom(Some("tessera_agent".into()), None).unwrap();
        let m = SdsMetrics::new(&registry).unwrap();
        let again = SdsMetrics::new(&registry).unwrap();
        m.request(RequestKind::Nack);
        m.response(false);
        again.request(RequestKind::Ack);
        assert_eq!(m.requests(RequestKind::Nack), 1);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "tessera_agent_sds_stream_requests_total",
                "tessera_agent_sds_stream_responses_total"
            ]
        );
    }
}
