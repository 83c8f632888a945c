//! Real WeChat SDKs against the gateway, configured only by their base URL (wechatpy also by its
//! token URL): each fetches a token, calls a business API, and keeps working when its token is
//! killed behind its back — no error reaches the SDK, and the hub refreshes once. wechatpy's
//! `WeChatComponent` runs a third-party platform's flow the same way: its authorizer becomes the
//! hub's, and its token refreshes never reach WeChat.
//!
//! The SDKs are installed, pinned, under `target/sdk/` by `scripts/sdk-setup` (which
//! `scripts/test` runs). A missing interpreter or SDK fails these tests: they are never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use wxhub::configuration::{consumer_key_digest, AppGrant, ConsumerSettings, Scope};

use crate::helpers::*;
use crate::platform_support::*;

const APP: &str = "wx00000000000000b1";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sdk_dir() -> PathBuf {
    workspace().join("target/sdk")
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(name)
}

/// Runs `command` (an SDK script) to its end and returns the one JSON line it printed; fails the
/// test if the SDK saw an error.
async fn run_sdk(program: &Path, mut command: Command) -> Value {
    assert!(
        program.components().count() == 1 || program.exists(),
        "{} is missing: run scripts/sdk-setup (needs python3-venv, nodejs, npm)",
        program.display()
    );
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("the SDK script runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the SDK saw an error:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}

/// Runs one SDK script against a fresh mock and hub, and checks what WeChat saw.
async fn survives_a_killed_token(program: PathBuf, args: Vec<PathBuf>, node_path: Option<PathBuf>) {
    let (mock, hub) = quick_hub(APP).await;
    let issued = stats(&mock).issued("/cgi-bin/token", APP);

    let mut command = Command::new(&program);
    command
        .args(&args)
        .env("WXHUB_GATEWAY", &hub.gateway)
        .env("WXHUB_WECHAT", mock.base_url())
        .env("WXHUB_APPID", APP)
        .env("WXHUB_KEY", READER_KEY)
        .env("WXHUB_REAL_SECRET", secret_of(APP));
    if let Some(node_path) = node_path {
        command.env("NODE_PATH", node_path);
    }
    let seen = run_sdk(&program, command).await;
    assert!(seen["first"].as_u64().unwrap() > 0, "{seen}");
    assert!(seen["second"].as_u64().unwrap() > 0, "{seen}");
    // The other party's token, and exactly one refresh by the hub.
    assert_eq!(stats(&mock).issued("/cgi-bin/token", APP), issued + 2);
    // Every business call the SDK made through the gateway succeeded in the end: WeChat refused
    // only the one made with the killed token (then replayed), besides the script's own probes.
    hub.stop().await;
}

#[tokio::test]
async fn wechatpy_survives_a_token_killed_behind_its_back() {
    survives_a_killed_token(
        sdk_dir().join("venv/bin/python"),
        vec![script("wechatpy_client.py")],
        None,
    )
    .await;
}

#[tokio::test]
async fn co_wechat_api_survives_a_token_killed_behind_its_back() {
    let modules = sdk_dir().join("node/node_modules");
    assert!(
        modules.join("co-wechat-api").exists(),
        "co-wechat-api is missing: run scripts/sdk-setup (needs nodejs, npm)"
    );
    survives_a_killed_token(
        PathBuf::from("node"),
        vec![script("co_wechat_api_client.js")],
        Some(modules),
    )
    .await;
}

/// The key of a consumer granted the platform's component token only (`"C"`, `read`): what a
/// platform SDK is configured with in place of the component_appsecret.
const PLATFORM_SDK_KEY: &str = "test-platform-sdk-key-0123456789";

#[tokio::test]
async fn wechatpy_component_runs_its_authorization_flow_through_the_gateway() {
    let python = sdk_dir().join("venv/bin/python");
    let relay = Relay::start().await;
    let mock = platform_mock(
        &relay,
        Duration::from_secs(60),
        Duration::from_secs(600),
        |c| c,
    )
    .await;
    let mut options = platform_options(&[]);
    options.more_consumers.push(ConsumerSettings {
        name: "platform-sdk".into(),
        key_sha256: consumer_key_digest(PLATFORM_SDK_KEY),
        apps: vec![AppGrant::Component(COMPONENT.into())],
        scopes: vec![Scope::Read],
    });
    let hub = spawn_app(&mock, options).await;
    relay.point_at(&[&hub]);
    wait_for_component_token(&hub).await;
    // The owner's `authorized` push is lost on the way: only the redirect's code, which the SDK
    // exchanges at the gateway, can register the authorizer.
    relay.point_at(&[]);

    let mut command = Command::new(&python);
    command
        .arg(script("wechatpy_component.py"))
        .env("WXHUB_GATEWAY", &hub.gateway)
        .env("WXHUB_WECHAT", mock.base_url())
        .env("WXHUB_COMPONENT", COMPONENT)
        .env("WXHUB_KEY", PLATFORM_SDK_KEY);
    let seen = run_sdk(&python, command).await;
    assert!(seen["first"].as_u64().unwrap() > 0, "{seen}");
    assert!(seen["second"].as_u64().unwrap() > 0, "{seen}");
    let authorizer = seen["authorizer"].as_str().unwrap();

    // The hub registered the authorizer from the SDK's exchange (the one WeChat saw) and serves
    // it; the SDK held the hub's token and a stand-in for the refresh token.
    let stats = stats(&mock);
    assert_eq!(stats.total_calls("/cgi-bin/component/api_query_auth"), 1);
    assert_eq!(
        stats.component(COMPONENT).pushes("authorized").acknowledged,
        0
    );
    let served = hub
        .token_at(&authorizer_path(authorizer, "access_token"))
        .await;
    assert_ne!(
        served.access_token,
        seen["token"].as_str().unwrap(),
        "renewed by the heal"
    );
    assert!(
        seen["refresh_token"]
            .as_str()
            .is_some_and(|r| r.starts_with("wxhub-")),
        "{seen}"
    );
    // WeChat minted authorizer tokens three times: the exchange, the other party's fetch, and
    // the hub's one refresh after WeChat refused the killed token. The SDK's two refreshes cost
    // none.
    assert_eq!(
        stats.total_calls("/cgi-bin/component/api_authorizer_token"),
        2,
        "the other party's fetch and the hub's one refresh"
    );
    assert_eq!(stats.component(COMPONENT).authorizer_tokens_issued, 3);
    // No component token was minted for the SDK.
    assert_eq!(stats.component(COMPONENT).component_tokens_issued, 1);
    hub.stop().await;
}
