//! How many credentials are in each (kind, state), kept as entries change rather than counted per
//! scrape: with 100,000 authorizers a count by walking every entry under the engine lock took
//! hundreds of milliseconds per `/metrics` scrape and held every refresh up meanwhile
//! (docs/architecture.md#observability).
//!
//! Each [`super::state::Entry`] holds the tally and moves itself from one count to another whenever
//! the state it shows changes, and takes itself out when dropped, so a count can never outlive
//! its entry. The tally has its own short lock: a scrape reads a handful of numbers without the
//! engine's.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::state::Status;

/// Credentials by (kind name, state shown to operators).
#[derive(Default)]
pub struct StatusTally {
    /// The counts. A `BTreeMap` so that a scrape renders them in a stable order; it holds a few
    /// dozen keys at most (kinds × states), whatever the number of credentials.
    counts: Mutex<BTreeMap<(&'static str, Status), u64>>,
}

impl StatusTally {
    /// Counts one more credential of `kind` in `status`.
    pub fn enter(&self, kind: &'static str, status: Status) {
        *self.lock().entry((kind, status)).or_default() += 1;
    }

    /// Counts one credential of `kind` fewer in `status`.
    pub fn leave(&self, kind: &'static str, status: Status) {
        take_one(&mut self.lock(), kind, status);
    }

    /// Moves one credential of `kind` from `from` to `to`, under one turn of the lock.
    pub fn shift(&self, kind: &'static str, from: Status, to: Status) {
        if from != to {
            let mut counts = self.lock();
            take_one(&mut counts, kind, from);
            *counts.entry((kind, to)).or_default() += 1;
        }
    }

    /// A copy of every non-zero count, in (kind, state) order.
    pub fn snapshot(&self) -> BTreeMap<(&'static str, Status), u64> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(&'static str, Status), u64>> {
        // Only counts live here: a panic elsewhere while it was held leaves them usable.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Takes one from the count of (`kind`, `status`), dropping a count that reaches zero.
fn take_one(
    counts: &mut BTreeMap<(&'static str, Status), u64>,
    kind: &'static str,
    status: Status,
) {
    if let Some(n) = counts.get_mut(&(kind, status)) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(&(kind, status));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_entries_in_and_out() {
        let tally = StatusTally::default();
        tally.enter("access_token", Status::Pending);
        tally.enter("access_token", Status::Pending);
        tally.shift("access_token", Status::Pending, Status::Fresh);
        tally.shift("access_token", Status::Fresh, Status::Fresh);
        let counts = tally.snapshot();
        assert_eq!(counts.get(&("access_token", Status::Pending)), Some(&1));
        assert_eq!(counts.get(&("access_token", Status::Fresh)), Some(&1));
        tally.leave("access_token", Status::Fresh);
        tally.leave("access_token", Status::Pending);
        assert!(
            tally.snapshot().is_empty(),
            "a state nobody is in is not rendered"
        );
    }
}
