//! From an identity snapshot and a caller's selectors to the standard's response messages.
//! Pure functions: the same snapshot, selectors and time give the same message, so streams
//! can skip re-sending what did not change for their caller.

use std::collections::HashMap;

use tessera_actors::agent::view::{Identity, IdentitySnapshot};
use tessera_identity::{Bundle, SelectorSet, TrustDomain};
use tessera_proto::workload::{
    JwtBundlesResponse, X509BundlesResponse, X509svid, X509svidResponse,
};

use super::error::ApiError;

/// A message, and when (Unix seconds) it goes stale by itself because something in it expires.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rendered<T> {
    pub(crate) message: T,
    pub(crate) expires: Option<i64>,
}

/// The identities the caller is entitled to at `now`; none is `NoIdentity`.
pub(crate) fn entitled<'a>(
    snapshot: &'a IdentitySnapshot,
    selectors: &'a SelectorSet,
    now: i64,
) -> Result<Vec<&'a Identity>, ApiError> {
    let identities: Vec<&Identity> = snapshot.for_workload(selectors, now).collect();
    if identities.is_empty() {
        return Err(ApiError::NoIdentity);
    }
    Ok(identities)
}

/// The earliest moment one of `identities` stops being served (SVID or entry expiry).
fn earliest_expiry(identities: &[&Identity]) -> Option<i64> {
    identities
        .iter()
        .flat_map(|i| [i.svid.as_ref().map(|s| s.not_after), i.entry.expires_at])
        .flatten()
        .min()
}

/// The bundle of `td`: the agent's own, or a federated one.
pub(crate) fn bundle_of<'a>(
    snapshot: &'a IdentitySnapshot,
    td: &TrustDomain,
) -> Option<&'a Bundle> {
    match &snapshot.bundle {
        Some(b) if b.trust_domain() == td => Some(b),
        _ => snapshot.federated.get(td),
    }
}

/// Every bundle the caller should trust: its own trust domain's and the federated ones its
/// identities ask for, keyed by trust domain.
pub(crate) fn caller_bundles<'a>(
    snapshot: &'a IdentitySnapshot,
    identities: &[&'a Identity],
) -> Result<Vec<&'a Bundle>, ApiError> {
    let mut out = Vec::new();
    for identity in identities {
        let td = identity.entry.spiffe_id.trust_domain();
        let bundle = bundle_of(snapshot, td).ok_or_else(|| ApiError::NoBundle(td.to_string()))?;
        if !out.iter().any(|b: &&Bundle| b.trust_domain() == td) {
            out.push(bundle);
        }
    }
    for bundle in snapshot.federated_for(identities).into_values() {
        if !out
            .iter()
            .any(|b| b.trust_domain() == bundle.trust_domain())
        {
            out.push(bundle);
        }
    }
    Ok(out)
}

/// The X.509 authorities of `bundle` as the standard carries them: DER certificates,
/// concatenated.
fn concat_der(bundle: &Bundle) -> Vec<u8> {
    let authorities = bundle.x509_authorities();
    let mut out = Vec::with_capacity(authorities.iter().map(|a| a.der().len()).sum());
    for a in authorities {
        out.extend_from_slice(a.der());
    }
    out
}

/// `FetchX509SVID`: every entitled SVID with its key, its trust domain's bundle and hint,
/// and the federated bundles.
pub(crate) fn x509_svids(
    snapshot: &IdentitySnapshot,
    selectors: &SelectorSet,
    now: i64,
) -> Result<Rendered<X509svidResponse>, ApiError> {
    let identities = entitled(snapshot, selectors, now)?;
    let mut svids = Vec::with_capacity(identities.len());
    for identity in &identities {
        let Some(svid) = &identity.svid else { continue };
        let td = identity.entry.spiffe_id.trust_domain();
        let bundle = bundle_of(snapshot, td).ok_or_else(|| ApiError::NoBundle(td.to_string()))?;
        svids.push(X509svid {
            spiffe_id: identity.entry.spiffe_id.to_string(),
            x509_svid: svid.cert_chain.concat(),
            x509_svid_key: svid.key_pkcs8.to_vec(),
            bundle: concat_der(bundle),
            hint: identity.entry.hint.clone(),
        });
    }
    let federated_bundles = snapshot
        .federated_for(&identities)
        .into_iter()
        .map(|(td, b)| (td.id().to_string(), concat_der(b)))
        .collect();
    Ok(Rendered {
        message: X509svidResponse {
            svids,
            crl: Vec::new(),
            federated_bundles,
        },
        expires: earliest_expiry(&identities),
    })
}

/// `FetchX509Bundles`: the caller's own and federated X.509 bundles.
pub(crate) fn x509_bundles(
    snapshot: &IdentitySnapshot,
    selectors: &SelectorSet,
    now: i64,
) -> Result<Rendered<X509BundlesResponse>, ApiError> {
    let identities = entitled(snapshot, selectors, now)?;
    let bundles = caller_bundles(snapshot, &identities)?
        .into_iter()
        .map(|b| (b.trust_domain().id().to_string(), concat_der(b)))
        .collect();
    Ok(Rendered {
        message: X509BundlesResponse {
            crl: Vec::new(),
            bundles,
        },
        expires: earliest_expiry(&identities),
    })
}

/// The JWT half of a bundle. JWT bundles carry only JWT authorities (as SPIRE sends them):
/// `x509-svid` keys have no `kid`, which JWT-bundle parsers of SPIFFE clients require.
fn jwt_only(bundle: &Bundle) -> Bundle {
    let mut out = Bundle::new(bundle.trust_domain().clone());
    out.set_sequence_number(bundle.sequence_number());
    out.set_refresh_hint(bundle.refresh_hint());
    for a in bundle.jwt_authorities() {
        // Key ids are unique within `bundle` already.
        let _ = out.add_jwt_authority(a.clone());
    }
    out
}

/// `FetchJWTBundles`: the caller's own and federated bundles as JWKS documents (SPIFFE
/// bundle format, JWT authorities only).
pub(crate) fn jwt_bundles(
    snapshot: &IdentitySnapshot,
    selectors: &SelectorSet,
    now: i64,
) -> Result<Rendered<JwtBundlesResponse>, ApiError> {
    let identities = entitled(snapshot, selectors, now)?;
    let mut bundles = HashMap::new();
    for b in caller_bundles(snapshot, &identities)? {
        let jwks = jwt_only(b).to_jwks().map_err(|e| ApiError::Encode {
            trust_domain: b.trust_domain().to_string(),
            reason: e.to_string(),
        })?;
        bundles.insert(b.trust_domain().id().to_string(), jwks.into_bytes());
    }
    Ok(Rendered {
        message: JwtBundlesResponse { bundles },
        expires: earliest_expiry(&identities),
    })
}
