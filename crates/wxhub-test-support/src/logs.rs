//! The hub's log lines, captured so that a test can show that a secret never reaches them.
//!
//! The capture is the thread's default subscriber, not a global one: under `#[tokio::test]`'s
//! current-thread runtime the hub's tasks run on the test's thread, so one test's capture holds
//! that test's hub and nothing of the tests running beside it.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing::subscriber::DefaultGuard;
use tracing_subscriber::fmt::MakeWriter;

/// Every event of the hub's own targets, at every level, from [`Logs::capture`] until dropped.
pub struct Logs {
    /// The formatted lines so far.
    lines: Arc<Mutex<Vec<u8>>>,
    /// Keeps the capture installed on this thread.
    _guard: DefaultGuard,
}

/// Appends what the formatter writes to the shared buffer.
#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = Sink;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Logs {
    /// Starts capturing the events of `wxhub` (the hub) at trace level on this thread. Start it
    /// before the hub so that its start is captured too.
    pub fn capture() -> Logs {
        let lines: Arc<Mutex<Vec<u8>>> = Arc::default();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("wxhub=trace")
            .with_ansi(false)
            .with_writer(Sink(lines.clone()))
            .finish();
        Logs {
            lines,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        let lines = self
            .lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        String::from_utf8_lossy(&lines).into_owned()
    }
}
