//! HTTP routes: the WeChat endpoints, each through the same pipeline (identify and count, fault,
//! rules), and the mock's own `/mock/*` control endpoints (`authorize.rs` for the platforms,
//! `suite/control.rs` for Work WeChat's suites).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::endpoint::Endpoint;
use crate::errors;
use crate::input::Input;
use crate::reply::Reply;
use crate::server::Peer;
use crate::state::{EarlyInvalidation, Shared};
use crate::{FaultRule, MockStats};

/// Bodies WeChat accepts are small; anything larger is refused before it is parsed.
const MAX_BODY: usize = 64 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let mut router = Router::new();
    for endpoint in Endpoint::ALL {
        router = router.route(
            endpoint.path(),
            any(move |State(shared): State<Arc<Shared>>, request: Request| {
                handle(shared, endpoint, request)
            }),
        );
    }
    router
        .merge(crate::authorize::routes())
        .merge(crate::suite::control::routes())
        .route("/mock/stats", get(stats))
        .route("/mock/invalidate_token", post(invalidate_token))
        .route(
            "/mock/faults",
            get(list_faults).post(add_faults).delete(clear_faults),
        )
        .with_state(shared)
}

/// The pipeline of every WeChat endpoint.
async fn handle(shared: Arc<Shared>, endpoint: Endpoint, request: Request) -> Response {
    let _in_flight = shared.enter();
    let (parts, body) = request.into_parts();
    let peer = parts.extensions.get::<Peer>().map(|p| p.0.ip());
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let input = Input::new(endpoint, parts.method, &parts.uri, &body, peer);
    let (account, fault) = shared.admit(endpoint, &input);
    let hold = fault.as_ref().and_then(|rule| rule.hold_answer_ms);
    let mut reply = None;
    if let Some(rule) = fault {
        if let Some(ms) = rule.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(faulty) = fault_reply(&rule, endpoint, &account, &input) {
            shared.record_outcome(endpoint, &account, faulty.errcode);
            tracing::debug!(path = endpoint.path(), %account, errcode = ?faulty.errcode, "fault");
            reply = Some(faulty);
        }
    }
    let reply = reply.unwrap_or_else(|| {
        let served = shared.serve(endpoint, &input, &account);
        tracing::debug!(path = endpoint.path(), %account, errcode = ?served.errcode, "answered");
        served
    });
    if let Some(ms) = hold {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    reply.into_response()
}

/// What a fired rule answers instead of the endpoint, or `None` for a delay-only rule.
fn fault_reply(
    rule: &FaultRule,
    endpoint: Endpoint,
    account: &str,
    input: &Input,
) -> Option<Reply> {
    if rule.drop_connection {
        return Some(Reply::dropped());
    }
    let status = rule
        .http_status
        .map(|s| StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    match (status, rule.errcode) {
        (status, Some(code)) => {
            let errmsg = rule.errmsg.clone().unwrap_or_else(|| {
                let flavor = endpoint.flavor(account, input);
                let base = errors::base_text(code, flavor, endpoint);
                errors::errmsg(base, code, flavor, input.peer())
            });
            Some(Reply::error_text(
                status.unwrap_or(StatusCode::OK),
                code,
                &errmsg,
            ))
        }
        (Some(status), None) => Some(Reply::http_status(status)),
        (None, None) => None,
    }
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<MockStats> {
    Json(shared.stats())
}

/// `POST /mock/invalidate_token` with `{"token": T}`: Work WeChat invalidates a live Work token
/// (a Work app's or installed corp's access token, a suite or provider token) before its expiry,
/// as it may for operational reasons. 404 for a value that is not a live token, 400 for a token
/// that is not Work WeChat's.
async fn invalidate_token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let token = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(fields)) => match fields.get("token") {
            Some(Value::String(token)) if !token.is_empty() => token.clone(),
            _ => return bad_request("token must be a non-empty string".into()),
        },
        _ => return bad_request(r#"expected {"token": "…"}"#.into()),
    };
    match shared.invalidate_early(&token) {
        Ok(kind) => Json(json!({ "invalidated": kind })).into_response(),
        Err(EarlyInvalidation::NotLive) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no live token has this value" })),
        )
            .into_response(),
        Err(EarlyInvalidation::NotWork) => bad_request(
            "not a Work WeChat token: only access tokens of Work apps and installed corps, suite \
             tokens and provider tokens are invalidated early"
                .into(),
        ),
    }
}

async fn list_faults(State(shared): State<Arc<Shared>>) -> Json<Vec<FaultRule>> {
    Json(shared.faults())
}

/// `POST /mock/faults` with one rule or an array of rules; all are checked before any is added.
async fn add_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let parsed = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(items)) => items
            .into_iter()
            .map(serde_json::from_value::<FaultRule>)
            .collect::<Result<Vec<_>, _>>(),
        Ok(item) => serde_json::from_value::<FaultRule>(item).map(|rule| vec![rule]),
        Err(e) => Err(e),
    };
    let rules = match parsed {
        Ok(rules) => rules,
        Err(e) => return bad_request(format!("not a fault rule or array of rules: {e}")),
    };
    if let Some(message) = rules.iter().find_map(|r| r.validate().err()) {
        return bad_request(message);
    }
    let added = rules.len();
    for rule in rules {
        shared.add_fault(rule);
    }
    Json(json!({ "added": added, "active": shared.faults().len() })).into_response()
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({ "cleared": shared.clear_faults() }))
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}
