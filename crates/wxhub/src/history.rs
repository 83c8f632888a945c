//! The recent refresh history of one credential: when each refresh finished and how, for the
//! status page's per-credential chart and for operators reading `/v1/credentials`.
//!
//! Bounded twice, so that memory stays flat however often a credential fails and however many
//! credentials there are: entries older than [`WINDOW`] are dropped, and at most [`CAPACITY`]
//! are kept (the oldest go first). An empty history allocates nothing.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use crate::token::Timestamp;

/// How far back the history reaches.
pub const WINDOW: Duration = Duration::from_secs(3600);
/// Most entries kept per credential: one every 30 s over the whole window. A credential retried
/// more often than that (a failure storm) keeps its newest entries.
pub const CAPACITY: usize = 120;

/// One finished refresh, as stored: 24 bytes, so a full history is under 3 KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    /// When the refresh finished.
    at: Timestamp,
    /// How it ended: a refresh outcome name (`ok`, `unchanged`, `config`, `transient`, …), the
    /// same closed set the `wxhub_refreshes_total` metric uses.
    outcome: &'static str,
}

/// One finished refresh as `/v1/credentials` shows it. Never a token value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryPoint {
    /// When the refresh finished (RFC 3339).
    pub at: String,
    /// How it ended (`ok`, `unchanged`, or the failure class).
    pub outcome: &'static str,
}

/// The refreshes of one credential within the last [`WINDOW`], at most [`CAPACITY`], oldest
/// first.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Finished refreshes in the order they were recorded.
    entries: VecDeque<Entry>,
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// Records a refresh that finished at `at` with `outcome`, dropping what fell out of the
    /// window or beyond the capacity.
    pub fn record(&mut self, at: Timestamp, outcome: &'static str) {
        self.prune(at);
        if self.entries.len() == CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry { at, outcome });
    }

    /// The refreshes that finished within [`WINDOW`] before `now`, oldest first.
    pub fn recent(&self, now: Timestamp) -> Vec<HistoryPoint> {
        let since = now.minus(WINDOW);
        self.entries
            .iter()
            .filter(|entry| entry.at >= since)
            .map(|entry| HistoryPoint {
                at: entry.at.to_rfc3339(),
                outcome: entry.outcome,
            })
            .collect()
    }

    /// How many entries are held (some may already be older than the window).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops entries older than [`WINDOW`] before `now`.
    fn prune(&mut self, now: Timestamp) {
        let since = now.minus(WINDOW);
        while self.entries.front().is_some_and(|entry| entry.at < since) {
            self.entries.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp(1_700_000_000_000 + secs * 1000)
    }

    #[test]
    fn keeps_refreshes_oldest_first() {
        let mut history = History::new();
        assert!(history.is_empty());
        history.record(at(0), "ok");
        history.record(at(10), "transient");
        history.record(at(20), "ok");
        let recent = history.recent(at(30));
        let outcomes: Vec<_> = recent.iter().map(|p| p.outcome).collect();
        assert_eq!(outcomes, ["ok", "transient", "ok"]);
        assert_eq!(recent[0].at, at(0).to_rfc3339());
        assert_eq!(recent[2].at, at(20).to_rfc3339());
    }

    #[test]
    fn forgets_what_is_older_than_the_window() {
        let mut history = History::new();
        history.record(at(0), "ok");
        history.record(at(1800), "unchanged");
        // Reading hides the old entry at once, before any new record prunes it.
        let recent = history.recent(at(3601));
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].outcome, "unchanged");
        assert_eq!(history.len(), 2);
        // Recording drops it.
        history.record(at(3700), "ok");
        assert_eq!(history.len(), 2);
        assert_eq!(history.recent(at(3700))[0].outcome, "unchanged");
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        let mut history = History::new();
        for i in 0..(CAPACITY as i64 * 3) {
            history.record(at(i), if i % 2 == 0 { "ok" } else { "config" });
        }
        assert_eq!(history.len(), CAPACITY);
        let recent = history.recent(at(CAPACITY as i64 * 3));
        assert_eq!(recent.len(), CAPACITY);
        // The newest entries are the ones kept.
        assert_eq!(
            recent.last().map(|p| p.at.clone()),
            Some(at(CAPACITY as i64 * 3 - 1).to_rfc3339())
        );
        assert_eq!(recent[0].at, at(CAPACITY as i64 * 2).to_rfc3339());
    }

    #[test]
    fn an_entry_is_small() {
        assert_eq!(std::mem::size_of::<Entry>(), 24);
    }
}
