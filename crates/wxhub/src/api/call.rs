//! Token-less calls on the main API: `ANY /v1/apps/{appid}/wechat/{path…}` and
//! `/v1/corps/{corpid}/agents/{agentid}/wechat/{path…}` (scope `call`). Any plain HTTP client calls
//! WeChat's `path` through the hub, which puts its current token in `access_token`, and replaces
//! and replays once if WeChat refuses it. The calls it forwards are counted as the gateway's are,
//! as `listener="api"` (docs/architecture.md#observability).

use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{authorize, resolve, AccountId, ApiContext, ApiError, ApiState};
use crate::configuration::Scope;
use crate::forward::heal::{self, Heal};
use crate::forward::{query, Outgoing};
use crate::metrics::gateway::Listener;

/// `ANY /v1/apps/{appid}/wechat/{*path}`.
pub async fn app_call(
    State(context): State<ApiState>,
    Path((appid, _)): Path<(String, String)>,
    request: Request,
) -> Response {
    // The raw path after `/v1/apps/{appid}/wechat/`, as the client encoded it.
    let rest = request
        .uri()
        .path()
        .splitn(6, '/')
        .nth(5)
        .map(str::to_string);
    call(&context, &AccountId::app(appid), rest, request).await
}

/// `ANY /v1/corps/{corpid}/agents/{agentid}/wechat/{*path}`.
pub async fn corp_call(
    State(context): State<ApiState>,
    Path((corpid, agentid, _)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    let rest = request
        .uri()
        .path()
        .splitn(8, '/')
        .nth(7)
        .map(str::to_string);
    call(&context, &AccountId::corp(corpid, agentid), rest, request).await
}

async fn call(
    context: &ApiContext,
    account: &AccountId,
    rest: Option<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(e) = authorize(context, &parts.headers, Scope::Call, Some(account)) {
        return e.into_response();
    }
    let credential = match resolve(context, account, None) {
        Ok(credential) => credential,
        Err(e) => return e.into_response(),
    };
    let Some(served) = credential.slot.load() else {
        return ApiError::unavailable("not_ready", "no valid token yet; the hub is fetching one")
            .into_response();
    };
    let Some(rest) = rest.filter(|r| !r.is_empty()) else {
        return ApiError::bad_request("no_path", "name the WeChat API after /wechat/")
            .into_response();
    };
    let mut headers = parts.headers;
    // The consumer's key is for the hub, never for WeChat.
    headers.remove(header::AUTHORIZATION);
    let host = account.kind().descriptor().host;
    let query = query::replace(parts.uri.query(), "access_token", &served.value);
    let outgoing = Outgoing::new(
        Listener::Api,
        host,
        parts.method,
        &format!("/{rest}"),
        Some(&query),
        headers,
    );
    let token = served.value.clone();
    let heal = Heal {
        credential,
        token,
        param: "access_token",
    };
    // Counted from here on only: the refusals before (authentication, an unknown account) are
    // the route's, in `wxhub_http_requests_total`.
    heal::forward(&context.forwarder, &context.engine, outgoing, body, heal)
        .await
        .counted(&context.metrics, Listener::Api)
}
