//! Watches each platform's verify ticket: WeChat pushes one every 10 minutes, and a platform
//! whose newest ticket is older than an hour (or that has none) has lost its pushes. It is then
//! flagged in `/v1/credentials` and WeChat is asked to push again (`api_start_push_ticket`).
//! One small task per configured platform; it looks at one credential, never at all of them.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Platform;
use crate::background::Background;
use crate::configuration::Settings;
use crate::engine::{Engine, FIRST_TICKET_WAIT};
use crate::kinds::{AccountId, CredentialKey, Role};
use crate::read::ReadIndex;
use crate::token::Timestamp;
use crate::upstream::Upstream;

/// A verify ticket older than this means pushes stopped.
pub const STALE_AFTER: Duration = Duration::from_secs(3600);
/// How often each platform's ticket is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(60);
/// A platform with no ticket at all asks for a push this soon after start.
const FIRST_CHECK: Duration = Duration::from_millis(200);

/// How often the startup recovery looks whether the first verify ticket has come.
const TICKET_POLL: Duration = Duration::from_millis(50);

/// First pause between attempts of the startup recovery; doubles up to [`RECOVERY_MAX_PAUSE`].
const RECOVERY_FIRST_PAUSE: Duration = Duration::from_secs(1);
/// Longest pause between attempts of the startup recovery.
const RECOVERY_MAX_PAUSE: Duration = Duration::from_secs(60);

/// Starts one watchdog per configured platform, and for a platform the store holds no
/// authorizer of, the recovery from WeChat's authorizer list; they end when shutdown begins.
pub fn run_watchdogs(
    settings: &Settings,
    platform: Arc<Platform>,
    engine: Engine,
    read_index: Arc<ReadIndex>,
    upstream: Upstream,
    background: &Background,
) {
    let cancel = background.stopping().clone();
    for component in &settings.components {
        if platform.has_no_authorizers(&component.component_appid) {
            background.spawn_listening(recover(
                platform.clone(),
                component.component_appid.clone(),
                cancel.clone(),
            ));
        }
    }
    for component in &settings.components {
        let appid = component.component_appid.clone();
        let secret = component.secret.clone();
        let (engine, read_index, upstream, cancel) = (
            engine.clone(),
            read_index.clone(),
            upstream.clone(),
            cancel.clone(),
        );
        background.spawn_listening(async move {
            let started = tokio::time::Instant::now();
            let mut wait = FIRST_CHECK;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => return,
                }
                wait = CHECK_EVERY;
                let key = CredentialKey::new(AccountId::component(&appid), Role::PushedTicket);
                let Some(ticket) = read_index.by_key(&key) else {
                    continue;
                };
                let now = engine.now();
                let fetched = engine.fetched_at(&ticket);
                if !is_stale(fetched, now) {
                    continue;
                }
                let asked = upstream.start_push_ticket(&appid, secret.expose()).await;
                let warning = match (&fetched, &asked) {
                    (None, Ok(())) => "no verify ticket has been pushed yet; WeChat was asked to push one".to_string(),
                    (Some(_), Ok(())) => "the newest verify ticket is older than 1 h (pushes stopped?); WeChat was asked to push again".to_string(),
                    (_, Err(e)) => format!("no recent verify ticket, and asking WeChat to push one failed: {e}"),
                };
                if fetched.is_none() && started.elapsed() < FIRST_TICKET_WAIT {
                    // A first start: asking is how the first ticket comes, and the first push
                    // may not get through (the hub just started), so ask again soon; worth a
                    // warning only once the component token gives up waiting for it.
                    wait = wait_for_first_ticket(started.elapsed());
                    if asked.is_ok() {
                        tracing::info!(component = %appid, "{warning}");
                    } else {
                        tracing::warn!(component = %appid, "{warning}");
                    }
                } else {
                    tracing::warn!(component = %appid, "{warning}");
                }
                engine.set_warning(&ticket, Some(warning));
            }
        });
    }
}

/// How long the watchdog waits before asking again for a platform's first verify ticket, `since`
/// its start: about as long again as it has waited so far (at least a second), so that the asks
/// thin out towards [`CHECK_EVERY`].
fn wait_for_first_ticket(since: Duration) -> Duration {
    since.clamp(Duration::from_secs(1), CHECK_EVERY)
}

/// Whether a platform whose newest verify ticket was pushed at `pushed_at` (`None`: never) has
/// lost its pushes at `now`: WeChat pushes every 10 minutes, so an hour without one is no hiccup.
fn is_stale(pushed_at: Option<Timestamp>, now: Timestamp) -> bool {
    pushed_at.is_none_or(|at| now.since(at) > STALE_AFTER)
}

/// Recovers a platform's authorizers from WeChat's list at startup, retrying until it succeeds
/// or the hub stops. The list needs a component token, which needs a verify ticket: without one
/// in the store, the first attempt waits (up to [`FIRST_TICKET_WAIT`]) for the first push.
async fn recover(platform: Arc<Platform>, component_appid: String, cancel: CancellationToken) {
    let key = CredentialKey::new(AccountId::component(&component_appid), Role::PushedTicket);
    let give_up = tokio::time::Instant::now() + FIRST_TICKET_WAIT;
    while tokio::time::Instant::now() < give_up
        && platform
            .read_index
            .by_key(&key)
            .is_some_and(|ticket| platform.engine.fetched_at(&ticket).is_none())
    {
        tokio::select! {
            _ = tokio::time::sleep(TICKET_POLL) => {}
            _ = cancel.cancelled() => return,
        }
    }
    let mut pause = RECOVERY_FIRST_PAUSE;
    loop {
        match platform.sync(&component_appid).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(component = %component_appid, error = %e, "recovering the authorizers from WeChat's list failed; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = cancel.cancelled() => return,
        }
        pause = (pause * 2).min(RECOVERY_MAX_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_ticket_is_asked_for_again_sooner_than_a_stale_one() {
        let secs = |s: u64| Duration::from_secs(s);
        assert_eq!(wait_for_first_ticket(Duration::from_millis(200)), secs(1));
        assert_eq!(wait_for_first_ticket(secs(3)), secs(3));
        assert_eq!(wait_for_first_ticket(secs(50)), secs(50));
        assert_eq!(wait_for_first_ticket(secs(90)), CHECK_EVERY);
    }

    #[test]
    fn a_platform_without_a_push_for_an_hour_or_ever_has_lost_its_pushes() {
        let now = Timestamp(10_000_000);
        let ago = |secs: u64| Some(Timestamp(now.0 - (secs * 1000) as i64));
        assert!(is_stale(None, now), "never pushed");
        assert!(!is_stale(ago(0), now));
        assert!(!is_stale(ago(10 * 60), now), "one push interval");
        assert!(
            !is_stale(ago(3600), now),
            "exactly an hour is not yet stale"
        );
        assert!(is_stale(ago(3601), now));
        assert!(is_stale(ago(12 * 3600), now));
    }
}
