//! The WeChat endpoints the mock serves, and the per-endpoint facts the request pipeline needs.

use crate::input::Input;

/// One mocked WeChat endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET /cgi-bin/token`: the legacy access token.
    Token,
    /// `POST /cgi-bin/stable_token`: the stable access token.
    StableToken,
    /// `GET /cgi-bin/ticket/getticket`: JS-SDK and card tickets.
    GetTicket,
    /// `GET /cgi-bin/get_api_domain_ip`: the business API that stands for all others.
    ApiDomainIp,
    /// `POST /cgi-bin/openapi/quota/get`: an API's daily quota.
    QuotaGet,
    /// `POST /cgi-bin/clear_quota`: clear the quotas with the account's own token.
    ClearQuota,
    /// `POST /cgi-bin/clear_quota/v2`: clear the quotas with appid and AppSecret.
    ClearQuotaV2,
    /// `GET /cgi-bin/gettoken`: Work WeChat app token.
    CorpToken,
    /// `GET /cgi-bin/get_jsapi_ticket`: Work WeChat corp JS-SDK ticket.
    CorpJsapiTicket,
    /// `GET /cgi-bin/ticket/get?type=agent_config`: Work WeChat app ticket.
    CorpAgentTicket,
    /// `POST /cgi-bin/component/api_component_token`: a platform's token, for its verify ticket.
    ComponentToken,
    /// `POST /cgi-bin/component/api_create_preauthcode`: the code of an authorization link.
    CreatePreAuthCode,
    /// `POST /cgi-bin/component/api_query_auth`: an authorization code for the authorizer's
    /// tokens.
    QueryAuth,
    /// `POST /cgi-bin/component/api_authorizer_token`: an authorizer token for its refresh token.
    AuthorizerToken,
    /// `POST /cgi-bin/component/api_get_authorizer_info`: one authorizer's account and grant.
    GetAuthorizerInfo,
    /// `POST /cgi-bin/component/api_get_authorizer_list`: every authorizer and its refresh token,
    /// page by page.
    GetAuthorizerList,
    /// `POST /cgi-bin/component/api_start_push_ticket`: ask for a verify-ticket push now.
    StartPushTicket,
    /// `GET /cgi-bin/getcallbackip`: the addresses WeChat pushes from; a business API that SDKs
    /// wrap (wechatpy `misc.get_wechat_ips`, co-wechat-api `getIp`).
    CallbackIp,
    /// `GET /sns/jscode2session`: a mini-program login, authenticated with the AppSecret itself.
    JsCode2Session,
    /// `POST /cgi-bin/service/get_suite_token`: a Work suite's token, for its pushed ticket.
    SuiteToken,
    /// `GET /cgi-bin/service/get_pre_auth_code`: the code of a suite's install link.
    SuitePreAuthCode,
    /// `POST /cgi-bin/service/get_permanent_code`: an installation's `auth_code` for the corp's
    /// permanent code and a first corp token.
    PermanentCode,
    /// `POST /cgi-bin/service/get_auth_info`: an installed corp and the app it installed.
    AuthInfo,
    /// `POST /cgi-bin/service/get_corp_token`: an installed corp's access token.
    SuiteCorpToken,
    /// `POST /cgi-bin/service/get_provider_token`: the provider's own token.
    ProviderToken,
}

/// Which platform's conventions an answer follows: official accounts omit nothing special, but
/// Work WeChat always sends `errcode` and uses its own errmsg suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// api.weixin.qq.com.
    Official,
    /// qyapi.weixin.qq.com.
    Work,
}

impl Endpoint {
    pub(crate) const ALL: [Endpoint; 25] = [
        Endpoint::Token,
        Endpoint::StableToken,
        Endpoint::GetTicket,
        Endpoint::ApiDomainIp,
        Endpoint::QuotaGet,
        Endpoint::ClearQuota,
        Endpoint::ClearQuotaV2,
        Endpoint::CorpToken,
        Endpoint::CorpJsapiTicket,
        Endpoint::CorpAgentTicket,
        Endpoint::ComponentToken,
        Endpoint::CreatePreAuthCode,
        Endpoint::QueryAuth,
        Endpoint::AuthorizerToken,
        Endpoint::GetAuthorizerInfo,
        Endpoint::GetAuthorizerList,
        Endpoint::StartPushTicket,
        Endpoint::CallbackIp,
        Endpoint::JsCode2Session,
        Endpoint::SuiteToken,
        Endpoint::SuitePreAuthCode,
        Endpoint::PermanentCode,
        Endpoint::AuthInfo,
        Endpoint::SuiteCorpToken,
        Endpoint::ProviderToken,
    ];

    pub(crate) fn path(self) -> &'static str {
        match self {
            Endpoint::Token => "/cgi-bin/token",
            Endpoint::StableToken => "/cgi-bin/stable_token",
            Endpoint::GetTicket => "/cgi-bin/ticket/getticket",
            Endpoint::ApiDomainIp => "/cgi-bin/get_api_domain_ip",
            Endpoint::QuotaGet => "/cgi-bin/openapi/quota/get",
            Endpoint::ClearQuota => "/cgi-bin/clear_quota",
            Endpoint::ClearQuotaV2 => "/cgi-bin/clear_quota/v2",
            Endpoint::CorpToken => "/cgi-bin/gettoken",
            Endpoint::CorpJsapiTicket => "/cgi-bin/get_jsapi_ticket",
            Endpoint::CorpAgentTicket => "/cgi-bin/ticket/get",
            Endpoint::ComponentToken => "/cgi-bin/component/api_component_token",
            Endpoint::CreatePreAuthCode => "/cgi-bin/component/api_create_preauthcode",
            Endpoint::QueryAuth => "/cgi-bin/component/api_query_auth",
            Endpoint::AuthorizerToken => "/cgi-bin/component/api_authorizer_token",
            Endpoint::GetAuthorizerInfo => "/cgi-bin/component/api_get_authorizer_info",
            Endpoint::GetAuthorizerList => "/cgi-bin/component/api_get_authorizer_list",
            Endpoint::StartPushTicket => "/cgi-bin/component/api_start_push_ticket",
            Endpoint::CallbackIp => "/cgi-bin/getcallbackip",
            Endpoint::JsCode2Session => "/sns/jscode2session",
            Endpoint::SuiteToken => "/cgi-bin/service/get_suite_token",
            Endpoint::SuitePreAuthCode => "/cgi-bin/service/get_pre_auth_code",
            Endpoint::PermanentCode => "/cgi-bin/service/get_permanent_code",
            Endpoint::AuthInfo => "/cgi-bin/service/get_auth_info",
            Endpoint::SuiteCorpToken => "/cgi-bin/service/get_corp_token",
            Endpoint::ProviderToken => "/cgi-bin/service/get_provider_token",
        }
    }

    /// Whether the endpoint reads a JSON body (and is POST-only).
    pub(crate) fn takes_json_body(self) -> bool {
        matches!(
            self,
            Endpoint::StableToken
                | Endpoint::QuotaGet
                | Endpoint::ClearQuota
                | Endpoint::ClearQuotaV2
        ) || self.is_component()
            || (self.is_suite() && self != Endpoint::SuitePreAuthCode)
    }

    /// Whether the endpoint belongs to the third-party platform (all POST with a JSON body).
    pub(crate) fn is_component(self) -> bool {
        matches!(
            self,
            Endpoint::ComponentToken
                | Endpoint::CreatePreAuthCode
                | Endpoint::QueryAuth
                | Endpoint::AuthorizerToken
                | Endpoint::GetAuthorizerInfo
                | Endpoint::GetAuthorizerList
                | Endpoint::StartPushTicket
        )
    }

    /// Whether the endpoint belongs to Work WeChat's third-party side (`cgi-bin/service/*`).
    pub(crate) fn is_suite(self) -> bool {
        matches!(
            self,
            Endpoint::SuiteToken
                | Endpoint::SuitePreAuthCode
                | Endpoint::PermanentCode
                | Endpoint::AuthInfo
                | Endpoint::SuiteCorpToken
                | Endpoint::ProviderToken
        )
    }

    /// Whether outcomes count in [`crate::MockStats::business`].
    pub(crate) fn is_business(self) -> bool {
        matches!(
            self,
            Endpoint::ApiDomainIp | Endpoint::QuotaGet | Endpoint::CallbackIp
        )
    }

    /// The platform whose conventions an answer to `account` follows. `get_api_domain_ip` exists
    /// on both hosts, so it answers a Work WeChat app (`corpid/agentid`), and a call carrying a
    /// suite or provider token, in the Work flavor.
    pub(crate) fn flavor(self, account: &str, input: &Input) -> Flavor {
        match self {
            Endpoint::CorpToken | Endpoint::CorpJsapiTicket | Endpoint::CorpAgentTicket => {
                Flavor::Work
            }
            _ if self.is_suite() => Flavor::Work,
            Endpoint::ApiDomainIp
                if account.contains('/') || crate::suite::service_token_param(input).is_some() =>
            {
                Flavor::Work
            }
            _ => Flavor::Official,
        }
    }
}
