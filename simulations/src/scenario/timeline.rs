//! `[[timeline]]`: what an operator does at given times of a run. One action so far,
//! `force_rotation`: what an SRE does with `localauthority x509 prepare`, `activate`, `taint`
//! and optionally `revoke` on one server, each step after the previous one's delay.
//!
//! ```toml
//! [[timeline]]
//! at = "6h"                  # prepare a new CA now (or take the one rotation prepared)
//! action = "force_rotation"
//! server = 0                 # which server's CA (default 0)
//! activate_after = "1m"      # activate it this long after the prepare (default 1m)
//! taint_after = "0s"         # taint the old CA this long after the activation (default 0s)
//! revoke_after = "10m"       # revoke the tainted CA this long after the taint (default: never)
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a `[[timeline]]` item does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Prepare a new CA now, activate it, taint the old one (and revoke it, if asked): a
    /// forced rotation (SPIRE's LocalAuthority `prepare`/`activate`/`taint`/`revoke`).
    ForceRotation,
}

/// `[[timeline]]`: one operator action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineAction {
    /// When it starts, from the start of the run.
    #[serde(with = "tessera_edge::duration")]
    pub at: Duration,
    /// What it does.
    pub action: ActionKind,
    /// The server whose CA is rotated (0-based; default 0).
    #[serde(default)]
    pub server: u32,
    /// From the prepare to the activation: time for the new CA's root to reach every agent's
    /// bundle before anything it signs does (default 1m; SPIRE's advice is to wait for the
    /// bundle to propagate).
    #[serde(default = "default_activate_after", with = "tessera_edge::duration")]
    pub activate_after: Duration,
    /// From the activation to the taint of the old CA (default 0s: at once).
    #[serde(default, with = "tessera_edge::duration")]
    pub taint_after: Duration,
    /// From the taint to the revocation of the old CA; absent: it is never revoked (it stays
    /// in the bundle, tainted, until it expires).
    #[serde(
        default,
        with = "optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub revoke_after: Option<Duration>,
}

fn default_activate_after() -> Duration {
    Duration::from_secs(60)
}

impl TimelineAction {
    /// Virtual ms of the prepare, the activation, the taint and the revocation (if any).
    pub fn steps_ms(&self) -> (u64, u64, u64, Option<u64>) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let prepare = ms(self.at);
        let activate = prepare.saturating_add(ms(self.activate_after));
        let taint = activate.saturating_add(ms(self.taint_after));
        let revoke = self.revoke_after.map(|d| taint.saturating_add(ms(d)));
        (prepare, activate, taint, revoke)
    }
}

/// serde for an optional duration written as `tessera_edge::duration` writes one.
mod optional_duration {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        tessera_edge::duration::deserialize(d).map(Some)
    }

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => tessera_edge::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}
