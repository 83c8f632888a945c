//! The raw configuration: the TOML document as a tree of values that remember where they came
//! from (a line of the file or an environment variable), with the `WXHUB_<SECTION>_<KEY>`
//! overrides applied.
//!
//! Keeping the place next to every value is what lets each error name its line, whichever stage
//! of validation finds it.

use std::path::Path;

use super::error::{ConfigError, Place};

/// One value of the configuration and where it was written.
#[derive(Debug)]
pub(super) struct Node {
    pub place: Place,
    pub value: Value,
}

/// A TOML value; scalars the configuration never uses keep only their type name.
#[derive(Debug)]
pub(super) enum Value {
    Str(String),
    Int(i64),
    Other(&'static str),
    Array(Vec<Node>),
    Table(Vec<Entry>),
}

/// One `key = value` of a table, in document order.
#[derive(Debug)]
pub(super) struct Entry {
    pub key: String,
    /// Where the key itself is written (an override's variable for an overridden value).
    pub place: Place,
    pub node: Node,
}

impl Value {
    /// The value's type as an error message names it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Other(name) => name,
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

/// What an environment override's text is converted to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Text,
    Integer,
}

/// The table sections and their keys: the keys each section accepts, and the
/// `WXHUB_<SECTION>_<KEY>` variables that may override them.
pub(super) const SECTIONS: &[(&str, &[(&str, Kind)])] = &[
    (
        "server",
        &[
            ("listen", Kind::Text),
            ("request_timeout", Kind::Text),
            ("header_read_timeout", Kind::Text),
            ("idle_timeout", Kind::Text),
            ("max_connections", Kind::Integer),
            ("max_watchers_per_consumer", Kind::Integer),
            ("events_listen", Kind::Text),
        ],
    ),
    (
        "store",
        &[
            ("kind", Kind::Text),
            ("path", Kind::Text),
            ("url", Kind::Text),
            ("namespace", Kind::Text),
            ("sentinel_master", Kind::Text),
            // An override gives the Sentinels as one comma-separated string.
            ("sentinels", Kind::Text),
            ("username", Kind::Text),
            ("password", Kind::Text),
            ("password_file", Kind::Text),
            ("ca_file", Kind::Text),
        ],
    ),
    (
        "wechat",
        &[
            ("api_base", Kind::Text),
            ("work_api_base", Kind::Text),
            ("timeout", Kind::Text),
        ],
    ),
    (
        "refresh",
        &[
            ("refresh_before_expired", Kind::Text),
            ("refresh_retry_interval", Kind::Text),
            ("check_interval", Kind::Text),
            ("min_refresh_interval", Kind::Text),
            ("concurrency", Kind::Integer),
            ("force_reserve", Kind::Integer),
        ],
    ),
    (
        "gateway",
        &[
            ("listen", Kind::Text),
            ("work_listen", Kind::Text),
            ("max_body", Kind::Text),
            ("replay_memory", Kind::Text),
        ],
    ),
];

/// The keys a table section accepts.
pub(super) fn section_keys(section: &str) -> Vec<&'static str> {
    SECTIONS
        .iter()
        .find(|(name, _)| *name == section)
        .map(|(_, keys)| keys.iter().map(|(key, _)| *key).collect())
        .unwrap_or_default()
}

/// The environment variable that overrides `section.key`.
pub(super) fn override_var(section: &str, key: &str) -> String {
    format!(
        "WXHUB_{}_{}",
        section.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    )
}

/// Parses the TOML text into a tree of placed values.
pub(super) fn parse_document(text: &str, file: &Path) -> Result<Node, ConfigError> {
    let lines = LineIndex::new(text);
    let document = toml_edit::ImDocument::parse(text).map_err(|e| {
        let place = e.span().map_or(Place::Nowhere, |span| {
            Place::Line(lines.line_of(span.start))
        });
        let what = e.message().trim().replace('\n', "; ");
        ConfigError::new(file, place, None, format!("invalid TOML: {what}"))
    })?;
    Ok(Node {
        place: Place::Line(1),
        value: Value::Table(table_entries(document.as_table(), &lines)),
    })
}

/// Applies the `WXHUB_<SECTION>_<KEY>` variables found by `env` to the tree: each replaces (or
/// supplies) `[section] key`, placed at its variable so errors name it.
pub(super) fn apply_overrides(
    root: &mut Node,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let Value::Table(top) = &mut root.value else {
        return Ok(());
    };
    for (section, keys) in SECTIONS {
        for (key, kind) in keys.iter() {
            let var = override_var(section, key);
            let Some(text) = env(&var) else { continue };
            let place = Place::Env(var);
            let value = match kind {
                Kind::Text => Value::Str(text),
                Kind::Integer => match text.trim().parse::<i64>() {
                    Ok(n) => Value::Int(n),
                    Err(_) => {
                        return Err(ConfigError::new(
                            file,
                            place,
                            Some(format!("{section}.{key}")),
                            format!("expected an integer, got {text:?}"),
                        ))
                    }
                },
            };
            let node = Node {
                place: place.clone(),
                value,
            };
            let section_node = match top.iter_mut().position(|e| e.key == *section) {
                Some(i) => &mut top[i].node,
                None => {
                    top.push(Entry {
                        key: section.to_string(),
                        place: place.clone(),
                        node: Node {
                            place: place.clone(),
                            value: Value::Table(Vec::new()),
                        },
                    });
                    &mut top.last_mut().expect("just pushed").node
                }
            };
            // A section that is not a table is reported by validation; nothing to override.
            let Value::Table(entries) = &mut section_node.value else {
                continue;
            };
            match entries.iter_mut().find(|e| e.key == *key) {
                Some(entry) => {
                    entry.place = place;
                    entry.node = node;
                }
                None => entries.push(Entry {
                    key: key.to_string(),
                    place,
                    node,
                }),
            }
        }
    }
    Ok(())
}

/// Refuses `WXHUB_<SECTION>_<KEY>` variables whose section is a known table section but whose
/// key is not one of its keys (a typo there would otherwise be silently ignored). Variables of
/// other shapes (`WXHUB_LOG`, …) are not configuration overrides and are ignored.
pub(super) fn check_override_names<I, S>(file: &Path, names: I) -> Result<(), ConfigError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    for name in names {
        let name = name.as_ref();
        let Some(rest) = name.strip_prefix("WXHUB_") else {
            continue;
        };
        for (section, keys) in SECTIONS {
            let Some(key) = rest
                .strip_prefix(section.to_ascii_uppercase().as_str())
                .and_then(|r| r.strip_prefix('_'))
            else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            if !keys.iter().any(|(known, _)| *known == key) {
                let known: Vec<String> =
                    keys.iter().map(|(k, _)| override_var(section, k)).collect();
                return Err(ConfigError::new(
                    file,
                    Place::Env(name.to_string()),
                    Some(format!("{section}.{key}")),
                    format!(
                        "unknown setting: [{section}] has no key {key:?}; known variables: {}",
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Byte offset → 1-based line number.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset)
    }

    fn place(&self, span: Option<std::ops::Range<usize>>, fallback: &Place) -> Place {
        span.map_or_else(|| fallback.clone(), |s| Place::Line(self.line_of(s.start)))
    }
}

fn table_entries(table: &toml_edit::Table, lines: &LineIndex) -> Vec<Entry> {
    let mut entries = Vec::new();
    for (key, item) in table.iter() {
        let key_place = lines.place(table.key(key).and_then(|k| k.span()), &Place::Nowhere);
        if let Some(node) = item_node(item, &key_place, lines) {
            entries.push(Entry {
                key: key.to_string(),
                place: key_place,
                node,
            });
        }
    }
    entries
}

fn item_node(item: &toml_edit::Item, key_place: &Place, lines: &LineIndex) -> Option<Node> {
    use toml_edit::Item;
    let node = match item {
        Item::None => return None,
        Item::Value(value) => value_node(value, key_place, lines),
        Item::Table(table) => Node {
            place: lines.place(table.span(), key_place),
            value: Value::Table(table_entries(table, lines)),
        },
        Item::ArrayOfTables(array) => Node {
            place: lines.place(array.span(), key_place),
            value: Value::Array(
                array
                    .iter()
                    .map(|table| Node {
                        place: lines.place(table.span(), key_place),
                        value: Value::Table(table_entries(table, lines)),
                    })
                    .collect(),
            ),
        },
    };
    Some(node)
}

fn value_node(value: &toml_edit::Value, key_place: &Place, lines: &LineIndex) -> Node {
    use toml_edit::Value as V;
    let place = lines.place(value.span(), key_place);
    let value = match value {
        V::String(s) => Value::Str(s.value().clone()),
        V::Integer(i) => Value::Int(*i.value()),
        V::Float(_) => Value::Other("a float"),
        V::Boolean(_) => Value::Other("a boolean"),
        V::Datetime(_) => Value::Other("a date-time"),
        V::Array(array) => {
            Value::Array(array.iter().map(|v| value_node(v, &place, lines)).collect())
        }
        V::InlineTable(table) => {
            let mut entries = Vec::new();
            for (key, v) in table.iter() {
                let key_place = lines.place(table.key(key).and_then(|k| k.span()), &place);
                entries.push(Entry {
                    key: key.to_string(),
                    node: value_node(v, &key_place, lines),
                    place: key_place,
                });
            }
            Value::Table(entries)
        }
    };
    Node { place, value }
}
