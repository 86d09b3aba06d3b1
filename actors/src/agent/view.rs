//! What the Workload API serves from: an immutable snapshot of the agent's identities,
//! published through a `watch` channel so every open stream sees each change at once, and a
//! JWT-SVID source.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use tessera_identity::{Bundle, RegistrationEntry, SelectorSet, TrustDomain};
use tokio::sync::watch;

/// An X.509-SVID held by the agent for one entry. The key was made on this node and never
/// left it.
#[derive(Clone, PartialEq, Eq)]
pub struct HeldX509Svid {
    /// Certificate chain, leaf first, DER.
    pub cert_chain: Vec<Vec<u8>>,
    /// The private key, PKCS#8 DER.
    pub key_pkcs8: Arc<zeroize::Zeroizing<Vec<u8>>>,
    /// Validity, Unix seconds.
    pub not_before: i64,
    /// Validity, Unix seconds.
    pub not_after: i64,
}

impl std::fmt::Debug for HeldX509Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldX509Svid")
            .field("chain_len", &self.cert_chain.len())
            .field("key", &"<redacted>")
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// One entry the agent serves, with its SVID once signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The registration entry (SPIFFE ID, selectors, hint, federates_with, TTLs...).
    pub entry: RegistrationEntry,
    /// Its current X.509-SVID; `None` until first signed.
    pub svid: Option<HeldX509Svid>,
}

/// Everything the agent can serve, at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentitySnapshot {
    /// Increases with every change.
    pub generation: u64,
    /// Entries for workloads (node aliases excluded) that hold an SVID for their current
    /// revision, in entry id order. Entries outside the agent's SVID cache are not here until
    /// a workload asks for them ([`WorkloadSource::use_identities`]).
    pub identities: Vec<Identity>,
    /// The agent's own trust domain's bundle.
    pub bundle: Option<Bundle>,
    /// Bundles of federated trust domains, by trust domain.
    pub federated: BTreeMap<TrustDomain, Bundle>,
}

impl IdentitySnapshot {
    /// The identities a workload with `selectors` may have: entries whose selectors are all
    /// among the workload's, that have an SVID, and have not expired at `now` (Unix seconds).
    pub fn for_workload<'a>(
        &'a self,
        selectors: &'a SelectorSet,
        now: i64,
    ) -> impl Iterator<Item = &'a Identity> + 'a {
        self.identities.iter().filter(move |i| {
            i.entry.selectors.is_subset_of(selectors)
                && !i.entry.is_expired_at(now)
                && i.svid.as_ref().is_some_and(|s| s.not_after > now)
        })
    }

    /// The federated bundles `identities` ask for (`federates_with`), that the agent holds.
    pub fn federated_for<'a>(
        &'a self,
        identities: &[&'a Identity],
    ) -> BTreeMap<&'a TrustDomain, &'a Bundle> {
        identities
            .iter()
            .flat_map(|i| i.entry.federates_with.iter())
            .filter_map(|td| self.federated.get_key_value(td))
            .collect()
    }
}

/// A JWT-SVID as handed to a workload.
#[derive(Clone, PartialEq, Eq)]
pub struct HeldJwtSvid {
    /// The compact JWS.
    pub token: String,
    /// Its SPIFFE ID (the `sub` claim).
    pub spiffe_id: tessera_identity::SpiffeId,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// The entry's hint.
    pub hint: String,
}

impl std::fmt::Debug for HeldJwtSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldJwtSvid")
            .field("token", &"<redacted>")
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why a JWT-SVID could not be had.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtFetchError {
    /// The entry is not (or no longer) in the agent's view.
    #[error("entry {0} is not in this agent's view")]
    UnknownEntry(String),
    /// The server refused or could not be reached; retryable.
    #[error("the server could not mint the JWT-SVID: {0}")]
    Unavailable(String),
    /// The request breaks a limit (audiences...).
    #[error("{0}")]
    Invalid(String),
}

/// What [`WorkloadSource::use_identities`] hands back: while held, the entries the workload
/// matched stay in use (their SVIDs are kept and renewed, past the SVID cache's size if need
/// be); dropping it lets go of them.
#[derive(Default)]
pub struct InUse {
    release: Option<Box<dyn FnOnce() + Send>>,
    /// The generation of the first snapshot that holds the SVIDs asked for (if they came).
    pub generation: Option<u64>,
}

impl InUse {
    /// A hold that `release` ends.
    pub fn new(release: impl FnOnce() + Send + 'static) -> Self {
        Self {
            release: Some(Box::new(release)),
            generation: None,
        }
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl std::fmt::Debug for InUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InUse")
            .field("held", &self.release.is_some())
            .field("generation", &self.generation)
            .finish()
    }
}

/// The source the Workload API serves from.
pub trait WorkloadSource: Send + Sync + std::fmt::Debug + 'static {
    /// A workload with `selectors` uses its identities now. Resolves once every entry it
    /// matches holds an SVID (signed on demand for entries outside the agent's SVID cache),
    /// or when that failed or took longer than the agent's bound. With `hold` (an open
    /// stream) the entries stay in use until the returned value is dropped. Sources that sign
    /// every entry eagerly need not override this.
    fn use_identities<'a>(
        &'a self,
        _selectors: &'a SelectorSet,
        _hold: bool,
    ) -> BoxFuture<'a, InUse> {
        Box::pin(async { InUse::default() })
    }

    /// The current snapshot, and every later one.
    fn identities(&self) -> watch::Receiver<Arc<IdentitySnapshot>>;

    /// A JWT-SVID for `identity` with `audience` (cached by the agent per SPIFFE ID and
    /// audience set until half its lifetime).
    fn fetch_jwt<'a>(
        &'a self,
        identity: &'a Identity,
        audience: &'a [String],
    ) -> BoxFuture<'a, Result<HeldJwtSvid, JwtFetchError>>;
}
