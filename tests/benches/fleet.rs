//! Fleet figures for `leased`, side by side for the `sqlite:` lease store and for Azure Blob
//! leases on Azurite, and beside them an etcd lock (`etcdctl lock --ttl 15`) around the same
//! stand-in client as a baseline where it has a figure:
//!
//! - crash take-over: kill -9 of a holder's daemon until a standby's client signs, with the
//!   lease time the holder had left at the kill;
//! - graceful hand-over: SIGTERM of a holder's daemon until the new holder's client signs,
//!   and the signing gap (the old client's last signature to the new one's first);
//! - fence lag: kill -9 of a holder's daemon until its client's process is gone;
//! - herds of 100 and of 120 daemons over 100 identities, all started at once: time until
//!   every identity is signing, store requests spent getting there, acquire conflicts;
//! - idle store load of a standby and of a holder, idle memory of a holder's daemon and
//!   guard (on the settled 120-daemon herd);
//! - the stripped size of the daemon's binary.
//!
//! Every figure comes from real daemons (`leased-host`, built in the bench profile) each
//! supervising a stand-in client, with D = 15 s. Every scenario ends with the overlap
//! checker over its sign log; an overlap is printed at once and fails the run (exit status
//! 1) once the table is out. The table goes to stdout as Markdown, progress to stderr.
//!
//! ```text
//! cargo bench -p integration-tests --bench fleet -- [--quick] [--store sqlite|blob|both] [--out FILE]
//! ```
//!
//! cargo runs a bench in its package's directory, so a relative `--out` lands under
//! `tests/`. `--quick` is what CI runs: 3 crash and 3 graceful trials and a 30 s idle window, a few
//! minutes in all (etcd from `ops/install-test-deps.sh`; without it that column stays
//! empty). The herds are 100 and 120 daemons in either mode: a smaller herd would
//! not measure what a scale set starting at once does. The default runs 20 trials of each
//! and a 60 s idle window.

// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use integration_tests::azurite::{Azurite, AzuriteOptions};
use integration_tests::cluster::{
    http_get, mono_now, rss_kib, wait_dead, wait_for, Cluster, ClusterSpec, Stores,
};
use integration_tests::etcd_lock;
use integration_tests::overlap::{self, CheckParams, Signing};
use shared::azure::AzureOptions;

/// D, the lease duration every daemon here uses.
const D: Duration = Duration::from_secs(15);
/// R, the renew period: the daemon's default, D/3.
const R: Duration = Duration::from_secs(5);
/// Identities in both herds.
const HERD_IDENTITIES: usize = 100;
/// The herds' sizes: as many daemons as identities, and 20 standbys more.
const HERDS: [usize; 2] = [100, 120];
/// How long a herd may take to have every identity signing before it counts as stuck.
const HERD_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a small cluster may take to have every identity signing at the start.
const START_TIMEOUT: Duration = Duration::from_secs(40);
/// How long a standby may take to sign after a kill -9 (a lease lapses within D).
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(40);
/// How long a killed daemon's client may take to be gone before it counts as never.
const FENCE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a daemon's HTTP endpoint may take to answer the bench.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the sign log is read while waiting.
const POLL: Duration = Duration::from_millis(20);
/// A signing line this recent means its writer signs now (the stand-in signs every 50 ms).
const RECENT: Duration = Duration::from_millis(300);

/// How much of each measurement to run.
#[derive(Debug, Clone, Copy)]
struct Mode {
    name: &'static str,
    crash_trials: usize,
    /// Crash trials run this many at a time, each on its own identity, their kills spread
    /// over one R: each take-over waits out most of a lease, so 20 one after the other
    /// would take over five minutes per store.
    crash_batch: usize,
    graceful_trials: usize,
    /// The settled 120-daemon herd is watched this long for its idle store load.
    idle_window: Duration,
}

const QUICK: Mode = Mode {
    name: "quick",
    crash_trials: 3,
    crash_batch: 3,
    graceful_trials: 3,
    idle_window: Duration::from_secs(30),
};

const FULL: Mode = Mode {
    name: "full",
    crash_trials: 20,
    crash_batch: 5,
    graceful_trials: 20,
    idle_window: Duration::from_secs(60),
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum StoreKind {
    Sqlite,
    Blob,
}

impl StoreKind {
    fn title(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Blob => "Azurite",
        }
    }
}

#[derive(Debug)]
struct Args {
    mode: Mode,
    stores: Vec<StoreKind>,
    out: Option<PathBuf>,
}

const USAGE: &str = "usage: fleet [--quick] [--store sqlite|blob|both] [--out FILE]";

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        mode: FULL,
        stores: vec![StoreKind::Sqlite, StoreKind::Blob],
        out: None,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => parsed.mode = QUICK,
            "--store" => {
                parsed.stores = match args.next().as_deref() {
                    Some("sqlite") => vec![StoreKind::Sqlite],
                    Some("blob") => vec![StoreKind::Blob],
                    Some("both") => vec![StoreKind::Sqlite, StoreKind::Blob],
                    other => {
                        return Err(format!("--store takes sqlite, blob or both, not {other:?}"))
                    }
                }
            }
            "--out" => {
                parsed.out = Some(args.next().ok_or("--out takes a file name")?.into());
            }
            // cargo bench passes it to every bench binary.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(parsed)
}

/// Progress on stderr, stamped with the time since the bench began.
fn progress(message: impl std::fmt::Display) {
    static BEGUN: OnceLock<Instant> = OnceLock::new();
    let begun = BEGUN.get_or_init(Instant::now);
    eprintln!("[{:>6.1} s] {message}", begun.elapsed().as_secs_f64());
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn main() -> ExitCode {
    progress("fleet bench starting");
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mode = args.mode;
    let binary = stripped_binary();
    let mut columns = BTreeMap::new();
    for &kind in &args.stores {
        progress(format!("=== {} ===", kind.title()));
        let rig = Rig::start(kind);
        columns.insert(kind, run_store(&rig, mode, &binary));
    }
    let etcd = etcd_column(mode);

    let table = render(&args, &columns, &etcd);
    println!("{table}");
    if let Some(out) = &args.out {
        if let Err(e) = std::fs::write(out, &table) {
            eprintln!("cannot write {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
        progress(format!("table written to {}", out.display()));
    }
    let overlaps: usize = columns.values().map(|c| c.overlaps).sum();
    if overlaps > 0 {
        eprintln!("FAILED: {overlaps} overlapping signer pair(s), printed above");
        return ExitCode::FAILURE;
    }
    progress("done");
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------------------
// The stores

/// One store's side of the run. Each scenario gets a fresh lease store (its own SQLite file,
/// or its own Azurite container), so nothing a scenario's killed daemons left behind can
/// hold up the next one.
#[derive(Debug)]
struct Rig {
    kind: StoreKind,
    azurite: Option<Azurite>,
    /// The `dir:` secret stores of the Azurite scenarios (a cluster on `sqlite:` keeps its
    /// own in its directory).
    scratch: tempfile::TempDir,
}

impl Rig {
    fn start(kind: StoreKind) -> Rig {
        let azurite = (kind == StoreKind::Blob).then(|| {
            // Azurite's debug log records every request: with 120 daemons it would cost
            // the emulator's single thread more than the requests themselves.
            let az = Azurite::start_with(AzuriteOptions {
                persistent: false,
                debug_log: false,
            });
            progress(format!(
                "Azurite up on {} in {:.1} s",
                az.addr(),
                az.started_in().as_secs_f64()
            ));
            az
        });
        Rig {
            kind,
            azurite,
            scratch: tempfile::tempdir().expect("a scratch directory"),
        }
    }

    fn spec(&self, scenario: &str, identities: usize, daemons: usize) -> ClusterSpec {
        let stores = match &self.azurite {
            None => Stores::Local,
            Some(az) => {
                let connection_string = az.connection_string();
                Stores::Specs {
                    leases: format!("blob:{}/{scenario}", az.blob_endpoint()),
                    secrets: format!(
                        "dir:{}",
                        self.scratch.path().join(scenario).join("secrets").display()
                    ),
                    azure: Box::new(AzureOptions {
                        connection_string: Some(connection_string.clone()),
                        ..AzureOptions::default()
                    }),
                    azure_toml: format!("connection_string = {connection_string:?}"),
                }
            }
        };
        ClusterSpec {
            identities,
            daemons,
            duration_secs: D.as_secs(),
            // /metrics and /status are how the figures are read.
            http: true,
            stores,
            ..ClusterSpec::default()
        }
    }

    fn label(&self, scenario: &str) -> String {
        format!("{} {scenario}", self.kind.title())
    }
}

// ---------------------------------------------------------------------------------------
// Reading what the clients signed

/// A cluster's sign log, read as it grows: each poll parses only the whole lines appended
/// since the last one, so waiting on 100 clients' lines stays cheap.
#[derive(Debug)]
struct SignTail {
    path: PathBuf,
    offset: u64,
    lines: Vec<Signing>,
}

impl SignTail {
    fn new(cluster: &Cluster) -> SignTail {
        SignTail {
            path: cluster.sign_log.clone(),
            offset: 0,
            lines: Vec::new(),
        }
    }

    /// Reads the lines appended since the last poll. An unreadable line panics: the
    /// overlap checker must never pass what it cannot read.
    fn poll(&mut self) {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            // No client has signed yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => panic!("cannot open {}: {e}", self.path.display()),
        };
        let mut fresh = Vec::new();
        file.seek(SeekFrom::Start(self.offset))
            .and_then(|_| file.read_to_end(&mut fresh))
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.path.display()));
        // A client may be writing its next line right now: only whole lines count.
        let whole = fresh.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let text = std::str::from_utf8(&fresh[..whole])
            .unwrap_or_else(|e| panic!("the sign log is not text: {e}"));
        let parsed = overlap::parse_log("sign.log", text).unwrap_or_else(|e| panic!("{e}"));
        // parse_log numbers lines from the start of what it was given: renumber them from
        // the start of the file, for the checker's messages.
        let first = self.lines.len() + 1;
        self.lines
            .extend(parsed.into_iter().enumerate().map(|(i, mut s)| {
                s.origin = format!("sign.log:{}", first + i);
                s
            }));
        self.offset += whole as u64;
    }

    /// The first line, in log order, that `accept` takes, waiting up to `timeout` for it.
    fn wait_line(
        &mut self,
        timeout: Duration,
        mut accept: impl FnMut(&Signing) -> bool,
    ) -> Option<Signing> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        loop {
            if let Some(s) = self.lines[seen..].iter().find(|s| accept(s)) {
                return Some(s.clone());
            }
            seen = self.lines.len();
            if Instant::now() >= deadline {
                return None;
            }
            sleep(POLL);
            self.poll();
        }
    }

    /// Who signs each identity now: address → the writer of its latest line, if that line
    /// is a recent `signing` one.
    fn signers_now(&mut self) -> BTreeMap<String, String> {
        self.poll();
        let since = mono_now().saturating_sub(nanos(RECENT));
        let mut latest: BTreeMap<&str, &Signing> = BTreeMap::new();
        // Lines are appended about in time order: look back a little past `since`, for
        // writers whose lines landed out of order.
        let horizon = since.saturating_sub(nanos(Duration::from_secs(1)));
        for s in self.lines.iter().rev().take_while(|s| s.at >= horizon) {
            let entry = latest.entry(&s.identity).or_insert(s);
            if s.at > entry.at {
                *entry = s;
            }
        }
        latest
            .into_iter()
            .filter(|(_, s)| !s.stop && s.at >= since)
            .map(|(identity, s)| (identity.to_string(), s.writer.clone()))
            .collect()
    }

    /// Waits until `count` identities are signing; who signs which.
    fn wait_signing(
        &mut self,
        count: usize,
        timeout: Duration,
    ) -> Option<BTreeMap<String, String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let signers = self.signers_now();
            if signers.len() >= count {
                return Some(signers);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(POLL);
        }
    }
}

/// The overlap checker over everything `cluster`'s clients signed, each interval of a
/// client that was killed outright ending where its daemon saw its process group gone (as
/// the chaos run reads them). Prints every overlapping pair; their number.
fn check_overlaps(cluster: &Cluster, tail: &mut SignTail, scenario: &str) -> usize {
    tail.poll();
    let params = CheckParams::default();
    let gone: Vec<overlap::GroupGone> = cluster
        .daemons
        .iter()
        .flat_map(|d| overlap::groups_gone(&d.node, &format!("{}.stderr", d.node), &d.log_text()))
        .collect();
    let signings = overlap::end_at_groups_gone(&tail.lines, &gone, params.tail);
    let bad = overlap::overlaps(&overlap::intervals(&signings, params));
    for (a, b) in &bad {
        eprintln!("OVERLAP in {scenario}: two signers of one identity at once\n  {a}\n  {b}");
    }
    progress(format!(
        "{scenario}: overlap checker over {} sign-log lines: {} overlaps",
        tail.lines.len(),
        bad.len()
    ));
    bad.len()
}

// ---------------------------------------------------------------------------------------
// Reading the daemons

/// One scrape of a daemon's `/metrics`: every series (name and labels) with its value.
#[derive(Debug, Clone, Default)]
struct Scrape {
    series: BTreeMap<String, f64>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect();
        Scrape { series }
    }

    /// The sum of every series of metric `name`; `None` if the daemon has no such metric.
    fn sum(&self, name: &str) -> Option<f64> {
        let labelled = format!("{name}{{");
        let values: Vec<f64> = self
            .series
            .iter()
            .filter(|(k, _)| *k == name || k.starts_with(&labelled))
            .map(|(_, v)| *v)
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// Store requests of one operation (`list`, `acquire`, …).
    fn requests(&self, op: &str) -> f64 {
        let key = format!("leased_store_requests_total{{op=\"{op}\"}}");
        self.series.get(&key).copied().unwrap_or(0.0)
    }

    fn all_requests(&self) -> f64 {
        self.sum("leased_store_requests_total").unwrap_or(0.0)
    }

    fn serving(&self) -> bool {
        self.sum("leased_serving").is_some_and(|v| v > 0.0)
    }
}

/// Every daemon's `/metrics` (node → scrape), all at once so that the counts are of one
/// moment.
fn scrape_all(cluster: &Cluster) -> BTreeMap<String, Scrape> {
    get_all(cluster, "/metrics")
        .into_iter()
        .map(|(node, text)| (node, Scrape::parse(&text)))
        .collect()
}

/// Every daemon's `/status` (node → the JSON), all at once.
fn status_all(cluster: &Cluster) -> BTreeMap<String, serde_json::Value> {
    get_all(cluster, "/status")
        .into_iter()
        .filter_map(|(node, text)| Some((node, serde_json::from_str(&text).ok()?)))
        .collect()
}

/// GETs `path` from every daemon concurrently, on one runtime with one client: a client
/// and a runtime per request, 120 at once on two cores, miss their timeouts. A daemon
/// that does not answer is asked once more, then left out. Node → body, for 200 answers.
fn get_all(cluster: &Cluster, path: &str) -> BTreeMap<String, String> {
    let targets: Vec<(String, SocketAddr)> = cluster
        .daemons
        .iter()
        .filter_map(|d| Some((d.node.clone(), d.http?)))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the daemons' HTTP endpoints");
    runtime.block_on(async {
        let client = shared::net::loopback_http_client(HTTP_TIMEOUT, HTTP_TIMEOUT)
            .expect("a loopback HTTP client");
        let mut answers = BTreeMap::new();
        let mut failures = BTreeMap::new();
        for _attempt in 0..2 {
            let mut asks = tokio::task::JoinSet::new();
            for (node, addr) in targets.iter().filter(|(n, _)| !answers.contains_key(n)) {
                let (client, node) = (client.clone(), node.clone());
                let url = format!("http://{addr}{path}");
                asks.spawn(async move {
                    let answer = match client.get(url).send().await {
                        Ok(answer) if answer.status() == 200 => answer.text().await,
                        Ok(answer) => return (node, Err(format!("HTTP {}", answer.status()))),
                        Err(e) => Err(e),
                    };
                    (node, answer.map_err(|e| integration_tests::error_chain(&e)))
                });
            }
            while let Some(done) = asks.join_next().await {
                match done {
                    Ok((node, Ok(body))) => {
                        failures.remove(&node);
                        answers.insert(node, body);
                    }
                    Ok((node, Err(e))) => {
                        failures.insert(node, e);
                    }
                    Err(e) => panic!("a GET of {path} panicked: {e}"),
                }
            }
        }
        if let Some((node, e)) = failures.iter().next() {
            let nodes: Vec<&str> = failures.keys().map(String::as_str).collect();
            progress(format!(
                "{} daemons did not answer GET {path} ({}); {node}: {e}",
                failures.len(),
                nodes.join(", ")
            ));
        }
        answers
    })
}

/// A daemon's `/status`.
fn status(cluster: &Cluster, node: &str) -> Option<serde_json::Value> {
    let addr = cluster.daemons.iter().find(|d| d.node == node)?.http?;
    serde_json::from_str(&http_get(addr, "/status")?).ok()
}

/// Waits until `node`'s restarted daemon runs its control loop (its `/status` names a
/// state), so that a trial starts with the standbys it expects. Any state will do: a
/// restarted node may at once take an identity whose lease has lapsed meanwhile.
fn wait_running(cluster: &Cluster, node: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if status(cluster, node).is_some_and(|s| s["state"].is_string()) {
            return true;
        }
        sleep(POLL);
    }
    false
}

/// Stops a cluster and waits until every process it started is gone, so that the next
/// scenario measures on a quiet machine.
fn teardown(cluster: Cluster) {
    let roots: Vec<Pid> = cluster.daemons.iter().filter_map(|d| d.pid()).collect();
    let family = descendants(&roots);
    drop(cluster);
    let left = family
        .into_iter()
        .filter(|pid| wait_dead(*pid, Duration::from_secs(10)).is_none())
        .count();
    if left > 0 {
        progress(format!(
            "warning: {left} processes outlived their daemons by 10 s"
        ));
    }
}

/// Every descendant of `roots`, from one pass over /proc.
fn descendants(roots: &[Pid]) -> Vec<Pid> {
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The command name is in parentheses and may hold spaces: the parent is the
            // second field after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut todo: Vec<i32> = roots.iter().map(|p| p.as_raw()).collect();
    while let Some(pid) = todo.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            out.push(Pid::from_raw(child));
            todo.push(child);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Crash take-over and fence lag

#[derive(Debug)]
struct CrashTrial {
    /// Seconds of lease the holder had left at the kill, by its own `/status`.
    lease_left: Option<f64>,
    /// Kill → the identity's first signature by another node.
    takeover: Option<Duration>,
    /// Kill → the holder's client process gone.
    fence_lag: Option<Duration>,
}

/// A small generator for the kills' phases (xorshift64*): the bench needs spread, not
/// quality, and the crate has no random number dependency.
#[derive(Debug)]
struct Phase(u64);

impl Phase {
    fn seeded() -> Phase {
        Phase(mono_now() | 1)
    }

    /// Uniform in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// kill -9 of holders' daemons, `crash_batch` at a time over as many identities, each with
/// as many standbys. Within a batch the kills are spread over one R at random phases, so
/// the trials see every point of the renew cycle; the killed nodes come back as standbys
/// once their identities have moved.
fn crash_trials(rig: &Rig, mode: Mode) -> (Result<Vec<CrashTrial>, String>, usize) {
    let label = rig.label("crash");
    let k = mode.crash_batch.min(mode.crash_trials).max(1);
    progress(format!("{label}: {k} identities, {} daemons", 2 * k));
    let mut cluster = Cluster::start(rig.spec("crash", k, 2 * k));
    let mut tail = SignTail::new(&cluster);
    let names: BTreeMap<String, String> = cluster
        .identities
        .iter()
        .map(|(name, address)| (address.to_string().to_ascii_lowercase(), name.to_string()))
        .collect();
    let mut phase = Phase::seeded();
    let mut trials = Vec::new();
    let mut failure = None;
    while trials.len() < mode.crash_trials {
        let Some(signers) = tail.wait_signing(k, START_TIMEOUT) else {
            failure = Some(format!(
                "not all {k} identities signing within {START_TIMEOUT:?}"
            ));
            break;
        };
        let batch = k.min(mode.crash_trials - trials.len());
        let slot = R / batch as u32;
        let round = Instant::now();
        let mut killed = Vec::new();
        for (i, (address, node)) in signers.into_iter().take(batch).enumerate() {
            let at = round + slot * i as u32 + slot.mul_f64(phase.next());
            sleep(at.saturating_duration_since(Instant::now()));
            let lease_left =
                status(&cluster, &node).and_then(|s| s["lease_expires_in_secs"].as_f64());
            let client = cluster.daemon(&node).client_pid();
            let t0 = mono_now();
            let clock = Instant::now();
            cluster.daemon(&node).kill9();
            let fence_lag = client
                .and_then(|pid| wait_dead(pid, FENCE_TIMEOUT))
                .map(|_| clock.elapsed());
            killed.push((address, node, t0, lease_left, fence_lag));
        }
        for (address, node, t0, lease_left, fence_lag) in killed {
            let taken = tail.wait_line(TAKEOVER_TIMEOUT, |s| {
                !s.stop && s.identity == address && s.writer != node && s.at > t0
            });
            let takeover = taken.as_ref().map(|s| Duration::from_nanos(s.at - t0));
            let n = trials.len() + 1;
            let identity = names.get(&address).map_or(address.as_str(), String::as_str);
            let left = lease_left.map_or("?".to_string(), |l| format!("{l:.2} s"));
            let fenced = fence_lag.map_or("not within 5 s".to_string(), |f| {
                format!("{:.1} ms", f.as_secs_f64() * 1e3)
            });
            match (&taken, takeover) {
                (Some(by), Some(t)) => progress(format!(
                    "{label} {n}/{}: kill -9 of {node} holding {identity} with {left} of lease \
                     left; {} signed after {:.3} s{}; {node}'s client gone after {fenced}",
                    mode.crash_trials,
                    by.writer,
                    t.as_secs_f64(),
                    lease_left.map_or(String::new(), |l| format!(
                        " ({:+.3} s after the lease ran out)",
                        t.as_secs_f64() - l
                    )),
                )),
                _ => progress(format!(
                    "{label} {n}/{}: kill -9 of {node} holding {identity} with {left} left: \
                     NOT taken over within {TAKEOVER_TIMEOUT:?}\n{}",
                    mode.crash_trials,
                    cluster.diagnostics()
                )),
            }
            trials.push(CrashTrial {
                lease_left,
                takeover,
                fence_lag,
            });
            // The old holder comes back as a standby for the next batch.
            cluster.restart(&node);
            if !wait_running(&cluster, &node, Duration::from_secs(10)) {
                progress(format!("{label}: restarted {node} not running after 10 s"));
            }
        }
    }
    let overlaps = check_overlaps(&cluster, &mut tail, &label);
    teardown(cluster);
    (failure.map_or(Ok(trials), Err), overlaps)
}

// ---------------------------------------------------------------------------------------
// Graceful hand-over

#[derive(Debug)]
struct GracefulTrial {
    /// SIGTERM → the new holder's first signature.
    handover: Option<Duration>,
    /// The old client's last signature → the new client's first.
    gap: Option<Duration>,
}

/// SIGTERM of the holder's daemon, one identity with one standby, one trial at a time:
/// these are milliseconds, which parallel trials on two cores would blur.
fn graceful_trials(rig: &Rig, mode: Mode) -> (Result<Vec<GracefulTrial>, String>, usize) {
    let label = rig.label("graceful");
    progress(format!("{label}: 1 identity, 2 daemons"));
    let mut cluster = Cluster::start(rig.spec("graceful", 1, 2));
    let mut tail = SignTail::new(&cluster);
    let mut trials = Vec::new();
    let mut failure = None;
    for n in 1..=mode.graceful_trials {
        let Some((address, node)) = tail
            .wait_signing(1, START_TIMEOUT)
            .and_then(|s| s.into_iter().next())
        else {
            failure = Some(format!("nobody signing within {START_TIMEOUT:?}"));
            break;
        };
        // The standby has been seeking for a while: the hand-over does not depend on
        // when it last looked.
        let t0 = mono_now();
        cluster.daemon(&node).term();
        let taken = tail.wait_line(TAKEOVER_TIMEOUT, |s| {
            !s.stop && s.identity == address && s.writer != node && s.at > t0
        });
        let handover = taken.as_ref().map(|s| Duration::from_nanos(s.at - t0));
        let gap = taken.as_ref().and_then(|first| {
            let last = tail
                .lines
                .iter()
                .filter(|s| !s.stop && s.identity == address && s.writer == node && s.at < first.at)
                .map(|s| s.at)
                .max()?;
            Some(Duration::from_nanos(first.at - last))
        });
        match (&taken, handover, gap) {
            (Some(by), Some(h), gap) => progress(format!(
                "{label} {n}/{}: SIGTERM of {node}; {} signed after {:.1} ms (signing gap {})",
                mode.graceful_trials,
                by.writer,
                h.as_secs_f64() * 1e3,
                gap.map_or("?".to_string(), |g| format!(
                    "{:.1} ms",
                    g.as_secs_f64() * 1e3
                )),
            )),
            _ => progress(format!(
                "{label} {n}/{}: SIGTERM of {node}: NOT taken over within {TAKEOVER_TIMEOUT:?}\n{}",
                mode.graceful_trials,
                cluster.diagnostics()
            )),
        }
        trials.push(GracefulTrial { handover, gap });
        if cluster
            .daemon(&node)
            .wait_exit(Duration::from_secs(10))
            .is_none()
        {
            progress(format!(
                "{label}: {node} did not exit within 10 s of SIGTERM"
            ));
        }
        cluster.restart(&node);
        if !wait_running(&cluster, &node, Duration::from_secs(10)) {
            progress(format!("{label}: restarted {node} not running after 10 s"));
        }
        // Let the new standby look a few times before the next SIGTERM.
        sleep(Duration::from_millis(1500));
    }
    let overlaps = check_overlaps(&cluster, &mut tail, &label);
    teardown(cluster);
    (failure.map_or(Ok(trials), Err), overlaps)
}

// ---------------------------------------------------------------------------------------
// Herds

#[derive(Debug)]
struct Herd {
    daemons: usize,
    /// The last daemon's start → the last identity's first signature; or how far it got.
    settle: Result<Duration, String>,
    /// list + acquire requests of all daemons when every identity was signing.
    lease_requests: f64,
    /// Every store request of all daemons then (reads, metadata, secrets too).
    all_requests: f64,
    /// Daemons whose `/metrics` did not answer then.
    unanswered: usize,
    /// Refused acquires per acquisition, and where the figure came from.
    conflicts: Option<(f64, &'static str)>,
    /// Daemons not serving at the end.
    standbys: usize,
    /// Daemons whose `/status` did not answer at the end.
    unanswered_at_end: usize,
    /// Identities more than one daemon claimed to serve at the end.
    doubly_served: Vec<String>,
    /// The longest any identity went without a signature, from the start to the end.
    longest_unheld: Option<Duration>,
    idle: Option<Idle>,
    overlaps: usize,
}

#[derive(Debug)]
struct Idle {
    window: Duration,
    /// Store requests per minute of each daemon that stayed a standby.
    standby_per_minute: Vec<f64>,
    /// Store requests per R of each daemon that kept holding.
    holder_per_r: Vec<f64>,
    /// RSS of a holder's daemon and of its guard, KiB, for a sample of holders.
    holder_rss_kib: Vec<(u64, u64, u64)>,
}

/// `daemons` daemons over 100 identities, all started at once; with `idle`, the settled
/// herd is then watched that long for its store load and memory.
fn herd(rig: &Rig, daemons: usize, idle: Option<Duration>) -> Herd {
    let scenario = format!("herd{daemons}");
    let label = rig.label(&scenario);
    progress(format!(
        "{label}: provisioning {HERD_IDENTITIES} identities, starting {daemons} daemons"
    ));
    let cluster = Cluster::start(rig.spec(&scenario, HERD_IDENTITIES, daemons));
    let started = mono_now();
    progress(format!("{label}: all {daemons} daemons started"));
    let mut tail = SignTail::new(&cluster);
    let addresses: BTreeMap<String, String> = cluster
        .identities
        .iter()
        .map(|(name, address)| (address.to_string().to_ascii_lowercase(), name.to_string()))
        .collect();

    // Each identity's first signature, by whom.
    let mut first: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let deadline = Instant::now() + HERD_TIMEOUT;
    let mut read = 0;
    loop {
        tail.poll();
        for s in &tail.lines[read..] {
            if !s.stop && addresses.contains_key(&s.identity) {
                first
                    .entry(s.identity.clone())
                    .or_insert_with(|| (s.at, s.writer.clone()));
            }
        }
        read = tail.lines.len();
        if first.len() == addresses.len() || Instant::now() >= deadline {
            break;
        }
        sleep(POLL);
    }
    // At once, before renewals and standby polls add to the count.
    let settled = scrape_all(&cluster);
    let settle = if first.len() == addresses.len() {
        let last = first.values().map(|(at, _)| *at).max().unwrap_or(started);
        Ok(Duration::from_nanos(last.saturating_sub(started)))
    } else {
        Err(format!(
            "{}/{} signing after {:.0} s",
            first.len(),
            addresses.len(),
            HERD_TIMEOUT.as_secs_f64()
        ))
    };
    match &settle {
        Ok(t) => progress(format!(
            "{label}: every identity signing {:.3} s after the last start",
            t.as_secs_f64()
        )),
        Err(e) => progress(format!("{label}: NOT settled: {e}")),
    }
    check_holders(&cluster, &addresses, &first, &label);

    let lease_requests: f64 = settled
        .values()
        .map(|s| s.requests("list") + s.requests("acquire"))
        .sum();
    let all_requests: f64 = settled.values().map(Scrape::all_requests).sum();
    let acquisitions: f64 = settled
        .values()
        .filter_map(|s| s.sum("leased_acquisitions_total"))
        .sum();
    // The daemon's own count of refused acquires where it has one; else every acquire
    // request that did not acquire (timeouts included).
    let conflicts = if settled
        .values()
        .any(|s| s.sum("leased_acquire_conflicts_total").is_some())
    {
        let refused: f64 = settled
            .values()
            .filter_map(|s| s.sum("leased_acquire_conflicts_total"))
            .sum();
        Some((refused, "leased_acquire_conflicts_total"))
    } else {
        let requests: f64 = settled.values().map(|s| s.requests("acquire")).sum();
        Some((requests - acquisitions, "acquire requests − acquisitions"))
    }
    .filter(|_| acquisitions > 0.0)
    .map(|(refused, source)| (refused / acquisitions, source));
    let mut ops: BTreeMap<String, f64> = BTreeMap::new();
    for scrape in settled.values() {
        for (series, value) in &scrape.series {
            if let Some(op) = series
                .strip_prefix("leased_store_requests_total{op=\"")
                .and_then(|rest| rest.strip_suffix("\"}"))
            {
                *ops.entry(op.to_string()).or_default() += value;
            }
        }
    }
    progress(format!(
        "{label}: store requests until settled, by operation: {}",
        ops.iter()
            .map(|(op, n)| format!("{op} {n:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let idle = idle.map(|window| {
        // Every daemon up first, so that each counts for the whole window.
        let all_up = wait_for(Duration::from_secs(10), || {
            (status_all(&cluster).len() == daemons).then_some(())
        });
        if all_up.is_none() {
            progress(format!("{label}: not every daemon answers /status"));
        }
        idle_figures(&cluster, window, &label)
    });
    let statuses = status_all(&cluster);
    let standbys = statuses
        .values()
        .filter(|s| s["serving"].as_bool() != Some(true))
        .count();
    let doubly_served = doubly_served(&statuses, &mut tail, &label);
    let longest_unheld = longest_unheld(&mut tail, &addresses, started, settle.is_ok());
    let overlaps = check_overlaps(&cluster, &mut tail, &label);
    progress(format!("{label}: stopping {daemons} daemons"));
    teardown(cluster);
    Herd {
        daemons,
        settle,
        lease_requests,
        all_requests,
        unanswered: daemons - settled.len(),
        conflicts,
        standbys,
        unanswered_at_end: daemons - statuses.len(),
        doubly_served,
        longest_unheld,
        idle,
        overlaps,
    }
}

/// Identities that more than one daemon says it serves (holding, client running), each
/// with those daemons' `/status` and who the sign log says signs it now. Only one of them
/// can hold the lease, and at most one client may sign: the others' view is stale.
fn doubly_served(
    statuses: &BTreeMap<String, serde_json::Value>,
    tail: &mut SignTail,
    label: &str,
) -> Vec<String> {
    let mut serving: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (node, status) in statuses {
        if status["serving"].as_bool() == Some(true) {
            let identity = status["identity"].as_str().unwrap_or("?");
            serving.entry(identity).or_default().push(node);
        }
    }
    let signers = tail.signers_now();
    serving
        .into_iter()
        .filter(|(_, nodes)| nodes.len() > 1)
        .map(|(identity, nodes)| {
            let address = nodes
                .iter()
                .find_map(|n| statuses[*n]["address"].as_str())
                .map(str::to_ascii_lowercase)
                .unwrap_or_default();
            let detail = format!(
                "{identity} served by {} by their /status; signing now: {}",
                nodes.join(" and "),
                signers.get(&address).map_or("nobody", String::as_str)
            );
            progress(format!("{label}: WARNING: {detail}"));
            for node in nodes {
                progress(format!("  {node}: {}", statuses[node]));
            }
            detail
        })
        .collect()
}

/// Checks that the store agrees with the sign log: every identity leased, to the node that
/// signs it, and no node signing two. Says so on stderr if not.
fn check_holders(
    cluster: &Cluster,
    addresses: &BTreeMap<String, String>,
    first: &BTreeMap<String, (u64, String)>,
    label: &str,
) {
    let holders = cluster.holders();
    let nodes: BTreeSet<&String> = first.values().map(|(_, node)| node).collect();
    let disagree: Vec<String> = addresses
        .iter()
        .filter_map(|(address, name)| {
            let signer = first.get(address).map(|(_, n)| n.as_str());
            let holder = holders.get(name).map(String::as_str);
            (signer != holder).then(|| format!("{name}: signer {signer:?}, holder {holder:?}"))
        })
        .collect();
    if nodes.len() != first.len() {
        progress(format!(
            "{label}: WARNING: {} identities signed by only {} nodes",
            first.len(),
            nodes.len()
        ));
    }
    if !disagree.is_empty() {
        progress(format!(
            "{label}: note: the store's holders differ from the first signers for {} identities \
             (a lease moved since, or metadata not written yet): {}",
            disagree.len(),
            disagree
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
}

/// The longest any identity went without a signature: from the herd's start to its first,
/// and between any two after it, up to the last line read.
fn longest_unheld(
    tail: &mut SignTail,
    addresses: &BTreeMap<String, String>,
    started: u64,
    settled: bool,
) -> Option<Duration> {
    if !settled {
        return None;
    }
    tail.poll();
    let mut times: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for s in tail.lines.iter().filter(|s| !s.stop) {
        if addresses.contains_key(&s.identity) {
            times.entry(&s.identity).or_default().push(s.at);
        }
    }
    let end = tail.lines.iter().map(|s| s.at).max()?;
    times
        .values_mut()
        .map(|at| {
            at.sort_unstable();
            let mut edges = vec![started];
            edges.extend(at.iter().copied());
            edges.push(end);
            edges
                .windows(2)
                .map(|w| w[1].saturating_sub(w[0]))
                .max()
                .unwrap_or(0)
        })
        .max()
        .map(Duration::from_nanos)
}

/// Store requests of the settled herd over `window`, by role, and the memory of a sample
/// of holders. The window opens one lease (D) after the herd settled: until then a
/// standby also looks when each new lease's first term can end (it ends off the renew
/// grid), which is the start-up, not idling.
fn idle_figures(cluster: &Cluster, window: Duration, label: &str) -> Idle {
    progress(format!(
        "{label}: waiting one lease ({} s) for every lease's first term to pass",
        D.as_secs()
    ));
    sleep(D);
    progress(format!(
        "{label}: idle window of {:.0} s",
        window.as_secs_f64()
    ));
    let before = scrape_all(cluster);
    let clock = Instant::now();
    sleep(window);
    let after = scrape_all(cluster);
    let elapsed = clock.elapsed().as_secs_f64();
    let mut standby_per_minute = Vec::new();
    let mut holder_per_r = Vec::new();
    let mut holders = Vec::new();
    // What the holders that sent more than one request per R sent, by operation.
    let mut excess: BTreeMap<&str, f64> = BTreeMap::new();
    let mut busy_holders = 0;
    for (node, end) in &after {
        let Some(start) = before.get(node) else {
            continue;
        };
        let requests = end.all_requests() - start.all_requests();
        // A daemon that changed role during the window counts as neither.
        match (start.serving(), end.serving()) {
            (false, false) => standby_per_minute.push(requests * 60.0 / elapsed),
            (true, true) => {
                let per_r = requests * R.as_secs_f64() / elapsed;
                if per_r > 1.0 {
                    busy_holders += 1;
                    for op in [
                        "renew",
                        "read",
                        "write_metadata",
                        "get_secret",
                        "list",
                        "acquire",
                        "release",
                    ] {
                        let sent = end.requests(op) - start.requests(op);
                        if sent > 0.0 {
                            *excess.entry(op).or_default() += sent;
                        }
                    }
                }
                holder_per_r.push(per_r);
                holders.push(node.clone());
            }
            _ => {}
        }
    }
    if busy_holders > 0 {
        progress(format!(
            "{label}: {busy_holders} holders sent more than one request per R; theirs by \
             operation: {}",
            excess
                .iter()
                .map(|(op, n)| format!("{op} {n:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // Reading a guard's pid walks /proc, which holds a few hundred processes here: a
    // sample of 20 holders is plenty for a median and a max.
    let holder_rss_kib = holders
        .iter()
        .take(20)
        .filter_map(|node| {
            let daemon = cluster.daemons.iter().find(|d| &d.node == node)?;
            let own = rss_kib(daemon.pid()?.as_raw().unsigned_abs())?;
            let guard_pid = daemon.guard_pid()?;
            let guard = rss_kib(guard_pid.as_raw().unsigned_abs())?;
            // The guard's key janitor, which lives as long as the guard (zero without one).
            let janitor = integration_tests::cluster::children_of(guard_pid)
                .into_iter()
                .find(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                        c.split(|b| *b == 0)
                            .any(|w| w == leased::guard::JANITOR_SUBCOMMAND.as_bytes())
                    })
                })
                .and_then(|pid| rss_kib(pid.as_raw().unsigned_abs()))
                .unwrap_or(0);
            Some((own, guard, janitor))
        })
        .collect();
    Idle {
        window,
        standby_per_minute,
        holder_per_r,
        holder_rss_kib,
    }
}

// ---------------------------------------------------------------------------------------
// The binary

/// The stripped size of the daemon's binary: `leased` if it was built in this profile and
/// is no older than `leased-host` (which runs exactly `leased::cli::main`); else
/// `leased-host` itself, which is what the bench ran. The binary's name, and its size in
/// bytes or why there is none.
fn stripped_binary() -> (String, Result<u64, String>) {
    let host = integration_tests::bin_path("leased-host");
    let leased = host.with_file_name("leased");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let use_leased = matches!((modified(&leased), modified(&host)), (Some(l), Some(h)) if l >= h);
    let (name, path) = if use_leased {
        ("leased", leased)
    } else {
        ("leased-host (= leased::cli::main)", host)
    };
    // The guard program the daemon runs its guards from: `leased-guard` beside `leased`.
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let guard = path.with_file_name(format!("{file}-guard"));
    let name = match strip_size(&guard) {
        Ok(bytes) => format!("{name}; its guard program {:.2} MB", bytes as f64 / 1e6),
        Err(e) => format!("{name}; no guard program: {e}"),
    };
    (name, strip_size(&path))
}

fn strip_size(binary: &Path) -> Result<u64, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let out = dir.path().join("stripped");
    let stripped = |program: &str, args: &[&std::ffi::OsStr]| {
        Command::new(program)
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    let ok = stripped(
        "strip",
        &[
            "--strip-all".as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
            binary.as_os_str(),
        ],
    ) || stripped(
        "objcopy",
        &["--strip-all".as_ref(), binary.as_os_str(), out.as_os_str()],
    );
    if !ok {
        return Err("neither strip nor objcopy could strip it".into());
    }
    std::fs::metadata(&out)
        .map(|m| m.len())
        .map_err(|e| format!("the stripped copy: {e}"))
}

// ---------------------------------------------------------------------------------------
// The table

/// The table's rows, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Row {
    Crash,
    Graceful,
    GracefulGap,
    FenceLag,
    Herd100Settle,
    Herd100Requests,
    Herd100Conflicts,
    Herd120Settle,
    Herd120Requests,
    Herd120Conflicts,
    Herd120Standbys,
    IdleStandby,
    IdleHolder,
    IdleRss,
    Binary,
    Overlaps,
}

impl Row {
    const ALL: [Row; 16] = [
        Row::Crash,
        Row::Graceful,
        Row::GracefulGap,
        Row::FenceLag,
        Row::Herd100Settle,
        Row::Herd100Requests,
        Row::Herd100Conflicts,
        Row::Herd120Settle,
        Row::Herd120Requests,
        Row::Herd120Conflicts,
        Row::Herd120Standbys,
        Row::IdleStandby,
        Row::IdleHolder,
        Row::IdleRss,
        Row::Binary,
        Row::Overlaps,
    ];

    fn measure(self) -> &'static str {
        match self {
            Row::Crash => "crash take-over p50 / p99 (kill -9 of the holder's daemon → a standby's client signs)",
            Row::Graceful => "graceful hand-over p50 / p99 (SIGTERM of the holder's daemon → the new holder's client signs)",
            Row::GracefulGap => "graceful signing gap p50 / p99 (old client's last signature → new client's first)",
            Row::FenceLag => "fence lag p50 / p99 (kill -9 of the holder's daemon → its client's process gone; the guard fences when the daemon's pipe closes, no grace period involved)",
            Row::Herd100Settle => "herd 100 daemons / 100 identities: last start → every identity held and its client signing",
            Row::Herd100Requests => "herd 100/100: store requests until settled, list + acquire vs minimum (1 list + 1 acquire per daemon); all ops",
            Row::Herd100Conflicts => "herd 100/100: acquire conflicts per acquisition",
            Row::Herd120Settle => "herd 120 daemons / 100 identities: last start → every identity held and its client signing",
            Row::Herd120Requests => "herd 120/100: store requests until settled, list + acquire vs minimum (1 list per daemon + 1 acquire per identity); all ops",
            Row::Herd120Conflicts => "herd 120/100: acquire conflicts per acquisition",
            Row::Herd120Standbys => "herd 120/100: standbys at the end; longest any identity went unheld (start and idle window)",
            Row::IdleStandby => "idle standby store requests / minute (herd 120, mean / max)",
            Row::IdleHolder => "idle holder store requests per R = 5 s (herd 120, mean / max)",
            Row::IdleRss => "idle RSS of a holder's daemon + guard + the guard's key janitor (herd 120, median / max)",
            Row::Binary => "stripped daemon binary (and its guard program beside it)",
            Row::Overlaps => "overlap checker, every scenario",
        }
    }

    fn target(self) -> &'static str {
        match self {
            Row::Crash => "p99 ≤ D + 0.5 s = 15.5 s",
            Row::Graceful => "p50 ≤ 50 ms, p99 ≤ 200 ms",
            Row::FenceLag => "p99 ≤ 100 ms",
            Row::Herd100Settle | Row::Herd120Settle => "≤ 3 s",
            Row::Herd100Requests | Row::Herd120Requests => "≤ 2× minimum",
            Row::Herd120Standbys => "20 standbys; none unheld past 3 s",
            Row::IdleStandby => "≤ 30",
            Row::IdleHolder => "≤ 1",
            Row::IdleRss | Row::Binary => "≤ 10 MB",
            Row::Overlaps => "overlaps: 0",
            Row::GracefulGap | Row::Herd100Conflicts | Row::Herd120Conflicts => "-",
        }
    }
}

/// One figure: its text, and whether it meets its row's target (`None`: no target, or
/// nothing measured).
#[derive(Debug, Clone)]
struct Cell {
    text: String,
    met: Option<bool>,
}

impl Cell {
    fn new(text: impl Into<String>, met: Option<bool>) -> Cell {
        Cell {
            text: text.into(),
            met,
        }
    }

    fn failed(why: impl std::fmt::Display) -> Cell {
        Cell::new(format!("failed: {why}"), Some(false))
    }
}

/// One column of the table.
#[derive(Debug, Default)]
struct Column {
    cells: BTreeMap<Row, Cell>,
    overlaps: usize,
    /// What looked wrong beyond the figures, printed under the table.
    notes: Vec<String>,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50 and p99 of the values present, with how many are missing; `None` if there are none.
fn p50_p99(values: impl Iterator<Item = Option<f64>>) -> Option<(f64, f64, usize)> {
    let mut missing = 0;
    let mut v: Vec<f64> = values
        .filter_map(|x| {
            if x.is_none() {
                missing += 1;
            }
            x
        })
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some((percentile(&v, 50.0), percentile(&v, 99.0), missing))
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// "p50 / p99" of trials in `unit` (scaled by `scale`), the target checked by `meets`;
/// trials that never finished are counted against the target.
fn latency_cell(
    values: impl Iterator<Item = Option<f64>>,
    unit: &str,
    n: usize,
    meets: impl Fn(f64, f64) -> bool,
) -> Cell {
    match p50_p99(values) {
        None => Cell::failed(format!("none of {n} trials finished")),
        Some((p50, p99, missing)) => {
            let digits = if unit == "s" { 3 } else { 1 };
            let mut text = format!("{p50:.digits$} {unit} / {p99:.digits$} {unit} (n={n})");
            if missing > 0 {
                let _ = write!(text, ", {missing} never");
            }
            Cell::new(text, Some(missing == 0 && meets(p50, p99)))
        }
    }
}

/// Runs every scenario on one store; its column.
fn run_store(rig: &Rig, mode: Mode, binary: &(String, Result<u64, String>)) -> Column {
    let mut column = Column::default();
    let cells = &mut column.cells;

    let (crash, overlaps) = crash_trials(rig, mode);
    column.overlaps += overlaps;
    match crash {
        Ok(trials) => {
            let n = trials.len();
            cells.insert(
                Row::Crash,
                latency_cell(
                    trials.iter().map(|t| t.takeover.map(secs)),
                    "s",
                    n,
                    |_, p99| p99 <= secs(D) + 0.5,
                ),
            );
            cells.insert(
                Row::FenceLag,
                latency_cell(
                    trials.iter().map(|t| t.fence_lag.map(millis)),
                    "ms",
                    n,
                    |_, p99| p99 <= 100.0,
                ),
            );
            let left: Vec<String> = trials
                .iter()
                .filter_map(|t| t.lease_left.map(|l| format!("{l:.1}")))
                .collect();
            progress(format!(
                "{}: lease left at each kill (s): {}",
                rig.label("crash"),
                left.join(", ")
            ));
        }
        Err(e) => {
            cells.insert(Row::Crash, Cell::failed(&e));
            cells.insert(Row::FenceLag, Cell::failed(&e));
        }
    }

    let (graceful, overlaps) = graceful_trials(rig, mode);
    column.overlaps += overlaps;
    match graceful {
        Ok(trials) => {
            let n = trials.len();
            cells.insert(
                Row::Graceful,
                latency_cell(
                    trials.iter().map(|t| t.handover.map(millis)),
                    "ms",
                    n,
                    |p50, p99| p50 <= 50.0 && p99 <= 200.0,
                ),
            );
            let mut gap =
                latency_cell(trials.iter().map(|t| t.gap.map(millis)), "ms", n, |_, _| {
                    true
                });
            gap.met = None;
            cells.insert(Row::GracefulGap, gap);
        }
        Err(e) => {
            cells.insert(Row::Graceful, Cell::failed(&e));
            cells.insert(Row::GracefulGap, Cell::failed(&e));
        }
    }

    for daemons in HERDS {
        let idle = (daemons > HERD_IDENTITIES).then_some(mode.idle_window);
        let figures = herd(rig, daemons, idle);
        column.overlaps += figures.overlaps;
        herd_cells(&figures, cells, &mut column.notes);
    }

    let (name, size) = binary;
    cells.insert(
        Row::Binary,
        match size {
            Ok(bytes) => {
                let mb = *bytes as f64 / 1e6;
                Cell::new(format!("{mb:.2} MB ({name})"), Some(mb <= 10.0))
            }
            Err(e) => Cell::failed(e),
        },
    );
    cells.insert(
        Row::Overlaps,
        Cell::new(
            format!("overlaps: {}", column.overlaps),
            Some(column.overlaps == 0),
        ),
    );
    column
}

fn herd_cells(h: &Herd, cells: &mut BTreeMap<Row, Cell>, notes: &mut Vec<String>) {
    let (settle_row, requests_row, conflicts_row) = if h.daemons > HERD_IDENTITIES {
        (
            Row::Herd120Settle,
            Row::Herd120Requests,
            Row::Herd120Conflicts,
        )
    } else {
        (
            Row::Herd100Settle,
            Row::Herd100Requests,
            Row::Herd100Conflicts,
        )
    };
    cells.insert(
        settle_row,
        match &h.settle {
            Ok(t) => Cell::new(format!("{:.3} s", secs(*t)), Some(secs(*t) <= 3.0)),
            Err(e) => Cell::failed(e),
        },
    );
    // One list per daemon and one acquire per identity: nothing less can seat the herd.
    // A daemon whose HTTP endpoint was not up yet when the herd settled (the last standbys
    // started, on a fast store) had sent nothing yet: its metrics are made with the
    // endpoint, before the first store request.
    let up = h.daemons - h.unanswered;
    let minimum = (up + HERD_IDENTITIES) as f64;
    let ratio = h.lease_requests / minimum;
    let mut text = format!(
        "{:.0} = {ratio:.2}× min {minimum:.0}; all ops {:.0}",
        h.lease_requests, h.all_requests
    );
    if h.unanswered > 0 {
        let _ = write!(text, " ({} daemons not up yet)", h.unanswered);
    }
    cells.insert(requests_row, Cell::new(text, Some(ratio <= 2.0)));
    cells.insert(
        conflicts_row,
        match h.conflicts {
            Some((per, source)) => Cell::new(format!("{per:.2} ({source})"), None),
            None => Cell::new("no acquisitions", None),
        },
    );
    if h.daemons > HERD_IDENTITIES {
        let want = h.daemons - HERD_IDENTITIES;
        cells.insert(
            Row::Herd120Standbys,
            match h.longest_unheld {
                Some(u) => Cell::new(
                    format!("{} standbys; longest unheld {:.3} s", h.standbys, secs(u)),
                    Some(h.standbys == want && secs(u) <= 3.0 && h.unanswered_at_end == 0),
                ),
                None => Cell::new(
                    format!("{} standbys; never settled", h.standbys),
                    Some(false),
                ),
            },
        );
    }
    if let Some(idle) = &h.idle {
        idle_cells(idle, cells);
    }
    let herd = format!("herd {}/{HERD_IDENTITIES}", h.daemons);
    for doubled in &h.doubly_served {
        notes.push(format!("{herd}: {doubled}"));
    }
    if h.unanswered_at_end > 0 {
        notes.push(format!(
            "{herd}: {} daemons did not answer /status at the end",
            h.unanswered_at_end
        ));
    }
}

fn idle_cells(idle: &Idle, cells: &mut BTreeMap<Row, Cell>) {
    let mean_max = |v: &[f64]| {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let max = v.iter().copied().fold(f64::MIN, f64::max);
        (mean, max)
    };
    let window = format!("{:.0} s", idle.window.as_secs_f64());
    cells.insert(
        Row::IdleStandby,
        if idle.standby_per_minute.is_empty() {
            Cell::failed("no daemon stayed a standby")
        } else {
            let (mean, max) = mean_max(&idle.standby_per_minute);
            Cell::new(
                format!(
                    "{mean:.1} / {max:.1} ({} standbys, {window})",
                    idle.standby_per_minute.len()
                ),
                Some(max <= 30.0),
            )
        },
    );
    cells.insert(
        Row::IdleHolder,
        if idle.holder_per_r.is_empty() {
            Cell::failed("no daemon kept holding")
        } else {
            let (mean, max) = mean_max(&idle.holder_per_r);
            Cell::new(
                format!(
                    "{mean:.2} / {max:.2} ({} holders, {window})",
                    idle.holder_per_r.len()
                ),
                Some(max <= 1.0),
            )
        },
    );
    cells.insert(
        Row::IdleRss,
        if idle.holder_rss_kib.is_empty() {
            Cell::failed("no holder's daemon and guard found")
        } else {
            let mb = |kib: u64| kib as f64 / 1024.0;
            let median = |mut v: Vec<u64>| {
                v.sort_unstable();
                mb(v[v.len() / 2])
            };
            let triples = &idle.holder_rss_kib;
            let total = median(triples.iter().map(|(d, g, j)| d + g + j).collect());
            let max = mb(triples.iter().map(|(d, g, j)| d + g + j).max().unwrap_or(0));
            let daemon = median(triples.iter().map(|(d, _, _)| *d).collect());
            let guard = median(triples.iter().map(|(_, g, _)| *g).collect());
            let janitor = median(triples.iter().map(|(_, _, j)| *j).collect());
            Cell::new(
                format!(
                    "{total:.1} MB / {max:.1} MB (daemon {daemon:.1} + guard {guard:.1} + key janitor {janitor:.1}, n={})",
                    triples.len()
                ),
                Some(max <= 10.0),
            )
        },
    );
}

/// The `etcd lock` column: the same stand-in client held by `etcdctl lock --ttl 15`
/// (`integration_tests::etcd_lock`), the baseline a plain distributed lock gives, for the
/// rows it has an answer to. Its trials are independent (each on a fresh lock and sign log)
/// and their figures are whole seconds of TTL, so they run side by side: a graceful trial
/// waits out the harness's 40 s for a hand-over that etcdctl never makes, and one after
/// another they would cost minutes. Its overlaps are the baseline's finding, not a failure
/// of this run. Without etcd installed the column stays "-" and a note says why.
fn etcd_column(mode: Mode) -> Column {
    let mut column = Column::default();
    progress(format!(
        "=== etcd lock: {} crash and {} graceful trials, side by side ===",
        mode.crash_trials, mode.graceful_trials
    ));
    let etcd = match std::panic::catch_unwind(etcd_lock::Etcd::start) {
        Ok(etcd) => etcd,
        Err(_) => {
            column
                .notes
                .push("etcd did not start (see the panic above): no baseline".into());
            return column;
        }
    };
    let faults = std::iter::repeat_n(etcd_lock::Fault::Crash, mode.crash_trials).chain(
        std::iter::repeat_n(etcd_lock::Fault::Graceful, mode.graceful_trials),
    );
    let outcomes: Vec<Result<etcd_lock::Trial, etcd_lock::Fault>> = std::thread::scope(|scope| {
        let etcd = &etcd;
        let runs: Vec<_> = faults
            .map(|fault| (fault, scope.spawn(move || etcd_lock::trial(etcd, fault))))
            .collect();
        runs.into_iter()
            .map(|(fault, run)| run.join().map_err(|_| fault))
            .collect()
    });
    let mut crash = Vec::new();
    let mut graceful = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok(trial) => {
                progress(format!(
                    "etcd lock {:?}: standby {}, {} s of session lease left at the fault; \
                     overlap {}; holder's client {}",
                    trial.fault,
                    trial.latency.map_or(
                        format!("never signed within {} s", etcd_lock::GIVE_UP.as_secs()),
                        |l| format!("signed after {l:.3} s")
                    ),
                    trial
                        .remaining_at_fault
                        .map_or("?".into(), |r| format!("{r:.0}")),
                    trial
                        .overlap_secs
                        .map_or("-".into(), |o| format!("{o:.3} s")),
                    if trial.holder_client_survived {
                        "survived"
                    } else {
                        "gone"
                    },
                ));
                match trial.fault {
                    etcd_lock::Fault::Crash => crash.push(trial),
                    etcd_lock::Fault::Graceful => graceful.push(trial),
                }
            }
            Err(fault) => column.notes.push(format!(
                "an etcd lock {fault:?} trial failed (see the panic above)"
            )),
        }
    }
    let cells = &mut column.cells;
    let never = |trials: &[etcd_lock::Trial]| {
        Cell::new(
            format!(
                "never within {} s (n={})",
                etcd_lock::GIVE_UP.as_secs(),
                trials.len()
            ),
            Some(false),
        )
    };
    if !crash.is_empty() {
        cells.insert(
            Row::Crash,
            if crash.iter().all(|t| t.latency.is_none()) {
                never(&crash)
            } else {
                latency_cell(
                    crash.iter().map(|t| t.latency),
                    "s",
                    crash.len(),
                    |_, p99| p99 <= secs(D) + 0.5,
                )
            },
        );
        // etcdctl never stops its command: a killed holder's client signs on.
        let survived = crash.iter().filter(|t| t.holder_client_survived).count();
        cells.insert(
            Row::FenceLag,
            Cell::new(
                format!(
                    "never: the client outlived etcdctl in {survived} of {}",
                    crash.len()
                ),
                Some(survived == 0),
            ),
        );
    }
    if !graceful.is_empty() {
        cells.insert(
            Row::Graceful,
            if graceful.iter().all(|t| t.latency.is_none()) {
                never(&graceful)
            } else {
                latency_cell(
                    graceful.iter().map(|t| t.latency.map(|l| l * 1e3)),
                    "ms",
                    graceful.len(),
                    |p50, p99| p50 <= 50.0 && p99 <= 200.0,
                )
            },
        );
    }
    let trials = crash.len() + graceful.len();
    if trials > 0 {
        let overlapped = crash
            .iter()
            .chain(&graceful)
            .filter(|t| t.overlap_secs.is_some_and(|o| o > 0.0))
            .count();
        cells.insert(
            Row::Overlaps,
            Cell::new(
                format!("overlaps: {overlapped} of {trials} trials"),
                Some(overlapped == 0),
            ),
        );
    }
    column
}

/// The whole report: a heading, the Markdown table, and which figures miss their target.
fn render(args: &Args, columns: &BTreeMap<StoreKind, Column>, etcd: &Column) -> String {
    let mode = args.mode;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "leased fleet bench ({} mode): D = {} s, R = {} s; {} crash trials ({} at a time), {} \
         graceful trials, herds of {} and {} daemons over {HERD_IDENTITIES} identities, {} s idle \
         window; {} cores\n",
        mode.name,
        D.as_secs(),
        R.as_secs(),
        mode.crash_trials,
        mode.crash_batch,
        mode.graceful_trials,
        HERDS[0],
        HERDS[1],
        mode.idle_window.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let empty = Column::default();
    let column = |kind| columns.get(&kind).unwrap_or(&empty);
    let shown = |c: &Column, row: Row| match c.cells.get(&row) {
        Some(cell) if cell.met == Some(false) => format!("{} ✗", cell.text),
        Some(cell) => cell.text.clone(),
        None => "-".to_string(),
    };
    let mut rows = vec![[
        "measure".to_string(),
        "sqlite".to_string(),
        "Azurite".to_string(),
        "etcd lock".to_string(),
        "target".to_string(),
    ]];
    for row in Row::ALL {
        rows.push([
            row.measure().to_string(),
            shown(column(StoreKind::Sqlite), row),
            shown(column(StoreKind::Blob), row),
            shown(etcd, row),
            row.target().to_string(),
        ]);
    }
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..5).map(width).collect();
    for (n, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(text, w)| format!("{text}{}", " ".repeat(w - text.chars().count())))
            .collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
        if n == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
        }
    }
    let _ = writeln!(
        out,
        "\n✗: misses its target. \"-\": not run, or no such figure for the etcd lock (it \
         takes one lock: no herds). Only the leased columns' overlaps fail the run."
    );
    let missed: Vec<String> = columns
        .iter()
        .flat_map(|(kind, c)| {
            c.cells
                .iter()
                .filter(|(_, cell)| cell.met == Some(false))
                .map(move |(row, _)| format!("{}: {}", kind.title(), row.measure()))
        })
        .collect();
    if !missed.is_empty() {
        let _ = writeln!(out, "Targets leased missed ({}):", missed.len());
        for m in missed {
            let _ = writeln!(out, "- {m}");
        }
    }
    let notes = columns
        .iter()
        .map(|(kind, c)| (kind.title(), c))
        .chain([("etcd lock", etcd)]);
    for (title, column) in notes {
        if !column.notes.is_empty() {
            let _ = writeln!(out, "Looked wrong on {title}:");
            for note in &column.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
    }
    out
}
