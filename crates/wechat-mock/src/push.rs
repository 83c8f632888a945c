//! Pushes from WeChat to a platform's authorization event URL: the XML messages
//! (`component_verify_ticket`, `authorized`, `updateauthorized`, `unauthorized`), sealed and
//! signed with the platform's token and EncodingAESKey, POSTed with the query string WeChat sends
//! (`signature`, `timestamp`, `nonce`, `encrypt_type=aes`, `msg_signature`). A push counts as
//! acknowledged only when the receiver answers HTTP 200 with exactly `success`; WeChat does not
//! retry platform pushes, so neither does the mock.
//!
//! The plumbing (push URLs, the HTTP exchange, flat XML documents, the pusher tasks) is shared
//! with Work WeChat's suite pushes in `suite/push.rs`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::header::{CONTENT_TYPE, HOST};
use axum::http::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use wechat_crypto::MessageCrypt;

use crate::component;
use crate::state::Shared;
use crate::time::unix_now;

/// How long a receiver has to answer a push (WeChat gives servers 5 s).
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Answers longer than this are not `success` and are not read further.
const MAX_ANSWER: usize = 4096;

/// What a push is about: its `InfoType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InfoType {
    /// The periodic `component_verify_ticket`.
    VerifyTicket,
    /// An account authorized the platform.
    Authorized,
    /// An account changed the permissions it grants.
    UpdateAuthorized,
    /// An account withdrew its authorization.
    Unauthorized,
}

impl InfoType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            InfoType::VerifyTicket => "component_verify_ticket",
            InfoType::Authorized => "authorized",
            InfoType::UpdateAuthorized => "updateauthorized",
            InfoType::Unauthorized => "unauthorized",
        }
    }
}

/// The value of one element of a push message.
pub(crate) enum PushField {
    /// Text, sent in a CDATA section.
    Text(String),
    /// A number, sent bare (like `CreateTime`).
    Number(u64),
}

impl From<String> for PushField {
    fn from(text: String) -> Self {
        PushField::Text(text)
    }
}

impl From<u64> for PushField {
    fn from(number: u64) -> Self {
        PushField::Number(number)
    }
}

/// One decrypted push message: `AppId`, `CreateTime`, `InfoType` and the fields of its kind.
pub(crate) struct PushMessage {
    /// The platform's appid: the `AppId` element and the id sealed into the ciphertext.
    pub component_appid: String,
    /// `CreateTime`, in Unix seconds.
    pub create_time: u64,
    /// What the push is about.
    pub info_type: InfoType,
    /// The elements after `InfoType`, in order.
    pub fields: Vec<(&'static str, PushField)>,
}

impl PushMessage {
    /// A message created now.
    pub(crate) fn new(
        component_appid: String,
        info_type: InfoType,
        fields: Vec<(&'static str, PushField)>,
    ) -> PushMessage {
        PushMessage {
            component_appid,
            create_time: unix_now(),
            info_type,
            fields,
        }
    }

    /// The plaintext XML. Real pushes put each element on its own line; `one_line` gives the
    /// compact form (which the published test vector uses).
    pub(crate) fn xml(&self, one_line: bool) -> String {
        let head = [
            ("AppId", PushField::Text(self.component_appid.clone())),
            ("CreateTime", PushField::Number(self.create_time)),
            (
                "InfoType",
                PushField::Text(self.info_type.as_str().to_owned()),
            ),
        ];
        xml_document(head.iter().chain(&self.fields), one_line)
    }
}

/// A flat `<xml>…</xml>` document of `elements`, text in CDATA sections and numbers bare; each
/// element on its own line unless `one_line`.
pub(crate) fn xml_document<'a>(
    elements: impl IntoIterator<Item = &'a (&'static str, PushField)>,
    one_line: bool,
) -> String {
    let sep = if one_line { "" } else { "\n" };
    let mut out = String::with_capacity(256);
    out.push_str("<xml>");
    for (name, value) in elements {
        out.push_str(sep);
        match value {
            PushField::Text(text) => out.push_str(&format!("<{name}>{}</{name}>", cdata(text))),
            PushField::Number(n) => out.push_str(&format!("<{name}>{n}</{name}>")),
        }
    }
    out.push_str(sep);
    out.push_str("</xml>");
    out
}

/// A CDATA section holding `text`, split around any `]]>` so that it cannot end early.
pub(crate) fn cdata(text: &str) -> String {
    format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>"))
}

/// A push as it goes on the wire.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Sealed {
    /// `signature=…&timestamp=…&nonce=…&encrypt_type=aes&msg_signature=…`.
    pub query: String,
    /// `<xml><AppId><![CDATA[…]]></AppId><Encrypt><![CDATA[…]]></Encrypt></xml>`.
    pub body: String,
}

/// Encrypts and signs `xml` as WeChat does, with the given random prefix.
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
    let signature = crypt.signature(&timestamp, nonce);
    Sealed {
        query: format!(
            "signature={signature}&timestamp={timestamp}&nonce={nonce}&encrypt_type=aes&msg_signature={msg_signature}"
        ),
        body: format!(
            "<xml><AppId>{}</AppId><Encrypt>{}</Encrypt></xml>",
            cdata(crypt.app_id()),
            cdata(&encrypt)
        ),
    }
}

/// Where one platform's (or suite's) pushes go: a plain-HTTP URL.
#[derive(Clone, Debug)]
pub(crate) struct PushTarget {
    /// The host to connect to (a name or an IP address, without IPv6 brackets).
    host: String,
    /// The port to connect to (80 when the URL names none).
    port: u16,
    /// `host:port` as the URL wrote it, for the `Host` header.
    authority: String,
    /// The URL's path and query, to which the push's query string is appended.
    path_and_query: String,
}

impl PushTarget {
    /// Parses the configured push URL for one receiver, replacing `placeholder` (such as
    /// `{component_appid}`) with its id.
    pub(crate) fn parse(url: &str, placeholder: &str, id: &str) -> Result<PushTarget, String> {
        let url = url.replace(placeholder, id);
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "{url:?}: only http:// push URLs are supported (the mock talks to a test receiver)"
            ));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{url:?} has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(PushTarget {
            host,
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }

    fn request_target(&self, query: &str) -> String {
        let joiner = if self.path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{joiner}{query}", self.path_and_query)
    }
}

/// POSTs a sealed push; `Ok` when the receiver answered HTTP 200 and exactly `success`, else why
/// not.
pub(crate) async fn deliver(target: &PushTarget, sealed: &Sealed) -> Result<(), String> {
    let (status, answer) = exchange(
        target,
        Method::POST,
        &sealed.query,
        Some(sealed.body.clone()),
    )
    .await?;
    if status != StatusCode::OK {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    if answer.as_ref() != b"success" {
        return Err(format!(
            "answered {} instead of \"success\"",
            shown(&answer)
        ));
    }
    Ok(())
}

/// The start of an answer, quoted, for a failure message.
pub(crate) fn shown(answer: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(answer).chars().take(64).collect();
    format!("{text:?}")
}

/// Sends one request to `target` with `query` appended (and `body` as XML, if any) and returns
/// the status and the answer, within [`PUSH_TIMEOUT`].
pub(crate) async fn exchange(
    target: &PushTarget,
    method: Method,
    query: &str,
    body: Option<String>,
) -> Result<(StatusCode, Bytes), String> {
    match tokio::time::timeout(PUSH_TIMEOUT, request(target, method, query, body)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} s", PUSH_TIMEOUT.as_secs())),
    }
}

/// Aborts the connection task when the push is over, however it ended.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn request(
    target: &PushTarget,
    method: Method,
    query: &str,
    body: Option<String>,
) -> Result<(StatusCode, Bytes), String> {
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.authority))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let _connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let mut builder = Request::builder()
        .method(method)
        .uri(target.request_target(query))
        .header(HOST, target.authority.as_str());
    if body.is_some() {
        builder = builder.header(CONTENT_TYPE, "text/xml");
    }
    let request = builder
        .body(body.map_or_else(Body::empty, Body::from))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let answer = axum::body::to_bytes(Body::new(response.into_body()), MAX_ANSWER)
        .await
        .map_err(|_| format!("answer cut or longer than {MAX_ANSWER} bytes"))?;
    Ok((status, answer))
}

/// What became of a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PushOutcome {
    /// No push URL is configured.
    NotSent,
    /// The receiver answered `success`.
    Acknowledged,
    /// Anything else, and why.
    Failed(String),
}

/// Seals `message` for its platform, delivers it and counts what happened.
pub(crate) async fn send(shared: &Shared, message: PushMessage) -> PushOutcome {
    let appid = message.component_appid.clone();
    let Some(settings) = shared.platform_settings().components.get(&appid) else {
        return PushOutcome::NotSent;
    };
    let Some(target) = settings.target.get() else {
        return PushOutcome::NotSent;
    };
    let nonce = rand::random::<u32>().to_string();
    let sealed = seal(
        &settings.crypt,
        &message.xml(false),
        unix_now(),
        &nonce,
        rand::random(),
    );
    let result = deliver(target, &sealed).await;
    let info_type = message.info_type;
    match &result {
        Ok(()) => {
            tracing::debug!(component = %appid, info_type = info_type.as_str(), "push acknowledged")
        }
        Err(why) => {
            tracing::warn!(component = %appid, info_type = info_type.as_str(), %why, "push failed")
        }
    }
    shared.with_platform(|_, ctx| component::record_push(ctx.stats, &appid, info_type, &result));
    match result {
        Ok(()) => PushOutcome::Acknowledged,
        Err(why) => PushOutcome::Failed(why),
    }
}

/// Pushes a fresh verify ticket to `appid`'s URL; once acknowledged, older tickets keep only
/// the grace.
pub(crate) async fn push_verify_ticket(shared: &Shared, appid: &str) -> PushOutcome {
    let minted = shared
        .with_platform(|ps, ctx| component::new_verify_ticket(ps, ctx, appid, Instant::now()));
    let Some(ticket) = minted else {
        return PushOutcome::NotSent;
    };
    let message = PushMessage::new(
        appid.to_owned(),
        InfoType::VerifyTicket,
        vec![("ComponentVerifyTicket", ticket.clone().into())],
    );
    let outcome = send(shared, message).await;
    if outcome == PushOutcome::Acknowledged {
        shared.with_platform(|ps, ctx| {
            component::ticket_acknowledged(ps, ctx, appid, &ticket, Instant::now())
        });
    }
    outcome
}

/// The periodic pushers (of platforms and suites); dropping this stops them.
pub(crate) struct Pushers(pub(crate) Vec<JoinHandle<()>>);

impl Pushers {
    /// Takes over `other`'s pushers.
    pub(crate) fn extend(&mut self, mut other: Pushers) {
        self.0.append(&mut other.0);
    }
}

impl Drop for Pushers {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Starts one pusher per platform that has a push URL: a verify ticket at once, then every
/// interval, and whenever `api_start_push_ticket` asks.
pub(crate) fn spawn(shared: &Arc<Shared>) -> Pushers {
    let settings = shared.platform_settings();
    let tasks = settings
        .order
        .iter()
        .filter(|appid| {
            settings
                .components
                .get(*appid)
                .is_some_and(|c| c.target.get().is_some())
        })
        .map(|appid| tokio::spawn(pusher(shared.clone(), appid.clone())))
        .collect();
    Pushers(tasks)
}

async fn pusher(shared: Arc<Shared>, appid: String) {
    let Some(wake) = shared
        .platform_settings()
        .components
        .get(&appid)
        .map(|c| c.wake.clone())
    else {
        return;
    };
    let interval = shared.platform_settings().push_interval;
    loop {
        push_verify_ticket(&shared, &appid).await;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use wechat_crypto::EncodingAesKey;

    use super::*;

    /// Reads a push back as a receiver would: checks both signatures, opens `Encrypt` and returns
    /// the plaintext.
    fn decode(crypt: &MessageCrypt, sealed: &Sealed) -> Result<String, String> {
        let query: HashMap<&str, &str> = sealed
            .query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let param = |k: &str| query.get(k).copied().ok_or(format!("{k} missing"));
        if param("encrypt_type")? != "aes" {
            return Err("not encrypted".into());
        }
        let encrypt = sealed
            .body
            .split("<Encrypt><![CDATA[")
            .nth(1)
            .and_then(|rest| rest.split("]]></Encrypt>").next())
            .ok_or("no Encrypt element")?;
        crypt
            .verify_signature(param("signature")?, param("timestamp")?, param("nonce")?)
            .map_err(|e| e.to_string())?;
        crypt
            .decrypt_verified(
                param("msg_signature")?,
                param("timestamp")?,
                param("nonce")?,
                encrypt,
            )
            .map_err(|e| e.to_string())
    }

    fn vector_a_crypt() -> MessageCrypt {
        let key = EncodingAesKey::parse("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
        MessageCrypt::new("pamtest", key, "wxb11529c136998cb6")
    }

    #[test]
    fn the_published_verify_ticket_vector_round_trips() {
        let crypt = vector_a_crypt();
        let message = PushMessage {
            component_appid: "wxb11529c136998cb6".into(),
            create_time: 1_413_192_605,
            info_type: InfoType::VerifyTicket,
            fields: vec![(
                "ComponentVerifyTicket",
                "ticket@@@mock-verify-ticket-0001".to_owned().into(),
            )],
        };
        let xml = message.xml(true);
        assert_eq!(
            xml,
            "<xml><AppId><![CDATA[wxb11529c136998cb6]]></AppId><CreateTime>1413192605</CreateTime><InfoType><![CDATA[component_verify_ticket]]></InfoType><ComponentVerifyTicket><![CDATA[ticket@@@mock-verify-ticket-0001]]></ComponentVerifyTicket></xml>"
        );
        assert_eq!(xml.len(), 238);
        let sealed = seal(
            &crypt,
            &xml,
            1_413_192_605,
            "1320562132",
            *b"aaaabbbbccccdddd",
        );
        let encrypt = "jn1L23DB+6ELqJ+6bruv261zRlw0bcDHulcAe9Y1wRdRsAg/CmhNIW8lFzc4SVg/QwEF7TnTCcVtdmEzSAP8qX0X4s9htVXe4CQX1ZY5cpHzJvpnSCO3xzQa825B08cpAjIAQV8L7TCuRVCvxO1jEBYtC8LfJiX+h0pq9L78NJ1STK7Wvc6QmUzBiQ4/lsLSpvXojf3K8Ob6m7m+ttGWjtdgknx9J03WhB+u3lrCMQz1hBUPKITOMkSF3LirQDM9iVG9QIGslhrfwKhQFAvJl0wOEjkIEAktaasTYJhoq3dRj+X76MRmlfpCMBgt/S2TffoAhPaUp093Fhvx4h3e2plMCiLW7qKwA11ZSK1dEx/HEFC5NUMlWxUhrfM7nQmd";
        assert_eq!(
            sealed.body,
            format!("<xml><AppId><![CDATA[wxb11529c136998cb6]]></AppId><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>")
        );
        assert_eq!(
            sealed.query,
            "signature=bafb94c8b6d2c6a13565d242eb8945748ff7a041&timestamp=1413192605&nonce=1320562132&encrypt_type=aes&msg_signature=603e0c33a9825598571fa3ef6402256f37f7607c"
        );
        assert_eq!(decode(&crypt, &sealed).unwrap(), xml);
    }

    #[test]
    fn multi_line_pushes_and_tampering() {
        let crypt = vector_a_crypt();
        let message = PushMessage::new(
            "wxb11529c136998cb6".into(),
            InfoType::Unauthorized,
            vec![("AuthorizerAppid", "wxauth]]>x".to_owned().into())],
        );
        let xml = message.xml(false);
        assert!(xml.starts_with("<xml>\n<AppId><![CDATA[wxb11529c136998cb6]]></AppId>\n"));
        assert!(xml.contains("\n<InfoType><![CDATA[unauthorized]]></InfoType>\n"));
        assert!(
            xml.contains("<AuthorizerAppid><![CDATA[wxauth]]]]><![CDATA[>x]]></AuthorizerAppid>")
        );
        assert!(xml.ends_with("\n</xml>"));
        let sealed = seal(&crypt, &xml, unix_now(), "42", rand::random());
        assert_eq!(decode(&crypt, &sealed).unwrap(), xml);
        let forged = Sealed {
            query: sealed.query.replace("nonce=42", "nonce=43"),
            body: sealed.body.clone(),
        };
        assert!(decode(&crypt, &forged).is_err());
    }

    #[test]
    fn push_urls() {
        const P: &str = "{component_appid}";
        let t =
            PushTarget::parse("http://127.0.0.1:8080/events/{component_appid}", P, "wxc").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8080));
        assert_eq!(t.request_target("a=1"), "/events/wxc?a=1");
        let t = PushTarget::parse("http://localhost/cb?x=y", P, "wxc").unwrap();
        assert_eq!(t.port, 80);
        assert_eq!(t.request_target("a=1"), "/cb?x=y&a=1");
        let t = PushTarget::parse("http://[::1]:9/", P, "wxc").unwrap();
        assert_eq!(t.host, "::1");
        assert!(PushTarget::parse("https://example.com/", P, "wxc").is_err());
        assert!(PushTarget::parse("not a url", P, "wxc").is_err());
        assert!(PushTarget::parse("/relative", P, "wxc").is_err());
    }
}
