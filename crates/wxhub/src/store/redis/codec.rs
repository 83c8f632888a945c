//! How the Redis store's values look on the wire, both ways: the messages it publishes on its
//! channels, and the replies it reads back.
//!
//! Replies are always read as raw [`Value`]s and decoded here, so that no error message can echo a
//! token value back (the crate's typed conversions quote the reply they could not convert): an
//! unreadable entry is reported by its key and field, never its value. The field names and the
//! message shapes are the stored format other instances (and earlier versions) read; they do not
//! change.

use redis::Value;
use serde::{Deserialize, Serialize};

use crate::kinds::CredentialKey;
use crate::store::{AccountChange, CasOutcome, Change, StoreError};
use crate::token::{Timestamp, Token};

/// One applied write as published on the channel. It carries the token itself, so that other
/// instances update their view without a round trip back to Redis.
#[derive(Serialize, Deserialize)]
struct ChangeMessage {
    /// The credential's storage key.
    key: String,
    /// The token value.
    value: String,
    /// `expires_at`, in Unix milliseconds.
    expires_at_ms: i64,
    /// `fetched_at`, in Unix milliseconds.
    fetched_at_ms: i64,
    /// The token's generation.
    generation: u64,
}

/// One account change as published on the accounts channel.
#[derive(Serialize, Deserialize)]
struct AccountMessage {
    /// The account's storage name.
    name: String,
    /// Its new definition, or `None` when it was removed.
    definition: Option<String>,
}

/// The change message announcing `token` under `storage_key`, as [`ChangeMessage`] JSON.
pub(super) fn encode_change(storage_key: &str, token: &Token) -> serde_json::Result<String> {
    serde_json::to_string(&ChangeMessage {
        key: storage_key.to_owned(),
        value: token.value.clone(),
        expires_at_ms: token.expires_at.as_millis(),
        fetched_at_ms: token.fetched_at.as_millis(),
        generation: token.generation,
    })
}

/// The account message announcing `name`'s new `definition` (`None`: removed), as
/// [`AccountMessage`] JSON.
pub(super) fn encode_account(name: &str, definition: Option<&str>) -> serde_json::Result<String> {
    serde_json::to_string(&AccountMessage {
        name: name.to_owned(),
        definition: definition.map(str::to_owned),
    })
}

/// A bulk or simple string reply as text.
pub(super) fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The value of a `CONFIG GET name` reply (`[name, value]`, or a map in RESP3).
pub(super) fn config_value(reply: Value) -> Option<String> {
    match reply {
        Value::Array(items) => items.into_iter().nth(1).and_then(text),
        Value::Map(pairs) => pairs.into_iter().next().and_then(|(_, v)| text(v)),
        _ => None,
    }
}

/// The error for a stored credential that cannot be read back: names the key and the field,
/// never the value.
fn corrupt(storage_key: &str, field: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "credential {storage_key:?}: field {field} is missing or malformed"
    ))
}

/// Decodes `[value, expires_at_ms, fetched_at_ms, generation]` (an `HMGET` or a script's reply):
/// `None` if the token is not stored at all.
pub(super) fn decode_fields(storage_key: &str, reply: Value) -> Result<Option<Token>, StoreError> {
    let Value::Array(fields) = reply else {
        return Err(corrupt(storage_key, "(all)"));
    };
    if fields.iter().all(|f| matches!(f, Value::Nil)) {
        return Ok(None);
    }
    let mut fields = fields.into_iter();
    let mut next = |name: &str| {
        fields
            .next()
            .and_then(text)
            .ok_or_else(|| corrupt(storage_key, name))
    };
    let value = next("value")?;
    let expires_at = next("expires_at_ms")?;
    let fetched_at = next("fetched_at_ms")?;
    let generation = next("generation")?;
    Ok(Some(Token {
        value,
        expires_at: Timestamp(
            expires_at
                .parse()
                .map_err(|_| corrupt(storage_key, "expires_at_ms"))?,
        ),
        fetched_at: Timestamp(
            fetched_at
                .parse()
                .map_err(|_| corrupt(storage_key, "fetched_at_ms"))?,
        ),
        generation: generation
            .parse::<u64>()
            .ok()
            .filter(|g| *g >= 1)
            .ok_or_else(|| corrupt(storage_key, "generation"))?,
    }))
}

/// Decodes the reply of the compare-and-set or the restore script (see [`super::scripts`]).
pub(super) fn decode_write_reply(
    storage_key: &str,
    reply: Value,
) -> Result<CasOutcome, StoreError> {
    let Value::Array(mut items) = reply else {
        return Err(StoreError::Unavailable(format!(
            "writing {storage_key}: unexpected reply"
        )));
    };
    if items.is_empty() {
        return Err(StoreError::Unavailable(format!(
            "writing {storage_key}: empty reply"
        )));
    }
    let status = items.remove(0);
    match status {
        Value::Int(1) => Ok(CasOutcome::Applied),
        Value::Int(0) if items.is_empty() => Ok(CasOutcome::Stale { current: None }),
        Value::Int(0) => Ok(CasOutcome::Stale {
            current: decode_fields(storage_key, Value::Array(items))?,
        }),
        Value::Int(-1) => Err(corrupt(storage_key, "generation")),
        _ => Err(StoreError::Unavailable(format!(
            "writing {storage_key}: unexpected reply"
        ))),
    }
}

/// Decodes one message of the accounts channel.
pub(super) fn decode_account_change(payload: &[u8]) -> Option<AccountChange> {
    let message: AccountMessage = serde_json::from_slice(payload).ok()?;
    Some(match message.definition {
        Some(definition) => AccountChange::Put {
            name: message.name,
            definition,
        },
        None => AccountChange::Removed { name: message.name },
    })
}

/// Decodes one message of the change channel.
pub(super) fn decode_change(payload: &[u8]) -> Option<Change> {
    let message: ChangeMessage = serde_json::from_slice(payload).ok()?;
    let key = message.key.parse::<CredentialKey>().ok()?;
    (message.generation >= 1).then_some(Change {
        key,
        token: Token {
            value: message.value,
            expires_at: Timestamp(message.expires_at_ms),
            fetched_at: Timestamp(message.fetched_at_ms),
            generation: message.generation,
        },
    })
}
