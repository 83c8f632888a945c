//! `GET /v1/watch`: Server-Sent Events, one `credential` event per granted credential with its
//! current state, then one per new generation, from whichever instance refreshed it (the engine
//! serves tokens adopted from the store's change feed through the same path as its own, and the
//! hub announces every new generation it serves: [`crate::read::Hub::subscribe`]).
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
//!   that takes none of it for a few seconds is dropped. At most [`MAX_WATCHERS`] streams are
//!   open per process (more are answered 503), and at most `[server] max_watchers_per_consumer`
//!   per consumer (more are answered 429), so that one key cannot take every slot.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use wxhub_types::WatchEvent;

use super::{bearer_key, ApiContext, ApiError, ApiState};
use crate::clock::Clock;
use crate::configuration::Scope;
use crate::kinds::CredentialKey;
use crate::read::{Credential, ReadIndex};
use crate::token::Timestamp;

/// Streams open at once in this process.
pub const MAX_WATCHERS: usize = 4096;
/// Events (and heartbeats) buffered per connection before a slow reader is dropped.
const CONNECTION_BUFFER: usize = 64;
/// How long one event of the initial state may wait for room in the buffer before the reader
/// counts as stopped.
const INITIAL_STATE_PATIENCE: Duration = Duration::from_secs(5);
/// How often an idle stream gets a comment line.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// The last event of a stream whose consumer may no longer watch; the stream then ends.
const END_REVOKED: &[u8] = b"event: end\ndata: {\"reason\":\"access_revoked\"}\n\n";
/// The last event of a stream when the hub shuts down; the stream then ends.
const END_SHUTDOWN: &[u8] = b"event: end\ndata: {\"reason\":\"shutting_down\"}\n\n";
/// How far back a resume looks beyond its `Last-Event-ID` (instances' clocks differ a little).
const RESUME_MARGIN_MS: i64 = 5_000;

/// The watch streams open in this process, in all and per consumer (see [`MAX_WATCHERS`] and
/// [`crate::configuration::ServerSettings::max_watchers_per_consumer`]).
#[derive(Default)]
pub struct Watchers {
    /// The counts, changed only when a stream opens or ends.
    open: Mutex<OpenStreams>,
}

/// See [`Watchers`].
#[derive(Default)]
struct OpenStreams {
    /// Streams open in all.
    total: usize,
    /// Streams open by consumer name (a consumer with none has no entry).
    by_consumer: HashMap<String, usize>,
}

impl Watchers {
    /// Streams open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OpenStreams> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One open stream, counted until its task ends.
struct StreamPermit {
    watchers: Arc<Watchers>,
    consumer: String,
}

impl StreamPermit {
    /// A permit for one more stream of `consumer`, if neither the process-wide cap nor the
    /// consumer's own (`per_consumer`) is reached.
    fn take(
        watchers: &Arc<Watchers>,
        consumer: &str,
        per_consumer: usize,
    ) -> Result<StreamPermit, ApiError> {
        let mut open = watchers.lock();
        if open.total >= MAX_WATCHERS {
            return Err(ApiError::unavailable(
                "too_many_watchers",
                "too many open watch streams",
            ));
        }
        let mine = open.by_consumer.get(consumer).copied().unwrap_or(0);
        if mine >= per_consumer {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_watchers",
                format!(
                    "consumer {consumer:?} has {mine} watch streams open, the most it may \
                     ([server] max_watchers_per_consumer); one stream serves every credential"
                ),
            ));
        }
        open.total += 1;
        open.by_consumer.insert(consumer.to_string(), mine + 1);
        Ok(StreamPermit {
            watchers: watchers.clone(),
            consumer: consumer.to_string(),
        })
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.watchers.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(mine) = open.by_consumer.get_mut(&self.consumer) {
            *mine -= 1;
            if *mine == 0 {
                open.by_consumer.remove(&self.consumer);
            }
        }
    }
}

/// What the watching consumer may see now, by the access in force (a reload, or a consumer
/// removed or changed at runtime, applies to open streams at their next event or heartbeat).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    /// The stream ends: the consumer is gone, its key was replaced, or it may no longer watch.
    Ended,
    /// Not this credential (it is not granted).
    Hidden,
    /// This credential, with its value if `with_value` (the consumer has `read` now).
    Visible { with_value: bool },
}

/// Who is watching, and what they may see.
struct Watcher {
    /// Where credentials and their changes are read.
    read_index: Arc<ReadIndex>,
    /// What time it is, for each event's `expires_in`.
    clock: Arc<dyn Clock>,
    /// The consumer's standing for a credential (`Some`) or as a whole (`None`), read from the
    /// access in force at each call.
    standing: StandingOf,
}

/// See [`Watcher::standing`].
type StandingOf = Box<dyn Fn(Option<&CredentialKey>) -> Standing + Send + Sync>;

/// The standing of the consumer `name`, who opened the stream with the key whose digest is
/// `key_sha256`: it is looked up by name in the access in force (never by its position, which a
/// reload changes), and must still have that key and the `read` or `invalidate` scope.
fn standing(
    context: &ApiContext,
    name: &str,
    key_sha256: &[u8; 32],
    key: Option<&CredentialKey>,
) -> Standing {
    let access = context.control.access().load();
    let found = access
        .settings
        .consumers
        .iter()
        .enumerate()
        .find(|(_, consumer)| consumer.name == name);
    let Some((index, consumer)) = found else {
        return Standing::Ended;
    };
    if !consumer.key_matches(key_sha256) {
        return Standing::Ended;
    }
    let with_value = consumer.has_scope(Scope::Read);
    if !with_value && !consumer.has_scope(Scope::Invalidate) {
        return Standing::Ended;
    }
    match key {
        Some(key) if !access.keys.may_use(&access.settings, index, &key.account) => {
            Standing::Hidden
        }
        _ => Standing::Visible { with_value },
    }
}

impl Watcher {
    /// The event for `credential`'s current state, if it has one newer than `after` (Unix ms)
    /// and the consumer may see it; `Err` when the stream must end.
    fn event(&self, credential: &Credential, after: i64) -> Result<Option<Bytes>, Stop> {
        if !credential.key.role.is_for_consumers() {
            return Ok(None);
        }
        let with_value = match (self.standing)(Some(&credential.key)) {
            Standing::Ended => return Err(Stop::Revoked),
            Standing::Hidden => return Ok(None),
            Standing::Visible { with_value } => with_value,
        };
        Ok(render(credential, after, with_value, self.clock.now()))
    }
}

/// `credential`'s current state at `now` as an event, if newer than `after` (Unix ms).
fn render(credential: &Credential, after: i64, with_value: bool, now: Timestamp) -> Option<Bytes> {
    let served = credential.slot.load()?;
    if served.published_at.0 <= after {
        return None;
    }
    let data = WatchEvent {
        key: credential.key.to_string(),
        generation: served.generation,
        expires_at: served.expires_at.to_rfc3339(),
        expires_in: served.expires_in(now).unwrap_or(0),
        value: with_value.then(|| served.value.to_string()),
    };
    let data = serde_json::to_string(&data).ok()?;
    Some(Bytes::from(format!(
        "id: {}\nevent: credential\ndata: {data}\n\n",
        served.published_at.0
    )))
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
    let (name, key_sha256) = {
        let access = context.control.access().load();
        let Some((_, consumer)) = access.keys.find(&access.settings, key) else {
            return ApiError::unauthorized("unknown consumer key").into_response();
        };
        if !consumer.has_scope(Scope::Read) && !consumer.has_scope(Scope::Invalidate) {
            return ApiError::forbidden(format!(
                "consumer {:?} lacks the read scope",
                consumer.name
            ))
            .into_response();
        }
        (consumer.name.clone(), consumer.key_sha256)
    };
    let per_consumer = context.settings.server.max_watchers_per_consumer;
    let slot = match StreamPermit::take(&context.watchers, &name, per_consumer) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map_or(i64::MIN, |ms| ms.saturating_sub(RESUME_MARGIN_MS));
    let grants = context.clone();
    let watcher = Watcher {
        read_index: context.read_index.clone(),
        clock: context.clock.clone(),
        standing: Box::new(move |key| standing(&grants, &name, &key_sha256, key)),
    };
    let resume = Resume {
        after,
        heartbeat: heartbeat_interval(context.settings.server.idle_timeout),
    };
    // Subscribe before reading the initial state, so nothing published in between is missed.
    let changes = context.read_index.subscribe();
    let (sender, receiver) = mpsc::channel::<Bytes>(CONNECTION_BUFFER);
    let dropped = Arc::new(AtomicBool::new(false));
    let stopping = context.background.stopping().clone();
    context.background.spawn_listening(feed(
        watcher,
        changes,
        sender,
        resume,
        stopping,
        dropped.clone(),
        slot,
    ));
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
    /// The consumer may no longer watch (removed, its key replaced, or its scopes taken away).
    Revoked,
    /// The hub is shutting down.
    ShuttingDown,
}

/// Where a stream starts and how often it beats.
#[derive(Clone, Copy)]
struct Resume {
    /// Only generations published after this (Unix ms) go in the initial state.
    after: i64,
    /// How often an idle stream gets a comment line.
    heartbeat: Duration,
}

/// How often a stream beats: every [`HEARTBEAT`], or more often when the listener's
/// `idle_timeout` is short, so that a live stream is never taken for an idle connection.
fn heartbeat_interval(idle_timeout: Duration) -> Duration {
    HEARTBEAT
        .min(idle_timeout / 3)
        .max(Duration::from_millis(10))
}

/// Runs [`pump`] for one stream and marks it dropped if the reader fell behind.
async fn feed(
    watcher: Watcher,
    changes: broadcast::Receiver<crate::read::Change>,
    sender: mpsc::Sender<Bytes>,
    resume: Resume,
    stopping: CancellationToken,
    dropped: Arc<AtomicBool>,
    _slot: StreamPermit,
) {
    let pumped = tokio::select! {
        pumped = pump(&watcher, changes, &sender, resume) => pumped,
        () = stopping.cancelled() => Err(Stop::ShuttingDown),
    };
    match pumped {
        Err(Stop::Slow) => {
            tracing::debug!("watch stream dropped: the client did not keep up");
            dropped.store(true, Ordering::SeqCst);
        }
        Err(Stop::Revoked) => {
            tracing::debug!("watch stream ended: its consumer may no longer watch");
            let _ = sender.try_send(Bytes::from_static(END_REVOKED));
        }
        Err(Stop::ShuttingDown) => {
            // The client reconnects (to another instance, or to this one once it is back).
            let _ = sender.try_send(Bytes::from_static(END_SHUTDOWN));
        }
        Err(Stop::Gone) => {}
    }
    // Dropping the sender ends the stream (with an error, if dropped).
}

/// Writes the initial state, then every new generation and the heartbeats, until the client goes
/// away or falls behind.
async fn pump(
    watcher: &Watcher,
    mut changes: broadcast::Receiver<crate::read::Change>,
    sender: &mpsc::Sender<Bytes>,
    resume: Resume,
) -> Result<Infallible, Stop> {
    let send = |bytes: Bytes| match sender.try_send(bytes) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(_)) => Err(Stop::Slow),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(Stop::Gone),
    };
    // An opening comment, so the client sees the stream is live before any event.
    send(Bytes::from_static(b": watching\n\n"))?;
    let mut credentials = watcher.read_index.credentials();
    credentials.sort_by(|a, b| a.key.cmp(&b.key));
    // The initial state may be far larger than the buffer (every authorizer of a platform): it
    // goes out at the reader's pace, and only a reader that stops taking it is dropped.
    for credential in &credentials {
        if let Some(event) = watcher.event(credential, resume.after)? {
            match tokio::time::timeout(INITIAL_STATE_PATIENCE, sender.send(event)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Stop::Gone),
                Err(_) => return Err(Stop::Slow),
            }
        }
    }
    let mut heartbeat = tokio::time::interval(resume.heartbeat);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) => {
                    if let Some(event) = watcher.event(&change.credential, i64::MIN)? {
                        send(event)?;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return Err(Stop::Slow),
                Err(broadcast::error::RecvError::Closed) => return Err(Stop::Gone),
            },
            _ = heartbeat.tick() => {
                if (watcher.standing)(None) == Standing::Ended {
                    return Err(Stop::Revoked);
                }
                send(Bytes::from_static(b": heartbeat\n\n"))?;
            }
            () = sender.closed() => return Err(Stop::Gone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::configuration::{RefreshSettings, Secret, TokenMode};
    use crate::plan::Plan;
    use crate::read::Served;
    use crate::registry::{CredentialSpec, Origin, Source};
    use crate::token::Token;

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
        let key = CredentialKey::access_token(appid);
        Arc::new(Credential::new(id, key, spec))
    }

    fn publish(read_index: &ReadIndex, credential: &Arc<Credential>, generation: u64) {
        let now = Timestamp::now();
        let token = Token {
            value: format!("token-{generation}"),
            expires_at: now.plus(Duration::from_secs(7200)),
            fetched_at: now,
            generation,
        };
        let served = Served::new("access_token", &token, token.expires_at);
        read_index.publish(credential, served, now, now);
    }

    fn watcher(read_index: &Arc<ReadIndex>) -> Watcher {
        Watcher {
            read_index: read_index.clone(),
            clock: Arc::new(SystemClock),
            standing: Box::new(|key| match key {
                Some(key) if !key.to_string().ends_with("wx1") => Standing::Hidden,
                _ => Standing::Visible { with_value: true },
            }),
        }
    }

    /// A stream that beats every 15 s and resumes from nothing.
    const FROM_START: Resume = Resume {
        after: i64::MIN,
        heartbeat: HEARTBEAT,
    };

    #[tokio::test]
    async fn a_reader_that_stops_reading_is_dropped_and_others_see_every_generation() {
        let read_index = Arc::new(ReadIndex::new());
        let granted = credential(1, "wx1");
        let other = credential(2, "wx2");
        let (stalled_tx, _stalled_rx) = mpsc::channel(CONNECTION_BUFFER);
        let (reader_tx, mut reader_rx) = mpsc::channel(CONNECTION_BUFFER);
        let stalled = tokio::spawn({
            let watcher = watcher(&read_index);
            let changes = read_index.subscribe();
            async move { pump(&watcher, changes, &stalled_tx, FROM_START).await }
        });
        let reader = tokio::spawn({
            let watcher = watcher(&read_index);
            let changes = read_index.subscribe();
            async move { pump(&watcher, changes, &reader_tx, FROM_START).await }
        });
        assert_eq!(
            reader_rx.recv().await.as_deref(),
            Some(&b": watching\n\n"[..])
        );
        let mut seen = Vec::new();
        for generation in 1..=(CONNECTION_BUFFER as u64 * 2) {
            publish(&read_index, &granted, generation);
            publish(&read_index, &other, generation);
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
        let read_index = Arc::new(ReadIndex::new());
        let credentials: Vec<_> = (0..CONNECTION_BUFFER as u64 * 3)
            .map(|i| credential(i, &format!("wx{i}")))
            .collect();
        for (i, credential) in credentials.iter().enumerate() {
            read_index.put_account(
                &crate::kinds::AccountId::app(format!("wx{i}")),
                crate::read::AccountEntry {
                    access_token: credential.clone(),
                    tickets: vec![],
                    others: vec![],
                },
            );
            publish(&read_index, credential, 1);
        }
        let everyone = |read_index: &Arc<ReadIndex>| Watcher {
            read_index: read_index.clone(),
            clock: Arc::new(SystemClock),
            standing: Box::new(|_| Standing::Visible { with_value: false }),
        };
        // A reader that takes it all gets it all.
        let (reader_tx, mut reader_rx) = mpsc::channel(CONNECTION_BUFFER);
        let reader = tokio::spawn({
            let watcher = everyone(&read_index);
            let changes = read_index.subscribe();
            async move { pump(&watcher, changes, &reader_tx, FROM_START).await }
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
        let watcher = everyone(&read_index);
        let outcome = pump(&watcher, read_index.subscribe(), &stalled_tx, FROM_START).await;
        assert!(matches!(outcome, Err(Stop::Slow)));
    }

    #[test]
    fn one_consumer_cannot_take_every_slot() {
        let watchers = Arc::new(Watchers::default());
        let held: Vec<StreamPermit> = (0..3)
            .map(|_| StreamPermit::take(&watchers, "greedy", 3).expect("within its cap"))
            .collect();
        let refused = StreamPermit::take(&watchers, "greedy", 3)
            .err()
            .expect("over its cap");
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        let other = StreamPermit::take(&watchers, "other", 3).expect("another consumer still may");
        assert_eq!(watchers.open(), 4);
        drop(held);
        drop(other);
        assert_eq!(watchers.open(), 0);
        assert!(watchers.lock().by_consumer.is_empty());
        assert!(StreamPermit::take(&watchers, "greedy", 3).is_ok());
    }

    #[tokio::test]
    async fn a_consumer_that_may_no_longer_watch_ends_its_stream_at_the_next_heartbeat() {
        let read_index = Arc::new(ReadIndex::new());
        let revoked = Arc::new(AtomicBool::new(false));
        let watcher = Watcher {
            read_index: read_index.clone(),
            clock: Arc::new(SystemClock),
            standing: Box::new({
                let revoked = revoked.clone();
                move |_| {
                    if revoked.load(Ordering::SeqCst) {
                        Standing::Ended
                    } else {
                        Standing::Visible { with_value: true }
                    }
                }
            }),
        };
        let (sender, mut receiver) = mpsc::channel(CONNECTION_BUFFER);
        let resume = Resume {
            after: i64::MIN,
            heartbeat: Duration::from_millis(20),
        };
        let dropped = Arc::new(AtomicBool::new(false));
        let slot = StreamPermit::take(&Arc::default(), "c", 1).expect("a watch slot");
        let feeding = tokio::spawn(feed(
            watcher,
            read_index.subscribe(),
            sender,
            resume,
            CancellationToken::new(),
            dropped.clone(),
            slot,
        ));
        assert_eq!(
            receiver.recv().await.as_deref(),
            Some(&b": watching\n\n"[..])
        );
        assert_eq!(
            receiver.recv().await.as_deref(),
            Some(&b": heartbeat\n\n"[..])
        );
        revoked.store(true, Ordering::SeqCst);
        let mut last = None;
        while let Some(bytes) = receiver.recv().await {
            last = Some(bytes);
        }
        assert_eq!(last.as_deref(), Some(END_REVOKED));
        feeding.await.unwrap();
        assert!(
            !dropped.load(Ordering::SeqCst),
            "ended, not dropped as slow"
        );
    }

    #[test]
    fn heartbeats_come_at_least_three_times_per_idle_timeout() {
        assert_eq!(heartbeat_interval(Duration::from_secs(60)), HEARTBEAT);
        assert_eq!(
            heartbeat_interval(Duration::from_secs(9)),
            Duration::from_secs(3)
        );
    }
}
