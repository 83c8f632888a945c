//! `GET /sns/jscode2session`: a mini program's login, the one common business call that carries
//! the AppSecret itself. Strict about what proves the caller (appid, secret, grant type, code);
//! the session it answers is derived from the code, so a test can check what came back.

use serde::Serialize;

use crate::errors::code::{
    APPID_MISSING, APPSECRET_MISSING, CODE_MISSING, INVALID_APPID, INVALID_APPSECRET,
    INVALID_GRANT_TYPE,
};
use crate::input::Input;
use crate::reply::Reply;

/// A successful login.
#[derive(Serialize)]
struct Session {
    openid: String,
    session_key: String,
}

/// Answers a login for `input`; `secret` is the AppSecret of its appid, if the appid is known.
pub(crate) fn jscode2session(input: &Input, secret: Option<&str>) -> Result<Reply, i64> {
    input.query("appid").ok_or(APPID_MISSING)?;
    let given = input.query("secret").ok_or(APPSECRET_MISSING)?;
    let code = input.query("js_code").ok_or(CODE_MISSING)?;
    if input.query("grant_type") != Some("authorization_code") {
        return Err(INVALID_GRANT_TYPE);
    }
    let secret = secret.ok_or(INVALID_APPID)?;
    if secret != given {
        return Err(INVALID_APPSECRET);
    }
    Ok(Reply::success(&Session {
        openid: format!("openid-of-{code}"),
        session_key: format!("session-key-of-{code}"),
    }))
}
