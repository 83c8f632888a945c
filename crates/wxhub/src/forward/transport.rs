//! The HTTP client the gateway talks to WeChat with.
//!
//! Normally a pool of HTTP/1 connections per WeChat origin ([`super::pool`]), over hyper's
//! connection API: every call through the gateway pays for one exchange with WeChat, and a
//! general-purpose client's per-call work (parsing the URL it is given, its redirect and retry
//! layers, a task per connection and channels between it and the call) cost more than the
//! exchange itself. When the environment names a proxy for WeChat (`HTTPS_PROXY`, `HTTP_PROXY`,
//! `ALL_PROXY`, less `NO_PROXY`), the gateway goes through reqwest instead, which honours those
//! variables exactly as the engine's client does.
//!
//! Either way: no redirect is ever followed, connections are pooled, a connection attempt is
//! bounded by `[wechat] timeout`, and so is the wait for each read (the answer's head, then every
//! piece of its body), never the whole exchange.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::uri::{Authority, PathAndQuery, Scheme};
use axum::http::{header, HeaderValue, Request, Response, Uri};
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::{Instant, Sleep};

use super::pool::{Pool, PooledBody};
use super::reply::Host;

/// Any error a body may carry on.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What goes upstream as the request body.
pub enum Payload {
    /// Held in memory (a call that may be replayed): sent with its exact length.
    Held(Bytes),
    /// The client's body, streamed as it arrives (its `Content-Length`, if any, is kept).
    Streamed(Body),
}

/// Why WeChat's answer did not arrive, named without the URL (it may carry a token or secret).
pub type Failure = &'static str;

/// The failure named for a read that waited longer than the read timeout.
const TIMED_OUT: Failure = "timed out";

/// How long an idle connection to WeChat is kept for reuse (reqwest's default).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A WeChat base URL, split once so that each call only adds its path and query.
pub struct Base {
    /// `http` or `https`.
    scheme: Scheme,
    /// Host and port.
    authority: Authority,
    /// A path the base URL carries before WeChat's paths (usually empty).
    prefix: String,
}

impl Base {
    /// `base` split, or `None` if it is not an absolute `http(s)` URL (every call then fails as
    /// WeChat unreachable, and names nothing).
    pub fn parse(base: &str) -> Option<Base> {
        let parts = base.parse::<Uri>().ok()?.into_parts();
        Some(Base {
            scheme: parts.scheme?,
            authority: parts.authority?,
            prefix: parts
                .path_and_query
                .map(|pq| pq.path().to_string())
                .filter(|p| p != "/" || base.ends_with('/'))
                .unwrap_or_default(),
        })
    }

    /// `target` (a path and query) on this base, as the request line's target: `target` itself
    /// unless the base has a path of its own.
    fn target(&self, target: &PathAndQuery) -> Option<PathAndQuery> {
        if self.prefix.is_empty() {
            return Some(target.clone());
        }
        let mut joined = String::with_capacity(self.prefix.len() + target.as_str().len());
        joined.push_str(&self.prefix);
        joined.push_str(target.as_str());
        PathAndQuery::from_maybe_shared(joined).ok()
    }

    /// The URL of `target` on this base.
    fn uri(&self, target: &PathAndQuery) -> Option<Uri> {
        let mut parts = axum::http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(self.target(target)?);
        Uri::from_parts(parts).ok()
    }

    /// The origin alone (scheme and authority).
    fn origin(&self) -> Option<Uri> {
        self.uri(&PathAndQuery::from_static("/"))
    }
}

/// One WeChat host as the direct transport reaches it.
pub struct Upstream {
    /// Its base URL.
    base: Base,
    /// Its connections.
    pool: Arc<Pool>,
}

/// The way to WeChat.
pub enum Transport {
    /// A pool of connections per WeChat host, over rustls with the webpki roots (reqwest's own TLS
    /// stack).
    Direct {
        /// `[wechat] api_base`, if it is a usable URL.
        official: Option<Upstream>,
        /// `[wechat] work_api_base`, if it is a usable URL.
        work: Option<Upstream>,
        /// The longest wait for any one read.
        read_timeout: Duration,
    },
    /// reqwest, for an environment that sends WeChat's traffic through a proxy.
    Proxied {
        /// The client.
        client: reqwest::Client,
        /// `[wechat] api_base`, if it is a usable URL.
        official: Option<Base>,
        /// `[wechat] work_api_base`, if it is a usable URL.
        work: Option<Base>,
    },
}

impl Transport {
    /// The transport to WeChat's two base URLs: direct unless the environment names a proxy for
    /// one of them.
    pub fn new(
        api_base: &str,
        work_api_base: &str,
        timeout: Duration,
    ) -> Result<Transport, reqwest::Error> {
        // Between two reads, not the whole exchange: a large download may take longer.
        let read_timeout = timeout.max(Duration::from_secs(1));
        let matcher = hyper_util::client::proxy::matcher::Matcher::from_system();
        let proxied = [api_base, work_api_base].iter().any(|base| {
            base.parse::<Uri>()
                .is_ok_and(|uri| matcher.intercept(&uri).is_some())
        });
        if proxied {
            tracing::info!("the gateway reaches WeChat through the proxy the environment names");
            let client = reqwest::Client::builder()
                .connect_timeout(timeout)
                .read_timeout(read_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()?;
            return Ok(Transport::Proxied {
                client,
                official: Base::parse(api_base),
                work: Base::parse(work_api_base),
            });
        }
        // As reqwest configures its connector: no Nagle delay, keep-alive probes after 15 s.
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(15)));
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let upstream = |base: &str| {
            let base = Base::parse(base)?;
            let pool = Pool::new(https.clone(), &base.origin()?, POOL_IDLE_TIMEOUT)?;
            Some(Upstream {
                base,
                pool: Arc::new(pool),
            })
        };
        Ok(Transport::Direct {
            official: upstream(api_base),
            work: upstream(work_api_base),
            read_timeout,
        })
    }

    /// Sends `request` (method and headers; its URI is set here) for `target` (path and query) on
    /// `host` with `payload`, and returns WeChat's answer, its body still arriving.
    pub async fn send(
        &self,
        host: Host,
        target: &PathAndQuery,
        mut request: Request<()>,
        payload: Payload,
    ) -> Result<Response<Body>, Failure> {
        // reqwest's default, kept so that WeChat sees the same request either way.
        request
            .headers_mut()
            .entry(header::ACCEPT)
            .or_insert(HeaderValue::from_static("*/*"));
        match self {
            Transport::Direct {
                official,
                work,
                read_timeout,
            } => {
                let upstream = match host {
                    Host::Official => official,
                    Host::Work => work,
                };
                let upstream = upstream.as_ref().ok_or("request failed")?;
                let target = upstream.base.target(target).ok_or("request failed")?;
                *request.uri_mut() = Uri::from(target);
                let body = match payload {
                    Payload::Held(bytes) => Body::from(bytes),
                    Payload::Streamed(body) => body,
                };
                let exchange = upstream.pool.send(request.map(|()| body));
                let answer = match tokio::time::timeout(*read_timeout, exchange).await {
                    Ok(answer) => answer?,
                    Err(_) => return Err(TIMED_OUT),
                };
                let read_timeout = *read_timeout;
                Ok(answer.map(|body| Body::new(Idle::new(body, read_timeout))))
            }
            Transport::Proxied {
                client,
                official,
                work,
            } => {
                let base = match host {
                    Host::Official => official,
                    Host::Work => work,
                };
                *request.uri_mut() = base
                    .as_ref()
                    .and_then(|base| base.uri(target))
                    .ok_or("request failed")?;
                let body = match payload {
                    Payload::Held(bytes) => reqwest::Body::from(bytes),
                    Payload::Streamed(body) => reqwest::Body::wrap_stream(body.into_data_stream()),
                };
                let request = reqwest::Request::try_from(request.map(|()| body))
                    .map_err(|_| "request failed")?;
                let answer = client.execute(request).await.map_err(|e| describe(&e))?;
                let answer: Response<reqwest::Body> = answer.into();
                Ok(answer.map(Body::new))
            }
        }
    }
}

/// What went wrong in reqwest, without the URL.
fn describe(error: &reqwest::Error) -> Failure {
    if error.is_timeout() {
        TIMED_OUT
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() {
        "body failed"
    } else {
        "request failed"
    }
}

/// WeChat's answer body, failed once a read waits longer than the read timeout. The timer is armed
/// only when a read has to wait: a small answer that came with its head costs none.
struct Idle {
    /// The body as it arrives on its connection.
    inner: PooledBody,
    /// The longest wait for one piece.
    limit: Duration,
    /// The deadline of the wait in progress, kept to be re-armed rather than re-allocated.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` counts the wait in progress (not an earlier one).
    armed: bool,
}

impl Idle {
    /// `inner`, with at most `limit` between two pieces.
    fn new(inner: PooledBody, limit: Duration) -> Idle {
        Idle {
            inner,
            limit,
            timer: None,
            armed: false,
        }
    }
}

/// The error of a body read that waited too long.
#[derive(Debug, thiserror::Error)]
#[error("WeChat's answer stalled")]
struct Stalled;

impl hyper::body::Body for Idle {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame.map(|r| r.map_err(BoxError::from)));
        }
        let limit = this.limit;
        let timer = match &mut this.timer {
            Some(timer) => {
                if !this.armed {
                    timer.as_mut().reset(Instant::now() + limit);
                }
                timer
            }
            None => this.timer.insert(Box::pin(tokio::time::sleep(limit))),
        };
        this.armed = true;
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Stalled.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_wechat_urls_as_the_base_and_the_client_spell_them() {
        let url = |base: &str, path: &str, query: Option<&str>| {
            let target = match query {
                Some(query) => format!("{path}?{query}"),
                None => path.to_string(),
            };
            let target = PathAndQuery::from_maybe_shared(target).unwrap();
            Base::parse(base)
                .and_then(|b| b.uri(&target))
                .map(|u| u.to_string())
        };
        assert_eq!(
            url(
                "https://api.weixin.qq.com",
                "/cgi-bin/x",
                Some("a=%7E1&b=c")
            )
            .as_deref(),
            Some("https://api.weixin.qq.com/cgi-bin/x?a=%7E1&b=c")
        );
        // (An empty query loses its `?` before it gets here: see `Outgoing`.)
        assert_eq!(
            url("http://127.0.0.1:9/prefix", "/cgi-bin/x", None).as_deref(),
            Some("http://127.0.0.1:9/prefix/cgi-bin/x")
        );
        // A trailing slash stays, as it did when the URL was the two strings joined.
        assert_eq!(
            url("http://127.0.0.1:9/", "/cgi-bin/x", None).as_deref(),
            Some("http://127.0.0.1:9//cgi-bin/x")
        );
        assert!(Base::parse("not a url").is_none());
        assert!(Base::parse("/relative").is_none());
    }

    #[test]
    fn sends_the_path_and_query_alone_to_a_pooled_connection() {
        let target = |base: &str, target: &'static str| {
            Base::parse(base)
                .and_then(|b| b.target(&PathAndQuery::from_static(target)))
                .map(|t| t.to_string())
        };
        assert_eq!(
            target("https://api.weixin.qq.com", "/cgi-bin/x?a=1").as_deref(),
            Some("/cgi-bin/x?a=1")
        );
        assert_eq!(
            target("http://127.0.0.1:9/prefix", "/cgi-bin/x").as_deref(),
            Some("/prefix/cgi-bin/x")
        );
    }
}
