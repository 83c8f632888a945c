//! Helpers for the third-party platform tests: two platforms, a push receiver on port 0 that
//! checks and opens pushes with `wechat-crypto` as a hub would, and calls of the component
//! endpoints.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use wechat_crypto::{EncodingAesKey, MessageCrypt};
use wechat_mock::MockConfig;

use crate::common::*;

pub const COMPONENT: &str = "wxc0000000000000001";
pub const COMPONENT_SECRET: &str = "componentSecretA";
pub const COMPONENT_TOKEN: &str = "pamtest";
pub const COMPONENT_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
pub const COMPONENT_B: &str = "wxc0000000000000002";
pub const COMPONENT_B_SECRET: &str = "componentSecretB";
pub const COMPONENT_B_TOKEN: &str = "tokenB";
pub const COMPONENT_B_KEY: &str = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut";

/// The usual accounts plus two platforms pushing to `receiver` (verify tickets every 600 s: only
/// the first at start, and on `api_start_push_ticket`).
pub fn platform_config(lifetime_secs: u64, grace_secs: u64, receiver: &Receiver) -> MockConfig {
    MockConfig {
        push_url: Some(receiver.push_url()),
        ..config(lifetime_secs, grace_secs)
    }
    .with_component(COMPONENT, COMPONENT_SECRET, COMPONENT_TOKEN, COMPONENT_KEY)
    .with_component(
        COMPONENT_B,
        COMPONENT_B_SECRET,
        COMPONENT_B_TOKEN,
        COMPONENT_B_KEY,
    )
}

/// One push as the receiver opened it.
#[derive(Clone, Debug)]
pub struct Push {
    /// The platform named by the URL path.
    pub component: String,
    /// The decrypted message's elements.
    pub fields: BTreeMap<String, String>,
}

impl Push {
    pub fn get(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing in {self:?}"))
    }
}

/// What the receiver answers, and where opened pushes go.
struct ReceiverState {
    /// By platform appid.
    crypts: HashMap<String, MessageCrypt>,
    /// The status and body every push is answered with.
    answer: Mutex<(StatusCode, String)>,
    /// Where opened pushes (or why one was rejected) go.
    pushes: mpsc::UnboundedSender<Result<Push, String>>,
}

/// Opened pushes (or why one was rejected) as they arrive, and those a test has not asked for
/// yet.
type Inbox = (
    mpsc::UnboundedReceiver<Result<Push, String>>,
    VecDeque<Push>,
);

/// A hub's event endpoint in miniature: checks `signature` and `msg_signature`, opens the
/// envelope, checks the appids and answers `success` (or what the test set).
pub struct Receiver {
    /// Where it listens.
    addr: SocketAddr,
    /// Shared with the request handler.
    state: Arc<ReceiverState>,
    /// Opened pushes, and those a test has not asked for yet.
    pushes: tokio::sync::Mutex<Inbox>,
    /// The server, stopped when the receiver is dropped.
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn crypt(token: &str, key: &str, appid: &str) -> MessageCrypt {
    MessageCrypt::new(token, EncodingAesKey::parse(key).unwrap(), appid)
}

impl Receiver {
    pub async fn start() -> Receiver {
        let crypts = HashMap::from([
            (
                COMPONENT.to_owned(),
                crypt(COMPONENT_TOKEN, COMPONENT_KEY, COMPONENT),
            ),
            (
                COMPONENT_B.to_owned(),
                crypt(COMPONENT_B_TOKEN, COMPONENT_B_KEY, COMPONENT_B),
            ),
        ]);
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(ReceiverState {
            crypts,
            answer: Mutex::new((StatusCode::OK, "success".into())),
            pushes: tx,
        });
        let app = Router::new()
            .route("/events/{appid}", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            state,
            pushes: tokio::sync::Mutex::new((rx, VecDeque::new())),
            task,
        }
    }

    /// The push URL to configure, with the `{component_appid}` placeholder.
    pub fn push_url(&self) -> String {
        format!("http://{}/events/{{component_appid}}", self.addr)
    }

    /// Makes the receiver answer pushes with `status` and `body` from now on.
    pub fn answer_with(&self, status: u16, body: &str) {
        *self.state.answer.lock().unwrap() = (StatusCode::from_u16(status).unwrap(), body.into());
    }

    /// The oldest push of `info_type` to [`COMPONENT`] not yet taken, waiting up to 10 s.
    pub async fn next(&self, info_type: &str) -> Push {
        self.next_for(COMPONENT, info_type).await
    }

    /// The oldest push of `info_type` to `component` not yet taken, waiting up to 10 s; pushes
    /// of other kinds are kept for later calls.
    pub async fn next_for(&self, component: &str, info_type: &str) -> Push {
        let mut guard = self.pushes.lock().await;
        let (pushes, kept) = &mut *guard;
        let wanted = |p: &Push| p.component == component && p.get("InfoType") == info_type;
        if let Some(i) = kept.iter().position(wanted) {
            return kept.remove(i).expect("the index was just found");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let push = tokio::time::timeout_at(deadline, pushes.recv())
                .await
                .unwrap_or_else(|_| panic!("no {info_type} push to {component} within 10 s"))
                .expect("the receiver runs");
            let push = push.unwrap_or_else(|e| panic!("a push the receiver rejected: {e}"));
            if wanted(&push) {
                return push;
            }
            kept.push_back(push);
        }
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    Path(appid): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: String,
) -> (StatusCode, String) {
    let opened = open(&state, &appid, &query, &body);
    let _ = state.pushes.send(opened.map(|fields| Push {
        component: appid,
        fields,
    }));
    state.answer.lock().unwrap().clone()
}

/// Checks and opens one push as WeChat documents it.
fn open(
    state: &ReceiverState,
    appid: &str,
    query: &HashMap<String, String>,
    body: &str,
) -> Result<BTreeMap<String, String>, String> {
    let crypt = state
        .crypts
        .get(appid)
        .ok_or(format!("unknown platform {appid}"))?;
    let param = |k: &str| {
        query
            .get(k)
            .map(String::as_str)
            .ok_or(format!("{k} missing"))
    };
    if param("encrypt_type")? != "aes" {
        return Err("encrypt_type is not aes".into());
    }
    let (timestamp, nonce) = (param("timestamp")?, param("nonce")?);
    crypt
        .verify_signature(param("signature")?, timestamp, nonce)
        .map_err(|e| format!("signature: {e}"))?;
    let envelope = elements(body);
    if envelope.get("AppId").map(String::as_str) != Some(appid) {
        return Err(format!("envelope AppId is not {appid}: {body}"));
    }
    let encrypt = envelope.get("Encrypt").ok_or("no Encrypt")?;
    let xml = crypt
        .decrypt_verified(param("msg_signature")?, timestamp, nonce, encrypt)
        .map_err(|e| format!("msg_signature or decryption: {e}"))?;
    let fields = elements(&xml);
    if fields.get("AppId").map(String::as_str) != Some(appid) {
        return Err(format!("message AppId is not {appid}: {xml}"));
    }
    Ok(fields)
}

/// The child elements of a flat `<xml>…</xml>` document, CDATA unwrapped.
pub fn elements(xml: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let inner = xml
        .trim()
        .strip_prefix("<xml>")
        .and_then(|s| s.strip_suffix("</xml>"))
        .unwrap_or("");
    let mut rest = inner;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        let Some(end) = rest.find('>') else { break };
        let name = rest[..end].to_owned();
        rest = &rest[end + 1..];
        let close = format!("</{name}>");
        let Some(stop) = rest.find(&close) else { break };
        let raw = &rest[..stop];
        let value = raw
            .strip_prefix("<![CDATA[")
            .and_then(|v| v.strip_suffix("]]>"))
            .unwrap_or(raw);
        out.insert(name, value.to_owned());
        rest = &rest[stop + close.len()..];
    }
    out
}

impl Wx {
    /// `api_component_token` for a platform.
    pub async fn component_token(&self, appid: &str, secret: &str, ticket: &str) -> Resp {
        self.post_json(
            "/cgi-bin/component/api_component_token",
            &json!({"component_appid": appid, "component_appsecret": secret, "component_verify_ticket": ticket}),
        )
        .await
    }

    /// A fresh component token of [`COMPONENT`], with the ticket of the next push.
    pub async fn fresh_component_token(&self, receiver: &Receiver) -> String {
        let ticket = receiver.next("component_verify_ticket").await;
        let r = self
            .component_token(
                COMPONENT,
                COMPONENT_SECRET,
                ticket.get("ComponentVerifyTicket"),
            )
            .await;
        assert_ok_wechat(&r);
        r.str("component_access_token")
    }

    /// A component endpoint (`api_…`) with the token in `?component_access_token=`.
    pub async fn component(&self, api: &str, token: &str, body: Value) -> Resp {
        self.post_json(
            &format!("/cgi-bin/component/{api}?component_access_token={token}"),
            &body,
        )
        .await
    }

    /// `api_start_push_ticket` for [`COMPONENT`].
    pub async fn start_push_ticket(&self) -> Resp {
        self.post_json(
            "/cgi-bin/component/api_start_push_ticket",
            &json!({"component_appid": COMPONENT, "component_secret": COMPONENT_SECRET}),
        )
        .await
    }
}
