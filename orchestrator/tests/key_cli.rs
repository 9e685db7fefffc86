//! `orchestrator key generate|inspect` as a user runs them: files, modes, output, exit
//! status, and that bad input fails with one line, writes nothing, and never shows a key.

use std::fs;
use std::os::unix::fs::MetadataExt;

use shared::keyfile::{self, KeyFormat};
use shared::keystore::{self, KdfParams};
use shared::ValidatorKey;

mod common;
use common::{assert_one_line_failure, entries, orchestrator, stderr, stdout};

#[test]
fn generate_raw_hex_writes_0600_and_prints_the_address_that_inspect_reports() {
    let d = tempfile::tempdir().unwrap();
    let o = orchestrator(&["key", "generate", "--out", "k.hex"], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let address = stdout(&o).trim().to_string();
    assert!(
        address.starts_with("0x") && address.len() == 42,
        "{address}"
    );

    let path = d.path().join("k.hex");
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    let bytes = fs::read(&path).unwrap();
    let (key, format) = keyfile::decode(&bytes, None).unwrap();
    assert_eq!(format, KeyFormat::RawHex);
    assert_eq!(key.address().to_string(), address);
    // The private key is in the file, never on the terminal.
    assert!(!stdout(&o).contains(key.expose_hex().as_str()));
    assert!(!stderr(&o).contains(key.expose_hex().as_str()));

    let o = orchestrator(&["key", "inspect", "k.hex", "--json"], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["address"], address);
    assert_eq!(v["public_key"], key.public_key().to_string());
    assert_eq!(v["enode_id"], key.enode_id());
    assert_eq!(v.as_object().unwrap().len(), 3);
    assert!(!stdout(&o).contains(key.expose_hex().as_str()));
}

#[test]
fn generate_json_prints_address_public_key_and_enode_id() {
    let d = tempfile::tempdir().unwrap();
    let o = orchestrator(
        &[
            "key", "generate", "--format", "besu", "--out", "key", "--json",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let (key, format) = keyfile::decode(&fs::read(d.path().join("key")).unwrap(), None).unwrap();
    assert_eq!(format, KeyFormat::Besu);
    assert_eq!(v["address"], key.address().to_string());
    assert_eq!(v["public_key"], key.public_key().to_string());
    assert_eq!(v["enode_id"], key.enode_id());
}

#[test]
fn keystore_v3_with_the_default_kdf_opens_with_its_password() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("pw"), "s3cret pass\n").unwrap();
    let o = orchestrator(
        &[
            "key",
            "generate",
            "--format",
            "keystore-v3",
            "--password-file",
            "pw",
            "--out",
            "k.json",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let address = stdout(&o).trim().to_string();
    let json = fs::read(d.path().join("k.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["crypto"]["kdf"], "scrypt");
    assert_eq!(v["crypto"]["kdfparams"]["n"], 262_144);
    // The trailing newline of the password file is not part of the password.
    let key = keystore::decrypt(&json, b"s3cret pass").unwrap();
    assert_eq!(key.address().to_string(), address);

    let o = orchestrator(
        &["key", "inspect", "k.json", "--password-file", "pw"],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(&format!("address     {address}")), "{out}");
    assert!(out.contains("format      keystore-v3"), "{out}");
    assert!(out.contains(&key.enode_id()), "{out}");
}

#[test]
fn pbkdf2_keystores_are_written_on_request() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("pw"), "pw").unwrap();
    let o = orchestrator(
        &[
            "key",
            "generate",
            "--format",
            "keystore-v3",
            "--kdf",
            "pbkdf2",
            "--password-file",
            "pw",
            "--out",
            "k.json",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(d.path().join("k.json")).unwrap()).unwrap();
    assert_eq!(v["crypto"]["kdf"], "pbkdf2");
    assert_eq!(v["crypto"]["kdfparams"]["prf"], "hmac-sha256");
}

#[test]
fn inspect_detects_every_format() {
    let d = tempfile::tempdir().unwrap();
    let key = ValidatorKey::generate();
    fs::write(d.path().join("pw"), "pw").unwrap();
    for format in KeyFormat::ALL {
        let pw = format.needs_password().then_some(&b"pw"[..]);
        let bytes = keyfile::encode(&key, format, pw, &KdfParams::scrypt_fast_for_tests()).unwrap();
        let name = format!("key.{format}");
        fs::write(d.path().join(&name), &bytes[..]).unwrap();
        let mut args = vec!["key", "inspect", name.as_str(), "--json"];
        if pw.is_some() {
            args.extend(["--password-file", "pw"]);
        }
        let o = orchestrator(&args, d.path());
        assert!(o.status.success(), "{format}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["address"], key.address().to_string(), "{format}");
    }
}

#[test]
fn bad_key_files_fail_with_one_line_and_no_key_material() {
    let d = tempfile::tempdir().unwrap();
    let key = ValidatorKey::generate();
    let hex = key.expose_hex().to_string();
    let mut non_hex = hex.clone();
    non_hex.replace_range(5..6, "x");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("short", hex.as_bytes()[..62].to_vec(), "64 hex digits"),
        ("long", format!("{hex}ab").into_bytes(), "64 hex digits"),
        ("nonhex", non_hex.into_bytes(), "not hex"),
        ("zero", "0".repeat(64).into_bytes(), "zero"),
        (
            "order",
            b"fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141".to_vec(),
            "group order",
        ),
        ("empty", b"\n".to_vec(), "empty"),
    ];
    for (name, bytes, needle) in cases {
        fs::write(d.path().join(name), bytes).unwrap();
        let o = orchestrator(&["key", "inspect", name], d.path());
        assert_one_line_failure(&o, 65, needle, &hex);
    }
    let o = orchestrator(&["key", "inspect", "missing"], d.path());
    assert_one_line_failure(&o, 66, "cannot read key file missing", "");
}

#[test]
fn bad_keystores_and_passwords_fail_with_one_line_and_no_key_material() {
    let d = tempfile::tempdir().unwrap();
    let key = ValidatorKey::generate();
    let hex = key.expose_hex().to_string();
    let json = keystore::encrypt(&key, b"right", &KdfParams::scrypt_fast_for_tests()).unwrap();
    fs::write(d.path().join("k.json"), &json).unwrap();
    fs::write(d.path().join("truncated.json"), &json[..json.len() / 2]).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["crypto"]["mac"] = "00".repeat(32).into();
    fs::write(d.path().join("tampered.json"), v.to_string()).unwrap();
    fs::write(d.path().join("right"), "right\n").unwrap();
    fs::write(d.path().join("wrong"), "wrong\n").unwrap();
    fs::write(d.path().join("empty"), "\n").unwrap();
    fs::create_dir(d.path().join("adir")).unwrap();

    let run = |args: &[&str]| orchestrator(args, d.path());
    assert_one_line_failure(
        &run(&["key", "inspect", "k.json", "--password-file", "wrong"]),
        65,
        "wrong password",
        &hex,
    );
    assert_one_line_failure(
        &run(&[
            "key",
            "inspect",
            "tampered.json",
            "--password-file",
            "right",
        ]),
        65,
        "MAC was altered",
        &hex,
    );
    assert_one_line_failure(
        &run(&[
            "key",
            "inspect",
            "truncated.json",
            "--password-file",
            "right",
        ]),
        65,
        "not valid keystore JSON",
        &hex,
    );
    assert_one_line_failure(
        &run(&["key", "inspect", "k.json"]),
        64,
        "--password-file",
        &hex,
    );
    assert_one_line_failure(
        &run(&["key", "inspect", "k.json", "--password-file", "nope"]),
        66,
        "cannot read password file nope",
        &hex,
    );
    assert_one_line_failure(
        &run(&["key", "inspect", "k.json", "--password-file", "adir"]),
        74,
        "cannot read password file adir",
        &hex,
    );
    assert_one_line_failure(
        &run(&["key", "inspect", "k.json", "--password-file", "empty"]),
        65,
        "is empty",
        &hex,
    );
}

#[test]
fn bad_generate_invocations_write_nothing() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("pw"), "pw").unwrap();
    fs::write(d.path().join("existing"), "keep me").unwrap();
    fs::create_dir(d.path().join("adir")).unwrap();
    let before = entries(d.path());
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["--format", "keystore-v3", "--out", "k"],
            64,
            "needs --password-file",
        ),
        (
            vec![
                "--format",
                "keystore-v3",
                "--password-file",
                "nope",
                "--out",
                "k",
            ],
            66,
            "cannot read password file",
        ),
        (
            vec![
                "--format",
                "keystore-v3",
                "--password-file",
                "adir",
                "--out",
                "k",
            ],
            74,
            "cannot read password file",
        ),
        (
            vec!["--password-file", "pw", "--out", "k"],
            64,
            "applies only to",
        ),
        (vec!["--out", "existing"], 73, "already exists"),
        (vec!["--out", "no/such/dir/k"], 73, "does not exist"),
        (vec!["--format", "pem", "--out", "k"], 64, "pem"),
        (vec!["--kdf", "pbkdf2", "--out", "k"], 64, "--password-file"),
        (vec!["--bogus"], 64, "--bogus"),
    ];
    for (extra, code, needle) in cases {
        let mut args = vec!["key", "generate"];
        args.extend(extra.iter());
        let o = orchestrator(&args, d.path());
        assert_one_line_failure(&o, code, needle, "");
        assert_eq!(entries(d.path()), before, "{args:?} wrote something");
    }
    assert_eq!(fs::read(d.path().join("existing")).unwrap(), b"keep me");
}

#[test]
fn help_teaches_the_formats_and_exit_codes() {
    let d = tempfile::tempdir().unwrap();
    let o = orchestrator(&["--help"], d.path());
    assert!(o.status.success());
    assert!(stdout(&o).contains("65 bad data"), "{}", stdout(&o));
    let o = orchestrator(&["key", "generate", "--help"], d.path());
    assert!(o.status.success());
    let help = stdout(&o);
    for word in [
        "raw-hex",
        "besu",
        "nethermind",
        "keystore-v3",
        "0600",
        "scrypt",
    ] {
        assert!(help.contains(word), "generate --help lacks {word}: {help}");
    }
}

/// A `dir:` store's file is JSON but no keystore: `inspect` reads the secret it holds (it
/// said "is a keystore-v3 file; pass --password-file" before), or says what the file is.
#[test]
fn inspect_reads_a_dir_secret_file_or_says_what_it_is() {
    use shared::keyfile::CONTENT_TYPE_RAW_HEX;
    use shared::name::Name;
    use shared::secret::dir::DirSecretStore;
    use shared::secret::{SecretStore, SecretValue};

    let d = tempfile::tempdir().unwrap();
    let raw = ValidatorKey::generate();
    let encrypted = ValidatorKey::generate();
    let ks = keystore::encrypt(&encrypted, b"pw", &KdfParams::scrypt_fast_for_tests()).unwrap();
    let store = DirSecretStore::open(&d.path().join("secrets")).unwrap();
    let put = |name: &str, value: String, content_type: &str| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(store.create_if_absent(
            &Name::new(name).unwrap(),
            &SecretValue::new(value.into()),
            Some(content_type),
            &Default::default(),
        ))
        .unwrap();
    };
    put("m0-v0", raw.expose_hex().to_string(), CONTENT_TYPE_RAW_HEX);
    put("m0-v1", ks, keystore::CONTENT_TYPE);
    put("m0-v2", "hello".into(), "text/plain");
    fs::write(d.path().join("pw"), "pw\n").unwrap();

    let o = orchestrator(&["key", "inspect", "secrets/m0-v0"], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("dir: secret file of m0-v0, holding raw-hex"),
        "{out}"
    );
    assert!(out.contains(&raw.address().to_string()), "{out}");
    assert!(!out.contains(raw.expose_hex().as_str()));

    let o = orchestrator(&["key", "inspect", "secrets/m0-v1"], d.path());
    assert_one_line_failure(
        &o,
        64,
        "is a dir: secret file holding a keystore-v3 keystore; pass --password-file",
        "",
    );
    let o = orchestrator(
        &[
            "key",
            "inspect",
            "secrets/m0-v1",
            "--password-file",
            "pw",
            "--json",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["address"], encrypted.address().to_string());

    let o = orchestrator(&["key", "inspect", "secrets/m0-v2"], d.path());
    assert_one_line_failure(&o, 65, "whose content type \"text/plain\" is not a key", "");
    assert!(!stderr(&o).contains("hello"));

    // Other JSON is not called a keystore either.
    fs::write(d.path().join("other.json"), r#"{"a": 1}"#).unwrap();
    let o = orchestrator(&["key", "inspect", "other.json"], d.path());
    assert_one_line_failure(&o, 65, "not a keystore-v3 keystore", "");
}
