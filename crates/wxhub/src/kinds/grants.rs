//! What a consumer's grant (`apps = [...]` in its configuration) covers, in terms of account
//! ids: the configuration's grammar ([`AppGrant`]) is read here once, so the rest of the crate
//! asks one question, "does this grant cover this [`AccountId`]?".

use super::{AccountId, Kind};
use crate::configuration::AppGrant;

/// One grant, in account ids.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Grant {
    /// `"*"`: every account.
    All,
    /// One account.
    Account(AccountId),
    /// Every child of one account (`"C/*"`: every authorizer of platform C), as the parent's
    /// kind and id.
    Children(Kind, String),
}

impl Grant {
    /// What `grant`, as written in the configuration, covers.
    pub fn of(grant: &AppGrant) -> Grant {
        match grant {
            AppGrant::All => Grant::All,
            AppGrant::App(appid) => Grant::Account(AccountId::app(appid)),
            AppGrant::CorpAgent { corpid, agentid } => {
                Grant::Account(AccountId::corp(corpid, agentid))
            }
            AppGrant::Component(c) => Grant::Account(AccountId::component(c)),
            AppGrant::AllAuthorizers(c) => Grant::Children(Kind::Component, c.clone()),
            AppGrant::Authorizer {
                component_appid,
                authorizer_appid,
            } => Grant::Account(AccountId::authorizer(component_appid, authorizer_appid)),
            AppGrant::Suite(suite_id) => Grant::Account(AccountId::suite(suite_id)),
            AppGrant::AllAuthCorps(suite_id) => Grant::Children(Kind::Suite, suite_id.clone()),
            AppGrant::AuthCorp { suite_id, corpid } => {
                Grant::Account(AccountId::auth_corp(suite_id, corpid))
            }
            AppGrant::Provider(corpid) => Grant::Account(AccountId::provider(corpid)),
        }
    }

    /// Whether this grant covers `account`.
    pub fn covers(&self, account: &AccountId) -> bool {
        match self {
            Grant::All => true,
            Grant::Account(granted) => granted == account,
            Grant::Children(kind, id) => account.parent() == Some((*kind, id.as_str())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_children_grant_covers_the_authorizers_of_its_platform_only() {
        let grant = Grant::of(&AppGrant::AllAuthorizers("wxc".into()));
        assert!(grant.covers(&AccountId::authorizer("wxc", "wxa")));
        assert!(!grant.covers(&AccountId::authorizer("wxd", "wxa")));
        assert!(!grant.covers(&AccountId::component("wxc")));
        assert!(!grant.covers(&AccountId::app("wxc")));
    }

    #[test]
    fn a_suite_s_children_grant_covers_its_installed_corps_only() {
        let grant = Grant::of(&AppGrant::AllAuthCorps("ws1".into()));
        assert!(grant.covers(&AccountId::auth_corp("ws1", "wc1")));
        assert!(!grant.covers(&AccountId::auth_corp("ws2", "wc1")));
        assert!(!grant.covers(&AccountId::suite("ws1")));
        assert!(!grant.covers(&AccountId::authorizer("ws1", "wc1")));
        let provider = Grant::of(&AppGrant::Provider("wp".into()));
        assert!(provider.covers(&AccountId::provider("wp")));
        assert!(!provider.covers(&AccountId::corp("wp", "1")));
    }

    #[test]
    fn an_account_grant_covers_that_account_only() {
        let grant = Grant::of(&AppGrant::CorpAgent {
            corpid: "ww1".into(),
            agentid: "7".into(),
        });
        assert!(grant.covers(&AccountId::corp("ww1", "7")));
        assert!(!grant.covers(&AccountId::corp("ww1", "8")));
        assert!(!grant.covers(&AccountId::app("ww1")));
        assert!(Grant::All.covers(&AccountId::authorizer("c", "a")));
    }
}
