//! Errors reported by signature checks, key parsing and decryption.

use std::fmt;

/// Everything that can go wrong when checking or opening a WeChat message.
///
/// Each variant names one way in which received data (or a configured key)
/// is malformed, so that callers can log a precise reason and tests can
/// assert on the exact failure. No variant carries key material or message
/// plaintext; the app ids in [`CryptoError::WrongAppId`] are public
/// identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// The configured EncodingAESKey is not a valid 43-character key.
    InvalidKey(KeyError),
    /// The `Encrypt` field is not valid standard base64.
    Base64 {
        /// What the base64 decoder objected to.
        detail: String,
    },
    /// The decoded ciphertext is empty or not a whole number of 16-byte AES
    /// blocks, so it cannot be AES-CBC output.
    CiphertextLength {
        /// Length of the decoded ciphertext in bytes.
        len: usize,
    },
    /// The decrypted data does not end in valid PKCS#7 padding with a block
    /// size of 32 (pad value 1..=32, all pad bytes equal, no longer than the
    /// data). This is the usual symptom of a wrong key.
    Padding {
        /// The last byte of the decrypted data, i.e. the claimed pad length.
        pad: u8,
    },
    /// The unpadded plaintext is shorter than the 16-byte random prefix plus
    /// the 4-byte length field.
    Truncated {
        /// Length of the unpadded plaintext in bytes.
        len: usize,
    },
    /// The 4-byte message length field claims more bytes than follow it.
    LengthField {
        /// The message length stated in the plaintext.
        declared: u32,
        /// The number of bytes actually available after the length field.
        available: usize,
    },
    /// The decrypted message is not valid UTF-8.
    Utf8 {
        /// Byte offset of the first invalid sequence within the message.
        valid_up_to: usize,
    },
    /// The message was sealed for a different app id (or corp id / receive
    /// id) than the one this receiver expects.
    WrongAppId {
        /// The app id this receiver is configured with.
        expected: String,
        /// The app id found at the end of the plaintext (lossily decoded if
        /// it is not UTF-8).
        found: String,
    },
    /// A received `signature` or `msg_signature` does not match the value
    /// computed from the token and request parameters.
    SignatureMismatch,
}

/// Why an EncodingAESKey string was rejected.
///
/// Kept separate from [`CryptoError`] so that configuration errors can say
/// precisely what is wrong with the key without ever echoing the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The key does not have exactly 43 characters.
    Length {
        /// Number of characters in the rejected key.
        found: usize,
    },
    /// The key contains a character outside `[a-zA-Z0-9]`.
    Character {
        /// Zero-based character index of the first offending character.
        index: usize,
    },
    /// The key characters do not base64-decode to exactly 32 bytes.
    Decode,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptoError::InvalidKey(reason) => write!(f, "invalid EncodingAESKey: {reason}"),
            CryptoError::Base64 { detail } => {
                write!(f, "Encrypt field is not valid base64: {detail}")
            }
            CryptoError::CiphertextLength { len } => write!(
                f,
                "ciphertext length {len} is not a positive multiple of the 16-byte AES block"
            ),
            CryptoError::Padding { pad } => write!(
                f,
                "invalid PKCS#7 padding: last byte {pad} does not describe 1..=32 equal pad bytes"
            ),
            CryptoError::Truncated { len } => write!(
                f,
                "plaintext of {len} bytes is shorter than the 20-byte random and length header"
            ),
            CryptoError::LengthField {
                declared,
                available,
            } => write!(
                f,
                "message length field says {declared} bytes but only {available} bytes follow it"
            ),
            CryptoError::Utf8 { valid_up_to } => write!(
                f,
                "decrypted message is not valid UTF-8 (invalid sequence at byte {valid_up_to})"
            ),
            CryptoError::WrongAppId { expected, found } => write!(
                f,
                "message is addressed to app id {found:?}, expected {expected:?}"
            ),
            CryptoError::SignatureMismatch => {
                f.write_str("signature does not match the expected value")
            }
        }
    }
}

/// The `Display` text of every variant is self-contained (the key reason is
/// part of it), so no variant reports a `source`.
impl std::error::Error for CryptoError {}

impl From<KeyError> for CryptoError {
    fn from(reason: KeyError) -> Self {
        CryptoError::InvalidKey(reason)
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Length { found } => {
                write!(f, "expected exactly 43 characters, found {found}")
            }
            KeyError::Character { index } => {
                write!(f, "character {index} is not in [a-zA-Z0-9]")
            }
            KeyError::Decode => f.write_str("does not base64-decode to 32 bytes"),
        }
    }
}

impl std::error::Error for KeyError {}
