//! The values the hub keeps fresh: tokens, the instants they carry, and WeChat's ticket kinds.
//!
//! Which credential a token belongs to is a `kinds::CredentialKey`; this module sits below every
//! other so that the WeChat client, the stores and the kinds share these types.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in wall-clock time, in milliseconds since the Unix epoch.
///
/// Tokens outlive the process (they are persisted and shared between nodes), so their instants are
/// wall-clock, not `Instant`. Milliseconds keep the arithmetic exact and the storage an integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(since_epoch.as_millis() as i64)
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch (what WeChat's signatures use).
    pub fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// This instant moved later by `d` (saturating, never wrapping).
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(millis(d)))
    }

    /// This instant moved earlier by `d` (saturating, never wrapping).
    pub fn minus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(millis(d)))
    }

    /// How long from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// RFC 3339 in UTC with second precision, e.g. `2026-11-21T08:00:00Z` (the API's `expires_at`).
    pub fn to_rfc3339(self) -> String {
        let secs = self.as_secs();
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (rem / 3600, (rem % 3600) / 60, rem % 60);
        if !(0..=9999).contains(&y) {
            return rfc3339_formatted(y, m, d, (hh, mm, ss));
        }
        // Written digit by digit: a listing page formats a thousand of these, and `format!`'s
        // padding machinery costs several times the arithmetic.
        let mut out = *b"0000-00-00T00:00:00Z";
        let digits = |out: &mut [u8; 20], at: usize, value: i64, width: usize| {
            let mut value = value;
            for i in (at..at + width).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        digits(&mut out, 0, y, 4);
        digits(&mut out, 5, i64::from(m), 2);
        digits(&mut out, 8, i64::from(d), 2);
        digits(&mut out, 11, hh, 2);
        digits(&mut out, 14, mm, 2);
        digits(&mut out, 17, ss, 2);
        // Only ASCII digits and separators were written.
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// RFC 3339 through `format!`: years outside 0–9999, which need a sign or a fifth digit.
fn rfc3339_formatted(y: i64, m: u32, d: u32, (hh, mm, ss): (i64, i64, i64)) -> String {
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// A duration in whole milliseconds, saturating at `i64::MAX`.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
/// Howard Hinnant's `civil_from_days`, exact for every `i64` day count we can meet.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The JS-SDK tickets of an official account or an authorizer (`cgi-bin/ticket/getticket?type=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TicketKind {
    /// `jsapi_ticket`, signs `wx.config`.
    Jsapi,
    /// The card/coupon `api_ticket`.
    WxCard,
}

/// The JS-SDK tickets of a Work WeChat app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CorpTicketKind {
    /// The corp ticket (`get_jsapi_ticket`), signs `wx.config`.
    Jsapi,
    /// The app ticket (`ticket/get?type=agent_config`), signs `wx.agentConfig`.
    AgentConfig,
}

/// A ticket kind's name is not one WeChat has.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown ticket kind {0:?}")]
pub struct UnknownTicket(pub String);

macro_rules! ticket_kind_names {
    ($ty:ty { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// WeChat's name for this ticket (`type=` parameter and API path segment).
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }
        }
        impl FromStr for $ty {
            type Err = UnknownTicket;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok(Self::$variant),)*
                    other => Err(UnknownTicket(other.to_string())),
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

ticket_kind_names!(TicketKind { Jsapi => "jsapi", WxCard => "wx_card" });
ticket_kind_names!(CorpTicketKind { Jsapi => "jsapi", AgentConfig => "agent_config" });

/// A credential's value at one moment, as stored and served.
///
/// `generation` orders every write of one key across the whole cluster: a token is only ever
/// written with the stored generation plus one, so a slow refresher can never put an older token
/// back (docs/architecture.md#never-go-backwards).
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The secret value handed to consumers. Never logged: `Debug` redacts it.
    pub value: String,
    /// When WeChat said it stops working (fetch time + `expires_in`, or the first-seen expiry of a
    /// ticket that WeChat re-sent unchanged).
    pub expires_at: Timestamp,
    /// When the hub obtained this value from WeChat (or from a push).
    pub fetched_at: Timestamp,
    /// Per-key counter that only grows; 1 for the first token ever stored.
    pub generation: u64,
}

impl Token {
    /// Remaining life at `now` (zero once expired).
    pub fn remaining(&self, now: Timestamp) -> Duration {
        self.expires_at.since(now)
    }

    /// The lifetime WeChat granted when the hub fetched it.
    pub fn lifetime(&self) -> Duration {
        self.expires_at.since(self.fetched_at)
    }

    /// Whether the token can still be served at `now`.
    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        self.expires_at > now
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("fetched_at", &self.fetched_at)
            .field("generation", &self.generation)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Timestamp(1_414_587_457_000).to_rfc3339(),
            "2014-10-29T12:57:37Z"
        );
        assert_eq!(
            Timestamp(951_782_400_000).to_rfc3339(),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn rfc3339_written_by_hand_matches_format_across_the_years() {
        let day = 86_400_000_i64;
        let mut instants = vec![
            -62_167_219_200_000, // 0000-01-01T00:00:00Z
            253_402_300_799_000, // 9999-12-31T23:59:59Z
            253_402_300_800_000, // 10000-01-01: the formatted path
            -62_167_219_200_001, // the last second of year -1
        ];
        instants.extend((0..20_000).map(|i| i * 7 * day + i * 3_601_001));
        for at in instants {
            let secs = at.div_euclid(1000);
            let rem = secs.rem_euclid(86_400);
            let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
            let expected = rfc3339_formatted(y, m, d, (rem / 3600, (rem % 3600) / 60, rem % 60));
            assert_eq!(Timestamp(at).to_rfc3339(), expected, "at {at}");
        }
        assert_eq!(
            Timestamp(253_402_300_800_000).to_rfc3339(),
            "10000-01-01T00:00:00Z"
        );
        assert_eq!(
            Timestamp(-62_167_219_200_001).to_rfc3339(),
            "-001-12-31T23:59:59Z"
        );
    }

    #[test]
    fn token_debug_never_shows_the_value() {
        let token = Token {
            value: "13_secretvalue".into(),
            expires_at: Timestamp(2),
            fetched_at: Timestamp(1),
            generation: 1,
        };
        assert!(!format!("{token:?}").contains("secretvalue"));
    }
}
