//! The Authority: the trust domain's X.509 CAs and JWT signing keys, their rotation, the trust
//! bundle derived from them, and signing with them.
//!
//! ```text
//!   AuthorityActor (actor.rs) ── Tick: rotation::plan → build (ca.rs, upstream.rs, off-thread)
//!        │                        → decide → persist → apply → Signer::install
//!        ├── Authority (this file, decide.rs, apply.rs): pure aggregate of slots + bundle
//!        └── Signer (signer.rs): bounded, off-thread signing of X.509-SVIDs and JWT-SVIDs
//! ```
//!
//! The aggregate is pure: CA slots (prepared → active → old → retired) and JWT key slots,
//! folded from `CaPrepared`/`CaActivated`/`CaRetired` and the `JwtKey*` events, and the trust
//! bundle they imply: the trust anchors of every CA not yet retired and every JWT key not yet
//! retired (with its expiry), whose sequence number goes up by one on every change of content.
//! Forced rotation (SPIRE's LocalAuthority API, `actor/local.rs`): an operator may taint an
//! old CA or key (`X509AuthorityTainted`, `JwtAuthorityTainted`: it stays in the bundle with
//! a taint mark, so agents re-sign what chains to it and drop JWT-SVIDs it signed), then
//! revoke it (`X509AuthorityRevoked`, `JwtAuthorityRevoked`: it leaves the state and the
//! bundle). Only the owner's own old ones can be tainted, only tainted ones revoked.
//! Rotation timing is the pure [`rotation::plan`]. Private keys never enter it: records carry
//! the key manager's `key_ref`.

pub mod actor;
mod apply;
pub mod ca;
mod csr;
mod decide;
pub mod rotation;
#[cfg(test)]
mod servers_tests;
pub mod signer;
#[cfg(test)]
mod taint_tests;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
pub mod upstream;
mod x509;

use serde::{Deserialize, Serialize};
use tessera_identity::{Bundle, TrustDomain};

pub use self::actor::{
    AuthorityActor, AuthorityArgs, AuthorityCallError, AuthorityHandle, AuthorityKind,
    AuthorityMsg, AuthoritySettings, AuthorityStatus, LocalAuthority, LocalAuthorityError,
    LocalStep, SettingsError, SlotSummary, TickError, TickReport,
};
pub use self::ca::{build_ca, build_jwt_key, CaBuildError, CaSettings, PreparedCa, PreparedJwtKey};
pub use self::rotation::{plan, Fraction, RotationAction, RotationSettings};
pub use self::signer::{
    Admission, AgentSvidRequest, IssuedX509Svid, JwtSvid, JwtSvidRequest, SignError, Signer,
    SignerSettings, SigningCa, SigningJwtKey, SvidRejection, X509SvidRequest,
};
pub use self::upstream::{UpstreamDisk, UpstreamError};
pub use self::x509::{SubjectName, NOT_BEFORE_CUSHION_SECS};

/// For `actors/fuzz` only, not an API: the CSR parser, giving the SubjectPublicKeyInfo DER.
#[doc(hidden)]
pub fn fuzz_parse_csr(der: &[u8], max_len: usize) -> Result<Vec<u8>, SvidRejection> {
    csr::parse_csr(der, max_len).map(|key| rcgen::PublicKeyData::subject_public_key_info(&key))
}
use crate::server::aggregate::{Aggregate, Context, Decision};
use crate::server::events::{CaRecord, JwtKeyRecord, ServerEvent};

/// Where a CA or JWT key is in its life. Retired ones are dropped from the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SlotStatus {
    /// Prepared: published in the bundle, not yet signing.
    Prepared,
    /// The one that signs.
    Active,
    /// Superseded: no longer signs, stays in the bundle until it expires.
    Old,
}

impl SlotStatus {
    fn name(self) -> &'static str {
        match self {
            Self::Prepared => "prepared",
            Self::Active => "active",
            Self::Old => "old",
        }
    }
}

/// An X.509 CA and where it is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaSlot {
    /// The CA, as recorded.
    pub record: CaRecord,
    /// Its status.
    pub status: SlotStatus,
    /// The server that owns it (signs with it); `None` for the single server of a log from
    /// before several servers.
    pub server: Option<String>,
    /// An operator tainted it (only an old one can be): it stays in the bundle, marked, until
    /// revoked or expired.
    #[serde(default)]
    pub tainted: bool,
}

/// A JWT signing key and where it is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtSlot {
    /// The key, as recorded.
    pub record: JwtKeyRecord,
    /// Its status.
    pub status: SlotStatus,
    /// The server that owns it; `None` as for [`CaSlot::server`].
    pub server: Option<String>,
    /// An operator tainted it, as [`CaSlot::tainted`].
    #[serde(default)]
    pub tainted: bool,
}

/// Which slots are this server's own: the ones it rotates and signs with. Every server folds
/// every server's slots (the bundle is their union) but rotates only its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// This server's id.
    pub server_id: String,
    /// Whether slots recorded without a server (a log written before several servers) are
    /// this server's too: true for a single server on its own log, false on a shared log,
    /// where they belong to no running server and only stay in the bundle until they expire.
    pub adopt_unowned: bool,
}

/// Commands of the authority aggregate. Building CAs and keys (I/O) happens before, in the
/// actor; these only record and move what was built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthorityCommand {
    /// Record a newly built X.509 CA in the prepared slot.
    RecordPreparedCa(CaRecord),
    /// Make the prepared CA the one that signs (the active one becomes old).
    ActivateCa {
        /// Its authority ID.
        authority_id: String,
    },
    /// Drop a prepared or old CA from the state and the bundle.
    RetireCa {
        /// Its authority ID.
        authority_id: String,
    },
    /// Record a newly built JWT key in the prepared slot.
    RecordPreparedJwtKey(JwtKeyRecord),
    /// Make the prepared JWT key the one that signs.
    ActivateJwtKey {
        /// Its kid.
        kid: String,
    },
    /// Drop a prepared or old JWT key from the state and the bundle.
    RetireJwtKey {
        /// Its kid.
        kid: String,
    },
    /// Mark one of the owner's old, self-signed CAs tainted (SPIRE's `TaintX509Authority`).
    TaintCa {
        /// Its authority ID.
        authority_id: String,
    },
    /// Drop one of the owner's tainted CAs from the state and the bundle (SPIRE's
    /// `RevokeX509Authority`).
    RevokeCa {
        /// Its authority ID.
        authority_id: String,
    },
    /// Mark one of the owner's old JWT keys tainted (SPIRE's `TaintJWTAuthority`).
    TaintJwtKey {
        /// Its kid.
        kid: String,
    },
    /// Drop one of the owner's tainted JWT keys (SPIRE's `RevokeJWTAuthority`).
    RevokeJwtKey {
        /// Its kid.
        kid: String,
    },
    /// Mark tainted the upstream root that signed the owner's old CAs (SPIRE's
    /// `TaintX509UpstreamAuthority`): each of those CAs is tainted, and the root is marked in
    /// the bundle.
    TaintUpstream {
        /// The upstream root's subject key ID, hex.
        subject_key_id: String,
    },
    /// Drop the owner's tainted CAs that the upstream root signed, and with them the root
    /// from the bundle (SPIRE's `RevokeX509UpstreamAuthority`).
    RevokeUpstream {
        /// The upstream root's subject key ID, hex.
        subject_key_id: String,
    },
}

/// What a command did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthorityReply {
    /// It emitted an event.
    Recorded,
    /// It asked for what already holds (activating the active one).
    Unchanged,
}

/// Why the authority refused a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// A record's ID is already in use by a CA or key of the state.
    #[error("{kind} {id} is already recorded; a new one needs a new ID")]
    Duplicate {
        /// `X.509 CA` or `JWT key`.
        kind: &'static str,
        /// The ID.
        id: String,
    },
    /// A new one was prepared while another is still prepared.
    #[error("{kind} {prepared} is already prepared; activate or retire it before preparing {id}")]
    AlreadyPrepared {
        /// `X.509 CA` or `JWT key`.
        kind: &'static str,
        /// The one prepared.
        prepared: String,
        /// The one refused.
        id: String,
    },
    /// A record is not acceptable.
    #[error("{kind} {id} cannot be recorded: {reason}")]
    InvalidRecord {
        /// `X.509 CA` or `JWT key`.
        kind: &'static str,
        /// Its ID (at most 64 characters of it).
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// No CA or key with this ID in the state (never recorded, or retired).
    #[error("no {kind} {id}: it was never prepared or is already retired")]
    Unknown {
        /// `X.509 CA` or `JWT key`.
        kind: &'static str,
        /// The ID.
        id: String,
    },
    /// Only a prepared one can be activated.
    #[error("{kind} {id} is {status}; only a prepared one can be activated")]
    NotPrepared {
        /// `X.509 CA` or `JWT key`.
        kind: &'static str,
        /// The ID.
        id: String,
        /// Its status.
        status: &'static str,
    },
    /// The active one cannot be retired.
    #[error(
        "{kind} {id} is the active one and cannot be retired; prepare and activate a new one first"
    )]
    RetireActive {
        /// `X.509 CA` or `JWT key`.
        kind: &'static str,
        /// The ID.
        id: String,
    },
    /// Tainting one that is not old: the active one (it signs) or the prepared one.
    #[error("{kind} {id} is the {status} one: only the old authority can be tainted; activate the prepared one first")]
    TaintNotOld {
        /// `X.509 CA` or `JWT key`.
        kind: &'static str,
        /// The ID.
        id: String,
        /// `active` or `prepared`.
        status: &'static str,
    },
    /// Tainting one already tainted.
    #[error("{kind} {id} is already tainted; revoke it to remove it from the bundle")]
    AlreadyTainted {
        /// `X.509 CA` or `JWT key`.
        kind: &'static str,
        /// The ID.
        id: String,
    },
    /// Revoking one that was not tainted first.
    #[error("{kind} {id} is not tainted: only a tainted authority can be revoked; taint it first")]
    NotTainted {
        /// `X.509 CA` or `JWT key`.
        kind: &'static str,
        /// The ID.
        id: String,
    },
    /// Tainting or revoking a CA signed by an upstream authority: its trust anchor is the
    /// upstream's, shared with the CAs that upstream signs, so the upstream is tainted instead.
    #[error("X.509 CA {id} is signed by an upstream authority (subject key ID {upstream}): a local authority can't be tainted or revoked when an upstream authority signs it; taint the upstream authority instead (`upstreamauthority taint --subjectKeyID {upstream}`)")]
    UpstreamSigned {
        /// The CA's authority ID.
        id: String,
        /// The upstream authority's subject key ID, hex (empty when unknown).
        upstream: String,
    },
    /// No old CA of this server was signed by an upstream authority with this subject key ID.
    #[error("no CA of this server is signed by an upstream authority with subject key ID {id}; `localauthority x509 show` prints the upstream authority of each CA")]
    UnknownUpstream {
        /// The subject key ID asked for.
        id: String,
    },
    /// The upstream authority signs the active (or the prepared) CA: it cannot be tainted.
    #[error("the upstream authority {id} signs the {status} CA {ca}; configure another upstream authority, then prepare and activate a CA it signs, before tainting this one")]
    UpstreamInUse {
        /// The upstream authority's subject key ID.
        id: String,
        /// `active` or `prepared`.
        status: &'static str,
        /// The CA it signs.
        ca: String,
    },
    /// The upstream certificate that signed the CAs is an intermediate, not a root of the
    /// bundle: there is nothing in the bundle to mark (SPIRE marks bundle roots only).
    #[error("the upstream authority {id} is not a root of the bundle (an intermediate signed the CAs); only an upstream root can be tainted")]
    UpstreamNotRoot {
        /// The upstream authority's subject key ID.
        id: String,
    },
    /// Tainting or revoking another server's CA or key: each server manages its own.
    #[error("{kind} {id} belongs to server {server}; taint or revoke it on that server")]
    NotOwn {
        /// `X.509 CA` or `JWT key`.
        kind: &'static str,
        /// The ID.
        id: String,
        /// Its server (`-` when recorded without one).
        server: String,
    },
}

const CA: &str = "X.509 CA";
const JWT_KEY: &str = "JWT key";

/// The authority's folded state: CA and JWT key slots, and the trust bundle they imply.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Authority {
    cas: Vec<CaSlot>,
    jwt_keys: Vec<JwtSlot>,
    bundle_sequence: u64,
    /// Config, not state: set by [`Authority::configure`] after construction or load.
    #[serde(skip)]
    trust_domain: Option<TrustDomain>,
    /// Derived from the slots; rebuilt on configure and on every change.
    #[serde(skip)]
    bundle: Option<Bundle>,
    /// Config, not state: whose slots are "mine". `None`: every slot (one server, and the
    /// untagged events of older logs are emitted).
    #[serde(skip)]
    owner: Option<Owner>,
}

impl PartialEq for Authority {
    /// Equal folded state (slots and sequence); the trust domain and cached bundle follow.
    fn eq(&self, other: &Self) -> bool {
        self.cas == other.cas
            && self.jwt_keys == other.jwt_keys
            && self.bundle_sequence == other.bundle_sequence
    }
}

impl Authority {
    /// Gives the aggregate its trust domain (after construction or snapshot load), so it can
    /// build the bundle.
    pub fn configure(&mut self, trust_domain: TrustDomain) {
        self.trust_domain = Some(trust_domain);
        self.rebuild_bundle();
    }

    /// The trust domain, once configured.
    pub fn trust_domain(&self) -> Option<&TrustDomain> {
        self.trust_domain.as_ref()
    }

    /// Makes the slots of `owner` this aggregate's own: the `active_*`/`prepared_*` accessors,
    /// rotation and `decide` then see only them, and new events name the server.
    pub fn set_owner(&mut self, owner: Owner) {
        self.owner = Some(owner);
    }

    /// Whose slots are this aggregate's own (`None`: all of them).
    pub fn owner(&self) -> Option<&Owner> {
        self.owner.as_ref()
    }

    /// Whether a slot recorded for `server` belongs to this aggregate's owner.
    pub fn owns(&self, server: Option<&str>) -> bool {
        match (&self.owner, server) {
            (None, _) => true,
            (Some(o), Some(s)) => o.server_id == s,
            (Some(o), None) => o.adopt_unowned,
        }
    }

    /// The same state holding only this owner's slots: what rotation plans on.
    pub fn scoped(&self) -> Authority {
        Authority {
            cas: self
                .cas
                .iter()
                .filter(|s| self.owns(s.server.as_deref()))
                .cloned()
                .collect(),
            jwt_keys: self
                .jwt_keys
                .iter()
                .filter(|s| self.owns(s.server.as_deref()))
                .cloned()
                .collect(),
            bundle_sequence: self.bundle_sequence,
            trust_domain: self.trust_domain.clone(),
            bundle: None,
            owner: self.owner.clone(),
        }
    }

    /// Every CA not retired (of every server), in the order they were prepared.
    pub fn cas(&self) -> &[CaSlot] {
        &self.cas
    }

    /// Every JWT key not retired, in the order they were prepared.
    pub fn jwt_keys(&self) -> &[JwtSlot] {
        &self.jwt_keys
    }

    /// The CA with this authority ID.
    pub fn ca(&self, authority_id: &str) -> Option<&CaSlot> {
        self.cas
            .iter()
            .find(|s| s.record.authority_id == authority_id)
    }

    /// The JWT key with this kid.
    pub fn jwt_key(&self, kid: &str) -> Option<&JwtSlot> {
        self.jwt_keys.iter().find(|s| s.record.kid == kid)
    }

    /// The owner's CA that signs, if any.
    pub fn active_ca(&self) -> Option<&CaRecord> {
        self.own_ca(SlotStatus::Active)
    }

    /// The owner's CA prepared to sign next, if any.
    pub fn prepared_ca(&self) -> Option<&CaRecord> {
        self.own_ca(SlotStatus::Prepared)
    }

    /// The owner's JWT key that signs, if any.
    pub fn active_jwt_key(&self) -> Option<&JwtKeyRecord> {
        self.own_jwt_key(SlotStatus::Active)
    }

    /// The owner's JWT key prepared to sign next, if any.
    pub fn prepared_jwt_key(&self) -> Option<&JwtKeyRecord> {
        self.own_jwt_key(SlotStatus::Prepared)
    }

    fn own_ca(&self, status: SlotStatus) -> Option<&CaRecord> {
        self.cas
            .iter()
            .find(|s| s.status == status && self.owns(s.server.as_deref()))
            .map(|s| &s.record)
    }

    fn own_jwt_key(&self, status: SlotStatus) -> Option<&JwtKeyRecord> {
        self.jwt_keys
            .iter()
            .find(|s| s.status == status && self.owns(s.server.as_deref()))
            .map(|s| &s.record)
    }

    /// Other servers' CAs and JWT keys past their expiry at `now`: any server retires them,
    /// so that a server that is gone for good does not keep them in the bundle. Authority
    /// IDs, then kids.
    pub fn foreign_expired(&self, now: i64) -> (Vec<String>, Vec<String>) {
        let cas = self
            .cas
            .iter()
            .filter(|s| !self.owns(s.server.as_deref()) && now > s.record.not_after)
            .map(|s| s.record.authority_id.clone())
            .collect();
        let kids = self
            .jwt_keys
            .iter()
            .filter(|s| !self.owns(s.server.as_deref()) && now > s.record.not_after)
            .map(|s| s.record.kid.clone())
            .collect();
        (cas, kids)
    }

    /// The trust bundle: `None` until [`Authority::configure`] was called.
    pub fn bundle(&self) -> Option<&Bundle> {
        self.bundle.as_ref()
    }

    /// The bundle's sequence number: how many times its content changed.
    pub fn bundle_sequence(&self) -> u64 {
        self.bundle_sequence
    }
}

impl Aggregate for Authority {
    type Command = AuthorityCommand;
    type Reply = AuthorityReply;
    type Error = AuthorityError;
    const NAME: &'static str = "authority";

    fn decide(
        &self,
        command: AuthorityCommand,
        _ctx: &Context,
    ) -> Result<Decision<AuthorityReply>, AuthorityError> {
        self.decide_command(command)
    }

    fn apply(&mut self, event: &ServerEvent) {
        self.apply_event(event);
    }
}
