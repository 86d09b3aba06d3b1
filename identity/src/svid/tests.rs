//! X.509-SVID validation: a valid SVID passes; each rule of the standard, broken alone, fails
//! with the error naming it.

use std::time::{Duration, UNIX_EPOCH};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType,
};

use super::*;
use crate::test_support::{ca_params, leaf_params, now, uri, Ca};
use crate::{Bundle, IdError};

const TD: &str = "example.org";
const ID: &str = "spiffe://example.org/web";

fn bundle_of(ca: &Ca) -> Bundle {
    let mut b = Bundle::new(TrustDomain::new(TD).unwrap());
    b.add_x509_authority(ca.authority());
    b
}

/// Verifies a leaf made from `params`, signed directly by a fresh root in the bundle.
fn verify_leaf(params: &CertificateParams) -> Result<VerifiedX509Svid, SvidError> {
    let ca = Ca::root(TD);
    let leaf = ca.sign(params);
    verify_x509_svid(&[leaf], &bundle_of(&ca), now())
}

fn with(
    mut params: CertificateParams,
    f: impl FnOnce(&mut CertificateParams),
) -> CertificateParams {
    f(&mut params);
    params
}

#[test]
fn a_valid_svid_passes() {
    let ok = verify_leaf(&leaf_params(ID)).unwrap();
    assert_eq!(ok.spiffe_id().to_string(), ID);
    assert!(ok.not_before() < ok.not_after());
    // The EKU is optional.
    assert!(verify_leaf(&with(leaf_params(ID), |p| p.extended_key_usages.clear())).is_ok());
    // An empty subject is fine when the SAN is critical (rcgen marks it so).
    assert!(
        verify_leaf(&with(leaf_params(ID), |p| p.distinguished_name =
            DistinguishedName::new()))
        .is_ok()
    );
}

#[test]
fn a_valid_svid_passes_through_an_intermediate() {
    let root = Ca::root(TD);
    let mid = root.intermediate(with(ca_params(TD), |p| {
        p.distinguished_name
            .push(DnType::CommonName, "intermediate");
    }));
    let leaf = mid.sign(&leaf_params(ID));
    let ok = verify_x509_svid(&[leaf.clone(), mid.der.clone()], &bundle_of(&root), now()).unwrap();
    assert_eq!(ok.spiffe_id().to_string(), ID);
    // Without the intermediate the leaf does not chain to the root.
    assert!(matches!(
        verify_x509_svid(&[leaf], &bundle_of(&root), now()),
        Err(SvidError::UnknownAuthority { .. })
    ));
}

#[test]
fn the_leaf_needs_exactly_one_spiffe_uri_san_with_a_path() {
    let no_uri = with(leaf_params(ID), |p| {
        p.subject_alt_names = vec![SanType::DnsName("web".try_into().unwrap())]
    });
    assert_eq!(verify_leaf(&no_uri), Err(SvidError::NoUriSan));
    let two = with(leaf_params(ID), |p| {
        p.subject_alt_names.push(uri("spiffe://example.org/other"))
    });
    assert_eq!(
        verify_leaf(&two),
        Err(SvidError::MultipleUriSans { count: 2 })
    );
    let not_spiffe = with(leaf_params(ID), |p| {
        p.subject_alt_names = vec![uri("https://example.org/web")]
    });
    assert!(matches!(
        verify_leaf(&not_spiffe),
        Err(SvidError::InvalidSpiffeId(IdError::WrongScheme { .. }))
    ));
    let bad_id = with(leaf_params(ID), |p| {
        p.subject_alt_names = vec![uri("spiffe://example.org/a/")]
    });
    assert!(matches!(
        verify_leaf(&bad_id),
        Err(SvidError::InvalidSpiffeId(_))
    ));
    assert!(matches!(
        verify_leaf(&leaf_params("spiffe://example.org")),
        Err(SvidError::RootPathLeaf { .. })
    ));
    // DNS SANs beside the URI SAN are allowed.
    let with_dns = with(leaf_params(ID), |p| {
        p.subject_alt_names
            .push(SanType::DnsName("web".try_into().unwrap()))
    });
    assert!(verify_leaf(&with_dns).is_ok());
}

#[test]
fn an_empty_subject_needs_a_critical_san() {
    // A hand-made, non-critical SAN: SEQUENCE { [6] IA5String uri }.
    let id = ID.as_bytes();
    let mut san = vec![0x30, (id.len() + 2) as u8, 0x86, id.len() as u8];
    san.extend_from_slice(id);
    let params = with(leaf_params(ID), |p| {
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names.clear();
        p.custom_extensions = vec![CustomExtension::from_oid_content(&[2, 5, 29, 17], san)];
    });
    assert_eq!(verify_leaf(&params), Err(SvidError::SanNotCritical));
}

#[test]
fn the_leaf_must_not_be_a_ca() {
    let ca_leaf = with(leaf_params(ID), |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)
    });
    assert_eq!(verify_leaf(&ca_leaf), Err(SvidError::LeafIsCa));
    // No basicConstraints at all means CA:false.
    assert!(verify_leaf(&with(leaf_params(ID), |p| p.is_ca = IsCa::NoCa)).is_ok());
}

#[test]
fn the_leaf_key_usage_rules() {
    let none = with(leaf_params(ID), |p| p.key_usages.clear());
    assert_eq!(verify_leaf(&none), Err(SvidError::MissingKeyUsage));
    // keyUsage digitalSignature, but not critical: BIT STRING 07 80.
    let not_critical = with(leaf_params(ID), |p| {
        p.key_usages.clear();
        let mut ext =
            CustomExtension::from_oid_content(&[2, 5, 29, 15], vec![0x03, 0x02, 0x07, 0x80]);
        ext.set_criticality(false);
        p.custom_extensions = vec![ext];
    });
    assert_eq!(
        verify_leaf(&not_critical),
        Err(SvidError::KeyUsageNotCritical)
    );
    let no_sig = with(leaf_params(ID), |p| {
        p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]
    });
    assert_eq!(
        verify_leaf(&no_sig),
        Err(SvidError::MissingDigitalSignature)
    );
    let cert_sign = with(leaf_params(ID), |p| {
        p.key_usages.push(KeyUsagePurpose::KeyCertSign)
    });
    assert_eq!(verify_leaf(&cert_sign), Err(SvidError::LeafHasKeyCertSign));
    let crl_sign = with(leaf_params(ID), |p| {
        p.key_usages.push(KeyUsagePurpose::CrlSign)
    });
    assert_eq!(verify_leaf(&crl_sign), Err(SvidError::LeafHasCrlSign));
    let agreement = with(leaf_params(ID), |p| {
        p.key_usages.push(KeyUsagePurpose::KeyAgreement)
    });
    assert!(verify_leaf(&agreement).is_ok());
}

#[test]
fn an_eku_needs_server_and_client_auth() {
    let server_only = with(leaf_params(ID), |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
    });
    assert_eq!(
        verify_leaf(&server_only),
        Err(SvidError::EkuIncomplete {
            missing: "clientAuth"
        })
    );
    let client_only = with(leaf_params(ID), |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth]
    });
    assert_eq!(
        verify_leaf(&client_only),
        Err(SvidError::EkuIncomplete {
            missing: "serverAuth"
        })
    );
    let other = with(leaf_params(ID), |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning]
    });
    assert_eq!(
        verify_leaf(&other),
        Err(SvidError::EkuIncomplete {
            missing: "serverAuth"
        })
    );
}

#[test]
fn signing_certificates_must_be_cas_with_key_cert_sign() {
    let root = Ca::root(TD);
    let chain_through = |mid_params: CertificateParams| {
        let mid = root.intermediate(with(mid_params, |p| {
            p.distinguished_name
                .push(DnType::CommonName, "intermediate");
        }));
        let leaf = mid.sign(&leaf_params(ID));
        verify_x509_svid(&[leaf, mid.der.clone()], &bundle_of(&root), now())
    };
    let not_ca = with(ca_params(TD), |p| p.is_ca = IsCa::ExplicitNoCa);
    assert_eq!(
        chain_through(not_ca),
        Err(SvidError::SigningCertNotCa { index: 1 })
    );
    let no_cert_sign = with(ca_params(TD), |p| {
        p.key_usages = vec![KeyUsagePurpose::CrlSign]
    });
    assert_eq!(
        chain_through(no_cert_sign),
        Err(SvidError::SigningCertMissingKeyCertSign { index: 1 })
    );
    let no_ku = with(ca_params(TD), |p| p.key_usages.clear());
    assert_eq!(
        chain_through(no_ku),
        Err(SvidError::SigningCertMissingKeyCertSign { index: 1 })
    );
    let with_path = with(ca_params(TD), |p| {
        p.subject_alt_names = vec![uri("spiffe://example.org/ca")]
    });
    assert!(matches!(
        chain_through(with_path),
        Err(SvidError::SigningCertIdHasPath { index: 1, .. })
    ));
    let non_spiffe_uri = with(ca_params(TD), |p| {
        p.subject_alt_names = vec![uri("https://pki.example.org/ca")]
    });
    assert!(chain_through(non_spiffe_uri).is_ok());
}

#[test]
fn the_chain_must_reach_the_bundle_of_the_leaf_trust_domain() {
    let ca = Ca::root(TD);
    let leaf = ca.sign(&leaf_params(ID));
    let other_ca = Ca::self_signed(with(ca_params(TD), |p| {
        p.distinguished_name.push(DnType::CommonName, "another CA");
    }));
    assert_eq!(
        verify_x509_svid(&[&leaf], &bundle_of(&other_ca), now()),
        Err(SvidError::UnknownAuthority {
            trust_domain: TrustDomain::new(TD).unwrap()
        })
    );
    // Same issuer name, different key: the signature gives it away.
    let impostor = Ca::root(TD);
    assert_eq!(
        verify_x509_svid(&[&leaf], &bundle_of(&impostor), now()),
        Err(SvidError::BadSignature)
    );

    // The bundle is chosen by the leaf's trust domain, not by what happens to be passed in.
    let foreign = Bundle::new(TrustDomain::new("other.org").unwrap());
    assert!(matches!(
        verify_x509_svid(&[&leaf], &foreign, now()),
        Err(SvidError::NoBundle { .. })
    ));
    let empty = Bundle::new(TrustDomain::new(TD).unwrap());
    assert!(matches!(
        verify_x509_svid(&[&leaf], &empty, now()),
        Err(SvidError::NoX509Authorities { .. })
    ));
    let both = vec![foreign, bundle_of(&ca)];
    assert!(verify_x509_svid(&[&leaf], &both, now()).is_ok());
}

#[test]
fn validity_periods_are_checked_at_the_given_time() {
    let ca = Ca::root(TD);
    let expired = ca.sign(&with(leaf_params(ID), |p| {
        p.not_before = date_time_ymd(2019, 1, 1);
        p.not_after = date_time_ymd(2020, 1, 1);
    }));
    assert!(matches!(
        verify_x509_svid(&[&expired], &bundle_of(&ca), now()),
        Err(SvidError::Expired {
            not_after: 1_577_836_800,
            ..
        })
    ));
    // The same certificate was fine in 2019.
    let in_2019 = UNIX_EPOCH + Duration::from_secs(1_560_000_000);
    assert!(verify_x509_svid(&[&expired], &bundle_of(&ca), in_2019).is_ok());

    let future = ca.sign(&with(leaf_params(ID), |p| {
        p.not_before = date_time_ymd(2040, 1, 1)
    }));
    assert!(matches!(
        verify_x509_svid(&[&future], &bundle_of(&ca), now()),
        Err(SvidError::NotYetValid { .. })
    ));

    let old_root = Ca::self_signed(with(ca_params(TD), |p| {
        p.not_after = date_time_ymd(2025, 1, 1)
    }));
    let leaf = old_root.sign(&leaf_params(ID));
    assert!(matches!(
        verify_x509_svid(&[&leaf], &bundle_of(&old_root), now()),
        Err(SvidError::Expired { .. })
    ));
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let ca = Ca::root(TD);
    let b = bundle_of(&ca);
    assert_eq!(
        verify_x509_svid::<_, Vec<u8>>(&[], &b, now()),
        Err(SvidError::EmptyChain)
    );
    assert!(matches!(
        verify_x509_svid(&[b"garbage".to_vec()], &b, now()),
        Err(SvidError::MalformedCertificate { index: 0, .. })
    ));
    let leaf = ca.sign(&leaf_params(ID));
    assert!(matches!(
        verify_x509_svid(&[leaf.clone(), vec![0x30, 0x00]], &b, now()),
        Err(SvidError::MalformedCertificate { index: 1, .. })
    ));
    let mut trailing = leaf.clone();
    trailing.push(0);
    assert!(matches!(
        verify_x509_svid(&[trailing], &b, now()),
        Err(SvidError::MalformedCertificate { index: 0, .. })
    ));
    let long = vec![leaf; MAX_CHAIN_LEN + 1];
    assert!(matches!(
        verify_x509_svid(&long, &b, now()),
        Err(SvidError::ChainTooLong { .. })
    ));
}

#[test]
fn leaf_only_check() {
    let ca = Ca::root(TD);
    let leaf = ca.sign(&leaf_params(ID));
    assert_eq!(
        check_x509_svid_leaf(&leaf).map(|id| id.to_string()),
        Ok(ID.to_owned())
    );
    assert_eq!(
        check_x509_svid_leaf(&ca.der),
        Err(SvidError::RootPathLeaf {
            spiffe_id: SpiffeId::new("spiffe://example.org").unwrap()
        })
    );
}

#[test]
fn messages_name_the_rule() {
    let e = SvidError::EkuIncomplete {
        missing: "clientAuth",
    }
    .to_string();
    assert!(
        e.contains("clientAuth") && e.contains("serverAuth and clientAuth"),
        "{e}"
    );
}
