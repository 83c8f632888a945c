//! WeChat's HTTP endpoints: one function per endpoint, typed results, classified errors.
//!
//! Every failure is sorted into one of the four classes of docs/wechat.md#errcode-classes ([`UpstreamError`]), because
//! the class alone decides what the engine does next (retry soon, back off for minutes, ask an
//! operator, or refresh the token that was used). Base URLs come from the configuration so tests
//! point the client at `wechat-mock`.
//!
//! No secret ever reaches an error message: request URLs (which carry `secret=` for
//! `cgi-bin/token`) are stripped from transport errors, and WeChat's own `errmsg` never echoes a
//! secret.
//!
//! An answer is not trusted because it came back: redirects are not followed (a redirect would
//! re-send the AppSecret to whatever origin it names), a lifetime beyond one day is refused as
//! malformed, and every piece of upstream text kept in an error is escaped
//! ([`crate::telemetry::untrusted`]) so it cannot forge a log line.

mod component;
mod suite;
mod transport;

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::metrics::Metrics;
use crate::telemetry::untrusted;
use crate::token::{CorpTicketKind, TicketKind};
use std::sync::Arc;

pub use component::{Authorization, AuthorizerPage, AuthorizerTokens, ListedAuthorizer};
pub use suite::Installation;
pub use transport::{check_status, too_large, Answer, Call, HttpTransport, Transport};

/// Largest response body accepted from WeChat; real token responses are well under 1 KiB.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The longest `expires_in` believed, in seconds. WeChat's tokens and tickets live two hours; an
/// answer claiming more than a day is broken or hostile, and trusting it would keep a dead token
/// (and no refresh) for as long as it says.
const MAX_EXPIRES_IN_SECS: i64 = 86_400;

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

    pub fn transient(message: impl Into<String>) -> Self {
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

/// Sorts a WeChat errcode into its class (docs/wechat.md#errcode-classes).
fn classify(errcode: i64, errmsg: &str, auth: Authenticates) -> UpstreamError {
    let message = untrusted(errmsg);
    match errcode {
        -1 | 45011 | 45033 => UpstreamError::Transient {
            errcode: Some(errcode),
            message,
        },
        45009 => UpstreamError::Quota { errcode, message },
        // 40082 and 42009: Work WeChat's invalid and expired suite token.
        40001 | 40014 | 42001 | 41001 | 40082 | 42009 if auth == Authenticates::WithAccessToken => {
            UpstreamError::TokenInvalid { errcode, message }
        }
        // Everything else — 40001/40125 (wrong secret), 40013, 40164 (IP whitelist), 40243
        // (frozen secret), 41002/41004, 61004, 895xx (admin confirmation) and codes we do not
        // know — needs a human: retrying fast cannot fix it and would burn quota.
        _ => UpstreamError::Config { errcode, message },
    }
}

/// WeChat's JSON answer, or the classified error it carries.
fn read_json(body: &[u8], auth: Authenticates) -> Result<serde_json::Value, UpstreamError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| UpstreamError::transient(format!("unreadable response body: {e}")))?;
    let errcode = value["errcode"].as_i64().unwrap_or(0);
    if errcode != 0 {
        let errmsg = value["errmsg"].as_str().unwrap_or_default();
        return Err(classify(errcode, errmsg, auth));
    }
    Ok(value)
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
    /// Signed, so that a negative lifetime is refused with a message saying so rather than as
    /// an unreadable body.
    #[serde(default)]
    expires_in: Option<i64>,
}

/// The WeChat client. Cheap to clone (the transport is shared).
#[derive(Clone)]
pub struct Upstream {
    /// What carries the calls: HTTPS in production, an in-process WeChat in engine tests.
    transport: Arc<dyn Transport>,
    /// `https://api.weixin.qq.com`, or the mock's address.
    api_base: String,
    /// `https://qyapi.weixin.qq.com`, or the mock's address.
    work_api_base: String,
    /// Where upstream latency and errcodes are counted.
    metrics: Arc<Metrics>,
    /// One permit per call in flight, `[refresh] concurrency` of them: however many refresh jobs
    /// run, and whatever else asks (recovery's list pages, verifications, pushes asked for),
    /// WeChat never sees more calls at once from this instance.
    calls: Arc<Semaphore>,
}

impl Upstream {
    /// A client for the given base URLs, each call bounded by `timeout`, at most `concurrency`
    /// calls at once.
    pub fn new(
        api_base: &str,
        work_api_base: &str,
        timeout: Duration,
        concurrency: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Upstream, UpstreamError> {
        let transport = Arc::new(HttpTransport::new(timeout)?);
        Ok(Upstream::with_transport(
            transport,
            api_base,
            work_api_base,
            concurrency,
            metrics,
        ))
    }

    /// A client whose calls `transport` carries: for tests that run WeChat in process.
    pub fn with_transport(
        transport: Arc<dyn Transport>,
        api_base: &str,
        work_api_base: &str,
        concurrency: usize,
        metrics: Arc<Metrics>,
    ) -> Upstream {
        Upstream {
            transport,
            api_base: api_base.trim_end_matches('/').to_string(),
            work_api_base: work_api_base.trim_end_matches('/').to_string(),
            metrics,
            calls: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// Waits for a free call slot; held for the whole exchange (response body included).
    async fn call_slot(&self) -> Result<SemaphorePermit<'_>, UpstreamError> {
        self.calls
            .acquire()
            .await
            .map_err(|_| UpstreamError::transient("the WeChat client is shut down"))
    }

    /// `GET /cgi-bin/token`: a new access token; the previous one dies after WeChat's overlap.
    pub async fn get_token(&self, appid: &str, secret: &str) -> Result<Fetched, UpstreamError> {
        let request = Call::get(format!("{}/cgi-bin/token", self.api_base)).query(&[
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
        let request = Call::post(format!("{}/cgi-bin/stable_token", self.api_base), body);
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
        let request = Call::get(format!("{}/cgi-bin/ticket/getticket", self.api_base))
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
        let request = Call::get(format!("{}/cgi-bin/gettoken", self.work_api_base))
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
                Call::get(format!("{}/cgi-bin/get_jsapi_ticket", self.work_api_base))
                    .query(&[("access_token", access_token)]),
            ),
            CorpTicketKind::AgentConfig => (
                "ticket_get",
                Call::get(format!("{}/cgi-bin/ticket/get", self.work_api_base))
                    .query(&[("access_token", access_token), ("type", "agent_config")]),
            ),
        };
        self.call(endpoint, request, Authenticates::WithAccessToken)
            .await
    }

    /// `GET /cgi-bin/get_api_domain_ip` authenticated with `access_token` (on the Work WeChat
    /// host when `work`): the cheapest call that tells whether WeChat accepts a token. `Ok` when
    /// it does; [`UpstreamError::TokenInvalid`] when it is dead.
    pub async fn check_token(&self, work: bool, access_token: &str) -> Result<(), UpstreamError> {
        let base = if work {
            &self.work_api_base
        } else {
            &self.api_base
        };
        let request = Call::get(format!("{base}/cgi-bin/get_api_domain_ip"))
            .query(&[("access_token", access_token)]);
        let _slot = self.call_slot().await?;
        let started = Instant::now();
        let result = match self.transport.send(request, MAX_RESPONSE_BYTES).await {
            Ok(body) => parse_status(&body),
            Err(e) => Err(e),
        };
        self.metrics.observe_upstream(
            "get_api_domain_ip",
            started.elapsed(),
            result.as_ref().err().and_then(UpstreamError::errcode),
        );
        result
    }

    /// Sends `request` (an answer of up to `max_bytes`), measures it as `endpoint`, and reads
    /// WeChat's JSON answer: the value once it carries no errcode, else the classified error.
    async fn send_json(
        &self,
        endpoint: &'static str,
        request: Call,
        auth: Authenticates,
        max_bytes: usize,
    ) -> Result<serde_json::Value, UpstreamError> {
        let _slot = self.call_slot().await?;
        let started = Instant::now();
        let result = match self.transport.send(request, max_bytes).await {
            Ok(body) => read_json(&body, auth),
            Err(e) => Err(e),
        };
        self.metrics.observe_upstream(
            endpoint,
            started.elapsed(),
            result.as_ref().err().and_then(UpstreamError::errcode),
        );
        result
    }

    /// Sends one request, measures it, and turns the answer into a credential or a classified
    /// error.
    async fn call(
        &self,
        endpoint: &'static str,
        request: Call,
        auth: Authenticates,
    ) -> Result<Fetched, UpstreamError> {
        let _slot = self.call_slot().await?;
        let started = Instant::now();
        let result = match self.transport.send(request, MAX_RESPONSE_BYTES).await {
            Ok(body) => parse_reply(&body, auth),
            Err(e) => Err(e),
        };
        self.metrics.observe_upstream(
            endpoint,
            started.elapsed(),
            result.as_ref().err().and_then(UpstreamError::errcode),
        );
        result
    }
}

/// Turns the answer of a call that carries an access token and returns no credential into `Ok`
/// or a classified error.
fn parse_status(body: &[u8]) -> Result<(), UpstreamError> {
    let reply: Reply = serde_json::from_slice(body).map_err(|e| {
        UpstreamError::transient(untrusted(&format!("unreadable response body: {e}")))
    })?;
    match reply.errcode {
        0 => Ok(()),
        errcode => Err(classify(
            errcode,
            &reply.errmsg,
            Authenticates::WithAccessToken,
        )),
    }
}

/// Turns a WeChat JSON body into a credential or a classified error.
fn parse_reply(body: &[u8], auth: Authenticates) -> Result<Fetched, UpstreamError> {
    let reply: Reply = serde_json::from_slice(body).map_err(|e| {
        UpstreamError::transient(untrusted(&format!("unreadable response body: {e}")))
    })?;
    if reply.errcode != 0 {
        return Err(classify(reply.errcode, &reply.errmsg, auth));
    }
    match (reply.access_token, reply.expires_in) {
        (Some(_), Some(expires_in)) if expires_in > MAX_EXPIRES_IN_SECS => {
            Err(UpstreamError::transient(format!(
                "malformed answer: expires_in {expires_in} s is more than one day \
                 ({MAX_EXPIRES_IN_SECS} s); the credential is not trusted"
            )))
        }
        (Some(_), Some(expires_in)) if expires_in < 0 => Err(UpstreamError::transient(format!(
            "malformed answer: expires_in {expires_in} s is negative"
        ))),
        // Zero is what WeChat says of a re-sent value in its last second: the engine asks again
        // at its expiry (a *new* value with no life is refused there).
        (Some(value), Some(expires_in)) if !value.is_empty() && expires_in >= 0 => Ok(Fetched {
            value,
            expires_in: Duration::from_secs(expires_in.unsigned_abs()),
        }),
        _ => Err(UpstreamError::transient(
            "response lacks a credential or its expires_in",
        )),
    }
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
            br#"{"access_token":"x"}"#,
        ] {
            let err = parse_reply(body, Authenticates::WithSecret).unwrap_err();
            assert_eq!(err.class(), "transient", "{body:?}");
        }
    }

    #[test]
    fn absurd_lifetimes_are_refused_as_malformed() {
        for (body, says) in [
            (
                &br#"{"access_token":"x","expires_in":1000000000000}"#[..],
                "expires_in 1000000000000 s is more than one day",
            ),
            (
                br#"{"access_token":"x","expires_in":86401}"#,
                "more than one day",
            ),
            (br#"{"access_token":"x","expires_in":-5}"#, "negative"),
            (
                br#"{"errcode":0,"ticket":"t","expires_in":-7200}"#,
                "negative",
            ),
        ] {
            let err = parse_reply(body, Authenticates::WithSecret).unwrap_err();
            assert_eq!(err.class(), "transient", "{body:?}");
            assert!(err.to_string().contains(says), "{err}");
            assert!(err.to_string().contains("malformed"), "{err}");
        }
        // A day is believed; zero is "no life left", for the engine to judge.
        let day = parse_reply(
            br#"{"access_token":"x","expires_in":86400}"#,
            Authenticates::WithSecret,
        )
        .unwrap();
        assert_eq!(day.expires_in, Duration::from_secs(86_400));
        let zero = parse_reply(
            br#"{"access_token":"x","expires_in":0}"#,
            Authenticates::WithSecret,
        )
        .unwrap();
        assert_eq!(zero.expires_in, Duration::ZERO);
    }

    #[test]
    fn upstream_text_cannot_forge_a_log_line() {
        let body = serde_json::json!({
            "errcode": 40125,
            "errmsg": "invalid appsecret\n2026-12-01T00:00:00Z  INFO wxhub: forged\u{1b}[31m",
        })
        .to_string();
        let err = parse_reply(body.as_bytes(), Authenticates::WithSecret).unwrap_err();
        let shown = err.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(shown.contains("invalid appsecret\\u{a}2026"), "{shown}");
        assert!(shown.contains("\\u{1b}[31m"), "{shown}");
        // A body that is not JSON is quoted in the error only escaped.
        let err = parse_reply(b"\"\n\x1b[2J", Authenticates::WithSecret).unwrap_err();
        assert!(!err.to_string().chars().any(char::is_control), "{err}");
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
