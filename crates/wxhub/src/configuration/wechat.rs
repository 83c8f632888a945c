//! `[wechat]`: the base URLs of WeChat's two APIs (or of the mock that stands in for them) and the
//! upstream timeout. A base URL may carry a login, so none is ever shown unmasked.

use std::fmt;
use std::time::Duration;

use super::error::ConfigError;
use super::source::{section_keys, Node};
use super::validate::Cx;

/// `[wechat]`: WeChat's HTTP endpoints. `Debug` masks any login in the URLs.
#[derive(Clone, PartialEq, Eq)]
pub struct WechatSettings {
    /// Base URL of the official-account API, without a trailing slash (default
    /// `https://api.weixin.qq.com`; tests point it at `wechat-mock`).
    pub api_base: String,
    /// Base URL of the Work WeChat API, without a trailing slash (default
    /// `https://qyapi.weixin.qq.com`).
    pub work_api_base: String,
    /// Timeout of each upstream request (default 5 s); store leases outlive it.
    pub timeout: Duration,
}

/// The default `[wechat] api_base`.
pub const DEFAULT_API_BASE: &str = "https://api.weixin.qq.com";
/// The default `[wechat] work_api_base`.
pub const DEFAULT_WORK_API_BASE: &str = "https://qyapi.weixin.qq.com";

impl Default for WechatSettings {
    fn default() -> Self {
        WechatSettings {
            api_base: DEFAULT_API_BASE.into(),
            work_api_base: DEFAULT_WORK_API_BASE.into(),
            timeout: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for WechatSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WechatSettings")
            .field("api_base", &mask_url_userinfo(&self.api_base))
            .field("work_api_base", &mask_url_userinfo(&self.work_api_base))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `https://user:password@host/x` → `https://***@host/x`: the whole userinfo masked (for the
/// WeChat base URLs, where a user name is as private as the password); other URLs unchanged.
pub(crate) fn mask_url_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    match url[authority_start..authority_end].rfind('@') {
        Some(at) => format!(
            "{}***{}",
            &url[..authority_start],
            &url[authority_start + at..]
        ),
        None => url.to_string(),
    }
}

impl Cx<'_> {
    fn base_url(&self, node: &Node, path: &str) -> Result<String, ConfigError> {
        let text = self.string(node, path)?;
        let shown = mask_url_userinfo(text);
        let fail = |why: &str| self.err(&node.place, path, format!("invalid URL {shown:?}: {why}"));
        if !(text.starts_with("http://") || text.starts_with("https://")) {
            return Err(fail("expected an http:// or https:// URL"));
        }
        let url = reqwest::Url::parse(text).map_err(|e| fail(&e.to_string()))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(fail("no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(fail("a base URL has no query or fragment"));
        }
        Ok(text.trim_end_matches('/').to_string())
    }

    pub(super) fn wechat(&self, node: Option<&Node>) -> Result<WechatSettings, ConfigError> {
        let mut wechat = WechatSettings::default();
        let Some(node) = node else {
            return Ok(wechat);
        };
        let table = self.table(node, "wechat".into(), &section_keys("wechat"))?;
        if let Some(node) = table.get("api_base") {
            wechat.api_base = self.base_url(node, &table.key_path("api_base"))?;
        }
        if let Some(node) = table.get("work_api_base") {
            wechat.work_api_base = self.base_url(node, &table.key_path("work_api_base"))?;
        }
        if let Some(node) = table.get("timeout") {
            wechat.timeout = self.positive_duration(node, &table.key_path("timeout"))?;
        }
        Ok(wechat)
    }
}
