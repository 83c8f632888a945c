//! `[store] kind = "redis"`: how the hub reaches its Redis — one server by URL, or whichever
//! master a group of Sentinels names — and how it authenticates. See docs/deployment.md.

use std::fmt;
use std::path::PathBuf;

use super::error::{ConfigError, Place};
use super::source::{Node, Value};
use super::validate::{Cx, Table};
use super::{Secret, StoreSettings};

/// The default `[store] namespace` of the redis store.
pub const DEFAULT_REDIS_NAMESPACE: &str = "wxhub";

/// The settings of the redis store. `Debug` masks every password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// Which server(s) to talk to.
    pub target: RedisTarget,
    /// Prefix of every key the hub writes, so several hubs can share one Redis (default
    /// `wxhub`).
    pub namespace: String,
    /// `username`: the ACL user the hub logs in as on the data nodes (`AUTH user password`).
    /// `None` uses the URL's user, or Redis's `default` user.
    pub username: Option<String>,
    /// `password` / `password_file`: the password of that user (`${ENV}` and files like any
    /// secret). `None` uses the URL's password, if it has one.
    pub password: Option<Secret>,
    /// `ca_file`: PEM file of the certificate authorities trusted for `rediss://` connections,
    /// for a private CA. `None` trusts the system's root certificates.
    pub ca_file: Option<PathBuf>,
}

/// Where the Redis master is.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `url = "redis://…"`, `rediss://…` or `unix://…`: one server; it may carry a password, so
    /// `Debug` and `check-config` mask it.
    Url(String),
    /// `sentinel_master` + `sentinels`: ask these Sentinels which server is the master of the
    /// group, and follow it when they fail over.
    Sentinel {
        /// The group's name as the Sentinels know it (`sentinel monitor <name> …`).
        master: String,
        /// The Sentinels' URLs (`redis://host:26379`, `rediss://` for TLS, which then applies to
        /// the data nodes too; userinfo authenticates to the Sentinels themselves).
        sentinels: Vec<String>,
    },
}

impl RedisSettings {
    /// One server at `url`, the default namespace, no separate credentials: what tests and the
    /// simplest deployments use.
    pub fn url(url: impl Into<String>) -> RedisSettings {
        RedisSettings {
            target: RedisTarget::Url(url.into()),
            namespace: DEFAULT_REDIS_NAMESPACE.to_string(),
            username: None,
            password: None,
            ca_file: None,
        }
    }

    /// The same settings under another namespace.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> RedisSettings {
        self.namespace = namespace.into();
        self
    }

    /// Where the hub connects, for messages: URLs with their passwords masked.
    pub fn display_target(&self) -> String {
        match &self.target {
            RedisTarget::Url(url) => mask_url_password(url),
            RedisTarget::Sentinel { master, sentinels } => {
                let sentinels: Vec<String> =
                    sentinels.iter().map(|s| mask_url_password(s)).collect();
                format!("master {master:?} of Sentinels [{}]", sentinels.join(", "))
            }
        }
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("target", &self.display_target())
            .field("namespace", &self.namespace)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisTarget::Url(url) => f.debug_tuple("Url").field(&mask_url_password(url)).finish(),
            RedisTarget::Sentinel { master, sentinels } => {
                let sentinels: Vec<String> =
                    sentinels.iter().map(|s| mask_url_password(s)).collect();
                f.debug_struct("Sentinel")
                    .field("master", master)
                    .field("sentinels", &sentinels)
                    .finish()
            }
        }
    }
}

/// `redis://user:password@host/0` → `redis://user:***@host/0`; other URLs unchanged.
pub(crate) fn mask_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    let masked = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        // `redis://password@host` is how some clients spell a password without a user.
        "***".to_string()
    };
    format!(
        "{}{masked}{}",
        &url[..authority_start],
        &url[authority_start + at..]
    )
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

impl Cx<'_> {
    /// `[store] kind = "redis"`: `url`, or `sentinel_master` with `sentinels`; then the
    /// namespace, the credentials and the CA file. No message shows a URL: it may hold a
    /// password.
    pub(super) fn redis_store(
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
}
