//! The text report, for people: a violation first and loud (what broke, when, where, and the
//! command that reproduces it), then one aligned line per figure.

use std::fmt::Write as _;

use super::{CheckerOutcome, RunInfo, Summary};

/// Width of the label column.
const LABEL: usize = 24;

/// Virtual milliseconds since the start as `h:mm:ss.mmm` (hours unbounded: `48:00:00.000`).
pub fn format_virtual_time(ms: u64) -> String {
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1000, rest % 1000);
    format!("{h}:{m:02}:{s:02}.{milli:03}")
}

/// `1234567` → `1,234,567`.
pub(super) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), grouped)
}

/// Minute since the start as `h:mm` of virtual time.
fn minute_label(minute: u64) -> String {
    format!("{}:{:02}", minute / 60, minute % 60)
}

fn wall(ms: u64) -> String {
    if ms < 60_000 {
        format!("{}.{:03} s", ms / 1000, ms % 1000)
    } else {
        format!(
            "{} min {}.{} s",
            ms / 60_000,
            (ms % 60_000) / 1000,
            (ms % 1000) / 100
        )
    }
}

fn bytes(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    // One decimal, in integers.
    let tenths = n.saturating_mul(10) / MIB;
    format!("{}.{} MiB", tenths / 10, tenths % 10)
}

fn row(out: &mut String, label: &str, value: &str) {
    let line = format!("{label:<LABEL$}{value}");
    let _ = writeln!(out, "{}", line.trim_end());
}

/// The text report. With `info`, the run's wall time and peak RSS are added, and the
/// reproduce command names the scenario file given on the command line.
pub fn render_text(s: &Summary, info: Option<&RunInfo>) -> String {
    let mut out = String::new();
    let file = info
        .and_then(|i| i.scenario_file.clone())
        .unwrap_or_else(|| format!("<file of scenario {:?}>", s.scenario));

    if let Some(v) = &s.violation {
        let _ = writeln!(
            out,
            "!!! VIOLATION: checker {} failed; the run stopped here",
            v.checker
        );
        let indent = |out: &mut String, label: &str, value: &str| {
            let _ = writeln!(out, "!!!   {label:<14}{value}");
        };
        indent(
            &mut out,
            "virtual time",
            &format!("{} since start", format_virtual_time(v.at_ms)),
        );
        indent(&mut out, "agent", &v.agent);
        indent(&mut out, "entry", v.entry.as_deref().unwrap_or("-"));
        indent(&mut out, "detail", &v.detail);
        indent(
            &mut out,
            "reproduce",
            &format!("tessera-sim run {file} --seed {}", v.seed),
        );
        out.push('\n');
    }

    let ended = if s.violation.is_some() {
        "stopped by the violation"
    } else {
        "completed"
    };
    let _ = writeln!(
        out,
        "tessera-sim: scenario {}, seed {}, {ended}",
        s.scenario, s.seed
    );
    row(&mut out, "virtual time", &format_virtual_time(s.virtual_ms));
    row(
        &mut out,
        "fleet",
        &format!(
            "{} agents, {} entries, {} log events",
            grouped(s.agents),
            grouped(s.entries),
            grouped(s.log_events)
        ),
    );
    row(
        &mut out,
        "signatures",
        &format!(
            "{} in all; per virtual minute: peak {} (minute {}), p50 {}, p99 {}",
            grouped(s.signing.total),
            grouped(s.signing.per_minute_peak),
            minute_label(s.signing.peak_minute),
            opt(s.signing.per_minute_p50),
            opt(s.signing.per_minute_p99)
        ),
    );
    row(
        &mut out,
        "signing queue",
        &format!(
            "depth max {}, p99 of per-minute max {}; refused Overloaded {}",
            grouped(s.queue.depth_max),
            opt(s.queue.depth_p99),
            grouped(s.queue.refused_overloaded)
        ),
    );
    row(
        &mut out,
        "propagation (virtual)",
        &if s.propagation.deliveries == 0 {
            "no entry change delivered to an agent during the run".to_owned()
        } else {
            format!(
                "p50 {} ms, p99 {} ms, max {} ms over {} deliveries",
                opt(s.propagation.p50_ms),
                opt(s.propagation.p99_ms),
                opt(s.propagation.max_ms),
                grouped(s.propagation.deliveries)
            )
        },
    );
    row(&mut out, "reconnects", &grouped(s.reconnects));
    row(&mut out, "CA rotations", &grouped(s.ca_rotations));
    for r in &s.rotations {
        super::rotation::render(&mut out, r, LABEL);
    }
    row(
        &mut out,
        "unserved identities",
        &if s.unserved.peak == 0 {
            "none at any minute's end".to_owned()
        } else {
            format!(
                "peak {} (minute {}), {} identity-minutes",
                grouped(s.unserved.peak),
                minute_label(s.unserved.peak_minute),
                grouped(s.unserved.identity_minutes)
            )
        },
    );
    if s.checkers.is_empty() {
        row(&mut out, "checkers", "none ran: this run proved nothing");
    } else {
        row(&mut out, "checkers", "");
        let width = s.checkers.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &s.checkers {
            let verdict = match c.outcome {
                CheckerOutcome::Passed => "pass",
                CheckerOutcome::Failed => "FAIL",
                CheckerOutcome::NotRun => "not run (proved nothing)",
            };
            let _ = writeln!(
                out,
                "  {:<width$}  {:>12} runs  {verdict}",
                c.name,
                grouped(c.runs)
            );
        }
    }
    if let Some(info) = info {
        row(&mut out, "wall time", &wall(info.wall_ms));
        let rss = if info.peak_rss_bytes == 0 {
            "unknown".to_owned()
        } else {
            bytes(info.peak_rss_bytes)
        };
        row(&mut out, "peak RSS", &rss);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(format_virtual_time(0), "0:00:00.000");
        assert_eq!(format_virtual_time(48 * 3_600_000), "48:00:00.000");
        assert_eq!(format_virtual_time(3_723_004), "1:02:03.004");
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(wall(1234), "1.234 s");
        assert_eq!(wall(312_345), "5 min 12.3 s");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
