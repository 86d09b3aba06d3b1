//! Attested agents: [`AgentState`] → `spire.api.types.Agent`, and the Agent service's filter.

use tessera_actors::server::nodes::AgentState;
use tessera_actors::server::registry::MatchBehavior;
use tessera_identity::SelectorSet;
use tessera_proto::spire::api::server::agent::v1::list_agents_request;
use tessera_proto::spire::api::types;

use super::error::{shown, ConvertError};
use super::filter::{selector_match, set_matches};
use super::ids::{selector_to_proto, spiffe_id_to_proto};
use crate::timefmt::parse_timestamp;

/// Every field.
const FULL_MASK: types::AgentMask = types::AgentMask {
    attestation_type: true,
    x509svid_serial_number: true,
    x509svid_expires_at: true,
    selectors: true,
    banned: true,
    can_reattest: true,
    agent_version: true,
};

/// An agent for the wire, with only the fields `mask` selects (all when `None`); `id` always.
pub fn agent_to_proto(a: &AgentState, mask: Option<&types::AgentMask>) -> types::Agent {
    let m = mask.unwrap_or(&FULL_MASK);
    let r = &a.agent;
    types::Agent {
        id: Some(spiffe_id_to_proto(&r.id)),
        attestation_type: if m.attestation_type {
            r.attestation_type.clone()
        } else {
            String::new()
        },
        x509svid_serial_number: if m.x509svid_serial_number {
            r.svid_serial.clone()
        } else {
            String::new()
        },
        x509svid_expires_at: if m.x509svid_expires_at {
            r.svid_expires_at
        } else {
            0
        },
        selectors: if m.selectors {
            r.selectors.iter().map(selector_to_proto).collect()
        } else {
            vec![]
        },
        banned: m.banned && a.banned,
        can_reattest: m.can_reattest && r.can_reattest,
        agent_version: String::new(),
    }
}

/// The filter of `ListAgents`/`CountAgents`, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFilter {
    /// Agents attested this way.
    pub by_attestation_type: Option<String>,
    /// Agents whose node selectors match.
    pub by_selectors: Option<(SelectorSet, MatchBehavior)>,
    /// Banned or not.
    pub by_banned: Option<bool>,
    /// Re-attestable or not.
    pub by_can_reattest: Option<bool>,
    /// Agents whose SVID expires before this (Unix seconds).
    pub by_expires_before: Option<i64>,
}

impl AgentFilter {
    /// Parses the wire filter (`CountAgents`' is converted into `ListAgents`' by the service).
    pub fn from_proto(f: Option<&list_agents_request::Filter>) -> Result<Self, ConvertError> {
        let Some(f) = f else {
            return Ok(Self::default());
        };
        let by_expires_before = if f.by_expires_before.is_empty() {
            None
        } else {
            Some(parse_timestamp(&f.by_expires_before).ok_or_else(|| {
                ConvertError::Invalid {
                    field: "filter.by_expires_before",
                    value: shown(&f.by_expires_before),
                    rule:
                        "expected Unix seconds or an RFC 3339 time such as \"2030-01-02T03:04:05Z\""
                            .into(),
                }
            })?)
        };
        Ok(Self {
            by_attestation_type: (!f.by_attestation_type.is_empty())
                .then(|| f.by_attestation_type.clone()),
            by_selectors: f
                .by_selector_match
                .as_ref()
                .map(|m| selector_match("filter.by_selector_match", m))
                .transpose()?,
            by_banned: f.by_banned,
            by_can_reattest: f.by_can_reattest,
            by_expires_before,
        })
    }

    /// Whether `a` passes every filter given.
    pub fn matches(&self, a: &AgentState) -> bool {
        let r = &a.agent;
        self.by_attestation_type
            .as_ref()
            .is_none_or(|t| &r.attestation_type == t)
            && self
                .by_selectors
                .as_ref()
                .is_none_or(|(s, how)| set_matches(r.selectors.as_slice(), s.as_slice(), *how))
            && self.by_banned.is_none_or(|b| a.banned == b)
            && self.by_can_reattest.is_none_or(|c| r.can_reattest == c)
            && self.by_expires_before.is_none_or(|t| r.svid_expires_at < t)
    }
}

#[cfg(test)]
mod tests {
    use tessera_actors::server::events::AttestedAgent;
    use tessera_identity::SpiffeId;

    use super::*;

    fn agent(banned: bool) -> AgentState {
        AgentState {
            agent: AttestedAgent {
                id: SpiffeId::new("spiffe://example.org/spire/agent/join_token/t").unwrap(),
                attestation_type: "join_token".into(),
                selectors: SelectorSet::parse_all(["join_token:t"]).unwrap(),
                svid_serial: "0a".into(),
                svid_expires_at: 1_000,
                attested_at: 1,
                can_reattest: false,
            },
            banned,
        }
    }

    #[test]
    fn filter_fields_apply() {
        let f = AgentFilter::from_proto(Some(&list_agents_request::Filter {
            by_attestation_type: "join_token".into(),
            by_banned: Some(false),
            by_expires_before: "1970-01-01T00:16:41Z".into(),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(f.by_expires_before, Some(1_001));
        assert!(f.matches(&agent(false)));
        assert!(!f.matches(&agent(true)));
        let err = AgentFilter::from_proto(Some(&list_agents_request::Filter {
            by_expires_before: "soon".into(),
            ..Default::default()
        }))
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("filter.by_expires_before \"soon\""),
            "{err}"
        );
    }

    #[test]
    fn mask_hides_fields_but_not_the_id() {
        let p = agent_to_proto(&agent(true), Some(&types::AgentMask::default()));
        assert!(p.id.is_some());
        assert!(!p.banned);
        assert!(p.selectors.is_empty());
        let full = agent_to_proto(&agent(true), None);
        assert!(full.banned);
        assert_eq!(full.x509svid_serial_number, "0a");
    }
}
