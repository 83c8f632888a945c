//! What the hub keeps fresh: typed credential keys and the tokens stored under them.
//!
//! Every credential is named by one [`CredentialKey`] variant, never by strings glued together ad
//! hoc. The key has one canonical text form ([`CredentialKey::storage_key`]) used by every store,
//! so a key written by one node (or one version) is read back identically by another.

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
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
    }
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

macro_rules! ticket_kind_names {
    ($ty:ty { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// WeChat's name for this ticket (`type=` parameter and API path segment).
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }
        }
        impl FromStr for $ty {
            type Err = ParseKeyError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok(Self::$variant),)*
                    other => Err(ParseKeyError(format!("unknown ticket kind {other:?}"))),
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

/// One credential the hub keeps: which account, which kind of token.
///
/// Each key knows which other credential it is fetched with ([`CredentialKey::depends_on`]): a
/// ticket needs its access token, an authorizer token needs the component token and the
/// authorizer's refresh token.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CredentialKey {
    /// An official account's or mini program's `access_token`.
    AccessToken { appid: String },
    /// A JS-SDK ticket of an official account.
    Ticket { appid: String, kind: TicketKind },
    /// A Work WeChat app's `access_token`: one per (corpid, agent secret).
    CorpToken { corpid: String, agentid: String },
    /// A Work WeChat JS-SDK ticket, fetched with that app's token.
    CorpTicket {
        corpid: String,
        agentid: String,
        kind: CorpTicketKind,
    },
    /// The ticket WeChat pushes to a third-party platform every 10 minutes; there is no pull API.
    ComponentVerifyTicket { component_appid: String },
    /// A third-party platform's `component_access_token`.
    ComponentToken { component_appid: String },
    /// An authorizer's durable refresh token: cannot be re-created without the account owner.
    AuthorizerRefreshToken {
        component_appid: String,
        authorizer_appid: String,
    },
    /// An authorizer's `authorizer_access_token`.
    AuthorizerToken {
        component_appid: String,
        authorizer_appid: String,
    },
    /// A JS-SDK ticket fetched with an authorizer's token.
    AuthorizerTicket {
        component_appid: String,
        authorizer_appid: String,
        kind: TicketKind,
    },
}

/// A credential key's text form could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid credential key: {0}")]
pub struct ParseKeyError(pub String);

impl CredentialKey {
    /// Whether this credential's value is sealed in the store (see [`crate::store::sealed`]):
    /// the ones that cannot be fetched again without the account's owner.
    pub fn is_sealed_at_rest(&self) -> bool {
        match self {
            CredentialKey::AuthorizerRefreshToken { .. } => true,
            CredentialKey::AccessToken { .. }
            | CredentialKey::Ticket { .. }
            | CredentialKey::CorpToken { .. }
            | CredentialKey::CorpTicket { .. }
            | CredentialKey::ComponentVerifyTicket { .. }
            | CredentialKey::ComponentToken { .. }
            | CredentialKey::AuthorizerToken { .. }
            | CredentialKey::AuthorizerTicket { .. } => false,
        }
    }

    /// The official account / mini program access token of `appid`.
    pub fn access_token(appid: impl Into<String>) -> Self {
        CredentialKey::AccessToken {
            appid: appid.into(),
        }
    }

    /// A short name of the key's kind, used in metrics labels and logs.
    pub fn kind_name(&self) -> &'static str {
        match self {
            CredentialKey::AccessToken { .. } => "access_token",
            CredentialKey::Ticket { .. } => "ticket",
            CredentialKey::CorpToken { .. } => "corp_token",
            CredentialKey::CorpTicket { .. } => "corp_ticket",
            CredentialKey::ComponentVerifyTicket { .. } => "component_verify_ticket",
            CredentialKey::ComponentToken { .. } => "component_token",
            CredentialKey::AuthorizerRefreshToken { .. } => "authorizer_refresh_token",
            CredentialKey::AuthorizerToken { .. } => "authorizer_token",
            CredentialKey::AuthorizerTicket { .. } => "authorizer_ticket",
        }
    }

    /// The credential this one is fetched with, if any.
    pub fn depends_on(&self) -> Option<CredentialKey> {
        match self {
            CredentialKey::Ticket { appid, .. } => Some(CredentialKey::AccessToken {
                appid: appid.clone(),
            }),
            CredentialKey::CorpTicket {
                corpid, agentid, ..
            } => Some(CredentialKey::CorpToken {
                corpid: corpid.clone(),
                agentid: agentid.clone(),
            }),
            CredentialKey::ComponentToken { component_appid } => {
                Some(CredentialKey::ComponentVerifyTicket {
                    component_appid: component_appid.clone(),
                })
            }
            CredentialKey::AuthorizerToken {
                component_appid, ..
            } => Some(CredentialKey::ComponentToken {
                component_appid: component_appid.clone(),
            }),
            CredentialKey::AuthorizerTicket {
                component_appid,
                authorizer_appid,
                ..
            } => Some(CredentialKey::AuthorizerToken {
                component_appid: component_appid.clone(),
                authorizer_appid: authorizer_appid.clone(),
            }),
            CredentialKey::AccessToken { .. }
            | CredentialKey::CorpToken { .. }
            | CredentialKey::ComponentVerifyTicket { .. }
            | CredentialKey::AuthorizerRefreshToken { .. } => None,
        }
    }

    /// The canonical text form every store uses, e.g. `access_token/wx123` or
    /// `corp_ticket/ww1/1000002/agent_config`. Parsed back by [`FromStr`].
    pub fn storage_key(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind_name();
        match self {
            CredentialKey::AccessToken { appid } => write!(f, "{kind}/{appid}"),
            CredentialKey::Ticket { appid, kind: t } => write!(f, "{kind}/{appid}/{t}"),
            CredentialKey::CorpToken { corpid, agentid } => write!(f, "{kind}/{corpid}/{agentid}"),
            CredentialKey::CorpTicket {
                corpid,
                agentid,
                kind: t,
            } => write!(f, "{kind}/{corpid}/{agentid}/{t}"),
            CredentialKey::ComponentVerifyTicket { component_appid }
            | CredentialKey::ComponentToken { component_appid } => {
                write!(f, "{kind}/{component_appid}")
            }
            CredentialKey::AuthorizerRefreshToken {
                component_appid,
                authorizer_appid,
            }
            | CredentialKey::AuthorizerToken {
                component_appid,
                authorizer_appid,
            } => write!(f, "{kind}/{component_appid}/{authorizer_appid}"),
            CredentialKey::AuthorizerTicket {
                component_appid,
                authorizer_appid,
                kind: t,
            } => write!(f, "{kind}/{component_appid}/{authorizer_appid}/{t}"),
        }
    }
}

impl FromStr for CredentialKey {
    type Err = ParseKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(ParseKeyError(format!("empty segment in {s:?}")));
        }
        let owned = |i: usize| parts[i].to_string();
        let key = match (parts[0], parts.len()) {
            ("access_token", 2) => CredentialKey::AccessToken { appid: owned(1) },
            ("ticket", 3) => CredentialKey::Ticket {
                appid: owned(1),
                kind: parts[2].parse()?,
            },
            ("corp_token", 3) => CredentialKey::CorpToken {
                corpid: owned(1),
                agentid: owned(2),
            },
            ("corp_ticket", 4) => CredentialKey::CorpTicket {
                corpid: owned(1),
                agentid: owned(2),
                kind: parts[3].parse()?,
            },
            ("component_verify_ticket", 2) => CredentialKey::ComponentVerifyTicket {
                component_appid: owned(1),
            },
            ("component_token", 2) => CredentialKey::ComponentToken {
                component_appid: owned(1),
            },
            ("authorizer_refresh_token", 3) => CredentialKey::AuthorizerRefreshToken {
                component_appid: owned(1),
                authorizer_appid: owned(2),
            },
            ("authorizer_token", 3) => CredentialKey::AuthorizerToken {
                component_appid: owned(1),
                authorizer_appid: owned(2),
            },
            ("authorizer_ticket", 4) => CredentialKey::AuthorizerTicket {
                component_appid: owned(1),
                authorizer_appid: owned(2),
                kind: parts[3].parse()?,
            },
            _ => return Err(ParseKeyError(format!("unrecognised key {s:?}"))),
        };
        Ok(key)
    }
}

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
    fn every_key_round_trips_through_its_storage_form() {
        let keys = vec![
            CredentialKey::access_token("wx1"),
            CredentialKey::Ticket {
                appid: "wx1".into(),
                kind: TicketKind::WxCard,
            },
            CredentialKey::CorpToken {
                corpid: "ww1".into(),
                agentid: "1000002".into(),
            },
            CredentialKey::CorpTicket {
                corpid: "ww1".into(),
                agentid: "1000002".into(),
                kind: CorpTicketKind::AgentConfig,
            },
            CredentialKey::ComponentVerifyTicket {
                component_appid: "wxc".into(),
            },
            CredentialKey::ComponentToken {
                component_appid: "wxc".into(),
            },
            CredentialKey::AuthorizerRefreshToken {
                component_appid: "wxc".into(),
                authorizer_appid: "wxa".into(),
            },
            CredentialKey::AuthorizerToken {
                component_appid: "wxc".into(),
                authorizer_appid: "wxa".into(),
            },
            CredentialKey::AuthorizerTicket {
                component_appid: "wxc".into(),
                authorizer_appid: "wxa".into(),
                kind: TicketKind::Jsapi,
            },
        ];
        for key in keys {
            let text = key.storage_key();
            assert_eq!(text.parse::<CredentialKey>(), Ok(key), "{text}");
        }
        assert_eq!(
            CredentialKey::access_token("wx1").storage_key(),
            "access_token/wx1"
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "access_token",
            "access_token/",
            "access_token/a/b",
            "ticket/wx1/sms",
            "nonsense/wx1",
        ] {
            assert!(bad.parse::<CredentialKey>().is_err(), "{bad:?}");
        }
    }

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
