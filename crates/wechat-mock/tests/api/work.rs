//! Work WeChat on the same listener: gettoken, the corp and app tickets, corp tokens on the
//! business API, and Work WeChat's error shape.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn gettoken_checks_parameters_in_work_shape() {
    let wx = Wx::start(config(60, 5)).await;
    assert_work_error(&wx.get("/cgi-bin/gettoken").await, 41002, "corpid missing");
    assert_work_error(
        &wx.get(&format!("/cgi-bin/gettoken?corpid={CORPID}")).await,
        41004,
        "corpsecret missing",
    );
    assert_work_error(
        &wx.corp_token("wwnope", CORP_SECRET_1).await,
        40013,
        "invalid corpid",
    );
    assert_work_error(
        &wx.corp_token(CORPID, "wrong").await,
        40001,
        "invalid credential",
    );
    // An official account's secret is not a corp secret.
    assert_work_error(
        &wx.corp_token(CORPID, SECRET).await,
        40001,
        "invalid credential",
    );
    let stats = wx.mock.stats();
    assert_eq!(stats.calls("/cgi-bin/gettoken", "-"), 5);
    assert_eq!(
        stats.issued("/cgi-bin/gettoken", &format!("{CORPID}/{AGENT_1}")),
        0
    );
}

#[tokio::test]
async fn one_token_per_app_secret_the_same_until_it_expires() {
    let wx = Wx::start(config(2, 1)).await;
    let minted = Instant::now();
    let first = wx.corp_token(CORPID, CORP_SECRET_1).await;
    assert_ok_wechat(&first);
    assert_eq!(first.json["errcode"], 0, "Work successes carry errcode 0");
    assert_eq!(first.errmsg(), "ok");
    assert_eq!(first.expires_in(), 2);
    let t1 = first.access_token();
    let again = wx.corp_token(CORPID, CORP_SECRET_1).await;
    assert_eq!(again.access_token(), t1, "no rotation on a repeated fetch");
    let other = wx.corp_token(CORPID, CORP_SECRET_2).await.access_token();
    assert_ne!(other, t1, "each app has its own token");

    // Corp tokens work on get_api_domain_ip, answered in the Work shape.
    let ok = wx.business(&t1).await;
    assert_ok_wechat(&ok);
    assert_eq!(ok.json["errcode"], 0);
    assert_eq!(ok.errmsg(), "ok");
    assert!(ok.json["ip_list"].as_array().is_some_and(|l| !l.is_empty()));

    sleep_until(minted + Duration::from_secs(2) + MARGIN).await;
    assert_work_error(&wx.business(&t1).await, 42001, "access_token expired");
    let renewed = wx.corp_token(CORPID, CORP_SECRET_1).await.access_token();
    assert_ne!(renewed, t1);
    assert_ok_wechat(&wx.business(&renewed).await);

    let account = format!("{CORPID}/{AGENT_1}");
    let stats = wx.mock.stats();
    assert_eq!(stats.issued("/cgi-bin/gettoken", &account), 2);
    assert_eq!(stats.calls("/cgi-bin/gettoken", &account), 3);
    assert_eq!(stats.business(&account, 0), 2);
    assert_eq!(stats.business(&account, 42001), 1);
}

#[tokio::test]
async fn corp_and_app_tickets() {
    let wx = Wx::start(config(60, 5)).await;
    let t1 = wx.corp_token(CORPID, CORP_SECRET_1).await.access_token();
    let t2 = wx.corp_token(CORPID, CORP_SECRET_2).await.access_token();

    let corp = wx
        .get(&format!("/cgi-bin/get_jsapi_ticket?access_token={t1}"))
        .await;
    assert_eq!(corp.json["errcode"], 0);
    assert_eq!(corp.expires_in(), 60);
    let corp_ticket = corp.ticket();
    // The corp ticket belongs to the corp: every app of it gets the same one.
    let again = wx
        .get(&format!("/cgi-bin/get_jsapi_ticket?access_token={t2}"))
        .await;
    assert_eq!(again.ticket(), corp_ticket);
    assert_eq!(again.expires_in(), 60);

    let app1 = wx
        .get(&format!(
            "/cgi-bin/ticket/get?access_token={t1}&type=agent_config"
        ))
        .await
        .ticket();
    let app2 = wx
        .get(&format!(
            "/cgi-bin/ticket/get?access_token={t2}&type=agent_config"
        ))
        .await
        .ticket();
    assert_ne!(app1, app2, "each app has its own agent_config ticket");
    assert_ne!(app1, corp_ticket);
    let app1_again = wx
        .get(&format!(
            "/cgi-bin/ticket/get?access_token={t1}&type=agent_config"
        ))
        .await
        .ticket();
    assert_eq!(app1_again, app1);

    assert_work_error(
        &wx.get(&format!("/cgi-bin/ticket/get?access_token={t1}&type=jsapi"))
            .await,
        40058,
        "invalid Request Parameter",
    );
    assert_work_error(
        &wx.get("/cgi-bin/get_jsapi_ticket").await,
        41001,
        "access_token missing",
    );
    // An official-account token is unknown on the Work host.
    let official = wx.legacy_token().await;
    assert_work_error(
        &wx.get(&format!(
            "/cgi-bin/get_jsapi_ticket?access_token={official}"
        ))
        .await,
        40014,
        "invalid access_token",
    );

    let stats = wx.mock.stats();
    let account1 = format!("{CORPID}/{AGENT_1}");
    let account2 = format!("{CORPID}/{AGENT_2}");
    assert_eq!(stats.issued("/cgi-bin/get_jsapi_ticket", &account1), 1);
    assert_eq!(stats.issued("/cgi-bin/get_jsapi_ticket", &account2), 0);
    assert_eq!(stats.issued("/cgi-bin/ticket/get", &account1), 1);
    assert_eq!(stats.issued("/cgi-bin/ticket/get", &account2), 1);
    assert!(wx.mock.ticket_valid(&corp_ticket));
}

#[tokio::test]
async fn work_wechat_may_invalidate_a_token_early() {
    let wx = Wx::start(config(60, 5)).await;
    let token = wx.corp_token(CORPID, CORP_SECRET_1).await.access_token();
    let other = wx.corp_token(CORPID, CORP_SECRET_2).await.access_token();
    let r = wx
        .post_json("/mock/invalidate_token", &json!({"token": token}))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json, json!({"invalidated": "corp"}));
    // Dead at once, answered as a token no longer the latest; the next fetch brings a new one,
    // and the corp's other app is untouched.
    assert_work_error(&wx.business(&token).await, 40001, "invalid credential");
    let renewed = wx.corp_token(CORPID, CORP_SECRET_1).await.access_token();
    assert_ne!(renewed, token);
    assert_ok_wechat(&wx.business(&renewed).await);
    assert_ok_wechat(&wx.business(&other).await);

    // Only live Work tokens: a dead or unknown value is 404, an official account's token 400.
    let r = wx
        .post_json("/mock/invalidate_token", &json!({"token": token}))
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    let official = wx.legacy_token().await;
    let r = wx
        .post_json("/mock/invalidate_token", &json!({"token": official}))
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_ok_wechat(&wx.business(&official).await);
    for body in [json!({}), json!({"token": 7}), json!({"token": ""})] {
        let r = wx.post_json("/mock/invalidate_token", &body).await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
    }
    let account = format!("{CORPID}/{AGENT_1}");
    assert_eq!(wx.mock.stats().issued("/cgi-bin/gettoken", &account), 2);
}
