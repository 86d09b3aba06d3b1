//! The server's own X.509-SVID (`spiffe://<td>/spire/server`) for the agent API's TLS: issued
//! by the authority at start, renewed at half its lifetime (at once when a bundle change
//! taints or revokes the CA it chains to: forced rotation), and the live bundle kept in step
//! with CA rotation, so agents with SVIDs from a new CA are accepted at once.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use tessera_actors::agent::taint::BundleIndex;
use tessera_actors::server::authority::{AuthorityHandle, X509SvidRequest};
use tessera_eventlog::Clock;
use tessera_identity::{SpiffeId, SERVER_PATH};

use super::tls::LiveTls;
use super::{AgentApiDeps, AgentApiError};

/// Issues the first server SVID, starts the renewal and bundle tasks, returns the live TLS
/// material.
pub async fn start(deps: &AgentApiDeps) -> Result<Arc<LiveTls>, AgentApiError> {
    let authority = deps.authority.clone();
    if authority.bundle().is_none() {
        authority
            .tick()
            .await
            .map_err(|e| AgentApiError::ServerSvid(format!("first CA rotation failed: {e}")))?;
    }
    let bundle = authority.bundle().ok_or_else(|| {
        AgentApiError::ServerSvid("the authority has no bundle after its first tick".into())
    })?;
    let server_id = SpiffeId::from_path(&deps.server.settings.trust_domain, SERVER_PATH)
        .map_err(|e| AgentApiError::ServerSvid(e.to_string()))?;
    let live = Arc::new(LiveTls::new(bundle));
    let clock = deps.server.clock.clone();
    let (key, lifetime) = issue(&authority, &server_id, clock.as_ref()).await?;
    let mut chain = chain_of(&key);
    live.set_server_key(key);

    let task_live = live.clone();
    tokio::spawn(async move {
        let mut bundles = authority.subscribe_bundle();
        // One sleep across rounds, not a new one per round: bundle changes (every CA
        // rotation, of every server sharing the log) must not put the renewal off.
        let renewal = tokio::time::sleep(lifetime / 2);
        tokio::pin!(renewal);
        loop {
            tokio::select! {
                changed = bundles.changed() => {
                    if changed.is_err() {
                        return; // The authority is gone; the server is stopping.
                    }
                    let current = bundles.borrow_and_update().clone();
                    if let Some(b) = current {
                        // Forced rotation: an SVID of a tainted (or revoked) CA is renewed
                        // now, or agents that trust the new bundle refuse the next connection.
                        if BundleIndex::new(&b).judge(&chain).needs_resign() {
                            tracing::info!("the server SVID chains to a tainted or revoked CA; renewing it now");
                            renewal.set(tokio::time::sleep(Duration::ZERO));
                        }
                        task_live.set_bundle(b);
                    }
                }
                () = &mut renewal => {
                    match issue(&authority, &server_id, clock.as_ref()).await {
                        Ok((key, lifetime)) => {
                            chain = chain_of(&key);
                            task_live.set_server_key(key);
                            renewal.set(tokio::time::sleep(lifetime / 2));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "server SVID renewal failed; retrying in 10 s");
                            renewal.set(tokio::time::sleep(Duration::from_secs(10)));
                        }
                    }
                }
            }
        }
    });
    Ok(live)
}

/// The certificate chain (DER, leaf first) of a server key.
fn chain_of(key: &CertifiedKey) -> Vec<Vec<u8>> {
    key.cert.iter().map(|c| c.as_ref().to_vec()).collect()
}

/// A fresh key pair and an SVID for `server_id` signed by the authority: the TLS key and the
/// SVID's lifetime (also the bundle endpoint's `https_spiffe` certificate).
pub(crate) async fn issue(
    authority: &AuthorityHandle,
    server_id: &SpiffeId,
    clock: &dyn Clock,
) -> Result<(Arc<CertifiedKey>, Duration), AgentApiError> {
    let fail = |e: String| AgentApiError::ServerSvid(e);
    let key = KeyPair::generate().map_err(|e| fail(e.to_string()))?;
    let csr = CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .map_err(|e| fail(e.to_string()))?;
    let mut results = authority
        .sign_server_svid(vec![X509SvidRequest {
            csr_der: csr.der().to_vec(),
            spiffe_id: server_id.clone(),
            dns_names: vec![],
            ttl: None,
        }])
        .await
        .map_err(|e| fail(e.to_string()))?;
    let svid = results
        .pop()
        .ok_or_else(|| fail("the signer returned no result".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = svid
        .cert_chain
        .iter()
        .map(|d| CertificateDer::from(d.clone()))
        .collect();
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )))
        .map_err(|e| fail(e.to_string()))?;
    // What is left of it from now (its not_before is backdated, and the CA's own expiry may
    // have cut it short), so that half of it is a renewal time that comes before expiry.
    let now = clock.now_unix_nanos() / 1_000_000_000;
    let left = svid.not_after.saturating_sub(now);
    let lifetime = Duration::from_secs(u64::try_from(left).unwrap_or(0).max(2));
    Ok((Arc::new(CertifiedKey::new(chain, signing_key)), lifetime))
}
