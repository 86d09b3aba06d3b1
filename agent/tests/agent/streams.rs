//! Streams: a full view again on every change, and nothing for changes that do not concern
//! the caller; cancellation, loss of every identity, limits and shutdown.

use tessera_agent::workload_api::Limits;
use tessera_identity::X509Authority;
use tessera_proto::workload::{
    JwtBundlesRequest, X509BundlesRequest, X509svidRequest, X509svidResponse,
};
use tonic::Code;

use crate::support::*;

async fn next(stream: &mut tonic::Streaming<X509svidResponse>, what: &str) -> X509svidResponse {
    within(what, stream.message())
        .await
        .unwrap_or_else(|s| panic!("{what}: {s:?}"))
        .unwrap_or_else(|| panic!("{what}: stream ended"))
}

fn ids(r: &X509svidResponse) -> Vec<&str> {
    r.svids.iter().map(|s| s.spiffe_id.as_str()).collect()
}

#[tokio::test]
async fn every_change_sends_the_full_view_again() {
    let world = World::new();
    let agent = TestAgent::start(world.source.clone()).await;
    let mut stream = agent
        .client()
        .await
        .fetch_x509svid(X509svidRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream, "the first message").await;
    assert_eq!(ids(&first), [WORKLOAD]);

    // A change for another workload sends nothing; the next message is the one for the
    // change that concerns this caller.
    world.add(
        "entry-other",
        "spiffe://example.org/other",
        &[&other_selector()],
    );
    world.add("entry-2", "spiffe://example.org/second", &[&my_selector()]);
    let added = next(&mut stream, "the message for the new entry").await;
    assert_eq!(ids(&added), [WORKLOAD, "spiffe://example.org/second"]);

    // Rotation: a new SVID and key for the same entry.
    let rotated_svid = world.ca.issue(WORKLOAD);
    let rotated_chain = rotated_svid.cert_chain.concat();
    world
        .source
        .update(|s| s.identities[0].svid = Some(rotated_svid));
    let rotated = next(&mut stream, "the message for the rotation").await;
    assert_eq!(ids(&rotated), [WORKLOAD, "spiffe://example.org/second"]);
    assert_eq!(rotated.svids[0].x509_svid, rotated_chain);
    assert_ne!(rotated.svids[0].x509_svid, added.svids[0].x509_svid);
    assert_ne!(rotated.svids[0].x509_svid_key, added.svids[0].x509_svid_key);

    // Bundle change (a CA rotation publishes the next CA): every SVID carries the new bundle.
    let next_ca = TestCa::new("example.org");
    world.source.update(|s| {
        s.bundle
            .as_mut()
            .unwrap()
            .add_x509_authority(X509Authority::from_der(next_ca.der.clone()).unwrap());
    });
    let rebundled = next(&mut stream, "the message for the bundle change").await;
    let both = concat(&[&world.ca.der, &next_ca.der]);
    assert!(rebundled.svids.iter().all(|s| s.bundle == both));

    // Deleted entry: dropped from the view.
    world
        .source
        .update(|s| s.identities.retain(|i| i.entry.id.as_str() != "entry-2"));
    let deleted = next(&mut stream, "the message for the deletion").await;
    assert_eq!(ids(&deleted), [WORKLOAD]);

    // Last identity gone: PermissionDenied, then the stream ends.
    world.source.update(|s| s.identities.clear());
    let status = within("the refusal", stream.message()).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(within("the end of the stream", stream.message())
        .await
        .unwrap_or(None)
        .is_none());
    eventually("the stream task to end", || {
        agent.metrics.open_streams("FetchX509SVID") == 0
    })
    .await;
}

#[tokio::test]
async fn bundle_streams_follow_bundle_changes_only() {
    let world = World::new();
    let agent = TestAgent::start(world.source.clone()).await;
    let mut x509 = agent
        .client()
        .await
        .fetch_x509_bundles(X509BundlesRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut jwt = agent
        .client()
        .await
        .fetch_jwt_bundles(JwtBundlesRequest {})
        .await
        .unwrap()
        .into_inner();
    let x0 = within("x509 bundles", x509.message())
        .await
        .unwrap()
        .unwrap();
    let j0 = within("jwt bundles", jwt.message()).await.unwrap().unwrap();

    // A rotation of an SVID changes no bundle: nothing is sent. Then a new JWT key is.
    world
        .source
        .update(|s| s.identities[0].svid = Some(world.ca.issue(WORKLOAD)));
    let key2 = JwtKey::es256("jwt-key-2");
    world.source.update(|s| {
        s.bundle
            .as_mut()
            .unwrap()
            .add_jwt_authority(key2.authority())
            .unwrap()
    });
    let j1 = within("jwt bundles after the new key", jwt.message())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(j0, j1);
    let jwks = String::from_utf8(j1.bundles["spiffe://example.org"].clone()).unwrap();
    assert!(jwks.contains("jwt-key-2"), "{jwks}");

    // The X.509 bundles did not change with the JWT key; a new CA changes them.
    let next_ca = TestCa::new("example.org");
    world.source.update(|s| {
        s.bundle
            .as_mut()
            .unwrap()
            .add_x509_authority(X509Authority::from_der(next_ca.der.clone()).unwrap());
    });
    let x1 = within("x509 bundles after the new CA", x509.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(x0.bundles["spiffe://example.org"], world.ca.der);
    assert_eq!(
        x1.bundles["spiffe://example.org"],
        concat(&[&world.ca.der, &next_ca.der])
    );
}

#[tokio::test]
async fn a_client_that_cancels_after_the_first_message_ends_its_stream_task() {
    let world = World::new();
    let agent = TestAgent::start(world.source.clone()).await;
    for round in 0..5 {
        let mut client = agent.client().await;
        let mut stream = client
            .fetch_x509svid(X509svidRequest {})
            .await
            .unwrap()
            .into_inner();
        let _ = next(&mut stream, "the first message").await;
        assert_eq!(
            agent.metrics.open_streams("FetchX509SVID"),
            1,
            "round {round}"
        );
        // As py-spiffe does: read one message, cancel.
        drop(stream);
        drop(client);
        eventually("the stream task to end", || {
            agent.metrics.open_streams("FetchX509SVID") == 0
        })
        .await;
    }
    // A change after the cancellations reaches nobody and disturbs nothing.
    world.add("entry-2", "spiffe://example.org/second", &[&my_selector()]);
    let mut stream = agent
        .client()
        .await
        .fetch_x509svid(X509svidRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut stream, "a fresh stream").await.svids.len(), 2);
    assert_eq!(agent.metrics.calls("FetchX509SVID", "OK"), 6);
}

#[tokio::test]
async fn streams_per_uid_are_bounded_and_freed_on_close() {
    let world = World::new();
    let limits = Limits {
        max_streams_per_uid: 2,
        ..Limits::default()
    };
    let agent = TestAgent::start_with(world.source.clone(), limits).await;
    let mut c = agent.client().await;
    let mut a = c
        .fetch_x509svid(X509svidRequest {})
        .await
        .unwrap()
        .into_inner();
    let _b = c
        .fetch_jwt_bundles(JwtBundlesRequest {})
        .await
        .unwrap()
        .into_inner();
    let refused = c
        .fetch_x509_bundles(X509BundlesRequest {})
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("limits.max_streams_per_uid"),
        "{refused:?}"
    );
    let _ = next(&mut a, "the first message").await;
    drop(a);
    eventually("the slot to be freed", || {
        agent.metrics.open_streams("FetchX509SVID") == 0
    })
    .await;
    assert!(c.fetch_x509_bundles(X509BundlesRequest {}).await.is_ok());

    let total = Limits {
        max_streams: 1,
        ..Limits::default()
    };
    let agent = TestAgent::start_with(world.source.clone(), total).await;
    let mut c = agent.client().await;
    let _a = c.fetch_x509svid(X509svidRequest {}).await.unwrap();
    let refused = c
        .fetch_x509svid(X509svidRequest {})
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("limits.max_streams)"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_removes_the_socket() {
    let world = World::new();
    let mut agent = TestAgent::start(world.source.clone()).await;
    let mut stream = agent
        .client()
        .await
        .fetch_x509svid(X509svidRequest {})
        .await
        .unwrap()
        .into_inner();
    let _ = next(&mut stream, "the first message").await;
    agent.stop().await.unwrap();
    // The stream ends (cleanly or with a transport error), it does not hang.
    let _ = within("the stream to end", stream.message()).await;
    assert!(!agent.socket.exists());
    assert_eq!(agent.metrics.open_streams("FetchX509SVID"), 0);
}

#[tokio::test]
async fn many_concurrent_streams_all_see_one_change() {
    let world = World::new();
    let agent = TestAgent::start(world.source.clone()).await;
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut s = agent
            .client()
            .await
            .fetch_x509svid(X509svidRequest {})
            .await
            .unwrap()
            .into_inner();
        let _ = next(&mut s, "a first message").await;
        streams.push(s);
    }
    world.add("entry-2", "spiffe://example.org/second", &[&my_selector()]);
    for s in &mut streams {
        assert_eq!(next(s, "the update").await.svids.len(), 2);
    }
}
