use proptest::prelude::*;

use super::*;

fn secs(n: u64) -> Result<Duration, DurationError> {
    Ok(Duration::from_secs(n))
}

#[test]
fn go_durations_and_spire_defaults_parse() {
    assert_eq!(parse_duration("24h"), secs(86_400));
    assert_eq!(parse_duration("1h30m"), secs(5_400));
    assert_eq!(parse_duration("90s"), secs(90));
    assert_eq!(parse_duration("1.5h"), secs(5_400));
    assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
    assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("1.s"), secs(1));
    assert_eq!(parse_duration("1s1s"), secs(2));
    assert_eq!(parse_duration("1m1h"), secs(3_660));
    assert_eq!(
        parse_duration("1h2m3s4ms5us6ns"),
        Ok(Duration::new(3_723, 4_005_006))
    );
    assert_eq!(parse_duration(" 42 "), secs(42));
    assert_eq!(parse_duration("600"), secs(600));
}

#[test]
fn both_micro_signs_and_ascii_us_are_microseconds() {
    let want = Ok(Duration::from_micros(2));
    assert_eq!(parse_duration("2us"), want);
    assert_eq!(parse_duration("2\u{b5}s"), want, "U+00B5 MICRO SIGN");
    assert_eq!(
        parse_duration("2\u{3bc}s"),
        want,
        "U+03BC GREEK SMALL LETTER MU"
    );
}

/// The twins disagreed here: the server took `+5m` and refused `-5m` as negative; the agent
/// refused both as malformed and did not know `μs`.
#[test]
fn signs_are_handled_one_way() {
    assert_eq!(parse_duration("+5m"), secs(300));
    assert_eq!(parse_duration("+300"), secs(300));
    for bad in ["-5m", "-0", "-300", " -1h"] {
        let err = parse_duration(bad).unwrap_err();
        assert!(
            matches!(err, DurationError::Negative { .. }),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains("must not be negative"), "{err}");
    }
    for bad in ["+", "++5m", "+-5m", "5m+1s"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn bad_durations_name_the_problem_and_the_fix() {
    assert_eq!(parse_duration(""), Err(DurationError::Empty));
    assert_eq!(parse_duration("   "), Err(DurationError::Empty));
    let cases = [
        ("5x", "Unit", "unknown unit \"x\""),
        ("24 hours", "Unit", "units are ns, us"),
        ("5 s", "Unit", "unknown unit \" s\""),
        ("1H", "Unit", "unknown unit \"H\""),
        ("h", "Number", "expected a number"),
        (".s", "Number", "expected a number"),
        ("1..5h", "Number", "expected a number"),
        ("1.5", "MissingUnit", "missing unit"),
        ("1h30", "MissingUnit", "missing unit"),
    ];
    for (input, kind, text) in cases {
        let err = parse_duration(input).unwrap_err();
        assert!(format!("{err:?}").starts_with(kind), "{input}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains(text), "{input}: {msg}");
        assert!(msg.contains(&format!("{input:?}")), "{input}: {msg}");
    }
    let long = "1s".repeat(40);
    assert_eq!(
        parse_duration(&long),
        Err(DurationError::TooLong { len: 80 })
    );
}

#[test]
fn overflow_is_an_error_at_gos_maximum() {
    assert_eq!(parse_duration("9223372036854775807ns"), Ok(MAX));
    assert_eq!(parse_duration("2562047h47m16.854775807s"), Ok(MAX));
    assert_eq!(parse_duration("9223372036"), secs(9_223_372_036));
    for big in [
        "9223372036854775808ns",
        "2562048h",
        "2562047h47m17s",
        "9223372037",
        "99999999999999999999999999999999999999999h",
        "18446744073709551616",
        "9223372036854775807ns1ns",
    ] {
        let err = parse_duration(big).unwrap_err();
        assert!(
            matches!(err, DurationError::Overflow { .. }),
            "{big}: {err:?}"
        );
        assert!(err.to_string().contains("too large"), "{err}");
    }
}

#[test]
fn fractions_are_exact_and_truncated_to_nanoseconds() {
    assert_eq!(parse_duration("0.1h"), secs(360));
    assert_eq!(parse_duration("1.000000001s"), Ok(Duration::new(1, 1)));
    assert_eq!(parse_duration("1.0000000019s"), Ok(Duration::new(1, 1)));
    assert_eq!(parse_duration("0.5ns"), Ok(Duration::ZERO));
    assert_eq!(parse_duration("1.5us"), Ok(Duration::from_nanos(1_500)));
    // Digits past the 24th are ignored rather than refused.
    assert_eq!(
        parse_duration("0.000000000000000000000000001s"),
        Ok(Duration::ZERO)
    );
}

#[test]
fn format_is_readable() {
    assert_eq!(format_duration(Duration::ZERO), "0s");
    assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
    assert_eq!(format_duration(Duration::from_secs(86_400)), "24h");
    assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    assert_eq!(format_duration(Duration::from_millis(1_500)), "1s500ms");
    assert_eq!(format_duration(Duration::from_nanos(2_001)), "2us1ns");
    assert_eq!(format_duration(MAX), "2562047h47m16s854ms775us807ns");
}

#[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
struct Holder {
    #[serde(with = "crate::duration")]
    ttl: Duration,
}

#[test]
fn serde_takes_strings_and_whole_seconds_and_names_bad_values() {
    let from =
        |v: serde_json::Value| serde_json::from_value::<Holder>(serde_json::json!({ "ttl": v }));
    assert_eq!(from("1h".into()).unwrap().ttl, Duration::from_secs(3_600));
    assert_eq!(from(7_200.into()).unwrap().ttl, Duration::from_secs(7_200));
    let neg = from((-5).into()).unwrap_err().to_string();
    assert!(neg.contains("must not be negative"), "{neg}");
    let neg = from("-5m".into()).unwrap_err().to_string();
    assert!(
        neg.contains("\"-5m\": durations must not be negative"),
        "{neg}"
    );
    let frac = from(1.5.into()).unwrap_err().to_string();
    assert!(frac.contains("\"1.5s\""), "{frac}");
    let huge = from(u64::MAX.into()).unwrap_err().to_string();
    assert!(huge.contains("too large"), "{huge}");
    let back = serde_json::to_value(Holder {
        ttl: Duration::from_millis(90_500),
    })
    .unwrap();
    assert_eq!(back, serde_json::json!({ "ttl": "1m30s500ms" }));
}

fn any_duration() -> impl Strategy<Value = Duration> {
    (0..=MAX_NANOS as u64).prop_map(Duration::from_nanos)
}

proptest! {
    #[test]
    fn never_panics(s in "\\PC{0,80}") {
        let _ = parse_duration(&s);
    }

    #[test]
    fn never_panics_on_near_misses(s in "[+-]?[0-9.]{0,25}(ns|us|\u{b5}s|\u{3bc}s|ms|s|m|h|x| )?([0-9.]{0,25}(h|m|s)?){0,3}") {
        let _ = parse_duration(&s);
    }

    #[test]
    fn format_then_parse_round_trips(d in any_duration()) {
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }

    #[test]
    fn signed_forms_agree(d in any_duration()) {
        let text = format_duration(d);
        prop_assert_eq!(parse_duration(&format!("+{text}")), Ok(d));
        let negative = matches!(parse_duration(&format!("-{text}")), Err(DurationError::Negative { .. }));
        prop_assert!(negative);
    }

    #[test]
    fn decimal_seconds_are_exact(s in 0u64..=9_223_372_035, n in 0u32..1_000_000_000) {
        prop_assert_eq!(parse_duration(&format!("{s}.{n:09}s")), Ok(Duration::new(s, n)));
    }

    #[test]
    fn components_add_up(h in 0u64..100_000, m in 0u64..1000, s in 0u64..1000, ms in 0u64..1000, us in 0u64..1000, ns in 0u64..1000) {
        let text = format!("{h}h{m}m{s}s{ms}ms{us}\u{3bc}s{ns}ns");
        let want = Duration::from_secs(h * 3600 + m * 60 + s)
            + Duration::from_nanos(ms * 1_000_000 + us * 1_000 + ns);
        prop_assert_eq!(parse_duration(&text), Ok(want));
    }

    #[test]
    fn bare_integers_are_seconds(n in 0u64..=9_223_372_036) {
        prop_assert_eq!(parse_duration(&n.to_string()), Ok(Duration::from_secs(n)));
        prop_assert_eq!(parse_duration(&format!("{n}s")), Ok(Duration::from_secs(n)));
    }
}
