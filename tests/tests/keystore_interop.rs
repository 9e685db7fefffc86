//! Our Web3 Secret Storage keystores against two implementations we did not write:
//! eth-account (Python) and ethers v6 (JavaScript), pinned in `ops/test-deps/`.
//!
//! Each direction is checked: keystores we write decrypt with theirs to the same key and
//! address, and keystores they write decrypt with ours. The tools are required: if they are
//! not installed these tests fail and say to run `ops/install-test-deps.sh`.

use integration_tests::tools::{self, Rejection};
use serde_json::Value;
use shared::keystore::{self, KdfParams, KeystoreError};
use shared::ValidatorKey;

/// Non-ASCII on purpose: both tools get the password as raw bytes, as we use it.
const PASSWORD: &[u8] = "correct horse ✓ pässwörd 🔑".as_bytes();

/// Cheap scrypt n for keystores the tools write; matches our fast test profile.
const FAST_SCRYPT_N: u32 = 1024;
const FAST_PBKDF2_C: u32 = 1024;

fn expected(key: &ValidatorKey) -> (String, String) {
    (key.expose_hex().to_string(), key.address().to_string())
}

fn parse(json: &str) -> Value {
    serde_json::from_str(json).expect("keystore is JSON")
}

/// Encrypts with ours and checks that eth-account and ethers both recover the key and the
/// EIP-55 address.
fn assert_ours_opens_in_both(kdf: &KdfParams, password: &[u8]) {
    let key = ValidatorKey::generate();
    let json = keystore::encrypt(&key, password, kdf).expect("encrypt");
    assert_eq!(
        tools::python_decrypt(&json, password),
        expected(&key),
        "eth-account read our {kdf:?} keystore differently"
    );
    assert_eq!(
        tools::node_decrypt(&json, password),
        expected(&key),
        "ethers read our {kdf:?} keystore differently"
    );
}

/// Decrypts a keystore another tool wrote with ours, and checks that ours rejects it
/// under a wrong password.
fn assert_theirs_opens_in_ours(json: &str, key: &ValidatorKey, writer: &str) {
    let ours = keystore::decrypt(json.as_bytes(), PASSWORD)
        .unwrap_or_else(|e| panic!("ours could not read {writer}'s keystore: {e}"));
    assert_eq!(
        ours, *key,
        "ours decrypted {writer}'s keystore to another key"
    );
    assert_eq!(ours.address(), key.address());
    assert!(
        matches!(
            keystore::decrypt(json.as_bytes(), b"not the password"),
            Err(KeystoreError::WrongPassword)
        ),
        "ours must report a wrong password on {writer}'s keystore"
    );
}

#[test]
fn our_fast_scrypt_keystore_opens_in_eth_account_and_ethers() {
    assert_ours_opens_in_both(&KdfParams::scrypt_fast_for_tests(), PASSWORD);
}

#[test]
fn our_fast_pbkdf2_keystore_opens_in_eth_account_and_ethers() {
    assert_ours_opens_in_both(&KdfParams::pbkdf2_fast_for_tests(), PASSWORD);
}

/// The real default (scrypt n=262144, r=8, p=1), so the cost we ship is one they accept.
#[test]
fn our_default_scrypt_keystore_opens_in_eth_account_and_ethers() {
    let kdf = KdfParams::scrypt_default();
    let key = ValidatorKey::generate();
    let json = keystore::encrypt(&key, PASSWORD, &kdf).expect("encrypt");
    assert_eq!(parse(&json)["crypto"]["kdfparams"]["n"], 262_144);
    assert_eq!(tools::python_decrypt(&json, PASSWORD), expected(&key));
    assert_eq!(tools::node_decrypt(&json, PASSWORD), expected(&key));
}

/// Passwords are bytes to every party. A password whose NFKC form differs (the Angstrom
/// sign, the "fi" ligature) still interoperates because no one normalises bytes; ethers
/// would normalise it if handed a JavaScript string.
#[test]
fn our_keystore_with_an_unnormalised_password_opens_in_both() {
    let password = "\u{212B}ngstr\u{f6}m \u{FB01}le".as_bytes();
    assert_ours_opens_in_both(&KdfParams::scrypt_fast_for_tests(), password);
}

#[test]
fn eth_account_scrypt_keystore_opens_in_ours() {
    let key = ValidatorKey::generate();
    let json = tools::python_encrypt(&key, PASSWORD, "scrypt", FAST_SCRYPT_N);
    let v = parse(&json);
    assert_eq!(v["crypto"]["kdf"], "scrypt");
    assert_eq!(v["crypto"]["kdfparams"]["n"], FAST_SCRYPT_N);
    // eth-account writes the address EIP-55 checksummed without `0x`; ours must accept it.
    assert_eq!(
        v["address"],
        &key.address().to_string()[2..],
        "eth-account's address field changed shape; this test no longer covers mixed case"
    );
    assert_theirs_opens_in_ours(&json, &key, "eth-account");
}

#[test]
fn eth_account_pbkdf2_keystore_opens_in_ours() {
    let key = ValidatorKey::generate();
    let json = tools::python_encrypt(&key, PASSWORD, "pbkdf2", FAST_PBKDF2_C);
    let v = parse(&json);
    assert_eq!(v["crypto"]["kdf"], "pbkdf2");
    assert_eq!(v["crypto"]["kdfparams"]["c"], FAST_PBKDF2_C);
    assert_eq!(v["crypto"]["kdfparams"]["prf"], "hmac-sha256");
    assert_theirs_opens_in_ours(&json, &key, "eth-account");
}

#[test]
fn ethers_scrypt_keystore_opens_in_ours() {
    let key = ValidatorKey::generate();
    let json = tools::node_encrypt(&key, PASSWORD, FAST_SCRYPT_N);
    let v = parse(&json);
    // ethers v6 capitalises the member (`Crypto`), unlike geth and eth-account.
    assert_eq!(
        v["Crypto"]["kdfparams"]["n"], FAST_SCRYPT_N,
        "ethers no longer writes `Crypto`; this test no longer covers that spelling"
    );
    assert_eq!(v["address"], key.address().to_plain_hex());
    assert_theirs_opens_in_ours(&json, &key, "ethers");
}

#[test]
fn wrong_password_is_rejected_by_eth_account_and_ethers() {
    let key = ValidatorKey::generate();
    let json =
        keystore::encrypt(&key, PASSWORD, &KdfParams::scrypt_fast_for_tests()).expect("encrypt");
    for wrong in [&b"not the password"[..], &PASSWORD[..PASSWORD.len() - 1]] {
        assert_eq!(
            tools::python_try_decrypt(&json, wrong),
            Err(Rejection::WrongPassword),
            "eth-account"
        );
        assert_eq!(
            tools::node_try_decrypt(&json, wrong),
            Err(Rejection::WrongPassword),
            "ethers"
        );
    }
    // The same keystore opens with the right password, so the rejection was the password.
    assert_eq!(tools::python_decrypt(&json, PASSWORD), expected(&key));
    assert_eq!(tools::node_decrypt(&json, PASSWORD), expected(&key));
}
