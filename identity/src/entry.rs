//! [`RegistrationEntry`]: which workloads (or nodes) get which SPIFFE ID, and its checks.

mod dns;
mod entry_id;
mod error;
mod limits;

use serde::{Deserialize, Serialize};

pub use self::dns::MAX_DNS_NAME_LEN;
pub use self::entry_id::{EntryId, EntryIdError};
pub use self::error::EntryError;
pub use self::limits::EntryLimits;
use crate::id_error::shown;
use crate::{SelectorSet, SpiffeId, TrustDomain};

/// Path of the server's own SPIFFE ID; entries parented to it are node aliases.
pub const SERVER_PATH: &str = "/spire/server";
/// Path prefix SPIRE reserves for its agents and servers; no entry may issue an ID under it.
pub const RESERVED_PATH: &str = "/spire";

/// A registration entry: the workloads (or, for node aliases, the agents) whose attested
/// selectors include all of `selectors`, running under `parent_id`, get `spiffe_id`.
///
/// Plain data, as it travels in events; [`RegistrationEntry::validate`] holds the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationEntry {
    /// The entry's identifier.
    pub id: EntryId,
    /// The SPIFFE ID issued to matching workloads.
    pub spiffe_id: SpiffeId,
    /// The agent (or entry, or for node aliases the server) the workloads run under.
    #[serde(deserialize_with = "SpiffeId::deserialize_shared")]
    pub parent_id: SpiffeId,
    /// What a workload must show to match: all of these.
    pub selectors: SelectorSet,
    /// X.509-SVID lifetime in seconds; `None` for the server's default.
    pub x509_svid_ttl: Option<u32>,
    /// JWT-SVID lifetime in seconds; `None` for the server's default.
    pub jwt_svid_ttl: Option<u32>,
    /// Trust domains whose bundles workloads of this entry also receive.
    pub federates_with: Vec<TrustDomain>,
    /// DNS names put in the X.509-SVID's SAN (the first is also the subject's CN in SPIRE).
    pub dns_names: Vec<String>,
    /// Whether the workload may call the server's admin API.
    pub admin: bool,
    /// Whether the workload may mint SVIDs for downstream servers (nested deployments).
    pub downstream: bool,
    /// A free-form hint handed to the workload to tell its identities apart; empty for none.
    pub hint: String,
    /// When the entry stops applying, in Unix seconds; `None` for never.
    pub expires_at: Option<i64>,
    /// When the entry was created, in Unix seconds (set by the server).
    pub created_at: i64,
    /// Incremented on every change (set by the server).
    pub revision: u64,
}

impl RegistrationEntry {
    /// Checks the entry against SPIRE's rules for the server of `server_td` and against
    /// `limits`:
    ///
    /// - `spiffe_id` is in `server_td`, has a path, and is not under `/spire` (reserved for
    ///   agents and servers);
    /// - `parent_id` is in `server_td` and has a path;
    /// - at least one selector, at most `max_selectors`;
    /// - TTLs, when set, within `[min_svid_ttl_secs, max_*_svid_ttl_secs]`;
    /// - `federates_with` without repeats, at most `max_federates_with`;
    /// - DNS names well-formed, without repeats, at most `max_dns_names`;
    /// - `hint` at most `max_hint_len` bytes.
    ///
    /// # Errors
    /// The first [`EntryError`] found, in the order above.
    pub fn validate(
        &self,
        server_td: &TrustDomain,
        limits: &EntryLimits,
    ) -> Result<(), EntryError> {
        self.check_ids(server_td)?;
        self.check_selectors(limits)?;
        self.check_ttls(limits)?;
        self.check_federates_with(limits)?;
        self.check_dns_names(limits)?;
        if self.hint.len() > limits.max_hint_len {
            return Err(EntryError::HintTooLong {
                len: self.hint.len(),
                max: limits.max_hint_len,
            });
        }
        Ok(())
    }

    /// Whether this is a node alias: an entry parented to the server itself
    /// (`spiffe://<td>/spire/server`), whose selectors are matched against agents' node
    /// selectors rather than workloads'.
    pub fn is_node_alias(&self) -> bool {
        self.parent_id.path() == SERVER_PATH
    }

    /// Whether the entry no longer applies at `now` (Unix seconds).
    pub fn is_expired_at(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    fn check_ids(&self, server_td: &TrustDomain) -> Result<(), EntryError> {
        if !self.spiffe_id.is_member_of(server_td) {
            return Err(EntryError::SpiffeIdNotInTrustDomain {
                spiffe_id: self.spiffe_id.clone(),
                trust_domain: server_td.clone(),
            });
        }
        if self.spiffe_id.is_trust_domain_id() {
            return Err(EntryError::SpiffeIdHasNoPath {
                spiffe_id: self.spiffe_id.clone(),
            });
        }
        if self.spiffe_id.segments().next() == RESERVED_PATH.strip_prefix('/') {
            return Err(EntryError::SpiffeIdReserved {
                spiffe_id: self.spiffe_id.clone(),
            });
        }
        if !self.parent_id.is_member_of(server_td) {
            return Err(EntryError::ParentIdNotInTrustDomain {
                parent_id: self.parent_id.clone(),
                trust_domain: server_td.clone(),
            });
        }
        if self.parent_id.is_trust_domain_id() {
            return Err(EntryError::ParentIdHasNoPath {
                parent_id: self.parent_id.clone(),
            });
        }
        Ok(())
    }

    fn check_selectors(&self, limits: &EntryLimits) -> Result<(), EntryError> {
        if self.selectors.is_empty() {
            return Err(EntryError::NoSelectors);
        }
        if self.selectors.len() > limits.max_selectors {
            return Err(EntryError::TooManySelectors {
                count: self.selectors.len(),
                max: limits.max_selectors,
            });
        }
        Ok(())
    }

    fn check_ttls(&self, limits: &EntryLimits) -> Result<(), EntryError> {
        let min = limits.min_svid_ttl_secs;
        if let Some(ttl) = self.x509_svid_ttl {
            let max = limits.max_x509_svid_ttl_secs;
            if !(min..=max).contains(&ttl) {
                return Err(EntryError::X509SvidTtlOutOfRange { ttl, min, max });
            }
        }
        if let Some(ttl) = self.jwt_svid_ttl {
            let max = limits.max_jwt_svid_ttl_secs;
            if !(min..=max).contains(&ttl) {
                return Err(EntryError::JwtSvidTtlOutOfRange { ttl, min, max });
            }
        }
        Ok(())
    }

    fn check_federates_with(&self, limits: &EntryLimits) -> Result<(), EntryError> {
        if self.federates_with.len() > limits.max_federates_with {
            return Err(EntryError::TooManyFederatesWith {
                count: self.federates_with.len(),
                max: limits.max_federates_with,
            });
        }
        let mut seen: Vec<&TrustDomain> = self.federates_with.iter().collect();
        seen.sort_unstable();
        if let Some(pair) = seen.windows(2).find(|w| w[0] == w[1]) {
            return Err(EntryError::DuplicateFederatesWith {
                trust_domain: pair[0].clone(),
            });
        }
        Ok(())
    }

    fn check_dns_names(&self, limits: &EntryLimits) -> Result<(), EntryError> {
        if self.dns_names.len() > limits.max_dns_names {
            return Err(EntryError::TooManyDnsNames {
                count: self.dns_names.len(),
                max: limits.max_dns_names,
            });
        }
        for name in &self.dns_names {
            dns::check_dns_name(name).map_err(|reason| EntryError::InvalidDnsName {
                name: shown(name),
                reason,
            })?;
        }
        let mut lowered: Vec<String> = self
            .dns_names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        lowered.sort_unstable();
        if let Some(pair) = lowered.windows(2).find(|w| w[0] == w[1]) {
            return Err(EntryError::DuplicateDnsName {
                name: pair[0].clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
