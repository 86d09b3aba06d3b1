//! `[[timeline]]` forced rotations, step by step as an SRE takes them with SPIRE's
//! `localauthority x509` commands on one server: prepare (or take the CA rotation already
//! prepared: the server refuses a second), activate it, taint the CA that was active, and
//! optionally revoke it. Each step goes through the server's real `Authority::decide` and is
//! committed to the shared log like rotation's steps, so the bundle with the taint mark (or
//! without the revoked CA) reaches agents over their streams, with the network's latency and
//! loss; the agents' real cache marks what chains to the tainted CA and their real plan
//! re-signs it at once, through the signing queue.
//!
//! A step refused by the aggregate is recorded in the run's [`RotationRecord`] and ends the
//! action (the run goes on); a step meant for a server that is down waits for it (retried
//! every `rotation_tick`).
//!
//! [`RotationRecord`]: crate::metrics::RotationRecord

use tessera_actors::server::aggregate::{Aggregate, Context};
use tessera_actors::server::authority::{AuthorityCommand, SlotStatus};

use super::{Ev, SimError, World};
use crate::metrics::RotationKind;

/// A step of a forced rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Prepare a new CA (or take the prepared one).
    Prepare,
    /// Activate it.
    Activate,
    /// Taint the CA that was active before.
    Taint,
    /// Revoke the tainted CA.
    Revoke,
}

/// A forced rotation under way.
#[derive(Clone, Debug, Default)]
pub struct Forced {
    /// Its record in the metrics.
    record: usize,
    /// The new CA's authority ID.
    prepared: Option<String>,
    /// The CA to taint (and revoke): the one active before the activation.
    old: Option<String>,
    /// A step was refused: no more steps.
    stopped: bool,
}

impl World<'_> {
    /// Schedules the first step of every `[[timeline]]` action.
    pub(super) fn schedule_timeline(&mut self) {
        self.forced = vec![None; self.sc.timeline.len()];
        for (item, action) in self.sc.timeline.iter().enumerate() {
            let (prepare_ms, ..) = action.steps_ms();
            self.queue.push(
                prepare_ms,
                Ev::Forced {
                    item,
                    step: Step::Prepare,
                },
            );
        }
    }

    /// One step of forced rotation `item`.
    pub(super) fn forced_step(&mut self, item: usize, step: Step) -> Result<(), SimError> {
        let action = self.sc.timeline[item].clone();
        let k = action.server;
        // Every later step follows the prepare, which makes the state.
        let state = self.forced[item].clone();
        if state.as_ref().is_some_and(|f| f.stopped) || (state.is_none() && step != Step::Prepare) {
            return Ok(());
        }
        let state = state.unwrap_or_default();
        if !self.servers[k as usize].up {
            // The command needs its server: the operator tries again.
            let tick = u64::try_from(self.sc.server.rotation_tick.as_millis()).unwrap_or(10_000);
            self.queue
                .push(self.now_ms + tick.max(1), Ev::Forced { item, step });
            return Ok(());
        }
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let now_ms = self.now_ms;
        match step {
            Step::Prepare => {
                let record = self.new_rotation_record(RotationKind::Forced, k);
                let mut forced = Forced {
                    record,
                    ..Forced::default()
                };
                let taken = self.servers[k as usize]
                    .authority
                    .prepared_ca()
                    .map(|c| c.authority_id.clone());
                forced.prepared = match taken {
                    Some(id) => Some(id),
                    None => {
                        self.prepare_ca(k, false)?;
                        self.servers[k as usize]
                            .authority
                            .prepared_ca()
                            .map(|c| c.authority_id.clone())
                    }
                };
                self.metrics.rotations[record].prepared_ms = Some(now_ms);
                self.forced[item] = Some(forced);
                self.next_step(item, Step::Activate, ms(action.activate_after));
            }
            Step::Activate => {
                let Some(prepared) = state.prepared.clone() else {
                    return self.refuse(item, "activate: no CA was prepared".into());
                };
                let authority = &self.servers[k as usize].authority;
                let status = authority.ca(&prepared).map(|s| s.status);
                let old = match status {
                    Some(SlotStatus::Prepared) => {
                        let old = authority.active_ca().map(|c| c.authority_id.clone());
                        let command = AuthorityCommand::ActivateCa {
                            authority_id: prepared,
                        };
                        if let Err(e) = self.operator(k, command) {
                            return self.refuse(item, format!("activate: {e}"));
                        }
                        old
                    }
                    // Rotation activated it meanwhile: the old one is the newest before it.
                    Some(SlotStatus::Active) => authority
                        .cas()
                        .iter()
                        .filter(|s| {
                            s.status == SlotStatus::Old && authority.owns(s.server.as_deref())
                        })
                        .max_by_key(|s| s.record.not_before)
                        .map(|s| s.record.authority_id.clone()),
                    _ => {
                        return self
                            .refuse(item, "activate: the prepared CA is gone (expired)".into())
                    }
                };
                let record = state.record;
                self.metrics.rotations[record].activated_ms = Some(now_ms);
                if let Some(old) = &old {
                    if let Some(&ca) = self.ca_ix.get(old) {
                        self.metrics.rotations[record].old_ca = self.cas[ca as usize].name.clone();
                    }
                }
                if let Some(f) = self.forced[item].as_mut() {
                    f.old = old;
                }
                self.next_step(item, Step::Taint, ms(action.taint_after));
            }
            Step::Taint => {
                let Some(old) = state.old.clone() else {
                    return self.refuse(item, "taint: there was no CA active before".into());
                };
                let der = self.servers[k as usize]
                    .authority
                    .ca(&old)
                    .map(|s| s.record.cert_der.clone());
                let command = AuthorityCommand::TaintCa {
                    authority_id: old.clone(),
                };
                if let Err(e) = self.operator(k, command) {
                    return self.refuse(item, format!("taint: {e}"));
                }
                let record = state.record;
                self.metrics.rotations[record].tainted_ms = Some(now_ms);
                if let Some(&ca) = self.ca_ix.get(&old) {
                    self.start_migration(record, ca, der);
                }
                if let Some(after) = action.revoke_after {
                    self.next_step(item, Step::Revoke, ms(after));
                }
            }
            Step::Revoke => {
                let Some(old) = state.old.clone() else {
                    return Ok(());
                };
                let command = AuthorityCommand::RevokeCa {
                    authority_id: old.clone(),
                };
                if let Err(e) = self.operator(k, command) {
                    return self.refuse(item, format!("revoke: {e}"));
                }
                let record = state.record;
                self.metrics.rotations[record].revoked_ms = Some(now_ms);
                if let Some(&ca) = self.ca_ix.get(&old) {
                    self.cas[ca as usize].revoked_ms = Some(now_ms);
                }
            }
        }
        Ok(())
    }

    fn next_step(&mut self, item: usize, step: Step, after_ms: u64) {
        self.queue.push(
            self.now_ms.saturating_add(after_ms),
            Ev::Forced { item, step },
        );
    }

    /// A step the aggregate refused: recorded, and the action ends.
    fn refuse(&mut self, item: usize, reason: String) -> Result<(), SimError> {
        if let Some(f) = self.forced[item].as_mut() {
            f.stopped = true;
            if let Some(r) = self.metrics.rotations.get_mut(f.record) {
                r.refused = Some(reason);
            }
        }
        Ok(())
    }

    /// An operator's command to server `k`'s authority: decide, then commit its events.
    fn operator(&mut self, k: u32, command: AuthorityCommand) -> Result<(), String> {
        let ctx = Context {
            now: self.now_s(),
            random: self.rng.bytes16(),
        };
        let decision = self.servers[k as usize]
            .authority
            .decide(command, &ctx)
            .map_err(|e| e.to_string())?;
        self.commit(decision.events);
        Ok(())
    }
}
