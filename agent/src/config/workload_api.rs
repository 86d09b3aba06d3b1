//! `[workload_api]`: the connections of the Workload API socket. Any local user may connect
//! (the socket is 0777 by design), so every local user's connections are bounded: in all, per
//! uid, and in how long one may stay open with no request in flight.

use std::time::Duration;

use serde::Deserialize;
use tessera_edge::peer::{PeerPolicy, PolicyKeys};

use super::ConfigError;

/// The config keys, named in refusals.
pub const KEYS: PolicyKeys = PolicyKeys {
    max_connections: "workload_api.max_connections",
    max_connections_per_uid: "workload_api.max_connections_per_uid",
    allowed_uids: "(none: every uid may connect to the Workload API)",
    idle_timeout: "workload_api.connection_idle_timeout",
};

/// `[workload_api]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkloadApiSection {
    /// Connections open at once, all callers.
    pub max_connections: usize,
    /// Connections open at once per caller uid.
    pub max_connections_per_uid: usize,
    /// A connection with no request in flight for this long is closed (clients reconnect).
    #[serde(deserialize_with = "tessera_edge::duration::deserialize")]
    pub connection_idle_timeout: Duration,
}

impl Default for WorkloadApiSection {
    fn default() -> Self {
        Self {
            max_connections: 2048,
            max_connections_per_uid: 512,
            connection_idle_timeout: Duration::from_secs(300),
        }
    }
}

impl WorkloadApiSection {
    /// The checked policy of the socket's connections.
    pub fn policy(&self) -> Result<PeerPolicy, ConfigError> {
        let policy = self.to_policy();
        policy.check().map_err(|e| ConfigError::Invalid {
            key: e.key.to_owned(),
            value: e.value,
            reason: e.reason,
        })?;
        Ok(policy)
    }

    /// The policy, unchecked (for values known to be good, such as the defaults).
    pub fn to_policy(&self) -> PeerPolicy {
        PeerPolicy {
            what: "Workload API",
            max_connections: self.max_connections,
            max_connections_per_uid: self.max_connections_per_uid,
            idle_timeout: Some(self.connection_idle_timeout),
            allowed_uids: None,
            keys: KEYS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keys_and_bad_values() {
        let policy = WorkloadApiSection::default().policy().unwrap();
        assert_eq!(policy.max_connections, 2048);
        assert_eq!(policy.max_connections_per_uid, 512);
        assert_eq!(policy.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(policy.allowed_uids, None);

        let s: WorkloadApiSection = toml::from_str(
            "max_connections = 10\nmax_connections_per_uid = 4\nconnection_idle_timeout = \"30s\"",
        )
        .unwrap();
        let p = s.policy().unwrap();
        assert_eq!(
            (p.max_connections, p.max_connections_per_uid, p.idle_timeout),
            (10, 4, Some(Duration::from_secs(30)))
        );
        let err = WorkloadApiSection {
            max_connections_per_uid: 11,
            max_connections: 10,
            ..Default::default()
        }
        .policy()
        .unwrap_err();
        assert!(err
            .to_string()
            .contains("workload_api.max_connections_per_uid"));
        assert!(toml::from_str::<WorkloadApiSection>("max_conections = 1").is_err());
    }
}
