//! A test PKI for the taint tests (cache, plan, core): CAs and SVID chains made with rcgen,
//! independent of the server's own CA code.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tessera_identity::{Bundle, TrustDomain, X509Authority};

/// A CA: its parameters, key and certificate (DER).
pub(crate) struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    /// The certificate, DER.
    pub(crate) der: Vec<u8>,
}

impl TestCa {
    /// A self-signed root named `cn`.
    pub(crate) fn root(cn: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(cn);
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Self { params, key, der }
    }

    /// An intermediate CA named `cn` signed by this one.
    pub(crate) fn intermediate(&self, cn: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = ca_params(cn);
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let der = params.signed_by(&key, &issuer).unwrap().der().to_vec();
        Self { params, key, der }
    }

    /// A leaf for `spiffe_id` signed by this CA; with `aki`, carrying the Authority Key
    /// Identifier (without it, only the issuer name and signature tell who issued it).
    pub(crate) fn leaf(&self, spiffe_id: &str, aki: bool) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .subject_alt_names
            .push(SanType::URI(spiffe_id.try_into().unwrap()));
        params.use_authority_key_identifier_extension = aki;
        let issuer = Issuer::from_params(&self.params, &self.key);
        params.signed_by(&key, &issuer).unwrap().der().to_vec()
    }

    /// Signs a PKCS#10 CSR (DER) as this CA: the leaf, DER, with its AKI.
    pub(crate) fn sign_csr(&self, csr: &[u8]) -> Vec<u8> {
        let der = rustls_pki_types::CertificateSigningRequestDer::from(csr);
        let mut request = rcgen::CertificateSigningRequestParams::from_der(&der).unwrap();
        request.params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&self.params, &self.key);
        request.signed_by(&issuer).unwrap().der().to_vec()
    }

    /// A chain for `spiffe_id`: a leaf with its AKI, then `intermediates` (DER).
    pub(crate) fn chain(&self, spiffe_id: &str, intermediates: &[&TestCa]) -> Vec<Vec<u8>> {
        let mut chain = vec![self.leaf(spiffe_id, true)];
        chain.extend(intermediates.iter().map(|i| i.der.clone()));
        chain
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// A bundle of `example.org` with these CAs, the `tainted` ones marked.
pub(crate) fn bundle(cas: &[&TestCa], tainted: &[&TestCa]) -> Bundle {
    let mut b = Bundle::new(TrustDomain::new("example.org").unwrap());
    for ca in cas {
        b.add_x509_authority(X509Authority::from_der(ca.der.clone()).unwrap());
    }
    for ca in tainted {
        assert!(b.taint_x509_authority(&ca.der));
    }
    b
}
