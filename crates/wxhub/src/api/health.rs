//! Liveness, readiness and metrics: unauthenticated, for load balancers and Prometheus (bind the
//! hub to a private address, docs/architecture.md#health-readiness-and-metrics).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{rollover_wait, ApiState};
use crate::kinds::{AccountId, CredentialKey, Role};
use crate::read::Credential;

/// The most configured credentials that get a remaining-life series each (see
/// [`remaining_lives`]).
pub const PER_CREDENTIAL_SERIES_LIMIT: usize = 2_000;

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
        .read_index
        .all_usable(context.clock.now(), rollover_wait(&context.settings));
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
    let mut response = (status, format!("{body}\n")).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The remaining-life gauges, read from what the read side keeps as it serves (no walk of every
/// credential, no engine lock): one series per credential of the configuration file, and the
/// shortest remaining life per kind over all credentials, so that 100,000 runtime credentials
/// (authorizers) add a handful of series, not 100,000.
///
/// A configuration with more than [`PER_CREDENTIAL_SERIES_LIMIT`] credentials gets the aggregates
/// only: a scrape of hundreds of thousands of series is a problem for Prometheus, not a help.
fn remaining_lives(context: &ApiState, configured: &[Arc<Credential>], out: &mut String) {
    let now = context.clock.now();
    if configured.len() <= PER_CREDENTIAL_SERIES_LIMIT {
        out.push_str(
            "# HELP wxhub_token_remaining_seconds Remaining life of each configured credential's token.\n",
        );
        out.push_str("# TYPE wxhub_token_remaining_seconds gauge\n");
        for credential in configured {
            let Some(expires_at) = credential.slot.peek().as_ref().map(|s| s.expires_at) else {
                continue;
            };
            let _ = writeln!(
                out,
                "wxhub_token_remaining_seconds{{key=\"{}\",kind=\"{}\"}} {:.3}",
                credential.key,
                credential.key.kind_name(),
                expires_at.since(now).as_secs_f64()
            );
        }
    }
    out.push_str(
        "# HELP wxhub_token_remaining_seconds_min Shortest remaining life over all credentials of a kind.\n",
    );
    out.push_str("# TYPE wxhub_token_remaining_seconds_min gauge\n");
    for (kind, expires_at) in context.read_index.earliest_expiry_by_kind() {
        let _ = writeln!(
            out,
            "wxhub_token_remaining_seconds_min{{kind=\"{kind}\"}} {:.3}",
            expires_at.since(now).as_secs_f64()
        );
    }
}

/// Seconds since WeChat pushed each platform's `component_verify_ticket` (every 10 minutes when
/// the event URL works): past an hour, the alert `WxhubVerifyTicketStale` fires. No sample for a
/// platform that has never had a push.
fn verify_ticket_ages(context: &ApiState, out: &mut String) {
    out.push_str(
        "# HELP wxhub_component_verify_ticket_age_seconds Seconds since the platform's component_verify_ticket was pushed.\n",
    );
    out.push_str("# TYPE wxhub_component_verify_ticket_age_seconds gauge\n");
    let now = context.clock.now();
    for component in &context.settings.components {
        let key = CredentialKey::new(
            AccountId::component(&component.component_appid),
            Role::PushedTicket,
        );
        let Some(pushed_at) = context
            .read_index
            .by_key(&key)
            .and_then(|credential| context.engine.fetched_at(&credential))
        else {
            continue;
        };
        let _ = writeln!(
            out,
            "wxhub_component_verify_ticket_age_seconds{{component_appid=\"{}\"}} {:.3}",
            component.component_appid,
            now.since(pushed_at).as_secs_f64()
        );
    }
}

/// Seconds since Work WeChat pushed each suite's `suite_ticket` (every 10 minutes when the
/// command callback URL works; a ticket lives 30): past 30 minutes, the alert
/// `WxhubSuiteTicketStale` fires. No sample for a suite that has never had a push.
fn suite_ticket_ages(context: &ApiState, out: &mut String) {
    out.push_str(
        "# HELP wxhub_suite_ticket_age_seconds Seconds since the suite's suite_ticket was pushed.\n",
    );
    out.push_str("# TYPE wxhub_suite_ticket_age_seconds gauge\n");
    let now = context.clock.now();
    for suite_id in context.control.registry().suite_ids() {
        let key = CredentialKey::new(AccountId::suite(&suite_id), Role::PushedTicket);
        let Some(pushed_at) = context
            .read_index
            .by_key(&key)
            .and_then(|credential| context.engine.fetched_at(&credential))
        else {
            continue;
        };
        let _ = writeln!(
            out,
            "wxhub_suite_ticket_age_seconds{{suite_id=\"{}\"}} {:.3}",
            suite_id,
            now.since(pushed_at).as_secs_f64()
        );
    }
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(context): State<ApiState>) -> Response {
    let mut out = String::with_capacity(4096);
    context.metrics.render(&mut out);
    let configured = context.read_index.configured();
    remaining_lives(&context, &configured, &mut out);
    verify_ticket_ages(&context, &mut out);
    suite_ticket_ages(&context, &mut out);
    if let Some(budgets) = context
        .engine
        .force_budgets(&configured, PER_CREDENTIAL_SERIES_LIMIT)
    {
        out.push_str(
            "# HELP wxhub_force_refresh_budget_remaining Stable-mode force refreshes left today.\n",
        );
        out.push_str("# TYPE wxhub_force_refresh_budget_remaining gauge\n");
        for (key, left) in budgets {
            let _ = writeln!(
                out,
                "wxhub_force_refresh_budget_remaining{{key=\"{key}\"}} {left}"
            );
        }
    }
    out.push_str(
        "# HELP wxhub_gateway_replay_bytes Request bytes the gateway holds for replays now.\n",
    );
    out.push_str("# TYPE wxhub_gateway_replay_bytes gauge\n");
    let _ = writeln!(
        out,
        "wxhub_gateway_replay_bytes {}",
        context.forwarder.replay_bytes_held()
    );
    out.push_str("# HELP wxhub_credentials Credentials by kind and state.\n");
    out.push_str("# TYPE wxhub_credentials gauge\n");
    for ((kind, state), n) in context.engine.state_counts() {
        let _ = writeln!(
            out,
            "wxhub_credentials{{kind=\"{kind}\",state=\"{}\"}} {n}",
            state.as_str()
        );
    }
    let mut response = out.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
