//! What `replay` shows of a folded state: one serialisable document in a deterministic order
//! (entries and agents by ID, authorities in the order they were prepared), and its text form
//! for people (counts first, then tables capped at `--limit`).

use std::io::Write;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tessera_actors::server::authority::SlotStatus;
use tessera_actors::server::state::ServerState;
use tessera_identity::SelectorSet;

use super::{format_nanos, Folded};

/// The state at a point of the log.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayedState {
    /// Where the log is.
    pub log: String,
    /// The last seq folded.
    pub seq: u64,
    /// Its commit time, RFC 3339 (UTC).
    pub recorded_at: String,
    /// The log's last seq.
    pub head: u64,
    /// The seq of the server's snapshot the fold started from, if one was used.
    pub from_snapshot: Option<u64>,
    /// How many of each.
    pub counts: Counts,
    /// Registration entries, by ID.
    pub entries: Vec<EntryView>,
    /// Attested agents, by SPIFFE ID.
    pub agents: Vec<AgentView>,
    /// X.509 CAs and JWT keys not retired.
    pub authorities: Authorities,
    /// The trust bundle they make.
    pub bundle: BundleView,
}

/// Counts of the state's parts.
#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    /// Registration entries.
    pub entries: usize,
    /// Attested agents (banned ones included).
    pub agents: usize,
    /// Banned agents.
    pub banned_agents: usize,
    /// X.509 CAs not retired.
    pub x509_cas: usize,
    /// JWT keys not retired.
    pub jwt_keys: usize,
}

/// A registration entry.
#[derive(Debug, Clone, Serialize)]
pub struct EntryView {
    /// Entry ID.
    pub id: String,
    /// SPIFFE ID it issues.
    pub spiffe_id: String,
    /// Parent ID.
    pub parent_id: String,
    /// Selectors (`type:value`).
    pub selectors: Vec<String>,
    /// X.509-SVID TTL in seconds, if the entry sets one.
    pub x509_svid_ttl: Option<u32>,
    /// Revision.
    pub revision: u64,
}

/// An attested agent.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    /// SPIFFE ID.
    pub id: String,
    /// Node attestor.
    pub attestation_type: String,
    /// Node selectors.
    pub selectors: Vec<String>,
    /// Serial of its X.509-SVID.
    pub svid_serial: String,
    /// When that SVID expires (RFC 3339).
    pub svid_expires_at: String,
    /// Whether it is banned.
    pub banned: bool,
}

/// The authority's slots.
#[derive(Debug, Clone, Serialize)]
pub struct Authorities {
    /// X.509 CAs, in the order they were prepared.
    pub x509: Vec<AuthorityView>,
    /// JWT keys, in the order they were prepared.
    pub jwt: Vec<AuthorityView>,
}

/// An X.509 CA or JWT key.
#[derive(Debug, Clone, Serialize)]
pub struct AuthorityView {
    /// Authority ID (X.509: subject key ID) or kid (JWT).
    pub id: String,
    /// `active`, `prepared` or `old`.
    pub status: &'static str,
    /// Validity start (RFC 3339).
    pub not_before: String,
    /// Validity end (RFC 3339).
    pub not_after: String,
    /// The server that owns it; `None` for the single server of a log from before several.
    pub server: Option<String>,
}

/// The trust bundle.
#[derive(Debug, Clone, Serialize)]
pub struct BundleView {
    /// The trust domain, as the entries and agents name it (the log does not record it).
    pub trust_domain: Option<String>,
    /// Sequence number: how many times its content changed.
    pub sequence: u64,
    /// X.509 trust anchors, as SHA-256 fingerprints of their DER (hex).
    pub x509_authorities: Vec<String>,
    /// JWT key IDs.
    pub jwt_authorities: Vec<String>,
}

fn status(s: SlotStatus) -> &'static str {
    match s {
        SlotStatus::Active => "active",
        SlotStatus::Prepared => "prepared",
        SlotStatus::Old => "old",
    }
}

fn selectors(set: &SelectorSet) -> Vec<String> {
    set.iter().map(ToString::to_string).collect()
}

fn secs(s: i64) -> String {
    tessera_server::timefmt::format_unix(s)
}

impl ReplayedState {
    /// The view of `folded`.
    pub fn from_folded(folded: &Folded) -> Self {
        Self::new(&folded.state, folded)
    }

    fn new(state: &ServerState, folded: &Folded) -> Self {
        let mut entries: Vec<EntryView> = state
            .registry
            .iter()
            .map(|e| EntryView {
                id: e.id.to_string(),
                spiffe_id: e.spiffe_id.to_string(),
                parent_id: e.parent_id.to_string(),
                selectors: selectors(&e.selectors),
                x509_svid_ttl: e.x509_svid_ttl,
                revision: e.revision,
            })
            .collect();
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        let mut agents: Vec<AgentView> = state
            .nodes
            .iter()
            .map(|a| AgentView {
                id: a.agent.id.to_string(),
                attestation_type: a.agent.attestation_type.clone(),
                selectors: selectors(&a.agent.selectors),
                svid_serial: a.agent.svid_serial.clone(),
                svid_expires_at: secs(a.agent.svid_expires_at),
                banned: a.banned,
            })
            .collect();
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        let authority = &state.authority;
        let x509: Vec<AuthorityView> = authority
            .cas()
            .iter()
            .map(|s| AuthorityView {
                id: s.record.authority_id.clone(),
                status: status(s.status),
                not_before: secs(s.record.not_before),
                not_after: secs(s.record.not_after),
                server: s.server.clone(),
            })
            .collect();
        let jwt: Vec<AuthorityView> = authority
            .jwt_keys()
            .iter()
            .map(|s| AuthorityView {
                id: s.record.kid.clone(),
                status: status(s.status),
                not_before: secs(s.record.not_before),
                not_after: secs(s.record.not_after),
                server: s.server.clone(),
            })
            .collect();
        // The bundle's content as the authority builds it: each distinct trust anchor once.
        let mut anchors: Vec<String> = Vec::new();
        for der in authority.cas().iter().flat_map(|s| &s.record.trust_anchors) {
            let fingerprint = hex::encode(Sha256::digest(der));
            if !anchors.contains(&fingerprint) {
                anchors.push(fingerprint);
            }
        }
        let trust_domain = state
            .registry
            .iter()
            .map(|e| e.spiffe_id.trust_domain().to_string())
            .next()
            .or_else(|| {
                state
                    .nodes
                    .iter()
                    .map(|a| a.agent.id.trust_domain().to_string())
                    .next()
            });
        Self {
            log: folded.location.clone(),
            seq: folded.seq,
            recorded_at: format_nanos(folded.recorded_at),
            head: folded.head,
            from_snapshot: folded.from_snapshot,
            counts: Counts {
                entries: entries.len(),
                agents: agents.len(),
                banned_agents: agents.iter().filter(|a| a.banned).count(),
                x509_cas: x509.len(),
                jwt_keys: jwt.len(),
            },
            bundle: BundleView {
                trust_domain,
                sequence: authority.bundle_sequence(),
                x509_authorities: anchors,
                jwt_authorities: jwt.iter().map(|k| k.id.clone()).collect(),
            },
            entries,
            agents,
            authorities: Authorities { x509, jwt },
        }
    }

    /// The text form: counts, then tables of at most `limit` rows each (`0`: all).
    pub fn write_text(&self, out: &mut dyn Write, limit: usize) -> std::io::Result<()> {
        let cap = if limit == 0 { usize::MAX } else { limit };
        writeln!(out, "Log:        {}", self.log)?;
        let start = match self.from_snapshot {
            Some(s) => format!(" (from the snapshot at seq {s})"),
            None => String::new(),
        };
        writeln!(
            out,
            "At:         seq {} of {}, committed {}{start}",
            self.seq, self.head, self.recorded_at
        )?;
        let c = &self.counts;
        writeln!(
            out,
            "Entries:    {}\nAgents:     {} ({} banned)\nX.509 CAs:  {}\nJWT keys:   {}\nBundle:     sequence {}, {} X.509 authorities, {} JWT authorities{}",
            c.entries,
            c.agents,
            c.banned_agents,
            c.x509_cas,
            c.jwt_keys,
            self.bundle.sequence,
            self.bundle.x509_authorities.len(),
            self.bundle.jwt_authorities.len(),
            match &self.bundle.trust_domain {
                Some(td) => format!(" (trust domain {td})"),
                None => String::new(),
            }
        )?;

        writeln!(out, "\nAuthorities:")?;
        let rows: Vec<[String; 6]> = self
            .authorities
            .x509
            .iter()
            .map(|a| ("x509", a))
            .chain(self.authorities.jwt.iter().map(|a| ("jwt", a)))
            .map(|(kind, a)| {
                [
                    kind.to_owned(),
                    a.id.clone(),
                    a.status.to_owned(),
                    a.not_before.clone(),
                    a.not_after.clone(),
                    a.server.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        table(
            out,
            &["KIND", "ID", "STATUS", "NOT BEFORE", "NOT AFTER", "SERVER"],
            &rows,
            usize::MAX,
        )?;

        writeln!(out, "\nEntries:")?;
        let rows: Vec<[String; 5]> = self
            .entries
            .iter()
            .take(cap)
            .map(|e| {
                [
                    e.id.clone(),
                    e.spiffe_id.clone(),
                    e.parent_id.clone(),
                    e.selectors.join(","),
                    e.x509_svid_ttl
                        .map_or_else(|| "default".into(), |t| format!("{t}s")),
                ]
            })
            .collect();
        table(
            out,
            &["ID", "SPIFFE ID", "PARENT ID", "SELECTORS", "X509 TTL"],
            &rows,
            self.entries.len(),
        )?;

        writeln!(out, "\nAgents:")?;
        let rows: Vec<[String; 5]> = self
            .agents
            .iter()
            .take(cap)
            .map(|a| {
                [
                    a.id.clone(),
                    a.selectors.join(","),
                    a.svid_serial.clone(),
                    a.svid_expires_at.clone(),
                    if a.banned { "yes" } else { "no" }.into(),
                ]
            })
            .collect();
        table(
            out,
            &[
                "SPIFFE ID",
                "SELECTORS",
                "SVID SERIAL",
                "SVID EXPIRES",
                "BANNED",
            ],
            &rows,
            self.agents.len(),
        )
    }
}

/// Prints `rows` under `header`, columns padded; `total` rows exist, so a shorter `rows` ends
/// with a line saying how many were left out and how to see them.
fn table<const N: usize>(
    out: &mut dyn Write,
    header: &[&str; N],
    rows: &[[String; N]],
    total: usize,
) -> std::io::Result<()> {
    if rows.is_empty() {
        return writeln!(out, "  (none)");
    }
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::from(" ");
        for (cell, w) in cells.zip(widths) {
            s.push(' ');
            s.push_str(cell);
            s.extend(std::iter::repeat_n(
                ' ',
                w.saturating_sub(cell.chars().count()),
            ));
            s.push(' ');
        }
        s.trim_end().to_owned()
    };
    writeln!(out, "{}", line(&mut header.iter().copied()))?;
    for row in rows {
        writeln!(out, "{}", line(&mut row.iter().map(String::as_str)))?;
    }
    if total > rows.len() && total != usize::MAX {
        writeln!(
            out,
            "  ... and {} more (--limit N shows N rows, --limit 0 all, --output json everything)",
            total - rows.len()
        )?;
    }
    Ok(())
}
