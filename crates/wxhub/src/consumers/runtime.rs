//! Consumers added at runtime (`PUT /v1/admin/consumers/{name}`): their stored form, and how they
//! join the configuration file's consumers into the one list that authentication reads.
//!
//! A runtime consumer is stored among the runtime definitions, as `consumer/{name}`, so that it
//! reaches every instance sharing the store through the same account feed as runtime apps, and
//! survives restarts. Its key is stored only as the SHA-256 the admin gave: no instance ever sees
//! the key itself. Its grants are stored as written and read against the file in force each time
//! the list is built, so that `C/A` means an authorizer of the platform `C` once the file
//! configures `C`, as it would in the file.
//!
//! The file wins: a runtime consumer whose name the file also uses is not served (and a reload
//! that takes the name over deletes the stored one), nor is one whose key a consumer before it
//! already has.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::configuration::{ConsumerSettings, Scope, Settings};

/// The most runtime consumers a hub takes (docs/architecture.md#authentication-and-scopes). A request with an
/// unknown key, which needs no authentication to send, is compared with every consumer's key, so
/// their number bounds what such a request costs; an admin API that added them without end would
/// let that cost grow without end too. Consumers of the configuration file are not counted (the
/// operator sees those).
pub const MAX_RUNTIME_CONSUMERS: usize = 1_000;

/// What the names of stored consumers start with, among the runtime definitions.
const PREFIX: &str = "consumer/";

/// The storage name of the runtime consumer `name`.
pub fn storage_name(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// The consumer's name, if `storage_name` is a stored consumer's.
pub fn name_of(storage_name: &str) -> Option<&str> {
    storage_name.strip_prefix(PREFIX)
}

/// Whether `name` may name a runtime consumer: 1 to 64 letters, digits, `_`, `-` and `.`, not
/// starting with `.` (it is a path segment of the admin API and part of a storage name).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A consumer added at runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConsumer {
    /// SHA-256 of its bearer key.
    pub key_sha256: [u8; 32],
    /// Its grants, as written (`*`, `wx…`, `corpid/agentid`, `C`, `C/*`, `C/A`).
    pub apps: Vec<String>,
    /// Its scopes.
    pub scopes: Vec<Scope>,
}

/// The stored form of a [`RuntimeConsumer`]; versioned like the stored accounts.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredConsumer {
    /// Format version (1).
    version: u32,
    /// SHA-256 of the bearer key, in hex.
    key_sha256: String,
    /// The grants, as written.
    apps: Vec<String>,
    /// The scopes, as the configuration spells them.
    scopes: Vec<String>,
}

impl RuntimeConsumer {
    /// The stored definition.
    pub fn definition(&self) -> String {
        let stored = StoredConsumer {
            version: 1,
            key_sha256: hex::encode(self.key_sha256),
            apps: self.apps.clone(),
            scopes: self.scopes.iter().map(|s| s.as_str().to_string()).collect(),
        };
        // Strings and numbers only: serialising cannot fail.
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Reads a stored definition (`None` if it is not one this version reads).
    pub fn from_definition(definition: &str) -> Option<RuntimeConsumer> {
        let stored: StoredConsumer = serde_json::from_str(definition).ok()?;
        if stored.version != 1 {
            return None;
        }
        let mut key_sha256 = [0u8; 32];
        hex::decode_to_slice(&stored.key_sha256, &mut key_sha256).ok()?;
        let scopes = stored
            .scopes
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<Scope>, _>>()
            .ok()?;
        Some(RuntimeConsumer {
            key_sha256,
            apps: stored.apps,
            scopes,
        })
    }
}

/// The consumers in force: the file's, in their order, then the runtime ones by name, except
/// those the file wins over (same name, or a key a consumer before it has). A grant that no longer
/// reads against the file (a bare corpid, once the file has that corp) grants nothing.
pub fn merged(
    file: &Settings,
    runtime: &BTreeMap<String, RuntimeConsumer>,
) -> Vec<ConsumerSettings> {
    let mut consumers = file.consumers.clone();
    if runtime.is_empty() {
        return consumers;
    }
    let names: HashSet<&str> = file.consumers.iter().map(|c| c.name.as_str()).collect();
    let mut keys: HashSet<[u8; 32]> = file.consumers.iter().map(|c| c.key_sha256).collect();
    let reader = file.grants();
    for (name, consumer) in runtime {
        if names.contains(name.as_str()) {
            tracing::warn!(consumer = %name, "a runtime consumer is also defined in the configuration file; the file wins");
            continue;
        }
        if !keys.insert(consumer.key_sha256) {
            tracing::warn!(consumer = %name, "a runtime consumer has the key of another consumer; it is not served");
            continue;
        }
        let mut apps = Vec::with_capacity(consumer.apps.len());
        for text in &consumer.apps {
            match reader.read(text) {
                Ok(grant) if !apps.contains(&grant) => apps.push(grant),
                Ok(_) => {}
                Err(why) => {
                    tracing::warn!(consumer = %name, grant = %text.escape_debug(), %why, "a runtime consumer's grant does not read against the configuration; it grants nothing")
                }
            }
        }
        consumers.push(ConsumerSettings {
            name: name.clone(),
            key_sha256: consumer.key_sha256,
            apps,
            scopes: consumer.scopes.clone(),
        });
    }
    consumers
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::configuration::{consumer_key_digest, consumer_key_sha256, AppGrant};

    fn file() -> Settings {
        let text = format!(
            r#"
[[apps]]
appid = "wx1"
secret = "s"

[[components]]
component_appid = "wxc1"
secret = "cs"
token = "tk"
encoding_aes_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"

[[consumers]]
name = "ops"
key_sha256 = "{}"
apps = ["*"]
scopes = ["admin"]
"#,
            consumer_key_sha256("ops-key"),
        );
        Settings::parse(&text, Path::new("wxhub.toml"), &|_| None).unwrap()
    }

    fn runtime(key: &str, apps: &[&str]) -> RuntimeConsumer {
        RuntimeConsumer {
            key_sha256: consumer_key_digest(key),
            apps: apps.iter().map(|a| a.to_string()).collect(),
            scopes: vec![Scope::Read, Scope::Call],
        }
    }

    #[test]
    fn the_stored_form_reads_back_and_holds_only_the_hash() {
        let consumer = runtime("shop-key", &["wx1", "ww1/7", "wxc1/*"]);
        let definition = consumer.definition();
        assert!(!definition.contains("shop-key"), "{definition}");
        assert!(
            definition.contains(&consumer_key_sha256("shop-key")),
            "{definition}"
        );
        assert_eq!(
            RuntimeConsumer::from_definition(&definition),
            Some(consumer)
        );
        for unreadable in [
            "",
            "{}",
            r#"{"version":2,"key_sha256":"00","apps":[],"scopes":[]}"#,
            &definition.replace("\"read\"", "\"write\""),
            &definition.replace("\"version\":1", "\"version\":1,\"extra\":1"),
        ] {
            assert_eq!(
                RuntimeConsumer::from_definition(unreadable),
                None,
                "{unreadable}"
            );
        }
        assert_eq!(name_of(&storage_name("shop")), Some("shop"));
        assert_eq!(name_of("app/wx1"), None);
    }

    #[test]
    fn the_file_wins_and_grants_read_against_it() {
        let file = file();
        let mut consumers = BTreeMap::new();
        consumers.insert("ops".to_string(), runtime("other-key", &["*"]));
        consumers.insert("copycat".to_string(), runtime("ops-key", &["*"]));
        consumers.insert(
            "shop".to_string(),
            runtime(
                "shop-key",
                &["wxlater", "wxc1", "wxc1/wxa1", "ww1/7", "wx1"],
            ),
        );
        let merged = merged(&file, &consumers);
        let names: Vec<&str> = merged.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["ops", "shop"]);
        assert_eq!(merged[0], file.consumers[0]);
        assert_eq!(
            merged[1].apps,
            vec![
                AppGrant::App("wxlater".into()),
                AppGrant::Component("wxc1".into()),
                AppGrant::Authorizer {
                    component_appid: "wxc1".into(),
                    authorizer_appid: "wxa1".into()
                },
                AppGrant::CorpAgent {
                    corpid: "ww1".into(),
                    agentid: "7".into()
                },
                AppGrant::App("wx1".into()),
            ]
        );
        assert_eq!(merged[1].scopes, vec![Scope::Read, Scope::Call]);
    }

    #[test]
    fn names_are_path_segments() {
        for good in ["shop", "shop-1", "a.b_c", &"x".repeat(64)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "ä", &"x".repeat(65), "a\n"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
