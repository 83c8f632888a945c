//! `[store] kind = "redis"`: how the hub reaches its Redis — one server by URL, or whichever
//! master a group of Sentinels names — and how it authenticates. See docs/deployment.md.

use std::fmt;
use std::path::PathBuf;

use super::{mask_url_password, Secret, DEFAULT_REDIS_NAMESPACE};

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
