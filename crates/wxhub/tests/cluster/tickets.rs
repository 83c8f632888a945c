//! Re-sent values across a cluster: WeChat hands every caller the same ticket until it expires,
//! so asking before then only costs calls. Three instances must check each ticket about once per
//! lifetime between them, not once each.

use std::time::Duration;

use tokio::time::Instant;
use wxhub::token::TicketKind;

use crate::common::*;
use crate::helpers::*;
use crate::redis_server::{unique_namespace, TestRedis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_ask_for_each_ticket_about_once() {
    let appid = "wxcluster0ticket1";
    let apps = [TestApp::stable(appid).with_tickets(&[TicketKind::Jsapi])];
    let redis = TestRedis::get();
    let lifetime = Duration::from_secs(8);
    let mock = spawn_mock(lifetime, Duration::from_secs(2), &apps, &[], |c| c).await;
    let hubs = spawn_cluster(&mock, &apps, &redis.url(), &unique_namespace("tickets")).await;
    let path = format!("/v1/apps/{appid}/tickets/jsapi");
    let until = Instant::now() + lifetime * 3 + Duration::from_secs(1);
    let mut failed = 0;
    while Instant::now() < until {
        for hub in hubs.iter() {
            if hub.get(&path).await.status() != 200 {
                failed += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = stats(&mock);
    let issued = stats.issued("/cgi-bin/ticket/getticket", appid);
    let calls = stats.calls("/cgi-bin/ticket/getticket", appid);
    eprintln!("getticket: {calls} calls for {issued} tickets");
    assert_eq!(failed, 0, "ticket reads failed");
    assert!(issued >= 3, "{issued} tickets over three lifetimes");
    // One call per ticket, and at most one more per ticket when two instances reach its expiry
    // at the same moment (the second finds the lease taken and waits for the first's write).
    assert!(
        calls <= issued * 3 / 2 + 1,
        "{calls} getticket calls for {issued} tickets: instances re-check unchanged tickets"
    );
}
