//! No private key may reach a log, an error or a panic. These tests render every way a key
//! or a value holding one can be formatted, and every error a key operation can produce, and
//! look for the key's hex in the text.

use std::panic;
use std::sync::{Arc, Mutex};

use shared::keyfile::{self, KeyFormat};
use shared::keystore::{self, KdfParams};
use shared::secret::{Secret, SecretProperties, SecretValue};
use shared::{Name, ValidatorKey};
use zeroize::Zeroizing;

/// Asserts that `text` shows no form of `key`'s private hex.
fn assert_clean(key: &ValidatorKey, what: &str, text: &str) {
    let hex = key.expose_hex();
    let lower = text.to_lowercase();
    assert!(
        !lower.contains(hex.as_str()),
        "{what} leaks the key: {text}"
    );
    // Also no long fragment of it (a truncated print would still leak most of the key).
    for window in hex.as_bytes().windows(16) {
        let frag = std::str::from_utf8(window).unwrap();
        assert!(
            !lower.contains(frag),
            "{what} leaks part of the key: {text}"
        );
    }
}

#[test]
fn debug_and_display_of_keys_and_secret_values_are_redacted() {
    let key = ValidatorKey::generate();
    let value = SecretValue::new(key.expose_hex());
    let secret = Secret {
        properties: SecretProperties {
            name: Name::new("m0-v0").unwrap(),
            content_type: None,
            tags: Default::default(),
        },
        value: value.clone(),
    };
    let renders = [
        ("Debug", format!("{key:?}")),
        ("alternate Debug", format!("{key:#?}")),
        ("Display", format!("{key}")),
        ("Option Debug", format!("{:?}", Some(key.clone()))),
        ("Result Debug", format!("{:?}", Ok::<_, ()>(key.clone()))),
        ("Vec Debug", format!("{:?}", vec![key.clone()])),
        ("SecretValue Debug", format!("{value:?}")),
        ("Secret Debug", format!("{secret:#?}")),
    ];
    for (what, text) in renders {
        assert_clean(&key, what, &text);
    }
    // The redaction still identifies the key by its public address.
    assert!(format!("{key:?}").contains(&key.address().to_string()));
}

#[test]
fn errors_never_echo_key_material() {
    let key = ValidatorKey::generate();
    let hex = key.expose_hex();
    let mut errors = Vec::new();

    // Parse errors on inputs that are almost this key.
    let short = &hex[..62];
    errors.push(ValidatorKey::from_hex(short).unwrap_err().to_string());
    let mut bad = hex.to_string();
    bad.replace_range(40..41, "z");
    errors.push(ValidatorKey::from_hex(&bad).unwrap_err().to_string());
    errors.push(
        ValidatorKey::from_hex(&format!("{}00", *hex))
            .unwrap_err()
            .to_string(),
    );
    errors.push(
        keyfile::decode(format!("{short}\n").as_bytes(), None)
            .unwrap_err()
            .to_string(),
    );

    // Keystore errors: wrong password, tampered MAC, lying address, truncation.
    let json = keystore::encrypt(&key, b"pw", &KdfParams::scrypt_fast_for_tests()).unwrap();
    errors.push(
        keystore::decrypt(json.as_bytes(), b"nope")
            .unwrap_err()
            .to_string(),
    );
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["crypto"]["mac"] = "00".repeat(32).into();
    errors.push(
        keystore::decrypt(v.to_string().as_bytes(), b"pw")
            .unwrap_err()
            .to_string(),
    );
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["address"] = ValidatorKey::generate().address().to_plain_hex().into();
    errors.push(
        keystore::decrypt(v.to_string().as_bytes(), b"pw")
            .unwrap_err()
            .to_string(),
    );
    errors.push(
        keystore::decrypt(&json.as_bytes()[..json.len() - 20], b"pw")
            .unwrap_err()
            .to_string(),
    );
    errors.push(
        keyfile::encode(
            &key,
            KeyFormat::RawHex,
            Some(b"pw"),
            &KdfParams::scrypt_fast_for_tests(),
        )
        .unwrap_err()
        .to_string(),
    );
    for (i, e) in errors.iter().enumerate() {
        assert_clean(&key, &format!("error {i}"), e);
        assert!(!e.is_empty());
    }
    // Debug of errors too.
    assert_clean(
        &key,
        "error Debug",
        &format!("{:?}", ValidatorKey::from_hex(short).unwrap_err()),
    );
}

#[test]
// Each case panics on purpose, the way a careless unwrap on a key would.
#[allow(clippy::unnecessary_literal_unwrap)]
fn panics_involving_keys_print_no_key_material() {
    let key = ValidatorKey::generate();
    let other = ValidatorKey::generate();
    let captured = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = captured.clone();
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        sink.lock().unwrap().push(info.to_string());
    }));

    let k = key.clone();
    let o = other.clone();
    let cases: Vec<Box<dyn FnOnce() + panic::UnwindSafe>> = vec![
        {
            let k = k.clone();
            Box::new(move || {
                Ok::<ValidatorKey, ()>(k).unwrap_err();
            })
        },
        {
            let k = k.clone();
            Box::new(move || {
                Err::<(), ValidatorKey>(k).unwrap();
            })
        },
        {
            let k = k.clone();
            Box::new(move || {
                Err::<(), ValidatorKey>(k).expect("holding the key");
            })
        },
        {
            let k = k.clone();
            Box::new(move || assert_eq!(k, o, "keys differ"))
        },
        {
            let v = SecretValue::new(Zeroizing::new(k.expose_hex().to_string()));
            Box::new(move || {
                Err::<(), SecretValue>(v).unwrap();
            })
        },
        Box::new(move || panic!("state: {k:?}")),
    ];
    let n = cases.len();
    for case in cases {
        assert!(panic::catch_unwind(case).is_err());
    }
    panic::set_hook(previous);

    let messages = captured.lock().unwrap();
    assert_eq!(messages.len(), n, "every case panicked once");
    for m in messages.iter() {
        assert_clean(&key, "panic message", m);
        assert_clean(&other, "panic message", m);
    }
}
