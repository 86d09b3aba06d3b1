//! One open Workload API stream: the first message goes out at once; then the task watches
//! the identity source and sends the caller's full view again whenever it changes (new or
//! deleted entry, rotation, bundle change) or a part of it expires. Views equal to the last
//! one sent are skipped. When the caller loses every identity it gets `PermissionDenied` and
//! the stream ends; when the caller goes away (cancel, disconnect) or the agent stops, the
//! task ends quietly.

use std::sync::Arc;
use std::time::Duration;

use tessera_actors::agent::view::{IdentitySnapshot, InUse};
use tessera_eventlog::Clock;
use tessera_identity::SelectorSet;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::error::ApiError;
use super::limits::StreamSlot;
use super::metrics::OpenStream;
use super::render::Rendered;
use crate::shutdown::Shutdown;

/// Builds the caller's message from a snapshot at a time.
pub(crate) type Render<T> =
    fn(&IdentitySnapshot, &SelectorSet, i64) -> Result<Rendered<T>, ApiError>;

/// What a stream task holds.
pub(crate) struct StreamTask<T> {
    pub(crate) selectors: SelectorSet,
    pub(crate) source: watch::Receiver<Arc<IdentitySnapshot>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) shutdown: Shutdown,
    pub(crate) slot: StreamSlot,
    pub(crate) gauge: OpenStream,
    pub(crate) render: Render<T>,
    /// Keeps the caller's entries in use (their SVIDs kept and renewed) while the stream is
    /// open.
    pub(crate) held: InUse,
}

/// The current time in Unix seconds.
pub(crate) fn unix_now(clock: &dyn Clock) -> i64 {
    clock.now_unix_nanos().div_euclid(1_000_000_000)
}

impl<T: Clone + PartialEq + Send + Sync + 'static> StreamTask<T> {
    /// Sends `first` at once and spawns the update loop; the returned stream is the response.
    pub(crate) fn spawn(self, first: Rendered<T>) -> ReceiverStream<Result<T, Status>> {
        // One message in flight: a slow reader holds the task at `send`, and a later change
        // is folded into the next snapshot rather than queued.
        let (tx, rx) = mpsc::channel(1);
        let initial = first.message.clone();
        // A fresh channel with capacity 1 always has room for the first message.
        let _ = tx.try_send(Ok(initial));
        tokio::spawn(self.run(tx, first));
        ReceiverStream::new(rx)
    }

    async fn run(mut self, tx: mpsc::Sender<Result<T, Status>>, first: Rendered<T>) {
        // The slot and the gauge are released when the task ends, however it ends.
        let _held = (&self.slot, &self.gauge, &self.held);
        let mut last = first.message;
        let mut expires = first.expires;
        let stop = self.shutdown.wait();
        tokio::pin!(stop);
        loop {
            let wake = expires.map(|at| {
                Duration::from_secs(
                    u64::try_from(at - unix_now(&*self.clock))
                        .unwrap_or(0)
                        .max(1),
                )
            });
            tokio::select! {
                () = tx.closed() => return,
                () = &mut stop => return,
                changed = self.source.changed() => {
                    if changed.is_err() {
                        let _ = tx.send(Err(ApiError::ShuttingDown.into())).await;
                        return;
                    }
                }
                () = sleep_or_forever(wake) => {}
            }
            let snapshot = self.source.borrow_and_update().clone();
            match (self.render)(&snapshot, &self.selectors, unix_now(&*self.clock)) {
                Ok(next) => {
                    expires = next.expires;
                    if next.message != last {
                        tokio::select! {
                            sent = tx.send(Ok(next.message.clone())) => if sent.is_err() { return },
                            () = &mut stop => return,
                        }
                        last = next.message;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "Workload API stream ends");
                    tokio::select! {
                        _ = tx.send(Err(e.into())) => {}
                        () = &mut stop => {}
                    }
                    return;
                }
            }
        }
    }
}

async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use tessera_actors::agent::view::{HeldX509Svid, Identity};
    use tessera_eventlog::ManualClock;
    use tessera_identity::{Bundle, EntryId, RegistrationEntry, SpiffeId, TrustDomain};
    use tokio_stream::StreamExt;

    use super::*;
    use crate::workload_api::limits::StreamSlots;
    use crate::workload_api::metrics::Metrics;
    use crate::workload_api::render;

    const T0: i64 = 1_900_000_000;

    fn identity(n: u32, not_after: i64) -> Identity {
        let id = SpiffeId::new(&format!("spiffe://example.org/w{n}")).unwrap();
        Identity {
            entry: RegistrationEntry {
                id: EntryId::new(&format!("e{n}")).unwrap(),
                spiffe_id: id,
                parent_id: SpiffeId::new("spiffe://example.org/agent").unwrap(),
                selectors: SelectorSet::parse_all(["unix:uid:1"]).unwrap(),
                x509_svid_ttl: None,
                jwt_svid_ttl: None,
                federates_with: Vec::new(),
                dns_names: Vec::new(),
                admin: false,
                downstream: false,
                hint: String::new(),
                expires_at: None,
                created_at: 0,
                revision: 0,
            },
            svid: Some(HeldX509Svid {
                cert_chain: vec![vec![n as u8]],
                key_pkcs8: Arc::new(zeroize::Zeroizing::new(vec![1])),
                not_before: T0 - 10,
                not_after,
            }),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expiring_svids_leave_the_view_when_they_expire_without_any_change() {
        let clock = ManualClock::at_unix_secs(T0 as u64);
        let snapshot = IdentitySnapshot {
            generation: 1,
            identities: vec![identity(1, T0 + 100), identity(2, T0 + 900)],
            bundle: Some(Bundle::new(TrustDomain::new("example.org").unwrap())),
            federated: Default::default(),
        };
        let selectors = SelectorSet::parse_all(["unix:uid:1", "unix:gid:1"]).unwrap();
        let (_tx, source) = watch::channel(Arc::new(snapshot.clone()));
        let metrics = Metrics::new().unwrap();
        let slots = StreamSlots::new(10, 10);
        let task = StreamTask {
            selectors: selectors.clone(),
            source,
            clock: Arc::new(clock.clone()),
            shutdown: Shutdown::never(),
            slot: slots.try_acquire(1).unwrap(),
            gauge: metrics.stream_opened("FetchX509SVID"),
            render: render::x509_svids,
            held: InUse::default(),
        };
        let first = render::x509_svids(&snapshot, &selectors, T0).unwrap();
        assert_eq!(first.expires, Some(T0 + 100));
        let mut out = task.spawn(first);
        let wait = Duration::from_secs(10_000);
        assert_eq!(
            tokio::time::timeout(wait, out.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
                .svids
                .len(),
            2
        );
        clock.advance(Duration::from_secs(150));
        let second = tokio::time::timeout(wait, out.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(second.svids.len(), 1);
        assert_eq!(second.svids[0].spiffe_id, "spiffe://example.org/w2");
        clock.advance(Duration::from_secs(1000));
        let end = tokio::time::timeout(wait, out.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(end.code(), tonic::Code::PermissionDenied);
        assert!(tokio::time::timeout(wait, out.next())
            .await
            .unwrap()
            .is_none());
        tokio::time::timeout(wait, async {
            while slots.open() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(metrics.open_streams("FetchX509SVID"), 0);
    }
}
