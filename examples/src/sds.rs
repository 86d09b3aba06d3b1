//! An Envoy SDS v3 client (`envoy.service.secret.v3.SecretDiscoveryService`), standing in for
//! an Envoy sidecar: it asks the agent's socket for the secrets an Envoy would name in its
//! config, and feeds them into [`Material`] so the same TLS code uses them.
//!
//! - `default`: a `tls_certificate` (PEM chain and PEM PKCS#8 key) of the caller's SVID;
//! - `ALL`: a validation context carrying Envoy's SPIFFE certificate validator config
//!   (`envoy.tls.cert_validator.spiffe`), one trust bundle per trust domain, federated ones
//!   included; or `ROOTCA`: the agent's own trust domain only.
//!
//! It speaks the xDS state-of-the-world protocol as Envoy does: one `StreamSecrets` stream;
//! each response is acknowledged with its `version_info` and `nonce`; a rotation arrives as a
//! new response on the same stream. Bounds: responses are limited by tonic's default
//! message size (4 MiB), and one stream is kept.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, DataSource, Node};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, Secret, SpiffeCertValidatorConfig,
};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use prost::Message;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::material::{Material, MaterialError, TrustMap};

/// The type URL of SDS resources.
pub const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The name of Envoy's SPIFFE certificate validator.
pub const SPIFFE_VALIDATOR: &str = "envoy.tls.cert_validator.spiffe";

/// Longest wait for the agent's first response.
const FIRST_RESPONSE: Duration = Duration::from_secs(10);

/// Why SDS gave no usable material.
#[derive(Debug, thiserror::Error)]
pub enum SdsError {
    /// The agent's socket cannot be reached.
    #[error("cannot connect to the agent's SDS socket {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The agent answered with an error (PermissionDenied: no entry for this workload).
    #[error("the agent refused SDS: {0}")]
    Status(#[from] tonic::Status),
    /// No response in time.
    #[error("no SDS response within {FIRST_RESPONSE:?}")]
    Timeout,
    /// The stream ended before the first response.
    #[error("the agent closed the SDS stream")]
    Ended,
    /// A resource could not be decoded or used.
    #[error("SDS resource {name:?}: {reason}")]
    Resource {
        /// The secret's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The SVID in a `tls_certificate` is unusable.
    #[error("SDS tls_certificate: {0}")]
    Material(#[from] MaterialError),
}

/// Connects to the agent's socket (the Workload API socket: SDS is served on it).
pub async fn connect(path: PathBuf) -> Result<SecretDiscoveryServiceClient<Channel>, SdsError> {
    let socket = path.clone();
    // The URI is required by tonic and ignored: the connector dials the Unix socket.
    let channel = Endpoint::from_static("http://agent.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|source| SdsError::Connect { path, source })?;
    Ok(SecretDiscoveryServiceClient::new(channel))
}

/// Opens the stream for `names` (e.g. `default` and `ALL`), waits for the first response and
/// applies it to `material`, then follows the stream in a task: each push is applied and
/// acknowledged; PermissionDenied withdraws the identity.
pub async fn follow(
    mut client: SecretDiscoveryServiceClient<Channel>,
    names: Vec<String>,
    material: Arc<Material>,
) -> Result<tokio::task::JoinHandle<()>, SdsError> {
    let (tx, rx) = mpsc::channel(4);
    let first = request(&names, None);
    tx.send(first).await.map_err(|_| SdsError::Ended)?;
    let mut stream = client
        .stream_secrets(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let response = tokio::time::timeout(FIRST_RESPONSE, stream.message())
        .await
        .map_err(|_| SdsError::Timeout)??
        .ok_or(SdsError::Ended)?;
    apply(&response, &material)?;
    let _ = tx.send(request(&names, Some(&response))).await;
    Ok(tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(response)) => {
                    if let Err(e) = apply(&response, &material) {
                        eprintln!("ignoring an SDS response: {e}");
                    }
                    // ACK (Envoy would NACK a response it cannot use; this stand-in ACKs).
                    if tx.send(request(&names, Some(&response))).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return eprintln!("the agent closed the SDS stream"),
                Err(status) => {
                    if status.code() == tonic::Code::PermissionDenied {
                        material.withdraw();
                    }
                    return eprintln!("the SDS stream ended: {status}");
                }
            }
        }
    }))
}

/// A request for `names`; with `ack`, the acknowledgement of that response.
fn request(names: &[String], ack: Option<&DiscoveryResponse>) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: ack.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: ack.map(|r| r.nonce.clone()).unwrap_or_default(),
        resource_names: names.to_vec(),
        type_url: SECRET_TYPE_URL.to_owned(),
        node: Some(Node {
            id: "sds-caller".to_owned(),
            cluster: "tessera-examples".to_owned(),
            user_agent_name: "envoy".to_owned(),
            ..Node::default()
        }),
        ..DiscoveryRequest::default()
    }
}

/// Applies every secret of `response` to `material`.
fn apply(response: &DiscoveryResponse, material: &Material) -> Result<(), SdsError> {
    let mut trust = TrustMap::new();
    let mut saw_trust = false;
    for any in &response.resources {
        let secret = Secret::decode(any.value.as_slice()).map_err(|e| SdsError::Resource {
            name: any.type_url.clone(),
            reason: e.to_string(),
        })?;
        let bad = |reason: &str| SdsError::Resource {
            name: secret.name.clone(),
            reason: reason.to_owned(),
        };
        match &secret.r#type {
            Some(secret::Type::TlsCertificate(tls)) => {
                let chain = pem_bytes(tls.certificate_chain.as_ref())
                    .ok_or_else(|| bad("no inline certificate_chain"))?;
                let key = pem_bytes(tls.private_key.as_ref())
                    .ok_or_else(|| bad("no inline private_key"))?;
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(&format!("certificate_chain is not PEM: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| bad(&format!("private_key is not PEM: {e}")))?;
                material.set_identity(chain, key)?;
            }
            Some(secret::Type::ValidationContext(context)) => {
                saw_trust = true;
                validation_context(context, &secret.name, material, &mut trust)?;
            }
            _ => return Err(bad("neither a tls_certificate nor a validation_context")),
        }
    }
    if saw_trust {
        material.set_trust(trust);
    }
    Ok(())
}

/// Reads a validation context: Envoy's SPIFFE validator config (one bundle per trust domain),
/// or plain `trusted_ca` (then the bundle of our own trust domain).
fn validation_context(
    context: &CertificateValidationContext,
    name: &str,
    material: &Material,
    trust: &mut TrustMap,
) -> Result<(), SdsError> {
    let bad = |reason: String| SdsError::Resource {
        name: name.to_owned(),
        reason,
    };
    if let Some(custom) = &context.custom_validator_config {
        if custom.name != SPIFFE_VALIDATOR {
            return Err(bad(format!("unknown validator {:?}", custom.name)));
        }
        let config = custom
            .typed_config
            .as_ref()
            .ok_or_else(|| bad("no typed_config".into()))?;
        let config = SpiffeCertValidatorConfig::decode(config.value.as_slice())
            .map_err(|e| bad(format!("SPIFFECertValidatorConfig: {e}")))?;
        for td in &config.trust_domains {
            let pem = pem_bytes(td.trust_bundle.as_ref())
                .ok_or_else(|| bad(format!("no inline bundle for {}", td.name)))?;
            trust.insert(td.name.clone(), certs(pem).map_err(bad)?);
        }
        return Ok(());
    }
    let pem = pem_bytes(context.trusted_ca.as_ref())
        .ok_or_else(|| bad("neither a SPIFFE validator nor an inline trusted_ca".into()))?;
    let own = material
        .last_identity()
        .and_then(|i| {
            i.spiffe_id
                .trim_start_matches("spiffe://")
                .split('/')
                .next()
                .map(str::to_owned)
        })
        .ok_or_else(|| bad("trusted_ca before any SVID: ask for `default` too".into()))?;
    trust.insert(own, certs(pem).map_err(bad)?);
    Ok(())
}

fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bundle is not PEM: {e}"))
}

fn pem_bytes(source: Option<&DataSource>) -> Option<&[u8]> {
    match source?.specifier.as_ref()? {
        Specifier::InlineBytes(b) => Some(b),
        Specifier::InlineString(s) => Some(s.as_bytes()),
        _ => None,
    }
}
