//! Forced rotation on the agent (SPIRE's tainted authorities): which held X.509-SVIDs chain to
//! an authority the operator tainted, or to none the bundle still holds (revoked before they
//! were re-signed), and which JWT-SVIDs a tainted key signed. Pure: no actor, no clock, no I/O.
//!
//! A certificate of an SVID's chain (leaf or intermediate) is issued by an authority when its
//! Authority Key Identifier equals the authority's Subject Key Identifier; when either is
//! missing, when its issuer name is the authority's subject and the authority's key verifies
//! its signature. A chain that contains the authority itself leads to it too.
//!
//! The agent core re-signs what [`BundleIndex::judge`] calls [`Verdict::Tainted`] or
//! [`Verdict::Orphaned`] at once, in its bounded bulk rounds (see
//! [`crate::agent::svid_cache::plan`]); the cache keeps that set ([`crate::agent::cache`]).

#[cfg(test)]
pub(crate) mod test_pki;
#[cfg(test)]
mod tests;

use base64::Engine;
use tessera_identity::Bundle;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

/// How a chain stands against its trust domain's bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It leads to an authority of the bundle that is not tainted.
    Trusted,
    /// It leads to a tainted authority (and to no untainted one): re-sign it.
    Tainted,
    /// It leads to no authority of the bundle (revoked): re-sign it.
    Orphaned,
    /// It cannot be judged (a chain that does not parse, a bundle without X.509
    /// authorities): left alone.
    Unknown,
}

impl Verdict {
    /// Whether the SVID must be re-signed now.
    pub fn needs_resign(self) -> bool {
        matches!(self, Verdict::Tainted | Verdict::Orphaned)
    }
}

/// One authority of a bundle, parsed once.
struct Authority<'a> {
    der: &'a [u8],
    cert: X509Certificate<'a>,
    ski: Option<&'a [u8]>,
    tainted: bool,
}

/// The X.509 authorities of one bundle, parsed once for judging many chains.
pub struct BundleIndex<'a> {
    authorities: Vec<Authority<'a>>,
}

impl std::fmt::Debug for BundleIndex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleIndex")
            .field("authorities", &self.authorities.len())
            .field(
                "tainted",
                &self.authorities.iter().filter(|a| a.tainted).count(),
            )
            .finish()
    }
}

impl<'a> BundleIndex<'a> {
    /// Parses the X.509 authorities of `bundle` (one that does not parse is left out: it
    /// vouches for nothing).
    pub fn new(bundle: &'a Bundle) -> Self {
        let authorities = bundle
            .x509_authorities()
            .iter()
            .filter_map(|a| {
                let (_, cert) = X509Certificate::from_der(a.der()).ok()?;
                let ski = subject_key_id(&cert);
                Some(Authority {
                    der: a.der(),
                    ski,
                    cert,
                    tainted: bundle.is_x509_authority_tainted(a.der()),
                })
            })
            .collect();
        Self { authorities }
    }

    /// Whether any authority of the bundle is tainted.
    pub fn has_tainted(&self) -> bool {
        self.authorities.iter().any(|a| a.tainted)
    }

    /// How `chain` (DER, leaf first) stands against the bundle.
    pub fn judge(&self, chain: &[Vec<u8>]) -> Verdict {
        if self.authorities.is_empty() || chain.is_empty() {
            return Verdict::Unknown;
        }
        let mut tainted = false;
        for der in chain {
            if let Some(a) = self.authorities.iter().find(|a| a.der == der.as_slice()) {
                if !a.tainted {
                    return Verdict::Trusted;
                }
                tainted = true;
                continue;
            }
            let Ok((_, cert)) = X509Certificate::from_der(der) else {
                return Verdict::Unknown;
            };
            for a in self.authorities.iter().filter(|a| issued_by(&cert, a)) {
                if !a.tainted {
                    return Verdict::Trusted;
                }
                tainted = true;
            }
        }
        if tainted {
            Verdict::Tainted
        } else {
            Verdict::Orphaned
        }
    }
}

/// Whether `chain` (DER, leaf first) leads to a tainted authority of `bundle` and to no
/// untainted one (the agent's own SVID: renewed at once when it does).
pub fn chains_to_tainted(chain: &[Vec<u8>], bundle: &Bundle) -> bool {
    bundle.tainted_x509_authorities().next().is_some()
        && BundleIndex::new(bundle).judge(chain) == Verdict::Tainted
}

/// Whether `cert` was issued by `authority`: by key identifiers when both are there, else
/// by issuer name and signature.
fn issued_by(cert: &X509Certificate<'_>, authority: &Authority<'_>) -> bool {
    if let (Some(aki), Some(ski)) = (authority_key_id(cert), authority.ski) {
        return aki == ski;
    }
    cert.issuer().as_raw() == authority.cert.subject().as_raw()
        && cert
            .verify_signature(Some(authority.cert.public_key()))
            .is_ok()
}

fn subject_key_id<'a>(cert: &X509Certificate<'a>) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
            _ => None,
        })
}

fn authority_key_id<'a>(cert: &X509Certificate<'a>) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(k) => k.key_identifier.as_ref().map(|k| k.0),
            _ => None,
        })
}

/// The `kid` of a compact JWS's protected header, if it has one.
pub fn jwt_key_id(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    // A header is a few hundred bytes; anything far larger is not one of the server's.
    if header.len() > 4_096 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("kid")?.as_str().map(str::to_owned)
}

/// Whether a JWT-SVID `token` was signed by a JWT key that `bundle` marks tainted.
pub fn jwt_signed_by_tainted(token: &str, bundle: &Bundle) -> bool {
    bundle.tainted_jwt_key_ids().next().is_some()
        && jwt_key_id(token).is_some_and(|kid| bundle.is_jwt_authority_tainted(&kid))
}
