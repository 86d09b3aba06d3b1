//! SPIRE-style durations: Go's `time.ParseDuration` syntax ("24h", "5m", "1h30m", "90s",
//! "500ms"), as SPIRE's config files and flags take them. A bare integer is seconds, as SPIRE's
//! CLI TTL flags take them.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing to parse.
    #[error("empty duration; write e.g. \"1h\", \"5m\", \"90s\" or a number of seconds")]
    Empty,
    /// A number without a unit, or with an unknown one.
    #[error("{input:?}: unknown or missing unit {unit:?}; units are ns, us, ms, s, m, h (e.g. \"1h30m\")")]
    Unit {
        /// The input.
        input: String,
        /// The unit found.
        unit: String,
    },
    /// Something that is not a number where one is expected.
    #[error("{input:?}: expected a number before each unit (e.g. \"1h30m\")")]
    Number {
        /// The input.
        input: String,
    },
    /// Negative durations make no sense for TTLs.
    #[error("{input:?}: durations must not be negative")]
    Negative {
        /// The input.
        input: String,
    },
    /// Larger than any TTL Tessera accepts.
    #[error("{input:?}: duration is too large")]
    Overflow {
        /// The input.
        input: String,
    },
}

/// Longest input accepted, in bytes: a duration is a handful of characters.
const MAX_LEN: usize = 64;

/// Parses a Go-style duration or a bare number of seconds.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let shown = || s.chars().take(MAX_LEN).collect::<String>();
    if s.len() > MAX_LEN {
        return Err(DurationError::Overflow { input: shown() });
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative { input: shown() });
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s
            .parse()
            .map_err(|_| DurationError::Overflow { input: shown() })?;
        return Ok(Duration::from_secs(secs));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(DurationError::Number { input: shown() });
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(DurationError::Unit {
                    input: shown(),
                    unit: unit.to_owned(),
                })
            }
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse()
                .map_err(|_| DurationError::Overflow { input: shown() })?
        };
        let mut part = int
            .checked_mul(nanos_per)
            .ok_or_else(|| DurationError::Overflow { input: shown() })?;
        let mut scale = nanos_per;
        for d in frac.bytes().take(18) {
            scale /= 10;
            part += u128::from(d - b'0') * scale;
        }
        total = total
            .checked_add(part)
            .ok_or_else(|| DurationError::Overflow { input: shown() })?;
        rest = next;
    }
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| DurationError::Overflow { input: shown() })?;
    // `total % 1e9` is below 1e9, so it fits in u32.
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration the way it is written in config files ("1h30m", "5m", "90s").
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// serde helper: a duration written as a string ("24h") or an integer (seconds).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn spire_defaults_parse() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("600"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_name_the_rule() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("5x"),
            Err(DurationError::Unit { .. })
        ));
        assert!(matches!(
            parse_duration("h"),
            Err(DurationError::Number { .. })
        ));
        assert!(matches!(
            parse_duration("-5m"),
            Err(DurationError::Negative { .. })
        ));
        assert!(matches!(
            parse_duration("1..5h"),
            Err(DurationError::Number { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999999h"),
            Err(DurationError::Overflow { .. })
        ));
        let msg = parse_duration("5 minutes").unwrap_err().to_string();
        assert!(msg.contains("units are ns, us, ms, s, m, h"), "{msg}");
    }

    #[test]
    fn format_round_trips_whole_seconds() {
        for secs in [1, 59, 60, 61, 3_600, 5_400, 86_400, 90_061] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{secs}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn components_add_up(h in 0u64..1000, m in 0u64..1000, s in 0u64..1000) {
            let text = format!("{h}h{m}m{s}s");
            prop_assert_eq!(parse_duration(&text), Ok(Duration::from_secs(h * 3600 + m * 60 + s)));
        }
    }
}
