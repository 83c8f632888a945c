//! The EncodingAESKey: 43 base64 characters that encode a 32-byte AES key.

use std::fmt;
use std::str::FromStr;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

use crate::{CryptoError, KeyError};

/// Number of characters in an EncodingAESKey as shown in the WeChat console.
const ENCODED_LEN: usize = 43;

/// Standard-alphabet decoder that tolerates non-zero trailing bits.
///
/// 43 characters carry 258 bits for a 256-bit key, and the console does not
/// zero the two spare bits (the official sample key ends in `G`), so a strict
/// canonical decoder would reject real keys.
const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// A parsed EncodingAESKey: the 32-byte AES-256 key used to seal messages.
///
/// Parsing up front turns a malformed configuration value into an error at
/// start-up instead of a decryption failure on the first push. The first 16
/// bytes of the key double as the CBC initialisation vector.
///
/// `Debug` never prints the key, so the type is safe to log as part of a
/// larger configuration struct.
#[derive(Clone)]
pub struct EncodingAesKey {
    /// The decoded AES-256 key.
    key: [u8; 32],
}

impl EncodingAesKey {
    /// Parses the 43-character EncodingAESKey from the WeChat console.
    ///
    /// The value must be exactly 43 characters of `[a-zA-Z0-9]`; the AES key
    /// is `base64_decode(value + "=")`.
    pub fn parse(encoded: &str) -> Result<Self, CryptoError> {
        let found = encoded.chars().count();
        if found != ENCODED_LEN {
            return Err(KeyError::Length { found }.into());
        }
        if let Some(index) = encoded.chars().position(|c| !c.is_ascii_alphanumeric()) {
            return Err(KeyError::Character { index }.into());
        }
        let mut padded = String::with_capacity(ENCODED_LEN + 1);
        padded.push_str(encoded);
        padded.push('=');
        let decoded = KEY_ENGINE
            .decode(padded.as_bytes())
            .map_err(|_| KeyError::Decode)?;
        let key = <[u8; 32]>::try_from(decoded.as_slice()).map_err(|_| KeyError::Decode)?;
        Ok(EncodingAesKey { key })
    }

    /// Wraps an already decoded 32-byte key, for callers that store the raw
    /// key rather than the console string.
    pub fn from_bytes(key: [u8; 32]) -> Self {
        EncodingAesKey { key }
    }

    /// The raw 32-byte AES key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// The CBC initialisation vector: the first 16 bytes of the key.
    pub(crate) fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.key[..16]);
        iv
    }
}

impl FromStr for EncodingAesKey {
    type Err = CryptoError;

    fn from_str(encoded: &str) -> Result<Self, Self::Err> {
        EncodingAesKey::parse(encoded)
    }
}

impl fmt::Debug for EncodingAesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncodingAesKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    #[test]
    fn parses_official_sample_key() {
        let key = EncodingAesKey::parse(SAMPLE).expect("sample key parses");
        assert_eq!(
            hex::encode(key.as_bytes()),
            "69b71d79f8218a39259a7a29aabb2dbafc31cb3d35db7e39ebbf3d0010831051"
        );
        assert_eq!(key.iv()[..], key.as_bytes()[..16]);
        let via_from_str: EncodingAesKey = SAMPLE.parse().expect("FromStr works");
        assert_eq!(via_from_str.as_bytes(), key.as_bytes());
    }

    #[test]
    fn debug_does_not_print_key() {
        let key = EncodingAesKey::parse(SAMPLE).expect("sample key parses");
        let shown = format!("{key:?}");
        assert_eq!(shown, "EncodingAesKey(<redacted>)");
        assert!(!shown.contains("abcdef"));
        assert!(!shown.contains("69b71d"));
    }

    #[test]
    fn rejects_wrong_lengths() {
        for bad in [
            "",
            &SAMPLE[..42],
            &format!("{SAMPLE}H"),
            &format!("{SAMPLE}="),
        ] {
            let found = bad.chars().count();
            assert_eq!(
                EncodingAesKey::parse(bad).map(|_| ()),
                Err(CryptoError::InvalidKey(KeyError::Length { found })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_characters() {
        let cases = [
            ("abcdefghijklmnopqrstuvwxyz0123456789ABCDEF=", 42),
            ("+bcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", 0),
            ("abcdefghijklmnopqrstuvwxyz0123456789ABCD/FG", 40),
            ("abcdefghijklmnopqrstuvwxyz 123456789ABCDEFG", 26),
            ("abcdefghijklmnopqrstuvwxyz0123456789ABCDEF\u{e9}", 42),
        ];
        for (bad, index) in cases {
            assert_eq!(
                EncodingAesKey::parse(bad).map(|_| ()),
                Err(CryptoError::InvalidKey(KeyError::Character { index })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn error_message_does_not_echo_key() {
        let bad = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF!";
        let err = EncodingAesKey::parse(bad).map(|_| ()).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("abcdef"), "{text}");
        assert_eq!(
            text,
            "invalid EncodingAESKey: character 42 is not in [a-zA-Z0-9]"
        );
    }
}
