//! Work WeChat: one token per (corpid, agentid), tokens that work against WeChat's business API,
//! and both kinds of JS-SDK ticket with signatures.

use std::time::Duration;

use wxhub::token::CorpTicketKind;

use crate::helpers::*;

const CORPID: &str = "ww00000000000corp1";

fn agent(agentid: &str) -> TestCorp {
    TestCorp {
        corpid: CORPID.into(),
        agentid: agentid.into(),
        tickets: vec![CorpTicketKind::Jsapi, CorpTicketKind::AgentConfig],
    }
}

/// The JS-SDK signature of `https://work.example.com/app` with `ticket`, at the nonce and
/// timestamp of the hub's `answer`, computed here as the spec describes it.
fn signature(ticket: &str, answer: &serde_json::Value) -> String {
    let string1 = format!(
        "jsapi_ticket={ticket}&noncestr={}&timestamp={}&url=https://work.example.com/app",
        answer["nonceStr"].as_str().unwrap(),
        answer["timestamp"]
    );
    <sha1::Sha1 as sha1::Digest>::digest(string1.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn each_agent_gets_its_own_working_token_and_tickets() {
    let corps = [agent("1000002"), agent("1000003")];
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_secs(5),
        &[],
        &corps,
        |c| c,
    )
    .await;
    let hub = spawn_app(&mock, HubOptions::new(&[]).with_corps(&corps)).await;
    hub.wait_ready().await;

    let first = hub
        .token_at(&format!("/v1/corps/{CORPID}/agents/1000002/access_token"))
        .await;
    let second = hub
        .token_at(&format!("/v1/corps/{CORPID}/agents/1000003/access_token"))
        .await;
    assert_ne!(first.access_token, second.access_token);
    for token in [&first.access_token, &second.access_token] {
        assert_eq!(business_call(&hub.client, &mock, token).await, 0);
    }

    let corp_ticket = hub
        .token_at(&format!("/v1/corps/{CORPID}/agents/1000002/tickets/jsapi"))
        .await;
    let app_ticket = hub
        .token_at(&format!(
            "/v1/corps/{CORPID}/agents/1000002/tickets/agent_config"
        ))
        .await;
    assert!(mock.ticket_valid(&corp_ticket.access_token));
    assert!(mock.ticket_valid(&app_ticket.access_token));

    let response = hub
        .post(
            &format!("/v1/corps/{CORPID}/agents/1000002/jssdk/signature"),
            serde_json::json!({"url": "https://work.example.com/app", "kind": "agent_config"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["appId"], CORPID);
    assert_eq!(answer["agentId"], "1000002");
    assert_eq!(
        answer["signature"],
        signature(&app_ticket.access_token, &answer)
    );

    let calls = stats(&mock);
    assert_eq!(
        calls.issued("/cgi-bin/gettoken", &format!("{CORPID}/1000002")),
        1
    );
    assert_eq!(
        calls.issued("/cgi-bin/gettoken", &format!("{CORPID}/1000003")),
        1
    );
}

/// A corp that installed a suite signs a page for `wx.agentConfig` with the agentid Work WeChat
/// gave the suite's app in that corp, and its ticket is the one the mock issued for that app.
#[tokio::test]
async fn an_installed_corp_signs_agent_config_with_its_installations_agentid() {
    use crate::platform_support::{owner, Relay};
    use crate::suites_support::*;

    let relay = Relay::start().await;
    let mock = suite_mock(&relay, Duration::from_secs(60), Duration::from_secs(600)).await;
    let hub = spawn_app(
        &mock,
        suite_options(&[CorpTicketKind::Jsapi, CorpTicketKind::AgentConfig]),
    )
    .await;
    relay.point_at(&[&hub]);
    assert!(push_ticket(&mock).await);
    wait_for_suite_token(&hub).await;
    let answer = owner(
        &mock,
        "install",
        serde_json::json!({ "suite_id": SUITE, "agentid": 1000042 }),
    )
    .await;
    let corpid = corpid_of(&answer);

    let ticket = hub
        .token_at(&corp_path(&corpid, "tickets/agent_config"))
        .await;
    assert!(mock.ticket_valid(&ticket.access_token));
    let path = corp_path(&corpid, "jssdk/signature");
    let sign = |kind: &'static str| {
        hub.post(
            &path,
            serde_json::json!({"url": "https://work.example.com/app", "kind": kind}),
        )
    };
    let response = sign("agent_config").await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["appId"], corpid.as_str());
    assert_eq!(answer["agentId"], "1000042");
    assert_eq!(
        answer["signature"],
        signature(&ticket.access_token, &answer)
    );
    // The corp's own jsapi signature names no agent.
    let jsapi: serde_json::Value = sign("jsapi").await.json().await.unwrap();
    assert!(jsapi.get("agentId").is_none(), "{jsapi}");
}
