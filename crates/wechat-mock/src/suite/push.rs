//! Pushes from Work WeChat to a suite's command callback URL (指令回调URL): the XML messages
//! (`suite_ticket`, `create_auth`, `change_auth`, `cancel_auth`, `reset_permanent_code`), sealed
//! with the suite's Token and EncodingAESKey for the suite id as receive id, and POSTed with
//! `msg_signature`, `timestamp` and `nonce` in the Work callback envelope:
//!
//! ```text
//! <xml><ToUserName><![CDATA[suite_id]]></ToUserName><Encrypt><![CDATA[…]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>
//! ```
//!
//! A push counts as acknowledged only when the receiver answers HTTP 200 with exactly
//! `success`. Also the one-time URL verification: a GET with an encrypted `echostr` that the
//! receiver must answer with its decrypted text.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use tokio::time::Instant;
use wechat_crypto::MessageCrypt;

use super::{record_push, suite_stats, tally};
use crate::component::ControlError;
use crate::push::{
    cdata, deliver, exchange, shown, xml_document, PushField, PushOutcome, Pushers, Sealed,
};
use crate::state::Shared;
use crate::time::unix_now;

/// What a push is about: its `InfoType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SuiteInfo {
    /// The periodic `suite_ticket`.
    Ticket,
    /// A corp installed the suite.
    CreateAuth,
    /// A corp changed what the app may do.
    ChangeAuth,
    /// A corp uninstalled the suite.
    CancelAuth,
    /// A corp's permanent code was reset.
    ResetPermanentCode,
}

impl SuiteInfo {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SuiteInfo::Ticket => "suite_ticket",
            SuiteInfo::CreateAuth => "create_auth",
            SuiteInfo::ChangeAuth => "change_auth",
            SuiteInfo::CancelAuth => "cancel_auth",
            SuiteInfo::ResetPermanentCode => "reset_permanent_code",
        }
    }
}

/// One decrypted suite push: `SuiteId`, `InfoType`, `TimeStamp` and the fields of its kind.
pub(crate) struct SuiteMessage {
    /// The suite: the `SuiteId` element, the envelope's `ToUserName` and the receive id.
    pub suite_id: String,
    /// What the push is about.
    pub info_type: SuiteInfo,
    /// `TimeStamp`, in Unix seconds.
    pub timestamp: u64,
    /// The elements after `TimeStamp`, in order.
    pub fields: Vec<(&'static str, PushField)>,
}

impl SuiteMessage {
    /// A message created now.
    pub(crate) fn new(
        suite_id: String,
        info_type: SuiteInfo,
        fields: Vec<(&'static str, PushField)>,
    ) -> SuiteMessage {
        SuiteMessage {
            suite_id,
            info_type,
            timestamp: unix_now(),
            fields,
        }
    }

    /// The plaintext XML, one element a line unless `one_line`.
    pub(crate) fn xml(&self, one_line: bool) -> String {
        let head = [
            ("SuiteId", PushField::Text(self.suite_id.clone())),
            (
                "InfoType",
                PushField::Text(self.info_type.as_str().to_owned()),
            ),
            ("TimeStamp", PushField::Number(self.timestamp)),
        ];
        xml_document(head.iter().chain(&self.fields), one_line)
    }
}

/// Encrypts and signs `xml` as Work WeChat does, with the given random prefix: the query
/// carries `msg_signature`, `timestamp` and `nonce` (no plain `signature`, no `encrypt_type`).
pub(crate) fn seal(
    crypt: &MessageCrypt,
    xml: &str,
    timestamp: u64,
    nonce: &str,
    random: [u8; 16],
) -> Sealed {
    let timestamp = timestamp.to_string();
    let encrypt = crypt.encrypt_with_random(xml, random);
    let msg_signature = crypt.msg_signature(&timestamp, nonce, &encrypt);
    Sealed {
        query: format!("msg_signature={msg_signature}&timestamp={timestamp}&nonce={nonce}"),
        body: format!(
            "<xml><ToUserName>{}</ToUserName><Encrypt>{}</Encrypt><AgentID>{}</AgentID></xml>",
            cdata(crypt.app_id()),
            cdata(&encrypt),
            cdata("")
        ),
    }
}

/// Seals `message` for its suite, delivers it and counts what happened.
pub(crate) async fn send(shared: &Shared, message: SuiteMessage) -> PushOutcome {
    let suite_id = message.suite_id.clone();
    let Some(config) = shared.suite_settings().suites.get(&suite_id) else {
        return PushOutcome::NotSent;
    };
    let Some(target) = config.target.get() else {
        return PushOutcome::NotSent;
    };
    let nonce = rand::random::<u32>().to_string();
    let sealed = seal(
        &config.crypt,
        &message.xml(false),
        unix_now(),
        &nonce,
        rand::random(),
    );
    let result = deliver(target, &sealed).await;
    let info_type = message.info_type.as_str();
    match &result {
        Ok(()) => tracing::debug!(suite = %suite_id, info_type, "push acknowledged"),
        Err(why) => tracing::warn!(suite = %suite_id, info_type, %why, "push failed"),
    }
    shared.with_suites(|_, ctx| record_push(ctx.stats, &suite_id, info_type, &result));
    match result {
        Ok(()) => PushOutcome::Acknowledged,
        Err(why) => PushOutcome::Failed(why),
    }
}

/// Pushes a fresh `suite_ticket` to the suite's URL. Nothing is minted while the suite has
/// nowhere to push to.
pub(crate) async fn push_ticket(shared: &Shared, suite_id: &str) -> PushOutcome {
    let has_target = shared
        .suite_settings()
        .suites
        .get(suite_id)
        .is_some_and(|c| c.target.get().is_some());
    if !has_target {
        return PushOutcome::NotSent;
    }
    let minted = shared.with_suites(|ss, ctx| super::new_ticket(ss, ctx, suite_id, Instant::now()));
    let Some(ticket) = minted else {
        return PushOutcome::NotSent;
    };
    let message = SuiteMessage::new(
        suite_id.to_owned(),
        SuiteInfo::Ticket,
        vec![("SuiteTicket", ticket.into())],
    );
    send(shared, message).await
}

/// Starts one pusher per suite that has a push URL: a ticket at once, then every interval.
pub(crate) fn spawn(shared: &Arc<Shared>) -> Pushers {
    let settings = shared.suite_settings();
    let tasks = settings
        .order
        .iter()
        .filter(|id| {
            settings
                .suites
                .get(*id)
                .is_some_and(|c| c.target.get().is_some())
        })
        .map(|id| tokio::spawn(pusher(shared.clone(), id.clone())))
        .collect();
    Pushers(tasks)
}

async fn pusher(shared: Arc<Shared>, suite_id: String) {
    let interval = shared.suite_settings().ticket_interval;
    loop {
        push_ticket(&shared, &suite_id).await;
        tokio::time::sleep(interval).await;
    }
}

/// Verifies the suite's callback URL as Work WeChat does when it is saved: `GET
/// ?msg_signature&timestamp&nonce&echostr`, the signature over the encrypted `echostr`; the
/// receiver must answer HTTP 200 with exactly the decrypted text. `Acknowledged` when it did.
pub(crate) async fn verify_url(
    shared: &Shared,
    suite_id: &str,
) -> Result<PushOutcome, ControlError> {
    let config = shared
        .suite_settings()
        .suites
        .get(suite_id)
        .ok_or_else(|| ControlError::NotFound(format!("no suite {suite_id:?} is configured")))?;
    let Some(target) = config.target.get() else {
        return Ok(PushOutcome::NotSent);
    };
    // Work WeChat's echostr opens to a random decimal number.
    let echo = rand::random::<u64>().to_string();
    let echostr = config.crypt.encrypt(&echo);
    let timestamp = unix_now().to_string();
    let nonce = rand::random::<u32>().to_string();
    let msg_signature = config.crypt.msg_signature(&timestamp, &nonce, &echostr);
    let query = format!(
        "msg_signature={msg_signature}&timestamp={timestamp}&nonce={nonce}&echostr={}",
        percent_encode(&echostr)
    );
    let result = match exchange(target, Method::GET, &query, None).await {
        Ok((status, _)) if status != StatusCode::OK => Err(format!("HTTP {}", status.as_u16())),
        Ok((_, answer)) if answer.as_ref() == echo.as_bytes() => Ok(()),
        Ok((_, answer)) => Err(format!(
            "answered {} instead of the decrypted echostr",
            shown(&answer)
        )),
        Err(why) => Err(why),
    };
    shared.with_suites(|_, ctx| {
        let stats = suite_stats(ctx.stats, suite_id);
        tally(
            &mut stats.url_verifications,
            &mut stats.last_push_failure,
            &result,
        );
    });
    Ok(match result {
        Ok(()) => PushOutcome::Acknowledged,
        Err(why) => PushOutcome::Failed(why),
    })
}

/// Percent-encodes everything but unreserved characters (base64's `+`, `/` and `=` included).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 16);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use wechat_crypto::EncodingAesKey;

    use super::*;

    /// Work WeChat's official C# sample (spec vector B): re-sealing its message with its random
    /// prefix, timestamp and nonce gives its `Encrypt` and `msg_signature` back.
    #[test]
    fn the_published_work_vector_round_trips() {
        let key = EncodingAesKey::parse("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C").unwrap();
        let crypt = MessageCrypt::new("QDG6eK", key, "wx5823bf96d3bd56c7");
        let encrypt = "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==";
        let xml = crypt.decrypt(encrypt).unwrap();
        let sealed = seal(
            &crypt,
            &xml,
            1_409_659_813,
            "1372623149",
            *b"0960688932c47ef1",
        );
        assert_eq!(
            sealed.query,
            "msg_signature=477715d11cdb4164915debcba66cb864d751f3e6&timestamp=1409659813&nonce=1372623149"
        );
        assert_eq!(
            sealed.body,
            format!("<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>")
        );
    }

    #[test]
    fn a_ticket_message_has_the_documented_elements() {
        let message = SuiteMessage {
            suite_id: "ww4asffe99e54c0fxxxx".into(),
            info_type: SuiteInfo::Ticket,
            timestamp: 1_403_610_513,
            fields: vec![("SuiteTicket", "asdfasfdasdfasdf".to_owned().into())],
        };
        assert_eq!(
            message.xml(true),
            "<xml><SuiteId><![CDATA[ww4asffe99e54c0fxxxx]]></SuiteId><InfoType><![CDATA[suite_ticket]]></InfoType><TimeStamp>1403610513</TimeStamp><SuiteTicket><![CDATA[asdfasfdasdfasdf]]></SuiteTicket></xml>"
        );
    }

    #[test]
    fn echostr_is_percent_encoded() {
        assert_eq!(percent_encode("aB9+/=-_.~"), "aB9%2B%2F%3D-_.~");
    }
}
