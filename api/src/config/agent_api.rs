//! The agent API's keys of `[limits]`: validated into [`AgentApiLimits`]. Defaults live in
//! `AgentApiLimits::default()` (and, for the audiences the agent's Workload API shares, in
//! `tessera_edge::limits`), so the file, the code and the docs state one value.

use std::time::Duration;

use tessera_edge::limits::AudienceLimits;

use super::file::LimitsSection;
use super::{invalid, positive, ConfigError};
use crate::agent_api::AgentApiLimits;

/// Checks the agent API's limits and builds them.
pub(super) fn agent_limits(l: &LimitsSection) -> Result<AgentApiLimits, ConfigError> {
    for (key, v) in [
        ("limits.max_audience_len", l.max_audience_len),
        ("limits.max_agent_connections", l.max_agent_connections),
        (
            "limits.max_agent_connections_per_ip",
            l.max_agent_connections_per_ip,
        ),
        (
            "limits.max_sync_streams_per_agent",
            l.max_sync_streams_per_agent,
        ),
    ] {
        positive(key, v)?;
    }
    for (key, v) in [
        (
            "limits.agent_max_concurrent_streams",
            l.agent_max_concurrent_streams,
        ),
        (
            "limits.attestations_per_ip_per_second",
            l.attestations_per_ip_per_second,
        ),
        (
            "limits.attestation_burst_per_ip",
            l.attestation_burst_per_ip,
        ),
        (
            "limits.agent_jwt_mints_per_second",
            l.agent_jwt_mints_per_second,
        ),
        (
            "limits.agent_csr_batches_per_second",
            l.agent_csr_batches_per_second,
        ),
    ] {
        positive(key, v as usize)?;
    }
    if l.agent_max_header_list_bytes < 1024 {
        return Err(invalid(
            "limits.agent_max_header_list_bytes",
            l.agent_max_header_list_bytes,
            "must be at least 1024",
        ));
    }
    if l.agent_max_request_bytes < 64 * 1024 {
        return Err(invalid(
            "limits.agent_max_request_bytes",
            l.agent_max_request_bytes,
            "must be at least 65536 (a batch of CSRs needs room)",
        ));
    }
    for (key, d) in [
        ("limits.agent_handshake_timeout", l.agent_handshake_timeout),
        (
            "limits.agent_connection_max_age",
            l.agent_connection_max_age,
        ),
        (
            "limits.attestation_step_timeout",
            l.attestation_step_timeout,
        ),
        ("limits.attestation_timeout", l.attestation_timeout),
    ] {
        if d.is_zero() {
            return Err(invalid(key, "0", "must be longer than zero (e.g. \"5s\")"));
        }
    }
    if l.agent_connection_max_age < Duration::from_secs(10) {
        return Err(invalid(
            "limits.agent_connection_max_age",
            format!("{:?}", l.agent_connection_max_age),
            "must be at least 10s: agents reconnect at this age",
        ));
    }
    Ok(AgentApiLimits {
        max_connections: l.max_agent_connections,
        max_connections_per_ip: l.max_agent_connections_per_ip,
        handshake_timeout: l.agent_handshake_timeout,
        max_concurrent_streams: l.agent_max_concurrent_streams,
        max_header_list_bytes: l.agent_max_header_list_bytes,
        max_request_bytes: l.agent_max_request_bytes,
        connection_max_age: l.agent_connection_max_age,
        connection_max_age_grace: l.agent_connection_max_age_grace,
        attestations_per_ip_per_second: l.attestations_per_ip_per_second,
        attestation_burst_per_ip: l.attestation_burst_per_ip,
        attestation_max_wait: l.attestation_max_wait,
        attestation_step_timeout: l.attestation_step_timeout,
        attestation_timeout: l.attestation_timeout,
        max_sync_streams_per_agent: l.max_sync_streams_per_agent,
        jwt_mints_per_agent_per_second: l.agent_jwt_mints_per_second,
        csr_batches_per_agent_per_second: l.agent_csr_batches_per_second,
        max_sign_batch: l.max_signing_batch,
        audiences: AudienceLimits {
            max_audiences: l.max_audiences,
            max_audience_len: l.max_audience_len,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_agent_api_and_the_shared_audience_limits() {
        let got = agent_limits(&LimitsSection::default()).unwrap();
        assert_eq!(got, AgentApiLimits::default());
        assert_eq!(got.audiences, AudienceLimits::default());
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                LimitsSection {
                    max_agent_connections_per_ip: 0,
                    ..LimitsSection::default()
                },
                "limits.max_agent_connections_per_ip",
            ),
            (
                LimitsSection {
                    agent_connection_max_age: Duration::from_secs(1),
                    ..LimitsSection::default()
                },
                "limits.agent_connection_max_age",
            ),
            (
                LimitsSection {
                    attestations_per_ip_per_second: 0,
                    ..LimitsSection::default()
                },
                "limits.attestations_per_ip_per_second",
            ),
        ];
        for (l, key) in cases {
            let err = agent_limits(&l).unwrap_err().to_string();
            assert!(err.starts_with(key), "{key}: {err}");
        }
    }
}
