//! `GET /v1/watch`: Server-Sent Events, one `credential` event per granted credential with its
//! current state, then one per new generation, from whichever instance refreshed it (the engine
//! serves tokens adopted from the store's change feed through the same path as its own, and the
//! hub announces every new generation it serves: [`crate::hub::Hub::subscribe`]).
//!
//! - `data` is `{"key","generation","expires_at","expires_in"}`, plus `"value"` for consumers with
//!   `read`; the event `id` is when this instance started serving that generation (Unix ms).
//! - A comment heartbeat every 15 s keeps proxies from closing an idle stream.
//! - `Last-Event-ID: <ms>` resumes: the initial state then holds only what changed after that
//!   instant (minus a margin for clocks between instances); a watcher keeps the newest generation
//!   per key, so a repeated event is harmless.
//! - Each connection has a bounded buffer: a reader that falls that far behind is dropped (its
//!   stream ends with an error) and never slows the hub or other readers. The initial state,
//!   which can be far larger than the buffer, is sent at the reader's pace instead; a reader
//!   that takes none of it for a few seconds is dropped. At most
//!   [`MAX_WATCHERS`] streams are open per process; more are answered 503.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use wxhub_types::WatchEvent;

use super::{bearer_key, ApiContext, ApiError, ApiState};
use crate::configuration::Scope;
use crate::credential::{CredentialKey, Timestamp};
use crate::hub::{Credential, Hub};

/// Streams open at once in this process.
pub const MAX_WATCHERS: usize = 4096;
/// Events (and heartbeats) buffered per connection before a slow reader is dropped.
const CONNECTION_BUFFER: usize = 64;
/// How long one event of the initial state may wait for room in the buffer before the reader
/// counts as stopped.
const INITIAL_STATE_PATIENCE: Duration = Duration::from_secs(5);
/// How often an idle stream gets a comment line.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How far back a resume looks beyond its `Last-Event-ID` (instances' clocks differ a little).
const RESUME_MARGIN_MS: i64 = 5_000;

/// Open streams (see [`MAX_WATCHERS`]).
static WATCHERS: AtomicUsize = AtomicUsize::new(0);

/// One open stream, counted until its task ends.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        WATCHERS
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_WATCHERS).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        WATCHERS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Who is watching: which credentials they may see, and whether with values.
struct Watcher {
    /// Where credentials and their changes are read.
    hub: Arc<Hub>,
    /// Whether the consumer is granted a credential (read from the current grants each time, so
    /// a reload applies to open streams).
    may_see: Box<dyn Fn(&CredentialKey) -> bool + Send + Sync>,
    /// Whether events carry the value (consumers with `read`).
    with_value: bool,
}

/// Whether consumer number `consumer` is granted `key`'s account under the grants in force.
fn granted(context: &ApiContext, consumer: usize, key: &CredentialKey) -> bool {
    let access = context.control.access().load();
    let settings = &access.settings;
    match key {
        CredentialKey::AccessToken { appid } | CredentialKey::Ticket { appid, .. } => {
            access.keys.may_use_app(settings, consumer, appid)
        }
        CredentialKey::CorpToken { corpid, agentid }
        | CredentialKey::CorpTicket {
            corpid, agentid, ..
        } => access
            .keys
            .may_use_corp(settings, consumer, corpid, agentid),
        _ => false,
    }
}

impl Watcher {
    /// The event for `credential`'s current state, if it has one newer than `after` (Unix ms).
    fn event(&self, credential: &Credential, after: i64) -> Option<Bytes> {
        let served = credential.slot.load()?;
        if served.published_at.0 <= after {
            return None;
        }
        let data = WatchEvent {
            key: credential.key.to_string(),
            generation: served.generation,
            expires_at: served.expires_at.to_rfc3339(),
            expires_in: served.expires_in(Timestamp::now()).unwrap_or(0),
            value: self.with_value.then(|| served.value.to_string()),
        };
        let data = serde_json::to_string(&data).ok()?;
        Some(Bytes::from(format!(
            "id: {}\nevent: credential\ndata: {data}\n\n",
            served.published_at.0
        )))
    }
}

/// `GET /v1/watch`.
pub async fn watch(State(context): State<ApiState>, headers: HeaderMap) -> Response {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_key);
    let Some(key) = key else {
        return ApiError::unauthorized("missing \"Authorization: Bearer <key>\" header")
            .into_response();
    };
    let (consumer, with_value) = {
        let access = context.control.access().load();
        let Some((index, consumer)) = access.keys.find(&access.settings, key) else {
            return ApiError::unauthorized("unknown consumer key").into_response();
        };
        if !consumer.has_scope(Scope::Read) && !consumer.has_scope(Scope::Invalidate) {
            return ApiError::forbidden(format!(
                "consumer {:?} lacks the read scope",
                consumer.name
            ))
            .into_response();
        }
        (index, consumer.has_scope(Scope::Read))
    };
    let Some(slot) = Slot::take() else {
        return ApiError::unavailable("too_many_watchers", "too many open watch streams")
            .into_response();
    };
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map_or(i64::MIN, |ms| ms.saturating_sub(RESUME_MARGIN_MS));
    let grants = context.clone();
    let watcher = Watcher {
        hub: context.hub.clone(),
        may_see: Box::new(move |key| granted(&grants, consumer, key)),
        with_value,
    };
    // Subscribe before reading the initial state, so nothing published in between is missed.
    let changes = context.hub.subscribe();
    let (sender, receiver) = mpsc::channel::<Bytes>(CONNECTION_BUFFER);
    let dropped = Arc::new(AtomicBool::new(false));
    tokio::spawn(feed(watcher, changes, sender, after, dropped.clone(), slot));
    let body = Body::from_stream(futures_util::stream::unfold(
        (receiver, dropped, false),
        |(mut receiver, dropped, done)| async move {
            if done {
                return None;
            }
            match receiver.recv().await {
                Some(bytes) => Some((Ok(bytes), (receiver, dropped, false))),
                // The feed ended: a slow reader's stream ends with an error, which aborts its
                // connection; otherwise it simply ends.
                None if dropped.load(Ordering::SeqCst) => Some((
                    Err(std::io::Error::other("watcher too slow")),
                    (receiver, dropped, true),
                )),
                None => None,
            }
        },
    ));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Why a stream's feed stopped.
enum Stop {
    /// The client went away.
    Gone,
    /// The client did not keep up.
    Slow,
}

/// Runs [`pump`] for one stream and marks it dropped if the reader fell behind.
async fn feed(
    watcher: Watcher,
    changes: broadcast::Receiver<crate::hub::Change>,
    sender: mpsc::Sender<Bytes>,
    after: i64,
    dropped: Arc<AtomicBool>,
    _slot: Slot,
) {
    if let Err(Stop::Slow) = pump(&watcher, changes, &sender, after).await {
        tracing::debug!("watch stream dropped: the client did not keep up");
        dropped.store(true, Ordering::SeqCst);
    }
    // Dropping the sender ends the stream (with an error, if dropped).
}

/// Writes the initial state, then every new generation and the heartbeats, until the client goes
/// away or falls behind.
async fn pump(
    watcher: &Watcher,
    mut changes: broadcast::Receiver<crate::hub::Change>,
    sender: &mpsc::Sender<Bytes>,
    after: i64,
) -> Result<Infallible, Stop> {
    let send = |bytes: Bytes| match sender.try_send(bytes) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(_)) => Err(Stop::Slow),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(Stop::Gone),
    };
    // An opening comment, so the client sees the stream is live before any event.
    send(Bytes::from_static(b": watching\n\n"))?;
    let mut credentials = watcher.hub.credentials();
    credentials.sort_by(|a, b| a.key.cmp(&b.key));
    // The initial state may be far larger than the buffer (every authorizer of a platform): it
    // goes out at the reader's pace, and only a reader that stops taking it is dropped.
    for credential in credentials.iter().filter(|c| (watcher.may_see)(&c.key)) {
        if let Some(event) = watcher.event(credential, after) {
            match tokio::time::timeout(INITIAL_STATE_PATIENCE, sender.send(event)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Stop::Gone),
                Err(_) => return Err(Stop::Slow),
            }
        }
    }
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) => {
                    if (watcher.may_see)(&change.credential.key) {
                        if let Some(event) = watcher.event(&change.credential, i64::MIN) {
                            send(event)?;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return Err(Stop::Slow),
                Err(broadcast::error::RecvError::Closed) => return Err(Stop::Gone),
            },
            _ = heartbeat.tick() => send(Bytes::from_static(b": heartbeat\n\n"))?,
            () = sender.closed() => return Err(Stop::Gone),
        }
    }
}

/// Open watch streams in this process (for tests and metrics).
pub fn open_watchers() -> usize {
    WATCHERS.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::{RefreshSettings, Secret, TokenMode};
    use crate::credential::Token;
    use crate::engine::plan::Plan;
    use crate::hub::Served;
    use crate::registry::{CredentialSpec, Origin, Source};

    fn credential(id: u64, appid: &str) -> Arc<Credential> {
        let spec = CredentialSpec {
            source: Source::AppToken {
                appid: appid.into(),
                secret: Secret::new("s".to_string()),
                mode: TokenMode::Legacy,
            },
            fetched_with: vec![],
            pushed: false,
            durable: false,
            plan: Plan::new(&RefreshSettings::default()),
            origin: Origin::Config,
        };
        let key = CredentialKey::AccessToken {
            appid: appid.into(),
        };
        Arc::new(Credential::new(id, key, spec))
    }

    fn publish(hub: &Hub, credential: &Arc<Credential>, generation: u64) {
        let now = Timestamp::now();
        let token = Token {
            value: format!("token-{generation}"),
            expires_at: now.plus(Duration::from_secs(7200)),
            fetched_at: now,
            generation,
        };
        let served = Served::new("access_token", &token, token.expires_at);
        hub.publish(credential, served, now);
    }

    fn watcher(hub: &Arc<Hub>) -> Watcher {
        Watcher {
            hub: hub.clone(),
            may_see: Box::new(|key| key.to_string().ends_with("wx1")),
            with_value: true,
        }
    }

    #[tokio::test]
    async fn a_reader_that_stops_reading_is_dropped_and_others_see_every_generation() {
        let hub = Arc::new(Hub::new());
        let granted = credential(1, "wx1");
        let other = credential(2, "wx2");
        let (stalled_tx, _stalled_rx) = mpsc::channel(CONNECTION_BUFFER);
        let (reader_tx, mut reader_rx) = mpsc::channel(CONNECTION_BUFFER);
        let stalled = tokio::spawn({
            let watcher = watcher(&hub);
            let changes = hub.subscribe();
            async move { pump(&watcher, changes, &stalled_tx, i64::MIN).await }
        });
        let reader = tokio::spawn({
            let watcher = watcher(&hub);
            let changes = hub.subscribe();
            async move { pump(&watcher, changes, &reader_tx, i64::MIN).await }
        });
        assert_eq!(
            reader_rx.recv().await.as_deref(),
            Some(&b": watching\n\n"[..])
        );
        let mut seen = Vec::new();
        for generation in 1..=(CONNECTION_BUFFER as u64 * 2) {
            publish(&hub, &granted, generation);
            publish(&hub, &other, generation);
            let event = reader_rx.recv().await.expect("an event per generation");
            let text = String::from_utf8(event.to_vec()).unwrap();
            assert!(text.contains("\"key\":\"access_token/wx1\""), "{text}");
            assert!(!text.contains("wx2"), "{text}");
            assert!(
                text.contains(&format!("\"value\":\"token-{generation}\"")),
                "{text}"
            );
            seen.push(generation);
        }
        assert_eq!(seen.len(), CONNECTION_BUFFER * 2);
        let outcome = tokio::time::timeout(Duration::from_secs(5), stalled)
            .await
            .expect("the stalled reader is dropped")
            .unwrap();
        assert!(matches!(outcome, Err(Stop::Slow)));
        drop(reader_rx);
        let outcome = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("a reader that goes away ends its feed")
            .unwrap();
        assert!(matches!(outcome, Err(Stop::Gone)));
    }

    #[tokio::test]
    async fn an_initial_state_larger_than_the_buffer_goes_at_the_readers_pace() {
        let hub = Arc::new(Hub::new());
        let credentials: Vec<_> = (0..CONNECTION_BUFFER as u64 * 3)
            .map(|i| credential(i, &format!("wx{i}")))
            .collect();
        for (i, credential) in credentials.iter().enumerate() {
            hub.put_account(
                crate::hub::Account::App(&format!("wx{i}")),
                crate::hub::AccountEntry {
                    access_token: credential.clone(),
                    tickets: vec![],
                    others: vec![],
                },
            );
            publish(&hub, credential, 1);
        }
        let everyone = |hub: &Arc<Hub>| Watcher {
            hub: hub.clone(),
            may_see: Box::new(|_| true),
            with_value: false,
        };
        // A reader that takes it all gets it all.
        let (reader_tx, mut reader_rx) = mpsc::channel(CONNECTION_BUFFER);
        let reader = tokio::spawn({
            let watcher = everyone(&hub);
            let changes = hub.subscribe();
            async move { pump(&watcher, changes, &reader_tx, i64::MIN).await }
        });
        let mut events = 0;
        while events < credentials.len() {
            let bytes = tokio::time::timeout(Duration::from_secs(5), reader_rx.recv())
                .await
                .expect("the initial state keeps coming")
                .expect("the stream stays open");
            if bytes.starts_with(b"id:") {
                events += 1;
            }
        }
        assert!(!reader.is_finished());
        reader.abort();
        // A reader that takes none of it is dropped once the patience runs out (a few seconds of
        // real time).
        let (stalled_tx, _stalled_rx) = mpsc::channel(CONNECTION_BUFFER);
        let watcher = everyone(&hub);
        let outcome = pump(&watcher, hub.subscribe(), &stalled_tx, i64::MIN).await;
        assert!(matches!(outcome, Err(Stop::Slow)));
    }
}
