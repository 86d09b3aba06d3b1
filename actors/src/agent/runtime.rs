//! Running an agent's logic: the core actor, the sync loop that feeds it (reconnecting with
//! exponential backoff and jitter, resuming from the cache's cursor), and the
//! [`WorkloadSource`] the Workload API serves from.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use ractor::{Actor, ActorRef};
use tessera_identity::SelectorSet;
use tokio::sync::watch;

use crate::agent::core::{AgentArgs, AgentCore, AgentMsg};
use crate::agent::server_client::{ClientError, Refusal, ServerClient};
use crate::agent::view::{
    HeldJwtSvid, Identity, IdentitySnapshot, InUse, JwtFetchError, WorkloadSource,
};
use crate::random::{random_u64, RandomSource};

/// Reconnect backoff of the sync loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

/// How long a caller waits for SVIDs signed on demand before it is served without them.
pub const ON_DEMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A running agent.
#[derive(Debug, Clone)]
pub struct AgentRuntime {
    core: ActorRef<AgentMsg>,
    snapshots: watch::Receiver<Arc<IdentitySnapshot>>,
    refused: watch::Receiver<Option<Refusal>>,
    jwt_timeout: Duration,
    /// Names the holds of [`WorkloadSource::use_identities`].
    subscriptions: Arc<AtomicU64>,
    on_demand_timeout: Duration,
}

impl AgentRuntime {
    /// Starts the core (from `args.cache`, so it serves at once) and the sync loop.
    pub async fn start(
        args: AgentArgs,
        random: Arc<dyn RandomSource>,
        backoff: Backoff,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), ractor::SpawnErr> {
        let (tx, snapshots) = watch::channel(Arc::new(args.cache.snapshot(&args.trust_domain)));
        let client = args.client.clone();
        let (core, _) = Actor::spawn(None, AgentCore, (args, tx)).await?;
        let (refused_tx, refused) = watch::channel(None);
        let task = tokio::spawn(sync_loop(core.clone(), client, random, backoff, refused_tx));
        Ok((
            Self {
                core,
                snapshots,
                refused,
                jwt_timeout: Duration::from_secs(30),
                subscriptions: Arc::new(AtomicU64::new(0)),
                on_demand_timeout: ON_DEMAND_TIMEOUT,
            },
            task,
        ))
    }

    /// The core actor.
    pub fn core(&self) -> &ActorRef<AgentMsg> {
        &self.core
    }

    /// Resolves when the server refuses this agent (evicted, banned): attest again or stop.
    pub async fn refused(&self) -> Refusal {
        let mut rx = self.refused.clone();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return Refusal::new("sync loop stopped");
            }
        }
    }

    /// Stops the core.
    pub fn stop(&self) {
        self.core.stop(Some("agent stopping".into()));
    }
}

async fn sync_loop(
    core: ActorRef<AgentMsg>,
    client: Arc<dyn ServerClient>,
    random: Arc<dyn RandomSource>,
    backoff: Backoff,
    refused: watch::Sender<Option<Refusal>>,
) {
    let mut delay = backoff.initial;
    loop {
        let cursor = match ractor::call_t!(core, AgentMsg::Cursor, 10_000) {
            Ok(c) => c,
            Err(_) => return, // The core is gone.
        };
        match client.sync(cursor).await {
            Ok(mut stream) => {
                delay = backoff.initial;
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(message) => {
                            if core.send_message(AgentMsg::Sync(message)).is_err() {
                                return;
                            }
                        }
                        Err(ClientError::Refused(reason)) => {
                            refused.send_replace(Some(reason));
                            return;
                        }
                        Err(e) => {
                            tracing::info!(error = %e, "sync stream ended; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(ClientError::Refused(reason)) => {
                refused.send_replace(Some(reason));
                return;
            }
            Err(e) => tracing::info!(error = %e, ?delay, "cannot open the sync stream; retrying"),
        }
        // ±20 % jitter, so a restarted server is not met by every agent at the same instant.
        let unit = (random_u64(random.as_ref()) % 1_000) as f64 / 1_000.0;
        let jittered = delay.mul_f64(0.8 + 0.4 * unit);
        tokio::time::sleep(jittered).await;
        delay = (delay * 2).min(backoff.max);
    }
}

impl WorkloadSource for AgentRuntime {
    fn identities(&self) -> watch::Receiver<Arc<IdentitySnapshot>> {
        self.snapshots.clone()
    }

    fn use_identities<'a>(
        &'a self,
        selectors: &'a SelectorSet,
        hold: bool,
    ) -> BoxFuture<'a, InUse> {
        async move {
            let subscription = self.subscriptions.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = tokio::sync::oneshot::channel();
            let message = AgentMsg::Use {
                subscription,
                selectors: selectors.clone(),
                hold,
                reply: tx.into(),
                span: tracing::Span::current(),
            };
            if self.core.send_message(message).is_err() {
                return InUse::default();
            }
            // Released by message, after the `Use` in the same mailbox: ends the hold whether
            // or not the answer came in time.
            let mut held = if hold {
                let core = self.core.clone();
                InUse::new(move || {
                    let _ = core.send_message(AgentMsg::Release(subscription));
                })
            } else {
                InUse::default()
            };
            if let Ok(Ok(generation)) = tokio::time::timeout(self.on_demand_timeout, rx).await {
                held.generation = Some(generation);
            }
            held
        }
        .boxed()
    }

    fn fetch_jwt<'a>(
        &'a self,
        identity: &'a Identity,
        audience: &'a [String],
    ) -> BoxFuture<'a, Result<HeldJwtSvid, JwtFetchError>> {
        async move {
            let id = identity.entry.id.clone();
            let audience = audience.to_vec();
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.core
                .send_message(AgentMsg::FetchJwt(
                    id,
                    audience,
                    tx.into(),
                    tracing::Span::current(),
                ))
                .map_err(|e| JwtFetchError::Unavailable(e.to_string()))?;
            match tokio::time::timeout(self.jwt_timeout, rx).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err(JwtFetchError::Unavailable("the agent stopped".into())),
                Err(_) => Err(JwtFetchError::Unavailable(format!(
                    "no JWT-SVID within {:?}",
                    self.jwt_timeout
                ))),
            }
        }
        .boxed()
    }
}
