//! [`SpiffeId`]: `spiffe://<trust-domain><path>`, checked against every rule of the SPIFFE-ID
//! standard.

use std::cell::RefCell;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id_error::{refine, shown, IdError};
use crate::TrustDomain;

/// Longest SPIFFE ID accepted, in bytes. The standard requires support up to 2048 bytes and
/// says implementations should not generate longer ones; accepting longer ones would let a peer
/// make every index and log line carrying an ID arbitrarily large.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

const SCHEME_PREFIX: &str = "spiffe://";

/// A valid SPIFFE ID, e.g. `spiffe://example.org/ns/prod/sa/web`.
///
/// Rules (SPIFFE-ID standard §2): scheme `spiffe://` in lowercase; a trust domain of 1-255
/// bytes of `[a-z0-9._-]`; an optional path of `/`-separated segments of `[a-zA-Z0-9._-]`,
/// none of them empty, `.` or `..`, and no trailing `/`; no userinfo, port, query, fragment or
/// percent-encoding; at most 2048 bytes in all.
///
/// Wraps [`spiffe::SpiffeId`], which checks the character sets and segments. This type adds the
/// length limit, rejects (rather than lowercases) an uppercase scheme or trust domain, and
/// explains each rejection (see [`IdError`]). Ordering is by trust domain, then path.
///
/// Shared: a clone is a reference count, so indexes keyed by IDs hold no copies of the text.
#[derive(Clone)]
pub struct SpiffeId(Arc<IdInner>);

#[derive(Clone)]
struct IdInner {
    // Kept next to the text (it is derived from it) so `trust_domain()` can hand out a
    // reference; shared between IDs of one trust domain.
    trust_domain: TrustDomain,
    /// The whole ID, `spiffe://<trust domain><path>`, as checked: one allocation, so that a
    /// million IDs held by the registry cost two allocations each rather than four.
    text: Box<str>,
}

thread_local! {
    /// The trust domain of the last ID parsed on this thread: IDs mostly come in runs of one
    /// trust domain, and sharing it saves an allocation per ID when a log is replayed.
    static LAST_TRUST_DOMAIN: RefCell<Option<TrustDomain>> = const { RefCell::new(None) };
}

thread_local! {
    /// Recently decoded IDs that repeat (entries' parent IDs: many entries per agent), so a
    /// replayed log holds one copy of each; bounded, emptied when full.
    static RECENT_PARENTS: RefCell<crate::RecentMap<Box<str>, SpiffeId>> =
        RefCell::new(crate::RecentMap::default());
}

/// Most IDs [`SpiffeId::deserialize_shared`] remembers per thread.
const MAX_RECENT_PARENTS: usize = 4096;

fn shared_trust_domain(td: &spiffe::TrustDomain) -> TrustDomain {
    LAST_TRUST_DOMAIN.with(|last| {
        let mut last = last.borrow_mut();
        match last.as_ref() {
            Some(t) if t.as_str() == td.as_str() => t.clone(),
            _ => {
                let t = TrustDomain::from_valid(td.clone());
                *last = Some(t.clone());
                t
            }
        }
    })
}

impl PartialEq for SpiffeId {
    fn eq(&self, other: &Self) -> bool {
        // One spelling per ID: equal texts are equal IDs.
        Arc::ptr_eq(&self.0, &other.0) || self.0.text == other.0.text
    }
}

impl Eq for SpiffeId {}

impl Hash for SpiffeId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.text.hash(state);
    }
}

impl Ord for SpiffeId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0.trust_domain.as_str(), self.path())
            .cmp(&(other.0.trust_domain.as_str(), other.path()))
    }
}

impl PartialOrd for SpiffeId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl SpiffeId {
    /// Parses and checks a SPIFFE ID.
    ///
    /// # Errors
    /// An [`IdError`] naming the first rule the input breaks.
    pub fn new(id: &str) -> Result<Self, IdError> {
        if id.is_empty() {
            return Err(IdError::Empty);
        }
        if id.len() > MAX_SPIFFE_ID_LEN {
            return Err(IdError::TooLong {
                input: shown(id),
                len: id.len(),
                max: MAX_SPIFFE_ID_LEN,
            });
        }
        let inner = spiffe::SpiffeId::new(id).map_err(|e| refine(id, e))?;
        // The spiffe crate accepts and lowercases `SPIFFE://Example.org`; here an ID has one
        // spelling, so that comparing strings (in the log, in SQL, in a workload) is exact.
        let Some(rest) = id.strip_prefix(SCHEME_PREFIX) else {
            return Err(IdError::SchemeNotLowercase { input: shown(id) });
        };
        let name = inner.trust_domain_name();
        if rest.get(..name.len()) != Some(name) {
            return Err(IdError::BadTrustDomainChar { input: shown(id) });
        }
        Ok(Self(Arc::new(IdInner {
            trust_domain: shared_trust_domain(inner.trust_domain()),
            text: Box::from(id),
        })))
    }

    /// Builds the ID with `path` in `trust_domain`, as SPIRE's API carries IDs
    /// (`{trust_domain, path}`). `path` is empty or starts with `/`.
    ///
    /// # Errors
    /// [`IdError::RelativePath`] if `path` lacks its leading `/`, else any error of
    /// [`SpiffeId::new`] for the assembled ID.
    pub fn from_path(trust_domain: &TrustDomain, path: &str) -> Result<Self, IdError> {
        if !path.is_empty() && !path.starts_with('/') {
            return Err(IdError::RelativePath { input: shown(path) });
        }
        let mut id =
            String::with_capacity(SCHEME_PREFIX.len() + trust_domain.as_str().len() + path.len());
        id.push_str(SCHEME_PREFIX);
        id.push_str(trust_domain.as_str());
        id.push_str(path);
        Self::new(&id)
    }

    /// The trust domain, e.g. `example.org`.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.0.trust_domain
    }

    /// The path: empty for a trust domain's own ID, else `/seg/seg...`.
    pub fn path(&self) -> &str {
        let start = SCHEME_PREFIX.len() + self.0.trust_domain.as_str().len();
        self.0.text.get(start..).unwrap_or_default()
    }

    /// The path segments, in order (none for a trust domain's own ID).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path().split('/').skip(1)
    }

    /// Whether the path is empty, i.e. this is the ID of a trust domain rather than of a
    /// workload, agent or server.
    pub fn is_trust_domain_id(&self) -> bool {
        self.path().is_empty()
    }

    /// Whether this ID belongs to `trust_domain`.
    pub fn is_member_of(&self, trust_domain: &TrustDomain) -> bool {
        &self.0.trust_domain == trust_domain
    }

    /// The ID as text, `spiffe://<trust domain><path>`.
    pub fn as_str(&self) -> &str {
        &self.0.text
    }

    /// The `spiffe` crate's view of this ID.
    pub fn to_spiffe(&self) -> spiffe::SpiffeId {
        spiffe::SpiffeId::from(self.clone())
    }

    /// Pairs a trust domain with an ID the `spiffe` crate built from it.
    pub(crate) fn from_valid(trust_domain: TrustDomain, inner: &spiffe::SpiffeId) -> Self {
        Self(Arc::new(IdInner {
            trust_domain,
            text: inner.to_string().into(),
        }))
    }
}

impl SpiffeId {
    /// Deserializes an ID that is likely to repeat (such as a registration entry's parent),
    /// sharing one copy between the records that name it. For `#[serde(deserialize_with)]`.
    ///
    /// # Errors
    /// As [`SpiffeId::new`], for a string that is not a valid ID.
    pub fn deserialize_shared<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Self, D::Error> {
        crate::serde_str::deserialize_parsed(
            deserializer,
            "a SPIFFE ID",
            |s| -> Result<SpiffeId, IdError> {
                RECENT_PARENTS.with(|recent| {
                    let mut recent = recent.borrow_mut();
                    if let Some(id) = recent.get(s) {
                        return Ok(id.clone());
                    }
                    let id = SpiffeId::new(s)?;
                    if recent.len() >= MAX_RECENT_PARENTS {
                        recent.clear();
                    }
                    recent.insert(Box::from(s), id.clone());
                    Ok(id)
                })
            },
        )
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.text)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SpiffeId").field(&self.to_string()).finish()
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for SpiffeId {
    type Error = IdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<String> for SpiffeId {
    type Error = IdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<SpiffeId> for spiffe::SpiffeId {
    fn from(id: SpiffeId) -> Self {
        match spiffe::SpiffeId::new(&id.0.text) {
            Ok(inner) => inner,
            // The text passed this parser when the ID was made (`new`), or is its output
            // (`from_valid`).
            Err(e) => unreachable!("spiffe crate rejected {id}, which it accepted before: {e}"),
        }
    }
}

impl TryFrom<spiffe::SpiffeId> for SpiffeId {
    type Error = IdError;

    /// Fails on IDs the `spiffe` crate allows but the standard lets us refuse (over 2048 bytes).
    fn try_from(id: spiffe::SpiffeId) -> Result<Self, Self::Error> {
        Self::new(&id.to_string())
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::serde_str::deserialize_parsed(deserializer, "a SPIFFE ID", Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Result<SpiffeId, IdError> {
        SpiffeId::new(s)
    }

    #[test]
    fn orders_by_trust_domain_then_path_and_converts() {
        // Text order would put "a.b" first ('.' < '/').
        let (short, long) = (id("spiffe://a/x").unwrap(), id("spiffe://a.b/x").unwrap());
        assert!(short < long);
        assert!(id("spiffe://a/x").unwrap() < id("spiffe://a/y").unwrap());
        assert_eq!(short, id("spiffe://a/x").unwrap());
        assert_eq!(long.as_str(), "spiffe://a.b/x");
        let theirs = long.to_spiffe();
        assert_eq!(theirs.to_string(), "spiffe://a.b/x");
        assert_eq!(SpiffeId::try_from(theirs).unwrap(), long);
        let td = long.trust_domain().id();
        assert_eq!((td.as_str(), td.path()), ("spiffe://a.b", ""));
    }

    #[test]
    fn accepts_valid_ids_and_splits_them() {
        let a = id("spiffe://example.org/ns/prod/sa/Web_1.x-y").unwrap();
        assert_eq!(a.trust_domain().as_str(), "example.org");
        assert_eq!(a.path(), "/ns/prod/sa/Web_1.x-y");
        assert_eq!(
            a.segments().collect::<Vec<_>>(),
            ["ns", "prod", "sa", "Web_1.x-y"]
        );
        assert_eq!(a.to_string(), "spiffe://example.org/ns/prod/sa/Web_1.x-y");
        assert!(!a.is_trust_domain_id());

        let root = id("spiffe://example.org").unwrap();
        assert!(root.is_trust_domain_id());
        assert_eq!(root.segments().count(), 0);
        // Segments made of dots are fine as long as they are not exactly "." or "..".
        assert!(id("spiffe://example.org/.../.a/a.").is_ok());
    }

    #[test]
    fn rejects_scheme_problems() {
        assert_eq!(id(""), Err(IdError::Empty));
        for bad in [
            "example.org/a",
            "http://example.org/a",
            "spiffe:/example.org",
            "spiffe:example.org",
        ] {
            assert!(matches!(id(bad), Err(IdError::WrongScheme { .. })), "{bad}");
        }
        assert!(matches!(
            id("SPIFFE://example.org/a"),
            Err(IdError::SchemeNotLowercase { .. })
        ));
        assert!(matches!(
            id("Spiffe://example.org/a"),
            Err(IdError::SchemeNotLowercase { .. })
        ));
    }

    #[test]
    fn rejects_trust_domain_problems() {
        assert!(matches!(
            id("spiffe://"),
            Err(IdError::MissingTrustDomain { .. })
        ));
        assert!(matches!(
            id("spiffe:///a"),
            Err(IdError::MissingTrustDomain { .. })
        ));
        let e = id("spiffe://Ex.org/a").unwrap_err();
        assert!(matches!(e, IdError::BadTrustDomainChar { .. }));
        assert_eq!(
            e.to_string(),
            "\"spiffe://Ex.org/a\": trust domain characters are limited to lowercase letters, \
             digits, '.', '-' and '_'"
        );
        assert!(matches!(
            id("spiffe://ex ample.org/a"),
            Err(IdError::BadTrustDomainChar { .. })
        ));
        assert!(matches!(
            id("spiffe://exämple.org/a"),
            Err(IdError::BadTrustDomainChar { .. })
        ));
        let long = format!("spiffe://{}/a", "a".repeat(256));
        assert!(matches!(
            id(&long),
            Err(IdError::TrustDomainTooLong { len: 256, .. })
        ));
        assert!(id(&format!("spiffe://{}/a", "a".repeat(255))).is_ok());
    }

    #[test]
    fn rejects_uri_features_the_standard_forbids() {
        assert!(matches!(
            id("spiffe://user@example.org/a"),
            Err(IdError::UserInfo { .. })
        ));
        assert!(matches!(
            id("spiffe://example.org:8443/a"),
            Err(IdError::Port { .. })
        ));
        assert!(matches!(
            id("spiffe://example.org:/a"),
            Err(IdError::Port { .. })
        ));
        assert!(matches!(
            id("spiffe://example.org/a?x=1"),
            Err(IdError::Query { .. })
        ));
        assert!(matches!(
            id("spiffe://example.org?x=1"),
            Err(IdError::Query { .. })
        ));
        assert!(matches!(
            id("spiffe://example.org/a#frag"),
            Err(IdError::Fragment { .. })
        ));
        assert!(matches!(
            id("spiffe://example.org#frag"),
            Err(IdError::Fragment { .. })
        ));
        assert!(matches!(
            id("spiffe://example.org/a%20b"),
            Err(IdError::PercentEncoded { .. })
        ));
        assert!(matches!(
            id("spiffe://ex%41mple.org/a"),
            Err(IdError::PercentEncoded { .. })
        ));
    }

    #[test]
    fn rejects_path_problems() {
        assert!(matches!(
            id("spiffe://example.org/"),
            Err(IdError::TrailingSlash { .. })
        ));
        assert!(matches!(
            id("spiffe://example.org/a/"),
            Err(IdError::TrailingSlash { .. })
        ));
        assert!(matches!(
            id("spiffe://example.org//a"),
            Err(IdError::EmptySegment { .. })
        ));
        assert!(matches!(
            id("spiffe://example.org/a//b"),
            Err(IdError::EmptySegment { .. })
        ));
        assert!(matches!(
            id("spiffe://example.org/./a"),
            Err(IdError::DotSegment { .. })
        ));
        assert!(matches!(
            id("spiffe://example.org/a/.."),
            Err(IdError::DotSegment { .. })
        ));
        for bad in ["/a b", "/a*", "/ä", "/a\\b", "/a\n", "/a+b", "/a~b"] {
            let s = format!("spiffe://example.org{bad}");
            assert!(matches!(id(&s), Err(IdError::BadPathChar { .. })), "{s:?}");
        }
    }

    #[test]
    fn enforces_the_2048_byte_limit() {
        let prefix = "spiffe://example.org/";
        let at_limit = format!("{prefix}{}", "a".repeat(MAX_SPIFFE_ID_LEN - prefix.len()));
        assert_eq!(at_limit.len(), MAX_SPIFFE_ID_LEN);
        assert!(id(&at_limit).is_ok());
        let over = format!("{at_limit}a");
        assert!(matches!(
            id(&over),
            Err(IdError::TooLong {
                len: 2049,
                max: 2048,
                ..
            })
        ));
        // The message shows a bounded prefix, not the whole input.
        assert!(id(&over).unwrap_err().to_string().len() < 400);
    }

    #[test]
    fn from_path_assembles_and_checks() {
        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(
            SpiffeId::from_path(&td, "/a/b").unwrap().to_string(),
            "spiffe://example.org/a/b"
        );
        assert_eq!(SpiffeId::from_path(&td, "").unwrap(), td.id());
        assert!(matches!(
            SpiffeId::from_path(&td, "a/b"),
            Err(IdError::RelativePath { .. })
        ));
        assert!(matches!(
            SpiffeId::from_path(&td, "/a/"),
            Err(IdError::TrailingSlash { .. })
        ));
    }

    #[test]
    fn membership_and_ordering() {
        let td = TrustDomain::new("example.org").unwrap();
        let other = TrustDomain::new("other.org").unwrap();
        let a = id("spiffe://example.org/a").unwrap();
        assert!(a.is_member_of(&td));
        assert!(!a.is_member_of(&other));
        let mut v = [
            id("spiffe://b.org/a").unwrap(),
            id("spiffe://a.org/b").unwrap(),
            id("spiffe://a.org/a").unwrap(),
        ];
        v.sort();
        let shown: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["spiffe://a.org/a", "spiffe://a.org/b", "spiffe://b.org/a"]
        );
    }

    #[test]
    fn converts_to_and_from_the_spiffe_crate() {
        let ours = id("spiffe://example.org/a").unwrap();
        let theirs: spiffe::SpiffeId = ours.clone().into();
        assert_eq!(theirs.to_string(), "spiffe://example.org/a");
        assert_eq!(SpiffeId::try_from(theirs), Ok(ours));
        // The spiffe crate builds IDs longer than the standard asks us to accept.
        let long = spiffe::SpiffeId::new(format!("spiffe://a/{}", "b".repeat(3000))).unwrap();
        assert!(matches!(
            SpiffeId::try_from(long),
            Err(IdError::TooLong { .. })
        ));
    }

    #[test]
    fn serde_uses_the_string_form() {
        let a = id("spiffe://example.org/a").unwrap();
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"spiffe://example.org/a\"");
        assert_eq!(serde_json::from_str::<SpiffeId>(&json).unwrap(), a);
        let err = serde_json::from_str::<SpiffeId>("\"spiffe://example.org/a/\"").unwrap_err();
        assert!(err.to_string().contains("trailing slash"), "{err}");
    }

    #[test]
    fn debug_shows_the_id() {
        let a = id("spiffe://example.org/a").unwrap();
        assert_eq!(format!("{a:?}"), "SpiffeId(\"spiffe://example.org/a\")");
    }
}
