//! `events tail` filters, applied in the CLI to the records the server streams.
//!
//! Why client-side: `--spiffeID` must resolve entry ids to SPIFFE IDs (a deletion names only
//! the id), which needs a fold of the log from seq 1; doing that in the server would cost
//! server memory per open tail stream. The server still does what is cheap there (`--kind`
//! and a start seq when no fold is needed), and streams in chunks under HTTP/2 flow control,
//! so the CLI holds one record at a time plus [`EntryNames`], the live entries' SPIFFE IDs (at
//! most the server's `limits.max_entries`). The price: `--spiffeID` reads the whole log over
//! the admin socket. Must not decide anything about authorisation: that is `who.rs`, on the
//! real `SyncIndex`.

use std::collections::HashMap;

use tessera_actors::server::events::ServerEvent;
use tessera_identity::{EntryId, SpiffeId};
use tessera_proto::tessera::eventlog::v1 as pb;

use crate::cli::common::CliError;
use crate::timefmt::parse_timestamp;

/// A point in the log given on the command line: a seq, or a time (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// `42`: a record's seq.
    Seq(u64),
    /// `2026-12-03T10:00:00Z`: when a record was committed (whole seconds).
    Time(i64),
}

impl Point {
    /// Parses `value` of `flag`: digits are a seq, anything else must be RFC 3339.
    pub fn parse(verb: &'static str, flag: &'static str, value: &str) -> Result<Self, CliError> {
        let v = value.trim();
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            return v.parse().map(Point::Seq).map_err(|_| CliError::Flag {
                verb,
                flag,
                value: value.to_owned(),
                reason: format!("a seq must be at most {}", u64::MAX),
            });
        }
        parse_timestamp(v)
            .map(Point::Time)
            .ok_or_else(|| CliError::Flag {
                verb,
                flag,
                value: value.to_owned(),
                reason: "expected a seq number (e.g. 42) or an RFC 3339 time \
                     (e.g. 2026-12-03T10:00:00Z)"
                    .into(),
            })
    }

    /// Whether the record at (`seq`, `secs`) is at or after this point.
    pub fn reached_by(self, seq: u64, secs: i64) -> bool {
        match self {
            Point::Seq(s) => seq >= s,
            Point::Time(t) => secs >= t,
        }
    }

    /// Whether the record at (`seq`, `secs`) is strictly after this point.
    pub fn passed_by(self, seq: u64, secs: i64) -> bool {
        match self {
            Point::Seq(s) => seq > s,
            Point::Time(t) => secs > t,
        }
    }
}

/// The seconds of a record's commit time (0 if the server left it unset).
pub fn record_secs(r: &pb::Record) -> i64 {
    r.recorded_at.as_ref().map_or(0, |t| t.seconds)
}

/// Decodes the record's hash-covered payload with this build's codec (upcasting old schema
/// versions); `None` if this build cannot read it.
pub fn decode(r: &pb::Record) -> Option<ServerEvent> {
    let record = tessera_eventlog::Record {
        seq: r.seq,
        recorded_at: 0,
        kind: r.kind.clone(),
        schema_version: r.schema_version,
        payload: r.payload.clone(),
        prev_hash: tessera_eventlog::Digest32::GENESIS,
        hash: tessera_eventlog::Digest32::GENESIS,
    };
    tessera_eventlog::typed::decode::<ServerEvent>(&record).ok()
}

/// Live entries' SPIFFE IDs, folded from the log, so that a deletion (which names only an id)
/// can be matched by `--spiffeID` and summarised with the identity it removed.
#[derive(Debug, Default)]
pub struct EntryNames {
    /// Entry id → (SPIFFE ID, expires_at).
    live: HashMap<EntryId, (SpiffeId, Option<i64>)>,
}

/// What one record is about, for filters and the summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct About {
    /// The entry it changes.
    pub entry_id: Option<EntryId>,
    /// The SPIFFE IDs concerned: an entry's (before and after an update), an agent's, a join
    /// token's alias.
    pub spiffe_ids: Vec<SpiffeId>,
    /// The agent it changes.
    pub agent_id: Option<SpiffeId>,
}

impl EntryNames {
    /// Folds `event` and says what it is about (looked up before a deletion is folded).
    pub fn apply(&mut self, event: &ServerEvent) -> About {
        let mut about = About::default();
        match event {
            ServerEvent::EntryCreated(e) | ServerEvent::EntryUpdated(e) => {
                about.entry_id = Some(e.id.clone());
                if let Some((old, _)) = self.live.get(&e.id) {
                    if old != &e.spiffe_id {
                        about.spiffe_ids.push(old.clone());
                    }
                }
                about.spiffe_ids.push(e.spiffe_id.clone());
                self.live
                    .insert(e.id.clone(), (e.spiffe_id.clone(), e.expires_at));
            }
            ServerEvent::EntryDeleted { id } => {
                about.entry_id = Some(id.clone());
                if let Some((name, _)) = self.live.remove(id) {
                    about.spiffe_ids.push(name);
                }
            }
            ServerEvent::EntryExpired { id, expires_at } => {
                about.entry_id = Some(id.clone());
                if let Some((name, at)) = self.live.get(id) {
                    about.spiffe_ids.push(name.clone());
                    // As the registry folds it: an entry extended since stays.
                    if at.is_some_and(|at| at <= *expires_at) {
                        self.live.remove(id);
                    }
                }
            }
            ServerEvent::AgentAttested(a) => {
                about.agent_id = Some(a.id.clone());
                about.spiffe_ids.push(a.id.clone());
            }
            ServerEvent::AgentSvidRenewed { agent_id, .. }
            | ServerEvent::AgentEvicted { agent_id }
            | ServerEvent::AgentBanned { agent_id }
            | ServerEvent::JoinTokenConsumed { agent_id, .. } => {
                about.agent_id = Some(agent_id.clone());
                about.spiffe_ids.push(agent_id.clone());
            }
            ServerEvent::JoinTokenCreated {
                alias: Some(alias), ..
            } => about.spiffe_ids.push(alias.clone()),
            _ => {}
        }
        about
    }
}

/// The filters of `events tail`; all given ones must match.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// `--kind` (any of them).
    pub kinds: Vec<String>,
    /// `--entryID`.
    pub entry_id: Option<EntryId>,
    /// `--spiffeID`.
    pub spiffe_id: Option<SpiffeId>,
    /// `--agentID`.
    pub agent_id: Option<SpiffeId>,
    /// `--since`.
    pub since: Option<Point>,
    /// `--until`.
    pub until: Option<Point>,
}

impl Filter {
    /// Whether the filters need the fold from seq 1 (and so every kind from the server).
    pub fn needs_fold(&self) -> bool {
        self.spiffe_id.is_some()
    }

    /// Whether the record passes every filter.
    pub fn matches(&self, r: &pb::Record, about: &About) -> bool {
        let secs = record_secs(r);
        if self.since.is_some_and(|p| !p.reached_by(r.seq, secs))
            || self.until.is_some_and(|p| p.passed_by(r.seq, secs))
        {
            return false;
        }
        if !self.kinds.is_empty() && !self.kinds.iter().any(|k| k == &r.kind) {
            return false;
        }
        if let Some(want) = &self.entry_id {
            if about.entry_id.as_ref() != Some(want) {
                return false;
            }
        }
        if let Some(want) = &self.spiffe_id {
            if !about.spiffe_ids.contains(want) {
                return false;
            }
        }
        if let Some(want) = &self.agent_id {
            if about.agent_id.as_ref() != Some(want) {
                return false;
            }
        }
        true
    }

    /// Whether no record after this one can match (the stream can stop): past an `--until`
    /// seq, or, when following, past an `--until` time (commit times only grow on a live
    /// log; a replayed log is read to its head instead, in case its clock stepped back).
    pub fn finished_after(&self, r: &pb::Record, following: bool) -> bool {
        match self.until {
            Some(Point::Seq(u)) => r.seq >= u,
            Some(p @ Point::Time(_)) => following && p.passed_by(r.seq, record_secs(r)),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use tessera_identity::{RegistrationEntry, SelectorSet};

    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    fn entry(eid: &str, spiffe: &str) -> RegistrationEntry {
        RegistrationEntry {
            id: EntryId::new(eid).unwrap(),
            spiffe_id: id(spiffe),
            parent_id: id("spiffe://example.org/agent"),
            selectors: SelectorSet::parse_all(["unix:uid:1"]).unwrap(),
            x509_svid_ttl: None,
            jwt_svid_ttl: None,
            federates_with: vec![],
            dns_names: vec![],
            admin: false,
            downstream: false,
            hint: String::new(),
            expires_at: Some(100),
            created_at: 0,
            revision: 0,
        }
    }

    fn record(seq: u64, secs: i64, kind: &str) -> pb::Record {
        pb::Record {
            seq,
            recorded_at: Some(prost_types::Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            kind: kind.into(),
            ..pb::Record::default()
        }
    }

    #[test]
    fn points_are_seqs_or_rfc3339_times() {
        assert_eq!(Point::parse("v", "--since", "42").unwrap(), Point::Seq(42));
        assert_eq!(
            Point::parse("v", "--since", "1970-01-01T00:01:00Z").unwrap(),
            Point::Time(60)
        );
        let err = Point::parse("events tail", "--since", "yesterday").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("events tail: --since \"yesterday\": expected a seq number"),
            "{err}"
        );
        assert!(Point::parse("v", "--since", "99999999999999999999999").is_err());
        assert!(Point::Seq(3).reached_by(3, 0) && !Point::Seq(3).passed_by(3, 0));
        assert!(Point::Time(10).passed_by(1, 11) && !Point::Time(10).reached_by(9, 9));
    }

    #[test]
    fn a_deletion_is_about_the_spiffe_id_it_removed() {
        let mut names = EntryNames::default();
        let e = entry("e1", "spiffe://example.org/web");
        names.apply(&ServerEvent::EntryCreated(e.clone()));
        let mut renamed = e.clone();
        renamed.spiffe_id = id("spiffe://example.org/api");
        let about = names.apply(&ServerEvent::EntryUpdated(renamed));
        assert_eq!(
            about.spiffe_ids,
            vec![
                id("spiffe://example.org/web"),
                id("spiffe://example.org/api")
            ]
        );
        // A prune decided before an extension leaves the entry.
        let about = names.apply(&ServerEvent::EntryExpired {
            id: e.id.clone(),
            expires_at: 50,
        });
        assert_eq!(about.spiffe_ids, vec![id("spiffe://example.org/api")]);
        let about = names.apply(&ServerEvent::EntryDeleted { id: e.id.clone() });
        assert_eq!(about.entry_id, Some(e.id.clone()));
        assert_eq!(about.spiffe_ids, vec![id("spiffe://example.org/api")]);
        // Gone: a second deletion knows no name.
        let about = names.apply(&ServerEvent::EntryDeleted { id: e.id });
        assert!(about.spiffe_ids.is_empty());
    }

    #[test]
    fn every_given_filter_must_match() {
        let web = id("spiffe://example.org/web");
        let about = About {
            entry_id: Some(EntryId::new("e1").unwrap()),
            spiffe_ids: vec![web.clone()],
            agent_id: None,
        };
        let r = record(5, 1_000, "EntryCreated");
        let mut f = Filter {
            spiffe_id: Some(web),
            kinds: vec!["EntryDeleted".into(), "EntryCreated".into()],
            since: Some(Point::Seq(5)),
            until: Some(Point::Time(1_000)),
            ..Filter::default()
        };
        assert!(f.matches(&r, &about));
        f.agent_id = Some(id("spiffe://example.org/agent"));
        assert!(!f.matches(&r, &about), "no agent in the record");
        f.agent_id = None;
        f.entry_id = Some(EntryId::new("e2").unwrap());
        assert!(!f.matches(&r, &about), "another entry");
        f.entry_id = None;
        f.since = Some(Point::Time(1_001));
        assert!(!f.matches(&r, &about), "before --since");
        f.since = None;
        f.until = Some(Point::Seq(4));
        assert!(!f.matches(&r, &about), "after --until");
        assert!(f.finished_after(&r, false));
        f.until = Some(Point::Time(999));
        assert!(!f.finished_after(&r, false) && f.finished_after(&r, true));
    }

    proptest::proptest! {
        #[test]
        fn any_flag_value_parses_or_is_refused_without_panicking(v in ".{0,40}") {
            let _ = Point::parse("v", "--since", &v);
        }

        #[test]
        fn digits_are_seqs_and_printed_times_are_times(
            seq in proptest::num::u64::ANY,
            secs in 0i64..253_402_300_799,
        ) {
            proptest::prop_assert_eq!(
                Point::parse("v", "--since", &seq.to_string()).unwrap(),
                Point::Seq(seq)
            );
            let printed = crate::timefmt::format_unix(secs);
            proptest::prop_assert_eq!(
                Point::parse("v", "--until", &printed).unwrap(),
                Point::Time(secs)
            );
        }
    }
}
