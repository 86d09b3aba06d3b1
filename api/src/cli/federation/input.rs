//! Reading relationships for `federation create|update`: from flags, or from SPIRE's `--data`
//! JSON, into wire relationships, every error naming the flag (or the JSON item and key) and
//! the fix. The bundle given to start from is read here (bounded) and parsed as PEM or as a
//! SPIFFE bundle.

use std::path::PathBuf;

use serde_json::Value;
use tessera_proto::spire::api::types;
use tessera_proto::spire::api::types::federation_relationship::BundleEndpointProfile;

use super::RelationshipFlags;
use crate::cli::bundle::{parse_bundle, read_bundle_data, BundleFormat};
use crate::cli::common::{self, CliError};
use crate::convert::bundle_to_proto;

/// Where a relationship's fields came from, to name it in errors.
#[derive(Clone, Copy)]
enum Source<'a> {
    Flags,
    Data { path: &'a str, item: usize },
}

impl Source<'_> {
    /// The flag's name, or the JSON key's with the item.
    fn name(&self, flag: &'static str, key: &str) -> String {
        match self {
            Source::Flags => flag.to_owned(),
            Source::Data { path, item } => format!("--data {path}: item {item}: {key}"),
        }
    }

    fn usage(&self, verb: &'static str, flag: &'static str, key: &str, rule: &str) -> CliError {
        CliError::Usage {
            verb,
            message: format!("{} {rule}", self.name(flag, key)),
        }
    }
}

/// One relationship's raw fields, from flags or a `--data` item.
#[derive(Default)]
struct Raw {
    trust_domain: Option<String>,
    url: Option<String>,
    profile: Option<String>,
    endpoint_id: Option<String>,
    format: Option<BundleFormat>,
    /// Bundle bytes and where they came from.
    bundle: Option<(Vec<u8>, String)>,
}

fn to_wire(
    verb: &'static str,
    raw: Raw,
    src: Source<'_>,
) -> Result<types::FederationRelationship, CliError> {
    let td_text = raw.trust_domain.ok_or_else(|| {
        src.usage(
            verb,
            "--trustDomain",
            "trustDomain",
            "is required (e.g. partner.org)",
        )
    })?;
    let td = common::trust_domain(verb, "--trustDomain", &td_text)?;
    let url = raw.url.ok_or_else(|| {
        src.usage(
            verb,
            "--bundleEndpointURL",
            "bundleEndpointURL",
            "is required (e.g. https://partner.org:8443)",
        )
    })?;
    let profile = match raw.profile.as_deref() {
        Some("https_web") => {
            if raw.endpoint_id.is_some() {
                return Err(src.usage(
                    verb,
                    "--endpointSpiffeID",
                    "endpointSPIFFEID",
                    "only applies to --bundleEndpointProfile https_spiffe; drop it, or use https_spiffe",
                ));
            }
            BundleEndpointProfile::HttpsWeb(types::HttpsWebProfile {})
        }
        Some("https_spiffe") => {
            let id = raw.endpoint_id.ok_or_else(|| {
                src.usage(
                    verb,
                    "--endpointSpiffeID",
                    "endpointSPIFFEID",
                    "is required with --bundleEndpointProfile https_spiffe: the SPIFFE ID the endpoint presents (e.g. spiffe://partner.org/spire/server)",
                )
            })?;
            let id = common::spiffe_id(verb, "--endpointSpiffeID", &id)?;
            BundleEndpointProfile::HttpsSpiffe(types::HttpsspiffeProfile {
                endpoint_spiffe_id: id.as_str().to_owned(),
            })
        }
        Some(other) => {
            return Err(src.usage(
                verb,
                "--bundleEndpointProfile",
                "bundleEndpointProfile",
                &format!("{other:?} is not a profile: use https_web or https_spiffe"),
            ))
        }
        None => {
            return Err(src.usage(
                verb,
                "--bundleEndpointProfile",
                "bundleEndpointProfile",
                "is required: https_web or https_spiffe",
            ))
        }
    };
    let trust_domain_bundle = match raw.bundle {
        Some((data, origin)) => {
            // The relationship's trust domain's bundle (SPIRE's `trust_domain_bundle`); the
            // server refuses one of another trust domain.
            let bundle_td = td.clone();
            let format = raw.format.unwrap_or(BundleFormat::Pem);
            let bundle = parse_bundle(verb, &origin, bundle_td, format, &data)?;
            Some(bundle_to_proto(&bundle, None))
        }
        None => None,
    };
    Ok(types::FederationRelationship {
        trust_domain: td.as_str().to_owned(),
        bundle_endpoint_url: url,
        bundle_endpoint_profile: Some(profile),
        trust_domain_bundle,
    })
}

pub fn from_flags(
    verb: &'static str,
    f: &RelationshipFlags,
) -> Result<types::FederationRelationship, CliError> {
    if f.bundle_format.is_some() && f.bundle_path.is_none() {
        return Err(CliError::Usage {
            verb,
            message: "--trustDomainBundleFormat needs --trustDomainBundlePath".into(),
        });
    }
    let bundle = match &f.bundle_path {
        Some(p) => Some((
            read_bundle_data(verb, Some(p))?,
            format!("--trustDomainBundlePath {:?}", p.display().to_string()),
        )),
        None => None,
    };
    let raw = Raw {
        trust_domain: f.trust_domain.clone(),
        url: f.bundle_endpoint_url.clone(),
        profile: f.bundle_endpoint_profile.clone(),
        endpoint_id: f.endpoint_spiffe_id.clone(),
        format: f.bundle_format,
        bundle,
    };
    to_wire(verb, raw, Source::Flags)
}

pub fn from_data(
    verb: &'static str,
    path: &str,
) -> Result<Vec<types::FederationRelationship>, CliError> {
    let file = (path != "-").then(|| PathBuf::from(path));
    let data = read_bundle_data(verb, file.as_deref())?;
    let doc: Value = serde_json::from_slice(&data).map_err(|e| CliError::Flag {
        verb,
        flag: "--data",
        value: path.to_owned(),
        reason: format!("is not JSON: {e}"),
    })?;
    let items = doc
        .get("federationRelationships")
        .and_then(Value::as_array)
        .ok_or_else(|| CliError::Flag {
            verb,
            flag: "--data",
            value: path.to_owned(),
            reason: "has no \"federationRelationships\" array".into(),
        })?;
    items
        .iter()
        .enumerate()
        .map(|(item, v)| {
            let src = Source::Data { path, item };
            let text = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
            let format = match text("trustDomainBundleFormat").as_deref() {
                None | Some("pem") => BundleFormat::Pem,
                Some("spiffe") => BundleFormat::Spiffe,
                Some(other) => {
                    return Err(src.usage(
                        verb,
                        "--data",
                        "trustDomainBundleFormat",
                        &format!("{other:?} is not a format: use pem or spiffe"),
                    ))
                }
            };
            let bundle = match (v.get("trustDomainBundle"), format) {
                (None | Some(Value::Null), _) => None,
                (Some(Value::String(pem)), BundleFormat::Pem) => Some(pem.clone().into_bytes()),
                (Some(doc), BundleFormat::Spiffe) => Some(doc.to_string().into_bytes()),
                (Some(_), BundleFormat::Pem) => return Err(src.usage(
                    verb,
                    "--data",
                    "trustDomainBundle",
                    "must be a PEM string with trustDomainBundleFormat pem (or set it to spiffe)",
                )),
            };
            let raw = Raw {
                trust_domain: text("trustDomain"),
                url: text("bundleEndpointURL"),
                profile: text("bundleEndpointProfile"),
                endpoint_id: text("endpointSPIFFEID"),
                format: Some(format),
                bundle: bundle.map(|b| (b, src.name("--data", "trustDomainBundle"))),
            };
            to_wire(verb, raw, src)
        })
        .collect()
}
