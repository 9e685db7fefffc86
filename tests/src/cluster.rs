//! A local consortium for process-level tests and benchmarks: identities in a `dir:` secret
//! store and a `sqlite:` lease store (or any stores, [`Stores::Specs`]: Azurite and the Key
//! Vault double), and real `leased` daemons (the `leased-host` binary) each supervising a
//! stand-in client that logs its signing to one shared log.
//!
//! Every daemon and everything it started is stopped when the [`Cluster`] is dropped, even
//! when a test panics: daemons are SIGCONTed and SIGKILLed, and their guards, seeing the
//! daemon's pipe close, stop the clients.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use shared::azure::AzureOptions;
use shared::keyfile::CONTENT_TYPE_RAW_HEX;
use shared::lease::{meta, LeaseState};
use shared::secret::{SecretValue, Tags};
use shared::spec::{LeaseStoreSpec, SecretStoreSpec};
use shared::{Address, Name, ValidatorKey};

use crate::overlap::{self, CheckParams, Report};

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub identities: usize,
    pub daemons: usize,
    /// D, 15–60.
    pub duration_secs: u64,
    /// Extra TOML lines for the `[client]` table.
    pub client_extra: String,
    /// The clients take the key over this engine-signer RPC (`host:port`), not from a
    /// file.
    pub engine_signer_rpc: Option<String>,
    /// Extra arguments for the stand-in client.
    pub client_args: Vec<String>,
    /// Give each daemon its own loopback HTTP port (else port 0, unreachable from here).
    pub http: bool,
    /// Extra environment for every daemon (e.g. `NOTIFY_SOCKET`).
    pub env: Vec<(String, String)>,
    /// `leased` options before `run` (e.g. `--log-format json`).
    pub daemon_args: Vec<String>,
    /// Where the identities and leases live.
    pub stores: Stores,
    /// Identities someone else provisioned (`orchestrator init`); `None`: the cluster
    /// provisions `identities` fresh ones itself.
    pub provisioned: Option<Vec<(Name, Address)>>,
    /// The programs run for the daemon and its client.
    pub programs: Programs,
}

/// The programs a cluster runs: by default this crate's `leased-host` and `standin-client`
/// binaries; a multi-call binary (the chaos harness) names itself for both.
#[derive(Debug, Clone)]
pub struct Programs {
    /// Runs `leased` (its `run`, `guard` and `client-exec` subcommands).
    pub leased: PathBuf,
    /// The stand-in client: a program and the arguments that precede the stand-in's own.
    pub standin: Vec<String>,
}

impl Default for Programs {
    fn default() -> Self {
        Self {
            leased: crate::bin_path("leased-host"),
            standin: vec![crate::bin_path("standin-client").display().to_string()],
        }
    }
}

/// The stores a cluster uses.
#[derive(Debug, Clone, Default)]
pub enum Stores {
    /// `dir:` and `sqlite:` in the cluster's temporary directory.
    #[default]
    Local,
    /// Any specs, with the `[azure]` settings the daemons (and the test's own handles) use.
    Specs {
        leases: String,
        secrets: String,
        azure: Box<AzureOptions>,
        /// The `[azure]` table's lines for the daemons' config files.
        azure_toml: String,
    },
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            identities: 3,
            daemons: 4,
            duration_secs: 15,
            client_extra: String::new(),
            engine_signer_rpc: None,
            client_args: Vec::new(),
            http: false,
            env: Vec::new(),
            daemon_args: Vec::new(),
            stores: Stores::Local,
            provisioned: None,
            programs: Programs::default(),
        }
    }
}

/// One daemon process.
#[derive(Debug)]
pub struct Daemon {
    pub node: String,
    /// Its HTTP endpoint, when the spec asked for one.
    pub http: Option<std::net::SocketAddr>,
    pub config: PathBuf,
    pub stderr: PathBuf,
    child: Option<Child>,
    stopped: bool,
}

impl Daemon {
    pub fn pid(&self) -> Option<Pid> {
        self.child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(pid, signal);
        }
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        self.signal(Signal::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    pub fn term(&self) {
        self.signal(Signal::SIGTERM);
    }

    pub fn stop(&mut self) {
        self.signal(Signal::SIGSTOP);
        self.stopped = true;
    }

    pub fn cont(&mut self) {
        self.signal(Signal::SIGCONT);
        self.stopped = false;
    }

    /// Waits up to `timeout` for the process to exit; its exit code, if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Some(status.code().unwrap_or(-1));
                }
            } else {
                return None;
            }
            sleep(Duration::from_millis(20));
        }
        None
    }

    /// Its exit code if it has exited (reaping it), without waiting; -1 for a signal.
    pub fn try_exit(&mut self) -> Option<i32> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status.code().unwrap_or(-1))
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The daemon's fence guard: its child process running `guard`, if there is one now.
    pub fn guard_pid(&self) -> Option<Pid> {
        let me = self.pid()?;
        children_of(me).into_iter().find(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    // `leased guard …`, or the guard program (`…-guard …`).
                    let mut words = c.split(|b| *b == 0);
                    let program = words.next().unwrap_or_default();
                    program.ends_with(b"-guard") || words.any(|w| w == b"guard")
                })
                .unwrap_or(false)
        })
    }

    /// The client: the guard's child that is not its key janitor, if there is one now.
    pub fn client_pid(&self) -> Option<Pid> {
        let guard = self.guard_pid()?;
        children_of(guard).into_iter().find(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    !c.split(|b| *b == 0)
                        .any(|w| w == leased::guard::JANITOR_SUBCOMMAND.as_bytes())
                })
                .unwrap_or(false)
        })
    }

    /// What the daemon wrote to stderr so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.stopped {
            self.signal(Signal::SIGCONT);
        }
        self.kill9();
    }
}

/// A line of the shared sign log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignLine {
    pub address: String,
    pub at: u64,
    pub node: String,
    pub pid: u32,
}

/// The running consortium.
#[derive(Debug)]
pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// Identity and address, in index order.
    pub identities: Vec<(Name, Address)>,
    pub daemons: Vec<Daemon>,
    pub sign_log: PathBuf,
    spec: ClusterSpec,
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the stand-in client's timestamps.
pub fn mono_now() -> u64 {
    leased::guard::MonoNanos::now().as_nanos()
}

impl Cluster {
    /// Provisions the identities and starts the daemons (node names `vm-1`, `vm-2`, …).
    pub fn start(spec: ClusterSpec) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let identities = match &spec.provisioned {
            Some(given) => given.clone(),
            None => {
                let (leases, secrets, azure) = specs(dir.path(), &spec.stores);
                provision(&leases, &secrets, &azure, spec.identities)
            }
        };
        let sign_log = dir.path().join("sign.log");
        let mut cluster = Cluster {
            dir,
            identities,
            daemons: Vec::new(),
            sign_log,
            spec,
        };
        for i in 1..=cluster.spec.daemons {
            let d = cluster.spawn_daemon(&format!("vm-{i}"));
            cluster.daemons.push(d);
        }
        cluster
    }

    fn config_text(&self, node: &str, runtime: &Path, listen: &str) -> String {
        let (leases, secrets, _) = specs(self.dir.path(), &self.spec.stores);
        let (leases, secrets) = (leases.to_string(), secrets.to_string());
        let azure = match &self.spec.stores {
            Stores::Local => String::new(),
            Stores::Specs { azure_toml, .. } => format!("\n[azure]\n{azure_toml}\n"),
        };
        let mut command = self.spec.programs.standin.clone();
        command.extend([
            "--address".into(),
            "{address}".into(),
            "--log".into(),
            self.sign_log.display().to_string(),
            "--node".into(),
            node.into(),
        ]);
        let mut extra = self.spec.client_extra.clone();
        match &self.spec.engine_signer_rpc {
            Some(rpc) => extra.push_str(&format!("engine_signer_rpc = \"http://{rpc}\"\n")),
            None => command.extend(["--key-file".into(), "{key_file}".into()]),
        }
        command.extend(self.spec.client_args.iter().cloned());
        let command: Vec<String> = command.iter().map(|a| format!("{a:?}")).collect();
        format!(
            "node = {node:?}\nruntime_dir = {runtime:?}\n\n[store]\nleases = {leases:?}\nsecrets = {secrets:?}\n\n\
             [identity]\npool = \"m0-\"\n\n[lease]\nduration_secs = {d}\n\n\
             [client]\nformat = \"raw-hex\"\ncommand = [{command}]\n{extra}\n\n[http]\nlisten = {listen:?}\n{azure}",
            runtime = runtime.display().to_string(),
            d = self.spec.duration_secs,
            command = command.join(", "),
        )
    }

    /// Writes a config for `node` and starts its daemon.
    pub fn spawn_daemon(&self, node: &str) -> Daemon {
        self.spawn_daemon_edited(node, |text| text)
    }

    /// As [`Cluster::spawn_daemon`], with the config text passed through `edit` first (a
    /// daemon whose client differs from the others', say).
    pub fn spawn_daemon_edited(&self, node: &str, edit: impl FnOnce(String) -> String) -> Daemon {
        self.spawn_daemon_with(node, edit, &[], None)
    }

    /// As [`Cluster::spawn_daemon_edited`], with extra environment variables for the daemon
    /// (on top of the spec's), and as user `uid` (and its group of the same number) if given.
    pub fn spawn_daemon_with(
        &self,
        node: &str,
        edit: impl FnOnce(String) -> String,
        env: &[(&str, &str)],
        uid: Option<u32>,
    ) -> Daemon {
        let root = self.dir.path();
        let runtime = root.join(format!("run-{node}"));
        let config = root.join(format!("{node}.toml"));
        let http = self.spec.http.then(unused_loopback_addr);
        let listen = http.map_or("127.0.0.1:0".to_string(), |a| a.to_string());
        fs::write(&config, edit(self.config_text(node, &runtime, &listen))).expect("write config");
        let stderr = root.join(format!("{node}.stderr"));
        let mut command = Command::new(&self.spec.programs.leased);
        if let Some(uid) = uid {
            std::os::unix::process::CommandExt::uid(&mut command, uid);
            std::os::unix::process::CommandExt::gid(&mut command, uid);
        }
        let child = command
            .args(&self.spec.daemon_args)
            .args(["run", "--config"])
            .arg(&config)
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Appended, not truncated: a restarted daemon's earlier log is kept, and with
            // it where that daemon saw its client's process group gone.
            .stderr(
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&stderr)
                    .expect("stderr file"),
            )
            .spawn()
            .expect("start leased-host");
        Daemon {
            node: node.into(),
            http,
            config,
            stderr,
            child: Some(child),
            stopped: false,
        }
    }

    /// Starts `node` afresh (after it was killed or stopped), replacing its old handle.
    pub fn restart(&mut self, node: &str) {
        let fresh = self.spawn_daemon(node);
        match self.daemons.iter_mut().find(|d| d.node == node) {
            Some(slot) => *slot = fresh,
            None => self.daemons.push(fresh),
        }
    }

    /// The runtime directory of `node` (its lock file and key file).
    pub fn runtime_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("run-{node}"))
    }

    pub fn daemon(&mut self, node: &str) -> &mut Daemon {
        self.daemons
            .iter_mut()
            .find(|d| d.node == node)
            .expect("no such daemon")
    }

    /// What daemon `node` wrote to stderr so far.
    pub fn daemon_log(&self, node: &str) -> String {
        self.daemons
            .iter()
            .find(|d| d.node == node)
            .map(Daemon::log_text)
            .unwrap_or_default()
    }

    /// The sign log's lines.
    pub fn sign_lines(&self) -> Vec<SignLine> {
        let text = fs::read_to_string(&self.sign_log).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                if w.first() != Some(&"signing") {
                    return None;
                }
                let field = |k: &str| {
                    w.iter()
                        .find_map(|x| x.strip_prefix(k))
                        .map(str::to_string)
                        .unwrap_or_default()
                };
                Some(SignLine {
                    address: w.get(2)?.to_ascii_lowercase(),
                    at: w.get(4)?.parse().ok()?,
                    node: field("node="),
                    pid: field("pid=").parse().unwrap_or(0),
                })
            })
            .collect()
    }

    /// Who signed with each identity last (address → line), among lines after `since`.
    pub fn signers_since(&self, since: u64) -> BTreeMap<String, SignLine> {
        let mut out = BTreeMap::new();
        for l in self.sign_lines().into_iter().filter(|l| l.at > since) {
            out.insert(l.address.clone(), l);
        }
        out
    }

    /// Lease holders as the store shows them: identity → holder node, for leased records.
    pub fn holders(&self) -> BTreeMap<String, String> {
        let (leases, _, azure) = specs(self.dir.path(), &self.spec.stores);
        let records = block_on(async {
            let store = leases.open(&azure).expect("open leases");
            store.list().await
        })
        .expect("list leases");
        records
            .into_iter()
            .filter(|r| r.state == LeaseState::Leased)
            .map(|r| {
                (
                    r.identity.to_string(),
                    r.metadata
                        .get(meta::HOLDER_NODE)
                        .cloned()
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Waits until every identity is signed by a distinct node, after `since`; returns
    /// address → node.
    pub fn wait_all_signing(&self, since: u64, timeout: Duration) -> BTreeMap<String, String> {
        wait_for(timeout, || {
            let s = self.signers_since(since);
            let nodes: std::collections::BTreeSet<&String> = s.values().map(|l| &l.node).collect();
            (s.len() == self.identities.len() && nodes.len() == s.len())
                .then(|| s.into_iter().map(|(a, l)| (a, l.node)).collect())
        })
        .unwrap_or_else(|| {
            panic!(
                "not every identity was signing within {timeout:?}\n{}",
                self.diagnostics()
            )
        })
    }

    /// The first line after `since` where `address` is signed by a node other than `not`.
    pub fn wait_taken_over(
        &self,
        address: &str,
        not: &str,
        since: u64,
        timeout: Duration,
    ) -> SignLine {
        wait_for(timeout, || {
            self.sign_lines()
                .into_iter()
                .find(|l| l.at > since && l.address == address && l.node != not)
        })
        .unwrap_or_else(|| {
            panic!(
                "{address} was not taken over from {not} within {timeout:?}\n{}",
                self.diagnostics()
            )
        })
    }

    /// The overlap checker over the sign log; panics with the overlaps. A SIGKILLed
    /// client leaves no last line, so its signing is taken to run one period past its last
    /// line, unless its daemon logged its process group gone earlier: a hand-over faster
    /// than a period (a release nudge) would otherwise show an overlap that never was.
    pub fn assert_no_overlap(&self) -> Report {
        let text = fs::read_to_string(&self.sign_log).unwrap_or_default();
        let signings = overlap::parse_log("sign.log", &text).unwrap_or_else(|e| panic!("{e}"));
        let gone: Vec<overlap::GroupGone> = self
            .daemons
            .iter()
            .flat_map(|d| {
                let label = format!("{}.stderr", d.node);
                overlap::groups_gone(&d.node, &label, &d.log_text())
            })
            .collect();
        let params = CheckParams::default();
        let signings = overlap::end_at_groups_gone(&signings, &gone, params.tail);
        overlap::check(&signings, params).unwrap_or_else(|msg| panic!("{msg}"))
    }

    /// Every daemon's stderr, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for d in &self.daemons {
            let text = d.log_text();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            out.push_str(&format!("--- {} (last lines)\n", d.node));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// A loopback address that was free a moment ago and that no daemon of this process was
/// given before. Once a probe's listener is closed the kernel may offer its port again, so
/// two daemons of a large cluster could be handed one port, and the second would fail to
/// start (seen with 120 daemons started at once).
fn unused_loopback_addr() -> std::net::SocketAddr {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port");
        if given.insert(addr.port()) {
            return addr;
        }
    }
}

/// Polls `f` every 20 ms until it gives a value or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(20));
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// The stores' specs and Azure settings.
fn specs(root: &Path, stores: &Stores) -> (LeaseStoreSpec, SecretStoreSpec, AzureOptions) {
    match stores {
        Stores::Local => (
            LeaseStoreSpec::Sqlite(root.join("leases.db")),
            SecretStoreSpec::Dir(root.join("secrets")),
            AzureOptions::default(),
        ),
        Stores::Specs {
            leases,
            secrets,
            azure,
            ..
        } => (
            leases.parse().expect("a lease store spec"),
            secrets.parse().expect("a secret store spec"),
            (**azure).clone(),
        ),
    }
}

/// Identities `m0-v0`, `m0-v1`, … with fresh keys, as `orchestrator init` leaves them.
fn provision(
    leases: &LeaseStoreSpec,
    secrets: &SecretStoreSpec,
    azure: &AzureOptions,
    n: usize,
) -> Vec<(Name, Address)> {
    block_on(async {
        let secrets = secrets.open(azure).expect("secret store");
        let leases = leases.open(azure).expect("lease store");
        let mut out = Vec::new();
        for i in 0..n {
            let id = Name::new(format!("m0-v{i}")).expect("name");
            let key = ValidatorKey::generate();
            let address = key.address();
            let mut tags = Tags::new();
            tags.insert("address".into(), address.to_string());
            secrets
                .create_if_absent(
                    &id,
                    &SecretValue::new(key.expose_hex()),
                    Some(CONTENT_TYPE_RAW_HEX),
                    &tags,
                )
                .await
                .expect("store secret");
            leases.create_record(&id).await.expect("lease record");
            out.push((id, address));
        }
        out
    })
}

/// A GET of `path` on loopback through reqwest (the shared loopback transport), with 2 s
/// to connect and to answer; the body, if the answer was 200.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    block_on(async {
        let client =
            shared::net::loopback_http_client(Duration::from_secs(2), Duration::from_secs(2))
                .expect("a loopback HTTP client");
        let answer = client
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .ok()?;
        if answer.status() != 200 {
            return None;
        }
        answer.text().await.ok()
    })
}

/// Resident memory of a process, in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The processes whose parent is `parent` (from /proc/PID/stat).
pub fn children_of(parent: Pid) -> Vec<Pid> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| process_parent(Pid::from_raw(*pid)) == Some(parent))
        .map(Pid::from_raw)
        .collect()
}

/// A process's parent and state letter, from /proc/PID/stat.
fn stat_fields(pid: Pid) -> Option<(char, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the fields follow the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn process_parent(pid: Pid) -> Option<Pid> {
    stat_fields(pid).map(|(_, ppid)| Pid::from_raw(ppid))
}

/// Whether `pid` is gone or a zombie: either way it runs no more code.
pub fn is_dead(pid: Pid) -> bool {
    !matches!(stat_fields(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// Waits until `pid` is dead; how long that took, or `None` after `timeout`.
pub fn wait_dead(pid: Pid, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if is_dead(pid) {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        sleep(Duration::from_millis(2));
    }
}
