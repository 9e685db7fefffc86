//! geth validators on the project's own Clique genesis (issue 13 §2, its geth foundation).
//!
//! `orchestrator init` provisions 3 identities on `dir:` and `sqlite:` stores and renders
//! the Clique genesis with the governance contract; each identity's key goes from the
//! `dir:` secret store into a geth keystore written by `shared::keystore`; 3 geth 1.13
//! sealers peer on loopback (static and trusted peers) and seal in turn. What is asserted
//! comes from the chain as the nodes see it, through the chain checker
//! (`integration_tests::geth`): the chain grows, every identity seals, no signer ever
//! sealed two blocks at one height in any node's view, and the governance contract
//! returns the validators.
//!
//! The replacement scenario starts a replacement by hand the way `leased`'s staged hand-off
//! does: mining with the account locked, unlocked once synced with its peers. The
//! `geth_validators_under_leased_*` tests then run the whole thing under `leased` (see
//! `integration_tests::geth::network`): 4 VMs, each a daemon supervising a geth, 3
//! identities, on `sqlite:` and on Azurite `blob:`, through kill -9, SIGSTOP past D and
//! SIGTERM of holders. Figures are one greppable line each, `GETH_FIGURES …`, shown in
//! every run (not captured).
//!
//! Without geth every test here prints one line and passes; `ops/install-test-deps.sh`
//! installs it. The tests run one at a time, so that their figures are not skewed by
//! another network sharing the two cores.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use integration_tests::azurite::Azurite;
use integration_tests::cluster::{Cluster, ClusterSpec, Stores};
use integration_tests::geth::network::{self, Fault, LeaseStore, Plan, ValidatorNetwork};
use integration_tests::geth::{
    self, ChainChecker, Identity, Keystore, Node, NodeConfig, Rpc, Sampler, Sealing,
};
use serde_json::Value;
use shared::secret::dir::DirSecretStore;
use shared::secret::SecretStore;
use shared::{Address, Name, ValidatorKey};

const IDENTITIES: usize = 3;
const NETWORK_ID: u64 = 46_413;
/// From the sealers' start to every identity having sealed twice: start-up, then 2 rounds.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// From the unlock of a replacement to its identity's first block on a survivor's chain:
/// sync, then at most a round of turns (its "recently signed" slots) and the wiggle.
const RESEAL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the checker reads every node's chain.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// geth, or `None` after printing the one skip line.
fn geth_or_skip(test: &str) -> Option<PathBuf> {
    match geth::locate() {
        Ok(path) => Some(path),
        Err(line) => {
            geth::say(&format!("SKIP geth_network::{test}: {line}"));
            None
        }
    }
}

/// A consortium as `orchestrator init` leaves it, and its sealers.
struct Network {
    geth: PathBuf,
    genesis: PathBuf,
    /// In `orchestrator init`'s order (`m0-v0`, `m0-v1`, …).
    validators: Vec<Address>,
    keys: Vec<ValidatorKey>,
    contract: Address,
    abi: Value,
    /// Each identity's node, by index; `None` once killed.
    nodes: Vec<Option<Node>>,
    sampler: Sampler,
    /// Last, so that it is removed after the nodes (whose logs a failing test prints) are
    /// gone: fields drop in order.
    dir: tempfile::TempDir,
}

impl Network {
    fn provision(geth: PathBuf) -> Network {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let member = network::init_member(
            dir.path(),
            IDENTITIES,
            NETWORK_ID,
            &format!("dir:{}", dir.path().join("secrets").display()),
            &format!("sqlite:{}", dir.path().join("leases.db").display()),
            "",
        );
        let validators: Vec<Address> = member.identities.iter().map(|(_, a)| *a).collect();
        let (contract, abi) = (member.contract, member.abi);

        // The keys as `leased` would fetch them: from the `dir:` secret store.
        let secrets = DirSecretStore::open(&dir.path().join("secrets")).expect("the dir: store");
        let keys: Vec<ValidatorKey> = (0..IDENTITIES)
            .map(|i| {
                let name = Name::new(format!("m0-v{i}")).expect("a valid name");
                let secret = integration_tests::on_own_runtime(secrets.get(&name))
                    .expect("the identity's secret");
                ValidatorKey::from_hex(secret.value.expose()).expect("a raw-hex key")
            })
            .collect();
        for (key, address) in keys.iter().zip(&validators) {
            assert_eq!(key.address(), *address, "secret and deployment disagree");
        }

        Network {
            genesis: member.genesis,
            dir,
            geth,
            validators,
            keys,
            contract,
            abi,
            nodes: (0..IDENTITIES).map(|_| None).collect(),
            sampler: Sampler::start(SAMPLE_EVERY),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn node_config(
        &self,
        name: &str,
        identity: Identity,
        sealing: Sealing,
        peers: Vec<String>,
    ) -> NodeConfig<'_> {
        NodeConfig {
            name: name.to_owned(),
            geth: &self.geth,
            genesis: &self.genesis,
            network_id: NETWORK_ID,
            datadir: self.path(name),
            identity,
            sealing,
            max_peers: None,
            peers,
        }
    }

    /// A keystore of identity `index` in a directory of its own, as a hand-off writes it.
    fn keystore(&self, index: usize, name: &str) -> Keystore {
        let dir = self.path(&format!("{name}-key"));
        std::fs::create_dir_all(&dir).expect("create the key directory");
        Keystore::write(&dir, &self.keys[index])
    }

    /// The first start of the chain: every sealer gated, peered with all others, and each
    /// unlocked once it has a peer (all are at genesis).
    fn start_sealers(&mut self) {
        let identities: Vec<Identity> = (0..IDENTITIES).map(|_| Identity::new()).collect();
        let enodes: Vec<String> = identities.iter().map(Identity::enode).collect();
        for (i, identity) in identities.into_iter().enumerate() {
            let name = format!("v{i}");
            let peers = enodes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, e)| e.clone())
                .collect();
            let keystore = self.keystore(i, &name);
            let node =
                Node::start(self.node_config(&name, identity, Sealing::Gated(keystore), peers));
            self.sampler.add(&name, node.rpc);
            self.nodes[i] = Some(node);
        }
        for i in 0..IDENTITIES {
            let peers = self.rpcs_except(i);
            let peers: Vec<&Rpc> = peers.iter().collect();
            self.node(i)
                .unlock_when_synced(&peers, START_TIMEOUT)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    fn node(&self, index: usize) -> &Node {
        self.nodes[index].as_ref().expect("a running node")
    }

    fn rpcs_except(&self, index: usize) -> Vec<Rpc> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != index)
            .filter_map(|(_, n)| n.as_ref().map(|n| n.rpc))
            .collect()
    }

    /// Waits until every identity has sealed `times` blocks above `above` on `view`'s chain.
    fn wait_for_every_identity(&self, view: &str, above: u64, times: u64, timeout: Duration) {
        network::wait_for_every_signer(
            &self.sampler,
            &self.validators,
            view,
            above,
            times,
            timeout,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The governance contract's `getValidators()` on `rpc`.
    fn governance_validators(&self, rpc: &Rpc) -> Vec<Address> {
        network::governance_validators(&self.abi, self.contract, rpc)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn assert_no_equivocation(checker: &ChainChecker) {
        let found = ValidatorNetwork::equivocations(checker);
        assert!(found.is_empty(), "equivocation:\n{found}");
    }
}

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn steady_three_geth_sealers_take_turns_without_equivocation() {
    let Some(geth) = geth_or_skip("steady_three_geth_sealers_take_turns_without_equivocation")
    else {
        return;
    };
    let _serial = one_at_a_time();
    let mut net = Network::provision(geth);
    let started = Instant::now();
    net.start_sealers();
    net.wait_for_every_identity("v0", 0, 3, START_TIMEOUT);
    let checker = net.sampler.snapshot();
    let height = checker.height("v0");
    Network::assert_no_equivocation(&checker);

    // Every node holds the same chain, bar the last block or two still spreading.
    let settled = (0..IDENTITIES)
        .map(|i| checker.height(&format!("v{i}")))
        .min()
        .unwrap_or(0)
        .saturating_sub(2);
    assert!(settled >= 3, "the chain did not grow: {height} blocks");
    let reference = net
        .node(0)
        .rpc
        .block(settled)
        .expect("block")
        .expect("held");
    for i in 1..IDENTITIES {
        let theirs = net
            .node(i)
            .rpc
            .block(settled)
            .expect("block")
            .expect("held");
        assert_eq!(
            theirs.hash, reference.hash,
            "v{i} is on another chain at {settled}"
        );
    }

    for i in 0..IDENTITIES {
        assert_eq!(
            net.governance_validators(&net.node(i).rpc),
            net.validators,
            "v{i}: the governance contract's validators"
        );
    }

    let counts = checker.seal_counts("v0", 0);
    geth::say(&format!(
        "GETH_FIGURES steady: blocks={height} seconds={:.1} samples={} seals_per_identity={}",
        started.elapsed().as_secs_f64(),
        checker.samples(),
        net.validators
            .iter()
            .map(|v| counts.get(v).copied().unwrap_or(0).to_string())
            .collect::<Vec<_>>()
            .join(",")
    ));
    for node in net.nodes.iter_mut().flatten() {
        node.stop();
    }
}

#[test]
fn a_sealer_killed_and_replaced_behind_the_sync_gate_seals_again_without_equivocation() {
    let test = "a_sealer_killed_and_replaced_behind_the_sync_gate_seals_again_without_equivocation";
    let Some(geth) = geth_or_skip(test) else {
        return;
    };
    let _serial = one_at_a_time();
    let mut net = Network::provision(geth);
    net.start_sealers();
    net.wait_for_every_identity("v0", 0, 2, START_TIMEOUT);

    // kill -9 the sealer of identity 1.
    let victim = 1;
    let died = Instant::now();
    net.nodes[victim].as_mut().expect("running").kill9();
    net.sampler.remove("v1");
    net.nodes[victim] = None;

    // The replacement: a fresh datadir with the same identity, mining with its account
    // locked, peered with the survivors, unlocked once it has caught up with them.
    let survivors: Vec<Rpc> = net.rpcs_except(victim);
    let survivor_enodes: Vec<String> = net
        .nodes
        .iter()
        .flatten()
        .map(|n| n.enode.clone())
        .collect();
    let started = Instant::now();
    let keystore = net.keystore(victim, "v1-r");
    let mut config = net.node_config(
        "v1-r",
        Identity::new(),
        Sealing::Gated(keystore),
        survivor_enodes,
    );
    // Sync as soon as both survivors are peers, not after geth's 10 s wait for more.
    config.max_peers = Some(survivors.len());
    let replacement = Node::start(config);
    let rpc_up = started.elapsed();
    net.sampler.add("v1-r", replacement.rpc);
    let peers: Vec<&Rpc> = survivors.iter().collect();
    let synced_at = replacement
        .unlock_when_synced(&peers, RESEAL_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let unlocked_at = Instant::now();
    let unlocked = unlocked_at - started;
    net.nodes[victim] = Some(replacement);

    let signer = net.validators[victim];
    let signers = net.validators.clone();
    net.sampler
        .wait_until(RESEAL_TIMEOUT, "the replaced identity to seal again", |c| {
            c.takeover("v0", signer, &signers, died, unlocked_at)
                .is_some()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let takeover = net
        .sampler
        .with(|c| c.takeover("v0", signer, &signers, died, unlocked_at))
        .expect("found above");

    // After the take-over every identity seals again, the replacement included.
    net.wait_for_every_identity("v0", takeover.first_seal, 1, RESEAL_TIMEOUT);
    let checker = net.sampler.snapshot();
    Network::assert_no_equivocation(&checker);
    let final_height = checker.height("v0");
    assert!(
        final_height > takeover.first_seal,
        "the chain stopped at {final_height}"
    );
    // The replacement's first block is on every live node's chain.
    for name in ["v0", "v2", "v1-r"] {
        assert!(
            checker
                .chain(name)
                .iter()
                .any(|s| s.number == takeover.first_seal && s.signer == signer),
            "{name} does not hold the replacement's block {}",
            takeover.first_seal
        );
    }

    geth::say(&format!(
        "GETH_FIGURES takeover(gated, no lease wait): kill_to_first_seal_ms={} replacement_rpc_up_ms={} unlocked_after_ms={} synced_at_height={} head_at_death={} first_seal={} blocks_missed={} in_turn_slots_missed={}",
        takeover.latency.as_millis(),
        rpc_up.as_millis(),
        unlocked.as_millis(),
        synced_at,
        takeover.head_at_death,
        takeover.first_seal,
        takeover.blocks_between,
        takeover.in_turn_missed
    ));
    for node in net.nodes.iter_mut().flatten() {
        node.stop();
    }
}

/// The doppelganger quarantine against a real chain (issue 13 §3): while geth seals with an
/// identity outside any daemon (a zombie), a daemon that leases it must not hand its key
/// over; once the zombie stops, the identity is handed over within the watch window plus D,
/// plus the quarantines of other identities the daemon was busy with (see the bound below).
/// Here every identity is sealed by a bare geth, so the daemon refuses all three until the
/// sealer of `m0-v0` is killed; then it hands over `m0-v0` and only it.
#[test]
fn a_daemon_keeps_an_identity_a_zombie_geth_seals_with_until_the_zombie_stops() {
    let test = "a_daemon_keeps_an_identity_a_zombie_geth_seals_with_until_the_zombie_stops";
    let Some(geth) = geth_or_skip(test) else {
        return;
    };
    let _serial = one_at_a_time();
    let mut net = Network::provision(geth);
    net.start_sealers();
    net.wait_for_every_identity("v1", 0, 1, START_TIMEOUT);

    const WINDOW_SECS: u64 = 4;
    const D_SECS: u64 = 15;
    // How long a quarantine of an identity a zombie still seals can last: until that
    // zombie's next block. With m0-v0's sealer gone, the two left alternate (Clique lets a
    // signer seal at most one of two consecutive blocks), and a block waits at most the
    // 1 s period plus 1 s of out-of-turn wiggle: two blocks, 4 s.
    const SEALER_QUARANTINE_SECS: u64 = 4;
    // The hand-over after m0-v0's zombie stops: m0-v0's cool-down, D from the last seal the
    // daemon saw (which came before the kill), then the quarantines of the other two
    // identities if their cool-downs ended first (one daemon quarantines one identity at a
    // time: CI once saw 21.1 s, m0-v0 waiting 2 s behind m0-v2), then m0-v0's own window,
    // then the key written and the stand-in started and signing (2 s).
    const HAND_OVER_BOUND_SECS: u64 =
        D_SECS + (IDENTITIES as u64 - 1) * SEALER_QUARANTINE_SECS + WINDOW_SECS + 2;
    let provisioned = (0..IDENTITIES)
        .map(|i| {
            (
                Name::new(format!("m0-v{i}")).expect("a name"),
                net.validators[i],
            )
        })
        .collect();
    let mut cluster = Cluster::start(ClusterSpec {
        identities: IDENTITIES,
        daemons: 0,
        duration_secs: D_SECS,
        stores: Stores::Specs {
            leases: format!("sqlite:{}", net.path("leases.db").display()),
            secrets: format!("dir:{}", net.path("secrets").display()),
            azure: Box::default(),
            azure_toml: String::new(),
        },
        provisioned: Some(provisioned),
        ..ClusterSpec::default()
    });
    let watched = net.node(1).rpc.addr;
    let quarantine = format!(
        "\n[quarantine]\nrpc = \"http://{watched}\"\nengine = \"clique\"\nwindow_secs = {WINDOW_SECS}\n"
    );
    let daemon = cluster.spawn_daemon_edited("vm-1", |text| text + &quarantine);
    cluster.daemons.push(daemon);

    // Every identity seals on the chain outside any daemon: none is handed over.
    std::thread::sleep(Duration::from_secs(20));
    let log = cluster.daemon_log("vm-1");
    let lines = cluster.sign_lines();
    assert!(
        lines.is_empty(),
        "a key was handed over beside its zombie: {} sign lines, the first {:?}\n{log}",
        lines.len(),
        lines.first()
    );
    assert!(log.contains("doppelganger"), "no doppelganger line:\n{log}");

    // The zombie of m0-v0 stops.
    let killed = Instant::now();
    net.nodes[0].as_mut().expect("running").kill9();
    net.sampler.remove("v0");
    net.nodes[0] = None;
    let zombie = net.validators[0].to_string().to_ascii_lowercase();
    let limit = Duration::from_secs(HAND_OVER_BOUND_SECS + 10);
    let handed = integration_tests::cluster::wait_for(limit, || {
        cluster
            .sign_lines()
            .into_iter()
            .find(|l| l.address == zombie)
            .map(|_| killed.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "m0-v0 not handed over within {limit:?} of its zombie's end\n{}",
            cluster.daemon_log("vm-1")
        )
    });
    geth::say(&format!(
        "GETH_FIGURES doppelganger: zombie_killed_to_hand_over_ms={} window_s={WINDOW_SECS} d_s={D_SECS} bound_s={HAND_OVER_BOUND_SECS}",
        handed.as_millis()
    ));
    assert!(
        handed <= Duration::from_secs(HAND_OVER_BOUND_SECS),
        "handed over {handed:?} after the zombie stopped (bound {HAND_OVER_BOUND_SECS} s)\n{}",
        cluster.daemon_log("vm-1")
    );
    // The identities still sealed by their bare geths were never handed over.
    let others: Vec<String> = net.validators[1..]
        .iter()
        .map(|a| a.to_string().to_ascii_lowercase())
        .collect();
    let beside: Vec<_> = cluster
        .sign_lines()
        .into_iter()
        .filter(|l| others.contains(&l.address))
        .collect();
    assert!(
        beside.is_empty(),
        "handed over beside a sealing geth: {} sign lines, the first {:?}",
        beside.len(),
        beside.first()
    );
    cluster.daemon("vm-1").term();
}

/// Issue 13 §2: 3 identities, 4 VMs, each a `leased` daemon supervising a geth that seals
/// with the identity it leased (`geth-keystore`, unlocked behind the sync gate). The holder
/// of one identity after another is killed with kill -9, frozen past D, and stopped with
/// SIGTERM; each time a standby's geth must take the identity over, sync, and seal again
/// within D plus the sync, and no identity ever seals two blocks at one height in any VM's
/// view. The figures are printed as `GETH_FIGURES leased …` lines.
fn validators_under_leased(test: &str, leases: impl FnOnce() -> (LeaseStore, Option<Azurite>)) {
    let Some(geth) = geth_or_skip(test) else {
        return;
    };
    let _serial = one_at_a_time();
    let (leases, _azurite) = leases();
    let store = match &leases {
        LeaseStore::Sqlite => "sqlite",
        LeaseStore::Blob { .. } => "blob",
    };
    const D_SECS: u64 = 15;
    let mut net = ValidatorNetwork::provision(Plan {
        geth: &geth,
        identities: IDENTITIES,
        vms: IDENTITIES + 1,
        duration_secs: D_SECS,
        leases,
    });
    let fail = |net: &ValidatorNetwork, e: String| -> ! { panic!("{e}\n{}", net.diagnostics()) };
    let started = Instant::now();
    net.start_all(START_TIMEOUT)
        .unwrap_or_else(|e| fail(&net, e));
    geth::say(&format!(
        "GETH_FIGURES leased {store} steady: every identity sealed twice {} ms after the daemons started",
        started.elapsed().as_millis()
    ));

    // Within D + the sync: the lease lapses after D, then geth starts, syncs and seals in turn.
    let bound = Duration::from_secs(D_SECS) + RESEAL_TIMEOUT;
    let mut figures = Vec::new();
    for (index, fault) in [Fault::Kill9, Fault::Freeze, Fault::Term]
        .into_iter()
        .enumerate()
    {
        let f = net
            .take_over(index, fault, bound)
            .unwrap_or_else(|e| fail(&net, e));
        geth::say(&format!("GETH_FIGURES leased {store} {f}"));
        if fault == Fault::Kill9 {
            // The killed VM comes back as the standby for the next fault.
            net.restart_vm(&f.from_vm);
        }
        figures.push(f);
    }

    // The chain kept growing after the last take-over.
    let last = figures.last().expect("three take-overs").first_seal;
    net.sampler
        .wait_until(RESEAL_TIMEOUT, "the chain to grow", |c| {
            net.vms.iter().any(|v| c.height(&v.name) >= last + 3)
        })
        .unwrap_or_else(|e| fail(&net, e));
    // No identity sealed two blocks at one height in any VM's view, stray blocks included.
    let checker = net.sampler.snapshot();
    let found = ValidatorNetwork::equivocations(&checker);
    assert!(found.is_empty(), "equivocation:\n{found}");
    // The governance contract at its address returns the validators.
    let holder = net.holders().values().next().cloned().expect("a holder");
    let rpc = net.vms[net.vm_index(&holder)].rpc;
    let mut listed = net
        .governance_validators(&rpc)
        .unwrap_or_else(|e| fail(&net, e));
    let mut expected: Vec<Address> = net.identities.iter().map(|(_, a)| *a).collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected, "getValidators() on {holder}");
    for f in &figures {
        assert!(
            f.first_seal_after <= bound,
            "{f}: slower than D + sync ({bound:?})"
        );
    }
    geth::say(&format!(
        "GETH_FIGURES leased {store} end: height {} after {} ms, {} samples, no equivocation",
        net.height(),
        started.elapsed().as_millis(),
        checker.samples()
    ));
    for d in &mut net.cluster.daemons {
        d.term();
    }
    for d in &mut net.cluster.daemons {
        d.wait_exit(Duration::from_secs(10));
    }
}

#[test]
fn geth_validators_under_leased_on_sqlite_survive_kill_freeze_and_term() {
    validators_under_leased(
        "geth_validators_under_leased_on_sqlite_survive_kill_freeze_and_term",
        || (LeaseStore::Sqlite, None),
    );
}

#[test]
fn geth_validators_under_leased_on_azurite_blob_survive_kill_freeze_and_term() {
    validators_under_leased(
        "geth_validators_under_leased_on_azurite_blob_survive_kill_freeze_and_term",
        || {
            let az = Azurite::start();
            let store = LeaseStore::Blob {
                endpoint: az.blob_endpoint(),
                connection_string: az.connection_string(),
            };
            (store, Some(az))
        },
    );
}

/// Issue 13 §3, the sync gate with real geth: a replacement whose geth cannot reach any
/// peer must never seal. Here the standby VM's geth is cut off before the holder of m0-v0
/// is killed; the standby acquires m0-v0 and starts geth, but the gate stays shut ("no
/// peers yet"), so the account stays locked and that geth seals nothing. Without the gate
/// it seals a block 1 of its own at once, on a chain the network left long ago.
#[test]
fn a_replacement_cut_off_from_its_peers_is_never_unlocked() {
    let test = "a_replacement_cut_off_from_its_peers_is_never_unlocked";
    let Some(geth) = geth_or_skip(test) else {
        return;
    };
    let _serial = one_at_a_time();
    const D_SECS: u64 = 15;
    let mut net = ValidatorNetwork::provision(Plan {
        geth: &geth,
        identities: IDENTITIES,
        vms: IDENTITIES + 1,
        duration_secs: D_SECS,
        leases: LeaseStore::Sqlite,
    });
    let fail = |net: &ValidatorNetwork, e: String| -> ! { panic!("{e}\n{}", net.diagnostics()) };
    net.start_all(START_TIMEOUT)
        .unwrap_or_else(|e| fail(&net, e));
    let standby = net
        .standby()
        .unwrap_or_else(|| fail(&net, "no single standby".into()));
    net.isolate(&standby);

    let (identity, signer) = net.identities[0].clone();
    let holder = net.holders()[identity.as_str()].clone();
    net.cluster.daemon(&holder).kill9();
    let limit = Duration::from_secs(D_SECS + 10);
    integration_tests::cluster::wait_for(limit, || {
        (net.holders().get(identity.as_str()) == Some(&standby)).then_some(())
    })
    .unwrap_or_else(|| fail(&net, format!("{standby} did not acquire {identity}")));
    // Its geth runs, alone, for well over the time an unlocked one needs to seal.
    std::thread::sleep(Duration::from_secs(12));
    let sealed_alone: Vec<u64> = net.sampler.with(|c| {
        c.chain(&standby)
            .iter()
            .filter(|s| s.signer == signer && !s.seen_by.iter().any(|n| *n != standby))
            .map(|s| s.number)
            .collect()
    });
    assert!(
        sealed_alone.is_empty(),
        "the cut-off geth on {standby} sealed blocks {sealed_alone:?} as {identity}\n{}",
        net.diagnostics()
    );
    let samples_of_it = net.sampler.with(|c| c.height(&standby));
    let log = net.cluster.daemon_log(&standby);
    assert!(
        log.contains("has no peers yet") || log.contains("not yet in sync"),
        "{standby}'s daemon never said why the signer waits (height seen {samples_of_it}):\n{}",
        net.diagnostics()
    );
    let checker = net.sampler.snapshot();
    let found = ValidatorNetwork::equivocations(&checker);
    assert!(found.is_empty(), "equivocation:\n{found}");
    for d in &mut net.cluster.daemons {
        d.term();
    }
}
