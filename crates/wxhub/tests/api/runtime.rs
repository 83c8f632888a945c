//! Credentials at runtime: apps and Work apps added and removed through the admin API, imported
//! tokens, and configuration reloads — on one instance (the cluster tests cover three).

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use wechat_mock::FaultRule;
use wxhub::configuration::{consumer_key_sha256, MasterKey};
use wxhub::kinds::CredentialKey;
use wxhub::startup::Application;
use wxhub::store::sqlite::SqliteStore;
use wxhub::store::Store;
use wxhub_test_support::faulty_store::FaultyStore;

use crate::helpers::*;

/// The mock knows `runtime`'s secret; the hub is configured only with `configured`.
async fn mock_and_hub(
    configured: &[TestApp],
    runtime: &[TestApp],
    corps: &[TestCorp],
    options: impl FnOnce(HubOptions) -> HubOptions,
) -> (Arc<wechat_mock::MockServer>, TestHub) {
    let all: Vec<TestApp> = configured.iter().chain(runtime).cloned().collect();
    let mock = spawn_mock(
        Duration::from_secs(6),
        Duration::from_secs(2),
        &all,
        corps,
        |c| c,
    )
    .await;
    let hub = spawn_app(&mock, options(HubOptions::new(configured))).await;
    hub.wait_ready().await;
    (mock, hub)
}

/// `PUT /v1/admin/apps/{appid}` as the admin, in a task of its own: its status when it ends.
fn put_app_in_background(
    hub: &TestHub,
    appid: &'static str,
) -> tokio::task::JoinHandle<reqwest::StatusCode> {
    let client = hub.client.clone();
    let url = hub.url(&format!("/v1/admin/apps/{appid}"));
    tokio::spawn(async move {
        client
            .put(url)
            .bearer_auth(ADMIN_KEY)
            .json(&put_app_body(appid))
            .send()
            .await
            .unwrap()
            .status()
    })
}

/// `PUT /v1/admin/apps/{appid}` as the admin: its status.
async fn put_app(hub: &TestHub, appid: &str) -> reqwest::StatusCode {
    hub.send(
        Method::PUT,
        &format!("/v1/admin/apps/{appid}"),
        Some(put_app_body(appid)),
    )
    .await
    .status()
}

fn put_app_body(appid: &str) -> serde_json::Value {
    json!({ "secret": secret_of(appid), "mode": "legacy", "tickets": ["jsapi"] })
}

#[tokio::test]
async fn an_app_added_at_runtime_is_served_at_once_and_a_deleted_one_is_gone() {
    let fixed = TestApp::stable("wxfixed0000000001");
    let added = "wxadded0000000001";
    let (mock, hub) = mock_and_hub(&[fixed], &[TestApp::legacy(added)], &[], |o| o).await;

    let response = hub
        .send(
            Method::PUT,
            &format!("/v1/admin/apps/{added}"),
            Some(put_app_body(added)),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["created"], true);
    assert_eq!(body["first_refresh_error"], serde_json::Value::Null);
    assert!(!body.to_string().contains(&secret_of(added)), "{body}");
    // Served when the PUT returns: one upstream round trip.
    let token = hub.token(added).await;
    assert_eq!(
        business_call(&hub.client, &mock, &token.access_token).await,
        0
    );
    let ticket = hub
        .token_at(&format!("/v1/apps/{added}/tickets/jsapi"))
        .await;
    assert!(mock.ticket_valid(&ticket.access_token));
    assert_eq!(stats(&mock).issued("/cgi-bin/token", added), 1);
    let listed = hub.credential(&format!("access_token/{added}")).await;
    assert_eq!(listed["origin"], "runtime");
    // Per-credential series only for the configuration's credentials; runtime ones are counted in
    // the aggregates.
    let metrics = hub.metrics().await;
    assert!(
        metrics.contains("wxhub_token_remaining_seconds{key=\"access_token/wxfixed0000000001\"")
    );
    assert!(
        !metrics.contains(&format!("key=\"access_token/{added}\"")),
        "{metrics}"
    );
    assert!(metrics.contains("wxhub_token_remaining_seconds_min{kind=\"access_token\"}"));
    assert!(
        metrics.contains("wxhub_credentials{kind=\"ticket\",state=\"fresh\"} 1"),
        "{metrics}"
    );

    // The same PUT again changes nothing and answers 200.
    let again = hub
        .send(
            Method::PUT,
            &format!("/v1/admin/apps/{added}"),
            Some(put_app_body(added)),
        )
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(hub.token(added).await.access_token, token.access_token);

    let deleted = hub
        .send(Method::DELETE, &format!("/v1/admin/apps/{added}"), None)
        .await;
    assert_eq!(deleted.status(), 204);
    let gone = hub.get(&format!("/v1/apps/{added}/access_token")).await;
    assert_eq!(gone.status(), 404);
    let calls = stats(&mock).calls("/cgi-bin/token", added);
    // Past the moment the token would have been refreshed (lifetime 6 s): nothing more.
    tokio::time::sleep_until(
        tokio::time::Instant::now()
            + Duration::from_secs(seconds_until(&token.expires_at).max(0) as u64 + 1),
    )
    .await;
    assert_eq!(stats(&mock).calls("/cgi-bin/token", added), calls);
    let again = hub
        .send(Method::DELETE, &format!("/v1/admin/apps/{added}"), None)
        .await;
    assert_eq!(again.status(), 404);
}

#[tokio::test]
async fn a_work_app_comes_and_goes_like_an_app() {
    let corp = TestCorp {
        corpid: "wwruntime00000001".into(),
        agentid: "1000002".into(),
        tickets: vec![],
    };
    let fixed = TestApp::stable("wxfixed0000000002");
    let (mock, hub) = mock_and_hub(&[fixed], &[], std::slice::from_ref(&corp), |o| o).await;
    let path = format!("/v1/admin/corps/{}/agents/{}", corp.corpid, corp.agentid);
    let secret = secret_of(&format!("{}/{}", corp.corpid, corp.agentid));
    let response = hub
        .send(
            Method::PUT,
            &path,
            Some(json!({ "secret": secret, "tickets": ["agent_config"] })),
        )
        .await;
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let token_path = format!(
        "/v1/corps/{}/agents/{}/access_token",
        corp.corpid, corp.agentid
    );
    let token = hub.token_at(&token_path).await;
    assert_eq!(
        business_call(&hub.client, &mock, &token.access_token).await,
        0
    );
    hub.token_at(&format!(
        "/v1/corps/{}/agents/{}/tickets/agent_config",
        corp.corpid, corp.agentid
    ))
    .await;
    assert_eq!(hub.send(Method::DELETE, &path, None).await.status(), 204);
    assert_eq!(hub.get(&token_path).await.status(), 404);
}

#[tokio::test]
async fn apps_from_the_file_are_read_only_and_secrets_need_a_master_key() {
    let fixed = TestApp::stable("wxfixed0000000003");
    let other = "wxother0000000003";
    let (_mock, hub) = mock_and_hub(
        std::slice::from_ref(&fixed),
        &[TestApp::legacy(other)],
        &[],
        |o| HubOptions {
            master_key: None,
            ..o
        },
    )
    .await;
    let put = hub
        .send(
            Method::PUT,
            &format!("/v1/admin/apps/{}", fixed.appid),
            Some(put_app_body(&fixed.appid)),
        )
        .await;
    assert_eq!(put.status(), 409);
    let delete = hub
        .send(
            Method::DELETE,
            &format!("/v1/admin/apps/{}", fixed.appid),
            None,
        )
        .await;
    assert_eq!(delete.status(), 409);
    let refused = hub
        .send(
            Method::PUT,
            &format!("/v1/admin/apps/{other}"),
            Some(put_app_body(other)),
        )
        .await;
    assert_eq!(refused.status(), 400);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_master_key");
    assert_eq!(
        hub.get(&format!("/v1/apps/{other}/access_token"))
            .await
            .status(),
        404
    );
    for (body, code) in [
        (json!({ "secret": "" }), "invalid_secret"),
        (json!({ "secret": "s", "mode": "fast" }), "invalid_mode"),
        (
            json!({ "secret": "s", "tickets": ["sms"] }),
            "invalid_ticket",
        ),
        (
            json!({ "secret": "s", "refresh_before_expired": "soon" }),
            "invalid_duration",
        ),
        (json!({ "secret": "s", "extra": 1 }), "invalid_json"),
    ] {
        let response = hub
            .send(Method::PUT, &format!("/v1/admin/apps/{other}"), Some(body))
            .await;
        assert_eq!(response.status(), 400);
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["code"], code, "{answer}");
    }
    let reader = hub
        .client
        .put(hub.url(&format!("/v1/admin/apps/{other}")))
        .bearer_auth(READER_KEY)
        .json(&put_app_body(other))
        .send()
        .await
        .unwrap();
    assert_eq!(reader.status(), 403);
}

#[tokio::test]
async fn runtime_apps_survive_a_restart_without_a_fetch_and_a_wrong_master_key_stops_startup() {
    let fixed = TestApp::stable("wxfixed0000000004");
    let added = "wxadded0000000004";
    let mock = spawn_mock(
        Duration::from_secs(120),
        Duration::from_secs(5),
        &[fixed.clone(), TestApp::legacy(added)],
        &[],
        |c| c,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("wxhub.db");
    let options = || HubOptions::new(std::slice::from_ref(&fixed)).with_sqlite(database.clone());

    let first = spawn_app(&mock, options()).await;
    first.wait_ready().await;
    let put = first
        .send(
            Method::PUT,
            &format!("/v1/admin/apps/{added}"),
            Some(put_app_body(added)),
        )
        .await;
    assert_eq!(put.status(), 201);
    let before = first.token(added).await;
    first.stop().await;
    let calls = stats(&mock).calls;

    let second = spawn_app(&mock, options()).await;
    let after = second.token(added).await;
    assert_eq!(after.access_token, before.access_token);
    assert_eq!(after.generation, before.generation);
    assert_eq!(
        stats(&mock).calls,
        calls,
        "nothing fetched after the restart"
    );
    second.stop().await;

    // The stored secret is sealed: not in the file in the clear.
    let raw = std::fs::read(&database).unwrap();
    let secret = secret_of(added);
    assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()));

    let mut settings = settings_for(
        &mock,
        &HubOptions {
            master_key: Some(MasterKey::from_bytes([9; 32])),
            ..options()
        },
    );
    settings.server.listen = any_port();
    let error = match Application::build(settings).await {
        Ok(_) => panic!("a wrong master key must stop startup"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("master_key"), "{error}");
    assert!(error.contains(added), "{error}");
}

#[tokio::test]
async fn a_removed_apps_refresh_in_flight_is_not_written_back() {
    let fixed = TestApp::stable("wxfixed0000000005");
    let added = "wxadded0000000005";
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("wxhub.db")).unwrap());
    let (mock, hub) = mock_and_hub(&[fixed], &[TestApp::legacy(added)], &[], |o| HubOptions {
        shared_store: Some(store.clone()),
        ..o
    })
    .await;
    mock.add_fault(FaultRule {
        path: "/cgi-bin/token".into(),
        account: Some(added.into()),
        delay_ms: Some(1500),
        count: Some(1),
        ..FaultRule::default()
    });
    let put = put_app_in_background(&hub, added);
    wait_until(
        Duration::from_secs(5),
        "the refresh is held by the mock",
        || async { stats(&mock).in_flight >= 1 },
    )
    .await;
    let deleted = hub
        .send(Method::DELETE, &format!("/v1/admin/apps/{added}"), None)
        .await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(put.await.unwrap(), 201);
    wait_until(Duration::from_secs(5), "the held call returned", || async {
        stats(&mock).in_flight == 0 && stats(&mock).issued("/cgi-bin/token", added) == 1
    })
    .await;
    // The job has seen its result by now; give its write path every chance, then check.
    wait_until(Duration::from_secs(2), "the job finished", || async {
        !hub.get("/v1/credentials")
            .await
            .text()
            .await
            .unwrap()
            .contains(added)
    })
    .await;
    assert_eq!(
        store
            .get(&CredentialKey::access_token(added))
            .await
            .unwrap(),
        None,
        "a removed credential's refresh must not be written back"
    );
    assert_eq!(
        hub.get(&format!("/v1/apps/{added}/access_token"))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn a_refresh_removed_during_its_write_leaves_a_value_written_since_elsewhere() {
    let added = "wxadded0000000006";
    let key = CredentialKey::access_token(added);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteStore::open(&dir.path().join("wxhub.db")).unwrap());
    let store = Arc::new(FaultyStore::new(sqlite.clone()).with_held_token_write(key.clone()));
    let (mock, hub) = mock_and_hub(&[], &[TestApp::legacy(added)], &[], |o| HubOptions {
        shared_store: Some(store.clone()),
        ..o
    })
    .await;
    let put = put_app_in_background(&hub, added);
    wait_for_slow_write(&store).await;
    let deleted = hub
        .send(Method::DELETE, &format!("/v1/admin/apps/{added}"), None)
        .await;
    assert_eq!(deleted.status(), 204);
    // Another instance puts the app back and stores its token before this one's write lands.
    let now = wxhub::token::Timestamp::now();
    let theirs = wxhub::token::Token {
        value: "written-by-another-instance".into(),
        expires_at: now.plus(Duration::from_secs(7200)),
        fetched_at: now,
        generation: 5,
    };
    sqlite.restore(&key, &theirs).await.unwrap();
    store.release_token_writes(1);
    // The PUT is answered once the refresh has ended, its write refused.
    assert_eq!(put.await.unwrap(), 201);
    assert_eq!(store.calls("compare_and_set"), 1);
    assert_eq!(stats(&mock).issued("/cgi-bin/token", added), 1);
    assert_eq!(
        sqlite.get(&key).await.unwrap(),
        Some(theirs),
        "the refresh of the removed app deleted another instance's value"
    );
}

#[tokio::test]
async fn an_imported_token_is_served_unchanged_until_its_planned_refresh() {
    let appid = "wximport000000001";
    let app = TestApp::legacy(appid);
    let mock = spawn_mock(
        Duration::from_secs(120),
        Duration::from_secs(5),
        std::slice::from_ref(&app),
        &[],
        |c| c,
    )
    .await;
    // Another system holds a live token, fetched straight from WeChat.
    let live = fetched_elsewhere(&mock, appid).await;
    // Before the hub's first refresh lands, import the live token.
    mock.add_fault(FaultRule {
        path: "/cgi-bin/token".into(),
        account: Some(appid.into()),
        errcode: Some(-1),
        count: Some(1000),
        ..FaultRule::default()
    });
    let hub = spawn_app(&mock, HubOptions::new(std::slice::from_ref(&app))).await;
    let imported = hub
        .send(
            Method::PUT,
            &format!("/v1/admin/apps/{appid}/access_token"),
            Some(json!({ "access_token": live, "expires_in": 110 })),
        )
        .await;
    assert_eq!(imported.status(), 200, "{:?}", imported.text().await);
    mock.clear_faults();
    let issued = stats(&mock).issued("/cgi-bin/token", appid);
    let served = hub.token(appid).await;
    assert_eq!(served.access_token, live);
    assert!(served.expires_in <= 110);
    assert_eq!(business_call(&hub.client, &mock, &live).await, 0);
    // Its planned refresh is far away (lead 30 min capped at half its life): nothing fetched.
    let listed = hub.credential(&format!("access_token/{appid}")).await;
    assert!(
        seconds_until(listed["next_refresh"].as_str().unwrap()) > 30,
        "{listed}"
    );
    assert_eq!(stats(&mock).issued("/cgi-bin/token", appid), issued);

    // A stale expectation is refused.
    let stale = hub
        .send(
            Method::PUT,
            &format!("/v1/admin/apps/{appid}/access_token"),
            Some(json!({ "access_token": "x", "expires_in": 100, "generation": 0 })),
        )
        .await;
    assert_eq!(stale.status(), 409);
    let bad = hub
        .send(
            Method::PUT,
            &format!("/v1/admin/apps/{appid}/access_token"),
            Some(json!({ "access_token": "x", "expires_in": 0 })),
        )
        .await;
    assert_eq!(bad.status(), 400);
}

/// The configuration file of the reload test.
fn config_text(mock: &wechat_mock::MockServer, apps: &[(&str, &str)], readers: &[&str]) -> String {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[store]\nkind = \"memory\"\n\n[wechat]\napi_base = \"{0}\"\nwork_api_base = \"{0}\"\ntimeout = \"2s\"\n\n[refresh]\nmin_refresh_interval = \"1s\"\n",
        mock.base_url()
    );
    for (appid, secret) in apps {
        text.push_str(&format!(
            "\n[[apps]]\nappid = \"{appid}\"\nsecret = \"{secret}\"\nmode = \"legacy\"\n"
        ));
    }
    text.push_str(&format!(
        "\n[[consumers]]\nname = \"admin\"\nkey_sha256 = \"{}\"\napps = [\"*\"]\nscopes = [\"read\", \"admin\"]\n",
        consumer_key_sha256(ADMIN_KEY)
    ));
    let readers: Vec<String> = readers.iter().map(|a| format!("\"{a}\"")).collect();
    text.push_str(&format!(
        "\n[[consumers]]\nname = \"reader\"\nkey_sha256 = \"{}\"\napps = [{}]\nscopes = [\"read\"]\n",
        consumer_key_sha256(READER_KEY),
        readers.join(", ")
    ));
    text
}

#[tokio::test]
async fn a_reload_applies_the_diff_and_a_broken_file_changes_nothing() {
    let (a, b, c) = (
        "wxreload000000001",
        "wxreload000000002",
        "wxreload000000003",
    );
    let apps = [TestApp::legacy(a), TestApp::legacy(b), TestApp::legacy(c)];
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_secs(5),
        &apps,
        &[],
        |m| m,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wxhub.toml");
    std::fs::write(
        &path,
        config_text(&mock, &[(a, &secret_of(a)), (b, "wrong-secret")], &[a]),
    )
    .unwrap();
    let app = Application::build_from_file(&path)
        .await
        .expect("hub builds");
    let hub_url = format!("http://{}", app.address());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    let hub = TestHub::remote(hub_url);
    wait_until(Duration::from_secs(5), "a is served", || async {
        hub.get(&format!("/v1/apps/{a}/access_token"))
            .await
            .status()
            == 200
    })
    .await;
    wait_until(Duration::from_secs(5), "b needs attention", || async {
        hub.credential(&format!("access_token/{b}")).await["state"] == "needs_attention"
    })
    .await;
    let reader_get = |appid: &'static str| {
        let client = hub.client.clone();
        let url = hub.url(&format!("/v1/apps/{appid}/access_token"));
        async move {
            client
                .get(url)
                .bearer_auth(READER_KEY)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // Not granted c: told nothing of it (403 whether it exists or not).
    assert_eq!(reader_get(c).await, 403);

    // Remove a, fix b's secret, add c, and grant the reader c instead of a.
    std::fs::write(
        &path,
        config_text(&mock, &[(b, &secret_of(b)), (c, &secret_of(c))], &[c]),
    )
    .unwrap();
    let reloaded = hub.send(Method::POST, "/v1/admin/reload", None).await;
    assert_eq!(reloaded.status(), 200);
    let summary: serde_json::Value = reloaded.json().await.unwrap();
    assert_eq!(summary["added"], json!([format!("app/{c}")]));
    assert_eq!(summary["removed"], json!([format!("app/{a}")]));
    assert_eq!(summary["changed"], json!([format!("app/{b}")]));
    assert_eq!(summary["consumers_changed"], true);
    assert_eq!(
        hub.get(&format!("/v1/apps/{a}/access_token"))
            .await
            .status(),
        404
    );
    let c_token = hub.token(c).await;
    assert_eq!(
        business_call(&hub.client, &mock, &c_token.access_token).await,
        0
    );
    // The changed secret takes effect at the next refresh.
    hub.post(&format!("/v1/apps/{b}/refresh"), json!({})).await;
    let b_token = hub.token(b).await;
    assert_eq!(
        business_call(&hub.client, &mock, &b_token.access_token).await,
        0
    );
    assert_eq!(reader_get(c).await, 200);
    assert_eq!(reader_get(b).await, 403);

    // A broken file: refused with its line, nothing changes, the hub keeps serving.
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\n[[apps]\nappid = 1\n",
    )
    .unwrap();
    let refused = hub.send(Method::POST, "/v1/admin/reload", None).await;
    assert_eq!(refused.status(), 400);
    let error: serde_json::Value = refused.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("wxhub.toml:3"), "{message}");
    assert_eq!(hub.token(c).await.access_token, c_token.access_token);
    assert_eq!(reader_get(c).await, 200);

    let _ = tx.send(());
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_new_legacy_app_starts_from_a_live_token_without_a_fetch() {
    let fixed = TestApp::stable("wxfixed0000000006");
    let added = "wxadded0000000006";
    let (mock, hub) = mock_and_hub(&[fixed], &[TestApp::legacy(added)], &[], |o| o).await;
    let live = fetched_elsewhere(&mock, added).await;
    let path = format!("/v1/admin/apps/{added}");
    let body = json!({ "secret": secret_of(added), "mode": "legacy", "access_token": live, "expires_in": 5 });
    let put = hub.send(Method::PUT, &path, Some(body.clone())).await;
    assert_eq!(put.status(), 201, "{:?}", put.text().await);
    assert_eq!(hub.token(added).await.access_token, live);
    assert_eq!(
        stats(&mock).issued("/cgi-bin/token", added),
        1,
        "only the other system's fetch"
    );
    // An existing app cannot be re-created from a token.
    let again = hub.send(Method::PUT, &path, Some(body)).await;
    assert_eq!(again.status(), 409);
    let half = hub
        .send(
            Method::PUT,
            &path,
            Some(json!({ "secret": "s", "access_token": "t" })),
        )
        .await;
    assert_eq!(half.status(), 400);
}

#[tokio::test]
async fn every_admin_action_leaves_exactly_one_audit_entry() {
    let fixed = TestApp::legacy("wxfixed0000000007");
    let added = "wxadded0000000007";
    let (_mock, hub) = mock_and_hub(
        std::slice::from_ref(&fixed),
        &[TestApp::legacy(added)],
        &[],
        |o| o,
    )
    .await;
    let app_path = format!("/v1/admin/apps/{added}");
    let actions = [
        (
            Method::PUT,
            app_path.clone(),
            Some(put_app_body(added)),
            201,
        ),
        (
            Method::PUT,
            app_path.clone(),
            Some(json!({ "secret": "" })),
            400,
        ),
        (
            Method::POST,
            format!("/v1/apps/{}/refresh?force=true", fixed.appid),
            None,
            200,
        ),
        (
            Method::PUT,
            format!("/v1/admin/apps/{}/access_token", fixed.appid),
            Some(json!({ "access_token": "x", "expires_in": 60, "generation": 0 })),
            409,
        ),
        (Method::POST, "/v1/admin/reload".to_string(), None, 409),
        (Method::DELETE, app_path.clone(), None, 204),
    ];
    for (method, path, body, status) in &actions {
        let response = hub.send(method.clone(), path, body.clone()).await;
        assert_eq!(response.status(), *status, "{method} {path}");
    }
    // Reads are not actions, and an unauthenticated call is no one's action.
    hub.get("/v1/credentials").await;
    hub.client
        .delete(hub.url(&app_path))
        .bearer_auth("not-a-key")
        .send()
        .await
        .unwrap();
    let audit: serde_json::Value = hub.get("/v1/admin/audit").await.json().await.unwrap();
    let entries = audit["entries"].as_array().unwrap();
    let seen: Vec<(String, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let app = format!("app/{added}");
    let token = format!("access_token/{}", fixed.appid);
    let expected = vec![
        ("put_account", app.as_str(), "ok"),
        ("put_account", app.as_str(), "invalid_secret"),
        ("refresh_forced", token.as_str(), "ok"),
        ("import_token", token.as_str(), "conflict"),
        ("reload", "configuration", "no_configuration_file"),
        ("delete_account", app.as_str(), "ok"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .into_iter()
        .map(|(a, t, o)| (a.into(), t.into(), o.into()))
        .collect();
    assert_eq!(seen, expected);
    assert!(entries.iter().all(|e| e["consumer"] == "admin"));
    assert!(!audit.to_string().contains(&secret_of(added)));
}

#[tokio::test]
async fn a_slow_store_write_of_one_account_holds_up_no_other() {
    let (slow, quick) = ("wxslowstore000001", "wxquickstore00001");
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_secs(5),
        &[TestApp::legacy(slow), TestApp::legacy(quick)],
        &[],
        |c| c,
    )
    .await;
    let delay = Duration::from_secs(3);
    let store = Arc::new(
        FaultyStore::new(Arc::new(wxhub::store::memory::MemoryStore::new()))
            .with_slow_account(&format!("app/{slow}"), delay),
    );
    let mut options = HubOptions::new(&[]);
    options.shared_store = Some(store.clone());
    let hub = spawn_app(&mock, options).await;
    let slow_put = put_app_in_background(&hub, slow);
    // The slow account's write is under way; another account's change goes through meanwhile.
    wait_for_slow_write(&store).await;
    let started = std::time::Instant::now();
    let quick_put = hub
        .send(
            Method::PUT,
            &format!("/v1/admin/apps/{quick}"),
            Some(put_app_body(quick)),
        )
        .await;
    assert_eq!(quick_put.status(), 201);
    assert!(
        started.elapsed() < delay / 2,
        "waited {:?} behind another account's store write",
        started.elapsed()
    );
    assert!(!slow_put.is_finished());
    assert_eq!(slow_put.await.unwrap(), 201);
    hub.stop().await;
}

/// A hub on a [`FaultyStore`] over a memory store that a test may share with a second hub, with
/// the mock knowing `apps`.
async fn hub_on_faulty_store(
    apps: &[&str],
) -> (
    Arc<wechat_mock::MockServer>,
    Arc<wxhub::store::memory::MemoryStore>,
    Arc<FaultyStore>,
    TestHub,
) {
    let known: Vec<TestApp> = apps.iter().map(|appid| TestApp::legacy(appid)).collect();
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_secs(5),
        &known,
        &[],
        |c| c,
    )
    .await;
    let shared = Arc::new(wxhub::store::memory::MemoryStore::new());
    let store = Arc::new(FaultyStore::new(shared.clone()));
    let mut options = HubOptions::new(&[]);
    options.shared_store = Some(store.clone());
    let hub = spawn_app(&mock, options).await;
    (mock, shared, store, hub)
}

/// Waits until `store`'s slow write (of an account or a token) has begun.
async fn wait_for_slow_write(store: &FaultyStore) {
    wait_until(
        Duration::from_secs(5),
        "the slow write has begun",
        || async {
            store
                .slow_write_begun
                .load(std::sync::atomic::Ordering::SeqCst)
        },
    )
    .await;
}

/// A resync held after reading the store (see [`start_held_resync`]).
struct HeldResync {
    /// How many times the store had read every account before it (the hub's start is one).
    reads_before: u64,
}

/// Starts a resync on `store`'s hub whose read of the store is held once taken, with the real
/// account feed muted so that only the resync acts: what the test changes next is newer than
/// what the resync read.
async fn start_held_resync(store: &FaultyStore) -> HeldResync {
    let reads_before = account_reads(store);
    store.mute_account_feed();
    store.hold_account_loads();
    store.signal_account_resync();
    wait_for_account_reads(store, reads_before + 1).await;
    HeldResync { reads_before }
}

/// Lets the held resync go on and waits for its end: a second resync, queued behind it on the
/// feed, has read the store (and is held in turn until `release_account_loads(1)`).
async fn finish_held_resync(store: &FaultyStore, held: HeldResync) {
    store.signal_account_resync();
    store.release_account_loads(1);
    wait_for_account_reads(store, held.reads_before + 2).await;
}

/// How many times `store` has read every account.
fn account_reads(store: &FaultyStore) -> u64 {
    store
        .account_reads
        .load(std::sync::atomic::Ordering::SeqCst)
}

/// Waits until `store` has read every account at least `reads` times.
async fn wait_for_account_reads(store: &FaultyStore, reads: u64) {
    wait_until(
        Duration::from_secs(5),
        "the resync has read the accounts",
        || async { account_reads(store) >= reads },
    )
    .await;
}

#[tokio::test]
async fn an_app_put_while_a_resync_reads_the_store_is_not_taken_for_removed() {
    let appid = "wxputduringresync";
    let (mock, _, store, hub) = hub_on_faulty_store(&[appid]).await;
    // The app's own feed message would put it back if the resync took it away: the resync
    // alone must keep it.
    let held = start_held_resync(&store).await;
    // Put after the resync read the store: what it read does not have the app.
    assert_eq!(put_app(&hub, appid).await, 201);
    let token = hub.token(appid).await;
    finish_held_resync(&store, held).await;
    let served = hub.get(&format!("/v1/apps/{appid}/access_token")).await;
    assert_eq!(
        served.status(),
        200,
        "the app put during the resync is gone"
    );
    assert_eq!(hub.token(appid).await.access_token, token.access_token);
    let key = CredentialKey::access_token(appid);
    assert!(
        store.get(&key).await.unwrap().is_some(),
        "its token was deleted"
    );
    assert_eq!(store.calls("delete"), 0);
    store.release_account_loads(1);
    assert_eq!(stats(&mock).issued("/cgi-bin/token", appid), 1);
    hub.stop().await;
}

#[tokio::test]
async fn an_app_deleted_while_a_resync_reads_the_store_is_not_brought_back() {
    let appid = "wxdeletedinresync";
    let (mock, _, store, hub) = hub_on_faulty_store(&[appid]).await;
    let path = format!("/v1/admin/apps/{appid}");
    let put = hub
        .send(Method::PUT, &path, Some(put_app_body(appid)))
        .await;
    assert_eq!(put.status(), 201);
    hub.token(appid).await;
    let held = start_held_resync(&store).await;
    // Deleted after the resync read it: what the resync holds is older than this.
    assert_eq!(hub.send(Method::DELETE, &path, None).await.status(), 204);
    finish_held_resync(&store, held).await;
    let served = hub.get(&format!("/v1/apps/{appid}/access_token")).await;
    assert_eq!(served.status(), 404, "the deleted app was brought back");
    store.release_account_loads(1);
    assert_eq!(stats(&mock).issued("/cgi-bin/token", appid), 1);
    hub.stop().await;
}

#[tokio::test]
async fn a_resync_applies_what_the_feed_lost_past_an_account_it_cannot_read() {
    let (added, removed) = ("wxlostputresync01", "wxlostdelresync01");
    let (mock, shared, follower_store, follower) = hub_on_faulty_store(&[added, removed]).await;
    let mut options = HubOptions::new(&[]);
    options.shared_store = Some(shared.clone());
    let other = spawn_app(&mock, options).await;
    assert_eq!(put_app(&other, removed).await, 201);
    let path = |appid: &str| format!("/v1/apps/{appid}/access_token");
    wait_until(
        Duration::from_secs(5),
        "the follower serves the app",
        || async { follower.get(&path(removed)).await.status() == 200 },
    )
    .await;
    // From here the follower hears nothing: one app is added and another deleted elsewhere,
    // and the store holds a definition this instance cannot read, first in the list.
    follower_store.mute_account_feed();
    assert_eq!(put_app(&other, added).await, 201);
    let deleted = other
        .send(Method::DELETE, &format!("/v1/admin/apps/{removed}"), None)
        .await;
    assert_eq!(deleted.status(), 204);
    shared
        .put_account("app/wx0000unreadable", "not a definition")
        .await
        .unwrap();
    assert_eq!(follower.get(&path(added)).await.status(), 404);
    assert_eq!(follower.get(&path(removed)).await.status(), 200);
    follower_store.signal_account_resync();
    wait_until(
        Duration::from_secs(5),
        "the resync applied what the feed lost",
        || async {
            follower.get(&path(added)).await.status() == 200
                && follower.get(&path(removed)).await.status() == 404
        },
    )
    .await;
    other.stop().await;
    follower.stop().await;
}

#[tokio::test]
async fn an_instance_that_follows_a_removal_leaves_the_stored_tokens_to_the_remover() {
    let appid = "wxremovedelsewher";
    let (mock, shared, follower_store, follower) = hub_on_faulty_store(&[appid]).await;
    let mut options = HubOptions::new(&[]);
    options.shared_store = Some(shared);
    let remover = spawn_app(&mock, options).await;
    let put = remover
        .send(
            Method::PUT,
            &format!("/v1/admin/apps/{appid}"),
            Some(put_app_body(appid)),
        )
        .await;
    assert_eq!(put.status(), 201);
    let path = format!("/v1/apps/{appid}/access_token");
    wait_until(
        Duration::from_secs(5),
        "the follower serves the app",
        || async { follower.get(&path).await.status() == 200 },
    )
    .await;
    let deleted = remover
        .send(Method::DELETE, &format!("/v1/admin/apps/{appid}"), None)
        .await;
    assert_eq!(deleted.status(), 204);
    wait_until(
        Duration::from_secs(5),
        "the follower no longer serves the app",
        || async { follower.get(&path).await.status() == 404 },
    )
    .await;
    assert_eq!(follower_store.calls("delete"), 0);
    let key = CredentialKey::access_token(appid);
    assert!(
        follower_store.get(&key).await.unwrap().is_none(),
        "the remover deleted its token"
    );
    remover.stop().await;
    follower.stop().await;
}

#[tokio::test]
async fn a_deleted_app_leaves_no_token_in_the_sqlite_store() {
    // SQLite announces the removal on the feed before the delete returns: the instance's own
    // message must not stop the app first and leave its tokens to nobody.
    let appid = "wxdeletedonsqlite";
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_secs(5),
        &[TestApp::legacy(appid)],
        &[],
        |c| c,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("wxhub.db");
    let hub = spawn_app(&mock, HubOptions::new(&[]).with_sqlite(database.clone())).await;
    for round in 0..3 {
        assert_eq!(put_app(&hub, appid).await, 201, "round {round}");
        hub.token(appid).await;
        let deleted = hub
            .send(Method::DELETE, &format!("/v1/admin/apps/{appid}"), None)
            .await;
        assert_eq!(deleted.status(), 204, "round {round}");
    }
    hub.stop().await;
    let store = SqliteStore::open(&database).unwrap();
    let left: Vec<String> = store
        .load_all()
        .await
        .unwrap()
        .into_iter()
        .map(|(key, _)| key.to_string())
        .collect();
    assert!(left.is_empty(), "tokens of a deleted app left: {left:?}");
}

#[tokio::test]
async fn runtime_apps_that_would_be_confused_with_others_are_refused() {
    let fixed = TestApp::legacy("wxconfusefixed001");
    let added = "wxconfuseadded001";
    let (_mock, hub) = mock_and_hub(
        std::slice::from_ref(&fixed),
        &[TestApp::legacy(added)],
        &[],
        |o| o,
    )
    .await;
    // An appid that reads as a path segment of its own.
    let response = hub
        .send(
            Method::PUT,
            "/v1/admin/apps/.hidden",
            Some(put_app_body(added)),
        )
        .await;
    assert_eq!(response.status(), 400);

    // A new app whose secret WeChat refuses is not kept.
    let refused = hub
        .send(
            Method::PUT,
            &format!("/v1/admin/apps/{added}"),
            Some(json!({ "secret": "not-the-secret", "mode": "legacy" })),
        )
        .await;
    assert_eq!(refused.status(), 400);
    let error: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "refused_by_wechat", "{error}");
    assert_eq!(
        hub.get(&format!("/v1/apps/{added}/access_token"))
            .await
            .status(),
        404
    );

    // Another app's live token cannot be imported: the gateway tells apps apart by their tokens.
    let theirs = hub.token(&fixed.appid).await.access_token;
    let conflict = hub
        .send(
            Method::PUT,
            &format!("/v1/admin/apps/{added}"),
            Some(json!({
                "secret": secret_of(added), "mode": "legacy",
                "access_token": theirs, "expires_in": 600
            })),
        )
        .await;
    assert_eq!(conflict.status(), 409);
    let created = hub
        .send(
            Method::PUT,
            &format!("/v1/admin/apps/{added}"),
            Some(put_app_body(added)),
        )
        .await;
    assert_eq!(created.status(), 201);
    let import = hub
        .send(
            Method::PUT,
            &format!("/v1/admin/apps/{added}/access_token"),
            Some(json!({ "access_token": theirs, "expires_in": 600 })),
        )
        .await;
    assert_eq!(import.status(), 409);
    assert_ne!(hub.token(added).await.access_token, theirs);
    hub.stop().await;
}
