//! Consumers at runtime: `PUT`/`DELETE /v1/admin/consumers/{name}` on one instance (the cluster
//! tests cover several): granted exactly what they are given, re-keyed and removed at once (open
//! watch streams included), kept by restarts and reloads, managed only by an admin of everything.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::json;
use wxhub::configuration::{
    consumer_key_digest, consumer_key_sha256, AppGrant, ConsumerSettings, Scope,
};
use wxhub::store::Store;
use wxhub_test_support::faulty_store::FaultyStore;

use crate::helpers::*;

const FIXED: &str = "wxcsfixed00000001";
const ADDED: &str = "wxcsadded00000001";
const SHOP_KEY: &str = "shop-service-key-0123456789";
const SHOP_NEW_KEY: &str = "shop-service-key-replaced-01";
/// An admin granted only [`FIXED`].
const NARROW_ADMIN_KEY: &str = "narrow-admin-key-0123456789";

/// A hub with the file app [`FIXED`], an admin of [`FIXED`] alone, and [`ADDED`] known to the
/// mock (not to the hub).
async fn hub_with(
    adjust: impl FnOnce(HubOptions) -> HubOptions,
) -> (std::sync::Arc<wechat_mock::MockServer>, TestHub) {
    let fixed = TestApp::legacy(FIXED);
    let mock = minute_mock(&[fixed.clone(), TestApp::legacy(ADDED)]).await;
    let mut options = HubOptions::new(&[fixed]);
    options.more_consumers.push(ConsumerSettings {
        name: "narrow-admin".into(),
        key_sha256: consumer_key_digest(NARROW_ADMIN_KEY),
        apps: vec![AppGrant::App(FIXED.into())],
        scopes: vec![Scope::Read, Scope::Admin],
    });
    let hub = spawn_app(&mock, adjust(options)).await;
    hub.wait_ready().await;
    (mock, hub)
}

fn consumer_body(key: &str, apps: &[&str], scopes: &[&str]) -> serde_json::Value {
    json!({ "key_sha256": consumer_key_sha256(key), "apps": apps, "scopes": scopes })
}

/// `PUT /v1/admin/consumers/{name}` as `admin`: the status and the body.
async fn put_consumer(
    hub: &TestHub,
    admin: &str,
    name: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = hub
        .client
        .put(hub.url(&format!("/v1/admin/consumers/{name}")))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await
        .expect("the hub answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// `GET path` with `key`: the status.
async fn status_with(hub: &TestHub, key: &str, path: &str) -> u16 {
    hub.client
        .get(hub.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("the hub answers")
        .status()
        .as_u16()
}

fn token_path(appid: &str) -> String {
    format!("/v1/apps/{appid}/access_token")
}

/// Adds [`ADDED`] at runtime.
async fn add_runtime_app(hub: &TestHub) {
    let put = hub
        .send(
            Method::PUT,
            &format!("/v1/admin/apps/{ADDED}"),
            Some(json!({ "secret": secret_of(ADDED), "mode": "legacy" })),
        )
        .await;
    assert_eq!(put.status(), 201);
}

#[tokio::test]
async fn a_runtime_consumer_uses_what_it_is_granted_until_re_keyed_or_removed() {
    let (_mock, hub) = hub_with(|o| o).await;
    add_runtime_app(&hub).await;
    // Unknown before it is added.
    assert_eq!(status_with(&hub, SHOP_KEY, &token_path(ADDED)).await, 401);

    let (status, body) = put_consumer(
        &hub,
        ADMIN_KEY,
        "shop",
        consumer_body(SHOP_KEY, &[ADDED], &["read"]),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["created"], true);
    assert_eq!(body["apps"], json!([ADDED]));
    assert_eq!(body["warnings"], json!([]));
    // In force when the PUT returns: the runtime app granted, nothing else.
    assert_eq!(status_with(&hub, SHOP_KEY, &token_path(ADDED)).await, 200);
    assert_eq!(status_with(&hub, SHOP_KEY, &token_path(FIXED)).await, 403);
    assert_eq!(status_with(&hub, SHOP_KEY, "/v1/credentials").await, 403);

    // Listed with its source, never with its key hash.
    let listed: serde_json::Value = hub.get("/v1/admin/consumers").await.json().await.unwrap();
    let shop = listed["consumers"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == "shop"))
        .cloned()
        .unwrap_or_else(|| panic!("shop is listed: {listed}"));
    assert_eq!(
        shop,
        json!({ "name": "shop", "apps": [ADDED], "scopes": ["read"], "source": "runtime" })
    );
    let admin = listed["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "admin")
        .unwrap();
    assert_eq!(admin["source"], "file");
    assert!(!listed.to_string().contains(&consumer_key_sha256(SHOP_KEY)));
    assert!(!listed.to_string().contains(&consumer_key_sha256(ADMIN_KEY)));

    // A grant of an app the hub does not have is accepted, and said so.
    let (status, body) = put_consumer(
        &hub,
        ADMIN_KEY,
        "shop",
        consumer_body(SHOP_KEY, &[ADDED, "wxcsnotyet0000001"], &["read"]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["created"], false);
    let warnings = body["warnings"].to_string();
    assert!(
        warnings.contains("apps[1]") && warnings.contains("wxcsnotyet0000001"),
        "{warnings}"
    );

    // A watch stream of the consumer, open across the re-key below.
    let mut stream = hub
        .client
        .get(hub.url("/v1/watch"))
        .bearer_auth(SHOP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut seen = String::new();
    while !seen.contains(&format!("access_token/{ADDED}")) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .expect("the initial state within 5 s")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains(FIXED), "{seen}");

    // Re-keyed: the old key is refused at once, the new one works, the open stream ends.
    let (status, _) = put_consumer(
        &hub,
        ADMIN_KEY,
        "shop",
        consumer_body(SHOP_NEW_KEY, &[ADDED], &["read"]),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(status_with(&hub, SHOP_KEY, &token_path(ADDED)).await, 401);
    assert_eq!(
        status_with(&hub, SHOP_NEW_KEY, &token_path(ADDED)).await,
        200
    );
    // The stream checks its consumer's access at its next event.
    let refreshed = hub
        .post(&format!("/v1/apps/{ADDED}/refresh?force=true"), json!({}))
        .await;
    assert_eq!(refreshed.status(), 200);
    let rest = until_the_end(stream).await;
    assert!(
        rest.contains("event: end\ndata: {\"reason\":\"access_revoked\"}"),
        "{rest}"
    );
    assert!(!rest.contains("\"value\""), "{rest}");

    // Removed: refused at once; a stream open with the new key ends as well.
    let stream = hub
        .client
        .get(hub.url("/v1/watch"))
        .bearer_auth(SHOP_NEW_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let deleted = hub
        .send(Method::DELETE, "/v1/admin/consumers/shop", None)
        .await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(
        status_with(&hub, SHOP_NEW_KEY, &token_path(ADDED)).await,
        401
    );
    let refreshed = hub
        .post(&format!("/v1/apps/{ADDED}/refresh?force=true"), json!({}))
        .await;
    assert_eq!(refreshed.status(), 200);
    let rest = until_the_end(stream).await;
    assert!(rest.contains("\"reason\":\"access_revoked\""), "{rest}");
    let again = hub
        .send(Method::DELETE, "/v1/admin/consumers/shop", None)
        .await;
    assert_eq!(again.status(), 404);

    // One audit entry per action, naming the consumer, never its key or hash.
    let audit: serde_json::Value = hub.get("/v1/admin/audit").await.json().await.unwrap();
    let consumer_actions: Vec<(String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == "consumer/shop")
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("put_consumer", "ok"),
        ("put_consumer", "ok"),
        ("put_consumer", "ok"),
        ("delete_consumer", "ok"),
        ("delete_consumer", "unknown_consumer"),
    ]
    .iter()
    .map(|(a, o)| (a.to_string(), o.to_string()))
    .collect();
    assert_eq!(consumer_actions, expected);
    assert!(!audit.to_string().contains(&consumer_key_sha256(SHOP_KEY)));
    hub.stop().await;
}

/// The rest of a watch stream until the hub ends it (within 5 s).
async fn until_the_end(response: reqwest::Response) -> String {
    let mut body = response.bytes_stream();
    let mut rest = String::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), body.next()).await {
            Ok(Some(Ok(chunk))) => rest.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None | Some(Err(_))) => return rest,
            Err(_) => panic!("the stream is still open after 5 s: {rest}"),
        }
    }
}

#[tokio::test]
async fn only_an_admin_of_every_app_manages_consumers_and_file_consumers_are_read_only() {
    let (_mock, hub) = hub_with(|o| o).await;
    let body = consumer_body(SHOP_KEY, &[FIXED], &["read"]);
    // An admin of one app could otherwise mint itself a key for every app.
    let (status, answer) = put_consumer(&hub, NARROW_ADMIN_KEY, "shop", body.clone()).await;
    assert_eq!(status, 403, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("it needs apps = [\"*\"]"), "{answer}");
    let (status, _) = put_consumer(
        &hub,
        NARROW_ADMIN_KEY,
        "narrow-admin",
        consumer_body(NARROW_ADMIN_KEY, &["*"], &["admin"]),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = put_consumer(&hub, READER_KEY, "shop", body.clone()).await;
    assert_eq!(status, 403, "no admin scope");
    let (status, _) = put_consumer(&hub, "not-a-key", "shop", body.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(
        status_with(&hub, SHOP_KEY, &token_path(FIXED)).await,
        401,
        "nothing was added"
    );
    let (status, _) = put_consumer(&hub, ADMIN_KEY, "shop", body.clone()).await;
    assert_eq!(status, 201);
    for key in [NARROW_ADMIN_KEY, READER_KEY] {
        let deleted = hub
            .client
            .delete(hub.url("/v1/admin/consumers/shop"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 403);
    }
    let listed = hub
        .client
        .get(hub.url("/v1/admin/consumers"))
        .bearer_auth(NARROW_ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 403);
    assert_eq!(status_with(&hub, SHOP_KEY, &token_path(FIXED)).await, 200);

    // Consumers of the file are changed in the file.
    let (status, answer) = put_consumer(&hub, ADMIN_KEY, "reader", body.clone()).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "defined_in_configuration");
    let deleted = hub
        .send(Method::DELETE, "/v1/admin/consumers/reader", None)
        .await;
    assert_eq!(deleted.status(), 409);
    assert_eq!(status_with(&hub, READER_KEY, &token_path(FIXED)).await, 200);
    hub.stop().await;
}

#[tokio::test]
async fn bad_bodies_are_refused_naming_the_field() {
    let (_mock, hub) = hub_with(|o| o).await;
    let hash = consumer_key_sha256(SHOP_KEY);
    let raw_key = "my-raw-bearer-key-pasted-by-mistake";
    let cases: Vec<(serde_json::Value, &str, &str)> = vec![
        (
            json!({ "apps": [FIXED], "scopes": ["read"] }),
            "invalid_key_sha256",
            "key_sha256 is required",
        ),
        (
            json!({ "key_sha256": "abc123", "scopes": ["read"] }),
            "invalid_key_sha256",
            "key_sha256 is 6 hex digits long",
        ),
        (
            json!({ "key_sha256": raw_key, "scopes": ["read"] }),
            "invalid_key_sha256",
            "looks like a raw bearer key",
        ),
        (
            json!({ "key_sha256": 7, "scopes": ["read"] }),
            "invalid_key_sha256",
            "key_sha256 must be a string",
        ),
        (
            json!({ "key_sha256": hash, "apps": FIXED, "scopes": ["read"] }),
            "invalid_grant",
            "apps must be an array",
        ),
        (
            json!({ "key_sha256": hash, "apps": [FIXED, "wx 2"], "scopes": ["read"] }),
            "invalid_grant",
            "apps[1]: unknown app \"wx 2\"",
        ),
        (
            json!({ "key_sha256": hash, "apps": [FIXED, "a/b/c"], "scopes": ["read"] }),
            "invalid_grant",
            "apps[1]: unknown app",
        ),
        (
            json!({ "key_sha256": hash, "apps": [FIXED, FIXED], "scopes": ["read"] }),
            "invalid_grant",
            "apps[1]: \"wxcsfixed00000001\" is listed twice",
        ),
        (
            json!({ "key_sha256": hash, "apps": [1], "scopes": ["read"] }),
            "invalid_grant",
            "apps[0] must be a string",
        ),
        (
            json!({ "key_sha256": hash, "apps": [FIXED] }),
            "invalid_scope",
            "scopes: must name at least one of \"read\", \"invalidate\", \"admin\", \"authorize\", \"call\"",
        ),
        (
            json!({ "key_sha256": hash, "apps": [FIXED], "scopes": [] }),
            "invalid_scope",
            "scopes: must name at least one of \"read\", \"invalidate\", \"admin\", \"authorize\", \"call\"",
        ),
        (
            json!({ "key_sha256": hash, "apps": [FIXED], "scopes": ["read", "write"] }),
            "invalid_scope",
            "scopes[1]: unknown scope \"write\"",
        ),
        (
            json!({ "key_sha256": hash, "scopes": ["read"], "key": SHOP_KEY }),
            "invalid_json",
            "unknown field \"key\"",
        ),
        (
            json!(["key_sha256"]),
            "invalid_json",
            "JSON of the wrong shape",
        ),
        // Another consumer's key: each consumer needs its own.
        (
            json!({ "key_sha256": consumer_key_sha256(ADMIN_KEY), "scopes": ["read"] }),
            "key_in_use",
            "consumer \"admin\" has this key already",
        ),
    ];
    for (body, code, message) in cases {
        let (status, answer) = put_consumer(&hub, ADMIN_KEY, "shop", body.clone()).await;
        let expected = if code == "key_in_use" { 409 } else { 400 };
        assert_eq!(status, expected, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        let said = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(said.contains(message), "{body}: {said}");
        assert!(
            !said.contains(raw_key) && !said.contains(SHOP_KEY),
            "{said}"
        );
    }
    let malformed = hub
        .client
        .put(hub.url("/v1/admin/consumers/shop"))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body("{\"key_sha256\":")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    for name in ["a%20b", ".hidden", "a%2Fb", &"x".repeat(65)] {
        let (status, answer) = put_consumer(
            &hub,
            ADMIN_KEY,
            name,
            consumer_body(SHOP_KEY, &[FIXED], &["read"]),
        )
        .await;
        assert_eq!(status, 400, "{name}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_name", "{name}: {answer}");
    }
    // Nothing was added by any of them.
    let listed: serde_json::Value = hub.get("/v1/admin/consumers").await.json().await.unwrap();
    assert_eq!(listed["consumers"].as_array().unwrap().len(), 4, "{listed}");
    hub.stop().await;
}

#[tokio::test]
async fn runtime_consumers_survive_a_restart_on_sqlite() {
    let fixed = TestApp::legacy(FIXED);
    let mock = minute_mock(std::slice::from_ref(&fixed)).await;
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("wxhub.db");
    let options = || HubOptions::new(std::slice::from_ref(&fixed)).with_sqlite(database.clone());

    let first = spawn_app(&mock, options()).await;
    first.wait_ready().await;
    let (status, _) = put_consumer(
        &first,
        ADMIN_KEY,
        "shop",
        consumer_body(SHOP_KEY, &[FIXED], &["read"]),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = put_consumer(
        &first,
        ADMIN_KEY,
        "gone",
        consumer_body(SHOP_NEW_KEY, &[FIXED], &["read"]),
    )
    .await;
    assert_eq!(status, 201);
    let deleted = first
        .send(Method::DELETE, "/v1/admin/consumers/gone", None)
        .await;
    assert_eq!(deleted.status(), 204);
    first.stop().await;

    // Only the hash is stored.
    let raw = std::fs::read(&database).unwrap();
    assert!(!raw
        .windows(SHOP_KEY.len())
        .any(|w| w == SHOP_KEY.as_bytes()));

    let second = spawn_app(&mock, options()).await;
    second.wait_ready().await;
    assert_eq!(
        status_with(&second, SHOP_KEY, &token_path(FIXED)).await,
        200
    );
    assert_eq!(
        status_with(&second, SHOP_NEW_KEY, &token_path(FIXED)).await,
        401
    );
    second.stop().await;
}

/// A configuration file with [`FIXED`], the test master key, the admin, and `extra` consumers
/// (name, key), on `store` (the lines of its `[store]` table).
fn config_text(mock: &wechat_mock::MockServer, store: &str, extra: &[(&str, &str)]) -> String {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[store]\n{store}\n\n[wechat]\napi_base = \"{0}\"\nwork_api_base = \"{0}\"\ntimeout = \"2s\"\n\n[secrets]\nmaster_key = \"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\"\n\n[[apps]]\nappid = \"{FIXED}\"\nsecret = \"{1}\"\nmode = \"legacy\"\n",
        mock.base_url(),
        secret_of(FIXED),
    );
    for (name, key) in [("admin", ADMIN_KEY)].iter().chain(extra) {
        text.push_str(&format!(
            "\n[[consumers]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\napps = [\"*\"]\nscopes = [\"read\", \"admin\"]\n",
            consumer_key_sha256(key)
        ));
    }
    text
}

/// A hub started from the file at `path`, and how to stop it.
struct FromFile {
    hub: TestHub,
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl FromFile {
    async fn start(path: &std::path::Path) -> FromFile {
        let app = wxhub::startup::Application::build_from_file(path)
            .await
            .expect("hub builds");
        let hub = TestHub::remote(format!("http://{}", app.address()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        hub.wait_ready().await;
        FromFile { hub, stop, running }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.running.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_reload_keeps_runtime_consumers_and_the_file_wins_a_name() {
    let mock = minute_mock(&[TestApp::legacy(FIXED)]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wxhub.toml");
    let database = dir.path().join("wxhub.db");
    let sqlite = format!(
        "kind = \"sqlite\"\npath = {:?}",
        database.display().to_string()
    );
    let write = |extra: &[(&str, &str)]| {
        std::fs::write(&path, config_text(&mock, &sqlite, extra)).unwrap();
    };
    write(&[]);
    let running = FromFile::start(&path).await;
    let hub = &running.hub;
    let reload = || async {
        let reloaded = hub.send(Method::POST, "/v1/admin/reload", None).await;
        assert_eq!(reloaded.status(), 200);
    };
    let (status, _) = put_consumer(
        hub,
        ADMIN_KEY,
        "shop",
        consumer_body(SHOP_KEY, &[FIXED], &["read"]),
    )
    .await;
    assert_eq!(status, 201);

    // A reload, of a changed file too, keeps it.
    reload().await;
    assert_eq!(status_with(hub, SHOP_KEY, &token_path(FIXED)).await, 200);
    write(&[("ops", NARROW_ADMIN_KEY)]);
    reload().await;
    assert_eq!(status_with(hub, SHOP_KEY, &token_path(FIXED)).await, 200);
    assert_eq!(
        status_with(hub, NARROW_ADMIN_KEY, &token_path(FIXED)).await,
        200
    );

    // The file takes the name over: its key is the one, and the runtime one is gone for good.
    write(&[("shop", SHOP_NEW_KEY)]);
    reload().await;
    assert_eq!(status_with(hub, SHOP_KEY, &token_path(FIXED)).await, 401);
    assert_eq!(
        status_with(hub, SHOP_NEW_KEY, &token_path(FIXED)).await,
        200
    );
    let (status, _) = put_consumer(
        hub,
        ADMIN_KEY,
        "shop",
        consumer_body(SHOP_KEY, &[FIXED], &["read"]),
    )
    .await;
    assert_eq!(status, 409);
    write(&[]);
    reload().await;
    assert_eq!(status_with(hub, SHOP_KEY, &token_path(FIXED)).await, 401);
    assert_eq!(
        status_with(hub, SHOP_NEW_KEY, &token_path(FIXED)).await,
        401
    );
    running.stop().await;

    // Gone from the store, not only from the table of the instance that reloaded: nothing is left
    // for a restart (or another instance) to read back.
    let store = wxhub::store::sqlite::SqliteStore::open(&database).unwrap();
    let stored = store.load_accounts().await.unwrap();
    assert!(
        stored.iter().all(|(name, _)| name != "consumer/shop"),
        "{stored:?}"
    );
    drop(store);
    let restarted = FromFile::start(&path).await;
    assert_eq!(
        status_with(&restarted.hub, SHOP_KEY, &token_path(FIXED)).await,
        401
    );
    restarted.stop().await;
}

#[tokio::test]
async fn a_file_consumer_may_be_granted_an_app_that_exists_only_at_runtime() {
    let mock = minute_mock(&[TestApp::legacy(FIXED), TestApp::legacy(ADDED)]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wxhub.toml");
    let mut text = config_text(&mock, "kind = \"memory\"", &[]);
    text.push_str(&format!(
        "\n[[consumers]]\nname = \"shop\"\nkey_sha256 = \"{}\"\napps = [\"{ADDED}\"]\nscopes = [\"read\"]\n",
        consumer_key_sha256(SHOP_KEY)
    ));
    std::fs::write(&path, text).unwrap();
    let settings = wxhub::configuration::Settings::load(&path).expect("the file is valid");
    let warnings = settings.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains(ADDED), "{warnings:?}");
    let app = wxhub::startup::Application::build_from_file(&path)
        .await
        .expect("the hub starts");
    let hub = TestHub::remote(format!("http://{}", app.address()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    hub.wait_ready().await;
    // Told nothing of an app it is granted until the app exists.
    assert_eq!(status_with(&hub, SHOP_KEY, &token_path(ADDED)).await, 404);
    assert_eq!(status_with(&hub, SHOP_KEY, &token_path(FIXED)).await, 403);
    add_runtime_app(&hub).await;
    assert_eq!(status_with(&hub, SHOP_KEY, &token_path(ADDED)).await, 200);
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_instance_that_cannot_re_read_a_changed_consumer_refuses_its_old_key_until_it_can() {
    let fixed = TestApp::legacy(FIXED);
    let mock = minute_mock(std::slice::from_ref(&fixed)).await;
    let shared = std::sync::Arc::new(wxhub::store::memory::MemoryStore::new());
    let faulty = std::sync::Arc::new(FaultyStore::new(shared.clone()));
    let fail = |on: bool| {
        faulty
            .failing_definition_reads
            .store(on, std::sync::atomic::Ordering::SeqCst)
    };
    let mut options = HubOptions::new(std::slice::from_ref(&fixed));
    options.shared_store = Some(shared.clone());
    let writer = spawn_app(&mock, options).await;
    let mut options = HubOptions::new(std::slice::from_ref(&fixed));
    options.shared_store = Some(faulty.clone());
    let follower = spawn_app(&mock, options).await;
    writer.wait_ready().await;
    follower.wait_ready().await;
    let path = token_path(FIXED);
    let until = |key: &'static str, status: u16, what: &'static str| {
        let (follower, path) = (&follower, &path);
        wait_until(Duration::from_secs(5), what, move || async move {
            status_with(follower, key, path).await == status
        })
    };

    let body = |key| consumer_body(key, &[FIXED], &["read"]);
    assert_eq!(
        put_consumer(&writer, ADMIN_KEY, "shop", body(SHOP_KEY))
            .await
            .0,
        201
    );
    until(SHOP_KEY, 200, "the follower serves the consumer").await;

    // Re-keyed while the follower cannot read the store: the old key stops there at once.
    fail(true);
    assert_eq!(
        put_consumer(&writer, ADMIN_KEY, "shop", body(SHOP_NEW_KEY))
            .await
            .0,
        200
    );
    until(SHOP_KEY, 401, "the follower refuses the replaced key").await;
    assert_eq!(status_with(&follower, SHOP_NEW_KEY, &path).await, 401);
    // Once it can read again, it takes the new key without another change.
    fail(false);
    until(SHOP_NEW_KEY, 200, "the follower serves the new key").await;
    assert_eq!(status_with(&follower, SHOP_KEY, &path).await, 401);

    // Removed while it cannot read: refused at once, and not brought back once it can.
    fail(true);
    let deleted = writer
        .send(Method::DELETE, "/v1/admin/consumers/shop", None)
        .await;
    assert_eq!(deleted.status(), 204);
    until(
        SHOP_NEW_KEY,
        401,
        "the follower refuses the removed consumer",
    )
    .await;
    fail(false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status_with(&follower, SHOP_NEW_KEY, &path).await, 401);
    assert_eq!(status_with(&writer, SHOP_NEW_KEY, &path).await, 401);
    writer.stop().await;
    follower.stop().await;
}

#[tokio::test]
async fn runtime_consumers_stop_at_the_cap_and_replacing_one_is_still_allowed() {
    const CAP: usize = wxhub::consumers::MAX_RUNTIME_CONSUMERS;
    // The cap's worth, stored as another instance would have stored them.
    let store = std::sync::Arc::new(wxhub::store::memory::MemoryStore::new());
    for i in 0..CAP {
        let consumer = wxhub::consumers::RuntimeConsumer {
            key_sha256: consumer_key_digest(&format!("stored-consumer-key-{i}")),
            apps: vec![FIXED.to_string()],
            scopes: vec![Scope::Read],
        };
        store
            .put_account(
                &wxhub::consumers::storage_name(&format!("c{i:04}")),
                &consumer.definition(),
            )
            .await
            .unwrap();
    }
    let (_mock, hub) = hub_with(|mut o| {
        o.shared_store = Some(store.clone());
        o
    })
    .await;
    assert_eq!(
        status_with(&hub, "stored-consumer-key-7", &token_path(FIXED)).await,
        200
    );

    let (status, answer) = put_consumer(
        &hub,
        ADMIN_KEY,
        "shop",
        consumer_body(SHOP_KEY, &[FIXED], &["read"]),
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "too_many_consumers", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&CAP.to_string()), "{message}");
    assert_eq!(status_with(&hub, SHOP_KEY, &token_path(FIXED)).await, 401);

    // Replacing one adds none.
    let (status, answer) = put_consumer(
        &hub,
        ADMIN_KEY,
        "c0001",
        consumer_body(SHOP_NEW_KEY, &[FIXED], &["read"]),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // Removing one makes room for one.
    let deleted = hub
        .send(Method::DELETE, "/v1/admin/consumers/c0002", None)
        .await;
    assert_eq!(deleted.status(), 204);
    let (status, answer) = put_consumer(
        &hub,
        ADMIN_KEY,
        "shop",
        consumer_body(SHOP_KEY, &[FIXED], &["read"]),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let (status, _) = put_consumer(
        &hub,
        ADMIN_KEY,
        "one-more",
        consumer_body("one-more-consumer-key-0001", &[FIXED], &["read"]),
    )
    .await;
    assert_eq!(status, 409);
    hub.stop().await;
}

#[tokio::test]
async fn names_the_audit_trail_uses_for_others_than_consumers_are_refused() {
    let (_mock, hub) = hub_with(|o| o).await;
    // A consumer named SIGHUP would write audit lines that read as reloads by signal.
    for name in ["SIGHUP", "sighup", "SigHup"] {
        let (status, answer) = put_consumer(
            &hub,
            ADMIN_KEY,
            name,
            consumer_body(SHOP_KEY, &[FIXED], &["read"]),
        )
        .await;
        assert_eq!(status, 400, "{name}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_name", "{name}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("reserved") && message.contains("SIGHUP"),
            "{name}: {message}"
        );
    }
    assert_eq!(status_with(&hub, SHOP_KEY, &token_path(FIXED)).await, 401);
    // A name that merely contains it is a name like any other.
    let (status, _) = put_consumer(
        &hub,
        ADMIN_KEY,
        "SIGHUP-relay",
        consumer_body(SHOP_KEY, &[FIXED], &["read"]),
    )
    .await;
    assert_eq!(status, 201);
    hub.stop().await;
}

#[tokio::test]
async fn a_body_is_refused_with_the_words_the_file_is_refused_with() {
    let (_mock, hub) = hub_with(|o| o).await;
    let hash = consumer_key_sha256(SHOP_KEY);
    let cases: &[(&[&str], &[&str])] = &[
        (&[FIXED, "wx 2"], &["read"]),
        (&[FIXED, "a/b/c"], &["read"]),
        (&[FIXED, FIXED], &["read"]),
        (&["*", "wxc1/*", "wxc1/*"], &["read"]),
        (&[FIXED], &[]),
        (&[FIXED], &["read", "write"]),
        (&[FIXED], &["call", "read", "call"]),
    ];
    for (apps, scopes) in cases {
        let (status, answer) = put_consumer(
            &hub,
            ADMIN_KEY,
            "shop",
            json!({ "key_sha256": hash, "apps": apps, "scopes": scopes }),
        )
        .await;
        assert_eq!(status, 400, "{apps:?} {scopes:?}: {answer}");
        let said = answer["error"]["message"].as_str().unwrap_or_default();

        // The same consumer in a file of the hub's accounts.
        let quoted = |items: &[&str]| {
            items
                .iter()
                .map(|i| format!("{i:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let text = format!(
            "[[apps]]\nappid = \"{FIXED}\"\nsecret = \"s\"\n\n[[consumers]]\nname = \"shop\"\n\
             key_sha256 = \"{hash}\"\napps = [{}]\nscopes = [{}]\n",
            quoted(apps),
            quoted(scopes),
        );
        let refused = wxhub::configuration::Settings::parse(
            &text,
            std::path::Path::new("wxhub.toml"),
            &|_| None,
        )
        .expect_err("the file refuses it too");
        let field = refused
            .key()
            .and_then(|k| k.strip_prefix("consumers[0]."))
            .unwrap_or_else(|| panic!("{refused}"));
        assert_eq!(
            said,
            format!("{field}: {}", refused.message()),
            "{apps:?} {scopes:?}"
        );
    }
    hub.stop().await;
}
