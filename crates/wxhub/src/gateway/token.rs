//! The token and ticket endpoints, answered by the hub itself in WeChat's shapes: an SDK that
//! fetches its token here gets the hub's, and never makes WeChat issue another.
//!
//! The `secret` an SDK sends is a consumer key (never the AppSecret), granted the app with `read`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Method;
use axum::response::Response;
use serde_json::{Map, Value};

use crate::api::{AccountId, ApiContext};
use crate::configuration::Scope;
use crate::forward::query::param;
use crate::forward::reply::{self, code, Host};
use crate::kinds::{Kind, Role};
use crate::read::Credential;

/// The largest `stable_token` body read; WeChat's is a few dozen bytes.
const MAX_TOKEN_BODY: usize = 64 * 1024;

/// Whether `key` is the key of a consumer granted `account` with `read`.
pub fn granted(context: &ApiContext, key: &str, account: &AccountId) -> bool {
    let access = context.control.access().load();
    let settings = &access.settings;
    let Some((index, consumer)) = access.keys.find(settings, key) else {
        return false;
    };
    let may_use = access.keys.may_use(settings, index, account);
    may_use && consumer.has_scope(Scope::Read)
}

/// `GET /cgi-bin/token?grant_type=client_credential&appid=A&secret=K`.
pub fn legacy(context: &ApiContext, query: Option<&str>) -> Response {
    let host = Host::Official;
    let Some(appid) = param(query, "appid") else {
        return reply::error(code::APPID_MISSING, host);
    };
    let Some(key) = param(query, "secret") else {
        return reply::error(code::APPSECRET_MISSING, host);
    };
    if param(query, "grant_type").as_deref() != Some("client_credential") {
        return reply::error(code::INVALID_GRANT_TYPE, host);
    }
    match app_token(context, &appid, &key) {
        Ok(credential) => served_token(context, &credential, host),
        Err(code) => reply::error(code, host),
    }
}

/// `POST /cgi-bin/stable_token` with `{"grant_type","appid","secret":K,"force_refresh"}`.
/// `force_refresh: true` is a report that the current token is dead: the hub checks and replaces
/// it (once, however many callers report it), and never spends a force refresh on the caller's
/// say-so alone.
pub async fn stable(context: &ApiContext, method: &Method, body: Body) -> Response {
    let host = Host::Official;
    if *method != Method::POST {
        return reply::error(code::REQUIRE_POST, host);
    }
    let fields = json_fields(body).await;
    let text = |name: &str| text_field(&fields, name);
    let answer = (|| {
        let appid = text("appid")?;
        let key = text("secret")?;
        let grant_type = text("grant_type")?;
        let force = match fields.get("force_refresh") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(code::DATA_FORMAT),
        };
        let appid = appid.ok_or(code::APPID_MISSING)?;
        let key = key.ok_or(code::APPSECRET_MISSING)?;
        if grant_type != Some("client_credential") {
            return Err(code::INVALID_GRANT_TYPE);
        }
        Ok((app_token(context, appid, key)?, force))
    })();
    let (credential, force) = match answer {
        Ok(found) => found,
        Err(code) => return reply::error(code, host),
    };
    if force {
        let Some(current) = credential.slot.load() else {
            return reply::error(code::SYSTEM_ERROR, host);
        };
        return match context.engine.invalidate(&credential, &current.value).await {
            Ok(invalidation) => {
                reply::access_token(&invalidation.served, host, context.clock.now())
            }
            Err(e) => {
                tracing::warn!(key = %credential.key, error = %e, "stable_token force_refresh: the reported token could not be replaced");
                reply::error(code::SYSTEM_ERROR, host)
            }
        };
    }
    served_token(context, &credential, host)
}

/// The fields of a JSON body. A body that is not a JSON object (a form, say) has none, as WeChat
/// reads it.
pub(super) async fn json_fields(body: Body) -> Map<String, Value> {
    match axum::body::to_bytes(body, MAX_TOKEN_BODY).await {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(Value::Object(fields)) => fields,
            _ => Map::new(),
        },
        Err(_) => Map::new(),
    }
}

/// A text field: `None` when absent, null or empty; 47001 when of another type.
pub(super) fn text_field<'a>(
    fields: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, i64> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(code::DATA_FORMAT),
    }
}

/// `POST /cgi-bin/component/api_component_token` with `{"component_appid":C,
/// "component_appsecret":K,"component_verify_ticket":…}`: the platform's token as the hub serves
/// it, for a consumer key K granted the platform. The ticket is not needed (WeChat pushes tickets
/// to the hub) and is ignored.
pub async fn component(context: &ApiContext, method: &Method, body: Body) -> Response {
    let host = Host::Official;
    if *method != Method::POST {
        return reply::error(code::REQUIRE_POST, host);
    }
    let fields = json_fields(body).await;
    let answer = (|| {
        let component_appid = text_field(&fields, "component_appid")?;
        let key = text_field(&fields, "component_appsecret")?;
        let component_appid = component_appid.ok_or(code::COMPONENT_APPID_MISSING)?;
        let account = AccountId::component(component_appid);
        let credential = context
            .read_index
            .find(&account, None)
            .map_err(|_| code::INVALID_COMPONENT)?;
        if !granted(context, key.ok_or(code::APPSECRET_MISSING)?, &account) {
            return Err(code::INVALID_APPSECRET);
        }
        Ok(credential)
    })();
    match answer.map(|credential| credential.slot.load()) {
        Ok(Some(served)) => reply::component_token(&served, context.clock.now()),
        Ok(None) => reply::error(code::SYSTEM_ERROR, host),
        Err(code) => reply::error(code, host),
    }
}

/// The access-token credential of `appid` for a caller with `key`, or WeChat's errcode.
fn app_token(context: &ApiContext, appid: &str, key: &str) -> Result<Arc<Credential>, i64> {
    let account = AccountId::app(appid);
    let credential = context
        .read_index
        .find(&account, None)
        .map_err(|_| code::INVALID_APPID)?;
    if !granted(context, key, &account) {
        return Err(code::INVALID_APPSECRET);
    }
    Ok(credential)
}

/// The token served for `credential` now, in `host`'s shape.
fn served_token(context: &ApiContext, credential: &Credential, host: Host) -> Response {
    match credential.slot.load() {
        Some(served) => reply::access_token(&served, host, context.clock.now()),
        None => reply::error(code::SYSTEM_ERROR, host),
    }
}

/// Work: `GET /cgi-bin/gettoken?corpid=C&corpsecret=K`, where K is a consumer key granted exactly
/// one agent of C, or `AGENTID:KEY` to name the agent.
pub fn corp(context: &ApiContext, query: Option<&str>) -> Response {
    let host = Host::Work;
    let Some(corpid) = param(query, "corpid") else {
        return reply::error(code::APPID_MISSING, host);
    };
    let Some(secret) = param(query, "corpsecret") else {
        return reply::error(code::APPSECRET_MISSING, host);
    };
    let agents: Vec<AccountId> = context.read_index.accounts_under(Kind::Corp, &corpid);
    if agents.is_empty() {
        return reply::error(code::INVALID_APPID, host);
    }
    let named = secret.split_once(':').and_then(|(agentid, key)| {
        let agent = agents.iter().find(|a| a.parts().1 == Some(agentid))?;
        Some((agent, key))
    });
    let agent = match named {
        Some((agent, key)) => granted(context, key, agent).then_some(agent),
        None => {
            let mut mine = agents
                .iter()
                .filter(|agent| granted(context, &secret, agent));
            match (mine.next(), mine.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        }
    };
    // WeChat answers an unknown corpsecret with 40001.
    let Some(agent) = agent else {
        return reply::error(code::INVALID_CREDENTIAL, host);
    };
    match context.read_index.find(agent, None) {
        Ok(credential) => served_token(context, &credential, host),
        Err(_) => reply::error(code::INVALID_CREDENTIAL, host),
    }
}

/// What a ticket request with `access_token=T` is answered with.
pub enum TicketAnswer {
    /// The hub's own ticket (or WeChat's refusal of a call without a token).
    Answered(Response),
    /// T is not a token the hub serves: WeChat's refusal of an unknown token, nothing forwarded.
    Unserved(Response),
    /// T is a token the hub serves, but for an account without that ticket configured: the call
    /// goes to WeChat.
    PassOn,
}

/// `GET /cgi-bin/ticket/getticket?access_token=T&type=jsapi|wx_card` (official) and Work's
/// `get_jsapi_ticket` / `ticket/get?type=agent_config`: answered from the hub's ticket of the
/// account T belongs to. `kind` is the ticket asked for.
pub fn ticket(context: &ApiContext, host: Host, query: Option<&str>, kind: &str) -> TicketAnswer {
    let Some(token) = param(query, "access_token") else {
        return TicketAnswer::Answered(reply::error(code::ACCESS_TOKEN_MISSING, host));
    };
    let Some(credential) = context.read_index.serving(&token, context.clock.now()) else {
        return TicketAnswer::Unserved(reply::error(code::INVALID_ACCESS_TOKEN, host));
    };
    // An access token asks for its own account's ticket, on its own kind's host.
    let key = &credential.key;
    let found = (key.role == Role::AccessToken && key.account.kind().descriptor().host == host)
        .then(|| context.read_index.find(&key.account, Some(kind)).ok())
        .flatten();
    let served = found.and_then(|ticket| ticket.slot.load());
    match served {
        Some(served) => TicketAnswer::Answered(reply::ticket(&served, host, context.clock.now())),
        None => TicketAnswer::PassOn,
    }
}
