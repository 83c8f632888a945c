//! Work WeChat suites end to end, event by event and error by error, against `wechat-mock`
//! playing the provider side (docs/suites.md): suite tickets and the suite token, the command
//! callback URL's checks, installs, resets and uninstalls racing the corp tokens' refreshes, the
//! gateway's `service/*` answers, the provider token and the installed corps' listing. What the
//! hub must do on each event is docs/suites.md's table; assertions are on what Work WeChat saw
//! (the mock's counters) and what consumers saw.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use wechat_crypto::{EncodingAesKey, MessageCrypt};
use wechat_mock::{FaultRule, MockConfig, MockServer};
use wxhub::kinds::CredentialKey;
use wxhub::store::Store;

use crate::helpers::*;
use crate::platform_support::{owner, Relay, OTHER_KEY};
use crate::suites_support::*;

const GET_SUITE_TOKEN: &str = "/cgi-bin/service/get_suite_token";
const GET_CORP_TOKEN: &str = "/cgi-bin/service/get_corp_token";
const GET_PERMANENT_CODE: &str = "/cgi-bin/service/get_permanent_code";
const GET_PROVIDER_TOKEN: &str = "/cgi-bin/service/get_provider_token";

/// A mock playing the provider side with tokens living `lifetime` (no ticket of its own during a
/// test: one every ten minutes), `tune` applied to its configuration.
async fn provider_side(
    relay: &Relay,
    lifetime: Duration,
    tune: impl FnOnce(MockConfig) -> MockConfig,
) -> Arc<MockServer> {
    let relay = relay.clone();
    spawn_mock(lifetime, Duration::from_secs(2), &[], &[], move |c| {
        tune(with_suite(c, &relay, Duration::from_secs(600)))
    })
    .await
}

/// Mock, relay and a hub built with `options` that serves the suite token: the relay points at
/// the hub, and a ticket is pushed once it does.
async fn suite_hub(
    lifetime: Duration,
    tune: impl FnOnce(MockConfig) -> MockConfig,
    options: HubOptions,
) -> (Arc<MockServer>, Relay, TestHub) {
    let relay = Relay::start().await;
    let mock = provider_side(&relay, lifetime, tune).await;
    let hub = spawn_app(&mock, options).await;
    relay.point_at(&[&hub]);
    ticket_pushed(&mock).await;
    wait_for_suite_token(&hub).await;
    (mock, relay, hub)
}

/// A suite hub whose tokens outlive the test.
async fn steady_suite() -> (Arc<MockServer>, Relay, TestHub) {
    suite_hub(Duration::from_secs(60), |c| c, suite_options(&[])).await
}

/// Suite hub options on a store the test keeps a handle on.
fn options_on(store: &Arc<dyn Store>) -> HubOptions {
    let mut options = suite_options(&[]);
    options.shared_store = Some(store.clone());
    options
}

/// The mock pushes a new suite ticket now; its answer.
async fn ticket_pushed(mock: &MockServer) {
    assert!(push_ticket(mock).await, "{:?}", stats(mock).suite(SUITE));
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `xml` as Work WeChat seals a push sent at `sent_at`: encrypted with `key` for `receive_id`,
/// signed with `token`, in the Work envelope addressed to `to`. Returns (query, body).
fn seal(
    sent_at: i64,
    token: &str,
    key: &str,
    receive_id: &str,
    to: &str,
    xml: &str,
) -> (String, String) {
    let crypt = MessageCrypt::new(token, EncodingAesKey::parse(key).unwrap(), receive_id);
    let encrypt = crypt.encrypt(xml);
    let timestamp = sent_at.to_string();
    let nonce = "4242";
    let query = format!(
        "msg_signature={}&timestamp={timestamp}&nonce={nonce}",
        crypt.msg_signature(&timestamp, nonce, &encrypt)
    );
    let body = format!(
        "<xml><ToUserName><![CDATA[{to}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>"
    );
    (query, body)
}

/// [`seal`] as the test suite's own push, sent now.
fn sealed(xml: &str) -> (String, String) {
    seal(unix_now(), SUITE_TOKEN, SUITE_KEY, SUITE, SUITE, xml)
}

fn ticket_message(suite: &str, timestamp: i64, ticket: &str) -> String {
    format!("<xml><SuiteId><![CDATA[{suite}]]></SuiteId><InfoType><![CDATA[suite_ticket]]></InfoType><TimeStamp>{timestamp}</TimeStamp><SuiteTicket><![CDATA[{ticket}]]></SuiteTicket></xml>")
}

fn create_auth_message(auth_code: &str) -> String {
    format!("<xml><SuiteId><![CDATA[{SUITE}]]></SuiteId><InfoType><![CDATA[create_auth]]></InfoType><TimeStamp>{}</TimeStamp><AuthCode><![CDATA[{auth_code}]]></AuthCode></xml>", unix_now())
}

/// POSTs a push to the hub's command callback URL for `suite`.
async fn push(hub: &TestHub, suite: &str, query: &str, body: String) -> reqwest::Response {
    hub.client
        .post(hub.url(&format!("/wechat/suites/{suite}/events?{query}")))
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The generation of the suite ticket the hub holds.
async fn ticket_generation(hub: &TestHub) -> u64 {
    hub.credential(&format!("suite_ticket/{SUITE}")).await["generation"]
        .as_u64()
        .unwrap_or(0)
}

/// A call of the Work business API with `param=token`, straight to the mock: its errcode.
async fn work_call(mock: &MockServer, param: &str, token: &str) -> i64 {
    let answer = answer_of(
        reqwest::Client::new()
            .get(format!("{}/cgi-bin/get_api_domain_ip", mock.base_url()))
            .query(&[(param, token)]),
    )
    .await;
    answer["errcode"].as_i64().unwrap_or(0)
}

/// The installations the mock lists, by corpid: their live permanent codes.
async fn permanent_codes(mock: &MockServer) -> Vec<(String, String)> {
    let listed = answer_of(reqwest::Client::new().get(format!(
        "{}/mock/suites/{SUITE}/installations",
        mock.base_url()
    )))
    .await;
    listed["installations"]
        .as_array()
        .expect("installations")
        .iter()
        .filter_map(|i| {
            Some((
                i["corpid"].as_str()?.to_string(),
                i["permanent_code"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The live permanent code of `corpid`, as Work WeChat holds it.
async fn permanent_code_of(mock: &MockServer, corpid: &str) -> String {
    permanent_codes(mock)
        .await
        .into_iter()
        .find(|(c, _)| c == corpid)
        .map(|(_, code)| code)
        .unwrap_or_else(|| panic!("{corpid} has a permanent code"))
}

/// The permanent code of `corpid` as the hub stored it: sealed, and opened here.
async fn stored_permanent_code(store: &Arc<dyn Store>, corpid: &str) -> Option<String> {
    let place = format!("permanent_code/{SUITE}/{corpid}");
    let key: CredentialKey = place.parse().unwrap();
    let stored = store.get(&key).await.unwrap()?;
    assert!(
        wxhub::seal::Sealer::is_sealed(&stored.value),
        "a permanent code is sealed at rest"
    );
    let sealer = wxhub::seal::Sealer::new(&test_master_key());
    Some(
        sealer
            .open(&place, &stored.value)
            .unwrap()
            .expose()
            .to_string(),
    )
}

/// Whether the store holds anything under `key`.
async fn stored(store: &Arc<dyn Store>, key: &str) -> bool {
    let key: CredentialKey = key.parse().unwrap();
    store.get(&key).await.unwrap().is_some()
}

/// One corp-token call of `corpid` is held by the mock: it waits `delay` before the mock reads
/// it (`held_before`) or is answered at once and delivered `delay` later. Returns once the hub's
/// planned renewal has made that call.
async fn hold_next_corp_token_call(mock: &MockServer, corpid: &str, fault: FaultRule) {
    let calls = || stats(mock).calls(GET_CORP_TOKEN, corpid);
    let before = calls();
    mock.add_fault(FaultRule {
        path: GET_CORP_TOKEN.into(),
        account: Some(corpid.to_string()),
        count: Some(1),
        ..fault
    });
    wait_until(
        Duration::from_secs(15),
        "the hub's renewal of the corp token is in flight",
        || async { calls() > before },
    )
    .await;
}

#[tokio::test]
async fn a_first_start_waits_for_the_first_suite_ticket_and_fetches_the_token_on_its_push() {
    let relay = Relay::start().await;
    // Started without a push URL: nothing reaches the hub until the test says so.
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_secs(2),
        &[],
        &[],
        |c| {
            MockConfig {
                suite_ticket_interval: Duration::from_secs(600),
                ..c
            }
            .with_suite(SUITE, SUITE_SECRET, SUITE_TOKEN, SUITE_KEY)
            .with_provider(PROVIDER, PROVIDER_SECRET)
        },
    )
    .await;
    let mut options = suite_options(&[]);
    // A failed fetch would be retried only after a minute: a token served within seconds of the
    // push was fetched because the push asked for it.
    options.refresh.refresh_retry_interval = Duration::from_secs(60);
    let hub = spawn_app(&mock, options).await;
    relay.point_at(&[&hub]);
    // The hub is up and refreshing (the provider token needs no ticket); the suite token waits,
    // without an error and without asking Work WeChat.
    wait_until(
        Duration::from_secs(10),
        "the provider token is served",
        || async {
            hub.get(&format!("/v1/providers/{PROVIDER}/access_token"))
                .await
                .status()
                == 200
        },
    )
    .await;
    let key = format!("suite_token/{SUITE}");
    let token = hub.credential(&key).await;
    assert_eq!(token["state"], "pending", "{token}");
    assert!(token["last_error"].is_null(), "{token}");
    assert_eq!(
        stats(&mock).total_calls(GET_SUITE_TOKEN),
        0,
        "Work WeChat is not asked without a ticket"
    );
    assert_eq!(
        hub.get(&format!("/v1/suites/{SUITE}/access_token"))
            .await
            .status(),
        503
    );

    // Work WeChat starts pushing (the first ticket goes out at once): the token follows it.
    mock.push_suites_to(&relay.suite_push_url()).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the suite token is served",
        || async {
            hub.get(&format!("/v1/suites/{SUITE}/access_token"))
                .await
                .status()
                == 200
        },
    )
    .await;
    let suite = stats(&mock).suite(SUITE);
    assert_eq!(suite.pushes("suite_ticket").acknowledged, 1, "{suite:?}");
    assert_eq!(suite.suite_tokens_issued, 1);
    assert_eq!(
        stats(&mock).total_calls(GET_SUITE_TOKEN),
        1,
        "one fetch, and none refused"
    );
    let token = hub.credential(&key).await;
    assert!(token["last_error"].is_null(), "{token}");
    let served = hub
        .token_at(&format!("/v1/suites/{SUITE}/access_token"))
        .await;
    assert_eq!(
        work_call(&mock, "suite_access_token", &served.access_token).await,
        0
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_suite_ticket_pushed_earlier_never_replaces_the_one_stored() {
    let (mock, _relay, hub) = steady_suite().await;
    let before = ticket_generation(&hub).await;
    assert!(before >= 1);
    let now = unix_now();

    // Sent five minutes before the stored one (a delayed retry, say): acknowledged, not stored.
    let (query, body) = sealed(&ticket_message(SUITE, now - 300, "earlier"));
    let answer = push(&hub, SUITE, &query, body).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "success");
    assert_eq!(ticket_generation(&hub).await, before);

    // Sent later than the stored one: it replaces it.
    let (query, body) = sealed(&ticket_message(SUITE, now + 5, "later"));
    let answer = push(&hub, SUITE, &query, body.clone()).await;
    assert_eq!(answer.text().await.unwrap(), "success");
    assert_eq!(ticket_generation(&hub).await, before + 1);
    // The same push again: acknowledged, not written again.
    let answer = push(&hub, SUITE, &query, body).await;
    assert_eq!(answer.text().await.unwrap(), "success");
    assert_eq!(ticket_generation(&hub).await, before + 1);
    // And Work WeChat's own push of now, earlier than "later", does not replace it either.
    ticket_pushed(&mock).await;
    assert_eq!(ticket_generation(&hub).await, before + 1);
    hub.stop().await;
}

#[tokio::test]
async fn forged_misaddressed_stale_or_oversize_pushes_store_and_exchange_nothing() {
    let (mock, relay, hub) = steady_suite().await;
    let before = ticket_generation(&hub).await;
    // A corp installs the suite while the hub cannot be reached: the test holds the auth code
    // Work WeChat pushed, and plays the forger with it.
    relay.point_at(&[]);
    let installed = owner(&mock, "install", json!({ "suite_id": SUITE })).await;
    assert_eq!(installed["push"]["acknowledged"], false, "{installed}");
    let corpid = corpid_of(&installed);
    let auth_code = installed["auth_code"].as_str().unwrap().to_string();
    let install = create_auth_message(&auth_code);
    let now = unix_now();
    let ticket = ticket_message(SUITE, now + 5, "forged");

    for (what, (query, body), status) in [
        // Signed with another Token: 403.
        (
            "signed with another Token",
            seal(now, "forged", SUITE_KEY, SUITE, SUITE, &install),
            403,
        ),
        (
            "a ticket signed with another Token",
            seal(now, "forged", SUITE_KEY, SUITE, SUITE, &ticket),
            403,
        ),
        // Signed right, sealed with another key: 400.
        (
            "sealed with another key",
            seal(now, SUITE_TOKEN, OTHER_KEY, SUITE, SUITE, &install),
            400,
        ),
        // Sealed for another suite, addressed to it or to this one: 400.
        (
            "addressed to another suite",
            seal(
                now,
                SUITE_TOKEN,
                SUITE_KEY,
                "wwothersuite00001",
                "wwothersuite00001",
                &install,
            ),
            400,
        ),
        (
            "sealed for another suite",
            seal(
                now,
                SUITE_TOKEN,
                SUITE_KEY,
                "wwothersuite00001",
                SUITE,
                &install,
            ),
            400,
        ),
        // Signed right, sent over ten minutes ago: a replay, 400.
        (
            "sent an hour ago",
            seal(now - 3600, SUITE_TOKEN, SUITE_KEY, SUITE, SUITE, &install),
            400,
        ),
    ] {
        let answer = push(&hub, SUITE, &query, body).await;
        assert_eq!(answer.status(), status, "{what}");
    }
    // A push for a suite the hub does not have: 404, whatever it carries.
    let (query, body) = sealed(&install);
    assert_eq!(
        push(&hub, "wwnotconfigured00001", &query, body)
            .await
            .status(),
        404
    );
    // More than 64 KiB: 413, before anything is read.
    let (query, body) = sealed(&install);
    let oversize = body.replace(
        "<AgentID>",
        &format!("<Pad>{}</Pad><AgentID>", "A".repeat(70_000)),
    );
    assert_eq!(push(&hub, SUITE, &query, oversize).await.status(), 413);
    // Garbage: 400 or 403, never 5xx.
    for garbage in [
        "",
        "<xml>",
        "not xml at all",
        "<xml><Encrypt>AAAA</Encrypt></xml>",
    ] {
        let status = push(&hub, SUITE, &query, garbage.to_string())
            .await
            .status();
        assert!(status == 400 || status == 403, "{garbage:?}: {status}");
    }
    for query in ["", "timestamp=1&nonce=2"] {
        let (_, body) = sealed(&install);
        assert_eq!(
            push(&hub, SUITE, query, body).await.status(),
            403,
            "{query:?}"
        );
    }

    // Nothing was stored, nothing exchanged: the auth code is unspent.
    assert_eq!(ticket_generation(&hub).await, before);
    assert_eq!(stats(&mock).suite(SUITE).permanent_codes_issued, 0);
    assert_eq!(stats(&mock).total_calls(GET_PERMANENT_CODE), 0);
    assert_eq!(
        hub.get(&corp_path(&corpid, "access_token")).await.status(),
        404
    );
    // The genuine push, sealed right, installs the corp.
    let (query, body) = sealed(&install);
    let answer = push(&hub, SUITE, &query, body).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "success");
    let token = hub.token_at(&corp_path(&corpid, "access_token")).await;
    assert_eq!(
        business_call(&hub.client, &mock, &token.access_token).await,
        0
    );
    assert_eq!(stats(&mock).suite(SUITE).permanent_codes_issued, 1);
    hub.stop().await;
}

#[tokio::test]
async fn work_wechats_check_of_the_callback_url_is_answered_with_the_decrypted_echostr() {
    let (mock, relay, hub) = steady_suite().await;
    let answer = owner(&mock, &format!("suites/{SUITE}/verify_url"), json!({})).await;
    assert_eq!(answer["verified"], true, "{answer}");
    let suite = stats(&mock).suite(SUITE);
    assert_eq!(suite.url_verifications.acknowledged, 1, "{suite:?}");
    let check = relay.deliveries().pop().expect("the check reached the hub");
    assert_eq!(check.method, reqwest::Method::GET);
    assert_eq!(check.status, 200);
    assert!(
        !check.body.is_empty() && check.body.bytes().all(|b| b.is_ascii_digit()),
        "the plain echostr: {check:?}"
    );

    // A check the hub cannot trust, or for a suite it does not have, is refused.
    let crypt = MessageCrypt::new(
        SUITE_TOKEN,
        EncodingAesKey::parse(SUITE_KEY).unwrap(),
        SUITE,
    );
    let echostr = crypt.encrypt("1234567890");
    let encoded: String = form_urlencoded::byte_serialize(echostr.as_bytes()).collect();
    let check = |suite: &str, timestamp: i64, token: &str| {
        let signer = MessageCrypt::new(token, EncodingAesKey::parse(SUITE_KEY).unwrap(), SUITE);
        let timestamp = timestamp.to_string();
        let signature = signer.msg_signature(&timestamp, "77", &echostr);
        hub.client
            .get(hub.url(&format!(
                "/wechat/suites/{suite}/events?msg_signature={signature}&timestamp={timestamp}&nonce=77&echostr={encoded}"
            )))
            .send()
    };
    let now = unix_now();
    let good = check(SUITE, now, SUITE_TOKEN).await.unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(good.text().await.unwrap(), "1234567890");
    assert_eq!(check(SUITE, now, "forged").await.unwrap().status(), 403);
    assert_eq!(
        check(SUITE, now - 3600, SUITE_TOKEN)
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        check("wwnotconfigured00001", now, SUITE_TOKEN)
            .await
            .unwrap()
            .status(),
        404
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_create_auth_delivered_twice_is_exchanged_once_and_acknowledged_both_times() {
    let (mock, relay, hub) = steady_suite().await;
    // The relay hands every push to the hub twice: the second is an exact replay.
    relay.point_at(&[&hub, &hub]);
    let before = relay.deliveries().len();
    let corpid = install(&mock).await;
    let deliveries = relay.deliveries()[before..].to_vec();
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    for delivery in &deliveries {
        assert_eq!(
            (delivery.status, delivery.body.as_str()),
            (200, "success"),
            "{delivery:?}"
        );
    }
    let suite = stats(&mock).suite(SUITE);
    assert_eq!(
        suite.permanent_codes_issued, 1,
        "the replay cost no exchange"
    );
    assert_eq!(stats(&mock).total_calls(GET_PERMANENT_CODE), 1);
    // Served at once (the push was acknowledged after the corp was registered), with a token
    // that works for the corp's business calls.
    let token = hub.token_at(&corp_path(&corpid, "access_token")).await;
    assert_eq!(
        business_call(&hub.client, &mock, &token.access_token).await,
        0
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_reset_permanent_code_racing_a_corp_token_refresh_keeps_the_corp_served() {
    let lifetime = Duration::from_secs(4);
    let store: Arc<dyn Store> = Arc::new(wxhub::store::memory::MemoryStore::new());
    let (mock, _relay, hub) = suite_hub(lifetime, |c| c, options_on(&store)).await;
    let corpid = install(&mock).await;
    let path = corp_path(&corpid, "access_token");
    let old_code = permanent_code_of(&mock, &corpid).await;
    assert_eq!(
        stored_permanent_code(&store, &corpid).await,
        Some(old_code.clone())
    );

    let token_key = format!("auth_corp_token/{SUITE}/{corpid}");
    let calls = stats(&mock).calls(GET_CORP_TOKEN, &corpid);
    let done = corp_token_calls_done(&hub).await;
    // The hub's next renewal of the corp token leaves with the old code and is held before Work
    // WeChat reads it; meanwhile the corp's administrator resets the permanent code.
    hold_next_corp_token_call(
        &mock,
        &corpid,
        FaultRule {
            delay_ms: Some(1500),
            ..FaultRule::default()
        },
    )
    .await;
    let reset = owner(
        &mock,
        "reset_permanent_code",
        json!({ "suite_id": SUITE, "corpid": corpid }),
    )
    .await;
    assert_eq!(reset["push"]["acknowledged"], true, "{reset}");
    let new_code = permanent_code_of(&mock, &corpid).await;
    assert_ne!(new_code, old_code);
    assert_eq!(
        stored_permanent_code(&store, &corpid).await,
        Some(new_code.clone()),
        "the new code is stored before the reset is acknowledged"
    );

    // The held call reaches Work WeChat with the dead code and is refused; the hub retries at
    // once with the code the reset stored, and that succeeds (long before the token the reset
    // brought expires, when a renewal would take the new code anyway).
    wait_until(
        Duration::from_secs(10),
        "the held renewal was refused for its old code",
        || async { stats(&mock).outcome(GET_CORP_TOKEN, 40084) >= 1 },
    )
    .await;
    wait_until(
        Duration::from_millis(1500),
        "the refused renewal is retried at once with the new code",
        || async { stats(&mock).calls(GET_CORP_TOKEN, &corpid) >= calls + 2 },
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "the hub has both answers",
        || async { corp_token_calls_done(&hub).await >= done + 2 },
    )
    .await;
    let token = hub.token_at(&path).await;
    assert_eq!(
        business_call(&hub.client, &mock, &token.access_token).await,
        0
    );
    let suite = stats(&mock).suite(SUITE);
    assert_eq!(
        stats(&mock).outcome(GET_CORP_TOKEN, 40084),
        1,
        "only the raced call carried the old code"
    );
    assert_eq!((suite.installs, suite.resets), (1, 1), "{suite:?}");
    let listing: Value = hub
        .get(&format!("/v1/suites/{SUITE}/corps"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listing["corps"][0]["state"], "active", "{listing}");
    let token = hub.credential(&token_key).await;
    assert!(
        token["last_error"].is_null() && token["previous_error"].is_null(),
        "no renewal of the corp token ever failed: {token}"
    );
    hub.stop().await;
}

/// The hub's `get_corp_token` calls that have been answered.
async fn corp_token_calls_done(hub: &TestHub) -> u64 {
    hub.metric_sum("wxhub_upstream_seconds_count{endpoint=\"get_corp_token\"}")
        .await
}

/// Whether a corp reads as revoked everywhere: 410 `corp_revoked`, listed `revoked`, nothing of
/// it left in the store.
async fn revoked_everywhere(hub: &TestHub, store: &Arc<dyn Store>, corpid: &str) {
    let gone = hub.get(&corp_path(corpid, "access_token")).await;
    assert_eq!(gone.status(), 410);
    let body: Value = gone.json().await.unwrap();
    assert_eq!(body["error"]["code"], "corp_revoked", "{body}");
    let listing: Value = hub
        .get(&format!("/v1/suites/{SUITE}/corps"))
        .await
        .json()
        .await
        .unwrap();
    let listed = listing["corps"]
        .as_array()
        .and_then(|corps| corps.iter().find(|c| c["corpid"] == corpid))
        .cloned()
        .unwrap_or_default();
    assert_eq!(listed["state"], "revoked", "{listing}");
    for key in [
        format!("auth_corp_token/{SUITE}/{corpid}"),
        format!("permanent_code/{SUITE}/{corpid}"),
    ] {
        assert!(!stored(store, &key).await, "{key} is deleted");
    }
}

/// A corp that uninstalls while its next corp-token call is held at the mock by `fault`.
struct HeldUninstall {
    mock: Arc<MockServer>,
    hub: TestHub,
    store: Arc<dyn Store>,
    corpid: String,
    /// Corp tokens the mock had minted before the held call.
    issued_before: u64,
    /// Corp-token calls the hub had seen answered before the held call.
    done_before: u64,
}

/// Token lifetime of the cancel-during-refresh tests: renewals come quickly.
const HELD_LIFETIME: Duration = Duration::from_secs(2);

async fn uninstall_during_held_renewal(fault: FaultRule) -> HeldUninstall {
    let store: Arc<dyn Store> = Arc::new(wxhub::store::memory::MemoryStore::new());
    let (mock, _relay, hub) = suite_hub(HELD_LIFETIME, |c| c, options_on(&store)).await;
    let corpid = install(&mock).await;
    hub.token_at(&corp_path(&corpid, "access_token")).await;
    let issued_before = stats(&mock).suite(SUITE).corp_tokens_issued;
    let done_before = corp_token_calls_done(&hub).await;
    hold_next_corp_token_call(&mock, &corpid, fault).await;
    let gone = owner(
        &mock,
        "uninstall",
        json!({ "suite_id": SUITE, "corpid": corpid }),
    )
    .await;
    assert_eq!(gone["push"]["acknowledged"], true, "{gone}");
    revoked_everywhere(&hub, &store, &corpid).await;
    HeldUninstall {
        mock,
        hub,
        store,
        corpid,
        issued_before,
        done_before,
    }
}

impl HeldUninstall {
    /// Revoked now, and after more than a lifetime in which nothing was fetched for the corp.
    async fn stays_revoked(self) {
        revoked_everywhere(&self.hub, &self.store, &self.corpid).await;
        let calls = stats(&self.mock).total_calls(GET_CORP_TOKEN);
        // Nothing to wait for: the check is that no call comes within the window.
        tokio::time::sleep(HELD_LIFETIME + Duration::from_secs(1)).await;
        assert_eq!(stats(&self.mock).total_calls(GET_CORP_TOKEN), calls);
        revoked_everywhere(&self.hub, &self.store, &self.corpid).await;
        self.hub.stop().await;
    }
}

#[tokio::test]
async fn a_cancel_auth_while_a_corp_token_refresh_is_in_flight_stays_revoked() {
    // The renewal is held before Work WeChat reads it; the corp uninstalls meanwhile.
    let held = uninstall_during_held_renewal(FaultRule {
        delay_ms: Some(1500),
        ..FaultRule::default()
    })
    .await;
    // The held call is refused (the code died with the installation).
    wait_until(
        Duration::from_secs(10),
        "the held renewal was answered",
        || async { stats(&held.mock).outcome(GET_CORP_TOKEN, 40084) >= 1 },
    )
    .await;
    held.stays_revoked().await;
}

#[tokio::test]
async fn a_corp_token_answered_before_a_cancel_auth_and_received_after_it_is_not_served() {
    // Work WeChat answers the renewal at once (a token it mints for the corp), and the answer is
    // slow to come back; the corp uninstalls before it arrives.
    let held = uninstall_during_held_renewal(FaultRule {
        hold_answer_ms: Some(1500),
        ..FaultRule::default()
    })
    .await;
    wait_until(
        Duration::from_secs(10),
        "the held answer reached the hub",
        || async { corp_token_calls_done(&held.hub).await > held.done_before },
    )
    .await;
    assert!(
        stats(&held.mock).suite(SUITE).corp_tokens_issued > held.issued_before,
        "the held call minted a token, which the hub must not serve or store"
    );
    held.stays_revoked().await;
}

#[tokio::test]
async fn change_auth_is_acknowledged_and_changes_nothing() {
    let store: Arc<dyn Store> = Arc::new(wxhub::store::memory::MemoryStore::new());
    let (mock, _relay, hub) = suite_hub(Duration::from_secs(60), |c| c, options_on(&store)).await;
    let corpid = install(&mock).await;
    let path = corp_path(&corpid, "access_token");
    let before = hub.token_at(&path).await;
    let code = stored_permanent_code(&store, &corpid).await;
    let listing = hub
        .get(&format!("/v1/suites/{SUITE}/corps"))
        .await
        .text()
        .await
        .unwrap();
    let calls = stats(&mock).calls.clone();

    let changed = owner(
        &mock,
        "change_auth",
        json!({ "suite_id": SUITE, "corpid": corpid }),
    )
    .await;
    assert_eq!(changed["push"]["acknowledged"], true, "{changed}");
    let suite = stats(&mock).suite(SUITE);
    assert_eq!(suite.pushes("change_auth").acknowledged, 1, "{suite:?}");
    assert_eq!(hub.token_at(&path).await, before);
    assert_eq!(stored_permanent_code(&store, &corpid).await, code);
    assert_eq!(
        hub.get(&format!("/v1/suites/{SUITE}/corps"))
            .await
            .text()
            .await
            .unwrap(),
        listing
    );
    assert_eq!(stats(&mock).calls, calls, "no call to Work WeChat");
    hub.stop().await;
}

#[tokio::test]
async fn a_refused_suite_ticket_keeps_the_suite_token_served_until_the_next_push() {
    // Tickets die after 2 s at Work WeChat (as if pushes had stopped reaching the hub for half
    // an hour); the suite token outlives the test.
    let mut options = suite_options(&[]);
    options.refresh.min_refresh_interval = Duration::from_millis(1);
    let (mock, _relay, hub) = suite_hub(
        Duration::from_secs(60),
        |c| MockConfig {
            suite_ticket_lifetime: Duration::from_secs(2),
            ..c
        },
        options,
    )
    .await;
    let path = format!("/v1/suites/{SUITE}/access_token");
    let first = hub.token_at(&path).await;
    let ticket_key = format!("suite_ticket/{SUITE}");
    let token_key = format!("suite_token/{SUITE}");
    // A consumer reports the suite token (a call was refused): the hub fetches it again, with
    // the ticket it holds, until Work WeChat refuses that ticket.
    wait_until(
        Duration::from_secs(10),
        "a renewal is refused for its ticket",
        || async {
            hub.post(
                &format!("{path}/invalidate"),
                json!({ "access_token": first.access_token }),
            )
            .await;
            !hub.credential(&ticket_key).await["warning"].is_null()
        },
    )
    .await;
    assert!(stats(&mock).outcome(GET_SUITE_TOKEN, 40085) >= 1);
    let ticket = hub.credential(&ticket_key).await;
    assert!(
        ticket["warning"].as_str().unwrap().contains("40085"),
        "{ticket}"
    );
    let token = hub.credential(&token_key).await;
    assert_eq!(token["last_error"]["errcode"], 40085, "{token}");
    assert_eq!(token["last_error"]["class"], "transient", "{token}");
    // The token in hand is still served, and still works.
    let served = hub.token_at(&path).await;
    assert_eq!(served.access_token, first.access_token);
    assert_eq!(
        work_call(&mock, "suite_access_token", &served.access_token).await,
        0
    );

    // The next push heals it: the warning goes, the renewal succeeds.
    ticket_pushed(&mock).await;
    wait_until(
        Duration::from_secs(5),
        "the suite token is renewed with the new ticket",
        || async {
            let token = hub.credential(&token_key).await;
            hub.credential(&ticket_key).await["warning"].is_null()
                && token["last_error"].is_null()
                && token["state"] == "fresh"
        },
    )
    .await;
    let served = hub.token_at(&path).await;
    assert_eq!(
        work_call(&mock, "suite_access_token", &served.access_token).await,
        0
    );
    hub.stop().await;
}

#[tokio::test]
async fn the_work_gateway_answers_service_tokens_from_the_hub_and_refuses_like_work_wechat() {
    let (mock, _relay, hub) = steady_suite().await;
    let corpid = install(&mock).await;
    let suite = hub
        .token_at(&format!("/v1/suites/{SUITE}/access_token"))
        .await;
    let provider = hub
        .token_at(&format!("/v1/providers/{PROVIDER}/access_token"))
        .await;
    let corp = hub.token_at(&corp_path(&corpid, "access_token")).await;
    let client = &hub.client;
    let ask = |base: String, path: &str, body: Value| {
        answer_of(client.post(format!("{base}{path}")).json(&body))
    };
    let gateway = hub.work_gateway.clone();
    let issued = |mock: &MockServer| {
        let s = stats(mock);
        (
            s.suite(SUITE).suite_tokens_issued,
            s.provider_tokens(PROVIDER),
            s.suite(SUITE).corp_tokens_issued,
        )
    };
    let before = issued(&mock);

    // The consumer key stands in for the secret; the ticket and the permanent code are not
    // needed (Work WeChat pushes tickets to the hub, which keeps the codes).
    let answer = ask(
        gateway.clone(),
        GET_SUITE_TOKEN,
        json!({ "suite_id": SUITE, "suite_secret": ADMIN_KEY, "suite_ticket": "any" }),
    )
    .await;
    assert_eq!(
        answer["suite_access_token"],
        suite.access_token.as_str(),
        "{answer}"
    );
    assert!(
        answer["expires_in"].as_u64().is_some_and(|s| s > 0),
        "{answer}"
    );
    let answer = ask(
        gateway.clone(),
        GET_PROVIDER_TOKEN,
        json!({ "corpid": PROVIDER, "provider_secret": ADMIN_KEY }),
    )
    .await;
    assert_eq!(
        answer["provider_access_token"],
        provider.access_token.as_str(),
        "{answer}"
    );
    let answer = ask(
        gateway.clone(),
        &format!("{GET_CORP_TOKEN}?suite_access_token={}", suite.access_token),
        json!({ "auth_corpid": corpid, "permanent_code": "any" }),
    )
    .await;
    assert_eq!(
        answer["access_token"],
        corp.access_token.as_str(),
        "{answer}"
    );
    assert_eq!(issued(&mock), before, "nothing minted at Work WeChat");

    // Mistakes are answered as Work WeChat answers them (a wrong key as a wrong secret).
    let mistakes = [
        (
            GET_SUITE_TOKEN.to_string(),
            json!({ "suite_secret": ADMIN_KEY }),
        ),
        (
            GET_SUITE_TOKEN.to_string(),
            json!({ "suite_id": "wwnosuchsuite00001", "suite_secret": ADMIN_KEY }),
        ),
        (GET_SUITE_TOKEN.to_string(), json!({ "suite_id": SUITE })),
        (
            GET_SUITE_TOKEN.to_string(),
            json!({ "suite_id": SUITE, "suite_secret": "not-a-key" }),
        ),
        (
            GET_SUITE_TOKEN.to_string(),
            json!({ "suite_id": SUITE, "suite_secret": READER_KEY }),
        ),
        (
            GET_SUITE_TOKEN.to_string(),
            json!({ "suite_id": SUITE, "suite_secret": 7 }),
        ),
        (
            GET_PROVIDER_TOKEN.to_string(),
            json!({ "provider_secret": ADMIN_KEY }),
        ),
        (
            GET_PROVIDER_TOKEN.to_string(),
            json!({ "corpid": "wwnosuchprovider01", "provider_secret": ADMIN_KEY }),
        ),
        (
            GET_PROVIDER_TOKEN.to_string(),
            json!({ "corpid": PROVIDER }),
        ),
        (
            GET_PROVIDER_TOKEN.to_string(),
            json!({ "corpid": PROVIDER, "provider_secret": "not-a-key" }),
        ),
        (
            GET_CORP_TOKEN.to_string(),
            json!({ "auth_corpid": corpid, "permanent_code": "any" }),
        ),
        (
            format!("{GET_CORP_TOKEN}?suite_access_token=not-a-suite-token"),
            json!({ "auth_corpid": corpid, "permanent_code": "any" }),
        ),
        (
            format!("{GET_CORP_TOKEN}?suite_access_token={}", suite.access_token),
            json!({ "permanent_code": "any" }),
        ),
        (
            format!("{GET_CORP_TOKEN}?suite_access_token={}", suite.access_token),
            json!({ "auth_corpid": "wwnotinstalled0001", "permanent_code": "any" }),
        ),
    ];
    for (path, body) in mistakes {
        let hub_answer = ask(gateway.clone(), &path, body.clone()).await;
        let wechat = ask(mock.base_url(), &path, body.clone()).await;
        assert_eq!(
            errcode_and_text(&hub_answer),
            errcode_and_text(&wechat),
            "{path} {body}: {hub_answer} vs {wechat}"
        );
    }
    assert_eq!(issued(&mock), before, "nothing minted at Work WeChat");
    hub.stop().await;
}

#[tokio::test]
async fn business_calls_with_a_corp_suite_or_provider_token_work_wechat_killed_early_are_healed() {
    let mut options = suite_options(&[]);
    // Tokens are killed within a second of their fetch here.
    options.refresh.min_refresh_interval = Duration::from_millis(1);
    let (mock, _relay, hub) = suite_hub(Duration::from_secs(60), |c| c, options).await;
    let corpid = install(&mock).await;
    let suite = hub
        .token_at(&format!("/v1/suites/{SUITE}/access_token"))
        .await;
    let corp = hub.token_at(&corp_path(&corpid, "access_token")).await;
    let provider_path = format!("/v1/providers/{PROVIDER}/access_token");
    let provider = hub.token_at(&provider_path).await;
    let call = |param: &'static str, token: String| {
        answer_of(
            hub.client
                .get(format!("{}/cgi-bin/get_api_domain_ip", hub.work_gateway))
                .query(&[(param, token)]),
        )
    };
    for (param, old) in [
        ("access_token", corp.access_token.clone()),
        ("suite_access_token", suite.access_token.clone()),
        ("provider_access_token", provider.access_token.clone()),
    ] {
        // Work WeChat invalidates the token early, as it may.
        let killed = owner(&mock, "invalidate_token", json!({ "token": old })).await;
        assert!(killed["invalidated"].is_string(), "{killed}");
        assert_ne!(work_call(&mock, param, &old).await, 0, "{param}: dead");
        // The call made with it is refused, the token replaced and the call replayed.
        let answer = call(param, old.clone()).await;
        assert!(answer["ip_list"].is_array(), "{param}: {answer}");
    }
    let corp_after = hub.token_at(&corp_path(&corpid, "access_token")).await;
    let suite_after = hub
        .token_at(&format!("/v1/suites/{SUITE}/access_token"))
        .await;
    assert_ne!(corp_after.access_token, corp.access_token);
    assert_ne!(suite_after.access_token, suite.access_token);
    let provider_after = hub.token_at(&provider_path).await;
    assert_ne!(provider_after.access_token, provider.access_token);
    // One new token each, whatever else was asked.
    let counts = stats(&mock).suite(SUITE);
    assert_eq!(
        (counts.suite_tokens_issued, counts.corp_tokens_issued),
        (2, 2),
        "{counts:?}"
    );
    assert_eq!(stats(&mock).provider_tokens(PROVIDER), 2);
    hub.stop().await;
}

#[tokio::test]
async fn the_provider_token_is_served_renewed_and_replaced_when_work_wechat_kills_it() {
    let lifetime = Duration::from_secs(2);
    let mut options = suite_options(&[]);
    // The token is killed within a second of its fetch here.
    options.refresh.min_refresh_interval = Duration::from_millis(1);
    let (mock, _relay, hub) = suite_hub(lifetime, |c| c, options).await;
    let path = format!("/v1/providers/{PROVIDER}/access_token");
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + lifetime * 3;
    let mut checked = 0;
    while tokio::time::Instant::now() < deadline {
        let token = hub.token_at(&path).await;
        // A token in its last second may die at Work WeChat before the call reaches it (the hub
        // counts its life from the answer, Work WeChat from the minting): consumers are told
        // to ask again (expires_in 0), and the call is not judged.
        if token.expires_in > 0 {
            assert_eq!(
                work_call(&mock, "provider_access_token", &token.access_token).await,
                0,
                "a served provider token works"
            );
            checked += 1;
        }
        seen.insert(token.access_token);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(checked >= 10, "{checked} calls judged");
    // Work WeChat hands the same token back until it expires: a new one each lifetime.
    let issued = stats(&mock).provider_tokens(PROVIDER);
    assert!(
        (3..=6).contains(&issued),
        "provider tokens issued: {issued}"
    );
    assert!(seen.len() >= 3, "{seen:?}");

    // Killed early: a report of it brings a new one.
    let old = hub.token_at(&path).await;
    owner(
        &mock,
        "invalidate_token",
        json!({ "token": old.access_token }),
    )
    .await;
    let reported = hub
        .post(
            &format!("{path}/invalidate"),
            json!({ "access_token": old.access_token }),
        )
        .await;
    assert_eq!(reported.status(), 200);
    let new = hub.token_at(&path).await;
    assert_ne!(new.access_token, old.access_token);
    assert_eq!(
        work_call(&mock, "provider_access_token", &new.access_token).await,
        0
    );
    hub.stop().await;
}

#[tokio::test]
async fn the_corp_listing_pages_states_and_never_shows_a_code_or_token() {
    let logs = wxhub_test_support::logs::Logs::capture();
    let store: Arc<dyn Store> = Arc::new(wxhub::store::memory::MemoryStore::new());
    let (mock, _relay, hub) = suite_hub(Duration::from_secs(60), |c| c, options_on(&store)).await;
    let corps = [
        "wwlist0000000000a",
        "wwlist0000000000b",
        "wwlist0000000000c",
    ];
    for corpid in corps {
        let answer = owner(
            &mock,
            "install",
            json!({ "suite_id": SUITE, "corpid": corpid }),
        )
        .await;
        assert_eq!(answer["push"]["acknowledged"], true, "{answer}");
    }
    let mut secrets: Vec<String> = permanent_codes(&mock)
        .await
        .into_iter()
        .map(|(_, code)| code)
        .collect();
    assert_eq!(secrets.len(), 3);
    for corpid in corps {
        secrets.push(
            hub.token_at(&corp_path(corpid, "access_token"))
                .await
                .access_token,
        );
    }
    secrets.push(
        hub.token_at(&format!("/v1/suites/{SUITE}/access_token"))
            .await
            .access_token,
    );
    let gone = owner(
        &mock,
        "uninstall",
        json!({ "suite_id": SUITE, "corpid": corps[1] }),
    )
    .await;
    assert_eq!(gone["push"]["acknowledged"], true, "{gone}");

    let list = |query: String| {
        let hub = &hub;
        async move {
            let response = hub.get(&format!("/v1/suites/{SUITE}/corps{query}")).await;
            assert_eq!(response.status(), 200, "{query}");
            response.text().await.unwrap()
        }
    };
    let ids_and_states = |text: &str| -> (Vec<(String, String)>, Value) {
        let page: Value = serde_json::from_str(text).unwrap();
        let listed = page["corps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["corpid"].as_str().unwrap().to_string(),
                    c["state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        (listed, page["next_cursor"].clone())
    };
    let mut pages = Vec::new();
    let all = list(String::new()).await;
    pages.push(all.clone());
    let (listed, next) = ids_and_states(&all);
    assert_eq!(
        listed,
        [
            (corps[0].to_string(), "active".to_string()),
            (corps[1].to_string(), "revoked".to_string()),
            (corps[2].to_string(), "active".to_string()),
        ]
    );
    assert!(next.is_null());
    let page: Value = serde_json::from_str(&all).unwrap();
    let first = &page["corps"][0];
    assert!(
        first["corp_name"].is_string() && first["installed_at"].is_string(),
        "{first}"
    );
    assert!(first["agentid"].is_string(), "{first}");
    assert!(first["expires_at"].is_string(), "{first}");

    // By state.
    let revoked = list("?state=revoked".into()).await;
    assert_eq!(
        ids_and_states(&revoked).0,
        [(corps[1].to_string(), "revoked".to_string())]
    );
    let active = list("?state=active&limit=2".into()).await;
    let (listed, next) = ids_and_states(&active);
    assert_eq!(listed.len(), 2);
    assert!(next.is_null(), "two active corps fill exactly one page");
    pages.extend([revoked, active]);

    // One at a time: every corp once, in order, then no cursor.
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=1&cursor={c}"),
            None => "?limit=1".to_string(),
        };
        let page = list(query).await;
        let (listed, next) = ids_and_states(&page);
        assert!(listed.len() <= 1);
        walked.extend(listed.into_iter().map(|(id, _)| id));
        pages.push(page);
        match next.as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(walked.len() <= corps.len(), "{walked:?}");
    }
    assert_eq!(walked, corps);

    // Mistakes.
    let bad = hub
        .get(&format!("/v1/suites/{SUITE}/corps?state=lost"))
        .await;
    assert_eq!(bad.status(), 400);
    let unknown = hub.get("/v1/suites/wwnotconfigured00001/corps").await;
    assert_eq!(unknown.status(), 404);
    let reader = hub
        .client
        .get(hub.url(&format!("/v1/suites/{SUITE}/corps")))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(reader.status(), 403);

    // No permanent code or token anywhere operators look, nor in the hub's logs.
    let credentials = hub.get("/v1/credentials").await.text().await.unwrap();
    let metrics = hub.metrics().await;
    let status = hub.get("/status").await.text().await.unwrap();
    let log = logs.text();
    assert!(
        log.contains("installation registered"),
        "the hub's logs are captured"
    );
    for secret in &secrets {
        for (place, text) in pages.iter().map(|p| ("the listing", p)).chain([
            ("/v1/credentials", &credentials),
            ("/metrics", &metrics),
            ("/status", &status),
            ("the logs", &log),
        ]) {
            assert!(!text.contains(secret.as_str()), "a secret in {place}");
        }
    }
    for corpid in [corps[0], corps[2]] {
        assert!(stored_permanent_code(&store, corpid).await.is_some());
    }
    hub.stop().await;
}
