//! Property tests: round trips for any message, and no panics on any input.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{seal_raw, APPID_A, KEY_A, TOKEN_A};
use proptest::prelude::*;
use wechat_crypto::{EncodingAesKey, MessageCrypt};

fn crypt_a() -> MessageCrypt {
    MessageCrypt::new(
        TOKEN_A,
        EncodingAesKey::parse(KEY_A).expect("vector A key"),
        APPID_A,
    )
}

proptest! {
    #[test]
    fn round_trip(msg in any::<String>(), random in any::<[u8; 16]>(), app_id in "[a-zA-Z0-9]{0,40}") {
        let key = EncodingAesKey::from_bytes([3u8; 32]);
        let crypt = MessageCrypt::new(TOKEN_A, key, app_id);
        let sealed = crypt.encrypt_with_random(&msg, random);
        prop_assert_eq!(STANDARD.decode(&sealed).map(|c| c.len() % 32), Ok(0));
        prop_assert_eq!(crypt.decrypt(&sealed), Ok(msg.clone()));
        let sig = crypt.msg_signature("1700000000", "nonce", &sealed);
        prop_assert_eq!(crypt.decrypt_verified(&sig, "1700000000", "nonce", &sealed), Ok(msg));
    }

    #[test]
    fn round_trip_with_previous_key(msg in any::<String>(), key in any::<[u8; 32]>(), old in any::<[u8; 32]>()) {
        let old_crypt = MessageCrypt::new(TOKEN_A, EncodingAesKey::from_bytes(old), APPID_A);
        let sealed = old_crypt.encrypt(&msg);
        let rotated = MessageCrypt::new(TOKEN_A, EncodingAesKey::from_bytes(key), APPID_A)
            .with_previous_key(EncodingAesKey::from_bytes(old));
        prop_assert_eq!(rotated.decrypt(&sealed), Ok(msg));
    }

    #[test]
    fn decrypt_arbitrary_strings_never_panics(input in any::<String>()) {
        let crypt = crypt_a();
        let _ = crypt.decrypt(&input);
        let _ = crypt.decrypt_verified(&input, &input, &input, &input);
    }

    #[test]
    fn decrypt_base64_like_strings_never_panics(input in "[A-Za-z0-9+/]{0,200}={0,2}") {
        let _ = crypt_a().decrypt(&input);
    }

    #[test]
    fn decrypt_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = crypt_a().decrypt(&STANDARD.encode(&bytes));
    }

    #[test]
    fn decrypt_block_aligned_bytes_never_panics(blocks in proptest::collection::vec(any::<[u8; 16]>(), 1..20)) {
        let bytes: Vec<u8> = blocks.concat();
        let crypt = crypt_a().with_previous_key(EncodingAesKey::from_bytes([9u8; 32]));
        let _ = crypt.decrypt(&STANDARD.encode(&bytes));
    }

    #[test]
    fn decrypt_crafted_plaintexts_never_panics(
        blocks in proptest::collection::vec(any::<[u8; 16]>(), 1..12),
        pad in 0u8..=40,
        declared in any::<u32>(),
    ) {
        // Arbitrary plaintexts with a plausible pad byte and length field
        // reach the parser instead of failing at the padding check.
        let mut plain: Vec<u8> = blocks.concat();
        let len = plain.len();
        if len >= 20 {
            plain[16..20].copy_from_slice(&declared.to_be_bytes());
        }
        let pad_len = usize::from(pad).min(len);
        for byte in &mut plain[len - pad_len..] {
            *byte = pad;
        }
        let key = EncodingAesKey::parse(KEY_A).expect("vector A key");
        let _ = crypt_a().decrypt(&seal_raw(key.as_bytes(), &plain));
    }

    #[test]
    fn key_parse_never_panics(input in any::<String>()) {
        let _ = EncodingAesKey::parse(&input);
    }

    #[test]
    fn any_alphanumeric_43_char_key_parses(input in "[a-zA-Z0-9]{43}") {
        prop_assert!(EncodingAesKey::parse(&input).is_ok());
    }
}
