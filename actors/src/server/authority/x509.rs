//! Certificate plumbing shared by CA building and SVID signing: subject names, validity,
//! serial numbers, and reading back what a certificate says.

use std::time::Duration;

use rcgen::string::{Ia5String, PrintableString};
use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, SanType};
use serde::{Deserialize, Serialize};
use tessera_eventlog::Clock;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::parse_x509_certificate;

use crate::random::{random_array, RandomSource};

/// How far back `notBefore` is set, for clock skew between the server and relying parties
/// (SPIRE's `NotBeforeCushion`).
pub const NOT_BEFORE_CUSHION_SECS: i64 = 10;

/// `serialNumber` attribute type (2.5.4.5): SPIRE puts the certificate's serial in the CA
/// subject, so every CA has a distinct subject name.
const DN_SERIAL_NUMBER: [u64; 4] = [2, 5, 4, 5];

/// A certificate subject: country (C), organization (O), and optionally a common name (CN).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubjectName {
    /// `C`, e.g. `US`; empty for none.
    pub country: String,
    /// `O`, e.g. `SPIFFE`; empty for none.
    pub organization: String,
    /// `CN`, if any.
    pub common_name: Option<String>,
}

impl SubjectName {
    /// SPIRE's default CA subject: `C=US, O=SPIFFE`.
    pub fn spiffe_ca() -> Self {
        Self {
            country: "US".into(),
            organization: "SPIFFE".into(),
            common_name: None,
        }
    }

    /// SPIRE's default X509-SVID subject: `C=US, O=SPIRE`.
    pub fn spire_svid() -> Self {
        Self {
            country: "US".into(),
            organization: "SPIRE".into(),
            common_name: None,
        }
    }

    /// The rcgen name, with `serial` (decimal) as `serialNumber` if given and `common_name`
    /// overriding the configured CN if given.
    pub(crate) fn to_dn(
        &self,
        serial: Option<&str>,
        common_name: Option<&str>,
    ) -> Result<DistinguishedName, String> {
        let mut dn = DistinguishedName::new();
        if !self.country.is_empty() {
            let c = PrintableString::try_from(self.country.as_str())
                .map_err(|_| format!("country \"{}\" is not a PrintableString", self.country))?;
            dn.push(DnType::CountryName, DnValue::PrintableString(c));
        }
        if !self.organization.is_empty() {
            dn.push(DnType::OrganizationName, self.organization.as_str());
        }
        if let Some(cn) = common_name.or(self.common_name.as_deref()) {
            dn.push(DnType::CommonName, cn);
        }
        if let Some(serial) = serial {
            let s = PrintableString::try_from(serial)
                .map_err(|_| "serial number is not a PrintableString".to_owned())?;
            dn.push(
                DnType::CustomDnType(DN_SERIAL_NUMBER.to_vec()),
                DnValue::PrintableString(s),
            );
        }
        Ok(dn)
    }
}

impl Default for SubjectName {
    fn default() -> Self {
        Self::spiffe_ca()
    }
}

/// Now, in Unix seconds, from the injected clock.
pub(crate) fn now_secs(clock: &dyn Clock) -> i64 {
    clock.now_unix_nanos().div_euclid(1_000_000_000)
}

/// Whole seconds of a duration, saturating.
pub(crate) fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Sets `params`' validity to `[not_before, not_after]` (Unix seconds; before 1970 clamps).
pub(crate) fn set_validity(params: &mut CertificateParams, not_before: i64, not_after: i64) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let at = |t: i64| epoch + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    params.not_before = at(not_before);
    params.not_after = at(not_after);
}

/// A random positive 128-bit serial number (RFC 5280: positive, at most 20 bytes).
pub(crate) fn random_serial(random: &dyn RandomSource) -> [u8; 16] {
    let mut serial: [u8; 16] = random_array(random);
    serial[0] &= 0x7f;
    if serial[0] == 0 {
        // Keep the encoding at 16 bytes (and the value non-zero).
        serial[0] = 0x01;
    }
    serial
}

/// A serial number in decimal (as Go prints it in SPIRE's CA subjects).
pub(crate) fn serial_decimal(serial: &[u8; 16]) -> String {
    u128::from_be_bytes(*serial).to_string()
}

/// A URI SAN.
pub(crate) fn uri_san(uri: &str) -> Result<SanType, String> {
    Ia5String::try_from(uri)
        .map(SanType::URI)
        .map_err(|_| format!("\"{uri}\" is not an IA5 string"))
}

/// What the authority needs to know of a certificate it reads back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertInfo {
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    pub(crate) is_ca: bool,
    pub(crate) spki_der: Vec<u8>,
    /// Subject equals issuer and the certificate verifies with its own key.
    pub(crate) self_signed: bool,
}

/// Reads a DER certificate.
pub(crate) fn cert_info(der: &[u8]) -> Result<CertInfo, String> {
    let cert = parse_one(der)?;
    Ok(CertInfo {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        is_ca: cert
            .basic_constraints()
            .map_err(|e| format!("bad basicConstraints: {e}"))?
            .is_some_and(|bc| bc.value.ca),
        spki_der: cert.public_key().raw.to_vec(),
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw()
            && cert.verify_signature(None).is_ok(),
    })
}

/// The subject key identifier, hex, of the upstream certificate that signed a CA: `None` for
/// a self-signed CA (no upstream chain, its own certificate its trust anchor). Read from the
/// CA's authorityKeyIdentifier, else the subjectKeyIdentifier of the certificate above it.
pub(crate) fn upstream_authority_id(record: &crate::server::events::CaRecord) -> Option<String> {
    if record.upstream_chain.is_empty()
        && record.trust_anchors.iter().all(|a| *a == record.cert_der)
    {
        return None;
    }
    let from_aki = parse_one(&record.cert_der).ok().and_then(|cert| {
        cert.extensions()
            .iter()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|k| hex::encode(k.0))
                }
                _ => None,
            })
    });
    from_aki.or_else(|| {
        record
            .upstream_chain
            .first()
            .or(record.trust_anchors.first())
            .and_then(|der| subject_key_id(der))
    })
}

/// The subjectKeyIdentifier of a certificate, hex (lowercase).
pub(crate) fn subject_key_id(der: &[u8]) -> Option<String> {
    let cert = parse_one(der).ok()?;
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(hex::encode(k.0)),
            _ => None,
        })
}

fn parse_one(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(format!("{} bytes of trailing data", rest.len())),
        Err(e) => Err(format!("not a DER certificate: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    #[test]
    fn serials_are_positive_16_byte_numbers() {
        let random = SeededRandom::new(1);
        for _ in 0..200 {
            let s = random_serial(&random);
            assert!(s[0] > 0 && s[0] < 0x80, "{s:?}");
        }
        let mut one = [0u8; 16];
        one[15] = 1;
        assert_eq!(serial_decimal(&one), "1");
    }

    #[test]
    fn subject_names() {
        let dn = SubjectName::spiffe_ca().to_dn(Some("42"), None).unwrap();
        let kinds: Vec<_> = dn.iter().map(|(t, _)| t.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                DnType::CountryName,
                DnType::OrganizationName,
                DnType::CustomDnType(DN_SERIAL_NUMBER.to_vec())
            ]
        );
        let dn = SubjectName::spire_svid()
            .to_dn(None, Some("web.example.org"))
            .unwrap();
        assert_eq!(
            dn.get(&DnType::CommonName),
            Some(&DnValue::Utf8String("web.example.org".into()))
        );
        let bad = SubjectName {
            country: "Ü".into(),
            ..SubjectName::spiffe_ca()
        };
        assert!(bad.to_dn(None, None).unwrap_err().contains("country"));
    }
}
