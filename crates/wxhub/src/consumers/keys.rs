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
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use subtle::ConstantTimeEq;

use crate::configuration::{AppGrant, ConsumerSettings, Settings};
use crate::hub::Account;

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
    verified: ArcSwap<HashMap<u64, Verified>>,
    /// Each consumer's grants, by position in [`Settings::consumers`], built on first use.
    grants: OnceLock<Vec<Grants>>,
}

/// One consumer's grants as sets.
#[derive(Default)]
struct Grants {
    /// `*`: every account.
    all: bool,
    /// Granted appids.
    apps: HashSet<Box<str>>,
    /// Granted Work WeChat apps: agentids by corpid.
    corps: HashMap<Box<str>, HashSet<Box<str>>>,
    /// Platforms whose component token is granted (`"C"`).
    components: HashSet<Box<str>>,
    /// Platforms every authorizer of which is granted (`"C/*"`).
    all_authorizers: HashSet<Box<str>>,
    /// Granted authorizers (`"C/A"`): authorizer appids by component appid.
    authorizers: HashMap<Box<str>, HashSet<Box<str>>>,
}

impl Grants {
    fn of(consumer: &ConsumerSettings) -> Grants {
        let mut grants = Grants::default();
        for grant in &consumer.apps {
            match grant {
                AppGrant::All => grants.all = true,
                AppGrant::App(appid) => {
                    grants.apps.insert(appid.as_str().into());
                }
                AppGrant::CorpAgent { corpid, agentid } => {
                    grants
                        .corps
                        .entry(corpid.as_str().into())
                        .or_default()
                        .insert(agentid.as_str().into());
                }
                AppGrant::Component(c) => {
                    grants.components.insert(c.as_str().into());
                }
                AppGrant::AllAuthorizers(c) => {
                    grants.all_authorizers.insert(c.as_str().into());
                }
                AppGrant::Authorizer {
                    component_appid,
                    authorizer_appid,
                } => {
                    grants
                        .authorizers
                        .entry(component_appid.as_str().into())
                        .or_default()
                        .insert(authorizer_appid.as_str().into());
                }
            }
        }
        grants
    }
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
            verified: ArcSwap::from_pointee(HashMap::new()),
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
            if bool::from(hit.key.as_ref().ct_eq(key.as_bytes())) {
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

    /// Whether consumer number `consumer` may use `account`, in one lookup.
    pub fn may_use(&self, settings: &Settings, consumer: usize, account: Account<'_>) -> bool {
        match account {
            Account::App(appid) => self.may_use_app(settings, consumer, appid),
            Account::Corp { corpid, agentid } => {
                self.may_use_corp(settings, consumer, corpid, agentid)
            }
            Account::Component(component) => self.may_use_component(settings, consumer, component),
            Account::Authorizer {
                component,
                authorizer,
            } => self.may_use_authorizer(settings, consumer, component, authorizer),
        }
    }

    /// Whether consumer number `consumer` may use the official account `appid` (same answer as
    /// [`ConsumerSettings::may_use_app`], in one lookup).
    pub fn may_use_app(&self, settings: &Settings, consumer: usize, appid: &str) -> bool {
        self.grants(settings)
            .get(consumer)
            .is_some_and(|g| g.all || g.apps.contains(appid))
    }

    /// Whether consumer number `consumer` may use the Work WeChat app (`corpid`, `agentid`) (same
    /// answer as [`ConsumerSettings::may_use_corp`], in one lookup).
    pub fn may_use_corp(
        &self,
        settings: &Settings,
        consumer: usize,
        corpid: &str,
        agentid: &str,
    ) -> bool {
        self.grants(settings).get(consumer).is_some_and(|g| {
            g.all
                || g.corps
                    .get(corpid)
                    .is_some_and(|agents| agents.contains(agentid))
        })
    }

    /// Whether consumer number `consumer` may use the component token of `component` (`"C"` or
    /// `"*"`).
    pub fn may_use_component(&self, settings: &Settings, consumer: usize, component: &str) -> bool {
        self.grants(settings)
            .get(consumer)
            .is_some_and(|g| g.all || g.components.contains(component))
    }

    /// Whether consumer number `consumer` may use the authorizer `authorizer` of `component`
    /// (`"C/*"`, `"C/A"` or `"*"`).
    pub fn may_use_authorizer(
        &self,
        settings: &Settings,
        consumer: usize,
        component: &str,
        authorizer: &str,
    ) -> bool {
        self.grants(settings).get(consumer).is_some_and(|g| {
            g.all
                || g.all_authorizers.contains(component)
                || g.authorizers
                    .get(component)
                    .is_some_and(|a| a.contains(authorizer))
        })
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
            let mut next = HashMap::with_capacity(current.len() + 1);
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
    fn grants_answer_as_the_configured_lists_do() {
        let settings = settings();
        let cache = KeyCache::default();
        for (index, consumer) in settings.consumers.iter().enumerate() {
            for appid in ["wx0000000000000001", "wx0000000000000002", "wx9", "ww1", ""] {
                assert_eq!(
                    cache.may_use_app(&settings, index, appid),
                    consumer.may_use_app(appid),
                    "{} {appid}",
                    consumer.name
                );
            }
            for (corpid, agentid) in [
                ("ww1", "1000002"),
                ("ww1", "1000003"),
                ("ww2", "1000003"),
                ("wx0000000000000002", ""),
            ] {
                assert_eq!(
                    cache.may_use_corp(&settings, index, corpid, agentid),
                    consumer.may_use_corp(corpid, agentid),
                    "{} {corpid}/{agentid}",
                    consumer.name
                );
            }
        }
        assert!(!cache.may_use_app(&settings, 99, "wx0000000000000001"));
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
