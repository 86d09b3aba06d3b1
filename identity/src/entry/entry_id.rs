//! [`EntryId`]: the identifier of a registration entry.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::id_error::shown;

/// The identifier of a registration entry: 1 to 255 bytes of `[A-Za-z0-9._-]`, as SPIRE
/// accepts for caller-chosen entry IDs. Generated IDs are UUIDs ([`EntryId::from_random_bytes`]).
///
/// Shared text: a clone is a reference count, so the registry's indexes can hold the ID many
/// times without copying it. Sixteen bytes: a registration entry holds one, and a million
/// entries are held in memory.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId {
    text: Arc<str>,
}

fn prefix_of(id: &str) -> u64 {
    let mut bytes = [0u8; 8];
    let n = id.len().min(8);
    bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
    u64::from_be_bytes(bytes)
}

impl EntryId {
    fn from_checked(id: Arc<str>) -> Self {
        Self { text: id }
    }
}

/// Why a string is not a valid entry ID.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EntryIdError {
    /// The ID was empty.
    #[error("entry ID is empty; omit it to have one generated")]
    Empty,
    /// The ID is longer than [`EntryId::MAX_LEN`].
    #[error("entry ID {input:?} is {len} bytes long, over the limit of {max} bytes")]
    TooLong {
        /// The offending input (truncated).
        input: String,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The ID holds a character outside `[A-Za-z0-9._-]`.
    #[error("entry ID {input:?}: characters are limited to letters, digits, '.', '-' and '_'")]
    BadChar {
        /// The offending input (truncated).
        input: String,
    },
}

impl EntryId {
    /// Longest entry ID, in bytes.
    pub const MAX_LEN: usize = 255;

    /// Checks and wraps a caller-chosen entry ID.
    ///
    /// # Errors
    /// An [`EntryIdError`] naming the rule broken.
    pub fn new(id: &str) -> Result<Self, EntryIdError> {
        if id.is_empty() {
            return Err(EntryIdError::Empty);
        }
        if id.len() > Self::MAX_LEN {
            return Err(EntryIdError::TooLong {
                input: shown(id),
                len: id.len(),
                max: Self::MAX_LEN,
            });
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(EntryIdError::BadChar { input: shown(id) });
        }
        Ok(Self::from_checked(Arc::from(id)))
    }

    /// A version-4 UUID (`xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`, SPIRE's format) made from 16
    /// random bytes the caller draws from its injected source of randomness.
    pub fn from_random_bytes(mut bytes: [u8; 16]) -> Self {
        bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
        let mut s = String::with_capacity(36);
        for (i, b) in bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                s.push('-');
            }
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        Self::from_checked(Arc::from(s))
    }

    /// The ID as a string.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first eight bytes, big-endian, zero-padded: where two prefixes differ, the IDs
    /// order as their prefixes do (valid IDs hold no NUL byte, so a shorter ID orders first
    /// either way). Lets a collection that holds IDs behind pointers keep the prefix beside
    /// the pointer and order them mostly without following it.
    pub fn order_prefix(&self) -> u64 {
        prefix_of(&self.text)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EntryId").field(&self.text).finish()
    }
}

impl FromStr for EntryId {
    type Err = EntryIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for EntryId {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl Serialize for EntryId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for EntryId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::serde_str::deserialize_parsed(deserializer, "an entry ID", Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Ids order as their text does, and where order prefixes differ they order the
        /// same way (what collections keeping the prefix inline rely on).
        #[test]
        fn orders_as_its_text(a in "[A-Za-z0-9._-]{1,20}", b in "[A-Za-z0-9._-]{1,20}") {
            let (x, y) = (EntryId::new(&a).unwrap(), EntryId::new(&b).unwrap());
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            prop_assert_eq!(x == y, a == b);
            // Shared prefixes, shorter ids, equal first eight bytes.
            let longer = format!("{a}{b}");
            let z = EntryId::new(&longer).unwrap();
            for (p, q) in [(&x, &y), (&x, &z), (&z, &y)] {
                let by_prefix = p.order_prefix().cmp(&q.order_prefix());
                if by_prefix.is_ne() {
                    prop_assert_eq!(by_prefix, p.as_str().cmp(q.as_str()));
                }
            }
        }
    }

    #[test]
    fn accepts_spire_style_ids() {
        for ok in ["a", "0f9e2c1a-7c1e-4a3b-9d2f-1b2c3d4e5f60", "my.entry_ID-1"] {
            assert_eq!(EntryId::new(ok).unwrap().as_str(), ok);
        }
        assert!(EntryId::new(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn rejects_bad_ids() {
        assert_eq!(EntryId::new(""), Err(EntryIdError::Empty));
        assert!(matches!(
            EntryId::new(&"a".repeat(256)),
            Err(EntryIdError::TooLong { .. })
        ));
        for bad in ["a b", "a/b", "a:b", "é", "a\n"] {
            assert!(
                matches!(EntryId::new(bad), Err(EntryIdError::BadChar { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn random_ids_are_v4_uuids_and_valid() {
        let id = EntryId::from_random_bytes([0xff; 16]);
        assert_eq!(id.as_str(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = EntryId::from_random_bytes([0; 16]);
        assert_eq!(id.as_str(), "00000000-0000-4000-8000-000000000000");
        assert_eq!(EntryId::new(id.as_str()), Ok(id));
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<EntryId>("\"ok-id\"").is_ok());
        assert!(serde_json::from_str::<EntryId>("\"not ok\"").is_err());
    }
}
