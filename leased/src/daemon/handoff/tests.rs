//! Staging in each client format, and geth 1.13 reading what is staged for it: the keystore
//! directory (listed, then unlocked with the password file to sign) and the nodekey (its
//! enode id). The geth tests run the binary at `$GETH` or `.tools/bin/geth` and are skipped,
//! with one line saying how to get it, when there is none.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};

use shared::secret::SecretProperties;

use super::*;

const PASSWORD: &[u8] = b"correct horse";

fn stager(runtime_dir: &Path, format: ClientFormat) -> Stager {
    Stager {
        runtime_dir: runtime_dir.to_path_buf(),
        format,
        password_file: None,
        password_secret: Some(Name::new("pw").unwrap()),
        writes_password: format.needs_password(),
        engine_signer: false,
        unlock: false,
        enode: None,
        node_key_file: None,
        kdf: KdfParams::scrypt_fast_for_tests(),
    }
}

fn raw_secret(key: &ValidatorKey) -> Secret {
    Secret {
        properties: SecretProperties {
            name: Name::new("m0-v0").unwrap(),
            content_type: Some(CONTENT_TYPE_RAW_HEX.into()),
            tags: Default::default(),
        },
        value: SecretValue::new(key.expose_hex()),
    }
}

fn password() -> Option<SecretValue> {
    Some(SecretValue::new(Zeroizing::new(
        String::from_utf8(PASSWORD.to_vec()).unwrap(),
    )))
}

/// Stages `key` in `format` in `dir` and publishes it; the published key and password.
fn publish(dir: &Path, format: ClientFormat, key: &ValidatorKey) -> KeyFile {
    let stager = stager(dir, format);
    let staged = stager
        .stage(Ticket::for_tests(3), raw_secret(key), password(), || false)
        .unwrap()
        .unwrap();
    assert_eq!(staged.address, key.address().to_string());
    KeyFile::publish(&staged, stager.key_path(), stager.password_path()).unwrap()
}

#[test]
fn a_keystore_directory_is_published_whole_and_deleted_whole() {
    let dir = tempfile::tempdir().unwrap();
    let key = ValidatorKey::generate();
    let published = publish(dir.path(), ClientFormat::NethermindKeystore, &key);
    let keystore_dir = published.path().to_path_buf();
    assert_eq!(keystore_dir, dir.path().join("keystore"));
    let files: Vec<_> = fs::read_dir(&keystore_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let json = fs::read(&files[0]).unwrap();
    assert_eq!(keystore::decrypt(&json, PASSWORD).unwrap(), key);
    assert_eq!(
        published.password(),
        Some(dir.path().join("password").as_path())
    );
    // Nothing staged is left beside what was published.
    let mut names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["keystore", "password"]);
    drop(published);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_leftover_keystore_directory_is_replaced_not_merged() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("keystore");
    fs::create_dir(&old).unwrap();
    fs::write(old.join("UTC--old--00"), b"{}").unwrap();
    let key = ValidatorKey::generate();
    let published = publish(dir.path(), ClientFormat::GethKeystore, &key);
    let files: Vec<_> = fs::read_dir(published.path()).unwrap().collect();
    assert_eq!(
        files.len(),
        1,
        "the old keystore was kept beside the new one"
    );
}

#[test]
fn a_keystore_secret_without_a_password_is_refused_and_its_errors_hold_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = ValidatorKey::generate();
    let json = keystore::encrypt(&key, PASSWORD, &KdfParams::scrypt_fast_for_tests()).unwrap();
    let secret = || Secret {
        properties: SecretProperties {
            name: Name::new("m0-v0").unwrap(),
            content_type: Some(keystore::CONTENT_TYPE.into()),
            tags: Default::default(),
        },
        value: SecretValue::new(Zeroizing::new(json.clone())),
    };
    let mut s = stager(dir.path(), ClientFormat::RawHex);
    s.password_secret = None;
    let e = s
        .stage(Ticket::for_tests(1), secret(), None, || false)
        .err()
        .unwrap();
    assert!(
        e.contains("neither client.password_file nor client.password_secret"),
        "{e}"
    );
    let wrong = Some(SecretValue::new(Zeroizing::new("wrong".to_string())));
    s.password_secret = Some(Name::new("pw").unwrap());
    let e = s
        .stage(Ticket::for_tests(2), secret(), wrong, || false)
        .err()
        .unwrap();
    assert!(e.contains("wrong password"), "{e}");
    assert!(!e.contains(key.expose_hex().as_str()));
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    // With the password: decrypted, and written as raw hex.
    let staged = s
        .stage(Ticket::for_tests(3), secret(), password(), || false)
        .unwrap()
        .unwrap();
    let bytes = fs::read(staged.key.as_ref().unwrap()).unwrap();
    assert_eq!(bytes, format!("{}\n", *key.expose_hex()).as_bytes());
    staged.discard();
}

// ---- geth ----

/// geth, from `$GETH` or this checkout's `.tools/bin/geth`; `None` (and one line saying how
/// to get it) when neither is there.
fn geth() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("GETH").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/geth")),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.is_file());
    if found.is_none() {
        eprintln!(
            "SKIP: no geth: set GETH, or gunzip ../shared/tools/geth/geth-1.13.15-linux-amd64.gz \
             into .tools/bin/geth (checksum in ../shared/tools/geth/README.md)"
        );
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One JSON-RPC call over plain HTTP to 127.0.0.1:`port`; `None` while nothing listens.
fn rpc(port: u16, method: &str, params: serde_json::Value) -> Option<serde_json::Value> {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        .to_string();
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (_, json) = answer.split_once("\r\n\r\n")?;
    serde_json::from_str(json.trim()).ok()
}

/// Kills geth when the test ends, however it ends.
struct Geth(Child);

impl Drop for Geth {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn geth_reads_the_keystore_directory_and_the_nodekey() {
    let Some(geth) = geth() else { return };
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("run");
    fsutil::ensure_private_dir(&runtime).unwrap();
    let key = ValidatorKey::generate();
    let keystore_dir = publish(&runtime, ClientFormat::GethKeystore, &key);
    let nodekey = publish(&runtime, ClientFormat::GethNodekey, &key);
    let datadir = dir.path().join("geth");

    // geth lists the account from the directory...
    let out = Command::new(&geth)
        .args(["account", "list", "--datadir"])
        .arg(&datadir)
        .arg("--keystore")
        .arg(keystore_dir.path())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        listed.contains(&format!("Account #0: {{{}}}", key.address().to_plain_hex())),
        "{listed}"
    );

    // ...unlocks it with the password file and signs with it, and takes the nodekey as its
    // p2p identity. Loopback only, no discovery, no peers.
    let (http, auth, p2p) = (free_port(), free_port(), free_port());
    let address = key.address().to_string();
    let child = Command::new(&geth)
        .arg("--datadir")
        .arg(&datadir)
        .arg("--keystore")
        .arg(keystore_dir.path())
        .arg("--password")
        .arg(keystore_dir.password().unwrap())
        .args(["--unlock", &address, "--allow-insecure-unlock", "--nodekey"])
        .arg(nodekey.path())
        .args(["--nodiscover", "--maxpeers", "0", "--nat", "none"])
        .args(["--netrestrict", "127.0.0.0/8", "--ipcdisable"])
        .args(["--port", &p2p.to_string(), "--authrpc.addr", "127.0.0.1"])
        .args(["--authrpc.port", &auth.to_string(), "--http", "--http.addr"])
        .args(["127.0.0.1", "--http.port", &http.to_string()])
        .args(["--http.api", "eth,admin", "--networkid", "4242"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _geth = Geth(child);
    let started = std::time::Instant::now();
    let signature = loop {
        match rpc(
            http,
            "eth_sign",
            serde_json::json!([address, "0x6c6561736564"]),
        ) {
            Some(answer) if answer.get("result").is_some() => break answer["result"].clone(),
            answer => {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "geth did not sign within 60 s: {answer:?}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    // 65 bytes: geth decrypted the keystore with the password file.
    assert_eq!(signature.as_str().unwrap().len(), 2 + 130, "{signature}");
    let info = rpc(http, "admin_nodeInfo", serde_json::json!([])).unwrap();
    let enode = info["result"]["enode"].as_str().unwrap();
    assert!(
        enode.starts_with(&format!("enode://{}@", key.enode_id())),
        "{enode}"
    );
}

/// `{node_id}` is the node key file's public key when one is named, else the identity's;
/// a node key that cannot be read leaves the enode out, not the hand-off.
#[test]
fn the_enode_names_the_node_key_files_id_or_the_identitys() {
    let dir = tempfile::tempdir().unwrap();
    let identity = ValidatorKey::generate();
    let node_key = ValidatorKey::generate();
    let node_key_file = dir.path().join("nodekey");
    std::fs::write(&node_key_file, node_key.expose_hex().as_bytes()).unwrap();
    let mut s = stager(dir.path(), ClientFormat::RawHex);
    s.enode = Some("enode://{node_id}@10.0.1.5:30303".into());
    assert_eq!(
        s.enode(&identity).unwrap(),
        format!("enode://{}@10.0.1.5:30303", identity.enode_id())
    );
    s.node_key_file = Some(node_key_file.clone());
    assert_eq!(
        s.enode(&identity).unwrap(),
        format!("enode://{}@10.0.1.5:30303", node_key.enode_id())
    );
    std::fs::remove_file(&node_key_file).unwrap();
    assert_eq!(s.enode(&identity), None);
}

/// `{host_ip}` is the host's own address (never a loopback one when the host has a route
/// out); without a route the enode is left out, not made up.
#[test]
fn the_enode_names_the_hosts_address() {
    let dir = tempfile::tempdir().unwrap();
    let identity = ValidatorKey::generate();
    let mut s = stager(dir.path(), ClientFormat::RawHex);
    s.enode = Some("enode://{node_id}@{host_ip}:30303".into());
    match host_ip() {
        Ok(ip) => {
            let enode = s.enode(&identity).unwrap();
            assert!(!ip.is_unspecified(), "{ip}");
            assert!(enode.contains(&format!("@{ip}:30303")), "{enode}");
            assert!(shared::enode::is_enode_url(&enode), "{enode}");
        }
        Err(_) => assert_eq!(s.enode(&identity), None),
    }
}
