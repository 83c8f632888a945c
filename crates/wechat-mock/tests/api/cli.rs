//! The `wechat-mock` binary: argument errors and a real run.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::platform::*;

const BIN: &str = env!("CARGO_BIN_EXE_wechat-mock");

#[test]
fn malformed_accounts_exit_with_2_and_say_why() {
    for args in [
        &["--listen", "127.0.0.1:0", "--app", "wxnocolon"][..],
        &["--listen", "127.0.0.1:0", "--corp", "ww1:1000002"][..],
        &["--listen", "nowhere"][..],
        &["--listen", "127.0.0.1:0", "--lifetime", "0"][..],
        &["--listen", "127.0.0.1:0", "--component", "wxc:secret:token"][..],
        &[
            "--listen",
            "127.0.0.1:0",
            "--component",
            "wxc:secret:token:tooshort",
        ][..],
        &["--listen", "127.0.0.1:0", "--push-interval", "0"][..],
        &["--listen", "127.0.0.1:0", "--authorizers", "-1"][..],
        &["--listen", "127.0.0.1:0", "--suite", "wws:secret:token"][..],
        &["--listen", "127.0.0.1:0", "--provider", "wwp"][..],
        &["--listen", "127.0.0.1:0", "--suite-ticket-interval", "0"][..],
        &["--listen", "127.0.0.1:0", "--auth-corps", "-1"][..],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("error"), "{stderr}");
    }
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--app", "wxnocolon"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("APPID:SECRET"));
    // The error names the problem without repeating the secret.
    let out = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--component",
            "wxc:topsecret:token:tooshort",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("EncodingAESKey"), "{stderr}");
    assert!(!stderr.contains("topsecret"), "{stderr}");
    for (flag, value) in [
        ("--suite", "wws:topsecret:token:tooshort"),
        ("--provider", "wwp:"),
        ("--provider", ":topsecret"),
    ] {
        let out = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", flag, value])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{stderr}");
        assert!(!stderr.contains("topsecret"), "{stderr}");
    }
}

#[tokio::test]
async fn the_binary_pushes_suite_tickets_and_serves_installed_corps() {
    use crate::suite_receiver::*;

    let receiver = SuiteReceiver::start().await;
    let suite = format!("{SUITE}:{SUITE_SECRET}:{SUITE_TOKEN}:{SUITE_KEY}");
    let provider = format!("{PROVIDER}:{PROVIDER_SECRET}");
    let mut child = Child(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--lifetime", "20"])
            .args(["--suite", &suite, "--provider", &provider])
            .args(["--suite-push-url", &receiver.push_url()])
            .args(["--suite-ticket-interval", "1", "--auth-corps", "2"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = address_of(&mut child).await;
    // A ticket at start and another a second later.
    receiver.next_ticket(SUITE).await;
    let ticket = receiver.next_ticket(SUITE).await;
    let client = reqwest::Client::new();
    let call = |request: reqwest::RequestBuilder| async move {
        request
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let token = call(client.post(format!("{base}/cgi-bin/service/get_suite_token")).json(
        &serde_json::json!({"suite_id": SUITE, "suite_secret": SUITE_SECRET, "suite_ticket": ticket}),
    ))
    .await;
    assert_eq!(token["expires_in"], 20, "{token}");
    let token = token["suite_access_token"].as_str().unwrap().to_owned();
    let listed = call(client.get(format!("{base}/mock/suites/{SUITE}/installations"))).await;
    assert_eq!(listed["total"], 2, "{listed}");
    let corp = &listed["installations"][0];
    assert_eq!(corp["corpid"], wechat_mock::auth_corpid(0, 1));
    let corp_token = call(
        client
            .post(format!(
                "{base}/cgi-bin/service/get_corp_token?suite_access_token={token}"
            ))
            .json(&serde_json::json!({"auth_corpid": corp["corpid"], "permanent_code": corp["permanent_code"]})),
    )
    .await;
    assert_eq!(corp_token["expires_in"], 20, "{corp_token}");
    let provider_token = call(
        client
            .post(format!("{base}/cgi-bin/service/get_provider_token"))
            .json(&serde_json::json!({"corpid": PROVIDER, "provider_secret": PROVIDER_SECRET})),
    )
    .await;
    assert!(
        provider_token["provider_access_token"].is_string(),
        "{provider_token}"
    );
    let stats: wechat_mock::MockStats = client
        .get(format!("{base}/mock/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let s = stats.suite(SUITE);
    assert!(s.pushes("suite_ticket").acknowledged >= 2);
    assert_eq!((s.installed, s.corp_tokens_issued), (2, 1));
    assert_eq!(stats.provider_tokens(PROVIDER), 1);
}

#[tokio::test]
async fn the_binary_pushes_tickets_and_serves_a_platform() {
    let receiver = Receiver::start().await;
    let component = format!("{COMPONENT}:{COMPONENT_SECRET}:{COMPONENT_TOKEN}:{COMPONENT_KEY}");
    let mut child = Child(
        Command::new(BIN)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--lifetime",
                "20",
                "--grace",
                "1",
            ])
            .args([
                "--component",
                &component,
                "--push-url",
                &receiver.push_url(),
            ])
            .args([
                "--push-interval",
                "1",
                "--authorizers",
                "3",
                "--rotate-refresh-tokens",
            ])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = address_of(&mut child).await;
    // A ticket at start and another a second later.
    receiver.next("component_verify_ticket").await;
    let ticket = receiver.next("component_verify_ticket").await;
    let client = reqwest::Client::new();
    let post = |path: String, body: serde_json::Value| {
        let request = client.post(format!("{base}{path}")).json(&body);
        async move {
            request
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let token = post(
        "/cgi-bin/component/api_component_token".into(),
        serde_json::json!({"component_appid": COMPONENT, "component_appsecret": COMPONENT_SECRET,
                           "component_verify_ticket": ticket.get("ComponentVerifyTicket")}),
    )
    .await;
    assert_eq!(token["expires_in"], 20, "{token}");
    let token = token["component_access_token"].as_str().unwrap().to_owned();
    let listed = post(
        format!("/cgi-bin/component/api_get_authorizer_list?access_token={token}"),
        serde_json::json!({"component_appid": COMPONENT, "count": 500}),
    )
    .await;
    assert_eq!(listed["total_count"], 3, "{listed}");
    let first = &listed["list"][0];
    assert_eq!(
        first["authorizer_appid"],
        wechat_mock::authorizer_appid(0, 1)
    );
    let refreshed = post(
        format!("/cgi-bin/component/api_authorizer_token?component_access_token={token}"),
        serde_json::json!({"component_appid": COMPONENT, "authorizer_appid": first["authorizer_appid"],
                           "authorizer_refresh_token": first["refresh_token"]}),
    )
    .await;
    assert_ne!(
        refreshed["authorizer_refresh_token"], first["refresh_token"],
        "--rotate-refresh-tokens: {refreshed}"
    );
    let stats: wechat_mock::MockStats = client
        .get(format!("{base}/mock/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let c = stats.component(COMPONENT);
    assert!(c.pushes("component_verify_ticket").acknowledged >= 2);
    assert_eq!(c.refresh_tokens_rotated, 1);
    assert_eq!(c.authorizers, 3);
}

/// The address the binary bound, from its log line "listening on http://IP:PORT".
async fn address_of(child: &mut Child) -> String {
    let stdout = child.0.stdout.take().unwrap();
    let (found, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let url = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let _ = found.send(url);
            }
        }
    });
    tokio::task::spawn_blocking(move || address.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the binary logs its address")
}

/// Kills the child when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_serves_the_configured_accounts() {
    let dir = std::env::temp_dir().join(format!("wechat-mock-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let apps_file = dir.join("apps.txt");
    std::fs::write(&apps_file, "# more accounts\nwxf1:sF1\nwxf2:sF2\n").unwrap();
    let mut child = Child(
        Command::new(BIN)
            .arg("--apps-file")
            .arg(&apps_file)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--lifetime",
                "20",
                "--daily-quota",
                "1",
                "--app",
                "wxa:sA",
                "--corp",
                "ww1:1000002:cs",
            ])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = address_of(&mut child).await;
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let client = reqwest::Client::new();
    let token_url =
        format!("{base}/cgi-bin/token?grant_type=client_credential&appid=wxa&secret=sA");
    let first: serde_json::Value = client
        .get(&token_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["expires_in"], 20);
    let second: serde_json::Value = client
        .get(&token_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["errcode"], 45009, "--daily-quota 1");
    let corp: serde_json::Value = client
        .get(format!("{base}/cgi-bin/gettoken?corpid=ww1&corpsecret=cs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(corp["errcode"], 0);
    let stats: wechat_mock::MockStats = client
        .get(format!("{base}/mock/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.calls("/cgi-bin/token", "wxa"), 2);
    assert_eq!(stats.issued("/cgi-bin/gettoken", "ww1/1000002"), 1);
    // Requests are answered one after the other: never more than one in flight.
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.max_in_flight, 1);

    // Accounts from --apps-file are known alongside --app ones.
    let listed: serde_json::Value = client
        .get(format!(
            "{base}/cgi-bin/token?grant_type=client_credential&appid=wxf2&secret=sF2"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["expires_in"], 20, "{listed}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_malformed_apps_file_exits_with_2_and_names_the_line() {
    let dir = std::env::temp_dir().join(format!("wechat-mock-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("apps.txt");
    std::fs::write(&file, "# accounts\nwxa:sA\nwxnocolon\n").unwrap();
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--apps-file"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 3"), "{stderr}");
    let missing = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--apps-file",
            "/nonexistent/apps.txt",
        ])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}
