//! How a run is reported: a [`Summary`] of the [`RunMetrics`] (the figures an operator asks
//! for), the JSON report for tools ([`to_json`]), the text report for people
//! ([`render_text`]), and the plots of signing load and queue depth over virtual time
//! ([`plot_svg`]).
//!
//! Everything here is a pure function of the metrics, so the same scenario and seed give a
//! byte-identical `report.json`. What differs between two runs of the same seed — wall time,
//! peak RSS, where the scenario file is — lives in [`RunInfo`] (`run.json`), which the binary
//! measures; [`peak_rss_bytes`] is the one reader of the process's state, and only the binary
//! calls it.
//!
//! Must not: read the wall clock, the host or any path into the JSON report.

mod percentile;
mod plot;
mod rotation;
mod rss;
mod text;

use serde::{Deserialize, Serialize};

use crate::metrics::{MinuteSample, RunMetrics, Violation};

pub use self::percentile::nearest_rank;
pub use self::plot::{plot_svg, queue_svg, signing_svg};
pub use self::rotation::RotationSummary;
pub use self::rss::peak_rss_bytes;
pub use self::text::{format_virtual_time, render_text};

/// Version of the JSON report's layout; raised when a field changes meaning or disappears.
pub const REPORT_VERSION: u32 = 1;

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file of the report could not be written.
    #[error("report: cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The plotting library refused to draw (a bug in the plot's layout, not in the run).
    #[error("report: cannot draw {plot}: {detail}")]
    Plot {
        /// The plot (`signing.svg`, `queue.svg`).
        plot: &'static str,
        /// What the plotting library said.
        detail: String,
    },
}

/// Facts about the process that ran the simulation, not about the simulation: they differ
/// between two runs of the same seed, so they are kept out of the JSON report (`run.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Wall-clock time of the run (load, simulate, summarise), milliseconds.
    pub wall_ms: u64,
    /// Peak resident set size of the process (`VmHWM`), bytes; 0 if it could not be read.
    pub peak_rss_bytes: u64,
    /// The scenario file as given on the command line, for the reproduce command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario_file: Option<String>,
}

/// Signing load.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningSummary {
    /// X.509-SVIDs signed in all.
    pub total: u64,
    /// Most signatures in one virtual minute.
    pub per_minute_peak: u64,
    /// The first minute (since the start) that reached the peak.
    pub peak_minute: u64,
    /// Median of the per-minute signatures (nearest rank), `None` for a run shorter than a
    /// minute.
    pub per_minute_p50: Option<u64>,
    /// 99th percentile of the per-minute signatures (nearest rank).
    pub per_minute_p99: Option<u64>,
}

/// The signing queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSummary {
    /// Deepest the queue ever was.
    pub depth_max: u64,
    /// 99th percentile (nearest rank) of each minute's deepest queue.
    pub depth_p99: Option<u64>,
    /// Signing requests refused with Overloaded (queue full), in all.
    pub refused_overloaded: u64,
}

/// Delay from an entry change committed on a server to the change in an affected agent's
/// cache, over every (change, agent) delivery.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropagationSummary {
    /// Deliveries measured.
    pub deliveries: u64,
    /// Median delay, virtual milliseconds (nearest rank); `None` if nothing was delivered.
    pub p50_ms: Option<u64>,
    /// 99th percentile delay, virtual milliseconds (nearest rank).
    pub p99_ms: Option<u64>,
    /// Longest delay, virtual milliseconds.
    pub max_ms: Option<u64>,
}

/// Workload identities an agent could not serve (no valid SVID), sampled at each minute's end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnservedSummary {
    /// Most identities unserved at one minute's end.
    pub peak: u64,
    /// The first minute that reached the peak.
    pub peak_minute: u64,
    /// Sum over minutes of the identities unserved at the minute's end: an identity unserved
    /// for an hour counts 60. Sampled once a minute, so shorter gaps may be missed or counted
    /// as a whole minute.
    pub identity_minutes: u64,
}

/// What a checker concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckerOutcome {
    /// Ran at least once and never saw its invariant broken.
    Passed,
    /// Saw its invariant broken (the run's violation).
    Failed,
    /// Never ran: it proved nothing.
    NotRun,
}

/// One checker's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckerSummary {
    /// The checker's name.
    pub name: String,
    /// How many times it ran.
    pub runs: u64,
    /// What it concluded.
    pub outcome: CheckerOutcome,
}

/// The figures of a run, from its metrics alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// Seed of the run.
    pub seed: u64,
    /// Virtual time run, milliseconds (short of the scenario's if a checker stopped it).
    pub virtual_ms: u64,
    /// Agents in the fleet at the end.
    pub agents: u64,
    /// Registration entries at the end.
    pub entries: u64,
    /// Events appended to the simulated log.
    pub log_events: u64,
    /// Signing load.
    pub signing: SigningSummary,
    /// The signing queue.
    pub queue: QueueSummary,
    /// Entry-change propagation.
    pub propagation: PropagationSummary,
    /// Sync streams reopened after the first connection.
    pub reconnects: u64,
    /// CA activations after the first.
    pub ca_rotations: u64,
    /// Identities without a servable SVID.
    pub unserved: UnservedSummary,
    /// Every checker, by name.
    pub checkers: Vec<CheckerSummary>,
    /// The violation that stopped the run, if any.
    pub violation: Option<Violation>,
    /// Each CA change the fleet followed (scheduled activations, forced rotations), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rotations: Vec<RotationSummary>,
}

/// The first index holding the largest value, and the value (`(0, 0)` for none).
fn peak(values: impl Iterator<Item = u64>) -> (u64, u64) {
    let mut best = (0u64, 0u64);
    for (i, v) in (0u64..).zip(values) {
        if v > best.1 {
            best = (i, v);
        }
    }
    best
}

fn sorted(values: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut v: Vec<u64> = values.collect();
    v.sort_unstable();
    v
}

impl Summary {
    /// Summarises a run. Percentiles are by nearest rank ([`nearest_rank`]) on sorted
    /// integers; peaks report the first minute that reached them, counted by position in
    /// [`RunMetrics::minutes`].
    pub fn from_metrics(m: &RunMetrics) -> Summary {
        let minutes = &m.minutes;
        let minute_of = |i: u64| {
            usize::try_from(i)
                .ok()
                .and_then(|i| minutes.get(i))
                .map_or(i, |s| s.minute)
        };

        let (sig_at, sig_peak) = peak(minutes.iter().map(|s| s.signatures));
        let per_minute = sorted(minutes.iter().map(|s| s.signatures));
        let depths = sorted(minutes.iter().map(|s| s.queue_depth_max));
        let delays = sorted(m.propagation_ms.iter().copied());
        let (unserved_at, unserved_peak) = peak(minutes.iter().map(|s| s.unserved_identities));

        let mut checkers: Vec<CheckerSummary> = m
            .checks
            .iter()
            .map(|(name, &runs)| CheckerSummary {
                name: name.clone(),
                runs,
                outcome: outcome(name, runs, m.violation.as_ref()),
            })
            .collect();
        // A violation from a checker the engine did not count is still a failure to show.
        if let Some(v) = &m.violation {
            if !m.checks.contains_key(&v.checker) {
                checkers.push(CheckerSummary {
                    name: v.checker.clone(),
                    runs: 0,
                    outcome: CheckerOutcome::Failed,
                });
                checkers.sort_by(|a, b| a.name.cmp(&b.name));
            }
        }

        Summary {
            scenario: m.scenario.clone(),
            seed: m.seed,
            virtual_ms: m.virtual_ms,
            agents: m.agents,
            entries: m.entries,
            log_events: m.log_events,
            signing: SigningSummary {
                total: m.signatures,
                per_minute_peak: sig_peak,
                peak_minute: minute_of(sig_at),
                per_minute_p50: nearest_rank(&per_minute, 50),
                per_minute_p99: nearest_rank(&per_minute, 99),
            },
            queue: QueueSummary {
                depth_max: depths.last().copied().unwrap_or(0),
                depth_p99: nearest_rank(&depths, 99),
                refused_overloaded: minutes.iter().map(|s| s.refused_overloaded).sum(),
            },
            propagation: PropagationSummary {
                deliveries: delays.len() as u64,
                p50_ms: nearest_rank(&delays, 50),
                p99_ms: nearest_rank(&delays, 99),
                max_ms: delays.last().copied(),
            },
            reconnects: m.reconnects,
            ca_rotations: m.ca_rotations,
            unserved: UnservedSummary {
                peak: unserved_peak,
                peak_minute: minute_of(unserved_at),
                identity_minutes: minutes.iter().map(|s| s.unserved_identities).sum(),
            },
            checkers,
            violation: m.violation.clone(),
            rotations: m
                .rotations
                .iter()
                .map(RotationSummary::from_record)
                .collect(),
        }
    }
}

fn outcome(name: &str, runs: u64, violation: Option<&Violation>) -> CheckerOutcome {
    if violation.is_some_and(|v| v.checker == name) {
        CheckerOutcome::Failed
    } else if runs == 0 {
        CheckerOutcome::NotRun
    } else {
        CheckerOutcome::Passed
    }
}

/// The JSON report's layout.
#[derive(Serialize)]
struct JsonReport<'a> {
    report_version: u32,
    summary: Summary,
    /// One sample per virtual minute, for plotting.
    minutes: &'a [MinuteSample],
}

/// The JSON report: pretty, deterministic (struct fields in declaration order, maps sorted,
/// integers only), holding the [`Summary`] and the per-minute series, ending in a newline.
/// Equal metrics give byte-identical strings.
pub fn to_json(m: &RunMetrics) -> String {
    let report = JsonReport {
        report_version: REPORT_VERSION,
        summary: Summary::from_metrics(m),
        minutes: &m.minutes,
    };
    // Plain structs with string map keys always serialise; should that ever change, the
    // error goes in the report instead of a panic.
    let mut text = serde_json::to_string_pretty(&report).unwrap_or_else(|e| {
        serde_json::json!({ "report_version": REPORT_VERSION, "error": e.to_string() }).to_string()
    });
    text.push('\n');
    text
}
