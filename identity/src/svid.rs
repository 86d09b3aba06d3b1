//! X.509-SVID validation per the X509-SVID standard (§3-§5): the leaf's SPIFFE-specific rules,
//! the signing certificates' rules, then RFC 5280 path validation to the X.509 authorities of
//! the bundle for the leaf's trust domain, at a time the caller passes in.
//!
//! Parsing and the SPIFFE rules use x509-parser; signatures, validity periods and path building
//! use rustls-webpki (with ring). webpki is asked to accept any extended key usage: the leaf's
//! EKU is checked here, and the standard leaves EKU on signing certificates to the issuer.

mod error;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{ExtendedKeyUsageValidator, KeyPurposeIdIter};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::parse_x509_certificate;

pub use self::error::SvidError;
use crate::{BundleLookup, SpiffeId, TrustDomain, X509Authority};

/// Most certificates accepted in one X.509-SVID chain (leaf plus intermediates).
pub const MAX_CHAIN_LEN: usize = 16;

/// An X.509-SVID that passed [`verify_x509_svid`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedX509Svid {
    spiffe_id: SpiffeId,
    not_before: i64,
    not_after: i64,
}

impl VerifiedX509Svid {
    /// The leaf's SPIFFE ID.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The leaf's notBefore, in Unix seconds.
    pub fn not_before(&self) -> i64 {
        self.not_before
    }

    /// The leaf's notAfter, in Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }
}

/// Verifies an X.509-SVID chain (`chain[0]` the leaf, then intermediates, DER) at `now`.
///
/// In order: the leaf has exactly one URI SAN, a SPIFFE ID with a non-root path; it is not a
/// CA; its keyUsage is present, critical, has digitalSignature and lacks keyCertSign and
/// cRLSign; its extendedKeyUsage, if present, has serverAuth and clientAuth. Each intermediate
/// is a CA with keyCertSign (and, if it carries a SPIFFE ID, one without a path). Then the chain
/// must verify, signatures and validity periods included, to an X.509 authority of the bundle
/// that `bundles` holds for the leaf's trust domain; that authority must itself be within its
/// validity period at `now`.
///
/// # Errors
/// The first [`SvidError`] met, in the order above.
pub fn verify_x509_svid<B, C>(
    chain: &[C],
    bundles: &B,
    now: SystemTime,
) -> Result<VerifiedX509Svid, SvidError>
where
    B: BundleLookup + ?Sized,
    C: AsRef<[u8]>,
{
    let Some((leaf_der, intermediates)) = chain.split_first() else {
        return Err(SvidError::EmptyChain);
    };
    if chain.len() > MAX_CHAIN_LEN {
        return Err(SvidError::ChainTooLong {
            len: chain.len(),
            max: MAX_CHAIN_LEN,
        });
    }
    let leaf = parse(leaf_der.as_ref(), 0)?;
    let spiffe_id = check_leaf(&leaf)?;
    for (i, der) in intermediates.iter().enumerate() {
        check_signing_cert(&parse(der.as_ref(), i + 1)?, i + 1)?;
    }

    let trust_domain = spiffe_id.trust_domain();
    let bundle = bundles
        .bundle_for(trust_domain)
        .ok_or_else(|| SvidError::NoBundle {
            trust_domain: trust_domain.clone(),
        })?;
    if bundle.x509_authorities().is_empty() {
        return Err(SvidError::NoX509Authorities {
            trust_domain: trust_domain.clone(),
        });
    }
    verify_chain(
        leaf_der.as_ref(),
        intermediates,
        bundle.x509_authorities(),
        trust_domain,
        now,
    )?;

    Ok(VerifiedX509Svid {
        spiffe_id,
        not_before: leaf.validity().not_before.timestamp(),
        not_after: leaf.validity().not_after.timestamp(),
    })
}

/// RFC 5280 path validation of `leaf_der` through `intermediates` to one of `authorities`.
fn verify_chain<C: AsRef<[u8]>>(
    leaf_der: &[u8],
    intermediates: &[C],
    authorities: &[X509Authority],
    trust_domain: &TrustDomain,
    now: SystemTime,
) -> Result<(), SvidError> {
    let bad_authority = |index: usize, reason: String| SvidError::BadAuthority {
        trust_domain: trust_domain.clone(),
        index,
        reason,
    };
    let anchor_ders: Vec<CertificateDer<'_>> = authorities
        .iter()
        .map(|a| CertificateDer::from(a.der()))
        .collect();
    let mut anchors = Vec::with_capacity(authorities.len());
    let mut windows = Vec::with_capacity(authorities.len());
    for (index, der) in anchor_ders.iter().enumerate() {
        anchors.push(
            webpki::anchor_from_trusted_cert(der)
                .map_err(|e| bad_authority(index, e.to_string()))?,
        );
        let (_, cert) =
            parse_x509_certificate(der).map_err(|e| bad_authority(index, e.to_string()))?;
        windows.push(validity_secs(&cert));
    }
    // webpki trusts an anchor whatever its validity period; SPIFFE authorities are certificates
    // whose period counts (as in go-spiffe), so a path ending at an authority that is expired
    // (or not yet valid) at `now` is refused, and path building tries the next candidate.
    let anchor_in_period = |path: &webpki::VerifiedPath<'_>| -> Result<(), webpki::Error> {
        let found = anchors.iter().position(|a| a == path.anchor());
        match found.and_then(|i| windows.get(i)) {
            Some(&(not_before, not_after)) => in_period(not_before, not_after, time_of(now)),
            None => Ok(()),
        }
    };

    let intermediate_ders: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|d| CertificateDer::from(d.as_ref()))
        .collect();
    let leaf_cert_der = CertificateDer::from(leaf_der);
    let end_entity = webpki::EndEntityCert::try_from(&leaf_cert_der).map_err(|e| {
        SvidError::MalformedCertificate {
            index: 0,
            reason: e.to_string(),
        }
    })?;
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediate_ders,
            time_of(now),
            AnyExtendedKeyUsage,
            None,
            Some(&anchor_in_period),
        )
        .map(|_| ())
        .map_err(|e| from_webpki(e, trust_domain))
}

/// `now` for webpki. A time before the epoch is inside no certificate's period; clamp it to 0.
fn time_of(now: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// notBefore and notAfter of `cert` in Unix seconds (clamped at 0).
fn validity_secs(cert: &X509Certificate<'_>) -> (u64, u64) {
    let secs = |t: i64| u64::try_from(t).unwrap_or(0);
    (
        secs(cert.validity().not_before.timestamp()),
        secs(cert.validity().not_after.timestamp()),
    )
}

fn in_period(not_before: u64, not_after: u64, time: UnixTime) -> Result<(), webpki::Error> {
    if time.as_secs() < not_before {
        return Err(webpki::Error::CertNotValidYet {
            time,
            not_before: UnixTime::since_unix_epoch(Duration::from_secs(not_before)),
        });
    }
    if time.as_secs() > not_after {
        return Err(webpki::Error::CertExpired {
            time,
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(not_after)),
        });
    }
    Ok(())
}

/// Checks only the leaf rules of the X509-SVID standard (no chain, no time), e.g. on a
/// certificate just signed, and returns its SPIFFE ID.
///
/// # Errors
/// The first leaf [`SvidError`] met (see [`verify_x509_svid`]).
pub fn check_x509_svid_leaf(der: &[u8]) -> Result<SpiffeId, SvidError> {
    check_leaf(&parse(der, 0)?)
}

fn parse(der: &[u8], index: usize) -> Result<X509Certificate<'_>, SvidError> {
    match parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(SvidError::MalformedCertificate {
            index,
            reason: format!("{} bytes of trailing data", rest.len()),
        }),
        Err(e) => Err(SvidError::MalformedCertificate {
            index,
            reason: e.to_string(),
        }),
    }
}

fn malformed(index: usize) -> impl Fn(x509_parser::error::X509Error) -> SvidError {
    move |e| SvidError::MalformedCertificate {
        index,
        reason: e.to_string(),
    }
}

/// The URI SANs of `cert`, and whether the SAN extension is critical.
fn uri_sans<'a>(
    cert: &'a X509Certificate<'_>,
    index: usize,
) -> Result<(Vec<&'a str>, bool), SvidError> {
    let Some(san) = cert.subject_alternative_name().map_err(malformed(index))? else {
        return Ok((Vec::new(), false));
    };
    let uris = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    Ok((uris, san.critical))
}

fn check_leaf(leaf: &X509Certificate<'_>) -> Result<SpiffeId, SvidError> {
    let (uris, san_critical) = uri_sans(leaf, 0)?;
    let uri = match uris.as_slice() {
        [] => return Err(SvidError::NoUriSan),
        [uri] => *uri,
        more => return Err(SvidError::MultipleUriSans { count: more.len() }),
    };
    let spiffe_id = SpiffeId::new(uri).map_err(SvidError::InvalidSpiffeId)?;
    if spiffe_id.is_trust_domain_id() {
        return Err(SvidError::RootPathLeaf { spiffe_id });
    }
    if leaf.subject().iter().next().is_none() && !san_critical {
        return Err(SvidError::SanNotCritical);
    }

    if let Some(bc) = leaf.basic_constraints().map_err(malformed(0))? {
        if bc.value.ca {
            return Err(SvidError::LeafIsCa);
        }
    }
    let ku = leaf
        .key_usage()
        .map_err(malformed(0))?
        .ok_or(SvidError::MissingKeyUsage)?;
    if !ku.critical {
        return Err(SvidError::KeyUsageNotCritical);
    }
    if !ku.value.digital_signature() {
        return Err(SvidError::MissingDigitalSignature);
    }
    if ku.value.key_cert_sign() {
        return Err(SvidError::LeafHasKeyCertSign);
    }
    if ku.value.crl_sign() {
        return Err(SvidError::LeafHasCrlSign);
    }
    if let Some(eku) = leaf.extended_key_usage().map_err(malformed(0))? {
        if !eku.value.server_auth {
            return Err(SvidError::EkuIncomplete {
                missing: "serverAuth",
            });
        }
        if !eku.value.client_auth {
            return Err(SvidError::EkuIncomplete {
                missing: "clientAuth",
            });
        }
    }
    Ok(spiffe_id)
}

fn check_signing_cert(cert: &X509Certificate<'_>, index: usize) -> Result<(), SvidError> {
    let is_ca = cert
        .basic_constraints()
        .map_err(malformed(index))?
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err(SvidError::SigningCertNotCa { index });
    }
    let cert_sign = cert
        .key_usage()
        .map_err(malformed(index))?
        .is_some_and(|ku| ku.value.key_cert_sign());
    if !cert_sign {
        return Err(SvidError::SigningCertMissingKeyCertSign { index });
    }
    // A signing certificate need not be an SVID, but if it names a SPIFFE ID, that ID has no
    // path (X509-SVID §3.2). Other URIs are not ours to judge.
    let (uris, _) = uri_sans(cert, index)?;
    for uri in uris {
        if let Ok(spiffe_id) = SpiffeId::new(uri) {
            if !spiffe_id.is_trust_domain_id() {
                return Err(SvidError::SigningCertIdHasPath { index, spiffe_id });
            }
        }
    }
    Ok(())
}

/// Accepts any (well-formed) EKU on every certificate of the path; see the module docs.
struct AnyExtendedKeyUsage;

impl ExtendedKeyUsageValidator for AnyExtendedKeyUsage {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for purpose in iter {
            purpose?;
        }
        Ok(())
    }
}

fn from_webpki(e: webpki::Error, trust_domain: &TrustDomain) -> SvidError {
    match e {
        webpki::Error::CertExpired { time, not_after } => SvidError::Expired {
            not_after: not_after.as_secs(),
            now: time.as_secs(),
        },
        webpki::Error::CertNotValidYet { time, not_before } => SvidError::NotYetValid {
            not_before: not_before.as_secs(),
            now: time.as_secs(),
        },
        webpki::Error::UnknownIssuer => SvidError::UnknownAuthority {
            trust_domain: trust_domain.clone(),
        },
        webpki::Error::InvalidSignatureForPublicKey => SvidError::BadSignature,
        other => SvidError::Chain {
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests;
