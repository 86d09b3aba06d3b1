//! What happens to the fleet: generated agents attesting with their entries (through the real
//! nodes and registry `decide`), churn, faults, and scripted timelines (recorded facts applied
//! as they are, no decision; the generator then makes nothing).

use tessera_actors::server::aggregate::{Aggregate, Context};
use tessera_actors::server::events::{AttestedAgent, ServerEvent};
use tessera_actors::server::nodes::NodeCommand;
use tessera_actors::server::registry::{NewEntry, RegistryCommand};
use tessera_identity::{EntryId, RegistrationEntry, SelectorSet, SpiffeId};

use super::agent::AgentModel;
use super::{Ev, SimError, World};
use crate::scenario::FaultKind;

impl World<'_> {
    /// Schedules the fleet (or the script), churn and faults.
    pub(super) fn schedule_fleet(&mut self) {
        if self.sc.script.is_empty() {
            let n = self.sc.fleet.agents;
            let spread = u64::try_from(self.sc.fleet.attest_spread.as_millis()).unwrap_or(0);
            for i in 0..n {
                let id = self.agent_spiffe_id(i);
                let a = self.add_agent(id);
                let at = if n > 1 { spread * i / n } else { 0 };
                self.queue.push(at, Ev::AgentStart(a));
            }
        } else {
            for (i, s) in self.sc.script.iter().enumerate() {
                self.queue.push(s.at_ms, Ev::Script(i));
            }
        }
        if self.sc.churn.creates_per_minute > 0.0 {
            let at = self
                .rng
                .exponential_ms(60_000.0 / self.sc.churn.creates_per_minute);
            self.queue.push(at, Ev::Create);
        }
        if self.sc.churn.deletes_per_minute > 0.0 {
            let at = self
                .rng
                .exponential_ms(60_000.0 / self.sc.churn.deletes_per_minute);
            self.queue.push(at, Ev::Delete);
        }
        for (i, f) in self.sc.faults.iter().enumerate() {
            let at = u64::try_from(f.at.as_millis()).unwrap_or(u64::MAX);
            let len = u64::try_from(f.duration.as_millis()).unwrap_or(u64::MAX);
            self.queue.push(at, Ev::FaultStart(i));
            self.queue.push(at.saturating_add(len), Ev::FaultEnd(i));
        }
    }

    fn agent_spiffe_id(&self, i: u64) -> SpiffeId {
        // A path of digits is always valid.
        SpiffeId::from_path(&self.td, &format!("/spire/agent/sim/{i}"))
            .unwrap_or_else(|_| self.td.id())
    }

    fn add_agent(&mut self, id: SpiffeId) -> u32 {
        if let Some(&a) = self.agent_ix.get(&id) {
            return a;
        }
        let a = self.agents.len() as u32;
        let backoff = u64::try_from(self.sc.agent.backoff_initial.as_millis()).unwrap_or(1000);
        self.agent_ix.insert(id.clone(), a);
        self.agents.push(AgentModel::new(id, backoff));
        a
    }

    fn ctx(&mut self) -> Context {
        Context {
            now: self.now_s(),
            random: self.rng.bytes16(),
        }
    }

    /// A generated agent attests, its entries are created, and it connects.
    pub(super) fn agent_start(&mut self, agent: u32) -> Result<(), SimError> {
        let id = self.agents[agent as usize].id.clone();
        let now = self.now_s();
        let attested = AttestedAgent {
            id: id.clone(),
            attestation_type: "x509pop".into(),
            selectors: SelectorSet::new(),
            svid_serial: format!("{agent:x}"),
            svid_expires_at: now + 3600,
            attested_at: now,
            can_reattest: true,
        };
        let ctx = self.ctx();
        let decision = self
            .log
            .index
            .nodes()
            .decide(NodeCommand::Attested(attested), &ctx)
            .map_err(|e| SimError::Refused {
                what: "agent attestation",
                reason: e.to_string(),
            })?;
        self.agents[agent as usize].alive = true;
        self.commit(decision.events);
        let entries = (0..self.sc.fleet.entries_per_agent)
            .map(|j| self.new_entry(&id, &format!("w{j}"), j))
            .collect::<Result<Vec<_>, _>>()?;
        self.create_entries(entries)?;
        self.connect(agent);
        self.schedule_audit(agent);
        Ok(())
    }

    fn schedule_audit(&mut self, agent: u32) {
        let every = u64::try_from(self.sc.checks.audit_interval.as_millis()).unwrap_or(900_000);
        let phase = self.rng.between(1, every.max(1));
        self.queue.push(self.now_ms + phase, Ev::Audit(agent));
    }

    fn new_entry(&self, parent: &SpiffeId, name: &str, uid: u64) -> Result<NewEntry, SimError> {
        let refused = |e: String| SimError::Refused {
            what: "generated entry",
            reason: e,
        };
        let path = format!(
            "/sim{}/{name}",
            parent.path().trim_start_matches("/spire/agent/sim")
        );
        let spiffe_id = SpiffeId::from_path(&self.td, &path).map_err(|e| refused(e.to_string()))?;
        let selectors = SelectorSet::parse_all([format!("unix:uid:{uid}").as_str()])
            .map_err(|e| refused(e.to_string()))?;
        Ok(NewEntry {
            id: None,
            entry: RegistrationEntry {
                id: EntryId::from_random_bytes([0; 16]),
                spiffe_id,
                parent_id: parent.clone(),
                selectors,
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
        })
    }

    fn create_entries(&mut self, entries: Vec<NewEntry>) -> Result<(), SimError> {
        let ctx = self.ctx();
        let decision = self
            .log
            .index
            .registry()
            .decide(RegistryCommand::Create(entries), &ctx)
            .map_err(|e| SimError::Refused {
                what: "entry creation",
                reason: e.to_string(),
            })?;
        for e in &decision.events {
            if let ServerEvent::EntryCreated(entry) = e {
                self.live_add(entry.id.clone());
            }
        }
        self.commit(decision.events);
        Ok(())
    }

    fn live_add(&mut self, id: EntryId) {
        if !self.live_ix.contains_key(&id) {
            self.live_ix.insert(id.clone(), self.live.len());
            self.live.push(id);
        }
    }

    fn live_remove(&mut self, id: &EntryId) {
        if let Some(i) = self.live_ix.remove(id) {
            self.live.swap_remove(i);
            if let Some(moved) = self.live.get(i) {
                self.live_ix.insert(moved.clone(), i);
            }
        }
    }

    /// Churn: one entry under a random live agent.
    pub(super) fn churn_create(&mut self) -> Result<(), SimError> {
        let next = self
            .rng
            .exponential_ms(60_000.0 / self.sc.churn.creates_per_minute);
        self.queue.push(self.now_ms + next, Ev::Create);
        if self.agents.is_empty() {
            return Ok(());
        }
        let a = self.rng.below(self.agents.len());
        if !self.agents[a].alive {
            return Ok(());
        }
        self.churn_serial += 1;
        let parent = self.agents[a].id.clone();
        let name = format!("c{}", self.churn_serial);
        let entry = self.new_entry(&parent, &name, 100_000 + self.churn_serial)?;
        self.create_entries(vec![entry])
    }

    /// Churn: one random live entry deleted.
    pub(super) fn churn_delete(&mut self) -> Result<(), SimError> {
        let next = self
            .rng
            .exponential_ms(60_000.0 / self.sc.churn.deletes_per_minute);
        self.queue.push(self.now_ms + next, Ev::Delete);
        if self.live.is_empty() {
            return Ok(());
        }
        let id = self.live[self.rng.below(self.live.len())].clone();
        let ctx = self.ctx();
        let decision = self
            .log
            .index
            .registry()
            .decide(RegistryCommand::Delete(vec![id.clone()]), &ctx)
            .map_err(|e| SimError::Refused {
                what: "entry deletion",
                reason: e.to_string(),
            })?;
        self.live_remove(&id);
        self.commit(decision.events);
        Ok(())
    }

    /// A fault starts or ends.
    pub(super) fn fault(&mut self, i: usize, start: bool) {
        let fault = self.sc.faults[i].clone();
        match fault.kind {
            FaultKind::Outage => {
                let k = fault.server as usize;
                self.servers[k].up = !start;
                if start {
                    let s = &mut self.servers[k];
                    s.epoch += 1;
                    s.queue.clear();
                    s.depth = 0;
                    s.busy_until_us = 0;
                    for a in 0..self.agents.len() as u32 {
                        if self.agents[a as usize]
                            .conn
                            .is_some_and(|c| c.server == k as u32)
                        {
                            self.drop_stream(a);
                        }
                    }
                } else {
                    // A restarted server kept no per-agent history: resumption only after it.
                    self.servers[k].history_floor = self.log.seq;
                }
            }
            FaultKind::Partition => {
                if start {
                    for a in 0..self.agents.len() as u32 {
                        if self.rng.unit() < fault.fraction {
                            self.agents[a as usize].partitioned = true;
                            self.drop_stream(a);
                        }
                    }
                } else {
                    for agent in &mut self.agents {
                        agent.partitioned = false;
                    }
                }
            }
        }
    }

    /// A scripted fact, applied as recorded.
    pub(super) fn script(&mut self, i: usize) {
        let event = self.sc.script[i].event.clone();
        match &event {
            ServerEvent::AgentAttested(a) => {
                let agent = self.add_agent(a.id.clone());
                self.agents[agent as usize].alive = true;
                self.commit(vec![event]);
                self.connect(agent);
                self.schedule_audit(agent);
            }
            ServerEvent::EntryCreated(e) => {
                self.live_add(e.id.clone());
                self.commit(vec![event]);
            }
            ServerEvent::EntryDeleted { id } | ServerEvent::EntryExpired { id, .. } => {
                self.live_remove(&id.clone());
                self.commit(vec![event]);
            }
            ServerEvent::EntryUpdated(_)
            | ServerEvent::AgentEvicted { .. }
            | ServerEvent::AgentBanned { .. } => self.commit(vec![event]),
            _ => {}
        }
    }
}
