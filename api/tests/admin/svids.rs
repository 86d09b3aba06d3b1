//! Bundle and SVID services: the bundle, minted X509-SVIDs (checked with the identity crate's
//! validator) and JWT-SVIDs (checked with ring against the bundle), and their refusals.

use std::time::{Duration, UNIX_EPOCH};

use rcgen::{CertificateParams, KeyPair, SanType};
use tessera_identity::verify_x509_svid;
use tessera_proto::spire::api::server::bundle::v1::bundle_client::BundleClient;
use tessera_proto::spire::api::server::bundle::v1::GetBundleRequest;
use tessera_proto::spire::api::server::svid::v1::svid_client::SvidClient;
use tessera_proto::spire::api::server::svid::v1::{MintJwtsvidRequest, MintX509svidRequest};
use tessera_proto::spire::api::types;
use tessera_server::convert::bundle_from_proto;
use tonic::Code;

use crate::support::{id, Fixture};

/// The fixture's manual clock.
const NOW: i64 = 1_700_000_000;

fn csr(uris: &[&str], dns: &[&str]) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    for u in uris {
        params
            .subject_alt_names
            .push(SanType::URI((*u).try_into().unwrap()));
    }
    for d in dns {
        params
            .subject_alt_names
            .push(SanType::DnsName((*d).try_into().unwrap()));
    }
    params.serialize_request(&key).unwrap().der().to_vec()
}

async fn bundle(f: &Fixture) -> tessera_identity::Bundle {
    let wire = BundleClient::new(f.channel.clone())
        .get_bundle(GetBundleRequest { output_mask: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(wire.trust_domain, "example.org");
    assert!(!wire.x509_authorities.is_empty() && !wire.jwt_authorities.is_empty());
    bundle_from_proto(&wire).unwrap()
}

#[tokio::test]
async fn minted_x509_svids_verify_against_the_bundle() {
    let f = Fixture::start().await;
    let bundle = bundle(&f).await;
    let mut client = SvidClient::new(f.channel.clone());
    let svid = client
        .mint_x509svid(MintX509svidRequest {
            csr: csr(&["spiffe://example.org/admin/tool"], &["tool.local"]),
            ttl: 120,
        })
        .await
        .unwrap()
        .into_inner()
        .svid
        .unwrap();
    assert_eq!(svid.id, id("/admin/tool"));
    assert_eq!(svid.expires_at, NOW + 120);
    let now = UNIX_EPOCH + Duration::from_secs(NOW as u64 + 1);
    let verified = verify_x509_svid(&svid.cert_chain, &bundle, now).unwrap();
    assert_eq!(
        verified.spiffe_id().to_string(),
        "spiffe://example.org/admin/tool"
    );

    for (req, code) in [
        (
            MintX509svidRequest {
                csr: vec![],
                ttl: 0,
            },
            Code::InvalidArgument,
        ),
        (
            MintX509svidRequest {
                csr: b"junk".to_vec(),
                ttl: 0,
            },
            Code::InvalidArgument,
        ),
        (
            MintX509svidRequest {
                csr: csr(&[], &[]),
                ttl: 0,
            },
            Code::InvalidArgument,
        ),
        (
            MintX509svidRequest {
                csr: csr(&["spiffe://other.org/x"], &[]),
                ttl: 0,
            },
            Code::InvalidArgument,
        ),
        (
            MintX509svidRequest {
                csr: csr(&["spiffe://example.org/x"], &[]),
                ttl: -5,
            },
            Code::InvalidArgument,
        ),
    ] {
        let err = client.mint_x509svid(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{}", err.message());
    }
    f.stop().await;
}

#[tokio::test]
async fn minted_jwt_svids_verify_against_the_bundle() {
    let f = Fixture::start().await;
    let bundle = bundle(&f).await;
    let mut client = SvidClient::new(f.channel.clone());
    let svid = client
        .mint_jwtsvid(MintJwtsvidRequest {
            id: id("/admin/tool"),
            audience: vec!["db".into(), "queue".into()],
            ttl: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .svid
        .unwrap();
    assert_eq!(
        svid.expires_at - svid.issued_at,
        300,
        "the default JWT-SVID TTL"
    );
    let claims = crate::jwt::verify_jwt_svid(&svid.token, &bundle, "queue", NOW).unwrap();
    assert_eq!(claims["sub"], "spiffe://example.org/admin/tool");
    let mut tampered = svid.token.clone();
    tampered.insert(tampered.find('.').unwrap() + 2, 'x');
    assert!(crate::jwt::verify_jwt_svid(&tampered, &bundle, "queue", NOW).is_err());

    let no_aud = MintJwtsvidRequest {
        id: id("/x"),
        audience: vec![],
        ttl: 0,
    };
    assert_eq!(
        client.mint_jwtsvid(no_aud).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let foreign = MintJwtsvidRequest {
        id: Some(types::Spiffeid {
            trust_domain: "other.org".into(),
            path: "/x".into(),
        }),
        audience: vec!["a".into()],
        ttl: 0,
    };
    assert_eq!(
        client.mint_jwtsvid(foreign).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let too_many = MintJwtsvidRequest {
        id: id("/x"),
        audience: (0..100).map(|i| format!("aud{i}")).collect(),
        ttl: 0,
    };
    assert_eq!(
        client.mint_jwtsvid(too_many).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    f.stop().await;
}
