//! Consumer routes: read a token or ticket, report one that WeChat refused, sign a JS-SDK page,
//! and the admin routes (force a refresh, list every credential).
//!
//! Every kind's account routes share one implementation per action ([`account_routes`]); the
//! handlers only turn their path into an [`AccountId`].

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde::Deserialize;

use super::{
    authorize, authorize_admin, authorize_named, authorize_read, authorize_reading, finish,
    json_body, json_ok, missing, resolve, AccountId, AdminTarget, ApiContext, ApiError, ApiState,
};
use crate::configuration::Scope;
use crate::engine::RefreshError;
use crate::jssdk;
use crate::kinds::{AccountRoute, Kind};
use crate::metrics::{InvalidationOutcome, Route};
use crate::read::{Served, Slot};
use crate::token::Timestamp;

/// The body of an access-token report.
#[derive(Deserialize)]
struct AccessTokenReport {
    access_token: String,
}

/// The body of a ticket report.
#[derive(Deserialize)]
struct TicketReport {
    ticket: String,
}

/// The body of a signature request.
#[derive(Deserialize)]
struct SignatureRequest {
    url: String,
    /// Work WeChat only: `jsapi` (`wx.config`, the default) or `agent_config` (`wx.agentConfig`).
    #[serde(default)]
    kind: Option<String>,
}

fn not_ready() -> ApiError {
    ApiError::unavailable(
        "not_ready",
        "no valid token yet; the hub is fetching one (see /v1/credentials)",
    )
}

fn refresh_failed(error: RefreshError) -> ApiError {
    ApiError::unavailable("refresh_failed", format!("refresh failed: {error}"))
}

/// Renders what is served from `slot` at `now`.
fn serve_slot(slot: &Slot, now: Timestamp) -> Result<Bytes, ApiError> {
    let served = slot.peek();
    served
        .as_deref()
        .ok_or_else(not_ready)?
        .render(now)
        .ok_or_else(not_ready)
}

fn render(served: &Served, now: Timestamp) -> Result<Response, ApiError> {
    served.render(now).map(json_ok).ok_or_else(not_ready)
}

/// The body of a token or ticket read (shared by the router's handlers and the read fast path).
pub(super) fn read_body(
    context: &ApiContext,
    headers: &HeaderMap,
    account: &AccountId,
    ticket: Option<&str>,
) -> Result<Bytes, ApiError> {
    authorize_read(context, headers, account, |entry| {
        let credential = entry
            .credential(ticket)
            .map_err(|why| missing(account, ticket, why))?;
        serve_slot(&credential.slot, context.clock.now())
    })
}

/// A read as the router answers it: like [`read_body`], except that a read landing between an
/// expired value and its successor waits (bounded) for the successor instead of answering 503.
pub(super) async fn read(
    context: &ApiContext,
    headers: &HeaderMap,
    account: &AccountId,
    ticket: Option<&str>,
) -> Result<Response, ApiError> {
    match read_body(context, headers, account, ticket) {
        Err(error) if error.is_not_ready() => {}
        other => return other.map(json_ok),
    }
    let credential = resolve(context, account, ticket)?;
    let give_up = tokio::time::Instant::now() + super::rollover_wait(&context.settings);
    loop {
        let changed = credential.served_changed();
        match serve_slot(&credential.slot, context.clock.now()) {
            Err(error) if error.is_not_ready() => {}
            other => return other.map(json_ok),
        }
        if tokio::time::timeout_at(give_up, changed).await.is_err() {
            return serve_slot(&credential.slot, context.clock.now()).map(json_ok);
        }
    }
}

pub(super) async fn invalidate(
    context: &ApiContext,
    headers: &HeaderMap,
    account: &AccountId,
    ticket: Option<&str>,
    request: Request,
) -> Result<Response, ApiError> {
    let may_read = authorize_reading(context, headers, Scope::Invalidate, Some(account))?;
    let credential = resolve(context, account, ticket)?;
    let reported = match ticket {
        None => {
            json_body::<AccessTokenReport>(
                request,
                r#"{"access_token":"<the token WeChat refused>"}"#,
            )
            .await?
            .access_token
        }
        Some(_) => {
            json_body::<TicketReport>(request, r#"{"ticket":"<the ticket WeChat refused>"}"#)
                .await?
                .ticket
        }
    };
    if reported.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the reported value is empty",
        ));
    }
    let invalidation = context
        .engine
        .invalidate(&credential, &reported)
        .await
        .map_err(refresh_failed)?;
    if may_read {
        render(&invalidation.served, context.clock.now())
    } else {
        report_without_value(
            &invalidation.served,
            invalidation.outcome,
            context.clock.now(),
        )
    }
}

/// The answer to a report by a consumer without the `read` scope: what the report turned into and
/// which generation is now served, never the value itself (the `invalidate` scope must not be a
/// way to read credentials).
fn report_without_value(
    served: &Served,
    outcome: InvalidationOutcome,
    now: Timestamp,
) -> Result<Response, ApiError> {
    let outcome = outcome.as_str();
    let expires_in = served.expires_in(now).ok_or_else(not_ready)?;
    let answer = serde_json::json!({
        "outcome": outcome,
        "generation": served.generation,
        "expires_at": served.expires_at.to_rfc3339(),
        "expires_in": expires_in,
    });
    Ok(json_ok(Bytes::from(answer.to_string())))
}

pub(super) async fn sign(
    context: &ApiContext,
    headers: &HeaderMap,
    account: &AccountId,
    request: Request,
) -> Result<Response, ApiError> {
    authorize(context, headers, Scope::Read, Some(account))?;
    let body: SignatureRequest = json_body(request, r#"{"url":"<the page URL>"}"#).await?;
    let url =
        jssdk::page_url(&body.url).map_err(|why| ApiError::bad_request("invalid_url", why))?;
    let signing = account
        .signing(body.kind.as_deref())
        .map_err(|why| ApiError::bad_request("invalid_kind", why))?;
    let kind = signing.ticket;
    let agent_id = match signing.agent_id {
        Some(agent_id) => Some(agent_id.to_string()),
        None if kind == "agent_config" => Some(defined_agent_id(context, account)?),
        None => None,
    };
    let served = resolve(context, account, Some(kind))?
        .slot
        .load()
        .ok_or_else(not_ready)?;
    let now = context.clock.now();
    if served.expires_in(now).is_none() {
        return Err(not_ready());
    }
    let nonce = jssdk::nonce();
    let timestamp = now.as_secs();
    let signature = jssdk::signature(&served.value, &nonce, timestamp, url);
    let mut answer = serde_json::json!({
        "appId": signing.app_id,
        "timestamp": timestamp,
        "nonceStr": nonce,
        "signature": signature,
    });
    if let Some(agent_id) = agent_id {
        answer["agentId"] = serde_json::Value::from(agent_id);
    }
    Ok(json_ok(Bytes::from(answer.to_string())))
}

/// The agentid an account's definition gives `wx.agentConfig` (a corp that installed a suite),
/// or why the page cannot be signed with `agent_config`.
fn defined_agent_id(context: &ApiContext, account: &AccountId) -> Result<String, ApiError> {
    let (spec, _) = context.control.registry().spec(account).ok_or_else(|| {
        let (code, message) = account.unknown();
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    })?;
    spec.agent_id().map(str::to_string).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_kind",
            "Work WeChat named no agentid for this installation; sign with \"jsapi\"",
        )
    })
}

/// Whether the query string says `force=true`.
fn forced(query: Option<&str>) -> Result<bool, ApiError> {
    let mut force = false;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair {
            "force=true" => force = true,
            "force=false" => force = false,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "the only parameter is force=true|false",
                ))
            }
        }
    }
    Ok(force)
}

async fn refresh(
    context: &ApiContext,
    headers: &HeaderMap,
    account: &AccountId,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let consumer = authorize_named(context, headers, Scope::Admin, Some(account))?;
    let force = forced(query)?;
    let credential = resolve(context, account, None)?;
    if !force && context.engine.too_young_to_refresh(&credential) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_soon",
            "the token is younger than min_refresh_interval; add ?force=true to refresh it anyway",
        ));
    }
    let served = context
        .engine
        .refresh_now(&credential, force)
        .await
        .map_err(refresh_failed);
    let outcome = served.as_ref().map_or_else(|e| e.code, |_| "ok");
    let action = if force { "refresh_forced" } else { "refresh" };
    let target = credential.key.to_string();
    context
        .control
        .audit()
        .record(&consumer, action, &target, outcome);
    let served = served?;
    let answer = serde_json::json!({
        "key": credential.key.to_string(),
        "generation": served.generation,
        "expires_at": served.expires_at.to_rfc3339(),
    });
    Ok(json_ok(Bytes::from(answer.to_string())))
}

/// Adds the consumer routes of `kind`'s accounts (its descriptor's [`AccountRoute`]s) under its
/// `/v1` path. Every kind answers them with the handlers below; the path's parameters, in order,
/// are the account's id fields and then, for a ticket, its kind.
pub(super) fn account_routes(mut router: Router<ApiState>, kind: Kind) -> Router<ApiState> {
    let base = kind.descriptor().v1_path;
    for route in kind.descriptor().routes {
        let path = |i: usize| format!("{base}{}", route.paths()[i]);
        router = match route {
            AccountRoute::AccessToken | AccountRoute::Tickets => router
                .route(
                    &path(0),
                    get(move |state, path, headers| read_route(kind, state, path, headers)),
                )
                .route(
                    &path(1),
                    post(move |state, path, headers, request| {
                        invalidate_route(kind, state, path, headers, request)
                    }),
                ),
            AccountRoute::JssdkSignature => router.route(
                &path(0),
                post(move |state, path, headers, request| {
                    sign_route(kind, state, path, headers, request)
                }),
            ),
            AccountRoute::Refresh => router.route(
                &path(0),
                post(move |state, path, query, headers| {
                    refresh_route(kind, state, path, query, headers)
                }),
            ),
        };
    }
    router
}

/// The account a route's path names, and the ticket kind after its id fields, if any.
fn account_in(kind: Kind, path: &[String]) -> Result<(AccountId, Option<&str>), ApiError> {
    let fields = kind.descriptor().id_fields.len();
    let ids: Vec<&str> = path.iter().take(fields).map(String::as_str).collect();
    let account = AccountId::from_parts(kind, &ids).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the path does not name an account",
        )
    })?;
    Ok((account, path.get(fields).map(String::as_str)))
}

/// `GET {v1_path}/access_token` and `GET {v1_path}/tickets/{kind}`
async fn read_route(
    kind: Kind,
    State(context): State<ApiState>,
    Path(path): Path<Vec<String>>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let (account, ticket) = account_in(kind, &path)?;
        read(&context, &headers, &account, ticket).await
    }
    .await;
    let route = match path.len() > kind.descriptor().id_fields.len() {
        false => Route::AccessToken,
        true => Route::Ticket,
    };
    finish(&context, route, result)
}

/// `POST {v1_path}/access_token/invalidate` and `POST {v1_path}/tickets/{kind}/invalidate`
async fn invalidate_route(
    kind: Kind,
    State(context): State<ApiState>,
    Path(path): Path<Vec<String>>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let result = async {
        let (account, ticket) = account_in(kind, &path)?;
        invalidate(&context, &headers, &account, ticket, request).await
    }
    .await;
    let route = match path.len() > kind.descriptor().id_fields.len() {
        false => Route::AccessTokenInvalidate,
        true => Route::TicketInvalidate,
    };
    finish(&context, route, result)
}

/// `POST {v1_path}/jssdk/signature`
async fn sign_route(
    kind: Kind,
    State(context): State<ApiState>,
    Path(path): Path<Vec<String>>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let result = async {
        let (account, _) = account_in(kind, &path)?;
        sign(&context, &headers, &account, request).await
    }
    .await;
    finish(&context, Route::JssdkSignature, result)
}

/// `POST {v1_path}/refresh` (admin)
async fn refresh_route(
    kind: Kind,
    State(context): State<ApiState>,
    Path(path): Path<Vec<String>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let (account, _) = account_in(kind, &path)?;
        refresh(&context, &headers, &account, query.as_deref()).await
    }
    .await;
    finish(&context, Route::AdminRefresh, result)
}

/// `GET /v1/credentials` (admin): every credential's state, never a secret or token value.
pub async fn list_credentials(State(context): State<ApiState>, headers: HeaderMap) -> Response {
    let result = authorize_admin(&context, &headers, AdminTarget::Everything).map(|_| {
        let body = serde_json::json!({ "credentials": context.engine.credentials() });
        json_ok(Bytes::from(body.to_string()))
    });
    finish(&context, Route::Credentials, result)
}
