//! Everything an SDS call can fail with, and — written once, here — the gRPC code each failure
//! gets: SPIRE's codes where SPIRE says, the Workload API's for what the two share.

use tonic::{Code, Status};

use super::limits::SdsLimitError;
use crate::workload_api::ApiError;

/// Why an SDS call failed.
#[derive(Debug, thiserror::Error)]
pub enum SdsError {
    /// What SDS shares with the Workload API: credentials, attestation, no identity, stream
    /// slots, a missing bundle, shutdown. Its code is the Workload API's.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The request asks for a resource type SDS does not serve.
    #[error(
        "type_url {got:?}: this service serves only {}; ask for that type",
        super::SECRET_TYPE_URL
    )]
    WrongType {
        /// The type asked for.
        got: String,
    },
    /// Names that are none of the caller's SVIDs or trusted bundles (SPIRE: InvalidArgument).
    #[error("workload is not authorized for the requested resources {names:?}: name one of its SPIFFE IDs, a trust domain ID it trusts, or a configured default name (sds.default_svid_name, sds.default_bundle_name, sds.default_all_bundles_name)")]
    NotAuthorized {
        /// The names, sorted.
        names: Vec<String>,
    },
    /// `sds.default_all_bundles_name` needs the SPIFFE validator, which is off for this caller.
    #[error("{name:?} needs Envoy's SPIFFE certificate validator (Envoy 1.18 or later), which is off for this caller (sds.disable_spiffe_cert_validation, or node metadata disable_spiffe_cert_validation); ask for each trust domain's bundle by its ID instead")]
    ValidatorOff {
        /// The resource name.
        name: String,
    },
    /// A request breaks a bound.
    #[error(transparent)]
    Limit(#[from] SdsLimitError),
    /// A secret could not be encoded (a bug or corrupt state).
    #[error("cannot encode secret {name:?}: {reason}")]
    Encode {
        /// The resource name.
        name: String,
        /// Why.
        reason: String,
    },
}

impl SdsError {
    /// The gRPC code the caller receives.
    pub fn code(&self) -> Code {
        match self {
            Self::Api(e) => e.code(),
            Self::WrongType { .. } | Self::NotAuthorized { .. } => Code::InvalidArgument,
            Self::ValidatorOff { .. } => Code::FailedPrecondition,
            Self::Limit(_) => Code::ResourceExhausted,
            Self::Encode { .. } => Code::Internal,
        }
    }
}

impl From<SdsError> for Status {
    fn from(e: SdsError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_gets_its_deliberate_code() {
        let cases: Vec<(SdsError, Code)> = vec![
            (ApiError::NoIdentity.into(), Code::PermissionDenied),
            (ApiError::NoCredentials.into(), Code::PermissionDenied),
            (
                SdsError::WrongType { got: "x".into() },
                Code::InvalidArgument,
            ),
            (
                SdsError::NotAuthorized {
                    names: vec!["spiffe://a.org/x".into()],
                },
                Code::InvalidArgument,
            ),
            (
                SdsError::ValidatorOff { name: "ALL".into() },
                Code::FailedPrecondition,
            ),
            (
                SdsLimitError::TooManyNames { count: 3, max: 2 }.into(),
                Code::ResourceExhausted,
            ),
        ];
        for (e, code) in cases {
            let text = e.to_string();
            let status = Status::from(e);
            assert_eq!(status.code(), code, "{text}");
            assert_eq!(status.message(), text);
        }
    }
}
