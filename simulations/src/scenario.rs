//! A scenario: the fleet, the servers' and agents' settings, the network, churn and faults of
//! one simulated run, read from a TOML file whose every key has a default (SPIRE's, where the
//! concept exists). Durations are Go duration strings (`"90s"`, `"24h"`), parsed by
//! `tessera_edge::duration` like the binaries' config.
//!
//! A scenario may instead carry a scripted timeline ([`Scenario::script`], in memory only,
//! built by what-if replay from a real log): its entry and agent events are applied at their
//! times as recorded facts, and the `[fleet]` generator then makes nothing.
//!
//! `[[timeline]]` items are an operator's actions at given times ([`TimelineAction`]: a
//! forced rotation, as with SPIRE's `localauthority` commands).

mod sections;
mod timeline;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_actors::server::events::ServerEvent;

pub use self::sections::{
    Agent, Checks, Churn, Crypto, Fault, FaultKind, Fleet, Fraction, Network, Server,
    DEFAULT_SIGNING_RATE,
};
pub use self::timeline::{ActionKind, TimelineAction};

/// One recorded fact of a scripted timeline, applied at `at_ms` (virtual milliseconds from
/// the start) without a decision: `EntryCreated`, `EntryUpdated`, `EntryDeleted`,
/// `EntryExpired`, `AgentAttested` (which also makes the agent), `AgentEvicted`,
/// `AgentBanned`. Other kinds are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scripted {
    /// When, virtual milliseconds from the start of the run.
    pub at_ms: u64,
    /// The fact.
    pub event: ServerEvent,
}

/// A whole scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Name, for the report.
    pub name: String,
    /// Seed used when the command line gives none.
    pub seed: u64,
    /// Virtual time to run.
    #[serde(with = "tessera_edge::duration")]
    pub duration: Duration,
    /// `fast` (stand-in SVIDs) or `real` (ECDSA CSRs signed with the real template).
    pub crypto: Crypto,
    /// Servers sharing one log, each with its own CA and signing queue.
    pub servers: u32,
    /// The trust domain.
    pub trust_domain: String,
    /// Wall-clock instant the run starts at, Unix seconds (fixed, so runs are reproducible).
    pub start_unix: i64,
    /// The generated fleet.
    pub fleet: Fleet,
    /// Every server's authority and signer.
    pub server: Server,
    /// Every agent's rotation and reconnection.
    pub agent: Agent,
    /// Delay and loss.
    pub network: Network,
    /// Entries created and deleted during the run.
    pub churn: Churn,
    /// Periodic checks.
    pub checks: Checks,
    /// Outages and partitions.
    pub faults: Vec<Fault>,
    /// An operator's actions (forced rotations), in the file as `[[timeline]]`.
    pub timeline: Vec<TimelineAction>,
    /// A recorded timeline to apply instead of the generated fleet (in memory only).
    #[serde(skip)]
    pub script: Vec<Scripted>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "unnamed".into(),
            seed: 1,
            duration: Duration::from_secs(3600),
            crypto: Crypto::Fast,
            servers: 1,
            trust_domain: "example.org".into(),
            start_unix: 1_767_225_600, // 2026-01-01T00:00:00Z
            fleet: Fleet::default(),
            server: Server::default(),
            agent: Agent::default(),
            network: Network::default(),
            churn: Churn::default(),
            checks: Checks::default(),
            faults: Vec::new(),
            timeline: Vec::new(),
            script: Vec::new(),
        }
    }
}

/// Why a scenario cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("scenario {path}: cannot read it: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML does not parse or has an unknown or mistyped key.
    #[error("scenario: {0}")]
    Parse(String),
    /// A key's value is out of range.
    #[error("scenario key {key} = {value}: {fix}")]
    Invalid {
        /// The key, with its section (`server.activate_at`).
        key: String,
        /// The value given.
        value: String,
        /// What would be accepted.
        fix: String,
    },
    /// `set` was asked for a key it does not override.
    #[error("scenario key {0:?} cannot be set from the command line; settable keys: {SETTABLE}")]
    UnknownKey(String),
}

/// The keys [`Scenario::set`] overrides.
pub const SETTABLE: &str = "ca_ttl, default_x509_svid_ttl, prepare_at, activate_at, \
    renew_at_percent, jitter_percent, x509_svid_cache_max_size";

impl Scenario {
    /// Parses and checks a scenario.
    ///
    /// # Errors
    /// [`ScenarioError::Parse`] naming the key for bad TOML or unknown keys,
    /// [`ScenarioError::Invalid`] for values out of range.
    pub fn from_toml_str(text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario =
            toml::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Reads, parses and checks a scenario file.
    ///
    /// # Errors
    /// As [`Scenario::from_toml_str`], and [`ScenarioError::Read`].
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::from_toml_str(&text).map_err(|e| match e {
            ScenarioError::Parse(m) => ScenarioError::Parse(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Overrides one setting by name (what-if runs): `ca_ttl`, `default_x509_svid_ttl`
    /// (durations), `prepare_at`, `activate_at` (fractions `"1/2"`), `renew_at_percent`,
    /// `jitter_percent`, `x509_svid_cache_max_size` (numbers). The scenario is checked again.
    ///
    /// # Errors
    /// [`ScenarioError::UnknownKey`], or [`ScenarioError::Invalid`] naming the key.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ScenarioError> {
        let invalid = |fix: String| ScenarioError::Invalid {
            key: key.to_owned(),
            value: value.to_owned(),
            fix,
        };
        let duration = || {
            tessera_edge::duration::parse_duration(value)
                .map_err(|e| invalid(format!("{e}; write a duration such as \"12h\"")))
        };
        let number = |max: u64| {
            value
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| invalid(format!("must be a whole number from 0 to {max}")))
        };
        // Changed on a copy: a refused value leaves the scenario as it was.
        let mut next = self.clone();
        match key {
            "ca_ttl" => next.server.ca_ttl = duration()?,
            "default_x509_svid_ttl" => next.server.default_x509_svid_ttl = duration()?,
            "prepare_at" => next.server.prepare_at = Fraction::parse(value).map_err(invalid)?,
            "activate_at" => next.server.activate_at = Fraction::parse(value).map_err(invalid)?,
            "renew_at_percent" => next.agent.renew_at_percent = clamp_u8(number(100)?),
            "jitter_percent" => next.agent.jitter_percent = clamp_u8(number(100)?),
            "x509_svid_cache_max_size" => next.agent.x509_svid_cache_max_size = number(u64::MAX)?,
            _ => return Err(ScenarioError::UnknownKey(key.to_owned())),
        }
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// Checks the values the types cannot.
    ///
    /// # Errors
    /// [`ScenarioError::Invalid`] naming the first bad key.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |key: &str, value: String, fix: &str| {
            Err(ScenarioError::Invalid {
                key: key.into(),
                value,
                fix: fix.into(),
            })
        };
        let (p, a) = (self.server.prepare_at, self.server.activate_at);
        if u64::from(p.num) * u64::from(a.den) > u64::from(a.num) * u64::from(p.den) {
            return bad(
                "server.prepare_at",
                format!("{}/{}", p.num, p.den),
                "must not come after server.activate_at",
            );
        }
        if tessera_identity::TrustDomain::new(&self.trust_domain).is_err() {
            return bad(
                "trust_domain",
                self.trust_domain.clone(),
                "must be a trust domain name such as \"example.org\"",
            );
        }
        if self.servers == 0 || self.servers > 64 {
            return bad("servers", self.servers.to_string(), "must be 1 to 64");
        }
        let secs = |d: Duration| d.as_secs();
        if secs(self.server.ca_ttl) < 60 {
            return bad(
                "server.ca_ttl",
                format!("{:?}", self.server.ca_ttl),
                "must be at least 1m",
            );
        }
        if secs(self.server.default_x509_svid_ttl) < 10 {
            return bad(
                "server.default_x509_svid_ttl",
                format!("{:?}", self.server.default_x509_svid_ttl),
                "must be at least 10s",
            );
        }
        if self.server.rotation_tick.as_millis() == 0 {
            return bad("server.rotation_tick", "0s".into(), "must be positive");
        }
        if self.server.signing_rate == 0 {
            return bad("server.signing_rate", "0".into(), "must be positive");
        }
        if self.server.on_demand_reserve * 2 > self.server.max_queued {
            return bad(
                "server.on_demand_reserve",
                self.server.on_demand_reserve.to_string(),
                "must be at most half of server.max_queued",
            );
        }
        if self.agent.batch == 0 {
            return bad("agent.batch", "0".into(), "must be positive");
        }
        if self.agent.renew_at_percent == 0 || self.agent.renew_at_percent >= 100 {
            return bad(
                "agent.renew_at_percent",
                self.agent.renew_at_percent.to_string(),
                "must be 1 to 99",
            );
        }
        if self.agent.backoff_initial.is_zero()
            || self.agent.backoff_max < self.agent.backoff_initial
        {
            return bad(
                "agent.backoff_max",
                format!("{:?}", self.agent.backoff_max),
                "backoff_initial must be positive and backoff_max at least backoff_initial",
            );
        }
        if self.network.latency_max < self.network.latency_min {
            return bad(
                "network.latency_max",
                format!("{:?}", self.network.latency_max),
                "must be at least network.latency_min",
            );
        }
        if !(0.0..=100.0).contains(&self.network.loss_percent) {
            return bad(
                "network.loss_percent",
                self.network.loss_percent.to_string(),
                "must be 0 to 100",
            );
        }
        for (key, rate) in [
            ("churn.creates_per_minute", self.churn.creates_per_minute),
            ("churn.deletes_per_minute", self.churn.deletes_per_minute),
        ] {
            if !(0.0..=1_000_000.0).contains(&rate) {
                return bad(key, rate.to_string(), "must be 0 to 1000000");
            }
        }
        if self.checks.audit_interval.as_secs() < 1 {
            return bad("checks.audit_interval", "0s".into(), "must be at least 1s");
        }
        for (i, f) in self.faults.iter().enumerate() {
            if f.kind == FaultKind::Outage && f.server >= self.servers {
                return bad(
                    &format!("faults[{i}].server"),
                    f.server.to_string(),
                    "must name a server: 0 to servers - 1",
                );
            }
            if !(0.0..=1.0).contains(&f.fraction) {
                return bad(
                    &format!("faults[{i}].fraction"),
                    f.fraction.to_string(),
                    "must be 0 to 1",
                );
            }
        }
        self.validate_timeline()
    }

    /// Checks the `[[timeline]]` items.
    fn validate_timeline(&self) -> Result<(), ScenarioError> {
        for (i, t) in self.timeline.iter().enumerate() {
            let invalid = |key: &str, value: String, fix: String| {
                Err(ScenarioError::Invalid {
                    key: format!("timeline[{i}].{key}"),
                    value,
                    fix,
                })
            };
            if t.at >= self.duration {
                return invalid(
                    "at",
                    tessera_edge::duration::format_duration(t.at),
                    format!(
                        "must fall inside the run (duration = {:?}); move it earlier or run longer",
                        tessera_edge::duration::format_duration(self.duration)
                    ),
                );
            }
            if t.server >= self.servers {
                return invalid(
                    "server",
                    t.server.to_string(),
                    "must name a server: 0 to servers - 1".into(),
                );
            }
        }
        Ok(())
    }
}

fn clamp_u8(n: u64) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_errors_name_the_key() {
        let s = Scenario::from_toml_str("name = \"x\"\n").unwrap();
        assert_eq!(s.server.ca_ttl, Duration::from_secs(86_400));
        let err = Scenario::from_toml_str("[server]\nca_tll = \"1h\"\n").unwrap_err();
        assert!(err.to_string().contains("ca_tll"), "{err}");
        let err = Scenario::from_toml_str("[server]\nprepare_at = \"2/1\"\n").unwrap_err();
        assert!(err.to_string().contains("prepare_at"), "{err}");
        let mut s = Scenario::default();
        s.set("ca_ttl", "12h").unwrap();
        assert_eq!(s.server.ca_ttl, Duration::from_secs(43_200));
        s.set("activate_at", "2/3").unwrap();
        let err = s.set("prepare_at", "3/4").unwrap_err();
        assert!(err.to_string().contains("prepare_at"), "{err}");
        assert!(matches!(
            s.set("nope", "1"),
            Err(ScenarioError::UnknownKey(_))
        ));
    }
}
