//! `leased run --config FILE`: the daemon's configuration, read once and validated whole.
//!
//! This module owns the file's names and every rule about their values. It reports every
//! problem it finds, each with the setting's dotted name (`lease.duration_secs: 10 is
//! outside 15–60`), never just the first; the binary prints them and exits 64. It never
//! reads key material: the password file is only a path handed to the client.
//!
//! ```toml
//! node = "vm-1"                      # optional; default: the hostname
//! runtime_dir = "/run/leased"        # lock file, key file; must be private (0700)
//! [store]
//! leases  = "sqlite:/var/lib/leased/leases.db"
//! secrets = "dir:/var/lib/leased/secrets"
//! [identity]
//! pool = "m0-"                       # this node takes identities whose id starts with it
//! quarantine_secs = 0                # wait between acquiring and handing the key over
//! [lease]
//! duration_secs = 15                 # D, 15–60
//! renew_every_secs = 5               # R; default D/3 (less if M > D/3)
//! margin_secs = 5                    # M; default D/3, at least 2
//! standby_poll_millis = 500          # how often a standby looks for a free identity
//! [client]
//! format  = "raw-hex"                # raw-hex, besu, nethermind or keystore-v3
//! # password_file = "/etc/leased/keystore-password"   # keystore-v3 only, and then required
//! command = ["besu", "--node-private-key-file={key_file}"]
//! # engine_signer_rpc = "http://127.0.0.1:8545"
//! restart_backoff_millis = 1000      # first restart delay; doubles per recent exit
//! crash_loop_max_exits = 5           # K exits ...
//! crash_loop_window_secs = 60        # ... within W give the identity up
//! fence_grace_millis = 1250          # SIGTERM to SIGKILL; default M/4
//! start_timeout_secs = 10            # key fetch + file + exec; a slower hand-off has failed
//! [client.env]                       # the client's whole environment, with PATH
//! # GETH_CACHE = "512"
//! [http]
//! listen = "127.0.0.1:9797"
//! [azure]                            # only for keyvault: and blob: stores
//! credential = "managed-identity"    # or "developer-tools", "client-secret"
//! # managed_identity_client_id = "…"  # a user-assigned identity
//! # ca_file = "/etc/leased/extra-ca.pem"
//! ```
//!
//! Rules where the issue left a choice:
//!
//! - Unknown sections and settings are errors (a typo must not silently fall back to a
//!   default), with a suggestion when a known name is close.
//! - `lease.margin_secs`: 2 ≤ M < D/2.
//! - `lease.renew_every_secs`: 1 ≤ R ≤ (D − M)/2, so that once a renew is due at least R
//!   more remains before the fence deadline for fast retries: a store outage shorter than
//!   one renew period never fences. The defaults (R = M = D/3) meet it exactly; with a
//!   wider margin the default R is (D − M)/2.
//! - `lease.standby_poll_millis`: 100 ms ≤ poll ≤ D; a slower poll would make take-over
//!   slower than a lease.
//! - `client.fence_grace_millis`: 1 ms ≤ grace ≤ M/2, and grace + 0.5 s + D/50 ≤ M: a
//!   client that ignores SIGTERM lives until F + grace, and 0.5 s more when the daemon has
//!   to stand in for a stuck guard; clocks that each keep time within ±1 % drift apart by
//!   up to 2 % of D over a lease. All of that must fit in the margin, or the client may
//!   sign after the store's lease has ended (found by the simulator at D ≥ 30 s with
//!   M = 2 s). The default is M/4, or that limit if lower.
//! - `client.restart_backoff_millis` ≥ 100, `client.crash_loop_max_exits` 1–1000,
//!   `client.crash_loop_window_secs` ≥ 1. An identity given up after a crash loop (or a
//!   failed hand-off) is left to other nodes for one window.
//! - `identity.pool` is a non-empty identity-name prefix (0-9, a-z, A-Z, '-');
//!   `identity.quarantine_secs` defaults to 0: the guard already stops a frozen holder's
//!   client by its fence deadline, before anyone else can acquire.
//! - `client.start_timeout_secs`: 1–300 s, default 10. A hand-off that has not started
//!   the client by then fails: the lease is released and the identity left to others.
//! - `client.env`: the client starts with a clean environment (nothing of the daemon's:
//!   no credentials, no `NOTIFY_SOCKET`), plus these variables, plus `PATH` set to
//!   [`DEFAULT_CLIENT_PATH`] unless listed. Names are letters, digits and `_`, not starting
//!   with a digit; values are text without NUL.
//! - `client.command` placeholders: `{key_file}`, `{password_file}` (only with a password
//!   file) and `{address}`; `{{` and `}}` stand for literal braces.
//! - `runtime_dir` and `client.password_file` must be absolute paths. If `runtime_dir`
//!   exists it must be a directory owned by the daemon's user with no group or other
//!   permissions; if it does not, the daemon creates it with mode 0700.
//! - `http.listen` may be any address; a non-loopback one is an explicit choice in the
//!   file, so it is allowed.
//! - `node` defaults to the hostname and must be 1–253 visible ASCII characters (it is
//!   written into lease metadata).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shared::azure::AzureOptions;
use shared::keyfile::KeyFormat;
use shared::lease::{LeaseDuration, MAX_LEASE, MIN_LEASE};
use shared::spec::{LeaseStoreSpec, SecretStoreSpec};
use toml::{Table, Value};

use crate::machine::{self, Params};

/// The default `http.listen`: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9797";
/// The client's `PATH` unless `[client.env]` sets one.
pub const DEFAULT_CLIENT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The default `runtime_dir`, systemd's `RuntimeDirectory=leased`.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/leased";

/// Largest configuration file read; anything bigger is not a configuration file.
const MAX_FILE_BYTES: usize = 1 << 20;

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's name, for lease metadata and its candidate order.
    pub node: String,
    /// Holds the lock file and the key file.
    pub runtime_dir: PathBuf,
    pub store: StoreConfig,
    pub identity: IdentityConfig,
    pub lease: LeaseConfig,
    pub client: ClientConfig,
    pub http: HttpConfig,
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub leases: LeaseStoreSpec,
    pub secrets: SecretStoreSpec,
    /// `[azure]`: how to reach Key Vault and Blob Storage (for keyvault: and blob: specs).
    pub azure: AzureOptions,
}

/// `[identity]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    /// This node takes identities whose id starts with this prefix.
    pub pool: String,
    /// Minimum wait between acquiring a lease and handing the key over.
    pub quarantine: Duration,
}

/// `[lease]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// D.
    pub duration: Duration,
    /// R.
    pub renew_every: Duration,
    /// M.
    pub margin: Duration,
    pub standby_poll: Duration,
}

/// `[client]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub format: KeyFormat,
    pub password_file: Option<PathBuf>,
    pub command: CommandTemplate,
    /// Set the key through `parity_setEngineSignerSecret` instead of restarting the client.
    pub engine_signer_rpc: Option<String>,
    pub restart_backoff: Duration,
    pub crash_loop_max_exits: u32,
    pub crash_loop_window: Duration,
    /// Time between SIGTERM and SIGKILL when fencing.
    pub fence_grace: Duration,
    /// How long a hand-off may take before it counts as failed.
    pub start_timeout: Duration,
    /// The client's whole environment (`PATH` included).
    pub env: std::collections::BTreeMap<String, String>,
}

/// `[http]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

/// Settings given on the command line; each replaces the file's value before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub node: Option<String>,
    pub runtime_dir: Option<PathBuf>,
    /// `store.leases`
    pub leases: Option<String>,
    /// `store.secrets`
    pub secrets: Option<String>,
    /// `identity.pool`
    pub pool: Option<String>,
    /// `lease.duration_secs`
    pub duration_secs: Option<u64>,
    /// `http.listen`
    pub listen: Option<String>,
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The setting's dotted name (`lease.duration_secs`); `None` for the file as a whole.
    pub key: Option<String>,
    pub message: String,
}

impl Problem {
    fn at(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: Some(key.into()),
            message: message.into(),
        }
    }

    fn file(message: impl Into<String>) -> Self {
        Self {
            key: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{key}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Every problem found; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn as_slice(&self) -> &[Problem] {
        &self.0
    }

    /// The dotted names of the settings with problems, in report order.
    pub fn keys(&self) -> Vec<&str> {
        self.0.iter().filter_map(|p| p.key.as_deref()).collect()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} problem{} in the configuration:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl Config {
    /// Reads `path`, applies `overrides`, and validates everything, including the runtime
    /// directory on disk.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Self, Problems> {
        let text = shared::fsutil::read_limited(path, MAX_FILE_BYTES)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                String::from_utf8(bytes).map_err(|_| "the file is not UTF-8 text".to_string())
            })
            .map_err(|e| Problems(vec![Problem::file(format!("{}: {e}", path.display()))]))?;
        let our_uid = nix::unistd::geteuid().as_raw();
        let check_dir = |dir: &Path| match inspect_dir(dir) {
            Ok(state) => check_runtime_dir(&state, our_uid).err(),
            Err(e) => Some(Problem::at(
                "runtime_dir",
                format!("cannot inspect it: {e}"),
            )),
        };
        build(&text, overrides, check_dir).map_err(|Problems(ps)| {
            Problems(
                ps.into_iter()
                    .map(|p| match p.key {
                        Some(_) => p,
                        None => Problem::file(format!("{}: {}", path.display(), p.message)),
                    })
                    .collect(),
            )
        })
    }

    /// Parses and validates `text` with `overrides`, without looking at the filesystem: the
    /// runtime directory is not checked. The daemon uses [`Config::load`].
    pub fn parse(text: &str, overrides: &Overrides) -> Result<Self, Problems> {
        build(text, overrides, |_| None)
    }

    /// D as the lease store takes it.
    pub fn lease_duration(&self) -> LeaseDuration {
        // Validated to 15–60 whole seconds.
        LeaseDuration::Fixed(self.lease.duration)
    }

    /// The state machine's settings; `seed` varies the candidate order and poll jitter.
    pub fn machine_params(&self, seed: u64) -> Params {
        let mut p = Params::new(self.node.clone(), self.lease.duration);
        p.renew_every = self.lease.renew_every;
        p.margin = self.lease.margin;
        p.renew_retry = machine::default_renew_retry(self.lease.renew_every);
        p.quarantine = self.identity.quarantine;
        p.standby_poll = self.lease.standby_poll;
        p.poll_jitter = self.lease.standby_poll / 4;
        p.restart_backoff = self.client.restart_backoff;
        p.crash_loop_max_exits = self.client.crash_loop_max_exits;
        p.crash_loop_window = self.client.crash_loop_window;
        p.start_timeout = self.client.start_timeout;
        p.seed = seed;
        p
    }
}

/// What is at the runtime directory's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirState {
    /// Nothing: the daemon will create it with mode 0700.
    Missing,
    /// Something that is not a directory.
    NotADirectory,
    /// A directory with these permission bits and owner.
    Directory { mode: u32, owner: u32 },
}

/// Looks at `path` (following symlinks, as the daemon will).
pub fn inspect_dir(path: &Path) -> std::io::Result<DirState> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(DirState::Directory {
            mode: m.mode() & 0o7777,
            owner: m.uid(),
        }),
        Ok(_) => Ok(DirState::NotADirectory),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DirState::Missing),
        Err(e) => Err(e),
    }
}

/// Checks that the runtime directory, in state `state`, keeps the key file private from
/// every user but `our_uid`.
pub fn check_runtime_dir(state: &DirState, our_uid: u32) -> Result<(), Problem> {
    let problem = |m: String| Err(Problem::at("runtime_dir", m));
    match *state {
        DirState::Missing => Ok(()),
        DirState::NotADirectory => problem("exists and is not a directory".into()),
        DirState::Directory { owner, .. } if owner != our_uid => problem(format!(
            "is owned by uid {owner}, not by the daemon's uid {our_uid}; it holds the key file"
        )),
        DirState::Directory { mode, .. } if mode & 0o077 != 0 => problem(format!(
            "has mode {:04o}; it holds the key file and must be private (chmod 700)",
            mode & 0o777
        )),
        DirState::Directory { .. } => Ok(()),
    }
}

/// A placeholder the client command may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    KeyFile,
    PasswordFile,
    Address,
}

impl Placeholder {
    const ALL: [Self; 3] = [Self::KeyFile, Self::PasswordFile, Self::Address];

    fn name(self) -> &'static str {
        match self {
            Self::KeyFile => "key_file",
            Self::PasswordFile => "password_file",
            Self::Address => "address",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Slot(Placeholder),
}

/// The client command with its placeholders parsed; [`CommandTemplate::render`] fills
/// them in. Parsing and rendering share one parser, so they cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTemplate {
    args: Vec<Vec<Piece>>,
}

/// Values for the command's placeholders.
#[derive(Debug, Clone, Copy)]
pub struct Substitutions<'a> {
    pub key_file: &'a Path,
    /// Required when the command uses `{password_file}`, which validation ensures only
    /// happens when `client.password_file` is set.
    pub password_file: Option<&'a Path>,
    /// The identity's address, `0x`-prefixed.
    pub address: &'a str,
}

impl CommandTemplate {
    /// Parses each argument; the errors name the argument's index.
    fn parse(args: &[String]) -> Result<Self, Vec<(usize, String)>> {
        let mut errors = Vec::new();
        let mut parsed = Vec::new();
        for (i, arg) in args.iter().enumerate() {
            match parse_arg(arg) {
                Ok(pieces) => parsed.push(pieces),
                Err(e) => errors.push((i, e)),
            }
        }
        if errors.is_empty() {
            Ok(Self { args: parsed })
        } else {
            Err(errors)
        }
    }

    /// Whether any argument uses `p`.
    pub fn uses(&self, p: Placeholder) -> bool {
        self.args
            .iter()
            .flatten()
            .any(|piece| *piece == Piece::Slot(p))
    }

    /// The program and its arguments with the placeholders filled in.
    pub fn render(&self, s: &Substitutions<'_>) -> Vec<String> {
        self.args
            .iter()
            .map(|pieces| {
                pieces
                    .iter()
                    .map(|piece| match piece {
                        Piece::Text(t) => t.clone(),
                        Piece::Slot(Placeholder::KeyFile) => {
                            s.key_file.to_string_lossy().into_owned()
                        }
                        Piece::Slot(Placeholder::PasswordFile) => s
                            .password_file
                            .map(|p| p.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        Piece::Slot(Placeholder::Address) => s.address.to_string(),
                    })
                    .collect()
            })
            .collect()
    }
}

fn parse_arg(arg: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = arg.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '}' => return Err("has a '}' without its '{' (write }} for a literal brace)".into()),
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => {
                            return Err(
                                "has a '{' without its '}' (write {{ for a literal brace)".into()
                            )
                        }
                    }
                }
                let slot = Placeholder::ALL
                    .into_iter()
                    .find(|p| p.name() == name)
                    .ok_or_else(|| {
                        format!(
                            "unknown placeholder {{{name}}}; allowed: {{key_file}}, {{password_file}}, {{address}}"
                        )
                    })?;
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Slot(slot));
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

// ---- reading the TOML table ----

/// A setting as found in the file.
enum Found<T> {
    Absent,
    /// Present but unusable; already reported.
    Bad,
    Present(T),
}

impl<T> Found<T> {
    fn or(self, default: T) -> Option<T> {
        match self {
            Self::Absent => Some(default),
            Self::Bad => None,
            Self::Present(v) => Some(v),
        }
    }

    fn optional(self) -> Option<Option<T>> {
        match self {
            Self::Absent => Some(None),
            Self::Bad => None,
            Self::Present(v) => Some(Some(v)),
        }
    }
}

/// One table of the file, emptied as settings are read so that what is left is unknown.
struct Section {
    name: &'static str,
    table: Table,
    known: &'static [&'static str],
}

#[derive(Default)]
struct Reader {
    problems: Vec<Problem>,
}

impl Reader {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::at(key, message));
    }

    fn key(section: &Section, k: &str) -> String {
        if section.name.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", section.name)
        }
    }

    fn section(
        &mut self,
        root: &mut Table,
        name: &'static str,
        known: &'static [&'static str],
    ) -> Section {
        let table = match root.remove(name) {
            None => Table::new(),
            Some(Value::Table(t)) => t,
            Some(other) => {
                self.problem(
                    name,
                    format!("must be a section ([{name}]), not {}", a(&other)),
                );
                Table::new()
            }
        };
        Section { name, table, known }
    }

    fn take(&mut self, s: &mut Section, k: &str) -> Option<Value> {
        debug_assert!(s.known.contains(&k), "{k} missing from the known list");
        s.table.remove(k)
    }

    fn string(&mut self, s: &mut Section, k: &str) -> Found<String> {
        match self.take(s, k) {
            None => Found::Absent,
            Some(Value::String(v)) => Found::Present(v),
            Some(other) => {
                self.problem(
                    Self::key(s, k),
                    format!("must be a string, not {}", a(&other)),
                );
                Found::Bad
            }
        }
    }

    fn uint(&mut self, s: &mut Section, k: &str) -> Found<u64> {
        match self.take(s, k) {
            None => Found::Absent,
            Some(Value::Integer(i)) => match u64::try_from(i) {
                Ok(v) => Found::Present(v),
                Err(_) => {
                    self.problem(Self::key(s, k), format!("{i} is negative"));
                    Found::Bad
                }
            },
            Some(other) => {
                self.problem(
                    Self::key(s, k),
                    format!("must be a whole number, not {}", a(&other)),
                );
                Found::Bad
            }
        }
    }

    fn strings(&mut self, s: &mut Section, k: &str) -> Found<Vec<String>> {
        let key = Self::key(s, k);
        match self.take(s, k) {
            None => Found::Absent,
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                let mut bad = false;
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Value::String(v) => out.push(v),
                        other => {
                            bad = true;
                            self.problem(
                                format!("{key}[{i}]"),
                                format!("must be a string, not {}", a(&other)),
                            );
                        }
                    }
                }
                if bad {
                    Found::Bad
                } else {
                    Found::Present(out)
                }
            }
            Some(other) => {
                self.problem(
                    key,
                    format!("must be an array of strings, not {}", a(&other)),
                );
                Found::Bad
            }
        }
    }

    fn required<T>(&mut self, s: &Section, k: &str, found: Found<T>) -> Option<T> {
        match found {
            Found::Absent => {
                self.problem(Self::key(s, k), "is required");
                None
            }
            Found::Bad => None,
            Found::Present(v) => Some(v),
        }
    }

    /// Reports whatever is left in the section as unknown.
    fn finish(&mut self, s: Section) {
        for k in s.table.keys() {
            let message = match closest(k, s.known) {
                Some(near) => format!("unknown setting (did you mean {near}?)"),
                None => format!("unknown setting; known here: {}", s.known.join(", ")),
            };
            self.problem(Self::key(&s, k), message);
        }
    }

    /// A duration setting: whole `unit`s, default `default`, checked by `check`.
    fn duration(
        &mut self,
        s: &mut Section,
        k: &str,
        unit: Duration,
        default: Duration,
        check: impl FnOnce(Duration) -> Result<(), String>,
    ) -> Option<Duration> {
        let found = match self.uint(s, k) {
            Found::Absent => return Some(default),
            Found::Bad => return None,
            Found::Present(n) => n,
        };
        let d = unit.saturating_mul(u32::try_from(found).unwrap_or(u32::MAX));
        match check(d) {
            Ok(()) => Some(d),
            Err(m) => {
                self.problem(Self::key(s, k), format!("{found} {m}"));
                None
            }
        }
    }
}

const ROOT_KEYS: &[&str] = &[
    "node",
    "runtime_dir",
    "store",
    "identity",
    "lease",
    "client",
    "http",
    "azure",
];
const STORE_KEYS: &[&str] = &["leases", "secrets"];
const IDENTITY_KEYS: &[&str] = &["pool", "quarantine_secs"];
const LEASE_KEYS: &[&str] = &[
    "duration_secs",
    "renew_every_secs",
    "margin_secs",
    "standby_poll_millis",
];
const CLIENT_KEYS: &[&str] = &[
    "format",
    "password_file",
    "command",
    "engine_signer_rpc",
    "restart_backoff_millis",
    "crash_loop_max_exits",
    "crash_loop_window_secs",
    "fence_grace_millis",
    "start_timeout_secs",
    "env",
];
const HTTP_KEYS: &[&str] = &["listen"];

/// A known name within edit distance 2 of `k`, if any.
fn closest(k: &str, known: &'static [&'static str]) -> Option<&'static str> {
    known
        .iter()
        .map(|n| (strsim::levenshtein(k, n), *n))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, n)| n)
}

fn apply_overrides(root: &mut Table, o: &Overrides) {
    fn set(root: &mut Table, section: Option<&str>, key: &str, value: Option<Value>) {
        let Some(value) = value else { return };
        let table = match section {
            None => root,
            Some(s) => match root
                .entry(s.to_string())
                .or_insert_with(|| Value::Table(Table::new()))
            {
                Value::Table(t) => t,
                // Reported when the section is read; the override has nowhere to go.
                _ => return,
            },
        };
        table.insert(key.to_string(), value);
    }
    let s = |v: &Option<String>| v.clone().map(Value::String);
    set(root, None, "node", s(&o.node));
    set(
        root,
        None,
        "runtime_dir",
        o.runtime_dir
            .as_ref()
            .map(|p| Value::String(p.to_string_lossy().into_owned())),
    );
    set(root, Some("store"), "leases", s(&o.leases));
    set(root, Some("store"), "secrets", s(&o.secrets));
    set(root, Some("identity"), "pool", s(&o.pool));
    set(
        root,
        Some("lease"),
        "duration_secs",
        o.duration_secs
            .map(|d| Value::Integer(i64::try_from(d).unwrap_or(i64::MAX))),
    );
    set(root, Some("http"), "listen", s(&o.listen));
}

/// The value's TOML type with its article: "a string", "an integer".
fn a(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn build(
    text: &str,
    overrides: &Overrides,
    check_dir: impl FnOnce(&Path) -> Option<Problem>,
) -> Result<Config, Problems> {
    let mut root = match text.parse::<Table>() {
        Ok(t) => t,
        Err(e) => {
            let message = match e.span() {
                Some(span) => {
                    let (line, column) = line_and_column(text, span.start);
                    format!("line {line}, column {column}: {}", e.message())
                }
                None => e.message().to_string(),
            };
            return Err(Problems(vec![Problem::file(format!(
                "not valid TOML: {message}"
            ))]));
        }
    };
    apply_overrides(&mut root, overrides);

    let mut r = Reader::default();
    let mut top = Section {
        name: "",
        table: Table::new(),
        known: ROOT_KEYS,
    };
    // Sections first, so the top level's leftovers are exactly the unknown names.
    let store = r.section(&mut root, "store", STORE_KEYS);
    let identity = r.section(&mut root, "identity", IDENTITY_KEYS);
    let lease = r.section(&mut root, "lease", LEASE_KEYS);
    let client = r.section(&mut root, "client", CLIENT_KEYS);
    let http = r.section(&mut root, "http", HTTP_KEYS);
    let azure = read_azure(&mut r, root.remove("azure"));
    top.table = root;

    let node = read_node(&mut r, &mut top);
    let runtime_dir = read_runtime_dir(&mut r, &mut top, check_dir);
    r.finish(top);
    let store = read_store(&mut r, store, azure);
    let identity = read_identity(&mut r, identity);
    let lease = read_lease(&mut r, lease);
    let client = read_client(
        &mut r,
        client,
        lease.as_ref().map(|l| (l.margin, l.duration)),
    );
    let http = read_http(&mut r, http);

    match (node, runtime_dir, store, identity, lease, client, http) {
        (
            Some(node),
            Some(runtime_dir),
            Some(store),
            Some(identity),
            Some(lease),
            Some(client),
            Some(http),
        ) if r.problems.is_empty() => Ok(Config {
            node,
            runtime_dir,
            store,
            identity,
            lease,
            client,
            http,
        }),
        _ => {
            debug_assert!(!r.problems.is_empty(), "a setting failed without a problem");
            Err(Problems(r.problems))
        }
    }
}

fn read_node(r: &mut Reader, top: &mut Section) -> Option<String> {
    let node = match r.string(top, "node") {
        Found::Bad => return None,
        Found::Present(n) => n,
        Found::Absent => match nix::unistd::gethostname().map(|h| h.into_string()) {
            Ok(Ok(h)) => h,
            Ok(Err(_)) => {
                r.problem("node", "is not set, and the hostname is not UTF-8; set it");
                return None;
            }
            Err(e) => {
                r.problem(
                    "node",
                    format!("is not set, and the hostname cannot be read ({e}); set it"),
                );
                return None;
            }
        },
    };
    let ok = (1..=253).contains(&node.len()) && node.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        r.problem(
            "node",
            format!("{node:?} must be 1–253 visible ASCII characters (no spaces)"),
        );
        return None;
    }
    Some(node)
}

fn read_runtime_dir(
    r: &mut Reader,
    top: &mut Section,
    check_dir: impl FnOnce(&Path) -> Option<Problem>,
) -> Option<PathBuf> {
    let dir = PathBuf::from(
        r.string(top, "runtime_dir")
            .or(DEFAULT_RUNTIME_DIR.to_string())?,
    );
    if !dir.is_absolute() {
        r.problem(
            "runtime_dir",
            format!("{:?} must be an absolute path", dir.display().to_string()),
        );
        return None;
    }
    if let Some(p) = check_dir(&dir) {
        r.problems.push(p);
        return None;
    }
    Some(dir)
}

/// `[azure]`, read with its own strict schema (shared::azure::AzureOptions).
fn read_azure(r: &mut Reader, table: Option<Value>) -> Option<AzureOptions> {
    match table {
        None => Some(AzureOptions::default()),
        Some(Value::Table(t)) => match Value::Table(t).try_into::<AzureOptions>() {
            Ok(a) => Some(a),
            Err(e) => {
                r.problem("azure", e.message().replace('\n', " "));
                None
            }
        },
        Some(other) => {
            r.problem(
                "azure",
                format!("must be a section ([azure]), not {}", a(&other)),
            );
            None
        }
    }
}

fn read_store(r: &mut Reader, mut s: Section, azure: Option<AzureOptions>) -> Option<StoreConfig> {
    let leases = r.string(&mut s, "leases");
    let leases = r.required(&s, "leases", leases).and_then(|v| {
        v.parse::<LeaseStoreSpec>()
            .map_err(|e| r.problem("store.leases", e.to_string()))
            .ok()
    });
    let secrets = r.string(&mut s, "secrets");
    let secrets = r.required(&s, "secrets", secrets).and_then(|v| {
        v.parse::<SecretStoreSpec>()
            .map_err(|e| r.problem("store.secrets", e.to_string()))
            .ok()
    });
    r.finish(s);
    let azure = azure?;
    let uses_azure = leases.as_ref().is_some_and(LeaseStoreSpec::is_azure)
        || secrets.as_ref().is_some_and(SecretStoreSpec::is_azure);
    if uses_azure {
        for (key, message) in azure.problems() {
            r.problem(key, message);
        }
    }
    Some(StoreConfig {
        leases: leases?,
        secrets: secrets?,
        azure,
    })
}

fn read_identity(r: &mut Reader, mut s: Section) -> Option<IdentityConfig> {
    let pool = r.string(&mut s, "pool");
    let pool = r.required(&s, "pool", pool).and_then(|p| {
        let ok = !p.is_empty()
            && p.len() <= 127
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok {
            Some(p)
        } else {
            r.problem(
                "identity.pool",
                format!("{p:?} must be a non-empty identity-name prefix: 0-9, a-z, A-Z and '-'"),
            );
            None
        }
    });
    let quarantine = r.duration(
        &mut s,
        "quarantine_secs",
        Duration::from_secs(1),
        Duration::ZERO,
        |_| Ok(()),
    );
    r.finish(s);
    Some(IdentityConfig {
        pool: pool?,
        quarantine: quarantine?,
    })
}

/// Seconds for messages: 7.5, 5, 5.33.
fn secs(d: Duration) -> String {
    format!("{}", (d.as_secs_f64() * 100.0).round() / 100.0)
}

fn read_lease(r: &mut Reader, mut s: Section) -> Option<LeaseConfig> {
    let sec = Duration::from_secs(1);
    let d = r.duration(
        &mut s,
        "duration_secs",
        sec,
        MIN_LEASE,
        |d| match (MIN_LEASE..=MAX_LEASE).contains(&d) {
            true => Ok(()),
            false => Err(format!(
                "is outside {}–{}",
                MIN_LEASE.as_secs(),
                MAX_LEASE.as_secs()
            )),
        },
    );
    // The checks below depend on D (and R on M); without a valid D they are skipped rather
    // than reported against a value the operator did not choose.
    let default_d = d.unwrap_or(MIN_LEASE);
    let m = r.duration(
        &mut s,
        "margin_secs",
        sec,
        machine::default_margin(default_d),
        |m| {
            if m < Duration::from_secs(2) {
                Err("is below the 2 s minimum".into())
            } else if d.is_some_and(|d| m >= d / 2) {
                Err(format!("must be less than D/2 = {} s", secs(default_d / 2)))
            } else {
                Ok(())
            }
        },
    );
    // D/3, shortened when a wide margin leaves less room (see the module docs).
    let default_r = match m {
        Some(m) if m < default_d => (default_d / 3).min((default_d - m) / 2),
        _ => default_d / 3,
    };
    let r_every = r.duration(
        &mut s,
        "renew_every_secs",
        sec,
        default_r,
        |every| {
            if every.is_zero() {
                return Err("must be at least 1".into());
            }
            match (d, m) {
                (Some(d), Some(m)) if every > (d - m) / 2 => Err(format!(
                    "is too long: it must be at most (D − M)/2 = {} s, so that retries fit before the fence deadline",
                    secs((d - m) / 2)
                )),
                _ => Ok(()),
            }
        },
    );
    let poll = r.duration(
        &mut s,
        "standby_poll_millis",
        Duration::from_millis(1),
        Duration::from_millis(500),
        |p| {
            if p < Duration::from_millis(100) {
                Err("is below 100".into())
            } else if d.is_some_and(|d| p > d) {
                Err(format!(
                    "is longer than the lease ({} ms): take-over would be slower than a lease",
                    default_d.as_millis()
                ))
            } else {
                Ok(())
            }
        },
    );
    r.finish(s);
    Some(LeaseConfig {
        duration: d?,
        renew_every: r_every?,
        margin: m?,
        standby_poll: poll?,
    })
}

/// The longest fence grace that margin `m` covers at lease duration `d`: the grace, the
/// daemon's backstop slack and the drift of two ±1 % clocks over `d` (D/50) must all fit
/// in M (see the module docs). Zero when nothing fits.
pub fn max_fence_grace(m: Duration, d: Duration) -> Duration {
    m.saturating_sub(crate::daemon::BACKSTOP_SLACK)
        .saturating_sub(d / 50)
}

fn read_client(
    r: &mut Reader,
    mut s: Section,
    margin: Option<(Duration, Duration)>,
) -> Option<ClientConfig> {
    let format = r
        .string(&mut s, "format")
        .or("raw-hex".into())
        .and_then(|f| {
            f.parse::<KeyFormat>()
                .map_err(|e| r.problem("client.format", e))
                .ok()
        });
    let password_file =
        r.string(&mut s, "password_file")
            .optional()
            .and_then(|p| match p.map(PathBuf::from) {
                Some(p) if !p.is_absolute() => {
                    r.problem(
                        "client.password_file",
                        format!("{:?} must be an absolute path", p.display().to_string()),
                    );
                    None
                }
                p => Some(p),
            });
    match (format, &password_file) {
        (Some(f), Some(None)) if f.needs_password() => r.problem(
            "client.password_file",
            format!("is required with format {f}"),
        ),
        (Some(f), Some(Some(_))) if !f.needs_password() => r.problem(
            "client.password_file",
            format!("is only used with keystore-v3, not with format {f}"),
        ),
        _ => {}
    }

    let command = r.strings(&mut s, "command");
    let command = r.required(&s, "command", command).and_then(|args| {
        if args.is_empty() {
            r.problem("client.command", "is empty; it needs at least the program");
            return None;
        }
        if args[0].trim().is_empty() {
            r.problem("client.command[0]", "the program name is empty");
            return None;
        }
        match CommandTemplate::parse(&args) {
            Ok(t) => Some(t),
            Err(errors) => {
                for (i, e) in errors {
                    r.problem(format!("client.command[{i}]"), format!("{:?} {e}", args[i]));
                }
                None
            }
        }
    });
    if let (Some(cmd), Some(None)) = (&command, &password_file) {
        if cmd.uses(Placeholder::PasswordFile) {
            r.problem(
                "client.command",
                "uses {password_file}, but client.password_file is not set",
            );
        }
    }

    let rpc = r
        .string(&mut s, "engine_signer_rpc")
        .optional()
        .and_then(|u| match u {
            Some(u) if !shared::net::is_loopback_http(&u) => {
                r.problem(
                    "client.engine_signer_rpc",
                    format!(
                        "{u:?} must be an http://HOST:PORT URL on loopback (127.0.0.1, [::1] or localhost): the key travels in it"
                    ),
                );
                None
            }
            u => Some(u),
        });

    let ms = Duration::from_millis(1);
    let backoff = r.duration(
        &mut s,
        "restart_backoff_millis",
        ms,
        Duration::from_secs(1),
        |b| match b < Duration::from_millis(100) {
            true => Err("is below 100".into()),
            false => Ok(()),
        },
    );
    let max_exits = match r.uint(&mut s, "crash_loop_max_exits") {
        Found::Absent => Some(5),
        Found::Bad => None,
        Found::Present(n) if (1..=1000).contains(&n) => Some(n as u32),
        Found::Present(n) => {
            r.problem(
                "client.crash_loop_max_exits",
                format!("{n} is outside 1–1000"),
            );
            None
        }
    };
    let window = r.duration(
        &mut s,
        "crash_loop_window_secs",
        Duration::from_secs(1),
        Duration::from_secs(60),
        |w| match w.is_zero() {
            true => Err("must be at least 1".into()),
            false => Ok(()),
        },
    );
    let limit = margin.map(|(m, d)| max_fence_grace(m, d));
    let default_grace = margin.map_or(Duration::from_secs(1), |(m, d)| {
        (m / 4).min(max_fence_grace(m, d))
    });
    let grace = r.duration(&mut s, "fence_grace_millis", ms, default_grace, |g| match (
        margin, limit,
    ) {
        _ if g.is_zero() => Err("must be at least 1".into()),
        (Some((m, _)), _) if g > m / 2 => Err(format!(
            "is not well inside the margin: it must be at most M/2 = {} ms",
            (m / 2).as_millis()
        )),
        (Some((m, d)), Some(limit)) if g > limit => Err(format!(
            "does not fit in the margin with the daemon's backstop and clock drift: \
                 grace + {} ms + D/50 ({} ms) must be at most M = {} ms, so at most {} ms \
                 (or widen lease.margin_secs)",
            crate::daemon::BACKSTOP_SLACK.as_millis(),
            (d / 50).as_millis(),
            m.as_millis(),
            limit.as_millis()
        )),
        _ => Ok(()),
    });
    let start_timeout = r.duration(
        &mut s,
        "start_timeout_secs",
        Duration::from_secs(1),
        machine::DEFAULT_START_TIMEOUT,
        |t| match (1..=300).contains(&t.as_secs()) {
            true => Ok(()),
            false => Err("is outside 1–300".into()),
        },
    );
    let env = read_client_env(r, &mut s);
    r.finish(s);
    Some(ClientConfig {
        format: format?,
        password_file: password_file?,
        command: command?,
        engine_signer_rpc: rpc?,
        restart_backoff: backoff?,
        crash_loop_max_exits: max_exits?,
        crash_loop_window: window?,
        fence_grace: grace?,
        start_timeout: start_timeout?,
        env: env?,
    })
}

/// `[client.env]`: a table of strings. `PATH` defaults to [`DEFAULT_CLIENT_PATH`].
fn read_client_env(
    r: &mut Reader,
    s: &mut Section,
) -> Option<std::collections::BTreeMap<String, String>> {
    let mut env = std::collections::BTreeMap::new();
    env.insert("PATH".to_string(), DEFAULT_CLIENT_PATH.to_string());
    let table = match r.take(s, "env") {
        None => return Some(env),
        Some(Value::Table(t)) => t,
        Some(other) => {
            r.problem(
                "client.env",
                format!("must be a table of NAME = \"value\", not {}", a(&other)),
            );
            return None;
        }
    };
    let mut ok = true;
    for (name, value) in table {
        let key = format!("client.env.{name}");
        let good_name = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !good_name {
            r.problem(
                key,
                "is not a variable name: letters, digits and '_', not starting with a digit",
            );
            ok = false;
            continue;
        }
        match value {
            Value::String(v) if !v.contains('\0') => {
                env.insert(name, v);
            }
            Value::String(_) => {
                r.problem(key, "contains a NUL character");
                ok = false;
            }
            other => {
                r.problem(key, format!("must be a string, not {}", a(&other)));
                ok = false;
            }
        }
    }
    ok.then_some(env)
}

fn read_http(r: &mut Reader, mut s: Section) -> Option<HttpConfig> {
    let listen = r
        .string(&mut s, "listen")
        .or(DEFAULT_LISTEN.to_string())
        .and_then(|l| match l.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                r.problem(
                    "http.listen",
                    format!("{l:?} is not an address and port, like 127.0.0.1:9797 or [::1]:9797"),
                );
                None
            }
        });
    r.finish(s);
    Some(HttpConfig { listen: listen? })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// The example from the issue, verbatim.
    const EXAMPLE: &str = r#"
node = "vm-1"                      # optional; default: the hostname
runtime_dir = "/run/leased"        # lock file, key file; must be private (0700)
[store]
leases  = "sqlite:/var/lib/leased/leases.db"
secrets = "dir:/var/lib/leased/secrets"
[identity]
pool = "m0-"
[lease]
duration_secs = 15                 # D, 15–60
# renew_every_secs, margin_secs, standby_poll_millis: defaults from docs/architecture.md
[client]
format  = "raw-hex"                # or "keystore-v3" (then password_file)
command = ["besu", "--node-private-key-file={key_file}"]
# engine_signer_rpc = "http://127.0.0.1:8545"
[http]
listen = "127.0.0.1:9797"
"#;

    /// `EXAMPLE` with `key` (dotted) set to the TOML `value`, or removed when `value` is
    /// `None`. A key in a section that is absent gets the section appended.
    fn edit(text: &str, key: &str, value: Option<&str>) -> String {
        let (section, name) = key.rsplit_once('.').unwrap_or(("", key));
        let mut out = Vec::new();
        let mut current = String::new();
        let mut done = false;
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if let Some(h) = line.strip_prefix('[') {
                current = h.trim_end_matches(']').to_string();
            }
            let is_key = line
                .split_once('=')
                .is_some_and(|(k, _)| k.trim() == name && !line.starts_with('#'));
            if current == section && is_key {
                if let Some(v) = value {
                    out.push(format!("{name} = {v}"));
                }
                done = true;
                continue;
            }
            out.push(line.to_string());
            // Insert at the end of the section if the key was not there.
            let section_ends = lines.peek().is_none_or(|next| next.starts_with('['));
            if current == section && section_ends && !done {
                if let Some(v) = value {
                    out.push(format!("{name} = {v}"));
                }
                done = true;
            }
        }
        if !done {
            if let Some(v) = value {
                out.push(format!("[{section}]"));
                out.push(format!("{name} = {v}"));
            }
        }
        out.join("\n") + "\n"
    }

    fn edits(changes: &[(&str, Option<&str>)]) -> String {
        changes
            .iter()
            .fold(EXAMPLE.to_string(), |t, (k, v)| edit(&t, k, *v))
    }

    fn parse(text: &str) -> Result<Config, Problems> {
        Config::parse(text, &Overrides::default())
    }

    fn ok(text: &str) -> Config {
        parse(text).unwrap_or_else(|p| panic!("{p}\n---\n{text}"))
    }

    /// The problems, as the operator reads them.
    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(c) => panic!("accepted: {c:?}\n---\n{text}"),
            Err(p) => p.as_slice().iter().map(ToString::to_string).collect(),
        }
    }

    fn one_problem(changes: &[(&str, Option<&str>)]) -> String {
        let p = problems(&edits(changes));
        assert_eq!(p.len(), 1, "{p:#?}");
        p.into_iter().next().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_issue_example_parses_with_defaults_filled_in() {
        let c = ok(EXAMPLE);
        assert_eq!(c.node, "vm-1");
        assert_eq!(c.runtime_dir, Path::new("/run/leased"));
        assert_eq!(
            c.store.leases,
            LeaseStoreSpec::Sqlite("/var/lib/leased/leases.db".into())
        );
        assert_eq!(
            c.store.secrets,
            SecretStoreSpec::Dir("/var/lib/leased/secrets".into())
        );
        assert_eq!(
            c.identity,
            IdentityConfig {
                pool: "m0-".into(),
                quarantine: Duration::ZERO
            }
        );
        assert_eq!(
            c.lease,
            LeaseConfig {
                duration: Duration::from_secs(15),
                renew_every: Duration::from_secs(5),
                margin: Duration::from_secs(5),
                standby_poll: ms(500),
            }
        );
        assert_eq!(
            c.lease_duration(),
            LeaseDuration::Fixed(Duration::from_secs(15))
        );
        assert_eq!(c.client.format, KeyFormat::RawHex);
        assert_eq!(c.client.password_file, None);
        assert_eq!(c.client.engine_signer_rpc, None);
        assert_eq!(c.client.restart_backoff, ms(1_000));
        assert_eq!(c.client.crash_loop_max_exits, 5);
        assert_eq!(c.client.crash_loop_window, Duration::from_secs(60));
        assert_eq!(c.client.fence_grace, ms(1_250));
        assert_eq!(c.client.start_timeout, Duration::from_secs(10));
        assert_eq!(
            c.client.env,
            [("PATH".to_string(), DEFAULT_CLIENT_PATH.to_string())].into()
        );
        assert_eq!(c.http.listen, "127.0.0.1:9797".parse().unwrap());
        let argv = c.client.command.render(&Substitutions {
            key_file: Path::new("/run/leased/key"),
            password_file: None,
            address: "0xabc",
        });
        assert_eq!(argv, ["besu", "--node-private-key-file=/run/leased/key"]);
    }

    #[test]
    fn optional_settings_parse() {
        let c = ok(&edits(&[
            ("identity.quarantine_secs", Some("12")),
            ("lease.duration_secs", Some("30")),
            ("lease.renew_every_secs", Some("8")),
            ("lease.margin_secs", Some("12")),
            ("lease.standby_poll_millis", Some("250")),
            ("client.format", Some(r#""keystore-v3""#)),
            ("client.password_file", Some(r#""/etc/leased/pw""#)),
            (
                "client.command",
                Some(r#"["geth", "--unlock={address}", "--password={password_file}"]"#),
            ),
            (
                "client.engine_signer_rpc",
                Some(r#""http://127.0.0.1:8545""#),
            ),
            ("client.restart_backoff_millis", Some("300")),
            ("client.crash_loop_max_exits", Some("3")),
            ("client.crash_loop_window_secs", Some("120")),
            ("client.fence_grace_millis", Some("6000")),
            ("http.listen", Some(r#""[::1]:9000""#)),
        ]));
        assert_eq!(c.identity.quarantine, Duration::from_secs(12));
        assert_eq!(
            c.lease,
            LeaseConfig {
                duration: Duration::from_secs(30),
                renew_every: Duration::from_secs(8),
                margin: Duration::from_secs(12),
                standby_poll: ms(250),
            }
        );
        assert_eq!(c.client.format, KeyFormat::KeystoreV3);
        assert_eq!(
            c.client.password_file.as_deref(),
            Some(Path::new("/etc/leased/pw"))
        );
        assert_eq!(
            c.client.engine_signer_rpc.as_deref(),
            Some("http://127.0.0.1:8545")
        );
        assert_eq!(c.client.restart_backoff, ms(300));
        assert_eq!(c.client.crash_loop_max_exits, 3);
        assert_eq!(c.client.crash_loop_window, Duration::from_secs(120));
        assert_eq!(c.client.fence_grace, ms(6_000));
        assert_eq!(c.http.listen, "[::1]:9000".parse().unwrap());
        let argv = c.client.command.render(&Substitutions {
            key_file: Path::new("/k"),
            password_file: Some(Path::new("/etc/leased/pw")),
            address: "0x00aa",
        });
        assert_eq!(
            argv,
            ["geth", "--unlock=0x00aa", "--password=/etc/leased/pw"]
        );
    }

    #[test]
    fn timing_defaults_follow_d() {
        let c = ok(&edits(&[("lease.duration_secs", Some("30"))]));
        assert_eq!(
            (c.lease.renew_every, c.lease.margin, c.client.fence_grace),
            (Duration::from_secs(10), Duration::from_secs(10), ms(2_500))
        );
        let c = ok(&edits(&[("lease.duration_secs", Some("16"))]));
        assert_eq!(c.lease.renew_every, Duration::from_secs(16) / 3);
        assert_eq!(c.lease.margin, Duration::from_secs(16) / 3);
        // A wider margin shortens the default renew period to (D − M)/2.
        let c = ok(&edits(&[("lease.margin_secs", Some("7"))]));
        assert_eq!(c.lease.renew_every, Duration::from_secs(4));
    }

    #[test]
    fn lease_duration_must_be_15_to_60() {
        assert_eq!(
            one_problem(&[("lease.duration_secs", Some("10"))]),
            "lease.duration_secs: 10 is outside 15–60"
        );
        assert_eq!(
            one_problem(&[("lease.duration_secs", Some("61"))]),
            "lease.duration_secs: 61 is outside 15–60"
        );
        ok(&edits(&[("lease.duration_secs", Some("60"))]));
        // Absent means the 15 s default.
        let c = ok(&edits(&[("lease.duration_secs", None)]));
        assert_eq!(c.lease.duration, Duration::from_secs(15));
    }

    #[test]
    fn margin_must_be_at_least_2_s_and_below_half_of_d() {
        assert_eq!(
            one_problem(&[("lease.margin_secs", Some("8"))]),
            "lease.margin_secs: 8 must be less than D/2 = 7.5 s"
        );
        assert_eq!(
            one_problem(&[
                ("lease.duration_secs", Some("20")),
                ("lease.margin_secs", Some("10"))
            ]),
            "lease.margin_secs: 10 must be less than D/2 = 10 s"
        );
        assert_eq!(
            one_problem(&[("lease.margin_secs", Some("1"))]),
            "lease.margin_secs: 1 is below the 2 s minimum"
        );
        ok(&edits(&[("lease.margin_secs", Some("2"))]));
        ok(&edits(&[("lease.margin_secs", Some("7"))]));
    }

    #[test]
    fn renew_period_must_leave_room_for_retries() {
        let p = one_problem(&[("lease.renew_every_secs", Some("6"))]);
        assert!(
            p.starts_with(
                "lease.renew_every_secs: 6 is too long: it must be at most (D − M)/2 = 5 s"
            ),
            "{p}"
        );
        ok(&edits(&[("lease.renew_every_secs", Some("5"))]));
        assert_eq!(
            one_problem(&[("lease.renew_every_secs", Some("0"))]),
            "lease.renew_every_secs: 0 must be at least 1"
        );
        // Checked against the margin actually in force.
        ok(&edits(&[
            ("lease.margin_secs", Some("2")),
            ("lease.renew_every_secs", Some("6")),
        ]));
        // A bad D is reported once, not again through the rules that depend on it.
        let p = problems(&edits(&[
            ("lease.duration_secs", Some("5")),
            ("lease.margin_secs", Some("4")),
            ("lease.renew_every_secs", Some("4")),
        ]));
        assert_eq!(p, ["lease.duration_secs: 5 is outside 15–60"]);
    }

    #[test]
    fn standby_poll_must_be_between_100_ms_and_d() {
        assert_eq!(
            one_problem(&[("lease.standby_poll_millis", Some("99"))]),
            "lease.standby_poll_millis: 99 is below 100"
        );
        ok(&edits(&[("lease.standby_poll_millis", Some("100"))]));
        ok(&edits(&[("lease.standby_poll_millis", Some("15000"))]));
        let p = one_problem(&[("lease.standby_poll_millis", Some("15001"))]);
        assert!(p.contains("longer than the lease"), "{p}");
    }

    #[test]
    fn the_client_command_is_required_and_non_empty() {
        assert_eq!(
            one_problem(&[("client.command", None)]),
            "client.command: is required"
        );
        assert_eq!(
            one_problem(&[("client.command", Some("[]"))]),
            "client.command: is empty; it needs at least the program"
        );
        assert_eq!(
            one_problem(&[("client.command", Some(r#"["  ", "x"]"#))]),
            "client.command[0]: the program name is empty"
        );
        assert_eq!(
            one_problem(&[("client.command", Some(r#""besu --x""#))]),
            "client.command: must be an array of strings, not a string"
        );
        assert_eq!(
            one_problem(&[("client.command", Some(r#"["besu", 7]"#))]),
            "client.command[1]: must be a string, not an integer"
        );
    }

    #[test]
    fn command_placeholders_are_checked_and_rendered() {
        assert_eq!(
            one_problem(&[("client.command", Some(r#"["besu", "--key={keyfile}"]"#))]),
            r#"client.command[1]: "--key={keyfile}" unknown placeholder {keyfile}; allowed: {key_file}, {password_file}, {address}"#
        );
        // Every bad argument is reported, by index.
        let p = problems(&edits(&[(
            "client.command",
            Some(r#"["c", "{key_file", "x}", "{node}"]"#),
        )]));
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(p[0].starts_with("client.command[1]: ") && p[0].contains("without its '}'"));
        assert!(p[1].starts_with("client.command[2]: ") && p[1].contains("without its '{'"));
        assert!(p[2].starts_with("client.command[3]: ") && p[2].contains("{node}"));

        let t = CommandTemplate::parse(&[
            "run".to_string(),
            "{{\"k\":\"{key_file}\"}}".to_string(),
            "{address}{address}".to_string(),
            String::new(),
        ])
        .unwrap();
        assert!(t.uses(Placeholder::KeyFile) && t.uses(Placeholder::Address));
        assert!(!t.uses(Placeholder::PasswordFile));
        let argv = t.render(&Substitutions {
            key_file: Path::new("/r/key"),
            password_file: None,
            address: "0x01",
        });
        assert_eq!(argv, ["run", r#"{"k":"/r/key"}"#, "0x010x01", ""]);
    }

    #[test]
    fn keystore_v3_needs_a_password_file_and_only_it_takes_one() {
        assert_eq!(
            one_problem(&[("client.format", Some(r#""keystore-v3""#))]),
            "client.password_file: is required with format keystore-v3"
        );
        assert_eq!(
            one_problem(&[("client.password_file", Some(r#""/etc/pw""#))]),
            "client.password_file: is only used with keystore-v3, not with format raw-hex"
        );
        assert_eq!(
            one_problem(&[
                ("client.format", Some(r#""keystore-v3""#)),
                ("client.password_file", Some(r#""pw""#))
            ]),
            r#"client.password_file: "pw" must be an absolute path"#
        );
        assert_eq!(
            one_problem(&[(
                "client.command",
                Some(r#"["geth", "--password={password_file}"]"#)
            )]),
            "client.command: uses {password_file}, but client.password_file is not set"
        );
        let p = one_problem(&[("client.format", Some(r#""pem""#))]);
        assert!(
            p.starts_with("client.format: unknown key format \"pem\""),
            "{p}"
        );
        for f in ["besu", "nethermind"] {
            ok(&edits(&[("client.format", Some(&format!("{f:?}")))]));
        }
    }

    #[test]
    fn store_specs_use_the_shared_parsers() {
        let p = problems(&edits(&[
            ("store.leases", Some(r#""dir:/x""#)),
            ("store.secrets", Some(r#""s3:bucket""#)),
        ]));
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(
            p[0].starts_with("store.leases: unknown lease store \"dir\""),
            "{}",
            p[0]
        );
        assert!(
            p[1].starts_with("store.secrets: unknown secret store \"s3\""),
            "{}",
            p[1]
        );
        let c = ok(&edits(&[
            (
                "store.leases",
                Some(r#""blob:https://acct.blob.core.windows.net/leases""#),
            ),
            (
                "store.secrets",
                Some(r#""keyvault:https://kv1.vault.azure.net""#),
            ),
        ]));
        assert!(matches!(c.store.leases, LeaseStoreSpec::Blob { .. }));
        assert!(matches!(c.store.secrets, SecretStoreSpec::KeyVault { .. }));
    }

    #[test]
    fn required_settings_are_named_when_missing() {
        let p = problems(&edits(&[
            ("store.leases", None),
            ("store.secrets", None),
            ("identity.pool", None),
        ]));
        assert_eq!(
            p,
            [
                "store.leases: is required",
                "store.secrets: is required",
                "identity.pool: is required"
            ]
        );
    }

    #[test]
    fn the_pool_is_an_identity_name_prefix() {
        for bad in [r#""""#, r#""m0_""#, r#""m 0""#] {
            let p = one_problem(&[("identity.pool", Some(bad))]);
            assert!(p.starts_with("identity.pool: "), "{p}");
        }
        ok(&edits(&[("identity.pool", Some(r#""member-7""#))]));
    }

    #[test]
    fn http_listen_must_be_an_address_and_may_be_any_interface() {
        assert_eq!(
            one_problem(&[("http.listen", Some(r#""localhost""#))]),
            r#"http.listen: "localhost" is not an address and port, like 127.0.0.1:9797 or [::1]:9797"#
        );
        let c = ok(&edits(&[("http.listen", Some(r#""0.0.0.0:9797""#))]));
        assert_eq!(c.http.listen, "0.0.0.0:9797".parse().unwrap());
        let c = ok(&edits(&[("http.listen", None)]));
        assert_eq!(c.http.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn engine_signer_rpc_must_be_an_http_url_on_loopback() {
        for bad in [
            r#""127.0.0.1:8545""#,
            r#""http://""#,
            r#""ws://x:8546""#,
            r#""https://signer.internal/rpc""#,
            r#""http://10.0.0.5:8545""#,
        ] {
            let p = one_problem(&[("client.engine_signer_rpc", Some(bad))]);
            assert!(p.starts_with("client.engine_signer_rpc: "), "{p}");
        }
        for good in [
            r#""http://127.0.0.1:8545""#,
            r#""http://localhost:8545/""#,
            r#""http://[::1]:8545""#,
        ] {
            ok(&edits(&[("client.engine_signer_rpc", Some(good))]));
        }
    }

    #[test]
    fn crash_loop_and_fence_grace_are_checked() {
        assert_eq!(
            one_problem(&[("client.crash_loop_max_exits", Some("0"))]),
            "client.crash_loop_max_exits: 0 is outside 1–1000"
        );
        assert_eq!(
            one_problem(&[("client.crash_loop_window_secs", Some("0"))]),
            "client.crash_loop_window_secs: 0 must be at least 1"
        );
        assert_eq!(
            one_problem(&[("client.restart_backoff_millis", Some("50"))]),
            "client.restart_backoff_millis: 50 is below 100"
        );
        assert_eq!(
            one_problem(&[("client.fence_grace_millis", Some("2501"))]),
            "client.fence_grace_millis: 2501 is not well inside the margin: it must be at most M/2 = 2500 ms"
        );
        ok(&edits(&[("client.fence_grace_millis", Some("2500"))]));
        assert_eq!(
            one_problem(&[("client.fence_grace_millis", Some("0"))]),
            "client.fence_grace_millis: 0 must be at least 1"
        );
    }

    /// Found by the simulator (seeds 11406415, 11433691, 11794491): at D ≥ 30 s with
    /// M = 2 s, a grace of M/2 plus the backstop's 0.5 s plus the drift of ±1 % clocks over
    /// D outlasted M, so a client ignoring SIGTERM could sign after the store's lease ended.
    #[test]
    fn the_grace_fits_in_the_margin_with_the_backstop_and_clock_drift() {
        let at = |d: &'static str, m: &'static str, g: Option<&'static str>| {
            edits(&[
                ("lease.duration_secs", Some(d)),
                ("lease.margin_secs", Some(m)),
                ("client.fence_grace_millis", g),
            ])
        };
        // D = 30 s, M = 2 s: 2000 − 500 − 600 leaves 900 ms.
        let p = problems(&at("30", "2", Some("1000")));
        assert_eq!(
            p,
            [
                "client.fence_grace_millis: 1000 does not fit in the margin with the daemon's \
              backstop and clock drift: grace + 500 ms + D/50 (600 ms) must be at most \
              M = 2000 ms, so at most 900 ms (or widen lease.margin_secs)"
            ]
        );
        assert_eq!(ok(&at("30", "2", Some("900"))).client.fence_grace, ms(900));
        // D = 60 s, M = 2 s: the default (M/4 = 500 ms) gives way to the 300 ms limit.
        assert_eq!(ok(&at("60", "2", None)).client.fence_grace, ms(300));
        // D = 15 s, M = 2 s: M/2 still fits (2000 − 500 − 300 = 1200 ms).
        assert_eq!(
            ok(&at("15", "2", Some("1000"))).client.fence_grace,
            ms(1_000)
        );
        for d in 15..=60u64 {
            for m in 2..d.div_ceil(2) {
                let limit = max_fence_grace(Duration::from_secs(m), Duration::from_secs(d));
                assert!(limit >= ms(300), "D {d} s, M {m} s: no room for a grace");
            }
        }
    }

    #[test]
    fn the_azure_table_is_checked_when_a_store_is_on_azure() {
        let azure_stores = edits(&[
            (
                "store.leases",
                Some("\"blob:https://a.blob.core.windows.net/leases\""),
            ),
            (
                "store.secrets",
                Some("\"keyvault:https://kv.vault.azure.net\""),
            ),
        ]);
        // The default credential (managed identity) needs nothing else.
        ok(&azure_stores);
        let p = problems(&format!(
            "{azure_stores}\n[azure]\ncredential = \"client-secret\"\ntenant_id = \"t\"\n"
        ));
        assert_eq!(
            p,
            [
                "azure.client_id: is required with credential = \"client-secret\"",
                "azure.client_secret_file: is required with credential = \"client-secret\"",
            ]
        );
        let p = problems(&format!("{azure_stores}\n[azure]\ncredentail = \"x\"\n"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("azure: unknown field `credentail`"),
            "{p:?}"
        );
        // Local stores ignore the table's combinations, but not its syntax.
        let local = edits(&[]);
        ok(&format!(
            "{local}\n[azure]\ncredential = \"client-secret\"\n"
        ));
    }

    #[test]
    fn unknown_settings_and_sections_are_errors_with_their_names() {
        let text = edits(&[
            ("lease.duraton_secs", Some("15")),
            ("client.restart_backof_millis", Some("100")),
            ("http.port", Some("9797")),
            ("extra.thing", Some("1")),
        ]);
        let text = format!("nodes = \"x\"\n{text}");
        let p = problems(&text);
        assert_eq!(
            p,
            [
                "extra: unknown setting; known here: node, runtime_dir, store, identity, lease, client, http, azure",
                "nodes: unknown setting (did you mean node?)",
                "lease.duraton_secs: unknown setting (did you mean duration_secs?)",
                "client.restart_backof_millis: unknown setting (did you mean restart_backoff_millis?)",
                "http.port: unknown setting; known here: listen",
            ]
        );
    }

    #[test]
    fn wrong_types_are_reported_with_the_setting() {
        let text = edits(&[
            ("lease.duration_secs", Some(r#""15""#)),
            ("lease.margin_secs", Some("-3")),
            ("identity.quarantine_secs", Some("1.5")),
            ("node", Some("7")),
        ]);
        let text = format!(
            "http = 5\n{}",
            text.replace("[http]\nlisten = \"127.0.0.1:9797\"", "")
        );
        assert_eq!(
            problems(&text),
            [
                "http: must be a section ([http]), not an integer",
                "node: must be a string, not an integer",
                "identity.quarantine_secs: must be a whole number, not a float",
                "lease.duration_secs: must be a whole number, not a string",
                "lease.margin_secs: -3 is negative",
            ]
        );
    }

    #[test]
    fn every_problem_is_listed_not_just_the_first() {
        // The issue's acceptance list, plus a few more, all at once.
        let text = edits(&[
            ("lease.duration_secs", Some("10")),
            ("client.command", None),
            ("store.leases", Some(r#""nothing""#)),
            ("http.listen", Some(r#""nowhere""#)),
            ("client.format", Some(r#""keystore-v3""#)),
            ("lease.bogus", Some("1")),
        ]);
        let err = parse(&text).unwrap_err();
        assert_eq!(
            err.keys(),
            [
                "store.leases",
                "lease.duration_secs",
                "lease.bogus",
                "client.password_file",
                "client.command",
                "http.listen",
            ]
        );
        // A margin ≥ D/2 alongside a bad command.
        let text = edits(&[
            ("lease.margin_secs", Some("9")),
            ("client.command", Some(r#"["x", "{oops}"]"#)),
        ]);
        assert_eq!(
            parse(&text).unwrap_err().keys(),
            ["lease.margin_secs", "client.command[1]"]
        );
    }

    #[test]
    fn problems_display_as_a_list() {
        let err = parse(&edits(&[
            ("lease.duration_secs", Some("10")),
            ("client.command", None),
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "2 problems in the configuration:\n  lease.duration_secs: 10 is outside 15–60\n  client.command: is required"
        );
        let one = parse(&edits(&[("client.command", None)])).unwrap_err();
        assert!(one
            .to_string()
            .starts_with("1 problem in the configuration:"));
    }

    #[test]
    fn overrides_apply_before_validation() {
        let o = Overrides {
            node: Some("vm-9".into()),
            runtime_dir: Some("/run/other".into()),
            leases: Some("sqlite:/tmp/l.db".into()),
            secrets: Some("dir:/tmp/s".into()),
            pool: Some("m1-".into()),
            duration_secs: Some(30),
            listen: Some("127.0.0.1:1".into()),
        };
        // An override fixes a bad value in the file...
        let text = edits(&[("lease.duration_secs", Some("10"))]);
        let c = Config::parse(&text, &o).unwrap();
        assert_eq!(c.node, "vm-9");
        assert_eq!(c.runtime_dir, Path::new("/run/other"));
        assert_eq!(c.store.leases, LeaseStoreSpec::Sqlite("/tmp/l.db".into()));
        assert_eq!(c.store.secrets, SecretStoreSpec::Dir("/tmp/s".into()));
        assert_eq!(c.identity.pool, "m1-");
        assert_eq!(c.lease.duration, Duration::from_secs(30));
        assert_eq!(c.lease.renew_every, Duration::from_secs(10));
        assert_eq!(c.http.listen.port(), 1);
        // ...fills a section the file lacks...
        let text =
            edits(&[("store.leases", None), ("store.secrets", None)]).replace("[store]\n", "");
        Config::parse(&text, &o).unwrap();
        // ...and a bad override is reported under the setting's name.
        let bad = Overrides {
            duration_secs: Some(u64::MAX),
            listen: Some("x".into()),
            ..Overrides::default()
        };
        let err = Config::parse(EXAMPLE, &bad).unwrap_err();
        assert_eq!(err.keys(), ["lease.duration_secs", "http.listen"]);
    }

    #[test]
    fn node_defaults_to_the_hostname_and_must_be_printable() {
        let c = ok(&edits(&[("node", None)]));
        assert!(!c.node.is_empty());
        for bad in [r#""""#, r#""vm 1""#, r#""vm\t1""#] {
            let p = one_problem(&[("node", Some(bad))]);
            assert!(p.starts_with("node: "), "{p}");
        }
    }

    #[test]
    fn runtime_dir_must_be_absolute_and_defaults_to_run_leased() {
        assert_eq!(
            one_problem(&[("runtime_dir", Some(r#""run/leased""#))]),
            r#"runtime_dir: "run/leased" must be an absolute path"#
        );
        let c = ok(&edits(&[("runtime_dir", None)]));
        assert_eq!(c.runtime_dir, Path::new(DEFAULT_RUNTIME_DIR));
    }

    #[test]
    fn runtime_dir_rules() {
        let me = 1000;
        assert_eq!(check_runtime_dir(&DirState::Missing, me), Ok(()));
        assert_eq!(
            check_runtime_dir(
                &DirState::Directory {
                    mode: 0o700,
                    owner: me
                },
                me
            ),
            Ok(())
        );
        assert_eq!(
            check_runtime_dir(
                &DirState::Directory {
                    mode: 0o500,
                    owner: me
                },
                me
            ),
            Ok(())
        );
        let e = check_runtime_dir(
            &DirState::Directory {
                mode: 0o750,
                owner: me,
            },
            me,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "runtime_dir: has mode 0750; it holds the key file and must be private (chmod 700)"
        );
        assert!(check_runtime_dir(
            &DirState::Directory {
                mode: 0o701,
                owner: me
            },
            me
        )
        .is_err());
        let e = check_runtime_dir(
            &DirState::Directory {
                mode: 0o700,
                owner: 0,
            },
            me,
        )
        .unwrap_err();
        assert!(e.message.contains("owned by uid 0"), "{e}");
        assert!(check_runtime_dir(&DirState::NotADirectory, me).is_err());
    }

    #[test]
    fn inspect_dir_reads_the_filesystem() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            inspect_dir(&d.path().join("nope")).unwrap(),
            DirState::Missing
        );
        let f = d.path().join("file");
        std::fs::write(&f, b"").unwrap();
        assert_eq!(inspect_dir(&f).unwrap(), DirState::NotADirectory);
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o710)).unwrap();
        let DirState::Directory { mode, owner } = inspect_dir(d.path()).unwrap() else {
            panic!()
        };
        assert_eq!(mode, 0o710);
        assert_eq!(owner, nix::unistd::geteuid().as_raw());
    }

    fn write_config(dir: &Path, runtime_dir: &Path, changes: &[(&str, Option<&str>)]) -> PathBuf {
        let mut all = vec![];
        let rd = format!("{:?}", runtime_dir.display().to_string());
        all.push(("runtime_dir", Some(rd.as_str())));
        all.extend_from_slice(changes);
        let path = dir.join("leased.toml");
        std::fs::write(&path, edits(&all)).unwrap();
        path
    }

    #[test]
    fn load_accepts_the_example_with_a_private_runtime_dir() {
        let d = tempfile::tempdir().unwrap();
        let rt = d.path().join("rt");
        std::fs::create_dir(&rt).unwrap();
        std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = write_config(d.path(), &rt, &[]);
        let c = Config::load(&path, &Overrides::default()).unwrap();
        assert_eq!(c.runtime_dir, rt);
        // A runtime directory that does not exist yet is created private by the daemon.
        let path = write_config(d.path(), &d.path().join("later"), &[]);
        Config::load(&path, &Overrides::default()).unwrap();
    }

    #[test]
    fn load_reports_a_runtime_dir_that_is_not_private_among_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let rt = d.path().join("rt");
        std::fs::create_dir(&rt).unwrap();
        std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = write_config(
            d.path(),
            &rt,
            &[
                ("lease.duration_secs", Some("61")),
                ("lease.margin_secs", Some("8")),
                ("client.command", None),
            ],
        );
        let err = Config::load(&path, &Overrides::default()).unwrap_err();
        // D = 61 is out of range, so the margin rule against D is not checked on top of it.
        assert_eq!(
            err.keys(),
            ["runtime_dir", "lease.duration_secs", "client.command"]
        );
        assert!(err.as_slice()[0].message.contains("mode 0755"), "{err}");
        // An override pointing somewhere private fixes it.
        let o = Overrides {
            runtime_dir: Some(d.path().join("fresh")),
            ..Overrides::default()
        };
        let err = Config::load(&path, &o).unwrap_err();
        assert_eq!(err.keys(), ["lease.duration_secs", "client.command"]);
    }

    #[test]
    fn file_level_problems_name_the_file() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("absent.toml");
        let err = Config::load(&missing, &Overrides::default()).unwrap_err();
        assert_eq!(err.as_slice().len(), 1);
        assert_eq!(err.as_slice()[0].key, None);
        assert!(err.to_string().contains("absent.toml"), "{err}");

        let bad = d.path().join("bad.toml");
        std::fs::write(&bad, "node = \"a\"\n[lease\nduration_secs = 15\n").unwrap();
        let err = Config::load(&bad, &Overrides::default()).unwrap_err();
        let msg = err.as_slice()[0].to_string();
        assert!(
            msg.contains("bad.toml: not valid TOML: line 2, column"),
            "{msg}"
        );

        let binary = d.path().join("bin.toml");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
        let err = Config::load(&binary, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }

    #[test]
    fn machine_params_carry_the_settings() {
        let c = ok(&edits(&[
            ("lease.duration_secs", Some("30")),
            ("identity.quarantine_secs", Some("3")),
            ("client.crash_loop_max_exits", Some("4")),
        ]));
        let p = c.machine_params(99);
        assert_eq!(p.node, "vm-1");
        assert_eq!(p.lease, Duration::from_secs(30));
        assert_eq!(p.renew_every, Duration::from_secs(10));
        assert_eq!(p.margin, Duration::from_secs(10));
        assert_eq!(p.renew_retry, Duration::from_secs(1));
        assert_eq!(p.quarantine, Duration::from_secs(3));
        assert_eq!(p.standby_poll, ms(500));
        assert_eq!(p.poll_jitter, ms(125));
        assert_eq!(p.restart_backoff, ms(1_000));
        assert_eq!(p.crash_loop_max_exits, 4);
        assert_eq!(p.crash_loop_window, Duration::from_secs(60));
        assert_eq!(p.seed, 99);
    }

    /// Issue 10, item 12: the client's environment is exactly `[client.env]` plus a PATH.
    #[test]
    fn the_client_environment_is_listed_whole_and_checked() {
        let text =
            format!("{EXAMPLE}\n[client.env]\nGETH_CACHE = \"512\"\nPATH = \"/opt/geth/bin\"\n");
        let c = ok(&text);
        assert_eq!(
            c.client.env,
            [
                ("GETH_CACHE".to_string(), "512".to_string()),
                ("PATH".to_string(), "/opt/geth/bin".to_string()),
            ]
            .into()
        );
        let bad = format!(
            "{EXAMPLE}\n[client.env]\n\"1X\" = \"a\"\n\"A-B\" = \"b\"\nN = 3\nZ = \"a\\u0000b\"\n"
        );
        let p = problems(&bad);
        for key in [
            "client.env.1X",
            "client.env.A-B",
            "client.env.N",
            "client.env.Z",
        ] {
            assert!(p.iter().any(|l| l.starts_with(key)), "{key}: {p:#?}");
        }
        let p = one_problem(&[("client.env", Some("3"))]);
        assert!(p.starts_with("client.env"), "{p}");
    }

    #[test]
    fn the_start_timeout_is_checked() {
        let c = ok(&edits(&[("client.start_timeout_secs", Some("30"))]));
        assert_eq!(c.client.start_timeout, Duration::from_secs(30));
        assert_eq!(c.machine_params(0).start_timeout, Duration::from_secs(30));
        for bad in ["0", "301"] {
            let p = one_problem(&[("client.start_timeout_secs", Some(bad))]);
            assert!(p.contains("client.start_timeout_secs"), "{p}");
        }
    }
}
