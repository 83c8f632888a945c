//! Real WeChat SDKs against the gateway, configured only by their base URL (wechatpy also by its
//! token URL): each fetches a token, calls a business API, and keeps working when its token is
//! killed behind its back — no error reaches the SDK, and the hub refreshes once.
//!
//! The SDKs are installed, pinned, under `target/sdk/` by `scripts/sdk-setup` (which
//! `scripts/test` runs). A missing interpreter or SDK fails these tests: they are never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::helpers::*;

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

/// Runs one SDK script against a fresh mock and hub, and checks what WeChat saw.
async fn survives_a_killed_token(program: PathBuf, args: Vec<PathBuf>, node_path: Option<PathBuf>) {
    assert!(
        program.components().count() == 1 || program.exists(),
        "{} is missing: run scripts/sdk-setup (needs python3-venv, nodejs, npm)",
        program.display()
    );
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
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
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
