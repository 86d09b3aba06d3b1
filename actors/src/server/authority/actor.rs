//! The Authority actor: owns the [`Authority`] aggregate, runs rotation, and fronts the
//! [`Signer`].
//!
//! Supervisor: the server supervisor. Emits `ServerCaPrepared`, `ServerCaActivated`,
//! `ServerCaRetired` and the `ServerJwtKey*` events naming its server (the untagged `Ca*` and
//! `JwtKey*` ones when no owner is configured); consumes every committed record, since other
//! servers sharing the log prepare and retire their own CAs and keys, and the bundle is the
//! union of all of them (see [`crate::server::follow`]). It rotates and signs only with its
//! own. State is built in `pre_start` by replaying the log (or taken from the caller), then the
//! keys of its own active and prepared CA and JWT key are loaded and installed in the signer;
//! a replay failure fails the spawn.
//!
//! `Tick` (every `tick_interval`, or on request) runs [`plan`]: activations and retirements
//! go through decide → persist → apply at once; new CAs and keys are built on the blocking
//! pool and come back as `Built`, which persists them (and replies to the ticks waiting).
//! Signing messages are admitted against the signer's bound in the handler and signed in a
//! task, so the actor never waits on crypto. Forced rotation (SPIRE's LocalAuthority API,
//! `local.rs`): `Prepare` builds like a tick (and replies once recorded), `Step` activates,
//! taints or revokes a named CA or JWT key of this server (emitting `X509AuthorityTainted`,
//! `X509AuthorityRevoked`, `JwtAuthorityTainted`, `JwtAuthorityRevoked` besides the above),
//! `LocalState` lists this server's own. Preparation, activation, retirement, taint and
//! revocation each run in a span (`authority.prepare`, `authority.activate`, ...) carrying
//! the authority ID or kid. Mailbox: bounded at the door by
//! [`AuthorityHandle`] (`max_in_flight`); beyond it callers get `Overloaded` at once.

mod handle;
mod local;
mod settings;
mod steps;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tessera_eventlog::{Clock, TypedLog};
use tessera_identity::{Bundle, TrustDomain};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use self::handle::{AuthorityCallError, AuthorityHandle};
pub use self::local::{AuthorityKind, LocalAuthority, LocalAuthorityError, LocalStep};
pub use self::settings::{AuthoritySettings, SettingsError};
use self::steps::{
    finish_tick, fold, forget_keys, load_signing_keys, published_bundle, record_built, rotate, sync,
};
use super::ca::{CaBuildError, PreparedCa, PreparedJwtKey};
use super::signer::{
    AgentSvidRequest, IssuedX509Svid, JwtSvid, JwtSvidRequest, SignError, Signer, SvidRejection,
    X509SvidRequest,
};
use super::{Authority, SlotStatus};
use crate::random::RandomSource;
use crate::server::aggregate::Aggregate;
use crate::server::events::ServerEvent;
use crate::server::follow::{is_next, spawn_follower};
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
    SignAgentSvid(
        AgentSvidRequest,
        RpcReplyPort<Result<IssuedX509Svid, SignError>>,
    ),
    /// Mint a JWT-SVID.
    MintJwt(JwtSvidRequest, RpcReplyPort<Result<JwtSvid, SignError>>),
    /// The current trust bundle (`None` only before the first CA).
    GetBundle(RpcReplyPort<Option<Bundle>>),
    /// What the authority holds and is doing.
    Status(RpcReplyPort<AuthorityStatus>),
    /// This server's own CAs or JWT keys (LocalAuthority `Get*AuthorityState`).
    LocalState(AuthorityKind, RpcReplyPort<Vec<LocalAuthority>>),
    /// Build and record a new prepared CA or JWT key now (LocalAuthority `Prepare*`).
    Prepare(
        AuthorityKind,
        RpcReplyPort<Result<LocalAuthority, LocalAuthorityError>>,
    ),
    /// Activate, taint or revoke the named CA or JWT key of this server.
    Step {
        /// CA or JWT key.
        kind: AuthorityKind,
        /// What to do.
        step: LocalStep,
        /// Its authority ID or kid.
        id: String,
        /// The outcome: the authority after the step (before it, for a revocation).
        reply: RpcReplyPort<Result<LocalAuthority, LocalAuthorityError>>,
    },
    /// Internal: CAs and keys a tick asked for were built (sent by the actor to itself).
    Built(Box<Built>),
    /// A committed record, from the follower task.
    Committed(u64, Box<ServerEvent>),
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
            Self::LocalState(kind, _) => write!(f, "LocalState({kind:?})"),
            Self::Prepare(kind, _) => write!(f, "Prepare({kind:?})"),
            Self::Step { kind, step, id, .. } => write!(f, "Step({kind:?}, {step:?}, {id})"),
            Self::Built(_) => f.write_str("Built"),
            Self::Committed(seq, _) => write!(f, "Committed({seq})"),
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
    /// The seq `initial` was folded to (see [`AuthorityArgs::folded_to`]).
    pub seq: u64,
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
            seq: 0,
            signer,
            bundle,
        }
    }

    /// Says which seq `initial` was folded to; the actor follows the log from there.
    #[must_use]
    pub fn folded_to(mut self, seq: u64) -> Self {
        self.seq = seq;
        self
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
    /// The last seq folded into `authority`.
    seq: u64,
    follower: Option<JoinHandle<()>>,
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
    /// Whether its private key is loaded (old ones, which no longer sign, are not reloaded
    /// after a restart).
    pub key_loaded: bool,
    /// The server that owns it (`None`: recorded before several servers).
    pub server_id: Option<String>,
    /// Whether it is this server's own.
    pub own: bool,
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
    /// A manual prepare's caller, answered once this is recorded.
    manual: Option<(
        AuthorityKind,
        RpcReplyPort<Result<LocalAuthority, LocalAuthorityError>>,
    )>,
}

impl Actor for AuthorityActor {
    type Msg = AuthorityMsg;
    type State = AuthorityState;
    type Arguments = AuthorityArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AuthorityMsg>,
        args: AuthorityArgs,
    ) -> Result<AuthorityState, ActorProcessingErr> {
        args.settings.validate()?;
        let (mut authority, seq) = match args.initial {
            Some(a) => (a, args.seq),
            None => {
                let mut a = Authority::default();
                let seq = args.log.replay(0, |_, e| a.apply(&e)).await?;
                (a, seq)
            }
        };
        authority.configure(args.settings.trust_domain.clone());
        if let Some(owner) = args.settings.owner.clone() {
            authority.set_owner(owner);
        }
        let follower = spawn_follower(&args.log, seq, myself, "authority", |seq, event| {
            AuthorityMsg::Committed(seq, Box::new(event))
        });
        let mut state = AuthorityState {
            authority,
            seq,
            follower: Some(follower),
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
        if let Some(mut follower) = state.follower.take() {
            follower.abort();
            // It holds a subscription, and with it the log: wait until it is gone.
            let _ = (&mut follower).await;
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
            AuthorityMsg::Built(mut built) => {
                state.building = false;
                match built.manual.take() {
                    Some((kind, reply)) => {
                        local::finish_prepare(&myself, state, *built, kind, reply).await?;
                    }
                    None => {
                        record_built(state, *built).await?;
                        finish_tick(state);
                    }
                }
            }
            AuthorityMsg::LocalState(kind, reply) => {
                let _ = reply.send(local::own(&state.authority, kind));
            }
            AuthorityMsg::Prepare(kind, reply) => local::start_prepare(&myself, state, kind, reply),
            AuthorityMsg::Step {
                kind,
                step,
                id,
                reply,
            } => {
                let outcome = local::step(state, kind, step, id).await?;
                let _ = reply.send(outcome);
            }
            AuthorityMsg::Committed(seq, event) => {
                if is_next(state.seq, seq, "authority")? {
                    state.seq = seq;
                    fold(state, std::slice::from_ref(&event)).await;
                }
            }
            AuthorityMsg::SignX509Batch(requests, reply) => {
                match state.signer.admit_batch(requests.len()) {
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                    Ok(admission) => {
                        let signer = state.signer.clone();
                        tokio::spawn(async move {
                            let _ =
                                reply.send(signer.sign_x509_admitted(admission, requests).await);
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
                let _ = reply.send(published_bundle(&state.authority));
            }
            AuthorityMsg::Status(reply) => {
                let _ = reply.send(status(state));
            }
        }
        Ok(())
    }
}

fn status(state: &AuthorityState) -> AuthorityStatus {
    let summary =
        |id: &str, status, not_before, not_after, key_ref: &str, server: &Option<String>| {
            SlotSummary {
                id: id.to_owned(),
                status,
                not_before,
                not_after,
                key_loaded: state.loaded.contains_key(key_ref),
                server_id: server.clone(),
                own: state.authority.owns(server.as_deref()),
            }
        };
    AuthorityStatus {
        trust_domain: state.settings.trust_domain.clone(),
        cas: state
            .authority
            .cas()
            .iter()
            .map(|s| {
                let r = &s.record;
                summary(
                    &r.authority_id,
                    s.status,
                    r.not_before,
                    r.not_after,
                    &r.key_ref,
                    &s.server,
                )
            })
            .collect(),
        jwt_keys: state
            .authority
            .jwt_keys()
            .iter()
            .map(|s| {
                let r = &s.record;
                summary(
                    &r.kid,
                    s.status,
                    r.not_before,
                    r.not_after,
                    &r.key_ref,
                    &s.server,
                )
            })
            .collect(),
        bundle_sequence: state.authority.bundle_sequence(),
        signing_queued: state.signer.queued(),
        building: state.building,
        last_error: state.last_error.clone(),
    }
}
