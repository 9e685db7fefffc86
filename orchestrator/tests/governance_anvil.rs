//! `orchestrator governance` against a real Ethereum node: Anvil (`@foundry-rs/anvil`,
//! from npm) started on member 0's own Clique genesis, which carries the governance
//! contract in its alloc. The whole join flow: member 0 runs `init`, member 1 runs
//! `join`, member 0's admin votes member 1's admin in, member 1 adds its validators from
//! its secret store, `getValidators()` lists them (checked with `cast` too), a third
//! member over the cap is refused by the contract with a readable reason, and an admin is
//! removed by majority. Every bad input on the way gets one line and a non-zero exit, with
//! nothing sent.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shared::ValidatorKey;

struct Anvil {
    child: Child,
    url: String,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a loopback port")
        .port()
}

/// Anvil on loopback with `genesis`, once it answers.
fn anvil(genesis: &Path, dir: &Path) -> Anvil {
    anvil_with(Some(genesis), dir, &[])
}

/// Anvil on loopback with `extra` options, on `genesis` or on its own default chain
/// (which has no governance contract), once it answers.
fn anvil_with(genesis: Option<&Path>, dir: &Path, extra: &[&str]) -> Anvil {
    let port = free_port();
    let log = std::fs::File::create(dir.join(format!("anvil-{port}.log"))).expect("anvil log");
    let mut cmd = Command::new(integration_tests::tools::foundry("anvil"));
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(extra);
    if let Some(genesis) = genesis {
        cmd.arg("--init").arg(genesis);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start anvil");
    let anvil = Anvil {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while cast(&["chain-id", "--rpc-url", &anvil.url]).status.code() != Some(0) {
        assert!(
            Instant::now() < deadline,
            "anvil did not answer within 30 s: {}",
            std::fs::read_to_string(dir.join(format!("anvil-{port}.log"))).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    anvil
}

fn cast(args: &[&str]) -> Output {
    Command::new(integration_tests::tools::foundry("cast"))
        .args(args)
        .output()
        .expect("run cast")
}

fn cast_text(args: &[&str]) -> String {
    let o = cast(args);
    assert!(
        o.status.success(),
        "cast {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn orchestrator(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run orchestrator");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs `args`, which must succeed; its stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = orchestrator(dir, args);
    assert_eq!(code, 0, "orchestrator {args:?} failed:\n{out}\n{err}");
    out
}

/// Runs `args`, which must fail with `code` and one stderr line; that line.
fn fails(dir: &Path, args: &[&str], code: i32) -> String {
    let (got, out, err) = orchestrator(dir, args);
    assert_eq!(got, code, "orchestrator {args:?}:\n{out}\n{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {err}");
    lines[0].to_string()
}

/// An admin: its key file (raw hex) and checksummed address.
struct Admin {
    key_file: PathBuf,
    address: String,
    key: ValidatorKey,
}

fn admin(dir: &Path, name: &str) -> Admin {
    let key = ValidatorKey::generate();
    let key_file = dir.join(format!("{name}.key"));
    shared::fsutil::write_new_private(&key_file, key.expose_hex().as_bytes()).unwrap();
    Admin {
        key_file,
        address: key.address().to_string(),
        key,
    }
}

fn key_arg(a: &Admin) -> String {
    a.key_file.display().to_string()
}

fn validators_on_chain(url: &str, contract: &str) -> Vec<String> {
    let text = cast_text(&[
        "call",
        contract,
        "getValidators()(address[])",
        "--rpc-url",
        url,
    ]);
    text.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn status(dir: &Path, url: &str) -> Value {
    serde_json::from_str(&ok(dir, &["governance", "status", "--rpc", url, "--json"]))
        .expect("status --json is JSON")
}

fn fund(url: &str, address: &str) {
    // 100 ETH: Anvil's own cheat method, which cast sends as it is.
    cast_text(&[
        "rpc",
        "anvil_setBalance",
        address,
        "0x56bc75e2d63100000",
        "--rpc-url",
        url,
    ]);
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

#[test]
fn a_second_member_goes_from_join_to_validators_on_chain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a0, a1, a2) = (admin(d, "admin0"), admin(d, "admin1"), admin(d, "admin2"));

    // 1. Member 0 starts the network with 2 validators: the cap is 2.
    ok(
        d,
        &[
            "init",
            "--member",
            "0",
            "--validators",
            "2",
            "--admin",
            &a0.address,
            "--secrets",
            "dir:s0",
            "--leases",
            "sqlite:l0.db",
            "--out",
            "net0",
            "--flavour",
            "clique",
        ],
    );
    // 2. Member 1 joins from member 0's network info.
    let joined = orchestrator(
        d,
        &[
            "join",
            "--member",
            "1",
            "--validators",
            "2",
            "--admin",
            &a1.address,
            "--consortium-data",
            "net0/networkinfo.json",
            "--secrets",
            "dir:s1",
            "--leases",
            "sqlite:l1.db",
            "--out",
            "net1",
        ],
    );
    assert_eq!(joined.0, 0, "join failed: {}{}", joined.1, joined.2);
    // It says what to run next.
    let vote_line = format!("orchestrator governance vote-add-admin {}", a1.address);
    assert!(joined.1.contains(&vote_line), "{}", joined.1);
    assert!(
        joined
            .1
            .contains("orchestrator governance add-validator --secrets dir:s1 --member 1"),
        "{}",
        joined.1
    );
    let info: Value =
        serde_json::from_slice(&std::fs::read(d.join("net0/networkinfo.json")).unwrap()).unwrap();
    let contract = info["valSetContract"].as_str().unwrap().to_string();

    let node = anvil(&d.join("net0/genesis/clique.json"), d);
    let url = node.url.as_str();
    for a in [&a0, &a1, &a2] {
        fund(url, &a.address);
    }
    let s = status(d, url);
    assert_eq!(s["admins"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(
        lower(s["admins"][0]["admin"].as_str().unwrap()),
        lower(&a0.address)
    );
    assert_eq!(s["cap"], 2);
    let member0 = validators_on_chain(url, &contract);
    assert_eq!(member0.len(), 2);

    // 3. Member 0's admin votes member 1's admin in: one admin, so one vote passes.
    let out = ok(
        d,
        &[
            "governance",
            "vote-add-admin",
            &a1.address,
            "--rpc",
            url,
            "--key-file",
            &key_arg(&a0),
        ],
    );
    assert!(out.contains("is now an admin"), "{out}");
    // Again: reported, not sent.
    let out = ok(
        d,
        &[
            "governance",
            "vote-add-admin",
            &a1.address,
            "--rpc",
            url,
            "--key-file",
            &key_arg(&a0),
        ],
    );
    assert!(out.contains("already an admin; nothing sent"), "{out}");
    let admins = cast_text(&[
        "call",
        &contract,
        "getAdmins()(address[])",
        "--rpc-url",
        url,
    ]);
    assert!(lower(&admins).contains(&lower(&a1.address)), "{admins}");

    // 4. Member 1 adds its own identities, found in its secret store.
    let out = ok(
        d,
        &[
            "governance",
            "add-validator",
            "--secrets",
            "dir:s1",
            "--member",
            "1",
            "--rpc",
            url,
            "--key-file",
            &key_arg(&a1),
        ],
    );
    assert!(out.contains("the validator set now has 4"), "{out}");
    // 5. getValidators() shows them, as cast reads it.
    let deployment: Value =
        serde_json::from_slice(&std::fs::read(d.join("net1/deployment-output.json")).unwrap())
            .unwrap();
    let member1: Vec<String> = deployment["validators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| lower(v.as_str().unwrap()))
        .collect();
    let on_chain = validators_on_chain(url, &contract);
    assert_eq!(on_chain.len(), 4, "{on_chain:?}");
    for v in member1.iter().chain(&member0) {
        assert!(on_chain.contains(v), "{v} not in {on_chain:?}");
    }
    // A second run adds nothing.
    let out = ok(
        d,
        &[
            "governance",
            "add-validator",
            "--secrets",
            "dir:s1",
            "--member",
            "1",
            "--rpc",
            url,
            "--key-file",
            &key_arg(&a1),
        ],
    );
    assert!(
        out.contains("already your validator; nothing sent"),
        "{out}"
    );

    // 6. A third member over the cap. Two admins now: a vote needs 2.
    let out = ok(
        d,
        &[
            "governance",
            "vote-add-admin",
            &a2.address,
            "--rpc",
            url,
            "--key-file",
            &key_arg(&a0),
        ],
    );
    assert!(out.contains("vote recorded: 1 of 2"), "{out}");
    let again = ok(
        d,
        &[
            "governance",
            "vote-add-admin",
            &a2.address,
            "--rpc",
            url,
            "--key-file",
            &key_arg(&a0),
        ],
    );
    assert!(again.contains("already voted"), "{again}");
    let out = ok(
        d,
        &[
            "governance",
            "vote-add-admin",
            &a2.address,
            "--rpc",
            url,
            "--key-file",
            &key_arg(&a1),
        ],
    );
    assert!(out.contains("is now an admin"), "{out}");
    let third: Vec<String> = (0..3)
        .map(|_| ValidatorKey::generate().address().to_string())
        .collect();
    // Three at once would cross the cap part-way: refused before anything is sent.
    let mut args = vec!["governance", "add-validator"];
    args.extend(third.iter().map(String::as_str));
    args.extend(["--rpc", url, "--key-file"]);
    let k2 = key_arg(&a2);
    args.push(&k2);
    let line = fails(d, &args, 65);
    assert!(
        line.contains("would exceed the first member's 2 validators"),
        "{line}"
    );
    assert_eq!(validators_on_chain(url, &contract).len(), 4);
    // Two reach the cap; the contract itself refuses the third, with its reason in plain words.
    ok(
        d,
        &[
            "governance",
            "add-validator",
            &third[0],
            &third[1],
            "--rpc",
            url,
            "--key-file",
            &k2,
        ],
    );
    let line = fails(
        d,
        &[
            "governance",
            "add-validator",
            &third[2],
            "--rpc",
            url,
            "--key-file",
            &k2,
        ],
        65,
    );
    assert!(
        line.contains("the contract refused it: would exceed the first member's 2 validators"),
        "{line}"
    );
    assert_eq!(validators_on_chain(url, &contract).len(), 6);

    // 7. Removing an admin by majority: 2 of 3 votes; its validators leave the set.
    let out = ok(
        d,
        &[
            "governance",
            "vote-remove-admin",
            &a2.address,
            "--rpc",
            url,
            "--key-file",
            &key_arg(&a0),
        ],
    );
    assert!(out.contains("vote recorded: 1 of 2"), "{out}");
    let s = status(d, url);
    assert_eq!(s["proposals"][0]["votes"], 1, "{s}");
    assert_eq!(s["proposals"][0]["action"], "remove-admin", "{s}");
    let out = ok(
        d,
        &[
            "governance",
            "vote-remove-admin",
            &a2.address,
            "--rpc",
            url,
            "--key-file",
            &key_arg(&a1),
        ],
    );
    assert!(out.contains("is no longer an admin"), "{out}");
    let after = validators_on_chain(url, &contract);
    assert_eq!(after.len(), 4, "{after:?}");
    assert!(third.iter().all(|v| !after.contains(&lower(v))));
    let text = ok(d, &["governance", "status", "--rpc", url]);
    assert!(text.contains("admins      2"), "{text}");
    assert!(text.contains("proposals   none open"), "{text}");

    // Untrusted input: one line each, a non-zero exit, nothing sent.
    let before = cast_text(&["nonce", &a0.address, "--rpc-url", url]);
    let line = fails(
        d,
        &[
            "governance",
            "vote-add-admin",
            "0x1234",
            "--rpc",
            url,
            "--key-file",
            &key_arg(&a0),
        ],
        64,
    );
    assert!(
        line.starts_with("orchestrator: error: the admin \"0x1234\""),
        "{line}"
    );
    // The removed admin signs: not an admin any more.
    let line = fails(
        d,
        &[
            "governance",
            "vote-add-admin",
            &a0.address,
            "--rpc",
            url,
            "--key-file",
            &k2,
        ],
        65,
    );
    assert!(line.contains("is not an admin"), "{line}");
    // A keystore with the wrong password.
    let keystore = shared::keystore::encrypt(
        &a0.key,
        b"right",
        &shared::keystore::KdfParams::scrypt_fast_for_tests(),
    )
    .unwrap();
    std::fs::write(d.join("admin0.json"), keystore).unwrap();
    std::fs::write(d.join("wrong.pw"), "wrong\n").unwrap();
    let line = fails(
        d,
        &[
            "governance",
            "vote-add-admin",
            &a2.address,
            "--rpc",
            url,
            "--key-file",
            "admin0.json",
            "--password-file",
            "wrong.pw",
        ],
        65,
    );
    assert!(line.contains("--key-file admin0.json"), "{line}");
    assert!(!line.contains(&a0.key.expose_hex()[..16]), "{line}");
    // A node nobody runs.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let line = fails(d, &["governance", "status", "--rpc", &dead], 69);
    assert!(line.contains(&dead), "{line}");
    // A chain without the contract (a fresh Anvil has none at the address).
    let bare = anvil_with(None, d, &[]);
    let line = fails(d, &["governance", "status", "--rpc", &bare.url], 65);
    assert!(line.contains("there is no contract at"), "{line}");
    assert_eq!(cast_text(&["nonce", &a0.address, "--rpc-url", url]), before);
}

/// The transaction type follows the chain: EIP-1559 (type 2) where blocks have a base fee,
/// legacy (type 0) on a chain before London.
#[test]
fn transactions_are_eip1559_with_a_base_fee_and_legacy_without() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a0 = admin(d, "admin0");
    ok(
        d,
        &[
            "init",
            "--member",
            "0",
            "--validators",
            "2",
            "--admin",
            &a0.address,
            "--secrets",
            "dir:s0",
            "--leases",
            "sqlite:l0.db",
            "--out",
            "net0",
            "--flavour",
            "clique",
        ],
    );
    let genesis = d.join("net0/genesis/clique.json");
    for (extra, want) in [(&[][..], "2"), (&["--hardfork", "berlin"][..], "0")] {
        let node = anvil_with(Some(&genesis), d, extra);
        let url = node.url.as_str();
        let candidate = ValidatorKey::generate().address().to_string();
        // An admin that cannot pay for gas: one line, nothing sent.
        cast_text(&[
            "rpc",
            "anvil_setBalance",
            &a0.address,
            "0x0",
            "--rpc-url",
            url,
        ]);
        let line = fails(
            d,
            &[
                "governance",
                "vote-add-admin",
                &candidate,
                "--rpc",
                url,
                "--key-file",
                &key_arg(&a0),
            ],
            65,
        );
        assert!(line.contains("cannot pay for gas"), "{line}");
        assert_eq!(cast_text(&["nonce", &a0.address, "--rpc-url", url]), "0");
        fund(url, &a0.address);
        let out = ok(
            d,
            &[
                "governance",
                "vote-add-admin",
                &candidate,
                "--rpc",
                url,
                "--key-file",
                &key_arg(&a0),
                "--json",
            ],
        );
        let doc: Value = serde_json::from_str(&out).expect("--json is JSON");
        assert_eq!(doc["sent"], true, "{doc}");
        let hash = doc["transaction"].as_str().expect("a transaction hash");
        let tx: Value =
            serde_json::from_str(&cast_text(&["tx", hash, "--json", "--rpc-url", url])).unwrap();
        let kind = tx["type"]
            .as_str()
            .map(|t| t.trim_start_matches("0x").to_string());
        assert_eq!(
            kind.as_deref(),
            Some(want),
            "hardfork options {extra:?}: {tx}"
        );
    }
}
