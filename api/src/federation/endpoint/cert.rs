//! The bundle endpoint's certificate, swapped in place while connections are served:
//!
//! - `https_spiffe`: the server's own X.509-SVID (`spiffe://<td>/spire/server`), issued by the
//!   authority at start and renewed at half its life (as the agent API's, `agent_api`);
//! - `https_web`: a PEM certificate chain and private key from files, checked for changes
//!   every [`WEB_RELOAD_EVERY`] and reloaded when their modification time or size changes (a
//!   bad new pair is logged and the old one kept).
//!
//! Must not: read files or sign during a handshake (the resolver only reads memory).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tessera_actors::server::authority::AuthorityHandle;
use tessera_eventlog::Clock;
use tessera_identity::{SpiffeId, TrustDomain, SERVER_PATH};

use super::EndpointError;

/// How often the `https_web` files are checked for changes.
pub const WEB_RELOAD_EVERY: Duration = Duration::from_secs(30);

/// Retry delay of a failed SVID renewal.
const RENEW_RETRY: Duration = Duration::from_secs(10);

/// The certificate presented now; replaced as it renews.
#[derive(Debug, Default)]
pub struct LiveCert {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl LiveCert {
    /// Replaces the certificate.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(key);
    }

    /// The certificate now.
    pub fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

impl ResolvesServerCert for LiveCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

// === https_spiffe ===

/// Issues the server's SVID for the endpoint and keeps it renewed until `shutdown`.
///
/// # Errors
/// [`EndpointError::ServerSvid`] if the first SVID cannot be issued.
pub async fn spiffe(
    authority: AuthorityHandle,
    trust_domain: &TrustDomain,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(Arc<LiveCert>, tokio::task::JoinHandle<()>), EndpointError> {
    let id = SpiffeId::from_path(trust_domain, SERVER_PATH)
        .map_err(|e| EndpointError::ServerSvid(e.to_string()))?;
    let live = Arc::new(LiveCert::default());
    let (key, lifetime) = issue(&authority, &id, clock.as_ref()).await?;
    live.set(key);
    let task_live = live.clone();
    let task = tokio::spawn(async move {
        tokio::pin!(shutdown);
        let mut renew_in = lifetime / 2;
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(renew_in) => {}
            }
            match issue(&authority, &id, clock.as_ref()).await {
                Ok((key, lifetime)) => {
                    task_live.set(key);
                    renew_in = lifetime / 2;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "bundle endpoint SVID renewal failed; retrying in {RENEW_RETRY:?}");
                    renew_in = RENEW_RETRY;
                }
            }
        }
    });
    Ok((live, task))
}

/// The server SVID for the endpoint (the agent API's issuing path).
async fn issue(
    authority: &AuthorityHandle,
    id: &SpiffeId,
    clock: &dyn Clock,
) -> Result<(Arc<CertifiedKey>, Duration), EndpointError> {
    crate::agent_api::server_svid::issue(authority, id, clock)
        .await
        .map_err(|e| EndpointError::ServerSvid(e.to_string()))
}

// === https_web ===

/// Loads the `https_web` pair now and reloads it when the files change, until `shutdown`.
///
/// # Errors
/// [`EndpointError::WebCert`] if the files are unusable at start.
pub fn web(
    cert_path: PathBuf,
    key_path: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(Arc<LiveCert>, tokio::task::JoinHandle<()>), EndpointError> {
    let live = Arc::new(LiveCert::default());
    live.set(Arc::new(load_web(&cert_path, &key_path)?));
    let mut seen = stamps(&cert_path, &key_path);
    let task_live = live.clone();
    let task = tokio::spawn(async move {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(WEB_RELOAD_EVERY) => {}
            }
            let now = stamps(&cert_path, &key_path);
            if now == seen {
                continue;
            }
            let (c, k) = (cert_path.clone(), key_path.clone());
            match tokio::task::spawn_blocking(move || load_web(&c, &k)).await {
                Ok(Ok(key)) => {
                    task_live.set(Arc::new(key));
                    seen = now;
                    tracing::info!(cert = %cert_path.display(), "bundle endpoint: https_web certificate reloaded");
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "bundle endpoint: keeping the previous https_web certificate");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "bundle endpoint: certificate reload task failed")
                }
            }
        }
    });
    Ok((live, task))
}

/// Modification time and size of both files (`None` where unreadable).
fn stamps(cert: &Path, key: &Path) -> [Option<(SystemTime, u64)>; 2] {
    let stamp = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    [stamp(cert), stamp(key)]
}

/// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, SEC1 or PKCS#1).
///
/// # Errors
/// [`EndpointError::WebCert`] naming the file and the problem.
pub fn load_web(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, EndpointError> {
    let err = |key: &'static str, path: &Path, reason: String| EndpointError::WebCert {
        key,
        path: path.display().to_string(),
        reason,
    };
    let read = |key: &'static str, path: &Path| {
        std::fs::read(path)
            .map_err(|e| err(key, path, format!("cannot read it: {e}")))
            .and_then(|b| pem::parse_many(&b).map_err(|e| err(key, path, format!("not PEM: {e}"))))
    };
    let chain: Vec<CertificateDer<'static>> = read("cert_file_path", cert_path)?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    if chain.is_empty() {
        return Err(err(
            "cert_file_path",
            cert_path,
            "holds no CERTIFICATE block; give the PEM certificate chain, leaf first".into(),
        ));
    }
    let key = read("key_file_path", key_path)?
        .into_iter()
        .find_map(|p| match p.tag() {
            "PRIVATE KEY" => Some(PrivateKeyDer::Pkcs8(p.into_contents().into())),
            "EC PRIVATE KEY" => Some(PrivateKeyDer::Sec1(p.into_contents().into())),
            "RSA PRIVATE KEY" => Some(PrivateKeyDer::Pkcs1(p.into_contents().into())),
            _ => None,
        })
        .ok_or_else(|| {
            err(
                "key_file_path",
                key_path,
                "holds no PRIVATE KEY block; give the certificate's unencrypted PEM key".into(),
            )
        })?;
    let signing_key = tessera_edge::tls::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| err("key_file_path", key_path, format!("unusable key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| {
        err(
            "key_file_path",
            key_path,
            format!("does not match the certificate in cert_file_path: {e}"),
        )
    })?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};

    use super::*;

    #[test]
    fn web_pairs_load_and_bad_files_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cp, kp) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cp, cert.pem()).unwrap();
        std::fs::write(&kp, key.serialize_pem()).unwrap();
        let loaded = load_web(&cp, &kp).unwrap();
        assert_eq!(loaded.cert.len(), 1);
        assert_eq!(loaded.cert[0].as_ref(), cert.der().as_ref());

        let other = KeyPair::generate().unwrap();
        std::fs::write(&kp, other.serialize_pem()).unwrap();
        let e = load_web(&cp, &kp).unwrap_err().to_string();
        assert!(
            e.contains("key_file_path") && e.contains("does not match"),
            "{e}"
        );
        std::fs::write(&cp, "no pem here").unwrap();
        let e = load_web(&cp, &kp).unwrap_err().to_string();
        assert!(
            e.contains("cert_file_path") && e.contains("no CERTIFICATE"),
            "{e}"
        );
        let e = load_web(&dir.path().join("absent"), &kp)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read it"), "{e}");
    }
}
