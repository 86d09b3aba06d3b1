//! The core's signing rounds: keys and CSRs made on the node, off the runtime's threads,
//! sent to the server in one call per round; the outcome comes back to the core as a message
//! ([`AgentMsg::Signed`] for a bulk round, [`AgentMsg::SignedOnDemand`] otherwise).

use std::collections::HashSet;

use ractor::ActorRef;
use rcgen::CertificateParams;
use tessera_identity::EntryId;
use tracing::Instrument;

use super::{AgentMsg, AgentState, SignedItem};
use crate::keys::SigningKeyPair;

impl AgentState {
    /// Starts one signing round for `ids` (those not already in flight): keys and CSRs are
    /// made off the runtime's threads, the result comes back as `Signed` (`bulk`) or
    /// `SignedOnDemand`. Returns the entries of the round.
    ///
    /// The round is a span (`sign_x509_batch`): a child of `parent` (the Workload API call
    /// that asked for an SVID on demand), or the root of its own trace (rotation, eager
    /// signing after sync). The request to the server carries it (`traceparent`).
    pub(super) fn sign(
        &mut self,
        myself: &ActorRef<AgentMsg>,
        ids: Vec<EntryId>,
        bulk: bool,
        parent: Option<tracing::Id>,
    ) -> Vec<EntryId> {
        let batch: Vec<(EntryId, u64)> = ids
            .into_iter()
            .filter(|id| !self.in_flight.contains(id))
            .filter_map(|id| self.args.cache.entries.get(&id).map(|e| (id, e.revision)))
            .collect();
        if batch.is_empty() {
            return Vec::new();
        }
        let round: Vec<EntryId> = batch.iter().map(|(id, _)| id.clone()).collect();
        self.in_flight.extend(round.iter().cloned());
        let client = self.args.client.clone();
        let me = myself.clone();
        let key_type = self.args.rotation.key_type;
        let ids = round.clone();
        let span = tracing::info_span!(
            parent: parent,
            "sign_x509_batch",
            bulk,
            csrs = round.len()
        );
        let task = async move {
            // Key generation is CPU work: off the runtime's worker threads.
            let prepared = tokio::task::spawn_blocking(move || {
                batch
                    .into_iter()
                    .filter_map(|(id, revision)| {
                        let key = SigningKeyPair::generate(key_type).ok()?;
                        let csr = CertificateParams::new(Vec::<String>::new())
                            .ok()?
                            .serialize_request(&key)
                            .ok()?;
                        Some((id, revision, key.pkcs8_der().to_vec(), csr.der().to_vec()))
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let requests = prepared
                .iter()
                .map(|(id, _, _, csr)| (id.clone(), csr.clone()))
                .collect();
            let message = match client.sign_x509(requests).await {
                Ok(outcomes) => {
                    let mut results: Vec<SignedItem> = prepared
                        .into_iter()
                        .zip(outcomes)
                        .map(|((id, revision, key, _), outcome)| (id, revision, key, outcome))
                        .collect();
                    // An entry whose key or CSR could not be made got no outcome: it must
                    // still leave the in-flight set.
                    if results.len() < ids.len() {
                        let answered: HashSet<EntryId> =
                            results.iter().map(|(id, ..)| id.clone()).collect();
                        for id in ids.iter().filter(|id| !answered.contains(*id)) {
                            let reason = "the agent could not make a key or CSR".to_owned();
                            results.push((id.clone(), 0, Vec::new(), Err(reason)));
                        }
                    }
                    if bulk {
                        AgentMsg::Signed(results)
                    } else {
                        AgentMsg::SignedOnDemand(results)
                    }
                }
                Err(e) if bulk => AgentMsg::SignFailed(e),
                Err(e) => AgentMsg::OnDemandFailed(ids, e),
            };
            let _ = me.send_message(message);
        };
        tokio::spawn(task.instrument(span));
        round
    }
}
