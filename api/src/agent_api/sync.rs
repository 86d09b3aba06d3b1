//! `SyncEvents`: the agent's view as a snapshot in size-bounded chunks, or `Resumed` and the
//! changes it missed when the hub still holds every change after its cursor; then each change
//! as it commits, with checkpoints the agent may persist as its cursor.
//!
//! Bundles: the trust domain's own (from the authority's watch) and every federated bundle
//! the server holds (from the federation aggregate's view), in the snapshot, again after a
//! resumption, and as `BundleUpdated`/`BundleRemoved` when they change. Every agent gets every
//! federated bundle: bundles are public trust material, and the agent hands a workload only
//! those its entries federate with (`federates_with`). A federated bundle deleted after an
//! agent's cursor makes the hub answer with a snapshot, which replaces the agent's bundles.
//!
//! A stream ends on its own when its connection reaches `limits.agent_connection_max_age`
//! (`Unavailable`: the agent reconnects and resumes from its cursor) or when the agent SVID
//! of the connection expires (`Unauthenticated`), so neither outlives its checks. It holds the
//! agent's place among `limits.max_sync_streams_per_agent` while it runs.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use prost::Message;
use tessera_actors::server::federation::FederationView;
use tessera_actors::server::sync::ViewChange;
use tessera_actors::server::sync_hub::{SyncSnapshot, SyncStart, SyncUpdate};
use tessera_eventlog::Clock;
use tessera_identity::{Bundle, SpiffeId, TrustDomain};
use tessera_proto::spire::api::types;
use tessera_proto::tessera::agent::v1::{
    sync_response::Event, BundleRemoved, BundleUpdated, Checkpoint, EntryRemoved, EntryUpserted,
    Resumed, SnapshotBegin, SnapshotChunk, SnapshotEnd, SyncRequest, SyncResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::limits::Slot;
use super::tls::AgentPeer;
use super::{convert, AgentApiDeps};

/// When a stream must end, from its connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ends {
    max_age_at: Option<tokio::time::Instant>,
    svid_expires_in: Option<Duration>,
}

impl Ends {
    /// The ends of a stream on `peer`'s connection, at `clock`'s time.
    pub fn of(peer: &AgentPeer, clock: &dyn Clock) -> Self {
        let svid_expires_in = peer.not_after.map(|not_after| {
            let left = not_after
                .saturating_mul(1_000_000_000)
                .saturating_sub(clock.now_unix_nanos());
            Duration::from_nanos(u64::try_from(left).unwrap_or(0))
        });
        Self {
            max_age_at: peer.max_age_at,
            svid_expires_in,
        }
    }
}

/// Resolves with the status that ends the stream.
async fn end(ends: Ends, agent: &SpiffeId) -> Status {
    let age = async {
        match ends.max_age_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    let expiry = async {
        match ends.svid_expires_in {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = age => Status::unavailable(format!(
            "the connection of {agent} reached its maximum age (limits.agent_connection_max_age); reconnect and resume from your cursor"
        )),
        () = expiry => Status::unauthenticated(format!(
            "the agent SVID of this connection ({agent}) expired; reconnect with a renewed SVID, or attest again"
        )),
    }
}

type Tx = mpsc::Sender<Result<SyncResponse, Status>>;

fn msg(event: Event) -> Result<SyncResponse, Status> {
    Ok(SyncResponse { event: Some(event) })
}

/// The stream for one agent.
pub fn stream(
    deps: AgentApiDeps,
    agent: SpiffeId,
    request: SyncRequest,
    start: SyncStart,
    updates: mpsc::Receiver<SyncUpdate>,
    slot: Slot<SpiffeId>,
    ends: Ends,
) -> Pin<Box<dyn Stream<Item = Result<SyncResponse, Status>> + Send>> {
    let (tx, rx) = mpsc::channel(16);
    let server_max = deps.settings.max_sync_message_bytes;
    let max_bytes = match request.max_message_bytes as usize {
        0 => server_max,
        n => n.min(server_max),
    }
    // Room for the envelope of a chunk around its entries.
    .saturating_sub(1024)
    .max(16 * 1024);
    tokio::spawn(async move {
        let _slot = slot;
        let end = {
            let agent = agent.clone();
            async move { end(ends, &agent).await }
        };
        let tx_end = tx.clone();
        tokio::select! {
            () = run(deps, agent, start, updates, tx, max_bytes) => {}
            status = end => {
                let _ = tx_end.send(Err(status)).await;
            }
            // The agent went away: free its place at once, not at the next send.
            () = tx_end.closed() => {}
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

async fn run(
    deps: AgentApiDeps,
    agent: SpiffeId,
    start: SyncStart,
    mut updates: mpsc::Receiver<SyncUpdate>,
    tx: Tx,
    max_bytes: usize,
) {
    {
        // Bundle changes come straight from the authority's watch (the authority publishes
        // a bundle only once it has applied the event), not from the hub's fold of the log.
        let mut bundles = deps.authority.subscribe_bundle();
        bundles.borrow_and_update();
        // Federated bundles: what this stream has sent, to send only what changes.
        let mut federation = deps.server.federation.subscribe();
        let mut federated: Federated = federation.borrow_and_update().clone();
        let mut seq = match start {
            SyncStart::Snapshot(snapshot) => {
                if send_snapshot(&deps, &tx, &snapshot, &federated, max_bytes)
                    .await
                    .is_err()
                {
                    return;
                }
                snapshot.seq
            }
            SyncStart::Resume { cursor, missed } => {
                match send_resumed(&deps, &tx, cursor, &federated, missed, max_bytes).await {
                    Ok(seq) => seq,
                    Err(()) => return,
                }
            }
        };
        // The seq this stream has delivered, for the sync-lag metrics; unregisters on return.
        let cursor = deps.server.sync_cursors.open(agent.clone(), seq);
        loop {
            tokio::select! {
                update = updates.recv() => {
                    let Some(update) = update else { break };
                    seq = update.seq;
                    if send_update(&tx, update).await.is_err() {
                        return;
                    }
                    cursor.advance(seq);
                }
                changed = bundles.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let bundle = bundles.borrow_and_update().clone();
                    if let Some(bundle) = bundle {
                        let event = Event::BundleUpdated(BundleUpdated { seq, bundle: Some(convert::bundle(&bundle)) });
                        if tx.send(msg(event)).await.is_err() {
                            return;
                        }
                    }
                }
                changed = federation.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let now: Federated = federation.borrow_and_update().clone();
                    if send_federated_changes(&tx, seq, &federated.bundles, &now.bundles, max_bytes).await.is_err() {
                        return;
                    }
                    federated = now;
                }
            }
        }
        // The hub dropped this stream (it fell too far behind, or the agent lost its view):
        // the agent reconnects with its cursor and gets a fresh snapshot.
        let _ = tx
            .send(Err(Status::unavailable(format!(
                "sync stream of {agent} ended by the server; reconnect with your cursor"
            ))))
            .await;
    }
}

/// `Resumed`, the current bundle (it may have rotated meanwhile), then the missed changes;
/// returns the seq reached.
async fn send_resumed(
    deps: &AgentApiDeps,
    tx: &Tx,
    cursor: u64,
    federated: &Federated,
    missed: Vec<SyncUpdate>,
    max_bytes: usize,
) -> Result<u64, ()> {
    tx.send(msg(Event::Resumed(Resumed { cursor })))
        .await
        .map_err(|_| ())?;
    let own = deps.authority.bundle();
    let federated_bundles = federated.bundles.values().map(Arc::as_ref);
    for bundle in own.iter().chain(federated_bundles) {
        if let Some(bundle) = sendable(bundle, max_bytes) {
            let event = Event::BundleUpdated(BundleUpdated {
                seq: cursor,
                bundle: Some(bundle),
            });
            tx.send(msg(event)).await.map_err(|_| ())?;
        }
    }
    let mut seq = cursor;
    for update in missed {
        seq = update.seq;
        send_update(tx, update).await?;
    }
    Ok(seq)
}

async fn send_snapshot(
    deps: &AgentApiDeps,
    tx: &Tx,
    snapshot: &SyncSnapshot,
    federated: &Federated,
    max_bytes: usize,
) -> Result<(), ()> {
    let own = deps.authority.bundle();
    let bundles: Vec<types::Bundle> = own
        .iter()
        .chain(federated.bundles.values().map(Arc::as_ref))
        .filter_map(|b| sendable(b, max_bytes))
        .collect();
    tx.send(msg(Event::SnapshotBegin(SnapshotBegin {
        seq: snapshot.seq,
        entry_count: snapshot.entries.len() as u64,
        bundle_count: bundles.len() as u64,
    })))
    .await
    .map_err(|_| ())?;
    // Bundles, then entries, in chunks of at most `max_bytes` (a federated bundle may be
    // megabytes: they are spread over chunks like entries, never packed into one message the
    // agent would refuse).
    let mut chunks = Chunker::new(max_bytes);
    for bundle in bundles {
        if let Some(full) = chunks.room_for(bundle.encoded_len() + 8) {
            tx.send(msg(Event::SnapshotChunk(full)))
                .await
                .map_err(|_| ())?;
        }
        chunks.chunk.bundles.push(bundle);
    }
    for e in &snapshot.entries {
        let entry = crate::convert::entry_to_proto(e, None);
        if let Some(full) = chunks.room_for(entry.encoded_len() + 8) {
            tx.send(msg(Event::SnapshotChunk(full)))
                .await
                .map_err(|_| ())?;
        }
        chunks.chunk.entries.push(entry);
    }
    let index = chunks.chunk.index;
    tx.send(msg(Event::SnapshotChunk(chunks.chunk)))
        .await
        .map_err(|_| ())?;
    tx.send(msg(Event::SnapshotEnd(SnapshotEnd {
        seq: snapshot.seq,
        chunk_count: index + 1,
    })))
    .await
    .map_err(|_| ())
}

/// The bundle on the wire, if it fits in one message of the stream's budget. One that does not
/// would make the agent refuse the message and reconnect, forever, and take every other
/// change down with it: it is left out (the agent keeps what it had) and logged.
fn sendable(bundle: &Bundle, max_bytes: usize) -> Option<types::Bundle> {
    let wire = convert::bundle(bundle);
    let len = wire.encoded_len();
    if len + 64 > max_bytes {
        tracing::warn!(
            trust_domain = %bundle.trust_domain(),
            bytes = len,
            max_bytes,
            "bundle too large for an agent's sync message: not sent; lower limits.federation.max_bundle_bytes or remove authorities from the bundle"
        );
        return None;
    }
    Some(wire)
}

/// Fills snapshot chunks in order up to a byte budget.
struct Chunker {
    chunk: SnapshotChunk,
    size: usize,
    max_bytes: usize,
}

impl Chunker {
    fn new(max_bytes: usize) -> Self {
        Self {
            chunk: SnapshotChunk::default(),
            size: 0,
            max_bytes,
        }
    }

    /// Makes room for an item of `len` bytes: the full chunk to send first, if any (an item
    /// larger than the budget goes alone in a chunk of its own).
    fn room_for(&mut self, len: usize) -> Option<SnapshotChunk> {
        let empty = self.chunk.entries.is_empty() && self.chunk.bundles.is_empty();
        let full = (self.size + len > self.max_bytes && !empty).then(|| {
            let next = SnapshotChunk {
                index: self.chunk.index + 1,
                ..SnapshotChunk::default()
            };
            self.size = 0;
            std::mem::replace(&mut self.chunk, next)
        });
        self.size += len;
        full
    }
}

/// The federation view a stream last sent (shared with the aggregate, not copied).
type Federated = Arc<FederationView>;

/// `BundleUpdated` for each federated bundle new or changed since `before`, `BundleRemoved`
/// for each gone.
async fn send_federated_changes(
    tx: &Tx,
    seq: u64,
    before: &BTreeMap<TrustDomain, Arc<Bundle>>,
    now: &BTreeMap<TrustDomain, Arc<Bundle>>,
    max_bytes: usize,
) -> Result<(), ()> {
    for (td, bundle) in now {
        if before.get(td) == Some(bundle) {
            continue;
        }
        if let Some(bundle) = sendable(bundle, max_bytes) {
            let event = Event::BundleUpdated(BundleUpdated {
                seq,
                bundle: Some(bundle),
            });
            tx.send(msg(event)).await.map_err(|_| ())?;
        }
    }
    for td in before.keys().filter(|td| !now.contains_key(*td)) {
        let event = Event::BundleRemoved(BundleRemoved {
            seq,
            trust_domain: td.to_string(),
        });
        tx.send(msg(event)).await.map_err(|_| ())?;
    }
    Ok(())
}

async fn send_update(tx: &Tx, update: SyncUpdate) -> Result<(), ()> {
    let seq = update.seq;
    for change in update.changes {
        let event = match change {
            ViewChange::Upsert(e) => Event::EntryUpserted(EntryUpserted {
                seq,
                entry: Some(crate::convert::entry_to_proto(&e, None)),
            }),
            ViewChange::Remove(id) => Event::EntryRemoved(EntryRemoved {
                seq,
                entry_id: id.as_str().to_owned(),
            }),
        };
        tx.send(msg(event)).await.map_err(|_| ())?;
    }
    tx.send(msg(Event::Checkpoint(Checkpoint { seq })))
        .await
        .map_err(|_| ())
}
