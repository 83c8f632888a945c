//! Settings that are valid but unwise: reported by `check-config` on stderr and logged when the
//! hub starts, without stopping either.

use super::{mask_url_userinfo, Settings};

impl Settings {
    /// Each unwise setting, as `key: what is wrong; what to do` (no secret in it).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (key, url) in [
            ("wechat.api_base", &self.wechat.api_base),
            ("wechat.work_api_base", &self.wechat.work_api_base),
        ] {
            if plaintext_beyond_this_host(url) {
                warnings.push(format!(
                    "{key}: {:?} is plain http:// to another host, so AppSecrets and tokens \
                     cross the network unencrypted; use https://",
                    mask_url_userinfo(url)
                ));
            }
        }
        warnings
    }
}

/// Whether `url` is `http://` to a host other than this machine's loopback (a mock on
/// `127.0.0.1` is fine; anything else is a network path).
fn plaintext_beyond_this_host(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    if url.scheme() != "http" {
        return false;
    }
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return !ip.is_loopback();
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    !(name == "localhost" || name.ends_with(".localhost"))
}
