//! [`CredentialKey`]: one credential is an account plus the role the credential plays for it.
//!
//! The key has one canonical text form ([`CredentialKey::storage_key`]) used by every store, so a
//! key written by one node (or one version) is read back identically by another: the name its
//! kind gives the role, then the account's id parts, then a ticket's name
//! (`access_token/wx1`, `corp_ticket/ww1/1000002/agent_config`). Those names are each kind's
//! `keys` table, and they are the text every earlier version wrote.

use std::fmt;
use std::str::FromStr;

use super::{AccountId, KINDS};
use crate::token::{CorpTicketKind, TicketKind};

/// What a credential is for its account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The token WeChat API calls carry: an access token, a platform's
    /// `component_access_token`, an authorizer's `authorizer_access_token`.
    AccessToken,
    /// A JS-SDK ticket of an official account or an authorizer, fetched with the access token.
    Ticket(TicketKind),
    /// A JS-SDK ticket of a Work WeChat app, fetched with the access token.
    CorpTicket(CorpTicketKind),
    /// A ticket WeChat pushes and that cannot be pulled (a platform's `component_verify_ticket`).
    PushedTicket,
    /// A durable token the hub cannot re-create without the account's owner (an authorizer's
    /// `authorizer_refresh_token`).
    RefreshToken,
}

/// A [`Role`] without its ticket kind: what a kind's `keys` table names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleShape {
    /// [`Role::AccessToken`].
    AccessToken,
    /// [`Role::Ticket`].
    Ticket,
    /// [`Role::CorpTicket`].
    CorpTicket,
    /// [`Role::PushedTicket`].
    PushedTicket,
    /// [`Role::RefreshToken`].
    RefreshToken,
}

impl Role {
    /// Whether consumers may see credentials of this role (in a watch stream, say): a pushed
    /// ticket is the hub's own input, read at no `/v1` route, and a refresh token or permanent
    /// code never leaves the hub.
    pub fn is_for_consumers(self) -> bool {
        !matches!(self, Role::PushedTicket | Role::RefreshToken)
    }

    /// The role without its ticket kind.
    pub fn shape(self) -> RoleShape {
        match self {
            Role::AccessToken => RoleShape::AccessToken,
            Role::Ticket(_) => RoleShape::Ticket,
            Role::CorpTicket(_) => RoleShape::CorpTicket,
            Role::PushedTicket => RoleShape::PushedTicket,
            Role::RefreshToken => RoleShape::RefreshToken,
        }
    }

    /// WeChat's name of the ticket (`jsapi`, `wx_card`, `agent_config`); `None` for a token.
    pub fn ticket_name(self) -> Option<&'static str> {
        match self {
            Role::Ticket(kind) => Some(kind.as_str()),
            Role::CorpTicket(kind) => Some(kind.as_str()),
            Role::AccessToken | Role::PushedTicket | Role::RefreshToken => None,
        }
    }

    /// The role of `shape` whose ticket is named `ticket` (`None` for a shape without one).
    fn with_ticket(shape: RoleShape, ticket: Option<&str>) -> Result<Role, ParseKeyError> {
        Ok(match (shape, ticket) {
            (RoleShape::AccessToken, None) => Role::AccessToken,
            (RoleShape::PushedTicket, None) => Role::PushedTicket,
            (RoleShape::RefreshToken, None) => Role::RefreshToken,
            (RoleShape::Ticket, Some(name)) => Role::Ticket(name.parse()?),
            (RoleShape::CorpTicket, Some(name)) => Role::CorpTicket(name.parse()?),
            (shape, ticket) => {
                return Err(ParseKeyError(format!(
                    "{shape:?} does not take a ticket name {ticket:?}"
                )))
            }
        })
    }
}

impl RoleShape {
    /// Whether the key text carries a ticket name after the account's parts.
    fn has_ticket(self) -> bool {
        matches!(self, RoleShape::Ticket | RoleShape::CorpTicket)
    }
}

/// One credential the hub keeps: which account, and what the credential is for it.
///
/// Which other credentials it is fetched with is its spec's `fetched_with`, which the kind's
/// module writes ([`super::AccountSpec::credentials`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CredentialKey {
    /// The account it belongs to (what a consumer must be granted to see it).
    pub account: AccountId,
    /// What it is for that account.
    pub role: Role,
}

/// A credential key's text form could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid credential key: {0}")]
pub struct ParseKeyError(pub String);

impl From<crate::token::UnknownTicket> for ParseKeyError {
    fn from(e: crate::token::UnknownTicket) -> Self {
        ParseKeyError(e.to_string())
    }
}

impl CredentialKey {
    /// The credential of `account` in `role`.
    pub fn new(account: AccountId, role: Role) -> CredentialKey {
        CredentialKey { account, role }
    }

    /// The official account / mini program access token of `appid`.
    pub fn access_token(appid: impl Into<String>) -> Self {
        CredentialKey::new(AccountId::app(appid), Role::AccessToken)
    }

    /// Whether this credential's value is sealed in the store (see `store::sealed`): the ones
    /// that cannot be fetched again without the account's owner.
    pub fn is_sealed_at_rest(&self) -> bool {
        self.role == Role::RefreshToken
    }

    /// The query parameter a WeChat API call carries this credential in (its kind's
    /// `token_param`, for an access token); `None` for what no call carries (tickets, the verify
    /// ticket, refresh tokens). The gateway takes WeChat's refusal of a call as news of this
    /// credential only when it came in this parameter.
    pub fn call_param(&self) -> Option<&'static str> {
        (self.role == Role::AccessToken).then(|| self.account.kind().descriptor().token_param)
    }

    /// The name its kind gives its role: the first segment of its text form, and the label of
    /// metrics and logs (`access_token`, `corp_ticket`, `authorizer_token`, …).
    pub fn kind_name(&self) -> &'static str {
        let shape = self.role.shape();
        self.account
            .kind()
            .descriptor()
            .keys
            .iter()
            .find(|(s, _)| *s == shape)
            .map_or("unknown", |(_, name)| name)
    }

    /// The canonical text form every store uses, e.g. `access_token/wx123` or
    /// `corp_ticket/ww1/1000002/agent_config`. Parsed back by [`FromStr`].
    pub fn storage_key(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (first, second) = self.account.parts();
        write!(f, "{}/{first}", self.kind_name())?;
        if let Some(second) = second {
            write!(f, "/{second}")?;
        }
        if let Some(ticket) = self.role.ticket_name() {
            write!(f, "/{ticket}")?;
        }
        Ok(())
    }
}

impl FromStr for CredentialKey {
    type Err = ParseKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(ParseKeyError(format!("empty segment in {s:?}")));
        }
        let unrecognised = || ParseKeyError(format!("unrecognised key {s:?}"));
        let (kind, shape) = KINDS
            .into_iter()
            .find_map(|kind| {
                let keys = kind.descriptor().keys;
                keys.iter()
                    .find(|(_, name)| *name == parts[0])
                    .map(|(shape, _)| (kind, *shape))
            })
            .ok_or_else(unrecognised)?;
        let fields = kind.descriptor().id_fields.len();
        let expected = 1 + fields + usize::from(shape.has_ticket());
        if parts.len() != expected {
            return Err(unrecognised());
        }
        let account =
            AccountId::from_parts(kind, &parts[1..1 + fields]).ok_or_else(unrecognised)?;
        let role = Role::with_ticket(shape, parts.get(1 + fields).copied())?;
        Ok(CredentialKey { account, role })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_round_trips_through_the_text_earlier_versions_wrote() {
        let keys = [
            (CredentialKey::access_token("wx1"), "access_token/wx1"),
            (
                CredentialKey::new(AccountId::app("wx1"), Role::Ticket(TicketKind::WxCard)),
                "ticket/wx1/wx_card",
            ),
            (
                CredentialKey::new(AccountId::corp("ww1", "1000002"), Role::AccessToken),
                "corp_token/ww1/1000002",
            ),
            (
                CredentialKey::new(
                    AccountId::corp("ww1", "1000002"),
                    Role::CorpTicket(CorpTicketKind::AgentConfig),
                ),
                "corp_ticket/ww1/1000002/agent_config",
            ),
            (
                CredentialKey::new(AccountId::component("wxc"), Role::PushedTicket),
                "component_verify_ticket/wxc",
            ),
            (
                CredentialKey::new(AccountId::component("wxc"), Role::AccessToken),
                "component_token/wxc",
            ),
            (
                CredentialKey::new(AccountId::authorizer("wxc", "wxa"), Role::RefreshToken),
                "authorizer_refresh_token/wxc/wxa",
            ),
            (
                CredentialKey::new(AccountId::authorizer("wxc", "wxa"), Role::AccessToken),
                "authorizer_token/wxc/wxa",
            ),
            (
                CredentialKey::new(
                    AccountId::authorizer("wxc", "wxa"),
                    Role::Ticket(TicketKind::Jsapi),
                ),
                "authorizer_ticket/wxc/wxa/jsapi",
            ),
        ];
        for (key, text) in keys {
            assert_eq!(key.storage_key(), text);
            assert_eq!(text.parse::<CredentialKey>(), Ok(key), "{text}");
        }
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "access_token",
            "access_token/",
            "access_token/a/b",
            "ticket/wx1/sms",
            "ticket/wx1/agent_config",
            "corp_ticket/ww1/7/wx_card",
            "nonsense/wx1",
            "component_token/wxc/jsapi",
        ] {
            assert!(bad.parse::<CredentialKey>().is_err(), "{bad:?}");
        }
    }
}
