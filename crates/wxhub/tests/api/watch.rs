//! `GET /v1/watch`: the initial state, then every new generation within milliseconds.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::helpers::*;

const APP: &str = "wx00000000000000d1";
const OTHER: &str = "wx00000000000000d2";

/// An open watch stream, read event by event.
pub(crate) struct Stream {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    pending: String,
}

impl Stream {
    pub(crate) async fn open(hub: &TestHub, key: &str, last_event_id: Option<&str>) -> Stream {
        let mut request = hub.client.get(hub.url("/v1/watch")).bearer_auth(key);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("watch answers");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Stream {
            body: response.bytes_stream().boxed(),
            pending: String::new(),
        }
    }

    /// The next `credential` event: (id, data).
    pub(crate) async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut id = String::new();
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).expect("JSON data"));
                    }
                }
                if let Some(data) = data {
                    return (id, data);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), self.body.next())
                .await
                .expect("an event within 5 s")
                .expect("the stream stays open")
                .expect("readable");
            self.pending.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test]
async fn a_refresh_reaches_a_watcher_within_100_ms_and_grants_are_honoured() {
    let apps = [TestApp::legacy(APP), TestApp::legacy(OTHER)];
    let (_mock, hub) = start_ready(&apps).await;
    let token = hub.token(APP).await;

    // The reader is granted APP only, and sees values.
    let mut reader = Stream::open(&hub, READER_KEY, None).await;
    let (id, initial) = reader.next().await;
    assert_eq!(initial["key"], format!("access_token/{APP}"));
    assert_eq!(initial["generation"], token.generation);
    assert_eq!(initial["value"], token.access_token.as_str());
    assert!(initial["expires_in"].as_u64().unwrap() > 0);
    // An invalidate-only consumer sees every app, without values.
    let mut reporter = Stream::open(&hub, REPORTER_KEY, None).await;
    let (_, first) = reporter.next().await;
    let (_, second) = reporter.next().await;
    assert!(first.get("value").is_none() && second.get("value").is_none());

    let started = Instant::now();
    let refreshed = hub
        .post(
            &format!("/v1/apps/{APP}/refresh?force=true"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(refreshed.status(), 200);
    let (next_id, event) = reader.next().await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(100), "{elapsed:?}");
    assert_eq!(event["generation"], token.generation + 1);
    assert_eq!(event["value"], hub.token(APP).await.access_token.as_str());
    assert!(next_id.parse::<i64>().unwrap() >= id.parse::<i64>().unwrap());

    // A refresh of an app the reader is not granted never reaches it; the next event is APP's.
    hub.post(
        &format!("/v1/apps/{OTHER}/refresh?force=true"),
        serde_json::json!({}),
    )
    .await;
    hub.post(
        &format!("/v1/apps/{APP}/refresh?force=true"),
        serde_json::json!({}),
    )
    .await;
    let (_, event) = reader.next().await;
    assert_eq!(event["key"], format!("access_token/{APP}"));
    assert_eq!(event["generation"], token.generation + 2);

    // Resuming far in the past repeats the state; a watcher missing the key is 401.
    let mut resumed = Stream::open(&hub, READER_KEY, Some("0")).await;
    let (_, again) = resumed.next().await;
    assert_eq!(again["generation"], token.generation + 2);
    let anonymous = hub.client.get(hub.url("/v1/watch")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    drop((reader, reporter, resumed));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_initial_state_reaches_a_reader_and_a_stalled_reader_slows_nobody() {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use tokio::io::AsyncWriteExt;

    // More credentials than a connection buffers (64 events), renewed every second or so.
    let apps: Vec<TestApp> = (0..120)
        .map(|i| TestApp::legacy(&format!("wx000000000000w{i:03}")))
        .collect();
    let (mock, hub) =
        start_ready_living(&apps, Duration::from_secs(3), Duration::from_secs(2)).await;

    // A reader that keeps up, recording the highest generation it saw of each key.
    let seen: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut reader = Stream::open(&hub, ADMIN_KEY, None).await;
    let reading = tokio::spawn({
        let seen = seen.clone();
        async move {
            loop {
                let (_, event) = reader.next().await;
                let key = event["key"].as_str().expect("key").to_string();
                let generation = event["generation"].as_u64().expect("generation");
                let mut seen = seen.lock().unwrap();
                let highest = seen.entry(key).or_insert(0);
                *highest = (*highest).max(generation);
            }
        }
    });
    // It gets the whole initial state, however large.
    wait_until(
        Duration::from_secs(5),
        "the initial state of every app",
        || async { seen.lock().unwrap().len() == apps.len() },
    )
    .await;

    // A reader that never reads, with a small receive window so that its socket fills soon.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let address: std::net::SocketAddr = hub
        .address
        .trim_start_matches("http://")
        .parse()
        .expect("hub address");
    let mut stalled = socket.connect(address).await.expect("connects");
    stalled
        .write_all(
            format!(
                "GET /v1/watch HTTP/1.1\r\nhost: hub\r\nauthorization: Bearer {ADMIN_KEY}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("request sent");

    // Several hundred new generations (120 apps renewed every 1.5 s or so)…
    let issued = || stats(&mock).total_calls("/cgi-bin/token");
    let start = issued();
    wait_until(
        Duration::from_secs(20),
        "400 more tokens are issued",
        || async { issued() >= start + 400 },
    )
    .await;

    // …reach the reader that keeps up: it catches up with every app's current generation.
    for app in &apps {
        let key = format!("access_token/{}", app.appid);
        let current = hub.token(&app.appid).await.generation;
        wait_until(
            Duration::from_secs(5),
            "the reader sees the current generation",
            || async {
                seen.lock()
                    .unwrap()
                    .get(&key)
                    .is_some_and(|g| *g >= current)
            },
        )
        .await;
    }
    assert!(!reading.is_finished(), "the reader's stream ended");
    reading.abort();
    // The stalled connection is dropped once its buffer of 64 events is full, which on loopback
    // comes only after the kernel's socket buffers (megabytes) have filled: the unit test
    // `a_reader_that_stops_reading_is_dropped_and_others_see_every_generation` (api/watch.rs)
    // shows that step on a stream nobody polls.
    drop(stalled);
}

/// The rest of a stream, until the hub ends it (within 5 s).
async fn until_the_end(stream: &mut Stream) -> String {
    let mut rest = std::mem::take(&mut stream.pending);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.body.next()).await {
            Ok(Some(Ok(chunk))) => rest.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None | Some(Err(_))) => return rest,
            Err(_) => panic!("the stream is still open after 5 s: {rest}"),
        }
    }
}

/// A configuration file for a hub on `mock` with the apps [`APP`] and [`OTHER`] and these
/// consumers: (name, key, granted apps, scopes).
fn file_with_consumers(
    mock: &wechat_mock::MockServer,
    consumers: &[(&str, &str, &[&str], &[&str])],
) -> String {
    let quoted = |items: &[&str]| {
        items
            .iter()
            .map(|item| format!("\"{item}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[store]\nkind = \"memory\"\n\n[wechat]\n\
         api_base = \"{0}\"\nwork_api_base = \"{0}\"\ntimeout = \"2s\"\n\n[refresh]\n\
         min_refresh_interval = \"1ms\"\n",
        mock.base_url()
    );
    for appid in [APP, OTHER] {
        text.push_str(&format!(
            "\n[[apps]]\nappid = \"{appid}\"\nsecret = \"{}\"\nmode = \"legacy\"\n",
            secret_of(appid)
        ));
    }
    for (name, key, apps, scopes) in consumers {
        text.push_str(&format!(
            "\n[[consumers]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\napps = [{}]\nscopes = [{}]\n",
            wxhub::configuration::consumer_key_sha256(key),
            quoted(apps),
            quoted(scopes)
        ));
    }
    text
}

#[tokio::test]
async fn open_streams_follow_their_consumer_by_name_through_reloads() {
    const ALPHA: &str = "watch-alpha-key-0123456789";
    const BETA: &str = "watch-beta-key-0123456789";
    const BETA_NEW: &str = "watch-beta-key-replaced-0123";
    const GAMMA: &str = "watch-gamma-key-0123456789";
    let admin: (&str, &str, &[&str], &[&str]) = ("admin", ADMIN_KEY, &["*"], &["read", "admin"]);
    let apps = [TestApp::legacy(APP), TestApp::legacy(OTHER)];
    let mock = minute_mock(&apps).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wxhub.toml");
    let write = |consumers: &[(&str, &str, &[&str], &[&str])]| {
        std::fs::write(&path, file_with_consumers(&mock, consumers)).unwrap()
    };
    write(&[
        admin,
        ("alpha", ALPHA, &[APP], &["read"]),
        ("beta", BETA, &[OTHER], &["read"]),
        ("gamma", GAMMA, &[APP], &["read"]),
    ]);
    let app = wxhub::startup::Application::build_from_file(&path)
        .await
        .expect("hub builds");
    let hub = TestHub::remote(format!("http://{}", app.address()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    hub.wait_ready().await;
    let reload = || async {
        let reloaded = hub
            .send(reqwest::Method::POST, "/v1/admin/reload", None)
            .await;
        assert_eq!(reloaded.status(), 200);
    };
    let refresh = |appid: &'static str| {
        let hub = &hub;
        async move {
            let refreshed = hub
                .post(
                    &format!("/v1/apps/{appid}/refresh?force=true"),
                    serde_json::json!({}),
                )
                .await;
            assert_eq!(refreshed.status(), 200);
        }
    };

    let mut beta = Stream::open(&hub, BETA, None).await;
    assert_eq!(beta.next().await.1["key"], format!("access_token/{OTHER}"));
    let mut gamma = Stream::open(&hub, GAMMA, None).await;
    let (_, initial) = gamma.next().await;
    assert_eq!(initial["key"], format!("access_token/{APP}"));
    assert!(initial.get("value").is_some());

    // alpha goes (every consumer after it moves up the list) and gamma keeps only `invalidate`.
    write(&[
        admin,
        ("beta", BETA, &[OTHER], &["read"]),
        ("gamma", GAMMA, &[APP], &["invalidate"]),
    ]);
    reload().await;
    refresh(APP).await;
    refresh(OTHER).await;
    // beta was never granted APP: its next event is OTHER's.
    let (_, event) = beta.next().await;
    assert_eq!(event["key"], format!("access_token/{OTHER}"), "{event}");
    // gamma still sees APP, without its value now.
    let (_, event) = gamma.next().await;
    assert_eq!(event["key"], format!("access_token/{APP}"));
    assert!(event.get("value").is_none(), "{event}");

    // beta's key is replaced and gamma is removed: both streams end at their next event.
    write(&[admin, ("beta", BETA_NEW, &[OTHER], &["read"])]);
    reload().await;
    refresh(APP).await;
    refresh(OTHER).await;
    for (name, stream) in [("beta", &mut beta), ("gamma", &mut gamma)] {
        let rest = until_the_end(stream).await;
        assert!(rest.contains("event: end"), "{name}: {rest}");
        assert!(!rest.contains("\"value\""), "{name}: {rest}");
    }
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn one_consumer_cannot_take_every_watch_slot() {
    let apps = [TestApp::legacy(APP)];
    let mock = minute_mock(&apps).await;
    let mut options = HubOptions::new(&apps);
    options.server.max_watchers_per_consumer = 3;
    let hub = spawn_app(&mock, options).await;
    hub.wait_ready().await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = Stream::open(&hub, READER_KEY, None).await;
        stream.next().await;
        held.push(stream);
    }
    let refused = hub
        .client
        .get(hub.url("/v1/watch"))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "too_many_watchers");
    // Everyone else still gets a stream.
    let mut admin = Stream::open(&hub, ADMIN_KEY, None).await;
    admin.next().await;
    // A closed stream gives its slot back.
    drop(held.pop());
    wait_until(Duration::from_secs(5), "a freed slot is reused", || async {
        hub.client
            .get(hub.url("/v1/watch"))
            .bearer_auth(READER_KEY)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    drop((held, admin));
    hub.stop().await;
}

/// A ticket WeChat pushes (a suite's `suite_ticket`, a platform's `component_verify_ticket`) is
/// the hub's input, read at no `/v1` route: a watcher granted everything never sees it.
#[tokio::test]
async fn a_pushed_ticket_never_reaches_a_watcher() {
    use crate::platform_support::Relay;
    use crate::suites_support::*;

    let relay = Relay::start().await;
    let mock = suite_mock(&relay, Duration::from_secs(60), Duration::from_secs(600)).await;
    let hub = spawn_app(&mock, suite_options(&[])).await;
    relay.point_at(&[&hub]);
    assert!(push_ticket(&mock).await);
    wait_for_suite_token(&hub).await;

    let mut stream = Stream::open(&hub, ADMIN_KEY, None).await;
    let suite_token = format!("suite_token/{SUITE}");
    let mut seen = vec![stream.next().await.1];
    while !seen
        .iter()
        .any(|event| event["key"] == suite_token.as_str())
    {
        seen.push(stream.next().await.1);
    }
    // A new ticket is pushed, then a corp installs: its token's event comes after the ticket's
    // would have.
    assert!(push_ticket(&mock).await);
    let corpid = install(&mock).await;
    let corp_token = format!("auth_corp_token/{SUITE}/{corpid}");
    while !seen.iter().any(|event| event["key"] == corp_token.as_str()) {
        seen.push(stream.next().await.1);
    }
    for event in &seen {
        let key = event["key"].as_str().unwrap_or_default();
        assert!(!key.starts_with("suite_ticket/"), "{event}");
        assert!(!key.starts_with("permanent_code/"), "{event}");
    }
}
