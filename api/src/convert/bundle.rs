//! Trust bundles: [`Bundle`] ⇄ `spire.api.types.Bundle` (X.509 authorities as DER, JWT
//! authorities as PKIX public keys with their `kid`).

use tessera_identity::{Bundle, JwtAuthority, PublicKey, X509Authority};
use tessera_proto::spire::api::types;

use super::error::ConvertError;
use super::ids::trust_domain;

/// A bundle for the wire, with only the fields `mask` selects (all when `None`).
pub fn bundle_to_proto(b: &Bundle, mask: Option<&types::BundleMask>) -> types::Bundle {
    let all = types::BundleMask {
        x509_authorities: true,
        jwt_authorities: true,
        refresh_hint: true,
        sequence_number: true,
        wit_authorities: true,
    };
    let m = mask.unwrap_or(&all);
    types::Bundle {
        trust_domain: b.trust_domain().as_str().to_owned(),
        x509_authorities: if m.x509_authorities {
            b.x509_authorities()
                .iter()
                .map(|a| types::X509Certificate {
                    asn1: a.der().to_vec(),
                    tainted: b.is_x509_authority_tainted(a.der()),
                })
                .collect()
        } else {
            vec![]
        },
        jwt_authorities: if m.jwt_authorities {
            b.jwt_authorities()
                .iter()
                .map(|a| types::JwtKey {
                    public_key: a.public_key.to_spki_der(),
                    key_id: a.key_id.clone(),
                    expires_at: a.expires_at.unwrap_or(0),
                    tainted: b.is_jwt_authority_tainted(&a.key_id),
                })
                .collect()
        } else {
            vec![]
        },
        refresh_hint: if m.refresh_hint {
            b.refresh_hint()
                .map_or(0, |h| i64::try_from(h).unwrap_or(i64::MAX))
        } else {
            0
        },
        sequence_number: if m.sequence_number {
            b.sequence_number()
        } else {
            0
        },
        wit_authorities: vec![],
    }
}

/// A wire bundle → a validated [`Bundle`] (used by the CLI to print PEM and JWKS).
pub fn bundle_from_proto(p: &types::Bundle) -> Result<Bundle, ConvertError> {
    let invalid = |field: &'static str, rule: String| ConvertError::Invalid {
        field,
        value: String::new(),
        rule,
    };
    let mut b = Bundle::new(trust_domain("trust_domain", &p.trust_domain)?);
    for (i, a) in p.x509_authorities.iter().enumerate() {
        let authority = X509Authority::from_der(a.asn1.clone())
            .map_err(|e| invalid("x509_authorities", format!("item {i}: {e}")))?;
        b.add_x509_authority(authority);
    }
    for (i, k) in p.jwt_authorities.iter().enumerate() {
        let public_key = PublicKey::from_spki_der(&k.public_key)
            .map_err(|e| invalid("jwt_authorities", format!("item {i} ({}): {e}", k.key_id)))?;
        b.add_jwt_authority(JwtAuthority {
            key_id: k.key_id.clone(),
            public_key,
            expires_at: (k.expires_at != 0).then_some(k.expires_at),
        })
        .map_err(|e| invalid("jwt_authorities", format!("item {i}: {e}")))?;
    }
    b.set_sequence_number(p.sequence_number);
    b.set_refresh_hint(u64::try_from(p.refresh_hint).ok().filter(|h| *h > 0));
    Ok(b)
}

/// Every field of a bundle (SPIRE's default when an input mask is unset).
pub const FULL_BUNDLE_MASK: types::BundleMask = types::BundleMask {
    x509_authorities: true,
    jwt_authorities: true,
    refresh_hint: true,
    sequence_number: true,
    wit_authorities: true,
};

/// `existing` with the fields `mask` selects taken from `input` (SPIRE's
/// `BatchUpdateFederatedBundle`): the trust domain is `existing`'s.
pub fn merge_bundle(existing: &Bundle, input: &Bundle, mask: &types::BundleMask) -> Bundle {
    let pick = |selected: bool| if selected { input } else { existing };
    let mut out = Bundle::new(existing.trust_domain().clone());
    for a in pick(mask.x509_authorities).x509_authorities() {
        out.add_x509_authority(a.clone());
    }
    for k in pick(mask.jwt_authorities).jwt_authorities() {
        // Key ids are unique within either source bundle already.
        let _ = out.add_jwt_authority(k.clone());
    }
    out.set_refresh_hint(pick(mask.refresh_hint).refresh_hint());
    out.set_sequence_number(pick(mask.sequence_number).sequence_number());
    out
}
