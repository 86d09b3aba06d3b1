//! Tessera's append-only, hash-chained event log.
//!
//! Owns: the record envelope and its stored encoding ([`record`]), the hash chain and its
//! verification, durability with group commit ([`LocalLog`]), gap-free subscriptions,
//! snapshots, the storage backends (sled by default, memory for tests and simulation), typed
//! events with versioned payloads ([`typed`]), the export format, and the [`Clock`].
//!
//! Must not: know anything of SPIFFE, entries, agents or keys (it is generic over the event
//! type), hold secrets (callers never put private keys or tokens in events), or read the wall
//! clock except through [`SystemClock`].
//!
//! ```text
//!   TypedLog<E> ── encode/decode (serde + bincode 2, schema version, upcast)
//!        │
//!   dyn EventLog ── append / read / subscribe / head / verify / snapshots
//!        │
//!   LocalLog ── writer thread, group commit, head watch
//!        │
//!   dyn Store ── SledStore (default) | MemoryStore
//! ```
//!
//! [`PgLog`] is the other `EventLog`: the log in PostgreSQL, shared by several servers
//! (optimistic appends on the head, LISTEN/NOTIFY followers; see [`pg`]).

pub(crate) mod chain;
pub mod clock;
pub mod error;
pub mod export;
pub mod local;
pub mod log;
pub mod metrics;
pub mod pg;
pub mod record;
pub mod snapshot;
pub mod store;
pub mod typed;

use std::sync::Arc;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{ChainFault, DecodeError, LogError};
pub use local::{LocalLog, LogLimits, OpenCheck};
pub use log::{
    AppendCondition, AppendReceipt, BadRecord, EventLog, Head, Subscription, VerifyReport,
};
pub use pg::{PgConfig, PgLog, PgStats};
pub use record::{Digest32, NewRecord, Record};
pub use snapshot::{Snapshot, SnapshotStream};
pub use typed::{CodecError, Event, TypedError, TypedLog};

/// Verifies a sequence of records (e.g. read from an export) as a chain starting at seq 1.
pub fn verify_records(records: &[Record]) -> VerifyReport {
    let store = store::memory::MemoryStore::new("export");
    // Writing to a memory store cannot fail.
    let _ = store::Store::write(&store, records);
    match chain::walk(&store) {
        Ok(report) => report,
        Err(_) => VerifyReport {
            records_checked: 0,
            head: Head::EMPTY,
            fault: None,
        },
    }
}

/// A shared handle to any log.
pub type SharedLog = Arc<dyn EventLog>;
