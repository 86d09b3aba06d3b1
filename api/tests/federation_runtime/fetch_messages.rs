//! Fetch errors a person reads name the limit or what to check, per profile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tessera_actors::server::federation::{EndpointProfile, Relationship};
use tessera_identity::TrustDomain;
use tessera_server::federation::fetch::FetchLimits;

use crate::support::{clock, fetcher, Canned, Domain, Endpoint, WebFiles};

fn web(url: String) -> Relationship {
    Relationship {
        trust_domain: TrustDomain::new("a.test").unwrap(),
        bundle_endpoint_url: url,
        profile: EndpointProfile::HttpsWeb,
    }
}

#[tokio::test]
async fn timeout_tls_and_http_errors_say_what_to_check() {
    // A listener that never completes a handshake: the connect limit runs out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let limits = FetchLimits {
        connect_timeout: Duration::from_millis(100),
        ..FetchLimits::default()
    };
    let files = WebFiles::new(&["127.0.0.1"]);
    let f = fetcher(clock(), files.roots.clone(), limits);
    let e = f
        .fetch(
            &web(format!("https://{}/", silent.local_addr().unwrap())),
            &BTreeMap::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "timeout");
    let text = e.to_string();
    assert!(
        text.contains("limits.federation.connect_timeout (100ms)"),
        "{text}"
    );
    assert!(text.contains("raise the limit"), "{text}");

    // https_web with a certificate for another name.
    let clock = clock();
    let a = Domain::start("a.test", clock.clone()).await;
    let other = WebFiles::new(&["other.example"]);
    let ep = Endpoint::web(&a, clock.clone(), &other).await;
    let f = fetcher(clock.clone(), other.roots.clone(), FetchLimits::default());
    let e = f.fetch(&web(ep.url()), &BTreeMap::new()).await.unwrap_err();
    assert_eq!(e.kind(), "tls");
    let text = e.to_string();
    assert!(text.contains("profile https_web"), "{text}");
    assert!(text.contains("name the URL's host"), "{text}");

    // https_spiffe with a held bundle of another CA: names the bundle to check.
    let spiffe = Endpoint::spiffe(&a, clock.clone()).await;
    let b = Domain::start("b.test", clock.clone()).await;
    let held = BTreeMap::from([(a.td.clone(), Arc::new(b.bundle_as(&a.td)))]);
    let e = f
        .fetch(&a.spiffe_relationship(&spiffe.url()), &held)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "tls");
    let text = e.to_string();
    assert!(text.contains("profile https_spiffe"), "{text}");
    assert!(text.contains("the bundle held for a.test"), "{text}");
    assert!(text.contains("`bundle set`"), "{text}");

    // Status and HTTP failures.
    let files = WebFiles::new(&["127.0.0.1"]);
    let f = fetcher(clock.clone(), files.roots.clone(), FetchLimits::default());
    let not_found = Canned::start(
        &files,
        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec(),
    )
    .await;
    let e = f
        .fetch(&web(not_found.url()), &BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "status");
    let text = e.to_string();
    assert!(text.contains("answered HTTP 404"), "{text}");
    assert!(text.contains("expected 200 with a SPIFFE bundle"), "{text}");
    let not_http = Canned::start(&files, b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()).await;
    let e = f
        .fetch(&web(not_http.url()), &BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "http", "{e}");
    let text = e.to_string();
    assert!(text.contains("answers an HTTP/1.1 GET with 200"), "{text}");

    drop(silent);
    spiffe.stop().await;
    ep.stop().await;
    a.stop().await;
    b.stop().await;
}
