//! Everything a Workload API call can fail with, and — written once, here — the gRPC code each
//! failure gets, per the SPIFFE Workload API standard where it says.

use tessera_actors::agent::view::JwtFetchError;
use tonic::{Code, Status};

use super::jwt::JwtError;
use super::limits::StreamLimitError;
use crate::attestor::AttestError;

/// Why a Workload API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request lacks metadata `workload.spiffe.io: true` (the standard: InvalidArgument).
    #[error("security header missing from request")]
    MissingHeader,
    /// The connection carries no caller credentials (never with [`super::serve`]).
    #[error("the caller's credentials are unknown")]
    NoCredentials,
    /// Attestation of the caller failed.
    #[error("workload attestation failed: {0}")]
    Attestation(#[from] AttestError),
    /// The caller is entitled to no identity (the standard: PermissionDenied).
    #[error("no identity issued")]
    NoIdentity,
    /// FetchJWTSVID names a SPIFFE ID the caller is not entitled to.
    #[error("no identity issued for {0}")]
    NotEntitled(String),
    /// A stream bound is reached.
    #[error(transparent)]
    StreamLimit(#[from] StreamLimitError),
    /// A request field breaks a limit.
    #[error("{field}: {reason}")]
    RequestLimit {
        /// The field.
        field: &'static str,
        /// The limit broken, named.
        reason: String,
    },
    /// A request field is malformed or missing.
    #[error("{field}: {reason}")]
    BadRequest {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// ValidateJWTSVID: the token is not valid.
    #[error("{0}")]
    InvalidToken(#[from] JwtError),
    /// The node side could not provide a JWT-SVID.
    #[error("{0}")]
    JwtFetch(#[from] JwtFetchError),
    /// The agent holds no bundle for a trust domain it serves an SVID of.
    #[error("the agent has no trust bundle for {0} yet; retry shortly")]
    NoBundle(String),
    /// A bundle could not be encoded (a bug or corrupt state).
    #[error("cannot encode the bundle of {trust_domain}: {reason}")]
    Encode {
        /// The trust domain.
        trust_domain: String,
        /// Why.
        reason: String,
    },
    /// The agent is stopping, or its identity source is gone.
    #[error("the agent is shutting down")]
    ShuttingDown,
}

impl ApiError {
    /// The gRPC code the caller receives.
    pub fn code(&self) -> Code {
        match self {
            Self::MissingHeader | Self::BadRequest { .. } => Code::InvalidArgument,
            Self::InvalidToken(e) if e.is_limit() => Code::ResourceExhausted,
            Self::InvalidToken(_) => Code::InvalidArgument,
            Self::Attestation(e) if e.is_caller_changed() => Code::PermissionDenied,
            Self::NoCredentials | Self::NoIdentity | Self::NotEntitled(_) => Code::PermissionDenied,
            Self::StreamLimit(_) | Self::RequestLimit { .. } => Code::ResourceExhausted,
            Self::JwtFetch(JwtFetchError::UnknownEntry(_)) => Code::PermissionDenied,
            Self::JwtFetch(JwtFetchError::Invalid(_)) => Code::InvalidArgument,
            Self::Attestation(_)
            | Self::JwtFetch(JwtFetchError::Unavailable(_))
            | Self::NoBundle(_)
            | Self::ShuttingDown => Code::Unavailable,
            Self::Encode { .. } => Code::Internal,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_failure_gets_its_deliberate_code() {
        let cases: Vec<(ApiError, Code)> = vec![
            (ApiError::MissingHeader, Code::InvalidArgument),
            (ApiError::NoIdentity, Code::PermissionDenied),
            (
                ApiError::NotEntitled("spiffe://a.org/x".into()),
                Code::PermissionDenied,
            ),
            (ApiError::NoCredentials, Code::PermissionDenied),
            (
                StreamLimitError::PerUid { uid: 1, max: 2 }.into(),
                Code::ResourceExhausted,
            ),
            (
                JwtError::TooLarge { len: 2, max: 1 }.into(),
                Code::ResourceExhausted,
            ),
            (JwtError::Expired.into(), Code::InvalidArgument),
            (
                JwtFetchError::UnknownEntry("e".into()).into(),
                Code::PermissionDenied,
            ),
            (
                JwtFetchError::Unavailable("down".into()).into(),
                Code::Unavailable,
            ),
            (
                JwtFetchError::Invalid("too many".into()).into(),
                Code::InvalidArgument,
            ),
            (
                AttestError::Timeout {
                    attestor: "unix",
                    after: Duration::from_secs(1),
                }
                .into(),
                Code::Unavailable,
            ),
            (ApiError::NoBundle("a.org".into()), Code::Unavailable),
            (ApiError::ShuttingDown, Code::Unavailable),
        ];
        for (e, code) in cases {
            let text = e.to_string();
            let status = Status::from(e);
            assert_eq!(status.code(), code, "{text}");
            assert_eq!(status.message(), text);
        }
    }
}
