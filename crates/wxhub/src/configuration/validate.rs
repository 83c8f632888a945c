//! From the raw tree to typed [`Settings`]: every rule of docs/architecture.md#configuration, each
//! failure placed at the line (or environment variable) of the value that breaks it.
//!
//! This file holds what every section shares: the walk over the sections (each checked, so that
//! one run reports a mistake in each), the validation context `Cx` and its readers of plain
//! values (tables, strings, arrays, durations, counts, identifiers). Each section's own rules are
//! `impl Cx` blocks in the section's file.

use std::collections::HashSet;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{ConfigError, Place};
use super::source::{Entry, Node, Value};
use super::Settings;

const TOP_KEYS: &[&str] = &[
    "server",
    "store",
    "wechat",
    "refresh",
    "apps",
    "corps",
    "consumers",
    "secrets",
    "components",
    "suites",
    "providers",
    "gateway",
];

/// Validates the whole tree. `file` names the configuration file; its directory anchors relative
/// paths. `env` resolves `${NAME}` secrets.
pub(super) fn settings(
    root: &Node,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let cx = Cx {
        file,
        dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        env,
    };
    let top = cx.table(root, String::new(), TOP_KEYS)?;
    // Every section is checked, so that one run reports a mistake in each of them.
    let mut errors = Vec::new();
    let server = keep(&mut errors, cx.server(top.get("server")));
    let store = keep(&mut errors, cx.store(top.get("store")));
    let wechat = keep(&mut errors, cx.wechat(top.get("wechat")));
    let refresh = keep(&mut errors, cx.refresh(top.get("refresh")));
    let apps = keep(&mut errors, cx.apps(top.get("apps")));
    let corps = keep(&mut errors, cx.corps(top.get("corps")));
    let secrets = keep(&mut errors, cx.secrets(top.get("secrets")));
    let gateway = keep(&mut errors, cx.gateway(top.get("gateway")));
    let suites = keep(&mut errors, cx.suites(top.get("suites")));
    let providers = keep(&mut errors, cx.providers(top.get("providers")));
    let components = match &apps {
        Some(apps) => keep(&mut errors, cx.components(top.get("components"), apps)),
        None => None,
    };
    // Grants name apps, corps and platforms: checked only against valid lists of them.
    let consumers = match (&apps, &corps, &components) {
        (Some(apps), Some(corps), Some(components)) => keep(
            &mut errors,
            cx.consumers(top.get("consumers"), apps, corps, components),
        ),
        _ => None,
    };
    let (
        Some(server),
        Some(store),
        Some(wechat),
        Some(refresh),
        Some(apps),
        Some(corps),
        Some(components),
        Some(consumers),
        Some(secrets),
        Some(gateway),
        Some(suites),
        Some(providers),
    ) = (
        server, store, wechat, refresh, apps, corps, components, consumers, secrets, gateway,
        suites, providers,
    )
    else {
        return Err(ConfigError::all(errors));
    };
    Ok(Settings {
        server,
        store,
        wechat,
        refresh,
        apps,
        corps,
        components,
        suites,
        providers,
        consumers,
        secrets,
        gateway,
    })
}

/// The value of a section that validated, or `None` with its error collected into `errors`.
fn keep<T>(errors: &mut Vec<ConfigError>, result: Result<T, ConfigError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            errors.push(error);
            None
        }
    }
}

/// The validation context: what every error needs to name its file, and what secrets need.
pub(super) struct Cx<'a> {
    file: &'a Path,
    dir: PathBuf,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
}

/// A table being read, with its key path (`apps[1]`) for messages.
pub(super) struct Table<'n> {
    path: String,
    pub(super) place: &'n Place,
    pub(super) entries: &'n [Entry],
}

impl<'n> Table<'n> {
    pub(super) fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.node)
    }

    pub(super) fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

/// How the first occurrence of a duplicated value is named: "line 8".
pub(super) fn first_defined(place: &Place) -> String {
    match place {
        Place::Line(line) => format!("line {line}"),
        Place::Env(var) => format!("environment variable {var}"),
        Place::Nowhere => "elsewhere".into(),
    }
}

/// Whether `text` has only the characters of an account id: letters, digits, '_', '-' and '.'.
pub(super) fn is_identifier(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl Cx<'_> {
    pub(super) fn err(
        &self,
        place: &Place,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::new(self.file, place.clone(), Some(key.into()), message)
    }

    pub(super) fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        }
    }

    pub(super) fn table<'n>(
        &self,
        node: &'n Node,
        path: String,
        allowed: &[&str],
    ) -> Result<Table<'n>, ConfigError> {
        let Value::Table(entries) = &node.value else {
            return Err(self.err(
                &node.place,
                path,
                format!("expected a table, found {}", node.value.type_name()),
            ));
        };
        let table = Table {
            path,
            place: &node.place,
            entries,
        };
        for entry in entries {
            if !allowed.contains(&entry.key.as_str()) {
                return Err(self.err(
                    &entry.place,
                    table.key_path(&entry.key),
                    format!("unknown key; expected one of: {}", allowed.join(", ")),
                ));
            }
        }
        Ok(table)
    }

    pub(super) fn required<'n>(
        &self,
        table: &Table<'n>,
        key: &str,
    ) -> Result<&'n Node, ConfigError> {
        table
            .get(key)
            .ok_or_else(|| self.err(table.place, table.key_path(key), "required key is missing"))
    }

    pub(super) fn string<'n>(&self, node: &'n Node, path: &str) -> Result<&'n str, ConfigError> {
        match &node.value {
            Value::Str(s) => Ok(s),
            other => Err(self.err(
                &node.place,
                path,
                format!("expected a string, found {}", other.type_name()),
            )),
        }
    }

    /// The elements of an array, each with its key path (`apps[0]`).
    pub(super) fn array<'n>(
        &self,
        node: &'n Node,
        path: &str,
    ) -> Result<Vec<(String, &'n Node)>, ConfigError> {
        match &node.value {
            Value::Array(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, item)| (format!("{path}[{i}]"), item))
                .collect()),
            other => Err(self.err(
                &node.place,
                path,
                format!("expected an array, found {}", other.type_name()),
            )),
        }
    }

    /// An array of distinct strings parsed by `parse`, in order; each element's error names its
    /// index. Duplicates are found with a hash set: a consumer's `apps` may list thousands.
    pub(super) fn string_set<T: Eq + Hash + Clone>(
        &self,
        node: &Node,
        path: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ConfigError> {
        let mut values = Vec::new();
        let mut seen = HashSet::new();
        for (item_path, item) in self.array(node, path)? {
            let text = self.string(item, &item_path)?;
            let value = parse(text).map_err(|what| self.err(&item.place, &item_path, what))?;
            if !seen.insert(value.clone()) {
                return Err(self.err(&item.place, &item_path, format!("{text:?} is listed twice")));
            }
            values.push(value);
        }
        Ok(values)
    }

    pub(super) fn duration(&self, node: &Node, path: &str) -> Result<Duration, ConfigError> {
        match &node.value {
            Value::Str(text) => super::parse_duration(text).map_err(|e| {
                self.err(&node.place, path, format!("invalid duration {text:?}: {e}"))
            }),
            Value::Int(n) => Err(self.err(
                &node.place,
                path,
                format!("a bare number ({n}) is ambiguous; use a unit, e.g. \"30s\""),
            )),
            other => Err(self.err(
                &node.place,
                path,
                format!(
                    "expected a duration such as \"30s\", found {}",
                    other.type_name()
                ),
            )),
        }
    }

    pub(super) fn positive_duration(
        &self,
        node: &Node,
        path: &str,
    ) -> Result<Duration, ConfigError> {
        let duration = self.duration(node, path)?;
        if duration.is_zero() {
            return Err(self.err(&node.place, path, "must be longer than zero"));
        }
        Ok(duration)
    }

    /// An account id (appid, corpid, agentid): non-empty, and safe inside URL paths and the
    /// `/`-separated storage keys.
    pub(super) fn identifier(&self, node: &Node, path: &str) -> Result<String, ConfigError> {
        let text = self.string(node, path)?;
        if text.is_empty() {
            return Err(self.err(&node.place, path, "must not be empty"));
        }
        if !is_identifier(text) {
            return Err(self.err(
                &node.place,
                path,
                format!("{text:?} may contain only letters, digits, '_', '-' and '.'"),
            ));
        }
        Ok(text.to_string())
    }

    /// A count of at least 1 that fits in a `u32`.
    pub(super) fn positive_count(&self, node: &Node, path: String) -> Result<usize, ConfigError> {
        match node.value {
            Value::Int(n) if n >= 1 => usize::try_from(n)
                .ok()
                .filter(|n| u32::try_from(*n).is_ok())
                .ok_or_else(|| self.err(&node.place, &path, format!("{n} is too large"))),
            Value::Int(n) => {
                Err(self.err(&node.place, path, format!("must be at least 1, found {n}")))
            }
            ref other => Err(self.err(
                &node.place,
                path,
                format!("expected an integer, found {}", other.type_name()),
            )),
        }
    }

    /// The elements of `[[name]]` (absent: none), each checked to be a table with `allowed` keys.
    pub(super) fn entries<'n>(
        &self,
        node: Option<&'n Node>,
        name: &str,
        allowed: &[&str],
    ) -> Result<Vec<Table<'n>>, ConfigError> {
        let Some(node) = node else {
            return Ok(Vec::new());
        };
        if !matches!(node.value, Value::Array(_)) {
            return Err(self.err(
                &node.place,
                name,
                format!(
                    "expected an array of tables ([[{name}]]), found {}",
                    node.value.type_name()
                ),
            ));
        }
        self.array(node, name)?
            .into_iter()
            .map(|(path, item)| self.table(item, path, allowed))
            .collect()
    }
}
