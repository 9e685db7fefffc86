//! `leased run`: the driver that executes the [`machine`](crate::machine)'s actions against
//! the real stores, the fence guard and the clock, and feeds the answers back as events.
//!
//! Everything that can block runs off the loop: store calls in tasks, each bounded by a
//! timeout of at most R/2 (and the SQLite busy timeout set to match), so the loop always
//! gets to the fence deadline on time. The loop itself never decides anything; it only
//! carries actions out and reports what happened, with the time it happened, on the same
//! `CLOCK_MONOTONIC` the guard enforces deadlines on.
//!
//! The key travels from the secret store through a zeroizing buffer into the key file
//! (0600, in the private runtime directory, which is meant to be a tmpfs), and is wiped
//! from memory as soon as the file is written. A hand-off writes under a name of its own
//! (`.handoff-N`); only the control loop publishes it as the key file, by a rename, and
//! only while that hand-off is still the current one, so a fence that overtakes a slow
//! hand-off (a keystore's KDF) can never be followed by a key file. Start-up and exit sweep
//! the runtime directory of every key and temporary file.
//!
//! The guard owns the client: it is started only under a deadline, and stopped by the guard
//! when the deadline passes, when told to fence, or when this process dies; the client dies
//! with the guard. The daemon is the guard's second line: a fence the guard has not
//! confirmed within its grace (and a fence that comes after the deadline, at once) makes
//! the daemon SIGKILL the client's process group and the guard itself. The client starts
//! with a clean environment (`[client] env` only), and neither this process nor the guard
//! is dumpable.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;

use shared::exit::Status;

use shared::secret::SecretValue;
use shared::Name;

use crate::config::{Config, NudgeListen};
use crate::guard::{GuardCommand, GuardEvent, MonoNanos};
use crate::machine::{self, Action, Event, FenceReason, Lease, Machine, MonoTime, Ticket};
use crate::telemetry::Telemetry;
use crate::{http, notify};
use shared::spec::LeaseStoreSpec;

mod chain;
mod gate;
mod guards;
mod handoff;
mod nudge;
mod process;
mod spans;
mod stores;

pub use chain::{Chain, RpcChain, Verdict, Watch};
use guards::GuardHandle;
pub use guards::{
    GroupProbe, GuardProcess, GuardSpawner, GuardSpec, ProcessSpawner, Spawned, BACKSTOP_SLACK,
};
use handoff::{HandOff, Staged};
use process::op_timeout;
pub use process::{run_daemon, Parts};
use stores::{LeaseMeta, Stores};

/// Exit status when another daemon holds the runtime directory's lock.
pub const EXIT_LOCKED: Status = Status::TempFail;
/// Exit status when the configuration cannot work with what the stores hold.
pub const EXIT_CONFIG: Status = Status::Usage;
/// Exit status when the stores or the HTTP listener cannot be set up.
pub const EXIT_UNAVAILABLE: Status = Status::Unavailable;
/// Exit status when the process cannot be made safe to hold a key.
pub const EXIT_OSERR: Status = Status::OsErr;

/// Where the daemon reads the time. Its times are on `CLOCK_MONOTONIC`'s origin, because
/// the guard's deadlines are absolute times on that clock: the binary passes [`now`]; a
/// test whose guards are not real processes may pass another (tokio's paused time).
pub type Clock = fn() -> MonoTime;

/// Now, on `CLOCK_MONOTONIC` (the guard's clock), as a machine time.
pub fn now() -> MonoTime {
    MonoTime::from_duration(MonoNanos::now().as_duration())
}

/// Binds the release-nudge socket at `listen`; without it the daemon still works, its
/// standby only learns of releases at its next look, so a failure is logged, not fatal.
async fn bind_nudger(listen: NudgeListen, node: &str) -> Option<Arc<nudge::Nudger>> {
    let at = match listen {
        NudgeListen::At(a) => a,
        NudgeListen::HostIp(port) => match handoff::host_ip() {
            Ok(ip) => std::net::SocketAddr::new(ip, port),
            Err(e) => {
                log(format!(
                    "lease.nudge_listen: cannot find the host's address: {e}"
                ));
                return None;
            }
        },
    };
    match nudge::Nudger::bind(at, node).await {
        Ok(n) => Some(n),
        Err(e) => {
            log(format!(
                "lease.nudge_listen {at}: {e}; releases elsewhere reach this daemon at its next look instead"
            ));
            None
        }
    }
}

/// The width over which `sqlite:` holders spread their renews after each grid instant:
/// R/5, at most one second (a hundred holders then write about 10 ms apart).
fn sqlite_renew_spread(p: &machine::Params) -> Duration {
    (p.renew_every / 5).min(Duration::from_secs(1))
}

/// The phase that puts the renew grid on whole multiples of `renew_every` of the wall
/// clock (seconds since the epoch), read against `now` on the daemon's clock: every VM
/// whose clock NTP keeps then renews at the same instants, and a standby knows when a
/// lease can end without asking. A wall clock before 1970 gives phase zero; a later step
/// of it moves this VM's grid, which costs standbys a slower look, never safety.
fn grid_phase(renew_every: Duration, now: MonoTime) -> Duration {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let period = renew_every.as_nanos().max(1);
    let wall = wall.as_nanos() % period;
    let mono = now.since_origin().as_nanos() % period;
    let phase = (wall + period - mono) % period;
    Duration::from_nanos(u64::try_from(phase).unwrap_or(0))
}

/// One line at info, inside whatever spans are entered: the daemon's (`node`) always, the
/// lease's (`identity`, `epoch`) while one is held.
fn log(message: impl std::fmt::Display) {
    tracing::info!("{message}");
}

/// The daemon's loop on `config`, reading the time from `clock`: leases, hands off,
/// renews and fences until `shutdown` completes, then fences, releases and returns the
/// exit status. Opens the stores and the HTTP listener first (exit 69 if it cannot).
pub async fn run<S>(config: Config, shutdown: S, clock: Clock) -> ExitCode
where
    S: Future<Output = ()>,
{
    match Parts::open(&config) {
        Ok(parts) => run_with(config, parts, shutdown, clock).await,
        Err(message) => {
            log(message);
            EXIT_UNAVAILABLE.into()
        }
    }
}

/// [`run`] with the stores and guards given: the in-process tests' entry.
pub async fn run_with<S>(config: Config, parts: Parts, shutdown: S, clock: Clock) -> ExitCode
where
    S: Future<Output = ()>,
{
    // A pool whose secrets the client config cannot use is a configuration error, found
    // now rather than at the first hand-off.
    if let Err(message) = handoff::check_pool_secrets(&config, &*parts.secrets).await {
        log(message);
        return EXIT_CONFIG.into();
    }
    match Driver::new(config, parts, clock).await {
        Ok(driver) => driver.run(shutdown).await,
        Err(message) => {
            log(message);
            EXIT_UNAVAILABLE.into()
        }
    }
}

/// Messages into the loop: the machine's events, and what the driver's own work reports.
enum Msg {
    Machine(Event),
    /// Hand-off `run` has the key ready: publish it and start the guard.
    KeyReady {
        run: Ticket,
        lease: Lease,
        started: MonoTime,
        staged: Staged,
    },
    /// Hand-off `run` failed; `detail` says why (never key material).
    HandOffFailed {
        run: Ticket,
        detail: String,
    },
    /// Guard `run` reports.
    Guard {
        run: Ticket,
        event: GuardEvent,
    },
    /// Guard `run`'s reports ended: it exited.
    GuardGone {
        run: Ticket,
    },
    /// Guard `run`'s client, which it had not confirmed fenced, is gone too.
    GuardDone {
        run: Ticket,
    },
    /// Why an attempt of the signer step failed: kept for the fence, should the hand-off
    /// fail for it at the start timeout, and said at most
    /// every [`SIGNER_WAIT_LOG_EVERY`], so that a hand-off waiting on its sync shows why.
    SignerWait {
        lease: Ticket,
        detail: String,
    },
}

/// How often a hand-off waiting on its signer step says why.
const SIGNER_WAIT_LOG_EVERY: Duration = Duration::from_secs(5);

/// What the driver keeps about the lease it holds: for its metadata, `/status`, and the
/// fence's explanation.
struct LeaseCtx {
    ticket: Ticket,
    meta: Arc<LeaseMeta>,
    /// The identity's address, once the key has been read.
    address: Option<String>,
    /// Why the last hand-off failed, for the fence that follows.
    failure: Option<String>,
    /// Why the lease was given up, and the detail, for the release.
    fenced: Option<(FenceReason, String)>,
    /// The key for the client's engine-signer RPC while the lease is held; dropped
    /// (zeroized) at the fence.
    signer_key: Option<Arc<SecretValue>>,
    /// When the running hand-off began, for its latency.
    hand_off_began: Option<MonoTime>,
    /// When a failed signer attempt was last said.
    signer_wait_said: Option<MonoTime>,
    /// Told when the hand-off has read the key and set the address: the first metadata
    /// write waits for it a little, so that holder and address go in one request.
    staged: Arc<tokio::sync::Notify>,
}

/// How long the first metadata write of a lease waits for the hand-off's address, so that
/// one request carries both. A hand-off reads its key in tens of milliseconds; one held in
/// quarantine gets its holder written after this wait, and its address in a second write.
const METADATA_COALESCE: Duration = Duration::from_millis(300);

struct Driver {
    config: Arc<Config>,
    clock: Clock,
    stores: Stores,
    guards: Arc<dyn GuardSpawner>,
    /// The doppelganger watch of every quarantine, when a chain is configured.
    watch: Option<Watch>,
    tx: mpsc::UnboundedSender<Msg>,
    /// Whether the machine stands by ([`Machine::is_standing_by`]): the nudge announcer
    /// writes this node's entry only then.
    standing_by: watch::Sender<bool>,
    rx: mpsc::UnboundedReceiver<Msg>,
    wake: Option<MonoTime>,
    /// The last deadline the machine allowed the client; sent to every new guard first.
    deadline: Option<MonoTime>,
    guard: Option<GuardHandle>,
    handoff: Option<HandOff>,
    lease: Option<LeaseCtx>,
    /// The span of the identity the machine is on (`identity`, and `epoch` once known),
    /// a child of the daemon's (`node`): every line about the identity carries it.
    lease_span: Option<(Name, tracing::Span)>,
    node_span: tracing::Span,
}

impl Driver {
    async fn new(config: Config, parts: Parts, clock: Clock) -> Result<Self, String> {
        let telemetry = Arc::new(Telemetry::default());
        telemetry.update_snapshot(|s| {
            s.node = config.node.clone();
            s.lease = config.lease.duration;
            s.heartbeat = Some(clock());
        });
        let listener = http::bind(config.http.listen)
            .await
            .map_err(|e| format!("http.listen {}: {e}", config.http.listen))?;
        tokio::spawn(http::serve(listener, telemetry.clone(), clock));
        if let Some(public) = config.http.public {
            let listener = http::bind(public)
                .await
                .map_err(|e| format!("http.public {public}: {e}"))?;
            let served = Arc::new(crate::data_api::Served::default());
            tokio::spawn(crate::data_api::refresh(
                parts.leases.clone(),
                served.clone(),
            ));
            tokio::spawn(crate::data_api::serve(listener, served));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let nudger = match config.lease.nudge_listen {
            Some(listen) => bind_nudger(listen, &config.node).await,
            None => None,
        };
        let (standing_by, standby_changes) = watch::channel(false);
        if let Some(n) = &nudger {
            tokio::spawn(n.clone().receive(tx.clone()));
            tokio::spawn(nudge::announce(
                parts.leases.clone(),
                config.node.clone(),
                n.advertised,
                op_timeout(&config),
                Duration::from_secs(30),
                standby_changes,
            ));
        }
        let stores = Stores::new(
            parts.leases,
            parts.secrets,
            op_timeout(&config),
            telemetry,
            clock,
        )
        .with_nudger(nudger);
        Ok(Self {
            config: Arc::new(config),
            clock,
            stores,
            guards: parts.guards,
            watch: parts.watch,
            tx,
            standing_by,
            rx,
            wake: None,
            deadline: None,
            guard: None,
            handoff: None,
            lease: None,
            lease_span: None,
            node_span: tracing::Span::current(),
        })
    }

    async fn run<S>(mut self, shutdown: S) -> ExitCode
    where
        S: Future<Output = ()>,
    {
        let clock = self.clock;
        let mut shutdown = std::pin::pin!(shutdown);
        let mut params = self.config.machine_params(random_seed());
        let now = clock();
        params.renew_grid = Some(grid_phase(params.renew_every, now));
        if matches!(self.config.store.leases, LeaseStoreSpec::Sqlite(_)) {
            params.renew_offset = machine::spread(&params.node, sqlite_renew_spread(&params));
        }
        let (mut machine, actions) = Machine::start(params, now);
        let c = &self.config;
        log(format!(
            "started: pool {:?}, lease {}s, renew every {}s, margin {}s, http {}",
            c.identity.pool,
            c.lease.duration.as_secs(),
            c.lease.renew_every.as_secs_f64(),
            c.lease.margin.as_secs_f64(),
            c.http.listen
        ));
        notify::send(notify::Notice::Ready);
        let watchdog = notify::watchdog_interval();
        let mut heartbeat = tokio::time::interval(watchdog.map_or(Duration::from_secs(1), |w| {
            (w / 2).min(Duration::from_secs(1))
        }));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut terminating = false;
        let mut exit = self.execute(&machine, actions);
        while !exit {
            let until = |at: Option<MonoTime>| at.map(|at| at.saturating_duration_since(clock()));
            let sleep_for = until(self.wake);
            let backstop_in = until(self.guard.as_ref().and_then(GuardHandle::backstop_at));
            let event = tokio::select! {
                biased;
                _ = &mut shutdown, if !terminating => Some(Event::Terminate),
                _ = sleep_or_never(backstop_in) => {
                    if let Some(g) = &mut self.guard {
                        let _in = self.lease_span.as_ref().map(|(_, s)| s.enter());
                        g.run_backstop();
                        self.stores.telemetry.metrics(|m| m.backstop_kills.inc());
                    }
                    None
                }
                msg = self.rx.recv() => match msg {
                    Some(msg) => self.span().in_scope(|| self.on_message(msg)),
                    None => None,
                },
                _ = sleep_or_never(sleep_for) => {
                    self.wake = None;
                    Some(Event::Tick)
                }
                _ = heartbeat.tick() => {
                    // The loop is alive and not wedged: only it pings the watchdog.
                    self.stores.telemetry.update_snapshot(|s| s.heartbeat = Some(clock()));
                    if watchdog.is_some() {
                        notify::send(notify::Notice::Watchdog);
                    }
                    None
                }
            };
            let Some(event) = event else { continue };
            if matches!(event, Event::Terminate) {
                terminating = true;
                log("SIGTERM: fencing, releasing, stopping");
                notify::send(notify::Notice::Stopping);
            }
            let actions = machine.handle(clock(), event);
            let standby = machine.is_standing_by();
            self.standing_by
                .send_if_modified(|was| std::mem::replace(was, standby) != standby);
            exit = self.execute(&machine, actions);
        }
        // A hand-off still deriving or writing a key must not publish it now; no client
        // outlives the daemon's stop.
        if let Some(h) = self.handoff.take() {
            h.cancel();
        }
        if let Some(g) = self.guard.take() {
            g.finish().1.reap();
        }
        self.stores.withdraw_standby(&self.config.node).await;
        log("stopped");
        ExitCode::SUCCESS
    }

    /// Turns a message into a machine event, doing the driver's part first.
    fn on_message(&mut self, msg: Msg) -> Option<Event> {
        match msg {
            Msg::Machine(event) => Some(event),
            Msg::KeyReady {
                run,
                lease,
                started,
                staged,
            } => self.key_ready(run, lease, started, staged),
            Msg::HandOffFailed { run, detail } => {
                if self.handoff.as_ref().map(|h| h.run) != Some(run) {
                    return None;
                }
                self.handoff = None;
                self.hand_off_failed(run, detail)
            }
            Msg::Guard { run, event } => self.on_guard(run, event),
            Msg::GuardGone { run } => self.on_guard_gone(run),
            Msg::GuardDone { run } => self.guard_done(run),
            Msg::SignerWait { lease, detail } => {
                let now = (self.clock)();
                if let Some(ctx) = self.ctx(lease) {
                    let due = ctx
                        .signer_wait_said
                        .is_none_or(|at| now >= at + SIGNER_WAIT_LOG_EVERY);
                    if due {
                        ctx.signer_wait_said = Some(now);
                        tracing::info!("waiting to enable the signer: {detail}");
                    }
                    ctx.failure = Some(format!("the signer could not be enabled: {detail}"));
                }
                None
            }
        }
    }

    /// Hand-off `run` failed: say why, keep the reason for the lease metadata and
    /// `/status`, and tell the machine, which gives the identity up.
    fn hand_off_failed(&mut self, run: Ticket, detail: String) -> Option<Event> {
        log(format!("hand-off failed: {detail}"));
        if let Some(ctx) = &mut self.lease {
            ctx.failure = Some(detail);
        }
        Some(Event::HandOffFailed { run })
    }

    /// Spawns work on the loop's runtime, in the current lease span (the identity it is
    /// about stays on its lines even if the machine has moved on when it ends).
    fn spawn<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(work.instrument(self.span()));
    }

    /// Spawns a store call whose answer is a machine event.
    fn answer(&self, call: impl Future<Output = Event> + Send + 'static) {
        let tx = self.tx.clone();
        self.spawn(async move {
            let _ = tx.send(Msg::Machine(call.await));
        });
    }

    /// The driver's record of `lease`, if it is the one it keeps.
    fn ctx(&mut self, lease: Ticket) -> Option<&mut LeaseCtx> {
        self.lease.as_mut().filter(|c| c.ticket == lease)
    }

    /// Executes `actions` in order; true when the machine said to exit.
    fn execute(&mut self, machine: &Machine, actions: Vec<Action>) -> bool {
        let mut exit = false;
        for action in actions {
            // An action about an identity runs in its span, and so does what it spawns.
            if let Some(identity) = action.identity().cloned() {
                self.follow_identity(Some(&identity));
            }
            let span = self.span();
            let _in = span.enter();
            exit |= self.execute_one(action);
        }
        let state = machine.state();
        let address = self
            .lease
            .as_ref()
            .filter(|c| Some(c.ticket) == state.lease().map(|l| l.ticket))
            .and_then(|c| c.address.clone());
        let line = self.stores.telemetry.show(machine, address, (self.clock)());
        notify::send(notify::Notice::Status(&line));
        exit
    }

    fn execute_one(&mut self, action: Action) -> bool {
        match action {
            Action::ListCandidates { ticket } => self.answer(self.stores.list(ticket)),
            Action::TryAcquire { ticket, identity } => {
                let duration = self.config.lease_duration();
                self.answer(self.stores.acquire(ticket, identity, duration));
            }
            Action::ReadEpoch { lease } => {
                if self.lease.as_ref().is_none_or(|c| c.ticket != lease.ticket) {
                    let c = &self.config;
                    self.lease = Some(LeaseCtx {
                        ticket: lease.ticket,
                        meta: Arc::new(LeaseMeta::holder(&c.node, c.lease.duration.as_secs())),
                        address: None,
                        failure: None,
                        fenced: None,
                        signer_key: None,
                        signer_wait_said: None,
                        hand_off_began: None,
                        staged: Arc::new(tokio::sync::Notify::new()),
                    });
                }
                self.answer(self.stores.read_epoch(lease));
            }
            Action::WriteMetadata { lease, epoch } => {
                let Some(ctx) = self.ctx(lease.ticket) else {
                    return false;
                };
                let meta = ctx.meta.clone();
                let staged = ctx.staged.clone();
                if meta.set_epoch(epoch) {
                    log(format!("acquired {} (epoch {epoch})", lease.identity));
                    self.span().record("epoch", epoch);
                }
                let write = self.stores.write_metadata(lease, meta);
                self.spawn(async move {
                    let _ = tokio::time::timeout(METADATA_COALESCE, staged.notified()).await;
                    write.await;
                });
            }
            Action::BeginQuarantine { lease, min_wait } => match self.watch.clone() {
                Some(watch) => {
                    let secret = self.stores.fetch_secret(lease.identity.clone());
                    let telemetry = self.stores.telemetry.clone();
                    self.answer(chain::quarantine(watch, secret, lease, min_wait, telemetry));
                }
                None => self.answer(async move {
                    tokio::time::sleep(min_wait).await;
                    Event::QuarantineDone {
                        ticket: lease.ticket,
                    }
                }),
            },
            Action::SendRenew { lease } => self.answer(self.stores.renew(lease)),
            Action::ExtendGuard { deadline } => {
                self.deadline = Some(deadline);
                if let Some(g) = &self.guard {
                    g.extend(deadline);
                }
            }
            Action::FetchKeyAndHandOff { lease, run } => self.hand_off(lease, run),
            Action::RestartClient { run, .. } => match &self.guard {
                Some(g) if g.run == run && g.can_restart() => g.send(GuardCommand::Start),
                _ => {
                    let event = self.hand_off_failed(run, "the client's guard is gone".into());
                    let _ = self.tx.send(Msg::Machine(event.expect("an event")));
                }
            },
            Action::SetEngineSigner { lease, attempt } => {
                self.set_engine_signer(lease.ticket, attempt)
            }
            Action::Fence { lease, reason } => self.fence(lease, reason),
            Action::Release { lease } => {
                let note = self
                    .ctx(lease.ticket)
                    .and_then(|c| Some((c.meta.clone(), c.fenced.clone()?)))
                    .filter(|(_, (reason, _))| *reason != FenceReason::Shutdown)
                    .map(|(meta, (reason, detail))| (meta, reason, detail));
                self.answer(self.stores.release(lease, note));
            }
            Action::ScheduleWake { at } => self.wake = Some(at),
            Action::NotifyStatus { state, identity } => {
                self.follow_identity(identity.as_ref());
                self.span().in_scope(|| match &identity {
                    Some(id) => log(format!("state {state} {id}")),
                    None => log(format!("state {state}")),
                });
            }
            Action::Exit => return true,
        }
        false
    }
}

/// Sleeps for `d`, or forever without one.
async fn sleep_or_never(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::getrandom(&mut bytes);
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests;
