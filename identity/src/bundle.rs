//! [`Bundle`]: a trust domain's X.509 and JWT authorities, with its JWKS and PEM encodings.

mod authority;
mod der;
mod encoding;
mod error;
mod jwks;
mod key;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;

use serde::{Deserialize, Serialize};

pub use self::authority::{JwtAuthority, X509Authority, MAX_KEY_ID_LEN};
pub use self::error::{BundleError, JwkError, KeyIdError};
pub use self::key::{EcCurve, KeyError, PublicKey};
use crate::TrustDomain;

/// Bounds on a JWKS document taken from a peer (a federated bundle endpoint, an API call).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BundleLimits {
    /// Largest document, in bytes (default 2 MiB).
    pub max_jwks_bytes: usize,
    /// Most elements in `keys` (default 1024).
    pub max_keys: usize,
}

impl Default for BundleLimits {
    fn default() -> Self {
        Self {
            max_jwks_bytes: 2 * 1024 * 1024,
            max_keys: 1024,
        }
    }
}

/// The trust material of one trust domain: X.509 authorities (CA certificates) and JWT
/// authorities (signing keys), with the sequence number and refresh hint of the SPIFFE bundle
/// format.
///
/// Invariants: X.509 authorities are distinct certificates; JWT key IDs are valid and unique;
/// a taint mark names an authority of the bundle (removing an authority removes its mark).
/// Serializes (serde) as a struct with the same invariants checked on the way in.
///
/// Taint marks (SPIRE's `tainted` flag: an authority an operator no longer trusts to have
/// signed what is still in use, so holders re-sign) are not part of the serde form: that form
/// is stored in the event log (federated bundles), whose records never change shape. The
/// server derives the marks from its authority events and the wire carries them in SPIRE's
/// `tainted` fields; a bundle read back from serde has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BundleData", into = "BundleData")]
pub struct Bundle {
    trust_domain: TrustDomain,
    x509_authorities: Vec<X509Authority>,
    jwt_authorities: Vec<JwtAuthority>,
    sequence_number: u64,
    refresh_hint: Option<u64>,
    /// DER of the tainted X.509 authorities (each one of `x509_authorities`).
    tainted_x509: BTreeSet<Vec<u8>>,
    /// Key IDs of the tainted JWT authorities (each one of `jwt_authorities`).
    tainted_jwt: BTreeSet<String>,
}

impl Bundle {
    /// An empty bundle (no authorities, sequence number 0, no refresh hint).
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            sequence_number: 0,
            refresh_hint: None,
            tainted_x509: BTreeSet::new(),
            tainted_jwt: BTreeSet::new(),
        }
    }

    /// The trust domain the bundle is for (recorded next to, not inside, its JWKS form).
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The X.509 authorities, in insertion order.
    pub fn x509_authorities(&self) -> &[X509Authority] {
        &self.x509_authorities
    }

    /// The JWT authorities, in insertion order.
    pub fn jwt_authorities(&self) -> &[JwtAuthority] {
        &self.jwt_authorities
    }

    /// The JWT authority with key ID `key_id`.
    pub fn jwt_authority(&self, key_id: &str) -> Option<&JwtAuthority> {
        self.jwt_authorities.iter().find(|a| a.key_id == key_id)
    }

    /// The `spiffe_sequence`: bumped by the publisher on every change.
    pub fn sequence_number(&self) -> u64 {
        self.sequence_number
    }

    /// The `spiffe_refresh_hint` in seconds, if any.
    pub fn refresh_hint(&self) -> Option<u64> {
        self.refresh_hint
    }

    /// Sets the sequence number.
    pub fn set_sequence_number(&mut self, sequence_number: u64) {
        self.sequence_number = sequence_number;
    }

    /// Sets the refresh hint, in seconds.
    pub fn set_refresh_hint(&mut self, refresh_hint: Option<u64>) {
        self.refresh_hint = refresh_hint;
    }

    /// Adds an X.509 authority; returns `false` (and changes nothing) if it is already there.
    pub fn add_x509_authority(&mut self, authority: X509Authority) -> bool {
        if self.x509_authorities.contains(&authority) {
            return false;
        }
        self.x509_authorities.push(authority);
        true
    }

    /// Removes the X.509 authority with these DER bytes; returns whether one was there.
    pub fn remove_x509_authority(&mut self, der: &[u8]) -> bool {
        let before = self.x509_authorities.len();
        self.x509_authorities.retain(|a| a.der() != der);
        self.tainted_x509.remove(der);
        self.x509_authorities.len() != before
    }

    /// Marks the X.509 authority with these DER bytes tainted; returns `false` (and changes
    /// nothing) if the bundle has no such authority or it is already tainted.
    pub fn taint_x509_authority(&mut self, der: &[u8]) -> bool {
        if !self.x509_authorities.iter().any(|a| a.der() == der) {
            return false;
        }
        self.tainted_x509.insert(der.to_vec())
    }

    /// Whether the X.509 authority with these DER bytes is in the bundle and tainted.
    pub fn is_x509_authority_tainted(&self, der: &[u8]) -> bool {
        self.tainted_x509.contains(der)
    }

    /// The tainted X.509 authorities, in insertion order.
    pub fn tainted_x509_authorities(&self) -> impl Iterator<Item = &X509Authority> + '_ {
        self.x509_authorities
            .iter()
            .filter(|a| self.tainted_x509.contains(a.der()))
    }

    /// Marks the JWT authority with key ID `key_id` tainted; returns `false` (and changes
    /// nothing) if the bundle has no such key or it is already tainted.
    pub fn taint_jwt_authority(&mut self, key_id: &str) -> bool {
        if self.jwt_authority(key_id).is_none() {
            return false;
        }
        self.tainted_jwt.insert(key_id.to_owned())
    }

    /// Whether the JWT authority with key ID `key_id` is in the bundle and tainted.
    pub fn is_jwt_authority_tainted(&self, key_id: &str) -> bool {
        self.tainted_jwt.contains(key_id)
    }

    /// Key IDs of the tainted JWT authorities, sorted.
    pub fn tainted_jwt_key_ids(&self) -> impl Iterator<Item = &str> + '_ {
        self.tainted_jwt.iter().map(String::as_str)
    }

    /// Whether any authority of the bundle is tainted.
    pub fn has_taints(&self) -> bool {
        !self.tainted_x509.is_empty() || !self.tainted_jwt.is_empty()
    }

    /// Adds a JWT authority. Adding one identical to a present one is a no-op.
    ///
    /// # Errors
    /// A [`KeyIdError`] if the key ID is empty, too long or has control characters, or if
    /// another key already uses it.
    pub fn add_jwt_authority(&mut self, authority: JwtAuthority) -> Result<(), KeyIdError> {
        authority::check_key_id(&authority.key_id)?;
        match self.jwt_authority(&authority.key_id) {
            Some(present) if *present == authority => Ok(()),
            Some(_) => Err(KeyIdError::Duplicate {
                kid: crate::id_error::shown(&authority.key_id),
            }),
            None => {
                self.jwt_authorities.push(authority);
                Ok(())
            }
        }
    }

    /// Removes and returns the JWT authority with key ID `key_id`.
    pub fn remove_jwt_authority(&mut self, key_id: &str) -> Option<JwtAuthority> {
        let at = self
            .jwt_authorities
            .iter()
            .position(|a| a.key_id == key_id)?;
        self.tainted_jwt.remove(key_id);
        Some(self.jwt_authorities.remove(at))
    }

    /// Whether the bundle has no authority of either kind.
    pub fn is_empty(&self) -> bool {
        self.x509_authorities.is_empty() && self.jwt_authorities.is_empty()
    }

    /// The bundle as a SPIFFE bundle JWKS document (what a bundle endpoint serves): one
    /// `x509-svid` key per X.509 authority (its certificate in `x5c` and its key parameters)
    /// and one `jwt-svid` key per JWT authority, with `spiffe_sequence` and, when set,
    /// `spiffe_refresh_hint`.
    ///
    /// # Errors
    /// [`BundleError::AuthorityKey`] if an X.509 authority's key is neither EC nor RSA.
    pub fn to_jwks(&self) -> Result<String, BundleError> {
        jwks::encode(self)
    }

    /// Reads a SPIFFE bundle JWKS document as the bundle of `trust_domain`, with the default
    /// [`BundleLimits`].
    ///
    /// # Errors
    /// A [`BundleError`] naming what is wrong (and, for a bad key, its position in `keys`).
    pub fn from_jwks(trust_domain: TrustDomain, doc: &[u8]) -> Result<Self, BundleError> {
        jwks::decode(trust_domain, doc, &BundleLimits::default())
    }

    /// [`Bundle::from_jwks`] with explicit limits.
    ///
    /// # Errors
    /// As [`Bundle::from_jwks`], and when the document exceeds `limits`.
    pub fn from_jwks_with_limits(
        trust_domain: TrustDomain,
        doc: &[u8],
        limits: &BundleLimits,
    ) -> Result<Self, BundleError> {
        jwks::decode(trust_domain, doc, limits)
    }

    /// The X.509 authorities as concatenated PEM `CERTIFICATE` blocks.
    pub fn x509_authorities_pem(&self) -> String {
        self.x509_authorities
            .iter()
            .map(X509Authority::to_pem)
            .collect()
    }

    /// A bundle of `trust_domain` whose X.509 authorities are the certificates of a PEM text.
    ///
    /// # Errors
    /// As [`X509Authority::parse_pem`].
    pub fn from_x509_pem(trust_domain: TrustDomain, pem: &str) -> Result<Self, BundleError> {
        let mut bundle = Self::new(trust_domain);
        for authority in X509Authority::parse_pem(pem)? {
            bundle.add_x509_authority(authority);
        }
        Ok(bundle)
    }
}

/// Finds the bundle to check an SVID of a given trust domain against.
pub trait BundleLookup {
    /// The bundle of `trust_domain`, if known.
    fn bundle_for(&self, trust_domain: &TrustDomain) -> Option<&Bundle>;
}

impl BundleLookup for Bundle {
    fn bundle_for(&self, trust_domain: &TrustDomain) -> Option<&Bundle> {
        (self.trust_domain == *trust_domain).then_some(self)
    }
}

impl BundleLookup for [Bundle] {
    fn bundle_for(&self, trust_domain: &TrustDomain) -> Option<&Bundle> {
        self.iter().find(|b| b.trust_domain == *trust_domain)
    }
}

impl BundleLookup for Vec<Bundle> {
    fn bundle_for(&self, trust_domain: &TrustDomain) -> Option<&Bundle> {
        self.as_slice().bundle_for(trust_domain)
    }
}

impl BundleLookup for BTreeMap<TrustDomain, Bundle> {
    fn bundle_for(&self, trust_domain: &TrustDomain) -> Option<&Bundle> {
        self.get(trust_domain)
    }
}

impl<S: BuildHasher> BundleLookup for HashMap<TrustDomain, Bundle, S> {
    fn bundle_for(&self, trust_domain: &TrustDomain) -> Option<&Bundle> {
        self.get(trust_domain)
    }
}

/// The serde shape of [`Bundle`]; converting back re-checks the invariants.
#[derive(Serialize, Deserialize)]
struct BundleData {
    trust_domain: TrustDomain,
    x509_authorities: Vec<X509Authority>,
    jwt_authorities: Vec<JwtAuthority>,
    sequence_number: u64,
    refresh_hint: Option<u64>,
}

impl From<Bundle> for BundleData {
    fn from(b: Bundle) -> Self {
        Self {
            trust_domain: b.trust_domain,
            x509_authorities: b.x509_authorities,
            jwt_authorities: b.jwt_authorities,
            sequence_number: b.sequence_number,
            refresh_hint: b.refresh_hint,
        }
    }
}

impl TryFrom<BundleData> for Bundle {
    type Error = KeyIdError;

    fn try_from(d: BundleData) -> Result<Self, Self::Error> {
        let mut b = Bundle::new(d.trust_domain);
        b.sequence_number = d.sequence_number;
        b.refresh_hint = d.refresh_hint;
        for a in d.x509_authorities {
            b.add_x509_authority(a);
        }
        for a in d.jwt_authorities {
            b.add_jwt_authority(a)?;
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests;
