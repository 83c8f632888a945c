//! Sealing what must not be readable at rest: AES-256-GCM under `[secrets] master_key`.
//!
//! An AppSecret given through the admin API is stored so that every instance and every restart
//! has it, which puts it in SQLite or Redis; so is an authorizer's refresh token, the one
//! credential that cannot be fetched again without the account's owner (see
//! [`crate::store::sealed`]). Sealed, a copy of the store (a backup, a Redis
//! replica, a `MONITOR` session) does not give the secret away. The account's storage name is
//! the associated data, so a sealed secret moved to another account's record does not open.
//! A wrong master key fails the authentication tag: an error that says so, never garbage.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rand::RngCore;

use crate::configuration::{MasterKey, Secret};

/// The prefix of a sealed value: the format version, so another scheme can be told apart.
const SEALED_PREFIX: &str = "v1:";
/// AES-GCM's 96-bit nonce.
const NONCE_LEN: usize = 12;

/// Why a sealed secret could not be opened. Never carries the secret or the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The value is not in the sealed format (not written by this hub, or damaged).
    #[error("the sealed secret of {0} is malformed")]
    Malformed(String),
    /// The authentication tag did not verify: another master key sealed it (or it was altered).
    #[error(
        "the sealed secret of {0} does not open with this [secrets] master_key (a different key \
         sealed it, or the stored value was altered)"
    )]
    WrongKey(String),
}

/// Seals and opens secrets with one master key.
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl Sealer {
    /// A sealer for `key`.
    pub fn new(key: &MasterKey) -> Sealer {
        Sealer {
            cipher: Aes256Gcm::new(key.expose().into()),
        }
    }

    /// Seals `secret` for the account named `account` (the associated data).
    pub fn seal(&self, account: &str, secret: &Secret) -> String {
        self.seal_text(account, secret.expose())
    }

    /// Whether `value` has the sealed format (a value stored by an earlier version, which did
    /// not seal it, does not).
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(SEALED_PREFIX)
    }

    /// Seals `text` for `place` (the associated data: the account, or the credential, it belongs
    /// to).
    pub fn seal_text(&self, place: &str, text: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: text.as_bytes(),
            aad: place.as_bytes(),
        };
        // Encryption with a valid key and nonce length cannot fail.
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        format!(
            "{SEALED_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(sealed)
        )
    }

    /// Opens a value made by [`Sealer::seal`] for the same account.
    pub fn open(&self, account: &str, sealed: &str) -> Result<Secret, SealError> {
        let malformed = || SealError::Malformed(account.to_string());
        let bytes = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .filter(|bytes| bytes.len() > NONCE_LEN)
            .ok_or_else(malformed)?;
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: account.as_bytes(),
                },
            )
            .map_err(|_| SealError::WrongKey(account.to_string()))?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| malformed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(byte: u8) -> Sealer {
        Sealer::new(&MasterKey::from_bytes([byte; 32]))
    }

    #[test]
    fn a_sealed_secret_opens_with_the_same_key_and_account_only() {
        let secret = Secret::new("the-app-secret".into());
        let sealed = sealer(1).seal("app/wx1", &secret);
        assert!(!sealed.contains("the-app-secret"));
        assert_eq!(
            sealer(1).open("app/wx1", &sealed).unwrap().expose(),
            "the-app-secret"
        );
        assert_eq!(
            sealer(2).open("app/wx1", &sealed),
            Err(SealError::WrongKey("app/wx1".into()))
        );
        assert_eq!(
            sealer(1).open("app/wx2", &sealed),
            Err(SealError::WrongKey("app/wx2".into()))
        );
    }

    #[test]
    fn two_seals_of_one_secret_differ_and_garbage_is_malformed() {
        let secret = Secret::new("s".into());
        assert_ne!(sealer(1).seal("a", &secret), sealer(1).seal("a", &secret));
        for bad in ["", "v1:", "v1:%%%", "v2:AAAA", "v1:AAAA"] {
            assert_eq!(
                sealer(1).open("a", bad),
                Err(SealError::Malformed("a".into())),
                "{bad}"
            );
        }
    }
}
