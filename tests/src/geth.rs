//! geth 1.13 nodes on loopback for the end-to-end chain tests, and the chain checker that
//! judges what they sealed.
//!
//! geth 1.13.15 is the last geth that seals Clique blocks; `ops/install-test-deps.sh` puts
//! it in `.tools/bin/geth` (or `$GETH` names one). Without it the geth tests skip, each with
//! one line that says how to get it ([`locate`]); under CI a missing geth is a failure.
//!
//! Every node listens on 127.0.0.1 only: p2p through `ListenAddr` in its `--config` file
//! (the `--port` flag would bind every interface), HTTP JSON-RPC on 127.0.0.1, no
//! discovery, `--netrestrict 127.0.0.0/8`, no IPC. Peers are static and trusted, named in
//! the config file before start: each node's node key is made here, so its enode is known
//! before it runs.
//!
//! The safe start of a sealer is [`Node::unlock_when_synced`]: geth starts mining with its
//! account locked, and only once it has a peer and has caught up with every peer's head is
//! the account unlocked and the miner restarted. A sealer unlocked at start seals a block of
//! its own before it syncs, which for a replaced identity is an equivocation. This is what
//! `leased`'s staged hand-off is to reproduce; the helper takes only the node's own RPC and
//! its peers' RPC, so a wrapper around a `leased` client can call it.
//!
//! Nothing here may reach beyond loopback, or print a key or a password.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use shared::keyfile::{self, KeyFormat};
use shared::keystore::KdfParams;
use shared::{Address, ValidatorKey};

/// The geth release the tests are written against (`ops/install-test-deps.sh` pins it).
pub const GETH_VERSION: &str = "1.13.15";
/// How long a stopped node gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Every JSON-RPC request: connect within 1 s, answer within 5 s (a frozen node never does).
const RPC_CONNECT: Duration = Duration::from_secs(1);
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// How far below a node's previous head the checker re-reads its chain on every sample:
/// deeper reorganisations are caught by the hash check at the bottom of the window.
const RESAMPLE_DEPTH: u64 = 16;

// ---------------------------------------------------------------------------------------
// Finding geth.

/// The geth binary: `$GETH` if set, else `.tools/bin/geth` of the workspace. `Err` is the
/// one line a skipped test prints. Under CI (`CI=true`) a missing geth panics instead: CI
/// always installs it, so a skip there would hide that the tests did not run.
pub fn locate() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("GETH") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "GETH is {}, which is not a file",
            path.display()
        );
        return Ok(path);
    }
    let installed = crate::tools::tools_dir().join("bin").join("geth");
    if installed.is_file() {
        return Ok(installed);
    }
    let line = format!(
        "geth not found: run ops/install-test-deps.sh with ../shared/tools/geth/geth-{GETH_VERSION}-linux-amd64.gz beside the checkout, or set GETH to a geth {GETH_VERSION} binary"
    );
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{line} (CI must run the geth tests)"
    );
    Err(line)
}

/// Writes `line` to the test process's stderr past libtest's capture, which takes only
/// `print!` and `eprint!`: a skip or a measured figure shows in every run, passing or not.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

// ---------------------------------------------------------------------------------------
// Keys as geth takes them.

/// A validator key as geth reads it: a keystore directory holding one v3 file, a password
/// file, and the address to unlock. The keystore is written by our own `shared::keystore`
/// (scrypt at a test cost), so every run also checks that geth reads what we write.
#[derive(Debug, Clone)]
pub struct Keystore {
    pub dir: PathBuf,
    pub password_file: PathBuf,
    pub address: Address,
}

impl Keystore {
    /// Writes `key` under `dir` (`dir/keystore/` and `dir/password`, both 0600 files).
    pub fn write(dir: &Path, key: &ValidatorKey) -> Keystore {
        let keystore = dir.join("keystore");
        fs::create_dir_all(&keystore).expect("create the keystore directory");
        // Random, so that no two keystores of a run share one.
        let password = hex::encode(ValidatorKey::generate().expose_bytes().as_slice());
        let file = keyfile::encode(
            key,
            KeyFormat::KeystoreV3,
            Some(password.as_bytes()),
            &KdfParams::scrypt_fast_for_tests(),
        )
        .expect("encode a v3 keystore");
        let address = key.address();
        shared::fsutil::write_new_private(
            &keystore.join(format!("validator-{}", address.to_plain_hex())),
            &file,
        )
        .expect("write the keystore file");
        let password_file = dir.join("password");
        shared::fsutil::write_new_private(&password_file, password.as_bytes())
            .expect("write the password file");
        Keystore {
            dir: keystore,
            password_file,
            address,
        }
    }

    fn password(&self) -> String {
        fs::read_to_string(&self.password_file).expect("read the password file")
    }
}

// ---------------------------------------------------------------------------------------
// Nodes.

/// How a node takes part in sealing.
#[derive(Debug, Clone)]
pub enum Sealing {
    /// Follows the chain, never seals.
    Follower,
    /// `--unlock … --mine` at start: seals at once, before any sync. Only for a chain's
    /// first start, when every node is at genesis.
    UnlockedAtStart(Keystore),
    /// `--mine` with the account locked: seals nothing until [`Node::unlock_when_synced`].
    Gated(Keystore),
}

/// A node's devp2p identity: its node key and listening port, so that its enode URL is
/// known before it starts.
#[derive(Debug)]
pub struct Identity {
    node_key: ValidatorKey,
    p2p_port: u16,
}

impl Identity {
    pub fn new() -> Identity {
        Identity {
            node_key: ValidatorKey::generate(),
            p2p_port: free_port(),
        }
    }

    pub fn enode(&self) -> String {
        format!(
            "enode://{}@127.0.0.1:{}",
            self.node_key.enode_id(),
            self.p2p_port
        )
    }
}

impl Default for Identity {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`Node::start`] needs.
#[derive(Debug)]
pub struct NodeConfig<'a> {
    /// A short name for messages and file names.
    pub name: String,
    pub geth: &'a Path,
    pub genesis: &'a Path,
    pub network_id: u64,
    /// A fresh directory; `geth init` writes the chain's genesis into it.
    pub datadir: PathBuf,
    pub identity: Identity,
    pub sealing: Sealing,
    /// Enode URLs, each both static (dialled and re-dialled) and trusted (always let in).
    pub peers: Vec<String>,
    /// `--maxpeers`: geth syncs as soon as it has this many peers (at most 5), instead of
    /// waiting up to 10 s for more.
    pub max_peers: Option<usize>,
}

/// A running geth. Dropping it kills it (SIGKILL) and, when the test is failing, prints the
/// end of its log.
pub struct Node {
    pub name: String,
    child: Child,
    pub enode: String,
    pub rpc: Rpc,
    pub address: Option<Address>,
    keystore: Option<Keystore>,
    log_path: PathBuf,
    exited: bool,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .field("rpc", &self.rpc.addr)
            .finish()
    }
}

impl Node {
    /// `geth init`, the node key and the config file, then geth; returns once its JSON-RPC
    /// answers (within 30 s).
    pub fn start(config: NodeConfig<'_>) -> Node {
        let NodeConfig {
            name,
            geth,
            genesis,
            network_id,
            datadir,
            identity,
            sealing,
            peers,
            max_peers,
        } = config;
        let log_path = datadir.with_extension("log");
        init_datadir(geth, genesis, &datadir, &identity, &name);

        let config_path = datadir.with_extension("toml");
        fs::write(
            &config_path,
            p2p_config(identity.p2p_port, &peers, max_peers),
        )
        .expect("write the geth config");
        let http_port = free_port();
        let auth_port = free_port();
        let mut cmd = Command::new(geth);
        cmd.arg("--config")
            .arg(&config_path)
            .arg("--datadir")
            .arg(&datadir)
            .args(["--networkid", &network_id.to_string()])
            .args(["--syncmode", "full", "--nat", "none", "--nodiscover"])
            .args(["--netrestrict", "127.0.0.0/8", "--ipcdisable"])
            .args(["--http", "--http.addr", "127.0.0.1"])
            .args(["--http.port", &http_port.to_string()])
            .args(["--http.api", "eth,net,web3,clique,admin,miner,personal"])
            .args(["--authrpc.addr", "127.0.0.1"])
            .args(["--authrpc.port", &auth_port.to_string()]);
        let (address, keystore) = match &sealing {
            Sealing::Follower => (None, None),
            Sealing::UnlockedAtStart(k) | Sealing::Gated(k) => {
                let hex = format!("0x{}", k.address.to_plain_hex());
                cmd.arg("--keystore")
                    .arg(&k.dir)
                    .args(["--mine", "--miner.etherbase", &hex]);
                if let Sealing::UnlockedAtStart(_) = sealing {
                    cmd.args(["--unlock", &hex, "--allow-insecure-unlock"])
                        .arg("--password")
                        .arg(&k.password_file);
                } else {
                    // Unlocked later over JSON-RPC, which geth allows only with both flags;
                    // the HTTP endpoint is on loopback.
                    cmd.args(["--rpc.enabledeprecatedpersonal", "--allow-insecure-unlock"]);
                }
                (Some(k.address), Some(k.clone()))
            }
        };
        let log = File::create(&log_path).expect("create the geth log");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        let child = cmd.spawn().expect("start geth");
        let mut node = Node {
            name,
            child,
            enode: identity.enode(),
            rpc: Rpc {
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, http_port)),
            },
            address,
            keystore,
            log_path,
            exited: false,
        };
        node.wait_for_rpc(Duration::from_secs(30));
        node
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_for_rpc(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll geth") {
                self.exited = true;
                panic!(
                    "{}: geth exited at start ({status}):\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if self.rpc.call("eth_blockNumber", json!([])).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no JSON-RPC answer within {timeout:?}:\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The safe start of a [`Sealing::Gated`] sealer: waits until it has a peer and its head
    /// is every reachable peer's head (same height, same hash), then unlocks its account
    /// and restarts its miner. `peers` are the peers' JSON-RPC endpoints; one that does not
    /// answer (dead, frozen) is left out. Returns, when the miner runs again, the height at
    /// which the node was found in step with its peers.
    ///
    /// The miner is restarted because geth, having failed to seal with a locked account,
    /// does not try again on an idle Clique chain; `miner_stop` returns before the miner has
    /// stopped, hence the wait on `eth_mining`; and a fresh extra-data, because geth does
    /// not retry sealing a block identical to one it gave up on.
    pub fn unlock_when_synced(&self, peers: &[&Rpc], timeout: Duration) -> Result<u64, String> {
        let keystore = self
            .keystore
            .as_ref()
            .ok_or_else(|| format!("{}: not a sealer", self.name))?;
        let deadline = Instant::now() + timeout;
        let mut synced_at = 0;
        wait_for(
            deadline,
            &format!("{}: synced with its peers", self.name),
            || {
                let head = in_sync(&self.rpc, peers)?;
                synced_at = head.unwrap_or(0);
                Ok(head.is_some())
            },
        )?;
        let address = format!("0x{}", keystore.address.to_plain_hex());
        self.rpc.call(
            "personal_unlockAccount",
            json!([address, keystore.password(), 0]),
        )?;
        self.rpc.call("miner_stop", json!([]))?;
        wait_for(deadline, &format!("{}: miner stopped", self.name), || {
            Ok(self.rpc.call("eth_mining", json!([]))? == json!(false))
        })?;
        let extra = format!("gated {}", std::process::id() ^ self.pid());
        self.rpc.call("miner_setExtra", json!([extra]))?;
        self.rpc.call("miner_start", json!([]))?;
        Ok(synced_at)
    }

    /// SIGTERM, then SIGKILL after [`STOP_GRACE`]; waits for the exit.
    pub fn stop(&mut self) {
        if self.exited {
            return;
        }
        self.signal(Signal::SIGCONT);
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if self.child.try_wait().expect("poll geth").is_some() {
                self.exited = true;
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
    }

    /// SIGKILL, and waits until the process is gone.
    pub fn kill9(&mut self) {
        if self.exited {
            return;
        }
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
        self.exited = true;
    }

    pub fn freeze(&self) {
        self.signal(Signal::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn signal(&self, signal: Signal) {
        if !self.exited {
            // Only the pid this node's Child holds, which cannot be reused before our wait.
            let _ = kill(Pid::from_raw(self.pid() as i32), signal);
        }
    }

    /// The last 40 lines of the node's log.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log_path) {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = file.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "---- {} (geth pid {}) log tail:\n{}",
                self.name,
                self.pid(),
                self.log_tail()
            );
        }
    }
}

/// A fresh `datadir` with `identity`'s node key, `geth init`ed from `genesis`.
fn init_datadir(geth: &Path, genesis: &Path, datadir: &Path, identity: &Identity, name: &str) {
    // The node key before `geth init`, which would make one of its own.
    fs::create_dir_all(datadir.join("geth")).expect("create the datadir");
    let node_key = datadir.join("geth").join("nodekey");
    shared::fsutil::write_new_private(&node_key, identity.node_key.expose_hex().as_bytes())
        .expect("write the node key");
    let init = Command::new(geth)
        .arg("--datadir")
        .arg(datadir)
        .arg("init")
        .arg(genesis)
        .stdin(Stdio::null())
        .output()
        .expect("run geth init");
    assert!(
        init.status.success(),
        "{name}: geth init failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
}

/// `node`'s height once it has a peer and sits at the head of every peer that answers.
fn in_sync(node: &Rpc, peers: &[&Rpc]) -> Result<Option<u64>, String> {
    if node.peer_count()? == 0 {
        return Ok(None);
    }
    let own = node.head()?;
    let mut answered = 0;
    for peer in peers {
        let Ok(theirs) = peer.head() else { continue };
        answered += 1;
        if theirs != own {
            return Ok(None);
        }
    }
    Ok((answered > 0).then_some(own.0))
}

fn wait_for(
    deadline: Instant,
    what: &str,
    mut done: impl FnMut() -> Result<bool, String>,
) -> Result<(), String> {
    let mut last = String::new();
    loop {
        match done() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what} (last error: {last})"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `--config` file: p2p on loopback at `port`, the peers static and trusted.
fn p2p_config(port: u16, peers: &[String], max_peers: Option<usize>) -> String {
    let list = |urls: &[String]| {
        urls.iter()
            .map(|u| format!("{u:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!(
        "[Node.P2P]\nListenAddr = \"127.0.0.1:{port}\"\nNoDiscovery = true\nStaticNodes = [{}]\nTrustedNodes = [{}]\n",
        list(peers),
        list(peers)
    );
    if let Some(max) = max_peers {
        text.push_str(&format!("MaxPeers = {max}\n"));
    }
    text
}

/// A TCP port free on 127.0.0.1 just now.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

// ---------------------------------------------------------------------------------------
// JSON-RPC.

/// A node's HTTP JSON-RPC endpoint, through reqwest (the shared loopback transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rpc {
    pub addr: SocketAddr,
}

/// One block as a node reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    pub number: u64,
    pub hash: String,
    pub parent: String,
    /// Clique: 2 in turn, 1 out of turn.
    pub difficulty: u64,
}

impl Rpc {
    /// The `result` of one call; `Err` carries the method and what went wrong.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        let reply = self.post(method, body)?;
        match reply.get("error") {
            Some(error) => Err(format!("{method}: {error}")),
            None => Ok(reply["result"].clone()),
        }
    }

    /// Several calls in one JSON-RPC batch; the results in the calls' order.
    pub fn batch(&self, calls: &[(&str, Value)]) -> Result<Vec<Value>, String> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let body: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(id, (method, params))| {
                json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
            })
            .collect();
        let what = format!("batch of {} {}", calls.len(), calls[0].0);
        let reply = self.post(&what, Value::Array(body))?;
        let answers = reply
            .as_array()
            .ok_or_else(|| format!("{what}: the answer is not an array: {reply}"))?;
        let mut results = vec![Value::Null; calls.len()];
        for answer in answers {
            let id = answer["id"]
                .as_u64()
                .filter(|&id| (id as usize) < calls.len())
                .ok_or_else(|| format!("{what}: an answer without a known id: {answer}"))?;
            if let Some(error) = answer.get("error") {
                return Err(format!("{}: {error}", calls[id as usize].0));
            }
            results[id as usize] = answer["result"].clone();
        }
        Ok(results)
    }

    fn post(&self, what: &str, body: Value) -> Result<Value, String> {
        let addr = self.addr;
        crate::on_own_runtime(async move {
            let client = shared::net::loopback_http_client(RPC_CONNECT, RPC_TIMEOUT)
                .map_err(|e| format!("{what}: {e}"))?;
            let http =
                |e: &dyn std::error::Error| format!("{what} via {addr}: {}", crate::error_chain(e));
            let answer = client
                .post(format!("http://{addr}/"))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .map_err(|e| http(&e))?;
            let status = answer.status();
            let text = answer.text().await.map_err(|e| http(&e))?;
            if status.as_u16() != 200 {
                return Err(format!("{what}: HTTP status {status}: {text}"));
            }
            serde_json::from_str(&text).map_err(|e| format!("{what}: the answer is not JSON ({e})"))
        })
    }

    pub fn block_number(&self) -> Result<u64, String> {
        quantity(&self.call("eth_blockNumber", json!([]))?)
    }

    /// The head: its height and hash.
    pub fn head(&self) -> Result<(u64, String), String> {
        let block = self.call("eth_getBlockByNumber", json!(["latest", false]))?;
        let info = block_info(&block)?;
        Ok((info.number, info.hash))
    }

    pub fn block(&self, number: u64) -> Result<Option<BlockInfo>, String> {
        let block = self.call(
            "eth_getBlockByNumber",
            json!([format!("{number:#x}"), false]),
        )?;
        if block.is_null() {
            return Ok(None);
        }
        block_info(&block).map(Some)
    }

    /// The blocks `from..=to` in one batch; `None` where the node has no block.
    pub fn blocks(&self, from: u64, to: u64) -> Result<Vec<Option<BlockInfo>>, String> {
        let calls: Vec<(&str, Value)> = (from..=to)
            .map(|n| ("eth_getBlockByNumber", json!([format!("{n:#x}"), false])))
            .collect();
        self.batch(&calls)?
            .iter()
            .map(|b| {
                if b.is_null() {
                    Ok(None)
                } else {
                    block_info(b).map(Some)
                }
            })
            .collect()
    }

    /// The Clique sealers of blocks by hash, in one batch.
    pub fn signers(&self, hashes: &[String]) -> Result<Vec<Address>, String> {
        let calls: Vec<(&str, Value)> = hashes
            .iter()
            .map(|h| ("clique_getSigner", json!([h])))
            .collect();
        self.batch(&calls)?.iter().map(address).collect()
    }

    pub fn enode(&self) -> Result<String, String> {
        let info = self.call("admin_nodeInfo", json!([]))?;
        info["enode"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("admin_nodeInfo without an enode: {info}"))
    }

    pub fn peer_count(&self) -> Result<usize, String> {
        Ok(self
            .call("admin_peers", json!([]))?
            .as_array()
            .map_or(0, Vec::len))
    }

    /// `eth_call` of `data` on `to` at the head; the returned bytes.
    pub fn eth_call(&self, to: Address, data: &[u8]) -> Result<Vec<u8>, String> {
        let result = self.call(
            "eth_call",
            json!([{ "to": format!("0x{}", to.to_plain_hex()), "data": format!("0x{}", hex::encode(data)) }, "latest"]),
        )?;
        let text = result
            .as_str()
            .ok_or_else(|| format!("eth_call returned {result}"))?;
        hex::decode(text.trim_start_matches("0x")).map_err(|e| format!("eth_call: {e}"))
    }
}

fn quantity(value: &Value) -> Result<u64, String> {
    value
        .as_str()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .ok_or_else(|| format!("not a quantity: {value}"))
}

fn address(value: &Value) -> Result<Address, String> {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an address: {value}"))
}

fn block_info(block: &Value) -> Result<BlockInfo, String> {
    let text = |field: &str| {
        block[field]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("a block without {field}: {block}"))
    };
    Ok(BlockInfo {
        number: quantity(&block["number"])?,
        hash: text("hash")?,
        parent: text("parentHash")?,
        difficulty: quantity(&block["difficulty"])?,
    })
}

// ---------------------------------------------------------------------------------------
// The chain checker.

/// One block sealed by one signer at one height, and when the checker first saw it.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub number: u64,
    pub hash: String,
    pub signer: Address,
    pub difficulty: u64,
    /// The first sample, on any node, that held it.
    pub first_seen: Instant,
    /// The nodes whose chain held it in some sample.
    pub seen_by: BTreeSet<String>,
}

/// One signer, one height, more than one block: a double sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equivocation {
    pub signer: Address,
    pub number: u64,
    /// Each block's hash and the nodes that saw it.
    pub blocks: Vec<(String, Vec<String>)>,
}

impl fmt::Display for Equivocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sealed at height {}:", self.signer, self.number)?;
        for (hash, nodes) in &self.blocks {
            write!(f, " {hash} (seen by {})", nodes.join(", "))?;
        }
        Ok(())
    }
}

/// How long an identity took to seal again after its sealer died, on one node's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Takeover {
    /// The height of the chain when the sealer died.
    pub head_at_death: u64,
    /// The identity's first block above that height on the canonical chain.
    pub first_seal: u64,
    /// From the death to the first sample that held that block.
    pub latency: Duration,
    /// Canonical blocks between the death and that block sealed by others.
    pub blocks_between: u64,
    /// Of those, the heights at which the identity was in turn (sealed out of turn by
    /// another signer instead).
    pub in_turn_missed: u64,
}

/// Collects (height, hash, signer) from every node's chain, as often as it is asked to,
/// and keeps every block it ever saw: a node's own stray block is on its chain only until
/// the node reorganises, so the runs sample every node again and again.
#[derive(Debug, Clone, Default)]
pub struct ChainChecker {
    /// Every block seen, by hash.
    blocks: HashMap<String, Sealed>,
    /// Each node's chain at its last sample: height → hash.
    views: BTreeMap<String, BTreeMap<u64, String>>,
    samples: u64,
}

impl ChainChecker {
    pub fn new() -> ChainChecker {
        ChainChecker::default()
    }

    /// Reads `node`'s chain: the blocks above its previous head, and the last
    /// [`RESAMPLE_DEPTH`] below it again (all of it again if those changed deeper down).
    /// A node that does not answer (dead, frozen) is an `Err` the caller may ignore.
    pub fn sample(&mut self, name: &str, rpc: &Rpc) -> Result<(), String> {
        let head = rpc.block_number()?;
        let view = self.views.entry(name.to_owned()).or_default();
        let previous_head = view.keys().next_back().copied().unwrap_or(0);
        let mut from = previous_head.saturating_sub(RESAMPLE_DEPTH).max(1);
        let now = Instant::now();
        let mut fetched = if from <= head {
            rpc.blocks(from, head)?
        } else {
            Vec::new()
        };
        // A reorganisation deeper than the window: the bottom block changed, read it all.
        if from > 1 {
            if let Some(Some(bottom)) = fetched.first() {
                if view.get(&from).is_some_and(|h| *h != bottom.hash) {
                    from = 1;
                    fetched = rpc.blocks(1, head)?;
                }
            }
        }
        let fetched: Vec<BlockInfo> = fetched.into_iter().flatten().collect();
        let unknown: Vec<String> = fetched
            .iter()
            .filter(|b| !self.blocks.contains_key(&b.hash))
            .map(|b| b.hash.clone())
            .collect();
        let signers = rpc.signers(&unknown)?;
        for (hash, signer) in unknown.iter().zip(signers) {
            let block = fetched.iter().find(|b| &b.hash == hash).expect("fetched");
            self.blocks.insert(
                hash.clone(),
                Sealed {
                    number: block.number,
                    hash: hash.clone(),
                    signer,
                    difficulty: block.difficulty,
                    first_seen: now,
                    seen_by: BTreeSet::new(),
                },
            );
        }
        view.retain(|&n, _| n < from);
        for block in &fetched {
            view.insert(block.number, block.hash.clone());
            if let Some(sealed) = self.blocks.get_mut(&block.hash) {
                sealed.seen_by.insert(name.to_owned());
            }
        }
        self.samples += 1;
        Ok(())
    }

    /// Samples each node once; those that do not answer are skipped.
    pub fn sample_all(&mut self, nodes: &[(&str, &Rpc)]) {
        for (name, rpc) in nodes {
            let _ = self.sample(name, rpc);
        }
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Every (signer, height) with more than one block, over everything ever seen.
    pub fn equivocations(&self) -> Vec<Equivocation> {
        let mut by_slot: BTreeMap<(Address, u64), Vec<&Sealed>> = BTreeMap::new();
        for sealed in self.blocks.values() {
            by_slot
                .entry((sealed.signer, sealed.number))
                .or_default()
                .push(sealed);
        }
        by_slot
            .into_iter()
            .filter(|(_, blocks)| blocks.len() > 1)
            .map(|((signer, number), blocks)| Equivocation {
                signer,
                number,
                blocks: blocks
                    .iter()
                    .map(|s| (s.hash.clone(), s.seen_by.iter().cloned().collect()))
                    .collect(),
            })
            .collect()
    }

    /// `node`'s chain at its last sample, from height 1: each block as sealed.
    pub fn chain(&self, node: &str) -> Vec<&Sealed> {
        self.views
            .get(node)
            .into_iter()
            .flat_map(|view| view.values())
            .filter_map(|hash| self.blocks.get(hash))
            .collect()
    }

    /// `node`'s head height at its last sample.
    pub fn height(&self, node: &str) -> u64 {
        self.views
            .get(node)
            .and_then(|v| v.keys().next_back().copied())
            .unwrap_or(0)
    }

    /// Each signer's last block on `node`'s chain.
    pub fn last_seals(&self, node: &str) -> BTreeMap<Address, u64> {
        let mut last = BTreeMap::new();
        for sealed in self.chain(node) {
            last.insert(sealed.signer, sealed.number);
        }
        last
    }

    /// Blocks each signer sealed on `node`'s chain above height `above`.
    pub fn seal_counts(&self, node: &str, above: u64) -> BTreeMap<Address, u64> {
        let mut counts = BTreeMap::new();
        for sealed in self.chain(node).into_iter().filter(|s| s.number > above) {
            *counts.entry(sealed.signer).or_default() += 1;
        }
        counts
    }

    /// When `signer`, whose sealer died at `died`, first sealed again on `node`'s chain (as
    /// last sampled), and what it missed meanwhile. The chain at the death is its highest
    /// block first seen by then; the seal again is the signer's first block above that
    /// which was first seen at or after `fresh_from` (when the replacement could first
    /// seal), so that a block the dead sealer made just before dying, which spread late,
    /// does not count. Both are as exact as the sampling interval. `signers` is the Clique
    /// signer set, which sets whose turn each height is.
    pub fn takeover(
        &self,
        node: &str,
        signer: Address,
        signers: &[Address],
        died: Instant,
        fresh_from: Instant,
    ) -> Option<Takeover> {
        let chain = self.chain(node);
        let head_at_death = chain
            .iter()
            .filter(|s| s.first_seen <= died)
            .map(|s| s.number)
            .max()
            .unwrap_or(0);
        let first = chain.iter().find(|s| {
            s.number > head_at_death && s.signer == signer && s.first_seen >= fresh_from
        })?;
        let mut sorted = signers.to_vec();
        sorted.sort();
        let turn = sorted.iter().position(|s| *s == signer)? as u64;
        let gap = || {
            chain
                .iter()
                .filter(|s| s.number > head_at_death && s.number < first.number)
                .filter(|s| s.signer != signer)
        };
        Some(Takeover {
            head_at_death,
            first_seal: first.number,
            latency: first.first_seen.saturating_duration_since(died),
            blocks_between: gap().count() as u64,
            in_turn_missed: gap()
                .filter(|s| s.number % sorted.len() as u64 == turn)
                .count() as u64,
        })
    }
}

/// Decodes an ABI `address[]` return value.
pub fn decode_address_array(data: &[u8]) -> Result<Vec<Address>, String> {
    let word = |i: usize| -> Result<&[u8], String> {
        data.get(i * 32..(i + 1) * 32)
            .ok_or_else(|| format!("the answer has no word {i} ({} bytes)", data.len()))
    };
    let as_usize = |w: &[u8]| -> Result<usize, String> {
        if w[..24].iter().any(|&b| b != 0) {
            return Err("an offset or length beyond 64 bits".into());
        }
        Ok(u64::from_be_bytes(w[24..].try_into().expect("8 bytes")) as usize)
    };
    let offset = as_usize(word(0)?)?;
    if offset % 32 != 0 {
        return Err(format!("offset {offset} is not word-aligned"));
    }
    let start = offset / 32;
    let len = as_usize(word(start)?)?;
    (0..len)
        .map(|i| {
            let w = word(start + 1 + i)?;
            let mut bytes = [0u8; 20];
            bytes.copy_from_slice(&w[12..]);
            Ok(Address(bytes))
        })
        .collect()
}

/// Samples every registered node's chain into a [`ChainChecker`] from a thread of its own,
/// every `interval`, while the test starts, kills and waits on nodes. A node that does not
/// answer (frozen) holds the round, and readers of the checker, up for the RPC timeout.
#[derive(Debug)]
pub struct Sampler {
    shared: std::sync::Arc<SamplerShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct SamplerShared {
    checker: std::sync::Mutex<ChainChecker>,
    nodes: std::sync::Mutex<Vec<(String, Rpc)>>,
    stop: std::sync::atomic::AtomicBool,
}

impl Sampler {
    pub fn start(interval: Duration) -> Sampler {
        let shared = std::sync::Arc::new(SamplerShared::default());
        let worker = shared.clone();
        let thread = std::thread::spawn(move || {
            while !worker.stop.load(std::sync::atomic::Ordering::Relaxed) {
                let nodes = worker.nodes.lock().expect("sampler nodes").clone();
                for (name, rpc) in &nodes {
                    let _ = Sampler::sample_one(&worker, name, rpc);
                }
                std::thread::sleep(interval);
            }
        });
        Sampler {
            shared,
            thread: Some(thread),
        }
    }

    fn sample_one(shared: &SamplerShared, name: &str, rpc: &Rpc) -> Result<(), String> {
        // Under the checker's lock: a sample is two or three batched requests on loopback.
        shared
            .checker
            .lock()
            .expect("chain checker")
            .sample(name, rpc)
    }

    /// Samples `rpc` as `name` from now on.
    pub fn add(&self, name: &str, rpc: Rpc) {
        self.shared
            .nodes
            .lock()
            .expect("sampler nodes")
            .push((name.to_owned(), rpc));
    }

    /// Stops sampling `name` (its view stays in the checker).
    pub fn remove(&self, name: &str) {
        self.shared
            .nodes
            .lock()
            .expect("sampler nodes")
            .retain(|(n, _)| n != name);
    }

    /// Runs `f` on the checker as sampled so far.
    pub fn with<T>(&self, f: impl FnOnce(&ChainChecker) -> T) -> T {
        f(&self.shared.checker.lock().expect("chain checker"))
    }

    /// Waits until `done` holds for the checker, or `timeout` passes (`Err` names `what`).
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&ChainChecker) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.with(&mut done) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("timed out after {timeout:?} waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The checker as sampled so far.
    pub fn snapshot(&self) -> ChainChecker {
        self.with(ChainChecker::clone)
    }

    fn stop_thread(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

pub mod network;

#[cfg(test)]
mod tests;
