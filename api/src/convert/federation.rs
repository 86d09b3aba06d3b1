//! Federation relationships: [`Relationship`] (and its bootstrap bundle) ⇄
//! `spire.api.types.FederationRelationship`. Inbound conversions name the field that is wrong
//! (`bundle_endpoint_url`, `https_spiffe.endpoint_spiffe_id`, `trust_domain_bundle...`); the
//! URL's own rules are the aggregate's ([`Relationship::check`]), run here too so a batch item
//! fails before it reaches the actor.

use tessera_actors::server::federation::{EndpointProfile, Relationship};
use tessera_identity::{Bundle, SpiffeId};
use tessera_proto::spire::api::types;
use tessera_proto::spire::api::types::federation_relationship::BundleEndpointProfile;

use super::bundle::{bundle_from_proto, bundle_to_proto};
use super::error::{shown, ConvertError};
use super::ids::trust_domain;

/// Every field of a relationship (SPIRE's default when a mask is unset).
pub const FULL_RELATIONSHIP_MASK: types::FederationRelationshipMask =
    types::FederationRelationshipMask {
        bundle_endpoint_url: true,
        bundle_endpoint_profile: true,
        trust_domain_bundle: true,
    };

/// A relationship for the wire, with its federated bundle if one is held, and only the fields
/// `mask` selects (all when `None`; the trust domain always).
pub fn relationship_to_proto(
    r: &Relationship,
    bundle: Option<&Bundle>,
    mask: Option<&types::FederationRelationshipMask>,
) -> types::FederationRelationship {
    let m = mask.unwrap_or(&FULL_RELATIONSHIP_MASK);
    types::FederationRelationship {
        trust_domain: r.trust_domain.as_str().to_owned(),
        bundle_endpoint_url: if m.bundle_endpoint_url {
            r.bundle_endpoint_url.clone()
        } else {
            String::new()
        },
        bundle_endpoint_profile: m
            .bundle_endpoint_profile
            .then(|| profile_to_proto(&r.profile)),
        trust_domain_bundle: if m.trust_domain_bundle {
            bundle.map(|b| bundle_to_proto(b, None))
        } else {
            None
        },
    }
}

fn profile_to_proto(p: &EndpointProfile) -> BundleEndpointProfile {
    match p {
        EndpointProfile::HttpsWeb => BundleEndpointProfile::HttpsWeb(types::HttpsWebProfile {}),
        EndpointProfile::HttpsSpiffe { endpoint_spiffe_id } => {
            BundleEndpointProfile::HttpsSpiffe(types::HttpsspiffeProfile {
                endpoint_spiffe_id: endpoint_spiffe_id.as_str().to_owned(),
            })
        }
    }
}

/// A wire relationship → the relationship and the bundle it brings, every field required
/// but the bundle.
pub fn relationship_from_proto(
    p: &types::FederationRelationship,
) -> Result<(Relationship, Option<Bundle>), ConvertError> {
    let td = relationship_trust_domain(p)?;
    let relationship = Relationship {
        trust_domain: td,
        bundle_endpoint_url: url_from_proto(&p.bundle_endpoint_url)?,
        profile: profile_from_proto(p.bundle_endpoint_profile.as_ref())?,
    };
    check(&relationship)?;
    let bundle = p
        .trust_domain_bundle
        .as_ref()
        .map(relationship_bundle)
        .transpose()?;
    Ok((relationship, bundle))
}

/// The trust domain a wire relationship is about (`trust_domain`, required).
pub fn relationship_trust_domain(
    p: &types::FederationRelationship,
) -> Result<tessera_identity::TrustDomain, ConvertError> {
    if p.trust_domain.is_empty() {
        return Err(ConvertError::Missing {
            field: "trust_domain",
        });
    }
    trust_domain("trust_domain", &p.trust_domain)
}

/// Overwrites the fields of `existing` that `mask` selects with those of `p` (SPIRE's
/// `BatchUpdateFederationRelationship`); returns the bundle to store, if the mask selects
/// `trust_domain_bundle` and `p` carries one.
pub fn apply_relationship_fields(
    existing: &mut Relationship,
    p: &types::FederationRelationship,
    mask: &types::FederationRelationshipMask,
) -> Result<Option<Bundle>, ConvertError> {
    if mask.bundle_endpoint_url {
        existing.bundle_endpoint_url = url_from_proto(&p.bundle_endpoint_url)?;
    }
    if mask.bundle_endpoint_profile {
        existing.profile = profile_from_proto(p.bundle_endpoint_profile.as_ref())?;
    }
    check(existing)?;
    if mask.trust_domain_bundle {
        p.trust_domain_bundle
            .as_ref()
            .map(relationship_bundle)
            .transpose()
    } else {
        Ok(None)
    }
}

fn url_from_proto(url: &str) -> Result<String, ConvertError> {
    if url.is_empty() {
        return Err(ConvertError::Missing {
            field: "bundle_endpoint_url",
        });
    }
    Ok(url.to_owned())
}

fn check(r: &Relationship) -> Result<(), ConvertError> {
    r.check().map_err(|e| ConvertError::Invalid {
        field: "bundle_endpoint_url",
        value: shown(&r.bundle_endpoint_url),
        rule: match e {
            tessera_actors::server::federation::FederationError::BadUrl { reason, .. } => reason,
            other => other.to_string(),
        },
    })
}

fn profile_from_proto(p: Option<&BundleEndpointProfile>) -> Result<EndpointProfile, ConvertError> {
    match p {
        None => Err(ConvertError::Invalid {
            field: "bundle_endpoint_profile",
            value: String::new(),
            rule: "set https_web or https_spiffe".into(),
        }),
        Some(BundleEndpointProfile::HttpsWeb(_)) => Ok(EndpointProfile::HttpsWeb),
        Some(BundleEndpointProfile::HttpsSpiffe(s)) => {
            const FIELD: &str = "https_spiffe.endpoint_spiffe_id";
            if s.endpoint_spiffe_id.is_empty() {
                return Err(ConvertError::Missing { field: FIELD });
            }
            let endpoint_spiffe_id =
                SpiffeId::new(&s.endpoint_spiffe_id).map_err(|source| ConvertError::Id {
                    field: FIELD,
                    source,
                })?;
            Ok(EndpointProfile::HttpsSpiffe { endpoint_spiffe_id })
        }
    }
}

/// The bundle given with a relationship; its errors are prefixed with the field.
fn relationship_bundle(b: &types::Bundle) -> Result<Bundle, ConvertError> {
    bundle_from_proto(b).map_err(|e| ConvertError::Invalid {
        field: "trust_domain_bundle",
        value: shown(&b.trust_domain),
        rule: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use tessera_identity::TrustDomain;

    use super::*;

    fn wire(url: &str, profile: Option<BundleEndpointProfile>) -> types::FederationRelationship {
        types::FederationRelationship {
            trust_domain: "partner.org".into(),
            bundle_endpoint_url: url.into(),
            bundle_endpoint_profile: profile,
            trust_domain_bundle: None,
        }
    }

    fn web() -> Option<BundleEndpointProfile> {
        Some(BundleEndpointProfile::HttpsWeb(types::HttpsWebProfile {}))
    }

    #[test]
    fn round_trip_and_masks() {
        let spiffe = Some(BundleEndpointProfile::HttpsSpiffe(
            types::HttpsspiffeProfile {
                endpoint_spiffe_id: "spiffe://partner.org/spire/server".into(),
            },
        ));
        let p = wire("https://partner.org:8443/bundle", spiffe);
        let (r, bundle) = relationship_from_proto(&p).unwrap();
        assert_eq!(r.trust_domain, TrustDomain::new("partner.org").unwrap());
        assert_eq!(r.profile.name(), "https_spiffe");
        assert!(bundle.is_none());
        assert_eq!(relationship_to_proto(&r, None, None), p);
        let masked = relationship_to_proto(
            &r,
            None,
            Some(&types::FederationRelationshipMask {
                bundle_endpoint_url: false,
                bundle_endpoint_profile: false,
                trust_domain_bundle: true,
            }),
        );
        assert_eq!(masked.trust_domain, "partner.org");
        assert!(masked.bundle_endpoint_url.is_empty());
        assert!(masked.bundle_endpoint_profile.is_none());
    }

    #[test]
    fn errors_name_the_field() {
        let e = relationship_from_proto(&wire("http://partner.org", web())).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("bundle_endpoint_url \"http://partner.org\": ")
                && e.to_string().contains("https://"),
            "{e}"
        );
        let e = relationship_from_proto(&wire("https://p.org", None)).unwrap_err();
        assert!(e.to_string().starts_with("bundle_endpoint_profile"), "{e}");
        let e = relationship_from_proto(&wire(
            "https://p.org",
            Some(BundleEndpointProfile::HttpsSpiffe(
                types::HttpsspiffeProfile::default(),
            )),
        ))
        .unwrap_err();
        assert_eq!(e.to_string(), "https_spiffe.endpoint_spiffe_id is required");
        let mut p = wire("https://p.org", web());
        p.trust_domain = "Bad.org".into();
        let e = relationship_from_proto(&p).unwrap_err();
        assert!(e.to_string().starts_with("trust_domain: "), "{e}");
        let mut p = wire("https://p.org", web());
        p.trust_domain_bundle = Some(types::Bundle {
            trust_domain: "partner.org".into(),
            x509_authorities: vec![types::X509Certificate {
                asn1: b"not der".to_vec(),
                tainted: false,
            }],
            ..types::Bundle::default()
        });
        let e = relationship_from_proto(&p).unwrap_err();
        assert!(e.to_string().starts_with("trust_domain_bundle "), "{e}");
    }

    #[test]
    fn update_touches_only_masked_fields() {
        let (mut r, _) = relationship_from_proto(&wire("https://a.org/b", web())).unwrap();
        let input = wire("https://new.org/b", None);
        let mask = types::FederationRelationshipMask {
            bundle_endpoint_url: true,
            ..Default::default()
        };
        assert_eq!(apply_relationship_fields(&mut r, &input, &mask), Ok(None));
        assert_eq!(r.bundle_endpoint_url, "https://new.org/b");
        assert_eq!(r.profile, EndpointProfile::HttpsWeb);
        // The profile is selected but missing: refused, naming it.
        let e = apply_relationship_fields(&mut r, &input, &FULL_RELATIONSHIP_MASK).unwrap_err();
        assert!(e.to_string().starts_with("bundle_endpoint_profile"), "{e}");
    }
}
