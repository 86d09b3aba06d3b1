//! [`SvidError`]: why an X.509-SVID (chain) is refused.

use thiserror::Error;

use crate::{IdError, SpiffeId, TrustDomain};

/// An X.509-SVID that breaks a rule of the X509-SVID standard, or whose chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SvidError {
    /// No certificates were given.
    #[error("the certificate chain is empty; an X.509-SVID chain starts with the leaf")]
    EmptyChain,
    /// More certificates than [`MAX_CHAIN_LEN`](crate::MAX_CHAIN_LEN).
    #[error("the certificate chain has {len} certificates, over the limit of {max}")]
    ChainTooLong {
        /// How many were given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A certificate of the chain does not parse (index 0 is the leaf).
    #[error("certificate {index} of the chain is not a valid DER certificate: {reason}")]
    MalformedCertificate {
        /// Position in the chain.
        index: usize,
        /// The parser's complaint.
        reason: String,
    },
    /// The leaf has no URI SAN.
    #[error("the leaf has no URI SAN; an X.509-SVID carries its SPIFFE ID as exactly one URI SAN")]
    NoUriSan,
    /// The leaf has several URI SANs (the standard says to reject it).
    #[error("the leaf has {count} URI SANs; an X.509-SVID must have exactly one")]
    MultipleUriSans {
        /// How many it has.
        count: usize,
    },
    /// The leaf's URI SAN is not a SPIFFE ID.
    #[error("the leaf's URI SAN is not a valid SPIFFE ID: {0}")]
    InvalidSpiffeId(#[source] IdError),
    /// The leaf's SPIFFE ID is a trust domain's own ID.
    #[error("the leaf's SPIFFE ID \"{spiffe_id}\" has no path; a leaf SVID needs a non-root path")]
    RootPathLeaf {
        /// The leaf's SPIFFE ID.
        spiffe_id: SpiffeId,
    },
    /// The leaf has an empty subject and a non-critical SAN extension (RFC 5280 §4.1.2.6).
    #[error(
        "the leaf has an empty subject, so its subjectAltName extension must be marked critical"
    )]
    SanNotCritical,
    /// The leaf is a CA.
    #[error("the leaf is a CA (basicConstraints CA:true); a leaf SVID must have CA:false")]
    LeafIsCa,
    /// The leaf has no keyUsage extension.
    #[error("the leaf has no keyUsage extension; X.509-SVIDs must have one, marked critical")]
    MissingKeyUsage,
    /// The leaf's keyUsage extension is not critical.
    #[error("the leaf's keyUsage extension is not marked critical, as X.509-SVIDs require")]
    KeyUsageNotCritical,
    /// The leaf's keyUsage lacks digitalSignature.
    #[error("the leaf's keyUsage lacks digitalSignature, which leaf SVIDs must set")]
    MissingDigitalSignature,
    /// The leaf's keyUsage has keyCertSign.
    #[error("the leaf's keyUsage sets keyCertSign, which leaf SVIDs must not")]
    LeafHasKeyCertSign,
    /// The leaf's keyUsage has cRLSign.
    #[error("the leaf's keyUsage sets cRLSign, which leaf SVIDs must not")]
    LeafHasCrlSign,
    /// The leaf has an extendedKeyUsage without serverAuth or clientAuth.
    #[error(
        "the leaf's extendedKeyUsage lacks {missing}; when present it must include both \
         serverAuth and clientAuth"
    )]
    EkuIncomplete {
        /// `serverAuth` or `clientAuth`.
        missing: &'static str,
    },
    /// A signing (intermediate) certificate is not a CA.
    #[error(
        "certificate {index} of the chain is not a CA; signing certificates must have \
         basicConstraints CA:true"
    )]
    SigningCertNotCa {
        /// Position in the chain.
        index: usize,
    },
    /// A signing (intermediate) certificate lacks keyCertSign.
    #[error(
        "certificate {index} of the chain lacks keyUsage keyCertSign, which signing certificates \
         must set"
    )]
    SigningCertMissingKeyCertSign {
        /// Position in the chain.
        index: usize,
    },
    /// A signing (intermediate) certificate's SPIFFE ID has a path.
    #[error(
        "certificate {index} of the chain is a signing certificate with SPIFFE ID \"{spiffe_id}\"; \
         a signing certificate's SPIFFE ID must not have a path"
    )]
    SigningCertIdHasPath {
        /// Position in the chain.
        index: usize,
        /// The certificate's SPIFFE ID.
        spiffe_id: SpiffeId,
    },
    /// No bundle is known for the leaf's trust domain.
    #[error("no bundle is known for trust domain \"{trust_domain}\"")]
    NoBundle {
        /// The leaf's trust domain.
        trust_domain: TrustDomain,
    },
    /// The bundle has no X.509 authorities.
    #[error("the bundle of \"{trust_domain}\" has no X.509 authorities")]
    NoX509Authorities {
        /// The leaf's trust domain.
        trust_domain: TrustDomain,
    },
    /// An X.509 authority of the bundle cannot serve as a trust anchor.
    #[error("X.509 authority {index} of the bundle of \"{trust_domain}\" is not a usable trust anchor: {reason}")]
    BadAuthority {
        /// The bundle's trust domain.
        trust_domain: TrustDomain,
        /// Position of the authority in the bundle.
        index: usize,
        /// Why.
        reason: String,
    },
    /// A certificate of the chain had expired at the time of the check.
    #[error("a certificate of the chain expired at {not_after} (Unix seconds); checked at {now}")]
    Expired {
        /// Its notAfter, in Unix seconds.
        not_after: u64,
        /// The time checked at, in Unix seconds.
        now: u64,
    },
    /// A certificate of the chain was not yet valid at the time of the check.
    #[error("a certificate of the chain is not valid before {not_before} (Unix seconds); checked at {now}")]
    NotYetValid {
        /// Its notBefore, in Unix seconds.
        not_before: u64,
        /// The time checked at, in Unix seconds.
        now: u64,
    },
    /// No path from the leaf leads to an authority of the bundle.
    #[error("the chain does not lead to an X.509 authority of the bundle of \"{trust_domain}\"")]
    UnknownAuthority {
        /// The leaf's trust domain.
        trust_domain: TrustDomain,
    },
    /// A signature in the chain is wrong.
    #[error("a signature in the chain does not verify")]
    BadSignature,
    /// Path validation failed for another reason.
    #[error("chain verification failed: {reason}")]
    Chain {
        /// The verifier's description.
        reason: String,
    },
}
