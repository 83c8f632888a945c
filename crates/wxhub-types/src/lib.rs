//! The JSON bodies wxhub and its consumers exchange, in one small crate that both the server and
//! the Rust client depend on, so the two cannot drift apart. Serde only: no server code.

use serde::{Deserialize, Serialize};

/// `GET /v1/apps/{appid}/access_token` (and every token or ticket read): the value and how long
/// it may be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenAnswer {
    /// The token (`access_token`) or ticket (`ticket`) value.
    #[serde(alias = "ticket")]
    pub access_token: String,
    /// Seconds the consumer may keep it before asking again (0: ask again before reusing it).
    pub expires_in: u64,
    /// When WeChat stops accepting it (RFC 3339 UTC).
    pub expires_at: String,
    /// Its generation: higher means newer.
    pub generation: u64,
}

/// `POST /v1/apps/{appid}/access_token/invalidate`: the token WeChat refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidateRequest {
    /// The refused token.
    pub access_token: String,
}

/// One `credential` event of `GET /v1/watch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The credential, as `/v1/credentials` names it (`access_token/wx…`, `ticket/wx…/jsapi`,
    /// `corp_token/ww…/1000002`).
    pub key: String,
    /// The generation now served.
    pub generation: u64,
    /// When WeChat stops accepting it (RFC 3339 UTC).
    pub expires_at: String,
    /// Seconds a consumer may keep it from the moment of the event.
    pub expires_in: u64,
    /// The value, for consumers with the `read` scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// An error answer of the `/v1` API: `{"error":{"code","message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`unauthorized`, `unknown_app`, …).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// The key of an official account's access token in watch events.
pub fn access_token_key(appid: &str) -> String {
    format!("access_token/{appid}")
}

/// The key of a Work WeChat app's access token in watch events.
pub fn corp_token_key(corpid: &str, agentid: &str) -> String {
    format!("corp_token/{corpid}/{agentid}")
}

/// The key of an official account's ticket in watch events.
pub fn ticket_key(appid: &str, kind: &str) -> String {
    format!("ticket/{appid}/{kind}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_event_without_value_omits_it() {
        let event = WatchEvent {
            key: access_token_key("wx1"),
            generation: 3,
            expires_at: "2026-01-01T00:00:00Z".into(),
            expires_in: 60,
            value: None,
        };
        let json = serde_json::to_string(&event).unwrap();
        assert!(!json.contains("value"));
        let back: WatchEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, event);
    }
}
