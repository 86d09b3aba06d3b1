//! A server on loopback with chosen agent API settings and clock, attested agents, and raw
//! TCP/TLS clients for the hostile tests (and the slowloris bench, which includes this file).

#![allow(dead_code)] // Each test binary uses part of it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tessera_actors::random::OsRandom;
use tessera_actors::server::registry::{NewEntry, RegistryCommand, RegistryReply};
use tessera_actors::server::supervisor::{Server, ServerSettings};
use tessera_actors::server::tokens::{hash_token, TokenCommand};
use tessera_eventlog::{Clock, LocalLog, ManualClock, SystemClock};
use tessera_identity::{Bundle, EntryId, RegistrationEntry, SelectorSet, SpiffeId, TrustDomain};
use tessera_proto::spire::api::types::AttestationData;
use tessera_proto::tessera::agent::v1::agent_server_client::AgentServerClient;
use tessera_proto::tessera::agent::v1::{
    attest_request, attest_response, AttestParams, AttestRequest,
};
use tessera_server::agent_api::{self, AgentApiDeps, AgentApiSettings};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Channel, Endpoint};

/// Bound of every single step of a test.
pub const STEP: Duration = Duration::from_secs(20);

/// `f`, or a panic naming the step after [`STEP`].
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: took longer than {STEP:?}"),
    }
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

/// An agent's SVID and key.
pub struct Svid {
    pub chain: Vec<Vec<u8>>,
    pub key: KeyPair,
    pub id: SpiffeId,
}

/// A TLS client config trusting `bundle`, presenting `svid` if given, offering h2.
pub fn client_config(bundle: &Bundle, svid: Option<&Svid>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(server_verifier(bundle, provider));
    let mut config = match svid {
        Some(s) => builder
            .with_client_auth_cert(
                s.chain
                    .iter()
                    .map(|d| CertificateDer::from(d.clone()))
                    .collect(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(s.key.serialize_der())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A TLS connection made with `config` (bounded by [`STEP`]).
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("tessera-server").unwrap().to_owned();
    within("TLS handshake", connector.connect(name, tcp)).await
}

/// A gRPC channel over one TLS connection.
pub async fn channel(addr: SocketAddr, bundle: &Bundle, svid: Option<&Svid>) -> Channel {
    let config = client_config(bundle, svid);
    within(
        "gRPC connect",
        Endpoint::from_static("http://tessera-server.invalid").connect_with_connector(
            tower::service_fn(move |_| {
                let config = config.clone();
                async move { tls_connect(addr, config).await.map(TokioIo::new) }
            }),
        ),
    )
    .await
    .unwrap()
}

/// A DER CSR for `key`.
pub fn csr(key: &KeyPair) -> Vec<u8> {
    CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(key)
        .unwrap()
        .der()
        .to_vec()
}

/// A running agent API.
pub struct Running {
    pub server: Server,
    pub addr: SocketAddr,
    pub bundle: Bundle,
    pub clock: Option<ManualClock>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Running {
    /// Stops the API and the actors.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.stop().await;
    }
}

/// Starts a server with `settings`; `manual`: on a manual clock starting now.
pub async fn start(settings: AgentApiSettings, manual: bool) -> Running {
    let td = TrustDomain::new("example.org").unwrap();
    #[allow(clippy::disallowed_methods)] // The manual clock starts at the real time.
    let manual_clock = manual.then(|| ManualClock::new(SystemTime::now()));
    let clock: Arc<dyn Clock> = match &manual_clock {
        Some(c) => Arc::new(c.clone()),
        None => Arc::new(SystemClock),
    };
    let log = Arc::new(LocalLog::in_memory(clock.clone()));
    let server = Server::start(
        ServerSettings::new(td),
        log,
        clock,
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
        settings,
    };
    tokio::spawn(agent_api::serve(listener, deps, async move {
        let _ = stopped.await;
    }));
    Running {
        server,
        addr,
        bundle,
        clock: manual_clock,
        stop: Some(stop),
    }
}

/// Settings for tests: the defaults, with attestation not rate limited (tests attest several
/// agents from 127.0.0.1 in a row) unless a test sets it.
pub fn settings() -> AgentApiSettings {
    let mut s = AgentApiSettings::default();
    s.limits.attestations_per_ip_per_second = 1_000;
    s.limits.attestation_burst_per_ip = 1_000;
    s
}

/// Creates join token `token` and attests with it.
pub async fn attest_new(r: &Running, token: &str) -> Svid {
    r.server
        .tokens
        .command(TokenCommand::Create {
            token_hash: hash_token(token),
            ttl_secs: 600,
            alias: None,
        })
        .await
        .unwrap();
    attest(r.addr, &r.bundle, token).await.unwrap()
}

/// Attests with join token `token`.
pub async fn attest(addr: SocketAddr, bundle: &Bundle, token: &str) -> Result<Svid, tonic::Status> {
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
    let mut responses = within("attest", client.attest(futures::stream::iter(vec![first])))
        .await?
        .into_inner();
    let msg = within("attest result", responses.next())
        .await
        .expect("a response")?;
    let Some(attest_response::Step::Result(result)) = msg.step else {
        panic!("join_token needs no challenge");
    };
    let svid = result.svid.unwrap();
    let id = svid.id.as_ref().unwrap();
    let id = SpiffeId::new(&format!("spiffe://{}{}", id.trust_domain, id.path)).unwrap();
    Ok(Svid {
        chain: svid.cert_chain,
        key,
        id,
    })
}

/// Registers `spiffe` under `parent`; returns the entry.
pub async fn entry(server: &Server, spiffe: &str, parent: &SpiffeId) -> RegistrationEntry {
    let e = NewEntry {
        id: None,
        entry: RegistrationEntry {
            id: EntryId::new("unset").unwrap(),
            spiffe_id: SpiffeId::new(spiffe).unwrap(),
            parent_id: parent.clone(),
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
    };
    let RegistryReply::Created(mut r) = server
        .registry
        .command(RegistryCommand::Create(vec![e]))
        .await
        .unwrap()
    else {
        panic!("create reply")
    };
    r.pop().unwrap().unwrap()
}

/// Waits (bounded by [`STEP`]) until the peer closes `stream` (EOF or reset); whatever it
/// sends meanwhile is read and ignored.
pub async fn closed_by_peer<S: tokio::io::AsyncRead + Unpin>(what: &str, stream: &mut S) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 16 * 1024];
    within(what, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
}
