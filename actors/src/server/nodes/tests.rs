//! Given/when/then tests of attested agents.

use tessera_identity::{SelectorSet, SpiffeId};

use super::*;

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
