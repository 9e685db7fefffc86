//! One store's chaos run: the cluster, its storage, and the loop that injects faults and
//! undoes them, recording what it did for [`super::analysis`].
//!
//! The loop only ever signals processes this run started: the daemons, and the guards and
//! clients below them, each found in /proc and checked (its command line names this run's
//! directory) right before the signal.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shared::azure::AzureOptions;
use shared::spec::{LeaseStoreSpec, SecretStoreSpec};
use shared::Name;

use super::faults::{BadConfig, Compound, Kind, Timing};
use super::{nanos, Rng, StoreKind};
use crate::azurite::{self, Azurite, AzuriteOptions, ACCOUNT_NAME};
use crate::cluster::{mono_now, Cluster, ClusterSpec, Daemon, Programs, Stores};
use crate::fault_proxy::{Action, FaultProxy, Match, Rule};

/// The lease records' container on `blob:`.
const CONTAINER: &str = "chaos";
/// A line of a client older than this no longer makes its node the identity's signer.
const SIGNING_NOW: u64 = 400_000_000;
/// At most this many nodes have their daemon down or frozen at once, so that most of the
/// time every identity has a healthy standby (8 daemons, 5 identities).
const MAX_IMPAIRED: usize = 2;

/// One injected fault (or one component of a compound fault).
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub id: usize,
    pub kind: Kind,
    /// The compound fault this is part of, and the id of its first component.
    pub group: Option<(usize, Compound)>,
    pub node: Option<String>,
    /// The identity (lower-case address) the target held, or the one broken.
    pub identity: Option<String>,
    /// The target node signed an identity when hit.
    pub holder: bool,
    /// `CLOCK_MONOTONIC` ns.
    pub at: u64,
    /// When the fault's condition ended (SIGCONT sent, storage answering again, records
    /// re-created); `at` for an instant fault.
    pub cleared: u64,
    pub detail: String,
    /// False for a `leased break` that failed (the store stayed locked past its wait, …):
    /// the lease was not broken, so nobody had to fence for it.
    pub took_effect: bool,
}

/// A node's daemon was down or frozen: no standby there.
#[derive(Debug, Clone)]
pub struct DownWindow {
    pub node: String,
    pub from: u64,
    pub to: u64,
}

/// What a store's run leaves for the analysis.
#[derive(Debug)]
pub struct Outcome {
    /// Where the daemons' logs and the sign log were copied (if they hold no key).
    pub logs: Option<PathBuf>,
    pub store: StoreKind,
    pub seed: u64,
    pub started: u64,
    /// The wall clock at `started`, to place the daemons' log lines on the run's time.
    pub wall_started: std::time::SystemTime,
    /// When fault injection stopped.
    pub faults_ended: u64,
    /// When the teardown began: signing intervals ending after it are the end of the run.
    pub teardown: u64,
    pub nodes: Vec<String>,
    /// (identity, lower-case address).
    pub identities: Vec<(String, String)>,
    pub faults: Vec<FaultRecord>,
    pub down: Vec<DownWindow>,
    /// The sign log's text.
    pub sign_log: String,
    /// Where the daemons saw their clients' process groups gone, from their logs.
    pub groups_gone: Vec<crate::overlap::GroupGone>,
    /// A key file found on a node while another node signed that identity.
    pub key_file_findings: Vec<String>,
    /// The same, on a node whose daemon was frozen and whose guard was killed: nothing of
    /// the node runs to delete it until the daemon thaws (a known gap, reported apart).
    pub key_file_known: Vec<String>,
    /// Key files left in a runtime directory after the teardown.
    pub key_files_left: Vec<String>,
    /// Files of the run that hold a key's bytes (hex).
    pub key_bytes_in_logs: Vec<String>,
    /// Processes of this run before it started, and after the teardown.
    pub processes_before: usize,
    pub processes_after: Vec<String>,
    /// A daemon that exited without being told to, or a bad-config daemon that did not
    /// behave as its configuration says.
    pub unexpected: Vec<String>,
    /// Identities not signing when the settling period after the last fault ended.
    pub not_signing_at_end: Vec<String>,
}

/// Azurite behind the fault proxy.
struct BlobRig {
    az: Azurite,
    proxy: FaultProxy,
    /// Straight to Azurite, never through the proxy: the operator's tools.
    direct_leases: String,
}

/// Something to do later.
#[derive(Debug)]
enum Later {
    /// SIGCONT a process this run froze.
    Cont { pid: i32, fault: usize },
    /// SIGCONT a daemon this run froze.
    ContDaemon { node: String, fault: usize },
    /// Start a node's daemon again after it was killed or stopped.
    Restart { node: String },
    /// Storage answers again.
    ClearStorage { fault: usize },
    /// Start Azurite again.
    ///
    /// Azurite expires every lease when it starts (probed: a 60 s lease 2 s old reads
    /// `expired` after a restart, and another client acquires it), which Azure never does.
    /// So it stays down past D + 1 s, by when every holder has fenced on its own, and
    /// undoing the faults at the end must not start it sooner: once it did (seed
    /// 2112033682, Azurite back 3.4 s after it stopped), two standbys acquired leases whose
    /// holders still signed, and the run reported overlaps that only the emulator made.
    StartAzurite { fault: usize },
    /// Re-create the container and the records.
    Recreate { fault: usize },
    /// Stop a bad-config daemon.
    StopBad { index: usize },
    /// The second component of a compound fault.
    Second {
        group: usize,
        compound: Compound,
        node: String,
        identity: Option<String>,
    },
}

struct BadDaemon {
    daemon: Daemon,
    variant: BadConfig,
    started: u64,
    stop_requested: bool,
}

struct World {
    store: StoreKind,
    timing: Timing,
    rng: Rng,
    programs: Programs,
    cluster: Cluster,
    blob: Option<BlobRig>,
    /// The SQLite write lock the harness holds, with its fault.
    sqlite_lock: Option<(rusqlite::Connection, usize)>,
    /// Paths whose presence in a command line makes a process this run's.
    ours: Vec<String>,
    /// Secrets of the identities (`dir:`), outside the cluster's directory.
    _secrets_dir: tempfile::TempDir,
    nodes: Vec<String>,
    identities: Vec<(Name, String)>,
    /// Processes frozen by this run and not yet thawed: pid → fault.
    frozen: BTreeMap<i32, usize>,
    /// Guards frozen by this run: node → pid.
    frozen_guards: BTreeMap<String, i32>,
    /// Daemons frozen by this run: node → fault.
    frozen_daemons: BTreeMap<String, usize>,
    /// Nodes whose daemon is down since, waiting for a restart.
    down_since: BTreeMap<String, u64>,
    /// Nodes whose daemon was frozen since.
    frozen_since: BTreeMap<String, u64>,
    /// Daemons told to stop (SIGTERM) and not yet reaped.
    terminating: BTreeMap<String, u64>,
    bad: Vec<BadDaemon>,
    /// `leased break` commands still running, with their fault.
    breaks: Vec<(Child, usize)>,
    later: Vec<(u64, Later)>,
    faults: Vec<FaultRecord>,
    down: Vec<DownWindow>,
    /// Whether a storage fault is on now.
    storage_fault: Option<usize>,
    /// Incremental read of the sign log.
    sign_offset: u64,
    sign_text: String,
    /// address → (node, last line).
    last_signer: BTreeMap<String, (String, u64)>,
    /// node → (address, last line).
    node_signing: BTreeMap<String, (String, u64)>,
    key_file_findings: Vec<String>,
    /// Key files left while their node's daemon is frozen and its guard was killed.
    key_file_known: Vec<String>,
    /// Nodes whose guard this run killed while their daemon was frozen (until it thaws).
    guard_killed_while_frozen: Vec<String>,
    /// Key-file findings of the last look, and those reported already.
    key_suspects: BTreeMap<(String, String, String, String), bool>,
    key_reported: Vec<(String, String, String, String)>,
    unexpected: Vec<String>,
    bad_count: usize,
    started: u64,
    /// When the last storage fault ended.
    storage_cleared: u64,
    /// Numbers the logs of daemons started again.
    generation: u64,
    /// The Azurite downtime drawn for the restart being injected.
    azurite_down_drawn: Option<Duration>,
}

/// Runs one store's chaos as `options` say, with the adversary seeded by `seed`.
pub fn run(store: StoreKind, seed: u64, options: &super::Options, say: &dyn Fn(&str)) -> Outcome {
    let (duration, every) = (options.duration, options.every);
    let keep_logs_in = options.out.as_path();
    let mut world = World::start(
        store,
        seed,
        options.identities,
        options.daemons,
        options.programs.clone(),
        say,
    );
    // The baseline: a process of the run is one whose command line names one of its
    // directories, which did not exist before `World::start` made them.
    let processes_before = 0;
    let started = mono_now();
    let wall_started = std::time::SystemTime::now();
    world.started = started;
    world.wait_all_signing(Duration::from_secs(60), say);
    say(&format!(
        "{}: {} daemons over {} identities, all signing after {:.1} s; faults for {:.0} s",
        store.as_str(),
        world.nodes.len(),
        world.identities.len(),
        (mono_now() - started) as f64 / 1e9,
        duration.as_secs_f64()
    ));
    let end = mono_now() + nanos(duration);
    let mut next_fault = mono_now() + nanos(Duration::from_secs(2));
    let mut next_key_check = 0;
    let mut next_progress = mono_now() + nanos(Duration::from_secs(30));
    while mono_now() < end {
        world.tick();
        let now = mono_now();
        if now >= next_fault {
            world.inject();
            let gap = world.rng.duration(every.0, every.1);
            next_fault = now + nanos(gap);
        }
        if now >= next_key_check {
            world.check_key_files();
            next_key_check = now + nanos(Duration::from_millis(500));
        }
        if now >= next_progress {
            say(&format!(
                "{}: {} faults so far, {:.0} s left",
                store.as_str(),
                world.fault_count(),
                (end.saturating_sub(now)) as f64 / 1e9
            ));
            next_progress = now + nanos(Duration::from_secs(30));
        }
        sleep(Duration::from_millis(40));
    }
    let faults_ended = mono_now();
    say(&format!(
        "{}: {} faults injected; undoing them and settling",
        store.as_str(),
        world.fault_count()
    ));
    world.undo_all();
    // Every identity must be signing again: the last faults' bounds (a re-created record
    // stays locked for the longest lease), then some.
    let settle = shared::lease::MAX_LEASE + world.timing.d + Duration::from_secs(10);
    let settle_end = mono_now() + nanos(settle);
    let mut not_signing = Vec::new();
    while mono_now() < settle_end {
        world.tick();
        world.check_key_files();
        not_signing = world.not_signing();
        if not_signing.is_empty() && mono_now() > faults_ended + nanos(world.timing.d) {
            break;
        }
        sleep(Duration::from_millis(100));
    }
    let teardown = mono_now();
    world.teardown();
    let key_files_left = world.key_files_left();
    let key_bytes_in_logs = world.key_bytes_in_logs();
    let processes_after = world.our_processes();
    let sign_log = fs::read_to_string(&world.cluster.sign_log).unwrap_or_default();
    let groups_gone = world.groups_gone();
    let logs = world.keep_logs(keep_logs_in, &key_bytes_in_logs);
    Outcome {
        logs,
        store,
        seed,
        started,
        wall_started,
        faults_ended,
        teardown,
        nodes: world.nodes.clone(),
        identities: world
            .identities
            .iter()
            .map(|(n, a)| (n.to_string(), a.clone()))
            .collect(),
        faults: std::mem::take(&mut world.faults),
        down: std::mem::take(&mut world.down),
        sign_log,
        groups_gone,
        key_file_findings: std::mem::take(&mut world.key_file_findings),
        key_file_known: std::mem::take(&mut world.key_file_known),
        key_files_left,
        key_bytes_in_logs,
        processes_before,
        processes_after,
        unexpected: std::mem::take(&mut world.unexpected),
        not_signing_at_end: not_signing,
    }
}

impl World {
    fn start(
        store: StoreKind,
        seed: u64,
        identities: usize,
        daemons: usize,
        programs: Programs,
        say: &dyn Fn(&str),
    ) -> World {
        let timing = Timing::for_lease(Duration::from_secs(15));
        let secrets_dir = tempfile::Builder::new()
            .prefix("chaos-secrets-")
            .tempdir()
            .expect("a directory for the secrets");
        let mut ours = vec![secrets_dir.path().display().to_string()];
        let (stores, blob) = match store {
            StoreKind::Sqlite => (Stores::Local, None),
            StoreKind::Blob => {
                let az = Azurite::start_with(AzuriteOptions {
                    persistent: true,
                    debug_log: false,
                });
                say(&format!(
                    "blob: Azurite (on disk) on port {}, started in {:.1} s",
                    az.port(),
                    az.started_in().as_secs_f64()
                ));
                ours.push(az.dir().display().to_string());
                let proxy = FaultProxy::start(az.addr());
                let connection_string = azurite::connection_string_at(proxy.addr());
                let stores = Stores::Specs {
                    leases: format!("blob:http://{}/{ACCOUNT_NAME}/{CONTAINER}", proxy.addr()),
                    secrets: format!("dir:{}", secrets_dir.path().join("secrets").display()),
                    azure: Box::new(AzureOptions {
                        connection_string: Some(connection_string.clone()),
                        ..Default::default()
                    }),
                    azure_toml: format!("connection_string = {connection_string:?}"),
                };
                let direct_leases = format!("blob:http://{}/{ACCOUNT_NAME}/{CONTAINER}", az.addr());
                (
                    stores,
                    Some(BlobRig {
                        az,
                        proxy,
                        direct_leases,
                    }),
                )
            }
        };
        let cluster = Cluster::start(ClusterSpec {
            identities,
            daemons,
            duration_secs: timing.d.as_secs(),
            client_extra: String::new(),
            engine_signer_rpc: None,
            client_args: Vec::new(),
            http: false,
            env: Vec::new(),
            // Text logs: `groups_gone` reads them.
            daemon_args: Vec::new(),
            stores,
            provisioned: None,
            programs: programs.clone(),
        });
        ours.push(cluster.dir.path().display().to_string());
        let nodes = cluster.daemons.iter().map(|d| d.node.clone()).collect();
        let identities = cluster
            .identities
            .iter()
            .map(|(n, a)| (n.clone(), a.to_string().to_ascii_lowercase()))
            .collect();
        World {
            store,
            timing,
            rng: Rng::new(seed),
            programs,
            cluster,
            blob,
            sqlite_lock: None,
            ours,
            _secrets_dir: secrets_dir,
            nodes,
            identities,
            frozen: BTreeMap::new(),
            frozen_guards: BTreeMap::new(),
            frozen_daemons: BTreeMap::new(),
            down_since: BTreeMap::new(),
            frozen_since: BTreeMap::new(),
            terminating: BTreeMap::new(),
            bad: Vec::new(),
            breaks: Vec::new(),
            later: Vec::new(),
            faults: Vec::new(),
            down: Vec::new(),
            storage_fault: None,
            sign_offset: 0,
            sign_text: String::new(),
            last_signer: BTreeMap::new(),
            node_signing: BTreeMap::new(),
            key_file_findings: Vec::new(),
            key_file_known: Vec::new(),
            guard_killed_while_frozen: Vec::new(),
            key_suspects: BTreeMap::new(),
            key_reported: Vec::new(),
            unexpected: Vec::new(),
            bad_count: 0,
            started: mono_now(),
            azurite_down_drawn: None,
            generation: 0,
            storage_cleared: 0,
        }
    }

    fn fault_count(&self) -> usize {
        self.faults
            .iter()
            .filter(|f| f.group.is_none_or(|(g, _)| g == f.id))
            .count()
    }

    fn wait_all_signing(&mut self, timeout: Duration, say: &dyn Fn(&str)) {
        let deadline = mono_now() + nanos(timeout);
        while mono_now() < deadline {
            self.read_signs();
            if self.not_signing().is_empty() {
                return;
            }
            sleep(Duration::from_millis(100));
        }
        say(&format!(
            "{}: not every identity signs after {timeout:?}:\n{}",
            self.store.as_str(),
            self.cluster.diagnostics()
        ));
        panic!("the cluster did not start");
    }

    /// Identities nobody signed in the last 400 ms.
    fn not_signing(&self) -> Vec<String> {
        let now = mono_now();
        self.identities
            .iter()
            .filter(|(_, a)| {
                self.last_signer
                    .get(a)
                    .is_none_or(|(_, at)| now.saturating_sub(*at) >= SIGNING_NOW)
            })
            .map(|(n, _)| n.to_string())
            .collect()
    }

    /// Reads the sign log's new lines.
    fn read_signs(&mut self) {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = fs::File::open(&self.cluster.sign_log) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.sign_offset)).is_err() {
            return;
        }
        let mut buf = String::new();
        if file.read_to_string(&mut buf).is_err() {
            return;
        }
        self.sign_text.push_str(&buf);
        let Some(cut) = self.sign_text.rfind('\n') else {
            self.sign_offset += buf.len() as u64;
            return;
        };
        self.sign_offset += buf.len() as u64;
        let complete: String = self.sign_text.drain(..=cut).collect();
        for line in complete.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.first() != Some(&"signing") || w.len() < 5 {
                continue;
            }
            let address = w[2].to_ascii_lowercase();
            let Ok(at) = w[4].parse::<u64>() else {
                continue;
            };
            let node = w
                .iter()
                .find_map(|x| x.strip_prefix("node="))
                .unwrap_or("-")
                .to_string();
            self.last_signer.insert(address.clone(), (node.clone(), at));
            self.node_signing.insert(node, (address, at));
        }
    }

    /// The identity `node` signs now, if any.
    fn signing(&self, node: &str) -> Option<String> {
        let now = mono_now();
        self.node_signing
            .get(node)
            .filter(|(a, at)| {
                now.saturating_sub(*at) < SIGNING_NOW
                    && self.last_signer.get(a).is_some_and(|(n, _)| n == node)
            })
            .map(|(a, _)| a.clone())
    }

    fn identity_name(&self, address: &str) -> Option<Name> {
        self.identities
            .iter()
            .find(|(_, a)| a == address)
            .map(|(n, _)| n.clone())
    }

    /// Housekeeping: the sign log, due actions, daemons that exited, finished breaks.
    fn tick(&mut self) {
        self.read_signs();
        let now = mono_now();
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.later.len() {
            if self.later[i].0 <= now {
                due.push(self.later.remove(i).1);
            } else {
                i += 1;
            }
        }
        for action in due {
            self.run_later(action);
        }
        // Daemons told to stop: reap them. One that exits on its own is started again 2 s
        // later, as systemd does (Restart=always, RestartSec=2s); that is expected only for
        // a daemon that could not open its lease store during a storage fault (exit 69).
        let nodes = self.nodes.clone();
        for node in &nodes {
            if self.down_since.contains_key(node) {
                continue;
            }
            let Some(code) = self.cluster.daemon(node).try_exit() else {
                continue;
            };
            let now = mono_now();
            if self.terminating.remove(node).is_none() {
                let storage_out = self.storage_fault.is_some()
                    || now < self.storage_cleared + nanos(Duration::from_secs(5));
                if !(code == 69 && storage_out) {
                    self.unexpected.push(format!(
                        "+{:.1} s: {node}'s daemon exited {code} without being told to:\n{}",
                        (now - self.started) as f64 / 1e9,
                        tail(&self.cluster.daemon_log(node), 15)
                    ));
                }
                let at = now + nanos(Duration::from_secs(2));
                self.later.push((at, Later::Restart { node: node.clone() }));
            }
            self.down_since.insert(node.clone(), now);
        }
        // Bad-config daemons: the refused ones must exit by themselves, with their code.
        for b in &mut self.bad {
            if b.stop_requested {
                continue;
            }
            let expect_exit = match b.variant {
                BadConfig::LeaseTooShort => Some(64),
                BadConfig::SharedRuntimeDir => Some(75),
                BadConfig::MissingSecrets | BadConfig::EmptyPool => None,
            };
            if let Some(code) = expect_exit {
                if let Some(got) = b.daemon.try_exit() {
                    b.stop_requested = true;
                    if got != code {
                        self.unexpected.push(format!(
                            "bad-config daemon {} ({}) exited {got}, not {code}",
                            b.daemon.node,
                            b.variant.as_str()
                        ));
                    }
                } else if mono_now() > b.started + nanos(Duration::from_secs(10)) {
                    self.unexpected.push(format!(
                        "bad-config daemon {} ({}) still runs after 10 s",
                        b.daemon.node,
                        b.variant.as_str()
                    ));
                    b.daemon.term();
                    b.stop_requested = true;
                }
            }
        }
        // A break takes effect when its command is done (on `sqlite:` it may wait for a
        // write lock): that is when the fault is cleared.
        let mut done = Vec::new();
        self.breaks.retain_mut(|(c, id)| match c.try_wait() {
            Ok(Some(status)) => {
                done.push((*id, status));
                false
            }
            _ => true,
        });
        for (id, status) in done {
            let fault = &mut self.faults[id];
            fault.cleared = mono_now();
            // Found by seed 956926316: a break that waited out a write-locked SQLite file
            // and gave up broke nothing, and its holder rightly went on signing.
            if !status.success() {
                fault.took_effect = false;
                fault
                    .detail
                    .push_str(&format!("; it failed ({status}): nothing was broken"));
            }
        }
    }

    fn run_later(&mut self, action: Later) {
        let now = mono_now();
        match action {
            Later::Cont { pid, fault } => {
                self.frozen_guards.retain(|_, p| *p != pid);
                if self.frozen.remove(&pid).is_some() {
                    self.signal_ours(pid, Signal::SIGCONT);
                }
                self.faults[fault].cleared = now;
            }
            Later::ContDaemon { node, fault } => {
                if self.frozen_daemons.remove(&node).is_some() {
                    self.guard_killed_while_frozen.retain(|n| n != &node);
                    self.cluster.daemon(&node).cont();
                    if let Some(from) = self.frozen_since.remove(&node) {
                        self.down.push(DownWindow {
                            node: node.clone(),
                            from,
                            to: now,
                        });
                    }
                }
                self.faults[fault].cleared = now;
            }
            Later::Restart { node } => {
                if let Some(from) = self.down_since.remove(&node) {
                    self.terminating.remove(&node);
                    // A stopped daemon may still be fencing and releasing: give it time.
                    let d = self.cluster.daemon(&node);
                    if d.is_running() && d.wait_exit(Duration::from_secs(5)).is_none() {
                        d.kill9();
                    }
                    // Keep the log of the daemon that ran before.
                    let log = self.cluster.dir.path().join(format!("{node}.stderr"));
                    self.generation += 1;
                    let _ = fs::rename(
                        &log,
                        self.cluster
                            .dir
                            .path()
                            .join(format!("{node}.{}.stderr", self.generation)),
                    );
                    self.cluster.restart(&node);
                    self.down.push(DownWindow {
                        node,
                        from,
                        to: mono_now(),
                    });
                }
            }
            Later::ClearStorage { fault } => {
                self.clear_storage();
                self.faults[fault].cleared = mono_now();
                self.storage_fault = None;
                self.storage_cleared = mono_now();
            }
            Later::StartAzurite { fault } => {
                if let Some(rig) = &mut self.blob {
                    rig.az.start_again();
                    let deadline = mono_now() + nanos(Duration::from_secs(30));
                    while !rig.az.poll_ready() {
                        assert!(mono_now() < deadline, "Azurite did not come back");
                        sleep(Duration::from_millis(25));
                    }
                }
                self.faults[fault].cleared = mono_now();
                self.storage_fault = None;
                self.storage_cleared = mono_now();
            }
            Later::Recreate { fault } => {
                self.recreate_records();
                self.faults[fault].cleared = mono_now();
                self.storage_fault = None;
                self.storage_cleared = mono_now();
            }
            Later::StopBad { index } => {
                let b = &mut self.bad[index];
                if !b.stop_requested {
                    b.daemon.term();
                    b.stop_requested = true;
                }
            }
            Later::Second {
                group,
                compound,
                node,
                identity,
            } => self.second(group, compound, &node, identity),
        }
    }

    fn impaired(&self) -> usize {
        let mut nodes: Vec<&String> = self
            .down_since
            .keys()
            .chain(self.frozen_daemons.keys())
            .chain(self.terminating.keys())
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes.len()
    }

    fn is_impaired(&self, node: &str) -> bool {
        self.down_since.contains_key(node)
            || self.frozen_daemons.contains_key(node)
            || self.terminating.contains_key(node)
    }

    /// Draws and injects the next fault.
    fn inject(&mut self) {
        // Weights: process faults on holders most, then compound, operator and storage.
        let storage_ok = self.storage_fault.is_none();
        let room = self.impaired() < MAX_IMPAIRED;
        let mut menu: Vec<(u32, Choice)> = vec![
            (9, Choice::Single(Kind::DaemonKill)),
            (7, Choice::Single(Kind::DaemonTerm)),
            (10, Choice::Single(Kind::DaemonStop)),
            (5, Choice::Single(Kind::GuardKill)),
            (4, Choice::Single(Kind::GuardTerm)),
            (5, Choice::Single(Kind::GuardStop)),
            (5, Choice::Single(Kind::ClientKill)),
            (4, Choice::Single(Kind::ClientTerm)),
            (5, Choice::Single(Kind::ClientStop)),
            (6, Choice::Single(Kind::Break)),
            (4, Choice::Single(Kind::BadConfig)),
        ];
        for c in Compound::ALL {
            let w = if c == Compound::DaemonStopThenStorage && !storage_ok {
                0
            } else {
                3
            };
            menu.push((w, Choice::Compound(c)));
        }
        let storage: &[(u32, Kind)] = match self.store {
            StoreKind::Sqlite => &[(8, Kind::SqliteLocked)],
            StoreKind::Blob => &[
                (3, Kind::BlackHole),
                (3, Kind::Slow),
                (3, Kind::Status503),
                (2, Kind::Status429),
                (3, Kind::Resets),
                (3, Kind::AzuriteRestart),
                // Its records stay locked for 60 s: every identity is down that long.
                (1, Kind::ContainerRecreate),
            ],
        };
        if storage_ok {
            menu.extend(storage.iter().map(|(w, k)| (*w, Choice::Single(*k))));
        }
        // Faults that take a daemon away need room for it.
        menu.retain(|(_, c)| room || !c.takes_a_daemon());
        let total: u32 = menu.iter().map(|(w, _)| w).sum();
        let mut pick = (self.rng.next_u64() % u64::from(total)) as u32;
        let choice = menu
            .iter()
            .find(|(w, _)| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .map(|(_, c)| *c)
            .expect("a choice");
        match choice {
            Choice::Single(kind) if kind.is_process() => {
                let _ = self.process_fault(kind, None, None);
            }
            Choice::Single(Kind::Break) => {
                let holders: Vec<String> = self.identities.iter().map(|(_, a)| a.clone()).collect();
                let address = self.rng.pick(&holders).clone();
                self.break_identity(&address, None);
            }
            Choice::Single(Kind::BadConfig) => self.bad_config(),
            Choice::Single(kind) => {
                let _ = self.storage(kind, None);
            }
            Choice::Compound(c) => self.compound(c),
        }
    }

    fn new_fault(
        &mut self,
        kind: Kind,
        group: Option<(usize, Compound)>,
        node: Option<String>,
        identity: Option<String>,
        holder: bool,
        detail: String,
    ) -> usize {
        let id = self.faults.len();
        let at = mono_now();
        self.faults.push(FaultRecord {
            id,
            kind,
            group,
            node,
            identity,
            holder,
            at,
            cleared: at,
            detail,
            took_effect: true,
        });
        id
    }

    /// A node for a process fault: a holder (three times in four), else a standby; only
    /// nodes whose daemon runs and is not frozen.
    fn pick_node(&mut self, want_holder: bool) -> Option<(String, Option<String>)> {
        let candidates: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !self.is_impaired(n))
            .cloned()
            .collect();
        let holders: Vec<String> = candidates
            .iter()
            .filter(|n| self.signing(n).is_some())
            .cloned()
            .collect();
        let standbys: Vec<String> = candidates
            .iter()
            .filter(|n| self.signing(n).is_none())
            .cloned()
            .collect();
        let node = if (want_holder && !holders.is_empty()) || standbys.is_empty() {
            if holders.is_empty() {
                return None;
            }
            self.rng.pick(&holders).clone()
        } else {
            self.rng.pick(&standbys).clone()
        };
        let identity = self.signing(&node);
        Some((node, identity))
    }

    /// Injects a process fault of `kind` on `node` (or a drawn node); the fault's id.
    fn process_fault(
        &mut self,
        kind: Kind,
        node: Option<String>,
        group: Option<(usize, Compound)>,
    ) -> Option<usize> {
        let (node, identity) = match node {
            Some(n) => {
                let id = self.signing(&n);
                (n, id)
            }
            None => {
                let want_holder = !self.rng.next_u64().is_multiple_of(4)
                    || matches!(
                        kind,
                        Kind::GuardKill
                            | Kind::GuardTerm
                            | Kind::GuardStop
                            | Kind::ClientKill
                            | Kind::ClientTerm
                            | Kind::ClientStop
                    );
                self.pick_node(want_holder)?
            }
        };
        if self.is_impaired(&node) {
            return None;
        }
        // Both enforcers of one node out at once (guard frozen and daemon frozen or dead)
        // is two failures on one VM, outside the promise: never inject it.
        let guard_frozen = self.frozen_guards.contains_key(&node);
        match kind {
            Kind::DaemonKill | Kind::DaemonStop if guard_frozen => return None,
            Kind::GuardStop if self.frozen_daemons.contains_key(&node) => return None,
            // A SIGTERM to a stopped guard stays pending until it resumes, so it would
            // only be the thaw, with a fence window counted from the wrong moment; a
            // stopped guard is stopped again or SIGTERMed only once it runs.
            Kind::GuardTerm | Kind::GuardStop if guard_frozen => return None,
            _ => {}
        }
        let holder = identity.is_some();
        let d = self.timing.d;
        match kind {
            Kind::DaemonKill => {
                let id = self.new_fault(
                    kind,
                    group,
                    Some(node.clone()),
                    identity,
                    holder,
                    "kill -9".into(),
                );
                self.cluster.daemon(&node).kill9();
                self.daemon_down(&node);
                Some(id)
            }
            Kind::DaemonTerm => {
                let id = self.new_fault(
                    kind,
                    group,
                    Some(node.clone()),
                    identity,
                    holder,
                    "SIGTERM".into(),
                );
                self.cluster.daemon(&node).term();
                let now = mono_now();
                self.terminating.insert(node.clone(), now);
                self.down_since.insert(node.clone(), now);
                let back = now
                    + nanos(
                        self.rng
                            .duration(Duration::from_millis(500), Duration::from_secs(5)),
                    );
                self.later.push((back, Later::Restart { node }));
                Some(id)
            }
            Kind::DaemonStop => {
                let hold = self.freeze_length(d);
                let id = self.new_fault(
                    kind,
                    group,
                    Some(node.clone()),
                    identity,
                    holder,
                    format!("SIGSTOP for {:.1} s", hold.as_secs_f64()),
                );
                self.cluster.daemon(&node).stop();
                self.frozen_daemons.insert(node.clone(), id);
                self.frozen_since.insert(node.clone(), mono_now());
                self.later.push((
                    mono_now() + nanos(hold),
                    Later::ContDaemon { node, fault: id },
                ));
                Some(id)
            }
            Kind::GuardKill | Kind::GuardTerm | Kind::GuardStop => {
                let pid = self.cluster.daemon(&node).guard_pid()?;
                self.signal_process(kind, pid, node, identity, holder, group, "guard")
            }
            Kind::ClientKill | Kind::ClientTerm | Kind::ClientStop => {
                let client = self.cluster.daemon(&node).client_pid()?;
                self.signal_process(kind, client, node, identity, holder, group, "client")
            }
            _ => None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn signal_process(
        &mut self,
        kind: Kind,
        pid: Pid,
        node: String,
        identity: Option<String>,
        holder: bool,
        group: Option<(usize, Compound)>,
        what: &str,
    ) -> Option<usize> {
        if !self.is_ours(pid.as_raw()) {
            return None;
        }
        let (signal, hold) = match kind {
            Kind::GuardKill | Kind::ClientKill => (Signal::SIGKILL, None),
            Kind::GuardTerm | Kind::ClientTerm => (Signal::SIGTERM, None),
            _ => (Signal::SIGSTOP, Some(self.freeze_length(self.timing.d))),
        };
        let detail = match hold {
            Some(h) => format!("{what} pid {pid}: SIGSTOP for {:.1} s", h.as_secs_f64()),
            None => format!("{what} pid {pid}: {signal}"),
        };
        if kind == Kind::GuardKill && self.frozen_daemons.contains_key(&node) {
            self.guard_killed_while_frozen.push(node.clone());
        }
        let id = self.new_fault(kind, group, Some(node), identity, holder, detail);
        let _ = kill(pid, signal);
        if let Some(h) = hold {
            self.frozen.insert(pid.as_raw(), id);
            if kind == Kind::GuardStop {
                if let Some(node) = &self.faults[id].node {
                    self.frozen_guards.insert(node.clone(), pid.as_raw());
                }
            }
            self.later.push((
                mono_now() + nanos(h),
                Later::Cont {
                    pid: pid.as_raw(),
                    fault: id,
                },
            ));
        }
        Some(id)
    }

    /// A freeze: short (no fence due), between F and the lease's end, or past D.
    fn freeze_length(&mut self, d: Duration) -> Duration {
        match self.rng.next_u64() % 3 {
            0 => self
                .rng
                .duration(Duration::from_millis(500), Duration::from_secs(4)),
            1 => self.rng.duration(d - self.timing.m, d),
            _ => self
                .rng
                .duration(d + Duration::from_secs(1), d + Duration::from_secs(10)),
        }
    }

    fn daemon_down(&mut self, node: &str) {
        let now = mono_now();
        self.down_since.insert(node.to_string(), now);
        let back = now
            + nanos(
                self.rng
                    .duration(Duration::from_millis(500), Duration::from_secs(5)),
            );
        self.later.push((
            back,
            Later::Restart {
                node: node.to_string(),
            },
        ));
    }

    /// `leased break IDENTITY --yes` with the default period, against the store directly.
    fn break_identity(&mut self, address: &str, group: Option<(usize, Compound)>) {
        let Some(name) = self.identity_name(address) else {
            return;
        };
        let holder = self.last_signer.get(address).map(|(n, _)| n.clone());
        let (spec, env) = match (&self.blob, self.store) {
            (Some(rig), _) => (
                rig.direct_leases.clone(),
                vec![(
                    "AZURE_STORAGE_CONNECTION_STRING".to_string(),
                    rig.az.connection_string(),
                )],
            ),
            (None, _) => (
                format!(
                    "sqlite:{}",
                    self.cluster.dir.path().join("leases.db").display()
                ),
                Vec::new(),
            ),
        };
        let out = self
            .cluster
            .dir
            .path()
            .join(format!("break-{}.log", self.faults.len()));
        let id = self.new_fault(
            Kind::Break,
            group,
            holder,
            Some(address.to_string()),
            true,
            format!("leased break {name} --yes (output in {})", file_name(&out)),
        );
        let file = fs::File::create(&out).expect("break log");
        let err = file.try_clone().expect("break log");
        match Command::new(&self.programs.leased)
            .args(["break", name.as_str(), "--leases", &spec, "--yes"])
            .envs(env)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
        {
            Ok(child) => self.breaks.push((child, id)),
            Err(e) => self
                .unexpected
                .push(format!("cannot run leased break: {e}")),
        }
    }

    fn bad_config(&mut self) {
        let variant = *self.rng.pick(&BadConfig::ALL);
        self.bad_count += 1;
        let node = format!("bad-{}", self.bad_count);
        let running: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !self.is_impaired(n))
            .cloned()
            .collect();
        if running.is_empty() {
            return;
        }
        let victim = self.rng.pick(&running).clone();
        let victim_runtime = self.cluster.runtime_dir(&victim);
        let missing = self.cluster.dir.path().join("no-secrets-here");
        let daemon = self
            .cluster
            .spawn_daemon_edited(&node, |text| match variant {
                BadConfig::LeaseTooShort => {
                    text.replace("duration_secs = 15", "duration_secs = 10")
                }
                BadConfig::SharedRuntimeDir => text
                    .lines()
                    .map(|l| {
                        if l.starts_with("runtime_dir = ") {
                            format!("runtime_dir = {:?}", victim_runtime.display().to_string())
                        } else {
                            l.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                BadConfig::MissingSecrets => text
                    .lines()
                    .map(|l| {
                        if l.starts_with("secrets = ") {
                            format!("secrets = \"dir:{}\"", missing.display())
                        } else {
                            l.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                BadConfig::EmptyPool => text.replace("pool = \"m0-\"", "pool = \"m9-\""),
            });
        let detail = match variant {
            BadConfig::SharedRuntimeDir => {
                format!("{node}: {} (that of {victim})", variant.as_str())
            }
            _ => format!("{node}: {}", variant.as_str()),
        };
        let fault = self.new_fault(Kind::BadConfig, None, Some(node), None, false, detail);
        let stay = self
            .rng
            .duration(Duration::from_secs(5), Duration::from_secs(20));
        self.bad.push(BadDaemon {
            daemon,
            variant,
            started: mono_now(),
            stop_requested: false,
        });
        let index = self.bad.len() - 1;
        self.later
            .push((mono_now() + nanos(stay), Later::StopBad { index }));
        self.faults[fault].cleared = mono_now() + nanos(stay);
    }

    /// Injects storage fault `kind`; its id.
    fn storage(&mut self, kind: Kind, group: Option<(usize, Compound)>) -> Option<usize> {
        if self.storage_fault.is_some() {
            return None;
        }
        let length = self
            .rng
            .duration(Duration::from_secs(1), Duration::from_secs(20));
        let now = mono_now();
        let secs = |d: Duration| d.as_secs_f64();
        let (detail, rule): (String, Option<Action>) = match kind {
            Kind::BlackHole => (
                format!("black-holed for {:.1} s", secs(length)),
                Some(Action::BlackHole),
            ),
            Kind::Slow => {
                let by = self
                    .rng
                    .duration(Duration::from_millis(300), Duration::from_secs(4));
                (
                    format!(
                        "every request delayed {:.2} s, for {:.1} s",
                        secs(by),
                        secs(length)
                    ),
                    Some(Action::Delay(by)),
                )
            }
            Kind::Status503 | Kind::Status429 => {
                let code = if kind == Kind::Status503 { 503 } else { 429 };
                (
                    format!("{code} storm for {:.1} s", secs(length)),
                    Some(Action::Status {
                        code,
                        retry_after: Some(1),
                    }),
                )
            }
            Kind::Resets => (
                format!("connections reset for {:.1} s", secs(length)),
                Some(Action::Reset),
            ),
            Kind::AzuriteRestart => (
                format!(
                    "Azurite stopped, started again after {:.1} s",
                    secs(self.azurite_down())
                ),
                None,
            ),
            Kind::ContainerRecreate => (
                format!("container deleted, re-created after {:.1} s", secs(length)),
                None,
            ),
            Kind::SqliteLocked => (format!("write-locked for {:.1} s", secs(length)), None),
            _ => return None,
        };
        let id = self.new_fault(kind, group, None, None, false, detail);
        self.storage_fault = Some(id);
        match (kind, rule) {
            (_, Some(action)) => {
                let rig = self
                    .blob
                    .as_ref()
                    .expect("blob storage faults need the proxy");
                rig.proxy.set_rule(Rule::new(Match::All, action));
                self.later
                    .push((now + nanos(length), Later::ClearStorage { fault: id }));
            }
            (Kind::AzuriteRestart, None) => {
                let down = self.azurite_down();
                let rig = self.blob.as_mut().expect("blob");
                rig.az.stop();
                self.later
                    .push((mono_now() + nanos(down), Later::StartAzurite { fault: id }));
            }
            (Kind::ContainerRecreate, None) => {
                let rig = self.blob.as_ref().expect("blob");
                match rig.az.try_delete_container(CONTAINER) {
                    Ok(()) => self
                        .later
                        .push((mono_now() + nanos(length), Later::Recreate { fault: id })),
                    Err(e) => {
                        self.faults[id].detail = format!("not injected: {e}");
                        self.storage_fault = None;
                    }
                }
            }
            (Kind::SqliteLocked, None) => {
                let path = self.cluster.dir.path().join("leases.db");
                let conn = rusqlite::Connection::open(&path).expect("open the lease file");
                let _ = conn.busy_timeout(Duration::from_secs(3));
                match conn.execute_batch("BEGIN EXCLUSIVE") {
                    Ok(()) => {
                        self.sqlite_lock = Some((conn, id));
                        self.later
                            .push((now + nanos(length), Later::ClearStorage { fault: id }));
                    }
                    Err(e) => {
                        self.faults[id].detail = format!("not injected: could not lock: {e}");
                        self.storage_fault = None;
                    }
                }
            }
            _ => {}
        }
        Some(id)
    }

    /// How long Azurite stays down. Azurite 3.35 reads every fixed-duration lease back as
    /// expired after a restart (its on-disk store returns the expiry time as text, which
    /// then never compares as later than now), which Azure never does: every holder's lease
    /// would be broken at once. Down for more than D, every lease it held has ended anyway,
    /// so the restart tests what the protocol must survive, not that emulator defect.
    fn azurite_down(&mut self) -> Duration {
        let d = self.timing.d;
        let down = d + Duration::from_secs(1);
        // Drawn once per fault: the detail text and the schedule use the same value.
        if let Some(last) = self.azurite_down_drawn.take() {
            return last;
        }
        let drawn = self.rng.duration(down, down + Duration::from_secs(5));
        self.azurite_down_drawn = Some(drawn);
        drawn
    }

    fn clear_storage(&mut self) {
        if let Some(rig) = &self.blob {
            rig.proxy.clear_rules();
            rig.proxy.release_held();
        }
        if let Some((conn, _)) = self.sqlite_lock.take() {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }

    fn recreate_records(&mut self) {
        let Some(rig) = &self.blob else { return };
        let spec: LeaseStoreSpec = rig.direct_leases.parse().expect("a lease spec");
        let azure = AzureOptions {
            connection_string: Some(rig.az.connection_string()),
            ..Default::default()
        };
        let names: Vec<Name> = self.identities.iter().map(|(n, _)| n.clone()).collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // As `orchestrator init` re-run by the operator does it: each record of a key that
        // exists is created locked for the longest lease.
        let result: Result<(), String> = runtime.block_on(async {
            let store = spec.open(&azure).map_err(|e| e.to_string())?;
            for n in &names {
                orchestrator::provision::create_lease_record(store.as_ref(), n, true)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        });
        if let Err(e) = result {
            self.unexpected
                .push(format!("re-creating the lease records: {e}"));
        }
    }

    fn compound(&mut self, c: Compound) {
        // Always on a holder: that is where two faults at once bite.
        let Some((node, identity)) = self.pick_node(true) else {
            return;
        };
        let Some(address) = identity.clone() else {
            return;
        };
        let first = match c {
            Compound::GuardStopThenBreak | Compound::GuardStopThenDaemonTerm => Kind::GuardStop,
            Compound::DaemonStopThenGuardKill
            | Compound::DaemonStopThenBreak
            | Compound::DaemonStopThenStorage => Kind::DaemonStop,
            Compound::ClientStopThenDaemonKill => Kind::ClientStop,
        };
        let group_id = self.faults.len();
        let Some(id) = self.process_fault(first, Some(node.clone()), Some((group_id, c))) else {
            return;
        };
        debug_assert_eq!(id, group_id);
        let gap = self
            .rng
            .duration(Duration::from_millis(200), Duration::from_secs(3));
        self.later.push((
            mono_now() + nanos(gap),
            Later::Second {
                group: group_id,
                compound: c,
                node,
                identity: Some(address),
            },
        ));
    }

    fn second(&mut self, group: usize, c: Compound, node: &str, identity: Option<String>) {
        let g = Some((group, c));
        match c {
            Compound::GuardStopThenBreak | Compound::DaemonStopThenBreak => {
                if let Some(a) = identity {
                    self.break_identity(&a, g);
                }
            }
            Compound::DaemonStopThenGuardKill => {
                // The daemon is frozen: its guard is still its child.
                if let Some(pid) = self.cluster.daemon(node).guard_pid() {
                    let _ = self.signal_process(
                        Kind::GuardKill,
                        pid,
                        node.to_string(),
                        identity,
                        true,
                        g,
                        "guard",
                    );
                }
            }
            Compound::DaemonStopThenStorage => {
                let kind = match self.store {
                    StoreKind::Sqlite => Kind::SqliteLocked,
                    StoreKind::Blob => Kind::BlackHole,
                };
                let _ = self.storage(kind, g);
            }
            Compound::ClientStopThenDaemonKill => {
                if !self.is_impaired(node) && !self.frozen_guards.contains_key(node) {
                    let id = self.new_fault(
                        Kind::DaemonKill,
                        g,
                        Some(node.to_string()),
                        identity,
                        true,
                        "kill -9".into(),
                    );
                    let _ = id;
                    self.cluster.daemon(node).kill9();
                    self.daemon_down(node);
                }
            }
            Compound::GuardStopThenDaemonTerm => {
                if !self.is_impaired(node) {
                    let _ = self.process_fault(Kind::DaemonTerm, Some(node.to_string()), g);
                }
            }
        }
    }

    /// Key files: one on a node while another node signs that identity is left behind.
    /// A finding counts when two looks 500 ms apart both see it, so that a hand-off racing
    /// the previous holder's last line is not one.
    fn check_key_files(&mut self) {
        let now = mono_now();
        let mut seen = BTreeMap::new();
        for node in self.nodes.clone() {
            for (file, address) in key_files(&self.cluster.runtime_dir(&node)) {
                let Some(address) = address else { continue };
                let mine = self.signing(&node).as_deref() == Some(address.as_str());
                let other = self
                    .last_signer
                    .get(&address)
                    .filter(|(n, at)| *n != node && now.saturating_sub(*at) < SIGNING_NOW)
                    .map(|(n, _)| n.clone());
                if let (false, Some(other)) = (mine, other) {
                    // Its daemon frozen and its guard killed by this run: see `known`.
                    let frozen = self.frozen_daemons.contains_key(&node)
                        && self.guard_killed_while_frozen.contains(&node);
                    seen.insert(
                        (node.clone(), file.clone(), address.clone(), other.clone()),
                        frozen,
                    );
                }
            }
        }
        for ((node, file, address, other), frozen) in &seen {
            let key = (node.clone(), file.clone(), address.clone(), other.clone());
            if self.key_suspects.contains_key(&key) && !self.key_reported.contains(&key) {
                self.key_reported.push(key.clone());
                let finding = format!(
                    "+{:.1} s: {node}: key file {file} of {address} present while {other} signs it{}",
                    (now - self.started) as f64 / 1e9,
                    if *frozen {
                        " (its daemon frozen, its guard killed)"
                    } else {
                        ""
                    }
                );
                if *frozen {
                    self.key_file_known.push(finding);
                } else {
                    self.key_file_findings.push(finding);
                }
            }
        }
        self.key_suspects = seen;
    }

    /// Thaws everything, clears storage faults, restarts what is down, stops bad daemons.
    fn undo_all(&mut self) {
        let pending = std::mem::take(&mut self.later);
        let mut rest = Vec::new();
        for (due, action) in pending {
            match action {
                Later::Second { .. } | Later::StopBad { .. } => rest.push(action),
                // Not before its time: see `Later::StartAzurite`. The settle loop's ticks
                // start it when it is due.
                Later::StartAzurite { .. } => self.later.push((due, action)),
                other => self.run_later(other),
            }
        }
        for action in rest {
            if let Later::StopBad { index } = action {
                self.run_later(Later::StopBad { index });
            }
        }
        for b in &mut self.bad {
            if !b.stop_requested {
                b.daemon.term();
                b.stop_requested = true;
            }
        }
        for (pid, _) in std::mem::take(&mut self.frozen) {
            self.signal_ours(pid, Signal::SIGCONT);
        }
        self.frozen_guards.clear();
        for node in self.down_since.keys().cloned().collect::<Vec<_>>() {
            self.run_later(Later::Restart { node });
        }
    }

    fn teardown(&mut self) {
        for (pid, _) in std::mem::take(&mut self.frozen) {
            self.signal_ours(pid, Signal::SIGCONT);
        }
        for node in self.frozen_daemons.keys().cloned().collect::<Vec<_>>() {
            self.cluster.daemon(&node).cont();
        }
        self.frozen_daemons.clear();
        for d in &mut self.cluster.daemons {
            d.term();
        }
        for b in &mut self.bad {
            b.daemon.term();
        }
        for d in &mut self.cluster.daemons {
            if d.wait_exit(Duration::from_secs(10)).is_none() {
                d.kill9();
            }
        }
        for b in &mut self.bad {
            if b.daemon.wait_exit(Duration::from_secs(5)).is_none() {
                b.daemon.kill9();
            }
        }
        for (c, _) in &mut self.breaks {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Guards fence their clients when their daemon's pipe closes; give them the grace.
        let deadline = mono_now() + nanos(Duration::from_secs(5));
        while mono_now() < deadline && !self.our_processes_now().is_empty() {
            sleep(Duration::from_millis(50));
        }
        for pid in self.our_processes_now() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if let Some(rig) = self.blob.take() {
            drop(rig);
        }
        // Azurite's group is gone with it; whatever is left now is reported.
        sleep(Duration::from_millis(200));
    }

    /// Copies the daemons' logs, the break commands' output and the sign log into `dir`
    /// (unless a key was found in them).
    /// Every `client_pid=… gone_mono_ns=…` line of every daemon log of the run, the logs
    /// of daemons that ran before a restart included (`NODE.N.stderr`).
    fn groups_gone(&self) -> Vec<crate::overlap::GroupGone> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(self.cluster.dir.path()) else {
            return out;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".stderr") else {
                continue;
            };
            let node = stem.split('.').next().unwrap_or(stem);
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            out.extend(crate::overlap::groups_gone(node, &name, &text));
        }
        out
    }

    fn keep_logs(&self, dir: &Path, key_hits: &[String]) -> Option<PathBuf> {
        if !key_hits.is_empty() {
            return None;
        }
        let dir = dir.join(format!("logs-{}", self.store.as_str()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).ok()?;
        let entries = fs::read_dir(self.cluster.dir.path()).ok()?;
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".stderr") || name.ends_with(".log") || name.ends_with(".toml") {
                let _ = fs::copy(e.path(), dir.join(&name));
            }
        }
        Some(dir)
    }

    fn key_files_left(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut dirs: Vec<(String, PathBuf)> = self
            .nodes
            .iter()
            .map(|n| (n.clone(), self.cluster.runtime_dir(n)))
            .collect();
        for b in &self.bad {
            dirs.push((
                b.daemon.node.clone(),
                self.cluster.runtime_dir(&b.daemon.node),
            ));
        }
        for (node, dir) in dirs {
            for (file, _) in key_files(&dir) {
                out.push(format!("{node}: {file}"));
            }
        }
        out
    }

    /// Files of the run whose text holds a key in hex (either case, with or without 0x).
    fn key_bytes_in_logs(&self) -> Vec<String> {
        let keys = self.keys_hex();
        let mut out = Vec::new();
        let mut files = Vec::new();
        collect_files(self.cluster.dir.path(), &mut files);
        for path in files {
            // The secrets themselves live in another directory; runtime key files were
            // checked above.
            let Ok(bytes) = fs::read(&path) else { continue };
            let text = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
            for (name, hex) in &keys {
                if text.contains(hex.as_str()) {
                    out.push(format!("{} holds the key of {name}", path.display()));
                }
            }
        }
        out
    }

    fn keys_hex(&self) -> Vec<(String, zeroize::Zeroizing<String>)> {
        let spec: SecretStoreSpec = match &self.cluster_secrets_spec() {
            Some(s) => s.parse().expect("secret spec"),
            None => return Vec::new(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let Ok(store) = spec.open(&AzureOptions::default()) else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for (name, _) in &self.identities {
                if let Ok(secret) = store.get(name).await {
                    let hex = secret
                        .value
                        .expose()
                        .trim()
                        .trim_start_matches("0x")
                        .to_ascii_lowercase();
                    out.push((name.to_string(), zeroize::Zeroizing::new(hex)));
                }
            }
            out
        })
    }

    fn cluster_secrets_spec(&self) -> Option<String> {
        match self.store {
            StoreKind::Sqlite => Some(format!(
                "dir:{}",
                self.cluster.dir.path().join("secrets").display()
            )),
            StoreKind::Blob => Some(format!(
                "dir:{}",
                self._secrets_dir.path().join("secrets").display()
            )),
        }
    }

    /// Whether `pid` is a process of this run (its command line names the run's paths).
    fn is_ours(&self, pid: i32) -> bool {
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let text = String::from_utf8_lossy(&cmdline);
        self.ours.iter().any(|p| text.contains(p.as_str()))
    }

    fn signal_ours(&self, pid: i32, signal: Signal) {
        if self.is_ours(pid) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// The processes of this run still alive (zombies excluded).
    fn our_processes_now(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| *pid != me && self.is_ours(*pid))
            .filter(|pid| !crate::cluster::is_dead(Pid::from_raw(*pid)))
            .collect()
    }

    fn our_processes(&self) -> Vec<String> {
        self.our_processes_now()
            .into_iter()
            .map(|pid| {
                let cmd = fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                    .unwrap_or_default();
                format!("{pid}: {}", cmd.chars().take(160).collect::<String>())
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
enum Choice {
    Single(Kind),
    Compound(Compound),
}

impl Choice {
    fn takes_a_daemon(self) -> bool {
        match self {
            Choice::Single(k) => {
                matches!(k, Kind::DaemonKill | Kind::DaemonTerm | Kind::DaemonStop)
            }
            Choice::Compound(c) => !matches!(c, Compound::GuardStopThenBreak),
        }
    }
}

/// Key, staging and temporary files in a runtime directory, with the address of the key a
/// key file holds when it can be read (never the key itself).
fn key_files(dir: &Path) -> Vec<(String, Option<String>)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if name == "leased.lock" {
                return None;
            }
            let address = fs::read(e.path()).ok().and_then(|bytes| {
                let bytes = zeroize::Zeroizing::new(bytes);
                shared::keyfile::decode(&bytes, None)
                    .ok()
                    .map(|(key, _)| key.address().to_string().to_ascii_lowercase())
            });
            Some((name, address))
        })
        .collect()
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let path = e.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "secrets") {
                continue;
            }
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
