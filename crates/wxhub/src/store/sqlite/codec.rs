//! How a stored credential row reads back as a token, and how an unreadable one is reported.
//!
//! Rows are decoded column by column with their own error, never through a conversion that could
//! quote the value: a damaged row is named by its storage key and column only, so no token value
//! reaches a log or an error message. The columns are the stored format; they do not change.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row};

use super::OpError;
use crate::store::StoreError;
use crate::token::{Timestamp, Token};

/// The storage key of a row as text, whatever SQLite type it was stored as (for messages and
/// bookkeeping; parsing decides whether it is a valid key).
pub(super) fn key_text(value: ValueRef<'_>) -> String {
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
pub(super) fn decode_token(key: &str, row: &Row<'_>, first: usize) -> Result<Token, StoreError> {
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
pub(super) fn read_token(conn: &Connection, storage_key: &str) -> Result<Option<Token>, OpError> {
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
