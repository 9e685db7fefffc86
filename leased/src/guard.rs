//! The fence guard: the process that binds the local client's right to run to a deadline,
//! so fencing does not depend on the daemon being alive.
//!
//! The daemon starts the guard as `leased guard [--key-file F] [--password-file P]
//! [--grace-millis N] -- CLIENT ARGV…` (placeholders already substituted) with the guard's
//! stdin and stdout as pipes, and talks to it in lines. `F` is the key file or, for a
//! keystore format, the keystore directory; `P` a password file the daemon wrote (never
//! the operator's own). Both are zeroed and deleted at the fence, a directory with every
//! file in it.
//!
//! | daemon → guard     | meaning |
//! |--------------------|---------|
//! | `extend NANOS`     | the client may run until `NANOS`, an absolute `CLOCK_MONOTONIC` time in ns; a time already past fences at once |
//! | `start`            | start the client (refused without a deadline; fences if the deadline is past) |
//! | `fence`, `quit`    | fence now, report, exit (`quit` is the same: the guard never exits leaving a client unguarded) |
//!
//! | guard → daemon                          | meaning |
//! |-----------------------------------------|---------|
//! | `ready PID`                             | the guard is up |
//! | `started PID`                           | the client runs; its process group id is `PID` |
//! | `failed TEXT`                           | the client could not be started (its program cannot be executed, say) |
//! | `exited code N` / `exited signal N`     | the client exited by itself; its whole process group is gone |
//! | `fenced REASON STOP DONE_NANOS ELAPSED_MICROS` | fenced; the guard exits next |
//! | `error TEXT`                            | a command was refused or a step failed |
//!
//! `REASON` is `deadline`, `command`, `eof` (the daemon's pipe closed: it died, even by
//! kill -9) or `signal` (SIGTERM, SIGINT or SIGHUP reached the guard: systemd's
//! `KillMode=control-group` stop, which also signals the client). `STOP` says how the
//! client went: `none` (not running), `term`, `kill` (needed SIGKILL after the grace) or
//! `stuck` (still present after SIGKILL: the guard exits non-zero). `DONE_NANOS` is the
//! `CLOCK_MONOTONIC` time when the client's process group was gone and the key files
//! deleted; `ELAPSED_MICROS` runs from the fence's trigger to then.
//!
//! Deadlines are absolute monotonic times because `CLOCK_MONOTONIC` is one clock for every
//! process on the host: pipe latency, or a daemon frozen between computing and sending a
//! deadline, can only make the deadline earlier than the daemon meant, never later.
//!
//! Fencing: SIGTERM (and SIGCONT, so a stopped client can act on it) to the client's
//! process group, delete the key and password files, wait up to the grace period for the
//! group to be gone, SIGKILL it, wait again, report. The files go right after SIGTERM rather
//! than last: nothing may read them once the right to run has ended, and deleting early
//! keeps the key off disk even if a SIGKILLed process lingers. The SIGKILL comes no later
//! than the deadline plus the grace, and a fence that begins more than [`LATE_FENCE`] after
//! the deadline (the guard woke from a freeze, or was told late) gives no grace at all: the
//! lease may already be someone else's, so the group is SIGKILLed at once.
//!
//! The client is started through a launcher, `leased client-exec` (this same binary), that
//! sets a parent-death signal (SIGKILL) on itself, checks that its parent is still this
//! guard, and only then executes the client, which keeps the setting: if the guard dies, by
//! SIGKILL even, the kernel kills the client at once, whether or not the daemon can act.
//! The launcher reports an `exec` failure over a close-on-exec pipe, so a program that
//! cannot run is `failed`, never a client that `started` and exited.
//!
//! The guard also starts a janitor, `leased key-janitor` (this same binary again), in a
//! process group of its own, whose parent-death signal is SIGTERM: should the guard die
//! without fencing (SIGKILL, or the daemon's backstop), the janitor deletes the key and
//! password files at once, whether or not the daemon can act (it may be frozen: the chaos
//! run found key files left behind that way). It also watches the daemon: should the
//! daemon die and the guard not fence within the grace and [`JANITOR_SLACK`] (the guard is
//! frozen), the janitor kills the client and the guard itself. A guard that fences and
//! exits normally kills its janitor first, so a janitor never outlives its guard to touch
//! a later key file.
//!
//! What this module must never do: let the client outlive a fence (or a client exit: an
//! `exited` event means the whole group is gone, so a restart cannot overlap a straggler);
//! start a client without a future deadline; write to stdout anything but events (the
//! client's stdout goes to the guard's stderr); block its loop on the daemon (events are
//! written without blocking, so a frozen daemon that stops reading cannot stall enforcement).
//!
//! The guard calls `setsid` so that job control or a signal aimed at the daemon's process
//! group (SIGTSTP, SIGSTOP to `-PGID`) cannot freeze it along with the daemon, and makes
//! itself a child subreaper so that the client's orphaned descendants are its children and
//! can be waited for. It is not dumpable (no core file, no ptrace by its user): it knows
//! where the key is. Fencing signals the client's process group and every other process
//! descended from the guard, so a process the client started that left its group or
//! session (a daemonizing wrapper) is stopped too: orphaned, it was reparented to the
//! guard. The parent-death signal reaches the client's main process only, not processes it
//! started: the daemon, seeing the guard's stdout end, kills the whole group as well, and
//! systemd's cgroup stop catches the rest.

use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::str::FromStr;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::time::{clock_gettime, ClockId};
use nix::unistd::Pid;
use shared::exit::Status;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Grace between SIGTERM and SIGKILL unless configured: well inside the 2 s minimum margin.
pub const DEFAULT_GRACE: Duration = Duration::from_millis(1000);
/// How long to wait for a SIGKILLed process group to disappear before calling it stuck.
pub const DEFAULT_KILL_WAIT: Duration = Duration::from_millis(5000);
/// Longest command line accepted; the longest real one (`extend` and 20 digits) is 27 bytes.
const MAX_LINE: usize = 256;
/// How often a fence checks whether the client's process group is gone.
const GONE_POLL: Duration = Duration::from_millis(5);
/// How long the guard tries to hand its last events to the daemon before exiting.
const FINAL_WRITE_WAIT: Duration = Duration::from_millis(1000);
/// A fence that begins later than this after the deadline is late: timer slop is well
/// below it, a freeze is not. A late fence kills without a grace.
pub const LATE_FENCE: Duration = Duration::from_millis(100);
/// How long the launcher may take to execute the client before the start counts as failed.
const LAUNCH_WAIT: Duration = Duration::from_secs(5);
/// The launcher's exit code when it could not execute the client (as a shell's).
const EXIT_CANNOT_EXEC: u8 = 127;
/// The hidden subcommand that runs the launcher, in `leased` and in the test hosts.
pub const LAUNCHER_SUBCOMMAND: &str = "client-exec";

/// The hidden subcommand that runs the key janitor (see the module docs).
pub const JANITOR_SUBCOMMAND: &str = "key-janitor";

/// Exit code when the fence could not be completed (files left, or the client survived).
pub const EXIT_FENCE_INCOMPLETE: u8 = 1;
/// Exit status for bad arguments or standard streams that are not pipes.
pub const EXIT_USAGE: Status = Status::Usage;
/// Exit status when the guard could not set itself up (runtime, signals).
pub const EXIT_SOFTWARE: Status = Status::Software;

/// A point on `CLOCK_MONOTONIC`, in nanoseconds: shared by every process on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonoNanos(u64);

impl MonoNanos {
    /// Now. Should the clock ever be unreadable this returns the end of time, so every
    /// deadline counts as passed: the guard fails closed.
    pub fn now() -> Self {
        match clock_gettime(ClockId::CLOCK_MONOTONIC) {
            Ok(ts) => {
                let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
                let nanos = u64::try_from(ts.tv_nsec()).unwrap_or(0);
                Self(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
            }
            Err(_) => Self(u64::MAX),
        }
    }

    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The same point as time since `CLOCK_MONOTONIC`'s origin (for a driver whose own
    /// monotonic times use that origin).
    pub const fn as_duration(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// The point `since_origin` after `CLOCK_MONOTONIC`'s origin, saturating.
    pub fn from_duration(since_origin: Duration) -> Self {
        Self(u64::try_from(since_origin.as_nanos()).unwrap_or(u64::MAX))
    }

    /// How long from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: MonoNanos) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for MonoNanos {
    type Output = Self;
    /// Saturating: a deadline never wraps into the past.
    fn add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

impl fmt::Display for MonoNanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the guard needs at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    /// The client's argv, placeholders already substituted. Never empty.
    pub client: Vec<OsString>,
    /// The key file (or keystore directory) handed to the client; deleted on fence.
    pub key_file: Option<PathBuf>,
    /// The keystore password file, if any; deleted on fence.
    pub password_file: Option<PathBuf>,
    /// SIGTERM to SIGKILL.
    pub grace: Duration,
    /// SIGKILL to "stuck".
    pub kill_wait: Duration,
}

impl GuardConfig {
    /// A configuration with the default grace and no files.
    pub fn new(client: Vec<OsString>) -> Self {
        Self {
            client,
            key_file: None,
            password_file: None,
            grace: DEFAULT_GRACE,
            kill_wait: DEFAULT_KILL_WAIT,
        }
    }

    /// The arguments after `leased guard` that reproduce this configuration; the daemon
    /// spawns the guard with them.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        if let Some(p) = &self.key_file {
            args.push("--key-file".into());
            args.push(p.clone().into_os_string());
        }
        if let Some(p) = &self.password_file {
            args.push("--password-file".into());
            args.push(p.clone().into_os_string());
        }
        args.push("--grace-millis".into());
        args.push(millis(self.grace).to_string().into());
        args.push("--kill-wait-millis".into());
        args.push(millis(self.kill_wait).to_string().into());
        args.push("--".into());
        args.extend(self.client.iter().cloned());
        args
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Arguments of `leased guard`. Not for people: the daemon starts the guard.
#[derive(Debug, Clone, clap::Args)]
pub struct GuardArgs {
    /// The key file handed to the client; deleted when fencing.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// The keystore password file, if any; deleted when fencing.
    #[arg(long, value_name = "PATH")]
    pub password_file: Option<PathBuf>,
    /// Grace between SIGTERM and SIGKILL of the client's process group.
    #[arg(long, value_name = "MS", default_value_t = millis(DEFAULT_GRACE))]
    pub grace_millis: u64,
    /// How long a SIGKILLed client may take to disappear before the fence counts as failed.
    #[arg(long, value_name = "MS", default_value_t = millis(DEFAULT_KILL_WAIT))]
    pub kill_wait_millis: u64,
    /// The client command and its arguments.
    #[arg(last = true, required = true, num_args = 1.., value_name = "CLIENT")]
    pub client: Vec<OsString>,
}

impl GuardArgs {
    pub fn into_config(self) -> GuardConfig {
        GuardConfig {
            client: self.client,
            key_file: self.key_file,
            password_file: self.password_file,
            grace: Duration::from_millis(self.grace_millis),
            kill_wait: Duration::from_millis(self.kill_wait_millis),
        }
    }
}

#[derive(Debug, clap::Parser)]
#[command(about = "The fence guard, started by the daemon (see leased::guard)")]
struct GuardCli {
    #[command(flatten)]
    log: crate::logging::LogArgs,
    #[command(flatten)]
    args: GuardArgs,
}

/// Runs the launcher or the janitor if `args` (program name first) names one of them.
/// Neither is for people: they take untouched argument lists and have no help.
pub fn hidden_subcommand(args: &[OsString]) -> Option<ExitCode> {
    let rest = args.iter().skip(2).cloned();
    match args.get(1) {
        Some(a) if a == LAUNCHER_SUBCOMMAND => Some(launch_client(rest)),
        Some(a) if a == JANITOR_SUBCOMMAND => Some(run_janitor(rest)),
        _ => None,
    }
}

/// Parses guard arguments (the first item is the program name) and runs the guard.
/// `leased guard …` and test hosts call this.
pub fn main_from_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    use clap::Parser as _;
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    if let Some(code) = hidden_subcommand(&args) {
        return code;
    }
    match GuardCli::try_parse_from(args) {
        Ok(cli) => {
            crate::logging::init(cli.log.log_format);
            run_guard(cli.args.into_config())
        }
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE.code() } else { 0 };
            let _ = e.print();
            ExitCode::from(code)
        }
    }
}

/// A line from the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardCommand {
    /// The client may run until this time (replaces the previous deadline).
    Extend(MonoNanos),
    /// Start the client.
    Start,
    /// Fence now.
    Fence,
    /// Fence now (the daemon is done with this guard).
    Quit,
}

impl fmt::Display for GuardCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Extend(t) => write!(f, "extend {t}"),
            Self::Start => f.write_str("start"),
            Self::Fence => f.write_str("fence"),
            Self::Quit => f.write_str("quit"),
        }
    }
}

/// A line that is not a guard command, or not a guard event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unrecognised line {0:?}")]
pub struct ParseLineError(String);

impl ParseLineError {
    fn new(line: &str) -> Self {
        Self(line.chars().take(80).collect())
    }
}

impl FromStr for GuardCommand {
    type Err = ParseLineError;
    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        match words.as_slice() {
            ["extend", t] => t
                .parse()
                .map(|n| Self::Extend(MonoNanos(n)))
                .map_err(|_| ParseLineError::new(line)),
            ["start"] => Ok(Self::Start),
            ["fence"] => Ok(Self::Fence),
            ["quit"] => Ok(Self::Quit),
            _ => Err(ParseLineError::new(line)),
        }
    }
}

/// Why the guard fenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceReason {
    /// The deadline passed without an extension.
    Deadline,
    /// The daemon said `fence` or `quit`.
    Command,
    /// The daemon's pipe closed (the daemon died) or broke.
    Eof,
    /// SIGTERM, SIGINT or SIGHUP reached the guard.
    Signal,
}

impl FenceReason {
    const ALL: [Self; 4] = [Self::Deadline, Self::Command, Self::Eof, Self::Signal];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deadline => "deadline",
            Self::Command => "command",
            Self::Eof => "eof",
            Self::Signal => "signal",
        }
    }
}

/// How the client stopped during a fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceStop {
    /// No client was running.
    None,
    /// Its process group was gone within the grace after SIGTERM.
    Term,
    /// It needed SIGKILL.
    Kill,
    /// Something in the group survived SIGKILL for the kill wait: the fence failed.
    Stuck,
}

impl FenceStop {
    const ALL: [Self; 4] = [Self::None, Self::Term, Self::Kill, Self::Stuck];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Term => "term",
            Self::Kill => "kill",
            Self::Stuck => "stuck",
        }
    }
}

/// How the client's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Code(i32),
    Signal(i32),
}

/// A line from the guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardEvent {
    /// The guard is up; its pid.
    Ready(u32),
    /// The client started; its pid, which is also its process group id.
    Started(u32),
    /// The client could not be started; nothing of it runs.
    Failed(String),
    /// The client exited by itself and its process group is gone.
    Exited(ExitKind),
    /// The guard fenced and is about to exit.
    Fenced {
        reason: FenceReason,
        stop: FenceStop,
        done_at: MonoNanos,
        elapsed: Duration,
    },
    /// A command was refused or a step failed.
    Error(String),
}

impl fmt::Display for GuardEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready(pid) => write!(f, "ready {pid}"),
            Self::Started(pid) => write!(f, "started {pid}"),
            Self::Exited(ExitKind::Code(c)) => write!(f, "exited code {c}"),
            Self::Exited(ExitKind::Signal(s)) => write!(f, "exited signal {s}"),
            Self::Fenced {
                reason,
                stop,
                done_at,
                elapsed,
            } => write!(
                f,
                "fenced {} {} {done_at} {}",
                reason.as_str(),
                stop.as_str(),
                elapsed.as_micros()
            ),
            Self::Failed(text) => write!(f, "failed {}", one_line(text)),
            Self::Error(text) => write!(f, "error {}", one_line(text)),
        }
    }
}

/// `text` with control characters (newlines above all) turned into spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl FromStr for GuardEvent {
    type Err = ParseLineError;
    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let bad = || ParseLineError::new(line);
        if let Some(text) = line.strip_prefix("error ") {
            return Ok(Self::Error(text.to_string()));
        }
        if let Some(text) = line.strip_prefix("failed ") {
            return Ok(Self::Failed(text.to_string()));
        }
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        Ok(match words.as_slice() {
            ["ready", pid] => Self::Ready(pid.parse().map_err(|_| bad())?),
            ["started", pid] => Self::Started(pid.parse().map_err(|_| bad())?),
            ["exited", "code", c] => Self::Exited(ExitKind::Code(c.parse().map_err(|_| bad())?)),
            ["exited", "signal", s] => {
                Self::Exited(ExitKind::Signal(s.parse().map_err(|_| bad())?))
            }
            ["fenced", reason, stop, done_at, elapsed] => Self::Fenced {
                reason: FenceReason::ALL
                    .into_iter()
                    .find(|r| r.as_str() == *reason)
                    .ok_or_else(bad)?,
                stop: FenceStop::ALL
                    .into_iter()
                    .find(|s| s.as_str() == *stop)
                    .ok_or_else(bad)?,
                done_at: MonoNanos(done_at.parse().map_err(|_| bad())?),
                elapsed: Duration::from_micros(elapsed.parse().map_err(|_| bad())?),
            },
            _ => return Err(bad()),
        })
    }
}

/// How a guard run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardOutcome {
    pub reason: FenceReason,
    pub stop: FenceStop,
    /// The client is gone and the files are deleted.
    pub complete: bool,
}

/// Runs the guard on this process's stdin and stdout (which must be pipes) until it has
/// fenced. Makes the process a session leader and a child subreaper; call it only as the
/// whole of a dedicated process (`leased guard`).
pub fn run_guard(config: GuardConfig) -> ExitCode {
    if config.client.is_empty() {
        tracing::error!("guard: no client command");
        return EXIT_USAGE.into();
    }
    // It knows where the key file is and may hold a keystore password: no core dumps, and
    // no ptrace or /proc/PID/mem by its own user.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::error!("guard: cannot make itself non-dumpable: {e}");
        return EXIT_SOFTWARE.into();
    }
    // Run from an open file (see the daemon's spawner), the kernel would name it after a
    // descriptor number: `ps`, `top` and the on-call engineer see what it is instead.
    let _ = nix::sys::prctl::set_name(c"leased-guard");
    // Fails with EPERM only if we already lead a process group; then the daemon chose our
    // group for us and that is its decision to have made.
    let _ = nix::unistd::setsid();
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        // Orphaned descendants then go to init; fencing still signals and probes the group.
        tracing::warn!("guard: cannot become a child subreaper: {e}");
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("guard: cannot start the runtime: {e}");
            return EXIT_SOFTWARE.into();
        }
    };
    let code = rt.block_on(async {
        let (input, output) = match stdio_pipes() {
            Ok(pipes) => pipes,
            Err(e) => {
                tracing::error!("guard: stdin and stdout must be pipes from the daemon: {e}");
                return EXIT_USAGE.into();
            }
        };
        let shutdown = match shutdown_signals() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("guard: cannot handle signals: {e}");
                return EXIT_SOFTWARE.into();
            }
        };
        let janitor = start_janitor(&config);
        let outcome = run(&config, input, output, shutdown).await;
        // Fenced: the files are gone. The janitor must not outlive us and wake later,
        // when the path may hold the next key file.
        if let Some(pid) = janitor {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        if outcome.complete {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_FENCE_INCOMPLETE)
        }
    });
    rt.shutdown_background();
    code
}

fn stdio_pipes() -> io::Result<(
    tokio::net::unix::pipe::Receiver,
    tokio::net::unix::pipe::Sender,
)> {
    use tokio::net::unix::pipe;
    // Duplicates, so that fds 0 and 1 stay valid until exit. Setting O_NONBLOCK on them is
    // safe: the daemon holds only the other ends, and the client inherits neither.
    let input = pipe::Receiver::from_owned_fd(io::stdin().as_fd().try_clone_to_owned()?)?;
    let output = pipe::Sender::from_owned_fd(io::stdout().as_fd().try_clone_to_owned()?)?;
    Ok((input, output))
}

fn shutdown_signals() -> io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
    })
}

/// The guard's loop on any byte streams: reads commands from `input`, writes events to
/// `output`, and fences on a passed deadline, `fence`/`quit`, end of `input`, a broken
/// `output`, or `shutdown` completing. Returns after the fence has been reported (or the
/// report could not be delivered).
pub async fn run<R, W, S>(config: &GuardConfig, input: R, output: W, shutdown: S) -> GuardOutcome
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    S: Future<Output = ()>,
{
    let mut guard = Guard {
        config,
        deadline: None,
        client: None,
        outbox: Vec::new(),
        complete: true,
    };
    guard.emit(GuardEvent::Ready(std::process::id()));
    let (reason, output_ok, mut output) = guard.watch(input, output, shutdown).await;
    let (stop, done_at, elapsed) = guard.fence().await;
    guard.emit(GuardEvent::Fenced {
        reason,
        stop,
        done_at,
        elapsed,
    });
    if output_ok {
        let outbox = std::mem::take(&mut guard.outbox);
        let flush = async {
            output.write_all(&outbox).await?;
            output.flush().await
        };
        let _ = tokio::time::timeout(FINAL_WRITE_WAIT, flush).await;
    }
    GuardOutcome {
        reason,
        stop,
        complete: guard.complete,
    }
}

struct Guard<'a> {
    config: &'a GuardConfig,
    /// `None` until the first `extend`: then no client may start.
    deadline: Option<MonoNanos>,
    client: Option<Client>,
    /// Event bytes not yet written.
    outbox: Vec<u8>,
    /// Nothing has failed that leaves the key or the client behind.
    complete: bool,
}

impl Guard<'_> {
    fn emit(&mut self, event: GuardEvent) {
        self.outbox.extend_from_slice(event.to_string().as_bytes());
        self.outbox.push(b'\n');
    }

    fn error(&mut self, text: impl fmt::Display) {
        self.emit(GuardEvent::Error(text.to_string()));
    }

    /// The loop until something fences. Returns why, and whether `output` still works.
    async fn watch<R, W, S>(
        &mut self,
        mut input: R,
        mut output: W,
        shutdown: S,
    ) -> (FenceReason, bool, W)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
        S: Future<Output = ()>,
    {
        use tokio::signal::unix::{signal, SignalKind};
        tokio::pin!(shutdown);
        // Registered before any client is spawned, so no exit can go unnoticed. Without it
        // (it cannot really fail) a slow poll stands in.
        let mut sigchld = signal(SignalKind::child()).ok();
        let mut line = Vec::with_capacity(MAX_LINE);
        let mut skipping_long_line = false;
        let mut buf = [0u8; 512];
        loop {
            let deadline = self.deadline;
            let deadline_sleep = async move {
                match deadline {
                    Some(d) => {
                        // Tokio's clock is CLOCK_MONOTONIC too; re-arming in short steps
                        // keeps far deadlines inside the timer's range.
                        let left = d.since(MonoNanos::now()).min(Duration::from_secs(3600));
                        tokio::time::sleep(left).await;
                    }
                    None => std::future::pending().await,
                }
            };
            let child_exit = async {
                match (&self.client, &mut sigchld) {
                    (None, _) => std::future::pending::<()>().await,
                    (Some(_), Some(s)) => {
                        s.recv().await;
                    }
                    (Some(_), None) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            let writable = !self.outbox.is_empty();
            tokio::select! {
                biased;
                () = deadline_sleep => {
                    if self.deadline_passed() {
                        return (FenceReason::Deadline, true, output);
                    }
                }
                () = &mut shutdown => return (FenceReason::Signal, true, output),
                () = child_exit => self.on_child_signal().await,
                read = input.read(&mut buf) => {
                    let n = match read {
                        Ok(0) | Err(_) => return (FenceReason::Eof, true, output),
                        Ok(n) => n,
                    };
                    for &b in &buf[..n] {
                        if b != b'\n' {
                            if line.len() < MAX_LINE {
                                line.push(b);
                            } else if !skipping_long_line {
                                skipping_long_line = true;
                                self.error("command line too long");
                            }
                            continue;
                        }
                        let complete_line = std::mem::take(&mut line);
                        if std::mem::take(&mut skipping_long_line) {
                            continue;
                        }
                        if let Some(reason) = self.on_line(&complete_line).await {
                            return (reason, true, output);
                        }
                    }
                }
                written = output.write(&self.outbox), if writable => match written {
                    Ok(0) | Err(_) => return (FenceReason::Eof, false, output),
                    Ok(n) => {
                        self.outbox.drain(..n);
                    }
                },
            }
        }
    }

    fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|d| MonoNanos::now() >= d)
    }

    /// Handles one command line; returns a reason when it means "fence now".
    async fn on_line(&mut self, raw: &[u8]) -> Option<FenceReason> {
        let text = String::from_utf8_lossy(raw);
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        match text.parse::<GuardCommand>() {
            Err(e) => self.error(e),
            Ok(GuardCommand::Extend(t)) => {
                self.deadline = Some(t);
                if self.deadline_passed() {
                    return Some(FenceReason::Deadline);
                }
            }
            Ok(GuardCommand::Start) => {
                if self.deadline.is_none() {
                    self.error("start refused: no deadline yet");
                } else if self.deadline_passed() {
                    return Some(FenceReason::Deadline);
                } else if self.client.is_some() {
                    self.error("start refused: the client is still running");
                } else {
                    self.start_client().await;
                    if self.deadline_passed() {
                        return Some(FenceReason::Deadline);
                    }
                }
            }
            Ok(GuardCommand::Fence | GuardCommand::Quit) => return Some(FenceReason::Command),
        }
        None
    }

    /// Starts the client through the launcher and waits (briefly, never past the deadline)
    /// to hear whether it could be executed; emits `started` or `failed`.
    async fn start_client(&mut self) {
        let argv = &self.config.client;
        let Some(program) = argv.first() else {
            self.emit(GuardEvent::Failed("no client command".into()));
            return;
        };
        let program = Path::new(program).display().to_string();
        match self.launch().await {
            Ok(client) => {
                let pid = client.pgid.as_raw().unsigned_abs();
                self.client = Some(client);
                self.emit(GuardEvent::Started(pid));
            }
            Err(why) => self.emit(GuardEvent::Failed(format!(
                "cannot start the client {program}: {why}"
            ))),
        }
    }

    /// Spawns `client-exec` in a new process group with the status pipe as its stdin, and
    /// reads the pipe: end of file without a word means the client's `exec` succeeded.
    async fn launch(&mut self) -> Result<Client, String> {
        use tokio::net::unix::pipe;
        let (status_read, status_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("cannot create a pipe: {e}"))?;
        // The client's stdout must not be our event pipe.
        let stdout = match io::stderr().as_fd().try_clone_to_owned() {
            Ok(fd) => Stdio::from(fd),
            Err(_) => Stdio::null(),
        };
        let exe = self_exe().map_err(|e| format!("cannot find the launcher: {e}"))?;
        // The Command, and with it our copy of the pipe's write end, is gone after this
        // statement: only the launcher holds it, until its exec closes it.
        let spawned = std::process::Command::new(exe)
            .arg(LAUNCHER_SUBCOMMAND)
            .arg("--guard-pid")
            .arg(std::process::id().to_string())
            .arg("--")
            .args(&self.config.client)
            .process_group(0)
            .stdin(Stdio::from(status_write))
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn();
        let child = spawned.map_err(|e| format!("cannot start the launcher: {e}"))?;
        // Reaped with waitpid (Client::reap), not through `child`; dropping it neither
        // waits nor kills.
        let pid = i32::try_from(child.id())
            .map(Pid::from_raw)
            .map_err(|_| "the launcher's pid is out of range".to_string())?;
        let mut launched = Client::new(pid);
        let mut report = Vec::new();
        let wait = self
            .deadline
            .map_or(LAUNCH_WAIT, |d| d.since(MonoNanos::now()).min(LAUNCH_WAIT));
        let read = async {
            let mut status = pipe::Receiver::from_owned_fd(status_read)?;
            status.read_to_end(&mut report).await
        };
        let outcome = tokio::time::timeout(wait, read).await;
        let failure = match outcome {
            Ok(Ok(_)) if report.is_empty() => return Ok(launched),
            Ok(Ok(_)) => String::from_utf8_lossy(&report).trim().to_string(),
            Ok(Err(e)) => format!("cannot read the launcher's report: {e}"),
            Err(_) => format!("it was not running within {} ms", wait.as_millis()),
        };
        // Nothing of a failed start may linger: the launcher has exited or is killed here.
        launched.signal(Signal::SIGKILL);
        if !launched.wait_gone(self.config.kill_wait).await {
            self.complete = false;
            self.error("a failed client start left a process that survives SIGKILL");
        }
        Err(failure)
    }

    /// SIGCHLD: if the client's main process exited, make sure nothing of its group is
    /// left, then report the exit.
    async fn on_child_signal(&mut self) {
        let kill_wait = self.config.kill_wait;
        let Some(client) = &mut self.client else {
            return;
        };
        let was_running = client.leader_exit.is_none();
        client.reap();
        let Some(exit) = client.leader_exit else {
            return;
        };
        if was_running {
            // Stragglers in the group (a wrapper's children) must not outlive the report,
            // or a restarted client could sign beside them.
            client.signal(Signal::SIGKILL);
        }
        if client.wait_gone(kill_wait).await {
            self.client = None;
            self.emit(GuardEvent::Exited(exit));
        } else if was_running {
            self.error("the client exited but its process group survives SIGKILL");
        }
    }

    /// Stops the client and deletes the files. Returns how the client stopped, when the
    /// fence was done and how long it took.
    ///
    /// The SIGKILL comes at the end of the grace, but no later than the deadline plus the
    /// grace; a fence that begins late (past the deadline by more than [`LATE_FENCE`])
    /// kills at once.
    async fn fence(&mut self) -> (FenceStop, MonoNanos, Duration) {
        let started = MonoNanos::now();
        let grace = self.config.grace;
        let late = self.deadline.is_some_and(|d| started > d + LATE_FENCE);
        let kill_at = match self.deadline {
            Some(d) => (d + grace).min(started + grace),
            None => started + grace,
        };
        let mut stop = FenceStop::None;
        if let Some(client) = &mut self.client {
            if late {
                client.signal(Signal::SIGKILL);
                stop = FenceStop::Kill;
            } else {
                client.signal(Signal::SIGTERM);
                client.signal(Signal::SIGCONT);
                stop = FenceStop::Term;
            }
        }
        let files = [&self.config.key_file, &self.config.password_file];
        for path in files.into_iter().flatten() {
            if let Err(e) = remove_secret_file(path) {
                self.complete = false;
                let text = format!("cannot delete {}: {e}", path.display());
                self.error(text);
            }
        }
        if let Some(client) = &mut self.client {
            let graceful = stop == FenceStop::Term;
            if graceful && !client.wait_gone(kill_at.since(MonoNanos::now())).await {
                client.signal(Signal::SIGKILL);
                stop = FenceStop::Kill;
            }
            if stop == FenceStop::Kill && !client.wait_gone(self.config.kill_wait).await {
                stop = FenceStop::Stuck;
            }
            if stop == FenceStop::Stuck {
                self.complete = false;
                self.error("the client's process group survives SIGKILL");
            } else {
                self.client = None;
            }
        }
        let done = MonoNanos::now();
        (stop, done, done.since(started))
    }
}

/// The running client: its main process, which leads its own process group.
struct Client {
    pgid: Pid,
    /// Set once the main process has been reaped.
    leader_exit: Option<ExitKind>,
}

impl Client {
    fn new(pgid: Pid) -> Self {
        Self {
            pgid,
            leader_exit: None,
        }
    }

    /// Signals the group, the main process by pid in case it left the group, and every
    /// other descendant of the guard: a process the client started that left its process
    /// group or session (`setsid`, a daemonizing wrapper) must not escape a fence.
    fn signal(&self, sig: Signal) {
        let _ = killpg(self.pgid, sig);
        if self.leader_exit.is_none() {
            let _ = kill(self.pgid, sig);
        }
        for pid in descendants() {
            let _ = kill(pid, sig);
        }
    }

    /// Reaps whatever of the client has exited, without blocking. Every child of the guard
    /// is the client or an orphan of its tree (we are a child subreaper), so all are
    /// reaped; the main process's status is kept.
    fn reap(&mut self) {
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == self.pgid => {
                    self.leader_exit = Some(ExitKind::Code(code));
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == self.pgid => {
                    self.leader_exit = Some(ExitKind::Signal(sig as i32));
                }
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                // No children at all: the main process was reaped (here, or it is gone).
                Err(_) => {
                    if self.leader_exit.is_none() && kill(self.pgid, None) == Err(Errno::ESRCH) {
                        self.leader_exit = Some(ExitKind::Code(-1));
                    }
                    break;
                }
            }
        }
    }

    /// Whether nothing of the client is left: main process reaped, no process in its group
    /// (unreaped zombies count as present, so this is only true once they are gone), and
    /// no other live descendant of the guard.
    fn gone(&mut self) -> bool {
        self.reap();
        self.leader_exit.is_some()
            && killpg(self.pgid, None) == Err(Errno::ESRCH)
            && descendants().is_empty()
    }

    async fn wait_gone(&mut self, limit: Duration) -> bool {
        let until = MonoNanos::now() + limit;
        loop {
            if self.gone() {
                return true;
            }
            if MonoNanos::now() >= until {
                return false;
            }
            tokio::time::sleep(GONE_POLL).await;
        }
    }
}

impl Drop for Client {
    /// Fail closed: if the guard unwinds with a client present, the client dies with it.
    fn drop(&mut self) {
        if !self.gone() {
            self.signal(Signal::SIGKILL);
        }
    }
}

/// The live (not zombie) processes descended from this one, read from `/proc`. In the
/// guard that is the client's whole tree, wherever its members moved: orphans are
/// reparented to the guard, a child subreaper.
fn descendants() -> Vec<Pid> {
    let janitor = JANITOR.load(std::sync::atomic::Ordering::Relaxed);
    descendants_of(
        i32::try_from(std::process::id()).unwrap_or(i32::MAX),
        u32::try_from(janitor).unwrap_or(0),
    )
}

/// The live processes descended from `root`, but for `except` (and `root` itself).
fn descendants_of(root: i32, except: u32) -> Vec<Pid> {
    let me = root;
    let janitor = i32::try_from(except).unwrap_or(0);
    let table = processes();
    let mut found = vec![me];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        let children: Vec<i32> = table
            .iter()
            .filter(|p| p.parent == parent && !found.contains(&p.pid))
            .map(|p| p.pid)
            .collect();
        found.extend(children);
        next += 1;
    }
    table
        .iter()
        .filter(|p| p.alive && p.pid != me && p.pid != janitor && found.contains(&p.pid))
        .map(|p| Pid::from_raw(p.pid))
        .collect()
}

/// This very program: `/proc/self/exe` opens it even after a package upgrade replaced
/// (unlinked) the file at its path.
pub fn self_exe() -> io::Result<PathBuf> {
    let proc_exe = Path::new("/proc/self/exe");
    if proc_exe.exists() {
        Ok(proc_exe.to_path_buf())
    } else {
        std::env::current_exe()
    }
}

/// `leased client-exec --guard-pid PID -- PROGRAM ARGS…`: the launcher between the guard
/// and the client (see the module docs). Its stdin is the guard's status pipe. On success
/// it becomes the client and never returns; on failure it writes one line to the pipe and
/// exits 127.
pub fn launch_client<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    use std::io::Write as _;
    use std::os::unix::process::CommandExt as _;
    crate::logging::init(crate::logging::LogFormat::Text);
    // A duplicate, close-on-exec: it closes by itself when the client's exec succeeds.
    let mut status = match io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => {
            tracing::error!("client-exec: no status pipe on stdin: {e}");
            return ExitCode::from(EXIT_CANNOT_EXEC);
        }
    };
    let mut fail = |why: String| {
        let _ = status.write_all(why.as_bytes());
        ExitCode::from(EXIT_CANNOT_EXEC)
    };
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let guard = match args.as_slice() {
        [flag, pid, dashes, _, ..] if flag == "--guard-pid" && dashes == "--" => {
            match pid.to_str().and_then(|p| p.parse::<i32>().ok()) {
                Some(pid) => Pid::from_raw(pid),
                None => return fail("bad launcher arguments: --guard-pid".into()),
            }
        }
        _ => return fail("bad launcher arguments: --guard-pid PID -- PROGRAM [ARGS…]".into()),
    };
    let (program, rest) = (&args[3], &args[4..]);
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        return fail(format!(
            "cannot tie it to its guard (PR_SET_PDEATHSIG): {e}"
        ));
    }
    // The guard may have died between our fork and the line above: then no signal comes.
    if nix::unistd::getppid() != guard {
        return fail("its guard is gone".into());
    }
    let error = std::process::Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .exec();
    fail(error.to_string())
}

/// The guard's janitor, once started (0: none). It is a child of the guard but not part of
/// the client: fences and exits do not wait for it.
static JANITOR: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Starts the janitor for the configured files, if any, in its own process group (the
/// client's group is signalled on every fence; the janitor must stay until the guard
/// exits). A janitor that cannot start is logged, not fatal: fencing itself deletes the
/// files, the janitor only covers a guard that dies without fencing.
fn start_janitor(config: &GuardConfig) -> Option<Pid> {
    let files: Vec<&PathBuf> = [&config.key_file, &config.password_file]
        .into_iter()
        .flatten()
        .collect();
    if files.is_empty() {
        return None;
    }
    let spawned = self_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .arg(JANITOR_SUBCOMMAND)
            .arg("--guard-pid")
            .arg(std::process::id().to_string())
            .arg("--daemon-pid")
            .arg(std::os::unix::process::parent_id().to_string())
            .arg("--grace-millis")
            .arg(config.grace.as_millis().to_string())
            .arg("--")
            .args(files)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
    });
    match spawned.map(|child| i32::try_from(child.id())) {
        Ok(Ok(pid)) => {
            JANITOR.store(pid, std::sync::atomic::Ordering::Relaxed);
            Some(Pid::from_raw(pid))
        }
        Ok(Err(_)) => None,
        Err(e) => {
            tracing::warn!("guard: cannot start the key janitor: {e}");
            None
        }
    }
}

/// `leased key-janitor --guard-pid G --daemon-pid P --grace-millis N -- FILE…`: does
/// nothing while guard and daemon live. It acts in two cases, in each of which nothing
/// else of the node can:
///
/// - the guard died (its parent-death signal, SIGTERM) or a stop signal came: it deletes
///   the files;
/// - the daemon died and the guard, which then fences at once and kills the janitor on
///   its way out, has not done so after the grace and [`JANITOR_SLACK`]: the guard is
///   frozen or wedged. The janitor SIGKILLs the client's whole tree and the guard, then
///   deletes the files. (The daemon backs up a stuck guard while it lives; this covers a
///   stuck guard whose daemon is gone.)
pub fn run_janitor<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    crate::logging::init(crate::logging::LogFormat::Text);
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let number = |arg: &OsString| arg.to_str().and_then(|a| a.parse::<u64>().ok());
    let (guard, daemon, grace, files) = match args.as_slice() {
        [g, gp, d, dp, m, ms, dashes, files @ ..]
            if g == "--guard-pid"
                && d == "--daemon-pid"
                && m == "--grace-millis"
                && dashes == "--" =>
        {
            match (number(gp), number(dp), number(ms)) {
                (Some(gp), Some(dp), Some(ms)) => (
                    Pid::from_raw(i32::try_from(gp).unwrap_or(0)),
                    i32::try_from(dp).unwrap_or(0),
                    Duration::from_millis(ms),
                    files,
                ),
                _ => {
                    tracing::error!("key-janitor: bad numbers in its arguments");
                    return EXIT_USAGE.into();
                }
            }
        }
        _ => {
            tracing::error!(
                "key-janitor: usage: --guard-pid PID --daemon-pid PID --grace-millis N -- FILE…"
            );
            return EXIT_USAGE.into();
        }
    };
    let _ = nix::sys::prctl::set_dumpable(false);
    let _ = nix::sys::prctl::set_name(c"leased-janitor");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("key-janitor: cannot start the runtime: {e}");
            return EXIT_SOFTWARE.into();
        }
    };
    rt.block_on(async {
        // Handlers first, then the parent-death signal: a SIGTERM can no longer end the
        // process before it has deleted the files.
        let stop = match shutdown_signals() {
            Ok(stop) => stop,
            Err(e) => {
                tracing::error!("key-janitor: cannot handle signals: {e}");
                return;
            }
        };
        if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM) {
            tracing::error!("key-janitor: cannot tie itself to its guard: {e}");
            return;
        }
        // The guard may have died before the parent-death signal was set.
        if nix::unistd::getppid() != guard {
            return;
        }
        tokio::select! {
            () = stop => {}
            () = watch_daemon(guard, daemon, grace + JANITOR_SLACK) => {
                tracing::warn!(
                    "key-janitor: the daemon is gone and the guard has not fenced: killing \
                     the client and the guard"
                );
                for pid in descendants_of(guard.as_raw(), std::process::id()) {
                    if let Ok(group) = nix::unistd::getpgid(Some(pid)) {
                        if group != nix::unistd::getpgrp() {
                            let _ = killpg(group, Signal::SIGKILL);
                        }
                    }
                    let _ = kill(pid, Signal::SIGKILL);
                }
                let _ = kill(guard, Signal::SIGKILL);
            }
        }
    });
    rt.shutdown_background();
    let mut code = ExitCode::SUCCESS;
    for file in files {
        if let Err(e) = remove_secret_file(Path::new(file)) {
            tracing::error!(
                "key-janitor: cannot delete {}: {e}",
                Path::new(file).display()
            );
            code = ExitCode::from(EXIT_FENCE_INCOMPLETE);
        }
    }
    code
}

/// How long after its daemon's death plus the grace the janitor gives the guard to fence
/// (and kill the janitor) before it calls the guard stuck; as the daemon's backstop.
pub const JANITOR_SLACK: Duration = Duration::from_millis(500);
/// How often the janitor looks for its daemon where it cannot wait on a pidfd.
const JANITOR_POLL: Duration = Duration::from_millis(50);

/// Returns once `daemon` has not been the guard's parent for `patience`: the daemon died
/// (the guard was reparented) and the guard did not fence in that time.
///
/// The janitor sleeps on a pidfd of the daemon, which the kernel makes readable when the
/// daemon exits, so a healthy holder's janitor never wakes. Where no pidfd can be had
/// (a kernel before 5.3), it looks at the guard's parent every [`JANITOR_POLL`].
async fn watch_daemon(guard: Pid, daemon: i32, patience: Duration) {
    if let Some(exited) = daemon_exit(guard, daemon) {
        if exited.await {
            tokio::time::sleep(patience).await;
            return;
        }
    }
    let mut tick = tokio::time::interval(JANITOR_POLL);
    let mut gone_since: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        if parent_of(guard.as_raw()) == Some(daemon) {
            continue;
        }
        let since = *gone_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= patience {
            return;
        }
    }
}

/// A future that ends when `daemon` exits (`true`), from a pidfd; `None` when no pidfd can
/// be had. The pidfd is checked against the guard's parent after it is opened: a daemon
/// already gone (its pid perhaps reused by another process) counts as exited at once. A
/// blocking thread sleeps in `poll` on it (tokio registers a descriptor only through
/// `unsafe`). `false`: the wait failed, and the caller looks at the guard's parent instead,
/// so a failed wait never reads as a dead daemon.
fn daemon_exit(guard: Pid, daemon: i32) -> Option<impl Future<Output = bool>> {
    use rustix::event::{poll, PollFd, PollFlags};
    let pid = rustix::process::Pid::from_raw(daemon)?;
    let fd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!("key-janitor: no pidfd for the daemon ({e}); polling instead");
            return None;
        }
    };
    let alive = parent_of(guard.as_raw()) == Some(daemon);
    let exited = tokio::task::spawn_blocking(move || {
        if !alive {
            return true;
        }
        // Readable once the daemon has exited; with no timeout, only then does poll return.
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        loop {
            match poll(&mut fds, None) {
                Ok(_) => return true,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    tracing::debug!("key-janitor: waiting on the daemon's pidfd: {e}");
                    return false;
                }
            }
        }
    });
    Some(async move { exited.await.unwrap_or(false) })
}

/// The parent of `pid`, from `/proc`; `None` when it cannot be read (it is gone).
fn parent_of(pid: i32) -> Option<i32> {
    ProcStat::read(pid).map(|p| p.parent)
}

/// What `/proc/PID/stat` says of one process, as the guard, its janitor and the daemon
/// need it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcStat {
    pub(crate) pid: i32,
    pub(crate) parent: i32,
    pub(crate) group: i32,
    /// Not a zombie (nor dead): zombies count as gone, whoever must reap them.
    pub(crate) alive: bool,
}

impl ProcStat {
    /// `None` when the process is gone or its stat cannot be read.
    pub(crate) fn read(pid: i32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: the fields follow the last ')'.
        let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
        let state = fields.next()?;
        let parent = fields.next()?.parse().ok()?;
        let group = fields.next()?.parse().ok()?;
        Some(Self {
            pid,
            parent,
            group,
            alive: state != "Z" && state != "X",
        })
    }
}

/// Every process whose stat can be read now.
pub(crate) fn processes() -> Vec<ProcStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter_map(ProcStat::read)
        .collect()
}

/// Overwrites a key or password file with zeros (so the tmpfs pages do not keep the
/// secret) and deletes it. A directory (a client's keystore directory) has each of its
/// files zeroed and deleted, then is removed itself; a symbolic link is removed, never
/// followed. A missing path is fine: the daemon may have removed it.
pub(crate) fn remove_secret_file(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(meta) if meta.file_type().is_dir() => {
            let mut first_error = None;
            for entry in std::fs::read_dir(path)? {
                if let Err(e) = entry.and_then(|e| remove_secret_file(&e.path())) {
                    first_error.get_or_insert(e);
                }
            }
            return match (first_error, std::fs::remove_dir(path)) {
                (Some(e), _) => Err(e),
                (None, Err(e)) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        Ok(meta) if meta.file_type().is_file() => {
            // Best effort: the unlink below is what counts.
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(path) {
                use std::io::Write as _;
                let len = usize::try_from(meta.len()).unwrap_or(0).min(1 << 20);
                let _ = f.write_all(&vec![0u8; len]).and_then(|()| f.sync_data());
            }
        }
        Ok(_) => {}
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use tokio::io::{AsyncBufReadExt, BufReader};

    #[test]
    fn commands_round_trip() {
        for c in [
            GuardCommand::Extend(MonoNanos::from_nanos(123_456_789_012)),
            GuardCommand::Start,
            GuardCommand::Fence,
            GuardCommand::Quit,
        ] {
            assert_eq!(c.to_string().parse::<GuardCommand>(), Ok(c));
        }
        for bad in [
            "",
            "extend",
            "extend -1",
            "extend 1 2",
            "start now",
            "FENCE",
        ] {
            assert!(bad.parse::<GuardCommand>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn events_round_trip() {
        for e in [
            GuardEvent::Ready(7),
            GuardEvent::Started(42),
            GuardEvent::Exited(ExitKind::Code(3)),
            GuardEvent::Exited(ExitKind::Signal(9)),
            GuardEvent::Fenced {
                reason: FenceReason::Deadline,
                stop: FenceStop::Kill,
                done_at: MonoNanos::from_nanos(99),
                elapsed: Duration::from_micros(1_000_123),
            },
            GuardEvent::Error("start refused: no deadline yet".into()),
            GuardEvent::Failed("cannot start the client x: not found".into()),
        ] {
            assert_eq!(e.to_string().parse::<GuardEvent>(), Ok(e));
        }
        assert_eq!(
            GuardEvent::Error("two\nlines".into()).to_string(),
            "error two lines"
        );
        assert!("fenced later none 1 2".parse::<GuardEvent>().is_err());
    }

    #[test]
    fn config_round_trips_through_the_arguments() {
        let config = GuardConfig {
            client: vec!["client".into(), "--flag".into(), "--".into()],
            key_file: Some("/run/x/key".into()),
            password_file: Some("/run/x/pw".into()),
            grace: Duration::from_millis(750),
            kill_wait: Duration::from_millis(3000),
        };
        let argv = std::iter::once(OsString::from("guard")).chain(config.to_args());
        let parsed = GuardCli::try_parse_from(argv).expect("parses");
        assert_eq!(parsed.args.into_config(), config);

        let bare = GuardCli::try_parse_from(["guard", "--", "c"]).expect("parses");
        assert_eq!(bare.args.into_config(), GuardConfig::new(vec!["c".into()]));
        assert!(GuardCli::try_parse_from(["guard"]).is_err());
    }

    #[test]
    fn monotonic_time_is_sane() {
        let a = MonoNanos::now();
        let b = MonoNanos::now();
        assert!(a > MonoNanos::from_nanos(0) && b >= a);
        assert_eq!(
            (a + Duration::from_millis(5)).since(a),
            Duration::from_millis(5)
        );
        assert_eq!(a.since(a + Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(
            (MonoNanos::from_nanos(u64::MAX) + Duration::MAX).as_nanos(),
            u64::MAX
        );
    }

    /// Drives `run` in this process over in-memory pipes. Clients are started through the
    /// launcher, which is the running binary: that is `leased` or a test host, never this
    /// unit-test binary, so the scenarios that start a client are process-level tests
    /// (`tests/tests/guard.rs`).
    struct Harness {
        commands: tokio::io::DuplexStream,
        events: tokio::io::Lines<BufReader<tokio::io::DuplexStream>>,
        task: tokio::task::JoinHandle<GuardOutcome>,
    }

    impl Harness {
        fn start(config: GuardConfig) -> Self {
            let (commands, guard_in) = tokio::io::duplex(4096);
            let (guard_out, events) = tokio::io::duplex(4096);
            let task = tokio::spawn(async move {
                run(&config, guard_in, guard_out, std::future::pending()).await
            });
            Self {
                commands,
                events: BufReader::new(events).lines(),
                task,
            }
        }

        async fn send(&mut self, line: impl fmt::Display) {
            self.commands
                .write_all(format!("{line}\n").as_bytes())
                .await
                .expect("guard reads");
        }

        async fn event(&mut self) -> GuardEvent {
            let line = tokio::time::timeout(Duration::from_secs(10), self.events.next_line())
                .await
                .expect("an event in time")
                .expect("readable")
                .expect("not closed");
            line.parse().expect("a valid event")
        }
    }

    fn sleeper() -> GuardConfig {
        let mut c = GuardConfig::new(vec!["sh".into(), "-c".into(), "sleep 30".into()]);
        // Generous: on a loaded 2-core CI machine the shell and its sleep have been seen to
        // take over 500 ms to be gone after SIGTERM, which escalated to SIGKILL.
        c.grace = Duration::from_secs(2);
        c
    }

    #[tokio::test]
    async fn start_needs_a_future_deadline_and_a_past_one_fences() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key");
        std::fs::write(&key, "secret").expect("write");
        let mut config = sleeper();
        config.key_file = Some(key.clone());
        let mut h = Harness::start(config);
        assert!(matches!(h.event().await, GuardEvent::Ready(_)));

        h.send("start").await;
        assert!(matches!(h.event().await, GuardEvent::Error(t) if t.contains("no deadline")));
        h.send("bogus").await;
        assert!(matches!(h.event().await, GuardEvent::Error(_)));
        h.send("x".repeat(MAX_LINE + 10)).await;
        assert!(matches!(h.event().await, GuardEvent::Error(t) if t.contains("too long")));

        let past = MonoNanos::from_nanos(MonoNanos::now().as_nanos() - 1);
        h.send(GuardCommand::Extend(past)).await;
        match h.event().await {
            GuardEvent::Fenced { reason, stop, .. } => {
                assert_eq!((reason, stop), (FenceReason::Deadline, FenceStop::None));
            }
            other => panic!("expected fenced, got {other:?}"),
        }
        let outcome = h.task.await.expect("joins");
        assert!(outcome.complete);
        assert!(!key.exists(), "the key file is deleted");
    }

    #[tokio::test]
    async fn a_fence_deletes_a_keystore_directory_with_its_files_and_no_file_a_link_points_to() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "not ours").expect("write");
        let keystore = dir.path().join("keystore");
        std::fs::create_dir(&keystore).expect("mkdir");
        let file = keystore.join("UTC--2026-01-01T00-00-00.000000000Z--00");
        std::fs::write(&file, "{}").expect("write");
        std::os::unix::fs::symlink(&outside, keystore.join("link")).expect("symlink");
        let mut config = sleeper();
        config.key_file = Some(keystore.clone());
        let mut h = Harness::start(config);
        assert!(matches!(h.event().await, GuardEvent::Ready(_)));
        h.send("fence").await;
        assert!(matches!(h.event().await, GuardEvent::Fenced { .. }));
        assert!(h.task.await.expect("joins").complete);
        assert!(!keystore.exists(), "the keystore directory is deleted");
        assert_eq!(std::fs::read(&outside).expect("read"), b"not ours");
    }
}
