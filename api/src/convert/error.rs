//! [`ConvertError`]: a request field that does not parse.

use tessera_identity::{EntryIdError, IdError, SelectorError};

/// A field of a request is missing or malformed. Always the caller's fault
/// (`InvalidArgument`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A required field is absent or empty.
    #[error("{field} is required")]
    Missing {
        /// The field's proto name.
        field: &'static str,
    },
    /// A SPIFFE ID or trust domain does not parse.
    #[error("{field}: {source}")]
    Id {
        /// The field.
        field: &'static str,
        /// Why.
        source: IdError,
    },
    /// A selector does not parse.
    #[error("{field}: {source}")]
    Selector {
        /// The field.
        field: &'static str,
        /// Why.
        source: SelectorError,
    },
    /// An entry id does not parse.
    #[error("{field}: {source}")]
    EntryId {
        /// The field.
        field: &'static str,
        /// Why.
        source: EntryIdError,
    },
    /// A number is outside its range.
    #[error("{field}: {value} is out of range: {rule}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value.
        value: i64,
        /// The rule.
        rule: &'static str,
    },
    /// An enum value this server does not know.
    #[error("{field}: unknown value {value}")]
    UnknownEnum {
        /// The field.
        field: &'static str,
        /// The value.
        value: i32,
    },
    /// A field Tessera does not support, set to a non-default value.
    #[error("{field} is not supported by Tessera: {reason}")]
    Unsupported {
        /// The field.
        field: &'static str,
        /// Why, and what to do instead.
        reason: &'static str,
    },
    /// A string field breaks a rule.
    #[error("{field} {value:?}: {rule}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The value (truncated).
        value: String,
        /// The rule.
        rule: String,
    },
}

/// At most this many characters of an offending value go into a message.
pub fn shown(value: &str) -> String {
    value.chars().take(160).collect()
}
