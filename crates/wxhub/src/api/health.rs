//! Liveness, readiness and metrics: unauthenticated, for load balancers and Prometheus (bind the
//! hub to a private address, docs/architecture.md#health-readiness-and-metrics).

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{rollover_wait, ApiState};
use crate::credential::Timestamp;

/// How long `/readyz` waits for the store to answer.
const STORE_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// `GET /healthz`: 200 while the process runs.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: whether this instance should get consumer traffic.
///
/// 200 once every credential has a usable token (the store answered at startup, or the instance
/// would not have started). The store is pinged on every call: while it does not answer, the
/// instance still serves every token it holds, so it stays ready but says
/// `"status":"degraded"` — a load balancer that pulled every instance during a Redis outage would
/// turn the outage into a complete one. 503 (`"status":"unavailable"`) while some credential has
/// no usable token.
pub async fn readyz(State(context): State<ApiState>) -> Response {
    let store_ok = matches!(
        tokio::time::timeout(STORE_PING_TIMEOUT, context.store.ping()).await,
        Ok(Ok(()))
    );
    let tokens_ok = context
        .hub
        .all_usable(Timestamp::now(), rollover_wait(&context.settings));
    let status = match (tokens_ok, store_ok) {
        (false, _) => "unavailable",
        (true, false) => "degraded",
        (true, true) => "ok",
    };
    let body = serde_json::json!({
        "ready": tokens_ok,
        "status": status,
        "store": if store_ok { "ok" } else { "unreachable" },
        "credentials": if tokens_ok { "ok" } else { "missing" },
    });
    let status = if tokens_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(context): State<ApiState>) -> Response {
    let mut out = String::with_capacity(4096);
    context.metrics.render(&mut out);
    out.push_str(
        "# HELP wxhub_token_remaining_seconds Remaining life of each credential's token.\n",
    );
    out.push_str("# TYPE wxhub_token_remaining_seconds gauge\n");
    for (key, remaining) in context.engine.remaining_lives() {
        let _ = writeln!(
            out,
            "wxhub_token_remaining_seconds{{key=\"{key}\",kind=\"{}\"}} {remaining:.3}",
            key.kind_name()
        );
    }
    out.push_str("# HELP wxhub_credentials Credentials by state.\n");
    out.push_str("# TYPE wxhub_credentials gauge\n");
    let mut by_state = std::collections::BTreeMap::<String, u64>::new();
    for status in context.engine.credentials() {
        let state = serde_json::to_value(status.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        *by_state.entry(state).or_default() += 1;
    }
    for (state, n) in by_state {
        let _ = writeln!(out, "wxhub_credentials{{state=\"{state}\"}} {n}");
    }
    let mut response = out.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
