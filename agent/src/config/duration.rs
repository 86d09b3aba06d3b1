//! Durations as SPIRE's config files write them (Go's `time.ParseDuration`: "5s", "1m30s",
//! "250ms"); a bare integer is seconds.

use std::time::Duration;

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing but spaces.
    #[error("empty duration; write e.g. \"5s\", \"1m30s\" or a number of seconds")]
    Empty,
    /// Not `<number><unit>...`, or a unit outside ns, us, ms, s, m, h.
    #[error("not a duration; write e.g. \"5s\", \"1m30s\", \"250ms\" (units ns, us, ms, s, m, h) or a number of seconds")]
    Malformed,
    /// Beyond what fits in a `Duration` (or a pathological input length).
    #[error("duration is too large")]
    TooLarge,
}

/// Parses `input`: Go syntax (`1h30m`, `1.5s`, `250ms`) or a bare number of seconds.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.len() > 64 {
        return Err(DurationError::TooLarge);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| DurationError::TooLarge);
    }
    let mut total_nanos: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_end);
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        if number.is_empty() || number == "." {
            return Err(DurationError::Malformed);
        }
        let value: f64 = number.parse().map_err(|_| DurationError::Malformed)?;
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(DurationError::Malformed),
        };
        total_nanos += value * scale;
        rest = next;
    }
    // u64 nanoseconds span ~584 years; anything larger is a typo.
    if !total_nanos.is_finite() || total_nanos >= u64::MAX as f64 {
        return Err(DurationError::TooLarge);
    }
    // Truncation to whole nanoseconds is intended.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(Duration::from_nanos(total_nanos as u64))
}

/// Serde adapter: a duration string or a bare integer of seconds.
pub(crate) mod serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => super::parse_duration(&t)
                .map_err(|e| serde::de::Error::custom(format!("{t:?}: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn go_syntax_and_bare_seconds() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 42 "), Ok(Duration::from_secs(42)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        for bad in ["s", "5x", "-5s", "5 s", "1..2s", ".s", "h1"] {
            assert_eq!(parse_duration(bad), Err(DurationError::Malformed), "{bad}");
        }
        assert_eq!(
            parse_duration("99999999999999999999h"),
            Err(DurationError::TooLarge)
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn seconds_round_trip(n in 0u64..10_000_000) {
            prop_assert_eq!(parse_duration(&format!("{n}s")), Ok(Duration::from_secs(n)));
            prop_assert_eq!(parse_duration(&n.to_string()), Ok(Duration::from_secs(n)));
        }
    }
}
