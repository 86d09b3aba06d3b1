//! When each SVID is renewed: at half its lifetime, with ±10 % jitter so that thousands of
//! SVIDs issued together do not all come back at once. Pure: `now` and the jitter source are
//! inputs.

use sha2::{Digest, Sha256};
use tessera_identity::EntryId;

use crate::agent::cache::{Cache, StoredSvid};
use crate::keys::KeyType;

/// Renewal settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationSettings {
    /// Fraction of the lifetime after which to renew, in percent (SPIRE: 50).
    pub renew_at_percent: u8,
    /// Jitter around it, in percent of the lifetime (10).
    pub jitter_percent: u8,
    /// Most CSRs per signing call.
    pub batch: usize,
    /// Key type of the workload keys made for new SVIDs (SPIRE's
    /// `workload_x509_svid_key_type`; EC P-256 by default).
    pub key_type: KeyType,
    /// SPIRE's `x509_svid_cache_max_size`: SVIDs signed eagerly at most, and kept past it
    /// only while workloads hold them (see [`crate::agent::svid_cache`]).
    pub x509_svid_cache_max_size: usize,
}

impl Default for RotationSettings {
    fn default() -> Self {
        Self {
            renew_at_percent: 50,
            jitter_percent: 10,
            batch: 500,
            key_type: KeyType::EcP256,
            x509_svid_cache_max_size: crate::agent::svid_cache::DEFAULT_X509_SVID_CACHE_MAX_SIZE,
        }
    }
}

/// The moment (Unix seconds) `svid` should be renewed; `seed` makes the jitter differ per
/// SVID but stay the same for one SVID across calls.
pub fn renew_at(svid: &StoredSvid, settings: &RotationSettings, seed: &[u8]) -> i64 {
    let lifetime = (svid.not_after - svid.not_before).max(1);
    let digest = Sha256::new()
        .chain_update(seed)
        .chain_update(svid.not_after.to_be_bytes())
        .finalize();
    // A uniform value in [-jitter, +jitter] percent of the lifetime, from the digest.
    let unit = f64::from(u32::from_be_bytes([
        digest[0], digest[1], digest[2], digest[3],
    ])) / f64::from(u32::MAX);
    let jitter = (unit * 2.0 - 1.0) * f64::from(settings.jitter_percent) / 100.0;
    let fraction = (f64::from(settings.renew_at_percent) / 100.0 + jitter).clamp(0.05, 0.95);
    svid.not_before + (lifetime as f64 * fraction) as i64
}

/// Entries that need an SVID now: none yet, a stale one (entry changed), past renewal, or
/// one of a tainted or revoked authority ([`Cache::needs_resign`]).
/// Returns them in id order, and the next time something falls due (if any).
pub fn due(cache: &Cache, now: i64, settings: &RotationSettings) -> (Vec<EntryId>, Option<i64>) {
    let mut due = Vec::new();
    let mut next: Option<i64> = None;
    for e in cache.workload_entries() {
        match cache.svids.get(&e.id) {
            Some(svid) if svid.entry_revision == e.revision => {
                let at = if cache.needs_resign(&e.id) {
                    now
                } else {
                    renew_at(svid, settings, e.id.as_str().as_bytes())
                };
                if at <= now {
                    due.push(e.id.clone());
                } else {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
            _ => due.push(e.id.clone()),
        }
    }
    (due, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svid(not_before: i64, not_after: i64) -> StoredSvid {
        StoredSvid {
            cert_chain: vec![],
            key_pkcs8: vec![],
            not_before,
            not_after,
            entry_revision: 0,
        }
    }

    #[test]
    fn renewal_is_at_half_life_within_ten_percent_jitter_and_spread() {
        let settings = RotationSettings::default();
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200u32 {
            let at = renew_at(&svid(1_000, 4_600), &settings, &i.to_be_bytes());
            assert!(
                (1_000 + 1_440..=1_000 + 2_160).contains(&at),
                "{at} outside 40..60 % of the hour"
            );
            seen.insert(at);
        }
        assert!(
            seen.len() > 100,
            "jitter spreads renewals: {} distinct times",
            seen.len()
        );
        // Stable for the same SVID and seed.
        assert_eq!(
            renew_at(&svid(0, 3_600), &settings, b"e1"),
            renew_at(&svid(0, 3_600), &settings, b"e1")
        );
    }
}
