//! Work WeChat suites' routes: the command callback receiver (Work WeChat's URL check and its
//! pushes), the install flow (pre-auth code, registering the redirect's code) and the installed
//! corps' listing. The suite token, each installed corp's credentials and the provider token are
//! read through the routes every kind shares ([`super::credentials::account_routes`]).

use axum::extract::{Path, Query, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::admin::{
    audited, control_error, identifier, non_empty_secret, put_spec, refresh_overrides, tickets,
};
use super::children::ListQuery;
use super::{
    authorize, authorize_admin, authorize_named, finish, json_body, json_ok, plain, AccountId,
    AdminTarget, ApiError, ApiState,
};
use crate::configuration::Secret;
use crate::configuration::{Scope, SuiteSettings};
use crate::engine::RefreshError;
use crate::envelope::Refused;
use crate::metrics::Route;
use crate::registry::AccountSpec;
use crate::suites::SuiteError;
use crate::token::CorpTicketKind;
use crate::upstream::UpstreamError;

/// The body of `POST …/authorizations`.
#[derive(Deserialize)]
struct AuthorizationBody {
    auth_code: String,
}

fn suite_error(error: SuiteError) -> ApiError {
    let message = error.to_string();
    match error {
        SuiteError::UnknownSuite(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_suite", message)
        }
        SuiteError::Refused(Refused::Signature) => {
            ApiError::new(StatusCode::FORBIDDEN, "bad_signature", message)
        }
        SuiteError::Refused(Refused::Envelope(_)) => ApiError::bad_request("bad_envelope", message),
        SuiteError::Refresh(RefreshError::Upstream(UpstreamError::Config { .. })) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "wechat_refused", message)
        }
        SuiteError::Refresh(_) | SuiteError::Control(_) => {
            ApiError::unavailable("suite_unavailable", message)
        }
    }
}

/// The answer to a request from Work WeChat that failed: quiet when anyone could have sent it.
fn refused(context: &ApiState, suite_id: &str, error: SuiteError) -> Response {
    match &error {
        SuiteError::Refused(_) | SuiteError::UnknownSuite(_) => {
            tracing::debug!(suite = ?suite_id, error = %error, "push refused");
        }
        _ => {
            tracing::warn!(suite = ?suite_id, error = %error, "push not stored; not acknowledged");
        }
    }
    let response = suite_error(error).into_response();
    context
        .metrics
        .count_request(Route::Other, response.status().as_u16());
    response
}

/// `GET /wechat/suites/{suite_id}/events?msg_signature&timestamp&nonce&echostr`: Work WeChat's
/// check of the command callback URL, answered with the decrypted `echostr` in plain text.
pub async fn verify_url(
    State(context): State<ApiState>,
    Path(suite_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    match context
        .suites
        .echo(&suite_id, query.as_deref().unwrap_or(""))
    {
        Ok(echo) => {
            context.metrics.count_request(Route::Other, 200);
            plain(echo)
        }
        Err(error) => refused(&context, &suite_id, error),
    }
}

/// `POST /wechat/suites/{suite_id}/events`: a push from Work WeChat. Answers `success` only once
/// what it carries is durably stored.
pub async fn events(
    State(context): State<ApiState>,
    Path(suite_id): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let result = context
        .suites
        .receive(&suite_id, query.as_deref().unwrap_or(""), &body)
        .await;
    match result {
        Ok(()) => {
            context.metrics.count_request(Route::Other, 200);
            plain("success".to_string())
        }
        Err(error) => refused(&context, &suite_id, error),
    }
}

/// `POST /v1/suites/{s}/pre_auth_code` (authorize)
pub async fn pre_auth_code(
    State(context): State<ApiState>,
    Path(suite_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        authorize(
            &context,
            &headers,
            Scope::Authorize,
            Some(&AccountId::suite(&suite_id)),
        )?;
        let (code, expires_in) = context
            .suites
            .pre_auth_code(&suite_id)
            .await
            .map_err(suite_error)?;
        let body = serde_json::json!({ "pre_auth_code": code, "expires_in": expires_in });
        Ok(json_ok(Bytes::from(body.to_string())))
    }
    .await;
    finish(&context, Route::Other, result)
}

/// `POST /v1/suites/{s}/authorizations` (authorize): registers the corp of the install
/// redirect's `auth_code`.
pub async fn authorizations(
    State(context): State<ApiState>,
    Path(suite_id): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let result = async {
        let consumer = authorize_named(
            &context,
            &headers,
            Scope::Authorize,
            Some(&AccountId::suite(&suite_id)),
        )?;
        let body: AuthorizationBody = json_body(
            request,
            r#"{"auth_code":"<the code of the install redirect>"}"#,
        )
        .await?;
        if body.auth_code.is_empty() || body.auth_code.len() > 512 {
            return Err(ApiError::bad_request(
                "invalid_json",
                "auth_code must be 1 to 512 characters",
            ));
        }
        let view = context
            .suites
            .exchange(&suite_id, &body.auth_code)
            .await
            .map_err(suite_error);
        let (outcome, target) = match &view {
            Ok(view) => ("ok", format!("auth_corp/{suite_id}/{}", view.corpid)),
            Err(e) => (e.code, format!("suite/{suite_id}")),
        };
        context
            .control
            .audit()
            .record(&consumer, "register_auth_corp", &target, outcome);
        let view = view?;
        let body = serde_json::json!({
            "corpid": view.corpid,
            "corp_name": view.corp_name,
            "agentid": view.agentid,
            "state": view.state,
        });
        Ok(json_ok(Bytes::from(body.to_string())))
    }
    .await;
    finish(&context, Route::Other, result)
}

/// `GET /v1/suites/{s}/corps?state=&cursor=&limit=` (admin): one page, never a permanent code
/// or a token.
pub async fn list_corps(
    State(context): State<ApiState>,
    Path(suite_id): Path<String>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let result = (|| {
        authorize_admin(
            &context,
            &headers,
            AdminTarget::Account(&AccountId::suite(&suite_id)),
        )?;
        let (state, cursor, limit) = query.checked()?;
        let (page, next) = context
            .suites
            .list(&suite_id, state, cursor, limit)
            .map_err(suite_error)?;
        let body = super::children::page_body("corps", &page, next.as_deref())?;
        Ok(json_ok(body))
    })();
    finish(&context, Route::Admin, result)
}

/// The body of `PUT /v1/admin/suites/{suite_id}`: what a `[[suites]]` entry holds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteBody {
    /// The suite's secret (`suite_secret`).
    secret: String,
    /// The command callback's Token.
    token: String,
    /// The command callback's 43-character EncodingAESKey.
    encoding_aes_key: String,
    /// The key before the last change in the provider console, while pushes sealed with it may
    /// still arrive.
    #[serde(default)]
    previous_encoding_aes_key: Option<String>,
    /// JS-SDK tickets kept fresh for every installed corp.
    #[serde(default)]
    corp_tickets: Vec<String>,
    /// e.g. `"20m"`, overriding `[refresh] refresh_before_expired`.
    #[serde(default)]
    refresh_before_expired: Option<String>,
    /// e.g. `"30s"`, overriding `[refresh] refresh_retry_interval`.
    #[serde(default)]
    refresh_retry_interval: Option<String>,
    /// e.g. `"5m"`, overriding `[refresh] check_interval`.
    #[serde(default)]
    check_interval: Option<String>,
}

const SUITE_SHAPE: &str =
    r#"{"secret":"…","token":"…","encoding_aes_key":"<43 characters>","corp_tickets":["jsapi"]}"#;

/// An EncodingAESKey of a body's `field`: 43 characters that decode to the 32-byte key.
fn aes_key(field: &str, text: &str) -> Result<Secret, ApiError> {
    if wechat_crypto::EncodingAesKey::parse(text).is_err() {
        return Err(ApiError::bad_request(
            "invalid_secret",
            format!("{field} must be the suite's 43-character EncodingAESKey (letters and digits)"),
        ));
    }
    Ok(Secret::new(text.to_string()))
}

/// The suite a `PUT` body describes.
fn suite_settings(suite_id: &str, body: SuiteBody) -> Result<SuiteSettings, ApiError> {
    Ok(SuiteSettings {
        suite_id: identifier("suite_id", suite_id)?.to_string(),
        secret: non_empty_secret("secret", &body.secret)?,
        token: non_empty_secret("token", &body.token)?,
        encoding_aes_key: aes_key("encoding_aes_key", &body.encoding_aes_key)?,
        previous_encoding_aes_key: body
            .previous_encoding_aes_key
            .as_deref()
            .map(|key| aes_key("previous_encoding_aes_key", key))
            .transpose()?,
        corp_tickets: tickets::<CorpTicketKind>(
            &body.corp_tickets,
            "\"jsapi\" or \"agent_config\"",
        )?,
        refresh: refresh_overrides([
            &body.refresh_before_expired,
            &body.refresh_retry_interval,
            &body.check_interval,
        ])?,
    })
}

/// `PUT /v1/admin/suites/{suite_id}` (admin): adds or changes a suite at runtime, its secret and
/// push keys sealed with the master key. Its suite token is fetched once Work WeChat pushes a
/// suite ticket to its command callback URL.
pub async fn put_suite(
    State(context): State<ApiState>,
    Path(suite_id): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let account = AccountId::suite(&suite_id);
    let result = async {
        let consumer = authorize_admin(&context, &headers, AdminTarget::Account(&account))?;
        let stored = async {
            let body: SuiteBody = json_body(request, SUITE_SHAPE).await?;
            let settings = suite_settings(&suite_id, body)?;
            put_spec(&context, AccountSpec::Suite(Box::new(settings)), None).await
        }
        .await;
        audited(
            &context,
            &consumer,
            "put_account",
            &account.to_string(),
            stored,
        )
    }
    .await;
    finish(&context, Route::Admin, result)
}

/// `DELETE /v1/admin/suites/{suite_id}` (admin): removes a runtime suite. Refused while a corp
/// has it installed: the corps' permanent codes would stop being usable without the suite.
pub async fn delete_suite(
    State(context): State<ApiState>,
    Path(suite_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let account = AccountId::suite(&suite_id);
    let result = async {
        let consumer = authorize_admin(&context, &headers, AdminTarget::Account(&account))?;
        let (installed, _) =
            context
                .control
                .registry()
                .auth_corps_page(&suite_id, None, 1, |corp| !corp.revoked);
        let removed = if installed.is_empty() {
            context
                .control
                .delete(&account)
                .await
                .map(|()| StatusCode::NO_CONTENT.into_response())
                .map_err(control_error)
        } else {
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "suite_installed",
                "corps have this suite installed; it can be removed once they uninstall it",
            ))
        };
        audited(
            &context,
            &consumer,
            "delete_account",
            &account.to_string(),
            removed,
        )
    }
    .await;
    finish(&context, Route::Admin, result)
}
