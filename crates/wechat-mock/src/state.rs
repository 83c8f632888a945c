//! The mock's state and WeChat's rules: every endpoint's checks, in WeChat's order, and what each
//! call does to tokens, tickets, quotas and counters.
//!
//! Everything lives under one mutex; every critical section is short and never spans an await
//! (a delay fault sleeps between [`Shared::admit`] and [`Shared::serve`]).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use serde::Serialize;

use crate::component::{self, Platform, PlatformSettings};
use crate::credentials::{Credentials, Kind};
use crate::endpoint::Endpoint;
use crate::errors::code::*;
use crate::faults::Faults;
use crate::input::{Field, Input};
use crate::reply::{Reply, Status};
use crate::suite::{self, SuiteSettings, Suites};
use crate::time::Periods;
use crate::{FaultRule, MockConfig, MockStats};

/// `stable_token` calls per appid per day (docs/wechat.md#stable_token: 500 000/day).
const STABLE_DAILY_LIMIT: u32 = 500_000;
/// Quota clears per appid per calendar month, API and console together (docs/wechat.md#quota-apis).
const CLEARS_PER_MONTH: u32 = 10;
/// Work WeChat corp ticket fetches per corp per hour (docs/wechat.md#work-wechat).
const CORP_TICKETS_PER_HOUR: u32 = 400;
/// Work WeChat agent_config ticket fetches per app per hour (docs/wechat.md#work-wechat).
const AGENT_TICKETS_PER_HOUR: u32 = 100;
/// The answer of `get_api_domain_ip`: addresses of WeChat's API servers.
const API_IPS: [&str; 5] = [
    "101.89.47.18",
    "101.91.34.103",
    "101.91.37.36",
    "109.244.145.111",
    "157.255.246.101",
];

/// The state shared by every connection, behind one mutex.
pub(crate) struct Shared {
    settings: Settings,
    state: Mutex<State>,
    /// Requests to WeChat endpoints being handled now, and the most ever at once. Atomics outside
    /// the state mutex: a request counts from the moment it arrives, before it queues for the
    /// lock or sleeps in a delay fault.
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

/// Why [`Shared::invalidate_early`] invalidated nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum EarlyInvalidation {
    /// No token the mock minted is live with this value.
    NotLive,
    /// A live value, but not a Work WeChat token (the official accounts' tokens die when a new
    /// one is fetched; tickets and codes have their own rules).
    NotWork,
}

/// Counts one request as in flight until it is dropped, so that every way out of a handler
/// (including a dropped connection) ends the count.
pub(crate) struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The configuration, in the form the rules use.
struct Settings {
    lifetime: Duration,
    grace: Duration,
    /// Minimum spacing of effective force refreshes: 30 s at the real lifetime, scaled.
    force_spacing: Duration,
    daily_quota: u32,
    force_limit: u32,
    ticket_quota: u32,
    /// corpid → (secret, `corpid/agentid`) of each of its apps.
    corp_secrets: HashMap<String, Vec<(String, String)>>,
    /// The third-party platforms' configuration.
    platform: PlatformSettings,
    /// Work WeChat's suites' and providers' configuration.
    suite: SuiteSettings,
}

struct State {
    credentials: Credentials,
    apps: HashMap<String, AppState>,
    /// By `corpid/agentid`.
    corp_apps: HashMap<String, CorpAppState>,
    /// By corpid.
    corps: HashMap<String, CorpState>,
    faults: Faults,
    stats: MockStats,
    /// The third-party platforms: tickets, tokens and authorizers.
    platform: Platform,
    /// Work WeChat's suites and providers: tickets, tokens and installations.
    suites: Suites,
}

/// Everything under the lock that the third-party platform's rules touch.
pub(crate) struct PlatformCtx<'a> {
    /// The platforms' own state.
    pub platform: &'a mut Platform,
    /// Where tickets, codes and tokens are minted and judged.
    pub credentials: &'a mut Credentials,
    /// The counters.
    pub stats: &'a mut MockStats,
    /// The official accounts, which every authorizer joins.
    apps: &'a mut HashMap<String, AppState>,
}

impl PlatformCtx<'_> {
    /// Makes an authorizer a known official account, so that its tokens work on every API an
    /// account's token works on (tickets, quotas). Its AppSecret is random: nobody knows it.
    pub fn ensure_account(&mut self, appid: &str) {
        if !self.apps.contains_key(appid) {
            let secret = crate::credentials::random_secret();
            self.apps.insert(appid.to_owned(), AppState::new(secret));
        }
    }
}

/// Everything under the lock that Work WeChat's suite rules touch.
pub(crate) struct SuiteCtx<'a> {
    /// The suites' and providers' own state.
    pub suites: &'a mut Suites,
    /// Where tickets, codes and tokens are minted and judged.
    pub credentials: &'a mut Credentials,
    /// The counters.
    pub stats: &'a mut MockStats,
    /// The Work WeChat apps, which every installation joins.
    corp_apps: &'a mut HashMap<String, CorpAppState>,
    /// The Work WeChat corps, whose corp ticket an installed app fetches.
    corps: &'a mut HashMap<String, CorpState>,
}

impl SuiteCtx<'_> {
    /// Whether the Work WeChat app `account` (`corpid/agentid`) exists, configured or installed.
    pub fn has_corp_app(&self, account: &str) -> bool {
        self.corp_apps.contains_key(account)
    }

    /// Makes an installed suite's app a Work WeChat app of `corpid`, so that its corp tokens
    /// work on every API a Work app token works on (tickets, the business API).
    pub fn add_corp_app(&mut self, corpid: &str, account: &str) {
        self.corp_apps.insert(
            account.to_owned(),
            CorpAppState {
                corpid: corpid.to_owned(),
                token: None,
                agent_ticket: None,
                agent_tickets: HourCount::default(),
            },
        );
        self.corps.entry(corpid.to_owned()).or_default();
    }

    /// An uninstalled suite's app leaves the Work WeChat apps; its agent ticket dies with it.
    pub fn remove_corp_app(&mut self, account: &str, now: Instant) {
        if let Some(app) = self.corp_apps.remove(account) {
            let mut dead: Vec<String> = app.agent_ticket.into_iter().collect();
            self.credentials
                .supersede(&mut dead, now, Duration::ZERO, false);
        }
    }
}

/// One official account.
struct AppState {
    secret: String,
    /// Possibly-live `cgi-bin/token` tokens, oldest first; the last is the newest.
    legacy: Vec<String>,
    /// Possibly-live stable tokens, oldest first; the last is the current one.
    stable: Vec<String>,
    /// When the last effective force refresh happened.
    last_force: Option<Instant>,
    jsapi_ticket: Option<String>,
    card_ticket: Option<String>,
    usage: DayUsage,
    clears: MonthCount,
}

/// Calls counted against the daily quotas of one appid.
#[derive(Default)]
struct DayUsage {
    day: u64,
    token: u32,
    stable: u32,
    ticket: u32,
    force: u32,
}

impl AppState {
    fn new(secret: String) -> AppState {
        AppState {
            secret,
            legacy: Vec::new(),
            stable: Vec::new(),
            last_force: None,
            jsapi_ticket: None,
            card_ticket: None,
            usage: DayUsage::default(),
            clears: MonthCount::default(),
        }
    }
}

impl DayUsage {
    /// Starts a fresh count when the UTC+8 day has changed.
    fn roll(&mut self, day: u64) {
        if self.day != day {
            *self = DayUsage {
                day,
                ..DayUsage::default()
            };
        }
    }
}

#[derive(Default)]
struct MonthCount {
    month: u64,
    count: u32,
}

#[derive(Default)]
struct HourCount {
    hour: u64,
    count: u32,
}

impl HourCount {
    /// Counts one call in `hour`, unless `limit` calls were already made in it.
    fn take(&mut self, hour: u64, limit: u32) -> bool {
        if self.hour != hour {
            *self = HourCount { hour, count: 0 };
        }
        if self.count >= limit {
            return false;
        }
        self.count += 1;
        true
    }
}

/// One Work WeChat app.
struct CorpAppState {
    corpid: String,
    token: Option<String>,
    agent_ticket: Option<String>,
    agent_tickets: HourCount,
}

/// One Work WeChat corp: the corp JS-SDK ticket belongs to the corp, not to an app.
#[derive(Default)]
struct CorpState {
    jsapi_ticket: Option<String>,
    jsapi_tickets: HourCount,
}

#[derive(Serialize)]
struct AccessToken<'a> {
    access_token: &'a str,
    expires_in: u64,
}

#[derive(Serialize)]
struct WorkAccessToken<'a> {
    errcode: i64,
    errmsg: &'a str,
    access_token: &'a str,
    expires_in: u64,
}

#[derive(Serialize)]
struct Ticket<'a> {
    errcode: i64,
    errmsg: &'a str,
    ticket: &'a str,
    expires_in: u64,
}

#[derive(Serialize)]
struct IpList {
    ip_list: [&'static str; 5],
}

#[derive(Serialize)]
struct WorkIpList {
    errcode: i64,
    errmsg: &'static str,
    ip_list: [&'static str; 5],
}

#[derive(Serialize)]
struct QuotaAnswer {
    errcode: i64,
    errmsg: &'static str,
    quota: Quota,
}

#[derive(Serialize)]
struct Quota {
    daily_limit: u32,
    used: u32,
    remain: u32,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

impl Shared {
    /// Checks the configuration and builds the initial state.
    pub fn new(config: &MockConfig) -> io::Result<Shared> {
        if config.lifetime < Duration::from_secs(1) {
            return Err(invalid("lifetime must be at least one second".into()));
        }
        let mut apps = HashMap::new();
        for app in &config.apps {
            if app.appid.is_empty() || app.secret.is_empty() || app.appid.contains('/') {
                return Err(invalid(format!(
                    "app {:?}: appid and secret must be non-empty and the appid must not contain '/'",
                    app.appid
                )));
            }
            let state = AppState::new(app.secret.clone());
            if apps.insert(app.appid.clone(), state).is_some() {
                return Err(invalid(format!("app {:?} is configured twice", app.appid)));
            }
        }
        let mut corp_secrets: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let mut corp_apps = HashMap::new();
        let mut corps = HashMap::new();
        for corp in &config.corps {
            if corp.corpid.is_empty()
                || corp.agentid.is_empty()
                || corp.secret.is_empty()
                || corp.corpid.contains('/')
            {
                return Err(invalid(format!(
                    "corp app {:?}/{:?}: corpid, agentid and secret must be non-empty and the corpid must not contain '/'",
                    corp.corpid, corp.agentid
                )));
            }
            let account = format!("{}/{}", corp.corpid, corp.agentid);
            let agents = corp_secrets.entry(corp.corpid.clone()).or_default();
            if agents.iter().any(|(secret, _)| *secret == corp.secret) {
                return Err(invalid(format!(
                    "corp app {account}: another app of the corp has the same secret"
                )));
            }
            agents.push((corp.secret.clone(), account.clone()));
            let state = CorpAppState {
                corpid: corp.corpid.clone(),
                token: None,
                agent_ticket: None,
                agent_tickets: HourCount::default(),
            };
            if corp_apps.insert(account.clone(), state).is_some() {
                return Err(invalid(format!("corp app {account} is configured twice")));
            }
            corps
                .entry(corp.corpid.clone())
                .or_insert_with(CorpState::default);
        }
        let force_spacing = config
            .lifetime
            .mul_f64(30.0 / 7200.0)
            .max(Duration::from_secs(1));
        let platform_settings = PlatformSettings::new(config).map_err(invalid)?;
        let suite_settings = SuiteSettings::new(config).map_err(invalid)?;
        let mut state = State {
            credentials: Credentials::new(config.lifetime),
            apps,
            corp_apps,
            corps,
            faults: Faults::default(),
            stats: MockStats::default(),
            platform: Platform::default(),
            suites: Suites::default(),
        };
        component::start(
            &platform_settings,
            &mut state.platform_ctx(),
            Instant::now(),
        );
        suite::start(&suite_settings, &mut state.suite_ctx(), Instant::now());
        Ok(Shared {
            settings: Settings {
                lifetime: config.lifetime,
                grace: config.grace,
                force_spacing,
                daily_quota: config.daily_quota,
                force_limit: config.force_refresh_daily_limit,
                ticket_quota: config.ticket_daily_quota,
                corp_secrets,
                platform: platform_settings,
                suite: suite_settings,
            },
            state: Mutex::new(state),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take every later request down with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The third-party platforms' configuration, readable without the lock (the pushers use it).
    pub fn platform_settings(&self) -> &PlatformSettings {
        &self.settings.platform
    }

    /// Runs `f` on the platform state under the lock (never across an await).
    pub fn with_platform<R>(
        &self,
        f: impl FnOnce(&PlatformSettings, &mut PlatformCtx<'_>) -> R,
    ) -> R {
        let mut state = self.lock();
        f(&self.settings.platform, &mut state.platform_ctx())
    }

    /// The suites' and providers' configuration, readable without the lock (the pushers use it).
    pub fn suite_settings(&self) -> &SuiteSettings {
        &self.settings.suite
    }

    /// Runs `f` on the suite state under the lock (never across an await).
    pub fn with_suites<R>(&self, f: impl FnOnce(&SuiteSettings, &mut SuiteCtx<'_>) -> R) -> R {
        let mut state = self.lock();
        f(&self.settings.suite, &mut state.suite_ctx())
    }

    /// Work WeChat invalidates `token` before its expiry, as it may for operational reasons
    /// (docs/wechat.md#work-wechat): a Work app's or an installed corp's access token, a suite
    /// token or a provider token. It dies now, is answered as superseded from then on (40001;
    /// 40082 for the suite and provider tokens), and the next fetch mints a new one. Its kind
    /// (`corp`, `suite`, `provider`), or why nothing was invalidated.
    pub fn invalidate_early(&self, token: &str) -> Result<&'static str, EarlyInvalidation> {
        let now = Instant::now();
        let mut state = self.lock();
        let kind = match state.credentials.live(token, Kind::Corp, now) {
            Some(_) => "corp",
            None => match state.credentials.get(token) {
                Some(r) if r.kind == Kind::Suite && r.remaining(now).is_some() => "suite",
                Some(r) if r.kind == Kind::Provider && r.remaining(now).is_some() => "provider",
                Some(r) if r.remaining(now).is_some() => return Err(EarlyInvalidation::NotWork),
                _ => return Err(EarlyInvalidation::NotLive),
            },
        };
        state
            .credentials
            .supersede(&mut vec![token.to_owned()], now, Duration::ZERO, false);
        Ok(kind)
    }

    pub fn stats(&self) -> MockStats {
        let mut stats = self.lock().stats.clone();
        stats.in_flight = self.in_flight.load(Ordering::SeqCst);
        stats.max_in_flight = self.max_in_flight.load(Ordering::SeqCst);
        stats
    }

    /// Counts a request to a WeChat endpoint as in flight for the life of the returned guard.
    pub fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(self)
    }

    pub fn add_fault(&self, rule: FaultRule) {
        self.lock().faults.add(rule);
    }

    pub fn clear_faults(&self) -> usize {
        self.lock().faults.clear()
    }

    pub fn faults(&self) -> Vec<FaultRule> {
        self.lock().faults.list()
    }

    pub fn ticket_valid(&self, ticket: &str) -> bool {
        self.lock()
            .credentials
            .live(ticket, Kind::Ticket, Instant::now())
            .is_some()
    }

    /// The first step of every request: names its account, counts the call and picks the fault
    /// that fires on it, if any.
    pub fn admit(&self, endpoint: Endpoint, input: &Input) -> (String, Option<FaultRule>) {
        let mut state = self.lock();
        let account = state.identify(&self.settings, endpoint, input);
        bump(&mut state.stats.calls, endpoint.path(), &account);
        let fault = state.faults.fire(endpoint.path(), &account);
        if fault.is_some() {
            *state
                .stats
                .faults_injected
                .entry(endpoint.path().to_owned())
                .or_default() += 1;
        }
        (account, fault)
    }

    /// Counts an answer that a fault produced.
    pub fn record_outcome(&self, endpoint: Endpoint, account: &str, errcode: Option<i64>) {
        self.lock().record(endpoint, account, errcode);
    }

    /// Answers a request by WeChat's rules.
    pub fn serve(&self, endpoint: Endpoint, input: &Input, account: &str) -> Reply {
        let now = Instant::now();
        let periods = Periods::now();
        let s = &self.settings;
        let mut state = self.lock();
        let result = match endpoint {
            Endpoint::Token => state.token(s, input, now, periods),
            Endpoint::StableToken => state.stable_token(s, input, now, periods),
            Endpoint::GetTicket => state.get_ticket(s, input, now, periods),
            Endpoint::ApiDomainIp | Endpoint::CallbackIp => state.api_domain_ip(input, now),
            Endpoint::JsCode2Session => {
                let secret = state
                    .apps
                    .get(input.query("appid").unwrap_or_default())
                    .map(|a| a.secret.as_str());
                crate::sns::jscode2session(input, secret)
            }
            Endpoint::QuotaGet => state.quota_get(s, input, now, periods),
            Endpoint::ClearQuota => state.clear_quota(input, now, periods),
            Endpoint::ClearQuotaV2 => state.clear_quota_v2(input, periods),
            Endpoint::CorpToken => state.corp_token(s, input, now),
            Endpoint::CorpJsapiTicket => state.corp_jsapi_ticket(s, input, now, periods),
            Endpoint::CorpAgentTicket => state.corp_agent_ticket(s, input, now, periods),
            e if e.is_suite() => suite::serve(&s.suite, e, input, &mut state.suite_ctx(), now),
            _ => component::serve(&s.platform, endpoint, input, &mut state.platform_ctx(), now),
        };
        let reply = result.unwrap_or_else(|code| {
            Reply::error(
                code,
                endpoint,
                endpoint.flavor(account, input),
                input.peer(),
            )
        });
        state.record(endpoint, account, reply.errcode);
        reply
    }
}

/// Adds one to `map[outer][inner]`, allocating keys only the first time.
pub(crate) fn bump(map: &mut BTreeMap<String, BTreeMap<String, u64>>, outer: &str, inner: &str) {
    let counts = match map.get_mut(outer) {
        Some(counts) => counts,
        None => map.entry(outer.to_owned()).or_default(),
    };
    match counts.get_mut(inner) {
        Some(n) => *n += 1,
        None => {
            counts.insert(inner.to_owned(), 1);
        }
    }
}

/// The live value in `slot`, or a newly minted one (then `true`): tickets and Work WeChat
/// tokens are handed out unchanged until they expire.
pub(crate) fn current_or_mint(
    credentials: &mut Credentials,
    slot: &mut Option<String>,
    kind: Kind,
    account: &str,
    now: Instant,
    lifetime: Duration,
) -> (String, bool) {
    if let Some(value) = slot
        .as_deref()
        .filter(|v| credentials.live(v, kind, now).is_some())
    {
        return (value.to_owned(), false);
    }
    let value = credentials.mint(kind, account, now, lifetime);
    *slot = Some(value.clone());
    (value, true)
}

/// A ticket answer: `expires_in` is always the full lifetime, whatever the ticket has left.
fn ticket_reply(ticket: &str, lifetime: Duration) -> Reply {
    Reply::success(&Ticket {
        errcode: 0,
        errmsg: "ok",
        ticket,
        expires_in: lifetime.as_secs(),
    })
}

impl AppState {
    /// Clears every daily quota of the account, within the monthly budget of clears.
    fn clear_quotas(&mut self, periods: Periods) -> Result<(), i64> {
        if self.clears.month != periods.month {
            self.clears = MonthCount {
                month: periods.month,
                count: 0,
            };
        }
        if self.clears.count >= CLEARS_PER_MONTH {
            return Err(CLEAR_QUOTA_LIMIT);
        }
        self.clears.count += 1;
        self.usage = DayUsage {
            day: periods.day,
            ..DayUsage::default()
        };
        Ok(())
    }
}

impl State {
    fn platform_ctx(&mut self) -> PlatformCtx<'_> {
        PlatformCtx {
            platform: &mut self.platform,
            credentials: &mut self.credentials,
            stats: &mut self.stats,
            apps: &mut self.apps,
        }
    }

    fn suite_ctx(&mut self) -> SuiteCtx<'_> {
        SuiteCtx {
            suites: &mut self.suites,
            credentials: &mut self.credentials,
            stats: &mut self.stats,
            corp_apps: &mut self.corp_apps,
            corps: &mut self.corps,
        }
    }

    /// The account a request is about, for counters and fault matching: a configured appid,
    /// the `corpid/agentid` of a corp secret, a configured suite or provider, or the owner of the
    /// token it carries; else `-`.
    fn identify(&self, s: &Settings, endpoint: Endpoint, input: &Input) -> String {
        let account = match endpoint {
            Endpoint::Token => self.known_app(input.query("appid")),
            Endpoint::StableToken => self.known_app(input.body_str("appid").ok().flatten()),
            Endpoint::ClearQuotaV2 => self.known_app(input.query_or_body("appid").ok().flatten()),
            Endpoint::CorpToken => input
                .query("corpid")
                .and_then(|corpid| s.corp_secrets.get(corpid))
                .zip(input.query("corpsecret"))
                .and_then(|(agents, secret)| {
                    agents
                        .iter()
                        .find(|(s, _)| s == secret)
                        .map(|(_, account)| account.as_str())
                }),
            Endpoint::JsCode2Session => self.known_app(input.query("appid")),
            Endpoint::ApiDomainIp => input
                .query("access_token")
                .or_else(|| suite::service_token_param(input).map(|(_, token)| token))
                .and_then(|t| self.credentials.get(t))
                .map(|r| r.account.as_str()),
            e if e.is_suite() => {
                suite::identify(&s.suite, &self.suites, &self.credentials, e, input)
            }
            Endpoint::GetTicket
            | Endpoint::CallbackIp
            | Endpoint::QuotaGet
            | Endpoint::ClearQuota
            | Endpoint::CorpJsapiTicket
            | Endpoint::CorpAgentTicket => input
                .query("access_token")
                .and_then(|t| self.credentials.get(t))
                .map(|r| r.account.as_str()),
            _ => component::identify(&s.platform, &self.credentials, input),
        };
        account.unwrap_or("-").to_owned()
    }

    fn known_app<'a>(&self, appid: Option<&'a str>) -> Option<&'a str> {
        appid.filter(|a| self.apps.contains_key(*a))
    }

    fn record(&mut self, endpoint: Endpoint, account: &str, errcode: Option<i64>) {
        let Some(code) = errcode else { return };
        let code = code.to_string();
        bump(&mut self.stats.outcomes, endpoint.path(), &code);
        if endpoint.is_business() {
            bump(&mut self.stats.business, account, &code);
        }
    }

    /// `GET /cgi-bin/token` (docs/wechat.md#access_token).
    fn token(
        &mut self,
        s: &Settings,
        input: &Input,
        now: Instant,
        periods: Periods,
    ) -> Result<Reply, i64> {
        let appid = input.query("appid").ok_or(APPID_MISSING)?;
        let secret = input.query("secret").ok_or(APPSECRET_MISSING)?;
        if input.query("grant_type") != Some("client_credential") {
            return Err(INVALID_GRANT_TYPE);
        }
        let app = self.apps.get_mut(appid).ok_or(INVALID_APPID)?;
        if app.secret != secret {
            return Err(INVALID_APPSECRET);
        }
        app.usage.roll(periods.day);
        if app.usage.token >= s.daily_quota {
            return Err(DAILY_QUOTA);
        }
        app.usage.token += 1;
        // Every older token keeps at most the grace period.
        self.credentials
            .supersede(&mut app.legacy, now, s.grace, false);
        let token = self
            .credentials
            .mint(Kind::Official, appid, now, s.lifetime);
        app.legacy.push(token.clone());
        bump(&mut self.stats.issued, Endpoint::Token.path(), appid);
        Ok(Reply::success(&AccessToken {
            access_token: &token,
            expires_in: s.lifetime.as_secs(),
        }))
    }

    /// `POST /cgi-bin/stable_token` (docs/wechat.md#stable_token).
    fn stable_token(
        &mut self,
        s: &Settings,
        input: &Input,
        now: Instant,
        periods: Periods,
    ) -> Result<Reply, i64> {
        input.require_post()?;
        let appid = input.body_str("appid")?;
        let secret = input.body_str("secret")?;
        let grant_type = input.body_str("grant_type")?;
        let force = match input.field("force_refresh") {
            Field::Missing => false,
            Field::Bool(b) => b,
            Field::Str(_) | Field::Other => return Err(DATA_FORMAT),
        };
        let appid = appid.ok_or(APPID_MISSING)?;
        let secret = secret.ok_or(APPSECRET_MISSING)?;
        if grant_type != Some("client_credential") {
            return Err(INVALID_GRANT_TYPE);
        }
        let app = self.apps.get_mut(appid).ok_or(INVALID_APPID)?;
        if app.secret != secret {
            return Err(INVALID_APPSECRET);
        }
        app.usage.roll(periods.day);
        if app.usage.stable >= STABLE_DAILY_LIMIT {
            return Err(DAILY_QUOTA);
        }
        let remaining = app
            .stable
            .last()
            .and_then(|t| self.credentials.get(t))
            .and_then(|r| r.remaining(now));
        let rotate = if force {
            if app.usage.force >= s.force_limit {
                return Err(DAILY_QUOTA);
            }
            // Too early after the last force refresh: "it does not refresh".
            let too_early = app
                .last_force
                .is_some_and(|at| now.duration_since(at) < s.force_spacing);
            !(too_early && remaining.is_some())
        } else {
            // The platform rotates only inside the last `grace` of the token's life.
            remaining.is_none_or(|left| left < s.grace)
        };
        app.usage.stable += 1;
        if let (false, Some(left), Some(current)) = (rotate, remaining, app.stable.last()) {
            return Ok(Reply::success(&AccessToken {
                access_token: current,
                expires_in: left.as_secs(),
            }));
        }
        // The current token keeps the grace; on a force refresh anything older dies now.
        self.credentials
            .supersede(&mut app.stable, now, s.grace, force);
        let token = self
            .credentials
            .mint(Kind::Official, appid, now, s.lifetime);
        app.stable.push(token.clone());
        if force {
            app.usage.force += 1;
            app.last_force = Some(now);
            *self
                .stats
                .force_refreshes
                .entry(appid.to_owned())
                .or_default() += 1;
        }
        bump(&mut self.stats.issued, Endpoint::StableToken.path(), appid);
        Ok(Reply::success(&AccessToken {
            access_token: &token,
            expires_in: s.lifetime.as_secs(),
        }))
    }

    /// `GET /cgi-bin/ticket/getticket` (docs/wechat.md#js-sdk-tickets): the same ticket, with the full lifetime as
    /// `expires_in`, until it really expires.
    fn get_ticket(
        &mut self,
        s: &Settings,
        input: &Input,
        now: Instant,
        periods: Periods,
    ) -> Result<Reply, i64> {
        let appid = self
            .credentials
            .check(input.query("access_token"), &[Kind::Official], now)?
            .account
            .clone();
        let app = self.apps.get_mut(&appid).ok_or(INVALID_ACCESS_TOKEN)?;
        let slot = match input.query("type") {
            Some("jsapi") => &mut app.jsapi_ticket,
            Some("wx_card") => &mut app.card_ticket,
            _ => return Err(INVALID_ARGS),
        };
        app.usage.roll(periods.day);
        if app.usage.ticket >= s.ticket_quota {
            return Err(DAILY_QUOTA);
        }
        app.usage.ticket += 1;
        let (ticket, minted) = current_or_mint(
            &mut self.credentials,
            slot,
            Kind::Ticket,
            &appid,
            now,
            s.lifetime,
        );
        if minted {
            bump(&mut self.stats.issued, Endpoint::GetTicket.path(), &appid);
        }
        Ok(ticket_reply(&ticket, s.lifetime))
    }

    /// `GET /cgi-bin/get_api_domain_ip`: the business API, for both kinds of token. On the Work
    /// host it also takes a `suite_access_token=` or `provider_access_token=` instead, judged as
    /// the `service/*` endpoints judge them (40082, 42009).
    fn api_domain_ip(&mut self, input: &Input, now: Instant) -> Result<Reply, i64> {
        if let Some((kind, token)) = suite::service_token_param(input) {
            suite::check_service_token(&self.credentials, kind, Some(token), now)?;
            return Ok(Reply::success(&WorkIpList {
                errcode: 0,
                errmsg: "ok",
                ip_list: API_IPS,
            }));
        }
        let record = self.credentials.check(
            input.query("access_token"),
            &[Kind::Official, Kind::Corp],
            now,
        )?;
        Ok(match record.kind {
            Kind::Corp => Reply::success(&WorkIpList {
                errcode: 0,
                errmsg: "ok",
                ip_list: API_IPS,
            }),
            _ => Reply::success(&IpList { ip_list: API_IPS }),
        })
    }

    /// `POST /cgi-bin/openapi/quota/get` (docs/wechat.md#quota-apis), for the APIs whose quota the mock keeps.
    fn quota_get(
        &mut self,
        s: &Settings,
        input: &Input,
        now: Instant,
        periods: Periods,
    ) -> Result<Reply, i64> {
        input.require_post()?;
        let appid = &self
            .credentials
            .check(input.query("access_token"), &[Kind::Official], now)?
            .account;
        let cgi_path = input.body_str("cgi_path")?.ok_or(DATA_FORMAT)?;
        let app = self.apps.get_mut(appid).ok_or(INVALID_ACCESS_TOKEN)?;
        app.usage.roll(periods.day);
        let (daily_limit, used) = match cgi_path {
            "/cgi-bin/token" => (s.daily_quota, app.usage.token),
            "/cgi-bin/stable_token" => (STABLE_DAILY_LIMIT, app.usage.stable),
            "/cgi-bin/ticket/getticket" => (s.ticket_quota, app.usage.ticket),
            _ => return Err(CGI_PATH_NOT_FOUND),
        };
        Ok(Reply::success(&QuotaAnswer {
            errcode: 0,
            errmsg: "ok",
            quota: Quota {
                daily_limit,
                used,
                remain: daily_limit.saturating_sub(used),
            },
        }))
    }

    /// `POST /cgi-bin/clear_quota?access_token=` with `{"appid"}` (docs/wechat.md#quota-apis).
    fn clear_quota(&mut self, input: &Input, now: Instant, periods: Periods) -> Result<Reply, i64> {
        input.require_post()?;
        let owner = &self
            .credentials
            .check(input.query("access_token"), &[Kind::Official], now)?
            .account;
        let appid = input.body_str("appid")?.ok_or(APPID_MISSING)?;
        if appid != owner {
            return Err(INVALID_APPID);
        }
        let app = self.apps.get_mut(appid).ok_or(INVALID_APPID)?;
        app.clear_quotas(periods)?;
        Ok(Reply::success(&Status::OK))
    }

    /// `POST /cgi-bin/clear_quota/v2` with appid and appsecret in the query or the body (docs/wechat.md#quota-apis).
    fn clear_quota_v2(&mut self, input: &Input, periods: Periods) -> Result<Reply, i64> {
        input.require_post()?;
        let appid = input.query_or_body("appid")?.ok_or(APPID_MISSING)?;
        let secret = input.query_or_body("appsecret")?.ok_or(APPSECRET_MISSING)?;
        let app = self.apps.get_mut(appid).ok_or(INVALID_APPID)?;
        if app.secret != secret {
            return Err(INVALID_APPSECRET);
        }
        app.clear_quotas(periods)?;
        Ok(Reply::success(&Status::OK))
    }

    /// `GET /cgi-bin/gettoken` (docs/wechat.md#work-wechat): one token per app secret, the same until it expires.
    /// Like the ticket endpoints, a repeated fetch gets the same answer, full `expires_in`
    /// included, although the token dies at its first expiry.
    fn corp_token(&mut self, s: &Settings, input: &Input, now: Instant) -> Result<Reply, i64> {
        let corpid = input.query("corpid").ok_or(APPID_MISSING)?;
        let secret = input.query("corpsecret").ok_or(APPSECRET_MISSING)?;
        let agents = s.corp_secrets.get(corpid).ok_or(INVALID_APPID)?;
        let account = agents
            .iter()
            .find(|(s, _)| s == secret)
            .map(|(_, account)| account.as_str())
            .ok_or(INVALID_CREDENTIAL)?;
        let app = self.corp_apps.get_mut(account).ok_or(INVALID_CREDENTIAL)?;
        let (token, minted) = current_or_mint(
            &mut self.credentials,
            &mut app.token,
            Kind::Corp,
            account,
            now,
            s.lifetime,
        );
        if minted {
            bump(&mut self.stats.issued, Endpoint::CorpToken.path(), account);
        }
        Ok(Reply::success(&WorkAccessToken {
            errcode: 0,
            errmsg: "ok",
            access_token: &token,
            expires_in: s.lifetime.as_secs(),
        }))
    }

    /// The Work WeChat app a corp token belongs to, checked like every Work API does.
    fn corp_account(&self, input: &Input, now: Instant) -> Result<String, i64> {
        Ok(self
            .credentials
            .check(input.query("access_token"), &[Kind::Corp], now)?
            .account
            .clone())
    }

    /// `GET /cgi-bin/get_jsapi_ticket` (docs/wechat.md#work-wechat): the corp's ticket, 400 fetches per hour.
    fn corp_jsapi_ticket(
        &mut self,
        s: &Settings,
        input: &Input,
        now: Instant,
        periods: Periods,
    ) -> Result<Reply, i64> {
        let account = self.corp_account(input, now)?;
        let corpid = self
            .corp_apps
            .get(&account)
            .map(|app| app.corpid.as_str())
            .ok_or(INVALID_ACCESS_TOKEN)?;
        let corp = self.corps.get_mut(corpid).ok_or(INVALID_ACCESS_TOKEN)?;
        if !corp.jsapi_tickets.take(periods.hour, CORP_TICKETS_PER_HOUR) {
            return Err(DAILY_QUOTA);
        }
        let (ticket, minted) = current_or_mint(
            &mut self.credentials,
            &mut corp.jsapi_ticket,
            Kind::Ticket,
            &account,
            now,
            s.lifetime,
        );
        if minted {
            bump(
                &mut self.stats.issued,
                Endpoint::CorpJsapiTicket.path(),
                &account,
            );
        }
        Ok(ticket_reply(&ticket, s.lifetime))
    }

    /// `GET /cgi-bin/ticket/get?type=agent_config` (docs/wechat.md#work-wechat): the app's ticket, 100 per hour.
    fn corp_agent_ticket(
        &mut self,
        s: &Settings,
        input: &Input,
        now: Instant,
        periods: Periods,
    ) -> Result<Reply, i64> {
        let account = self.corp_account(input, now)?;
        if input.query("type") != Some("agent_config") {
            return Err(WORK_INVALID_PARAMETER);
        }
        let app = self
            .corp_apps
            .get_mut(&account)
            .ok_or(INVALID_ACCESS_TOKEN)?;
        if !app.agent_tickets.take(periods.hour, AGENT_TICKETS_PER_HOUR) {
            return Err(DAILY_QUOTA);
        }
        let (ticket, minted) = current_or_mint(
            &mut self.credentials,
            &mut app.agent_ticket,
            Kind::Ticket,
            &account,
            now,
            s.lifetime,
        );
        if minted {
            bump(
                &mut self.stats.issued,
                Endpoint::CorpAgentTicket.path(),
                &account,
            );
        }
        Ok(ticket_reply(&ticket, s.lifetime))
    }
}
