//! Other processes' writes to the same SQLite file, seen and put on this store's change feed.
//!
//! Several processes may open one file (an old and a new hub during a restart). SQLite tells
//! nobody of another connection's commit, so a thread polls `PRAGMA data_version` (which changes
//! only when another connection commits, so an idle check costs next to nothing) and publishes
//! every row whose generation is above what this process already published: each change reaches
//! subscribers once, whichever process wrote it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{mpsc, Weak};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Row};
use tokio::sync::broadcast;

use super::codec::{key_text, read_token};
use super::writer::{Db, Shared};
use super::OpError;
use crate::kinds::CredentialKey;
use crate::store::{Change, StoreError};

/// How often the store checks the file for writes made by other processes, to publish them on
/// its change feed. A check that finds nothing new costs one `PRAGMA data_version`.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// The generation of every stored row, by storage key (whatever the key's form).
fn stored_generations(conn: &Connection) -> rusqlite::Result<HashMap<String, u64>> {
    let mut stmt = conn.prepare("SELECT storage_key, generation FROM credentials")?;
    let mut rows = stmt.query([])?;
    let mut generations = HashMap::new();
    while let Some(row) = rows.next()? {
        generations.insert(key_text(row.get_ref(0)?), row_generation(row, 1));
    }
    Ok(generations)
}

/// The read of what was present at open, as its thread answers it.
type AtOpen = mpsc::Receiver<rusqlite::Result<HashMap<String, u64>>>;

/// The highest generation of each storage key already published, or present when the store was
/// opened: the watcher publishes only rows above it.
///
/// In WAL mode what was present at open is read from a snapshot pinned at open, on a thread of
/// its own: at 100,000 authorizers the read takes a fifth of a second, which a start would
/// otherwise spend before it can load anything. Nothing waits for it: this process's own writes
/// meanwhile are noted beside it and laid over it when it arrives, and the watcher leaves other
/// processes' writes for a later look until then (they are published then, none lost).
pub(super) enum Published {
    /// What was present at open is not in yet.
    Reading {
        /// Its read; `None` once the read failed and is to be made again on the store's
        /// connection.
        at_open: Option<AtOpen>,
        /// This process's writes since open, by storage key: the generation published, or
        /// `None` for a deleted row.
        since_open: HashMap<String, Option<u64>>,
    },
    /// The generations.
    Known(HashMap<String, u64>),
}

impl Published {
    /// What is present now, in WAL mode read through a second connection to `path` whose read
    /// transaction is open when this returns (the read sees the file as it is at this moment,
    /// whatever is committed while it runs). Without WAL a reader would hold off every write
    /// until it is done, so the rows are read on `conn` before this returns.
    pub(super) fn read_at_open(
        path: &Path,
        wal: bool,
        conn: &Connection,
    ) -> Result<Published, OpError> {
        if !wal {
            return Ok(Published::Known(stored_generations(conn)?));
        }
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        reader.busy_timeout(super::file::BUSY_TIMEOUT)?;
        reader.execute_batch("BEGIN DEFERRED")?;
        // A deferred transaction takes its snapshot at its first read.
        reader.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
        let (sender, at_open) = mpsc::sync_channel(1);
        #[cfg(test)]
        let held = hold::take(path);
        std::thread::Builder::new()
            .name("wxhub-sqlite-open".into())
            .spawn(move || {
                #[cfg(test)]
                if let Some(held) = held {
                    let _ = held.recv();
                }
                let read = stored_generations(&reader);
                // Ends the read transaction: a reader left open would hold back checkpoints.
                drop(reader);
                let _ = sender.send(read);
            })
            .map_err(|e| {
                OpError::Store(StoreError::Unavailable(format!(
                    "cannot start the thread that reads the stored rows: {e}"
                )))
            })?;
        Ok(Published::reading(at_open))
    }

    /// Waiting for `at_open`, with no write yet.
    fn reading(at_open: AtOpen) -> Published {
        Published::Reading {
            at_open: Some(at_open),
            since_open: HashMap::new(),
        }
    }

    /// Notes that this process published generation `generation` of `storage_key` (`None`: it
    /// deleted the row).
    pub(super) fn record(&mut self, storage_key: String, generation: Option<u64>) {
        match (self, generation) {
            (Published::Reading { since_open, .. }, _) => {
                since_open.insert(storage_key, generation);
            }
            (Published::Known(generations), Some(generation)) => {
                generations.insert(storage_key, generation);
            }
            (Published::Known(generations), None) => {
                generations.remove(&storage_key);
            }
        }
    }

    /// The generations, if what was present at open is in (or, its read having failed, could
    /// be read again on `conn` now: later commits of other processes then count as present at
    /// open and are not published); `None` while the read at open is still running.
    fn ready(&mut self, conn: &Connection) -> rusqlite::Result<Option<&mut HashMap<String, u64>>> {
        if let Published::Reading {
            at_open,
            since_open,
        } = self
        {
            let read = match at_open.as_ref().map(mpsc::Receiver::try_recv) {
                Some(Err(mpsc::TryRecvError::Empty)) => return Ok(None),
                Some(Ok(Ok(generations))) => Ok(generations),
                Some(Ok(Err(e))) => Err(e.to_string()),
                Some(Err(mpsc::TryRecvError::Disconnected)) => Err("its thread stopped".to_owned()),
                None => Err("it failed before".to_owned()),
            };
            let mut generations = match read {
                Ok(generations) => generations,
                Err(why) => {
                    if at_open.take().is_some() {
                        tracing::warn!(error = %why, "SQLite store: reading the stored rows at open failed; reading them again");
                    }
                    stored_generations(conn)?
                }
            };
            for (storage_key, generation) in since_open.drain() {
                match generation {
                    Some(generation) => generations.insert(storage_key, generation),
                    None => generations.remove(&storage_key),
                };
            }
            *self = Published::Known(generations);
        }
        match self {
            Published::Known(generations) => Ok(Some(generations)),
            Published::Reading { .. } => Ok(None),
        }
    }
}

/// Tests: holding the read at open of one file until the test lets it go, to write meanwhile.
#[cfg(test)]
pub(super) mod hold {
    use std::path::{Path, PathBuf};
    use std::sync::{mpsc, Mutex};

    /// The files whose read at open waits, each until its sender is used or dropped.
    static HELD: Mutex<Vec<(PathBuf, mpsc::Receiver<()>)>> = Mutex::new(Vec::new());

    /// Makes the next read at open of `path` wait until the returned sender sends or is dropped.
    pub fn next_read_of(path: &Path) -> mpsc::Sender<()> {
        let (release, held) = mpsc::channel();
        let mut all = HELD.lock().unwrap_or_else(|p| p.into_inner());
        all.push((path.to_owned(), held));
        release
    }

    /// The hold on `path`'s next read, if a test asked for one.
    pub(super) fn take(path: &Path) -> Option<mpsc::Receiver<()>> {
        let mut all = HELD.lock().unwrap_or_else(|p| p.into_inner());
        let at = all.iter().position(|(p, _)| p == path)?;
        Some(all.remove(at).1)
    }
}

/// The generation in column `index` for change tracking; [`u64::MAX`] if unreadable, so that an
/// unreadable row counts as already seen once it has been reported.
fn row_generation(row: &Row<'_>, index: usize) -> u64 {
    row.get::<_, i64>(index)
        .ok()
        .and_then(|g| u64::try_from(g).ok())
        .unwrap_or(u64::MAX)
}

/// A counter that changes whenever another connection commits to the file.
pub(super) fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "data_version", |r| r.get(0))
}

impl Db {
    /// Publishes the rows other processes wrote since the last look, once each.
    fn publish_foreign_changes(
        &mut self,
        changes: &broadcast::Sender<Change>,
    ) -> Result<(), OpError> {
        let version = data_version(&self.conn)?;
        if version == self.data_version {
            return Ok(());
        }
        let Db {
            conn, published, ..
        } = self;
        let Some(published) = published.ready(conn)? else {
            // What was present at open is not in yet: look again next time, at the same version.
            return Ok(());
        };
        let mut newer = Vec::new();
        {
            let mut stmt =
                conn.prepare_cached("SELECT storage_key, generation FROM credentials")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let key = key_text(row.get_ref(0)?);
                let seen = published.get(&key).copied().unwrap_or(0);
                if row_generation(row, 1) > seen {
                    newer.push(key);
                }
            }
        }
        for storage_key in newer {
            let token = match storage_key.parse::<CredentialKey>() {
                Err(e) => Err(StoreError::Corrupt(format!(
                    "credential row {storage_key:?}: {e}"
                ))),
                Ok(key) => match read_token(conn, &storage_key) {
                    Ok(Some(token)) => Ok((key, token)),
                    Ok(None) => continue,
                    Err(OpError::Db(e)) => return Err(OpError::Db(e)),
                    Err(OpError::Store(e)) => Err(e),
                },
            };
            match token {
                Ok((key, token)) => {
                    published.insert(storage_key, token.generation);
                    let _ = changes.send(Change { key, token });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "SQLite store: ignoring an unreadable credential row written by another process");
                    // Remember it so that the warning is not repeated on every later change.
                    published.insert(storage_key, u64::MAX);
                }
            }
        }
        self.data_version = version;
        Ok(())
    }
}

/// The watcher thread: every [`WATCH_INTERVAL`], publishes other processes' writes, until the
/// store is dropped. Logs a failure once when it starts and once when it ends, not every tick.
pub(super) fn watch(shared: Weak<Shared>, stop: mpsc::Receiver<()>) {
    let mut failing = false;
    loop {
        match stop.recv_timeout(WATCH_INTERVAL) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let result = shared.lock().publish_foreign_changes(&shared.changes);
        match result {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("SQLite store: watching for other processes' writes again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                let e = e.into_store_error("watching for other processes' writes");
                tracing::warn!(error = %e, "SQLite store: cannot read other processes' writes");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Published` whose read at open answers through the returned sender.
    fn pending() -> (
        mpsc::SyncSender<rusqlite::Result<HashMap<String, u64>>>,
        Published,
    ) {
        let (sender, at_open) = mpsc::sync_channel(1);
        (sender, Published::reading(at_open))
    }

    #[test]
    fn own_writes_before_the_read_at_open_arrives_are_laid_over_it() {
        let conn = Connection::open_in_memory().expect("open");
        let (sender, mut published) = pending();
        published.record("k1".into(), Some(5));
        published.record("k2".into(), None);
        assert!(
            published.ready(&conn).expect("ready").is_none(),
            "still reading"
        );
        let at_open = HashMap::from([("k1".into(), 3), ("k2".into(), 4), ("k3".into(), 7)]);
        sender.send(Ok(at_open)).expect("send");
        let generations = published.ready(&conn).expect("ready").expect("in");
        assert_eq!(
            *generations,
            HashMap::from([("k1".to_string(), 5), ("k3".to_string(), 7)])
        );
        published.record("k4".into(), Some(1));
        published.record("k3".into(), None);
        let generations = published.ready(&conn).expect("ready").expect("in");
        assert_eq!(
            *generations,
            HashMap::from([("k1".to_string(), 5), ("k4".to_string(), 1)])
        );
    }

    #[test]
    fn a_failed_read_at_open_is_made_again_until_it_succeeds() {
        let conn = Connection::open_in_memory().expect("open");
        let (sender, mut published) = pending();
        sender
            .send(Err(rusqlite::Error::InvalidQuery))
            .expect("send");
        published.record("k1".into(), Some(5));
        assert!(
            published.ready(&conn).is_err(),
            "no table yet: reading again fails too"
        );
        conn.execute_batch(
            "CREATE TABLE credentials (storage_key TEXT PRIMARY KEY, generation INTEGER);
             INSERT INTO credentials VALUES ('k1', 3), ('k3', 7);",
        )
        .expect("schema");
        let generations = published.ready(&conn).expect("ready").expect("in");
        assert_eq!(
            *generations,
            HashMap::from([("k1".to_string(), 5), ("k3".to_string(), 7)])
        );
    }
}
