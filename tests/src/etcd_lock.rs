//! The baseline the fleet benchmark compares `leased` with: etcd's own lock around the same
//! stand-in validator client. Each node is
//!
//! ```text
//! etcdctl --endpoints=127.0.0.1:PORT lock --ttl 15 LOCK -- standin-client --address ADDR --log FILE --node NAME
//! ```
//!
//! `etcdctl lock` (3.4) takes the lock on a session lease of `--ttl` seconds, which it keeps
//! alive while it runs, then runs the command and waits for it. It does not fence the
//! command: nothing stops it when the lease is lost or when etcdctl itself dies. These
//! trials measure what that means for one identity. What they find (tests/tests/etcd_lock.rs
//! asserts it): after a SIGKILL of the holder's etcdctl the standby signs once the lease
//! runs out (10–15 s, by where the fault fell in the keep-alive cycle, plus 0.6–1.4 s),
//! while the orphaned client keeps signing beside it; a SIGTERM changes nothing, because
//! etcdctl catches it but then only waits for its command, so the standby never signs.
//!
//! A trial starts a holder node, waits until its client signs, starts a standby node and
//! waits until its etcdctl is queued on the lock, then, at a random moment within
//! [`FAULT_WINDOW`] of the holder's first signature (or at once, if queuing took longer),
//! sends the holder's etcdctl (only it, not its client) the fault's signal. It times the standby's first signature from the
//! fault and then watches both clients for [`OBSERVE`] more. Each node leads its own
//! process group, which is SIGKILLed when the trial ends, so nothing outlives a trial.
//!
//! All times are `CLOCK_MONOTONIC`, the stand-in's clock ([`crate::cluster::mono_now`]).

use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::cluster::{is_dead, mono_now, wait_for};
use crate::overlap::{self, CheckParams, Signing};

/// The lock's session TTL: `leased`'s default lease duration D, so both sides lose a dead
/// holder's lease after the same time.
pub const LOCK_TTL_SECS: u64 = 15;
/// How long a trial waits for the standby's client to sign after the fault.
pub const GIVE_UP: Duration = Duration::from_secs(40);
/// The fault comes at a random moment this long after the holder's client first signed,
/// so that it falls anywhere in the session's keep-alive cycle (every TTL / 3).
pub const FAULT_WINDOW: Duration = Duration::from_secs(5);
/// How long both clients are watched once the standby's client signs: the overlap is
/// measured within it, so an overlap this long means the holder's client never stopped.
pub const OBSERVE: Duration = Duration::from_secs(2);

/// The identity both stand-ins sign with; any address does, as they are given no key.
const ADDRESS: &str = "0x00000000000000000000000000000000000e7cd0";
const HOLDER: &str = "etcd-1";
const STANDBY: &str = "etcd-2";
/// How long etcd may take to serve, and a node's first step (sign, queue) may take.
const STARTUP: Duration = Duration::from_secs(15);

/// One etcd member on loopback, its data in a temporary directory; killed on drop.
#[derive(Debug)]
pub struct Etcd {
    endpoint: String,
    etcdctl: PathBuf,
    dir: tempfile::TempDir,
    child: Child,
    /// Numbers the trials' locks: a killed holder's key outlives its trial by up to a TTL.
    locks: AtomicU32,
}

impl Etcd {
    /// Starts etcd on two free ports of 127.0.0.1 (client and peer) and waits until
    /// `etcdctl endpoint health` passes. Panics naming `ops/install-test-deps.sh` when etcd
    /// is not installed.
    pub fn start() -> Self {
        let (etcd, etcdctl) = crate::tools::etcd();
        let dir = tempfile::tempdir().expect("tempdir");
        let client = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let log = fs::File::create(dir.path().join("etcd.log")).expect("etcd's log file");
        let child = Command::new(&etcd)
            .args(["--name", "baseline", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .arg(format!("--initial-cluster=baseline={peer}"))
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("share etcd's log file"))
            .stderr(log)
            // Its own group, so that a Ctrl-C meant for the test runner does not reach it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", etcd.display()));
        let mut etcd = Etcd {
            endpoint: client.trim_start_matches("http://").to_string(),
            etcdctl,
            dir,
            child,
            locks: AtomicU32::new(0),
        };
        let ready = wait_for(STARTUP, || {
            if let Ok(Some(status)) = etcd.child.try_wait() {
                panic!("etcd exited ({status}) at start:\n{}", etcd.log_text());
            }
            let health = etcd
                .etcdctl()
                .args([
                    "--dial-timeout=1s",
                    "--command-timeout=1s",
                    "endpoint",
                    "health",
                ])
                .output();
            health.is_ok_and(|o| o.status.success()).then_some(())
        });
        if ready.is_none() {
            panic!(
                "etcd was not healthy within {STARTUP:?}:\n{}",
                etcd.log_text()
            );
        }
        etcd
    }

    /// `host:port` of the client URL, as `etcdctl --endpoints` takes it.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `etcdctl` with `--endpoints` set to this etcd, for the caller's subcommand.
    pub fn etcdctl(&self) -> Command {
        let mut command = Command::new(&self.etcdctl);
        // The v3 API is 3.4's default; an ETCDCTL_API=2 in the caller's environment would
        // turn every command below into a different one.
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .stdin(Stdio::null());
        command
    }

    /// What etcd logged so far (warnings and errors only).
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// The keys under `lock/`, one per node holding or queued on the lock, oldest (the
    /// holder's) first: (create revision, lease id).
    fn lock_keys(&self, lock: &str) -> Vec<(u64, i64)> {
        let Some(v) = self.json(&["get", "--prefix", &format!("{lock}/")]) else {
            return Vec::new();
        };
        let mut keys: Vec<(u64, i64)> = v["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| Some((kv["create_revision"].as_u64()?, kv["lease"].as_i64()?)))
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Seconds left on lease `id`, as etcd reports them: whole seconds, rounded down.
    fn lease_remaining(&self, id: i64) -> Option<f64> {
        let v = self.json(&["lease", "timetolive", &format!("{id:x}")])?;
        let ttl = v["ttl"].as_i64()?;
        // -1: the lease has already expired.
        (ttl >= 0).then_some(ttl as f64)
    }

    /// `etcdctl ARGS -w json`'s answer, or `None` if it failed.
    fn json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let out = self
            .etcdctl()
            .args(args)
            .args(["-w", "json"])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the holder's etcdctl is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL: etcdctl crashed (or was killed alone); its command is left running.
    Crash,
    /// SIGTERM: a graceful stop asked of etcdctl alone.
    Graceful,
}

impl Fault {
    fn signal(self) -> Signal {
        match self {
            Fault::Crash => Signal::SIGKILL,
            Fault::Graceful => Signal::SIGTERM,
        }
    }
}

/// The outcome of one trial.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub fault: Fault,
    /// Seconds from the fault until the standby's client first signed; `None` if it did
    /// not within [`GIVE_UP`].
    pub latency: Option<f64>,
    /// Seconds left on the holder's session lease just before the fault, as `etcdctl lease
    /// timetolive` gives them: whole seconds, rounded down by etcd. `None` if etcd did not
    /// answer.
    pub remaining_at_fault: Option<f64>,
    /// Seconds during which both clients signed, within [`OBSERVE`] after the standby's
    /// first signature (each client's signing counted to 50 ms after its last line, as the
    /// overlap checker counts it). `Some(0.0)`: no overlap; `None`: the standby never signed.
    pub overlap_secs: Option<f64>,
    /// Whether the holder's client was still running when the trial ended.
    pub holder_client_survived: bool,
    /// Whether the holder's etcdctl was still running when the trial ended.
    pub holder_etcdctl_survived: bool,
}

/// `n` trials that SIGKILL the holder's etcdctl.
pub fn crash_trials(etcd: &Etcd, n: usize) -> Vec<Trial> {
    (0..n).map(|_| trial(etcd, Fault::Crash)).collect()
}

/// `n` trials that SIGTERM the holder's etcdctl.
pub fn graceful_trials(etcd: &Etcd, n: usize) -> Vec<Trial> {
    (0..n).map(|_| trial(etcd, Fault::Graceful)).collect()
}

/// One trial on a fresh lock (see the module documentation).
pub fn trial(etcd: &Etcd, fault: Fault) -> Trial {
    let standin = crate::bin_path("standin-client");
    let lock = format!("baseline-{}", etcd.locks.fetch_add(1, Ordering::Relaxed));
    let dir = tempfile::tempdir().expect("tempdir");
    let sign_log = dir.path().join("sign.log");
    let run = Run {
        etcd,
        dir: dir.path(),
        sign_log: &sign_log,
    };

    let mut holder = Node::spawn(etcd, &lock, HOLDER, &sign_log, &standin, dir.path());
    let first_signed = wait_for(STARTUP, || run.first_line_of(HOLDER))
        .unwrap_or_else(|| run.fail("the holder's client did not sign"))
        .at;
    let standby = Node::spawn(etcd, &lock, STANDBY, &sign_log, &standin, dir.path());
    // Queued: the standby's key sits behind the holder's. The holder's key is the older.
    let holder_lease = wait_for(STARTUP, || {
        let keys = etcd.lock_keys(&lock);
        (keys.len() == 2).then(|| keys[0].1)
    })
    .unwrap_or_else(|| run.fail("the standby's etcdctl did not queue on the lock"));

    let fault_at = first_signed + random_below(FAULT_WINDOW);
    sleep(Duration::from_nanos(fault_at.saturating_sub(mono_now())));
    let remaining_at_fault = etcd.lease_remaining(holder_lease);
    let faulted = mono_now();
    kill(holder.pid(), fault.signal()).expect("signal the holder's etcdctl");

    let taken = wait_for(GIVE_UP, || run.first_line_of(STANDBY));
    let latency = taken
        .as_ref()
        .map(|s| Duration::from_nanos(s.at.saturating_sub(faulted)).as_secs_f64());
    let overlap_secs = taken.map(|first| {
        let until = first.at + nanos(OBSERVE);
        sleep(Duration::from_nanos(until.saturating_sub(mono_now())));
        let seen: Vec<Signing> = run.lines().into_iter().filter(|s| s.at <= until).collect();
        overlap_seconds(&seen)
    });

    let holder_client = run
        .lines()
        .iter()
        .find(|s| s.writer == HOLDER)
        .and_then(|s| s.pid);
    let trial = Trial {
        fault,
        latency,
        remaining_at_fault,
        overlap_secs,
        holder_client_survived: holder_client
            .is_some_and(|pid| !is_dead(Pid::from_raw(pid as i32))),
        holder_etcdctl_survived: holder.is_running(),
    };
    // Both process groups are SIGKILLed, orphaned clients included.
    drop(standby);
    drop(holder);
    trial
}

/// One trial's sign log, read as it grows.
struct Run<'a> {
    etcd: &'a Etcd,
    dir: &'a Path,
    sign_log: &'a Path,
}

impl Run<'_> {
    /// The sign log's whole lines so far.
    fn lines(&self) -> Vec<Signing> {
        let text = fs::read_to_string(self.sign_log).unwrap_or_default();
        // A line being appended may be read half-written: stop at the last newline.
        let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        overlap::parse_log("sign.log", whole).unwrap_or_else(|e| panic!("{e}"))
    }

    fn first_line_of(&self, node: &str) -> Option<Signing> {
        self.lines()
            .into_iter()
            .find(|s| s.writer == node && !s.stop)
    }

    /// Panics with what the nodes and etcd said.
    fn fail(&self, what: &str) -> ! {
        let mut msg = format!("{what}\n");
        for node in [HOLDER, STANDBY] {
            let out = fs::read_to_string(self.dir.join(format!("{node}.out"))).unwrap_or_default();
            msg.push_str(&format!("--- {node} (etcdctl and client output)\n{out}"));
        }
        msg.push_str(&format!("--- etcd\n{}", self.etcd.log_text()));
        panic!("{msg}")
    }
}

/// One `etcdctl lock` running a stand-in, leading a process group of its own.
struct Node {
    child: Child,
}

impl Node {
    fn spawn(
        etcd: &Etcd,
        lock: &str,
        name: &str,
        sign_log: &Path,
        standin: &Path,
        dir: &Path,
    ) -> Self {
        let out = fs::File::create(dir.join(format!("{name}.out"))).expect("a node's output");
        let child = etcd
            .etcdctl()
            .args(["lock", &format!("--ttl={LOCK_TTL_SECS}"), lock])
            // Everything after `--` is the command, not etcdctl's flags.
            .arg("--")
            .arg(standin)
            .args(["--address", ADDRESS, "--log"])
            .arg(sign_log)
            .args(["--node", name])
            .stdout(out.try_clone().expect("share a node's output"))
            .stderr(out)
            // The client joins etcdctl's group, so a SIGKILL to the group stops both even
            // after etcdctl alone was killed and the client was orphaned.
            .process_group(0)
            .spawn()
            .expect("start etcdctl lock");
        Node { child }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // etcdctl leads the group, so its pid is the group's.
        let _ = killpg(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Seconds during which the holder's and the standby's signing intervals overlap.
fn overlap_seconds(signings: &[Signing]) -> f64 {
    let intervals = overlap::intervals(signings, CheckParams::default());
    overlap::overlaps(&intervals)
        .iter()
        .map(|(a, b)| Duration::from_nanos(a.end.min(b.end) - b.start).as_secs_f64())
        .sum()
}

/// A duration uniformly below `bound`, in nanoseconds, from the standard library's
/// randomly seeded hasher (no seed to replay: the processes' timing is real anyway).
fn random_below(bound: Duration) -> u64 {
    let draw = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    draw % nanos(bound).max(1)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}
