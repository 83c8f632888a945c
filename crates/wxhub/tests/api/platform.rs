//! The third-party platform end to end: `wechat-mock` plays WeChat's platform and pushes to the
//! hub's event receiver through a relay; the hub keeps the verify ticket, the component token and
//! every authorizer's tokens, and serves them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use wechat_crypto::{EncodingAesKey, MessageCrypt};
use wechat_mock::{MockConfig, MockServer};
use wxhub::token::TicketKind;

use crate::helpers::*;
use crate::platform_support::*;

/// Mock, relay and a hub serving the component token.
async fn platform(
    lifetime: Duration,
    push_every: Duration,
    tickets: &[TicketKind],
    tune: impl FnOnce(MockConfig) -> MockConfig,
) -> (Arc<MockServer>, Relay, TestHub) {
    let relay = Relay::start().await;
    let mock = platform_mock(&relay, lifetime, push_every, tune).await;
    let hub = spawn_app(&mock, platform_options(tickets)).await;
    relay.point_at(&[&hub]);
    wait_for_component_token(&hub).await;
    (mock, relay, hub)
}

/// A platform whose tokens outlive the test and whose mock pushes no ticket during it.
async fn steady_platform() -> (Arc<MockServer>, Relay, TestHub) {
    platform(
        Duration::from_secs(60),
        Duration::from_secs(600),
        &[],
        |c| c,
    )
    .await
}

/// Mock, relay and a hub on an empty store, whose platform WeChat lists `authorizers`
/// authorizers for (the hub recovers them from that list), every token living `lifetime`.
async fn listed_platform(
    lifetime: Duration,
    authorizers: u32,
) -> (Arc<MockServer>, Relay, TestHub) {
    let relay = Relay::start().await;
    let mock = platform_mock(&relay, lifetime, Duration::from_secs(600), |c| MockConfig {
        authorizers_per_component: authorizers,
        ..c
    })
    .await;
    let hub = spawn_app(&mock, platform_options(&[])).await;
    relay.point_at(&[&hub]);
    (mock, relay, hub)
}

/// The generation of the verify ticket the hub holds.
async fn ticket_generation(hub: &TestHub) -> u64 {
    hub.credential(&format!("component_verify_ticket/{COMPONENT}"))
        .await["generation"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn pushed_verify_tickets_are_stored_and_each_newer_one_replaces_the_last() {
    let (mock, _relay, hub) = platform(
        Duration::from_secs(60),
        Duration::from_millis(700),
        &[],
        |c| c,
    )
    .await;
    let first = ticket_generation(&hub).await;
    assert!(first >= 1);
    wait_until(
        Duration::from_secs(10),
        "three more tickets are stored",
        || async { ticket_generation(&hub).await >= first + 3 },
    )
    .await;
    let pushes = stats(&mock).component(COMPONENT).pushes["component_verify_ticket"];
    assert!(pushes.acknowledged >= 4, "{pushes:?}");
    assert!(
        ticket_generation(&hub).await <= pushes.acknowledged,
        "one write per acknowledged push at most"
    );
    // Operators see how old the ticket is (pushed every 700 ms here).
    let metrics = hub.get("/metrics").await.text().await.unwrap();
    let age: f64 = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(&format!(
                "wxhub_component_verify_ticket_age_seconds{{component_appid=\"{COMPONENT}\"}} "
            ))
        })
        .expect("the verify ticket's age is exported")
        .parse()
        .unwrap();
    assert!((0.0..5.0).contains(&age), "{age}");
}

#[tokio::test]
async fn a_first_start_waits_for_the_first_verify_ticket_instead_of_failing() {
    let relay = Relay::start().await;
    let mock = platform_mock(
        &relay,
        Duration::from_secs(60),
        Duration::from_secs(600),
        |c| c,
    )
    .await;
    let hub = spawn_app(&mock, platform_options(&[])).await;
    // The relay points nowhere yet: the hub's asks for a push go unanswered, and it keeps
    // asking.
    let asks = || stats(&mock).total_calls("/cgi-bin/component/api_start_push_ticket");
    wait_until(Duration::from_secs(10), "two asks for a push", || async {
        asks() >= 2
    })
    .await;
    // No component token is asked for without a ticket: the token waits, with no error.
    assert_eq!(
        stats(&mock).total_calls("/cgi-bin/component/api_component_token"),
        0
    );
    let token = hub
        .credential(&format!("component_token/{COMPONENT}"))
        .await;
    assert_eq!(token["state"], "pending", "{token}");
    assert!(token["last_error"].is_null(), "{token}");

    // The next ask gets a push through, and the token follows it at once.
    relay.point_at(&[&hub]);
    wait_for_component_token(&hub).await;
    let token = hub
        .credential(&format!("component_token/{COMPONENT}"))
        .await;
    assert_eq!(token["attempts"], 0, "{token}");
    let history = token["history"].as_array().expect("a history");
    assert!(
        history.iter().all(|p| p["outcome"] == "ok"),
        "no failed fetch: {token}"
    );
}

#[tokio::test]
async fn the_component_token_is_renewed_over_three_lifetimes_without_a_dead_token() {
    let lifetime = Duration::from_secs(4);
    let (mock, _relay, hub) = platform(lifetime, Duration::from_secs(1), &[], |c| c).await;
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + lifetime * 3;
    let mut calls = 0;
    while tokio::time::Instant::now() < deadline {
        let token = hub
            .token_at(&format!("/v1/components/{COMPONENT}/access_token"))
            .await;
        // A component API call with the served token, as a consumer would make.
        let answer: Value = client
            .post(format!(
                "{}/cgi-bin/component/api_create_preauthcode?component_access_token={}",
                mock.base_url(),
                token.access_token
            ))
            .json(&json!({ "component_appid": COMPONENT }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["errcode"].as_i64().unwrap_or(0), 0, "{answer}");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(calls > 10);
    // Renewed like a legacy token: at about half its life (lead = lifetime / 2 when the
    // lifetime is short), so two per lifetime, plus the first.
    let issued = stats(&mock).component(COMPONENT).component_tokens_issued;
    assert!(
        (4..=8).contains(&issued),
        "component tokens issued: {issued}"
    );
}

#[tokio::test]
async fn the_pre_auth_code_route_needs_the_authorize_scope_and_returns_a_code() {
    let (mock, _relay, hub) = steady_platform().await;
    let response = hub
        .post(
            &format!("/v1/components/{COMPONENT}/pre_auth_code"),
            json!({}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(!body["pre_auth_code"].as_str().unwrap().is_empty());
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    let reader = hub
        .client
        .post(hub.url(&format!("/v1/components/{COMPONENT}/pre_auth_code")))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(reader.status(), 403);
    assert_eq!(stats(&mock).component(COMPONENT).pre_auth_codes_issued, 1);
}

/// Seals `xml` for the receiver as WeChat would, with `token` and `key`.
fn seal(token: &str, key: &str, appid: &str, xml: &str) -> (String, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    seal_at(now, token, key, appid, xml)
}

/// [`seal`], as WeChat would have sent it at `sent_at` (Unix seconds).
fn seal_at(sent_at: i64, token: &str, key: &str, appid: &str, xml: &str) -> (String, String) {
    let crypt = MessageCrypt::new(token, EncodingAesKey::parse(key).unwrap(), appid);
    let encrypt = crypt.encrypt(xml);
    let timestamp = sent_at.to_string();
    let (timestamp, nonce) = (timestamp.as_str(), "42");
    let query = format!(
        "timestamp={timestamp}&nonce={nonce}&encrypt_type=aes&msg_signature={}",
        crypt.msg_signature(timestamp, nonce, &encrypt)
    );
    let body = format!(
        "<xml><AppId><![CDATA[{appid}]]></AppId><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    );
    (query, body)
}

fn ticket_push(create_time: i64, ticket: &str) -> String {
    format!("<xml><AppId><![CDATA[{COMPONENT}]]></AppId><CreateTime>{create_time}</CreateTime><InfoType><![CDATA[component_verify_ticket]]></InfoType><ComponentVerifyTicket><![CDATA[{ticket}]]></ComponentVerifyTicket></xml>")
}

async fn push(hub: &TestHub, component: &str, query: &str, body: String) -> reqwest::Response {
    hub.client
        .post(hub.url(&format!("/wechat/components/{component}/events?{query}")))
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn forged_misaddressed_or_replayed_pushes_store_nothing() {
    let (_mock, _relay, hub) = steady_platform().await;
    let before = ticket_generation(&hub).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    // Signed with another Token: 403.
    let (query, body) = seal(
        "forged",
        COMPONENT_KEY,
        COMPONENT,
        &ticket_push(now, "t@@@forged"),
    );
    assert_eq!(push(&hub, COMPONENT, &query, body).await.status(), 403);
    // Signed right, sealed with another key: 400.
    let (query, body) = seal(
        COMPONENT_TOKEN,
        OTHER_KEY,
        COMPONENT,
        &ticket_push(now, "t@@@key"),
    );
    assert_eq!(push(&hub, COMPONENT, &query, body).await.status(), 400);
    // Sealed for another platform: 400.
    let (query, body) = seal(
        COMPONENT_TOKEN,
        COMPONENT_KEY,
        "wxother",
        &ticket_push(now, "t@@@other"),
    );
    assert_eq!(push(&hub, COMPONENT, &query, body).await.status(), 400);
    // Addressed to a platform the hub does not have: 404.
    let (query, body) = seal(
        COMPONENT_TOKEN,
        COMPONENT_KEY,
        COMPONENT,
        &ticket_push(now, "t@@@x"),
    );
    assert_eq!(
        push(&hub, "wxnotconfigured", &query, body).await.status(),
        404
    );
    // Signed right, but sent over ten minutes ago: a replay, 400.
    let (query, body) = seal_at(
        now - 3600,
        COMPONENT_TOKEN,
        COMPONENT_KEY,
        COMPONENT,
        &ticket_push(now, "t@@@replayed"),
    );
    assert_eq!(push(&hub, COMPONENT, &query, body).await.status(), 400);
    // Garbage: 400 or 403, never 5xx.
    for garbage in [
        "",
        "<xml>",
        "not xml at all",
        "<xml><Encrypt>AAAA</Encrypt></xml>",
    ] {
        let status = push(&hub, COMPONENT, &query, garbage.to_string())
            .await
            .status();
        assert!(status == 400 || status == 403, "{garbage:?}: {status}");
    }
    assert_eq!(ticket_generation(&hub).await, before, "nothing was stored");

    // A valid push older than the stored ticket does not replace it; a newer one does.
    let (query, body) = seal(
        COMPONENT_TOKEN,
        COMPONENT_KEY,
        COMPONENT,
        &ticket_push(1, "t@@@ancient"),
    );
    let answer = push(&hub, COMPONENT, &query, body).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "success");
    assert_eq!(ticket_generation(&hub).await, before);
    let (query, body) = seal(
        COMPONENT_TOKEN,
        COMPONENT_KEY,
        COMPONENT,
        &ticket_push(now + 5, "t@@@newer"),
    );
    assert_eq!(
        push(&hub, COMPONENT, &query.clone(), body.clone())
            .await
            .status(),
        200
    );
    assert_eq!(ticket_generation(&hub).await, before + 1);
    // The same push replayed: acknowledged, not written again.
    assert_eq!(push(&hub, COMPONENT, &query, body).await.status(), 200);
    assert_eq!(ticket_generation(&hub).await, before + 1);
}

#[tokio::test]
async fn an_authorizer_is_served_once_the_push_is_acknowledged_and_its_token_works() {
    let (mock, _relay, hub) = platform(
        Duration::from_secs(60),
        Duration::from_secs(600),
        &[TicketKind::Jsapi],
        |c| c,
    )
    .await;
    let authorizer = authorize(&mock).await;
    // No waiting: the push was acknowledged only after the authorizer was registered.
    let token = hub
        .token_at(&authorizer_path(&authorizer, "access_token"))
        .await;
    assert_eq!(
        business_call(&hub.client, &mock, &token.access_token).await,
        0
    );
    let ticket = hub
        .token_at(&authorizer_path(&authorizer, "tickets/jsapi"))
        .await;
    assert!(mock.ticket_valid(&ticket.access_token));
    let signature = hub
        .post(
            &authorizer_path(&authorizer, "jssdk/signature"),
            json!({ "url": "https://example.com/page" }),
        )
        .await;
    assert_eq!(signature.status(), 200);
    let signature: Value = signature.json().await.unwrap();
    assert_eq!(signature["appId"], authorizer.as_str());

    // The admin listing shows it, without any token.
    let listing = hub
        .get(&format!("/v1/components/{COMPONENT}/authorizers"))
        .await;
    assert_eq!(listing.status(), 200);
    let text = listing.text().await.unwrap();
    assert!(!text.contains(&token.access_token));
    let listing: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        listing["authorizers"][0]["authorizer_appid"],
        authorizer.as_str()
    );
    assert_eq!(listing["authorizers"][0]["state"], "active");
    // Refresh tokens appear nowhere in the credentials listing either (values never do).
    let credentials = hub.get("/v1/credentials").await.text().await.unwrap();
    assert!(!credentials.contains(&token.access_token));

    // Neither the platform's appid nor its authorizer's can also be added as an app.
    for appid in [COMPONENT, authorizer.as_str()] {
        let response = hub
            .send(
                reqwest::Method::PUT,
                &format!("/v1/admin/apps/{appid}"),
                Some(json!({ "secret": "s", "mode": "legacy" })),
            )
            .await;
        assert_eq!(response.status(), 409, "{appid}");
    }
}

#[tokio::test]
async fn the_redirect_code_registers_the_authorizer() {
    let (mock, _relay, hub) = steady_platform().await;
    let code: Value = hub
        .post(
            &format!("/v1/components/{COMPONENT}/pre_auth_code"),
            json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    let granted = owner(
        &mock,
        "authorize",
        json!({ "component_appid": COMPONENT, "pre_auth_code": code["pre_auth_code"], "func_info": [1, 15] }),
    )
    .await;
    let response = hub
        .post(
            &format!("/v1/components/{COMPONENT}/authorizations"),
            json!({ "authorization_code": granted["authorization_code"] }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["authorizer_appid"], granted["authorizer_appid"]);
    assert_eq!(body["state"], "active");
    assert_eq!(body["func_info"], json!([1, 15]));
    let bad = hub
        .post(
            &format!("/v1/components/{COMPONENT}/authorizations"),
            json!({ "authorization_code": "no-such-code" }),
        )
        .await;
    assert!(
        bad.status().is_client_error() || bad.status() == 502,
        "{}",
        bad.status()
    );
}

#[tokio::test]
async fn updateauthorized_serves_a_new_token_at_once_and_unauthorized_revokes() {
    let lifetime = Duration::from_secs(6);
    let (mock, _relay, hub) = platform(lifetime, Duration::from_secs(600), &[], |c| c).await;
    let authorizer = authorize(&mock).await;
    let before = hub
        .token_at(&authorizer_path(&authorizer, "access_token"))
        .await;
    let updated = owner(
        &mock,
        "updateauthorize",
        json!({ "component_appid": COMPONENT, "authorizer_appid": authorizer, "func_info": [1] }),
    )
    .await;
    assert_eq!(updated["push"]["acknowledged"], true, "{updated}");
    let after = hub
        .token_at(&authorizer_path(&authorizer, "access_token"))
        .await;
    assert_ne!(after.access_token, before.access_token);
    assert!(after.generation > before.generation);
    assert_eq!(
        business_call(&hub.client, &mock, &after.access_token).await,
        0
    );

    let revoked = owner(
        &mock,
        "unauthorize",
        json!({ "component_appid": COMPONENT, "authorizer_appid": authorizer }),
    )
    .await;
    assert_eq!(revoked["push"]["acknowledged"], true, "{revoked}");
    let gone = hub.get(&authorizer_path(&authorizer, "access_token")).await;
    assert_eq!(gone.status(), 410);
    let body: Value = gone.json().await.unwrap();
    assert_eq!(body["error"]["code"], "authorizer_revoked");
    let listing: Value = hub
        .get(&format!(
            "/v1/components/{COMPONENT}/authorizers?state=revoked"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        listing["authorizers"][0]["authorizer_appid"],
        authorizer.as_str()
    );
    // No further fetch for it over more than a lifetime.
    let issued = stats(&mock).calls("/cgi-bin/component/api_authorizer_token", COMPONENT);
    let tokens = stats(&mock).component(COMPONENT).authorizer_tokens_issued;
    tokio::time::sleep(lifetime + Duration::from_secs(1)).await;
    assert_eq!(
        stats(&mock).component(COMPONENT).authorizer_tokens_issued,
        tokens,
        "no authorizer token fetched after revocation ({issued} calls before)"
    );
}

#[tokio::test]
async fn authorizer_tokens_are_renewed_with_rotating_refresh_tokens() {
    let lifetime = Duration::from_secs(4);
    let (mock, _relay, hub) = platform(lifetime, Duration::from_secs(1), &[], |c| MockConfig {
        rotate_refresh_tokens: true,
        ..c
    })
    .await;
    let authorizer = authorize(&mock).await;
    let deadline = tokio::time::Instant::now() + lifetime * 3;
    while tokio::time::Instant::now() < deadline {
        let token = hub
            .token_at(&authorizer_path(&authorizer, "access_token"))
            .await;
        assert_eq!(
            business_call(&hub.client, &mock, &token.access_token).await,
            0
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let component = stats(&mock).component(COMPONENT);
    assert!(component.refresh_tokens_rotated >= 2, "{component:?}");
    assert_eq!(
        stats(&mock).outcome("/cgi-bin/component/api_authorizer_token", 61023),
        0
    );
    assert_eq!(stats(&mock).business(&authorizer, 40001), 0);
}

#[tokio::test]
async fn an_acknowledged_authorizer_survives_a_restart_on_sqlite() {
    let relay = Relay::start().await;
    let mock = rotating_platform_mock(&relay).await;
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("wxhub.db");
    let first = spawn_app(&mock, platform_options(&[]).with_sqlite(database.clone())).await;
    relay.point_at(&[&first]);
    wait_for_component_token(&first).await;
    let authorizer = authorize(&mock).await;
    let before = first
        .token_at(&authorizer_path(&authorizer, "access_token"))
        .await;
    // Killed right after the acknowledgement.
    first.stop().await;

    // The refresh token is sealed in the file. Put it back in the clear, as an earlier version
    // stored it: the next hub reads it, and seals it.
    let key: wxhub::kinds::CredentialKey =
        format!("authorizer_refresh_token/{COMPONENT}/{authorizer}")
            .parse()
            .unwrap();
    let place = key.to_string();
    let sealer = wxhub::seal::Sealer::new(&test_master_key());
    {
        use wxhub::store::Store;
        let raw = wxhub::store::sqlite::SqliteStore::open(&database).unwrap();
        let stored = raw
            .get(&key)
            .await
            .unwrap()
            .expect("the refresh token is stored");
        assert!(
            wxhub::seal::Sealer::is_sealed(&stored.value),
            "stored in the clear"
        );
        let plain = sealer
            .open(&place, &stored.value)
            .unwrap()
            .expose()
            .to_string();
        let earlier = wxhub::token::Token {
            value: plain,
            generation: stored.generation + 1,
            ..stored
        };
        raw.compare_and_set(&key, &earlier).await.unwrap();
    }

    let second = spawn_app(&mock, platform_options(&[]).with_sqlite(database.clone())).await;
    relay.point_at(&[&second]);
    let after = second
        .token_at(&authorizer_path(&authorizer, "access_token"))
        .await;
    assert_eq!(after.access_token, before.access_token);
    // And it is renewed: the stored refresh token (rotated at every renewal) is the live one.
    let path = authorizer_path(&authorizer, "access_token");
    wait_until(
        Duration::from_secs(10),
        "the authorizer token is renewed twice",
        || async { second.token_at(&path).await.generation >= after.generation + 2 },
    )
    .await;
    let refreshed = second.token_at(&path).await;
    assert_eq!(
        business_call(&second.client, &mock, &refreshed.access_token).await,
        0
    );
    assert_eq!(
        stats(&mock).component(COMPONENT).authorizations,
        1,
        "never re-authorized"
    );
    second.stop().await;
    use wxhub::store::Store;
    let raw = wxhub::store::sqlite::SqliteStore::open(&database).unwrap();
    let stored = raw.get(&key).await.unwrap().unwrap();
    assert!(
        wxhub::seal::Sealer::is_sealed(&stored.value),
        "sealed again"
    );
    assert!(sealer.open(&place, &stored.value).is_ok());
}

#[tokio::test]
async fn full_pages_of_wechats_authorizer_list_are_read() {
    // 500 a page (WeChat's maximum) is a response body well above 64 KiB.
    let listed = 1100;
    let (_mock, _relay, hub) = listed_platform(Duration::from_secs(60), listed).await;
    for n in [1, 500, 501, listed] {
        let path = authorizer_path(
            &wechat_mock::authorizer_appid(0, u64::from(n)),
            "access_token",
        );
        wait_until(
            Duration::from_secs(30),
            "an authorizer of every page is served",
            || async { hub.get(&path).await.status() == 200 },
        )
        .await;
    }
}

#[tokio::test]
async fn a_hub_on_an_empty_store_recovers_every_authorizer_from_wechats_list() {
    // The store holds nothing: a new install, or a store that was wiped.
    let (mock, relay, hub) = listed_platform(Duration::from_secs(60), 3).await;
    for n in 1..=3 {
        let authorizer = wechat_mock::authorizer_appid(0, n);
        let path = authorizer_path(&authorizer, "access_token");
        wait_until(
            Duration::from_secs(15),
            "a listed authorizer is served",
            || async { hub.get(&path).await.status() == 200 },
        )
        .await;
        let token = hub.token_at(&path).await;
        assert_eq!(
            business_call(&hub.client, &mock, &token.access_token).await,
            0
        );
    }

    // Nothing left to reconcile.
    let synced: Value = hub
        .post(
            &format!("/v1/components/{COMPONENT}/authorizers/sync"),
            json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(synced, json!({ "recovered": 0, "added": 0, "revoked": 0 }));

    // An account withdraws while the hub cannot be reached: the next sync revokes it.
    relay.point_at(&[]);
    let gone = wechat_mock::authorizer_appid(0, 2);
    let answer = owner(
        &mock,
        "unauthorize",
        json!({ "component_appid": COMPONENT, "authorizer_appid": gone }),
    )
    .await;
    assert_eq!(answer["push"]["acknowledged"], false);
    assert_eq!(
        hub.get(&authorizer_path(&gone, "access_token"))
            .await
            .status(),
        200
    );
    let synced: Value = hub
        .post(
            &format!("/v1/components/{COMPONENT}/authorizers/sync"),
            json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(synced, json!({ "recovered": 0, "added": 0, "revoked": 1 }));
    let audit = hub.get("/v1/admin/audit").await.text().await.unwrap();
    assert!(audit.contains("sync_authorizers"), "{audit}");
    assert_eq!(
        hub.get(&authorizer_path(&gone, "access_token"))
            .await
            .status(),
        410
    );
    assert_eq!(
        stats(&mock).component(COMPONENT).authorizations,
        0,
        "nobody re-authorized"
    );
}

#[tokio::test]
async fn a_stale_refresh_token_is_recovered_from_wechat_instead_of_needing_the_owner() {
    let relay = Relay::start().await;
    let lifetime = Duration::from_secs(4);
    let mock = platform_mock(&relay, lifetime, Duration::from_secs(600), |c| MockConfig {
        rotate_refresh_tokens: true,
        grace: Duration::from_millis(500),
        ..c
    })
    .await;
    let store: Arc<dyn wxhub::store::Store> = Arc::new(wxhub::store::memory::MemoryStore::new());
    let mut options = platform_options(&[]);
    options.shared_store = Some(store.clone());
    let hub = spawn_app(&mock, options).await;
    relay.point_at(&[&hub]);
    wait_for_component_token(&hub).await;
    let authorizer = authorize(&mock).await;
    let key: wxhub::kinds::CredentialKey =
        format!("authorizer_refresh_token/{COMPONENT}/{authorizer}")
            .parse()
            .unwrap();
    let original = store.get(&key).await.unwrap().unwrap();
    // Let the hub renew (rotating the refresh token) until the original is dead, then put the
    // original back, as a restore from an old backup would.
    let path = authorizer_path(&authorizer, "access_token");
    let first = hub.token_at(&path).await.generation;
    wait_until(Duration::from_secs(10), "two renewals", || async {
        hub.token_at(&path).await.generation >= first + 2
    })
    .await;
    let current = store.get(&key).await.unwrap().unwrap();
    let stale = wxhub::token::Token {
        value: original.value.clone(),
        generation: current.generation + 1,
        ..current
    };
    store.compare_and_set(&key, &stale).await.unwrap();
    let before = hub.token_at(&path).await.generation;
    wait_until(
        Duration::from_secs(10),
        "renewed past the stale refresh token",
        || async { hub.token_at(&path).await.generation > before },
    )
    .await;
    let token = hub.token_at(&path).await;
    assert_eq!(
        business_call(&hub.client, &mock, &token.access_token).await,
        0
    );
    assert!(stats(&mock).outcome("/cgi-bin/component/api_authorizer_token", 61023) >= 1);
    assert_ne!(
        store.get(&key).await.unwrap().unwrap().value,
        original.value
    );
}

#[tokio::test]
async fn the_event_listener_serves_the_receiver_and_nothing_else() {
    let relay = Relay::start().await;
    let mock = platform_mock(
        &relay,
        Duration::from_secs(60),
        Duration::from_secs(600),
        |c| c,
    )
    .await;
    let mut settings = settings_for(&mock, &platform_options(&[]));
    settings.server.events_listen = Some(any_port());
    let app = wxhub::startup::Application::build(settings).await.unwrap();
    let events = format!("http://{}", app.events_address().unwrap());
    let api = format!("http://{}", app.address());
    tokio::spawn(app.run_until(std::future::pending()));
    // WeChat's pushes go to the event listener only.
    *relay.targets() = vec![events.clone()];
    let client = reqwest::Client::new();
    wait_until(
        Duration::from_secs(15),
        "the component token is served",
        || async {
            client
                .get(format!("{api}/v1/components/{COMPONENT}/access_token"))
                .bearer_auth(ADMIN_KEY)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    let consumer_route = client
        .get(format!("{events}/v1/components/{COMPONENT}/access_token"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        consumer_route.status(),
        404,
        "the consumer API is not on the event listener"
    );
    // Nor the read fast path: an app read is the router's plain 404 there, not the API's answer.
    let read: serde_json::Value = client
        .get(format!("{events}/v1/apps/wxnone/access_token"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["error"]["code"], "not_found", "{read}");
    assert_eq!(
        client
            .get(format!("{events}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

/// A counter of the hub's `/metrics`, 0 while its series is absent.
fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn authorizers_do_not_ask_wechat_for_a_failing_component_token_one_by_one() {
    let authorizers = 30;
    let (mock, _relay, hub) = listed_platform(Duration::from_secs(6), authorizers).await;
    for n in 1..=u64::from(authorizers) {
        let path = authorizer_path(&wechat_mock::authorizer_appid(0, n), "access_token");
        wait_until(
            Duration::from_secs(15),
            "every listed authorizer is served",
            || async { hub.get(&path).await.status() == 200 },
        )
        .await;
    }
    // WeChat answers "system busy" for the component token from now on: it expires, and every
    // authorizer needs it for its next token.
    mock.add_fault(wechat_mock::FaultRule {
        path: "/cgi-bin/component/api_component_token".into(),
        errcode: Some(-1),
        ..Default::default()
    });
    let component = format!("/v1/components/{COMPONENT}/access_token");
    wait_until(
        Duration::from_secs(15),
        "the component token has expired",
        || async { hub.get(&component).await.status() != 200 },
    )
    .await;
    let failed = "wxhub_refreshes_total{kind=\"authorizer_token\",outcome=\"transient\"}";
    let failures_before = counter(&hub.metrics().await, failed);
    let calls_before = stats(&mock).total_calls("/cgi-bin/component/api_component_token");
    wait_until(
        Duration::from_secs(20),
        "each authorizer has failed for want of the component token",
        || async {
            counter(&hub.metrics().await, failed) >= failures_before + u64::from(authorizers)
        },
    )
    .await;
    let calls = stats(&mock).total_calls("/cgi-bin/component/api_component_token") - calls_before;
    // The component token is tried on its own backoff, not once more for each authorizer.
    assert!(
        calls * 3 < u64::from(authorizers),
        "{calls} component token calls while {authorizers} authorizer refreshes failed"
    );
    // An authorizer whose turn came when the component token's delay had passed (or that joined
    // that refresh) carries WeChat's own error; one that came during the delay says what it
    // waits for.
    let mut waiting = 0;
    let mut last = Value::Null;
    for n in 1..=u64::from(authorizers) {
        last = hub
            .credential(&format!(
                "authorizer_token/{COMPONENT}/{}",
                wechat_mock::authorizer_appid(0, n)
            ))
            .await;
        if last["last_error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("is unavailable"))
        {
            waiting += 1;
        }
    }
    assert!(
        waiting > 0,
        "{waiting} of {authorizers} authorizers say what they wait for, e.g. {last}"
    );
}

#[tokio::test]
async fn a_refused_verify_ticket_asks_for_a_push_and_keeps_serving_the_old_component_token() {
    let lifetime = Duration::from_secs(6);
    let (mock, _relay, hub) = platform(lifetime, Duration::from_secs(600), &[], |c| c).await;
    let path = format!("/v1/components/{COMPONENT}/access_token");
    let first = hub.token_at(&path).await;
    let asked_before = stats(&mock).total_calls("/cgi-bin/component/api_start_push_ticket");
    mock.add_fault(wechat_mock::FaultRule {
        path: "/cgi-bin/component/api_component_token".into(),
        errcode: Some(61006),
        count: Some(2),
        ..Default::default()
    });
    // The planned renewal is refused twice; the old token is served meanwhile, WeChat is asked
    // for a push, and the renewal succeeds after it.
    wait_until(
        Duration::from_secs(15),
        "the component token is renewed",
        || async {
            let response = hub.get(&path).await;
            assert_eq!(response.status(), 200, "the old token is served meanwhile");
            response.json::<TokenAnswer>().await.unwrap().generation > first.generation
        },
    )
    .await;
    assert_eq!(
        stats(&mock).faults_injected("/cgi-bin/component/api_component_token"),
        2
    );
    assert!(
        stats(&mock).total_calls("/cgi-bin/component/api_start_push_ticket") > asked_before,
        "a push was asked for"
    );
}

#[tokio::test]
async fn a_platform_sdk_takes_the_hubs_component_token_at_the_gateway_and_its_calls_are_checked() {
    let (mock, _relay, hub) = steady_platform().await;
    let served = hub
        .token_at(&format!("/v1/components/{COMPONENT}/access_token"))
        .await;
    let client = &hub.client;
    let token_path = "/cgi-bin/component/api_component_token";
    let ask = |base: String, body: Value| {
        answer_of(client.post(format!("{base}{token_path}")).json(&body))
    };

    // The consumer key stands in for the component_appsecret; the SDK's own verify ticket (it
    // has none: WeChat pushes them to the hub) is not needed.
    let answer = ask(
        hub.gateway.clone(),
        json!({ "component_appid": COMPONENT, "component_appsecret": ADMIN_KEY }),
    )
    .await;
    assert_eq!(
        answer["component_access_token"],
        served.access_token.as_str()
    );
    assert!(
        answer["expires_in"].as_u64().is_some_and(|s| s > 0),
        "{answer}"
    );

    // Mistakes are answered as WeChat answers them.
    let issued = stats(&mock).issued(token_path, COMPONENT);
    for body in [
        json!({ "component_appsecret": ADMIN_KEY }),
        json!({ "component_appid": "wxc00000000000000ff", "component_appsecret": ADMIN_KEY }),
        json!({ "component_appid": COMPONENT }),
        json!({ "component_appid": COMPONENT, "component_appsecret": "not-a-key" }),
        json!({ "component_appid": COMPONENT, "component_appsecret": 7 }),
    ] {
        let gateway = ask(hub.gateway.clone(), body.clone()).await;
        let wechat = ask(mock.base_url(), body.clone()).await;
        assert_eq!(
            errcode_and_text(&gateway),
            errcode_and_text(&wechat),
            "{body}: {gateway} vs {wechat}"
        );
    }
    let get = answer_of(client.get(format!("{}{token_path}", hub.gateway))).await;
    assert_eq!(get["errcode"], 43002);
    assert_eq!(
        stats(&mock).issued(token_path, COMPONENT),
        issued,
        "nothing minted"
    );

    // A platform call with the hub's token goes through; one with a token the hub never served is
    // refused without reaching WeChat.
    let list_path = "/cgi-bin/component/api_get_authorizer_list";
    let list = |token: &str| {
        answer_of(
            client
                .post(format!(
                    "{}{list_path}?component_access_token={token}",
                    hub.gateway
                ))
                .json(&json!({ "component_appid": COMPONENT, "offset": 0, "count": 10 })),
        )
    };
    let listed = list(&served.access_token).await;
    assert!(listed.get("total_count").is_some(), "{listed}");
    let calls = stats(&mock).total_calls(list_path);
    let refused = list("not-a-hub-token").await;
    assert_eq!(refused["errcode"], 40014, "{refused}");
    assert_eq!(
        stats(&mock).total_calls(list_path),
        calls,
        "nothing forwarded"
    );
}

#[tokio::test]
async fn an_authorized_push_delivered_twice_is_exchanged_once() {
    let (mock, relay, hub) = steady_platform().await;
    // The relay hands every push to the hub twice: the second is an exact replay.
    relay.point_at(&[&hub, &hub]);
    let authorizer = authorize(&mock).await;
    assert_eq!(
        hub.get(&authorizer_path(&authorizer, "access_token"))
            .await
            .status(),
        200
    );
    assert_eq!(
        stats(&mock).total_calls("/cgi-bin/component/api_query_auth"),
        1,
        "the replay cost no second exchange"
    );
}

/// A platform call at the gateway with the component token `token`.
async fn at_gateway(hub: &TestHub, path: &str, token: &str, body: Value) -> Value {
    answer_of(
        hub.client
            .post(format!(
                "{}/cgi-bin/component/{path}?component_access_token={token}",
                hub.gateway
            ))
            .json(&body),
    )
    .await
}

#[tokio::test]
async fn a_platform_sdks_authorization_goes_through_the_hub_and_its_refresh_token_is_a_stand_in() {
    let (mock, relay, hub) = steady_platform().await;
    let component_token = hub
        .token_at(&format!("/v1/components/{COMPONENT}/access_token"))
        .await
        .access_token;
    let ct = component_token.as_str();
    let query_auth_path = "/cgi-bin/component/api_query_auth";
    let refresh_path = "/cgi-bin/component/api_authorizer_token";

    // The SDK's link (its pre-auth code goes through to WeChat); the owner authorizes; the push
    // does not reach the hub, the redirect's code does.
    let pre = at_gateway(
        &hub,
        "api_create_preauthcode",
        ct,
        json!({ "component_appid": COMPONENT }),
    )
    .await;
    let pre = pre["pre_auth_code"].as_str().expect("a pre-auth code");
    let (authorizer, code) = authorize_unpushed(&mock, &relay, &[&hub], pre).await;
    let token_path = authorizer_path(&authorizer, "access_token");
    assert_eq!(
        hub.get(&token_path).await.status(),
        404,
        "not registered yet"
    );

    let answer = at_gateway(
        &hub,
        "api_query_auth",
        ct,
        json!({ "component_appid": COMPONENT, "authorization_code": code }),
    )
    .await;
    assert_eq!(stats(&mock).total_calls(query_auth_path), 1);
    let info = &answer["authorization_info"];
    assert_eq!(info["authorizer_appid"], authorizer.as_str(), "{answer}");
    // Registered, and the SDK holds the hub's token.
    let served = hub.token_at(&token_path).await;
    assert_eq!(
        info["authorizer_access_token"],
        served.access_token.as_str()
    );
    assert!(
        info["expires_in"].as_u64().is_some_and(|s| s > 0),
        "{answer}"
    );
    assert_eq!(info["func_info"][0]["funcscope_category"]["id"], 1);
    let listing: Value = hub
        .get(&format!("/v1/components/{COMPONENT}/authorizers"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        listing["authorizers"][0]["authorizer_appid"],
        authorizer.as_str()
    );
    // The refresh token is a stand-in: never WeChat's, which stays in the hub.
    let stand_in = info["authorizer_refresh_token"]
        .as_str()
        .filter(|r| !r.is_empty())
        .expect("a refresh token")
        .to_string();
    let wechats = wechats_refresh_token(&mock, ct, &authorizer).await;
    assert_ne!(stand_in, wechats);
    assert!(!answer.to_string().contains(&wechats), "{answer}");

    // The SDK's refreshes are answered from the hub's token, twice, without a call to WeChat.
    let refresh = |refresh_token: &str| {
        at_gateway(
            &hub,
            "api_authorizer_token",
            ct,
            json!({
                "component_appid": COMPONENT,
                "authorizer_appid": authorizer,
                "authorizer_refresh_token": refresh_token,
            }),
        )
    };
    let fetched = stats(&mock).total_calls(refresh_path);
    for _ in 0..2 {
        let answer = refresh(&stand_in).await;
        assert_eq!(
            answer["authorizer_access_token"],
            served.access_token.as_str(),
            "{answer}"
        );
        assert_eq!(answer["authorizer_refresh_token"], stand_in.as_str());
        assert!(
            answer["expires_in"].as_u64().is_some_and(|s| s > 0),
            "{answer}"
        );
    }
    assert_eq!(stats(&mock).total_calls(refresh_path), fetched, "no fetch");

    // Mistakes: answered with errcodes a refetch of the component token cannot loop on (only a
    // component token the hub does not serve gets 40014, which the refetch fixes); none reaches
    // WeChat.
    let other_stand_in = {
        let mut s = stand_in.clone();
        let last = if s.ends_with('A') { "B" } else { "A" };
        s.replace_range(s.len() - 1.., last);
        s
    };
    let cases = [
        (
            refresh_path,
            ct,
            json!({ "component_appid": COMPONENT, "authorizer_appid": authorizer, "authorizer_refresh_token": wechats }),
            61023,
        ),
        (
            refresh_path,
            ct,
            json!({ "component_appid": COMPONENT, "authorizer_appid": authorizer, "authorizer_refresh_token": other_stand_in }),
            61023,
        ),
        (
            refresh_path,
            ct,
            json!({ "component_appid": COMPONENT, "authorizer_appid": "wx00000000000000ff", "authorizer_refresh_token": stand_in }),
            61023,
        ),
        (
            refresh_path,
            ct,
            json!({ "component_appid": COMPONENT, "authorizer_appid": authorizer }),
            61023,
        ),
        (
            refresh_path,
            ct,
            json!({ "component_appid": COMPONENT, "authorizer_refresh_token": stand_in }),
            41002,
        ),
        (
            refresh_path,
            ct,
            json!({ "component_appid": "wxc00000000000000ff", "authorizer_appid": authorizer, "authorizer_refresh_token": stand_in }),
            61011,
        ),
        (
            refresh_path,
            ct,
            json!({ "authorizer_appid": authorizer, "authorizer_refresh_token": stand_in }),
            41018,
        ),
        (
            refresh_path,
            "not-a-hub-token",
            json!({ "component_appid": COMPONENT, "authorizer_appid": authorizer, "authorizer_refresh_token": stand_in }),
            40014,
        ),
        (
            query_auth_path,
            ct,
            json!({ "component_appid": COMPONENT }),
            41008,
        ),
        (
            query_auth_path,
            &served.access_token,
            json!({ "component_appid": COMPONENT, "authorization_code": code }),
            40014,
        ),
    ];
    for (path, token, body, errcode) in cases {
        let answer = answer_of(
            hub.client
                .post(format!(
                    "{}{path}?component_access_token={token}",
                    hub.gateway
                ))
                .json(&body),
        )
        .await;
        assert_eq!(answer["errcode"], errcode, "{path} {body}: {answer}");
    }
    let get = answer_of(hub.client.get(format!(
        "{}{refresh_path}?component_access_token={ct}",
        hub.gateway
    )))
    .await;
    assert_eq!(get["errcode"], 43002);
    assert_eq!(stats(&mock).total_calls(refresh_path), fetched);
    assert_eq!(stats(&mock).total_calls(query_auth_path), 1);
    // WeChat's refusal of a code is passed on as WeChat words it.
    let bad_code = json!({ "component_appid": COMPONENT, "authorization_code": "no-such-code" });
    let gateway = at_gateway(&hub, "api_query_auth", ct, bad_code.clone()).await;
    let wechat = answer_of(
        hub.client
            .post(format!(
                "{}{query_auth_path}?component_access_token={ct}",
                mock.base_url()
            ))
            .json(&bad_code),
    )
    .await;
    assert_eq!(errcode_and_text(&gateway), errcode_and_text(&wechat));
    assert_eq!(gateway["errcode"], 61009);

    // A business call with the SDK's token, killed behind the hub's back, is healed: one refresh
    // by the hub; afterwards the stand-in answers the hub's new token.
    let old = served.access_token.clone();
    authorizer_token_killed_behind_the_hubs_back(&mock, ct, &authorizer, &old).await;
    let fetched = stats(&mock).total_calls(refresh_path);
    let call: Value = hub
        .client
        .get(format!(
            "{}/cgi-bin/get_api_domain_ip?access_token={old}",
            hub.gateway
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(call["ip_list"].is_array(), "{call}");
    assert_eq!(stats(&mock).total_calls(refresh_path), fetched + 1);
    let renewed = hub.token_at(&token_path).await.access_token;
    assert_ne!(renewed, old);
    let answer = refresh(&stand_in).await;
    assert_eq!(
        answer["authorizer_access_token"],
        renewed.as_str(),
        "{answer}"
    );

    // Withdrawn: the stand-in is refused for good.
    owner(
        &mock,
        "unauthorize",
        json!({ "component_appid": COMPONENT, "authorizer_appid": authorizer }),
    )
    .await;
    assert_eq!(refresh(&stand_in).await["errcode"], 61023);
}

#[tokio::test]
async fn the_stand_in_outlives_every_rotation_of_wechats_refresh_token() {
    let (mock, relay, hub) = platform(Duration::from_secs(4), Duration::from_secs(600), &[], |c| {
        MockConfig {
            rotate_refresh_tokens: true,
            ..c
        }
    })
    .await;
    let component_path = format!("/v1/components/{COMPONENT}/access_token");
    let ct = hub.token_at(&component_path).await.access_token;
    let pre = at_gateway(
        &hub,
        "api_create_preauthcode",
        &ct,
        json!({ "component_appid": COMPONENT }),
    )
    .await;
    let pre = pre["pre_auth_code"].as_str().expect("a pre-auth code");
    let (authorizer, code) = authorize_unpushed(&mock, &relay, &[&hub], pre).await;
    let answer = at_gateway(
        &hub,
        "api_query_auth",
        &ct,
        json!({ "component_appid": COMPONENT, "authorization_code": code }),
    )
    .await;
    let stand_in = answer["authorization_info"]["authorizer_refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_string();
    let first = wechats_refresh_token(&mock, &ct, &authorizer).await;
    // The hub renews the authorizer's token, and WeChat hands it a new refresh token each time.
    wait_until(Duration::from_secs(15), "two rotations", || async {
        stats(&mock).component(COMPONENT).refresh_tokens_rotated >= 2
    })
    .await;
    let ct = hub.token_at(&component_path).await.access_token;
    assert_ne!(wechats_refresh_token(&mock, &ct, &authorizer).await, first);
    let answer = at_gateway(
        &hub,
        "api_authorizer_token",
        &ct,
        json!({
            "component_appid": COMPONENT,
            "authorizer_appid": authorizer,
            "authorizer_refresh_token": stand_in,
        }),
    )
    .await;
    assert_eq!(
        answer["authorizer_refresh_token"],
        stand_in.as_str(),
        "{answer}"
    );
    let token = answer["authorizer_access_token"].as_str().expect("a token");
    assert_eq!(business_call(&hub.client, &mock, token).await, 0);
}
