//! The authority's part of the config: CA and JWT keys, rotation check, signing limits, key
//! manager, upstream CA; validated into the actors' [`AuthoritySettings`].

use std::time::Duration;

use tessera_actors::server::authority::{AuthoritySettings, CaSettings, SubjectName, UpstreamDisk};
use tessera_actors::server::keys::KeyType;
use tessera_identity::TrustDomain;

use super::file::FileConfig;
use super::{duration, invalid, non_empty_path, positive, ConfigError, KeyManagerKind};

pub(super) fn authority(
    file: &FileConfig,
    td: &TrustDomain,
) -> Result<(AuthoritySettings, KeyManagerKind), ConfigError> {
    let s = &file.server;
    let l = &file.limits;
    let ca_key_type = parse_key_type("server.ca_key_type", &s.ca_key_type)?;
    let jwt_key_type = match &s.jwt_key_type {
        Some(t) => parse_key_type("server.jwt_key_type", t)?,
        None => ca_key_type,
    };
    if s.ca_ttl < Duration::from_secs(60) {
        return Err(invalid(
            "server.ca_ttl",
            duration::format_duration(s.ca_ttl),
            "must be at least 1m",
        ));
    }
    for (key, d) in [
        ("server.default_x509_svid_ttl", s.default_x509_svid_ttl),
        ("server.default_jwt_svid_ttl", s.default_jwt_svid_ttl),
        ("server.rotation_check_interval", s.rotation_check_interval),
    ] {
        if d.as_secs() == 0 {
            return Err(invalid(
                key,
                duration::format_duration(d),
                "must be at least 1s",
            ));
        }
    }
    if s.default_x509_svid_ttl >= s.ca_ttl {
        return Err(invalid(
            "server.default_x509_svid_ttl",
            duration::format_duration(s.default_x509_svid_ttl),
            &format!(
                "must be shorter than server.ca_ttl ({}): an SVID cannot outlive the CA that signs it",
                duration::format_duration(s.ca_ttl)
            ),
        ));
    }
    let key_manager = match file.key_manager.kind.as_str() {
        "disk" => KeyManagerKind::Disk,
        "memory" => KeyManagerKind::Memory,
        other => {
            return Err(invalid(
                "key_manager.type",
                other,
                "must be \"disk\" or \"memory\"",
            ))
        }
    };
    let one = |key: &str, values: &[String]| -> Result<String, ConfigError> {
        match values {
            [] => Ok(String::new()),
            [v] => Ok(v.clone()),
            _ => Err(invalid(
                key,
                values.join(", "),
                "Tessera puts one value in the CA subject; give at most one",
            )),
        }
    };
    let subject = SubjectName {
        country: one("server.ca_subject.country", &s.ca_subject.country)?,
        organization: one("server.ca_subject.organization", &s.ca_subject.organization)?,
        common_name: (!s.ca_subject.common_name.is_empty())
            .then(|| s.ca_subject.common_name.clone()),
    };
    let upstream = file.upstream_authority.as_ref().map(|u| UpstreamDisk {
        cert_file_path: u.disk.cert_file_path.clone(),
        key_file_path: u.disk.key_file_path.clone(),
        bundle_file_path: u.disk.bundle_file_path.clone(),
    });
    if let Some(u) = &upstream {
        non_empty_path("upstream_authority.disk.cert_file_path", &u.cert_file_path)?;
        non_empty_path("upstream_authority.disk.key_file_path", &u.key_file_path)?;
    }
    for (key, v) in [
        ("limits.max_signing_queue", l.max_signing_queue),
        ("limits.max_signing_batch", l.max_signing_batch),
        ("limits.max_csr_bytes", l.max_csr_bytes),
        ("limits.max_svid_dns_names", l.max_svid_dns_names),
        ("limits.max_tracked_svids", l.max_tracked_svids),
    ] {
        positive(key, v)?;
    }
    let mut a = AuthoritySettings::new(td.clone());
    a.ca = CaSettings {
        ttl: s.ca_ttl,
        key_type: ca_key_type,
        subject,
        upstream,
    };
    // SPIRE: JWT signing keys live as long as CAs and rotate on the same schedule.
    a.jwt_key_ttl = s.ca_ttl;
    a.jwt_key_type = jwt_key_type;
    a.signer.x509_svid_ttl = s.default_x509_svid_ttl;
    a.signer.agent_svid_ttl = s.default_x509_svid_ttl;
    a.signer.jwt_svid_ttl = s.default_jwt_svid_ttl;
    a.signer.max_queued = l.max_signing_queue;
    a.signer.max_batch = l.max_signing_batch;
    if let Some(reserve) = l.signing_on_demand_reserve {
        if reserve > l.max_signing_queue / 2 {
            return Err(invalid(
                "limits.signing_on_demand_reserve",
                reserve,
                "must be at most half of limits.max_signing_queue (bulk renewal needs the rest)",
            ));
        }
        a.signer.on_demand_reserve = reserve;
    }
    if l.max_signing_jobs > 0 {
        a.signer.max_concurrent_jobs = l.max_signing_jobs;
    }
    a.signer.max_csr_bytes = l.max_csr_bytes;
    a.signer.max_dns_names = l.max_svid_dns_names;
    a.signer.max_audiences = l.max_audiences;
    a.signer.max_audience_len = l.max_audience_len;
    a.tick_interval = Some(s.rotation_check_interval);
    a.call_timeout = l.call_timeout;
    a.validate()?;
    Ok((a, key_manager))
}

fn parse_key_type(key: &str, value: &str) -> Result<KeyType, ConfigError> {
    value.parse::<KeyType>().map_err(|_| {
        invalid(
            key,
            value,
            "must be \"ec-p256\" (default), \"ec-p384\", \"rsa-2048\" or \"rsa-4096\"",
        )
    })
}
