//! Each bad endpoint or document gives its own typed error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use tessera_actors::server::federation::{EndpointProfile, Relationship};
use tessera_identity::{SpiffeId, TrustDomain};
use tessera_server::federation::fetch::{FetchError, FetchLimits};

use crate::support::{clock, fetcher, Canned, Domain, Endpoint, WebFiles};

fn web(td: &str, url: String) -> Relationship {
    Relationship {
        trust_domain: TrustDomain::new(td).unwrap(),
        bundle_endpoint_url: url,
        profile: EndpointProfile::HttpsWeb,
    }
}

#[tokio::test]
async fn https_spiffe_refuses_unreachable_unbootstrapped_and_impostor_endpoints() {
    let clock = clock();
    let a = Domain::start("a.test", clock.clone()).await;
    let ep = Endpoint::spiffe(&a, clock.clone()).await;
    let held = BTreeMap::from([(a.td.clone(), Arc::new(a.bundle()))]);
    let f = fetcher(
        clock.clone(),
        RootCertStore::empty(),
        FetchLimits::default(),
    );

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let e = f
        .fetch(&a.spiffe_relationship(&format!("https://{closed}/")), &held)
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Unreachable { .. }), "{e}");

    let e = f
        .fetch(&a.spiffe_relationship(&ep.url()), &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, FetchError::NoHeldBundle { trust_domain, .. } if *trust_domain == a.td),
        "{e}"
    );
    assert!(e.to_string().contains("`bundle set`"), "{e}");

    let mut impostor = a.spiffe_relationship(&ep.url());
    let expected = SpiffeId::new("spiffe://a.test/not/the/server").unwrap();
    impostor.profile = EndpointProfile::HttpsSpiffe {
        endpoint_spiffe_id: expected.clone(),
    };
    let e = f.fetch(&impostor, &held).await.unwrap_err();
    match &e {
        FetchError::WrongEndpointId {
            presented,
            expected: want,
            ..
        } => assert_eq!((presented, want), (&a.server_id(), &expected)),
        other => panic!("{other}"),
    }
    assert!(
        e.to_string().contains(
            "presented spiffe://a.test/spire/server, expected spiffe://a.test/not/the/server"
        ),
        "{e}"
    );

    // Held bundle of another CA under the same name: the chain does not verify.
    let b = Domain::start("b.test", clock.clone()).await;
    let mut forged = tessera_identity::Bundle::new(a.td.clone());
    for x in b.bundle().x509_authorities() {
        forged.add_x509_authority(x.clone());
    }
    let held_forged = BTreeMap::from([(a.td.clone(), Arc::new(forged))]);
    let e = f
        .fetch(&a.spiffe_relationship(&ep.url()), &held_forged)
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Tls { .. }), "{e}");
    ep.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn https_web_checks_the_host_name_and_the_roots() {
    let clock = clock();
    let a = Domain::start("a.test", clock.clone()).await;
    let files = WebFiles::new(&["other.example"]);
    let ep = Endpoint::web(&a, clock.clone(), &files).await;
    let f = fetcher(clock.clone(), files.roots.clone(), FetchLimits::default());
    let e = f
        .fetch(&web("a.test", ep.url()), &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Tls { .. }), "{e}");
    let untrusting = fetcher(
        clock,
        WebFiles::new(&["127.0.0.1"]).roots,
        FetchLimits::default(),
    );
    let good = WebFiles::new(&["127.0.0.1"]);
    let ep2 = Endpoint::web(&a, crate::support::clock(), &good).await;
    let e = untrusting
        .fetch(&web("a.test", ep2.url()), &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Tls { .. }), "{e}");
    ep.stop().await;
    ep2.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn bad_documents_are_refused_by_kind() {
    let clock = clock();
    let a = Domain::start("a.test", clock.clone()).await;
    let files = WebFiles::new(&["127.0.0.1"]);
    let limits = FetchLimits {
        bundle: tessera_identity::BundleLimits {
            max_jwks_bytes: 1024,
            ..Default::default()
        },
        ..FetchLimits::default()
    };
    let f = fetcher(clock.clone(), files.roots.clone(), limits);
    let fetch = |response: Vec<u8>, td: &'static str| {
        let (files, f) = (&files, &f);
        async move {
            let canned = Canned::start(files, response).await;
            f.fetch(&web(td, canned.url()), &BTreeMap::new()).await
        }
    };

    let e = fetch(Canned::ok(b"garbage", true), "a.test")
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::BadJwks { .. }), "{e}");
    let e = fetch(Canned::ok(br#"{"keys": []}"#, true), "a.test")
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Empty { .. }), "{e}");
    for declared in [true, false] {
        let e = fetch(Canned::ok(&[b' '; 4096], declared), "a.test")
            .await
            .unwrap_err();
        assert!(
            matches!(e, FetchError::TooLarge { limit: 1024, .. }),
            "{declared}: {e}"
        );
    }
    let e = fetch(
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".to_vec(),
        "a.test",
    )
    .await
    .unwrap_err();
    assert!(matches!(e, FetchError::Status { status: 503, .. }), "{e}");

    // a.test's real bundle, fetched as c.test's: its CA names a.test.
    let mut one_ca = tessera_identity::Bundle::new(a.td.clone());
    one_ca.add_x509_authority(a.bundle().x509_authorities()[0].clone());
    let doc = one_ca.to_jwks().unwrap();
    assert!(doc.len() < 1024);
    let e = fetch(Canned::ok(doc.as_bytes(), true), "c.test")
        .await
        .unwrap_err();
    match &e {
        FetchError::WrongTrustDomain {
            expected, found, ..
        } => {
            assert_eq!((expected.as_str(), found.as_str()), ("c.test", "a.test"))
        }
        other => panic!("{other}"),
    }
    // The same document as a.test's is accepted.
    let ok = fetch(Canned::ok(doc.as_bytes(), true), "a.test")
        .await
        .unwrap();
    assert_eq!(ok.x509_authorities(), one_ca.x509_authorities());
    a.stop().await;
}

#[tokio::test]
async fn a_silent_endpoint_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = FetchLimits {
        connect_timeout: Duration::from_millis(200),
        ..FetchLimits::default()
    };
    let f = fetcher(clock(), WebFiles::new(&["127.0.0.1"]).roots, limits);
    let e = f
        .fetch(&web("a.test", format!("https://{addr}/")), &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::Timeout {
                stage: "connect",
                ..
            }
        ),
        "{e}"
    );
    drop(listener);
}
