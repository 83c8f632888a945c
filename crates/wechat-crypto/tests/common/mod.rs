//! Helpers shared by the integration tests: an independent AES-CBC sealer
//! for crafting plaintexts that `MessageCrypt` itself would never produce.

#![allow(dead_code)]

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Key string of the official sample (vectors A and D).
pub const KEY_A: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
/// App id of the official sample (vectors A and D).
pub const APPID_A: &str = "wxb11529c136998cb6";
/// Token of the official sample (vectors A and D).
pub const TOKEN_A: &str = "pamtest";
/// Random prefix of the official sample (vectors A and D).
pub const RANDOM_A: [u8; 16] = *b"aaaabbbbccccdddd";

/// Encrypts a block-aligned `plain` with AES-256-CBC, IV = key[..16], no
/// padding, and returns it base64-encoded.
pub fn seal_raw(key: &[u8; 32], plain: &[u8]) -> String {
    assert_eq!(plain.len() % 16, 0, "test plaintext must be block-aligned");
    let mut blocks: Vec<_> = plain
        .chunks(16)
        .map(GenericArray::clone_from_slice)
        .collect();
    let iv = GenericArray::clone_from_slice(&key[..16]);
    cbc::Encryptor::<aes::Aes256>::new(key.into(), &iv).encrypt_blocks_mut(&mut blocks);
    let bytes: Vec<u8> = blocks.iter().flatten().copied().collect();
    STANDARD.encode(bytes)
}

/// Builds `random ‖ len ‖ msg ‖ appid` with an explicit length field and a
/// correct 32-byte PKCS#7 padding.
pub fn frame(declared_len: u32, msg: &[u8], app_id: &[u8]) -> Vec<u8> {
    let mut plain = RANDOM_A.to_vec();
    plain.extend_from_slice(&declared_len.to_be_bytes());
    plain.extend_from_slice(msg);
    plain.extend_from_slice(app_id);
    let pad = 32 - plain.len() % 32;
    plain.extend(std::iter::repeat_n(pad as u8, pad));
    plain
}
