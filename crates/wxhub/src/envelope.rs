//! Opening what WeChat sends to a push URL (a platform's event URL, a suite's command callback
//! URL): the query string, the signature, the envelope, the decryption and the message's
//! elements. Pure (no I/O), so every rule is tested on its own and against arbitrary input; what
//! a message means is read by its receiver (`platform::receiver`, `suites::receiver`).
//!
//! Order matters: nothing in the body is trusted, or even parsed as XML, before `msg_signature`
//! (checked in constant time) proves the sender holds the receiver's Token: the ciphertext is
//! found by a plain scan for its one element, and only a signed push is read as XML. Its
//! `timestamp` must be within [`FRESHNESS`] of now, so an old push cannot be replayed (a replay
//! inside that window is caught by the receiver, which remembers the pushes it has acted on).
//! The ciphertext is then opened with the current EncodingAESKey, else the previous one, and must
//! name this receiver (its receive id) as its addressee.
//! XML is read with `quick-xml`, which expands no entity beyond the five predefined ones; a
//! document type declaration is refused outright.

use std::collections::{BTreeMap, HashSet, VecDeque};

use quick_xml::events::Event;
use quick_xml::Reader;
use wechat_crypto::{EncodingAesKey, MessageCrypt};

/// Largest push body accepted; WeChat's are well under 2 KiB.
pub const MAX_PUSH_BYTES: usize = 64 * 1024;
/// Most elements read from one message: a push has a handful.
const MAX_ELEMENTS: usize = 64;
/// How far a push's `timestamp` may be from now, either way (WeChat's clock and ours differ a
/// little; a push older than this is a replay).
pub const FRESHNESS: i64 = 600;

/// Why a push was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The signature is missing or wrong: the sender does not hold the platform's Token (403).
    #[error("bad signature")]
    Signature,
    /// The envelope or the message is malformed, or sealed for another platform (400).
    #[error("bad envelope: {0}")]
    Envelope(&'static str),
}

/// What opens the pushes of one receiver.
pub struct Keys<'a> {
    /// The receive id sealed into every message (a platform's appid, a suite's id).
    pub receive_id: &'a str,
    /// The Token that signs every push.
    pub token: &'a str,
    /// The current EncodingAESKey.
    pub encoding_aes_key: &'a str,
    /// The key before the last change, tried when the current one fails.
    pub previous_encoding_aes_key: Option<&'a str>,
    /// The element of the envelope, and of the message, that names the addressee when present
    /// (`AppId` for a platform; a suite's envelope has `ToUserName` and its message `SuiteId`).
    pub addressee: (&'static str, &'static str),
}

/// A push, signed and opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// Its `msg_signature`: one push and its replays have the same.
    pub signature: String,
    /// The message's elements, by name.
    pub message: BTreeMap<String, String>,
}

/// The query string WeChat sends with a push.
#[derive(Default, Debug)]
struct PushQuery {
    timestamp: Option<String>,
    nonce: Option<String>,
    msg_signature: Option<String>,
    encrypt_type: Option<String>,
    echostr: Option<String>,
}

/// Opens a push for the receiver `keys` describes, received at `now` (Unix seconds).
pub fn open(keys: &Keys<'_>, query: &str, body: &[u8], now: i64) -> Result<Opened, Refused> {
    let query = parse_query(query);
    let (Some(timestamp), Some(nonce), Some(msg_signature)) =
        (&query.timestamp, &query.nonce, &query.msg_signature)
    else {
        return Err(Refused::Signature);
    };
    if query.encrypt_type.as_deref().is_some_and(|t| t != "aes") {
        return Err(Refused::Envelope("encrypt_type must be aes"));
    }
    if body.len() > MAX_PUSH_BYTES {
        return Err(Refused::Envelope("body too large"));
    }
    let body = std::str::from_utf8(body).map_err(|_| Refused::Envelope("body is not UTF-8"))?;
    let encrypt = encrypt_element(body).ok_or(Refused::Envelope("no Encrypt element"))?;
    let crypt = crypt(keys).ok_or(Refused::Envelope("the receiver's keys are unusable"))?;
    crypt
        .verify_msg_signature(msg_signature, timestamp, nonce, encrypt)
        .map_err(|_| Refused::Signature)?;
    fresh(timestamp, now)?;
    // Signed: now it may be read as XML.
    let envelope = elements(body)?;
    if envelope.get("Encrypt").map(String::as_str) != Some(encrypt) {
        return Err(Refused::Envelope("Encrypt element is not the one signed"));
    }
    let (envelope_addressee, message_addressee) = keys.addressee;
    if envelope
        .get(envelope_addressee)
        .is_some_and(|a| a != keys.receive_id)
    {
        return Err(Refused::Envelope("sealed for another receiver"));
    }
    let plain = crypt
        .decrypt(encrypt)
        .map_err(|_| Refused::Envelope("cannot be opened with this receiver's keys"))?;
    let message = elements(&plain)?;
    if message
        .get(message_addressee)
        .is_some_and(|a| a != keys.receive_id)
    {
        return Err(Refused::Envelope("message names another receiver"));
    }
    Ok(Opened {
        signature: msg_signature.clone(),
        message,
    })
}

/// The URL check Work WeChat makes once when a callback URL is set (`GET ?msg_signature&
/// timestamp&nonce&echostr`): the signature covers the encrypted `echostr`, which must open with
/// this receiver's keys and name it; the answer is the plaintext.
pub fn echo(keys: &Keys<'_>, query: &str, now: i64) -> Result<String, Refused> {
    let query = parse_query(query);
    let (Some(timestamp), Some(nonce), Some(msg_signature), Some(echostr)) = (
        &query.timestamp,
        &query.nonce,
        &query.msg_signature,
        &query.echostr,
    ) else {
        return Err(Refused::Signature);
    };
    if echostr.len() > MAX_PUSH_BYTES {
        return Err(Refused::Envelope("echostr too large"));
    }
    let crypt = crypt(keys).ok_or(Refused::Envelope("the receiver's keys are unusable"))?;
    crypt
        .verify_msg_signature(msg_signature, timestamp, nonce, echostr)
        .map_err(|_| Refused::Signature)?;
    fresh(timestamp, now)?;
    crypt
        .decrypt(echostr)
        .map_err(|_| Refused::Envelope("echostr cannot be opened with this receiver's keys"))
}

/// The signatures of the last [`RECENT_PUSHES`] pushes acted on, oldest first.
#[derive(Default)]
pub struct RecentPushes {
    order: VecDeque<String>,
    seen: HashSet<String>,
}

/// How many pushes [`RecentPushes`] remembers: far more than arrive in the freshness window.
const RECENT_PUSHES: usize = 4096;

impl RecentPushes {
    /// Whether a push with this signature was acted on lately.
    pub fn contains(&self, signature: &str) -> bool {
        self.seen.contains(signature)
    }

    /// Remembers a push acted on, forgetting the oldest beyond [`RECENT_PUSHES`].
    pub fn remember(&mut self, signature: String) {
        if !self.seen.insert(signature.clone()) {
            return;
        }
        self.order.push_back(signature);
        if self.order.len() > RECENT_PUSHES {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
    }
}

/// `text` if it can name an account in paths and storage keys (an appid, a corpid: 1 to 64
/// letters, digits, `_`, `-`, `.`); else the envelope refusal `what`.
pub fn identifier(text: String, what: &'static str) -> Result<String, Refused> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(text)
    } else {
        Err(Refused::Envelope(what))
    }
}

/// Refuses a `timestamp` further than [`FRESHNESS`] from `now`.
fn fresh(timestamp: &str, now: i64) -> Result<(), Refused> {
    let sent_at = timestamp
        .trim()
        .parse::<i64>()
        .map_err(|_| Refused::Envelope("timestamp is not a number"))?;
    if (now - sent_at).abs() > FRESHNESS {
        return Err(Refused::Envelope("timestamp too far from now (a replay?)"));
    }
    Ok(())
}

/// The text of the envelope's one `<Encrypt>` element, found without an XML parser (the body is
/// not yet known to come from WeChat): plain or in one CDATA section, base64 only. `None` when
/// there is none, more than one, or it holds anything else.
fn encrypt_element(body: &str) -> Option<&str> {
    const OPEN: &str = "<Encrypt>";
    const CLOSE: &str = "</Encrypt>";
    let start = body.find(OPEN)? + OPEN.len();
    let length = body[start..].find(CLOSE)?;
    if body[start + length..].matches(OPEN).next().is_some() {
        return None;
    }
    let inner = &body[start..start + length];
    let inner = match inner.strip_prefix("<![CDATA[") {
        Some(rest) => rest.strip_suffix("]]>")?,
        None => inner,
    };
    let base64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    (!inner.is_empty() && inner.bytes().all(base64)).then_some(inner)
}

/// The receiver's crypt: Token, current key, previous key.
fn crypt(keys: &Keys<'_>) -> Option<MessageCrypt> {
    let key = EncodingAesKey::parse(keys.encoding_aes_key).ok()?;
    let mut crypt = MessageCrypt::new(keys.token, key, keys.receive_id.to_string());
    if let Some(previous) = keys.previous_encoding_aes_key {
        crypt = crypt.with_previous_key(EncodingAesKey::parse(previous).ok()?);
    }
    Some(crypt)
}

/// The text of the root element's children (`<xml><Name>text</Name>…</xml>`), by name. Nested
/// elements, a second root, a DTD or more than [`MAX_ELEMENTS`] children are refused.
fn elements(xml: &str) -> Result<BTreeMap<String, String>, Refused> {
    let mut reader = Reader::from_str(xml);
    let mut depth = 0usize;
    let mut current: Option<String> = None;
    let mut text = String::new();
    let mut out = BTreeMap::new();
    let mut roots = 0;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                depth += 1;
                match depth {
                    1 => roots += 1,
                    2 => {
                        let name = std::str::from_utf8(e.name().as_ref())
                            .map_err(|_| Refused::Envelope("element name not UTF-8"))?
                            .to_string();
                        current = Some(name);
                        text.clear();
                    }
                    _ => return Err(Refused::Envelope("nested elements")),
                }
                if roots > 1 {
                    return Err(Refused::Envelope("more than one root element"));
                }
            }
            Ok(Event::End(_)) => {
                if depth == 2 {
                    if let Some(name) = current.take() {
                        if out.len() >= MAX_ELEMENTS {
                            return Err(Refused::Envelope("too many elements"));
                        }
                        out.insert(name, std::mem::take(&mut text));
                    }
                }
                depth = depth.saturating_sub(1);
            }
            Ok(Event::Empty(_)) if depth == 1 => {}
            Ok(Event::Empty(_)) => {
                if depth == 0 {
                    roots += 1;
                }
            }
            Ok(Event::Text(e)) if depth == 2 => {
                let unescaped = e
                    .unescape()
                    .map_err(|_| Refused::Envelope("malformed text"))?;
                text.push_str(&unescaped);
            }
            Ok(Event::CData(e)) if depth == 2 => {
                let raw =
                    std::str::from_utf8(&e).map_err(|_| Refused::Envelope("CDATA not UTF-8"))?;
                text.push_str(raw);
            }
            Ok(Event::DocType(_)) => {
                return Err(Refused::Envelope("document type declarations are refused"))
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(_) => return Err(Refused::Envelope("malformed XML")),
        }
    }
    if roots != 1 || depth != 0 {
        return Err(Refused::Envelope("malformed XML"));
    }
    Ok(out)
}

/// The push's query parameters (unknown ones are ignored, the first of a repeated one wins).
fn parse_query(query: &str) -> PushQuery {
    let mut parsed = PushQuery::default();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(value) = percent_decode(value) else {
            continue;
        };
        let slot = match name {
            "timestamp" => &mut parsed.timestamp,
            "nonce" => &mut parsed.nonce,
            "msg_signature" => &mut parsed.msg_signature,
            "encrypt_type" => &mut parsed.encrypt_type,
            "echostr" => &mut parsed.echostr,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(value);
        }
    }
    parsed
}

/// Decodes `%XX` and `+`; `None` for a malformed escape or non-UTF-8 result.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ciphertext_is_found_without_reading_xml() {
        assert_eq!(
            encrypt_element("<xml><Encrypt>abc+/=</Encrypt></xml>"),
            Some("abc+/=")
        );
        assert_eq!(
            encrypt_element("<xml><Encrypt><![CDATA[abc]]></Encrypt></xml>"),
            Some("abc")
        );
        for body in [
            "<xml></xml>",
            "<xml><Encrypt></Encrypt></xml>",
            "<xml><Encrypt>a<b/></Encrypt></xml>",
            "<xml><Encrypt>&lt;</Encrypt></xml>",
            "<xml><Encrypt>abc</Encrypt><Encrypt>abc</Encrypt></xml>",
            "<xml><Encrypt>abc",
        ] {
            assert_eq!(encrypt_element(body), None, "{body}");
        }
    }
}
