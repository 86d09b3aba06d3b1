//! [`EntryError`]: why a registration entry is refused.

use thiserror::Error;

use crate::{SpiffeId, TrustDomain};

/// A registration entry that breaks one of SPIRE's rules or one of the [`EntryLimits`].
///
/// [`EntryLimits`]: crate::EntryLimits
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The entry's SPIFFE ID is in another trust domain than the server's.
    #[error(
        "spiffe_id \"{spiffe_id}\" is not in the server's trust domain \"{trust_domain}\"; use an \
         ID of the form spiffe://{trust_domain}/..."
    )]
    SpiffeIdNotInTrustDomain {
        /// The entry's SPIFFE ID.
        spiffe_id: SpiffeId,
        /// The server's trust domain.
        trust_domain: TrustDomain,
    },
    /// The entry's SPIFFE ID has no path.
    #[error(
        "spiffe_id \"{spiffe_id}\" has no path; a workload ID needs one \
         (e.g. \"{spiffe_id}/web\")"
    )]
    SpiffeIdHasNoPath {
        /// The entry's SPIFFE ID.
        spiffe_id: SpiffeId,
    },
    /// The entry's SPIFFE ID is under `/spire`, which SPIRE (and Tessera) keep for agents and
    /// servers.
    #[error(
        "spiffe_id \"{spiffe_id}\" is in the reserved \"/spire\" namespace (agent and server IDs); \
         choose another path"
    )]
    SpiffeIdReserved {
        /// The entry's SPIFFE ID.
        spiffe_id: SpiffeId,
    },
    /// The parent ID is in another trust domain than the server's.
    #[error(
        "parent_id \"{parent_id}\" is not in the server's trust domain \"{trust_domain}\"; use an \
         ID of the form spiffe://{trust_domain}/..."
    )]
    ParentIdNotInTrustDomain {
        /// The entry's parent ID.
        parent_id: SpiffeId,
        /// The server's trust domain.
        trust_domain: TrustDomain,
    },
    /// The parent ID has no path.
    #[error(
        "parent_id \"{parent_id}\" has no path; use an agent's ID or another entry's SPIFFE ID"
    )]
    ParentIdHasNoPath {
        /// The entry's parent ID.
        parent_id: SpiffeId,
    },
    /// The entry has no selectors, so it would match nothing (or, worse, everything).
    #[error("the entry has no selectors; add at least one (e.g. \"unix:uid:1000\")")]
    NoSelectors,
    /// More selectors than `max_selectors`.
    #[error("the entry has {count} selectors, over the limit of {max} (max_selectors)")]
    TooManySelectors {
        /// How many the entry has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The X.509-SVID TTL is outside `[min_svid_ttl_secs, max_x509_svid_ttl_secs]`.
    #[error(
        "x509_svid_ttl of {ttl}s is outside the allowed {min}s to {max}s (min_svid_ttl_secs, \
         max_x509_svid_ttl_secs); omit it to use the server's default"
    )]
    X509SvidTtlOutOfRange {
        /// The requested TTL in seconds.
        ttl: u32,
        /// The lower bound in seconds.
        min: u32,
        /// The upper bound in seconds.
        max: u32,
    },
    /// The JWT-SVID TTL is outside `[min_svid_ttl_secs, max_jwt_svid_ttl_secs]`.
    #[error(
        "jwt_svid_ttl of {ttl}s is outside the allowed {min}s to {max}s (min_svid_ttl_secs, \
         max_jwt_svid_ttl_secs); omit it to use the server's default"
    )]
    JwtSvidTtlOutOfRange {
        /// The requested TTL in seconds.
        ttl: u32,
        /// The lower bound in seconds.
        min: u32,
        /// The upper bound in seconds.
        max: u32,
    },
    /// More federated trust domains than `max_federates_with`.
    #[error(
        "the entry federates with {count} trust domains, over the limit of {max} \
         (max_federates_with)"
    )]
    TooManyFederatesWith {
        /// How many the entry has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A trust domain is listed twice in `federates_with`.
    #[error("federates_with lists \"{trust_domain}\" more than once; list it once")]
    DuplicateFederatesWith {
        /// The repeated trust domain.
        trust_domain: TrustDomain,
    },
    /// More DNS names than `max_dns_names`.
    #[error("the entry has {count} DNS names, over the limit of {max} (max_dns_names)")]
    TooManyDnsNames {
        /// How many the entry has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A DNS name is malformed.
    #[error("DNS name {name:?} {reason}")]
    InvalidDnsName {
        /// The offending name (truncated).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A DNS name is listed twice (DNS names compare case-insensitively).
    #[error("DNS name {name:?} is listed more than once; list it once")]
    DuplicateDnsName {
        /// The repeated name.
        name: String,
    },
    /// The hint is longer than `max_hint_len`.
    #[error("the hint is {len} bytes long, over the limit of {max} bytes (max_hint_len)")]
    HintTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
}
