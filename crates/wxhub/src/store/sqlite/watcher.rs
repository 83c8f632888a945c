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

/// Makes the calling thread yield the CPU to every other thread of normal priority (Linux: the
/// nice value is per thread); elsewhere it does nothing.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority takes no pointers; `who = 0` is the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

/// The highest generation of each storage key already published, or present when the store was
/// opened: the watcher publishes only rows above it.
///
/// What was present at open is read from a snapshot pinned at open, on a thread of its own: at
/// 100,000 authorizers the read takes a fifth of a second, which a start would otherwise spend
/// before it can load anything. Whoever needs the generations first waits for that read.
pub(super) struct Published {
    /// The read of what was present at open, until it has been taken in.
    at_open: Option<mpsc::Receiver<rusqlite::Result<HashMap<String, u64>>>>,
    /// The generations, once `at_open` is in.
    generations: HashMap<String, u64>,
}

impl Published {
    /// Starts reading the generation of every row as they are now, through a second connection
    /// to `path`: its read transaction is open when this returns, so the read sees the file as
    /// it is at this moment, whatever is committed while it runs.
    pub(super) fn read_at_open(path: &Path) -> rusqlite::Result<Published> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(super::file::BUSY_TIMEOUT)?;
        conn.execute_batch("BEGIN DEFERRED")?;
        // A deferred transaction takes its snapshot at its first read.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
        let (sender, at_open) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("wxhub-sqlite-open".into())
            .spawn(move || {
                // Runs on what the start leaves idle: nothing waits for it before the first
                // write, and the start's own reads and registering are busy on the cores.
                lower_priority();
                let read = stored_generations(&conn);
                // Ends the read transaction: a reader left open would hold back checkpoints.
                drop(conn);
                let _ = sender.send(read);
            })
            .map_err(|e| {
                rusqlite::Error::ToSqlConversionFailure(
                    format!("cannot start the thread that reads the stored rows: {e}").into(),
                )
            })?;
        Ok(Published {
            at_open: Some(at_open),
            generations: HashMap::new(),
        })
    }

    /// The generations, after waiting for the read of what was present at open. If that read
    /// failed it is made again on `conn` (which then sees later commits as present at open: at
    /// worst, one foreign write is not published).
    pub(super) fn settled(
        &mut self,
        conn: &Connection,
    ) -> rusqlite::Result<&mut HashMap<String, u64>> {
        if let Some(at_open) = self.at_open.take() {
            let read = at_open.recv().unwrap_or_else(|_| {
                Err(rusqlite::Error::ToSqlConversionFailure(
                    "the thread that read the stored rows stopped".into(),
                ))
            });
            self.generations = match read {
                Ok(generations) => generations,
                Err(e) => {
                    tracing::warn!(error = %e, "SQLite store: reading the stored rows at open failed; read again");
                    stored_generations(conn)?
                }
            };
        }
        Ok(&mut self.generations)
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
        let mut newer = Vec::new();
        {
            let published = self.published.settled(&self.conn)?;
            let mut stmt = self
                .conn
                .prepare_cached("SELECT storage_key, generation FROM credentials")?;
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
                Ok(key) => match read_token(&self.conn, &storage_key) {
                    Ok(Some(token)) => Ok((key, token)),
                    Ok(None) => continue,
                    Err(OpError::Db(e)) => return Err(OpError::Db(e)),
                    Err(OpError::Store(e)) => Err(e),
                },
            };
            match token {
                Ok((key, token)) => {
                    self.published
                        .settled(&self.conn)?
                        .insert(storage_key, token.generation);
                    let _ = changes.send(Change { key, token });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "SQLite store: ignoring an unreadable credential row written by another process");
                    // Remember it so that the warning is not repeated on every later change.
                    self.published
                        .settled(&self.conn)?
                        .insert(storage_key, u64::MAX);
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
