//! Rollover of re-sent values: WeChat re-sends a ticket (and a Work WeChat token) unchanged until
//! it really expires, so a new one exists only after the old one died. Consumers polling across
//! the expiry must never see a 503, and readiness must not flap, even when WeChat is slow to
//! answer.

use std::time::Duration;

use tokio::time::Instant;
use wechat_mock::FaultRule;
use wxhub::token::{CorpTicketKind, TicketKind};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_a_ticket_and_a_work_token_across_three_expiries_never_sees_a_503() {
    let app = TestApp::stable("wxrollover0000001").with_tickets(&[TicketKind::Jsapi]);
    let corp = TestCorp {
        corpid: "wwrollover000001".into(),
        agentid: "1000002".into(),
        tickets: vec![CorpTicketKind::Jsapi],
    };
    let lifetime = Duration::from_secs(6);
    let mock = spawn_mock(
        lifetime,
        Duration::from_secs(2),
        std::slice::from_ref(&app),
        std::slice::from_ref(&corp),
        |c| c,
    )
    .await;
    let hub = spawn_app(
        &mock,
        HubOptions::new(std::slice::from_ref(&app)).with_corps(std::slice::from_ref(&corp)),
    )
    .await;
    hub.wait_ready().await;
    // A slow upstream (400 ms a call) makes the moment between an old value's expiry and its
    // successor's arrival long enough for every poller to land in it.
    for path in [
        "/cgi-bin/ticket/getticket",
        "/cgi-bin/gettoken",
        "/cgi-bin/get_jsapi_ticket",
    ] {
        mock.add_fault(FaultRule {
            path: path.into(),
            delay_ms: Some(400),
            ..FaultRule::default()
        });
    }
    let paths = [
        format!("/v1/apps/{}/tickets/jsapi", app.appid),
        format!(
            "/v1/corps/{}/agents/{}/access_token",
            corp.corpid, corp.agentid
        ),
        format!(
            "/v1/corps/{}/agents/{}/tickets/jsapi",
            corp.corpid, corp.agentid
        ),
    ];
    let mut failures = Vec::new();
    let mut not_ready = 0;
    let mut values = std::collections::BTreeSet::new();
    let until = Instant::now() + lifetime * 3 + Duration::from_secs(1);
    while Instant::now() < until {
        for path in &paths {
            let response = hub.get(path).await;
            let status = response.status().as_u16();
            if status == 200 {
                let answer: TokenAnswer = response.json().await.unwrap();
                values.insert(answer.access_token);
            } else {
                failures.push((
                    path.clone(),
                    status,
                    response.text().await.unwrap_or_default(),
                ));
            }
        }
        let ready = hub.client.get(hub.url("/readyz")).send().await.unwrap();
        if ready.status() != 200 {
            not_ready += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        failures.is_empty(),
        "{} failed reads: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(not_ready, 0, "/readyz flapped during rollovers");
    // Three expiries of three credentials: each rolled over at least three times.
    assert!(values.len() >= 3 * 3, "only {} values seen", values.len());
}
