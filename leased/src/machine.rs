//! The daemon's control loop as a pure state machine.
//!
//! This module owns every decision the daemon makes about a lease: which identity to try,
//! when to renew, when to fence, when to give an identity up and when to stop. It performs
//! no I/O, reads no clock and never sees key material: the driver executes the returned
//! [`Action`]s, reports what happened as [`Event`]s, and passes the monotonic time of each
//! event in. Tests therefore drive time exactly and need no store.
//!
//! Timing (docs/architecture.md), with D the lease duration:
//!
//! - `t_ok` is when the last successful acquire or renew request was *sent*; the service's
//!   lease ends no earlier than `t_ok + D`.
//! - The fence deadline is `F = t_ok + D − M`. Any event handled at or after F while the key
//!   is out fences first, before the event is looked at, so an answer that arrives late
//!   (a renew that succeeded, but only after F) can never resume signing.
//! - Renew every R after `t_ok`; after a transient failure retry every `renew_retry` until F.
//!   Lease-lost fences at once.
//! - After a fence the lease is never renewed again: the only way back to `Holding` is a
//!   fresh acquire and another quarantine.
//!
//! Every request the machine makes carries a [`Ticket`]; every answer echoes it. An answer
//! whose ticket does not match what the machine is waiting for is stale and is ignored.

use std::fmt;
use std::ops::Add;
use std::time::Duration;

use shared::lease::{LeaseError, LeaseId};
use shared::Name;

/// A point on the daemon's monotonic clock, as the time elapsed since an origin the driver
/// chooses (typically its own start).
///
/// The guard process enforces deadlines on the same system-wide monotonic clock, so the
/// driver converts with one fixed origin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonoTime(Duration);

impl MonoTime {
    /// The origin.
    pub const ZERO: Self = Self(Duration::ZERO);

    /// The time `since_origin` after the origin.
    pub const fn from_duration(since_origin: Duration) -> Self {
        Self(since_origin)
    }

    /// The time `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Self {
        Self(Duration::from_millis(millis))
    }

    /// How long after the origin this time is.
    pub const fn since_origin(self) -> Duration {
        self.0
    }

    /// The latest instant at or before `self` where `since_origin + phase` is a whole
    /// multiple of `period`.
    pub fn back_to_grid(self, period: Duration, phase: Duration) -> Self {
        let over = duration_mod(self.since_origin() + phase, period);
        Self::from_duration(self.since_origin().saturating_sub(over))
    }

    /// How long after `earlier` this time is; zero if it is not later.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for MonoTime {
    type Output = Self;
    fn add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(d))
    }
}

impl fmt::Display for MonoTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}s", self.0.as_secs_f64())
    }
}

/// The settings the machine decides with. Build with [`Params::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// This node's name; it makes the candidate order node-specific.
    pub node: String,
    /// The identities this node may take: those whose name starts with this (`m0-`); empty
    /// for every identity.
    pub pool: String,
    /// D, the lease duration.
    pub lease: Duration,
    /// R, the renew period.
    pub renew_every: Duration,
    /// M, the margin between the fence deadline and the earliest end of the lease.
    pub margin: Duration,
    /// Wait between renew attempts after a transient failure.
    pub renew_retry: Duration,
    /// Minimum wait between acquiring a lease and handing the key over.
    pub quarantine: Duration,
    /// Wait between looks at the store while no identity is free.
    pub standby_poll: Duration,
    /// Up to this much is added at random to each standby wait.
    pub poll_jitter: Duration,
    /// The renew grid: with `Some(phase)`, holders renew at the instants t where t + phase
    /// is a whole multiple of R (the daemon sets the phase from the wall clock, so every
    /// VM's grid is the same to within clock skew), and a standby that finds nothing free
    /// looks again when a lease renewed on that grid can next end, rather than every
    /// `standby_poll`. `None`: renew R after the last success, poll every `standby_poll`.
    pub renew_grid: Option<Duration>,
    /// On the grid, holders renew this long after each grid instant (less than R). The
    /// daemon spreads the holders of a store that states every lease's end (`sqlite:`,
    /// one file that takes one write at a time) over a fraction of a second by node, so
    /// that a hundred renews do not queue on its lock at one instant; standbys of such a
    /// store look at the ends it states, not at the grid. Zero elsewhere.
    pub renew_offset: Duration,
    /// Wait before the first restart of an exited client; doubles with each recent exit.
    pub restart_backoff: Duration,
    /// K: this many client exits within `crash_loop_window` give the identity up.
    pub crash_loop_max_exits: u32,
    /// W: the window for counting client exits. An identity given up because of a local
    /// failure (crash loop, failed hand-off) is also not tried again by this node for this
    /// long.
    pub crash_loop_window: Duration,
    /// How long a hand-off (key fetched, file written, client executed) may take before it
    /// counts as failed: an identity must not sit held by a node whose client never runs.
    pub start_timeout: Duration,
    /// The client takes its key over an engine-signer RPC: after every start of the client
    /// the driver is told to set the signer, and retries are decided here.
    pub engine_signer: bool,
    /// Seed for the candidate order and the poll jitter; zero jitter makes tests exact.
    pub seed: u64,
}

impl Params {
    /// the defaults in docs/architecture.md: for lease duration `lease`: R = D/3, M = max(D/3, 2 s),
    /// renew retries every min(R/5, 1 s), no quarantine, a 500 ms standby poll with up to
    /// 125 ms of jitter, a crash-loop policy of 5 exits in 60 s with a 1 s first backoff,
    /// and 10 s for a hand-off.
    pub fn new(node: impl Into<String>, lease: Duration) -> Self {
        let renew_every = lease / 3;
        let standby_poll = Duration::from_millis(500);
        Self {
            node: node.into(),
            pool: String::new(),
            lease,
            renew_every,
            margin: default_margin(lease),
            renew_retry: default_renew_retry(renew_every),
            quarantine: Duration::ZERO,
            standby_poll,
            poll_jitter: standby_poll / 4,
            renew_grid: None,
            renew_offset: Duration::ZERO,
            restart_backoff: Duration::from_secs(1),
            crash_loop_max_exits: 5,
            crash_loop_window: Duration::from_secs(60),
            start_timeout: DEFAULT_START_TIMEOUT,
            engine_signer: false,
            seed: 0,
        }
    }

    /// The fence deadline for a lease whose last successful request was sent at `t_ok`.
    pub fn fence_deadline(&self, t_ok: MonoTime) -> MonoTime {
        t_ok + self.lease.saturating_sub(self.margin)
    }

    /// When a lease last renewed at `t_ok` is renewed next: R later, or on the grid, the
    /// one grid instant in (t_ok, t_ok + R] (never later than R, so the retries before the
    /// fence deadline keep their time).
    pub fn next_renew(&self, t_ok: MonoTime) -> MonoTime {
        let latest = t_ok + self.renew_every;
        match self.renew_grid {
            Some(phase) => {
                let r = self.renew_every;
                let offset = duration_mod(self.renew_offset, r);
                latest.back_to_grid(r, duration_mod(phase + r - offset, r))
            }
            None => latest,
        }
    }

    /// The first instant after `now` at which a lease renewed on the grid can end: a grid
    /// instant shifted by D (a holder that dies just after a renew at g leaves a lease that
    /// ends at g + D).
    fn next_possible_end(&self, now: MonoTime, phase: Duration) -> MonoTime {
        let r = self.renew_every;
        let shifted = phase + r - duration_mod(self.lease, r);
        (now + r).back_to_grid(r, shifted)
    }
}

/// `a` mod `b`, in nanoseconds; zero for a zero `b`.
fn duration_mod(a: Duration, b: Duration) -> Duration {
    let b = b.as_nanos();
    if b == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(u64::try_from(a.as_nanos() % b).unwrap_or(0))
}

/// A standby looks this long after an end the store stated (its own clock on this host).
pub const STATED_END_LOOK_DELAY: Duration = Duration::from_millis(50);

/// The shortest wait between a standby's looks, whatever the hints.
pub const MIN_LOOK_WAIT: Duration = Duration::from_millis(50);

/// A standby looks a second time this long after a lease on the grid can end, when its
/// first look came before that.
pub const GRID_SECOND_LOOK: Duration = Duration::from_millis(700);

/// A standby looks this long after a lease on the grid can end: the renew's trip to the
/// store and the VMs' clock skew (NTP keeps it to milliseconds) fit in it.
pub const GRID_LOOK_DELAY: Duration = Duration::from_millis(150);

/// The default [`Params::start_timeout`].
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Wait between attempts to set the engine signer while the client's RPC comes up.
pub const SIGNER_RETRY: Duration = Duration::from_millis(250);

/// M's default for lease duration `lease`: D/3, never below 2 s.
pub fn default_margin(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_secs(2))
}

/// The renew retry interval for renew period `renew_every`: R/5, at most 1 s.
pub fn default_renew_retry(renew_every: Duration) -> Duration {
    (renew_every / 5).min(Duration::from_secs(1))
}

/// Names one round of seeking and the lease it may produce. Answers echo it so that a late
/// answer about an earlier round or an earlier lease is recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(u64);

impl Ticket {
    /// The ticket's number, unique within one machine (for file names and logs).
    pub fn number(self) -> u64 {
        self.0
    }

    /// A ticket for a test that feeds the driver's parts directly.
    #[cfg(test)]
    pub(crate) fn for_tests(n: u64) -> Self {
        Self(n)
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A lease this node acquired: what the driver needs to renew, release or fence it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ticket: Ticket,
    pub identity: Name,
    pub id: LeaseId,
}

/// Why the key was taken away from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FenceReason {
    /// No renew succeeded by the fence deadline F.
    DeadlineMissed,
    /// The store says the lease is gone.
    LeaseLost,
    /// The client exited too often; the identity is given up for a healthier node.
    CrashLoop,
    /// The key could not be fetched or the client could not be started.
    HandOffFailed,
    /// The daemon was told to stop.
    Shutdown,
}

impl FenceReason {
    /// A stable lower-case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeadlineMissed => "deadline_missed",
            Self::LeaseLost => "lease_lost",
            Self::CrashLoop => "crash_loop",
            Self::HandOffFailed => "hand_off_failed",
            Self::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for FenceReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to one [`Action::TryAcquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireOutcome {
    /// Acquired; `sent_at` is when the acquire request was sent.
    Acquired { id: LeaseId, sent_at: MonoTime },
    /// Another holder has it.
    HeldByOther,
    /// There is no lease record for it.
    NotFound,
    /// The store did not answer usefully; worth trying again later.
    Transient,
}

impl AcquireOutcome {
    /// Classifies a store answer. Anything that is not a success means "not acquired": a
    /// broken or misconfigured store is retried at the standby pace, never treated as held.
    pub fn from_result(result: Result<LeaseId, &LeaseError>, sent_at: MonoTime) -> Self {
        match result {
            Ok(id) => Self::Acquired { id, sent_at },
            Err(LeaseError::HeldByOther { .. } | LeaseError::Lost { .. }) => Self::HeldByOther,
            Err(LeaseError::NotFound { .. }) => Self::NotFound,
            Err(
                LeaseError::Transient { .. } | LeaseError::Invalid(_) | LeaseError::Backend { .. },
            ) => Self::Transient,
        }
    }
}

/// The answer to one [`Action::SendRenew`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewOutcome {
    /// Renewed; `sent_at` is when the renew request was sent.
    Renewed { sent_at: MonoTime },
    /// The lease is gone: fence at once.
    Lost,
    /// No answer that says either way: retry until F.
    Transient,
}

impl RenewOutcome {
    /// Classifies a store answer. Fails closed: any answer saying the lease is not ours
    /// (lost, held by another, no record, a request the store calls invalid) is `Lost`; only
    /// a store that cannot answer right now (transient, backend failure) is retried.
    pub fn from_result(result: Result<(), &LeaseError>, sent_at: MonoTime) -> Self {
        match result {
            Ok(()) => Self::Renewed { sent_at },
            Err(LeaseError::Transient { .. } | LeaseError::Backend { .. }) => Self::Transient,
            Err(
                LeaseError::Lost { .. }
                | LeaseError::HeldByOther { .. }
                | LeaseError::NotFound { .. }
                | LeaseError::Invalid(_),
            ) => Self::Lost,
        }
    }
}

/// Something that happened, reported by the driver with the monotonic time it happened at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A wake-up asked for by [`Action::ScheduleWake`]; any time-driven work is done.
    Tick,
    /// Answer to [`Action::ListCandidates`]: the identities the store shows as acquirable
    /// (available, expired or broken). The machine keeps those of its pool.
    Listed {
        ticket: Ticket,
        available: Vec<Name>,
        /// Identities not acquirable now whose end the store states: how long until
        /// each may be (`sqlite:` reports lease and break time left; Azure does not).
        /// Zero: it may end at any moment (a break of unknown length).
        free_in: Vec<(Name, Duration)>,
    },
    /// Answer to [`Action::ListCandidates`]: the store could not be listed.
    ListFailed { ticket: Ticket },
    /// Another node says it released `identity` (a hint, maybe forged or stale): a
    /// waiting standby tries to acquire it at once, through the store as always.
    Nudge { identity: Name },
    /// Answer to [`Action::TryAcquire`].
    AcquireResult {
        ticket: Ticket,
        identity: Name,
        outcome: AcquireOutcome,
    },
    /// Answer to [`Action::SendRenew`].
    RenewResult {
        ticket: Ticket,
        outcome: RenewOutcome,
    },
    /// Answer to [`Action::ReadEpoch`]: the epoch the lease record shows (the previous
    /// lease's), or `None` when it could not be read.
    EpochRead {
        ticket: Ticket,
        record_epoch: Option<u64>,
    },
    /// Answer to [`Action::BeginQuarantine`]: the key may be handed over.
    QuarantineDone { ticket: Ticket },
    /// Answer to [`Action::BeginQuarantine`]: the chain shows the identity sealing since
    /// this lease was acquired (a doppelganger: a zombie VM, a break gone wrong), or the
    /// chain could not be watched. The key must not be handed over.
    SealSeen { ticket: Ticket },
    /// The client of hand-off `run` runs with the key (answers
    /// [`Action::FetchKeyAndHandOff`] and [`Action::RestartClient`]).
    ClientStarted { run: Ticket },
    /// Hand-off `run` failed: the key could not be fetched or written, or the client could
    /// not be started.
    HandOffFailed { run: Ticket },
    /// The client of hand-off `run` exited on its own; its guard is still up.
    ClientExited { run: Ticket },
    /// The guard of hand-off `run` is gone (it exited, was killed, or fenced on its own at
    /// its deadline), and no process of its client is left.
    GuardGone { run: Ticket },
    /// Answer to [`Action::SetEngineSigner`]: whether the client took the key.
    EngineSignerResult { attempt: Ticket, set: bool },
    /// Answer to [`Action::Fence`]: the client no longer signs, the key file is gone and the
    /// key is wiped from memory.
    FenceDone { ticket: Ticket },
    /// Answer to [`Action::Release`], whatever the store said (release is best-effort).
    ReleaseDone { ticket: Ticket },
    /// SIGTERM: fence, release, stop.
    Terminate,
}

/// Something the driver must do. Execute actions in the order given: a later action may
/// rely on an earlier one having been issued (the guard is extended before the key is
/// handed over). Each request the driver makes on behalf of an action must be bounded by a
/// timeout and answered with its event, so the machine is never left waiting forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// List the store; answer with [`Event::Listed`] or [`Event::ListFailed`].
    ListCandidates { ticket: Ticket },
    /// Acquire a lease on `identity` with a fresh lease id (never a previous one); answer
    /// with [`Event::AcquireResult`].
    TryAcquire { ticket: Ticket, identity: Name },
    /// Read the lease record's epoch; answer with [`Event::EpochRead`].
    ReadEpoch { lease: Lease },
    /// Write the holder metadata (host, boot id, pid, acquired-at, and the address once
    /// known) under the lease, with `epoch`, this lease's number. Every later metadata write
    /// under this lease carries the same epoch. Best-effort, no answer: a lost lease shows up
    /// at the next renew.
    WriteMetadata { lease: Lease, epoch: u64 },
    /// Wait at least `min_wait`, watching the chain for seals by this identity where a
    /// chain is configured, before the key is handed over; answer with
    /// [`Event::QuarantineDone`], or [`Event::SealSeen`].
    BeginQuarantine { lease: Lease, min_wait: Duration },
    /// Renew the lease; answer with [`Event::RenewResult`] carrying the time the request
    /// was sent.
    SendRenew { lease: Lease },
    /// Tell the guard that the client may run until `deadline` (F) and no longer. The guard
    /// kills the client at that time even if the daemon is frozen.
    ExtendGuard { deadline: MonoTime },
    /// Hand-off `run`: fetch the key, hand it over as the client takes it, start a guard
    /// that runs the client; answer with [`Event::ClientStarted`] or
    /// [`Event::HandOffFailed`], and later [`Event::ClientExited`] and [`Event::GuardGone`],
    /// all tagged `run`.
    FetchKeyAndHandOff { lease: Lease, run: Ticket },
    /// Tell the guard of `run`, which is still up, to start the client again; answer as for
    /// [`Action::FetchKeyAndHandOff`].
    RestartClient { lease: Lease, run: Ticket },
    /// Give the running client its key over the engine-signer RPC, once; answer with
    /// [`Event::EngineSignerResult`]. The client counts as running (serving) only once
    /// an attempt has succeeded; the machine tries again every [`SIGNER_RETRY`] until the
    /// hand-off's start timeout fails it.
    SetEngineSigner { lease: Lease, attempt: Ticket },
    /// Stop signing now: clear the engine signer, SIGTERM then SIGKILL the client, delete
    /// the key file, wipe the key; answer with [`Event::FenceDone`]. May arrive while a
    /// hand-off is still in progress, which it must cancel.
    Fence { lease: Lease, reason: FenceReason },
    /// Release the lease, best-effort; answer with [`Event::ReleaseDone`].
    Release { lease: Lease },
    /// Send [`Event::Tick`] at `at`. Replaces any earlier wake-up request.
    ScheduleWake { at: MonoTime },
    /// The state or identity changed; tell systemd and the status endpoints.
    NotifyStatus {
        state: StateKind,
        identity: Option<Name>,
    },
    /// The machine has stopped; exit 0.
    Exit,
}

impl Action {
    /// The identity the action is about, if any: its lines are logged in its span.
    pub fn identity(&self) -> Option<&Name> {
        match self {
            Self::TryAcquire { identity, .. } => Some(identity),
            Self::ReadEpoch { lease }
            | Self::WriteMetadata { lease, .. }
            | Self::BeginQuarantine { lease, .. }
            | Self::SendRenew { lease }
            | Self::FetchKeyAndHandOff { lease, .. }
            | Self::RestartClient { lease, .. }
            | Self::SetEngineSigner { lease, .. }
            | Self::Fence { lease, .. }
            | Self::Release { lease } => Some(&lease.identity),
            Self::ListCandidates { .. }
            | Self::ExtendGuard { .. }
            | Self::ScheduleWake { .. }
            | Self::NotifyStatus { .. }
            | Self::Exit => None,
        }
    }
}

/// The state names, for status lines and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    Seeking,
    Quarantine,
    Holding,
    Fenced,
    Releasing,
    Stopped,
}

impl StateKind {
    /// A stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seeking => "seeking",
            Self::Quarantine => "quarantine",
            Self::Holding => "holding",
            Self::Fenced => "fenced",
            Self::Releasing => "releasing",
            Self::Stopped => "stopped",
        }
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Renewal bookkeeping of a live lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    /// When the last successful acquire or renew request was sent.
    pub t_ok: MonoTime,
    /// F = t_ok + D − M: the key must be out of use by then.
    pub fence_at: MonoTime,
    /// When the next renew request is due.
    pub next_renew: MonoTime,
    /// A renew request is out and unanswered.
    pub in_flight: bool,
}

impl Renewal {
    fn new(t_ok: MonoTime, p: &Params) -> Self {
        Self {
            t_ok,
            fence_at: p.fence_deadline(t_ok),
            next_renew: p.next_renew(t_ok),
            in_flight: false,
        }
    }

    fn renewed(&mut self, sent_at: MonoTime, p: &Params) {
        // Answers can only move t_ok forward; an older success proves nothing newer.
        let t_ok = self.t_ok.max(sent_at);
        *self = Self::new(t_ok, p);
    }

    fn failed(&mut self, now: MonoTime, p: &Params) {
        self.in_flight = false;
        self.next_renew = now + p.renew_retry;
    }

    fn due(&self, now: MonoTime) -> bool {
        !self.in_flight && now >= self.next_renew
    }

    fn next_wake(&self) -> MonoTime {
        if self.in_flight {
            self.fence_at
        } else {
            self.next_renew.min(self.fence_at)
        }
    }
}

/// What a seeking node is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeekPhase {
    /// Idle until `until`, then lists the store.
    Waiting { until: MonoTime },
    /// Waiting for the list of acquirable identities.
    Listing { ticket: Ticket },
    /// Waiting for the answer about `identity`; `rest` are the next candidates, in order.
    Acquiring {
        ticket: Ticket,
        identity: Name,
        rest: Vec<Name>,
    },
}

/// What the supervised client is doing while Holding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientPhase {
    /// The key is being handed over, or the client restarted, since `since`.
    Starting { since: MonoTime },
    /// The client runs with the key.
    Running,
    /// The client exited; it is restarted at `until`.
    Backoff { until: MonoTime },
}

/// The current hand-off of a Holding node: the guard it started runs the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Tags the hand-off and everything its guard reports; answers about an earlier
    /// hand-off are ignored.
    pub ticket: Ticket,
    /// The hand-off's guard may still be up: a client that exited is started again by it.
    /// Once it is gone, a restart is a new hand-off.
    pub guard_up: bool,
    /// The engine signer of the running client.
    pub signer: SignerPhase,
}

/// Setting the engine signer of a running client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerPhase {
    /// Nothing to do (no engine signer, or no client running).
    Idle,
    /// Attempt `attempt` is out.
    Setting { attempt: Ticket },
    /// The last attempt failed; the next starts at `at`.
    RetryAt { at: MonoTime },
}

/// What a fenced node is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FencePhase {
    /// The fence is under way.
    Fencing,
    /// The best-effort release is under way.
    Releasing,
}

/// What a stopping node still waits for before it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// An acquire that was out when the stop came; a lease it brings is released.
    Acquire { ticket: Ticket, identity: Name },
    /// The fence; then a release if `then_release`.
    Fence { lease: Lease, then_release: bool },
    /// The release.
    Release { lease: Lease },
}

/// The control loop's states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Looking for an identity this node may hold.
    Seeking { phase: SeekPhase },
    /// Holds a lease, renews it, but has not handed the key over yet.
    Quarantine { lease: Lease, renewal: Renewal },
    /// Holds a lease and the key is (being) handed to the client; the guard holds F.
    Holding {
        lease: Lease,
        renewal: Renewal,
        client: ClientPhase,
        run: Run,
        /// Times of the client's exits within the crash-loop window.
        recent_exits: Vec<MonoTime>,
        /// When the key hand-off began.
        since: MonoTime,
    },
    /// The key is being taken away from the client; the lease is then released and the
    /// node seeks again. Never renews.
    Fenced {
        lease: Lease,
        reason: FenceReason,
        phase: FencePhase,
    },
    /// Shutting down: finishing a fence, release or acquire before exiting.
    Releasing { pending: Pending },
    /// Done; the daemon exits.
    Stopped,
}

impl State {
    /// The state's name.
    pub fn kind(&self) -> StateKind {
        match self {
            Self::Seeking { .. } => StateKind::Seeking,
            Self::Quarantine { .. } => StateKind::Quarantine,
            Self::Holding { .. } => StateKind::Holding,
            Self::Fenced { .. } => StateKind::Fenced,
            Self::Releasing { .. } => StateKind::Releasing,
            Self::Stopped => StateKind::Stopped,
        }
    }

    /// The identity whose lease this node holds or is giving up, if any.
    pub fn identity(&self) -> Option<&Name> {
        self.lease().map(|l| &l.identity)
    }

    /// The lease this node holds or is giving up, if any.
    pub fn lease(&self) -> Option<&Lease> {
        match self {
            Self::Quarantine { lease, .. }
            | Self::Holding { lease, .. }
            | Self::Fenced { lease, .. }
            | Self::Releasing {
                pending: Pending::Fence { lease, .. } | Pending::Release { lease },
            } => Some(lease),
            Self::Seeking { .. }
            | Self::Releasing {
                pending: Pending::Acquire { .. },
            }
            | Self::Stopped => None,
        }
    }

    /// Renewal bookkeeping while the lease is live (Quarantine and Holding).
    pub fn renewal(&self) -> Option<&Renewal> {
        match self {
            Self::Quarantine { renewal, .. } | Self::Holding { renewal, .. } => Some(renewal),
            _ => None,
        }
    }

    /// Holding with the client running: the node is doing its job.
    pub fn is_serving(&self) -> bool {
        matches!(
            self,
            Self::Holding {
                client: ClientPhase::Running,
                ..
            }
        )
    }
}

/// [`State::Holding`]'s fields, while an event is handled.
struct Holding {
    lease: Lease,
    renewal: Renewal,
    client: ClientPhase,
    run: Run,
    recent_exits: Vec<MonoTime>,
    since: MonoTime,
}

impl Holding {
    fn into_state(self) -> State {
        State::Holding {
            lease: self.lease,
            renewal: self.renewal,
            client: self.client,
            run: self.run,
            recent_exits: self.recent_exits,
            since: self.since,
        }
    }
}

/// The control loop. Feed it events with [`Machine::handle`] and execute what it returns.
#[derive(Debug)]
pub struct Machine {
    params: Params,
    state: State,
    next_ticket: u64,
    rng: u64,
    /// Identities this node gave up because of a local failure, and until when it leaves
    /// them to other nodes.
    cooldowns: Vec<(Name, MonoTime)>,
    /// Lists made at once after losing a race, since the last wait: bounded, so that a
    /// store that lists a record as free but refuses it cannot keep this node busy.
    quick_relists: u32,
    /// From the last list: the soonest something of the pool may become free, as the
    /// store stated it or as this node's cool-downs say (`None`: nothing stated).
    stated_free_at: Option<MonoTime>,
    /// The epoch of the live lease (its ticket): `None` until the record has been read.
    epoch: Option<(Ticket, Option<u64>)>,
    /// A list found nothing this node could take since its last acquire: it is a standby,
    /// not a node on its way to an identity (see [`Machine::is_standing_by`]).
    found_nothing: bool,
}

/// At most this many lists at once after lost races before the node waits a poll.
const MAX_QUICK_RELISTS: u32 = 3;

impl Machine {
    /// A machine in `Seeking`, and its first actions (list the store).
    pub fn start(params: Params, now: MonoTime) -> (Self, Vec<Action>) {
        let rng = params.seed;
        let mut m = Self {
            params,
            state: State::Seeking {
                phase: SeekPhase::Waiting { until: now },
            },
            next_ticket: 0,
            rng,
            cooldowns: Vec::new(),
            quick_relists: 0,
            stated_free_at: None,
            epoch: None,
            found_nothing: false,
        };
        let mut out = Vec::new();
        m.after_event(now, &mut out);
        out.push(m.status());
        (m, out)
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Seeking, after a list that offered nothing this node could take (or only races it
    /// lost): a standby waiting for an identity to come free, which is when its release
    /// nudges are worth announcing. A node just started, or one between a release and its
    /// next list, is not one yet: in a herd most nodes never are.
    pub fn is_standing_by(&self) -> bool {
        self.found_nothing && matches!(self.state, State::Seeking { .. })
    }

    /// The settings.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The epoch of the lease this node holds, once decided.
    pub fn epoch(&self) -> Option<u64> {
        let (ticket, epoch) = self.epoch?;
        (self.state.renewal().is_some() && self.state.lease()?.ticket == ticket)
            .then_some(epoch)
            .flatten()
    }

    /// Handles `event`, which happened at `now`, and returns what to do, in order.
    ///
    /// `now` must not go backwards between calls.
    pub fn handle(&mut self, now: MonoTime, event: Event) -> Vec<Action> {
        let before = (self.state.kind(), self.state.identity().cloned());
        let mut out = Vec::new();
        let state = std::mem::replace(&mut self.state, State::Stopped);
        // Deadlines first: past F nothing the event says may keep the key out.
        let state = self.enforce_deadline(state, now, &mut out);
        self.state = state;
        self.number_the_lease(&event, &mut out);
        let state = std::mem::replace(&mut self.state, State::Stopped);
        self.state = self.step(state, now, event, &mut out);
        self.after_event(now, &mut out);
        if (self.state.kind(), self.state.identity().cloned()) != before {
            // The status goes before the wake-up so the wake-up stays the last action.
            let wake = match out.last() {
                Some(Action::ScheduleWake { .. }) => out.pop(),
                _ => None,
            };
            out.push(self.status());
            if self.state.kind() == StateKind::Stopped {
                out.push(Action::Exit);
            }
            out.extend(wake);
        }
        out
    }

    /// The epoch arithmetic. A lease's epoch is the record's epoch as the lease's first
    /// successful read finds it, plus one, decided once and carried by every metadata write
    /// under the lease. Deciding once is what keeps epochs from going back: the writes under
    /// one lease (holder, address, why it was given up) race each other, and a read before
    /// each write could write an older value over a newer one. The previous holder's writes
    /// all landed before this lease began (a write needs a live lease), so the first read
    /// sees the final value of every earlier lease. A failed read is tried again after the
    /// next successful renew.
    fn number_the_lease(&mut self, event: &Event, out: &mut Vec<Action>) {
        let Some(lease) = self.state.renewal().and(self.state.lease()) else {
            return;
        };
        let lease = lease.clone();
        match (event, self.epoch) {
            (
                Event::EpochRead {
                    ticket,
                    record_epoch: Some(read),
                },
                Some((t, None)),
            ) if *ticket == lease.ticket && t == lease.ticket => {
                let epoch = read.saturating_add(1);
                self.epoch = Some((t, Some(epoch)));
                out.push(Action::WriteMetadata { lease, epoch });
            }
            (
                Event::RenewResult {
                    ticket,
                    outcome: RenewOutcome::Renewed { .. },
                },
                Some((t, None)),
            ) if *ticket == lease.ticket && t == lease.ticket => {
                out.push(Action::ReadEpoch { lease });
            }
            _ => {}
        }
    }

    fn status(&self) -> Action {
        Action::NotifyStatus {
            state: self.state.kind(),
            identity: self.state.identity().cloned(),
        }
    }

    /// Time-driven work after an event, then the next wake-up.
    fn after_event(&mut self, now: MonoTime, out: &mut Vec<Action>) {
        let state = std::mem::replace(&mut self.state, State::Stopped);
        let state = self.enforce_deadline(state, now, out);
        self.state = self.timers(state, now, out);
        if let Some(at) = self.next_wake() {
            out.push(Action::ScheduleWake { at });
        }
    }

    fn new_ticket(&mut self) -> Ticket {
        self.next_ticket += 1;
        Ticket(self.next_ticket)
    }

    /// A new hand-off, whose guard is (about to be) up.
    fn new_run(&mut self) -> Run {
        Run {
            ticket: self.new_ticket(),
            guard_up: true,
            signer: SignerPhase::Idle,
        }
    }

    /// splitmix64: a tiny deterministic generator, so the machine stays pure and seeded.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.rng)
    }

    /// A random wait of 0 to `most`, in whole milliseconds.
    fn jitter(&mut self, most: Duration) -> Duration {
        let most_ms = most.as_millis() as u64;
        if most_ms == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(self.next_random() % (most_ms + 1))
    }

    fn standby_wait(&mut self) -> Duration {
        self.params.standby_poll + self.jitter(self.params.poll_jitter)
    }

    /// Until when this node leaves `identity` to others, if it does at `now`.
    fn cooling_until(&self, identity: &Name, now: MonoTime) -> Option<MonoTime> {
        self.cooldowns
            .iter()
            .find(|(c, until)| c == identity && *until > now)
            .map(|(_, until)| *until)
    }

    fn seek_later(&mut self, now: MonoTime) -> State {
        self.quick_relists = 0;
        let until = now + self.standby_wait();
        State::Seeking {
            phase: SeekPhase::Waiting { until },
        }
    }

    /// Waits after a list that offered nothing this node could take. On the renew grid, a
    /// standby looks again when a lease can next end, or at an end the store stated,
    /// whichever is sooner, rather than every poll: a lease held by a live holder cannot
    /// end in between. Without the grid, a poll.
    fn seek_after_list(&mut self, now: MonoTime) -> State {
        self.found_nothing = true;
        let Some(phase) = self.params.renew_grid else {
            return self.seek_later(now);
        };
        self.quick_relists = 0;
        let next = self.params.next_possible_end(now, phase);
        let last =
            MonoTime::from_duration(next.since_origin().saturating_sub(self.params.renew_every));
        // A first look just after an end found it still held: the renew before it may
        // have been slow to reach the store (a loaded host or store), so look once more
        // before the next end rather than a whole R later.
        let mut until = if now < last + GRID_SECOND_LOOK {
            last + GRID_SECOND_LOOK
        } else {
            next + GRID_LOOK_DELAY
        };
        if let Some(stated) = self.stated_free_at.take() {
            until = until.min(stated);
        }
        // Standbys that wake together spread a little, so that one wins the race quickly
        // rather than all colliding.
        let until = until.max(now + MIN_LOOK_WAIT) + self.jitter(self.params.poll_jitter / 2);
        State::Seeking {
            phase: SeekPhase::Waiting { until },
        }
    }

    fn seek_now(now: MonoTime) -> State {
        State::Seeking {
            phase: SeekPhase::Waiting { until: now },
        }
    }

    /// Leaves `identity` to other nodes for `period`: after a local failure this node
    /// would likely fail with it again, and a healthy standby should get it first.
    fn cool_down(&mut self, identity: &Name, now: MonoTime, period: Duration) {
        let until = now + period;
        self.cooldowns.retain(|(n, _)| n != identity);
        self.cooldowns.push((identity.clone(), until));
    }

    fn fence(lease: Lease, reason: FenceReason, out: &mut Vec<Action>) -> State {
        out.push(Action::Fence {
            lease: lease.clone(),
            reason,
        });
        State::Fenced {
            lease,
            reason,
            phase: FencePhase::Fencing,
        }
    }

    fn enforce_deadline(&mut self, state: State, now: MonoTime, out: &mut Vec<Action>) -> State {
        match state {
            // Renews fail here while acquires may still work (a local fault): without a
            // cool-down of one lease this node would win the identity straight back, again
            // and again, and a healthy standby never would.
            State::Holding { lease, renewal, .. } if now >= renewal.fence_at => {
                self.cool_down(&lease.identity, now, self.params.lease);
                Self::fence(lease, FenceReason::DeadlineMissed, out)
            }
            State::Quarantine { lease, renewal } if now >= renewal.fence_at => {
                // The key was never handed over: nothing to fence. Let the lease go.
                self.cool_down(&lease.identity, now, self.params.lease);
                out.push(Action::Release { lease });
                Self::seek_now(now)
            }
            other => other,
        }
    }

    fn timers(&mut self, state: State, now: MonoTime, out: &mut Vec<Action>) -> State {
        match state {
            State::Seeking {
                phase: SeekPhase::Waiting { until },
            } if now >= until => {
                let ticket = self.new_ticket();
                out.push(Action::ListCandidates { ticket });
                State::Seeking {
                    phase: SeekPhase::Listing { ticket },
                }
            }
            State::Quarantine { lease, mut renewal } => {
                if renewal.due(now) {
                    renewal.in_flight = true;
                    out.push(Action::SendRenew {
                        lease: lease.clone(),
                    });
                }
                State::Quarantine { lease, renewal }
            }
            State::Holding {
                lease,
                mut renewal,
                mut client,
                mut run,
                recent_exits,
                since,
            } => {
                if let ClientPhase::Starting { since } = client {
                    if now >= since + self.params.start_timeout {
                        return self.hand_off_failed(lease, now, out);
                    }
                }
                if renewal.due(now) {
                    renewal.in_flight = true;
                    out.push(Action::SendRenew {
                        lease: lease.clone(),
                    });
                }
                if let ClientPhase::Backoff { until } = client {
                    if now >= until {
                        // The guard that ran the client starts it again; if it is gone,
                        // a new hand-off starts a new guard (the deadline goes first).
                        if run.guard_up {
                            out.push(Action::RestartClient {
                                lease: lease.clone(),
                                run: run.ticket,
                            });
                        } else {
                            run = self.new_run();
                            out.push(Action::FetchKeyAndHandOff {
                                lease: lease.clone(),
                                run: run.ticket,
                            });
                        }
                        client = ClientPhase::Starting { since: now };
                    }
                }
                if let SignerPhase::RetryAt { at } = run.signer {
                    if now >= at {
                        run.signer = self.set_signer(&lease, out);
                    }
                }
                State::Holding {
                    lease,
                    renewal,
                    client,
                    run,
                    recent_exits,
                    since,
                }
            }
            other => other,
        }
    }

    fn next_wake(&self) -> Option<MonoTime> {
        match &self.state {
            State::Seeking {
                phase: SeekPhase::Waiting { until },
            } => Some(*until),
            State::Quarantine { renewal, .. } => Some(renewal.next_wake()),
            State::Holding {
                renewal,
                client,
                run,
                ..
            } => {
                let renew = renewal.next_wake();
                let wake = match client {
                    ClientPhase::Backoff { until } => renew.min(*until),
                    ClientPhase::Starting { since } => {
                        renew.min(*since + self.params.start_timeout)
                    }
                    ClientPhase::Running => renew,
                };
                Some(match run.signer {
                    SignerPhase::RetryAt { at } => wake.min(at),
                    _ => wake,
                })
            }
            _ => None,
        }
    }

    fn step(&mut self, state: State, now: MonoTime, event: Event, out: &mut Vec<Action>) -> State {
        match state {
            State::Seeking { phase } => self.step_seeking(phase, now, event, out),
            State::Quarantine { lease, renewal } => {
                self.step_quarantine(lease, renewal, now, event, out)
            }
            State::Holding {
                lease,
                renewal,
                client,
                run,
                recent_exits,
                since,
            } => {
                let holding = Holding {
                    lease,
                    renewal,
                    client,
                    run,
                    recent_exits,
                    since,
                };
                self.step_holding(holding, now, event, out)
            }
            State::Fenced {
                lease,
                reason,
                phase,
            } => Self::step_fenced(lease, reason, phase, now, event, out),
            State::Releasing { pending } => Self::step_releasing(pending, event, out),
            State::Stopped => State::Stopped,
        }
    }

    fn step_seeking(
        &mut self,
        phase: SeekPhase,
        now: MonoTime,
        event: Event,
        out: &mut Vec<Action>,
    ) -> State {
        match (phase, event) {
            (
                SeekPhase::Acquiring {
                    ticket, identity, ..
                },
                Event::Terminate,
            ) => {
                // The answer may bring a lease; wait for it so it can be released at once
                // rather than left to expire in the standbys' way.
                State::Releasing {
                    pending: Pending::Acquire { ticket, identity },
                }
            }
            (_, Event::Terminate) => State::Stopped,
            (
                SeekPhase::Listing { ticket },
                Event::Listed {
                    ticket: t,
                    available,
                    free_in,
                },
            ) if t == ticket => {
                self.cooldowns.retain(|(_, until)| *until > now);
                let pool = |n: &Name| n.as_str().starts_with(&self.params.pool);
                let cooling = |n: &Name| self.cooling_until(n, now);
                // When to look again if nothing here can be had: the soonest stated end
                // of a lease or break, or of a cool-down on a free one.
                let stated = free_in.iter().filter(|(n, _)| pool(n)).map(|(_, d)| {
                    if d.is_zero() {
                        now + self.params.standby_poll
                    } else {
                        now + *d + STATED_END_LOOK_DELAY
                    }
                });
                let cooled = available.iter().filter(|n| pool(n)).filter_map(cooling);
                let free_at = stated.chain(cooled).min();
                let allowed: Vec<Name> = available
                    .into_iter()
                    .filter(|n| pool(n))
                    .filter(|n| cooling(n).is_none())
                    .collect();
                self.stated_free_at = free_at;
                let order = candidate_order(&self.params.node, &allowed);
                self.try_next(ticket, order, now, out)
            }
            (SeekPhase::Listing { ticket }, Event::ListFailed { ticket: t }) if t == ticket => {
                self.seek_later(now)
            }
            (SeekPhase::Waiting { .. }, Event::Nudge { identity })
                if identity.as_str().starts_with(&self.params.pool)
                    && self.cooling_until(&identity, now).is_none() =>
            {
                let ticket = self.new_ticket();
                self.try_next(ticket, vec![identity], now, out)
            }
            (
                SeekPhase::Acquiring {
                    ticket,
                    identity,
                    rest,
                },
                Event::AcquireResult {
                    ticket: t,
                    identity: i,
                    outcome,
                },
            ) if t == ticket && i == identity => match outcome {
                AcquireOutcome::Acquired { id, sent_at } => {
                    self.quick_relists = 0;
                    self.found_nothing = false;
                    let lease = Lease {
                        ticket,
                        identity,
                        id,
                    };
                    self.epoch = Some((ticket, None));
                    out.push(Action::ReadEpoch {
                        lease: lease.clone(),
                    });
                    out.push(Action::BeginQuarantine {
                        lease: lease.clone(),
                        min_wait: self.params.quarantine,
                    });
                    State::Quarantine {
                        lease,
                        renewal: Renewal::new(sent_at, &self.params),
                    }
                }
                // Another node won this one, so others on the list may be gone too: list
                // again rather than walk a stale list (in a herd, a walk costs a conflict
                // per identity taken since the list).
                AcquireOutcome::HeldByOther if self.quick_relists < MAX_QUICK_RELISTS => {
                    self.quick_relists += 1;
                    let ticket = self.new_ticket();
                    out.push(Action::ListCandidates { ticket });
                    State::Seeking {
                        phase: SeekPhase::Listing { ticket },
                    }
                }
                AcquireOutcome::HeldByOther | AcquireOutcome::NotFound => {
                    self.try_next(ticket, rest, now, out)
                }
                // A struggling store is not hammered with the rest of the list.
                AcquireOutcome::Transient => self.seek_later(now),
            },
            (phase, _) => State::Seeking { phase },
        }
    }

    fn try_next(
        &mut self,
        ticket: Ticket,
        mut candidates: Vec<Name>,
        now: MonoTime,
        out: &mut Vec<Action>,
    ) -> State {
        if candidates.is_empty() {
            return self.seek_after_list(now);
        }
        let identity = candidates.remove(0);
        out.push(Action::TryAcquire {
            ticket,
            identity: identity.clone(),
        });
        State::Seeking {
            phase: SeekPhase::Acquiring {
                ticket,
                identity,
                rest: candidates,
            },
        }
    }

    fn step_quarantine(
        &mut self,
        lease: Lease,
        mut renewal: Renewal,
        now: MonoTime,
        event: Event,
        out: &mut Vec<Action>,
    ) -> State {
        match event {
            Event::Terminate => {
                out.push(Action::Release {
                    lease: lease.clone(),
                });
                State::Releasing {
                    pending: Pending::Release { lease },
                }
            }
            Event::RenewResult { ticket, outcome } if ticket == lease.ticket => match outcome {
                RenewOutcome::Renewed { sent_at } => {
                    renewal.renewed(sent_at, &self.params);
                    State::Quarantine { lease, renewal }
                }
                // Nothing was handed over, so nothing to fence, and no lease to release.
                RenewOutcome::Lost => {
                    self.cool_down(&lease.identity, now, self.params.lease);
                    Self::seek_now(now)
                }
                RenewOutcome::Transient => {
                    renewal.failed(now, &self.params);
                    State::Quarantine { lease, renewal }
                }
            },
            // Someone else signs with this identity: never hand the key over beside it. Let
            // the lease go and leave the identity for one lease, so that once the other
            // signer stops, whoever takes it next (this node included) watches again and
            // hands it over.
            Event::SealSeen { ticket } if ticket == lease.ticket => {
                self.cool_down(&lease.identity, now, self.params.lease);
                out.push(Action::Release { lease });
                Self::seek_now(now)
            }
            Event::QuarantineDone { ticket } if ticket == lease.ticket => {
                // The guard must know F before the client can hold the key.
                out.push(Action::ExtendGuard {
                    deadline: renewal.fence_at,
                });
                let run = self.new_run();
                out.push(Action::FetchKeyAndHandOff {
                    lease: lease.clone(),
                    run: run.ticket,
                });
                State::Holding {
                    lease,
                    renewal,
                    client: ClientPhase::Starting { since: now },
                    run,
                    recent_exits: Vec::new(),
                    since: now,
                }
            }
            _ => State::Quarantine { lease, renewal },
        }
    }

    fn step_holding(
        &mut self,
        mut h: Holding,
        now: MonoTime,
        event: Event,
        out: &mut Vec<Action>,
    ) -> State {
        let p = &self.params;
        let current = h.run.ticket;
        let starting = matches!(h.client, ClientPhase::Starting { .. });
        match event {
            Event::Terminate => {
                out.push(Action::Fence {
                    lease: h.lease.clone(),
                    reason: FenceReason::Shutdown,
                });
                return State::Releasing {
                    pending: Pending::Fence {
                        lease: h.lease,
                        then_release: true,
                    },
                };
            }
            Event::RenewResult { ticket, outcome } if ticket == h.lease.ticket => match outcome {
                RenewOutcome::Renewed { sent_at } => {
                    h.renewal.renewed(sent_at, p);
                    out.push(Action::ExtendGuard {
                        deadline: h.renewal.fence_at,
                    });
                }
                // Taken away (broken by an operator, or acquired by another node after a
                // lapse): the identity is meant to move. Winning it straight back when the
                // break ends would undo the break, so leave it to others for one lease.
                RenewOutcome::Lost => {
                    let period = p.lease;
                    self.cool_down(&h.lease.identity, now, period);
                    return Self::fence(h.lease, FenceReason::LeaseLost, out);
                }
                RenewOutcome::Transient => h.renewal.failed(now, p),
            },
            // With an engine signer the client runs but cannot sign until it has the key:
            // it stays starting (bounded by the start timeout) until an attempt succeeds.
            Event::ClientStarted { run } if run == current && starting => {
                if p.engine_signer {
                    h.run.signer = self.set_signer(&h.lease, out);
                } else {
                    h.client = ClientPhase::Running;
                }
            }
            // A client gone before it was reported running never started: the hand-off
            // failed (the key, the guard, or the client's start).
            Event::HandOffFailed { run } | Event::ClientExited { run }
                if run == current && starting =>
            {
                return self.hand_off_failed(h.lease, now, out);
            }
            // The guard gone too: a client that never ran failed its hand-off; one that ran
            // exited, and a restart needs a new hand-off.
            Event::GuardGone { run } if run == current => {
                h.run.guard_up = false;
                if starting {
                    return self.hand_off_failed(h.lease, now, out);
                }
                if h.client == ClientPhase::Running {
                    return self.client_exited(h, now, out);
                }
            }
            Event::ClientExited { run } if run == current && h.client == ClientPhase::Running => {
                return self.client_exited(h, now, out);
            }
            Event::EngineSignerResult { attempt, set }
                if h.run.signer == (SignerPhase::Setting { attempt }) =>
            {
                if set {
                    h.run.signer = SignerPhase::Idle;
                    h.client = ClientPhase::Running;
                } else {
                    h.run.signer = SignerPhase::RetryAt {
                        at: now + SIGNER_RETRY,
                    };
                }
            }
            _ => {}
        }
        h.into_state()
    }

    /// The running client exited: count it, and give the identity up after K exits within
    /// W (a crash loop); otherwise restart it after a backoff.
    fn client_exited(&mut self, mut h: Holding, now: MonoTime, out: &mut Vec<Action>) -> State {
        let p = &self.params;
        h.run.signer = SignerPhase::Idle;
        h.recent_exits
            .retain(|t| now.saturating_duration_since(*t) < p.crash_loop_window);
        h.recent_exits.push(now);
        let exits = h.recent_exits.len() as u32;
        if exits >= p.crash_loop_max_exits {
            let period = p.crash_loop_window;
            self.cool_down(&h.lease.identity, now, period);
            return Self::fence(h.lease, FenceReason::CrashLoop, out);
        }
        h.client = ClientPhase::Backoff {
            until: now + restart_delay(p.restart_backoff, exits),
        };
        h.into_state()
    }

    /// One attempt to set the engine signer.
    fn set_signer(&mut self, lease: &Lease, out: &mut Vec<Action>) -> SignerPhase {
        let attempt = self.new_ticket();
        out.push(Action::SetEngineSigner {
            lease: lease.clone(),
            attempt,
        });
        SignerPhase::Setting { attempt }
    }

    /// The key could not be handed over: fence (which cancels what is under way), release,
    /// and leave the identity to other nodes for a crash-loop window.
    fn hand_off_failed(&mut self, lease: Lease, now: MonoTime, out: &mut Vec<Action>) -> State {
        self.cool_down(&lease.identity, now, self.params.crash_loop_window);
        Self::fence(lease, FenceReason::HandOffFailed, out)
    }

    fn step_fenced(
        lease: Lease,
        reason: FenceReason,
        phase: FencePhase,
        now: MonoTime,
        event: Event,
        out: &mut Vec<Action>,
    ) -> State {
        // A lost lease is someone else's now; releasing it would only be refused.
        let release = reason != FenceReason::LeaseLost;
        match (phase, event) {
            (FencePhase::Fencing, Event::Terminate) => State::Releasing {
                pending: Pending::Fence {
                    lease,
                    then_release: release,
                },
            },
            (FencePhase::Releasing, Event::Terminate) => State::Releasing {
                pending: Pending::Release { lease },
            },
            (FencePhase::Fencing, Event::FenceDone { ticket }) if ticket == lease.ticket => {
                if release {
                    out.push(Action::Release {
                        lease: lease.clone(),
                    });
                    State::Fenced {
                        lease,
                        reason,
                        phase: FencePhase::Releasing,
                    }
                } else {
                    Self::seek_now(now)
                }
            }
            (FencePhase::Releasing, Event::ReleaseDone { ticket }) if ticket == lease.ticket => {
                Self::seek_now(now)
            }
            // Renew answers included: after a fence the lease is never renewed back.
            (phase, _) => State::Fenced {
                lease,
                reason,
                phase,
            },
        }
    }

    fn step_releasing(pending: Pending, event: Event, out: &mut Vec<Action>) -> State {
        match (pending, event) {
            (
                Pending::Acquire { ticket, identity },
                Event::AcquireResult {
                    ticket: t,
                    identity: i,
                    outcome,
                },
            ) if t == ticket && i == identity => match outcome {
                AcquireOutcome::Acquired { id, .. } => {
                    let lease = Lease {
                        ticket,
                        identity,
                        id,
                    };
                    out.push(Action::Release {
                        lease: lease.clone(),
                    });
                    State::Releasing {
                        pending: Pending::Release { lease },
                    }
                }
                _ => State::Stopped,
            },
            (
                Pending::Fence {
                    lease,
                    then_release,
                },
                Event::FenceDone { ticket },
            ) if ticket == lease.ticket => {
                if then_release {
                    out.push(Action::Release {
                        lease: lease.clone(),
                    });
                    State::Releasing {
                        pending: Pending::Release { lease },
                    }
                } else {
                    State::Stopped
                }
            }
            (Pending::Release { lease }, Event::ReleaseDone { ticket })
                if ticket == lease.ticket =>
            {
                State::Stopped
            }
            (pending, _) => State::Releasing { pending },
        }
    }
}

/// Backoff before restarting the client after its `exits`-th recent exit: `base`, doubled
/// for each further recent exit, at most 32 × `base`.
fn restart_delay(base: Duration, exits: u32) -> Duration {
    base * (1u32 << exits.saturating_sub(1).min(5))
}

/// A node's place in a spread of `width`: the same on every start, different across
/// nodes (the renew offset of `sqlite:` holders, [`Params::renew_offset`]).
pub fn spread(node: &str, width: Duration) -> Duration {
    let nanos = u64::try_from(width.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(mix(fnv1a(node.as_bytes())) % nanos)
}

/// The order in which node `node` tries the identities in `available`: rendezvous
/// (highest-random-weight) hashing of the node name and each identity.
///
/// Each node ranks every identity by a hash of the pair and tries the best first. Nodes
/// that start together spread over the identities, and a node's order never changes:
/// a VM that restarts prefers the identity it held before (its client's data is there),
/// and two nodes that collided once do not follow each other down the same list, since
/// the loser lists again and skips what the winner took. Duplicates are dropped. Stable
/// across Rust versions and platforms (no std hasher), so the same inputs always give the
/// same order.
pub fn candidate_order(node: &str, available: &[Name]) -> Vec<Name> {
    let node_key = fnv1a(node.as_bytes());
    let mut keyed: Vec<(u64, &Name)> = available
        .iter()
        .map(|n| (mix(node_key ^ mix(fnv1a(n.as_str().as_bytes()))), n))
        .collect();
    keyed.sort_by(|a, b| b.cmp(a));
    keyed.dedup_by(|a, b| a.1 == b.1);
    keyed.into_iter().map(|(_, n)| n.clone()).collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The splitmix64 finaliser: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
