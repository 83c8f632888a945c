//! Opening one push from WeChat to a platform's event URL: the query string, the signature, the
//! envelope, the decryption and the message. Pure (no I/O), so every rule is tested on its own
//! and against arbitrary input.
//!
//! Order matters: nothing in the body is trusted, or even parsed as XML, before `msg_signature`
//! (checked in constant time) proves the sender holds the platform's Token: the ciphertext is
//! found by a plain scan for its one element, and only a signed push is read as XML. Its
//! `timestamp` must be within [`FRESHNESS`] of now, so an old push cannot be replayed (a replay
//! inside that window is caught by the platform, which remembers the pushes it has acted on).
//! The ciphertext is then opened with the current EncodingAESKey, else the previous one, and must
//! name this platform as its receiver.
//! XML is read with `quick-xml`, which expands no entity beyond the five predefined ones; a
//! document type declaration is refused outright.

use std::collections::BTreeMap;

use quick_xml::events::Event;
use quick_xml::Reader;
use wechat_crypto::{EncodingAesKey, MessageCrypt};

use crate::configuration::ComponentSettings;

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

/// A push, opened and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// Its `msg_signature`: one push and its replays have the same.
    pub signature: String,
    /// `CreateTime`, in Unix seconds (0 when absent).
    pub create_time: i64,
    /// What it is about.
    pub kind: PushKind,
}

/// What a push is about (its `InfoType`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushKind {
    /// The periodic verify ticket.
    VerifyTicket {
        /// The ticket.
        ticket: String,
    },
    /// An account authorized the platform (`updated`: it changed the permissions it grants).
    Authorized {
        /// The account.
        authorizer_appid: String,
        /// The code to exchange with `api_query_auth`.
        authorization_code: String,
        /// Whether this is `updateauthorized`.
        updated: bool,
    },
    /// An account withdrew its authorization.
    Unauthorized {
        /// The account.
        authorizer_appid: String,
    },
    /// Another InfoType: acknowledged, nothing stored.
    Other(String),
}

/// The query string WeChat sends with a push.
#[derive(Default, Debug)]
struct PushQuery {
    timestamp: Option<String>,
    nonce: Option<String>,
    msg_signature: Option<String>,
    encrypt_type: Option<String>,
}

/// Opens a push for the platform `settings` describes, received at `now` (Unix seconds).
pub fn open(
    settings: &ComponentSettings,
    query: &str,
    body: &[u8],
    now: i64,
) -> Result<Push, Refused> {
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
    let crypt = crypt(settings).ok_or(Refused::Envelope("platform keys unusable"))?;
    crypt
        .verify_msg_signature(msg_signature, timestamp, nonce, encrypt)
        .map_err(|_| Refused::Signature)?;
    let sent_at = timestamp
        .trim()
        .parse::<i64>()
        .map_err(|_| Refused::Envelope("timestamp is not a number"))?;
    if (now - sent_at).abs() > FRESHNESS {
        return Err(Refused::Envelope("timestamp too far from now (a replay?)"));
    }
    // Signed: now it may be read as XML.
    let envelope = elements(body)?;
    if envelope.get("Encrypt").map(String::as_str) != Some(encrypt) {
        return Err(Refused::Envelope("Encrypt element is not the one signed"));
    }
    if envelope
        .get("AppId")
        .is_some_and(|a| *a != settings.component_appid)
    {
        return Err(Refused::Envelope("sealed for another platform"));
    }
    let plain = crypt
        .decrypt(encrypt)
        .map_err(|_| Refused::Envelope("cannot be opened with this platform's keys"))?;
    let message = elements(&plain)?;
    if message
        .get("AppId")
        .is_some_and(|a| *a != settings.component_appid)
    {
        return Err(Refused::Envelope("message names another platform"));
    }
    let create_time = message
        .get("CreateTime")
        .and_then(|t| t.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let field = |name: &'static str| {
        message
            .get(name)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or(Refused::Envelope("a required element is missing"))
    };
    let info_type = message
        .get("InfoType")
        .ok_or(Refused::Envelope("no InfoType"))?;
    let kind = match info_type.as_str() {
        "component_verify_ticket" => PushKind::VerifyTicket {
            ticket: field("ComponentVerifyTicket")?,
        },
        "authorized" | "updateauthorized" => PushKind::Authorized {
            authorizer_appid: appid(field("AuthorizerAppid")?)?,
            authorization_code: field("AuthorizationCode")?,
            updated: info_type == "updateauthorized",
        },
        "unauthorized" => PushKind::Unauthorized {
            authorizer_appid: appid(field("AuthorizerAppid")?)?,
        },
        other => PushKind::Other(other.chars().take(64).collect()),
    };
    Ok(Push {
        signature: msg_signature.clone(),
        create_time,
        kind,
    })
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

/// An appid safe in paths and storage keys.
fn appid(text: String) -> Result<String, Refused> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(text)
    } else {
        Err(Refused::Envelope("malformed AuthorizerAppid"))
    }
}

/// The platform's crypt: Token, current key, previous key.
fn crypt(settings: &ComponentSettings) -> Option<MessageCrypt> {
    let key = EncodingAesKey::parse(settings.encoding_aes_key.expose()).ok()?;
    let mut crypt = MessageCrypt::new(
        settings.token.expose(),
        key,
        settings.component_appid.clone(),
    );
    if let Some(previous) = &settings.previous_encoding_aes_key {
        crypt = crypt.with_previous_key(EncodingAesKey::parse(previous.expose()).ok()?);
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
    use crate::configuration::{RefreshOverrides, Secret};
    use proptest::prelude::*;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const OTHER_KEY: &str = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut";

    fn settings(previous: Option<&str>) -> ComponentSettings {
        ComponentSettings {
            component_appid: "wxb11529c136998cb6".into(),
            secret: Secret::new("s".into()),
            token: Secret::new("pamtest".into()),
            encoding_aes_key: Secret::new(KEY.into()),
            previous_encoding_aes_key: previous.map(|k| Secret::new(k.into())),
            authorizer_tickets: vec![],
            refresh: RefreshOverrides::default(),
        }
    }

    /// The published vector for a verify-ticket push (docs/wechat.md).
    const VECTOR_ENCRYPT: &str = "jn1L23DB+6ELqJ+6bruv261zRlw0bcDHulcAe9Y1wRdRsAg/CmhNIW8lFzc4SVg/QwEF7TnTCcVtdmEzSAP8qX0X4s9htVXe4CQX1ZY5cpHzJvpnSCO3xzQa825B08cpAjIAQV8L7TCuRVCvxO1jEBYtC8LfJiX+h0pq9L78NJ1STK7Wvc6QmUzBiQ4/lsLSpvXojf3K8Ob6m7m+ttGWjtdgknx9J03WhB+u3lrCMQz1hBUPKITOMkSF3LirQDM9iVG9QIGslhrfwKhQFAvJl0wOEjkIEAktaasTYJhoq3dRj+X76MRmlfpCMBgt/S2TffoAhPaUp093Fhvx4h3e2plMCiLW7qKwA11ZSK1dEx/HEFC5NUMlWxUhrfM7nQmd";

    fn vector_body() -> String {
        format!("<xml><AppId><![CDATA[wxb11529c136998cb6]]></AppId><Encrypt><![CDATA[{VECTOR_ENCRYPT}]]></Encrypt></xml>")
    }

    /// When the vector was pushed (its `timestamp`).
    const VECTOR_TIME: i64 = 1_413_192_605;

    const VECTOR_QUERY: &str = "signature=bafb94c8b6d2c6a13565d242eb8945748ff7a041&timestamp=1413192605&nonce=1320562132&encrypt_type=aes&msg_signature=603e0c33a9825598571fa3ef6402256f37f7607c";

    #[test]
    fn a_push_from_outside_the_freshness_window_is_refused() {
        for now in [VECTOR_TIME + FRESHNESS + 1, VECTOR_TIME - FRESHNESS - 1] {
            assert!(matches!(
                open(&settings(None), VECTOR_QUERY, vector_body().as_bytes(), now),
                Err(Refused::Envelope(_))
            ));
        }
        for now in [VECTOR_TIME + FRESHNESS, VECTOR_TIME - FRESHNESS] {
            assert!(open(&settings(None), VECTOR_QUERY, vector_body().as_bytes(), now).is_ok());
        }
    }

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

    #[test]
    fn opens_the_published_verify_ticket_vector() {
        let push = open(
            &settings(None),
            VECTOR_QUERY,
            vector_body().as_bytes(),
            VECTOR_TIME,
        )
        .unwrap();
        assert_eq!(push.create_time, 1_413_192_605);
        assert_eq!(
            push.kind,
            PushKind::VerifyTicket {
                ticket: "ticket@@@mock-verify-ticket-0001".into()
            }
        );
    }

    #[test]
    fn a_wrong_signature_is_refused_before_decryption() {
        let query = VECTOR_QUERY.replace("603e0c33", "603e0c34");
        assert_eq!(
            open(
                &settings(None),
                &query,
                vector_body().as_bytes(),
                VECTOR_TIME
            ),
            Err(Refused::Signature)
        );
        let missing = "timestamp=1413192605&nonce=1320562132";
        assert_eq!(
            open(
                &settings(None),
                missing,
                vector_body().as_bytes(),
                VECTOR_TIME
            ),
            Err(Refused::Signature)
        );
    }

    #[test]
    fn the_previous_key_opens_pushes_sealed_before_a_key_change() {
        let mut rotated = settings(Some(KEY));
        rotated.encoding_aes_key = Secret::new(OTHER_KEY.into());
        assert!(open(
            &rotated,
            VECTOR_QUERY,
            vector_body().as_bytes(),
            VECTOR_TIME
        )
        .is_ok());
        let mut without = settings(None);
        without.encoding_aes_key = Secret::new(OTHER_KEY.into());
        assert!(matches!(
            open(
                &without,
                VECTOR_QUERY,
                vector_body().as_bytes(),
                VECTOR_TIME
            ),
            Err(Refused::Envelope(_))
        ));
    }

    #[test]
    fn another_platforms_push_is_refused() {
        let mut other = settings(None);
        other.component_appid = "wxother".into();
        assert!(matches!(
            open(&other, VECTOR_QUERY, vector_body().as_bytes(), VECTOR_TIME),
            Err(Refused::Envelope(_))
        ));
    }

    #[test]
    fn entity_declarations_are_refused() {
        let body = r#"<!DOCTYPE xml [<!ENTITY e "boom">]><xml><Encrypt>&e;</Encrypt></xml>"#;
        assert!(matches!(
            open(&settings(None), VECTOR_QUERY, body.as_bytes(), VECTOR_TIME),
            Err(Refused::Envelope(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics_and_never_opens(query in ".{0,200}", body in proptest::collection::vec(any::<u8>(), 0..600)) {
            // Random bytes cannot carry a valid signature: nothing is ever accepted.
            prop_assert!(open(&settings(None), &query, &body, VECTOR_TIME).is_err());
        }

        #[test]
        fn arbitrary_envelopes_with_a_plausible_query_are_refused(encrypt in "[A-Za-z0-9+/=]{0,400}", appid in "[a-z0-9]{0,20}") {
            let body = format!("<xml><AppId><![CDATA[{appid}]]></AppId><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>");
            prop_assume!(encrypt != VECTOR_ENCRYPT);
            prop_assert!(open(&settings(None), VECTOR_QUERY, body.as_bytes(), VECTOR_TIME).is_err());
        }

        #[test]
        fn a_valid_body_with_an_arbitrary_query_is_refused(query in "[a-z_=&0-9%]{0,200}") {
            prop_assume!(!query.contains("603e0c33a9825598571fa3ef6402256f37f7607c"));
            prop_assert!(open(&settings(None), &query, vector_body().as_bytes(), VECTOR_TIME).is_err());
        }

        #[test]
        fn a_tampered_ciphertext_is_refused(position in 0usize..VECTOR_ENCRYPT.len(), byte in b'A'..=b'Z') {
            let mut tampered = VECTOR_ENCRYPT.as_bytes().to_vec();
            prop_assume!(tampered[position] != byte);
            tampered[position] = byte;
            let tampered = String::from_utf8(tampered).unwrap();
            let body = vector_body().replace(VECTOR_ENCRYPT, &tampered);
            prop_assert_eq!(open(&settings(None), VECTOR_QUERY, body.as_bytes(), VECTOR_TIME), Err(Refused::Signature));
        }
    }
}
