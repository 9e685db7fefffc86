//! The key's way from the secret store to the client: over the engine-signer RPC when the
//! config names one, in a key file or keystore directory otherwise, never both.
//!
//! A hand-off fetches the secret, decodes it (a raw-hex secret as it is, a keystore-v3
//! secret decrypted with the password from `client.password_file` or
//! `client.password_secret`; the key and the password are zeroized when dropped), encodes
//! it in the client's format (a keystore's KDF is the slow part, so it runs on the
//! blocking pool) and writes it, 0600, under a staging name of its own (`.handoff-N`) in
//! the private runtime directory. A directory format stages a 0700 directory of that name
//! holding the one keystore file; a password from a secret that the command names is
//! staged beside it as `.handoff-N.password`. Only the control loop publishes them, each
//! by one rename (of the file or of the whole directory, so a client never sees a
//! directory without its keystore), and only while that hand-off is still the current one:
//! a fence that overtakes a slow hand-off cancels it, and nothing is then published. What
//! was published has one owner, the [`KeyFile`] held with the guard whose client was given
//! it: dropping it zeroes and deletes the file, directory and password file. The guard is
//! given the same paths (`--key-file`, `--password-file`), so it and its janitor delete
//! them too. Start-up and exit sweep the runtime directory of whatever a daemon that died
//! left.
//!
//! At start-up, [`check_pool_secrets`] compares the pool's secrets with what the client
//! config can read (see its docs), so that a pool of keystore-v3 secrets without a
//! password is a start-up error rather than a failure at the first hand-off.
//!
//! Nothing here puts key material or a password in an error or a log line.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shared::keyfile::{self, CONTENT_TYPE_RAW_HEX};
use shared::keystore::{self, KdfParams};
use shared::name::Name;
use shared::secret::{Secret, SecretStore, SecretValue};
use shared::{fsutil, ValidatorKey};
use zeroize::Zeroizing;

use super::{Driver, Msg};
use crate::config::{ClientFormat, Config, Placeholder};
use crate::machine::{Event, Lease, MonoTime, Ticket};

/// Prefix of a hand-off's staging file or directory in the runtime directory.
const STAGING_PREFIX: &str = ".handoff-";
/// Suffix of a hand-off's staged password file.
const PASSWORD_SUFFIX: &str = ".password";
/// The password file leased writes when the password comes from a secret.
const PASSWORD_FILE: &str = "password";
/// Everything a client may be handed, by format, and the password file: all swept at
/// start-up and exit.
const PUBLISHED_NAMES: [&str; 5] = [
    "validator.key",
    "validator-keystore.json",
    "nodekey",
    "keystore",
    PASSWORD_FILE,
];
/// How long the start-up check waits for the secret store's list.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// The hand-off under way; a fence or a newer hand-off cancels it.
pub(super) struct HandOff {
    pub(super) run: Ticket,
    cancelled: Arc<AtomicBool>,
}

impl HandOff {
    pub(super) fn new(run: Ticket) -> Self {
        Self {
            run,
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// For the hand-off's blocking work: true once it must not write.
    pub(super) fn cancelled(&self) -> impl Fn() -> bool + Send + 'static {
        let flag = self.cancelled.clone();
        move || flag.load(Ordering::SeqCst)
    }

    pub(super) fn cancel(self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }
}

/// What a finished hand-off gives the loop.
pub(super) struct Staged {
    /// The identity's address.
    pub(super) address: String,
    /// The staging file or directory holding the key in the client's format; none when
    /// the key goes over the engine-signer RPC.
    pub(super) key: Option<PathBuf>,
    /// The staged password file, when the password came from a secret and the command
    /// names `{password_file}`.
    pub(super) password: Option<PathBuf>,
    /// What the staged signer step sends: the key for the engine-signer RPC (and then no
    /// file), or the keystore's password for geth's unlock RPC.
    pub(super) signer_key: Option<SecretValue>,
    /// The client's enode URL (`client.enode` with its node id), for the lease metadata.
    pub(super) enode: Option<String>,
}

impl Staged {
    /// Deletes what was staged (a hand-off overtaken by a fence).
    pub(super) fn discard(&self) {
        for path in [&self.key, &self.password].into_iter().flatten() {
            remove_key_file(path);
        }
    }
}

/// How to stage keys for this daemon's client.
#[derive(Clone)]
pub(super) struct Stager {
    pub(super) runtime_dir: PathBuf,
    pub(super) format: ClientFormat,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password_secret: Option<Name>,
    /// A password from a secret is written for the client (its command names it).
    pub(super) writes_password: bool,
    pub(super) engine_signer: bool,
    /// The client starts locked and is unlocked over `client.unlock_rpc`.
    pub(super) unlock: bool,
    /// `client.enode` and `client.node_key_file`.
    pub(super) enode: Option<String>,
    pub(super) node_key_file: Option<PathBuf>,
    /// The KDF of the keystores leased encrypts for the client.
    pub(super) kdf: KdfParams,
}

/// The key as the secret held it.
enum Decoded {
    /// A raw-hex secret.
    Plain(ValidatorKey),
    /// A keystore-v3 secret, decrypted; `json` is kept when it can be handed over as it is
    /// (it names its address, which the decryption checked).
    Keystore {
        key: ValidatorKey,
        json: Option<Zeroizing<Vec<u8>>>,
    },
}

impl Stager {
    pub(super) fn new(config: &Config) -> Self {
        let client = &config.client;
        Self {
            runtime_dir: config.runtime_dir.clone(),
            format: client.format,
            password_file: client.password_file.clone(),
            password_secret: client.password_secret.clone(),
            writes_password: client.password_secret.is_some()
                && client.command.uses(Placeholder::PasswordFile),
            engine_signer: client.engine_signer_rpc.is_some(),
            unlock: client.unlock_rpc.is_some(),
            enode: client.enode.clone(),
            node_key_file: client.node_key_file.clone(),
            kdf: client_kdf(),
        }
    }

    /// What is published for the client in the runtime directory.
    pub(super) fn key_path(&self) -> PathBuf {
        let name = match self.format {
            ClientFormat::RawHex | ClientFormat::Besu | ClientFormat::Nethermind => {
                PUBLISHED_NAMES[0]
            }
            ClientFormat::KeystoreV3 => PUBLISHED_NAMES[1],
            ClientFormat::GethNodekey => PUBLISHED_NAMES[2],
            ClientFormat::GethKeystore | ClientFormat::NethermindKeystore => PUBLISHED_NAMES[3],
        };
        self.runtime_dir.join(name)
    }

    /// Where a password from a secret is published.
    pub(super) fn password_path(&self) -> PathBuf {
        self.runtime_dir.join(PASSWORD_FILE)
    }

    /// Whether a hand-off of a secret with `content_type` needs the password.
    fn needs_password(&self, content_type: &str) -> bool {
        content_type == keystore::CONTENT_TYPE
            || (!self.engine_signer && (self.format.needs_password() || self.writes_password))
    }

    /// Decodes `secret` (with `password_secret`'s value as the password, when that is how
    /// the password comes), encodes it in the client's format and, unless `cancelled()`
    /// says the hand-off was cancelled meanwhile, stages it for `run` (0600 files, a 0700
    /// directory). `None` when cancelled. Never puts key material in an error.
    pub(super) fn stage(
        &self,
        run: Ticket,
        secret: Secret,
        password_secret: Option<SecretValue>,
        cancelled: impl Fn() -> bool,
    ) -> Result<Option<Staged>, String> {
        let content_type = secret.properties.content_type.clone().unwrap_or_default();
        let password = match (password_secret, &self.password_file) {
            _ if !self.needs_password(&content_type) => None,
            (Some(value), _) => Some(password_from_secret(&value)),
            (None, Some(p)) => Some(
                fsutil::read_password_file(p)
                    .map_err(|e| format!("client.password_file {}: {e}", p.display()))?,
            ),
            (None, None) => None,
        };
        if password.as_ref().is_some_and(|p| p.is_empty()) {
            return Err("the keystore password is empty".into());
        }
        let decoded = decode(
            &secret,
            &content_type,
            password.as_ref().map(|p| p.as_slice()),
        )?;
        drop(secret);
        let key = match &decoded {
            Decoded::Plain(key) | Decoded::Keystore { key, .. } => key,
        };
        let address = key.address().to_string();
        let enode = self.enode(key);
        // One way in, as the config says: over the engine-signer RPC, or in a file.
        if self.engine_signer {
            return Ok((!cancelled()).then(|| Staged {
                address,
                key: None,
                password: None,
                signer_key: Some(SecretValue::new(key.expose_hex())),
                enode,
            }));
        }
        let keystore = |password: Option<&[u8]>| -> Result<Zeroizing<Vec<u8>>, String> {
            if let Decoded::Keystore {
                json: Some(json), ..
            } = &decoded
            {
                return Ok(json.clone());
            }
            let password = password.ok_or("a keystore format needs a password")?;
            keystore::encrypt(key, password, &self.kdf)
                .map(|json| Zeroizing::new(json.into_bytes()))
                .map_err(|e| e.to_string())
        };
        let encoded = match self.format {
            ClientFormat::GethNodekey => keyfile::encode_nodekey(key),
            f if f.needs_password() => keystore(password.as_ref().map(|p| p.as_slice()))?,
            f => keyfile::encode(
                key,
                f.key_format().expect("every other format is a key file"),
                None,
                &self.kdf,
            )
            .map_err(|e| e.to_string())?,
        };
        if cancelled() {
            return Ok(None);
        }
        let staging = self
            .runtime_dir
            .join(format!("{STAGING_PREFIX}{}", run.number()));
        let staged_password = self
            .runtime_dir
            .join(format!("{STAGING_PREFIX}{}{PASSWORD_SUFFIX}", run.number()));
        remove_key_file(&staging);
        remove_key_file(&staged_password);
        let written = self.write_staging(key, &staging, &encoded).and_then(|()| {
            match (&password, self.writes_password) {
                (Some(pw), true) => fsutil::write_new_private(&staged_password, pw)
                    .map(|()| Some(staged_password.clone()))
                    .map_err(|e| format!("{}: {e}", staged_password.display())),
                _ => Ok(None),
            }
        });
        // geth's unlock takes the password that encrypted the keystore, as JSON text.
        let unlock_password = match (&password, self.unlock) {
            (Some(pw), true) => match std::str::from_utf8(pw) {
                Ok(text) => Some(SecretValue::new(Zeroizing::new(text.to_string()))),
                Err(_) => {
                    remove_key_file(&staging);
                    remove_key_file(&staged_password);
                    return Err(
                        "the keystore password is not UTF-8 text, which geth's unlock RPC needs"
                            .into(),
                    );
                }
            },
            _ => None,
        };
        match written {
            Ok(password) => Ok(Some(Staged {
                address,
                key: Some(staging),
                password,
                signer_key: unlock_password,
                enode,
            })),
            Err(e) => {
                remove_key_file(&staging);
                remove_key_file(&staged_password);
                Err(e)
            }
        }
    }

    /// `client.enode` with the node id: of `client.node_key_file`, else of `key`. The
    /// registry is an aid, not the hand-off: a node key that cannot be read is said, and
    /// the enode left out.
    fn enode(&self, key: &ValidatorKey) -> Option<String> {
        let template = self.enode.as_ref()?;
        let template = match template.contains(crate::config::HOST_IP) {
            false => template.clone(),
            true => match host_ip() {
                Ok(ip) => {
                    let host = match ip {
                        std::net::IpAddr::V4(v4) => v4.to_string(),
                        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                    };
                    template.replace(crate::config::HOST_IP, &host)
                }
                Err(e) => {
                    tracing::warn!(
                        "client.enode: the host's address cannot be found ({e}); the enode is not registered"
                    );
                    return None;
                }
            },
        };
        if !template.contains(crate::config::NODE_ID) {
            return Some(template);
        }
        let node_id = match &self.node_key_file {
            None => key.enode_id(),
            Some(path) => {
                let read = fsutil::read_limited(path, 4096)
                    .map_err(|e| e.to_string())
                    .map(Zeroizing::new)
                    .and_then(|bytes| {
                        keyfile::decode(&bytes, None)
                            .map(|(k, _)| k.enode_id())
                            .map_err(|e| e.to_string())
                    });
                match read {
                    Ok(id) => id,
                    Err(e) => {
                        tracing::warn!(
                            "client.node_key_file {}: {e}; the enode is not registered",
                            path.display()
                        );
                        return None;
                    }
                }
            }
        };
        Some(template.replace(crate::config::NODE_ID, &node_id))
    }

    /// Writes the encoded key to `staging`: the file itself, or a 0700 directory holding
    /// it under the name geth and Nethermind look for.
    fn write_staging(
        &self,
        key: &ValidatorKey,
        staging: &Path,
        encoded: &[u8],
    ) -> Result<(), String> {
        let failed = |e: std::io::Error| format!("{}: {e}", staging.display());
        if !self.format.is_directory() {
            return fsutil::write_new_private(staging, encoded).map_err(failed);
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(staging)
            .map_err(failed)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let name = keystore::keystore_file_name(&key.address(), now);
        fsutil::write_new_private(&staging.join(name), encoded).map_err(failed)
    }
}

/// The address this host's route to other hosts starts from: a UDP socket "connected" to
/// a documentation address (RFC 5737), which only picks the route and sends nothing.
pub(super) fn host_ip() -> std::io::Result<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))?;
    socket.connect((std::net::Ipv4Addr::new(198, 51, 100, 1), 9))?;
    Ok(socket.local_addr()?.ip())
}

/// The KDF of the keystores leased writes for the client: the default (scrypt, n = 2^18),
/// or a fast one in this crate's own tests.
fn client_kdf() -> KdfParams {
    if cfg!(test) {
        KdfParams::scrypt_fast_for_tests()
    } else {
        KdfParams::scrypt_default()
    }
}

/// The password a secret holds, as a password file would give it: one trailing newline
/// (`\n` or `\r\n`) dropped.
fn password_from_secret(value: &SecretValue) -> Zeroizing<Vec<u8>> {
    let text = value.expose();
    let text = text
        .strip_suffix('\n')
        .map_or(text, |t| t.strip_suffix('\r').unwrap_or(t));
    Zeroizing::new(text.as_bytes().to_vec())
}

/// Reads the key out of `secret` by its content type.
fn decode(secret: &Secret, content_type: &str, password: Option<&[u8]>) -> Result<Decoded, String> {
    let value = secret.value.expose();
    if content_type == CONTENT_TYPE_RAW_HEX {
        return ValidatorKey::from_hex(value)
            .map(Decoded::Plain)
            .map_err(|e| e.to_string());
    }
    if content_type == keystore::CONTENT_TYPE {
        let password = password.ok_or(
            "the secret is a keystore-v3 keystore, and neither client.password_file nor \
             client.password_secret is set to decrypt it",
        )?;
        let key = keystore::decrypt(value.as_bytes(), password)
            .map_err(|e| format!("the secret's keystore: {e}"))?;
        let json = keystore::names_its_address(value.as_bytes())
            .then(|| Zeroizing::new(value.as_bytes().to_vec()));
        return Ok(Decoded::Keystore { key, json });
    }
    Err(format!(
        "the secret's content type is {content_type:?}; leased reads {CONTENT_TYPE_RAW_HEX} \
         and {} secrets",
        keystore::CONTENT_TYPE
    ))
}

/// Checks, before the daemon starts, that the client config can use the pool's secrets
/// (those whose name starts with `identity.pool`, the password secret aside):
///
/// - keystore-v3 secrets need `client.password_file` or `client.password_secret`;
/// - a secret of any other content type than raw hex or keystore-v3 cannot be read;
/// - the password secret, when named, must exist, and the password file, when it is
///   needed, must be readable and not empty.
///
/// Every problem is listed, with the names of (at most three of) the secrets concerned;
/// never a value. Raw-hex secrets suit every format: leased encrypts them for a keystore
/// format. A store that cannot be listed now is logged and not held against the start:
/// each hand-off checks its own secret.
pub(super) async fn check_pool_secrets(
    config: &Config,
    secrets: &dyn SecretStore,
) -> Result<(), String> {
    let list = match tokio::time::timeout(LIST_TIMEOUT, secrets.list()).await {
        Ok(Ok(list)) => list,
        Ok(Err(e)) => {
            tracing::warn!(
                "cannot list the secrets to check their formats: {e}; each hand-off checks its own"
            );
            return Ok(());
        }
        Err(_) => {
            tracing::warn!("the secret store did not list its secrets within {LIST_TIMEOUT:?}; each hand-off checks its own");
            return Ok(());
        }
    };
    let client = &config.client;
    let same = |a: &Name, b: &Name| a.as_str().eq_ignore_ascii_case(b.as_str());
    let is_password_secret = |n: &Name| client.password_secret.as_ref().is_some_and(|p| same(p, n));
    let pool: Vec<_> = list
        .iter()
        .filter(|p| {
            p.name.as_str().starts_with(&config.identity.pool) && !is_password_secret(&p.name)
        })
        .collect();
    let named = |of: &[&Name]| {
        let mut names: Vec<String> = of.iter().take(3).map(|n| n.to_string()).collect();
        if of.len() > 3 {
            names.push("…".into());
        }
        names.join(", ")
    };
    let mut problems = Vec::new();
    let keystores: Vec<&Name> = pool
        .iter()
        .filter(|p| p.content_type.as_deref() == Some(keystore::CONTENT_TYPE))
        .map(|p| &p.name)
        .collect();
    let unreadable: Vec<&Name> = pool
        .iter()
        .filter(|p| {
            let ct = p.content_type.as_deref();
            ct != Some(keystore::CONTENT_TYPE) && ct != Some(CONTENT_TYPE_RAW_HEX)
        })
        .map(|p| &p.name)
        .collect();
    let has_password = client.password_file.is_some() || client.password_secret.is_some();
    if !keystores.is_empty() && !has_password {
        problems.push(format!(
            "{} of the pool's secrets ({}) are keystore-v3 keystores: set client.password_file \
             or client.password_secret to decrypt them",
            keystores.len(),
            named(&keystores)
        ));
    }
    if !unreadable.is_empty() {
        problems.push(format!(
            "{} of the pool's secrets ({}) are neither {CONTENT_TYPE_RAW_HEX} nor {}: leased \
             cannot read them",
            unreadable.len(),
            named(&unreadable),
            keystore::CONTENT_TYPE
        ));
    }
    if let Some(p) = &client.password_secret {
        if !list.iter().any(|s| same(&s.name, p)) {
            problems.push(format!(
                "client.password_secret: there is no secret {p} in store.secrets"
            ));
        }
    }
    let password_needed = !keystores.is_empty() || client.format.needs_password();
    if let (Some(path), true) = (&client.password_file, password_needed) {
        match fsutil::read_password_file(path) {
            Ok(pw) if pw.is_empty() => {
                problems.push(format!("client.password_file {}: is empty", path.display()))
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("client.password_file {}: {e}", path.display())),
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the client config cannot use the pool {:?}'s secrets: {}",
        config.identity.pool,
        problems.join("; ")
    ))
}

/// What was published for the client: the key file or keystore directory, and the
/// password file leased wrote, if any. Dropping it zeroes and deletes them.
pub(super) struct KeyFile {
    key: PathBuf,
    password: Option<PathBuf>,
}

impl KeyFile {
    /// Publishes the staged key `staged` as `path`, and the staged password, if any, as
    /// `password_path`, each by a rename; on failure everything staged or published is
    /// deleted.
    pub(super) fn publish(
        staged: &Staged,
        path: PathBuf,
        password_path: PathBuf,
    ) -> Result<Self, String> {
        let Some(key) = &staged.key else {
            return Err("nothing was staged".into());
        };
        // A directory cannot be renamed over one that has entries: a leftover goes first.
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            remove_key_file(&path);
        }
        if let Err(e) = fs::rename(key, &path) {
            staged.discard();
            return Err(format!("cannot publish the key: {e}"));
        }
        let mut published = Self {
            key: path,
            password: None,
        };
        if let Some(pw) = &staged.password {
            if let Err(e) = fs::rename(pw, &password_path) {
                staged.discard();
                // Dropping `published` deletes the key just published.
                return Err(format!("cannot publish the password file: {e}"));
            }
            published.password = Some(password_path);
        }
        Ok(published)
    }

    /// The key file or keystore directory.
    pub(super) fn path(&self) -> &Path {
        &self.key
    }

    /// The password file leased wrote, if any.
    pub(super) fn password(&self) -> Option<&Path> {
        self.password.as_deref()
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        remove_key_file(&self.key);
        if let Some(pw) = &self.password {
            remove_key_file(pw);
        }
    }
}

/// Whether `dir` is on a memory file system, where a deleted key file leaves nothing on disk.
pub(super) fn on_tmpfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir).is_ok_and(|fs| {
        fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC
            // ramfs (no constant in nix): 0x858458f6.
            || fs.filesystem_type().0 as u64 == 0x8584_58f6
    })
}

/// Overwrites a key or password file (or every file of a keystore directory) with zeros
/// and deletes it; a missing one is fine.
pub(super) fn remove_key_file(path: &Path) {
    let _ = crate::guard::remove_secret_file(path);
}

/// Deletes every key file, keystore directory, password file leased wrote, hand-off
/// staging file or directory and atomic writer's temporary file in the runtime directory
/// (never the lock file). Called before the daemon starts and after it has stopped, so no
/// key outlives the daemon on the runtime directory's tmpfs.
pub(super) fn sweep_key_files(runtime_dir: &Path) {
    let Ok(entries) = fs::read_dir(runtime_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = PUBLISHED_NAMES.contains(&name)
            || name.starts_with(STAGING_PREFIX)
            || (name.starts_with('.') && name.contains(".tmp-"));
        if ours {
            tracing::info!("removing leftover key material {name}");
            remove_key_file(&entry.path());
        }
    }
}

impl Driver {
    /// Hand-off `run`: fetches the key and stages it off the loop (a keystore's KDF takes
    /// most of a second), then reports `KeyReady`; the loop publishes it and starts the
    /// guard. A newer hand-off or a fence cancels it.
    pub(super) fn hand_off(&mut self, lease: Lease, run: Ticket) {
        if let Some(previous) = self.handoff.replace(HandOff::new(run)) {
            previous.cancel();
        }
        let cancelled = self.handoff.as_ref().expect("just set").cancelled();
        let stager = Stager::new(&self.config);
        let fetch = self.stores.fetch_secret(lease.identity.clone());
        let stores = self.stores.clone();
        let started = (self.clock)();
        let tx = self.tx.clone();
        self.spawn(async move {
            let staged = match fetch.await {
                Ok(secret) => match fetch_password(&stager, &stores, &secret).await {
                    Ok(password) => tokio::task::spawn_blocking(move || {
                        stager.stage(run, secret, password, cancelled)
                    })
                    .await
                    .unwrap_or_else(|_| Err("the key hand-off panicked".into())),
                    Err(message) => Err(message),
                },
                Err(message) => Err(message),
            };
            let msg = match staged {
                Ok(Some(staged)) => Msg::KeyReady {
                    run,
                    lease,
                    started,
                    staged,
                },
                // Cancelled by a fence (or the exit) before anything was written.
                Ok(None) => return,
                Err(detail) => Msg::HandOffFailed { run, detail },
            };
            let _ = tx.send(msg);
        });
    }

    /// Hand-off `run` staged the key: publish it, as the key file, only while the
    /// hand-off is still current, then start the guard.
    pub(super) fn key_ready(
        &mut self,
        run: Ticket,
        lease: Lease,
        started: MonoTime,
        staged: Staged,
    ) -> Option<Event> {
        if self.handoff.as_ref().map(|h| h.run) != Some(run) {
            // A fence overtook this hand-off: the key must not be used.
            staged.discard();
            return None;
        }
        self.handoff = None;
        let stager = Stager::new(&self.config);
        let key_file = match staged
            .key
            .is_some()
            .then(|| KeyFile::publish(&staged, stager.key_path(), stager.password_path()))
        {
            Some(Err(e)) => return self.hand_off_failed(run, e),
            Some(Ok(file)) => Some(file),
            None => None,
        };
        if let Some(ctx) = self.lease.as_mut().filter(|c| c.ticket == lease.ticket) {
            ctx.address = Some(staged.address.clone());
            ctx.signer_key = staged.signer_key.map(Arc::new);
            ctx.hand_off_began = Some(started);
            ctx.meta.set(shared::lease::meta::ADDRESS, &staged.address);
            if let Some(enode) = &staged.enode {
                ctx.meta.set(shared::lease::meta::ENODE, enode);
            }
            let write = ctx
                .meta
                .epoch()
                .is_some()
                .then(|| self.stores.write_metadata(lease.clone(), ctx.meta.clone()));
            // A first write still waiting now carries the address too (or finds it sent).
            ctx.staged.notify_one();
            if let Some(write) = write {
                self.spawn(write);
            }
        }
        match self.spawn_guard(run, &staged.address, key_file) {
            Ok(()) => None,
            Err(message) => self.hand_off_failed(run, message),
        }
    }
}

/// The password secret's value, when the password comes from one and this secret's
/// hand-off needs it.
async fn fetch_password(
    stager: &Stager,
    stores: &super::stores::Stores,
    secret: &Secret,
) -> Result<Option<SecretValue>, String> {
    let content_type = secret.properties.content_type.as_deref().unwrap_or("");
    match &stager.password_secret {
        Some(name) if stager.needs_password(content_type) => stores
            .fetch_secret(name.clone())
            .await
            .map(|s| Some(s.value))
            .map_err(|e| format!("client.password_secret {name}: {e}")),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests;
