//! Answers in WeChat's own shapes: HTTP 200 with `errcode`/`errmsg` for errors, and the exact
//! success bodies of the token and ticket endpoints, so that an SDK cannot tell the hub from
//! WeChat.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use rand::Rng;
use serde::Serialize;

use crate::read::Served;
use crate::token::Timestamp;

pub use crate::kinds::Host;

/// The errcodes the gateway answers with itself.
pub mod code {
    /// Busy / no usable token right now.
    pub const SYSTEM_ERROR: i64 = -1;
    /// Work: wrong corpsecret (WeChat's answer for an unknown secret).
    pub const INVALID_CREDENTIAL: i64 = 40001;
    /// `grant_type` is not `client_credential`.
    pub const INVALID_GRANT_TYPE: i64 = 40002;
    /// An appid (corpid) the hub does not serve.
    pub const INVALID_APPID: i64 = 40013;
    /// An `access_token` the hub does not serve.
    pub const INVALID_ACCESS_TOKEN: i64 = 40014;
    /// The key is wrong, or not granted this app.
    pub const INVALID_APPSECRET: i64 = 40125;
    /// No `access_token` parameter.
    pub const ACCESS_TOKEN_MISSING: i64 = 41001;
    /// No `appid` (`corpid`).
    pub const APPID_MISSING: i64 = 41002;
    /// No `secret` (`corpsecret`).
    pub const APPSECRET_MISSING: i64 = 41004;
    /// `stable_token` asked with another method than POST.
    pub const REQUIRE_POST: i64 = 43002;
    /// A JSON field of the wrong type.
    pub const DATA_FORMAT: i64 = 47001;
    /// Arguments WeChat cannot read one way only (a token parameter given twice, or both token
    /// parameters): not a token errcode, so an SDK does not refetch and retry in a loop.
    pub const INVALID_ARGS: i64 = 40097;
    /// No `component_appid`.
    pub const COMPONENT_APPID_MISSING: i64 = 41018;
    /// A third-party platform the hub does not serve.
    pub const INVALID_COMPONENT: i64 = 61011;
    /// Work WeChat: a wrong `suite_secret` (for the gateway: a key not granted the suite).
    pub const INVALID_SUITE_SECRET: i64 = 40080;
    /// No `authorization_code` in an `api_query_auth` call.
    pub const CODE_MISSING: i64 = 41008;
    /// An `authorizer_refresh_token` that is not the authorizer's (or an authorizer that
    /// withdrew): a refetch of the component token cannot change it, so an SDK does not loop.
    pub const REFRESH_TOKEN_INVALID: i64 = 61023;
    /// Work WeChat: an invalid suite token.
    pub const INVALID_SUITE_TOKEN: i64 = 40082;
    /// Work WeChat: an unknown suite id.
    pub const INVALID_SUITE_ID: i64 = 40083;
    /// Work WeChat: an invalid permanent code (no such installation).
    pub const INVALID_PERMANENT_CODE: i64 = 40084;
    /// Work WeChat: no `suite_id`.
    pub const SUITE_ID_MISSING: i64 = 41021;
    /// Work WeChat: no `suite_access_token`.
    pub const SUITE_TOKEN_MISSING: i64 = 41022;
    /// Work WeChat: no `suite_secret`.
    pub const SUITE_SECRET_MISSING: i64 = 41024;
}

/// WeChat's text for `code` on `host`.
fn text(code: i64, host: Host) -> &'static str {
    match (host, code) {
        (Host::Work, code::INVALID_CREDENTIAL) => "invalid credential",
        (Host::Work, code::INVALID_APPID) => "invalid corpid",
        (Host::Work, code::APPID_MISSING) => "corpid missing",
        (Host::Work, code::APPSECRET_MISSING) => "corpsecret missing",
        (_, code::SYSTEM_ERROR) => "system error",
        (_, code::INVALID_CREDENTIAL) => {
            "invalid credential, access_token is invalid or not latest"
        }
        (_, code::INVALID_GRANT_TYPE) => "invalid grant_type",
        (_, code::INVALID_APPID) => "invalid appid",
        (_, code::INVALID_ACCESS_TOKEN) => "invalid access_token",
        (_, code::INVALID_APPSECRET) => "invalid appsecret",
        (_, code::ACCESS_TOKEN_MISSING) => "access_token missing",
        (_, code::APPID_MISSING) => "appid missing",
        (_, code::APPSECRET_MISSING) => "appsecret missing",
        (_, code::REQUIRE_POST) => "require POST method",
        (_, code::DATA_FORMAT) => "data format error",
        (_, code::INVALID_ARGS) => "invalid args: one token parameter per call",
        (_, code::COMPONENT_APPID_MISSING) => "missing component_appid",
        (_, code::INVALID_COMPONENT) => "invalid component",
        // Work WeChat's third-party codes, with the texts its answers carry (the misspelling is
        // Work WeChat's own).
        (_, code::INVALID_SUITE_SECRET) => "invalid suite_secret",
        (_, code::INVALID_SUITE_TOKEN) => "invalid suite_acccess_token or provider_access_token",
        (_, code::INVALID_SUITE_ID) => "invalid SuiteId",
        (_, code::INVALID_PERMANENT_CODE) => "invalid permanent_code",
        (_, code::SUITE_ID_MISSING) => "suite_id missing",
        (_, code::SUITE_TOKEN_MISSING) => "suite_access_token missing",
        (_, code::SUITE_SECRET_MISSING) => "suite_secret missing",
        (_, code::CODE_MISSING) => "missing code",
        (_, code::REFRESH_TOKEN_INVALID) => "refresh_token is invalid",
        _ => "system error",
    }
}

/// The body of an error.
#[derive(Serialize)]
struct Status<'a> {
    errcode: i64,
    errmsg: &'a str,
}

/// An error as WeChat sends it: HTTP 200, `{"errcode":N,"errmsg":"<text> rid: …"}`. The suffix
/// has WeChat's form, so that logs and SDK messages look alike; it names this answer only.
pub fn error(code: i64, host: Host) -> Response {
    error_with_status(StatusCode::OK, code, host)
}

/// [`error`] with another HTTP status (the gateway's own failures: WeChat unreachable, body too
/// large), so that a proxy error is never mistaken for WeChat's word.
pub fn error_with_status(status: StatusCode, code: i64, host: Host) -> Response {
    let mut rng = rand::thread_rng();
    let base = text(code, host);
    let errmsg = match host {
        Host::Official => format!(
            "{base} rid: {:08x}-{:08x}-{:08x}",
            Timestamp::now().as_secs() as u32,
            rng.gen::<u32>(),
            rng.gen::<u32>()
        ),
        Host::Work => format!(
            "{base}, hint: [{}{:015}], from wxhub",
            Timestamp::now().as_secs(),
            rng.gen_range(0..1_000_000_000_000_000u64)
        ),
    };
    let mut response = json(&Status {
        errcode: code,
        errmsg: &errmsg,
    });
    *response.status_mut() = status;
    response
}

/// An error WeChat gave the hub, passed on to the caller as WeChat worded it (`errmsg` as the
/// upstream client read it: bounded, control characters escaped).
pub fn relayed(code: i64, errmsg: &str) -> Response {
    json(&Status {
        errcode: code,
        errmsg,
    })
}

/// A JSON body with WeChat's content type.
pub fn json<T: Serialize>(body: &T) -> Response {
    // Serializing these plain structs cannot fail; an empty object would still be valid JSON.
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Body::from(bytes));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    response
}

/// The seconds an SDK is told a served value lives: what the hub tells its own consumers, but
/// never 0 or less (some SDKs read 0 as "two hours"); `None` once the value has expired.
pub fn expires_in(served: &Served, now: Timestamp) -> Option<u64> {
    let planned = served.expires_in(now)?;
    Some(if planned > 0 {
        planned
    } else {
        served.expires_at.since(now).as_secs().max(1)
    })
}

/// `{"component_access_token":"…","expires_in":N}`: a platform's token as
/// `api_component_token` answers.
pub fn component_token(served: &Served, now: Timestamp) -> Response {
    let Some(expires_in) = expires_in(served, now) else {
        return error(code::SYSTEM_ERROR, Host::Official);
    };
    #[derive(Serialize)]
    struct Answer<'a> {
        component_access_token: &'a str,
        expires_in: u64,
    }
    json(&Answer {
        component_access_token: &served.value,
        expires_in,
    })
}

/// `{"access_token","expires_in"}` (official) or with `errcode` 0 first (Work).
pub fn access_token(served: &Served, host: Host, now: Timestamp) -> Response {
    let Some(expires_in) = expires_in(served, now) else {
        return error(code::SYSTEM_ERROR, host);
    };
    match host {
        Host::Official => {
            #[derive(Serialize)]
            struct Answer<'a> {
                access_token: &'a str,
                expires_in: u64,
            }
            json(&Answer {
                access_token: &served.value,
                expires_in,
            })
        }
        Host::Work => {
            #[derive(Serialize)]
            struct Answer<'a> {
                errcode: i64,
                errmsg: &'a str,
                access_token: &'a str,
                expires_in: u64,
            }
            json(&Answer {
                errcode: 0,
                errmsg: "ok",
                access_token: &served.value,
                expires_in,
            })
        }
    }
}

/// Work WeChat's third-party token answers: `{"errcode":0,"errmsg":"ok", FIELD, "expires_in"}`
/// with FIELD `suite_access_token` or `provider_access_token`.
pub fn work_token(field: &str, served: &Served, now: Timestamp) -> Response {
    let Some(expires_in) = expires_in(served, now) else {
        return error(code::SYSTEM_ERROR, Host::Work);
    };
    json(&serde_json::json!({
        "errcode": 0,
        "errmsg": "ok",
        field: &*served.value,
        "expires_in": expires_in,
    }))
}

/// `{"errcode":0,"errmsg":"ok","ticket","expires_in"}`, the same on both hosts.
pub fn ticket(served: &Served, host: Host, now: Timestamp) -> Response {
    let Some(expires_in) = expires_in(served, now) else {
        return error(code::SYSTEM_ERROR, host);
    };
    #[derive(Serialize)]
    struct Answer<'a> {
        errcode: i64,
        errmsg: &'a str,
        ticket: &'a str,
        expires_in: u64,
    }
    json(&Answer {
        errcode: 0,
        errmsg: "ok",
        ticket: &served.value,
        expires_in,
    })
}
