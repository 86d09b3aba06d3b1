//! From an identity snapshot, a caller's selectors and the names it asks for to SDS secrets,
//! following SPIRE's `buildResponse`. Pure functions: the same inputs give the same secrets,
//! so a stream pushes only when what its caller asked for changed.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
use envoy_types::pb::envoy::config::core::v3::{
    data_source, DataSource, Node, TypedExtensionConfig,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::spiffe_cert_validator_config::TrustDomain as ValidatorTrustDomain;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, Secret, SpiffeCertValidatorConfig, TlsCertificate,
};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use tessera_actors::agent::view::{Identity, IdentitySnapshot};
use tessera_identity::{Bundle, SelectorSet};

use super::error::SdsError;
use super::{SdsConfig, DISABLE_VALIDATION_KEY, SPIFFE_VALIDATOR};
use crate::workload_api::render::{entitled, Rendered};
use crate::workload_api::ApiError;

/// How validation contexts are written for a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validation {
    /// Envoy's SPIFFE certificate validator (`custom_validator_config`), SPIRE's default.
    Spiffe,
    /// Plain X.509 chain validation (`trusted_ca`).
    RootCa,
}

/// The validation the caller gets: the configured default, unless its node metadata says
/// `disable_spiffe_cert_validation` (a bool, or a string Go's `strconv.ParseBool` reads, as
/// SPIRE takes it); never the SPIFFE validator for an Envoy older than 1.18.
pub(crate) fn validation(config: &SdsConfig, node: Option<&Node>) -> Validation {
    let mut disabled = config.disable_spiffe_cert_validation;
    let value = node
        .and_then(|n| n.metadata.as_ref())
        .and_then(|m| m.fields.get(DISABLE_VALIDATION_KEY))
        .and_then(|v| v.kind.as_ref());
    match value {
        Some(Kind::BoolValue(b)) => disabled = *b,
        Some(Kind::StringValue(s)) => {
            if let Some(b) = parse_bool(s) {
                disabled = b;
            }
        }
        // Any other kind is ignored, as in SPIRE: safer to assume the key is not there.
        _ => {}
    }
    if disabled || !supports_validator(node) {
        Validation::RootCa
    } else {
        Validation::Spiffe
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Envoy 1.18 and later have the SPIFFE validator; a node that says no version is assumed to.
fn supports_validator(node: Option<&Node>) -> bool {
    match node.and_then(|n| n.user_agent_version_type.as_ref()) {
        Some(UserAgentVersionType::UserAgentBuildVersion(b)) => match &b.version {
            Some(v) => v.major_number > 1 || (v.major_number == 1 && v.minor_number > 17),
            None => true,
        },
        _ => true,
    }
}

/// The names a request asks for: its non-empty resource names, as a set (empty: all).
pub(crate) fn requested(names: &[String]) -> BTreeSet<String> {
    names.iter().filter(|n| !n.is_empty()).cloned().collect()
}

/// The secrets for `names` (empty: every TLS certificate and every trusted bundle by ID) for
/// a caller with `selectors` at `now`. A caller with no identity is `NoIdentity`; a name that
/// is none of its secrets is `NotAuthorized`.
pub(crate) fn secrets(
    snapshot: &IdentitySnapshot,
    selectors: &SelectorSet,
    now: i64,
    names: &BTreeSet<String>,
    config: &SdsConfig,
    validation: Validation,
) -> Result<Rendered<Vec<Any>>, SdsError> {
    let identities = entitled(snapshot, selectors, now)?;
    let all = names.is_empty();
    let mut wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let mut out = Vec::new();

    // Bundles: the agent's own first, then the federated ones the caller's entries ask for.
    let own = snapshot.bundle.as_ref();
    let mut trusted: BTreeMap<String, &Bundle> = snapshot
        .federated_for(&identities)
        .into_values()
        .map(|b| (b.trust_domain().id().to_string(), b))
        .collect();
    if let Some(own) = own {
        trusted.remove(&own.trust_domain().id().to_string());
    }
    let by_id = own
        .map(|b| (b.trust_domain().id().to_string(), b))
        .into_iter()
        .chain(trusted);
    let mut every = Vec::new();
    for (id, bundle) in by_id {
        if all || wanted.remove(id.as_str()) {
            out.push(validation_context(&id, &[bundle], validation)?);
        }
        every.push(bundle);
    }
    let wants_own = wanted.remove(config.default_bundle_name.as_str());
    let wants_every = wanted.remove(config.default_all_bundles_name.as_str());
    if (wants_own || wants_every) && own.is_none() {
        let td = identities[0].entry.spiffe_id.trust_domain();
        return Err(ApiError::NoBundle(td.to_string()).into());
    }
    if let (true, Some(own)) = (wants_own, own) {
        out.push(validation_context(
            &config.default_bundle_name,
            &[own],
            validation,
        )?);
    }
    if wants_every {
        if validation == Validation::RootCa {
            return Err(SdsError::ValidatorOff {
                name: config.default_all_bundles_name.clone(),
            });
        }
        out.push(validation_context(
            &config.default_all_bundles_name,
            &every,
            validation,
        )?);
    }

    // TLS certificates: one per SPIFFE ID, in the Workload API's order.
    let mut seen = HashSet::new();
    for (i, identity) in identities.iter().enumerate() {
        let id = identity.entry.spiffe_id.to_string();
        if !seen.insert(id.clone()) {
            continue;
        }
        if all || wanted.remove(id.as_str()) {
            out.push(tls_certificate(&id, identity)?);
        }
        if i == 0 && wanted.remove(config.default_svid_name.as_str()) {
            out.push(tls_certificate(&config.default_svid_name, identity)?);
        }
    }

    if !wanted.is_empty() {
        return Err(SdsError::NotAuthorized {
            names: wanted.into_iter().map(str::to_owned).collect(),
        });
    }
    Ok(Rendered {
        message: out,
        expires: earliest_expiry(&identities),
    })
}

/// The earliest moment one of `identities` stops being served (SVID or entry expiry).
fn earliest_expiry(identities: &[&Identity]) -> Option<i64> {
    identities
        .iter()
        .flat_map(|i| [i.svid.as_ref().map(|s| s.not_after), i.entry.expires_at])
        .flatten()
        .min()
}

fn inline(bytes: Vec<u8>) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes)),
        ..DataSource::default()
    })
}

/// PEM blocks, `\n` line endings (Envoy reads either; SPIRE writes these).
fn pem_blocks<'a>(tag: &str, ders: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let blocks: Vec<pem::Pem> = ders
        .into_iter()
        .map(|d| pem::Pem::new(tag, d.to_vec()))
        .collect();
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_many_config(&blocks, config).into_bytes()
}

fn bundle_pem(bundle: &Bundle) -> Vec<u8> {
    bundle.x509_authorities_pem().into_bytes()
}

/// A `tls_certificate` secret named `name` holding `identity`'s SVID chain and key.
fn tls_certificate(name: &str, identity: &Identity) -> Result<Any, SdsError> {
    let svid = identity.svid.as_ref().ok_or_else(|| SdsError::Encode {
        name: name.to_owned(),
        reason: "the identity holds no SVID".into(),
    })?;
    let chain = pem_blocks("CERTIFICATE", svid.cert_chain.iter().map(Vec::as_slice));
    let key = pem_blocks("PRIVATE KEY", [svid.key_pkcs8.as_slice()]);
    Ok(pack_any(Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(chain),
            private_key: inline(key),
            ..TlsCertificate::default()
        })),
    }))
}

/// A `validation_context` secret named `name` trusting `bundles`: with the SPIFFE validator,
/// one trust domain entry per bundle, sorted by name; with `trusted_ca`, the one bundle.
fn validation_context(
    name: &str,
    bundles: &[&Bundle],
    validation: Validation,
) -> Result<Any, SdsError> {
    let context = match validation {
        Validation::RootCa => {
            let [bundle] = bundles else {
                return Err(SdsError::ValidatorOff {
                    name: name.to_owned(),
                });
            };
            CertificateValidationContext {
                trusted_ca: inline(bundle_pem(bundle)),
                ..CertificateValidationContext::default()
            }
        }
        Validation::Spiffe => {
            let mut trust_domains: Vec<ValidatorTrustDomain> = bundles
                .iter()
                .map(|b| ValidatorTrustDomain {
                    name: b.trust_domain().to_string(),
                    trust_bundle: inline(bundle_pem(b)),
                    ..ValidatorTrustDomain::default()
                })
                .collect();
            trust_domains.sort_by(|a, b| a.name.cmp(&b.name));
            CertificateValidationContext {
                custom_validator_config: Some(TypedExtensionConfig {
                    name: SPIFFE_VALIDATOR.into(),
                    typed_config: Some(pack_any(SpiffeCertValidatorConfig {
                        trust_domains,
                        ..SpiffeCertValidatorConfig::default()
                    })),
                }),
                ..CertificateValidationContext::default()
            }
        }
    };
    Ok(pack_any(Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::ValidationContext(context)),
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::config::core::v3::BuildVersion;
    use envoy_types::pb::envoy::r#type::v3::SemanticVersion;
    use envoy_types::pb::google::protobuf::{Struct, Value};

    use super::*;

    fn node(version: Option<(u32, u32)>, disable: Option<Kind>) -> Node {
        let fields: HashMap<String, Value> = disable
            .map(|k| (DISABLE_VALIDATION_KEY.to_owned(), Value { kind: Some(k) }))
            .into_iter()
            .collect();
        Node {
            metadata: Some(Struct { fields }),
            user_agent_version_type: version.map(|(major_number, minor_number)| {
                UserAgentVersionType::UserAgentBuildVersion(BuildVersion {
                    version: Some(SemanticVersion {
                        major_number,
                        minor_number,
                        patch: 0,
                    }),
                    metadata: None,
                })
            }),
            ..Node::default()
        }
    }

    #[test]
    fn validation_follows_config_node_metadata_and_envoy_version_as_spire() {
        let on = SdsConfig::default();
        let off = SdsConfig {
            disable_spiffe_cert_validation: true,
            ..SdsConfig::default()
        };
        assert_eq!(validation(&on, None), Validation::Spiffe);
        assert_eq!(validation(&off, None), Validation::RootCa);
        // Envoy 1.17 has no SPIFFE validator; 1.18 and 2.0 do.
        assert_eq!(
            validation(&on, Some(&node(Some((1, 17)), None))),
            Validation::RootCa
        );
        assert_eq!(
            validation(&on, Some(&node(Some((1, 18)), None))),
            Validation::Spiffe
        );
        assert_eq!(
            validation(&on, Some(&node(Some((2, 0)), None))),
            Validation::Spiffe
        );
        // Node metadata overrides the config either way; strings as Go's ParseBool reads them.
        let yes = Some(Kind::StringValue("True".into()));
        assert_eq!(validation(&on, Some(&node(None, yes))), Validation::RootCa);
        let no = Some(Kind::BoolValue(false));
        assert_eq!(validation(&off, Some(&node(None, no))), Validation::Spiffe);
        // An unreadable value is ignored.
        let junk = Some(Kind::StringValue("maybe".into()));
        assert_eq!(
            validation(&off, Some(&node(None, junk))),
            Validation::RootCa
        );
        let number = Some(Kind::NumberValue(1.0));
        assert_eq!(
            validation(&on, Some(&node(None, number))),
            Validation::Spiffe
        );
    }

    #[test]
    fn empty_names_are_dropped_and_duplicates_merged() {
        let names = requested(&["".into(), "b".into(), "a".into(), "b".into()]);
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    }
}
