//! A corp administrator and the provider console, played through mock-only endpoints (Work
//! WeChat has none of these):
//!
//! - `POST /mock/install` `{"suite_id","corpid"?,"corp_name"?,"agentid"?,"pre_auth_code"?}`: a
//!   corp installs a suite; the `create_auth` push carries the temporary `auth_code`. With a
//!   `pre_auth_code` the install went through an install link: the code comes back in the answer
//!   (as the redirect would carry it) and nothing is pushed.
//! - `POST /mock/uninstall` `{"suite_id","corpid"}`: `cancel_auth`; the corp's permanent code,
//!   tokens and codes die.
//! - `POST /mock/reset_permanent_code` `{"suite_id","corpid"}`: the old permanent code dies at
//!   once; `reset_permanent_code` carries an `auth_code` for the new one.
//! - `POST /mock/change_auth` `{"suite_id","corpid"}`: `change_auth`.
//! - `POST /mock/suites/{suite_id}/push_ticket`: a `suite_ticket` push now (the provider
//!   console's "refresh ticket" button).
//! - `POST /mock/suites/{suite_id}/verify_url`: the URL verification Work WeChat makes when a
//!   callback URL is saved.
//! - `GET /mock/suites/{suite_id}/installations`: every installed corp with its permanent code,
//!   for benchmarks and tests. A test backdoor: Work WeChat never lists permanent codes.
//!
//! Each push is sent before the answer, which says what became of it, so a test can go on
//! without polling.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::install::{self, InstallRequest, Installed};
use super::push;
use crate::authorize::{error, outcome_json};
use crate::component::ControlError;
use crate::state::Shared;

/// Longest corpid accepted (real ones are 18 characters).
const MAX_CORPID_LEN: usize = 64;
/// Longest corp name accepted.
const MAX_CORP_NAME_LEN: usize = 128;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/mock/install", post(install_suite))
        .route("/mock/uninstall", post(uninstall))
        .route("/mock/reset_permanent_code", post(reset))
        .route("/mock/change_auth", post(change_auth))
        .route("/mock/suites/{suite_id}/push_ticket", post(push_ticket))
        .route("/mock/suites/{suite_id}/verify_url", post(verify_url))
        .route("/mock/suites/{suite_id}/installations", get(installations))
}

/// The body of the four administrator endpoints; only `/mock/install` takes more than
/// `suite_id` and `corpid`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    suite_id: String,
    #[serde(default)]
    corpid: Option<String>,
    #[serde(default)]
    corp_name: Option<String>,
    #[serde(default)]
    agentid: Option<u64>,
    #[serde(default)]
    pre_auth_code: Option<String>,
}

fn parse(body: &[u8]) -> Result<Body, ControlError> {
    let body: Body = serde_json::from_slice(body).map_err(|e| {
        ControlError::BadRequest(format!(
            "expected {{\"suite_id\", \"corpid\"?, \"corp_name\"?, \"agentid\"?, \"pre_auth_code\"?}}: {e}"
        ))
    })?;
    if let Some(corpid) = &body.corpid {
        let valid = !corpid.is_empty()
            && corpid.len() <= MAX_CORPID_LEN
            && corpid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(ControlError::BadRequest(format!(
                "corpid must be 1 to {MAX_CORPID_LEN} characters of [A-Za-z0-9_-]"
            )));
        }
    }
    if body
        .corp_name
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.chars().count() > MAX_CORP_NAME_LEN)
    {
        return Err(ControlError::BadRequest(format!(
            "corp_name must be 1 to {MAX_CORP_NAME_LEN} characters"
        )));
    }
    if body.agentid == Some(0) || body.agentid.is_some_and(|a| a > u64::from(u32::MAX)) {
        return Err(ControlError::BadRequest(
            "agentid must be a positive 32-bit number".into(),
        ));
    }
    Ok(body)
}

/// `suite_id` and `corpid` of a body that must name an installation and nothing else.
fn installation_of(body: &[u8], endpoint: &str) -> Result<(String, String), ControlError> {
    let body = parse(body)?;
    if body.corp_name.is_some() || body.agentid.is_some() || body.pre_auth_code.is_some() {
        return Err(ControlError::BadRequest(format!(
            "{endpoint} takes suite_id and corpid only"
        )));
    }
    let corpid = body
        .corpid
        .ok_or_else(|| ControlError::BadRequest("corpid is required".into()))?;
    Ok((body.suite_id, corpid))
}

async fn install_suite(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let installed = parse(&body).and_then(|body| {
        let request = InstallRequest {
            suite_id: body.suite_id,
            corpid: body.corpid,
            corp_name: body.corp_name,
            agentid: body.agentid,
            pre_auth_code: body.pre_auth_code,
        };
        shared.with_suites(|_, ctx| install::install(ctx, request, Instant::now()))
    });
    match installed {
        Ok(installed) => answer_installed(&shared, installed).await,
        Err(e) => error(e),
    }
}

async fn reset(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let installed = installation_of(&body, "/mock/reset_permanent_code").and_then(|(s, c)| {
        shared.with_suites(|_, ctx| install::reset_permanent_code(ctx, s, c, Instant::now()))
    });
    match installed {
        Ok(installed) => answer_installed(&shared, installed).await,
        Err(e) => error(e),
    }
}

/// Sends the push of an install or reset, if any, and tells the caller the code and the push's
/// fate (`null` for an install through an install link, which pushes nothing).
async fn answer_installed(shared: &Shared, installed: Installed) -> Response {
    let Installed {
        corpid,
        corp_name,
        agentid,
        auth_code,
        expires_in,
        push,
    } = installed;
    let outcome = match push {
        Some(message) => outcome_json(&push::send(shared, message).await),
        None => Value::Null,
    };
    Json(json!({
        "corpid": corpid,
        "corp_name": corp_name,
        "agentid": agentid,
        "auth_code": auth_code,
        "expires_in": expires_in,
        "push": outcome,
    }))
    .into_response()
}

async fn uninstall(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let pushed = installation_of(&body, "/mock/uninstall").and_then(|(s, c)| {
        shared
            .with_suites(|_, ctx| install::uninstall(ctx, s, c.clone(), Instant::now()))
            .map(|message| (c, message))
    });
    answer_pushed(&shared, pushed).await
}

async fn change_auth(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let pushed = installation_of(&body, "/mock/change_auth").and_then(|(s, c)| {
        shared
            .with_suites(|_, ctx| install::change_auth(ctx, s, c.clone()))
            .map(|message| (c, message))
    });
    answer_pushed(&shared, pushed).await
}

/// Sends a `cancel_auth` or `change_auth` push about `corpid` and tells the caller its fate.
async fn answer_pushed(
    shared: &Shared,
    pushed: Result<(String, push::SuiteMessage), ControlError>,
) -> Response {
    match pushed {
        Ok((corpid, message)) => {
            let outcome = push::send(shared, message).await;
            Json(json!({"corpid": corpid, "push": outcome_json(&outcome)})).into_response()
        }
        Err(e) => error(e),
    }
}

async fn push_ticket(State(shared): State<Arc<Shared>>, Path(suite_id): Path<String>) -> Response {
    if !shared.suite_settings().suites.contains_key(&suite_id) {
        return error(unknown(&suite_id));
    }
    let outcome = push::push_ticket(&shared, &suite_id).await;
    Json(json!({"push": outcome_json(&outcome)})).into_response()
}

async fn verify_url(State(shared): State<Arc<Shared>>, Path(suite_id): Path<String>) -> Response {
    match push::verify_url(&shared, &suite_id).await {
        Ok(outcome) => {
            let mut answer = outcome_json(&outcome);
            answer["verified"] = answer["acknowledged"].take();
            if let Some(fields) = answer.as_object_mut() {
                fields.remove("acknowledged");
            }
            Json(answer).into_response()
        }
        Err(e) => error(e),
    }
}

async fn installations(
    State(shared): State<Arc<Shared>>,
    Path(suite_id): Path<String>,
) -> Response {
    let listed = shared.with_suites(|_, ctx| {
        install::installations(ctx, &suite_id)
            .map(|list| json!({"suite_id": suite_id, "total": list.len(), "installations": list}))
    });
    match listed {
        Ok(listed) => Json(listed).into_response(),
        Err(e) => error(e),
    }
}

fn unknown(suite_id: &str) -> ControlError {
    ControlError::NotFound(format!("no suite {suite_id:?} is configured"))
}
