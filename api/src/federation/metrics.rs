//! The refresher's metric families, registered in the server's registry (`crate::metrics`),
//! so under its `tessera_server_` prefix:
//! - counter `federation_refresh_total{trust_domain, outcome}`: refresh attempts by outcome
//!   (`ok`: a changed bundle stored; `unchanged`; otherwise the failure's kind, e.g.
//!   `unreachable`, `timeout`, `wrong_endpoint_id`, `bad_jwks`, `too_large`);
//! - gauge `federated_bundle_sequence{trust_domain}`: sequence number of the last bundle fetched;
//! - gauge `federation_last_success_seconds{trust_domain}`: Unix time of the last good fetch
//!   (alert on `time() - it` above a few refresh hints).
//!
//! A deleted relationship's series are removed, so label sets stay bounded by
//! `limits.federation.max_relationships`.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use tessera_identity::TrustDomain;

/// The refresher's metrics.
#[derive(Debug, Clone)]
pub struct FederationMetrics {
    refresh_total: IntCounterVec,
    sequence: IntGaugeVec,
    last_success: IntGaugeVec,
}

impl FederationMetrics {
    /// Builds the families and registers them in `registry`.
    ///
    /// # Errors
    /// A name clash in `registry` (a bug).
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let refresh_total = IntCounterVec::new(
            Opts::new(
                "federation_refresh_total",
                "Federated bundle refresh attempts by trust domain and outcome (ok, unchanged, or the failure's kind).",
            ),
            &["trust_domain", "outcome"],
        )?;
        let sequence = IntGaugeVec::new(
            Opts::new(
                "federated_bundle_sequence",
                "Sequence number of the last bundle fetched from each federated trust domain.",
            ),
            &["trust_domain"],
        )?;
        let last_success = IntGaugeVec::new(
            Opts::new(
                "federation_last_success_seconds",
                "Unix time of the last successful bundle fetch of each federated trust domain.",
            ),
            &["trust_domain"],
        )?;
        registry.register(Box::new(refresh_total.clone()))?;
        registry.register(Box::new(sequence.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        Ok(Self {
            refresh_total,
            sequence,
            last_success,
        })
    }

    /// Counts one attempt.
    pub fn attempt(&self, trust_domain: &TrustDomain, outcome: &str) {
        self.refresh_total
            .with_label_values(&[trust_domain.as_str(), outcome])
            .inc();
    }

    /// Records a good fetch.
    pub fn success(&self, trust_domain: &TrustDomain, sequence: u64, at_unix: i64) {
        let td = [trust_domain.as_str()];
        self.sequence
            .with_label_values(&td)
            .set(i64::try_from(sequence).unwrap_or(i64::MAX));
        self.last_success.with_label_values(&td).set(at_unix);
    }

    /// Removes a deleted relationship's series.
    pub fn forget(&self, trust_domain: &TrustDomain) {
        let td = trust_domain.as_str();
        let _ = self.sequence.remove_label_values(&[td]);
        let _ = self.last_success.remove_label_values(&[td]);
        for outcome in OUTCOMES {
            let _ = self.refresh_total.remove_label_values(&[td, outcome]);
        }
    }
}

/// Every `outcome` label value: `ok`, `unchanged`, the fetch failures
/// (`FetchError::kind`), and the refresher's own (`store`: the aggregate did not answer;
/// `refused`: it refused the bundle; `panicked`: the fetch task panicked).
pub const OUTCOMES: &[&str] = &[
    "ok",
    "unchanged",
    "store",
    "refused",
    "panicked",
    "bad_url",
    "unreachable",
    "timeout",
    "no_held_bundle",
    "wrong_endpoint_id",
    "tls",
    "http",
    "status",
    "too_large",
    "bad_jwks",
    "wrong_trust_domain",
    "empty",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_trust_domain_leaves_no_series() {
        let registry = Registry::new();
        let m = FederationMetrics::register(&registry).unwrap();
        let td = TrustDomain::new("partner.example").unwrap();
        for outcome in OUTCOMES {
            m.attempt(&td, outcome);
        }
        m.success(&td, 7, 1_700_000_000);
        assert!(!registry.gather().is_empty());
        let series: usize = registry.gather().iter().map(|f| f.get_metric().len()).sum();
        assert_eq!(series, OUTCOMES.len() + 2);
        m.forget(&td);
        let series: usize = registry.gather().iter().map(|f| f.get_metric().len()).sum();
        assert_eq!(series, 0);
    }
}
