//! The account owner's side of the third-party platform, played through `/mock/*` endpoints:
//! `POST /mock/authorize` (an account authorizes a platform), `POST /mock/updateauthorize` (it
//! changes the permissions it grants) and `POST /mock/unauthorize` (it withdraws). Each sends the
//! push WeChat sends and answers only once the push is over, with what became of it, so that a
//! test can go on without polling.

use std::sync::Arc;
use tokio::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::component::{self, AuthorizeRequest, ControlError, Granted};
use crate::push::{self, PushOutcome};
use crate::state::Shared;

/// Permission sets named in one request, at most (WeChat has a few dozen).
const MAX_FUNC_INFO: usize = 256;
/// Longest authorizer appid accepted (real ones are 18 characters).
const MAX_APPID_LEN: usize = 64;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/mock/authorize", post(authorize))
        .route("/mock/updateauthorize", post(update))
        .route("/mock/unauthorize", post(unauthorize))
}

/// The body of the three endpoints; which fields apply depends on the endpoint.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    /// The platform concerned.
    component_appid: String,
    /// The account; required except for `/mock/authorize`, which makes one up.
    #[serde(default)]
    authorizer_appid: Option<String>,
    /// Permission-set ids, as numbers (`[1, 2]`) or as WeChat writes them
    /// (`[{"funcscope_category":{"id":1}}]`).
    #[serde(default)]
    func_info: Option<Vec<Value>>,
    /// The pre-auth code of the link the owner followed (`/mock/authorize` only).
    #[serde(default)]
    pre_auth_code: Option<String>,
}

fn parse(body: &[u8]) -> Result<Body, ControlError> {
    let body: Body = serde_json::from_slice(body).map_err(|e| {
        ControlError::BadRequest(format!(
            "expected {{\"component_appid\", \"authorizer_appid\"?, \"func_info\"?, \"pre_auth_code\"?}}: {e}"
        ))
    })?;
    if let Some(appid) = &body.authorizer_appid {
        let valid = !appid.is_empty()
            && appid.len() <= MAX_APPID_LEN
            && appid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(ControlError::BadRequest(format!(
                "authorizer_appid must be 1 to {MAX_APPID_LEN} characters of [A-Za-z0-9_-]"
            )));
        }
    }
    Ok(body)
}

fn func_info(items: Option<Vec<Value>>) -> Result<Option<Vec<u32>>, ControlError> {
    let Some(items) = items else {
        return Ok(None);
    };
    if items.len() > MAX_FUNC_INFO {
        return Err(ControlError::BadRequest(format!(
            "func_info has more than {MAX_FUNC_INFO} entries"
        )));
    }
    items
        .iter()
        .map(|item| {
            item.as_u64()
                .or_else(|| item["funcscope_category"]["id"].as_u64())
                .and_then(|id| u32::try_from(id).ok())
                .filter(|id| *id > 0)
                .ok_or_else(|| {
                    ControlError::BadRequest(format!(
                        "func_info entries must be positive ids or {{\"funcscope_category\":{{\"id\":N}}}}, got {item}"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn required_authorizer(body: &Body) -> Result<String, ControlError> {
    body.authorizer_appid
        .clone()
        .ok_or_else(|| ControlError::BadRequest("authorizer_appid is required".into()))
}

async fn authorize(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let granted = parse(&body).and_then(|body| {
        let request = AuthorizeRequest {
            func_info: func_info(body.func_info)?,
            component_appid: body.component_appid,
            authorizer_appid: body.authorizer_appid,
            pre_auth_code: body.pre_auth_code,
        };
        shared.with_platform(|ps, ctx| component::authorize(ps, ctx, request, Instant::now()))
    });
    match granted {
        Ok(granted) => answer_granted(&shared, granted).await,
        Err(e) => error(e),
    }
}

async fn update(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let granted = parse(&body).and_then(|body| {
        if body.pre_auth_code.is_some() {
            return Err(ControlError::BadRequest(
                "pre_auth_code applies to /mock/authorize only".into(),
            ));
        }
        let authorizer = required_authorizer(&body)?;
        let func_info = func_info(body.func_info)?;
        shared.with_platform(|ps, ctx| {
            component::update_authorization(
                ps,
                ctx,
                body.component_appid,
                authorizer,
                func_info,
                Instant::now(),
            )
        })
    });
    match granted {
        Ok(granted) => answer_granted(&shared, granted).await,
        Err(e) => error(e),
    }
}

async fn unauthorize(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let message = parse(&body).and_then(|body| {
        if body.func_info.is_some() || body.pre_auth_code.is_some() {
            return Err(ControlError::BadRequest(
                "/mock/unauthorize takes component_appid and authorizer_appid only".into(),
            ));
        }
        let authorizer = required_authorizer(&body)?;
        let message = shared.with_platform(|_, ctx| {
            component::unauthorize(
                ctx,
                body.component_appid,
                authorizer.clone(),
                Instant::now(),
            )
        })?;
        Ok((authorizer, message))
    });
    match message {
        Ok((authorizer, message)) => {
            let outcome = push::send(&shared, message).await;
            Json(json!({
                "authorizer_appid": authorizer,
                "push": outcome_json(&outcome),
            }))
            .into_response()
        }
        Err(e) => error(e),
    }
}

/// Sends the push of an authorization or update and tells the caller the code and the push's
/// fate. The code also works through the redirect flow: `api_query_auth` takes it either way.
async fn answer_granted(shared: &Shared, granted: Granted) -> Response {
    let Granted {
        authorizer_appid,
        authorization_code,
        code_expires_in,
        pre_auth_code,
        func_info,
        push,
    } = granted;
    let outcome = push::send(shared, push).await;
    Json(json!({
        "authorizer_appid": authorizer_appid,
        "authorization_code": authorization_code,
        "expires_in": code_expires_in,
        "pre_auth_code": pre_auth_code,
        "func_info": func_info,
        "push": outcome_json(&outcome),
    }))
    .into_response()
}

/// `{"sent","acknowledged","error"}`: whether a push went out and whether the receiver answered
/// `success`.
pub(crate) fn outcome_json(outcome: &PushOutcome) -> Value {
    match outcome {
        PushOutcome::NotSent => {
            json!({"sent": false, "acknowledged": false, "error": "no push URL is configured"})
        }
        PushOutcome::Acknowledged => json!({"sent": true, "acknowledged": true, "error": null}),
        PushOutcome::Failed(why) => json!({"sent": true, "acknowledged": false, "error": why}),
    }
}

pub(crate) fn error(e: ControlError) -> Response {
    let (status, message) = match e {
        ControlError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
        ControlError::NotFound(m) => (StatusCode::NOT_FOUND, m),
        ControlError::Conflict(m) => (StatusCode::CONFLICT, m),
    };
    (status, Json(json!({ "error": message }))).into_response()
}
