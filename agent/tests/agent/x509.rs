//! The standard's rules and the content of X.509 messages.

use tessera_actors::agent::view::Identity;
use tessera_identity::Bundle;
use tessera_proto::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest, X509svidRequest,
};
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn a_call_without_the_security_header_is_invalid_argument() {
    let world = World::new();
    let agent = TestAgent::start(world.source.clone()).await;
    let mut c = agent.bare_client().await;
    let codes = [
        c.fetch_x509svid(X509svidRequest {})
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        c.fetch_x509_bundles(X509BundlesRequest {})
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        c.fetch_jwt_bundles(JwtBundlesRequest {})
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        c.fetch_jwtsvid(JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        })
        .await
        .map(|_| ())
        .unwrap_err()
        .code(),
        c.validate_jwtsvid(ValidateJwtsvidRequest {
            audience: "a".into(),
            svid: "x.y.z".into(),
        })
        .await
        .map(|_| ())
        .unwrap_err()
        .code(),
    ];
    assert_eq!(codes, [Code::InvalidArgument; 5]);
    // A header with another value is no header.
    let mut req = tonic::Request::new(X509svidRequest {});
    req.metadata_mut()
        .insert("workload.spiffe.io", "false".parse().unwrap());
    let status = c.fetch_x509svid(req).await.map(|_| ()).unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("security header"), "{status:?}");
    // With the header, the same caller is served.
    assert!(agent
        .client()
        .await
        .fetch_x509svid(X509svidRequest {})
        .await
        .is_ok());
    assert_eq!(agent.metrics.calls("FetchX509SVID", "InvalidArgument"), 2);
}

#[tokio::test]
async fn a_caller_without_identity_is_permission_denied() {
    let world = World::new();
    // The only entry needs a uid this process does not have.
    world
        .source
        .update(|s| s.identities[0].entry = entry("entry-1", WORKLOAD, &[&other_selector()]));
    let agent = TestAgent::start(world.source.clone()).await;
    let mut c = agent.client().await;
    let codes = [
        c.fetch_x509svid(X509svidRequest {})
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        c.fetch_x509_bundles(X509BundlesRequest {})
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        c.fetch_jwt_bundles(JwtBundlesRequest {})
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        c.fetch_jwtsvid(JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        })
        .await
        .map(|_| ())
        .unwrap_err()
        .code(),
    ];
    assert_eq!(codes, [Code::PermissionDenied; 4]);
    // An entry needing one selector more than the caller has does not match either.
    world.source.update(|s| {
        s.identities[0].entry = entry("entry-1", WORKLOAD, &[&my_selector(), "unix:gid:4242424"])
    });
    let err = c
        .fetch_x509svid(X509svidRequest {})
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(agent.metrics.open_streams("FetchX509SVID"), 0);
}

#[tokio::test]
async fn the_first_message_is_immediate_and_carries_svid_key_bundle_hint_and_federation() {
    let world = World::new();
    let partner = TestCa::new("partner.org");
    world.source.update(|s| {
        s.identities[0].entry.hint = "internal".into();
        s.identities[0].entry.federates_with = vec![td("partner.org")];
        s.federated.insert(td("partner.org"), partner.bundle());
        // A federated bundle nobody asked for is not sent.
        s.federated
            .insert(td("stranger.org"), TestCa::new("stranger.org").bundle());
    });
    let held = world.source.current().identities[0].svid.clone().unwrap();
    let agent = TestAgent::start(world.source.clone()).await;
    let mut stream = agent
        .client()
        .await
        .fetch_x509svid(X509svidRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = within("the first message", stream.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.svids.len(), 1);
    let svid = &first.svids[0];
    assert_eq!(svid.spiffe_id, WORKLOAD);
    assert_eq!(svid.x509_svid, held.cert_chain.concat());
    assert_eq!(svid.x509_svid_key, held.key_pkcs8.to_vec());
    assert_eq!(svid.bundle, world.ca.der);
    assert_eq!(svid.hint, "internal");
    assert_eq!(first.federated_bundles.len(), 1);
    assert_eq!(first.federated_bundles["spiffe://partner.org"], partner.der);
    assert!(first.crl.is_empty());
    assert_eq!(agent.metrics.open_streams("FetchX509SVID"), 1);

    let mut bundles = agent
        .client()
        .await
        .fetch_x509_bundles(X509BundlesRequest {})
        .await
        .unwrap()
        .into_inner();
    let b = within("the first bundles message", bundles.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.bundles.len(), 2);
    assert_eq!(b.bundles["spiffe://example.org"], world.ca.der);
    assert_eq!(b.bundles["spiffe://partner.org"], partner.der);

    let mut jwt_bundles = agent
        .client()
        .await
        .fetch_jwt_bundles(JwtBundlesRequest {})
        .await
        .unwrap()
        .into_inner();
    let j = within("the first JWT bundles message", jwt_bundles.message())
        .await
        .unwrap()
        .unwrap();
    let own = Bundle::from_jwks(td("example.org"), &j.bundles["spiffe://example.org"]).unwrap();
    assert_eq!(own.jwt_authorities().len(), 1);
    assert_eq!(own.jwt_authorities()[0].key_id, "jwt-key-1");
    assert!(
        own.x509_authorities().is_empty(),
        "JWT bundles carry JWT authorities only"
    );
    assert!(j.bundles.contains_key("spiffe://partner.org"));
}

#[tokio::test]
async fn several_identities_are_served_in_one_message_and_chains_are_concatenated() {
    let world = World::new();
    world.add("entry-2", "spiffe://example.org/second", &[&my_selector()]);
    world.add(
        "entry-3",
        "spiffe://example.org/not-mine",
        &[&other_selector()],
    );
    // An identity whose SVID is not signed yet, or has expired, is not served.
    world.source.update(|s| {
        s.identities.push(Identity {
            entry: entry(
                "entry-4",
                "spiffe://example.org/unsigned",
                &[&my_selector()],
            ),
            svid: None,
        });
        let mut expired = world.ca.issue("spiffe://example.org/expired");
        expired.not_after = now() - 1;
        s.identities.push(Identity {
            entry: entry("entry-5", "spiffe://example.org/expired", &[&my_selector()]),
            svid: Some(expired),
        });
    });
    let agent = TestAgent::start(world.source.clone()).await;
    let mut stream = agent
        .client()
        .await
        .fetch_x509svid(X509svidRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = within("the first message", stream.message())
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<&str> = first.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(ids, [WORKLOAD, "spiffe://example.org/second"]);
}
