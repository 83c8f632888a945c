//! Work WeChat's third-party side (企业微信服务商) as Work WeChat runs it: suites (第三方应用)
//! with their pushed `suite_ticket`s and `suite_access_token`s, the corps that installed them with
//! their permanent codes and corp tokens, and the provider's own `provider_access_token`.
//!
//! Everything here runs under the state lock. The `cgi-bin/service/*` endpoints are in
//! `service`; what a corp's administrator does (install, uninstall, reset, change) is in
//! `install`; sending pushes and verifying a callback URL is `push`'s job; the `/mock/*`
//! endpoints that play the administrator are `control`'s.
//!
//! A corp token is an ordinary Work WeChat app token of the app the suite installed
//! (`corpid/agentid`): the Work ticket endpoints and business API judge it like any other.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

use wechat_crypto::{EncodingAesKey, MessageCrypt};

use crate::credentials::{Credentials, Kind};
use crate::endpoint::Endpoint;
use crate::errors::code::*;
use crate::input::Input;
use crate::push::PushTarget;
use crate::state::SuiteCtx;
use crate::time::unix_now;
use crate::{MockConfig, MockStats, PushCounts};

pub(crate) mod control;
mod install;
mod public;
pub(crate) mod push;
mod service;

pub use public::{auth_corpid, MockProvider, MockSuite, SuiteStats};
pub(crate) use service::serve;

/// What a suite push URL names the suite with (see [`MockConfig::suite_push_url`]).
const SUITE_PLACEHOLDER: &str = "{suite_id}";
/// Permanent codes do not expire while the installation stands; this stands for "never".
const PERMANENT_CODE_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Lifetime of a `pre_auth_code` (`get_pre_auth_code` answers `expires_in: 1200`).
const PRE_AUTH_CODE_LIFETIME: Duration = Duration::from_secs(1200);
/// Lifetime of a temporary `auth_code`. Work WeChat calls it temporary and single-use without
/// one clear figure; the mock gives it ten minutes.
const AUTH_CODE_LIFETIME: Duration = Duration::from_secs(600);
/// Suite tickets remembered per suite (older ones are dropped and stop working), so that a short
/// push interval cannot grow the list without bound.
const MAX_TICKETS: usize = 1024;
/// Temporary codes remembered per suite before expired ones are swept.
const CODE_SWEEP_AT: usize = 1024;
/// The agentid the first app installed in a corp gets; later ones count up from it.
const FIRST_AGENTID: u64 = 1_000_001;

/// The suites' and providers' configuration, fixed at start.
pub(crate) struct SuiteSettings {
    /// By suite id.
    pub suites: HashMap<String, SuiteConfig>,
    /// Suite ids in configuration order (the index in pre-installed corpids).
    pub order: Vec<String>,
    /// Provider corpid → `provider_secret`.
    providers: HashMap<String, String>,
    /// Time between `suite_ticket` pushes.
    pub ticket_interval: Duration,
    /// How long a pushed `suite_ticket` works.
    ticket_lifetime: Duration,
    /// Corps installed on each suite at start.
    auth_corps_per_suite: u32,
    /// The mock's token lifetime, which suite, corp and provider tokens follow.
    lifetime: Duration,
}

/// One suite's secrets and push destination.
pub(crate) struct SuiteConfig {
    /// The `suite_secret` that `get_suite_token` checks.
    secret: String,
    /// Seals and signs this suite's pushes; its receive id is the suite id.
    pub crypt: MessageCrypt,
    /// Where its pushes go; unset until a push URL is configured (at start, or later with
    /// [`SuiteSettings::push_to`]).
    pub target: OnceLock<PushTarget>,
}

impl SuiteSettings {
    /// Checks the suites and providers in `config`: unique ids, valid keys, a usable push URL.
    pub fn new(config: &MockConfig) -> Result<SuiteSettings, String> {
        if !config.suites.is_empty()
            && (config.suite_ticket_interval.is_zero() || config.suite_ticket_lifetime.is_zero())
        {
            return Err("suite_ticket_interval and suite_ticket_lifetime must be positive".into());
        }
        let mut suites = HashMap::new();
        let mut order = Vec::new();
        for s in &config.suites {
            if s.suite_id.is_empty() || s.secret.is_empty() || s.token.is_empty() {
                return Err(format!(
                    "suite {:?}: suite_id, secret and token must be non-empty",
                    s.suite_id
                ));
            }
            let key = EncodingAesKey::parse(&s.encoding_aes_key)
                .map_err(|e| format!("suite {:?}: bad EncodingAESKey: {e}", s.suite_id))?;
            let target = config
                .suite_push_url
                .as_deref()
                .map(|url| PushTarget::parse(url, SUITE_PLACEHOLDER, &s.suite_id))
                .transpose()
                .map_err(|e| format!("push URL for suite {:?}: {e}", s.suite_id))?;
            let settings = SuiteConfig {
                secret: s.secret.clone(),
                crypt: MessageCrypt::new(s.token.clone(), key, s.suite_id.clone()),
                target: target.map(OnceLock::from).unwrap_or_default(),
            };
            if suites.insert(s.suite_id.clone(), settings).is_some() {
                return Err(format!("suite {:?} is configured twice", s.suite_id));
            }
            order.push(s.suite_id.clone());
        }
        let mut providers = HashMap::new();
        for p in &config.providers {
            if p.corpid.is_empty() || p.secret.is_empty() {
                return Err(format!(
                    "provider {:?}: corpid and secret must be non-empty",
                    p.corpid
                ));
            }
            if providers
                .insert(p.corpid.clone(), p.secret.clone())
                .is_some()
            {
                return Err(format!("provider {:?} is configured twice", p.corpid));
            }
        }
        Ok(SuiteSettings {
            suites,
            order,
            providers,
            ticket_interval: config.suite_ticket_interval,
            ticket_lifetime: config.suite_ticket_lifetime,
            auth_corps_per_suite: config.auth_corps_per_suite,
            lifetime: config.lifetime,
        })
    }

    /// Points every suite's pushes at `push_url` (`{suite_id}` replaced as in
    /// [`MockConfig::suite_push_url`]). Refused, changing nothing, when the URL is unusable or
    /// pushes already have a target.
    pub fn push_to(&self, push_url: &str) -> Result<(), String> {
        let mut targets = Vec::new();
        for suite_id in &self.order {
            let target = PushTarget::parse(push_url, SUITE_PLACEHOLDER, suite_id)
                .map_err(|e| format!("push URL for suite {suite_id:?}: {e}"))?;
            let settings = &self.suites[suite_id];
            if settings.target.get().is_some() {
                return Err(format!("suite {suite_id:?} already pushes elsewhere"));
            }
            targets.push((settings, target));
        }
        for (settings, target) in targets {
            settings
                .target
                .set(target)
                .map_err(|_| "pushes were pointed elsewhere meanwhile".to_string())?;
        }
        Ok(())
    }
}

/// The suites' and providers' changing state.
#[derive(Default)]
pub(crate) struct Suites {
    /// By suite id.
    suites: HashMap<String, SuiteState>,
    /// Provider corpid → its current `provider_access_token`.
    providers: HashMap<String, Option<String>>,
}

/// One suite's tickets, token, codes and installations.
#[derive(Default)]
struct SuiteState {
    /// The current `suite_access_token`, handed out unchanged until it expires.
    token: Option<String>,
    /// Pushed suite tickets that may still be accepted, oldest first.
    tickets: Vec<String>,
    /// Temporary `auth_code`s handed out and not yet exchanged → the corpid they are for.
    codes: HashMap<String, String>,
    /// The corps that installed the suite, by corpid.
    corps: HashMap<String, Installation>,
    /// Their corpids in installation order: the order of the installations listing.
    order: Vec<String>,
}

/// One corp's installation of a suite: the app it got and the credentials it holds.
struct Installation {
    corpid: String,
    corp_name: String,
    /// The agentid of the app the suite installed in the corp.
    agentid: u64,
    /// The live permanent code; `None` until an `auth_code` is exchanged, and again after a reset
    /// until the new one is.
    permanent_code: Option<String>,
    /// The corp's current access token, handed out unchanged until it expires.
    token: Option<String>,
    /// When the corp installed the suite, in Unix seconds.
    installed_at: u64,
}

impl Installation {
    /// The Work WeChat app the installation is, as the mock names apps: `corpid/agentid`.
    fn account(&self) -> String {
        format!("{}/{}", self.corpid, self.agentid)
    }
}

/// Creates each suite's state and the corps installed in advance (with permanent codes, nothing
/// pushed).
pub(crate) fn start(ss: &SuiteSettings, ctx: &mut SuiteCtx<'_>, now: Instant) {
    let unix = unix_now();
    for (index, suite_id) in ss.order.iter().enumerate() {
        let mut suite = SuiteState::default();
        for n in 1..=u64::from(ss.auth_corps_per_suite) {
            let corpid = auth_corpid(index, n);
            let agentid = free_agentid(ctx, &corpid);
            let code =
                ctx.credentials
                    .mint(Kind::PermanentCode, &corpid, now, PERMANENT_CODE_LIFETIME);
            let installation = Installation {
                corp_name: format!("mock corp {corpid}"),
                corpid: corpid.clone(),
                agentid,
                permanent_code: Some(code),
                token: None,
                installed_at: unix,
            };
            ctx.add_corp_app(&corpid, &installation.account());
            suite.order.push(corpid.clone());
            suite.corps.insert(corpid, installation);
        }
        suite_stats(ctx.stats, suite_id).installed = suite.order.len() as u64;
        ctx.suites.suites.insert(suite_id.clone(), suite);
    }
    for corpid in ss.providers.keys() {
        ctx.suites.providers.insert(corpid.clone(), None);
    }
}

/// The lowest agentid from [`FIRST_AGENTID`] that no app of `corpid` has yet.
fn free_agentid(ctx: &SuiteCtx<'_>, corpid: &str) -> u64 {
    (FIRST_AGENTID..)
        .find(|agentid| !ctx.has_corp_app(&format!("{corpid}/{agentid}")))
        .unwrap_or(FIRST_AGENTID)
}

/// The counters of one suite.
pub(crate) fn suite_stats<'a>(stats: &'a mut MockStats, suite_id: &str) -> &'a mut SuiteStats {
    stats.suites.entry(suite_id.to_owned()).or_default()
}

/// The account a suite request is about: the body's suite id or provider corpid when configured,
/// the body's `auth_corpid` on `get_corp_token` when some suite has that corp installed, else the
/// owner of the suite token it carries.
pub(crate) fn identify<'a>(
    ss: &SuiteSettings,
    suites: &Suites,
    credentials: &'a Credentials,
    endpoint: Endpoint,
    input: &'a Input,
) -> Option<&'a str> {
    let body = |key: &str| input.body_str(key).ok().flatten();
    match endpoint {
        Endpoint::SuiteToken => body("suite_id").filter(|id| ss.suites.contains_key(*id)),
        Endpoint::ProviderToken => body("corpid").filter(|id| ss.providers.contains_key(*id)),
        Endpoint::SuiteCorpToken => body("auth_corpid").filter(|corpid| {
            suites
                .suites
                .values()
                .any(|s| s.corps.contains_key(*corpid))
        }),
        _ => input
            .query("suite_access_token")
            .and_then(|t| credentials.get(t))
            .filter(|r| r.kind == Kind::Suite)
            .map(|r| r.account.as_str()),
    }
}

/// The suite or provider token a `get_api_domain_ip` call carries instead of an `access_token`,
/// with its kind: `suite_access_token=` first, then `provider_access_token=`.
pub(crate) fn service_token_param(input: &Input) -> Option<(Kind, &str)> {
    if input.query("access_token").is_some() {
        return None;
    }
    input
        .query("suite_access_token")
        .map(|t| (Kind::Suite, t))
        .or_else(|| {
            input
                .query("provider_access_token")
                .map(|t| (Kind::Provider, t))
        })
}

/// Judges a suite or provider token: its owner, else 41022 (missing), 42009 (expired) or 40082
/// (anything else). Work WeChat's 40082 text names both tokens ("invalid suite_acccess_token or
/// provider_access_token"); it documents no expiry code of the provider token, so the mock uses
/// the suite token's 42009 for both.
pub(crate) fn check_service_token(
    credentials: &Credentials,
    kind: Kind,
    token: Option<&str>,
    now: Instant,
) -> Result<String, i64> {
    match credentials.check(token, &[kind], now) {
        Ok(record) => Ok(record.account.clone()),
        Err(ACCESS_TOKEN_MISSING) => Err(SUITE_TOKEN_MISSING),
        Err(ACCESS_TOKEN_EXPIRED) => Err(SUITE_TOKEN_EXPIRED),
        Err(_) => Err(INVALID_SUITE_TOKEN),
    }
}

/// Mints the `suite_ticket` of the next push and remembers it; `None` for an unknown suite.
/// Every ticket works for its lifetime, however many newer ones were pushed since.
pub(crate) fn new_ticket(
    ss: &SuiteSettings,
    ctx: &mut SuiteCtx<'_>,
    suite_id: &str,
    now: Instant,
) -> Option<String> {
    let suite = ctx.suites.suites.get_mut(suite_id)?;
    let credentials = &mut *ctx.credentials;
    suite
        .tickets
        .retain(|t| credentials.live(t, Kind::SuiteTicket, now).is_some());
    if suite.tickets.len() >= MAX_TICKETS {
        let mut dropped: Vec<String> = suite
            .tickets
            .drain(..=suite.tickets.len() - MAX_TICKETS)
            .collect();
        credentials.supersede(&mut dropped, now, Duration::ZERO, false);
    }
    let ticket = credentials.mint(Kind::SuiteTicket, suite_id, now, ss.ticket_lifetime);
    suite.tickets.push(ticket.clone());
    Some(ticket)
}

/// Mints a temporary `auth_code` for `corpid` on `suite_id` and remembers whom it is for.
fn new_auth_code(ctx: &mut SuiteCtx<'_>, suite_id: &str, corpid: &str, now: Instant) -> String {
    let code = ctx
        .credentials
        .mint(Kind::SuiteAuthCode, suite_id, now, AUTH_CODE_LIFETIME);
    if let Some(suite) = ctx.suites.suites.get_mut(suite_id) {
        if suite.codes.len() >= CODE_SWEEP_AT {
            let credentials = &*ctx.credentials;
            suite
                .codes
                .retain(|c, _| credentials.live(c, Kind::SuiteAuthCode, now).is_some());
        }
        suite.codes.insert(code.clone(), corpid.to_owned());
    }
    code
}

/// Counts a push of `info_type` and its fate.
pub(crate) fn record_push(
    stats: &mut MockStats,
    suite_id: &str,
    info_type: &str,
    outcome: &Result<(), String>,
) {
    let ss = suite_stats(stats, suite_id);
    let counts = ss.pushes.entry(info_type.to_owned()).or_default();
    tally(counts, &mut ss.last_push_failure, outcome);
}

/// Counts one attempt in `counts`, remembering why it failed.
fn tally(counts: &mut PushCounts, last_failure: &mut Option<String>, outcome: &Result<(), String>) {
    counts.sent += 1;
    match outcome {
        Ok(()) => counts.acknowledged += 1,
        Err(why) => {
            counts.failed += 1;
            *last_failure = Some(why.clone());
        }
    }
}
