//! Node attestation, the agent's side: join_token (send the token) or x509pop (send the
//! certificate chain, sign the server's nonce).

use std::sync::Arc;

use futures::StreamExt;
use rcgen::{CertificateParams, KeyPair};
use tessera_actors::agent::server_client::Refusal;
use tessera_actors::attestation::x509pop;
use tessera_identity::{Bundle, TrustDomain};
use tessera_proto::spire::api::types::AttestationData;
use tessera_proto::tessera::agent::v1::agent_server_client::AgentServerClient;
use tessera_proto::tessera::agent::v1::{
    attest_request, attest_response, AttestParams, AttestRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::convert::bundle_from_proto;
use super::servers::Target;
use super::tls::{channel, client_config, ClientIdentity, ServerTrust};
use crate::config::{NodeAttestorConfig, X509PopConfig};

/// The outcome of an attestation.
#[derive(Debug)]
pub struct Attested {
    /// The agent's SVID and key.
    pub identity: ClientIdentity,
    /// The bundle the server sent.
    pub bundle: Bundle,
    /// Whether the same evidence can attest again.
    pub reattestable: bool,
    /// The server that attested the agent (it knows the agent: the session starts there).
    pub(crate) server: Target,
}

/// Why attestation failed.
#[derive(Debug, thiserror::Error)]
pub enum AttestFailure {
    /// The server refused the evidence: not retried.
    #[error("the server refused attestation: {0}")]
    Refused(Refusal),
    /// A local problem (files, keys).
    #[error("{0}")]
    Local(String),
    /// The server could not be reached: retry.
    #[error("cannot reach the server to attest: {0}")]
    Unavailable(String),
}

fn x509pop_material(cfg: &X509PopConfig) -> Result<(Vec<Vec<u8>>, Vec<u8>), AttestFailure> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .map_err(|e| AttestFailure::Local(format!("{}: {e}", p.display())))
    };
    let certs = |text: &str, p: &std::path::Path| -> Result<Vec<Vec<u8>>, AttestFailure> {
        let blocks = pem::parse_many(text)
            .map_err(|e| AttestFailure::Local(format!("{}: {e}", p.display())))?;
        Ok(blocks
            .into_iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(|b| b.into_contents())
            .collect())
    };
    let mut chain = certs(&read(&cfg.certificate_path)?, &cfg.certificate_path)?;
    if chain.is_empty() {
        return Err(AttestFailure::Local(format!(
            "{}: no CERTIFICATE block",
            cfg.certificate_path.display()
        )));
    }
    if let Some(p) = &cfg.intermediates_path {
        chain.extend(certs(&read(p)?, p)?);
    }
    let key_text = zeroize::Zeroizing::new(read(&cfg.private_key_path)?);
    let key = pem::parse(key_text.as_bytes())
        .map_err(|e| AttestFailure::Local(format!("{}: {e}", cfg.private_key_path.display())))?;
    if key.tag() != "PRIVATE KEY" {
        return Err(AttestFailure::Local(format!(
            "{}: expected a PKCS#8 \"PRIVATE KEY\" block, found {:?} (convert with `openssl pkcs8 -topk8 -nocrypt`)",
            cfg.private_key_path.display(),
            key.tag()
        )));
    }
    Ok((chain, key.into_contents()))
}

fn sign_challenge(key_pkcs8: &[u8], nonce: &[u8]) -> Result<Vec<u8>, AttestFailure> {
    use ring::signature::{
        EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING,
        RSA_PKCS1_SHA256,
    };
    let rng = ring::rand::SystemRandom::new();
    let message = x509pop::challenge_message(nonce);
    for alg in [
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &ECDSA_P384_SHA384_ASN1_SIGNING,
    ] {
        if let Ok(pair) = EcdsaKeyPair::from_pkcs8(alg, key_pkcs8, &rng) {
            return pair
                .sign(&rng, &message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| AttestFailure::Local("signing the challenge failed".into()));
        }
    }
    let pair = RsaKeyPair::from_pkcs8(key_pkcs8).map_err(|_| {
        AttestFailure::Local("the x509pop key is not an EC P-256/P-384 or RSA PKCS#8 key".into())
    })?;
    let mut sig = vec![0; pair.public().modulus_len()];
    pair.sign(&RSA_PKCS1_SHA256, &rng, &message, &mut sig)
        .map_err(|_| AttestFailure::Local("signing the challenge failed".into()))?;
    Ok(sig)
}

/// Attests this node to the server `target`.
pub(crate) async fn attest(
    target: &Target,
    trust_domain: &TrustDomain,
    trust: Arc<ServerTrust>,
    attestor: &NodeAttestorConfig,
) -> Result<Attested, AttestFailure> {
    let key = KeyPair::generate().map_err(|e| AttestFailure::Local(e.to_string()))?;
    let csr = CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .map_err(|e| AttestFailure::Local(e.to_string()))?;
    let (data, x509pop_key) = match attestor {
        NodeAttestorConfig::JoinToken(token) => (
            AttestationData {
                r#type: "join_token".into(),
                payload: token.as_bytes().to_vec(),
            },
            None,
        ),
        NodeAttestorConfig::X509Pop(cfg) => {
            let (chain, key) = x509pop_material(cfg)?;
            (
                AttestationData {
                    r#type: x509pop::NAME.into(),
                    payload: x509pop::Payload::new(&chain).to_bytes(),
                },
                Some(zeroize::Zeroizing::new(key)),
            )
        }
    };
    let tls = client_config(trust, trust_domain.clone(), None).map_err(AttestFailure::Local)?;
    let ch = channel(target, tls).map_err(AttestFailure::Local)?;
    let mut client = AgentServerClient::new(ch);
    let (tx, rx) = mpsc::channel(2);
    let _ = tx
        .send(AttestRequest {
            step: Some(attest_request::Step::Params(AttestParams {
                data: Some(data),
                csr: csr.der().to_vec(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
            })),
        })
        .await;
    let status_err = |s: tonic::Status| match s.code() {
        tonic::Code::PermissionDenied | tonic::Code::InvalidArgument => {
            AttestFailure::Refused(super::client::refusal(&s))
        }
        _ => AttestFailure::Unavailable(format!("{:?}: {}", s.code(), s.message())),
    };
    let mut responses = client
        .attest(ReceiverStream::new(rx))
        .await
        .map_err(status_err)?
        .into_inner();
    loop {
        let message = responses
            .next()
            .await
            .ok_or_else(|| {
                AttestFailure::Unavailable("the server closed the attestation stream".into())
            })?
            .map_err(status_err)?;
        match message.step {
            Some(attest_response::Step::Challenge(nonce)) => {
                let key = x509pop_key.as_ref().ok_or_else(|| {
                    AttestFailure::Refused(Refusal::new(
                        "the server sent a challenge to a join_token attestation",
                    ))
                })?;
                let signature = sign_challenge(key, &nonce)?;
                tx.send(AttestRequest {
                    step: Some(attest_request::Step::ChallengeResponse(signature)),
                })
                .await
                .map_err(|_| AttestFailure::Unavailable("the attestation stream closed".into()))?;
            }
            Some(attest_response::Step::Result(result)) => {
                let svid = result.svid.ok_or_else(|| {
                    AttestFailure::Refused(Refusal::new("attestation result without an SVID"))
                })?;
                let bundle = result
                    .bundle
                    .as_ref()
                    .ok_or_else(|| {
                        AttestFailure::Refused(Refusal::new("attestation result without a bundle"))
                    })
                    .and_then(|b| {
                        bundle_from_proto(b).map_err(|e| AttestFailure::Refused(Refusal::new(e)))
                    })?;
                return Ok(Attested {
                    identity: ClientIdentity {
                        cert_chain: svid.cert_chain,
                        key_pkcs8: Arc::new(zeroize::Zeroizing::new(key.serialize_der())),
                    },
                    bundle,
                    reattestable: result.reattestable,
                    server: target.clone(),
                });
            }
            None => {
                return Err(AttestFailure::Refused(Refusal::new(
                    "empty attestation message",
                )))
            }
        }
    }
}
