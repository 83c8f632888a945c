//! What a consumer may use and do: the grants of `[[consumers]] apps` (and of the admin API),
//! read against the accounts a configuration defines, and the scopes of `[[consumers]] scopes`.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use super::validate::is_identifier;
use super::{AppSettings, ComponentSettings, CorpSettings, Settings};

/// What a consumer may do (docs/architecture.md#authentication-and-scopes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Read tokens, tickets and JS-SDK signatures.
    Read,
    /// Report a token WeChat refused, which may trigger a refresh.
    Invalidate,
    /// List every credential's state and force refreshes.
    Admin,
    /// Build authorization links and register authorizers of a third-party platform.
    Authorize,
    /// Call WeChat through the hub with the current token injected (token-less calls).
    Call,
}

impl Scope {
    /// Every scope, in the order the documentation lists them.
    pub const ALL: [Scope; 5] = [
        Scope::Read,
        Scope::Invalidate,
        Scope::Admin,
        Scope::Authorize,
        Scope::Call,
    ];

    /// The scope as the configuration spells it: `read`, `invalidate`, `admin`, `authorize` or
    /// `call`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Invalidate => "invalidate",
            Scope::Admin => "admin",
            Scope::Authorize => "authorize",
            Scope::Call => "call",
        }
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "invalidate" => Ok(Scope::Invalidate),
            "admin" => Ok(Scope::Admin),
            "authorize" => Ok(Scope::Authorize),
            "call" => Ok(Scope::Call),
            other => Err(format!(
                "unknown scope {other:?}; expected \"read\", \"invalidate\", \"admin\", \"authorize\" or \"call\""
            )),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which accounts a consumer may use.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AppGrant {
    /// `"*"`: every configured app and corp app.
    All,
    /// One official account or mini program, by appid.
    App(String),
    /// One Work WeChat app, written `"corpid/agentid"`.
    CorpAgent {
        /// The enterprise's corpid.
        corpid: String,
        /// The app's agentid.
        agentid: String,
    },
    /// A third-party platform's own component token, written `"component_appid"`.
    Component(String),
    /// Every authorizer of a platform, written `"component_appid/*"`.
    AllAuthorizers(String),
    /// One authorizer of a platform, written `"component_appid/authorizer_appid"`.
    Authorizer {
        /// The platform.
        component_appid: String,
        /// The authorizer.
        authorizer_appid: String,
    },
    /// A Work WeChat suite's own suite token, written `"suite:suite_id"`.
    Suite(String),
    /// Every corp that installed a suite, written `"suite:suite_id/*"`.
    AllAuthCorps(String),
    /// One corp that installed a suite, written `"suite:suite_id/corpid"`.
    AuthCorp {
        /// The suite.
        suite_id: String,
        /// The corp that installed it.
        corpid: String,
    },
    /// A Work WeChat service provider's provider token, written `"provider:corpid"`.
    Provider(String),
}

impl fmt::Display for AppGrant {
    /// The grant as the configuration spells it: `*`, an appid or `corpid/agentid`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppGrant::All => f.write_str("*"),
            AppGrant::App(appid) => f.write_str(appid),
            AppGrant::CorpAgent { corpid, agentid } => write!(f, "{corpid}/{agentid}"),
            AppGrant::Component(c) => f.write_str(c),
            AppGrant::AllAuthorizers(c) => write!(f, "{c}/*"),
            AppGrant::Authorizer {
                component_appid,
                authorizer_appid,
            } => write!(f, "{component_appid}/{authorizer_appid}"),
            AppGrant::Suite(suite_id) => write!(f, "suite:{suite_id}"),
            AppGrant::AllAuthCorps(suite_id) => write!(f, "suite:{suite_id}/*"),
            AppGrant::AuthCorp { suite_id, corpid } => write!(f, "suite:{suite_id}/{corpid}"),
            AppGrant::Provider(corpid) => write!(f, "provider:{corpid}"),
        }
    }
}

impl Settings {
    /// A reader of grants against the accounts this configuration defines (which tells a
    /// platform's `component_appid/…` from a Work app's `corpid/agentid`).
    pub fn grants(&self) -> GrantReader<'_> {
        GrantReader(Known::of(self))
    }
}

/// Reads consumer grants (`[[consumers]] apps`) as the configuration file's are read, against the
/// accounts of one configuration: see [`Settings::grants`].
pub struct GrantReader<'a>(Known<'a>);

impl<'a> GrantReader<'a> {
    /// A reader against `known`.
    pub(super) fn new(known: Known<'a>) -> GrantReader<'a> {
        GrantReader(known)
    }

    /// One grant: `*`, an appid, `corpid/agentid`, `component_appid`, `component_appid/*` or
    /// `component_appid/authorizer_appid`; the refusal explains the forms.
    pub fn read(&self, text: &str) -> Result<AppGrant, String> {
        grant(text, &self.0)
    }
}

/// The configured accounts, indexed for [`grant`]: checking each grant of a consumer against
/// lists of every account would be quadratic for a platform that grants one consumer thousands.
pub(crate) struct Known<'a> {
    apps: HashSet<&'a str>,
    corpids: HashSet<&'a str>,
    components: HashSet<&'a str>,
}

impl<'a> Known<'a> {
    /// The accounts `settings` defines.
    pub(crate) fn of(settings: &'a Settings) -> Known<'a> {
        Known::new(&settings.apps, &settings.corps, &settings.components)
    }

    pub(super) fn new(
        apps: &'a [AppSettings],
        corps: &'a [CorpSettings],
        components: &'a [ComponentSettings],
    ) -> Known<'a> {
        Known {
            components: components
                .iter()
                .map(|c| c.component_appid.as_str())
                .collect(),
            apps: apps.iter().map(|a| a.appid.as_str()).collect(),
            corpids: corps.iter().map(|c| c.corpid.as_str()).collect(),
        }
    }
}

/// One entry of a consumer's `apps`: `*`, an appid, `corpid/agentid`, a configured platform's
/// `component_appid`, `component_appid/*` or `component_appid/authorizer_appid`. An account need
/// not be in the file (it may be added at runtime): [`Settings::warnings`] names those that are
/// not. What cannot name an account at all is refused, as is a bare corpid.
pub(crate) fn grant(text: &str, known: &Known<'_>) -> Result<AppGrant, String> {
    if text == "*" {
        return Ok(AppGrant::All);
    }
    if let Some(rest) = text.strip_prefix("suite:") {
        return suite_grant(text, rest);
    }
    if let Some(corpid) = text.strip_prefix("provider:") {
        if account_name(corpid) {
            return Ok(AppGrant::Provider(corpid.to_string()));
        }
        return Err(format!(
            "unknown app {text:?}: write \"provider:<the provider's corpid>\""
        ));
    }
    if known.components.contains(text) {
        return Ok(AppGrant::Component(text.to_string()));
    }
    if let Some((first, second)) = text.split_once('/') {
        if known.components.contains(first) {
            if second == "*" {
                return Ok(AppGrant::AllAuthorizers(first.to_string()));
            }
            if account_name(second) {
                return Ok(AppGrant::Authorizer {
                    component_appid: first.to_string(),
                    authorizer_appid: second.to_string(),
                });
            }
            return Err(format!(
                "unknown app {text:?}: write \"{first}/*\" or \"{first}/<authorizer appid>\""
            ));
        }
        // Not a configured platform: a Work app, perhaps one added at runtime (or every
        // authorizer of a platform the file does not have yet). `warnings` names those the file
        // does not define.
        if account_name(first) && second == "*" {
            return Ok(AppGrant::AllAuthorizers(first.to_string()));
        }
        if account_name(first) && account_name(second) {
            return Ok(AppGrant::CorpAgent {
                corpid: first.to_string(),
                agentid: second.to_string(),
            });
        }
        return Err(format!(
            "unknown app {text:?}: write an appid, \"corpid/agentid\", a component_appid, \
             \"component_appid/*\", \"component_appid/authorizer_appid\" or \"*\", each name \
             of letters, digits, '_', '-' and '.'"
        ));
    }
    if known.corpids.contains(text) && !known.apps.contains(text) {
        return Err(format!(
            "unknown app {text:?}: it is a corpid; grant a Work WeChat app as \"corpid/agentid\""
        ));
    }
    if account_name(text) {
        // An appid, perhaps of an app added at runtime; `warnings` names those the file does not
        // define.
        return Ok(AppGrant::App(text.to_string()));
    }
    Err(format!(
        "unknown app {text:?}: an appid has only letters, digits, '_', '-' and '.' (use \"*\" for \
         every app)"
    ))
}

/// `suite:S`, `suite:S/*` or `suite:S/CORPID` (`rest` is what follows `suite:`).
fn suite_grant(text: &str, rest: &str) -> Result<AppGrant, String> {
    let refused = || {
        format!(
            "unknown app {text:?}: write \"suite:<suite_id>\", \"suite:<suite_id>/*\" or \
             \"suite:<suite_id>/<corpid>\""
        )
    };
    match rest.split_once('/') {
        None if account_name(rest) => Ok(AppGrant::Suite(rest.to_string())),
        Some((suite_id, "*")) if account_name(suite_id) => {
            Ok(AppGrant::AllAuthCorps(suite_id.to_string()))
        }
        Some((suite_id, corpid)) if account_name(suite_id) && account_name(corpid) => {
            Ok(AppGrant::AuthCorp {
                suite_id: suite_id.to_string(),
                corpid: corpid.to_string(),
            })
        }
        _ => Err(refused()),
    }
}

/// Whether `text` can name an account (an appid, a corpid, an agentid): non-empty, at most 64
/// characters of the identifier set, not starting with '.', as the admin API's paths are.
fn account_name(text: &str) -> bool {
    !text.is_empty() && text.len() <= 64 && !text.starts_with('.') && is_identifier(text)
}
