//! The `wechat-mock` binary: argument errors and a real run.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_wechat-mock");

#[test]
fn malformed_accounts_exit_with_2_and_say_why() {
    for args in [
        &["--listen", "127.0.0.1:0", "--app", "wxnocolon"][..],
        &["--listen", "127.0.0.1:0", "--corp", "ww1:1000002"][..],
        &["--listen", "nowhere"][..],
        &["--listen", "127.0.0.1:0", "--lifetime", "0"][..],
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _child = Child(
        Command::new(BIN)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--lifetime",
                "20",
                "--daily-quota",
                "1",
                "--app",
                "wxa:sA",
                "--corp",
                "ww1:1000002:cs",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{base}/mock/stats")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the binary did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
}
