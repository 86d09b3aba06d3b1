//! The agent's logic against a real server state machine in the same process, through
//! `tessera_sim::in_process` (no sockets): the cache follows the server, SVIDs are signed for
//! new entries and dropped for deleted ones, JWT-SVIDs are cached, and every change reaches
//! the Workload API's watch.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tessera_actors::agent::cache::Cache;
use tessera_actors::agent::core::AgentArgs;
use tessera_actors::agent::rotation::RotationSettings;
use tessera_actors::agent::runtime::{AgentRuntime, Backoff};
use tessera_actors::agent::view::{IdentitySnapshot, WorkloadSource};
use tessera_actors::random::OsRandom;
use tessera_actors::server::events::AttestedAgent;
use tessera_actors::server::keys::{KeyType, SigningKeyPair};
use tessera_actors::server::nodes::NodeCommand;
use tessera_actors::server::registry::{NewEntry, RegistryCommand, RegistryReply};
use tessera_actors::server::supervisor::{Server, ServerSettings};
use tessera_actors::server::tokens::{hash_token, TokenCommand};
use tessera_eventlog::{LocalLog, SystemClock};
use tessera_identity::{
    verify_x509_svid, EntryId, RegistrationEntry, SelectorSet, SpiffeId, TrustDomain,
};
use tessera_sim::in_process::InProcessClient;
use tokio::sync::watch;

const AGENT: &str = "spiffe://example.org/spire/agent/join_token/t1";

fn entry(path: &str) -> NewEntry {
    NewEntry {
        id: None,
        entry: RegistrationEntry {
            id: EntryId::new("unset").unwrap(),
            spiffe_id: SpiffeId::new(&format!("spiffe://example.org{path}")).unwrap(),
            parent_id: SpiffeId::new(AGENT).unwrap(),
            selectors: SelectorSet::parse_all(["unix:uid:1000"]).unwrap(),
            x509_svid_ttl: None,
            jwt_svid_ttl: None,
            federates_with: vec![],
            dns_names: vec![],
            admin: false,
            downstream: false,
            hint: String::new(),
            expires_at: None,
            created_at: 0,
            revision: 0,
        },
    }
}

async fn wait_for(
    rx: &mut watch::Receiver<Arc<IdentitySnapshot>>,
    what: &str,
    ok: impl Fn(&IdentitySnapshot) -> bool,
) -> Arc<IdentitySnapshot> {
    let wait = async {
        loop {
            let current = rx.borrow_and_update().clone();
            if ok(&current) {
                return current;
            }
            rx.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_follows_the_server_signs_and_serves() {
    let td = TrustDomain::new("example.org").unwrap();
    let log = Arc::new(LocalLog::in_memory(Arc::new(SystemClock)));
    let server = Server::start(
        ServerSettings::new(td.clone()),
        log,
        Arc::new(SystemClock),
        Arc::new(OsRandom::new()),
    )
    .await
    .unwrap();
    server.authority.tick().await.unwrap();
    // A join-token agent is recorded together with the spending of its token.
    server
        .tokens
        .command(TokenCommand::Create {
            token_hash: hash_token(AGENT.rsplit('/').next().unwrap()),
            ttl_secs: 600,
            alias: None,
        })
        .await
        .unwrap();
    server
        .nodes
        .command(NodeCommand::Attested(AttestedAgent {
            id: SpiffeId::new(AGENT).unwrap(),
            attestation_type: "join_token".into(),
            selectors: SelectorSet::new(),
            svid_serial: "01".into(),
            svid_expires_at: i64::MAX,
            attested_at: 0,
            can_reattest: false,
        }))
        .await
        .unwrap();
    let RegistryReply::Created(first) = server
        .registry
        .command(RegistryCommand::Create(vec![entry("/web")]))
        .await
        .unwrap()
    else {
        panic!()
    };
    let web = first[0].clone().unwrap();

    let client = Arc::new(InProcessClient::new(
        server.clone(),
        SpiffeId::new(AGENT).unwrap(),
    ));
    let (agent, _sync) = AgentRuntime::start(
        AgentArgs {
            trust_domain: td.clone(),
            cache: Cache::default(),
            client,
            clock: Arc::new(SystemClock),
            // Not the default key type, to see the setting reach the keys made.
            rotation: RotationSettings {
                key_type: KeyType::EcP384,
                ..RotationSettings::default()
            },
            persist: None,
        },
        Arc::new(OsRandom::new()),
        Backoff::default(),
    )
    .await
    .unwrap();
    let mut rx = agent.identities();
    let snap = wait_for(&mut rx, "the first SVID", |s| {
        s.identities.iter().any(|i| i.svid.is_some())
    })
    .await;
    let svid = snap.identities[0].svid.clone().unwrap();
    let bundle = snap.bundle.clone().expect("bundle synced");
    #[allow(clippy::disallowed_methods)]
    let now = SystemTime::now();
    let verified = verify_x509_svid(&svid.cert_chain, &bundle, now).unwrap();
    assert_eq!(verified.spiffe_id(), &web.spiffe_id);
    let key = SigningKeyPair::from_pkcs8(&svid.key_pkcs8, "the workload key").unwrap();
    assert_eq!(key.key_type(), KeyType::EcP384);
    let (_, leaf) = x509_parser::parse_x509_certificate(&svid.cert_chain[0]).unwrap();
    assert_eq!(leaf.public_key().raw, key.spki_der().as_slice());

    // A new entry reaches the agent and gets its SVID; a deleted one disappears.
    let RegistryReply::Created(second) = server
        .registry
        .command(RegistryCommand::Create(vec![entry("/db")]))
        .await
        .unwrap()
    else {
        panic!()
    };
    let db = second[0].clone().unwrap();
    wait_for(&mut rx, "the second SVID", |s| {
        s.identities.iter().filter(|i| i.svid.is_some()).count() == 2
    })
    .await;
    server
        .registry
        .command(RegistryCommand::Delete(vec![web.id.clone()]))
        .await
        .unwrap();
    let snap = wait_for(&mut rx, "the deletion", |s| s.identities.len() == 1).await;
    assert_eq!(snap.identities[0].entry.id, db.id);

    // JWT-SVIDs are minted once and served from the cache until half-life.
    let identity = snap.identities[0].clone();
    let aud = vec!["billing".to_string()];
    let a = agent.fetch_jwt(&identity, &aud).await.unwrap();
    let b = agent.fetch_jwt(&identity, &aud).await.unwrap();
    assert_eq!(a.token, b.token, "cached");
    assert_eq!(a.spiffe_id, db.spiffe_id);
    let other = agent
        .fetch_jwt(&identity, &["other".to_string()])
        .await
        .unwrap();
    assert_ne!(other.token, a.token, "cached per audience set");
    agent.stop();
    server.stop().await;
}
