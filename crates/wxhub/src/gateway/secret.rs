//! Calls that carry the AppSecret itself (`/sns/jscode2session`, `/sns/oauth2/access_token`): an
//! SDK configured with a consumer key sends that key as `secret=`, and the gateway puts the real
//! AppSecret in its place for a consumer granted the app. A caller that is not granted the app is
//! refused and nothing reaches WeChat.
//!
//! The third-party platform's forms (`/sns/component/…`) carry no secret: their credential is the
//! `component_access_token`, checked and healed like any hub token (see the gateway's
//! `token_param`).

use axum::body::Body;

use super::token::granted;
use crate::api::{AccountId, ApiContext};
use crate::forward::query::{self, param};
use crate::forward::reply::{self, code};
use crate::forward::{Forwarded, Outgoing};
use crate::metrics::gateway::{Outcome, Refusal};

/// The paths whose `secret=` is the AppSecret.
pub const SECRET_PATHS: [&str; 2] = ["/sns/jscode2session", "/sns/oauth2/access_token"];

/// Forwards `outgoing` with `secret=K` replaced by the AppSecret of its `appid`.
pub async fn substitute(context: &ApiContext, mut outgoing: Outgoing, body: Body) -> Forwarded {
    let host = outgoing.host;
    let raw = outgoing.query();
    let refused = |code| {
        Forwarded::new(
            reply::error(code, host),
            Outcome::Refused(Refusal::SecretRefused),
        )
    };
    let Some(appid) = param(raw, "appid") else {
        return refused(code::APPID_MISSING);
    };
    let Some(key) = param(raw, "secret") else {
        return refused(code::APPSECRET_MISSING);
    };
    let account = AccountId::app(appid);
    let Ok(credential) = context.read_index.find(&account, None) else {
        return refused(code::INVALID_APPID);
    };
    if !granted(context, &key, &account) {
        return refused(code::INVALID_APPSECRET);
    }
    let spec = credential.spec();
    let Some(secret) = spec.source.secret() else {
        return refused(code::INVALID_APPID);
    };
    let rewritten = query::replace(raw, "secret", secret.expose());
    outgoing.set_query(&rewritten);
    context.forwarder.pass(&outgoing, body).await
}
