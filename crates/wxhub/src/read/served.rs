//! Served values: a token as consumers receive it, its JSON body rendered once per generation and
//! refresh plan so that a read only writes the `expires_in` digits, and the value it replaced
//! while WeChat still accepts that one. Kept apart from the index that finds them: these are the
//! bytes of the read path, the index only where they are.

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
    /// `{"access_token":"…","expires_in":` — everything before the one per-request number.
    body_prefix: Bytes,
    /// `,"expires_at":"…","generation":N}`.
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

impl Served {
    /// Renders a token for serving under the JSON field `field` (`access_token` or `ticket`).
    pub fn new(field: &str, token: &Token, serve_until: Timestamp) -> Served {
        let value_json = serde_json::Value::String(token.value.clone()).to_string();
        let body_prefix = format!("{{\"{field}\":{value_json},\"expires_in\":");
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
            // Exact-size copies: `format!` leaves up to twice the length reserved, and one
            // rendered token per credential is kept for its whole life.
            body_prefix: Bytes::copy_from_slice(body_prefix.as_bytes()),
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
        let mut body =
            BytesMut::with_capacity(self.body_prefix.len() + digits.len() + self.body_suffix.len());
        body.put_slice(&self.body_prefix);
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
    fn expires_in_never_exceeds_remaining_life_and_stops_at_expiry() {
        let served = Served::new("ticket", &token("t", 3_500), Timestamp(9_000));
        assert_eq!(served.expires_in(Timestamp(1_000)), Some(2));
        assert_eq!(served.expires_in(Timestamp(3_200)), Some(0));
        assert_eq!(served.expires_in(Timestamp(3_500)), None);
        assert!(served.render(Timestamp(4_000)).is_none());
    }
}
