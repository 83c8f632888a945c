//! The refresh rules of docs/architecture.md#refresh-rules as pure functions of a token, the configuration and a random
//! number: when a credential is due, how long consumers may keep it, and how long to wait after a
//! failure. Kept free of I/O and clocks so each rule is tested on its own.

use std::time::Duration;

use crate::configuration::RefreshSettings;
use crate::token::{Timestamp, Token};

/// The longest window before expiry in which `stable_token` rotates (the platform's 5 minutes).
const STABLE_ROTATION_WINDOW: Duration = Duration::from_secs(300);
/// The longest interval between `stable_token` polls while the same token comes back.
const STABLE_MAX_POLL: Duration = Duration::from_secs(5);
/// The most a consumer's `expires_in` may reach past the next planned refresh.
const CONSUMER_MAX_SLACK: Duration = Duration::from_secs(60);
/// First retry delay bound after a transient failure; doubles per attempt.
const RETRY_BASE: Duration = Duration::from_secs(1);
/// Floor of any retry delay, so that full jitter never turns into a busy loop.
const RETRY_FLOOR: Duration = Duration::from_millis(100);
/// First back-off after WeChat said the daily quota is spent; doubles up to [`QUOTA_MAX`].
const QUOTA_BASE: Duration = Duration::from_secs(5 * 60);
/// Longest back-off after a quota error.
const QUOTA_MAX: Duration = Duration::from_secs(60 * 60);
/// Retry interval for configuration errors an operator has to fix.
const CONFIG_RETRY: Duration = Duration::from_secs(5 * 60);

/// How a credential is renewed, which decides its timing rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// `cgi-bin/token`: each fetch kills the previous token after the platform's overlap.
    Legacy,
    /// `stable_token`: the platform rotates only in the last minutes of a token's life.
    Stable,
    /// Tickets and Work WeChat tokens: WeChat re-sends the same value until it expires, and a
    /// new fetch does not kill the old value.
    ReSent,
}

/// What went wrong in a refresh, reduced to what decides the retry delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// Network, 5xx, busy, per-minute limit, store hiccup: retry soon with backoff.
    Transient,
    /// Daily quota spent: back off for minutes.
    Quota,
    /// Needs an operator: retry slowly.
    Config,
}

/// The refresh rules, parameterised by `[refresh]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// `refresh_before_expired`: the longest lead before expiry.
    pub refresh_before_expired: Duration,
    /// `refresh_retry_interval`: the cap of transient backoff.
    pub refresh_retry_interval: Duration,
    /// `min_refresh_interval`: a token younger than this is never force-refreshed.
    pub min_refresh_interval: Duration,
    /// `check_interval`: how often the current value is checked with WeChat (`None`: never).
    pub check_interval: Option<Duration>,
}

impl Plan {
    /// The rules of a `[refresh]` section.
    pub fn new(settings: &RefreshSettings) -> Plan {
        Plan {
            refresh_before_expired: settings.refresh_before_expired,
            refresh_retry_interval: settings.refresh_retry_interval,
            min_refresh_interval: settings.min_refresh_interval,
            check_interval: settings.check_interval,
        }
    }

    /// When a value fetched at `fetched_at` and last checked at `checked_at` is next due for a
    /// check (`None`: this plan checks nothing): `check_interval` after whichever came last.
    pub fn next_check(
        &self,
        fetched_at: Timestamp,
        checked_at: Option<Timestamp>,
    ) -> Option<Timestamp> {
        let every = self.check_interval?;
        let since = checked_at.map_or(fetched_at, |checked| checked.max(fetched_at));
        Some(since.plus(every))
    }

    /// `lead = min(refresh_before_expired, lifetime / 2)`, before jitter.
    pub fn lead(&self, lifetime: Duration) -> Duration {
        self.refresh_before_expired.min(lifetime / 2)
    }

    /// Stable mode asks `stable_token` once the remaining life is under this window:
    /// `min(300 s, lifetime / 4)` (the scaling serves short test lifetimes).
    pub fn stable_window(lifetime: Duration) -> Duration {
        STABLE_ROTATION_WINDOW.min(lifetime / 4)
    }

    /// While `stable_token` keeps returning the same token, ask again this often:
    /// `min(5 s, window / 5)`.
    pub fn stable_poll(lifetime: Duration) -> Duration {
        STABLE_MAX_POLL
            .min(Self::stable_window(lifetime) / 5)
            .max(RETRY_FLOOR)
    }

    /// The lead a consumer's slack is derived from (`lead` of §3, or the stable window).
    fn effective_lead(&self, renewal: Renewal, lifetime: Duration) -> Duration {
        match renewal {
            Renewal::Stable => Self::stable_window(lifetime),
            Renewal::Legacy | Renewal::ReSent => self.lead(lifetime),
        }
    }

    /// When a freshly obtained token is next due. `jitter` is uniform in `[0, 1)`: it spreads the
    /// refreshes of many keys (up to 10 % of the lead).
    ///
    /// A re-sent value is due exactly at its expiry: WeChat hands back the same value until then,
    /// so asking earlier only costs calls — one per instance of a cluster, each of which would
    /// find nothing newer in the store and ask again (docs/architecture.md#rollover-of-re-sent-values).
    pub fn due_at(&self, renewal: Renewal, token: &Token, jitter: f64) -> Timestamp {
        let lifetime = token.lifetime();
        let jitter = jitter.clamp(0.0, 1.0) * 0.1;
        match renewal {
            // Inside the rotation window, so the first call already rotates: jitter shortens it.
            Renewal::Stable => token
                .expires_at
                .minus(Self::stable_window(lifetime).mul_f64(1.0 - jitter)),
            Renewal::Legacy => token
                .expires_at
                .minus(self.lead(lifetime).mul_f64(1.0 + jitter)),
            Renewal::ReSent => token.expires_at,
        }
    }

    /// How close to expiry a credential may be refreshed by one node on its own, without the
    /// lease, when the store does not answer (docs/architecture.md#store-outages: "at most one refresh in the whole
    /// cluster" cannot be coordinated then). Only for renewals where WeChat hands every caller the
    /// same value and a fetch kills nothing: half the rotation window in stable mode, half the
    /// lead for re-sent values (tickets, Work WeChat tokens). Never in legacy mode, where each
    /// node's fetch would kill the token the others serve: zero.
    pub fn alone_within(&self, renewal: Renewal, lifetime: Duration) -> Duration {
        match renewal {
            Renewal::Stable => Self::stable_window(lifetime) / 2,
            Renewal::ReSent => self.lead(lifetime) / 2,
            Renewal::Legacy => Duration::ZERO,
        }
    }

    /// When to ask again after WeChat answered with the value the hub already had.
    pub fn after_unchanged(&self, renewal: Renewal, token: &Token, now: Timestamp) -> Timestamp {
        let at = match renewal {
            Renewal::Stable => now.plus(Self::stable_poll(token.lifetime())),
            // WeChat re-sends the value until it really expires: ask again then.
            Renewal::Legacy | Renewal::ReSent => token.expires_at,
        };
        at.max(now.plus(RETRY_FLOOR))
    }

    /// Until when consumers may keep `token`, given the next planned refresh (docs/architecture.md#what-consumers-are-told):
    /// `min(expiry, next refresh + min(60 s, lead / 10))`. A value that a new fetch does not kill
    /// ([`Renewal::ReSent`]) may be kept until it expires.
    pub fn serve_until(
        &self,
        renewal: Renewal,
        token: &Token,
        next_refresh: Timestamp,
    ) -> Timestamp {
        if renewal == Renewal::ReSent {
            return token.expires_at;
        }
        let slack = CONSUMER_MAX_SLACK.min(self.effective_lead(renewal, token.lifetime()) / 10);
        next_refresh.plus(slack).min(token.expires_at)
    }

    /// How long to wait before attempt number `attempt` (1 for the first retry) after a failure.
    /// `random` is uniform in `[0, 1)`. Transient: exponential backoff with full jitter, from 1 s
    /// up to `refresh_retry_interval`. Quota: minutes, doubling up to an hour. Config: 5 minutes.
    pub fn retry_delay(&self, class: FailureClass, attempt: u32, random: f64) -> Duration {
        let random = random.clamp(0.0, 1.0);
        let exponent = attempt.saturating_sub(1).min(20);
        match class {
            FailureClass::Transient => {
                let bound = RETRY_BASE
                    .saturating_mul(1 << exponent)
                    .min(self.refresh_retry_interval);
                bound.mul_f64(random).max(RETRY_FLOOR)
            }
            FailureClass::Quota => QUOTA_BASE
                .saturating_mul(1 << exponent.min(4))
                .min(QUOTA_MAX)
                .mul_f64(0.9 + 0.2 * random),
            FailureClass::Config => CONFIG_RETRY.mul_f64(0.9 + 0.2 * random),
        }
    }

    /// Whether a token is young enough that a report against it must not force a refresh
    /// (someone else is probably fetching tokens for the same appid).
    pub fn too_young_to_force(&self, token: &Token, now: Timestamp) -> bool {
        now.since(token.fetched_at) < self.min_refresh_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_checked_an_interval_after_its_fetch_or_its_last_check() {
        let mut plan = plan();
        let fetched = Timestamp(1_000_000);
        assert_eq!(plan.next_check(fetched, None), None);
        plan.check_interval = Some(Duration::from_secs(300));
        assert_eq!(plan.next_check(fetched, None), Some(Timestamp(1_300_000)));
        assert_eq!(
            plan.next_check(fetched, Some(Timestamp(1_100_000))),
            Some(Timestamp(1_400_000))
        );
        // A check older than the value (the value was replaced since) counts from the fetch.
        assert_eq!(
            plan.next_check(fetched, Some(Timestamp(900_000))),
            Some(Timestamp(1_300_000))
        );
    }

    fn plan() -> Plan {
        Plan {
            refresh_before_expired: Duration::from_secs(1800),
            refresh_retry_interval: Duration::from_secs(60),
            min_refresh_interval: Duration::from_secs(30),
            check_interval: None,
        }
    }

    fn token(fetched_secs: i64, lifetime_secs: i64) -> Token {
        Token {
            value: "t".into(),
            fetched_at: Timestamp(fetched_secs * 1000),
            expires_at: Timestamp((fetched_secs + lifetime_secs) * 1000),
            generation: 1,
        }
    }

    #[test]
    fn legacy_lead_is_capped_by_half_the_lifetime_and_jitter_adds_at_most_ten_percent() {
        let p = plan();
        // 7200 s: lead 1800 s → due at 5400 s, up to 180 s earlier with jitter.
        let t = token(0, 7200);
        assert_eq!(p.due_at(Renewal::Legacy, &t, 0.0), Timestamp(5_400_000));
        // Just under 10 % (the jitter is below 1): 179.99982 s earlier, truncated to the
        // millisecond.
        assert_eq!(
            p.due_at(Renewal::Legacy, &t, 0.999_999),
            Timestamp(5_220_001)
        );
        // 20 s: lead 10 s → due at 10 s (9 s with full jitter).
        let short = token(0, 20);
        assert_eq!(p.due_at(Renewal::Legacy, &short, 0.0), Timestamp(10_000));
        assert!(p.due_at(Renewal::Legacy, &short, 0.999_999) >= Timestamp(9_000));
    }

    #[test]
    fn a_re_sent_value_is_due_exactly_at_its_expiry_whatever_the_jitter() {
        let p = plan();
        let t = token(0, 7200);
        assert_eq!(p.due_at(Renewal::ReSent, &t, 0.0), t.expires_at);
        assert_eq!(p.due_at(Renewal::ReSent, &t, 0.999_999), t.expires_at);
    }

    #[test]
    fn stable_refresh_falls_inside_the_rotation_window() {
        let p = plan();
        let t = token(0, 7200);
        // Window 300 s: due between 300 s and 270 s before expiry.
        assert_eq!(p.due_at(Renewal::Stable, &t, 0.0), Timestamp(6_900_000));
        assert_eq!(
            p.due_at(Renewal::Stable, &t, 0.999_999),
            Timestamp(6_930_000)
        );
        // 20 s lifetime: window 5 s, poll 1 s.
        let short = token(0, 20);
        assert_eq!(p.due_at(Renewal::Stable, &short, 0.0), Timestamp(15_000));
        assert_eq!(Plan::stable_poll(short.lifetime()), Duration::from_secs(1));
        assert_eq!(Plan::stable_poll(t.lifetime()), Duration::from_secs(5));
    }

    #[test]
    fn consumers_are_told_to_come_back_shortly_after_the_next_refresh() {
        let p = plan();
        let t = token(0, 7200);
        let next = p.due_at(Renewal::Legacy, &t, 0.0);
        // slack = min(60 s, 1800 s / 10) = 60 s.
        assert_eq!(
            p.serve_until(Renewal::Legacy, &t, next),
            Timestamp(5_460_000)
        );
        let short = token(0, 20);
        let next = p.due_at(Renewal::Legacy, &short, 0.0);
        // slack = 10 s / 10 = 1 s.
        assert_eq!(
            p.serve_until(Renewal::Legacy, &short, next),
            Timestamp(11_000)
        );
        // Never past expiry, even when the next attempt is later.
        assert_eq!(
            p.serve_until(Renewal::Legacy, &short, Timestamp(30_000)),
            Timestamp(20_000)
        );
        // Re-sent values (tickets) may be kept until they expire.
        assert_eq!(
            p.serve_until(Renewal::ReSent, &short, next),
            Timestamp(20_000)
        );
    }

    #[test]
    fn unchanged_values_are_asked_for_again_at_expiry_or_at_the_stable_poll() {
        let p = plan();
        let t = token(0, 20);
        assert_eq!(
            p.after_unchanged(Renewal::ReSent, &t, Timestamp(10_000)),
            Timestamp(20_000)
        );
        assert_eq!(
            p.after_unchanged(Renewal::Stable, &t, Timestamp(16_000)),
            Timestamp(17_000)
        );
    }

    #[test]
    fn retry_delays_follow_the_error_class() {
        let p = plan();
        // Transient: full jitter under 1, 2, 4 … s, capped at 60 s, never below the floor.
        assert_eq!(p.retry_delay(FailureClass::Transient, 1, 0.0), RETRY_FLOOR);
        assert!(p.retry_delay(FailureClass::Transient, 1, 0.99) <= Duration::from_secs(1));
        assert!(p.retry_delay(FailureClass::Transient, 3, 0.99) <= Duration::from_secs(4));
        assert!(p.retry_delay(FailureClass::Transient, 30, 0.99) <= Duration::from_secs(60));
        // Quota: minutes.
        assert!(p.retry_delay(FailureClass::Quota, 1, 0.0) >= Duration::from_secs(270));
        assert!(p.retry_delay(FailureClass::Quota, 10, 0.99) <= Duration::from_secs(3960));
        // Config: about five minutes.
        let config = p.retry_delay(FailureClass::Config, 7, 0.5);
        assert_eq!(config, Duration::from_secs(300));
    }

    #[test]
    fn only_idempotent_renewals_may_be_refreshed_alone_and_only_near_expiry() {
        let p = plan();
        let long = Duration::from_secs(7200);
        assert_eq!(
            p.alone_within(Renewal::Stable, long),
            Duration::from_secs(150)
        );
        assert_eq!(
            p.alone_within(Renewal::ReSent, long),
            Duration::from_secs(900)
        );
        assert_eq!(p.alone_within(Renewal::Legacy, long), Duration::ZERO);
        let short = Duration::from_secs(20);
        assert_eq!(
            p.alone_within(Renewal::Stable, short),
            Duration::from_millis(2_500)
        );
    }

    #[test]
    fn young_tokens_are_not_force_refreshed() {
        let p = plan();
        let t = token(100, 7200);
        assert!(p.too_young_to_force(&t, Timestamp(129_000)));
        assert!(!p.too_young_to_force(&t, Timestamp(130_000)));
    }
}
