//! One connection's deadlines: how long a client may take to send a request's headers, and how
//! long a kept-alive connection may sit idle.
//!
//! hyper's own header-read timeout runs from the moment a connection waits for a request, so it
//! cannot tell a slow client from an idle kept-alive one. Here three things share one
//! [`Activity`]: the socket ([`Watched`], which notes that bytes arrived), the service
//! ([`Tracked`], which notes that a request is being answered and when it was), and the
//! [`Supervised`] connection, which derives the current phase from them and enforces its
//! deadline:
//! - first request: its headers within `header_read_timeout` of the connection's start;
//! - busy: no deadline here (the request timeout bounds the handlers);
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
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The timeouts every connection is held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// See [`crate::configuration::ServerSettings::header_read_timeout`].
    pub header_read_timeout: Duration,
    /// See [`crate::configuration::ServerSettings::idle_timeout`].
    pub idle_timeout: Duration,
}

/// What one connection is doing, as its socket and its service see it.
#[derive(Default)]
pub struct Activity {
    /// A request has been handed to the service and not yet answered.
    busy: AtomicBool,
    /// Responses produced so far: a change starts an idle period.
    answered: AtomicU64,
    /// Bytes arrived since the last response: the next request has begun.
    reading: AtomicBool,
}

/// The phase a connection is in; a change of phase restarts its clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first request's headers.
    First,
    /// A request is being answered.
    Busy,
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

impl<F: Future + Unpin> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let answered = Pin::new(&mut self.answer).poll(cx);
        if answered.is_ready() {
            let activity = &self.activity;
            activity.reading.store(false, Ordering::Relaxed);
            activity.answered.fetch_add(1, Ordering::Relaxed);
            activity.busy.store(false, Ordering::Relaxed);
        }
        answered
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
    /// When the current phase must end (`None` while busy).
    deadline: Option<Instant>,
    /// A timer that fires at or before `deadline`. It is moved only to an earlier instant: a
    /// later deadline (the next idle period, after every response) is left to the timer to find
    /// when it fires, so that a request costs no timer update in the common case.
    timer: Pin<Box<Sleep>>,
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
            deadline: Some(deadline),
            timer: Box::pin(tokio::time::sleep_until(deadline)),
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
            Phase::Busy => None,
            Phase::First | Phase::Reading(_) => Some(self.deadlines.header_read_timeout),
            Phase::Idle(_) => Some(self.deadlines.idle_timeout),
        };
        self.deadline = allowed.map(|allowed| Instant::now() + allowed);
        if let Some(deadline) = self.deadline {
            if deadline < self.timer.deadline() || self.timer.is_elapsed() {
                self.timer.as_mut().reset(deadline);
            }
        }
    }
}

impl<C: Future> Future for Supervised<C> {
    type Output = Ended;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        if self.connection.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ended::Finished);
        }
        self.follow_phase();
        while let Some(deadline) = self.deadline {
            if self.timer.as_mut().poll(cx).is_pending() {
                break;
            }
            if Instant::now() >= deadline {
                return Poll::Ready(Ended::TimedOut);
            }
            // The timer was set for an earlier phase: move it to this one's deadline.
            self.timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phase_follows_reads_and_answers() {
        let activity = Arc::new(Activity::default());
        assert_eq!(activity.phase(), Phase::First);
        activity.reading.store(true, Ordering::Relaxed);
        assert_eq!(activity.phase(), Phase::First);
        let tracked = Tracked::new(std::future::ready(()), activity.clone());
        assert_eq!(activity.phase(), Phase::Busy);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut tracked = tracked;
        assert!(Pin::new(&mut tracked).poll(&mut cx).is_ready());
        assert_eq!(activity.phase(), Phase::Idle(1));
        activity.reading.store(true, Ordering::Relaxed);
        assert_eq!(activity.phase(), Phase::Reading(1));
    }
}
