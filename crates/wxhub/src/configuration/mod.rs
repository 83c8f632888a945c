//! Configuration: the TOML file of docs/architecture.md#configuration and its environment overrides.
//!
//! [`Settings::load`] reads the file, applies the `WXHUB_<SECTION>_<KEY>` overrides, resolves the
//! secrets (inline, `"${ENV_NAME}"` or `secret_file`) and validates everything before the hub
//! starts: every mistake is one [`ConfigError`] naming the file, the line (or the environment
//! variable) and the key. Secrets are wrapped in [`Secret`], which never prints its value.

mod duration;
mod error;
mod redis;
mod render;
mod source;
mod validate;
mod warnings;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::credential::{CorpTicketKind, TicketKind};

pub use duration::{format_duration, parse_duration, DurationError};
pub use error::ConfigError;
pub use redis::{RedisSettings, RedisTarget};

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
    /// `[[consumers]]`: the business servers allowed to read credentials, and what they may read.
    pub consumers: Vec<ConsumerSettings>,
    /// `[secrets]`: the key that seals secrets written at runtime (admin-added apps).
    pub secrets: SecretsSettings,
    /// `[gateway]`: the optional listeners shaped like WeChat's own API hosts.
    pub gateway: GatewaySettings,
}

/// `[gateway]`: listeners that answer like api.weixin.qq.com and qyapi.weixin.qq.com, so that an
/// unmodified WeChat SDK uses the hub by changing its base URL (docs/architecture.md#gateway).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewaySettings {
    /// Where the official-account gateway listens (`None`: no such listener).
    pub listen: Option<SocketAddr>,
    /// Where the Work WeChat gateway listens (`None`: no such listener).
    pub work_listen: Option<SocketAddr>,
    /// The largest request body the gateway accepts (default 10 MiB); bodies are held up to this
    /// size so that a call refused for a dead token can be replayed.
    pub max_body: usize,
    /// How many bytes of request bodies all calls together may hold for a replay (default
    /// 64 MiB). A call whose body does not fit goes to WeChat streamed, without a replay: many
    /// large uploads at once cannot take the process's memory.
    pub replay_memory: usize,
}

/// The default `[gateway] max_body`: 10 MiB, WeChat's own limit for most media uploads.
pub const DEFAULT_GATEWAY_MAX_BODY: usize = 10 * 1024 * 1024;

/// The default `[gateway] replay_memory`.
pub const DEFAULT_GATEWAY_REPLAY_MEMORY: usize = 64 * 1024 * 1024;

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            listen: None,
            work_listen: None,
            max_body: DEFAULT_GATEWAY_MAX_BODY,
            replay_memory: DEFAULT_GATEWAY_REPLAY_MEMORY,
        }
    }
}

/// `[secrets]`: what protects secrets the hub writes to its store itself.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SecretsSettings {
    /// `master_key`: 32 bytes (base64 in the file). AppSecrets given through the admin API are
    /// sealed with it before they reach any store; without it the admin API refuses secrets.
    pub master_key: Option<MasterKey>,
}

/// The 32-byte key of `[secrets] master_key`. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey(pub(crate) [u8; 32]);

impl MasterKey {
    /// Wraps raw key bytes (tests and tools; the file gives base64).
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(bytes)
    }

    /// The key bytes, for the one place that seals and unseals.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

/// Per-credential refresh timing (`refresh_before_expired`, `refresh_retry_interval` on an
/// `[[apps]]` or `[[corps]]` entry, or in the admin API), overriding `[refresh]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RefreshOverrides {
    /// Overrides `[refresh] refresh_before_expired` for this account's credentials.
    pub refresh_before_expired: Option<Duration>,
    /// Overrides `[refresh] refresh_retry_interval` for this account's credentials.
    pub refresh_retry_interval: Option<Duration>,
    /// Overrides `[refresh] check_interval` for this account's access token. On a platform, it
    /// turns the check on for every authorizer (which the global setting does not).
    pub check_interval: Option<Duration>,
}

impl RefreshOverrides {
    /// `base` with these overrides applied.
    pub fn apply(&self, base: &RefreshSettings) -> RefreshSettings {
        RefreshSettings {
            refresh_before_expired: self
                .refresh_before_expired
                .unwrap_or(base.refresh_before_expired),
            refresh_retry_interval: self
                .refresh_retry_interval
                .unwrap_or(base.refresh_retry_interval),
            check_interval: self.check_interval.or(base.check_interval),
            ..base.clone()
        }
    }
}

/// `[server]`: the HTTP listener consumers talk to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// The address the API binds to (default `127.0.0.1:8080`: private unless asked otherwise).
    pub listen: SocketAddr,
    /// The longest any request may take before it is answered with an error (default 10 s).
    /// Also how long shutdown waits for requests in progress before closing their connections.
    pub request_timeout: Duration,
    /// `events_listen`: an optional second listener serving only WeChat's event receiver, so
    /// the consumer API can stay on a private address while WeChat reaches the receiver.
    pub events_listen: Option<SocketAddr>,
    /// How long a client has to send a request's headers (default 10 s): from the connection's
    /// start for its first request, from the first byte for later ones. Slower clients are
    /// disconnected, so a trickle of header bytes cannot hold a connection open.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request (default 60 s).
    pub idle_timeout: Duration,
    /// How many connections are served at once; more are answered 503 and closed. `None` (the
    /// default) derives it from the file-descriptor limit, so connections alone can never use up
    /// the descriptors the store and the WeChat client need.
    pub max_connections: Option<usize>,
    /// How many watch streams one consumer may hold open at once (default 64), below the
    /// process-wide cap, so that one key cannot take every slot and shut the others out.
    pub max_watchers_per_consumer: usize,
}

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
    /// [`Settings::render_masked`] mask its passwords.
    Redis(RedisSettings),
}

/// `[wechat]`: WeChat's HTTP endpoints. `Debug` masks any login in the URLs.
#[derive(Clone, PartialEq, Eq)]
pub struct WechatSettings {
    /// Base URL of the official-account API, without a trailing slash (default
    /// `https://api.weixin.qq.com`; tests point it at `wechat-mock`).
    pub api_base: String,
    /// Base URL of the Work WeChat API, without a trailing slash (default
    /// `https://qyapi.weixin.qq.com`).
    pub work_api_base: String,
    /// Timeout of each upstream request (default 5 s); store leases outlive it.
    pub timeout: Duration,
}

/// `[refresh]`: when and how often the engine refreshes (docs/architecture.md#refresh-rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshSettings {
    /// How long before expiry a credential is refreshed, at most half its lifetime (default 30 m).
    pub refresh_before_expired: Duration,
    /// The ceiling of the retry backoff after transient failures (default 60 s).
    pub refresh_retry_interval: Duration,
    /// A token younger than this is never force-refreshed on a consumer's report (default 30 s):
    /// protects the daily quota against consumers that report every token as dead.
    pub min_refresh_interval: Duration,
    /// How many refreshes may run at once (default 16, at least 1).
    pub concurrency: usize,
    /// Stable-mode force refreshes a day kept for verified invalidations (default 5, at most
    /// 19): admin refreshes and last-resort renewals stop at 20 minus this.
    pub force_reserve: u32,
    /// How often each served access token is checked with one cheap WeChat call, so that a
    /// token killed outside the hub (someone fetched one with the AppSecret elsewhere) is
    /// replaced before a consumer trips on it. `None` (the default): no periodic check.
    /// Authorizers are checked only when their platform's own `check_interval` says so.
    pub check_interval: Option<Duration>,
}

/// How an official account's access token is obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum TokenMode {
    /// `cgi-bin/stable_token`: rotation only near expiry, safe alongside other fetchers (default).
    #[default]
    Stable,
    /// `cgi-bin/token`: every fetch rotates the token (for accounts that must keep the old API).
    Legacy,
}

/// `[[apps]]`: one official account or mini program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSettings {
    /// The account's appid; unique in the file.
    pub appid: String,
    /// The AppSecret the tokens are fetched with.
    pub secret: Secret,
    /// Which token endpoint to use.
    pub mode: TokenMode,
    /// The JS-SDK tickets to keep fresh besides the access token.
    pub tickets: Vec<TicketKind>,
    /// Refresh timing of this app's credentials, where it differs from `[refresh]`.
    pub refresh: RefreshOverrides,
}

/// `[[corps]]`: one Work WeChat app (a corpid and one of its agents' secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorpSettings {
    /// The enterprise's corpid.
    pub corpid: String,
    /// The app's agentid, as text (`1000002`); (corpid, agentid) is unique in the file.
    pub agentid: String,
    /// The app's secret: Work WeChat issues one token per (corpid, secret).
    pub secret: Secret,
    /// The JS-SDK tickets to keep fresh besides the access token.
    pub tickets: Vec<CorpTicketKind>,
    /// Refresh timing of this app's credentials, where it differs from `[refresh]`.
    pub refresh: RefreshOverrides,
}

/// `[[components]]`: one third-party platform (开放平台 component).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentSettings {
    /// The platform's appid; unique in the file and distinct from every `[[apps]]` appid.
    pub component_appid: String,
    /// The platform's AppSecret (`component_appsecret`).
    pub secret: Secret,
    /// The message-check Token set on the platform: signs every push.
    pub token: Secret,
    /// The 43-character EncodingAESKey that seals every push.
    pub encoding_aes_key: Secret,
    /// The key used before the last change in WeChat's console, tried when the current one
    /// fails, so pushes sealed during a key change are not lost.
    pub previous_encoding_aes_key: Option<Secret>,
    /// JS-SDK tickets kept fresh for every authorizer of this platform.
    pub authorizer_tickets: Vec<TicketKind>,
    /// Refresh timing of the component token and the authorizers' credentials.
    pub refresh: RefreshOverrides,
}

/// What a consumer may do (docs/architecture.md#authentication-and-scopes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Read tokens, tickets and JS-SDK signatures.
    Read,
    /// Report a token WeChat refused, which may trigger a refresh.
    Invalidate,
    /// List every credential's state and force refreshes.
    Admin,
    /// Build authorization links and register authorizers of a third-party platform.
    Authorize,
    /// Call WeChat through the hub with the current token injected (token-less calls).
    Call,
}

/// Which accounts a consumer may use.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AppGrant {
    /// `"*"`: every configured app and corp app.
    All,
    /// One official account or mini program, by appid.
    App(String),
    /// One Work WeChat app, written `"corpid/agentid"`.
    CorpAgent {
        /// The enterprise's corpid.
        corpid: String,
        /// The app's agentid.
        agentid: String,
    },
    /// A third-party platform's own component token, written `"component_appid"`.
    Component(String),
    /// Every authorizer of a platform, written `"component_appid/*"`.
    AllAuthorizers(String),
    /// One authorizer of a platform, written `"component_appid/authorizer_appid"`.
    Authorizer {
        /// The platform.
        component_appid: String,
        /// The authorizer.
        authorizer_appid: String,
    },
}

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

/// A secret value (AppSecret, corp secret): `Debug` and `Display` print `***` and nothing else,
/// so a secret cannot leak through a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    source: SecretSource,
}

/// Where a [`Secret`] was read from; shown by `check-config`, never the value itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the configuration file (or built in code).
    Inline,
    /// `secret = "${NAME}"`: the environment variable `NAME`.
    Env(String),
    /// `secret_file = "…"`: the resolved path of that file.
    File(PathBuf),
}

/// The default `[server] listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The default `[wechat] api_base`.
pub const DEFAULT_API_BASE: &str = "https://api.weixin.qq.com";
/// The default `[wechat] work_api_base`.
pub const DEFAULT_WORK_API_BASE: &str = "https://qyapi.weixin.qq.com";
/// The default `[store] path` of the sqlite store.
pub const DEFAULT_SQLITE_PATH: &str = "wxhub.db";
/// The default `[store] namespace` of the redis store.
pub const DEFAULT_REDIS_NAMESPACE: &str = "wxhub";

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

    /// A reader of grants against the accounts this configuration defines (which tells a
    /// platform's `component_appid/…` from a Work app's `corpid/agentid`).
    pub fn grants(&self) -> GrantReader<'_> {
        GrantReader(validate::Known::of(self))
    }

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

/// Reads consumer grants (`[[consumers]] apps`) as the configuration file's are read, against the
/// accounts of one configuration: see [`Settings::grants`].
pub struct GrantReader<'a>(validate::Known<'a>);

impl GrantReader<'_> {
    /// One grant: `*`, an appid, `corpid/agentid`, `component_appid`, `component_appid/*` or
    /// `component_appid/authorizer_appid`; the refusal explains the forms.
    pub fn read(&self, text: &str) -> Result<AppGrant, String> {
        validate::grant(text, &self.0)
    }
}

/// Hex SHA-256 of a consumer bearer key: what `wxhub hash-key` prints and `key_sha256` holds.
pub fn consumer_key_sha256(key: &str) -> String {
    hex::encode(consumer_key_digest(key))
}

/// SHA-256 of a consumer bearer key, as [`ConsumerSettings::key_sha256`] holds it.
pub fn consumer_key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// See [`ServerSettings::max_watchers_per_consumer`].
pub const DEFAULT_MAX_WATCHERS_PER_CONSUMER: usize = 64;

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            request_timeout: Duration::from_secs(10),
            events_listen: None,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: None,
            max_watchers_per_consumer: DEFAULT_MAX_WATCHERS_PER_CONSUMER,
        }
    }
}

impl Default for WechatSettings {
    fn default() -> Self {
        WechatSettings {
            api_base: DEFAULT_API_BASE.into(),
            work_api_base: DEFAULT_WORK_API_BASE.into(),
            timeout: Duration::from_secs(5),
        }
    }
}

impl Default for RefreshSettings {
    fn default() -> Self {
        RefreshSettings {
            refresh_before_expired: Duration::from_secs(30 * 60),
            refresh_retry_interval: Duration::from_secs(60),
            min_refresh_interval: Duration::from_secs(30),
            concurrency: 16,
            force_reserve: 5,
            check_interval: None,
        }
    }
}

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

impl fmt::Debug for WechatSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WechatSettings")
            .field("api_base", &mask_url_userinfo(&self.api_base))
            .field("work_api_base", &mask_url_userinfo(&self.work_api_base))
            .field("timeout", &self.timeout)
            .finish()
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

/// `https://user:password@host/x` → `https://***@host/x`: the whole userinfo masked (for the
/// WeChat base URLs, where a user name is as private as the password); other URLs unchanged.
pub(crate) fn mask_url_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    match url[authority_start..authority_end].rfind('@') {
        Some(at) => format!(
            "{}***{}",
            &url[..authority_start],
            &url[authority_start + at..]
        ),
        None => url.to_string(),
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

impl TokenMode {
    /// The mode as the configuration spells it: `stable` or `legacy`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenMode::Stable => "stable",
            TokenMode::Legacy => "legacy",
        }
    }
}

impl FromStr for TokenMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stable" => Ok(TokenMode::Stable),
            "legacy" => Ok(TokenMode::Legacy),
            other => Err(format!(
                "unknown mode {other:?}; expected \"stable\" or \"legacy\""
            )),
        }
    }
}

impl fmt::Display for TokenMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Scope {
    /// The scope as the configuration spells it: `read`, `invalidate`, `admin` or `call`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Invalidate => "invalidate",
            Scope::Admin => "admin",
            Scope::Authorize => "authorize",
            Scope::Call => "call",
        }
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "invalidate" => Ok(Scope::Invalidate),
            "admin" => Ok(Scope::Admin),
            "authorize" => Ok(Scope::Authorize),
            "call" => Ok(Scope::Call),
            other => Err(format!(
                "unknown scope {other:?}; expected \"read\", \"invalidate\", \"admin\", \"authorize\" or \"call\""
            )),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AppGrant {
    /// Whether this grant covers the official account `appid`.
    pub fn covers_app(&self, appid: &str) -> bool {
        match self {
            AppGrant::All => true,
            AppGrant::App(granted) => granted == appid,
            _ => false,
        }
    }

    /// Whether this grant covers the Work WeChat app (`corpid`, `agentid`).
    pub fn covers_corp(&self, corpid: &str, agentid: &str) -> bool {
        match self {
            AppGrant::All => true,
            AppGrant::CorpAgent {
                corpid: c,
                agentid: a,
            } => c == corpid && a == agentid,
            _ => false,
        }
    }

    /// Whether this grant covers the component token of `component_appid`.
    pub fn covers_component(&self, component_appid: &str) -> bool {
        match self {
            AppGrant::All => true,
            AppGrant::Component(c) => c == component_appid,
            _ => false,
        }
    }

    /// Whether this grant covers the authorizer `authorizer_appid` of `component_appid`.
    pub fn covers_authorizer(&self, component_appid: &str, authorizer_appid: &str) -> bool {
        match self {
            AppGrant::All => true,
            AppGrant::AllAuthorizers(c) => c == component_appid,
            AppGrant::Authorizer {
                component_appid: c,
                authorizer_appid: a,
            } => c == component_appid && a == authorizer_appid,
            _ => false,
        }
    }
}

impl fmt::Display for AppGrant {
    /// The grant as the configuration spells it: `*`, an appid or `corpid/agentid`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppGrant::All => f.write_str("*"),
            AppGrant::App(appid) => f.write_str(appid),
            AppGrant::CorpAgent { corpid, agentid } => write!(f, "{corpid}/{agentid}"),
            AppGrant::Component(c) => f.write_str(c),
            AppGrant::AllAuthorizers(c) => write!(f, "{c}/*"),
            AppGrant::Authorizer {
                component_appid,
                authorizer_appid,
            } => write!(f, "{component_appid}/{authorizer_appid}"),
        }
    }
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

    /// Whether this consumer may use the official account `appid`.
    pub fn may_use_app(&self, appid: &str) -> bool {
        self.apps.iter().any(|grant| grant.covers_app(appid))
    }

    /// Whether this consumer may use the Work WeChat app (`corpid`, `agentid`).
    pub fn may_use_corp(&self, corpid: &str, agentid: &str) -> bool {
        self.apps
            .iter()
            .any(|grant| grant.covers_corp(corpid, agentid))
    }
}

impl Secret {
    /// Wraps a secret value given in code (its source is [`SecretSource::Inline`]).
    pub fn new(value: String) -> Self {
        Secret {
            value,
            source: SecretSource::Inline,
        }
    }

    pub(crate) fn with_source(value: String, source: SecretSource) -> Self {
        Secret { value, source }
    }

    /// The secret value itself, for the one place that must send it (the upstream request).
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Where the secret was read from.
    pub fn source(&self) -> &SecretSource {
        &self.source
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
