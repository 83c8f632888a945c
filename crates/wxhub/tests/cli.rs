//! The command line of DESIGN §6, run as the real binary: `check-config` and `hash-key`.

use std::process::Command;

fn wxhub(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wxhub"))
        .args(args)
        .env_remove("WXHUB_LOG")
        .output()
        .expect("wxhub runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn hash_key_prints_the_sha256_of_the_key() {
    let (code, stdout, _) = wxhub(&["hash-key", "abc"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn check_config_prints_the_effective_configuration_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wx.secret"), "file-secret-value\n").unwrap();
    let config = dir.path().join("wxhub.toml");
    std::fs::write(
        &config,
        r#"
[store]
kind = "sqlite"
path = "hub.db"

[[apps]]
appid = "wx1234567890abcdef"
secret = "inline-secret-value"
tickets = ["jsapi"]

[[apps]]
appid = "wx1234567890abcde2"
secret_file = "wx.secret"
mode = "legacy"

[[consumers]]
name = "orders"
key_sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
apps = ["*"]
scopes = ["read"]
"#,
    )
    .unwrap();
    let (code, stdout, stderr) = wxhub(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("wx1234567890abcdef"));
    assert!(stdout.contains("legacy"));
    for secret in ["inline-secret-value", "file-secret-value"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} leaked"
        );
    }
    assert!(!stdout.contains("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
}

#[test]
fn check_config_names_the_file_line_and_key_of_a_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wxhub.toml");
    std::fs::write(
        &config,
        "[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\n\n[[apps]]\nappid = \"wx1\"\nsecret = \"t\"\n",
    )
    .unwrap();
    let (code, _, stderr) = wxhub(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("wxhub.toml:6"), "{stderr}");
    assert!(stderr.contains("appid"), "{stderr}");
    assert!(stderr.contains("duplicate"), "{stderr}");

    let (code, _, stderr) = wxhub(&["check-config", "--config", "/nonexistent/wxhub.toml"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/wxhub.toml"), "{stderr}");
}

#[test]
fn serve_refuses_a_broken_configuration_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wxhub.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:8080\"\nlisen = \"x\"\n",
    )
    .unwrap();
    let (code, _, stderr) = wxhub(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("wxhub.toml:3"), "{stderr}");
    assert!(stderr.contains("lisen"), "{stderr}");
}
