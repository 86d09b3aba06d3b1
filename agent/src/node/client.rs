//! The gRPC [`ServerClient`]: the agent API over mTLS with the agent's SVID. The channel is
//! rebuilt when the SVID is renewed, so new calls present the current one.

use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tessera_actors::agent::server_client::{
    ClientError, MintedJwt, Refusal, ServerClient, SignedX509, SyncMessage,
};
use tessera_identity::{Bundle, EntryId, TrustDomain};
use tessera_proto::tessera::agent::v1::agent_server_client::AgentServerClient;
use tessera_proto::tessera::agent::v1::{
    sync_response::Event, BatchSignX509SvidRequest, MintJwtSvidRequest, RenewAgentRequest,
    SignX509SvidParams, SyncRequest, AGENT_BANNED, AGENT_REFUSAL_KEY,
};
use tonic::transport::Channel;
use tonic::Code;

use super::convert::{bundle_from_proto, entry_from_proto};
use super::tls::{channel, ClientIdentity, ServerTrust};

/// Largest sync message the agent decodes.
pub const MAX_SYNC_MESSAGE_BYTES: u32 = 4 * 1024 * 1024;

/// The agent's connection to the server.
#[derive(Debug)]
pub struct GrpcClient {
    host: String,
    port: u16,
    trust_domain: TrustDomain,
    trust: Arc<ServerTrust>,
    channel: RwLock<Channel>,
}

/// The refusal a status carries: its message, and the server's ban mark (metadata
/// [`AGENT_REFUSAL_KEY`] = [`AGENT_BANNED`]), never inferred from the wording.
pub fn refusal(status: &tonic::Status) -> Refusal {
    let banned = status
        .metadata()
        .get(AGENT_REFUSAL_KEY)
        .is_some_and(|v| v.as_bytes() == AGENT_BANNED.as_bytes());
    Refusal {
        message: status.message().to_owned(),
        banned,
    }
}

/// Maps a gRPC status to what the agent does about it.
pub fn client_error(status: tonic::Status) -> ClientError {
    match status.code() {
        Code::PermissionDenied | Code::Unauthenticated => ClientError::Refused(refusal(&status)),
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented => ClientError::Rejected(status.message().to_owned()),
        _ => ClientError::Unavailable(format!("{:?}: {}", status.code(), status.message())),
    }
}

impl GrpcClient {
    /// A client presenting `identity`.
    pub fn new(
        host: String,
        port: u16,
        trust_domain: TrustDomain,
        trust: Arc<ServerTrust>,
        identity: &ClientIdentity,
    ) -> Result<Self, String> {
        let ch = channel(
            &host,
            port,
            trust.clone(),
            trust_domain.clone(),
            Some(identity),
        )?;
        Ok(Self {
            host,
            port,
            trust_domain,
            trust,
            channel: RwLock::new(ch),
        })
    }

    fn client(&self) -> AgentServerClient<Channel> {
        let ch = self
            .channel
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        AgentServerClient::new(ch).max_decoding_message_size(MAX_SYNC_MESSAGE_BYTES as usize)
    }

    /// Presents `identity` from now on.
    pub fn set_identity(&self, identity: &ClientIdentity) -> Result<(), String> {
        let ch = channel(
            &self.host,
            self.port,
            self.trust.clone(),
            self.trust_domain.clone(),
            Some(identity),
        )?;
        *self
            .channel
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = ch;
        Ok(())
    }

    /// What the server is trusted by (for attesting again over a plain TLS channel).
    pub fn trust(&self) -> Arc<ServerTrust> {
        self.trust.clone()
    }

    /// Trusts the server by `bundle` from now on.
    pub fn set_bundle(&self, bundle: Bundle) {
        self.trust.set_bundle(bundle);
    }

    /// Renews the agent SVID for the key in `csr`.
    pub async fn renew(&self, csr: Vec<u8>) -> Result<(Vec<Vec<u8>>, i64), ClientError> {
        let svid = self
            .client()
            .renew_agent(RenewAgentRequest { csr })
            .await
            .map_err(client_error)?
            .into_inner()
            .svid
            .ok_or_else(|| ClientError::Rejected("RenewAgent answered without an SVID".into()))?;
        Ok((svid.cert_chain, svid.expires_at))
    }
}

impl ServerClient for GrpcClient {
    fn sync(
        &self,
        cursor: u64,
    ) -> BoxFuture<'_, Result<BoxStream<'static, Result<SyncMessage, ClientError>>, ClientError>>
    {
        async move {
            let stream = self
                .client()
                .sync_events(SyncRequest {
                    cursor,
                    max_message_bytes: MAX_SYNC_MESSAGE_BYTES,
                })
                .await
                .map_err(client_error)?
                .into_inner();
            Ok(assemble(stream).boxed())
        }
        .boxed()
    }

    fn sign_x509(
        &self,
        requests: Vec<(EntryId, Vec<u8>)>,
    ) -> BoxFuture<'_, Result<Vec<Result<SignedX509, String>>, ClientError>> {
        async move {
            let params = requests
                .into_iter()
                .map(|(id, csr)| SignX509SvidParams {
                    entry_id: id.as_str().to_owned(),
                    csr,
                })
                .collect();
            let results = self
                .client()
                .batch_sign_x509_svid(BatchSignX509SvidRequest { params })
                .await
                .map_err(client_error)?
                .into_inner()
                .results;
            Ok(results
                .into_iter()
                .map(|r| match (r.status, r.svid) {
                    (Some(s), Some(svid)) if s.code == 0 => Ok(SignedX509 {
                        cert_chain: svid.cert_chain,
                        not_after: svid.expires_at,
                    }),
                    (Some(s), _) => Err(format!("{:?}: {}", Code::from_i32(s.code), s.message)),
                    _ => Err("no status".into()),
                })
                .collect())
        }
        .boxed()
    }

    fn mint_jwt(
        &self,
        entry: EntryId,
        audience: Vec<String>,
    ) -> BoxFuture<'_, Result<MintedJwt, ClientError>> {
        async move {
            let svid = self
                .client()
                .mint_jwt_svid(MintJwtSvidRequest {
                    entry_id: entry.as_str().to_owned(),
                    audience,
                    ttl: 0,
                })
                .await
                .map_err(client_error)?
                .into_inner()
                .svid
                .ok_or_else(|| {
                    ClientError::Rejected("MintJwtSvid answered without an SVID".into())
                })?;
            Ok(MintedJwt {
                token: svid.token,
                expires_at: svid.expires_at,
                issued_at: svid.issued_at,
            })
        }
        .boxed()
    }
}

/// Turns the wire stream into [`SyncMessage`]s, assembling snapshot chunks (checking their
/// order and counts) into one message.
fn assemble(
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
