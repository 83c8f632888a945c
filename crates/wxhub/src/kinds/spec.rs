//! Accounts — the unit that is added and removed — and the credentials each one needs.
//!
//! An account is defined in the configuration file, at runtime through the admin API, or by a
//! platform's pushes, and it owns several credentials (its access token, its JS-SDK tickets).
//! [`AccountSpec::credentials`] hands each kind's definition to its module, which says which
//! credentials it needs and how each is fetched ([`Source`], the recipes the engine runs).

use serde::{Deserialize, Serialize};

use super::auth_corp::{self, AuthCorpSpec};
use super::authorizer::{self, AuthorizerSpec};
use super::{app, component, corp, provider, suite, AccountId, CredentialKey, Host};
use crate::configuration::{RefreshOverrides, RefreshSettings, Secret, SuiteSettings, TokenMode};
use crate::plan::{Plan, Renewal};
use crate::token::{CorpTicketKind, TicketKind};

/// Where an account's definition comes from. It decides who may change it (the admin API answers
/// 409 for file-defined accounts) and whether its credentials gate `/readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `[[apps]]` / `[[corps]]` in the configuration file: changed only by a reload.
    Config,
    /// Added through the admin API and stored (sealed) so every instance and restart has it.
    Runtime,
}

/// Everything needed to keep one account's credentials fresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountSpec {
    /// An official account or mini program.
    App {
        /// Its appid.
        appid: String,
        /// Its AppSecret.
        secret: Secret,
        /// Which token endpoint.
        mode: TokenMode,
        /// The JS-SDK tickets kept besides the token.
        tickets: Vec<TicketKind>,
        /// Its own refresh timing.
        refresh: RefreshOverrides,
    },
    /// A Work WeChat app.
    Corp {
        /// The enterprise.
        corpid: String,
        /// The app.
        agentid: String,
        /// The app's secret.
        secret: Secret,
        /// The JS-SDK tickets kept besides the token.
        tickets: Vec<CorpTicketKind>,
        /// Its own refresh timing.
        refresh: RefreshOverrides,
    },
    /// A third-party platform.
    Component {
        /// Its appid.
        component_appid: String,
        /// Its AppSecret (`component_appsecret`).
        secret: Secret,
        /// The timing of its component token.
        refresh: RefreshOverrides,
    },
    /// An account that authorized a platform (registered from a push or a redirect's code).
    Authorizer(AuthorizerSpec),
    /// A Work WeChat suite, with what opens its pushes (the receiver reads a suite's keys from
    /// here, so a suite put at runtime is received like one in the file).
    Suite(Box<SuiteSettings>),
    /// A corp that installed a suite (registered from a `create_auth` push or an install
    /// redirect's code).
    AuthCorp(AuthCorpSpec),
    /// A Work WeChat service provider.
    Provider {
        /// Its corpid.
        corpid: String,
        /// Its `provider_secret`.
        secret: Secret,
        /// The timing of its provider token.
        refresh: RefreshOverrides,
    },
}

/// How one credential is obtained from WeChat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// An official account's token, with its AppSecret.
    AppToken {
        appid: String,
        secret: Secret,
        mode: TokenMode,
    },
    /// A JS-SDK ticket, fetched with the account's access token (its `fetched_with`).
    AppTicket { kind: TicketKind },
    /// A Work WeChat app's token, with the app's secret.
    CorpToken { corpid: String, secret: Secret },
    /// A Work WeChat ticket, fetched with the app's token (its `fetched_with`).
    CorpTicket { kind: CorpTicketKind },
    /// A platform's `component_verify_ticket`: pushed by WeChat, never fetched. A "refresh"
    /// asks WeChat to push again (`api_start_push_ticket`).
    VerifyTicket {
        component_appid: String,
        secret: Secret,
    },
    /// A platform's `component_access_token`, fetched with its secret and verify ticket (its
    /// `fetched_with`).
    ComponentToken {
        component_appid: String,
        secret: Secret,
    },
    /// An authorizer's refresh token: written from WeChat's answers, never fetched on its own.
    AuthorizerRefreshToken,
    /// An authorizer's access token, fetched with the component token and the authorizer's
    /// refresh token (its `fetched_with`, in that order).
    AuthorizerToken {
        component_appid: String,
        authorizer_appid: String,
    },
    /// A suite's `suite_ticket`: pushed by Work WeChat every ten minutes, never fetched (there
    /// is no API that asks for a push).
    SuiteTicket { suite_id: String },
    /// A suite's `suite_access_token`, fetched with its secret and suite ticket (its
    /// `fetched_with`).
    SuiteToken { suite_id: String, secret: Secret },
    /// An installed corp's permanent code: written from Work WeChat's answers, never fetched on
    /// its own.
    PermanentCode,
    /// An installed corp's access token, fetched with the suite token and the corp's permanent
    /// code (its `fetched_with`, in that order).
    AuthCorpToken { suite_id: String, corpid: String },
    /// A service provider's `provider_access_token`, with its `provider_secret`.
    ProviderToken { corpid: String, secret: Secret },
}

impl Source {
    /// Where WeChat can be asked whether this credential's value is alive; `None` for what no
    /// cheap call checks (tickets, the verify ticket, refresh tokens, the component token).
    /// (`get_api_domain_ip` on that host, authenticated with the value).
    pub fn checked_at(&self) -> Option<Host> {
        match self {
            // An authorizer's token is an official account's token: checked the same way.
            Source::AppToken { .. } | Source::AuthorizerToken { .. } => Some(Host::Official),
            // A corp's token from a suite is a Work app's token: checked the same way.
            Source::CorpToken { .. } | Source::AuthCorpToken { .. } => Some(Host::Work),
            Source::AppTicket { .. }
            | Source::CorpTicket { .. }
            | Source::VerifyTicket { .. }
            | Source::ComponentToken { .. }
            | Source::AuthorizerRefreshToken
            | Source::SuiteTicket { .. }
            | Source::SuiteToken { .. }
            | Source::PermanentCode
            | Source::ProviderToken { .. } => None,
        }
    }

    /// The account secret this credential is fetched with (an AppSecret, a Work app's secret, a
    /// platform's `component_appsecret`); `None` for what is fetched with another credential.
    pub fn secret(&self) -> Option<&Secret> {
        match self {
            Source::AppToken { secret, .. }
            | Source::CorpToken { secret, .. }
            | Source::VerifyTicket { secret, .. }
            | Source::ComponentToken { secret, .. }
            | Source::SuiteToken { secret, .. }
            | Source::ProviderToken { secret, .. } => Some(secret),
            Source::AppTicket { .. }
            | Source::CorpTicket { .. }
            | Source::AuthorizerRefreshToken
            | Source::AuthorizerToken { .. }
            | Source::SuiteTicket { .. }
            | Source::PermanentCode
            | Source::AuthCorpToken { .. } => None,
        }
    }

    /// The timing rules this source follows.
    pub fn renewal(&self) -> Renewal {
        match self {
            Source::AppToken {
                mode: TokenMode::Stable,
                ..
            } => Renewal::Stable,
            Source::AppToken {
                mode: TokenMode::Legacy,
                ..
            } => Renewal::Legacy,
            Source::ComponentToken { .. } | Source::AuthorizerToken { .. } => Renewal::Legacy,
            // Work WeChat answers a repeated fetch inside the lifetime with the same value.
            Source::AppTicket { .. }
            | Source::CorpToken { .. }
            | Source::CorpTicket { .. }
            | Source::VerifyTicket { .. }
            | Source::AuthorizerRefreshToken
            | Source::SuiteTicket { .. }
            | Source::SuiteToken { .. }
            | Source::PermanentCode
            | Source::AuthCorpToken { .. }
            | Source::ProviderToken { .. } => Renewal::ReSent,
        }
    }

    /// The JSON field consumers receive the value under.
    pub fn field(&self) -> &'static str {
        match self {
            Source::AppToken { .. }
            | Source::CorpToken { .. }
            | Source::ComponentToken { .. }
            | Source::AuthorizerToken { .. }
            | Source::SuiteToken { .. }
            | Source::AuthCorpToken { .. }
            | Source::ProviderToken { .. } => "access_token",
            Source::AppTicket { .. } | Source::CorpTicket { .. } => "ticket",
            Source::VerifyTicket { .. } => "component_verify_ticket",
            Source::AuthorizerRefreshToken => "authorizer_refresh_token",
            Source::SuiteTicket { .. } => "suite_ticket",
            Source::PermanentCode => "permanent_code",
        }
    }

    /// Whether the hub ever hands this credential out (to consumers, the gateway, a watcher). An
    /// authorizer refresh token or a permanent code never leaves the hub: it is kept in the
    /// engine's state and the store only, never rendered into a served slot.
    pub fn is_served(&self) -> bool {
        !matches!(self, Source::AuthorizerRefreshToken | Source::PermanentCode)
    }
}

/// How one credential is kept fresh. Replaced as a whole when its account changes (a new secret
/// takes effect at the next refresh).
#[derive(Clone, Debug)]
pub struct CredentialSpec {
    /// How WeChat is asked.
    pub source: Source,
    /// The credentials it is fetched with, in order (a ticket: its access token; an authorizer
    /// token will need the component token and its refresh token).
    pub fetched_with: Vec<CredentialKey>,
    /// Whether WeChat pushes the value instead of the hub fetching it (the platform's verify
    /// ticket): such a credential is never scheduled.
    pub pushed: bool,
    /// Whether the value cannot be re-created if lost (an authorizer refresh token): written
    /// before anything is acknowledged, deleted only on revocation.
    pub durable: bool,
    /// Its refresh rules (`[refresh]` with the account's overrides).
    pub plan: Plan,
    /// Where its account is defined.
    pub origin: Origin,
}

impl AccountSpec {
    /// Which account this is.
    pub fn id(&self) -> AccountId {
        match self {
            AccountSpec::App { appid, .. } => AccountId::App {
                appid: appid.clone(),
            },
            AccountSpec::Corp {
                corpid, agentid, ..
            } => AccountId::Corp {
                corpid: corpid.clone(),
                agentid: agentid.clone(),
            },
            AccountSpec::Component {
                component_appid, ..
            } => AccountId::Component {
                component_appid: component_appid.clone(),
            },
            AccountSpec::Authorizer(authorizer) => authorizer.id(),
            AccountSpec::Suite(suite) => AccountId::suite(&suite.suite_id),
            AccountSpec::AuthCorp(corp) => corp.id(),
            AccountSpec::Provider { corpid, .. } => AccountId::provider(corpid),
        }
    }

    /// The account's secret (`None` for an authorizer: it has none, its refresh token is a
    /// credential).
    pub fn secret(&self) -> Option<&Secret> {
        match self {
            AccountSpec::App { secret, .. }
            | AccountSpec::Corp { secret, .. }
            | AccountSpec::Component { secret, .. }
            | AccountSpec::Provider { secret, .. } => Some(secret),
            AccountSpec::Suite(suite) => Some(&suite.secret),
            AccountSpec::Authorizer(_) | AccountSpec::AuthCorp(_) => None,
        }
    }

    /// The account's own refresh timing.
    fn overrides(&self) -> &RefreshOverrides {
        match self {
            AccountSpec::App { refresh, .. }
            | AccountSpec::Corp { refresh, .. }
            | AccountSpec::Component { refresh, .. }
            | AccountSpec::Provider { refresh, .. } => refresh,
            AccountSpec::Suite(suite) => &suite.refresh,
            AccountSpec::Authorizer(authorizer) => &authorizer.refresh,
            AccountSpec::AuthCorp(corp) => &corp.refresh,
        }
    }

    /// Every credential this account needs, its access token first.
    pub fn credentials(
        &self,
        base: &RefreshSettings,
        origin: Origin,
    ) -> Vec<(CredentialKey, CredentialSpec)> {
        let mut settings = self.overrides().apply(base);
        if let AccountSpec::Authorizer(AuthorizerSpec { refresh, .. })
        | AccountSpec::AuthCorp(AuthCorpSpec { refresh, .. }) = self
        {
            // A platform or a suite may have thousands of accounts under it: they are checked
            // only when its own settings ask for it, never by the global `check_interval`.
            settings.check_interval = refresh.check_interval;
        }
        let plan = Plan::new(&settings);
        let spec = |source: Source, fetched_with: Vec<CredentialKey>| CredentialSpec {
            source,
            fetched_with,
            pushed: false,
            durable: false,
            plan: plan.clone(),
            origin,
        };
        match self {
            AccountSpec::App {
                appid,
                secret,
                mode,
                tickets,
                ..
            } => app::credentials(appid, secret, *mode, tickets, &spec),
            AccountSpec::Corp {
                corpid,
                agentid,
                secret,
                tickets,
                ..
            } => corp::credentials(corpid, agentid, secret, tickets, &spec),
            AccountSpec::Component {
                component_appid,
                secret,
                ..
            } => component::credentials(component_appid, secret, &spec),
            AccountSpec::Authorizer(authorizer) => authorizer::credentials(authorizer, &spec),
            AccountSpec::Suite(suite) => suite::credentials(&suite.suite_id, &suite.secret, &spec),
            AccountSpec::AuthCorp(corp) => auth_corp::credentials(corp, &spec),
            AccountSpec::Provider { corpid, secret, .. } => {
                provider::credentials(corpid, secret, &spec)
            }
        }
    }

    /// Whether it is an authorizer that withdrew its authorization, or a corp that uninstalled
    /// its suite: it then has no credentials, and reads answer 410 instead of 404.
    pub fn is_revoked(&self) -> bool {
        self.as_authorizer().is_some_and(|a| a.revoked)
            || self.as_auth_corp().is_some_and(|c| c.revoked)
    }

    /// The installation's definition, if this is a corp that installed a suite.
    pub fn as_auth_corp(&self) -> Option<&AuthCorpSpec> {
        match self {
            AccountSpec::AuthCorp(corp) => Some(corp),
            AccountSpec::App { .. }
            | AccountSpec::Corp { .. }
            | AccountSpec::Component { .. }
            | AccountSpec::Authorizer(_)
            | AccountSpec::Suite(_)
            | AccountSpec::Provider { .. } => None,
        }
    }

    /// The agentid a page's `wx.agentConfig` names for this account, when its id does not hold
    /// it: the suite's app in a corp that installed it.
    pub fn agent_id(&self) -> Option<&str> {
        self.as_auth_corp().and_then(|corp| corp.agentid.as_deref())
    }

    /// The suite's settings, if this is a suite.
    pub fn as_suite(&self) -> Option<&SuiteSettings> {
        match self {
            AccountSpec::Suite(suite) => Some(suite),
            AccountSpec::App { .. }
            | AccountSpec::Corp { .. }
            | AccountSpec::Component { .. }
            | AccountSpec::Authorizer(_)
            | AccountSpec::AuthCorp(_)
            | AccountSpec::Provider { .. } => None,
        }
    }

    /// The authorizer's definition, if this is one.
    pub fn as_authorizer(&self) -> Option<&AuthorizerSpec> {
        match self {
            AccountSpec::Authorizer(authorizer) => Some(authorizer),
            AccountSpec::App { .. }
            | AccountSpec::Corp { .. }
            | AccountSpec::Component { .. }
            | AccountSpec::Suite(_)
            | AccountSpec::AuthCorp(_)
            | AccountSpec::Provider { .. } => None,
        }
    }
}

/// A runtime account as stored: everything but the secret in the clear, the secret sealed.
/// Versioned so a later format can be told apart.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredAccount {
    /// Format version (1).
    pub version: u32,
    /// `app`, `corp`, `provider` or `suite`.
    pub kind: String,
    /// The appid, corpid (a Work app's or a provider's) or suite id.
    pub id: String,
    /// The Work WeChat agentid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agentid: Option<String>,
    /// `stable` or `legacy` (apps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Ticket kinds by WeChat's names.
    #[serde(default)]
    pub tickets: Vec<String>,
    /// `refresh_before_expired` in milliseconds, if overridden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_before_expired_ms: Option<u64>,
    /// `refresh_retry_interval` in milliseconds, if overridden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_retry_interval_ms: Option<u64>,
    /// `check_interval` in milliseconds, if overridden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_interval_ms: Option<u64>,
    /// The secret, sealed with the master key (see `registry::seal`).
    pub sealed_secret: String,
    /// The account's other secrets by field name (a suite's `token`, `encoding_aes_key` and
    /// `previous_encoding_aes_key`, which open its pushes), each sealed and bound to its field
    /// (`kinds::stored::seal_place`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sealed: std::collections::BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_needs_its_token_then_each_ticket_fetched_with_it() {
        let spec = AccountSpec::App {
            appid: "wx1".into(),
            secret: Secret::new("s".into()),
            mode: TokenMode::Legacy,
            tickets: vec![TicketKind::Jsapi],
            refresh: RefreshOverrides {
                refresh_before_expired: Some(std::time::Duration::from_secs(60)),
                refresh_retry_interval: None,
                check_interval: None,
            },
        };
        let credentials = spec.credentials(&RefreshSettings::default(), Origin::Runtime);
        assert_eq!(credentials.len(), 2);
        assert_eq!(credentials[0].0, CredentialKey::access_token("wx1"));
        assert_eq!(credentials[0].1.source.renewal(), Renewal::Legacy);
        assert_eq!(
            credentials[0].1.plan.refresh_before_expired,
            std::time::Duration::from_secs(60)
        );
        assert_eq!(
            credentials[1].1.fetched_with,
            vec![CredentialKey::access_token("wx1")]
        );
        assert_eq!(credentials[1].1.source.field(), "ticket");
    }

    #[test]
    fn the_global_check_interval_reaches_apps_but_not_authorizers() {
        let every = std::time::Duration::from_secs(300);
        let base = RefreshSettings {
            check_interval: Some(every),
            ..RefreshSettings::default()
        };
        let app = AccountSpec::App {
            appid: "wx1".into(),
            secret: Secret::new("s".into()),
            mode: TokenMode::Stable,
            tickets: vec![],
            refresh: RefreshOverrides::default(),
        };
        let checks = |spec: &AccountSpec| {
            spec.credentials(&base, Origin::Runtime)[0]
                .1
                .plan
                .check_interval
        };
        assert_eq!(checks(&app), Some(every));
        let authorizer = |refresh: RefreshOverrides| {
            AccountSpec::Authorizer(AuthorizerSpec {
                component_appid: "wxc".into(),
                authorizer_appid: "wxa".into(),
                tickets: vec![],
                refresh,
                func_info: vec![],
                authorized_at: 0,
                revoked: false,
            })
        };
        assert_eq!(checks(&authorizer(RefreshOverrides::default())), None);
        let asked = RefreshOverrides {
            check_interval: Some(every * 2),
            ..RefreshOverrides::default()
        };
        assert_eq!(checks(&authorizer(asked)), Some(every * 2));
    }
}
