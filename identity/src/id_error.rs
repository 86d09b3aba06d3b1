//! Why a string is not a SPIFFE ID or trust domain name, and how to fix it.
//!
//! The `spiffe` crate reports a rule by name only ("bad trust domain char"); the errors here
//! also carry the offending input and a fix, because they end up in front of an operator
//! (`entry create --spiffeID ...`). Inputs are truncated before they are stored so that an
//! attacker-sized string never becomes an attacker-sized log line.

use thiserror::Error;

/// Longest prefix of an offending input kept in an error message, in bytes.
const SHOWN_INPUT_MAX: usize = 160;

/// A string that is not a valid SPIFFE ID or trust domain name, per the SPIFFE-ID standard.
///
/// Every message names the input (quoted, truncated past 160 bytes), the rule it breaks and,
/// where there is one, the fix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum IdError {
    /// The SPIFFE ID string was empty.
    #[error("SPIFFE ID is empty: expected \"spiffe://<trust-domain>/<path>\"")]
    Empty,

    /// The SPIFFE ID is longer than the 2048 bytes the standard lets implementations refuse.
    #[error(
        "{input:?}: SPIFFE ID is {len} bytes long, over the limit of {max} bytes; shorten the path"
    )]
    TooLong {
        /// The offending input (truncated).
        input: String,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },

    /// The scheme is missing or is not `spiffe`.
    #[error(
        "{input:?}: the scheme must be \"spiffe://\" (e.g. \"spiffe://example.org/workload\")"
    )]
    WrongScheme {
        /// The offending input (truncated).
        input: String,
    },

    /// The scheme is `spiffe` but not written in lowercase.
    #[error("{input:?}: the scheme must be written in lowercase, as \"spiffe://\"")]
    SchemeNotLowercase {
        /// The offending input (truncated).
        input: String,
    },

    /// Nothing between `spiffe://` and the path.
    #[error(
        "{input:?}: the trust domain is missing; put it right after \"spiffe://\" \
         (e.g. \"spiffe://example.org/workload\")"
    )]
    MissingTrustDomain {
        /// The offending input (truncated).
        input: String,
    },

    /// A bare trust domain name was empty.
    #[error("trust domain name is empty: give a name such as \"example.org\"")]
    EmptyTrustDomain,

    /// The trust domain is longer than the 255 bytes a URI host may have.
    #[error("{input:?}: the trust domain is {len} bytes long, over the limit of {max} bytes")]
    TrustDomainTooLong {
        /// The offending input (truncated).
        input: String,
        /// Length of the trust domain in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },

    /// The trust domain holds a character outside `[a-z0-9._-]` (uppercase included).
    #[error(
        "{input:?}: trust domain characters are limited to lowercase letters, digits, '.', '-' \
         and '_'"
    )]
    BadTrustDomainChar {
        /// The offending input (truncated).
        input: String,
    },

    /// The authority has a `user@` part.
    #[error(
        "{input:?}: userinfo (\"user@\") is not allowed in a SPIFFE ID; remove everything up to \
         and including the '@'"
    )]
    UserInfo {
        /// The offending input (truncated).
        input: String,
    },

    /// The authority has a `:port` part (or a stray `:`).
    #[error("{input:?}: a port is not allowed in a SPIFFE ID; remove the ':' and what follows it")]
    Port {
        /// The offending input (truncated).
        input: String,
    },

    /// The URI has a `?query`.
    #[error("{input:?}: a query (\"?...\") is not allowed in a SPIFFE ID; remove it")]
    Query {
        /// The offending input (truncated).
        input: String,
    },

    /// The URI has a `#fragment`.
    #[error("{input:?}: a fragment (\"#...\") is not allowed in a SPIFFE ID; remove it")]
    Fragment {
        /// The offending input (truncated).
        input: String,
    },

    /// The URI uses `%XX` escapes, which SPIFFE IDs never need.
    #[error(
        "{input:?}: percent-encoding (\"%XX\") is not allowed in a SPIFFE ID; use only letters, \
         digits, '.', '-' and '_'"
    )]
    PercentEncoded {
        /// The offending input (truncated).
        input: String,
    },

    /// A path segment holds a character outside `[a-zA-Z0-9._-]`.
    #[error("{input:?}: path segment characters are limited to letters, digits, '.', '-' and '_'")]
    BadPathChar {
        /// The offending input (truncated).
        input: String,
    },

    /// The path has an empty segment (`//`).
    #[error("{input:?}: the path has an empty segment (\"//\"); remove the extra '/'")]
    EmptySegment {
        /// The offending input (truncated).
        input: String,
    },

    /// A path segment is `.` or `..`.
    #[error("{input:?}: path segments cannot be \".\" or \"..\"; write the path out in full")]
    DotSegment {
        /// The offending input (truncated).
        input: String,
    },

    /// The path ends with `/`.
    #[error("{input:?}: the path cannot end with '/'; remove the trailing slash")]
    TrailingSlash {
        /// The offending input (truncated).
        input: String,
    },

    /// A path given on its own does not start with `/`.
    #[error("{input:?}: a SPIFFE ID path must be empty or start with '/' (e.g. \"/workload\")")]
    RelativePath {
        /// The offending path (truncated).
        input: String,
    },

    /// A trust domain name was expected but the input has a scheme or a path.
    #[error(
        "{input:?}: expected a trust domain name alone (e.g. \"example.org\"), without a scheme \
         or path"
    )]
    NotATrustDomainName {
        /// The offending input (truncated).
        input: String,
    },

    /// The `spiffe` crate rejected the input for a reason this crate does not know yet.
    #[error("{input:?}: {reason}")]
    Other {
        /// The offending input (truncated).
        input: String,
        /// The `spiffe` crate's description of the problem.
        reason: String,
    },
}

/// The part of `input` an error message shows: all of it, or the longest prefix whose quoted
/// (`{:?}`) form stays within 160 bytes, and `…`.
///
/// The bound is on the quoted form because messages print inputs with `{:?}`, which turns a
/// control character into up to 10 bytes (`\u{19}`): a bound on raw bytes alone let 160 bytes
/// of control characters become a message of a kilobyte.
pub(crate) fn shown(input: &str) -> String {
    let mut quoted = 0;
    for (at, c) in input.char_indices() {
        quoted += c.escape_debug().map(char::len_utf8).sum::<usize>();
        if quoted > SHOWN_INPUT_MAX {
            let mut out = String::with_capacity(at + 3);
            out.push_str(&input[..at]);
            out.push('…');
            return out;
        }
    }
    input.to_owned()
}

/// Turns the `spiffe` crate's verdict on `input` into an [`IdError`] that names the rule.
///
/// The `spiffe` crate folds several URI features (port, userinfo, query, fragment, `%XX`) into
/// "bad character"; they get their own variants here because the fix differs.
pub(crate) fn refine(input: &str, err: spiffe::SpiffeIdError) -> IdError {
    use spiffe::SpiffeIdError as E;

    let after_scheme = input.split_once("://").map_or("", |(_, rest)| rest);
    let authority = after_scheme.split('/').next().unwrap_or("");
    let shown_input = shown(input);
    match err {
        E::Empty => IdError::Empty,
        E::WrongScheme => IdError::WrongScheme { input: shown_input },
        E::MissingTrustDomain => IdError::MissingTrustDomain { input: shown_input },
        E::BadTrustDomainChar | E::BadPathSegmentChar => {
            if let Some(e) = uri_feature(after_scheme, authority, &shown_input) {
                e
            } else if matches!(err, E::BadTrustDomainChar) {
                IdError::BadTrustDomainChar { input: shown_input }
            } else {
                IdError::BadPathChar { input: shown_input }
            }
        }
        E::EmptySegment => IdError::EmptySegment { input: shown_input },
        E::DotSegment => IdError::DotSegment { input: shown_input },
        E::TrailingSlash => IdError::TrailingSlash { input: shown_input },
        E::TrustDomainTooLong { max } => IdError::TrustDomainTooLong {
            input: shown_input,
            len: authority.len(),
            max,
        },
        E::SpiffeIdTooLong { max } => IdError::TooLong {
            input: shown_input,
            len: input.len(),
            max,
        },
        other => IdError::Other {
            input: shown_input,
            reason: other.to_string(),
        },
    }
}

/// Names the URI feature (query, fragment, userinfo, port, `%XX`) that made a character bad.
pub(crate) fn uri_feature(
    after_scheme: &str,
    authority: &str,
    shown_input: &str,
) -> Option<IdError> {
    let input = shown_input.to_owned();
    // Whichever of '?' and '#' comes first starts the component the URI parser would see.
    match after_scheme
        .find(['?', '#'])
        .map(|i| after_scheme.as_bytes()[i])
    {
        Some(b'?') => return Some(IdError::Query { input }),
        Some(_) => return Some(IdError::Fragment { input }),
        None => {}
    }
    if authority.contains('@') {
        Some(IdError::UserInfo { input })
    } else if authority.contains(':') {
        Some(IdError::Port { input })
    } else if after_scheme.contains('%') {
        Some(IdError::PercentEncoded { input })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `spiffe_id` fuzz target: 195 control characters and "ns" made a message of
    /// over 1,000 bytes, as each `\u{19}` is printed as six.
    #[test]
    fn shown_bounds_the_quoted_form_of_control_characters() {
        let input = format!("{}ns", "\u{19}".repeat(195));
        let s = shown(&input);
        assert!(s.ends_with('…'));
        assert!(format!("{s:?}").len() <= SHOWN_INPUT_MAX + 2 + '…'.len_utf8());
        let e = crate::SpiffeId::new(&input).unwrap_err();
        assert!(
            e.to_string().len() < 400,
            "{} bytes: {e}",
            e.to_string().len()
        );
        let e = crate::Selector::parse(&input).unwrap_err();
        assert!(
            e.to_string().len() < 400,
            "{} bytes: {e}",
            e.to_string().len()
        );
    }

    #[test]
    fn shown_keeps_short_inputs_whole() {
        assert_eq!(shown("spiffe://a/b"), "spiffe://a/b");
    }

    #[test]
    fn shown_truncates_on_a_char_boundary() {
        let long = "é".repeat(200);
        let s = shown(&long);
        assert!(s.ends_with('…'));
        assert!(s.len() <= SHOWN_INPUT_MAX + '…'.len_utf8());
    }

    #[test]
    fn messages_quote_the_input_and_name_the_fix() {
        let e = IdError::BadTrustDomainChar {
            input: "spiffe://Ex.org/a".into(),
        };
        assert_eq!(
            e.to_string(),
            "\"spiffe://Ex.org/a\": trust domain characters are limited to lowercase letters, \
             digits, '.', '-' and '_'"
        );
    }
}
