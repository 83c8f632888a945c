//! `[[consumers]]`: the business servers allowed to talk to the hub, each known by the SHA-256 of
//! its bearer key, with the accounts it may use and what it may do with them.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::{ConfigError, Place};
use super::grants::{GrantReader, Known};
use super::source::Node;
use super::validate::{first_defined, Cx};
use super::{AppGrant, AppSettings, ComponentSettings, CorpSettings, Scope, Settings};

/// `[[consumers]]`: one business server allowed to talk to the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerSettings {
    /// A unique name for logs and metrics.
    pub name: String,
    /// SHA-256 of the consumer's bearer key: the hub never stores the key itself.
    pub key_sha256: [u8; 32],
    /// The accounts this consumer may use.
    pub apps: Vec<AppGrant>,
    /// What this consumer may do with them.
    pub scopes: Vec<Scope>,
}

impl ConsumerSettings {
    /// Whether `digest` (see [`consumer_key_digest`]) is this consumer's key, compared in constant
    /// time.
    pub fn key_matches(&self, digest: &[u8; 32]) -> bool {
        bool::from(self.key_sha256.ct_eq(digest))
    }

    /// Whether this consumer holds `scope` (scopes are independent: `admin` does not imply `read`).
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

impl Settings {
    /// The consumer whose bearer key this is, if any. Every configured hash is compared in
    /// constant time, and all of them are compared whatever matches.
    pub fn find_consumer(&self, bearer_key: &str) -> Option<&ConsumerSettings> {
        let digest = consumer_key_digest(bearer_key);
        let mut found = None;
        for consumer in &self.consumers {
            if consumer.key_matches(&digest) {
                found = Some(consumer);
            }
        }
        found
    }
}

/// Reads a consumer's `key_sha256` (64 hex digits). The refusal says what is wrong without
/// repeating the text, which may be a bearer key pasted by mistake.
pub fn parse_key_sha256(text: &str) -> Result<[u8; 32], String> {
    const HINT: &str = "put the output of `wxhub hash-key <KEY>` here";
    let all_hex = text.bytes().all(|b| b.is_ascii_hexdigit());
    if text.is_empty() {
        return Err(format!("is empty; {HINT}"));
    }
    if all_hex && text.len() == 64 {
        let mut digest = [0u8; 32];
        if hex::decode_to_slice(text, &mut digest).is_ok() {
            return Ok(digest);
        }
    }
    if all_hex {
        return Err(format!(
            "is {} hex digits long, a SHA-256 has 64; {HINT}",
            text.len()
        ));
    }
    Err(format!(
        "is not a hex SHA-256 and looks like a raw bearer key (not shown); never put the key \
         itself in the file: {HINT}"
    ))
}

/// Hex SHA-256 of a consumer bearer key: what `wxhub hash-key` prints and `key_sha256` holds.
pub fn consumer_key_sha256(key: &str) -> String {
    hex::encode(consumer_key_digest(key))
}

/// SHA-256 of a consumer bearer key, as [`ConsumerSettings::key_sha256`] holds it.
pub fn consumer_key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A consumer's `apps` or `scopes` refused by [`read_grants`] or [`read_scopes`]: the entry at
/// fault, if the mistake is in one, and what is wrong. The field's name is left to the caller,
/// which places it (`consumers[1].apps[2]` at a line of the file, `apps[2]` in an admin body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The position of the entry at fault; `None` for the field as a whole.
    pub index: Option<usize>,
    /// What is wrong, e.g. `"wx1" is listed twice`.
    pub message: String,
}

impl FieldError {
    /// The error with the field's name: `apps[2]: …`, or `scopes: …` for the field as a whole.
    pub fn naming(&self, field: &str) -> String {
        match self.index {
            Some(index) => format!("{field}[{index}]: {}", self.message),
            None => format!("{field}: {}", self.message),
        }
    }
}

/// A consumer's `apps`, the one rule of the file's `[[consumers]]` and of the admin API: each
/// entry a grant `reader` reads (see [`GrantReader::read`]), none granted twice (compared as
/// read, not as written).
pub fn read_grants(
    texts: &[String],
    reader: &GrantReader<'_>,
) -> Result<Vec<AppGrant>, FieldError> {
    distinct(texts, |text| reader.read(text))
}

/// A consumer's `scopes`, the one rule of the file's `[[consumers]]` and of the admin API: at
/// least one, each a known scope, none twice.
pub fn read_scopes(texts: &[String]) -> Result<Vec<Scope>, FieldError> {
    let scopes = distinct(texts, str::parse::<Scope>)?;
    if scopes.is_empty() {
        let names: Vec<String> = Scope::ALL
            .iter()
            .map(|s| format!("{:?}", s.as_str()))
            .collect();
        return Err(FieldError {
            index: None,
            message: format!("must name at least one of {}", names.join(", ")),
        });
    }
    Ok(scopes)
}

/// `texts` read by `parse`, in order, none twice as read. Duplicates are found with a hash set: a
/// consumer's `apps` may list thousands.
fn distinct<T: Eq + Hash + Clone>(
    texts: &[String],
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, FieldError> {
    let mut values = Vec::with_capacity(texts.len());
    let mut seen = HashSet::with_capacity(texts.len());
    for (index, text) in texts.iter().enumerate() {
        let at = |message| FieldError {
            index: Some(index),
            message,
        };
        let value = parse(text).map_err(at)?;
        if !seen.insert(value.clone()) {
            return Err(at(format!("{text:?} is listed twice")));
        }
        values.push(value);
    }
    Ok(values)
}

const CONSUMER_KEYS: &[&str] = &["name", "key_sha256", "apps", "scopes"];

impl Cx<'_> {
    fn key_sha256(&self, node: &Node, path: &str) -> Result<[u8; 32], ConfigError> {
        let text = self.string(node, path)?;
        parse_key_sha256(text).map_err(|what| self.err(&node.place, path, what))
    }

    /// A consumer's `apps` or `scopes` (an array of strings at `node`) read by `read`, one of the
    /// shared rules above; a refusal is placed at the line of the entry at fault.
    fn consumer_field<T>(
        &self,
        node: &Node,
        path: &str,
        read: impl FnOnce(&[String]) -> Result<Vec<T>, FieldError>,
    ) -> Result<Vec<T>, ConfigError> {
        let items = self.array(node, path)?;
        let texts = items
            .iter()
            .map(|(item_path, item)| self.string(item, item_path).map(str::to_string))
            .collect::<Result<Vec<String>, ConfigError>>()?;
        read(&texts).map_err(|e| match e.index.and_then(|i| items.get(i)) {
            Some((item_path, item)) => self.err(&item.place, item_path, e.message),
            None => self.err(&node.place, path, e.message),
        })
    }

    pub(super) fn consumers(
        &self,
        node: Option<&Node>,
        apps: &[AppSettings],
        corps: &[CorpSettings],
        components: &[ComponentSettings],
    ) -> Result<Vec<ConsumerSettings>, ConfigError> {
        let mut consumers = Vec::new();
        let reader = GrantReader::new(Known::new(apps, corps, components));
        let mut names: HashMap<String, &Place> = HashMap::new();
        let mut keys: HashMap<[u8; 32], (String, &Place)> = HashMap::new();
        for table in self.entries(node, "consumers", CONSUMER_KEYS)? {
            let name_node = self.required(&table, "name")?;
            let name_path = table.key_path("name");
            let name = self.string(name_node, &name_path)?;
            if name.trim().is_empty() || name.chars().any(char::is_control) {
                return Err(self.err(
                    &name_node.place,
                    name_path,
                    "must be non-empty, without control characters",
                ));
            }
            if let Some(place) = names.get(name) {
                return Err(self.err(
                    &name_node.place,
                    name_path,
                    format!(
                        "duplicate consumer name {name:?} (first defined at {})",
                        first_defined(place)
                    ),
                ));
            }
            names.insert(name.to_string(), &name_node.place);

            let key_node = self.required(&table, "key_sha256")?;
            let key_path = table.key_path("key_sha256");
            let key_sha256 = self.key_sha256(key_node, &key_path)?;
            if let Some((other, place)) = keys.get(&key_sha256) {
                return Err(self.err(
                    &key_node.place,
                    key_path,
                    format!(
                        "same key as consumer {other:?} ({}); every consumer needs its own key",
                        first_defined(place)
                    ),
                ));
            }
            keys.insert(key_sha256, (name.to_string(), &key_node.place));

            let grants = match table.get("apps") {
                Some(node) => self.consumer_field(node, &table.key_path("apps"), |texts| {
                    read_grants(texts, &reader)
                })?,
                None => Vec::new(),
            };

            let scopes_node = self.required(&table, "scopes")?;
            let scopes =
                self.consumer_field(scopes_node, &table.key_path("scopes"), read_scopes)?;

            consumers.push(ConsumerSettings {
                name: name.to_string(),
                key_sha256,
                apps: grants,
                scopes,
            });
        }
        Ok(consumers)
    }
}
