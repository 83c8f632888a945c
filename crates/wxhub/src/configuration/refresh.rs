//! `[refresh]`: the refresh engine's timing, and the per-account overrides of it that
//! `[[apps]]`, `[[corps]]` and `[[components]]` entries (and the admin API) may carry.

use std::time::Duration;

use super::error::ConfigError;
use super::source::{section_keys, Node, Value};
use super::validate::{Cx, Table};

/// `[refresh]`: when and how often the engine refreshes (docs/architecture.md#refresh-rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshSettings {
    /// How long before expiry a credential is refreshed, at most half its lifetime (default 30 m).
    pub refresh_before_expired: Duration,
    /// The ceiling of the retry backoff after transient failures (default 60 s).
    pub refresh_retry_interval: Duration,
    /// A token younger than this is never force-refreshed on a consumer's report (default 30 s):
    /// protects the daily quota against consumers that report every token as dead.
    pub min_refresh_interval: Duration,
    /// How many refreshes may run at once (default 16, at least 1).
    pub concurrency: usize,
    /// Stable-mode force refreshes a day kept for verified invalidations (default 5, at most
    /// 19): admin refreshes and last-resort renewals stop at 20 minus this.
    pub force_reserve: u32,
    /// How often each served access token is checked with one cheap WeChat call, so that a
    /// token killed outside the hub (someone fetched one with the AppSecret elsewhere) is
    /// replaced before a consumer trips on it. `None` (the default): no periodic check.
    /// Authorizers are checked only when their platform's own `check_interval` says so.
    pub check_interval: Option<Duration>,
}

/// Per-credential refresh timing (`refresh_before_expired`, `refresh_retry_interval` on an
/// `[[apps]]` or `[[corps]]` entry, or in the admin API), overriding `[refresh]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RefreshOverrides {
    /// Overrides `[refresh] refresh_before_expired` for this account's credentials.
    pub refresh_before_expired: Option<Duration>,
    /// Overrides `[refresh] refresh_retry_interval` for this account's credentials.
    pub refresh_retry_interval: Option<Duration>,
    /// Overrides `[refresh] check_interval` for this account's access token. On a platform, it
    /// turns the check on for every authorizer (which the global setting does not).
    pub check_interval: Option<Duration>,
}

impl RefreshOverrides {
    /// `base` with these overrides applied.
    pub fn apply(&self, base: &RefreshSettings) -> RefreshSettings {
        RefreshSettings {
            refresh_before_expired: self
                .refresh_before_expired
                .unwrap_or(base.refresh_before_expired),
            refresh_retry_interval: self
                .refresh_retry_interval
                .unwrap_or(base.refresh_retry_interval),
            check_interval: self.check_interval.or(base.check_interval),
            ..base.clone()
        }
    }
}

impl Default for RefreshSettings {
    fn default() -> Self {
        RefreshSettings {
            refresh_before_expired: Duration::from_secs(30 * 60),
            refresh_retry_interval: Duration::from_secs(60),
            min_refresh_interval: Duration::from_secs(30),
            concurrency: 16,
            force_reserve: 5,
            check_interval: None,
        }
    }
}

impl Cx<'_> {
    pub(super) fn refresh(&self, node: Option<&Node>) -> Result<RefreshSettings, ConfigError> {
        let mut refresh = RefreshSettings::default();
        let Some(node) = node else {
            return Ok(refresh);
        };
        let table = self.table(node, "refresh".into(), &section_keys("refresh"))?;
        if let Some(node) = table.get("refresh_before_expired") {
            refresh.refresh_before_expired =
                self.positive_duration(node, &table.key_path("refresh_before_expired"))?;
        }
        if let Some(node) = table.get("refresh_retry_interval") {
            refresh.refresh_retry_interval =
                self.positive_duration(node, &table.key_path("refresh_retry_interval"))?;
        }
        if let Some(node) = table.get("check_interval") {
            refresh.check_interval =
                Some(self.positive_duration(node, &table.key_path("check_interval"))?);
        }
        if let Some(node) = table.get("min_refresh_interval") {
            refresh.min_refresh_interval =
                self.duration(node, &table.key_path("min_refresh_interval"))?;
        }
        if let Some(node) = table.get("concurrency") {
            let path = table.key_path("concurrency");
            refresh.concurrency = match node.value {
                Value::Int(n) if n >= 1 => usize::try_from(n)
                    .map_err(|_| self.err(&node.place, &path, format!("{n} is too large")))?,
                Value::Int(n) => {
                    return Err(self.err(
                        &node.place,
                        path,
                        format!("must be at least 1 (one refresh worker), found {n}"),
                    ))
                }
                ref other => {
                    return Err(self.err(
                        &node.place,
                        path,
                        format!("expected an integer, found {}", other.type_name()),
                    ))
                }
            };
        }
        if let Some(node) = table.get("force_reserve") {
            let path = table.key_path("force_reserve");
            refresh.force_reserve = match node.value {
                Value::Int(n) if (0..=19).contains(&n) => n as u32,
                Value::Int(n) => {
                    return Err(self.err(
                        &node.place,
                        path,
                        format!("must be between 0 and 19 (of WeChat's 20 a day), found {n}"),
                    ))
                }
                ref other => {
                    return Err(self.err(
                        &node.place,
                        path,
                        format!("expected an integer, found {}", other.type_name()),
                    ))
                }
            };
        }
        Ok(refresh)
    }

    /// `refresh_before_expired` / `refresh_retry_interval` on one account entry.
    pub(super) fn refresh_overrides(&self, table: &Table) -> Result<RefreshOverrides, ConfigError> {
        let mut overrides = RefreshOverrides::default();
        if let Some(node) = table.get("refresh_before_expired") {
            overrides.refresh_before_expired =
                Some(self.positive_duration(node, &table.key_path("refresh_before_expired"))?);
        }
        if let Some(node) = table.get("refresh_retry_interval") {
            overrides.refresh_retry_interval =
                Some(self.positive_duration(node, &table.key_path("refresh_retry_interval"))?);
        }
        if let Some(node) = table.get("check_interval") {
            overrides.check_interval =
                Some(self.positive_duration(node, &table.key_path("check_interval"))?);
        }
        Ok(overrides)
    }
}
