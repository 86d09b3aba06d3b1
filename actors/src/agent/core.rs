//! AgentCore: the agent's actor. Folds the sync stream into the cache, schedules SVID
//! rotation, asks the server to sign CSRs in batches (keys are made here, on the node, and
//! never leave it), caches JWT-SVIDs, and publishes every change to the Workload API's
//! streams through a `watch` channel.
//!
//! Supervisor: the agent process (fail-stop, like the server). Consumes [`SyncMessage`]s from
//! the sync loop; emits identity snapshots (watch) and cache images (the `persist` hook).
//!
//! Which entries hold an SVID is [`svid_cache::plan`]'s decision (SPIRE's LRU SVID cache,
//! `x509_svid_cache_max_size`): the core tracks which entries workloads use ([`AgentMsg::Use`],
//! [`AgentMsg::Release`]), signs an entry a workload asks for on demand in a round of its own
//! (not behind a bulk round), answers the caller once it is signed, and evicts what the plan
//! says.
//!
//! Forced rotation (tainted authorities) is in `forced`; signing rounds in `sign`.
//!
//! Mailbox: fed by one sync loop (at the server's rate), its own timers and signing tasks,
//! and Workload API requests (JWTs, uses), which are bounded by the Workload API's stream and
//! call limits.

mod demand;
mod forced;
mod sign;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tessera_eventlog::Clock;
use tessera_identity::{EntryId, SelectorSet, SpiffeId, TrustDomain};
use tokio::sync::watch;

use crate::agent::cache::{Cache, StoredSvid};
use crate::agent::rotation::RotationSettings;
use crate::agent::server_client::{ClientError, ServerClient, SignedX509, SyncMessage};
use crate::agent::svid_cache::{self, Usage};
use crate::agent::view::{HeldJwtSvid, IdentitySnapshot, JwtFetchError};
use crate::clock::unix_secs;

/// Most JWT-SVIDs cached at once; beyond it expired and then oldest ones are dropped.
pub const MAX_CACHED_JWTS: usize = 10_000;
/// A change is published at once; further changes within this window are published together
/// at its end, so a burst (10,000 entries created at once) costs one snapshot per window, not
/// one per entry.
pub const PUBLISH_WINDOW: Duration = Duration::from_millis(10);
/// The cache is written to disk at once, then at most once per this window.
pub const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// An entry whose signing failed (round or item) is not asked for again before this: a
/// workload holding it must not turn a refusal into a request per round trip.
pub const RETRY_FAILED_AFTER: Duration = Duration::from_secs(5);

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
    /// A JWT-SVID for an entry and audience; the span is the caller's (a Workload API call):
    /// a mint it causes runs in it, so the server's span joins the call's trace.
    FetchJwt(
        EntryId,
        Vec<String>,
        RpcReplyPort<Result<HeldJwtSvid, JwtFetchError>>,
        tracing::Span,
    ),
    /// A JWT-SVID was minted (from the mint task), for the cache.
    JwtMinted(JwtKey, HeldJwtSvid, i64),
    /// The cache cursor (for the sync loop's reconnects).
    Cursor(RpcReplyPort<u64>),
    /// End of a publication window: publish (and rotate) what changed during it.
    Flush,
    /// Write the cache to disk if it changed.
    Persist,
    /// A workload with `selectors` uses the entries it matches now; with `hold`, until
    /// [`AgentMsg::Release`] of `subscription` (an open stream). Entries without an SVID are
    /// signed on demand; the reply (the snapshot generation that holds them) comes once each
    /// is signed or its signing failed.
    Use {
        /// Chosen by the caller, unique per runtime; names the hold for `Release`.
        subscription: u64,
        /// The workload's selectors.
        selectors: SelectorSet,
        /// Keep the entries in use until released.
        hold: bool,
        /// Answered when the SVIDs are there (or will not come).
        reply: RpcReplyPort<u64>,
        /// The caller's span (a Workload API call): a signing round this use starts is its
        /// child, so one trace runs from the call to the server's signing.
        span: tracing::Span,
    },
    /// The hold of a `Use` ends (the stream closed).
    Release(u64),
    /// An on-demand signing round finished.
    SignedOnDemand(Vec<SignedItem>),
    /// An on-demand signing round failed as a whole, for these entries.
    OnDemandFailed(Vec<EntryId>, ClientError),
}

impl std::fmt::Debug for AgentMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentMsg::Sync(m) => write!(f, "Sync({m:?})"),
            AgentMsg::Rotate => f.write_str("Rotate"),
            AgentMsg::Signed(r) => write!(f, "Signed({} results)", r.len()),
            AgentMsg::SignFailed(e) => write!(f, "SignFailed({e})"),
            AgentMsg::FetchJwt(id, aud, ..) => write!(f, "FetchJwt({id}, {aud:?})"),
            AgentMsg::JwtMinted(k, _, _) => write!(f, "JwtMinted({})", k.0),
            AgentMsg::Cursor(_) => f.write_str("Cursor"),
            AgentMsg::Flush => f.write_str("Flush"),
            AgentMsg::Persist => f.write_str("Persist"),
            AgentMsg::Use {
                subscription, hold, ..
            } => write!(f, "Use({subscription}, hold: {hold})"),
            AgentMsg::Release(s) => write!(f, "Release({s})"),
            AgentMsg::SignedOnDemand(r) => write!(f, "SignedOnDemand({} results)", r.len()),
            AgentMsg::OnDemandFailed(ids, e) => write!(f, "OnDemandFailed({}, {e})", ids.len()),
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
    /// The entries of the bulk round in flight (one at a time); empty when none is.
    bulk_round: Vec<EntryId>,
    /// Which entries workloads use, for the SVID cache policy.
    usage: Usage,
    /// Open holds: subscription, the workload's selectors, the entries it holds.
    holds: HashMap<u64, (SelectorSet, Vec<EntryId>)>,
    /// Callers of `Use` waiting for these entries' SVIDs.
    waiters: Vec<(Vec<EntryId>, RpcReplyPort<u64>)>,
    /// Entries whose signing failed, and when (Unix seconds) they may be asked for again.
    failed: HashMap<EntryId, i64>,
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
        let mut args = args;
        args.cache.refresh_resign();
        let snapshot = args.cache.snapshot(&args.trust_domain);
        snapshots.send_replace(Arc::new(snapshot));
        let _ = myself.send_message(AgentMsg::Rotate);
        Ok(AgentState {
            args,
            snapshots,
            in_flight: HashSet::new(),
            bulk_round: Vec::new(),
            usage: Usage::default(),
            holds: HashMap::new(),
            waiters: Vec::new(),
            failed: HashMap::new(),
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
        let is_bulk = matches!(message, AgentMsg::Signed(_));
        match message {
            AgentMsg::Sync(m) => {
                let cursor_before = state.args.cache.cursor;
                let view_changed = match &m {
                    SyncMessage::Upsert { entry, .. } => Some(Some(entry.id.clone())),
                    SyncMessage::Snapshot { .. } => Some(None),
                    _ => None,
                };
                let removed = matches!(m, SyncMessage::Remove { .. });
                let bundles = matches!(
                    m,
                    SyncMessage::Snapshot { .. }
                        | SyncMessage::BundleUpdated { .. }
                        | SyncMessage::BundleRemoved { .. }
                );
                let changed = state.args.cache.apply(m);
                if changed && bundles {
                    state.bundles_changed();
                }
                if changed {
                    if let Some(upserted) = view_changed {
                        state.view_changed(upserted.as_ref());
                    } else if removed {
                        // A removed entry cannot make a hold match anything new: only its
                        // usage goes (no scan of the view per open stream).
                        state.usage.forget_vanished(&state.args.cache);
                    }
                    state.changed(&myself);
                } else if state.args.cache.cursor != cursor_before {
                    state.mark_unpersisted(&myself);
                }
            }
            AgentMsg::Rotate => state.rotate(&myself),
            AgentMsg::Signed(results) | AgentMsg::SignedOnDemand(results) => {
                if is_bulk {
                    state.bulk_round.clear();
                }
                let now = unix_secs(state.args.clock.as_ref());
                for (id, revision, key, outcome) in results {
                    state.in_flight.remove(&id);
                    match outcome {
                        // Unservable on arrival (clock skew beyond the TTL, a CA at its end):
                        // retried after the back-off like a refusal, not re-signed at once in
                        // a loop.
                        Ok(signed) if signed.not_after <= now => {
                            tracing::warn!(entry = %id, not_after = signed.not_after, "server signed an SVID that is already expired");
                            state.failed.insert(id, now + retry_secs());
                        }
                        Ok(signed) => {
                            // The lifetime that counts for renewal starts at receipt: signers
                            // backdate notBefore for clock skew, which would otherwise make a
                            // short-lived SVID due for renewal the moment it arrives.
                            let now = unix_secs(state.args.clock.as_ref());
                            let not_before =
                                leaf_not_before(&signed.cert_chain).map_or(now, |nb| nb.max(now));
                            state.args.cache.store_svid(
                                id.clone(),
                                StoredSvid {
                                    cert_chain: signed.cert_chain,
                                    key_pkcs8: key,
                                    not_before,
                                    not_after: signed.not_after,
                                    entry_revision: revision,
                                },
                            );
                            state.check_resigned(&id, now);
                        }
                        Err(reason) => {
                            tracing::warn!(entry = %id, %reason, "server refused to sign an SVID");
                            state.failed.insert(id, now + retry_secs());
                        }
                    }
                }
                // New SVIDs are what workloads wait for: published at once, window or not
                // (a round carries up to a batch of them, so rounds are few), then written at
                // once, so a restarted agent serves what it was serving.
                state.publish_now(&myself);
                if is_bulk {
                    state.persist();
                } else {
                    // On-demand rounds are many and small (one per new caller): written within
                    // PERSIST_EVERY, not each a whole-cache write inside the handler that
                    // callers waiting for their first SVID would queue behind.
                    state.mark_unpersisted(&myself);
                }
                state.answer_waiters();
            }
            AgentMsg::SignFailed(e) => {
                tracing::warn!(error = %e, "SVID signing round failed; retrying in 5 s");
                let ids = std::mem::take(&mut state.bulk_round);
                state.round_failed(&ids);
                state.schedule(&myself, RETRY_FAILED_AFTER);
            }
            AgentMsg::OnDemandFailed(ids, e) => {
                tracing::warn!(error = %e, entries = ids.len(), "on-demand SVID signing failed");
                state.round_failed(&ids);
                state.schedule(&myself, RETRY_FAILED_AFTER);
            }
            AgentMsg::Use {
                subscription,
                selectors,
                hold,
                reply,
                span,
            } => state.use_identities(&myself, subscription, selectors, hold, reply, &span),
            AgentMsg::Release(subscription) => state.release(subscription),
            AgentMsg::FetchJwt(id, audience, reply, span) => {
                state.fetch_jwt(&myself, id, audience, reply, span)
            }
            AgentMsg::JwtMinted(key, jwt, refresh_at) => {
                if state.is_jwt_tainted(&jwt) {
                    return Ok(());
                }
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

fn retry_secs() -> i64 {
    i64::try_from(RETRY_FAILED_AFTER.as_secs()).unwrap_or(i64::MAX)
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
        self.publish_snapshot();
        self.rotate(myself);
    }

    fn publish_snapshot(&mut self) {
        self.unpublished = false;
        let snapshot = self.args.cache.snapshot(&self.args.trust_domain);
        self.snapshots.send_replace(Arc::new(snapshot));
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

    /// Applies the SVID cache's plan: evicts, starts an on-demand round for held entries
    /// that cannot be served, a bulk round (one at a time) for renewals and the eager fill,
    /// and schedules the next check.
    fn rotate(&mut self, myself: &ActorRef<AgentMsg>) {
        // During a bulk round only held entries can need anything before the round ends (its
        // end plans again): a burst of sync changes with no workload holding anything costs
        // nothing here.
        if !self.bulk_round.is_empty() && self.holds.is_empty() {
            return;
        }
        let now = unix_secs(self.args.clock.as_ref());
        self.failed.retain(|_, until| *until > now);
        let plan = svid_cache::plan(
            &self.args.cache,
            &self.usage,
            &self.in_flight,
            now,
            &self.args.rotation,
        );
        if self.args.cache.evict_svids(&plan.evict) {
            tracing::debug!(evicted = plan.evict.len(), "SVIDs evicted from the cache");
            self.publish_snapshot();
            self.mark_unpersisted(myself);
        }
        let retry = self.failed.values().min().copied();
        if let Some(next) = [plan.next, retry].into_iter().flatten().min() {
            self.schedule(
                myself,
                Duration::from_secs(u64::try_from(next - now).unwrap_or(0).max(1)),
            );
        }
        let batch = self.args.rotation.batch.max(1);
        let on_demand: Vec<EntryId> = plan
            .on_demand
            .into_iter()
            .filter(|id| !self.failed.contains_key(id))
            .collect();
        for chunk in on_demand.chunks(batch) {
            self.sign(myself, chunk.to_vec(), false, None);
        }
        // One bulk round at a time; the round's end checks again. This keeps a burst of
        // changes from asking for the same renewals once per change.
        if !self.bulk_round.is_empty() {
            return;
        }
        let bulk: Vec<EntryId> = plan
            .bulk
            .into_iter()
            .filter(|id| !self.failed.contains_key(id))
            .take(batch)
            .collect();
        self.bulk_round = self.sign(myself, bulk, true, None);
    }

    fn fetch_jwt(
        &mut self,
        myself: &ActorRef<AgentMsg>,
        id: EntryId,
        audience: Vec<String>,
        reply: RpcReplyPort<Result<HeldJwtSvid, JwtFetchError>>,
        caller: tracing::Span,
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
            if now < *refresh_at && !self.is_jwt_tainted(jwt) {
                let _ = reply.send(Ok(jwt.clone()));
                return;
            }
        }
        let client = self.args.client.clone();
        let me = myself.clone();
        let (spiffe_id, hint) = (entry.spiffe_id.clone(), entry.hint.clone());
        let task = async move {
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
        };
        tokio::spawn(tracing::Instrument::instrument(task, caller));
    }
}
