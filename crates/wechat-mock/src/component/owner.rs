//! The account owner's side of an authorization, under the state lock: authorizing a platform,
//! changing the permissions granted, withdrawing. Each returns the push WeChat sends for it.

use std::time::Duration;

use tokio::time::Instant;

use super::{
    component_stats, Authorizer, ComponentState, PlatformSettings, CODE_SWEEP_AT,
    DEFAULT_FUNC_INFO, REFRESH_TOKEN_LIFETIME,
};
use crate::credentials::Kind;
use crate::push::{InfoType, PushMessage};
use crate::state::PlatformCtx;
use crate::time::unix_now;

/// Why a `/mock/*authorize` request cannot be done, as an HTTP status class.
#[derive(Debug)]
pub(crate) enum ControlError {
    /// 400: the request is malformed.
    BadRequest(String),
    /// 404: no such platform or authorization.
    NotFound(String),
    /// 409: the request contradicts the current state.
    Conflict(String),
}

/// What an account owner does on the authorization page.
pub(crate) struct AuthorizeRequest {
    /// The platform being authorized.
    pub component_appid: String,
    /// The account; a random appid when absent.
    pub authorizer_appid: Option<String>,
    /// The permission sets granted; [`DEFAULT_FUNC_INFO`] when absent.
    pub func_info: Option<Vec<u32>>,
    /// The pre-auth code of the link the owner followed; the mock makes one up when absent.
    pub pre_auth_code: Option<String>,
}

/// The result of an authorization or its update: what the push carries and the caller is told.
pub(crate) struct Granted {
    /// The account that authorized.
    pub authorizer_appid: String,
    /// The code to exchange with `api_query_auth`.
    pub authorization_code: String,
    /// The code's lifetime in seconds.
    pub code_expires_in: u64,
    /// The pre-auth code of the authorization link.
    pub pre_auth_code: String,
    /// The permission sets now granted.
    pub func_info: Vec<u32>,
    /// The `authorized` / `updateauthorized` push to send.
    pub push: PushMessage,
}

fn platform_of<'a>(
    ctx: &'a mut PlatformCtx<'_>,
    appid: &str,
) -> Result<&'a mut ComponentState, ControlError> {
    ctx.platform
        .components
        .get_mut(appid)
        .ok_or_else(|| ControlError::NotFound(format!("no component {appid:?} is configured")))
}

/// An account authorizes the platform: a new authorizer with a refresh token, and an
/// authorization code for the `authorized` push and the redirect.
pub(crate) fn authorize(
    ps: &PlatformSettings,
    ctx: &mut PlatformCtx<'_>,
    request: AuthorizeRequest,
    now: Instant,
) -> Result<Granted, ControlError> {
    let component = request.component_appid;
    let authorizer = match request.authorizer_appid {
        Some(a) => a,
        None => format!("wx{:016x}", rand::random::<u64>()),
    };
    let func_info = request
        .func_info
        .unwrap_or_else(|| DEFAULT_FUNC_INFO.to_vec());
    {
        let comp = platform_of(ctx, &component)?;
        if comp.authorizers.contains_key(&authorizer) {
            return Err(ControlError::Conflict(format!(
                "{authorizer} has already authorized {component}; use /mock/updateauthorize to change its permissions"
            )));
        }
    }
    let pre_auth_code = match request.pre_auth_code {
        Some(code) => {
            let live = ctx
                .credentials
                .live(&code, Kind::PreAuthCode, now)
                .is_some_and(|r| r.account == component);
            if !live {
                return Err(ControlError::BadRequest(format!(
                    "pre_auth_code is not a live pre-auth code of {component}"
                )));
            }
            // A pre-auth code is good for one authorization.
            ctx.credentials
                .supersede(&mut vec![code.clone()], now, Duration::ZERO, false);
            code
        }
        None => ctx.credentials.mint(
            Kind::PreAuthCode,
            &component,
            now,
            ps.pre_auth_code_lifetime,
        ),
    };
    let refresh =
        ctx.credentials
            .mint(Kind::RefreshToken, &authorizer, now, REFRESH_TOKEN_LIFETIME);
    ctx.ensure_account(&authorizer);
    let code = new_code(ps, ctx, &component, &authorizer, now);
    let comp = platform_of(ctx, &component)?;
    comp.order.push(authorizer.clone());
    comp.authorizers.insert(
        authorizer.clone(),
        Authorizer {
            refresh: vec![refresh],
            tokens: Vec::new(),
            func_info: func_info.clone(),
            auth_time: unix_now(),
            exchanged: false,
        },
    );
    let authorizers = comp.order.len() as u64;
    let cs = component_stats(ctx.stats, &component);
    cs.authorizations += 1;
    cs.authorizers = authorizers;
    Ok(granted(
        ps,
        InfoType::Authorized,
        component,
        authorizer,
        code,
        pre_auth_code,
        func_info,
    ))
}

/// The account changes the permissions it grants: a fresh code, a new refresh token (the old
/// one keeps the grace) and the authorizer's access tokens die at once, as WeChat does when a
/// grant changes. WeChat sends no push when the set is unchanged, so that is refused.
pub(crate) fn update_authorization(
    ps: &PlatformSettings,
    ctx: &mut PlatformCtx<'_>,
    component: String,
    authorizer: String,
    func_info: Option<Vec<u32>>,
    now: Instant,
) -> Result<Granted, ControlError> {
    let granted_now = authorizer_of(ctx, &component, &authorizer)?
        .func_info
        .clone();
    let func_info = func_info.unwrap_or_else(|| {
        // One permission set more than now: the smallest id not granted yet.
        let mut more = granted_now.clone();
        more.extend((1..).find(|id| !granted_now.contains(id)));
        more
    });
    if same_set(&func_info, &granted_now) {
        return Err(ControlError::Conflict(
            "the permission set is unchanged; WeChat sends no updateauthorized push then".into(),
        ));
    }
    let code = new_code(ps, ctx, &component, &authorizer, now);
    let pre_auth_code = ctx.credentials.mint(
        Kind::PreAuthCode,
        &component,
        now,
        ps.pre_auth_code_lifetime,
    );
    let fresh = ctx
        .credentials
        .mint(Kind::RefreshToken, &authorizer, now, REFRESH_TOKEN_LIFETIME);
    let credentials = &mut *ctx.credentials;
    let auth = ctx
        .platform
        .components
        .get_mut(&component)
        .and_then(|c| c.authorizers.get_mut(&authorizer))
        .ok_or_else(|| not_authorized(&component, &authorizer))?;
    auth.func_info = func_info.clone();
    credentials.supersede(&mut auth.tokens, now, Duration::ZERO, false);
    credentials.supersede(&mut auth.refresh, now, ps.grace, false);
    auth.refresh.push(fresh);
    component_stats(ctx.stats, &component).update_authorizations += 1;
    Ok(granted(
        ps,
        InfoType::UpdateAuthorized,
        component,
        authorizer,
        code,
        pre_auth_code,
        func_info,
    ))
}

fn not_authorized(component: &str, authorizer: &str) -> ControlError {
    ControlError::NotFound(format!("{authorizer} has not authorized {component}"))
}

fn authorizer_of<'a>(
    ctx: &'a mut PlatformCtx<'_>,
    component: &str,
    authorizer: &str,
) -> Result<&'a mut Authorizer, ControlError> {
    platform_of(ctx, component)?
        .authorizers
        .get_mut(authorizer)
        .ok_or_else(|| not_authorized(component, authorizer))
}

/// The account withdraws its authorization: its refresh tokens answer 61023 from now on, its
/// access tokens and codes stop working, and it leaves the list. Returns the `unauthorized` push.
pub(crate) fn unauthorize(
    ctx: &mut PlatformCtx<'_>,
    component: String,
    authorizer: String,
    now: Instant,
) -> Result<PushMessage, ControlError> {
    let credentials = &mut *ctx.credentials;
    let comp = ctx.platform.components.get_mut(&component).ok_or_else(|| {
        ControlError::NotFound(format!("no component {component:?} is configured"))
    })?;
    let mut auth = comp
        .authorizers
        .remove(&authorizer)
        .ok_or_else(|| not_authorized(&component, &authorizer))?;
    comp.order.retain(|a| *a != authorizer);
    credentials.supersede(&mut auth.refresh, now, Duration::ZERO, false);
    credentials.supersede(&mut auth.tokens, now, Duration::ZERO, false);
    let mut codes: Vec<String> = comp
        .codes
        .iter()
        .filter(|(_, a)| **a == authorizer)
        .map(|(code, _)| code.clone())
        .collect();
    comp.codes.retain(|_, a| *a != authorizer);
    credentials.supersede(&mut codes, now, Duration::ZERO, false);
    let authorizers = comp.order.len() as u64;
    let cs = component_stats(ctx.stats, &component);
    cs.unauthorizations += 1;
    cs.authorizers = authorizers;
    Ok(PushMessage::new(
        component,
        InfoType::Unauthorized,
        vec![("AuthorizerAppid", authorizer.into())],
    ))
}

/// Mints an authorization code for `authorizer` on `component` and remembers whom it is for.
fn new_code(
    ps: &PlatformSettings,
    ctx: &mut PlatformCtx<'_>,
    component: &str,
    authorizer: &str,
    now: Instant,
) -> String {
    let code = ctx.credentials.mint(
        Kind::AuthorizationCode,
        authorizer,
        now,
        ps.authorization_code_lifetime,
    );
    if let Some(comp) = ctx.platform.components.get_mut(component) {
        if comp.codes.len() >= CODE_SWEEP_AT {
            let credentials = &*ctx.credentials;
            comp.codes
                .retain(|c, _| credentials.live(c, Kind::AuthorizationCode, now).is_some());
        }
        comp.codes.insert(code.clone(), authorizer.to_owned());
    }
    code
}

fn same_set(a: &[u32], b: &[u32]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_unstable();
    a.dedup();
    b.sort_unstable();
    b.dedup();
    a == b
}

fn granted(
    ps: &PlatformSettings,
    info_type: InfoType,
    component: String,
    authorizer: String,
    code: String,
    pre_auth_code: String,
    func_info: Vec<u32>,
) -> Granted {
    let lifetime = ps.authorization_code_lifetime.as_secs();
    let push = PushMessage::new(
        component,
        info_type,
        vec![
            ("AuthorizerAppid", authorizer.clone().into()),
            ("AuthorizationCode", code.clone().into()),
            // WeChat sends the instant the code expires, in Unix seconds.
            (
                "AuthorizationCodeExpiredTime",
                (unix_now() + lifetime).into(),
            ),
            ("PreAuthCode", pre_auth_code.clone().into()),
        ],
    );
    Granted {
        authorizer_appid: authorizer,
        authorization_code: code,
        code_expires_in: lifetime,
        pre_auth_code,
        func_info,
        push,
    }
}
