//! `signature` and `msg_signature`: hex SHA-1 over the sorted inputs.
//!
//! WeChat signs a push by sorting the shared token, the timestamp, the nonce
//! and (for encrypted bodies) the `Encrypt` field lexicographically,
//! concatenating them and taking the SHA-1. Received signatures are compared
//! in constant time so that response timing reveals nothing about how many
//! leading characters of a forged signature were right.

use sha1::{Digest, Sha1};

use crate::CryptoError;

/// Hex SHA-1 of the byte-wise sorted, concatenated `parts`.
fn sorted_sha1_hex(parts: &mut [&str]) -> String {
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for part in parts.iter() {
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The plain URL `signature`: `hex(sha1(sort([token, timestamp, nonce])))`.
///
/// Sent as the `signature` query parameter on every push, encrypted or not.
pub fn signature(token: &str, timestamp: &str, nonce: &str) -> String {
    sorted_sha1_hex(&mut [token, timestamp, nonce])
}

/// The `msg_signature` of an encrypted body:
/// `hex(sha1(sort([token, timestamp, nonce, encrypt])))`.
///
/// `encrypt` is the base64 `Encrypt` field exactly as it appears on the wire.
pub fn msg_signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    sorted_sha1_hex(&mut [token, timestamp, nonce, encrypt])
}

/// Checks a received `signature` against the one computed from `token`,
/// `timestamp` and `nonce`, in constant time.
///
/// Hex digits are compared case-insensitively.
pub fn verify_signature(
    token: &str,
    timestamp: &str,
    nonce: &str,
    received: &str,
) -> Result<(), CryptoError> {
    check(&signature(token, timestamp, nonce), received)
}

/// Checks a received `msg_signature` against the one computed from `token`,
/// `timestamp`, `nonce` and the `Encrypt` field, in constant time.
///
/// Hex digits are compared case-insensitively.
pub fn verify_msg_signature(
    token: &str,
    timestamp: &str,
    nonce: &str,
    encrypt: &str,
    received: &str,
) -> Result<(), CryptoError> {
    check(&msg_signature(token, timestamp, nonce, encrypt), received)
}

/// Compares an expected lowercase hex signature with a received one.
fn check(expected: &str, received: &str) -> Result<(), CryptoError> {
    let expected = expected.as_bytes();
    let received = received.as_bytes();
    if expected.len() != received.len() {
        return Err(CryptoError::SignatureMismatch);
    }
    let mut diff = 0u8;
    for (e, r) in expected.iter().zip(received) {
        diff |= e ^ r.to_ascii_lowercase();
    }
    if std::hint::black_box(diff) == 0 {
        Ok(())
    } else {
        Err(CryptoError::SignatureMismatch)
    }
}

/// Compares two byte strings in time that depends only on their lengths.
///
/// Use it for any comparison of a secret-derived value with attacker input.
/// Lengths are not hidden: a length mismatch returns `false` immediately.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_basics() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn check_accepts_uppercase_hex_and_rejects_other_lengths() {
        let sig = signature("t", "1", "n");
        assert_eq!(check(&sig, &sig.to_ascii_uppercase()), Ok(()));
        assert_eq!(check(&sig, &sig[..39]), Err(CryptoError::SignatureMismatch));
        assert_eq!(check(&sig, ""), Err(CryptoError::SignatureMismatch));
    }
}
