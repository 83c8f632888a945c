//! Opening one push from Work WeChat to a suite's command callback URL (指令回调URL): the
//! envelope is opened by [`crate::envelope`] (signature first, freshness, the current then the
//! previous key, the suite id as receive id), and what the message says is read here. Pure (no
//! I/O). The URL check Work WeChat makes when the URL is set is [`echo`].

use crate::configuration::SuiteSettings;
use crate::envelope::{self, identifier, Keys, Opened, Refused};

/// A push, opened and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuitePush {
    /// Its `msg_signature`: one push and its replays have the same.
    pub signature: String,
    /// `TimeStamp`, in Unix seconds (0 when absent): orders pushes of one suite.
    pub sent_at: i64,
    /// What it is about.
    pub kind: SuitePushKind,
}

/// What a push is about (its `InfoType`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SuitePushKind {
    /// The ticket pushed every ten minutes (`suite_ticket`).
    Ticket {
        /// The ticket.
        ticket: String,
    },
    /// A corp installed the suite (`create_auth`).
    Installed {
        /// The temporary code to exchange with `get_permanent_code` (valid once).
        auth_code: String,
    },
    /// A corp's permanent code was reset (`reset_permanent_code`): the old one is dead.
    Reset {
        /// The temporary code to exchange for the new permanent code.
        auth_code: String,
    },
    /// A corp changed the suite's permissions (`change_auth`).
    Changed {
        /// The corp.
        corpid: String,
    },
    /// A corp uninstalled the suite (`cancel_auth`).
    Uninstalled {
        /// The corp.
        corpid: String,
    },
    /// Another InfoType: acknowledged, nothing stored.
    Other(String),
}

/// What opens the pushes of `settings`' suite.
fn keys(settings: &SuiteSettings) -> Keys<'_> {
    Keys {
        receive_id: &settings.suite_id,
        token: settings.token.expose(),
        encoding_aes_key: settings.encoding_aes_key.expose(),
        previous_encoding_aes_key: settings
            .previous_encoding_aes_key
            .as_ref()
            .map(|k| k.expose()),
        addressee: ("ToUserName", "SuiteId"),
    }
}

/// Opens a push for the suite `settings` describes, received at `now` (Unix seconds).
pub fn open(
    settings: &SuiteSettings,
    query: &str,
    body: &[u8],
    now: i64,
) -> Result<SuitePush, Refused> {
    let Opened { signature, message } = envelope::open(&keys(settings), query, body, now)?;
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
        "suite_ticket" => SuitePushKind::Ticket {
            ticket: field("SuiteTicket")?,
        },
        "create_auth" => SuitePushKind::Installed {
            auth_code: auth_code(field("AuthCode")?)?,
        },
        "reset_permanent_code" => SuitePushKind::Reset {
            auth_code: auth_code(field("AuthCode")?)?,
        },
        "change_auth" => SuitePushKind::Changed {
            corpid: identifier(field("AuthCorpId")?, "malformed AuthCorpId")?,
        },
        "cancel_auth" => SuitePushKind::Uninstalled {
            corpid: identifier(field("AuthCorpId")?, "malformed AuthCorpId")?,
        },
        other => SuitePushKind::Other(other.chars().take(64).collect()),
    };
    let sent_at = message
        .get("TimeStamp")
        .and_then(|t| t.trim().parse::<i64>().ok())
        .unwrap_or(0);
    Ok(SuitePush {
        signature,
        sent_at,
        kind,
    })
}

/// The answer to Work WeChat's check of the URL (`GET ?msg_signature&timestamp&nonce&echostr`):
/// the decrypted `echostr`.
pub fn echo(settings: &SuiteSettings, query: &str, now: i64) -> Result<String, Refused> {
    envelope::echo(&keys(settings), query, now)
}

/// An auth code of a sane length (Work WeChat: 64 to 512 bytes).
fn auth_code(text: String) -> Result<String, Refused> {
    if text.len() <= 512 {
        Ok(text)
    } else {
        Err(Refused::Envelope("AuthCode too long"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::{RefreshOverrides, Secret};
    use wechat_crypto::{EncodingAesKey, MessageCrypt};

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const OTHER_KEY: &str = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut";
    const SUITE: &str = "ww4asffe99e54c0f00";
    const NOW: i64 = 1_700_000_000;

    fn settings(key: &str, previous: Option<&str>) -> SuiteSettings {
        SuiteSettings {
            suite_id: SUITE.into(),
            secret: Secret::new("s".into()),
            token: Secret::new("suitetoken".into()),
            encoding_aes_key: Secret::new(key.into()),
            previous_encoding_aes_key: previous.map(|k| Secret::new(k.into())),
            corp_tickets: vec![],
            refresh: RefreshOverrides::default(),
        }
    }

    /// A push of `message` as Work WeChat seals it: encrypted for `receive_id` with `key`,
    /// signed with the suite's Token. Returns (query, body).
    fn sealed(message: &str, receive_id: &str, key: &str, sent_at: i64) -> (String, String) {
        let crypt = MessageCrypt::new(
            "suitetoken",
            EncodingAesKey::parse(key).unwrap(),
            receive_id.to_string(),
        );
        let encrypt = crypt.encrypt(message);
        let timestamp = sent_at.to_string();
        let signature = crypt.msg_signature(&timestamp, "nonce1", &encrypt);
        let query = format!("msg_signature={signature}&timestamp={timestamp}&nonce=nonce1");
        let body = format!(
            "<xml><ToUserName><![CDATA[{receive_id}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>"
        );
        (query, body)
    }

    fn ticket_message(suite: &str) -> String {
        format!("<xml><SuiteId><![CDATA[{suite}]]></SuiteId><InfoType><![CDATA[suite_ticket]]></InfoType><TimeStamp>{NOW}</TimeStamp><SuiteTicket><![CDATA[ticket-1]]></SuiteTicket></xml>")
    }

    #[test]
    fn opens_each_event_the_suite_receives() {
        let cases = [
            (ticket_message(SUITE), SuitePushKind::Ticket { ticket: "ticket-1".into() }),
            (
                format!("<xml><SuiteId>{SUITE}</SuiteId><InfoType>create_auth</InfoType><TimeStamp>{NOW}</TimeStamp><AuthCode>code-1</AuthCode></xml>"),
                SuitePushKind::Installed { auth_code: "code-1".into() },
            ),
            (
                format!("<xml><SuiteId>{SUITE}</SuiteId><InfoType>reset_permanent_code</InfoType><TimeStamp>{NOW}</TimeStamp><AuthCode>code-2</AuthCode></xml>"),
                SuitePushKind::Reset { auth_code: "code-2".into() },
            ),
            (
                format!("<xml><SuiteId>{SUITE}</SuiteId><InfoType>change_auth</InfoType><TimeStamp>{NOW}</TimeStamp><AuthCorpId>wwcorp1</AuthCorpId></xml>"),
                SuitePushKind::Changed { corpid: "wwcorp1".into() },
            ),
            (
                format!("<xml><SuiteId>{SUITE}</SuiteId><InfoType>cancel_auth</InfoType><TimeStamp>{NOW}</TimeStamp><AuthCorpId>wwcorp1</AuthCorpId></xml>"),
                SuitePushKind::Uninstalled { corpid: "wwcorp1".into() },
            ),
        ];
        for (message, kind) in cases {
            let (query, body) = sealed(&message, SUITE, KEY, NOW);
            let push = open(&settings(KEY, None), &query, body.as_bytes(), NOW).unwrap();
            assert_eq!(push.kind, kind);
            assert_eq!(push.sent_at, NOW);
        }
    }

    #[test]
    fn a_push_sealed_for_another_suite_or_forged_is_refused() {
        let (query, body) = sealed(&ticket_message("wwother"), "wwother", KEY, NOW);
        assert!(open(&settings(KEY, None), &query, body.as_bytes(), NOW).is_err());
        let (query, body) = sealed(&ticket_message(SUITE), SUITE, KEY, NOW);
        let forged = query.replace("msg_signature=", "msg_signature=0");
        assert_eq!(
            open(&settings(KEY, None), &forged, body.as_bytes(), NOW),
            Err(Refused::Signature)
        );
        // A replay from outside the freshness window.
        assert!(matches!(
            open(&settings(KEY, None), &query, body.as_bytes(), NOW + 3600),
            Err(Refused::Envelope(_))
        ));
    }

    #[test]
    fn the_previous_key_opens_pushes_sealed_before_a_key_change() {
        let (query, body) = sealed(&ticket_message(SUITE), SUITE, KEY, NOW);
        assert!(open(
            &settings(OTHER_KEY, Some(KEY)),
            &query,
            body.as_bytes(),
            NOW
        )
        .is_ok());
        assert!(open(&settings(OTHER_KEY, None), &query, body.as_bytes(), NOW).is_err());
    }

    #[test]
    fn the_url_check_answers_the_decrypted_echostr() {
        let crypt = MessageCrypt::new(
            "suitetoken",
            EncodingAesKey::parse(KEY).unwrap(),
            SUITE.to_string(),
        );
        let echostr = crypt.encrypt("echo-1234");
        let signature = crypt.msg_signature(&NOW.to_string(), "n", &echostr);
        let encoded = echostr
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        let query = format!("msg_signature={signature}&timestamp={NOW}&nonce=n&echostr={encoded}");
        assert_eq!(
            echo(&settings(KEY, None), &query, NOW).as_deref(),
            Ok("echo-1234")
        );
        let forged = query.replace("msg_signature=", "msg_signature=1");
        assert_eq!(
            echo(&settings(KEY, None), &forged, NOW),
            Err(Refused::Signature)
        );
    }
}
