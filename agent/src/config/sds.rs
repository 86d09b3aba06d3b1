//! `[sds]`: Envoy SDS on the Workload API socket. SPIRE's keys and defaults (its agent's `sds`
//! block) for the resource names and SPIFFE validation, and Tessera's bounds on what one
//! request may name.

use serde::Deserialize;

use super::ConfigError;
use crate::sds::{SdsConfig, SdsLimits};

/// `[sds]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SdsSection {
    /// Resource name of the caller's first SVID.
    pub default_svid_name: String,
    /// Resource name of the agent's own trust domain's bundle.
    pub default_bundle_name: String,
    /// Resource name of every bundle the caller trusts (Envoy's SPIFFE validator).
    pub default_all_bundles_name: String,
    /// Validation contexts carry `trusted_ca` instead of Envoy's SPIFFE validator.
    pub disable_spiffe_cert_validation: bool,
    /// Most resource names in one request.
    pub max_resource_names: usize,
    /// Longest resource name, bytes.
    pub max_resource_name_len: usize,
}

impl Default for SdsSection {
    fn default() -> Self {
        let c = SdsConfig::default();
        Self {
            default_svid_name: c.default_svid_name,
            default_bundle_name: c.default_bundle_name,
            default_all_bundles_name: c.default_all_bundles_name,
            disable_spiffe_cert_validation: c.disable_spiffe_cert_validation,
            max_resource_names: c.limits.max_resource_names,
            max_resource_name_len: c.limits.max_resource_name_len,
        }
    }
}

impl SdsSection {
    /// The checked configuration: each default name non-empty, not a SPIFFE ID (it would
    /// hide the identity or trust domain of that name), and different from the other two.
    pub fn config(&self) -> Result<SdsConfig, ConfigError> {
        let names = [
            ("sds.default_svid_name", &self.default_svid_name),
            ("sds.default_bundle_name", &self.default_bundle_name),
            (
                "sds.default_all_bundles_name",
                &self.default_all_bundles_name,
            ),
        ];
        for (i, (key, name)) in names.iter().enumerate() {
            let reason = if name.is_empty() {
                Some("must not be empty: it is the resource name Envoy asks for".to_owned())
            } else if name.starts_with("spiffe://") {
                Some("must not be a SPIFFE ID (those name the caller's SVIDs and trust domains); use a plain name such as \"default\"".to_owned())
            } else {
                names[..i]
                    .iter()
                    .find(|(_, other)| other == name)
                    .map(|(other, _)| {
                        format!("is also {other}; each default resource name must be different")
                    })
            };
            if let Some(reason) = reason {
                return Err(ConfigError::Invalid {
                    key: (*key).to_owned(),
                    value: (*name).clone(),
                    reason,
                });
            }
        }
        for (key, n) in [
            ("sds.max_resource_names", self.max_resource_names),
            ("sds.max_resource_name_len", self.max_resource_name_len),
        ] {
            if n == 0 {
                return Err(ConfigError::Invalid {
                    key: key.to_owned(),
                    value: "0".into(),
                    reason: "must be at least 1".into(),
                });
            }
        }
        Ok(SdsConfig {
            default_svid_name: self.default_svid_name.clone(),
            default_bundle_name: self.default_bundle_name.clone(),
            default_all_bundles_name: self.default_all_bundles_name.clone(),
            disable_spiffe_cert_validation: self.disable_spiffe_cert_validation,
            limits: SdsLimits {
                max_resource_names: self.max_resource_names,
                max_resource_name_len: self.max_resource_name_len,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spire_defaults_keys_and_bad_values() {
        assert_eq!(
            SdsSection::default().config().unwrap(),
            SdsConfig::default()
        );
        let s: SdsSection = toml::from_str(
            "default_svid_name = \"svid\"\ndefault_bundle_name = \"ca\"\ndefault_all_bundles_name = \"every\"\ndisable_spiffe_cert_validation = true\nmax_resource_names = 4",
        )
        .unwrap();
        let c = s.config().unwrap();
        assert_eq!(
            (
                c.default_svid_name.as_str(),
                c.default_bundle_name.as_str(),
                c.default_all_bundles_name.as_str(),
                c.disable_spiffe_cert_validation,
                c.limits.max_resource_names,
                c.limits.max_resource_name_len,
            ),
            ("svid", "ca", "every", true, 4, 2048)
        );
        let same = SdsSection {
            default_all_bundles_name: "ROOTCA".into(),
            ..SdsSection::default()
        };
        let err = same.config().unwrap_err().to_string();
        assert!(
            err.contains("sds.default_all_bundles_name") && err.contains("sds.default_bundle_name"),
            "{err}"
        );
        let id = SdsSection {
            default_svid_name: "spiffe://example.org/x".into(),
            ..SdsSection::default()
        };
        assert!(id
            .config()
            .unwrap_err()
            .to_string()
            .contains("sds.default_svid_name"));
        let zero = SdsSection {
            max_resource_names: 0,
            ..SdsSection::default()
        };
        assert!(zero
            .config()
            .unwrap_err()
            .to_string()
            .contains("sds.max_resource_names"));
        assert!(toml::from_str::<SdsSection>("default_svid = \"x\"").is_err());
    }
}
