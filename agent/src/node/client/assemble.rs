//! The sync stream as it comes off the wire, assembled: snapshot chunks (their order and
//! counts checked) become one [`SyncMessage::Snapshot`]; a malformed stream ends with an
//! error, so the agent reconnects.

use futures::StreamExt;
use tessera_actors::agent::server_client::{ClientError, SyncMessage};
use tessera_identity::{Bundle, EntryId, TrustDomain};
use tessera_proto::tessera::agent::v1::sync_response::Event;

use super::client_error;
use crate::node::convert::{bundle_from_proto, entry_from_proto};

/// Turns the wire stream into [`SyncMessage`]s, assembling snapshot chunks (checking their
/// order and counts) into one message.
pub(super) fn assemble(
    stream: tonic::Streaming<tessera_proto::tessera::agent::v1::SyncResponse>,
) -> impl futures::Stream<Item = Result<SyncMessage, ClientError>> + Send + 'static {
    struct Pending {
        seq: u64,
        entry_count: u64,
        next_chunk: u32,
        entries: Vec<tessera_identity::RegistrationEntry>,
        bundles: Vec<Bundle>,
    }
    futures::stream::unfold(
        (stream, None::<Pending>, false),
        |(mut stream, mut pending, done)| async move {
            if done {
                return None;
            }
            loop {
                let item = match stream.next().await {
                    None => return None,
                    Some(Err(status)) => {
                        return Some((Err(client_error(status)), (stream, None, true)))
                    }
                    Some(Ok(m)) => m,
                };
                let malformed = |why: &str| {
                    Err(ClientError::Unavailable(format!(
                        "malformed sync stream: {why}; reconnecting"
                    )))
                };
                let Some(event) = item.event else { continue };
                let out = match event {
                    Event::SnapshotBegin(b) => {
                        pending = Some(Pending {
                            seq: b.seq,
                            entry_count: b.entry_count,
                            next_chunk: 0,
                            entries: Vec::with_capacity(b.entry_count.min(1_000_000) as usize),
                            bundles: Vec::new(),
                        });
                        continue;
                    }
                    Event::SnapshotChunk(c) => {
                        let Some(p) = pending.as_mut().filter(|p| p.next_chunk == c.index) else {
                            return Some((
                                malformed("snapshot chunk out of order"),
                                (stream, None, true),
                            ));
                        };
                        p.next_chunk += 1;
                        for e in c.entries {
                            match entry_from_proto(&e) {
                                Ok(e) => p.entries.push(e),
                                Err(why) => {
                                    tracing::warn!(%why, "skipping an entry the agent cannot parse")
                                }
                            }
                        }
                        for b in c.bundles {
                            if let Ok(b) = bundle_from_proto(&b) {
                                p.bundles.push(b);
                            }
                        }
                        continue;
                    }
                    Event::SnapshotEnd(end) => {
                        let Some(p) = pending
                            .take()
                            .filter(|p| p.seq == end.seq && p.next_chunk == end.chunk_count)
                        else {
                            return Some((
                                malformed("snapshot end does not match its begin"),
                                (stream, None, true),
                            ));
                        };
                        if p.entries.len() as u64 != p.entry_count {
                            tracing::warn!(
                                expected = p.entry_count,
                                got = p.entries.len(),
                                "snapshot entry count differs"
                            );
                        }
                        SyncMessage::Snapshot {
                            seq: p.seq,
                            entries: p.entries,
                            bundles: p.bundles,
                        }
                    }
                    Event::Resumed(r) => SyncMessage::Resumed { cursor: r.cursor },
                    Event::Checkpoint(c) => SyncMessage::Checkpoint { seq: c.seq },
                    Event::EntryUpserted(u) => match u.entry.as_ref().map(entry_from_proto) {
                        Some(Ok(entry)) => SyncMessage::Upsert { seq: u.seq, entry },
                        _ => continue,
                    },
                    Event::EntryRemoved(r) => match EntryId::new(&r.entry_id) {
                        Ok(id) => SyncMessage::Remove { seq: r.seq, id },
                        Err(_) => continue,
                    },
                    Event::BundleUpdated(b) => match b.bundle.as_ref().map(bundle_from_proto) {
                        Some(Ok(bundle)) => SyncMessage::BundleUpdated { seq: b.seq, bundle },
                        _ => continue,
                    },
                    Event::BundleRemoved(r) => match TrustDomain::new(&r.trust_domain) {
                        Ok(trust_domain) => SyncMessage::BundleRemoved {
                            seq: r.seq,
                            trust_domain,
                        },
                        Err(_) => continue,
                    },
                };
                return Some((Ok(out), (stream, pending, false)));
            }
        },
    )
}
