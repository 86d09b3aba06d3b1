//! The bundle endpoint serves the own bundle (sequence and hint included) on both profiles,
//! and nothing else.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::RootCertStore;
use tessera_actors::server::federation::{EndpointProfile, Relationship};
use tessera_identity::Bundle;
use tessera_server::federation::fetch::FetchLimits;

use crate::support::{clock, fetcher, raw_get, Domain, Endpoint, WebFiles, HINT};

/// The fetched document is the authority's bundle, with its sequence and the configured hint.
fn assert_served(fetched: &Bundle, own: &Bundle) {
    assert_eq!(fetched.trust_domain(), own.trust_domain());
    assert_eq!(fetched.x509_authorities(), own.x509_authorities());
    // JWKS carries no expiry of JWT keys (SPIFFE bundle format): compare ids and keys.
    let jwt = |b: &Bundle| {
        b.jwt_authorities()
            .iter()
            .map(|k| (k.key_id.clone(), k.public_key.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(jwt(fetched), jwt(own));
    assert!(!own.x509_authorities().is_empty() && !own.jwt_authorities().is_empty());
    assert!(own.sequence_number() > 0);
    assert_eq!(fetched.sequence_number(), own.sequence_number());
    assert_eq!(fetched.refresh_hint(), Some(HINT.as_secs()));
}

#[tokio::test]
async fn https_spiffe_endpoint_serves_the_bundle_under_the_server_svid() {
    let clock = clock();
    let a = Domain::start("a.test", clock.clone()).await;
    let ep = Endpoint::spiffe(&a, clock.clone()).await;
    let held = BTreeMap::from([(a.td.clone(), Arc::new(a.bundle()))]);
    let f = fetcher(clock, RootCertStore::empty(), FetchLimits::default());
    let fetched = f
        .fetch(&a.spiffe_relationship(&ep.url()), &held)
        .await
        .unwrap();
    assert_served(&fetched, &a.bundle());
    ep.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn https_web_endpoint_serves_the_bundle_and_nothing_else() {
    let clock = clock();
    let a = Domain::start("a.test", clock.clone()).await;
    let files = WebFiles::new(&["127.0.0.1", "localhost"]);
    let ep = Endpoint::web(&a, clock.clone(), &files).await;
    let relationship = Relationship {
        trust_domain: a.td.clone(),
        bundle_endpoint_url: ep.url(),
        profile: EndpointProfile::HttpsWeb,
    };
    let f = fetcher(clock, files.roots.clone(), FetchLimits::default());
    let fetched = f.fetch(&relationship, &BTreeMap::new()).await.unwrap();
    assert_served(&fetched, &a.bundle());

    let (status, head, body) = raw_get(ep.addr, files.roots.clone(), "/", "GET").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["spiffe_refresh_hint"], HINT.as_secs());
    assert_eq!(doc["spiffe_sequence"], a.bundle().sequence_number());
    let (status, _, _) = raw_get(ep.addr, files.roots.clone(), "/bundle", "GET").await;
    assert_eq!(status, 404);
    let (status, head, _) = raw_get(ep.addr, files.roots.clone(), "/", "POST").await;
    assert_eq!(status, 405);
    assert!(head.contains("allow: get"), "{head}");
    ep.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn idle_and_excess_connections_are_closed() {
    use tokio::io::AsyncReadExt;

    let clock = clock();
    let a = Domain::start("a.test", clock.clone()).await;
    let files = WebFiles::new(&["127.0.0.1"]);
    let limits = tessera_server::federation::endpoint::EndpointLimits {
        max_connections: 1,
        handshake_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let ep = Endpoint::web_with(&a, clock, &files, limits).await;
    // A client that never says hello holds the only slot, until the handshake timeout.
    let mut idle = tokio::net::TcpStream::connect(ep.addr).await.unwrap();
    // Over the limit (connections are accepted in order): closed at accept, without a byte.
    let mut excess = tokio::net::TcpStream::connect(ep.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), excess.read(&mut buf))
        .await
        .expect("the excess connection is closed at once");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    // The idle one is cut after the handshake timeout; then the slot serves again.
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("the idle connection is cut");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let (status, _, _) = raw_get(ep.addr, files.roots.clone(), "/", "GET").await;
    assert_eq!(status, 200);
    ep.stop().await;
    a.stop().await;
}
