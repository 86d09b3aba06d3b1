//! Durations as SPIRE's config files and flags write them: Go's `time.ParseDuration` grammar,
//! parsed exactly, once, for both binaries.
//!
//! Grammar: an optional `+`, then one or more `<number><unit>` terms (`1h30m`, `1.5h`, `300ms`,
//! `.5s`, `1.s`); units `ns`, `us` (also `µs` U+00B5 and `μs` U+03BC), `ms`, `s`, `m`, `h`;
//! terms add up and may repeat (`1s1s` is 2 s). Where Tessera departs from Go, on purpose:
//!
//! - **Negative durations are refused** (`-5m`, even `-0`): every duration Tessera reads is a
//!   TTL, timeout or interval, and a negative one is always a mistake. `+5m` is accepted, as Go
//!   accepts it, and means `5m`.
//! - **A bare integer is seconds** (`600`), as SPIRE's CLI TTL flags and TOML integers take
//!   them; Go accepts only `0` without a unit. A bare fraction (`1.5`) still needs a unit.
//! - **Fractions are exact**: `0.1h` is 360 s to the nanosecond (Go multiplies the fraction as a
//!   float); the result is truncated to whole nanoseconds, and digits past the 24th of a
//!   fraction are ignored (they cannot move the result by a nanosecond but in contrived cases).
//! - Surrounding white space is ignored; white space inside is an error.
//!
//! The largest duration is Go's, [`MAX`] (2^63 − 1 ns, about 292 years); anything larger is
//! [`DurationError::Overflow`], never a wrap-around. Inputs longer than [`MAX_LEN`] bytes are
//! refused before parsing.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// Longest input accepted, in bytes: a duration is a handful of characters.
pub const MAX_LEN: usize = 64;

/// The largest duration: Go's `time.Duration` maximum, 2^63 − 1 nanoseconds (~292 years).
pub const MAX: Duration = Duration::new(9_223_372_036, 854_775_807);

const MAX_NANOS: u128 = i64::MAX as u128;

/// Fraction digits taken into account; later ones are ignored (see the module doc).
const MAX_FRACTION_DIGITS: u32 = 24;

const UNITS: &str = "units are ns, us (or µs), ms, s, m, h";

/// Why a string is not a duration. Every message names the input and how to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing but white space.
    #[error("empty duration; write e.g. \"1h30m\", \"90s\", \"300ms\" or a number of seconds")]
    Empty,
    /// Longer than [`MAX_LEN`] bytes.
    #[error("duration is {len} bytes long, over the limit of {MAX_LEN}; write e.g. \"1h30m\"")]
    TooLong {
        /// The input's length, bytes.
        len: usize,
    },
    /// Starts with `-`.
    #[error("{input:?}: durations must not be negative; write e.g. \"5m\"")]
    Negative {
        /// The input.
        input: String,
    },
    /// A unit without a number before it, or a term that is not a number (`h`, `.s`, `1..5h`).
    #[error("{input:?}: expected a number before each unit (e.g. \"1h30m\", \"1.5h\")")]
    Number {
        /// The input.
        input: String,
    },
    /// A number with no unit after it (`1.5`, `1h30`).
    #[error("{input:?}: missing unit after a number; {UNITS} (e.g. \"1h30m\")")]
    MissingUnit {
        /// The input.
        input: String,
    },
    /// An unknown unit (`5x`, `5 minutes`).
    #[error("{input:?}: unknown unit {unit:?}; {UNITS} (e.g. \"1h30m\")")]
    Unit {
        /// The input.
        input: String,
        /// The unit found.
        unit: String,
    },
    /// Larger than [`MAX`].
    #[error("{input:?}: duration is too large; at most 2562047h47m16s (about 292 years)")]
    Overflow {
        /// The input.
        input: String,
    },
}

/// Parses a Go-style duration or a bare number of seconds (grammar in the module doc).
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.len() > MAX_LEN {
        return Err(DurationError::TooLong { len: s.len() });
    }
    let owned = || s.to_owned();
    if s.starts_with('-') {
        return Err(DurationError::Negative { input: owned() });
    }
    let body = s.strip_prefix('+').unwrap_or(s);
    if body.is_empty() {
        return Err(DurationError::Number { input: owned() });
    }
    if body.bytes().all(|b| b.is_ascii_digit()) {
        let secs = digits_value(body).ok_or_else(|| DurationError::Overflow { input: owned() })?;
        return to_duration(secs.saturating_mul(1_000_000_000))
            .ok_or_else(|| DurationError::Overflow { input: owned() });
    }
    let mut total: u128 = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after_int) = rest.split_at(int_len);
        let (frac, after_num) = match after_int.strip_prefix('.') {
            Some(tail) => {
                let n = tail.bytes().take_while(u8::is_ascii_digit).count();
                tail.split_at(n)
            }
            None => ("", after_int),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(DurationError::Number { input: owned() });
        }
        let unit_len = after_num
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after_num.len());
        let (unit, next) = after_num.split_at(unit_len);
        let per = unit_nanos(unit).ok_or_else(|| {
            if next.starts_with('.') && unit.is_empty() {
                // A second point: `1..5h`, `1.2.3s`.
                DurationError::Number { input: owned() }
            } else if unit.is_empty() {
                DurationError::MissingUnit { input: owned() }
            } else {
                DurationError::Unit {
                    input: owned(),
                    unit: unit.to_owned(),
                }
            }
        })?;
        let overflow = || DurationError::Overflow { input: owned() };
        let whole = digits_value(int)
            .and_then(|v| v.checked_mul(per))
            .ok_or_else(overflow)?;
        total = total
            .checked_add(whole)
            .and_then(|t| t.checked_add(fraction_nanos(frac, per)))
            .filter(|t| *t <= MAX_NANOS)
            .ok_or_else(overflow)?;
        rest = next;
    }
    to_duration(total).ok_or_else(|| DurationError::Overflow { input: owned() })
}

/// Formats `d` so that [`parse_duration`] reads it back exactly: its non-zero components from
/// hours down to nanoseconds, ASCII units (`"1h30m"`, `"1s500ms"`, `"2us"`); `"0s"` for zero.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let secs = d.as_secs();
    let nanos = u64::from(d.subsec_nanos());
    let parts = [
        (secs / 3600, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (nanos / 1_000_000, "ms"),
        (nanos / 1_000 % 1_000, "us"),
        (nanos % 1_000, "ns"),
    ];
    let mut out = String::new();
    for (n, unit) in parts {
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
        }
    }
    out
}

/// serde: a duration written as a string (`"24h"`, parsed by [`parse_duration`]) or a
/// non-negative integer of seconds; for `#[serde(deserialize_with = "...")]` or, with
/// [`serialize`], `#[serde(with = "tessera_edge::duration")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

/// serde: writes a duration as [`format_duration`] does.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"1h30m\" or \"90s\", or a number of seconds")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        to_duration(u128::from(v) * 1_000_000_000).ok_or_else(|| {
            E::custom(DurationError::Overflow {
                input: v.to_string(),
            })
        })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(DurationError::Negative {
                input: v.to_string(),
            })),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "{v}: a fraction needs a unit; write it as a string, e.g. \"{v}s\""
        )))
    }
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// The value of a run of ASCII digits; `None` past `u128` (the caller reports overflow).
fn digits_value(digits: &str) -> Option<u128> {
    digits.bytes().try_fold(0u128, |acc, b| {
        acc.checked_mul(10)?.checked_add(u128::from(b - b'0'))
    })
}

/// `0.<frac>` of a unit of `per` nanoseconds, truncated to whole nanoseconds. At most 24
/// digits times 3.6e12 stays far below `u128::MAX`.
fn fraction_nanos(frac: &str, per: u128) -> u128 {
    let mut num: u128 = 0;
    let mut den: u128 = 1;
    for b in frac.bytes().take(MAX_FRACTION_DIGITS as usize) {
        num = num * 10 + u128::from(b - b'0');
        den *= 10;
    }
    num * per / den
}

fn to_duration(nanos: u128) -> Option<Duration> {
    if nanos > MAX_NANOS {
        return None;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    let sub = u32::try_from(nanos % 1_000_000_000).ok()?;
    Some(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests;
