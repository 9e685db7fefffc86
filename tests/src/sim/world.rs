//! One simulated run: N nodes, each a daemon driving the real [`Machine`], a guard and a
//! client, against one [`MemoryLeaseStore`], in virtual time.
//!
//! What is real and what is modelled:
//!
//! - **Real:** `leased::machine` (every decision: the lease's epoch, restart or new
//!   hand-off, what a guard's end means), `leased::config` (the settings, parsed from a
//!   rendered file), the outcome classification (`AcquireOutcome::from_result`,
//!   `RenewOutcome::from_result`), and the lease store's semantics (the conformance-tested
//!   [`MemoryLeaseStore`]).
//! - **Modelled after `daemon.rs` (and `daemon/`) and `guard.rs`:** how the driver carries
//!   actions out (store calls under a timeout of min(R/2, 5 s), `sent_at` read before the
//!   request leaves, one hand-off in flight and guards tagged by its `run`, the backstop,
//!   when `FenceDone` and `GuardGone` are reported, the metadata writes under one lease
//!   taking turns with the machine's epoch) and how the guard enforces its deadline
//!   (SIGTERM then SIGKILL by min(deadline, order) + grace, at once when the fence is
//!   late, the client dying with the guard). Where the model must choose, it takes the
//!   order the real code would allow that is worst for safety, and says so.
//!
//! Every event runs at one instant of true time; each node reads its own drifting clock.
//! Nothing here sleeps or spawns a thread, and one seed decides everything.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use leased::machine::{
    AcquireOutcome, Action, Event, FenceReason, Lease, Machine, MonoTime, Params, RenewOutcome,
    State, Ticket,
};
use shared::lease::{meta, LeaseError, LeaseId, LeaseState, Metadata, StoreClock, StoreTime};
use shared::Name;

use super::plan::{
    max_latency, probe_bound, secs, Fault, FaultKind, Frozen, Killed, Outage, Plan, Planted, Probe,
    Settings, Us, MS, SEC, TIMEOUT_STOP_SEC,
};
use super::rng::Rng;
use crate::memory_store::MemoryLeaseStore;

/// More events than any schedule needs: a loop in the simulator itself.
const MAX_EVENTS: u64 = 1_000_000;
/// `guard.rs`'s LATE_FENCE: a fence that begins later than this after the deadline kills at
/// once.
const LATE_FENCE: Us = 100 * MS;
/// `daemon.rs`'s BACKSTOP_SLACK.
const BACKSTOP_SLACK: Us = 500 * MS;
/// `guard.rs`'s LAUNCH_WAIT.
const LAUNCH_WAIT: Us = 5 * SEC;
/// systemd's `RestartSec` in `ops/leased.service`.
const RESTART_SEC: Us = 2 * SEC;

/// What went wrong, with the instant it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub at: Us,
    pub kind: ViolationKind,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ViolationKind {
    /// Two clients could sign with one identity at once.
    Overlap,
    /// A client could sign while its node's lease was not live in the store: a standby
    /// could have taken the identity at that moment.
    SignedWithoutLease,
    /// A renew was sent for a lease after it was fenced or released.
    RenewAfterFence,
    /// A lease-lost answer did not fence at once.
    LostNotFenced,
    /// A lease record's epoch went back: a lease's metadata carried an epoch not above the
    /// one an earlier lease wrote, or other than one written before under the same lease.
    EpochWentBack,
    /// One node's clients could sign with two identities at once.
    TwoIdentities,
    /// An identity with a healthy standby was not served again within the bound.
    Liveness,
}

/// Counts of what a run exercised, summed over many runs to show the schedules are not
/// vacuous.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub take_overs: u64,
    pub deadline_fences: u64,
    pub lost_fences: u64,
    pub guard_deadline_kills: u64,
    pub late_fence_kills: u64,
    pub backstop_kills: u64,
    pub late_renew_successes: u64,
    pub renews_after_expiry: u64,
    pub hand_off_failures: u64,
    pub crash_loops: u64,
    pub probes: u64,
    pub probes_skipped: u64,
    /// The probes that were served again: kind, take-over time, its bound, and D.
    pub probe_times: Vec<ProbeTime>,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.events += o.events;
        self.take_overs += o.take_overs;
        self.deadline_fences += o.deadline_fences;
        self.lost_fences += o.lost_fences;
        self.guard_deadline_kills += o.guard_deadline_kills;
        self.late_fence_kills += o.late_fence_kills;
        self.backstop_kills += o.backstop_kills;
        self.late_renew_successes += o.late_renew_successes;
        self.renews_after_expiry += o.renews_after_expiry;
        self.hand_off_failures += o.hand_off_failures;
        self.crash_loops += o.crash_loops;
        self.probes += o.probes;
        self.probes_skipped += o.probes_skipped;
        self.probe_times.extend_from_slice(&o.probe_times);
    }
}

/// How long one liveness probe's identity went unserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTime {
    pub kind: Probe,
    /// From the probe's fault to a client signing again.
    pub took: Us,
    pub bound: Us,
    pub lease: Duration,
}

/// The result of one run.
#[derive(Debug)]
pub struct Outcome {
    pub violation: Option<Violation>,
    pub stats: Stats,
    /// The readable trace, when asked for.
    pub trace: Vec<String>,
}

// ---- clocks ---------------------------------------------------------------------------

/// A clock that runs at `ppm` millionths of true time from `origin_local` at `origin_true`.
#[derive(Debug, Clone, Copy)]
struct Clock {
    origin_true: Us,
    origin_local: Us,
    ppm: u64,
}

impl Clock {
    fn local(&self, t: Us) -> Us {
        self.origin_local + (t.saturating_sub(self.origin_true)) * self.ppm / 1_000_000
    }

    /// The first true instant at which the clock reads `local` or more.
    fn when(&self, local: Us) -> Us {
        if local <= self.origin_local {
            return self.origin_true;
        }
        self.origin_true + ((local - self.origin_local) * 1_000_000).div_ceil(self.ppm)
    }
}

fn mono(local: Us) -> MonoTime {
    MonoTime::from_duration(Duration::from_micros(local))
}

/// A machine time on the microsecond grid of the simulation, rounded down: right for a
/// deadline (never later than the machine meant).
fn local_of(t: MonoTime) -> Us {
    t.since_origin().as_micros() as Us
}

/// A machine time rounded up to the microsecond grid: right for a wake-up (never before
/// the machine has work to do).
fn local_ceil(t: MonoTime) -> Us {
    t.since_origin().as_nanos().div_ceil(1_000) as Us
}

/// The store's clock, set by the world before every store operation.
#[derive(Debug)]
struct SimStoreClock {
    millis: AtomicU64,
}

impl StoreClock for SimStoreClock {
    fn now(&self) -> std::io::Result<StoreTime> {
        Ok(StoreTime {
            boot_id: String::new(),
            millis: self.millis.load(Ordering::Relaxed),
        })
    }
}

// ---- requests ---------------------------------------------------------------------------

/// A request as it reaches the store.
#[derive(Debug, Clone)]
enum Op {
    List,
    Acquire {
        identity: usize,
        id: LeaseId,
    },
    Renew {
        identity: usize,
        id: LeaseId,
    },
    Release {
        identity: usize,
        id: LeaseId,
    },
    Read {
        identity: usize,
    },
    Write {
        identity: usize,
        id: LeaseId,
        metadata: Box<Metadata>,
    },
    Secret,
}

/// The store's answer as it reaches the node.
#[derive(Debug)]
enum Answer {
    /// The acquirable identities, by index.
    List(Result<Vec<usize>, ()>),
    Acquire(Result<LeaseId, LeaseError>),
    Renew(Result<(), LeaseError>),
    /// A release or a metadata write: whether it was done.
    Done(bool),
    Read(Result<u64, ()>),
    Secret(bool),
}

/// What the daemon awaits from one store call (a spawned future under the store timeout).
#[derive(Debug, Clone)]
enum CallKind {
    List {
        ticket: Ticket,
    },
    Acquire {
        ticket: Ticket,
        identity: usize,
        sent_at: MonoTime,
    },
    Renew {
        ticket: Ticket,
        sent_at: MonoTime,
    },
    /// `Stores::read_epoch`: the record's epoch, for the machine.
    ReadEpoch {
        ticket: Ticket,
    },
    /// `Stores::write_metadata` (`LeaseMeta::write_latest` under the timeout): waits for
    /// its turn among the lease's writes, then writes the lease's metadata as it is then.
    /// A [`MetaWrite::Note`] is the first half of `Stores::release`: the release follows.
    Meta {
        lease: Lease,
        identity: usize,
        what: MetaWrite,
    },
    Release {
        lease: Lease,
    },
    /// The key fetch of hand-off `run`.
    Secret {
        run: Ticket,
        lease: Lease,
    },
    /// Answered; nothing more to do.
    Spent,
}

/// Which metadata write: only the planted bug tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetaWrite {
    /// The machine's `WriteMetadata`.
    Holder,
    /// The address, once the key was read.
    Address,
    /// Why the lease is given up, before the release.
    Note,
}

#[derive(Debug)]
struct Call {
    id: u64,
    kind: CallKind,
    /// Answered or timed out: the daemon has heard all it will.
    settled: bool,
    /// Requests of the call still on their way (or their answers).
    in_flight: u32,
    /// A metadata write waiting for its turn (the `turn` lock of `LeaseMeta`).
    parked: bool,
    /// A metadata write of the planted bug, reading the record's epoch first.
    reading: bool,
    /// When `within` stops waiting (true time). The timeout event is scheduled only once
    /// an answer is known to come later, or never: most answers beat it.
    timeout_at: Us,
    timeout_armed: bool,
}

/// `stores::LeaseMeta`: one lease's metadata as the driver keeps it, and the turn its
/// writes take. Every write writes the content as it is when its turn comes; nothing is
/// written before the machine has decided the epoch.
#[derive(Debug)]
struct LeaseMeta {
    ticket: Ticket,
    /// The machine's epoch for the lease (`WriteMetadata`).
    epoch: Option<u64>,
    /// The key was read: the address is part of the content.
    address: bool,
    /// Why the lease was given up (the note before a non-shutdown release).
    note: Option<FenceReason>,
    /// The write whose turn it is, and the writes waiting for theirs, in order (tokio's
    /// mutex is fair).
    writing: Option<u64>,
    waiting: VecDeque<u64>,
}

/// `daemon.rs`'s `LeaseCtx`: what the driver keeps about the lease it holds.
#[derive(Debug, Clone, Copy)]
struct LeaseCtx {
    ticket: Ticket,
    /// Why the lease was fenced (for the note before the release).
    fenced: Option<FenceReason>,
}

// ---- processes ---------------------------------------------------------------------------

/// What arrives in the daemon's channel (`Msg`).
#[derive(Debug, Clone)]
enum LoopMsg {
    Event(Event),
    KeyReady { run: Ticket, lease: Lease },
    HandOffFailed { run: Ticket },
    Guard { run: Ticket, event: GuardEvent },
    GuardGone { run: Ticket },
    GuardDone { run: Ticket },
}

/// Work for the daemon's tasks (not its loop): an answer or a timeout of a call.
#[derive(Debug)]
enum TaskEv {
    Answer { call: u64, answer: Answer },
    Timeout { call: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuardEvent {
    Started,
    Failed,
    Exited,
    Fenced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuardCmd {
    Extend(Us),
    Start,
    Fence,
}

/// The daemon's view of its guard (`GuardHandle`), tied to one hand-off.
#[derive(Debug, Clone)]
struct GuardView {
    /// The hand-off; tags everything the guard reports.
    run: Ticket,
    /// The guard process.
    pid: u64,
    /// The client was started at least once (`client_pgid`).
    started: bool,
    /// The guard reported its fence done.
    fenced: bool,
    /// The lease whose fence waits for this guard to be gone, and when (local time) the
    /// daemon stands in if the guard has not confirmed it by then.
    fence: Option<(Ticket, Option<Us>)>,
    /// The guard is gone; a client it did not confirm fenced may still be dying.
    exiting: bool,
}

impl GuardView {
    /// `GuardHandle::can_restart`.
    fn can_restart(&self) -> bool {
        !self.fenced && self.fence.is_none() && !self.exiting
    }

    /// `GuardHandle::confirmed`: the backstop stands down.
    fn confirmed(&mut self) {
        self.fenced = true;
        if let Some((_, backstop)) = &mut self.fence {
            *backstop = None;
        }
    }

    /// `GuardHandle::order_fence`: the first order counts.
    fn order_fence(&mut self, lease: Ticket, backstop: Option<Us>) {
        if self.fence.is_none() {
            let armed = !self.fenced && !self.exiting;
            self.fence = Some((lease, backstop.filter(|_| armed)));
        }
    }

    fn backstop_at(&self) -> Option<Us> {
        self.fence.and_then(|(_, at)| at)
    }
}

struct Daemon {
    inc: u64,
    machine: Machine,
    freezes: u32,
    tasks: VecDeque<TaskEv>,
    inbox: VecDeque<LoopMsg>,
    term_pending: bool,
    terminating: bool,
    wake: Option<Us>,
    armed: Option<Us>,
    deadline: Option<Us>,
    guard: Option<GuardView>,
    /// The hand-off in flight (`HandOff`): a fence or a newer hand-off cancels it.
    handoff: Option<Ticket>,
    lease: Option<LeaseCtx>,
    /// The metadata of the lease held, and of earlier leases while writes under them are
    /// still under way.
    metas: Vec<LeaseMeta>,
    calls: Vec<Call>,
    /// Tickets of leases this daemon has fenced or released: never renewed again.
    done_tickets: Vec<Ticket>,
}

impl Daemon {
    /// Drops the metadata of earlier leases once no write under them is left.
    fn prune_metas(&mut self) {
        let current = self.lease.map(|c| c.ticket);
        self.metas
            .retain(|m| Some(m.ticket) == current || m.writing.is_some() || !m.waiting.is_empty());
    }
}

struct Guard {
    pid: u64,
    /// The daemon incarnation whose pipe it reads.
    inc: u64,
    /// The hand-off it runs the client of: tags what it reports.
    run: Ticket,
    identity: usize,
    lease: LeaseId,
    deadline: Option<Us>,
    freezes: u32,
    queue: VecDeque<GuardCmd>,
    /// Launching the client (`Guard::launch`).
    launching: Option<Launch>,
    client: Option<u64>,
    /// The client exited by itself and the guard has not handled it yet.
    child_exited: bool,
    /// Fencing: SIGKILL at this local time unless the client is gone first.
    fencing: Option<Us>,
    eof: bool,
    term: bool,
    armed: Option<Us>,
}

/// A launch under way: the launcher execs the client (if it can) whether or not the guard
/// runs; the guard hears of it when it next runs at or after `done`.
#[derive(Debug, Clone, Copy)]
struct Launch {
    /// When the guard stops waiting: the exec, or the end of its wait.
    done: Us,
    /// The exec happens (at `done`).
    execs: bool,
    /// The client the exec started.
    client: Option<u64>,
}

#[derive(Debug)]
struct Client {
    id: u64,
    /// The guard it runs under.
    guard: u64,
    identity: usize,
    lease: LeaseId,
    /// Obeys SIGTERM after this long; `None`: waits for SIGKILL.
    term_delay: Option<Us>,
}

struct Node {
    name: String,
    params: Params,
    clock: Clock,
    daemon: Option<Daemon>,
    /// Guard processes: one, except while an old one is still exiting.
    guards: Vec<Guard>,
    /// Clients, each under the guard of its `guard`.
    clients: Vec<Client>,
    vm_freezes: u32,
    vm_down: bool,
    /// The unit is stopping: restart when the guard is gone.
    stopping: Option<Us>,
    partition_until: Us,
    slow_until: Us,
    slow_extra: Us,
    crashy_until: Us,
    no_start_until: Us,
    secrets_down_until: Us,
    /// When this node last fenced or released each identity (for liveness eligibility).
    gave_up: Vec<Option<Us>>,
}

impl Node {
    fn daemon_frozen(&self) -> bool {
        self.vm_freezes > 0 || self.daemon.as_ref().is_some_and(|d| d.freezes > 0)
    }

    fn guard_frozen(&self, pid: u64) -> bool {
        self.vm_freezes > 0 || self.guards.iter().any(|g| g.pid == pid && g.freezes > 0)
    }

    fn client_alive(&self, id: u64) -> bool {
        self.clients.iter().any(|c| c.id == id)
    }
}

// ---- events ------------------------------------------------------------------------------

#[derive(Debug)]
enum Ev {
    Fault(usize),
    FaultEnd(usize),
    Start {
        node: usize,
    },
    Boot {
        node: usize,
    },
    DaemonTimer {
        node: usize,
        inc: u64,
    },
    Arrive {
        node: usize,
        inc: u64,
        call: u64,
        op: Op,
    },
    Task {
        node: usize,
        inc: u64,
        ev: TaskEv,
    },
    Loop {
        node: usize,
        inc: u64,
        msg: LoopMsg,
    },
    ToGuard {
        node: usize,
        pid: u64,
        cmd: GuardCmd,
    },
    GuardWake {
        node: usize,
        pid: u64,
    },
    ClientExit {
        node: usize,
        client: u64,
    },
    UnitKill {
        node: usize,
        pid: u64,
    },
    ProbeCheck {
        probe: usize,
    },
    ProbeThaw {
        node: usize,
        vm: bool,
        inc: u64,
    },
    /// The launcher execs the client.
    Exec {
        node: usize,
        pid: u64,
    },
}

/// A queue entry: when, in what order among events at one instant, and where the event
/// waits in the world's slab (so the queue moves only these few bytes).
type Scheduled = (Us, u64, u32);

/// A client that may sign: from its start to its death, except while its VM is frozen.
#[derive(Debug, Clone)]
struct Signer {
    client: u64,
    node: usize,
    identity: usize,
    lease: LeaseId,
    /// The store covers the signer until this store time, as long as nothing was done to
    /// the identity's record since `version`.
    covered: Option<(u64, u64)>,
}

#[derive(Debug)]
struct ActiveProbe {
    kind: Probe,
    at: Us,
    identity: usize,
    holder: usize,
    served_at: Option<Us>,
}

// ---- the world ---------------------------------------------------------------------------

pub(crate) struct World<'p> {
    plan: &'p Plan,
    settings: Arc<Settings>,
    rng: Rng,
    now: Us,
    seq: u64,
    /// Pending events, latest first: the next one is popped from the end. A sorted vector
    /// beats a binary heap at these sizes in a debug build.
    queue: Vec<Scheduled>,
    slab: Vec<Option<Ev>>,
    free: Vec<u32>,
    store: MemoryLeaseStore,
    store_clock: Arc<SimStoreClock>,
    store_rate: Clock,
    names: Vec<Name>,
    nodes: Vec<Node>,
    outage_until: Us,
    outage: Option<Outage>,
    signers: Vec<Signer>,
    probes: Vec<ActiveProbe>,
    /// Calls whose request waits in a slow store's queue.
    queued: Vec<u64>,
    /// Per identity: bumped by every operation on its record.
    versions: Vec<u64>,
    /// Per identity: the epoch in its record's metadata, and the lease that wrote it.
    epochs: Vec<(u64, Option<LeaseId>)>,
    lease_ids: usize,
    /// Per fault: the process it froze (daemon incarnation or guard pid).
    frozen_target: Vec<Option<u64>>,
    next_id: u64,
    violation: Option<Violation>,
    stats: Stats,
    trace: Option<Vec<String>>,
}

impl<'p> World<'p> {
    pub(crate) fn new(plan: &'p Plan, trace: bool) -> Self {
        let settings = plan.settings.clone();
        let store_clock = Arc::new(SimStoreClock {
            millis: AtomicU64::new(0),
        });
        let store = MemoryLeaseStore::new(store_clock.clone());
        let names: Vec<Name> = (0..plan.identities)
            .map(|i| Name::new(format!("m0-v{i}")).expect("a valid name"))
            .collect();
        for name in &names {
            store.create_record_now(name).expect("a record");
        }
        let mut rng = Rng::new(plan.seed, 2);
        let nodes = (0..plan.nodes)
            .map(|i| {
                let mut params = settings.params.clone();
                params.node = format!("vm-{i}");
                Node {
                    name: params.node.clone(),
                    params,
                    clock: Clock {
                        origin_true: 0,
                        origin_local: rng.range(SEC, 1_000 * SEC),
                        ppm: plan.node_ppm[i],
                    },
                    daemon: None,
                    guards: Vec::new(),
                    clients: Vec::new(),
                    vm_freezes: 0,
                    vm_down: false,
                    stopping: None,
                    partition_until: 0,
                    slow_until: 0,
                    slow_extra: 0,
                    crashy_until: 0,
                    no_start_until: 0,
                    secrets_down_until: 0,
                    gave_up: vec![None; plan.identities],
                }
            })
            .collect();
        let mut world = Self {
            plan,
            settings,
            rng,
            now: 0,
            seq: 0,
            queue: Vec::new(),
            slab: Vec::new(),
            free: Vec::new(),
            store,
            store_clock,
            store_rate: Clock {
                origin_true: 0,
                origin_local: 1_000 * SEC,
                ppm: plan.store_ppm,
            },
            names,
            nodes,
            outage_until: 0,
            outage: None,
            signers: Vec::new(),
            probes: Vec::new(),
            queued: Vec::new(),
            versions: vec![0; plan.identities],
            epochs: vec![(0, None); plan.identities],
            lease_ids: 0,
            frozen_target: vec![None; plan.faults.len()],
            next_id: 0,
            violation: None,
            stats: Stats::default(),
            trace: trace.then(Vec::new),
        };
        for (i, &at) in plan.starts.iter().enumerate() {
            world.schedule(at, Ev::Start { node: i });
        }
        for (i, fault) in plan.faults.iter().enumerate() {
            world.schedule(fault.at, Ev::Fault(i));
        }
        world
    }

    /// Runs to the horizon or the first violation.
    pub(crate) fn run(mut self) -> Outcome {
        while let Some((at, _, slot)) = self.queue.pop() {
            if at > self.plan.horizon {
                break;
            }
            let ev = self.slab[slot as usize].take().expect("scheduled");
            self.free.push(slot);
            self.now = at;
            self.stats.events += 1;
            assert!(
                self.stats.events < MAX_EVENTS,
                "simulator runaway: seed {} passed {MAX_EVENTS} events at {}",
                self.plan.seed,
                secs(self.now)
            );
            self.dispatch(ev);
            if self.violation.is_some() {
                break;
            }
        }
        Outcome {
            violation: self.violation,
            stats: self.stats,
            trace: self.trace.unwrap_or_default(),
        }
    }

    // ---- plumbing ----

    fn schedule(&mut self, at: Us, ev: Ev) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(ev);
                slot
            }
            None => {
                self.slab.push(Some(ev));
                (self.slab.len() - 1) as u32
            }
        };
        // Every queued event has a lower sequence number, so the new one goes right after
        // the last event due later; most events are due soon, so that is found fastest by
        // walking back from the end (a binary search costs more in a debug build).
        let at = at.max(self.now);
        let mut i = self.queue.len();
        while i > 0 && self.queue[i - 1].0 <= at {
            i -= 1;
        }
        self.queue.insert(i, (at, self.seq, slot));
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn note(&mut self, node: Option<usize>, text: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            let who = node.map_or(String::from("      "), |n| format!("vm-{n:<3}"));
            let mut line = format!("{:>10} {who} ", secs(self.now));
            let _ = write!(line, "{}", text());
            trace.push(line);
        }
    }

    fn fail(&mut self, kind: ViolationKind, detail: String) {
        if self.violation.is_none() {
            self.note(None, || format!("VIOLATION {kind:?}: {detail}"));
            self.violation = Some(Violation {
                at: self.now,
                kind,
                detail,
            });
        }
    }

    fn local(&self, n: usize) -> Us {
        self.nodes[n].clock.local(self.now)
    }

    fn calm(&self) -> bool {
        self.now >= self.plan.calm_from || self.plan.weather == 0
    }

    /// One-way network latency of a request or an answer.
    fn latency(&mut self) -> Us {
        if self.calm() {
            return self.rng.range(MS, 20 * MS);
        }
        let wild = self.plan.weather == 2;
        let roll = self.rng.below(1000);
        let max = max_latency(&self.settings);
        match roll {
            0..=799 => self.rng.range(MS, 30 * MS),
            800..=949 => self.rng.range(30 * MS, 300 * MS),
            950..=989 => self.rng.range(300 * MS, 2 * SEC),
            _ if wild => self.rng.range(SEC, max),
            _ => self.rng.range(300 * MS, 2 * SEC),
        }
    }

    /// Whether a message is lost outside outages.
    fn lost(&mut self) -> bool {
        !self.calm() && self.plan.loss_permille > 0 && self.rng.permille(self.plan.loss_permille)
    }

    fn set_store_clock(&self) {
        self.store_clock
            .millis
            .store(self.store_rate.local(self.now) / MS, Ordering::Relaxed);
    }

    fn daemon(&mut self, n: usize, inc: u64) -> Option<&mut Daemon> {
        self.nodes[n].daemon.as_mut().filter(|d| d.inc == inc)
    }

    // ---- dispatch ----

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Fault(i) => self.fault(i),
            Ev::FaultEnd(i) => self.fault_end(i),
            Ev::Start { node } => self.start_daemon(node),
            Ev::Boot { node } => self.boot(node),
            Ev::DaemonTimer { node, inc } => {
                let now = self.now;
                if let Some(d) = self.daemon(node, inc) {
                    if d.armed == Some(now) {
                        d.armed = None;
                    }
                    self.pump(node);
                }
            }
            Ev::Arrive {
                node,
                inc,
                call,
                op,
            } => self.arrive(node, inc, call, op),
            Ev::Task { node, inc, ev } => {
                if self.daemon(node, inc).is_none() {
                    return;
                }
                if self.nodes[node].daemon_frozen() {
                    self.nodes[node]
                        .daemon
                        .as_mut()
                        .expect("alive")
                        .tasks
                        .push_back(ev);
                } else {
                    self.task(node, ev);
                    self.pump(node);
                }
            }
            Ev::Loop { node, inc, msg } => {
                if let Some(d) = self.daemon(node, inc) {
                    d.inbox.push_back(msg);
                    self.pump(node);
                }
            }
            Ev::ToGuard { node, pid, cmd } => {
                if let Some(g) = self.guard(node, pid) {
                    g.queue.push_back(cmd);
                    self.guard_step(node);
                }
            }
            Ev::GuardWake { node, pid } => {
                let now = self.now;
                if let Some(g) = self.guard(node, pid) {
                    if g.armed == Some(now) {
                        g.armed = None;
                    }
                    self.guard_step(node);
                }
            }
            Ev::ClientExit { node, client } => {
                // A frozen VM runs nothing: the exit happens at the thaw.
                if self.nodes[node].vm_freezes > 0 {
                    if self.nodes[node].client_alive(client) {
                        let at = self.now + 10 * MS;
                        self.schedule(at, Ev::ClientExit { node, client });
                    }
                    return;
                }
                if let Some(pid) = self.client_dies(node, client) {
                    self.note(Some(node), || "client exits".into());
                    if let Some(g) = self.guard(node, pid) {
                        g.child_exited = true;
                    }
                    self.guard_step(node);
                }
            }
            Ev::UnitKill { node, pid } => {
                if self.guard(node, pid).is_some() {
                    self.note(Some(node), || {
                        "systemd: SIGKILL to what is left of the unit".into()
                    });
                    self.kill_guard(node, pid);
                }
            }
            Ev::Exec { node, pid } => {
                if self.nodes[node].vm_freezes > 0 {
                    // Nothing runs on a frozen VM; the guard gives up on the launch at its
                    // thaw if its wait is over by then.
                    let at = self.now + 10 * MS;
                    self.schedule(at, Ev::Exec { node, pid });
                    return;
                }
                let pending = self.guard(node, pid).and_then(|g| {
                    g.launching
                        .filter(|l| l.execs && l.client.is_none())
                        .map(|_| (g.identity, g.lease.clone()))
                });
                if let Some((identity, lease)) = pending {
                    let id = self.exec_client(node, pid, identity, lease);
                    if let Some(l) = self.guard(node, pid).and_then(|g| g.launching.as_mut()) {
                        l.client = Some(id);
                    }
                    self.guard_step(node);
                }
            }
            Ev::ProbeThaw { node, vm, inc } => {
                self.note(Some(node), || "the probe's freeze ends".into());
                if vm {
                    self.thaw_vm(node);
                } else if let Some(d) = self.daemon(node, inc) {
                    d.freezes = d.freezes.saturating_sub(1);
                    self.thaw_daemon(node);
                }
            }
            Ev::ProbeCheck { probe } => {
                let p = &self.probes[probe];
                // Served again by a standby, or still (or again) by the holder itself.
                let served = p.served_at.is_some()
                    || (0..self.nodes.len()).any(|n| self.serving(n) == Some(p.identity));
                if !served {
                    let detail = format!(
                        "{:?} of vm-{} (holder of m0-v{}) at {}: m0-v{} not served again by {}, with a healthy standby",
                        p.kind,
                        p.holder,
                        p.identity,
                        secs(p.at),
                        p.identity,
                        secs(self.now)
                    );
                    self.fail(ViolationKind::Liveness, detail);
                }
            }
        }
    }

    // ---- faults ----

    fn fault(&mut self, i: usize) {
        let fault: Fault = self.plan.faults[i];
        self.note(None, || format!("FAULT {fault}"));
        match fault.kind {
            FaultKind::Freeze { node, what, len } => {
                if self.nodes[node].vm_down {
                    return;
                }
                match what {
                    Frozen::Daemon => {
                        if let Some(d) = self.nodes[node].daemon.as_mut() {
                            d.freezes += 1;
                            self.frozen_target[i] = Some(d.inc);
                        }
                    }
                    Frozen::Guard => {
                        if let Some(g) = self.nodes[node].guards.last_mut() {
                            g.freezes += 1;
                            self.frozen_target[i] = Some(g.pid);
                        }
                    }
                    Frozen::Vm => {
                        self.nodes[node].vm_freezes += 1;
                        self.frozen_target[i] = Some(0);
                        self.close_signers_of(node);
                    }
                }
                self.schedule(self.now + len, Ev::FaultEnd(i));
            }
            FaultKind::Crash { node, what, down } => self.crash(node, what, down),
            FaultKind::Terminate { node, unit, down } => self.terminate(node, unit, down),
            FaultKind::Break { identity } => {
                self.set_store_clock();
                let name = self.names[identity].clone();
                self.check_leases(Some(identity));
                self.versions[identity] += 1;
                let result = self.store.break_now(&name, None);
                self.note(None, || format!("break {name}: {result:?}"));
            }
            FaultKind::Outage { mode, len } => {
                self.outage = Some(mode);
                self.outage_until = self.outage_until.max(self.now + len);
                self.schedule(self.now + len, Ev::FaultEnd(i));
            }
            FaultKind::Partition { node, len } => {
                let n = &mut self.nodes[node];
                n.partition_until = n.partition_until.max(self.now + len);
            }
            FaultKind::SlowLink { node, len, extra } => {
                let n = &mut self.nodes[node];
                n.slow_until = n.slow_until.max(self.now + len);
                n.slow_extra = extra;
            }
            FaultKind::CrashLoop { node, len } => {
                let n = &mut self.nodes[node];
                n.crashy_until = n.crashy_until.max(self.now + len);
                let ids: Vec<u64> = self.nodes[node].clients.iter().map(|c| c.id).collect();
                for client in ids {
                    let delay = self.rng.range(10 * MS, SEC);
                    self.schedule(self.now + delay, Ev::ClientExit { node, client });
                }
            }
            FaultKind::CannotStart { node, len } => {
                let n = &mut self.nodes[node];
                n.no_start_until = n.no_start_until.max(self.now + len);
            }
            FaultKind::SecretsDown { node, len } => {
                let n = &mut self.nodes[node];
                n.secrets_down_until = n.secrets_down_until.max(self.now + len);
            }
            FaultKind::Probe(kind) => self.probe(kind),
        }
    }

    fn fault_end(&mut self, i: usize) {
        let fault = self.plan.faults[i];
        match fault.kind {
            FaultKind::Freeze { node, what, .. } => {
                let Some(target) = self.frozen_target[i] else {
                    return;
                };
                self.note(Some(node), || format!("{what:?} thaws"));
                match what {
                    Frozen::Daemon => {
                        if let Some(d) =
                            self.nodes[node].daemon.as_mut().filter(|d| d.inc == target)
                        {
                            d.freezes = d.freezes.saturating_sub(1);
                            self.thaw_daemon(node);
                        }
                    }
                    Frozen::Guard => {
                        if let Some(g) = self.guard(node, target) {
                            g.freezes = g.freezes.saturating_sub(1);
                            self.guard_step(node);
                        }
                    }
                    Frozen::Vm => self.thaw_vm(node),
                }
            }
            FaultKind::Outage { .. } if self.now >= self.outage_until => self.outage = None,
            _ => {}
        }
    }

    fn crash(&mut self, node: usize, what: Killed, down: Us) {
        if self.nodes[node].vm_down || self.nodes[node].vm_freezes > 0 {
            return;
        }
        match what {
            Killed::Daemon => self.daemon_dies(node, RESTART_SEC),
            Killed::Guard => {
                if let Some(pid) = self.nodes[node].guards.last().map(|g| g.pid) {
                    self.kill_guard(node, pid);
                }
            }
            Killed::Client => {
                if let Some(c) = self.nodes[node].clients.last() {
                    let client = c.id;
                    self.schedule(self.now, Ev::ClientExit { node, client });
                }
            }
            Killed::Vm => {
                self.nodes[node].vm_down = true;
                self.close_signers_of(node);
                let n = &mut self.nodes[node];
                n.clients.clear();
                n.guards.clear();
                n.daemon = None;
                n.stopping = None;
                self.schedule(self.now + down, Ev::Boot { node });
            }
        }
    }

    fn boot(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        n.vm_down = false;
        n.vm_freezes = 0;
        // A new boot: CLOCK_MONOTONIC starts again near zero.
        n.clock = Clock {
            origin_true: self.now,
            origin_local: 0,
            ppm: n.clock.ppm,
        };
        let at = self.now + self.rng.range(3 * SEC, 10 * SEC);
        self.schedule(at, Ev::Start { node });
    }

    fn terminate(&mut self, node: usize, unit: bool, down: Us) {
        if self.nodes[node].vm_down {
            return;
        }
        let Some(d) = self.nodes[node].daemon.as_mut() else {
            return;
        };
        d.term_pending = true;
        self.nodes[node].stopping = Some(down);
        if unit {
            for g in &mut self.nodes[node].guards {
                g.term = true;
            }
            self.client_sigterm(node);
            self.guard_step(node);
        }
        self.pump(node);
    }

    // ---- liveness probes ----

    fn serving(&self, n: usize) -> Option<usize> {
        let node = &self.nodes[n];
        let d = node.daemon.as_ref()?;
        if node.daemon_frozen() || !d.machine.state().is_serving() {
            return None;
        }
        let held = d.machine.state().identity()?;
        let c = node
            .clients
            .iter()
            .find(|c| self.names[c.identity] == *held)?;
        (node.vm_freezes == 0).then_some(c.identity)
    }

    fn probe(&mut self, kind: Probe) {
        let served: Vec<(usize, usize)> = (0..self.nodes.len())
            .filter_map(|n| self.serving(n).map(|i| (n, i)))
            .collect();
        let all_served = (0..self.names.len()).all(|i| served.iter().any(|&(_, x)| x == i));
        let p = &self.settings.params;
        let forget = (p.lease.max(p.crash_loop_window).as_micros() as Us) * 102 / 100 + SEC;
        let choice = served.iter().copied().find(|&(holder, identity)| {
            (0..self.nodes.len()).any(|s| {
                let node = &self.nodes[s];
                s != holder
                    && !node.vm_down
                    && !node.daemon_frozen()
                    && node.daemon.as_ref().is_some_and(|d| {
                        !d.terminating
                            && !d.term_pending
                            && matches!(d.machine.state(), State::Seeking { .. })
                    })
                    && node.gave_up[identity].is_none_or(|t| self.now > t + forget)
            })
        });
        let (Some((holder, identity)), true) = (choice, all_served) else {
            self.stats.probes_skipped += 1;
            self.note(None, || {
                "probe skipped: no identity with a healthy standby".into()
            });
            return;
        };
        self.stats.probes += 1;
        self.note(Some(holder), || {
            format!("probe {kind:?} of the holder of m0-v{identity}")
        });
        let d = self.settings.d();
        match kind {
            Probe::Crash => self.daemon_dies(holder, RESTART_SEC),
            Probe::Terminate => self.terminate(holder, false, RESTART_SEC),
            Probe::FreezeDaemon | Probe::FreezeVm => {
                let len = self.rng.range(d / 2, 2 * d);
                let n = &mut self.nodes[holder];
                if kind == Probe::FreezeVm {
                    n.vm_freezes += 1;
                    self.close_signers_of(holder);
                } else if let Some(dm) = n.daemon.as_mut() {
                    dm.freezes += 1;
                }
                let inc = self.nodes[holder].daemon.as_ref().map_or(0, |d| d.inc);
                self.schedule(
                    self.now + len,
                    Ev::ProbeThaw {
                        node: holder,
                        vm: kind == Probe::FreezeVm,
                        inc,
                    },
                );
            }
        }
        let bound = probe_bound(&self.settings, kind);
        self.probes.push(ActiveProbe {
            kind,
            at: self.now,
            identity,
            holder,
            served_at: None,
        });
        let probe = self.probes.len() - 1;
        self.schedule(self.now + bound, Ev::ProbeCheck { probe });
    }
}

impl World<'_> {
    fn thaw_vm(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if n.vm_down || n.vm_freezes == 0 {
            return;
        }
        n.vm_freezes -= 1;
        if n.vm_freezes > 0 {
            return;
        }
        // On thaw the guard and the daemon act before the client runs again: a late fence
        // kills at once. (That the kernel may schedule the client first is the one window
        // the design leaves to the quarantine's doppelganger check; see
        // docs/architecture.md.)
        self.guard_step(node);
        self.thaw_daemon(node);
        self.open_signer(node);
    }
}

// ---- the daemon, after daemon.rs ----------------------------------------------------------

impl World<'_> {
    fn start_daemon(&mut self, node: usize) {
        if self.nodes[node].vm_down || self.nodes[node].daemon.is_some() {
            return;
        }
        let inc = self.id();
        let mut params = self.nodes[node].params.clone();
        params.seed = self.rng.next_u64();
        let now = mono(self.local(node));
        let (machine, actions) = Machine::start(params, now);
        self.nodes[node].daemon = Some(Daemon {
            inc,
            machine,
            freezes: 0,
            tasks: VecDeque::new(),
            inbox: VecDeque::new(),
            term_pending: false,
            terminating: false,
            wake: None,
            armed: None,
            deadline: None,
            guard: None,
            handoff: None,
            lease: None,
            metas: Vec::new(),
            calls: Vec::new(),
            done_tickets: Vec::new(),
        });
        self.nodes[node].stopping = None;
        self.note(Some(node), || "daemon starts".into());
        self.execute(node, actions);
        self.pump(node);
    }

    /// kill -9 of the daemon. systemd then stops the rest of the unit (SIGTERM and SIGCONT
    /// to the guard and the client, SIGKILL after TimeoutStopSec) and starts it again
    /// `restart` after the unit is empty.
    fn daemon_dies(&mut self, node: usize, restart: Us) {
        if self.nodes[node].daemon.take().is_none() {
            return;
        }
        self.note(Some(node), || "daemon killed".into());
        let n = &mut self.nodes[node];
        n.stopping = Some(n.stopping.unwrap_or(restart));
        let mut pids = Vec::new();
        for g in &mut n.guards {
            g.eof = true;
            g.term = true;
            g.freezes = 0;
            pids.push(g.pid);
        }
        for pid in pids {
            self.schedule(self.now + TIMEOUT_STOP_SEC, Ev::UnitKill { node, pid });
        }
        self.client_sigterm(node);
        self.guard_step(node);
        self.maybe_restart(node);
    }

    fn maybe_restart(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if n.daemon.is_none() && !n.vm_down && n.guards.is_empty() {
            if let Some(delay) = n.stopping.take() {
                let at = self.now + delay;
                self.schedule(at, Ev::Start { node });
            }
        }
    }

    fn thaw_daemon(&mut self, node: usize) {
        self.pump(node);
    }

    /// The daemon's loop (and its tasks), until nothing more is ready: the `select!` of
    /// `Driver::run` in its biased order.
    fn pump(&mut self, node: usize) {
        let mut turns = 0u32;
        loop {
            turns += 1;
            if turns > 100_000 {
                let tail = self.trace.as_ref().map_or(String::new(), |t| {
                    t[t.len().saturating_sub(30)..].join("\n")
                });
                let state = self.nodes[node]
                    .daemon
                    .as_ref()
                    .map(|d| format!("{:?}", d.machine.state()));
                panic!(
                    "simulator runaway: vm-{node}'s loop is busy at {} (local {}, seed {}): {state:?}\n{tail}",
                    secs(self.now),
                    self.local(node),
                    self.plan.seed
                );
            }
            if self.violation.is_some() || self.nodes[node].daemon_frozen() {
                return;
            }
            let local = self.local(node);
            let Some(d) = self.nodes[node].daemon.as_mut() else {
                return;
            };
            if let Some(ev) = d.tasks.pop_front() {
                // Answers and timeouts that piled up during a freeze: when a call's answer
                // and its timeout are both ready, either may win.
                let ev = match ev {
                    TaskEv::Timeout { call } => {
                        let answer = d.tasks.iter().position(
                            |t| matches!(t, TaskEv::Answer { call: c, .. } if *c == call),
                        );
                        match answer {
                            Some(i) if self.rng.percent(50) => {
                                let answer = d.tasks.remove(i).expect("present");
                                d.tasks.push_front(TaskEv::Timeout { call });
                                answer
                            }
                            _ => TaskEv::Timeout { call },
                        }
                    }
                    // An answer that came during a freeze whose call's timeout passed by the
                    // thaw: either may win here too.
                    TaskEv::Answer { call, answer } => {
                        let now = self.now;
                        let raced = d
                            .calls
                            .iter()
                            .any(|c| c.id == call && !c.settled && c.timeout_at <= now);
                        if raced && self.rng.percent(50) {
                            d.tasks.push_front(TaskEv::Answer { call, answer });
                            TaskEv::Timeout { call }
                        } else {
                            TaskEv::Answer { call, answer }
                        }
                    }
                };
                self.task(node, ev);
                continue;
            }
            if d.term_pending {
                d.term_pending = false;
                if !d.terminating {
                    d.terminating = true;
                    self.handle(node, Event::Terminate);
                }
                continue;
            }
            let backstop = d.guard.as_ref().and_then(GuardView::backstop_at);
            if backstop.is_some_and(|at| local >= at) {
                self.run_backstop(node);
                continue;
            }
            if let Some(msg) = d.inbox.pop_front() {
                if let Some(event) = self.on_message(node, msg) {
                    self.handle(node, event);
                }
                continue;
            }
            if d.wake.is_some_and(|w| local >= w) {
                d.wake = None;
                self.handle(node, Event::Tick);
                continue;
            }
            break;
        }
        // Arm one timer for the earliest of the wake-up and the backstop.
        let clock = self.nodes[node].clock;
        let Some(d) = self.nodes[node].daemon.as_mut() else {
            return;
        };
        let backstop = d.guard.as_ref().and_then(GuardView::backstop_at);
        let next = match (d.wake, backstop) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(local) = next {
            let at = clock.when(local);
            if d.armed.is_none_or(|armed| at < armed) {
                d.armed = Some(at);
                let inc = d.inc;
                self.schedule(at, Ev::DaemonTimer { node, inc });
            }
        }
    }

    /// `machine.handle(now(), event)` and the actions, with the hygiene checks.
    fn handle(&mut self, node: usize, event: Event) {
        let local = self.local(node);
        let d = self.nodes[node].daemon.as_mut().expect("alive");
        let state = d.machine.state();
        let live_ticket = match state {
            State::Holding { lease, .. } | State::Quarantine { lease, .. } => Some(lease.ticket),
            _ => None,
        };
        let lost = match &event {
            Event::RenewResult {
                ticket,
                outcome: RenewOutcome::Lost,
            } => live_ticket.filter(|t| t == ticket),
            _ => None,
        };
        if let Event::RenewResult {
            outcome: RenewOutcome::Renewed { .. },
            ..
        } = &event
        {
            let late = match state {
                State::Holding { renewal, .. } | State::Quarantine { renewal, .. } => {
                    renewal.fence_at <= mono(local)
                }
                State::Fenced { .. } => true,
                _ => false,
            };
            if late {
                self.stats.late_renew_successes += 1;
            }
        }
        let brief = self.trace.is_some().then(|| brief_event(&event));
        let actions = d.machine.handle(mono(local), event);
        let after = match d.machine.state() {
            State::Holding { lease, .. } | State::Quarantine { lease, .. } => Some(lease.ticket),
            _ => None,
        };
        if let Some(brief) = brief {
            let kind = d.machine.state().kind();
            let acts: Vec<String> = actions.iter().filter_map(brief_action).collect();
            self.note(Some(node), || {
                format!("{brief} -> {kind} [{}]", acts.join(", "))
            });
        }
        if let (Some(ticket), Some(now)) = (lost, after) {
            if ticket == now {
                self.fail(
                    ViolationKind::LostNotFenced,
                    format!("vm-{node} was told its lease is lost and did not fence"),
                );
            }
        }
        self.execute(node, actions);
    }

    fn identity_index(&self, name: &Name) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .expect("an identity of the pool")
    }

    fn execute(&mut self, node: usize, actions: Vec<Action>) {
        let mut exit = false;
        for action in actions {
            let local = self.local(node);
            match action {
                Action::ListCandidates { ticket } => {
                    self.call(node, CallKind::List { ticket }, Op::List);
                }
                Action::TryAcquire { ticket, identity } => {
                    let identity = self.identity_index(&identity);
                    let id = self.fresh_lease_id();
                    let kind = CallKind::Acquire {
                        ticket,
                        identity,
                        sent_at: mono(local),
                    };
                    self.call(node, kind, Op::Acquire { identity, id });
                }
                Action::ReadEpoch { lease } => {
                    let identity = self.identity_index(&lease.identity);
                    let d = self.nodes[node].daemon.as_mut().expect("alive");
                    if d.lease.is_none_or(|c| c.ticket != lease.ticket) {
                        d.lease = Some(LeaseCtx {
                            ticket: lease.ticket,
                            fenced: None,
                        });
                        d.prune_metas();
                        d.metas.push(LeaseMeta {
                            ticket: lease.ticket,
                            epoch: None,
                            address: false,
                            note: None,
                            writing: None,
                            waiting: VecDeque::new(),
                        });
                    }
                    let kind = CallKind::ReadEpoch {
                        ticket: lease.ticket,
                    };
                    self.call(node, kind, Op::Read { identity });
                }
                Action::WriteMetadata { lease, epoch } => {
                    let d = self.nodes[node].daemon.as_mut().expect("alive");
                    if d.lease.is_none_or(|c| c.ticket != lease.ticket) {
                        continue;
                    }
                    if let Some(m) = d.metas.iter_mut().find(|m| m.ticket == lease.ticket) {
                        m.epoch = Some(epoch);
                    }
                    self.metadata_write(node, lease, MetaWrite::Holder);
                }
                Action::BeginQuarantine { lease, min_wait } => {
                    let at = self.nodes[node]
                        .clock
                        .when(local + min_wait.as_micros() as Us);
                    let inc = self.nodes[node].daemon.as_ref().expect("alive").inc;
                    let msg = LoopMsg::Event(Event::QuarantineDone {
                        ticket: lease.ticket,
                    });
                    self.schedule(at, Ev::Loop { node, inc, msg });
                }
                Action::SendRenew { lease } => {
                    let identity = self.identity_index(&lease.identity);
                    let d = self.nodes[node].daemon.as_ref().expect("alive");
                    if d.done_tickets.contains(&lease.ticket) {
                        self.fail(
                            ViolationKind::RenewAfterFence,
                            format!(
                                "vm-{node} renews {} after fencing or releasing that lease",
                                lease.identity
                            ),
                        );
                    }
                    let kind = CallKind::Renew {
                        ticket: lease.ticket,
                        sent_at: mono(local),
                    };
                    self.call(
                        node,
                        kind,
                        Op::Renew {
                            identity,
                            id: lease.id,
                        },
                    );
                }
                Action::ExtendGuard { deadline } => {
                    let d = self.nodes[node].daemon.as_mut().expect("alive");
                    let deadline = local_of(deadline);
                    d.deadline = Some(deadline);
                    if let Some(g) = &d.guard {
                        let pid = g.pid;
                        self.pipe_to_guard(node, pid, GuardCmd::Extend(deadline));
                    }
                }
                Action::FetchKeyAndHandOff { lease, run } => self.hand_off(node, lease, run),
                Action::RestartClient { run, .. } => {
                    let d = self.nodes[node].daemon.as_ref().expect("alive");
                    match &d.guard {
                        Some(g) if g.run == run && g.can_restart() => {
                            let pid = g.pid;
                            self.pipe_to_guard(node, pid, GuardCmd::Start);
                        }
                        _ => {
                            self.note(Some(node), || "the client's guard is gone".into());
                            let event = self.hand_off_failed(run);
                            self.send_to_loop(node, LoopMsg::Event(event));
                        }
                    }
                }
                // The rendered configuration has no `engine_signer_rpc`, so the machine never
                // asks; were it to, the model's client (which signs from its start) takes
                // the key at once.
                Action::SetEngineSigner { attempt, .. } => {
                    let event = Event::EngineSignerResult { attempt, set: true };
                    self.send_to_loop(node, LoopMsg::Event(event));
                }
                Action::Fence { lease, reason } => {
                    self.gave_up(node, &lease);
                    match reason {
                        FenceReason::DeadlineMissed => self.stats.deadline_fences += 1,
                        FenceReason::LeaseLost => self.stats.lost_fences += 1,
                        FenceReason::CrashLoop => self.stats.crash_loops += 1,
                        _ => {}
                    }
                    self.fence(node, lease, reason);
                }
                Action::Release { lease } => {
                    self.gave_up(node, &lease);
                    self.release(node, lease);
                }
                Action::ScheduleWake { at } => {
                    let d = self.nodes[node].daemon.as_mut().expect("alive");
                    d.wake = Some(local_ceil(at));
                }
                Action::NotifyStatus { .. } => {}
                Action::Exit => exit = true,
            }
        }
        if exit {
            self.daemon_exit(node);
        }
    }

    fn gave_up(&mut self, node: usize, lease: &Lease) {
        let identity = self.identity_index(&lease.identity);
        self.nodes[node].gave_up[identity] = Some(self.now);
        let d = self.nodes[node].daemon.as_mut().expect("alive");
        d.done_tickets.push(lease.ticket);
    }

    /// The machine said Exit: the loop ends, the hand-off in flight is cancelled, the guard
    /// is finished (a client it did not confirm fenced SIGKILLed) and reaped, the process
    /// exits and systemd restarts the unit.
    fn daemon_exit(&mut self, node: usize) {
        let Some(d) = self.nodes[node].daemon.take() else {
            return;
        };
        self.note(Some(node), || "daemon exits".into());
        if let Some(g) = d.guard {
            self.finish_guard(node, &g);
            self.kill_guard(node, g.pid);
        }
        let n = &mut self.nodes[node];
        n.stopping = Some(n.stopping.unwrap_or(RESTART_SEC));
        self.maybe_restart(node);
    }

    /// A lease id no earlier request of this run proposed (the daemon's `LeaseId::random`).
    fn fresh_lease_id(&mut self) -> LeaseId {
        self.lease_ids += 1;
        lease_id(self.lease_ids)
    }

    /// `within(op_timeout, …)` (`stores.rs`): the request leaves now; the answer counts if
    /// it is back before the timeout.
    fn call(&mut self, node: usize, kind: CallKind, op: Op) {
        let id = self.open_call(node, kind);
        let inc = self.nodes[node].daemon.as_ref().expect("alive").inc;
        self.send(node, inc, id, op);
    }

    /// A call whose requests are sent later; returns its id.
    fn open_call(&mut self, node: usize, kind: CallKind) -> u64 {
        let id = self.id();
        let clock = self.nodes[node].clock;
        let timeout = clock.local(self.now) + self.settings.op_timeout.as_micros() as Us;
        let d = self.nodes[node].daemon.as_mut().expect("alive");
        d.calls.push(Call {
            id,
            kind,
            settled: false,
            in_flight: 0,
            parked: false,
            reading: false,
            timeout_at: clock.when(timeout),
            timeout_armed: false,
        });
        id
    }

    /// Schedules the call's timeout: its answer will not beat it.
    fn arm_timeout(&mut self, node: usize, inc: u64, call: u64) {
        let Some(c) = self.find_call(node, inc, call) else {
            return;
        };
        if c.timeout_armed || c.settled {
            return;
        }
        c.timeout_armed = true;
        let at = c.timeout_at;
        self.schedule(
            at,
            Ev::Task {
                node,
                inc,
                ev: TaskEv::Timeout { call },
            },
        );
    }

    /// Whether the call's answer, due at `at`, comes after its timeout.
    fn too_late(&mut self, node: usize, inc: u64, call: u64, at: Us) -> bool {
        self.find_call(node, inc, call)
            .is_some_and(|c| at >= c.timeout_at)
    }

    fn send(&mut self, node: usize, inc: u64, call: u64, op: Op) {
        if self.now < self.nodes[node].partition_until || self.lost() {
            self.note(Some(node), || format!("request lost: {}", brief_op(&op)));
            self.arm_timeout(node, inc, call);
            return;
        }
        let mut latency = self.latency();
        if self.now < self.nodes[node].slow_until {
            // A slow link delays requests as well as answers: a renew can reach the store
            // after the lease it renews has expired.
            latency += self.rng.below(self.nodes[node].slow_extra + 1);
        }
        if let Some(c) = self.find_call(node, inc, call) {
            c.in_flight += 1;
        }
        if self.too_late(node, inc, call, self.now + latency) {
            self.arm_timeout(node, inc, call);
        }
        self.schedule(
            self.now + latency,
            Ev::Arrive {
                node,
                inc,
                call,
                op,
            },
        );
    }

    fn find_call(&mut self, node: usize, inc: u64, call: u64) -> Option<&mut Call> {
        self.daemon(node, inc)?
            .calls
            .iter_mut()
            .find(|c| c.id == call)
    }

    fn answer_lost(&mut self, node: usize, inc: u64, call: u64) {
        if let Some(c) = self.find_call(node, inc, call) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        self.arm_timeout(node, inc, call);
        self.forget_call(node, inc, call);
    }

    fn forget_call(&mut self, node: usize, inc: u64, call: u64) {
        if let Some(d) = self.daemon(node, inc) {
            d.calls
                .retain(|c| c.id != call || !c.settled || c.in_flight > 0);
        }
    }

    /// A request reaches the store (or the secret store): applied now, on the store's
    /// clock, whether or not anyone still waits for the answer.
    fn arrive(&mut self, node: usize, inc: u64, call: u64, op: Op) {
        let mut extra = 0;
        let answer = if let Op::Secret = op {
            Answer::Secret(self.now >= self.nodes[node].secrets_down_until)
        } else {
            let outage = (self.now < self.outage_until)
                .then_some(self.outage)
                .flatten();
            match outage {
                Some(Outage::BlackHole) => {
                    self.note(Some(node), || format!("black-holed: {}", brief_op(&op)));
                    self.answer_lost(node, inc, call);
                    return;
                }
                Some(Outage::Errors) => refused(&op),
                Some(Outage::Slow(by)) => {
                    // The store is slow: requests wait in its queue, then are applied.
                    if !matches!(op, Op::Secret) && !self.queued.contains(&call) {
                        self.queued.push(call);
                        let at = self.now + self.rng.below(by + 1);
                        self.schedule(
                            at,
                            Ev::Arrive {
                                node,
                                inc,
                                call,
                                op,
                            },
                        );
                        return;
                    }
                    self.queued.retain(|&c| c != call);
                    extra = by / 2;
                    self.apply(node, op)
                }
                None => self.apply(node, op),
            }
        };
        if self.violation.is_some() {
            return;
        }
        if self.now < self.nodes[node].slow_until {
            extra += self.nodes[node].slow_extra;
        }
        let latency = self.latency() + extra;
        if self.now < self.nodes[node].partition_until || self.lost() {
            self.answer_lost(node, inc, call);
            return;
        }
        if self.too_late(node, inc, call, self.now + latency) {
            self.arm_timeout(node, inc, call);
        }
        self.schedule(
            self.now + latency,
            Ev::Task {
                node,
                inc,
                ev: TaskEv::Answer { call, answer },
            },
        );
    }

    fn apply(&mut self, node: usize, op: Op) -> Answer {
        self.set_store_clock();
        let answer = match &op {
            Op::List => {
                self.check_leases(None);
                // The records list in name order, which is index order (m0-v0 … m0-v9).
                let mut acquirable = Vec::new();
                let mut i = 0;
                let listed = self.store.each_state_now(|_, state| {
                    if state.is_acquirable() {
                        acquirable.push(i);
                    }
                    i += 1;
                });
                Answer::List(listed.map(|()| acquirable).map_err(drop))
            }
            Op::Acquire { identity, id } => {
                self.check_leases(Some(*identity));
                self.versions[*identity] += 1;
                let name = &self.names[*identity];
                let result = self.store.acquire_now(name, self.settings.lease, Some(id));
                if result.is_ok() {
                    self.stats.take_overs += 1;
                }
                Answer::Acquire(result)
            }
            Op::Renew { identity, id } => {
                self.check_leases(Some(*identity));
                self.versions[*identity] += 1;
                let name = &self.names[*identity];
                if let Ok(Some((LeaseState::Expired, _))) = self.store.lease_now(name) {
                    self.stats.renews_after_expiry += 1;
                }
                Answer::Renew(self.store.renew_now(name, id))
            }
            Op::Release { identity, id } => {
                self.check_leases(Some(*identity));
                self.versions[*identity] += 1;
                let name = &self.names[*identity];
                let _ = self.store.release_now(name, id);
                Answer::Done(true)
            }
            Op::Read { identity } => {
                let name = &self.names[*identity];
                Answer::Read(self.store.read_now(name).map(|r| r.epoch()).map_err(drop))
            }
            Op::Write {
                identity,
                id,
                metadata,
            } => {
                let name = &self.names[*identity];
                let result = self.store.write_metadata_now(name, id, metadata);
                if result.is_ok() {
                    // A write replaces the record's metadata, and nothing else changes it,
                    // so the record's epoch is now the one written (0 if none). Every write
                    // under one lease carries that lease's epoch, and each lease's is above
                    // the one before it.
                    let (before, by) = self.epochs[*identity].clone();
                    let after = metadata
                        .get(meta::EPOCH)
                        .and_then(|e| e.parse().ok())
                        .unwrap_or(0);
                    let detail = if by.as_ref() == Some(id) {
                        (after != before).then(|| {
                            format!("vm-{node} wrote epoch {after} on {name} under the lease that wrote {before}")
                        })
                    } else {
                        (after <= before).then(|| {
                            format!("vm-{node} wrote epoch {after} on {name} over {before} of an earlier lease")
                        })
                    };
                    self.epochs[*identity] = (after, Some(id.clone()));
                    if let Some(detail) = detail {
                        self.fail(ViolationKind::EpochWentBack, detail);
                    }
                }
                Answer::Done(result.is_ok())
            }
            Op::Secret => Answer::Secret(true),
        };
        self.note(Some(node), || {
            format!("store: {} -> {}", brief_op(&op), brief_answer(&answer))
        });
        answer
    }

    /// An answer or a timeout, in the daemon's tasks (not its loop).
    fn task(&mut self, node: usize, ev: TaskEv) {
        let inc = self.nodes[node].daemon.as_ref().expect("alive").inc;
        match ev {
            TaskEv::Answer { call, answer } => {
                let Some(c) = self.find_call(node, inc, call) else {
                    return;
                };
                c.in_flight = c.in_flight.saturating_sub(1);
                // Past the timeout the call's future is dropped: a late answer changes
                // nothing (a metadata write's turn went to the next one at the timeout).
                if c.settled {
                    return self.forget_call(node, inc, call);
                }
                // A metadata write keeps its kind for what follows; any other call is done
                // with it once answered.
                let kind = match &c.kind {
                    CallKind::Meta { .. } => c.kind.clone(),
                    _ => std::mem::replace(&mut c.kind, CallKind::Spent),
                };
                match (kind, answer) {
                    (CallKind::Meta { what, .. }, Answer::Read(result)) => {
                        self.planted_read_done(node, call, what, result.ok());
                    }
                    (CallKind::Meta { .. }, Answer::Done(ok)) => {
                        if !ok {
                            self.note(Some(node), || "metadata write refused".into());
                        }
                        self.settle(node, inc, call);
                        self.meta_finished(node, call);
                    }
                    (CallKind::List { ticket }, Answer::List(result)) => {
                        self.settle(node, inc, call);
                        let event = match result {
                            Ok(available) => Event::Listed {
                                ticket,
                                available: available
                                    .iter()
                                    .map(|&i| self.names[i].clone())
                                    .collect(),
                                // The simulated nodes poll (no renew grid), so the ends
                                // a store states would change nothing.
                                free_in: Vec::new(),
                            },
                            Err(()) => Event::ListFailed { ticket },
                        };
                        self.send_to_loop(node, LoopMsg::Event(event));
                    }
                    (
                        CallKind::Acquire {
                            ticket,
                            identity,
                            sent_at,
                        },
                        Answer::Acquire(result),
                    ) => {
                        self.settle(node, inc, call);
                        let outcome =
                            AcquireOutcome::from_result(result.as_ref().cloned(), sent_at);
                        let identity = self.names[identity].clone();
                        let event = Event::AcquireResult {
                            ticket,
                            identity,
                            outcome,
                        };
                        self.send_to_loop(node, LoopMsg::Event(event));
                    }
                    (
                        CallKind::Renew {
                            ticket, sent_at, ..
                        },
                        Answer::Renew(result),
                    ) => {
                        self.settle(node, inc, call);
                        let outcome = RenewOutcome::from_result(result.as_ref().copied(), sent_at);
                        self.send_to_loop(
                            node,
                            LoopMsg::Event(Event::RenewResult { ticket, outcome }),
                        );
                    }
                    (CallKind::ReadEpoch { ticket }, Answer::Read(result)) => {
                        self.settle(node, inc, call);
                        let event = Event::EpochRead {
                            ticket,
                            record_epoch: result.ok(),
                        };
                        self.send_to_loop(node, LoopMsg::Event(event));
                    }
                    (CallKind::Release { lease }, _) => {
                        self.settle(node, inc, call);
                        let event = Event::ReleaseDone {
                            ticket: lease.ticket,
                        };
                        self.send_to_loop(node, LoopMsg::Event(event));
                    }
                    (CallKind::Secret { run, lease }, Answer::Secret(ok)) => {
                        self.settle(node, inc, call);
                        let d = self.nodes[node].daemon.as_ref().expect("alive");
                        if !ok {
                            self.send_to_loop(node, LoopMsg::HandOffFailed { run });
                        } else if d.handoff == Some(run) {
                            // `Stager::stage` writes only while the hand-off is not
                            // cancelled; a cancelled one sends nothing.
                            self.send_to_loop(node, LoopMsg::KeyReady { run, lease });
                        }
                    }
                    (kind, answer) => {
                        unreachable!("answer {answer:?} to {kind:?}")
                    }
                }
                self.forget_call(node, inc, call);
            }
            TaskEv::Timeout { call } => {
                let Some(c) = self.find_call(node, inc, call) else {
                    return;
                };
                if c.settled {
                    return;
                }
                c.settled = true;
                let kind = match &c.kind {
                    CallKind::Meta { .. } => c.kind.clone(),
                    _ => std::mem::replace(&mut c.kind, CallKind::Spent),
                };
                self.note(Some(node), || format!("timed out: {}", brief_kind(&kind)));
                match kind {
                    CallKind::List { ticket } => {
                        self.send_to_loop(node, LoopMsg::Event(Event::ListFailed { ticket }))
                    }
                    CallKind::Acquire {
                        ticket, identity, ..
                    } => {
                        let event = Event::AcquireResult {
                            ticket,
                            identity: self.names[identity].clone(),
                            outcome: AcquireOutcome::Transient,
                        };
                        self.send_to_loop(node, LoopMsg::Event(event));
                    }
                    CallKind::Renew { ticket, .. } => {
                        let event = Event::RenewResult {
                            ticket,
                            outcome: RenewOutcome::Transient,
                        };
                        self.send_to_loop(node, LoopMsg::Event(event));
                    }
                    CallKind::ReadEpoch { ticket } => {
                        let event = Event::EpochRead {
                            ticket,
                            record_epoch: None,
                        };
                        self.send_to_loop(node, LoopMsg::Event(event));
                    }
                    CallKind::Meta { .. } => self.meta_finished(node, call),
                    CallKind::Release { lease } => {
                        let event = Event::ReleaseDone {
                            ticket: lease.ticket,
                        };
                        self.send_to_loop(node, LoopMsg::Event(event));
                    }
                    CallKind::Secret { run, .. } => {
                        self.send_to_loop(node, LoopMsg::HandOffFailed { run })
                    }
                    CallKind::Spent => {}
                }
                self.forget_call(node, inc, call);
            }
        }
    }

    fn settle(&mut self, node: usize, inc: u64, call: u64) {
        if let Some(c) = self.find_call(node, inc, call) {
            c.settled = true;
        }
    }

    /// `Stores::write_metadata` (or the note of `Stores::release`): a write under the
    /// timeout that waits for its turn among the lease's writes, then writes the lease's
    /// metadata as it is then (`LeaseMeta::write_latest`).
    fn metadata_write(&mut self, node: usize, lease: Lease, what: MetaWrite) {
        let identity = self.identity_index(&lease.identity);
        let ticket = lease.ticket;
        let kind = CallKind::Meta {
            lease,
            identity,
            what,
        };
        let call = self.open_call(node, kind);
        if self.plan.planted == Planted::EpochReadPerWrite {
            return self.planted_write(node, call, what, identity);
        }
        let d = self.nodes[node].daemon.as_mut().expect("alive");
        let inc = d.inc;
        let Some(m) = d.metas.iter_mut().find(|m| m.ticket == ticket) else {
            // No metadata kept for the lease: nothing to write.
            self.settle(node, inc, call);
            self.meta_finished(node, call);
            return self.forget_call(node, inc, call);
        };
        if m.writing.is_none() {
            m.writing = Some(call);
            self.meta_turn(node, call);
        } else {
            m.waiting.push_back(call);
            if let Some(c) = d.calls.iter_mut().find(|c| c.id == call) {
                c.parked = true;
            }
            self.arm_timeout(node, inc, call);
        }
    }

    /// A metadata write's turn: the lease's metadata as it is now, with the machine's
    /// epoch; without an epoch nothing is written (it would set the record's back to 0).
    fn meta_turn(&mut self, node: usize, call: u64) {
        let d = self.nodes[node].daemon.as_mut().expect("alive");
        let inc = d.inc;
        let Some(c) = d.calls.iter_mut().find(|c| c.id == call) else {
            return;
        };
        c.parked = false;
        let CallKind::Meta { lease, .. } = &c.kind else {
            unreachable!("not a metadata write")
        };
        let epoch = d
            .metas
            .iter()
            .find(|m| m.ticket == lease.ticket)
            .and_then(|m| m.epoch);
        match epoch {
            Some(epoch) => self.write_now(node, call, Some(epoch)),
            None => {
                self.settle(node, inc, call);
                self.meta_finished(node, call);
                self.forget_call(node, inc, call);
            }
        }
    }

    /// Sends the write of the lease's metadata as it is now, with `epoch`.
    fn write_now(&mut self, node: usize, call: u64, epoch: Option<u64>) {
        let d = self.nodes[node].daemon.as_ref().expect("alive");
        let inc = d.inc;
        let Some(c) = d.calls.iter().find(|c| c.id == call) else {
            return;
        };
        let CallKind::Meta {
            lease, identity, ..
        } = &c.kind
        else {
            unreachable!("not a metadata write")
        };
        let (lease, identity) = (lease.clone(), *identity);
        let (address, note) = d
            .metas
            .iter()
            .find(|m| m.ticket == lease.ticket)
            .map_or((false, None), |m| (m.address, m.note));
        let mut metadata = self.holder_metadata(node);
        if address {
            metadata
                .insert(meta::ADDRESS, format!("0xaddress{identity}"))
                .expect(Self::VALID_METADATA);
        }
        if let Some(reason) = note {
            metadata
                .insert(meta::LAST_FENCE, reason.as_str())
                .expect(Self::VALID_METADATA);
            metadata
                .insert(meta::LAST_FENCE_DETAIL, "")
                .expect(Self::VALID_METADATA);
        }
        if let Some(epoch) = epoch {
            metadata
                .insert(meta::EPOCH, epoch.to_string())
                .expect(Self::VALID_METADATA);
        }
        let op = Op::Write {
            identity,
            id: lease.id,
            metadata: Box::new(metadata),
        };
        self.send(node, inc, call, op);
    }

    /// A metadata write is done, failed, or timed out (its future dropped): it leaves its
    /// turn, or its place in the queue, and the next write takes the turn. The release
    /// follows a note.
    fn meta_finished(&mut self, node: usize, call: u64) {
        let d = self.nodes[node].daemon.as_mut().expect("alive");
        let Some(c) = d.calls.iter_mut().find(|c| c.id == call) else {
            return;
        };
        c.parked = false;
        c.reading = false;
        let CallKind::Meta {
            lease,
            identity,
            what,
        } = c.kind.clone()
        else {
            unreachable!("not a metadata write")
        };
        let mut next = None;
        if let Some(m) = d.metas.iter_mut().find(|m| m.ticket == lease.ticket) {
            m.waiting.retain(|&w| w != call);
            if m.writing == Some(call) {
                m.writing = m.waiting.pop_front();
                next = m.writing;
            }
        }
        d.prune_metas();
        if let Some(next) = next {
            self.meta_turn(node, next);
        }
        if what == MetaWrite::Note {
            self.release_now(node, lease, identity);
        }
    }

    /// The planted bug's metadata write: no turn, and not the machine's epoch. The holder
    /// and address writes read the record's epoch themselves first (the holder write stores
    /// it + 1, the address write stores it as read); the note carries the machine's epoch
    /// if there is one, and none otherwise.
    fn planted_write(&mut self, node: usize, call: u64, what: MetaWrite, identity: usize) {
        let d = self.nodes[node].daemon.as_mut().expect("alive");
        let inc = d.inc;
        let Some(c) = d.calls.iter_mut().find(|c| c.id == call) else {
            return;
        };
        if what == MetaWrite::Note {
            let CallKind::Meta { lease, .. } = &c.kind else {
                unreachable!("not a metadata write")
            };
            let ticket = lease.ticket;
            let epoch = d
                .metas
                .iter()
                .find(|m| m.ticket == ticket)
                .and_then(|m| m.epoch);
            return self.write_now(node, call, epoch);
        }
        c.reading = true;
        self.send(node, inc, call, Op::Read { identity });
    }

    /// The planted bug's read of the record is back (`None`: it failed).
    fn planted_read_done(&mut self, node: usize, call: u64, what: MetaWrite, read: Option<u64>) {
        let inc = self.nodes[node].daemon.as_ref().expect("alive").inc;
        if let Some(c) = self.find_call(node, inc, call) {
            c.reading = false;
        }
        match read {
            Some(epoch) => {
                let value = if what == MetaWrite::Holder {
                    epoch + 1
                } else {
                    epoch
                };
                self.write_now(node, call, Some(value));
            }
            None => {
                self.settle(node, inc, call);
                self.meta_finished(node, call);
            }
        }
    }

    fn send_to_loop(&mut self, node: usize, msg: LoopMsg) {
        if let Some(d) = self.nodes[node].daemon.as_mut() {
            d.inbox.push_back(msg);
        }
    }

    /// What a failed metadata insert says: the simulator's names and values keep the
    /// metadata rule, as the daemon's do.
    const VALID_METADATA: &'static str = "the simulated daemon's metadata keeps the rule";

    /// The holder metadata, cut to what the checks read (who, and then the epoch).
    fn holder_metadata(&self, node: usize) -> Metadata {
        let mut metadata = Metadata::new();
        metadata
            .insert(meta::HOLDER_NODE, self.nodes[node].name.clone())
            .expect(Self::VALID_METADATA);
        metadata
    }

    /// `Driver`'s `Action::Release` and `Stores::release`: unless the lease was given up
    /// for a shutdown, why it was is written first (once the machine has decided the
    /// lease's epoch), then the lease is released.
    fn release(&mut self, node: usize, lease: Lease) {
        let identity = self.identity_index(&lease.identity);
        let planted = self.plan.planted == Planted::EpochReadPerWrite;
        let d = self.nodes[node].daemon.as_mut().expect("alive");
        let reason = d
            .lease
            .filter(|c| c.ticket == lease.ticket)
            .and_then(|c| c.fenced)
            .filter(|r| *r != FenceReason::Shutdown);
        let meta = d
            .metas
            .iter_mut()
            .find(|m| m.ticket == lease.ticket)
            .filter(|m| planted || m.epoch.is_some());
        match (reason, meta) {
            (Some(reason), Some(m)) => {
                m.note = Some(reason);
                self.metadata_write(node, lease, MetaWrite::Note);
            }
            _ => self.release_now(node, lease, identity),
        }
    }

    fn release_now(&mut self, node: usize, lease: Lease, identity: usize) {
        let id = lease.id.clone();
        self.call(
            node,
            CallKind::Release { lease },
            Op::Release { identity, id },
        );
    }

    /// `Driver::hand_off`: hand-off `run` is the one in flight (any other is cancelled);
    /// the key is fetched under the timeout.
    fn hand_off(&mut self, node: usize, lease: Lease, run: Ticket) {
        let d = self.nodes[node].daemon.as_mut().expect("alive");
        d.handoff = Some(run);
        self.call(node, CallKind::Secret { run, lease }, Op::Secret);
    }

    /// `Driver::hand_off_failed`: the machine is told.
    fn hand_off_failed(&mut self, run: Ticket) -> Event {
        self.stats.hand_off_failures += 1;
        Event::HandOffFailed { run }
    }

    /// `Driver::fence`.
    fn fence(&mut self, node: usize, lease: Lease, reason: FenceReason) {
        let at = self.local(node);
        let grace = self.settings.grace.as_micros() as Us;
        let d = self.nodes[node].daemon.as_mut().expect("alive");
        // A hand-off still in flight is cancelled: it publishes nothing.
        d.handoff = None;
        if let Some(c) = d.lease.as_mut().filter(|c| c.ticket == lease.ticket) {
            c.fenced = Some(reason);
        }
        let late = d.deadline.is_some_and(|dl| at > dl + LATE_FENCE);
        let deadline = d.deadline;
        let Some(g) = d.guard.as_mut() else {
            let msg = LoopMsg::Event(Event::FenceDone {
                ticket: lease.ticket,
            });
            d.inbox.push_back(msg);
            return;
        };
        let (pid, can_restart) = (g.pid, g.can_restart());
        let backstop = match deadline {
            Some(dl) if !late => Some((dl + grace).min(at + grace) + BACKSTOP_SLACK),
            _ => None,
        };
        if backstop.is_none() && can_restart {
            // After the deadline: the guard and its client at once, reported or not.
            self.stats.late_fence_kills += 1;
            self.note(Some(node), || {
                "late fence: the daemon SIGKILLs the guard and its client".into()
            });
            self.run_backstop(node);
        }
        let d = self.nodes[node].daemon.as_mut().expect("alive");
        if let Some(g) = d.guard.as_mut() {
            g.order_fence(lease.ticket, backstop);
        }
        self.pipe_to_guard(node, pid, GuardCmd::Fence);
    }

    /// `Driver::run_backstop` (`GuardHandle::run_backstop`): the guard did not confirm the
    /// fence in time; the daemon SIGKILLs the client and the guard, whose end completes
    /// the fence.
    fn run_backstop(&mut self, node: usize) {
        let d = self.nodes[node].daemon.as_mut().expect("alive");
        let Some(g) = d.guard.as_mut() else {
            return;
        };
        if let Some((_, backstop)) = &mut g.fence {
            *backstop = None;
        }
        let (pid, started) = (g.pid, g.started);
        self.stats.backstop_kills += 1;
        self.note(Some(node), || {
            "backstop: the guard did not confirm the fence; SIGKILL client and guard".into()
        });
        if started {
            self.kill_clients_of(node, pid);
        }
        self.kill_guard(node, pid);
    }

    /// `Driver::on_message`: the driver's part, then the machine's event, if any.
    fn on_message(&mut self, node: usize, msg: LoopMsg) -> Option<Event> {
        let d = self.nodes[node].daemon.as_mut().expect("alive");
        match msg {
            LoopMsg::Event(event) => Some(event),
            LoopMsg::KeyReady { run, lease } => self.key_ready(node, run, lease),
            LoopMsg::HandOffFailed { run } => {
                if d.handoff != Some(run) {
                    return None;
                }
                d.handoff = None;
                Some(self.hand_off_failed(run))
            }
            LoopMsg::Guard { run, event } => {
                let g = d.guard.as_mut().filter(|g| g.run == run)?;
                match event {
                    GuardEvent::Started => {
                        g.started = true;
                        Some(Event::ClientStarted { run })
                    }
                    GuardEvent::Exited => Some(Event::ClientExited { run }),
                    GuardEvent::Failed => Some(self.hand_off_failed(run)),
                    GuardEvent::Fenced => {
                        g.confirmed();
                        None
                    }
                }
            }
            LoopMsg::GuardGone { run } => self.guard_gone(node, run),
            LoopMsg::GuardDone { run } => self.guard_done(node, run),
        }
    }

    /// `Driver::key_ready`: hand-off `run` has the key. Only while it is still the one in
    /// flight: the address goes into the lease's metadata (written now if the epoch is
    /// known), and the guard starts under the current deadline.
    fn key_ready(&mut self, node: usize, run: Ticket, lease: Lease) -> Option<Event> {
        let local = self.local(node);
        let planted = self.plan.planted == Planted::EpochReadPerWrite;
        let d = self.nodes[node].daemon.as_mut().expect("alive");
        if d.handoff != Some(run) {
            // A fence overtook this hand-off: the key must not be used.
            return None;
        }
        d.handoff = None;
        if d.lease.is_some_and(|c| c.ticket == lease.ticket) {
            let write = d
                .metas
                .iter_mut()
                .find(|m| m.ticket == lease.ticket)
                .is_some_and(|m| {
                    m.address = true;
                    planted || m.epoch.is_some()
                });
            if write {
                self.metadata_write(node, lease.clone(), MetaWrite::Address);
            }
        }
        let d = self.nodes[node].daemon.as_mut().expect("alive");
        match d.deadline {
            Some(deadline) if local < deadline => {
                self.spawn_guard(node, run, &lease, deadline);
                None
            }
            _ => {
                self.note(Some(node), || {
                    "the fence deadline passed during the hand-off".into()
                });
                Some(self.hand_off_failed(run))
            }
        }
    }

    /// `Driver::on_guard_gone`: the guard's end answers the fence that waits for it, or
    /// tells the machine the guard is gone. A client the guard did not confirm fenced is
    /// SIGKILLed, and the event waits (in a task) until no process of it is left.
    fn guard_gone(&mut self, node: usize, run: Ticket) -> Option<Event> {
        let d = self.nodes[node].daemon.as_mut().expect("alive");
        let g = d.guard.as_mut().filter(|g| g.run == run)?;
        g.exiting = true;
        if let Some((_, backstop)) = &mut g.fence {
            *backstop = None;
        }
        let inc = d.inc;
        let g = g.clone();
        if !self.finish_guard(node, &g) {
            return self.guard_done(node, run);
        }
        // The clients died with their guard: the task finds the group gone at its first
        // look, and its message joins the loop's channel a moment later. Until then the
        // guard stays, and a fence ordered meanwhile waits for it too.
        let at = self.now + self.rng.range(10, 500);
        let msg = LoopMsg::GuardDone { run };
        self.schedule(at, Ev::Loop { node, inc, msg });
        None
    }

    /// `Driver::guard_done`: guard `run` and its client are gone: the fence that waits
    /// for it, ordered before or after it went, is done; or the machine learns it is gone.
    fn guard_done(&mut self, node: usize, run: Ticket) -> Option<Event> {
        let d = self.nodes[node].daemon.as_mut().expect("alive");
        let g = d.guard.take_if(|g| g.run == run)?;
        Some(match g.fence {
            Some((ticket, _)) => Event::FenceDone { ticket },
            None => Event::GuardGone { run },
        })
    }

    /// `GuardHandle::finish`: a client the guard did not confirm fenced is SIGKILLed; true
    /// if there was one (started, unconfirmed).
    fn finish_guard(&mut self, node: usize, g: &GuardView) -> bool {
        let unconfirmed = g.started && !g.fenced;
        if unconfirmed {
            self.kill_clients_of(node, g.pid);
        }
        unconfirmed
    }

    /// `Driver::spawn_guard`: the guard of hand-off `run` starts and reads `extend` and
    /// `start`; a guard it replaces is finished and reaped.
    fn spawn_guard(&mut self, node: usize, run: Ticket, lease: &Lease, deadline: Us) {
        let pid = self.id();
        let identity = self.identity_index(&lease.identity);
        let d = self.nodes[node].daemon.as_mut().expect("alive");
        let previous = d.guard.replace(GuardView {
            run,
            pid,
            started: false,
            fenced: false,
            fence: None,
            exiting: false,
        });
        let inc = d.inc;
        self.nodes[node].guards.push(Guard {
            pid,
            inc,
            run,
            identity,
            lease: lease.id.clone(),
            deadline: None,
            freezes: 0,
            queue: VecDeque::new(),
            launching: None,
            client: None,
            child_exited: false,
            fencing: None,
            eof: false,
            term: false,
            armed: None,
        });
        let boot = if self.calm() || self.rng.percent(95) {
            self.rng.range(MS, 20 * MS)
        } else {
            self.rng.range(20 * MS, 500 * MS)
        };
        self.note(Some(node), || {
            format!("guard {pid} spawned for m0-v{identity} (hand-off {run})")
        });
        for cmd in [GuardCmd::Extend(deadline), GuardCmd::Start] {
            self.schedule(self.now + boot, Ev::ToGuard { node, pid, cmd });
        }
        if let Some(previous) = previous {
            self.finish_guard(node, &previous);
            self.kill_guard(node, previous.pid);
        }
    }

    fn pipe_to_guard(&mut self, node: usize, pid: u64, cmd: GuardCmd) {
        let at = self.now + self.rng.range(10, 500);
        self.schedule(at, Ev::ToGuard { node, pid, cmd });
    }
}

/// Lease ids made once for every run: parsing a GUID is slow in a debug build.
static LEASE_IDS: std::sync::LazyLock<Vec<LeaseId>> =
    std::sync::LazyLock::new(|| (0..4096).map(make_lease_id).collect());

fn make_lease_id(n: usize) -> LeaseId {
    LeaseId::parse(&format!("5e1a0000-0000-4000-8000-{n:012x}")).expect("a GUID")
}

/// The `n`th lease id of a run.
fn lease_id(n: usize) -> LeaseId {
    LEASE_IDS
        .get(n)
        .cloned()
        .unwrap_or_else(|| make_lease_id(n))
}

/// The answer a store gives while it fails every request (503).
fn refused(op: &Op) -> Answer {
    let transient = || LeaseError::Transient {
        message: "503".into(),
        source: None,
    };
    match op {
        Op::List => Answer::List(Err(())),
        Op::Acquire { .. } => Answer::Acquire(Err(transient())),
        Op::Renew { .. } => Answer::Renew(Err(transient())),
        Op::Read { .. } => Answer::Read(Err(())),
        Op::Release { .. } | Op::Write { .. } => Answer::Done(false),
        Op::Secret => Answer::Secret(false),
    }
}

// ---- the guard and the client, after guard.rs ---------------------------------------------

impl World<'_> {
    fn guard(&mut self, node: usize, pid: u64) -> Option<&mut Guard> {
        self.nodes[node].guards.iter_mut().find(|g| g.pid == pid)
    }

    fn guard_step(&mut self, node: usize) {
        let pids: Vec<u64> = self.nodes[node].guards.iter().map(|g| g.pid).collect();
        for pid in pids {
            self.guard_run(node, pid);
        }
    }

    /// The guard's loop (`Guard::watch`, then `Guard::fence`), until it waits.
    fn guard_run(&mut self, node: usize, pid: u64) {
        loop {
            if self.nodes[node].vm_down || self.nodes[node].guard_frozen(pid) {
                return;
            }
            let local = self.local(node);
            let now = self.now;
            let n = &self.nodes[node];
            let Some(g) = n.guards.iter().find(|g| g.pid == pid) else {
                return;
            };
            let client_alive = g.client.is_some_and(|c| n.client_alive(c));
            if let Some(kill_at) = g.fencing {
                if client_alive && local < kill_at {
                    break;
                }
                if client_alive {
                    self.note(Some(node), || "guard: SIGKILL after the grace".into());
                    self.kill_clients_of(node, pid);
                }
                self.guard_exits(node, pid, true);
                return;
            }
            if let Some(launch) = g.launching {
                if now < launch.done {
                    break;
                }
                self.launched(node, pid, launch.client);
                continue;
            }
            let g = self.guard(node, pid).expect("present");
            if g.deadline.is_some_and(|d| local >= d) {
                self.begin_fence(node, pid, "deadline");
                continue;
            }
            if g.term {
                self.begin_fence(node, pid, "signal");
                continue;
            }
            if g.child_exited {
                g.child_exited = false;
                g.client = None;
                self.guard_says(node, pid, GuardEvent::Exited);
                continue;
            }
            if let Some(cmd) = g.queue.pop_front() {
                self.guard_command(node, pid, cmd);
                continue;
            }
            if g.eof {
                self.begin_fence(node, pid, "eof");
                continue;
            }
            break;
        }
        // One timer for whatever the guard waits for next.
        let clock = self.nodes[node].clock;
        let Some(g) = self.guard(node, pid) else {
            return;
        };
        let next = if let Some(kill_at) = g.fencing {
            Some(clock.when(kill_at))
        } else if let Some(launch) = g.launching {
            Some(launch.done)
        } else {
            g.deadline.map(|d| clock.when(d))
        };
        if let Some(at) = next {
            if g.armed.is_none_or(|armed| at < armed) {
                g.armed = Some(at);
                self.schedule(at, Ev::GuardWake { node, pid });
            }
        }
    }

    fn guard_command(&mut self, node: usize, pid: u64, cmd: GuardCmd) {
        let local = self.local(node);
        let g = self.guard(node, pid).expect("present");
        match cmd {
            GuardCmd::Extend(deadline) => g.deadline = Some(deadline),
            GuardCmd::Fence => self.begin_fence(node, pid, "command"),
            GuardCmd::Start => {
                let Some(deadline) = g.deadline else {
                    return;
                };
                if local >= deadline || g.client.is_some() {
                    // A past deadline fences on the next turn of the loop; a running
                    // client refuses the start.
                    return;
                }
                let wait = (deadline - local).min(LAUNCH_WAIT);
                let cannot = self.now < self.nodes[node].no_start_until;
                let took = if self.calm() || self.rng.percent(97) {
                    self.rng.range(MS, 30 * MS)
                } else {
                    self.rng.range(30 * MS, 6 * SEC)
                };
                let done = self.now + took.min(wait);
                let execs = !cannot && took <= wait;
                let g = self.guard(node, pid).expect("present");
                g.launching = Some(Launch {
                    done,
                    execs,
                    client: None,
                });
                if execs {
                    self.schedule(done, Ev::Exec { node, pid });
                }
            }
        }
    }

    /// The guard hears how its launch went: `started` with the client the exec started,
    /// else `failed` (and the launcher, if it has not exec'd, is killed).
    fn launched(&mut self, node: usize, pid: u64, client: Option<u64>) {
        let g = self.guard(node, pid).expect("present");
        g.launching = None;
        match client {
            // If it has exited already, the exit is reported next (`child_exited`).
            Some(id) => {
                let g = self.guard(node, pid).expect("present");
                g.client = Some(id);
                self.guard_says(node, pid, GuardEvent::Started);
            }
            None => {
                self.note(Some(node), || {
                    "guard: the client could not be started".into()
                });
                self.guard_says(node, pid, GuardEvent::Failed);
            }
        }
    }

    /// The launcher execs the client: from now on it may sign.
    fn exec_client(&mut self, node: usize, pid: u64, identity: usize, lease: LeaseId) -> u64 {
        let id = self.id();
        let term_delay = self.rng.percent(70).then(|| self.rng.range(MS, 300 * MS));
        self.nodes[node].clients.push(Client {
            id,
            guard: pid,
            identity,
            lease,
            term_delay,
        });
        self.note(Some(node), || {
            format!("client {id} runs with m0-v{identity}")
        });
        self.open_signer(node);
        if self.now < self.nodes[node].crashy_until {
            let at = self.now + self.rng.range(10 * MS, SEC);
            self.schedule(at, Ev::ClientExit { node, client: id });
        }
        id
    }

    /// `Guard::fence` begins: SIGTERM (or SIGKILL when late), SIGKILL by
    /// min(deadline, now) + grace.
    fn begin_fence(&mut self, node: usize, pid: u64, why: &'static str) {
        let local = self.local(node);
        let grace = self.settings.grace.as_micros() as Us;
        let g = self.guard(node, pid).expect("present");
        let late = g.deadline.is_some_and(|d| local > d + LATE_FENCE);
        let kill_at = match g.deadline {
            Some(d) => (d + grace).min(local + grace),
            None => local + grace,
        };
        g.fencing = Some(kill_at);
        let client = g.client;
        let alive = client.is_some_and(|c| self.nodes[node].client_alive(c));
        self.note(Some(node), || {
            format!("guard fences ({why}{})", if late { ", late" } else { "" })
        });
        if !alive {
            return;
        }
        if why == "deadline" {
            self.stats.guard_deadline_kills += 1;
        }
        if late {
            self.stats.late_fence_kills += 1;
            self.kill_clients_of(node, pid);
        } else {
            self.sigterm_clients_of(node, pid);
        }
    }

    /// The guard reports its fence and exits; the daemon reads the end of its pipe.
    fn guard_exits(&mut self, node: usize, pid: u64, fenced: bool) {
        let Some(i) = self.nodes[node].guards.iter().position(|g| g.pid == pid) else {
            return;
        };
        let g = self.nodes[node].guards.remove(i);
        // The client dies with its guard (parent-death signal).
        self.kill_clients_of(node, pid);
        let at = self.now + self.rng.range(10, 500);
        if fenced {
            let msg = LoopMsg::Guard {
                run: g.run,
                event: GuardEvent::Fenced,
            };
            self.schedule(
                at,
                Ev::Loop {
                    node,
                    inc: g.inc,
                    msg,
                },
            );
        }
        let msg = LoopMsg::GuardGone { run: g.run };
        self.schedule(
            at + 1,
            Ev::Loop {
                node,
                inc: g.inc,
                msg,
            },
        );
        self.maybe_restart(node);
    }

    fn kill_guard(&mut self, node: usize, pid: u64) {
        if self.guard(node, pid).is_some() {
            self.note(Some(node), || format!("guard {pid} killed"));
            self.guard_exits(node, pid, false);
        }
    }

    fn guard_says(&mut self, node: usize, pid: u64, event: GuardEvent) {
        let g = self.guard(node, pid).expect("present");
        let (inc, run) = (g.inc, g.run);
        let at = self.now + self.rng.range(10, 500);
        let msg = LoopMsg::Guard { run, event };
        self.schedule(at, Ev::Loop { node, inc, msg });
    }

    /// SIGKILL to the clients under guard `pid`; true if one was running.
    fn kill_clients_of(&mut self, node: usize, pid: u64) -> bool {
        let ids: Vec<u64> = self.nodes[node]
            .clients
            .iter()
            .filter(|c| c.guard == pid)
            .map(|c| c.id)
            .collect();
        for &id in &ids {
            self.client_dies(node, id);
        }
        !ids.is_empty()
    }

    fn sigterm_clients_of(&mut self, node: usize, pid: u64) {
        let exits: Vec<(u64, Us)> = self.nodes[node]
            .clients
            .iter()
            .filter(|c| c.guard == pid)
            .filter_map(|c| c.term_delay.map(|d| (c.id, d)))
            .collect();
        for (client, delay) in exits {
            self.schedule(self.now + delay, Ev::ClientExit { node, client });
        }
    }

    /// systemd's SIGTERM to every process of the unit.
    fn client_sigterm(&mut self, node: usize) {
        let pids: Vec<u64> = self.nodes[node].clients.iter().map(|c| c.guard).collect();
        for pid in pids {
            self.sigterm_clients_of(node, pid);
        }
    }

    /// The client is gone; returns its guard's pid.
    fn client_dies(&mut self, node: usize, client: u64) -> Option<u64> {
        let i = self.nodes[node]
            .clients
            .iter()
            .position(|c| c.id == client)?;
        self.close_signer(client);
        let c = self.nodes[node].clients.remove(i);
        Some(c.guard)
    }

    // ---- the checks ----

    /// Every client of `node` that runs and is not frozen may sign from now on.
    fn open_signer(&mut self, node: usize) {
        if self.nodes[node].vm_freezes > 0 || self.nodes[node].vm_down {
            return;
        }
        let new: Vec<Signer> = self.nodes[node]
            .clients
            .iter()
            .filter(|c| !self.signers.iter().any(|s| s.client == c.id))
            .map(|c| Signer {
                client: c.id,
                node,
                identity: c.identity,
                lease: c.lease.clone(),
                covered: None,
            })
            .collect();
        for signer in new {
            for other in &self.signers {
                if other.identity == signer.identity {
                    let detail = format!(
                        "m0-v{}: the client of vm-{} starts signing while the client of vm-{} still may",
                        signer.identity, signer.node, other.node
                    );
                    self.fail(ViolationKind::Overlap, detail);
                    return;
                }
                if other.node == node {
                    let detail = format!(
                        "vm-{node} may sign with m0-v{} and m0-v{} at once",
                        other.identity, signer.identity
                    );
                    self.fail(ViolationKind::TwoIdentities, detail);
                    return;
                }
            }
            let identity = signer.identity;
            for probe in &mut self.probes {
                if probe.identity == identity && probe.served_at.is_none() {
                    probe.served_at = Some(self.now);
                    self.stats.probe_times.push(ProbeTime {
                        kind: probe.kind,
                        took: self.now - probe.at,
                        bound: probe_bound(&self.settings, probe.kind),
                        lease: self.settings.params.lease,
                    });
                }
            }
            self.signers.push(signer);
            self.check_leases(Some(identity));
        }
    }

    fn close_signer(&mut self, client: u64) {
        if let Some(i) = self.signers.iter().position(|s| s.client == client) {
            let identity = self.signers[i].identity;
            self.check_leases(Some(identity));
            self.signers.remove(i);
        }
    }

    fn close_signers_of(&mut self, node: usize) {
        let ids: Vec<u64> = self.nodes[node].clients.iter().map(|c| c.id).collect();
        for id in ids {
            self.close_signer(id);
        }
    }

    /// Whoever may sign with an identity does so under a lease the store still holds for
    /// it (leased or breaking, with its id). Checked whenever a signer starts or stops and
    /// before every store operation, which covers every moment the answer can change.
    fn check_leases(&mut self, identity: Option<usize>) {
        if self.signers.is_empty() {
            return;
        }
        self.set_store_clock();
        let store_now = self.store_rate.local(self.now) / MS;
        for i in 0..self.signers.len() {
            let s = &self.signers[i];
            if identity.is_some_and(|x| x != s.identity) {
                continue;
            }
            let version = self.versions[s.identity];
            let until = match s.covered {
                Some((v, until)) if v == version => Some(until),
                _ => self
                    .store
                    .covered_until_now(&self.names[s.identity], &s.lease)
                    .ok()
                    .flatten(),
            };
            self.signers[i].covered = until.map(|u| (version, u));
            if until.is_none_or(|u| store_now >= u) {
                let s = &self.signers[i];
                let held = self.store.lease_now(&self.names[s.identity]);
                let detail = format!(
                    "the client of vm-{} may sign with m0-v{} while the store says {:?}",
                    s.node,
                    s.identity,
                    held.map(|h| h.map(|(state, _)| state))
                );
                self.fail(ViolationKind::SignedWithoutLease, detail);
                return;
            }
        }
    }
}

// ---- trace formatting ---------------------------------------------------------------------

fn brief_event(e: &Event) -> String {
    match e {
        Event::Tick => "tick".into(),
        Event::Listed { available, .. } => {
            let names: Vec<&str> = available.iter().map(|n| n.as_str()).collect();
            format!("listed [{}]", names.join(" "))
        }
        Event::ListFailed { .. } => "list failed".into(),
        Event::AcquireResult {
            identity, outcome, ..
        } => match outcome {
            AcquireOutcome::Acquired { sent_at, .. } => {
                format!("acquired {identity} (sent {sent_at})")
            }
            other => format!("acquire {identity}: {other:?}"),
        },
        Event::RenewResult { outcome, .. } => match outcome {
            RenewOutcome::Renewed { sent_at } => format!("renewed (sent {sent_at})"),
            other => format!("renew: {other:?}"),
        },
        other => format!("{other:?}"),
    }
}

fn brief_action(a: &Action) -> Option<String> {
    Some(match a {
        Action::ListCandidates { .. } => "list".into(),
        Action::TryAcquire { identity, .. } => format!("acquire {identity}"),
        Action::ReadEpoch { .. } => "read epoch".into(),
        Action::WriteMetadata { epoch, .. } => format!("metadata (epoch {epoch})"),
        Action::BeginQuarantine { min_wait, .. } => format!("quarantine {min_wait:?}"),
        Action::SendRenew { .. } => "renew".into(),
        Action::ExtendGuard { deadline } => format!("extend guard to {deadline}"),
        Action::FetchKeyAndHandOff { run, .. } => format!("hand off {run}"),
        Action::RestartClient { run, .. } => format!("restart client {run}"),
        Action::SetEngineSigner { attempt, .. } => format!("set engine signer {attempt}"),
        Action::Fence { reason, .. } => format!("FENCE {reason}"),
        Action::Release { .. } => "release".into(),
        Action::ScheduleWake { at } => format!("wake {at}"),
        Action::NotifyStatus { .. } => return None,
        Action::Exit => "exit".into(),
    })
}

fn brief_op(op: &Op) -> String {
    match op {
        Op::List => "list".into(),
        Op::Acquire { identity, .. } => format!("acquire m0-v{identity}"),
        Op::Renew { identity, .. } => format!("renew m0-v{identity}"),
        Op::Release { identity, .. } => format!("release m0-v{identity}"),
        Op::Read { identity } => format!("read m0-v{identity}"),
        Op::Write {
            identity, metadata, ..
        } => format!(
            "write metadata m0-v{identity} (epoch {})",
            metadata.get(meta::EPOCH).map_or("none", String::as_str)
        ),
        Op::Secret => "get secret".into(),
    }
}

fn brief_answer(a: &Answer) -> String {
    match a {
        Answer::List(Ok(names)) => {
            let names: Vec<String> = names.iter().map(|i| format!("m0-v{i}")).collect();
            format!("[{}]", names.join(" "))
        }
        Answer::Acquire(Ok(_)) | Answer::Renew(Ok(())) => "ok".into(),
        Answer::Acquire(Err(e)) | Answer::Renew(Err(e)) => e.to_string(),
        other => format!("{other:?}"),
    }
}

fn brief_kind(k: &CallKind) -> &'static str {
    match k {
        CallKind::List { .. } => "list",
        CallKind::Acquire { .. } => "acquire",
        CallKind::Renew { .. } => "renew",
        CallKind::ReadEpoch { .. } => "epoch read",
        CallKind::Meta {
            what: MetaWrite::Note,
            ..
        } => "release note",
        CallKind::Meta { .. } => "metadata",
        CallKind::Release { .. } => "release",
        CallKind::Secret { .. } => "key fetch",
        CallKind::Spent => "(answered)",
    }
}
