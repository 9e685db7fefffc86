//! The daemon's side of the fence guard: starting guards behind a seam, and the daemon's
//! own backstop for a guard that does not confirm a fence.
//!
//! [`GuardSpawner`] is the seam. The binary's [`ProcessSpawner`] starts the guard as a
//! child process (`leased-guard`, or `leased guard` without it, see [`ProcessSpawner`]),
//! talks to it over its stdin and stdout, kills by process group and reads `/proc`; in-process driver tests pass a spawner whose guards are
//! tasks on the test's paused clock, and whose kills touch no process.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::handoff::{KeyFile, Stager};
use super::{log, Driver, Msg};
use crate::config::Substitutions;
use crate::guard::{GuardCommand, GuardConfig, GuardEvent, MonoNanos, LATE_FENCE};
use crate::machine::{Event, FenceReason, Lease, MonoTime, Ticket};

/// A guard to start: what it runs, and the client's whole environment.
#[derive(Debug)]
pub struct GuardSpec {
    pub config: GuardConfig,
    pub env: BTreeMap<String, String>,
}

/// A started guard, as the driver talks to it.
pub struct Spawned {
    pub commands: mpsc::UnboundedSender<GuardCommand>,
    /// What the guard reports; the stream ends when the guard is gone.
    pub events: mpsc::UnboundedReceiver<GuardEvent>,
    pub process: Box<dyn GuardProcess>,
}

/// The process side of a started guard: what the daemon does to it, and to its client,
/// when the guard itself does not.
pub trait GuardProcess: Send + Sync {
    /// SIGKILL the guard; its end shows as the end of its events.
    fn kill(&mut self);
    /// SIGKILL the client's process group `pgid` (the client's pid).
    fn kill_client_group(&self, pgid: i32);
    /// Tells whether a live (not zombie) process of a group is left.
    fn group_probe(&self) -> GroupProbe;
    /// Kills the guard if it still runs and reaps it, in the background.
    fn reap(self: Box<Self>);
}

/// Whether a live process of group `pgid` is left: `probe(pgid)`.
pub type GroupProbe = Arc<dyn Fn(i32) -> bool + Send + Sync>;

/// Starts guards.
pub trait GuardSpawner: Send + Sync {
    fn spawn(&self, spec: GuardSpec) -> Result<Spawned, String>;
}

/// The binary's spawner. The guard runs from `leased-guard`, a small program beside the
/// daemon's (its name is the daemon's file name with `-guard`), built from the same
/// library: it lacks the stores, TLS and HTTP, so each guard and key janitor on a VM costs
/// a fraction of the memory of another copy of `leased`. The program is opened when the
/// daemon starts and run from that open file, so a package upgrade that replaces it on
/// disk cannot pair a running daemon with a guard of another version. Without it beside
/// the daemon, the daemon runs its own binary as `leased guard`, which is the same code.
#[derive(Debug)]
pub struct ProcessSpawner {
    guard_program: Option<(std::path::PathBuf, std::fs::File)>,
}

impl ProcessSpawner {
    /// Opens the guard program beside this binary, if there is one.
    pub fn new() -> Self {
        let guard_program = guard_program_path().and_then(|path| {
            let file = std::fs::File::open(&path).ok()?;
            log(format!("guards run from {}", path.display()));
            Some((path, file))
        });
        if guard_program.is_none() {
            log("guards run from this binary (`leased guard`): no guard program beside it");
        }
        Self { guard_program }
    }
}

impl Default for ProcessSpawner {
    fn default() -> Self {
        Self::new()
    }
}

/// `<this program>-guard` in this program's directory.
fn guard_program_path() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let name = exe.file_name()?.to_str()?;
    // The kernel's name for a binary replaced on disk since it started.
    let name = name.strip_suffix(" (deleted)").unwrap_or(name);
    Some(exe.with_file_name(format!("{name}-guard")))
}

impl GuardSpawner for ProcessSpawner {
    fn spawn(&self, spec: GuardSpec) -> Result<Spawned, String> {
        use std::os::fd::AsRawFd;
        let (exe, name, subcommand) = match &self.guard_program {
            // The child inherits the descriptor until its exec (it is close-on-exec), and
            // its /proc/self is its own: this runs exactly the file opened at start. Its
            // argv[0] is the program's path, so that `ps` shows what runs.
            Some((path, file)) => (
                std::path::PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())),
                path.clone().into_os_string(),
                None,
            ),
            None => {
                let exe = crate::guard::self_exe()
                    .map_err(|e| format!("cannot find the leased binary: {e}"))?;
                let name = std::env::args_os()
                    .next()
                    .unwrap_or_else(|| "leased".into());
                (exe, name, Some("guard"))
            }
        };
        // The guard, and the client after it, get the client's environment only: nothing of
        // the daemon's (credentials, NOTIFY_SOCKET) reaches the client.
        let mut child = Command::new(exe)
            .arg0(name)
            .env_clear()
            .envs(&spec.env)
            .arg("--log-format")
            .arg(crate::logging::format().as_str())
            .args(subcommand)
            .args(spec.config.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the guard: {e}"))?;
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (commands, mut queue) = mpsc::unbounded_channel::<GuardCommand>();
        // Writer: never blocks the loop, even if the guard stops reading.
        tokio::spawn(async move {
            while let Some(cmd) = queue.recv().await {
                if stdin
                    .write_all(format!("{cmd}\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
                let _ = stdin.flush().await;
            }
        });
        let (report, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(event) = line.parse::<GuardEvent>() {
                    let _ = report.send(event);
                }
            }
        });
        Ok(Spawned {
            commands,
            events,
            process: Box::new(ChildGuard(child)),
        })
    }
}

struct ChildGuard(Child);

impl std::fmt::Debug for Spawned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawned").finish_non_exhaustive()
    }
}

impl GuardProcess for ChildGuard {
    fn kill(&mut self) {
        let _ = self.0.start_kill();
    }

    fn kill_client_group(&self, pgid: i32) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    fn group_probe(&self) -> GroupProbe {
        Arc::new(|pgid| {
            crate::guard::processes()
                .iter()
                .any(|p| p.group == pgid && p.alive)
        })
    }

    fn reap(mut self: Box<Self>) {
        let _ = self.0.start_kill();
        tokio::spawn(async move {
            let _ = self.0.wait().await;
        });
    }
}

/// How long after the guard's own SIGKILL would have ended a fence the daemon waits for
/// the guard's confirmation before it kills the client and the guard itself.
pub const BACKSTOP_SLACK: Duration = Duration::from_millis(500);

/// How long the daemon waits for a SIGKILLed client's process group to be gone before it
/// goes on anyway (as the guard's own wait for a stuck client).
pub(super) const GROUP_GONE_WAIT: Duration = Duration::from_secs(5);

/// A running guard, tied to one hand-off of one lease.
pub(super) struct GuardHandle {
    /// The hand-off; tags everything the guard reports.
    pub(super) run: Ticket,
    commands: mpsc::UnboundedSender<GuardCommand>,
    process: Box<dyn GuardProcess>,
    /// The client's process group, once started.
    client_pgid: Option<i32>,
    /// The guard reported its fence done.
    fenced: bool,
    /// The lease whose fence waits for this guard to be gone, and when the daemon stands
    /// in if the guard has not confirmed it by then.
    fence: Option<(Ticket, Option<MonoTime>)>,
    /// The guard is gone, but a client it did not confirm fenced may still be dying: the
    /// handle stays until that client's group is gone, so that a fence in the meantime
    /// waits for it too.
    exiting: bool,
    /// The key file the client was handed; deleted when the guard is done with.
    _key_file: Option<KeyFile>,
}

/// What is left to do once a guard is gone.
pub(super) struct Gone {
    /// The lease whose fence this ends, if one was ordered.
    pub(super) fence_for: Option<Ticket>,
    /// The client was started at least once.
    pub(super) started: bool,
}

impl GuardHandle {
    pub(super) fn new(
        run: Ticket,
        spawned: Spawned,
        key_file: Option<KeyFile>,
    ) -> (Self, mpsc::UnboundedReceiver<GuardEvent>) {
        let handle = Self {
            run,
            commands: spawned.commands,
            process: spawned.process,
            client_pgid: None,
            fenced: false,
            fence: None,
            exiting: false,
            _key_file: key_file,
        };
        (handle, spawned.events)
    }

    /// Where the guard's commands go, for a task that sends one later.
    pub(super) fn commands(&self) -> mpsc::UnboundedSender<GuardCommand> {
        self.commands.clone()
    }

    pub(super) fn send(&self, command: GuardCommand) {
        let _ = self.commands.send(command);
    }

    pub(super) fn extend(&self, deadline: MonoTime) {
        self.send(GuardCommand::Extend(MonoNanos::from_duration(
            deadline.since_origin(),
        )));
    }

    /// Whether the guard can start its client again (it is up and has not fenced).
    pub(super) fn can_restart(&self) -> bool {
        !self.fenced && self.fence.is_none() && !self.exiting
    }

    pub(super) fn client_started(&mut self, pid: u32) {
        self.client_pgid = i32::try_from(pid).ok();
    }

    pub(super) fn client_pgid(&self) -> Option<i32> {
        self.client_pgid
    }

    /// The guard says it fenced: the backstop stands down.
    pub(super) fn confirmed(&mut self) {
        self.fenced = true;
        if let Some((_, backstop)) = &mut self.fence {
            *backstop = None;
        }
    }

    /// The fence of `lease` waits for this guard to be gone; unless it confirms by
    /// `backstop`, the daemon kills the client and the guard then. The first order counts.
    pub(super) fn order_fence(&mut self, lease: Ticket, backstop: Option<MonoTime>) {
        if self.fence.is_none() {
            let armed = !self.fenced && !self.exiting;
            self.fence = Some((lease, backstop.filter(|_| armed)));
        }
    }

    /// The guard's reports ended: it is gone. A client it did not confirm fenced is
    /// SIGKILLed; its group, to be waited for, is returned, and the handle stays.
    pub(super) fn exited(&mut self) -> Option<i32> {
        self.exiting = true;
        if let Some((_, backstop)) = &mut self.fence {
            *backstop = None;
        }
        let unconfirmed = self.client_pgid.filter(|_| !self.fenced);
        if let Some(pgid) = unconfirmed {
            self.process.kill_client_group(pgid);
        }
        unconfirmed
    }

    /// For the wait for a client's group to be gone.
    pub(super) fn group_probe(&self) -> GroupProbe {
        self.process.group_probe()
    }

    /// When the backstop is due, if it is armed.
    pub(super) fn backstop_at(&self) -> Option<MonoTime> {
        self.fence.and_then(|(_, at)| at)
    }

    /// A fence after the deadline: the client is killed now, without its grace.
    pub(super) fn kill_client_now(&self) -> bool {
        match self.client_pgid {
            Some(pgid) => {
                self.process.kill_client_group(pgid);
                true
            }
            None => false,
        }
    }

    /// The guard did not confirm the fence in time (it is frozen or wedged): the daemon
    /// SIGKILLs the client's process group and the guard, whose end completes the fence.
    pub(super) fn run_backstop(&mut self) {
        if let Some((_, backstop)) = &mut self.fence {
            *backstop = None;
        }
        tracing::info!(
            "the guard did not confirm the fence in time: killing the client's process \
             group{} and the guard",
            self.client_pgid
                .map_or_else(String::new, |p| format!(" {p}"))
        );
        self.kill_client_now();
        self.process.kill();
    }

    /// The guard is gone (or is abandoned at exit): a client it did not confirm fenced is
    /// SIGKILLed, the guard reaped, the key file deleted.
    pub(super) fn finish(self) -> (Gone, Box<dyn GuardProcess>) {
        let unconfirmed = self.client_pgid.filter(|_| !self.fenced);
        if let Some(pgid) = unconfirmed {
            self.process.kill_client_group(pgid);
        }
        let gone = Gone {
            fence_for: self.fence.map(|(lease, _)| lease),
            started: self.client_pgid.is_some(),
        };
        (gone, self.process)
    }
}

/// Waits until no live process is left in group `pgid` (true), or `limit` passes (false).
/// Zombies do not count: whoever they were reparented to may never reap them.
pub(super) async fn wait_group_gone(probe: GroupProbe, pgid: i32, limit: Duration) -> bool {
    let until = tokio::time::Instant::now() + limit;
    loop {
        if !probe(pgid) {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Says when no process of the client's group `pgid` (the client's pid) was left: by
/// then the client had stopped signing. The chaos run's overlap checker ends a killed
/// client's signing there, rather than one stand-in period after its last line.
pub(super) fn log_group_gone(pgid: i32, at: MonoNanos) {
    tracing::info!(
        client_pid = pgid,
        gone_mono_ns = at.as_nanos(),
        "the client's process group is gone"
    );
}

/// The client's argv for the guard.
pub(super) fn client_argv(argv: Vec<String>) -> Vec<OsString> {
    argv.into_iter().map(OsString::from).collect()
}

/// The driver's side of its guards: starting one, what it reports, its end, and the fence.
impl Driver {
    pub(super) fn on_guard(&mut self, run: Ticket, event: GuardEvent) -> Option<Event> {
        let guard = self.guard.as_mut().filter(|g| g.run == run)?;
        let telemetry = self.stores.telemetry.clone();
        match event {
            GuardEvent::Ready(_) => None,
            GuardEvent::Started(pid) => {
                guard.client_started(pid);
                telemetry.metrics(|m| m.client_starts.inc());
                let began = self.lease.as_mut().and_then(|c| c.hand_off_began.take());
                if let Some(at) = began {
                    let took = (self.clock)().saturating_duration_since(at);
                    telemetry.metrics(|m| m.observe_hand_off(took));
                }
                Some(Event::ClientStarted { run })
            }
            GuardEvent::Exited(kind) => {
                log(format!("client exited ({kind:?})"));
                telemetry.metrics(|m| m.client_exits.inc());
                Some(Event::ClientExited { run })
            }
            GuardEvent::Failed(text) => self.hand_off_failed(run, text),
            GuardEvent::Fenced {
                reason,
                stop,
                done_at,
                elapsed,
            } => {
                guard.confirmed();
                log(format!(
                    "guard fenced the client: {} ({}, {} ms)",
                    reason.as_str(),
                    stop.as_str(),
                    elapsed.as_millis()
                ));
                if let Some(pgid) = guard.client_pgid() {
                    log_group_gone(pgid, done_at);
                }
                None
            }
            GuardEvent::Error(text) => {
                log(format!("guard: {text}"));
                None
            }
        }
    }

    /// The guard's end answers the fence that waits for it, or tells the machine that the
    /// guard is gone. Nothing may release the lease or start another client while a process
    /// of a client the guard did not confirm fenced may still run (found by the chaos run:
    /// a release followed the backstop's SIGKILL by milliseconds), so that waits until the
    /// client's group is gone.
    pub(super) fn on_guard_gone(&mut self, run: Ticket) -> Option<Event> {
        let guard = self.guard.as_mut().filter(|g| g.run == run)?;
        let Some(pgid) = guard.exited() else {
            return self.guard_done(run);
        };
        // The wait reads /proc (the fake guards' world in the tests) off the loop.
        let (tx, probe) = (self.tx.clone(), guard.group_probe());
        self.spawn(async move {
            if wait_group_gone(probe, pgid, GROUP_GONE_WAIT).await {
                log_group_gone(pgid, MonoNanos::now());
            } else {
                log(format!(
                    "the client's process group {pgid} survives SIGKILL after {} s",
                    GROUP_GONE_WAIT.as_secs()
                ));
            }
            let _ = tx.send(Msg::GuardDone { run });
        });
        None
    }

    /// Guard `run` is gone and so is its client: it answers the fence that waits for it
    /// (ordered before or after it went), or the machine learns that it is gone.
    pub(super) fn guard_done(&mut self, run: Ticket) -> Option<Event> {
        let guard = self.guard.take_if(|g| g.run == run)?;
        let (gone, process) = guard.finish();
        process.reap();
        match gone.fence_for {
            Some(ticket) => Some(Event::FenceDone { ticket }),
            None => {
                if !gone.started {
                    if let Some(ctx) = &mut self.lease {
                        ctx.failure =
                            Some("the fence guard exited before the client started".into());
                    }
                }
                self.stores.telemetry.metrics(|m| m.client_exits.inc());
                Some(Event::GuardGone { run })
            }
        }
    }

    /// Starts hand-off `run`'s guard, which runs the client under the current deadline.
    pub(super) fn spawn_guard(
        &mut self,
        run: Ticket,
        address: &str,
        key_file: Option<KeyFile>,
    ) -> Result<(), String> {
        let Some(deadline) = self.deadline else {
            return Err("no fence deadline yet; refusing to start the client".into());
        };
        if (self.clock)() >= deadline {
            return Err("the fence deadline passed during the hand-off".into());
        }
        let client = &self.config.client;
        let key_path = key_file.as_ref().map_or_else(
            || Stager::new(&self.config).key_path(),
            |k| k.path().to_path_buf(),
        );
        // A password leased wrote (from a secret) is the client's; the operator's own
        // password file is only named, and never given to the guard, which deletes what
        // it is given at the fence.
        let written_password = key_file.as_ref().and_then(KeyFile::password);
        let argv = client.command.render(&Substitutions {
            key_file: &key_path,
            password_file: written_password.or(client.password_file.as_deref()),
            address,
        });
        let mut config = GuardConfig::new(client_argv(argv));
        config.key_file = key_file.as_ref().map(|k| k.path().to_path_buf());
        config.password_file = written_password.map(Path::to_path_buf);
        config.grace = client.fence_grace;
        let spawned = self.guards.spawn(GuardSpec {
            config,
            env: client.env.clone(),
        })?;
        let (guard, mut events) = GuardHandle::new(run, spawned, key_file);
        let tx = self.tx.clone();
        self.spawn(async move {
            while let Some(event) = events.recv().await {
                let _ = tx.send(Msg::Guard { run, event });
            }
            let _ = tx.send(Msg::GuardGone { run });
        });
        guard.extend(deadline);
        guard.send(GuardCommand::Start);
        if let Some(previous) = self.guard.replace(guard) {
            previous.finish().1.reap();
        }
        Ok(())
    }

    pub(super) fn fence(&mut self, lease: Lease, reason: FenceReason) {
        let telemetry = self.stores.telemetry.clone();
        telemetry.metrics(|m| m.fence(reason));
        // A hand-off still in flight is cancelled: it publishes nothing.
        if let Some(h) = self.handoff.take() {
            h.cancel();
        }
        let at = (self.clock)();
        let address = self.ctx(lease.ticket).and_then(|c| c.address.clone());
        let detail = match self.ctx(lease.ticket) {
            Some(ctx) => {
                ctx.signer_key = None;
                let detail = ctx.failure.take().unwrap_or_default();
                ctx.fenced = Some((reason, detail.clone()));
                detail
            }
            None => String::new(),
        };
        match detail.is_empty() {
            true => log(format!("fencing {}: {reason}", lease.identity)),
            false => log(format!("fencing {}: {reason}: {detail}", lease.identity)),
        }
        telemetry.update_snapshot(|s| {
            s.last_fence = Some((reason.as_str().to_string(), detail, at));
        });
        // The engine signer is cleared first, then the guard stops the client. The clear is
        // bounded well inside the margin; the guard's deadline holds regardless.
        let grace = self.config.client.fence_grace;
        let clear_budget = grace.min(Duration::from_secs(1));
        let client = &self.config.client;
        let step = match (&client.engine_signer_rpc, &client.unlock_rpc, address) {
            (Some(url), _, _) => Some((SignerStep::EngineSigner(url.clone()), None)),
            (None, Some(url), Some(address)) => {
                Some((SignerStep::Unlock(url.clone()), Some(address)))
            }
            _ => None,
        };
        let clear = step.map(|(step, address)| async move {
            match (step, address) {
                (SignerStep::EngineSigner(url), _) => {
                    match crate::engine_signer::clear_signer(&url, clear_budget).await {
                        Ok(()) => log("engine signer cleared"),
                        Err(e) => log(format!("clearing the engine signer: {e}")),
                    }
                }
                (SignerStep::Unlock(url), address) => {
                    let address = address.unwrap_or_default();
                    match crate::engine_signer::geth_lock(&url, &address, clear_budget).await {
                        Ok(()) => log("account locked and miner stopped"),
                        Err(e) => log(format!("locking the account: {e}")),
                    }
                }
            }
        });
        // Past F the lease may be someone else's already: no grace for the client.
        let late = self.deadline.is_some_and(|d| at > d + LATE_FENCE);
        let Some(g) = &mut self.guard else {
            let ticket = lease.ticket;
            return self.answer(async move {
                if let Some(clear) = clear {
                    clear.await;
                }
                Event::FenceDone { ticket }
            });
        };
        // The guard gets the order once the engine signer is cleared (if there is one) and
        // kills by then + grace, or by F + grace on its own; if it has not said so shortly
        // after, the daemon does it (the backstop). After the deadline the daemon does it
        // at once: the guard and the client (if the guard had not reported it yet, it dies
        // with its guard).
        let ordered = at + clear.as_ref().map_or(Duration::ZERO, |_| clear_budget);
        let backstop = match self.deadline {
            Some(d) if !late => Some((d + grace).min(ordered + grace) + BACKSTOP_SLACK),
            _ => None,
        };
        if backstop.is_none() && g.can_restart() {
            log("the fence comes after the deadline: killing the guard and its client at once");
            g.run_backstop();
            telemetry.metrics(|m| m.backstop_kills.inc());
        }
        g.order_fence(lease.ticket, backstop);
        let commands = g.commands();
        self.spawn(async move {
            if let Some(clear) = clear {
                clear.await;
            }
            let _ = commands.send(GuardCommand::Fence);
        });
    }

    /// One attempt of the signer step: once the sync gate is open, give the running client
    /// its key over the engine-signer RPC, or unlock geth's account and restart its miner.
    /// The machine decides about retries.
    pub(super) fn set_engine_signer(&mut self, lease: Ticket, attempt: Ticket) {
        let client = &self.config.client;
        let step = match (&client.engine_signer_rpc, &client.unlock_rpc) {
            (Some(url), _) => Some(SignerStep::EngineSigner(url.clone())),
            (None, Some(url)) => Some(SignerStep::Unlock(url.clone())),
            (None, None) => None,
        };
        let gate = step
            .as_ref()
            .map(|s| super::gate::SyncGate::new(s.url(), &client.sync_with))
            .transpose()
            .map(Option::flatten);
        let ctx = self.ctx(lease);
        let secret = ctx.as_ref().and_then(|c| c.signer_key.clone());
        let address = ctx.and_then(|c| c.address.clone());
        let extra = format!("leased {} {}", self.config.node, attempt.number());
        let tx = self.tx.clone();
        self.spawn(async move {
            let result = async {
                let (Some(step), Some(secret), Some(address)) = (step, secret, address) else {
                    return Err("no signer secret for this lease".to_string());
                };
                if let Some(gate) = gate? {
                    gate.check()
                        .await
                        .map_err(|e| format!("not yet in sync: {e}"))?;
                }
                let timeout = Duration::from_secs(1);
                match step {
                    SignerStep::EngineSigner(url) => {
                        crate::engine_signer::set_signer(&url, secret.expose(), timeout).await
                    }
                    SignerStep::Unlock(url) => {
                        crate::engine_signer::geth_unlock(
                            &url,
                            &address,
                            secret.expose(),
                            &extra,
                            timeout,
                        )
                        .await
                    }
                }
            }
            .await;
            match &result {
                Ok(()) => log("signer enabled"),
                Err(e) => {
                    // Said now and then; kept, should the start timeout fail the hand-off.
                    let detail = e.clone();
                    let _ = tx.send(Msg::SignerWait { lease, detail });
                }
            }
            let set = result.is_ok();
            let _ = tx.send(Msg::Machine(Event::EngineSignerResult { attempt, set }));
        });
    }
}

/// How the signer is enabled once the client runs.
enum SignerStep {
    /// `client.engine_signer_rpc`
    EngineSigner(String),
    /// `client.unlock_rpc`
    Unlock(String),
}

impl SignerStep {
    fn url(&self) -> &str {
        match self {
            Self::EngineSigner(u) | Self::Unlock(u) => u,
        }
    }
}
