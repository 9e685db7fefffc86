//! `leased run --config FILE`: the daemon's configuration, read once and validated whole.
//!
//! This module owns the file's names and every rule about their values. It reports every
//! problem it finds, each with the setting's dotted name (`lease.duration_secs: 10 is
//! outside 15–60`), never just the first; the binary prints them and exits 64. It never
//! reads key material: the password file is only a path, read at each hand-off, and the
//! password secret only a name.
//!
//! The file is read with the workspace's one idiom for configuration ([`shared::config`]):
//! its shape is the `File` structs at the end of this module, one per section (`[azure]`
//! is [`shared::azure::AzureTable`], read by [`AzureOptions::read`]), and `build` is the
//! validation pass that applies the rules below, section by section.
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
//! standby_poll_millis = 500          # a standby's look while the store is failing
//! nudge_listen = "127.0.0.1:0"       # UDP address releases elsewhere nudge; "off"
//! [client]
//! format  = "raw-hex"                # see "Client formats" below
//! # password_file = "/etc/leased/keystore-password"   # or:
//! # password_secret = "keystore-password"             # a secret in store.secrets
//! command = ["besu", "--node-private-key-file={key_file}"]
//! # engine_signer_rpc = "http://127.0.0.1:8545"
//! # unlock_rpc = "http://127.0.0.1:8545"   # geth: unlocked over its RPC once in sync
//! # sync_with = ["http://10.0.1.5:8545"]   # the sync gate's peers
//! # enode = "enode://{node_id}@10.0.1.7:30303"   # registered while holding
//! # node_key_file = "/var/lib/geth/geth/nodekey" # whose public key is {node_id}
//! restart_backoff_millis = 1000      # first restart delay; doubles per recent exit
//! crash_loop_max_exits = 5           # K exits ...
//! crash_loop_window_secs = 60        # ... within W give the identity up
//! fence_grace_millis = 1250          # SIGTERM to SIGKILL; default M/4
//! start_timeout_secs = 10            # key fetch + file + exec; a slower hand-off has failed
//! [client.env]                       # the client's whole environment, with PATH
//! # GETH_CACHE = "512"
//! [http]
//! listen = "127.0.0.1:9797"
//! # public = "0.0.0.0:8080"           # the Data API: GET /networkinfo, nothing else
//! [quarantine]                       # optional: the doppelganger watch
//! rpc = "http://127.0.0.1:8545"      # JSON-RPC of a peer, or of the local client following
//! engine = "clique"                  # clique, aura or qbft
//! window_secs = 30                   # no seal by the identity for this long, 1–600
//! [azure]                            # only for keyvault: and blob: stores
//! credential = "managed-identity"    # or "developer-tools", "client-secret"
//! # managed_identity_client_id = "…"  # a user-assigned identity
//! # ca_file = "/etc/leased/extra-ca.pem"
//! ```
//!
//! Client formats (`client.format`), each published in `runtime_dir` under one name:
//!
//! | format | what the client gets | placeholder |
//! |---|---|---|
//! | `raw-hex` | `validator.key`: 64 hex digits and a newline | `{key_file}` |
//! | `besu` | `validator.key`: `0x` and 64 hex digits (Besu's `--node-private-key-file`) | `{key_file}` |
//! | `nethermind` | `validator.key`: the 32 bytes (Nethermind's `node.key.plain`) | `{key_file}` |
//! | `keystore-v3` | `validator-keystore.json`, encrypted under the password | `{key_file}`, `{password_file}` |
//! | `geth-nodekey` | `nodekey`: 64 hex digits, no `0x`, no newline (geth's `--nodekey`) | `{key_file}` |
//! | `geth-keystore` | `keystore/`, a 0700 directory with one keystore-v3 file named `UTC--…--ADDRESS` (geth's `--keystore`, with `--password` and `--unlock {address}`) | `{keystore_dir}`, `{password_file}` |
//! | `nethermind-keystore` | the same directory, for Nethermind's `--KeyStore.KeyStoreDirectory`, `--KeyStore.PasswordFiles` and `--KeyStore.UnlockAccounts {address}` | `{keystore_dir}`, `{password_file}` |
//!
//! With `client.engine_signer_rpc` (OpenEthereum, Nethermind) the key goes over the RPC
//! instead, whatever the format.
//!
//! The password (`client.password_file` or `client.password_secret`, never both) serves
//! twice: it decrypts secrets stored as keystore-v3 (`orchestrator init --secret-format
//! keystore-v3`), and it encrypts the keystore a keystore format hands over. A keystore
//! format needs one; so do keystore-v3 secrets, whatever the format, which the daemon
//! checks against the pool's secrets at start-up (see `daemon::handoff`). With
//! `password_secret`, the secret's value is written to `runtime_dir/password` (0600) for
//! each hand-off whose command names `{password_file}`, and deleted with the key.
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
//! - `lease.nudge_listen`: `IP:PORT`, `{host_ip}:PORT` or `off`; not an unspecified
//!   address (0.0.0.0), since the address bound is the one announced to the other nodes.
//!   The default, loopback with any port, reaches only daemons on the same host; a fleet
//!   of VMs names a port on the VMs' network, e.g. `{host_ip}:7946`.
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
//! - `client.command` placeholders: `{key_file}` (file formats), `{keystore_dir}`
//!   (directory formats), `{password_file}` (only with a password file or secret) and
//!   `{address}`; `{{` and `}}` stand for literal braces.
//! - `client.engine_signer_rpc`: the key goes over the RPC and never to a file, so the
//!   command may not name `{key_file}` or `{keystore_dir}`.
//! - `client.unlock_rpc` (geth, format `geth-keystore` only) is loopback `http://` like
//!   `engine_signer_rpc` (the password travels in it), and not beside it. geth starts
//!   mining with the account locked; once it runs, the daemon unlocks it
//!   (`personal_unlockAccount`) and restarts the miner, and locks it first at the fence;
//!   so the command may not pass `--unlock`.
//! - `client.sync_with`: at most [`MAX_SYNC_PEERS`] `http://` JSON-RPC URLs of other
//!   validators, only with `unlock_rpc` or `engine_signer_rpc`. The signer is enabled only
//!   once the client has a peer, has no blocks left to fetch, and holds the head block of
//!   every listed peer that answers; at least one must (`daemon::gate`). Empty (the
//!   default): no gate, for a network of one. `client.start_timeout_secs` must then cover
//!   the sync too.
//! - `client.enode`: the client's enode URL with `{node_id}` for its node id (or written
//!   out). While the lease is held it is in the lease's metadata (`enode`), the live
//!   bootnode list that `leased status` and `orchestrator bootnodes` read; it is removed
//!   when the lease is given up. `{node_id}` is the public key of `client.node_key_file`
//!   (absolute; read at each hand-off; raw hex, as geth's `nodekey`) if set, else of the
//!   identity's key (Besu and `geth-nodekey` use the validator key as the node key).
//!   `{host_ip}` is the host's address as its route to other hosts uses it (found with a
//!   UDP socket's `connect`, which sends nothing).
//! - `client.password_secret` is a secret name (1–127 of 0-9, a-z, A-Z and '-'). The
//!   start-up check leaves it out of the pool's secrets even if it starts with
//!   `identity.pool`; no lease record is made for it, so it is never leased.
//! - `runtime_dir` and `client.password_file` must be absolute paths. If `runtime_dir`
//!   exists it must be a directory owned by the daemon's user with no group or other
//!   permissions; if it does not, the daemon creates it with mode 0700.
//! - `http.listen` may be any address; a non-loopback one is an explicit choice in the
//!   file, so it is allowed.
//! - `http.public` (optional, not `http.listen`): the consortium Data API, `GET
//!   /networkinfo` and nothing else (`data_api`), meant to be reachable by other members.
//! - `node` defaults to the hostname and must be 1–253 visible ASCII characters (it is
//!   written into lease metadata).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shared::azure::{AzureOptions, AzureTable};
use shared::config::{Field, Report, Section, Unknown};
use shared::keyfile::KeyFormat;
use shared::lease::{LeaseDuration, MAX_LEASE, MIN_LEASE};
use shared::name::Name;
use shared::spec::{LeaseStoreSpec, SecretStoreSpec};
use toml::{Table, Value};

pub use shared::config::{Problem, Problems};

use crate::machine::{self, Params};

/// The placeholder of `client.enode` for the client's node id.
pub const NODE_ID: &str = "{node_id}";
/// The placeholder of `client.enode` for the host's address: the source address of its
/// route to other hosts.
pub const HOST_IP: &str = "{host_ip}";

/// Most `client.sync_with` URLs.
pub const MAX_SYNC_PEERS: usize = 16;

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
    /// `[quarantine]`: the doppelganger watch; `None` when the section is absent.
    pub quarantine: Option<QuarantineConfig>,
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
    /// Where this daemon listens for release nudges; `None`: it does not.
    pub nudge_listen: Option<NudgeListen>,
}

/// `lease.nudge_listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NudgeListen {
    At(SocketAddr),
    /// `{host_ip}:PORT`: the host's address towards other hosts, found at start.
    HostIp(u16),
}

/// The default `lease.nudge_listen`: loopback, any port.
pub const DEFAULT_NUDGE_LISTEN: &str = "127.0.0.1:0";

/// `client.format`: the form in which the client takes its key (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFormat {
    /// `raw-hex`: 64 hex digits and a newline.
    RawHex,
    /// `besu`: `0x` and 64 hex digits.
    Besu,
    /// `nethermind`: the 32 key bytes (`node.key.plain`).
    Nethermind,
    /// `keystore-v3`: one keystore file, encrypted under the password.
    KeystoreV3,
    /// `geth-nodekey`: 64 hex digits without `0x` or newline.
    GethNodekey,
    /// `geth-keystore`: a keystore directory holding one keystore file.
    GethKeystore,
    /// `nethermind-keystore`: the same directory, for Nethermind.
    NethermindKeystore,
}

impl ClientFormat {
    pub const ALL: [Self; 7] = [
        Self::RawHex,
        Self::Besu,
        Self::Nethermind,
        Self::KeystoreV3,
        Self::GethNodekey,
        Self::GethKeystore,
        Self::NethermindKeystore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RawHex => "raw-hex",
            Self::Besu => "besu",
            Self::Nethermind => "nethermind",
            Self::KeystoreV3 => "keystore-v3",
            Self::GethNodekey => "geth-nodekey",
            Self::GethKeystore => "geth-keystore",
            Self::NethermindKeystore => "nethermind-keystore",
        }
    }

    /// The key-file format, for the formats that are one file in a [`KeyFormat`].
    pub fn key_format(self) -> Option<KeyFormat> {
        match self {
            Self::RawHex => Some(KeyFormat::RawHex),
            Self::Besu => Some(KeyFormat::Besu),
            Self::Nethermind => Some(KeyFormat::Nethermind),
            Self::KeystoreV3 => Some(KeyFormat::KeystoreV3),
            Self::GethNodekey | Self::GethKeystore | Self::NethermindKeystore => None,
        }
    }

    /// Whether the client gets a directory (`{keystore_dir}`) rather than a file.
    pub fn is_directory(self) -> bool {
        matches!(self, Self::GethKeystore | Self::NethermindKeystore)
    }

    /// Whether the client gets the key encrypted, so that a password is required.
    pub fn needs_password(self) -> bool {
        matches!(
            self,
            Self::KeystoreV3 | Self::GethKeystore | Self::NethermindKeystore
        )
    }
}

impl std::fmt::Display for ClientFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ClientFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|f| f.as_str()).collect();
                format!(
                    "unknown client format {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// `[client]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub format: ClientFormat,
    /// The keystore password, read from this file at each hand-off.
    pub password_file: Option<PathBuf>,
    /// The keystore password, fetched from this secret at each hand-off.
    pub password_secret: Option<Name>,
    pub command: CommandTemplate,
    /// Set the key through `parity_setEngineSignerSecret` instead of restarting the client.
    pub engine_signer_rpc: Option<String>,
    /// geth's JSON-RPC: the client starts mining with its account locked, and the daemon
    /// unlocks it and restarts the miner once the sync gate opens.
    pub unlock_rpc: Option<String>,
    /// The sync gate: peers' JSON-RPC URLs whose head the client must have before it is
    /// given the key (`engine_signer_rpc`) or unlocked (`unlock_rpc`).
    pub sync_with: Vec<String>,
    /// This client's enode URL, `{node_id}` standing for its node id: written into the
    /// lease's metadata while it holds, for the live bootnode list.
    pub enode: Option<String>,
    /// The client's node key, whose public key is `{node_id}`; without it, the
    /// identity's key is (a client that uses the validator key as its node key).
    pub node_key_file: Option<PathBuf>,
    pub restart_backoff: Duration,
    pub crash_loop_max_exits: u32,
    pub crash_loop_window: Duration,
    /// Time between SIGTERM and SIGKILL when fencing.
    pub fence_grace: Duration,
    /// How long a hand-off may take before it counts as failed.
    pub start_timeout: Duration,
    /// The client's whole environment (`PATH` included).
    pub env: BTreeMap<String, String>,
}

/// `[http]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The Data API's listener (`GET /networkinfo` only), when set.
    pub public: Option<SocketAddr>,
}

/// `[quarantine]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineConfig {
    /// The JSON-RPC whose blocks are watched.
    pub rpc: String,
    pub engine: shared::seal::Engine,
    /// No seal by the identity for this long after acquiring, before the hand-off.
    pub window: Duration,
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

impl Config {
    /// Reads `path`, applies `overrides`, and validates everything, including the runtime
    /// directory on disk.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Self, Problems> {
        let text = shared::fsutil::read_limited(path, MAX_FILE_BYTES)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                String::from_utf8(bytes).map_err(|_| "the file is not UTF-8 text".to_string())
            })
            .map_err(|e| Problems::from(vec![Problem::file(format!("{}: {e}", path.display()))]))?;
        let our_uid = nix::unistd::geteuid().as_raw();
        let check_dir = |dir: &Path| match inspect_dir(dir) {
            Ok(state) => check_runtime_dir(&state, our_uid).err(),
            Err(e) => Some(Problem::at(
                "runtime_dir",
                format!("cannot inspect it: {e}"),
            )),
        };
        build(&text, overrides, check_dir).map_err(|ps| {
            Problems::from(
                ps.into_vec()
                    .into_iter()
                    .map(|p| match p.key {
                        Some(_) => p,
                        None => Problem::file(format!("{}: {}", path.display(), p.message)),
                    })
                    .collect::<Vec<_>>(),
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
        p.pool.clone_from(&self.identity.pool);
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
        p.engine_signer =
            self.client.engine_signer_rpc.is_some() || self.client.unlock_rpc.is_some();
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
    KeystoreDir,
    PasswordFile,
    Address,
}

impl Placeholder {
    const ALL: [Self; 4] = [
        Self::KeyFile,
        Self::KeystoreDir,
        Self::PasswordFile,
        Self::Address,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::KeyFile => "key_file",
            Self::KeystoreDir => "keystore_dir",
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
    /// What was published for the client: the key file, or the keystore directory (for
    /// `{keystore_dir}`); validation lets the command name only the one its format has.
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
                        Piece::Slot(Placeholder::KeyFile | Placeholder::KeystoreDir) => {
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
                            "unknown placeholder {{{name}}}; allowed: {{key_file}}, {{keystore_dir}}, {{password_file}}, {{address}}"
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

// ---- reading the file (shared::config) ----

/// `leased.toml` as written, one struct per section; [`build`] checks it.
#[derive(Deserialize, Default)]
struct File {
    node: Field<String>,
    runtime_dir: Field<PathBuf>,
    store: Section<StoreFile>,
    identity: Section<IdentityFile>,
    lease: Section<LeaseFile>,
    client: Section<ClientFile>,
    http: Section<HttpFile>,
    quarantine: Section<QuarantineFile>,
    azure: Section<AzureTable>,
}

#[derive(Deserialize, Default)]
struct StoreFile {
    leases: Field<String>,
    secrets: Field<String>,
}

#[derive(Deserialize, Default)]
struct IdentityFile {
    pool: Field<String>,
    quarantine_secs: Field<u64>,
}

#[derive(Deserialize, Default)]
struct LeaseFile {
    duration_secs: Field<u64>,
    renew_every_secs: Field<u64>,
    margin_secs: Field<u64>,
    standby_poll_millis: Field<u64>,
    nudge_listen: Field<String>,
}

#[derive(Deserialize, Default)]
struct ClientFile {
    format: Field<String>,
    password_file: Field<PathBuf>,
    password_secret: Field<String>,
    command: Field<Vec<String>>,
    engine_signer_rpc: Field<String>,
    unlock_rpc: Field<String>,
    sync_with: Field<Vec<String>>,
    enode: Field<String>,
    node_key_file: Field<PathBuf>,
    restart_backoff_millis: Field<u64>,
    crash_loop_max_exits: Field<u64>,
    crash_loop_window_secs: Field<u64>,
    fence_grace_millis: Field<u64>,
    start_timeout_secs: Field<u64>,
    /// A table read whole, so that each variable is checked on its own.
    env: Field<Table>,
}

#[derive(Deserialize, Default)]
struct HttpFile {
    listen: Field<String>,
    public: Field<String>,
}

#[derive(Deserialize, Default)]
struct QuarantineFile {
    rpc: Field<String>,
    engine: Field<shared::seal::Engine>,
    window_secs: Field<u64>,
}

/// A duration setting in whole `unit`s: `default` when absent; `None` when wrong or when
/// `check` refuses it (reported as "N complaint").
fn duration(
    r: &mut Report,
    key: &str,
    field: Field<u64>,
    unit: Duration,
    default: Duration,
    check: impl FnOnce(Duration) -> Result<(), String>,
) -> Option<Duration> {
    let Some(n) = r.optional(key, field)? else {
        return Some(default);
    };
    let d = unit.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
    match check(d) {
        Ok(()) => Some(d),
        Err(m) => {
            r.problem(key, format!("{n} {m}"));
            None
        }
    }
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

fn build(
    text: &str,
    overrides: &Overrides,
    check_dir: impl FnOnce(&Path) -> Option<Problem>,
) -> Result<Config, Problems> {
    let mut root = shared::config::parse(text).map_err(|p| Problems::from(vec![p]))?;
    apply_overrides(&mut root, overrides);

    let mut r = Report::default();
    let (file, top) = r.open("", Section::<File>::read(root));
    // Every section first: one that is not a table is a problem with the file's layout.
    let store = r.open("store", file.store);
    let identity = r.open("identity", file.identity);
    let lease = r.open("lease", file.lease);
    let client = r.open("client", file.client);
    let http = r.open("http", file.http);
    let quarantine = r.open("quarantine", file.quarantine);

    let node = read_node(&mut r, file.node);
    let runtime_dir = read_runtime_dir(&mut r, file.runtime_dir, check_dir);
    r.finish(top);
    let store = read_store(&mut r, store, file.azure);
    let identity = read_identity(&mut r, identity);
    let lease = read_lease(&mut r, lease);
    let client = read_client(
        &mut r,
        client,
        lease.as_ref().map(|l| (l.margin, l.duration)),
    );
    let http = read_http(&mut r, http);
    let quarantine = read_quarantine(&mut r, quarantine);

    match (
        node,
        runtime_dir,
        store,
        identity,
        lease,
        client,
        http,
        quarantine,
    ) {
        (
            Some(node),
            Some(runtime_dir),
            Some(store),
            Some(identity),
            Some(lease),
            Some(client),
            Some(http),
            Some(quarantine),
        ) if r.is_empty() => Ok(Config {
            node,
            runtime_dir,
            store,
            identity,
            lease,
            client,
            http,
            quarantine,
        }),
        _ => {
            debug_assert!(!r.is_empty(), "a setting failed without a problem");
            Err(Problems::from(r.into_problems()))
        }
    }
}

fn read_node(r: &mut Report, field: Field<String>) -> Option<String> {
    let node = match r.optional("node", field)? {
        Some(n) => n,
        None => match nix::unistd::gethostname().map(|h| h.into_string()) {
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
    r: &mut Report,
    field: Field<PathBuf>,
    check_dir: impl FnOnce(&Path) -> Option<Problem>,
) -> Option<PathBuf> {
    let dir = r.or("runtime_dir", field, PathBuf::from(DEFAULT_RUNTIME_DIR))?;
    if !dir.is_absolute() {
        r.problem(
            "runtime_dir",
            format!("{:?} must be an absolute path", dir.display().to_string()),
        );
        return None;
    }
    if let Some(p) = check_dir(&dir) {
        r.push(p);
        return None;
    }
    Some(dir)
}

/// `[store]`, then `[azure]`: its settings always, their combination only when a store is
/// on Azure.
fn read_store(
    r: &mut Report,
    (s, unknown): (StoreFile, Unknown),
    azure: Section<AzureTable>,
) -> Option<StoreConfig> {
    let leases = r.required("store.leases", s.leases).and_then(|v| {
        v.parse::<LeaseStoreSpec>()
            .map_err(|e| r.problem("store.leases", e.to_string()))
            .ok()
    });
    let secrets = r.required("store.secrets", s.secrets).and_then(|v| {
        v.parse::<SecretStoreSpec>()
            .map_err(|e| r.problem("store.secrets", e.to_string()))
            .ok()
    });
    r.finish(unknown);
    let azure = AzureOptions::read(r, "azure", azure)?;
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

fn read_identity(r: &mut Report, (s, unknown): (IdentityFile, Unknown)) -> Option<IdentityConfig> {
    let pool = r.required("identity.pool", s.pool).and_then(|p| {
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
    let quarantine = duration(
        r,
        "identity.quarantine_secs",
        s.quarantine_secs,
        Duration::from_secs(1),
        Duration::ZERO,
        |_| Ok(()),
    );
    r.finish(unknown);
    Some(IdentityConfig {
        pool: pool?,
        quarantine: quarantine?,
    })
}

/// Seconds for messages: 7.5, 5, 5.33.
fn secs(d: Duration) -> String {
    format!("{}", (d.as_secs_f64() * 100.0).round() / 100.0)
}

fn read_lease(r: &mut Report, (s, unknown): (LeaseFile, Unknown)) -> Option<LeaseConfig> {
    let sec = Duration::from_secs(1);
    let d = duration(
        r,
        "lease.duration_secs",
        s.duration_secs,
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
    let m = duration(
        r,
        "lease.margin_secs",
        s.margin_secs,
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
    let r_every = duration(
        r,
        "lease.renew_every_secs",
        s.renew_every_secs,
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
    let poll = duration(
        r,
        "lease.standby_poll_millis",
        s.standby_poll_millis,
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
    let nudge = r
        .or(
            "lease.nudge_listen",
            s.nudge_listen,
            DEFAULT_NUDGE_LISTEN.to_string(),
        )
        .and_then(|text| match nudge_listen(&text) {
            Ok(n) => Some(n),
            Err(e) => {
                r.problem("lease.nudge_listen", e);
                None
            }
        });
    r.finish(unknown);
    Some(LeaseConfig {
        duration: d?,
        renew_every: r_every?,
        margin: m?,
        standby_poll: poll?,
        nudge_listen: nudge?,
    })
}

fn nudge_listen(text: &str) -> Result<Option<NudgeListen>, String> {
    if text == "off" {
        return Ok(None);
    }
    if let Some(port) = text.strip_prefix(HOST_IP).and_then(|p| p.strip_prefix(':')) {
        return match port.parse::<u16>() {
            Ok(p) if p != 0 => Ok(Some(NudgeListen::HostIp(p))),
            _ => Err(format!(
                "{text:?}: {HOST_IP} needs a fixed port, like {HOST_IP}:7946 (the other VMs send to it)"
            )),
        };
    }
    match text.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => Err(format!(
            "{text:?} is no address the other nodes can send to: name one, or {HOST_IP}:PORT"
        )),
        Ok(a) => Ok(Some(NudgeListen::At(a))),
        Err(_) => Err(format!(
            "{text:?} is not an address and port like 127.0.0.1:0 or {HOST_IP}:7946, nor \"off\""
        )),
    }
}

/// The longest fence grace that margin `m` covers at lease duration `d`: the grace, the
/// daemon's backstop slack and the drift of two ±1 % clocks over `d` (D/50) must all fit
/// in M (see the module docs). Zero when nothing fits.
pub fn max_fence_grace(m: Duration, d: Duration) -> Duration {
    m.saturating_sub(crate::daemon::BACKSTOP_SLACK)
        .saturating_sub(d / 50)
}

fn read_client(
    r: &mut Report,
    (s, unknown): (ClientFile, Unknown),
    margin: Option<(Duration, Duration)>,
) -> Option<ClientConfig> {
    let format = r
        .or("client.format", s.format, "raw-hex".into())
        .and_then(|f| {
            f.parse::<ClientFormat>()
                .map_err(|e| r.problem("client.format", e))
                .ok()
        });
    let password_file = r
        .optional("client.password_file", s.password_file)
        .and_then(|p| match p {
            Some(p) if !p.is_absolute() => {
                r.problem(
                    "client.password_file",
                    format!("{:?} must be an absolute path", p.display().to_string()),
                );
                None
            }
            p => Some(p),
        });
    let password_secret = r
        .optional("client.password_secret", s.password_secret)
        .and_then(|n| match n.map(Name::new).transpose() {
            Ok(n) => Some(n),
            Err(e) => {
                r.problem("client.password_secret", e.to_string());
                None
            }
        });
    // Whether a password is configured; unknown (None) when either setting is wrong.
    let has_password = match (&password_file, &password_secret) {
        (Some(Some(_)), Some(Some(_))) => {
            r.problem(
                "client.password_secret",
                "cannot be set together with client.password_file: the password comes from one place",
            );
            None
        }
        (Some(f), Some(n)) => Some(f.is_some() || n.is_some()),
        _ => None,
    };
    if let (Some(f), Some(false)) = (format, has_password) {
        if f.needs_password() {
            r.problem(
                "client.password_file",
                format!("is required with format {f} (or set client.password_secret)"),
            );
        }
    }

    // geth's own unlock at start would seal before the sync gate opens.
    let mut unlocks_at_start = false;
    let command = r.required("client.command", s.command).and_then(|args| {
        unlocks_at_start = args
            .iter()
            .any(|a| a == "--unlock" || a.starts_with("--unlock="));
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
    if let (Some(cmd), Some(false)) = (&command, has_password) {
        if cmd.uses(Placeholder::PasswordFile) {
            r.problem(
                "client.command",
                "uses {password_file}, but neither client.password_file nor client.password_secret is set",
            );
        }
    }
    if let (Some(cmd), Some(f)) = (&command, format) {
        if f.is_directory() && cmd.uses(Placeholder::KeyFile) {
            r.problem(
                "client.command",
                format!("uses {{key_file}}, but format {f} hands over a directory: use {{keystore_dir}}"),
            );
        }
        if !f.is_directory() && cmd.uses(Placeholder::KeystoreDir) {
            r.problem(
                "client.command",
                format!(
                    "uses {{keystore_dir}}, but format {f} hands over a file: use {{key_file}}"
                ),
            );
        }
    }

    let rpc = loopback_rpc(
        r,
        "client.engine_signer_rpc",
        s.engine_signer_rpc,
        "the key",
    );
    // One way in: with an engine signer the key never reaches a file.
    if let (Some(cmd), Some(Some(_))) = (&command, &rpc) {
        for p in [Placeholder::KeyFile, Placeholder::KeystoreDir] {
            if cmd.uses(p) {
                r.problem(
                    "client.command",
                    format!(
                        "uses {{{}}}, but with client.engine_signer_rpc the key goes over the RPC \
                         and nothing is written for the client",
                        p.name()
                    ),
                );
            }
        }
    }

    let unlock = loopback_rpc(r, "client.unlock_rpc", s.unlock_rpc, "the password");
    if let Some(Some(_)) = &unlock {
        if let Some(Some(_)) = &rpc {
            r.problem(
                "client.unlock_rpc",
                "cannot be set together with client.engine_signer_rpc: the signer is enabled one way",
            );
        }
        if let Some(f) = format.filter(|f| *f != ClientFormat::GethKeystore) {
            r.problem(
                "client.unlock_rpc",
                format!("unlocks a geth keystore account: it needs format geth-keystore, not {f}"),
            );
        }
    }
    if let (Some(Some(_)), true) = (&unlock, unlocks_at_start) {
        r.problem(
            "client.command",
            "passes --unlock, but with client.unlock_rpc the daemon unlocks the account once \
             the client has synced: unlocked at start, geth may seal before it syncs",
        );
    }
    let sync_with = r
        .or("client.sync_with", s.sync_with, Vec::new())
        .and_then(|urls| {
            let mut ok = true;
            if urls.len() > MAX_SYNC_PEERS {
                r.problem(
                    "client.sync_with",
                    format!("lists {} URLs; at most {MAX_SYNC_PEERS}", urls.len()),
                );
                ok = false;
            }
            for (i, u) in urls.iter().enumerate() {
                let good = url::Url::parse(u)
                    .is_ok_and(|url| url.scheme() == "http" && url.host().is_some());
                if !good {
                    r.problem(
                        format!("client.sync_with[{i}]"),
                        format!("{u:?} must be an http:// JSON-RPC URL"),
                    );
                    ok = false;
                }
            }
            ok.then_some(urls)
        });
    if let (Some(urls), Some(None), Some(None)) = (&sync_with, &rpc, &unlock) {
        if !urls.is_empty() {
            r.problem(
                "client.sync_with",
                "gates the signer, which needs client.unlock_rpc (geth) or client.engine_signer_rpc",
            );
        }
    }

    let enode = r.optional("client.enode", s.enode).and_then(|e| match e {
        Some(e)
            if !shared::enode::is_enode_url(
                &e.replace(NODE_ID, &"0".repeat(128)).replace(HOST_IP, "10.0.0.1"),
            ) =>
        {
            r.problem(
                "client.enode",
                format!(
                    "{e:?} is not an enode://{NODE_ID}@HOST:PORT URL (HOST may be {HOST_IP}; the node id may be written out)"
                ),
            );
            None
        }
        e => Some(e),
    });
    let node_key_file = r
        .optional("client.node_key_file", s.node_key_file)
        .and_then(|p| match p {
            Some(p) if !p.is_absolute() => {
                r.problem(
                    "client.node_key_file",
                    format!("{} must be an absolute path", p.display()),
                );
                None
            }
            p => Some(p),
        });
    if let (Some(Some(_)), Some(e)) = (&node_key_file, &enode) {
        if !e.as_deref().is_some_and(|e| e.contains(NODE_ID)) {
            r.problem(
                "client.node_key_file",
                format!("gives {NODE_ID}, which client.enode does not use"),
            );
        }
    }

    let ms = Duration::from_millis(1);
    let backoff = duration(
        r,
        "client.restart_backoff_millis",
        s.restart_backoff_millis,
        ms,
        Duration::from_secs(1),
        |b| match b < Duration::from_millis(100) {
            true => Err("is below 100".into()),
            false => Ok(()),
        },
    );
    let max_exits = r
        .or("client.crash_loop_max_exits", s.crash_loop_max_exits, 5)
        .and_then(|n| match u32::try_from(n) {
            Ok(n) if (1..=1000).contains(&n) => Some(n),
            _ => {
                r.problem(
                    "client.crash_loop_max_exits",
                    format!("{n} is outside 1–1000"),
                );
                None
            }
        });
    let window = duration(
        r,
        "client.crash_loop_window_secs",
        s.crash_loop_window_secs,
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
    let grace = duration(
        r,
        "client.fence_grace_millis",
        s.fence_grace_millis,
        ms,
        default_grace,
        |g| match (margin, limit) {
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
        },
    );
    let start_timeout = duration(
        r,
        "client.start_timeout_secs",
        s.start_timeout_secs,
        Duration::from_secs(1),
        machine::DEFAULT_START_TIMEOUT,
        |t| match (1..=300).contains(&t.as_secs()) {
            true => Ok(()),
            false => Err("is outside 1–300".into()),
        },
    );
    let env = read_client_env(r, s.env);
    r.finish(unknown);
    Some(ClientConfig {
        format: format?,
        password_file: password_file?,
        password_secret: password_secret?,
        command: command?,
        engine_signer_rpc: rpc?,
        unlock_rpc: unlock?,
        sync_with: sync_with?,
        enode: enode?,
        node_key_file: node_key_file?,
        restart_backoff: backoff?,
        crash_loop_max_exits: max_exits?,
        crash_loop_window: window?,
        fence_grace: grace?,
        start_timeout: start_timeout?,
        env: env?,
    })
}

/// An optional JSON-RPC URL that carries `what`: loopback `http://` only.
fn loopback_rpc(
    r: &mut Report,
    key: &str,
    field: Field<String>,
    what: &str,
) -> Option<Option<String>> {
    r.optional(key, field).and_then(|u| match u {
        Some(u) if !shared::net::is_loopback_http(&u) => {
            r.problem(
                key,
                format!(
                    "{u:?} must be an http://HOST:PORT URL on loopback (127.0.0.1, [::1] or localhost): {what} travels in it"
                ),
            );
            None
        }
        u => Some(u),
    })
}

/// `[client.env]`: a table of strings. `PATH` defaults to [`DEFAULT_CLIENT_PATH`].
fn read_client_env(r: &mut Report, field: Field<Table>) -> Option<BTreeMap<String, String>> {
    let mut env = BTreeMap::from([("PATH".to_string(), DEFAULT_CLIENT_PATH.to_string())]);
    let Some(table) = r.optional("client.env", field)? else {
        return Some(env);
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
        match r.optional(&key, Field::<String>::from_value(value)) {
            Some(Some(v)) if !v.contains('\0') => {
                env.insert(name, v);
            }
            Some(Some(_)) => {
                r.problem(key, "contains a NUL character");
                ok = false;
            }
            _ => ok = false,
        }
    }
    ok.then_some(env)
}

fn read_http(r: &mut Report, (s, unknown): (HttpFile, Unknown)) -> Option<HttpConfig> {
    let listen = r
        .or("http.listen", s.listen, DEFAULT_LISTEN.to_string())
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
    let public = r.optional("http.public", s.public).and_then(|p| match p {
        None => Some(None),
        Some(p) => match p.parse::<SocketAddr>() {
            Ok(a) if Some(a) == listen => {
                r.problem(
                    "http.public",
                    format!("{p:?} is http.listen too: the public listener serves /networkinfo alone, on an address of its own"),
                );
                None
            }
            Ok(a) => Some(Some(a)),
            Err(_) => {
                r.problem(
                    "http.public",
                    format!("{p:?} is not an address and port, like 0.0.0.0:8080"),
                );
                None
            }
        },
    });
    r.finish(unknown);
    Some(HttpConfig {
        listen: listen?,
        public: public?,
    })
}

/// `[quarantine]`: absent (`Some(None)`), or all of it checked.
fn read_quarantine(
    r: &mut Report,
    (s, unknown): (QuarantineFile, Unknown),
) -> Option<Option<QuarantineConfig>> {
    let absent = matches!(s.rpc, Field::Absent)
        && matches!(s.engine, Field::Absent)
        && matches!(s.window_secs, Field::Absent);
    if absent {
        r.finish(unknown);
        return Some(None);
    }
    let rpc = r
        .required("quarantine.rpc", s.rpc)
        .and_then(|u| match url::Url::parse(&u) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Some(u),
            _ => {
                r.problem(
                    "quarantine.rpc",
                    format!("{u:?} must be an http:// or https:// JSON-RPC URL"),
                );
                None
            }
        });
    let engine = r.required("quarantine.engine", s.engine);
    let window = duration(
        r,
        "quarantine.window_secs",
        s.window_secs,
        Duration::from_secs(1),
        DEFAULT_QUARANTINE_WINDOW,
        |w| match w {
            w if w < Duration::from_secs(1) || w > Duration::from_secs(600) => {
                Err(format!("{} is outside 1–600", w.as_secs()))
            }
            _ => Ok(()),
        },
    );
    r.finish(unknown);
    Some(Some(QuarantineConfig {
        rpc: rpc?,
        engine: engine?,
        window: window?,
    }))
}

/// The default `quarantine.window_secs`.
pub const DEFAULT_QUARANTINE_WINDOW: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests;
