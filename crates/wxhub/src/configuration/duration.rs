//! Durations as the configuration spells them: `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"1h30m"`.

use std::fmt;
use std::time::Duration;

/// A duration text that could not be parsed; the message says what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurationError(String);

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DurationError {}

const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// Parses `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"1h30m"`: whole numbers each followed by a unit
/// (`h`, `m`, `s`, `ms`), largest unit first, each unit at most once.
///
/// A bare number is refused: whether `30` means seconds or milliseconds is exactly the kind of
/// ambiguity that makes a hub refresh 1000 times too often.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let fail = |what: String| Err(DurationError(what));
    if text.is_empty() {
        return fail("empty; use a unit, e.g. \"30s\"".into());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return fail("a number without a unit; use a unit, e.g. \"30s\"".into());
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    let mut previous_rank: Option<usize> = None;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, after) = rest.split_at(digits_end);
        if digits.is_empty() {
            return fail(format!(
                "unexpected {:?}; write whole numbers with units, e.g. \"1h30m\", \"30s\" or \"500ms\"",
                after.chars().next().unwrap_or_default()
            ));
        }
        let unit_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after_unit) = after.split_at(unit_end);
        if unit.is_empty() {
            return fail(format!(
                "missing unit after {digits}; write whole numbers with units, e.g. \"1h30m\", \"30s\" or \"500ms\""
            ));
        }
        let Some(rank) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return fail(format!("unknown unit {unit:?}; use h, m, s or ms"));
        };
        if previous_rank.is_some_and(|previous| previous >= rank) {
            return fail("units must go from largest to smallest, each at most once".into());
        }
        previous_rank = Some(rank);
        let amount = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(UNITS[rank].1))
            .and_then(|ms| ms.checked_add(total_ms));
        match amount {
            Some(sum) => total_ms = sum,
            None => return fail("too large".into()),
        }
        rest = after_unit;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration the way [`parse_duration`] reads it, e.g. `"1h30m"`, `"500ms"`, `"0s"`
/// (sub-millisecond parts are dropped).
pub fn format_duration(duration: Duration) -> String {
    let mut ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (name, size) in UNITS {
        let count = ms / size;
        if count > 0 {
            out.push_str(&format!("{count}{name}"));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_combination() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("30m", Duration::from_secs(1800)),
            ("2h", Duration::from_secs(7200)),
            ("1h30m", Duration::from_secs(5400)),
            ("1m30s", Duration::from_secs(90)),
            ("1s500ms", Duration::from_millis(1500)),
            ("0s", Duration::ZERO),
            ("90s", Duration::from_secs(90)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn refuses_malformed_durations() {
        for bad in [
            "",
            "30",
            "s",
            "1.5s",
            "30 s",
            " 30s",
            "30sec",
            "1d",
            "30m1h",
            "1m1m",
            "-1s",
            "1h30",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration("30")
            .unwrap_err()
            .to_string()
            .contains("use a unit, e.g. \"30s\""));
    }

    #[test]
    fn formats_what_it_parses() {
        for text in ["500ms", "30s", "5m", "2h", "1h30m", "1h1m1s1ms", "0s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
    }
}
