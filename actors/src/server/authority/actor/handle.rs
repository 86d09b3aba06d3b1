//! [`AuthorityHandle`]: the bounded, timed door to the authority actor, plus direct access to
//! its signer (signing never waits on the actor) and bundle channel.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef, RpcReplyPort, SpawnErr};
use tessera_identity::Bundle;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use super::{
    AuthorityActor, AuthorityArgs, AuthorityKind, AuthorityMsg, AuthorityStatus, LocalAuthority,
    LocalAuthorityError, LocalStep, TickError, TickReport,
};
use crate::server::authority::signer::{
    AgentSvidRequest, IssuedX509Svid, JwtSvid, JwtSvidRequest, SignError, Signer, SvidRejection,
    X509SvidRequest,
};

/// Why a call to the authority actor got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityCallError {
    /// Too many calls are waiting for the actor.
    #[error("authority has {limit} requests in flight (its limit, `max_in_flight`); retry later")]
    Overloaded {
        /// The limit.
        limit: usize,
    },
    /// The actor is down or did not answer in time: retryable.
    #[error("authority unavailable: {reason}")]
    Unavailable {
        /// What happened.
        reason: String,
    },
    /// The tick ran and failed.
    #[error(transparent)]
    Tick(#[from] TickError),
}

/// A cloneable handle to a running authority.
#[derive(Clone)]
pub struct AuthorityHandle {
    actor: ActorRef<AuthorityMsg>,
    signer: Signer,
    bundle: watch::Receiver<Option<Bundle>>,
    door: Arc<Semaphore>,
    limit: usize,
    timeout: Duration,
}

impl std::fmt::Debug for AuthorityHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityHandle")
            .field("actor", &self.actor.get_id())
            .field("signer", &self.signer)
            .field("limit", &self.limit)
            .finish()
    }
}

impl AuthorityHandle {
    /// Spawns the actor (unlinked; a supervisor uses [`AuthorityHandle::connect`] after
    /// spawning it linked) and returns its handle.
    ///
    /// # Errors
    /// The spawn error: bad settings, or a log that does not replay.
    pub async fn spawn(
        name: Option<String>,
        args: AuthorityArgs,
    ) -> Result<(Self, JoinHandle<()>), SpawnErr> {
        let (signer, bundle) = (args.signer().clone(), args.bundle_receiver());
        let (limit, timeout) = (args.settings.max_in_flight, args.settings.call_timeout);
        let (actor, join) = Actor::spawn(name, AuthorityActor, args).await?;
        Ok((Self::connect(actor, signer, bundle, limit, timeout), join))
    }

    /// A handle to an actor spawned with `args` (take `signer` and `bundle` from them before
    /// spawning).
    pub fn connect(
        actor: ActorRef<AuthorityMsg>,
        signer: Signer,
        bundle: watch::Receiver<Option<Bundle>>,
        max_in_flight: usize,
        timeout: Duration,
    ) -> Self {
        let limit = max_in_flight.max(1);
        Self {
            actor,
            signer,
            bundle,
            door: Arc::new(Semaphore::new(limit)),
            limit,
            timeout,
        }
    }

    /// The actor.
    pub fn actor(&self) -> &ActorRef<AuthorityMsg> {
        &self.actor
    }

    /// Requests waiting for or running in the actor now (at most `max_in_flight`); signing
    /// bypasses the actor and is counted by the signer's own metrics.
    pub fn in_flight(&self) -> usize {
        self.limit - self.door.available_permits()
    }

    /// The signer (signing goes straight to it, bounded by its own queue).
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The current bundle, without a round trip to the actor.
    pub fn bundle(&self) -> Option<Bundle> {
        self.bundle.borrow().clone()
    }

    /// A receiver woken on every bundle change.
    pub fn subscribe_bundle(&self) -> watch::Receiver<Option<Bundle>> {
        self.bundle.clone()
    }

    /// Runs rotation now and waits for it (builds included).
    ///
    /// # Errors
    /// [`AuthorityCallError`]: overloaded, unavailable, or the tick's own failure.
    pub async fn tick(&self) -> Result<TickReport, AuthorityCallError> {
        self.call(|port| AuthorityMsg::Tick(Some(port)))
            .await?
            .map_err(AuthorityCallError::Tick)
    }

    /// The authority's status.
    ///
    /// # Errors
    /// [`AuthorityCallError::Overloaded`] or [`AuthorityCallError::Unavailable`].
    pub async fn status(&self) -> Result<AuthorityStatus, AuthorityCallError> {
        self.call(AuthorityMsg::Status).await
    }

    /// This server's own CAs or JWT keys, in the order they were prepared.
    ///
    /// # Errors
    /// [`AuthorityCallError::Overloaded`] or [`AuthorityCallError::Unavailable`].
    pub async fn local_state(
        &self,
        kind: AuthorityKind,
    ) -> Result<Vec<LocalAuthority>, AuthorityCallError> {
        self.call(|port| AuthorityMsg::LocalState(kind, port)).await
    }

    /// Builds and records a new prepared CA or JWT key now (not activated).
    ///
    /// # Errors
    /// The call's [`AuthorityCallError`]; inside, the step's [`LocalAuthorityError`].
    pub async fn prepare(
        &self,
        kind: AuthorityKind,
    ) -> Result<Result<LocalAuthority, LocalAuthorityError>, AuthorityCallError> {
        self.call(|port| AuthorityMsg::Prepare(kind, port)).await
    }

    /// Activates, taints or revokes one of this server's CAs or JWT keys.
    ///
    /// # Errors
    /// The call's [`AuthorityCallError`]; inside, the step's [`LocalAuthorityError`].
    pub async fn local_step(
        &self,
        kind: AuthorityKind,
        step: LocalStep,
        id: String,
    ) -> Result<Result<LocalAuthority, LocalAuthorityError>, AuthorityCallError> {
        self.call(|reply| AuthorityMsg::Step {
            kind,
            step,
            id,
            reply,
        })
        .await
    }

    /// The bundle as the actor holds it (normally equal to [`AuthorityHandle::bundle`]).
    ///
    /// # Errors
    /// [`AuthorityCallError::Overloaded`] or [`AuthorityCallError::Unavailable`].
    pub async fn get_bundle(&self) -> Result<Option<Bundle>, AuthorityCallError> {
        self.call(AuthorityMsg::GetBundle).await
    }

    /// Signs workload X509-SVIDs (see [`Signer::sign_x509_batch`]).
    ///
    /// # Errors
    /// As [`Signer::sign_x509_batch`].
    pub async fn sign_x509_batch(
        &self,
        requests: Vec<X509SvidRequest>,
    ) -> Result<Vec<Result<IssuedX509Svid, SvidRejection>>, SignError> {
        self.signer.sign_x509_batch(requests).await
    }

    /// Signs the server's own X509-SVID, `spiffe://<td>/spire/server` (see
    /// [`Signer::sign_server_svid`]): the one path that may sign that ID.
    ///
    /// # Errors
    /// As [`Signer::sign_x509_batch`].
    pub async fn sign_server_svid(
        &self,
        requests: Vec<X509SvidRequest>,
    ) -> Result<Vec<Result<IssuedX509Svid, SvidRejection>>, SignError> {
        self.signer.sign_server_svid(requests).await
    }

    /// Signs an agent X509-SVID (see [`Signer::sign_agent_svid`]).
    ///
    /// # Errors
    /// As [`Signer::sign_agent_svid`].
    pub async fn sign_agent_svid(
        &self,
        request: AgentSvidRequest,
    ) -> Result<IssuedX509Svid, SignError> {
        self.signer.sign_agent_svid(request).await
    }

    /// Mints a JWT-SVID (see [`Signer::mint_jwt_svid`]).
    ///
    /// # Errors
    /// As [`Signer::mint_jwt_svid`].
    pub async fn mint_jwt_svid(&self, request: JwtSvidRequest) -> Result<JwtSvid, SignError> {
        self.signer.mint_jwt_svid(request).await
    }

    async fn call<R: Send + 'static>(
        &self,
        message: impl FnOnce(RpcReplyPort<R>) -> AuthorityMsg,
    ) -> Result<R, AuthorityCallError> {
        let _permit = self
            .door
            .try_acquire()
            .map_err(|_| AuthorityCallError::Overloaded { limit: self.limit })?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.actor
            .send_message(message(RpcReplyPort::from(tx)))
            .map_err(|e| AuthorityCallError::Unavailable {
                reason: e.to_string(),
            })?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(AuthorityCallError::Unavailable {
                reason: "the actor stopped before replying".into(),
            }),
            Err(_) => Err(AuthorityCallError::Unavailable {
                reason: format!("no reply within {:?}", self.timeout),
            }),
        }
    }
}
