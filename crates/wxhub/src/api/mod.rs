//! The HTTP API of docs/architecture.md#http-api: consumer routes under `/v1`, health, readiness and metrics.
//!
//! Every `/v1` route authenticates the consumer's bearer key (401), resolves the account (404),
//! then checks the consumer's accounts and scopes (403). Token reads are answered from the hub's
//! pre-rendered bytes, ahead of the router ([`ApiService`]) on a listener of our own ([`serve`]);
//! nothing on that path touches the store, the engine or WeChat, takes a lock or logs.

mod admin;
mod call;
mod children;
mod connection;
mod consumers;
mod credentials;
mod error;
mod health;
mod platform;
mod serve;
mod service;
mod status;
mod suites;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::Router;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::configuration::{AppGrant, ConsumerSettings, Scope, Settings};
use crate::control::{Access, Control};
use crate::engine::Engine;
use crate::kinds::KINDS;
use crate::metrics::{Metrics, Route};
use crate::read::{AccountEntry, Credential, Missing, ReadIndex};
use crate::store::Store;
pub use connection::Deadlines;
pub use error::ApiError;
pub use serve::{serve, Limits};
pub use service::{ApiBody, ApiFuture, ApiService, Handler, HandlerFuture};

/// How long a read that lands between an expired value and its successor waits for it: about one
/// upstream call, plus a margin for the store write.
pub fn rollover_wait(settings: &Settings) -> Duration {
    settings.wechat.timeout + Duration::from_secs(1)
}

/// Largest request body accepted (docs/architecture.md#error-model): larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler needs, shared behind one `Arc`.
pub struct ApiContext {
    /// What time it is: every `expires_in` and overlap the API and the gateway compute reads it
    /// (the engine's clock, so a test's fake time reaches them too).
    pub clock: Arc<dyn crate::clock::Clock>,
    /// The read side.
    pub read_index: Arc<ReadIndex>,
    /// The refresh engine, for invalidations, admin refreshes and the credentials listing.
    pub engine: Engine,
    /// The store, pinged by `/readyz`.
    pub store: Arc<dyn Store>,
    /// Metrics, counted here and rendered by `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The configuration the hub started with (its limits; consumers live in [`Control`]).
    pub settings: Arc<Settings>,
    /// The control plane: runtime accounts, reloads, and the consumers and their grants.
    pub control: Arc<Control>,
    /// The third-party platforms: pushes, authorizations, authorizers.
    pub platform: Arc<crate::platform::Platform>,
    /// The Work WeChat suites: pushes, installations, installed corps.
    pub suites: Arc<crate::suites::Suites>,
    /// Calls WeChat for the gateway and the token-less `/v1/…/wechat/…` calls.
    pub forwarder: Arc<crate::forward::Forwarder>,
    /// The watch streams open, in all and per consumer.
    pub watchers: Arc<watch::Watchers>,
    /// The tasks beside the listeners (each watch stream's feed among them), and the signal that
    /// shutdown has begun.
    pub background: crate::background::Background,
}

/// Handler state.
pub type ApiState = Arc<ApiContext>;

/// What the hub's listener ([`serve`]) runs: token reads answered directly (see [`ApiService`]),
/// every other request through [`router`].
pub fn service(context: ApiState, request_timeout: Duration) -> ApiService {
    ApiService::new(context.clone(), router(context, request_timeout))
}

/// Builds the router with its limits: body size, request timeout, panic isolation.
pub fn router(context: ApiState, request_timeout: Duration) -> Router {
    // Each kind's account routes (token, tickets, signature, refresh) come from its descriptor.
    let v1 = KINDS
        .into_iter()
        .fold(Router::new(), credentials::account_routes)
        .route("/v1/credentials", get(credentials::list_credentials))
        .route("/v1/watch", get(watch::watch))
        .route(
            "/v1/admin/apps/{appid}",
            put(admin::put_app).delete(admin::delete_app),
        )
        .route(
            "/v1/admin/apps/{appid}/access_token",
            put(admin::import_app_token),
        )
        .route(
            "/v1/admin/corps/{corpid}/agents/{agentid}",
            put(admin::put_corp).delete(admin::delete_corp),
        )
        .route(
            "/v1/admin/providers/{corpid}",
            put(admin::put_provider).delete(admin::delete_provider),
        )
        .route(
            "/v1/admin/suites/{suite_id}",
            put(suites::put_suite).delete(suites::delete_suite),
        )
        .route("/v1/admin/consumers", get(consumers::list_consumers))
        .route(
            "/v1/admin/consumers/{name}",
            put(consumers::put_consumer).delete(consumers::delete_consumer),
        )
        .route("/v1/admin/reload", post(admin::reload))
        .route("/v1/admin/audit", get(admin::audit))
        .route(
            "/v1/components/{component}/pre_auth_code",
            post(platform::pre_auth_code),
        )
        .route(
            "/v1/components/{component}/authorizations",
            post(platform::authorizations),
        )
        .route(
            "/v1/components/{component}/authorizers",
            get(platform::list_authorizers),
        )
        .route(
            "/v1/components/{component}/authorizers/sync",
            post(platform::sync_authorizers),
        )
        .route(
            "/v1/suites/{suite_id}/pre_auth_code",
            post(suites::pre_auth_code),
        )
        .route(
            "/v1/suites/{suite_id}/authorizations",
            post(suites::authorizations),
        )
        .route("/v1/suites/{suite_id}/corps", get(suites::list_corps))
        .route("/v1/apps/{appid}/wechat/{*path}", any(call::app_call))
        .route(
            "/v1/corps/{corpid}/agents/{agentid}/wechat/{*path}",
            any(call::corp_call),
        );
    // Every route is bounded, the event receiver (which faces the internet) included: a request
    // whose body trickles in is answered `503 timeout` on the deadline, like a slow handler.
    Router::new()
        .merge(v1)
        .merge(events_routes())
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/status", get(status::status_page))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            request_timeout,
            enforce_timeout,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| panic_response(),
        ))
        .with_state(context)
}

/// WeChat's event receivers (a platform's event URL, a suite's command callback URL): signed by
/// WeChat, no consumer key, its own timeout.
fn events_routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/wechat/components/{component}/events",
            post(platform::events),
        )
        .route(
            "/wechat/suites/{suite_id}/events",
            get(suites::verify_url).post(suites::events),
        )
}

/// The router of `[server] events_listen`: the event receiver alone, with the same limits.
pub fn events_router(context: ApiState, request_timeout: Duration) -> Router {
    events_routes()
        .layer(middleware::from_fn_with_state(
            request_timeout,
            enforce_timeout,
        ))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| panic_response(),
        ))
        .with_state(context)
}

/// The answer to a request whose handler panicked: the process and the connection live on.
fn panic_response() -> Response {
    tracing::error!("request handler panicked");
    ApiError::internal("internal error").into_response()
}

/// Bounds every request (an invalidation may wait for WeChat; a body may arrive slowly).
async fn enforce_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::unavailable("timeout", "the request took too long; try again").into_response()
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

pub use crate::kinds::AccountId;

/// Authenticates the bearer key, then checks `scope` and access to `account`.
/// Order: 401 (no or unknown key), 403 (account or scope not granted), 404 or 410 (no such
/// account, or an authorizer that withdrew). Whether an account exists is told only to a
/// consumer granted it: anyone else learns nothing from the answer.
pub fn authorize(
    context: &ApiContext,
    headers: &HeaderMap,
    scope: Scope,
    account: Option<&AccountId>,
) -> Result<(), ApiError> {
    authorize_as(context, headers, scope, account, |_| ())
}

/// [`authorize`], returning whether the consumer may also read values (an `invalidate`-only
/// consumer is answered without them).
pub fn authorize_reading(
    context: &ApiContext,
    headers: &HeaderMap,
    scope: Scope,
    account: Option<&AccountId>,
) -> Result<bool, ApiError> {
    authorize_as(context, headers, scope, account, |consumer| {
        consumer.has_scope(Scope::Read)
    })
}

/// [`authorize`], returning the consumer's name (for admin routes, whose actions are logged).
pub fn authorize_named(
    context: &ApiContext,
    headers: &HeaderMap,
    scope: Scope,
    account: Option<&AccountId>,
) -> Result<String, ApiError> {
    authorize_as(context, headers, scope, account, |consumer| {
        consumer.name.clone()
    })
}

/// What an admin action acts on, and so which grant it needs.
#[derive(Clone, Copy, Debug)]
pub enum AdminTarget<'a> {
    /// One account, which may not exist yet (it is being created): the consumer must be granted
    /// it, as it would be to read it.
    Account(&'a AccountId),
    /// The whole process (a reload, the audit trail, every credential): the consumer must be
    /// granted every account (`apps = ["*"]`).
    Everything,
}

/// Authenticates an admin and checks that its grants cover `target` (401, then 403); returns
/// the consumer's name, for the audit trail. An admin granted one app administers that app only.
pub fn authorize_admin(
    context: &ApiContext,
    headers: &HeaderMap,
    target: AdminTarget<'_>,
) -> Result<String, ApiError> {
    let access = context.control.access().load();
    let (index, consumer) = authenticate(&access, headers)?;
    if !consumer.has_scope(Scope::Admin) {
        return Err(ApiError::forbidden(format!(
            "consumer {:?} lacks the admin scope",
            consumer.name
        )));
    }
    let granted = match target {
        AdminTarget::Account(account) => access.keys.may_use(&access.settings, index, account),
        AdminTarget::Everything => consumer.apps.contains(&AppGrant::All),
    };
    if !granted {
        let needs = match target {
            AdminTarget::Account(_) => "a grant of this account",
            AdminTarget::Everything => "apps = [\"*\"]",
        };
        return Err(ApiError::forbidden(format!(
            "consumer {:?} may not do this: it needs {needs}",
            consumer.name
        )));
    }
    Ok(consumer.name.clone())
}

/// [`authorize`], with `granted` given the consumer once every check passed.
fn authorize_as<T>(
    context: &ApiContext,
    headers: &HeaderMap,
    scope: Scope,
    account: Option<&AccountId>,
    granted: impl FnOnce(&ConsumerSettings) -> T,
) -> Result<T, ApiError> {
    let access = context.control.access().load();
    let (index, consumer) = authenticate(&access, headers)?;
    permit(&access, index, consumer, account, scope)?;
    if let Some(account) = account {
        if !context.read_index.contains(account) {
            return Err(unknown_account_in(&context.read_index, account));
        }
    }
    Ok(granted(consumer))
}

/// The read path's checks: [`authorize`] for `read`, with `read` run on the account's entry, so
/// that the account is looked up once. Same answers, same order (401, 403, 404).
pub fn authorize_read<R>(
    context: &ApiContext,
    headers: &HeaderMap,
    account: &AccountId,
    read: impl FnOnce(&AccountEntry) -> Result<R, ApiError>,
) -> Result<R, ApiError> {
    let access = context.control.access().load();
    let (index, consumer) = authenticate(&access, headers)?;
    permit(&access, index, consumer, Some(account), Scope::Read)?;
    context
        .read_index
        .with_account(account, read)
        .unwrap_or_else(|| Err(unknown_account_in(&context.read_index, account)))
}

/// The consumer whose bearer key the request carries, with its position (401 otherwise).
fn authenticate<'a>(
    access: &'a Access,
    headers: &HeaderMap,
) -> Result<(usize, &'a ConsumerSettings), ApiError> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_key)
        .ok_or_else(|| ApiError::unauthorized("missing \"Authorization: Bearer <key>\" header"))?;
    access
        .keys
        .find(&access.settings, key)
        .ok_or_else(|| ApiError::unauthorized("unknown consumer key"))
}

/// Whether consumer number `index` may use `account` (when one is named) with `scope` (403
/// otherwise).
fn permit(
    access: &Access,
    index: usize,
    consumer: &ConsumerSettings,
    account: Option<&AccountId>,
    scope: Scope,
) -> Result<(), ApiError> {
    if account.is_some_and(|account| !access.keys.may_use(&access.settings, index, account)) {
        return Err(ApiError::forbidden(format!(
            "consumer {:?} may not use this account",
            consumer.name
        )));
    }
    if !consumer.has_scope(scope) {
        return Err(ApiError::forbidden(format!(
            "consumer {:?} lacks the {scope} scope",
            consumer.name
        )));
    }
    Ok(())
}

/// The 404 for an account the hub does not have.
fn unknown_account(account: &AccountId) -> ApiError {
    let (code, message) = account.unknown();
    ApiError::new(StatusCode::NOT_FOUND, code, message)
}

/// [`unknown_account`], or 410 for an account that withdrew its authorization.
fn unknown_account_in(read_index: &ReadIndex, account: &AccountId) -> ApiError {
    if read_index.is_revoked(account) {
        let (code, message) = account.withdrawn();
        return ApiError::new(StatusCode::GONE, code, message);
    }
    unknown_account(account)
}

/// The key of an `Authorization: Bearer <key>` header value. The scheme is matched without
/// regard to case (RFC 7235: `bearer` and `BEARER` are the same scheme); the key is what follows
/// the separating spaces, and must not be empty.
fn bearer_key(value: &str) -> Option<&str> {
    let (scheme, key) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("Bearer") {
        return None;
    }
    Some(key.trim()).filter(|key| !key.is_empty())
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`] into `T`. `shape` describes the expected body
/// for the error message (serde's own messages could echo a submitted value).
pub async fn json_body<T: DeserializeOwned>(request: Request, shape: &str) -> Result<T, ApiError> {
    let bytes = Bytes::from_request(request, &())
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("request body exceeds {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::bad_request("unreadable_body", "the request body could not be read")
            }
        })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let detail = if e.is_syntax() || e.is_eof() {
            format!("malformed JSON at line {} column {}", e.line(), e.column())
        } else {
            "JSON of the wrong shape".to_string()
        };
        ApiError::bad_request("invalid_json", format!("{detail}; expected {shape}"))
    })
}

/// A JSON `200 OK` with the headers every credential answer carries.
///
/// Every JSON body ends with a newline, so that `curl` output does not run into the prompt.
/// A plain-text answer (to WeChat's pushes and URL checks).
fn plain(text: String) -> Response {
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub fn json_ok(body: Bytes) -> Response {
    if body.ends_with(b"\n") {
        return json_response(Body::from(body));
    }
    let mut with_newline = Vec::with_capacity(body.len() + 1);
    with_newline.extend_from_slice(&body);
    with_newline.push(b'\n');
    json_response(Body::from(with_newline))
}

/// [`json_ok`] for any body type (the read fast path sends its bytes unboxed).
pub fn json_response<B>(body: B) -> axum::http::Response<B> {
    let mut response = axum::http::Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Counts the request under `route` and turns the result into a response.
pub fn finish(context: &ApiContext, route: Route, result: Result<Response, ApiError>) -> Response {
    let response = result.unwrap_or_else(IntoResponse::into_response);
    context
        .metrics
        .count_request(route, response.status().as_u16());
    response
}

/// The error for a look-up that found nothing.
pub fn missing(account: &AccountId, ticket: Option<&str>, why: Missing) -> ApiError {
    match why {
        Missing::Account => unknown_account(account),
        Missing::Ticket => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_ticket",
            format!(
                "ticket {:?} is not configured for this account",
                ticket.unwrap_or_default()
            ),
        ),
    }
}

/// The handle of `account`'s access token (`None`) or ticket.
pub fn resolve(
    context: &ApiContext,
    account: &AccountId,
    ticket: Option<&str>,
) -> Result<Arc<Credential>, ApiError> {
    context
        .read_index
        .find(account, ticket)
        .map_err(|why| missing(account, ticket, why))
}

#[cfg(test)]
mod tests {
    use super::bearer_key;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer k1", "bearer k1", "BEARER k1", "bEaReR   k1 "] {
            assert_eq!(bearer_key(value), Some("k1"), "{value:?}");
        }
        for value in [
            "Basic k1",
            "Bearerk1",
            "bearer",
            "bearer  ",
            "Bearer\tk1",
            "",
            " k1",
        ] {
            assert_eq!(bearer_key(value), None, "{value:?}");
        }
    }
}
