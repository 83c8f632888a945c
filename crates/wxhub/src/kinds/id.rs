//! [`AccountId`]: the one key of an account, everywhere (registry, read index, grants, store
//! names, events). Its text form is the kind's name followed by its id parts
//! (`app/wx1`, `corp/ww1/1000002`); both directions are driven by the kinds' descriptors.

use std::fmt;

use super::{Kind, KINDS};

/// Which account, by WeChat's identifiers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccountId {
    /// An official account or mini program.
    App {
        /// Its appid.
        appid: String,
    },
    /// A Work WeChat app: one (corpid, agentid).
    Corp {
        /// The enterprise.
        corpid: String,
        /// The app within it.
        agentid: String,
    },
    /// A third-party platform (开放平台 component): its verify ticket and component token.
    Component {
        /// The platform's appid.
        component_appid: String,
    },
    /// An account that authorized a platform: its refresh token, access token and tickets.
    Authorizer {
        /// The platform it authorized.
        component_appid: String,
        /// The account's appid.
        authorizer_appid: String,
    },
    /// A Work WeChat suite: its pushed suite ticket and its suite token.
    Suite {
        /// The suite's id.
        suite_id: String,
    },
    /// A corp that installed a suite: its permanent code, access token and tickets.
    AuthCorp {
        /// The suite it installed.
        suite_id: String,
        /// The corp.
        corpid: String,
    },
    /// A Work WeChat service provider: its provider token.
    Provider {
        /// The provider's corpid.
        corpid: String,
    },
}

impl AccountId {
    /// An official account or mini program.
    pub fn app(appid: impl Into<String>) -> AccountId {
        AccountId::App {
            appid: appid.into(),
        }
    }

    /// A Work WeChat app.
    pub fn corp(corpid: impl Into<String>, agentid: impl Into<String>) -> AccountId {
        AccountId::Corp {
            corpid: corpid.into(),
            agentid: agentid.into(),
        }
    }

    /// A third-party platform.
    pub fn component(component_appid: impl Into<String>) -> AccountId {
        AccountId::Component {
            component_appid: component_appid.into(),
        }
    }

    /// An authorizer of a platform.
    pub fn authorizer(
        component_appid: impl Into<String>,
        authorizer_appid: impl Into<String>,
    ) -> AccountId {
        AccountId::Authorizer {
            component_appid: component_appid.into(),
            authorizer_appid: authorizer_appid.into(),
        }
    }

    /// A Work WeChat suite.
    pub fn suite(suite_id: impl Into<String>) -> AccountId {
        AccountId::Suite {
            suite_id: suite_id.into(),
        }
    }

    /// A corp that installed a suite.
    pub fn auth_corp(suite_id: impl Into<String>, corpid: impl Into<String>) -> AccountId {
        AccountId::AuthCorp {
            suite_id: suite_id.into(),
            corpid: corpid.into(),
        }
    }

    /// A Work WeChat service provider.
    pub fn provider(corpid: impl Into<String>) -> AccountId {
        AccountId::Provider {
            corpid: corpid.into(),
        }
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            AccountId::App { .. } => Kind::App,
            AccountId::Corp { .. } => Kind::Corp,
            AccountId::Component { .. } => Kind::Component,
            AccountId::Authorizer { .. } => Kind::Authorizer,
            AccountId::Suite { .. } => Kind::Suite,
            AccountId::AuthCorp { .. } => Kind::AuthCorp,
            AccountId::Provider { .. } => Kind::Provider,
        }
    }

    /// Its identifiers, in the order of its kind's `id_fields` (one or two).
    pub fn parts(&self) -> (&str, Option<&str>) {
        match self {
            AccountId::App { appid } => (appid, None),
            AccountId::Corp { corpid, agentid } => (corpid, Some(agentid)),
            AccountId::Component { component_appid } => (component_appid, None),
            AccountId::Authorizer {
                component_appid,
                authorizer_appid,
            } => (component_appid, Some(authorizer_appid)),
            AccountId::Suite { suite_id } => (suite_id, None),
            AccountId::AuthCorp { suite_id, corpid } => (suite_id, Some(corpid)),
            AccountId::Provider { corpid } => (corpid, None),
        }
    }

    /// The account of `kind` with these identifiers; `None` when their number is not the
    /// kind's or one is empty.
    pub fn from_parts(kind: Kind, parts: &[&str]) -> Option<AccountId> {
        if parts.len() != kind.descriptor().id_fields.len() || parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        Some(match kind {
            Kind::App => AccountId::app(parts[0]),
            Kind::Corp => AccountId::corp(parts[0], parts[1]),
            Kind::Component => AccountId::component(parts[0]),
            Kind::Authorizer => AccountId::authorizer(parts[0], parts[1]),
            Kind::Suite => AccountId::suite(parts[0]),
            Kind::AuthCorp => AccountId::auth_corp(parts[0], parts[1]),
            Kind::Provider => AccountId::provider(parts[0]),
        })
    }

    /// The account whose grant of all its children (`"C/*"`) covers this one, as (kind, its
    /// only id part): an authorizer's platform.
    pub fn parent(&self) -> Option<(Kind, &str)> {
        let parent = self.kind().descriptor().parent?;
        Some((parent, self.parts().0))
    }

    /// The WeChat appid this account's own tokens are issued to, if it has one (a Work WeChat
    /// app has a corpid instead). One appid is never two accounts of different kinds.
    pub fn wechat_appid(&self) -> Option<&str> {
        match self {
            AccountId::App { appid } => Some(appid),
            AccountId::Corp { .. } => None,
            AccountId::Component { component_appid } => Some(component_appid),
            AccountId::Authorizer {
                authorizer_appid, ..
            } => Some(authorizer_appid),
            AccountId::Suite { .. } | AccountId::AuthCorp { .. } | AccountId::Provider { .. } => {
                None
            }
        }
    }

    /// The name under which a runtime definition is stored: `app/{appid}`,
    /// `corp/{corpid}/{agentid}`, …
    pub fn storage_name(&self) -> String {
        self.to_string()
    }

    /// Parses [`AccountId::storage_name`].
    pub fn parse(name: &str) -> Option<AccountId> {
        let (kind, rest) = name.split_once('/')?;
        let kind = KINDS.into_iter().find(|k| k.descriptor().name == kind)?;
        let parts: Vec<&str> = rest.split('/').collect();
        AccountId::from_parts(kind, &parts)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (first, second) = self.parts();
        write!(f, "{}/{first}", self.kind().descriptor().name)?;
        if let Some(second) = second {
            write!(f, "/{second}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_round_trip() {
        for id in [
            AccountId::app("wx1"),
            AccountId::corp("ww1", "1000002"),
            AccountId::component("wxc"),
            AccountId::authorizer("wxc", "wxa"),
            AccountId::suite("ww4asffe99e54c0f00"),
            AccountId::auth_corp("ww4asffe99e54c0f00", "wwcorp1"),
            AccountId::provider("wwprovider1"),
        ] {
            assert_eq!(AccountId::parse(&id.storage_name()), Some(id));
        }
        assert_eq!(AccountId::corp("ww1", "7").to_string(), "corp/ww1/7");
        for bad in [
            "",
            "app",
            "app/",
            "corp/ww1",
            "corp/ww1/",
            "app/a/b",
            "x/y",
            "authorizer/wxc",
        ] {
            assert_eq!(AccountId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_kind_builds_its_ids_from_its_parts() {
        for kind in KINDS {
            let fields = kind.descriptor().id_fields;
            let parts: Vec<&str> = ["a", "b"][..fields.len()].to_vec();
            let id = AccountId::from_parts(kind, &parts).expect("an id");
            assert_eq!(id.kind(), kind);
            assert_eq!(id.parts(), (parts[0], parts.get(1).copied()));
        }
    }
}
