//! The SQLite store's database thread and its group commit.
//!
//! rusqlite is blocking, so every operation is queued to one thread that owns the turn on the
//! one connection; async callers never block a runtime worker on disk I/O or on another
//! process's write lock. The thread is also where durability is paid for: it runs what is
//! queued, then syncs the `-wal` file once for every durable write among them and only then
//! answers those writes (see the [module docs](super) for why one sync per batch is as safe as one
//! per write). [`Shared`] is what that thread, the watcher thread and the store hold in common.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use rusqlite::Connection;
use tokio::sync::{broadcast, oneshot};

use super::watcher::Published;
use super::{OpError, SqliteStore};
use crate::store::{AccountChange, Change, StoreError, StoreFuture};

/// The most operations the database thread runs before it syncs and answers the durable writes
/// among them: bounds how long the first of a long queue waits for its answer.
const MAX_BATCH: usize = 256;

/// One queued operation, run on the database thread. It answers its caller itself, unless it is
/// a durable write that succeeded: then it returns how to answer once the batch is synced.
pub(super) type Operation = Box<dyn FnOnce(&Shared) -> Option<AfterSync> + Send>;

/// Answers a durable write with the outcome of its batch's sync (`Err` carries the reason).
type AfterSync = Box<dyn FnOnce(Result<(), String>) + Send>;

/// What the blocking tasks and the watcher thread share with the store.
pub(super) struct Shared {
    /// The one connection; a mutex serialises this process's operations on it.
    pub(super) db: Mutex<Db>,
    /// The change feed: this process's own writes and, via the watcher, other processes' writes.
    pub(super) changes: broadcast::Sender<Change>,
    /// The account feed: this process's account writes (one process owns a SQLite file's
    /// accounts; other processes sharing the file see them at their next start).
    pub(super) accounts: broadcast::Sender<AccountChange>,
    /// The `-wal` file that a batch's sync flushes; `None` when the file is not in WAL mode and
    /// every commit is synced by SQLite itself (`synchronous=FULL`).
    pub(super) wal: Option<PathBuf>,
    /// How many batch syncs have run (for the tests of group commit).
    pub(super) syncs: AtomicU64,
}

impl Shared {
    /// Locks the connection. A panic while it was held cannot leave a transaction open (rusqlite
    /// rolls back a dropped transaction), so a poisoned lock is taken over rather than failing
    /// every later operation.
    pub(super) fn lock(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every commit so far durable: one `fsync` of the `-wal` file, which holds each
    /// committed frame not yet checkpointed (a checkpoint syncs what it copies by itself).
    fn sync(&self) -> Result<(), String> {
        let Some(wal) = &self.wal else {
            return Ok(());
        };
        self.syncs.fetch_add(1, Ordering::Relaxed);
        std::fs::OpenOptions::new()
            .write(true)
            .open(wal)
            .and_then(|file| file.sync_data())
            .map_err(|e| format!("syncing {} to disk: {e}", wal.display()))
    }
}

/// The database thread: runs queued operations in turn, then syncs once for the durable writes
/// among them and answers those. Stops when the store (the queue's sender) is dropped.
pub(super) fn serve(shared: Arc<Shared>, queue: mpsc::Receiver<Operation>) {
    while let Ok(first) = queue.recv() {
        let mut waiting = Vec::new();
        let mut next = Some(first);
        let mut ran = 0;
        while let Some(operation) = next {
            if let Some(after) = operation(&shared) {
                waiting.push(after);
            }
            ran += 1;
            next = if ran < MAX_BATCH {
                queue.try_recv().ok()
            } else {
                None
            };
        }
        if !waiting.is_empty() {
            let synced = shared.sync();
            if let Err(e) = &synced {
                tracing::error!(error = %e, "SQLite store: the disk sync failed; the writes it covered are reported as failed");
            }
            for after in waiting {
                after(synced.clone());
            }
        }
    }
}

/// The connection and the bookkeeping that keeps the change feed free of duplicates.
pub(super) struct Db {
    /// The open database.
    pub(super) conn: Connection,
    /// The highest generation of each storage key already published (or present at open): the
    /// watcher publishes only rows above it, so a change reaches subscribers once, whichever
    /// process wrote it.
    pub(super) published: Published,
    /// `PRAGMA data_version` when the watcher last looked: it changes only when another
    /// connection commits, which makes the idle check nearly free.
    pub(super) data_version: i64,
}

impl SqliteStore {
    /// Runs `op` on the database thread with the locked connection and answers as soon as it
    /// ran (reads, leases); `what` names the operation and key in errors. Nothing happens until
    /// the future is polled; once queued, an operation completes even if the future is dropped (a
    /// write then still reaches the change feed).
    pub(super) fn run<T, F>(&self, what: String, op: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db, &broadcast::Sender<Change>) -> Result<T, OpError> + Send + 'static,
    {
        self.queue_op(what, false, op)
    }

    /// Like [`SqliteStore::run`], for a write that must be durable: answered only once a sync
    /// after it succeeded (see the module docs).
    pub(super) fn run_synced<T, F>(&self, what: String, op: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db, &broadcast::Sender<Change>) -> Result<T, OpError> + Send + 'static,
    {
        self.queue_op(what, true, op)
    }

    fn queue_op<T, F>(&self, what: String, durable: bool, op: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db, &broadcast::Sender<Change>) -> Result<T, OpError> + Send + 'static,
    {
        let queue = self.queue.clone();
        Box::pin(async move {
            let (answer, answered) = oneshot::channel();
            let stopped = format!("{what}: the database thread has stopped");
            let operation: Operation = Box::new(move |shared: &Shared| {
                let result = {
                    let mut db = shared.lock();
                    op(&mut db, &shared.changes).map_err(|e| e.into_store_error(&what))
                };
                match result {
                    Ok(value) if durable => Some(Box::new(move |synced: Result<(), String>| {
                        let _ = answer.send(
                            synced
                                .map(|()| value)
                                .map_err(|e| StoreError::Unavailable(format!("{what}: {e}"))),
                        );
                    })),
                    result => {
                        let _ = answer.send(result);
                        None
                    }
                }
            });
            if queue.send(operation).is_err() {
                return Err(StoreError::Unavailable(stopped));
            }
            answered
                .await
                .unwrap_or_else(|_| Err(StoreError::Unavailable(stopped)))
        })
    }
}
