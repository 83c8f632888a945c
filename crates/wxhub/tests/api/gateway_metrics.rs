//! The gateway's metrics, driven by real calls through the gateway listeners (and the main
//! listener's `/v1/…/wechat/…` route) against the mock: each call counted once, by listener and
//! outcome, refusals by reason, WeChat's answers timed, and the bytes held for replays shown per
//! listener while they are held.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

const APP: &str = "wx00000000000000b1";

/// The value of the one series written exactly `series` (name and labels). A series that is
/// missing fails the test: read as 0, a misspelt label or a series that stopped being rendered
/// would pass every check of a count that must not move.
async fn value_of(hub: &TestHub, series: &str) -> u64 {
    let text = hub.metrics().await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in /metrics:\n{text}"))
}

/// `wxhub_gateway_calls_total` of `listener` and `outcome`.
async fn calls(hub: &TestHub, listener: &str, outcome: &str) -> u64 {
    let series =
        format!("wxhub_gateway_calls_total{{listener=\"{listener}\",outcome=\"{outcome}\"}}");
    value_of(hub, &series).await
}

/// `wxhub_gateway_refused_total` of `listener` and `reason`.
async fn refused(hub: &TestHub, listener: &str, reason: &str) -> u64 {
    let series =
        format!("wxhub_gateway_refused_total{{listener=\"{listener}\",reason=\"{reason}\"}}");
    value_of(hub, &series).await
}

/// How many exchanges with WeChat `listener`'s latency histogram counted.
async fn timed(hub: &TestHub, listener: &str) -> u64 {
    let series = format!("wxhub_gateway_upstream_seconds_count{{listener=\"{listener}\"}}");
    value_of(hub, &series).await
}

/// Bytes `listener`'s calls hold for replays now.
async fn held(hub: &TestHub, listener: &str) -> u64 {
    value_of(
        hub,
        &format!("wxhub_gateway_held_bytes{{listener=\"{listener}\"}}"),
    )
    .await
}

/// Every outcome of `listener`, in one list, to assert that a call moved only its own.
async fn outcomes(hub: &TestHub, listener: &str) -> Vec<u64> {
    let mut all = Vec::new();
    for outcome in ["passed", "healed", "unhealed", "answered", "refused"] {
        all.push(calls(hub, listener, outcome).await);
    }
    all
}

/// `before` with `by` added to the count of `outcome`.
fn plus(before: &[u64], outcome: &str, by: u64) -> Vec<u64> {
    let at = ["passed", "healed", "unhealed", "answered", "refused"]
        .iter()
        .position(|o| *o == outcome)
        .expect("a known outcome");
    let mut after = before.to_vec();
    after[at] += by;
    after
}

/// `GET url` through the gateway, as JSON.
async fn get_json(hub: &TestHub, url: &str) -> Value {
    hub.client
        .get(url)
        .send()
        .await
        .expect("an answer")
        .json()
        .await
        .expect("JSON")
}

#[tokio::test]
async fn each_gateway_call_is_counted_once_by_listener_and_outcome() {
    let (mock, hub) = quick_hub(APP).await;
    let token = hub.token(APP).await.access_token;
    let call = |token: &str| {
        format!(
            "{}/cgi-bin/get_api_domain_ip?access_token={token}",
            hub.gateway
        )
    };

    // Passed: forwarded, WeChat's answer as it came, one exchange timed.
    let before = outcomes(&hub, "official").await;
    let exchanges = timed(&hub, "official").await;
    let body = get_json(&hub, &call(&token)).await;
    assert!(body["ip_list"].is_array(), "{body}");
    assert_eq!(outcomes(&hub, "official").await, plus(&before, "passed", 1));
    assert_eq!(timed(&hub, "official").await, exchanges + 1);

    // Refused: a token the hub never served, answered by the gateway, nothing sent to WeChat.
    let before = outcomes(&hub, "official").await;
    let body = get_json(&hub, &call("never-served")).await;
    assert_eq!(body["errcode"], 40014, "{body}");
    assert_eq!(
        outcomes(&hub, "official").await,
        plus(&before, "refused", 1)
    );
    assert_eq!(refused(&hub, "official", "token_unknown").await, 1);
    assert_eq!(timed(&hub, "official").await, exchanges + 1);

    // Healed: the token dies behind the hub's back; the call is refused by WeChat, the token
    // replaced, and the call replayed: two exchanges, one call.
    killed_behind_the_hubs_back(&mock, APP, &token).await;
    let before = outcomes(&hub, "official").await;
    let body = get_json(&hub, &call(&token)).await;
    assert!(body["ip_list"].is_array(), "{body}");
    assert_ne!(hub.token(APP).await.access_token, token);
    assert_eq!(outcomes(&hub, "official").await, plus(&before, "healed", 1));
    assert_eq!(timed(&hub, "official").await, exchanges + 3);

    // Unhealed: WeChat refuses a token that is alive (for its own reasons); the hub's check finds
    // it alive, so WeChat's answer stands and nothing is replayed: one exchange.
    let token = hub.token(APP).await.access_token;
    mock.add_fault(wechat_mock::FaultRule {
        path: "/cgi-bin/getcallbackip".into(),
        errcode: Some(40001),
        count: Some(1),
        ..Default::default()
    });
    let before = outcomes(&hub, "official").await;
    let body = get_json(
        &hub,
        &format!("{}/cgi-bin/getcallbackip?access_token={token}", hub.gateway),
    )
    .await;
    assert_eq!(body["errcode"], 40001, "WeChat's answer stands: {body}");
    assert_eq!(
        outcomes(&hub, "official").await,
        plus(&before, "unhealed", 1)
    );
    assert_eq!(hub.token(APP).await.access_token, token, "not refreshed");
    assert_eq!(timed(&hub, "official").await, exchanges + 4);

    // Answered: the hub's own token endpoint, nothing sent to WeChat.
    let before = outcomes(&hub, "official").await;
    let body = get_json(
        &hub,
        &format!(
            "{}/cgi-bin/token?grant_type=client_credential&appid={APP}&secret={ADMIN_KEY}",
            hub.gateway
        ),
    )
    .await;
    assert!(body["access_token"].is_string(), "{body}");
    assert_eq!(
        outcomes(&hub, "official").await,
        plus(&before, "answered", 1)
    );
    assert_eq!(timed(&hub, "official").await, exchanges + 4);

    // Each listener counts its own calls: Work WeChat's, and the main listener's call route.
    let work = outcomes(&hub, "work").await;
    let body = get_json(
        &hub,
        &format!(
            "{}/cgi-bin/gettoken?corpid=ww00000000000000c9&corpsecret=x",
            hub.work_gateway
        ),
    )
    .await;
    assert!(body["errcode"].as_i64().is_some_and(|c| c != 0), "{body}");
    assert_eq!(outcomes(&hub, "work").await, plus(&work, "answered", 1));
    let api = outcomes(&hub, "api").await;
    let body: Value = hub
        .get(&format!("/v1/apps/{APP}/wechat/cgi-bin/get_api_domain_ip"))
        .await
        .json()
        .await
        .unwrap();
    assert!(body["ip_list"].is_array(), "{body}");
    assert_eq!(outcomes(&hub, "api").await, plus(&api, "passed", 1));
    assert_eq!(timed(&hub, "api").await, 1);
    // None of it was counted twice, or for another listener.
    assert_eq!(timed(&hub, "official").await, exchanges + 4);
    assert_eq!(timed(&hub, "work").await, 0);

    // The histogram's buckets are cumulative and end at its count.
    let text = hub.metrics().await;
    let inf = text
        .lines()
        .find(|l| {
            l.starts_with(
                "wxhub_gateway_upstream_seconds_bucket{listener=\"official\",le=\"+Inf\"}",
            )
        })
        .expect("the +Inf bucket");
    assert!(inf.ends_with(&format!(" {}", exchanges + 4)), "{inf}");
    // No label carries a token.
    for line in text.lines().filter(|l| l.starts_with("wxhub_gateway_")) {
        assert!(!line.contains(&token), "{line}");
    }
    hub.stop().await;
}

#[tokio::test]
async fn refusals_are_counted_by_reason() {
    let (_mock, hub) = quick_hub_with(APP, |mut options| {
        options.gateway.max_body = 1024;
        options
    })
    .await;
    let token = hub.token(APP).await.access_token;

    // A body over max_body: 413.
    let response = hub
        .client
        .post(format!(
            "{}/cgi-bin/menu/create?access_token={token}",
            hub.gateway
        ))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // Each refused before WeChat, with WeChat's errcode for it:
    let refusals = [
        // a path written another way than the hub matches it, nothing answered or forwarded;
        (
            format!("/cgi-bin/Token?grant_type=client_credential&appid={APP}&secret={ADMIN_KEY}"),
            40097,
        ),
        // two token parameters;
        (
            format!("/cgi-bin/get_api_domain_ip?access_token={token}&access_token={token}"),
            40097,
        ),
        // the AppSecret path with a key not granted: nothing forwarded;
        (
            format!("/sns/jscode2session?appid={APP}&secret=wrong&js_code=c&grant_type=authorization_code"),
            40125,
        ),
        // a ticket asked with a token the hub never served.
        (
            "/cgi-bin/ticket/getticket?access_token=never-served&type=jsapi".to_string(),
            40014,
        ),
    ];
    for (path, errcode) in &refusals {
        let body = get_json(&hub, &format!("{}{path}", hub.gateway)).await;
        assert_eq!(body["errcode"], *errcode, "{path}: {body}");
    }

    for reason in [
        "path_not_canonical",
        "token_ambiguous",
        "body_too_large",
        "secret_refused",
        "token_unknown",
    ] {
        assert_eq!(refused(&hub, "official", reason).await, 1, "{reason}");
    }
    for reason in ["body_unreadable", "upstream_unreachable", "internal"] {
        assert_eq!(refused(&hub, "official", reason).await, 0, "{reason}");
    }
    assert_eq!(
        outcomes(&hub, "official").await,
        [0, 0, 0, 0, 5],
        "refused, and nothing else"
    );
    // None of these reached WeChat.
    assert_eq!(timed(&hub, "official").await, 0);
    hub.stop().await;
}

#[tokio::test]
async fn bytes_held_for_replays_are_shown_per_listener_while_held() {
    use tokio::io::AsyncWriteExt;
    let apps = [TestApp::legacy(APP)];
    let mock = minute_mock(&apps).await;
    let hub = spawn_app(&mock, HubOptions::new(&apps)).await;
    hub.wait_ready().await;
    let token = hub.token(APP).await.access_token;
    let held = |listener: &'static str| held(&hub, listener);
    assert_eq!(held("official").await, 0);

    // A call that may need a replay, its 1000-byte body declared and never finished.
    let address = hub.gateway.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /cgi-bin/getcallbackip?access_token={token} HTTP/1.1\r\nhost: gw\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    wait_until(Duration::from_secs(5), "the body is held", || async {
        held("official").await == 1000
    })
    .await;
    // The listener's share is the process's total, and no other listener's.
    assert_eq!(value_of(&hub, "wxhub_gateway_replay_bytes").await, 1000);
    assert_eq!(held("work").await, 0);
    assert_eq!(held("api").await, 0);
    // The client goes: its share is given back.
    drop(stream);
    wait_until(Duration::from_secs(5), "nothing held", || async {
        held("official").await == 0
    })
    .await;

    // A body of undeclared length is counted as it comes, chunk by chunk.
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /cgi-bin/getcallbackip?access_token={token} HTTP/1.1\r\nhost: gw\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
         64\r\n{}\r\n",
        "x".repeat(100)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    wait_until(
        Duration::from_secs(5),
        "the first chunk is held",
        || async { held("official").await == 100 },
    )
    .await;
    drop(stream);
    wait_until(Duration::from_secs(5), "nothing held", || async {
        held("official").await == 0
    })
    .await;
    hub.stop().await;
}
