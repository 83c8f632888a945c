//! WeChat's HTTP endpoints: one function per endpoint, typed results, classified errors.
//!
//! Every failure is sorted into one of the four classes of DESIGN §3 ([`UpstreamError`]), because
//! the class alone decides what the engine does next (retry soon, back off for minutes, ask an
//! operator, or refresh the token that was used). Base URLs come from the configuration so tests
//! point the client at `wechat-mock`.
//!
//! No secret ever reaches an error message: request URLs (which carry `secret=` for
//! `cgi-bin/token`) are stripped from transport errors, and WeChat's own `errmsg` never echoes a
//! secret.

mod component;

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::credential::{CorpTicketKind, TicketKind};
use crate::metrics::Metrics;
use std::sync::Arc;

pub use component::{Authorization, AuthorizerPage, AuthorizerTokens, ListedAuthorizer};

/// Largest response body accepted from WeChat; real token responses are well under 1 KiB.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A credential value as WeChat returned it.
#[derive(Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The token or ticket.
    pub value: String,
    /// WeChat's `expires_in`: the full lifetime for fresh tokens, the *remaining* life for
    /// `stable_token` in normal mode.
    pub expires_in: Duration,
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("value", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Why a WeChat call failed, in the four classes that decide the engine's reaction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// Network failure, timeout, HTTP error status, unreadable body, `-1` (busy) or `45011`
    /// (per-minute limit): retry with backoff while the old token keeps being served.
    #[error("transient upstream failure{}: {message}", errcode_suffix(*.errcode))]
    Transient {
        errcode: Option<i64>,
        message: String,
    },
    /// `45009`: the daily quota is spent; retrying before the quota resets only wastes calls.
    #[error("daily quota exhausted (errcode {errcode}): {message}")]
    Quota { errcode: i64, message: String },
    /// A configuration or account problem an operator must fix (wrong secret, IP whitelist,
    /// frozen secret, admin confirmation pending, …). Retried slowly.
    #[error("configuration rejected by WeChat (errcode {errcode}): {message}")]
    Config { errcode: i64, message: String },
    /// The access token used for the call was dead (`40001`, `40014`, `42001`, `41001`).
    #[error("access token rejected by WeChat (errcode {errcode}): {message}")]
    TokenInvalid { errcode: i64, message: String },
}

fn errcode_suffix(errcode: Option<i64>) -> String {
    errcode.map_or_else(String::new, |c| format!(" (errcode {c})"))
}

impl UpstreamError {
    /// WeChat's errcode, when the failure came from one.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            UpstreamError::Transient { errcode, .. } => *errcode,
            UpstreamError::Quota { errcode, .. }
            | UpstreamError::Config { errcode, .. }
            | UpstreamError::TokenInvalid { errcode, .. } => Some(*errcode),
        }
    }

    /// A short name of the class, for metrics and the credentials listing.
    pub fn class(&self) -> &'static str {
        match self {
            UpstreamError::Transient { .. } => "transient",
            UpstreamError::Quota { .. } => "quota",
            UpstreamError::Config { .. } => "config",
            UpstreamError::TokenInvalid { .. } => "token_invalid",
        }
    }

    fn transient(message: impl Into<String>) -> Self {
        UpstreamError::Transient {
            errcode: None,
            message: message.into(),
        }
    }
}

/// Which side of an endpoint's parameters an errcode speaks about: `40001` means "wrong secret"
/// on a token endpoint but "dead access token" on an endpoint that takes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Authenticates {
    /// The call carries an AppSecret (`cgi-bin/token`, `stable_token`, `gettoken`).
    WithSecret,
    /// The call carries an access token (ticket endpoints).
    WithAccessToken,
}

/// Sorts a WeChat errcode into its class (spec §1, §5, §7).
fn classify(errcode: i64, errmsg: &str, auth: Authenticates) -> UpstreamError {
    let message = errmsg.to_string();
    match errcode {
        -1 | 45011 | 45033 => UpstreamError::Transient {
            errcode: Some(errcode),
            message,
        },
        45009 => UpstreamError::Quota { errcode, message },
        40001 | 40014 | 42001 | 41001 if auth == Authenticates::WithAccessToken => {
            UpstreamError::TokenInvalid { errcode, message }
        }
        // Everything else — 40001/40125 (wrong secret), 40013, 40164 (IP whitelist), 40243
        // (frozen secret), 41002/41004, 61004, 895xx (admin confirmation) and codes we do not
        // know — needs a human: retrying fast cannot fix it and would burn quota.
        _ => UpstreamError::Config { errcode, message },
    }
}

/// WeChat's answer: a credential and its lifetime, or an errcode. Token endpoints omit `errcode`
/// on success; ticket and Work WeChat endpoints send `"errcode":0`.
#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    #[serde(default, alias = "ticket")]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The WeChat client. Cheap to clone (the HTTP pool is shared).
#[derive(Clone)]
pub struct Upstream {
    /// Pooled HTTP client with the configured timeout.
    http: reqwest::Client,
    /// `https://api.weixin.qq.com`, or the mock's address.
    api_base: String,
    /// `https://qyapi.weixin.qq.com`, or the mock's address.
    work_api_base: String,
    /// Where upstream latency and errcodes are counted.
    metrics: Arc<Metrics>,
}

impl Upstream {
    /// A client for the given base URLs, each call bounded by `timeout`.
    pub fn new(
        api_base: &str,
        work_api_base: &str,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Upstream, UpstreamError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("wxhub/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UpstreamError::transient(format!("cannot build HTTP client: {e}")))?;
        Ok(Upstream {
            http,
            api_base: api_base.trim_end_matches('/').to_string(),
            work_api_base: work_api_base.trim_end_matches('/').to_string(),
            metrics,
        })
    }

    /// `GET /cgi-bin/token`: a new access token; the previous one dies after WeChat's overlap.
    pub async fn get_token(&self, appid: &str, secret: &str) -> Result<Fetched, UpstreamError> {
        let request = self
            .http
            .get(format!("{}/cgi-bin/token", self.api_base))
            .query(&[
                ("grant_type", "client_credential"),
                ("appid", appid),
                ("secret", secret),
            ]);
        self.call("token", request, Authenticates::WithSecret).await
    }

    /// `POST /cgi-bin/stable_token`: in normal mode the same token while it is valid (with its
    /// remaining life); with `force_refresh` a new one at once (20 a day, one per 30 s).
    pub async fn get_stable_token(
        &self,
        appid: &str,
        secret: &str,
        force_refresh: bool,
    ) -> Result<Fetched, UpstreamError> {
        let body = serde_json::json!({
            "grant_type": "client_credential",
            "appid": appid,
            "secret": secret,
            "force_refresh": force_refresh,
        });
        let request = self
            .http
            .post(format!("{}/cgi-bin/stable_token", self.api_base))
            .json(&body);
        let endpoint = if force_refresh {
            "stable_token_force"
        } else {
            "stable_token"
        };
        self.call(endpoint, request, Authenticates::WithSecret)
            .await
    }

    /// `GET /cgi-bin/ticket/getticket`: a JS-SDK ticket of an official account.
    pub async fn get_ticket(
        &self,
        access_token: &str,
        kind: TicketKind,
    ) -> Result<Fetched, UpstreamError> {
        let request = self
            .http
            .get(format!("{}/cgi-bin/ticket/getticket", self.api_base))
            .query(&[("access_token", access_token), ("type", kind.as_str())]);
        self.call("getticket", request, Authenticates::WithAccessToken)
            .await
    }

    /// `GET /cgi-bin/gettoken` (Work WeChat): the token of one corp app, by its secret.
    pub async fn get_corp_token(
        &self,
        corpid: &str,
        corpsecret: &str,
    ) -> Result<Fetched, UpstreamError> {
        let request = self
            .http
            .get(format!("{}/cgi-bin/gettoken", self.work_api_base))
            .query(&[("corpid", corpid), ("corpsecret", corpsecret)]);
        self.call("gettoken", request, Authenticates::WithSecret)
            .await
    }

    /// Work WeChat JS-SDK tickets: the corp ticket (`get_jsapi_ticket`) or the app ticket
    /// (`ticket/get?type=agent_config`).
    pub async fn get_corp_ticket(
        &self,
        access_token: &str,
        kind: CorpTicketKind,
    ) -> Result<Fetched, UpstreamError> {
        let (endpoint, request) = match kind {
            CorpTicketKind::Jsapi => (
                "get_jsapi_ticket",
                self.http
                    .get(format!("{}/cgi-bin/get_jsapi_ticket", self.work_api_base))
                    .query(&[("access_token", access_token)]),
            ),
            CorpTicketKind::AgentConfig => (
                "ticket_get",
                self.http
                    .get(format!("{}/cgi-bin/ticket/get", self.work_api_base))
                    .query(&[("access_token", access_token), ("type", "agent_config")]),
            ),
        };
        self.call(endpoint, request, Authenticates::WithAccessToken)
            .await
    }

    /// Sends one request, measures it, and turns the answer into a credential or a classified
    /// error.
    async fn call(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
        auth: Authenticates,
    ) -> Result<Fetched, UpstreamError> {
        let started = Instant::now();
        let result = send(request, auth).await;
        self.metrics
            .observe_upstream(endpoint, started.elapsed(), result.as_ref().err());
        result
    }
}

async fn send(
    request: reqwest::RequestBuilder,
    auth: Authenticates,
) -> Result<Fetched, UpstreamError> {
    let mut response = request.send().await.map_err(transport_error)?;
    let status = response.status();
    if !status.is_success() {
        return Err(UpstreamError::transient(format!("HTTP status {status}")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(UpstreamError::transient(format!(
                "response body larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    parse_reply(&body, auth)
}

/// Turns a WeChat JSON body into a credential or a classified error.
fn parse_reply(body: &[u8], auth: Authenticates) -> Result<Fetched, UpstreamError> {
    let reply: Reply = serde_json::from_slice(body)
        .map_err(|e| UpstreamError::transient(format!("unreadable response body: {e}")))?;
    if reply.errcode != 0 {
        return Err(classify(reply.errcode, &reply.errmsg, auth));
    }
    match (reply.access_token, reply.expires_in) {
        (Some(value), Some(expires_in)) if !value.is_empty() && expires_in > 0 => Ok(Fetched {
            value,
            expires_in: Duration::from_secs(expires_in),
        }),
        _ => Err(UpstreamError::transient(
            "response lacks a credential or a positive expires_in",
        )),
    }
}

/// A transport failure, with the request URL (which may carry a secret) removed.
fn transport_error(e: reqwest::Error) -> UpstreamError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response interrupted"
    } else {
        "request failed"
    };
    let e = e.without_url();
    UpstreamError::transient(format!("{kind}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_success_has_no_errcode() {
        let fetched = parse_reply(
            br#"{"access_token":"13_abc","expires_in":7200}"#,
            Authenticates::WithSecret,
        )
        .unwrap();
        assert_eq!(fetched.value, "13_abc");
        assert_eq!(fetched.expires_in, Duration::from_secs(7200));
    }

    #[test]
    fn ticket_success_has_errcode_zero() {
        let fetched = parse_reply(
            br#"{"errcode":0,"errmsg":"ok","ticket":"tkt","expires_in":7200}"#,
            Authenticates::WithAccessToken,
        )
        .unwrap();
        assert_eq!(fetched.value, "tkt");
    }

    #[test]
    fn errcodes_are_classified_by_what_the_call_authenticates_with() {
        let class = |code: i64, auth| classify(code, "m", auth).class();
        assert_eq!(class(-1, Authenticates::WithSecret), "transient");
        assert_eq!(class(45011, Authenticates::WithSecret), "transient");
        assert_eq!(class(45009, Authenticates::WithSecret), "quota");
        assert_eq!(class(40125, Authenticates::WithSecret), "config");
        assert_eq!(class(40164, Authenticates::WithSecret), "config");
        assert_eq!(class(89503, Authenticates::WithSecret), "config");
        assert_eq!(class(40001, Authenticates::WithSecret), "config");
        assert_eq!(
            class(40001, Authenticates::WithAccessToken),
            "token_invalid"
        );
        assert_eq!(
            class(42001, Authenticates::WithAccessToken),
            "token_invalid"
        );
        assert_eq!(
            class(40014, Authenticates::WithAccessToken),
            "token_invalid"
        );
    }

    #[test]
    fn malformed_bodies_are_transient() {
        for body in [
            &b"<html>502</html>"[..],
            br#"{"expires_in":7200}"#,
            br#"{"access_token":"","expires_in":7200}"#,
            br#"{"access_token":"x","expires_in":0}"#,
        ] {
            let err = parse_reply(body, Authenticates::WithSecret).unwrap_err();
            assert_eq!(err.class(), "transient", "{body:?}");
        }
    }

    #[test]
    fn errors_keep_wechat_message_and_code() {
        let err = parse_reply(
            br#"{"errcode":40125,"errmsg":"invalid appsecret rid: 1-2-3"}"#,
            Authenticates::WithSecret,
        )
        .unwrap_err();
        assert_eq!(err.errcode(), Some(40125));
        assert!(err.to_string().contains("invalid appsecret"));
    }
}
