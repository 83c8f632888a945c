//! The clock every rule reads, injected so that the engine, the API's `expires_in`, the read
//! index, the platform's watchdog and the memory store's leases run under a test's fake time.
//!
//! Tokens outlive the process and are shared between instances, so everything planned is in
//! wall-clock [`Timestamp`]s; the only place real time passes is a sleep. The exceptions read the
//! system clock on purpose: the SQLite and Redis stores' leases (other processes share them, so
//! they keep real time), audit records and the request ids in the gateway's error messages.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::token::Timestamp;

/// Tells the hub what time it is.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told: for tests of the engine's rules.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn at(start: Timestamp) -> ManualClock {
        ManualClock {
            now_ms: AtomicI64::new(start.as_millis()),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.now_ms.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now_ms.load(Ordering::SeqCst))
    }
}
