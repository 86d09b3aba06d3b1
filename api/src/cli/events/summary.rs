//! How `events tail` prints a record: one readable line (`seq time kind summary`: who did what
//! to which entry, agent or authority) or one JSON object per line for a SIEM. Must not hold
//! state: what a deletion removed comes in through [`About`].

use serde_json::{json, Value};
use tessera_actors::server::events::{CaRecord, JwtKeyRecord, ServerEvent};
use tessera_actors::server::federation::EndpointProfile;
use tessera_identity::{RegistrationEntry, SelectorSet};
use tessera_proto::tessera::eventlog::v1 as pb;

use super::filter::{record_secs, About};
use crate::timefmt::format_unix;

/// Characters of a join token's hash shown (enough to tell tokens apart, and a hash anyway).
const TOKEN_HASH_SHOWN: usize = 12;

/// `seq time kind summary`.
pub fn line(r: &pb::Record, event: Option<&ServerEvent>, about: &About) -> String {
    let text = summary(event, about);
    format!(
        "{} {} {} {text}",
        r.seq,
        format_unix(record_secs(r)),
        r.kind
    )
}

/// One record as a JSON object: its envelope, the summary line's text and the event (under
/// `payload`, as `events show --output json` names it).
pub fn json_line(r: &pb::Record, event: Option<&ServerEvent>, about: &About) -> Value {
    let payload = match event {
        Some(e) => serde_json::to_value(e).unwrap_or(Value::Null),
        None => serde_json::from_str(&r.payload_json).unwrap_or(Value::Null),
    };
    json!({
        "seq": r.seq,
        "recorded_at": format_unix(record_secs(r)),
        "recorded_at_unix_nanos": r.recorded_at.as_ref()
            .map(|t| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)).unwrap_or(0)
            .to_string(),
        "kind": r.kind,
        "schema_version": r.schema_version,
        "summary": summary(event, about),
        "payload": payload,
        "prev_hash": hex::encode(&r.prev_hash),
        "hash": hex::encode(&r.hash),
    })
}

fn selectors(s: &SelectorSet) -> String {
    s.iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn entry_text(e: &RegistrationEntry) -> String {
    let mut t = format!(
        "entry {} {} parent {} selectors {}",
        e.id,
        e.spiffe_id,
        e.parent_id,
        selectors(&e.selectors)
    );
    if e.is_node_alias() {
        t.push_str(" (node alias)");
    }
    if !e.federates_with.is_empty() {
        let tds: Vec<String> = e.federates_with.iter().map(|t| t.to_string()).collect();
        t.push_str(&format!(" federates_with {}", tds.join(",")));
    }
    if e.admin {
        t.push_str(" admin");
    }
    if e.downstream {
        t.push_str(" downstream");
    }
    if let Some(at) = e.expires_at {
        t.push_str(&format!(" expires {}", format_unix(at)));
    }
    t
}

fn removed_entry(id: &impl std::fmt::Display, about: &About) -> String {
    match about.spiffe_ids.first() {
        Some(name) => format!("entry {id} {name}"),
        None => format!("entry {id}"),
    }
}

fn token(hash: &str) -> String {
    let shown: String = hash.chars().take(TOKEN_HASH_SHOWN).collect();
    format!("join token sha256 {shown}…")
}

fn ca(server: Option<&str>, c: &CaRecord) -> String {
    let upstream = if c.upstream_chain.is_empty() {
        "self-signed"
    } else {
        "upstream-signed"
    };
    format!(
        "{}x509 authority {} {upstream} valid {} to {}",
        by(server),
        c.authority_id,
        format_unix(c.not_before),
        format_unix(c.not_after)
    )
}

fn jwt(server: Option<&str>, k: &JwtKeyRecord) -> String {
    format!(
        "{}jwt key {} valid {} to {}",
        by(server),
        k.kid,
        format_unix(k.not_before),
        format_unix(k.not_after)
    )
}

fn by(server: Option<&str>) -> String {
    server.map(|s| format!("server {s} ")).unwrap_or_default()
}

/// What the event did, in words; `(undecodable payload)` if this build cannot read it.
pub fn summary(event: Option<&ServerEvent>, about: &About) -> String {
    use ServerEvent as E;
    let Some(event) = event else {
        return "(undecodable payload)".into();
    };
    match event {
        E::EntryCreated(e) => entry_text(e),
        E::EntryUpdated(e) => {
            let mut t = format!("{} revision {}", entry_text(e), e.revision);
            if about.spiffe_ids.len() > 1 {
                t.push_str(&format!(" (was {})", about.spiffe_ids[0]));
            }
            t
        }
        E::EntryDeleted { id } => removed_entry(id, about),
        E::EntryExpired { id, expires_at } => format!(
            "{} pruned (expired {})",
            removed_entry(id, about),
            format_unix(*expires_at)
        ),
        E::JoinTokenCreated {
            token_hash,
            expires_at,
            alias,
        } => {
            let mut t = format!(
                "{} expires {}",
                token(&token_hash.0),
                format_unix(*expires_at)
            );
            if let Some(alias) = alias {
                t.push_str(&format!(" alias {alias}"));
            }
            t
        }
        E::JoinTokenConsumed {
            token_hash,
            agent_id,
        } => format!("{} used by agent {agent_id}", token(&token_hash.0)),
        E::JoinTokenExpired { token_hash } => token(&token_hash.0),
        E::AgentAttested(a) => format!(
            "agent {} attested by {} selectors {} svid serial {} expires {}",
            a.id,
            a.attestation_type,
            selectors(&a.selectors),
            a.svid_serial,
            format_unix(a.svid_expires_at)
        ),
        E::AgentSvidRenewed {
            agent_id,
            svid_serial,
            svid_expires_at,
        } => format!(
            "agent {agent_id} svid serial {svid_serial} expires {}",
            format_unix(*svid_expires_at)
        ),
        E::AgentEvicted { agent_id } | E::AgentBanned { agent_id } => format!("agent {agent_id}"),
        E::CaPrepared(c) => ca(None, c),
        E::CaActivated { authority_id } | E::CaRetired { authority_id } => {
            format!("x509 authority {authority_id}")
        }
        E::JwtKeyPrepared(k) => jwt(None, k),
        E::JwtKeyActivated { kid } | E::JwtKeyRetired { kid } => format!("jwt key {kid}"),
        E::ServerCaPrepared { server_id, record } => ca(Some(server_id), record),
        E::ServerCaActivated {
            server_id,
            authority_id,
        }
        | E::ServerCaRetired {
            server_id,
            authority_id,
        } => format!("server {server_id} x509 authority {authority_id}"),
        E::ServerJwtKeyPrepared { server_id, record } => jwt(Some(server_id), record),
        E::ServerJwtKeyActivated { server_id, kid } | E::ServerJwtKeyRetired { server_id, kid } => {
            format!("server {server_id} jwt key {kid}")
        }
        E::FederationRelationshipCreated(r) | E::FederationRelationshipUpdated(r) => {
            let profile = match &r.profile {
                EndpointProfile::HttpsWeb => "https_web".to_owned(),
                EndpointProfile::HttpsSpiffe { endpoint_spiffe_id } => {
                    format!("https_spiffe {endpoint_spiffe_id}")
                }
            };
            format!(
                "trust domain {} endpoint {} {profile}",
                r.trust_domain, r.bundle_endpoint_url
            )
        }
        E::FederationRelationshipDeleted { trust_domain }
        | E::FederatedBundleDeleted { trust_domain } => format!("trust domain {trust_domain}"),
        E::FederatedBundleSet(b) => format!(
            "trust domain {} bundle with {} x509 authorities, {} jwt keys",
            b.trust_domain(),
            b.x509_authorities().len(),
            b.jwt_authorities().len()
        ),
        E::X509AuthorityTainted {
            server_id,
            authority_id,
        }
        | E::X509AuthorityRevoked {
            server_id,
            authority_id,
        } => format!("{}x509 authority {authority_id}", by(server_id.as_deref())),
        E::JwtAuthorityTainted { server_id, kid } | E::JwtAuthorityRevoked { server_id, kid } => {
            format!("{}jwt key {kid}", by(server_id.as_deref()))
        }
        E::CheckpointSigned(c) => format!(
            "{}checkpoint of seq {} signed with jwt key {}",
            by(c.server_id.as_deref()),
            c.seq,
            c.kid
        ),
    }
}

#[cfg(test)]
mod tests {
    use tessera_actors::server::events::TokenHash;
    use tessera_identity::{EntryId, SpiffeId};

    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    #[test]
    fn lines_say_who_did_what_to_which_entry_or_agent() {
        let e = RegistrationEntry {
            id: EntryId::new("1b2c").unwrap(),
            spiffe_id: id("spiffe://example.org/web"),
            parent_id: id("spiffe://example.org/spire/agent/x"),
            selectors: SelectorSet::parse_all(["unix:uid:1000", "unix:gid:5"]).unwrap(),
            x509_svid_ttl: None,
            jwt_svid_ttl: None,
            federates_with: vec![],
            dns_names: vec![],
            admin: false,
            downstream: false,
            hint: String::new(),
            expires_at: None,
            created_at: 0,
            revision: 0,
        };
        let r = pb::Record {
            seq: 42,
            recorded_at: Some(prost_types::Timestamp {
                seconds: 1_796_292_000,
                nanos: 5,
            }),
            kind: "EntryCreated".into(),
            hash: vec![0xab],
            ..pb::Record::default()
        };
        let text = line(&r, Some(&ServerEvent::EntryCreated(e)), &About::default());
        assert!(
            text.starts_with(
                "42 2026-12-03T10:00:00Z EntryCreated entry 1b2c spiffe://example.org/web \
                 parent spiffe://example.org/spire/agent/x selectors unix:"
            ),
            "{text}"
        );
        let deleted = ServerEvent::EntryDeleted {
            id: EntryId::new("1b2c").unwrap(),
        };
        let about = About {
            spiffe_ids: vec![id("spiffe://example.org/web")],
            ..About::default()
        };
        assert_eq!(
            summary(Some(&deleted), &about),
            "entry 1b2c spiffe://example.org/web"
        );
        assert_eq!(summary(Some(&deleted), &About::default()), "entry 1b2c");
        let token = ServerEvent::JoinTokenConsumed {
            token_hash: TokenHash("0123456789abcdef0123".into()),
            agent_id: id("spiffe://example.org/spire/agent/join_token/t"),
        };
        assert_eq!(
            summary(Some(&token), &About::default()),
            "join token sha256 0123456789ab… used by agent \
             spiffe://example.org/spire/agent/join_token/t"
        );
        assert_eq!(summary(None, &About::default()), "(undecodable payload)");

        let j = json_line(&r, Some(&deleted), &about);
        assert_eq!(j["seq"], 42);
        assert_eq!(j["recorded_at"], "2026-12-03T10:00:00Z");
        assert_eq!(j["recorded_at_unix_nanos"], "1796292000000000005");
        assert_eq!(j["hash"], "ab");
        assert_eq!(j["payload"]["EntryDeleted"]["id"], "1b2c");
        assert_eq!(j["summary"], "entry 1b2c spiffe://example.org/web");
    }
}
