//! From the raw tree to typed [`Settings`]: every rule of docs/architecture.md#configuration, each failure placed at the
//! line (or environment variable) of the value that breaks it.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;

use super::error::{ConfigError, Place};
use super::source::{section_keys, Entry, Node, Value};
use super::{
    mask_url_userinfo, AppGrant, AppSettings, ComponentSettings, ConsumerSettings, CorpSettings,
    GatewaySettings, MasterKey, RedisSettings, RedisTarget, RefreshOverrides, RefreshSettings,
    Scope, Secret, SecretSource, SecretsSettings, ServerSettings, Settings, StoreSettings,
    TokenMode, WechatSettings, DEFAULT_REDIS_NAMESPACE, DEFAULT_SQLITE_PATH,
};
use crate::credential::{CorpTicketKind, TicketKind};

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
    "gateway",
];
const APP_KEYS: &[&str] = &[
    "appid",
    "secret",
    "secret_file",
    "mode",
    "tickets",
    "refresh_before_expired",
    "refresh_retry_interval",
    "check_interval",
];
const CORP_KEYS: &[&str] = &[
    "corpid",
    "agentid",
    "secret",
    "secret_file",
    "tickets",
    "refresh_before_expired",
    "refresh_retry_interval",
    "check_interval",
];
const COMPONENT_KEYS: &[&str] = &[
    "component_appid",
    "secret",
    "secret_file",
    "token",
    "token_file",
    "encoding_aes_key",
    "encoding_aes_key_file",
    "previous_encoding_aes_key",
    "previous_encoding_aes_key_file",
    "authorizer_tickets",
    "refresh_before_expired",
    "refresh_retry_interval",
    "check_interval",
];
const SECRETS_KEYS: &[&str] = &["master_key", "master_key_file"];
const CONSUMER_KEYS: &[&str] = &["name", "key_sha256", "apps", "scopes"];

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
    ) = (
        server, store, wechat, refresh, apps, corps, components, consumers, secrets, gateway,
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
struct Cx<'a> {
    file: &'a Path,
    dir: PathBuf,
    env: &'a dyn Fn(&str) -> Option<String>,
}

/// A table being read, with its key path (`apps[1]`) for messages.
struct Table<'n> {
    path: String,
    place: &'n Place,
    entries: &'n [Entry],
}

impl<'n> Table<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.node)
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

/// How the first occurrence of a duplicated value is named: "line 8".
fn first_defined(place: &Place) -> String {
    match place {
        Place::Line(line) => format!("line {line}"),
        Place::Env(var) => format!("environment variable {var}"),
        Place::Nowhere => "elsewhere".into(),
    }
}

/// Whether `url` starts with one of `schemes` and has something after it.
fn redis_scheme_ok(url: &str, schemes: &[&str]) -> bool {
    schemes
        .iter()
        .any(|scheme| url.len() > scheme.len() && url.starts_with(scheme))
}

/// Whether a URL's userinfo carries a password (`redis://user:pw@h`, `redis://:pw@h`).
fn url_has_password(url: &str) -> bool {
    let Some(scheme_end) = url.find("://") else {
        return false;
    };
    let rest = &url[scheme_end + 3..];
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

fn is_identifier(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `${NAME}` → `Some(Ok(NAME))`; something that starts like a reference but is not one →
/// `Some(Err(()))`; anything else (an inline secret) → `None`.
fn env_reference(text: &str) -> Option<Result<&str, ()>> {
    let inner = text.strip_prefix("${")?;
    let name = inner.strip_suffix('}');
    Some(match name {
        Some(name)
            if !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Ok(name)
        }
        _ => Err(()),
    })
}

impl Cx<'_> {
    fn err(
        &self,
        place: &Place,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::new(self.file, place.clone(), Some(key.into()), message)
    }

    fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        }
    }

    fn table<'n>(
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

    fn required<'n>(&self, table: &Table<'n>, key: &str) -> Result<&'n Node, ConfigError> {
        table
            .get(key)
            .ok_or_else(|| self.err(table.place, table.key_path(key), "required key is missing"))
    }

    fn string<'n>(&self, node: &'n Node, path: &str) -> Result<&'n str, ConfigError> {
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
    fn array<'n>(
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
    fn string_set<T: Eq + Hash + Clone>(
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

    fn duration(&self, node: &Node, path: &str) -> Result<Duration, ConfigError> {
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

    fn positive_duration(&self, node: &Node, path: &str) -> Result<Duration, ConfigError> {
        let duration = self.duration(node, path)?;
        if duration.is_zero() {
            return Err(self.err(&node.place, path, "must be longer than zero"));
        }
        Ok(duration)
    }

    /// An account id (appid, corpid, agentid): non-empty, and safe inside URL paths and the
    /// `/`-separated storage keys.
    fn identifier(&self, node: &Node, path: &str) -> Result<String, ConfigError> {
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

    fn base_url(&self, node: &Node, path: &str) -> Result<String, ConfigError> {
        let text = self.string(node, path)?;
        let shown = mask_url_userinfo(text);
        let fail = |why: &str| self.err(&node.place, path, format!("invalid URL {shown:?}: {why}"));
        if !(text.starts_with("http://") || text.starts_with("https://")) {
            return Err(fail("expected an http:// or https:// URL"));
        }
        let url = reqwest::Url::parse(text).map_err(|e| fail(&e.to_string()))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(fail("no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(fail("a base URL has no query or fragment"));
        }
        Ok(text.trim_end_matches('/').to_string())
    }

    fn server(&self, node: Option<&Node>) -> Result<ServerSettings, ConfigError> {
        let mut server = ServerSettings::default();
        let Some(node) = node else {
            return Ok(server);
        };
        let table = self.table(node, "server".into(), &section_keys("server"))?;
        if let Some(node) = table.get("listen") {
            let path = table.key_path("listen");
            let text = self.string(node, &path)?;
            server.listen = text.parse().map_err(|_| {
                self.err(
                    &node.place,
                    &path,
                    format!(
                        "invalid address {text:?}; expected an IP address and port, e.g. \"127.0.0.1:8080\""
                    ),
                )
            })?;
        }
        if let Some(node) = table.get("request_timeout") {
            server.request_timeout =
                self.positive_duration(node, &table.key_path("request_timeout"))?;
        }
        if let Some(node) = table.get("events_listen") {
            let path = table.key_path("events_listen");
            let text = self.string(node, &path)?;
            server.events_listen = Some(text.parse().map_err(|_| {
                self.err(
                    &node.place,
                    &path,
                    format!(
                        "invalid address {text:?}; expected an IP address and port, e.g. \"0.0.0.0:8443\""
                    ),
                )
            })?);
        }
        if let Some(node) = table.get("header_read_timeout") {
            server.header_read_timeout =
                self.positive_duration(node, &table.key_path("header_read_timeout"))?;
        }
        if let Some(node) = table.get("idle_timeout") {
            server.idle_timeout = self.positive_duration(node, &table.key_path("idle_timeout"))?;
        }
        if let Some(node) = table.get("max_connections") {
            server.max_connections =
                Some(self.positive_count(node, table.key_path("max_connections"))?);
        }
        if let Some(node) = table.get("max_watchers_per_consumer") {
            server.max_watchers_per_consumer =
                self.positive_count(node, table.key_path("max_watchers_per_consumer"))?;
        }
        Ok(server)
    }

    /// A count of at least 1 that fits in a `u32`.
    fn positive_count(&self, node: &Node, path: String) -> Result<usize, ConfigError> {
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

    fn store(&self, node: Option<&Node>) -> Result<StoreSettings, ConfigError> {
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

    /// `[store] kind = "redis"`: `url`, or `sentinel_master` with `sentinels`; then the
    /// namespace, the credentials and the CA file. No message shows a URL: it may hold a
    /// password.
    fn redis_store(
        &self,
        table: &Table,
        kind_node: Option<&Node>,
        kind_said: &str,
    ) -> Result<StoreSettings, ConfigError> {
        let target = self.redis_target(table, kind_node, kind_said)?;
        let namespace = match table.get("namespace") {
            Some(node) => {
                let key = table.key_path("namespace");
                let text = self.string(node, &key)?;
                if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(self.err(
                        &node.place,
                        key,
                        format!("{text:?} must be non-empty, without spaces"),
                    ));
                }
                // The namespace is written in braces as every key's Redis Cluster hash tag.
                if text.contains(['{', '}']) {
                    return Err(self.err(
                        &node.place,
                        key,
                        format!("{text:?} must not contain braces"),
                    ));
                }
                text
            }
            None => DEFAULT_REDIS_NAMESPACE,
        };
        let username = match table.get("username") {
            Some(node) => {
                let key = table.key_path("username");
                let text = self.string(node, &key)?;
                if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(self.err(&node.place, key, "must be non-empty, without spaces"));
                }
                Some(text.to_string())
            }
            None => None,
        };
        let password = if table.get("password").is_some() || table.get("password_file").is_some() {
            Some(self.secret_named(table, "password")?)
        } else {
            None
        };
        if let RedisTarget::Url(url) = &target {
            if password.is_some() && url_has_password(url) {
                let node = table
                    .get("password")
                    .or_else(|| table.get("password_file"))
                    .map_or(table.place, |n| &n.place);
                return Err(self.err(
                    node,
                    table.key_path("password"),
                    "the url carries a password too; give it in one place only",
                ));
            }
        }
        let ca_file = match table.get("ca_file") {
            Some(node) => {
                let key = table.key_path("ca_file");
                let text = self.string(node, &key)?;
                if text.is_empty() {
                    return Err(self.err(&node.place, key, "must not be empty"));
                }
                let uses_tls = match &target {
                    RedisTarget::Url(url) => url.starts_with("rediss://"),
                    RedisTarget::Sentinel { sentinels, .. } => {
                        sentinels.iter().any(|s| s.starts_with("rediss://"))
                    }
                };
                if !uses_tls {
                    return Err(self.err(
                        &node.place,
                        key,
                        "only used with TLS: write the url (or the sentinels) as rediss://",
                    ));
                }
                let path = self.resolve(text);
                if !path.is_file() {
                    return Err(self.err(
                        &node.place,
                        key,
                        format!("{} is not a readable file", path.display()),
                    ));
                }
                Some(path)
            }
            None => None,
        };
        Ok(StoreSettings::Redis(RedisSettings {
            target,
            namespace: namespace.to_string(),
            username,
            password,
            ca_file,
        }))
    }

    /// `url = "…"`, or `sentinel_master = "…"` with `sentinels = [...]` (an array, or one
    /// comma-separated string from an environment override): exactly one of the two.
    fn redis_target(
        &self,
        table: &Table,
        kind_node: Option<&Node>,
        kind_said: &str,
    ) -> Result<RedisTarget, ConfigError> {
        let url_path = table.key_path("url");
        let master = table.get("sentinel_master");
        let sentinels = table.get("sentinels");
        match (table.get("url"), master, sentinels) {
            (Some(url_node), None, None) => {
                let url = self.string(url_node, &url_path)?;
                if !redis_scheme_ok(url, &["redis://", "rediss://", "redis+unix://", "unix://"]) {
                    return Err(self.err(
                        &url_node.place,
                        url_path,
                        "expected a redis://, rediss:// or unix:// URL (the value is not shown: it may hold a password)",
                    ));
                }
                Ok(RedisTarget::Url(url.to_string()))
            }
            (Some(_), Some(other), _) | (Some(_), None, Some(other)) => Err(self.err(
                &other.place,
                url_path,
                "give either `url` (one server) or `sentinel_master` with `sentinels`, not both",
            )),
            (None, Some(master_node), Some(sentinels_node)) => {
                let master_path = table.key_path("sentinel_master");
                let master = self.string(master_node, &master_path)?;
                if master.is_empty() || master.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(self.err(
                        &master_node.place,
                        master_path,
                        "must be non-empty, without spaces",
                    ));
                }
                let sentinels = self.sentinel_urls(sentinels_node, &table.key_path("sentinels"))?;
                Ok(RedisTarget::Sentinel {
                    master: master.to_string(),
                    sentinels,
                })
            }
            (None, Some(node), None) => Err(self.err(
                &node.place,
                table.key_path("sentinels"),
                "required with `sentinel_master`, e.g. sentinels = [\"redis://10.0.0.1:26379\", \"redis://10.0.0.2:26379\"]",
            )),
            (None, None, Some(node)) => Err(self.err(
                &node.place,
                table.key_path("sentinel_master"),
                "required with `sentinels`: the name the Sentinels monitor, e.g. sentinel_master = \"mymaster\"",
            )),
            (None, None, None) => {
                let place = kind_node.map_or(table.place, |n| &n.place);
                Err(self.err(
                    place,
                    url_path,
                    format!(
                        "required with {kind_said}, e.g. url = \"redis://127.0.0.1:6379/0\" (or sentinel_master and sentinels)"
                    ),
                ))
            }
        }
    }

    /// The `sentinels` list: at least one `redis://` or `rediss://` URL, all of one scheme.
    fn sentinel_urls(&self, node: &Node, path: &str) -> Result<Vec<String>, ConfigError> {
        let items: Vec<(String, &Place, String)> = match &node.value {
            Value::Str(text) => text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| (path.to_string(), &node.place, s.to_string()))
                .collect(),
            _ => {
                let mut items = Vec::new();
                for (item_path, item) in self.array(node, path)? {
                    let text = self.string(item, &item_path)?;
                    items.push((item_path, &item.place, text.to_string()));
                }
                items
            }
        };
        if items.is_empty() {
            return Err(self.err(&node.place, path, "list at least one Sentinel"));
        }
        for (item_path, place, url) in &items {
            if !redis_scheme_ok(url, &["redis://", "rediss://"]) {
                return Err(self.err(
                    place,
                    item_path,
                    "expected a redis:// or rediss:// URL of a Sentinel, e.g. \"redis://10.0.0.1:26379\" (the value is not shown: it may hold a password)",
                ));
            }
        }
        let tls = items[0].2.starts_with("rediss://");
        if let Some((item_path, place, _)) = items
            .iter()
            .find(|(_, _, url)| url.starts_with("rediss://") != tls)
        {
            return Err(self.err(
                place,
                item_path,
                "mixes redis:// and rediss://: use TLS for every Sentinel or for none",
            ));
        }
        Ok(items.into_iter().map(|(_, _, url)| url).collect())
    }

    fn wechat(&self, node: Option<&Node>) -> Result<WechatSettings, ConfigError> {
        let mut wechat = WechatSettings::default();
        let Some(node) = node else {
            return Ok(wechat);
        };
        let table = self.table(node, "wechat".into(), &section_keys("wechat"))?;
        if let Some(node) = table.get("api_base") {
            wechat.api_base = self.base_url(node, &table.key_path("api_base"))?;
        }
        if let Some(node) = table.get("work_api_base") {
            wechat.work_api_base = self.base_url(node, &table.key_path("work_api_base"))?;
        }
        if let Some(node) = table.get("timeout") {
            wechat.timeout = self.positive_duration(node, &table.key_path("timeout"))?;
        }
        Ok(wechat)
    }

    /// `[gateway]`: two optional listen addresses and a body size (`"10MiB"`, `"512KiB"`, or a
    /// number of bytes).
    fn gateway(&self, node: Option<&Node>) -> Result<GatewaySettings, ConfigError> {
        let mut gateway = GatewaySettings::default();
        let Some(node) = node else {
            return Ok(gateway);
        };
        let table = self.table(node, "gateway".into(), &section_keys("gateway"))?;
        for key in ["listen", "work_listen"] {
            let Some(node) = table.get(key) else { continue };
            let path = table.key_path(key);
            let text = self.string(node, &path)?;
            let address = text.parse().map_err(|_| {
                self.err(
                    &node.place,
                    &path,
                    format!(
                        "invalid address {text:?}; expected an IP address and port, e.g. \"127.0.0.1:8081\""
                    ),
                )
            })?;
            match key {
                "listen" => gateway.listen = Some(address),
                _ => gateway.work_listen = Some(address),
            }
        }
        if let Some(node) = table.get("max_body") {
            gateway.max_body = self.size(node, table.key_path("max_body"))?;
        }
        if let Some(node) = table.get("replay_memory") {
            gateway.replay_memory = self.size(node, table.key_path("replay_memory"))?;
        }
        Ok(gateway)
    }

    /// A positive size in bytes: `"10MiB"`, `"512KiB"` or a number of bytes.
    fn size(&self, node: &Node, path: String) -> Result<usize, ConfigError> {
        let size = match &node.value {
            Value::Str(text) => parse_size(text),
            Value::Int(n) => usize::try_from(*n).ok(),
            _ => None,
        };
        size.filter(|n| *n > 0).ok_or_else(|| {
            self.err(
                &node.place,
                path,
                "expected a positive size such as \"10MiB\", \"512KiB\" or a number of bytes",
            )
        })
    }

    fn refresh(&self, node: Option<&Node>) -> Result<RefreshSettings, ConfigError> {
        let mut refresh = RefreshSettings::default();
        let Some(node) = node else {
            return Ok(refresh);
        };
        let table = self.table(node, "refresh".into(), &section_keys("refresh"))?;
        if let Some(node) = table.get("refresh_before_expired") {
            refresh.refresh_before_expired =
                self.positive_duration(node, &table.key_path("refresh_before_expired"))?;
        }
        if let Some(node) = table.get("refresh_retry_interval") {
            refresh.refresh_retry_interval =
                self.positive_duration(node, &table.key_path("refresh_retry_interval"))?;
        }
        if let Some(node) = table.get("check_interval") {
            refresh.check_interval =
                Some(self.positive_duration(node, &table.key_path("check_interval"))?);
        }
        if let Some(node) = table.get("min_refresh_interval") {
            refresh.min_refresh_interval =
                self.duration(node, &table.key_path("min_refresh_interval"))?;
        }
        if let Some(node) = table.get("concurrency") {
            let path = table.key_path("concurrency");
            refresh.concurrency = match node.value {
                Value::Int(n) if n >= 1 => usize::try_from(n)
                    .map_err(|_| self.err(&node.place, &path, format!("{n} is too large")))?,
                Value::Int(n) => {
                    return Err(self.err(
                        &node.place,
                        path,
                        format!("must be at least 1 (one refresh worker), found {n}"),
                    ))
                }
                ref other => {
                    return Err(self.err(
                        &node.place,
                        path,
                        format!("expected an integer, found {}", other.type_name()),
                    ))
                }
            };
        }
        if let Some(node) = table.get("force_reserve") {
            let path = table.key_path("force_reserve");
            refresh.force_reserve = match node.value {
                Value::Int(n) if (0..=19).contains(&n) => n as u32,
                Value::Int(n) => {
                    return Err(self.err(
                        &node.place,
                        path,
                        format!("must be between 0 and 19 (of WeChat's 20 a day), found {n}"),
                    ))
                }
                ref other => {
                    return Err(self.err(
                        &node.place,
                        path,
                        format!("expected an integer, found {}", other.type_name()),
                    ))
                }
            };
        }
        Ok(refresh)
    }

    /// The elements of `[[name]]` (absent: none), each checked to be a table with `allowed` keys.
    fn entries<'n>(
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

    /// `secret = "inline"`, `secret = "${ENV_NAME}"` or `secret_file = "path"`: exactly one.
    /// No message ever includes the value.
    fn secret(&self, table: &Table) -> Result<Secret, ConfigError> {
        self.secret_named(table, "secret")
    }

    /// [`Cx::secret`] under the key `name` (and `{name}_file`).
    fn secret_named(&self, table: &Table, name: &str) -> Result<Secret, ConfigError> {
        let secret_path = table.key_path(name);
        let file_key = format!("{name}_file");
        let file_path = table.key_path(&file_key);
        match (table.get(name), table.get(&file_key)) {
            (Some(_), Some(file)) => Err(self.err(
                &file.place,
                file_path,
                format!("give the secret either as `{name}` or as `{file_key}`, not both"),
            )),
            (None, None) => Err(self.err(
                table.place,
                secret_path,
                format!("required key is missing: give `{name} = \"${{ENV_NAME}}\"`, `{name} = \"…\"` or `{file_key} = \"path\"`"),
            )),
            (Some(node), None) => {
                let text = self.string(node, &secret_path)?;
                match env_reference(text) {
                    Some(Ok(name)) => match (self.env)(name) {
                        None => Err(self.err(
                            &node.place,
                            secret_path,
                            format!("environment variable {name} is not set"),
                        )),
                        Some(value) if value.trim().is_empty() => Err(self.err(
                            &node.place,
                            secret_path,
                            format!("environment variable {name} is empty"),
                        )),
                        Some(value) => Ok(Secret::with_source(
                            value.trim().to_string(),
                            SecretSource::Env(name.to_string()),
                        )),
                    },
                    Some(Err(())) => Err(self.err(
                        &node.place,
                        secret_path,
                        "malformed environment reference: write \"${NAME}\" (letters, digits and '_')",
                    )),
                    None if text.trim().is_empty() => {
                        Err(self.err(&node.place, secret_path, "must not be empty"))
                    }
                    None => Ok(Secret::with_source(
                        text.trim().to_string(),
                        SecretSource::Inline,
                    )),
                }
            }
            (None, Some(node)) => {
                let text = self.string(node, &file_path)?;
                if text.is_empty() {
                    return Err(self.err(&node.place, file_path, "must not be empty"));
                }
                let path = self.resolve(text);
                let content = std::fs::read_to_string(&path).map_err(|e| {
                    self.err(
                        &node.place,
                        &file_path,
                        format!("cannot read secret file {}: {e}", path.display()),
                    )
                })?;
                let value = content.trim();
                if value.is_empty() {
                    return Err(self.err(
                        &node.place,
                        file_path,
                        format!("secret file {} is empty", path.display()),
                    ));
                }
                Ok(Secret::with_source(
                    value.to_string(),
                    SecretSource::File(path),
                ))
            }
        }
    }

    fn apps(&self, node: Option<&Node>) -> Result<Vec<AppSettings>, ConfigError> {
        let mut apps = Vec::new();
        let mut first: HashMap<String, &Place> = HashMap::new();
        for table in self.entries(node, "apps", APP_KEYS)? {
            let appid_node = self.required(&table, "appid")?;
            let appid_path = table.key_path("appid");
            let appid = self.identifier(appid_node, &appid_path)?;
            if let Some(place) = first.get(&appid) {
                return Err(self.err(
                    &appid_node.place,
                    appid_path,
                    format!(
                        "duplicate appid {appid:?} (first defined at {})",
                        first_defined(place)
                    ),
                ));
            }
            first.insert(appid.clone(), &appid_node.place);
            let secret = self.secret(&table)?;
            let mode = match table.get("mode") {
                Some(node) => {
                    let path = table.key_path("mode");
                    let text = self.string(node, &path)?;
                    text.parse::<TokenMode>()
                        .map_err(|what| self.err(&node.place, path, what))?
                }
                None => TokenMode::default(),
            };
            let tickets = match table.get("tickets") {
                Some(node) => self.string_set(node, &table.key_path("tickets"), |text| {
                    text.parse::<TicketKind>().map_err(|_| {
                        format!("unknown ticket {text:?}; expected \"jsapi\" or \"wx_card\"")
                    })
                })?,
                None => Vec::new(),
            };
            let refresh = self.refresh_overrides(&table)?;
            apps.push(AppSettings {
                appid,
                secret,
                mode,
                tickets,
                refresh,
            });
        }
        Ok(apps)
    }

    fn corps(&self, node: Option<&Node>) -> Result<Vec<CorpSettings>, ConfigError> {
        let mut corps = Vec::new();
        let mut first: HashMap<(String, String), &Place> = HashMap::new();
        for table in self.entries(node, "corps", CORP_KEYS)? {
            let corpid_node = self.required(&table, "corpid")?;
            let corpid = self.identifier(corpid_node, &table.key_path("corpid"))?;
            let agentid_node = self.required(&table, "agentid")?;
            let agentid_path = table.key_path("agentid");
            let agentid = match agentid_node.value {
                Value::Int(n) if n >= 0 => n.to_string(),
                Value::Int(n) => {
                    return Err(self.err(
                        &agentid_node.place,
                        agentid_path,
                        format!("{n} is negative"),
                    ))
                }
                Value::Str(_) => self.identifier(agentid_node, &agentid_path)?,
                ref other => {
                    return Err(self.err(
                        &agentid_node.place,
                        agentid_path,
                        format!(
                            "expected a string or an integer, found {}",
                            other.type_name()
                        ),
                    ))
                }
            };
            let pair = (corpid.clone(), agentid.clone());
            if let Some(place) = first.get(&pair) {
                return Err(self.err(
                    &agentid_node.place,
                    agentid_path,
                    format!(
                        "duplicate corp app \"{corpid}/{agentid}\" (first defined at {})",
                        first_defined(place)
                    ),
                ));
            }
            first.insert(pair, &agentid_node.place);
            let secret = self.secret(&table)?;
            let tickets = match table.get("tickets") {
                Some(node) => self.string_set(node, &table.key_path("tickets"), |text| {
                    text.parse::<CorpTicketKind>().map_err(|_| {
                        format!("unknown ticket {text:?}; expected \"jsapi\" or \"agent_config\"")
                    })
                })?,
                None => Vec::new(),
            };
            let refresh = self.refresh_overrides(&table)?;
            corps.push(CorpSettings {
                corpid,
                agentid,
                secret,
                tickets,
                refresh,
            });
        }
        Ok(corps)
    }

    fn components(
        &self,
        node: Option<&Node>,
        apps: &[AppSettings],
    ) -> Result<Vec<ComponentSettings>, ConfigError> {
        let mut components = Vec::new();
        let mut first: HashMap<String, &Place> = HashMap::new();
        for table in self.entries(node, "components", COMPONENT_KEYS)? {
            let appid_node = self.required(&table, "component_appid")?;
            let appid_path = table.key_path("component_appid");
            let component_appid = self.identifier(appid_node, &appid_path)?;
            if let Some(place) = first.get(&component_appid) {
                return Err(self.err(
                    &appid_node.place,
                    appid_path,
                    format!(
                        "duplicate component_appid {component_appid:?} (first defined at {})",
                        first_defined(place)
                    ),
                ));
            }
            if apps.iter().any(|a| a.appid == component_appid) {
                return Err(self.err(
                    &appid_node.place,
                    appid_path,
                    format!("{component_appid:?} is also an [[apps]] appid; a platform's appid is its own"),
                ));
            }
            first.insert(component_appid.clone(), &appid_node.place);
            let secret = self.secret(&table)?;
            let token = self.secret_named(&table, "token")?;
            let encoding_aes_key = self.aes_key(&table, "encoding_aes_key")?;
            let previous_encoding_aes_key = if table.get("previous_encoding_aes_key").is_some()
                || table.get("previous_encoding_aes_key_file").is_some()
            {
                Some(self.aes_key(&table, "previous_encoding_aes_key")?)
            } else {
                None
            };
            let authorizer_tickets = match table.get("authorizer_tickets") {
                Some(node) => {
                    self.string_set(node, &table.key_path("authorizer_tickets"), |text| {
                        text.parse::<TicketKind>().map_err(|_| {
                            format!("unknown ticket {text:?}; expected \"jsapi\" or \"wx_card\"")
                        })
                    })?
                }
                None => Vec::new(),
            };
            let refresh = self.refresh_overrides(&table)?;
            components.push(ComponentSettings {
                component_appid,
                secret,
                token,
                encoding_aes_key,
                previous_encoding_aes_key,
                authorizer_tickets,
                refresh,
            });
        }
        Ok(components)
    }

    /// An EncodingAESKey given like a secret under `name`: 43 characters of base64 that decode
    /// to 32 bytes. The message never includes the value.
    fn aes_key(&self, table: &Table, name: &str) -> Result<Secret, ConfigError> {
        let secret = self.secret_named(table, name)?;
        if wechat_crypto::EncodingAesKey::parse(secret.expose()).is_err() {
            let place = table
                .get(name)
                .or_else(|| table.get(&format!("{name}_file")))
                .map_or(table.place, |n| &n.place);
            return Err(self.err(
                place,
                table.key_path(name),
                "must be the platform's 43-character EncodingAESKey (letters and digits); the value is not shown",
            ));
        }
        Ok(secret)
    }

    /// `refresh_before_expired` / `refresh_retry_interval` on one account entry.
    fn refresh_overrides(&self, table: &Table) -> Result<RefreshOverrides, ConfigError> {
        let mut overrides = RefreshOverrides::default();
        if let Some(node) = table.get("refresh_before_expired") {
            overrides.refresh_before_expired =
                Some(self.positive_duration(node, &table.key_path("refresh_before_expired"))?);
        }
        if let Some(node) = table.get("refresh_retry_interval") {
            overrides.refresh_retry_interval =
                Some(self.positive_duration(node, &table.key_path("refresh_retry_interval"))?);
        }
        if let Some(node) = table.get("check_interval") {
            overrides.check_interval =
                Some(self.positive_duration(node, &table.key_path("check_interval"))?);
        }
        Ok(overrides)
    }

    /// `[secrets]`: `master_key` (or `master_key_file`), base64 of exactly 32 bytes.
    fn secrets(&self, node: Option<&Node>) -> Result<SecretsSettings, ConfigError> {
        let Some(node) = node else {
            return Ok(SecretsSettings::default());
        };
        let table = self.table(node, "secrets".into(), SECRETS_KEYS)?;
        if table.get("master_key").is_none() && table.get("master_key_file").is_none() {
            return Ok(SecretsSettings::default());
        }
        let secret = self.secret_named(&table, "master_key")?;
        let place = table
            .get("master_key")
            .or_else(|| table.get("master_key_file"))
            .map_or(table.place, |n| &n.place);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(secret.expose().trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| {
                self.err(
                    place,
                    table.key_path("master_key"),
                    "must be 32 bytes in base64 (44 characters); make one with `openssl rand -base64 32`",
                )
            })?;
        Ok(SecretsSettings {
            master_key: Some(MasterKey(bytes)),
        })
    }

    fn key_sha256(&self, node: &Node, path: &str) -> Result<[u8; 32], ConfigError> {
        let text = self.string(node, path)?;
        super::parse_key_sha256(text).map_err(|what| self.err(&node.place, path, what))
    }

    fn consumers(
        &self,
        node: Option<&Node>,
        apps: &[AppSettings],
        corps: &[CorpSettings],
        components: &[ComponentSettings],
    ) -> Result<Vec<ConsumerSettings>, ConfigError> {
        let mut consumers = Vec::new();
        let known = Known::new(apps, corps, components);
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
                Some(node) => {
                    self.string_set(node, &table.key_path("apps"), |text| grant(text, &known))?
                }
                None => Vec::new(),
            };

            let scopes_node = self.required(&table, "scopes")?;
            let scopes_path = table.key_path("scopes");
            let scopes =
                self.string_set(scopes_node, &scopes_path, |text| text.parse::<Scope>())?;
            if scopes.is_empty() {
                return Err(self.err(
                    &scopes_node.place,
                    scopes_path,
                    "must name at least one of \"read\", \"invalidate\", \"admin\", \"authorize\"",
                ));
            }

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

/// The configured accounts, indexed for [`grant`]: checking each grant of a consumer against
/// lists of every account would be quadratic for a platform that grants one consumer thousands.
pub(crate) struct Known<'a> {
    apps: HashSet<&'a str>,
    corpids: HashSet<&'a str>,
    components: HashSet<&'a str>,
}

impl<'a> Known<'a> {
    /// The accounts `settings` defines.
    pub(crate) fn of(settings: &'a Settings) -> Known<'a> {
        Known::new(&settings.apps, &settings.corps, &settings.components)
    }

    fn new(
        apps: &'a [AppSettings],
        corps: &'a [CorpSettings],
        components: &'a [ComponentSettings],
    ) -> Known<'a> {
        Known {
            components: components
                .iter()
                .map(|c| c.component_appid.as_str())
                .collect(),
            apps: apps.iter().map(|a| a.appid.as_str()).collect(),
            corpids: corps.iter().map(|c| c.corpid.as_str()).collect(),
        }
    }
}

/// A byte size: digits, optionally followed by `B`, `KiB`, `MiB` or `GiB`.
fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let count: usize = digits.parse().ok()?;
    let unit = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    count.checked_mul(unit)
}

/// One entry of a consumer's `apps`: `*`, an appid, `corpid/agentid`, a configured platform's
/// `component_appid`, `component_appid/*` or `component_appid/authorizer_appid`. An account need
/// not be in the file (it may be added at runtime): [`Settings::warnings`] names those that are
/// not. What cannot name an account at all is refused, as is a bare corpid.
pub(crate) fn grant(text: &str, known: &Known<'_>) -> Result<AppGrant, String> {
    if text == "*" {
        return Ok(AppGrant::All);
    }
    if known.components.contains(text) {
        return Ok(AppGrant::Component(text.to_string()));
    }
    if let Some((first, second)) = text.split_once('/') {
        if known.components.contains(first) {
            if second == "*" {
                return Ok(AppGrant::AllAuthorizers(first.to_string()));
            }
            if account_name(second) {
                return Ok(AppGrant::Authorizer {
                    component_appid: first.to_string(),
                    authorizer_appid: second.to_string(),
                });
            }
            return Err(format!(
                "unknown app {text:?}: write \"{first}/*\" or \"{first}/<authorizer appid>\""
            ));
        }
        // Not a configured platform: a Work app, perhaps one added at runtime (or every
        // authorizer of a platform the file does not have yet). `warnings` names those the file
        // does not define.
        if account_name(first) && second == "*" {
            return Ok(AppGrant::AllAuthorizers(first.to_string()));
        }
        if account_name(first) && account_name(second) {
            return Ok(AppGrant::CorpAgent {
                corpid: first.to_string(),
                agentid: second.to_string(),
            });
        }
        return Err(format!(
            "unknown app {text:?}: write an appid, \"corpid/agentid\", a component_appid, \
             \"component_appid/*\", \"component_appid/authorizer_appid\" or \"*\", each name \
             of letters, digits, '_', '-' and '.'"
        ));
    }
    if known.corpids.contains(text) && !known.apps.contains(text) {
        return Err(format!(
            "unknown app {text:?}: it is a corpid; grant a Work WeChat app as \"corpid/agentid\""
        ));
    }
    if account_name(text) {
        // An appid, perhaps of an app added at runtime; `warnings` names those the file does not
        // define.
        return Ok(AppGrant::App(text.to_string()));
    }
    Err(format!(
        "unknown app {text:?}: an appid has only letters, digits, '_', '-' and '.' (use \"*\" for \
         every app)"
    ))
}

/// Whether `text` can name an account (an appid, a corpid, an agentid): non-empty, at most 64
/// characters of the identifier set, not starting with '.', as the admin API's paths are.
fn account_name(text: &str) -> bool {
    !text.is_empty() && text.len() <= 64 && !text.starts_with('.') && is_identifier(text)
}
