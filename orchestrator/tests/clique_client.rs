//! Our Clique genesis, booted in a real client: `@ethereumjs/client` (npm, pinned in
//! `ops/test-deps/`) loads the file we render, unlocks one freshly generated identity from
//! a raw-hex key file we write, and seals blocks with it.
//!
//! What the client says is checked, not trusted: each sealed header is RLP-encoded here
//! from the fields the client reports, its hash must be the one the client reports, and the
//! sealer is recovered from the seal (keccak of the header without the seal's 65 bytes,
//! then secp256k1 recovery). The genesis hash must equal the one alloy computes from our
//! file alone.
//!
//! The client must never reach beyond this machine, nor see the key anywhere but its 0600
//! file: it listens on 127.0.0.1 only (a preload forces ethereumjs' devp2p sockets, which
//! it binds to every interface, onto loopback), with discovery off and no bootnodes. The
//! key is never in argv and never printed; the test fails if the client's log shows it.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy_consensus::proofs::state_root_ref_unhashed;
use alloy_consensus::{Header, EMPTY_OMMER_ROOT_HASH, EMPTY_ROOT_HASH};
use alloy_primitives::{Bloom, B256, B64};
use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use orchestrator::contracts::{self, ChangeMode, Member};
use orchestrator::genesis::{render_clique, Admin, Consortium, ContractAccount};
use serde_json::{json, Value};
use sha3::{Digest, Keccak256};
use shared::keyfile::{self, KeyFormat};
use shared::keystore::KdfParams;
use shared::{Address, ValidatorKey};
use zeroize::Zeroizing;

/// Clique period: short, so the sealed blocks arrive within seconds.
const PERIOD_SECS: u64 = 1;
/// Blocks that must be sealed by our signer.
const BLOCKS: u64 = 3;
/// From spawning the client to block [`BLOCKS`]: start-up takes a few seconds, sealing
/// `BLOCKS * PERIOD_SECS`; the rest is margin for a loaded 2-core CI machine.
const TIMEOUT: Duration = Duration::from_secs(90);
/// The preload below ends the client after this long whatever happens, so that a test
/// process killed before its guard could run does not leave a client behind for long.
const CLIENT_LIFETIME_SECS: u64 = 300;
/// The Clique seal: a 65-byte recoverable signature at the end of `extraData`.
const SEAL_LEN: usize = 65;
/// The genesis file's name without extension is the client's chain name and data subdir.
const GENESIS_FILE: &str = "consortium.json";

/// Node preload: ethereumjs 0.10 binds its devp2p TCP listener and UDP discovery socket to
/// 0.0.0.0 whatever its flags say, so any listen or bind on all interfaces is moved to
/// 127.0.0.1. It also caps the client's lifetime (see [`CLIENT_LIFETIME_SECS`]).
const LOOPBACK_PRELOAD: &str = r#"'use strict';
const net = require('node:net');
const dgram = require('node:dgram');
const everywhere = (host) => host === undefined || host === '0.0.0.0' || host === '::';
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' && everywhere(args[1])) args[1] = '127.0.0.1';
  return listen.apply(this, args);
};
const bind = dgram.Socket.prototype.bind;
dgram.Socket.prototype.bind = function (...args) {
  if (typeof args[0] === 'number' && everywhere(args[1])) args[1] = '127.0.0.1';
  return bind.apply(this, args);
};
setTimeout(() => process.exit(70), Number(process.env.CLIQUE_TEST_CLIENT_LIFETIME_SECS) * 1000).unref();
"#;

#[test]
fn clique_genesis_boots_in_ethereumjs_and_our_identity_seals() {
    let key = ValidatorKey::generate();
    let signer = key.address();
    let genesis = render_clique(&consortium(signer)).expect("the consortium renders");
    let genesis_bytes = serde_json::to_vec_pretty(&genesis).expect("genesis serialises");

    let dir = tempfile::tempdir().expect("create a temporary directory");
    let genesis_path = dir.path().join(GENESIS_FILE);
    std::fs::write(&genesis_path, &genesis_bytes).expect("write the genesis file");
    // Our own raw-hex key file (64 hex digits, newline, mode 0600) is what the client reads.
    let key_path = dir.path().join("signer.key");
    let key_file = keyfile::encode(
        &key,
        KeyFormat::RawHex,
        None,
        &KdfParams::pbkdf2_fast_for_tests(),
    )
    .expect("encode the key as raw hex");
    shared::fsutil::write_new_private(&key_path, &key_file).expect("write the key file");

    let mut client = Client::start(dir.path(), &genesis_path, &key_path, key.expose_hex());
    client.wait_for_block(BLOCKS);

    let genesis_block = client.block(0);
    let reported_genesis_hash = hash_field(&genesis_block, "hash");
    assert_eq!(
        header_hash(&genesis_block),
        reported_genesis_hash,
        "block 0: the client's hash is not keccak of the header it reports"
    );
    assert_eq!(
        alloy_genesis_hash(&genesis_bytes),
        reported_genesis_hash,
        "the genesis hash ethereumjs reports differs from alloy's for our file"
    );

    for number in 1..=BLOCKS {
        let block = client.block(number);
        assert_eq!(
            header_hash(&block),
            hash_field(&block, "hash"),
            "block {number}: the client's hash is not keccak of the header it reports"
        );
        assert_eq!(
            clique_signer(&block),
            signer,
            "block {number} is not sealed by our identity"
        );
    }

    let log = client.log();
    assert!(
        !log.contains(key.expose_hex().as_str()),
        "the client's output contains the private key"
    );
}

/// One signer; the real governance contract in its code-and-storage form, naming a fixed
/// admin that runs the signer; the admin funded, so that the state has a plain account too.
fn consortium(signer: Address) -> Consortium {
    let admin = Address([0xad; 20]);
    let member = Member {
        admin,
        validators: vec![signer],
    };
    let contract = ContractAccount {
        address: contracts::CONTRACT_ADDRESS,
        runtime_code: contracts::runtime_code(),
        storage: contracts::storage_for(&[member], ChangeMode::Immediate)
            .expect("one admin with one validator is a valid initial state"),
        constructor: None,
    };
    let mut c = Consortium::new(vec![signer], contract);
    c.admin = Some(Admin {
        address: admin,
        balance_wei: 10u128.pow(24),
    });
    c.block_period_secs = PERIOD_SECS;
    c
}

// ---------------------------------------------------------------------------------------
// The client process.

/// A running ethereumjs client. Dropping it kills the client; when the test is panicking,
/// it also prints the client's output, with the key redacted, for the failure report.
struct Client {
    child: Child,
    log_path: PathBuf,
    rpc: SocketAddr,
    /// The key as hex, only to redact it from output printed on failure.
    redact: Zeroizing<String>,
}

impl Client {
    fn start(dir: &Path, genesis: &Path, key_file: &Path, redact: Zeroizing<String>) -> Client {
        let cli = integration_tests::tools::ethereumjs_client_cli();
        let preload = dir.join("loopback.cjs");
        std::fs::write(&preload, LOOPBACK_PRELOAD).expect("write the node preload");
        let log_path = dir.join("client.log");
        let log = File::create(&log_path).expect("create the client log");
        let p2p_port = free_tcp_and_udp_port();
        let rpc_port = loop {
            let port = free_tcp_port();
            if port != p2p_port {
                break port;
            }
        };

        let mut cmd = Command::new("node");
        cmd.arg("--require")
            .arg(&preload)
            .arg(&cli)
            .arg(format!("--gethGenesis={}", genesis.display()))
            .arg(format!("--dataDir={}", dir.join("data").display()))
            // The key stays in its file: --unlock takes a path.
            .arg(format!("--unlock={}", key_file.display()))
            .arg("--mine")
            // Seal without waiting for peers to say the chain is synchronised.
            .arg("--isSingleNode")
            .arg("--discV4=false")
            .arg("--discDns=false")
            .arg("--maxPeers=0")
            .arg(format!("--port={p2p_port}"))
            .arg("--extIP=127.0.0.1")
            .arg("--rpc")
            .arg("--rpcAddr=127.0.0.1")
            .arg(format!("--rpcPort={rpc_port}"))
            .arg("--logLevel=info")
            .env(
                "CLIQUE_TEST_CLIENT_LIFETIME_SECS",
                CLIENT_LIFETIME_SECS.to_string(),
            )
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start `node` for @ethereumjs/client ({e}): install Node.js and run \
                 `ops/install-test-deps.sh` from the workspace root"
            )
        });
        Client {
            child,
            log_path,
            rpc: SocketAddr::from((Ipv4Addr::LOCALHOST, rpc_port)),
            redact,
        }
    }

    /// Polls until the client's head is at least `number`; panics after [`TIMEOUT`] or if
    /// the client exits.
    fn wait_for_block(&mut self, number: u64) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the client exited ({status}) before block {number}");
            }
            let last = match rpc(self.rpc, "eth_blockNumber", json!([])) {
                Ok(head) => {
                    let head = quantity(&head, "eth_blockNumber");
                    if head >= number {
                        return;
                    }
                    format!("head is block {head}")
                }
                Err(e) => e,
            };
            assert!(
                Instant::now() < deadline,
                "no block {number} within {TIMEOUT:?} ({last})"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `eth_getBlockByNumber` without transactions.
    fn block(&self, number: u64) -> Value {
        let block = rpc(
            self.rpc,
            "eth_getBlockByNumber",
            json!([format!("{number:#x}"), false]),
        )
        .unwrap_or_else(|e| panic!("eth_getBlockByNumber({number}): {e}"));
        assert!(
            block.is_object(),
            "the client has no block {number}: {block}"
        );
        block
    }

    /// Everything the client printed so far.
    fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => format!("exited: {status}"),
            _ => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                "running, killed".to_owned()
            }
        };
        if std::thread::panicking() {
            let log = self.log().replace(self.redact.as_str(), "<private key>");
            eprintln!("--- @ethereumjs/client ({status}) output ---\n{log}\n--- end ---");
        }
    }
}

fn free_tcp_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// devp2p uses one port number for TCP and UDP.
fn free_tcp_and_udp_port() -> u16 {
    for _ in 0..100 {
        let port = free_tcp_port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP on 127.0.0.1");
}

// ---------------------------------------------------------------------------------------
// JSON-RPC over HTTP, through reqwest (the shared loopback transport).

/// The `result` of a JSON-RPC call; `Err` for anything that polling may outlast (the
/// client not listening yet) or that the caller reports. 2 s to connect, 10 s in all.
fn rpc(addr: SocketAddr, method: &str, params: Value) -> Result<Value, String> {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }).to_string();
    integration_tests::on_own_runtime(async {
        let client =
            shared::net::loopback_http_client(Duration::from_secs(2), Duration::from_secs(10))
                .map_err(|e| format!("{method}: {e}"))?;
        let http = |e: reqwest::Error| {
            format!(
                "{method} via {addr}: {}",
                integration_tests::error_chain(&e)
            )
        };
        let answer = client
            .post(format!("http://{addr}/"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(http)?;
        let status = answer.status();
        let text = answer.text().await.map_err(http)?;
        if status != reqwest::StatusCode::OK {
            return Err(format!("{method}: HTTP status {status}: {text}"));
        }
        let reply: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{method}: reply is not JSON ({e})"))?;
        match reply.get("error") {
            Some(error) => Err(format!("{method}: {error}")),
            None => Ok(reply["result"].clone()),
        }
    })
}

// ---------------------------------------------------------------------------------------
// Headers: RLP, hash and Clique signer, from the fields the client reports.

/// Header fields in RLP order, and whether each is a quantity (minimal big-endian bytes)
/// or a byte string. The fields after `nonce` are present from their fork on.
const HEADER_FIELDS: [(&str, Field); 21] = [
    ("parentHash", Field::Bytes),
    ("sha3Uncles", Field::Bytes),
    ("miner", Field::Bytes),
    ("stateRoot", Field::Bytes),
    ("transactionsRoot", Field::Bytes),
    ("receiptsRoot", Field::Bytes),
    ("logsBloom", Field::Bytes),
    ("difficulty", Field::Quantity),
    ("number", Field::Quantity),
    ("gasLimit", Field::Quantity),
    ("gasUsed", Field::Quantity),
    ("timestamp", Field::Quantity),
    ("extraData", Field::Bytes),
    ("mixHash", Field::Bytes),
    ("nonce", Field::Bytes),
    ("baseFeePerGas", Field::Quantity),
    ("withdrawalsRoot", Field::Bytes),
    ("blobGasUsed", Field::Quantity),
    ("excessBlobGas", Field::Quantity),
    ("parentBeaconBlockRoot", Field::Bytes),
    ("requestsHash", Field::Bytes),
];
/// Fields up to and including `nonce` are in every header.
const ALWAYS_PRESENT: usize = 15;

#[derive(Clone, Copy)]
enum Field {
    Quantity,
    Bytes,
}

/// The RLP of the header of `block` (JSON-RPC form), with `extraData` cut short by `cut`
/// bytes: 0 for the header itself, [`SEAL_LEN`] for what Clique signs.
fn header_rlp(block: &Value, cut: usize) -> Vec<u8> {
    let mut payload = Vec::new();
    for (i, (name, kind)) in HEADER_FIELDS.iter().enumerate() {
        let Some(value) = block.get(*name).filter(|v| !v.is_null()) else {
            assert!(i >= ALWAYS_PRESENT, "the block has no {name}: {block}");
            // A later fork's field: none after it can be present either.
            assert!(
                HEADER_FIELDS[i..]
                    .iter()
                    .all(|(n, _)| block.get(*n).is_none()),
                "the block has a later header field without {name}: {block}"
            );
            break;
        };
        let mut bytes = hex_bytes(value, name);
        match kind {
            Field::Quantity => {
                let zeros = bytes.iter().take_while(|b| **b == 0).count();
                bytes.drain(..zeros);
            }
            Field::Bytes if *name == "extraData" => {
                let keep = bytes
                    .len()
                    .checked_sub(cut)
                    .unwrap_or_else(|| panic!("extraData is shorter than {cut} bytes"));
                bytes.truncate(keep);
            }
            Field::Bytes => {}
        }
        rlp_string(&mut payload, &bytes);
    }
    let mut out = Vec::with_capacity(payload.len() + 9);
    rlp_length(&mut out, 0xc0, payload.len());
    out.extend_from_slice(&payload);
    out
}

fn rlp_string(out: &mut Vec<u8>, bytes: &[u8]) {
    if let [single] = bytes {
        if *single < 0x80 {
            out.push(*single);
            return;
        }
    }
    rlp_length(out, 0x80, bytes.len());
    out.extend_from_slice(bytes);
}

/// A string (`base` 0x80) or list (`base` 0xc0) prefix for a payload of `len` bytes.
fn rlp_length(out: &mut Vec<u8>, base: u8, len: usize) {
    if len <= 55 {
        out.push(base + len as u8);
    } else {
        let be = len.to_be_bytes();
        let zeros = be.iter().take_while(|b| **b == 0).count();
        out.push(base + 55 + (be.len() - zeros) as u8);
        out.extend_from_slice(&be[zeros..]);
    }
}

fn keccak(bytes: &[u8]) -> [u8; 32] {
    Keccak256::digest(bytes).into()
}

/// `0x` hex of keccak of the header of `block`, as the client writes hashes.
fn header_hash(block: &Value) -> String {
    hex_data(&keccak(&header_rlp(block, 0)))
}

/// The address whose key made the Clique seal of `block`.
fn clique_signer(block: &Value) -> Address {
    let extra = hex_bytes(&block["extraData"], "extraData");
    let seal = &extra[extra
        .len()
        .checked_sub(SEAL_LEN)
        .expect("extraData holds a seal")..];
    let signature = Signature::from_slice(&seal[..64]).expect("the seal's r and s are valid");
    let recovery = RecoveryId::from_byte(seal[64]).expect("the seal's recovery id is 0 or 1");
    let signed = keccak(&header_rlp(block, SEAL_LEN));
    let key = VerifyingKey::recover_from_prehash(&signed, &signature, recovery)
        .expect("the seal recovers to a public key");
    let point = key.to_encoded_point(false);
    // SEC1 uncompressed: 0x04 || X || Y; the address is the last 20 bytes of keccak(X || Y).
    let hash = keccak(&point.as_bytes()[1..]);
    let mut address = [0u8; 20];
    address.copy_from_slice(&hash[12..]);
    Address(address)
}

fn hex_bytes(value: &Value, what: &str) -> Vec<u8> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    let digits = text
        .strip_prefix("0x")
        .unwrap_or_else(|| panic!("{what} lacks 0x: {text}"));
    // Quantities are minimal hex, so may have an odd number of digits.
    let padded = if digits.len() % 2 == 1 {
        format!("0{digits}")
    } else {
        digits.to_owned()
    };
    hex::decode(padded).unwrap_or_else(|e| panic!("{what} is not hex ({e}): {text}"))
}

/// A 32-byte field of `block` as lower-case `0x` hex.
fn hash_field(block: &Value, name: &str) -> String {
    let bytes = hex_bytes(&block[name], name);
    assert_eq!(bytes.len(), 32, "{name} is not 32 bytes");
    hex_data(&bytes)
}

fn hex_data(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

fn quantity(value: &Value, what: &str) -> u64 {
    let bytes = hex_bytes(value, what);
    assert!(bytes.len() <= 8, "{what} does not fit 64 bits: {value}");
    bytes.iter().fold(0, |n, b| (n << 8) | u64::from(*b))
}

// ---------------------------------------------------------------------------------------
// The genesis hash as alloy sees our file.

/// The genesis block hash of a geth-style genesis file, computed with alloy alone:
/// alloy-genesis parses it, alloy's trie helpers give the state root, and alloy-consensus
/// hashes the header. Handles the forks our Clique genesis can enable (to London); refuses
/// a file that activates a later one rather than guess its extra header fields.
fn alloy_genesis_hash(file: &[u8]) -> String {
    let genesis: alloy_genesis::Genesis =
        serde_json::from_slice(file).expect("alloy-genesis parses our genesis file");
    let config = &genesis.config;
    assert!(
        !config.is_shanghai_active_at_block_and_timestamp(0, genesis.timestamp),
        "this helper does not build post-London genesis headers"
    );
    let base_fee_per_gas = config.is_london_active_at_block(0).then(|| {
        let fee = genesis
            .base_fee_per_gas
            .expect("a London genesis file of ours states its base fee");
        u64::try_from(fee).expect("the base fee fits 64 bits")
    });
    let header = Header {
        parent_hash: genesis.parent_hash.unwrap_or(B256::ZERO),
        ommers_hash: EMPTY_OMMER_ROOT_HASH,
        beneficiary: genesis.coinbase,
        state_root: state_root_ref_unhashed(&genesis.alloc),
        transactions_root: EMPTY_ROOT_HASH,
        receipts_root: EMPTY_ROOT_HASH,
        logs_bloom: Bloom::ZERO,
        difficulty: genesis.difficulty,
        number: genesis.number.unwrap_or(0),
        gas_limit: genesis.gas_limit,
        gas_used: 0,
        timestamp: genesis.timestamp,
        extra_data: genesis.extra_data.clone(),
        mix_hash: genesis.mix_hash,
        nonce: B64::from(genesis.nonce),
        base_fee_per_gas,
        ..Header::default()
    };
    hex_data(header.hash_slow().as_slice())
}
