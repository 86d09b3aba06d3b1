//! [`EntryLimits`]: bounds on what a registration entry may contain.

use serde::{Deserialize, Serialize};

/// Bounds on the parts of a registration entry a caller controls. Every field has a default;
/// a config file sets only the ones it wants to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EntryLimits {
    /// Most selectors one entry may have (default 64).
    pub max_selectors: usize,
    /// Most DNS names one entry may have (default 32).
    pub max_dns_names: usize,
    /// Most trust domains one entry may federate with (default 32).
    pub max_federates_with: usize,
    /// Shortest X.509- or JWT-SVID TTL an entry may ask for, in seconds (default 10). Very short
    /// TTLs turn half-life renewal into a storm of signing requests.
    pub min_svid_ttl_secs: u32,
    /// Longest X.509-SVID TTL an entry may ask for, in seconds (default 7 days).
    pub max_x509_svid_ttl_secs: u32,
    /// Longest JWT-SVID TTL an entry may ask for, in seconds (default 1 day).
    pub max_jwt_svid_ttl_secs: u32,
    /// Longest hint, in bytes (default 1024, as SPIRE).
    pub max_hint_len: usize,
}

impl Default for EntryLimits {
    fn default() -> Self {
        Self {
            max_selectors: 64,
            max_dns_names: 32,
            max_federates_with: 32,
            min_svid_ttl_secs: 10,
            max_x509_svid_ttl_secs: 7 * 24 * 3600,
            max_jwt_svid_ttl_secs: 24 * 3600,
            max_hint_len: 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_config_keeps_other_defaults() {
        let l: EntryLimits = serde_json::from_str(r#"{"max_selectors": 8}"#).unwrap();
        assert_eq!(l.max_selectors, 8);
        assert_eq!(l.max_dns_names, EntryLimits::default().max_dns_names);
        assert!(serde_json::from_str::<EntryLimits>(r#"{"max_selector": 8}"#).is_err());
    }
}
