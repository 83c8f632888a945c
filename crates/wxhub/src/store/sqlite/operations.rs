//! The [`Store`] contract's operations on SQLite: reads, the compare-and-set and restore
//! writes, leases, runtime accounts and the force-refresh budget.
//!
//! Each operation is a closure queued to the database thread (see [`super::writer`]): reads and
//! leases are answered as soon as they ran, writes of tokens, accounts and the budget only once
//! the batch they were in is synced to disk. Every check-then-write is one SQLite write
//! transaction (or one statement), so two processes sharing the file cannot both win.

use std::time::Duration;

use rusqlite::{OptionalExtension, TransactionBehavior};
use tokio::sync::broadcast;

use super::codec::{decode_token, key_text, read_token};
use super::{OpError, SqliteStore, SCHEMA_VERSION};
use crate::kinds::CredentialKey;
use crate::store::{
    generation_exceeds, generation_follows, AccountChange, CasOutcome, Change, Store, StoreError,
    StoreFuture,
};
use crate::token::{Timestamp, Token};

/// Takes the lease of `storage_key` for `owner` for `ttl` if it is free, ours, or expired. One
/// statement, hence one atomic write: insert a free lease, or take over the row if it is ours or
/// has expired; otherwise change nothing. Returns whether `owner` holds it now.
fn take_lease(
    conn: &rusqlite::Connection,
    storage_key: &str,
    owner: &str,
    ttl: Duration,
) -> Result<bool, OpError> {
    let now = Timestamp::now();
    let changed = conn
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
}

impl SqliteStore {
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
            db.published.record(storage_key, Some(token.generation));
            let _ = changes.send(Change { key, token });
            Ok(CasOutcome::Applied)
        })
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
            take_lease(&db.conn, &storage_key, &owner, ttl)
        })
    }

    fn acquire_lease_and_get<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, Option<Option<Token>>> {
        let storage_key = key.storage_key();
        let owner = owner.to_owned();
        // One turn of the database thread for both: each turn costs two thread wake-ups, which
        // is most of what a lease or a read costs here.
        self.run(format!("acquire_lease {storage_key}"), move |db, _| {
            if !take_lease(&db.conn, &storage_key, &owner, ttl)? {
                return Ok(None);
            }
            Ok(Some(read_token(&db.conn, &storage_key)?))
        })
    }

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
            db.published.record(storage_key, None);
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
