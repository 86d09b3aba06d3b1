//! [`TrustDomain`]: the name of a SPIFFE trust domain, e.g. `example.org`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id_error::{refine, shown, IdError};
use crate::SpiffeId;

/// A SPIFFE trust domain name: 1 to 255 bytes of `[a-z0-9._-]`.
///
/// Wraps [`spiffe::TrustDomain`], which does the character checks, and is stricter in one way:
/// where the `spiffe` crate lowercases `Example.org`, this type rejects it, so that a name has
/// exactly one spelling and string comparison is identity comparison.
///
/// Displays, parses and serializes as the bare name (`example.org`). Shared: a clone is a
/// reference count.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain(Arc<spiffe::TrustDomain>);

impl TrustDomain {
    /// Longest trust domain name, in bytes (the limit RFC 3986 puts on a URI host).
    pub const MAX_LEN: usize = 255;

    /// Parses a bare trust domain name such as `example.org`.
    ///
    /// # Errors
    /// An [`IdError`] naming the rule broken: empty, too long, a character outside
    /// `[a-z0-9._-]`, a port, or a scheme/path (use [`TrustDomain::from_name_or_id`] to accept
    /// `spiffe://example.org` too).
    pub fn new(name: &str) -> Result<Self, IdError> {
        if name.is_empty() {
            return Err(IdError::EmptyTrustDomain);
        }
        if name.contains('/') {
            return Err(IdError::NotATrustDomainName { input: shown(name) });
        }
        if name.len() > Self::MAX_LEN {
            return Err(IdError::TrustDomainTooLong {
                input: shown(name),
                len: name.len(),
                max: Self::MAX_LEN,
            });
        }
        let inner = spiffe::TrustDomain::new(name).map_err(|e| refine_name(name, e))?;
        // The spiffe crate lowercases; a different result means the input was not canonical.
        if inner.as_str() != name {
            return Err(IdError::BadTrustDomainChar { input: shown(name) });
        }
        Ok(Self(Arc::new(inner)))
    }

    /// Parses either a bare name (`example.org`) or a SPIFFE ID (`spiffe://example.org[/path]`)
    /// and returns its trust domain, as SPIRE's `-federatesWith` and go-spiffe accept both.
    ///
    /// # Errors
    /// An [`IdError`] from [`TrustDomain::new`] or [`SpiffeId::new`].
    pub fn from_name_or_id(input: &str) -> Result<Self, IdError> {
        if input.contains("://") {
            SpiffeId::new(input).map(|id| id.trust_domain().clone())
        } else {
            Self::new(input)
        }
    }

    /// The name, e.g. `example.org`.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The SPIFFE ID of the trust domain itself, `spiffe://<name>` (no path).
    pub fn id(&self) -> SpiffeId {
        match spiffe::SpiffeId::from_segments((*self.0).clone(), &[]) {
            Ok(inner) => SpiffeId::from_valid(self.clone(), &inner),
            // from_segments fails only on a bad segment or an over-long result; with no
            // segments and a name of at most 255 bytes neither can happen.
            Err(e) => unreachable!("spiffe crate rejected the ID of trust domain {self}: {e}"),
        }
    }

    /// The `spiffe` crate's view of this trust domain.
    pub fn as_spiffe(&self) -> &spiffe::TrustDomain {
        &self.0
    }

    /// Wraps a name the `spiffe` crate already checked and this crate found canonical.
    pub(crate) fn from_valid(inner: spiffe::TrustDomain) -> Self {
        Self(Arc::new(inner))
    }
}

/// Refines the `spiffe` crate's error for a bare name: there is no path, so a bad character
/// may be a port or userinfo.
fn refine_name(name: &str, err: spiffe::SpiffeIdError) -> IdError {
    if let spiffe::SpiffeIdError::BadTrustDomainChar = err {
        if let Some(e) = crate::id_error::uri_feature(name, name, &shown(name)) {
            return e;
        }
    }
    if let spiffe::SpiffeIdError::WrongScheme = err {
        return IdError::NotATrustDomainName { input: shown(name) };
    }
    refine(name, err)
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TrustDomain").field(&self.as_str()).finish()
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for TrustDomain {
    type Error = IdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<String> for TrustDomain {
    type Error = IdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl AsRef<str> for TrustDomain {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<TrustDomain> for spiffe::TrustDomain {
    fn from(td: TrustDomain) -> Self {
        Arc::unwrap_or_clone(td.0)
    }
}

impl TryFrom<spiffe::TrustDomain> for TrustDomain {
    type Error = IdError;

    /// Re-checks the name so a future, laxer `spiffe` crate cannot smuggle in a bad one.
    fn try_from(td: spiffe::TrustDomain) -> Result<Self, Self::Error> {
        Self::new(td.as_str())
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td(s: &str) -> Result<TrustDomain, IdError> {
        TrustDomain::new(s)
    }

    #[test]
    fn accepts_every_allowed_character() {
        for ok in [
            "example.org",
            "a",
            "a-b_c.0-9",
            "xn--bcher-kva.example",
            "_",
            "1.2.3.4",
        ] {
            assert_eq!(td(ok).map(|t| t.to_string()), Ok(ok.to_owned()), "{ok}");
        }
    }

    #[test]
    fn rejects_uppercase_rather_than_lowercasing() {
        assert!(matches!(
            td("Example.org"),
            Err(IdError::BadTrustDomainChar { .. })
        ));
    }

    #[test]
    fn rejects_empty_and_bad_characters() {
        assert_eq!(td(""), Err(IdError::EmptyTrustDomain));
        for bad in ["exa mple.org", "ex!ample", "exämple.org", "a\u{0}b", "a%41"] {
            assert!(td(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(td("a%41"), Err(IdError::PercentEncoded { .. })));
    }

    #[test]
    fn rejects_port_userinfo_scheme_and_path() {
        assert!(matches!(td("example.org:443"), Err(IdError::Port { .. })));
        assert!(matches!(
            td("me@example.org"),
            Err(IdError::UserInfo { .. })
        ));
        assert!(matches!(
            td("spiffe://example.org"),
            Err(IdError::NotATrustDomainName { .. })
        ));
        assert!(matches!(
            td("example.org/path"),
            Err(IdError::NotATrustDomainName { .. })
        ));
    }

    #[test]
    fn enforces_the_255_byte_limit() {
        assert!(td(&"a".repeat(255)).is_ok());
        assert!(matches!(
            td(&"a".repeat(256)),
            Err(IdError::TrustDomainTooLong {
                len: 256,
                max: 255,
                ..
            })
        ));
    }

    #[test]
    fn from_name_or_id_accepts_both_spellings() {
        let want = td("example.org").unwrap();
        assert_eq!(
            TrustDomain::from_name_or_id("example.org"),
            Ok(want.clone())
        );
        assert_eq!(
            TrustDomain::from_name_or_id("spiffe://example.org"),
            Ok(want.clone())
        );
        assert_eq!(
            TrustDomain::from_name_or_id("spiffe://example.org/a/b"),
            Ok(want)
        );
        assert!(TrustDomain::from_name_or_id("spiffe://example.org/a//b").is_err());
    }

    #[test]
    fn id_is_the_pathless_spiffe_id() {
        let id = td("example.org").unwrap().id();
        assert_eq!(id.to_string(), "spiffe://example.org");
        assert_eq!(id.path(), "");
    }

    #[test]
    fn converts_to_and_from_the_spiffe_crate() {
        let ours = td("example.org").unwrap();
        let theirs: spiffe::TrustDomain = ours.clone().into();
        assert_eq!(theirs.as_str(), "example.org");
        assert_eq!(TrustDomain::try_from(theirs), Ok(ours));
    }

    #[test]
    fn serializes_as_the_bare_name() {
        let t = td("example.org").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"example.org\"");
        assert_eq!(
            serde_json::from_str::<TrustDomain>("\"example.org\"").unwrap(),
            t
        );
        assert!(serde_json::from_str::<TrustDomain>("\"Example.org\"").is_err());
    }
}
