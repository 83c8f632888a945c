//! The third-party platform's endpoints (`cgi-bin/component/*`): all POST with a JSON body, all
//! but `api_component_token` and `api_start_push_ticket` authenticated with the component token.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::MAX_RESPONSE_BYTES;
use super::{Authenticates, Call, Fetched, Upstream, UpstreamError};

/// Largest `api_get_authorizer_list` answer accepted: a page of 500 authorizers, each with its
/// appid, refresh token and authorization time, is well above the 64 KiB that bounds every other
/// answer; 2 MiB leaves room for refresh tokens several times longer than WeChat's today.
const MAX_LIST_RESPONSE_BYTES: usize = 2 * 1024 * 1024;

/// What `api_query_auth` returns for an authorization code.
#[derive(Clone)]
pub struct Authorization {
    /// The account that authorized.
    pub authorizer_appid: String,
    /// Its access token, when the account granted API rights.
    pub access_token: Option<Fetched>,
    /// Its refresh token, when the account granted API rights.
    pub refresh_token: Option<String>,
    /// The permission sets granted (`funcscope_category` ids).
    pub func_info: Vec<u32>,
}

/// What `api_authorizer_token` returns.
#[derive(Clone)]
pub struct AuthorizerTokens {
    /// The new access token.
    pub access_token: Fetched,
    /// The refresh token WeChat returned (the same one, or a rotated one).
    pub refresh_token: Option<String>,
}

/// One authorizer in `api_get_authorizer_list`.
#[derive(Clone, Deserialize)]
pub struct ListedAuthorizer {
    /// The account.
    pub authorizer_appid: String,
    /// Its current refresh token (empty until its authorization code was exchanged).
    #[serde(default)]
    pub refresh_token: String,
    /// When it authorized, in Unix seconds.
    #[serde(default)]
    pub auth_time: i64,
}

/// One page of `api_get_authorizer_list`.
#[derive(Clone, Deserialize)]
pub struct AuthorizerPage {
    /// How many authorizers the platform has.
    #[serde(default)]
    pub total_count: u64,
    /// This page.
    #[serde(default)]
    pub list: Vec<ListedAuthorizer>,
}

/// `func_info` as WeChat writes it: `[{"funcscope_category":{"id":1}},…]`.
fn func_info(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["funcscope_category"]["id"].as_u64())
                .filter_map(|id| u32::try_from(id).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A token and its positive lifetime from `value[token_field]` and `value["expires_in"]`.
pub(super) fn fetched(value: &Value, token_field: &str) -> Option<Fetched> {
    let token = value[token_field].as_str().filter(|t| !t.is_empty())?;
    let expires_in = value["expires_in"].as_u64().filter(|e| *e > 0)?;
    Some(Fetched {
        value: token.to_string(),
        expires_in: Duration::from_secs(expires_in),
    })
}

pub(super) fn malformed(what: &str) -> UpstreamError {
    UpstreamError::transient(format!("response lacks {what}"))
}

impl Upstream {
    /// `api_component_token`: a new component token for the platform's secret and its latest
    /// verify ticket. 61005/61006 mean the ticket is expired or invalid.
    pub async fn component_token(
        &self,
        component_appid: &str,
        secret: &str,
        verify_ticket: &str,
    ) -> Result<Fetched, UpstreamError> {
        let body = json!({
            "component_appid": component_appid,
            "component_appsecret": secret,
            "component_verify_ticket": verify_ticket,
        });
        let value = self
            .component_call("api_component_token", None, body, Authenticates::WithSecret)
            .await?;
        fetched(&value, "component_access_token")
            .ok_or_else(|| malformed("a component_access_token and a positive expires_in"))
    }

    /// `api_start_push_ticket`: asks WeChat to push a verify ticket now.
    pub async fn start_push_ticket(
        &self,
        component_appid: &str,
        secret: &str,
    ) -> Result<(), UpstreamError> {
        let body = json!({ "component_appid": component_appid, "component_secret": secret });
        self.component_call(
            "api_start_push_ticket",
            None,
            body,
            Authenticates::WithSecret,
        )
        .await
        .map(|_| ())
    }

    /// `api_create_preauthcode`: a code for building an authorization link.
    pub async fn create_pre_auth_code(
        &self,
        component_appid: &str,
        component_token: &str,
    ) -> Result<Fetched, UpstreamError> {
        let body = json!({ "component_appid": component_appid });
        let value = self
            .component_call(
                "api_create_preauthcode",
                Some(component_token),
                body,
                Authenticates::WithAccessToken,
            )
            .await?;
        fetched(&value, "pre_auth_code")
            .ok_or_else(|| malformed("a pre_auth_code and a positive expires_in"))
    }

    /// `api_query_auth`: exchanges an authorization code for the authorizer's tokens.
    pub async fn query_auth(
        &self,
        component_appid: &str,
        component_token: &str,
        authorization_code: &str,
    ) -> Result<Authorization, UpstreamError> {
        let body = json!({
            "component_appid": component_appid,
            "authorization_code": authorization_code,
        });
        let value = self
            .component_call(
                "api_query_auth",
                Some(component_token),
                body,
                Authenticates::WithAccessToken,
            )
            .await?;
        let info = &value["authorization_info"];
        let authorizer_appid = info["authorizer_appid"]
            .as_str()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| malformed("authorization_info.authorizer_appid"))?;
        Ok(Authorization {
            authorizer_appid: authorizer_appid.to_string(),
            access_token: fetched(info, "authorizer_access_token"),
            refresh_token: info["authorizer_refresh_token"]
                .as_str()
                .filter(|r| !r.is_empty())
                .map(str::to_string),
            func_info: func_info(&info["func_info"]),
        })
    }

    /// `api_authorizer_token`: a new access token for an authorizer's refresh token. 61023 means
    /// the refresh token is no longer valid.
    pub async fn authorizer_token(
        &self,
        component_appid: &str,
        component_token: &str,
        authorizer_appid: &str,
        refresh_token: &str,
    ) -> Result<AuthorizerTokens, UpstreamError> {
        let body = json!({
            "component_appid": component_appid,
            "authorizer_appid": authorizer_appid,
            "authorizer_refresh_token": refresh_token,
        });
        let value = self
            .component_call(
                "api_authorizer_token",
                Some(component_token),
                body,
                Authenticates::WithAccessToken,
            )
            .await?;
        Ok(AuthorizerTokens {
            access_token: fetched(&value, "authorizer_access_token")
                .ok_or_else(|| malformed("an authorizer_access_token and a positive expires_in"))?,
            refresh_token: value["authorizer_refresh_token"]
                .as_str()
                .filter(|r| !r.is_empty())
                .map(str::to_string),
        })
    }

    /// `api_get_authorizer_info`: the authorizer's current refresh token as WeChat holds it
    /// (`None` if WeChat lists none: the code was never exchanged).
    pub async fn authorizer_refresh_token(
        &self,
        component_appid: &str,
        component_token: &str,
        authorizer_appid: &str,
    ) -> Result<Option<String>, UpstreamError> {
        let body = json!({
            "component_appid": component_appid,
            "authorizer_appid": authorizer_appid,
        });
        let value = self
            .component_call(
                "api_get_authorizer_info",
                Some(component_token),
                body,
                Authenticates::WithAccessToken,
            )
            .await?;
        Ok(value["authorization_info"]["authorizer_refresh_token"]
            .as_str()
            .filter(|r| !r.is_empty())
            .map(str::to_string))
    }

    /// `api_get_authorizer_list`: one page (`count` at most 500) of the platform's authorizers
    /// with their current refresh tokens.
    pub async fn authorizer_list(
        &self,
        component_appid: &str,
        component_token: &str,
        offset: u64,
        count: u64,
    ) -> Result<AuthorizerPage, UpstreamError> {
        let body = json!({
            "component_appid": component_appid,
            "offset": offset,
            "count": count,
        });
        let value = self
            .component_call_bounded(
                "api_get_authorizer_list",
                Some(component_token),
                body,
                Authenticates::WithAccessToken,
                MAX_LIST_RESPONSE_BYTES,
            )
            .await?;
        serde_json::from_value(value).map_err(|_| malformed("a readable authorizer list"))
    }

    /// POSTs `body` to `cgi-bin/component/{endpoint}` (with the component token when given) and
    /// returns WeChat's JSON once it carries no errcode.
    async fn component_call(
        &self,
        endpoint: &'static str,
        component_token: Option<&str>,
        body: Value,
        auth: Authenticates,
    ) -> Result<Value, UpstreamError> {
        self.component_call_bounded(endpoint, component_token, body, auth, MAX_RESPONSE_BYTES)
            .await
    }

    /// [`Self::component_call`] for an answer of up to `max_bytes`.
    async fn component_call_bounded(
        &self,
        endpoint: &'static str,
        component_token: Option<&str>,
        body: Value,
        auth: Authenticates,
        max_bytes: usize,
    ) -> Result<Value, UpstreamError> {
        let mut request = Call::post(
            format!("{}/cgi-bin/component/{endpoint}", self.api_base),
            body,
        );
        if let Some(token) = component_token {
            request = request.query(&[("component_access_token", token)]);
        }
        self.send_json(endpoint, request, auth, max_bytes).await
    }
}
