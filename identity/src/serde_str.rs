//! Deserializing the crate's string-shaped types without an intermediate `String`: the
//! visitor parses the borrowed (or transient) text in place, so decoding a snapshot of a
//! million entries does not allocate and free a buffer per field.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserializer, Error, Visitor};

/// Deserializes a string and parses it with `parse`, naming `what` in type errors.
pub(crate) fn deserialize_parsed<'de, D, T, E>(
    deserializer: D,
    what: &'static str,
    parse: fn(&str) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    E: fmt::Display,
{
    deserializer.deserialize_str(ParseVisitor {
        what,
        parse,
        _out: PhantomData,
    })
}

struct ParseVisitor<T, E> {
    what: &'static str,
    parse: fn(&str) -> Result<T, E>,
    _out: PhantomData<fn() -> T>,
}

impl<T, E: fmt::Display> Visitor<'_> for ParseVisitor<T, E> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string holding {}", self.what)
    }

    fn visit_str<Err: Error>(self, v: &str) -> Result<T, Err> {
        (self.parse)(v).map_err(Err::custom)
    }

    fn visit_bytes<Err: Error>(self, v: &[u8]) -> Result<T, Err> {
        let s = std::str::from_utf8(v)
            .map_err(|_| Err::custom(format_args!("{} is not UTF-8", self.what)))?;
        self.visit_str(s)
    }
}
