//! Errors of signing: [`SignError`] for a whole request, [`SvidRejection`] for one item of a
//! batch. The API maps rejections to `InvalidArgument`, `Overloaded`/`BatchTooLarge` to
//! `ResourceExhausted`, `NoActive*` to `Unavailable`.

use tessera_identity::{SpiffeId, TrustDomain};

/// Why one X.509-SVID of a batch (or a JWT-SVID request) was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SvidRejection {
    /// The CSR is larger than the limit.
    #[error("CSR is {len} bytes, over the limit of {max} (server config `max_csr_bytes`)")]
    CsrTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The CSR is not a DER PKCS#10 request.
    #[error("CSR is not a DER PKCS#10 certificate request: {reason}")]
    MalformedCsr {
        /// The parser's complaint.
        reason: String,
    },
    /// The CSR's signature does not verify with its own public key.
    #[error("CSR signature does not verify with the CSR's public key; sign the CSR with the key it carries")]
    CsrSignature,
    /// The CSR's key is of an unsupported kind or size.
    #[error(
        "CSR public key is {reason}; use an EC P-256 (recommended), EC P-384 or RSA >= 2048 key"
    )]
    UnsupportedKey {
        /// What the key is.
        reason: String,
    },
    /// The SPIFFE ID is not in the server's trust domain.
    #[error("SPIFFE ID {spiffe_id} is not in trust domain {trust_domain}; this server only signs for its own")]
    ForeignSpiffeId {
        /// The ID.
        spiffe_id: SpiffeId,
        /// The server's trust domain.
        trust_domain: TrustDomain,
    },
    /// The SPIFFE ID has no path (it names the trust domain, not a workload).
    #[error("SPIFFE ID {spiffe_id} has no path; an SVID names a workload or agent, e.g. {spiffe_id}/web")]
    RootSpiffeId {
        /// The ID.
        spiffe_id: SpiffeId,
    },
    /// The SPIFFE ID is under `/spire`, reserved for agents and servers: agents would take an
    /// SVID for `/spire/server` for the server itself.
    #[error("SPIFFE ID {spiffe_id} is under /spire, which is reserved for agents and servers; only attestation and the server itself get SVIDs there (use another path)")]
    ReservedSpiffeId {
        /// The ID.
        spiffe_id: SpiffeId,
    },
    /// An agent SVID was asked for an ID that is not an agent's.
    #[error("SPIFFE ID {spiffe_id} is not an agent ID; agent SVIDs are for spiffe://<trust domain>/spire/agent/...")]
    NotAnAgentId {
        /// The ID.
        spiffe_id: SpiffeId,
    },
    /// The server's own SVID was asked for another ID.
    #[error("SPIFFE ID {spiffe_id} is not this server's ID; the server's own SVID is for spiffe://<trust domain>/spire/server")]
    NotTheServerId {
        /// The ID.
        spiffe_id: SpiffeId,
    },
    /// Too many DNS names for one SVID.
    #[error("{count} DNS names given, over the limit of {max} (server config `max_dns_names`)")]
    TooManyDnsNames {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A DNS name is not acceptable.
    #[error("DNS name \"{name}\" is invalid: {reason}")]
    InvalidDnsName {
        /// The name (at most 64 characters of it).
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A JWT-SVID request has no audience (after dropping empty strings).
    #[error("JWT-SVID audience is empty; give at least one audience")]
    NoAudience,
    /// Too many audiences.
    #[error(
        "{count} JWT-SVID audiences given, over the limit of {max} (server config `max_audiences`)"
    )]
    TooManyAudiences {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An audience is too long or has control characters.
    #[error("JWT-SVID audience \"{audience}\" is invalid: {reason}")]
    InvalidAudience {
        /// The audience (at most 64 characters of it).
        audience: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// Building or signing the credential failed (a crypto fault, not the caller's input).
    #[error("signing failed: {reason}")]
    Signing {
        /// What failed.
        reason: String,
    },
}

/// Why a signing request as a whole was not served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// No X.509 CA is active (not yet prepared, or expired): retry shortly.
    #[error("no active X.509 CA ({reason}); the authority prepares one on its next rotation tick")]
    NoActiveCa {
        /// Why.
        reason: String,
    },
    /// No JWT key is active: retry shortly.
    #[error("no active JWT signing key ({reason}); the authority prepares one on its next rotation tick")]
    NoActiveJwtKey {
        /// Why.
        reason: String,
    },
    /// The signing queue is full.
    #[error(
        "signing queue is full: {requested} more would exceed the limit of {limit} requests \
         queued or signing (server config `max_signing_queue`); retry with backoff"
    )]
    Overloaded {
        /// Items asked for.
        requested: usize,
        /// The limit.
        limit: usize,
    },
    /// A batch is larger than allowed.
    #[error("batch of {len} CSRs is over the limit of {max} (server config `max_signing_batch`); split it")]
    BatchTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The single item of a request was refused.
    #[error(transparent)]
    Rejected(#[from] SvidRejection),
    /// A signing job failed unexpectedly (it panicked or was cancelled): retry.
    #[error("signing job failed: {reason}")]
    Internal {
        /// What happened.
        reason: String,
    },
}
