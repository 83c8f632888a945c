//! The listener: accepts connections and serves HTTP/1.1 on each with hyper, answering through
//! one shared [`ApiService`], until shutdown.
//!
//! `axum::serve` runs the same hyper connection code, but it clones the whole service for every
//! request (two reference counts that every core then writes to, on the hottest path there is),
//! boxes every request body, and wraps every connection for HTTP/2 and upgrades, which the hub
//! does not speak. Here each connection borrows the one service, and a read's answer goes out as
//! the bytes it is.
//!
//! No client can hold the hub's resources for long ([`Limits`]):
//! - each connection is held to a header-read and an idle deadline (see [`super::connection`]);
//! - at most `max_connections` are served at once. One more is still accepted, answered
//!   `503 Service Unavailable` and closed at once, rather than left in the kernel's backlog: the
//!   client learns at once that it should retry (or go to another instance), and the backlog
//!   never fills with connections nobody will answer for a while;
//! - accept errors (out of file descriptors, say) pause the listener, with a backoff that grows
//!   to one second, instead of spinning on them.
//!
//! Shutdown stops accepting, lets every connection finish the request it is on (idle kept-alive
//! connections close at once) for at most `drain_timeout`, then closes whatever is left, so a
//! client that never finishes its request cannot keep the process alive.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::connection::{Activity, Deadlines, Ended, Supervised, Tracked, Watched};
use super::ApiService;

/// The first pause after an accept error that is not about one connection; it doubles with each
/// further error, up to [`ACCEPT_ERROR_MAX_PAUSE`], and starts over after a successful accept.
const ACCEPT_ERROR_FIRST_PAUSE: Duration = Duration::from_millis(10);

/// The longest pause after repeated accept errors.
const ACCEPT_ERROR_MAX_PAUSE: Duration = Duration::from_secs(1);

/// How often at most the listener logs that it is turning connections away.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What a connection over the limit is told before it is closed.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 86\r\n\r\n{\"error\":{\"code\":\"overloaded\",\"message\":\"too many open connections; try again later\"}}";

/// The listener's limits, from `[server]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Each connection's header-read and idle deadlines.
    pub deadlines: Deadlines,
    /// Connections served at once (at least 1).
    pub max_connections: usize,
    /// How long shutdown waits for requests in progress before closing their connections.
    pub drain_timeout: Duration,
}

/// What the listener tells its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Phase {
    /// Serve requests.
    Serving,
    /// Finish the request in progress, then close.
    Draining,
    /// Close now.
    Closing,
}

impl Phase {
    fn from_u8(value: u8) -> Phase {
        match value {
            0 => Phase::Serving,
            1 => Phase::Draining,
            _ => Phase::Closing,
        }
    }
}

/// The listener's phase, as its connections see it.
///
/// A connection looks at the phase on every wake-up (its task waits on the socket and on the
/// phase at once), so the look must cost nothing: one atomic load, and the connection's waker
/// handed over only when it changes (never, for a task's whole life). A `watch` channel would
/// take its one lock, shared by every connection, on each of those wake-ups.
struct PhaseSignal {
    /// The current [`Phase`], as its `u8`.
    phase: AtomicU8,
    /// The waker of each connection, by its number, to be woken when the phase changes.
    waiting: Mutex<HashMap<u64, Waker>>,
    /// The next connection's number.
    next: AtomicU64,
}

impl PhaseSignal {
    fn new() -> Arc<PhaseSignal> {
        Arc::new(PhaseSignal {
            phase: AtomicU8::new(Phase::Serving as u8),
            waiting: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        })
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::SeqCst))
    }

    /// Moves to `phase` (never back) and wakes every connection.
    fn set(&self, phase: Phase) {
        self.phase.fetch_max(phase as u8, Ordering::SeqCst);
        let waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        for waker in waiting.values() {
            waker.wake_by_ref();
        }
    }

    /// A new connection's view of the phase.
    fn watch(self: &Arc<Self>) -> PhaseWatch {
        PhaseWatch {
            signal: self.clone(),
            id: self.next.fetch_add(1, Ordering::Relaxed),
            registered: None,
        }
    }
}

/// Moves the listener's connections to [`Phase::Closing`] when the listener goes, however it
/// goes (its task aborted, say): a connection never outlives its listener unbounded.
struct ClosingOnDrop(Arc<PhaseSignal>);

impl Drop for ClosingOnDrop {
    fn drop(&mut self) {
        self.0.set(Phase::Closing);
    }
}

/// One connection's view of [`PhaseSignal`].
struct PhaseWatch {
    signal: Arc<PhaseSignal>,
    /// This connection's number in [`PhaseSignal::waiting`].
    id: u64,
    /// The waker handed over last, if any.
    registered: Option<Waker>,
}

impl PhaseWatch {
    fn phase(&self) -> Phase {
        self.signal.phase()
    }

    /// Ready once the phase is `phase` or later.
    fn poll_reached(&mut self, cx: &mut Context<'_>, phase: Phase) -> Poll<()> {
        let waker = cx.waker();
        if !self
            .registered
            .as_ref()
            .is_some_and(|registered| registered.will_wake(waker))
        {
            // Handed over before the phase is read: a change made after this read wakes it.
            self.signal
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(self.id, waker.clone());
            self.registered = Some(waker.clone());
        }
        if self.phase() >= phase {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    async fn reached(&mut self, phase: Phase) {
        std::future::poll_fn(|cx| self.poll_reached(cx, phase)).await;
    }
}

impl Drop for PhaseWatch {
    fn drop(&mut self) {
        if self.registered.is_some() {
            self.signal
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.id);
        }
    }
}

/// Serves `service` on `listener` within `limits` until `shutdown` completes, then drains the
/// open connections (for at most `limits.drain_timeout`).
pub async fn serve<F>(
    listener: TcpListener,
    service: ApiService,
    limits: Limits,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let service = Arc::new(service);
    // At most `u32::MAX`: shutdown takes back every permit in one `acquire_many`.
    let max_connections = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    // One permit per open connection: the connection task holds it until it ends.
    let open = Arc::new(Semaphore::new(max_connections));
    let phase = PhaseSignal::new();
    let _closing = ClosingOnDrop(phase.clone());
    let mut refusals = Refusals::default();
    let mut pause = ACCEPT_ERROR_FIRST_PAUSE;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_about_one_connection(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, pause = ?pause, "accept failed; pausing before the next accept");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = &mut shutdown => break,
                    }
                    pause = (pause * 2).min(ACCEPT_ERROR_MAX_PAUSE);
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        pause = ACCEPT_ERROR_FIRST_PAUSE;
        match open.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(serve_connection(
                    stream,
                    service.clone(),
                    limits.deadlines,
                    phase.watch(),
                    permit,
                ));
            }
            Err(_) => {
                refuse(stream);
                refusals.count(max_connections);
            }
        }
    }
    drop(listener);
    drain(&open, max_connections, &phase, limits.drain_timeout).await;
    Ok(())
}

/// Asks every connection to finish, waits up to `deadline` for them to, then closes the rest.
async fn drain(open: &Semaphore, max_connections: usize, phase: &PhaseSignal, deadline: Duration) {
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    phase.set(Phase::Draining);
    if tokio::time::timeout(deadline, open.acquire_many(all))
        .await
        .is_ok()
    {
        return;
    }
    let left = max_connections - open.available_permits();
    tracing::warn!(
        connections = left,
        ?deadline,
        "requests still in progress after the shutdown deadline; closing their connections"
    );
    phase.set(Phase::Closing);
    // Every connection task closes as soon as it sees the phase; this only waits for them to run.
    let _ = open.acquire_many(all).await;
}

/// Serves one connection until the peer closes it, it misses a deadline, or the listener says
/// so (after `Draining`, once its request in progress is answered; at `Closing`, at once).
async fn serve_connection(
    stream: TcpStream,
    service: Arc<ApiService>,
    deadlines: Deadlines,
    mut phase: PhaseWatch,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Watched::new(stream, activity.clone()));
    let tracked = activity.clone();
    let answer = service_fn(move |request| Tracked::new(service.answer(request), tracked.clone()));
    let connection = http1::Builder::new().serve_connection(io, answer);
    let mut supervised = Supervised::new(connection, activity, deadlines);
    if phase.phase() == Phase::Serving {
        tokio::select! {
            // Checked in order, so the connection (polled on every wake-up) is not preceded by a
            // random draw each time.
            biased;
            ended = &mut supervised => return log_end(ended),
            () = phase.reached(Phase::Draining) => {}
        }
    }
    supervised.connection().graceful_shutdown();
    tokio::select! {
        biased;
        ended = &mut supervised => log_end(ended),
        () = phase.reached(Phase::Closing) => {}
    }
}

fn log_end(ended: Ended) {
    if ended == Ended::TimedOut {
        tracing::debug!("connection closed: the client was too slow or idle too long");
    }
}

/// Answers a connection over the limit with a 503 if its socket takes it at once (a new socket's
/// send buffer is empty, so it does), and closes it.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(BUSY_RESPONSE);
}

/// Connections turned away since the last log line about them.
#[derive(Default)]
struct Refusals {
    since_log: u64,
    last_log: Option<Instant>,
}

impl Refusals {
    fn count(&mut self, max_connections: usize) {
        self.since_log += 1;
        let now = Instant::now();
        if self
            .last_log
            .is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            max_connections,
            refused = self.since_log,
            "connection limit reached; refusing new connections with 503"
        );
        self.since_log = 0;
        self.last_log = Some(now);
    }
}

/// Errors about one connection (reset before it was accepted) are nothing to act on; anything
/// else (out of file descriptors) is about the listener.
fn is_about_one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicU64);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Wakes>, Waker) {
        let wakes = Arc::new(Wakes::default());
        (wakes.clone(), Waker::from(wakes))
    }

    fn count(wakes: &Wakes) -> u64 {
        wakes.0.load(Ordering::SeqCst)
    }

    #[test]
    fn a_phase_change_wakes_each_connection_under_its_latest_waker() {
        let signal = PhaseSignal::new();
        let mut quiet = signal.watch();
        let mut moving = signal.watch();
        let (quiet_wakes, quiet_waker) = waker();
        let (first, first_waker) = waker();
        let (second, second_waker) = waker();
        for _ in 0..3 {
            let mut cx = Context::from_waker(&quiet_waker);
            assert!(quiet.poll_reached(&mut cx, Phase::Draining).is_pending());
        }
        let mut cx = Context::from_waker(&first_waker);
        assert!(moving.poll_reached(&mut cx, Phase::Draining).is_pending());
        // The connection's task is polled under another waker: that one is woken.
        let mut cx = Context::from_waker(&second_waker);
        assert!(moving.poll_reached(&mut cx, Phase::Draining).is_pending());
        assert_eq!(signal.waiting.lock().unwrap().len(), 2);

        signal.set(Phase::Draining);
        assert_eq!(
            (count(&quiet_wakes), count(&first), count(&second)),
            (1, 0, 1)
        );
        assert!(moving.poll_reached(&mut cx, Phase::Draining).is_ready());
        assert!(moving.poll_reached(&mut cx, Phase::Closing).is_pending());
        // A connection that ended is no longer woken.
        drop(quiet);
        assert_eq!(signal.waiting.lock().unwrap().len(), 1);
        signal.set(Phase::Closing);
        assert_eq!((count(&quiet_wakes), count(&second)), (1, 2));
        assert!(moving.poll_reached(&mut cx, Phase::Closing).is_ready());
        // The phase never goes back.
        signal.set(Phase::Draining);
        assert_eq!(signal.phase(), Phase::Closing);
    }

    #[test]
    fn a_listener_that_goes_closes_its_connections() {
        let signal = PhaseSignal::new();
        let mut connection = signal.watch();
        let (wakes, waker) = waker();
        let mut cx = Context::from_waker(&waker);
        let listener = ClosingOnDrop(signal.clone());
        assert!(connection
            .poll_reached(&mut cx, Phase::Closing)
            .is_pending());
        drop(listener);
        assert_eq!(count(&wakes), 1);
        assert!(connection.poll_reached(&mut cx, Phase::Closing).is_ready());
        // A connection accepted just before sees it at once.
        let mut late = signal.watch();
        assert_eq!(late.phase(), Phase::Closing);
        assert!(late.poll_reached(&mut cx, Phase::Draining).is_ready());
    }

    #[test]
    fn the_busy_response_is_well_formed() {
        let text = std::str::from_utf8(BUSY_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "overloaded");
    }
}
