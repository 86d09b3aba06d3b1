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

#[path = "agent_api/bundles.rs"]
mod bundles;
