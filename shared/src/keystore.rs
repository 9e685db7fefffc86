//! Web3 Secret Storage v3 keystores: scrypt or pbkdf2-hmac-sha256, aes-128-ctr, keccak MAC.
//!
//! Reading is strict, because a keystore is input from elsewhere: the JSON is size-limited,
//! KDF parameters are bounded (a hostile file must not make us allocate gigabytes or spin
//! for hours), the MAC is compared in constant time, and an `address` field, when present,
//! must match the decrypted key.
//!
//! A wrong password and a tampered MAC both make the MAC check fail. We tell them apart
//! the only way the format allows: on a MAC failure we decrypt anyway and compare with the
//! file's `address`. If the key matches the address, the password was right and the MAC was
//! altered; otherwise the password is wrong. Without an `address` field the two cannot be
//! told apart, and the error says so. Errors never carry key material.

use aes::cipher::{KeyIvInit, StreamCipher};
use serde::{Deserialize, Serialize};
use sha3::{Digest, Keccak256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::key::{Address, ValidatorKey};

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// The content type under which keystore-v3 secrets are stored.
pub const CONTENT_TYPE: &str = "application/vnd.ethereum.keystore-v3+json";

/// Largest keystore file we read; real ones are well under 1 KiB.
pub const MAX_KEYSTORE_BYTES: usize = 64 * 1024;

/// Upper bounds on KDF cost accepted on read (above anything a wallet writes).
const MAX_SCRYPT_LOG_N: u8 = 20;
const MAX_SCRYPT_R: u32 = 32;
const MAX_SCRYPT_P: u32 = 16;
const MAX_SCRYPT_MEMORY: u64 = 1 << 30;
const MAX_PBKDF2_ROUNDS: u32 = 10_000_000;

/// Key-derivation function and its cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KdfParams {
    /// scrypt with N = 2^log_n.
    Scrypt { log_n: u8, r: u32, p: u32 },
    /// PBKDF2-HMAC-SHA256 with `c` rounds.
    Pbkdf2 { c: u32 },
}

impl KdfParams {
    /// scrypt n=262144 (2^18), r=8, p=1: the Web3 Secret Storage and geth "standard" cost.
    pub fn scrypt_default() -> Self {
        Self::Scrypt {
            log_n: 18,
            r: 8,
            p: 1,
        }
    }

    /// PBKDF2-HMAC-SHA256 with 600,000 rounds (OWASP's 2023 figure for this PRF).
    pub fn pbkdf2_default() -> Self {
        Self::Pbkdf2 { c: 600_000 }
    }

    /// Cheap scrypt (n=1024) so tests run fast. Insecure: never for real keys.
    pub fn scrypt_fast_for_tests() -> Self {
        Self::Scrypt {
            log_n: 10,
            r: 8,
            p: 1,
        }
    }

    /// Cheap PBKDF2 (1,024 rounds) so tests run fast. Insecure: never for real keys.
    pub fn pbkdf2_fast_for_tests() -> Self {
        Self::Pbkdf2 { c: 1024 }
    }
}

/// Why a keystore could not be written or read. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("keystore is {0} bytes; at most {MAX_KEYSTORE_BYTES} are accepted")]
    TooLarge(usize),
    #[error("keystore is not valid keystore JSON (truncated or not a keystore?): {0}")]
    Malformed(String),
    #[error("keystore version {0} is not supported (only version 3)")]
    UnsupportedVersion(u64),
    #[error("keystore cipher {0:?} is not supported (only aes-128-ctr)")]
    UnsupportedCipher(String),
    #[error("keystore kdf {0:?} is not supported (only scrypt and pbkdf2)")]
    UnsupportedKdf(String),
    #[error("keystore kdf parameters are invalid: {0}")]
    BadKdfParams(String),
    #[error("keystore field {field} is invalid: {reason}")]
    BadField { field: &'static str, reason: String },
    #[error("wrong password: the keystore MAC does not verify")]
    WrongPassword,
    #[error("wrong password or corrupted keystore: the MAC does not verify, and the file has no address to tell which")]
    WrongPasswordOrCorrupt,
    #[error("keystore MAC was altered: the password decrypts the key of address {0}, but the stored MAC does not match")]
    TamperedMac(Address),
    #[error("keystore address field {stored} does not match the key it holds ({actual})")]
    AddressMismatch { stored: String, actual: Address },
    #[error("keystore decrypts to an invalid secp256k1 key")]
    InvalidKey,
    #[error("password is empty")]
    EmptyPassword,
}

#[derive(Serialize, Deserialize)]
struct KeystoreJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    // geth and eth-account write "crypto"; ethers v6 and older wallets write "Crypto".
    #[serde(alias = "Crypto")]
    crypto: CryptoJson,
    #[serde(default)]
    id: Option<String>,
    version: u64,
}

#[derive(Serialize, Deserialize)]
struct CryptoJson {
    cipher: String,
    cipherparams: CipherParamsJson,
    ciphertext: String,
    kdf: String,
    kdfparams: serde_json::Value,
    mac: String,
}

#[derive(Serialize, Deserialize)]
struct CipherParamsJson {
    iv: String,
}

#[derive(Serialize, Deserialize)]
struct ScryptJson {
    dklen: u32,
    n: u64,
    r: u32,
    p: u32,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct Pbkdf2Json {
    c: u32,
    dklen: u32,
    prf: String,
    salt: String,
}

/// Encrypts `key` under `password` into keystore v3 JSON, with a fresh random salt, IV and id.
pub fn encrypt(
    key: &ValidatorKey,
    password: &[u8],
    kdf: &KdfParams,
) -> Result<String, KeystoreError> {
    if password.is_empty() {
        return Err(KeystoreError::EmptyPassword);
    }
    let salt = random_bytes::<32>();
    let iv = random_bytes::<16>();
    let dk = derive(kdf, password, &salt)?;
    let mut ciphertext = key.expose_bytes();
    Aes128Ctr::new(dk[..16].into(), (&iv).into()).apply_keystream(ciphertext.as_mut());
    let mac = mac(&dk, ciphertext.as_ref());
    let salt_hex = hex::encode(salt);
    let kdfparams = match *kdf {
        KdfParams::Scrypt { log_n, r, p } => serde_json::to_value(ScryptJson {
            dklen: 32,
            n: 1u64 << log_n,
            r,
            p,
            salt: salt_hex,
        }),
        KdfParams::Pbkdf2 { c } => serde_json::to_value(Pbkdf2Json {
            c,
            dklen: 32,
            prf: "hmac-sha256".into(),
            salt: salt_hex,
        }),
    }
    .map_err(|e| KeystoreError::Malformed(e.to_string()))?;
    let json = KeystoreJson {
        address: Some(key.address().to_plain_hex()),
        crypto: CryptoJson {
            cipher: "aes-128-ctr".into(),
            cipherparams: CipherParamsJson {
                iv: hex::encode(iv),
            },
            // Encrypted, so safe to serialise.
            ciphertext: hex::encode(ciphertext.as_ref()),
            kdf: match kdf {
                KdfParams::Scrypt { .. } => "scrypt".into(),
                KdfParams::Pbkdf2 { .. } => "pbkdf2".into(),
            },
            kdfparams,
            mac: hex::encode(mac),
        },
        id: Some(uuid_v4()),
        version: 3,
    };
    serde_json::to_string_pretty(&json).map_err(|e| KeystoreError::Malformed(e.to_string()))
}

/// Decrypts keystore v3 JSON. See the module docs for how failures are told apart.
pub fn decrypt(json: &[u8], password: &[u8]) -> Result<ValidatorKey, KeystoreError> {
    if json.len() > MAX_KEYSTORE_BYTES {
        return Err(KeystoreError::TooLarge(json.len()));
    }
    let ks: KeystoreJson = serde_json::from_slice(json).map_err(|e| {
        // serde_json's message names the field and position, never the data.
        KeystoreError::Malformed(e.to_string())
    })?;
    if ks.version != 3 {
        return Err(KeystoreError::UnsupportedVersion(ks.version));
    }
    let c = &ks.crypto;
    if !c.cipher.eq_ignore_ascii_case("aes-128-ctr") {
        return Err(KeystoreError::UnsupportedCipher(c.cipher.clone()));
    }
    let (kdf, salt) = parse_kdf(&c.kdf, &c.kdfparams)?;
    let iv: [u8; 16] = hex_field("crypto.cipherparams.iv", &c.cipherparams.iv)?;
    let ciphertext: [u8; 32] = hex_field("crypto.ciphertext", &c.ciphertext)?;
    let stored_mac: [u8; 32] = hex_field("crypto.mac", &c.mac)?;
    let stored_address = ks
        .address
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty());
    let stored_address = stored_address
        .map(|a| {
            a.parse::<Address>().map_err(|e| KeystoreError::BadField {
                field: "address",
                reason: e.to_string(),
            })
        })
        .transpose()?;

    let dk = derive(&kdf, password, &salt)?;
    let mut plain = Zeroizing::new(ciphertext);
    Aes128Ctr::new(dk[..16].into(), (&iv).into()).apply_keystream(plain.as_mut());
    let candidate = ValidatorKey::from_bytes(plain.as_ref());

    let mac_ok: bool = mac(&dk, &ciphertext).ct_eq(&stored_mac).into();
    if !mac_ok {
        return Err(match (stored_address, candidate) {
            (Some(stored), Ok(k)) if k.address() == stored => KeystoreError::TamperedMac(stored),
            (Some(_), _) => KeystoreError::WrongPassword,
            (None, _) => KeystoreError::WrongPasswordOrCorrupt,
        });
    }
    let key = candidate.map_err(|_| KeystoreError::InvalidKey)?;
    if let Some(stored) = stored_address {
        if stored != key.address() {
            return Err(KeystoreError::AddressMismatch {
                stored: ks.address.unwrap_or_default(),
                actual: key.address(),
            });
        }
    }
    Ok(key)
}

/// True when `bytes` look like a keystore (a JSON object with a `crypto` or `Crypto`
/// member), for format detection. Does not validate the keystore.
pub fn looks_like_keystore(bytes: &[u8]) -> bool {
    json_members(bytes).is_some_and(|m| m.iter().any(|k| k == "crypto" || k == "Crypto"))
}

/// True when `bytes` are a JSON object, whatever its members.
pub fn is_json_object(bytes: &[u8]) -> bool {
    json_members(bytes).is_some()
}

/// True when the keystore names its address, so that [`decrypt`] checked the key against
/// it and a client that files keystores by address (geth, Nethermind) can read it as is.
pub fn names_its_address(json: &[u8]) -> bool {
    serde_json::from_slice::<KeystoreJson>(json).is_ok_and(|ks| ks.address.is_some())
}

/// The address the keystore names, read without the password; `None` when it names none
/// or not a valid one. Unverified: [`decrypt`] checks the key against it.
pub fn stated_address(json: &[u8]) -> Option<Address> {
    let ks = serde_json::from_slice::<KeystoreJson>(json).ok()?;
    ks.address?.trim().parse().ok()
}

/// The names of a JSON object's members; `None` when `bytes` are not a JSON object. The
/// values are skipped unread, so nothing of a secret is kept.
fn json_members(bytes: &[u8]) -> Option<Vec<String>> {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    if bytes[start] != b'{' || bytes.len() > MAX_KEYSTORE_BYTES {
        return None;
    }
    let map: std::collections::BTreeMap<String, serde::de::IgnoredAny> =
        serde_json::from_slice(bytes).ok()?;
    Some(map.into_keys().collect())
}

/// The name geth and Nethermind give a keystore file in their keystore directory,
/// `UTC--2006-01-02T15-04-05.000000000Z--<address, 40 lower-case hex digits>`, for the
/// time `unix` (seconds and nanoseconds since 1970, UTC). Both find a key by its address in
/// the name.
pub fn keystore_file_name(address: &Address, unix: std::time::Duration) -> String {
    let secs = unix.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "UTC--{y:04}-{m:02}-{d:02}T{:02}-{:02}-{:02}.{:09}Z--{}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        unix.subsec_nanos(),
        address.to_plain_hex()
    )
}

/// Year, month and day of the `days`-th day after 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Howard Hinnant's algorithm, for days on or after the epoch.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

fn parse_kdf(
    name: &str,
    params: &serde_json::Value,
) -> Result<(KdfParams, Vec<u8>), KeystoreError> {
    let bad = |e: serde_json::Error| KeystoreError::BadKdfParams(e.to_string());
    match name {
        "scrypt" => {
            let s: ScryptJson = serde_json::from_value(params.clone()).map_err(bad)?;
            if s.dklen != 32 {
                return Err(KeystoreError::BadKdfParams(format!(
                    "dklen {} (only 32 is supported)",
                    s.dklen
                )));
            }
            if s.n < 2 || !s.n.is_power_of_two() {
                return Err(KeystoreError::BadKdfParams(format!(
                    "scrypt n={} is not a power of two above 1",
                    s.n
                )));
            }
            let log_n = s.n.trailing_zeros() as u8;
            // scrypt holds 128·r·(N + p + 2) bytes and does work in proportion to N·r·p, so
            // all three are bounded, each on its own, before anything is allocated.
            let memory = 128u64 * u64::from(s.r) * (s.n + u64::from(s.p) + 2);
            if log_n > MAX_SCRYPT_LOG_N
                || !(1..=MAX_SCRYPT_R).contains(&s.r)
                || !(1..=MAX_SCRYPT_P).contains(&s.p)
                || memory > MAX_SCRYPT_MEMORY
            {
                return Err(KeystoreError::BadKdfParams(format!(
                    "scrypt n={} r={} p={} is outside the accepted cost (n <= 2^{MAX_SCRYPT_LOG_N}, r <= {MAX_SCRYPT_R}, p <= {MAX_SCRYPT_P}, memory <= 1 GiB)",
                    s.n, s.r, s.p
                )));
            }
            let salt = hex_vec("crypto.kdfparams.salt", &s.salt)?;
            Ok((
                KdfParams::Scrypt {
                    log_n,
                    r: s.r,
                    p: s.p,
                },
                salt,
            ))
        }
        "pbkdf2" => {
            let s: Pbkdf2Json = serde_json::from_value(params.clone()).map_err(bad)?;
            if s.prf != "hmac-sha256" {
                return Err(KeystoreError::BadKdfParams(format!(
                    "pbkdf2 prf {:?} (only hmac-sha256 is supported)",
                    s.prf
                )));
            }
            if s.dklen != 32 {
                return Err(KeystoreError::BadKdfParams(format!(
                    "dklen {} (only 32 is supported)",
                    s.dklen
                )));
            }
            if s.c == 0 || s.c > MAX_PBKDF2_ROUNDS {
                return Err(KeystoreError::BadKdfParams(format!(
                    "pbkdf2 c={} is outside 1..={MAX_PBKDF2_ROUNDS}",
                    s.c
                )));
            }
            let salt = hex_vec("crypto.kdfparams.salt", &s.salt)?;
            Ok((KdfParams::Pbkdf2 { c: s.c }, salt))
        }
        other => Err(KeystoreError::UnsupportedKdf(other.to_string())),
    }
}

fn derive(
    kdf: &KdfParams,
    password: &[u8],
    salt: &[u8],
) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    let mut dk = Zeroizing::new([0u8; 32]);
    match *kdf {
        KdfParams::Scrypt { log_n, r, p } => {
            let params = scrypt::Params::new(log_n, r, p)
                .map_err(|e| KeystoreError::BadKdfParams(format!("scrypt: {e}")))?;
            scrypt::scrypt(password, salt, &params, dk.as_mut())
                .map_err(|e| KeystoreError::BadKdfParams(format!("scrypt: {e}")))?;
        }
        KdfParams::Pbkdf2 { c } => {
            pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, c, dk.as_mut());
        }
    }
    Ok(dk)
}

fn mac(dk: &[u8; 32], ciphertext: &[u8]) -> [u8; 32] {
    let mut h = Keccak256::new();
    h.update(&dk[16..32]);
    h.update(ciphertext);
    h.finalize().into()
}

fn hex_vec(field: &'static str, s: &str) -> Result<Vec<u8>, KeystoreError> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    hex::decode(s).map_err(|e| KeystoreError::BadField {
        field,
        reason: format!("not hex ({e})"),
    })
}

fn hex_field<const N: usize>(field: &'static str, s: &str) -> Result<[u8; N], KeystoreError> {
    let v = hex_vec(field, s)?;
    v.as_slice()
        .try_into()
        .map_err(|_| KeystoreError::BadField {
            field,
            reason: format!("{} bytes, expected {N}", v.len()),
        })
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("the OS random number generator failed");
    b
}

fn uuid_v4() -> String {
    crate::lease::LeaseId::random().as_str().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystore_files_are_named_as_geth_names_them() {
        let key = ValidatorKey::generate();
        let hex = key.address().to_plain_hex();
        let at =
            |s: u64, n: u32| keystore_file_name(&key.address(), std::time::Duration::new(s, n));
        assert_eq!(
            at(0, 0),
            format!("UTC--1970-01-01T00-00-00.000000000Z--{hex}")
        );
        // 2024-02-29 (a leap day) 23:59:59.5
        assert_eq!(
            at(1_709_251_199, 500_000_000),
            format!("UTC--2024-02-29T23-59-59.500000000Z--{hex}")
        );
        assert_eq!(
            at(951_868_800, 7),
            format!("UTC--2000-03-01T00-00-00.000000007Z--{hex}")
        );
    }

    #[test]
    fn only_a_json_object_with_a_crypto_member_looks_like_a_keystore() {
        let key = ValidatorKey::generate();
        let ks = encrypt(&key, b"pw", &KdfParams::scrypt_fast_for_tests()).unwrap();
        assert!(looks_like_keystore(ks.as_bytes()));
        assert!(names_its_address(ks.as_bytes()));
        let upper = ks.replacen("\"crypto\"", "\"Crypto\"", 1);
        assert!(looks_like_keystore(upper.as_bytes()));
        let secret_file = br#"{"name":"m0-v0","tags":{},"value":"00"}"#;
        assert!(!looks_like_keystore(secret_file));
        assert!(is_json_object(secret_file));
        assert!(!looks_like_keystore(b"{ not json"));
        assert!(!looks_like_keystore(b"0xabc"));
        let no_address = ks.replacen("\"address\"", "\"addr\"", 1);
        assert!(!names_its_address(no_address.as_bytes()));
    }

    const PASSWORD: &[u8] = b"correct horse battery staple";

    fn edit(json: &str, f: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
        f(&mut v);
        v.to_string()
    }

    #[test]
    fn round_trips_with_both_kdfs() {
        let key = ValidatorKey::generate();
        for kdf in [
            KdfParams::scrypt_fast_for_tests(),
            KdfParams::pbkdf2_fast_for_tests(),
        ] {
            let json = encrypt(&key, PASSWORD, &kdf).unwrap();
            assert_eq!(decrypt(json.as_bytes(), PASSWORD).unwrap(), key);
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(v["version"], 3);
            assert_eq!(v["address"], key.address().to_plain_hex());
            assert!(!json.contains(key.expose_hex().as_str()));
        }
    }

    #[test]
    fn defaults_are_the_safe_costs() {
        assert_eq!(
            KdfParams::scrypt_default(),
            KdfParams::Scrypt {
                log_n: 18,
                r: 8,
                p: 1
            }
        );
        let key = ValidatorKey::generate();
        let json = encrypt(&key, PASSWORD, &KdfParams::scrypt_default()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["crypto"]["kdfparams"]["n"], 262_144);
        assert_eq!(v["crypto"]["kdfparams"]["r"], 8);
        assert_eq!(v["crypto"]["kdfparams"]["p"], 1);
    }

    #[test]
    fn wrong_password_and_tampered_mac_are_distinct() {
        let key = ValidatorKey::generate();
        let json = encrypt(&key, PASSWORD, &KdfParams::scrypt_fast_for_tests()).unwrap();
        assert!(matches!(
            decrypt(json.as_bytes(), b"wrong"),
            Err(KeystoreError::WrongPassword)
        ));
        let tampered = edit(&json, |v| {
            let mac = v["crypto"]["mac"].as_str().unwrap();
            let flipped = if mac.starts_with('0') { "1" } else { "0" };
            v["crypto"]["mac"] = format!("{flipped}{}", &mac[1..]).into();
        });
        match decrypt(tampered.as_bytes(), PASSWORD) {
            Err(KeystoreError::TamperedMac(a)) => assert_eq!(a, key.address()),
            other => panic!("expected TamperedMac, got {other:?}"),
        }
        let no_address = edit(&json, |v| {
            v.as_object_mut().unwrap().remove("address");
        });
        assert_eq!(decrypt(no_address.as_bytes(), PASSWORD).unwrap(), key);
        assert!(matches!(
            decrypt(no_address.as_bytes(), b"wrong"),
            Err(KeystoreError::WrongPasswordOrCorrupt)
        ));
    }

    #[test]
    fn address_field_must_match_the_key() {
        let key = ValidatorKey::generate();
        let other = ValidatorKey::generate();
        let json = encrypt(&key, PASSWORD, &KdfParams::pbkdf2_fast_for_tests()).unwrap();
        let lying = edit(&json, |v| {
            v["address"] = other.address().to_plain_hex().into()
        });
        assert!(matches!(
            decrypt(lying.as_bytes(), PASSWORD),
            Err(KeystoreError::AddressMismatch { .. })
        ));
        // Checksummed and 0x-prefixed addresses are read as the same address.
        let checksummed = edit(&json, |v| v["address"] = key.address().to_string().into());
        assert_eq!(decrypt(checksummed.as_bytes(), PASSWORD).unwrap(), key);
    }

    #[test]
    fn truncated_and_malformed_input_is_refused_clearly() {
        let key = ValidatorKey::generate();
        let json = encrypt(&key, PASSWORD, &KdfParams::scrypt_fast_for_tests()).unwrap();
        let truncated = &json.as_bytes()[..json.len() / 2];
        assert!(matches!(
            decrypt(truncated, PASSWORD),
            Err(KeystoreError::Malformed(_))
        ));
        let v2 = edit(&json, |v| v["version"] = 2.into());
        assert!(matches!(
            decrypt(v2.as_bytes(), PASSWORD),
            Err(KeystoreError::UnsupportedVersion(2))
        ));
        let cbc = edit(&json, |v| v["crypto"]["cipher"] = "aes-128-cbc".into());
        assert!(matches!(
            decrypt(cbc.as_bytes(), PASSWORD),
            Err(KeystoreError::UnsupportedCipher(_))
        ));
        for (field, value) in [
            ("n", 1u64 << 30),
            ("n", 1000),
            ("r", 1 << 20),
            ("p", 1 << 20),
            ("p", 0),
        ] {
            let hostile = edit(&json, |v| v["crypto"]["kdfparams"][field] = value.into());
            assert!(
                matches!(
                    decrypt(hostile.as_bytes(), PASSWORD),
                    Err(KeystoreError::BadKdfParams(_))
                ),
                "{field}={value}"
            );
        }
        // n=2^20 with r=8 needs just over 1 GiB and is refused before any allocation.
        let big = edit(&json, |v| {
            v["crypto"]["kdfparams"]["n"] = (1u64 << 20).into()
        });
        assert!(matches!(
            decrypt(big.as_bytes(), PASSWORD),
            Err(KeystoreError::BadKdfParams(_))
        ));
        let short = edit(&json, |v| v["crypto"]["ciphertext"] = "abcd".into());
        assert!(matches!(
            decrypt(short.as_bytes(), PASSWORD),
            Err(KeystoreError::BadField {
                field: "crypto.ciphertext",
                ..
            })
        ));
        assert!(matches!(
            decrypt(&vec![b' '; MAX_KEYSTORE_BYTES + 1], PASSWORD),
            Err(KeystoreError::TooLarge(_))
        ));
        assert!(matches!(
            encrypt(&key, b"", &KdfParams::scrypt_fast_for_tests()),
            Err(KeystoreError::EmptyPassword)
        ));
    }

    #[test]
    fn reads_the_capitalised_crypto_member() {
        let key = ValidatorKey::generate();
        let json = encrypt(&key, PASSWORD, &KdfParams::pbkdf2_fast_for_tests()).unwrap();
        let old = json.replace("\"crypto\"", "\"Crypto\"");
        assert_eq!(decrypt(old.as_bytes(), PASSWORD).unwrap(), key);
    }
}
