//! Malformed input, wrong keys and wrong signatures must give typed errors.

mod common;

use common::{frame, seal_raw, APPID_A, KEY_A, RANDOM_A, TOKEN_A};
use wechat_crypto::{
    verify_msg_signature, verify_signature, CryptoError, EncodingAesKey, KeyError, MessageCrypt,
};

const OTHER_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

fn key_a() -> EncodingAesKey {
    EncodingAesKey::parse(KEY_A).expect("vector A key")
}

fn other_key() -> EncodingAesKey {
    EncodingAesKey::parse(OTHER_KEY).expect("vector B key")
}

fn crypt_a() -> MessageCrypt {
    MessageCrypt::new(TOKEN_A, key_a(), APPID_A)
}

#[test]
fn wrong_app_id() {
    let sealed = MessageCrypt::new(TOKEN_A, key_a(), "wx0000000000000000")
        .encrypt_with_random("hello", RANDOM_A);
    let err = crypt_a().decrypt(&sealed).unwrap_err();
    assert_eq!(
        err,
        CryptoError::WrongAppId {
            expected: APPID_A.to_owned(),
            found: "wx0000000000000000".to_owned(),
        }
    );
    assert_eq!(
        err.to_string(),
        "message is addressed to app id \"wx0000000000000000\", expected \"wxb11529c136998cb6\""
    );
}

#[test]
fn non_utf8_app_id_is_reported_lossily() {
    let plain = frame(2, b"hi", b"wx\xff");
    let err = crypt_a().decrypt(&seal_raw(key_a().as_bytes(), &plain));
    assert_eq!(
        err,
        Err(CryptoError::WrongAppId {
            expected: APPID_A.to_owned(),
            found: "wx\u{fffd}".to_owned(),
        })
    );
}

#[test]
fn bad_base64() {
    for bad in [
        "not base64!",
        "jn1L23DB+6ELqJ+6",
        "jn1L23DB+6ELqJ+6bruv2=",
        "====",
    ] {
        let err = crypt_a().decrypt(bad);
        assert!(
            matches!(
                err,
                Err(CryptoError::Base64 { .. }) | Err(CryptoError::CiphertextLength { .. })
            ),
            "{bad:?}: {err:?}"
        );
    }
    assert!(matches!(
        crypt_a().decrypt("@@@@"),
        Err(CryptoError::Base64 { .. })
    ));
    assert!(matches!(
        crypt_a().decrypt("AAAAAAAAAAAAAAAAAAAAAA"),
        Err(CryptoError::Base64 { .. })
    ));
}

#[test]
fn ciphertext_length_not_block_multiple() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    for len in [0usize, 1, 15, 17, 31, 33] {
        let encoded = b64.encode(vec![0u8; len]);
        assert_eq!(
            crypt_a().decrypt(&encoded),
            Err(CryptoError::CiphertextLength { len }),
            "len {len}"
        );
    }
}

#[test]
fn bad_padding() {
    let key = key_a();
    let mut body = frame(5, b"hello", APPID_A.as_bytes());
    let len = body.len();

    body[len - 1] = 0;
    assert_eq!(
        crypt_a().decrypt(&seal_raw(key.as_bytes(), &body)),
        Err(CryptoError::Padding { pad: 0 })
    );

    body[len - 1] = 33;
    assert_eq!(
        crypt_a().decrypt(&seal_raw(key.as_bytes(), &body)),
        Err(CryptoError::Padding { pad: 33 })
    );

    body[len - 1] = 255;
    assert_eq!(
        crypt_a().decrypt(&seal_raw(key.as_bytes(), &body)),
        Err(CryptoError::Padding { pad: 255 })
    );

    let mut inconsistent = frame(5, b"hello", APPID_A.as_bytes());
    let last = *inconsistent.last().unwrap();
    assert!(last >= 2, "test frame needs at least two pad bytes");
    inconsistent[len - 2] = last.wrapping_add(1);
    assert_eq!(
        crypt_a().decrypt(&seal_raw(key.as_bytes(), &inconsistent)),
        Err(CryptoError::Padding { pad: last })
    );
}

#[test]
fn full_block_of_padding_is_accepted() {
    // 16 + 4 + 12 + 0 = 32 bytes, so a whole 32-byte pad block follows.
    let crypt = MessageCrypt::new(TOKEN_A, key_a(), "");
    let sealed = crypt.encrypt_with_random("abcdefghijkl", RANDOM_A);
    assert_eq!(sealed.len(), 88, "64 bytes of ciphertext");
    assert_eq!(crypt.decrypt(&sealed).as_deref(), Ok("abcdefghijkl"));
}

#[test]
fn lying_length_field() {
    let key = key_a();
    let available = 5 + APPID_A.len();
    for declared in [available as u32 + 1, 1000, u32::MAX] {
        let body = frame(declared, b"hello", APPID_A.as_bytes());
        assert_eq!(
            crypt_a().decrypt(&seal_raw(key.as_bytes(), &body)),
            Err(CryptoError::LengthField {
                declared,
                available
            })
        );
    }
    // A length field that is too short leaves part of the message in the
    // app id, which then no longer matches.
    let body = frame(3, b"hello", APPID_A.as_bytes());
    assert!(matches!(
        crypt_a().decrypt(&seal_raw(key.as_bytes(), &body)),
        Err(CryptoError::WrongAppId { .. })
    ));
}

#[test]
fn truncated_header() {
    // 32 bytes of plaintext with 16 bytes of padding leave a 16-byte body.
    let mut plain = vec![b'r'; 16];
    plain.extend([16u8; 16]);
    assert_eq!(
        crypt_a().decrypt(&seal_raw(key_a().as_bytes(), &plain)),
        Err(CryptoError::Truncated { len: 16 })
    );
}

#[test]
fn non_utf8_message() {
    let body = frame(3, b"a\xc3(", APPID_A.as_bytes());
    assert_eq!(
        crypt_a().decrypt(&seal_raw(key_a().as_bytes(), &body)),
        Err(CryptoError::Utf8 { valid_up_to: 1 })
    );
}

#[test]
fn wrong_signature() {
    let crypt = crypt_a();
    let encrypt = crypt.encrypt("hello");
    let good = crypt.msg_signature("1409304348", "xxxxxx", &encrypt);
    assert_eq!(
        crypt
            .decrypt_verified(&good, "1409304348", "xxxxxx", &encrypt)
            .as_deref(),
        Ok("hello")
    );

    let mut flipped = good.clone().into_bytes();
    flipped[39] = if flipped[39] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    for bad in [flipped.as_str(), "", &good[..39], "not a signature"] {
        assert_eq!(
            crypt.decrypt_verified(bad, "1409304348", "xxxxxx", &encrypt),
            Err(CryptoError::SignatureMismatch),
            "{bad:?}"
        );
    }
    // Any change to the signed fields invalidates the signature.
    assert_eq!(
        crypt.decrypt_verified(&good, "1409304349", "xxxxxx", &encrypt),
        Err(CryptoError::SignatureMismatch)
    );
    assert_eq!(
        crypt.decrypt_verified(&good, "1409304348", "xxxxxy", &encrypt),
        Err(CryptoError::SignatureMismatch)
    );
    // Signature is checked before decryption, so garbage is never opened.
    let garbage_sig = crypt.msg_signature("1", "n", "garbage");
    assert_eq!(
        crypt.decrypt_verified(&good, "1", "n", "garbage"),
        Err(CryptoError::SignatureMismatch)
    );
    assert!(matches!(
        crypt.decrypt_verified(&garbage_sig, "1", "n", "garbage"),
        Err(CryptoError::Base64 { .. })
    ));

    assert_eq!(
        verify_signature(
            TOKEN_A,
            "1413192605",
            "1320562132",
            "bafb94c8b6d2c6a13565d242eb8945748ff7a041"
        ),
        Ok(())
    );
    assert_eq!(
        verify_signature(
            TOKEN_A,
            "1413192605",
            "1320562133",
            "bafb94c8b6d2c6a13565d242eb8945748ff7a041"
        ),
        Err(CryptoError::SignatureMismatch)
    );
    assert_eq!(
        verify_msg_signature(TOKEN_A, "1", "n", "e", &crypt.msg_signature("1", "n", "f")),
        Err(CryptoError::SignatureMismatch)
    );
    assert_eq!(
        crypt.verify_signature(
            "bafb94c8b6d2c6a13565d242eb8945748ff7a041",
            "1413192605",
            "x"
        ),
        Err(CryptoError::SignatureMismatch)
    );
}

#[test]
fn invalid_key_strings() {
    let cases = [
        ("", KeyError::Length { found: 0 }),
        ("abc", KeyError::Length { found: 3 }),
        (
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH",
            KeyError::Length { found: 44 },
        ),
        (
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG=",
            KeyError::Length { found: 44 },
        ),
        (
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF=",
            KeyError::Character { index: 42 },
        ),
        (
            "abcdefghijklmnopqrstuvwxyz012345678+ABCDEFG",
            KeyError::Character { index: 35 },
        ),
        (
            "中bcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
            KeyError::Character { index: 0 },
        ),
    ];
    for (bad, reason) in cases {
        let err = EncodingAesKey::parse(bad).map(|_| ()).unwrap_err();
        assert_eq!(err, CryptoError::InvalidKey(reason), "{bad:?}");
        assert!(err.to_string().starts_with("invalid EncodingAESKey: "));
        assert!(bad.len() < 10 || !err.to_string().contains(&bad[5..10]));
    }
    assert!("abc".parse::<EncodingAesKey>().is_err());
}

#[test]
fn previous_key_fallback() {
    // Sealed with the old key, before the rotation.
    let old = MessageCrypt::new(TOKEN_A, other_key(), APPID_A);
    let sealed_old = old.encrypt_with_random("before rotation", RANDOM_A);

    let rotated = MessageCrypt::new(TOKEN_A, key_a(), APPID_A).with_previous_key(other_key());
    assert_eq!(
        rotated.decrypt(&sealed_old).as_deref(),
        Ok("before rotation")
    );

    // New messages use the current key, and still open.
    let sealed_new = rotated.encrypt("after rotation");
    assert_eq!(
        rotated.decrypt(&sealed_new).as_deref(),
        Ok("after rotation")
    );
    assert_eq!(
        crypt_a().decrypt(&sealed_new).as_deref(),
        Ok("after rotation")
    );
}

#[test]
fn wrong_key_without_fallback_errors() {
    let sealed =
        MessageCrypt::new(TOKEN_A, other_key(), APPID_A).encrypt_with_random("secret", RANDOM_A);
    let current_only = crypt_a();
    let err = current_only.decrypt(&sealed).unwrap_err();
    assert!(!matches!(err, CryptoError::SignatureMismatch));

    // With a fallback that is also wrong, the current key's error is kept.
    let third = EncodingAesKey::from_bytes([7u8; 32]);
    let both_wrong = crypt_a().with_previous_key(third);
    assert_eq!(both_wrong.decrypt(&sealed).unwrap_err(), err);
}

#[test]
fn error_messages_are_precise() {
    assert_eq!(
        CryptoError::CiphertextLength { len: 17 }.to_string(),
        "ciphertext length 17 is not a positive multiple of the 16-byte AES block"
    );
    assert_eq!(
        CryptoError::LengthField {
            declared: 99,
            available: 3
        }
        .to_string(),
        "message length field says 99 bytes but only 3 bytes follow it"
    );
    assert_eq!(
        CryptoError::SignatureMismatch.to_string(),
        "signature does not match the expected value"
    );
    assert_eq!(
        CryptoError::InvalidKey(KeyError::Length { found: 3 }).to_string(),
        "invalid EncodingAESKey: expected exactly 43 characters, found 3"
    );
    let err: Box<dyn std::error::Error + Send + Sync> = Box::new(CryptoError::Truncated { len: 4 });
    assert_eq!(
        err.to_string(),
        "plaintext of 4 bytes is shorter than the 20-byte random and length header"
    );
}
