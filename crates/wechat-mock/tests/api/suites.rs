//! Work WeChat's provider side: suite tickets pushed and sealed for their suite, the suite
//! token, installations with their single-use codes and permanent codes, corp tokens that the
//! Work APIs accept, the provider token, URL verification and the mock-only backdoors.

use std::time::{Duration, Instant};

use serde_json::json;
use wechat_mock::{auth_corpid, FaultRule, MockConfig};

use crate::common::*;
use crate::suite_receiver::*;

const CORP_X: &str = "wwx0000000000000001";

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `POST /mock/install` of `corpid` on `suite`, expecting success.
async fn install(wx: &Wx, suite: &str, corpid: &str) -> Resp {
    let r = wx
        .post_json(
            "/mock/install",
            &json!({"suite_id": suite, "corpid": corpid}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    r
}

/// Exchanges `auth_code` on `suite_token`'s suite, expecting success.
async fn exchange(wx: &Wx, suite_token: &str, auth_code: &str) -> Resp {
    let r = wx
        .service(
            "get_permanent_code",
            suite_token,
            json!({"auth_code": auth_code}),
        )
        .await;
    assert_ok_wechat(&r);
    r
}

#[tokio::test]
async fn suite_tickets_are_sealed_for_their_suite_and_buy_one_token() {
    let receiver = SuiteReceiver::start().await;
    let wx = Wx::start(suite_config(60, 5, &receiver)).await;

    // The first ticket goes out at start, in the Work envelope, signed with msg_signature only.
    let push = receiver.next(SUITE, "suite_ticket").await;
    assert_eq!(push.query, ["msg_signature", "nonce", "timestamp"]);
    assert_eq!(push.envelope["ToUserName"], SUITE);
    assert_eq!(push.envelope["AgentID"], "");
    let names: Vec<&str> = push.fields.keys().map(String::as_str).collect();
    assert_eq!(names, ["InfoType", "SuiteId", "SuiteTicket", "TimeStamp"]);
    let stamp: u64 = push.get("TimeStamp").parse().unwrap();
    assert!(stamp.abs_diff(unix_secs()) < 60);
    let first = push.get("SuiteTicket").to_owned();
    assert_eq!(first.len(), 64);

    let r = wx.suite_token(SUITE, SUITE_SECRET, &first).await;
    assert_wechat_wire(&r);
    assert!(r.json.get("errcode").is_none(), "{r:?}");
    assert_eq!(r.expires_in(), 60);
    let token = r.str("suite_access_token");

    // A ticket on demand: a new value; the older one still works, and the token is the same.
    let r = wx
        .post_json(&format!("/mock/suites/{SUITE}/push_ticket"), &json!({}))
        .await;
    assert_eq!(
        r.json["push"],
        json!({"sent": true, "acknowledged": true, "error": null})
    );
    let second = receiver.next_ticket(SUITE).await;
    assert_ne!(second, first);
    for ticket in [&first, &second] {
        let r = wx.suite_token(SUITE, SUITE_SECRET, ticket).await;
        assert_eq!(r.str("suite_access_token"), token);
    }
    // The other suite's tickets are its own.
    let other = receiver.next_ticket(SUITE_B).await;
    let r = wx.suite_token(SUITE_B, SUITE_B_SECRET, &other).await;
    assert_ne!(r.str("suite_access_token"), token);

    let stats = wx.mock.stats();
    let s = stats.suite(SUITE);
    assert_eq!(s.pushes("suite_ticket").acknowledged, 2);
    assert_eq!(s.pushes("suite_ticket").failed, 0);
    assert_eq!(s.suite_tokens_issued, 1);
    assert_eq!(stats.calls("/cgi-bin/service/get_suite_token", SUITE), 3);
    assert_eq!(stats.issued("/cgi-bin/service/get_suite_token", SUITE), 1);
    assert_eq!(stats.outcome("/cgi-bin/service/get_suite_token", 0), 4);
    let served = serde_json::to_string(&stats).unwrap();
    for secret in [&first, &second, &token] {
        assert!(!served.contains(secret.as_str()));
    }
}

#[tokio::test]
async fn the_suite_token_checks_suite_secret_and_ticket() {
    let receiver = SuiteReceiver::start().await;
    let wx = Wx::start(MockConfig {
        suite_ticket_lifetime: Duration::from_secs(1),
        ..suite_config(2, 1, &receiver)
    })
    .await;
    let ticket = receiver.next_ticket(SUITE).await;
    let pushed = Instant::now();
    let other = receiver.next_ticket(SUITE_B).await;

    let r = wx
        .post_json(
            "/cgi-bin/service/get_suite_token",
            &json!({"suite_secret": SUITE_SECRET, "suite_ticket": ticket}),
        )
        .await;
    assert_work_error(&r, 41021, "suite_id missing");
    let r = wx.suite_token("wwnosuch", SUITE_SECRET, &ticket).await;
    assert_work_error(&r, 40083, "invalid SuiteId");
    let r = wx
        .post_json(
            "/cgi-bin/service/get_suite_token",
            &json!({"suite_id": SUITE, "suite_ticket": ticket}),
        )
        .await;
    assert_work_error(&r, 41024, "suite_secret missing");
    let r = wx.suite_token(SUITE, SUITE_B_SECRET, &ticket).await;
    assert_work_error(&r, 40080, "invalid suite_secret");
    let r = wx
        .post_json(
            "/cgi-bin/service/get_suite_token",
            &json!({"suite_id": SUITE, "suite_secret": SUITE_SECRET}),
        )
        .await;
    assert_work_error(&r, 41023, "suite_ticket missing");
    // Never pushed, or pushed to another suite.
    let r = wx.suite_token(SUITE, SUITE_SECRET, "made-up-ticket").await;
    assert_work_error(&r, 40085, "invalid suite ticket");
    let r = wx.suite_token(SUITE, SUITE_SECRET, &other).await;
    assert_work_error(&r, 40085, "invalid suite ticket");

    let before = Instant::now();
    let token = wx.suite_token(SUITE, SUITE_SECRET, &ticket).await;
    let token = token.str("suite_access_token");
    let minted = Instant::now();
    assert!(before >= pushed);

    // Past its lifetime the ticket is refused; the token it bought lives on.
    sleep_until(pushed + Duration::from_secs(1) + MARGIN).await;
    let r = wx.suite_token(SUITE, SUITE_SECRET, &ticket).await;
    assert_work_error(&r, 40085, "invalid suite ticket");
    let pre_auth = |token: String| {
        let wx = &wx;
        async move {
            wx.get(&format!(
                "/cgi-bin/service/get_pre_auth_code?suite_access_token={token}"
            ))
            .await
        }
    };
    let r = pre_auth(token.clone()).await;
    assert_ok_wechat(&r);
    assert_eq!(r.json["errcode"], 0);
    assert_eq!(r.expires_in(), 1200);

    // Suite tokens: missing, forged, of another kind, expired.
    let r = wx.get("/cgi-bin/service/get_pre_auth_code").await;
    assert_work_error(&r, 41022, "suite_access_token missing");
    let invalid = "invalid suite_acccess_token or provider_access_token";
    assert_work_error(&pre_auth(format!("{token}x")).await, 40082, invalid);
    let corp_token = wx.corp_token(CORPID, CORP_SECRET_1).await.access_token();
    assert_work_error(&pre_auth(corp_token).await, 40082, invalid);
    sleep_until(minted + Duration::from_secs(2) + MARGIN).await;
    let r = pre_auth(token.clone()).await;
    assert_work_error(&r, 42009, "suite_access_token expired");

    // A new ticket buys a new token.
    wx.post_json(&format!("/mock/suites/{SUITE}/push_ticket"), &json!({}))
        .await;
    let renewed = wx.fresh_suite_token(&receiver, SUITE).await;
    assert_ne!(renewed, token);
    assert_ok_wechat(&pre_auth(renewed).await);

    let stats = wx.mock.stats();
    assert_eq!(stats.suite(SUITE).suite_tokens_issued, 2);
    assert_eq!(stats.suite(SUITE).pre_auth_codes_issued, 2);
    assert_eq!(stats.calls("/cgi-bin/service/get_suite_token", "-"), 2);
    assert_eq!(stats.outcome("/cgi-bin/service/get_suite_token", 40085), 3);
    assert_eq!(stats.calls("/cgi-bin/service/get_pre_auth_code", SUITE), 3);
}

#[tokio::test]
async fn an_install_gives_a_permanent_code_and_a_corp_token_the_work_apis_accept() {
    let receiver = SuiteReceiver::start().await;
    let wx = Wx::start(suite_config(60, 5, &receiver)).await;
    let suite_token = wx.fresh_suite_token(&receiver, SUITE).await;

    let r = wx
        .post_json(
            "/mock/install",
            &json!({"suite_id": SUITE, "corpid": CORP_X, "corp_name": "Acme"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json["push"],
        json!({"sent": true, "acknowledged": true, "error": null})
    );
    assert_eq!(r.json["corpid"], CORP_X);
    assert_eq!(r.json["agentid"], 1_000_001);
    let auth_code = r.str("auth_code");
    let push = receiver.next(SUITE, "create_auth").await;
    assert_eq!(push.get("AuthCode"), auth_code);
    assert!(push.get("TimeStamp").parse::<u64>().is_ok());
    // Installing twice is a conflict.
    let again = wx
        .post_json(
            "/mock/install",
            &json!({"suite_id": SUITE, "corpid": CORP_X}),
        )
        .await;
    assert_eq!(again.status, 409, "{again:?}");

    let r = exchange(&wx, &suite_token, &auth_code).await;
    assert_eq!(r.json["errcode"], 0);
    assert_eq!(r.expires_in(), 60);
    let corp_token = r.str("access_token");
    let permanent = r.str("permanent_code");
    assert_eq!(r.json["auth_corp_info"]["corpid"], CORP_X);
    assert_eq!(r.json["auth_corp_info"]["corp_name"], "Acme");
    assert_eq!(r.json["auth_info"]["agent"][0]["agentid"], 1_000_001);

    // The code worked once; made-up and missing codes fail too.
    let invalid_code = |code: &str| {
        let (wx, token, body) = (&wx, suite_token.clone(), json!({"auth_code": code}));
        async move { wx.service("get_permanent_code", &token, body).await }
    };
    assert_work_error(&invalid_code(&auth_code).await, 40078, "invalid auth_code");
    assert_work_error(&invalid_code("nope").await, 40078, "invalid auth_code");
    let r = wx
        .service("get_permanent_code", &suite_token, json!({}))
        .await;
    assert_work_error(&r, 41008, "missing code");

    // The corp and its app, again.
    let r = wx
        .service(
            "get_auth_info",
            &suite_token,
            json!({"auth_corpid": CORP_X, "permanent_code": permanent}),
        )
        .await;
    assert_ok_wechat(&r);
    assert_eq!(r.json["auth_corp_info"]["corpid"], CORP_X);
    assert_eq!(r.json["auth_info"]["agent"][0]["agentid"], 1_000_001);
    let r = wx
        .service(
            "get_auth_info",
            &suite_token,
            json!({"auth_corpid": CORP_X, "permanent_code": "wrong"}),
        )
        .await;
    assert_work_error(&r, 40084, "invalid permanent_code");
    let r = wx
        .service(
            "get_corp_token",
            &suite_token,
            json!({"permanent_code": permanent}),
        )
        .await;
    assert_work_error(&r, 41002, "corpid missing");
    let r = wx
        .service(
            "get_corp_token",
            &suite_token,
            json!({"auth_corpid": CORP_X}),
        )
        .await;
    assert_work_error(&r, 41025, "permanent_code missing");

    // get_corp_token: the same token while it lives, and no errcode on success.
    let r = wx.suite_corp_token(&suite_token, CORP_X, &permanent).await;
    assert_wechat_wire(&r);
    assert!(r.json.get("errcode").is_none(), "{r:?}");
    assert_eq!(r.str("access_token"), corp_token);
    assert_eq!(r.expires_in(), 60);
    // Another suite's token cannot use this corp's code.
    let other_suite = wx.fresh_suite_token(&receiver, SUITE_B).await;
    let r = wx.suite_corp_token(&other_suite, CORP_X, &permanent).await;
    assert_work_error(&r, 40084, "invalid permanent_code");

    // The corp token is a Work app token: tickets and the business API take it.
    let jsapi = wx
        .get(&format!(
            "/cgi-bin/get_jsapi_ticket?access_token={corp_token}"
        ))
        .await;
    let jsapi = jsapi.ticket();
    let agent = wx
        .get(&format!(
            "/cgi-bin/ticket/get?access_token={corp_token}&type=agent_config"
        ))
        .await;
    assert_ne!(agent.ticket(), jsapi);
    let ok = wx.business(&corp_token).await;
    assert_ok_wechat(&ok);
    assert_eq!(ok.json["errcode"], 0);

    let app = format!("{CORP_X}/1000001");
    let stats = wx.mock.stats();
    let s = stats.suite(SUITE);
    assert_eq!((s.installs, s.installed), (1, 1));
    assert_eq!((s.permanent_codes_issued, s.corp_tokens_issued), (1, 1));
    assert_eq!(s.pushes("create_auth").acknowledged, 1);
    assert_eq!(
        stats.issued("/cgi-bin/service/get_permanent_code", CORP_X),
        1
    );
    assert_eq!(stats.issued("/cgi-bin/service/get_corp_token", CORP_X), 0);
    assert_eq!(stats.calls("/cgi-bin/service/get_corp_token", CORP_X), 3);
    assert_eq!(stats.calls("/cgi-bin/service/get_corp_token", "-"), 1);
    assert_eq!(stats.calls("/cgi-bin/service/get_permanent_code", SUITE), 4);
    assert_eq!(stats.issued("/cgi-bin/get_jsapi_ticket", &app), 1);
    assert_eq!(stats.business(&app, 0), 1);
    let served = serde_json::to_string(&stats).unwrap();
    for secret in [&corp_token, &permanent, &auth_code, &suite_token] {
        assert!(!served.contains(secret.as_str()));
    }
}

#[tokio::test]
async fn a_reset_kills_the_old_code_and_an_uninstall_kills_everything() {
    let receiver = SuiteReceiver::start().await;
    let wx = Wx::start(suite_config(60, 5, &receiver)).await;
    let suite_token = wx.fresh_suite_token(&receiver, SUITE).await;
    let code = install(&wx, SUITE, CORP_X).await.str("auth_code");
    let first = exchange(&wx, &suite_token, &code).await;
    let (old_code, corp_token) = (first.str("permanent_code"), first.str("access_token"));

    // A reset: the old code dies at once; the corp token lives on.
    let r = wx
        .post_json(
            "/mock/reset_permanent_code",
            &json!({"suite_id": SUITE, "corpid": CORP_X}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["push"]["acknowledged"], true);
    let push = receiver.next(SUITE, "reset_permanent_code").await;
    assert_eq!(push.get("AuthCode"), r.str("auth_code"));
    let r = wx.suite_corp_token(&suite_token, CORP_X, &old_code).await;
    assert_work_error(&r, 40084, "invalid permanent_code");
    assert_ok_wechat(&wx.business(&corp_token).await);
    let second = exchange(&wx, &suite_token, push.get("AuthCode")).await;
    let new_code = second.str("permanent_code");
    assert_ne!(new_code, old_code);
    assert_eq!(second.str("access_token"), corp_token);
    let r = wx.suite_corp_token(&suite_token, CORP_X, &new_code).await;
    assert_eq!(r.str("access_token"), corp_token);

    // A change of permissions is only a push.
    let r = wx
        .post_json(
            "/mock/change_auth",
            &json!({"suite_id": SUITE, "corpid": CORP_X}),
        )
        .await;
    assert_eq!(
        r.json,
        json!({"corpid": CORP_X, "push": {"sent": true, "acknowledged": true, "error": null}})
    );
    let push = receiver.next(SUITE, "change_auth").await;
    assert_eq!(push.get("AuthCorpId"), CORP_X);

    // An uninstall: the code, the corp token and the app's tickets stop working.
    let r = wx
        .post_json(
            "/mock/uninstall",
            &json!({"suite_id": SUITE, "corpid": CORP_X}),
        )
        .await;
    assert_eq!(r.json["push"]["acknowledged"], true, "{r:?}");
    let push = receiver.next(SUITE, "cancel_auth").await;
    assert_eq!(push.get("AuthCorpId"), CORP_X);
    assert!(!push.fields.contains_key("AuthCode"));
    let r = wx.suite_corp_token(&suite_token, CORP_X, &new_code).await;
    assert_work_error(&r, 40084, "invalid permanent_code");
    assert_work_error(&wx.business(&corp_token).await, 40001, "invalid credential");
    let r = wx
        .get(&format!(
            "/cgi-bin/get_jsapi_ticket?access_token={corp_token}"
        ))
        .await;
    assert_work_error(&r, 40001, "invalid credential");
    let listed = wx.get(&format!("/mock/suites/{SUITE}/installations")).await;
    assert_eq!(listed.json["total"], 0);
    for path in [
        "/mock/uninstall",
        "/mock/reset_permanent_code",
        "/mock/change_auth",
    ] {
        let r = wx
            .post_json(path, &json!({"suite_id": SUITE, "corpid": CORP_X}))
            .await;
        assert_eq!(r.status, 404, "{path}: {r:?}");
    }

    // The corp can install again, with a new code.
    let code = install(&wx, SUITE, CORP_X).await.str("auth_code");
    let again = exchange(&wx, &suite_token, &code).await;
    assert_ne!(again.str("permanent_code"), new_code);
    assert_ne!(again.str("access_token"), corp_token);

    let s = wx.mock.stats().suite(SUITE);
    assert_eq!(
        (
            s.installs,
            s.uninstalls,
            s.resets,
            s.auth_changes,
            s.installed
        ),
        (2, 1, 1, 1, 1)
    );
    assert_eq!(s.permanent_codes_issued, 3);
    for info_type in [
        "create_auth",
        "reset_permanent_code",
        "change_auth",
        "cancel_auth",
    ] {
        assert_eq!(s.pushes(info_type).failed, 0, "{info_type}");
    }
}

#[tokio::test]
async fn an_install_link_returns_the_code_instead_of_pushing() {
    let receiver = SuiteReceiver::start().await;
    let wx = Wx::start(suite_config(60, 5, &receiver)).await;
    let suite_token = wx.fresh_suite_token(&receiver, SUITE).await;
    let other_suite = wx.fresh_suite_token(&receiver, SUITE_B).await;
    let pre_auth_code = |token: String| {
        let wx = &wx;
        async move {
            wx.get(&format!(
                "/cgi-bin/service/get_pre_auth_code?suite_access_token={token}"
            ))
            .await
            .str("pre_auth_code")
        }
    };
    let code = pre_auth_code(suite_token.clone()).await;
    let r = wx
        .post_json(
            "/mock/install",
            &json!({"suite_id": SUITE, "pre_auth_code": code, "agentid": 1_000_042}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["push"], serde_json::Value::Null);
    assert_eq!(r.json["agentid"], 1_000_042);
    let corpid = r.str("corpid");
    assert!(corpid.starts_with("ww") && corpid.len() == 18, "{corpid}");
    let exchanged = exchange(&wx, &suite_token, &r.str("auth_code")).await;
    assert_eq!(exchanged.json["auth_corp_info"]["corpid"], corpid.as_str());

    // A pre-auth code is good for one install, on its own suite only.
    let r = wx
        .post_json(
            "/mock/install",
            &json!({"suite_id": SUITE, "pre_auth_code": code}),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    let code_b = pre_auth_code(other_suite).await;
    let r = wx
        .post_json(
            "/mock/install",
            &json!({"suite_id": SUITE, "pre_auth_code": code_b}),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    // Malformed requests.
    for body in [
        json!({"corpid": CORP_X}),
        json!({"suite_id": "wwnosuch"}),
        json!({"suite_id": SUITE, "corpid": "no spaces"}),
        json!({"suite_id": SUITE, "agentid": 0}),
        json!({"suite_id": SUITE, "extra": 1}),
    ] {
        let r = wx.post_json("/mock/install", &body).await;
        assert!(matches!(r.status, 400 | 404), "{body}: {r:?}");
        assert!(r.json["error"].is_string());
    }
    let r = wx
        .post_json(
            "/mock/uninstall",
            &json!({"suite_id": SUITE, "corpid": CORP_X, "corp_name": "x"}),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");

    let s = wx.mock.stats().suite(SUITE);
    assert_eq!(s.pushes("create_auth").sent, 0);
    assert_eq!((s.installs, s.installed), (1, 1));
}

#[tokio::test]
async fn the_provider_token_and_service_tokens_on_the_business_api() {
    let receiver = SuiteReceiver::start().await;
    let wx = Wx::start(suite_config(60, 5, &receiver)).await;

    let r = wx
        .post_json(
            "/cgi-bin/service/get_provider_token",
            &json!({"provider_secret": PROVIDER_SECRET}),
        )
        .await;
    assert_work_error(&r, 41002, "corpid missing");
    let r = wx.provider_token("wwnosuch", PROVIDER_SECRET).await;
    assert_work_error(&r, 40013, "invalid corpid");
    let r = wx
        .post_json(
            "/cgi-bin/service/get_provider_token",
            &json!({"corpid": PROVIDER}),
        )
        .await;
    assert_work_error(&r, 41004, "corpsecret missing");
    let r = wx.provider_token(PROVIDER, SUITE_SECRET).await;
    assert_work_error(&r, 40001, "invalid credential");

    let r = wx.provider_token(PROVIDER, PROVIDER_SECRET).await;
    assert_wechat_wire(&r);
    assert!(r.json.get("errcode").is_none(), "{r:?}");
    assert_eq!(r.expires_in(), 60);
    let provider = r.str("provider_access_token");
    let again = wx.provider_token(PROVIDER, PROVIDER_SECRET).await;
    assert_eq!(again.str("provider_access_token"), provider);

    // get_api_domain_ip recognises both service tokens, in their own parameter.
    let suite_token = wx.fresh_suite_token(&receiver, SUITE).await;
    for (param, token) in [
        ("provider_access_token", &provider),
        ("suite_access_token", &suite_token),
    ] {
        let ok = wx
            .get(&format!("/cgi-bin/get_api_domain_ip?{param}={token}"))
            .await;
        assert_ok_wechat(&ok);
        assert_eq!(ok.json["errcode"], 0, "{param}");
        let forged = wx
            .get(&format!("/cgi-bin/get_api_domain_ip?{param}={token}x"))
            .await;
        assert_work_error(
            &forged,
            40082,
            "invalid suite_acccess_token or provider_access_token",
        );
    }
    // A service token is no access token.
    let r = wx.business(&provider).await;
    assert_eq!(r.errcode(), 40014, "{r:?}");

    let stats = wx.mock.stats();
    assert_eq!(stats.provider_tokens(PROVIDER), 1);
    assert_eq!(
        stats.issued("/cgi-bin/service/get_provider_token", PROVIDER),
        1
    );
    assert_eq!(
        stats.calls("/cgi-bin/service/get_provider_token", PROVIDER),
        4
    );
    assert_eq!(stats.calls("/cgi-bin/get_api_domain_ip", PROVIDER), 2);
    assert_eq!(stats.calls("/cgi-bin/get_api_domain_ip", SUITE), 1);
    assert_eq!(stats.business(SUITE, 0), 1);
    assert_eq!(stats.business(PROVIDER, 0), 1);
    assert_eq!(stats.business("-", 40082), 2);
}

#[tokio::test]
async fn corps_installed_at_start_are_listed_with_their_permanent_codes() {
    let receiver = SuiteReceiver::start().await;
    let wx = Wx::start(MockConfig {
        auth_corps_per_suite: 3,
        ..suite_config(60, 5, &receiver)
    })
    .await;
    let listed = wx.get(&format!("/mock/suites/{SUITE}/installations")).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json["total"], 3);
    let corps = listed.json["installations"].as_array().unwrap().clone();
    for (i, corp) in corps.iter().enumerate() {
        assert_eq!(corp["corpid"], auth_corpid(0, i as u64 + 1));
        assert_eq!(corp["agentid"], 1_000_001);
        assert!(corp["permanent_code"]
            .as_str()
            .is_some_and(|c| !c.is_empty()));
    }
    let listed_b = wx
        .get(&format!("/mock/suites/{SUITE_B}/installations"))
        .await;
    assert_eq!(
        listed_b.json["installations"][2]["corpid"],
        auth_corpid(1, 3)
    );
    let missing = wx.get("/mock/suites/wwnosuch/installations").await;
    assert_eq!(missing.status, 404);

    // A listed code buys a corp token at once.
    let suite_token = wx.fresh_suite_token(&receiver, SUITE).await;
    let corpid = corps[1]["corpid"].as_str().unwrap();
    let code = corps[1]["permanent_code"].as_str().unwrap();
    let token = wx
        .suite_corp_token(&suite_token, corpid, code)
        .await
        .access_token();
    assert_ok_wechat(&wx.business(&token).await);

    let stats = wx.mock.stats();
    let s = stats.suite(SUITE);
    assert_eq!((s.installed, s.installs), (3, 0));
    assert_eq!(s.pushes("create_auth").sent, 0);
    assert_eq!(s.corp_tokens_issued, 1);
    assert_eq!(stats.issued("/cgi-bin/service/get_corp_token", corpid), 1);
}

#[tokio::test]
async fn url_verification_expects_the_decrypted_echostr() {
    let receiver = SuiteReceiver::start().await;
    let wx = Wx::start(suite_config(60, 5, &receiver)).await;
    let verify = |suite: &'static str| {
        let wx = &wx;
        async move {
            wx.post_json(&format!("/mock/suites/{suite}/verify_url"), &json!({}))
                .await
        }
    };
    let r = verify(SUITE).await;
    assert_eq!(
        r.json,
        json!({"sent": true, "verified": true, "error": null})
    );
    receiver.echo_with(Some("something else"));
    let r = verify(SUITE).await;
    assert_eq!(r.json["verified"], false);
    assert_eq!(
        r.json["error"],
        "answered \"something else\" instead of the decrypted echostr"
    );
    receiver.echo_with(None);
    assert_eq!(verify(SUITE_B).await.json["verified"], true);
    assert_eq!(verify("wwnosuch").await.status, 404);

    let s = wx.mock.stats().suite(SUITE);
    assert_eq!(
        (
            s.url_verifications.sent,
            s.url_verifications.acknowledged,
            s.url_verifications.failed
        ),
        (2, 1, 1)
    );
}

#[tokio::test]
async fn faults_failing_pushes_and_a_late_push_url() {
    let receiver = SuiteReceiver::start().await;
    let wx = Wx::start(MockConfig {
        suite_push_url: None,
        ..suite_config(60, 5, &receiver)
    })
    .await;
    // Nowhere to push: nothing is sent, minted or counted as failed.
    let r = wx
        .post_json(&format!("/mock/suites/{SUITE}/push_ticket"), &json!({}))
        .await;
    assert_eq!(r.json["push"]["sent"], false);
    let r = wx
        .post_json(&format!("/mock/suites/{SUITE}/verify_url"), &json!({}))
        .await;
    assert_eq!(r.json["sent"], false);
    let r = wx
        .post_json("/mock/suites/wwnosuch/push_ticket", &json!({}))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(wx.mock.stats().suite(SUITE).pushes("suite_ticket").sent, 0);

    wx.mock
        .push_suites_to(&receiver.push_url())
        .expect("a usable URL");
    let again = wx.mock.push_suites_to(&receiver.push_url()).unwrap_err();
    assert_eq!(again.kind(), std::io::ErrorKind::InvalidInput);

    // Faults match the suite's path and account.
    wx.mock.add_fault(FaultRule {
        path: "/cgi-bin/service/get_suite_token".into(),
        account: Some(SUITE.into()),
        errcode: Some(-1),
        count: Some(1),
        ..FaultRule::default()
    });
    let ticket = receiver.next_ticket(SUITE).await;
    let r = wx.suite_token(SUITE, SUITE_SECRET, &ticket).await;
    assert_work_error(&r, -1, "system error");
    let suite_token = wx
        .suite_token(SUITE, SUITE_SECRET, &ticket)
        .await
        .str("suite_access_token");

    // A receiver that does not answer `success` fails the push; the install stands.
    receiver.answer_with(200, "fail");
    let r = install(&wx, SUITE, CORP_X).await;
    assert_eq!(r.json["push"]["acknowledged"], false);
    receiver.next(SUITE, "create_auth").await;
    let permanent = exchange(&wx, &suite_token, &r.str("auth_code"))
        .await
        .str("permanent_code");
    wx.mock.add_fault(FaultRule {
        path: "/cgi-bin/service/get_corp_token".into(),
        account: Some(CORP_X.into()),
        errcode: Some(45009),
        count: Some(1),
        ..FaultRule::default()
    });
    let r = wx.suite_corp_token(&suite_token, CORP_X, &permanent).await;
    assert_work_error(&r, 45009, "api freq out of limit");
    let r = wx.suite_corp_token(&suite_token, CORP_X, &permanent).await;
    assert_ok_wechat(&r);

    let stats = wx.mock.stats();
    assert_eq!(stats.faults_injected("/cgi-bin/service/get_suite_token"), 1);
    assert_eq!(stats.faults_injected("/cgi-bin/service/get_corp_token"), 1);
    let s = stats.suite(SUITE);
    assert_eq!(s.pushes("create_auth").failed, 1);
    assert_eq!(
        s.last_push_failure.as_deref(),
        Some("answered \"fail\" instead of \"success\"")
    );
}

#[tokio::test]
async fn suite_and_provider_tokens_may_be_invalidated_early() {
    let receiver = SuiteReceiver::start().await;
    let wx = Wx::start(suite_config(60, 5, &receiver)).await;
    let ticket = receiver.next_ticket(SUITE).await;
    let suite_token = wx
        .suite_token(SUITE, SUITE_SECRET, &ticket)
        .await
        .str("suite_access_token");
    let provider = wx
        .provider_token(PROVIDER, PROVIDER_SECRET)
        .await
        .str("provider_access_token");
    for (param, token, kind) in [
        ("suite_access_token", &suite_token, "suite"),
        ("provider_access_token", &provider, "provider"),
    ] {
        let r = wx
            .post_json("/mock/invalidate_token", &json!({"token": token}))
            .await;
        assert_eq!(r.json, json!({"invalidated": kind}), "{r:?}");
        let dead = wx
            .get(&format!("/cgi-bin/get_api_domain_ip?{param}={token}"))
            .await;
        assert_work_error(
            &dead,
            40082,
            "invalid suite_acccess_token or provider_access_token",
        );
    }
    // The next fetch mints a new one (the same ticket still buys it).
    let renewed = wx
        .suite_token(SUITE, SUITE_SECRET, &ticket)
        .await
        .str("suite_access_token");
    assert_ne!(renewed, suite_token);
    let r = wx
        .get(&format!(
            "/cgi-bin/service/get_pre_auth_code?suite_access_token={suite_token}"
        ))
        .await;
    assert_eq!(r.errcode(), 40082, "{r:?}");
    let renewed_provider = wx
        .provider_token(PROVIDER, PROVIDER_SECRET)
        .await
        .str("provider_access_token");
    assert_ne!(renewed_provider, provider);
    let stats = wx.mock.stats();
    assert_eq!(stats.suite(SUITE).suite_tokens_issued, 2);
    assert_eq!(stats.provider_tokens(PROVIDER), 2);
}
