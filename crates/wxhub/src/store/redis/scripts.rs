//! The Lua scripts the Redis store runs, and their compiled handles.
//!
//! Every write that must be one step with a check or with its announcement (compare-and-set on
//! generation, restore, a lease taken or released by its owner, a runtime account stored or
//! removed and published, a force refresh counted against its daily budget) is one script: Redis
//! runs a script whole, so no other client comes between the check, the write and the publish.
//! They sit here together because they are the store's write protocol: read side by side, they
//! show that every token and account write is published in the same step, and that the keys of
//! each script share the namespace's hash slot (see [`super::layout`]).

use redis::Script;

/// Compare-and-set on generation, atomically inside Redis.
///
/// `KEYS[1]` the token hash, `KEYS[2]` the index set; `ARGV`: generation, value, expires_at_ms,
/// fetched_at_ms, updated_at_ms, storage key, channel, change message. Returns `{1}` when
/// applied, `{0, value, expires_at_ms, fetched_at_ms, generation}` (or just `{0}` when nothing is
/// stored) when refused, and `{-1}` when the stored generation is not a number.
const CAS_SCRIPT: &str = r"
local stored = redis.call('HGET', KEYS[1], 'generation')
local expected = 1
if stored then
  local n = tonumber(stored)
  if not n then return {-1} end
  expected = n + 1
end
if tonumber(ARGV[1]) ~= expected then
  if not stored then return {0} end
  local t = redis.call('HMGET', KEYS[1], 'value', 'expires_at_ms', 'fetched_at_ms', 'generation')
  return {0, t[1], t[2], t[3], t[4]}
end
redis.call('HSET', KEYS[1], 'value', ARGV[2], 'expires_at_ms', ARGV[3], 'fetched_at_ms', ARGV[4],
  'generation', ARGV[1], 'updated_at_ms', ARGV[5])
redis.call('SADD', KEYS[2], ARGV[6])
redis.call('PUBLISH', ARGV[7], ARGV[8])
return {1}
";

/// [`crate::store::Store::restore`]: like [`CAS_SCRIPT`] (same keys, arguments and replies) except that it
/// writes whenever nothing is stored or the stored generation is lower than the offered one.
const RESTORE_SCRIPT: &str = r"
local stored = redis.call('HGET', KEYS[1], 'generation')
if stored then
  local n = tonumber(stored)
  if not n then return {-1} end
  if n >= tonumber(ARGV[1]) then
    local t = redis.call('HMGET', KEYS[1], 'value', 'expires_at_ms', 'fetched_at_ms', 'generation')
    return {0, t[1], t[2], t[3], t[4]}
  end
end
redis.call('HSET', KEYS[1], 'value', ARGV[2], 'expires_at_ms', ARGV[3], 'fetched_at_ms', ARGV[4],
  'generation', ARGV[1], 'updated_at_ms', ARGV[5])
redis.call('SADD', KEYS[2], ARGV[6])
redis.call('PUBLISH', ARGV[7], ARGV[8])
return {1}
";

/// Takes the lease `KEYS[1]` for owner `ARGV[1]` for `ARGV[2]` ms: `SET NX PX` when it is free,
/// or a plain `SET PX` (extending or shortening it) when the owner already holds it. Returns 1 if
/// the owner holds the lease afterwards.
const ACQUIRE_SCRIPT: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// Compare-and-delete: removes the lease `KEYS[1]` only if owner `ARGV[1]` holds it. Returns 1
/// if it did (an expired lease is already gone, so it reports 0, as the contract asks).
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Stores a runtime account: `HSET KEYS[1] ARGV[1] ARGV[2]`, then publishes `ARGV[4]` on channel
/// `ARGV[3]`, atomically.
const PUT_ACCOUNT_SCRIPT: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
";

/// Removes a runtime account: `HDEL KEYS[1] ARGV[1]`, and if it existed publishes `ARGV[3]` on
/// channel `ARGV[2]`, atomically. Returns 1 if it existed.
const REMOVE_ACCOUNT_SCRIPT: &str = r"
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
if removed == 1 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return removed
";

/// Spends one force refresh: `KEYS[1]` counts them for one name and day; below `ARGV[1]` it is
/// incremented (and kept two days), returning the new count; otherwise -1.
const SPEND_FORCE_SCRIPT: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then return -1 end
used = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 172800000)
return used
";
/// The compiled scripts, kept together so every operation invokes them by SHA (`EVALSHA`, with
/// the crate falling back to loading them after a Redis restart emptied its script cache).
pub(super) struct Scripts {
    /// [`CAS_SCRIPT`].
    pub(super) cas: Script,
    /// [`RESTORE_SCRIPT`].
    pub(super) restore: Script,
    /// [`ACQUIRE_SCRIPT`].
    pub(super) acquire: Script,
    /// [`RELEASE_SCRIPT`].
    pub(super) release: Script,
    /// [`PUT_ACCOUNT_SCRIPT`].
    pub(super) put_account: Script,
    /// [`REMOVE_ACCOUNT_SCRIPT`].
    pub(super) remove_account: Script,
    /// [`SPEND_FORCE_SCRIPT`].
    pub(super) spend_force: Script,
}

impl Scripts {
    /// Every script, compiled (hashed) once for the store's lifetime.
    pub(super) fn new() -> Scripts {
        Scripts {
            cas: Script::new(CAS_SCRIPT),
            restore: Script::new(RESTORE_SCRIPT),
            acquire: Script::new(ACQUIRE_SCRIPT),
            release: Script::new(RELEASE_SCRIPT),
            put_account: Script::new(PUT_ACCOUNT_SCRIPT),
            remove_account: Script::new(REMOVE_ACCOUNT_SCRIPT),
            spend_force: Script::new(SPEND_FORCE_SCRIPT),
        }
    }
}
