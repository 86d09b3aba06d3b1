//! AgentCore: the agent's actor. Folds the sync stream into the cache, schedules SVID
//! rotation, asks the server to sign CSRs in batches (keys are made here, on the node, and
//! never leave it), caches JWT-SVIDs, and publishes every change to the Workload API's
//! streams through a `watch` channel.
//!
//! Supervisor: the agent process (fail-stop, like the server). Consumes [`SyncMessage`]s from
//! the sync loop; emits identity snapshots (watch) and cache images (the `persist` hook).
//!
//! Mailbox: fed by one sync loop (at the server's rate), its own timers and signing tasks,
//! and Workload API JWT requests, which are bounded by the Workload API's stream and call
//! limits.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rcgen::CertificateParams;
use tessera_eventlog::Clock;
use tessera_identity::{EntryId, SpiffeId, TrustDomain};
use tokio::sync::watch;

use crate::agent::cache::{Cache, StoredSvid};
use crate::agent::rotation::{due, RotationSettings};
use crate::agent::server_client::{ClientError, ServerClient, SignedX509, SyncMessage};
use crate::agent::view::{HeldJwtSvid, IdentitySnapshot, JwtFetchError};
use crate::clock::unix_secs;
use crate::keys::SigningKeyPair;

/// Most JWT-SVIDs cached at once; beyond it expired and then oldest ones are dropped.
pub const MAX_CACHED_JWTS: usize = 10_000;
/// A change is published at once; further changes within this window are published together
/// at its end, so a burst (10,000 entries created at once) costs one snapshot per window, not
/// one per entry.
pub const PUBLISH_WINDOW: Duration = Duration::from_millis(10);
/// The cache is written to disk at once, then at most once per this window.
pub const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// Messages of the agent core.
pub enum AgentMsg {
    /// A message from the sync stream.
    Sync(SyncMessage),
    /// Check for SVIDs due for renewal.
    Rotate,
    /// A signing round finished.
    Signed(Vec<SignedItem>),
    /// A signing round failed as a whole.
    SignFailed(ClientError),
    /// A JWT-SVID for an entry and audience.
    FetchJwt(
        EntryId,
        Vec<String>,
        RpcReplyPort<Result<HeldJwtSvid, JwtFetchError>>,
    ),
    /// A JWT-SVID was minted (from the mint task), for the cache.
    JwtMinted(JwtKey, HeldJwtSvid, i64),
    /// The cache cursor (for the sync loop's reconnects).
    Cursor(RpcReplyPort<u64>),
    /// End of a publication window: publish (and rotate) what changed during it.
    Flush,
    /// Write the cache to disk if it changed.
    Persist,
}

impl std::fmt::Debug for AgentMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentMsg::Sync(m) => write!(f, "Sync({m:?})"),
            AgentMsg::Rotate => f.write_str("Rotate"),
            AgentMsg::Signed(r) => write!(f, "Signed({} results)", r.len()),
            AgentMsg::SignFailed(e) => write!(f, "SignFailed({e})"),
            AgentMsg::FetchJwt(id, aud, _) => write!(f, "FetchJwt({id}, {aud:?})"),
            AgentMsg::JwtMinted(k, _, _) => write!(f, "JwtMinted({})", k.0),
            AgentMsg::Cursor(_) => f.write_str("Cursor"),
            AgentMsg::Flush => f.write_str("Flush"),
            AgentMsg::Persist => f.write_str("Persist"),
        }
    }
}

/// One outcome of a signing round: entry, the revision signed for, the key, the result.
pub type SignedItem = (EntryId, u64, Vec<u8>, Result<SignedX509, String>);

/// Key of the JWT cache: SPIFFE ID and audience set.
pub type JwtKey = (SpiffeId, BTreeSet<String>);

/// Persists a cache image (the agent process writes it to its data dir).
pub type PersistFn = Arc<dyn Fn(&Cache) + Send + Sync>;

/// What the core starts from.
pub struct AgentArgs {
    /// The agent's trust domain.
    pub trust_domain: TrustDomain,
    /// The cache as persisted (or empty).
    pub cache: Cache,
    /// The server.
    pub client: Arc<dyn ServerClient>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Rotation settings.
    pub rotation: RotationSettings,
    /// Called after every cache change.
    pub persist: Option<PersistFn>,
}

impl std::fmt::Debug for AgentArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentArgs")
            .field("trust_domain", &self.trust_domain)
            .finish()
    }
}

/// The core's state.
pub struct AgentState {
    args: AgentArgs,
    snapshots: watch::Sender<Arc<IdentitySnapshot>>,
    in_flight: HashSet<EntryId>,
    timer: Option<ractor::concurrency::JoinHandle<Result<(), ractor::MessagingErr<AgentMsg>>>>,
    jwts: HashMap<JwtKey, (HeldJwtSvid, i64)>,
    /// A publication window is open (a `Flush` is scheduled).
    window_open: bool,
    /// Something changed since the last publication.
    unpublished: bool,
    /// A `Persist` is scheduled.
    persist_scheduled: bool,
    /// Something changed since the last write to disk.
    unpersisted: bool,
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentState")
            .field("entries", &self.args.cache.entries.len())
            .field("in_flight", &self.in_flight.len())
            .finish()
    }
}

/// The actor.
#[derive(Debug, Default)]
pub struct AgentCore;

impl Actor for AgentCore {
    type Msg = AgentMsg;
    type State = AgentState;
    /// The agent's arguments, and where it publishes snapshots (the runtime holds the
    /// receiving side).
    type Arguments = (AgentArgs, watch::Sender<Arc<IdentitySnapshot>>);

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMsg>,
        (args, snapshots): Self::Arguments,
    ) -> Result<AgentState, ActorProcessingErr> {
        let snapshot = args.cache.snapshot(&args.trust_domain);
        snapshots.send_replace(Arc::new(snapshot));
        let _ = myself.send_message(AgentMsg::Rotate);
        Ok(AgentState {
            args,
            snapshots,
            in_flight: HashSet::new(),
            timer: None,
            jwts: HashMap::new(),
            window_open: false,
            unpublished: false,
            persist_scheduled: false,
            unpersisted: false,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<AgentMsg>,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.timer.take() {
            t.abort();
        }
        if state.unpersisted {
            state.persist();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<AgentMsg>,
        message: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentMsg::Sync(m) => {
                let cursor_before = state.args.cache.cursor;
                let changed = state.args.cache.apply(m);
                if changed {
                    state.changed(&myself);
                } else if state.args.cache.cursor != cursor_before {
                    state.mark_unpersisted(&myself);
                }
            }
            AgentMsg::Rotate => state.rotate(&myself),
            AgentMsg::Signed(results) => {
                for (id, revision, key, outcome) in results {
                    state.in_flight.remove(&id);
                    match outcome {
                        Ok(signed) => {
                            // The lifetime that counts for renewal starts at receipt: signers
                            // backdate notBefore for clock skew, which would otherwise make a
                            // short-lived SVID due for renewal the moment it arrives.
                            let now = unix_secs(state.args.clock.as_ref());
                            let not_before =
                                leaf_not_before(&signed.cert_chain).map_or(now, |nb| nb.max(now));
                            state.args.cache.store_svid(
                                id,
                                StoredSvid {
                                    cert_chain: signed.cert_chain,
                                    key_pkcs8: key,
                                    not_before,
                                    not_after: signed.not_after,
                                    entry_revision: revision,
                                },
                            );
                        }
                        Err(reason) => {
                            tracing::warn!(entry = %id, %reason, "server refused to sign an SVID")
                        }
                    }
                }
                // New SVIDs are what workloads wait for: published at once, window or not
                // (a round carries up to a batch of them, so rounds are few), then written at
                // once, so a restarted agent serves what it was serving.
                state.publish_now(&myself);
                state.persist();
            }
            AgentMsg::SignFailed(e) => {
                tracing::warn!(error = %e, "SVID signing round failed; retrying in 5 s");
                state.in_flight.clear();
                state.schedule(&myself, Duration::from_secs(5));
            }
            AgentMsg::FetchJwt(id, audience, reply) => {
                state.fetch_jwt(&myself, id, audience, reply)
            }
            AgentMsg::JwtMinted(key, jwt, refresh_at) => {
                if state.jwts.len() >= MAX_CACHED_JWTS {
                    let now = unix_secs(state.args.clock.as_ref());
                    state.jwts.retain(|_, (j, _)| j.expires_at > now);
                    if state.jwts.len() >= MAX_CACHED_JWTS {
                        state.jwts.clear();
                    }
                }
                state.jwts.insert(key, (jwt, refresh_at));
            }
            AgentMsg::Cursor(reply) => {
                let _ = reply.send(state.args.cache.cursor);
            }
            AgentMsg::Flush => {
                state.window_open = false;
                if state.unpublished {
                    state.changed(&myself);
                }
            }
            AgentMsg::Persist => {
                state.persist_scheduled = false;
                if state.unpersisted {
                    state.mark_unpersisted(&myself);
                }
            }
        }
        Ok(())
    }
}

fn leaf_not_before(chain: &[Vec<u8>]) -> Option<i64> {
    use x509_parser::prelude::FromDer;
    let leaf = chain.first()?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf).ok()?;
    Some(cert.validity().not_before.timestamp())
}

impl AgentState {
    /// Something workloads can see changed: publish now and open a window, or, inside an open
    /// window, leave it to the window's end. Rotation is checked with each publication.
    fn changed(&mut self, myself: &ActorRef<AgentMsg>) {
        self.mark_unpersisted(myself);
        if self.window_open {
            self.unpublished = true;
            // New entries get their SVIDs signed without waiting for the window's end.
            self.rotate(myself);
            return;
        }
        self.publish_now(myself);
        self.window_open = true;
        // The timer task ends on its own; its handle is not needed.
        drop(myself.send_after(PUBLISH_WINDOW, || AgentMsg::Flush));
    }

    /// Publishes the current snapshot and checks rotation.
    fn publish_now(&mut self, myself: &ActorRef<AgentMsg>) {
        self.unpublished = false;
        let snapshot = self.args.cache.snapshot(&self.args.trust_domain);
        self.snapshots.send_replace(Arc::new(snapshot));
        self.rotate(myself);
    }

    /// The cache changed: write it now and open a window, or, inside an open window, leave
    /// it to the window's end (so a burst costs one write per window, and a lone change is on
    /// disk at once, even if the agent is killed right after).
    fn mark_unpersisted(&mut self, myself: &ActorRef<AgentMsg>) {
        if self.persist_scheduled {
            self.unpersisted = true;
            return;
        }
        self.persist();
        self.persist_scheduled = true;
        drop(myself.send_after(PERSIST_EVERY, || AgentMsg::Persist));
    }

    fn persist(&mut self) {
        self.unpersisted = false;
        if let Some(persist) = &self.args.persist {
            persist(&self.args.cache);
        }
    }

    fn schedule(&mut self, myself: &ActorRef<AgentMsg>, after: Duration) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
        self.timer = Some(myself.send_after(after, || AgentMsg::Rotate));
    }

    /// Starts a signing round for what is due (one round at a time), and schedules the next
    /// check.
    fn rotate(&mut self, myself: &ActorRef<AgentMsg>) {
        // One round at a time; the round's end checks again. This keeps a burst of changes
        // from scanning every entry once per change.
        if !self.in_flight.is_empty() {
            return;
        }
        let now = unix_secs(self.args.clock.as_ref());
        let (due_now, next) = due(&self.args.cache, now, &self.args.rotation);
        if let Some(next) = next {
            self.schedule(
                myself,
                Duration::from_secs(u64::try_from(next - now).unwrap_or(0).max(1)),
            );
        }
        let batch: Vec<(EntryId, u64)> = due_now
            .into_iter()
            .take(self.args.rotation.batch.max(1))
            .filter_map(|id| self.args.cache.entries.get(&id).map(|e| (id, e.revision)))
            .collect();
        if batch.is_empty() {
            return;
        }
        self.in_flight
            .extend(batch.iter().map(|(id, _)| id.clone()));
        let client = self.args.client.clone();
        let me = myself.clone();
        let key_type = self.args.rotation.key_type;
        tokio::spawn(async move {
            // Key generation is CPU work: off the runtime's worker threads.
            let prepared = tokio::task::spawn_blocking(move || {
                batch
                    .into_iter()
                    .filter_map(|(id, revision)| {
                        let key = SigningKeyPair::generate(key_type).ok()?;
                        let csr = CertificateParams::new(Vec::<String>::new())
                            .ok()?
                            .serialize_request(&key)
                            .ok()?;
                        Some((id, revision, key.pkcs8_der().to_vec(), csr.der().to_vec()))
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let requests = prepared
                .iter()
                .map(|(id, _, _, csr)| (id.clone(), csr.clone()))
                .collect();
            match client.sign_x509(requests).await {
                Ok(outcomes) => {
                    let results = prepared
                        .into_iter()
                        .zip(outcomes)
                        .map(|((id, revision, key, _), outcome)| (id, revision, key, outcome))
                        .collect();
                    let _ = me.send_message(AgentMsg::Signed(results));
                }
                Err(e) => {
                    let _ = me.send_message(AgentMsg::SignFailed(e));
                }
            }
        });
    }

    fn fetch_jwt(
        &mut self,
        myself: &ActorRef<AgentMsg>,
        id: EntryId,
        audience: Vec<String>,
        reply: RpcReplyPort<Result<HeldJwtSvid, JwtFetchError>>,
    ) {
        let Some(entry) = self
            .args
            .cache
            .entries
            .get(&id)
            .filter(|e| !e.is_node_alias())
        else {
            let _ = reply.send(Err(JwtFetchError::UnknownEntry(id.as_str().to_owned())));
            return;
        };
        let key: JwtKey = (entry.spiffe_id.clone(), audience.iter().cloned().collect());
        let now = unix_secs(self.args.clock.as_ref());
        if let Some((jwt, refresh_at)) = self.jwts.get(&key) {
            if now < *refresh_at {
                let _ = reply.send(Ok(jwt.clone()));
                return;
            }
        }
        let client = self.args.client.clone();
        let me = myself.clone();
        let (spiffe_id, hint) = (entry.spiffe_id.clone(), entry.hint.clone());
        tokio::spawn(async move {
            let outcome = client.mint_jwt(id, audience).await;
            let answer = match outcome {
                Ok(minted) => {
                    let jwt = HeldJwtSvid {
                        token: minted.token,
                        spiffe_id,
                        expires_at: minted.expires_at,
                        hint,
                    };
                    let refresh_at = minted.issued_at + (minted.expires_at - minted.issued_at) / 2;
                    let _ = me.send_message(AgentMsg::JwtMinted(key, jwt.clone(), refresh_at));
                    Ok(jwt)
                }
                Err(ClientError::Rejected(m)) => Err(JwtFetchError::Invalid(m)),
                Err(e) => Err(JwtFetchError::Unavailable(e.to_string())),
            };
            let _ = reply.send(answer);
        });
    }
}
