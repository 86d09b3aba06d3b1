//! The one mapping from Tessera's errors to gRPC status codes, for every service (admin and
//! agent API alike). Deliberate, and written once:
//!
//! | error | code |
//! |---|---|
//! | malformed request ([`ConvertError`], invalid entry, bad bundle or endpoint URL, this server's own trust domain as a federated one) | `InvalidArgument` |
//! | unknown entry, agent, record | `NotFound` |
//! | duplicate entry or id, token collision | `AlreadyExists` |
//! | banned / not attested / stale SVID / bad join token | `PermissionDenied` |
//! | a CSR or JWT request the signer refuses | `InvalidArgument` |
//! | a limit (registry full, actor or signing queue overloaded, batch too large) | `ResourceExhausted` |
//! | actor down or timed out, log failure, no active CA/JWT key yet | `Unavailable` (the caller may retry) |
//! | a federated bundle entries still federate with, deleted in `RESTRICT` mode | `FailedPrecondition` (SPIRE's) |
//! | a LocalAuthority step out of order (taint the active one, revoke an untainted one, prepare with one prepared) | `FailedPrecondition` |
//! | a LocalAuthority authority ID the server does not hold | `InvalidArgument` (SPIRE's) |
//! | a bundle refresh that failed, or no refresher running | `Unavailable` |
//! | a damaged log (hash chain broken) | `DataLoss` |
//! | a wiring bug | `Internal` |
//!
//! The agent API (`crate::agent_api`) maps through the same table: a call without an agent
//! SVID, or with one that has expired since the handshake, is `Unauthenticated`; an agent the
//! server refuses (banned, unknown, stale SVID) is `PermissionDenied`, a ban marked in the
//! metadata; a per-agent or per-IP limit is `ResourceExhausted` naming its config key.

use tessera_actors::attestation::AttestError;
use tessera_actors::server::agent_ops::{ItemError, OpsError};
use tessera_actors::server::aggregate_actor::CommandError;
use tessera_actors::server::authority::{
    AuthorityCallError, AuthorityError, LocalAuthorityError, SignError, SvidRejection,
};
use tessera_actors::server::checkpoint::scan::ScanError;
use tessera_actors::server::federation::FederationError;
use tessera_actors::server::nodes::NodeError;
use tessera_actors::server::registry::{EntryRejection, RegistryError};
use tessera_actors::server::sync_hub::SyncHubError;
use tessera_actors::server::tokens::TokenError;
use tessera_edge::limits::AudienceError;
use tessera_eventlog::LogError;
use tessera_identity::TrustDomain;
use tessera_proto::spire::api::types;
use tessera_proto::tessera::agent::v1::{AGENT_BANNED, AGENT_REFUSAL_KEY};
use tonic::{Code, Status};

use crate::agent_api::{AgentAuthError, LimitError};
use crate::convert::ConvertError;
use crate::federation::RefreshError;

/// An error with a deliberate gRPC code.
pub trait ToCode: std::fmt::Display {
    /// The code callers see.
    fn code(&self) -> Code;

    /// As a `Status`.
    fn to_status(&self) -> Status {
        Status::new(self.code(), self.to_string())
    }

    /// As a per-item status of a batch response.
    fn to_item_status(&self) -> types::Status {
        item_status(self.code(), self.to_string())
    }
}

/// A per-item batch status.
pub fn item_status(code: Code, message: impl Into<String>) -> types::Status {
    types::Status {
        code: code as i32,
        message: message.into(),
    }
}

/// The per-item status of a success (SPIRE's: code 0, "OK").
pub fn item_ok() -> types::Status {
    item_status(Code::Ok, "OK")
}

impl ToCode for ConvertError {
    fn code(&self) -> Code {
        Code::InvalidArgument
    }
}

impl ToCode for EntryRejection {
    fn code(&self) -> Code {
        match self {
            EntryRejection::Invalid(_) => Code::InvalidArgument,
            EntryRejection::AlreadyExists { .. } | EntryRejection::IdInUse { .. } => {
                Code::AlreadyExists
            }
            EntryRejection::NotFound { .. } => Code::NotFound,
            EntryRejection::RegistryFull { .. } => Code::ResourceExhausted,
        }
    }
}

impl ToCode for RegistryError {
    fn code(&self) -> Code {
        match self {
            RegistryError::NotConfigured => Code::Internal,
        }
    }
}

impl ToCode for NodeError {
    fn code(&self) -> Code {
        match self {
            NodeError::NotAttested(_) => Code::NotFound,
            NodeError::Banned(_)
            | NodeError::AlreadyAttested(_)
            | NodeError::JoinToken { .. }
            | NodeError::StaleSvid { .. } => Code::PermissionDenied,
        }
    }

    fn to_status(&self) -> Status {
        let mut status = Status::new(self.code(), self.to_string());
        if let NodeError::Banned(_) = self {
            status.metadata_mut().insert(
                AGENT_REFUSAL_KEY,
                tonic::metadata::MetadataValue::from_static(AGENT_BANNED),
            );
        }
        status
    }
}

/// `PermissionDenied` for an agent the nodes aggregate refused (attestation, renewal, sync):
/// as [`ToCode::to_status`] for a ban (which carries the mark), `PermissionDenied` with the
/// message otherwise.
pub fn agent_refusal(e: &NodeError) -> Status {
    match e {
        NodeError::Banned(_) => e.to_status(),
        _ => Status::permission_denied(e.to_string()),
    }
}

impl ToCode for TokenError {
    fn code(&self) -> Code {
        match self {
            TokenError::Unknown | TokenError::Expired { .. } => Code::PermissionDenied,
            TokenError::Duplicate => Code::AlreadyExists,
            TokenError::TooMany { .. } => Code::ResourceExhausted,
            TokenError::Ttl { .. } | TokenError::TooShort { .. } => Code::InvalidArgument,
        }
    }
}

impl ToCode for FederationError {
    fn code(&self) -> Code {
        match self {
            FederationError::OwnTrustDomain { .. }
            | FederationError::BundleMismatch { .. }
            | FederationError::EmptyBundle { .. }
            | FederationError::BadUrl { .. } => Code::InvalidArgument,
            FederationError::RelationshipExists { .. } | FederationError::BundleExists { .. } => {
                Code::AlreadyExists
            }
            FederationError::RelationshipNotFound { .. }
            | FederationError::BundleNotFound { .. } => Code::NotFound,
            FederationError::TooManyRelationships { .. }
            | FederationError::TooManyBundles { .. } => Code::ResourceExhausted,
            // An update raced the refresh: the caller (the refresher) tries again.
            FederationError::RelationshipChanged { .. } => Code::Aborted,
        }
    }
}

impl ToCode for RefreshError {
    fn code(&self) -> Code {
        match self {
            RefreshError::NotFound(_) => Code::NotFound,
            // The endpoint or the refresher may be back on a retry; the last good bundle stays.
            RefreshError::NotRunning | RefreshError::Failed { .. } => Code::Unavailable,
        }
    }
}

/// `BatchDeleteFederatedBundle` in `RESTRICT` mode (the default) for a bundle that
/// registration entries still federate with.
#[derive(Debug, thiserror::Error)]
#[error("{entries} registration entries federate with {trust_domain}; remove it from them first, or delete with mode DISSOCIATE (`bundle delete --mode dissociate`) to do so, or DELETE to delete those entries too")]
pub struct BundleInUse {
    /// The bundle's trust domain.
    pub trust_domain: TrustDomain,
    /// How many entries federate with it.
    pub entries: usize,
}

impl ToCode for BundleInUse {
    fn code(&self) -> Code {
        // SPIRE's code for the same refusal.
        Code::FailedPrecondition
    }
}

impl<E: ToCode + std::error::Error + 'static> ToCode for CommandError<E> {
    fn code(&self) -> Code {
        match self {
            CommandError::Rejected(e) => e.code(),
            CommandError::Overloaded { .. } => Code::ResourceExhausted,
            CommandError::Unavailable { .. } => Code::Unavailable,
        }
    }
}

impl ToCode for LogError {
    fn code(&self) -> Code {
        match self {
            // The history is damaged: nothing a retry fixes.
            LogError::Corrupt { .. } | LogError::SnapshotMismatch { .. } => Code::DataLoss,
            LogError::Conflict { .. } => Code::Aborted,
            LogError::InvalidRecord(_) | LogError::BatchTooLarge { .. } => Code::Internal,
            LogError::Storage { .. } | LogError::Closed { .. } | LogError::Unavailable { .. } => {
                Code::Unavailable
            }
        }
    }
}

impl ToCode for ScanError {
    fn code(&self) -> Code {
        match self {
            ScanError::Log(e) => e.code(),
            // A stored checkpoint that does not decode: the history is damaged.
            _ => Code::DataLoss,
        }
    }
}

impl ToCode for SvidRejection {
    fn code(&self) -> Code {
        match self {
            // A crypto fault, not the caller's input.
            SvidRejection::Signing { .. } => Code::Internal,
            _ => Code::InvalidArgument,
        }
    }
}

impl ToCode for SignError {
    fn code(&self) -> Code {
        match self {
            SignError::Overloaded { .. } | SignError::BatchTooLarge { .. } => {
                Code::ResourceExhausted
            }
            SignError::Rejected(r) => r.code(),
            // No CA or key yet (the next rotation tick makes one), or a failed job: retry.
            SignError::NoActiveCa { .. }
            | SignError::NoActiveJwtKey { .. }
            | SignError::Internal { .. } => Code::Unavailable,
            _ => Code::Internal,
        }
    }
}

/// Forced rotation (LocalAuthority): a step out of order is `FailedPrecondition` (the
/// message names the step to take first); an ID the server does not hold is
/// `InvalidArgument`, as in SPIRE.
impl ToCode for AuthorityError {
    fn code(&self) -> Code {
        match self {
            AuthorityError::Unknown { .. } | AuthorityError::UnknownUpstream { .. } => {
                Code::InvalidArgument
            }
            AuthorityError::Duplicate { .. } => Code::AlreadyExists,
            // A record the server built itself: a bug, not the caller's input.
            AuthorityError::InvalidRecord { .. } => Code::Internal,
            _ => Code::FailedPrecondition,
        }
    }
}

impl ToCode for LocalAuthorityError {
    fn code(&self) -> Code {
        match self {
            LocalAuthorityError::Rejected(e) => e.code(),
            LocalAuthorityError::KeyUnavailable { .. } => Code::FailedPrecondition,
            // A build under way, a failed build or log write: retry.
            LocalAuthorityError::Busy { .. } | LocalAuthorityError::Failed(_) => Code::Unavailable,
            _ => Code::Internal,
        }
    }
}

impl ToCode for AuthorityCallError {
    fn code(&self) -> Code {
        match self {
            AuthorityCallError::Overloaded { .. } => Code::ResourceExhausted,
            AuthorityCallError::Unavailable { .. } | AuthorityCallError::Tick(_) => {
                Code::Unavailable
            }
            _ => Code::Internal,
        }
    }
}

impl ToCode for SyncHubError {
    fn code(&self) -> Code {
        match self {
            SyncHubError::Overloaded { .. } => Code::ResourceExhausted,
            SyncHubError::Unavailable(_) => Code::Unavailable,
        }
    }
}

impl ToCode for OpsError {
    fn code(&self) -> Code {
        match self {
            OpsError::Overloaded(_) => Code::ResourceExhausted,
            OpsError::Unavailable(_) => Code::Unavailable,
            OpsError::Invalid(_) => Code::InvalidArgument,
            OpsError::Denied(_) => Code::PermissionDenied,
        }
    }
}

impl ToCode for ItemError {
    fn code(&self) -> Code {
        match self {
            ItemError::InvalidId { .. } | ItemError::Rejected(_) => Code::InvalidArgument,
            ItemError::Busy(_) => Code::ResourceExhausted,
            // Not in the agent's view; an expired entry likewise issues nothing.
            ItemError::NotAuthorised { .. } | ItemError::Expired { .. } => Code::PermissionDenied,
        }
    }
}

impl ToCode for AttestError {
    fn code(&self) -> Code {
        match self {
            AttestError::Malformed { .. } | AttestError::NotEnabled(_) => Code::InvalidArgument,
            AttestError::Refused { .. } => Code::PermissionDenied,
        }
    }
}

impl ToCode for AudienceError {
    fn code(&self) -> Code {
        Code::InvalidArgument
    }
}

impl ToCode for LimitError {
    fn code(&self) -> Code {
        Code::ResourceExhausted
    }
}

impl ToCode for AgentAuthError {
    fn code(&self) -> Code {
        match self {
            AgentAuthError::NoSvid | AgentAuthError::SvidExpired { .. } => Code::Unauthenticated,
            AgentAuthError::Refused(_) => Code::PermissionDenied,
        }
    }

    fn to_status(&self) -> Status {
        match self {
            AgentAuthError::Refused(e) => agent_refusal(e),
            other => Status::new(other.code(), other.to_string()),
        }
    }
}

/// Errors of the admin services themselves (beyond the domain's).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field does not parse.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// A request goes over one of the admin API's limits.
    #[error("{what} is {got}, over the limit of {max} (server config `limits.{key}`)")]
    Limit {
        /// What was counted.
        what: &'static str,
        /// How many the request has.
        got: usize,
        /// The limit.
        max: usize,
        /// Its config key.
        key: &'static str,
    },
    /// A thing asked for by id does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Too many of something are open at once (streams): retry later.
    #[error("{what} are at the limit of {max} (server config `limits.{key}`); retry later")]
    Busy {
        /// What is counted.
        what: &'static str,
        /// The limit.
        max: usize,
        /// Its config key.
        key: &'static str,
    },
    /// The log or the OS failed; the caller may retry.
    #[error("{0}")]
    Unavailable(String),
}

impl ToCode for ApiError {
    fn code(&self) -> Code {
        match self {
            ApiError::Convert(e) => e.code(),
            ApiError::Limit { .. } | ApiError::Busy { .. } => Code::ResourceExhausted,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::Unavailable(_) => Code::Unavailable,
        }
    }
}

/// Checks a request's item count against a limit.
pub fn check_limit(
    what: &'static str,
    got: usize,
    max: usize,
    key: &'static str,
) -> Result<(), ApiError> {
    if got > max {
        return Err(ApiError::Limit {
            what,
            got,
            max,
            key,
        });
    }
    Ok(())
}

/// `?` for anything with a code inside a service method.
pub fn status<E: ToCode>(e: E) -> Status {
    e.to_status()
}

#[cfg(test)]
mod tests {
    use tessera_identity::{EntryId, SpiffeId};

    use super::*;

    #[test]
    fn codes_are_deliberate() {
        let id = EntryId::new("e").unwrap();
        let agent = SpiffeId::new("spiffe://example.org/spire/agent/x").unwrap();
        assert_eq!(
            EntryRejection::NotFound { id: id.clone() }.code(),
            Code::NotFound
        );
        assert_eq!(
            EntryRejection::AlreadyExists {
                existing: id.clone()
            }
            .code(),
            Code::AlreadyExists
        );
        assert_eq!(EntryRejection::IdInUse { id }.code(), Code::AlreadyExists);
        assert_eq!(
            EntryRejection::RegistryFull { limit: 1 }.code(),
            Code::ResourceExhausted
        );
        assert_eq!(NodeError::NotAttested(agent.clone()).code(), Code::NotFound);
        assert_eq!(NodeError::Banned(agent).code(), Code::PermissionDenied);
        assert_eq!(TokenError::Unknown.code(), Code::PermissionDenied);
        assert_eq!(
            TokenError::Ttl {
                ttl_secs: 0,
                max: 1
            }
            .code(),
            Code::InvalidArgument
        );
        let overloaded: CommandError<NodeError> = CommandError::Overloaded {
            actor: "nodes",
            limit: 1,
        };
        assert_eq!(overloaded.code(), Code::ResourceExhausted);
        let down: CommandError<NodeError> = CommandError::Unavailable {
            actor: "nodes",
            reason: "x".into(),
        };
        assert_eq!(down.code(), Code::Unavailable);
        let limit = check_limit("entries in the batch", 3, 2, "max_batch_size").unwrap_err();
        assert_eq!(limit.code(), Code::ResourceExhausted);
        assert!(limit.to_string().contains("limits.max_batch_size"));
        let td = TrustDomain::new("partner.org").unwrap();
        assert_eq!(
            FederationError::OwnTrustDomain {
                trust_domain: td.clone()
            }
            .code(),
            Code::InvalidArgument
        );
        assert_eq!(
            FederationError::TooManyBundles { limit: 1 }.code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            FederationError::BundleNotFound {
                trust_domain: td.clone()
            }
            .code(),
            Code::NotFound
        );
        assert_eq!(RefreshError::NotFound(td.clone()).code(), Code::NotFound);
        assert_eq!(RefreshError::NotRunning.code(), Code::Unavailable);
        let in_use = BundleInUse {
            trust_domain: td,
            entries: 2,
        };
        assert_eq!(in_use.code(), Code::FailedPrecondition);
        assert!(in_use.to_string().contains("DISSOCIATE"));
        let s = ConvertError::Missing { field: "id" }.to_item_status();
        assert_eq!(
            (s.code, s.message.as_str()),
            (Code::InvalidArgument as i32, "id is required")
        );
    }
}
