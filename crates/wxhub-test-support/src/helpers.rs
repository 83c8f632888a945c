//! One way to start the pieces: [`spawn_mock`] and [`spawn_app`] (after zero-to-production's
//! `spawn_app`), plus a consumer client and condition waits with deadlines.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wechat_mock::{MockConfig, MockServer, MockStats};
use wxhub::configuration::{
    consumer_key_digest, AppGrant, AppSettings, ComponentSettings, ConsumerSettings, CorpSettings,
    GatewaySettings, MasterKey, ProviderSettings, RefreshOverrides, RefreshSettings, Scope, Secret,
    SecretsSettings, ServerSettings, Settings, StoreSettings, SuiteSettings, TokenMode,
    WechatSettings,
};
use wxhub::gateway::Host;
use wxhub::startup::Application;
use wxhub::store::Store;
use wxhub::token::{CorpTicketKind, TicketKind};

/// Bearer key of a consumer with every scope on every app.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
/// Bearer key of a consumer that may only read the first configured app.
pub const READER_KEY: &str = "test-reader-key-0123456789";
/// Bearer key of a consumer that may only report tokens (`invalidate`, no `read`) on every app.
pub const REPORTER_KEY: &str = "test-reporter-key-0123456789";

/// The secret the mock expects for every test app; the hub is configured with it unless a test
/// says otherwise.
pub fn secret_of(appid: &str) -> String {
    format!("secret-of-{appid}")
}

/// Loopback, any free port.
pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A test app: appid, mode, tickets.
#[derive(Clone)]
pub struct TestApp {
    pub appid: String,
    pub mode: TokenMode,
    pub tickets: Vec<TicketKind>,
    /// The secret the hub is configured with (defaults to the one the mock expects).
    pub secret: Option<String>,
}

impl TestApp {
    pub fn stable(appid: &str) -> TestApp {
        TestApp {
            appid: appid.into(),
            mode: TokenMode::Stable,
            tickets: vec![],
            secret: None,
        }
    }

    pub fn legacy(appid: &str) -> TestApp {
        TestApp {
            mode: TokenMode::Legacy,
            ..TestApp::stable(appid)
        }
    }

    pub fn with_tickets(mut self, tickets: &[TicketKind]) -> TestApp {
        self.tickets = tickets.to_vec();
        self
    }

    pub fn with_secret(mut self, secret: &str) -> TestApp {
        self.secret = Some(secret.into());
        self
    }
}

/// A test Work WeChat app.
#[derive(Clone)]
pub struct TestCorp {
    pub corpid: String,
    pub agentid: String,
    pub tickets: Vec<CorpTicketKind>,
}

/// Starts the mock with every app and corp app of the test registered with its expected secret.
pub async fn spawn_mock(
    lifetime: Duration,
    grace: Duration,
    apps: &[TestApp],
    corps: &[TestCorp],
    tune: impl FnOnce(MockConfig) -> MockConfig,
) -> Arc<MockServer> {
    let mut config = MockConfig {
        lifetime,
        grace,
        ..MockConfig::default()
    };
    for app in apps {
        config = config.with_app(app.appid.clone(), secret_of(&app.appid));
    }
    for corp in corps {
        let account = format!("{}/{}", corp.corpid, corp.agentid);
        config = config.with_corp(
            corp.corpid.clone(),
            corp.agentid.clone(),
            secret_of(&account),
        );
    }
    Arc::new(
        MockServer::start(tune(config), any_port())
            .await
            .expect("mock starts"),
    )
}

/// How to build the hub under test.
pub struct HubOptions {
    pub apps: Vec<TestApp>,
    pub corps: Vec<TestCorp>,
    pub store: StoreSettings,
    pub refresh: RefreshSettings,
    /// Use this store object instead of opening `store` (to share one between restarts).
    pub shared_store: Option<Arc<dyn Store>>,
    /// `[secrets] master_key` (the test key unless a test says otherwise).
    pub master_key: Option<MasterKey>,
    /// `[[components]]`: third-party platforms.
    pub components: Vec<ComponentSettings>,
    /// `[[suites]]`: Work WeChat suites.
    pub suites: Vec<SuiteSettings>,
    /// `[[providers]]`: Work WeChat service providers.
    pub providers: Vec<ProviderSettings>,
    /// WeChat's address for the hub, when it is not the mock's (a hostile upstream).
    pub api_base: Option<String>,
    /// `[server]` apart from `listen` (connection limits and timeouts).
    pub server: ServerSettings,
    /// Consumers besides the usual admin, reader and reporter.
    pub more_consumers: Vec<ConsumerSettings>,
    /// `[gateway]` apart from its listeners (which are always on, on free ports).
    pub gateway: GatewaySettings,
}

/// The `[secrets] master_key` test hubs run with.
pub fn test_master_key() -> MasterKey {
    MasterKey::from_bytes([7; 32])
}

impl HubOptions {
    pub fn new(apps: &[TestApp]) -> HubOptions {
        HubOptions {
            apps: apps.to_vec(),
            corps: vec![],
            store: StoreSettings::Memory,
            refresh: RefreshSettings {
                min_refresh_interval: Duration::from_secs(1),
                refresh_retry_interval: Duration::from_secs(2),
                ..RefreshSettings::default()
            },
            shared_store: None,
            master_key: Some(test_master_key()),
            components: vec![],
            suites: vec![],
            providers: vec![],
            api_base: None,
            server: ServerSettings {
                request_timeout: Duration::from_secs(10),
                ..ServerSettings::default()
            },
            more_consumers: vec![],
            gateway: GatewaySettings::default(),
        }
    }

    pub fn with_corps(mut self, corps: &[TestCorp]) -> HubOptions {
        self.corps = corps.to_vec();
        self
    }

    pub fn with_sqlite(mut self, path: PathBuf) -> HubOptions {
        self.store = StoreSettings::Sqlite { path };
        self
    }
}

/// A running hub and a consumer's view of it.
pub struct TestHub {
    pub address: String,
    /// The gateway shaped like api.weixin.qq.com (`http://IP:PORT`; empty for a remote hub).
    pub gateway: String,
    /// The gateway shaped like qyapi.weixin.qq.com.
    pub work_gateway: String,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

/// The token answer of the API.
#[derive(Debug, Deserialize, Clone, PartialEq)]
pub struct TokenAnswer {
    #[serde(alias = "ticket")]
    pub access_token: String,
    pub expires_in: u64,
    pub expires_at: String,
    pub generation: u64,
}

/// Builds the settings a test hub runs with.
pub fn settings_for(mock: &MockServer, options: &HubOptions) -> Settings {
    let first_app = options.apps.first().map(|a| a.appid.clone());
    Settings {
        server: ServerSettings {
            listen: any_port(),
            ..options.server.clone()
        },
        store: options.store.clone(),
        wechat: WechatSettings {
            api_base: options.api_base.clone().unwrap_or_else(|| mock.base_url()),
            work_api_base: options.api_base.clone().unwrap_or_else(|| mock.base_url()),
            timeout: Duration::from_secs(2),
        },
        refresh: options.refresh.clone(),
        apps: options
            .apps
            .iter()
            .map(|app| AppSettings {
                appid: app.appid.clone(),
                secret: Secret::new(app.secret.clone().unwrap_or_else(|| secret_of(&app.appid))),
                mode: app.mode,
                tickets: app.tickets.clone(),
                refresh: RefreshOverrides::default(),
            })
            .collect(),
        corps: options
            .corps
            .iter()
            .map(|corp| CorpSettings {
                corpid: corp.corpid.clone(),
                agentid: corp.agentid.clone(),
                secret: Secret::new(secret_of(&format!("{}/{}", corp.corpid, corp.agentid))),
                tickets: corp.tickets.clone(),
                refresh: RefreshOverrides::default(),
            })
            .collect(),
        components: options.components.clone(),
        suites: options.suites.clone(),
        providers: options.providers.clone(),
        consumers: vec![
            ConsumerSettings {
                name: "admin".into(),
                key_sha256: consumer_key_digest(ADMIN_KEY),
                apps: vec![AppGrant::All],
                scopes: vec![
                    Scope::Read,
                    Scope::Invalidate,
                    Scope::Admin,
                    Scope::Authorize,
                    Scope::Call,
                ],
            },
            ConsumerSettings {
                name: "reader".into(),
                key_sha256: consumer_key_digest(READER_KEY),
                apps: first_app.into_iter().map(AppGrant::App).collect(),
                scopes: vec![Scope::Read],
            },
            ConsumerSettings {
                name: "reporter".into(),
                key_sha256: consumer_key_digest(REPORTER_KEY),
                apps: vec![AppGrant::All],
                scopes: vec![Scope::Invalidate],
            },
        ]
        .into_iter()
        .chain(options.more_consumers.iter().cloned())
        .collect(),
        secrets: SecretsSettings {
            master_key: options.master_key.clone(),
        },
        gateway: GatewaySettings {
            listen: Some(any_port()),
            work_listen: Some(any_port()),
            ..options.gateway.clone()
        },
    }
}

/// The usual setup: a mock with 60 s lifetimes and a 5 s grace, and a ready hub for `apps` on the
/// memory store.
pub async fn start_ready(apps: &[TestApp]) -> (Arc<MockServer>, TestHub) {
    start_ready_living(apps, Duration::from_secs(60), Duration::from_secs(5)).await
}

/// A ready hub for one legacy app that acts on a report of a token however young (tests kill
/// tokens within a second of their fetch; `min_refresh_interval` is tested elsewhere), against a
/// mock whose replaced tokens die half a second later.
pub async fn quick_hub(appid: &str) -> (Arc<MockServer>, TestHub) {
    quick_hub_with(appid, |options| options).await
}

/// [`quick_hub`], with `adjust` applied to its options.
pub async fn quick_hub_with(
    appid: &str,
    adjust: impl FnOnce(HubOptions) -> HubOptions,
) -> (Arc<MockServer>, TestHub) {
    let apps = [TestApp::legacy(appid)];
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_millis(500),
        &apps,
        &[],
        |c| c,
    )
    .await;
    let mut options = HubOptions::new(&apps);
    options.refresh.min_refresh_interval = Duration::from_millis(1);
    let options = adjust(options);
    let hub = spawn_app(&mock, options).await;
    hub.wait_ready().await;
    (mock, hub)
}

/// A mock for `apps` with the suite's usual lifetimes: a minute, five seconds of overlap.
pub async fn minute_mock(apps: &[TestApp]) -> Arc<MockServer> {
    spawn_mock(
        Duration::from_secs(60),
        Duration::from_secs(5),
        apps,
        &[],
        |c| c,
    )
    .await
}

/// A mock whose tokens live `lifetime` (the old one accepted for `grace` after a new one) and a
/// ready hub for `apps`.
pub async fn start_ready_living(
    apps: &[TestApp],
    lifetime: Duration,
    grace: Duration,
) -> (Arc<MockServer>, TestHub) {
    let mock = spawn_mock(lifetime, grace, apps, &[], |c| c).await;
    let hub = spawn_app(&mock, HubOptions::new(apps)).await;
    hub.wait_ready().await;
    (mock, hub)
}

/// Builds and starts the hub in-process on port 0.
pub async fn spawn_app(mock: &MockServer, options: HubOptions) -> TestHub {
    let settings = settings_for(mock, &options);
    let app = match options.shared_store {
        Some(store) => Application::build_with_store(settings, store).await,
        None => Application::build(settings).await,
    }
    .expect("hub builds");
    let address = format!("http://{}", app.address());
    let gateway_of = |host| {
        app.gateway_address(host)
            .map(|a| format!("http://{a}"))
            .unwrap_or_default()
    };
    let gateway = gateway_of(Host::Official);
    let work_gateway = gateway_of(Host::Work);
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    TestHub {
        address,
        gateway,
        work_gateway,
        client: reqwest::Client::new(),
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

impl TestHub {
    /// A consumer's view of a hub that runs elsewhere (another process), at `http://IP:PORT`.
    /// [`TestHub::stop`] does nothing for it. (Used by the cluster tests.)
    pub fn remote(address: String) -> TestHub {
        TestHub {
            address,
            gateway: String::new(),
            work_gateway: String::new(),
            client: reqwest::Client::new(),
            shutdown: None,
            handle: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// `GET path` with the admin key.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("request reaches the hub")
    }

    /// `POST path` with a JSON body and the admin key.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .await
            .expect("request reaches the hub")
    }

    /// `method path` with an optional JSON body and the admin key.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request reaches the hub")
    }

    /// The access token of `appid` as a consumer receives it.
    pub async fn token(&self, appid: &str) -> TokenAnswer {
        self.token_at(&format!("/v1/apps/{appid}/access_token"))
            .await
    }

    /// The token or ticket served at `path`.
    pub async fn token_at(&self, path: &str) -> TokenAnswer {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("token JSON")
    }

    /// Reports `token` of `appid` as refused by WeChat.
    pub async fn invalidate(&self, appid: &str, token: &str) -> reqwest::Response {
        self.post(
            &format!("/v1/apps/{appid}/access_token/invalidate"),
            serde_json::json!({ "access_token": token }),
        )
        .await
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .text()
            .await
            .expect("metrics text")
    }

    /// The sum of every `/metrics` sample whose line starts with `prefix` (a metric name with
    /// some of its labels).
    pub async fn metric_sum(&self, prefix: &str) -> u64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// The admin credentials listing, entry for `key`.
    pub async fn credential(&self, key: &str) -> serde_json::Value {
        let all: serde_json::Value = self.get("/v1/credentials").await.json().await.unwrap();
        all["credentials"]
            .as_array()
            .and_then(|list| list.iter().find(|c| c["key"] == key).cloned())
            .unwrap_or_else(|| panic!("credential {key} is listed: {all}"))
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        wait_until(Duration::from_secs(10), "the hub becomes ready", || async {
            self.client
                .get(self.url("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
    }

    /// Stops the hub and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }
}

/// Polls `condition` every 50 ms until it holds; fails the test after `deadline`.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() >= give_up {
            panic!("timed out after {deadline:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Calls the mock's business API with `token`, returning WeChat's errcode (0 = success).
pub async fn business_call(client: &reqwest::Client, mock: &MockServer, token: &str) -> i64 {
    let body: serde_json::Value = client
        .get(format!("{}/cgi-bin/get_api_domain_ip", mock.base_url()))
        .query(&[("access_token", token)])
        .send()
        .await
        .expect("mock answers")
        .json()
        .await
        .expect("mock JSON");
    body["errcode"].as_i64().unwrap_or(0)
}

/// A token another party fetched for `appid` straight from WeChat (`cgi-bin/token`): in legacy
/// mode it kills the one the hub serves once the overlap is over.
pub async fn fetched_elsewhere(mock: &MockServer, appid: &str) -> String {
    let answer: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/cgi-bin/token", mock.base_url()))
        .query(&[
            ("grant_type", "client_credential"),
            ("appid", appid),
            ("secret", &secret_of(appid)),
        ])
        .send()
        .await
        .expect("mock answers")
        .json()
        .await
        .expect("mock JSON");
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("a token: {answer}"))
        .to_string()
}

/// Kills `old` behind the hub's back: another party fetches `appid`'s token straight from WeChat,
/// and this waits until WeChat refuses `old` (after its overlap).
pub async fn killed_behind_the_hubs_back(mock: &MockServer, appid: &str, old: &str) {
    fetched_elsewhere(mock, appid).await;
    let client = reqwest::Client::new();
    wait_until(Duration::from_secs(10), "the old token dies", || async {
        business_call(&client, mock, old).await != 0
    })
    .await;
}

/// The mock's counters.
pub fn stats(mock: &MockServer) -> MockStats {
    mock.stats()
}

/// Seconds from now until an RFC 3339 instant written by the hub (negative if past).
pub fn seconds_until(rfc3339: &str) -> i64 {
    let parse = |s: &str| -> Option<i64> {
        let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
        let mut d = date.split('-').map(|p| p.parse::<i64>());
        let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
        let mut t = time.split(':').map(|p| p.parse::<i64>());
        let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
        // Days from civil (Howard Hinnant).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
    };
    let at = parse(rfc3339).unwrap_or_else(|| panic!("RFC 3339 instant: {rfc3339}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    at - now
}

/// The JSON answer to `request`.
pub async fn answer_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request
        .send()
        .await
        .expect("an answer")
        .json()
        .await
        .expect("a JSON answer")
}

/// A WeChat answer's errcode and its text before the per-request suffix (WeChat's `rid:`, Work
/// WeChat's `, hint:`), which differs at every call.
pub fn errcode_and_text(answer: &serde_json::Value) -> (i64, String) {
    let errmsg = answer["errmsg"].as_str().unwrap_or_default();
    let text = errmsg
        .split(" rid:")
        .next()
        .and_then(|t| t.split(", hint:").next())
        .unwrap_or_default()
        .to_string();
    (answer["errcode"].as_i64().unwrap_or(0), text)
}
