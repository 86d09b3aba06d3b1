//! The agent's TLS to the servers: each server, whatever address it is reached at, must
//! present `spiffe://<td>/spire/server` chaining to the trust bundle the agent holds (from
//! `--trustBundle`, then from sync; with several servers it holds every server's CA), or,
//! only for the first attestation with `--insecureBootstrap`, anything at all.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tessera_edge::tls::{ExpectedId, SpiffeServerVerifier};
use tessera_identity::{SpiffeId, TrustDomain, SERVER_PATH};
use tonic::transport::{Channel, Endpoint};

pub use tessera_edge::tls::ServerTrust;

use super::servers::Target;
use crate::config::{ServerAddress, ServerHost};

/// Longest TCP and TLS connection set-up to one server before trying another.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 pings on an idle connection: how a server that vanished without closing the
/// connection is noticed (the sync stream is otherwise quiet for long periods).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// A ping unanswered this long ends the connection, so the agent fails over.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The agent's own X.509-SVID and key, presented as the TLS client certificate.
#[derive(Clone)]
pub struct ClientIdentity {
    /// Chain, leaf first.
    pub cert_chain: Vec<Vec<u8>>,
    /// PKCS#8 DER.
    pub key_pkcs8: Arc<zeroize::Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("chain_len", &self.cert_chain.len())
            .finish()
    }
}

/// The TLS client configuration the agent uses with every server: the server must present
/// `spiffe://<trust_domain>/spire/server` chaining to `trust` (the synced bundle, which holds
/// every server's CA), whichever address it was reached at; `identity` is the client
/// certificate (none while attesting).
pub fn client_config(
    trust: Arc<ServerTrust>,
    trust_domain: TrustDomain,
    identity: Option<&ClientIdentity>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = tessera_edge::tls::provider();
    let server_id = SpiffeId::from_path(&trust_domain, SERVER_PATH)
        .map_err(|e| format!("server SPIFFE ID of {trust_domain}: {e}"))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            trust,
            ExpectedId::Exact(server_id),
            provider,
        )));
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                id.cert_chain
                    .iter()
                    .map(|d| CertificateDer::from(d.clone()))
                    .collect(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_pkcs8.as_slice().to_vec())),
            )
            .map_err(|e| format!("agent SVID unusable as a TLS client certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS server name (SNI) for `address`: its DNS name, or its IP address. The server is
/// verified by its SPIFFE ID, not by this name; a name rustls cannot send (e.g. with '_')
/// is replaced by a neutral one.
pub(crate) fn server_name(address: &ServerAddress) -> ServerName<'static> {
    match address.host() {
        ServerHost::Ip(ip) => ServerName::IpAddress((*ip).into()),
        ServerHost::Name(name) => ServerName::try_from(name.clone()).unwrap_or_else(|_| {
            ServerName::try_from("tessera-server")
                .map(|n| n.to_owned())
                .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
        }),
    }
}

/// A lazily connecting channel to one server: TCP to `target.socket` (the address it
/// resolved to), TLS with `target`'s server name, HTTP/2 with its configured `host:port` as
/// the authority. The agent starts, and serves its cache, while the server is down.
pub fn channel(target: &Target, config: Arc<rustls::ClientConfig>) -> Result<Channel, String> {
    let connector = tokio_rustls::TlsConnector::from(config);
    let socket = target.socket;
    let server_name = server_name(&target.address);
    let authority = target.address.to_string();
    let endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| format!("server address {authority:?}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(socket).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // The verifier itself is tested where it lives (`tessera_edge::tls`).

    #[test]
    fn the_client_config_expects_the_server_id_of_the_trust_domain() {
        let td = TrustDomain::new("example.org").unwrap();
        let config = client_config(
            ServerTrust::bundle(tessera_identity::Bundle::new(td.clone())),
            td,
            None,
        )
        .unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    }

    #[test]
    fn server_names_follow_the_configured_host() {
        let name = |a: &str| server_name(&ServerAddress::parse(a, 8081).unwrap());
        assert_eq!(
            name("server.example.org"),
            ServerName::try_from("server.example.org").unwrap()
        );
        assert!(matches!(name("10.0.0.1:9"), ServerName::IpAddress(_)));
        assert!(matches!(name("[2001:db8::1]:9"), ServerName::IpAddress(_)));
        assert_eq!(
            name("tessera_server"),
            ServerName::try_from("tessera_server").unwrap()
        );
    }
}
