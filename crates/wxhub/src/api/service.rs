//! What the listener runs for each request: token and ticket reads answered before the router,
//! everything else through it.
//!
//! Reads are what business servers do on every request of their own, so they are the one path
//! that must cost close to nothing beyond HTTP itself. The router charges every request for work
//! a read does not need: matching the route table, collecting and percent-decoding the path
//! parameters into fresh strings, cloning the boxed route services, boxing the request and
//! response bodies, copying the header map for the handler, and arming the timeout middleware's
//! timer (a read never waits, so it has nothing to time out). Reads are recognised from the path
//! alone, answered by the same functions as the router's handlers (same authentication,
//! 401/403/404 order, errors and metrics) and isolated from panics like the router's routes.
//!
//! Anything the fast path does not recognise exactly (another method, a percent-encoded segment,
//! a trailing slash, any other route) goes to the router unchanged, which keeps its own handlers
//! for the read routes, so the two can never disagree on what a path means.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{Method, Request, Response};
use axum::routing::future::RouteFuture;
use axum::Router;
use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tower_service::Service;

use super::{credentials, finish, json_response, panic_response, AccountId, ApiState};
use crate::kinds::{AccountRoute, Kind, KINDS};
use crate::metrics::Route;

/// A response body: the bytes of a read as they are, or whatever the router answered.
pub type ApiBody = Either<Full<Bytes>, Body>;

/// The answer of a [`Handler`], boxed: the one allocation a request to such a listener costs
/// beyond HTTP itself.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// A listener that answers every request with one function and needs no routing (the gateway).
/// It isolates its own panics: nothing around it catches them.
pub type Handler = Arc<dyn Fn(Request<Body>) -> HandlerFuture + Send + Sync>;

/// The API as one service: the read fast path in front of the router.
#[derive(Clone)]
pub struct ApiService {
    context: ApiState,
    router: Router,
    /// Whether the `/v1` token reads are answered ahead of the router. Only the consumer API's
    /// own listener does: the gateway and the event receiver (which may face the internet) serve
    /// their router and nothing else.
    fast_reads: bool,
    /// When set, every request goes to it and the router is never used: a listener with one
    /// route is spared the router's per-request work (cloning it, matching, boxing bodies and
    /// services, its layers).
    handler: Option<Handler>,
}

impl ApiService {
    /// The consumer API: the read fast path in front of `router`.
    pub(crate) fn new(context: ApiState, router: Router) -> ApiService {
        ApiService {
            context,
            router,
            fast_reads: true,
            handler: None,
        }
    }

    /// Another listener's service (the gateway, the event receiver): `router` alone, served with
    /// the same listener limits.
    pub(crate) fn router_only(context: ApiState, router: Router) -> ApiService {
        ApiService {
            context,
            router,
            fast_reads: false,
            handler: None,
        }
    }

    /// A listener answered by `handler` alone (the gateway), served with the same limits.
    pub(crate) fn handler_only(context: ApiState, handler: Handler) -> ApiService {
        ApiService {
            context,
            router: Router::new(),
            fast_reads: false,
            handler: Some(handler),
        }
    }

    /// Answers one request. A read is answered before this returns; anything else is handed to
    /// (a clone of) the router, whose answer the returned future yields.
    pub fn answer(&self, request: Request<Incoming>) -> ApiFuture {
        if let Some(handler) = &self.handler {
            return ApiFuture::Handled(handler(request.map(Body::new)));
        }
        if self.fast_reads && request.method() == Method::GET {
            if let Some(read) = read_path(request.uri().path()) {
                // A value between expiry and successor is waited for by the router's handler.
                if let Some(answer) = self.read(&request, read) {
                    return ApiFuture::Ready(Some(answer));
                }
            }
        }
        let mut router = self.router.clone();
        ApiFuture::Routed(router.call(request))
    }

    /// The fast path: the same checks and answers as the router's read handlers. `None` when
    /// there is no usable value right now: the router's handler, which may wait, answers then.
    fn read(&self, request: &Request<Incoming>, read: ReadPath<'_>) -> Option<Response<ApiBody>> {
        let context = &self.context;
        let answer = std::panic::catch_unwind(AssertUnwindSafe(|| {
            match credentials::read_body(context, request.headers(), &read.account, read.ticket) {
                Ok(body) => {
                    context.metrics.count_request(read.route(), 200);
                    Some(json_response(Full::new(body)).map(Either::Left))
                }
                Err(error) if error.is_not_ready() => None,
                Err(error) => Some(finish(context, read.route(), Err(error)).map(Either::Right)),
            }
        }));
        answer.unwrap_or_else(|_| Some(panic_response().map(Either::Right)))
    }
}

/// A read recognised from its path.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ReadPath<'a> {
    /// The account read.
    account: AccountId,
    /// The ticket kind, or `None` for the access token.
    ticket: Option<&'a str>,
}

impl ReadPath<'_> {
    fn route(&self) -> Route {
        match self.ticket {
            None => Route::AccessToken,
            Some(_) => Route::Ticket,
        }
    }
}

/// Recognises the read routes of every kind ([`AccountRoute::AccessToken`] and
/// [`AccountRoute::Tickets`] under its `v1_path`) exactly as the router matches them, e.g.
/// `/v1/apps/{appid}/access_token` or `/v1/corps/{corpid}/agents/{agentid}/tickets/{kind}`. A
/// parameter must be non-empty and free of `%` (the router percent-decodes parameters; those rare
/// paths are left to it).
fn read_path(path: &str) -> Option<ReadPath<'_>> {
    let rest = path.strip_prefix("/v1/")?;
    // Split on '/' by hand: `str::split` sets up a searcher that costs more than these few
    // dozen bytes do.
    let mut segments = [""; MAX_SEGMENTS];
    let mut count = 0;
    let mut start = 0;
    for (i, byte) in rest.bytes().enumerate().chain([(rest.len(), b'/')]) {
        if byte == b'/' {
            *segments.get_mut(count)? = &rest[start..i];
            count += 1;
            start = i + 1;
        }
    }
    let segments = &segments[..count];
    let param = |s: &str| !s.is_empty() && !s.contains('%');
    for shape in shapes() {
        let Some((head, tail)) = segments.split_at_checked(shape.segments.len()) else {
            continue;
        };
        let ticket = match tail {
            ["access_token"] => None,
            ["tickets", kind] if shape.tickets && param(kind) => Some(*kind),
            _ => continue,
        };
        let mut ids = [""; MAX_SEGMENTS];
        let mut fields = 0;
        let matches = shape
            .segments
            .iter()
            .zip(head)
            .all(|(expected, actual)| match expected {
                Some(literal) => literal == actual,
                None if param(actual) => {
                    ids[fields] = actual;
                    fields += 1;
                    true
                }
                None => false,
            });
        if matches {
            let account = AccountId::from_parts(shape.kind, &ids[..fields])?;
            return Some(ReadPath { account, ticket });
        }
    }
    None
}

/// Most segments a read path has after `/v1/` (an authorizer's ticket has six).
const MAX_SEGMENTS: usize = 6;

/// A kind's `v1_path` after `/v1/`, split once: a literal segment, or `None` for an id field.
struct Shape {
    kind: Kind,
    segments: Vec<Option<&'static str>>,
    tickets: bool,
}

/// Every kind's read path shape, from the registration table.
fn shapes() -> &'static [Shape] {
    static SHAPES: OnceLock<Vec<Shape>> = OnceLock::new();
    SHAPES.get_or_init(|| {
        KINDS
            .into_iter()
            .filter(|kind| {
                kind.descriptor()
                    .routes
                    .contains(&AccountRoute::AccessToken)
            })
            .map(|kind| {
                let descriptor = kind.descriptor();
                let path = descriptor.v1_path.strip_prefix("/v1/").unwrap_or_default();
                Shape {
                    kind,
                    segments: path
                        .split('/')
                        .map(|s| (!s.starts_with('{')).then_some(s))
                        .collect(),
                    tickets: descriptor.routes.contains(&AccountRoute::Tickets),
                }
            })
            .collect()
    })
}

/// The answer of [`ApiService::answer`]: ready at once for a read, the router's future otherwise.
pub enum ApiFuture {
    /// A read, already answered (taken on the first poll).
    Ready(Option<Response<ApiBody>>),
    /// Anything else.
    Routed(RouteFuture<Infallible>),
    /// A [`Handler`]'s answer.
    Handled(HandlerFuture),
}

impl Future for ApiFuture {
    type Output = Result<Response<ApiBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            ApiFuture::Ready(answer) => match answer.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled again after completion: hyper never does, and a future may then pend.
                None => Poll::Pending,
            },
            ApiFuture::Routed(routed) => Pin::new(routed)
                .poll(cx)
                .map_ok(|response| response.map(Either::Right)),
            ApiFuture::Handled(handled) => handled
                .as_mut()
                .poll(cx)
                .map(|response| Ok(response.map(Either::Right))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_exactly_the_read_routes() {
        assert_eq!(
            read_path("/v1/apps/wx1/access_token"),
            Some(ReadPath {
                account: AccountId::app("wx1"),
                ticket: None
            })
        );
        assert_eq!(
            read_path("/v1/apps/wx1/tickets/jsapi"),
            Some(ReadPath {
                account: AccountId::app("wx1"),
                ticket: Some("jsapi")
            })
        );
        assert_eq!(
            read_path("/v1/corps/ww1/agents/1000002/access_token"),
            Some(ReadPath {
                account: AccountId::corp("ww1", "1000002"),
                ticket: None
            })
        );
        assert_eq!(
            read_path("/v1/corps/ww1/agents/1000002/tickets/agent_config"),
            Some(ReadPath {
                account: AccountId::corp("ww1", "1000002"),
                ticket: Some("agent_config")
            })
        );
    }

    #[test]
    fn recognises_every_kind_s_reads() {
        assert_eq!(
            read_path("/v1/components/wxc/access_token"),
            Some(ReadPath {
                account: AccountId::component("wxc"),
                ticket: None
            })
        );
        assert_eq!(
            read_path("/v1/components/wxc/authorizers/wxa/tickets/jsapi"),
            Some(ReadPath {
                account: AccountId::authorizer("wxc", "wxa"),
                ticket: Some("jsapi")
            })
        );
        for kind in KINDS {
            let descriptor = kind.descriptor();
            let mut ids = vec![];
            let path: Vec<String> = descriptor
                .v1_path
                .split('/')
                .map(|segment| match segment.starts_with('{') {
                    true => {
                        ids.push(format!("id{}", ids.len()));
                        ids[ids.len() - 1].clone()
                    }
                    false => segment.to_string(),
                })
                .collect();
            let path = path.join("/");
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let account = AccountId::from_parts(kind, &ids);
            assert_eq!(
                read_path(&format!("{path}/access_token")).map(|r| r.account),
                account,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn leaves_everything_else_to_the_router() {
        for path in [
            "/v1/apps/wx1/access_token/",
            "/v1/apps/wx1/access_token/invalidate",
            "/v1/apps//access_token",
            "/v1/apps/wx%31/access_token",
            "/v1/apps/wx1/tickets/",
            "/v1/apps/wx1/tickets/jsapi/invalidate",
            "/v1/apps/wx1/jssdk/signature",
            "/v1/apps/wx1/refresh",
            "/v1/corps/ww1/agents//access_token",
            "/v1/corps/ww1/agents/1/tickets/jsapi/x",
            "/v1/components/wxc/tickets/jsapi",
            "/v1/components/wxc/authorizers/wxa/refresh",
            "/v1/components//authorizers/wxa/access_token",
            "/v1/components/wxc/authorizers/wxa/jssdk/signature",
            "/v1/credentials",
            "/v1/",
            "/v1",
            "/v2/apps/wx1/access_token",
            "/v1/apps/wx1/access_token/a/b/c/d",
            "//v1/apps/wx1/access_token",
            "/healthz",
            "",
        ] {
            assert_eq!(read_path(path), None, "{path}");
        }
    }
}
