//! Fetching a foreign trust domain's bundle from its bundle endpoint (SPIFFE Federation §5):
//! one bounded HTTPS `GET` of the relationship's URL, the endpoint authenticated as its profile
//! says, the body read as a SPIFFE bundle JWKS of the relationship's trust domain.
//!
//! - `https_spiffe`: the endpoint's chain must verify against the bundle already held for the
//!   trust domain of `endpoint_spiffe_id`, and its SPIFFE ID must be exactly that ID; the host
//!   name is not checked (the standard says the SPIFFE ID decides).
//! - `https_web`: Web PKI against the system's roots (`rustls-native-certs`, which honours
//!   `SSL_CERT_FILE`), with the host name checked.
//!
//! Redirects are not followed (only `200` is accepted), as the standard's security
//! considerations advise. Must not: store anything (the refresher hands the bundle to the
//! federation aggregate).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Uri;
use hyper::body::Body as _;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use tessera_actors::server::federation::{EndpointProfile, Relationship};
use tessera_edge::tls::{ExpectedId, ServerTrust, SpiffeServerVerifier};
use tessera_eventlog::Clock;
use tessera_identity::{Bundle, BundleError, BundleLimits, SpiffeId, TrustDomain};
use tokio::net::TcpStream;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use self::verify::{tls_error, SpiffeEndpointVerifier};
use crate::agent_api::tls::ClockTime;

mod verify;

/// Bounds on one fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchLimits {
    /// Longest TCP connect plus TLS handshake (`limits.federation.connect_timeout`).
    pub connect_timeout: Duration,
    /// Longest whole fetch, connect to last byte (`limits.federation.fetch_timeout`).
    pub fetch_timeout: Duration,
    /// Largest document and most keys (`limits.federation.max_bundle_bytes`, `max_bundle_keys`).
    pub bundle: BundleLimits,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(30),
            bundle: BundleLimits::default(),
        }
    }
}

/// Why a bundle could not be fetched. The last good bundle stays in every case.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The relationship's URL cannot be used (not `https://host[:port]/path`).
    #[error("bundle endpoint URL {url:?}: {reason}; fix it with `federation update`")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// No TCP connection (DNS failure, refused, unreachable network).
    #[error(
        "bundle endpoint {url} is unreachable: {reason}; check the URL and that the endpoint is up"
    )]
    Unreachable {
        /// The URL.
        url: String,
        /// The OS error.
        reason: String,
    },
    /// The connection or the whole fetch took too long.
    #[error("bundle endpoint {url} did not answer within limits.federation.{stage}_timeout ({after:?}); check that the endpoint is reachable from this server and answers, or raise the limit")]
    Timeout {
        /// The URL.
        url: String,
        /// `connect` (TCP and TLS), or `fetch` for the whole exchange; the limit is
        /// `limits.federation.<stage>_timeout`.
        stage: &'static str,
        /// The limit that ran out.
        after: Duration,
    },
    /// `https_spiffe`, and no bundle of the endpoint ID's trust domain is held to verify it by.
    #[error("no bundle of {trust_domain} is held to authenticate the https_spiffe endpoint {url}; bootstrap it with `bundle set` or `federation create --trustDomainBundlePath`")]
    NoHeldBundle {
        /// The endpoint SPIFFE ID's trust domain.
        trust_domain: TrustDomain,
        /// The URL.
        url: String,
    },
    /// `https_spiffe`: the endpoint's SVID names another SPIFFE ID than the relationship's.
    #[error("bundle endpoint {url} presented {presented}, expected {expected}; fix endpoint_spiffe_id with `federation update` if the endpoint moved")]
    WrongEndpointId {
        /// The URL.
        url: String,
        /// The ID in the endpoint's SVID.
        presented: SpiffeId,
        /// The relationship's `endpoint_spiffe_id`.
        expected: SpiffeId,
    },
    /// The TLS handshake failed (untrusted or expired certificate, wrong host name, protocol).
    #[error("TLS with bundle endpoint {url} failed: {reason}")]
    Tls {
        /// The URL.
        url: String,
        /// rustls's reason, then what to check for the relationship's profile.
        reason: String,
    },
    /// The HTTP exchange failed after TLS (connection cut, malformed response).
    #[error("HTTP with bundle endpoint {url} failed after TLS: {reason}; a SPIFFE bundle endpoint answers an HTTP/1.1 GET with 200 and the bundle, so check that the URL's host, port and path point at one")]
    Http {
        /// The URL.
        url: String,
        /// hyper's reason.
        reason: String,
    },
    /// The endpoint answered with another status than 200.
    #[error("bundle endpoint {url} answered HTTP {status}; expected 200 with a SPIFFE bundle (JWKS): check the URL's path and that the endpoint serves the bundle there (redirects are not followed)")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body is larger than the limit.
    #[error(
        "bundle endpoint {url} sent more than {limit} bytes (limits.federation.max_bundle_bytes)"
    )]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// The body is not a SPIFFE bundle JWKS.
    #[error("bundle endpoint {url} sent no valid SPIFFE bundle: {source}")]
    BadJwks {
        /// The URL.
        url: String,
        /// What is wrong with it.
        source: BundleError,
    },
    /// An X.509 authority of the bundle names another trust domain (URI SAN `spiffe://<td>`).
    #[error("bundle endpoint {url} sent a bundle whose X.509 authority names trust domain {found}, not {expected}; the URL may point at another trust domain's endpoint")]
    WrongTrustDomain {
        /// The URL.
        url: String,
        /// The relationship's trust domain.
        expected: TrustDomain,
        /// The trust domain the authority names.
        found: String,
    },
    /// The bundle has no authority at all.
    #[error("bundle endpoint {url} sent an empty bundle for {trust_domain}; it would trust nothing, so the last good bundle is kept")]
    Empty {
        /// The URL.
        url: String,
        /// The trust domain.
        trust_domain: TrustDomain,
    },
}

impl FetchError {
    /// A short name of the failure, for the `outcome` label of metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadUrl { .. } => "bad_url",
            Self::Unreachable { .. } => "unreachable",
            Self::Timeout { .. } => "timeout",
            Self::NoHeldBundle { .. } => "no_held_bundle",
            Self::WrongEndpointId { .. } => "wrong_endpoint_id",
            Self::Tls { .. } => "tls",
            Self::Http { .. } => "http",
            Self::Status { .. } => "status",
            Self::TooLarge { .. } => "too_large",
            Self::BadJwks { .. } => "bad_jwks",
            Self::WrongTrustDomain { .. } => "wrong_trust_domain",
            Self::Empty { .. } => "empty",
        }
    }
}

/// Fetches bundles: TLS time from the server's clock, Web PKI roots loaded once.
#[derive(Debug, Clone)]
pub struct Fetcher {
    limits: FetchLimits,
    clock: Arc<dyn Clock>,
    web_roots: Arc<RootCertStore>,
}

impl Fetcher {
    /// A fetcher trusting the system's roots for `https_web` (`SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` are honoured). Roots that fail to load are logged and skipped.
    pub fn new(limits: FetchLimits, clock: Arc<dyn Clock>) -> Self {
        let loaded = rustls_native_certs::load_native_certs();
        for e in &loaded.errors {
            tracing::warn!(error = %e, "cannot load a system root certificate for https_web bundle endpoints");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
        tracing::debug!(
            added,
            ignored,
            "system roots for https_web bundle endpoints"
        );
        Self::with_web_roots(limits, clock, roots)
    }

    /// A fetcher trusting exactly `roots` for `https_web` (tests, private PKIs).
    pub fn with_web_roots(
        limits: FetchLimits,
        clock: Arc<dyn Clock>,
        roots: RootCertStore,
    ) -> Self {
        Self {
            limits,
            clock,
            web_roots: Arc::new(roots),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &FetchLimits {
        &self.limits
    }

    /// Fetches the bundle of `relationship.trust_domain` from its endpoint; `held` are the
    /// federated bundles held now (the `https_spiffe` endpoint is verified by one of them).
    /// The bundle keeps the document's sequence number and refresh hint.
    ///
    /// # Errors
    /// [`FetchError`] naming what failed.
    pub async fn fetch(
        &self,
        relationship: &Relationship,
        held: &BTreeMap<TrustDomain, Arc<Bundle>>,
    ) -> Result<Bundle, FetchError> {
        let url = relationship.bundle_endpoint_url.clone();
        let after = self.limits.fetch_timeout;
        match tokio::time::timeout(after, self.fetch_inner(relationship, held)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout {
                url,
                stage: "fetch",
                after,
            }),
        }
    }

    async fn fetch_inner(
        &self,
        relationship: &Relationship,
        held: &BTreeMap<TrustDomain, Arc<Bundle>>,
    ) -> Result<Bundle, FetchError> {
        let url = relationship.bundle_endpoint_url.as_str();
        let target = Target::parse(url)?;
        let captured = Arc::new(Mutex::new(None));
        let verifier: Arc<dyn ServerCertVerifier> = match &relationship.profile {
            EndpointProfile::HttpsWeb => WebPkiServerVerifier::builder_with_provider(
                self.web_roots.clone(),
                tessera_edge::tls::provider(),
            )
            .build()
            .map_err(|e| FetchError::Tls {
                url: url.to_owned(),
                reason: format!("no usable root certificates for https_web ({e}); install the system's CA certificates or set SSL_CERT_FILE"),
            })?,
            EndpointProfile::HttpsSpiffe { endpoint_spiffe_id } => {
                let td = endpoint_spiffe_id.trust_domain();
                let bundle = held.get(td).ok_or_else(|| FetchError::NoHeldBundle {
                    trust_domain: td.clone(),
                    url: url.to_owned(),
                })?;
                Arc::new(SpiffeEndpointVerifier {
                    bundle: Bundle::clone(bundle),
                    expected: ExpectedId::Exact(endpoint_spiffe_id.clone()),
                    inner: SpiffeServerVerifier::new(
                        ServerTrust::bundle(Bundle::clone(bundle)),
                        ExpectedId::Exact(endpoint_spiffe_id.clone()),
                        tessera_edge::tls::provider(),
                    ),
                    refused: captured.clone(),
                })
            }
        };
        let mut config = rustls::ClientConfig::builder_with_details(
            tessera_edge::tls::provider(),
            Arc::new(ClockTime(self.clock.clone())),
        )
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Tls {
            url: url.to_owned(),
            reason: format!("no TLS protocol version is usable ({e}); this is a bug in how Tessera configures TLS, please report it"),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];

        let connect = async {
            let tcp = TcpStream::connect((target.host.as_str(), target.port))
                .await
                .map_err(|e| FetchError::Unreachable {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?;
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(target.server_name.clone(), tcp)
                .await
                .map_err(|e| with_advice(tls_error(url, &e, &captured), &relationship.profile))
        };
        let after = self.limits.connect_timeout;
        let tls =
            tokio::time::timeout(after, connect)
                .await
                .map_err(|_| FetchError::Timeout {
                    url: url.to_owned(),
                    stage: "connect",
                    after,
                })??;
        let body = self.get(url, &target, tls).await?;
        let bundle = Bundle::from_jwks_with_limits(
            relationship.trust_domain.clone(),
            &body,
            &self.limits.bundle,
        )
        .map_err(|source| FetchError::BadJwks {
            url: url.to_owned(),
            source,
        })?;
        check_bundle(url, &relationship.trust_domain, &bundle)?;
        Ok(bundle)
    }

    /// `GET` over the established connection; the body, bounded.
    async fn get(
        &self,
        url: &str,
        target: &Target,
        tls: tokio_rustls::client::TlsStream<TcpStream>,
    ) -> Result<Vec<u8>, FetchError> {
        let http_err = |e: &dyn std::fmt::Display| FetchError::Http {
            url: url.to_owned(),
            reason: e.to_string(),
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| http_err(&e))?;
        // The connection task ends with the response (or with this fetch's timeout).
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let _abort = AbortOnDrop(conn);
        let request = http::Request::get(target.path_and_query.as_str())
            .header(http::header::HOST, target.authority.as_str())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::CONNECTION, "close")
            .body(axum::body::Body::empty())
            .map_err(|e| http_err(&e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| http_err(&e))?;
        if response.status() != http::StatusCode::OK {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: response.status().as_u16(),
            });
        }
        let limit = self.limits.bundle.max_jwks_bytes;
        let too_large = || FetchError::TooLarge {
            url: url.to_owned(),
            limit,
        };
        let declared = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut body = response.into_body();
        let mut out = Vec::with_capacity(declared.map_or(4096, |n| n as usize).min(limit));
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = frame.map_err(|e| http_err(&e))?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > limit {
                    return Err(too_large());
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out)
    }
}

/// Adds to a failed handshake what to check for the endpoint's profile.
fn with_advice(e: FetchError, profile: &EndpointProfile) -> FetchError {
    let FetchError::Tls { url, reason } = e else {
        return e;
    };
    let check = match profile {
        EndpointProfile::HttpsWeb => "profile https_web: the endpoint's certificate must be valid now, chain to a root this server trusts (the system's, or SSL_CERT_FILE / SSL_CERT_DIR) and name the URL's host".to_owned(),
        EndpointProfile::HttpsSpiffe { endpoint_spiffe_id } => format!(
            "profile https_spiffe: the endpoint's X.509-SVID must be valid now and chain to the bundle held for {td} (see `bundle list`); if {td}'s CA changed while it was unreachable, bootstrap it again with `bundle set`",
            td = endpoint_spiffe_id.trust_domain()
        ),
    };
    FetchError::Tls {
        url,
        reason: format!("{reason}; {check}"),
    }
}

/// Where the refresher gets bundles: a [`Fetcher`] in the server; tests script their own.
pub trait BundleSource: std::fmt::Debug + Clone + Send + Sync + 'static {
    /// The bundle of `relationship.trust_domain`, as [`Fetcher::fetch`] gets it.
    fn fetch_bundle<'a>(
        &'a self,
        relationship: &'a Relationship,
        held: &'a BTreeMap<TrustDomain, Arc<Bundle>>,
    ) -> impl std::future::Future<Output = Result<Bundle, FetchError>> + Send + 'a;
}

impl BundleSource for Fetcher {
    fn fetch_bundle<'a>(
        &'a self,
        relationship: &'a Relationship,
        held: &'a BTreeMap<TrustDomain, Arc<Bundle>>,
    ) -> impl std::future::Future<Output = Result<Bundle, FetchError>> + Send + 'a {
        self.fetch(relationship, held)
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What to connect to, from the URL.
#[derive(Debug)]
struct Target {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    authority: String,
    path_and_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, FetchError> {
        let bad = |reason: &str| FetchError::BadUrl {
            url: url.chars().take(200).collect(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a valid URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("must start with https://"));
        }
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| bad("the host is not a valid DNS name or IP address"))?;
        let path_and_query = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        Ok(Self {
            port: authority.port_u16().unwrap_or(443),
            authority: authority.as_str().to_owned(),
            host,
            server_name,
            path_and_query,
        })
    }
}

/// A fetched bundle must name only its own trust domain and trust something.
fn check_bundle(url: &str, trust_domain: &TrustDomain, bundle: &Bundle) -> Result<(), FetchError> {
    if bundle.is_empty() {
        return Err(FetchError::Empty {
            url: url.to_owned(),
            trust_domain: trust_domain.clone(),
        });
    }
    for authority in bundle.x509_authorities() {
        if let Some(found) = foreign_trust_domain(authority.der(), trust_domain) {
            return Err(FetchError::WrongTrustDomain {
                url: url.to_owned(),
                expected: trust_domain.clone(),
                found,
            });
        }
    }
    Ok(())
}

/// The trust domain named by a `spiffe://` URI SAN of `der`, if it is not `own`.
pub(crate) fn foreign_trust_domain(der: &[u8], own: &TrustDomain) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok().flatten()?;
    san.value.general_names.iter().find_map(|name| {
        let GeneralName::URI(uri) = name else {
            return None;
        };
        let rest = uri.strip_prefix("spiffe://")?;
        let td = rest.split('/').next().unwrap_or_default();
        (!td.eq_ignore_ascii_case(own.as_str())).then(|| td.chars().take(255).collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_into_host_port_and_path() {
        let t = Target::parse("https://partner.example:8443/bundle?x=1").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("partner.example", 8443));
        assert_eq!(t.path_and_query, "/bundle?x=1");
        assert_eq!(t.authority, "partner.example:8443");
        let t = Target::parse("https://[::1]").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path_and_query.as_str()),
            ("::1", 443, "/")
        );
        for bad in [
            "http://x.example/",
            "https://",
            "not a url",
            "https://bad_host!/",
        ] {
            let err = Target::parse(bad).unwrap_err();
            assert!(matches!(err, FetchError::BadUrl { .. }), "{bad}: {err}");
        }
    }
}
