//! What the platform tests share: the test platform's settings, a mock that pushes to the hub
//! through a relay (the mock must know where to push before the hub, which needs the mock's
//! address, exists), and the hub options with the platform configured.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::any;
use serde_json::{json, Value};
use wechat_mock::{MockConfig, MockServer};
use wxhub::configuration::{ComponentSettings, RefreshOverrides, Secret};
use wxhub::token::TicketKind;

use crate::helpers::*;

pub const COMPONENT: &str = "wxc0000000000000001";
pub const COMPONENT_SECRET: &str = "componentSecretA";
pub const COMPONENT_TOKEN: &str = "pamtest";
pub const COMPONENT_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
pub const OTHER_KEY: &str = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut";

/// Forwards each of the mock's requests (its pushes, and Work WeChat's `GET` check of a callback
/// URL) to every hub it is pointed at, in turn; answers what the first one answered (or 503 while
/// it points nowhere), and keeps every hub's answer for the test to read.
#[derive(Clone, Default)]
pub struct Relay {
    targets: Arc<Mutex<Vec<String>>>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    address: String,
}

/// One request the relay handed to one hub, and the hub's answer.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// `GET` or `POST`.
    pub method: Method,
    /// The path the mock called (the push URL's path, with the account's id in it).
    pub path: String,
    /// The hub's HTTP status (502 when it could not be reached).
    pub status: u16,
    /// The hub's answer (`success` for an acknowledged push).
    pub body: String,
}

/// What the relay's handler shares.
#[derive(Clone)]
struct RelayState {
    targets: Arc<Mutex<Vec<String>>>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
}

impl Relay {
    pub async fn start() -> Relay {
        let targets: Arc<Mutex<Vec<String>>> = Arc::default();
        let deliveries: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/{*path}", any(forward))
            .with_state(RelayState {
                targets: targets.clone(),
                deliveries: deliveries.clone(),
            });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Relay {
            targets,
            deliveries,
            address,
        }
    }

    /// The push URL the mock is given.
    pub fn push_url(&self) -> String {
        format!(
            "{}/wechat/components/{{component_appid}}/events",
            self.address
        )
    }

    /// The command callback URL the mock pushes suites' events to.
    pub fn suite_push_url(&self) -> String {
        format!("{}/wechat/suites/{{suite_id}}/events", self.address)
    }

    /// Points the relay at raw addresses (`http://IP:PORT`).
    pub fn targets(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.targets.lock().unwrap()
    }

    pub fn point_at(&self, hubs: &[&TestHub]) {
        *self.targets.lock().unwrap() = hubs.iter().map(|h| h.address.clone()).collect();
    }

    /// Every hub answer so far, in the order the requests were handed over.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }
}

async fn forward(
    State(relay): State<RelayState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> axum::response::Response {
    let targets = relay.targets.lock().unwrap().clone();
    let client = reqwest::Client::new();
    let mut answers = Vec::new();
    for target in &targets {
        let sent = client
            .request(method.clone(), format!("{target}{uri}"))
            .body(body.clone())
            .send()
            .await;
        let (status, text) = match sent {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (502, e.to_string()),
        };
        relay.deliveries.lock().unwrap().push(Delivery {
            method: method.clone(),
            path: uri.path().to_string(),
            status,
            body: text.clone(),
        });
        answers.push((status, text));
    }
    match answers.into_iter().next() {
        Some((status, text)) => (StatusCode::from_u16(status).unwrap(), text).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no hub yet").into_response(),
    }
}

pub fn component_settings(tickets: &[TicketKind]) -> ComponentSettings {
    ComponentSettings {
        component_appid: COMPONENT.into(),
        secret: Secret::new(COMPONENT_SECRET.into()),
        token: Secret::new(COMPONENT_TOKEN.into()),
        encoding_aes_key: Secret::new(COMPONENT_KEY.into()),
        previous_encoding_aes_key: None,
        authorizer_tickets: tickets.to_vec(),
        refresh: RefreshOverrides::default(),
    }
}

/// A mock platform pushing every `push_every` through `relay`, tokens living `lifetime`.
pub async fn platform_mock(
    relay: &Relay,
    lifetime: Duration,
    push_every: Duration,
    tune: impl FnOnce(MockConfig) -> MockConfig,
) -> Arc<MockServer> {
    let push_url = relay.push_url();
    spawn_mock(lifetime, Duration::from_secs(2), &[], &[], move |c| {
        tune(
            MockConfig {
                push_url: Some(push_url),
                push_interval: push_every,
                ..c
            }
            .with_component(
                COMPONENT,
                COMPONENT_SECRET,
                COMPONENT_TOKEN,
                COMPONENT_KEY,
            ),
        )
    })
    .await
}

/// A mock platform whose authorizer refresh tokens rotate at every renewal (only the latest one
/// stored works), tokens living 6 s, pushing through `relay`.
pub async fn rotating_platform_mock(relay: &Relay) -> Arc<MockServer> {
    platform_mock(
        relay,
        Duration::from_secs(6),
        Duration::from_secs(600),
        |c| MockConfig {
            rotate_refresh_tokens: true,
            ..c
        },
    )
    .await
}

pub fn platform_options(tickets: &[TicketKind]) -> HubOptions {
    let mut options = HubOptions::new(&[]);
    options.components = vec![component_settings(tickets)];
    options
}

pub async fn wait_for_component_token(hub: &TestHub) {
    wait_until(
        Duration::from_secs(15),
        "the component token is served",
        || async {
            hub.get(&format!("/v1/components/{COMPONENT}/access_token"))
                .await
                .status()
                == 200
        },
    )
    .await;
}

pub fn authorizer_path(authorizer: &str, rest: &str) -> String {
    format!("/v1/components/{COMPONENT}/authorizers/{authorizer}/{rest}")
}

/// `POST /mock/{action}` on the mock (an account owner acting); the mock answers once its push
/// was answered.
pub async fn owner(mock: &MockServer, action: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/mock/{action}", mock.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "/mock/{action}");
    response.json().await.unwrap()
}

pub async fn authorize(mock: &MockServer) -> String {
    let answer = owner(mock, "authorize", json!({ "component_appid": COMPONENT })).await;
    assert_eq!(answer["push"]["acknowledged"], true, "{answer}");
    answer["authorizer_appid"].as_str().unwrap().to_string()
}

/// An account authorizes the platform through an authorization link whose `authorized` push
/// does not reach the hub (the relay points nowhere meanwhile, then at `hubs` again): only the
/// code the redirect carries registers it. Returns the authorizer appid and that code.
pub async fn authorize_unpushed(
    mock: &MockServer,
    relay: &Relay,
    hubs: &[&TestHub],
    pre_auth_code: &str,
) -> (String, String) {
    relay.point_at(&[]);
    let granted = owner(
        mock,
        "authorize",
        json!({ "component_appid": COMPONENT, "pre_auth_code": pre_auth_code }),
    )
    .await;
    relay.point_at(hubs);
    assert_eq!(granted["push"]["acknowledged"], false, "{granted}");
    (
        granted["authorizer_appid"].as_str().unwrap().to_string(),
        granted["authorization_code"].as_str().unwrap().to_string(),
    )
}

/// WeChat's current refresh token of `authorizer`, as `api_get_authorizer_list` shows it to the
/// holder of a component token (here the hub's).
pub async fn wechats_refresh_token(
    mock: &MockServer,
    component_token: &str,
    authorizer: &str,
) -> String {
    let list: Value = reqwest::Client::new()
        .post(format!(
            "{}/cgi-bin/component/api_get_authorizer_list?component_access_token={component_token}",
            mock.base_url()
        ))
        .json(&json!({ "component_appid": COMPONENT, "offset": 0, "count": 500 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["list"]
        .as_array()
        .and_then(|list| list.iter().find(|a| a["authorizer_appid"] == authorizer))
        .and_then(|a| a["refresh_token"].as_str())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| panic!("{authorizer} is listed with a refresh token: {list}"))
        .to_string()
}

/// Kills the authorizer token `old` behind the hub's back: another party fetches a new one
/// straight from WeChat (`api_authorizer_token` with WeChat's refresh token, read from the list),
/// and this waits until WeChat refuses `old` (after its overlap).
pub async fn authorizer_token_killed_behind_the_hubs_back(
    mock: &MockServer,
    component_token: &str,
    authorizer: &str,
    old: &str,
) {
    let refresh = wechats_refresh_token(mock, component_token, authorizer).await;
    let answer: Value = reqwest::Client::new()
        .post(format!(
            "{}/cgi-bin/component/api_authorizer_token?component_access_token={component_token}",
            mock.base_url()
        ))
        .json(&json!({
            "component_appid": COMPONENT,
            "authorizer_appid": authorizer,
            "authorizer_refresh_token": refresh,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["authorizer_access_token"].is_string(), "{answer}");
    let client = reqwest::Client::new();
    wait_until(Duration::from_secs(10), "the old token dies", || async {
        business_call(&client, mock, old).await != 0
    })
    .await;
}
