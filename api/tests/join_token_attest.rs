//! A join token over the real agent API (issue 11): it is spent only with the attestation it
//! records, so an attestation refused for its CSR leaves it usable, and once used it is gone.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

#[path = "hostile/support.rs"]
mod support;

use futures::StreamExt;
use tessera_actors::server::tokens::{hash_token, TokenCommand};
use tessera_proto::spire::api::types::AttestationData;
use tessera_proto::tessera::agent::v1::agent_server_client::AgentServerClient;
use tessera_proto::tessera::agent::v1::{attest_request, AttestParams, AttestRequest};
use tonic::Code;

use support::{attest, channel, settings, start, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_csr_does_not_burn_the_join_token() {
    let r = start(settings(), false).await;
    let token = "tok-0123456789abcdef";
    r.server
        .tokens
        .command(TokenCommand::Create {
            token_hash: hash_token(token),
            ttl_secs: 600,
            alias: None,
        })
        .await
        .unwrap();

    // The token with a CSR the signer refuses.
    let mut client = AgentServerClient::new(channel(r.addr, &r.bundle, None).await);
    let bad = AttestRequest {
        step: Some(attest_request::Step::Params(AttestParams {
            data: Some(AttestationData {
                r#type: "join_token".into(),
                payload: token.as_bytes().to_vec(),
            }),
            csr: b"not a CSR".to_vec(),
            agent_version: "test".into(),
        })),
    };
    let refused = match within("attest", client.attest(futures::stream::iter(vec![bad]))).await {
        Err(status) => status,
        Ok(stream) => within("attest result", stream.into_inner().next())
            .await
            .expect("a response")
            .unwrap_err(),
    };
    assert_eq!(
        refused.code(),
        Code::InvalidArgument,
        "{}",
        refused.message()
    );

    // The same token with a good CSR: attested.
    let svid = attest(r.addr, &r.bundle, token).await.unwrap();
    assert_eq!(
        svid.id.to_string(),
        format!("spiffe://example.org/spire/agent/join_token/{token}")
    );
    // And now it is spent.
    let Err(again) = attest(r.addr, &r.bundle, token).await else {
        panic!("a spent token attested again");
    };
    assert_eq!(again.code(), Code::PermissionDenied, "{}", again.message());
    r.stop().await;
}
