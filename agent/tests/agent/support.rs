//! Shared fixtures of the agent's black-box tests: a test CA issuing real X.509-SVIDs
//! (rcgen), JWT signing keys (ring), a [`TestSource`] the test drives snapshot by snapshot,
//! and a running Workload API server on a temp socket ([`TestAgent`]).

// Not every test module uses every fixture.
#![allow(dead_code)]

use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use rcgen::string::Ia5String;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _};
use tessera_actors::agent::view::{
    HeldJwtSvid, HeldX509Svid, Identity, IdentitySnapshot, JwtFetchError, WorkloadSource,
};
use tessera_agent::attestor::unix::{UnixAttestor, UnixAttestorConfig};
use tessera_agent::attestor::Attestors;
use tessera_agent::shutdown::{Shutdown, ShutdownTrigger};
use tessera_agent::workload_api::{self, Limits, Metrics, Settings};
use tessera_eventlog::{Clock, SystemClock};
use tessera_identity::{
    Bundle, EcCurve, EntryId, JwtAuthority, PublicKey, RegistrationEntry, SelectorSet, SpiffeId,
    TrustDomain, X509Authority,
};
use tessera_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint, Uri};

/// Longest wait for anything in these tests; a test that hits it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// `future`, or a panic naming `what` after [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Polls `cond` every 10 ms, at most [`WAIT`] in total.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Now, Unix seconds.
pub fn now() -> i64 {
    SystemClock.now_unix_nanos() / 1_000_000_000
}

/// The effective uid of this test process (owner of `/proc/self`).
pub fn my_uid() -> u32 {
    std::fs::metadata("/proc/self").expect("/proc/self").uid()
}

/// The output of a command, trimmed (an independent oracle: `id -un`, `sha256sum`...).
pub fn command_output(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

pub fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).expect("trust domain")
}

pub fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).expect("spiffe id")
}

// === Test CA ===

/// A self-signed P-256 CA of a trust domain, issuing X.509-SVIDs.
pub struct TestCa {
    pub trust_domain: TrustDomain,
    params: CertificateParams,
    key: KeyPair,
    /// The CA certificate.
    pub der: Vec<u8>,
}

fn set_validity(p: &mut CertificateParams, not_before: i64, not_after: i64) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let at = |t: i64| epoch + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    p.not_before = at(not_before);
    p.not_after = at(not_after);
}

fn uri(u: &str) -> SanType {
    SanType::URI(Ia5String::try_from(u).expect("uri"))
}

impl TestCa {
    /// A CA for `trust_domain`, valid from an hour ago for a day.
    pub fn new(trust_domain: &str) -> Self {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![uri(&format!("spiffe://{trust_domain}"))];
        set_validity(&mut params, now() - 3600, now() + 86_400);
        let key = KeyPair::generate().expect("key");
        let der = params
            .self_signed(&key)
            .expect("self-signed")
            .der()
            .to_vec();
        Self {
            trust_domain: td(trust_domain),
            params,
            key,
            der,
        }
    }

    /// An X.509-SVID for `spiffe_id` valid until `not_after` (Unix seconds), with a fresh key.
    pub fn issue_until(&self, spiffe_id: &str, not_after: i64) -> HeldX509Svid {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.subject_alt_names = vec![uri(spiffe_id)];
        let not_before = now() - 60;
        set_validity(&mut params, not_before, not_after);
        let key = KeyPair::generate().expect("key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params
            .signed_by(&key, &issuer)
            .expect("signed")
            .der()
            .to_vec();
        HeldX509Svid {
            cert_chain: vec![cert],
            key_pkcs8: Arc::new(zeroize::Zeroizing::new(key.serialize_der())),
            not_before,
            not_after,
        }
    }

    /// An X.509-SVID for `spiffe_id` valid for an hour.
    pub fn issue(&self, spiffe_id: &str) -> HeldX509Svid {
        self.issue_until(spiffe_id, now() + 3600)
    }

    /// A bundle holding this CA (and no JWT key).
    pub fn bundle(&self) -> Bundle {
        let mut b = Bundle::new(self.trust_domain.clone());
        b.add_x509_authority(X509Authority::from_der(self.der.clone()).expect("ca der"));
        b
    }
}

// === JWT keys ===

/// An ECDSA JWT signing key (P-256: ES256, P-384: ES384) with a key id.
pub struct JwtKey {
    pub kid: String,
    alg: &'static str,
    pair: EcdsaKeyPair,
    curve: EcCurve,
}

impl JwtKey {
    pub fn es256(kid: &str) -> Self {
        Self::new(
            kid,
            "ES256",
            EcCurve::P256,
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        )
    }

    pub fn es384(kid: &str) -> Self {
        Self::new(
            kid,
            "ES384",
            EcCurve::P384,
            &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        )
    }

    fn new(
        kid: &str,
        alg: &'static str,
        curve: EcCurve,
        algorithm: &'static ring::signature::EcdsaSigningAlgorithm,
    ) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(algorithm, &rng).expect("generate");
        let pair = EcdsaKeyPair::from_pkcs8(algorithm, pkcs8.as_ref(), &rng).expect("parse");
        Self {
            kid: kid.into(),
            alg,
            pair,
            curve,
        }
    }

    /// The public key as a bundle authority.
    pub fn authority(&self) -> JwtAuthority {
        let point = self.pair.public_key().as_ref();
        let len = self.curve.coordinate_len();
        let public_key = PublicKey::ec(
            self.curve,
            point[1..=len].to_vec(),
            point[len + 1..].to_vec(),
        )
        .expect("ec key");
        JwtAuthority {
            key_id: self.kid.clone(),
            public_key,
            expires_at: None,
        }
    }

    /// A compact JWS of `claims` with header `{alg, kid, typ: JWT}`.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"alg": self.alg, "kid": self.kid, "typ": "JWT"});
        let mut token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("json"));
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("json")));
        let sig = self
            .pair
            .sign(&SystemRandom::new(), token.as_bytes())
            .expect("sign");
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
        token
    }

    /// A JWT-SVID for `sub` and `aud`, expiring at `exp`.
    pub fn svid(&self, sub: &str, aud: &[&str], exp: i64) -> String {
        self.sign(&serde_json::json!({"sub": sub, "aud": aud, "exp": exp, "iat": now()}))
    }
}

// === Registration entries and snapshots ===

/// A workload entry: `spiffe_id` for callers with all of `selectors`.
pub fn entry(entry_id: &str, spiffe_id: &str, selectors: &[&str]) -> RegistrationEntry {
    RegistrationEntry {
        id: EntryId::new(entry_id).expect("entry id"),
        spiffe_id: id(spiffe_id),
        parent_id: id("spiffe://example.org/spire/agent/test"),
        selectors: SelectorSet::parse_all(selectors.iter().copied()).expect("selectors"),
        x509_svid_ttl: None,
        jwt_svid_ttl: None,
        federates_with: Vec::new(),
        dns_names: Vec::new(),
        admin: false,
        downstream: false,
        hint: String::new(),
        expires_at: None,
        created_at: 0,
        revision: 0,
    }
}

/// The selector that matches this test process.
pub fn my_selector() -> String {
    format!("unix:uid:{}", my_uid())
}

/// A selector this process does not have.
pub fn other_selector() -> String {
    format!("unix:uid:{}", my_uid().wrapping_add(4242))
}

// === The source the tests drive ===

/// A [`WorkloadSource`] whose snapshots the test publishes; JWT-SVIDs are signed with
/// [`TestSource::jwt_key`] and last five minutes.
#[derive(Debug)]
pub struct TestSource {
    tx: watch::Sender<Arc<IdentitySnapshot>>,
    jwt_key: Arc<Mutex<JwtKeyHolder>>,
}

struct JwtKeyHolder(JwtKey);

impl std::fmt::Debug for JwtKeyHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtKey({})", self.0.kid)
    }
}

impl TestSource {
    pub fn new(snapshot: IdentitySnapshot, jwt_key: JwtKey) -> Arc<Self> {
        Arc::new(Self {
            tx: watch::channel(Arc::new(snapshot)).0,
            jwt_key: Arc::new(Mutex::new(JwtKeyHolder(jwt_key))),
        })
    }

    /// Publishes a change made by `f` (the generation increases).
    pub fn update(&self, f: impl FnOnce(&mut IdentitySnapshot)) {
        self.tx.send_modify(|s| {
            let mut next = (**s).clone();
            f(&mut next);
            next.generation += 1;
            *s = Arc::new(next);
        });
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<IdentitySnapshot> {
        self.tx.borrow().clone()
    }

    /// Signs with `f`'s key.
    pub fn sign_with<T>(&self, f: impl FnOnce(&JwtKey) -> T) -> T {
        f(&self.jwt_key.lock().expect("lock").0)
    }
}

impl WorkloadSource for TestSource {
    fn identities(&self) -> watch::Receiver<Arc<IdentitySnapshot>> {
        self.tx.subscribe()
    }

    fn fetch_jwt<'a>(
        &'a self,
        identity: &'a Identity,
        audience: &'a [String],
    ) -> BoxFuture<'a, Result<HeldJwtSvid, JwtFetchError>> {
        Box::pin(async move {
            let known = self
                .current()
                .identities
                .iter()
                .any(|i| i.entry.id == identity.entry.id);
            if !known {
                return Err(JwtFetchError::UnknownEntry(identity.entry.id.to_string()));
            }
            let exp = now() + 300;
            let aud: Vec<&str> = audience.iter().map(String::as_str).collect();
            let token =
                self.sign_with(|k| k.svid(&identity.entry.spiffe_id.to_string(), &aud, exp));
            Ok(HeldJwtSvid {
                token,
                spiffe_id: identity.entry.spiffe_id.clone(),
                expires_at: exp,
                hint: identity.entry.hint.clone(),
            })
        })
    }
}

/// The standard world of most tests: trust domain example.org with a CA and an ES256 JWT key,
/// one entry `spiffe://example.org/workload` for this process's uid.
pub struct World {
    pub ca: TestCa,
    pub source: Arc<TestSource>,
}

pub const WORKLOAD: &str = "spiffe://example.org/workload";

impl World {
    pub fn new() -> Self {
        let ca = TestCa::new("example.org");
        let key = JwtKey::es256("jwt-key-1");
        let mut bundle = ca.bundle();
        bundle
            .add_jwt_authority(key.authority())
            .expect("jwt authority");
        let snapshot = IdentitySnapshot {
            generation: 1,
            identities: vec![Identity {
                entry: entry("entry-1", WORKLOAD, &[&my_selector()]),
                svid: Some(ca.issue(WORKLOAD)),
            }],
            bundle: Some(bundle),
            federated: Default::default(),
        };
        let source = TestSource::new(snapshot, key);
        Self { ca, source }
    }

    /// Adds an identity for `spiffe_id` with `selectors` and a fresh SVID.
    pub fn add(&self, entry_id: &str, spiffe_id: &str, selectors: &[&str]) {
        let svid = self.ca.issue(spiffe_id);
        self.source.update(|s| {
            s.identities.push(Identity {
                entry: entry(entry_id, spiffe_id, selectors),
                svid: Some(svid),
            });
        });
    }
}

// === A running Workload API ===

/// The Workload API serving a [`TestSource`] on a temp socket, with the real `unix`
/// attestor.
pub struct TestAgent {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub metrics: Arc<Metrics>,
    trigger: Option<ShutdownTrigger>,
    pub server: Option<JoinHandle<Result<(), workload_api::ServeError>>>,
}

impl TestAgent {
    pub async fn start(source: Arc<TestSource>) -> Self {
        Self::start_with(source, Limits::default()).await
    }

    pub async fn start_with(source: Arc<TestSource>, limits: Limits) -> Self {
        Self::start_custom(source, limits, Arc::new(SystemClock)).await
    }

    pub async fn start_custom(
        source: Arc<TestSource>,
        limits: Limits,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("public/api.sock");
        let (listener, guard) = workload_api::socket::bind(&socket).await.expect("bind");
        let timeout = limits.attestation_timeout;
        let settings = Settings {
            limits,
            clock,
            metrics: Metrics::new().expect("metrics"),
        };
        let metrics = settings.metrics.clone();
        let attestors = Attestors::new(
            vec![Arc::new(UnixAttestor::new(UnixAttestorConfig::default()))],
            timeout,
        );
        let (trigger, shutdown) = Shutdown::new();
        let source: Arc<dyn WorkloadSource> = source;
        let server = tokio::spawn(async move {
            let _guard = guard;
            workload_api::serve(listener, source, attestors, settings, shutdown.wait()).await
        });
        Self {
            dir,
            socket,
            metrics,
            trigger: Some(trigger),
            server: Some(server),
        }
    }

    /// A raw channel to the socket.
    pub async fn channel(&self) -> Channel {
        channel(&self.socket).await
    }

    /// A client that sends the security header.
    pub async fn client(&self) -> WorkloadClient {
        SpiffeWorkloadApiClient::with_interceptor(self.channel().await, with_header as HeaderFn)
    }

    /// A client that does not.
    pub async fn bare_client(&self) -> SpiffeWorkloadApiClient<Channel> {
        SpiffeWorkloadApiClient::new(self.channel().await)
    }

    /// `unix:///...` of the socket, for clients taking a SPIFFE endpoint address.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Fires the shutdown and waits for the server to return.
    pub async fn stop(&mut self) -> Result<(), workload_api::ServeError> {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
        match self.server.take() {
            Some(h) => within("the Workload API to stop", h)
                .await
                .expect("server task"),
            None => Ok(()),
        }
    }
}

pub type HeaderFn = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;
pub type WorkloadClient =
    SpiffeWorkloadApiClient<tonic::service::interceptor::InterceptedService<Channel, HeaderFn>>;

pub fn with_header(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    req.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    Ok(req)
}

/// A channel over the Unix socket at `path`.
pub async fn channel(path: &Path) -> Channel {
    let path = path.to_owned();
    let endpoint = Endpoint::from_static("http://agent.test");
    let connect = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move {
            Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
        }
    }));
    within("connecting to the Workload API", connect)
        .await
        .expect("connect")
}

/// Concatenated DER, as the standard encodes chains and bundles.
pub fn concat(ders: &[&[u8]]) -> Vec<u8> {
    ders.concat()
}
