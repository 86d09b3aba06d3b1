//! The node side of the agent: attest (or reuse the stored agent SVID), connect to the server
//! over mTLS, follow the sync stream into the cache, keep workload SVIDs and the agent SVID
//! fresh, and hand the Workload API its [`WorkloadSource`].
//!
//! ```text
//!  start ── Store (data dir) ── stored SVID? ──no──▶ attest (join_token | x509pop)
//!    │                                               │
//!    ▼                                               ▼
//!  GrpcClient (mTLS) ◀──── ServerTrust (bundle: --trustBundle, then synced)
//!    │
//!  supervise ── Session: AgentRuntime (tessera-actors: AgentCore + sync loop),
//!    │                   agent SVID renewal at half-life, refusal signs
//!    │          refused? x509pop: attest again, new Session │ join_token: stop (token spent)
//!    ▼
//!  Relay ──▶ WorkloadSource (survives sessions) ──▶ bundle follower, Workload API
//! ```
//!
//! If the server is unreachable the agent keeps serving what its cache holds until it
//! expires; a restarted agent serves its persisted cache at once.

mod attest;
mod client;
mod convert;
mod relay;
mod session;
mod store;
mod supervise;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use tessera_actors::agent::view::WorkloadSource;
use tessera_eventlog::{Clock, SystemClock};
use tessera_identity::Bundle;
use tokio::sync::watch;
use x509_parser::prelude::FromDer;

pub use attest::AttestFailure;
pub use store::StoreError;

use self::client::GrpcClient;
use self::relay::Relay;
use self::session::{Session, Shared};
use self::store::Store;
use self::tls::{ClientIdentity, ServerTrust};
use crate::config::{AgentConfig, NodeAttestorConfig};
use crate::shutdown::{Shutdown, ShutdownTrigger};

/// Longest wait, when the agent stops, for the node side to write its cache.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the node side stopped or could not start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// A file under the data dir.
    #[error("{0}")]
    Store(String),
    /// Nothing to trust the server by.
    #[error("no trust bundle for the server: pass --trustBundle <PEM from `tessera-server bundle show`>, or --insecureBootstrap for a first attestation on a trusted network")]
    NoTrust,
    /// No stored SVID and no attestor.
    #[error("no stored agent SVID under {0} and no node attestor configured: pass --joinToken <token from `tessera-server token generate`> or configure x509pop")]
    NoAttestor(String),
    /// Attestation failed.
    #[error("node attestation failed: {0}")]
    Attest(String),
    /// The server no longer accepts the agent and it cannot attest again.
    #[error("{0}")]
    Refused(String),
    /// The server banned the agent: it refuses the agent, and its attestation, until an
    /// operator deletes the agent's record.
    #[error("agent {agent_id} is banned by the server, which refuses it and its attestation; the agent stops. To let it attest again, delete its record on the server with `tessera-server agent evict --spiffeID {agent_id}`, then restart the agent")]
    Banned {
        /// The agent's SPIFFE ID.
        agent_id: String,
        /// The server's answer.
        reason: String,
    },
    /// Internal start-up failure.
    #[error("cannot start the agent: {0}")]
    Start(String),
}

/// A running node side.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    relay: Arc<Relay>,
    failed: watch::Receiver<Option<NodeError>>,
    stop: Arc<ShutdownTrigger>,
    /// Set when the supervisor has stopped the last session (its core wrote the cache).
    stopped: watch::Receiver<bool>,
}

impl NodeHandle {
    /// What the Workload API serves from, across re-attestations.
    pub fn source(&self) -> Arc<dyn WorkloadSource> {
        self.relay.clone()
    }

    /// Resolves when the node side has stopped for good (e.g. evicted with a spent join token,
    /// or banned).
    pub async fn failed(&self) -> NodeError {
        let mut rx = self.failed.clone();
        loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                return e;
            }
            if rx.changed().await.is_err() {
                return NodeError::Start("node tasks stopped".into());
            }
        }
    }

    /// Stops the agent's actors, and any re-attestation under way, and waits (bounded) until
    /// the cache is written.
    pub async fn stop(&self) {
        self.stop.fire();
        let mut stopped = self.stopped.clone();
        if tokio::time::timeout(STOP_TIMEOUT, stopped.wait_for(|s| *s))
            .await
            .is_err()
        {
            tracing::warn!(after = ?STOP_TIMEOUT, "the node side did not stop in time");
            self.relay.runtime().stop();
        }
    }
}

fn not_after(identity: &ClientIdentity) -> Option<(i64, i64)> {
    let leaf = identity.cert_chain.first()?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf).ok()?;
    Some((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}

fn now_secs(clock: &dyn Clock) -> i64 {
    clock.now_unix_nanos().div_euclid(1_000_000_000)
}

/// Starts the node side.
pub async fn start(config: &AgentConfig) -> Result<NodeHandle, NodeError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Store::open(&config.data_dir).map_err(|e| NodeError::Store(e.to_string()))?;
    let td = config.trust_domain.clone();

    // Trust: the bundle synced last time, else --trustBundle, else an explicit insecure bootstrap.
    let stored_bundle = store
        .load_bundle(&td)
        .map_err(|e| NodeError::Store(e.to_string()))?;
    let given_bundle = match &config.trust_bundle_path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| NodeError::Store(format!("--trustBundle {}: {e}", p.display())))?;
            Some(
                Bundle::from_x509_pem(td.clone(), &text)
                    .map_err(|e| NodeError::Store(format!("--trustBundle {}: {e}", p.display())))?,
            )
        }
        None => None,
    };
    let bootstrap_trust = match stored_bundle.clone().or(given_bundle) {
        Some(b) => ServerTrust::bundle(b),
        None if config.insecure_bootstrap => Arc::new(ServerTrust::InsecureBootstrap),
        None => return Err(NodeError::NoTrust),
    };

    // Identity: the stored agent SVID while it is valid, else attest.
    let now = now_secs(clock.as_ref());
    let stored = store
        .load_identity()
        .map_err(|e| NodeError::Store(e.to_string()))?;
    let (identity, bundle) =
        match stored.filter(|id| not_after(id).is_some_and(|(_, na)| na > now + 30)) {
            Some(id) if stored_bundle.is_some() => (
                id,
                stored_bundle
                    .clone()
                    .unwrap_or_else(|| Bundle::new(td.clone())),
            ),
            _ => {
                let attestor = config
                    .node_attestor
                    .as_ref()
                    .ok_or_else(|| NodeError::NoAttestor(config.data_dir.display().to_string()))?;
                let attested = attest_with_retry(config, bootstrap_trust.clone(), attestor)
                    .await
                    .map_err(|e| NodeError::Attest(e.to_string()))?;
                tracing::info!(reattestable = attested.reattestable, "node attested");
                store
                    .save_identity(&attested.identity)
                    .map_err(|e| NodeError::Store(e.to_string()))?;
                store
                    .save_bundle(&attested.bundle)
                    .map_err(|e| NodeError::Store(e.to_string()))?;
                (attested.identity, attested.bundle)
            }
        };

    let trust = ServerTrust::bundle(bundle);
    let client = Arc::new(
        GrpcClient::new(
            config.server_address.clone(),
            config.server_port,
            td.clone(),
            trust,
            &identity,
        )
        .map_err(NodeError::Start)?,
    );
    let (failed_tx, failed) = watch::channel(None);
    let shared = Arc::new(Shared {
        config: config.clone(),
        store: store.clone(),
        client: client.clone(),
        clock,
        failed: failed_tx,
    });
    let session = Session::start(&shared, identity).await?;
    let relay = Relay::new(session.runtime().clone());
    spawn_bundle_follower(&relay, client, store);
    let (trigger, stop) = Shutdown::new();
    let (stopped_tx, stopped) = watch::channel(false);
    let supervised = relay.clone();
    tokio::spawn(async move {
        supervise::supervise(shared, session, supervised, stop).await;
        stopped_tx.send_replace(true);
    });
    Ok(NodeHandle {
        relay,
        failed,
        stop: Arc::new(trigger),
        stopped,
    })
}

/// Attests with `attestor`, retrying with backoff while the server is unreachable (about five
/// minutes); a refusal is not retried.
async fn attest_with_retry(
    config: &AgentConfig,
    trust: Arc<ServerTrust>,
    attestor: &NodeAttestorConfig,
) -> Result<attest::Attested, AttestFailure> {
    let mut delay = Duration::from_millis(500);
    // Bounded: about five minutes of retries while the server is unreachable.
    for _ in 0..12 {
        match attest::attest(
            &config.server_address,
            config.server_port,
            &config.trust_domain,
            trust.clone(),
            attestor,
        )
        .await
        {
            Ok(a) => return Ok(a),
            Err(AttestFailure::Unavailable(e)) => {
                tracing::warn!(error = %e, ?delay, "server unreachable for attestation; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e),
        }
    }
    Err(AttestFailure::Unavailable(format!(
        "server {}:{} unreachable for about five minutes",
        config.server_address, config.server_port
    )))
}

/// The synced bundle becomes what the agent trusts the server by, and is stored for restarts.
fn spawn_bundle_follower(relay: &Relay, client: Arc<GrpcClient>, store: Store) {
    let mut rx = relay.identities();
    tokio::spawn(async move {
        let mut last: Option<Bundle> = None;
        loop {
            let bundle = rx.borrow_and_update().bundle.clone();
            if let Some(b) = bundle.filter(|b| Some(b) != last.as_ref()) {
                client.set_bundle(b.clone());
                if let Err(e) = store.save_bundle(&b) {
                    tracing::warn!(error = %e, "cannot store the bundle");
                }
                last = Some(b);
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
}
