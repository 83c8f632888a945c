//! Work WeChat apps: one access token per (corpid, agentid) from the app's secret, and the
//! corp's and the app's JS-SDK tickets fetched with it.

use super::{token_then_tickets, AccountId, AccountSpec, CredentialKey, CredentialSpec};
use super::{AccountRoute, Descriptor, Host, Role, RoleShape, Source, SpecOf};
use crate::configuration::{CorpSettings, Secret};
use crate::token::CorpTicketKind;

/// The kind's data.
pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "corp",
    title: "Work WeChat app",
    id_fields: &["corpid", "agentid"],
    keys: &[
        (RoleShape::AccessToken, "corp_token"),
        (RoleShape::CorpTicket, "corp_ticket"),
    ],
    host: Host::Work,
    token_param: "access_token",
    v1_path: "/v1/corps/{corpid}/agents/{agentid}",
    admin_path: Some("/v1/admin/corps/{corpid}/agents/{agentid}"),
    parent: None,
    unknown_code: "unknown_app",
    signs_with: &["jsapi", "agent_config"],
    sign_refusal: "kind must be \"jsapi\" or \"agent_config\"",
    routes: &[
        AccountRoute::AccessToken,
        AccountRoute::Tickets,
        AccountRoute::JssdkSignature,
        AccountRoute::Refresh,
    ],
};

/// Its access token, then each ticket fetched with it.
pub(super) fn credentials(
    corpid: &str,
    agentid: &str,
    secret: &Secret,
    tickets: &[CorpTicketKind],
    spec: SpecOf<'_>,
) -> Vec<(CredentialKey, CredentialSpec)> {
    let source = Source::CorpToken {
        corpid: corpid.to_string(),
        secret: secret.clone(),
    };
    let tickets = tickets
        .iter()
        .map(|&kind| (Role::CorpTicket(kind), Source::CorpTicket { kind }));
    token_then_tickets(AccountId::corp(corpid, agentid), source, tickets, spec)
}

/// The account of a `[[corps]]` entry.
pub fn from_settings(corp: &CorpSettings) -> AccountSpec {
    AccountSpec::Corp {
        corpid: corp.corpid.clone(),
        agentid: corp.agentid.clone(),
        secret: corp.secret.clone(),
        tickets: corp.tickets.clone(),
        refresh: corp.refresh,
    }
}
