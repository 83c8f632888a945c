//! Corps that installed a Work WeChat suite (授权企业): the `permanent_code` Work WeChat hands
//! out once per installation (kept durably and sealed: Work WeChat has no API that lists it
//! again, so a lost code means the company reinstalls the app), the corp's access token fetched
//! with it and the suite token, and JS-SDK tickets fetched with that token as for a Work app.

use super::{AccountId, AccountRoute, CredentialKey, CredentialSpec, Descriptor, Host, Kind};
use super::{Role, RoleShape, Source, SpecOf};
use crate::configuration::RefreshOverrides;
use crate::token::CorpTicketKind;

/// The kind's data.
pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "auth_corp",
    title: "corp that installed a Work WeChat suite",
    id_fields: &["suite_id", "corpid"],
    keys: &[
        (RoleShape::RefreshToken, "permanent_code"),
        (RoleShape::AccessToken, "auth_corp_token"),
        (RoleShape::CorpTicket, "auth_corp_ticket"),
    ],
    host: Host::Work,
    token_param: "access_token",
    v1_path: "/v1/suites/{suite_id}/corps/{corpid}",
    admin_path: None,
    parent: Some(Kind::Suite),
    unknown_code: "unknown_corp",
    signs_with: &["jsapi", "agent_config"],
    sign_refusal: "a corp that installed a suite signs with \"jsapi\" or \"agent_config\"",
    routes: &[
        AccountRoute::AccessToken,
        AccountRoute::Tickets,
        AccountRoute::JssdkSignature,
    ],
};

/// An installation's definition: what Work WeChat told about it, and what its suite's settings
/// give every installed corp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthCorpSpec {
    /// The suite installed.
    pub suite_id: String,
    /// The corp that installed it.
    pub corpid: String,
    /// The corp's name, as Work WeChat gave it (for operators).
    pub corp_name: String,
    /// The agentid the suite's app has in that corp (for `wx.agentConfig`).
    pub agentid: Option<String>,
    /// The JS-SDK tickets kept for it (the suite's `corp_tickets`).
    pub tickets: Vec<CorpTicketKind>,
    /// The suite's refresh timing.
    pub refresh: RefreshOverrides,
    /// When it (last) installed, in Unix seconds.
    pub installed_at: i64,
    /// Whether it uninstalled (`cancel_auth`): it then has no credentials, and reads answer 410
    /// instead of 404.
    pub revoked: bool,
}

impl AuthCorpSpec {
    /// Its account id.
    pub fn id(&self) -> AccountId {
        AccountId::auth_corp(&self.suite_id, &self.corpid)
    }

    /// The same installation, cancelled.
    pub fn withdrawn(self) -> AuthCorpSpec {
        AuthCorpSpec {
            revoked: true,
            ..self
        }
    }
}

/// Its access token (fetched with the suite token and its permanent code), each ticket fetched
/// with that token, then the permanent code itself: written from Work WeChat's answers, never
/// fetched on its own, and durable. None once it uninstalled.
pub(super) fn credentials(
    corp: &AuthCorpSpec,
    spec: SpecOf<'_>,
) -> Vec<(CredentialKey, CredentialSpec)> {
    if corp.revoked {
        return Vec::new();
    }
    let account = corp.id();
    let token = CredentialKey::new(account.clone(), Role::AccessToken);
    let permanent_code = CredentialKey::new(account.clone(), Role::RefreshToken);
    let suite_token = CredentialKey::new(AccountId::suite(&corp.suite_id), Role::AccessToken);
    let source = Source::AuthCorpToken {
        suite_id: corp.suite_id.clone(),
        corpid: corp.corpid.clone(),
    };
    // Sized once, as an authorizer's: thousands of corps are registered at a start.
    let mut all = Vec::with_capacity(2 + corp.tickets.len());
    all.push((
        token.clone(),
        spec(source, vec![suite_token, permanent_code.clone()]),
    ));
    for &kind in &corp.tickets {
        all.push((
            CredentialKey::new(account.clone(), Role::CorpTicket(kind)),
            spec(Source::CorpTicket { kind }, vec![token.clone()]),
        ));
    }
    let mut durable = spec(Source::PermanentCode, vec![]);
    durable.pushed = true;
    durable.durable = true;
    all.push((permanent_code, durable));
    all
}
