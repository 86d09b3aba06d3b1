//! Signing priority: a workload waiting on its first SVID (or a JWT, or an agent on its
//! attestation) must not queue behind a fleet's bulk renewal.
//!
//! Two places give on-demand work the way, and neither loosens a bound:
//! - admission: bulk work may fill the queue only up to `max_queued - on_demand_reserve`, so
//!   room is always left for on-demand work (the total stays at most `max_queued`);
//! - the workers: when a signing slot frees, a waiting on-demand job gets it before any bulk
//!   job, whatever their arrival order ([`Gate`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

/// How urgent a signing request is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Someone is waiting on it now: a first SVID, a JWT-SVID, an agent's attestation or
    /// renewal, an admin's mint.
    #[default]
    OnDemand,
    /// Renewal of an SVID its holder still has: it can wait behind on-demand work.
    Bulk,
}

#[derive(Debug)]
struct GateState {
    free: usize,
    on_demand: VecDeque<oneshot::Sender<()>>,
    bulk: VecDeque<oneshot::Sender<()>>,
}

/// A counting gate of `slots` signing slots whose waiters are served on-demand first, then in
/// arrival order.
#[derive(Debug)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
}

/// A held slot, given back on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    gate: Arc<Gate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.release();
    }
}

/// A waiter; if it is dropped after a slot was handed to it, the slot goes back.
struct Waiting {
    rx: Option<oneshot::Receiver<()>>,
    gate: Arc<Gate>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.gate.release();
            }
        }
    }
}

impl Gate {
    /// A gate of `slots` slots (at least one).
    pub(crate) fn new(slots: usize) -> Arc<Self> {
        Arc::new(Gate {
            state: Mutex::new(GateState {
                free: slots.max(1),
                on_demand: VecDeque::new(),
                bulk: VecDeque::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a slot: at once if one is free and no more urgent work waits.
    pub(crate) async fn acquire(self: &Arc<Self>, priority: Priority) -> Slot {
        let rx = {
            let mut s = self.lock();
            let ahead = match priority {
                Priority::OnDemand => !s.on_demand.is_empty(),
                Priority::Bulk => !s.on_demand.is_empty() || !s.bulk.is_empty(),
            };
            if s.free > 0 && !ahead {
                s.free -= 1;
                return Slot { gate: self.clone() };
            }
            let (tx, rx) = oneshot::channel();
            match priority {
                Priority::OnDemand => s.on_demand.push_back(tx),
                Priority::Bulk => s.bulk.push_back(tx),
            }
            rx
        };
        let mut waiting = Waiting {
            rx: Some(rx),
            gate: self.clone(),
        };
        if let Some(rx) = waiting.rx.as_mut() {
            // Only `release` drops a sender unsent, and only for a waiter already gone: the
            // answer is always the slot.
            let _ = rx.await;
        }
        waiting.rx = None;
        Slot { gate: self.clone() }
    }

    /// Gives a slot to the next waiter (on-demand first), or back to the pool.
    fn release(&self) {
        let mut s = self.lock();
        loop {
            let next = match s.on_demand.pop_front() {
                Some(tx) => Some(tx),
                None => s.bulk.pop_front(),
            };
            match next {
                // A waiter that went away does not take the slot: try the next.
                Some(tx) => {
                    if tx.send(()).is_ok() {
                        return;
                    }
                }
                None => {
                    s.free += 1;
                    return;
                }
            }
        }
    }

    /// Slots free now (for tests and status).
    #[cfg(test)]
    pub(crate) fn free(&self) -> usize {
        self.lock().free
    }

    /// Jobs waiting for a slot.
    pub(crate) fn waiting(&self) -> usize {
        let s = self.lock();
        s.on_demand.len() + s.bulk.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn on_demand_waiters_overtake_bulk_waiters() {
        let gate = Gate::new(1);
        let held = gate.acquire(Priority::Bulk).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Ten bulk jobs queue first, then one on-demand job.
        for i in 0..10 {
            let (gate, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = gate.acquire(Priority::Bulk).await;
                order.lock().unwrap().push(format!("bulk-{i}"));
            }));
            tokio::task::yield_now().await;
        }
        let (g, o) = (gate.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = g.acquire(Priority::OnDemand).await;
            o.lock().unwrap().push("on-demand".to_string());
        }));
        tokio::task::yield_now().await;
        drop(held);
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .unwrap()
                .unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order[0], "on-demand", "{order:?}");
        assert_eq!(
            order[1], "bulk-0",
            "bulk keeps its arrival order: {order:?}"
        );
        assert_eq!(gate.free(), 1);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_leak_its_slot() {
        let gate = Gate::new(1);
        let held = gate.acquire(Priority::OnDemand).await;
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _slot = gate.acquire(Priority::Bulk).await;
                std::future::pending::<()>().await;
            })
        };
        tokio::task::yield_now().await;
        waiter.abort();
        let _ = waiter.await;
        drop(held);
        assert_eq!(gate.free(), 1);
        // And a bulk waiter cancelled while waiting leaves nothing behind either.
        let held = gate.acquire(Priority::Bulk).await;
        let gate2 = gate.clone();
        let pending = tokio::spawn(async move { gate2.acquire(Priority::Bulk).await });
        tokio::task::yield_now().await;
        pending.abort();
        let _ = pending.await;
        drop(held);
        assert_eq!(gate.free(), 1);
    }
}
