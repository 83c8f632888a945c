//! The business API (`get_api_domain_ip`): how every WeChat API judges a token, and the counters
//! that let hub tests see business servers running into dead tokens.

use std::time::{Duration, Instant};

use crate::common::*;

#[tokio::test]
async fn business_api_judges_tokens_and_counts_outcomes() {
    let wx = Wx::start(config(2, 1)).await;
    let r = wx.get("/cgi-bin/get_api_domain_ip").await;
    assert_error(&r, 41001, "access_token missing");
    let r = wx.get("/cgi-bin/get_api_domain_ip?access_token=").await;
    assert_error(&r, 41001, "access_token missing");
    let r = wx.business("2").await;
    assert_error(&r, 40014, "invalid access_token");

    let fetched = Instant::now();
    let token = wx.legacy_token().await;
    let ok = wx.business(&token).await;
    assert_wechat_wire(&ok);
    assert!(
        ok.json.get("errcode").is_none(),
        "official success has no errcode: {ok:?}"
    );
    let ips = ok.json["ip_list"].as_array().expect("ip_list");
    assert!(
        !ips.is_empty()
            && ips.iter().all(|ip| ip
                .as_str()
                .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok()))
    );

    sleep_until(fetched + Duration::from_secs(2) + MARGIN).await;
    assert_error(&wx.business(&token).await, 42001, "access_token expired");

    let stats = wx.mock.stats();
    assert_eq!(stats.business("-", 41001), 2);
    assert_eq!(stats.business("-", 40014), 1);
    assert_eq!(stats.business(APPID, 0), 1);
    assert_eq!(stats.business(APPID, 42001), 1);
    assert_eq!(stats.business_failures(APPID), 1);
    assert_eq!(stats.business_failures("-"), 3);
    assert_eq!(stats.calls("/cgi-bin/get_api_domain_ip", APPID), 2);
    assert_eq!(stats.calls("/cgi-bin/get_api_domain_ip", "-"), 3);
}

#[tokio::test]
async fn stats_endpoint_serves_the_same_counters() {
    let wx = Wx::start(config(60, 5)).await;
    let token = wx.legacy_token().await;
    wx.business(&token).await;
    wx.business("nope").await;
    wx.stable(APPID, SECRET, true).await;
    let r = wx.get("/mock/stats").await;
    assert_eq!(r.status, 200);
    let served: wechat_mock::MockStats = serde_json::from_value(r.json).unwrap();
    assert_eq!(served, wx.mock.stats());
    assert_eq!(served.business(APPID, 0), 1);
    assert_eq!(served.business("-", 40014), 1);
    assert_eq!(served.force_refreshes(APPID), 1);
    assert_eq!(served.issued("/cgi-bin/token", APPID), 1);
}
