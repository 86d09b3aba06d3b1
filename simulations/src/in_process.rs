//! A [`ServerClient`] that calls a [`Server`] in the same process: the fixture for end-to-end
//! tests of the agent logic without sockets (`tests/agent_runtime.rs`). It goes through the
//! same domain operations (`server::agent_ops`) and SyncHub as the gRPC agent API.
//!
//! It lives here, not in `tessera-actors`, because no process needs it: library code carries
//! only what a binary runs.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tessera_identity::{EntryId, SpiffeId};
use tokio::sync::mpsc;

use tessera_actors::agent::server_client::{
    ClientError, MintedJwt, Refusal, ServerClient, SignedX509, SyncMessage,
};
use tessera_actors::server::agent_ops::{mint_jwt_for_agent, sign_x509_for_agent, OpsError};
use tessera_actors::server::supervisor::Server;
use tessera_actors::server::sync::ViewChange;
use tessera_actors::server::sync_hub::{SyncStart, SyncUpdate};

/// An attested agent's in-process connection to a server.
#[derive(Clone, Debug)]
pub struct InProcessClient {
    server: Server,
    agent: SpiffeId,
    max_batch: usize,
}

impl InProcessClient {
    /// A client acting as `agent` (which must be attested on `server`).
    pub fn new(server: Server, agent: SpiffeId) -> Self {
        Self {
            server,
            agent,
            max_batch: 1_000,
        }
    }
}

fn client_error(e: OpsError) -> ClientError {
    match e {
        OpsError::Overloaded(m) | OpsError::Unavailable(m) => ClientError::Unavailable(m),
        OpsError::Invalid(m) => ClientError::Rejected(m),
        OpsError::Denied(m) => ClientError::Refused(Refusal::new(m)),
    }
}

/// An update as the messages a remote server would send: its changes, then a checkpoint.
fn messages(update: SyncUpdate) -> Vec<SyncMessage> {
    let seq = update.seq;
    let mut out: Vec<SyncMessage> = update
        .changes
        .into_iter()
        .map(|change| match change {
            ViewChange::Upsert(entry) => SyncMessage::Upsert { seq, entry },
            ViewChange::Remove(id) => SyncMessage::Remove { seq, id },
        })
        .collect();
    out.push(SyncMessage::Checkpoint { seq });
    out
}

impl ServerClient for InProcessClient {
    fn sync(
        &self,
        cursor: u64,
    ) -> BoxFuture<'_, Result<BoxStream<'static, Result<SyncMessage, ClientError>>, ClientError>>
    {
        async move {
            let (start, mut updates) = self
                .server
                .sync
                .connect_from(self.agent.clone(), cursor)
                .await
                .map_err(|e| ClientError::Unavailable(e.to_string()))?;
            let authority = self.server.authority.clone();
            let (tx, rx) = mpsc::channel(64);
            tokio::spawn(async move {
                let mut bundles = authority.subscribe_bundle();
                bundles.borrow_and_update();
                let (first, missed, mut seq) = match start {
                    SyncStart::Snapshot(snapshot) => (
                        vec![SyncMessage::Snapshot {
                            seq: snapshot.seq,
                            entries: snapshot.entries,
                            bundles: authority.bundle().into_iter().collect(),
                        }],
                        Vec::new(),
                        snapshot.seq,
                    ),
                    SyncStart::Resume { cursor, missed } => {
                        let mut first = vec![SyncMessage::Resumed { cursor }];
                        first.extend(authority.bundle().map(|bundle| SyncMessage::BundleUpdated { seq: cursor, bundle }));
                        (first, missed, cursor)
                    }
                };
                for m in first.into_iter().chain(missed.into_iter().flat_map(|update| {
                    seq = update.seq;
                    messages(update)
                })) {
                    if tx.send(Ok(m)).await.is_err() {
                        return;
                    }
                }
                loop {
                    tokio::select! {
                        update = updates.recv() => {
                            let Some(update) = update else {
                                let _ = tx.send(Err(ClientError::Unavailable("sync stream dropped by the server".into()))).await;
                                return;
                            };
                            seq = update.seq;
                            for m in messages(update) {
                                if tx.send(Ok(m)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        changed = bundles.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            let bundle = bundles.borrow_and_update().clone();
                            if let Some(bundle) = bundle {
                                if tx.send(Ok(SyncMessage::BundleUpdated { seq, bundle })).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            });
            Ok(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) }).boxed())
        }
        .boxed()
    }

    fn sign_x509(
        &self,
        requests: Vec<(EntryId, Vec<u8>)>,
    ) -> BoxFuture<'_, Result<Vec<Result<SignedX509, String>>, ClientError>> {
        async move {
            let items = requests
                .into_iter()
                .map(|(id, csr)| (id.as_str().to_owned(), csr))
                .collect();
            let outcomes = sign_x509_for_agent(&self.server, &self.agent, items, self.max_batch)
                .await
                .map_err(client_error)?;
            Ok(outcomes
                .into_iter()
                .map(|o| {
                    o.map(|(_, svid)| SignedX509 {
                        cert_chain: svid.cert_chain,
                        not_after: svid.not_after,
                    })
                    .map_err(|e| e.to_string())
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
            let (_, svid) = mint_jwt_for_agent(
                &self.server,
                &self.agent,
                entry.as_str(),
                audience,
                None::<Duration>,
                16,
            )
            .await
            .map_err(client_error)?;
            Ok(MintedJwt {
                token: svid.token,
                expires_at: svid.expires_at,
                issued_at: svid.issued_at,
            })
        }
        .boxed()
    }
}
