//! The third-party platform (开放平台 component) as WeChat runs it: verify tickets, component
//! tokens, pre-auth and authorization codes, authorizers with their refresh and access tokens, and
//! the rules of the `cgi-bin/component/*` endpoints. Everything here runs under the state lock;
//! what an account owner does is in `owner`; sending pushes is `push.rs`'s job, the
//! `/mock/*authorize` endpoints are `authorize.rs`'s.
//!
//! Authorizer access tokens are ordinary official-account tokens of the authorizer's appid, so
//! the business API, the JS-SDK ticket and the quota APIs judge them like any other token.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Notify;
use wechat_crypto::{EncodingAesKey, MessageCrypt};

use crate::credentials::{Credentials, Kind};
use crate::endpoint::Endpoint;
use crate::errors::code::*;
use crate::input::Input;
use crate::push::{InfoType, PushTarget};
use crate::reply::{Reply, Status};
use crate::state::PlatformCtx;
use crate::time::unix_now;
use crate::{authorizer_appid, ComponentStats, MockConfig, MockStats};

mod owner;

pub(crate) use owner::{
    authorize, unauthorize, update_authorization, AuthorizeRequest, ControlError, Granted,
};

/// Refresh tokens do not expire while the authorization stands; this stands for "never".
const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// `api_get_authorizer_list` pages hold at most this many authorizers (more: 40170).
const MAX_LIST_PAGE: u64 = 500;
/// Verify tickets remembered per platform (older ones are dropped and stop working), so that a
/// receiver that never acknowledges cannot grow the list without bound.
const MAX_TICKETS: usize = 1024;
/// Authorization codes remembered per platform before expired ones are swept.
const CODE_SWEEP_AT: usize = 1024;
/// What a push URL names a platform's appid with (see [`MockConfig::push_url`]).
const COMPONENT_PLACEHOLDER: &str = "{component_appid}";
/// The permission sets (`funcscope_category` ids) an account grants when none are named.
const DEFAULT_FUNC_INFO: [u32; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

/// The platforms' configuration, fixed at start.
pub(crate) struct PlatformSettings {
    /// By component appid.
    pub components: HashMap<String, ComponentSettings>,
    /// Component appids in configuration order (the index in pre-created authorizer appids).
    pub order: Vec<String>,
    /// Time between verify-ticket pushes.
    pub push_interval: Duration,
    /// Whether `api_authorizer_token` hands out a new refresh token each time.
    rotate_refresh_tokens: bool,
    /// How long a pushed verify ticket works.
    verify_ticket_lifetime: Duration,
    /// How long a `pre_auth_code` works.
    pre_auth_code_lifetime: Duration,
    /// How long an authorization code works.
    authorization_code_lifetime: Duration,
    /// Accounts authorized on each platform at start.
    authorizers_per_component: u32,
    /// The mock's token lifetime and overlap, which component and authorizer tokens follow.
    lifetime: Duration,
    grace: Duration,
}

/// One platform's secrets and push destination.
pub(crate) struct ComponentSettings {
    /// The AppSecret that `api_component_token` and `api_start_push_ticket` check.
    secret: String,
    /// Seals and signs this platform's pushes.
    pub crypt: MessageCrypt,
    /// Where its pushes go; unset until a push URL is configured (at start, or later with
    /// [`PlatformSettings::push_to`]).
    pub target: OnceLock<PushTarget>,
    /// Wakes the platform's pusher for an immediate verify-ticket push (`api_start_push_ticket`).
    pub wake: Arc<Notify>,
}

impl PlatformSettings {
    /// Checks the platforms in `config`: unique appids, valid keys, a usable push URL.
    pub fn new(config: &MockConfig) -> Result<PlatformSettings, String> {
        if !config.components.is_empty() && config.push_interval.is_zero() {
            return Err("push_interval must be positive".into());
        }
        let mut components = HashMap::new();
        let mut order = Vec::new();
        for c in &config.components {
            if c.appid.is_empty() || c.secret.is_empty() || c.token.is_empty() {
                return Err(format!(
                    "component {:?}: appid, secret and token must be non-empty",
                    c.appid
                ));
            }
            let key = EncodingAesKey::parse(&c.encoding_aes_key)
                .map_err(|e| format!("component {:?}: bad EncodingAESKey: {e}", c.appid))?;
            let target = config
                .push_url
                .as_deref()
                .map(|url| PushTarget::parse(url, COMPONENT_PLACEHOLDER, &c.appid))
                .transpose()
                .map_err(|e| format!("push URL for component {:?}: {e}", c.appid))?;
            let settings = ComponentSettings {
                secret: c.secret.clone(),
                crypt: MessageCrypt::new(c.token.clone(), key, c.appid.clone()),
                target: target.map(OnceLock::from).unwrap_or_default(),
                wake: Arc::new(Notify::new()),
            };
            if components.insert(c.appid.clone(), settings).is_some() {
                return Err(format!("component {:?} is configured twice", c.appid));
            }
            order.push(c.appid.clone());
        }
        Ok(PlatformSettings {
            components,
            order,
            push_interval: config.push_interval,
            rotate_refresh_tokens: config.rotate_refresh_tokens,
            verify_ticket_lifetime: config.verify_ticket_lifetime,
            pre_auth_code_lifetime: config.pre_auth_code_lifetime,
            authorization_code_lifetime: config.authorization_code_lifetime,
            authorizers_per_component: config.authorizers_per_component,
            lifetime: config.lifetime,
            grace: config.grace,
        })
    }

    /// Points every platform's pushes at `push_url` (`{component_appid}` replaced as in
    /// [`MockConfig::push_url`]). Refused, changing nothing, when the URL is unusable or pushes
    /// already have a target.
    pub fn push_to(&self, push_url: &str) -> Result<(), String> {
        let mut targets = Vec::new();
        for appid in &self.order {
            let target = PushTarget::parse(push_url, COMPONENT_PLACEHOLDER, appid)
                .map_err(|e| format!("push URL for component {appid:?}: {e}"))?;
            let settings = &self.components[appid];
            if settings.target.get().is_some() {
                return Err(format!("component {appid:?} already pushes elsewhere"));
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

/// The platforms' changing state.
#[derive(Default)]
pub(crate) struct Platform {
    components: HashMap<String, ComponentState>,
}

/// One platform's tickets, tokens, codes and authorizers.
#[derive(Default)]
struct ComponentState {
    /// Possibly-live component tokens, oldest first.
    tokens: Vec<String>,
    /// Pushed verify tickets that may still be accepted, oldest first.
    tickets: Vec<String>,
    /// Authorization codes handed out → the authorizer appid they are for.
    codes: HashMap<String, String>,
    /// The accounts that authorized the platform, by appid.
    authorizers: HashMap<String, Authorizer>,
    /// Their appids in authorization order: the order of `api_get_authorizer_list`.
    order: Vec<String>,
}

/// One account's authorization of a platform.
struct Authorizer {
    /// Possibly-live refresh tokens, oldest first; the last is the current one.
    refresh: Vec<String>,
    /// Possibly-live access tokens, oldest first.
    tokens: Vec<String>,
    /// The permission sets granted (`funcscope_category` ids).
    func_info: Vec<u32>,
    /// When the account authorized, in Unix seconds.
    auth_time: u64,
    /// Whether an authorization code was ever exchanged: until then WeChat lists the authorizer
    /// with an empty refresh token.
    exchanged: bool,
}

impl Authorizer {
    fn current_refresh(&self) -> &str {
        self.refresh.last().map_or("", String::as_str)
    }

    /// The refresh token as `api_get_authorizer_list` / `api_get_authorizer_info` show it.
    fn listed_refresh(&self) -> &str {
        if self.exchanged {
            self.current_refresh()
        } else {
            ""
        }
    }
}

/// Creates each platform's state and the accounts authorized in advance.
pub(crate) fn start(ps: &PlatformSettings, ctx: &mut PlatformCtx<'_>, now: Instant) {
    let unix = unix_now();
    for (index, appid) in ps.order.iter().enumerate() {
        let mut comp = ComponentState::default();
        for n in 1..=u64::from(ps.authorizers_per_component) {
            let authorizer = authorizer_appid(index, n);
            let refresh =
                ctx.credentials
                    .mint(Kind::RefreshToken, &authorizer, now, REFRESH_TOKEN_LIFETIME);
            ctx.ensure_account(&authorizer);
            comp.order.push(authorizer.clone());
            comp.authorizers.insert(
                authorizer,
                Authorizer {
                    refresh: vec![refresh],
                    tokens: Vec::new(),
                    func_info: DEFAULT_FUNC_INFO.to_vec(),
                    auth_time: unix,
                    exchanged: true,
                },
            );
        }
        component_stats(ctx.stats, appid).authorizers = comp.order.len() as u64;
        ctx.platform.components.insert(appid.clone(), comp);
    }
}

/// The counters of one platform.
pub(crate) fn component_stats<'a>(stats: &'a mut MockStats, appid: &str) -> &'a mut ComponentStats {
    stats.components.entry(appid.to_owned()).or_default()
}

/// The platform a component request is about: the owner of the component token it carries,
/// else its `component_appid` when that names a configured platform.
pub(crate) fn identify<'a>(
    ps: &PlatformSettings,
    credentials: &'a Credentials,
    input: &'a Input,
) -> Option<&'a str> {
    component_token(input)
        .and_then(|t| credentials.get(t))
        .filter(|r| r.kind == Kind::Component)
        .map(|r| r.account.as_str())
        .or_else(|| {
            input
                .body_str("component_appid")
                .ok()
                .flatten()
                .filter(|appid| ps.components.contains_key(*appid))
        })
}

/// The token of a component request: old documents put it in `component_access_token`, newer
/// ones in `access_token`; WeChat takes either.
fn component_token(input: &Input) -> Option<&str> {
    input
        .query("component_access_token")
        .or_else(|| input.query("access_token"))
}

/// Answers a component endpoint by WeChat's rules.
pub(crate) fn serve(
    ps: &PlatformSettings,
    endpoint: Endpoint,
    input: &Input,
    ctx: &mut PlatformCtx<'_>,
    now: Instant,
) -> Result<Reply, i64> {
    input.require_post()?;
    match endpoint {
        Endpoint::ComponentToken => issue_component_token(ps, input, ctx, now),
        Endpoint::StartPushTicket => start_push_ticket(ps, input),
        _ => {
            let appid = caller(input, ctx.credentials, now)?;
            match endpoint {
                Endpoint::CreatePreAuthCode => create_pre_auth_code(ps, &appid, ctx, now),
                Endpoint::QueryAuth => query_auth(ps, &appid, input, ctx, now),
                Endpoint::AuthorizerToken => authorizer_token(ps, &appid, input, ctx, now),
                Endpoint::GetAuthorizerInfo => authorizer_info(&appid, input, ctx),
                Endpoint::GetAuthorizerList => authorizer_list(&appid, input, ctx),
                _ => Err(SYSTEM_ERROR),
            }
        }
    }
}

/// The platform whose token the request carries, checked like every token (41001, 40014,
/// 40001, 42001), and the body's `component_appid`, which must name that platform.
fn caller(input: &Input, credentials: &Credentials, now: Instant) -> Result<String, i64> {
    let owner = credentials
        .check(component_token(input), &[Kind::Component], now)?
        .account
        .clone();
    let appid = input
        .body_str("component_appid")?
        .ok_or(COMPONENT_APPID_MISSING)?;
    if appid != owner {
        return Err(INVALID_COMPONENT);
    }
    Ok(owner)
}

#[derive(Serialize)]
struct ComponentAccessToken<'a> {
    component_access_token: &'a str,
    expires_in: u64,
}

/// `api_component_token`: appid, secret and a verify ticket the platform received. A ticket is
/// good for its lifetime; once the receiver acknowledged a newer one, older ones keep only the
/// grace (a receiver whose pushes failed keeps using its last ticket, as WeChat intends).
fn issue_component_token(
    ps: &PlatformSettings,
    input: &Input,
    ctx: &mut PlatformCtx<'_>,
    now: Instant,
) -> Result<Reply, i64> {
    let appid = input.body_str("component_appid")?;
    let secret = input.body_str("component_appsecret")?;
    let ticket = input.body_str("component_verify_ticket")?;
    let appid = appid.ok_or(COMPONENT_APPID_MISSING)?;
    let settings = ps.components.get(appid).ok_or(INVALID_COMPONENT)?;
    if secret.ok_or(APPSECRET_MISSING)? != settings.secret {
        return Err(INVALID_APPSECRET);
    }
    let ticket = ticket.ok_or(COMPONENT_TICKET_INVALID)?;
    match ctx
        .credentials
        .check(Some(ticket), &[Kind::VerifyTicket], now)
    {
        Ok(record) if record.account == appid => {}
        Err(ACCESS_TOKEN_EXPIRED) => return Err(COMPONENT_TICKET_EXPIRED),
        _ => return Err(COMPONENT_TICKET_INVALID),
    }
    let comp = ctx
        .platform
        .components
        .get_mut(appid)
        .ok_or(INVALID_COMPONENT)?;
    ctx.credentials
        .supersede(&mut comp.tokens, now, ps.grace, false);
    let token = ctx
        .credentials
        .mint(Kind::Component, appid, now, ps.lifetime);
    comp.tokens.push(token.clone());
    crate::state::bump(
        &mut ctx.stats.issued,
        Endpoint::ComponentToken.path(),
        appid,
    );
    component_stats(ctx.stats, appid).component_tokens_issued += 1;
    Ok(Reply::success(&ComponentAccessToken {
        component_access_token: &token,
        expires_in: ps.lifetime.as_secs(),
    }))
}

/// `api_start_push_ticket`: appid and `component_secret`; wakes the platform's pusher.
fn start_push_ticket(ps: &PlatformSettings, input: &Input) -> Result<Reply, i64> {
    let appid = input.body_str("component_appid")?;
    let secret = input.body_str("component_secret")?;
    let appid = appid.ok_or(COMPONENT_APPID_MISSING)?;
    let settings = ps.components.get(appid).ok_or(INVALID_COMPONENT)?;
    if secret.ok_or(APPSECRET_MISSING)? != settings.secret {
        return Err(INVALID_APPSECRET);
    }
    settings.wake.notify_one();
    Ok(Reply::success(&Status::OK))
}

#[derive(Serialize)]
struct PreAuthCode<'a> {
    pre_auth_code: &'a str,
    expires_in: u64,
}

fn create_pre_auth_code(
    ps: &PlatformSettings,
    appid: &str,
    ctx: &mut PlatformCtx<'_>,
    now: Instant,
) -> Result<Reply, i64> {
    let code = ctx
        .credentials
        .mint(Kind::PreAuthCode, appid, now, ps.pre_auth_code_lifetime);
    crate::state::bump(
        &mut ctx.stats.issued,
        Endpoint::CreatePreAuthCode.path(),
        appid,
    );
    component_stats(ctx.stats, appid).pre_auth_codes_issued += 1;
    Ok(Reply::success(&PreAuthCode {
        pre_auth_code: &code,
        expires_in: ps.pre_auth_code_lifetime.as_secs(),
    }))
}

/// `func_info` as WeChat writes it: `[{"funcscope_category":{"id":1}},…]`.
fn func_info_json(ids: &[u32]) -> Value {
    Value::Array(
        ids.iter()
            .map(|id| json!({"funcscope_category": {"id": id}}))
            .collect(),
    )
}

/// Mints an authorizer access token; older ones keep the grace, like `cgi-bin/token`'s.
fn mint_authorizer_token(
    ps: &PlatformSettings,
    authorizer_appid: &str,
    auth: &mut Authorizer,
    credentials: &mut Credentials,
    now: Instant,
) -> String {
    credentials.supersede(&mut auth.tokens, now, ps.grace, false);
    let token = credentials.mint(Kind::Official, authorizer_appid, now, ps.lifetime);
    auth.tokens.push(token.clone());
    token
}

fn count_authorizer_token(stats: &mut MockStats, path: &str, component: &str, authorizer: &str) {
    crate::state::bump(&mut stats.issued, path, authorizer);
    component_stats(stats, component).authorizer_tokens_issued += 1;
}

/// `api_query_auth`: an authorization code for the authorizer's access and refresh tokens. A
/// code works until it expires; each exchange mints a new access token.
fn query_auth(
    ps: &PlatformSettings,
    appid: &str,
    input: &Input,
    ctx: &mut PlatformCtx<'_>,
    now: Instant,
) -> Result<Reply, i64> {
    let code = input.body_str("authorization_code")?.ok_or(CODE_MISSING)?;
    let comp = ctx
        .platform
        .components
        .get_mut(appid)
        .ok_or(INVALID_COMPONENT)?;
    let authorizer_appid = comp.codes.get(code).ok_or(CODE_INVALID)?.clone();
    if ctx
        .credentials
        .live(code, Kind::AuthorizationCode, now)
        .is_none()
    {
        return Err(CODE_EXPIRED);
    }
    let auth = comp
        .authorizers
        .get_mut(&authorizer_appid)
        .ok_or(CODE_INVALID)?;
    auth.exchanged = true;
    let token = mint_authorizer_token(ps, &authorizer_appid, auth, ctx.credentials, now);
    let reply = json!({
        "authorization_info": {
            "authorizer_appid": authorizer_appid,
            "authorizer_access_token": token,
            "expires_in": ps.lifetime.as_secs(),
            "authorizer_refresh_token": auth.current_refresh(),
            "func_info": func_info_json(&auth.func_info),
        }
    });
    count_authorizer_token(
        ctx.stats,
        Endpoint::QueryAuth.path(),
        appid,
        &authorizer_appid,
    );
    Ok(Reply::success(&reply))
}

#[derive(Serialize)]
struct AuthorizerAccessToken<'a> {
    authorizer_access_token: &'a str,
    expires_in: u64,
    authorizer_refresh_token: &'a str,
}

/// `api_authorizer_token`: a refresh token for a new access token. A refresh token that is not
/// the authorizer's (revoked, rotated away after the grace, or never issued) gets 61023.
fn authorizer_token(
    ps: &PlatformSettings,
    appid: &str,
    input: &Input,
    ctx: &mut PlatformCtx<'_>,
    now: Instant,
) -> Result<Reply, i64> {
    let authorizer_appid = input.body_str("authorizer_appid")?;
    let refresh = input.body_str("authorizer_refresh_token")?;
    let authorizer_appid = authorizer_appid.ok_or(APPID_MISSING)?;
    let refresh = refresh.ok_or(REFRESH_TOKEN_INVALID)?;
    let comp = ctx
        .platform
        .components
        .get_mut(appid)
        .ok_or(INVALID_COMPONENT)?;
    let auth = comp
        .authorizers
        .get_mut(authorizer_appid)
        .ok_or(REFRESH_TOKEN_INVALID)?;
    let known = auth.refresh.iter().any(|r| r == refresh)
        && ctx
            .credentials
            .live(refresh, Kind::RefreshToken, now)
            .is_some();
    if !known {
        return Err(REFRESH_TOKEN_INVALID);
    }
    let token = mint_authorizer_token(ps, authorizer_appid, auth, ctx.credentials, now);
    if ps.rotate_refresh_tokens {
        ctx.credentials
            .supersede(&mut auth.refresh, now, ps.grace, false);
        let fresh = ctx.credentials.mint(
            Kind::RefreshToken,
            authorizer_appid,
            now,
            REFRESH_TOKEN_LIFETIME,
        );
        auth.refresh.push(fresh);
        component_stats(ctx.stats, appid).refresh_tokens_rotated += 1;
    }
    let reply = Reply::success(&AuthorizerAccessToken {
        authorizer_access_token: &token,
        expires_in: ps.lifetime.as_secs(),
        authorizer_refresh_token: auth.current_refresh(),
    });
    count_authorizer_token(
        ctx.stats,
        Endpoint::AuthorizerToken.path(),
        appid,
        authorizer_appid,
    );
    Ok(reply)
}

/// `api_get_authorizer_info`: a plausible account profile and the grant.
fn authorizer_info(appid: &str, input: &Input, ctx: &mut PlatformCtx<'_>) -> Result<Reply, i64> {
    let authorizer_appid = input.body_str("authorizer_appid")?.ok_or(APPID_MISSING)?;
    let auth = ctx
        .platform
        .components
        .get(appid)
        .and_then(|c| c.authorizers.get(authorizer_appid))
        .ok_or(NOT_AUTHORIZED)?;
    let suffix: String = authorizer_appid.chars().rev().take(12).collect();
    Ok(Reply::success(&json!({
        "authorizer_info": {
            "nick_name": format!("mock account {authorizer_appid}"),
            "head_img": "",
            "service_type_info": {"id": 2},
            "verify_type_info": {"id": 0},
            "user_name": format!("gh_{suffix}"),
            "principal_name": "Mock Company",
            "alias": "",
            "business_info": {"open_store": 0, "open_scan": 0, "open_pay": 0, "open_card": 0, "open_shake": 0},
            "qrcode_url": "",
            "account_status": 1,
        },
        "authorization_info": {
            "authorizer_appid": authorizer_appid,
            "authorizer_refresh_token": auth.listed_refresh(),
            "func_info": func_info_json(&auth.func_info),
        }
    })))
}

#[derive(Serialize)]
struct AuthorizerList<'a> {
    total_count: usize,
    list: Vec<ListedAuthorizer<'a>>,
}

#[derive(Serialize)]
struct ListedAuthorizer<'a> {
    authorizer_appid: &'a str,
    refresh_token: &'a str,
    auth_time: u64,
}

/// `api_get_authorizer_list`: `offset` (default 0) and `count` (at most 500, else 40170).
fn authorizer_list(appid: &str, input: &Input, ctx: &mut PlatformCtx<'_>) -> Result<Reply, i64> {
    let offset = input.body_u64("offset")?.unwrap_or(0);
    let count = input.body_u64("count")?.ok_or(DATA_FORMAT)?;
    if count > MAX_LIST_PAGE {
        return Err(ARGS_COUNT_EXCEEDED);
    }
    let comp = ctx
        .platform
        .components
        .get(appid)
        .ok_or(INVALID_COMPONENT)?;
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    // `count` is at most 500, so the cast is lossless.
    let list = comp
        .order
        .iter()
        .skip(start)
        .take(count as usize)
        .filter_map(|a| comp.authorizers.get(a).map(|auth| (a, auth)))
        .map(|(a, auth)| ListedAuthorizer {
            authorizer_appid: a,
            refresh_token: auth.listed_refresh(),
            auth_time: auth.auth_time,
        })
        .collect();
    Ok(Reply::success(&AuthorizerList {
        total_count: comp.order.len(),
        list,
    }))
}

/// Mints the verify ticket of the next push and remembers it; `None` for an unknown platform.
pub(crate) fn new_verify_ticket(
    ps: &PlatformSettings,
    ctx: &mut PlatformCtx<'_>,
    appid: &str,
    now: Instant,
) -> Option<String> {
    let comp = ctx.platform.components.get_mut(appid)?;
    let credentials = &mut *ctx.credentials;
    comp.tickets
        .retain(|t| credentials.live(t, Kind::VerifyTicket, now).is_some());
    if comp.tickets.len() >= MAX_TICKETS {
        let mut dropped: Vec<String> = comp
            .tickets
            .drain(..=comp.tickets.len() - MAX_TICKETS)
            .collect();
        credentials.supersede(&mut dropped, now, Duration::ZERO, false);
    }
    let ticket = credentials.mint(Kind::VerifyTicket, appid, now, ps.verify_ticket_lifetime);
    comp.tickets.push(ticket.clone());
    Some(ticket)
}

/// The receiver acknowledged `ticket`: every older ticket keeps only the grace.
pub(crate) fn ticket_acknowledged(
    ps: &PlatformSettings,
    ctx: &mut PlatformCtx<'_>,
    appid: &str,
    ticket: &str,
    now: Instant,
) {
    let Some(comp) = ctx.platform.components.get_mut(appid) else {
        return;
    };
    let Some(position) = comp.tickets.iter().position(|t| t == ticket) else {
        return;
    };
    let mut older: Vec<String> = comp.tickets.drain(..position).collect();
    ctx.credentials.supersede(&mut older, now, ps.grace, false);
    older.append(&mut comp.tickets);
    comp.tickets = older;
}

/// Counts a push and its fate.
pub(crate) fn record_push(
    stats: &mut MockStats,
    appid: &str,
    info_type: InfoType,
    outcome: &Result<(), String>,
) {
    let cs = component_stats(stats, appid);
    let counts = cs.pushes.entry(info_type.as_str().to_owned()).or_default();
    counts.sent += 1;
    match outcome {
        Ok(()) => counts.acknowledged += 1,
        Err(why) => {
            counts.failed += 1;
            cs.last_push_failure = Some(why.clone());
        }
    }
}
