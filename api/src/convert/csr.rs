//! What `MintX509SVID` takes from a CSR: its one SPIFFE ID (URI SAN) and its DNS names, as
//! SPIRE does. The signer checks the CSR's signature and key; this only reads the names.

use tessera_identity::SpiffeId;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509CertificationRequest};

use super::error::{shown, ConvertError};

/// Largest CSR parsed here, in bytes (the signer has its own, configurable bound).
const MAX_CSR_BYTES: usize = 64 * 1024;

/// The names a CSR asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrNames {
    /// The SPIFFE ID of its URI SAN.
    pub spiffe_id: SpiffeId,
    /// Its DNS SANs.
    pub dns_names: Vec<String>,
}

fn invalid(rule: impl Into<String>) -> ConvertError {
    ConvertError::Invalid {
        field: "csr",
        value: String::new(),
        rule: rule.into(),
    }
}

/// Reads the SPIFFE ID and DNS names of a DER PKCS#10 CSR.
pub fn csr_names(der: &[u8]) -> Result<CsrNames, ConvertError> {
    if der.is_empty() {
        return Err(ConvertError::Missing { field: "csr" });
    }
    if der.len() > MAX_CSR_BYTES {
        return Err(invalid(format!(
            "{} bytes is over the limit of {MAX_CSR_BYTES}",
            der.len()
        )));
    }
    let (rest, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| invalid(format!("not a DER PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(invalid(format!("{} bytes after the request", rest.len())));
    }
    let mut uris = Vec::new();
    let mut dns_names = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::URI(u) => uris.push((*u).to_owned()),
                    GeneralName::DNSName(d) => dns_names.push((*d).to_owned()),
                    _ => {}
                }
            }
        }
    }
    let uri = match uris.as_slice() {
        [one] => one,
        [] => {
            return Err(invalid(
                "has no URI SAN; put the SPIFFE ID in the CSR's subjectAltName",
            ))
        }
        _ => {
            return Err(invalid(format!(
                "has {} URI SANs; an X509-SVID carries exactly one SPIFFE ID",
                uris.len()
            )))
        }
    };
    let spiffe_id = SpiffeId::new(uri).map_err(|source| match source {
        e @ tessera_identity::IdError::WrongScheme { .. } => ConvertError::Invalid {
            field: "csr",
            value: shown(uri),
            rule: format!("the URI SAN must be a SPIFFE ID: {e}"),
        },
        source => ConvertError::Id {
            field: "csr",
            source,
        },
    })?;
    Ok(CsrNames {
        spiffe_id,
        dns_names,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    use super::*;

    fn csr(sans: Vec<SanType>) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.serialize_request(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_the_spiffe_id_and_dns_names() {
        let der = csr(vec![
            SanType::URI("spiffe://example.org/web".try_into().unwrap()),
            SanType::DnsName("web.local".try_into().unwrap()),
        ]);
        let names = csr_names(&der).unwrap();
        assert_eq!(names.spiffe_id.to_string(), "spiffe://example.org/web");
        assert_eq!(names.dns_names, vec!["web.local".to_string()]);
    }

    #[test]
    fn refuses_missing_many_or_foreign_uris() {
        assert!(csr_names(&[]).is_err());
        assert!(csr_names(&csr(vec![]))
            .unwrap_err()
            .to_string()
            .contains("no URI SAN"));
        let two = csr(vec![
            SanType::URI("spiffe://example.org/a".try_into().unwrap()),
            SanType::URI("spiffe://example.org/b".try_into().unwrap()),
        ]);
        assert!(csr_names(&two)
            .unwrap_err()
            .to_string()
            .contains("2 URI SANs"));
        let https = csr(vec![SanType::URI(
            "https://example.org/a".try_into().unwrap(),
        )]);
        assert!(csr_names(&https)
            .unwrap_err()
            .to_string()
            .contains("must be a SPIFFE ID"));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = csr_names(&bytes);
        }
    }
}
