//! The X.509-SVID template (X509-SVID standard, SPIRE's defaults) and signing of one chunk of
//! a batch. Blocking: runs on the signing pool.

use rcgen::string::Ia5String;
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, SanType};
use tessera_identity::{SpiffeId, MAX_DNS_NAME_LEN};

use super::{IssuedX509Svid, SigningCa, SvidRejection};

use crate::server::authority::csr::parse_csr;
use crate::server::authority::x509::{set_validity, uri_san, SubjectName};

/// One item to sign, its inputs already resolved (serial drawn, validity computed).
pub(super) struct Job {
    pub(super) csr_der: Vec<u8>,
    pub(super) spiffe_id: SpiffeId,
    pub(super) dns_names: Vec<String>,
    pub(super) serial: [u8; 16],
    pub(super) not_before: i64,
    pub(super) not_after: i64,
}

/// Signs `jobs` with `ca`; one result per job, in order.
pub(super) fn sign_chunk(
    ca: &SigningCa,
    subject: &SubjectName,
    max_csr_bytes: usize,
    jobs: Vec<Job>,
) -> Vec<Result<IssuedX509Svid, SvidRejection>> {
    let issuer = match Issuer::from_ca_cert_der(&ca.record.cert_der.clone().into(), ca.key.as_ref())
    {
        Ok(issuer) => issuer,
        Err(e) => {
            let reason = format!("CA certificate {} unusable: {e}", ca.record.authority_id);
            return jobs
                .iter()
                .map(|_| {
                    Err(SvidRejection::Signing {
                        reason: reason.clone(),
                    })
                })
                .collect();
        }
    };
    jobs.into_iter()
        .map(|job| sign_one(ca, &issuer, subject, max_csr_bytes, job))
        .collect()
}

/// Signs one CSR with `ca` by the X.509-SVID template, blocking, with the serial and validity
/// given: the code path of a batch's chunk, for the simulator's `crypto = "real"` (which has
/// no signer queue or clock of its own to go through).
///
/// # Errors
/// The item's [`SvidRejection`] (a CSR that does not parse, a bad DNS name, a signing fault).
#[allow(clippy::too_many_arguments)] // The resolved inputs of one job, as the signer has them.
pub fn sign_x509_blocking(
    ca: &SigningCa,
    subject: &SubjectName,
    max_csr_bytes: usize,
    csr_der: Vec<u8>,
    spiffe_id: SpiffeId,
    serial: [u8; 16],
    not_before: i64,
    not_after: i64,
) -> Result<IssuedX509Svid, SvidRejection> {
    let job = Job {
        csr_der,
        spiffe_id,
        dns_names: Vec::new(),
        serial,
        not_before,
        not_after,
    };
    sign_chunk(ca, subject, max_csr_bytes, vec![job])
        .pop()
        .unwrap_or_else(|| {
            Err(SvidRejection::Signing {
                reason: "no result".into(),
            })
        })
}

fn sign_one(
    ca: &SigningCa,
    issuer: &Issuer<'_, &crate::server::keys::SigningKeyPair>,
    subject: &SubjectName,
    max_csr_bytes: usize,
    job: Job,
) -> Result<IssuedX509Svid, SvidRejection> {
    let key = parse_csr(&job.csr_der, max_csr_bytes)?;
    let signing = |reason: String| SvidRejection::Signing { reason };

    let mut params = CertificateParams::default();
    params.distinguished_name = subject
        .to_dn(None, job.dns_names.first().map(String::as_str))
        .map_err(signing)?;
    params.serial_number = Some(job.serial.to_vec().into());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyAgreement,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let mut sans = vec![uri_san(&job.spiffe_id.to_string()).map_err(signing)?];
    for name in &job.dns_names {
        let ia5 =
            Ia5String::try_from(name.as_str()).map_err(|_| SvidRejection::InvalidDnsName {
                name: shown(name),
                reason: "not ASCII",
            })?;
        sans.push(SanType::DnsName(ia5));
    }
    params.subject_alt_names = sans;
    set_validity(&mut params, job.not_before, job.not_after);

    let cert = params
        .signed_by(&key, issuer)
        .map_err(|e| signing(e.to_string()))?;
    let mut cert_chain = Vec::with_capacity(2 + ca.record.upstream_chain.len());
    cert_chain.push(cert.der().to_vec());
    cert_chain.extend(ca.chain_tail());
    Ok(IssuedX509Svid {
        spiffe_id: job.spiffe_id,
        cert_chain,
        serial_hex: hex::encode(job.serial),
        not_before: job.not_before,
        not_after: job.not_after,
        authority_id: ca.record.authority_id.clone(),
    })
}

/// Checks DNS names for a certificate: count, length, and hostname characters (a leading
/// `*.` wildcard label is allowed, as SPIRE does).
pub(super) fn check_dns_names(names: &[String], max: usize) -> Result<(), SvidRejection> {
    if names.len() > max {
        return Err(SvidRejection::TooManyDnsNames {
            count: names.len(),
            max,
        });
    }
    for name in names {
        let invalid = |reason| SvidRejection::InvalidDnsName {
            name: shown(name),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("it is empty"));
        }
        if name.len() > MAX_DNS_NAME_LEN {
            return Err(invalid("it is longer than 255 bytes"));
        }
        let host = name.strip_prefix("*.").unwrap_or(name);
        for label in host.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(invalid("each label must be 1 to 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    "only ASCII letters, digits, '-' and '_' are allowed in labels",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(invalid("a label cannot start or end with '-'"));
            }
        }
    }
    Ok(())
}

fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_name_rules() {
        let ok = |n: &str| check_dns_names(&[n.to_owned()], 4);
        assert_eq!(ok("web.example.org"), Ok(()));
        assert_eq!(ok("*.example.org"), Ok(()));
        assert_eq!(ok("localhost"), Ok(()));
        for bad in [
            "",
            "a..b",
            "-a.b",
            "a b",
            "é.org",
            "a.*.org",
            &"a".repeat(64),
        ] {
            assert!(ok(bad).is_err(), "{bad:?}");
        }
        let many = vec!["a".to_owned(); 5];
        assert_eq!(
            check_dns_names(&many, 4),
            Err(SvidRejection::TooManyDnsNames { count: 5, max: 4 })
        );
    }
}
