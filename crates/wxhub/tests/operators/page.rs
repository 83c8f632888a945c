//! What an operator sees on `/status`, and the history behind its charts.

use std::time::Duration;

use serde_json::{json, Value};
use wechat_mock::{FaultRule, MockConfig};
use wxhub::token::{CorpTicketKind, TicketKind};

use crate::browser::{target_dir, Browser};
use crate::helpers::*;
use crate::platform_support::*;

/// WeChat's answer when the hub's address is not on the account's IP whitelist.
const WHITELIST_ERRMSG: &str =
    "invalid ip 127.0.0.1 ipv6 ::ffff:127.0.0.1, not in whitelist rid: 6571b2f5-0a1b2c3d-4e5f6a7b";

#[tokio::test]
async fn the_page_is_served_without_a_key_and_holds_no_data() {
    let appid = "wxstatus000000010";
    let (_mock, hub) = start_ready(&[TestApp::legacy(appid)]).await;
    let response = hub
        .client
        .get(hub.url("/status"))
        .send()
        .await
        .expect("hub answers");
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert_eq!(header("cache-control"), "no-store");
    let policy = header("content-security-policy");
    assert!(policy.starts_with("default-src 'none';"), "{policy}");
    assert!(policy.contains("script-src 'sha256-"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    let page = response.text().await.expect("a body");
    assert!(page.contains("<title>wxhub status</title>"));
    assert!(
        !page.contains(appid),
        "the page itself carries no credential"
    );
    hub.stop().await;
}

#[tokio::test]
async fn the_listing_shows_the_refreshes_of_the_last_hour() {
    let appid = "wxstatus000000011";
    let (mock, hub) = start_ready(&[TestApp::legacy(appid)]).await;
    let key = format!("access_token/{appid}");
    let first = hub.token(appid).await;

    let response = hub
        .post(&format!("/v1/apps/{appid}/refresh?force=true"), json!({}))
        .await;
    assert_eq!(response.status(), 200);
    mock.add_fault(FaultRule {
        path: "/cgi-bin/token".into(),
        account: Some(appid.into()),
        errcode: Some(40164),
        errmsg: Some(WHITELIST_ERRMSG.into()),
        count: Some(1),
        ..FaultRule::default()
    });
    let response = hub
        .post(&format!("/v1/apps/{appid}/refresh?force=true"), json!({}))
        .await;
    assert_eq!(response.status(), 503);

    let credential = hub.credential(&key).await;
    assert_eq!(credential["state"], "needs_attention", "{credential}");
    let history = credential["history"].as_array().expect("a history list");
    let outcomes: Vec<&str> = history
        .iter()
        .map(|p| p["outcome"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(outcomes, ["ok", "ok", "config"], "{credential}");
    for point in history {
        let age = -seconds_until(point["at"].as_str().expect("an instant"));
        assert!((0..60).contains(&age), "{point} is recent");
    }
    assert_eq!(history[2]["at"], credential["last_error"]["at"]);
    assert!(credential["fetched_at"].is_string(), "{credential}");
    let listing = hub.get("/v1/credentials").await.text().await.unwrap();
    assert!(
        !listing.contains(&first.access_token),
        "no token in the listing"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_every_credential_in_colour_and_never_a_secret() {
    let good = "wxstatus000000001";
    let legacy = "wxstatus000000002";
    let bad = "wxstatus000000003";
    let apps = [
        TestApp::stable(good).with_tickets(&[TicketKind::Jsapi]),
        TestApp::legacy(legacy),
        TestApp::stable(bad),
    ];
    let corp = TestCorp {
        corpid: "wwstatus000000001".into(),
        agentid: "1000002".into(),
        tickets: vec![CorpTicketKind::Jsapi],
    };
    // Long lifetimes: no scheduled refresh changes a state while the page is looked at.
    let mock = spawn_mock(
        Duration::from_secs(600),
        Duration::from_secs(5),
        &apps,
        std::slice::from_ref(&corp),
        |c| c,
    )
    .await;
    let hub = spawn_app(
        &mock,
        HubOptions::new(&apps).with_corps(std::slice::from_ref(&corp)),
    )
    .await;
    hub.wait_ready().await;

    // Every value the page must never show: the secrets of the configuration, every token and
    // ticket the hub serves, and the admin key itself.
    let corp_account = format!("{}/{}", corp.corpid, corp.agentid);
    let mut secrets = vec![
        secret_of(good),
        secret_of(legacy),
        secret_of(bad),
        secret_of(&corp_account),
        ADMIN_KEY.to_string(),
    ];
    let served_paths = [
        format!("/v1/apps/{good}/access_token"),
        format!("/v1/apps/{good}/tickets/jsapi"),
        format!("/v1/apps/{legacy}/access_token"),
        format!("/v1/apps/{bad}/access_token"),
        format!(
            "/v1/corps/{}/agents/{}/access_token",
            corp.corpid, corp.agentid
        ),
        format!(
            "/v1/corps/{}/agents/{}/tickets/jsapi",
            corp.corpid, corp.agentid
        ),
    ];
    for path in &served_paths {
        secrets.push(hub.token_at(path).await.access_token);
    }

    // WeChat stops accepting the hub's address for `bad`: a forced refresh makes it need
    // attention, with WeChat's message.
    mock.add_fault(FaultRule {
        path: "/cgi-bin/stable_token".into(),
        account: Some(bad.into()),
        errcode: Some(40164),
        errmsg: Some(WHITELIST_ERRMSG.into()),
        ..FaultRule::default()
    });
    let response = hub
        .post(&format!("/v1/apps/{bad}/refresh?force=true"), json!({}))
        .await;
    assert_eq!(response.status(), 503);
    let bad_key = format!("access_token/{bad}");
    assert_eq!(hub.credential(&bad_key).await["state"], "needs_attention");
    let listing: Value = hub.get("/v1/credentials").await.json().await.unwrap();
    let expected: serde_json::Map<String, Value> = listing["credentials"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap_or_default().to_string(),
                c["state"].clone(),
            )
        })
        .collect();
    assert_eq!(expected.len(), 6, "{listing}");

    let mut browser = Browser::launch();
    browser.navigate(&hub.url("/status"));

    // Before a key is given: no data, and no request for it.
    let before = browser.eval(
        "({rows: document.querySelectorAll('#rows tr').length,
          board: document.getElementById('board').hidden,
          text: document.body.innerText,
          fetched: performance.getEntriesByType('resource')
            .filter(e => e.name.includes('/v1/credentials')).length})",
    );
    assert_eq!(before["rows"], 0, "{before}");
    assert_eq!(before["board"], true, "{before}");
    assert_eq!(before["fetched"], 0, "{before}");
    assert!(!before["text"]
        .as_str()
        .unwrap_or_default()
        .contains("wxstatus"));

    // A wrong key: a clear error, the key dropped, still no data.
    let wrong_key = "wrong-key-0123456789abcdef0123456789abcdef";
    submit_key(&mut browser, wrong_key);
    let error = browser.wait_for(
        "document.getElementById('error').textContent.includes('HTTP 401')
           && document.getElementById('error').textContent",
        "the page reports the refused key",
    );
    assert!(
        error
            .as_str()
            .unwrap_or_default()
            .contains("The hub refused this key"),
        "{error}"
    );
    let after_wrong = browser.eval(
        "({stored: sessionStorage.length,
          rows: document.querySelectorAll('#rows tr').length,
          board: document.getElementById('board').hidden,
          error: getComputedStyle(document.getElementById('error')).display,
          html: document.documentElement.outerHTML})",
    );
    assert_eq!(after_wrong["stored"], 0, "the wrong key is dropped");
    assert_eq!(after_wrong["rows"], 0);
    assert_eq!(after_wrong["board"], true);
    assert_eq!(after_wrong["error"], "block");
    assert!(!after_wrong["html"]
        .as_str()
        .unwrap_or_default()
        .contains(wrong_key));
    browser.screenshot(&target_dir().join("status-page-wrong-key.png"));

    // A key without the admin scope: told so, and dropped too.
    submit_key(&mut browser, READER_KEY);
    let error = browser.wait_for(
        "document.getElementById('error').textContent.includes('HTTP 403')
           && document.getElementById('error').textContent",
        "the page reports the missing admin scope",
    );
    assert!(
        error.as_str().unwrap_or_default().contains("admin scope"),
        "{error}"
    );
    assert_eq!(browser.eval("sessionStorage.length"), 0);
    assert_eq!(
        browser.eval("document.querySelectorAll('#rows tr').length"),
        0
    );

    // The admin key: every credential, each in its state.
    submit_key(&mut browser, ADMIN_KEY);
    let states = Value::Object(expected.clone()).to_string();
    browser.wait_for(
        &format!(
            "(() => {{
               const expected = {states};
               const rows = [...document.querySelectorAll('#rows tr')];
               return rows.length === Object.keys(expected).length
                 && rows.every(r => expected[r.dataset.key] === r.dataset.state);
             }})()"
        ),
        "every credential is shown in its state",
    );
    assert_eq!(browser.eval("sessionStorage.length"), 1, "the key is kept");
    assert_eq!(browser.eval("document.getElementById('key').value"), "");

    // The credential that needs attention: first, red, with WeChat's message and its history.
    let row = browser.eval(&format!(
        "(() => {{
           const row = document.querySelector('#rows tr[data-key=\"{bad_key}\"]');
           const badge = row.querySelector('.badge');
           const chart = row.querySelector('svg.history');
           const cell = chart.parentElement;
           return {{
             first: document.querySelector('#rows tr').dataset.key,
             colour: getComputedStyle(badge).backgroundColor,
             badge: badge.className,
             text: row.innerText,
             ok: cell.dataset.ok,
             failed: cell.dataset.failed,
             marks: chart.querySelectorAll('rect').length,
             attention: document.querySelector('#counts li[data-state=\"needs_attention\"] b').textContent,
             fresh: document.querySelector('#counts li[data-state=\"fresh\"] b').textContent,
           }};
         }})()"
    ));
    assert_eq!(row["first"], bad_key.as_str(), "{row}");
    assert_eq!(row["colour"], "rgb(207, 34, 46)", "{row}");
    assert!(
        row["badge"]
            .as_str()
            .unwrap_or_default()
            .contains("state-needs_attention"),
        "{row}"
    );
    let text = row["text"].as_str().unwrap_or_default();
    assert!(text.contains(WHITELIST_ERRMSG), "{row}");
    assert!(text.contains("40164"), "{row}");
    assert!(text.contains("needs attention"), "{row}");
    assert_eq!(row["ok"], "1", "{row}");
    assert_eq!(row["failed"], "1", "{row}");
    assert_eq!(row["marks"], 2, "{row}");
    assert_eq!(row["attention"], "1", "{row}");
    assert_eq!(row["fresh"], "5", "{row}");
    let fresh_colour = browser.eval(&format!(
        "getComputedStyle(document.querySelector('#rows tr[data-key=\"access_token/{good}\"] .badge')).backgroundColor"
    ));
    assert_eq!(fresh_colour, "rgb(26, 127, 55)");

    // The page refreshes itself: a refresh made elsewhere shows up without a reload. Forced: the
    // token may still be younger than min_refresh_interval, which would answer 429 `too_soon`.
    let response = hub
        .post(&format!("/v1/apps/{legacy}/refresh?force=true"), json!({}))
        .await;
    assert_eq!(response.status(), 200);
    secrets.push(hub.token(legacy).await.access_token);
    browser.wait_for(
        &format!(
            "document.querySelector('#rows tr[data-key=\"access_token/{legacy}\"] svg.history')
               .parentElement.dataset.ok === '2'"
        ),
        "the page shows the new refresh by itself",
    );

    // Nothing secret anywhere in the document.
    let dom = browser.eval("document.documentElement.outerHTML + '\\n' + document.body.innerText");
    let dom = dom.as_str().expect("the document as text");
    assert!(dom.contains(WHITELIST_ERRMSG));
    for secret in &secrets {
        assert!(
            !dom.contains(secret.as_str()),
            "a secret or token is in the page"
        );
    }
    browser.screenshot(&target_dir().join("status-page.png"));

    // Forgetting the key clears the page.
    browser.eval("document.getElementById('forget').click()");
    let forgotten = browser.eval(
        "({stored: sessionStorage.length, rows: document.querySelectorAll('#rows tr').length})",
    );
    assert_eq!(forgotten, json!({"stored": 0, "rows": 0}));

    drop(browser);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_budgets_expiries_and_errors_only_where_they_mean_something() {
    let stable = "wxstatus000000021";
    let legacy = "wxstatus000000022";
    let flaky = "wxstatus000000023";
    let apps = [
        TestApp::stable(stable),
        TestApp::legacy(legacy).with_tickets(&[TicketKind::Jsapi]),
        TestApp::legacy(flaky),
    ];
    // A platform with one authorizer, recovered from WeChat's list at start: its refresh token
    // never expires.
    let relay = Relay::start().await;
    let push_url = relay.push_url();
    let mock = spawn_mock(
        Duration::from_secs(600),
        Duration::from_secs(5),
        &apps,
        &[],
        |c| {
            MockConfig {
                push_url: Some(push_url),
                push_interval: Duration::from_secs(600),
                authorizers_per_component: 1,
                ..c
            }
            .with_component(
                COMPONENT,
                COMPONENT_SECRET,
                COMPONENT_TOKEN,
                COMPONENT_KEY,
            )
        },
    )
    .await;
    let mut options = HubOptions::new(&apps);
    options.components = vec![component_settings(&[])];
    let hub = spawn_app(&mock, options).await;
    relay.point_at(&[&hub]);
    hub.wait_ready().await;
    let authorizer = wechat_mock::authorizer_appid(0, 1);
    let refresh_key = format!("authorizer_refresh_token/{COMPONENT}/{authorizer}");
    let authorizer_key = format!("authorizer_token/{COMPONENT}/{authorizer}");
    wait_until(
        Duration::from_secs(15),
        "the authorizer is recovered and served",
        || async {
            let listing: Value = hub.get("/v1/credentials").await.json().await.unwrap();
            listing["credentials"].as_array().is_some_and(|all| {
                all.iter()
                    .any(|c| c["key"] == authorizer_key.as_str() && c["state"] == "fresh")
            })
        },
    )
    .await;

    // One fetch of `flaky` fails (WeChat busy), and the retry succeeds.
    mock.add_fault(FaultRule {
        path: "/cgi-bin/token".into(),
        account: Some(flaky.into()),
        errcode: Some(-1),
        errmsg: Some("system error".into()),
        count: Some(1),
        ..FaultRule::default()
    });
    let response = hub
        .post(&format!("/v1/apps/{flaky}/refresh?force=true"), json!({}))
        .await;
    assert_eq!(response.status(), 503);
    let flaky_key = format!("access_token/{flaky}");
    wait_until(Duration::from_secs(20), "the retry succeeds", || async {
        let c = hub.credential(&flaky_key).await;
        c["state"] == "fresh" && c["previous_error"]["errcode"] == -1
    })
    .await;
    // The listing says which credentials have a force budget and which never expire.
    let credential = hub.credential(&flaky_key).await;
    assert!(credential["last_error"].is_null(), "{credential}");
    assert!(
        credential["previous_error"]["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("system error")),
        "{credential}"
    );
    let listing: Value = hub.get("/v1/credentials").await.json().await.unwrap();
    for c in listing["credentials"].as_array().expect("a list") {
        let key = c["key"].as_str().unwrap_or_default();
        let budget = if key == format!("access_token/{stable}") {
            json!(20)
        } else {
            Value::Null
        };
        assert_eq!(c["force_refresh_budget"], budget, "{c}");
        assert_eq!(c["never_expires"], key == refresh_key, "{c}");
    }

    let mut browser = Browser::launch();
    browser.navigate(&hub.url("/status"));
    submit_key(&mut browser, ADMIN_KEY);
    browser.wait_for(
        &format!(
            "!!document.querySelector('#rows tr[data-key=\"{refresh_key}\"]')
               && !!document.querySelector('#rows tr[data-key=\"{flaky_key}\"]')"
        ),
        "the credentials are listed",
    );
    let cell = |browser: &mut Browser, key: &str, selector: &str| {
        browser.eval(&format!(
            "document.querySelector('#rows tr[data-key=\"{key}\"] {selector}').innerText"
        ))
    };

    // The force budget: on the stable token, on nothing else.
    let budget = cell(&mut browser, &format!("access_token/{stable}"), "td.budget");
    assert_eq!(budget, "0 used · 20 left");
    for key in [
        format!("access_token/{legacy}"),
        format!("ticket/{legacy}/jsapi"),
        format!("component_token/{COMPONENT}"),
        authorizer_key.clone(),
        refresh_key.clone(),
    ] {
        assert_eq!(cell(&mut browser, &key, "td.budget"), "—", "{key}");
    }

    // The refresh token does not expire: no countdown, no bar.
    let refresh_row = browser.eval(&format!(
        "(() => {{
           const row = document.querySelector('#rows tr[data-key=\"{refresh_key}\"]');
           return {{text: row.innerText, bars: row.querySelectorAll('.life').length}};
         }})()"
    ));
    let text = refresh_row["text"].as_str().unwrap_or_default();
    assert!(text.contains("does not expire"), "{refresh_row}");
    assert!(!text.contains(" left"), "{refresh_row}");
    assert_eq!(refresh_row["bars"], 0, "{refresh_row}");
    let authorizer_life = cell(&mut browser, &authorizer_key, ".life + .sub");
    assert!(
        authorizer_life
            .as_str()
            .unwrap_or_default()
            .contains(" left"),
        "{authorizer_life}"
    );

    // The recovered failure: told as history, muted, beside "fresh".
    let flaky_row = browser.eval(&format!(
        "(() => {{
           const row = document.querySelector('#rows tr[data-key=\"{flaky_key}\"]');
           const past = row.querySelector('.past-error');
           return {{
             state: row.dataset.state,
             errors: row.querySelectorAll('.error-text').length,
             past: past && past.innerText,
             colour: past && getComputedStyle(past).color,
             muted: getComputedStyle(document.documentElement).getPropertyValue('--muted').trim(),
           }};
         }})()"
    ));
    assert_eq!(flaky_row["state"], "fresh", "{flaky_row}");
    assert_eq!(flaky_row["errors"], 0, "{flaky_row}");
    let past = flaky_row["past"].as_str().unwrap_or_default();
    assert!(past.starts_with("last error "), "{flaky_row}");
    assert!(past.contains(" ago: "), "{flaky_row}");
    assert!(past.contains(": transient -1: "), "{flaky_row}");
    assert!(past.ends_with("system error"), "{flaky_row}");
    assert_eq!(flaky_row["colour"], "rgb(89, 99, 110)", "{flaky_row}");
    assert_eq!(flaky_row["muted"], "#59636e", "{flaky_row}");
    browser.screenshot(&target_dir().join("status-page-kinds.png"));

    drop(browser);
    hub.stop().await;
}

/// Types `key` into the page's key field and submits it.
fn submit_key(browser: &mut Browser, key: &str) {
    let key = Value::from(key).to_string();
    browser.eval(&format!(
        "(() => {{
           document.getElementById('key').value = {key};
           document.getElementById('key-form').requestSubmit();
           return true;
         }})()"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_listing_is_capped_and_can_be_filtered() {
    let apps: Vec<TestApp> = (0..350)
        .map(|i| TestApp::legacy(&format!("wxmany0000000{i:03}")))
        .collect();
    let (_mock, hub) =
        start_ready_living(&apps, Duration::from_secs(600), Duration::from_secs(5)).await;

    let mut browser = Browser::launch();
    browser.navigate(&hub.url("/status"));
    submit_key(&mut browser, ADMIN_KEY);
    let shown = browser.wait_for(
        "document.querySelectorAll('#rows tr').length === 300
           && document.getElementById('shown').textContent",
        "the first 300 credentials are shown",
    );
    assert_eq!(shown, "showing 300 of 350 matching (filter to narrow)");
    assert_eq!(
        browser.eval("document.querySelector('#counts li b').textContent"),
        "350",
        "the counts cover every credential"
    );

    browser.eval(
        "(() => {
           const filter = document.getElementById('filter');
           filter.value = 'wxmany000000034';
           filter.dispatchEvent(new Event('input'));
           return true;
         })()",
    );
    let filtered = browser.eval(
        "({rows: [...document.querySelectorAll('#rows tr')].map(r => r.dataset.key),
          shown: document.getElementById('shown').textContent})",
    );
    let expected: Vec<String> = (340..350)
        .map(|i| format!("access_token/wxmany0000000{i:03}"))
        .collect();
    assert_eq!(filtered["rows"], json!(expected), "{filtered}");
    assert_eq!(filtered["shown"], "showing 10 of 350");

    drop(browser);
    hub.stop().await;
}
