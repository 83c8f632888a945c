//! SQLite store: the embedded single-node default.
//!
//! One file holds every token and lease. It is the durable home of the authorizer refresh tokens
//! (which cannot be re-created without the account owner), so no write of a token, an account or
//! a force budget is reported as applied before it is on disk.
//!
//! Durability is paid per batch, not per write (group commit). In WAL mode the connection runs
//! with `synchronous=NORMAL`: a commit appends its frames to the `-wal` file without waiting for
//! the disk. The one database thread runs every queued operation in turn and then, if any of them
//! was a durable write, syncs the `-wal` file once (`fsync`, which covers every frame appended
//! before it) and only then answers those writes. A cold start or an authorizer recovery queues
//! dozens of writes at once, so one sync serves all of them instead of one each; a lone write
//! costs what `synchronous=FULL` would. Reads and leases (a coordination hint with a TTL, not
//! worth a sync) are answered as soon as they ran. Without WAL (a filesystem without shared
//! memory) the connection falls back to `synchronous=FULL`, which syncs every commit itself.
//!
//! Several processes may open the same file (for instance an old and a new hub during a restart):
//! compare-and-set and lease acquisition are single SQLite write transactions, so they cannot both
//! win, and each store watches the file for the other processes' writes to feed its change feed.
//!
//! rusqlite is blocking, so every operation is queued to that database thread, which owns the
//! turn on the one connection (behind a mutex it shares with the watcher thread); async callers
//! never block a runtime worker on disk I/O or on another process's write lock.
//!
//! The pieces, one concern a file: this module opens the store; [`writer`] is the database thread
//! and its group commit; [`file`](mod@file) makes the file private, configures the connection
//! and creates or checks the schema; [`watcher`] publishes other processes' writes; [`codec`]
//! reads rows back as tokens; [`operations`] implements the [`Store`](super::Store) contract on
//! all of it.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc, Mutex};

use rusqlite::{Connection, ErrorCode};
use tokio::sync::broadcast;

use super::{StoreError, CHANGE_FEED_CAPACITY};

mod codec;
mod file;
mod operations;
mod watcher;
mod writer;

pub use file::{APPLICATION_ID, SCHEMA_VERSION};

use file::{configure, create_private_file, make_private, migrate, wal_path};
use watcher::{data_version, watch, Published};
use writer::{serve, Db, Operation, Shared};

/// A [`Store`](super::Store) in one SQLite file.
///
/// Rows that cannot be read back (a storage key that does not parse, a value of the wrong type,
/// a generation below 1) are never silently overwritten:
/// [`Store::get`](super::Store::get) and
/// [`Store::compare_and_set`](super::Store::compare_and_set) on such a key fail with
/// [`StoreError::Corrupt`] naming the key (never the value), while
/// [`Store::load_all`](super::Store::load_all) **skips** them with a `tracing` warning, so one
/// damaged row cannot stop the hub from serving every other credential.
pub struct SqliteStore {
    /// The connection and the change feed, shared with in-flight blocking tasks and the watcher.
    shared: Arc<Shared>,
    /// The file, for messages.
    path: PathBuf,
    /// The database thread's queue; dropping it (with the store) lets the thread finish what is
    /// queued and stop.
    queue: mpsc::Sender<Operation>,
    /// Dropping this (with the store) stops the watcher thread at once.
    _stop_watcher: mpsc::Sender<()>,
}

/// An operation's failure before it is given its context (which operation, which key).
enum OpError {
    /// SQLite refused or failed.
    Db(rusqlite::Error),
    /// Already a store error (a corrupt row).
    Store(StoreError),
}

impl From<rusqlite::Error> for OpError {
    fn from(e: rusqlite::Error) -> Self {
        OpError::Db(e)
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Store(e)
    }
}

impl OpError {
    /// The store error for operation `what`. SQLite's messages never contain bound values, so no
    /// token value can leak through them.
    fn into_store_error(self, what: &str) -> StoreError {
        match self {
            OpError::Store(e) => e,
            OpError::Db(e) => db_error(what, e),
        }
    }
}

/// Classifies a SQLite error: unreadable files are [`StoreError::Corrupt`], everything else
/// (locked, I/O, full disk, …) [`StoreError::Unavailable`] and worth retrying.
fn db_error(what: &str, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            StoreError::Corrupt(format!("{what}: {e}"))
        }
        _ => StoreError::Unavailable(format!("{what}: {e}")),
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path`, creating or checking its schema.
    ///
    /// A new file is created readable by its owner only (it holds secrets). Fails with
    /// [`StoreError::Corrupt`] if the file is not a SQLite database, belongs to another
    /// application or was written by a newer schema version, and with
    /// [`StoreError::Unavailable`] if it cannot be opened (missing directory, permissions, a
    /// lock held too long).
    ///
    /// This blocks on disk I/O (and on another process's write lock for up to a few seconds):
    /// call it at startup, or from `spawn_blocking` when a runtime worker must not wait.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let at = |what: &str| format!("{what} {}", path.display());
        create_private_file(path)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", at("creating"))))?;
        make_private(path)?;
        let mut conn = Connection::open(path).map_err(|e| db_error(&at("opening"), e))?;
        let wal = configure(&conn).map_err(|e| db_error(&at("configuring"), e))?;
        // WAL mode is on now: its `-wal` and `-shm` files exist, possibly from an earlier run.
        make_private(path)?;
        migrate(&mut conn, path).map_err(|e| e.into_store_error(&at("preparing the schema of")))?;
        // The version first: a commit between the two is then in the rows read as present at
        // open, and also moves the version, so the watcher looks once more and finds nothing new.
        let data_version = data_version(&conn).map_err(|e| db_error(&at("reading"), e))?;
        let published = Published::read_at_open(path, wal, &conn)
            .map_err(|e| e.into_store_error(&at("reading")))?;

        let (changes, _) = broadcast::channel(CHANGE_FEED_CAPACITY);
        let (accounts, _) = broadcast::channel(CHANGE_FEED_CAPACITY);
        let shared = Arc::new(Shared {
            db: Mutex::new(Db {
                conn,
                published,
                data_version,
            }),
            changes,
            accounts,
            wal: wal.then(|| wal_path(path)),
            syncs: AtomicU64::new(0),
        });
        let (queue, queued) = mpsc::channel();
        let serving = shared.clone();
        std::thread::Builder::new()
            .name("wxhub-sqlite".into())
            .spawn(move || serve(serving, queued))
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "{}: cannot start the database thread: {e}",
                    at("opening")
                ))
            })?;
        let (stop_watcher, stop) = mpsc::channel();
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("wxhub-sqlite-watch".into())
            .spawn(move || watch(weak, stop))
            .map_err(|e| {
                StoreError::Unavailable(format!("{}: cannot start the watcher: {e}", at("opening")))
            })?;

        Ok(SqliteStore {
            shared,
            path: path.to_owned(),
            queue,
            _stop_watcher: stop_watcher,
        })
    }

    /// The database file this store was opened on (for logs and `check-config`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests;
