//! The third-party platform: verify-ticket pushes, the component token, the authorization flow
//! and authorizer tokens that the business API judges like any other token.

use std::time::{Duration, Instant};

use serde_json::json;
use wechat_mock::MockConfig;

use crate::common::*;
use crate::platform::*;

#[tokio::test]
async fn ticket_to_authorizer_token_and_back_to_61023() {
    let receiver = Receiver::start().await;
    let wx = Wx::start(platform_config(4, 1, &receiver)).await;

    // The first verify ticket is pushed at start, sealed for its platform.
    let push = receiver.next("component_verify_ticket").await;
    assert_eq!(push.component, COMPONENT);
    let ticket = push.get("ComponentVerifyTicket").to_owned();
    assert!(ticket.starts_with("ticket@@@"), "{ticket}");
    let created: u64 = push.get("CreateTime").parse().unwrap();
    assert!(created.abs_diff(unix_secs()) < 60);

    let r = wx
        .component_token(COMPONENT, COMPONENT_SECRET, &ticket)
        .await;
    assert_wechat_wire(&r);
    assert!(r.json.get("errcode").is_none(), "{r:?}");
    assert_eq!(r.expires_in(), 4);
    let component_token = r.str("component_access_token");

    // The `access_token=` form works as well as `component_access_token=`.
    let r = wx
        .post_json(
            &format!("/cgi-bin/component/api_create_preauthcode?access_token={component_token}"),
            &json!({"component_appid": COMPONENT}),
        )
        .await;
    assert_wechat_wire(&r);
    assert_eq!(r.expires_in(), 1800);
    let pre_auth_code = r.str("pre_auth_code");
    assert!(pre_auth_code.starts_with("preauthcode@@@"));

    // The account owner authorizes: the `authorized` push carries the code.
    let authorizer = "wxf000000000000a01";
    let r = wx
        .post_json(
            "/mock/authorize",
            &json!({"component_appid": COMPONENT, "authorizer_appid": authorizer,
                    "func_info": [1, {"funcscope_category": {"id": 15}}], "pre_auth_code": pre_auth_code}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json["push"],
        json!({"sent": true, "acknowledged": true, "error": null})
    );
    assert_eq!(r.json["authorizer_appid"], authorizer);
    let code = r.str("authorization_code");
    let push = receiver.next("authorized").await;
    assert_eq!(push.get("AuthorizerAppid"), authorizer);
    assert_eq!(push.get("AuthorizationCode"), code);
    assert_eq!(push.get("PreAuthCode"), pre_auth_code);
    let code_expiry: u64 = push.get("AuthorizationCodeExpiredTime").parse().unwrap();
    assert!(code_expiry.abs_diff(unix_secs() + 3600) < 60);
    // A pre-auth code is good for one authorization.
    let again = wx
        .post_json(
            "/mock/authorize",
            &json!({"component_appid": COMPONENT, "pre_auth_code": pre_auth_code}),
        )
        .await;
    assert_eq!(again.status, 400, "{again:?}");

    let r = wx
        .component(
            "api_query_auth",
            &component_token,
            json!({"component_appid": COMPONENT, "authorization_code": code}),
        )
        .await;
    assert_ok_wechat(&r);
    let info = &r.json["authorization_info"];
    assert_eq!(info["authorizer_appid"], authorizer);
    assert_eq!(info["expires_in"], 4);
    assert_eq!(
        info["func_info"],
        json!([{"funcscope_category": {"id": 1}}, {"funcscope_category": {"id": 15}}])
    );
    let refresh = info["authorizer_refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(refresh.starts_with("refreshtoken@@@"), "{refresh}");
    let first = info["authorizer_access_token"].as_str().unwrap().to_owned();

    // The authorizer token works on the business API and for the JS-SDK ticket.
    assert_ok_wechat(&wx.business(&first).await);
    let ticket = wx
        .get(&format!(
            "/cgi-bin/ticket/getticket?access_token={first}&type=jsapi"
        ))
        .await;
    assert!(!ticket.ticket().is_empty());

    // A refresh mints a new token; the old one lives out the grace, then answers 40001.
    let refreshed_at = Instant::now();
    let r = wx
        .component(
            "api_authorizer_token",
            &component_token,
            json!({"component_appid": COMPONENT, "authorizer_appid": authorizer, "authorizer_refresh_token": refresh}),
        )
        .await;
    assert_wechat_wire(&r);
    assert!(r.json.get("errcode").is_none(), "{r:?}");
    assert_eq!(r.expires_in(), 4);
    assert_eq!(r.str("authorizer_refresh_token"), refresh, "no rotation");
    let second = r.str("authorizer_access_token");
    assert_ne!(second, first);
    assert_ok_wechat(&wx.business(&first).await);
    sleep_until(refreshed_at + Duration::from_secs(1) + MARGIN).await;
    assert_error(&wx.business(&first).await, 40001, INVALID_CREDENTIAL);
    assert_ok_wechat(&wx.business(&second).await);

    // The owner withdraws: the push goes out, the refresh token and the tokens stop working.
    let r = wx
        .post_json(
            "/mock/unauthorize",
            &json!({"component_appid": COMPONENT, "authorizer_appid": authorizer}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["push"]["acknowledged"], true);
    let push = receiver.next("unauthorized").await;
    assert_eq!(push.get("AuthorizerAppid"), authorizer);
    assert!(!push.fields.contains_key("AuthorizationCode"));
    let r = wx
        .component(
            "api_authorizer_token",
            &component_token,
            json!({"component_appid": COMPONENT, "authorizer_appid": authorizer, "authorizer_refresh_token": refresh}),
        )
        .await;
    assert_error(&r, 61023, "refresh_token is invalid");
    assert_error(&wx.business(&second).await, 40001, INVALID_CREDENTIAL);
    let r = wx
        .component(
            "api_query_auth",
            &component_token,
            json!({"component_appid": COMPONENT, "authorization_code": code}),
        )
        .await;
    assert_error(&r, 61009, "code is invalid");
    let r = wx
        .component(
            "api_get_authorizer_list",
            &component_token,
            json!({"component_appid": COMPONENT, "offset": 0, "count": 500}),
        )
        .await;
    assert_eq!(r.json, json!({"total_count": 0, "list": []}));

    let stats = wx.mock.stats();
    let c = stats.component(COMPONENT);
    assert_eq!(c.component_tokens_issued, 1);
    assert_eq!(c.pre_auth_codes_issued, 1);
    assert_eq!(c.authorizer_tokens_issued, 2);
    assert_eq!(
        (c.authorizations, c.unauthorizations, c.authorizers),
        (1, 1, 0)
    );
    assert_eq!(c.pushes("authorized").acknowledged, 1);
    assert_eq!(c.pushes("unauthorized").acknowledged, 1);
    assert!(c.pushes("component_verify_ticket").acknowledged >= 1);
    assert_eq!(c.last_push_failure, None);
    assert_eq!(
        stats.issued("/cgi-bin/component/api_component_token", COMPONENT),
        1
    );
    assert_eq!(
        stats.issued("/cgi-bin/component/api_query_auth", authorizer),
        1
    );
    assert_eq!(
        stats.issued("/cgi-bin/component/api_authorizer_token", authorizer),
        1
    );
    assert_eq!(
        stats.calls("/cgi-bin/component/api_authorizer_token", COMPONENT),
        2
    );
    assert_eq!(stats.business(authorizer, 0), 3);
    assert_eq!(stats.business(authorizer, 40001), 2);
    assert_eq!(
        stats.outcome("/cgi-bin/component/api_authorizer_token", 61023),
        1
    );
    // Nothing secret in the stats.
    let served = serde_json::to_string(&stats).unwrap();
    for secret in [&refresh, &second, &component_token, &code, &pre_auth_code] {
        assert!(!served.contains(secret.as_str()));
    }
    assert!(!served.contains(COMPONENT_SECRET) && !served.contains(COMPONENT_KEY));
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn the_component_token_checks_its_ticket_and_secret() {
    let receiver = Receiver::start().await;
    let wx = Wx::start(wechat_mock::MockConfig {
        verify_ticket_lifetime: Duration::from_secs(5),
        ..platform_config(60, 1, &receiver)
    })
    .await;
    let t1 = receiver.next("component_verify_ticket").await;
    let t1 = t1.get("ComponentVerifyTicket");

    let r = wx
        .post_json(
            "/cgi-bin/component/api_component_token",
            &json!({"component_appsecret": COMPONENT_SECRET, "component_verify_ticket": t1}),
        )
        .await;
    assert_error(&r, 41018, "missing component_appid");
    let r = wx
        .component_token("wxnotacomponent", COMPONENT_SECRET, t1)
        .await;
    assert_error(&r, 61011, "invalid component");
    let r = wx.component_token(COMPONENT, "wrong", t1).await;
    assert_error(&r, 40125, "invalid appsecret");
    let r = wx
        .component_token(COMPONENT, COMPONENT_SECRET, "ticket@@@made-up")
        .await;
    assert_error(&r, 61006, "component ticket is invalid");
    // Another platform's ticket is not this one's.
    let tb = receiver
        .next_for(COMPONENT_B, "component_verify_ticket")
        .await;
    let r = wx
        .component_token(COMPONENT, COMPONENT_SECRET, tb.get("ComponentVerifyTicket"))
        .await;
    assert_error(&r, 61006, "component ticket is invalid");
    let r = wx
        .get("/cgi-bin/component/api_component_token?component_appid=x")
        .await;
    assert_error(&r, 43002, "require POST method");

    // Each call mints a token; the older one keeps the grace, then 40001.
    let first = wx.component_token(COMPONENT, COMPONENT_SECRET, t1).await;
    let first = first.str("component_access_token");
    let minted = Instant::now();
    let second = wx.component_token(COMPONENT, COMPONENT_SECRET, t1).await;
    let second = second.str("component_access_token");
    assert_ne!(first, second);
    let preauth = |token: String| {
        let wx = &wx;
        async move {
            wx.component(
                "api_create_preauthcode",
                &token,
                json!({"component_appid": COMPONENT}),
            )
            .await
        }
    };
    assert_ok_wechat(&preauth(first.clone()).await);
    sleep_until(minted + Duration::from_secs(1) + MARGIN).await;
    assert_error(&preauth(first).await, 40001, INVALID_CREDENTIAL);
    assert_ok_wechat(&preauth(second.clone()).await);

    // A newer ticket that the receiver did not acknowledge leaves the old one working...
    receiver.answer_with(200, "fail");
    assert_ok_wechat(&wx.start_push_ticket().await);
    let unacked = receiver.next("component_verify_ticket").await;
    let unacked = unacked.get("ComponentVerifyTicket").to_owned();
    wait_for_push_failure(&wx).await;
    assert_ok_wechat(&wx.component_token(COMPONENT, COMPONENT_SECRET, t1).await);
    // ...an acknowledged one leaves it the grace, then it is invalid.
    receiver.answer_with(200, "success");
    assert_ok_wechat(&wx.start_push_ticket().await);
    let t3 = receiver.next("component_verify_ticket").await;
    let t3 = t3.get("ComponentVerifyTicket").to_owned();
    let acked = Instant::now();
    assert_ok_wechat(&wx.component_token(COMPONENT, COMPONENT_SECRET, t1).await);
    sleep_until(acked + Duration::from_secs(1) + MARGIN).await;
    let r = wx.component_token(COMPONENT, COMPONENT_SECRET, t1).await;
    assert_error(&r, 61006, "component ticket is invalid");
    assert_error(
        &wx.component_token(COMPONENT, COMPONENT_SECRET, &unacked)
            .await,
        61006,
        "component ticket is invalid",
    );
    assert_ok_wechat(&wx.component_token(COMPONENT, COMPONENT_SECRET, &t3).await);

    // Past its lifetime a ticket is expired.
    sleep_until(acked + Duration::from_secs(5) + MARGIN).await;
    let r = wx.component_token(COMPONENT, COMPONENT_SECRET, &t3).await;
    assert_error(&r, 61005, "component ticket is expired");

    let r = wx
        .post_json(
            "/cgi-bin/component/api_start_push_ticket",
            &json!({"component_appid": COMPONENT, "component_secret": "wrong"}),
        )
        .await;
    assert_error(&r, 40125, "invalid appsecret");
    let c = wx.mock.stats().component(COMPONENT);
    assert_eq!(c.pushes("component_verify_ticket").failed, 1);
    assert!(c.pushes("component_verify_ticket").acknowledged >= 2);
    assert_eq!(
        c.last_push_failure.as_deref(),
        Some("answered \"fail\" instead of \"success\"")
    );
}

/// Waits until the mock has counted a failed verify-ticket push of [`COMPONENT`].
async fn wait_for_push_failure(wx: &Wx) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while wx
        .mock
        .stats()
        .component(COMPONENT)
        .pushes("component_verify_ticket")
        .failed
        == 0
    {
        assert!(Instant::now() < deadline, "the failure was never counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn tokens_of_one_kind_do_not_work_as_another() {
    let receiver = Receiver::start().await;
    let wx = Wx::start(platform_config(60, 5, &receiver)).await;
    let component_token = wx.fresh_component_token(&receiver).await;
    // A component token is no business token.
    assert_error(
        &wx.business(&component_token).await,
        40014,
        "invalid access_token",
    );
    // An account token is no component token; a missing one is missing.
    let app_token = wx.legacy_token().await;
    let body = json!({"component_appid": COMPONENT});
    let r = wx
        .component("api_create_preauthcode", &app_token, body.clone())
        .await;
    assert_error(&r, 40014, "invalid access_token");
    let r = wx
        .post_json("/cgi-bin/component/api_create_preauthcode", &body)
        .await;
    assert_error(&r, 41001, "access_token missing");
    // The body must name the token's platform.
    let r = wx
        .component(
            "api_create_preauthcode",
            &component_token,
            json!({"component_appid": COMPONENT_B}),
        )
        .await;
    assert_error(&r, 61011, "invalid component");
    let r = wx
        .component("api_create_preauthcode", &component_token, json!({}))
        .await;
    assert_error(&r, 41018, "missing component_appid");
    // Codes: missing, made up.
    let r = wx
        .component("api_query_auth", &component_token, body.clone())
        .await;
    assert_error(&r, 41008, "missing code");
    let r = wx
        .component(
            "api_query_auth",
            &component_token,
            json!({"component_appid": COMPONENT, "authorization_code": "queryauthcode@@@nope"}),
        )
        .await;
    assert_error(&r, 61009, "code is invalid");
    let r = wx
        .component(
            "api_get_authorizer_info",
            &component_token,
            json!({"component_appid": COMPONENT, "authorizer_appid": "wxnobody"}),
        )
        .await;
    assert_error(&r, 61003, "component is not authorized by this account");
    // Calls count under the token's platform, else the body's.
    let stats = wx.mock.stats();
    assert_eq!(
        stats.calls("/cgi-bin/component/api_create_preauthcode", COMPONENT),
        4
    );
    assert_eq!(
        stats.total_calls("/cgi-bin/component/api_create_preauthcode"),
        4
    );
}

#[tokio::test]
async fn an_authorization_code_expires() {
    let receiver = Receiver::start().await;
    let wx = Wx::start(wechat_mock::MockConfig {
        authorization_code_lifetime: Duration::from_secs(1),
        ..platform_config(60, 5, &receiver)
    })
    .await;
    let component_token = wx.fresh_component_token(&receiver).await;
    let r = wx
        .post_json("/mock/authorize", &json!({"component_appid": COMPONENT}))
        .await;
    let issued = Instant::now();
    let code = r.str("authorization_code");
    let authorizer = r.str("authorizer_appid");
    assert!(
        authorizer.starts_with("wx") && authorizer.len() == 18,
        "{authorizer}"
    );
    assert_eq!(r.json["expires_in"], 1);
    assert_eq!(r.json["func_info"].as_array().unwrap().len(), 10);
    // Until the code is exchanged, WeChat lists the authorizer without a refresh token.
    let list = wx
        .component(
            "api_get_authorizer_list",
            &component_token,
            json!({"component_appid": COMPONENT, "count": 10}),
        )
        .await;
    assert_eq!(
        list.json["list"][0]["authorizer_appid"],
        authorizer.as_str()
    );
    assert_eq!(list.json["list"][0]["refresh_token"], "");
    sleep_until(issued + Duration::from_secs(1) + MARGIN).await;
    let r = wx
        .component(
            "api_query_auth",
            &component_token,
            json!({"component_appid": COMPONENT, "authorization_code": code}),
        )
        .await;
    assert_error(&r, 61010, "code is expired");
}

#[tokio::test]
async fn a_mock_started_without_a_push_url_pushes_once_told_where() {
    let receiver = Receiver::start().await;
    let wx = Wx::start(MockConfig {
        push_url: None,
        ..platform_config(60, 5, &receiver)
    })
    .await;
    // Nothing is pushed, and nothing counted as failed, while there is nowhere to push to.
    let r = wx.start_push_ticket().await;
    assert_eq!(r.json["errcode"], 0, "{r:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pushes = wx
        .mock
        .stats()
        .component(COMPONENT)
        .pushes("component_verify_ticket");
    assert_eq!((pushes.sent, pushes.failed), (0, 0));

    wx.mock.push_to(&receiver.push_url()).expect("a usable URL");
    let push = receiver.next("component_verify_ticket").await;
    let ticket = push.get("ComponentVerifyTicket").to_owned();
    assert_ok_wechat(
        &wx.component_token(COMPONENT, COMPONENT_SECRET, &ticket)
            .await,
    );
    receiver
        .next_for(COMPONENT_B, "component_verify_ticket")
        .await;

    // Pushes go to one place only.
    let again = wx.mock.push_to(&receiver.push_url()).unwrap_err();
    assert_eq!(again.kind(), std::io::ErrorKind::InvalidInput);
    assert!(again.to_string().contains("already pushes"), "{again}");
    let bad = Wx::start(MockConfig {
        push_url: None,
        ..platform_config(60, 5, &receiver)
    })
    .await;
    let refused = bad.mock.push_to("https://example.com/{component_appid}");
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
}
