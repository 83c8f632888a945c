//! Pass-through to WeChat: method, path, query, headers (less hop-by-hop ones) and body go
//! upstream, and the answer comes back streamed.
//!
//! Bodies are streamed both ways, except where a replay may be needed: a call made with a token
//! the hub serves is held (up to `[gateway] max_body`) so that it can be sent again with a new
//! token if WeChat refuses the first one (see [`super::heal`]). Answers are streamed too; only a
//! small JSON answer to such a call is read whole, to see its `errcode`.

use axum::body::Body;
use axum::http::uri::PathAndQuery;
use axum::http::{header, HeaderMap, HeaderName, Method, Request, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, StreamExt};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body as _;
use serde::Deserialize;
use std::sync::{Arc, LazyLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::reply::{self, code, Host};
use super::transport::{Failure, Payload, Transport};
use crate::configuration::Settings;
use crate::metrics::gateway::{HeldBytes, Listener, Outcome, Refusal};
use crate::metrics::Metrics;

/// The largest answer read whole to look for a dead-token `errcode`. WeChat refuses a dead token
/// with an `errcode` and an `errmsg`, a couple of hundred bytes: a larger answer (a list of
/// users, a media download) cannot be such a refusal, and goes on streamed as it arrives rather
/// than held.
const PEEK_LIMIT: usize = 4 * 1024;

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1), plus `Host` (the
/// client names the gateway; the client that forwards names WeChat). `Connection` first: see
/// [`strip_hop_by_hop`].
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
];

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The request body is larger than `[gateway] max_body`.
    #[error("request body larger than the gateway's max_body")]
    TooLarge,
    /// The request body could not be read from the client.
    #[error("request body unreadable")]
    Unreadable,
    /// WeChat did not answer (connection, timeout).
    #[error("WeChat unreachable: {0}")]
    Upstream(Failure),
}

impl ForwardError {
    /// The reason it is counted under in `wxhub_gateway_refused_total`.
    pub fn refusal(&self) -> Refusal {
        match self {
            ForwardError::TooLarge => Refusal::BodyTooLarge,
            ForwardError::Unreadable => Refusal::BodyUnreadable,
            ForwardError::Upstream(_) => Refusal::UpstreamUnreachable,
        }
    }

    /// The call refused for this failure, with its WeChat-shaped answer.
    pub fn refused(&self, host: Host) -> Forwarded {
        Forwarded {
            response: self.response(host),
            outcome: Outcome::Refused(self.refusal()),
        }
    }

    /// The WeChat-shaped answer for this failure.
    pub fn response(&self, host: Host) -> Response {
        match self {
            ForwardError::TooLarge => {
                reply::error_with_status(StatusCode::PAYLOAD_TOO_LARGE, code::SYSTEM_ERROR, host)
            }
            ForwardError::Unreadable => {
                reply::error_with_status(StatusCode::BAD_REQUEST, code::SYSTEM_ERROR, host)
            }
            ForwardError::Upstream(_) => {
                reply::error_with_status(StatusCode::BAD_GATEWAY, code::SYSTEM_ERROR, host)
            }
        }
    }
}

/// The answer for a call, and what became of the call (`wxhub_gateway_calls_total`): every
/// way through the gateway and the forwarding below it ends in one, counted once by the
/// listener that took the call.
#[must_use = "a call's answer is given by counting it: Forwarded::counted"]
pub struct Forwarded {
    /// The answer for the client (read outside `forward` only through [`Forwarded::counted`]).
    pub(super) response: Response,
    /// What became of the call.
    pub(super) outcome: Outcome,
}

impl Forwarded {
    /// An answer of `outcome`.
    pub fn new(response: Response, outcome: Outcome) -> Forwarded {
        Forwarded { response, outcome }
    }

    /// Counts the call under `listener` and gives its answer: how every listener that forwards
    /// ends a call, so that none can answer without counting it.
    pub fn counted(self, metrics: &Metrics, listener: Listener) -> Response {
        metrics.gateway.count_call(listener, self.outcome);
        self.response
    }
}

/// A request on its way to WeChat, without its body.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The listener that took the call, which its upstream latency is counted for.
    pub listener: Listener,
    /// Which WeChat host it goes to.
    pub host: Host,
    /// Its method.
    pub method: Method,
    /// Its path (from the leading `/`) and query, as its request line carries them: the client's
    /// own, already checked, as long as the query is not rewritten. `None` if a rewritten one is
    /// not a valid request target (the call then fails as WeChat unreachable, naming nothing).
    target: Option<PathAndQuery>,
    /// Its headers, hop-by-hop ones and the consumer's `Authorization` already removed.
    pub headers: HeaderMap,
}

impl Outgoing {
    /// A request for `host` to `path?query`: hop-by-hop headers are dropped, and so is
    /// `Authorization` (a consumer key is for the hub; WeChat reads none).
    pub fn new(
        listener: Listener,
        host: Host,
        method: Method,
        path: &str,
        query: Option<&str>,
        headers: HeaderMap,
    ) -> Outgoing {
        Outgoing::with_target(listener, host, method, build_target(path, query), headers)
    }

    /// A request for `host` to the client's own request target (as [`Outgoing::new`]).
    pub fn from_client(
        listener: Listener,
        host: Host,
        method: Method,
        target: &PathAndQuery,
        headers: HeaderMap,
    ) -> Outgoing {
        let target = match target.query() {
            // `/path?`: sent without the `?`, as WeChat's other paths are.
            Some("") => build_target(target.path(), None),
            _ => Some(target.clone()),
        };
        Outgoing::with_target(listener, host, method, target, headers)
    }

    fn with_target(
        listener: Listener,
        host: Host,
        method: Method,
        target: Option<PathAndQuery>,
        mut headers: HeaderMap,
    ) -> Outgoing {
        strip_hop_by_hop(&mut headers);
        headers.remove(header::AUTHORIZATION);
        Outgoing {
            listener,
            host,
            method,
            target,
            headers,
        }
    }

    /// Its path, from the leading `/`.
    pub fn path(&self) -> &str {
        self.target.as_ref().map_or("", PathAndQuery::path)
    }

    /// Its raw query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.as_ref().and_then(PathAndQuery::query)
    }

    /// Sends it with `query` as its query string instead.
    pub fn set_query(&mut self, query: &str) {
        self.target = build_target(self.path(), Some(query));
    }
}

/// `path?query` as a request target (without the `?` when the query is empty); `None` if it is
/// not a valid one.
fn build_target(path: &str, query: Option<&str>) -> Option<PathAndQuery> {
    let query = query.filter(|q| !q.is_empty());
    let mut target = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
    target.push_str(path);
    if let Some(query) = query {
        target.push('?');
        target.push_str(query);
    }
    PathAndQuery::from_maybe_shared(target).ok()
}

/// The client that talks to WeChat for the gateway and the token-less calls.
pub struct Forwarder {
    /// Same TLS stack as the engine's client; never follows redirects (a redirect could carry a
    /// substituted AppSecret to another origin).
    transport: Transport,
    /// `[gateway] max_body`.
    max_body: usize,
    /// What is left of `[gateway] replay_memory`, one permit a byte: bodies held for a replay
    /// take their size from it until the call ends.
    replay_memory: Arc<Semaphore>,
    /// `[gateway] replay_memory`.
    replay_memory_total: usize,
    /// Where the upstream latency and the bytes held are counted, per listener.
    metrics: Arc<Metrics>,
}

/// A request body held in memory for a replay, and the share of `[gateway] replay_memory` it
/// takes until it is dropped.
pub struct HeldBody<'f> {
    /// The body.
    pub bytes: Bytes,
    /// Its share of the budget (at least its size).
    _share: Option<OwnedSemaphorePermit>,
    /// The share, counted for its listener in `wxhub_gateway_held_bytes` until it is given back.
    _counted: HeldBytes<'f>,
}

impl Forwarder {
    /// A forwarder for `settings`' WeChat and gateway sections, counting into `metrics`.
    pub fn new(settings: &Settings, metrics: Arc<Metrics>) -> Result<Forwarder, reqwest::Error> {
        let wechat = &settings.wechat;
        let transport = Transport::new(&wechat.api_base, &wechat.work_api_base, wechat.timeout)?;
        Ok(Forwarder {
            transport,
            max_body: settings.gateway.max_body,
            replay_memory: Arc::new(Semaphore::new(settings.gateway.replay_memory)),
            replay_memory_total: settings.gateway.replay_memory,
            metrics,
        })
    }

    /// Bytes of request bodies held for replays now.
    pub fn replay_bytes_held(&self) -> usize {
        self.replay_memory_total - self.replay_memory.available_permits()
    }

    /// Reads a request body whole for a replay, if `[gateway] replay_memory` has room for it;
    /// `Ok(Err(body))` hands the body back when there is no room, to be streamed without a replay.
    /// A body with a declared length takes that much at once, before it is read; one without takes
    /// each piece's size as the piece arrives (see [`Forwarder::hold_as_it_comes`]). A body that
    /// declares no length and has none (a GET) takes nothing. What is held is counted for
    /// `listener`.
    pub async fn hold(
        &self,
        listener: Listener,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Result<HeldBody<'_>, Body>, ForwardError> {
        let mut counted = self.metrics.gateway.held(listener);
        if body.is_end_stream() {
            return Ok(Ok(HeldBody {
                bytes: Bytes::new(),
                _share: None,
                _counted: counted,
            }));
        }
        let wanted = match declared_length(headers) {
            Some(n) if n > self.max_body as u64 => return Err(ForwardError::TooLarge),
            Some(n) => n as usize,
            None => return self.hold_as_it_comes(counted, body).await,
        };
        let share = match u32::try_from(wanted.max(1))
            .ok()
            .and_then(|n| self.replay_memory.clone().try_acquire_many_owned(n).ok())
        {
            Some(share) => share,
            None => return Ok(Err(body)),
        };
        counted.add(share.num_permits());
        let bytes = self.collect(headers, body).await?;
        Ok(Ok(HeldBody {
            bytes,
            _share: Some(share),
            _counted: counted,
        }))
    }

    /// A body of undeclared length, held piece by piece: each piece takes its own size from
    /// `[gateway] replay_memory` as it arrives, so a call holds what it sent rather than reserving
    /// `max_body` (10 MiB by default) for a body of a few hundred bytes. When the budget runs out
    /// part-way, what was read goes on streamed, followed by the rest, without a replay.
    async fn hold_as_it_comes<'f>(
        &'f self,
        mut counted: HeldBytes<'f>,
        mut body: Body,
    ) -> Result<Result<HeldBody<'f>, Body>, ForwardError> {
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut total = 0usize;
        let mut share: Option<OwnedSemaphorePermit> = None;
        while let Some(frame) = body.frame().await {
            let Ok(piece) = frame.map_err(|_| ForwardError::Unreadable)?.into_data() else {
                continue; // trailers: not sent on, as when the body is read whole
            };
            if piece.is_empty() {
                continue;
            }
            total += piece.len();
            if total > self.max_body {
                return Err(ForwardError::TooLarge);
            }
            let more = u32::try_from(piece.len())
                .ok()
                .and_then(|n| self.replay_memory.clone().try_acquire_many_owned(n).ok());
            if let Some(more) = &more {
                counted.add(more.num_permits());
            }
            pieces.push(piece);
            match (more, &mut share) {
                (Some(more), Some(share)) => share.merge(more),
                (Some(more), None) => share = Some(more),
                (None, _) => {
                    // No room: nothing is held, the call goes without a replay.
                    let read = stream::iter(pieces.into_iter().map(Ok::<_, axum::Error>));
                    return Ok(Err(Body::from_stream(read.chain(body.into_data_stream()))));
                }
            }
        }
        let bytes = match pieces.len() {
            0 => Bytes::new(),
            1 => pieces.swap_remove(0),
            _ => pieces.concat().into(),
        };
        Ok(Ok(HeldBody {
            bytes,
            _share: share,
            _counted: counted,
        }))
    }

    /// `[gateway] max_body`.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Reads a request body whole, refusing one over `max_body`.
    pub async fn collect(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, ForwardError> {
        if declared_length(headers).is_some_and(|n| n > self.max_body as u64) {
            return Err(ForwardError::TooLarge);
        }
        match Limited::new(body, self.max_body).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ForwardError::TooLarge),
            Err(_) => Err(ForwardError::Unreadable),
        }
    }

    /// Sends `outgoing` with `body` streamed, as [`Forwarder::stream`]: the call passed, or was
    /// refused for the failure.
    pub async fn pass(&self, outgoing: &Outgoing, body: Body) -> Forwarded {
        match self.stream(outgoing, body).await {
            Ok(response) => Forwarded::new(response, Outcome::Passed),
            Err(e) => e.refused(outgoing.host),
        }
    }

    /// Sends `outgoing` with `body` streamed (at most `max_body` of it) and streams the answer.
    pub async fn stream(&self, outgoing: &Outgoing, body: Body) -> Result<Response, ForwardError> {
        if declared_length(&outgoing.headers).is_some_and(|n| n > self.max_body as u64) {
            return Err(ForwardError::TooLarge);
        }
        let limited = Body::new(Limited::new(body, self.max_body));
        let answer = self.send(outgoing, Payload::Streamed(limited)).await?;
        Ok(streamed(answer))
    }

    /// Sends `outgoing` with a body held in memory, and returns the answer.
    pub async fn send_bytes(
        &self,
        outgoing: &Outgoing,
        body: Bytes,
    ) -> Result<Response, ForwardError> {
        self.send(outgoing, Payload::Held(body)).await
    }

    async fn send(&self, outgoing: &Outgoing, payload: Payload) -> Result<Response, ForwardError> {
        let mut request = Request::new(());
        *request.method_mut() = outgoing.method.clone();
        *request.headers_mut() = outgoing.headers.clone();
        if let Payload::Held(_) = payload {
            // Set again from the bytes sent.
            request.headers_mut().remove(header::CONTENT_LENGTH);
        }
        let target = outgoing
            .target
            .as_ref()
            .ok_or(ForwardError::Upstream("request failed"))?;
        // The URL may carry a token or secret: the failure is named without it.
        let sent = std::time::Instant::now();
        let answer = self
            .transport
            .send(outgoing.host, target, request, payload)
            .await
            .map_err(ForwardError::Upstream)?;
        // Only exchanges WeChat answered: a failure is counted as a refusal, by the caller.
        self.metrics
            .gateway
            .observe_upstream(outgoing.listener, sent.elapsed());
        Ok(answer)
    }
}

/// The `Content-Length` a client declared, if any.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Removes the hop-by-hop headers, including those the `Connection` header names.
///
/// Every call strips both its request and its answer, which usually carry one of them (`Host`)
/// or none: the few names present are looked at once, and only those found are removed (a
/// removal hashes its name).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Which of HOP_BY_HOP are present, one bit each.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // `Connection` comes first in HOP_BY_HOP: the names it lists go too.
    if present & 1 != 0 {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::try_from(name.trim()).ok())
            .collect();
        for name in &named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// The answer's status and headers, with `body`.
fn respond(status: StatusCode, mut headers: HeaderMap, body: Body) -> Response {
    strip_hop_by_hop(&mut headers);
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// WeChat's answer, streamed to the client as it arrives.
pub fn streamed(answer: Response) -> Response {
    let (parts, body) = answer.into_parts();
    respond(parts.status, parts.headers, body)
}

/// An answer read far enough to know whether WeChat refused the token.
pub struct Inspected {
    /// The answer for the client.
    pub response: Response,
    /// WeChat's `errcode`, when the answer was small JSON that carried one.
    pub errcode: Option<i64>,
}

/// Reads a small JSON answer whole to find its `errcode`; anything else streams on untouched. An
/// answer that breaks off while it is read is WeChat unreachable.
pub async fn inspect(answer: Response) -> Result<Inspected, ForwardError> {
    let (parts, mut body) = answer.into_parts();
    let (status, headers) = (parts.status, parts.headers);
    let json_like = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("json") || t.starts_with("text/plain"));
    let small = declared_length(&headers).is_none_or(|n| n <= PEEK_LIMIT as u64);
    if !json_like || !small {
        return Ok(Inspected {
            response: respond(status, headers, body),
            errcode: None,
        });
    }
    // The answer so far while it is one piece (most answers are): kept without a copy.
    let mut only: Option<Bytes> = None;
    // The answer so far once it is several pieces.
    let mut held = BytesMut::new();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                let Ok(chunk) = frame.into_data() else {
                    continue; // trailers: nothing an errcode could be in
                };
                if only.is_none() && held.is_empty() {
                    only = Some(chunk);
                } else {
                    if let Some(first) = only.take() {
                        held.extend_from_slice(&first);
                    }
                    held.extend_from_slice(&chunk);
                }
                if only.as_ref().map_or(held.len(), Bytes::len) > PEEK_LIMIT {
                    // Larger than any errcode answer: hand on what was read and the rest.
                    let read = only.take().unwrap_or_else(|| held.split().freeze());
                    let head = stream::once(async move { Ok::<_, axum::Error>(read) });
                    let body = Body::from_stream(head.chain(body.into_data_stream()));
                    return Ok(Inspected {
                        response: respond(status, headers, body),
                        errcode: None,
                    });
                }
            }
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "WeChat's answer broke off");
                return Err(ForwardError::Upstream("body failed"));
            }
        }
    }
    let held = only.unwrap_or_else(|| held.freeze());
    let errcode = errcode_of(&held);
    Ok(Inspected {
        response: respond(status, headers, Body::from(held)),
        errcode,
    })
}

/// The `errcode` of a JSON answer, if it has one.
///
/// Most answers carry none (a business call's data): those are told apart by a scan for the key
/// before any parsing. WeChat writes its keys plainly, never with JSON escapes.
fn errcode_of(body: &[u8]) -> Option<i64> {
    // Built once: building the searcher costs more than a short answer's scan.
    static KEY: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"\"errcode\""));
    KEY.find(body)?;
    #[derive(Deserialize)]
    struct Code {
        errcode: Option<i64>,
    }
    serde_json::from_slice::<Code>(body).ok()?.errcode
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn drops_hop_by_hop_headers_and_those_connection_names() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::HOST, HeaderValue::from_static("gateway"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::CONTENT_TYPE));

        // Each of them, and twice over; the others stay.
        let mut headers = HeaderMap::new();
        for name in &HOP_BY_HOP {
            headers.append(name, HeaderValue::from_static("x"));
            headers.append(name, HeaderValue::from_static("y"));
        }
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::ACCEPT));

        // A `Connection` header naming others, alone among them.
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("x-a, x-b"));
        headers.insert("x-a", HeaderValue::from_static("1"));
        headers.insert("x-b", HeaderValue::from_static("1"));
        headers.insert("x-c", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().collect::<Vec<_>>(), ["x-c"]);
    }

    #[test]
    fn a_call_goes_to_the_clients_own_target_until_its_query_is_rewritten() {
        let outgoing = |target: &'static str| {
            Outgoing::from_client(
                Listener::Official,
                Host::Official,
                Method::GET,
                &PathAndQuery::from_static(target),
                HeaderMap::new(),
            )
        };
        let mut call = outgoing("/cgi-bin/x?access_token=T&a=%7E1");
        assert_eq!(call.path(), "/cgi-bin/x");
        assert_eq!(call.query(), Some("access_token=T&a=%7E1"));
        call.set_query("access_token=N&a=%7E1");
        assert_eq!(call.query(), Some("access_token=N&a=%7E1"));
        assert_eq!(call.path(), "/cgi-bin/x");
        // An empty query goes without its `?`.
        let call = outgoing("/cgi-bin/x?");
        assert_eq!(call.query(), None);
        assert_eq!(call.target.as_ref().map(|t| t.as_str()), Some("/cgi-bin/x"));
        let built = Outgoing::new(
            Listener::Work,
            Host::Work,
            Method::POST,
            "/cgi-bin/y",
            Some(""),
            HeaderMap::new(),
        );
        assert_eq!(
            built.target.as_ref().map(|t| t.as_str()),
            Some("/cgi-bin/y")
        );
    }

    /// An answer from WeChat with `content-type: application/json`, its body in `pieces`, its
    /// length declared or not.
    fn answer(pieces: Vec<Vec<u8>>, declared: bool) -> Response {
        let length: usize = pieces.iter().map(Vec::len).sum();
        let body = Body::from_stream(stream::iter(
            pieces.into_iter().map(Ok::<_, std::io::Error>),
        ));
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if declared {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        response
    }

    #[tokio::test]
    async fn only_an_answer_small_enough_to_be_a_refusal_is_held() {
        let refusal = br#"{"errcode":40001,"errmsg":"invalid credential"}"#.to_vec();
        let inspected = inspect(answer(vec![refusal.clone()], true)).await.unwrap();
        assert_eq!(inspected.errcode, Some(40001));
        // In two pieces, without a declared length: read whole too.
        let (a, b) = refusal.split_at(10);
        let inspected = inspect(answer(vec![a.to_vec(), b.to_vec()], false))
            .await
            .unwrap();
        assert_eq!(inspected.errcode, Some(40001));
        // Larger than any refusal: streamed untouched, declared or found out while reading.
        let mut large = refusal.clone();
        large.truncate(large.len() - 1);
        large.extend_from_slice(format!(r#","pad":"{}"}}"#, "x".repeat(PEEK_LIMIT)).as_bytes());
        for declared in [true, false] {
            let pieces = large.chunks(1000).map(<[u8]>::to_vec).collect();
            let inspected = inspect(answer(pieces, declared)).await.unwrap();
            assert_eq!(inspected.errcode, None);
            let body = inspected.response.into_body().collect().await.unwrap();
            assert_eq!(body.to_bytes(), large);
        }
    }

    #[test]
    fn reads_errcodes_of_json_answers_only() {
        assert_eq!(
            errcode_of(br#"{"errcode":40001,"errmsg":"x"}"#),
            Some(40001)
        );
        assert_eq!(errcode_of(br#"{"ip_list":[]}"#), None);
        assert_eq!(
            errcode_of(br#"{"errmsg":"x","errcode":42001}"#),
            Some(42001)
        );
        assert_eq!(errcode_of(br#"{"errcode":"x"}"#), None);
        assert_eq!(errcode_of(b"\x89PNG"), None);
    }
}
