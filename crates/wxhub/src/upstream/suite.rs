//! Work WeChat's third-party endpoints (`cgi-bin/service/*` on the Work host): the suite token
//! from the pushed suite ticket, installations exchanged for permanent codes, installed corps'
//! tokens, and the provider token. See docs/suites.md.

use serde_json::{json, Value};

use super::component::{fetched, malformed};
use super::MAX_RESPONSE_BYTES;
use super::{Authenticates, Call, Fetched, Upstream, UpstreamError};

/// What `get_permanent_code` returns for an installation's auth code.
#[derive(Clone)]
pub struct Installation {
    /// The corp that installed the suite.
    pub corpid: String,
    /// Its name.
    pub corp_name: String,
    /// The agentid the suite's app has in that corp, if Work WeChat gave one.
    pub agentid: Option<String>,
    /// The permanent code: the one secret from which the corp's tokens are fetched.
    pub permanent_code: String,
    /// The corp's access token, when the answer carries one.
    pub access_token: Option<Fetched>,
}

/// An id as Work WeChat writes it: a string, or (agentid) a number.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

impl Upstream {
    /// `service/get_suite_token`: the suite token for the suite's secret and its latest suite
    /// ticket. Work WeChat answers a repeated call inside the lifetime with the same value.
    pub async fn suite_token(
        &self,
        suite_id: &str,
        secret: &str,
        suite_ticket: &str,
    ) -> Result<Fetched, UpstreamError> {
        let body = json!({
            "suite_id": suite_id,
            "suite_secret": secret,
            "suite_ticket": suite_ticket,
        });
        let value = self
            .service_call("get_suite_token", None, body, Authenticates::WithSecret)
            .await?;
        fetched(&value, "suite_access_token")
            .ok_or_else(|| malformed("a suite_access_token and a positive expires_in"))
    }

    /// `service/get_provider_token`: the provider token for the provider's corpid and secret.
    pub async fn provider_token(
        &self,
        corpid: &str,
        provider_secret: &str,
    ) -> Result<Fetched, UpstreamError> {
        let body = json!({ "corpid": corpid, "provider_secret": provider_secret });
        let value = self
            .service_call("get_provider_token", None, body, Authenticates::WithSecret)
            .await?;
        fetched(&value, "provider_access_token")
            .ok_or_else(|| malformed("a provider_access_token and a positive expires_in"))
    }

    /// `service/get_pre_auth_code`: a code for an install link of the suite.
    pub async fn suite_pre_auth_code(&self, suite_token: &str) -> Result<Fetched, UpstreamError> {
        let request = Call::get(format!(
            "{}/cgi-bin/service/get_pre_auth_code",
            self.work_api_base
        ))
        .query(&[("suite_access_token", suite_token)]);
        let value = self
            .send_json(
                "get_pre_auth_code",
                request,
                Authenticates::WithAccessToken,
                MAX_RESPONSE_BYTES,
            )
            .await?;
        fetched(&value, "pre_auth_code")
            .ok_or_else(|| malformed("a pre_auth_code and a positive expires_in"))
    }

    /// `service/get_permanent_code`: exchanges an installation's auth code (valid once) for the
    /// corp's permanent code.
    pub async fn permanent_code(
        &self,
        suite_token: &str,
        auth_code: &str,
    ) -> Result<Installation, UpstreamError> {
        let body = json!({ "auth_code": auth_code });
        let value = self
            .service_call(
                "get_permanent_code",
                Some(suite_token),
                body,
                Authenticates::WithAccessToken,
            )
            .await?;
        let corp = &value["auth_corp_info"];
        let corpid = corp["corpid"]
            .as_str()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| malformed("auth_corp_info.corpid"))?;
        let permanent_code = value["permanent_code"]
            .as_str()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| malformed("a permanent_code"))?;
        Ok(Installation {
            corpid: corpid.to_string(),
            corp_name: corp["corp_name"].as_str().unwrap_or_default().to_string(),
            agentid: id_text(&value["auth_info"]["agent"][0]["agentid"]),
            permanent_code: permanent_code.to_string(),
            access_token: fetched(&value, "access_token"),
        })
    }

    /// `service/get_corp_token`: an installed corp's access token, from its permanent code.
    pub async fn auth_corp_token(
        &self,
        suite_token: &str,
        corpid: &str,
        permanent_code: &str,
    ) -> Result<Fetched, UpstreamError> {
        let body = json!({ "auth_corpid": corpid, "permanent_code": permanent_code });
        let value = self
            .service_call(
                "get_corp_token",
                Some(suite_token),
                body,
                Authenticates::WithAccessToken,
            )
            .await?;
        fetched(&value, "access_token")
            .ok_or_else(|| malformed("an access_token and a positive expires_in"))
    }

    /// POSTs `body` to `cgi-bin/service/{endpoint}` on the Work host (with the suite token when
    /// given) and returns Work WeChat's JSON once it carries no errcode (a success may carry
    /// none at all).
    async fn service_call(
        &self,
        endpoint: &'static str,
        suite_token: Option<&str>,
        body: Value,
        auth: Authenticates,
    ) -> Result<Value, UpstreamError> {
        let mut request = Call::post(
            format!("{}/cgi-bin/service/{endpoint}", self.work_api_base),
            body,
        );
        if let Some(token) = suite_token {
            request = request.query(&[("suite_access_token", token)]);
        }
        self.send_json(endpoint, request, auth, MAX_RESPONSE_BYTES)
            .await
    }
}
