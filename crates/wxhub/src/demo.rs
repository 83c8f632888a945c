//! `wxhub demo`: the whole system on one machine with no WeChat account — an in-process
//! `wechat-mock`, a hub with two demo apps (one in stable mode with a JS-SDK ticket, one in legacy
//! mode) on the embedded SQLite store, and a demo consumer key.
//!
//! Lifetimes are shortened (two minutes instead of two hours) so refreshes show in the log within
//! a minute or two.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rand::distributions::Alphanumeric;
use rand::Rng;
use wechat_mock::{MockConfig, MockServer};

use crate::configuration::{
    consumer_key_digest, AppGrant, AppSettings, ConsumerSettings, MasterKey, RefreshOverrides,
    RefreshSettings, Scope, Secret, SecretsSettings, ServerSettings, Settings, StoreSettings,
    TokenMode, WechatSettings,
};
use crate::credential::TicketKind;
use crate::startup::{Application, StartupError};

/// The stable-mode demo app.
pub const STABLE_APPID: &str = "wxd0000000000000a1";
/// The legacy-mode demo app.
pub const LEGACY_APPID: &str = "wxd0000000000000b2";
/// Token lifetime the demo's mock grants.
const DEMO_LIFETIME: Duration = Duration::from_secs(120);
/// How long the demo's mock keeps a superseded token valid.
const DEMO_GRACE: Duration = Duration::from_secs(20);

/// Options of `wxhub demo`.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Where the hub listens.
    pub listen: SocketAddr,
    /// The SQLite file; a fresh one in the temporary directory by default.
    pub database: Option<PathBuf>,
}

/// A running demo: the mock, the built hub and what a consumer needs to call it.
pub struct Demo {
    /// The in-process WeChat mock (kept alive as long as the demo).
    pub mock: MockServer,
    /// The hub, built and ready to run.
    pub app: Application,
    /// The demo consumer's bearer key.
    pub consumer_key: String,
    /// The SQLite file in use.
    pub database: PathBuf,
}

/// Starts the mock and builds the hub on it.
pub async fn start(options: DemoOptions) -> Result<Demo, StartupError> {
    let secret = |_: &str| -> String {
        rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(32)
            .map(char::from)
            .collect()
    };
    let stable_secret = secret(STABLE_APPID);
    let legacy_secret = secret(LEGACY_APPID);
    let mock_config = MockConfig {
        lifetime: DEMO_LIFETIME,
        grace: DEMO_GRACE,
        ..MockConfig::default()
    }
    .with_app(STABLE_APPID, stable_secret.clone())
    .with_app(LEGACY_APPID, legacy_secret.clone());
    let mock = MockServer::start(mock_config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|source| StartupError::Bind {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
        })?;
    let consumer_key: String = format!(
        "demo-{}",
        rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(24)
            .map(char::from)
            .collect::<String>()
    );
    let database = options.database.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("wxhub-demo-{}.db", std::process::id()))
    });
    let settings = Settings {
        server: ServerSettings {
            listen: options.listen,
            ..ServerSettings::default()
        },
        store: StoreSettings::Sqlite {
            path: database.clone(),
        },
        wechat: WechatSettings {
            api_base: mock.base_url(),
            work_api_base: mock.base_url(),
            ..WechatSettings::default()
        },
        refresh: RefreshSettings {
            min_refresh_interval: Duration::from_secs(5),
            ..RefreshSettings::default()
        },
        apps: vec![
            AppSettings {
                appid: STABLE_APPID.into(),
                secret: Secret::new(stable_secret),
                mode: TokenMode::Stable,
                tickets: vec![TicketKind::Jsapi],
                refresh: RefreshOverrides::default(),
            },
            AppSettings {
                appid: LEGACY_APPID.into(),
                secret: Secret::new(legacy_secret),
                mode: TokenMode::Legacy,
                tickets: vec![],
                refresh: RefreshOverrides::default(),
            },
        ],
        corps: vec![],
        consumers: vec![ConsumerSettings {
            name: "demo".into(),
            key_sha256: consumer_key_digest(&consumer_key),
            apps: vec![AppGrant::All],
            scopes: vec![Scope::Read, Scope::Invalidate, Scope::Admin],
        }],
        // A throwaway master key, so that apps can be added at runtime in the demo.
        secrets: SecretsSettings {
            master_key: Some(MasterKey::from_bytes(rand::thread_rng().gen())),
        },
        gateway: Default::default(),
    };
    let app = Application::build(settings).await?;
    Ok(Demo {
        mock,
        app,
        consumer_key,
        database,
    })
}

impl Demo {
    /// What `wxhub demo` prints: addresses, the key, and curl lines that work as printed.
    pub fn instructions(&self) -> String {
        let hub = format!("http://{}", self.app.address());
        let auth = format!("-H 'Authorization: Bearer {}'", self.consumer_key);
        let mock = self.mock.base_url();
        format!(
            "\
wxhub demo is running: a hub in front of an in-process WeChat mock (tokens live {lifetime} s).

  hub            {hub}
  mock WeChat    {mock}   (counters: {mock}/mock/stats)
  SQLite store   {db}
  consumer key   {key}

Read a token (stable mode) and its JS-SDK ticket:
  curl -s {auth} {hub}/v1/apps/{stable}/access_token
  curl -s {auth} {hub}/v1/apps/{stable}/tickets/jsapi
Sign a page for wx.config:
  curl -s {auth} -d '{{\"url\":\"https://example.com/page\"}}' {hub}/v1/apps/{stable}/jssdk/signature
Use the token against WeChat (the mock) the way a business server would:
  T=$(curl -s {auth} {hub}/v1/apps/{legacy}/access_token | sed 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/')
  curl -s \"{mock}/cgi-bin/get_api_domain_ip?access_token=$T\"
Report a token WeChat refused (40001): one refresh, however many report it:
  curl -s {auth} -d \"{{\\\"access_token\\\":\\\"$T\\\"}}\" {hub}/v1/apps/{legacy}/access_token/invalidate
Operator views:
  curl -s {auth} {hub}/v1/credentials
  curl -s {hub}/metrics
Press Ctrl-C to stop.
",
            lifetime = DEMO_LIFETIME.as_secs(),
            db = self.database.display(),
            key = self.consumer_key,
            stable = STABLE_APPID,
            legacy = LEGACY_APPID,
        )
    }
}
