//! The local cache: each value until its `expires_in` runs out, and one lock per credential so
//! that concurrent readers of a missing value make one request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use wxhub_types::TokenAnswer;

/// One cached value.
struct Entry {
    value: String,
    generation: u64,
    /// When the hub said to ask again.
    until: Instant,
}

/// Values by credential key, and the single-flight locks.
#[derive(Default)]
pub(crate) struct Cache {
    entries: Mutex<HashMap<String, Entry>>,
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    /// The value of `key`, if still within its `expires_in`.
    pub fn get(&self, key: &str) -> Option<String> {
        let entries = lock(&self.entries);
        let entry = entries.get(key)?;
        (entry.until > Instant::now()).then(|| entry.value.clone())
    }

    /// Keeps `answer` for its `expires_in` (a zero means "do not reuse": nothing is kept).
    pub fn store(&self, key: &str, answer: &TokenAnswer) {
        self.put(
            key,
            &answer.access_token,
            answer.generation,
            answer.expires_in,
        );
    }

    /// Keeps `value` of `generation` for `expires_in` seconds, unless a newer generation is held.
    pub fn put(&self, key: &str, value: &str, generation: u64, expires_in: u64) {
        let mut entries = lock(&self.entries);
        if entries.get(key).is_some_and(|e| e.generation > generation) {
            return;
        }
        if expires_in == 0 {
            entries.remove(key);
            return;
        }
        entries.insert(
            key.to_string(),
            Entry {
                value: value.to_string(),
                generation,
                until: Instant::now() + Duration::from_secs(expires_in),
            },
        );
    }

    /// Drops `key` if it still holds `value` (reported dead).
    pub fn forget_if(&self, key: &str, value: &str) {
        let mut entries = lock(&self.entries);
        if entries.get(key).is_some_and(|e| e.value == value) {
            entries.remove(key);
        }
    }

    /// Drops `key` if it holds a generation older than `generation` (a newer one exists, but its
    /// value was not sent).
    pub fn forget_older(&self, key: &str, generation: u64) {
        let mut entries = lock(&self.entries);
        if entries.get(key).is_some_and(|e| e.generation < generation) {
            entries.remove(key);
        }
    }

    /// The lock one reader of `key` holds while it asks the hub.
    pub fn flight(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.flights)
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    /// The generation held for `key`, if any.
    #[cfg(test)]
    pub fn generation(&self, key: &str) -> Option<u64> {
        lock(&self.entries).get(key).map(|e| e.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_generation_and_honours_zero_lifetimes() {
        let cache = Cache::default();
        cache.put("k", "v2", 2, 60);
        cache.put("k", "v1", 1, 60);
        assert_eq!(cache.get("k").as_deref(), Some("v2"));
        cache.put("k", "v3", 3, 0);
        assert_eq!(cache.get("k"), None);
        cache.put("k", "v4", 4, 60);
        cache.forget_if("k", "v3");
        assert_eq!(cache.generation("k"), Some(4));
        cache.forget_if("k", "v4");
        assert_eq!(cache.get("k"), None);
    }
}
