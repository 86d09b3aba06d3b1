//! Agent service: list/count with filters and pages, get, evict, ban, join tokens.

use tessera_actors::server::events::AttestedAgent;
use tessera_actors::server::nodes::NodeCommand;
use tessera_actors::server::tokens::hash_token;
use tessera_identity::{SelectorSet, SpiffeId};
use tessera_proto::spire::api::server::agent::v1::agent_client::AgentClient;
use tessera_proto::spire::api::server::agent::v1::{
    list_agents_request, BanAgentRequest, CountAgentsRequest, CreateJoinTokenRequest,
    DeleteAgentRequest, GetAgentRequest, ListAgentsRequest,
};
use tessera_proto::spire::api::types;
use tonic::Code;

use crate::support::{id, selector, Fixture};

async fn attest(
    f: &Fixture,
    name: &str,
    kind: &str,
    selectors: &[&str],
    expires_at: i64,
) -> SpiffeId {
    let agent_id =
        SpiffeId::new(&format!("spiffe://example.org/spire/agent/{kind}/{name}")).unwrap();
    if kind == "join_token" {
        // A join-token agent is recorded together with the spending of its token.
        let create = tessera_actors::server::tokens::TokenCommand::Create {
            token_hash: tessera_actors::server::tokens::hash_token(name),
            ttl_secs: 600,
            alias: None,
        };
        f.server.tokens.command(create).await.unwrap();
    }
    f.server
        .nodes
        .command(NodeCommand::Attested(AttestedAgent {
            id: agent_id.clone(),
            attestation_type: kind.into(),
            selectors: SelectorSet::parse_all(selectors.iter().copied()).unwrap(),
            svid_serial: format!("serial-{name}"),
            svid_expires_at: expires_at,
            attested_at: 1_700_000_000,
            can_reattest: kind == "x509pop",
        }))
        .await
        .unwrap();
    agent_id
}

fn wire(id: &SpiffeId) -> Option<types::Spiffeid> {
    Some(tessera_server::convert::spiffe_id_to_proto(id))
}

#[tokio::test]
async fn list_count_get_evict_ban() {
    let f = Fixture::start().await;
    let mut client = AgentClient::new(f.channel.clone());
    let a = attest(&f, "a", "join_token", &["join_token:a"], 1_700_003_600).await;
    let b = attest(
        &f,
        "b",
        "x509pop",
        &["x509pop:subject:cn:b", "x509pop:ca:fp:1"],
        1_700_007_200,
    )
    .await;
    let c = attest(
        &f,
        "c",
        "x509pop",
        &["x509pop:subject:cn:c", "x509pop:ca:fp:1"],
        1_700_010_800,
    )
    .await;

    let mut ids = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let page = client
            .list_agents(ListAgentsRequest {
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.agents.into_iter().map(|a| a.id.unwrap().path));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(ids.len(), 3);

    let counter = client.clone();
    let count = |filter: list_agents_request::Filter| {
        let mut client = counter.clone();
        async move {
            let f = filter;
            client
                .count_agents(CountAgentsRequest {
                    filter: Some(tessera_proto::spire::api::server::agent::v1::count_agents_request::Filter {
                        by_attestation_type: f.by_attestation_type,
                        by_selector_match: f.by_selector_match,
                        by_banned: f.by_banned,
                        by_can_reattest: f.by_can_reattest,
                        by_expires_before: f.by_expires_before,
                    }),
                })
                .await
                .map(|r| r.into_inner().count)
        }
    };
    assert_eq!(count(Default::default()).await.unwrap(), 3);
    let x509pop = list_agents_request::Filter {
        by_attestation_type: "x509pop".into(),
        ..Default::default()
    };
    assert_eq!(count(x509pop).await.unwrap(), 2);
    let same_ca = list_agents_request::Filter {
        by_selector_match: Some(types::SelectorMatch {
            selectors: vec![selector("x509pop:ca:fp:1")],
            r#match: 2,
        }),
        ..Default::default()
    };
    assert_eq!(count(same_ca).await.unwrap(), 2);
    let expiring = list_agents_request::Filter {
        by_expires_before: "2023-11-14T23:13:21Z".into(),
        ..Default::default()
    };
    assert_eq!(
        count(expiring).await.unwrap(),
        1,
        "only a's SVID expires before then"
    );
    let bad = list_agents_request::Filter {
        by_expires_before: "tomorrow".into(),
        ..Default::default()
    };
    assert_eq!(count(bad).await.unwrap_err().code(), Code::InvalidArgument);

    let got = client
        .get_agent(GetAgentRequest {
            id: wire(&b),
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.attestation_type, "x509pop");
    assert_eq!(got.x509svid_serial_number, "serial-b");
    assert!(got.can_reattest);
    assert_eq!(got.selectors.len(), 2);

    client
        .ban_agent(BanAgentRequest { id: wire(&c) })
        .await
        .unwrap();
    client
        .ban_agent(BanAgentRequest { id: wire(&c) })
        .await
        .expect("banning twice is fine");
    let banned = list_agents_request::Filter {
        by_banned: Some(true),
        ..Default::default()
    };
    assert_eq!(count(banned).await.unwrap(), 1);

    client
        .delete_agent(DeleteAgentRequest { id: wire(&a) })
        .await
        .unwrap();
    let gone = client
        .get_agent(GetAgentRequest {
            id: wire(&a),
            output_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let again = client
        .delete_agent(DeleteAgentRequest { id: wire(&a) })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    let no_id = client
        .delete_agent(DeleteAgentRequest { id: None })
        .await
        .unwrap_err();
    assert_eq!(no_id.code(), Code::InvalidArgument);
    f.stop().await;
}

#[tokio::test]
async fn join_tokens_are_random_stored_hashed_and_checked() {
    let f = Fixture::start().await;
    let mut client = AgentClient::new(f.channel.clone());
    let t1 = client
        .create_join_token(CreateJoinTokenRequest {
            ttl: 0,
            token: String::new(),
            agent_id: id("/node/web"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t1.value.len(), 36);
    assert_eq!(
        t1.expires_at,
        1_700_000_000 + 600,
        "the configured default TTL"
    );
    let t2 = client
        .create_join_token(CreateJoinTokenRequest {
            ttl: 60,
            token: String::new(),
            agent_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(t1.value, t2.value);
    assert_eq!(t2.expires_at, 1_700_000_060);

    // Only the hash reaches the state and the log.
    let records = tessera_eventlog::EventLog::read(f.log.as_ref(), 1, 100)
        .await
        .unwrap();
    for r in &records {
        let text = String::from_utf8_lossy(&r.payload);
        assert!(
            !text.contains(&t1.value) && !text.contains(&t2.value),
            "a token in the log"
        );
    }
    let hash = hash_token(&t1.value);
    let pending = f.server.tokens.read(|t| t.len()).await.unwrap();
    assert_eq!(pending, 2);
    let created = records
        .iter()
        .find(|r| r.kind == "JoinTokenCreated")
        .unwrap();
    assert!(String::from_utf8_lossy(&created.payload).contains(&hash.0));

    for (req, code) in [
        (
            CreateJoinTokenRequest {
                ttl: -1,
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            CreateJoinTokenRequest {
                agent_id: Some(types::Spiffeid {
                    trust_domain: "other.org".into(),
                    path: "/x".into(),
                }),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            CreateJoinTokenRequest {
                agent_id: id("/spire/agent/x"),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            CreateJoinTokenRequest {
                token: "a/b".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            CreateJoinTokenRequest {
                ttl: i32::MAX,
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
    ] {
        let err = client.create_join_token(req.clone()).await.unwrap_err();
        assert_eq!(err.code(), code, "{req:?}: {}", err.message());
    }
    let chosen = CreateJoinTokenRequest {
        ttl: 60,
        token: "my-token-0123456789".into(),
        agent_id: None,
    };
    client.create_join_token(chosen.clone()).await.unwrap();
    let dup = client.create_join_token(chosen).await.unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    f.stop().await;
}
