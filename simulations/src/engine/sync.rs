//! The sync stream between an agent and a server: opening it (SyncHub's resume-or-snapshot
//! rule, on a random server that is up), delivering messages in order after a latency,
//! breaking it (loss, outage, partition), and the agent's reconnect backoff (initial 1 s
//! doubling to 30 s, ±20 %: the agent's `[sync] backoff_*` defaults).

use std::sync::Arc;

use tessera_actors::agent::server_client::SyncMessage;
use tessera_actors::server::sync::ViewChange;
use tessera_identity::{Bundle, RegistrationEntry};

use super::{Ev, World};
use crate::engine::agent::Conn;

/// What travels on a stream.
pub enum Delivery {
    /// The first message: the whole view at `seq`.
    Snapshot {
        seq: u64,
        entries: Vec<RegistrationEntry>,
        bundle: Option<Arc<Bundle>>,
    },
    /// The first message: the cursor resumed, and what was missed after it.
    Resume {
        cursor: u64,
        missed: Vec<(u64, Vec<ViewChange>, bool)>,
        bundle: Option<Arc<Bundle>>,
    },
    /// A later record's changes for this agent.
    Update {
        seq: u64,
        changes: Vec<ViewChange>,
        bundle: Option<Arc<Bundle>>,
        committed_ms: u64,
    },
}

impl World<'_> {
    /// Puts a message on the agent's open stream: delivered after a latency, in order; with
    /// `loss_percent` it breaks the stream instead.
    pub(super) fn send(&mut self, agent: u32, delivery: Delivery) {
        let Some(conn) = self.agents[agent as usize].conn else {
            return;
        };
        if self.rng.chance_percent(self.sc.network.loss_percent) {
            self.drop_stream(agent);
            return;
        }
        let at = (self.now_ms + self.latency()).max(self.agents[agent as usize].stream_tail_ms);
        let a = &mut self.agents[agent as usize];
        a.stream_tail_ms = at;
        a.in_flight_msgs += 1;
        self.queue.push(
            at,
            Ev::Deliver {
                agent,
                gen: conn.gen,
                delivery: Box::new(delivery),
            },
        );
    }

    /// The server side closes the agent's stream; the agent notices after a latency.
    pub(super) fn drop_stream(&mut self, agent: u32) {
        let a = &mut self.agents[agent as usize];
        let Some(conn) = a.conn.take() else {
            return;
        };
        if conn.established {
            self.connected -= 1;
        }
        let at = self.now_ms + self.latency();
        self.queue.push(
            at,
            Ev::Broken {
                agent,
                gen: conn.gen,
            },
        );
    }

    /// The agent learns its stream `gen` broke: it reconnects after its backoff.
    pub(super) fn broken(&mut self, agent: u32, gen: u64) {
        let a = &self.agents[agent as usize];
        if a.gen != gen || a.conn.is_some() || !a.alive {
            return;
        }
        self.retry_connect(agent);
    }

    /// Schedules the next connection attempt after the backoff, and doubles it.
    fn retry_connect(&mut self, agent: u32) {
        let max = u64::try_from(self.sc.agent.backoff_max.as_millis()).unwrap_or(30_000);
        let backoff = self.agents[agent as usize].backoff_ms;
        let jitter = 0.8 + 0.4 * self.rng.unit();
        let wait = ((backoff as f64 * jitter) as u64).max(1);
        self.agents[agent as usize].backoff_ms = (backoff * 2).min(max);
        self.queue.push(self.now_ms + wait, Ev::Connect(agent));
    }

    /// The agent opens its stream on a random server it can reach, from its cursor.
    pub(super) fn connect(&mut self, agent: u32) {
        let a = &self.agents[agent as usize];
        if a.conn.is_some() || !a.alive {
            return;
        }
        let up: Vec<u32> = if a.partitioned {
            Vec::new()
        } else {
            (0..self.servers.len() as u32)
                .filter(|k| self.servers[*k as usize].up)
                .collect()
        };
        if up.is_empty() {
            self.retry_connect(agent);
            return;
        }
        let server = up[self.rng.below(up.len())];
        let cursor = self.agents[agent as usize].cache.cursor;
        let floor = self.servers[server as usize].history_floor;
        let delivery = match self.log.missed(agent, cursor, floor) {
            Some(missed) => Delivery::Resume {
                cursor,
                missed,
                bundle: self.bundle.clone(),
            },
            None => Delivery::Snapshot {
                seq: self.log.seq,
                entries: self.log.index.entries_for(&self.agents[agent as usize].id),
                bundle: self.bundle.clone(),
            },
        };
        let a = &mut self.agents[agent as usize];
        a.gen += 1;
        a.conn = Some(Conn {
            server,
            gen: a.gen,
            established: false,
        });
        a.in_flight_msgs = 0;
        a.stream_tail_ms = self.now_ms;
        self.send(agent, delivery);
    }

    /// A message reaches the agent.
    pub(super) fn deliver(&mut self, agent: u32, gen: u64, delivery: Delivery) {
        let a = &mut self.agents[agent as usize];
        if a.gen != gen || a.conn.is_none() {
            return;
        }
        a.in_flight_msgs = a.in_flight_msgs.saturating_sub(1);
        match delivery {
            Delivery::Snapshot {
                seq,
                entries,
                bundle,
            } => {
                self.stream_opened(agent);
                if seq < self.agents[agent as usize].last_seq {
                    let last = self.agents[agent as usize].last_seq;
                    self.violate(
                        super::checks::NO_MISSED_OR_REPEATED,
                        agent,
                        None,
                        format!("snapshot at seq {seq} after the agent applied seq {last}"),
                    );
                }
                self.count_check(super::checks::NO_MISSED_OR_REPEATED);
                let a = &mut self.agents[agent as usize];
                a.last_seq = seq;
                a.cache.apply(SyncMessage::Snapshot {
                    seq,
                    entries,
                    bundles: bundle.map(|b| (*b).clone()).into_iter().collect(),
                });
                // The bundle first: the round the view change starts is checked against it.
                self.bundle_changed(agent);
                self.migration_bundle_changed(agent);
                self.after_view_change(agent, true);
            }
            Delivery::Resume {
                cursor,
                missed,
                bundle,
            } => {
                self.stream_opened(agent);
                self.agents[agent as usize]
                    .cache
                    .apply(SyncMessage::Resumed { cursor });
                for (seq, changes, bundle_changed) in missed {
                    let bundle = if bundle_changed { bundle.clone() } else { None };
                    self.apply_update(agent, seq, changes, bundle, None);
                    if self.metrics.violation.is_some() {
                        return;
                    }
                }
            }
            Delivery::Update {
                seq,
                changes,
                bundle,
                committed_ms,
            } => {
                self.apply_update(agent, seq, changes, bundle, Some(committed_ms));
            }
        }
    }

    fn stream_opened(&mut self, agent: u32) {
        let initial = u64::try_from(self.sc.agent.backoff_initial.as_millis()).unwrap_or(1000);
        let a = &mut self.agents[agent as usize];
        if let Some(conn) = a.conn.as_mut() {
            if !conn.established {
                conn.established = true;
                self.connected += 1;
            }
        }
        a.backoff_ms = initial;
        let reopened = a.ever_connected;
        a.ever_connected = true;
        if reopened {
            self.metrics.reconnects += 1;
        }
        self.minute_mut(self.now_ms).reconnects += 1;
    }

    /// One record's changes reach the agent's cache (then a checkpoint moves its cursor).
    fn apply_update(
        &mut self,
        agent: u32,
        seq: u64,
        changes: Vec<ViewChange>,
        bundle: Option<Arc<Bundle>>,
        committed_ms: Option<u64>,
    ) {
        let last = self.agents[agent as usize].last_seq;
        self.count_check(super::checks::NO_MISSED_OR_REPEATED);
        if seq <= last {
            self.violate(
                super::checks::NO_MISSED_OR_REPEATED,
                agent,
                None,
                format!("update at seq {seq} after the agent applied seq {last}"),
            );
            return;
        }
        let has_changes = !changes.is_empty();
        let a = &mut self.agents[agent as usize];
        a.last_seq = seq;
        for change in changes {
            match change {
                ViewChange::Upsert(entry) => {
                    a.cache.apply(SyncMessage::Upsert { seq, entry });
                }
                ViewChange::Remove(id) => {
                    a.cache.apply(SyncMessage::Remove { seq, id });
                }
            }
            if let Some(at) = committed_ms {
                self.metrics.propagation_ms.push(self.now_ms - at);
            }
        }
        let has_bundle = bundle.is_some();
        if let Some(b) = bundle {
            a.cache.apply(SyncMessage::BundleUpdated {
                seq,
                bundle: (*b).clone(),
            });
        }
        a.cache.apply(SyncMessage::Checkpoint { seq });
        if has_bundle {
            self.bundle_changed(agent);
            self.migration_bundle_changed(agent);
        }
        if has_changes {
            self.after_view_change(agent, false);
        } else if has_bundle && self.agents[agent as usize].cache.resign_pending() > 0 {
            // A taint mark (or a revocation) made SVIDs due now: the core's rotation check
            // after a bundle change.
            self.rotate(agent);
        }
    }
}
