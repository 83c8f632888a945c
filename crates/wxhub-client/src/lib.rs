//! A Rust client of [wxhub](https://github.com/): WeChat tokens and tickets from the hub, with
//!
//! - a local cache that honours each answer's `expires_in`;
//! - single-flight per credential: concurrent callers of one credential wait for one request;
//! - [`Client::watch`]: the hub's `GET /v1/watch` stream keeps the cache current (a refresh on any
//!   hub instance reaches the cache within milliseconds); if the stream breaks, the cache falls
//!   back to expiry, i.e. polling, and the stream is reopened;
//! - [`Client::report_invalid`]: tells the hub WeChat refused a token, and gets the replacement;
//! - [`Client::call`]: runs a WeChat call with the current token, and if WeChat says the token is
//!   dead, reports it and retries once with the new one.
//!
//! ```no_run
//! use wxhub_client::{Client, WechatError};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Client::new("http://127.0.0.1:8080", "orders-service-key")?;
//! let _watching = hub.watch(); // optional: keeps the cache current
//! let token = hub.access_token("wx1234567890abcdef").await?;
//! println!("token with {} characters", token.len());
//!
//! let http = reqwest::Client::new();
//! let ips = hub
//!     .call("wx1234567890abcdef", |token| {
//!         let http = http.clone();
//!         async move {
//!             let answer: serde_json::Value = http
//!                 .get("https://api.weixin.qq.com/cgi-bin/getcallbackip")
//!                 .query(&[("access_token", token)])
//!                 .send()
//!                 .await
//!                 .map_err(|e| WechatError::transport(e.to_string()))?
//!                 .json()
//!                 .await
//!                 .map_err(|e| WechatError::transport(e.to_string()))?;
//!             WechatError::check(answer)
//!         }
//!     })
//!     .await?;
//! println!("{ips}");
//! # Ok(())
//! # }
//! ```

mod cache;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use wxhub_types::{ErrorBody, InvalidateRequest, TokenAnswer};

use cache::Cache;
pub use watch::Watching;

/// What went wrong talking to the hub.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The hub answered with an error (`{"error":{"code","message"}}`).
    #[error("hub refused ({status}): {code}: {message}")]
    Hub {
        /// HTTP status.
        status: u16,
        /// The hub's error code.
        code: String,
        /// The hub's explanation.
        message: String,
    },
    /// The hub could not be reached or answered something unreadable.
    #[error("hub unreachable: {0}")]
    Transport(String),
    /// The base URL is not usable.
    #[error("invalid hub URL: {0}")]
    Url(String),
}

/// WeChat's answer to a business call, when it is an error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("WeChat error {errcode}: {errmsg}")]
pub struct WechatError {
    /// WeChat's `errcode` (`-2` for a transport failure of the call itself).
    pub errcode: i64,
    /// WeChat's `errmsg`.
    pub errmsg: String,
}

impl WechatError {
    /// The answers that mean the access token is dead (invalid, unknown, expired).
    pub const DEAD_TOKEN: [i64; 3] = [40001, 40014, 42001];

    /// `Ok(answer)` unless it carries a non-zero `errcode`.
    pub fn check(answer: Value) -> Result<Value, WechatError> {
        match answer.get("errcode").and_then(Value::as_i64) {
            Some(code) if code != 0 => Err(WechatError {
                errcode: code,
                errmsg: answer
                    .get("errmsg")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            }),
            _ => Ok(answer),
        }
    }

    /// A call that failed before WeChat answered.
    pub fn transport(message: String) -> WechatError {
        WechatError {
            errcode: -2,
            errmsg: message,
        }
    }
}

/// Errors of a call made through [`Client::call`]: whether the token is what failed.
pub trait DeadToken {
    /// Whether WeChat refused the call because its access token is dead.
    fn is_dead_token(&self) -> bool;
}

impl DeadToken for WechatError {
    fn is_dead_token(&self) -> bool {
        WechatError::DEAD_TOKEN.contains(&self.errcode)
    }
}

/// Why [`Client::call`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The token could not be had from the hub.
    #[error(transparent)]
    Hub(#[from] Error),
    /// The call failed (after one retry, if the token was dead).
    #[error("{0}")]
    Call(E),
}

/// A client of one hub, with one consumer key. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    key: String,
    cache: Cache,
}

impl Client {
    /// A client of the hub at `base_url` (e.g. `http://127.0.0.1:8080`) with the consumer's
    /// bearer key.
    pub fn new(base_url: &str, key: &str) -> Result<Client, Error> {
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(Error::Url("expected an http:// or https:// URL".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Transport(e.to_string()))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base: base_url.trim_end_matches('/').to_string(),
                key: key.to_string(),
                cache: Cache::default(),
            }),
        })
    }

    /// The access token of the official account or mini program `appid`.
    pub async fn access_token(&self, appid: &str) -> Result<String, Error> {
        self.read(
            wxhub_types::access_token_key(appid),
            format!("/v1/apps/{appid}/access_token"),
        )
        .await
    }

    /// A JS-SDK ticket (`jsapi`, `wx_card`) of `appid`.
    pub async fn ticket(&self, appid: &str, kind: &str) -> Result<String, Error> {
        self.read(
            wxhub_types::ticket_key(appid, kind),
            format!("/v1/apps/{appid}/tickets/{kind}"),
        )
        .await
    }

    /// The access token of the Work WeChat app (`corpid`, `agentid`).
    pub async fn corp_access_token(&self, corpid: &str, agentid: &str) -> Result<String, Error> {
        self.read(
            wxhub_types::corp_token_key(corpid, agentid),
            format!("/v1/corps/{corpid}/agents/{agentid}/access_token"),
        )
        .await
    }

    /// Tells the hub that WeChat refused `token` of `appid`; returns the token to use now (the
    /// hub replaces a dead one once, however many consumers report it).
    pub async fn report_invalid(&self, appid: &str, token: &str) -> Result<String, Error> {
        let key = wxhub_types::access_token_key(appid);
        self.inner.cache.forget_if(&key, token);
        let answer: TokenAnswer = self
            .request(
                self.inner
                    .http
                    .post(self.url(&format!("/v1/apps/{appid}/access_token/invalidate")))
                    .json(&InvalidateRequest {
                        access_token: token.to_string(),
                    }),
            )
            .await?;
        self.inner.cache.store(&key, &answer);
        Ok(answer.access_token)
    }

    /// Runs `call` with `appid`'s token; if it fails because the token is dead, reports the token
    /// and runs `call` once more with the replacement.
    pub async fn call<T, E, F, Fut>(&self, appid: &str, mut call: F) -> Result<T, CallError<E>>
    where
        E: DeadToken,
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let token = self.access_token(appid).await?;
        match call(token.clone()).await {
            Err(e) if e.is_dead_token() => {
                let fresh = self.report_invalid(appid, &token).await?;
                call(fresh).await.map_err(CallError::Call)
            }
            other => other.map_err(CallError::Call),
        }
    }

    /// Opens the watch stream in a background task that keeps the cache current until the
    /// returned handle is dropped.
    pub fn watch(&self) -> Watching {
        watch::spawn(self.clone())
    }

    /// A cached value, or one read from the hub by one caller while the others wait.
    async fn read(&self, key: String, path: String) -> Result<String, Error> {
        if let Some(value) = self.inner.cache.get(&key) {
            return Ok(value);
        }
        let flight = self.inner.cache.flight(&key);
        let _turn = flight.lock().await;
        if let Some(value) = self.inner.cache.get(&key) {
            return Ok(value);
        }
        let answer: TokenAnswer = self.request(self.inner.http.get(self.url(&path))).await?;
        self.inner.cache.store(&key, &answer);
        Ok(answer.access_token)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.base)
    }

    async fn request<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, Error> {
        let response = request
            .bearer_auth(&self.inner.key)
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .map_err(|e| Error::Transport(e.without_url().to_string()))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Error::Transport(e.without_url().to_string()))?;
        if !status.is_success() {
            let body: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
            return Err(match body {
                Some(body) => Error::Hub {
                    status: status.as_u16(),
                    code: body.error.code,
                    message: body.error.message,
                },
                None => Error::Hub {
                    status: status.as_u16(),
                    code: "http".into(),
                    message: format!("HTTP {status}"),
                },
            });
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Transport(format!("unreadable answer: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_dead_token_codes_are_dead() {
        let dead = WechatError::check(serde_json::json!({"errcode": 42001, "errmsg": "x"}));
        assert!(dead.unwrap_err().is_dead_token());
        let busy = WechatError::check(serde_json::json!({"errcode": -1, "errmsg": "x"}));
        assert!(!busy.unwrap_err().is_dead_token());
        assert!(WechatError::check(serde_json::json!({"ip_list": []})).is_ok());
        assert!(WechatError::check(serde_json::json!({"errcode": 0})).is_ok());
    }

    #[test]
    fn refuses_a_base_url_that_is_not_http() {
        assert!(Client::new("127.0.0.1:8080", "k").is_err());
    }
}
