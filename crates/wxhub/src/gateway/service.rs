//! Work WeChat's third-party token endpoints (`cgi-bin/service/*` on the `work_listen`
//! gateway), answered by the hub in Work WeChat's shapes, so that a provider's SDK fetches the
//! hub's tokens and never makes Work WeChat issue others (see docs/suites.md):
//!
//! - `get_suite_token` with a consumer key granted the suite as `suite_secret` (the
//!   `suite_ticket` is not needed: Work WeChat pushes tickets to the hub); a key that is wrong
//!   or not granted the suite is answered as a wrong secret (40080);
//! - `get_provider_token` with a consumer key granted the provider as `provider_secret`;
//! - `get_corp_token?suite_access_token=T` with T a suite token the hub serves: the installed
//!   corp's token (the `permanent_code` is not needed: the hub keeps it, and never hands it out).
//!
//! Mistakes get Work WeChat's own errcodes and texts, in the order it checks them
//! (docs/suites.md#the-gateway), so that an SDK reports them as it would Work WeChat's.

use axum::body::Body;
use axum::http::Method;
use axum::response::Response;

use super::token::{granted, json_fields, text_field};
use crate::api::{AccountId, ApiContext};
use crate::forward::query::param;
use crate::forward::reply::{self, code, Host};
use crate::kinds::{Kind, Role};

/// `POST /cgi-bin/service/get_suite_token` with `{"suite_id":S,"suite_secret":K,…}`.
pub async fn suite_token(context: &ApiContext, method: &Method, body: Body) -> Response {
    let fields = match post_fields(method, body).await {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    // Work WeChat's checks in its order: both fields' types, then the suite, then the secret.
    let answer = (|| {
        let suite_id = text_field(&fields, "suite_id")?;
        let key = text_field(&fields, "suite_secret")?;
        let account = AccountId::suite(suite_id.ok_or(code::SUITE_ID_MISSING)?);
        let credential = context
            .read_index
            .find(&account, None)
            .map_err(|_| code::INVALID_SUITE_ID)?;
        if !granted(context, key.ok_or(code::SUITE_SECRET_MISSING)?, &account) {
            return Err(code::INVALID_SUITE_SECRET);
        }
        Ok(credential)
    })();
    answer_with(context, "suite_access_token", answer)
}

/// `POST /cgi-bin/service/get_provider_token` with `{"corpid":C,"provider_secret":K}`.
pub async fn provider_token(context: &ApiContext, method: &Method, body: Body) -> Response {
    let fields = match post_fields(method, body).await {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    // Work WeChat's checks in its order: both fields' types, then the corpid, then the secret.
    let answer = (|| {
        let corpid = text_field(&fields, "corpid")?;
        let key = text_field(&fields, "provider_secret")?;
        let account = AccountId::provider(corpid.ok_or(code::APPID_MISSING)?);
        let credential = context
            .read_index
            .find(&account, None)
            .map_err(|_| code::INVALID_APPID)?;
        if !granted(context, key.ok_or(code::APPSECRET_MISSING)?, &account) {
            return Err(code::INVALID_CREDENTIAL);
        }
        Ok(credential)
    })();
    answer_with(context, "provider_access_token", answer)
}

/// `POST /cgi-bin/service/get_corp_token?suite_access_token=T` with `{"auth_corpid":C,…}`: the
/// token of corp C that installed the suite whose token T the hub serves.
pub async fn corp_token(
    context: &ApiContext,
    method: &Method,
    query: Option<&str>,
    body: Body,
) -> Response {
    let fields = match post_fields(method, body).await {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    let answer = (|| {
        let token = param(query, "suite_access_token").ok_or(code::SUITE_TOKEN_MISSING)?;
        let suite = context
            .read_index
            .serving(&token, context.clock.now())
            .filter(|c| c.key.account.kind() == Kind::Suite && c.key.role == Role::AccessToken)
            .ok_or(code::INVALID_SUITE_TOKEN)?;
        let corpid = text_field(&fields, "auth_corpid")?.ok_or(code::APPID_MISSING)?;
        let (suite_id, _) = suite.key.account.parts();
        context
            .read_index
            .find(&AccountId::auth_corp(suite_id, corpid), None)
            .map_err(|_| code::INVALID_PERMANENT_CODE)
    })();
    match answer {
        Ok(credential) => match credential.slot.load() {
            Some(served) => reply::access_token(&served, Host::Work, context.clock.now()),
            None => reply::error(code::SYSTEM_ERROR, Host::Work),
        },
        Err(code) => reply::error(code, Host::Work),
    }
}

/// The JSON fields of a `POST`, or Work WeChat's refusal of another method.
async fn post_fields(
    method: &Method,
    body: Body,
) -> Result<serde_json::Map<String, serde_json::Value>, Response> {
    if *method != Method::POST {
        return Err(reply::error(code::REQUIRE_POST, Host::Work));
    }
    Ok(json_fields(body).await)
}

/// The token `answer` found, as `field`, or Work WeChat's errcode.
fn answer_with(
    context: &ApiContext,
    field: &str,
    answer: Result<std::sync::Arc<crate::read::Credential>, i64>,
) -> Response {
    match answer.map(|credential| credential.slot.load()) {
        Ok(Some(served)) => reply::work_token(field, &served, context.clock.now()),
        Ok(None) => reply::error(code::SYSTEM_ERROR, Host::Work),
        Err(code) => reply::error(code, Host::Work),
    }
}
