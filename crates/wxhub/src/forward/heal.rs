//! Dead tokens healed in flight: when WeChat refuses a call made with a token the hub serves, the
//! hub replaces that token (one compare-and-refresh, however many calls were refused) and sends
//! the call once more with the new one. The caller sees only the second answer.
//!
//! WeChat's refusal is not taken as proof on its own: a call can be refused with a dead-token
//! errcode for reasons that have nothing to do with the token (a token of the wrong kind for the
//! endpoint, a second token parameter). The refusal is reported like any consumer's report, so
//! the engine first asks WeChat whether the token really is dead (one cheap call, shared by every
//! concurrent report) and refreshes only then; a live token is left alone and WeChat's answer
//! stands. Calls whose token parameters are ambiguous never get this far (see
//! [`crate::gateway::token_param`]).

use std::sync::Arc;

use axum::body::Body;

use super::proxy::{inspect, streamed, Forwarded, Outgoing};
use super::query;
use super::Forwarder;
use crate::engine::Engine;
use crate::kinds::Kind;
use crate::metrics::gateway::Outcome;
use crate::read::Credential;

/// WeChat's answers that mean "this access token is dead" (invalid, unknown, expired).
pub const DEAD_TOKEN: [i64; 3] = [40001, 40014, 42001];
/// Work WeChat's answers that mean "this suite or provider token is dead" (invalid, expired):
/// what a call carrying `suite_access_token` or `provider_access_token` gets instead.
pub const DEAD_SERVICE_TOKEN: [i64; 2] = [40082, 42009];

/// Whether `errcode`, on a call made with a token of `credential`'s kind, says that token is
/// dead.
fn says_dead(credential: &Credential, errcode: i64) -> bool {
    DEAD_TOKEN.contains(&errcode)
        || (matches!(credential.key.account.kind(), Kind::Suite | Kind::Provider)
            && DEAD_SERVICE_TOKEN.contains(&errcode))
}

/// The hub-served token a call carries, and whose it is.
pub struct Heal {
    /// The credential the token belongs to.
    pub credential: Arc<Credential>,
    /// The token the call was made with.
    pub token: Arc<str>,
    /// The query parameter it came in (`access_token`, `component_access_token`), which the
    /// replay carries the new token in.
    pub param: &'static str,
}

/// Forwards `outgoing` (its body held for a replay, within `[gateway] replay_memory`; a body that
/// does not fit goes streamed, without one) and, if WeChat says its
/// token is dead, reports that token (checked like any report), then replays the call once with
/// the token that replaced it. The outcome says which of these happened.
pub async fn forward(
    forwarder: &Forwarder,
    engine: &Engine,
    mut outgoing: Outgoing,
    body: Body,
    heal: Heal,
) -> Forwarded {
    // The answer is read for its errcode: ask for it uncompressed.
    outgoing.headers.remove(axum::http::header::ACCEPT_ENCODING);
    let host = outgoing.host;
    let held = match forwarder
        .hold(outgoing.listener, &outgoing.headers, body)
        .await
    {
        Ok(Ok(held)) => held,
        // Too many bodies held already: this call goes as it is, without a replay.
        Ok(Err(body)) => {
            tracing::debug!(key = %heal.credential.key, "replay memory full; a call is streamed without healing");
            return forwarder.pass(&outgoing, body).await;
        }
        Err(e) => return e.refused(host),
    };
    let body = held.bytes.clone();
    let first = match forwarder.send_bytes(&outgoing, body.clone()).await {
        Ok(answer) => match inspect(answer).await {
            Ok(first) => first,
            Err(e) => return e.refused(host),
        },
        Err(e) => return e.refused(host),
    };
    if !first
        .errcode
        .is_some_and(|code| says_dead(&heal.credential, code))
    {
        return Forwarded::new(first.response, Outcome::Passed);
    }
    let fresh = match engine.invalidate(&heal.credential, &heal.token).await {
        Ok(invalidation) => invalidation.served,
        Err(e) => {
            tracing::warn!(key = %heal.credential.key, error = %e, "a call was refused for a dead token and the token could not be replaced");
            return Forwarded::new(first.response, Outcome::Unhealed);
        }
    };
    if *fresh.value == *heal.token {
        // The token is alive (WeChat refused the call for another reason), the refresh was
        // refused (too soon after the last) or WeChat re-sent the same value: WeChat's answer
        // stands.
        return Forwarded::new(first.response, Outcome::Unhealed);
    }
    tracing::debug!(key = %heal.credential.key, errcode = ?first.errcode, "replaying a call refused for a dead token");
    let mut replay = outgoing;
    let query = query::replace(replay.query(), heal.param, &fresh.value);
    replay.set_query(&query);
    match forwarder.send_bytes(&replay, body).await {
        Ok(answer) => Forwarded::new(streamed(answer), Outcome::Healed),
        Err(e) => e.refused(host),
    }
}
