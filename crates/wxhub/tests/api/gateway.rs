//! The gateway: WeChat's own API shape, answered by the hub for tokens and passed through (with
//! dead tokens healed) for everything else. Every answer the hub gives in WeChat's place is
//! compared with what the mock (a faithful WeChat) answers to the same mistake.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

const APP: &str = "wx00000000000000a1";
const OTHER: &str = "wx00000000000000a2";

/// The part of a WeChat errmsg before its per-request suffix.
fn text_of(body: &Value) -> String {
    let errmsg = body["errmsg"].as_str().unwrap_or_default();
    let end = [" rid:", ", hint:", ", could get"]
        .iter()
        .filter_map(|s| errmsg.find(s))
        .min()
        .unwrap_or(errmsg.len());
    errmsg[..end].to_string()
}

async fn get_json(client: &reqwest::Client, url: &str) -> (reqwest::StatusCode, Value, String) {
    let response = client.get(url).send().await.expect("answer");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, response.json().await.expect("JSON"), content_type)
}

/// Asserts that the gateway and the mock answer `path_and_query` alike (status, errcode, text).
async fn same_answer(
    hub: &TestHub,
    mock: &wechat_mock::MockServer,
    gateway_pq: &str,
    mock_pq: &str,
) -> i64 {
    let (gs, gateway, content_type) =
        get_json(&hub.client, &format!("{}{gateway_pq}", hub.gateway)).await;
    let (ms, wechat, _) = get_json(&hub.client, &format!("{}{mock_pq}", mock.base_url())).await;
    assert_eq!(gs, ms, "{gateway_pq}");
    assert_eq!(
        gateway["errcode"], wechat["errcode"],
        "{gateway_pq}: {gateway} vs {wechat}"
    );
    assert_eq!(text_of(&gateway), text_of(&wechat), "{gateway_pq}");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    gateway["errcode"].as_i64().unwrap_or(0)
}

#[tokio::test]
async fn the_token_endpoint_serves_the_hubs_token_and_refuses_like_wechat() {
    let (mock, hub) = start_ready(&[TestApp::stable(APP), TestApp::stable(OTHER)]).await;
    let issued = stats(&mock).issued("/cgi-bin/stable_token", APP);
    let served = hub.token(APP).await;

    let url = format!(
        "{}/cgi-bin/token?grant_type=client_credential&appid={APP}&secret={ADMIN_KEY}",
        hub.gateway
    );
    let (status, body, content_type) = get_json(&hub.client, &url).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/json"));
    assert_eq!(body["access_token"], served.access_token.as_str());
    assert!(body["expires_in"].as_u64().unwrap() > 0, "{body}");
    assert!(body.get("errcode").is_none(), "{body}");

    let real = secret_of(APP);
    let token = |appid: &str, secret: &str| {
        format!("/cgi-bin/token?grant_type=client_credential&appid={appid}&secret={secret}")
    };
    for (gateway_pq, mock_pq, expected) in [
        // Wrong key: 40125, as WeChat answers a wrong AppSecret.
        (token(APP, "wrong"), token(APP, "wrong"), 40125),
        // A consumer not granted the app: 40125 too.
        (token(OTHER, READER_KEY), token(OTHER, "wrong"), 40125),
        // A consumer without `read` (a reporter): 40125.
        (token(APP, REPORTER_KEY), token(APP, "wrong"), 40125),
        // Unknown appid, bad grant type, missing parameters.
        (token("wxnope", ADMIN_KEY), token("wxnope", "x"), 40013),
        (
            format!("/cgi-bin/token?grant_type=password&appid={APP}&secret={ADMIN_KEY}"),
            format!("/cgi-bin/token?grant_type=password&appid={APP}&secret={real}"),
            40002,
        ),
        (
            format!("/cgi-bin/token?grant_type=client_credential&secret={ADMIN_KEY}"),
            format!("/cgi-bin/token?grant_type=client_credential&secret={real}"),
            41002,
        ),
        (
            format!("/cgi-bin/token?grant_type=client_credential&appid={APP}"),
            format!("/cgi-bin/token?grant_type=client_credential&appid={APP}"),
            41004,
        ),
    ] {
        assert_eq!(
            same_answer(&hub, &mock, &gateway_pq, &mock_pq).await,
            expected,
            "{gateway_pq}"
        );
    }
    // GET on stable_token: 43002, as WeChat.
    assert_eq!(
        same_answer(
            &hub,
            &mock,
            "/cgi-bin/stable_token",
            "/cgi-bin/stable_token"
        )
        .await,
        43002
    );
    // A form body: no JSON fields, so "appid missing".
    let form = format!("grant_type=client_credential&appid={APP}&secret={ADMIN_KEY}");
    let mut answers = Vec::new();
    for base in [&hub.gateway, &mock.base_url()] {
        let body: Value = hub
            .client
            .post(format!("{base}/cgi-bin/stable_token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.clone())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answers.push(body);
    }
    assert_eq!(answers[0]["errcode"], 41002, "{}", answers[0]);
    assert_eq!(answers[0]["errcode"], answers[1]["errcode"]);
    assert_eq!(text_of(&answers[0]), text_of(&answers[1]));

    // stable_token with the key answers the hub's token.
    let body: Value = hub
        .client
        .post(format!("{}/cgi-bin/stable_token", hub.gateway))
        .json(&json!({"grant_type": "client_credential", "appid": APP, "secret": ADMIN_KEY}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["access_token"], served.access_token.as_str());
    // None of this made WeChat issue a token.
    assert_eq!(stats(&mock).issued("/cgi-bin/stable_token", APP), issued);
    hub.stop().await;
}

#[tokio::test]
async fn a_token_the_hub_never_served_is_refused_and_not_forwarded() {
    let (mock, hub) = start_ready(&[TestApp::stable(APP)]).await;
    let code = same_answer(
        &hub,
        &mock,
        "/cgi-bin/get_api_domain_ip?access_token=never-served",
        "/cgi-bin/get_api_domain_ip?access_token=never-served",
    )
    .await;
    assert_eq!(code, 40014);
    // Only the mock's own call above reached it.
    assert_eq!(stats(&mock).total_calls("/cgi-bin/get_api_domain_ip"), 1);

    // The hub's token passes through, and the answer is WeChat's.
    let token = hub.token(APP).await.access_token;
    let (status, body, _) = get_json(
        &hub.client,
        &format!(
            "{}/cgi-bin/get_api_domain_ip?access_token={token}",
            hub.gateway
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body["ip_list"].is_array(), "{body}");
    assert_eq!(stats(&mock).business(APP, 0), 1);
    hub.stop().await;
}

#[tokio::test]
async fn two_hundred_calls_with_a_killed_token_all_succeed_after_one_refresh() {
    let (mock, hub) = quick_hub(APP).await;
    let old = hub.token(APP).await.access_token;
    // Another party fetches a token straight from WeChat: the hub's dies after the overlap.
    killed_behind_the_hubs_back(&mock, APP, &old).await;
    let client = reqwest::Client::new();
    let issued = stats(&mock).issued("/cgi-bin/token", APP);

    let url = format!(
        "{}/cgi-bin/get_api_domain_ip?access_token={old}",
        hub.gateway
    );
    let calls = (0..200).map(|_| {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let body: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            body
        })
    });
    let answers = futures_util::future::join_all(calls).await;
    for answer in answers {
        let body = answer.unwrap();
        assert!(body["ip_list"].is_array(), "{body}");
    }
    assert_eq!(stats(&mock).issued("/cgi-bin/token", APP), issued + 1);
    let new = hub.token(APP).await.access_token;
    assert_ne!(new, old);
    hub.stop().await;
}

#[tokio::test]
async fn jscode2session_carries_the_real_secret_for_a_granted_consumer_only() {
    let (mock, hub) = start_ready(&[TestApp::stable(APP), TestApp::stable(OTHER)]).await;
    let path = "/sns/jscode2session";
    let (status, body, _) = get_json(
        &hub.client,
        &format!(
            "{}{path}?appid={APP}&secret={READER_KEY}&js_code=c1&grant_type=authorization_code",
            hub.gateway
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["openid"], "openid-of-c1", "{body}");
    assert_eq!(stats(&mock).outcome(path, 0), 1);

    // The reader is not granted OTHER: refused as WeChat refuses a wrong secret, nothing sent.
    let code = same_answer(
        &hub,
        &mock,
        &format!(
            "{path}?appid={OTHER}&secret={READER_KEY}&js_code=c2&grant_type=authorization_code"
        ),
        &format!("{path}?appid={OTHER}&secret=wrong&js_code=c2&grant_type=authorization_code"),
    )
    .await;
    assert_eq!(code, 40125);
    // The mock saw the successful call and its own comparison call only.
    assert_eq!(stats(&mock).total_calls(path), 2);
    hub.stop().await;
}

#[tokio::test]
async fn tickets_are_answered_from_the_hub_for_its_token() {
    let apps = [TestApp::stable(APP).with_tickets(&[wxhub::token::TicketKind::Jsapi])];
    let (mock, hub) = start_ready(&apps).await;
    let token = hub.token(APP).await.access_token;
    let ticket = hub.token_at(&format!("/v1/apps/{APP}/tickets/jsapi")).await;
    let calls = stats(&mock).total_calls("/cgi-bin/ticket/getticket");
    let (_, body, _) = get_json(
        &hub.client,
        &format!(
            "{}/cgi-bin/ticket/getticket?access_token={token}&type=jsapi",
            hub.gateway
        ),
    )
    .await;
    assert_eq!(body["errcode"], 0);
    assert_eq!(body["ticket"], ticket.access_token.as_str());
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    assert_eq!(stats(&mock).total_calls("/cgi-bin/ticket/getticket"), calls);
    hub.stop().await;
}

#[tokio::test]
async fn work_gettoken_takes_a_key_granted_one_agent() {
    let corp = TestCorp {
        corpid: "ww00000000000000c1".into(),
        agentid: "1000002".into(),
        tickets: vec![],
    };
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_secs(5),
        &[],
        std::slice::from_ref(&corp),
        |c| c,
    )
    .await;
    let hub = spawn_app(
        &mock,
        HubOptions::new(&[]).with_corps(std::slice::from_ref(&corp)),
    )
    .await;
    hub.wait_ready().await;
    let served = hub
        .token_at("/v1/corps/ww00000000000000c1/agents/1000002/access_token")
        .await;
    for secret in [ADMIN_KEY.to_string(), format!("1000002:{ADMIN_KEY}")] {
        let (_, body, _) = get_json(
            &hub.client,
            &format!(
                "{}/cgi-bin/gettoken?corpid=ww00000000000000c1&corpsecret={secret}",
                hub.work_gateway
            ),
        )
        .await;
        assert_eq!(body["errcode"], 0, "{body}");
        assert_eq!(body["access_token"], served.access_token.as_str());
    }
    // A wrong key: WeChat's 40001 for an unknown corpsecret.
    let (_, gateway, _) = get_json(
        &hub.client,
        &format!(
            "{}/cgi-bin/gettoken?corpid=ww00000000000000c1&corpsecret=wrong",
            hub.work_gateway
        ),
    )
    .await;
    let (_, wechat, _) = get_json(
        &hub.client,
        &format!(
            "{}/cgi-bin/gettoken?corpid=ww00000000000000c1&corpsecret=wrong",
            mock.base_url()
        ),
    )
    .await;
    assert_eq!(gateway["errcode"], 40001);
    assert_eq!(gateway["errcode"], wechat["errcode"]);
    assert_eq!(text_of(&gateway), text_of(&wechat));
    hub.stop().await;
}

#[tokio::test]
async fn token_less_calls_inject_the_token_and_heal_a_dead_one() {
    let (mock, hub) = quick_hub(APP).await;
    let path = format!("/v1/apps/{APP}/wechat/cgi-bin/get_api_domain_ip");
    let body: Value = hub.get(&path).await.json().await.unwrap();
    assert!(body["ip_list"].is_array(), "{body}");

    // Without the `call` scope: 403, nothing forwarded.
    let calls = stats(&mock).total_calls("/cgi-bin/get_api_domain_ip");
    let refused = hub
        .client
        .get(hub.url(&path))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(
        stats(&mock).total_calls("/cgi-bin/get_api_domain_ip"),
        calls
    );

    // The token dies behind the hub's back: the call still succeeds, after one refresh.
    let old = hub.token(APP).await.access_token;
    killed_behind_the_hubs_back(&mock, APP, &old).await;
    let issued = stats(&mock).issued("/cgi-bin/token", APP);
    let body: Value = hub.get(&path).await.json().await.unwrap();
    assert!(body["ip_list"].is_array(), "{body}");
    assert_eq!(stats(&mock).issued("/cgi-bin/token", APP), issued + 1);
    hub.stop().await;
}

/// Invalidation reports the hub has handled, all outcomes.
async fn invalidations(hub: &TestHub) -> u64 {
    hub.metric_sum("wxhub_invalidations_total{").await
}

#[tokio::test]
async fn stable_token_force_refresh_is_a_report_of_the_current_token_not_a_force() {
    let (mock, hub) = start_ready(&[TestApp::stable(APP)]).await;
    let before = invalidations(&hub).await;
    let body: Value = hub
        .client
        .post(format!("{}/cgi-bin/stable_token", hub.gateway))
        .json(&json!({
            "grant_type": "client_credential",
            "appid": APP,
            "secret": ADMIN_KEY,
            "force_refresh": true
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body["access_token"].is_string(), "{body}");
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    // It went through the hub's compare-and-refresh (one report), and the token answered is the
    // one the hub serves afterwards.
    assert_eq!(invalidations(&hub).await, before + 1);
    assert_eq!(
        body["access_token"],
        hub.token(APP).await.access_token.as_str()
    );
    // A force_refresh that is not a boolean: WeChat's 47001, nothing reported.
    let body: Value = hub
        .client
        .post(format!("{}/cgi-bin/stable_token", hub.gateway))
        .json(&json!({"grant_type": "client_credential", "appid": APP, "secret": ADMIN_KEY, "force_refresh": "yes"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["errcode"], 47001, "{body}");
    assert_eq!(invalidations(&hub).await, before + 1);
    drop(mock);
    hub.stop().await;
}

#[tokio::test]
async fn a_refusal_for_another_reason_never_costs_a_refresh() {
    let (mock, hub) = quick_hub(APP).await;
    let token = hub.token(APP).await.access_token;
    let issued = stats(&mock).issued("/cgi-bin/token", APP);
    let business = stats(&mock).total_calls("/cgi-bin/getcallbackip");
    let call = |query: String| {
        let url = format!("{}/cgi-bin/getcallbackip?{query}", hub.gateway);
        let client = hub.client.clone();
        async move {
            let response = client.get(url).send().await.expect("an answer");
            (
                response.status(),
                response.json::<Value>().await.expect("JSON"),
            )
        }
    };

    // Two token parameters: which one WeChat reads cannot be told. Refused, never forwarded.
    for query in [
        format!("access_token={token}&access_token={token}"),
        format!("access_token={token}&component_access_token=bogus"),
    ] {
        let (status, body) = call(query.clone()).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["errcode"], 40097, "{query}: {body}");
    }
    assert_eq!(stats(&mock).total_calls("/cgi-bin/getcallbackip"), business);

    // WeChat refuses a live token with a dead-token errcode for its own reasons (as it does for
    // a token of the wrong kind for the endpoint): the hub checks before it refreshes.
    mock.add_fault(wechat_mock::FaultRule {
        path: "/cgi-bin/getcallbackip".into(),
        account: None,
        errcode: Some(40001),
        errmsg: None,
        http_status: None,
        probability: None,
        count: None,
        delay_ms: None,
        hold_answer_ms: None,
        drop_connection: false,
    });
    for _ in 0..5 {
        let (status, body) = call(format!("access_token={token}")).await;
        assert_eq!(status, 200);
        assert_eq!(body["errcode"], 40001, "WeChat's answer stands: {body}");
    }
    assert_eq!(stats(&mock).issued("/cgi-bin/token", APP), issued);
    assert_eq!(hub.token(APP).await.access_token, token);
    hub.stop().await;
}

#[tokio::test]
async fn bodies_held_for_replays_share_one_bounded_budget() {
    use tokio::io::AsyncWriteExt;
    const MIB: usize = 1024 * 1024;
    let apps = [TestApp::legacy(APP)];
    let mock = minute_mock(&apps).await;
    let mut options = HubOptions::new(&apps);
    options.gateway.max_body = MIB;
    options.gateway.replay_memory = MIB + MIB / 2;
    let hub = spawn_app(&mock, options).await;
    hub.wait_ready().await;
    let token = hub.token(APP).await.access_token;
    let held = || async { hub.metric_sum("wxhub_gateway_replay_bytes").await };
    assert_eq!(held().await, 0);

    // Three calls that may need a replay, each with a 1 MiB body that never finishes arriving.
    let address = hub.gateway.trim_start_matches("http://").to_string();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST /cgi-bin/getcallbackip?access_token={token} HTTP/1.1\r\nhost: gw\r\n\
             content-type: application/json\r\ncontent-length: {MIB}\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        streams.push(stream);
    }
    // One fits the budget and is held; the other two go streamed, without holding anything.
    wait_until(Duration::from_secs(5), "one body held", || async {
        held().await == MIB as u64
    })
    .await;
    // Gone clients give their share back.
    drop(streams);
    wait_until(Duration::from_secs(5), "nothing held", || async {
        held().await == 0
    })
    .await;
    hub.stop().await;
}

#[tokio::test]
async fn a_body_without_a_declared_length_holds_what_it_sent_not_max_body() {
    use tokio::io::AsyncWriteExt;
    const MIB: usize = 1024 * 1024;
    let apps = [TestApp::legacy(APP)];
    let mock = minute_mock(&apps).await;
    let mut options = HubOptions::new(&apps);
    options.gateway.max_body = MIB;
    options.gateway.replay_memory = MIB + MIB / 2;
    let hub = spawn_app(&mock, options).await;
    hub.wait_ready().await;
    let token = hub.token(APP).await.access_token;
    let held = || async { hub.metric_sum("wxhub_gateway_replay_bytes").await };

    // Three calls that may need a replay, each chunked, with 1 KiB sent and the rest never coming.
    let address = hub.gateway.trim_start_matches("http://").to_string();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST /cgi-bin/getcallbackip?access_token={token} HTTP/1.1\r\nhost: gw\r\n\
             content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n400\r\n{}\r\n",
            "x".repeat(1024)
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        streams.push(stream);
    }
    // Each holds its 1 KiB, not max_body: all three fit the budget.
    wait_until(Duration::from_secs(5), "three bodies held", || async {
        held().await == 3 * 1024
    })
    .await;
    drop(streams);
    wait_until(Duration::from_secs(5), "nothing held", || async {
        held().await == 0
    })
    .await;
    hub.stop().await;
}
