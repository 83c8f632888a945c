//! The daily budget of `stable_token` force refreshes (docs/wechat.md#stable_token): WeChat
//! allows each appid a few a day, and a force refresh kills the token every other instance
//! serves, so each one is counted in the store for the whole cluster before it is made. Kept
//! apart from the refresh itself so that what may spend the budget, and what is shown of it, is
//! decided in one place.

use std::sync::Arc;

use super::state::Entry;
use super::{Engine, Shared};
use crate::read::Credential;
use crate::token::Timestamp;

/// Daily budget of `stable_token` force refreshes per appid (docs/wechat.md#stable_token).
pub(super) const FORCE_REFRESH_DAILY_LIMIT: u32 = 20;
/// WeChat's day (for the force-refresh budget) is the calendar day in UTC+8.
const WECHAT_DAY_OFFSET_SECS: i64 = 8 * 3600;

/// What a force refresh is for: it decides how much of the day's budget it may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ForcePurpose {
    /// A report WeChat confirmed: may use the whole budget.
    Verified,
    /// An admin refresh or a last-resort renewal: stops short of `force_reserve`.
    Unreserved,
}

/// The WeChat day number of `now` (calendar day in UTC+8).
pub(super) fn wechat_day(now: Timestamp) -> i64 {
    (now.as_secs() + WECHAT_DAY_OFFSET_SECS).div_euclid(86_400)
}

/// Force refreshes `entry` used on WeChat day `today`, as this instance last learned.
pub(super) fn used_on(entry: &Entry, today: i64) -> u32 {
    if entry.force_day == today {
        entry.force_used
    } else {
        0
    }
}

impl Engine {
    /// Stable-mode force refreshes left today for each access token defined in the configuration
    /// file (as this instance last learned from the store), while there are at most `limit` of
    /// them; `None` above that (the metrics then carry aggregates only). `configured` are the
    /// file's credentials (the read index keeps them): only those are looked up, never every
    /// credential.
    pub fn force_budgets(
        &self,
        configured: &[Arc<Credential>],
        limit: usize,
    ) -> Option<Vec<(String, u32)>> {
        let today = wechat_day(self.shared.clock.now());
        let state = self.shared.lock();
        let mut budgets = Vec::new();
        let stable = configured.iter().filter(|c| c.is_configured_stable_token());
        for entry in stable.filter_map(|c| state.entries.get(&c.id)) {
            if budgets.len() == limit {
                return None;
            }
            budgets.push((
                entry.credential.key.to_string(),
                FORCE_REFRESH_DAILY_LIMIT.saturating_sub(used_on(entry, today)),
            ));
        }
        Some(budgets)
    }
}

impl Shared {
    /// Spends one of today's `stable_token` force refreshes of `credential`, counted in the store
    /// for the whole cluster, if `purpose` may still use one.
    pub(super) async fn take_force_budget(
        &self,
        credential: &Credential,
        purpose: ForcePurpose,
    ) -> bool {
        let today = wechat_day(self.clock.now());
        let limit = match purpose {
            ForcePurpose::Verified => FORCE_REFRESH_DAILY_LIMIT,
            ForcePurpose::Unreserved => {
                FORCE_REFRESH_DAILY_LIMIT.saturating_sub(self.force_reserve)
            }
        };
        let spent = self
            .store
            .spend_force(&credential.key.storage_key(), today, limit)
            .await;
        let mut state = self.lock();
        let Some(entry) = state.entries.get_mut(&credential.id) else {
            return false;
        };
        match spent {
            Ok(Some(used)) => {
                entry.force_day = today;
                entry.force_used = used;
                true
            }
            Ok(None) => {
                entry.force_day = today;
                entry.force_used = entry.force_used.max(limit);
                entry.warning = Some(match purpose {
                    ForcePurpose::Verified => format!(
                        "the daily budget of {FORCE_REFRESH_DAILY_LIMIT} force refreshes is spent"
                    ),
                    ForcePurpose::Unreserved => format!(
                        "force refreshes other than for confirmed invalidations stop at {limit} a \
                         day ({} kept in reserve)",
                        self.force_reserve
                    ),
                });
                false
            }
            Err(e) => {
                self.metrics.count_store_error();
                tracing::warn!(key = %credential.key, error = %e, "cannot count a force refresh in the store; not forcing");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wechat_day_turns_at_midnight_in_utc_plus_8() {
        // 1970-01-01T15:59:59Z is 23:59:59 in UTC+8; a second later the day turns.
        assert_eq!(wechat_day(Timestamp(57_599_000)), 0);
        assert_eq!(wechat_day(Timestamp(57_600_000)), 1);
        // Before the epoch the day still counts down, not towards zero.
        assert_eq!(wechat_day(Timestamp(-28_801_000)), -1);
    }
}
