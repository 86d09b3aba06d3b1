//! The workload's live TLS material: its current X.509-SVID (certificate chain and key) and the
//! X.509 authorities of every trust domain it trusts (its own and federated ones). Handshakes
//! read it each time, so a rotated SVID or bundle is used by the next connection without a
//! restart, and connections already open are not disturbed.
//!
//! It is fed by the Workload API ([`follow_source`], an `X509Source`) or by Envoy SDS (the
//! `sds-caller`); this module knows nothing of sockets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use spiffe::x509_source::X509SourceState;
use spiffe::X509Source;
use tokio::sync::watch;

use crate::verify::{cert_info, CertInfo, CertInfoError};

/// Authorities per trust domain name (`platform.example` → CA certificates).
pub type TrustMap = HashMap<String, Vec<CertificateDer<'static>>>;

/// Why material from the Workload API (or SDS) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    /// The SVID came with no certificate.
    #[error("the SVID has no certificate: the agent sent an empty chain")]
    EmptyChain,
    /// The leaf certificate cannot be read.
    #[error("the SVID's certificate: {0}")]
    Cert(#[from] CertInfoError),
    /// The leaf names no SPIFFE ID.
    #[error("the SVID's certificate has no spiffe:// URI SAN: it is not an X.509-SVID")]
    NoSpiffeId,
    /// rustls cannot sign with the key.
    #[error("the SVID's private key is not a key rustls can sign with (PKCS#8 EC or RSA): {0}")]
    Key(rustls::Error),
    /// The Workload API source failed or was closed.
    #[error("the Workload API: {0}")]
    Source(#[from] spiffe::X509SourceError),
}

/// The current SVID, ready for rustls.
#[derive(Debug)]
pub struct Identity {
    /// Its SPIFFE ID.
    pub spiffe_id: String,
    /// Its leaf certificate's serial, hex.
    pub serial: String,
    /// Its leaf certificate's expiry, Unix seconds.
    pub not_after: i64,
    /// Chain and signing key for rustls.
    pub key: Arc<CertifiedKey>,
}

/// See the module doc.
#[derive(Debug)]
pub struct Material {
    identity: RwLock<Option<Arc<Identity>>>,
    withdrawn: AtomicBool,
    keep_withdrawn: bool,
    trust: RwLock<Arc<TrustMap>>,
    revision: watch::Sender<u64>,
}

impl Material {
    /// Empty: no identity, no trust.
    pub fn new() -> Arc<Self> {
        Self::with_policy(false)
    }

    /// Like [`Material::new`], but an identity the agent withdraws is still presented until
    /// it expires: what a compromised workload that copied its key would do. The examples use
    /// it to show that the *service* stops such a caller once the SVID expires.
    pub fn keeping_withdrawn() -> Arc<Self> {
        Self::with_policy(true)
    }

    fn with_policy(keep_withdrawn: bool) -> Arc<Self> {
        Arc::new(Self {
            identity: RwLock::new(None),
            withdrawn: AtomicBool::new(false),
            keep_withdrawn,
            trust: RwLock::new(Arc::new(TrustMap::new())),
            revision: watch::Sender::new(0),
        })
    }

    /// The SVID to present, if any (it may have expired: the peer decides, as it must).
    /// None once the agent has withdrawn it, unless this material keeps withdrawn identities.
    pub fn identity(&self) -> Option<Arc<Identity>> {
        if self.is_withdrawn() && !self.keep_withdrawn {
            return None;
        }
        self.last_identity()
    }

    /// The last SVID received, withdrawn or not.
    pub fn last_identity(&self) -> Option<Arc<Identity>> {
        read(&self.identity).clone()
    }

    /// Whether the agent has withdrawn the identity (PermissionDenied: the entry was deleted
    /// or the agent banned) and not given one since.
    pub fn is_withdrawn(&self) -> bool {
        self.withdrawn.load(Ordering::Acquire)
    }

    /// The authorities trusted now, per trust domain.
    pub fn trust(&self) -> Arc<TrustMap> {
        read(&self.trust).clone()
    }

    /// Replaces the SVID with `chain` (leaf first) and its PKCS#8 `key`.
    pub fn set_identity(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<(), MaterialError> {
        let leaf = chain.first().ok_or(MaterialError::EmptyChain)?;
        let CertInfo {
            spiffe_id,
            serial,
            not_after,
        } = cert_info(leaf)?;
        let spiffe_id = spiffe_id.ok_or(MaterialError::NoSpiffeId)?;
        let signer =
            rustls::crypto::ring::sign::any_supported_type(&key).map_err(MaterialError::Key)?;
        let identity = Identity {
            spiffe_id,
            serial,
            not_after,
            key: Arc::new(CertifiedKey::new(chain, signer)),
        };
        *write(&self.identity) = Some(Arc::new(identity));
        self.withdrawn.store(false, Ordering::Release);
        self.bump();
        Ok(())
    }

    /// The agent withdrew the identity (see [`Material::is_withdrawn`]).
    pub fn withdraw(&self) {
        self.withdrawn.store(true, Ordering::Release);
        self.bump();
    }

    /// Replaces the trusted authorities.
    pub fn set_trust(&self, trust: TrustMap) {
        *write(&self.trust) = Arc::new(trust);
        self.bump();
    }

    /// A receiver that sees a new revision on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    fn bump(&self) {
        self.revision.send_modify(|r| *r += 1);
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Copies the source's current SVID and bundles into `material`, then keeps doing so on every
/// update until the source closes. A withdrawn identity (PermissionDenied: entry deleted or
/// agent banned) is marked so; a lost connection to the agent keeps the last one, as the
/// `spiffe` crate does.
pub fn follow_source(
    source: Arc<X509Source>,
    material: Arc<Material>,
) -> Result<tokio::task::JoinHandle<()>, MaterialError> {
    apply(&source.state(), &material)?;
    let mut updates = source.updated();
    Ok(tokio::spawn(async move {
        while updates.changed().await.is_ok() {
            if let Err(e) = apply(&source.state(), &material) {
                eprintln!("ignoring an update from the Workload API: {e}");
            }
        }
    }))
}

fn apply(state: &X509SourceState, material: &Material) -> Result<(), MaterialError> {
    if state.withdrawal().is_some() {
        material.withdraw();
        return Ok(());
    }
    let context = state.context()?;
    let mut trust = TrustMap::new();
    for (td, bundle) in context.bundle_set().iter() {
        let cas = bundle.authorities().iter();
        let cas = cas.map(|c| CertificateDer::from(c.as_bytes().to_vec()));
        trust.insert(td.to_string(), cas.collect());
    }
    material.set_trust(trust);
    if let Some(svid) = context.default_svid() {
        let chain = svid.cert_chain().iter();
        let chain = chain.map(|c| CertificateDer::from(c.as_bytes().to_vec()));
        let key = PrivatePkcs8KeyDer::from(svid.private_key().as_bytes().to_vec());
        material.set_identity(chain.collect(), PrivateKeyDer::Pkcs8(key))?;
    }
    Ok(())
}
