//! One attested identity of the node: the agent runtime (core and sync loop) started from the
//! persisted cache, the renewal of the agent SVID at half-life, and the signs that the server
//! no longer accepts the agent (evicted or banned):
//!
//! - the sync stream is refused (the runtime's [`AgentRuntime::refused`]);
//! - a renewal of the agent SVID is refused.
//!
//! The server closes an evicted or banned agent's sync stream after removing its view, so the
//! reconnect that follows is what is refused.
//!
//! A session ends with [`Session::stop`]; the node's supervisor then attests again and starts
//! a new one, or stops the agent.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use tessera_actors::agent::core::{AgentArgs, PersistFn};
use tessera_actors::agent::rotation::RotationSettings;
use tessera_actors::agent::runtime::{AgentRuntime, Backoff};
use tessera_actors::agent::server_client::{ClientError, Refusal};
use tessera_actors::agent::taint::chains_to_tainted;
use tessera_actors::agent::view::{IdentitySnapshot, WorkloadSource};
use tessera_actors::random::OsRandom;
use tessera_eventlog::Clock;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::client::GrpcClient;
use super::store::Store;
use super::tls::ClientIdentity;
use super::{not_after, now_secs, NodeError};
use crate::config::AgentConfig;

/// Longest wait for a stopping core to write its cache.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Delay before retrying a failed renewal of the agent SVID.
const RENEW_RETRY: Duration = Duration::from_secs(30);

/// What every session of a node uses.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) config: AgentConfig,
    pub(super) store: Store,
    pub(super) client: Arc<GrpcClient>,
    pub(super) clock: Arc<dyn Clock>,
    /// Where a session reports a failure the node cannot recover from.
    pub(super) failed: watch::Sender<Option<NodeError>>,
}

/// A running session.
#[derive(Debug)]
pub(super) struct Session {
    runtime: AgentRuntime,
    /// The identity it runs with.
    identity: ClientIdentity,
    /// When it started, Unix seconds.
    started_at: i64,
    sync: JoinHandle<()>,
    renewal: JoinHandle<()>,
    /// Refusals seen by the renewal (the sync stream reports its own through the runtime).
    refused: watch::Receiver<Option<Refusal>>,
}

impl Session {
    /// Starts a session with `identity` (already presented by `shared.client`), from the
    /// cache stored under the data dir.
    pub(super) async fn start(
        shared: &Arc<Shared>,
        identity: ClientIdentity,
    ) -> Result<Self, NodeError> {
        let config = &shared.config;
        let persist_store = shared.store.clone();
        let persist: PersistFn = Arc::new(move |cache| {
            if let Err(e) = persist_store.save_cache(cache) {
                tracing::warn!(error = %e, "cannot persist the cache");
            }
        });
        let (runtime, sync) = AgentRuntime::start(
            AgentArgs {
                trust_domain: config.trust_domain.clone(),
                cache: shared.store.load_cache(),
                client: shared.client.clone(),
                clock: shared.clock.clone(),
                rotation: RotationSettings {
                    renew_at_percent: 50,
                    jitter_percent: config.rotation.jitter_percent,
                    batch: config.rotation.batch_size,
                    key_type: config.workload_x509_svid_key_type,
                    x509_svid_cache_max_size: config.x509_svid_cache_max_size,
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
        let (refused_tx, refused) = watch::channel(None);
        let refused_tx = Arc::new(refused_tx);
        let renewal = spawn_renewal(
            shared.clone(),
            identity.clone(),
            refused_tx,
            runtime.identities(),
        );
        Ok(Self {
            runtime,
            identity,
            started_at: now_secs(shared.clock.as_ref()),
            sync,
            renewal,
            refused,
        })
    }

    /// Its runtime.
    pub(super) fn runtime(&self) -> &AgentRuntime {
        &self.runtime
    }

    /// The agent SVID it started with.
    pub(super) fn identity(&self) -> &ClientIdentity {
        &self.identity
    }

    /// When it started, Unix seconds.
    pub(super) fn started_at(&self) -> i64 {
        self.started_at
    }

    /// Resolves, with the server's reason, once the server refuses the agent.
    pub(super) async fn refused(&mut self) -> Refusal {
        let refused = &mut self.refused;
        let seen = async {
            let reason = refused
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|r| r.clone());
            match reason {
                Some(reason) => reason,
                // The renewal ended without a refusal (its sender is gone): only the
                // runtime's own signal is left.
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            reason = self.runtime.refused() => reason,
            reason = seen => reason,
        }
    }

    /// Stops its tasks and its core, which writes the cache before it ends.
    pub(super) async fn stop(self) {
        self.renewal.abort();
        self.sync.abort();
        if let Err(e) = self
            .runtime
            .core()
            .stop_and_wait(Some("session ends".into()), Some(STOP_TIMEOUT))
            .await
        {
            tracing::warn!(error = %e, "the agent core did not stop cleanly");
        }
    }
}

/// Renews the agent SVID at half its lifetime, or at once when the synced bundle taints the
/// authority it chains to (forced rotation); a refusal ends the session.
fn spawn_renewal(
    shared: Arc<Shared>,
    mut identity: ClientIdentity,
    refused: Arc<watch::Sender<Option<Refusal>>>,
    mut snapshots: watch::Receiver<Arc<IdentitySnapshot>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now = now_secs(shared.clock.as_ref());
            let wait = match not_after(&identity) {
                Some((nb, na)) => (nb + (na - nb) / 2 - now).max(1),
                None => 60,
            };
            let half_life =
                tokio::time::sleep(Duration::from_secs(u64::try_from(wait).unwrap_or(60)));
            let forced = tokio::select! {
                () = half_life => false,
                () = tainted(&mut snapshots, &identity) => true,
            };
            if forced {
                tracing::info!("the agent SVID chains to a tainted authority; renewing it now");
            }
            match renew(&shared.client).await {
                Ok(new) => {
                    if let Err(e) = shared.store.save_identity(&new) {
                        tracing::warn!(error = %e, "cannot store the renewed agent SVID");
                    }
                    if let Err(e) = shared.client.set_identity(&new) {
                        shared.failed.send_replace(Some(NodeError::Start(e)));
                        return;
                    }
                    identity = new;
                    tracing::info!("agent SVID renewed");
                    if forced && tainted_now(&snapshots, &identity) {
                        // The server signed it with a tainted CA again: no renewal loop.
                        tracing::warn!(retry_in = ?RENEW_RETRY, "the renewed agent SVID still chains to a tainted authority");
                        tokio::time::sleep(RENEW_RETRY).await;
                    }
                }
                Err(ClientError::Refused(reason)) => {
                    tracing::warn!(%reason, "the server refused to renew the agent SVID");
                    refused.send_replace(Some(reason));
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?RENEW_RETRY, "agent SVID renewal failed");
                    tokio::time::sleep(RENEW_RETRY).await;
                }
            }
        }
    })
}

/// Resolves once the synced bundle marks an authority that `identity` chains to tainted.
async fn tainted(
    snapshots: &mut watch::Receiver<Arc<IdentitySnapshot>>,
    identity: &ClientIdentity,
) {
    loop {
        if tainted_now(snapshots, identity) {
            snapshots.mark_unchanged();
            return;
        }
        if snapshots.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

fn tainted_now(
    snapshots: &watch::Receiver<Arc<IdentitySnapshot>>,
    identity: &ClientIdentity,
) -> bool {
    snapshots
        .borrow()
        .bundle
        .as_ref()
        .is_some_and(|b| chains_to_tainted(&identity.cert_chain, b))
}

async fn renew(client: &GrpcClient) -> Result<ClientIdentity, ClientError> {
    let local = |e: rcgen::Error| ClientError::Rejected(format!("agent SVID key or CSR: {e}"));
    let key = KeyPair::generate().map_err(local)?;
    let csr = CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .map_err(local)?;
    let (chain, _) = client.renew(csr.der().to_vec()).await?;
    Ok(ClientIdentity {
        cert_chain: chain,
        key_pkcs8: Arc::new(zeroize::Zeroizing::new(key.serialize_der())),
    })
}
