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

/// What every message about a unit ends with: the units there are and where they go.
const UNITS_HINT: &str = "units: h, m, s, ms, right after the number";

/// Words people write for a unit, and the unit they mean: recognised only to suggest the
/// right spelling, never accepted.
const SPELLED_OUT: [(&str, &str); 18] = [
    ("hr", "h"),
    ("hrs", "h"),
    ("hour", "h"),
    ("hours", "h"),
    ("min", "m"),
    ("mins", "m"),
    ("minute", "m"),
    ("minutes", "m"),
    ("sec", "s"),
    ("secs", "s"),
    ("second", "s"),
    ("seconds", "s"),
    ("msec", "ms"),
    ("msecs", "ms"),
    ("milli", "ms"),
    ("millis", "ms"),
    ("millisecond", "ms"),
    ("milliseconds", "ms"),
];

/// One number and the word after it, as written.
struct Part<'a> {
    digits: &'a str,
    word: &'a str,
}

/// Parses `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"1h30m"`: whole numbers each followed by a unit
/// (`h`, `m`, `s`, `ms`), largest unit first, each unit at most once, with no spaces.
///
/// A bare number is refused: whether `30` means seconds or milliseconds is exactly the kind of
/// ambiguity that makes a hub refresh 1000 times too often. A text that only a spelled-out unit
/// (`"5 secs"`) or a space (`"5 s"`) keeps from being a duration is refused with the spelling to
/// write instead (`"5s"`).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let fail = |what: String| Err(DurationError(what));
    if text.trim().is_empty() {
        return fail(format!(
            "empty; use a number and a unit, e.g. \"30s\" ({UNITS_HINT})"
        ));
    }
    let trimmed = text.trim();
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return fail(format!(
            "a number without a unit; use a unit, e.g. \"{trimmed}s\" ({UNITS_HINT})"
        ));
    }
    let parts = split(text).map_err(DurationError)?;
    let mut total_ms: u64 = 0;
    let mut previous_rank: Option<usize> = None;
    let mut spelled_out: Option<&str> = None;
    let mut suggestion = String::new();
    for part in &parts {
        let (unit, rank) = match UNITS.iter().position(|(name, _)| *name == part.word) {
            Some(rank) => (part.word, rank),
            None => {
                let Some(unit) = SPELLED_OUT
                    .iter()
                    .find(|(word, _)| word.eq_ignore_ascii_case(part.word))
                    .map(|(_, unit)| *unit)
                else {
                    return fail(format!(
                        "{:?} is not a unit ({UNITS_HINT}, e.g. \"30s\" or \"1h30m\")",
                        part.word
                    ));
                };
                spelled_out.get_or_insert(part.word);
                let rank = UNITS.iter().position(|(name, _)| *name == unit);
                (unit, rank.unwrap_or_default())
            }
        };
        if previous_rank.is_some_and(|previous| previous >= rank) {
            return fail("units must go from largest to smallest, each at most once".into());
        }
        previous_rank = Some(rank);
        let amount = part
            .digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(UNITS[rank].1))
            .and_then(|ms| ms.checked_add(total_ms));
        match amount {
            Some(sum) => total_ms = sum,
            None => return fail("too large".into()),
        }
        suggestion.push_str(part.digits);
        suggestion.push_str(unit);
    }
    if let Some(word) = spelled_out {
        return fail(format!(
            "{word:?} is not a unit; write {suggestion:?} ({UNITS_HINT})"
        ));
    }
    if text.contains(char::is_whitespace) {
        return fail(format!("spaces are not allowed; write {suggestion:?}"));
    }
    Ok(Duration::from_millis(total_ms))
}

/// Splits `text` into numbers and the words after them, skipping spaces (which
/// [`parse_duration`] refuses once it knows what to suggest instead).
fn split(text: &str) -> Result<Vec<Part<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, after) = rest.split_at(digits_end);
        if digits.is_empty() {
            return Err(format!(
                "unexpected {:?}; write whole numbers with units, e.g. \"1h30m\", \"30s\" or \"500ms\"",
                after.chars().next().unwrap_or_default()
            ));
        }
        let after = after.trim_start();
        let word_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (word, after_word) = after.split_at(word_end);
        if word.is_empty() {
            return Err(match after.chars().next() {
                Some(c) if !c.is_ascii_digit() => format!(
                    "unexpected {c:?} after {digits}; write whole numbers with units, e.g. \"1h30m\", \"30s\" or \"500ms\""
                ),
                _ => format!(
                    "missing unit after {digits}; write whole numbers with units, e.g. \"1h30m\", \"30s\" or \"500ms\""
                ),
            });
        }
        parts.push(Part { digits, word });
        rest = after_word.trim_start();
    }
    Ok(parts)
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
    fn says_what_to_write_instead() {
        let cases = [
            (
                "5 secs",
                "\"secs\" is not a unit; write \"5s\" (units: h, m, s, ms, right after the number)",
            ),
            (
                "5 seconds",
                "\"seconds\" is not a unit; write \"5s\" (units: h, m, s, ms, right after the number)",
            ),
            (
                "5secs",
                "\"secs\" is not a unit; write \"5s\" (units: h, m, s, ms, right after the number)",
            ),
            (
                "1 hour 30 minutes",
                "\"hour\" is not a unit; write \"1h30m\" (units: h, m, s, ms, right after the number)",
            ),
            ("5 s", "spaces are not allowed; write \"5s\""),
            (" 30s", "spaces are not allowed; write \"30s\""),
            ("1h 30m", "spaces are not allowed; write \"1h30m\""),
            (
                "5",
                "a number without a unit; use a unit, e.g. \"5s\" (units: h, m, s, ms, right after the number)",
            ),
            (
                "",
                "empty; use a number and a unit, e.g. \"30s\" (units: h, m, s, ms, right after the number)",
            ),
            (
                " ",
                "empty; use a number and a unit, e.g. \"30s\" (units: h, m, s, ms, right after the number)",
            ),
            (
                "1d",
                "\"d\" is not a unit (units: h, m, s, ms, right after the number, e.g. \"30s\" or \"1h30m\")",
            ),
            (
                "5 fortnights",
                "\"fortnights\" is not a unit (units: h, m, s, ms, right after the number, e.g. \"30s\" or \"1h30m\")",
            ),
            (
                "1.5s",
                "unexpected '.' after 1; write whole numbers with units, e.g. \"1h30m\", \"30s\" or \"500ms\"",
            ),
            (
                "1h30",
                "missing unit after 30; write whole numbers with units, e.g. \"1h30m\", \"30s\" or \"500ms\"",
            ),
            (
                "30 secs 1h",
                "units must go from largest to smallest, each at most once",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(
                parse_duration(text).map_err(|e| e.to_string()),
                Err(message.to_string()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn formats_what_it_parses() {
        for text in ["500ms", "30s", "5m", "2h", "1h30m", "1h1m1s1ms", "0s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
    }
}
