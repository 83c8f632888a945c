//! `GET /cgi-bin/token`: shape, parameter checks, supersession with grace, expiry, daily quota.

use std::collections::HashSet;
use std::time::Instant;

use crate::common::*;

fn assert_token_format(token: &str) {
    let (prefix, rest) = token.split_once('_').expect("n_ prefix");
    assert!(
        !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()),
        "{token}"
    );
    assert_eq!(rest.len(), 136, "{token}");
    assert!(
        rest.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{token}"
    );
}

#[tokio::test]
async fn success_has_token_and_lifetime_but_no_errcode() {
    let wx = Wx::start(config(5, 1)).await;
    let mut seen = HashSet::new();
    for _ in 0..3 {
        let resp = wx.token(APPID, SECRET).await;
        assert_wechat_wire(&resp);
        let obj = resp.json.as_object().unwrap();
        assert!(!obj.contains_key("errcode"), "{resp:?}");
        assert_eq!(obj.len(), 2);
        assert_eq!(resp.expires_in(), 5);
        let token = resp.access_token();
        assert_token_format(&token);
        assert!(seen.insert(token), "tokens are unique");
    }
    let stats = wx.mock.stats();
    assert_eq!(stats.issued("/cgi-bin/token", APPID), 3);
    assert_eq!(stats.calls("/cgi-bin/token", APPID), 3);
    assert_eq!(stats.outcome("/cgi-bin/token", 0), 3);
}

#[tokio::test]
async fn parameter_checks_follow_wechats_order() {
    let wx = Wx::start(config(5, 1)).await;
    // 41002 before 41004 before 40002.
    let r = wx.get("/cgi-bin/token?grant_type=nope").await;
    assert_error(&r, 41002, "appid missing");
    let r = wx
        .get("/cgi-bin/token?grant_type=nope&appid=wxunknown")
        .await;
    assert_error(&r, 41004, "appsecret missing");
    let r = wx.get("/cgi-bin/token?appid=wxa&secret=").await;
    assert_error(&r, 41004, "appsecret missing");
    // 40002 before 40013: an unknown appid with a bad grant_type is a grant_type error.
    let r = wx
        .get("/cgi-bin/token?grant_type=password&appid=wxunknown&secret=x")
        .await;
    assert_error(&r, 40002, "invalid grant_type");
    let r = wx
        .get(&format!("/cgi-bin/token?appid={APPID}&secret={SECRET}"))
        .await;
    assert_error(&r, 40002, "invalid grant_type");
    // 40013 before 40125.
    let r = wx.token("wxunknown", "wrong").await;
    assert_error(&r, 40013, "invalid appid");
    let r = wx.token(APPID, "wrong").await;
    assert_error(&r, 40125, "invalid appsecret");
    // Another account's secret is a wrong secret too.
    let r = wx.token(APPID, SECRET_B).await;
    assert_error(&r, 40125, "invalid appsecret");

    let stats = wx.mock.stats();
    assert_eq!(stats.issued("/cgi-bin/token", APPID), 0);
    assert_eq!(stats.calls("/cgi-bin/token", APPID), 3);
    assert_eq!(stats.calls("/cgi-bin/token", "-"), 5);
    assert_eq!(stats.outcome("/cgi-bin/token", 40125), 2);
}

#[tokio::test]
async fn a_new_fetch_leaves_older_tokens_only_the_grace() {
    let wx = Wx::start(config(6, 1)).await;
    let t1 = wx.legacy_token().await;
    let t2 = wx.legacy_token().await;
    let superseded_at = Instant::now();
    // Both work during the grace period.
    assert_ok_wechat(&wx.business(&t1).await);
    assert_ok_wechat(&wx.business(&t2).await);
    let t3 = wx.legacy_token().await;
    sleep_until(superseded_at + std::time::Duration::from_secs(1) + MARGIN).await;
    // t1 was capped by the second fetch, t2 by the third: both are "not latest" now.
    assert_error(&wx.business(&t1).await, 40001, INVALID_CREDENTIAL);
    assert_error(&wx.business(&t2).await, 40001, INVALID_CREDENTIAL);
    assert_ok_wechat(&wx.business(&t3).await);
    // Another account's fetch does not touch this one.
    let b = wx.token(APPID_B, SECRET_B).await.access_token();
    wx.token(APPID_B, SECRET_B).await.access_token();
    assert_ok_wechat(&wx.business(&t3).await);
    assert_ok_wechat(&wx.business(&b).await);

    let stats = wx.mock.stats();
    assert_eq!(stats.business(APPID, 40001), 2);
    assert_eq!(stats.business(APPID, 0), 4);
    assert_eq!(stats.business_failures(APPID), 2);
}

#[tokio::test]
async fn a_token_expires_after_its_lifetime() {
    let wx = Wx::start(config(2, 1)).await;
    let before = Instant::now();
    let resp = wx.token(APPID, SECRET).await;
    let t = resp.access_token();
    assert_eq!(resp.expires_in(), 2);
    assert_ok_wechat(&wx.business(&t).await);
    sleep_until(before + std::time::Duration::from_secs(2) + MARGIN).await;
    assert_error(&wx.business(&t).await, 42001, "access_token expired");
    assert_eq!(wx.mock.stats().business(APPID, 42001), 1);
}

#[tokio::test]
async fn daily_quota_ends_in_45009_until_cleared() {
    let wx = Wx::start(wechat_mock::MockConfig {
        daily_quota: 3,
        ..config(60, 5)
    })
    .await;
    let mut last = String::new();
    for _ in 0..3 {
        last = wx.legacy_token().await;
    }
    let r = wx.token(APPID, SECRET).await;
    assert_error(
        &r,
        45009,
        "reach max api daily quota limit, could get access_token by getStableAccessToken, more details at https://mmbizurl.cn/s/JtxxFh33r",
    );
    // Refused calls do not mint, and the quota is per account.
    assert_eq!(wx.mock.stats().issued("/cgi-bin/token", APPID), 3);
    wx.token(APPID_B, SECRET_B).await.access_token();
    // Wrong credentials are still reported as such, not as quota.
    assert_error(&wx.token(APPID, "wrong").await, 40125, "invalid appsecret");
    // The last token still works; clearing the quota with it restores fetching.
    let r = wx
        .post_json(
            &format!("/cgi-bin/clear_quota?access_token={last}"),
            &serde_json::json!({"appid": APPID}),
        )
        .await;
    assert_ok_wechat(&r);
    assert_eq!(r.json, serde_json::json!({"errcode": 0, "errmsg": "ok"}));
    wx.legacy_token().await;
    assert_eq!(wx.mock.stats().issued("/cgi-bin/token", APPID), 4);
    assert_eq!(wx.mock.stats().outcome("/cgi-bin/token", 45009), 1);
}
