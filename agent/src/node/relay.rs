//! The Workload API's identity source across node sessions. Each attestation of the node
//! (the first, and every re-attestation after the server refused the agent) runs its own
//! [`AgentRuntime`]; the Workload API keeps one [`Relay`], which republishes the snapshots
//! of the current runtime and sends JWT-SVID requests to it. Open workload streams hold the
//! relay's receivers, so they survive a re-attestation without noticing it; the entries they
//! hold in use (the SVID cache keeps and renews them) are held again in the new runtime.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tessera_actors::agent::runtime::AgentRuntime;
use tessera_actors::agent::view::{
    HeldJwtSvid, Identity, IdentitySnapshot, InUse, JwtFetchError, WorkloadSource,
};
use tessera_identity::SelectorSet;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a caller whose SVIDs were just signed waits for the relay to republish the
/// snapshot holding them (the copy is a task hop away; across a re-attestation the runtimes'
/// generations do not compare, and this bounds the wait).
const REPUBLISH_WAIT: Duration = Duration::from_secs(1);

/// The identity source the Workload API serves from, whatever runtime is current.
#[derive(Debug)]
pub(crate) struct Relay {
    snapshots: watch::Sender<Arc<IdentitySnapshot>>,
    current: Mutex<Current>,
    /// Open streams' holds: their selectors and the hold in the current runtime.
    holds: Holds,
    next_hold: AtomicU64,
}

type Holds = Arc<Mutex<HashMap<u64, (SelectorSet, InUse)>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves a valid value: keep using it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug)]
struct Current {
    runtime: AgentRuntime,
    forward: JoinHandle<()>,
}

impl Relay {
    /// A relay of `runtime`. Must be called inside a tokio runtime.
    pub(crate) fn new(runtime: AgentRuntime) -> Arc<Self> {
        let (snapshots, _) = watch::channel(runtime.identities().borrow().clone());
        let forward = forward(&runtime, snapshots.clone());
        Arc::new(Self {
            snapshots,
            current: Mutex::new(Current { runtime, forward }),
            holds: Arc::default(),
            next_hold: AtomicU64::new(0),
        })
    }

    /// Serves from `runtime` from now on; its current snapshot is published at once, and the
    /// open streams' holds move to it (otherwise their SVIDs, outside the new runtime's
    /// eager set, would be evicted or never renewed).
    pub(crate) fn switch(&self, runtime: AgentRuntime) {
        let forward = forward(&runtime, self.snapshots.clone());
        let old = std::mem::replace(
            &mut *self.lock(),
            Current {
                runtime: runtime.clone(),
                forward,
            },
        );
        old.forward.abort();
        let open: Vec<(u64, SelectorSet)> = lock(&self.holds)
            .iter()
            .map(|(id, (selectors, _))| (*id, selectors.clone()))
            .collect();
        for (id, selectors) in open {
            let (holds, runtime) = (self.holds.clone(), runtime.clone());
            tokio::spawn(async move {
                let held = runtime.use_identities(&selectors, true).await;
                // The old hold is released by replacement; a stream closed meanwhile drops
                // the new one at once.
                let replaced = match lock(&holds).get_mut(&id) {
                    Some(slot) => std::mem::replace(&mut slot.1, held),
                    None => held,
                };
                drop(replaced);
            });
        }
    }

    /// The runtime served from.
    pub(crate) fn runtime(&self) -> AgentRuntime {
        self.lock().runtime.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        lock(&self.current)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.lock().forward.abort();
    }
}

/// Copies every snapshot `runtime` publishes into `to`, starting with its current one, until
/// the runtime stops (or the task is aborted by a switch).
fn forward(runtime: &AgentRuntime, to: watch::Sender<Arc<IdentitySnapshot>>) -> JoinHandle<()> {
    let mut from = runtime.identities();
    tokio::spawn(async move {
        loop {
            let snapshot = from.borrow_and_update().clone();
            to.send_replace(snapshot);
            if from.changed().await.is_err() {
                return;
            }
        }
    })
}

impl WorkloadSource for Relay {
    fn identities(&self) -> watch::Receiver<Arc<IdentitySnapshot>> {
        self.snapshots.subscribe()
    }

    fn use_identities<'a>(
        &'a self,
        selectors: &'a SelectorSet,
        hold: bool,
    ) -> BoxFuture<'a, InUse> {
        let runtime = self.runtime();
        async move {
            let held = runtime.use_identities(selectors, hold).await;
            let generation = held.generation;
            if let Some(generation) = generation {
                let mut relayed = self.snapshots.subscribe();
                let _ = tokio::time::timeout(
                    REPUBLISH_WAIT,
                    relayed.wait_for(|s| s.generation >= generation),
                )
                .await;
            }
            if !hold {
                return held;
            }
            // The relay keeps the runtime's hold, so a re-attestation can move it.
            let id = self.next_hold.fetch_add(1, Ordering::Relaxed);
            lock(&self.holds).insert(id, (selectors.clone(), held));
            let holds = self.holds.clone();
            let mut relayed = InUse::new(move || {
                let removed = lock(&holds).remove(&id);
                drop(removed);
            });
            relayed.generation = generation;
            relayed
        }
        .boxed()
    }

    fn fetch_jwt<'a>(
        &'a self,
        identity: &'a Identity,
        audience: &'a [String],
    ) -> BoxFuture<'a, Result<HeldJwtSvid, JwtFetchError>> {
        let runtime = self.runtime();
        async move { runtime.fetch_jwt(identity, audience).await }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::stream::BoxStream;
    use futures::StreamExt;
    use tessera_actors::agent::cache::Cache;
    use tessera_actors::agent::core::AgentArgs;
    use tessera_actors::agent::rotation::RotationSettings;
    use tessera_actors::agent::runtime::Backoff;
    use tessera_actors::agent::server_client::{
        ClientError, MintedJwt, ServerClient, SignedX509, SyncMessage,
    };
    use tessera_actors::random::OsRandom;
    use tessera_eventlog::SystemClock;
    use tessera_identity::{Bundle, EntryId, TrustDomain};

    use super::*;

    /// A server whose sync stream sends one snapshot holding a bundle with `sequence`.
    #[derive(Debug)]
    struct OneBundle(u64);

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").unwrap()
    }

    impl ServerClient for OneBundle {
        fn sync(
            &self,
            _: u64,
        ) -> BoxFuture<'_, Result<BoxStream<'static, Result<SyncMessage, ClientError>>, ClientError>>
        {
            let mut bundle = Bundle::new(td());
            bundle.set_sequence_number(self.0);
            let snapshot = SyncMessage::Snapshot {
                seq: self.0,
                entries: Vec::new(),
                bundles: vec![bundle],
            };
            let stream = futures::stream::iter([Ok(snapshot)]).chain(futures::stream::pending());
            async move { Ok(stream.boxed()) }.boxed()
        }

        fn sign_x509(
            &self,
            _: Vec<(EntryId, Vec<u8>)>,
        ) -> BoxFuture<'_, Result<Vec<Result<SignedX509, String>>, ClientError>> {
            async { Err(ClientError::Unavailable("not in this test".into())) }.boxed()
        }

        fn mint_jwt(
            &self,
            _: EntryId,
            _: Vec<String>,
        ) -> BoxFuture<'_, Result<MintedJwt, ClientError>> {
            async { Err(ClientError::Unavailable("not in this test".into())) }.boxed()
        }
    }

    async fn runtime(sequence: u64) -> AgentRuntime {
        let (runtime, _) = AgentRuntime::start(
            AgentArgs {
                trust_domain: td(),
                cache: Cache::default(),
                client: Arc::new(OneBundle(sequence)),
                clock: Arc::new(SystemClock),
                rotation: RotationSettings {
                    renew_at_percent: 50,
                    jitter_percent: 10,
                    batch: 10,
                    ..RotationSettings::default()
                },
                persist: None,
            },
            Arc::new(OsRandom::new()),
            Backoff::default(),
        )
        .await
        .unwrap();
        runtime
    }

    async fn sequence_seen(rx: &mut watch::Receiver<Arc<IdentitySnapshot>>, want: u64) {
        tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|s| s.bundle.as_ref().map(Bundle::sequence_number) == Some(want)),
        )
        .await
        .expect("the snapshot within 10 s")
        .expect("the relay is open");
    }

    #[tokio::test]
    async fn an_open_receiver_follows_the_relay_across_runtimes() {
        let first = runtime(1).await;
        let relay = Relay::new(first.clone());
        let mut open = relay.identities();
        sequence_seen(&mut open, 1).await;

        let second = runtime(2).await;
        relay.switch(second.clone());
        first.stop();
        sequence_seen(&mut open, 2).await;
        assert_eq!(
            relay.runtime().core().get_id(),
            second.core().get_id(),
            "JWT-SVID requests go to the current runtime"
        );
        second.stop();
    }
}
