//! `orchestrator init` and `orchestrator join` as the deployment pipeline runs them, on the
//! embedded backends: what a first run writes, that a re-run leaves every secret file and
//! lease record byte-identical, that bad input is one line, exit 64 and nothing written, and
//! that a joiner treats the consortium data as hostile.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use serde_json::Value;
use shared::lease::sqlite::SqliteLeaseStore;
use shared::lease::LeaseStore;
use shared::secret::dir::DirSecretStore;
use shared::secret::SecretStore;
use shared::{Address, ValidatorKey};

mod common;
use common::{assert_one_line_failure, orchestrator, orchestrator_with_env, stderr, stdout};
use integration_tests::tls::{OneAnswerServer, TestCa};

const ADMIN0: &str = "0x00000000000000000000000000000000000a0001";
const ADMIN1: &str = "0x00000000000000000000000000000000000a0002";

fn init_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "init",
        "--member",
        "0",
        "--validators",
        "3",
        "--admin",
        ADMIN0,
        "--secrets",
        "dir:secrets",
        "--leases",
        "sqlite:leases.db",
        "--out",
        "net",
    ];
    args.extend_from_slice(extra);
    args
}

fn join_args<'a>(data: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "join",
        "--member",
        "1",
        "--validators",
        "2",
        "--admin",
        ADMIN1,
        "--consortium-data",
        data,
        "--secrets",
        "dir:secrets1",
        "--leases",
        "sqlite:leases1.db",
        "--out",
        "member1",
    ];
    args.extend_from_slice(extra);
    args
}

/// Every file under `dir`, relative path → bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn validators_of(deployment: &Value) -> Vec<Address> {
    deployment["validators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn init_stores_tagged_identities_and_writes_genesis_networkinfo_and_deployment_output() {
    let d = tempfile::tempdir().unwrap();
    let o = orchestrator(&init_args(&[]), d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("3 identities (3 created, 0 already existed)"));
    // Progress: one stderr line per identity.
    assert_eq!(stderr(&o).lines().count(), 3, "{}", stderr(&o));

    let net = d.path().join("net");
    for f in ["aura", "qbft", "clique"] {
        assert!(
            net.join("genesis").join(format!("{f}.json")).is_file(),
            "{f}"
        );
    }
    let deployment = json_file(&net.join("deployment-output.json"));
    let validators = validators_of(&deployment);
    assert_eq!(validators.len(), 3);
    assert_eq!(deployment["genesis"]["qbft"], "genesis/qbft.json");
    assert_eq!(deployment["leases"], "sqlite:leases.db");

    let info = json_file(&net.join("networkinfo.json"));
    for field in [
        "majorVersion",
        "minorVersion",
        "bootnodes",
        "valSetContract",
        "adminContract",
        "adminContractABI",
        "paritySpec",
        "errorMessage",
    ] {
        assert!(info.get(field).is_some(), "networkinfo lacks {field}");
    }
    let listed: Vec<Address> = info["addressList"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(listed, validators);
    assert_eq!(
        info["paritySpec"].as_str().unwrap(),
        fs::read_to_string(net.join("genesis/aura.json")).unwrap()
    );

    // The stores: one tagged secret and one available lease record per identity, and the
    // secret's key is the listed validator.
    rt().block_on(async {
        let secrets = DirSecretStore::open(&d.path().join("secrets")).unwrap();
        let leases = SqliteLeaseStore::open(&d.path().join("leases.db")).unwrap();
        for (i, address) in validators.iter().enumerate() {
            let id = shared::Name::new(format!("m0-v{i}")).unwrap();
            let secret = secrets.get(&id).await.unwrap();
            let key = ValidatorKey::from_hex(secret.value.expose()).unwrap();
            assert_eq!(key.address(), *address);
            let tags = &secret.properties.tags;
            assert_eq!(tags["address"], address.to_string());
            assert_eq!(tags["member"], "0");
            assert_eq!(tags["index"], i.to_string());
            assert_eq!(tags["network-id"], "10101010");
            assert_eq!(
                secret.properties.content_type.as_deref(),
                Some(shared::keyfile::CONTENT_TYPE_RAW_HEX)
            );
            leases.read(&id).await.unwrap();
        }
        assert_eq!(leases.list().await.unwrap().len(), 3);
    });

    // No key reaches the output.
    let secrets = tree(&d.path().join("secrets"));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    for bytes in secrets.values() {
        let v: Value = serde_json::from_slice(bytes).unwrap();
        let hex = v["value"].as_str().unwrap_or_default().to_string();
        if hex.len() == 64 {
            assert!(!all.contains(&hex[..32]));
        }
    }
}

#[test]
fn progress_is_one_line_per_identity_in_text_or_json() {
    let d = tempfile::tempdir().unwrap();
    let o = orchestrator(&init_args(&[]), d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stderr(&o);
    assert!(!text.contains('\u{1b}'), "ANSI codes on a pipe: {text:?}");
    for (i, line) in text.lines().enumerate() {
        assert!(line.contains(" INFO "), "no level: {line}");
        assert!(
            line.contains(&format!("[{}/3] key created, lease record created", i + 1)),
            "{line}"
        );
        assert!(line.contains(&format!("identity=m0-v{i}")), "{line}");
        assert!(line.contains(" address=0x"), "{line}");
    }

    let d = tempfile::tempdir().unwrap();
    let o = orchestrator(&init_args(&["--log-format", "json"]), d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<Value> = stderr(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "{}", stderr(&o));
    for (i, event) in lines.iter().enumerate() {
        assert_eq!(event["level"], "INFO", "{event}");
        assert_eq!(event["fields"]["identity"], format!("m0-v{i}"), "{event}");
        let message = event["fields"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(&format!("[{}/3] ", i + 1)), "{event}");
    }

    // RUST_LOG filters: at warn the progress is gone, the result on stdout stays.
    let d = tempfile::tempdir().unwrap();
    let o = orchestrator_with_env(
        &init_args(&[]),
        d.path(),
        &[("RUST_LOG", Path::new("warn"))],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "RUST_LOG=warn still showed progress");
    assert!(stdout(&o).contains("3 identities"), "{}", stdout(&o));
}

#[test]
fn a_rerun_leaves_every_secret_file_lease_record_and_output_byte_identical() {
    let d = tempfile::tempdir().unwrap();
    let o = orchestrator(&init_args(&[]), d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let secrets = tree(&d.path().join("secrets"));
    let leases = fs::read(d.path().join("leases.db")).unwrap();
    let outputs = tree(&d.path().join("net"));

    let again = orchestrator(&init_args(&[]), d.path());
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("(0 created, 3 already existed: m0-v0, m0-v1, m0-v2)"),
        "{}",
        stdout(&again)
    );
    assert_eq!(stdout(&again).matches("unchanged").count(), 5);
    assert_eq!(secrets, tree(&d.path().join("secrets")));
    assert_eq!(leases, fs::read(d.path().join("leases.db")).unwrap());
    assert_eq!(outputs, tree(&d.path().join("net")));
}

#[test]
fn an_interrupted_run_is_completed_and_keeps_the_keys_it_had_stored() {
    let d = tempfile::tempdir().unwrap();
    let o = orchestrator(&init_args(&[]), d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let kept = fs::read(d.path().join("secrets").join("m0-v0.json")).unwrap_or_default();
    // Lose part of the run: one secret, and every output.
    let victim = fs::read_dir(d.path().join("secrets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().contains("v2"))
        .unwrap();
    fs::remove_file(victim).unwrap();
    fs::remove_dir_all(d.path().join("net")).unwrap();

    let again = orchestrator(&init_args(&[]), d.path());
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("(1 created, 2 already existed: m0-v0, m0-v1)"));
    assert_eq!(
        kept,
        fs::read(d.path().join("secrets").join("m0-v0.json")).unwrap_or_default()
    );
    assert!(d.path().join("net/networkinfo.json").is_file());
}

#[test]
fn outputs_from_another_run_are_never_overwritten() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("net")).unwrap();
    fs::write(d.path().join("net/networkinfo.json"), "{}").unwrap();
    let o = orchestrator(&init_args(&[]), d.path());
    assert_eq!(o.status.code(), Some(73), "{}", stderr(&o));
    let last = stderr(&o).lines().last().unwrap_or_default().to_string();
    assert!(last.contains("exists with other content"), "{last}");
    assert_eq!(
        fs::read(d.path().join("net/networkinfo.json")).unwrap(),
        b"{}"
    );
    assert!(!d.path().join("net/genesis").exists(), "all or nothing");
}

#[test]
fn conflicting_inputs_are_refused() {
    let d = tempfile::tempdir().unwrap();
    assert!(orchestrator(&init_args(&[]), d.path()).status.success());
    let before = tree(&d.path().join("secrets"));
    let o = orchestrator(&init_args(&["--network-id", "777"]), d.path());
    assert_one_line_failure(&o, 64, "network-id", "");
    let mut other_admin = init_args(&[]);
    other_admin[6] = ADMIN1;
    let o = orchestrator(&other_admin, d.path());
    assert_one_line_failure(&o, 64, "admin", "");
    assert_eq!(before, tree(&d.path().join("secrets")));
}

/// Bad input: one line, exit 64, and no store, no output directory.
fn assert_refused_and_nothing_written(d: &Path, args: &[&str], needle: &str) {
    let o = orchestrator(args, d);
    assert_one_line_failure(&o, 64, needle, "");
    for p in [
        "secrets",
        "leases.db",
        "net",
        "secrets1",
        "leases1.db",
        "member1",
    ] {
        assert!(!d.join(p).exists(), "{p} was written for {args:?}");
    }
}

#[test]
fn bad_input_to_init_is_one_line_exit_64_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let mut bad_checksum = init_args(&[]);
    // Mixed case with one letter's case flipped: the EIP-55 checksum fails.
    let good = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    let bad = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD";
    assert!(good.parse::<Address>().is_ok());
    bad_checksum[6] = bad;
    assert_refused_and_nothing_written(d.path(), &bad_checksum, "checksum");

    for n in ["1", "16", "0"] {
        let mut args = init_args(&[]);
        args[4] = n;
        assert_refused_and_nothing_written(d.path(), &args, "outside 2-15");
    }
    for id in ["4", "1000000000"] {
        assert_refused_and_nothing_written(
            d.path(),
            &init_args(&["--network-id", id]),
            "network-id",
        );
    }
    // The schema's bootnode pattern takes only digits for the port; the hand-written check
    // took a sign too, and published a document that broke the schema.
    for port in ["+30303", "0", "65536", "030303"] {
        let bootnode = format!("enode://{}@127.0.0.1:{port}", "ab".repeat(64));
        assert_refused_and_nothing_written(
            d.path(),
            &init_args(&["--bootnode", &bootnode]),
            "bootnode 1",
        );
    }
    fs::write(d.path().join("broken.json"), "{\"config\": ").unwrap();
    assert_refused_and_nothing_written(
        d.path(),
        &init_args(&["--base-genesis", "clique=broken.json"]),
        "not JSON",
    );
    fs::write(
        d.path().join("aura-base.json"),
        r#"{"engine": {"clique": {}}}"#,
    )
    .unwrap();
    assert_refused_and_nothing_written(
        d.path(),
        &init_args(&["--flavour", "aura", "--base-genesis", "aura=aura-base.json"]),
        "base genesis",
    );
    // Several problems are listed together.
    let mut many = init_args(&["--network-id", "3"]);
    many[4] = "40";
    let o = orchestrator(&many, d.path());
    assert_one_line_failure(&o, 64, "network-id", "");
    assert!(stderr(&o).contains("--validators 40"), "{}", stderr(&o));
}

#[test]
fn a_config_file_supplies_settings_and_flags_override_it() {
    let d = tempfile::tempdir().unwrap();
    fs::write(
        d.path().join("member.toml"),
        format!(
            "member = 0\nvalidators = 2\nadmin = \"{ADMIN0}\"\nnetwork_id = 4242\n\
             secrets = \"dir:secrets\"\nleases = \"sqlite:leases.db\"\nout = \"net\"\n\
             flavours = [\"clique\"]\nblock_period_secs = 2\n"
        ),
    )
    .unwrap();
    let o = orchestrator(
        &["init", "--config", "member.toml", "--validators", "3"],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let clique = json_file(&d.path().join("net/genesis/clique.json"));
    assert_eq!(clique["config"]["chainId"], 4242);
    assert_eq!(clique["config"]["clique"]["period"], 2);
    assert!(!d.path().join("net/genesis/aura.json").exists());
    assert_eq!(
        validators_of(&json_file(&d.path().join("net/deployment-output.json"))).len(),
        3
    );

    fs::write(d.path().join("typo.toml"), "validatorz = 3\n").unwrap();
    let o = orchestrator(&["init", "--config", "typo.toml"], d.path());
    assert_one_line_failure(&o, 64, "validatorz", "");
}

#[test]
fn join_creates_only_its_own_identities_and_names_what_to_vote_in() {
    let d = tempfile::tempdir().unwrap();
    assert!(orchestrator(&init_args(&[]), d.path()).status.success());
    let o = orchestrator(&join_args("net/networkinfo.json", &[]), d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(&format!(
        "vote in admin {}",
        ADMIN1.parse::<Address>().unwrap()
    )));
    let mine = validators_of(&json_file(&d.path().join("member1/deployment-output.json")));
    assert_eq!(mine.len(), 2);
    for v in &mine {
        assert!(out.contains(&v.to_string()), "{out}");
    }
    // Only member 1's identities, in member 1's stores.
    let names: Vec<String> = tree(&d.path().join("secrets1"))
        .into_keys()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("m1-v")), "{names:?}");
    // The same genesis, byte for byte; the published info now lists both members.
    for f in ["aura", "qbft", "clique"] {
        assert_eq!(
            fs::read(d.path().join(format!("net/genesis/{f}.json"))).unwrap(),
            fs::read(d.path().join(format!("member1/genesis/{f}.json"))).unwrap()
        );
    }
    let info = json_file(&d.path().join("member1/networkinfo.json"));
    assert_eq!(info["members"].as_array().unwrap().len(), 2);
    assert_eq!(
        info["addressList"]["addresses"].as_array().unwrap().len(),
        5
    );

    // A re-run changes nothing.
    let before = tree(&d.path().join("member1"));
    let again = orchestrator(&join_args("net/networkinfo.json", &[]), d.path());
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(before, tree(&d.path().join("member1")));
}

#[test]
fn join_refuses_more_validators_than_the_first_member() {
    let d = tempfile::tempdir().unwrap();
    assert!(orchestrator(&init_args(&[]), d.path()).status.success());
    let mut args = join_args("net/networkinfo.json", &[]);
    args[4] = "4";
    let o = orchestrator(&args, d.path());
    assert_one_line_failure(&o, 64, "more than the first member's 3", "");
    assert!(!d.path().join("secrets1").exists());
}

#[test]
fn join_refuses_malformed_oversized_and_schema_violating_network_info() {
    let d = tempfile::tempdir().unwrap();
    assert!(orchestrator(&init_args(&[]), d.path()).status.success());
    let good = json_file(&d.path().join("net/networkinfo.json"));
    let write = |name: &str, bytes: &[u8]| {
        fs::write(d.path().join(name), bytes).unwrap();
    };
    write("truncated.json", b"{\"majorVersion\": 1, ");
    let mut big = serde_json::to_vec(&good).unwrap();
    big.resize(2 << 20, b' ');
    write("oversized.json", &big);
    let mutate = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    write("major.json", &mutate(&|v| v["majorVersion"] = 2.into()));
    write(
        "checksum.json",
        &mutate(&|v| {
            common::break_one_checksum(v["addressList"]["addresses"].as_array_mut().unwrap())
        }),
    );
    write(
        "missing.json",
        &mutate(&|v| {
            v.as_object_mut().unwrap().remove("addressList");
        }),
    );
    write("extra.json", &mutate(&|v| v["surprise"] = true.into()));
    write(
        "bootnode.json",
        &mutate(&|v| v["bootnodes"] = serde_json::json!(["enode://nope@1.2.3.4:30303"])),
    );
    write(
        "error.json",
        &mutate(&|v| v["errorMessage"] = "maintenance".into()),
    );
    for (name, needle) in [
        ("truncated.json", "not JSON"),
        ("oversized.json", "at most"),
        ("major.json", "majorVersion"),
        ("checksum.json", "checksum"),
        ("missing.json", "addressList"),
        ("extra.json", "surprise"),
        ("bootnode.json", "bootnodes[0]"),
        ("error.json", "maintenance"),
    ] {
        assert_refused_and_nothing_written_for_join(d.path(), name, needle);
    }
}

fn assert_refused_and_nothing_written_for_join(d: &Path, data: &str, needle: &str) {
    let o = orchestrator(&join_args(data, &[]), d);
    assert_one_line_failure(&o, 64, needle, "");
    for p in ["secrets1", "leases1.db", "member1"] {
        assert!(!d.join(p).exists(), "{p} was written for {data}");
    }
}

#[test]
fn join_reads_network_info_over_http_within_its_size_limit() {
    let d = tempfile::tempdir().unwrap();
    assert!(orchestrator(&init_args(&[]), d.path()).status.success());
    let body = fs::read(d.path().join("net/networkinfo.json")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.ends_with(b"\r\n\r\n") {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "the client closed before ending its request");
            request.extend_from_slice(&buf[..n]);
        }
        let request = String::from_utf8_lossy(&request).into_owned();
        write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        conn.write_all(&body).unwrap();
        request
    });
    let url = format!("http://127.0.0.1:{port}/consortium/networkinfo.json");
    let o = orchestrator(&join_args(&url, &[]), d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let request = server.join().unwrap();
    assert!(
        request.starts_with("GET /consortium/networkinfo.json HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(d.path().join("member1/networkinfo.json").is_file());
}

/// An HTTP/1.1 200 answer carrying `body` with a Content-Length.
fn answer_200(body: &[u8]) -> Vec<u8> {
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body);
    answer
}

/// `https://` with a server whose CA the joiner trusts (through `SSL_CERT_FILE`, as with
/// any system CA bundle). The hand-written client refused every `https://` URL.
#[test]
fn join_reads_network_info_over_https_from_a_server_it_trusts() {
    let d = tempfile::tempdir().unwrap();
    assert!(orchestrator(&init_args(&[]), d.path()).status.success());
    let body = fs::read(d.path().join("net/networkinfo.json")).unwrap();
    let ca = TestCa::generate("consortium-data");
    let ca_file = d.path().join("ca.pem");
    ca.write_ca_file(&ca_file);
    let server = OneAnswerServer::start(Some(ca.server_config.clone()), answer_200(&body));
    let url = format!(
        "https://localhost:{}/consortium/networkinfo.json",
        server.addr.port()
    );
    let o = orchestrator_with_env(
        &join_args(&url, &[]),
        d.path(),
        &[("SSL_CERT_FILE", &ca_file)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let request = server.request().expect("no request arrived");
    assert!(
        request.starts_with("GET /consortium/networkinfo.json HTTP/1.1\r\n"),
        "{request}"
    );
    assert_eq!(
        fs::read(d.path().join("member1/genesis/qbft.json")).unwrap(),
        fs::read(d.path().join("net/genesis/qbft.json")).unwrap(),
        "the joiner copies the network's genesis byte for byte"
    );
}

/// A server whose certificate no trusted CA signed is refused before any request is sent:
/// one line naming the certificate, exit 66, nothing written.
#[test]
fn join_refuses_an_https_server_it_does_not_trust() {
    let d = tempfile::tempdir().unwrap();
    assert!(orchestrator(&init_args(&[]), d.path()).status.success());
    let body = fs::read(d.path().join("net/networkinfo.json")).unwrap();
    let server_ca = TestCa::generate("consortium-data");
    let other_ca = d.path().join("other-ca.pem");
    TestCa::generate("someone else").write_ca_file(&other_ca);
    let server = OneAnswerServer::start(Some(server_ca.server_config), answer_200(&body));
    let url = format!("https://127.0.0.1:{}/networkinfo.json", server.addr.port());
    let o = orchestrator_with_env(
        &join_args(&url, &[]),
        d.path(),
        &[("SSL_CERT_FILE", &other_ca)],
    );
    assert_one_line_failure(&o, 66, "certificate", "");
    assert_eq!(
        server.request(),
        None,
        "a request reached an untrusted server"
    );
    for p in ["secrets1", "leases1.db", "member1"] {
        assert!(!d.path().join(p).exists(), "{p} was written");
    }
}

/// The answer's framing is the HTTP library's business: a chunked answer is read (the
/// hand-written client refused it), and a body past the 1 MiB limit is refused as
/// oversized, whether its length is announced or not.
#[test]
fn join_reads_chunked_answers_and_refuses_oversized_ones() {
    let d = tempfile::tempdir().unwrap();
    assert!(orchestrator(&init_args(&[]), d.path()).status.success());
    let body = fs::read(d.path().join("net/networkinfo.json")).unwrap();
    let chunked = |body: &[u8]| {
        let mut answer =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        for chunk in body.chunks(1000) {
            answer.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            answer.extend_from_slice(chunk);
            answer.extend_from_slice(b"\r\n");
        }
        answer.extend_from_slice(b"0\r\n\r\n");
        answer
    };
    let server = OneAnswerServer::start(None, chunked(&body));
    let url = format!("http://127.0.0.1:{}/networkinfo.json", server.addr.port());
    let o = orchestrator(&join_args(&url, &[]), d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(server.request().is_some());
    assert!(d.path().join("member1/networkinfo.json").is_file());

    let mut big = body.clone();
    big.resize(3 << 20, b' ');
    for answer in [answer_200(&big), chunked(&big)] {
        let d = tempfile::tempdir().unwrap();
        let server = OneAnswerServer::start(None, answer);
        let url = format!("http://127.0.0.1:{}/networkinfo.json", server.addr.port());
        let o = orchestrator(&join_args(&url, &[]), d.path());
        assert_one_line_failure(&o, 64, "at most 1048576", "");
        let _ = server.request();
    }
}

/// Anything but 200 is refused with the status, and a URL's query (where a SAS token
/// would be) never reaches the error line: the hand-written client printed it whole.
#[test]
fn join_refuses_other_answers_and_never_prints_a_urls_query() {
    let d = tempfile::tempdir().unwrap();
    let server = OneAnswerServer::start(
        None,
        b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n"
            .to_vec(),
    );
    let url = format!(
        "http://127.0.0.1:{}/networkinfo.json?sv=2024&sig=S3CRETSIGNATURE",
        server.addr.port()
    );
    let o = orchestrator(&join_args(&url, &[]), d.path());
    assert_one_line_failure(&o, 66, "302 Found", "");
    let err = stderr(&o);
    assert!(!err.contains("S3CRET"), "{err}");
    assert!(err.contains("networkinfo.json?<query redacted>"), "{err}");
    assert!(server.request().is_some());
    for p in ["secrets1", "leases1.db", "member1"] {
        assert!(!d.path().join(p).exists(), "{p} was written");
    }
}

/// `--leased-config`: a leased.toml whose client config cannot decrypt the keystore-v3
/// secrets being stored, or whose pool takes none of them, is warned of; the run goes on.
#[test]
fn init_warns_when_the_leased_config_cannot_use_the_secrets() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("pw"), "pw\n").unwrap();
    fs::write(
        d.path().join("leased.toml"),
        "[identity]\npool = \"m1-\"\n[client]\nformat = \"geth-keystore\"\n",
    )
    .unwrap();
    let o = orchestrator(
        &init_args(&[
            "--secret-format",
            "keystore-v3",
            "--kdf",
            "pbkdf2",
            "--password-file",
            "pw",
            "--leased-config",
            "leased.toml",
        ]),
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("sets neither password_file nor password_secret"),
        "{err}"
    );
    assert!(
        err.contains("identity.pool \"m1-\" takes none of member 0's"),
        "{err}"
    );
    // Raw hex suits every client format: no warning.
    let o = orchestrator(
        &[
            "init",
            "--member",
            "2",
            "--validators",
            "2",
            "--admin",
            ADMIN0,
            "--secrets",
            "dir:secrets2",
            "--leases",
            "sqlite:leases2.db",
            "--out",
            "net2",
            "--leased-config",
            "leased.toml",
        ],
        d.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("password_secret"), "{}", stderr(&o));
}
