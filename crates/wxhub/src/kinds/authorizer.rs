//! Accounts that authorized a third-party platform: the `authorizer_refresh_token` WeChat hands
//! out once (kept durably and sealed), the `authorizer_access_token` fetched with it and the
//! platform's component token, and JS-SDK tickets fetched with that token.

use super::{
    AccountId, AccountRoute, CredentialKey, CredentialSpec, Descriptor, Host, Kind, Role, RoleShape,
};
use super::{Source, SpecOf};
use crate::configuration::RefreshOverrides;
use crate::token::TicketKind;

/// The kind's data.
pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "authorizer",
    title: "authorizer of a third-party platform",
    id_fields: &["component_appid", "authorizer_appid"],
    keys: &[
        (RoleShape::RefreshToken, "authorizer_refresh_token"),
        (RoleShape::AccessToken, "authorizer_token"),
        (RoleShape::Ticket, "authorizer_ticket"),
    ],
    host: Host::Official,
    token_param: "access_token",
    v1_path: "/v1/components/{component}/authorizers/{appid}",
    admin_path: None,
    parent: Some(Kind::Component),
    unknown_code: "unknown_authorizer",
    signs_with: &["jsapi"],
    sign_refusal: "official accounts sign with the jsapi ticket only",
    routes: &[
        AccountRoute::AccessToken,
        AccountRoute::Tickets,
        AccountRoute::JssdkSignature,
    ],
};

/// An authorizer's definition: what WeChat told about its authorization, and what its platform's
/// settings give every authorizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizerSpec {
    /// The platform.
    pub component_appid: String,
    /// The account.
    pub authorizer_appid: String,
    /// The JS-SDK tickets kept for it (the platform's `authorizer_tickets`).
    pub tickets: Vec<TicketKind>,
    /// The platform's refresh timing.
    pub refresh: RefreshOverrides,
    /// The permission sets it granted (`funcscope_category` ids).
    pub func_info: Vec<u32>,
    /// When it (last) authorized, in Unix seconds.
    pub authorized_at: i64,
    /// Whether it withdrew the authorization: it then has no credentials, and reads answer 410
    /// instead of 404.
    pub revoked: bool,
}

impl AuthorizerSpec {
    /// Its account id.
    pub fn id(&self) -> AccountId {
        AccountId::authorizer(&self.component_appid, &self.authorizer_appid)
    }

    /// The same authorizer, withdrawn.
    pub fn withdrawn(self) -> AuthorizerSpec {
        AuthorizerSpec {
            revoked: true,
            ..self
        }
    }
}

/// Its access token (fetched with the platform's component token and its refresh token), each
/// ticket fetched with that token, then the refresh token itself: written from WeChat's
/// answers, never fetched on its own, and durable.
/// None once it withdrew.
pub(super) fn credentials(
    authorizer: &AuthorizerSpec,
    spec: SpecOf<'_>,
) -> Vec<(CredentialKey, CredentialSpec)> {
    if authorizer.revoked {
        return Vec::new();
    }
    let (component_appid, authorizer_appid) =
        (&authorizer.component_appid, &authorizer.authorizer_appid);
    let account = authorizer.id();
    let token = CredentialKey::new(account.clone(), Role::AccessToken);
    let refresh_token = CredentialKey::new(account.clone(), Role::RefreshToken);
    let component_token =
        CredentialKey::new(AccountId::component(component_appid), Role::AccessToken);
    let source = Source::AuthorizerToken {
        component_appid: component_appid.to_string(),
        authorizer_appid: authorizer_appid.to_string(),
    };
    // Sized once: a start registers 100,000 of these, and growing from one moved the specs.
    let mut all = Vec::with_capacity(2 + authorizer.tickets.len());
    all.push((
        token.clone(),
        spec(source, vec![component_token, refresh_token.clone()]),
    ));
    for &kind in &authorizer.tickets {
        all.push((
            CredentialKey::new(account.clone(), Role::Ticket(kind)),
            spec(Source::AppTicket { kind }, vec![token.clone()]),
        ));
    }
    let mut durable = spec(Source::AuthorizerRefreshToken, vec![]);
    durable.pushed = true;
    durable.durable = true;
    all.push((refresh_token, durable));
    all
}
