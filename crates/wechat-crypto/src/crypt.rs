//! The encrypted envelope: `random ‖ length ‖ message ‖ appid`, padded to a
//! 32-byte boundary and sealed with AES-256-CBC.

use std::fmt;

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::signature::{msg_signature, signature, verify_msg_signature, verify_signature};
use crate::{CryptoError, EncodingAesKey};

/// AES-256 in CBC mode, encrypting direction.
type Encryptor = cbc::Encryptor<aes::Aes256>;
/// AES-256 in CBC mode, decrypting direction.
type Decryptor = cbc::Decryptor<aes::Aes256>;

/// Size of the AES block, which the ciphertext length must be a multiple of.
const AES_BLOCK: usize = 16;
/// Block size WeChat uses for PKCS#7 padding (twice the AES block).
const PAD_BLOCK: usize = 32;
/// Length of the random prefix of the plaintext.
const RANDOM_LEN: usize = 16;
/// Length of the random prefix plus the big-endian message length.
const HEADER_LEN: usize = RANDOM_LEN + 4;

/// Seals and opens WeChat messages for one receiver.
///
/// A receiver is identified by its token (for signatures), its
/// EncodingAESKey and the app id that WeChat appends to every plaintext
/// (the component appid on the open platform; the corp id, suite id or
/// receive id on Work WeChat). Keeping them together means a handler needs
/// only this value to check and decrypt a push, or to build a reply.
///
/// `Debug` shows the app id but redacts the token and the keys.
#[derive(Clone)]
pub struct MessageCrypt {
    /// Shared secret that signatures are computed with.
    token: String,
    /// Key that new messages are sealed with and that is tried first when
    /// opening.
    key: EncodingAesKey,
    /// Key in use before the last rotation in the console, tried when the
    /// current key cannot open a message so that pushes sealed just before a
    /// rotation are not lost.
    previous_key: Option<EncodingAesKey>,
    /// App id appended to sealed plaintexts and required in opened ones.
    app_id: String,
}

impl MessageCrypt {
    /// Creates a receiver with a token, the current key and the expected app
    /// id (or receive id).
    pub fn new(token: impl Into<String>, key: EncodingAesKey, app_id: impl Into<String>) -> Self {
        MessageCrypt {
            token: token.into(),
            key,
            previous_key: None,
            app_id: app_id.into(),
        }
    }

    /// Adds the key that was in use before the last rotation. Decryption
    /// falls back to it when the current key fails.
    pub fn with_previous_key(mut self, previous_key: EncodingAesKey) -> Self {
        self.previous_key = Some(previous_key);
        self
    }

    /// The token that signatures are computed with.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The app id (or receive id) that messages are sealed for.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The URL `signature` for this receiver's token.
    pub fn signature(&self, timestamp: &str, nonce: &str) -> String {
        signature(&self.token, timestamp, nonce)
    }

    /// The `msg_signature` of an `Encrypt` field for this receiver's token.
    pub fn msg_signature(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        msg_signature(&self.token, timestamp, nonce, encrypt)
    }

    /// Checks a received URL `signature` in constant time.
    pub fn verify_signature(
        &self,
        signature: &str,
        timestamp: &str,
        nonce: &str,
    ) -> Result<(), CryptoError> {
        verify_signature(&self.token, timestamp, nonce, signature)
    }

    /// Checks a received `msg_signature` over `encrypt` in constant time.
    pub fn verify_msg_signature(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> Result<(), CryptoError> {
        verify_msg_signature(&self.token, timestamp, nonce, encrypt, msg_signature)
    }

    /// Seals `msg` with a fresh random prefix and returns the base64
    /// `Encrypt` field.
    ///
    /// # Panics
    ///
    /// Panics if `msg` is longer than `u32::MAX` bytes, which the 4-byte
    /// length field cannot express.
    pub fn encrypt(&self, msg: &str) -> String {
        self.encrypt_with_random(msg, rand::random())
    }

    /// Seals `msg` with the given 16-byte random prefix and returns the
    /// base64 `Encrypt` field.
    ///
    /// The output is deterministic, which is what test vectors and
    /// reproducible mock fixtures need; production code should use
    /// [`MessageCrypt::encrypt`].
    ///
    /// # Panics
    ///
    /// Panics if `msg` is longer than `u32::MAX` bytes, which the 4-byte
    /// length field cannot express.
    pub fn encrypt_with_random(&self, msg: &str, random: [u8; 16]) -> String {
        let msg_len =
            u32::try_from(msg.len()).expect("message longer than u32::MAX bytes cannot be framed");
        let unpadded = HEADER_LEN + msg.len() + self.app_id.len();
        let pad = PAD_BLOCK - unpadded % PAD_BLOCK;
        let mut plain = Vec::with_capacity(unpadded + pad);
        plain.extend_from_slice(&random);
        plain.extend_from_slice(&msg_len.to_be_bytes());
        plain.extend_from_slice(msg.as_bytes());
        plain.extend_from_slice(self.app_id.as_bytes());
        // `pad` is in 1..=32, so the cast is lossless.
        plain.resize(unpadded + pad, pad as u8);
        STANDARD.encode(aes_cbc_encrypt(&self.key, &plain))
    }

    /// Opens a base64 `Encrypt` field and returns the message.
    ///
    /// Tries the current key first and then, if one is configured, the
    /// previous key. If both fail, the current key's error is returned.
    ///
    /// This does not check `msg_signature`; for data from the network use
    /// [`MessageCrypt::decrypt_verified`], which rejects forged ciphertexts
    /// before they reach the padding check.
    pub fn decrypt(&self, encrypt: &str) -> Result<String, CryptoError> {
        let ciphertext = STANDARD
            .decode(encrypt)
            .map_err(|err| CryptoError::Base64 {
                detail: err.to_string(),
            })?;
        if ciphertext.is_empty() || ciphertext.len() % AES_BLOCK != 0 {
            return Err(CryptoError::CiphertextLength {
                len: ciphertext.len(),
            });
        }
        match open(&self.key, &ciphertext, &self.app_id) {
            Ok(msg) => Ok(msg),
            Err(first) => match &self.previous_key {
                Some(previous) => open(previous, &ciphertext, &self.app_id).map_err(|_| first),
                None => Err(first),
            },
        }
    }

    /// Checks `msg_signature` over `encrypt` in constant time and, only if
    /// it matches, opens `encrypt`.
    ///
    /// Arguments are in the order of the push's query string followed by the
    /// body's `Encrypt` field.
    pub fn decrypt_verified(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> Result<String, CryptoError> {
        self.verify_msg_signature(msg_signature, timestamp, nonce, encrypt)?;
        self.decrypt(encrypt)
    }

    /// Seals `msg` and wraps it in the encrypted reply document that WeChat
    /// expects in answer to an encrypted message push:
    ///
    /// ```text
    /// <xml><Encrypt><![CDATA[…]]></Encrypt><MsgSignature><![CDATA[…]]></MsgSignature><TimeStamp>…</TimeStamp><Nonce><![CDATA[…]]></Nonce></xml>
    /// ```
    ///
    /// `timestamp` is XML-escaped and `nonce` is split around any `]]>` so
    /// that neither can break the document.
    ///
    /// # Panics
    ///
    /// Panics if `msg` is longer than `u32::MAX` bytes.
    pub fn encrypt_reply(&self, msg: &str, timestamp: &str, nonce: &str) -> String {
        self.encrypt_reply_with_random(msg, timestamp, nonce, rand::random())
    }

    /// [`MessageCrypt::encrypt_reply`] with a caller-chosen random prefix,
    /// for deterministic fixtures.
    ///
    /// # Panics
    ///
    /// Panics if `msg` is longer than `u32::MAX` bytes.
    pub fn encrypt_reply_with_random(
        &self,
        msg: &str,
        timestamp: &str,
        nonce: &str,
        random: [u8; 16],
    ) -> String {
        let encrypt = self.encrypt_with_random(msg, random);
        let signature = self.msg_signature(timestamp, nonce, &encrypt);
        format!(
            "<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt>\
             <MsgSignature><![CDATA[{signature}]]></MsgSignature>\
             <TimeStamp>{}</TimeStamp>\
             <Nonce><![CDATA[{}]]></Nonce></xml>",
            escape_text(timestamp),
            nonce.replace("]]>", "]]]]><![CDATA[>"),
        )
    }
}

impl fmt::Debug for MessageCrypt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageCrypt")
            .field("token", &"<redacted>")
            .field("key", &self.key)
            .field("previous_key", &self.previous_key)
            .field("app_id", &self.app_id)
            .finish()
    }
}

/// Escapes `&`, `<` and `>` for use as XML element text.
fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}

/// AES-256-CBC over whole 16-byte blocks; a trailing partial block (which
/// callers never pass) is ignored.
fn aes_cbc_encrypt(key: &EncodingAesKey, plain: &[u8]) -> Vec<u8> {
    let (chunks, _) = plain.as_chunks::<AES_BLOCK>();
    let mut blocks: Vec<_> = chunks.iter().map(|c| GenericArray::from(*c)).collect();
    Encryptor::new(key.as_bytes().into(), &key.iv().into()).encrypt_blocks_mut(&mut blocks);
    blocks.iter().flat_map(|b| b.iter().copied()).collect()
}

/// AES-256-CBC decryption over whole 16-byte blocks; a trailing partial
/// block (which callers reject beforehand) is ignored.
fn aes_cbc_decrypt(key: &EncodingAesKey, ciphertext: &[u8]) -> Vec<u8> {
    let (chunks, _) = ciphertext.as_chunks::<AES_BLOCK>();
    let mut blocks: Vec<_> = chunks.iter().map(|c| GenericArray::from(*c)).collect();
    Decryptor::new(key.as_bytes().into(), &key.iv().into()).decrypt_blocks_mut(&mut blocks);
    blocks.iter().flat_map(|b| b.iter().copied()).collect()
}

/// Decrypts block-aligned `ciphertext` with `key` and parses the plaintext,
/// requiring the trailing app id to equal `expected_app_id`.
fn open(
    key: &EncodingAesKey,
    ciphertext: &[u8],
    expected_app_id: &str,
) -> Result<String, CryptoError> {
    let plain = aes_cbc_decrypt(key, ciphertext);
    let body = strip_padding(&plain)?;

    let Some((header, rest)) = body.split_first_chunk::<HEADER_LEN>() else {
        return Err(CryptoError::Truncated { len: body.len() });
    };
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&header[RANDOM_LEN..]);
    let declared = u32::from_be_bytes(len_bytes);
    let too_long = CryptoError::LengthField {
        declared,
        available: rest.len(),
    };
    let msg_len = usize::try_from(declared).map_err(|_| too_long.clone())?;
    let (msg, app_id) = rest.split_at_checked(msg_len).ok_or(too_long)?;

    let msg = std::str::from_utf8(msg).map_err(|err| CryptoError::Utf8 {
        valid_up_to: err.valid_up_to(),
    })?;
    if app_id != expected_app_id.as_bytes() {
        return Err(CryptoError::WrongAppId {
            expected: expected_app_id.to_owned(),
            found: String::from_utf8_lossy(app_id).into_owned(),
        });
    }
    Ok(msg.to_owned())
}

/// Removes PKCS#7 padding with block size 32.
///
/// The pad value must be in 1..=32, no longer than the data, and every pad
/// byte must equal it. The pad bytes are inspected without early exit.
fn strip_padding(plain: &[u8]) -> Result<&[u8], CryptoError> {
    let Some(&pad) = plain.last() else {
        return Err(CryptoError::Padding { pad: 0 });
    };
    let pad_len = usize::from(pad);
    if pad_len == 0 || pad_len > PAD_BLOCK || pad_len > plain.len() {
        return Err(CryptoError::Padding { pad });
    }
    let (body, padding) = plain.split_at(plain.len() - pad_len);
    let diff = padding.iter().fold(0u8, |acc, &b| acc | (b ^ pad));
    if diff != 0 {
        return Err(CryptoError::Padding { pad });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_padding_accepts_1_to_32() {
        for pad in 1..=32u8 {
            let mut data = vec![7u8; 40];
            data.extend(std::iter::repeat_n(pad, usize::from(pad)));
            assert_eq!(strip_padding(&data), Ok(&[7u8; 40][..]), "pad {pad}");
        }
        assert_eq!(strip_padding(&[32u8; 32]), Ok(&[][..]));
    }

    #[test]
    fn strip_padding_rejects_bad_values() {
        assert_eq!(strip_padding(&[]), Err(CryptoError::Padding { pad: 0 }));
        assert_eq!(
            strip_padding(&[1, 2, 0]),
            Err(CryptoError::Padding { pad: 0 })
        );
        assert_eq!(
            strip_padding(&[33u8; 48]),
            Err(CryptoError::Padding { pad: 33 })
        );
        assert_eq!(
            strip_padding(&[4, 4, 4]),
            Err(CryptoError::Padding { pad: 4 })
        );
        assert_eq!(
            strip_padding(&[9, 9, 9, 1, 3, 3]),
            Err(CryptoError::Padding { pad: 3 })
        );
    }

    #[test]
    fn reply_escapes_timestamp_and_nonce() {
        let key = EncodingAesKey::from_bytes([1u8; 32]);
        let crypt = MessageCrypt::new("tok", key, "wxid");
        let xml = crypt.encrypt_reply_with_random("m", "1<2&3", "a]]>b", [0u8; 16]);
        assert!(xml.contains("<TimeStamp>1&lt;2&amp;3</TimeStamp>"), "{xml}");
        assert!(
            xml.contains("<Nonce><![CDATA[a]]]]><![CDATA[>b]]></Nonce>"),
            "{xml}"
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let key = EncodingAesKey::from_bytes([0xab; 32]);
        let crypt =
            MessageCrypt::new("very-secret-token", key.clone(), "wxid").with_previous_key(key);
        let shown = format!("{crypt:?}");
        assert!(!shown.contains("very-secret-token"), "{shown}");
        assert!(!shown.contains("abab"), "{shown}");
        assert!(shown.contains("wxid"), "{shown}");
    }
}
