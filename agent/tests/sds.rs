//! Envoy SDS v3 on the Workload API socket, black-box: the real server on a temp socket with
//! the real `unix` attestor and the shared test source ([`support`]), checked with the client
//! generated from Envoy's own definitions (crates.io `envoy-types`). Secrets are decoded down
//! to the certificates: URI SANs, keys, bundle PEMs, the SPIFFE validator's trust domains.
//! Every wait is bounded ([`support::WAIT`]).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

#[path = "agent/support.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, Secret, SpiffeCertValidatorConfig,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::{value::Kind, Any, Struct, Value};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use support::*;
use tessera_agent::attestor::unix::{UnixAttestor, UnixAttestorConfig};
use tessera_agent::attestor::Attestors;
use tessera_agent::sds::{SdsConfig, SECRET_TYPE_URL, SPIFFE_VALIDATOR};
use tessera_agent::shutdown::Shutdown;
use tessera_agent::workload_api::{self, Limits, Settings};
use tessera_identity::X509Authority;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

const SECOND: &str = "spiffe://example.org/second";
const VALIDATOR_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig";

type Client = SecretDiscoveryServiceClient<Channel>;

/// The standard world, plus a second SVID for this process and a federated trust domain
/// (other.org) that its first entry federates with.
fn world() -> (World, TestCa) {
    let w = World::new();
    w.add("entry-2", SECOND, &[&my_selector()]);
    let other = TestCa::new("other.org");
    let bundle = other.bundle();
    w.source.update(|s| {
        s.federated.insert(td("other.org"), bundle);
        s.identities[0].entry.federates_with = vec![td("other.org")];
    });
    (w, other)
}

async fn client(agent: &TestAgent) -> Client {
    SecretDiscoveryServiceClient::new(agent.channel().await)
}

fn request(names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
        type_url: SECRET_TYPE_URL.into(),
        ..DiscoveryRequest::default()
    }
}

/// An answer to `last`: ACK, or NACK with `nack`.
fn reply(names: &[&str], last: &DiscoveryResponse, nack: Option<&str>) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: last.version_info.clone(),
        response_nonce: last.nonce.clone(),
        error_detail: nack.map(|m| RpcStatus {
            code: Code::InvalidArgument as i32,
            message: m.into(),
            ..RpcStatus::default()
        }),
        ..request(names)
    }
}

/// Envoy's node metadata `disable_spiffe_cert_validation: true`.
fn no_spiffe_validation(mut req: DiscoveryRequest) -> DiscoveryRequest {
    let fields = HashMap::from([(
        "disable_spiffe_cert_validation".to_owned(),
        Value {
            kind: Some(Kind::BoolValue(true)),
        },
    )]);
    req.node = Some(Node {
        metadata: Some(Struct { fields }),
        ..Node::default()
    });
    req
}

async fn fetch(c: &mut Client, req: DiscoveryRequest) -> Result<Vec<Secret>, tonic::Status> {
    let resp = within("FetchSecrets", c.fetch_secrets(req))
        .await?
        .into_inner();
    assert_eq!(resp.type_url, SECRET_TYPE_URL);
    Ok(resp.resources.iter().map(decode).collect())
}

fn decode(any: &Any) -> Secret {
    assert_eq!(any.type_url, SECRET_TYPE_URL);
    Secret::decode(any.value.as_slice()).unwrap()
}

fn inline(d: &Option<DataSource>) -> &[u8] {
    match d.as_ref().and_then(|d| d.specifier.as_ref()) {
        Some(Specifier::InlineBytes(b)) => b,
        other => panic!("expected inline bytes, got {other:?}"),
    }
}

/// The DER blocks of a PEM text, each with the tag it must have.
fn ders(pem_text: &[u8], tag: &str) -> Vec<Vec<u8>> {
    let blocks = pem::parse_many(pem_text).unwrap();
    assert!(!blocks.is_empty());
    blocks
        .into_iter()
        .map(|b| {
            assert_eq!(b.tag(), tag);
            b.into_contents()
        })
        .collect()
}

fn uri_san(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .unwrap()
}

/// A TLS certificate secret: the leaf's URI SAN and the key's PKCS#8 DER.
fn tls(s: &Secret) -> (String, Vec<u8>) {
    let Some(secret::Type::TlsCertificate(t)) = &s.r#type else {
        panic!("{} is not a TLS certificate: {s:?}", s.name);
    };
    let chain = ders(inline(&t.certificate_chain), "CERTIFICATE");
    let key = ders(inline(&t.private_key), "PRIVATE KEY");
    (uri_san(&chain[0]), key[0].clone())
}

/// A SPIFFE-validator validation context: its trust domains and their CA DERs.
fn validator(s: &Secret) -> Vec<(String, Vec<Vec<u8>>)> {
    let Some(secret::Type::ValidationContext(v)) = &s.r#type else {
        panic!("{} is not a validation context: {s:?}", s.name);
    };
    assert!(v.trusted_ca.is_none());
    let ext = v.custom_validator_config.as_ref().unwrap();
    assert_eq!(ext.name, SPIFFE_VALIDATOR);
    let any = ext.typed_config.as_ref().unwrap();
    assert_eq!(any.type_url, VALIDATOR_TYPE);
    let config = SpiffeCertValidatorConfig::decode(any.value.as_slice()).unwrap();
    config
        .trust_domains
        .iter()
        .map(|t| (t.name.clone(), ders(inline(&t.trust_bundle), "CERTIFICATE")))
        .collect()
}

/// A plain (`trusted_ca`) validation context's CA DERs.
fn trusted_ca(s: &Secret) -> Vec<Vec<u8>> {
    let Some(secret::Type::ValidationContext(v)) = &s.r#type else {
        panic!("{} is not a validation context: {s:?}", s.name);
    };
    assert!(v.custom_validator_config.is_none());
    ders(inline(&v.trusted_ca), "CERTIFICATE")
}

fn names(secrets: &[Secret]) -> Vec<&str> {
    secrets.iter().map(|s| s.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_serves_every_kind_of_name_as_spire_does() {
    let (world, other) = world();
    let agent = TestAgent::start(world.source.clone()).await;
    let mut c = client(&agent).await;
    let snapshot = world.source.current();
    let key_of = |i: usize| {
        snapshot.identities[i]
            .svid
            .as_ref()
            .unwrap()
            .key_pkcs8
            .to_vec()
    };

    // "default": the first SVID (the Workload API's first), under the default name.
    let got = fetch(&mut c, request(&["default"])).await.unwrap();
    assert_eq!(names(&got), ["default"]);
    assert_eq!(tls(&got[0]), (WORKLOAD.to_owned(), key_of(0)));
    // By SPIFFE ID.
    let got = fetch(&mut c, request(&[SECOND])).await.unwrap();
    assert_eq!(names(&got), [SECOND]);
    assert_eq!(tls(&got[0]), (SECOND.to_owned(), key_of(1)));
    // "ROOTCA": the own trust domain, in Envoy's SPIFFE validator (SPIRE's default).
    let got = fetch(&mut c, request(&["ROOTCA"])).await.unwrap();
    assert_eq!(names(&got), ["ROOTCA"]);
    assert_eq!(
        validator(&got[0]),
        [("example.org".to_owned(), vec![world.ca.der.clone()])]
    );
    // A federated trust domain by its ID.
    let got = fetch(&mut c, request(&["spiffe://other.org"]))
        .await
        .unwrap();
    assert_eq!(
        validator(&got[0]),
        [("other.org".to_owned(), vec![other.der.clone()])]
    );
    // "ALL": every bundle the caller trusts, sorted by trust domain.
    let got = fetch(&mut c, request(&["ALL"])).await.unwrap();
    assert_eq!(names(&got), ["ALL"]);
    assert_eq!(
        validator(&got[0]),
        [
            ("example.org".to_owned(), vec![world.ca.der.clone()]),
            ("other.org".to_owned(), vec![other.der.clone()]),
        ]
    );
    // No name: bundles by ID, then every SVID by ID (SPIRE's order).
    let got = fetch(&mut c, request(&[])).await.unwrap();
    assert_eq!(
        names(&got),
        [
            "spiffe://example.org",
            "spiffe://other.org",
            WORKLOAD,
            SECOND
        ]
    );
    // Plain validation asked for in the node metadata: trusted_ca, and no "ALL".
    let got = fetch(&mut c, no_spiffe_validation(request(&["ROOTCA"])))
        .await
        .unwrap();
    assert_eq!(trusted_ca(&got[0]), std::slice::from_ref(&world.ca.der));
    let err = fetch(&mut c, no_spiffe_validation(request(&["ALL"])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // A name the caller is not entitled to fails the request, naming it.
    for name in [
        "spiffe://example.org/not-mine",
        "spiffe://third.org",
        "nope",
    ] {
        let err = fetch(&mut c, request(&["default", name]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(name), "{err:?}");
    }
    // Another resource type.
    let mut wrong = request(&["default"]);
    wrong.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster".into();
    let err = fetch(&mut c, wrong).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(agent.metrics.calls("FetchSecrets", "OK"), 7);
}

/// Opens a stream whose requests the test sends on the returned sender.
async fn open(
    c: &mut Client,
) -> Result<(mpsc::Sender<DiscoveryRequest>, Streaming<DiscoveryResponse>), tonic::Status> {
    let (tx, rx) = mpsc::channel(8);
    let resp = within("StreamSecrets", c.stream_secrets(ReceiverStream::new(rx))).await?;
    Ok((tx, resp.into_inner()))
}

async fn next(s: &mut Streaming<DiscoveryResponse>) -> DiscoveryResponse {
    within("a response", s.next()).await.unwrap().unwrap()
}

/// How many requests of `kind` the agent's SDS streams counted.
fn requests(agent: &TestAgent, kind: &str) -> u64 {
    let line = format!("tessera_agent_sds_stream_requests_total{{kind=\"{kind}\"}} ");
    agent
        .metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&line).map(|n| n.parse().unwrap()))
        .unwrap_or(0)
}

fn rotate(world: &World, i: usize) {
    let id = world.source.current().identities[i]
        .entry
        .spiffe_id
        .to_string();
    let svid = world.ca.issue(&id);
    world.source.update(|s| s.identities[i].svid = Some(svid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_answers_pushes_changes_and_follows_ack_nack_and_nonces() {
    let (world, _other) = world();
    let agent = TestAgent::start(world.source.clone()).await;
    let mut c = client(&agent).await;
    let (tx, mut s) = open(&mut c).await.unwrap();
    tx.send(request(&["default"])).await.unwrap();
    let r1 = next(&mut s).await;
    assert_eq!(
        (r1.version_info.as_str(), r1.type_url.as_str()),
        ("1", SECRET_TYPE_URL)
    );
    let key1 = tls(&decode(&r1.resources[0])).1;

    // ACK: nothing is sent again; the next response is the next change's.
    tx.send(reply(&["default"], &r1, None)).await.unwrap();
    eventually("the ACK to be counted", || requests(&agent, "ack") == 1).await;
    rotate(&world, 0);
    let r2 = next(&mut s).await;
    assert_eq!(r2.version_info, "2");
    assert_ne!(r2.nonce, r1.nonce);
    let (id2, key2) = tls(&decode(&r2.resources[0]));
    assert_eq!(id2, WORKLOAD);
    assert_ne!(key2, key1, "the rotated SVID is pushed");

    // NACK, then a stale answer (to r1) asking for other names: neither is answered.
    tx.send(reply(&["default"], &r2, Some("cannot load key")))
        .await
        .unwrap();
    tx.send(reply(&["ROOTCA"], &r1, None)).await.unwrap();
    eventually("the NACK and the stale request to be counted", || {
        requests(&agent, "nack") == 1 && requests(&agent, "stale") == 1
    })
    .await;
    // A change to another SVID does not touch this subscription: nothing is sent for it.
    rotate(&world, 1);
    // The next change of "default" is sent, for the names of the last valid request.
    rotate(&world, 0);
    let r3 = next(&mut s).await;
    assert_eq!(r3.version_info, "3");
    assert_eq!(names(&[decode(&r3.resources[0])]), ["default"]);
    assert_ne!(tls(&decode(&r3.resources[0])).1, key2);

    // Other names: answered at once, with a fresh nonce.
    tx.send(reply(&["ROOTCA", SECOND], &r3, None))
        .await
        .unwrap();
    let r4 = next(&mut s).await;
    assert_eq!(r4.version_info, "4");
    let got: Vec<Secret> = r4.resources.iter().map(decode).collect();
    assert_eq!(names(&got), ["ROOTCA", SECOND]);
    assert_eq!(requests(&agent, "subscribe"), 2);
    assert_eq!(agent.metrics.open_streams("StreamSecrets"), 1);

    // The caller closes: the stream's slot and gauge are released.
    drop(tx);
    drop(s);
    eventually("the stream to close", || {
        agent.metrics.open_streams("StreamSecrets") == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_entries_and_bundle_changes_reach_a_stream_of_everything() {
    let world = World::new();
    let agent = TestAgent::start(world.source.clone()).await;
    let mut c = client(&agent).await;
    let (tx, mut s) = open(&mut c).await.unwrap();
    tx.send(request(&[])).await.unwrap();
    let r1 = next(&mut s).await;
    let got: Vec<Secret> = r1.resources.iter().map(decode).collect();
    assert_eq!(names(&got), ["spiffe://example.org", WORKLOAD]);
    tx.send(reply(&[], &r1, None)).await.unwrap();

    world.add("entry-2", SECOND, &[&my_selector()]);
    let r2 = next(&mut s).await;
    assert_eq!(r2.version_info, "2");
    let got: Vec<Secret> = r2.resources.iter().map(decode).collect();
    assert_eq!(names(&got), ["spiffe://example.org", WORKLOAD, SECOND]);

    // A new authority in the trust domain's bundle (CA rotation).
    let next_ca = TestCa::new("example.org");
    let der = next_ca.der.clone();
    world.source.update(|s| {
        let b = s.bundle.as_mut().unwrap();
        b.add_x509_authority(X509Authority::from_der(der).unwrap());
    });
    let r3 = next(&mut s).await;
    assert_eq!(r3.version_info, "3");
    assert_ne!(r3.nonce, r2.nonce);
    assert_eq!(
        validator(&decode(&r3.resources[0])),
        [(
            "example.org".to_owned(),
            vec![world.ca.der.clone(), next_ca.der.clone()]
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_without_identity_is_refused_and_one_that_loses_it_is_cut_off() {
    let world = World::new();
    let agent = TestAgent::start(world.source.clone()).await;
    let mut c = client(&agent).await;
    let (tx, mut s) = open(&mut c).await.unwrap();
    tx.send(request(&["default"])).await.unwrap();
    next(&mut s).await;
    // The entry now names another uid: this process has no identity.
    world.source.update(|s| {
        s.identities[0].entry.selectors =
            tessera_identity::SelectorSet::parse_all([other_selector().as_str()]).unwrap();
    });
    let end = within("the stream to end", s.next())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");

    let err = fetch(&mut c, request(&["default"])).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = open(&mut c).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(agent.metrics.calls("StreamSecrets", "PermissionDenied"), 1);
    // Deltas are not served.
    let (_dtx, drx) = mpsc::channel::<DeltaDiscoveryRequest>(1);
    let err = c.delta_secrets(ReceiverStream::new(drx)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_bounds_are_refused_naming_the_limit() {
    let world = World::new();
    let agent = TestAgent::start(world.source.clone()).await;
    let mut c = client(&agent).await;
    let limits = SdsConfig::default().limits;
    let many: Vec<String> = (0..=limits.max_resource_names)
        .map(|i| format!("spiffe://example.org/{i}"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let err = fetch(&mut c, request(&many)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("sds.max_resource_names"), "{err:?}");

    let long = format!(
        "spiffe://example.org/{}",
        "a".repeat(limits.max_resource_name_len)
    );
    let err = fetch(&mut c, request(&[&long])).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("sds.max_resource_name_len"),
        "{err:?}"
    );

    // On a stream: a good request, then one over the bounds ends it.
    let (tx, mut s) = open(&mut c).await.unwrap();
    tx.send(request(&["default"])).await.unwrap();
    let r1 = next(&mut s).await;
    tx.send(reply(&many, &r1, None)).await.unwrap();
    let end = within("the stream to end", s.next())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_names_and_plain_validation_are_served() {
    let world = World::new();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let (listener, _guard) = workload_api::socket::bind(&socket).await.unwrap();
    let sds = SdsConfig {
        default_svid_name: "svid".into(),
        default_bundle_name: "ca".into(),
        default_all_bundles_name: "every".into(),
        disable_spiffe_cert_validation: true,
        ..SdsConfig::default()
    };
    let attestors = Attestors::new(
        vec![Arc::new(UnixAttestor::new(UnixAttestorConfig::default()))],
        Limits::default().attestation_timeout,
    );
    let (trigger, shutdown) = Shutdown::new();
    let server = tokio::spawn(workload_api::serve_with_sds(
        listener,
        world.source.clone(),
        attestors,
        Settings::new(Limits::default()).unwrap(),
        tessera_agent::config::workload_api::WorkloadApiSection::default().to_policy(),
        sds,
        shutdown.wait(),
    ));
    let mut c = SecretDiscoveryServiceClient::new(channel(&socket).await);
    let got = fetch(&mut c, request(&["svid", "ca"])).await.unwrap();
    assert_eq!(names(&got), ["ca", "svid"]);
    assert_eq!(trusted_ca(&got[0]), std::slice::from_ref(&world.ca.der));
    assert_eq!(tls(&got[1]).0, WORKLOAD);
    // The defaults' names are plain unknown names here.
    let err = fetch(&mut c, request(&["default"])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Node metadata may turn the SPIFFE validator back on for one Envoy.
    let mut on = no_spiffe_validation(request(&["every"]));
    if let Some(Kind::BoolValue(b)) = on
        .node
        .as_mut()
        .and_then(|n| n.metadata.as_mut())
        .and_then(|m| m.fields.get_mut("disable_spiffe_cert_validation"))
        .and_then(|v| v.kind.as_mut())
    {
        *b = false;
    }
    let got = fetch(&mut c, on).await.unwrap();
    assert_eq!(validator(&got[0])[0].0, "example.org");
    trigger.fire();
    within("the server to stop", server).await.unwrap().unwrap();
}
