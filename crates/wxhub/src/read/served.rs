//! Served values: a token as consumers receive it, the fixed parts of its JSON body rendered once
//! per generation and refresh plan so that a read only writes the `expires_in` digits, and the
//! value it replaced while WeChat still accepts that one. Kept apart from the index that finds
//! them: these are the bytes of the read path, the index only where they are.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::Credential;
use crate::token::{Timestamp, Token};

/// How long WeChat keeps accepting an access token after a newer one was issued for the same
/// account (docs/wechat.md): a token handed out before a refresh still works this long after it.
pub const OVERLAP: Duration = Duration::from_secs(300);

/// A token as consumers receive it: the value plus the parts of the JSON body that do not change
/// between requests, rendered once per token generation and refresh plan.
pub struct Served {
    /// The token or ticket value (needed to sign JS-SDK configurations and compare reports).
    pub value: Arc<str>,
    /// Per-key generation of this value.
    pub generation: u64,
    /// When WeChat stops accepting it.
    pub expires_at: Timestamp,
    /// Until when a consumer may keep using it without asking again (docs/architecture.md#what-consumers-are-told, "what consumers
    /// are told"): never after `expires_at`, and shortly after the hub's next planned refresh.
    pub serve_until: Timestamp,
    /// The JSON field the value is served under (`access_token` or `ticket`).
    field: &'static str,
    /// The value as it stands between the quotes of a JSON string, when that differs from
    /// `value` (a quote, a backslash or a control character in it). WeChat's values never need escaping, so the body
    /// is written from `value` itself: at 100,000 authorizers a rendered copy of every token
    /// would cost about 20 MiB.
    escaped: Option<Box<str>>,
    /// `,"expires_at":"…","generation":N}` and a newline: everything after the one per-request
    /// number.
    body_suffix: Bytes,
    /// The value served before this one, while WeChat may still accept it: the gateway forwards
    /// calls made with it (a consumer may hold it for a few more seconds) instead of refusing them.
    pub previous: Option<Previous>,
    /// When this instance started serving this generation (set by [`ReadIndex::publish`]): the watch
    /// stream's event ids, so that a watcher resuming with `Last-Event-ID` is sent only what
    /// changed since.
    pub published_at: Timestamp,
}

/// A value that was replaced, and until when WeChat keeps accepting it.
#[derive(Clone, Debug)]
pub struct Previous {
    /// The replaced value.
    pub value: Arc<str>,
    /// The end of its overlap with the new value (never after its own expiry).
    pub until: Timestamp,
}

/// A new generation served for a credential, as [`ReadIndex::subscribe`] announces it.
#[derive(Clone)]
pub struct Change {
    /// The credential whose slot now holds the new generation.
    pub credential: Arc<Credential>,
    /// The generation now served.
    pub generation: u64,
}

/// What [`Served::render`] writes before the field name.
const OPEN: &[u8] = b"{\"";
/// What it writes between the field name and the value.
const FIELD_END: &[u8] = b"\":\"";
/// What it writes between the value and the per-request number.
const VALUE_END: &[u8] = b"\",\"expires_in\":";
/// Their length together.
const FIXED_LEN: usize = OPEN.len() + FIELD_END.len() + VALUE_END.len();

/// Whether `value` reads differently between a JSON string's quotes: it holds a quote, a
/// backslash or a control character (serde_json escapes nothing else).
fn needs_escaping(value: &str) -> bool {
    value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}

impl Served {
    /// Renders a token for serving under the JSON field `field` (`access_token` or `ticket`).
    pub fn new(field: &'static str, token: &Token, serve_until: Timestamp) -> Served {
        let escaped = needs_escaping(&token.value).then(|| {
            let quoted = serde_json::Value::String(token.value.clone()).to_string();
            Box::from(&quoted[1..quoted.len() - 1])
        });
        let body_suffix = format!(
            ",\"expires_at\":\"{}\",\"generation\":{}}}\n",
            token.expires_at.to_rfc3339(),
            token.generation
        );
        Served {
            value: Arc::from(token.value.as_str()),
            generation: token.generation,
            expires_at: token.expires_at,
            serve_until: serve_until.min(token.expires_at),
            field,
            escaped,
            // An exact-size copy: `format!` leaves up to twice the length reserved, and one is
            // kept per credential for its whole life.
            body_suffix: Bytes::copy_from_slice(body_suffix.as_bytes()),
            previous: None,
            published_at: Timestamp(0),
        }
    }

    /// Whether WeChat should still accept `value` as this credential's at `now`: the value
    /// served, before its expiry, or the previous one within its overlap.
    pub fn accepts(&self, value: &str, now: Timestamp) -> bool {
        (*self.value == *value && self.expires_at > now)
            || self
                .previous
                .as_ref()
                .is_some_and(|p| *p.value == *value && p.until > now)
    }

    /// Whole seconds a consumer may keep this token from `now`, rounded down (so never more than
    /// its true remaining life; 0 means "valid, but ask again before reusing it"), or `None` once
    /// it has expired.
    pub fn expires_in(&self, now: Timestamp) -> Option<u64> {
        if self.expires_at <= now {
            return None;
        }
        Some(self.serve_until.since(now).as_secs())
    }

    /// The JSON body for a request at `now`, or `None` once the token has expired.
    pub fn render(&self, now: Timestamp) -> Option<Bytes> {
        let expires_in = self.expires_in(now)?;
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(expires_in);
        let value = self.escaped.as_deref().unwrap_or(&self.value);
        let len =
            FIXED_LEN + self.field.len() + value.len() + digits.len() + self.body_suffix.len();
        let mut body = BytesMut::with_capacity(len);
        body.put_slice(OPEN);
        body.put_slice(self.field.as_bytes());
        body.put_slice(FIELD_END);
        body.put_slice(value.as_bytes());
        body.put_slice(VALUE_END);
        body.put_slice(digits.as_bytes());
        body.put_slice(&self.body_suffix);
        Some(body.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(value: &str, expires_at: i64) -> Token {
        Token {
            value: value.into(),
            expires_at: Timestamp(expires_at),
            fetched_at: Timestamp(0),
            generation: 7,
        }
    }

    #[test]
    fn renders_the_contract_shape() {
        let served = Served::new(
            "access_token",
            &token("13_a\"b", 10_000_000),
            Timestamp(5_000_000),
        );
        let body = served.render(Timestamp(1_000_000)).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["access_token"], "13_a\"b");
        assert_eq!(json["expires_in"], 4000);
        assert_eq!(json["expires_at"], "1970-01-01T02:46:40Z");
        assert_eq!(json["generation"], 7);
    }

    #[test]
    fn renders_the_same_bytes_as_serialising_the_fields() {
        for value in ["ACCESS_TOKEN-1", "a\"b\\c\u{1}d", "票据", "\u{7f}/<>"] {
            let served = Served::new("ticket", &token(value, 10_000_000), Timestamp(5_000_000));
            let body = served.render(Timestamp(1_000_000)).unwrap();
            let expected = format!(
                "{{\"ticket\":{},\"expires_in\":4000,\"expires_at\":\"1970-01-01T02:46:40Z\",\"generation\":7}}\n",
                serde_json::Value::String(value.into())
            );
            assert_eq!(std::str::from_utf8(&body).unwrap(), expected);
        }
    }

    #[test]
    fn expires_in_never_exceeds_remaining_life_and_stops_at_expiry() {
        let served = Served::new("ticket", &token("t", 3_500), Timestamp(9_000));
        assert_eq!(served.expires_in(Timestamp(1_000)), Some(2));
        assert_eq!(served.expires_in(Timestamp(3_200)), Some(0));
        assert_eq!(served.expires_in(Timestamp(3_500)), None);
        assert!(served.render(Timestamp(4_000)).is_none());
    }
}
