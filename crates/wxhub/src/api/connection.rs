//! One connection's deadlines: how long a client may take to send a request's headers, how long
//! a request may take (its body included), how long a streamed answer may stall, and how long a
//! kept-alive connection may sit idle.
//!
//! hyper's own header-read timeout runs from the moment a connection waits for a request, so it
//! cannot tell a slow client from an idle kept-alive one. Here four things share one
//! [`Activity`]: the socket ([`Watched`], which notes that bytes arrived), the service
//! ([`Tracked`], which notes that a request is being answered and when it was), a streamed
//! answer's body ([`TrackedBody`], which notes each part it hands out and its end), and the
//! [`Supervised`] connection, which derives the current phase from them and enforces its
//! deadline:
//! - first request: its headers within `header_read_timeout` of the connection's start;
//! - busy (the request is being read and answered): within `request_timeout`. Handlers answer
//!   `503 timeout` on that deadline themselves; this is the backstop for whatever does not (a
//!   body trickled in a byte at a time is read inside the handler, so it is bounded too);
//! - streaming an answer of unknown length (a watch stream): each part within `idle_timeout` of
//!   the one before, so a stream lives as long as its heartbeats keep coming and its reader keeps
//!   taking them (a reader that stops taking them stops hyper from asking for more);
//! - idle after a response: the next request's first byte within `idle_timeout`;
//! - reading a later request: its headers within `header_read_timeout` of its first byte.
//!
//! A connection past its deadline is dropped, which closes it. All three run in the
//! connection's task, so the shared state is only ever touched by one thread at a time; the
//! atomics are uncontended.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use hyper::Response;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The timeouts every connection is held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// See [`crate::configuration::ServerSettings::header_read_timeout`].
    pub header_read_timeout: Duration,
    /// See [`crate::configuration::ServerSettings::idle_timeout`].
    pub idle_timeout: Duration,
    /// How long a request may be in progress, reading its body included (see
    /// [`crate::configuration::ServerSettings::request_timeout`]); the connection closes
    /// [`BUSY_GRACE`] later if the handler has not answered by then.
    pub request_timeout: Duration,
}

/// How long past `request_timeout` a busy connection is left, so that a handler's own `503
/// timeout` answer goes out before the connection is closed under it.
pub const BUSY_GRACE: Duration = Duration::from_millis(500);

/// What one connection is doing, as its socket and its service see it.
#[derive(Default)]
pub struct Activity {
    /// A request has been handed to the service and not yet answered.
    busy: AtomicBool,
    /// Responses produced so far: a change starts an idle period.
    answered: AtomicU64,
    /// Bytes arrived since the last response: the next request has begun.
    reading: AtomicBool,
    /// An answer of unknown length is being sent.
    streaming: AtomicBool,
    /// Parts of streamed answers handed to hyper so far: a change is progress.
    parts: AtomicU64,
}

/// The phase a connection is in; a change of phase restarts its clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first request's headers.
    First,
    /// A request is being answered.
    Busy,
    /// An answer of unknown length is being sent; `n` parts of it went out so far.
    Streaming(u64),
    /// The `n`-th response went out; waiting for the next request.
    Idle(u64),
    /// The next request after the `n`-th response has begun.
    Reading(u64),
}

impl Activity {
    fn phase(&self) -> Phase {
        if self.busy.load(Ordering::Relaxed) {
            return Phase::Busy;
        }
        if self.streaming.load(Ordering::Relaxed) {
            return Phase::Streaming(self.parts.load(Ordering::Relaxed));
        }
        match self.answered.load(Ordering::Relaxed) {
            0 => Phase::First,
            n if self.reading.load(Ordering::Relaxed) => Phase::Reading(n),
            n => Phase::Idle(n),
        }
    }
}

/// The socket, noting in its [`Activity`] when bytes arrive.
pub struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Watched<T> {
        Watched { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.reading.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The service's answer to one request, marking the connection busy until it is ready.
pub struct Tracked<F> {
    answer: F,
    activity: Arc<Activity>,
}

impl<F> Tracked<F> {
    pub fn new(answer: F, activity: Arc<Activity>) -> Tracked<F> {
        activity.busy.store(true, Ordering::Relaxed);
        Tracked { answer, activity }
    }
}

impl<F, B, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response<B>, E>> + Unpin,
    B: Body,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Poll::Ready(answered) = Pin::new(&mut self.answer).poll(cx) else {
            return Poll::Pending;
        };
        let activity = &self.activity;
        let answered =
            answered.map(|response| response.map(|body| TrackedBody::new(body, activity)));
        activity.reading.store(false, Ordering::Relaxed);
        activity.answered.fetch_add(1, Ordering::Relaxed);
        activity.busy.store(false, Ordering::Relaxed);
        Poll::Ready(answered)
    }
}

/// An answer's body, noting in its [`Activity`] that a stream of unknown length is being sent
/// and each part of it. Answers of known length (every JSON answer) go through untouched, so the
/// read path pays nothing for this.
pub enum TrackedBody<B> {
    /// An answer of known length: its phase is the idle one that follows it.
    Sized(B),
    /// A stream: the connection is [`Phase::Streaming`] until it ends or is dropped.
    Streaming(B, Arc<Activity>),
}

impl<B: Body> TrackedBody<B> {
    fn new(body: B, activity: &Arc<Activity>) -> TrackedBody<B> {
        if body.size_hint().exact().is_some() {
            return TrackedBody::Sized(body);
        }
        activity.streaming.store(true, Ordering::Relaxed);
        TrackedBody::Streaming(body, activity.clone())
    }
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        match self.get_mut() {
            TrackedBody::Sized(body) => Pin::new(body).poll_frame(cx),
            TrackedBody::Streaming(body, activity) => {
                let polled = Pin::new(body).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(_))) => {
                        activity.parts.fetch_add(1, Ordering::Relaxed);
                    }
                    Poll::Ready(_) => activity.streaming.store(false, Ordering::Relaxed),
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            TrackedBody::Sized(body) | TrackedBody::Streaming(body, _) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            TrackedBody::Sized(body) | TrackedBody::Streaming(body, _) => body.size_hint(),
        }
    }
}

impl<B> Drop for TrackedBody<B> {
    fn drop(&mut self) {
        if let TrackedBody::Streaming(_, activity) = self {
            activity.streaming.store(false, Ordering::Relaxed);
        }
    }
}

/// How a supervised connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// hyper finished it (the client closed it, or it was shut down gracefully).
    Finished,
    /// It missed its deadline.
    TimedOut,
}

/// A hyper connection held to its [`Deadlines`].
pub struct Supervised<C> {
    /// The connection (boxed once per connection, so this wrapper is `Unpin`).
    connection: Pin<Box<C>>,
    activity: Arc<Activity>,
    deadlines: Deadlines,
    /// The phase last seen.
    phase: Phase,
    /// When the current phase must end.
    deadline: Instant,
    /// A timer that fires at or before `deadline`. It is moved only to an earlier instant: a
    /// later deadline (the next idle period, after every response) is left to the timer to find
    /// when it fires, so that a request costs no timer update in the common case.
    timer: Pin<Box<Sleep>>,
    /// The waker the timer holds, if it holds one: set when the timer is polled, cleared when it
    /// is reset. Polling a timer that holds this task's waker already registers the waker again
    /// (an atomic exchange, a waker clone and a drop, on every wake-up of the connection), so
    /// the timer is polled only after a reset, once it has fired, or for another waker.
    registered: Option<Waker>,
}

impl<C: Future> Supervised<C> {
    /// Supervises `connection`, accepted just now, whose socket and service share `activity`.
    pub fn new(connection: C, activity: Arc<Activity>, deadlines: Deadlines) -> Supervised<C> {
        let deadline = Instant::now() + deadlines.header_read_timeout;
        Supervised {
            connection: Box::pin(connection),
            activity,
            deadlines,
            phase: Phase::First,
            deadline,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            registered: None,
        }
    }

    /// The connection itself (to start its graceful shutdown).
    pub fn connection(&mut self) -> Pin<&mut C> {
        self.connection.as_mut()
    }

    /// Restarts the clock when the phase has changed since the last look.
    fn follow_phase(&mut self) {
        let phase = self.activity.phase();
        if phase == self.phase {
            return;
        }
        self.phase = phase;
        let allowed = match phase {
            Phase::Busy => self.deadlines.request_timeout + BUSY_GRACE,
            Phase::First | Phase::Reading(_) => self.deadlines.header_read_timeout,
            Phase::Streaming(_) | Phase::Idle(_) => self.deadlines.idle_timeout,
        };
        let deadline = Instant::now() + allowed;
        self.deadline = deadline;
        if deadline < self.timer.deadline() || self.timer.is_elapsed() {
            self.timer.as_mut().reset(deadline);
            self.registered = None;
        }
    }

    /// Whether the timer must be polled: it has fired, or it may not hold `waker`.
    fn timer_needs_poll(&self, waker: &Waker) -> bool {
        self.timer.is_elapsed()
            || !self
                .registered
                .as_ref()
                .is_some_and(|registered| registered.will_wake(waker))
    }
}

impl<C: Future> Future for Supervised<C> {
    type Output = Ended;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        if self.connection.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ended::Finished);
        }
        self.follow_phase();
        if !self.timer_needs_poll(cx.waker()) {
            return Poll::Pending;
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            let deadline = self.deadline;
            if Instant::now() >= deadline {
                return Poll::Ready(Ended::TimedOut);
            }
            // The timer was set for an earlier phase: move it to this one's deadline.
            self.timer.as_mut().reset(deadline);
        }
        self.registered = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    #[test]
    fn the_phase_follows_reads_and_answers() {
        let activity = Arc::new(Activity::default());
        assert_eq!(activity.phase(), Phase::First);
        activity.reading.store(true, Ordering::Relaxed);
        assert_eq!(activity.phase(), Phase::First);
        let answer = std::future::ready(Ok::<_, ()>(Response::new(Full::new(Bytes::new()))));
        let tracked = Tracked::new(answer, activity.clone());
        assert_eq!(activity.phase(), Phase::Busy);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut tracked = tracked;
        assert!(Pin::new(&mut tracked).poll(&mut cx).is_ready());
        assert_eq!(activity.phase(), Phase::Idle(1));
        activity.reading.store(true, Ordering::Relaxed);
        assert_eq!(activity.phase(), Phase::Reading(1));
    }

    #[test]
    fn a_streamed_answer_is_its_own_phase_until_it_ends() {
        let activity = Arc::new(Activity::default());
        let parts = Arc::new(Mutex::new(VecDeque::new()));
        let answer = std::future::ready(Ok::<_, ()>(Response::new(QueueBody(parts.clone()))));
        let mut tracked = Tracked::new(answer, activity.clone());
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let Poll::Ready(Ok(response)) = Pin::new(&mut tracked).poll(&mut cx) else {
            panic!("answered at once");
        };
        let mut body = response.into_body();
        assert_eq!(activity.phase(), Phase::Streaming(0));
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        parts.lock().unwrap().push_back(Bytes::from_static(b"part"));
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        assert_eq!(activity.phase(), Phase::Streaming(1));
        drop(body);
        assert_eq!(activity.phase(), Phase::Idle(1));
    }

    #[test]
    fn an_answer_of_known_length_goes_untouched() {
        let activity = Arc::new(Activity::default());
        let body = TrackedBody::new(Full::new(Bytes::from_static(b"{}")), &activity);
        assert!(matches!(body, TrackedBody::Sized(_)));
        assert_eq!(body.size_hint().exact(), Some(2));
        assert!(!activity.streaming.load(Ordering::Relaxed));
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn wakes(counter: &Arc<Wakes>) -> usize {
        counter.0.load(Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_wakes_the_connection_after_a_re_arm_and_a_change_of_waker() {
        let activity = Arc::new(Activity::default());
        let deadlines = Deadlines {
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
        };
        let start = Instant::now();
        let mut supervised =
            Supervised::new(std::future::pending::<()>(), activity.clone(), deadlines);
        let first = Arc::new(Wakes::default());
        let first_waker = Waker::from(first.clone());
        let mut cx = Context::from_waker(&first_waker);
        assert!(Pin::new(&mut supervised).poll(&mut cx).is_pending());
        // The first response: the idle period's later deadline is left to the timer to find, and
        // the next wake-ups of the connection leave the timer alone.
        activity.answered.fetch_add(1, Ordering::Relaxed);
        assert!(Pin::new(&mut supervised).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut supervised).poll(&mut cx).is_pending());
        // The timer, armed for the header deadline, fires and is moved to the idle one.
        tokio::time::advance(Duration::from_millis(1_100)).await;
        assert_eq!(
            wakes(&first),
            1,
            "the header deadline's timer woke the connection"
        );
        assert!(Pin::new(&mut supervised).poll(&mut cx).is_pending());
        // Polled under another waker: that one is woken on the idle deadline.
        let second = Arc::new(Wakes::default());
        let second_waker = Waker::from(second.clone());
        let mut cx = Context::from_waker(&second_waker);
        assert!(Pin::new(&mut supervised).poll(&mut cx).is_pending());
        tokio::time::advance(Duration::from_millis(8_800)).await;
        assert_eq!(wakes(&second), 0, "nothing before the idle deadline");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(wakes(&second), 1, "the idle deadline woke the latest waker");
        assert_eq!(wakes(&first), 1);
        assert_eq!(
            Pin::new(&mut supervised).poll(&mut cx),
            Poll::Ready(Ended::TimedOut)
        );
        assert!(start.elapsed() >= Duration::from_secs(10));
    }

    /// A body of unknown length whose parts the test hands in through a shared queue.
    struct QueueBody(Arc<Mutex<VecDeque<Bytes>>>);

    impl Body for QueueBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.0.lock().unwrap().pop_front() {
                Some(part) => Poll::Ready(Some(Ok(Frame::data(part)))),
                None => Poll::Pending,
            }
        }
    }
}
