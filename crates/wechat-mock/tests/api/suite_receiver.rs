//! Helpers for the Work WeChat suite tests: two suites and a provider, a command-callback
//! receiver on port 0 that checks and opens pushes with `wechat-crypto` as a hub would (and
//! answers URL verifications), and calls of the `service/*` endpoints.

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
use crate::platform::elements;

pub const SUITE: &str = "wws0000000000000001";
pub const SUITE_SECRET: &str = "suiteSecretA";
pub const SUITE_TOKEN: &str = "suiteTokenA";
pub const SUITE_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
pub const SUITE_B: &str = "wws0000000000000002";
pub const SUITE_B_SECRET: &str = "suiteSecretB";
pub const SUITE_B_TOKEN: &str = "suiteTokenB";
pub const SUITE_B_KEY: &str = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut";
pub const PROVIDER: &str = "wwp0000000000000001";
pub const PROVIDER_SECRET: &str = "providerSecret";

/// The usual accounts plus two suites pushing to `receiver` (tickets every 600 s: only the first
/// at start, and on `/mock/suites/{suite_id}/push_ticket`) and a provider.
pub fn suite_config(lifetime_secs: u64, grace_secs: u64, receiver: &SuiteReceiver) -> MockConfig {
    MockConfig {
        suite_push_url: Some(receiver.push_url()),
        ..config(lifetime_secs, grace_secs)
    }
    .with_suite(SUITE, SUITE_SECRET, SUITE_TOKEN, SUITE_KEY)
    .with_suite(SUITE_B, SUITE_B_SECRET, SUITE_B_TOKEN, SUITE_B_KEY)
    .with_provider(PROVIDER, PROVIDER_SECRET)
}

/// One push as the receiver opened it.
#[derive(Clone, Debug)]
pub struct SuitePush {
    /// The suite named by the URL path.
    pub suite: String,
    /// The query parameters' names, sorted.
    pub query: Vec<String>,
    /// The envelope's elements (`ToUserName`, `Encrypt`, `AgentID`).
    pub envelope: BTreeMap<String, String>,
    /// The decrypted message's elements.
    pub fields: BTreeMap<String, String>,
}

impl SuitePush {
    pub fn get(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing in {self:?}"))
    }
}

struct ReceiverState {
    /// By suite id; each opens messages sealed for that suite id only.
    crypts: HashMap<String, MessageCrypt>,
    /// The status and body every push is answered with.
    answer: Mutex<(StatusCode, String)>,
    /// What URL verifications are answered with instead of the decrypted echostr.
    echo: Mutex<Option<String>>,
    /// Where opened pushes (or why one was rejected) go.
    pushes: mpsc::UnboundedSender<Result<SuitePush, String>>,
}

type Inbox = (
    mpsc::UnboundedReceiver<Result<SuitePush, String>>,
    VecDeque<SuitePush>,
);

/// A hub's suite callback endpoint in miniature: `POST /suites/{suite_id}/events` checks
/// `msg_signature`, opens the envelope and answers `success` (or what the test set); `GET`
/// answers a URL verification with the decrypted echostr.
pub struct SuiteReceiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
    pushes: tokio::sync::Mutex<Inbox>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SuiteReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn crypt(token: &str, key: &str, suite_id: &str) -> MessageCrypt {
    MessageCrypt::new(token, EncodingAesKey::parse(key).unwrap(), suite_id)
}

impl SuiteReceiver {
    pub async fn start() -> SuiteReceiver {
        let crypts = HashMap::from([
            (SUITE.to_owned(), crypt(SUITE_TOKEN, SUITE_KEY, SUITE)),
            (
                SUITE_B.to_owned(),
                crypt(SUITE_B_TOKEN, SUITE_B_KEY, SUITE_B),
            ),
        ]);
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(ReceiverState {
            crypts,
            answer: Mutex::new((StatusCode::OK, "success".into())),
            echo: Mutex::new(None),
            pushes: tx,
        });
        let app = Router::new()
            .route("/suites/{suite_id}/events", post(receive).get(verify))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SuiteReceiver {
            addr,
            state,
            pushes: tokio::sync::Mutex::new((rx, VecDeque::new())),
            task,
        }
    }

    /// The push URL to configure, with the `{suite_id}` placeholder.
    pub fn push_url(&self) -> String {
        format!("http://{}/suites/{{suite_id}}/events", self.addr)
    }

    /// Makes the receiver answer pushes with `status` and `body` from now on.
    pub fn answer_with(&self, status: u16, body: &str) {
        *self.state.answer.lock().unwrap() = (StatusCode::from_u16(status).unwrap(), body.into());
    }

    /// Makes the receiver answer URL verifications with `body` (`None`: the decrypted echostr).
    pub fn echo_with(&self, body: Option<&str>) {
        *self.state.echo.lock().unwrap() = body.map(str::to_owned);
    }

    /// The oldest push of `info_type` to `suite` not yet taken, waiting up to 10 s; pushes of
    /// other kinds are kept for later calls.
    pub async fn next(&self, suite: &str, info_type: &str) -> SuitePush {
        let mut guard = self.pushes.lock().await;
        let (pushes, kept) = &mut *guard;
        let wanted = |p: &SuitePush| p.suite == suite && p.get("InfoType") == info_type;
        if let Some(i) = kept.iter().position(wanted) {
            return kept.remove(i).expect("the index was just found");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let push = tokio::time::timeout_at(deadline, pushes.recv())
                .await
                .unwrap_or_else(|_| panic!("no {info_type} push to {suite} within 10 s"))
                .expect("the receiver runs");
            let push = push.unwrap_or_else(|e| panic!("a push the receiver rejected: {e}"));
            if wanted(&push) {
                return push;
            }
            kept.push_back(push);
        }
    }

    /// The `SuiteTicket` of the next ticket push to `suite`.
    pub async fn next_ticket(&self, suite: &str) -> String {
        self.next(suite, "suite_ticket")
            .await
            .get("SuiteTicket")
            .to_owned()
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    Path(suite_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: String,
) -> (StatusCode, String) {
    let opened = open(&state, &suite_id, &query, &body);
    let _ = state.pushes.send(opened);
    state.answer.lock().unwrap().clone()
}

/// Checks and opens one push as Work WeChat documents it.
fn open(
    state: &ReceiverState,
    suite_id: &str,
    query: &HashMap<String, String>,
    body: &str,
) -> Result<SuitePush, String> {
    let crypt = state
        .crypts
        .get(suite_id)
        .ok_or(format!("unknown suite {suite_id}"))?;
    let param = |k: &str| {
        query
            .get(k)
            .map(String::as_str)
            .ok_or(format!("{k} missing"))
    };
    let envelope = elements(body);
    let encrypt = envelope.get("Encrypt").ok_or("no Encrypt")?;
    // The receive id check is wechat-crypto's: the plaintext must end with the suite id.
    let xml = crypt
        .decrypt_verified(
            param("msg_signature")?,
            param("timestamp")?,
            param("nonce")?,
            encrypt,
        )
        .map_err(|e| format!("msg_signature or decryption: {e}"))?;
    let fields = elements(&xml);
    if fields.get("SuiteId").map(String::as_str) != Some(suite_id) {
        return Err(format!("message SuiteId is not {suite_id}: {xml}"));
    }
    let mut names: Vec<String> = query.keys().cloned().collect();
    names.sort();
    Ok(SuitePush {
        suite: suite_id.to_owned(),
        query: names,
        envelope,
        fields,
    })
}

/// Answers a URL verification: checks `msg_signature` over `echostr` and answers its plaintext.
async fn verify(
    State(state): State<Arc<ReceiverState>>,
    Path(suite_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> (StatusCode, String) {
    let Some(crypt) = state.crypts.get(&suite_id) else {
        return (StatusCode::NOT_FOUND, String::new());
    };
    let param = |k: &str| query.get(k).map(String::as_str).unwrap_or_default();
    let opened = crypt.decrypt_verified(
        param("msg_signature"),
        param("timestamp"),
        param("nonce"),
        param("echostr"),
    );
    match (opened, state.echo.lock().unwrap().clone()) {
        (Ok(_), Some(other)) => (StatusCode::OK, other),
        (Ok(echo), None) => (StatusCode::OK, echo),
        (Err(e), _) => (StatusCode::FORBIDDEN, e.to_string()),
    }
}

impl Wx {
    /// `get_suite_token`.
    pub async fn suite_token(&self, suite_id: &str, secret: &str, ticket: &str) -> Resp {
        self.post_json(
            "/cgi-bin/service/get_suite_token",
            &json!({"suite_id": suite_id, "suite_secret": secret, "suite_ticket": ticket}),
        )
        .await
    }

    /// A suite token of `suite` (one of the two configured), bought with its next pushed ticket.
    pub async fn fresh_suite_token(&self, receiver: &SuiteReceiver, suite: &str) -> String {
        let secret = if suite == SUITE {
            SUITE_SECRET
        } else {
            SUITE_B_SECRET
        };
        let ticket = receiver.next_ticket(suite).await;
        let r = self.suite_token(suite, secret, &ticket).await;
        assert_wechat_wire(&r);
        assert!(r.json.get("errcode").is_none(), "{r:?}");
        r.str("suite_access_token")
    }

    /// A `service/*` endpoint (`get_permanent_code`, …) with `?suite_access_token=`.
    pub async fn service(&self, api: &str, suite_token: &str, body: Value) -> Resp {
        self.post_json(
            &format!("/cgi-bin/service/{api}?suite_access_token={suite_token}"),
            &body,
        )
        .await
    }

    /// `get_corp_token` for a corp and its permanent code.
    pub async fn suite_corp_token(&self, suite_token: &str, corpid: &str, code: &str) -> Resp {
        self.service(
            "get_corp_token",
            suite_token,
            json!({"auth_corpid": corpid, "permanent_code": code}),
        )
        .await
    }

    /// `get_provider_token`.
    pub async fn provider_token(&self, corpid: &str, secret: &str) -> Resp {
        self.post_json(
            "/cgi-bin/service/get_provider_token",
            &json!({"corpid": corpid, "provider_secret": secret}),
        )
        .await
    }
}
