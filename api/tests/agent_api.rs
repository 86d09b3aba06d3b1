//! The agent API end to end over real TCP + TLS on loopback: join-token attestation, mTLS with
//! the issued SVID, the sync stream (snapshot, then a live change), batch signing limited to
//! the agent's view, JWT minting, renewal, and the refusals (no SVID, spent token, bad
//! attestor, banned agent); federated bundles in snapshots, changes and resumptions.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tessera_actors::random::OsRandom;
use tessera_actors::server::federation::{FederationCommand, PutMode};
use tessera_actors::server::nodes::NodeCommand;
use tessera_actors::server::registry::{NewEntry, RegistryCommand, RegistryReply};
use tessera_actors::server::supervisor::{Server, ServerSettings};
use tessera_actors::server::tokens::{hash_token, TokenCommand};
use tessera_eventlog::{LocalLog, SystemClock};
use tessera_identity::{
    verify_x509_svid, Bundle, EntryId, RegistrationEntry, SelectorSet, SpiffeId, TrustDomain,
};
use tessera_proto::spire::api::types::AttestationData;
use tessera_proto::tessera::agent::v1::agent_server_client::AgentServerClient;
use tessera_proto::tessera::agent::v1::{
    attest_request, attest_response, sync_response::Event, AttestParams, AttestRequest,
    BatchSignX509SvidRequest, MintJwtSvidRequest, RenewAgentRequest, SignX509SvidParams,
    SyncRequest,
};
use tessera_server::agent_api::{self, AgentApiDeps, AgentApiSettings};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};

const STEP: Duration = Duration::from_secs(20);

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .expect("step took longer than 20 s")
}

/// Trusts exactly the server SVID of the bundle's trust domain: the agent's own verifier
/// (`tessera_edge::tls`), as a real agent checks the server.
fn server_verifier(
    bundle: &Bundle,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Arc<tessera_edge::tls::SpiffeServerVerifier> {
    let server =
        SpiffeId::new(&format!("spiffe://{}/spire/server", bundle.trust_domain())).unwrap();
    Arc::new(tessera_edge::tls::SpiffeServerVerifier::new(
        tessera_edge::tls::ServerTrust::bundle(bundle.clone()),
        tessera_edge::tls::ExpectedId::Exact(server),
        provider,
    ))
}

/// A client channel to `addr`, trusting `bundle`, optionally presenting an SVID.
async fn channel(
    addr: std::net::SocketAddr,
    bundle: &Bundle,
    svid: Option<(&[Vec<u8>], &KeyPair)>,
) -> Channel {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(server_verifier(bundle, provider));
    let mut config = match svid {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                chain
                    .iter()
                    .map(|d| CertificateDer::from(d.clone()))
                    .collect(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    Endpoint::from_static("http://tessera-server.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let tls = connector
                    .connect(
                        ServerName::try_from("tessera-server").unwrap().to_owned(),
                        tcp,
                    )
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .unwrap()
}

fn csr(key: &KeyPair) -> Vec<u8> {
    CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(key)
        .unwrap()
        .der()
        .to_vec()
}

struct Running {
    server: Server,
    addr: std::net::SocketAddr,
    bundle: Bundle,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Running {
    let td = TrustDomain::new("example.org").unwrap();
    let log = Arc::new(LocalLog::in_memory(Arc::new(SystemClock)));
    let server = Server::start(
        ServerSettings::new(td),
        log,
        Arc::new(SystemClock),
        Arc::new(OsRandom::new()),
    )
    .await
    .unwrap();
    server.authority.tick().await.unwrap();
    let bundle = server.authority.bundle().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let deps = AgentApiDeps {
        server: server.clone(),
        authority: server.authority.clone(),
        x509pop: None,
        settings: AgentApiSettings::default(),
    };
    tokio::spawn(agent_api::serve(listener, deps, async move {
        let _ = stopped.await;
    }));
    Running {
        server,
        addr,
        bundle,
        stop,
    }
}

async fn token(server: &Server, token: &str, alias: Option<&str>) {
    server
        .tokens
        .command(TokenCommand::Create {
            token_hash: hash_token(token),
            ttl_secs: 600,
            alias: alias.map(|a| SpiffeId::new(a).unwrap()),
        })
        .await
        .unwrap();
}

/// Attests with a join token; returns the agent SVID chain and its key.
async fn attest(
    addr: std::net::SocketAddr,
    bundle: &Bundle,
    token: &str,
) -> Result<(Vec<Vec<u8>>, KeyPair, SpiffeId), tonic::Status> {
    let key = KeyPair::generate().unwrap();
    let mut client = AgentServerClient::new(channel(addr, bundle, None).await);
    let first = AttestRequest {
        step: Some(attest_request::Step::Params(AttestParams {
            data: Some(AttestationData {
                r#type: "join_token".into(),
                payload: token.as_bytes().to_vec(),
            }),
            csr: csr(&key),
            agent_version: "test".into(),
        })),
    };
    let mut responses = within(client.attest(futures::stream::iter(vec![first])))
        .await?
        .into_inner();
    let msg = within(responses.next()).await.expect("a response")?;
    let Some(attest_response::Step::Result(result)) = msg.step else {
        panic!("join_token needs no challenge");
    };
    let svid = result.svid.unwrap();
    let id = SpiffeId::new(
        &svid
            .id
            .as_ref()
            .map(|i| format!("spiffe://{}{}", i.trust_domain, i.path))
            .unwrap(),
    )
    .unwrap();
    assert!(!result.reattestable);
    Ok((svid.cert_chain, key, id))
}

fn entry(spiffe: &str, parent: &SpiffeId) -> NewEntry {
    NewEntry {
        id: None,
        entry: RegistrationEntry {
            id: EntryId::new("unset").unwrap(),
            spiffe_id: SpiffeId::new(spiffe).unwrap(),
            parent_id: parent.clone(),
            selectors: SelectorSet::parse_all(["unix:uid:1000"]).unwrap(),
            x509_svid_ttl: None,
            jwt_svid_ttl: None,
            federates_with: vec![],
            dns_names: vec!["web.example.org".into()],
            admin: false,
            downstream: false,
            hint: "web".into(),
            expires_at: None,
            created_at: 0,
            revision: 0,
        },
    }
}

async fn create(server: &Server, e: NewEntry) -> RegistrationEntry {
    let RegistryReply::Created(mut r) = server
        .registry
        .command(RegistryCommand::Create(vec![e]))
        .await
        .unwrap()
    else {
        panic!()
    };
    r.pop().unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_token_agent_syncs_signs_mints_and_renews() {
    let r = start().await;
    token(&r.server, "tok-1", Some("spiffe://example.org/node/web")).await;
    let (chain, key, agent_id) = attest(r.addr, &r.bundle, "tok-1").await.unwrap();
    assert_eq!(
        agent_id.to_string(),
        "spiffe://example.org/spire/agent/join_token/tok-1"
    );
    #[allow(clippy::disallowed_methods)]
    let now = SystemTime::now();
    verify_x509_svid(&chain, &r.bundle, now).unwrap();

    // The token is spent.
    let err = attest(r.addr, &r.bundle, "tok-1")
        .await
        .expect_err("second use refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");

    // mTLS with the SVID: the sync stream opens with a snapshot.
    let mut client = AgentServerClient::new(channel(r.addr, &r.bundle, Some((&chain, &key))).await);
    let direct = create(&r.server, entry("spiffe://example.org/web", &agent_id)).await;
    let mut sync = within(client.sync_events(SyncRequest {
        cursor: 0,
        max_message_bytes: 0,
    }))
    .await
    .unwrap()
    .into_inner();
    let mut entries = Vec::new();
    let mut saw_bundle = false;
    loop {
        match within(sync.next()).await.unwrap().unwrap().event.unwrap() {
            Event::SnapshotBegin(b) => assert_eq!(b.bundle_count, 1),
            Event::SnapshotChunk(c) => {
                saw_bundle |= !c.bundles.is_empty();
                entries.extend(c.entries.into_iter().map(|e| e.id));
            }
            Event::SnapshotEnd(_) => break,
            other => panic!("unexpected {other:?} in the snapshot"),
        }
    }
    assert!(saw_bundle);
    assert!(
        entries.contains(&direct.id.as_str().to_owned()),
        "{entries:?}"
    );
    assert_eq!(
        entries.len(),
        2,
        "the direct entry and the token's node alias: {entries:?}"
    );

    // A new entry under the alias reaches the open stream.
    let via_alias = create(
        &r.server,
        entry(
            "spiffe://example.org/db",
            &SpiffeId::new("spiffe://example.org/node/web").unwrap(),
        ),
    )
    .await;
    loop {
        match within(sync.next()).await.unwrap().unwrap().event.unwrap() {
            Event::EntryUpserted(u) => {
                assert_eq!(u.entry.unwrap().id, via_alias.id.as_str());
                break;
            }
            Event::Checkpoint(_) | Event::BundleUpdated(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    // Signing: authorised entries only.
    let workload_key = KeyPair::generate().unwrap();
    let foreign = create(
        &r.server,
        entry(
            "spiffe://example.org/other",
            &SpiffeId::new("spiffe://example.org/spire/agent/x/y").unwrap(),
        ),
    )
    .await;
    let signed = within(client.batch_sign_x509_svid(BatchSignX509SvidRequest {
        params: vec![
            SignX509SvidParams {
                entry_id: direct.id.as_str().into(),
                csr: csr(&workload_key),
            },
            SignX509SvidParams {
                entry_id: foreign.id.as_str().into(),
                csr: csr(&workload_key),
            },
            SignX509SvidParams {
                entry_id: via_alias.id.as_str().into(),
                csr: b"not a csr".to_vec(),
            },
        ],
    }))
    .await
    .unwrap()
    .into_inner()
    .results;
    assert_eq!(signed[0].status.as_ref().unwrap().code, 0);
    let svid = signed[0].svid.as_ref().unwrap();
    assert_eq!(svid.hint, "web");
    let verified = verify_x509_svid(&svid.cert_chain, &r.bundle, now).unwrap();
    assert_eq!(verified.spiffe_id().to_string(), "spiffe://example.org/web");
    assert_eq!(
        signed[1].status.as_ref().unwrap().code,
        tonic::Code::PermissionDenied as i32
    );
    assert_eq!(
        signed[2].status.as_ref().unwrap().code,
        tonic::Code::InvalidArgument as i32
    );

    // JWT for an authorised entry; refused for a foreign one.
    let jwt = within(client.mint_jwt_svid(MintJwtSvidRequest {
        entry_id: direct.id.as_str().into(),
        audience: vec!["billing".into()],
        ttl: 0,
    }))
    .await
    .unwrap()
    .into_inner()
    .svid
    .unwrap();
    assert_eq!(jwt.token.split('.').count(), 3);
    let err = within(client.mint_jwt_svid(MintJwtSvidRequest {
        entry_id: foreign.id.as_str().into(),
        audience: vec!["billing".into()],
        ttl: 0,
    }))
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // Renewal: the new SVID works, the old one no longer does.
    let new_key = KeyPair::generate().unwrap();
    let renewed = within(client.renew_agent(RenewAgentRequest { csr: csr(&new_key) }))
        .await
        .unwrap()
        .into_inner()
        .svid
        .unwrap();
    let mut stale = AgentServerClient::new(channel(r.addr, &r.bundle, Some((&chain, &key))).await);
    let err = within(stale.mint_jwt_svid(MintJwtSvidRequest {
        entry_id: direct.id.as_str().into(),
        audience: vec!["a".into()],
        ttl: 0,
    }))
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(
        err.metadata()
            .get(tessera_proto::tessera::agent::v1::AGENT_REFUSAL_KEY)
            .is_none(),
        "a stale SVID is not a ban"
    );
    let mut fresh = AgentServerClient::new(
        channel(r.addr, &r.bundle, Some((&renewed.cert_chain, &new_key))).await,
    );
    within(fresh.mint_jwt_svid(MintJwtSvidRequest {
        entry_id: direct.id.as_str().into(),
        audience: vec!["a".into()],
        ttl: 0,
    }))
    .await
    .unwrap();

    // Banned: refused.
    r.server
        .nodes
        .command(NodeCommand::Ban(agent_id.clone()))
        .await
        .unwrap();
    let err = within(fresh.mint_jwt_svid(MintJwtSvidRequest {
        entry_id: direct.id.as_str().into(),
        audience: vec!["a".into()],
        ttl: 0,
    }))
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // Marked as a ban in metadata, which agents act on (not the wording).
    assert_eq!(
        err.metadata()
            .get(tessera_proto::tessera::agent::v1::AGENT_REFUSAL_KEY)
            .map(|v| v.as_bytes()),
        Some(tessera_proto::tessera::agent::v1::AGENT_BANNED.as_bytes()),
        "{err:?}"
    );
    let _ = r.stop.send(());
    r.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_an_svid_and_unknown_attestors_are_refused() {
    let r = start().await;
    let mut anonymous = AgentServerClient::new(channel(r.addr, &r.bundle, None).await);
    let err = within(anonymous.sync_events(SyncRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    let err = attest(r.addr, &r.bundle, "never-issued")
        .await
        .expect_err("unknown token refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    let key = KeyPair::generate().unwrap();
    let first = AttestRequest {
        step: Some(attest_request::Step::Params(AttestParams {
            data: Some(AttestationData {
                r#type: "aws_iid".into(),
                payload: vec![],
            }),
            csr: csr(&key),
            agent_version: String::new(),
        })),
    };
    let mut responses = within(anonymous.attest(futures::stream::iter(vec![first])))
        .await
        .unwrap()
        .into_inner();
    let err = within(responses.next()).await.unwrap().unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("not enabled"), "{err}");
    let _ = r.stop.send(());
    r.server.stop().await;
}

/// A bundle of `td` with one self-signed CA made here.
fn foreign_bundle(td: &str) -> Bundle {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let mut b = Bundle::new(TrustDomain::new(td).unwrap());
    b.add_x509_authority(tessera_identity::X509Authority::from_der(cert.der().to_vec()).unwrap());
    b
}

async fn put_federated(server: &Server, bundle: Bundle) {
    server
        .federation
        .command(FederationCommand::PutBundle {
            bundle,
            mode: PutMode::Set,
        })
        .await
        .unwrap();
}

/// Reads a whole snapshot; returns its seq and the trust domains of its bundles.
async fn read_snapshot(
    sync: &mut tonic::Streaming<tessera_proto::tessera::agent::v1::SyncResponse>,
) -> (u64, Vec<String>) {
    let mut tds = Vec::new();
    loop {
        match within(sync.next()).await.unwrap().unwrap().event.unwrap() {
            Event::SnapshotBegin(_) => {}
            Event::SnapshotChunk(c) => tds.extend(c.bundles.into_iter().map(|b| b.trust_domain)),
            Event::SnapshotEnd(end) => return (end.seq, tds),
            other => panic!("unexpected {other:?} in the snapshot"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_bundles_reach_agents_in_snapshots_changes_and_resumptions() {
    let r = start().await;
    put_federated(&r.server, foreign_bundle("partner.example")).await;
    token(&r.server, "tok-fed", None).await;
    let (chain, key, _) = attest(r.addr, &r.bundle, "tok-fed").await.unwrap();
    let mut client = AgentServerClient::new(channel(r.addr, &r.bundle, Some((&chain, &key))).await);
    let open = |cursor| SyncRequest {
        cursor,
        max_message_bytes: 0,
    };

    // Given a federated bundle, the snapshot carries it beside the trust domain's own.
    let mut sync = within(client.sync_events(open(0)))
        .await
        .unwrap()
        .into_inner();
    let (_, mut tds) = read_snapshot(&mut sync).await;
    tds.sort();
    assert_eq!(tds, ["example.org", "partner.example"]);

    // A new one, then a deletion, reach the open stream.
    let other = foreign_bundle("other.example");
    put_federated(&r.server, other.clone()).await;
    loop {
        match within(sync.next()).await.unwrap().unwrap().event.unwrap() {
            Event::BundleUpdated(u)
                if u.bundle.as_ref().unwrap().trust_domain == "other.example" =>
            {
                let got = &u.bundle.unwrap().x509_authorities[0].asn1;
                assert_eq!(got, other.x509_authorities()[0].der());
                break;
            }
            Event::Checkpoint(_) | Event::BundleUpdated(_) => {}
            e => panic!("unexpected {e:?}"),
        }
    }
    let cursor = r.server.sync.seq().await.unwrap();
    r.server
        .federation
        .command(FederationCommand::DeleteBundle {
            trust_domain: TrustDomain::new("partner.example").unwrap(),
        })
        .await
        .unwrap();
    loop {
        match within(sync.next()).await.unwrap().unwrap().event.unwrap() {
            Event::BundleRemoved(b) => {
                assert_eq!(b.trust_domain, "partner.example");
                break;
            }
            Event::Checkpoint(_) | Event::BundleUpdated(_) => {}
            e => panic!("unexpected {e:?}"),
        }
    }
    drop(sync);

    // An agent whose cursor predates the deletion gets a snapshot (it may hold the bundle)...
    let mut again = within(client.sync_events(open(cursor)))
        .await
        .unwrap()
        .into_inner();
    let (seq, mut tds) = read_snapshot(&mut again).await;
    tds.sort();
    assert_eq!(tds, ["example.org", "other.example"]);
    drop(again);

    // ...and one after it resumes, with every bundle sent again.
    let mut resumed = within(client.sync_events(open(seq)))
        .await
        .unwrap()
        .into_inner();
    let mut tds = Vec::new();
    match within(resumed.next())
        .await
        .unwrap()
        .unwrap()
        .event
        .unwrap()
    {
        Event::Resumed(r) => assert_eq!(r.cursor, seq),
        e => panic!("expected Resumed, got {e:?}"),
    }
    while tds.len() < 2 {
        match within(resumed.next())
            .await
            .unwrap()
            .unwrap()
            .event
            .unwrap()
        {
            Event::BundleUpdated(u) => tds.push(u.bundle.unwrap().trust_domain),
            e => panic!("unexpected {e:?}"),
        }
    }
    tds.sort();
    assert_eq!(tds, ["example.org", "other.example"]);
    let _ = r.stop.send(());
    r.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_bundles_are_spread_over_snapshot_chunks_within_the_agents_budget() {
    let r = start().await;
    for i in 0..60 {
        put_federated(&r.server, foreign_bundle(&format!("partner{i}.example"))).await;
    }
    token(&r.server, "tok-chunks", None).await;
    let (chain, key, _) = attest(r.addr, &r.bundle, "tok-chunks").await.unwrap();
    let mut client = AgentServerClient::new(channel(r.addr, &r.bundle, Some((&chain, &key))).await);
    // The smallest budget an agent may ask for (16 KiB); 61 bundles are about twice that.
    let budget = 16 * 1024;
    let mut sync = within(client.sync_events(SyncRequest {
        cursor: 0,
        max_message_bytes: budget,
    }))
    .await
    .unwrap()
    .into_inner();
    let (mut chunks, mut bundles) = (0, 0);
    loop {
        let message = within(sync.next()).await.unwrap().unwrap();
        assert!(
            prost::Message::encoded_len(&message) <= budget as usize,
            "a sync message of {} bytes exceeds the agent's budget",
            prost::Message::encoded_len(&message)
        );
        match message.event.unwrap() {
            Event::SnapshotBegin(b) => assert_eq!(b.bundle_count, 61),
            Event::SnapshotChunk(c) => {
                assert_eq!(c.index, chunks);
                chunks += 1;
                bundles += c.bundles.len();
            }
            Event::SnapshotEnd(end) => {
                assert_eq!(end.chunk_count, chunks);
                break;
            }
            other => panic!("unexpected {other:?} in the snapshot"),
        }
    }
    assert_eq!(bundles, 61);
    assert!(chunks > 1, "bundles spread over {chunks} chunk(s)");
    let _ = r.stop.send(());
    r.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_too_large_for_the_agents_budget_is_left_out_not_sent() {
    let r = start().await;
    // About 60 certificates: well over the 16 KiB budget the agent asks for below.
    let mut big = foreign_bundle("big.example");
    for _ in 0..60 {
        let one = foreign_bundle("big.example");
        big.add_x509_authority(one.x509_authorities()[0].clone());
    }
    put_federated(&r.server, big).await;
    put_federated(&r.server, foreign_bundle("small.example")).await;
    token(&r.server, "tok-big", None).await;
    let (chain, key, _) = attest(r.addr, &r.bundle, "tok-big").await.unwrap();
    let mut client = AgentServerClient::new(channel(r.addr, &r.bundle, Some((&chain, &key))).await);
    let mut sync = within(client.sync_events(SyncRequest {
        cursor: 0,
        max_message_bytes: 16 * 1024,
    }))
    .await
    .unwrap()
    .into_inner();
    let (_, mut tds) = read_snapshot(&mut sync).await;
    tds.sort();
    assert_eq!(tds, ["example.org", "small.example"]);
    let _ = r.stop.send(());
    r.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tainted_authority_reaches_the_agents_stream_marked_and_a_revoked_one_leaves_it() {
    use tessera_actors::server::authority::{AuthorityKind, LocalStep};

    let r = start().await;
    token(&r.server, "tok-taint", None).await;
    let (chain, key, _) = attest(r.addr, &r.bundle, "tok-taint").await.unwrap();
    let mut client = AgentServerClient::new(channel(r.addr, &r.bundle, Some((&chain, &key))).await);
    let mut sync = within(client.sync_events(SyncRequest {
        cursor: 0,
        max_message_bytes: 0,
    }))
    .await
    .unwrap()
    .into_inner();
    read_snapshot(&mut sync).await;

    // Rotate by hand: the first CA and JWT key become old, then tainted.
    let authority = &r.server.authority;
    let (old_ca, old_kid) = (
        authority.signer().active_authority_id().unwrap(),
        authority.signer().active_kid().unwrap(),
    );
    for kind in [AuthorityKind::X509, AuthorityKind::Jwt] {
        let next = authority.prepare(kind).await.unwrap().unwrap();
        authority
            .local_step(kind, LocalStep::Activate, next.id)
            .await
            .unwrap()
            .unwrap();
    }
    authority
        .local_step(AuthorityKind::X509, LocalStep::Taint, old_ca.clone())
        .await
        .unwrap()
        .unwrap();
    authority
        .local_step(AuthorityKind::Jwt, LocalStep::Taint, old_kid.clone())
        .await
        .unwrap()
        .unwrap();
    let old_root = r.bundle.x509_authorities()[0].der().to_vec();

    // The open stream gets the bundle with both marks (bounded: one update per step at most).
    let mut marked = false;
    for _ in 0..20 {
        match within(sync.next()).await.unwrap().unwrap().event.unwrap() {
            Event::BundleUpdated(u) => {
                let b = u.bundle.unwrap();
                let x509 = b.x509_authorities.iter().find(|a| a.asn1 == old_root);
                let jwt = b.jwt_authorities.iter().find(|k| k.key_id == old_kid);
                if x509.is_some_and(|a| a.tainted) && jwt.is_some_and(|k| k.tainted) {
                    assert!(
                        b.x509_authorities
                            .iter()
                            .filter(|a| a.asn1 != old_root)
                            .all(|a| !a.tainted),
                        "only the old root is marked"
                    );
                    marked = true;
                    break;
                }
            }
            Event::Checkpoint(_) => {}
            e => panic!("unexpected {e:?}"),
        }
    }
    assert!(marked, "no BundleUpdated with the taint marks");

    // Revoked: the old root leaves the agent's bundle.
    authority
        .local_step(AuthorityKind::X509, LocalStep::Revoke, old_ca)
        .await
        .unwrap()
        .unwrap();
    let mut gone = false;
    for _ in 0..20 {
        match within(sync.next()).await.unwrap().unwrap().event.unwrap() {
            Event::BundleUpdated(u) => {
                let b = u.bundle.unwrap();
                if !b.x509_authorities.iter().any(|a| a.asn1 == old_root) {
                    gone = true;
                    break;
                }
            }
            Event::Checkpoint(_) => {}
            e => panic!("unexpected {e:?}"),
        }
    }
    assert!(gone, "the revoked root is still sent");
    let _ = r.stop.send(());
}
