//! The third-party platform's routes: WeChat's event receiver, the component token, the
//! authorization flow (pre-auth code, registering the redirect's code), the authorizers'
//! listing. The platform's and the authorizers' credentials are read through the routes every kind
//! shares ([`super::credentials::account_routes`]).

use axum::extract::{Path, Query, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::children::ListQuery;
use super::{
    authorize, authorize_admin, authorize_named, finish, json_body, json_ok, plain, AccountId,
    AdminTarget, ApiError, ApiState,
};
use crate::configuration::Scope;
use crate::engine::RefreshError;
use crate::metrics::Route;
use crate::platform::{PlatformError, Refused};
use crate::upstream::UpstreamError;

/// The body of `POST …/authorizations`.
#[derive(Deserialize)]
struct AuthorizationBody {
    authorization_code: String,
}

fn platform_error(error: PlatformError) -> ApiError {
    let message = error.to_string();
    match error {
        PlatformError::UnknownComponent(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_component", message)
        }
        PlatformError::Refused(Refused::Signature) => {
            ApiError::new(StatusCode::FORBIDDEN, "bad_signature", message)
        }
        PlatformError::Refused(Refused::Envelope(_)) => {
            ApiError::bad_request("bad_envelope", message)
        }
        PlatformError::Refresh(RefreshError::Upstream(UpstreamError::Config { .. })) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "wechat_refused", message)
        }
        PlatformError::Refresh(_) | PlatformError::Control(_) => {
            ApiError::unavailable("platform_unavailable", message)
        }
    }
}

/// `POST /wechat/components/{component_appid}/events`: a push from WeChat. Answers `success`
/// only once what it carries is durably stored.
pub async fn events(
    State(context): State<ApiState>,
    Path(component): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let result = context
        .platform
        .receive(&component, query.as_deref().unwrap_or(""), &body)
        .await;
    let response = match result {
        Ok(()) => plain("success".to_string()),
        // Anyone can post here: refusals are not worth a warning each, and the path is quoted.
        Err(error @ (PlatformError::Refused(_) | PlatformError::UnknownComponent(_))) => {
            tracing::debug!(component = ?component, error = %error, "push refused");
            platform_error(error).into_response()
        }
        Err(error) => {
            tracing::warn!(component = ?component, error = %error, "push not stored; not acknowledged");
            platform_error(error).into_response()
        }
    };
    context
        .metrics
        .count_request(Route::Other, response.status().as_u16());
    response
}

/// `POST /v1/components/{c}/pre_auth_code` (authorize)
pub async fn pre_auth_code(
    State(context): State<ApiState>,
    Path(component): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        authorize(
            &context,
            &headers,
            Scope::Authorize,
            Some(&AccountId::component(&component)),
        )?;
        let (code, expires_in) = context
            .platform
            .pre_auth_code(&component)
            .await
            .map_err(platform_error)?;
        let body = serde_json::json!({ "pre_auth_code": code, "expires_in": expires_in });
        Ok(json_ok(Bytes::from(body.to_string())))
    }
    .await;
    finish(&context, Route::Other, result)
}

/// `POST /v1/components/{c}/authorizations` (authorize): registers the authorizer of the
/// redirect's `authorization_code`.
pub async fn authorizations(
    State(context): State<ApiState>,
    Path(component): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let result = async {
        let consumer = authorize_named(
            &context,
            &headers,
            Scope::Authorize,
            Some(&AccountId::component(&component)),
        )?;
        let body: AuthorizationBody = json_body(
            request,
            r#"{"authorization_code":"<the code of the redirect>"}"#,
        )
        .await?;
        if body.authorization_code.is_empty() || body.authorization_code.len() > 512 {
            return Err(ApiError::bad_request(
                "invalid_json",
                "authorization_code must be 1 to 512 characters",
            ));
        }
        let view = context
            .platform
            .exchange(&component, &body.authorization_code)
            .await
            .map_err(platform_error);
        let (outcome, target) = match &view {
            Ok(view) => (
                "ok",
                format!("authorizer/{component}/{}", view.authorizer_appid),
            ),
            Err(e) => (e.code, format!("component/{component}")),
        };
        context
            .control
            .audit()
            .record(&consumer, "register_authorizer", &target, outcome);
        let view = view?;
        let body = serde_json::json!({
            "authorizer_appid": view.authorizer_appid,
            "state": view.state,
            "func_info": view.func_info,
        });
        Ok(json_ok(Bytes::from(body.to_string())))
    }
    .await;
    finish(&context, Route::Other, result)
}

/// `GET /v1/components/{c}/authorizers?state=&cursor=&limit=` (admin): one page, never a token.
pub async fn list_authorizers(
    State(context): State<ApiState>,
    Path(component): Path<String>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let result = (|| {
        authorize_admin(
            &context,
            &headers,
            AdminTarget::Account(&AccountId::component(&component)),
        )?;
        let (state, cursor, limit) = query.checked()?;
        let (page, next) = context
            .platform
            .list(&component, state, cursor, limit)
            .map_err(platform_error)?;
        let body = super::children::page_body("authorizers", &page, next.as_deref())?;
        Ok(json_ok(body))
    })();
    finish(&context, Route::Admin, result)
}

/// `POST /v1/components/{c}/authorizers/sync` (admin): reconciles with WeChat's list.
pub async fn sync_authorizers(
    State(context): State<ApiState>,
    Path(component): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let consumer = authorize_admin(
            &context,
            &headers,
            AdminTarget::Account(&AccountId::component(&component)),
        )?;
        let summary = context
            .platform
            .sync(&component)
            .await
            .map_err(platform_error);
        let outcome = summary.as_ref().map_or_else(|e| e.code, |_| "ok");
        context.control.audit().record(
            &consumer,
            "sync_authorizers",
            &format!("component/{component}"),
            outcome,
        );
        let summary = summary?;
        let body = serde_json::to_string(&summary).unwrap_or_default();
        Ok(json_ok(Bytes::from(body)))
    }
    .await;
    finish(&context, Route::Admin, result)
}
