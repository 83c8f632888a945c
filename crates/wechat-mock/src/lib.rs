//! A faithful mock of WeChat's servers, used by every wxhub test, benchmark and demo.
//!
//! The mock is a second implementation of the rules in `docs/wechat.md`: the token endpoints
//! (`cgi-bin/token`, `cgi-bin/stable_token`), the JS-SDK ticket endpoint, a business API that checks
//! tokens the way every WeChat API does, the quota-management APIs, the Work WeChat (企业微信)
//! token and ticket endpoints, the third-party platform (开放平台: component endpoints,
//! encrypted event pushes to the platform's URL, account owners played through
//! `/mock/authorize`) and Work WeChat's provider side (企业微信服务商: the `cgi-bin/service/*`
//! endpoints for suite, corp and provider tokens, `suite_ticket` and installation pushes to each
//! suite's command callback URL, corp administrators played through `/mock/install`,
//! `/mock/uninstall`, `/mock/reset_permanent_code` and `/mock/change_auth`), all on one listener.
//! Where WeChat is strict the mock is strict too: a hub that passes its tests against a lenient
//! mock would fail in production.
//!
//! The `/mock/*` endpoints are the mock's own (stats, faults, the parties WeChat talks to, and
//! test backdoors such as `GET /mock/suites/{suite_id}/installations`, which lists permanent
//! codes as Work WeChat never does); WeChat has none of them.
//!
//! Tests start it in-process on port 0 and read its counters:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use wechat_mock::{MockConfig, MockServer};
//! use std::time::Duration;
//!
//! let config = MockConfig {
//!     lifetime: Duration::from_secs(4),
//!     grace: Duration::from_secs(1),
//!     ..MockConfig::default()
//! }
//! .with_app("wx0000000000000001", "secret1");
//! let mock = MockServer::start(config, "127.0.0.1:0".parse().unwrap()).await?;
//! let url = format!("{}/cgi-bin/token", mock.base_url());
//! // ... point the code under test at `url`, then:
//! assert_eq!(mock.stats().calls("/cgi-bin/token", "wx0000000000000001"), 0);
//! mock.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Time is real time; tests use lifetimes of a few seconds. Quota days are calendar days in
//! UTC+8, the time zone WeChat's servers live in.

#![warn(missing_docs)]

mod authorize;
mod component;
mod credentials;
mod endpoint;
mod errors;
mod faults;
mod input;
mod push;
mod reply;
mod routes;
mod server;
mod sns;
mod state;
mod suite;
mod time;

pub use suite::{auth_corpid, MockProvider, MockSuite, SuiteStats};

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::Shared;

/// How the mock behaves: lifetimes, quotas and the accounts it knows.
///
/// The defaults are WeChat's production values, so a mock started with `MockConfig::default()`
/// behaves like the real platform; tests shorten `lifetime` and `grace` to a few seconds.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Lifetime of every token and ticket the mock mints (WeChat: 7200 s). It is also what
    /// `expires_in` says for a fresh token, and it scales the force-refresh spacing
    /// (`30 s × lifetime / 7200`, at least 1 s). Must be at least one second.
    pub lifetime: Duration,
    /// How long a superseded token stays usable after a newer one is minted (WeChat: 300 s), and
    /// the window before expiry in which `stable_token` rotates in normal mode.
    pub grace: Duration,
    /// `cgi-bin/token` calls allowed per appid per day (WeChat: 2000) before 45009.
    pub daily_quota: u32,
    /// `stable_token` force refreshes allowed per appid per day (WeChat: 20) before 45009.
    pub force_refresh_daily_limit: u32,
    /// `ticket/getticket` calls allowed per appid per day before 45009. WeChat does not publish
    /// this limit; the default of 10 000 is the figure one community report ran into.
    pub ticket_daily_quota: u32,
    /// Official accounts and mini programs the mock knows; any other appid gets 40013.
    pub apps: Vec<MockApp>,
    /// Work WeChat apps the mock knows; a corp app is identified by its corpid and secret.
    pub corps: Vec<MockCorpApp>,
    /// Third-party platforms (开放平台 components) the mock plays WeChat for.
    pub components: Vec<MockComponent>,
    /// Where the platforms' event pushes go (the "authorization event URL"), for example
    /// `http://127.0.0.1:8080/wechat/components/{component_appid}/events`; `{component_appid}` is
    /// replaced by each platform's appid. Plain `http://` only. Without it nothing is pushed
    /// until [`MockServer::push_to`] names one.
    pub push_url: Option<String>,
    /// How often a `component_verify_ticket` is pushed to each platform (WeChat: 600 s). The first
    /// push goes out as soon as the mock starts.
    pub push_interval: Duration,
    /// Accounts already authorized on each platform when the mock starts, for scale tests; their
    /// appids are [`authorizer_appid`]`(platform index, 1..=N)`.
    pub authorizers_per_component: u32,
    /// When set, every `api_authorizer_token` call returns a new `authorizer_refresh_token` and
    /// the one it was called with stops working after `grace`. WeChat keeps the refresh token for
    /// the life of the authorization; this option exercises clients that store rotated ones.
    pub rotate_refresh_tokens: bool,
    /// How long a pushed verify ticket can be used (WeChat: 12 h).
    pub verify_ticket_lifetime: Duration,
    /// Lifetime of a `pre_auth_code` (WeChat's text says 1800 s, its example 600 s).
    pub pre_auth_code_lifetime: Duration,
    /// Lifetime of an authorization code (WeChat: about an hour).
    pub authorization_code_lifetime: Duration,
    /// Work WeChat suites (第三方应用) the mock plays Work WeChat for.
    pub suites: Vec<MockSuite>,
    /// Work WeChat providers (服务商) whose `provider_access_token` the mock hands out.
    pub providers: Vec<MockProvider>,
    /// Where the suites' pushes go (the command callback URL, 指令回调URL), for example
    /// `http://127.0.0.1:8080/wechat/suites/{suite_id}/events`; `{suite_id}` is replaced by each
    /// suite's id. Plain `http://` only. Without it nothing is pushed until
    /// [`MockServer::push_suites_to`] names one.
    pub suite_push_url: Option<String>,
    /// How often a `suite_ticket` is pushed to each suite (Work WeChat: 600 s). The first push goes
    /// out as soon as the mock starts.
    pub suite_ticket_interval: Duration,
    /// How long a pushed `suite_ticket` can be used (Work WeChat: 30 min), newer pushes or not.
    pub suite_ticket_lifetime: Duration,
    /// Corps that installed each suite before the mock started, for scale tests: each has a
    /// permanent code (listed by `GET /mock/suites/{suite_id}/installations`) and nothing is
    /// pushed for them. Their corpids are [`auth_corpid`]`(suite index, 1..=N)`.
    pub auth_corps_per_suite: u32,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            lifetime: Duration::from_secs(7200),
            grace: Duration::from_secs(300),
            daily_quota: 2000,
            force_refresh_daily_limit: 20,
            ticket_daily_quota: 10_000,
            apps: Vec::new(),
            corps: Vec::new(),
            components: Vec::new(),
            push_url: None,
            push_interval: Duration::from_secs(600),
            authorizers_per_component: 0,
            rotate_refresh_tokens: false,
            verify_ticket_lifetime: Duration::from_secs(12 * 3600),
            pre_auth_code_lifetime: Duration::from_secs(1800),
            authorization_code_lifetime: Duration::from_secs(3600),
            suites: Vec::new(),
            providers: Vec::new(),
            suite_push_url: None,
            suite_ticket_interval: Duration::from_secs(600),
            suite_ticket_lifetime: Duration::from_secs(1800),
            auth_corps_per_suite: 0,
        }
    }
}

impl MockConfig {
    /// Adds an official account or mini program, so that tests can build a config in one
    /// expression.
    pub fn with_app(mut self, appid: impl Into<String>, secret: impl Into<String>) -> Self {
        self.apps.push(MockApp {
            appid: appid.into(),
            secret: secret.into(),
        });
        self
    }

    /// Adds a Work WeChat app (one agent of one corp with its own secret).
    pub fn with_corp(
        mut self,
        corpid: impl Into<String>,
        agentid: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        self.corps.push(MockCorpApp {
            corpid: corpid.into(),
            agentid: agentid.into(),
            secret: secret.into(),
        });
        self
    }

    /// Adds a third-party platform with its AppSecret, message token and EncodingAESKey.
    pub fn with_component(
        mut self,
        appid: impl Into<String>,
        secret: impl Into<String>,
        token: impl Into<String>,
        encoding_aes_key: impl Into<String>,
    ) -> Self {
        self.components.push(MockComponent {
            appid: appid.into(),
            secret: secret.into(),
            token: token.into(),
            encoding_aes_key: encoding_aes_key.into(),
        });
        self
    }
}

/// The appid of the `n`th account (from 1) authorized in advance on the platform at `index` in
/// [`MockConfig::components`] (see [`MockConfig::authorizers_per_component`]): `wx`, the index as
/// 4 hex digits, `n` as 12. Tests compute the appids they expect with it.
pub fn authorizer_appid(index: usize, n: u64) -> String {
    format!("wx{index:04x}{n:012x}")
}

/// A third-party platform (开放平台 component): what `api_component_token` checks and what its
/// pushes are signed and sealed with.
#[derive(Clone, PartialEq, Eq)]
pub struct MockComponent {
    /// The platform's appid, also the key of its counters in [`MockStats::components`].
    pub appid: String,
    /// The platform's AppSecret (`component_appsecret`).
    pub secret: String,
    /// The message-check token that push signatures are computed with.
    pub token: String,
    /// The 43-character EncodingAESKey that pushes are sealed with.
    pub encoding_aes_key: String,
}

impl fmt::Debug for MockComponent {
    /// Names the platform, never its secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockComponent")
            .field("appid", &self.appid)
            .finish_non_exhaustive()
    }
}

impl FromStr for MockComponent {
    type Err = ParseAccountError;

    /// Parses `APPID:SECRET:TOKEN:AESKEY`, the form of the binary's `--component` option. The
    /// error never repeats the secret, the token or the key.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let [appid, secret, token, key] = parts[..] else {
            return Err(ParseAccountError(format!(
                "expected APPID:SECRET:TOKEN:AESKEY (four fields separated by ':'), got {} field(s)",
                parts.len()
            )));
        };
        if [appid, secret, token, key].iter().any(|p| p.is_empty()) {
            return Err(ParseAccountError(format!(
                "component {appid:?}: APPID, SECRET, TOKEN and AESKEY must all be non-empty"
            )));
        }
        if let Err(e) = wechat_crypto::EncodingAesKey::parse(key) {
            return Err(ParseAccountError(format!(
                "component {appid:?}: bad EncodingAESKey: {e}"
            )));
        }
        Ok(MockComponent {
            appid: appid.to_owned(),
            secret: secret.to_owned(),
            token: token.to_owned(),
            encoding_aes_key: key.to_owned(),
        })
    }
}

/// An official account or mini program: the credentials `cgi-bin/token` and `stable_token` check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockApp {
    /// The account's appid (`wx…`), also the key of its counters in [`MockStats`].
    pub appid: String,
    /// The AppSecret; a request with any other secret gets 40125.
    pub secret: String,
}

/// One Work WeChat app: WeChat gives every agent of a corp its own secret, and a token fetched with
/// that secret works only for that agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockCorpApp {
    /// The corp's id (`ww…`); an unknown corpid gets 40013.
    pub corpid: String,
    /// The agent's id; with the corpid it names the app in [`MockStats`] as `corpid/agentid`.
    pub agentid: String,
    /// The app's secret; `gettoken` finds the app by corpid and secret, a wrong one gets 40001.
    pub secret: String,
}

/// Why a command-line account description could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseAccountError(String);

impl fmt::Display for ParseAccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseAccountError {}

impl FromStr for MockApp {
    type Err = ParseAccountError;

    /// Parses `APPID:SECRET`, the form of the binary's `--app` option. The secret is everything
    /// after the first colon.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((appid, secret)) if !appid.is_empty() && !secret.is_empty() => Ok(MockApp {
                appid: appid.to_owned(),
                secret: secret.to_owned(),
            }),
            _ => Err(ParseAccountError(format!(
                "expected APPID:SECRET (for example wx0123456789abcdef:s3cret), got {s:?}"
            ))),
        }
    }
}

impl FromStr for MockCorpApp {
    type Err = ParseAccountError;

    /// Parses `CORPID:AGENTID:SECRET`, the form of the binary's `--corp` option. The secret is
    /// everything after the second colon.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(corpid), Some(agentid), Some(secret))
                if !corpid.is_empty() && !agentid.is_empty() && !secret.is_empty() =>
            {
                Ok(MockCorpApp {
                    corpid: corpid.to_owned(),
                    agentid: agentid.to_owned(),
                    secret: secret.to_owned(),
                })
            }
            _ => Err(ParseAccountError(format!(
                "expected CORPID:AGENTID:SECRET (for example ww0123456789abcdef:1000002:s3cret), got {s:?}"
            ))),
        }
    }
}

/// Parses a list of official accounts, one `APPID:SECRET` per line as for `--app`; blank lines and
/// lines starting with `#` are skipped. This is the form of the binary's `--apps-file`, which
/// takes more accounts than a command line can hold (a benchmark with 100 000 of them). Errors
/// name the line.
pub fn parse_apps_file(text: &str) -> Result<Vec<MockApp>, ParseAccountError> {
    let mut apps = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let app = line
            .parse::<MockApp>()
            .map_err(|e| ParseAccountError(format!("line {}: {e}", index + 1)))?;
        apps.push(app);
    }
    Ok(apps)
}

/// A running mock: owns the listener task and the shared state that its counters come from.
///
/// Dropping it stops the server task (open connections are cut); [`MockServer::shutdown`] stops it
/// gracefully.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: server::ServerHandle,
    /// The platforms' verify-ticket and the suites' ticket pushers, stopped with the server.
    pushers: std::sync::Mutex<push::Pushers>,
}

impl MockServer {
    /// Binds `listen` (use `127.0.0.1:0` in tests) and serves until shutdown or drop.
    ///
    /// Fails with `InvalidInput` when the configuration is unusable (a zero lifetime, a duplicated
    /// appid, corp app, component, suite or provider, a bad EncodingAESKey or push URL), and with
    /// the bind error when the address cannot be bound.
    pub async fn start(config: MockConfig, listen: SocketAddr) -> std::io::Result<MockServer> {
        let shared = Arc::new(Shared::new(&config)?);
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let server = server::spawn(listener, routes::router(shared.clone()));
        let mut pushers = push::spawn(&shared);
        pushers.extend(suite::push::spawn(&shared));
        let pushers = std::sync::Mutex::new(pushers);
        Ok(MockServer {
            addr,
            shared,
            server,
            pushers,
        })
    }

    /// Starts pushing to `push_url` (as [`MockConfig::push_url`]) for a mock started without
    /// one: for a receiver that can only listen once it knows the mock's address, so that nothing
    /// is pushed before it listens. The first verify ticket goes out at once.
    ///
    /// Fails with `InvalidInput` when the URL is unusable or the mock already pushes somewhere.
    pub fn push_to(&self, push_url: &str) -> std::io::Result<()> {
        self.shared
            .platform_settings()
            .push_to(push_url)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let started = push::spawn(&self.shared);
        self.pushers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(started);
        Ok(())
    }

    /// Starts pushing to `suite_push_url` (as [`MockConfig::suite_push_url`]) for a mock started
    /// without one, as [`MockServer::push_to`] does for the platforms. The first suite tickets go
    /// out at once.
    ///
    /// Fails with `InvalidInput` when the URL is unusable or the suites already push somewhere.
    pub fn push_suites_to(&self, suite_push_url: &str) -> std::io::Result<()> {
        self.shared
            .suite_settings()
            .push_to(suite_push_url)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let started = suite::push::spawn(&self.shared);
        self.pushers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(started);
        Ok(())
    }

    /// The mock's routes as a service, answering exactly as its listener does (the same state,
    /// counters and faults) without a socket: for in-process callers on tokio's paused clock,
    /// whose calls must not wait on a real network.
    pub fn router(&self) -> axum::Router {
        routes::router(self.shared.clone())
    }

    /// The address the mock listens on (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, the value to use as WeChat's API base (and Work WeChat's).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the counters; the same data as `GET /mock/stats`.
    pub fn stats(&self) -> MockStats {
        self.shared.stats()
    }

    /// Adds a fault rule after the existing ones (the first matching rule fires).
    pub fn add_fault(&self, rule: FaultRule) {
        self.shared.add_fault(rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// Whether `ticket` is a ticket this mock minted that has not yet expired. WeChat has no API
    /// for this; tests use it to check that a JS-SDK signature was made with a live ticket.
    pub fn ticket_valid(&self, ticket: &str) -> bool {
        self.shared.ticket_valid(ticket)
    }

    /// Stops accepting connections, lets requests in flight finish (up to a few seconds) and
    /// waits for the server task to end.
    pub async fn shutdown(self) {
        drop(self.pushers);
        self.server.shutdown().await;
    }
}

/// The mock's counters, for tests that assert how the code under test used WeChat.
///
/// Accounts are named by appid for official accounts (authorizers of a platform included) and by
/// `corpid/agentid` for Work WeChat apps (the apps suites installed included); calls to the
/// component endpoints count under the platform's appid, calls to the `service/*` endpoints under
/// the suite id (`get_corp_token`: the corp's corpid; `get_provider_token`: the provider's
/// corpid), and business calls with a suite or provider token under the suite id or the
/// provider's corpid. `-` stands for a request whose account could not be identified (an unknown
/// appid, a garbage token). Paths are the request paths, such as `/cgi-bin/token`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct MockStats {
    /// Every request that reached an endpoint, including ones answered by a fault or an error, by
    /// path then by account.
    pub calls: BTreeMap<String, BTreeMap<String, u64>>,
    /// New tokens and tickets minted, by path then by account. A call that returned an existing
    /// token or ticket does not count.
    pub issued: BTreeMap<String, BTreeMap<String, u64>>,
    /// `stable_token` force refreshes that really rotated the token, by appid (the budget of 20 a
    /// day is spent by these).
    pub force_refreshes: BTreeMap<String, u64>,
    /// Outcomes of the business APIs (`get_api_domain_ip`, `openapi/quota/get`): account, then
    /// errcode as a string (`"0"` = success), then count. Calls with unknown tokens count under
    /// `-`. This is how a test sees business servers running into dead tokens.
    pub business: BTreeMap<String, BTreeMap<String, u64>>,
    /// Faults that fired, by path.
    pub faults_injected: BTreeMap<String, u64>,
    /// The errcode of every WeChat-shaped answer, by path then errcode as a string (`"0"` for a
    /// success, including token successes that carry no errcode field). Dropped connections and
    /// bare HTTP-status faults have no errcode and are not counted here.
    pub outcomes: BTreeMap<String, BTreeMap<String, u64>>,
    /// Requests to WeChat endpoints being handled right now (the `/mock/*` endpoints are not
    /// counted).
    #[serde(default)]
    pub in_flight: u64,
    /// The most requests to WeChat endpoints ever handled at once since the mock started: how
    /// many calls the code under test had in flight together. The mock answers in microseconds,
    /// so calls overlap measurably only when a delay fault holds them (for example
    /// `{"path":"/cgi-bin/stable_token","delay_ms":20}`); it can only undercount the client's
    /// own concurrency, never overcount it.
    #[serde(default)]
    pub max_in_flight: u64,
    /// The third-party platforms' own counters (pushes, tokens, authorizations), by component
    /// appid. Calls per path and errcodes are in `calls` and `outcomes` as for every endpoint.
    #[serde(default)]
    pub components: BTreeMap<String, ComponentStats>,
    /// Work WeChat suites' own counters (pushes, tokens, installations), by suite id.
    #[serde(default)]
    pub suites: BTreeMap<String, SuiteStats>,
    /// `provider_access_token`s minted, by provider corpid.
    #[serde(default)]
    pub provider_tokens_issued: BTreeMap<String, u64>,
}

/// What happened on one third-party platform: the counters a hub test asserts on. No token,
/// ticket or code appears here.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ComponentStats {
    /// Pushes by InfoType (`component_verify_ticket`, `authorized`, `updateauthorized`,
    /// `unauthorized`).
    pub pushes: BTreeMap<String, PushCounts>,
    /// Why the last failed push failed (an HTTP status, a wrong answer, a network error), for
    /// debugging a receiver.
    pub last_push_failure: Option<String>,
    /// `component_access_token`s minted.
    pub component_tokens_issued: u64,
    /// `pre_auth_code`s handed out by `api_create_preauthcode`.
    pub pre_auth_codes_issued: u64,
    /// Authorizer access tokens minted (by `api_query_auth` and `api_authorizer_token`).
    pub authorizer_tokens_issued: u64,
    /// Authorizer refresh tokens replaced by a rotating `api_authorizer_token`.
    pub refresh_tokens_rotated: u64,
    /// Accounts that authorized the platform (`/mock/authorize`).
    pub authorizations: u64,
    /// Authorizations whose permissions changed (`/mock/updateauthorize`).
    pub update_authorizations: u64,
    /// Authorizations withdrawn (`/mock/unauthorize`).
    pub unauthorizations: u64,
    /// Accounts authorized right now, those created at start included.
    pub authorizers: u64,
}

/// The fate of one kind of push (or of URL verifications).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushCounts {
    /// Pushes attempted.
    pub sent: u64,
    /// Pushes the receiver answered with HTTP 200 and exactly `success`.
    pub acknowledged: u64,
    /// Pushes that got anything else: another answer or status, a network error, no answer in
    /// time. WeChat does not retry them; the next verify ticket comes at the next interval.
    pub failed: u64,
}

impl MockStats {
    /// Requests that reached `path` for `account`.
    pub fn calls(&self, path: &str, account: &str) -> u64 {
        nested(&self.calls, path, account)
    }

    /// Requests to `path` over all accounts.
    pub fn total_calls(&self, path: &str) -> u64 {
        self.calls.get(path).map_or(0, |m| m.values().sum())
    }

    /// Tokens or tickets minted on `path` for `account`.
    pub fn issued(&self, path: &str, account: &str) -> u64 {
        nested(&self.issued, path, account)
    }

    /// Force refreshes of `appid`'s stable token that really rotated it.
    pub fn force_refreshes(&self, appid: &str) -> u64 {
        self.force_refreshes.get(appid).copied().unwrap_or(0)
    }

    /// Business-API answers to `account` with `errcode` (0 = success).
    pub fn business(&self, account: &str, errcode: i64) -> u64 {
        nested(&self.business, account, &errcode.to_string())
    }

    /// Business-API answers to `account` with any non-zero errcode.
    pub fn business_failures(&self, account: &str) -> u64 {
        self.business.get(account).map_or(0, |codes| {
            codes
                .iter()
                .filter(|(code, _)| code.as_str() != "0")
                .map(|(_, n)| n)
                .sum()
        })
    }

    /// Answers on `path` with `errcode` (0 = success).
    pub fn outcome(&self, path: &str, errcode: i64) -> u64 {
        nested(&self.outcomes, path, &errcode.to_string())
    }

    /// Faults that fired on `path`.
    pub fn faults_injected(&self, path: &str) -> u64 {
        self.faults_injected.get(path).copied().unwrap_or(0)
    }

    /// The counters of the platform `component_appid` (all zero for an unknown one).
    pub fn component(&self, component_appid: &str) -> ComponentStats {
        self.components
            .get(component_appid)
            .cloned()
            .unwrap_or_default()
    }
}

impl ComponentStats {
    /// The counts of pushes of `info_type`, for example `component_verify_ticket`.
    pub fn pushes(&self, info_type: &str) -> PushCounts {
        self.pushes.get(info_type).copied().unwrap_or_default()
    }
}

fn nested(map: &BTreeMap<String, BTreeMap<String, u64>>, outer: &str, inner: &str) -> u64 {
    map.get(outer)
        .and_then(|m| m.get(inner))
        .copied()
        .unwrap_or(0)
}

/// A fault to inject: which requests it matches and what it does to them.
///
/// Rules are tried in the order they were added; the first one that matches (path, account and
/// the probability roll) fires. `delay_ms` is applied first; then `drop_connection` cuts the
/// connection, `http_status` answers with that status (with the errcode body when `errcode` is
/// also set, otherwise a gateway-style text body), `errcode` answers HTTP 200 with
/// `{"errcode","errmsg"}`, and a rule with only a delay lets the normal answer through late.
/// `hold_answer_ms` comes last: whatever the answer, it leaves that much later.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct FaultRule {
    /// The request path the rule applies to, for example `/cgi-bin/token` (exact match).
    pub path: String,
    /// When set, only requests of this account match: the appid, or `corpid/agentid` for Work
    /// WeChat, the component appid on the component endpoints, the suite id (or corpid) on the
    /// `service/*` endpoints, as in [`MockStats`]. For token-carrying requests the account is the
    /// one the token belongs to.
    #[serde(default)]
    pub account: Option<String>,
    /// The WeChat errcode to answer with, for example -1 (system busy) or 45009.
    #[serde(default)]
    pub errcode: Option<i64>,
    /// The errmsg to send, verbatim; by default WeChat's text for the errcode with a `rid` suffix.
    #[serde(default)]
    pub errmsg: Option<String>,
    /// An HTTP status to answer with instead of 200, for example 502.
    #[serde(default)]
    pub http_status: Option<u16>,
    /// The chance that a matching request is hit, from 0 to 1; absent means always.
    #[serde(default)]
    pub probability: Option<f64>,
    /// How many times the rule fires before it removes itself; absent means forever.
    #[serde(default)]
    pub count: Option<u64>,
    /// Milliseconds to wait before answering (alone: the normal answer, late).
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Milliseconds to hold the answer once it is decided: the call takes effect at once (a
    /// token minted, a code spent) and the caller hears of it late, as over a slow way back. What
    /// happens meanwhile races with an answer already given, where `delay_ms` decides the
    /// answer only after the wait.
    #[serde(default)]
    pub hold_answer_ms: Option<u64>,
    /// Close the connection without an answer: the client sees a network error.
    #[serde(default)]
    pub drop_connection: bool,
}

impl FaultRule {
    /// Checks that the rule can fire as written: a path starting with `/`, a probability within
    /// 0..=1 and a valid HTTP status. `POST /mock/faults` refuses rules that fail this.
    pub fn validate(&self) -> Result<(), String> {
        if !self.path.starts_with('/') {
            return Err(format!("path must start with '/': {:?}", self.path));
        }
        if let Some(p) = self.probability {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("probability must be within 0..=1, got {p}"));
            }
        }
        if let Some(status) = self.http_status {
            if !(100..=999).contains(&status) {
                return Err(format!(
                    "http_status must be within 100..=999, got {status}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_app_and_corp_arguments() {
        let app: MockApp = "wxa:s:A".parse().unwrap();
        assert_eq!(app.appid, "wxa");
        assert_eq!(app.secret, "s:A");
        assert!("wxa".parse::<MockApp>().is_err());
        assert!(":s".parse::<MockApp>().is_err());
        assert!("wxa:".parse::<MockApp>().is_err());

        let corp: MockCorpApp = "ww1:1000002:sec:ret".parse().unwrap();
        assert_eq!(
            (
                corp.corpid.as_str(),
                corp.agentid.as_str(),
                corp.secret.as_str()
            ),
            ("ww1", "1000002", "sec:ret")
        );
        assert!("ww1:1000002".parse::<MockCorpApp>().is_err());
        assert!("ww1::s".parse::<MockCorpApp>().is_err());
    }

    #[test]
    fn parses_component_arguments_without_repeating_secrets() {
        let key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
        let c: MockComponent = format!("wxc:s3cret:tok:{key}").parse().unwrap();
        assert_eq!(
            (c.appid.as_str(), c.secret.as_str(), c.token.as_str()),
            ("wxc", "s3cret", "tok")
        );
        assert_eq!(c.encoding_aes_key, key);
        let shown = format!("{c:?}");
        assert!(shown.contains("wxc") && !shown.contains("s3cret") && !shown.contains(key));
        for bad in [
            "wxc:s3cret:tok".to_owned(),
            format!("wxc:s3cret:tok:{key}:more"),
            format!("wxc::tok:{key}"),
            "wxc:s3cret:tok:short".to_owned(),
        ] {
            let error = bad.parse::<MockComponent>().unwrap_err().to_string();
            assert!(!error.contains("s3cret"), "{error}");
        }
    }

    #[test]
    fn parses_an_apps_file_and_names_the_bad_line() {
        let apps = parse_apps_file("# accounts\nwxa:sA\n\n  wxb:s:B  \n").unwrap();
        assert_eq!(
            apps,
            vec![
                MockApp {
                    appid: "wxa".into(),
                    secret: "sA".into()
                },
                MockApp {
                    appid: "wxb".into(),
                    secret: "s:B".into()
                },
            ]
        );
        assert!(parse_apps_file("").unwrap().is_empty());
        let error = parse_apps_file("wxa:sA\nwxnocolon\n").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("line 2: expected APPID:SECRET"),
            "{error}"
        );
    }

    #[test]
    fn fault_rules_are_validated() {
        let ok = FaultRule {
            path: "/cgi-bin/token".into(),
            probability: Some(0.5),
            http_status: Some(502),
            ..FaultRule::default()
        };
        assert!(ok.validate().is_ok());
        let bad_path = FaultRule {
            path: "cgi-bin/token".into(),
            ..ok.clone()
        };
        assert!(bad_path.validate().is_err());
        let bad_p = FaultRule {
            probability: Some(f64::NAN),
            ..ok.clone()
        };
        assert!(bad_p.validate().is_err());
        let bad_status = FaultRule {
            http_status: Some(42),
            ..ok
        };
        assert!(bad_status.validate().is_err());
    }
}
