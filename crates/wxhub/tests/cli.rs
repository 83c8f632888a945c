//! The command line, run as the real binary: `check-config`, `hash-key`, `new-key`, `serve` and
//! `demo`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wechat_mock::{MockConfig, MockServer};

/// A 32-character key and its SHA-256 (computed independently of the hub).
const KEY: &str = "0123456789abcdef0123456789abcdef";
const KEY_SHA256: &str = "3eb1bd439947eb762998e566ccc2e099c791118b2f40579cc4f7da2b5061b7f9";

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

/// Runs `wxhub args…` with `stdin` as its standard input.
fn wxhub_with_stdin(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wxhub"))
        .args(args)
        .env_remove("WXHUB_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wxhub runs");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin)
        .expect("stdin is written");
    let output = child.wait_with_output().expect("wxhub finishes");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The `key` and `key_sha256` lines that `wxhub new-key` prints.
fn new_key() -> (String, String) {
    let (code, stdout, stderr) = wxhub(&["new-key"]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "two lines on stdout: {stdout:?}");
    let key = lines[0].strip_prefix("key: ").expect("`key: …` first");
    let sha = lines[1]
        .strip_prefix("key_sha256: ")
        .expect("`key_sha256: …` second");
    (key.to_string(), sha.to_string())
}

#[test]
fn hash_key_prints_the_sha256_of_the_key() {
    let (code, stdout, stderr) = wxhub(&["hash-key", KEY]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, format!("{KEY_SHA256}\n"));
}

#[test]
fn hash_key_reads_the_key_from_stdin_without_its_line_break() {
    for input in [format!("{KEY}\n"), format!("{KEY}\r\n"), KEY.to_string()] {
        let (code, stdout, stderr) = wxhub_with_stdin(&["hash-key"], input.as_bytes());
        assert_eq!(code, 0, "{input:?}: {stderr}");
        assert_eq!(stdout, format!("{KEY_SHA256}\n"), "{input:?}");
    }
}

#[test]
fn hash_key_refuses_empty_short_and_unsendable_keys() {
    let short = &KEY[..31];
    let cases: [(&[&str], String, &str); 6] = [
        (&["hash-key"], String::new(), "the key is empty"),
        (&["hash-key"], "\n".into(), "the key is empty"),
        (&["hash-key"], format!("{short}\n"), "31 characters long"),
        (&["hash-key", "abc"], String::new(), "at least 32"),
        (&["hash-key"], format!(" {KEY}\n"), "whitespace"),
        (
            &["hash-key", &format!("{KEY}\u{e9}")],
            String::new(),
            "visible ASCII",
        ),
    ];
    for (args, input, message) in cases {
        let (code, stdout, stderr) = wxhub_with_stdin(args, input.as_bytes());
        assert_eq!(code, 1, "{args:?} {input:?}: {stdout}");
        assert!(
            stdout.is_empty(),
            "{args:?} {input:?}: nothing hashed: {stdout}"
        );
        assert!(
            stderr.starts_with("error: ") && stderr.contains(message),
            "{args:?} {input:?}: {stderr}"
        );
    }
    let (code, _, stderr) = wxhub_with_stdin(&["hash-key"], &[b'k'; 5000]);
    assert_eq!(code, 1);
    assert!(stderr.contains("longer than 4096 bytes"), "{stderr}");
}

#[test]
fn new_key_prints_a_fresh_256_bit_key_and_its_hash() {
    let (key, sha) = new_key();
    assert_eq!(key.len(), 64, "{key}");
    assert!(key
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    let (code, stdout, _) = wxhub_with_stdin(&["hash-key"], format!("{key}\n").as_bytes());
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), sha, "key_sha256 is hash-key of the key");
    let (again, _) = new_key();
    assert_ne!(key, again, "every key is new");
}

/// A `wxhub serve` child process, killed when dropped (also when the test fails).
struct Served {
    child: Child,
    address: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `wxhub serve --config config` and waits for its "wxhub started" log line.
fn serve(config: &std::path::Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wxhub"))
        .args(["--log-format", "json", "serve", "--config"])
        .arg(config)
        .env("WXHUB_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wxhub serve starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keeps draining the log so that the child never blocks on a full pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if event["message"] == "wxhub started" {
                let _ = tx.send(event["address"].as_str().unwrap_or_default().to_string());
            }
        }
    });
    let mut served = Served {
        child,
        address: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let address = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("wxhub serve logs its address");
    served.address = address.parse().expect("a socket address is logged");
    served
}

#[tokio::test]
async fn a_new_key_works_as_printed_for_a_consumer_of_wxhub_serve() {
    let appid = "wxclikey000000001";
    let mock = MockServer::start(
        MockConfig::default().with_app(appid, "cli-secret-value"),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("mock starts");
    let (key, sha) = new_key();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wxhub.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"

[store]
kind = "memory"

[wechat]
api_base = "{base}"
work_api_base = "{base}"

[[apps]]
appid = "{appid}"
secret = "cli-secret-value"

[[consumers]]
name = "orders"
key_sha256 = "{sha}"
apps = ["{appid}"]
scopes = ["read"]
"#,
            base = mock.base_url()
        ),
    )
    .unwrap();
    let hub = serve(&config);
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/apps/{appid}/access_token", hub.address);
    let give_up = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let response = client
            .get(&url)
            .bearer_auth(&key)
            .send()
            .await
            .expect("hub answers");
        let status = response.status().as_u16();
        assert!(
            status == 200 || status == 503,
            "the printed key is accepted: {status}"
        );
        if status == 200 {
            break response.json::<serde_json::Value>().await.expect("JSON");
        }
        assert!(Instant::now() < give_up, "no token within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(answer["access_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));

    // The hash alone is not a key.
    let response = client.get(&url).bearer_auth(&sha).send().await.unwrap();
    assert_eq!(response.status(), 401);
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

    std::fs::write(&config, "[wechat]\ntimeout = \"5 secs\"\n").unwrap();
    let (code, _, stderr) = wxhub(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "{}:2: wechat.timeout: invalid duration \"5 secs\": \"secs\" is not a unit; write \
             \"5s\" (units: h, m, s, ms, right after the number)",
            config.display()
        )),
        "{stderr}"
    );

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

/// A child process killed (and reaped) when dropped, also when the test fails.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(unix)]
#[test]
fn the_demo_starts_without_a_warning() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wxhub"))
        .args(["--log-format", "json", "demo", "--listen", "127.0.0.1:0"])
        .env_remove("WXHUB_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wxhub demo starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut demo = Running(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keeps draining the log so that the child never blocks on a full pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    // Started: the platform's authorizers recovered from the mock's list, both demo corps
    // installed the suite, and every credential fetched (the authorizers' and the corps' last, as
    // they need the component or suite token, which needs the first pushed ticket).
    let refreshed = [
        "authorizer_token/wxd0000000000000d4/wx0000000000000001",
        "authorizer_token/wxd0000000000000d4/wx0000000000000002",
        "authorizer_ticket/wxd0000000000000d4/wx0000000000000001/jsapi",
        "authorizer_ticket/wxd0000000000000d4/wx0000000000000002/jsapi",
        "provider_token/wwd0000000000000f6",
        "auth_corp_ticket/wwd0000000000000e5/wwd000000000000c01/jsapi",
        "auth_corp_ticket/wwd0000000000000e5/wwd000000000000c02/jsapi",
    ];
    let mut log: Vec<serde_json::Value> = Vec::new();
    let started = |log: &[serde_json::Value]| {
        log.iter()
            .any(|e| e["message"] == "authorizers reconciled with WeChat's list")
            && log
                .iter()
                .filter(|e| e["message"] == "a demo corp installed the suite")
                .count()
                == 2
            && refreshed.iter().all(|key| {
                log.iter()
                    .any(|e| e["message"] == "refresh" && e["key"] == *key && e["outcome"] == "ok")
            })
    };
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut settled: Option<Instant> = None;
    loop {
        let now = Instant::now();
        // Once started, a little longer: the verify-ticket watchdog's first look comes 200 ms
        // after the start.
        let until = settled.unwrap_or(give_up).min(give_up);
        if now >= until {
            break;
        }
        match rx.recv_timeout(until - now) {
            Ok(line) => log.push(
                serde_json::from_str(&line).unwrap_or_else(|_| panic!("a JSON log line: {line}")),
            ),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the demo exited: {log:#?}"),
        }
        if settled.is_none() && started(&log) {
            settled = Some(Instant::now() + Duration::from_secs(1));
        }
    }
    assert!(started(&log), "the demo did not finish starting: {log:#?}");
    let warnings: Vec<&serde_json::Value> = log
        .iter()
        .filter(|e| e["level"] != "INFO" && e["level"] != "DEBUG" && e["level"] != "TRACE")
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");

    let pid = i32::try_from(demo.0.id()).unwrap();
    // SAFETY: sends SIGTERM to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = demo.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(15),
            "wxhub demo still running 15 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn check_config_warns_of_a_grant_of_an_app_the_file_lacks_and_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wxhub.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nkind = \"memory\"\n\n[[apps]]\nappid = \"wxinfile000000001\"\nsecret = \"s\"\n\n\
             [[consumers]]\nname = \"shop\"\nkey_sha256 = \"{KEY_SHA256}\"\n\
             apps = [\"wxinfile000000001\", \"wxatruntime000001\"]\nscopes = [\"read\"]\n"
        ),
    )
    .unwrap();
    let (code, _, stderr) = wxhub(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning:")
            && stderr.contains("consumers[0].apps[1]")
            && stderr.contains("wxatruntime000001")
            && stderr.contains("PUT /v1/admin/apps/wxatruntime000001"),
        "{stderr}"
    );
    assert!(!stderr.contains("wxinfile000000001\""), "{stderr}");
    assert!(stderr.contains("configuration is valid"), "{stderr}");
}
