//! `[admin_socket]`: who may use the admin API's Unix socket, and how many connections they
//! may hold. As in SPIRE, the socket's mode (0770) keeps other users out; unlike SPIRE, the
//! server also checks each caller's uid (`SO_PEERCRED`) against an allow list, so a socket
//! reachable through a badly set directory or umask still refuses them.

use std::time::Duration;

use serde::Deserialize;
use tessera_edge::peer::{PeerPolicy, PolicyKeys};

use super::ConfigError;

/// The config keys, named in refusals.
pub const KEYS: PolicyKeys = PolicyKeys {
    max_connections: "admin_socket.max_connections",
    max_connections_per_uid: "admin_socket.max_connections_per_uid",
    allowed_uids: "admin_socket.allowed_uids",
    idle_timeout: "admin_socket.connection_idle_timeout",
};

/// The socket's mode by default (SPIRE's): owner and group may connect.
pub const DEFAULT_SOCKET_MODE: u32 = 0o770;

/// `[admin_socket]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSocketSection {
    /// The socket file's mode, octal (`"0770"`).
    pub mode: String,
    /// The uids that may connect; absent: this process's uid and root.
    pub allowed_uids: Option<Vec<u32>>,
    /// Connections open at once, all callers.
    pub max_connections: usize,
    /// Connections open at once per caller uid.
    pub max_connections_per_uid: usize,
    /// A connection with no request in flight for this long is closed.
    #[serde(deserialize_with = "tessera_edge::duration::deserialize")]
    pub connection_idle_timeout: Duration,
}

impl Default for AdminSocketSection {
    fn default() -> Self {
        Self {
            mode: format!("{DEFAULT_SOCKET_MODE:04o}"),
            allowed_uids: None,
            max_connections: 128,
            max_connections_per_uid: 64,
            connection_idle_timeout: Duration::from_secs(300),
        }
    }
}

/// The checked `[admin_socket]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSocketConfig {
    /// The socket file's mode.
    pub mode: u32,
    /// Who may connect, how many connections, how long idle.
    pub peers: PeerPolicy,
}

impl Default for AdminSocketConfig {
    fn default() -> Self {
        let s = AdminSocketSection::default();
        Self {
            mode: DEFAULT_SOCKET_MODE,
            peers: s.to_policy(default_uids()),
        }
    }
}

/// This process's uid and root.
pub fn default_uids() -> Vec<u32> {
    let own = tessera_edge::socket::own_uid();
    if own == 0 {
        vec![0]
    } else {
        vec![own, 0]
    }
}

fn invalid(key: &str, value: String, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        value,
        reason: reason.to_owned(),
    }
}

impl AdminSocketSection {
    /// Checks the section.
    pub fn config(&self) -> Result<AdminSocketConfig, ConfigError> {
        let digits = self.mode.strip_prefix("0o").unwrap_or(&self.mode);
        let mode = u32::from_str_radix(digits, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                invalid(
                    "admin_socket.mode",
                    self.mode.clone(),
                    "write permission bits in octal, between \"0000\" and \"0777\", e.g. \"0770\"",
                )
            })?;
        // An empty list is refused by the check, as every other bad value.
        let uids = self.allowed_uids.clone().unwrap_or_else(default_uids);
        let peers = self.to_policy(uids);
        peers
            .check()
            .map_err(|e| invalid(e.key, e.value, &e.reason))?;
        Ok(AdminSocketConfig { mode, peers })
    }

    fn to_policy(&self, uids: Vec<u32>) -> PeerPolicy {
        PeerPolicy {
            what: "admin API",
            max_connections: self.max_connections,
            max_connections_per_uid: self.max_connections_per_uid,
            idle_timeout: Some(self.connection_idle_timeout),
            allowed_uids: Some(uids),
            keys: KEYS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_spires_mode_and_our_uid_and_root() {
        let c = AdminSocketSection::default().config().unwrap();
        assert_eq!(c, AdminSocketConfig::default());
        assert_eq!(c.mode, 0o770);
        let uids = c.peers.allowed_uids.unwrap();
        assert!(uids.contains(&0));
        assert!(uids.contains(&tessera_edge::socket::own_uid()));
        assert_eq!(c.peers.max_connections, 128);
        assert_eq!(c.peers.max_connections_per_uid, 64);
        assert_eq!(c.peers.idle_timeout, Some(Duration::from_secs(300)));
    }

    #[test]
    fn values_are_read_and_bad_ones_named() {
        let s: AdminSocketSection = toml::from_str(
            "mode = \"0700\"\nallowed_uids = [0, 1000]\nmax_connections = 8\nmax_connections_per_uid = 2\nconnection_idle_timeout = \"1m\"",
        )
        .unwrap();
        let c = s.config().unwrap();
        assert_eq!(c.mode, 0o700);
        assert_eq!(c.peers.allowed_uids, Some(vec![0, 1000]));
        assert_eq!(c.peers.idle_timeout, Some(Duration::from_secs(60)));
        for (bad, key) in [
            ("mode = \"0999\"", "admin_socket.mode"),
            ("mode = \"01777\"", "admin_socket.mode"),
            ("allowed_uids = []", "admin_socket.allowed_uids"),
            ("max_connections = 0", "admin_socket.max_connections"),
            (
                "max_connections_per_uid = 1000",
                "admin_socket.max_connections_per_uid",
            ),
            (
                "connection_idle_timeout = \"0s\"",
                "admin_socket.connection_idle_timeout",
            ),
        ] {
            let s: AdminSocketSection = toml::from_str(bad).unwrap();
            let err = s.config().unwrap_err().to_string();
            assert!(err.starts_with(key), "{bad}: {err}");
        }
        assert!(toml::from_str::<AdminSocketSection>("allowed_uid = [1]").is_err());
    }
}
