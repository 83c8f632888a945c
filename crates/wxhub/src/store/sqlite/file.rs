//! What a file must be before the SQLite store uses it: private to its owner, in WAL mode with
//! the right sync level, and a wxhub database of a schema version this code reads.
//!
//! The file is the durable home of the authorizer refresh tokens, so it is created (and, when it
//! was copied in or restored from a backup, restricted) owner-only, and a file that is not
//! wxhub's, or was written by a newer wxhub, is refused rather than written into or misread. The
//! schema itself is created or upgraded here, in one write transaction, so two processes opening
//! the same new file cannot interleave.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::OpError;
use crate::store::StoreError;

/// The schema this version writes and reads, kept in `PRAGMA user_version`. A file with a higher
/// number was written by a newer wxhub and is refused rather than misread.
pub const SCHEMA_VERSION: i64 = 2;

/// Marks the file as a wxhub database (`PRAGMA application_id`, the ASCII bytes `wxhb`), so that
/// pointing `store.path` at some other application's SQLite file fails instead of writing into it.
pub const APPLICATION_ID: i64 = 0x7778_6862;

/// How long an operation waits for another connection's write lock before failing with
/// [`StoreError::Unavailable`]. Write transactions here last milliseconds, so reaching this means
/// something is wrong with the other process or the disk.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Creates `path` with owner-only permissions if it does not exist yet, so the tokens are never
/// world-readable; SQLite gives its `-wal` and `-shm` files the same permissions.
pub(super) fn create_private_file(path: &Path) -> std::io::Result<()> {
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
pub(super) fn make_private(path: &Path) -> Result<(), StoreError> {
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
pub(super) fn configure(conn: &Connection) -> rusqlite::Result<bool> {
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
pub(super) fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Creates the schema in an empty file, or checks that an existing file is a wxhub database of a
/// version this code reads. Runs in one write transaction so two processes creating the same new
/// file cannot interleave.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), OpError> {
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
