//! A reload of the configuration file (SIGHUP or `POST /v1/admin/reload`): the file is re-read
//! and compared with the one in force; accounts it adds start, those it drops stop, changed ones
//! are re-planned, and consumers switch as a whole. What changed is worked out by pure functions
//! ([`account_changes`], [`restart_sections`]), tested below, before anything is touched.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use super::{Control, ControlError};
use crate::configuration::Settings;
use crate::kinds;
use crate::registry::{AccountId, AccountSpec, Diff, Origin};

/// What a reload changed, for its log line and `POST /v1/admin/reload`.
#[derive(Debug, Default, Serialize)]
pub struct ReloadSummary {
    /// Accounts added.
    pub added: Vec<String>,
    /// Accounts removed.
    pub removed: Vec<String>,
    /// Accounts changed (secret, mode, tickets, timing).
    pub changed: Vec<String>,
    /// Whether the consumers or their grants changed.
    pub consumers_changed: bool,
    /// Sections that changed but take effect only at a restart.
    pub needs_restart: Vec<&'static str>,
}

/// How an account of the file changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// The new file adds it.
    Added,
    /// The new file defines it differently (secret, mode, tickets, timing).
    Changed,
}

/// What a reload does to the file's accounts, in the order it does it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct AccountChanges {
    /// Accounts to register: those added or changed, in the new file's order.
    pub upserts: Vec<(AccountSpec, Change)>,
    /// Accounts the new file no longer defines, in id order.
    pub removed: Vec<AccountId>,
}

/// How the accounts `after` differ from `before` (both as a configuration defines them):
/// unchanged accounts are left out.
pub(super) fn account_changes(before: Vec<AccountSpec>, after: Vec<AccountSpec>) -> AccountChanges {
    let before: BTreeMap<AccountId, AccountSpec> =
        before.into_iter().map(|s| (s.id(), s)).collect();
    let mut changes = AccountChanges::default();
    let mut kept = BTreeSet::new();
    for spec in after {
        let id = spec.id();
        let change = match before.get(&id) {
            Some(previous) if *previous == spec => None,
            Some(_) => Some(Change::Changed),
            None => Some(Change::Added),
        };
        kept.insert(id);
        if let Some(change) = change {
            changes.upserts.push((spec, change));
        }
    }
    changes.removed = before.into_keys().filter(|id| !kept.contains(id)).collect();
    changes
}

impl Control {
    /// Re-reads the configuration file and applies what changed. A broken file changes nothing.
    pub async fn reload(&self) -> Result<ReloadSummary, ControlError> {
        let path = self.config_path.as_ref().ok_or(ControlError::NoFile)?;
        let new = Arc::new(Settings::load(path)?);
        let _changing = self.changing.lock().await;
        let old = self.settings.load_full();
        let mut summary = ReloadSummary {
            needs_restart: restart_sections(&old, &new),
            consumers_changed: old.consumers != new.consumers,
            ..ReloadSummary::default()
        };
        let changes = account_changes(config_accounts(&old), config_accounts(&new));
        let mut diff = Diff::default();
        for (spec, change) in changes.upserts {
            let id = spec.id();
            match change {
                Change::Changed => summary.changed.push(id.to_string()),
                Change::Added => {
                    if self.registry.origin(&id) == Some(Origin::Runtime) {
                        // The file takes the account over; its stored definition goes.
                        self.store.remove_account(&id.storage_name()).await?;
                    }
                    summary.added.push(id.to_string());
                }
            }
            diff.extend(self.registry.upsert(spec, Origin::Config));
        }
        for id in &changes.removed {
            if let Some(removed) = self.registry.remove(id) {
                summary.removed.push(id.to_string());
                diff.extend(removed);
            }
        }
        self.apply_loading(diff).await;
        self.settings.store(new.clone());
        self.take_over_consumers(&new).await;
        tracing::info!(
            added = ?summary.added,
            removed = ?summary.removed,
            changed = ?summary.changed,
            consumers_changed = summary.consumers_changed,
            needs_restart = ?summary.needs_restart,
            "configuration reloaded"
        );
        Ok(summary)
    }

    /// Applies a diff, serving what the store already holds for added credentials (read all at
    /// once, not one after another).
    async fn apply_loading(&self, diff: Diff) {
        let reads = diff
            .added
            .iter()
            .map(|credential| self.store.get(&credential.key));
        let tokens = futures_util::future::join_all(reads).await;
        let stored = diff
            .added
            .iter()
            .zip(tokens)
            .filter_map(|(credential, token)| Some((credential.key.clone(), token.ok()??)))
            .collect();
        self.engine.apply(diff, stored).await;
    }
}

/// The accounts a configuration defines.
pub(super) fn config_accounts(settings: &Settings) -> Vec<AccountSpec> {
    settings
        .apps
        .iter()
        .map(kinds::app::from_settings)
        .chain(settings.corps.iter().map(kinds::corp::from_settings))
        .chain(
            settings
                .components
                .iter()
                .map(kinds::component::from_settings),
        )
        .chain(settings.suites.iter().map(kinds::suite::from_settings))
        .chain(
            settings
                .providers
                .iter()
                .map(kinds::provider::from_settings),
        )
        .collect()
}

/// The sections a reload cannot apply (listener, store, WeChat client, engine sizing).
fn restart_sections(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut sections = Vec::new();
    if old.server != new.server {
        sections.push("server");
    }
    if old.store != new.store {
        sections.push("store");
    }
    if old.wechat != new.wechat {
        sections.push("wechat");
    }
    if old.refresh != new.refresh {
        sections.push("refresh");
    }
    if old.secrets != new.secrets {
        sections.push("secrets");
    }
    sections
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::configuration::{RefreshOverrides, Secret, TokenMode};

    fn app(appid: &str, secret: &str) -> AccountSpec {
        AccountSpec::App {
            appid: appid.into(),
            secret: Secret::new(secret.to_string()),
            mode: TokenMode::Stable,
            tickets: vec![],
            refresh: RefreshOverrides::default(),
        }
    }

    fn id(appid: &str) -> AccountId {
        AccountId::App {
            appid: appid.into(),
        }
    }

    #[test]
    fn unchanged_accounts_are_left_alone_and_the_rest_kept_in_the_files_order() {
        let before = vec![app("wx1", "s"), app("wx2", "s"), app("wx3", "s")];
        let after = vec![app("wx4", "s"), app("wx3", "s"), app("wx1", "new")];
        let changes = account_changes(before, after);
        assert_eq!(
            changes.upserts,
            vec![
                (app("wx4", "s"), Change::Added),
                (app("wx1", "new"), Change::Changed),
            ]
        );
        assert_eq!(changes.removed, vec![id("wx2")]);
    }

    #[test]
    fn the_same_file_changes_nothing_and_an_empty_one_removes_everything_in_id_order() {
        let accounts = vec![app("wx2", "s"), app("wx1", "s")];
        assert_eq!(
            account_changes(accounts.clone(), accounts.clone()),
            AccountChanges::default()
        );
        let emptied = account_changes(accounts, vec![]);
        assert!(emptied.upserts.is_empty());
        assert_eq!(emptied.removed, vec![id("wx1"), id("wx2")]);
    }

    fn settings() -> Settings {
        let text = r#"
[[apps]]
appid = "wx1"
secret = "s"

[[corps]]
corpid = "ww1"
agentid = "1000002"
secret = "s"

[[components]]
component_appid = "wxc1"
secret = "cs"
token = "tk"
encoding_aes_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
"#;
        Settings::parse(text, Path::new("wxhub.toml"), &|_| None).unwrap()
    }

    #[test]
    fn a_configuration_defines_its_apps_then_work_apps_then_platforms() {
        let ids: Vec<String> = config_accounts(&settings())
            .iter()
            .map(|spec| spec.id().to_string())
            .collect();
        assert_eq!(ids, vec!["app/wx1", "corp/ww1/1000002", "component/wxc1"]);
    }

    #[test]
    fn sections_a_reload_cannot_apply_are_named_in_a_fixed_order() {
        let old = settings();
        assert!(restart_sections(&old, &old).is_empty());
        let mut new = old.clone();
        new.refresh.concurrency += 1;
        new.wechat.timeout += Duration::from_secs(1);
        assert_eq!(restart_sections(&old, &new), vec!["wechat", "refresh"]);
        // Accounts and consumers are what a reload applies: they need no restart.
        let mut new = old.clone();
        new.apps.clear();
        assert!(restart_sections(&old, &new).is_empty());
    }
}
