//! The node side of the agent: attest (or reuse the stored agent SVID), connect to the server
//! over mTLS, follow the sync stream into the cache, keep workload SVIDs and the agent SVID
//! fresh, and hand the Workload API its [`WorkloadSource`].
//!
//! ```text
//!  start ── Store (data dir) ── stored SVID? ──no──▶ attest (join_token | x509pop)
//!    │                                               │
//!    ▼                                               ▼
//!  GrpcClient (mTLS) ◀──── ServerTrust (bundle: --trustBundle, then synced; every
//!    │   │                               server's CA, each server checked by SPIFFE ID)
//!    │   └─ Link: one server at a time, chosen at random among Servers (the addresses,
//!    │            resolved at each connection); on failure the next one, sync resumed there
//!    │            from the cursor
//!    │
//!  supervise ── Session: AgentRuntime (tessera-actors: AgentCore + sync loop),
//!    │                   agent SVID renewal at half-life, refusal signs
//!    │          refused? x509pop: attest again, new Session │ join_token: stop (token spent)
//!    ▼
//!  Relay ──▶ WorkloadSource (survives sessions) ──▶ bundle follower, Workload API
//! ```
//!
//! If no server is reachable the agent keeps serving what its cache holds until it expires;
//! a restarted agent serves its persisted cache at once. Failing over between servers does
//! not touch the cache: open Workload API streams stay open.

mod attest;
mod backoff;
mod client;
mod convert;
mod metrics;
mod relay;
mod servers;
mod session;
mod store;
mod supervise;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use tessera_actors::agent::view::WorkloadSource;
use tessera_actors::random::{OsRandom, RandomSource};
use tessera_eventlog::{Clock, SystemClock};
use tessera_identity::{Bundle, TrustDomain};
use tokio::sync::watch;
use x509_parser::prelude::FromDer;

pub use attest::AttestFailure;
pub use store::StoreError;

use self::backoff::Backoff;
use self::client::GrpcClient;
use self::metrics::NodeMetrics;
use self::relay::Relay;
use self::servers::Servers;
use self::session::{Session, Shared};
use self::store::Store;
use self::tls::{ClientIdentity, ServerTrust};
use crate::config::{AgentConfig, NodeAttestorConfig};
use crate::shutdown::{Shutdown, ShutdownTrigger};

/// Longest wait, when the agent stops, for the node side to write its cache.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Attestation attempts while no server answers (about five minutes with [`ATTEST_BACKOFF`]).
const ATTEST_ATTEMPTS: u32 = 12;

/// Longest attestation attempt: a server that accepts the connection but never answers is
/// given up on, and another one tried.
const ATTEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Pauses between attestation attempts; each attempt goes to another server when there is one.
const ATTEST_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(30),
};

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

/// Starts the node side; its metrics go to `registry`.
pub async fn start(
    config: &AgentConfig,
    registry: &prometheus::Registry,
) -> Result<NodeHandle, NodeError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let metrics = NodeMetrics::register_with_clock(registry, clock.clone())
        .map_err(|e| NodeError::Start(format!("node metrics: {e}")))?;
    let random: Arc<dyn RandomSource> = Arc::new(OsRandom::new());
    let servers = Arc::new(Servers::new(config.servers.clone(), random));
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
    let (identity, bundle, start_at) = match stored
        .filter(|id| not_after(id).is_some_and(|(_, na)| na > now + 30))
    {
        Some(id) if stored_bundle.is_some() => (
            id,
            stored_bundle
                .clone()
                .unwrap_or_else(|| Bundle::new(td.clone())),
            None,
        ),
        _ => {
            let attestor = config
                .node_attestor
                .as_ref()
                .ok_or_else(|| NodeError::NoAttestor(config.data_dir.display().to_string()))?;
            let attested = attest_with_retry(&servers, &td, bootstrap_trust.clone(), attestor)
                .await
                .map_err(|e| NodeError::Attest(e.to_string()))?;
            tracing::info!(reattestable = attested.reattestable, server = %attested.server, "node attested");
            store
                .save_identity(&attested.identity)
                .map_err(|e| NodeError::Store(e.to_string()))?;
            store
                .save_bundle(&attested.bundle)
                .map_err(|e| NodeError::Store(e.to_string()))?;
            (attested.identity, attested.bundle, Some(attested.server))
        }
    };

    let trust = ServerTrust::bundle(bundle);
    let client = Arc::new(
        GrpcClient::new(
            servers,
            td.clone(),
            trust,
            &identity,
            start_at,
            Some(metrics),
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

/// Attests with `attestor` to one of `servers`, moving to another server (when there is
/// one) and backing off while none answers ([`ATTEST_ATTEMPTS`]); a refusal is not retried.
async fn attest_with_retry(
    servers: &Servers,
    trust_domain: &TrustDomain,
    trust: Arc<ServerTrust>,
    attestor: &NodeAttestorConfig,
) -> Result<attest::Attested, AttestFailure> {
    let mut last = String::new();
    for failures in 1..=ATTEST_ATTEMPTS {
        let error = match servers.next().await {
            Ok(target) => {
                let attempt = attest::attest(&target, trust_domain, trust.clone(), attestor);
                let outcome = tokio::time::timeout(ATTEST_TIMEOUT, attempt)
                    .await
                    .unwrap_or_else(|_| {
                        Err(AttestFailure::Unavailable(format!(
                            "no answer within {ATTEST_TIMEOUT:?}"
                        )))
                    });
                match outcome {
                    Ok(a) => {
                        servers.succeeded();
                        return Ok(a);
                    }
                    Err(AttestFailure::Unavailable(e)) => {
                        servers.failed(&target);
                        format!("{target}: {e}")
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => e,
        };
        let delay = ATTEST_BACKOFF.delay(failures, servers.roll());
        tracing::warn!(%error, ?delay, "no server answered the attestation; trying again");
        last = error;
        if failures < ATTEST_ATTEMPTS {
            tokio::time::sleep(delay).await;
        }
    }
    Err(AttestFailure::Unavailable(format!(
        "no server ({}) answered in {ATTEST_ATTEMPTS} attempts over about five minutes; last: {last}",
        servers.describe()
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
