//! Fault injection through `/mock/faults` and the library: errcodes, HTTP statuses, dropped
//! connections, delays, matching by account, probability and count.

use std::time::{Duration, Instant};

use serde_json::json;
use wechat_mock::FaultRule;

use crate::common::*;

#[tokio::test]
async fn an_errcode_fault_fires_count_times_then_goes() {
    let wx = Wx::start(config(60, 5)).await;
    let r = wx
        .post_json(
            "/mock/faults",
            &json!({"path": "/cgi-bin/token", "errcode": -1, "count": 2}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["added"], 1);
    assert_error(&wx.token(APPID, SECRET).await, -1, "system error");
    assert_error(&wx.token(APPID, SECRET).await, -1, "system error");
    wx.legacy_token().await;
    let stats = wx.mock.stats();
    assert_eq!(stats.faults_injected("/cgi-bin/token"), 2);
    assert_eq!(stats.calls("/cgi-bin/token", APPID), 3);
    assert_eq!(stats.issued("/cgi-bin/token", APPID), 1);
    assert_eq!(stats.outcome("/cgi-bin/token", -1), 2);
    assert!(wx
        .get("/mock/faults")
        .await
        .json
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn faults_match_by_account_and_errmsg_can_be_given() {
    let wx = Wx::start(config(60, 5)).await;
    wx.post_json(
        "/mock/faults",
        &json!([
            {"path": "/cgi-bin/stable_token", "account": APPID_B, "errcode": 45009, "errmsg": "custom text"},
            {"path": "/cgi-bin/stable_token", "account": APPID, "errcode": 40164, "probability": 0.0}
        ]),
    )
    .await;
    let r = wx.stable(APPID_B, SECRET_B, false).await;
    assert_wechat_wire(&r);
    assert_eq!(r.json, json!({"errcode": 45009, "errmsg": "custom text"}));
    // Probability 0 never fires; other accounts are not matched.
    for _ in 0..5 {
        wx.stable(APPID, SECRET, false).await.access_token();
    }
    assert_eq!(wx.mock.stats().faults_injected("/cgi-bin/stable_token"), 1);
    // DELETE removes every rule.
    let r = wx.delete("/mock/faults").await;
    assert_eq!(r.json["cleared"], 2);
    wx.stable(APPID_B, SECRET_B, false).await.access_token();
}

#[tokio::test]
async fn http_status_and_dropped_connection_faults() {
    let wx = Wx::start(config(60, 5)).await;
    wx.mock.add_fault(FaultRule {
        path: "/cgi-bin/token".into(),
        http_status: Some(502),
        count: Some(1),
        ..FaultRule::default()
    });
    let r = wx.token(APPID, SECRET).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json, serde_json::Value::Null, "not a WeChat answer");

    wx.mock.add_fault(FaultRule {
        path: "/cgi-bin/token".into(),
        drop_connection: true,
        count: Some(1),
        ..FaultRule::default()
    });
    let err = reqwest::get(wx.url(&format!(
        "/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={SECRET}"
    )))
    .await
    .expect_err("the connection is cut without an answer");
    assert!(err.is_request() && err.status().is_none(), "{err:?}");

    // The server keeps serving afterwards.
    wx.legacy_token().await;
    let stats = wx.mock.stats();
    assert_eq!(stats.faults_injected("/cgi-bin/token"), 2);
    assert_eq!(stats.calls("/cgi-bin/token", APPID), 3);
}

#[tokio::test]
async fn a_delay_alone_delays_the_normal_answer() {
    let wx = Wx::start(config(60, 5)).await;
    wx.post_json(
        "/mock/faults",
        &json!({"path": "/cgi-bin/gettoken", "delay_ms": 400, "count": 1}),
    )
    .await;
    let start = Instant::now();
    let token = wx.corp_token(CORPID, CORP_SECRET_1).await.access_token();
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert!(!token.is_empty());
    // Delay combined with an errcode: late, then the error.
    wx.mock.add_fault(FaultRule {
        path: "/cgi-bin/gettoken".into(),
        delay_ms: Some(200),
        errcode: Some(-1),
        ..FaultRule::default()
    });
    let start = Instant::now();
    let r = wx.corp_token(CORPID, CORP_SECRET_1).await;
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_work_error(&r, -1, "system error");
    wx.mock.clear_faults();
    assert_ok_wechat(&wx.corp_token(CORPID, CORP_SECRET_1).await);
}

#[tokio::test]
async fn business_faults_count_as_business_outcomes() {
    let wx = Wx::start(config(60, 5)).await;
    let token = wx.legacy_token().await;
    wx.mock.add_fault(FaultRule {
        path: "/cgi-bin/get_api_domain_ip".into(),
        account: Some(APPID.into()),
        errcode: Some(40001),
        count: Some(1),
        ..FaultRule::default()
    });
    assert_error(&wx.business(&token).await, 40001, INVALID_CREDENTIAL);
    assert_ok_wechat(&wx.business(&token).await);
    let stats = wx.mock.stats();
    assert_eq!(stats.business(APPID, 40001), 1);
    assert_eq!(stats.business(APPID, 0), 1);
}

#[tokio::test]
async fn bad_fault_rules_are_refused() {
    let wx = Wx::start(config(60, 5)).await;
    for body in [
        "not json",
        r#"{"errcode": -1}"#,
        r#"{"path": "/cgi-bin/token", "probability": 2}"#,
        r#"{"path": "cgi-bin/token"}"#,
        r#"[{"path": "/cgi-bin/token"}, {"path": "/x", "http_status": 7}]"#,
    ] {
        let r = wx.post_raw("/mock/faults", "application/json", body).await;
        assert_eq!(r.status, 400, "{body}");
        assert!(r.json["error"].is_string());
    }
    assert!(wx
        .get("/mock/faults")
        .await
        .json
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn requests_held_by_a_delay_are_counted_in_flight() {
    let wx = Wx::start(config(60, 5)).await;
    wx.mock.add_fault(FaultRule {
        path: "/cgi-bin/stable_token".into(),
        delay_ms: Some(1_000),
        ..FaultRule::default()
    });
    let http = reqwest::Client::new();
    let calls: Vec<_> = [(APPID, SECRET), (APPID_B, SECRET_B), (APPID, SECRET)]
        .into_iter()
        .map(|(appid, secret)| {
            let request = http.post(wx.url("/cgi-bin/stable_token")).json(&json!({
                "grant_type": "client_credential", "appid": appid, "secret": secret
            }));
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    // Wait (without a time limit on the outcome) until all three are held by the delay.
    while wx.mock.stats().in_flight < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 200);
    }
    let stats = wx.mock.stats();
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.max_in_flight, 3);
    // The control endpoints are not WeChat's and are not counted.
    let served = wx.get("/mock/stats").await;
    assert_eq!(served.json["max_in_flight"], 3);
    assert_eq!(served.json["in_flight"], 0);
}

#[tokio::test]
async fn a_held_answer_is_decided_at_once_and_delivered_late() {
    let wx = Wx::start(config(1, 0)).await;
    let first = wx.corp_token(CORPID, CORP_SECRET_1).await.access_token();
    wx.mock.add_fault(FaultRule {
        path: "/cgi-bin/gettoken".into(),
        hold_answer_ms: Some(1500),
        count: Some(1),
        ..FaultRule::default()
    });
    // The held call is answered with the token live when it arrived, although that token has
    // expired by the time the answer leaves; with `delay_ms` it would have been a new one.
    let start = Instant::now();
    let held = wx.corp_token(CORPID, CORP_SECRET_1).await;
    assert!(start.elapsed() >= Duration::from_millis(1500));
    assert_ok_wechat(&held);
    assert_eq!(held.access_token(), first);
    assert_work_error(&wx.business(&first).await, 42001, "access_token expired");
    let account = format!("{CORPID}/{AGENT_1}");
    assert_eq!(wx.mock.stats().issued("/cgi-bin/gettoken", &account), 1);

    // Held behind an errcode: the fault's answer, late.
    wx.mock.add_fault(FaultRule {
        path: "/cgi-bin/gettoken".into(),
        errcode: Some(-1),
        hold_answer_ms: Some(300),
        count: Some(1),
        ..FaultRule::default()
    });
    let start = Instant::now();
    let r = wx.corp_token(CORPID, CORP_SECRET_1).await;
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_work_error(&r, -1, "system error");
    // Through /mock/faults too.
    let r = wx
        .post_json(
            "/mock/faults",
            &json!({"path": "/cgi-bin/gettoken", "hold_answer_ms": 200, "count": 1}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(wx.get("/mock/faults").await.json[0]["hold_answer_ms"], 200);
}
