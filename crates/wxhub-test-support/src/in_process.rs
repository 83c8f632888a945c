//! WeChat in process: the hub's WeChat client ([`wxhub::upstream::Upstream`]) wired straight to
//! a `wechat-mock`'s routes, with no socket between them. Engine tests use it on tokio's paused
//! clock: a token's two-hour life (or a test's few seconds) passes in microseconds of real time,
//! and the mock, whose clock is tokio's too, expires what it issued exactly as it would.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request};
use tower_service::Service;
use wechat_mock::MockServer;
use wxhub::engine::clock::Clock;
use wxhub::metrics::Metrics;
use wxhub::token::Timestamp;
use wxhub::upstream::{check_status, too_large, Answer, Call, Transport, Upstream, UpstreamError};

/// A [`Transport`] that hands each call to the mock's router.
pub struct InProcessWechat {
    /// The mock's routes (the same state as its listener's).
    router: axum::Router,
}

impl InProcessWechat {
    /// A transport into `mock`.
    pub fn new(mock: &MockServer) -> InProcessWechat {
        InProcessWechat {
            router: mock.router(),
        }
    }

    /// A WeChat client whose calls go to `mock` in process, `concurrency` at once.
    pub fn upstream(mock: &MockServer, concurrency: usize, metrics: Arc<Metrics>) -> Upstream {
        // The base URLs only have to be well formed: the transport keeps the path and query.
        Upstream::with_transport(
            Arc::new(InProcessWechat::new(mock)),
            "http://wechat.in-process",
            "http://work.in-process",
            concurrency,
            metrics,
        )
    }
}

impl Transport for InProcessWechat {
    fn send(&self, call: Call, max_bytes: usize) -> Answer<'_> {
        let mut router = self.router.clone();
        Box::pin(async move {
            let path = call
                .url
                .splitn(4, '/')
                .nth(3)
                .map_or_else(|| "/".to_string(), |p| format!("/{p}"));
            let mut uri = path;
            if !call.query.is_empty() {
                let query: String = form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(call.query.iter().map(|(k, v)| (*k, v.as_str())))
                    .finish();
                uri = format!("{uri}?{query}");
            }
            let request = match &call.json {
                Some(json) => Request::builder()
                    .method(Method::POST)
                    .uri(uri)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(json.to_string())),
                None => Request::builder()
                    .method(Method::GET)
                    .uri(uri)
                    .body(Body::empty()),
            }
            .map_err(|e| UpstreamError::transient(format!("unusable call: {e}")))?;
            let response = router
                .call(request)
                .await
                .map_err(|e| UpstreamError::transient(format!("mock failed: {e}")))?;
            check_status(response.status())?;
            let body = axum::body::to_bytes(response.into_body(), max_bytes)
                .await
                .map_err(|_| too_large(max_bytes))?;
            Ok(body.to_vec())
        })
    }
}

/// The hub's clock on tokio's: the wall-clock time when it was made, moved on by tokio's
/// [`Instant`](tokio::time::Instant). On a paused runtime it stands still until every task waits
/// and then jumps to the next timer, together with the engine's sleeps and the mock's lifetimes.
pub struct TokioClock {
    /// The wall-clock time at `started`.
    wall_at_start: Timestamp,
    /// Tokio's instant when the clock was made.
    started: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads the wall-clock time now and follows tokio's from here.
    pub fn new() -> TokioClock {
        TokioClock {
            wall_at_start: Timestamp::now(),
            started: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.wall_at_start.plus(self.started.elapsed())
    }
}
