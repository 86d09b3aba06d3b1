//! The server's events: every fact the server's state is a fold of.
//!
//! One enum for the one totally ordered log. **Stored format** (bincode writes the variant
//! index): never change or reorder a variant; a new fact gets a new variant at the end, and
//! old payload versions are upcast in [`ServerEvent::upcast`]. The golden log in
//! `actors/tests/golden/` must decode in every CI run.
//!
//! Secrets never appear here: join tokens as SHA-256 hashes, keys as public material and key
//! manager references only.

use serde::{Deserialize, Serialize};
use tessera_eventlog::{CodecError, Event};
use tessera_identity::{Bundle, EntryId, RegistrationEntry, SelectorSet, SpiffeId, TrustDomain};

pub use crate::server::checkpoint::CheckpointRecord;
use crate::server::federation::Relationship;

/// SHA-256 of a join token, hex. The token itself never enters the log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TokenHash(pub String);

/// An attested agent, as recorded when it attested.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestedAgent {
    /// The agent's SPIFFE ID (`spiffe://<td>/spire/agent/<type>/...`).
    pub id: SpiffeId,
    /// Node attestor that vouched for it (`join_token`, `x509pop`).
    pub attestation_type: String,
    /// Selectors of the node, from the attestor.
    pub selectors: SelectorSet,
    /// Serial number (hex) of the agent's current X.509-SVID.
    pub svid_serial: String,
    /// When that SVID expires, Unix seconds.
    pub svid_expires_at: i64,
    /// When it attested, Unix seconds.
    pub attested_at: i64,
    /// Whether the attestor lets the agent attest again after eviction (x509pop: yes; join
    /// token: no, the token is spent).
    pub can_reattest: bool,
}

/// An X.509 CA the authority prepared: its certificate and where its key lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRecord {
    /// Subject key identifier of the CA certificate, hex: the authority's ID.
    pub authority_id: String,
    /// The CA certificate, DER.
    #[serde(with = "der_text")]
    pub cert_der: Vec<u8>,
    /// Certificates above it up to (excluding) the trust anchor, DER, when an upstream
    /// authority signed it; empty for a self-signed root.
    #[serde(with = "der_text::list")]
    pub upstream_chain: Vec<Vec<u8>>,
    /// The roots workloads must trust for this CA: itself if self-signed, else the upstream
    /// root(s).
    #[serde(with = "der_text::list")]
    pub trust_anchors: Vec<Vec<u8>>,
    /// Validity, Unix seconds.
    pub not_before: i64,
    /// Validity, Unix seconds.
    pub not_after: i64,
    /// The key manager's name for its private key.
    pub key_ref: String,
}

/// A JWT signing key the authority prepared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtKeyRecord {
    /// The key ID (`kid`).
    pub kid: String,
    /// The public key, SubjectPublicKeyInfo DER.
    #[serde(with = "der_text")]
    pub public_key_der: Vec<u8>,
    /// Validity, Unix seconds.
    pub not_before: i64,
    /// Validity, Unix seconds.
    pub not_after: i64,
    /// The key manager's name for its private key.
    pub key_ref: String,
}

/// Every fact of the server's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerEvent {
    /// A registration entry was created.
    EntryCreated(RegistrationEntry),
    /// A registration entry was replaced by this one (same id, higher revision).
    EntryUpdated(RegistrationEntry),
    /// A registration entry was deleted.
    EntryDeleted {
        /// Its id.
        id: EntryId,
    },
    /// A join token was generated; `alias`, if any, becomes a node-alias entry for the agent
    /// that consumes it.
    JoinTokenCreated {
        /// Hash of the token.
        token_hash: TokenHash,
        /// Expiry, Unix seconds.
        expires_at: i64,
        /// `token generate --spiffeID`.
        alias: Option<SpiffeId>,
    },
    /// A join token was used by an agent (it can never be used again).
    JoinTokenConsumed {
        /// Hash of the token.
        token_hash: TokenHash,
        /// The agent that used it.
        agent_id: SpiffeId,
    },
    /// An expired, unused join token was dropped.
    JoinTokenExpired {
        /// Hash of the token.
        token_hash: TokenHash,
    },
    /// An agent attested (first time, or again after eviction).
    AgentAttested(AttestedAgent),
    /// An agent renewed its X.509-SVID.
    AgentSvidRenewed {
        /// The agent.
        agent_id: SpiffeId,
        /// New SVID serial, hex.
        svid_serial: String,
        /// New expiry, Unix seconds.
        svid_expires_at: i64,
    },
    /// An agent was evicted: its record is gone; it must attest again.
    AgentEvicted {
        /// The agent.
        agent_id: SpiffeId,
    },
    /// An agent was banned: it cannot renew or attest until its record is deleted.
    AgentBanned {
        /// The agent.
        agent_id: SpiffeId,
    },
    /// A new X.509 CA was prepared in the next slot; its trust anchor joins the bundle now.
    CaPrepared(CaRecord),
    /// The prepared X.509 CA became the one that signs.
    CaActivated {
        /// Its authority ID.
        authority_id: String,
    },
    /// An X.509 CA expired and left the bundle.
    CaRetired {
        /// Its authority ID.
        authority_id: String,
    },
    /// A new JWT key was prepared; its public key joins the bundle now.
    JwtKeyPrepared(JwtKeyRecord),
    /// The prepared JWT key became the one that signs.
    JwtKeyActivated {
        /// Its kid.
        kid: String,
    },
    /// A JWT key expired and left the bundle.
    JwtKeyRetired {
        /// Its kid.
        kid: String,
    },
    // --- Several servers (each with its own CA and JWT key). New builds emit these; the
    // untagged variants above stay readable and mean "the single server of an older log".
    /// Server `server_id` prepared a new X.509 CA of its own (next slot; in the bundle now).
    ServerCaPrepared {
        /// The server that emitted the event and owns the CA.
        server_id: String,
        /// The CA.
        record: CaRecord,
    },
    /// A prepared X.509 CA became the one its server signs with.
    ServerCaActivated {
        /// The server that emitted the event.
        server_id: String,
        /// The CA's authority ID.
        authority_id: String,
    },
    /// An X.509 CA left the bundle (expired, or prepared and unusable). Any server may retire
    /// an expired CA of a server that is gone.
    ServerCaRetired {
        /// The server that emitted the event.
        server_id: String,
        /// The CA's authority ID.
        authority_id: String,
    },
    /// Server `server_id` prepared a new JWT key of its own.
    ServerJwtKeyPrepared {
        /// The server that emitted the event and owns the key.
        server_id: String,
        /// The key.
        record: JwtKeyRecord,
    },
    /// A prepared JWT key became the one its server signs with.
    ServerJwtKeyActivated {
        /// The server that emitted the event.
        server_id: String,
        /// Its kid.
        kid: String,
    },
    /// A JWT key left the bundle.
    ServerJwtKeyRetired {
        /// The server that emitted the event.
        server_id: String,
        /// Its kid.
        kid: String,
    },
    // --- Expiry (issue 11).
    /// A registration entry's `expires_at` passed and the registry pruned it: it leaves the
    /// registry and every agent's view, as a deletion does. Folding it removes the entry only
    /// if it still expires at or before `expires_at` (an entry extended since stays), so a
    /// second prune of the same entry, or one decided on an older state, changes nothing.
    EntryExpired {
        /// The entry.
        id: EntryId,
        /// Its `expires_at` when it was pruned, Unix seconds.
        expires_at: i64,
    },
    // --- Federation (issue 13).
    /// A federation relationship with a foreign trust domain was created.
    FederationRelationshipCreated(Relationship),
    /// A federation relationship's endpoint or profile changed (replaced by this one).
    FederationRelationshipUpdated(Relationship),
    /// A federation relationship ended (its federated bundle, if any, stays).
    FederationRelationshipDeleted {
        /// The foreign trust domain.
        trust_domain: TrustDomain,
    },
    /// A foreign trust domain's bundle was stored (by hand, with a relationship, or fetched
    /// from its endpoint); it replaces any earlier one of that trust domain.
    FederatedBundleSet(Bundle),
    /// A foreign trust domain's bundle was deleted.
    FederatedBundleDeleted {
        /// Its trust domain.
        trust_domain: TrustDomain,
    },
    // --- Forced rotation (issue 14, SPIRE's LocalAuthority API).
    /// An operator tainted an old (no longer signing) X.509 CA: it stays in the bundle,
    /// marked tainted, and agents re-sign every SVID that chains to it.
    X509AuthorityTainted {
        /// The server that emitted the event (`None` on a single server's own log).
        server_id: Option<String>,
        /// The CA's authority ID.
        authority_id: String,
    },
    /// An operator revoked a tainted X.509 CA: it leaves the state and the bundle.
    X509AuthorityRevoked {
        /// The server that emitted the event.
        server_id: Option<String>,
        /// The CA's authority ID.
        authority_id: String,
    },
    /// An operator tainted an old JWT key: it stays in the bundle, marked tainted, and
    /// agents drop the JWT-SVIDs it signed.
    JwtAuthorityTainted {
        /// The server that emitted the event.
        server_id: Option<String>,
        /// Its kid.
        kid: String,
    },
    /// An operator revoked a tainted JWT key: it leaves the state and the bundle.
    JwtAuthorityRevoked {
        /// The server that emitted the event.
        server_id: Option<String>,
        /// Its kid.
        kid: String,
    },
    // --- Audit (issue 14).
    /// A signed checkpoint of the log: binds a record's seq to its hash, signed with a key
    /// of the trust domain's authority.
    CheckpointSigned(CheckpointRecord),
}

impl ServerEvent {
    /// The server that emitted it, for events that name one (authority events of a log with
    /// several servers).
    pub fn server_id(&self) -> Option<&str> {
        match self {
            Self::ServerCaPrepared { server_id, .. }
            | Self::ServerCaActivated { server_id, .. }
            | Self::ServerCaRetired { server_id, .. }
            | Self::ServerJwtKeyPrepared { server_id, .. }
            | Self::ServerJwtKeyActivated { server_id, .. }
            | Self::ServerJwtKeyRetired { server_id, .. } => Some(server_id),
            Self::X509AuthorityTainted { server_id, .. }
            | Self::X509AuthorityRevoked { server_id, .. }
            | Self::JwtAuthorityTainted { server_id, .. }
            | Self::JwtAuthorityRevoked { server_id, .. } => server_id.as_deref(),
            Self::CheckpointSigned(c) => c.server_id.as_deref(),
            _ => None,
        }
    }

    /// Whether it can change the trust bundle's content (a CA or JWT key joins or leaves).
    pub fn touches_bundle(&self) -> bool {
        matches!(
            self,
            Self::CaPrepared(_)
                | Self::CaRetired { .. }
                | Self::JwtKeyPrepared(_)
                | Self::JwtKeyRetired { .. }
                | Self::ServerCaPrepared { .. }
                | Self::ServerCaRetired { .. }
                | Self::ServerJwtKeyPrepared { .. }
                | Self::ServerJwtKeyRetired { .. }
                | Self::X509AuthorityTainted { .. }
                | Self::X509AuthorityRevoked { .. }
                | Self::JwtAuthorityTainted { .. }
                | Self::JwtAuthorityRevoked { .. }
        )
    }
}

impl Event for ServerEvent {
    const SCHEMA_VERSION: u32 = 1;

    fn kind(&self) -> &'static str {
        match self {
            ServerEvent::EntryCreated(_) => "EntryCreated",
            ServerEvent::EntryUpdated(_) => "EntryUpdated",
            ServerEvent::EntryDeleted { .. } => "EntryDeleted",
            ServerEvent::JoinTokenCreated { .. } => "JoinTokenCreated",
            ServerEvent::JoinTokenConsumed { .. } => "JoinTokenConsumed",
            ServerEvent::JoinTokenExpired { .. } => "JoinTokenExpired",
            ServerEvent::AgentAttested(_) => "AgentAttested",
            ServerEvent::AgentSvidRenewed { .. } => "AgentSvidRenewed",
            ServerEvent::AgentEvicted { .. } => "AgentEvicted",
            ServerEvent::AgentBanned { .. } => "AgentBanned",
            ServerEvent::CaPrepared(_) => "CaPrepared",
            ServerEvent::CaActivated { .. } => "CaActivated",
            ServerEvent::CaRetired { .. } => "CaRetired",
            ServerEvent::JwtKeyPrepared(_) => "JwtKeyPrepared",
            ServerEvent::JwtKeyActivated { .. } => "JwtKeyActivated",
            ServerEvent::JwtKeyRetired { .. } => "JwtKeyRetired",
            ServerEvent::ServerCaPrepared { .. } => "ServerCaPrepared",
            ServerEvent::ServerCaActivated { .. } => "ServerCaActivated",
            ServerEvent::ServerCaRetired { .. } => "ServerCaRetired",
            ServerEvent::ServerJwtKeyPrepared { .. } => "ServerJwtKeyPrepared",
            ServerEvent::ServerJwtKeyActivated { .. } => "ServerJwtKeyActivated",
            ServerEvent::ServerJwtKeyRetired { .. } => "ServerJwtKeyRetired",
            ServerEvent::EntryExpired { .. } => "EntryExpired",
            ServerEvent::FederationRelationshipCreated(_) => "FederationRelationshipCreated",
            ServerEvent::FederationRelationshipUpdated(_) => "FederationRelationshipUpdated",
            ServerEvent::FederationRelationshipDeleted { .. } => "FederationRelationshipDeleted",
            ServerEvent::FederatedBundleSet(_) => "FederatedBundleSet",
            ServerEvent::FederatedBundleDeleted { .. } => "FederatedBundleDeleted",
            ServerEvent::X509AuthorityTainted { .. } => "X509AuthorityTainted",
            ServerEvent::X509AuthorityRevoked { .. } => "X509AuthorityRevoked",
            ServerEvent::JwtAuthorityTainted { .. } => "JwtAuthorityTainted",
            ServerEvent::JwtAuthorityRevoked { .. } => "JwtAuthorityRevoked",
            ServerEvent::CheckpointSigned(_) => "CheckpointSigned",
        }
    }

    fn upcast(kind: &str, schema_version: u32, _payload: &[u8]) -> Result<Self, CodecError> {
        // Schema 1 is the first; later versions add their upcasters here, in one place.
        Err(CodecError::UnsupportedVersion {
            kind: kind.to_owned(),
            found: schema_version,
            current: Self::SCHEMA_VERSION,
        })
    }
}

/// DER fields: raw bytes where the encoding is binary (the log, snapshots: unchanged), base64
/// text where it is human-readable (the JSON of `events tail`), which an array of numbers
/// would not be.
pub(crate) mod der_text {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[allow(clippy::ptr_arg)] // serde's `with` passes the field as it is declared.
    pub fn serialize<S: Serializer>(der: &Vec<u8>, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&STANDARD.encode(der))
        } else {
            der.serialize(serializer)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        if deserializer.is_human_readable() {
            decode::<D::Error>(&String::deserialize(deserializer)?)
        } else {
            Vec::<u8>::deserialize(deserializer)
        }
    }

    fn decode<E: serde::de::Error>(text: &str) -> Result<Vec<u8>, E> {
        STANDARD
            .decode(text)
            .map_err(|e| E::custom(format!("DER field is not base64: {e}")))
    }

    /// The same for a list of DER values.
    pub mod list {
        use super::*;

        #[allow(clippy::ptr_arg)] // serde's `with` passes the field as it is declared.
        pub fn serialize<S: Serializer>(
            ders: &Vec<Vec<u8>>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            if serializer.is_human_readable() {
                let texts: Vec<String> = ders.iter().map(|d| STANDARD.encode(d)).collect();
                texts.serialize(serializer)
            } else {
                ders.serialize(serializer)
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Vec<Vec<u8>>, D::Error> {
            if deserializer.is_human_readable() {
                Vec::<String>::deserialize(deserializer)?
                    .iter()
                    .map(|t| decode::<D::Error>(t))
                    .collect()
            } else {
                Vec::<Vec<u8>>::deserialize(deserializer)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_fields_are_bytes_in_the_log_and_base64_in_json() {
        let key = JwtKeyRecord {
            kid: "k".into(),
            public_key_der: vec![0x30, 3, 1, 2, 3],
            not_before: 1,
            not_after: 2,
            key_ref: "r".into(),
        };
        // The log's encoding is what the derive gave before the attribute.
        #[derive(Serialize)]
        struct Plain {
            kid: String,
            public_key_der: Vec<u8>,
            not_before: i64,
            not_after: i64,
            key_ref: String,
        }
        let plain = Plain {
            kid: "k".into(),
            public_key_der: vec![0x30, 3, 1, 2, 3],
            not_before: 1,
            not_after: 2,
            key_ref: "r".into(),
        };
        let bytes = tessera_eventlog::typed::encode_state(&key).unwrap();
        assert_eq!(
            bytes,
            tessera_eventlog::typed::encode_state(&plain).unwrap()
        );
        assert_eq!(
            tessera_eventlog::typed::decode_state::<JwtKeyRecord>(0, &bytes).unwrap(),
            key
        );
        let json = serde_json::to_value(&key).unwrap();
        assert_eq!(json["public_key_der"], "MAMBAgM=");
        assert_eq!(serde_json::from_value::<JwtKeyRecord>(json).unwrap(), key);

        let ca = CaRecord {
            authority_id: "a".into(),
            cert_der: vec![3],
            upstream_chain: vec![vec![1, 2]],
            trust_anchors: vec![vec![3], vec![1, 2]],
            not_before: 1,
            not_after: 2,
            key_ref: "r".into(),
        };
        let json = serde_json::to_value(&ca).unwrap();
        assert_eq!(json["cert_der"], "Aw==");
        assert_eq!(json["upstream_chain"], serde_json::json!(["AQI="]));
        assert_eq!(json["trust_anchors"], serde_json::json!(["Aw==", "AQI="]));
        assert_eq!(serde_json::from_value::<CaRecord>(json).unwrap(), ca);
        let bad = serde_json::json!({"kid": "k", "public_key_der": "not base64!",
            "not_before": 1, "not_after": 2, "key_ref": "r"});
        let err = serde_json::from_value::<JwtKeyRecord>(bad).unwrap_err();
        assert!(err.to_string().contains("not base64"), "{err}");
    }
}
