//! WeChat's errcodes, their errmsg texts (docs/wechat.md#errcodes) and the request-id suffixes
//! real errmsgs carry.

use std::fmt::Write as _;
use std::net::IpAddr;

use rand::Rng;

use crate::endpoint::{Endpoint, Flavor};
use crate::time::unix_now;

/// Errcodes the mock answers with on its own (faults may use any other).
pub(crate) mod code {
    pub const SYSTEM_ERROR: i64 = -1;
    pub const INVALID_CREDENTIAL: i64 = 40001;
    pub const INVALID_GRANT_TYPE: i64 = 40002;
    pub const INVALID_APPID: i64 = 40013;
    pub const INVALID_ACCESS_TOKEN: i64 = 40014;
    pub const WORK_INVALID_PARAMETER: i64 = 40058;
    pub const INVALID_ARGS: i64 = 40097;
    pub const INVALID_APPSECRET: i64 = 40125;
    pub const ACCESS_TOKEN_MISSING: i64 = 41001;
    pub const APPID_MISSING: i64 = 41002;
    pub const APPSECRET_MISSING: i64 = 41004;
    pub const ACCESS_TOKEN_EXPIRED: i64 = 42001;
    pub const REQUIRE_POST: i64 = 43002;
    pub const DAILY_QUOTA: i64 = 45009;
    pub const DATA_FORMAT: i64 = 47001;
    pub const CLEAR_QUOTA_LIMIT: i64 = 48006;
    pub const CGI_PATH_NOT_FOUND: i64 = 76021;
    pub const ARGS_COUNT_EXCEEDED: i64 = 40170;
    pub const CODE_MISSING: i64 = 41008;
    pub const COMPONENT_APPID_MISSING: i64 = 41018;
    pub const NOT_AUTHORIZED: i64 = 61003;
    pub const COMPONENT_TICKET_EXPIRED: i64 = 61005;
    pub const COMPONENT_TICKET_INVALID: i64 = 61006;
    pub const CODE_INVALID: i64 = 61009;
    pub const CODE_EXPIRED: i64 = 61010;
    pub const INVALID_COMPONENT: i64 = 61011;
    pub const REFRESH_TOKEN_INVALID: i64 = 61023;
    // Work WeChat's third-party codes, from its global error-code page (全局错误码, document
    // 90313): 40078 不合法的auth_code参数, 40080 不合法的suite_secret, 40082 不合法的suite_token,
    // 40083 不合法的suite_id, 40084 不合法的permanent_code参数 (also when the corp cancelled the
    // authorisation), 40085 不合法的的suite_ticket参数 ("does not exist or has expired"), 41021–41025
    // 缺少 suite_id / suite_access_token / suite_ticket / secret / permanent_code, 42009
    // suite_access_token已过期.
    pub const INVALID_AUTH_CODE: i64 = 40078;
    pub const INVALID_SUITE_SECRET: i64 = 40080;
    pub const INVALID_SUITE_TOKEN: i64 = 40082;
    pub const INVALID_SUITE_ID: i64 = 40083;
    pub const INVALID_PERMANENT_CODE: i64 = 40084;
    pub const INVALID_SUITE_TICKET: i64 = 40085;
    pub const SUITE_ID_MISSING: i64 = 41021;
    pub const SUITE_TOKEN_MISSING: i64 = 41022;
    pub const SUITE_TICKET_MISSING: i64 = 41023;
    pub const SUITE_SECRET_MISSING: i64 = 41024;
    pub const PERMANENT_CODE_MISSING: i64 = 41025;
    pub const SUITE_TOKEN_EXPIRED: i64 = 42009;
}

/// The pointer to `stable_token` that WeChat has appended to some `cgi-bin/token` errors since 2023.
macro_rules! stable_hint {
    () => {
        ", could get access_token by getStableAccessToken, more details at https://mmbizurl.cn/s/JtxxFh33r"
    };
}

/// The errmsg of `code` as WeChat sends it on `endpoint`, before the request-id suffix.
pub(crate) fn base_text(code: i64, flavor: Flavor, endpoint: Endpoint) -> &'static str {
    use self::code::*;
    match (flavor, code) {
        (Flavor::Work, INVALID_CREDENTIAL) => "invalid credential",
        (Flavor::Work, INVALID_APPID) => "invalid corpid",
        (Flavor::Work, APPID_MISSING) => "corpid missing",
        (Flavor::Work, APPSECRET_MISSING) => "corpsecret missing",
        (Flavor::Work, DAILY_QUOTA) => "api freq out of limit",
        (Flavor::Work, WORK_INVALID_PARAMETER) => "invalid Request Parameter",
        // Texts seen in real answers (the misspelling is Work WeChat's own); the others follow
        // the global error-code page.
        (_, INVALID_AUTH_CODE) => "invalid auth_code",
        (_, INVALID_SUITE_SECRET) => "invalid suite_secret",
        (_, INVALID_SUITE_TOKEN) => "invalid suite_acccess_token or provider_access_token",
        (_, INVALID_SUITE_ID) => "invalid SuiteId",
        (_, INVALID_PERMANENT_CODE) => "invalid permanent_code",
        (_, INVALID_SUITE_TICKET) => "invalid suite ticket",
        (_, SUITE_ID_MISSING) => "suite_id missing",
        (_, SUITE_TOKEN_MISSING) => "suite_access_token missing",
        (_, SUITE_TICKET_MISSING) => "suite_ticket missing",
        (_, SUITE_SECRET_MISSING) => "suite_secret missing",
        (_, PERMANENT_CODE_MISSING) => "permanent_code missing",
        (_, SUITE_TOKEN_EXPIRED) => "suite_access_token expired",
        (_, SYSTEM_ERROR) => "system error",
        (_, INVALID_CREDENTIAL) => concat!(
            "invalid credential, access_token is invalid or not latest",
            stable_hint!()
        ),
        (_, INVALID_GRANT_TYPE) => "invalid grant_type",
        (_, INVALID_APPID) => "invalid appid",
        (_, INVALID_ACCESS_TOKEN) => "invalid access_token",
        (_, INVALID_ARGS) => "invalid args",
        (_, INVALID_APPSECRET) => "invalid appsecret",
        (_, ACCESS_TOKEN_MISSING) => "access_token missing",
        (_, APPID_MISSING) => "appid missing",
        (_, APPSECRET_MISSING) => "appsecret missing",
        (_, ACCESS_TOKEN_EXPIRED) => "access_token expired",
        (_, REQUIRE_POST) => "require POST method",
        (_, DAILY_QUOTA) if endpoint == Endpoint::Token => {
            concat!("reach max api daily quota limit", stable_hint!())
        }
        (_, DAILY_QUOTA) => "reach max api daily quota limit",
        (_, 45011) => "api minute-quota reach limit, must slower, retry next minute",
        (_, DATA_FORMAT) => "data format error",
        (_, 48001) => "api unauthorized",
        (_, CLEAR_QUOTA_LIMIT) => "forbid to clear quota because of reaching the limit",
        (_, CGI_PATH_NOT_FOUND) => "cgi_path not found, please check",
        (_, ARGS_COUNT_EXCEEDED) => "args count exceed count limit",
        (_, CODE_MISSING) => "missing code",
        (_, COMPONENT_APPID_MISSING) => "missing component_appid",
        (_, 61004) => "access clientip is not registered",
        (_, NOT_AUTHORIZED) => "component is not authorized by this account",
        (_, COMPONENT_TICKET_EXPIRED) => "component ticket is expired",
        (_, COMPONENT_TICKET_INVALID) => "component ticket is invalid",
        (_, 61007) => "api is unauthorized to component",
        (_, CODE_INVALID) => "code is invalid",
        (_, CODE_EXPIRED) => "code is expired",
        (_, INVALID_COMPONENT) => "invalid component",
        (_, REFRESH_TOKEN_INVALID) => "refresh_token is invalid",
        _ => "mock error",
    }
}

/// A full errmsg: the base text plus the suffix the platform appends to every error.
///
/// Official accounts: ` rid: <unix time hex>-<8hex>-<8hex>`. Work WeChat:
/// `, hint: [<25 digits>], from ip: <caller>, more info at …?e=<code>`.
pub(crate) fn errmsg(base: &str, code: i64, flavor: Flavor, peer: Option<IpAddr>) -> String {
    let mut rng = rand::thread_rng();
    let mut out = String::with_capacity(base.len() + 120);
    out.push_str(base);
    // Writing to a String cannot fail.
    let _ = match flavor {
        Flavor::Official => write!(
            out,
            " rid: {:08x}-{:08x}-{:08x}",
            unix_now() as u32,
            rng.gen::<u32>(),
            rng.gen::<u32>()
        ),
        Flavor::Work => write!(
            out,
            ", hint: [{}{:015}], from ip: {}, more info at https://open.work.weixin.qq.com/devtool/query?e={}",
            unix_now(),
            rng.gen_range(0..1_000_000_000_000_000u64),
            peer.map_or_else(|| "127.0.0.1".to_owned(), |ip| ip.to_string()),
            code
        ),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_suffix_is_a_rid_starting_with_the_unix_time() {
        let msg = errmsg("invalid appid", 40013, Flavor::Official, None);
        let rid = msg.strip_prefix("invalid appid rid: ").unwrap();
        let groups: Vec<&str> = rid.split('-').collect();
        assert_eq!(groups.len(), 3);
        assert!(groups.iter().all(|g| g.len() == 8
            && g.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())));
        let t = u64::from_str_radix(groups[0], 16).unwrap();
        assert!(unix_now().abs_diff(t) < 5);
    }

    #[test]
    fn work_suffix_names_the_caller_and_the_code() {
        let msg = errmsg(
            "invalid credential",
            40001,
            Flavor::Work,
            Some("10.1.2.3".parse().unwrap()),
        );
        assert!(msg.starts_with("invalid credential, hint: ["));
        assert!(msg.ends_with(
            "], from ip: 10.1.2.3, more info at https://open.work.weixin.qq.com/devtool/query?e=40001"
        ));
    }

    #[test]
    fn token_quota_text_points_to_stable_token() {
        assert!(base_text(45009, Flavor::Official, Endpoint::Token).ends_with(stable_hint!()));
        assert_eq!(
            base_text(45009, Flavor::Official, Endpoint::StableToken),
            "reach max api daily quota limit"
        );
    }
}
