//! SPIFFE value types for Tessera.
//!
//! **Owns:** the SPIFFE vocabulary every other crate speaks, as validated values:
//! - [`SpiffeId`] and [`TrustDomain`], holding every rule of the SPIFFE-ID standard (and
//!   wrapping the ecosystem's [`spiffe`] crate types, with conversions both ways);
//! - [`Selector`] and [`SelectorSet`] (`type:value`, subset matching);
//! - [`RegistrationEntry`] with [`EntryId`] and SPIRE's validation rules under [`EntryLimits`];
//! - [`Bundle`]: X.509 and JWT authorities of a trust domain, in the SPIFFE bundle JWKS format
//!   (`spiffe_sequence`, `spiffe_refresh_hint`) and PEM;
//! - X.509-SVID validation per the X509-SVID standard ([`verify_x509_svid`]).
//!
//! Parsing is "parse, don't validate": a value of these types is valid by construction, and
//! serde goes through the same checks. Bad input gives a typed error whose message names the
//! input, the rule and the fix; it never panics.
//!
//! **Must not:** do I/O, async, or read the clock or a random source (time and randomness are
//! passed in, e.g. `now` to [`verify_x509_svid`], random bytes to
//! [`EntryId::from_random_bytes`]); hold or use private keys (signing is the authority's job);
//! depend on any other Tessera crate (this is a leaf of the workspace).

#![warn(missing_docs)]

mod bundle;
mod entry;
mod id_error;
mod selector;
mod serde_str;
mod spiffe_id;
mod svid;
mod trust_domain;

#[cfg(test)]
mod test_support;

pub use crate::bundle::{
    Bundle, BundleError, BundleLimits, BundleLookup, EcCurve, JwkError, JwtAuthority, KeyError,
    KeyIdError, PublicKey, X509Authority, MAX_KEY_ID_LEN,
};
pub use crate::entry::{
    EntryError, EntryId, EntryIdError, EntryLimits, RegistrationEntry, MAX_DNS_NAME_LEN,
    RESERVED_PATH, SERVER_PATH,
};
pub use crate::id_error::IdError;
pub use crate::selector::{Selector, SelectorError, SelectorSet};
pub use crate::spiffe_id::{SpiffeId, MAX_SPIFFE_ID_LEN};
pub use crate::svid::{
    check_x509_svid_leaf, verify_x509_svid, SvidError, VerifiedX509Svid, MAX_CHAIN_LEN,
};
pub use crate::trust_domain::TrustDomain;

/// The per-thread caches that share repeated values while a log or snapshot is decoded: keys
/// come from the log (written by this server from admin input), hashed with a per-process
/// seed.
pub(crate) type RecentSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
/// See [`RecentSet`].
pub(crate) type RecentMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
