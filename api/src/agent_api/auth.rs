//! Who is calling, checked on every RPC (not only at the TLS handshake): the agent SVID of
//! the connection must still be valid now, and the nodes aggregate must know the agent, not
//! have banned it, and hold that SVID as its current one. A connection outlives all of these
//! (a ban, an expiry, a renewal on another connection), so each call asks again.

use tessera_actors::server::nodes::NodeError;
use tessera_actors::server::supervisor::Server;
use tessera_identity::SpiffeId;

use super::tls::AgentPeer;
use crate::status::ToCode;

/// Why a call is refused before it runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentAuthError {
    /// The connection carries no agent SVID (anonymous TLS is for `Attest` only).
    #[error("this call needs the agent's X.509-SVID as the TLS client certificate; attest first")]
    NoSvid,
    /// The SVID of the connection expired after the handshake.
    #[error("the agent SVID of this connection ({agent}) expired at {not_after} (Unix seconds, now {now}); reconnect with a renewed SVID, or attest again")]
    SvidExpired {
        /// The agent.
        agent: SpiffeId,
        /// Its SVID's notAfter.
        not_after: i64,
        /// The server's time.
        now: i64,
    },
    /// The nodes aggregate refuses the agent (not attested, banned, stale SVID).
    #[error("{0}")]
    Refused(NodeError),
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The agent.
    pub agent: SpiffeId,
    /// The serial of the SVID it presented.
    pub serial: String,
    /// The connection's peer (source address, max age).
    pub peer: AgentPeer,
}

/// Checks `peer` at the server's current time.
pub async fn authenticate(server: &Server, peer: AgentPeer) -> Result<Caller, tonic::Status> {
    check(server, peer).await.map_err(|e| match e {
        Ok(auth) => auth.to_status(),
        Err(status) => status,
    })
}

async fn check(
    server: &Server,
    peer: AgentPeer,
) -> Result<Caller, Result<AgentAuthError, tonic::Status>> {
    let (Some(agent), Some(serial)) = (peer.spiffe_id.clone(), peer.serial.clone()) else {
        return Err(Ok(AgentAuthError::NoSvid));
    };
    let now = server.clock.now_unix_nanos().div_euclid(1_000_000_000);
    if let Some(not_after) = peer.not_after {
        if now > not_after {
            return Err(Ok(AgentAuthError::SvidExpired {
                agent,
                not_after,
                now,
            }));
        }
    }
    let id = agent.clone();
    let nodes = &server.nodes;
    let mut state = nodes
        .read(move |n| n.get(&id).cloned())
        .await
        .map_err(|e| Err(e.to_status()))?;
    if state.as_ref().is_none_or(|s| s.agent.svid_serial != serial) {
        // With several servers, the agent may have attested or renewed on another one a
        // moment ago: fold what the log holds before refusing it.
        let id = agent.clone();
        state = nodes
            .read_fresh(move |n| n.get(&id).cloned())
            .await
            .map_err(|e| Err(e.to_status()))?;
    }
    let refused = |e| Err(Ok(AgentAuthError::Refused(e)));
    match state {
        None => refused(NodeError::NotAttested(agent)),
        Some(s) if s.banned => refused(NodeError::Banned(agent)),
        Some(s) if s.agent.svid_serial != serial => refused(NodeError::StaleSvid {
            agent_id: agent,
            presented: serial,
            current: s.agent.svid_serial,
        }),
        Some(_) => Ok(Caller {
            agent,
            serial,
            peer,
        }),
    }
}
