//! The key's way from the secret store to the client: over the engine-signer RPC when the
//! config names one, in a key file otherwise, never both.
//!
//! A hand-off fetches the secret, decodes it, encodes it in the client's format (a
//! keystore's KDF is the slow part, so it runs on the blocking pool) and writes it, 0600,
//! under a staging name of its own (`.handoff-N`) in the private runtime directory. Only
//! the control loop publishes it as the key file, by a rename, and only while that
//! hand-off is still the current one: a fence that overtakes a slow hand-off cancels it,
//! and nothing is then published. The published file has one owner, the [`KeyFile`] held
//! with the guard whose client was given it: dropping it zeroes and deletes the file.
//! Start-up and exit sweep the runtime directory of whatever a daemon that died left.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use shared::keyfile::{self, KeyFormat, CONTENT_TYPE_RAW_HEX};
use shared::keystore::KdfParams;
use shared::secret::{Secret, SecretValue};
use shared::{fsutil, ValidatorKey};

use super::{Driver, Msg};
use crate::config::Config;
use crate::machine::{Event, Lease, MonoTime, Ticket};

/// Prefix of a hand-off's staging file in the runtime directory.
const STAGING_PREFIX: &str = ".handoff-";
/// The key files a client may be handed, by format (all swept at start-up and exit).
const KEY_FILE_NAMES: [&str; 2] = ["validator.key", "validator-keystore.json"];

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
    /// The staging file holding the key in the client's format; none when the key goes
    /// over the engine-signer RPC.
    pub(super) file: Option<PathBuf>,
    /// The key for the engine-signer RPC, when one is configured (and then no file).
    pub(super) signer_key: Option<SecretValue>,
}

/// How to stage keys for this daemon's client.
#[derive(Clone)]
pub(super) struct Stager {
    pub(super) runtime_dir: PathBuf,
    pub(super) format: KeyFormat,
    pub(super) password_file: Option<PathBuf>,
    pub(super) engine_signer: bool,
}

impl Stager {
    pub(super) fn new(config: &Config) -> Self {
        Self {
            runtime_dir: config.runtime_dir.clone(),
            format: config.client.format,
            password_file: config.client.password_file.clone(),
            engine_signer: config.client.engine_signer_rpc.is_some(),
        }
    }

    /// The key file's path in the runtime directory.
    pub(super) fn key_path(&self) -> PathBuf {
        key_path(&self.runtime_dir, self.format)
    }

    /// Decodes `secret`, encodes it in the client's format and, unless `cancelled()` says
    /// the hand-off was cancelled meanwhile, writes it to `run`'s staging file (0600).
    /// `None` when cancelled. Never puts key material in an error.
    pub(super) fn stage(
        &self,
        run: Ticket,
        secret: Secret,
        cancelled: impl Fn() -> bool,
    ) -> Result<Option<Staged>, String> {
        let content_type = secret.properties.content_type.as_deref().unwrap_or("");
        if content_type != CONTENT_TYPE_RAW_HEX {
            return Err(format!(
                "the secret's content type is {content_type:?}; leased reads {CONTENT_TYPE_RAW_HEX} secrets"
            ));
        }
        let key = ValidatorKey::from_hex(secret.value.expose()).map_err(|e| e.to_string())?;
        drop(secret);
        let address = key.address().to_string();
        // One way in, as the config says: over the engine-signer RPC, or in a file.
        if self.engine_signer {
            return Ok((!cancelled()).then(|| Staged {
                address,
                file: None,
                signer_key: Some(SecretValue::new(key.expose_hex())),
            }));
        }
        let password = match (self.format, &self.password_file) {
            (KeyFormat::KeystoreV3, Some(p)) => Some(
                fsutil::read_password_file(p)
                    .map_err(|e| format!("client.password_file {}: {e}", p.display()))?,
            ),
            _ => None,
        };
        let encoded = keyfile::encode(
            &key,
            self.format,
            password.as_ref().map(|p| p.as_slice()),
            &KdfParams::scrypt_default(),
        )
        .map_err(|e| e.to_string())?;
        if cancelled() {
            return Ok(None);
        }
        let path = self
            .runtime_dir
            .join(format!("{STAGING_PREFIX}{}", run.number()));
        remove_key_file(&path);
        fsutil::write_new_private(&path, &encoded)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Some(Staged {
            address,
            file: Some(path),
            signer_key: None,
        }))
    }
}

/// The published key file; dropping it zeroes and deletes the file.
pub(super) struct KeyFile(PathBuf);

impl KeyFile {
    /// Publishes the staging file `staged` as `path`, by a rename; on failure the staging
    /// file is deleted.
    pub(super) fn publish(staged: &Path, path: PathBuf) -> Result<Self, String> {
        match fs::rename(staged, &path) {
            Ok(()) => Ok(Self(path)),
            Err(e) => {
                remove_key_file(staged);
                Err(format!("cannot publish the key file: {e}"))
            }
        }
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        remove_key_file(&self.0);
    }
}

/// The key file's path in `runtime_dir` for `format`.
fn key_path(runtime_dir: &Path, format: KeyFormat) -> PathBuf {
    let name = match format {
        KeyFormat::KeystoreV3 => KEY_FILE_NAMES[1],
        _ => KEY_FILE_NAMES[0],
    };
    runtime_dir.join(name)
}

/// Whether `dir` is on a memory file system, where a deleted key file leaves nothing on disk.
pub(super) fn on_tmpfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir).is_ok_and(|fs| {
        fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC
            // ramfs (no constant in nix): 0x858458f6.
            || fs.filesystem_type().0 as u64 == 0x8584_58f6
    })
}

/// Overwrites a key file with zeros and deletes it; a missing file is fine.
pub(super) fn remove_key_file(path: &Path) {
    let _ = crate::guard::remove_secret_file(path);
}

/// Deletes every key file, hand-off staging file and atomic writer's temporary file in the
/// runtime directory (never the lock file). Called before the daemon starts and after it
/// has stopped, so no key outlives the daemon on the runtime directory's tmpfs.
pub(super) fn sweep_key_files(runtime_dir: &Path) {
    let Ok(entries) = fs::read_dir(runtime_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = KEY_FILE_NAMES.contains(&name)
            || name.starts_with(STAGING_PREFIX)
            || (name.starts_with('.') && name.contains(".tmp-"));
        if ours && entry.file_type().is_ok_and(|t| t.is_file()) {
            tracing::info!("removing leftover key file {name}");
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
        let started = (self.clock)();
        let tx = self.tx.clone();
        self.spawn(async move {
            let staged = match fetch.await {
                Ok(secret) => {
                    tokio::task::spawn_blocking(move || stager.stage(run, secret, cancelled))
                        .await
                        .unwrap_or_else(|_| Err("the key hand-off panicked".into()))
                }
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
            if let Some(file) = &staged.file {
                remove_key_file(file);
            }
            return None;
        }
        self.handoff = None;
        let stager = Stager::new(&self.config);
        let key_file = match staged
            .file
            .as_deref()
            .map(|f| KeyFile::publish(f, stager.key_path()))
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
            if ctx.meta.epoch().is_some() {
                let write = self.stores.write_metadata(lease.clone(), ctx.meta.clone());
                self.spawn(write);
            }
        }
        match self.spawn_guard(run, &staged.address, key_file) {
            Ok(()) => None,
            Err(message) => self.hand_off_failed(run, message),
        }
    }
}
