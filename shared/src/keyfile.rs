//! Key-file formats the Ethereum clients read, and detection of a file's format from its
//! content.
//!
//! | format        | bytes on disk                          | read by |
//! |---------------|----------------------------------------|---------|
//! | `raw-hex`     | 64 hex digits and a newline            | OpenEthereum/Nethermind `--...-key` flags, most tools |
//! | `besu`        | `0x` and 64 hex digits, no newline     | Besu `key` / `--node-private-key-file` |
//! | `nethermind`  | the 32 key bytes, binary               | Nethermind `node.key.plain` |
//! | `keystore-v3` | Web3 Secret Storage JSON (encrypted)   | geth, OpenEthereum, Nethermind, Besu, wallets |
//!
//! geth's `nodekey` (64 hex digits, nothing before or after: [`encode_nodekey`]) reads back
//! as `raw-hex`; detection cannot tell them apart, and needs not.
//!
//! Every encoder returns a zeroizing buffer; the caller writes it with
//! [`crate::fsutil::write_new_private`].

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use crate::key::{KeyError, ValidatorKey};
use crate::keystore::{self, KdfParams, KeystoreError};

/// Content type of a secret holding a key as 64 hex digits (the secret store's format).
pub const CONTENT_TYPE_RAW_HEX: &str = "application/vnd.ethereum.secp256k1-key+hex";

/// A key-file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    RawHex,
    Besu,
    Nethermind,
    KeystoreV3,
}

impl KeyFormat {
    pub const ALL: [KeyFormat; 4] = [Self::RawHex, Self::Besu, Self::Nethermind, Self::KeystoreV3];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RawHex => "raw-hex",
            Self::Besu => "besu",
            Self::Nethermind => "nethermind",
            Self::KeystoreV3 => "keystore-v3",
        }
    }

    pub fn needs_password(self) -> bool {
        self == Self::KeystoreV3
    }
}

impl fmt::Display for KeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown key format {s:?}; expected raw-hex, besu, nethermind or keystore-v3"
                )
            })
    }
}

/// Why a key file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file is empty")]
    Empty,
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("{0}")]
    Keystore(#[from] KeystoreError),
    #[error("the file is a keystore-v3 keystore; a password is needed to open it")]
    PasswordRequired,
    #[error("a password was given, but {0} key files are not encrypted")]
    PasswordNotUsed(KeyFormat),
    #[error("key file is not text, and not a 32-byte binary key ({0} bytes)")]
    NotText(usize),
    #[error(
        "the file is a JSON document but not a keystore-v3 keystore (it has no crypto member)"
    )]
    JsonNotKeystore,
}

/// Detects the format of a key file from its content.
pub fn detect(bytes: &[u8]) -> Result<KeyFormat, KeyFileError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(KeyFileError::Empty);
    }
    // A hex key is at least 64 characters, so 32 bytes can only be a binary key.
    if bytes.len() == 32 {
        return Ok(KeyFormat::Nethermind);
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        // JSON that parses and has no crypto member is not a keystore; anything else that
        // opens like one is taken for a keystore, so that a damaged one is reported as such.
        return match keystore::is_json_object(bytes) && !keystore::looks_like_keystore(bytes) {
            true => Err(KeyFileError::JsonNotKeystore),
            false => Ok(KeyFormat::KeystoreV3),
        };
    }
    let text = std::str::from_utf8(bytes).map_err(|_| KeyFileError::NotText(bytes.len()))?;
    Ok(if text.trim_start().starts_with("0x") {
        KeyFormat::Besu
    } else {
        KeyFormat::RawHex
    })
}

/// Reads a key file of any supported format; returns the key and the detected format.
pub fn decode(
    bytes: &[u8],
    password: Option<&[u8]>,
) -> Result<(ValidatorKey, KeyFormat), KeyFileError> {
    let format = detect(bytes)?;
    let key = match (format, password) {
        (KeyFormat::KeystoreV3, Some(pw)) => keystore::decrypt(bytes, pw)?,
        (KeyFormat::KeystoreV3, None) => return Err(KeyFileError::PasswordRequired),
        (f, Some(_)) => return Err(KeyFileError::PasswordNotUsed(f)),
        (KeyFormat::Nethermind, None) => ValidatorKey::from_bytes(bytes)?,
        (KeyFormat::RawHex | KeyFormat::Besu, None) => {
            let text =
                std::str::from_utf8(bytes).map_err(|_| KeyFileError::NotText(bytes.len()))?;
            ValidatorKey::from_hex(text)?
        }
    };
    Ok((key, format))
}

/// Encodes `key` in `format`. `password` and `kdf` are used (and required) only for
/// keystore-v3.
pub fn encode(
    key: &ValidatorKey,
    format: KeyFormat,
    password: Option<&[u8]>,
    kdf: &KdfParams,
) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    match (format, password) {
        (KeyFormat::KeystoreV3, Some(pw)) => {
            // Encrypted: safe to hold in an ordinary buffer, wrapped for uniformity.
            Ok(Zeroizing::new(
                keystore::encrypt(key, pw, kdf)?.into_bytes(),
            ))
        }
        (KeyFormat::KeystoreV3, None) => Err(KeyFileError::PasswordRequired),
        (f, Some(_)) => Err(KeyFileError::PasswordNotUsed(f)),
        (KeyFormat::RawHex, None) => {
            let mut out = Zeroizing::new(Vec::with_capacity(65));
            out.extend_from_slice(key.expose_hex().as_bytes());
            out.push(b'\n');
            Ok(out)
        }
        (KeyFormat::Besu, None) => {
            let mut out = Zeroizing::new(Vec::with_capacity(66));
            out.extend_from_slice(b"0x");
            out.extend_from_slice(key.expose_hex().as_bytes());
            Ok(out)
        }
        (KeyFormat::Nethermind, None) => Ok(Zeroizing::new(key.expose_bytes().to_vec())),
    }
}

/// geth's `nodekey` (`--nodekey FILE`, or `DATADIR/geth/nodekey`): the key as 64 hex
/// digits, without `0x` and without a newline; geth refuses anything else.
pub fn encode_nodekey(key: &ValidatorKey) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(key.expose_hex().as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_round_trips_and_is_detected() {
        let key = ValidatorKey::generate();
        let kdf = KdfParams::scrypt_fast_for_tests();
        for format in KeyFormat::ALL {
            let pw = format.needs_password().then_some(&b"pw"[..]);
            let bytes = encode(&key, format, pw, &kdf).unwrap();
            assert_eq!(detect(&bytes).unwrap(), format, "{format}");
            let (back, detected) = decode(&bytes, pw).unwrap();
            assert_eq!(back, key);
            assert_eq!(detected, format);
        }
    }

    #[test]
    fn shapes_on_disk() {
        let key = ValidatorKey::generate();
        let kdf = KdfParams::scrypt_fast_for_tests();
        let hex = key.expose_hex();
        let raw = encode(&key, KeyFormat::RawHex, None, &kdf).unwrap();
        assert_eq!(&raw[..], format!("{}\n", *hex).as_bytes());
        let besu = encode(&key, KeyFormat::Besu, None, &kdf).unwrap();
        assert_eq!(&besu[..], format!("0x{}", *hex).as_bytes());
        let bin = encode(&key, KeyFormat::Nethermind, None, &kdf).unwrap();
        assert_eq!(bin.len(), 32);
        let nodekey = encode_nodekey(&key);
        assert_eq!(&nodekey[..], hex.as_bytes());
        assert_eq!(decode(&nodekey, None).unwrap().0, key);
    }

    #[test]
    fn json_that_is_not_a_keystore_is_named_as_such() {
        let secret_file = br#"{"name":"m0-v0","contentType":"x","tags":{},"value":"00"}"#;
        assert!(matches!(
            detect(secret_file),
            Err(KeyFileError::JsonNotKeystore)
        ));
        // A truncated keystore is still one, to be reported as damaged when read.
        assert_eq!(detect(br#"{"crypto": {"#).unwrap(), KeyFormat::KeystoreV3);
    }

    #[test]
    fn password_mismatches_are_errors() {
        let key = ValidatorKey::generate();
        let kdf = KdfParams::scrypt_fast_for_tests();
        let ks = encode(&key, KeyFormat::KeystoreV3, Some(b"pw"), &kdf).unwrap();
        assert!(matches!(
            decode(&ks, None),
            Err(KeyFileError::PasswordRequired)
        ));
        let raw = encode(&key, KeyFormat::RawHex, None, &kdf).unwrap();
        assert!(matches!(
            decode(&raw, Some(b"pw")),
            Err(KeyFileError::PasswordNotUsed(KeyFormat::RawHex))
        ));
        assert!(matches!(
            encode(&key, KeyFormat::KeystoreV3, None, &kdf),
            Err(KeyFileError::PasswordRequired)
        ));
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(matches!(decode(b"", None), Err(KeyFileError::Empty)));
        assert!(matches!(decode(b" \n", None), Err(KeyFileError::Empty)));
        assert!(matches!(
            decode(b"xyz", None),
            Err(KeyFileError::Key(KeyError::NotHex { .. }))
        ));
        assert!(matches!(
            decode(&[0u8; 32], None),
            Err(KeyFileError::Key(KeyError::Zero))
        ));
        assert!(matches!(
            decode(&[0xffu8; 40], None),
            Err(KeyFileError::NotText(40))
        ));
    }
}
