//! The bundle endpoint (SPIFFE Federation §4–5): `GET /` over HTTPS answers this trust
//! domain's bundle as a SPIFFE bundle JWKS (`spiffe_sequence` is the bundle's sequence number,
//! `spiffe_refresh_hint` the configured hint), read live from the authority so a rotation is
//! served at once.
//!
//! The TLS certificate is the server's own X.509-SVID for `https_spiffe`, renewed at half its
//! life, or a Web PKI certificate from files for `https_web`, reloaded when the files change
//! ([`cert`]). No client certificate is asked for.
//!
//! Bounded: connections at once (over the limit a connection is closed at accept), handshake
//! time, header size, one request per connection, and a deadline for the whole connection.
//! Must not: serve anything but the own bundle, or block a handshake on disk.

pub mod cert;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::server::ResolvesServerCert;
use tessera_eventlog::Clock;
use tessera_identity::Bundle;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::agent_api::tls::ClockTime;

/// Bounds of the bundle endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointLimits {
    /// Connections open at once (`limits.federation.endpoint_max_connections`).
    pub max_connections: usize,
    /// Longest TLS handshake.
    pub handshake_timeout: Duration,
    /// Longest a connection may stay open, handshake included
    /// (`limits.federation.endpoint_connection_timeout`).
    pub connection_timeout: Duration,
    /// Largest request head, bytes.
    pub max_header_bytes: usize,
}

impl Default for EndpointLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            connection_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
        }
    }
}

/// Why the bundle endpoint cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The TLS configuration cannot be built (no usable protocol versions: a bug).
    #[error("bundle endpoint TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// `https_spiffe`: the server's own SVID cannot be issued.
    #[error("bundle endpoint: cannot issue the server's X.509-SVID: {0}")]
    ServerSvid(String),
    /// `https_web`: the certificate or key file is unusable.
    #[error("federation.bundle_endpoint.https_web.{key} {path}: {reason}")]
    WebCert {
        /// `cert_file_path` or `key_file_path`.
        key: &'static str,
        /// The file.
        path: String,
        /// What is wrong, and the fix.
        reason: String,
    },
    /// Accepting connections failed.
    #[error("bundle endpoint: accept failed: {0}")]
    Accept(std::io::Error),
}

/// A rustls server config presenting what `certs` resolves, HTTP/1.1, no client auth, time from
/// `clock`.
///
/// # Errors
/// [`EndpointError::Tls`] if rustls refuses the protocol versions (a bug).
pub fn server_config(
    certs: Arc<dyn ResolvesServerCert>,
    clock: Arc<dyn Clock>,
) -> Result<Arc<rustls::ServerConfig>, EndpointError> {
    let mut config = rustls::ServerConfig::builder_with_details(
        tessera_edge::tls::provider(),
        Arc::new(ClockTime(clock)),
    )
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What the endpoint serves: the own bundle as it is now, and the hint to give.
#[derive(Debug, Clone)]
pub struct Published {
    /// The authority's bundle (`AuthorityHandle::subscribe_bundle`).
    pub bundle: watch::Receiver<Option<Bundle>>,
    /// `spiffe_refresh_hint` (`federation.bundle_endpoint.refresh_hint`).
    pub refresh_hint: Duration,
}

impl Published {
    /// The JWKS document to serve, or why there is none.
    fn document(&self) -> Result<String, (StatusCode, &'static str)> {
        let Some(mut bundle) = self.bundle.borrow().clone() else {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the trust bundle is not ready yet; retry shortly\n",
            ));
        };
        bundle.set_refresh_hint(Some(self.refresh_hint.as_secs().max(1)));
        bundle.to_jwks().map_err(|e| {
            tracing::error!(error = %e, "bundle endpoint: cannot encode the bundle as JWKS");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the bundle cannot be encoded\n",
            )
        })
    }
}

/// Serves the bundle endpoint on `listener` with `tls` until `shutdown`; in-flight
/// connections then get up to `limits.connection_timeout` to finish.
///
/// # Errors
/// [`EndpointError::Accept`] if the listener fails for good.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    published: Published,
    limits: EndpointLimits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EndpointError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, remote) = match accepted {
                    Ok(a) => a,
                    // Per-connection failures (reset before accept, fd exhaustion): go on.
                    Err(e) if is_transient(&e) => {
                        tracing::debug!(error = %e, "bundle endpoint: accept");
                        if is_out_of_descriptors(&e) {
                            // Accepting again at once would spin until a descriptor frees.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        continue;
                    }
                    Err(e) => break Err(EndpointError::Accept(e)),
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::debug!(%remote, "bundle endpoint: connection limit reached; closing");
                    continue;
                };
                let acceptor = acceptor.clone();
                let published = published.clone();
                let limits = limits.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    let served = tokio::time::timeout(
                        limits.connection_timeout,
                        connection(tcp, acceptor, published, &limits),
                    )
                    .await;
                    if let Ok(Err(e)) = served {
                        tracing::debug!(%remote, error = %e, "bundle endpoint connection");
                    }
                });
            }
        }
    };
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.connection_timeout, drain)
        .await
        .is_err()
    {
        connections.abort_all();
    }
    result
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || is_out_of_descriptors(e)
}

/// ENFILE or EMFILE (Linux numbers).
fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    e.raw_os_error().is_some_and(|c| c == 23 || c == 24)
}

/// One connection: handshake, one request, close.
async fn connection(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    published: Published,
    limits: &EndpointLimits,
) -> Result<(), String> {
    let tls = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let response = respond(&request, &published);
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(false)
        .serve_connection(TokioIo::new(tls), service)
        .await
        .map_err(|e| e.to_string())
}

/// `GET /`: the bundle; other paths 404; other methods 405.
fn respond(request: &Request<Incoming>, published: &Published) -> Response<Body> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut r = Response::new(Body::from(text));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if request.uri().path() != "/" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the bundle endpoint serves the bundle at /\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match published.document() {
        Ok(doc) => {
            let mut r = Response::new(if request.method() == Method::HEAD {
                Body::empty()
            } else {
                Body::from(doc)
            });
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err((status, text)) => plain(status, text),
    }
}
