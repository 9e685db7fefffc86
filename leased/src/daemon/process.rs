//! The process around the daemon's loop: made safe to hold a key (not dumpable), one per
//! runtime directory (a lock), its runtime directory swept of keys before and after, and
//! stopped by SIGTERM or SIGINT.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use shared::fsutil;
use shared::lease::LeaseStore;
use shared::secret::SecretStore;

use super::{
    handoff, log, now, run, GuardSpawner, ProcessSpawner, EXIT_LOCKED, EXIT_OSERR, EXIT_UNAVAILABLE,
};
use crate::config::Config;

/// How long the blocking work still running at exit (a hand-off's KDF) may take to finish
/// before the final sweep of the runtime directory.
const EXIT_DRAIN: Duration = Duration::from_secs(5);

/// The binary's daemon: runs [`run`] on `CLOCK_MONOTONIC` until SIGTERM or SIGINT has
/// fenced and released; returns the exit status.
pub fn run_daemon(config: Config) -> ExitCode {
    let node = config.node.clone();
    // Every line this process logs carries the node; the loop runs on this thread.
    let span = tracing::info_span!("daemon", node = %node);
    let _entered = span.enter();
    // This process holds keys in memory: no core dumps, no ptrace or /proc/PID/mem by its
    // own user. Failing that, it must not run.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        log(format!("cannot make the process non-dumpable: {e}"));
        return EXIT_OSERR.into();
    }
    if let Err(e) = fsutil::ensure_private_dir(&config.runtime_dir) {
        log(format!("runtime_dir {}: {e}", config.runtime_dir.display()));
        return EXIT_UNAVAILABLE.into();
    }
    if !handoff::on_tmpfs(&config.runtime_dir) {
        tracing::warn!(
            runtime_dir = %config.runtime_dir.display(),
            "the runtime directory is not on a tmpfs: the key file may reach a disk \
             (systemd's RuntimeDirectory= is a tmpfs)"
        );
    }
    let lock_path = config.runtime_dir.join("leased.lock");
    let _lock = match take_lock(&lock_path) {
        Ok(lock) => lock,
        Err(message) => {
            log(message);
            return EXIT_LOCKED.into();
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log(format!("cannot start the async runtime: {e}"));
            return EXIT_UNAVAILABLE.into();
        }
    };
    let runtime_dir = config.runtime_dir.clone();
    // Whatever a daemon that died left behind must not be used, nor outlive this start.
    handoff::sweep_key_files(&runtime_dir);
    let code = runtime.block_on(async move {
        match shutdown_signals() {
            Ok(shutdown) => run(config, shutdown, now).await,
            Err(e) => {
                log(format!("cannot watch SIGTERM and SIGINT: {e}"));
                EXIT_UNAVAILABLE.into()
            }
        }
    });
    // Blocking work still under way (a hand-off deriving a keystore key) finishes here;
    // it checks the hand-off generation, bumped at exit, before it writes, and whatever it
    // wrote anyway is swept.
    runtime.shutdown_timeout(EXIT_DRAIN);
    handoff::sweep_key_files(&runtime_dir);
    code
}

/// Completes at the first SIGTERM or SIGINT (systemd's stop, or Ctrl-C).
fn shutdown_signals() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// The single-instance lock: an exclusive `flock` on a file in the runtime directory, held
/// for the life of the process (the kernel drops it when the process dies, however it dies).
fn take_lock(path: &Path) -> Result<nix::fcntl::Flock<fs::File>, String> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("lock file {}: {e}", path.display()))?;
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        format!(
            "another leased already runs with this runtime_dir (lock {} is held); one daemon per VM",
            path.display()
        )
    })
}

/// What the loop works with besides its configuration: the stores and the guard spawner.
pub struct Parts {
    pub leases: Arc<dyn LeaseStore>,
    pub secrets: Arc<dyn SecretStore>,
    pub guards: Arc<dyn GuardSpawner>,
    /// The chain every quarantine watches for the identity's seals, if any.
    pub watch: Option<super::Watch>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts").finish_non_exhaustive()
    }
}

impl Parts {
    /// The stores `config` names, and guards as child processes.
    pub fn open(config: &Config) -> Result<Self, String> {
        let timeout = op_timeout(config);
        let leases = config
            .store
            .leases
            .open_with_timeout(timeout, &config.store.azure)
            .map_err(|e| format!("store.leases {}: {e}", config.store.leases))?;
        let secrets = config
            .store
            .secrets
            .open(&config.store.azure)
            .map_err(|e| format!("store.secrets {}: {e}", config.store.secrets))?;
        Ok(Self {
            leases,
            secrets,
            guards: Arc::new(ProcessSpawner::new()),
            watch: match &config.quarantine {
                Some(q) => Some(super::Watch {
                    chain: Arc::new(
                        super::RpcChain::new(&q.rpc).map_err(|e| format!("quarantine.rpc: {e}"))?,
                    ),
                    engine: q.engine,
                    window: q.window,
                    poll: Duration::from_millis(500),
                }),
                None => None,
            },
        })
    }
}

/// Every store call ends well before the next renew is due (docs/architecture.md).
pub(super) fn op_timeout(config: &Config) -> Duration {
    (config.lease.renew_every / 2).min(Duration::from_secs(5))
}
