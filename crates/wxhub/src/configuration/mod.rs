//! Configuration: the TOML file of docs/architecture.md#configuration and its environment overrides.
//!
//! [`Settings::load`] reads the file, applies the `WXHUB_<SECTION>_<KEY>` overrides, resolves the
//! secrets (inline, `"${ENV_NAME}"` or `secret_file`) and validates everything before the hub
//! starts: every mistake is one [`ConfigError`] naming the file, the line (or the environment
//! variable) and the key. Secrets are wrapped in [`Secret`], which never prints its value.
//!
//! Each section lives in one file with its types and its validation, so that a new kind of
//! account is a new file plus its field in [`Settings`], its key in `validate` and its lines in
//! `render`: `server`, `store` (and `redis`), `wechat`, `refresh`, `gateway`, `apps`, `corps`,
//! `components`, `suites` (and providers), `consumers` (with the grants and scopes of `grants`) and `secrets`. Reading the
//! TOML tree and the rules every section shares are in `source` and `validate`.

mod apps;
mod components;
mod consumers;
mod corps;
mod duration;
mod error;
mod gateway;
mod grants;
mod redis;
mod refresh;
mod render;
mod secrets;
mod server;
mod source;
mod store;
mod suites;
mod validate;
mod warnings;
mod wechat;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use apps::{AppSettings, TokenMode};
pub use components::ComponentSettings;
pub use consumers::{
    consumer_key_digest, consumer_key_sha256, parse_key_sha256, read_grants, read_scopes,
    ConsumerSettings, FieldError,
};
pub use corps::CorpSettings;
pub use duration::{format_duration, parse_duration, DurationError};
pub use error::ConfigError;
pub use gateway::{GatewaySettings, DEFAULT_GATEWAY_MAX_BODY, DEFAULT_GATEWAY_REPLAY_MEMORY};
pub use grants::{AppGrant, GrantReader, Scope};
pub(crate) use redis::mask_url_password;
pub use redis::{RedisSettings, RedisTarget, DEFAULT_REDIS_NAMESPACE};
pub use refresh::{RefreshOverrides, RefreshSettings};
pub use secrets::{MasterKey, Secret, SecretSource, SecretsSettings};
pub use server::{ServerSettings, DEFAULT_LISTEN, DEFAULT_MAX_WATCHERS_PER_CONSUMER};
pub use store::{StoreSettings, DEFAULT_SQLITE_PATH};
pub use suites::{ProviderSettings, SuiteSettings};
pub(crate) use wechat::mask_url_userinfo;
pub use wechat::{WechatSettings, DEFAULT_API_BASE, DEFAULT_WORK_API_BASE};

/// The whole validated configuration of one hub process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `[server]`: where the HTTP API listens.
    pub server: ServerSettings,
    /// `[store]`: where tokens and durable secrets are kept.
    pub store: StoreSettings,
    /// `[wechat]`: how to reach WeChat (or the mock that stands in for it).
    pub wechat: WechatSettings,
    /// `[refresh]`: the timing of the refresh engine.
    pub refresh: RefreshSettings,
    /// `[[apps]]`: the official accounts and mini programs whose tokens the hub keeps.
    pub apps: Vec<AppSettings>,
    /// `[[corps]]`: the Work WeChat apps whose tokens the hub keeps.
    pub corps: Vec<CorpSettings>,
    /// `[[components]]`: the third-party platforms (开放平台) whose pushes the hub receives and
    /// whose authorizers' tokens it keeps (see `docs/platform.md`).
    pub components: Vec<ComponentSettings>,
    /// `[[suites]]`: Work WeChat third-party suites whose pushes the hub receives and whose
    /// installed corps' tokens it keeps (see `docs/suites.md`).
    pub suites: Vec<SuiteSettings>,
    /// `[[providers]]`: Work WeChat service providers whose provider token the hub keeps.
    pub providers: Vec<ProviderSettings>,
    /// `[[consumers]]`: the business servers allowed to read credentials, and what they may read.
    pub consumers: Vec<ConsumerSettings>,
    /// `[secrets]`: the key that seals secrets written at runtime (admin-added apps).
    pub secrets: SecretsSettings,
    /// `[gateway]`: the optional listeners shaped like WeChat's own API hosts.
    pub gateway: GatewaySettings,
}

impl Settings {
    /// Reads and validates the file, with overrides and `${ENV}` secrets taken from the process
    /// environment. A `WXHUB_<SECTION>_<KEY>` variable with an unknown key is an error.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                path,
                error::Place::Nowhere,
                None,
                format!("cannot read the configuration file: {e}"),
            )
        })?;
        let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
        check_override_names(path, names)?;
        Settings::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Same as [`Settings::load`] from text; `origin` names the file in messages (and its
    /// directory anchors relative paths); `env` looks up environment variables, so tests pass a
    /// closure over a map instead of touching the process environment.
    pub fn parse(
        text: &str,
        origin: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let mut root = source::parse_document(text, origin)?;
        source::apply_overrides(&mut root, origin, env)?;
        validate::settings(&root, origin, env)
    }

    /// The effective configuration as TOML text with every secret shown as `"***"` (plus where it
    /// came from), the Redis password masked and consumer key hashes shortened: what
    /// `wxhub check-config` prints.
    pub fn render_masked(&self) -> String {
        render::masked(self)
    }
}

/// Refuses process environment variables named `WXHUB_<SECTION>_<KEY>` (section one of
/// `server`, `store`, `wechat`, `refresh`) whose key that section does not have: a typo in an
/// override would otherwise be silently ignored. Other `WXHUB_*` variables pass. `origin` names
/// the configuration file in the message. [`Settings::load`] runs this over the environment.
pub fn check_override_names<I, S>(origin: &Path, names: I) -> Result<(), ConfigError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    source::check_override_names(origin, names)
}
