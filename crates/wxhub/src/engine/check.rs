//! The periodic token check (`[refresh] check_interval`): every so often each served access token
//! of an account that asks for it is checked with one cheap WeChat call. A token WeChat refuses
//! was killed outside the hub (someone fetched one with the AppSecret elsewhere); it is replaced
//! at once, through the same compare-and-refresh as a consumer's report, before a consumer trips
//! on it.
//!
//! Only the credentials that ask for it are walked ([`super::state::State::checked`]); the calls
//! go through the WeChat client, which keeps them within `[refresh] concurrency` like every other
//! call, and a check is skipped while a refresh of the same credential runs.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::job::wait_for;
use super::{Reason, RefreshError, Shared};
use crate::kinds::Host;
use crate::metrics::TokenCheck;
use crate::read::Credential;
use crate::upstream::UpstreamError;

/// How often the checker looks for values due for a check.
const CHECK_TICK: Duration = Duration::from_secs(1);

/// Checks waiting on WeChat at once, at most; the WeChat client holds all calls, these among
/// them, within `[refresh] concurrency`.
const CHECKS_AT_ONCE: usize = 16;

/// One value due for a check.
struct Due {
    credential: Arc<Credential>,
    value: String,
    at: Host,
}

/// Checks every value due for a check, once per [`CHECK_TICK`], until the engine stops.
pub(super) async fn run_token_checks(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(CHECK_TICK) => {}
            () = shared.cancel.cancelled() => return,
        }
        let due = due_now(&shared);
        if due.is_empty() {
            continue;
        }
        futures_util::stream::iter(due)
            .for_each_concurrent(CHECKS_AT_ONCE, |due| check(&shared, due))
            .await;
    }
}

/// The values due for a check now, each marked as checked so that it is not picked twice.
fn due_now(shared: &Shared) -> Vec<Due> {
    let mut state = shared.lock();
    let now = shared.clock.now();
    let mut due = Vec::new();
    let ids: Vec<_> = state.checked.iter().copied().collect();
    for id in ids {
        let Some(entry) = state.entries.get_mut(&id) else {
            continue;
        };
        let spec = entry.credential.spec();
        let (Some(token), Some(at)) = (&entry.token, spec.source.checked_at()) else {
            continue;
        };
        if entry.in_flight().is_some() || !token.is_valid_at(now) {
            continue;
        }
        let Some(next) = spec.plan.next_check(token.fetched_at, entry.checked_at) else {
            continue;
        };
        if next > now {
            continue;
        }
        entry.checked_at = Some(now);
        due.push(Due {
            credential: entry.credential.clone(),
            value: token.value.clone(),
            at,
        });
    }
    due
}

/// Replaces `value`, which WeChat refused, unless it was replaced meanwhile: the refresh a
/// consumer's verified report would start (a force refresh in stable mode), joined if one runs.
/// Not counted as a consumer's report.
async fn replace(
    shared: &Arc<Shared>,
    credential: &Arc<Credential>,
    value: &str,
) -> Result<(), RefreshError> {
    let job = {
        let mut state = shared.lock();
        let Some(entry) = state.entries.get_mut(&credential.id) else {
            return Ok(());
        };
        if entry
            .token
            .as_ref()
            .is_none_or(|token| token.value != value)
        {
            return Ok(());
        }
        entry.confirmed_dead = Some(value.into());
        let reported = Arc::from(value);
        shared.start_or_join(
            &mut state,
            credential,
            Reason::Invalidated { reported },
            None,
        )
    };
    match job {
        Some((receiver, _)) => wait_for(receiver).await.map(|_| ()),
        None => Ok(()),
    }
}

/// Checks one value, and replaces it if WeChat refuses it.
async fn check(shared: &Arc<Shared>, due: Due) {
    let work = due.at == Host::Work;
    match shared.upstream.check_token(work, &due.value).await {
        Ok(()) => shared.metrics.count_token_check(TokenCheck::Alive),
        Err(UpstreamError::TokenInvalid { .. }) => {
            shared.metrics.count_token_check(TokenCheck::Dead);
            tracing::warn!(
                key = %due.credential.key,
                "the served token was killed outside the hub (fetched elsewhere?); replacing it"
            );
            if let Err(e) = replace(shared, &due.credential, &due.value).await {
                tracing::warn!(key = %due.credential.key, error = %e, "replacing a token killed outside the hub failed; the scheduler retries");
            }
        }
        Err(e) => {
            shared.metrics.count_token_check(TokenCheck::Failed);
            tracing::debug!(key = %due.credential.key, error = %e, "a periodic token check could not reach WeChat");
        }
    }
}
