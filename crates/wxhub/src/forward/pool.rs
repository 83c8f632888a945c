//! Connections to one WeChat origin, kept open between calls and driven by the call using them.
//!
//! hyper's pooled client runs each connection as a task of its own: a call hands its request to
//! that task over a channel, the task writes it, reads the answer and hands the head back over a
//! second channel and the body over a third, and after each call a further task waits for the
//! connection to be free again. Every hand-over wakes another task, often on the other core. Here
//! a call takes an idle connection and its own task polls both the request and the connection;
//! the answer's body carries the connection and puts it back once read to its end. One task per
//! call, as a proxy's event loop does it.
//!
//! Behaviour kept from hyper's pool: idle connections are reused most recent first and closed
//! after `idle_timeout`; a request that a reused connection closed before writing any of it is
//! sent again on another (the server may close an idle connection at any time); `Host` names the
//! origin.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, Uri};
use bytes::Bytes;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower_service::Service;

use super::transport::Failure;

/// The stream a connection runs on: TCP, with TLS for an `https` origin.
type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// Idle connections to one origin, and what it takes to open more.
pub struct Pool {
    /// Opens a connection (TCP, then TLS for `https`), with `[wechat] timeout` on the TCP part.
    connector: HttpsConnector<HttpConnector>,
    /// The origin connected to: scheme and authority.
    origin: Uri,
    /// The `Host` of every request: the authority, less a default port.
    host: HeaderValue,
    /// Connections waiting for a call, the most recently used last.
    idle: Mutex<VecDeque<Idle>>,
    /// How long a connection may wait for a call before it is closed instead of reused.
    idle_timeout: Duration,
}

/// Most idle connections kept per origin: a burst of concurrent calls opens as many connections,
/// and once it is over only this many wait for the next calls; the rest are closed at once
/// instead of holding a descriptor each until their idle timeout.
const MAX_IDLE: usize = 256;

/// A connection waiting in the pool, and since when.
struct Idle {
    /// The connection, boxed: it is large (the connection's state and buffers) and moves from the
    /// pool to a call, into the answer's body and back on every call.
    conn: Box<Conn>,
    /// When it went back to the pool.
    since: Instant,
}

/// Both halves of one HTTP/1 connection.
struct Conn {
    /// Where requests are handed in.
    sender: SendRequest<Body>,
    /// What reads and writes the socket when polled; `None` once it has ended (the connection
    /// closed), after which the connection is never reused.
    driver: Option<Connection<Io, Body>>,
}

impl Conn {
    /// Polls the connection once: reads and writes what the socket allows.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = &mut self.driver {
            if Pin::new(driver).poll(cx).is_ready() {
                // Ended: dropping it hands back any request it had not started.
                self.driver = None;
            }
        }
    }

    /// Whether the connection takes a request now (`Pending`: not yet).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        self.drive(cx);
        if self.driver.is_none() {
            return Poll::Ready(false);
        }
        self.sender.poll_ready(cx).map(|ready| ready.is_ok())
    }

    /// Sends `request` and waits for the answer's head, driving the connection meanwhile.
    async fn exchange(
        &mut self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Body>>> {
        let mut answer = pin!(self.sender.try_send_request(request));
        poll_fn(|cx| {
            if let Poll::Ready(answer) = answer.as_mut().poll(cx) {
                return Poll::Ready(answer);
            }
            self.drive(cx);
            answer.as_mut().poll(cx)
        })
        .await
    }

    /// Whether the connection may carry another call once its answer has been read.
    fn reusable(&self) -> bool {
        self.driver.is_some() && !self.sender.is_closed()
    }
}

impl Pool {
    /// A pool for `origin` (scheme and authority; anything else in it is ignored).
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        origin: &Uri,
        idle_timeout: Duration,
    ) -> Option<Pool> {
        let authority = origin.authority()?;
        let default_port = match origin.scheme_str() {
            Some("https") => 443,
            _ => 80,
        };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => authority.as_str().to_string(),
            _ => authority.host().to_string(),
        };
        let mut parts = axum::http::uri::Parts::default();
        parts.scheme = origin.scheme().cloned();
        parts.authority = Some(authority.clone());
        parts.path_and_query = Some(axum::http::uri::PathAndQuery::from_static("/"));
        Some(Pool {
            connector,
            origin: Uri::from_parts(parts).ok()?,
            host: HeaderValue::from_str(&host).ok()?,
            idle: Mutex::new(VecDeque::new()),
            idle_timeout,
        })
    }

    /// Sends `request` (its URI in origin form, `/path?query`) and returns the answer, its body
    /// still arriving on the connection it carries.
    pub async fn send(
        self: &Arc<Pool>,
        mut request: Request<Body>,
    ) -> Result<Response<PooledBody>, Failure> {
        request
            .headers_mut()
            .insert(header::HOST, self.host.clone());
        loop {
            let (mut conn, reused) = match self.checkout().await {
                Some(conn) => (conn, true),
                None => (self.connect().await?, false),
            };
            let answer = match conn.exchange(request).await {
                Ok(answer) => answer,
                Err(mut e) => match e.take_message() {
                    // Not a byte of it was written: a reused connection the server had closed.
                    Some(unsent) if reused => {
                        request = unsent;
                        continue;
                    }
                    _ => return Err("request failed"),
                },
            };
            let (parts, incoming) = answer.into_parts();
            let conn = if incoming.is_end_stream() {
                self.put(conn);
                None
            } else {
                Some(conn)
            };
            let body = PooledBody {
                incoming,
                conn,
                pool: self.clone(),
            };
            return Ok(Response::from_parts(parts, body));
        }
    }

    /// An idle connection that takes a request now, if there is one; expired and closed ones are
    /// dropped on the way.
    async fn checkout(&self) -> Option<Box<Conn>> {
        loop {
            let (candidate, expired) = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let live = idle
                    .iter()
                    .position(|i| now.duration_since(i.since) < self.idle_timeout)
                    .unwrap_or(idle.len());
                let expired: Vec<Idle> = idle.drain(..live).collect();
                (idle.pop_back(), expired)
            };
            // Closed outside the lock.
            drop(expired);
            let mut conn = candidate?.conn;
            let ready = poll_fn(|cx| Poll::Ready(conn.poll_ready(cx))).await;
            if ready == Poll::Ready(true) {
                return Some(conn);
            }
        }
    }

    /// A new connection, ready for its first request.
    async fn connect(&self) -> Result<Box<Conn>, Failure> {
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|_| "connection failed")?;
        let io = connector
            .call(self.origin.clone())
            .await
            .map_err(|_| "connection failed")?;
        let (sender, driver) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|_| "connection failed")?;
        let mut conn = Box::new(Conn {
            sender,
            driver: Some(driver),
        });
        if poll_fn(|cx| conn.poll_ready(cx)).await {
            Ok(conn)
        } else {
            Err("connection failed")
        }
    }

    /// Puts a connection whose last answer was read to its end back for the next call.
    fn put(&self, conn: Box<Conn>) {
        if !conn.reusable() {
            return;
        }
        let idle = Idle {
            conn,
            since: Instant::now(),
        };
        let surplus = {
            let mut pool = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            pool.push_back(idle);
            // The least recently used goes: the pool hands out the most recent first.
            if pool.len() > MAX_IDLE {
                pool.pop_front()
            } else {
                None
            }
        };
        // Closed outside the lock.
        drop(surplus);
    }
}

/// An answer's body as it arrives, with the connection it arrives on: polling the body drives the
/// connection, and the connection goes back to the pool once the body has ended (or is closed
/// with the body if it is dropped before: the rest of the answer would still be on it).
pub struct PooledBody {
    /// The body as hyper hands it over.
    incoming: Incoming,
    /// The connection, until it goes back.
    conn: Option<Box<Conn>>,
    /// Where it goes back to.
    pool: Arc<Pool>,
}

impl PooledBody {
    /// Hands the connection back once the body has ended.
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put(conn);
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let mut frame = Pin::new(&mut this.incoming).poll_frame(cx);
        if frame.is_pending() {
            if let Some(conn) = &mut this.conn {
                conn.drive(cx);
                frame = Pin::new(&mut this.incoming).poll_frame(cx);
            }
        }
        match &frame {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.incoming.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Full};
    use hyper::server::conn::http1 as server;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;
    use tokio::sync::Barrier;

    use super::*;

    /// How many connections `pool` keeps idle.
    fn idle(pool: &Pool) -> usize {
        pool.idle.lock().unwrap().len()
    }

    /// A server that answers `{}` once `together` requests have arrived, and counts the
    /// connections that ended.
    async fn server(together: usize) -> (Uri, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin: Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let ended = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(together));
        let counted = ended.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (barrier, ended) = (barrier.clone(), counted.clone());
                tokio::spawn(async move {
                    let answer = service_fn(move |_| {
                        let barrier = barrier.clone();
                        async move {
                            barrier.wait().await;
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from_static(b"{}"),
                            )))
                        }
                    });
                    let _ = server::Builder::new()
                        .serve_connection(TokioIo::new(stream), answer)
                        .await;
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (origin, ended)
    }

    fn pool(origin: &Uri) -> Arc<Pool> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Arc::new(Pool::new(https, origin, Duration::from_secs(90)).unwrap())
    }

    async fn call(pool: Arc<Pool>) {
        let request = Request::get("/cgi-bin/get_api_domain_ip")
            .body(Body::empty())
            .unwrap();
        let answer = pool.send(request).await.unwrap();
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"{}");
    }

    #[tokio::test]
    async fn a_burst_leaves_at_most_max_idle_connections_open() {
        let burst = MAX_IDLE + 10;
        let (origin, ended) = server(burst).await;
        let pool = pool(&origin);
        // Every call waits for all the others at the server: `burst` connections at once.
        let calls: Vec<_> = (0..burst)
            .map(|_| tokio::spawn(call(pool.clone())))
            .collect();
        for call in calls {
            call.await.unwrap();
        }
        assert_eq!(idle(&pool), MAX_IDLE);
        let deadline = Instant::now() + Duration::from_secs(5);
        while ended.load(Ordering::SeqCst) < burst - MAX_IDLE {
            assert!(Instant::now() < deadline, "the surplus was not closed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(ended.load(Ordering::SeqCst), burst - MAX_IDLE);
    }
}
