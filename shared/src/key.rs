//! The validator key: a secp256k1 private key, and what is derived from it.
//!
//! [`ValidatorKey`] is the only type in the project that holds a private key in the clear.
//! It zeroizes on drop (k256's `SecretKey` does), compares in constant time, and its
//! `Debug`/`Display` print a redaction. The raw bytes leave it only through
//! [`ValidatorKey::expose_bytes`] and [`ValidatorKey::expose_hex`], both returning
//! zeroizing buffers, for the key-file writers and the secret store. Parse errors describe
//! the input's shape (length, position of a bad character), never its content.

use std::fmt;
use std::str::FromStr;

use k256::elliptic_curve::sec1::ToEncodedPoint;
use sha3::{Digest, Keccak256};
use zeroize::Zeroizing;

/// Why bytes or text are not a valid private key. Never carries the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("private key must be 32 bytes (64 hex digits), got {found} hex digits")]
    WrongHexLength { found: usize },
    #[error("private key must be 32 bytes, got {found} bytes")]
    WrongLength { found: usize },
    #[error("private key is not hex: invalid character at position {position}")]
    NotHex { position: usize },
    #[error("private key is zero, which is not a valid secp256k1 key")]
    Zero,
    #[error("private key is not below the secp256k1 group order")]
    OutOfRange,
}

/// A secp256k1 validator key. See the module docs for how it guards its contents.
#[derive(Clone)]
pub struct ValidatorKey {
    secret: k256::SecretKey,
}

impl ValidatorKey {
    /// A new key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        loop {
            let mut bytes = Zeroizing::new([0u8; 32]);
            getrandom::getrandom(bytes.as_mut()).expect("the OS random number generator failed");
            // Rejection sampling: the chance of a zero or out-of-range draw is ~2^-128.
            if let Ok(key) = Self::from_bytes(bytes.as_ref()) {
                return key;
            }
        }
    }

    /// From 32 big-endian bytes. Rejects 0 and values not below the group order.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: &[u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::WrongLength { found: bytes.len() })?;
        if arr.iter().all(|b| *b == 0) {
            return Err(KeyError::Zero);
        }
        let secret = k256::SecretKey::from_bytes(arr.into()).map_err(|_| KeyError::OutOfRange)?;
        Ok(Self { secret })
    }

    /// From 64 hex digits, with or without `0x`/`0X`; surrounding white space is ignored.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let t = text.trim();
        let (offset, digits) = match t.get(..2) {
            Some("0x") | Some("0X") => (2, &t[2..]),
            _ => (0, t),
        };
        if let Some(i) = digits.bytes().position(|c| !c.is_ascii_hexdigit()) {
            // Position in the trimmed text, counting the prefix, so a user can find it.
            return Err(KeyError::NotHex {
                position: offset + i,
            });
        }
        if digits.len() != 64 {
            return Err(KeyError::WrongHexLength {
                found: digits.len(),
            });
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(digits, bytes.as_mut())
            .map_err(|_| KeyError::NotHex { position: offset })?;
        Self::from_bytes(bytes.as_ref())
    }

    /// The 32 private-key bytes. Only for key-file writers and the secret store.
    pub fn expose_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&self.secret.to_bytes());
        out
    }

    /// The private key as 64 lower-case hex digits, no prefix. Only for key-file writers and
    /// the secret store.
    pub fn expose_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.expose_bytes().as_ref()))
    }

    /// The uncompressed public key.
    pub fn public_key(&self) -> PublicKey {
        let point = self.secret.public_key().to_encoded_point(false);
        let mut out = [0u8; 64];
        // SEC1 uncompressed: 0x04 || X || Y.
        out.copy_from_slice(&point.as_bytes()[1..]);
        PublicKey(out)
    }

    /// The Ethereum address: the last 20 bytes of keccak256(X || Y).
    pub fn address(&self) -> Address {
        self.public_key().address()
    }

    /// The devp2p node id (the enode URL's user part): the public key as 128 hex digits.
    pub fn enode_id(&self) -> String {
        self.public_key().enode_id()
    }
}

impl PartialEq for ValidatorKey {
    fn eq(&self, other: &Self) -> bool {
        // k256 compares secret scalars in constant time.
        self.secret == other.secret
    }
}

impl Eq for ValidatorKey {}

impl fmt::Debug for ValidatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValidatorKey(<redacted>, address {})", self.address())
    }
}

impl fmt::Display for ValidatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<private key of {}>", self.address())
    }
}

/// An uncompressed secp256k1 public key, without the SEC1 `0x04` prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 64]);

impl PublicKey {
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    pub fn address(&self) -> Address {
        let hash = Keccak256::digest(self.0);
        let mut a = [0u8; 20];
        a.copy_from_slice(&hash[12..]);
        Address(a)
    }

    /// 128 lower-case hex digits, no prefix: the enode id.
    pub fn enode_id(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A 20-byte Ethereum address. Displays EIP-55 checksummed with `0x`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; 20]);

/// Why text is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address must be 40 hex digits after 0x, got {found} characters")]
    WrongLength { found: usize },
    #[error("address is not hex: invalid character at position {position}")]
    NotHex { position: usize },
    #[error("address {given} has mixed case but fails its EIP-55 checksum (expected {expected})")]
    BadChecksum { given: String, expected: String },
}

impl Address {
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// EIP-55: hex digit i is upper-case when nibble i of keccak256(lower-case hex) is ≥ 8.
    pub fn to_checksum(&self) -> String {
        let lower = hex::encode(self.0);
        let hash = Keccak256::digest(lower.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in lower.chars().enumerate() {
            let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
            out.push(if nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            });
        }
        out
    }

    /// Lower-case hex without `0x`, as keystore files store it.
    pub fn to_plain_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for Address {
    type Err = AddressError;

    /// Accepts 40 hex digits with or without `0x`. All-lower or all-upper is accepted as
    /// is; mixed case must carry a valid EIP-55 checksum.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (offset, digits) = match s.get(..2) {
            Some("0x") | Some("0X") => (2, &s[2..]),
            _ => (0, s),
        };
        if let Some(i) = digits.bytes().position(|c| !c.is_ascii_hexdigit()) {
            return Err(AddressError::NotHex {
                position: offset + i,
            });
        }
        if digits.len() != 40 {
            return Err(AddressError::WrongLength {
                found: digits.len(),
            });
        }
        let mut a = [0u8; 20];
        hex::decode_to_slice(digits, &mut a).map_err(|_| AddressError::NotHex { position: 0 })?;
        let address = Address(a);
        let has_lower = digits.bytes().any(|c| c.is_ascii_lowercase());
        let has_upper = digits.bytes().any(|c| c.is_ascii_uppercase());
        if has_lower && has_upper {
            let expected = address.to_checksum();
            if expected[2..] != *digits {
                return Err(AddressError::BadChecksum {
                    given: s.to_string(),
                    expected,
                });
            }
        }
        Ok(address)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_checksum())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_checksum())
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Private key 1: its public key is the curve's generator point G, a published constant.
    const ONE: &str = "0000000000000000000000000000000000000000000000000000000000000001";
    const G_X: &str = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
    const G_Y: &str = "483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8";
    // secp256k1 group order n.
    const N: &str = "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141";
    const N_MINUS_1: &str = "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364140";

    #[test]
    fn key_one_derives_the_generator_and_its_known_address() {
        let k = ValidatorKey::from_hex(ONE).unwrap();
        assert_eq!(k.enode_id(), format!("{G_X}{G_Y}"));
        assert_eq!(k.public_key().to_string(), format!("0x{G_X}{G_Y}"));
        // The address of private key 1, as every Ethereum tool reports it.
        assert_eq!(
            k.address().to_string(),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
    }

    #[test]
    fn parses_with_and_without_prefix_and_round_trips() {
        let k = ValidatorKey::generate();
        let hex = k.expose_hex();
        assert_eq!(hex.len(), 64);
        for text in [
            hex.to_string(),
            format!("0x{}", *hex),
            format!("0X{}\n", hex.to_uppercase()),
        ] {
            assert_eq!(ValidatorKey::from_hex(&text).unwrap(), k);
        }
    }

    #[test]
    fn rejects_zero_order_and_above() {
        assert_eq!(ValidatorKey::from_hex(&"0".repeat(64)), Err(KeyError::Zero));
        assert_eq!(ValidatorKey::from_hex(N), Err(KeyError::OutOfRange));
        assert_eq!(
            ValidatorKey::from_hex(&"f".repeat(64)),
            Err(KeyError::OutOfRange)
        );
        assert!(ValidatorKey::from_hex(N_MINUS_1).is_ok());
    }

    #[test]
    fn rejects_bad_shapes_without_echoing_input() {
        assert_eq!(
            ValidatorKey::from_hex("abcd"),
            Err(KeyError::WrongHexLength { found: 4 })
        );
        assert_eq!(
            ValidatorKey::from_hex(&format!("0x{}", "a".repeat(66))),
            Err(KeyError::WrongHexLength { found: 66 })
        );
        let mut bad = "1".repeat(64);
        bad.replace_range(10..11, "g");
        assert_eq!(
            ValidatorKey::from_hex(&bad),
            Err(KeyError::NotHex { position: 10 })
        );
        assert_eq!(
            ValidatorKey::from_bytes(&[1u8; 31]),
            Err(KeyError::WrongLength { found: 31 })
        );
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(ValidatorKey::generate(), ValidatorKey::generate());
    }

    #[test]
    fn eip55_checksums_match_the_published_examples() {
        // From the EIP-55 specification's test cases.
        for s in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let a: Address = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
            assert_eq!(s.to_lowercase().parse::<Address>().unwrap(), a);
        }
        let bad = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD";
        assert!(matches!(
            bad.parse::<Address>(),
            Err(AddressError::BadChecksum { .. })
        ));
    }
}
