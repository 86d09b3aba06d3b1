//! Writes a server log the way the server does (`SledStore` under `LocalLog`, events encoded
//! by `TypedLog<ServerEvent>`, snapshots of the `ServerState` fold as the journal stores
//! them), in virtual time, for the replay tests and the replay bench. Shared by
//! `tests/replay.rs` and `benches/replay.rs` through `#[path]`.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tessera_actors::server::events::{AttestedAgent, CaRecord, JwtKeyRecord, ServerEvent};
use tessera_actors::server::state::ServerState;
use tessera_eventlog::store::sled::SledStore;
use tessera_eventlog::{AppendCondition, EventLog, LocalLog, LogLimits, ManualClock, TypedLog};
use tessera_identity::{EntryId, RegistrationEntry, SelectorSet, SpiffeId};

/// Unix seconds the logs start at (2026-01-01T00:00:00Z).
pub const START: u64 = 1_767_225_600;

/// A log being written in virtual time.
pub struct LogWriter {
    log: Arc<LocalLog>,
    typed: TypedLog<ServerEvent>,
    pub clock: ManualClock,
    /// The fold of what was written, for snapshots and for the tests' expectations.
    pub state: ServerState,
    pub seq: u64,
}

impl LogWriter {
    /// A new log in `log_dir` (a server's `<data_dir>/log`).
    pub fn create(log_dir: &Path) -> LogWriter {
        let clock = ManualClock::at_unix_secs(START);
        let store = SledStore::open(log_dir).expect("sled store");
        let log = Arc::new(
            LocalLog::open(
                Arc::new(store),
                Arc::new(clock.clone()),
                LogLimits::default(),
            )
            .expect("open log"),
        );
        let typed = TypedLog::new(log.clone() as Arc<dyn EventLog>);
        LogWriter {
            log,
            typed,
            clock,
            state: ServerState::default(),
            seq: 0,
        }
    }

    /// Appends `events` as one batch (one commit time); the seq of the last one.
    pub async fn append(&mut self, events: Vec<ServerEvent>) -> u64 {
        let receipt = self
            .typed
            .append(&events, AppendCondition::Any)
            .await
            .expect("append");
        for e in events {
            self.state.apply_owned(e);
        }
        self.seq = receipt.last_seq;
        receipt.last_seq
    }

    /// Moves virtual time on.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Stores a snapshot of the fold at the current seq, as the server's journal does.
    pub async fn snapshot(&self) {
        let data = tessera_eventlog::typed::encode_state(&self.state).expect("encode state");
        self.log
            .save_snapshot(self.seq, data)
            .await
            .expect("save snapshot");
    }

    /// Closes the log and waits until sled has let go of its directory (its lock, taken
    /// here after every sled thread released it), so that nothing writes there afterwards.
    pub fn close(self, log_dir: &Path) {
        self.log.close();
        drop(self.typed);
        drop(self.log);
        let db = std::fs::File::open(log_dir.join("sled").join("db")).expect("sled db file");
        // Blocks (no sleep, no poll) until sled's last thread has dropped its lock.
        db.lock().expect("lock sled db");
        db.unlock().expect("unlock sled db");
    }
}

pub fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).expect("spiffe id")
}

/// Entry `n`, under agent `agent`.
pub fn entry(n: u64, agent: u64, x509_svid_ttl: Option<u32>) -> RegistrationEntry {
    RegistrationEntry {
        id: EntryId::new(&format!("entry-{n:08}")).expect("entry id"),
        spiffe_id: id(&format!("spiffe://example.org/workload/{n}")),
        parent_id: id(&format!(
            "spiffe://example.org/spire/agent/join_token/{agent}"
        )),
        selectors: SelectorSet::parse_all([format!("unix:uid:{}", 1000 + n % 50).as_str()])
            .expect("selectors"),
        x509_svid_ttl,
        jwt_svid_ttl: None,
        federates_with: vec![],
        dns_names: vec![],
        admin: false,
        downstream: false,
        hint: String::new(),
        expires_at: None,
        created_at: i64::try_from(START).unwrap_or(0),
        revision: 0,
    }
}

/// Agent `n`, attested at `at` (Unix seconds) with an SVID of one hour.
pub fn agent(n: u64, at: i64) -> AttestedAgent {
    AttestedAgent {
        id: id(&format!("spiffe://example.org/spire/agent/join_token/{n}")),
        attestation_type: "join_token".into(),
        selectors: SelectorSet::parse_all([format!("node:rack:{}", n % 8).as_str()])
            .expect("selectors"),
        svid_serial: format!("{n:032x}"),
        svid_expires_at: at + 3600,
        attested_at: at,
        can_reattest: false,
    }
}

/// CA `n`, valid `ttl` from `not_before` (the DER is a stand-in: replay never parses it).
pub fn ca(n: u64, not_before: i64, ttl: Duration) -> CaRecord {
    let der = format!("ca certificate {n}").into_bytes();
    CaRecord {
        authority_id: format!("{n:040x}"),
        cert_der: der.clone(),
        upstream_chain: vec![],
        trust_anchors: vec![der],
        not_before,
        not_after: not_before + i64::try_from(ttl.as_secs()).unwrap_or(0),
        key_ref: format!("x509-ca-{n}"),
    }
}

/// JWT key `n`, valid `ttl` from `not_before`.
pub fn jwt_key(n: u64, not_before: i64, ttl: Duration) -> JwtKeyRecord {
    JwtKeyRecord {
        kid: format!("kid-{n}"),
        public_key_der: format!("jwt key {n}").into_bytes(),
        not_before,
        not_after: not_before + i64::try_from(ttl.as_secs()).unwrap_or(0),
        key_ref: format!("jwt-key-{n}"),
    }
}

/// The current virtual time, Unix seconds.
pub fn now_secs(clock: &ManualClock) -> i64 {
    use tessera_eventlog::Clock;
    clock.now_unix_nanos() / 1_000_000_000
}
