//! Signing: an agent's round goes to a server (its stream's, else a random one that is up),
//! is admitted to that server's bounded queue as the signer admits it (renewals only up to
//! `max_queued - on_demand_reserve`, first SVIDs up to `max_queued`), and is signed at
//! `signing_rate` items per virtual second by the server's active CA. A round that fails
//! (server down, overloaded, no CA, no answer) is retried after `sign_retry`, as `AgentCore`
//! does on `SignFailed`.
//!
//! `crypto = "fast"`: a stand-in certificate (`SIM1`, the CA's index, the serial) with the
//! validity the real signer would give; the checkers read the issuer from it as they read the
//! authority key identifier of a real one.

use tessera_actors::agent::cache::StoredSvid;
use tessera_actors::server::authority::NOT_BEFORE_CUSHION_SECS;
use tessera_identity::EntryId;

use super::{Ev, SimError, World};
use crate::scenario::Crypto;

/// A signing round on its way to a server.
pub struct Request {
    agent: u32,
    round: u64,
    server: u32,
    epoch: u64,
    items: Vec<(EntryId, u64)>,
}

/// Per item, the SVID or why not.
type ItemResults = Vec<(EntryId, Result<StoredSvid, String>)>;

/// The server's answer.
pub struct Reply {
    agent: u32,
    round: u64,
    server: u32,
    epoch: u64,
    outcome: Result<ItemResults, String>,
}

const FAST_MAGIC: &[u8; 4] = b"SIM1";

/// A stand-in certificate: magic, CA index, serial.
fn fast_cert(ca: u32, serial: u64) -> Vec<u8> {
    let mut der = Vec::with_capacity(16);
    der.extend_from_slice(FAST_MAGIC);
    der.extend_from_slice(&ca.to_be_bytes());
    der.extend_from_slice(&serial.to_be_bytes());
    der
}

impl World<'_> {
    /// The CA (index) that signed an SVID.
    pub(super) fn issuer_of(&self, svid: &StoredSvid) -> Option<u32> {
        let leaf = svid.cert_chain.first()?;
        if leaf.len() == 16 && leaf.starts_with(FAST_MAGIC) {
            let mut ca = [0u8; 4];
            ca.copy_from_slice(&leaf[4..8]);
            return Some(u32::from_be_bytes(ca));
        }
        if let Some(ca) = self
            .cas
            .iter()
            .position(|c| c.template.as_deref() == Some(leaf.as_slice()))
        {
            return Some(ca as u32);
        }
        let authority_id = super::real::authority_key_id(leaf)?;
        self.ca_ix.get(&authority_id).copied()
    }

    /// A fast SVID's leaf: its CA's template if it has one, else the 16-byte stand-in.
    fn fast_leaf(&self, ca: u32, serial: u64) -> Vec<u8> {
        match self.cas.get(ca as usize).and_then(|c| c.template.clone()) {
            Some(template) => template,
            None => fast_cert(ca, serial),
        }
    }

    /// Sends a round of `items` for signing.
    pub(super) fn start_round(&mut self, agent: u32, items: Vec<(EntryId, u64)>) {
        self.sign_round += 1;
        let round = self.sign_round;
        self.agents[agent as usize].round = Some(round);
        let a = &self.agents[agent as usize];
        let server = match a.conn {
            Some(c) if self.servers[c.server as usize].up && !a.partitioned => Some(c.server),
            _ if a.partitioned => None,
            _ => {
                let up: Vec<u32> = (0..self.servers.len() as u32)
                    .filter(|k| self.servers[*k as usize].up)
                    .collect();
                (!up.is_empty()).then(|| up[self.rng.below(up.len())])
            }
        };
        let latency = self.latency();
        let Some(server) = server else {
            let reply = Reply {
                agent,
                round,
                server: 0,
                epoch: 0,
                outcome: Err("no server reachable".into()),
            };
            self.queue
                .push(self.now_ms + latency, Ev::SignReply(Box::new(reply)));
            return;
        };
        if self.rng.chance_percent(self.sc.network.loss_percent) {
            let timeout = u64::try_from(self.sc.agent.sign_timeout.as_millis()).unwrap_or(30_000);
            self.queue
                .push(self.now_ms + timeout, Ev::SignTimeout { agent, round });
            return;
        }
        let request = Request {
            agent,
            round,
            server,
            epoch: self.servers[server as usize].epoch,
            items,
        };
        self.queue
            .push(self.now_ms + latency, Ev::SignArrive(Box::new(request)));
    }

    /// A round reaches its server: admission, then signing at the server's rate.
    pub(super) fn sign_arrive(&mut self, req: Request) -> Result<(), SimError> {
        let Request {
            agent,
            round,
            server,
            epoch,
            items,
        } = req;
        let latency = self.latency();
        let fail = |reason: &str| Reply {
            agent,
            round,
            server,
            epoch,
            outcome: Err(reason.to_owned()),
        };
        let s = &self.servers[server as usize];
        if !s.up || s.epoch != epoch {
            let reply = fail("server unavailable");
            self.queue
                .push(self.now_ms + latency, Ev::SignReply(Box::new(reply)));
            return Ok(());
        }
        let now = self.now_s();
        let now_us = self.now_ms * 1000;
        self.drain_queues(now_us);
        // Renewals (the agent holds a valid SVID for the entry) are bulk; the rest on demand.
        let a = &self.agents[agent as usize];
        let is_bulk = |id: &EntryId| a.cache.svids.get(id).is_some_and(|s| s.not_after > now);
        let bulk_n = items.iter().filter(|(id, _)| is_bulk(id)).count() as u64;
        let od_n = items.len() as u64 - bulk_n;
        let max = self.sc.server.max_queued;
        let bulk_max = max - self.sc.server.on_demand_reserve;
        let depth = self.servers[server as usize].depth;
        let bulk_ok = depth + bulk_n <= bulk_max;
        let admitted_bulk = if bulk_ok { bulk_n } else { 0 };
        let od_ok = depth + admitted_bulk + od_n <= max;
        // The common case admits everything without splitting the round.
        let (admitted, refused): (Vec<_>, Vec<_>) = if bulk_ok && od_ok {
            (items, Vec::new())
        } else {
            items
                .into_iter()
                .partition(|(id, _)| if is_bulk(id) { bulk_ok } else { od_ok })
        };
        if !refused.is_empty() {
            self.minute_mut(self.now_ms).refused_overloaded += refused.len() as u64;
        }
        if admitted.is_empty() {
            let reply = fail("overloaded");
            self.queue
                .push(self.now_ms + latency, Ev::SignReply(Box::new(reply)));
            return Ok(());
        }
        let Some(ca) = self.servers[server as usize]
            .signing
            .filter(|c| c.not_after > now)
        else {
            let reply = fail("no active CA");
            self.queue
                .push(self.now_ms + latency, Ev::SignReply(Box::new(reply)));
            return Ok(());
        };
        let ca_ix = ca.ca;
        let n = admitted.len() as u64;
        let rate = self.sc.server.signing_rate.max(1);
        let s = &mut self.servers[server as usize];
        let done_us = s.busy_until_us.max(now_us) + (n * 1_000_000).div_ceil(rate);
        s.busy_until_us = done_us;
        s.queue.push_back((done_us, n));
        s.depth += n;
        let total_depth: u64 = self.servers.iter().map(|s| s.depth).sum();
        let sample = self.minute_mut(self.now_ms);
        sample.queue_depth_max = sample.queue_depth_max.max(total_depth);
        self.check_queue(server, agent);
        let done_ms = done_us.div_ceil(1000);
        self.minute_mut(done_ms).signatures += n;
        self.metrics.signatures += n;

        let default_ttl = self.sc.server.default_x509_svid_ttl.as_secs();
        let not_before = (now - NOT_BEFORE_CUSHION_SECS).max(ca.not_before);
        let agent_id = self.agents[agent as usize].id.clone();
        let mut results = Vec::with_capacity(admitted.len() + refused.len());
        for (id, revision) in admitted {
            let entry = self
                .log
                .index
                .is_authorised(&agent_id, &id)
                .then(|| self.log.index.registry().get(&id))
                .flatten();
            let Some(entry) = entry else {
                results.push((id, Err("not authorised for this entry".to_owned())));
                continue;
            };
            let ttl = entry
                .x509_svid_ttl
                .filter(|t| *t > 0)
                .map_or(default_ttl, u64::from);
            let not_after = now
                .saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX))
                .min(ca.not_after);
            self.svid_serial += 1;
            let svid = match self.sc.crypto {
                Crypto::Fast => Ok(StoredSvid {
                    cert_chain: vec![self.fast_leaf(ca_ix, self.svid_serial)],
                    key_pkcs8: Vec::new(),
                    not_before,
                    not_after,
                    entry_revision: revision,
                }),
                Crypto::Real => {
                    let spiffe_id = entry.spiffe_id.clone();
                    self.sign_real(server, spiffe_id, not_before, not_after, revision)
                }
            };
            results.push((id, svid));
        }
        for (id, _) in refused {
            results.push((id, Err("busy: the signing queue is full".to_owned())));
        }
        let reply = Reply {
            agent,
            round,
            server,
            epoch,
            outcome: Ok(results),
        };
        self.queue
            .push(done_ms + latency, Ev::SignReply(Box::new(reply)));
        Ok(())
    }

    /// Forgets signing work completed by `now_us` on every server.
    fn drain_queues(&mut self, now_us: u64) {
        for s in &mut self.servers {
            while let Some(&(done, n)) = s.queue.front() {
                if done > now_us {
                    break;
                }
                s.queue.pop_front();
                s.depth -= n;
            }
        }
    }

    /// The answer reaches the agent: SVIDs stored (and checked), next round.
    pub(super) fn sign_reply(&mut self, reply: Reply) {
        let Reply {
            agent,
            round,
            server,
            epoch,
            outcome,
        } = reply;
        if self.agents[agent as usize].round != Some(round) {
            return; // Given up already (timeout).
        }
        self.agents[agent as usize].round = None;
        let retry = u64::try_from(self.sc.agent.sign_retry.as_millis()).unwrap_or(5_000);
        // A server that went down after signing never sent the answer.
        let outcome = match outcome {
            Ok(_) if self.servers[server as usize].epoch != epoch => {
                Err("server went down".to_owned())
            }
            other => other,
        };
        match outcome {
            Err(_) => {
                self.agents[agent as usize].hold_until_ms = self.now_ms + retry;
            }
            Ok(results) => {
                let now = self.now_s();
                let mut any_refused = false;
                for (id, result) in results {
                    match result {
                        Ok(mut svid) => {
                            // Renewal counts from receipt (the agent's rule).
                            svid.not_before = svid.not_before.max(now);
                            if !self.agents[agent as usize].cache.entries.contains_key(&id) {
                                continue;
                            }
                            self.check_arrival(agent, &id, &svid);
                            if self.migrating() {
                                let cache = &self.agents[agent as usize].cache;
                                let old = cache.svids.get(&id).and_then(|s| self.issuer_of(s));
                                self.note_store(agent, old, &svid);
                            }
                            let was = self.served(agent, &id);
                            let cache = &mut self.agents[agent as usize].cache;
                            cache.store_svid(id.clone(), svid);
                            // Signed by a tainted CA again (in flight across the taint): the
                            // core asks again only after its back-off, as for a refusal.
                            any_refused |= cache.needs_resign(&id);
                            self.served_changed(agent, &id, was);
                        }
                        Err(_) => any_refused = true,
                    }
                }
                self.recheck_migration(agent);
                if any_refused {
                    self.agents[agent as usize].hold_until_ms = self.now_ms + retry;
                }
            }
        }
        self.rotate(agent);
    }

    /// No answer in time: give the round up and try again.
    pub(super) fn sign_timeout(&mut self, agent: u32, round: u64) {
        if self.agents[agent as usize].round != Some(round) {
            return;
        }
        self.agents[agent as usize].round = None;
        self.rotate(agent);
    }
}
