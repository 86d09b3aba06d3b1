//! `events who --spiffeID ID`: which entries granted that identity, to which agents, over which
//! intervals, with the seqs that prove it.
//!
//! Computed by replaying the log through the server's own [`SyncIndex`] (the code that decides
//! what each agent may see), one event at a time: a view change that brings an entry with the
//! asked SPIFFE ID into an agent's view opens a grant; one that takes it out (deletion, expiry,
//! an update that renames or re-parents it, a node alias that stops matching, the agent banned
//! or evicted) closes it. Runs in the CLI over the streamed log, so the server does no work
//! beyond streaming; the CLI's memory is that of one `SyncIndex` (the registry, nodes and
//! every agent's view, as much as the server's own) plus the grants found, which are capped.
//! [`Who`] is the pure fold (no I/O, tested given events → then grants); [`run`] streams the
//! log into it and prints.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{json, Value};
use tessera_actors::server::events::ServerEvent;
use tessera_actors::server::sync::{SyncIndex, ViewChange};
use tessera_identity::{EntryId, SpiffeId};
use tessera_proto::tessera::eventlog::v1::event_log_client::EventLogClient;
use tessera_proto::tessera::eventlog::v1::TailRequest;

use super::filter::{decode, record_secs, Point};
use super::WhoArgs;
use crate::cli::common::{connect, json, line, rpc, spiffe_id, CliError, OutputFormat};
use crate::timefmt::format_unix;

/// Most grants `events who` keeps; past it the replay stops with an error.
pub const MAX_GRANTS: usize = 100_000;

/// A record that opened or closed a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// Its seq.
    pub seq: u64,
    /// When it committed, Unix seconds.
    pub secs: i64,
    /// Its kind (`EntryCreated`, `AgentBanned`, ...).
    pub kind: String,
}

/// One entry granting the identity to one agent over `[from, until)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The entry.
    pub entry_id: EntryId,
    /// The agent.
    pub agent_id: SpiffeId,
    /// The entry's parent when the grant opened (the agent, a node alias, or another entry's
    /// SPIFFE ID in the agent's view).
    pub parent_id: SpiffeId,
    /// The record that brought the entry into the agent's view.
    pub from: Mark,
    /// The record that took it out; `None` while it still holds.
    pub until: Option<Mark>,
}

impl Grant {
    /// Whether the grant held at `p`.
    pub fn held_at(&self, p: Point) -> bool {
        at_or_before(&self.from, p) && self.until.as_ref().is_none_or(|u| !at_or_before(u, p))
    }

    /// Whether the grant held at some point of `[since, until]` (either end open).
    pub fn overlaps(&self, since: Option<Point>, until: Option<Point>) -> bool {
        let opened_by_the_end = until.is_none_or(|u| at_or_before(&self.from, u));
        let closed_after_the_start = match (&self.until, since) {
            (Some(end), Some(s)) => !at_or_before(end, s),
            _ => true,
        };
        opened_by_the_end && closed_after_the_start
    }
}

/// Whether the record `m` is at or before `p`.
fn at_or_before(m: &Mark, p: Point) -> bool {
    match p {
        Point::Seq(s) => m.seq <= s,
        Point::Time(t) => m.secs <= t,
    }
}

/// `events who` failed during the replay.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WhoError {
    /// More grants than [`MAX_GRANTS`].
    #[error(
        "more than {max} grants of {spiffe_id}; replay less of the log with --until SEQ or --at SEQ"
    )]
    TooManyGrants {
        /// The identity asked about.
        spiffe_id: SpiffeId,
        /// The cap.
        max: usize,
    },
}

/// The replay: the server's sync index and the grants of one identity.
#[derive(Debug)]
pub struct Who {
    target: SpiffeId,
    index: SyncIndex,
    /// (agent, entry) → index into `grants` of its open grant.
    open: BTreeMap<(SpiffeId, EntryId), usize>,
    grants: Vec<Grant>,
    replayed_to: u64,
}

impl Who {
    /// An empty replay asking about `target`.
    pub fn new(target: SpiffeId) -> Self {
        Who {
            target,
            index: SyncIndex::default(),
            open: BTreeMap::new(),
            grants: Vec::new(),
            replayed_to: 0,
        }
    }

    /// Folds the next record's event.
    pub fn apply(&mut self, mark: Mark, event: &ServerEvent) -> Result<(), WhoError> {
        self.replayed_to = mark.seq;
        for (agent, changes) in self.index.apply(event) {
            for change in changes {
                match change {
                    ViewChange::Upsert(e) => {
                        let key = (agent.clone(), e.id.clone());
                        let open = self.open.contains_key(&key);
                        if e.spiffe_id == self.target && !open {
                            if self.grants.len() >= MAX_GRANTS {
                                return Err(WhoError::TooManyGrants {
                                    spiffe_id: self.target.clone(),
                                    max: MAX_GRANTS,
                                });
                            }
                            self.open.insert(key, self.grants.len());
                            self.grants.push(Grant {
                                entry_id: e.id.clone(),
                                agent_id: agent.clone(),
                                parent_id: e.parent_id.clone(),
                                from: mark.clone(),
                                until: None,
                            });
                        } else if e.spiffe_id != self.target && open {
                            self.close(&key, &mark);
                        }
                    }
                    ViewChange::Remove(id) => self.close(&(agent.clone(), id), &mark),
                }
            }
        }
        Ok(())
    }

    fn close(&mut self, key: &(SpiffeId, EntryId), mark: &Mark) {
        if let Some(i) = self.open.remove(key) {
            if let Some(g) = self.grants.get_mut(i) {
                g.until = Some(mark.clone());
            }
        }
    }

    /// The last seq folded.
    pub fn replayed_to(&self) -> u64 {
        self.replayed_to
    }

    /// The identity asked about.
    pub fn target(&self) -> &SpiffeId {
        &self.target
    }

    /// Every grant, in the order they opened.
    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }
}

fn mark_json(m: &Mark) -> Value {
    json!({ "seq": m.seq, "recorded_at": format_unix(m.secs), "kind": m.kind })
}

/// A grant as JSON (`until` is null while it holds).
pub fn grant_json(g: &Grant) -> Value {
    json!({
        "entry_id": g.entry_id.to_string(),
        "agent_id": g.agent_id.to_string(),
        "parent_id": g.parent_id.to_string(),
        "from": mark_json(&g.from),
        "until": g.until.as_ref().map(mark_json),
    })
}

fn mark_text(m: &Mark) -> String {
    format!("seq {} {} {}", m.seq, format_unix(m.secs), m.kind)
}

/// The grants as a table, one line each.
pub fn table(grants: &[&Grant], replayed_to: u64) -> Vec<String> {
    let rows: Vec<[String; 5]> = grants
        .iter()
        .map(|g| {
            [
                g.entry_id.to_string(),
                g.agent_id.to_string(),
                g.parent_id.to_string(),
                mark_text(&g.from),
                g.until.as_ref().map_or_else(
                    || format!("(still granted at seq {replayed_to})"),
                    mark_text,
                ),
            ]
        })
        .collect();
    let header = ["ENTRY ID", "AGENT", "PARENT ID", "FROM", "UNTIL"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    std::iter::once(&header)
        .chain(&rows)
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect()
}

const VERB: &str = "events who";

/// Runs `events who`: streams the log from seq 1 (to the head, or to an `--at`/`--until` seq)
/// and replays it.
pub async fn run(a: WhoArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let target = spiffe_id(VERB, "--spiffeID", &a.spiffe_id)?;
    let point = |flag: &'static str, v: &Option<String>| {
        v.as_deref()
            .map(|v| Point::parse(VERB, flag, v))
            .transpose()
    };
    let (at, since, until) = (
        point("--at", &a.at)?,
        point("--since", &a.since)?,
        point("--until", &a.until)?,
    );
    // Nothing after this seq can change the answer.
    let last = match at.or(until) {
        Some(Point::Seq(s)) => Some(s),
        _ => None,
    };
    let mut client = EventLogClient::new(connect(VERB, &a.client.socket_path).await?);
    let mut stream = client
        .tail(TailRequest {
            from_seq: 1,
            kinds: Vec::new(),
            limit: last.unwrap_or(0),
            follow: false,
        })
        .await
        .map_err(rpc(VERB))?
        .into_inner();
    let mut who = Who::new(target);
    while let Some(r) = stream.message().await.map_err(rpc(VERB))? {
        let Some(event) = decode(&r) else {
            return Err(CliError::Failed {
                verb: VERB,
                message: format!(
                    "record seq {} ({}, schema {}) cannot be decoded by this build, so the \
                     replay cannot go on; run the `events who` of the tessera-server release \
                     that wrote it",
                    r.seq, r.kind, r.schema_version
                ),
            });
        };
        let mark = Mark {
            seq: r.seq,
            secs: record_secs(&r),
            kind: r.kind,
        };
        who.apply(mark, &event).map_err(|e| CliError::Failed {
            verb: VERB,
            message: e.to_string(),
        })?;
    }
    let grants: Vec<&Grant> = who
        .grants()
        .iter()
        .filter(|g| match at {
            Some(p) => g.held_at(p),
            None => g.overlaps(since, until),
        })
        .collect();
    match a.client.output {
        OutputFormat::Json => json(
            out,
            &json!({
                "spiffe_id": who.target().to_string(),
                "replayed_to_seq": who.replayed_to(),
                "grants": grants.iter().map(|g| grant_json(g)).collect::<Vec<_>>(),
            }),
        ),
        OutputFormat::Pretty if grants.is_empty() => line(
            out,
            format!(
                "No entry granted {} (log replayed to seq {})",
                who.target(),
                who.replayed_to()
            ),
        ),
        OutputFormat::Pretty => {
            line(
                out,
                format!(
                    "Found {} grants of {} (log replayed to seq {}):",
                    grants.len(),
                    who.target(),
                    who.replayed_to()
                ),
            );
            for row in table(&grants, who.replayed_to()) {
                line(out, row);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tessera_actors::server::events::AttestedAgent;
    use tessera_identity::{RegistrationEntry, SelectorSet};

    use super::*;

    const WEB: &str = "spiffe://example.org/web";
    const A1: &str = "spiffe://example.org/spire/agent/x509pop/n1";
    const A2: &str = "spiffe://example.org/spire/agent/x509pop/n2";

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    fn entry(eid: &str, spiffe: &str, parent: &str, selectors: &[&str]) -> RegistrationEntry {
        RegistrationEntry {
            id: EntryId::new(eid).unwrap(),
            spiffe_id: id(spiffe),
            parent_id: id(parent),
            selectors: SelectorSet::parse_all(selectors.iter().copied()).unwrap(),
            x509_svid_ttl: None,
            jwt_svid_ttl: None,
            federates_with: vec![],
            dns_names: vec![],
            admin: false,
            downstream: false,
            hint: String::new(),
            expires_at: None,
            created_at: 0,
            revision: 0,
        }
    }

    fn attested(agent: &str, selectors: &[&str]) -> ServerEvent {
        ServerEvent::AgentAttested(AttestedAgent {
            id: id(agent),
            attestation_type: "x509pop".into(),
            selectors: SelectorSet::parse_all(selectors.iter().copied()).unwrap(),
            svid_serial: "1".into(),
            svid_expires_at: 0,
            attested_at: 0,
            can_reattest: true,
        })
    }

    /// Replays `events` as seqs 1.. at second 100 × seq.
    fn replay(events: &[ServerEvent]) -> Who {
        let mut who = Who::new(id(WEB));
        for (i, e) in events.iter().enumerate() {
            let seq = i as u64 + 1;
            let mark = Mark {
                seq,
                secs: 100 * seq as i64,
                kind: tessera_eventlog::Event::kind(e).to_owned(),
            };
            who.apply(mark, e).unwrap();
        }
        who
    }

    fn span(g: &Grant) -> (u64, Option<u64>) {
        (g.from.seq, g.until.as_ref().map(|u| u.seq))
    }

    #[test]
    fn given_a_direct_entry_when_deleted_then_the_grant_closes_at_the_deletion() {
        let who = replay(&[
            attested(A1, &["x:a"]),
            ServerEvent::EntryCreated(entry("e1", WEB, A1, &["unix:uid:1"])),
            ServerEvent::EntryCreated(entry("e2", "spiffe://example.org/db", A1, &["unix:uid:2"])),
            ServerEvent::EntryDeleted {
                id: EntryId::new("e1").unwrap(),
            },
        ]);
        assert_eq!(who.grants().len(), 1);
        let g = &who.grants()[0];
        assert_eq!((g.agent_id.as_str(), g.entry_id.as_str()), (A1, "e1"));
        assert_eq!(span(g), (2, Some(4)));
        assert_eq!(g.until.as_ref().unwrap().kind, "EntryDeleted");
        assert!(g.held_at(Point::Seq(2)) && g.held_at(Point::Seq(3)));
        assert!(!g.held_at(Point::Seq(1)) && !g.held_at(Point::Seq(4)));
        assert!(g.held_at(Point::Time(350)) && !g.held_at(Point::Time(400)));
    }

    #[test]
    fn given_a_node_alias_then_every_matching_agent_is_granted_until_banned_or_evicted() {
        let who = replay(&[
            attested(A1, &["x:a", "x:b"]),
            attested(A2, &["x:a"]),
            ServerEvent::EntryCreated(entry(
                "alias",
                "spiffe://example.org/nodes/a",
                "spiffe://example.org/spire/server",
                &["x:a"],
            )),
            ServerEvent::EntryCreated(entry(
                "e1",
                WEB,
                "spiffe://example.org/nodes/a",
                &["unix:uid:1"],
            )),
            ServerEvent::AgentBanned { agent_id: id(A1) },
            ServerEvent::AgentEvicted { agent_id: id(A2) },
            // Attested again: a new grant, the old one stays closed.
            attested(A2, &["x:a"]),
        ]);
        let spans: Vec<(&str, (u64, Option<u64>))> = who
            .grants()
            .iter()
            .map(|g| (g.agent_id.as_str(), span(g)))
            .collect();
        assert_eq!(
            spans,
            vec![(A1, (4, Some(5))), (A2, (4, Some(6))), (A2, (7, None))]
        );
        assert_eq!(
            who.grants()[0].parent_id.as_str(),
            "spiffe://example.org/nodes/a"
        );
        assert_eq!(who.replayed_to(), 7);
    }

    #[test]
    fn given_an_update_that_renames_the_entry_then_its_grant_closes() {
        let mut renamed = entry("e1", "spiffe://example.org/other", A1, &["unix:uid:1"]);
        renamed.revision = 1;
        let who = replay(&[
            attested(A1, &["x:a"]),
            ServerEvent::EntryCreated(entry("e1", WEB, A1, &["unix:uid:1"])),
            ServerEvent::EntryUpdated(renamed),
        ]);
        assert_eq!(
            who.grants().iter().map(span).collect::<Vec<_>>(),
            vec![(2, Some(3))]
        );
    }

    #[test]
    fn intervals_are_selected_by_overlap() {
        let who = replay(&[
            attested(A1, &["x:a"]),
            ServerEvent::EntryCreated(entry("e1", WEB, A1, &["unix:uid:1"])),
            ServerEvent::EntryDeleted {
                id: EntryId::new("e1").unwrap(),
            },
        ]);
        let g = &who.grants()[0]; // [2, 3)
        assert!(g.overlaps(None, None));
        assert!(g.overlaps(Some(Point::Seq(1)), Some(Point::Seq(2))));
        assert!(!g.overlaps(Some(Point::Seq(3)), None), "closed at 3");
        assert!(!g.overlaps(None, Some(Point::Seq(1))), "opened after 1");
        assert!(g.overlaps(Some(Point::Time(250)), Some(Point::Time(260))));
        assert!(!g.overlaps(Some(Point::Time(300)), None));

        let lines = table(&[g], 3);
        assert!(lines[0].starts_with("ENTRY ID  AGENT"), "{lines:?}");
        assert!(
            lines[1].contains("seq 2 1970-01-01T00:03:20Z EntryCreated"),
            "{lines:?}"
        );
        assert!(
            lines[1].ends_with("seq 3 1970-01-01T00:05:00Z EntryDeleted"),
            "{lines:?}"
        );
        let j = grant_json(g);
        assert_eq!(j["from"]["seq"], 2);
        assert_eq!(j["until"]["kind"], "EntryDeleted");
    }

    #[test]
    fn the_number_of_grants_is_capped() {
        let mut who = Who::new(id(WEB));
        let mark = |seq| Mark {
            seq,
            secs: 0,
            kind: String::new(),
        };
        who.apply(mark(1), &attested(A1, &["x:a"])).unwrap();
        for i in 0..MAX_GRANTS as u64 {
            who.grants.push(Grant {
                entry_id: EntryId::new(&format!("f{i}")).unwrap(),
                agent_id: id(A1),
                parent_id: id(A1),
                from: mark(1),
                until: Some(mark(1)),
            });
        }
        let err = who
            .apply(
                mark(2),
                &ServerEvent::EntryCreated(entry("e1", WEB, A1, &["u:1"])),
            )
            .unwrap_err();
        assert!(err
            .to_string()
            .starts_with("more than 100000 grants of spiffe://example.org/web"));
    }
}
