//! Settings that are valid but unwise: reported by `check-config` on stderr and logged when the
//! hub starts, without stopping either.

use std::collections::HashSet;

use super::{mask_url_userinfo, AppGrant, Settings};

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
        warnings.extend(self.grants_beyond_the_file());
        warnings
    }

    /// Grants naming an account the file does not define: valid (the account may be added at
    /// runtime, through the admin API), but a typo would grant nothing, so each is named.
    fn grants_beyond_the_file(&self) -> Vec<String> {
        let apps: HashSet<&str> = self.apps.iter().map(|a| a.appid.as_str()).collect();
        let corps: HashSet<(&str, &str)> = self
            .corps
            .iter()
            .map(|c| (c.corpid.as_str(), c.agentid.as_str()))
            .collect();
        let components: HashSet<&str> = self
            .components
            .iter()
            .map(|c| c.component_appid.as_str())
            .collect();
        let suites: HashSet<&str> = self.suites.iter().map(|s| s.suite_id.as_str()).collect();
        let providers: HashSet<&str> = self.providers.iter().map(|p| p.corpid.as_str()).collect();
        let mut warnings = Vec::new();
        for (i, consumer) in self.consumers.iter().enumerate() {
            for (j, grant) in consumer.apps.iter().enumerate() {
                let what = match grant {
                    AppGrant::App(appid) if !apps.contains(appid.as_str()) => format!(
                        "no [[apps]] entry has appid {appid:?}; it grants that app once it is \
                         added at runtime (PUT /v1/admin/apps/{appid}), nothing until then"
                    ),
                    AppGrant::CorpAgent { corpid, agentid }
                        if !corps.contains(&(corpid.as_str(), agentid.as_str())) =>
                    {
                        format!(
                            "no [[corps]] entry (nor [[components]] entry) matches \
                             {corpid:?}/{agentid:?}; it grants that Work WeChat app once it is \
                             added at runtime (PUT /v1/admin/corps/{corpid}/agents/{agentid}), \
                             nothing until then"
                        )
                    }
                    AppGrant::AllAuthorizers(c)
                    | AppGrant::Authorizer {
                        component_appid: c, ..
                    } if !components.contains(c.as_str()) => format!(
                        "no [[components]] entry has component_appid {c:?}; it grants nothing \
                         until one is configured"
                    ),
                    AppGrant::Suite(s)
                    | AppGrant::AllAuthCorps(s)
                    | AppGrant::AuthCorp { suite_id: s, .. }
                        if !suites.contains(s.as_str()) =>
                    {
                        format!(
                            "no [[suites]] entry has suite_id {s:?}; it grants that suite once \
                             it is added at runtime (PUT /v1/admin/suites/{s}), nothing until then"
                        )
                    }
                    AppGrant::Provider(c) if !providers.contains(c.as_str()) => format!(
                        "no [[providers]] entry has corpid {c:?}; it grants that provider once \
                         it is added at runtime (PUT /v1/admin/providers/{c}), nothing until then"
                    ),
                    _ => continue,
                };
                warnings.push(format!(
                    "consumers[{i}].apps[{j}] ({:?}): {what}",
                    consumer.name
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
