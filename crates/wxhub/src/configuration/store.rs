//! `[store]`: which store keeps the tokens (`memory`, `sqlite` or `redis`) and the keys each kind
//! takes. The redis kind's own keys are read in `redis`.

use std::fmt;
use std::path::PathBuf;

use super::error::{ConfigError, Place};
use super::source::{section_keys, Node};
use super::validate::Cx;
use super::RedisSettings;

/// `[store]`: which store implementation keeps the tokens.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSettings {
    /// Tokens live only in this process (tests, throw-away runs).
    Memory,
    /// The embedded single-node store (the default).
    Sqlite {
        /// The database file (default `wxhub.db`; a relative path is resolved against the
        /// configuration file's directory, so the hub finds it whatever its working directory).
        path: PathBuf,
    },
    /// A Redis server (or a Sentinel-managed group) shared by several hub nodes. `Debug` and
    /// [`Settings::render_masked`](super::Settings::render_masked) mask its passwords.
    Redis(RedisSettings),
}

/// The default `[store] path` of the sqlite store.
pub const DEFAULT_SQLITE_PATH: &str = "wxhub.db";

impl StoreSettings {
    /// The store's kind as the configuration spells it: `memory`, `sqlite` or `redis`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            StoreSettings::Memory => "memory",
            StoreSettings::Sqlite { .. } => "sqlite",
            StoreSettings::Redis(_) => "redis",
        }
    }
}

impl fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSettings::Memory => f.write_str("Memory"),
            StoreSettings::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            StoreSettings::Redis(redis) => redis.fmt(f),
        }
    }
}

impl Cx<'_> {
    pub(super) fn store(&self, node: Option<&Node>) -> Result<StoreSettings, ConfigError> {
        let Some(node) = node else {
            return Ok(StoreSettings::Sqlite {
                path: self.resolve(DEFAULT_SQLITE_PATH),
            });
        };
        let table = self.table(node, "store".into(), &section_keys("store"))?;
        let kind_node = table.get("kind");
        let kind = match kind_node {
            Some(node) => {
                let path = table.key_path("kind");
                let kind = self.string(node, &path)?;
                if !matches!(kind, "memory" | "sqlite" | "redis") {
                    return Err(self.err(
                        &node.place,
                        path,
                        format!("unknown store kind {kind:?}; expected \"memory\", \"sqlite\" or \"redis\""),
                    ));
                }
                kind
            }
            None => "sqlite",
        };
        let kind_said = match kind_node.map(|n| &n.place) {
            None => format!("kind = {kind:?} (the default)"),
            Some(Place::Env(var)) => format!("kind = {kind:?} (set by {var})"),
            Some(_) => format!("kind = {kind:?}"),
        };
        for entry in table.entries {
            let owner = match entry.key.as_str() {
                "path" => "sqlite",
                "url" | "namespace" | "sentinel_master" | "sentinels" | "username" | "password"
                | "password_file" | "ca_file" => "redis",
                _ => continue,
            };
            if owner != kind {
                return Err(self.err(
                    &entry.place,
                    table.key_path(&entry.key),
                    format!(
                        "not used with {kind_said}; `{}` belongs to kind {owner:?}",
                        entry.key
                    ),
                ));
            }
        }
        match kind {
            "memory" => Ok(StoreSettings::Memory),
            "sqlite" => {
                let path = match table.get("path") {
                    Some(node) => {
                        let key = table.key_path("path");
                        let text = self.string(node, &key)?;
                        if text.is_empty() {
                            return Err(self.err(&node.place, key, "must not be empty"));
                        }
                        text
                    }
                    None => DEFAULT_SQLITE_PATH,
                };
                Ok(StoreSettings::Sqlite {
                    path: self.resolve(path),
                })
            }
            _ => self.redis_store(&table, kind_node, &kind_said),
        }
    }
}
