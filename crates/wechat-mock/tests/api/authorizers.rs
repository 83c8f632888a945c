//! Authorizers at scale and over time: accounts authorized in advance, the paged list, refresh
//! token rotation, permission updates, faults on the platform's endpoints and failing pushes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wechat_mock::{authorizer_appid, FaultRule, MockConfig};

use crate::common::*;
use crate::platform::*;

/// `api_authorizer_token` for `authorizer` on [`COMPONENT`].
async fn refresh(wx: &Wx, component_token: &str, authorizer: &str, refresh_token: &str) -> Resp {
    wx.component(
        "api_authorizer_token",
        component_token,
        json!({"component_appid": COMPONENT, "authorizer_appid": authorizer, "authorizer_refresh_token": refresh_token}),
    )
    .await
}

async fn list(wx: &Wx, component_token: &str, body: Value) -> Resp {
    wx.component("api_get_authorizer_list", component_token, body)
        .await
}

#[tokio::test]
async fn the_authorizer_list_pages_up_to_500() {
    let receiver = Receiver::start().await;
    let wx = Wx::start(MockConfig {
        authorizers_per_component: 1203,
        ..platform_config(60, 5, &receiver)
    })
    .await;
    let token = wx.fresh_component_token(&receiver).await;
    assert_eq!(wx.mock.stats().component(COMPONENT).authorizers, 1203);
    assert_eq!(wx.mock.stats().component(COMPONENT_B).authorizers, 1203);

    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let page = list(
            &wx,
            &token,
            json!({"component_appid": COMPONENT, "offset": offset, "count": 500}),
        )
        .await;
        assert_wechat_wire(&page);
        assert!(page.json.get("errcode").is_none(), "{page:?}");
        assert_eq!(page.json["total_count"], 1203);
        let items = page.json["list"].as_array().unwrap().clone();
        if items.is_empty() {
            break;
        }
        offset += items.len();
        seen.extend(items);
    }
    assert_eq!(seen.len(), 1203);
    for (i, item) in seen.iter().enumerate() {
        assert_eq!(item["authorizer_appid"], authorizer_appid(0, i as u64 + 1));
        assert!(item["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("refreshtoken@@@"));
        assert!(item["auth_time"].as_u64().unwrap() > 1_600_000_000);
    }
    // A listed refresh token works.
    let first = &seen[0];
    let r = refresh(
        &wx,
        &token,
        first["authorizer_appid"].as_str().unwrap(),
        first["refresh_token"].as_str().unwrap(),
    )
    .await;
    assert_ok_wechat(&wx.business(&r.str("authorizer_access_token")).await);

    let r = list(
        &wx,
        &token,
        json!({"component_appid": COMPONENT, "offset": 0, "count": 501}),
    )
    .await;
    assert_error(&r, 40170, "args count exceed count limit");
    let r = list(&wx, &token, json!({"component_appid": COMPONENT})).await;
    assert_error(&r, 47001, "data format error");
    let r = list(
        &wx,
        &token,
        json!({"component_appid": COMPONENT, "count": "10"}),
    )
    .await;
    assert_error(&r, 47001, "data format error");
    let r = list(
        &wx,
        &token,
        json!({"component_appid": COMPONENT, "offset": -1, "count": 10}),
    )
    .await;
    assert_error(&r, 47001, "data format error");
    let r = list(
        &wx,
        &token,
        json!({"component_appid": COMPONENT, "offset": 1200, "count": 10}),
    )
    .await;
    assert_eq!(r.json["list"].as_array().unwrap().len(), 3);

    // The second platform has its own authorizers.
    let info = wx
        .component(
            "api_get_authorizer_info",
            &token,
            json!({"component_appid": COMPONENT, "authorizer_appid": authorizer_appid(1, 1)}),
        )
        .await;
    assert_error(&info, 61003, "component is not authorized by this account");
    let info = wx
        .component(
            "api_get_authorizer_info",
            &token,
            json!({"component_appid": COMPONENT, "authorizer_appid": authorizer_appid(0, 7)}),
        )
        .await;
    assert_wechat_wire(&info);
    assert_eq!(
        info.json["authorization_info"]["authorizer_appid"],
        authorizer_appid(0, 7)
    );
    assert_eq!(
        info.json["authorization_info"]["authorizer_refresh_token"],
        seen[6]["refresh_token"]
    );
    assert!(info.json["authorizer_info"]["nick_name"].is_string());
}

#[tokio::test]
async fn rotated_refresh_tokens_keep_the_grace_then_answer_61023() {
    let receiver = Receiver::start().await;
    let wx = Wx::start(MockConfig {
        authorizers_per_component: 1,
        rotate_refresh_tokens: true,
        ..platform_config(60, 1, &receiver)
    })
    .await;
    let token = wx.fresh_component_token(&receiver).await;
    let authorizer = authorizer_appid(0, 1);
    let listed = list(
        &wx,
        &token,
        json!({"component_appid": COMPONENT, "count": 1}),
    )
    .await;
    let r1 = listed.json["list"][0]["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let rotated_at = Instant::now();
    let first = refresh(&wx, &token, &authorizer, &r1).await;
    let r2 = first.str("authorizer_refresh_token");
    assert_ne!(r2, r1);
    // The old one still works within the grace (and rotates again).
    let again = refresh(&wx, &token, &authorizer, &r1).await;
    let r3 = again.str("authorizer_refresh_token");
    assert_ne!(r3, r2);
    sleep_until(rotated_at + Duration::from_secs(1) + MARGIN).await;
    assert_error(
        &refresh(&wx, &token, &authorizer, &r1).await,
        61023,
        "refresh_token is invalid",
    );
    let latest = refresh(&wx, &token, &authorizer, &r3).await;
    assert_ok_wechat(&latest);
    let r4 = latest.str("authorizer_refresh_token");
    // The list shows the current refresh token, for recovery.
    let listed = list(
        &wx,
        &token,
        json!({"component_appid": COMPONENT, "count": 1}),
    )
    .await;
    assert_eq!(listed.json["list"][0]["refresh_token"], r4.as_str());
    assert_error(
        &refresh(&wx, &token, &authorizer, "refreshtoken@@@made-up").await,
        61023,
        "refresh_token is invalid",
    );
    let c = wx.mock.stats().component(COMPONENT);
    assert_eq!(c.refresh_tokens_rotated, 3);
    assert_eq!(c.authorizer_tokens_issued, 3);
}

#[tokio::test]
async fn a_permission_update_pushes_a_new_code_and_ends_the_old_tokens() {
    let receiver = Receiver::start().await;
    let wx = Wx::start(platform_config(60, 1, &receiver)).await;
    let token = wx.fresh_component_token(&receiver).await;
    let authorizer = "wxf000000000000b01";
    let body =
        json!({"component_appid": COMPONENT, "authorizer_appid": authorizer, "func_info": [1, 2]});
    let r = wx.post_json("/mock/authorize", &body).await;
    assert_eq!(r.status, 200);
    let r = wx.post_json("/mock/authorize", &body).await;
    assert_eq!(r.status, 409, "authorized twice: {r:?}");
    let code = receiver.next("authorized").await;
    let exchanged = wx
        .component(
            "api_query_auth",
            &token,
            json!({"component_appid": COMPONENT, "authorization_code": code.get("AuthorizationCode")}),
        )
        .await;
    let info = &exchanged.json["authorization_info"];
    let old_token = info["authorizer_access_token"].as_str().unwrap().to_owned();
    let old_refresh = info["authorizer_refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let same = wx
        .post_json(
            "/mock/updateauthorize",
            &json!({"component_appid": COMPONENT, "authorizer_appid": authorizer, "func_info": [2, 1]}),
        )
        .await;
    assert_eq!(same.status, 409, "an unchanged set sends nothing: {same:?}");
    let updated_at = Instant::now();
    let r = wx
        .post_json(
            "/mock/updateauthorize",
            &json!({"component_appid": COMPONENT, "authorizer_appid": authorizer}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["func_info"], json!([1, 2, 3]));
    assert_eq!(r.json["push"]["acknowledged"], true);
    let push = receiver.next("updateauthorized").await;
    assert_eq!(push.get("AuthorizerAppid"), authorizer);
    assert_eq!(push.get("AuthorizationCode"), r.str("authorization_code"));
    assert!(push.get("PreAuthCode").starts_with("preauthcode@@@"));
    // The old access token dies with the change; the old refresh token keeps the grace.
    assert_error(&wx.business(&old_token).await, 40001, INVALID_CREDENTIAL);
    assert_ok_wechat(&refresh(&wx, &token, authorizer, &old_refresh).await);
    let exchanged = wx
        .component(
            "api_query_auth",
            &token,
            json!({"component_appid": COMPONENT, "authorization_code": push.get("AuthorizationCode")}),
        )
        .await;
    let info = &exchanged.json["authorization_info"];
    assert_eq!(
        info["func_info"],
        json!([{"funcscope_category": {"id": 1}}, {"funcscope_category": {"id": 2}}, {"funcscope_category": {"id": 3}}])
    );
    let new_refresh = info["authorizer_refresh_token"].as_str().unwrap();
    assert_ne!(new_refresh, old_refresh);
    sleep_until(updated_at + Duration::from_secs(1) + MARGIN).await;
    assert_error(
        &refresh(&wx, &token, authorizer, &old_refresh).await,
        61023,
        "refresh_token is invalid",
    );
    assert_ok_wechat(&refresh(&wx, &token, authorizer, new_refresh).await);
    assert_eq!(
        wx.mock
            .stats()
            .component(COMPONENT)
            .pushes("updateauthorized")
            .acknowledged,
        1
    );
}

#[tokio::test]
async fn control_requests_are_checked() {
    let wx = Wx::start(config(60, 5).with_component(
        COMPONENT,
        COMPONENT_SECRET,
        COMPONENT_TOKEN,
        COMPONENT_KEY,
    ))
    .await;
    let cases = [
        ("/mock/authorize", json!({}), 400),
        ("/mock/authorize", json!({"component_appid": "wxnone"}), 404),
        (
            "/mock/authorize",
            json!({"component_appid": COMPONENT, "authorizer_appid": "wx/../x"}),
            400,
        ),
        (
            "/mock/authorize",
            json!({"component_appid": COMPONENT, "func_info": [0]}),
            400,
        ),
        (
            "/mock/authorize",
            json!({"component_appid": COMPONENT, "func_info": ["1"]}),
            400,
        ),
        (
            "/mock/authorize",
            json!({"component_appid": COMPONENT, "extra": 1}),
            400,
        ),
        (
            "/mock/unauthorize",
            json!({"component_appid": COMPONENT}),
            400,
        ),
        (
            "/mock/unauthorize",
            json!({"component_appid": COMPONENT, "authorizer_appid": "wxnobody"}),
            404,
        ),
        (
            "/mock/updateauthorize",
            json!({"component_appid": COMPONENT, "authorizer_appid": "wxnobody"}),
            404,
        ),
    ];
    for (path, body, status) in cases {
        let r = wx.post_json(path, &body).await;
        assert_eq!(r.status, status, "{path} {body}: {r:?}");
        assert!(r.json["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let r = wx
        .post_raw("/mock/authorize", "application/json", "not json")
        .await;
    assert_eq!(r.status, 400);

    // Without a push URL nothing is pushed, and the caller is told so.
    let r = wx
        .post_json("/mock/authorize", &json!({"component_appid": COMPONENT}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["push"]["sent"], false);
    assert!(wx.mock.stats().component(COMPONENT).pushes.is_empty());
}

#[tokio::test]
async fn failed_pushes_are_counted_not_retried() {
    let receiver = Receiver::start().await;
    let wx = Wx::start(platform_config(60, 5, &receiver)).await;
    receiver.next("component_verify_ticket").await;
    receiver.answer_with(500, "oops");
    let r = wx
        .post_json("/mock/authorize", &json!({"component_appid": COMPONENT}))
        .await;
    assert_eq!(r.json["push"]["sent"], true);
    assert_eq!(r.json["push"]["acknowledged"], false);
    assert_eq!(r.json["push"]["error"], "HTTP 500");
    receiver.next("authorized").await;
    let c = wx.mock.stats().component(COMPONENT);
    assert_eq!(c.pushes("authorized").sent, 1);
    assert_eq!(c.pushes("authorized").failed, 1);
    assert_eq!(c.last_push_failure.as_deref(), Some("HTTP 500"));

    // A receiver that is gone: a network error, counted too.
    drop(receiver);
    let r = wx
        .post_json("/mock/authorize", &json!({"component_appid": COMPONENT}))
        .await;
    assert_eq!(r.json["push"]["acknowledged"], false);
    let error = r.json["push"]["error"].as_str().unwrap();
    assert!(!error.is_empty() && error != "HTTP 500", "{error}");
    let c = wx.mock.stats().component(COMPONENT);
    assert_eq!(c.pushes("authorized").failed, 2);
    assert_eq!(c.authorizations, 2);
}

#[tokio::test]
async fn faults_apply_to_the_platform_endpoints() {
    let receiver = Receiver::start().await;
    let wx = Wx::start(MockConfig {
        authorizers_per_component: 1,
        ..platform_config(60, 5, &receiver)
    })
    .await;
    let ticket = receiver.next("component_verify_ticket").await;
    let ticket = ticket.get("ComponentVerifyTicket");
    wx.post_json(
        "/mock/faults",
        &json!([
            {"path": "/cgi-bin/component/api_component_token", "errcode": -1, "count": 1},
            {"path": "/cgi-bin/component/api_authorizer_token", "account": COMPONENT_B, "errcode": 45009},
            {"path": "/cgi-bin/component/api_get_authorizer_list", "http_status": 502, "count": 1},
        ]),
    )
    .await;
    assert_error(
        &wx.component_token(COMPONENT, COMPONENT_SECRET, ticket)
            .await,
        -1,
        "system error",
    );
    let token = wx
        .component_token(COMPONENT, COMPONENT_SECRET, ticket)
        .await;
    let token = token.str("component_access_token");
    let r = list(
        &wx,
        &token,
        json!({"component_appid": COMPONENT, "count": 1}),
    )
    .await;
    assert_eq!(r.status, 502);
    let r = list(
        &wx,
        &token,
        json!({"component_appid": COMPONENT, "count": 1}),
    )
    .await;
    let r1 = r.json["list"][0]["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The rule for the other platform does not touch this one.
    assert_ok_wechat(&refresh(&wx, &token, &authorizer_appid(0, 1), &r1).await);

    wx.mock.add_fault(FaultRule {
        path: "/cgi-bin/component/api_authorizer_token".into(),
        account: Some(COMPONENT.into()),
        drop_connection: true,
        count: Some(1),
        ..FaultRule::default()
    });
    let cut = reqwest::Client::new()
        .post(wx.url(&format!(
            "/cgi-bin/component/api_authorizer_token?component_access_token={token}"
        )))
        .json(&json!({"component_appid": COMPONENT, "authorizer_appid": authorizer_appid(0, 1), "authorizer_refresh_token": r1}))
        .send()
        .await;
    assert!(cut.is_err(), "the connection is cut");
    wx.post_json(
        "/mock/faults",
        &json!({"path": "/cgi-bin/component/api_start_push_ticket", "delay_ms": 300, "count": 1}),
    )
    .await;
    let start = Instant::now();
    assert_ok_wechat(&wx.start_push_ticket().await);
    assert!(start.elapsed() >= Duration::from_millis(300));

    let stats = wx.mock.stats();
    assert_eq!(
        stats.faults_injected("/cgi-bin/component/api_component_token"),
        1
    );
    assert_eq!(
        stats.faults_injected("/cgi-bin/component/api_get_authorizer_list"),
        1
    );
    assert_eq!(
        stats.faults_injected("/cgi-bin/component/api_authorizer_token"),
        1
    );
    assert_eq!(
        stats.faults_injected("/cgi-bin/component/api_start_push_ticket"),
        1
    );
    assert_eq!(
        stats.outcome("/cgi-bin/component/api_component_token", -1),
        1
    );
    assert_eq!(stats.component(COMPONENT).component_tokens_issued, 1);
    assert_eq!(stats.component(COMPONENT).authorizer_tokens_issued, 1);
}

#[tokio::test]
async fn authorizer_and_component_tokens_expire_like_account_tokens() {
    let receiver = Receiver::start().await;
    let wx = Wx::start(MockConfig {
        authorizers_per_component: 1,
        ..platform_config(2, 1, &receiver)
    })
    .await;
    let token = wx.fresh_component_token(&receiver).await;
    let listed = list(
        &wx,
        &token,
        json!({"component_appid": COMPONENT, "count": 1}),
    )
    .await;
    let r1 = listed.json["list"][0]["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = refresh(&wx, &token, &authorizer_appid(0, 1), &r1).await;
    let minted = Instant::now();
    let authorizer_token = r.str("authorizer_access_token");
    let ticket_url =
        format!("/cgi-bin/ticket/getticket?access_token={authorizer_token}&type=jsapi");
    assert!(!wx.get(&ticket_url).await.ticket().is_empty());
    assert_ok_wechat(&wx.business(&authorizer_token).await);

    sleep_until(minted + Duration::from_secs(2) + MARGIN).await;
    assert_error(
        &wx.business(&authorizer_token).await,
        42001,
        "access_token expired",
    );
    assert_error(&wx.get(&ticket_url).await, 42001, "access_token expired");
    let r = wx
        .component(
            "api_create_preauthcode",
            &token,
            json!({"component_appid": COMPONENT}),
        )
        .await;
    assert_error(&r, 42001, "access_token expired");
    let stats = wx.mock.stats();
    assert_eq!(stats.business(&authorizer_appid(0, 1), 42001), 1);
    assert_eq!(
        stats.issued("/cgi-bin/ticket/getticket", &authorizer_appid(0, 1)),
        1
    );
}
