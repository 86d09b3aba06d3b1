//! Given/when/then tests of attested agents.

use tessera_identity::{SelectorSet, SpiffeId};

use super::*;
use crate::server::tokens::hash_token;

fn ctx() -> Context {
    Context {
        now: 1_000,
        random: [0; 16],
    }
}

fn agent(id: &str, reattest: bool) -> AttestedAgent {
    AttestedAgent {
        id: SpiffeId::new(id).unwrap(),
        attestation_type: if reattest { "x509pop" } else { "join_token" }.into(),
        selectors: SelectorSet::parse_all(["x509pop:subject:cn:node-1"]).unwrap(),
        svid_serial: "01".into(),
        svid_expires_at: 4_600,
        attested_at: 1_000,
        can_reattest: reattest,
    }
}

fn given(events: &[ServerEvent]) -> Nodes {
    let mut n = Nodes::default();
    for e in events {
        n.apply(e);
    }
    n
}

const X: &str = "spiffe://example.org/spire/agent/x509pop/abcd";
const J: &str = "spiffe://example.org/spire/agent/join_token/tok";

fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).unwrap()
}

#[test]
fn attest_then_renew_with_current_serial_only() {
    let n = given(&[ServerEvent::AgentAttested(agent(X, true))]);
    let renew = |presented: &str| NodeCommand::Renewed {
        agent_id: id(X),
        presented_serial: presented.into(),
        svid_serial: "02".into(),
        svid_expires_at: 8_000,
    };
    let d = n.decide(renew("01"), &ctx()).unwrap();
    assert_eq!(
        d.events,
        vec![ServerEvent::AgentSvidRenewed {
            agent_id: id(X),
            svid_serial: "02".into(),
            svid_expires_at: 8_000
        }]
    );
    let n = given(&[
        ServerEvent::AgentAttested(agent(X, true)),
        d.events[0].clone(),
    ]);
    assert!(matches!(
        n.decide(renew("01"), &ctx()),
        Err(NodeError::StaleSvid { .. })
    ));
    assert_eq!(n.get(&id(X)).unwrap().agent.svid_serial, "02");
}

#[test]
fn evicted_agent_must_reattest_and_join_token_agents_cannot() {
    let n = given(&[
        ServerEvent::AgentAttested(agent(X, true)),
        ServerEvent::AgentAttested(agent(J, false)),
    ]);
    assert!(matches!(
        n.decide(NodeCommand::Attested(agent(J, false)), &ctx()),
        Err(NodeError::AlreadyAttested(_))
    ));
    assert!(
        n.decide(NodeCommand::Attested(agent(X, true)), &ctx())
            .is_ok(),
        "x509pop may re-attest"
    );
    let n = given(&[
        ServerEvent::AgentAttested(agent(X, true)),
        ServerEvent::AgentEvicted { agent_id: id(X) },
    ]);
    assert!(n.get(&id(X)).is_none());
    assert!(matches!(
        n.decide(
            NodeCommand::Renewed {
                agent_id: id(X),
                presented_serial: "01".into(),
                svid_serial: "02".into(),
                svid_expires_at: 1
            },
            &ctx()
        ),
        Err(NodeError::NotAttested(_))
    ));
}

#[test]
fn banned_agent_cannot_renew_or_attest_until_evicted() {
    let n = given(&[
        ServerEvent::AgentAttested(agent(X, true)),
        ServerEvent::AgentBanned { agent_id: id(X) },
    ]);
    assert!(
        n.selectors_of(&id(X)).is_none(),
        "banned agents get no authorisation"
    );
    assert!(matches!(
        n.decide(NodeCommand::Attested(agent(X, true)), &ctx()),
        Err(NodeError::Banned(_))
    ));
    assert!(matches!(
        n.decide(NodeCommand::Ban(id(X)), &ctx()),
        Err(NodeError::Banned(_))
    ));
    let d = n.decide(NodeCommand::Evict(id(X)), &ctx()).unwrap();
    let n = given(&[
        ServerEvent::AgentAttested(agent(X, true)),
        ServerEvent::AgentBanned { agent_id: id(X) },
        d.events[0].clone(),
    ]);
    assert!(n
        .decide(NodeCommand::Attested(agent(X, true)), &ctx())
        .is_ok());
}

fn token_created(token: &str, expires_at: i64) -> ServerEvent {
    ServerEvent::JoinTokenCreated {
        token_hash: hash_token(token),
        expires_at,
        alias: None,
    }
}

#[test]
fn a_join_token_is_spent_in_the_same_append_that_records_its_agent() {
    let n = given(&[token_created("tok", 2_000)]);
    let d = n
        .decide(NodeCommand::Attested(agent(J, false)), &ctx())
        .unwrap();
    assert_eq!(
        d.events,
        vec![
            ServerEvent::JoinTokenConsumed {
                token_hash: hash_token("tok"),
                agent_id: id(J),
            },
            ServerEvent::AgentAttested(agent(J, false)),
        ]
    );
    // A second attestation with the same token (racing, or after an eviction) is refused.
    let mut n = n;
    for e in &d.events {
        n.apply(e);
    }
    n.apply(&ServerEvent::AgentEvicted { agent_id: id(J) });
    assert!(matches!(
        n.decide(NodeCommand::Attested(agent(J, false)), &ctx()),
        Err(NodeError::JoinToken {
            reason: TokenError::Unknown,
            ..
        })
    ));
}

#[test]
fn a_join_token_agent_without_a_spendable_token_is_not_recorded() {
    for (events, reason) in [
        (vec![], TokenError::Unknown),
        (
            vec![token_created("tok", 1_000)],
            TokenError::Expired { expires_at: 1_000 },
        ),
    ] {
        let n = given(&events);
        let e = n
            .decide(NodeCommand::Attested(agent(J, false)), &ctx())
            .unwrap_err();
        assert_eq!(
            e,
            NodeError::JoinToken {
                agent: id(J),
                reason
            }
        );
        assert!(e.to_string().contains("join token"), "{e}");
    }
    // Other attestors spend nothing.
    let d = given(&[])
        .decide(NodeCommand::Attested(agent(X, true)), &ctx())
        .unwrap();
    assert_eq!(d.events, vec![ServerEvent::AgentAttested(agent(X, true))]);
}
