//! How a call reaches WeChat, behind a trait: over HTTPS in production ([`HttpTransport`]), and
//! in tests straight into an in-process WeChat stand-in, so that refresh cycles can run on
//! tokio's paused clock without a socket between the hub and "WeChat".
//!
//! The client ([`super::Upstream`]) builds each [`Call`] and reads WeChat's answer; the transport
//! only carries the call and returns the body, bounded, refusing redirects and error statuses.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value;

use super::UpstreamError;
use crate::telemetry::untrusted;

/// One call to WeChat: `GET` with a query, or `POST` with a JSON body (and maybe a query).
#[derive(Debug)]
pub struct Call {
    /// `https://api.weixin.qq.com/cgi-bin/token`: the base URL and the endpoint's path.
    pub url: String,
    /// The query's pairs, encoded by the transport. They may carry a secret: never logged.
    pub query: Vec<(&'static str, String)>,
    /// The JSON body of a `POST`; `None` for a `GET`.
    pub json: Option<Value>,
}

impl Call {
    /// A `GET` of `url`.
    pub fn get(url: String) -> Call {
        Call {
            url,
            query: Vec::new(),
            json: None,
        }
    }

    /// A `POST` of `json` to `url`.
    pub fn post(url: String, json: Value) -> Call {
        Call {
            url,
            query: Vec::new(),
            json: Some(json),
        }
    }

    /// Adds `pairs` to the query.
    pub fn query(mut self, pairs: &[(&'static str, &str)]) -> Call {
        self.query
            .extend(pairs.iter().map(|(k, v)| (*k, (*v).to_string())));
        self
    }
}

/// What a transport's answer resolves to: the body of a `2xx` answer, at most the bytes asked.
pub type Answer<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, UpstreamError>> + Send + 'a>>;

/// Carries calls to WeChat and brings back the answers' bodies.
pub trait Transport: Send + Sync + 'static {
    /// Sends `call` and reads the body of its answer, refusing one over `max_bytes`, a redirect
    /// or an error status with [`UpstreamError::Transient`].
    fn send(&self, call: Call, max_bytes: usize) -> Answer<'_>;
}

/// WeChat over HTTPS: a pooled client, each call bounded by the configured timeout.
pub struct HttpTransport {
    /// The pool, shared by every call.
    http: reqwest::Client,
}

impl HttpTransport {
    /// A client whose calls (connection included) end after `timeout`.
    pub fn new(timeout: Duration) -> Result<HttpTransport, UpstreamError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("wxhub/", env!("CARGO_PKG_VERSION")))
            // A redirect would re-send the request, AppSecret included, to another origin.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| UpstreamError::transient(format!("cannot build HTTP client: {e}")))?;
        Ok(HttpTransport { http })
    }
}

impl Transport for HttpTransport {
    fn send(&self, call: Call, max_bytes: usize) -> Answer<'_> {
        let mut request = match &call.json {
            Some(json) => self.http.post(&call.url).json(json),
            None => self.http.get(&call.url),
        };
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        Box::pin(async move {
            let mut response = request.send().await.map_err(transport_error)?;
            check_status(response.status())?;
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
                if body.len() + chunk.len() > max_bytes {
                    return Err(too_large(max_bytes));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        })
    }
}

/// Refuses a redirect (named by its status only: the target is the upstream's to choose, not
/// ours to log) and any other status but `2xx`.
pub fn check_status(status: reqwest::StatusCode) -> Result<(), UpstreamError> {
    if status.is_redirection() {
        return Err(UpstreamError::transient(format!(
            "HTTP status {status}: redirects are not followed"
        )));
    }
    if !status.is_success() {
        return Err(UpstreamError::transient(format!("HTTP status {status}")));
    }
    Ok(())
}

/// The error of an answer over `max_bytes`.
pub fn too_large(max_bytes: usize) -> UpstreamError {
    UpstreamError::transient(format!("response body larger than {max_bytes} bytes"))
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
    UpstreamError::transient(untrusted(&format!("{kind}: {e}")))
}
