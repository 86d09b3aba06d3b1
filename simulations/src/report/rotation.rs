//! The figures of each CA change the fleet followed ([`RotationRecord`]): for a forced
//! rotation, from the taint to each agent's last re-signed SVID of the tainted CA (p50, p99,
//! max over agents), the taint mark's own propagation, SVIDs re-signed and any left chaining
//! to the tainted CA at the end; for a scheduled one, the same from the activation, as the
//! baseline (SVIDs of the old CA are replaced only as they fall due).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::nearest_rank;
use super::text::{format_virtual_time, grouped, opt};
use crate::metrics::{RotationKind, RotationRecord};

/// One CA change, summarised.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationSummary {
    /// Scheduled or forced.
    pub kind: RotationKind,
    /// The server whose CA changed.
    pub server: u32,
    /// The CA the fleet moved off.
    pub old_ca: String,
    /// Forced: the prepare, virtual ms since the start.
    pub prepared_ms: Option<u64>,
    /// The activation, virtual ms.
    pub activated_ms: Option<u64>,
    /// Forced: the taint (the start of the measurement), virtual ms.
    pub tainted_ms: Option<u64>,
    /// Forced: the revocation, virtual ms.
    pub revoked_ms: Option<u64>,
    /// Forced: the step the authority refused, and why.
    pub refused: Option<String>,
    /// Agents that held an SVID of the old CA.
    pub affected_agents: u64,
    /// SVIDs of the old CA they held at the start.
    pub affected_svids: u64,
    /// SVIDs of the old CA replaced after the start (forced: re-signed).
    pub replaced_svids: u64,
    /// Agents that moved off the old CA entirely.
    pub agents_done: u64,
    /// From the start to an agent's last SVID of the old CA replaced, over agents: median,
    /// ms (nearest rank).
    pub done_p50_ms: Option<u64>,
    /// The same, 99th percentile.
    pub done_p99_ms: Option<u64>,
    /// The same, the last agent: the fleet's time to move off the old CA.
    pub done_max_ms: Option<u64>,
    /// Forced: from the taint to an agent applying the marked bundle: median, ms.
    pub taint_received_p50_ms: Option<u64>,
    /// The same, 99th percentile.
    pub taint_received_p99_ms: Option<u64>,
    /// The same, the last agent.
    pub taint_received_max_ms: Option<u64>,
    /// At the end: agents still holding an SVID of the old CA.
    pub agents_remaining: u64,
    /// At the end: unexpired SVIDs of the old CA still held by live agents (forced: must be
    /// 0 unless agents could not reach a server).
    pub svids_remaining: u64,
}

impl RotationSummary {
    /// Summarises one record.
    pub fn from_record(r: &RotationRecord) -> Self {
        let mut done = r.agent_done_ms.clone();
        done.sort_unstable();
        let mut received = r.taint_received_ms.clone();
        received.sort_unstable();
        Self {
            kind: r.kind,
            server: r.server,
            old_ca: r.old_ca.clone(),
            prepared_ms: r.prepared_ms,
            activated_ms: r.activated_ms,
            tainted_ms: r.tainted_ms,
            revoked_ms: r.revoked_ms,
            refused: r.refused.clone(),
            affected_agents: r.affected_agents,
            affected_svids: r.affected_svids,
            replaced_svids: r.replaced_svids,
            agents_done: done.len() as u64,
            done_p50_ms: nearest_rank(&done, 50),
            done_p99_ms: nearest_rank(&done, 99),
            done_max_ms: done.last().copied(),
            taint_received_p50_ms: nearest_rank(&received, 50),
            taint_received_p99_ms: nearest_rank(&received, 99),
            taint_received_max_ms: received.last().copied(),
            agents_remaining: r.agents_remaining,
            svids_remaining: r.svids_remaining,
        }
    }
}

fn at(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_owned(), format_virtual_time)
}

/// The text lines of one CA change, each starting with `label` width `width`.
pub(super) fn render(out: &mut String, r: &RotationSummary, width: usize) {
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "{}", format!("{label:<width$}{value}").trim_end());
    };
    let ca = if r.old_ca.is_empty() {
        "-".to_owned()
    } else {
        r.old_ca.clone()
    };
    let (head, from) = match r.kind {
        RotationKind::Forced => {
            line(
                "forced rotation",
                format!(
                    "server {}, old CA {ca}: prepared {}, activated {}, tainted {}, revoked {}",
                    r.server,
                    at(r.prepared_ms),
                    at(r.activated_ms),
                    at(r.tainted_ms),
                    at(r.revoked_ms)
                ),
            );
            ("  taint → agent done", "re-signed")
        }
        RotationKind::Scheduled => {
            line(
                "scheduled rotation",
                format!(
                    "server {}, old CA {ca}: activated {}",
                    r.server,
                    at(r.activated_ms)
                ),
            );
            ("  activation → done", "replaced")
        }
    };
    if let Some(refused) = &r.refused {
        line("  refused", refused.clone());
    }
    if r.affected_agents == 0 {
        line("  fleet", "no agent held an SVID of the old CA".into());
        return;
    }
    line(
        "  fleet",
        format!(
            "{} agents held {} SVIDs of the old CA; {} {from} since",
            grouped(r.affected_agents),
            grouped(r.affected_svids),
            grouped(r.replaced_svids)
        ),
    );
    line(
        head,
        format!(
            "p50 {} ms, p99 {} ms, max {} ms over {} agents (to each agent's last SVID of the old CA replaced)",
            opt(r.done_p50_ms),
            opt(r.done_p99_ms),
            opt(r.done_max_ms),
            grouped(r.agents_done)
        ),
    );
    if r.kind == RotationKind::Forced {
        line(
            "  taint received",
            format!(
                "p50 {} ms, p99 {} ms, max {} ms (the marked bundle applied by the agent)",
                opt(r.taint_received_p50_ms),
                opt(r.taint_received_p99_ms),
                opt(r.taint_received_max_ms)
            ),
        );
    }
    line(
        "  left at the end",
        format!(
            "{} unexpired SVIDs of the old CA on {} agents",
            grouped(r.svids_remaining),
            grouped(r.agents_remaining)
        ),
    );
}
