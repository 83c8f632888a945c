//! WXBizMsgCrypt: the signature and encryption scheme that WeChat uses for
//! pushes to a server (official accounts, the open platform and Work WeChat).
//!
//! The scheme has three parts:
//!
//! * **Signatures.** [`signature`] authenticates a plain request URL and
//!   [`msg_signature`] authenticates an encrypted body. Both are the hex SHA-1
//!   of the sorted, concatenated inputs and are checked in constant time with
//!   [`verify_signature`] and [`verify_msg_signature`].
//! * **The key.** [`EncodingAesKey`] turns the 43-character console value into
//!   the 32-byte AES key.
//! * **The envelope.** [`MessageCrypt`] encrypts and decrypts the `Encrypt`
//!   field (`random ‖ length ‖ message ‖ appid`, AES-256-CBC with a 32-byte
//!   PKCS#7 block), keeps the previous key for rotation and builds encrypted
//!   reply documents.
//!
//! Every failure on untrusted input is reported as a [`CryptoError`]; nothing
//! in this crate panics on data received from the network.
//!
//! ```
//! use wechat_crypto::{EncodingAesKey, MessageCrypt};
//!
//! let key = EncodingAesKey::parse("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")?;
//! let crypt = MessageCrypt::new("pamtest", key, "wxb11529c136998cb6");
//!
//! let encrypt = crypt.encrypt("<xml>hello</xml>");
//! let msg_signature = crypt.msg_signature("1409304348", "xxxxxx", &encrypt);
//! let msg = crypt.decrypt_verified(&msg_signature, "1409304348", "xxxxxx", &encrypt)?;
//! assert_eq!(msg, "<xml>hello</xml>");
//! # Ok::<(), wechat_crypto::CryptoError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

mod crypt;
mod error;
mod key;
mod signature;

pub use crypt::MessageCrypt;
pub use error::{CryptoError, KeyError};
pub use key::EncodingAesKey;
pub use signature::{
    constant_time_eq, msg_signature, signature, verify_msg_signature, verify_signature,
};
