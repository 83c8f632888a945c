//! `wxhub demo`: the whole system on one machine with no WeChat account — an in-process
//! `wechat-mock`, a hub with two demo apps (one in stable mode with a JS-SDK ticket, one in legacy
//! mode), a third-party platform with two authorizers and a Work WeChat suite installed in two
//! corps with its provider's token, on the embedded SQLite store, and a demo consumer key.
//!
//! Lifetimes are shortened (two minutes instead of two hours) so refreshes show in the log within
//! a minute or two.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::distributions::Alphanumeric;
use rand::Rng;
use wechat_mock::{MockConfig, MockServer};

use crate::configuration::{
    consumer_key_digest, AppGrant, AppSettings, ComponentSettings, ConsumerSettings,
    GatewaySettings, MasterKey, ProviderSettings, RefreshOverrides, RefreshSettings, Scope, Secret,
    SecretsSettings, ServerSettings, Settings, StoreSettings, SuiteSettings, TokenMode,
    WechatSettings,
};
use crate::gateway::Host;
use crate::kinds::AccountId;
use crate::read::ReadIndex;
use crate::startup::{Application, StartupError};
use crate::token::{CorpTicketKind, TicketKind};

/// The stable-mode demo app.
pub const STABLE_APPID: &str = "wxd0000000000000a1";
/// The legacy-mode demo app.
pub const LEGACY_APPID: &str = "wxd0000000000000b2";
/// An app the mock knows but the hub's configuration does not: the demo adds it at runtime.
pub const RUNTIME_APPID: &str = "wxd0000000000000c3";
/// The demo's third-party platform.
pub const COMPONENT_APPID: &str = "wxd0000000000000d4";
/// Accounts that have authorized the demo platform when the demo starts.
const DEMO_AUTHORIZERS: u32 = 2;
/// The demo's Work WeChat suite (a service provider's third-party app).
pub const SUITE_ID: &str = "wwd0000000000000e5";
/// The demo's Work WeChat service provider, whose own token the demo serves too.
pub const PROVIDER_CORPID: &str = "wwd0000000000000f6";
/// The corps that install the demo suite once the hub runs (corpid, name): Work WeChat has no
/// list of installations to recover, so each comes as a `create_auth` push.
pub const DEMO_CORPS: [(&str, &str); 2] = [
    ("wwd000000000000c01", "Demo Corp One"),
    ("wwd000000000000c02", "Demo Corp Two"),
];
/// How long the demo waits for its suite's first token before it gives up installing the corps.
const INSTALL_DEADLINE: Duration = Duration::from_secs(60);
/// How often the demo's mock pushes a verify ticket (and a suite ticket).
const DEMO_PUSH_INTERVAL: Duration = Duration::from_secs(60);
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
    /// The in-process WeChat mock (kept alive as long as the demo). It pushes nothing until
    /// [`Demo::run_until`] points it at the hub.
    pub mock: Arc<MockServer>,
    /// The hub, built (bound to its address) and ready to run.
    pub app: Application,
    /// The demo consumer's bearer key.
    pub consumer_key: String,
    /// The SQLite file in use.
    pub database: PathBuf,
    /// The AppSecret of [`RUNTIME_APPID`], for the printed admin call that adds it.
    pub runtime_secret: String,
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
    let runtime_secret = secret(RUNTIME_APPID);
    let component_secret = secret(COMPONENT_APPID);
    let component_token = secret("token");
    let aes_key = encoding_aes_key();
    let suite_secret = secret(SUITE_ID);
    let suite_token = secret("suite token");
    let suite_aes_key = encoding_aes_key();
    let provider_secret = secret(PROVIDER_CORPID);
    let mock_config = MockConfig {
        lifetime: DEMO_LIFETIME,
        grace: DEMO_GRACE,
        // No push URL yet: the hub, which needs the mock's address, is not built, and nothing
        // must be pushed before it listens (see `Demo::run_until`).
        push_url: None,
        push_interval: DEMO_PUSH_INTERVAL,
        authorizers_per_component: DEMO_AUTHORIZERS,
        suite_push_url: None,
        suite_ticket_interval: DEMO_PUSH_INTERVAL,
        ..MockConfig::default()
    }
    .with_app(STABLE_APPID, stable_secret.clone())
    .with_app(LEGACY_APPID, legacy_secret.clone())
    .with_component(
        COMPONENT_APPID,
        component_secret.clone(),
        component_token.clone(),
        aes_key.clone(),
    )
    .with_app(RUNTIME_APPID, runtime_secret.clone())
    .with_suite(
        SUITE_ID,
        suite_secret.clone(),
        suite_token.clone(),
        suite_aes_key.clone(),
    )
    .with_provider(PROVIDER_CORPID, provider_secret.clone());
    let mock = MockServer::start(mock_config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map(Arc::new)
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
        components: vec![ComponentSettings {
            component_appid: COMPONENT_APPID.into(),
            secret: Secret::new(component_secret),
            token: Secret::new(component_token),
            encoding_aes_key: Secret::new(aes_key),
            previous_encoding_aes_key: None,
            authorizer_tickets: vec![TicketKind::Jsapi],
            refresh: RefreshOverrides::default(),
        }],
        suites: vec![SuiteSettings {
            suite_id: SUITE_ID.into(),
            secret: Secret::new(suite_secret),
            token: Secret::new(suite_token),
            encoding_aes_key: Secret::new(suite_aes_key),
            previous_encoding_aes_key: None,
            corp_tickets: vec![CorpTicketKind::Jsapi],
            refresh: RefreshOverrides::default(),
        }],
        providers: vec![ProviderSettings {
            corpid: PROVIDER_CORPID.into(),
            secret: Secret::new(provider_secret),
            refresh: RefreshOverrides::default(),
        }],
        consumers: vec![ConsumerSettings {
            name: "demo".into(),
            key_sha256: consumer_key_digest(&consumer_key),
            apps: vec![AppGrant::All],
            scopes: vec![
                Scope::Read,
                Scope::Invalidate,
                Scope::Admin,
                Scope::Authorize,
            ],
        }],
        // A throwaway master key, so that apps can be added at runtime in the demo.
        secrets: SecretsSettings {
            master_key: Some(MasterKey::from_bytes(rand::thread_rng().gen())),
        },
        // The WeChat-shaped gateway on the next port (any free port when the hub's is 0).
        gateway: GatewaySettings {
            listen: Some(SocketAddr::new(
                options.listen.ip(),
                options
                    .listen
                    .port()
                    .checked_add(1)
                    .filter(|_| options.listen.port() != 0)
                    .unwrap_or(0),
            )),
            ..GatewaySettings::default()
        },
    };
    let app = Application::build(settings).await?;
    Ok(Demo {
        mock,
        app,
        consumer_key,
        database,
        runtime_secret,
    })
}

/// A random EncodingAESKey as WeChat's console makes them: 43 letters and digits that are the
/// base64 of 32 bytes.
fn encoding_aes_key() -> String {
    use base64::Engine as _;
    loop {
        let bytes: [u8; 32] = rand::thread_rng().gen();
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        let key = &encoded[..43];
        if key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return key.to_string();
        }
    }
}

/// Once the hub serves the demo suite's token (it needs the first pushed suite ticket), each demo
/// corp installs the suite at the mock, which pushes `create_auth` to the hub: the hub exchanges
/// the code for the corp's permanent code and stores it before it answers. Logs what became of
/// each install; nothing else depends on it.
async fn install_demo_corps(mock_base_url: String, read_index: Arc<ReadIndex>) {
    let Ok(suite_token) = read_index.find(&AccountId::suite(SUITE_ID), None) else {
        tracing::warn!(
            suite = SUITE_ID,
            "the demo suite is not configured; no corp installs it"
        );
        return;
    };
    let deadline = tokio::time::Instant::now() + INSTALL_DEADLINE;
    loop {
        // Registered before the check, so that a token served in between is not missed.
        let changed = suite_token.served_changed();
        if suite_token.slot.load().is_some() {
            break;
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            tracing::warn!(
                suite = SUITE_ID,
                "no suite token within {} s; the demo corps are not installed",
                INSTALL_DEADLINE.as_secs()
            );
            return;
        }
    }
    let client = reqwest::Client::new();
    for (corpid, corp_name) in DEMO_CORPS {
        let answer = client
            .post(format!("{mock_base_url}/mock/install"))
            .timeout(Duration::from_secs(10))
            .json(&serde_json::json!({
                "suite_id": SUITE_ID,
                "corpid": corpid,
                "corp_name": corp_name,
            }))
            .send()
            .await;
        let acknowledged = match answer {
            Ok(answer) => answer
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|body| body["push"]["acknowledged"] == true),
            Err(_) => false,
        };
        if acknowledged {
            tracing::info!(
                suite = SUITE_ID,
                corp = corpid,
                "a demo corp installed the suite"
            );
        } else {
            tracing::warn!(
                suite = SUITE_ID,
                corp = corpid,
                "a demo corp's install was not acknowledged by the hub"
            );
        }
    }
}

impl Demo {
    /// The hub's event receiver as it is bound (its own listener when it has one), whatever
    /// `--listen` said; over loopback when it listens on every address.
    fn receiver(&self) -> SocketAddr {
        let mut receiver = self
            .app
            .events_address()
            .unwrap_or_else(|| self.app.address());
        if receiver.ip().is_unspecified() {
            receiver.set_ip(match receiver {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        receiver
    }

    /// Where the mock pushes the platform's events: the hub's receiver.
    pub fn push_url(&self) -> String {
        format!(
            "http://{}/wechat/components/{{component_appid}}/events",
            self.receiver()
        )
    }

    /// Where the mock pushes the suite's events (its command callback URL): the hub's receiver.
    pub fn suite_push_url(&self) -> String {
        format!(
            "http://{}/wechat/suites/{{suite_id}}/events",
            self.receiver()
        )
    }

    /// Points the mock's pushes at the hub, then serves until `shutdown` (see
    /// [`Application::run_until`]); meanwhile the demo corps install the suite. The hub's
    /// listener is bound before the first push goes out, so that push waits to be accepted
    /// instead of being refused.
    pub async fn run_until<F>(self, shutdown: F) -> std::io::Result<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.mock.push_to(&self.push_url())?;
        self.mock.push_suites_to(&self.suite_push_url())?;
        let installs = tokio::spawn(install_demo_corps(
            self.mock.base_url(),
            self.app.read_index().clone(),
        ));
        let served = self.app.run_until(shutdown).await;
        installs.abort();
        served
    }

    /// What `wxhub demo` prints: addresses, the key, and curl lines that work as printed.
    pub fn instructions(&self) -> String {
        let hub = format!("http://{}", self.app.address());
        let gateway = self
            .app
            .gateway_address(Host::Official)
            .map_or_else(String::new, |address| format!("http://{address}"));
        let auth = format!("-H 'Authorization: Bearer {}'", self.consumer_key);
        let mock = self.mock.base_url();
        format!(
            "\
wxhub demo is running: a hub in front of an in-process WeChat mock (tokens live {lifetime} s).

  hub            {hub}
  gateway        {gateway}   (shaped like api.weixin.qq.com)
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
Report a token WeChat refused (40001): the hub checks it with WeChat first (this one is alive,
so the report is \"rejected\"); a dead one is refreshed once, however many report it:
  curl -s {auth} -d \"{{\\\"access_token\\\":\\\"$T\\\"}}\" {hub}/v1/apps/{legacy}/access_token/invalidate
Keep an unmodified WeChat SDK: point its base URL at the gateway and give it the consumer key as
the AppSecret. Its token call is answered by the hub; everything else passes through to WeChat:
  curl -s \"{gateway}/cgi-bin/token?grant_type=client_credential&appid={legacy}&secret={key}\"
  curl -s \"{gateway}/cgi-bin/get_api_domain_ip?access_token=$T\"
Add an app at runtime (its secret sealed and stored; every instance would follow), use it, remove it:
  curl -s -X PUT {auth} -d '{{\"secret\":\"{runtime_secret}\",\"mode\":\"legacy\"}}' {hub}/v1/admin/apps/{runtime}
  curl -s {auth} {hub}/v1/apps/{runtime}/access_token
  curl -s -X DELETE {auth} {hub}/v1/admin/apps/{runtime}
A third-party platform with {authorizers} authorizers (docs/platform.md):
  curl -s {auth} {hub}/v1/components/{component}/authorizers
  curl -s {auth} {hub}/v1/components/{component}/authorizers/{authorizer}/access_token
An account authorizes the platform (the mock pushes to the hub, which registers it):
  curl -s -d '{{\"component_appid\":\"{component}\"}}' {mock}/mock/authorize
A Work WeChat suite that {corps} corps install a moment after the start, and its provider's token
(docs/suites.md):
  curl -s {auth} {hub}/v1/suites/{suite}/access_token
  curl -s {auth} {hub}/v1/suites/{suite}/corps
  curl -s {auth} {hub}/v1/suites/{suite}/corps/{corp}/access_token
  curl -s {auth} {hub}/v1/suites/{suite}/corps/{corp}/tickets/jsapi
  curl -s {auth} {hub}/v1/providers/{provider}/access_token
A corp installs the suite (the mock pushes create_auth; the hub stores the corp's permanent code):
  curl -s -d '{{\"suite_id\":\"{suite}\"}}' {mock}/mock/install
Operator views (the status page asks for the consumer key above):
  {hub}/status
  curl -s {auth} {hub}/v1/credentials
  curl -s {hub}/metrics
Press Ctrl-C to stop.
",
            lifetime = DEMO_LIFETIME.as_secs(),
            db = self.database.display(),
            key = self.consumer_key,
            stable = STABLE_APPID,
            legacy = LEGACY_APPID,
            component = COMPONENT_APPID,
            authorizers = DEMO_AUTHORIZERS,
            authorizer = wechat_mock::authorizer_appid(0, 1),
            suite = SUITE_ID,
            corps = DEMO_CORPS.len(),
            corp = DEMO_CORPS[0].0,
            provider = PROVIDER_CORPID,
            runtime = RUNTIME_APPID,
            runtime_secret = self.runtime_secret,
        )
    }
}
