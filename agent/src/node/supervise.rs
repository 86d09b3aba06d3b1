//! What the node does when the server refuses the agent (evicted, banned, or presenting an
//! SVID the server no longer knows):
//!
//! - x509pop: the same evidence can attest again, so the node attests again in-process,
//!   stores the new agent SVID, presents it, and replaces the session (runtime, sync,
//!   renewal); the Workload API keeps serving throughout, from the old session's cache until
//!   the new one takes over. Attempts are bounded: a server that refuses each new SVID soon
//!   after issuing it stops the agent after [`MAX_QUICK_REFUSALS`], with growing pauses
//!   between them. A banned agent (the server answers `PermissionDenied`, saying so) does
//!   not attest again: as SPIRE's agent, it stops with an error naming the fix, deleting its
//!   record on the server. So does a refused re-attestation.
//! - join_token: the token was spent by the first attestation; the agent stops with an
//!   error naming the fix (a new token).

use std::sync::Arc;
use std::time::Duration;

use tessera_actors::agent::server_client::Refusal;
use x509_parser::prelude::FromDer;

use super::attest::AttestFailure;
use super::relay::Relay;
use super::session::{Session, Shared};
use super::tls::ClientIdentity;
use super::{attest_with_retry, now_secs, NodeError};
use crate::config::{NodeAttestorConfig, X509PopConfig};
use crate::shutdown::Shutdown;

/// A session refused sooner than this after it started counts as a quick refusal.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Quick refusals in a row after which the agent stops instead of attesting again.
pub(super) const MAX_QUICK_REFUSALS: u32 = 5;

/// Longest pause before a re-attestation.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// Runs `session` until the server refuses the agent, then attests again or stops the node
/// (reporting why through `shared.failed`); returns when the node stops.
pub(super) async fn supervise(
    shared: Arc<Shared>,
    mut session: Session,
    relay: Arc<Relay>,
    stop: Shutdown,
) {
    let mut quick = QuickRefusals::default();
    loop {
        let reason = tokio::select! {
            reason = session.refused() => reason,
            () = stop.wait() => {
                session.stop().await;
                return;
            }
        };
        let agent_id = agent_id(session.identity());
        let Some(attestor @ NodeAttestorConfig::X509Pop(x509pop)) = &shared.config.node_attestor
        else {
            tracing::warn!(%reason, agent = %agent_id, "the server refused this agent, which cannot attest again");
            session.stop().await;
            shared
                .failed
                .send_replace(Some(join_token_spent(&shared, &reason.message)));
            return;
        };
        if reason.banned {
            tracing::warn!(%reason, agent = %agent_id, "the server banned this agent");
            session.stop().await;
            shared.failed.send_replace(Some(NodeError::Banned {
                agent_id,
                reason: reason.message,
            }));
            return;
        }
        let age = now_secs(shared.clock.as_ref()).saturating_sub(session.started_at());
        let Some(pause) = quick.next(Duration::from_secs(age.max(0).unsigned_abs())) else {
            session.stop().await;
            shared.failed.send_replace(Some(NodeError::Refused(format!(
                "the server refused agent {agent_id} again within {STABLE_AFTER:?} of each of {MAX_QUICK_REFUSALS} re-attestations (last: {reason}); the agent stops: check the server's log for why it refuses this agent"
            ))));
            return;
        };
        tracing::warn!(%reason, agent = %agent_id, ?pause, "the server refused this agent (evicted?); attesting again with x509pop");
        let attested = tokio::select! {
            attested = async {
                tokio::time::sleep(pause).await;
                attest_with_retry(
                    &shared.client.servers(),
                    &shared.config.trust_domain,
                    shared.client.trust(),
                    attestor,
                )
                .await
            } => attested,
            () = stop.wait() => {
                session.stop().await;
                return;
            }
        };
        // The old session keeps serving until here: stop it (its core writes the cache, its
        // renewal can no longer overwrite the stored SVID) before the new one takes over.
        session.stop().await;
        let next = match attested {
            Ok(attested) => start_again(&shared, attested).await,
            Err(AttestFailure::Refused(refusal)) => {
                tracing::warn!(%refusal, agent = %agent_id, "the server refused the re-attestation");
                Err(refused_reattestation(
                    &agent_id,
                    &reason.message,
                    &refusal,
                    x509pop,
                ))
            }
            Err(e) => Err(NodeError::Attest(e.to_string())),
        };
        match next {
            Ok(new) if !stop.is_fired() => {
                relay.switch(new.runtime().clone());
                tracing::info!(agent = %agent_id, "re-attested with x509pop; serving with the new agent SVID");
                session = new;
            }
            Ok(new) => {
                new.stop().await;
                return;
            }
            Err(error) => {
                shared.failed.send_replace(Some(error));
                return;
            }
        }
    }
}

/// Stores and presents a new agent SVID, and starts a session with it.
async fn start_again(
    shared: &Arc<Shared>,
    attested: super::attest::Attested,
) -> Result<Session, NodeError> {
    let store = |e: super::StoreError| NodeError::Store(e.to_string());
    shared
        .store
        .save_identity(&attested.identity)
        .map_err(store)?;
    shared.store.save_bundle(&attested.bundle).map_err(store)?;
    shared.client.set_bundle(attested.bundle);
    shared
        .client
        .set_identity(&attested.identity)
        .map_err(NodeError::Start)?;
    // The server that attested the agent knows its new SVID already; another may not have
    // folded the attestation yet.
    shared
        .client
        .connect_to(attested.server)
        .map_err(NodeError::Start)?;
    Session::start(shared, attested.identity).await
}

/// Counts refusals that came soon after a session started, and paces re-attestations.
#[derive(Debug, Default)]
struct QuickRefusals(u32);

impl QuickRefusals {
    /// The pause before attesting again after a session of `age` was refused, or `None`
    /// when too many sessions in a row were refused quickly.
    fn next(&mut self, age: Duration) -> Option<Duration> {
        self.0 = if age < STABLE_AFTER { self.0 + 1 } else { 1 };
        if self.0 > MAX_QUICK_REFUSALS {
            return None;
        }
        // The first refusal is answered at once (an eviction); repeated ones back off:
        // 1 s, 2 s, 4 s, ... up to MAX_PAUSE.
        Some(match self.0 {
            0 | 1 => Duration::ZERO,
            n => Duration::from_secs(1u64 << (n - 2).min(5)).min(MAX_PAUSE),
        })
    }
}

/// The error for a join-token agent the server refused: its token is spent.
fn join_token_spent(shared: &Shared, reason: &str) -> NodeError {
    NodeError::Refused(format!(
        "the server refused this agent ({reason}); its join token is spent: generate a new one with `tessera-server token generate`, delete {}/agent_svid.pem and restart with --joinToken",
        shared.config.data_dir.display()
    ))
}

/// The error for a refused x509pop re-attestation: banned (the server says so; it may ban the
/// agent while it attests again), or the evidence is no longer accepted.
fn refused_reattestation(
    agent_id: &str,
    reason: &str,
    refusal: &Refusal,
    x509pop: &X509PopConfig,
) -> NodeError {
    if refusal.banned {
        NodeError::Banned {
            agent_id: agent_id.to_owned(),
            reason: refusal.message.clone(),
        }
    } else {
        NodeError::Refused(format!(
            "the server refused this agent ({reason}) and then its x509pop re-attestation ({refusal}); check that {} is still valid and issued by a CA in the server's node_attestor.x509pop.ca_bundle_path, then restart the agent",
            x509pop.certificate_path.display()
        ))
    }
}

/// The SPIFFE ID in the agent SVID (its URI SAN), for messages.
pub(super) fn agent_id(identity: &ClientIdentity) -> String {
    identity
        .cert_chain
        .first()
        .and_then(|der| {
            let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
            let san = cert.subject_alternative_name().ok()??;
            san.value.general_names.iter().find_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_owned()),
                _ => None,
            })
        })
        .unwrap_or_else(|| "<unknown agent ID>".to_owned())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn quick_refusals_back_off_then_give_up() {
        let mut q = QuickRefusals::default();
        let young = Duration::from_secs(5);
        let pauses: Vec<_> = (0..MAX_QUICK_REFUSALS).map(|_| q.next(young)).collect();
        assert_eq!(
            pauses,
            [0, 1, 2, 4, 8]
                .map(|s| Some(Duration::from_secs(s)))
                .to_vec()
        );
        assert_eq!(q.next(young), None, "bounded");

        let mut q = QuickRefusals::default();
        for _ in 0..3 {
            q.next(young);
        }
        assert_eq!(
            q.next(STABLE_AFTER),
            Some(Duration::ZERO),
            "a session that lasted starts the count again"
        );
    }

    #[test]
    fn a_banned_agent_gets_the_fix() {
        let x509pop = X509PopConfig {
            private_key_path: PathBuf::from("/k.pem"),
            certificate_path: PathBuf::from("/c.pem"),
            intermediates_path: None,
        };
        let id = "spiffe://example.org/spire/agent/x509pop/abc";
        let banned = refused_reattestation(
            id,
            "agent spiffe://example.org/spire/agent/x509pop/abc is not attested",
            &Refusal::banned("agent spiffe://example.org/spire/agent/x509pop/abc is banned; delete its record with `tessera-server agent evict --spiffeID spiffe://example.org/spire/agent/x509pop/abc` to let it attest again"),
            &x509pop,
        );
        let text = banned.to_string();
        assert!(matches!(banned, NodeError::Banned { .. }), "{text}");
        assert!(text.contains("banned"), "{text}");
        assert!(
            text.contains(&format!("tessera-server agent evict --spiffeID {id}")),
            "{text}"
        );

        let other = refused_reattestation(
            id,
            "not attested",
            &Refusal::new("x509pop: certificate expired"),
            &x509pop,
        );
        assert!(matches!(other, NodeError::Refused(_)), "{other}");
        // The wording alone does not make a ban: only the server's mark does.
        let worded = refused_reattestation(
            id,
            "not attested",
            &Refusal::new("agent spiffe://example.org/x is banned"),
            &x509pop,
        );
        assert!(matches!(worded, NodeError::Refused(_)), "{worded}");
        assert!(other.to_string().contains("/c.pem"), "{other}");
    }
}
