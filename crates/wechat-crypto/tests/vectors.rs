//! Published and derived test vectors (vectors A, B and D of docs/wechat.md#test-vectors).

mod common;

use common::{APPID_A, KEY_A, RANDOM_A, TOKEN_A};
use wechat_crypto::{msg_signature, signature, EncodingAesKey, MessageCrypt};

fn crypt_a() -> MessageCrypt {
    MessageCrypt::new(
        TOKEN_A,
        EncodingAesKey::parse(KEY_A).expect("vector A key"),
        APPID_A,
    )
}

const ENCRYPT_A: &str =
    "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg==";

#[test]
fn vector_a_key_bytes() {
    let key = EncodingAesKey::parse(KEY_A).expect("vector A key");
    assert_eq!(
        hex::encode(key.as_bytes()),
        "69b71d79f8218a39259a7a29aabb2dbafc31cb3d35db7e39ebbf3d0010831051"
    );
}

#[test]
fn vector_a_encrypt() {
    assert_eq!(
        crypt_a().encrypt_with_random("我是中文abcd123", RANDOM_A),
        ENCRYPT_A
    );
}

#[test]
fn vector_a_decrypt() {
    assert_eq!(
        crypt_a().decrypt(ENCRYPT_A).as_deref(),
        Ok("我是中文abcd123")
    );
}

#[test]
fn vector_a_msg_signature() {
    let expected = "82c962d39941aa48552f90ef55aa323dc620cc10";
    assert_eq!(
        msg_signature(TOKEN_A, "1409304348", "xxxxxx", ENCRYPT_A),
        expected
    );
    let crypt = crypt_a();
    assert_eq!(
        crypt.msg_signature("1409304348", "xxxxxx", ENCRYPT_A),
        expected
    );
    assert_eq!(
        crypt
            .decrypt_verified(expected, "1409304348", "xxxxxx", ENCRYPT_A)
            .as_deref(),
        Ok("我是中文abcd123")
    );
}

#[test]
fn vector_a_encrypt_reply_round_trips() {
    let crypt = crypt_a();
    let xml = crypt.encrypt_reply_with_random("我是中文abcd123", "1409304348", "xxxxxx", RANDOM_A);
    assert_eq!(
        xml,
        format!(
            "<xml><Encrypt><![CDATA[{ENCRYPT_A}]]></Encrypt>\
             <MsgSignature><![CDATA[82c962d39941aa48552f90ef55aa323dc620cc10]]></MsgSignature>\
             <TimeStamp>1409304348</TimeStamp>\
             <Nonce><![CDATA[xxxxxx]]></Nonce></xml>"
        )
    );

    let random = crypt.encrypt_reply("hi", "1", "n");
    let encrypt = between(&random, "<Encrypt><![CDATA[", "]]></Encrypt>");
    let sig = between(&random, "<MsgSignature><![CDATA[", "]]></MsgSignature>");
    assert_eq!(
        crypt.decrypt_verified(sig, "1", "n", encrypt).as_deref(),
        Ok("hi")
    );
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> &'a str {
    let from = s.find(start).expect("start marker") + start.len();
    let to = from + s[from..].find(end).expect("end marker");
    &s[from..to]
}

const TOKEN_B: &str = "QDG6eK";
const KEY_B: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const RECEIVE_ID_B: &str = "wx5823bf96d3bd56c7";
const TIMESTAMP_B: &str = "1409659813";
const NONCE_B: &str = "1372623149";
const MSG_SIGNATURE_B: &str = "477715d11cdb4164915debcba66cb864d751f3e6";
const ENCRYPT_B: &str = "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==";

#[test]
fn vector_b_signature_and_decryption() {
    assert_eq!(
        msg_signature(TOKEN_B, TIMESTAMP_B, NONCE_B, ENCRYPT_B),
        MSG_SIGNATURE_B
    );
    let crypt = MessageCrypt::new(
        TOKEN_B,
        EncodingAesKey::parse(KEY_B).expect("vector B key"),
        RECEIVE_ID_B,
    );
    let msg = crypt
        .decrypt_verified(MSG_SIGNATURE_B, TIMESTAMP_B, NONCE_B, ENCRYPT_B)
        .expect("vector B decrypts");
    assert!(
        msg.contains("<Content><![CDATA[hello]]></Content>"),
        "{msg}"
    );
    assert!(msg.contains("<AgentID>218</AgentID>"), "{msg}");
    assert_eq!(
        msg,
        "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n\
         <FromUserName><![CDATA[mycreate]]></FromUserName>\n\
         <CreateTime>1409659813</CreateTime>\n\
         <MsgType><![CDATA[text]]></MsgType>\n\
         <Content><![CDATA[hello]]></Content>\n\
         <MsgId>4561255354251345929</MsgId>\n\
         <AgentID>218</AgentID>\n\
         </xml>"
    );
}

const PLAIN_D: &str = "<xml><AppId><![CDATA[wxb11529c136998cb6]]></AppId><CreateTime>1413192605</CreateTime><InfoType><![CDATA[component_verify_ticket]]></InfoType><ComponentVerifyTicket><![CDATA[ticket@@@mock-verify-ticket-0001]]></ComponentVerifyTicket></xml>";
const ENCRYPT_D: &str = "jn1L23DB+6ELqJ+6bruv261zRlw0bcDHulcAe9Y1wRdRsAg/CmhNIW8lFzc4SVg/QwEF7TnTCcVtdmEzSAP8qX0X4s9htVXe4CQX1ZY5cpHzJvpnSCO3xzQa825B08cpAjIAQV8L7TCuRVCvxO1jEBYtC8LfJiX+h0pq9L78NJ1STK7Wvc6QmUzBiQ4/lsLSpvXojf3K8Ob6m7m+ttGWjtdgknx9J03WhB+u3lrCMQz1hBUPKITOMkSF3LirQDM9iVG9QIGslhrfwKhQFAvJl0wOEjkIEAktaasTYJhoq3dRj+X76MRmlfpCMBgt/S2TffoAhPaUp093Fhvx4h3e2plMCiLW7qKwA11ZSK1dEx/HEFC5NUMlWxUhrfM7nQmd";

#[test]
fn vector_d_component_verify_ticket() {
    assert_eq!(PLAIN_D.len(), 238);
    let crypt = crypt_a();
    assert_eq!(crypt.encrypt_with_random(PLAIN_D, RANDOM_A), ENCRYPT_D);
    assert_eq!(
        msg_signature(TOKEN_A, "1413192605", "1320562132", ENCRYPT_D),
        "603e0c33a9825598571fa3ef6402256f37f7607c"
    );
    assert_eq!(
        signature(TOKEN_A, "1413192605", "1320562132"),
        "bafb94c8b6d2c6a13565d242eb8945748ff7a041"
    );
    assert_eq!(
        crypt.signature("1413192605", "1320562132"),
        "bafb94c8b6d2c6a13565d242eb8945748ff7a041"
    );
    assert_eq!(
        crypt.verify_signature(
            "bafb94c8b6d2c6a13565d242eb8945748ff7a041",
            "1413192605",
            "1320562132"
        ),
        Ok(())
    );
    assert_eq!(
        crypt
            .decrypt_verified(
                "603e0c33a9825598571fa3ef6402256f37f7607c",
                "1413192605",
                "1320562132",
                ENCRYPT_D
            )
            .as_deref(),
        Ok(PLAIN_D)
    );
}
