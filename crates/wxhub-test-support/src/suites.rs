//! What the Work WeChat suite tests share: the test suite's and provider's settings, a mock that
//! plays Work WeChat's provider side and pushes suite tickets to the hub through a [`Relay`],
//! and installs played through the mock.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use wechat_mock::{MockConfig, MockServer};
use wxhub::configuration::{ProviderSettings, RefreshOverrides, Secret, SuiteSettings};
use wxhub::token::CorpTicketKind;

use crate::helpers::*;
use crate::platform::{owner, Relay};

pub const SUITE: &str = "ww4asffe99e54c0f00";
pub const SUITE_SECRET: &str = "suiteSecretA";
pub const SUITE_TOKEN: &str = "suitetoken";
pub const SUITE_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
pub const PROVIDER: &str = "wwprovider000000001";
pub const PROVIDER_SECRET: &str = "providerSecretA";

pub fn suite_settings(corp_tickets: &[CorpTicketKind]) -> SuiteSettings {
    SuiteSettings {
        suite_id: SUITE.into(),
        secret: Secret::new(SUITE_SECRET.into()),
        token: Secret::new(SUITE_TOKEN.into()),
        encoding_aes_key: Secret::new(SUITE_KEY.into()),
        previous_encoding_aes_key: None,
        corp_tickets: corp_tickets.to_vec(),
        refresh: RefreshOverrides::default(),
    }
}

pub fn provider_settings() -> ProviderSettings {
    ProviderSettings {
        corpid: PROVIDER.into(),
        secret: Secret::new(PROVIDER_SECRET.into()),
        refresh: RefreshOverrides::default(),
    }
}

/// `config` with the test suite and provider, suite tickets pushed every `push_every` through
/// `relay`.
pub fn with_suite(config: MockConfig, relay: &Relay, push_every: Duration) -> MockConfig {
    MockConfig {
        suite_push_url: Some(relay.suite_push_url()),
        suite_ticket_interval: push_every,
        ..config
    }
    .with_suite(SUITE, SUITE_SECRET, SUITE_TOKEN, SUITE_KEY)
    .with_provider(PROVIDER, PROVIDER_SECRET)
}

/// A mock playing the provider side alone, tokens living `lifetime`.
pub async fn suite_mock(
    relay: &Relay,
    lifetime: Duration,
    push_every: Duration,
) -> Arc<MockServer> {
    let relay = relay.clone();
    spawn_mock(lifetime, Duration::from_secs(2), &[], &[], move |c| {
        with_suite(c, &relay, push_every)
    })
    .await
}

/// Hub options with the test suite and provider configured.
pub fn suite_options(corp_tickets: &[CorpTicketKind]) -> HubOptions {
    let mut options = HubOptions::new(&[]);
    options.suites = vec![suite_settings(corp_tickets)];
    options.providers = vec![provider_settings()];
    options
}

pub async fn wait_for_suite_token(hub: &TestHub) {
    wait_until(
        Duration::from_secs(15),
        "the suite token is served",
        || async {
            hub.get(&format!("/v1/suites/{SUITE}/access_token"))
                .await
                .status()
                == 200
        },
    )
    .await;
}

pub fn corp_path(corpid: &str, rest: &str) -> String {
    format!("/v1/suites/{SUITE}/corps/{corpid}/{rest}")
}

/// Has the mock push a suite ticket now (the provider console's button): whether the hub
/// acknowledged it.
pub async fn push_ticket(mock: &MockServer) -> bool {
    let answer = owner(mock, &format!("suites/{SUITE}/push_ticket"), json!({})).await;
    answer["push"]["acknowledged"] == true
}

/// A corp installs the test suite (the mock pushes `create_auth`); its corpid, once the hub
/// acknowledged the push.
pub async fn install(mock: &MockServer) -> String {
    let answer = owner(mock, "install", json!({ "suite_id": SUITE })).await;
    assert_eq!(answer["push"]["acknowledged"], true, "{answer}");
    corpid_of(&answer)
}

/// The corpid an install or uninstall answer names.
pub fn corpid_of(answer: &Value) -> String {
    answer["corpid"].as_str().unwrap_or_default().to_string()
}
