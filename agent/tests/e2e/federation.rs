//! Two trust domains federating, real processes: `example.org` publishes its bundle with the
//! `https_web` profile (a certificate from a test Web PKI, trusted by the partner through
//! `SSL_CERT_FILE`), `partner.example` with `https_spiffe` (its server SVID, checked against
//! the bundle `example.org` was bootstrapped with). Each server fetches the other's bundle; a
//! workload of `example.org` whose entry federates with `partner.example` gets the partner's
//! bundle from the Workload API (the crates.io `spiffe` client); a relationship pointed at the
//! wrong endpoint SPIFFE ID fails its refresh by name and keeps the last good bundle.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use tessera_identity::{Bundle, TrustDomain};

use super::processes::{my_uid, wait_until, AgentProc, ServerProc};
use super::{client_at, within};

/// A test Web PKI: a root (`ca.pem`) and a certificate for `localhost` / 127.0.0.1
/// (`web.pem`, `web.key`) signed by it.
fn web_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Tessera test Web PKI");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let paths = (dir.join("ca.pem"), dir.join("web.pem"), dir.join("web.key"));
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_owned()
}

/// The X.509 authorities of a PEM bundle, DER, sorted.
fn authorities(td: &str, pem: &str) -> Vec<Vec<u8>> {
    let b = Bundle::from_x509_pem(TrustDomain::new(td).unwrap(), pem).unwrap();
    let mut v: Vec<Vec<u8>> = b
        .x509_authorities()
        .iter()
        .map(|a| a.der().to_vec())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_trust_domains_federate_with_both_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, web_cert, web_key) = web_pki(dir.path());

    // example.org: bundle endpoint with https_web.
    let platform_dir = dir.path().join("platform");
    std::fs::create_dir_all(&platform_dir).unwrap();
    let platform_conf = write(
        &platform_dir.join("server.toml"),
        &format!(
            "[federation.bundle_endpoint]\naddress = \"127.0.0.1\"\nport = 0\n\
             refresh_hint = \"1s\"\nprofile = \"https_web\"\n\
             [federation.bundle_endpoint.https_web]\ncert_file_path = {web_cert:?}\n\
             key_file_path = {web_key:?}\n\
             [limits.federation]\nmin_refresh = \"1s\"\n"
        ),
    );
    let platform = ServerProc::start_in("example.org", &platform_dir, Some(&platform_conf), &[]);
    let platform_endpoint = platform.bundle_endpoint_port();

    // partner.example: bundle endpoint with https_spiffe; trusts the test Web PKI.
    let partner_dir = dir.path().join("partner");
    std::fs::create_dir_all(&partner_dir).unwrap();
    let partner_conf = write(
        &partner_dir.join("server.toml"),
        "[federation.bundle_endpoint]\naddress = \"127.0.0.1\"\nport = 0\n\
         refresh_hint = \"1s\"\nprofile = \"https_spiffe\"\n\
         [limits.federation]\nmin_refresh = \"1s\"\n",
    );
    let partner = ServerProc::start_in(
        "partner.example",
        &partner_dir,
        Some(&partner_conf),
        &[("SSL_CERT_FILE", &ca)],
    );
    let partner_endpoint = partner.bundle_endpoint_port();

    // The partner follows example.org over https_web (Web PKI, host name checked).
    partner.ok(&[
        "federation",
        "create",
        "--trustDomain",
        "example.org",
        "--bundleEndpointURL",
        &format!("https://localhost:{platform_endpoint}"),
        "--bundleEndpointProfile",
        "https_web",
    ]);
    let platform_pem = platform.ok(&["bundle", "show", "--format", "pem"]);
    wait_until("the partner's copy of example.org's bundle", || {
        let out = partner.cli(&["bundle", "list", "--id", "spiffe://example.org"]);
        out.status.success()
            && authorities("example.org", &String::from_utf8_lossy(&out.stdout))
                == authorities("example.org", &platform_pem)
    });

    // example.org follows the partner over https_spiffe, bootstrapped with its bundle.
    let partner_jwks = write(
        &dir.path().join("partner.jwks"),
        &partner.ok(&["bundle", "show", "--format", "spiffe"]),
    );
    let partner_pem = partner.ok(&["bundle", "show", "--format", "pem"]);
    let endpoint_url = format!("https://127.0.0.1:{partner_endpoint}");
    platform.ok(&[
        "federation",
        "create",
        "--trustDomain",
        "partner.example",
        "--bundleEndpointURL",
        &endpoint_url,
        "--bundleEndpointProfile",
        "https_spiffe",
        "--endpointSpiffeID",
        "spiffe://partner.example/spire/server",
        "--trustDomainBundlePath",
        partner_jwks.to_str().unwrap(),
        "--trustDomainBundleFormat",
        "spiffe",
    ]);
    platform.ok(&["federation", "refresh", "--id", "partner.example"]);
    let show = platform.ok(&["federation", "show", "--trustDomain", "partner.example"]);
    assert!(show.contains("https_spiffe"), "{show}");

    // A workload of example.org whose entry federates with the partner gets its bundle.
    let token = platform.token();
    let agent_id = format!("spiffe://example.org/spire/agent/join_token/{token}");
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let agent = AgentProc::start(
        &agent_dir,
        platform.port,
        &platform.bundle_file(),
        Some(&token),
    );
    platform.ok(&[
        "entry",
        "create",
        "--spiffeID",
        "spiffe://example.org/inside",
        "--parentID",
        &agent_id,
        "--selector",
        &format!("unix:uid:{}", my_uid()),
        "--federatesWith",
        "spiffe://partner.example",
    ]);
    let c = client_at(&agent).await;
    let partner_td = spiffe::TrustDomain::new("partner.example").unwrap();
    let want = authorities("partner.example", &partner_pem);
    within("the partner's bundle in FetchX509Bundles", async {
        loop {
            if let Ok(set) = c.fetch_x509_bundles().await {
                if let Some(b) = set.get(&partner_td) {
                    let mut got: Vec<Vec<u8>> = b
                        .authorities()
                        .iter()
                        .map(|a| a.as_bytes().to_vec())
                        .collect();
                    got.sort();
                    if got == want {
                        return;
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    let jwt = within("FetchJWTBundles", c.fetch_jwt_bundles())
        .await
        .unwrap();
    assert!(
        jwt.get(&partner_td).is_some(),
        "federated JWT bundle served"
    );

    // The wrong endpoint ID: the refresh fails naming both IDs; the last good bundle stays.
    platform.ok(&[
        "federation",
        "update",
        "--trustDomain",
        "partner.example",
        "--bundleEndpointURL",
        &endpoint_url,
        "--bundleEndpointProfile",
        "https_spiffe",
        "--endpointSpiffeID",
        "spiffe://partner.example/not-the-server",
    ]);
    let refused = platform.cli(&["federation", "refresh", "--id", "partner.example"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("spiffe://partner.example/not-the-server"),
        "{err}"
    );
    let show = platform.ok(&["federation", "show", "--trustDomain", "partner.example"]);
    assert!(show.contains("not-the-server"), "{show}");
    let kept = platform.ok(&["bundle", "list", "--id", "spiffe://partner.example"]);
    assert_eq!(authorities("partner.example", &kept), want);
}
