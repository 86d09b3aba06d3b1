//! The Authority actor: owns the [`Authority`] aggregate, runs rotation, and fronts the
//! [`Signer`].
//!
//! Supervisor: the server supervisor. Emits `CaPrepared`, `CaActivated`, `CaRetired`,
//! `JwtKeyPrepared`, `JwtKeyActivated`, `JwtKeyRetired`; consumes nothing (it is the only
//! writer of those events, so its state is the fold of its own appends). State is built in
//! `pre_start` by replaying the log (or taken from the caller), then the keys of the active and
//! prepared CA and JWT key are loaded and installed in the signer; a replay failure fails the
//! spawn.
//!
//! `Tick` (every `tick_interval`, or on request) runs [`plan`]: activations and retirements
//! go through decide → persist → apply at once; new CAs and keys are built on the blocking
//! pool and come back as `Built`, which persists them (and replies to the ticks waiting).
//! Signing messages are admitted against the signer's bound in the handler and signed in a
//! task, so the actor never waits on crypto. Mailbox: bounded at the door by
//! [`AuthorityHandle`] (`max_in_flight`); beyond it callers get `Overloaded` at once.

mod handle;
mod settings;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tessera_eventlog::{AppendCondition, Clock, TypedLog};
use tessera_identity::{Bundle, TrustDomain};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use self::handle::{AuthorityCallError, AuthorityHandle};
pub use self::settings::{AuthoritySettings, SettingsError};
use super::ca::{build_ca, build_jwt_key, CaBuildError, PreparedCa, PreparedJwtKey};
use super::rotation::{plan, RotationAction};
use super::signer::{
    AgentSvidRequest, IssuedX509Svid, JwtSvid, JwtSvidRequest, SignError, Signer, SigningCa,
    SigningJwtKey, SvidRejection, X509SvidRequest,
};
use super::x509::now_secs;
use super::{Authority, AuthorityCommand, SlotStatus};
use crate::random::{random_array, RandomSource};
use crate::server::aggregate::{Aggregate, Context};
use crate::server::events::ServerEvent;
use crate::server::keys::{KeyManager, SigningKeyPair};

/// Messages of the authority actor.
pub enum AuthorityMsg {
    /// Run rotation now; the reply (if any) comes once every step, builds included, is done.
    Tick(Option<RpcReplyPort<Result<TickReport, TickError>>>),
    /// Sign workload X509-SVIDs (one result per request).
    SignX509Batch(
        Vec<X509SvidRequest>,
        RpcReplyPort<Result<Vec<Result<IssuedX509Svid, SvidRejection>>, SignError>>,
    ),
    /// Sign an agent X509-SVID.
    SignAgentSvid(AgentSvidRequest, RpcReplyPort<Result<IssuedX509Svid, SignError>>),
    /// Mint a JWT-SVID.
    MintJwt(JwtSvidRequest, RpcReplyPort<Result<JwtSvid, SignError>>),
    /// The current trust bundle (`None` only before the first CA).
    GetBundle(RpcReplyPort<Option<Bundle>>),
    /// What the authority holds and is doing.
    Status(RpcReplyPort<AuthorityStatus>),
    /// Internal: CAs and keys a tick asked for were built (sent by the actor to itself).
    Built(Box<Built>),
}

impl std::fmt::Debug for AuthorityMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tick(reply) => write!(f, "Tick(reply: {})", reply.is_some()),
            Self::SignX509Batch(requests, _) => write!(f, "SignX509Batch({} CSRs)", requests.len()),
            Self::SignAgentSvid(request, _) => write!(f, "SignAgentSvid({})", request.agent_id),
            Self::MintJwt(request, _) => write!(f, "MintJwt({})", request.spiffe_id),
            Self::GetBundle(_) => f.write_str("GetBundle"),
            Self::Status(_) => f.write_str("Status"),
            Self::Built(_) => f.write_str("Built"),
        }
    }
}

/// Everything the actor starts from. Build it with [`AuthorityArgs::new`].
#[derive(Debug)]
pub struct AuthorityArgs {
    /// The server's log.
    pub log: TypedLog<ServerEvent>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Randomness for serials, key names and kids.
    pub random: Arc<dyn RandomSource>,
    /// Where private keys live.
    pub keys: Arc<dyn KeyManager>,
    /// Configuration.
    pub settings: AuthoritySettings,
    /// State already folded by the caller; `None`: replay the log.
    pub initial: Option<Authority>,
    signer: Signer,
    bundle: watch::Sender<Option<Bundle>>,
}

impl AuthorityArgs {
    /// Arguments with a fresh signer and bundle channel (shared with the handle).
    pub fn new(
        log: TypedLog<ServerEvent>,
        clock: Arc<dyn Clock>,
        random: Arc<dyn RandomSource>,
        keys: Arc<dyn KeyManager>,
        settings: AuthoritySettings,
        initial: Option<Authority>,
    ) -> Self {
        let signer = Signer::new(
            settings.trust_domain.clone(),
            settings.signer.clone(),
            clock.clone(),
            random.clone(),
        );
        let (bundle, _) = watch::channel(None);
        Self {
            log,
            clock,
            random,
            keys,
            settings,
            initial,
            signer,
            bundle,
        }
    }

    /// The signer the actor will install CAs into.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// A receiver of every new bundle.
    pub fn bundle_receiver(&self) -> watch::Receiver<Option<Bundle>> {
        self.bundle.subscribe()
    }
}

/// The running actor's state.
#[derive(Debug)]
pub struct AuthorityState {
    authority: Authority,
    log: TypedLog<ServerEvent>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn RandomSource>,
    keys: Arc<dyn KeyManager>,
    settings: AuthoritySettings,
    signer: Signer,
    bundle: watch::Sender<Option<Bundle>>,
    /// Loaded private keys of prepared and active CAs and JWT keys, by key_ref.
    loaded: HashMap<String, Arc<SigningKeyPair>>,
    /// Authority IDs and kids whose keys could not be loaded.
    unusable: BTreeSet<String>,
    /// A build is out; ticks wait for it.
    building: bool,
    waiting: Vec<RpcReplyPort<Result<TickReport, TickError>>>,
    report: TickReport,
    errors: Vec<String>,
    last_error: Option<String>,
    timer: Option<JoinHandle<()>>,
}

/// The actor (no fields: everything lives in its state).
#[derive(Debug, Default, Clone, Copy)]
pub struct AuthorityActor;

/// What a tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Events persisted, in order.
    pub events: Vec<ServerEvent>,
}

/// Why a tick did not complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TickError {
    /// Building a CA or key failed (the next tick tries again).
    #[error("authority rotation: {0}")]
    Build(String),
    /// The log refused an append: the actor stops; a restart replays what is durable.
    #[error("authority rotation: could not persist: {0}")]
    Persist(String),
}

/// A CA or key slot, for status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotSummary {
    /// Authority ID or kid.
    pub id: String,
    /// Prepared, active or old.
    pub status: SlotStatus,
    /// Validity, Unix seconds.
    pub not_before: i64,
    /// Validity, Unix seconds.
    pub not_after: i64,
    /// Whether its private key is loaded (`false` for old ones, which no longer sign).
    pub key_loaded: bool,
}

/// What the authority holds and is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorityStatus {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// X.509 CAs not retired.
    pub cas: Vec<SlotSummary>,
    /// JWT keys not retired.
    pub jwt_keys: Vec<SlotSummary>,
    /// The bundle's sequence number.
    pub bundle_sequence: u64,
    /// Signing requests admitted and not yet done.
    pub signing_queued: usize,
    /// Whether a CA or key is being built.
    pub building: bool,
    /// The last rotation error, if the last tick failed.
    pub last_error: Option<String>,
}

/// The CAs and keys a tick asked for.
#[derive(Debug)]
pub struct Built {
    ca: Option<(Result<PreparedCa, CaBuildError>, bool)>,
    jwt: Option<(Result<PreparedJwtKey, CaBuildError>, bool)>,
    failure: Option<String>,
}

impl Actor for AuthorityActor {
    type Msg = AuthorityMsg;
    type State = AuthorityState;
    type Arguments = AuthorityArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<AuthorityMsg>,
        args: AuthorityArgs,
    ) -> Result<AuthorityState, ActorProcessingErr> {
        args.settings.validate()?;
        let mut authority = match args.initial {
            Some(a) => a,
            None => {
                let mut a = Authority::default();
                args.log.replay(0, |_, e| a.apply(&e)).await?;
                a
            }
        };
        authority.configure(args.settings.trust_domain.clone());
        let mut state = AuthorityState {
            authority,
            log: args.log,
            clock: args.clock,
            random: args.random,
            keys: args.keys,
            settings: args.settings,
            signer: args.signer,
            bundle: args.bundle,
            loaded: HashMap::new(),
            unusable: BTreeSet::new(),
            building: false,
            waiting: Vec::new(),
            report: TickReport::default(),
            errors: Vec::new(),
            last_error: None,
            timer: None,
        };
        load_signing_keys(&mut state).await?;
        let orphans = sync(&mut state);
        forget_keys(&mut state, orphans).await;
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<AuthorityMsg>,
        state: &mut AuthorityState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(every) = state.settings.tick_interval {
            myself.send_message(AuthorityMsg::Tick(None))?;
            state.timer = Some(myself.send_interval(every, || AuthorityMsg::Tick(None)));
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<AuthorityMsg>,
        state: &mut AuthorityState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<AuthorityMsg>,
        message: AuthorityMsg,
        state: &mut AuthorityState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AuthorityMsg::Tick(reply) => {
                state.waiting.extend(reply);
                if !state.building {
                    rotate(&myself, state).await?;
                }
            }
            AuthorityMsg::Built(built) => {
                state.building = false;
                record_built(state, *built).await?;
                finish_tick(state);
            }
            AuthorityMsg::SignX509Batch(requests, reply) => {
                match state.signer.admit_batch(requests.len()) {
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                    Ok(admission) => {
                        let signer = state.signer.clone();
                        tokio::spawn(async move {
                            let _ = reply.send(signer.sign_x509_admitted(admission, requests).await);
                        });
                    }
                }
            }
            AuthorityMsg::SignAgentSvid(request, reply) => match state.signer.admit(1) {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                Ok(admission) => {
                    let signer = state.signer.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(signer.sign_agent_admitted(admission, request).await);
                    });
                }
            },
            AuthorityMsg::MintJwt(request, reply) => match state.signer.admit(1) {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                Ok(admission) => {
                    let signer = state.signer.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(signer.mint_jwt_admitted(admission, request).await);
                    });
                }
            },
            AuthorityMsg::GetBundle(reply) => {
                let _ = reply.send(state.authority.bundle().cloned());
            }
            AuthorityMsg::Status(reply) => {
                let _ = reply.send(status(state));
            }
        }
        Ok(())
    }
}

/// Plans rotation; carries out activations and retirements; sends builds off-thread.
async fn rotate(myself: &ActorRef<AuthorityMsg>, state: &mut AuthorityState) -> Result<(), ActorProcessingErr> {
    let now = now_secs(state.clock.as_ref());
    let actions = plan(&state.authority, now, &state.settings.rotation, &state.unusable);
    let mut build_ca_activate = None;
    let mut build_jwt_activate = None;
    for action in actions {
        let command = match action {
            RotationAction::PrepareCa { activate } => {
                build_ca_activate = Some(activate);
                continue;
            }
            RotationAction::PrepareJwtKey { activate } => {
                build_jwt_activate = Some(activate);
                continue;
            }
            RotationAction::ActivateCa { authority_id } => AuthorityCommand::ActivateCa { authority_id },
            RotationAction::RetireCa { authority_id } => AuthorityCommand::RetireCa { authority_id },
            RotationAction::ActivateJwtKey { kid } => AuthorityCommand::ActivateJwtKey { kid },
            RotationAction::RetireJwtKey { kid } => AuthorityCommand::RetireJwtKey { kid },
        };
        persist(state, command).await?;
    }
    if build_ca_activate.is_none() && build_jwt_activate.is_none() {
        finish_tick(state);
        return Ok(());
    }
    state.building = true;
    let (keys, random) = (state.keys.clone(), state.random.clone());
    let (settings, myself) = (state.settings.clone(), myself.clone());
    tokio::spawn(async move {
        let job = tokio::task::spawn_blocking(move || {
            let td = &settings.trust_domain;
            Built {
                ca: build_ca_activate
                    .map(|a| (build_ca(td, &settings.ca, keys.as_ref(), random.as_ref(), now), a)),
                jwt: build_jwt_activate.map(|a| {
                    let (ttl, kt) = (settings.jwt_key_ttl, settings.jwt_key_type);
                    (build_jwt_key(ttl, kt, keys.as_ref(), random.as_ref(), now), a)
                }),
                failure: None,
            }
        });
        let built = job.await.unwrap_or_else(|e| Built {
            ca: None,
            jwt: None,
            failure: Some(format!("the build job failed: {e}")),
        });
        // If the actor is gone, so is the need.
        let _ = myself.send_message(AuthorityMsg::Built(Box::new(built)));
    });
    Ok(())
}

/// Persists what a build produced: prepared (and, if asked, activated at once).
async fn record_built(state: &mut AuthorityState, built: Built) -> Result<(), ActorProcessingErr> {
    state.errors.extend(built.failure);
    match built.ca {
        Some((Ok(ca), activate)) => {
            let (id, key_ref) = (ca.record.authority_id.clone(), ca.record.key_ref.clone());
            state.loaded.insert(key_ref.clone(), ca.key);
            if !persist(state, AuthorityCommand::RecordPreparedCa(ca.record)).await? {
                forget_keys(state, vec![key_ref]).await;
            } else if activate {
                persist(state, AuthorityCommand::ActivateCa { authority_id: id }).await?;
            }
        }
        Some((Err(e), _)) => state.errors.push(e.to_string()),
        None => {}
    }
    match built.jwt {
        Some((Ok(jwt), activate)) => {
            let (kid, key_ref) = (jwt.record.kid.clone(), jwt.record.key_ref.clone());
            state.loaded.insert(key_ref.clone(), jwt.key);
            if !persist(state, AuthorityCommand::RecordPreparedJwtKey(jwt.record)).await? {
                forget_keys(state, vec![key_ref]).await;
            } else if activate {
                persist(state, AuthorityCommand::ActivateJwtKey { kid }).await?;
            }
        }
        Some((Err(e), _)) => state.errors.push(e.to_string()),
        None => {}
    }
    Ok(())
}

/// decide → persist → apply for one command; `Ok(false)` if the aggregate refused it (a bug
/// in planning, reported as a rotation error). A log failure stops the actor.
async fn persist(state: &mut AuthorityState, command: AuthorityCommand) -> Result<bool, ActorProcessingErr> {
    let ctx = Context {
        now: now_secs(state.clock.as_ref()),
        random: random_array(state.random.as_ref()),
    };
    let decision = match state.authority.decide(command, &ctx) {
        Ok(d) => d,
        Err(e) => {
            state.errors.push(e.to_string());
            return Ok(false);
        }
    };
    if decision.events.is_empty() {
        return Ok(true);
    }
    if let Err(e) = state.log.append(&decision.events, AppendCondition::Any).await {
        let error = TickError::Persist(e.to_string());
        for port in state.waiting.drain(..) {
            let _ = port.send(Err(error.clone()));
        }
        return Err(format!("authority: append failed: {e}").into());
    }
    for event in &decision.events {
        state.authority.apply(event);
        if let ServerEvent::CaRetired { authority_id: id } | ServerEvent::JwtKeyRetired { kid: id } = event {
            state.unusable.remove(id);
        }
    }
    state.report.events.extend(decision.events);
    let retired = sync(state);
    forget_keys(state, retired).await;
    Ok(true)
}

/// Brings the signer and the published bundle in line with the aggregate; returns the loaded
/// keys whose CA or JWT key is gone (retired), for [`forget_keys`].
fn sync(state: &mut AuthorityState) -> Vec<String> {
    // Keys are deleted when their CA or JWT key is retired (not when it becomes old).
    let live: BTreeSet<&str> = state
        .authority
        .cas()
        .iter()
        .map(|s| s.record.key_ref.as_str())
        .chain(state.authority.jwt_keys().iter().map(|s| s.record.key_ref.as_str()))
        .collect();
    let dead: Vec<String> = state
        .loaded
        .keys()
        .filter(|r| !live.contains(r.as_str()))
        .cloned()
        .collect();

    let ca = state.authority.active_ca().cloned();
    if state.signer.active_authority_id() != ca.as_ref().map(|c| c.authority_id.clone()) {
        let signing = ca.and_then(|record| match state.loaded.get(&record.key_ref) {
            Some(key) => Some(SigningCa::new(record, key.clone())),
            None => {
                state.unusable.insert(record.authority_id);
                None
            }
        });
        state.signer.install_ca(signing);
    }
    let jwt = state.authority.active_jwt_key().cloned();
    if state.signer.active_kid() != jwt.as_ref().map(|k| k.kid.clone()) {
        let signing = jwt.and_then(|record| match state.loaded.get(&record.key_ref) {
            Some(key) => Some(SigningJwtKey::new(record, key.clone())),
            None => {
                state.unusable.insert(record.kid);
                None
            }
        });
        state.signer.install_jwt_key(signing);
    }
    let bundle = state.authority.bundle().cloned();
    state.bundle.send_if_modified(|published| {
        let changed = *published != bundle;
        if changed {
            published.clone_from(&bundle);
        }
        changed
    });
    dead
}

/// Drops loaded keys and deletes them from the key manager, on the blocking pool. A failure
/// is logged: the key is then an orphan an operator may remove; nothing refers to it.
async fn forget_keys(state: &mut AuthorityState, key_refs: Vec<String>) {
    if key_refs.is_empty() {
        return;
    }
    for key_ref in &key_refs {
        state.loaded.remove(key_ref);
    }
    let keys = state.keys.clone();
    let deleted = tokio::task::spawn_blocking(move || {
        for key_ref in key_refs {
            if let Err(e) = keys.delete(&key_ref) {
                tracing::warn!(key_ref = %key_ref, error = %e, "authority: cannot delete a retired key");
            }
        }
    })
    .await;
    if let Err(e) = deleted {
        tracing::warn!(error = %e, "authority: the key deletion job failed");
    }
}

/// Answers the ticks waiting with what was done (or the errors met).
fn finish_tick(state: &mut AuthorityState) {
    let report = std::mem::take(&mut state.report);
    let outcome = if state.errors.is_empty() {
        state.last_error = None;
        Ok(report)
    } else {
        let message = state.errors.drain(..).collect::<Vec<_>>().join("; ");
        tracing::error!(error = %message, "authority: rotation failed; retrying on the next tick");
        state.last_error = Some(message.clone());
        Err(TickError::Build(message))
    };
    for port in state.waiting.drain(..) {
        let _ = port.send(outcome.clone());
    }
}

/// Loads the keys of the prepared and active CAs and JWT keys (blocking I/O, off-thread);
/// a key that cannot be loaded marks its CA or key unusable, so rotation replaces it.
async fn load_signing_keys(state: &mut AuthorityState) -> Result<(), ActorProcessingErr> {
    let wanted: Vec<(String, String)> = state
        .authority
        .cas()
        .iter()
        .filter(|s| s.status != SlotStatus::Old)
        .map(|s| (s.record.authority_id.clone(), s.record.key_ref.clone()))
        .chain(
            state
                .authority
                .jwt_keys()
                .iter()
                .filter(|s| s.status != SlotStatus::Old)
                .map(|s| (s.record.kid.clone(), s.record.key_ref.clone())),
        )
        .collect();
    let keys = state.keys.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        wanted
            .into_iter()
            .map(|(id, key_ref)| {
                let key = keys.load(&key_ref);
                (id, key_ref, key)
            })
            .collect::<Vec<_>>()
    })
    .await?;
    for (id, key_ref, key) in loaded {
        match key {
            Ok(key) => {
                state.loaded.insert(key_ref, Arc::new(key));
            }
            Err(e) => {
                tracing::error!(id = %id, error = %e, "authority: key unavailable; it will be replaced");
                state.unusable.insert(id);
            }
        }
    }
    Ok(())
}

fn status(state: &AuthorityState) -> AuthorityStatus {
    let summary = |id: &str, status, not_before, not_after, key_ref: &str| SlotSummary {
        id: id.to_owned(),
        status,
        not_before,
        not_after,
        key_loaded: state.loaded.contains_key(key_ref),
    };
    AuthorityStatus {
        trust_domain: state.settings.trust_domain.clone(),
        cas: state
            .authority
            .cas()
            .iter()
            .map(|s| {
                let r = &s.record;
                summary(&r.authority_id, s.status, r.not_before, r.not_after, &r.key_ref)
            })
            .collect(),
        jwt_keys: state
            .authority
            .jwt_keys()
            .iter()
            .map(|s| {
                let r = &s.record;
                summary(&r.kid, s.status, r.not_before, r.not_after, &r.key_ref)
            })
            .collect(),
        bundle_sequence: state.authority.bundle_sequence(),
        signing_queued: state.signer.queued(),
        building: state.building,
        last_error: state.last_error.clone(),
    }
}
