use rcgen::string::Ia5String;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use tessera_identity::X509Authority;

use super::*;

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
}

fn uri(u: &str) -> SanType {
    SanType::URI(Ia5String::try_from(u).unwrap())
}

/// 2027-01-15: inside the default rcgen validity (1975..4096) and before `expired`'s end.
const NOW: u64 = 1_800_000_000;

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.subject_alt_names = vec![uri("spiffe://example.org")];
        let key = KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Self { params, key, der }
    }

    fn issue_until(&self, spiffe_id: &str, not_after: Option<u64>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.subject_alt_names = vec![uri(spiffe_id)];
        if let Some(secs) = not_after {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = (std::time::UNIX_EPOCH + Duration::from_secs(secs)).into();
        }
        let key = KeyPair::generate().unwrap();
        params
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .unwrap()
            .der()
            .to_vec()
    }

    fn issue(&self, spiffe_id: &str) -> Vec<u8> {
        self.issue_until(spiffe_id, None)
    }
}

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn bundle(cas: &[&Ca]) -> Bundle {
    let mut bundle = Bundle::new(td());
    for ca in cas {
        bundle.add_x509_authority(X509Authority::from_der(ca.der.clone()).unwrap());
    }
    bundle
}

fn server_verifier(cas: &[&Ca]) -> SpiffeServerVerifier {
    SpiffeServerVerifier::new(
        ServerTrust::bundle(bundle(cas)),
        ExpectedId::Exact(SpiffeId::new("spiffe://example.org/spire/server").unwrap()),
        provider(),
    )
}

fn check_server(
    v: &SpiffeServerVerifier,
    leaf: Vec<u8>,
    name: &str,
) -> Result<ServerCertVerified, rustls::Error> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    v.verify_server_cert(
        &CertificateDer::from(leaf),
        &[],
        &name,
        &[],
        UnixTime::since_unix_epoch(Duration::from_secs(NOW)),
    )
}

#[test]
fn servers_verify_by_spiffe_id_against_the_live_bundle() {
    let (a, b, stranger) = (Ca::new(), Ca::new(), Ca::new());
    let v = server_verifier(&[&a, &b]);
    for (ca, name) in [(&a, "10.0.0.1"), (&b, "server-b.example.org"), (&b, "::1")] {
        check_server(&v, ca.issue("spiffe://example.org/spire/server"), name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let err = check_server(&v, a.issue("spiffe://example.org/web"), "10.0.0.1").unwrap_err();
    assert!(
        err.to_string()
            .contains("expected spiffe://example.org/spire/server"),
        "{err}"
    );
    let err = check_server(
        &v,
        stranger.issue("spiffe://example.org/spire/server"),
        "10.0.0.1",
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not verify"), "{err}");
    // Until the bundle holds B's CA, B is refused; once set, accepted.
    let only_a = server_verifier(&[&a]);
    let leaf_b = b.issue("spiffe://example.org/spire/server");
    assert!(check_server(&only_a, leaf_b.clone(), "10.0.0.2").is_err());
    only_a.trust.set_bundle(bundle(&[&a, &b]));
    check_server(&only_a, leaf_b, "10.0.0.2").unwrap();
    // The bootstrap trust accepts anything, and ignores bundle updates.
    let insecure = SpiffeServerVerifier::new(
        Arc::new(ServerTrust::InsecureBootstrap),
        ExpectedId::Exact(SpiffeId::new("spiffe://example.org/spire/server").unwrap()),
        provider(),
    );
    insecure.trust.set_bundle(bundle(&[&a]));
    check_server(&insecure, stranger.issue("spiffe://x.org/y"), "h").unwrap();
}

#[test]
fn clients_must_be_agents_of_the_trust_domain_and_unexpired() {
    let (a, stranger) = (Ca::new(), Ca::new());
    let live = Arc::new(LiveBundle::new(bundle(&[&a])));
    let v = SpiffeClientVerifier::new(
        live,
        ExpectedId::UnderPath {
            trust_domain: td(),
            prefix: "/spire/agent/".into(),
        },
        false,
        provider(),
    );
    assert!(!v.client_auth_mandatory());
    let now = UnixTime::since_unix_epoch(Duration::from_secs(NOW));
    let check = |leaf: Vec<u8>| v.verify_client_cert(&CertificateDer::from(leaf), &[], now);
    check(a.issue("spiffe://example.org/spire/agent/join_token/t")).unwrap();
    let err = check(a.issue("spiffe://example.org/web")).unwrap_err();
    assert!(
        err.to_string()
            .contains("spiffe://example.org/spire/agent/..."),
        "{err}"
    );
    assert!(check(stranger.issue("spiffe://example.org/spire/agent/x")).is_err());
    let err =
        check(a.issue_until("spiffe://example.org/spire/agent/x", Some(NOW - 10))).unwrap_err();
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::Expired),
        "expiry is its own alert"
    );
}

#[test]
fn expected_ids_match_exactly_or_by_prefix_within_the_trust_domain() {
    let under = ExpectedId::UnderPath {
        trust_domain: td(),
        prefix: "/spire/agent/".into(),
    };
    let id = |s: &str| SpiffeId::new(s).unwrap();
    assert!(under.accepts(&id("spiffe://example.org/spire/agent/a/b")));
    assert!(!under.accepts(&id("spiffe://other.org/spire/agent/a")));
    assert!(!under.accepts(&id("spiffe://example.org/spire/agents")));
    let exact = ExpectedId::Exact(id("spiffe://example.org/spire/server"));
    assert!(exact.accepts(&id("spiffe://example.org/spire/server")));
    assert!(!exact.accepts(&id("spiffe://example.org/spire/server/x")));
}
