//! Admin routes that change which credentials exist and who may use them: runtime apps and Work
//! apps, runtime consumers, imported tokens, and configuration reloads. Every change goes through
//! the control plane ([`crate::control::Control`]), which keeps every instance sharing the store
//! in step.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::{
    authorize_admin, authorize_named, finish, json_body, resolve, AccountId, AdminTarget, ApiError,
    ApiState,
};
use crate::configuration::{parse_duration, RefreshOverrides, Scope, Secret, TokenMode};
use crate::control::ControlError;
use crate::engine::ImportError;
use crate::metrics::Route;
use crate::read::Credential;
use crate::registry::AccountSpec;
use crate::token::{CorpTicketKind, TicketKind};

/// The body of `PUT /v1/admin/apps/{appid}` and `PUT /v1/admin/corps/{corpid}/agents/{agentid}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountBody {
    /// The AppSecret (or the Work app's secret).
    secret: String,
    /// `stable` (default) or `legacy`; apps only.
    #[serde(default)]
    mode: Option<String>,
    /// JS-SDK tickets to keep fresh.
    #[serde(default)]
    tickets: Vec<String>,
    /// e.g. `"20m"`, overriding `[refresh] refresh_before_expired`.
    #[serde(default)]
    refresh_before_expired: Option<String>,
    /// e.g. `"30s"`, overriding `[refresh] refresh_retry_interval`.
    #[serde(default)]
    refresh_retry_interval: Option<String>,
    /// e.g. `"5m"`, overriding `[refresh] check_interval`.
    #[serde(default)]
    check_interval: Option<String>,
    /// A live token another system fetched, served instead of a first fetch (a new app only).
    #[serde(default)]
    access_token: Option<String>,
    /// That token's remaining life in seconds.
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The body of `PUT /v1/admin/apps/{appid}/access_token`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    /// The live token another system fetched.
    access_token: String,
    /// Its remaining life in seconds.
    expires_in: u64,
    /// Refuse the import if the store holds a generation above this.
    #[serde(default)]
    generation: Option<u64>,
}

const ACCOUNT_SHAPE: &str = r#"{"secret":"…","mode":"stable|legacy","tickets":["jsapi"]}"#;

/// Checks an identifier from the path the way the configuration checks appids.
pub(super) fn identifier<'a>(what: &str, text: &'a str) -> Result<&'a str, ApiError> {
    // Path segments of its own routes and storage keys: `.` and `..` would be read as the
    // current and parent directory.
    let valid = !text.is_empty()
        && text.len() <= 64
        && !text.starts_with('.')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(text)
    } else {
        Err(ApiError::bad_request(
            "invalid_account",
            format!(
                "{what} may contain only letters, digits, '_', '-' and '.' (at most 64), and \
                 may not start with '.'"
            ),
        ))
    }
}

fn overrides(body: &AccountBody) -> Result<RefreshOverrides, ApiError> {
    refresh_overrides([
        &body.refresh_before_expired,
        &body.refresh_retry_interval,
        &body.check_interval,
    ])
}

/// A body's `refresh_before_expired`, `refresh_retry_interval` and `check_interval`, in that
/// order, as an account's refresh timing.
pub(super) fn refresh_overrides(
    [before, retry, check]: [&Option<String>; 3],
) -> Result<RefreshOverrides, ApiError> {
    let duration = |field: &str, text: &Option<String>| -> Result<Option<Duration>, ApiError> {
        text.as_deref()
            .map(|t| match parse_duration(t) {
                Ok(d) if !d.is_zero() => Ok(d),
                _ => Err(ApiError::bad_request(
                    "invalid_duration",
                    format!("{field} must be a positive duration such as \"20m\" or \"30s\""),
                )),
            })
            .transpose()
    };
    Ok(RefreshOverrides {
        refresh_before_expired: duration("refresh_before_expired", before)?,
        refresh_retry_interval: duration("refresh_retry_interval", retry)?,
        check_interval: duration("check_interval", check)?,
    })
}

fn secret(body: &AccountBody) -> Result<Secret, ApiError> {
    non_empty_secret("secret", &body.secret)
}

/// A secret of a body's `field`, which must not be blank.
pub(super) fn non_empty_secret(field: &str, text: &str) -> Result<Secret, ApiError> {
    let secret = text.trim();
    if secret.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_secret",
            format!("{field} must not be empty"),
        ));
    }
    Ok(Secret::new(secret.to_string()))
}

pub(super) fn tickets<T: std::str::FromStr>(
    names: &[String],
    expected: &str,
) -> Result<Vec<T>, ApiError> {
    let mut kinds = Vec::new();
    for name in names {
        let kind = name.parse().map_err(|_| {
            ApiError::bad_request(
                "invalid_ticket",
                format!("unknown ticket {name:?}; expected {expected}"),
            )
        })?;
        if !kinds
            .iter()
            .any(|k: &T| std::mem::discriminant(k) == std::mem::discriminant(&kind))
        {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

pub(super) fn control_error(error: ControlError) -> ApiError {
    let message = error.to_string();
    match error {
        ControlError::FromConfig(_) => {
            ApiError::new(StatusCode::CONFLICT, "defined_in_configuration", message)
        }
        ControlError::NotFound(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_account", message)
        }
        ControlError::NoMasterKey => ApiError::bad_request("no_master_key", message),
        ControlError::Config(_) => ApiError::bad_request("invalid_configuration", message),
        ControlError::NoFile => {
            ApiError::new(StatusCode::CONFLICT, "no_configuration_file", message)
        }
        ControlError::NotNew(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
        ControlError::Store(_) => ApiError::unavailable("store_unavailable", message),
        ControlError::WrongKind(_) => ApiError::bad_request("wrong_kind", message),
        ControlError::RefusedByWechat(..) => ApiError::bad_request("refused_by_wechat", message),
        ControlError::ConsumerFromConfig(_) => {
            ApiError::new(StatusCode::CONFLICT, "defined_in_configuration", message)
        }
        ControlError::UnknownConsumer(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_consumer", message)
        }
        ControlError::KeyInUse(_) => ApiError::new(StatusCode::CONFLICT, "key_in_use", message),
        ControlError::TooManyConsumers => {
            ApiError::new(StatusCode::CONFLICT, "too_many_consumers", message)
        }
        ControlError::Seal(_) | ControlError::Unreadable(_) | ControlError::UnknownComponent(_) => {
            ApiError::internal(message)
        }
    }
}

/// Records an admin action that passed authorization, whatever its outcome (its error code), and
/// passes its result on.
pub(super) fn audited<T>(
    context: &ApiState,
    consumer: &str,
    action: &'static str,
    target: &str,
    result: Result<T, ApiError>,
) -> Result<T, ApiError> {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(error) => error.code,
    };
    context
        .control
        .audit()
        .record(consumer, action, target, outcome);
    result
}

/// Refuses a token to import that the hub already serves for another credential than `own`: the
/// gateway tells whose a call is by its token, and would replay one account's call with
/// another's token.
fn served_for_another(
    context: &ApiState,
    value: &str,
    own: Option<&Arc<Credential>>,
) -> Result<(), ApiError> {
    match context.read_index.serving(value, context.clock.now()) {
        Some(other) if own.is_none_or(|own| other.id != own.id) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this token is served for another credential",
        )),
        _ => Ok(()),
    }
}

async fn put_account(
    context: &ApiState,
    headers: &HeaderMap,
    request: Request,
    account: &AccountId,
    target: String,
    build: impl FnOnce(AccountBody) -> Result<AccountSpec, ApiError>,
) -> Result<Response, ApiError> {
    let consumer = authorize_admin(context, headers, AdminTarget::Account(account))?;
    let result = store_account(context, request, build).await;
    audited(context, &consumer, "put_account", &target, result)
}

async fn store_account(
    context: &ApiState,
    request: Request,
    build: impl FnOnce(AccountBody) -> Result<AccountSpec, ApiError>,
) -> Result<Response, ApiError> {
    let body: AccountBody = json_body(request, ACCOUNT_SHAPE).await?;
    let live_token = match (body.access_token.clone(), body.expires_in) {
        (None, None) => None,
        (Some(token), Some(secs)) if !token.trim().is_empty() && (1..=7200).contains(&secs) => {
            Some((token, Duration::from_secs(secs)))
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_json",
                "access_token and expires_in (1 to 7200 seconds) go together",
            ))
        }
    };
    if let Some((token, _)) = &live_token {
        served_for_another(context, token, None)?;
    }
    let spec = build(body)?;
    put_spec(context, spec, live_token).await
}

/// Stores a runtime account and answers with its first refresh's outcome and its credentials.
pub(super) async fn put_spec(
    context: &ApiState,
    spec: AccountSpec,
    live_token: Option<(String, Duration)>,
) -> Result<Response, ApiError> {
    let outcome = context
        .control
        .put(spec, live_token)
        .await
        .map_err(control_error)?;
    let credentials = context.engine.credentials_of(&outcome.credentials);
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = serde_json::json!({
        "account": outcome.account,
        "created": outcome.created,
        "first_refresh_error": outcome.error,
        "credentials": credentials,
    });
    Ok((status, super::json_ok(Bytes::from(body.to_string()))).into_response())
}

async fn delete_account(
    context: &ApiState,
    headers: &HeaderMap,
    id: AccountId,
) -> Result<Response, ApiError> {
    let consumer = authorize_admin(context, headers, AdminTarget::Account(&id))?;
    let result = context
        .control
        .delete(&id)
        .await
        .map(|()| StatusCode::NO_CONTENT.into_response())
        .map_err(control_error);
    audited(
        context,
        &consumer,
        "delete_account",
        &id.to_string(),
        result,
    )
}

/// `PUT /v1/admin/apps/{appid}`
pub async fn put_app(
    State(context): State<ApiState>,
    Path(appid): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let target = AccountId::App {
        appid: appid.clone(),
    }
    .to_string();
    let account = AccountId::app(&appid);
    let taken = context.control.registry().is_platform_appid(&appid);
    let result = put_account(&context, &headers, request, &account, target, |body| {
        if taken {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "appid_in_use",
                "this appid is a third-party platform's or one of its authorizers'",
            ));
        }
        let mode = match body.mode.as_deref() {
            None => TokenMode::default(),
            Some(text) => text
                .parse()
                .map_err(|why: String| ApiError::bad_request("invalid_mode", why))?,
        };
        Ok(AccountSpec::App {
            appid: identifier("appid", &appid)?.to_string(),
            secret: secret(&body)?,
            mode,
            tickets: tickets::<TicketKind>(&body.tickets, "\"jsapi\" or \"wx_card\"")?,
            refresh: overrides(&body)?,
        })
    })
    .await;
    finish(&context, Route::Admin, result)
}

/// `DELETE /v1/admin/apps/{appid}`
pub async fn delete_app(
    State(context): State<ApiState>,
    Path(appid): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = delete_account(&context, &headers, AccountId::App { appid }).await;
    finish(&context, Route::Admin, result)
}

/// `PUT /v1/admin/corps/{corpid}/agents/{agentid}`
pub async fn put_corp(
    State(context): State<ApiState>,
    Path((corpid, agentid)): Path<(String, String)>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let target = AccountId::Corp {
        corpid: corpid.clone(),
        agentid: agentid.clone(),
    }
    .to_string();
    let account = AccountId::corp(&corpid, &agentid);
    let result = put_account(&context, &headers, request, &account, target, |body| {
        if body.mode.is_some() {
            return Err(ApiError::bad_request(
                "invalid_mode",
                "Work WeChat apps have no mode",
            ));
        }
        Ok(AccountSpec::Corp {
            corpid: identifier("corpid", &corpid)?.to_string(),
            agentid: identifier("agentid", &agentid)?.to_string(),
            secret: secret(&body)?,
            tickets: tickets::<CorpTicketKind>(&body.tickets, "\"jsapi\" or \"agent_config\"")?,
            refresh: overrides(&body)?,
        })
    })
    .await;
    finish(&context, Route::Admin, result)
}

/// `DELETE /v1/admin/corps/{corpid}/agents/{agentid}`
pub async fn delete_corp(
    State(context): State<ApiState>,
    Path((corpid, agentid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let result = delete_account(&context, &headers, AccountId::Corp { corpid, agentid }).await;
    finish(&context, Route::Admin, result)
}

/// `PUT /v1/admin/providers/{corpid}` (body `{"secret"}`)
pub async fn put_provider(
    State(context): State<ApiState>,
    Path(corpid): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let account = AccountId::provider(&corpid);
    let target = account.to_string();
    let result = put_account(&context, &headers, request, &account, target, |body| {
        if body.mode.is_some() || !body.tickets.is_empty() {
            return Err(ApiError::bad_request(
                "invalid_json",
                "a provider has only a secret (and refresh timing)",
            ));
        }
        Ok(AccountSpec::Provider {
            corpid: identifier("corpid", &corpid)?.to_string(),
            secret: secret(&body)?,
            refresh: overrides(&body)?,
        })
    })
    .await;
    finish(&context, Route::Admin, result)
}

/// `DELETE /v1/admin/providers/{corpid}`
pub async fn delete_provider(
    State(context): State<ApiState>,
    Path(corpid): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = delete_account(&context, &headers, AccountId::provider(corpid)).await;
    finish(&context, Route::Admin, result)
}

/// `PUT /v1/admin/apps/{appid}/access_token`: imports a live token fetched by another system.
pub async fn import_app_token(
    State(context): State<ApiState>,
    Path(appid): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let account = AccountId::app(&appid);
    let result = async {
        let consumer = authorize_named(&context, &headers, Scope::Admin, Some(&account))?;
        let result = import(&context, &account, request).await;
        audited(
            &context,
            &consumer,
            "import_token",
            &format!("access_token/{appid}"),
            result,
        )
    }
    .await;
    finish(&context, Route::Admin, result)
}

async fn import(
    context: &ApiState,
    account: &AccountId,
    request: Request,
) -> Result<Response, ApiError> {
    {
        let body: ImportBody = json_body(
            request,
            r#"{"access_token":"<the live token>","expires_in":<seconds>}"#,
        )
        .await?;
        if body.access_token.trim().is_empty() {
            return Err(ApiError::bad_request(
                "invalid_json",
                "access_token must not be empty",
            ));
        }
        let credential = resolve(context, account, None)?;
        served_for_another(context, &body.access_token, Some(&credential))?;
        let token = context
            .engine
            .import(
                &credential,
                body.access_token,
                Duration::from_secs(body.expires_in),
                body.generation,
            )
            .await
            .map_err(|e| match e {
                ImportError::Busy | ImportError::Newer { .. } => {
                    ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
                }
                ImportError::Lifetime => ApiError::bad_request("invalid_expires_in", e.to_string()),
                ImportError::Store(_) => ApiError::unavailable("store_unavailable", e.to_string()),
            })?;
        let body = serde_json::json!({
            "key": credential.key.to_string(),
            "generation": token.generation,
            "expires_at": token.expires_at.to_rfc3339(),
        });
        Ok(super::json_ok(Bytes::from(body.to_string())))
    }
}

/// `POST /v1/admin/reload`: re-reads the configuration file, as SIGHUP does.
pub async fn reload(State(context): State<ApiState>, headers: HeaderMap) -> Response {
    let result = async {
        let consumer = authorize_admin(&context, &headers, AdminTarget::Everything)?;
        let result = context
            .control
            .reload()
            .await
            .map(|summary| {
                let body = serde_json::to_string(&summary).unwrap_or_default();
                super::json_ok(Bytes::from(body))
            })
            .map_err(control_error);
        audited(&context, &consumer, "reload", "configuration", result)
    }
    .await;
    finish(&context, Route::Admin, result)
}

/// `GET /v1/admin/audit`: the last admin actions and authorization changes, oldest first.
pub async fn audit(State(context): State<ApiState>, headers: HeaderMap) -> Response {
    let result = authorize_admin(&context, &headers, AdminTarget::Everything).map(|_| {
        let body = serde_json::json!({ "entries": context.control.audit().entries() });
        super::json_ok(Bytes::from(body.to_string()))
    });
    finish(&context, Route::Admin, result)
}
