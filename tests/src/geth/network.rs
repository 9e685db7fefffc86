//! geth validators under `leased` (issue 13 §2): the network the end-to-end test and the
//! README's demo run.
//!
//! `orchestrator init` provisions the identities and the Clique genesis. Each VM is a
//! `leased` daemon whose client is a geth with a datadir of its own, `geth init`ed from that
//! genesis, with a fixed devp2p identity and every other VM as a static, trusted peer. The
//! daemon hands the leased key over as a geth keystore (`format = "geth-keystore"`); geth
//! starts mining with the account locked, and the daemon unlocks it over loopback JSON-RPC
//! (`unlock_rpc`) once the sync gate (`sync_with`: every other VM's RPC) says it has caught
//! up. A [`Sampler`] reads every VM's chain throughout, whichever VM is running geth.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha3::{Digest, Keccak256};
use shared::{Address, Name};

use super::{decode_address_array, free_port, ChainChecker, Identity, Rpc, Sampler};
use crate::cluster::{Cluster, ClusterSpec, Stores};

/// Clique period: 1 s keeps each scenario to a few tens of seconds.
pub const PERIOD_SECS: u64 = 1;
pub const NETWORK_ID: u64 = 46_414;
const ADMIN: &str = "0x00000000000000000000000000000000000a0001";
/// The keystore password every VM's `client.password_file` holds (a test value).
const PASSWORD: &str = "validator network test password";
/// How often the sampler reads every VM's chain.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Where the lease records live.
#[derive(Debug)]
pub enum LeaseStore {
    /// `sqlite:` in the network's directory.
    Sqlite,
    /// `blob:` at this Azurite, with its connection string.
    Blob {
        endpoint: String,
        connection_string: String,
    },
}

/// What [`ValidatorNetwork::provision`] needs.
#[derive(Debug)]
pub struct Plan<'a> {
    pub geth: &'a Path,
    pub identities: usize,
    pub vms: usize,
    /// D, 15–60 s.
    pub duration_secs: u64,
    pub leases: LeaseStore,
}

/// One VM's geth, as its daemon will start it.
#[derive(Debug)]
pub struct Vm {
    pub name: String,
    pub datadir: PathBuf,
    pub rpc: Rpc,
    pub enode: String,
}

/// A member's validators: the identities, the VMs and their daemons, the chain sampler.
#[allow(missing_debug_implementations)]
pub struct ValidatorNetwork {
    /// In `orchestrator init`'s order (`m0-v0`, `m0-v1`, …).
    pub identities: Vec<(Name, Address)>,
    pub contract: Address,
    abi: Value,
    pub vms: Vec<Vm>,
    pub sampler: Sampler,
    /// The daemons (`vm-1` …), started by [`ValidatorNetwork::start_daemon`].
    pub cluster: Cluster,
    /// Last: removed after the daemons, and their gethes, are gone.
    pub dir: tempfile::TempDir,
}

impl ValidatorNetwork {
    /// `orchestrator init`, then each VM's datadir; no daemon runs yet.
    pub fn provision(plan: Plan<'_>) -> ValidatorNetwork {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let root = dir.path();
        let secrets = format!("dir:{}", root.join("secrets").display());
        let (leases, azure_toml) = match &plan.leases {
            LeaseStore::Sqlite => (
                format!("sqlite:{}", root.join("leases.db").display()),
                String::new(),
            ),
            LeaseStore::Blob {
                endpoint,
                connection_string,
            } => (
                format!("blob:{endpoint}/validators"),
                format!("connection_string = {connection_string:?}\n"),
            ),
        };
        let Member {
            identities,
            contract,
            abi,
            genesis,
        } = init_member(
            root,
            plan.identities,
            NETWORK_ID,
            &secrets,
            &leases,
            &azure_toml,
        );

        // Every VM: a devp2p identity and ports fixed now, so that each lists the others.
        let p2p: Vec<Identity> = (0..plan.vms).map(|_| Identity::new()).collect();
        let enodes: Vec<String> = p2p.iter().map(Identity::enode).collect();
        let mut vms = Vec::new();
        for (i, identity) in p2p.into_iter().enumerate() {
            let name = format!("vm-{}", i + 1);
            let datadir = root.join(&name);
            let peers: Vec<String> = enodes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, e)| e.clone())
                .collect();
            super::init_datadir(plan.geth, &genesis, &datadir, &identity, &name);
            // geth syncs once it has MaxPeers peers (or after 10 s): at most identities − 1
            // other gethes run at a time. DialRatio 1 lets it dial that many itself; every
            // peer is trusted, so none is turned away.
            let p2p_toml = format!(
                "{}MaxPeers = {}\nDialRatio = 1\n",
                super::p2p_config(identity.p2p_port, &peers, None),
                (plan.identities - 1).max(1)
            );
            std::fs::write(datadir.with_extension("toml"), p2p_toml)
                .expect("write the geth config");
            vms.push(Vm {
                name,
                datadir,
                rpc: Rpc {
                    addr: std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, free_port())),
                },
                enode: identity.enode(),
            });
        }
        let password = root.join("keystore-password");
        shared::fsutil::write_new_private(&password, PASSWORD.as_bytes())
            .expect("write the password file");

        let cluster = Cluster::start(ClusterSpec {
            identities: plan.identities,
            daemons: 0,
            duration_secs: plan.duration_secs,
            stores: Stores::Specs {
                leases,
                secrets,
                azure: Box::new(match &plan.leases {
                    LeaseStore::Sqlite => Default::default(),
                    LeaseStore::Blob { .. } => {
                        let table = shared::config::parse(&azure_toml).expect("the [azure] lines");
                        let mut report = shared::config::Report::default();
                        let azure = shared::azure::AzureOptions::read(
                            &mut report,
                            "azure",
                            shared::config::Section::read(table),
                        );
                        assert!(report.is_empty(), "{:?}", report.problems());
                        azure.expect("the [azure] settings")
                    }
                }),
                azure_toml,
            },
            provisioned: Some(identities.clone()),
            ..ClusterSpec::default()
        });
        let sampler = Sampler::start(SAMPLE_EVERY);
        for vm in &vms {
            sampler.add(&vm.name, vm.rpc);
        }
        let mut network = ValidatorNetwork {
            identities,
            contract,
            abi,
            vms,
            sampler,
            cluster,
            dir,
        };
        network.write_configs(plan.geth);
        network
    }

    /// Each VM's daemon config, beside the cluster's own files.
    fn write_configs(&mut self, geth: &Path) {
        let root = self.dir.path();
        for (i, vm) in self.vms.iter().enumerate() {
            let others: Vec<String> = self
                .vms
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, v)| format!("\"http://{}\"", v.rpc.addr))
                .collect();
            // geth runs as it would under ops/leased.service where that can be had without
            // systemd: no capabilities, an empty bounding set, no new privileges
            // (`setpriv`). The unit's seccomp filters and mount namespaces need systemd as
            // PID 1 (docs/architecture.md, "The unit's sandbox").
            let command: Vec<String> = setpriv_like_the_unit()
                .into_iter()
                .chain([
                    geth.display().to_string(),
                    "--config".into(),
                    vm.datadir.with_extension("toml").display().to_string(),
                    "--datadir".into(),
                    vm.datadir.display().to_string(),
                    "--networkid".into(),
                    NETWORK_ID.to_string(),
                    "--syncmode".into(),
                    "full".into(),
                    "--nat".into(),
                    "none".into(),
                    "--nodiscover".into(),
                    "--netrestrict".into(),
                    "127.0.0.0/8".into(),
                    "--ipcdisable".into(),
                    "--http".into(),
                    "--http.addr".into(),
                    "127.0.0.1".into(),
                    "--http.port".into(),
                    vm.rpc.addr.port().to_string(),
                    "--http.api".into(),
                    "eth,net,web3,clique,miner,personal".into(),
                    "--authrpc.addr".into(),
                    "127.0.0.1".into(),
                    "--authrpc.port".into(),
                    free_port().to_string(),
                    "--keystore".into(),
                    "{keystore_dir}".into(),
                    "--mine".into(),
                    "--miner.etherbase".into(),
                    "{address}".into(),
                    "--rpc.enabledeprecatedpersonal".into(),
                    "--allow-insecure-unlock".into(),
                ])
                .map(|a| format!("{a:?}"))
                .collect();
            let text = format!(
                "[client]\nformat = \"geth-keystore\"\npassword_file = {password:?}\n\
                 command = [{command}]\nunlock_rpc = \"http://{rpc}\"\nsync_with = [{others}]\n\
                 start_timeout_secs = 60\n",
                password = root.join("keystore-password").display().to_string(),
                command = command.join(", "),
                rpc = vm.rpc.addr,
                others = others.join(", "),
            );
            std::fs::write(client_table(root, &vm.name), text).expect("write the client table");
        }
    }

    /// Starts the daemon of VM `index` (0-based), with its geth as the client.
    pub fn start_daemon(&mut self, index: usize) {
        let name = self.vms[index].name.clone();
        let client = std::fs::read_to_string(client_table(self.dir.path(), &name))
            .expect("read the client table");
        let daemon = self
            .cluster
            .spawn_daemon_edited(&name, |text| replace_client_table(&text, &client));
        match self.cluster.daemons.iter_mut().find(|d| d.node == name) {
            Some(slot) => *slot = daemon,
            None => self.cluster.daemons.push(daemon),
        }
    }

    /// Who holds which identity (identity → VM), as the lease store says.
    pub fn holders(&self) -> std::collections::BTreeMap<String, String> {
        self.cluster.holders()
    }

    /// Index of the VM named `name`.
    pub fn vm_index(&self, name: &str) -> usize {
        self.vms
            .iter()
            .position(|v| v.name == name)
            .unwrap_or_else(|| panic!("no VM {name}"))
    }

    /// Waits until every identity has sealed `times` blocks above `above` on `view`'s
    /// chain.
    pub fn wait_for_every_identity(
        &self,
        view: &str,
        above: u64,
        times: u64,
        timeout: Duration,
    ) -> Result<(), String> {
        let validators: Vec<Address> = self.identities.iter().map(|(_, a)| *a).collect();
        wait_for_every_signer(&self.sampler, &validators, view, above, times, timeout)
    }

    /// The governance contract's `getValidators()` on `rpc`.
    pub fn governance_validators(&self, rpc: &Rpc) -> Result<Vec<Address>, String> {
        governance_validators(&self.abi, self.contract, rpc)
    }

    /// Equivocations found so far, one per line; empty when there are none.
    pub fn equivocations(checker: &ChainChecker) -> String {
        checker
            .equivocations()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every daemon's last lines, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for vm in &self.vms {
            let text = self.cluster.daemon_log(&vm.name);
            // The daemon's own lines (geth's go to the same stderr), and geth's last ones.
            let own: Vec<&str> = text.lines().filter(|l| l.starts_with("20")).collect();
            let geth: Vec<&str> = text.lines().filter(|l| !l.starts_with("20")).collect();
            out.push_str(&format!("--- {} (daemon, last 40 lines)\n", vm.name));
            for l in &own[own.len().saturating_sub(40)..] {
                out.push_str(l);
                out.push('\n');
            }
            out.push_str(&format!("--- {} (geth, last 15 lines)\n", vm.name));
            for l in &geth[geth.len().saturating_sub(15)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// A member as `orchestrator init` (Clique, period [`PERIOD_SECS`]) leaves it in `net/`.
#[derive(Debug)]
pub struct Member {
    /// In `init`'s order (`m0-v0`, `m0-v1`, …).
    pub identities: Vec<(Name, Address)>,
    /// The validator-set contract, from networkinfo.json.
    pub contract: Address,
    /// Its published ABI.
    pub abi: Value,
    pub genesis: PathBuf,
}

/// Runs `orchestrator init` in `root` for member 0 with `identities` identities on the
/// `secrets` and `leases` stores (`azure_toml`: the `[azure]` lines, if any).
pub fn init_member(
    root: &Path,
    identities: usize,
    network_id: u64,
    secrets: &str,
    leases: &str,
    azure_toml: &str,
) -> Member {
    let config = root.join("orchestrator.toml");
    let azure_section = match azure_toml.is_empty() {
        true => String::new(),
        false => format!("\n[azure]\n{azure_toml}"),
    };
    std::fs::write(
        &config,
        format!("secrets = {secrets:?}\nleases = {leases:?}\n{azure_section}"),
    )
    .expect("write the orchestrator config");
    let out = Command::new(crate::bin_path("orchestrator-host"))
        .current_dir(root)
        .args(["init", "--config"])
        .arg(&config)
        .args(["--member", "0", "--validators"])
        .arg(identities.to_string())
        .args(["--admin", ADMIN, "--out", "net", "--flavour", "clique"])
        .args(["--block-period-secs", &PERIOD_SECS.to_string()])
        .args(["--network-id", &network_id.to_string()])
        .output()
        .expect("run orchestrator-host");
    assert!(
        out.status.success(),
        "orchestrator init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let net = root.join("net");
    let deployment = json_file(&net.join("deployment-output.json"));
    let listed: Vec<(Name, Address)> = deployment["validators"]
        .as_array()
        .expect("deployment-output.json lists validators")
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                Name::new(format!("m0-v{i}")).expect("a name"),
                v.as_str().and_then(|s| s.parse().ok()).expect("an address"),
            )
        })
        .collect();
    assert_eq!(listed.len(), identities);
    let info = json_file(&net.join("networkinfo.json"));
    let contract: Address = info["valSetContract"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("networkinfo.json names the validator-set contract");
    let abi: Value = match &info["adminContractABI"] {
        Value::String(text) => serde_json::from_str(text).expect("the ABI is JSON"),
        other => other.clone(),
    };
    Member {
        identities: listed,
        contract,
        abi,
        genesis: net.join("genesis").join("clique.json"),
    }
}

/// Waits until every one of `signers` has sealed `times` blocks above `above` on `view`'s
/// chain as `sampler` reads it; the error says who sealed what.
pub fn wait_for_every_signer(
    sampler: &Sampler,
    signers: &[Address],
    view: &str,
    above: u64,
    times: u64,
    timeout: Duration,
) -> Result<(), String> {
    sampler
        .wait_until(timeout, "every identity to seal", |c| {
            let counts = c.seal_counts(view, above);
            signers
                .iter()
                .all(|v| counts.get(v).copied().unwrap_or(0) >= times)
        })
        .map_err(|e| {
            let counts = sampler.with(|c| c.seal_counts(view, above));
            format!("{e}; blocks by signer on {view} above {above}: {counts:?}")
        })
}

/// The governance contract's `getValidators()` at `contract` on `rpc`, after checking that
/// the ABI the orchestrator published (`abi`) declares it.
pub fn governance_validators(
    abi: &Value,
    contract: Address,
    rpc: &Rpc,
) -> Result<Vec<Address>, String> {
    let declared = abi.as_array().is_some_and(|fs| {
        fs.iter()
            .any(|f| f["name"] == "getValidators" && f["outputs"][0]["type"] == "address[]")
    });
    if !declared {
        return Err("the published ABI has no getValidators() -> address[]".into());
    }
    let selector = &Keccak256::digest(b"getValidators()")[..4];
    let answer = rpc.eth_call(contract, selector)?;
    decode_address_array(&answer).map_err(|e| format!("getValidators(): {e}"))
}

/// Where VM `name`'s `[client]` table is kept.
fn client_table(root: &Path, name: &str) -> PathBuf {
    root.join(format!("{name}-client.toml"))
}

/// `text` with its `[client]` table (up to the next table) replaced by `client`.
fn replace_client_table(text: &str, client: &str) -> String {
    let start = text
        .find("[client]\n")
        .expect("the config has a [client] table");
    let end = text[start + 1..]
        .find("\n[")
        .map_or(text.len(), |i| start + 1 + i + 1);
    format!("{}{client}\n{}", &text[..start], &text[end..])
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read the file")).expect("JSON")
}

/// Milliseconds since `t`, for the figures.
pub fn ms_since(t: Instant) -> u128 {
    t.elapsed().as_millis()
}

/// How a holder goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` of its daemon: the guard stops geth; a standby takes over after D.
    Kill9,
    /// SIGSTOP of its daemon past D: the guard fences geth by the deadline; a standby takes
    /// over after D; the daemon, thawed, finds its lease gone.
    Freeze,
    /// SIGTERM: the daemon fences geth and releases; a standby takes over at once.
    Term,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kill9 => "kill -9",
            Self::Freeze => "SIGSTOP past D",
            Self::Term => "SIGTERM",
        }
    }
}

/// One take-over, as the chain showed it.
#[derive(Debug, Clone)]
pub struct TakeoverFigures {
    pub fault: Fault,
    pub identity: String,
    pub from_vm: String,
    pub to_vm: String,
    /// From the fault to the lease's acquisition by another VM.
    pub acquired_after: Duration,
    /// From the fault to the identity's first block on the canonical chain after it.
    pub first_seal_after: Duration,
    pub head_at_fault: u64,
    pub first_seal: u64,
    /// Blocks sealed by others in between, and of those, the identity's in-turn slots.
    pub blocks_between: u64,
    pub in_turn_missed: u64,
}

impl std::fmt::Display for TakeoverFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} moved {} -> {}; lease acquired after {} ms; first seal after {} ms \
             (block {}, head was {}); blocks between {}; its in-turn slots missed {}",
            self.fault.as_str(),
            self.identity,
            self.from_vm,
            self.to_vm,
            self.acquired_after.as_millis(),
            self.first_seal_after.as_millis(),
            self.first_seal,
            self.head_at_fault,
            self.blocks_between,
            self.in_turn_missed
        )
    }
}

impl ValidatorNetwork {
    /// Starts every VM's daemon and waits until each identity is held and has sealed
    /// twice.
    pub fn start_all(&mut self, timeout: Duration) -> Result<(), String> {
        for i in 0..self.vms.len() {
            self.start_daemon(i);
        }
        let wanted = self.identities.len();
        let held = crate::cluster::wait_for(timeout, || {
            // The holder's name is in the record's metadata, written just after acquiring.
            let h = self.holders();
            (h.len() == wanted && h.values().all(|vm| !vm.is_empty())).then_some(h)
        })
        .ok_or_else(|| format!("not every identity was leased within {timeout:?}"))?;
        let view = held.values().next().expect("a holder").clone();
        self.wait_for_every_identity(&view, 0, 2, timeout)
    }

    /// Applies `fault` to the holder of identity `index`, waits for a standby to take it
    /// over and for its first seal there, and then for every identity to seal once more.
    /// `bound` limits the wait for the first seal.
    pub fn take_over(
        &mut self,
        index: usize,
        fault: Fault,
        bound: Duration,
    ) -> Result<TakeoverFigures, String> {
        let (identity, signer) = self.identities[index].clone();
        let holders = self.holders();
        let from_vm = holders
            .get(identity.as_str())
            .cloned()
            .ok_or_else(|| format!("{identity} is not held"))?;
        // The chain as a VM that keeps its identity sees it.
        let view = holders
            .values()
            .find(|v| **v != from_vm)
            .cloned()
            .ok_or("no other holder to watch the chain from")?;
        let fault_at = Instant::now();
        let daemon = self.cluster.daemon(&from_vm);
        match fault {
            Fault::Kill9 => daemon.kill9(),
            Fault::Freeze => daemon.stop(),
            Fault::Term => daemon.term(),
        }
        let limit = bound + Duration::from_secs(5);
        let to_vm = crate::cluster::wait_for(limit, || {
            self.holders()
                .get(identity.as_str())
                .filter(|vm| **vm != from_vm)
                .cloned()
        })
        .ok_or_else(|| format!("{identity} was not taken over within {limit:?}"))?;
        let acquired_at = Instant::now();
        let signers: Vec<Address> = self.identities.iter().map(|(_, a)| *a).collect();
        self.sampler
            .wait_until(bound, "the identity to seal on its new VM", |c| {
                c.takeover(&view, signer, &signers, fault_at, acquired_at)
                    .is_some()
            })
            .map_err(|e| format!("{identity} on {to_vm}: {e}"))?;
        let t = self
            .sampler
            .with(|c| c.takeover(&view, signer, &signers, fault_at, acquired_at))
            .expect("found above");
        self.wait_for_every_identity(&view, t.first_seal, 1, bound)?;
        if fault == Fault::Freeze {
            self.cluster.daemon(&from_vm).cont();
        }
        Ok(TakeoverFigures {
            fault,
            identity: identity.to_string(),
            from_vm,
            to_vm,
            acquired_after: acquired_at - fault_at,
            first_seal_after: t.latency,
            head_at_fault: t.head_at_death,
            first_seal: t.first_seal,
            blocks_between: t.blocks_between,
            in_turn_missed: t.in_turn_missed,
        })
    }

    /// Cuts `vm`'s geth off the network before it next starts: a listening port nobody
    /// dials and no peers of its own. Its daemon is not told.
    pub fn isolate(&self, vm: &str) {
        let index = self.vm_index(vm);
        let toml = self.vms[index].datadir.with_extension("toml");
        std::fs::write(
            &toml,
            format!(
                "{}MaxPeers = 2\n",
                super::p2p_config(free_port(), &[], None)
            ),
        )
        .expect("write the geth config");
    }

    /// The VM whose daemon holds no identity, if exactly one.
    pub fn standby(&self) -> Option<String> {
        let holders = self.holders();
        let idle: Vec<&Vm> = self
            .vms
            .iter()
            .filter(|v| !holders.values().any(|h| *h == v.name))
            .collect();
        (idle.len() == 1).then(|| idle[0].name.clone())
    }

    /// Starts the daemon of `vm` again (after a kill): a standby from now on.
    pub fn restart_vm(&mut self, vm: &str) {
        let index = self.vm_index(vm);
        self.start_daemon(index);
    }

    /// The highest block any VM has shown.
    pub fn height(&self) -> u64 {
        self.sampler.with(|c| {
            self.vms
                .iter()
                .map(|v| c.height(&v.name))
                .max()
                .unwrap_or(0)
        })
    }
}

/// `setpriv` (util-linux) and its arguments for a client command: what of
/// `ops/leased.service`'s `CapabilityBoundingSet=`, `AmbientCapabilities=` and
/// `NoNewPrivileges=yes` a process can give itself without systemd. Under root, as these
/// tests may run, the empty bounding set leaves geth no capability after its `exec`.
fn setpriv_like_the_unit() -> Vec<String> {
    let setpriv = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("setpriv"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("setpriv is not on PATH: install util-linux, which runs geth the way ops/leased.service would")
        });
    [
        setpriv.display().to_string(),
        "--no-new-privs".into(),
        "--bounding-set=-all".into(),
        "--inh-caps=-all".into(),
        "--ambient-caps=-all".into(),
        "--".into(),
    ]
    .into()
}
