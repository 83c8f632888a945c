//! Every token and ticket the mock has minted, with its expiry: the source of truth for how a
//! business API judges a token (valid, superseded, expired or unknown).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use rand::Rng;

use crate::errors::code;

/// What a minted value is; a value of one kind is unknown (40014) where another kind is expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An official-account access token (`cgi-bin/token` or `stable_token`).
    Official,
    /// A Work WeChat app token.
    Corp,
    /// A JS-SDK, card or agent_config ticket.
    Ticket,
    /// A third-party platform's `component_access_token`: it works only on the component
    /// endpoints, never on business APIs.
    Component,
    /// A `component_verify_ticket` the mock pushed (`ticket@@@…`).
    VerifyTicket,
    /// A `pre_auth_code` (`preauthcode@@@…`): the start of an authorization link.
    PreAuthCode,
    /// An authorization code (`queryauthcode@@@…`), exchanged by `api_query_auth`.
    AuthorizationCode,
    /// An `authorizer_refresh_token` (`refreshtoken@@@…`): it lives as long as the authorization.
    RefreshToken,
    /// A Work WeChat suite's `suite_access_token`: it works on the `service/*` endpoints only.
    Suite,
    /// A `suite_ticket` the mock pushed to a suite.
    SuiteTicket,
    /// A suite's `pre_auth_code`: the start of an install link.
    SuitePreAuthCode,
    /// A temporary `auth_code` (`create_auth`, `reset_permanent_code`), exchanged once by
    /// `get_permanent_code`.
    SuiteAuthCode,
    /// An installed corp's `permanent_code`: it lives until the corp uninstalls or it is reset.
    PermanentCode,
    /// A provider's `provider_access_token`.
    Provider,
}

/// One minted token or ticket.
#[derive(Debug)]
pub(crate) struct Record {
    /// The account it belongs to (appid or `corpid/agentid`).
    pub account: String,
    pub kind: Kind,
    /// When it stops working: its natural expiry, or earlier once a newer value superseded it.
    pub expires_at: Instant,
    /// Whether `expires_at` was brought forward by a newer value; after that instant the token is
    /// answered with 40001 (not latest) rather than 42001 (expired).
    pub superseded: bool,
}

impl Record {
    /// The remaining life, or `None` once dead.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        let left = self.expires_at.saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }
}

/// Dead records are forgotten this long after they died (then a token counts as unknown, 40014),
/// so that a long benchmark does not grow the map without bound.
const MIN_RETENTION: Duration = Duration::from_secs(600);
/// The map is swept only when it has grown to this size (and then at twice its live size).
const MIN_SWEEP_SIZE: usize = 4096;

const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The minted values, by value.
pub(crate) struct Credentials {
    map: HashMap<String, Record>,
    retention: Duration,
    sweep_at: usize,
    /// The decimal "generation" prefix of the next official token (real tokens look like `54_…`).
    next_prefix: u64,
}

impl Credentials {
    pub fn new(lifetime: Duration) -> Credentials {
        Credentials {
            map: HashMap::new(),
            retention: lifetime.max(MIN_RETENTION),
            sweep_at: MIN_SWEEP_SIZE,
            next_prefix: rand::thread_rng().gen_range(10..80),
        }
    }

    pub fn get(&self, value: &str) -> Option<&Record> {
        self.map.get(value)
    }

    /// The record of a live value of `kind`, or `None`.
    pub fn live(&self, value: &str, kind: Kind, now: Instant) -> Option<&Record> {
        self.map
            .get(value)
            .filter(|r| r.kind == kind && r.remaining(now).is_some())
    }

    /// Judges `token` the way every WeChat API does: the record when it is a live token of an
    /// accepted kind, else the errcode (41001 missing, 40014 unknown or of another kind, 40001
    /// superseded, 42001 expired).
    pub fn check(
        &self,
        token: Option<&str>,
        accept: &[Kind],
        now: Instant,
    ) -> Result<&Record, i64> {
        let token = token.ok_or(code::ACCESS_TOKEN_MISSING)?;
        let record = self
            .map
            .get(token)
            .filter(|r| accept.contains(&r.kind))
            .ok_or(code::INVALID_ACCESS_TOKEN)?;
        match record.remaining(now) {
            Some(_) => Ok(record),
            None if record.superseded => Err(code::INVALID_CREDENTIAL),
            None => Err(code::ACCESS_TOKEN_EXPIRED),
        }
    }

    /// Mints a new unique value of `kind` for `account`, valid for `lifetime` from `now`.
    pub fn mint(&mut self, kind: Kind, account: &str, now: Instant, lifetime: Duration) -> String {
        self.sweep(now);
        let mut rng = rand::thread_rng();
        let value = loop {
            let candidate = match kind {
                Kind::Official | Kind::Component => {
                    let mut v = self.next_prefix.to_string();
                    v.push('_');
                    push_random(&mut v, &mut rng, 136);
                    v
                }
                Kind::Corp => random_string(&mut rng, 172),
                Kind::Ticket => random_string(&mut rng, 86),
                Kind::VerifyTicket => prefixed("ticket@@@", &mut rng, 86),
                Kind::PreAuthCode => prefixed("preauthcode@@@", &mut rng, 86),
                Kind::AuthorizationCode => prefixed("queryauthcode@@@", &mut rng, 86),
                Kind::RefreshToken => prefixed("refreshtoken@@@", &mut rng, 43),
                Kind::Suite | Kind::Provider => random_string(&mut rng, 128),
                Kind::SuiteTicket | Kind::SuitePreAuthCode => random_string(&mut rng, 64),
                Kind::SuiteAuthCode => random_string(&mut rng, 108),
                Kind::PermanentCode => random_string(&mut rng, 43),
            };
            if !self.map.contains_key(&candidate) {
                break candidate;
            }
        };
        if matches!(kind, Kind::Official | Kind::Component) {
            self.next_prefix += 1;
        }
        self.map.insert(
            value.clone(),
            Record {
                account: account.to_owned(),
                kind,
                expires_at: now + lifetime,
                superseded: false,
            },
        );
        value
    }

    /// Makes room for a new token in a slot: `live` lists the slot's possibly-live tokens, oldest
    /// first. The newest keeps at most `grace`; with `kill_older`, every older one dies now
    /// (a force refresh). Dead tokens leave the list (their records stay, for the errcode).
    pub fn supersede(
        &mut self,
        live: &mut Vec<String>,
        now: Instant,
        grace: Duration,
        kill_older: bool,
    ) {
        let newest = live.len().saturating_sub(1);
        for (i, value) in live.iter().enumerate() {
            let cap = if kill_older && i < newest {
                now
            } else {
                now + grace
            };
            if let Some(record) = self.map.get_mut(value) {
                if cap < record.expires_at {
                    record.expires_at = cap;
                    record.superseded = true;
                }
            }
        }
        live.retain(|v| self.map.get(v).is_some_and(|r| r.remaining(now).is_some()));
    }

    fn sweep(&mut self, now: Instant) {
        if self.map.len() < self.sweep_at {
            return;
        }
        let retention = self.retention;
        self.map.retain(|_, r| r.expires_at + retention > now);
        self.sweep_at = (self.map.len() * 2).max(MIN_SWEEP_SIZE);
    }
}

/// A random 32-character secret, for accounts whose secret nobody is meant to know.
pub(crate) fn random_secret() -> String {
    random_string(&mut rand::thread_rng(), 32)
}

fn random_string(rng: &mut impl Rng, len: usize) -> String {
    let mut s = String::with_capacity(len);
    push_random(&mut s, rng, len);
    s
}

fn prefixed(prefix: &str, rng: &mut impl Rng, len: usize) -> String {
    let mut s = String::with_capacity(prefix.len() + len);
    s.push_str(prefix);
    push_random(&mut s, rng, len);
    s
}

/// Appends `len` random characters of the URL-safe alphabet. The bytes come from the generator
/// in bulk (the alphabet has 64 symbols, so the low six bits of a byte pick one uniformly):
/// minting 100 000 refresh tokens at start stays fast in unoptimized test builds.
fn push_random(s: &mut String, rng: &mut impl Rng, len: usize) {
    let mut buf = [0u8; 64];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        rng.fill_bytes(&mut buf[..n]);
        s.extend(
            buf[..n]
                .iter()
                .map(|b| char::from(URL_SAFE[usize::from(b & 63)])),
        );
        left -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_tokens_have_a_generation_prefix() {
        let mut c = Credentials::new(Duration::from_secs(10));
        let now = Instant::now();
        let a = c.mint(Kind::Official, "wx1", now, Duration::from_secs(10));
        let b = c.mint(Kind::Official, "wx1", now, Duration::from_secs(10));
        let (pa, rest) = a.split_once('_').unwrap();
        let (pb, _) = b.split_once('_').unwrap();
        assert_eq!(rest.len(), 136);
        assert_eq!(pb.parse::<u64>().unwrap(), pa.parse::<u64>().unwrap() + 1);
        assert!(rest.bytes().all(|b| URL_SAFE.contains(&b)));
    }

    #[test]
    fn superseded_and_expired_tokens_get_different_errcodes() {
        let mut c = Credentials::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let life = Duration::from_secs(10);
        let grace = Duration::from_secs(2);
        let old = c.mint(Kind::Official, "wx1", t0, life);
        let mut live = vec![old.clone()];
        c.supersede(&mut live, t0, grace, false);
        let new = c.mint(Kind::Official, "wx1", t0, life);
        live.push(new.clone());
        let ok = [Kind::Official];
        assert!(c
            .check(Some(&old), &ok, t0 + Duration::from_secs(1))
            .is_ok());
        assert_eq!(c.check(Some(&old), &ok, t0 + grace).unwrap_err(), 40001);
        assert_eq!(c.check(Some(&new), &ok, t0 + life).unwrap_err(), 42001);
        assert_eq!(c.check(Some("nope"), &ok, t0).unwrap_err(), 40014);
        assert_eq!(c.check(None, &ok, t0).unwrap_err(), 41001);
        assert_eq!(c.check(Some(&new), &[Kind::Corp], t0).unwrap_err(), 40014);
    }
}
