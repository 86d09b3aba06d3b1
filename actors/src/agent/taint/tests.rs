//! Which chains lead to a tainted authority, to a trusted one, or to none; JWT key IDs.

use base64::Engine;

use super::test_pki::{bundle, TestCa};
use super::*;

const ID: &str = "spiffe://example.org/w";

#[test]
fn given_a_leaf_of_the_tainted_ca_then_it_is_tainted_and_one_of_the_new_ca_is_trusted() {
    let (old, new) = (TestCa::root("old"), TestCa::root("new"));
    let b = bundle(&[&old, &new], &[&old]);
    let index = BundleIndex::new(&b);
    assert!(index.has_tainted());
    assert_eq!(index.judge(&old.chain(ID, &[])), Verdict::Tainted);
    assert_eq!(index.judge(&new.chain(ID, &[])), Verdict::Trusted);
    assert!(chains_to_tainted(&old.chain(ID, &[]), &b));
    assert!(!chains_to_tainted(&new.chain(ID, &[]), &b));
}

#[test]
fn given_no_taint_then_every_chain_of_the_bundle_is_trusted() {
    let (old, new) = (TestCa::root("old"), TestCa::root("new"));
    let b = bundle(&[&old, &new], &[]);
    let index = BundleIndex::new(&b);
    assert!(!index.has_tainted());
    assert_eq!(index.judge(&old.chain(ID, &[])), Verdict::Trusted);
    assert!(!chains_to_tainted(&old.chain(ID, &[]), &b));
}

#[test]
fn given_a_leaf_without_key_identifiers_then_the_signature_decides() {
    let (old, new) = (TestCa::root("same name"), TestCa::root("same name"));
    let b = bundle(&[&old, &new], &[&old]);
    let index = BundleIndex::new(&b);
    // Both CAs have the same subject: only the signature tells them apart.
    assert_eq!(index.judge(&[old.leaf(ID, false)]), Verdict::Tainted);
    assert_eq!(index.judge(&[new.leaf(ID, false)]), Verdict::Trusted);
}

#[test]
fn given_an_intermediate_issued_by_the_tainted_root_then_its_leaves_are_tainted() {
    let (root, other) = (TestCa::root("upstream root"), TestCa::root("other root"));
    let server_ca = root.intermediate("server CA");
    let b = bundle(&[&root, &other], &[&root]);
    assert_eq!(
        BundleIndex::new(&b).judge(&server_ca.chain(ID, &[&server_ca])),
        Verdict::Tainted
    );
    // The same chain with the root untainted is trusted.
    let b = bundle(&[&root, &other], &[&other]);
    assert_eq!(
        BundleIndex::new(&b).judge(&server_ca.chain(ID, &[&server_ca])),
        Verdict::Trusted
    );
}

#[test]
fn given_the_authority_removed_then_its_leaves_are_orphaned_and_junk_is_unknown() {
    let (old, new) = (TestCa::root("old"), TestCa::root("new"));
    let revoked = bundle(&[&new], &[]);
    let index = BundleIndex::new(&revoked);
    assert_eq!(index.judge(&old.chain(ID, &[])), Verdict::Orphaned);
    assert!(Verdict::Orphaned.needs_resign() && Verdict::Tainted.needs_resign());
    assert!(!Verdict::Trusted.needs_resign() && !Verdict::Unknown.needs_resign());
    assert_eq!(index.judge(&[vec![1, 2, 3]]), Verdict::Unknown);
    assert_eq!(index.judge(&[]), Verdict::Unknown);
    // A bundle without X.509 authorities judges nothing.
    let empty = bundle(&[], &[]);
    assert_eq!(
        BundleIndex::new(&empty).judge(&old.chain(ID, &[])),
        Verdict::Unknown
    );
}

fn token(header: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!("{}.{}.sig", b64(header), b64("{}"))
}

#[test]
fn jwt_key_ids_come_from_the_protected_header() {
    assert_eq!(
        jwt_key_id(&token(r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#)).as_deref(),
        Some("k1")
    );
    assert_eq!(jwt_key_id(&token(r#"{"alg":"ES256"}"#)), None);
    assert_eq!(jwt_key_id(&token(r#"{"kid":7}"#)), None);
    assert_eq!(jwt_key_id("not base64!.x.y"), None);
    assert_eq!(jwt_key_id(""), None);
    assert_eq!(jwt_key_id(&"A".repeat(10_000)), None);
}

#[test]
fn a_jwt_of_a_tainted_key_is_recognised() {
    use tessera_identity::{JwtAuthority, PublicKey};
    let key = rcgen::KeyPair::generate().unwrap();
    let public_key =
        PublicKey::from_spki_der(&rcgen::PublicKeyData::subject_public_key_info(&key)).unwrap();
    let mut b = bundle(&[], &[]);
    for kid in ["old", "new"] {
        b.add_jwt_authority(JwtAuthority {
            key_id: kid.into(),
            public_key: public_key.clone(),
            expires_at: None,
        })
        .unwrap();
    }
    let old = token(r#"{"alg":"ES256","kid":"old"}"#);
    let new = token(r#"{"alg":"ES256","kid":"new"}"#);
    assert!(!jwt_signed_by_tainted(&old, &b));
    assert!(b.taint_jwt_authority("old"));
    assert!(jwt_signed_by_tainted(&old, &b));
    assert!(!jwt_signed_by_tainted(&new, &b));
}
