//! Consumer authentication with a cache of keys already verified.
//!
//! The configuration holds only the SHA-256 of each consumer key, and the slow path
//! ([`Settings::find_consumer`]) hashes the presented key and compares the digest with every
//! consumer's in constant time. That costs a SHA-256 plus one comparison per consumer on every
//! request, which grows with the number of consumers on the one path that must stay cheap.
//!
//! The cache remembers keys that passed that check, so that the next request with the same key is
//! one keyed hash and one constant-time comparison:
//! - it is indexed by a 64-bit SipHash of the key under a per-process random key, so the index
//!   (and the timing of a lookup in it) says nothing about any key to someone who does not know
//!   that random key;
//! - a hit is confirmed by comparing the whole presented key with the cached one in constant time;
//! - only keys that matched a consumer are ever added, at most one per consumer, so unknown keys
//!   (a scan, a typo) cannot grow it and always take the slow path;
//! - keys live only in this process's memory, never in a log, a file or an error message.
//!
//! Readers load an immutable snapshot ([`ArcSwap`]); the rare insert (once per consumer key per
//! process) copies the map.
//!
//! The same goes for what a consumer may use: its grants are a list in the configuration, and a
//! platform may grant one consumer thousands of accounts, so the first request builds each
//! consumer's grants into sets, and every later check is one lookup.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use subtle::{Choice, ConstantTimeEq};

use crate::configuration::{ConsumerSettings, Settings};
use crate::kinds::{AccountId, Grant, Kind};

/// Verified bearer keys and the consumer each belongs to, and every consumer's grants as sets.
///
/// One cache serves one [`Settings`]: the one every call passes. Consumers change while the hub
/// runs (a reload, a runtime consumer added, re-keyed or removed on any instance), so a cache is
/// never updated in place: each change puts in force a new [`crate::control::Access`], the new
/// consumers with a new, empty cache, and this one goes with the settings it served.
pub struct KeyCache {
    /// Keys the index by a secret, per-process hash.
    hasher: RandomState,
    /// The current snapshot, by keyed hash of the key.
    verified: ArcSwap<Verifieds>,
    /// Each consumer's grants, by position in [`Settings::consumers`], built on first use.
    grants: OnceLock<Vec<Grants>>,
}

/// One consumer's grants as sets.
#[derive(Default)]
struct Grants {
    /// `*`: every account.
    all: bool,
    /// Accounts granted one by one.
    accounts: HashSet<AccountId>,
    /// Accounts all of whose children are granted (`"C/*"`): their ids by kind.
    children: HashMap<Kind, HashSet<Box<str>>>,
}

impl Grants {
    fn of(consumer: &ConsumerSettings) -> Grants {
        let mut grants = Grants::default();
        for grant in &consumer.apps {
            match Grant::of(grant) {
                Grant::All => grants.all = true,
                Grant::Account(account) => {
                    grants.accounts.insert(account);
                }
                Grant::Children(kind, id) => {
                    grants
                        .children
                        .entry(kind)
                        .or_default()
                        .insert(id.into_boxed_str());
                }
            }
        }
        grants
    }

    /// Whether these grants cover `account`: the same answer as any of the consumer's
    /// [`Grant::covers`], in one or two lookups.
    fn cover(&self, account: &AccountId) -> bool {
        self.all
            || self.accounts.contains(account)
            || account.parent().is_some_and(|(kind, id)| {
                self.children.get(&kind).is_some_and(|ids| ids.contains(id))
            })
    }
}

/// Verified keys by their tag, the keyed hash [`KeyCache::hasher`] gives them.
type Verifieds = HashMap<u64, Verified, BuildHasherDefault<TagHasher>>;

/// Hashes a tag as itself: a tag is already a keyed hash of the key, so hashing it once more
/// (with the map's default SipHash) would only double the cost of a lookup.
#[derive(Default)]
struct TagHasher(u64);

impl Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` tags are hashed here; anything else is folded in, not lost.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, tag: u64) {
        self.0 = tag;
    }
}

/// Whether `presented` is `cached`, in time that depends only on their lengths (which are not
/// secret: a key's length is visible on the wire). Eight bytes at a time: the byte-wise
/// comparison takes one optimisation barrier per byte, the largest single cost of a cache hit.
fn same_key(cached: &[u8], presented: &[u8]) -> bool {
    if cached.len() != presented.len() {
        return false;
    }
    let word = |chunk: &[u8]| {
        let mut bytes = [0; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        u64::from_ne_bytes(bytes)
    };
    let mut same = Choice::from(1);
    for (a, b) in cached.chunks(8).zip(presented.chunks(8)) {
        same &= word(a).ct_eq(&word(b));
    }
    same.into()
}

/// One verified key.
struct Verified {
    /// The key as presented.
    key: Box<[u8]>,
    /// Its consumer's position in [`Settings::consumers`].
    consumer: usize,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            hasher: RandomState::new(),
            verified: ArcSwap::from_pointee(Verifieds::default()),
            grants: OnceLock::new(),
        }
    }
}

impl KeyCache {
    /// The consumer whose bearer key `key` is, if any, with its position in
    /// [`Settings::consumers`]. Same answer as [`Settings::find_consumer`], without its
    /// per-consumer cost once the key has been seen.
    pub fn find<'s>(
        &self,
        settings: &'s Settings,
        key: &str,
    ) -> Option<(usize, &'s ConsumerSettings)> {
        let tag = self.hasher.hash_one(key.as_bytes());
        if let Some(hit) = self.verified.load().get(&tag) {
            if same_key(&hit.key, key.as_bytes()) {
                let consumer = settings.consumers.get(hit.consumer)?;
                return Some((hit.consumer, consumer));
            }
        }
        let consumer = settings.find_consumer(key)?;
        let index = settings
            .consumers
            .iter()
            .position(|c| std::ptr::eq(c, consumer))?;
        self.remember(tag, key, index, settings.consumers.len());
        Some((index, consumer))
    }

    /// Whether consumer number `consumer` may use `account`, in one lookup (the same answer as
    /// its configured grants' [`Grant::covers`]).
    pub fn may_use(&self, settings: &Settings, consumer: usize, account: &AccountId) -> bool {
        self.grants(settings)
            .get(consumer)
            .is_some_and(|g| g.cover(account))
    }

    fn grants(&self, settings: &Settings) -> &[Grants] {
        self.grants
            .get_or_init(|| settings.consumers.iter().map(Grants::of).collect())
    }

    /// Adds a verified key, unless its tag is taken (a different key with the same 64-bit hash:
    /// that key keeps taking the slow path) or the cache already holds one key per consumer.
    fn remember(&self, tag: u64, key: &str, consumer: usize, consumers: usize) {
        self.verified.rcu(|current| {
            if current.contains_key(&tag) || current.len() >= consumers {
                return Arc::clone(current);
            }
            let mut next =
                Verifieds::with_capacity_and_hasher(current.len() + 1, Default::default());
            for (t, v) in current.iter() {
                next.insert(
                    *t,
                    Verified {
                        key: v.key.clone(),
                        consumer: v.consumer,
                    },
                );
            }
            next.insert(
                tag,
                Verified {
                    key: key.as_bytes().into(),
                    consumer,
                },
            );
            Arc::new(next)
        });
    }

    /// How many keys are cached (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.verified.load().len()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::configuration::consumer_key_sha256;

    fn settings() -> Settings {
        let text = format!(
            r#"
[[apps]]
appid = "wx0000000000000001"
secret = "s"

[[apps]]
appid = "wx0000000000000002"
secret = "s"

[[corps]]
corpid = "ww1"
agentid = "1000002"
secret = "s"

[[corps]]
corpid = "ww1"
agentid = "1000003"
secret = "t"

[[consumers]]
name = "a"
key_sha256 = "{}"
apps = ["*"]
scopes = ["read"]

[[consumers]]
name = "b"
key_sha256 = "{}"
apps = ["wx0000000000000002", "ww1/1000003"]
scopes = ["read"]

[[consumers]]
name = "c"
key_sha256 = "{}"
scopes = ["read"]
"#,
            consumer_key_sha256("key-a"),
            consumer_key_sha256("key-b"),
            consumer_key_sha256("key-c"),
        );
        Settings::parse(&text, Path::new("wxhub.toml"), &|_| None).unwrap()
    }

    #[test]
    fn finds_the_same_consumer_as_the_slow_path_and_caches_only_known_keys() {
        let settings = settings();
        let cache = KeyCache::default();
        for _ in 0..3 {
            assert_eq!(cache.find(&settings, "key-a").unwrap().1.name, "a");
            assert_eq!(cache.find(&settings, "key-b").unwrap().1.name, "b");
            assert!(cache.find(&settings, "key-d").is_none());
            assert!(cache.find(&settings, "key-").is_none());
            assert!(cache.find(&settings, "key-aa").is_none());
            assert!(cache.find(&settings, "").is_none());
        }
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn keys_are_the_same_only_byte_for_byte() {
        let key = b"0123456789abcdef0123456789abcdef0123456789abcdef";
        assert!(same_key(key, key));
        assert!(same_key(b"", b""));
        assert!(same_key(b"abc", b"abc"));
        for at in 0..key.len() {
            let mut other = *key;
            other[at] ^= 0x01;
            assert!(!same_key(key, &other), "a difference at byte {at}");
        }
        // A shorter or longer key, including one that differs only by trailing zero bytes,
        // which the last, padded word would otherwise hide.
        assert!(!same_key(key, &key[..47]));
        assert!(!same_key(&key[..47], key));
        assert!(!same_key(b"abc", b"abc\0"));
        assert!(!same_key(b"abc\0", b"abc"));
    }

    #[test]
    fn grants_answer_as_the_configured_lists_do() {
        let settings = settings();
        let cache = KeyCache::default();
        let accounts = [
            AccountId::app("wx0000000000000001"),
            AccountId::app("wx0000000000000002"),
            AccountId::app("wx9"),
            AccountId::app("ww1"),
            AccountId::corp("ww1", "1000002"),
            AccountId::corp("ww1", "1000003"),
            AccountId::corp("ww2", "1000003"),
            AccountId::component("wx0000000000000002"),
            AccountId::authorizer("wxc", "wx0000000000000002"),
        ];
        for (index, consumer) in settings.consumers.iter().enumerate() {
            for account in &accounts {
                assert_eq!(
                    cache.may_use(&settings, index, account),
                    consumer.apps.iter().any(|g| Grant::of(g).covers(account)),
                    "{} {account}",
                    consumer.name
                );
            }
        }
        assert!(!cache.may_use(&settings, 99, &accounts[0]));
    }

    #[test]
    fn a_tag_collision_falls_back_to_the_slow_path() {
        let settings = settings();
        let cache = KeyCache::default();
        // Make "key-b"'s tag hold consumer a's key, as if the two keys hashed alike.
        let tag_b = cache.hasher.hash_one("key-b".as_bytes());
        cache.remember(tag_b, "key-a", 0, 3);
        assert_eq!(cache.find(&settings, "key-b").unwrap().1.name, "b");
        assert_eq!(cache.find(&settings, "key-a").unwrap().1.name, "a");
        assert!(cache.find(&settings, "key-x").is_none());
        // "key-b" is not cached under its taken tag, and keeps being answered correctly.
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.find(&settings, "key-b").unwrap().1.name, "b");
    }
}
