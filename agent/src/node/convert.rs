//! Wire → domain for what the agent receives from the server (entries and bundles of its
//! sync stream). Every field is parsed; a malformed one is an error naming it. A bundle's
//! `tainted` flags become its taint marks (there is no reverse: the agent sends no bundles).

use tessera_identity::{
    Bundle, EntryId, JwtAuthority, PublicKey, RegistrationEntry, Selector, SelectorSet, SpiffeId,
    TrustDomain, X509Authority,
};
use tessera_proto::spire::api::types;

fn id(field: &str, id: Option<&types::Spiffeid>) -> Result<SpiffeId, String> {
    let id = id.ok_or_else(|| format!("{field} is missing"))?;
    SpiffeId::new(&format!("spiffe://{}{}", id.trust_domain, id.path))
        .map_err(|e| format!("{field}: {e}"))
}

fn ttl(field: &str, v: i32) -> Result<Option<u32>, String> {
    match v {
        0 => Ok(None),
        n => u32::try_from(n)
            .map(Some)
            .map_err(|_| format!("{field}: negative TTL {n}")),
    }
}

/// A registration entry from the sync stream.
pub fn entry_from_proto(e: &types::Entry) -> Result<RegistrationEntry, String> {
    let mut selectors = SelectorSet::new();
    for s in &e.selectors {
        selectors
            .insert(Selector::new(&s.r#type, &s.value).map_err(|err| format!("selectors: {err}"))?);
    }
    Ok(RegistrationEntry {
        id: EntryId::new(&e.id).map_err(|err| format!("id: {err}"))?,
        spiffe_id: id("spiffe_id", e.spiffe_id.as_ref())?,
        parent_id: id("parent_id", e.parent_id.as_ref())?,
        selectors,
        x509_svid_ttl: ttl("x509_svid_ttl", e.x509_svid_ttl)?,
        jwt_svid_ttl: ttl("jwt_svid_ttl", e.jwt_svid_ttl)?,
        federates_with: e
            .federates_with
            .iter()
            .map(|td| {
                TrustDomain::from_name_or_id(td).map_err(|err| format!("federates_with: {err}"))
            })
            .collect::<Result<_, _>>()?,
        dns_names: e.dns_names.clone(),
        admin: e.admin,
        downstream: e.downstream,
        hint: e.hint.clone(),
        expires_at: (e.expires_at != 0).then_some(e.expires_at),
        created_at: e.created_at,
        revision: u64::try_from(e.revision_number).unwrap_or(0),
    })
}

/// A bundle from the sync stream or the attestation result.
pub fn bundle_from_proto(b: &types::Bundle) -> Result<Bundle, String> {
    let td = TrustDomain::from_name_or_id(&b.trust_domain)
        .map_err(|e| format!("bundle trust_domain: {e}"))?;
    let mut bundle = Bundle::new(td);
    for c in &b.x509_authorities {
        bundle.add_x509_authority(
            X509Authority::from_der(c.asn1.clone())
                .map_err(|e| format!("x509_authorities: {e}"))?,
        );
        // SPIRE's `tainted`: the agent re-signs what chains to it (forced rotation).
        if c.tainted {
            bundle.taint_x509_authority(&c.asn1);
        }
    }
    for k in &b.jwt_authorities {
        let public_key =
            PublicKey::from_spki_der(&k.public_key).map_err(|e| format!("jwt_authorities: {e}"))?;
        bundle
            .add_jwt_authority(JwtAuthority {
                key_id: k.key_id.clone(),
                public_key,
                expires_at: (k.expires_at != 0).then_some(k.expires_at),
            })
            .map_err(|e| format!("jwt_authorities: {e}"))?;
        if k.tainted {
            bundle.taint_jwt_authority(&k.key_id);
        }
    }
    bundle.set_sequence_number(b.sequence_number);
    bundle.set_refresh_hint(u64::try_from(b.refresh_hint).ok().filter(|h| *h > 0));
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(cn: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn tainted_flags_become_the_bundles_taint_marks() {
        let (old, new) = (ca("old"), ca("new"));
        let key =
            rcgen::PublicKeyData::subject_public_key_info(&rcgen::KeyPair::generate().unwrap());
        let jwt = |kid: &str, tainted: bool| types::JwtKey {
            public_key: key.clone(),
            key_id: kid.into(),
            expires_at: 0,
            tainted,
        };
        let wire = types::Bundle {
            trust_domain: "example.org".into(),
            x509_authorities: vec![
                types::X509Certificate {
                    asn1: old.clone(),
                    tainted: true,
                },
                types::X509Certificate {
                    asn1: new.clone(),
                    tainted: false,
                },
            ],
            jwt_authorities: vec![jwt("k-old", true), jwt("k-new", false)],
            sequence_number: 3,
            ..types::Bundle::default()
        };
        let b = bundle_from_proto(&wire).unwrap();
        assert!(b.is_x509_authority_tainted(&old));
        assert!(!b.is_x509_authority_tainted(&new));
        assert_eq!(b.tainted_jwt_key_ids().collect::<Vec<_>>(), vec!["k-old"]);

        // Without the flags, no marks.
        let mut clean = wire;
        clean
            .x509_authorities
            .iter_mut()
            .for_each(|c| c.tainted = false);
        clean
            .jwt_authorities
            .iter_mut()
            .for_each(|k| k.tainted = false);
        assert!(!bundle_from_proto(&clean).unwrap().has_taints());
    }
}
