//! Quota APIs: `openapi/quota/get`, `clear_quota` and `clear_quota/v2` with its monthly budget.

use serde_json::json;
use wechat_mock::MockConfig;

use crate::common::*;

#[tokio::test]
async fn quota_get_reports_daily_limit_used_and_remain() {
    let wx = Wx::start(MockConfig {
        daily_quota: 5,
        ..config(60, 5)
    })
    .await;
    wx.legacy_token().await;
    let token = wx.legacy_token().await;
    wx.stable(APPID, SECRET, false).await.access_token();
    let url = format!("/cgi-bin/openapi/quota/get?access_token={token}");

    let r = wx
        .post_json(&url, &json!({"cgi_path": "/cgi-bin/token"}))
        .await;
    assert_ok_wechat(&r);
    assert_eq!(
        r.json,
        json!({"errcode": 0, "errmsg": "ok", "quota": {"daily_limit": 5, "used": 2, "remain": 3}})
    );
    let r = wx
        .post_json(&url, &json!({"cgi_path": "/cgi-bin/stable_token"}))
        .await;
    assert_eq!(r.json["quota"]["used"], 1);
    let r = wx
        .post_json(&url, &json!({"cgi_path": "/cgi-bin/ticket/getticket"}))
        .await;
    assert_eq!(
        r.json["quota"],
        json!({"daily_limit": 10000, "used": 0, "remain": 10000})
    );

    let r = wx
        .post_json(&url, &json!({"cgi_path": "/cgi-bin/no/such/api"}))
        .await;
    assert_error(&r, 76021, "cgi_path not found, please check");
    let r = wx.post_json(&url, &json!({})).await;
    assert_error(&r, 47001, "data format error");
    let r = wx.get(&url).await;
    assert_error(&r, 43002, "require POST method");
    let r = wx
        .post_json(
            "/cgi-bin/openapi/quota/get?access_token=bad",
            &json!({"cgi_path": "/cgi-bin/token"}),
        )
        .await;
    assert_error(&r, 40014, "invalid access_token");

    let stats = wx.mock.stats();
    assert_eq!(stats.business(APPID, 0), 3);
    assert_eq!(stats.business(APPID, 76021), 1);
    assert_eq!(stats.business("-", 40014), 1);
}

#[tokio::test]
async fn clear_quota_with_a_token_checks_the_appid() {
    let wx = Wx::start(config(60, 5)).await;
    let token = wx.legacy_token().await;
    let url = format!("/cgi-bin/clear_quota?access_token={token}");
    assert_error(
        &wx.post_json(&url, &json!({})).await,
        41002,
        "appid missing",
    );
    assert_error(
        &wx.post_json(&url, &json!({"appid": APPID_B})).await,
        40013,
        "invalid appid",
    );
    assert_error(&wx.get(&url).await, 43002, "require POST method");
    assert_error(
        &wx.post_json("/cgi-bin/clear_quota", &json!({"appid": APPID}))
            .await,
        41001,
        "access_token missing",
    );
    let r = wx.post_json(&url, &json!({"appid": APPID})).await;
    assert_eq!(r.json, json!({"errcode": 0, "errmsg": "ok"}));
    // The counters restart from zero.
    let r = wx
        .post_json(
            &format!("/cgi-bin/openapi/quota/get?access_token={token}"),
            &json!({"cgi_path": "/cgi-bin/token"}),
        )
        .await;
    assert_eq!(r.json["quota"]["used"], 0);
}

#[tokio::test]
async fn clear_quota_v2_takes_query_or_body_and_ten_clears_a_month() {
    let wx = Wx::start(config(60, 5)).await;
    let v2 = "/cgi-bin/clear_quota/v2";
    assert_error(&wx.post_json(v2, &json!({})).await, 41002, "appid missing");
    assert_error(
        &wx.post_json(v2, &json!({"appid": APPID})).await,
        41004,
        "appsecret missing",
    );
    assert_error(
        &wx.post_json(v2, &json!({"appid": "wxnope", "appsecret": "x"}))
            .await,
        40013,
        "invalid appid",
    );
    assert_error(
        &wx.post_json(v2, &json!({"appid": APPID, "appsecret": "wrong"}))
            .await,
        40125,
        "invalid appsecret",
    );
    assert_error(
        &wx.get(&format!("{v2}?appid={APPID}&appsecret={SECRET}"))
            .await,
        43002,
        "require POST method",
    );

    // The budget is shared by both forms and by clear_quota with a token.
    let token = wx.legacy_token().await;
    for i in 0..10 {
        let r = match i % 3 {
            0 => {
                wx.post_raw(
                    &format!("{v2}?appid={APPID}&appsecret={SECRET}"),
                    "application/json",
                    "",
                )
                .await
            }
            1 => {
                wx.post_json(v2, &json!({"appid": APPID, "appsecret": SECRET}))
                    .await
            }
            _ => {
                wx.post_json(
                    &format!("/cgi-bin/clear_quota?access_token={token}"),
                    &json!({"appid": APPID}),
                )
                .await
            }
        };
        assert_eq!(r.json, json!({"errcode": 0, "errmsg": "ok"}), "clear {i}");
    }
    let r = wx
        .post_json(v2, &json!({"appid": APPID, "appsecret": SECRET}))
        .await;
    assert_error(
        &r,
        48006,
        "forbid to clear quota because of reaching the limit",
    );
    let r = wx
        .post_json(
            &format!("/cgi-bin/clear_quota?access_token={token}"),
            &json!({"appid": APPID}),
        )
        .await;
    assert_error(
        &r,
        48006,
        "forbid to clear quota because of reaching the limit",
    );
    // The other account has its own budget.
    let r = wx
        .post_json(v2, &json!({"appid": APPID_B, "appsecret": SECRET_B}))
        .await;
    assert_ok_wechat(&r);
    let stats = wx.mock.stats();
    assert_eq!(stats.calls(v2, APPID), 11);
    assert_eq!(stats.outcome(v2, 48006), 1);
}
