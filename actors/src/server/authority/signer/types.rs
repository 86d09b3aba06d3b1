//! The signer's settings, requests, results, and the CA and key it signs with.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tessera_identity::SpiffeId;

use crate::server::authority::x509::SubjectName;
use crate::server::events::{CaRecord, JwtKeyRecord};
use crate::server::keys::SigningKeyPair;

/// Signing limits and defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerSettings {
    /// X509-SVID lifetime when the request gives none (SPIRE's `default_x509_svid_ttl`, 1 h).
    pub x509_svid_ttl: Duration,
    /// Agent X509-SVID lifetime when the request gives none (SPIRE: the X509-SVID TTL, 1 h).
    pub agent_svid_ttl: Duration,
    /// JWT-SVID lifetime when the request gives none (SPIRE's `default_jwt_svid_ttl`, 5 min).
    pub jwt_svid_ttl: Duration,
    /// Longest X509-SVID lifetime any request gets (default 7 days; the server sets it from
    /// `limits.entry.max_x509_svid_ttl_secs`). Longer requests are shortened, never refused.
    pub max_x509_svid_ttl: Duration,
    /// Longest JWT-SVID lifetime any request gets (default 1 day; the server sets it from
    /// `limits.entry.max_jwt_svid_ttl_secs`).
    pub max_jwt_svid_ttl: Duration,
    /// Signing jobs running at once (default: the number of CPUs).
    pub max_concurrent_jobs: usize,
    /// CSRs and JWTs admitted (queued or signing) at once (default 10 000).
    pub max_queued: usize,
    /// Part of `max_queued` kept for on-demand work (first SVIDs, JWTs, attestation): bulk
    /// renewal is refused once `max_queued - on_demand_reserve` items are queued (default
    /// 1 000; at most half of `max_queued` is reserved).
    pub on_demand_reserve: usize,
    /// CSRs in one batch (default 1 000).
    pub max_batch: usize,
    /// Largest CSR, in bytes (default 16 KiB).
    pub max_csr_bytes: usize,
    /// DNS names in one X509-SVID (default 64).
    pub max_dns_names: usize,
    /// Audiences in one JWT-SVID (default 32).
    pub max_audiences: usize,
    /// Longest audience, in bytes (default 1 024).
    pub max_audience_len: usize,
    /// X509-SVID subject (default `C=US, O=SPIRE`; CN is the first DNS name, if any).
    pub svid_subject: SubjectName,
}

impl Default for SignerSettings {
    fn default() -> Self {
        Self {
            x509_svid_ttl: Duration::from_secs(3600),
            agent_svid_ttl: Duration::from_secs(3600),
            jwt_svid_ttl: Duration::from_secs(300),
            max_x509_svid_ttl: Duration::from_secs(7 * 24 * 3600),
            max_jwt_svid_ttl: Duration::from_secs(24 * 3600),
            max_concurrent_jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_queued: 10_000,
            on_demand_reserve: 1_000,
            max_batch: 1_000,
            max_csr_bytes: 16 * 1024,
            max_dns_names: 64,
            max_audiences: 32,
            max_audience_len: 1024,
            svid_subject: SubjectName::spire_svid(),
        }
    }
}

/// One workload X509-SVID to sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct X509SvidRequest {
    /// The workload's PKCS#10 CSR, DER; only its public key is used.
    pub csr_der: Vec<u8>,
    /// The SPIFFE ID to put in the SVID (from the registration entry, not the CSR).
    pub spiffe_id: SpiffeId,
    /// DNS names to put in the SVID; the first one is also the subject CN.
    pub dns_names: Vec<String>,
    /// Requested lifetime; `None` or zero: the default. Capped at `max_x509_svid_ttl` and
    /// at the CA's expiry.
    pub ttl: Option<Duration>,
}

/// An agent X509-SVID to sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSvidRequest {
    /// The agent's PKCS#10 CSR, DER.
    pub csr_der: Vec<u8>,
    /// The agent's SPIFFE ID.
    pub agent_id: SpiffeId,
    /// Requested lifetime; `None` or zero: the default.
    pub ttl: Option<Duration>,
}

/// A JWT-SVID to mint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtSvidRequest {
    /// The subject.
    pub spiffe_id: SpiffeId,
    /// The audiences (empty strings are dropped; at least one must remain).
    pub audience: Vec<String>,
    /// Requested lifetime; `None` or zero: the default. Capped at `max_jwt_svid_ttl` and at
    /// the key's expiry.
    pub ttl: Option<Duration>,
}

/// A signed X509-SVID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedX509Svid {
    /// Its SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The leaf, then intermediates up to (excluding) the trust anchor, DER.
    pub cert_chain: Vec<Vec<u8>>,
    /// Serial number, hex.
    pub serial_hex: String,
    /// Validity, Unix seconds.
    pub not_before: i64,
    /// Validity, Unix seconds.
    pub not_after: i64,
    /// The CA that signed it.
    pub authority_id: String,
}

/// A signed JWT-SVID. `Debug` hides the token: it is a bearer credential.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSvid {
    /// The compact JWS.
    pub token: String,
    /// `sub`.
    pub spiffe_id: SpiffeId,
    /// `aud`.
    pub audience: Vec<String>,
    /// The signing key's ID.
    pub kid: String,
    /// `iat`, Unix seconds.
    pub issued_at: i64,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
}

impl fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSvid")
            .field("token", &"<redacted>")
            .field("spiffe_id", &self.spiffe_id)
            .field("audience", &self.audience)
            .field("kid", &self.kid)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// An X.509 CA ready to sign: its record and loaded key.
#[derive(Debug, Clone)]
pub struct SigningCa {
    /// The CA.
    pub record: CaRecord,
    pub(super) key: Arc<SigningKeyPair>,
}

impl SigningCa {
    /// Pairs a CA record with its key.
    pub fn new(record: CaRecord, key: Arc<SigningKeyPair>) -> Self {
        Self { record, key }
    }

    /// Certificates after the leaf in an SVID chain: the CA itself unless it is a trust
    /// anchor (self-signed), then its upstream chain.
    pub(super) fn chain_tail(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        let own = (!self.record.trust_anchors.contains(&self.record.cert_der))
            .then(|| self.record.cert_der.clone());
        own.into_iter()
            .chain(self.record.upstream_chain.iter().cloned())
    }
}

/// A JWT key ready to sign.
#[derive(Debug, Clone)]
pub struct SigningJwtKey {
    /// The key's record.
    pub record: JwtKeyRecord,
    pub(super) key: Arc<SigningKeyPair>,
}

impl SigningJwtKey {
    /// Pairs a JWT key record with its key.
    pub fn new(record: JwtKeyRecord, key: Arc<SigningKeyPair>) -> Self {
        Self { record, key }
    }
}
