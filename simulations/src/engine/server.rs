//! Servers: each its own authority (the real aggregate, owning its CAs when there are
//! several), key manager, signing queue and up/down state, all folding the one log. Rotation
//! is the real `plan` on the server's own slots, with CAs built by the real `build_ca`, as
//! `authority/actor/steps.rs` does it; commits fan the view changes out to the agents.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use tessera_actors::keys::{KeyType, MemoryKeyManager, SigningKeyPair};
use tessera_actors::random::SeededRandom;
use tessera_actors::server::aggregate::{Aggregate, Context};
use tessera_actors::server::authority::rotation::{
    plan, Fraction, RotationAction, RotationSettings,
};
use tessera_actors::server::authority::{
    build_ca, build_jwt_key, Authority, AuthorityCommand, AuthorityError, CaSettings, Owner,
    SigningCa,
};
use tessera_actors::server::events::ServerEvent;
use tessera_identity::TrustDomain;

use super::{CaInfo, Ev, World};
use crate::engine::sync::Delivery;
use crate::metrics::RotationKind;

/// One server.
pub struct ServerModel {
    /// `server-<k>` (named in its events when there are several).
    pub name: String,
    /// Whether it is up.
    pub up: bool,
    /// Its fold of the authority (its own slots and the bundle's union).
    pub authority: Authority,
    /// Its key manager (memory).
    pub keys: MemoryKeyManager,
    /// Loaded keys of its CAs, by key reference (real signing uses them).
    pub loaded: HashMap<String, Arc<SigningKeyPair>>,
    /// Admitted signing work: (completion µs, items), oldest first.
    pub queue: VecDeque<(u64, u64)>,
    /// Items admitted and not yet signed.
    pub depth: u64,
    /// When the signer is next free, µs.
    pub busy_until_us: u64,
    /// Resumption needs history this server saw: after a restart, only from here on.
    pub history_floor: u64,
    /// Bumped when it goes down: answers of an older epoch are never sent.
    pub epoch: u64,
    /// Its active CA as the signer holds it (refreshed when the authority changes).
    pub signing: Option<SigningInfo>,
    /// The same with its key, for `crypto = "real"`.
    pub signing_ca: Option<SigningCa>,
}

/// What signing needs of the active CA.
#[derive(Clone, Copy, Debug)]
pub struct SigningInfo {
    /// Its index among the CAs seen.
    pub ca: u32,
    /// Validity, Unix seconds.
    pub not_before: i64,
    /// Validity, Unix seconds.
    pub not_after: i64,
}

impl ServerModel {
    /// Server `k` of `n`.
    pub fn new(k: u32, n: u32, td: &TrustDomain) -> Self {
        let name = format!("server-{k}");
        let mut authority = Authority::default();
        authority.configure(td.clone());
        if n > 1 {
            authority.set_owner(Owner {
                server_id: name.clone(),
                adopt_unowned: false,
            });
        }
        Self {
            name,
            up: true,
            authority,
            keys: MemoryKeyManager::new(),
            loaded: HashMap::new(),
            queue: VecDeque::new(),
            depth: 0,
            busy_until_us: 0,
            history_floor: 0,
            epoch: 0,
            signing: None,
            signing_ca: None,
        }
    }
}

impl World<'_> {
    /// Appends events, folds them everywhere, and sends each affected agent its update.
    pub(super) fn commit(&mut self, events: Vec<ServerEvent>) {
        for event in events {
            for s in &mut self.servers {
                s.authority.apply(&event);
            }
            match &event {
                ServerEvent::CaPrepared(record) | ServerEvent::ServerCaPrepared { record, .. } => {
                    let ix = self.cas.len() as u32;
                    self.ca_ix.insert(record.authority_id.clone(), ix);
                    // Named by owner and order, not by authority id: the id comes from an
                    // OS-RNG key, and names reach the report, which a seed must reproduce.
                    let owner = match &event {
                        ServerEvent::ServerCaPrepared { server_id, .. } => {
                            self.servers.iter().position(|s| &s.name == server_id)
                        }
                        _ => None,
                    };
                    let nth = self.cas.iter().filter(|c| c.owner == owner).count() + 1;
                    let name = match owner {
                        Some(k) => format!("#{nth} of server {k}"),
                        None => format!("#{nth} of the shared authority"),
                    };
                    let template = self.template_for(record);
                    self.cas.push(CaInfo {
                        name,
                        owner,
                        anchors: record.trust_anchors.clone(),
                        template,
                        revoked_ms: None,
                    });
                }
                ServerEvent::CaActivated { .. } => self.activations[0] += 1,
                ServerEvent::ServerCaActivated { server_id, .. } => {
                    if let Some(k) = self.servers.iter().position(|s| &s.name == server_id) {
                        self.activations[k] += 1;
                    }
                }
                _ => {}
            }
            if event.server_id().is_some()
                || matches!(
                    event,
                    ServerEvent::CaPrepared(_)
                        | ServerEvent::CaActivated { .. }
                        | ServerEvent::CaRetired { .. }
                )
            {
                for s in &mut self.servers {
                    s.signing = s.authority.active_ca().map(|c| SigningInfo {
                        ca: self.ca_ix.get(&c.authority_id).copied().unwrap_or(u32::MAX),
                        not_before: c.not_before,
                        not_after: c.not_after,
                    });
                    s.signing_ca = s.authority.active_ca().and_then(|c| {
                        let key = s.loaded.get(&c.key_ref)?;
                        Some(SigningCa::new(c.clone(), key.clone()))
                    });
                }
            }
            let committed = self.log.append(&event);
            if committed.bundle_changed {
                self.bundle = self.servers[0]
                    .authority
                    .bundle()
                    .filter(|b| !b.is_empty())
                    .cloned()
                    .map(Arc::new);
            }
            let mut by_index = Vec::with_capacity(committed.changes.len());
            for (agent_id, changes) in committed.changes {
                if let Some(&a) = self.agent_ix.get(&agent_id) {
                    by_index.push((a, changes));
                }
            }
            if committed.bundle_changed {
                let mut with_changes: HashMap<u32, Vec<_>> = by_index.iter().cloned().collect();
                for a in 0..self.agents.len() as u32 {
                    let changes = with_changes.remove(&a).unwrap_or_default();
                    self.send_update(a, committed.seq, changes, true);
                }
            } else {
                for (a, changes) in &by_index {
                    self.send_update(*a, committed.seq, changes.clone(), false);
                }
            }
            // An evicted or banned agent's stream closes after its removals (SyncHub).
            if let ServerEvent::AgentEvicted { agent_id } | ServerEvent::AgentBanned { agent_id } =
                &event
            {
                if let Some(&a) = self.agent_ix.get(agent_id) {
                    self.agents[a as usize].alive = false;
                    self.drop_stream(a);
                }
            }
            self.log
                .retain(committed.seq, by_index, committed.bundle_changed);
        }
    }

    /// Sends an update to an agent if its stream is open.
    fn send_update(
        &mut self,
        agent: u32,
        seq: u64,
        changes: Vec<tessera_actors::server::sync::ViewChange>,
        bundle_changed: bool,
    ) {
        if self.agents[agent as usize].conn.is_none() {
            return;
        }
        let delivery = Delivery::Update {
            seq,
            changes,
            bundle: if bundle_changed {
                self.bundle.clone()
            } else {
                None
            },
            committed_ms: self.now_ms,
        };
        self.send(agent, delivery);
    }

    /// A server's rotation check: retirements, preparation, activation, as the actor's
    /// `rotate` step does them (builds happen at once here: virtual time does not pass).
    pub(super) fn tick(&mut self, k: u32) -> Result<(), super::SimError> {
        let tick_ms = u64::try_from(self.sc.server.rotation_tick.as_millis()).unwrap_or(10_000);
        self.queue.push(self.now_ms + tick_ms.max(1), Ev::Tick(k));
        if !self.servers[k as usize].up {
            return Ok(());
        }
        let now = self.now_s();
        let settings = RotationSettings {
            prepare_at: Fraction::new(self.sc.server.prepare_at.num, self.sc.server.prepare_at.den),
            activate_at: Fraction::new(
                self.sc.server.activate_at.num,
                self.sc.server.activate_at.den,
            ),
        };
        let server = &self.servers[k as usize];
        let mut actions = plan(&server.authority.scoped(), now, &settings, &BTreeSet::new());
        let (cas, kids) = server.authority.foreign_expired(now);
        actions.extend(
            cas.into_iter()
                .map(|authority_id| RotationAction::RetireCa { authority_id }),
        );
        actions.extend(
            kids.into_iter()
                .map(|kid| RotationAction::RetireJwtKey { kid }),
        );
        for action in actions {
            match action {
                RotationAction::PrepareCa { activate } => self.prepare_ca(k, activate)?,
                RotationAction::PrepareJwtKey { activate } => self.prepare_jwt(k, activate)?,
                RotationAction::ActivateCa { authority_id } => {
                    let old = self.servers[k as usize].signing.map(|s| s.ca);
                    self.persist(k, AuthorityCommand::ActivateCa { authority_id })?;
                    // The fleet moves off the old CA as its SVIDs fall due.
                    if let Some(old) = old {
                        let record = self.new_rotation_record(RotationKind::Scheduled, k);
                        self.metrics.rotations[record].activated_ms = Some(self.now_ms);
                        self.start_migration(record, old, None);
                    }
                }
                RotationAction::RetireCa { authority_id } => {
                    self.persist(k, AuthorityCommand::RetireCa { authority_id })?
                }
                RotationAction::ActivateJwtKey { kid } => {
                    self.persist(k, AuthorityCommand::ActivateJwtKey { kid })?
                }
                RotationAction::RetireJwtKey { kid } => {
                    self.persist(k, AuthorityCommand::RetireJwtKey { kid })?
                }
            }
        }
        Ok(())
    }

    pub(super) fn prepare_ca(&mut self, k: u32, activate: bool) -> Result<(), super::SimError> {
        let random = SeededRandom::new(self.rng.next_u64());
        let now = self.now_s();
        let settings = CaSettings {
            ttl: self.sc.server.ca_ttl,
            ..CaSettings::default()
        };
        let server = &mut self.servers[k as usize];
        let built = build_ca(&self.td, &settings, &server.keys, &random, now).map_err(|e| {
            super::SimError::Authority {
                server: k,
                reason: e.to_string(),
            }
        })?;
        let id = built.record.authority_id.clone();
        server
            .loaded
            .insert(built.record.key_ref.clone(), built.key);
        self.persist(k, AuthorityCommand::RecordPreparedCa(built.record))?;
        if activate {
            self.persist(k, AuthorityCommand::ActivateCa { authority_id: id })?;
        }
        Ok(())
    }

    fn prepare_jwt(&mut self, k: u32, activate: bool) -> Result<(), super::SimError> {
        let random = SeededRandom::new(self.rng.next_u64());
        let now = self.now_s();
        let server = &mut self.servers[k as usize];
        let built = build_jwt_key(
            self.sc.server.ca_ttl,
            KeyType::EcP256,
            &server.keys,
            &random,
            now,
        )
        .map_err(|e| super::SimError::Authority {
            server: k,
            reason: e.to_string(),
        })?;
        let kid = built.record.kid.clone();
        self.persist(k, AuthorityCommand::RecordPreparedJwtKey(built.record))?;
        if activate {
            self.persist(k, AuthorityCommand::ActivateJwtKey { kid })?;
        }
        Ok(())
    }

    /// decide → append → apply for one authority command of server `k`.
    fn persist(&mut self, k: u32, command: AuthorityCommand) -> Result<(), super::SimError> {
        let ctx = Context {
            now: self.now_s(),
            random: self.rng.bytes16(),
        };
        let retirement = matches!(
            command,
            AuthorityCommand::RetireCa { .. } | AuthorityCommand::RetireJwtKey { .. }
        );
        match self.servers[k as usize].authority.decide(command, &ctx) {
            Ok(decision) => {
                self.commit(decision.events);
                Ok(())
            }
            // Another server retired it first (both saw it expire).
            Err(AuthorityError::Unknown { .. }) if retirement => Ok(()),
            Err(e) => Err(super::SimError::Authority {
                server: k,
                reason: e.to_string(),
            }),
        }
    }
}
