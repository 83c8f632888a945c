//! The public face of the suite side: how a test configures suites and providers, the corpids of
//! corps installed in advance, and the counters it reads back.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{MockConfig, MockStats, ParseAccountError, PushCounts};

/// A Work WeChat suite (第三方应用, or a 代开发 template): what `get_suite_token` checks and what its
/// pushes to the command callback URL (指令回调URL) are signed and sealed with.
#[derive(Clone, PartialEq, Eq)]
pub struct MockSuite {
    /// The suite id (`ww…` or `wx…`): the receive id sealed into its pushes, and the key of its
    /// counters in [`MockStats::suites`].
    pub suite_id: String,
    /// The `suite_secret`.
    pub secret: String,
    /// The callback Token that push signatures are computed with.
    pub token: String,
    /// The 43-character EncodingAESKey that pushes are sealed with.
    pub encoding_aes_key: String,
}

impl fmt::Debug for MockSuite {
    /// Names the suite, never its secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockSuite")
            .field("suite_id", &self.suite_id)
            .finish_non_exhaustive()
    }
}

impl FromStr for MockSuite {
    type Err = ParseAccountError;

    /// Parses `SUITEID:SECRET:TOKEN:AESKEY`, the form of the binary's `--suite` option. The error
    /// never repeats the secret, the token or the key.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let [suite_id, secret, token, key] = parts[..] else {
            return Err(ParseAccountError(format!(
                "expected SUITEID:SECRET:TOKEN:AESKEY (four fields separated by ':'), got {} field(s)",
                parts.len()
            )));
        };
        if [suite_id, secret, token, key].iter().any(|p| p.is_empty()) {
            return Err(ParseAccountError(format!(
                "suite {suite_id:?}: SUITEID, SECRET, TOKEN and AESKEY must all be non-empty"
            )));
        }
        if let Err(e) = wechat_crypto::EncodingAesKey::parse(key) {
            return Err(ParseAccountError(format!(
                "suite {suite_id:?}: bad EncodingAESKey: {e}"
            )));
        }
        Ok(MockSuite {
            suite_id: suite_id.to_owned(),
            secret: secret.to_owned(),
            token: token.to_owned(),
            encoding_aes_key: key.to_owned(),
        })
    }
}

/// A Work WeChat provider (服务商): the credentials `get_provider_token` checks.
#[derive(Clone, PartialEq, Eq)]
pub struct MockProvider {
    /// The provider's own corpid, also the key of its counters.
    pub corpid: String,
    /// The `provider_secret`.
    pub secret: String,
}

impl fmt::Debug for MockProvider {
    /// Names the provider, never its secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockProvider")
            .field("corpid", &self.corpid)
            .finish_non_exhaustive()
    }
}

impl FromStr for MockProvider {
    type Err = ParseAccountError;

    /// Parses `CORPID:SECRET`, the form of the binary's `--provider` option; the secret is
    /// everything after the first colon. The error never repeats the secret.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((corpid, secret)) if !corpid.is_empty() && !secret.is_empty() => {
                Ok(MockProvider {
                    corpid: corpid.to_owned(),
                    secret: secret.to_owned(),
                })
            }
            _ => Err(ParseAccountError(
                "expected CORPID:SECRET (for example ww0123456789abcdef:providerSecret), both non-empty"
                    .into(),
            )),
        }
    }
}

impl MockConfig {
    /// Adds a Work WeChat suite with its `suite_secret`, callback Token and EncodingAESKey.
    pub fn with_suite(
        mut self,
        suite_id: impl Into<String>,
        secret: impl Into<String>,
        token: impl Into<String>,
        encoding_aes_key: impl Into<String>,
    ) -> Self {
        self.suites.push(MockSuite {
            suite_id: suite_id.into(),
            secret: secret.into(),
            token: token.into(),
            encoding_aes_key: encoding_aes_key.into(),
        });
        self
    }

    /// Adds a Work WeChat provider with its `provider_secret`.
    pub fn with_provider(mut self, corpid: impl Into<String>, secret: impl Into<String>) -> Self {
        self.providers.push(MockProvider {
            corpid: corpid.into(),
            secret: secret.into(),
        });
        self
    }
}

/// The corpid of the `n`th corp (from 1) that installed the suite at `index` in
/// [`MockConfig::suites`] before the mock started (see [`MockConfig::auth_corps_per_suite`]):
/// `ww`, the index as 4 hex digits, `n` as 12. Tests compute the corpids they expect with it.
pub fn auth_corpid(index: usize, n: u64) -> String {
    format!("ww{index:04x}{n:012x}")
}

/// What happened on one suite: the counters a hub test asserts on. No token, ticket or code
/// appears here.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SuiteStats {
    /// Pushes by InfoType (`suite_ticket`, `create_auth`, `change_auth`, `cancel_auth`,
    /// `reset_permanent_code`); `pushes("suite_ticket").sent` is the tickets pushed.
    pub pushes: BTreeMap<String, PushCounts>,
    /// URL verifications (`/mock/suites/{suite_id}/verify_url`): `acknowledged` counts those the
    /// receiver answered with exactly the decrypted echostr.
    pub url_verifications: PushCounts,
    /// Why the last failed push or verification failed, for debugging a receiver.
    pub last_push_failure: Option<String>,
    /// `suite_access_token`s minted (a repeated fetch of a live one does not count).
    pub suite_tokens_issued: u64,
    /// `pre_auth_code`s handed out.
    pub pre_auth_codes_issued: u64,
    /// Permanent codes handed out by `get_permanent_code`.
    pub permanent_codes_issued: u64,
    /// Corp access tokens minted (by `get_permanent_code` and `get_corp_token`).
    pub corp_tokens_issued: u64,
    /// Corps that installed the suite (`/mock/install`).
    pub installs: u64,
    /// Corps that uninstalled it (`/mock/uninstall`).
    pub uninstalls: u64,
    /// Permanent codes reset (`/mock/reset_permanent_code`).
    pub resets: u64,
    /// Authorisation changes (`/mock/change_auth`).
    pub auth_changes: u64,
    /// Corps that have the suite installed right now, those installed at start included.
    pub installed: u64,
}

impl SuiteStats {
    /// The counts of pushes of `info_type`, for example `suite_ticket`.
    pub fn pushes(&self, info_type: &str) -> PushCounts {
        self.pushes.get(info_type).copied().unwrap_or_default()
    }
}

impl MockStats {
    /// The counters of the suite `suite_id` (all zero for an unknown one).
    pub fn suite(&self, suite_id: &str) -> SuiteStats {
        self.suites.get(suite_id).cloned().unwrap_or_default()
    }

    /// `provider_access_token`s minted for the provider `corpid`.
    pub fn provider_tokens(&self, corpid: &str) -> u64 {
        self.provider_tokens_issued
            .get(corpid)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suite_and_provider_arguments_without_repeating_secrets() {
        let key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
        let s: MockSuite = format!("wws:s3cret:tok:{key}").parse().unwrap();
        assert_eq!(
            (s.suite_id.as_str(), s.secret.as_str(), s.token.as_str()),
            ("wws", "s3cret", "tok")
        );
        assert_eq!(s.encoding_aes_key, key);
        let shown = format!("{s:?}");
        assert!(shown.contains("wws") && !shown.contains("s3cret") && !shown.contains(key));
        for bad in [
            "wws:s3cret:tok".to_owned(),
            format!("wws:s3cret:tok:{key}:more"),
            format!("wws::tok:{key}"),
            "wws:s3cret:tok:short".to_owned(),
        ] {
            let error = bad.parse::<MockSuite>().unwrap_err().to_string();
            assert!(!error.contains("s3cret"), "{error}");
        }

        let p: MockProvider = "wwp:sec:ret".parse().unwrap();
        assert_eq!((p.corpid.as_str(), p.secret.as_str()), ("wwp", "sec:ret"));
        assert!(!format!("{p:?}").contains("sec:ret"));
        for bad in ["wwp", "wwp:", ":s3cret"] {
            let error = bad.parse::<MockProvider>().unwrap_err().to_string();
            assert!(!error.contains("s3cret"), "{error}");
        }
    }

    #[test]
    fn pre_installed_corpids_name_the_suite_and_the_corp() {
        assert_eq!(auth_corpid(0, 1), "ww0000000000000001");
        assert_eq!(auth_corpid(2, 0x1f), "ww000200000000001f");
        assert_eq!(auth_corpid(1, 1).len(), 18);
    }
}
