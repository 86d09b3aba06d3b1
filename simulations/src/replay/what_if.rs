//! `replay --what-if KEY=VALUE`: the fleet's rotation re-run over the recorded timeline with
//! other settings (issue 12 §2).
//!
//! The log's entry and agent events become the scenario's script (at their recorded times,
//! relative to the first record), so the simulated fleet is the recorded one; the baseline's
//! settings are what the log shows (the CA lifetime from the first recorded CA's validity, the
//! X509-SVID TTL the entries ask for most, else SPIRE's default 1h); the run lasts the log's
//! span, and at least one CA lifetime so that a rotation shows. The baseline and the changed
//! scenario run with the same seed, so the difference is the settings' alone.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use serde::Serialize;
use tessera_actors::server::events::ServerEvent;

use super::{fold_observed, Output, ReplayArgs, ReplayError};
use crate::metrics::{RunMetrics, Violation};
use crate::scenario::{Scenario, Scripted};

/// SPIRE's `default_x509_svid_ttl`.
const SPIRE_DEFAULT_SVID_TTL: Duration = Duration::from_secs(3600);

/// The recorded timeline and the settings read from it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The scenario of the recorded settings, with the timeline as its script.
    pub baseline: Scenario,
    /// Where each baseline setting came from, by key.
    pub inferred: BTreeMap<&'static str, String>,
    /// Where the log is.
    pub location: String,
    /// The last seq of the timeline.
    pub seq: u64,
    /// Its span, milliseconds.
    pub span_ms: u64,
}

/// Reads the log `args` name up to `--at` into a scenario.
pub fn recorded(args: &ReplayArgs) -> Result<Recorded, ReplayError> {
    let mut first: Option<i64> = None;
    let mut last_at = 0i64;
    let mut script = Vec::new();
    let mut ca_ttl: Option<Duration> = None;
    let mut ttls: BTreeMap<u32, u64> = BTreeMap::new();
    let mut observe = |at: i64, event: &ServerEvent| {
        let start = *first.get_or_insert(at);
        last_at = at;
        let at_ms = u64::try_from((at - start) / 1_000_000).unwrap_or(0);
        match event {
            ServerEvent::CaPrepared(r) | ServerEvent::ServerCaPrepared { record: r, .. }
                if ca_ttl.is_none() && r.not_after > r.not_before =>
            {
                ca_ttl = u64::try_from(r.not_after - r.not_before)
                    .ok()
                    .map(Duration::from_secs);
            }
            ServerEvent::EntryCreated(e) | ServerEvent::EntryUpdated(e) => {
                if let Some(ttl) = e.x509_svid_ttl {
                    *ttls.entry(ttl).or_default() += 1;
                }
                script.push(Scripted {
                    at_ms,
                    event: event.clone(),
                });
            }
            ServerEvent::EntryDeleted { .. }
            | ServerEvent::EntryExpired { .. }
            | ServerEvent::AgentAttested(_)
            | ServerEvent::AgentEvicted { .. }
            | ServerEvent::AgentBanned { .. } => script.push(Scripted {
                at_ms,
                event: event.clone(),
            }),
            _ => {}
        }
    };
    let folded = fold_observed(args, Some(&mut observe))?;
    if script.is_empty() {
        // An empty script would let the scenario's fleet generator make a fleet of its own.
        return Err(ReplayError::WhatIf(format!(
            "the log at {} records no entry or agent up to seq {}: there is no fleet to re-run; \
             pass a later --at, or a log with entries and agents",
            folded.location, folded.seq
        )));
    }
    let start = first.unwrap_or(0);
    let span_ms = u64::try_from((last_at - start) / 1_000_000).unwrap_or(0);

    let mut inferred = BTreeMap::new();
    let mut baseline = Scenario {
        name: format!("what-if over {} (seq 1-{})", folded.location, folded.seq),
        start_unix: start.div_euclid(1_000_000_000),
        script,
        ..Scenario::default()
    };
    if let Some(td) = folded
        .state
        .registry
        .iter()
        .map(|e| e.spiffe_id.trust_domain().to_string())
        .next()
    {
        baseline.trust_domain = td;
    }
    match ca_ttl {
        Some(ttl) => {
            baseline.server.ca_ttl = ttl;
            inferred.insert(
                "ca_ttl",
                format!("{} (the first recorded CA's validity)", human(ttl)),
            );
        }
        None => {
            inferred.insert(
                "ca_ttl",
                format!(
                    "{} (no CA in the log: SPIRE's default)",
                    human(baseline.server.ca_ttl)
                ),
            );
        }
    }
    // The TTL most entries ask for; ties go to the shorter (more signing: the cautious side).
    let most = ttls.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)));
    match most {
        Some((&secs, &count)) => {
            baseline.server.default_x509_svid_ttl = Duration::from_secs(u64::from(secs));
            inferred.insert(
                "default_x509_svid_ttl",
                format!(
                    "{} (asked by {count} recorded entries)",
                    human(Duration::from_secs(u64::from(secs)))
                ),
            );
        }
        None => {
            baseline.server.default_x509_svid_ttl = SPIRE_DEFAULT_SVID_TTL;
            inferred.insert(
                "default_x509_svid_ttl",
                "1h (no entry sets one: SPIRE's default)".into(),
            );
        }
    }
    let min = baseline.server.ca_ttl;
    baseline.duration = Duration::from_millis(span_ms).max(min);
    inferred.insert(
        "duration",
        format!(
            "{} (the log's span {}, at least one CA lifetime)",
            human(baseline.duration),
            human(Duration::from_millis(span_ms))
        ),
    );
    Ok(Recorded {
        baseline,
        inferred,
        location: folded.location.clone(),
        seq: folded.seq,
        span_ms,
    })
}

/// `1h30m`-style text for a duration (whole seconds).
fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

/// What one run did, as compared.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunSummary {
    /// X509-SVIDs signed in all.
    pub signatures: u64,
    /// Most signatures in one virtual minute.
    pub signatures_per_minute_peak: u64,
    /// 99th percentile of signatures per virtual minute.
    pub signatures_per_minute_p99: u64,
    /// CA activations after the first.
    pub ca_rotations: u64,
    /// Checker runs, all checkers.
    pub checks_run: u64,
    /// The first broken invariant, if any.
    pub violation: Option<Violation>,
    /// Virtual time run, milliseconds.
    pub virtual_ms: u64,
}

impl RunSummary {
    /// The summary of `m`.
    pub fn of(m: &RunMetrics) -> Self {
        let mut per_minute: Vec<u64> = m.minutes.iter().map(|s| s.signatures).collect();
        per_minute.sort_unstable();
        let p99 = match per_minute.len() {
            0 => 0,
            n => per_minute[(n * 99).div_ceil(100).saturating_sub(1)],
        };
        Self {
            signatures: m.signatures,
            signatures_per_minute_peak: per_minute.last().copied().unwrap_or(0),
            signatures_per_minute_p99: p99,
            ca_rotations: m.ca_rotations,
            checks_run: m.checks.values().sum(),
            violation: m.violation.clone(),
            virtual_ms: m.virtual_ms,
        }
    }
}

/// The comparison `replay --what-if` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Where the log is.
    pub log: String,
    /// Last seq of the timeline.
    pub seq: u64,
    /// The timeline's span, milliseconds.
    pub span_ms: u64,
    /// Entry and agent facts replayed.
    pub scripted_facts: usize,
    /// Seed of both runs.
    pub seed: u64,
    /// The baseline's settings and where they came from.
    pub baseline_settings: BTreeMap<&'static str, String>,
    /// The settings changed (`KEY=VALUE` as given).
    pub changed: Vec<String>,
    /// The recorded settings' run.
    pub baseline: RunSummary,
    /// The changed settings' run.
    pub what_if: RunSummary,
    /// `what_if - baseline` of the counts, and the signatures' ratio.
    pub difference: Difference,
}

/// The change from baseline to what-if.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// Signatures, what-if minus baseline.
    pub signatures: i64,
    /// What-if signatures over baseline's (`None` when the baseline signed none).
    pub signatures_ratio: Option<f64>,
    /// Per-minute peak, what-if minus baseline.
    pub signatures_per_minute_peak: i64,
    /// Per-minute p99, what-if minus baseline.
    pub signatures_per_minute_p99: i64,
    /// CA rotations, what-if minus baseline.
    pub ca_rotations: i64,
    /// Whether the changed settings broke an invariant the baseline kept.
    pub new_violation: bool,
}

fn diff(a: u64, b: u64) -> i64 {
    i64::try_from(b).unwrap_or(i64::MAX) - i64::try_from(a).unwrap_or(i64::MAX)
}

/// Runs the baseline and the changed settings over the recorded timeline.
pub fn compare(args: &ReplayArgs) -> Result<Comparison, ReplayError> {
    let rec = recorded(args)?;
    let mut changed = rec.baseline.clone();
    for kv in &args.what_if {
        let Some((key, value)) = kv.split_once('=') else {
            return Err(ReplayError::WhatIf(format!(
                "{kv:?} is not KEY=VALUE (e.g. default_x509_svid_ttl=15m); keys: {}",
                crate::scenario::SETTABLE
            )));
        };
        changed
            .set(key.trim(), value.trim())
            .map_err(|e| ReplayError::WhatIf(e.to_string()))?;
    }
    changed.name = format!("{} with {}", rec.baseline.name, args.what_if.join(", "));
    let run = |s: &Scenario| {
        crate::engine::run(s, args.seed)
            .map_err(|e| ReplayError::WhatIf(format!("{}: {e}", s.name)))
    };
    let base = RunSummary::of(&run(&rec.baseline)?);
    let what = RunSummary::of(&run(&changed)?);
    let difference = Difference {
        signatures: diff(base.signatures, what.signatures),
        signatures_ratio: (base.signatures > 0)
            .then(|| what.signatures as f64 / base.signatures as f64),
        signatures_per_minute_peak: diff(
            base.signatures_per_minute_peak,
            what.signatures_per_minute_peak,
        ),
        signatures_per_minute_p99: diff(
            base.signatures_per_minute_p99,
            what.signatures_per_minute_p99,
        ),
        ca_rotations: diff(base.ca_rotations, what.ca_rotations),
        new_violation: base.violation.is_none() && what.violation.is_some(),
    };
    Ok(Comparison {
        log: rec.location.clone(),
        seq: rec.seq,
        span_ms: rec.span_ms,
        scripted_facts: rec.baseline.script.len(),
        seed: args.seed,
        baseline_settings: rec.inferred,
        changed: args.what_if.clone(),
        baseline: base,
        what_if: what,
        difference,
    })
}

/// `replay --what-if`: prints the comparison, text or JSON.
pub fn run(args: &ReplayArgs, out: &mut dyn Write) -> Result<(), ReplayError> {
    let c = compare(args)?;
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut *out, &c)
                .map_err(|e| ReplayError::Output(std::io::Error::other(e)))?;
            writeln!(out)?;
        }
        Output::Text => write_text(&c, out)?,
    }
    Ok(())
}

fn violation_text(v: &Option<Violation>) -> String {
    match v {
        None => "none".into(),
        Some(v) => format!(
            "{} at {} ms, agent {}{}: {}",
            v.checker,
            v.at_ms,
            v.agent,
            v.entry
                .as_deref()
                .map(|e| format!(", entry {e}"))
                .unwrap_or_default(),
            v.detail
        ),
    }
}

fn write_text(c: &Comparison, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "What-if over {}", c.log)?;
    writeln!(
        out,
        "Timeline: seq 1-{}, span {}, {} entry/agent facts, seed {}",
        c.seq,
        human(Duration::from_millis(c.span_ms)),
        c.scripted_facts,
        c.seed
    )?;
    writeln!(out, "Baseline settings (from the log):")?;
    for (k, v) in &c.baseline_settings {
        writeln!(out, "  {k} = {v}")?;
    }
    writeln!(out, "Changed: {}", c.changed.join(", "))?;
    writeln!(out)?;
    let (b, w, d) = (&c.baseline, &c.what_if, &c.difference);
    let ratio = d
        .signatures_ratio
        .map(|r| format!(" (x{r:.2})"))
        .unwrap_or_default();
    let rows = [
        (
            "signatures",
            b.signatures,
            w.signatures,
            format!("{:+}{ratio}", d.signatures),
        ),
        (
            "per-minute peak",
            b.signatures_per_minute_peak,
            w.signatures_per_minute_peak,
            format!("{:+}", d.signatures_per_minute_peak),
        ),
        (
            "per-minute p99",
            b.signatures_per_minute_p99,
            w.signatures_per_minute_p99,
            format!("{:+}", d.signatures_per_minute_p99),
        ),
        (
            "CA rotations",
            b.ca_rotations,
            w.ca_rotations,
            format!("{:+}", d.ca_rotations),
        ),
        (
            "checks run",
            b.checks_run,
            w.checks_run,
            format!("{:+}", diff(b.checks_run, w.checks_run)),
        ),
    ];
    writeln!(
        out,
        "  {:<16} {:>14} {:>14}  difference",
        "", "baseline", "what-if"
    )?;
    for (name, x, y, dd) in rows {
        writeln!(out, "  {name:<16} {x:>14} {y:>14}  {dd}")?;
    }
    writeln!(
        out,
        "  violation (baseline): {}",
        violation_text(&b.violation)
    )?;
    writeln!(
        out,
        "  violation (what-if):  {}",
        violation_text(&w.violation)
    )?;
    if d.new_violation {
        writeln!(
            out,
            "The changed settings break an invariant the recorded ones keep."
        )?;
    }
    Ok(())
}
