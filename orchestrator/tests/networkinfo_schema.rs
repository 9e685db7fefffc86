//! The committed JSON Schema of network info, checked with a real validator (Python's
//! `jsonschema`): what `init` and `join` publish is valid, every schema violation `join`
//! refuses is also refused by the schema, and the checks the schema cannot express
//! (checksums, the rules between fields) are ours alone.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use integration_tests::tools::json_schema_validate;
use orchestrator::networkinfo;
use serde_json::Value;

mod common;

/// A change to a published document, to make it break one rule.
type Mutation = Box<dyn Fn(&mut Value)>;

fn schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/networkinfo.schema.json")
}

fn init(dir: &Path) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args([
            "init",
            "--member",
            "0",
            "--validators",
            "2",
            "--admin",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "--secrets",
            "dir:secrets",
            "--leases",
            "sqlite:leases.db",
            "--out",
            "net",
            "--bootnode",
            &format!("enode://{}@127.0.0.1:30303", "ab".repeat(64)),
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&fs::read(dir.join("net/networkinfo.json")).unwrap()).unwrap()
}

#[test]
fn the_committed_schema_matches_the_one_compiled_in() {
    assert_eq!(
        fs::read_to_string(schema_path()).unwrap(),
        networkinfo::SCHEMA
    );
}

#[test]
fn published_network_info_is_valid_and_every_schema_violation_is_refused_by_both() {
    let d = tempfile::tempdir().unwrap();
    let good = init(d.path());
    let mutations: Vec<(&str, Mutation)> = vec![
        ("as published", Box::new(|_| {})),
        (
            "no addressList",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("addressList");
            }),
        ),
        ("unknown field", Box::new(|v| v["surprise"] = true.into())),
        (
            "major version 2",
            Box::new(|v| v["majorVersion"] = 2.into()),
        ),
        (
            "bad bootnode",
            Box::new(|v| v["bootnodes"][0] = "enode://12@x:1".into()),
        ),
        (
            "short address",
            Box::new(|v| v["valSetContract"] = "0x1234".into()),
        ),
        // The next three were accepted by the hand-written checks: an address parser that
        // takes no prefix or `0X`, and a port parser that takes a `+` sign.
        (
            "address without 0x",
            Box::new(|v| {
                let bare = v["valSetContract"].as_str().unwrap()[2..].to_string();
                v["valSetContract"] = bare.into();
            }),
        ),
        (
            "address with 0X",
            Box::new(|v| {
                let upper = format!("0X{}", &v["adminContract"].as_str().unwrap()[2..]);
                v["adminContract"] = upper.into();
            }),
        ),
        (
            "bootnode port with a sign",
            Box::new(|v| {
                v["bootnodes"][0] = format!("enode://{}@127.0.0.1:+30303", "ab".repeat(64)).into()
            }),
        ),
        ("network id 3", Box::new(|v| v["networkId"] = 3.into())),
        (
            "one validator",
            Box::new(|v| {
                let first = v["members"][0]["validators"][0].clone();
                v["members"][0]["validators"] = serde_json::json!([first]);
            }),
        ),
        (
            "unknown flavour",
            Box::new(|v| v["genesis"]["ibft"] = "{}".into()),
        ),
        (
            "long error message",
            Box::new(|v| v["errorMessage"] = "x".repeat(2000).into()),
        ),
    ];
    let mut paths = Vec::new();
    for (i, (_, mutate)) in mutations.iter().enumerate() {
        let mut v = good.clone();
        mutate(&mut v);
        let path = d.path().join(format!("doc{i}.json"));
        fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        paths.push(path);
    }
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let verdicts = json_schema_validate(&schema_path(), &refs);
    for (((name, _), verdict), path) in mutations.iter().zip(&verdicts).zip(&paths) {
        let ours = networkinfo::parse_untrusted(&fs::read(path).unwrap());
        if *name == "as published" {
            assert_eq!(verdict, &Ok(()), "the schema refuses what init publishes");
            assert!(ours.is_ok(), "join refuses what init publishes: {ours:?}");
        } else {
            assert!(verdict.is_err(), "{name}: the schema accepts it");
            assert!(ours.is_err(), "{name}: join accepts it");
        }
    }
}

#[test]
fn what_the_schema_cannot_say_join_still_refuses() {
    let d = tempfile::tempdir().unwrap();
    let good = init(d.path());
    // Schema-valid, but wrong: a checksum typo, and an address list that is not the
    // members' validators.
    let mut checksum = good.clone();
    common::break_one_checksum(checksum["addressList"]["addresses"].as_array_mut().unwrap());
    let mut reordered = good.clone();
    let list = reordered["addressList"]["addresses"]
        .as_array_mut()
        .unwrap();
    list.reverse();
    for (name, doc) in [("checksum", checksum), ("address list", reordered)] {
        let path = d.path().join(format!("{}.json", name.replace(' ', "-")));
        fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(
            json_schema_validate(&schema_path(), &[&path]),
            vec![Ok(())],
            "{name}: expected schema-valid"
        );
        assert!(
            networkinfo::parse_untrusted(&fs::read(&path).unwrap()).is_err(),
            "{name}: join accepts it"
        );
    }
}
