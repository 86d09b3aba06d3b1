//! `tessera-sim replay`: a server's state at any point of its log, read-only (DESIGN.md §8,
//! issue 12 §2).
//!
//! Reads the log the server wrote (embedded sled under its data dir, or the PostgreSQL table
//! several servers share), decodes every record with the eventlog's own record and payload
//! code and the server's event type (`ServerEvent`, upcast by `typed::decode` exactly as the
//! server's start-up replay does), checks the hash chain over what it folds, and folds with
//! `ServerState::apply_owned`, the server's own fold. A snapshot the server left at a seq at
//! or before the target is used instead of the records before it.
//!
//! Read-only, by construction: sled 0.34 takes a lock on its directory and may write during
//! recovery, so the server's directory is never opened with sled. Its `sled/` directory (and
//! the one snapshot file used, if any) is copied to a temporary directory first and the copy is
//! opened; the original is only ever read with `std::fs::read_dir`/`copy`. A running server's
//! directory can be copied too: the copy is what a crash at that moment would leave, which
//! sled's recovery reads up to its last complete write. PostgreSQL is read in a `READ ONLY`
//! transaction (`SELECT` only), which the database itself refuses to let write.
//!
//! `--what-if KEY=VALUE` re-runs the fleet's rotation over the recorded timeline with other
//! settings ([`what_if`]).
//!
//! Must not: write to the log it reads, read the wall clock, or panic on bad input.

mod source;
pub mod view;
pub mod what_if;

use std::path::PathBuf;

use tessera_actors::server::events::ServerEvent;
use tessera_actors::server::state::ServerState;
use tessera_eventlog::{Digest32, Record};

use self::source::Source;
pub use self::view::ReplayedState;

/// Records read from the store at a time.
const CHUNK: usize = 8_192;

/// `tessera-sim replay`'s flags (SPIRE-style camelCase).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ReplayArgs {
    /// The server's data directory (its `data_dir`, holding `log/`), or its log directory
    /// (holding `sled/`). Copied to a temporary directory and read there: never written.
    #[arg(long = "dataDir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A PostgreSQL log shared by several servers (`postgres://user@host:port/dbname`),
    /// read in a read-only transaction.
    #[arg(long = "databaseURL", value_name = "URL")]
    pub database_url: Option<String>,
    /// The server's config file: its `data_dir` or `[store]` says where the log is.
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where to stop: a seq (`1234`), or a time (RFC 3339, `2026-12-03T14:02:00Z`: the last
    /// record committed at or before it). Default: the head of the log.
    #[arg(long = "at", value_name = "SEQ|RFC3339")]
    pub at: Option<String>,
    /// `text` for people, `json` for tools.
    #[arg(long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Rows per table in text output (entries, agents); `0` for all.
    #[arg(long = "limit", value_name = "N", default_value_t = 20)]
    pub limit: usize,
    /// Re-run the fleet's rotation over the recorded timeline with this setting changed
    /// (`ca_ttl=12h`, `default_x509_svid_ttl=15m`, ...); repeatable.
    #[arg(long = "what-if", alias = "whatIf", value_name = "KEY=VALUE")]
    pub what_if: Vec<String>,
    /// Seed of the what-if runs (baseline and changed use the same one).
    #[arg(long = "seed", value_name = "N", default_value_t = 1)]
    pub seed: u64,
}

/// How `replay` prints.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Output {
    /// Counts, then tables.
    #[default]
    Text,
    /// One JSON document, in a deterministic order.
    Json,
}

/// Why `replay` could not show a state. Every message names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// None, or more than one, of `--dataDir`, `--databaseURL`, `--config` was given.
    #[error("replay: {0}")]
    Usage(String),
    /// `--dataDir` does not exist or cannot be read.
    #[error("replay: --dataDir {path:?}: {reason}; pass the server's data_dir (holding log/) or its log directory (holding sled/)")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The directory holds no Tessera log, or its store does not read as one.
    #[error("replay: {path:?} is not a Tessera log: {reason}")]
    NotALog {
        /// The directory.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The log holds no records.
    #[error("replay: the log at {location} is empty (no records): nothing to replay; has the server started on it?")]
    EmptyLog {
        /// Where the log is.
        location: String,
    },
    /// `--at` does not parse.
    #[error("replay: --at {value:?}: {reason}")]
    BadAt {
        /// The value given.
        value: String,
        /// The rule, and the fix.
        reason: String,
    },
    /// `--at` names a seq past the last record.
    #[error("replay: --at {at}: the log's head is seq {head}; pass a seq from 1 to {head}, or omit --at for the head")]
    BeyondHead {
        /// The seq asked for.
        at: u64,
        /// The last seq in the log.
        head: u64,
    },
    /// `--at` names a time before the first record.
    #[error("replay: --at {value:?}: the log's first record was committed at {first}; pass a later time")]
    BeforeFirst {
        /// The value given.
        value: String,
        /// When the first record was committed (RFC 3339).
        first: String,
    },
    /// A record fails its hash, its chain link, or does not decode as a server event.
    #[error("replay: the log at {location} is damaged at seq {seq}: {reason}; `tessera-server events verify` reports the whole chain, and --at {before} replays up to the record before it")]
    Damaged {
        /// Where the log is.
        location: String,
        /// The first bad record.
        seq: u64,
        /// `seq - 1`.
        before: u64,
        /// What is wrong.
        reason: String,
    },
    /// Reading the store failed (I/O, sled, PostgreSQL).
    #[error("replay: cannot read the log at {location}: {reason}")]
    Read {
        /// Where the log is.
        location: String,
        /// The store's message.
        reason: String,
    },
    /// The server's config file does not load.
    #[error("replay: --config: {0}")]
    Config(String),
    /// A `--what-if` setting or run failed.
    #[error("replay: --what-if: {0}")]
    WhatIf(String),
    /// Writing the output failed.
    #[error("replay: cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Where the replay stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// The last record.
    Head,
    /// After this seq.
    Seq(u64),
    /// After the last record committed at or before this time (Unix nanoseconds).
    Time(i64),
}

impl At {
    /// Parses `--at`: digits are a seq, anything else an RFC 3339 time.
    pub fn parse(value: Option<&str>) -> Result<At, ReplayError> {
        let Some(value) = value else {
            return Ok(At::Head);
        };
        let bad = |reason: &str| ReplayError::BadAt {
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = value.trim();
        if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
            return match trimmed.parse::<u64>() {
                Ok(0) => Err(bad(
                    "seqs start at 1; pass 1 for the state after the first record",
                )),
                Ok(seq) => Ok(At::Seq(seq)),
                Err(_) => Err(bad("the seq is too large")),
            };
        }
        parse_rfc3339_nanos(trimmed).map(At::Time).ok_or_else(|| {
            bad("is neither a seq (digits) nor an RFC 3339 time such as 2026-12-03T14:02:00Z or 2026-12-03T15:02:00.5+01:00")
        })
    }
}

/// An RFC 3339 time in Unix nanoseconds, fractional seconds kept (the server's parser,
/// `tessera_server::timefmt::parse_timestamp`, reads whole seconds; records are stamped in
/// nanoseconds).
fn parse_rfc3339_nanos(s: &str) -> Option<i64> {
    // Split `.digits` off the seconds and hand the rest to the server's own parser.
    let (whole, nanos) = match s.get(19..).and_then(|rest| rest.strip_prefix('.')) {
        Some(frac) => {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            let mut nanos: i64 = 0;
            for (i, b) in frac.bytes().take(digits).enumerate() {
                if i < 9 {
                    nanos = nanos * 10 + i64::from(b - b'0');
                }
            }
            for _ in digits..9 {
                nanos *= 10;
            }
            (format!("{}{}", &s[..19], &frac[digits..]), nanos)
        }
        None => (s.to_owned(), 0),
    };
    // Plain Unix seconds are a seq here, so insist on the calendar form.
    if whole.len() < 20 {
        return None;
    }
    let secs = tessera_server::timefmt::parse_timestamp(&whole)?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// A state folded from a log.
#[derive(Debug)]
pub struct Folded {
    /// The server's fold.
    pub state: ServerState,
    /// The last seq folded.
    pub seq: u64,
    /// Its commit time, Unix nanoseconds.
    pub recorded_at: i64,
    /// The log's last seq.
    pub head: u64,
    /// The snapshot the fold started from, if one was used.
    pub from_snapshot: Option<u64>,
    /// Where the log is, for messages.
    pub location: String,
}

/// Opens the log `args` name and folds it up to `args.at`.
pub fn fold(args: &ReplayArgs) -> Result<Folded, ReplayError> {
    fold_observed(args, None)
}

/// Sees each event folded, with its record's commit time (Unix nanoseconds), before the fold.
pub type Observer<'a> = &'a mut dyn FnMut(i64, &ServerEvent);

/// As [`fold`]; with an `observer`, every record from seq 1 is folded and shown to it (no
/// snapshot: the observer sees the whole timeline).
pub fn fold_observed(
    args: &ReplayArgs,
    observer: Option<Observer<'_>>,
) -> Result<Folded, ReplayError> {
    let at = At::parse(args.at.as_deref())?;
    let mut source = Source::open(args)?;
    fold_source(&mut source, &at, args.at.as_deref().unwrap_or(""), observer)
}

/// Resolves `at` against the log and folds up to it.
fn fold_source(
    source: &mut Source,
    at: &At,
    at_text: &str,
    mut observer: Option<Observer<'_>>,
) -> Result<Folded, ReplayError> {
    let location = source.location();
    let Some(last) = source.last()? else {
        return Err(ReplayError::EmptyLog { location });
    };
    let head = last.seq;
    let target = match *at {
        At::Head => head,
        At::Seq(seq) if seq > head => return Err(ReplayError::BeyondHead { at: seq, head }),
        At::Seq(seq) => seq,
        At::Time(t) => source.last_at_or_before(t, head)?.ok_or_else(|| {
            let first = source
                .record(1)
                .ok()
                .flatten()
                .map(|r| format_nanos(r.recorded_at))
                .unwrap_or_else(|| "(unreadable)".into());
            ReplayError::BeforeFirst {
                value: at_text.to_owned(),
                first,
            }
        })?,
    };
    let snapshot = match observer {
        Some(_) => None,
        None => source.snapshot_at_or_before(target)?,
    };
    let (mut state, after, prev_hash) = match snapshot {
        Some((seq, hash, state)) => (state, seq, hash),
        None => (ServerState::default(), 0, Digest32::GENESIS),
    };
    let from_snapshot = (after > 0).then_some(after);
    let mut seq = after;
    let mut recorded_at = 0;
    // Reading, checking and decoding run on a thread of their own, a few chunks ahead of
    // the fold on this one: on two cores a replay then takes about the longer of the two.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<Decoded>, ReplayError>>(4);
    let reader_location = location.clone();
    let reader: &mut Source = &mut *source;
    let outcome = std::thread::scope(|scope| {
        scope.spawn(move || {
            read_ahead(reader, after, prev_hash, target, &reader_location, &tx);
        });
        for chunk in rx {
            for (record_seq, at, event) in chunk? {
                if let Some(observe) = observer.as_mut() {
                    observe(at, &event);
                }
                state.apply_owned(event);
                seq = record_seq;
                recorded_at = at;
            }
        }
        Ok::<_, ReplayError>(())
    });
    outcome?;
    if seq < target {
        return Err(damaged(&location, seq + 1, "the record is missing".into()));
    }
    if recorded_at == 0 && target > 0 {
        // Started from a snapshot at the target itself: its record's time.
        recorded_at = source.record(target)?.map_or(0, |r| r.recorded_at);
    }
    Ok(Folded {
        state,
        seq,
        recorded_at,
        head,
        from_snapshot,
        location,
    })
}

/// A record's seq, commit time and event.
type Decoded = (u64, i64, ServerEvent);

/// Reads records `after + 1 ..= target`, checks each one's hash and link to the one before
/// (the first to `prev_hash`) and decodes it, sending chunks until the target, the first
/// fault (sent as an error), or the receiver hanging up.
fn read_ahead(
    source: &mut Source,
    after: u64,
    mut prev_hash: Digest32,
    target: u64,
    location: &str,
    tx: &std::sync::mpsc::SyncSender<Result<Vec<Decoded>, ReplayError>>,
) {
    let mut seq = after;
    while seq < target {
        let want = usize::try_from(target - seq).unwrap_or(CHUNK).min(CHUNK);
        let records = match source.read(seq + 1, want) {
            Ok(records) if records.is_empty() => {
                let _ = tx.send(Err(damaged(
                    location,
                    seq + 1,
                    "the record is missing".into(),
                )));
                return;
            }
            Ok(records) => records,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let mut chunk = Vec::with_capacity(records.len());
        for record in records {
            let checked = check_link(&record, seq + 1, &prev_hash)
                .map_err(|r| damaged(location, seq + 1, r))
                .and_then(|()| {
                    tessera_eventlog::typed::decode::<ServerEvent>(&record)
                        .map_err(|e| damaged(location, record.seq, e.to_string()))
                });
            match checked {
                Ok(event) => {
                    seq = record.seq;
                    prev_hash = record.hash;
                    chunk.push((record.seq, record.recorded_at, event));
                }
                Err(e) => {
                    // What came before the fault is folded; then the error.
                    let _ = tx.send(Ok(chunk));
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        if tx.send(Ok(chunk)).is_err() {
            return;
        }
    }
}

/// Whether `record` is the intact record at `seq`, chained to `prev_hash`.
fn check_link(record: &Record, seq: u64, prev_hash: &Digest32) -> Result<(), String> {
    if record.seq != seq {
        return Err(format!("expected seq {seq}, found seq {}", record.seq));
    }
    if record.prev_hash != *prev_hash {
        return Err("its prev_hash is not the previous record's hash (the chain is broken)".into());
    }
    if !record.is_intact() {
        return Err("its hash does not match its contents (altered)".into());
    }
    Ok(())
}

fn damaged(location: &str, seq: u64, reason: String) -> ReplayError {
    ReplayError::Damaged {
        location: location.to_owned(),
        seq,
        before: seq.saturating_sub(1),
        reason,
    }
}

/// Unix nanoseconds as RFC 3339 (UTC), with the fraction when there is one.
pub fn format_nanos(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let whole = tessera_server::timefmt::format_unix(secs);
    if frac == 0 {
        whole
    } else {
        let digits = format!("{frac:09}");
        format!(
            "{}.{}Z",
            whole.trim_end_matches('Z'),
            digits.trim_end_matches('0')
        )
    }
}

/// `tessera-sim replay`: folds the log `args` name up to `--at` and prints the state (or,
/// with `--what-if`, the comparison of the recorded rotation settings with the changed ones).
pub fn run(args: &ReplayArgs, out: &mut dyn std::io::Write) -> Result<(), ReplayError> {
    if !args.what_if.is_empty() {
        return what_if::run(args, out);
    }
    let folded = fold(args)?;
    let state = ReplayedState::from_folded(&folded);
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut *out, &state)
                .map_err(|e| ReplayError::Output(std::io::Error::other(e)))?;
            writeln!(out)?;
        }
        Output::Text => state.write_text(out, args.limit)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_parses_seqs_and_times_and_refuses_the_rest() {
        assert_eq!(At::parse(None).unwrap(), At::Head);
        assert_eq!(At::parse(Some("42")).unwrap(), At::Seq(42));
        assert_eq!(
            At::parse(Some("1970-01-01T00:00:01Z")).unwrap(),
            At::Time(1_000_000_000)
        );
        assert_eq!(
            At::parse(Some("1970-01-01T01:00:01.25+01:00")).unwrap(),
            At::Time(1_250_000_000)
        );
        for bad in [
            "0",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "",
            "1970-01-01T00:00:01.Z",
        ] {
            assert!(
                matches!(At::parse(Some(bad)), Err(ReplayError::BadAt { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn times_print_with_their_fraction() {
        assert_eq!(format_nanos(1_000_000_000), "1970-01-01T00:00:01Z");
        assert_eq!(format_nanos(1_500_000_000), "1970-01-01T00:00:01.5Z");
    }
}
