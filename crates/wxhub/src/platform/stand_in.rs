//! The refresh token a platform SDK holds in WeChat's place (docs/platform.md#platform-sdks-through-the-gateway).
//!
//! An SDK that exchanges an authorization code through the gateway (`api_query_auth`) needs an
//! `authorizer_refresh_token` in the answer, keeps it forever and sends it back in every
//! `api_authorizer_token` call. WeChat's own refresh token never leaves the hub (the hub alone
//! renews the authorizer's token with it, and it may rotate); the SDK is given a *stand-in*:
//! `wxhub-` and the base64url of HMAC-SHA256 over the platform's and the authorizer's appids,
//! under a key of the hub's.
//!
//! *Why a digest and not a value stored with the authorizer:* the redirect and the `authorized`
//! push carry the same code and are exchanged at about the same time, on one instance or on
//! several; a random value written by each would race, and the SDK could keep the one that lost.
//! A digest is the same on every instance and at every exchange, needs no write, and stays valid
//! however often WeChat's refresh token rotates, for as long as the authorizer is authorized.
//!
//! *The key:* derived from `[secrets] master_key` when one is set, else from the platform's
//! AppSecret. A stand-in under either is accepted, so that setting a master key later does not
//! invalidate what SDKs hold; without a master key, changing the AppSecret does.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::configuration::{ComponentSettings, MasterKey};

/// What every stand-in starts with: tells it apart from WeChat's refresh tokens in a support
/// conversation, without saying anything about the authorizer.
const PREFIX: &str = "wxhub-";
/// The purpose the master key is narrowed to before it keys a stand-in (it also seals secrets at
/// rest: one key, two separate uses).
const PURPOSE: &[u8] = b"wxhub authorizer_refresh_token stand-in v1";

/// Issues and checks stand-ins.
pub struct StandIns {
    /// The key derived from the master key, when one is configured.
    master: Option<[u8; 32]>,
}

impl StandIns {
    /// Stand-ins of a hub with `master_key` (or none).
    pub fn new(master_key: Option<&MasterKey>) -> StandIns {
        StandIns {
            master: master_key.map(|key| hmac_sha256(key.expose(), &[PURPOSE])),
        }
    }

    /// The stand-in given to SDKs for `authorizer_appid` of `platform`.
    pub fn issue(&self, platform: &ComponentSettings, authorizer_appid: &str) -> String {
        let key = self.master.unwrap_or_else(|| secret_key(platform));
        stand_in(&key, &platform.component_appid, authorizer_appid)
    }

    /// Whether `presented` is a stand-in of `authorizer_appid` of `platform`, under the master
    /// key's derivation or the AppSecret's (compared in constant time).
    pub fn accepts(
        &self,
        platform: &ComponentSettings,
        authorizer_appid: &str,
        presented: &str,
    ) -> bool {
        let component = platform.component_appid.as_str();
        let matches = |key: &[u8; 32]| {
            let expected = stand_in(key, component, authorizer_appid);
            bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
        };
        let by_master = self.master.as_ref().is_some_and(matches);
        by_master | matches(&secret_key(platform))
    }
}

/// The key derived from the platform's AppSecret.
fn secret_key(platform: &ComponentSettings) -> [u8; 32] {
    hmac_sha256(platform.secret.expose().as_bytes(), &[PURPOSE])
}

/// The stand-in of one authorizer under `key`. Each appid is length-prefixed, so that no two
/// pairs of appids give the same message.
fn stand_in(key: &[u8; 32], component_appid: &str, authorizer_appid: &str) -> String {
    let component_len = (component_appid.len() as u64).to_be_bytes();
    let authorizer_len = (authorizer_appid.len() as u64).to_be_bytes();
    let mac = hmac_sha256(
        key,
        &[
            &component_len,
            component_appid.as_bytes(),
            &authorizer_len,
            authorizer_appid.as_bytes(),
        ],
    );
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac)
    )
}

/// HMAC-SHA256 (RFC 2104) of the concatenation of `message`.
fn hmac_sha256(key: &[u8], message: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    for part in message {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::{RefreshOverrides, Secret};

    fn platform(secret: &str) -> ComponentSettings {
        ComponentSettings {
            component_appid: "wxc1".into(),
            secret: Secret::new(secret.into()),
            token: Secret::new("t".into()),
            encoding_aes_key: Secret::new("k".repeat(43)),
            previous_encoding_aes_key: None,
            authorizer_tickets: Vec::new(),
            refresh: RefreshOverrides::default(),
        }
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2, and test case 6 (a key longer than the block).
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let mac = hmac_sha256(
            &[0xaa; 131],
            &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
        );
        assert_eq!(
            hex::encode(mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_stand_in_is_stable_and_belongs_to_one_authorizer_of_one_platform() {
        let key = MasterKey::from_bytes([7; 32]);
        let stand_ins = StandIns::new(Some(&key));
        let p = platform("s1");
        let issued = stand_ins.issue(&p, "wxa1");
        assert!(issued.starts_with(PREFIX), "{issued}");
        assert_eq!(issued, StandIns::new(Some(&key)).issue(&p, "wxa1"));
        assert!(stand_ins.accepts(&p, "wxa1", &issued));
        assert!(!stand_ins.accepts(&p, "wxa2", &issued));
        assert!(!stand_ins.accepts(&p, "wxa1", &issued[..issued.len() - 1]));
        assert!(!stand_ins.accepts(&p, "wxa1", ""));
        let other = ComponentSettings {
            component_appid: "wxc2".into(),
            ..platform("s1")
        };
        assert!(!stand_ins.accepts(&other, "wxa1", &issued));
        // The appids are delimited: ("wxc1", "1wxa") and ("wxc11", "wxa") differ.
        let shifted = ComponentSettings {
            component_appid: "wxc11".into(),
            ..platform("s1")
        };
        assert_ne!(
            stand_ins.issue(&p, "1wxa"),
            stand_ins.issue(&shifted, "wxa")
        );
        // Another master key: another stand-in.
        let other_key = StandIns::new(Some(&MasterKey::from_bytes([8; 32])));
        assert!(!other_key.accepts(&platform("other secret"), "wxa1", &issued));
    }

    #[test]
    fn a_stand_in_issued_without_a_master_key_stays_valid_once_one_is_set() {
        let without = StandIns::new(None);
        let issued = without.issue(&platform("s1"), "wxa1");
        let with = StandIns::new(Some(&MasterKey::from_bytes([7; 32])));
        assert!(with.accepts(&platform("s1"), "wxa1", &issued));
        assert_ne!(with.issue(&platform("s1"), "wxa1"), issued);
        // Keyed by the AppSecret alone, it does not survive a new AppSecret.
        assert!(!without.accepts(&platform("s2"), "wxa1", &issued));
    }
}
