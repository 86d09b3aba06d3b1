//! An independent client, the crates.io `spiffe` crate, against the running server: the
//! `X509Source` gets its SVID and sees an update; JWT fetch and validation work.

use std::str::FromStr;

use spiffe::{TrustDomain as SpiffeTd, WorkloadApiClient, X509Source};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_source_gets_the_svid_and_sees_a_rotation() {
    let world = World::new();
    world
        .source
        .update(|s| s.identities[0].entry.hint = "internal".into());
    let agent = TestAgent::start(world.source.clone()).await;
    let source = within(
        "X509Source to build",
        X509Source::builder().endpoint(agent.endpoint()).build(),
    )
    .await
    .unwrap();
    let svid = source.svid().unwrap();
    assert_eq!(svid.spiffe_id().to_string(), WORKLOAD);
    assert_eq!(svid.hint(), Some("internal"));
    let held = world.source.current().identities[0].svid.clone().unwrap();
    assert_eq!(svid.leaf().as_bytes(), held.cert_chain[0].as_slice());
    let bundle = source
        .try_bundle_for_trust_domain(&SpiffeTd::from_str("example.org").unwrap())
        .unwrap();
    assert_eq!(bundle.authorities()[0].as_bytes(), world.ca.der.as_slice());

    let mut updates = source.updated();
    let rotated = world.ca.issue(WORKLOAD);
    let rotated_leaf = rotated.cert_chain[0].clone();
    world
        .source
        .update(|s| s.identities[0].svid = Some(rotated));
    within("X509Source to see the rotation", updates.changed())
        .await
        .unwrap();
    assert_eq!(
        source.svid().unwrap().leaf().as_bytes(),
        rotated_leaf.as_slice()
    );
    within("X509Source to shut down", source.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_client_fetches_and_validates_jwt_svids_and_reads_bundles() {
    let world = World::new();
    let agent = TestAgent::start(world.source.clone()).await;
    let client = within("connect", WorkloadApiClient::connect_to(agent.endpoint()))
        .await
        .unwrap();

    let token = within("fetch_jwt_token", client.fetch_jwt_token(["db"], None))
        .await
        .unwrap();
    let validated = within(
        "validate_jwt_token",
        client.validate_jwt_token("db", &token),
    )
    .await
    .unwrap();
    assert_eq!(validated.spiffe_id().to_string(), WORKLOAD);
    assert_eq!(validated.audience(), ["db"]);
    assert!(within(
        "validate for the wrong audience",
        client.validate_jwt_token("other", &token)
    )
    .await
    .is_err());

    let svid = within(
        "fetch_jwt_svid",
        client.fetch_jwt_svid(["db", "cache"], None),
    )
    .await
    .unwrap();
    assert_eq!(svid.spiffe_id().to_string(), WORKLOAD);

    let bundles = within("fetch_jwt_bundles", client.fetch_jwt_bundles())
        .await
        .unwrap();
    let own = bundles
        .get(&SpiffeTd::from_str("example.org").unwrap())
        .unwrap();
    assert!(own.find_jwt_authority("jwt-key-1").is_some());

    let ctx = within("fetch_x509_context", client.fetch_x509_context())
        .await
        .unwrap();
    assert_eq!(
        ctx.default_svid().unwrap().spiffe_id().to_string(),
        WORKLOAD
    );
    assert_eq!(ctx.bundle_set().len(), 1);
}
