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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior};
use tokio::sync::{broadcast, oneshot};

use super::{
    generation_exceeds, generation_follows, AccountChange, CasOutcome, Change, Store, StoreError,
    StoreFuture, CHANGE_FEED_CAPACITY,
};
use crate::credential::{CredentialKey, Timestamp, Token};

/// The schema this version writes and reads, kept in `PRAGMA user_version`. A file with a higher
/// number was written by a newer wxhub and is refused rather than misread.
pub const SCHEMA_VERSION: i64 = 2;

/// Marks the file as a wxhub database (`PRAGMA application_id`, the ASCII bytes `wxhb`), so that
/// pointing `store.path` at some other application's SQLite file fails instead of writing into it.
pub const APPLICATION_ID: i64 = 0x7778_6862;

/// How long an operation waits for another connection's write lock before failing with
/// [`StoreError::Unavailable`]. Write transactions here last milliseconds, so reaching this means
/// something is wrong with the other process or the disk.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the store checks the file for writes made by other processes, to publish them on
/// its change feed. A check that finds nothing new costs one `PRAGMA data_version`.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// The most operations the database thread runs before it syncs and answers the durable writes
/// among them: bounds how long the first of a long queue waits for its answer.
const MAX_BATCH: usize = 256;

/// Creates the tables of schema version 1.
const SCHEMA_V1: &str = "
    CREATE TABLE credentials (
        storage_key   TEXT    NOT NULL PRIMARY KEY,
        value         TEXT    NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        fetched_at_ms INTEGER NOT NULL,
        generation    INTEGER NOT NULL CHECK (generation >= 1),
        updated_at_ms INTEGER NOT NULL
    );
    CREATE TABLE leases (
        storage_key   TEXT    NOT NULL PRIMARY KEY,
        owner         TEXT    NOT NULL,
        expires_at_ms INTEGER NOT NULL
    );
";

/// Adds what schema version 2 has on top of version 1: runtime account definitions and the
/// cluster-wide stable-mode force budget.
const SCHEMA_V2: &str = "
    CREATE TABLE accounts (
        name          TEXT    NOT NULL PRIMARY KEY,
        definition    TEXT    NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );
    CREATE TABLE force_budget (
        name          TEXT    NOT NULL,
        day           INTEGER NOT NULL,
        used          INTEGER NOT NULL,
        PRIMARY KEY (name, day)
    );
";

/// A [`Store`] in one SQLite file.
///
/// Rows that cannot be read back (a storage key that does not parse, a value of the wrong type,
/// a generation below 1) are never silently overwritten: [`Store::get`] and
/// [`Store::compare_and_set`] on such a key fail with [`StoreError::Corrupt`] naming the key
/// (never the value), while [`Store::load_all`] **skips** them with a `tracing` warning, so one
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

/// One queued operation, run on the database thread. It answers its caller itself, unless it is
/// a durable write that succeeded: then it returns how to answer once the batch is synced.
type Operation = Box<dyn FnOnce(&Shared) -> Option<AfterSync> + Send>;

/// Answers a durable write with the outcome of its batch's sync (`Err` carries the reason).
type AfterSync = Box<dyn FnOnce(Result<(), String>) + Send>;

/// What the blocking tasks and the watcher thread share with the store.
struct Shared {
    /// The one connection; a mutex serialises this process's operations on it.
    db: Mutex<Db>,
    /// The change feed: this process's own writes and, via the watcher, other processes' writes.
    changes: broadcast::Sender<Change>,
    /// The account feed: this process's account writes (one process owns a SQLite file's
    /// accounts; other processes sharing the file see them at their next start).
    accounts: broadcast::Sender<AccountChange>,
    /// The `-wal` file that a batch's sync flushes; `None` when the file is not in WAL mode and
    /// every commit is synced by SQLite itself (`synchronous=FULL`).
    wal: Option<PathBuf>,
    /// How many batch syncs have run (for the tests of group commit).
    syncs: AtomicU64,
}

impl Shared {
    /// Locks the connection. A panic while it was held cannot leave a transaction open (rusqlite
    /// rolls back a dropped transaction), so a poisoned lock is taken over rather than failing
    /// every later operation.
    fn lock(&self) -> MutexGuard<'_, Db> {
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
fn serve(shared: Arc<Shared>, queue: mpsc::Receiver<Operation>) {
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
struct Db {
    /// The open database.
    conn: Connection,
    /// The highest generation of each storage key already published (or present at open): the
    /// watcher publishes only rows above it, so a change reaches subscribers once, whichever
    /// process wrote it.
    published: HashMap<String, u64>,
    /// `PRAGMA data_version` when the watcher last looked: it changes only when another
    /// connection commits, which makes the idle check nearly free.
    data_version: i64,
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
        let published = stored_generations(&conn).map_err(|e| db_error(&at("reading"), e))?;
        let data_version = data_version(&conn).map_err(|e| db_error(&at("reading"), e))?;

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

    /// Runs `op` on the database thread with the locked connection and answers as soon as it
    /// ran (reads, leases); `what` names the operation and key in errors. Nothing happens until
    /// the future is polled; once queued, an operation completes even if the future is dropped (a
    /// write then still reaches the change feed).
    fn run<T, F>(&self, what: String, op: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db, &broadcast::Sender<Change>) -> Result<T, OpError> + Send + 'static,
    {
        self.queue_op(what, false, op)
    }

    /// Like [`SqliteStore::run`], for a write that must be durable: answered only once a sync
    /// after it succeeded (see the module docs).
    fn run_synced<T, F>(&self, what: String, op: F) -> StoreFuture<'static, T>
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

    /// Writes `token` if `allowed(stored, token)` holds (the compare-and-set or the restore
    /// rule), in one write transaction, and publishes it; `what` names the operation in errors.
    fn write_if(
        &self,
        what: &str,
        allowed: fn(Option<&Token>, &Token) -> bool,
        key: &CredentialKey,
        token: &Token,
    ) -> StoreFuture<'static, CasOutcome> {
        let key = key.clone();
        let token = token.clone();
        let storage_key = key.storage_key();
        self.run_synced(format!("{what} {storage_key}"), move |db, changes| {
            // IMMEDIATE takes the file's write lock before reading, so no other connection can
            // write between the generation check and the write.
            let tx = db
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let stored = read_token(&tx, &storage_key)?;
            if !allowed(stored.as_ref(), &token) {
                return Ok(CasOutcome::Stale { current: stored });
            }
            let generation = i64::try_from(token.generation).map_err(|_| {
                StoreError::Corrupt(format!(
                    "credential row {storage_key:?}: generation would exceed the store's range"
                ))
            })?;
            tx.prepare_cached(
                "INSERT INTO credentials
                     (storage_key, value, expires_at_ms, fetched_at_ms, generation, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (storage_key) DO UPDATE SET
                     value = excluded.value,
                     expires_at_ms = excluded.expires_at_ms,
                     fetched_at_ms = excluded.fetched_at_ms,
                     generation = excluded.generation,
                     updated_at_ms = excluded.updated_at_ms",
            )?
            .execute(rusqlite::params![
                storage_key,
                token.value,
                token.expires_at.as_millis(),
                token.fetched_at.as_millis(),
                generation,
                Timestamp::now().as_millis(),
            ])?;
            tx.commit()?;
            // Published under the connection lock, so this process's changes of one key reach
            // subscribers in generation order, and the watcher will not publish it again.
            db.published.insert(storage_key, token.generation);
            let _ = changes.send(Change { key, token });
            Ok(CasOutcome::Applied)
        })
    }
}

/// Creates `path` with owner-only permissions if it does not exist yet, so the tokens are never
/// world-readable; SQLite gives its `-wal` and `-shm` files the same permissions.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Restricts the database file and its `-wal` and `-shm` companions (those that exist) to their
/// owner. A file created by an older version, restored from a backup or copied in may be
/// readable by every user of the machine, and it holds live tokens. A file whose permissions
/// cannot be changed (another owner) is refused rather than used as it is.
fn make_private(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let file = Path::new(&file);
            let mode = match std::fs::metadata(file) {
                Ok(metadata) => metadata.permissions().mode() & 0o777,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(StoreError::Unavailable(format!(
                        "cannot read the permissions of {}: {e}",
                        file.display()
                    )))
                }
            };
            if mode & 0o077 == 0 {
                continue;
            }
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode & 0o700)).map_err(
                |e| {
                    StoreError::Unavailable(format!(
                        "{} holds tokens but is readable by other users (mode {mode:03o}) and \
                         could not be restricted to its owner: {e}; run `chmod 600` on it as \
                         its owner",
                        file.display()
                    ))
                },
            )?;
            tracing::warn!(
                file = %file.display(),
                was = format_args!("{mode:03o}"),
                now = format_args!("{:03o}", mode & 0o700),
                "database file was readable by other users; restricted to its owner"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Per-connection settings: wait for other writers, and WAL with the batch sync of the module
/// docs; says whether WAL is on. Without it, every commit is synced (`synchronous=FULL`).
fn configure(conn: &Connection) -> rusqlite::Result<bool> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    let wal = mode.eq_ignore_ascii_case("wal");
    if wal {
        conn.pragma_update(None, "synchronous", "NORMAL")?;
    } else {
        // Still durable, only with a sync per commit and less concurrency between readers and
        // the writer (e.g. on a filesystem without shared memory).
        tracing::warn!(journal_mode = %mode, "SQLite store could not switch to WAL mode");
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    Ok(wal)
}

/// The `-wal` file SQLite keeps beside the database at `path`.
fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Creates the schema in an empty file, or checks that an existing file is a wxhub database of a
/// version this code reads. Runs in one write transaction so two processes creating the same new
/// file cannot interleave.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), OpError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let application_id: i64 = tx.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let foreign = |why: &str| {
        StoreError::Corrupt(format!(
            "{} is not a wxhub database ({why}); point store.path at a new or wxhub file",
            path.display()
        ))
    };

    if application_id != 0 && application_id != APPLICATION_ID {
        return Err(foreign(&format!("application_id {application_id:#x}")).into());
    }
    if version == 0 {
        let tables: i64 = tx.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'",
            [],
            |r| r.get(0),
        )?;
        if tables > 0 {
            return Err(foreign("it has tables but no wxhub schema version").into());
        }
        tx.execute_batch(SCHEMA_V1)?;
        tx.execute_batch(SCHEMA_V2)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    } else if application_id != APPLICATION_ID {
        return Err(foreign("no wxhub application_id").into());
    } else if version > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "{} was written by a newer wxhub (schema version {version}, this version reads up to \
             {SCHEMA_VERSION}); upgrade wxhub or use another store.path",
            path.display()
        ))
        .into());
    } else if version == 1 {
        tx.execute_batch(SCHEMA_V2)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tracing::info!(path = %path.display(), "SQLite store upgraded to schema version 2");
    } else if version < 0 {
        return Err(StoreError::Corrupt(format!(
            "{} has an invalid schema version {version}",
            path.display()
        ))
        .into());
    }
    tx.commit()?;
    Ok(())
}

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

/// The generation in column `index` for change tracking; [`u64::MAX`] if unreadable, so that an
/// unreadable row counts as already seen once it has been reported.
fn row_generation(row: &Row<'_>, index: usize) -> u64 {
    row.get::<_, i64>(index)
        .ok()
        .and_then(|g| u64::try_from(g).ok())
        .unwrap_or(u64::MAX)
}

/// A counter that changes whenever another connection commits to the file.
fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "data_version", |r| r.get(0))
}

/// The storage key of a row as text, whatever SQLite type it was stored as (for messages and
/// bookkeeping; parsing decides whether it is a valid key).
fn key_text(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Text(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Null => "<null>".to_owned(),
        ValueRef::Blob(_) => "<blob>".to_owned(),
    }
}

/// The error for a row that cannot be read back: names the key and the column, never the value.
fn corrupt_row(key: &str, column: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "credential row {key:?}: column {column} is missing or has the wrong type"
    ))
}

/// Decodes the columns `value, expires_at_ms, fetched_at_ms, generation`, starting at `first`.
fn decode_token(key: &str, row: &Row<'_>, first: usize) -> Result<Token, StoreError> {
    let value: String = row.get(first).map_err(|_| corrupt_row(key, "value"))?;
    let expires_at: i64 = row
        .get(first + 1)
        .map_err(|_| corrupt_row(key, "expires_at_ms"))?;
    let fetched_at: i64 = row
        .get(first + 2)
        .map_err(|_| corrupt_row(key, "fetched_at_ms"))?;
    let generation = row
        .get::<_, i64>(first + 3)
        .ok()
        .and_then(|g| u64::try_from(g).ok())
        .filter(|g| *g >= 1)
        .ok_or_else(|| corrupt_row(key, "generation"))?;
    Ok(Token {
        value,
        expires_at: Timestamp(expires_at),
        fetched_at: Timestamp(fetched_at),
        generation,
    })
}

/// Reads the token stored under `storage_key`, if any.
fn read_token(conn: &Connection, storage_key: &str) -> Result<Option<Token>, OpError> {
    let mut stmt = conn.prepare_cached(
        "SELECT value, expires_at_ms, fetched_at_ms, generation FROM credentials
         WHERE storage_key = ?1",
    )?;
    let mut rows = stmt.query([storage_key])?;
    match rows.next()? {
        Some(row) => Ok(Some(decode_token(storage_key, row, 0)?)),
        None => Ok(None),
    }
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
            let mut stmt = self
                .conn
                .prepare_cached("SELECT storage_key, generation FROM credentials")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let key = key_text(row.get_ref(0)?);
                let seen = self.published.get(&key).copied().unwrap_or(0);
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
                    self.published.insert(storage_key, token.generation);
                    let _ = changes.send(Change { key, token });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "SQLite store: ignoring an unreadable credential row written by another process");
                    // Remember it so that the warning is not repeated on every later change.
                    self.published.insert(storage_key, u64::MAX);
                }
            }
        }
        self.data_version = version;
        Ok(())
    }
}

/// The watcher thread: every [`WATCH_INTERVAL`], publishes other processes' writes, until the
/// store is dropped. Logs a failure once when it starts and once when it ends, not every tick.
fn watch(shared: Weak<Shared>, stop: mpsc::Receiver<()>) {
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

impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    /// Every readable row; rows that cannot be read are skipped with a warning (see
    /// [`SqliteStore`]).
    fn load_all(&self) -> StoreFuture<'_, Vec<(CredentialKey, Token)>> {
        self.run("load_all".to_owned(), |db, _| {
            let mut stmt = db.conn.prepare_cached(
                "SELECT storage_key, value, expires_at_ms, fetched_at_ms, generation
                 FROM credentials ORDER BY storage_key",
            )?;
            let mut rows = stmt.query([])?;
            let mut all = Vec::new();
            while let Some(row) = rows.next()? {
                let storage_key = key_text(row.get_ref(0)?);
                let decoded = storage_key
                    .parse::<CredentialKey>()
                    .map_err(|e| StoreError::Corrupt(format!("credential row {storage_key:?}: {e}")))
                    .and_then(|key| Ok((key, decode_token(&storage_key, row, 1)?)));
                match decoded {
                    Ok(entry) => all.push(entry),
                    Err(e) => {
                        tracing::warn!(error = %e, "SQLite store: skipping an unreadable credential row")
                    }
                }
            }
            Ok(all)
        })
    }

    fn get<'a>(&'a self, key: &'a CredentialKey) -> StoreFuture<'a, Option<Token>> {
        let storage_key = key.storage_key();
        self.run(format!("get {storage_key}"), move |db, _| {
            read_token(&db.conn, &storage_key)
        })
    }

    fn compare_and_set<'a>(
        &'a self,
        key: &'a CredentialKey,
        token: &'a Token,
    ) -> StoreFuture<'a, CasOutcome> {
        self.write_if("compare_and_set", generation_follows, key, token)
    }

    fn restore<'a>(
        &'a self,
        key: &'a CredentialKey,
        token: &'a Token,
    ) -> StoreFuture<'a, CasOutcome> {
        self.write_if("restore", generation_exceeds, key, token)
    }

    fn acquire_lease<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        let storage_key = key.storage_key();
        let owner = owner.to_owned();
        self.run(format!("acquire_lease {storage_key}"), move |db, _| {
            // One statement, hence one atomic write: insert a free lease, or take over the row if
            // it is ours or has expired; otherwise change nothing.
            let now = Timestamp::now();
            let changed = db
                .conn
                .prepare_cached(
                    "INSERT INTO leases (storage_key, owner, expires_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (storage_key) DO UPDATE SET
                         owner = excluded.owner,
                         expires_at_ms = excluded.expires_at_ms
                     WHERE leases.owner = excluded.owner OR leases.expires_at_ms <= ?4",
                )?
                .execute(rusqlite::params![
                    storage_key,
                    owner,
                    now.plus(ttl).as_millis(),
                    now.as_millis(),
                ])?;
            Ok(changed == 1)
        })
    }

    /// Deletes `owner`'s lease row; reports true only if the lease was still live (an expired one
    /// is removed too, but the caller learns that its work outlived the lease).
    fn release_lease<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
    ) -> StoreFuture<'a, bool> {
        let storage_key = key.storage_key();
        let owner = owner.to_owned();
        self.run(format!("release_lease {storage_key}"), move |db, _| {
            let now = Timestamp::now();
            let expires_at: Option<i64> = db
                .conn
                .prepare_cached(
                    "DELETE FROM leases WHERE storage_key = ?1 AND owner = ?2
                     RETURNING expires_at_ms",
                )?
                .query_row(rusqlite::params![storage_key, owner], |r| r.get(0))
                .optional()?;
            Ok(expires_at.is_some_and(|at| at > now.as_millis()))
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.shared.changes.subscribe()
    }

    fn delete<'a>(&'a self, key: &'a CredentialKey) -> StoreFuture<'a, ()> {
        let storage_key = key.storage_key();
        self.run_synced(format!("delete {storage_key}"), move |db, _| {
            let tx = db.conn.transaction()?;
            tx.execute(
                "DELETE FROM credentials WHERE storage_key = ?1",
                [&storage_key],
            )?;
            tx.execute("DELETE FROM leases WHERE storage_key = ?1", [&storage_key])?;
            tx.commit()?;
            db.published.remove(&storage_key);
            Ok(())
        })
    }

    fn put_account<'a>(&'a self, name: &'a str, definition: &'a str) -> StoreFuture<'a, ()> {
        let name = name.to_owned();
        let definition = definition.to_owned();
        let accounts = self.shared.accounts.clone();
        self.run_synced(format!("put_account {name}"), move |db, _| {
            db.conn
                .prepare_cached(
                    "INSERT INTO accounts (name, definition, updated_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET
                         definition = excluded.definition,
                         updated_at_ms = excluded.updated_at_ms",
                )?
                .execute(rusqlite::params![
                    name,
                    definition,
                    Timestamp::now().as_millis()
                ])?;
            let _ = accounts.send(AccountChange::Put { name, definition });
            Ok(())
        })
    }

    fn remove_account<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
        let name = name.to_owned();
        let accounts = self.shared.accounts.clone();
        self.run_synced(format!("remove_account {name}"), move |db, _| {
            let removed = db
                .conn
                .execute("DELETE FROM accounts WHERE name = ?1", [&name])?;
            if removed > 0 {
                let _ = accounts.send(AccountChange::Removed { name });
            }
            Ok(removed > 0)
        })
    }

    fn load_accounts(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        self.run("load_accounts".to_owned(), |db, _| {
            let mut stmt = db
                .conn
                .prepare_cached("SELECT name, definition FROM accounts ORDER BY name")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<(String, String)>, _>>()?)
        })
    }

    fn get_account<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<String>> {
        let name = name.to_owned();
        self.run(format!("get_account {name}"), move |db, _| {
            Ok(db
                .conn
                .prepare_cached("SELECT definition FROM accounts WHERE name = ?1")?
                .query_row([&name], |r| r.get(0))
                .optional()?)
        })
    }

    fn spend_force<'a>(
        &'a self,
        name: &'a str,
        day: i64,
        limit: u32,
    ) -> StoreFuture<'a, Option<u32>> {
        let name = name.to_owned();
        self.run_synced(format!("spend_force {name}"), move |db, _| {
            let tx = db
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM force_budget WHERE day < ?1", [day - 1])?;
            let used: i64 = tx
                .query_row(
                    "SELECT used FROM force_budget WHERE name = ?1 AND day = ?2",
                    rusqlite::params![name, day],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0);
            if used >= i64::from(limit) {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO force_budget (name, day, used) VALUES (?1, ?2, 1)
                 ON CONFLICT (name, day) DO UPDATE SET used = used + 1",
                rusqlite::params![name, day],
            )?;
            tx.commit()?;
            Ok(Some(u32::try_from(used + 1).unwrap_or(u32::MAX)))
        })
    }

    fn subscribe_accounts(&self) -> broadcast::Receiver<AccountChange> {
        self.shared.accounts.subscribe()
    }

    /// Reads the schema version from the file: fails if the file became unreachable or was
    /// replaced by one this version cannot read.
    fn ping(&self) -> StoreFuture<'_, ()> {
        let path = self.path.display().to_string();
        self.run("ping".to_owned(), move |db, _| {
            let version: i64 = db
                .conn
                .pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version != SCHEMA_VERSION {
                return Err(StoreError::Corrupt(format!(
                    "{path} now has schema version {version}, expected {SCHEMA_VERSION}"
                ))
                .into());
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::conformance::{self, store_conformance_tests, Fixture};

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("wxhub.db")).expect("open");
        Fixture::with_guard(Arc::new(store), dir)
    }

    store_conformance_tests!(fixture);

    /// Two stores on one file, as two processes would have.
    fn two_stores() -> (tempfile::TempDir, Arc<dyn Store>, Arc<dyn Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shared.db");
        let a = SqliteStore::open(&path).expect("open a");
        let b = SqliteStore::open(&path).expect("open b");
        (dir, Arc::new(a), Arc::new(b))
    }

    fn expect_corrupt(result: Result<SqliteStore, StoreError>) -> String {
        match result {
            Err(StoreError::Corrupt(message)) => message,
            Err(other) => panic!("expected Corrupt, got {other}"),
            Ok(_) => panic!("expected Corrupt, the file was opened"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_survives_closing_and_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wxhub.db");
        let refresh = CredentialKey::AuthorizerRefreshToken {
            component_appid: "wxc".into(),
            authorizer_appid: "wxa".into(),
        };
        let access = CredentialKey::access_token("wx1");
        let refresh_token = conformance::token("refresh-1", 1);
        let access_token = conformance::token("access-2", 2);
        {
            let store = SqliteStore::open(&path).expect("open");
            conformance::must_apply(&store, &refresh, &refresh_token).await;
            conformance::must_apply(&store, &access, &conformance::token("access-1", 1)).await;
            conformance::must_apply(&store, &access, &access_token).await;
            assert!(store
                .acquire_lease(&access, "node-a", Duration::from_secs(60))
                .await
                .expect("acquire"));
        }

        let store = SqliteStore::open(&path).expect("reopen");
        let mut all = store.load_all().await.expect("load_all");
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut expected = vec![
            (access.clone(), access_token.clone()),
            (refresh.clone(), refresh_token),
        ];
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(all, expected);
        assert_eq!(store.get(&access).await.expect("get"), Some(access_token));
        let stale = store
            .compare_and_set(&access, &conformance::token("access-late", 2))
            .await
            .expect("compare_and_set");
        assert!(matches!(stale, CasOutcome::Stale { .. }));
        conformance::must_apply(&store, &access, &conformance::token("access-3", 3)).await;
        assert!(
            !store
                .acquire_lease(&access, "node-b", Duration::from_secs(60))
                .await
                .expect("acquire"),
            "a lease outlives the process that took it"
        );
        assert!(store
            .release_lease(&access, "node-a")
            .await
            .expect("release"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_on_one_file_cannot_both_win_a_write() {
        let (_dir, a, b) = two_stores();
        conformance::cas_race_has_exactly_one_winner(&[a, b]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_on_one_file_cannot_both_win_a_lease() {
        let (_dir, a, b) = two_stores();
        conformance::lease_race_has_exactly_one_winner(&[a.clone(), b.clone()]).await;
        let key = CredentialKey::access_token("wx_two_leases");
        let ttl = Duration::from_secs(30);
        assert!(a.acquire_lease(&key, "node-a", ttl).await.expect("acquire"));
        assert!(!b.acquire_lease(&key, "node-b", ttl).await.expect("acquire"));
        assert!(!b.release_lease(&key, "node-b").await.expect("release"));
        assert!(a.release_lease(&key, "node-a").await.expect("release"));
        assert!(b.acquire_lease(&key, "node-b", ttl).await.expect("acquire"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_of_another_store_reach_the_change_feed_once() {
        let (_dir, a, b) = two_stores();
        let mut feed_a = a.subscribe();
        let mut feed_b = b.subscribe();
        let key = CredentialKey::access_token("wx_feed_shared");

        let first = conformance::token("shared-1", 1);
        conformance::must_apply(&*a, &key, &first).await;
        let expected = Change {
            key: key.clone(),
            token: first,
        };
        assert_eq!(conformance::next_change(&mut feed_a).await, expected);
        assert_eq!(conformance::next_change(&mut feed_b).await, expected);

        let second = conformance::token("shared-2", 2);
        conformance::must_apply(&*b, &key, &second).await;
        let expected = Change {
            key: key.clone(),
            token: second,
        };
        // Neither feed repeats generation 1: the next change on both is generation 2.
        assert_eq!(conformance::next_change(&mut feed_b).await, expected);
        assert_eq!(conformance::next_change(&mut feed_a).await, expected);
    }

    #[test]
    fn a_newer_schema_version_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wxhub.db");
        drop(SqliteStore::open(&path).expect("open"));
        let conn = Connection::open(&path).expect("raw open");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("set version");
        drop(conn);

        let message = expect_corrupt(SqliteStore::open(&path));
        assert!(message.contains("newer"), "{message}");
        assert!(
            message.contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
            "{message}"
        );
    }

    #[test]
    fn another_applications_database_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("other.db");
        let conn = Connection::open(&path).expect("raw open");
        conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY);")
            .expect("create");
        drop(conn);
        let message = expect_corrupt(SqliteStore::open(&path));
        assert!(message.contains("not a wxhub database"), "{message}");

        let path = dir.path().join("garbage.db");
        std::fs::write(&path, vec![b'x'; 8192]).expect("write");
        expect_corrupt(SqliteStore::open(&path));
    }

    #[test]
    fn a_missing_directory_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing").join("wxhub.db");
        match SqliteStore::open(&path) {
            Err(StoreError::Unavailable(message)) => {
                assert!(message.contains("wxhub.db"), "{message}")
            }
            Err(other) => panic!("expected Unavailable, got {other}"),
            Ok(_) => panic!("opened a file in a missing directory"),
        }
    }

    #[test]
    fn the_file_is_durable_and_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wxhub.db");
        let store = SqliteStore::open(&path).expect("open");
        let db = store.shared.lock();
        let mode: String = db
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("journal_mode");
        assert_eq!(mode, "wal");
        let synchronous: i64 = db
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .expect("synchronous");
        assert_eq!(
            synchronous, 1,
            "NORMAL: the database thread syncs the WAL per batch"
        );
        drop(db);
        assert_eq!(store.shared.wal.as_deref(), Some(&*wal_path(&path)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o077,
                0,
                "the database must not be readable by others"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn durable_writes_wait_for_a_sync_that_serves_the_whole_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wxhub.db");
        let store = Arc::new(SqliteStore::open(&path).expect("open"));
        let syncs = || store.shared.syncs.load(Ordering::Relaxed);

        // Reads and leases are not worth a sync.
        let key = CredentialKey::access_token("wx_lease");
        let ttl = Duration::from_secs(5);
        assert!(store.acquire_lease(&key, "a", ttl).await.expect("acquire"));
        assert!(store.release_lease(&key, "a").await.expect("release"));
        assert!(store.get(&key).await.expect("get").is_none());
        assert_eq!(syncs(), 0);

        // A lone durable write is synced before it is answered.
        conformance::must_apply(&*store, &key, &conformance::token("one", 1)).await;
        assert_eq!(syncs(), 1);

        // Many at once share syncs: a cold start's writes do not pay one each.
        let writes: usize = 200;
        let all = futures_util::future::join_all((0..writes).map(|i| {
            let store = store.clone();
            async move {
                let key = CredentialKey::access_token(format!("wx_batch_{i:03}"));
                store
                    .compare_and_set(&key, &conformance::token(&format!("t{i}"), 1))
                    .await
            }
        }))
        .await;
        assert!(all
            .iter()
            .all(|outcome| matches!(outcome, Ok(CasOutcome::Applied))));
        let batch_syncs = syncs() - 1;
        assert!(
            (1..writes as u64).contains(&batch_syncs),
            "{writes} concurrent writes took {batch_syncs} syncs"
        );
        // And every one of them is in the file, for another connection.
        drop(store);
        let reopened = SqliteStore::open(&path).expect("reopen");
        assert_eq!(
            reopened.load_all().await.expect("load_all").len(),
            writes + 1
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreadable_rows_are_skipped_by_load_all_and_refused_by_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wxhub.db");
        let store = SqliteStore::open(&path).expect("open");
        let good_key = CredentialKey::access_token("wx_good");
        let good = conformance::token("good-1", 1);
        conformance::must_apply(&store, &good_key, &good).await;

        let conn = Connection::open(&path).expect("raw open");
        conn.execute_batch(
            "INSERT INTO credentials VALUES ('nonsense/wx_bad', 'SECRET-A', 2, 1, 1, 1);
             INSERT INTO credentials VALUES ('access_token/wx_blob', X'5345435245542D42', 2, 1, 1, 1);",
        )
        .expect("insert corrupt rows");
        drop(conn);

        assert_eq!(
            store.load_all().await.expect("load_all"),
            vec![(good_key.clone(), good)]
        );

        let blob_key = CredentialKey::access_token("wx_blob");
        let errors = [
            store.get(&blob_key).await.map(|_| ()),
            store
                .compare_and_set(&blob_key, &conformance::token("replacement", 2))
                .await
                .map(|_| ()),
        ];
        for error in errors {
            match error {
                Err(StoreError::Corrupt(message)) => {
                    assert!(message.contains("access_token/wx_blob"), "{message}");
                    assert!(!message.contains("SECRET"), "{message}");
                }
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }

        // The damaged row is kept as it was, for an operator to inspect.
        drop(store);
        let conn = Connection::open(&path).expect("raw open");
        let kind: String = conn
            .query_row(
                "SELECT typeof(value) FROM credentials WHERE storage_key = 'access_token/wx_blob'",
                [],
                |r| r.get(0),
            )
            .expect("query");
        assert_eq!(kind, "blob");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ping_fails_once_the_file_has_a_newer_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wxhub.db");
        let store = SqliteStore::open(&path).expect("open");
        store.ping().await.expect("ping");
        let conn = Connection::open(&path).expect("raw open");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("set version");
        drop(conn);
        assert!(matches!(store.ping().await, Err(StoreError::Corrupt(_))));
    }
}
