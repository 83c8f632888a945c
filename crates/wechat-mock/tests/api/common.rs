//! Helpers shared by the integration tests: a started mock with an HTTP client, response
//! accessors and checks of WeChat's wire shape.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use wechat_mock::{MockConfig, MockServer};

pub const APPID: &str = "wxa0000000000000001";
pub const SECRET: &str = "secretA";
pub const APPID_B: &str = "wxb0000000000000002";
pub const SECRET_B: &str = "secretB";
pub const CORPID: &str = "ww0000000000000001";
pub const AGENT_1: &str = "1000002";
pub const CORP_SECRET_1: &str = "corpSecret1";
pub const AGENT_2: &str = "1000003";
pub const CORP_SECRET_2: &str = "corpSecret2";
/// Slack added when waiting for an instant computed from a response.
pub const MARGIN: Duration = Duration::from_millis(300);

/// A config with two official accounts and two apps of one corp.
pub fn config(lifetime_secs: u64, grace_secs: u64) -> MockConfig {
    MockConfig {
        lifetime: Duration::from_secs(lifetime_secs),
        grace: Duration::from_secs(grace_secs),
        ..MockConfig::default()
    }
    .with_app(APPID, SECRET)
    .with_app(APPID_B, SECRET_B)
    .with_corp(CORPID, AGENT_1, CORP_SECRET_1)
    .with_corp(CORPID, AGENT_2, CORP_SECRET_2)
}

/// A running mock and a client for it.
pub struct Wx {
    pub mock: MockServer,
    http: reqwest::Client,
}

/// An answer: status, content type and JSON body (`Value::Null` when not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub json: Value,
}

impl Wx {
    pub async fn start(config: MockConfig) -> Wx {
        let mock = MockServer::start(config, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("mock starts");
        Wx {
            mock,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.mock.base_url(), path_and_query)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Resp {
        let response = request.send().await.expect("the mock answers");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = response.bytes().await.expect("a full body");
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            content_type,
            json,
        }
    }

    pub async fn get(&self, path_and_query: &str) -> Resp {
        self.send(self.http.get(self.url(path_and_query))).await
    }

    pub async fn post_json(&self, path_and_query: &str, body: &Value) -> Resp {
        self.send(self.http.post(self.url(path_and_query)).json(body))
            .await
    }

    pub async fn post_raw(&self, path_and_query: &str, content_type: &str, body: &str) -> Resp {
        self.send(
            self.http
                .post(self.url(path_and_query))
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body.to_owned()),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(self.http.delete(self.url(path))).await
    }

    /// `GET /cgi-bin/token` for an account.
    pub async fn token(&self, appid: &str, secret: &str) -> Resp {
        self.get(&format!(
            "/cgi-bin/token?grant_type=client_credential&appid={appid}&secret={secret}"
        ))
        .await
    }

    /// A fresh `cgi-bin/token` token of [`APPID`].
    pub async fn legacy_token(&self) -> String {
        self.token(APPID, SECRET).await.access_token()
    }

    /// `POST /cgi-bin/stable_token`.
    pub async fn stable(&self, appid: &str, secret: &str, force: bool) -> Resp {
        self.post_json(
            "/cgi-bin/stable_token",
            &json!({"grant_type": "client_credential", "appid": appid, "secret": secret, "force_refresh": force}),
        )
        .await
    }

    /// The business API with `token`.
    pub async fn business(&self, token: &str) -> Resp {
        self.get(&format!("/cgi-bin/get_api_domain_ip?access_token={token}"))
            .await
    }

    /// `GET /cgi-bin/gettoken` for a corp app.
    pub async fn corp_token(&self, corpid: &str, secret: &str) -> Resp {
        self.get(&format!(
            "/cgi-bin/gettoken?corpid={corpid}&corpsecret={secret}"
        ))
        .await
    }
}

impl Resp {
    /// The errcode, 0 when the field is absent (token successes).
    pub fn errcode(&self) -> i64 {
        self.json
            .get("errcode")
            .map(|c| c.as_i64().expect("errcode is an integer"))
            .unwrap_or(0)
    }

    pub fn errmsg(&self) -> &str {
        self.json["errmsg"].as_str().unwrap_or("")
    }

    pub fn str(&self, field: &str) -> String {
        self.json[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} missing in {:?}", self.json))
            .to_owned()
    }

    pub fn access_token(&self) -> String {
        assert_ok_wechat(self);
        self.str("access_token")
    }

    pub fn ticket(&self) -> String {
        assert_ok_wechat(self);
        self.str("ticket")
    }

    pub fn expires_in(&self) -> u64 {
        self.json["expires_in"]
            .as_u64()
            .unwrap_or_else(|| panic!("expires_in missing in {:?}", self.json))
    }
}

/// HTTP 200 with WeChat's JSON content type.
pub fn assert_wechat_wire(resp: &Resp) {
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.content_type, "application/json; encoding=utf-8");
}

/// A success: WeChat's wire and no error.
pub fn assert_ok_wechat(resp: &Resp) {
    assert_wechat_wire(resp);
    assert_eq!(resp.errcode(), 0, "{resp:?}");
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An official-account error: HTTP 200, `{"errcode","errmsg"}` only, errmsg = `base` plus
/// ` rid: <unix time hex>-<8hex>-<8hex>`.
pub fn assert_error(resp: &Resp, code: i64, base: &str) {
    assert_wechat_wire(resp);
    assert_eq!(resp.errcode(), code, "{resp:?}");
    let obj = resp.json.as_object().unwrap();
    assert_eq!(obj.len(), 2, "only errcode and errmsg: {resp:?}");
    let msg = resp.errmsg();
    let rid = msg
        .strip_prefix(base)
        .and_then(|rest| rest.strip_prefix(" rid: "))
        .unwrap_or_else(|| panic!("errmsg {msg:?} is not {base:?} + rid"));
    let groups: Vec<&str> = rid.split('-').collect();
    assert_eq!(groups.len(), 3, "{rid}");
    for g in &groups {
        assert!(
            g.len() == 8
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{rid}"
        );
    }
    let t = u64::from_str_radix(groups[0], 16).unwrap();
    assert!(t.abs_diff(unix_now()) < 60, "rid time {t} is not now");
}

/// A Work WeChat error: errmsg = `base` + `, hint: [...], from ip: 127.0.0.1, more info at …?e=CODE`.
pub fn assert_work_error(resp: &Resp, code: i64, base: &str) {
    assert_wechat_wire(resp);
    assert_eq!(resp.errcode(), code, "{resp:?}");
    let msg = resp.errmsg();
    let rest = msg
        .strip_prefix(base)
        .and_then(|r| r.strip_prefix(", hint: ["))
        .unwrap_or_else(|| panic!("errmsg {msg:?} is not {base:?} + hint"));
    let (hint, tail) = rest.split_once(']').unwrap();
    assert!(
        hint.len() == 25 && hint.bytes().all(|b| b.is_ascii_digit()),
        "{hint}"
    );
    assert_eq!(
        tail,
        format!(
            ", from ip: 127.0.0.1, more info at https://open.work.weixin.qq.com/devtool/query?e={code}"
        )
    );
}

/// The 2023+ text of 40001 on official accounts.
pub const INVALID_CREDENTIAL: &str = "invalid credential, access_token is invalid or not latest, could get access_token by getStableAccessToken, more details at https://mmbizurl.cn/s/JtxxFh33r";

/// Sleeps until `at`: for tests that need time to pass (a token to expire).
pub async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(at.into()).await;
}
