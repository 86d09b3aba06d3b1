//! The sections of a scenario file, each key with SPIRE's default where the concept exists.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in a CA's lifetime, written `"num/den"` (`"1/2"`, `"5/6"`), as the server's
/// `prepare_at`/`activate_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fraction {
    /// Numerator.
    pub num: u32,
    /// Denominator (not 0).
    pub den: u32,
}

impl Fraction {
    /// Parses `"num/den"` with `0 < num < den`.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (num, den) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a fraction; write it as \"1/2\""))?;
        let parse = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("{text:?}: {s:?} is not a whole number"))
        };
        let (num, den) = (parse(num)?, parse(den)?);
        if num == 0 || num >= den {
            return Err(format!(
                "{text:?} must be strictly between 0 and 1 (e.g. \"1/2\")"
            ));
        }
        Ok(Self { num, den })
    }
}

impl Serialize for Fraction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}/{}", self.num, self.den))
    }
}

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Fraction::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// How certificates are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Crypto {
    /// Stand-in SVIDs with the same validity fields, SPIFFE ID, serial and issuer (no ECDSA).
    Fast,
    /// Real CSRs from agent keys, signed with the real X.509 template by the active CA.
    Real,
}

/// `[fleet]`: the agents and entries the generator makes (nothing when a script is given).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fleet {
    /// Agents in the fleet.
    pub agents: u64,
    /// Workload entries parented to each agent.
    pub entries_per_agent: u64,
    /// Agents attest and first connect spread evenly over this window from the start.
    #[serde(with = "tessera_edge::duration")]
    pub attest_spread: Duration,
    /// Entries of each agent that workloads on its node use (0: all of them). Used entries
    /// are signed on demand even beyond `x509_svid_cache_max_size`; only they count as
    /// unserved when they have no valid SVID.
    pub used_entries_per_agent: u64,
}

impl Default for Fleet {
    fn default() -> Self {
        Self {
            agents: 100,
            entries_per_agent: 10,
            attest_spread: Duration::from_secs(60),
            used_entries_per_agent: 0,
        }
    }
}

/// `[server]`: the authority and signer settings of every server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// CA lifetime (SPIRE's `ca_ttl`, 24h). JWT keys get the same.
    #[serde(with = "tessera_edge::duration")]
    pub ca_ttl: Duration,
    /// X509-SVID lifetime for entries without their own (SPIRE's `default_x509_svid_ttl`, 1h).
    #[serde(with = "tessera_edge::duration")]
    pub default_x509_svid_ttl: Duration,
    /// When the next CA is prepared, as a fraction of the current one's lifetime (SPIRE: 1/2).
    pub prepare_at: Fraction,
    /// When the prepared CA starts signing (SPIRE: 5/6).
    pub activate_at: Fraction,
    /// How often the authority checks rotation (SPIRE: 10s).
    #[serde(with = "tessera_edge::duration")]
    pub rotation_tick: Duration,
    /// X509-SVIDs one server signs per virtual second. Default: 15,800, measured through the
    /// real authority with ECDSA P-256 on the 2-core development machine (README).
    pub signing_rate: u64,
    /// Items admitted to one server's signing queue at once (Tessera's `max_queued`, 10,000).
    pub max_queued: u64,
    /// Part of `max_queued` kept for on-demand signing (first SVIDs): renewals are refused
    /// beyond `max_queued - on_demand_reserve` (1,000).
    pub on_demand_reserve: u64,
    /// Per-agent view changes each server keeps so a reconnecting agent resumes rather than
    /// taking a snapshot (the server's `sync_resume_window`, 65,536).
    pub resume_window: u64,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            ca_ttl: Duration::from_secs(24 * 3600),
            default_x509_svid_ttl: Duration::from_secs(3600),
            prepare_at: Fraction { num: 1, den: 2 },
            activate_at: Fraction { num: 5, den: 6 },
            rotation_tick: Duration::from_secs(10),
            signing_rate: DEFAULT_SIGNING_RATE,
            max_queued: 10_000,
            on_demand_reserve: 1_000,
            resume_window: 65_536,
        }
    }
}

/// Default signatures per second per server: the authority's measured X.509-SVID signing
/// throughput on the 2-core development machine (README, "X.509-SVID signing through the
/// authority": 15,800/s, `cargo bench -p tessera-actors --bench server`).
pub const DEFAULT_SIGNING_RATE: u64 = 15_800;

/// `[agent]`: the agents' rotation and reconnection settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Agent {
    /// Renew an SVID at this percentage of its lifetime (50: half-life).
    pub renew_at_percent: u8,
    /// Jitter around it, percent of the lifetime (10).
    pub jitter_percent: u8,
    /// Most CSRs in one signing round (500).
    pub batch: u64,
    /// SVIDs signed eagerly per agent; entries beyond it are signed only when workloads use
    /// them, and unused SVIDs beyond it are evicted, least recently used first (SPIRE's
    /// `x509_svid_cache_max_size`; 0 means the agent's default, 1,000, as in the agent's
    /// config; to sign every entry, give at least the entries per agent).
    pub x509_svid_cache_max_size: u64,
    /// Wait before retrying a failed signing round (the agent's 5s).
    #[serde(with = "tessera_edge::duration")]
    pub sign_retry: Duration,
    /// A signing request with no answer is given up after this long (then retried).
    #[serde(with = "tessera_edge::duration")]
    pub sign_timeout: Duration,
    /// First reconnect delay of the sync stream; doubles with ±20 % jitter (`[sync]
    /// backoff_initial`, 1s).
    #[serde(with = "tessera_edge::duration")]
    pub backoff_initial: Duration,
    /// Longest reconnect delay (`[sync] backoff_max`, 30s).
    #[serde(with = "tessera_edge::duration")]
    pub backoff_max: Duration,
}

impl Default for Agent {
    fn default() -> Self {
        Self {
            renew_at_percent: 50,
            jitter_percent: 10,
            batch: 500,
            x509_svid_cache_max_size: 1_000,
            sign_retry: Duration::from_secs(5),
            sign_timeout: Duration::from_secs(30),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// `[network]`: every message's delay and loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// Shortest one-way delay.
    #[serde(with = "tessera_edge::duration")]
    pub latency_min: Duration,
    /// Longest one-way delay (uniform in between).
    #[serde(with = "tessera_edge::duration")]
    pub latency_max: Duration,
    /// Chance, in percent, that a sync message breaks its stream or a signing request is
    /// lost.
    pub loss_percent: f64,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            latency_min: Duration::from_millis(1),
            latency_max: Duration::from_millis(20),
            loss_percent: 0.0,
        }
    }
}

/// `[churn]`: entries created and deleted while the fleet runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Churn {
    /// Entries created per virtual minute (through the registry's `decide`, under random
    /// agents).
    pub creates_per_minute: f64,
    /// Entries deleted per virtual minute (random live entries).
    pub deletes_per_minute: f64,
}

/// `[checks]`: how often the periodic checks run per agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Checks {
    /// Each agent's audit period: what `for_workload` serves, and, when its stream is quiet,
    /// whether its cache holds exactly the server's view.
    #[serde(with = "tessera_edge::duration")]
    pub audit_interval: Duration,
}

impl Default for Checks {
    fn default() -> Self {
        Self {
            audit_interval: Duration::from_secs(15 * 60),
        }
    }
}

/// What a `[[faults]]` item does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// Server `server` is down: its streams break, its requests fail.
    Outage,
    /// A `fraction` of the agents cannot reach any server.
    Partition,
}

/// `[[faults]]`: one fault in the timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// `outage` or `partition`.
    pub kind: FaultKind,
    /// When it starts, from the start of the run.
    #[serde(with = "tessera_edge::duration")]
    pub at: Duration,
    /// How long it lasts.
    #[serde(with = "tessera_edge::duration")]
    pub duration: Duration,
    /// `outage`: which server (0-based; default 0).
    #[serde(default)]
    pub server: u32,
    /// `partition`: the share of agents cut off, 0..=1 (default 1: all).
    #[serde(default = "one")]
    pub fraction: f64,
}

fn one() -> f64 {
    1.0
}
