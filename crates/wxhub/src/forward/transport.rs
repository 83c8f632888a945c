//! The HTTP client the gateway talks to WeChat with.
//!
//! Normally hyper's pooled client, used directly: every call through the gateway pays for one
//! exchange with WeChat, and a general-purpose client's per-call work (parsing the URL it is
//! given, its redirect and retry layers, printing the URL back into a URI) cost more than the
//! exchange itself. When the environment names a proxy for WeChat (`HTTPS_PROXY`, `HTTP_PROXY`,
//! `ALL_PROXY`, less `NO_PROXY`), the gateway goes through reqwest instead, which honours those
//! variables exactly as the engine's client does.
//!
//! Either way: no redirect is ever followed, connections are pooled, a connection attempt is
//! bounded by `[wechat] timeout`, and so is the wait for each read (the answer's head, then every
//! piece of its body), never the whole exchange.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, Uri};
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::{Instant, Sleep};

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

/// The way to WeChat.
pub enum Transport {
    /// hyper's pooled client over rustls with the webpki roots (reqwest's own TLS stack).
    Direct {
        /// The pooled client.
        client: Client<HttpsConnector<HttpConnector>, Body>,
        /// The longest wait for any one read.
        read_timeout: Duration,
    },
    /// reqwest, for an environment that sends WeChat's traffic through a proxy.
    Proxied(reqwest::Client),
}

impl Transport {
    /// The transport for `bases` (WeChat's base URLs): direct unless the environment names a
    /// proxy for one of them.
    pub fn new(bases: &[&str], timeout: Duration) -> Result<Transport, reqwest::Error> {
        // Between two reads, not the whole exchange: a large download may take longer.
        let read_timeout = timeout.max(Duration::from_secs(1));
        let matcher = hyper_util::client::proxy::matcher::Matcher::from_system();
        let proxied = bases.iter().any(|base| {
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
            return Ok(Transport::Proxied(client));
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
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .build(https);
        Ok(Transport::Direct {
            client,
            read_timeout,
        })
    }

    /// Sends `request` with `payload` and returns WeChat's answer, its body still arriving.
    pub async fn send(
        &self,
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
                client,
                read_timeout,
            } => {
                let body = match payload {
                    Payload::Held(bytes) => Body::from(bytes),
                    Payload::Streamed(body) => body,
                };
                let exchange = client.request(request.map(|()| body));
                let answer = match tokio::time::timeout(*read_timeout, exchange).await {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(e)) if e.is_connect() => return Err("connection failed"),
                    Ok(Err(_)) => return Err("request failed"),
                    Err(_) => return Err(TIMED_OUT),
                };
                let read_timeout = *read_timeout;
                Ok(answer.map(|incoming| Body::new(Idle::new(incoming, read_timeout))))
            }
            Transport::Proxied(client) => {
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
    /// The body as hyper receives it.
    inner: Incoming,
    /// The longest wait for one piece.
    limit: Duration,
    /// The deadline of the wait in progress, kept to be re-armed rather than re-allocated.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` counts the wait in progress (not an earlier one).
    armed: bool,
}

impl Idle {
    /// `inner`, with at most `limit` between two pieces.
    fn new(inner: Incoming, limit: Duration) -> Idle {
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
