//! JS-SDK tickets: served with their true remaining life, renewed each cycle with few getticket
//! calls, signed correctly, and fetched again with a fresh access token when WeChat says the one
//! used was dead.

use std::collections::HashMap;
use std::time::Duration;

use sha1::{Digest, Sha1};
use tokio::time::Instant;
use wechat_mock::FaultRule;
use wxhub::credential::TicketKind;

use crate::helpers::*;

/// `hex(sha1(...))` of the spec's string1, computed here independently of the hub.
fn expected_signature(ticket: &str, nonce: &str, timestamp: i64, url: &str) -> String {
    let string1 = format!("jsapi_ticket={ticket}&noncestr={nonce}&timestamp={timestamp}&url={url}");
    Sha1::digest(string1.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn a_polled_ticket_carries_its_true_remaining_life_and_is_renewed_each_cycle() {
    let appid = "wxticket000000001";
    let apps = [TestApp::stable(appid).with_tickets(&[TicketKind::Jsapi])];
    let mock = spawn_mock(
        Duration::from_secs(20),
        Duration::from_secs(5),
        &apps,
        &[],
        |c| c,
    )
    .await;
    let hub = spawn_app(&mock, HubOptions::new(&apps)).await;
    hub.wait_ready().await;

    // For each ticket: the earliest and latest "end of use" the hub announced (poll time +
    // expires_in), and when it was last served.
    let mut announced: HashMap<String, (Instant, Instant, Instant)> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut gaps = 0;
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        let response = hub.get(&format!("/v1/apps/{appid}/tickets/jsapi")).await;
        let now = Instant::now();
        if response.status() == 503 {
            // The instant between a ticket's expiry and its replacement.
            gaps += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        assert_eq!(response.status(), 200);
        let answer: TokenAnswer = response.json().await.unwrap();
        let ticket = answer.access_token;
        if !mock.ticket_valid(&ticket) {
            assert!(
                answer.expires_in <= 1,
                "a dead ticket was served with {} s",
                answer.expires_in
            );
        }
        let end_of_use = now + Duration::from_secs(answer.expires_in);
        let entry = announced
            .entry(ticket.clone())
            .or_insert((end_of_use, end_of_use, now));
        entry.0 = entry.0.min(end_of_use);
        entry.1 = entry.1.max(end_of_use);
        entry.2 = now;
        if order.last() != Some(&ticket) {
            order.push(ticket);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    assert!(
        order.len() >= 3,
        "renewed each cycle: {} tickets",
        order.len()
    );
    for (ticket, (earliest, latest, _)) in &announced {
        assert!(
            latest.duration_since(*earliest) <= Duration::from_millis(1_500),
            "the announced end of {ticket} moved by {:?}: expiry was extended",
            latest.duration_since(*earliest)
        );
    }
    // Each replaced ticket was served until about its announced end, not long before or after.
    for pair in order.windows(2) {
        let (earliest, _, last_served) = announced[&pair[0]];
        let (_, _, _) = announced[&pair[1]];
        let slack = if last_served > earliest {
            last_served.duration_since(earliest)
        } else {
            earliest.duration_since(last_served)
        };
        assert!(
            slack <= Duration::from_millis(1_500),
            "served {slack:?} off its announced end"
        );
    }
    assert!(
        gaps <= 3,
        "{gaps} polls fell between a ticket and its replacement"
    );
    let calls = stats(&mock).calls("/cgi-bin/ticket/getticket", appid);
    assert!(calls <= 10, "{calls} getticket calls over three cycles");
}

#[tokio::test]
async fn the_signature_verifies_with_an_independent_sha1() {
    let appid = "wxticket000000002";
    let apps = [TestApp::legacy(appid).with_tickets(&[TicketKind::Jsapi, TicketKind::WxCard])];
    let (mock, hub) = start_ready(&apps).await;

    let ticket = hub
        .token_at(&format!("/v1/apps/{appid}/tickets/jsapi"))
        .await
        .access_token;
    let card = hub
        .token_at(&format!("/v1/apps/{appid}/tickets/wx_card"))
        .await
        .access_token;
    assert_ne!(ticket, card);
    assert!(mock.ticket_valid(&ticket) && mock.ticket_valid(&card));

    let response = hub
        .post(
            &format!("/v1/apps/{appid}/jssdk/signature"),
            serde_json::json!({"url": "https://shop.example.com/item?id=7#reviews"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    let nonce = answer["nonceStr"].as_str().unwrap();
    let timestamp = answer["timestamp"].as_i64().unwrap();
    assert_eq!(answer["appId"], appid);
    assert_eq!(nonce.len(), 16);
    assert_eq!(
        answer["signature"],
        expected_signature(
            &ticket,
            nonce,
            timestamp,
            "https://shop.example.com/item?id=7"
        )
    );

    for url in [
        "/item?id=7",
        "shop.example.com/item",
        "ftp://shop.example.com/",
    ] {
        let response = hub
            .post(
                &format!("/v1/apps/{appid}/jssdk/signature"),
                serde_json::json!({ "url": url }),
            )
            .await;
        assert_eq!(response.status(), 400, "{url}");
    }
}

#[tokio::test]
async fn a_ticket_fetch_refused_for_a_dead_access_token_refreshes_it_once_and_retries() {
    let appid = "wxticket000000003";
    let apps = [TestApp::legacy(appid).with_tickets(&[TicketKind::Jsapi])];
    let (mock, hub) = start_ready(&apps).await;
    let access_token = hub.token(appid).await.access_token;
    let ticket = hub
        .token_at(&format!("/v1/apps/{appid}/tickets/jsapi"))
        .await
        .access_token;
    // Old enough that a report of it may cause a refresh (min_refresh_interval is 1 s here).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let before = stats(&mock);

    mock.add_fault(FaultRule {
        path: "/cgi-bin/ticket/getticket".into(),
        errcode: Some(40001),
        count: Some(1),
        ..FaultRule::default()
    });
    let response = hub
        .post(
            &format!("/v1/apps/{appid}/tickets/jsapi/invalidate"),
            serde_json::json!({ "ticket": ticket }),
        )
        .await;
    assert_eq!(response.status(), 200);

    let after = stats(&mock);
    assert_eq!(
        after.issued("/cgi-bin/token", appid),
        before.issued("/cgi-bin/token", appid) + 1,
        "the access token was refreshed once"
    );
    assert_eq!(
        after.calls("/cgi-bin/ticket/getticket", appid),
        before.calls("/cgi-bin/ticket/getticket", appid) + 2,
        "one refused getticket, one retry"
    );
    assert_ne!(hub.token(appid).await.access_token, access_token);
}
