//! The `cgi-bin/service/*` endpoints by Work WeChat's rules, under the state lock.
//!
//! Token successes (`get_suite_token`, `get_corp_token`, `get_provider_token`) carry no errcode,
//! as Work WeChat documents for them ("因历史原因，该接口在调用失败时才返回errcode"); the others
//! carry `errcode: 0` like every other Work API.

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{
    check_service_token, suite_stats, Installation, SuiteSettings, SuiteState,
    PERMANENT_CODE_LIFETIME, PRE_AUTH_CODE_LIFETIME,
};
use crate::credentials::{Credentials, Kind};
use crate::endpoint::Endpoint;
use crate::errors::code::*;
use crate::input::Input;
use crate::reply::Reply;
use crate::state::{bump, current_or_mint, SuiteCtx};

/// Answers a suite or provider endpoint.
pub(crate) fn serve(
    ss: &SuiteSettings,
    endpoint: Endpoint,
    input: &Input,
    ctx: &mut SuiteCtx<'_>,
    now: Instant,
) -> Result<Reply, i64> {
    match endpoint {
        Endpoint::SuiteToken => suite_token(ss, input, ctx, now),
        Endpoint::ProviderToken => provider_token(ss, input, ctx, now),
        _ => {
            let suite_id = check_service_token(
                ctx.credentials,
                Kind::Suite,
                input.query("suite_access_token"),
                now,
            )?;
            match endpoint {
                Endpoint::SuitePreAuthCode => pre_auth_code(&suite_id, ctx, now),
                Endpoint::PermanentCode => permanent_code(ss, &suite_id, input, ctx, now),
                Endpoint::AuthInfo => auth_info(&suite_id, input, ctx, now),
                Endpoint::SuiteCorpToken => corp_token(ss, &suite_id, input, ctx, now),
                _ => Err(SYSTEM_ERROR),
            }
        }
    }
}

#[derive(Serialize)]
struct SuiteAccessToken<'a> {
    suite_access_token: &'a str,
    expires_in: u64,
}

/// `get_suite_token`: suite id, secret and a ticket pushed to that suite within the ticket
/// lifetime (a ticket made up, of another suite or too old gets 40085). Like Work tokens, the
/// same token comes back until it expires.
fn suite_token(
    ss: &SuiteSettings,
    input: &Input,
    ctx: &mut SuiteCtx<'_>,
    now: Instant,
) -> Result<Reply, i64> {
    let suite_id = input.body_str("suite_id")?;
    let secret = input.body_str("suite_secret")?;
    let ticket = input.body_str("suite_ticket")?;
    let suite_id = suite_id.ok_or(SUITE_ID_MISSING)?;
    let config = ss.suites.get(suite_id).ok_or(INVALID_SUITE_ID)?;
    if secret.ok_or(SUITE_SECRET_MISSING)? != config.secret {
        return Err(INVALID_SUITE_SECRET);
    }
    let ticket = ticket.ok_or(SUITE_TICKET_MISSING)?;
    let pushed_here = ctx
        .credentials
        .live(ticket, Kind::SuiteTicket, now)
        .is_some_and(|r| r.account == suite_id);
    if !pushed_here {
        return Err(INVALID_SUITE_TICKET);
    }
    let suite = ctx
        .suites
        .suites
        .get_mut(suite_id)
        .ok_or(INVALID_SUITE_ID)?;
    let (token, minted) = current_or_mint(
        ctx.credentials,
        &mut suite.token,
        Kind::Suite,
        suite_id,
        now,
        ss.lifetime,
    );
    if minted {
        bump(&mut ctx.stats.issued, Endpoint::SuiteToken.path(), suite_id);
        suite_stats(ctx.stats, suite_id).suite_tokens_issued += 1;
    }
    Ok(Reply::success(&SuiteAccessToken {
        suite_access_token: &token,
        expires_in: ss.lifetime.as_secs(),
    }))
}

#[derive(Serialize)]
struct PreAuthCode<'a> {
    errcode: i64,
    errmsg: &'a str,
    pre_auth_code: &'a str,
    expires_in: u64,
}

/// `get_pre_auth_code`: a fresh code for an install link.
fn pre_auth_code(suite_id: &str, ctx: &mut SuiteCtx<'_>, now: Instant) -> Result<Reply, i64> {
    let code = ctx.credentials.mint(
        Kind::SuitePreAuthCode,
        suite_id,
        now,
        PRE_AUTH_CODE_LIFETIME,
    );
    bump(
        &mut ctx.stats.issued,
        Endpoint::SuitePreAuthCode.path(),
        suite_id,
    );
    suite_stats(ctx.stats, suite_id).pre_auth_codes_issued += 1;
    Ok(Reply::success(&PreAuthCode {
        errcode: 0,
        errmsg: "ok",
        pre_auth_code: &code,
        expires_in: PRE_AUTH_CODE_LIFETIME.as_secs(),
    }))
}

/// `get_permanent_code`: a temporary `auth_code` (from `create_auth`, `reset_permanent_code` or
/// an install link) for the corp's permanent code and access token. A code works once: a spent,
/// expired, made-up or other suite's code gets 40078. Each exchange mints a new permanent code;
/// an earlier one of the corp dies.
fn permanent_code(
    ss: &SuiteSettings,
    suite_id: &str,
    input: &Input,
    ctx: &mut SuiteCtx<'_>,
    now: Instant,
) -> Result<Reply, i64> {
    let code = input.body_str("auth_code")?.ok_or(CODE_MISSING)?;
    let credentials = &mut *ctx.credentials;
    let suite = ctx
        .suites
        .suites
        .get_mut(suite_id)
        .ok_or(INVALID_SUITE_TOKEN)?;
    let corpid = suite.codes.remove(code).ok_or(INVALID_AUTH_CODE)?;
    let live = credentials.live(code, Kind::SuiteAuthCode, now).is_some();
    // Spent, whatever the outcome.
    credentials.supersede(&mut vec![code.to_owned()], now, Duration::ZERO, false);
    if !live {
        return Err(INVALID_AUTH_CODE);
    }
    let installation = suite.corps.get_mut(&corpid).ok_or(INVALID_AUTH_CODE)?;
    let mut old: Vec<String> = installation.permanent_code.take().into_iter().collect();
    credentials.supersede(&mut old, now, Duration::ZERO, false);
    let permanent = credentials.mint(Kind::PermanentCode, &corpid, now, PERMANENT_CODE_LIFETIME);
    installation.permanent_code = Some(permanent.clone());
    let (token, minted) = corp_access_token(ss, installation, credentials, now);
    let reply = json!({
        "errcode": 0,
        "errmsg": "ok",
        "access_token": token,
        "expires_in": ss.lifetime.as_secs(),
        "permanent_code": permanent,
        "auth_corp_info": corp_info(installation),
        "auth_info": auth_info_json(suite_id, installation),
        "auth_user_info": {"userid": "mock-admin", "open_userid": format!("mock-admin@{corpid}"), "name": "mock admin", "avatar": ""},
    });
    if minted {
        bump(
            &mut ctx.stats.issued,
            Endpoint::PermanentCode.path(),
            &corpid,
        );
    }
    let stats = suite_stats(ctx.stats, suite_id);
    stats.permanent_codes_issued += 1;
    stats.corp_tokens_issued += u64::from(minted);
    Ok(Reply::success(&reply))
}

/// The corp's live access token, or a new one (then `true`): the same value until it expires,
/// as Work WeChat's `gettoken` does.
fn corp_access_token(
    ss: &SuiteSettings,
    installation: &mut Installation,
    credentials: &mut Credentials,
    now: Instant,
) -> (String, bool) {
    let account = installation.account();
    current_or_mint(
        credentials,
        &mut installation.token,
        Kind::Corp,
        &account,
        now,
        ss.lifetime,
    )
}

/// The installation of `auth_corpid` on this suite whose live permanent code the body carries;
/// a corp that never installed the suite (or installed another one), uninstalled it, or a code
/// that was reset all get 40084.
fn installation<'a>(
    suite: &'a mut SuiteState,
    credentials: &Credentials,
    input: &Input,
    now: Instant,
) -> Result<&'a mut Installation, i64> {
    let corpid = input.body_str("auth_corpid")?;
    let code = input.body_str("permanent_code")?;
    let corpid = corpid.ok_or(APPID_MISSING)?;
    let code = code.ok_or(PERMANENT_CODE_MISSING)?;
    let installation = suite.corps.get_mut(corpid).ok_or(INVALID_PERMANENT_CODE)?;
    let current = installation.permanent_code.as_deref() == Some(code)
        && credentials.live(code, Kind::PermanentCode, now).is_some();
    if !current {
        return Err(INVALID_PERMANENT_CODE);
    }
    Ok(installation)
}

/// `get_auth_info`: the corp and the app it installed.
fn auth_info(
    suite_id: &str,
    input: &Input,
    ctx: &mut SuiteCtx<'_>,
    now: Instant,
) -> Result<Reply, i64> {
    let suite = ctx
        .suites
        .suites
        .get_mut(suite_id)
        .ok_or(INVALID_SUITE_TOKEN)?;
    let installation = installation(suite, ctx.credentials, input, now)?;
    Ok(Reply::success(&json!({
        "errcode": 0,
        "errmsg": "ok",
        "auth_corp_info": corp_info(installation),
        "auth_info": auth_info_json(suite_id, installation),
    })))
}

#[derive(Serialize)]
struct CorpAccessToken<'a> {
    access_token: &'a str,
    expires_in: u64,
}

/// `get_corp_token`: the installed corp's access token for its permanent code.
fn corp_token(
    ss: &SuiteSettings,
    suite_id: &str,
    input: &Input,
    ctx: &mut SuiteCtx<'_>,
    now: Instant,
) -> Result<Reply, i64> {
    let suite = ctx
        .suites
        .suites
        .get_mut(suite_id)
        .ok_or(INVALID_SUITE_TOKEN)?;
    let installation = installation(suite, ctx.credentials, input, now)?;
    let (token, minted) = corp_access_token(ss, installation, ctx.credentials, now);
    if minted {
        let corpid = installation.corpid.clone();
        bump(
            &mut ctx.stats.issued,
            Endpoint::SuiteCorpToken.path(),
            &corpid,
        );
        suite_stats(ctx.stats, suite_id).corp_tokens_issued += 1;
    }
    Ok(Reply::success(&CorpAccessToken {
        access_token: &token,
        expires_in: ss.lifetime.as_secs(),
    }))
}

#[derive(Serialize)]
struct ProviderAccessToken<'a> {
    provider_access_token: &'a str,
    expires_in: u64,
}

/// `get_provider_token`: the provider's corpid and `provider_secret` (Work WeChat's global codes:
/// 41002 no corpid, 40013 unknown corpid, 41004 no secret, 40001 wrong secret). The same token
/// comes back until it expires.
fn provider_token(
    ss: &SuiteSettings,
    input: &Input,
    ctx: &mut SuiteCtx<'_>,
    now: Instant,
) -> Result<Reply, i64> {
    let corpid = input.body_str("corpid")?;
    let secret = input.body_str("provider_secret")?;
    let corpid = corpid.ok_or(APPID_MISSING)?;
    let expected = ss.providers.get(corpid).ok_or(INVALID_APPID)?;
    if secret.ok_or(APPSECRET_MISSING)? != expected {
        return Err(INVALID_CREDENTIAL);
    }
    let slot = ctx.suites.providers.entry(corpid.to_owned()).or_default();
    let (token, minted) = current_or_mint(
        ctx.credentials,
        slot,
        Kind::Provider,
        corpid,
        now,
        ss.lifetime,
    );
    if minted {
        bump(
            &mut ctx.stats.issued,
            Endpoint::ProviderToken.path(),
            corpid,
        );
        *ctx.stats
            .provider_tokens_issued
            .entry(corpid.to_owned())
            .or_default() += 1;
    }
    Ok(Reply::success(&ProviderAccessToken {
        provider_access_token: &token,
        expires_in: ss.lifetime.as_secs(),
    }))
}

/// `auth_corp_info` as Work WeChat writes it.
fn corp_info(installation: &Installation) -> Value {
    json!({
        "corpid": installation.corpid,
        "corp_name": installation.corp_name,
        "corp_type": "verified",
        "corp_square_logo_url": "",
        "corp_user_max": 200,
        "corp_full_name": installation.corp_name,
        "subject_type": 1,
        "verified_end_time": 0,
        "corp_wxqrcode": "",
        "corp_scale": "1-50人",
        "corp_industry": "IT服务",
        "corp_sub_industry": "计算机软件/硬件/信息服务",
    })
}

/// `auth_info`: the one app the suite installed in the corp.
fn auth_info_json(suite_id: &str, installation: &Installation) -> Value {
    json!({
        "agent": [{
            "agentid": installation.agentid,
            "name": format!("mock app of {suite_id}"),
            "round_logo_url": "",
            "square_logo_url": "",
            "auth_mode": 0,
            "is_customized_app": false,
            "privilege": {
                "level": 1,
                "allow_party": [1],
                "allow_user": [],
                "allow_tag": [],
                "extra_party": [],
                "extra_user": [],
                "extra_tag": [],
            },
        }]
    })
}
