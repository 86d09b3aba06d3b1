//! [`Selector`] (`type:value`, e.g. `unix:uid:1000`) and [`SelectorSet`].
//!
//! Selectors describe what an attestor observed about a node or a workload; an entry matches
//! when its selectors are a subset of the observed ones.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::id_error::shown;

/// A `type:value` pair, e.g. `unix:uid:1000` (type `unix`, value `uid:1000`).
///
/// The type is 1 to [`Selector::MAX_TYPE_LEN`] bytes of `[a-z0-9_-]`; the value is 1 to
/// [`Selector::MAX_VALUE_LEN`] bytes of anything but control characters and may itself
/// contain `:`. Parsing splits at the first `:`. Ordered by type, then value.
///
/// Held as one shared `type:value` text: a clone is a reference count.
#[derive(Clone)]
pub struct Selector {
    text: Arc<str>,
    /// Byte offset of the first `:`.
    split: usize,
}

/// Why a string is not a valid selector.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// There is no `:` between type and value.
    #[error(
        "{input:?}: a selector is \"type:value\" (e.g. \"unix:uid:1000\"); add ':' and a value"
    )]
    MissingSeparator {
        /// The offending input (truncated).
        input: String,
    },
    /// Nothing before the first `:`.
    #[error("{input:?}: the selector type is empty; write it before the first ':' (e.g. \"unix:uid:1000\")")]
    EmptyType {
        /// The offending input (truncated).
        input: String,
    },
    /// The type holds a character outside `[a-z0-9_-]`.
    #[error(
        "{input:?}: selector type characters are limited to lowercase letters, digits, '_' and '-'"
    )]
    BadTypeChar {
        /// The offending input (truncated).
        input: String,
    },
    /// The type is longer than [`Selector::MAX_TYPE_LEN`].
    #[error("{input:?}: the selector type is {len} bytes long, over the limit of {max} bytes")]
    TypeTooLong {
        /// The offending input (truncated).
        input: String,
        /// Length of the type in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// Nothing after the first `:`.
    #[error("{input:?}: the selector value is empty; write it after the first ':'")]
    EmptyValue {
        /// The offending input (truncated).
        input: String,
    },
    /// The value holds a control character (newline, NUL, ...).
    #[error("{input:?}: selector values cannot contain control characters")]
    ControlCharInValue {
        /// The offending input (truncated).
        input: String,
    },
    /// The value is longer than [`Selector::MAX_VALUE_LEN`].
    #[error("{input:?}: the selector value is {len} bytes long, over the limit of {max} bytes")]
    ValueTooLong {
        /// The offending input (truncated).
        input: String,
        /// Length of the value in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
}

impl Selector {
    /// Longest selector type, in bytes.
    pub const MAX_TYPE_LEN: usize = 64;
    /// Longest selector value, in bytes (room for a `PATH_MAX` executable path).
    pub const MAX_VALUE_LEN: usize = 4096;

    /// Builds a selector from its two halves.
    ///
    /// # Errors
    /// A [`SelectorError`] naming the rule broken.
    pub fn new(selector_type: &str, value: &str) -> Result<Self, SelectorError> {
        let input = || shown(&format!("{selector_type}:{value}"));
        check_type(selector_type, input)?;
        check_value(value, input)?;
        let mut text = String::with_capacity(selector_type.len() + 1 + value.len());
        text.push_str(selector_type);
        text.push(':');
        text.push_str(value);
        Ok(Self {
            text: Arc::from(text),
            split: selector_type.len(),
        })
    }

    /// Parses `type:value`, splitting at the first `:`.
    ///
    /// # Errors
    /// A [`SelectorError`] naming the rule broken.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let Some((selector_type, value)) = s.split_once(':') else {
            return Err(SelectorError::MissingSeparator { input: shown(s) });
        };
        let input = || shown(s);
        check_type(selector_type, input)?;
        check_value(value, input)?;
        Ok(Self {
            text: Arc::from(s),
            split: selector_type.len(),
        })
    }

    /// As [`Selector::parse`], sharing one copy of selectors this thread parsed recently:
    /// the same few selectors (`unix:uid:1000`, `k8s:ns:prod`) recur across thousands of
    /// entries, and a replayed log then holds each once.
    fn parse_shared(s: &str) -> Result<Self, SelectorError> {
        RECENT.with(|recent| {
            let mut recent = recent.borrow_mut();
            if let Some(found) = recent.get(s) {
                return Ok(found.clone());
            }
            let selector = Self::parse(s)?;
            if recent.len() >= MAX_RECENT {
                recent.clear();
            }
            recent.insert(selector.clone());
            Ok(selector)
        })
    }

    /// The type, e.g. `unix`.
    pub fn selector_type(&self) -> &str {
        self.text.get(..self.split).unwrap_or_default()
    }

    /// The value, e.g. `uid:1000`.
    pub fn value(&self) -> &str {
        self.text.get(self.split + 1..).unwrap_or_default()
    }

    /// The selector as `type:value`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn check_type(t: &str, input: impl Fn() -> String) -> Result<(), SelectorError> {
    if t.is_empty() {
        return Err(SelectorError::EmptyType { input: input() });
    }
    if t.len() > Selector::MAX_TYPE_LEN {
        return Err(SelectorError::TypeTooLong {
            input: input(),
            len: t.len(),
            max: Selector::MAX_TYPE_LEN,
        });
    }
    if !t
        .bytes()
        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
    {
        return Err(SelectorError::BadTypeChar { input: input() });
    }
    Ok(())
}

fn check_value(v: &str, input: impl Fn() -> String) -> Result<(), SelectorError> {
    if v.is_empty() {
        return Err(SelectorError::EmptyValue { input: input() });
    }
    if v.len() > Selector::MAX_VALUE_LEN {
        return Err(SelectorError::ValueTooLong {
            input: input(),
            len: v.len(),
            max: Selector::MAX_VALUE_LEN,
        });
    }
    if v.chars().any(char::is_control) {
        return Err(SelectorError::ControlCharInValue { input: input() });
    }
    Ok(())
}

thread_local! {
    /// Selectors recently decoded on this thread; bounded, emptied when full.
    static RECENT: std::cell::RefCell<crate::RecentSet<Selector>> =
        std::cell::RefCell::new(crate::RecentSet::default());
}

/// Most selectors [`RECENT`] holds.
const MAX_RECENT: usize = 4096;

impl std::borrow::Borrow<str> for Selector {
    fn borrow(&self) -> &str {
        &self.text
    }
}

// The text is `type:value` with the first `:` at `split`, so equal texts are equal halves.
impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Selector {}

impl Hash for Selector {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl Ord for Selector {
    // By type, then value: comparing the joined text would not do, since `-` and digits sort
    // before `:` (`a-b:x` < `a:x` as text, while type `a` < `a-b`).
    fn cmp(&self, other: &Self) -> Ordering {
        self.selector_type()
            .cmp(other.selector_type())
            .then_with(|| self.value().cmp(other.value()))
    }
}

impl PartialOrd for Selector {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Selector").field(&self.to_string()).finish()
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::serde_str::deserialize_parsed(deserializer, "a selector", Self::parse_shared)
    }
}

// === impl SelectorSet ===

/// A sorted set of selectors without duplicates.
///
/// Serializes as a sorted list of `type:value` strings; deserializing sorts and dedups, so any
/// list decodes to the same set whatever its order.
///
/// Shared and immutable: a clone is a reference count, and sets decoded on one thread that
/// repeat (many entries select `k8s:ns:prod` + `k8s:sa:web`) are held once.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SelectorSet(Arc<[Selector]>);

thread_local! {
    /// Sets this thread decoded recently, so that a replayed log holds each repeated set once.
    static RECENT_SETS: std::cell::RefCell<crate::RecentSet<Arc<[Selector]>>> =
        std::cell::RefCell::new(crate::RecentSet::default());
}

impl SelectorSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set of sorted, deduplicated `selectors`, sharing a copy this thread made recently.
    fn shared(selectors: Vec<Selector>) -> Self {
        RECENT_SETS.with(|recent| {
            let mut recent = recent.borrow_mut();
            if let Some(found) = recent.get(selectors.as_slice()) {
                return Self(found.clone());
            }
            let set: Arc<[Selector]> = selectors.into();
            if recent.len() >= MAX_RECENT {
                recent.clear();
            }
            recent.insert(set.clone());
            Self(set)
        })
    }

    /// Parses each string as a selector.
    ///
    /// # Errors
    /// The first [`SelectorError`] met.
    pub fn parse_all<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, SelectorError> {
        items.into_iter().map(Selector::parse).collect()
    }

    /// Adds `selector`; returns whether it was new.
    pub fn insert(&mut self, selector: Selector) -> bool {
        match self.0.binary_search(&selector) {
            Ok(_) => false,
            Err(at) => {
                let mut grown = Vec::with_capacity(self.0.len() + 1);
                grown.extend_from_slice(&self.0[..at]);
                grown.push(selector);
                grown.extend_from_slice(&self.0[at..]);
                self.0 = grown.into();
                true
            }
        }
    }

    /// Whether `selector` is in the set.
    pub fn contains(&self, selector: &Selector) -> bool {
        self.0.binary_search(selector).is_ok()
    }

    /// Whether every selector of `self` is in `other` (true for the empty set).
    ///
    /// This is the matching rule: an entry applies to a workload (or node) when the entry's
    /// selectors are a subset of the ones the attestors observed.
    pub fn is_subset_of(&self, other: &SelectorSet) -> bool {
        if self.0.len() > other.0.len() {
            return false;
        }
        // Both sides are sorted: one merge pass.
        let mut theirs = other.0.iter();
        'ours: for mine in self.0.iter() {
            for candidate in theirs.by_ref() {
                match candidate.cmp(mine) {
                    std::cmp::Ordering::Less => continue,
                    std::cmp::Ordering::Equal => continue 'ours,
                    std::cmp::Ordering::Greater => return false,
                }
            }
            return false;
        }
        true
    }

    /// Number of selectors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The selectors, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Selector> {
        self.0.iter()
    }

    /// The selectors as a sorted slice.
    pub fn as_slice(&self) -> &[Selector] {
        &self.0
    }
}

impl FromIterator<Selector> for SelectorSet {
    fn from_iter<I: IntoIterator<Item = Selector>>(iter: I) -> Self {
        let mut v: Vec<Selector> = iter.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        Self(v.into())
    }
}

impl From<Vec<Selector>> for SelectorSet {
    fn from(v: Vec<Selector>) -> Self {
        v.into_iter().collect()
    }
}

impl IntoIterator for SelectorSet {
    type Item = Selector;
    type IntoIter = std::vec::IntoIter<Selector>;

    fn into_iter(self) -> Self::IntoIter {
        // The selectors may be shared with other sets: the caller gets its own copies.
        Vec::from(&self.0[..]).into_iter()
    }
}

impl<'a> IntoIterator for &'a SelectorSet {
    type Item = &'a Selector;
    type IntoIter = std::slice::Iter<'a, Selector>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Debug for SelectorSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.0.iter().map(ToString::to_string))
            .finish()
    }
}

impl Serialize for SelectorSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SelectorSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut v = Vec::<Selector>::deserialize(deserializer)?;
        v.sort_unstable();
        v.dedup();
        Ok(Self::shared(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    fn set(items: &[&str]) -> SelectorSet {
        SelectorSet::parse_all(items.iter().copied()).unwrap()
    }

    #[test]
    fn decoded_sets_are_sorted_and_repeats_shared() {
        let one: SelectorSet =
            serde_json::from_str(r#"["unix:uid:1","k8s:ns:a","unix:uid:1"]"#).unwrap();
        let two: SelectorSet = serde_json::from_str(r#"["k8s:ns:a","unix:uid:1"]"#).unwrap();
        assert_eq!(one, set(&["k8s:ns:a", "unix:uid:1"]));
        assert!(Arc::ptr_eq(&one.0, &two.0));
        let mut grown = one.clone();
        assert!(grown.insert(sel("docker:label:x")));
        assert!(!grown.insert(sel("k8s:ns:a")));
        assert_eq!(grown.len(), 3);
        assert_eq!(one.len(), 2, "a shared set is not changed through a clone");
        assert_eq!(grown.into_iter().next(), Some(sel("docker:label:x")));
    }

    #[test]
    fn orders_by_type_then_value_not_by_joined_text() {
        // As text `a-b:x` sorts before `a:x` ('-' < ':'); by type, `a` comes first.
        assert!(sel("a:x") < sel("a-b:x"));
        assert!(sel("a:y") > sel("a:x"));
        assert!(sel("unix:uid:1000") < sel("unix_2:gid:1"));
        let decoded: Selector = serde_json::from_str("\"k8s:ns:prod\"").unwrap();
        let again: Selector = serde_json::from_str("\"k8s:ns:prod\"").unwrap();
        assert_eq!(decoded, sel("k8s:ns:prod"));
        assert_eq!(
            (decoded.selector_type(), decoded.value()),
            ("k8s", "ns:prod")
        );
        assert_eq!(decoded, again);
    }

    #[test]
    fn parse_splits_at_the_first_colon() {
        let s = sel("unix:uid:1000");
        assert_eq!(s.selector_type(), "unix");
        assert_eq!(s.value(), "uid:1000");
        assert_eq!(s.to_string(), "unix:uid:1000");
        assert_eq!(sel("k8s:pod-label:app:web").value(), "pod-label:app:web");
        assert_eq!(sel("docker:image_id:sha256:abc").selector_type(), "docker");
        assert_eq!(Selector::new("unix", "uid:0").unwrap(), sel("unix:uid:0"));
    }

    #[test]
    fn rejects_each_broken_rule() {
        let err = |s: &str| Selector::parse(s).unwrap_err();
        assert!(matches!(
            err("unix"),
            SelectorError::MissingSeparator { .. }
        ));
        assert!(matches!(err(":uid:1"), SelectorError::EmptyType { .. }));
        assert!(matches!(err("unix:"), SelectorError::EmptyValue { .. }));
        assert!(matches!(
            err("Unix:uid:1"),
            SelectorError::BadTypeChar { .. }
        ));
        assert!(matches!(
            err("un ix:uid:1"),
            SelectorError::BadTypeChar { .. }
        ));
        assert!(matches!(
            err("unix:uid\n1"),
            SelectorError::ControlCharInValue { .. }
        ));
        let long_type = format!("{}:v", "a".repeat(Selector::MAX_TYPE_LEN + 1));
        assert!(matches!(err(&long_type), SelectorError::TypeTooLong { .. }));
        let long_value = format!("t:{}", "v".repeat(Selector::MAX_VALUE_LEN + 1));
        assert!(matches!(
            err(&long_value),
            SelectorError::ValueTooLong { .. }
        ));
        assert!(Selector::parse(&format!("t:{}", "v".repeat(Selector::MAX_VALUE_LEN))).is_ok());
    }

    #[test]
    fn error_messages_name_the_fix() {
        let e = Selector::parse("unix").unwrap_err().to_string();
        assert!(e.contains("\"unix\"") && e.contains("add ':'"), "{e}");
    }

    #[test]
    fn set_is_sorted_and_deduplicated() {
        let s = set(&["unix:uid:1", "docker:a", "unix:uid:1", "k8s:ns:x"]);
        let shown: Vec<String> = s.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["docker:a", "k8s:ns:x", "unix:uid:1"]);
        let mut s2 = SelectorSet::new();
        assert!(s2.insert(sel("unix:uid:1")));
        assert!(!s2.insert(sel("unix:uid:1")));
        assert!(s2.contains(&sel("unix:uid:1")));
        assert_eq!(s2.len(), 1);
    }

    #[test]
    fn subset_checks() {
        let observed = set(&["unix:uid:1000", "unix:gid:1000", "unix:user:alice"]);
        assert!(set(&[]).is_subset_of(&observed));
        assert!(set(&["unix:uid:1000"]).is_subset_of(&observed));
        assert!(set(&["unix:gid:1000", "unix:user:alice"]).is_subset_of(&observed));
        assert!(observed.is_subset_of(&observed));
        assert!(!set(&["unix:uid:0"]).is_subset_of(&observed));
        assert!(!set(&["unix:uid:1000", "unix:uid:0"]).is_subset_of(&observed));
        assert!(!set(&["zzz:last"]).is_subset_of(&observed));
        assert!(!observed.is_subset_of(&set(&["unix:uid:1000"])));
        assert!(!set(&["unix:uid:1000"]).is_subset_of(&set(&[])));
    }

    #[test]
    fn serde_round_trips_and_normalizes() {
        let s = set(&["unix:uid:1", "docker:a"]);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"["docker:a","unix:uid:1"]"#);
        let back: SelectorSet =
            serde_json::from_str(r#"["unix:uid:1","docker:a","docker:a"]"#).unwrap();
        assert_eq!(back, s);
        assert!(serde_json::from_str::<SelectorSet>(r#"["nocolon"]"#).is_err());
    }
}
