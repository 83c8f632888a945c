//! The HTTP API of DESIGN §5: consumer routes under `/v1`, health, readiness and metrics.
//!
//! Every `/v1` route authenticates the consumer's bearer key (401), resolves the account (404),
//! then checks the consumer's accounts and scopes (403). Token reads are answered from the hub's
//! pre-rendered bytes, ahead of the router ([`ApiService`]) on a listener of our own ([`serve`]);
//! nothing on that path touches the store, the engine or WeChat, takes a lock or logs.

mod auth;
mod credentials;
mod error;
mod health;
mod serve;
mod service;
mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::configuration::{ConsumerSettings, Scope, Settings};
use crate::engine::Engine;
use crate::hub::{Hub, KeyId};
use crate::metrics::{Metrics, Route};
use crate::store::Store;
pub use auth::KeyCache;
pub use error::ApiError;
pub use serve::serve;
pub use service::{ApiBody, ApiFuture, ApiService};

/// Largest request body accepted (DESIGN §5): larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler needs, shared behind one `Arc`.
pub struct ApiContext {
    /// The read side.
    pub hub: Arc<Hub>,
    /// The refresh engine, for invalidations, admin refreshes and the credentials listing.
    pub engine: Engine,
    /// The store, pinged by `/readyz`.
    pub store: Arc<dyn Store>,
    /// Metrics, counted here and rendered by `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The configuration (consumers and their grants).
    pub settings: Arc<Settings>,
    /// Consumer keys already verified (see [`KeyCache`]).
    pub keys: KeyCache,
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
    let v1 = Router::new()
        .route(
            "/v1/apps/{appid}/access_token",
            get(credentials::app_access_token),
        )
        .route(
            "/v1/apps/{appid}/access_token/invalidate",
            post(credentials::app_access_token_invalidate),
        )
        .route(
            "/v1/apps/{appid}/tickets/{kind}",
            get(credentials::app_ticket),
        )
        .route(
            "/v1/apps/{appid}/tickets/{kind}/invalidate",
            post(credentials::app_ticket_invalidate),
        )
        .route(
            "/v1/apps/{appid}/jssdk/signature",
            post(credentials::app_jssdk_signature),
        )
        .route("/v1/apps/{appid}/refresh", post(credentials::app_refresh))
        .route(
            "/v1/corps/{corpid}/agents/{agentid}/access_token",
            get(credentials::corp_access_token),
        )
        .route(
            "/v1/corps/{corpid}/agents/{agentid}/access_token/invalidate",
            post(credentials::corp_access_token_invalidate),
        )
        .route(
            "/v1/corps/{corpid}/agents/{agentid}/tickets/{kind}",
            get(credentials::corp_ticket),
        )
        .route(
            "/v1/corps/{corpid}/agents/{agentid}/tickets/{kind}/invalidate",
            post(credentials::corp_ticket_invalidate),
        )
        .route(
            "/v1/corps/{corpid}/agents/{agentid}/jssdk/signature",
            post(credentials::corp_jssdk_signature),
        )
        .route(
            "/v1/corps/{corpid}/agents/{agentid}/refresh",
            post(credentials::corp_refresh),
        )
        .route("/v1/credentials", get(credentials::list_credentials))
        .layer(middleware::from_fn_with_state(
            request_timeout,
            enforce_timeout,
        ));
    Router::new()
        .merge(v1)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/status", get(status::status_page))
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
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
    .into_response()
}

/// Bounds every `/v1` request (an invalidation may wait for WeChat).
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

/// The account a request is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Account<'a> {
    /// An official account or mini program.
    App(&'a str),
    /// A Work WeChat app.
    Corp { corpid: &'a str, agentid: &'a str },
}

impl<'a> Account<'a> {
    /// A Work WeChat app, from the `{corpid}` and `{agentid}` path segments.
    pub fn corp(corpid: &'a str, agentid: &'a str) -> Account<'a> {
        Account::Corp { corpid, agentid }
    }
}

/// Authenticates the bearer key, then checks `scope` and access to `account`.
/// Order: 401 (no or unknown key), 404 (unknown account), 403 (not granted).
pub fn authorize<'a>(
    context: &'a ApiContext,
    headers: &HeaderMap,
    scope: Scope,
    account: Option<Account<'_>>,
) -> Result<&'a ConsumerSettings, ApiError> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::unauthorized("missing \"Authorization: Bearer <key>\" header"))?;
    let settings = &context.settings;
    let (index, consumer) = context
        .keys
        .find(settings, key)
        .ok_or_else(|| ApiError::unauthorized("unknown consumer key"))?;
    let allowed = match account {
        None => true,
        Some(Account::App(appid)) => {
            if context.hub.app(appid).is_none() {
                return Err(ApiError::unknown_app(appid));
            }
            context.keys.may_use_app(settings, index, appid)
        }
        Some(Account::Corp { corpid, agentid }) => {
            if context.hub.corp(corpid, agentid).is_none() {
                return Err(ApiError::unknown_corp_app(corpid, agentid));
            }
            context.keys.may_use_corp(settings, index, corpid, agentid)
        }
    };
    if !allowed {
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
    Ok(consumer)
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
pub fn json_ok(body: Bytes) -> Response {
    json_response(Body::from(body))
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

/// The credential id of `account`'s access token or ticket.
pub fn resolve(
    context: &ApiContext,
    account: Account<'_>,
    ticket: Option<&str>,
) -> Result<KeyId, ApiError> {
    let unknown_ticket = |kind: &str| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_ticket",
            format!("ticket {kind:?} is not configured for this account"),
        )
    };
    match account {
        Account::App(appid) => {
            let app = context
                .hub
                .app(appid)
                .ok_or_else(|| ApiError::unknown_app(appid))?;
            match ticket {
                None => Ok(app.access_token),
                Some(kind) => app
                    .tickets
                    .iter()
                    .find(|(k, _)| k.as_str() == kind)
                    .map(|(_, id)| *id)
                    .ok_or_else(|| unknown_ticket(kind)),
            }
        }
        Account::Corp { corpid, agentid } => {
            let corp = context
                .hub
                .corp(corpid, agentid)
                .ok_or_else(|| ApiError::unknown_corp_app(corpid, agentid))?;
            match ticket {
                None => Ok(corp.access_token),
                Some(kind) => corp
                    .tickets
                    .iter()
                    .find(|(k, _)| k.as_str() == kind)
                    .map(|(_, id)| *id)
                    .ok_or_else(|| unknown_ticket(kind)),
            }
        }
    }
}
