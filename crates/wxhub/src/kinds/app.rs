//! Official accounts and mini programs: an access token from the AppSecret (stable or legacy
//! endpoint), and the JS-SDK tickets fetched with it.

use super::{token_then_tickets, AccountId, AccountSpec, CredentialKey, CredentialSpec};
use super::{AccountRoute, Descriptor, Host, Role, RoleShape, Source, SpecOf};
use crate::configuration::{AppSettings, Secret, TokenMode};
use crate::token::TicketKind;

/// The kind's data.
pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "app",
    title: "official account or mini program",
    id_fields: &["appid"],
    keys: &[
        (RoleShape::AccessToken, "access_token"),
        (RoleShape::Ticket, "ticket"),
    ],
    host: Host::Official,
    token_param: "access_token",
    v1_path: "/v1/apps/{appid}",
    admin_path: Some("/v1/admin/apps/{appid}"),
    parent: None,
    unknown_code: "unknown_app",
    signs_with: &["jsapi"],
    sign_refusal: "official accounts sign with the jsapi ticket only",
    routes: &[
        AccountRoute::AccessToken,
        AccountRoute::Tickets,
        AccountRoute::JssdkSignature,
        AccountRoute::Refresh,
    ],
};

/// Its access token, then each ticket fetched with it.
pub(super) fn credentials(
    appid: &str,
    secret: &Secret,
    mode: TokenMode,
    tickets: &[TicketKind],
    spec: SpecOf<'_>,
) -> Vec<(CredentialKey, CredentialSpec)> {
    let source = Source::AppToken {
        appid: appid.to_string(),
        secret: secret.clone(),
        mode,
    };
    let tickets = tickets
        .iter()
        .map(|&kind| (Role::Ticket(kind), Source::AppTicket { kind }));
    token_then_tickets(AccountId::app(appid), source, tickets, spec)
}

/// The account of an `[[apps]]` entry.
pub fn from_settings(app: &AppSettings) -> AccountSpec {
    AccountSpec::App {
        appid: app.appid.clone(),
        secret: app.secret.clone(),
        mode: app.mode,
        tickets: app.tickets.clone(),
        refresh: app.refresh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::kinds::Kind;

    #[test]
    fn describes_its_own_kind() {
        assert_eq!(Kind::App.descriptor().name, DESCRIPTOR.name);
    }
}
