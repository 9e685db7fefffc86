//! The test vectors published with the Web3 Secret Storage definition (version 3): both the
//! PBKDF2-SHA-256 and the scrypt keystore must open with "testpassword" to the documented
//! secret. The vectors are data from the definition; the test is ours.

use shared::keystore;

const PASSWORD: &[u8] = b"testpassword";
const SECRET: &str = "7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d";
// The definition lists this address for the secret.
const ADDRESS: &str = "008aeeda4d805471df9b2a5b0f38a0c3bcba786b";

const PBKDF2_VECTOR: &str = r#"{
  "crypto": {
    "cipher": "aes-128-ctr",
    "cipherparams": { "iv": "6087dab2f9fdbbfaddc31a909735c1e6" },
    "ciphertext": "5318b4d5bcd28de64ee5559e671353e16f075ecae9f99c7a79a38af5f869aa46",
    "kdf": "pbkdf2",
    "kdfparams": {
      "c": 262144,
      "dklen": 32,
      "prf": "hmac-sha256",
      "salt": "ae3cd4e7013836a3df6bd7241b12db061dbe2c6785853cce422d148a624ce0bd"
    },
    "mac": "517ead924a9d0dc3124507e3393d175ce3ff7c1e96529c6c555ce9e51205e9b2"
  },
  "id": "3198bc9c-6672-5ab3-d995-4942343ae5b6",
  "version": 3
}"#;

// The scrypt vector of the original definition (n=2^18, r=1, p=8), which clients still
// test against.
const SCRYPT_VECTOR: &str = r#"{
  "crypto": {
    "cipher": "aes-128-ctr",
    "cipherparams": { "iv": "83dbcc02d8ccb40e466191a123791e0e" },
    "ciphertext": "d172bf743a674da9cdad04534d56926ef8358534d458fffccd4e6ad2fbde479c",
    "kdf": "scrypt",
    "kdfparams": {
      "dklen": 32,
      "n": 262144,
      "r": 1,
      "p": 8,
      "salt": "ab0c7876052600dd703518d6fc3fe8984592145b591fc8fb5c6d43190334ba19"
    },
    "mac": "2103ac29920d71da29f15d75b4a16dbe95cfd7ff8faea1056c33131d846e3097"
  },
  "id": "3198bc9c-6672-5ab3-d995-4942343ae5b6",
  "version": 3
}"#;

// The scrypt listing in the definition's current text (r=8, p=1, salt 25710c2c...). Its
// stated intermediate "derived key" (7446f59e...) is not what scrypt gives for its stated
// salt and parameters (Python's OpenSSL-backed hashlib.scrypt gives b4130dc8..., as we do),
// so its MAC cannot verify. Kept to document that, not as a vector.
const INCONSISTENT_SCRYPT_LISTING: &str = r#"{
  "crypto": {
    "cipher": "aes-128-ctr",
    "cipherparams": { "iv": "740770fce12ce862af21264dab25f1da" },
    "ciphertext": "dd8a1132cf57db67c038c6763afe2cbe6ea1949a86abc5843f8ca656ebbb1ea2",
    "kdf": "scrypt",
    "kdfparams": {
      "dklen": 32,
      "n": 262144,
      "p": 1,
      "r": 8,
      "salt": "25710c2ccd7c610b24d068af83b959b7a0e5f40641f0c82daeb1345766191034"
    },
    "mac": "337aeb86505d2d0bb620effe57f18381377d67d76dac1090626aa5cd20886a7c"
  },
  "id": "3198bc9c-6672-5ab3-d995-4942343ae5b6",
  "version": 3
}"#;

fn opens_to_the_documented_secret(vector: &str) {
    let key = keystore::decrypt(vector.as_bytes(), PASSWORD).unwrap();
    assert_eq!(key.expose_hex().as_str(), SECRET);
    assert_eq!(key.address().to_plain_hex(), ADDRESS);
    assert!(matches!(
        keystore::decrypt(vector.as_bytes(), b"testpassworD"),
        Err(keystore::KeystoreError::WrongPasswordOrCorrupt)
    ));
}

#[test]
fn pbkdf2_vector_opens_to_the_documented_secret() {
    opens_to_the_documented_secret(PBKDF2_VECTOR);
}

#[test]
fn scrypt_vector_opens_to_the_documented_secret() {
    opens_to_the_documented_secret(SCRYPT_VECTOR);
}

#[test]
fn vectors_with_the_documented_address_field_open_too() {
    for v in [PBKDF2_VECTOR, SCRYPT_VECTOR] {
        let with_address = v.replacen('{', &format!("{{\n  \"address\": \"{ADDRESS}\","), 1);
        let key = keystore::decrypt(with_address.as_bytes(), PASSWORD).unwrap();
        assert_eq!(key.expose_hex().as_str(), SECRET);
    }
}

#[test]
fn the_current_scrypt_listing_fails_its_own_mac() {
    assert!(matches!(
        keystore::decrypt(INCONSISTENT_SCRYPT_LISTING.as_bytes(), PASSWORD),
        Err(keystore::KeystoreError::WrongPasswordOrCorrupt)
    ));
}
