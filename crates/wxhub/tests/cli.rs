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

#[test]
fn check_config_masks_a_base_url_login_and_warns_about_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wxhub.toml");
    std::fs::write(
        &config,
        "[store]\nkind = \"memory\"\n[wechat]\napi_base = \"http://user:hunter2@10.1.2.3:8000\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = wxhub(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"));
    assert!(
        stdout.contains("api_base = \"http://***@10.1.2.3:8000\""),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning:") && stderr.contains("wechat.api_base"),
        "{stderr}"
    );
}

/// `wxhub serve` on a free port: the child, and the address it logged.
#[cfg(unix)]
fn serve_on_a_free_port(config: &std::path::Path) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut child = Command::new(env!("CARGO_BIN_EXE_wxhub"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("WXHUB_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("wxhub starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("wxhub logs its address before exiting")
            .unwrap();
        if let Some(rest) = line.split("address=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, address)
}

#[cfg(unix)]
#[test]
fn sigterm_stops_the_hub_within_its_deadline_despite_half_sent_requests() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wxhub.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\nrequest_timeout = \"1s\"\nheader_read_timeout = \"60s\"\n[store]\nkind = \"memory\"\n",
    )
    .unwrap();
    let (mut child, address) = serve_on_a_free_port(&config);

    let mut partial = Vec::new();
    for _ in 0..5 {
        let mut stream = TcpStream::connect(&address).unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: hub\r\nx-half")
            .unwrap();
        partial.push(stream);
    }
    // Accepted in order: once a later connection is answered, the partial ones are being served.
    let mut probe = TcpStream::connect(&address).unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: hub\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    probe.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: sends SIGTERM to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("wxhub still running 5 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    drop(partial);
}
