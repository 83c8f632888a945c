//! Account kinds: what the hub knows about each kind of WeChat account, in one module per kind.
//!
//! A kind's module ([`app`], [`corp`], [`component`], [`authorizer`]) says everything that differs
//! between kinds: its identifiers, the credentials it needs and how each is fetched (as
//! [`Source`] recipes the engine runs), the names its credentials are stored under, its `/v1`
//! path, which host its calls go to, how a consumer's grant reaches it, how it signs JS-SDK
//! pages, and the error for an unknown one. It says so through one [`Descriptor`] and the
//! functions [`AccountSpec`] and [`AccountId`] dispatch to. [`KINDS`] is the registration table;
//! the rest of the crate (registry, read index, engine, API, gateway, watch, status page, control
//! plane, metrics) works through it and never matches over kinds. How to add one is in
//! docs/architecture.md#adding-an-account-kind.

pub mod app;
pub mod auth_corp;
pub mod authorizer;
pub mod component;
pub mod corp;
mod grants;
mod id;
mod key;
pub mod provider;
mod spec;
pub mod stored;
pub mod suite;

pub use grants::Grant;
pub use id::AccountId;
pub use key::{CredentialKey, ParseKeyError, Role, RoleShape};
pub use spec::{AccountSpec, CredentialSpec, Origin, Source, StoredAccount};

/// Which WeChat host an account's API calls go to. Their answers differ in shape (Work WeChat
/// puts `errcode` in every body) and in how a token is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// api.weixin.qq.com: official accounts, mini programs, platforms, authorizers.
    Official,
    /// qyapi.weixin.qq.com: Work WeChat apps, suites, the corps that installed them, providers.
    Work,
}

/// One kind of account. The variants are the registration table's entries; [`KINDS`] lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// An official account or mini program ([`app`]).
    App,
    /// A Work WeChat app ([`corp`]).
    Corp,
    /// A third-party platform ([`component`]).
    Component,
    /// An account that authorized a platform ([`authorizer`]).
    Authorizer,
    /// A Work WeChat suite ([`suite`]).
    Suite,
    /// A corp that installed a suite ([`auth_corp`]).
    AuthCorp,
    /// A Work WeChat service provider ([`provider`]).
    Provider,
}

/// The registration table: every kind the hub serves. Tests walk it to check every kind end to
/// end, so a kind added here is tested by them without further listing.
pub const KINDS: [Kind; 7] = [
    Kind::App,
    Kind::Corp,
    Kind::Component,
    Kind::Authorizer,
    Kind::Suite,
    Kind::AuthCorp,
    Kind::Provider,
];

impl Kind {
    /// What its module declares about it.
    pub fn descriptor(self) -> &'static Descriptor {
        match self {
            Kind::App => &app::DESCRIPTOR,
            Kind::Corp => &corp::DESCRIPTOR,
            Kind::Component => &component::DESCRIPTOR,
            Kind::Authorizer => &authorizer::DESCRIPTOR,
            Kind::Suite => &suite::DESCRIPTOR,
            Kind::AuthCorp => &auth_corp::DESCRIPTOR,
            Kind::Provider => &provider::DESCRIPTOR,
        }
    }
}

/// Everything about a kind that is data rather than behaviour.
#[derive(Debug)]
pub struct Descriptor {
    /// Its name: the first segment of its accounts' ids (`app/wx1`) and the label of its
    /// accounts in logs and events.
    pub name: &'static str,
    /// What operators call it, for messages.
    pub title: &'static str,
    /// Its identifiers, by WeChat's names, in id order (`["corpid", "agentid"]`).
    pub id_fields: &'static [&'static str],
    /// The name of each credential role it has: the first segment of the credential's storage
    /// key and its metrics label. Fixed forever: stores hold these names.
    pub keys: &'static [(RoleShape, &'static str)],
    /// Where its API calls go.
    pub host: Host,
    /// The query parameter WeChat API calls carry its access token in (`access_token`, or a
    /// platform's `component_access_token`): how the gateway recognises its token in a call.
    pub token_param: &'static str,
    /// Its `/v1` path, with its id fields as `{placeholders}`; the credential is named after it
    /// (`/access_token`, `/tickets/{kind}`).
    pub v1_path: &'static str,
    /// Its admin path (`PUT` defines a runtime account, `DELETE` removes it), if accounts of
    /// this kind can be added at runtime; `None` for kinds defined by the file or by WeChat.
    pub admin_path: Option<&'static str>,
    /// The kind whose "all its children" grant (`"C/*"`) covers this kind's accounts.
    pub parent: Option<Kind>,
    /// The error code a read of an unknown account of this kind answers with (404).
    pub unknown_code: &'static str,
    /// The JS-SDK tickets it signs pages with, the default first; empty if it cannot sign.
    pub signs_with: &'static [&'static str],
    /// Why a signature request naming another ticket is refused.
    pub sign_refusal: &'static str,
    /// The consumer routes its accounts answer under [`v1_path`](Self::v1_path).
    pub routes: &'static [AccountRoute],
}

/// A consumer route under an account's `/v1` path, answered the same way for every kind that
/// lists it (docs/api.md has the shapes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountRoute {
    /// `GET …/access_token` and `POST …/access_token/invalidate` (the report of a refused token).
    AccessToken,
    /// `GET …/tickets/{kind}` and `POST …/tickets/{kind}/invalidate`.
    Tickets,
    /// `POST …/jssdk/signature`: signs a page with one of [`Descriptor::signs_with`].
    JssdkSignature,
    /// `POST …/refresh` (admin): fetches a new access token now.
    Refresh,
}

impl AccountRoute {
    /// The paths it mounts after the account's `v1_path`, the read before its report.
    pub fn paths(self) -> &'static [&'static str] {
        match self {
            AccountRoute::AccessToken => &["/access_token", "/access_token/invalidate"],
            AccountRoute::Tickets => &["/tickets/{kind}", "/tickets/{kind}/invalidate"],
            AccountRoute::JssdkSignature => &["/jssdk/signature"],
            AccountRoute::Refresh => &["/refresh"],
        }
    }
}

/// What builds one credential's spec from its source and what it is fetched with (the account's
/// timing and origin already applied).
type SpecOf<'a> = &'a dyn Fn(Source, Vec<CredentialKey>) -> CredentialSpec;

/// An access token obtained by `source`, then each ticket fetched with it: the credentials of an
/// account that has a secret of its own (an app, a Work app).
fn token_then_tickets(
    account: AccountId,
    source: Source,
    tickets: impl IntoIterator<Item = (Role, Source)>,
    spec: SpecOf<'_>,
) -> Vec<(CredentialKey, CredentialSpec)> {
    let token = CredentialKey::new(account.clone(), Role::AccessToken);
    let mut all = vec![(token.clone(), spec(source, vec![]))];
    for (role, source) in tickets {
        all.push((
            CredentialKey::new(account.clone(), role),
            spec(source, vec![token.clone()]),
        ));
    }
    all
}

/// How a JS-SDK signature of one account is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signing<'a> {
    /// The ticket signed with (`jsapi`, `agent_config`).
    pub ticket: &'static str,
    /// The `appId` the page passes to `wx.config` (an appid, or a corpid).
    pub app_id: &'a str,
    /// The `agentId` of `wx.agentConfig`, when the ticket is the app's and its id names it. (An
    /// installed corp's agentid is in its definition: see `AccountSpec::agent_id`.)
    pub agent_id: Option<&'a str>,
}

impl AccountId {
    /// How this account signs a page with the ticket `asked` (its default when `None`), or
    /// why it cannot.
    pub fn signing(&self, asked: Option<&str>) -> Result<Signing<'_>, &'static str> {
        let descriptor = self.kind().descriptor();
        let ticket = match asked {
            None => descriptor.signs_with.first().copied(),
            Some(asked) => descriptor.signs_with.iter().copied().find(|t| *t == asked),
        }
        .ok_or(descriptor.sign_refusal)?;
        let (first, second) = self.parts();
        Ok(match self {
            AccountId::App { appid } => Signing {
                ticket,
                app_id: appid,
                agent_id: None,
            },
            AccountId::Authorizer {
                authorizer_appid, ..
            } => Signing {
                ticket,
                app_id: authorizer_appid,
                agent_id: None,
            },
            AccountId::AuthCorp { corpid, .. } => Signing {
                ticket,
                app_id: corpid,
                agent_id: None,
            },
            AccountId::Corp { .. }
            | AccountId::Component { .. }
            | AccountId::Suite { .. }
            | AccountId::Provider { .. } => Signing {
                ticket,
                app_id: first,
                agent_id: second.filter(|_| ticket == "agent_config"),
            },
        })
    }

    /// Why a read of this account found nothing, for its 404: (code, message).
    pub fn unknown(&self) -> (&'static str, String) {
        let message = match self {
            AccountId::App { appid } => format!("appid {appid:?} is not configured on this hub"),
            AccountId::Corp { corpid, agentid } => {
                format!("corp app {corpid:?}/{agentid:?} is not configured on this hub")
            }
            AccountId::Component { component_appid } => {
                format!("no [[components]] entry has component_appid {component_appid:?}")
            }
            AccountId::Authorizer {
                component_appid,
                authorizer_appid,
            } => {
                format!("{authorizer_appid:?} has not authorized the platform {component_appid:?}")
            }
            AccountId::Suite { suite_id } => {
                format!("no [[suites]] entry has suite_id {suite_id:?}")
            }
            AccountId::AuthCorp { suite_id, corpid } => {
                format!("{corpid:?} has not installed the suite {suite_id:?}")
            }
            AccountId::Provider { corpid } => {
                format!("no [[providers]] entry has corpid {corpid:?}")
            }
        };
        (self.kind().descriptor().unknown_code, message)
    }

    /// Why a read of this account is refused once it withdrew its authorization (410): (code,
    /// message). Only an authorizer withdraws, or a corp uninstalls a suite; the read index marks
    /// no other account so.
    pub fn withdrawn(&self) -> (&'static str, String) {
        match self {
            AccountId::AuthCorp { suite_id, corpid } => (
                "corp_revoked",
                format!("{corpid:?} uninstalled the suite {suite_id:?}"),
            ),
            AccountId::App { .. }
            | AccountId::Corp { .. }
            | AccountId::Component { .. }
            | AccountId::Authorizer { .. }
            | AccountId::Suite { .. }
            | AccountId::Provider { .. } => {
                let (first, second) = self.parts();
                let who = second.unwrap_or(first);
                let message = match self.parent() {
                    Some((_, parent)) => {
                        format!("{who:?} withdrew its authorization of the platform {parent:?}")
                    }
                    None => format!("{who:?} withdrew its authorization"),
                };
                ("authorizer_revoked", message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_across_kinds() {
        let mut names: Vec<&str> = KINDS.iter().map(|k| k.descriptor().name).collect();
        let mut keys: Vec<&str> = KINDS
            .iter()
            .flat_map(|k| k.descriptor().keys.iter().map(|(_, name)| *name))
            .collect();
        let (all_names, all_keys) = (names.len(), keys.len());
        names.sort_unstable();
        names.dedup();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!((names.len(), keys.len()), (all_names, all_keys));
    }

    #[test]
    fn a_kind_signs_pages_exactly_when_it_has_the_signature_route() {
        for kind in KINDS {
            let descriptor = kind.descriptor();
            let route = descriptor.routes.contains(&AccountRoute::JssdkSignature);
            assert_eq!(route, !descriptor.signs_with.is_empty(), "{kind:?}");
            if route {
                assert!(
                    descriptor.routes.contains(&AccountRoute::Tickets),
                    "{kind:?}"
                );
            }
            assert!(
                descriptor.routes.contains(&AccountRoute::AccessToken),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn signing_follows_each_kind_s_tickets() {
        let corp = AccountId::corp("ww1", "7");
        assert_eq!(
            corp.signing(Some("agent_config")),
            Ok(Signing {
                ticket: "agent_config",
                app_id: "ww1",
                agent_id: Some("7"),
            })
        );
        assert_eq!(corp.signing(None).map(|s| s.agent_id), Ok(None));
        assert!(AccountId::app("wx1").signing(Some("agent_config")).is_err());
        assert!(AccountId::component("wxc").signing(None).is_err());
        assert_eq!(
            AccountId::authorizer("wxc", "wxa")
                .signing(None)
                .map(|s| s.app_id),
            Ok("wxa")
        );
    }
}
