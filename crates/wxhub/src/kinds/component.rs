//! Third-party platforms (开放平台 components): the `component_verify_ticket` WeChat pushes, and
//! the `component_access_token` fetched with it and the platform's secret.

use super::{
    AccountId, AccountRoute, CredentialKey, CredentialSpec, Descriptor, Host, Role, RoleShape,
};
use super::{AccountSpec, Source, SpecOf};
use crate::configuration::{ComponentSettings, Secret};

/// The kind's data.
pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "component",
    title: "third-party platform",
    id_fields: &["component_appid"],
    keys: &[
        (RoleShape::PushedTicket, "component_verify_ticket"),
        (RoleShape::AccessToken, "component_token"),
    ],
    host: Host::Official,
    token_param: "component_access_token",
    v1_path: "/v1/components/{component}",
    admin_path: None,
    parent: None,
    unknown_code: "unknown_component",
    signs_with: &[],
    sign_refusal: "a platform has no JS-SDK ticket; sign with one of its authorizers",
    routes: &[AccountRoute::AccessToken],
};

/// Its component token, then the verify ticket it is fetched with (pushed, and kept durably:
/// it cannot be asked for).
pub(super) fn credentials(
    component_appid: &str,
    secret: &Secret,
    spec: SpecOf<'_>,
) -> Vec<(CredentialKey, CredentialSpec)> {
    let account = AccountId::component(component_appid);
    let ticket = CredentialKey::new(account.clone(), Role::PushedTicket);
    let token = CredentialKey::new(account, Role::AccessToken);
    let mut pushed = spec(
        Source::VerifyTicket {
            component_appid: component_appid.to_string(),
            secret: secret.clone(),
        },
        vec![],
    );
    pushed.pushed = true;
    pushed.durable = true;
    let source = Source::ComponentToken {
        component_appid: component_appid.to_string(),
        secret: secret.clone(),
    };
    vec![
        (token, spec(source, vec![ticket.clone()])),
        (ticket, pushed),
    ]
}

/// The account of a `[[components]]` entry.
pub fn from_settings(component: &ComponentSettings) -> AccountSpec {
    AccountSpec::Component {
        component_appid: component.component_appid.clone(),
        secret: component.secret.clone(),
        refresh: component.refresh,
    }
}
