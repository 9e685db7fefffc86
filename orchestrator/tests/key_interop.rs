//! The CLI's keystores open in tools we did not write: exactly the pipeline's use,
//! `orchestrator key generate --format keystore-v3 --password-file pw --out k.json`, then
//! eth-account's `Account.decrypt` (and ethers) on the file, and `key inspect` agreeing.
//! The tools come from `ops/install-test-deps.sh`; a missing tool fails the test.

use std::fs;
use std::process::Command;

use integration_tests::tools;

fn orchestrator(args: &[&str], cwd: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run orchestrator")
}

#[test]
fn generated_keystore_opens_in_eth_account_and_ethers_to_the_inspected_address() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("pw"), "pipeline password\n").unwrap();
    for kdf in ["scrypt", "pbkdf2"] {
        let out = format!("k-{kdf}.json");
        let o = orchestrator(
            &[
                "key",
                "generate",
                "--format",
                "keystore-v3",
                "--kdf",
                kdf,
                "--password-file",
                "pw",
                "--out",
                &out,
            ],
            d.path(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let printed = String::from_utf8(o.stdout).unwrap().trim().to_string();

        let json = fs::read_to_string(d.path().join(&out)).unwrap();
        let (py_key, py_address) = tools::python_decrypt(&json, b"pipeline password");
        assert_eq!(py_address, printed, "eth-account, {kdf}");
        let (js_key, js_address) = tools::node_decrypt(&json, b"pipeline password");
        assert_eq!(js_address, printed, "ethers, {kdf}");
        assert_eq!(py_key, js_key);

        let o = orchestrator(
            &["key", "inspect", &out, "--password-file", "pw", "--json"],
            d.path(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["address"], py_address, "inspect, {kdf}");
        assert!(!String::from_utf8_lossy(&o.stdout).contains(&py_key));
    }
}
