//! A corp administrator's side of a suite, under the state lock: installing it, uninstalling it,
//! resetting its permanent code, changing what it may do. Each returns the push Work WeChat sends
//! for it (none for an install through an install link, which redirects instead).

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::push::{SuiteInfo, SuiteMessage};
use super::{
    free_agentid, new_auth_code, suite_stats, Installation, SuiteState, AUTH_CODE_LIFETIME,
};
use crate::component::ControlError;
use crate::credentials::Kind;
use crate::state::SuiteCtx;
use crate::time::unix_now;

/// What an administrator does on the install page.
pub(crate) struct InstallRequest {
    /// The suite being installed.
    pub suite_id: String,
    /// The corp; a random corpid when absent.
    pub corpid: Option<String>,
    /// The corp's name; `mock corp CORPID` when absent.
    pub corp_name: Option<String>,
    /// The agentid of the app the suite becomes in the corp; the lowest free one from 1000001
    /// when absent.
    pub agentid: Option<u64>,
    /// The pre-auth code of the install link the administrator followed: then the `auth_code`
    /// goes back through the redirect, and nothing is pushed.
    pub pre_auth_code: Option<String>,
}

/// The result of an install or a reset: the code to exchange and what to push.
pub(crate) struct Installed {
    pub corpid: String,
    pub corp_name: String,
    pub agentid: u64,
    /// The temporary code for `get_permanent_code`.
    pub auth_code: String,
    /// Its lifetime in seconds.
    pub expires_in: u64,
    /// The `create_auth` or `reset_permanent_code` push; `None` after an install link.
    pub push: Option<SuiteMessage>,
}

/// One installation as the mock-only listing shows it.
#[derive(Serialize)]
pub(crate) struct Listed<'a> {
    corpid: &'a str,
    corp_name: &'a str,
    agentid: u64,
    /// `null` until an `auth_code` was exchanged (and after a reset, until the new one is).
    permanent_code: Option<&'a str>,
    installed_at: u64,
}

fn suite_of<'a>(
    ctx: &'a mut SuiteCtx<'_>,
    suite_id: &str,
) -> Result<&'a mut SuiteState, ControlError> {
    ctx.suites
        .suites
        .get_mut(suite_id)
        .ok_or_else(|| ControlError::NotFound(format!("no suite {suite_id:?} is configured")))
}

fn not_installed(suite_id: &str, corpid: &str) -> ControlError {
    ControlError::NotFound(format!("{corpid} has not installed {suite_id}"))
}

/// A corp installs the suite: a new installation whose app joins the Work apps, and a temporary
/// code for the `create_auth` push (or the install link's redirect).
pub(crate) fn install(
    ctx: &mut SuiteCtx<'_>,
    request: InstallRequest,
    now: Instant,
) -> Result<Installed, ControlError> {
    let suite_id = request.suite_id;
    let corpid = request
        .corpid
        .unwrap_or_else(|| format!("ww{:016x}", rand::random::<u64>()));
    if suite_of(ctx, &suite_id)?.corps.contains_key(&corpid) {
        return Err(ControlError::Conflict(format!(
            "{corpid} has already installed {suite_id}; use /mock/change_auth or /mock/reset_permanent_code"
        )));
    }
    let agentid = match request.agentid {
        Some(agentid) if ctx.has_corp_app(&format!("{corpid}/{agentid}")) => {
            return Err(ControlError::Conflict(format!(
                "{corpid} already has an app with agentid {agentid}"
            )));
        }
        Some(agentid) => agentid,
        None => free_agentid(ctx, &corpid),
    };
    if let Some(code) = &request.pre_auth_code {
        let live = ctx
            .credentials
            .live(code, Kind::SuitePreAuthCode, now)
            .is_some_and(|r| r.account == suite_id);
        if !live {
            return Err(ControlError::BadRequest(format!(
                "pre_auth_code is not a live pre-auth code of {suite_id}"
            )));
        }
        // A pre-auth code is good for one installation.
        ctx.credentials
            .supersede(&mut vec![code.clone()], now, Duration::ZERO, false);
    }
    let installation = Installation {
        corp_name: request
            .corp_name
            .unwrap_or_else(|| format!("mock corp {corpid}")),
        corpid: corpid.clone(),
        agentid,
        permanent_code: None,
        token: None,
        installed_at: unix_now(),
    };
    ctx.add_corp_app(&corpid, &installation.account());
    let corp_name = installation.corp_name.clone();
    let auth_code = new_auth_code(ctx, &suite_id, &corpid, now);
    let suite = suite_of(ctx, &suite_id)?;
    suite.order.push(corpid.clone());
    suite.corps.insert(corpid.clone(), installation);
    let installed = suite.order.len() as u64;
    let stats = suite_stats(ctx.stats, &suite_id);
    stats.installs += 1;
    stats.installed = installed;
    let push = request.pre_auth_code.is_none().then(|| {
        SuiteMessage::new(
            suite_id,
            SuiteInfo::CreateAuth,
            vec![("AuthCode", auth_code.clone().into())],
        )
    });
    Ok(Installed {
        corpid,
        corp_name,
        agentid,
        auth_code,
        expires_in: AUTH_CODE_LIFETIME.as_secs(),
        push,
    })
}

/// The corp uninstalls the suite: its permanent code answers 40084 from now on, its access
/// tokens and unexchanged codes die at once, its app leaves the Work apps. Returns the
/// `cancel_auth` push.
pub(crate) fn uninstall(
    ctx: &mut SuiteCtx<'_>,
    suite_id: String,
    corpid: String,
    now: Instant,
) -> Result<SuiteMessage, ControlError> {
    let suite = suite_of(ctx, &suite_id)?;
    let installation = suite
        .corps
        .remove(&corpid)
        .ok_or_else(|| not_installed(&suite_id, &corpid))?;
    suite.order.retain(|c| *c != corpid);
    let mut dead: Vec<String> = suite
        .codes
        .iter()
        .filter(|(_, c)| **c == corpid)
        .map(|(code, _)| code.clone())
        .collect();
    suite.codes.retain(|_, c| *c != corpid);
    let installed = suite.order.len() as u64;
    dead.extend(installation.permanent_code.iter().cloned());
    dead.extend(installation.token.iter().cloned());
    ctx.credentials
        .supersede(&mut dead, now, Duration::ZERO, false);
    ctx.remove_corp_app(&installation.account(), now);
    let stats = suite_stats(ctx.stats, &suite_id);
    stats.uninstalls += 1;
    stats.installed = installed;
    Ok(SuiteMessage::new(
        suite_id,
        SuiteInfo::CancelAuth,
        vec![("AuthCorpId", corpid.into())],
    ))
}

/// The corp's permanent code is reset: the old one dies at once (Work WeChat: "the old permanent
/// code is dead"), and a temporary code for the new one goes out in the `reset_permanent_code`
/// push. The corp's access tokens live on: they belong to the installation, not to the code.
pub(crate) fn reset_permanent_code(
    ctx: &mut SuiteCtx<'_>,
    suite_id: String,
    corpid: String,
    now: Instant,
) -> Result<Installed, ControlError> {
    let installation = suite_of(ctx, &suite_id)?
        .corps
        .get_mut(&corpid)
        .ok_or_else(|| not_installed(&suite_id, &corpid))?;
    let mut old: Vec<String> = installation.permanent_code.take().into_iter().collect();
    let (corp_name, agentid) = (installation.corp_name.clone(), installation.agentid);
    ctx.credentials
        .supersede(&mut old, now, Duration::ZERO, false);
    let auth_code = new_auth_code(ctx, &suite_id, &corpid, now);
    suite_stats(ctx.stats, &suite_id).resets += 1;
    let push = SuiteMessage::new(
        suite_id,
        SuiteInfo::ResetPermanentCode,
        vec![("AuthCode", auth_code.clone().into())],
    );
    Ok(Installed {
        corpid,
        corp_name,
        agentid,
        auth_code,
        expires_in: AUTH_CODE_LIFETIME.as_secs(),
        push: Some(push),
    })
}

/// The corp changes what the app may do (its visible range, its permissions); nothing the
/// credentials depend on changes. Returns the `change_auth` push.
pub(crate) fn change_auth(
    ctx: &mut SuiteCtx<'_>,
    suite_id: String,
    corpid: String,
) -> Result<SuiteMessage, ControlError> {
    if !suite_of(ctx, &suite_id)?.corps.contains_key(&corpid) {
        return Err(not_installed(&suite_id, &corpid));
    }
    suite_stats(ctx.stats, &suite_id).auth_changes += 1;
    Ok(SuiteMessage::new(
        suite_id,
        SuiteInfo::ChangeAuth,
        vec![("AuthCorpId", corpid.into())],
    ))
}

/// Every installation of the suite, in installation order, with its permanent code.
pub(crate) fn installations<'a>(
    ctx: &'a mut SuiteCtx<'_>,
    suite_id: &str,
) -> Result<Vec<Listed<'a>>, ControlError> {
    let suite = suite_of(ctx, suite_id)?;
    Ok(suite
        .order
        .iter()
        .filter_map(|corpid| suite.corps.get(corpid))
        .map(|i| Listed {
            corpid: &i.corpid,
            corp_name: &i.corp_name,
            agentid: i.agentid,
            permanent_code: i.permanent_code.as_deref(),
            installed_at: i.installed_at,
        })
        .collect())
}
