//! Fixtures of the federation tests: in-process Tessera servers of their own trust domains
//! sharing one manual clock, their bundle endpoints on 127.0.0.1:0, a Web PKI made by rcgen,
//! and a tiny HTTPS server that answers whatever a test wants (garbage, too much, a 500).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::RootCertStore;
use tessera_actors::random::SeededRandom;
use tessera_actors::server::federation::{EndpointProfile, Relationship};
use tessera_actors::server::supervisor::{Server, ServerSettings};
use tessera_eventlog::{Clock, LocalLog, ManualClock};
use tessera_identity::{Bundle, SpiffeId, TrustDomain};
use tessera_server::daemon::{ShutdownSignal, ShutdownTrigger};
use tessera_server::federation::endpoint::{self, cert, EndpointLimits, Published};
use tessera_server::federation::fetch::{FetchLimits, Fetcher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Every clock of a test starts here (2027).
pub const START: u64 = 1_800_000_000;

/// The refresh hint the endpoints publish.
pub const HINT: Duration = Duration::from_secs(120);

/// A CA lifetime short enough that a rotation step is minutes away on the manual clock, long
/// enough that the endpoint SVID issued at start is still valid then.
pub const CA_TTL: Duration = Duration::from_secs(600);

pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at_unix_secs(START))
}

/// A running server of one trust domain, with its first CA.
pub struct Domain {
    pub td: TrustDomain,
    pub server: Server,
    pub log: Arc<LocalLog>,
}

impl Domain {
    pub async fn start(name: &str, clock: Arc<ManualClock>) -> Domain {
        let td = TrustDomain::new(name).unwrap();
        let clock: Arc<dyn Clock> = clock;
        let log = Arc::new(LocalLog::in_memory(clock.clone()));
        let mut settings = ServerSettings::new(td.clone());
        settings.authority.ca.ttl = CA_TTL;
        settings.authority.jwt_key_ttl = CA_TTL;
        settings.authority.tick_interval = None;
        let server = Server::start(settings, log.clone(), clock, Arc::new(SeededRandom::new(9)))
            .await
            .unwrap();
        server.authority.tick().await.unwrap();
        Domain { td, server, log }
    }

    /// The bundle the authority publishes now.
    pub fn bundle(&self) -> Bundle {
        self.server.authority.bundle().unwrap()
    }

    /// This domain's X.509 authorities as a bundle of `td` (a wrong bundle for tests).
    pub fn bundle_as(&self, td: &TrustDomain) -> Bundle {
        let mut b = Bundle::new(td.clone());
        for x in self.bundle().x509_authorities() {
            b.add_x509_authority(x.clone());
        }
        b
    }

    /// `spiffe://<td>/spire/server`.
    pub fn server_id(&self) -> SpiffeId {
        SpiffeId::from_path(&self.td, "/spire/server").unwrap()
    }

    /// An `https_spiffe` relationship with this domain's endpoint at `url`.
    pub fn spiffe_relationship(&self, url: &str) -> Relationship {
        Relationship {
            trust_domain: self.td.clone(),
            bundle_endpoint_url: url.to_owned(),
            profile: EndpointProfile::HttpsSpiffe {
                endpoint_spiffe_id: self.server_id(),
            },
        }
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }
}

/// A bundle endpoint running in the test.
pub struct Endpoint {
    pub addr: SocketAddr,
    trigger: ShutdownTrigger,
    task: JoinHandle<Result<(), endpoint::EndpointError>>,
}

impl Endpoint {
    /// `https_spiffe`: the domain's own SVID.
    pub async fn spiffe(d: &Domain, clock: Arc<ManualClock>) -> Endpoint {
        let (trigger, shutdown) = ShutdownSignal::new();
        let (live, _renewal) = cert::spiffe(
            d.server.authority.clone(),
            &d.td,
            d.server.clock.clone(),
            shutdown.clone().wait(),
        )
        .await
        .unwrap();
        Self::serve(d, live, clock, trigger, shutdown).await
    }

    /// `https_web`: the pair in `files`.
    pub async fn web(d: &Domain, clock: Arc<ManualClock>, files: &WebFiles) -> Endpoint {
        let (trigger, shutdown) = ShutdownSignal::new();
        let (live, _reload) = cert::web(
            files.cert.clone(),
            files.key.clone(),
            shutdown.clone().wait(),
        )
        .unwrap();
        Self::serve(d, live, clock, trigger, shutdown).await
    }

    /// `https_web` with `limits`.
    pub async fn web_with(
        d: &Domain,
        clock: Arc<ManualClock>,
        files: &WebFiles,
        limits: EndpointLimits,
    ) -> Endpoint {
        let (trigger, shutdown) = ShutdownSignal::new();
        let (live, _reload) = cert::web(
            files.cert.clone(),
            files.key.clone(),
            shutdown.clone().wait(),
        )
        .unwrap();
        Self::serve_with(d, live, clock, trigger, shutdown, limits).await
    }

    async fn serve(
        d: &Domain,
        live: Arc<cert::LiveCert>,
        clock: Arc<ManualClock>,
        trigger: ShutdownTrigger,
        shutdown: ShutdownSignal,
    ) -> Endpoint {
        Self::serve_with(d, live, clock, trigger, shutdown, EndpointLimits::default()).await
    }

    async fn serve_with(
        d: &Domain,
        live: Arc<cert::LiveCert>,
        clock: Arc<ManualClock>,
        trigger: ShutdownTrigger,
        shutdown: ShutdownSignal,
        limits: EndpointLimits,
    ) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = endpoint::server_config(live, clock).unwrap();
        let published = Published {
            bundle: d.server.authority.subscribe_bundle(),
            refresh_hint: HINT,
        };
        let task = tokio::spawn(endpoint::serve(
            listener,
            tls,
            published,
            limits,
            shutdown.wait(),
        ));
        Endpoint {
            addr,
            trigger,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}/", self.addr)
    }

    pub async fn stop(self) {
        self.trigger.fire();
        let ended = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        assert!(
            matches!(ended, Ok(Ok(Ok(())))),
            "endpoint did not stop cleanly: {ended:?}"
        );
    }
}

/// A test Web PKI: a CA and a leaf for 127.0.0.1 and `localhost`, written to files.
pub struct WebFiles {
    _dir: tempfile::TempDir,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub roots: RootCertStore,
    /// The CA certificate, PEM (for `SSL_CERT_FILE`).
    pub ca_pem: String,
    pub leaf: CertificateDer<'static>,
    pub leaf_key: PrivateKeyDer<'static>,
}

impl WebFiles {
    /// A leaf for `names` (DNS names, or IP addresses) under a fresh CA.
    pub fn new(names: &[&str]) -> WebFiles {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        for n in names {
            params.subject_alt_names.push(match n.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().unwrap()),
            });
        }
        let key = KeyPair::generate().unwrap();
        let leaf = params.signed_by(&key, &ca).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        WebFiles {
            _dir: dir,
            cert,
            key: key_path,
            roots,
            ca_pem: ca.pem(),
            leaf: leaf.der().clone(),
            leaf_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }
}

/// A fetcher at the shared clock, trusting `roots` for https_web.
pub fn fetcher(clock: Arc<ManualClock>, roots: RootCertStore, limits: FetchLimits) -> Fetcher {
    Fetcher::with_web_roots(limits, clock, roots)
}

/// A tiny HTTPS server (the `files` leaf) answering every connection with `response` bytes
/// as they are, then closing; runs until dropped.
pub struct Canned {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Canned {
    pub async fn start(files: &WebFiles, response: Vec<u8>) -> Canned {
        let config = rustls::ServerConfig::builder_with_provider(tessera_edge::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![files.leaf.clone()], files.leaf_key.clone_key())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let response = Arc::new(response);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, response) = (acceptor.clone(), response.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = [0u8; 4096];
                    let _ = tls.read(&mut head).await;
                    let _ = tls.write_all(&response).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Canned { addr, task }
    }

    /// A 200 with `body`, with or without a `content-length`.
    pub fn ok(body: &[u8], declare_length: bool) -> Vec<u8> {
        let mut r =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n".to_vec();
        if declare_length {
            r.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        }
        r.extend_from_slice(b"\r\n");
        r.extend_from_slice(body);
        r
    }

    pub fn url(&self) -> String {
        format!("https://{}/", self.addr)
    }
}

impl Drop for Canned {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A raw `GET path` over TLS trusting `roots` for `name`: status line and body.
pub async fn raw_get(
    addr: SocketAddr,
    roots: RootCertStore,
    path: &str,
    method: &str,
) -> (u16, String, String) {
    let config = rustls::ClientConfig::builder_with_provider(tessera_edge::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(
        format!("{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}
