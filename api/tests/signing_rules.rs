//! What the server signs, through the admin API (issue 11): `x509 mint` and `jwt mint` for a
//! reserved `/spire` ID are refused, requested TTLs are clamped to the configured maximum,
//! and a caller-chosen join token has a minimum length.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

#[path = "admin/support.rs"]
#[allow(dead_code)] // Shared with the admin suite, which uses more of it.
mod support;

use rcgen::{CertificateParams, KeyPair, SanType};
use tessera_proto::spire::api::server::agent::v1::agent_client::AgentClient;
use tessera_proto::spire::api::server::agent::v1::CreateJoinTokenRequest;
use tessera_proto::spire::api::server::svid::v1::svid_client::SvidClient;
use tessera_proto::spire::api::server::svid::v1::{MintJwtsvidRequest, MintX509svidRequest};
use tonic::Code;

use support::{id, Fixture};

/// The fixture's manual clock.
const NOW: i64 = 1_700_000_000;

fn csr(uri: &str) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params
        .subject_alt_names
        .push(SanType::URI(uri.try_into().unwrap()));
    params.serialize_request(&key).unwrap().der().to_vec()
}

#[tokio::test]
async fn minting_the_server_or_an_agent_id_is_refused() {
    let f = Fixture::start().await;
    let mut client = SvidClient::new(f.channel.clone());
    for uri in [
        "spiffe://example.org/spire/server",
        "spiffe://example.org/spire/agent/join_token/abc",
    ] {
        let err = client
            .mint_x509svid(MintX509svidRequest {
                csr: csr(uri),
                ttl: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{uri}: {}",
            err.message()
        );
        assert!(err.message().contains("reserved"), "{}", err.message());
    }
    let err = client
        .mint_jwtsvid(MintJwtsvidRequest {
            id: id("/spire/server"),
            audience: vec!["agents".into()],
            ttl: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("reserved"), "{}", err.message());
    f.stop().await;
}

#[tokio::test]
async fn minted_ttls_are_clamped_to_the_configured_maximum() {
    let f = Fixture::start().await;
    let mut client = SvidClient::new(f.channel.clone());
    let x509 = client
        .mint_x509svid(MintX509svidRequest {
            csr: csr("spiffe://example.org/admin/tool"),
            ttl: i32::MAX,
        })
        .await
        .unwrap()
        .into_inner()
        .svid
        .unwrap();
    // The CA (24 h) ends first here: never outlived, whatever was asked.
    assert!(x509.expires_at <= NOW + 86_400, "{}", x509.expires_at);
    let jwt = client
        .mint_jwtsvid(MintJwtsvidRequest {
            id: id("/admin/tool"),
            audience: vec!["db".into()],
            ttl: i32::MAX,
        })
        .await
        .unwrap()
        .into_inner()
        .svid
        .unwrap();
    // limits.entry.max_jwt_svid_ttl_secs: 1 day by default, shorter than the JWT key here.
    assert_eq!(jwt.expires_at, NOW + 86_400);
    let short = client
        .mint_jwtsvid(MintJwtsvidRequest {
            id: id("/admin/tool"),
            audience: vec!["db".into()],
            ttl: 60,
        })
        .await
        .unwrap()
        .into_inner()
        .svid
        .unwrap();
    assert_eq!(short.expires_at, NOW + 60);
    f.stop().await;
}

#[tokio::test]
async fn a_chosen_join_token_has_a_minimum_length() {
    let f = Fixture::start().await;
    let mut client = AgentClient::new(f.channel.clone());
    let err = client
        .create_join_token(CreateJoinTokenRequest {
            ttl: 60,
            token: "guessable".into(),
            agent_id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("16 to 128"), "{}", err.message());
    let ok = client
        .create_join_token(CreateJoinTokenRequest {
            ttl: 60,
            token: "a-long-enough-token".into(),
            agent_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.value, "a-long-enough-token");
    f.stop().await;
}
