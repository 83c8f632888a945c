//! Opening one push from WeChat to a platform's event URL: the signed, sealed envelope is opened
//! by [`crate::envelope`] (signature first, freshness, the current then the previous key, this
//! platform as the addressee), and what the message says is read here. Pure (no I/O), so every
//! rule is tested on its own and against arbitrary input.

use crate::configuration::ComponentSettings;
use crate::envelope::{self, identifier, Keys, Opened};
pub use crate::envelope::{Refused, FRESHNESS, MAX_PUSH_BYTES};

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

/// Opens a push for the platform `settings` describes, received at `now` (Unix seconds).
pub fn open(
    settings: &ComponentSettings,
    query: &str,
    body: &[u8],
    now: i64,
) -> Result<Push, Refused> {
    let keys = Keys {
        receive_id: &settings.component_appid,
        token: settings.token.expose(),
        encoding_aes_key: settings.encoding_aes_key.expose(),
        previous_encoding_aes_key: settings
            .previous_encoding_aes_key
            .as_ref()
            .map(|k| k.expose()),
        addressee: ("AppId", "AppId"),
    };
    let Opened { signature, message } = envelope::open(&keys, query, body, now)?;
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
            authorizer_appid: identifier(field("AuthorizerAppid")?, "malformed AuthorizerAppid")?,
            authorization_code: field("AuthorizationCode")?,
            updated: info_type == "updateauthorized",
        },
        "unauthorized" => PushKind::Unauthorized {
            authorizer_appid: identifier(field("AuthorizerAppid")?, "malformed AuthorizerAppid")?,
        },
        other => PushKind::Other(other.chars().take(64).collect()),
    };
    Ok(Push {
        signature,
        create_time,
        kind,
    })
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
