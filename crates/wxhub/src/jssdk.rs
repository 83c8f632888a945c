//! JS-SDK configuration signatures (docs/wechat.md#js-sdk-signature): what a web page passes to `wx.config` and
//! `wx.agentConfig`.

use rand::distributions::Alphanumeric;
use rand::Rng;
use sha1::{Digest, Sha1};

/// Length of the random `nonceStr` handed to pages.
pub const NONCE_LEN: usize = 16;

/// `hex(sha1("jsapi_ticket=…&noncestr=…&timestamp=…&url=…"))`: the fields in ASCII order, raw
/// values, no URL escaping.
pub fn signature(ticket: &str, noncestr: &str, timestamp: i64, url: &str) -> String {
    let string1 =
        format!("jsapi_ticket={ticket}&noncestr={noncestr}&timestamp={timestamp}&url={url}");
    hex::encode(Sha1::digest(string1.as_bytes()))
}

/// A fresh random `nonceStr`.
pub fn nonce() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(NONCE_LEN)
        .map(char::from)
        .collect()
}

/// The URL that is signed: the page's absolute http(s) URL with `#` and everything after it
/// removed. Anything else is refused with a reason.
pub fn page_url(url: &str) -> Result<&str, &'static str> {
    let without_fragment = url.split('#').next().unwrap_or_default();
    let rest = without_fragment
        .strip_prefix("https://")
        .or_else(|| without_fragment.strip_prefix("http://"))
        .ok_or("url must be an absolute http:// or https:// URL")?;
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    if host.is_empty() {
        return Err("url has no host");
    }
    if without_fragment
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("url contains whitespace or control characters");
    }
    Ok(without_fragment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_vector() {
        let ticket = "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg";
        assert_eq!(
            signature(
                ticket,
                "Wm3WZYTPz0wzccnW",
                1414587457,
                "http://mp.weixin.qq.com?params=value"
            ),
            "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
        );
    }

    #[test]
    fn fragment_is_stripped_and_bad_urls_refused() {
        assert_eq!(
            page_url("https://example.com/a?b=1#frag"),
            Ok("https://example.com/a?b=1")
        );
        assert_eq!(page_url("http://example.com"), Ok("http://example.com"));
        for bad in [
            "example.com/a",
            "/relative",
            "ftp://example.com",
            "https://",
            "https:///path",
            "https://exa mple.com",
            "",
        ] {
            assert!(page_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nonces_are_sixteen_alphanumerics_and_differ() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), NONCE_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
