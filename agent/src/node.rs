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
//!  AgentRuntime (tessera-actors): AgentCore + sync loop ──▶ WorkloadSource
//!    │
//!  tasks: agent SVID renewal at half-life · bundle follower · re-attest on refusal
//! ```
//!
//! If the server is unreachable the agent keeps serving what its cache holds until it
//! expires; a restarted agent serves its persisted cache at once.

mod attest;
mod client;
mod convert;
mod store;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use tessera_actors::agent::core::{AgentArgs, PersistFn};
use tessera_actors::agent::rotation::RotationSettings;
use tessera_actors::agent::runtime::{AgentRuntime, Backoff};
use tessera_actors::agent::view::WorkloadSource;
use tessera_actors::random::OsRandom;
use tessera_eventlog::{Clock, SystemClock};
use tessera_identity::Bundle;
use tokio::sync::watch;
use x509_parser::prelude::FromDer;

pub use attest::AttestFailure;
pub use store::StoreError;

use self::client::GrpcClient;
use self::store::Store;
use self::tls::{ClientIdentity, ServerTrust};
use crate::config::{AgentConfig, NodeAttestorConfig};

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
    /// Internal start-up failure.
    #[error("cannot start the agent: {0}")]
    Start(String),
}

/// A running node side.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    runtime: AgentRuntime,
    failed: watch::Receiver<Option<NodeError>>,
}

impl NodeHandle {
    /// What the Workload API serves from.
    pub fn source(&self) -> Arc<dyn WorkloadSource> {
        Arc::new(self.runtime.clone())
    }

    /// Resolves when the node side has stopped for good (e.g. evicted with a spent join token).
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

    /// Stops the agent's actors.
    pub fn stop(&self) {
        self.runtime.stop();
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
                let attested = attest_with_retry(config, bootstrap_trust.clone(), attestor).await?;
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
    let persist_store = store.clone();
    let persist: PersistFn = Arc::new(move |cache| {
        if let Err(e) = persist_store.save_cache(cache) {
            tracing::warn!(error = %e, "cannot persist the cache");
        }
    });
    let (runtime, _sync) = AgentRuntime::start(
        AgentArgs {
            trust_domain: td.clone(),
            cache: store.load_cache(),
            client: client.clone(),
            clock: clock.clone(),
            rotation: RotationSettings {
                renew_at_percent: 50,
                jitter_percent: config.rotation.jitter_percent,
                batch: config.rotation.batch_size,
            },
            persist: Some(persist),
        },
        Arc::new(OsRandom::new()),
        Backoff {
            initial: config.sync.backoff_initial,
            max: config.sync.backoff_max,
        },
    )
    .await
    .map_err(|e| NodeError::Start(e.to_string()))?;

    let (failed_tx, failed) = watch::channel(None);
    let failed_tx = Arc::new(failed_tx);
    spawn_bundle_follower(&runtime, client.clone(), store.clone());
    spawn_renewal(
        identity,
        client.clone(),
        store.clone(),
        clock.clone(),
        failed_tx.clone(),
    );
    spawn_refusal_watch(runtime.clone(), config.clone(), failed_tx);
    Ok(NodeHandle { runtime, failed })
}

async fn attest_with_retry(
    config: &AgentConfig,
    trust: Arc<ServerTrust>,
    attestor: &NodeAttestorConfig,
) -> Result<attest::Attested, NodeError> {
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
            Err(e) => return Err(NodeError::Attest(e.to_string())),
        }
    }
    Err(NodeError::Attest(format!(
        "server {}:{} unreachable for about five minutes",
        config.server_address, config.server_port
    )))
}

/// The synced bundle becomes what the agent trusts the server by, and is stored for restarts.
fn spawn_bundle_follower(runtime: &AgentRuntime, client: Arc<GrpcClient>, store: Store) {
    let mut rx = runtime.identities();
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

/// Renews the agent SVID at half its lifetime.
fn spawn_renewal(
    mut identity: ClientIdentity,
    client: Arc<GrpcClient>,
    store: Store,
    clock: Arc<dyn Clock>,
    failed: Arc<watch::Sender<Option<NodeError>>>,
) {
    tokio::spawn(async move {
        loop {
            let now = now_secs(clock.as_ref());
            let wait = match not_after(&identity) {
                Some((nb, na)) => (nb + (na - nb) / 2 - now).max(1),
                None => 60,
            };
            tokio::time::sleep(Duration::from_secs(u64::try_from(wait).unwrap_or(60))).await;
            let renewed = async {
                let key = KeyPair::generate().map_err(|e| e.to_string())?;
                let csr = CertificateParams::new(Vec::<String>::new())
                    .and_then(|p| p.serialize_request(&key))
                    .map_err(|e| e.to_string())?;
                let (chain, _) = client
                    .renew(csr.der().to_vec())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(ClientIdentity {
                    cert_chain: chain,
                    key_pkcs8: Arc::new(zeroize::Zeroizing::new(key.serialize_der())),
                })
            }
            .await;
            match renewed {
                Ok(new) => {
                    if let Err(e) = store.save_identity(&new) {
                        tracing::warn!(error = %e, "cannot store the renewed agent SVID");
                    }
                    if let Err(e) = client.set_identity(&new) {
                        failed.send_replace(Some(NodeError::Start(e)));
                        return;
                    }
                    identity = new;
                    tracing::info!("agent SVID renewed");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "agent SVID renewal failed; retrying in 30 s");
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            }
        }
    });
}

/// When the server refuses the agent (evicted, banned): re-attest if the attestor allows it
/// (x509pop), else stop with a clear error (a join token is spent).
fn spawn_refusal_watch(
    runtime: AgentRuntime,
    config: AgentConfig,
    failed: Arc<watch::Sender<Option<NodeError>>>,
) {
    tokio::spawn(async move {
        let reason = runtime.refused().await;
        let error = match &config.node_attestor {
            Some(NodeAttestorConfig::X509Pop(_)) => NodeError::Refused(format!(
                "the server refused this agent ({reason}); restart it to attest again with x509pop"
            )),
            _ => NodeError::Refused(format!(
                "the server refused this agent ({reason}); its join token is spent: generate a new one with `tessera-server token generate`, delete {}/agent_svid.pem and restart with --joinToken",
                config.data_dir.display()
            )),
        };
        failed.send_replace(Some(error));
    });
}
