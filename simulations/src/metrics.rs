//! What a run measured, all in virtual time: the contract between the engine (which records)
//! and the report (which summarises, renders and plots). Everything here is a pure function
//! of the scenario and the seed, so two runs give equal values and a byte-identical JSON
//! report; wall time and peak RSS are not here (they live in the run-info file).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One virtual minute of the run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteSample {
    /// Minutes since the start of the run.
    pub minute: u64,
    /// X.509-SVIDs signed by all servers during the minute.
    pub signatures: u64,
    /// Deepest the signing queue (items admitted, not yet signed; summed over servers) was
    /// during the minute.
    pub queue_depth_max: u64,
    /// Signing requests refused for a full queue during the minute.
    pub refused_overloaded: u64,
    /// Agents that (re)opened their sync stream during the minute.
    pub reconnects: u64,
    /// Agents with an open sync stream at the end of the minute.
    pub connected_agents: u64,
    /// Workload entries (over all agents) with no valid SVID to serve at the end of the
    /// minute: never signed yet, or expired while the server was unreachable.
    pub unserved_identities: u64,
}

/// A checker's invariant broken: the run stops at the first one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The checker (`no_expired_svid_served`, `svid_chains_to_held_bundle`,
    /// `ca_in_bundle_before_use`, `no_missed_or_repeated_update`, `signing_queue_bounded`).
    pub checker: String,
    /// Virtual time of the violation, milliseconds since the start of the run.
    pub at_ms: u64,
    /// The agent's SPIFFE ID.
    pub agent: String,
    /// The entry, if the invariant is about one.
    pub entry: Option<String>,
    /// What was seen, for a person.
    pub detail: String,
    /// The seed that reproduces it (`tessera-sim run SCENARIO --seed N`).
    pub seed: u64,
}

/// Everything one run measured.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunMetrics {
    /// Scenario name.
    pub scenario: String,
    /// Seed of the run.
    pub seed: u64,
    /// Virtual duration actually run, milliseconds (shorter than the scenario's if a checker
    /// stopped it).
    pub virtual_ms: u64,
    /// Agents in the fleet (at the end).
    pub agents: u64,
    /// Registration entries (at the end).
    pub entries: u64,
    /// One sample per virtual minute, in order.
    pub minutes: Vec<MinuteSample>,
    /// Delay from an entry change committed on a server to the change in an affected agent's
    /// cache, virtual milliseconds, one value per (change, agent) delivery.
    pub propagation_ms: Vec<u64>,
    /// X.509-SVIDs signed in all.
    pub signatures: u64,
    /// Sync streams (re)opened after the first connection.
    pub reconnects: u64,
    /// CA activations after the first (rotations).
    pub ca_rotations: u64,
    /// Events appended to the simulated log.
    pub log_events: u64,
    /// How many times each checker ran, by name (a checker that never ran proved nothing).
    pub checks: BTreeMap<String, u64>,
    /// The violation that stopped the run, if any.
    pub violation: Option<Violation>,
    /// Each CA change the fleet had to follow, in the order they started: scheduled
    /// activations and forced rotations (`[[timeline]]`).
    #[serde(default)]
    pub rotations: Vec<RotationRecord>,
}

/// What started a fleet's move off a CA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationKind {
    /// The rotation timer activated the prepared CA: SVIDs of the old one are replaced as
    /// they fall due (half-life), no sooner. Measured from the activation.
    #[default]
    Scheduled,
    /// An operator's forced rotation (prepare, activate, taint, maybe revoke): SVIDs of the
    /// tainted CA are re-signed at once. Measured from the taint.
    Forced,
}

/// One CA change and how the fleet followed it, all times in virtual ms since the start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationRecord {
    /// Scheduled or forced.
    pub kind: RotationKind,
    /// The server whose CA changed.
    pub server: u32,
    /// The CA the fleet moves off ("#1 of server 0"); empty if the change never got that far.
    pub old_ca: String,
    /// Forced: when the new CA was prepared (or the prepared one taken).
    pub prepared_ms: Option<u64>,
    /// When the new CA was activated.
    pub activated_ms: Option<u64>,
    /// Forced: when the old CA was tainted: the start of the measurement.
    pub tainted_ms: Option<u64>,
    /// Forced: when the tainted CA was revoked.
    pub revoked_ms: Option<u64>,
    /// Forced: a step the authority refused, and why (the steps after it were not taken).
    pub refused: Option<String>,
    /// Agents holding an SVID of the old CA at the start (or receiving one later).
    pub affected_agents: u64,
    /// SVIDs of the old CA those agents held at the start.
    pub affected_svids: u64,
    /// SVIDs of the old CA replaced by one of another CA after the start.
    pub replaced_svids: u64,
    /// Per agent that moved off the old CA entirely: from the start to its last SVID of the
    /// old CA replaced (or dropped), ms; in the order agents finished.
    pub agent_done_ms: Vec<u64>,
    /// Forced, per affected agent that received it: from the taint to the agent applying
    /// the bundle carrying the taint mark, ms; in the order agents applied it.
    pub taint_received_ms: Vec<u64>,
    /// At the end: agents still holding an SVID of the old CA.
    pub agents_remaining: u64,
    /// At the end: unexpired SVIDs of the old CA still held (served) by live agents.
    pub svids_remaining: u64,
}
