//! The third-party platform's authorization endpoints, answered by the hub so that an unmodified
//! platform SDK (wechatpy's `WeChatComponent`, say) runs its flow against the gateway
//! (docs/platform.md#platform-sdks-through-the-gateway):
//!
//! - `api_query_auth`: the authorization code is exchanged by the hub, which registers the
//!   authorizer and keeps its refresh token, as `POST /v1/components/{c}/authorizations` does;
//!   the SDK gets the hub's authorizer token and a stand-in refresh token;
//! - `api_authorizer_token`: answered with the token the hub serves, for the stand-in, without
//!   a call to WeChat (a fetch there would mint a new token each time and kill the hub's).
//!
//! Both are authenticated as WeChat authenticates them: by the component token, which must be
//! one the hub serves (the SDK got it from `api_component_token` with a consumer key), and the
//! body's `component_appid`, which must be its platform's. Nothing either answers is an errcode
//! on which SDKs refetch their token and retry (40001, 40014, 42001) unless a refetch fixes it.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::token::{json_fields, text_field};
use crate::api::ApiContext;
use crate::engine::RefreshError;
use crate::forward::reply::{self, code, Host};
use crate::kinds::{Kind, Role};
use crate::platform::{PlatformError, SdkAuthorizer, SdkRefusal};
use crate::upstream::UpstreamError;

/// The errcodes on which SDKs refetch their token and call again: one the hub passes on from
/// WeChat becomes -1, since a refetch of the hub's token cannot change WeChat's answer.
const REFETCH_CODES: [i64; 3] = [40001, 40014, 42001];

/// A checked call: whose component token it carries, and its JSON body.
struct Caller {
    /// The platform the call's component token belongs to (and its body names).
    component_appid: String,
    /// The body's fields.
    fields: Map<String, Value>,
}

/// `POST /cgi-bin/component/api_query_auth?component_access_token=T` with
/// `{"component_appid","authorization_code"}`.
pub async fn query_auth(
    context: &ApiContext,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: Body,
) -> Response {
    let caller = match check(context, method, path, query, body).await {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let component = caller.component_appid.as_str();
    let code = match text_field(&caller.fields, "authorization_code") {
        Ok(Some(code)) => code,
        Ok(None) => return reply::error(code::CODE_MISSING, Host::Official),
        Err(errcode) => return reply::error(errcode, Host::Official),
    };
    let exchanged = context.platform.exchange_for_sdk(component, code).await;
    let (target, outcome) = match &exchanged {
        Ok(authorizer) => (
            format!("authorizer/{component}/{}", authorizer.authorizer_appid),
            "ok".to_string(),
        ),
        Err(error) => (
            format!("component/{component}"),
            errcode_of(error).0.to_string(),
        ),
    };
    context.control.audit().record(
        crate::audit::GATEWAY_COMPONENT_TOKEN,
        "register_authorizer",
        &target,
        &outcome,
    );
    match exchanged {
        Ok(authorizer) => authorization_info(context, &authorizer),
        Err(error) => match errcode_of(&error) {
            // WeChat's word on the caller's code: the caller's business.
            (errcode, Some(errmsg)) => {
                tracing::info!(component, error = %error, "gateway api_query_auth refused by WeChat");
                reply::relayed(errcode, &errmsg)
            }
            (errcode, None) => {
                tracing::warn!(component, error = %error, "gateway api_query_auth failed");
                reply::error(errcode, Host::Official)
            }
        },
    }
}

/// `POST /cgi-bin/component/api_authorizer_token?component_access_token=T` with
/// `{"component_appid","authorizer_appid","authorizer_refresh_token"}`, the refresh token being
/// the stand-in the SDK was given.
pub async fn authorizer_token(
    context: &ApiContext,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: Body,
) -> Response {
    let caller = match check(context, method, path, query, body).await {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let answer = (|| {
        let authorizer = text_field(&caller.fields, "authorizer_appid")?;
        let presented = text_field(&caller.fields, "authorizer_refresh_token")?;
        let authorizer = authorizer.ok_or(code::APPID_MISSING)?;
        let presented = presented.ok_or(code::REFRESH_TOKEN_INVALID)?;
        context
            .platform
            .authorizer_for_sdk(&caller.component_appid, authorizer, presented)
            .map_err(|refusal| match refusal {
                SdkRefusal::UnknownComponent => code::INVALID_COMPONENT,
                SdkRefusal::NotAStandIn => code::REFRESH_TOKEN_INVALID,
                SdkRefusal::Unavailable => code::SYSTEM_ERROR,
            })
    })();
    let authorizer = match answer {
        Ok(authorizer) => authorizer,
        Err(errcode) => return reply::error(errcode, Host::Official),
    };
    let now = context.clock.now();
    let Some((token, expires_in)) = authorizer
        .token
        .as_ref()
        .and_then(|served| Some((served, reply::expires_in(served, now)?)))
    else {
        return reply::error(code::SYSTEM_ERROR, Host::Official);
    };
    #[derive(Serialize)]
    struct Answer<'a> {
        authorizer_access_token: &'a str,
        expires_in: u64,
        authorizer_refresh_token: &'a str,
    }
    reply::json(&Answer {
        authorizer_access_token: &token.value,
        expires_in,
        authorizer_refresh_token: &authorizer.refresh_stand_in,
    })
}

/// Checks a call as WeChat does, in WeChat's order: `POST`, a component token (one the hub
/// serves: 40014 otherwise, which the SDK's refetch from the hub fixes), and a body whose
/// `component_appid` is that token's platform.
async fn check(
    context: &ApiContext,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: Body,
) -> Result<Caller, Response> {
    let refuse = |errcode| reply::error(errcode, Host::Official);
    if *method != Method::POST {
        return Err(refuse(code::REQUIRE_POST));
    }
    let token = match super::token_param(Host::Official, path, query) {
        Ok(Some((_, token))) => token,
        Ok(None) => return Err(refuse(code::ACCESS_TOKEN_MISSING)),
        Err(super::AmbiguousToken) => {
            return Err(reply::error_with_status(
                StatusCode::BAD_REQUEST,
                code::INVALID_ARGS,
                Host::Official,
            ))
        }
    };
    let component = context
        .read_index
        .serving(&token, context.clock.now())
        .filter(|c| c.key.account.kind() == Kind::Component && c.key.role == Role::AccessToken)
        .ok_or_else(|| refuse(code::INVALID_ACCESS_TOKEN))?;
    let (component_appid, _) = component.key.account.parts();
    let fields = json_fields(body).await;
    match text_field(&fields, "component_appid") {
        Ok(Some(named)) if named == component_appid => Ok(Caller {
            component_appid: component_appid.to_string(),
            fields,
        }),
        Ok(Some(_)) => Err(refuse(code::INVALID_COMPONENT)),
        Ok(None) => Err(refuse(code::COMPONENT_APPID_MISSING)),
        Err(errcode) => Err(refuse(errcode)),
    }
}

/// `api_query_auth`'s answer: the authorizer, and, when WeChat gave it tokens, the hub's token
/// and the stand-in.
fn authorization_info(context: &ApiContext, authorizer: &SdkAuthorizer) -> Response {
    let func_info: Vec<Value> = authorizer
        .func_info
        .iter()
        .map(|id| json!({ "funcscope_category": { "id": id } }))
        .collect();
    let mut info = json!({
        "authorizer_appid": authorizer.authorizer_appid,
        "func_info": func_info,
    });
    if let Some(served) = &authorizer.token {
        let Some(expires_in) = reply::expires_in(served, context.clock.now()) else {
            return reply::error(code::SYSTEM_ERROR, Host::Official);
        };
        info["authorizer_access_token"] = json!(&*served.value);
        info["expires_in"] = json!(expires_in);
        info["authorizer_refresh_token"] = json!(authorizer.refresh_stand_in);
    }
    reply::json(&json!({ "authorization_info": info }))
}

/// The errcode an exchange that failed is answered with, and WeChat's errmsg when the errcode is
/// WeChat's: its refusal of the code (61009, 61010, …) is passed on as it is; the hub's own
/// failures, and a refusal of the component token that persisted after the hub replaced it, are
/// -1.
fn errcode_of(error: &PlatformError) -> (i64, Option<String>) {
    let PlatformError::Refresh(RefreshError::Upstream(upstream)) = error else {
        return match error {
            PlatformError::UnknownComponent(_) => (code::INVALID_COMPONENT, None),
            _ => (code::SYSTEM_ERROR, None),
        };
    };
    let wechats = match upstream {
        UpstreamError::TokenInvalid { .. } => None,
        UpstreamError::Transient { errcode, message } => errcode.map(|errcode| (errcode, message)),
        UpstreamError::Quota { errcode, message } | UpstreamError::Config { errcode, message } => {
            Some((*errcode, message))
        }
    };
    match wechats {
        Some((errcode, message)) if !REFETCH_CODES.contains(&errcode) => {
            (errcode, Some(message.clone()))
        }
        _ => (code::SYSTEM_ERROR, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(error: UpstreamError) -> PlatformError {
        PlatformError::Refresh(RefreshError::Upstream(error))
    }

    #[test]
    fn wechats_refusal_of_a_code_is_passed_on_and_nothing_an_sdk_refetches_on() {
        let config = |errcode| UpstreamError::Config {
            errcode,
            message: "code is expired".into(),
        };
        assert_eq!(
            errcode_of(&upstream(config(61010))),
            (61010, Some("code is expired".into()))
        );
        for refetched in REFETCH_CODES {
            assert_eq!(
                errcode_of(&upstream(config(refetched))),
                (code::SYSTEM_ERROR, None)
            );
        }
        let dead_component_token = UpstreamError::TokenInvalid {
            errcode: 40001,
            message: "invalid credential".into(),
        };
        assert_eq!(
            errcode_of(&upstream(dead_component_token)),
            (code::SYSTEM_ERROR, None)
        );
        assert_eq!(
            errcode_of(&upstream(UpstreamError::transient("timeout"))),
            (code::SYSTEM_ERROR, None)
        );
        assert_eq!(
            errcode_of(&PlatformError::UnknownComponent("wxc".into())),
            (code::INVALID_COMPONENT, None)
        );
        assert_eq!(
            errcode_of(&PlatformError::Refresh(RefreshError::LeaseTimeout)),
            (code::SYSTEM_ERROR, None)
        );
    }
}
