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
            lease,
            renew_every,
            margin: default_margin(lease),
            renew_retry: default_renew_retry(renew_every),
            quarantine: Duration::ZERO,
            standby_poll,
            poll_jitter: standby_poll / 4,
            restart_backoff: Duration::from_secs(1),
            crash_loop_max_exits: 5,
            crash_loop_window: Duration::from_secs(60),
            start_timeout: DEFAULT_START_TIMEOUT,
            seed: 0,
        }
    }

    /// The fence deadline for a lease whose last successful request was sent at `t_ok`.
    pub fn fence_deadline(&self, t_ok: MonoTime) -> MonoTime {
        t_ok + self.lease.saturating_sub(self.margin)
    }
}

/// The default [`Params::start_timeout`].
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Answer to [`Action::ListCandidates`]: the identities of this node's pool that the
    /// store shows as acquirable (available, expired or broken).
    Listed {
        ticket: Ticket,
        available: Vec<Name>,
    },
    /// Answer to [`Action::ListCandidates`]: the store could not be listed.
    ListFailed { ticket: Ticket },
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
    /// Answer to [`Action::BeginQuarantine`]: the key may be handed over.
    QuarantineDone { ticket: Ticket },
    /// Answer to [`Action::FetchKeyAndHandOff`] or [`Action::RestartClient`]: the client
    /// runs with the key.
    ClientStarted { ticket: Ticket },
    /// Answer to [`Action::FetchKeyAndHandOff`] or [`Action::RestartClient`]: the key could
    /// not be fetched or written, or the client could not be started.
    HandOffFailed { ticket: Ticket },
    /// The supervised client exited on its own.
    ClientExited { ticket: Ticket },
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
    /// Write holder metadata (host, boot id, pid, acquired-at, epoch = previous + 1) under
    /// the lease. Best-effort, no answer: a lost lease shows up at the next renew.
    WriteHolderMetadata { lease: Lease },
    /// Wait at least `min_wait` (and run any doppelganger check) before the key is handed
    /// over; answer with [`Event::QuarantineDone`].
    BeginQuarantine { lease: Lease, min_wait: Duration },
    /// Renew the lease; answer with [`Event::RenewResult`] carrying the time the request
    /// was sent.
    SendRenew { lease: Lease },
    /// Tell the guard that the client may run until `deadline` (F) and no longer. The guard
    /// kills the client at that time even if the daemon is frozen.
    ExtendGuard { deadline: MonoTime },
    /// Fetch the key, write the key file, start the client (or set the engine signer);
    /// answer with [`Event::ClientStarted`] or [`Event::HandOffFailed`].
    FetchKeyAndHandOff { lease: Lease },
    /// Start the client again with the key file already in place; answer as for
    /// [`Action::FetchKeyAndHandOff`].
    RestartClient { lease: Lease },
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
            next_renew: t_ok + p.renew_every,
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
}

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

    /// The settings.
    pub fn params(&self) -> &Params {
        &self.params
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

    /// splitmix64: a tiny deterministic generator, so the machine stays pure and seeded.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.rng)
    }

    fn standby_wait(&mut self) -> Duration {
        let jitter_ms = self.params.poll_jitter.as_millis() as u64;
        let extra = if jitter_ms == 0 {
            0
        } else {
            self.next_random() % (jitter_ms + 1)
        };
        self.params.standby_poll + Duration::from_millis(extra)
    }

    fn seek_later(&mut self, now: MonoTime) -> State {
        let until = now + self.standby_wait();
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
                        out.push(Action::RestartClient {
                            lease: lease.clone(),
                        });
                        client = ClientPhase::Starting { since: now };
                    }
                }
                State::Holding {
                    lease,
                    renewal,
                    client,
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
                renewal, client, ..
            } => {
                let renew = renewal.next_wake();
                Some(match client {
                    ClientPhase::Backoff { until } => renew.min(*until),
                    ClientPhase::Starting { since } => {
                        renew.min(*since + self.params.start_timeout)
                    }
                    ClientPhase::Running => renew,
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
                recent_exits,
                since,
            } => self.step_holding(lease, renewal, client, recent_exits, since, now, event, out),
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
                },
            ) if t == ticket => {
                self.cooldowns.retain(|(_, until)| *until > now);
                let allowed: Vec<Name> = available
                    .into_iter()
                    .filter(|n| !self.cooldowns.iter().any(|(c, _)| c == n))
                    .collect();
                let seed = self.next_random();
                let order = candidate_order(&self.params.node, seed, &allowed);
                self.try_next(ticket, order, now, out)
            }
            (SeekPhase::Listing { ticket }, Event::ListFailed { ticket: t }) if t == ticket => {
                self.seek_later(now)
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
                    let lease = Lease {
                        ticket,
                        identity,
                        id,
                    };
                    out.push(Action::WriteHolderMetadata {
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
            return self.seek_later(now);
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
            Event::QuarantineDone { ticket } if ticket == lease.ticket => {
                // The guard must know F before the client can hold the key.
                out.push(Action::ExtendGuard {
                    deadline: renewal.fence_at,
                });
                out.push(Action::FetchKeyAndHandOff {
                    lease: lease.clone(),
                });
                State::Holding {
                    lease,
                    renewal,
                    client: ClientPhase::Starting { since: now },
                    recent_exits: Vec::new(),
                    since: now,
                }
            }
            _ => State::Quarantine { lease, renewal },
        }
    }

    #[allow(clippy::too_many_arguments)] // the fields of Holding, taken apart by value
    fn step_holding(
        &mut self,
        lease: Lease,
        mut renewal: Renewal,
        mut client: ClientPhase,
        mut recent_exits: Vec<MonoTime>,
        since: MonoTime,
        now: MonoTime,
        event: Event,
        out: &mut Vec<Action>,
    ) -> State {
        let p = &self.params;
        match event {
            Event::Terminate => {
                out.push(Action::Fence {
                    lease: lease.clone(),
                    reason: FenceReason::Shutdown,
                });
                return State::Releasing {
                    pending: Pending::Fence {
                        lease,
                        then_release: true,
                    },
                };
            }
            Event::RenewResult { ticket, outcome } if ticket == lease.ticket => match outcome {
                RenewOutcome::Renewed { sent_at } => {
                    renewal.renewed(sent_at, p);
                    out.push(Action::ExtendGuard {
                        deadline: renewal.fence_at,
                    });
                }
                // Taken away (broken by an operator, or acquired by another node after a
                // lapse): the identity is meant to move. Winning it straight back when the
                // break ends would undo the break, so leave it to others for one lease.
                RenewOutcome::Lost => {
                    let period = p.lease;
                    self.cool_down(&lease.identity, now, period);
                    return Self::fence(lease, FenceReason::LeaseLost, out);
                }
                RenewOutcome::Transient => renewal.failed(now, p),
            },
            Event::ClientStarted { ticket }
                if ticket == lease.ticket && matches!(client, ClientPhase::Starting { .. }) =>
            {
                client = ClientPhase::Running;
            }
            // A client gone before it was reported running never started: the hand-off
            // failed (its guard died, or refused to start it).
            Event::HandOffFailed { ticket } | Event::ClientExited { ticket }
                if ticket == lease.ticket && matches!(client, ClientPhase::Starting { .. }) =>
            {
                return self.hand_off_failed(lease, now, out);
            }
            Event::ClientExited { ticket }
                if ticket == lease.ticket && client == ClientPhase::Running =>
            {
                recent_exits.retain(|t| now.saturating_duration_since(*t) < p.crash_loop_window);
                recent_exits.push(now);
                let exits = recent_exits.len() as u32;
                if exits >= p.crash_loop_max_exits {
                    let period = p.crash_loop_window;
                    self.cool_down(&lease.identity, now, period);
                    return Self::fence(lease, FenceReason::CrashLoop, out);
                }
                client = ClientPhase::Backoff {
                    until: now + restart_delay(p.restart_backoff, exits),
                };
            }
            _ => {}
        }
        State::Holding {
            lease,
            renewal,
            client,
            recent_exits,
            since,
        }
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

/// The order in which node `node` tries the identities in `available`, for round `seed`.
///
/// A pseudo-random permutation keyed by the node name, the identity and the seed: nodes
/// that start together try different identities first, and a node's order changes from
/// round to round. Duplicates are dropped. Stable across Rust versions and platforms (no
/// std hasher), so the same inputs always give the same order.
pub fn candidate_order(node: &str, seed: u64, available: &[Name]) -> Vec<Name> {
    let node_key = fnv1a(node.as_bytes());
    let mut keyed: Vec<(u64, &Name)> = available
        .iter()
        .map(|n| (mix(node_key ^ mix(fnv1a(n.as_str().as_bytes()) ^ seed)), n))
        .collect();
    keyed.sort();
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
mod tests {
    use super::*;

    fn t(ms: u64) -> MonoTime {
        MonoTime::from_millis(ms)
    }

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn lease_id() -> LeaseId {
        LeaseId::parse("0f8fad5b-d9cb-469f-a165-70867728950e").unwrap()
    }

    /// D = 15 s, R = 5 s, M = 5 s, retry 1 s, poll 500 ms without jitter, quarantine 2 s,
    /// crash loop: 3 exits in 60 s, backoff from 1 s.
    fn params() -> Params {
        let mut p = Params::new("vm-1", Duration::from_secs(15));
        p.poll_jitter = Duration::ZERO;
        p.quarantine = Duration::from_secs(2);
        p.crash_loop_max_exits = 3;
        p
    }

    fn list_ticket(actions: &[Action]) -> Ticket {
        actions
            .iter()
            .find_map(|a| match a {
                Action::ListCandidates { ticket } => Some(*ticket),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no ListCandidates in {actions:?}"))
    }

    fn tried(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::TryAcquire { identity, .. } => Some(identity.as_str()),
                _ => None,
            })
            .collect()
    }

    fn renews(actions: &[Action]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, Action::SendRenew { .. }))
            .count()
    }

    fn fence_reason(actions: &[Action]) -> Option<FenceReason> {
        actions.iter().find_map(|a| match a {
            Action::Fence { reason, .. } => Some(*reason),
            _ => None,
        })
    }

    fn has_release(actions: &[Action]) -> bool {
        actions.iter().any(|a| matches!(a, Action::Release { .. }))
    }

    fn status(state: StateKind, identity: Option<&str>) -> Action {
        Action::NotifyStatus {
            state,
            identity: identity.map(name),
        }
    }

    fn acquired(ticket: Ticket, identity: &str, sent_ms: u64) -> Event {
        Event::AcquireResult {
            ticket,
            identity: name(identity),
            outcome: AcquireOutcome::Acquired {
                id: lease_id(),
                sent_at: t(sent_ms),
            },
        }
    }

    fn renewed(ticket: Ticket, sent_ms: u64) -> Event {
        Event::RenewResult {
            ticket,
            outcome: RenewOutcome::Renewed {
                sent_at: t(sent_ms),
            },
        }
    }

    fn renew_failed(ticket: Ticket, outcome: RenewOutcome) -> Event {
        Event::RenewResult { ticket, outcome }
    }

    /// A machine in Quarantine on m0-v1; the acquire request was sent at `sent_ms`
    /// (≥ 10), so t_ok = sent_ms and F = sent_ms + 10 s.
    fn quarantined(p: Params, sent_ms: u64) -> (Machine, Lease) {
        let (mut m, a) = Machine::start(p, t(0));
        let ticket = list_ticket(&a);
        let a = m.handle(
            t(5),
            Event::Listed {
                ticket,
                available: vec![name("m0-v1")],
            },
        );
        assert_eq!(tried(&a), ["m0-v1"]);
        m.handle(t(sent_ms + 20), acquired(ticket, "m0-v1", sent_ms));
        let lease = m.state().lease().cloned().unwrap();
        (m, lease)
    }

    /// A machine Holding m0-v1 with the client running; t_ok = `sent_ms`.
    fn holding_with(p: Params, sent_ms: u64) -> (Machine, Lease) {
        let (mut m, lease) = quarantined(p, sent_ms);
        let tk = lease.ticket;
        m.handle(t(sent_ms + 30), Event::QuarantineDone { ticket: tk });
        m.handle(t(sent_ms + 40), Event::ClientStarted { ticket: tk });
        assert!(m.state().is_serving(), "{:?}", m.state());
        (m, lease)
    }

    fn holding(sent_ms: u64) -> (Machine, Lease) {
        holding_with(params(), sent_ms)
    }

    fn fence_at(m: &Machine) -> MonoTime {
        m.state().renewal().unwrap().fence_at
    }

    // ---- time and parameters ----

    #[test]
    fn defaults_follow_the_architecture() {
        let p = Params::new("n", Duration::from_secs(15));
        assert_eq!(p.renew_every, Duration::from_secs(5));
        assert_eq!(p.margin, Duration::from_secs(5));
        assert_eq!(p.renew_retry, Duration::from_secs(1));
        assert_eq!(p.fence_deadline(t(1_000)), t(11_000));
        let p = Params::new("n", Duration::from_secs(60));
        assert_eq!(p.margin, Duration::from_secs(20));
        // The margin never drops below 2 s.
        assert_eq!(
            default_margin(Duration::from_secs(3)),
            Duration::from_secs(2)
        );
        assert_eq!(
            default_renew_retry(Duration::from_secs(2)),
            Duration::from_millis(400)
        );
    }

    #[test]
    fn mono_time_arithmetic() {
        assert_eq!(t(1_500) + Duration::from_millis(500), t(2_000));
        assert_eq!(
            t(2_000).saturating_duration_since(t(500)),
            Duration::from_millis(1_500)
        );
        assert_eq!(t(500).saturating_duration_since(t(2_000)), Duration::ZERO);
        assert_eq!(t(1_250).to_string(), "1.250s");
        assert_eq!(MonoTime::ZERO.since_origin(), Duration::ZERO);
    }

    // ---- seeking ----

    #[test]
    fn start_lists_the_store_at_once() {
        let (m, a) = Machine::start(params(), t(0));
        let ticket = list_ticket(&a);
        assert_eq!(
            a,
            vec![
                Action::ListCandidates { ticket },
                status(StateKind::Seeking, None)
            ]
        );
        assert_eq!(
            m.state(),
            &State::Seeking {
                phase: SeekPhase::Listing { ticket }
            }
        );
    }

    #[test]
    fn seeking_walks_the_candidate_order_then_waits_and_lists_again() {
        let (mut m, a) = Machine::start(params(), t(0));
        let ticket = list_ticket(&a);
        let available = vec![name("m0-v1"), name("m0-v2"), name("m0-v3")];
        let a = m.handle(
            t(10),
            Event::Listed {
                ticket,
                available: available.clone(),
            },
        );
        let first = tried(&a)[0].to_string();
        let mut seen = vec![first.clone()];
        let mut current = first;
        // Held by another, then no record, then held again: each moves to the next one.
        for (i, outcome) in [
            AcquireOutcome::HeldByOther,
            AcquireOutcome::NotFound,
            AcquireOutcome::HeldByOther,
        ]
        .into_iter()
        .enumerate()
        {
            let a = m.handle(
                t(20 + i as u64),
                Event::AcquireResult {
                    ticket,
                    identity: name(&current),
                    outcome,
                },
            );
            if i < 2 {
                current = tried(&a)[0].to_string();
                seen.push(current.clone());
            } else {
                // Exhausted: wait a standby poll, no more attempts.
                assert_eq!(a, vec![Action::ScheduleWake { at: t(522) }]);
            }
        }
        seen.sort();
        assert_eq!(seen, ["m0-v1", "m0-v2", "m0-v3"]);
        // Early ticks do nothing; the wake-up lists again with a new ticket.
        assert_eq!(
            m.handle(t(300), Event::Tick),
            vec![Action::ScheduleWake { at: t(522) }]
        );
        let a = m.handle(t(522), Event::Tick);
        let again = list_ticket(&a);
        assert_ne!(again, ticket);
        assert_eq!(a, vec![Action::ListCandidates { ticket: again }]);
    }

    #[test]
    fn the_first_candidate_follows_candidate_order() {
        // The order is pinned: it is stable by design (no std hasher), so a node's choices
        // do not change with a toolchain, and a change to the generator shows here.
        const PINNED: [&str; 8] = [
            "m0-v5", "m0-v7", "m0-v0", "m0-v6", "m0-v3", "m0-v4", "m0-v1", "m0-v2",
        ];
        let (mut m, a) = Machine::start(params(), t(0));
        let ticket = list_ticket(&a);
        let available: Vec<Name> = (0..8).map(|i| name(&format!("m0-v{i}"))).collect();
        let a = m.handle(
            t(1),
            Event::Listed {
                ticket,
                available: available.clone(),
            },
        );
        let first = tried(&a);
        let rest = match m.state() {
            State::Seeking {
                phase: SeekPhase::Acquiring { rest, .. },
            } => rest.clone(),
            other => panic!("{other:?}"),
        };
        let order: Vec<&str> = first
            .iter()
            .copied()
            .chain(rest.iter().map(Name::as_str))
            .collect();
        assert_eq!(order, PINNED);
        // Nodes that start together spread over the identities: eight nodes on one seed
        // do not all try one identity first.
        let firsts: std::collections::BTreeSet<Name> = (0..8)
            .map(|n| candidate_order(&format!("vm-{n}"), 42, &available)[0].clone())
            .collect();
        assert!(firsts.len() >= 4, "eight nodes first try only {firsts:?}");
    }

    #[test]
    fn nothing_available_or_list_failure_waits_a_poll() {
        let (mut m, a) = Machine::start(params(), t(0));
        let ticket = list_ticket(&a);
        let a = m.handle(
            t(100),
            Event::Listed {
                ticket,
                available: vec![],
            },
        );
        assert_eq!(a, vec![Action::ScheduleWake { at: t(600) }]);
        let a = m.handle(t(600), Event::Tick);
        let ticket = list_ticket(&a);
        let a = m.handle(t(700), Event::ListFailed { ticket });
        assert_eq!(a, vec![Action::ScheduleWake { at: t(1_200) }]);
    }

    #[test]
    fn a_transient_acquire_failure_stops_the_round() {
        let (mut m, a) = Machine::start(params(), t(0));
        let ticket = list_ticket(&a);
        let a = m.handle(
            t(10),
            Event::Listed {
                ticket,
                available: vec![name("m0-v1"), name("m0-v2")],
            },
        );
        let first = name(tried(&a)[0]);
        let a = m.handle(
            t(50),
            Event::AcquireResult {
                ticket,
                identity: first,
                outcome: AcquireOutcome::Transient,
            },
        );
        assert_eq!(a, vec![Action::ScheduleWake { at: t(550) }]);
    }

    #[test]
    fn standby_waits_are_jittered_within_bounds() {
        let mut p = params();
        p.poll_jitter = Duration::from_millis(100);
        p.seed = 42;
        let (mut m, a) = Machine::start(p, t(0));
        let mut ticket = list_ticket(&a);
        let mut now = 0;
        let mut waits = Vec::new();
        for _ in 0..20 {
            let a = m.handle(
                t(now),
                Event::Listed {
                    ticket,
                    available: vec![],
                },
            );
            let Some(Action::ScheduleWake { at }) = a.last().cloned() else {
                panic!("{a:?}")
            };
            let wait = at.saturating_duration_since(t(now)).as_millis() as u64;
            assert!((500..=600).contains(&wait), "{wait}");
            waits.push(wait);
            now = at.since_origin().as_millis() as u64;
            ticket = list_ticket(&m.handle(at, Event::Tick));
        }
        waits.sort();
        waits.dedup();
        assert!(waits.len() > 5, "jitter barely varies: {waits:?}");
    }

    #[test]
    fn an_acquire_starts_quarantine_from_the_time_the_request_was_sent() {
        let (mut m, a) = Machine::start(params(), t(0));
        let ticket = list_ticket(&a);
        m.handle(
            t(10),
            Event::Listed {
                ticket,
                available: vec![name("m0-v1")],
            },
        );
        // Sent at 100, answered at 900: t_ok is 100, F = 100 + 15 s − 5 s.
        let a = m.handle(t(900), acquired(ticket, "m0-v1", 100));
        let lease = Lease {
            ticket,
            identity: name("m0-v1"),
            id: lease_id(),
        };
        assert_eq!(
            a,
            vec![
                Action::WriteHolderMetadata {
                    lease: lease.clone()
                },
                Action::BeginQuarantine {
                    lease: lease.clone(),
                    min_wait: Duration::from_secs(2)
                },
                status(StateKind::Quarantine, Some("m0-v1")),
                Action::ScheduleWake { at: t(5_100) },
            ]
        );
        assert_eq!(
            m.state(),
            &State::Quarantine {
                lease,
                renewal: Renewal {
                    t_ok: t(100),
                    fence_at: t(10_100),
                    next_renew: t(5_100),
                    in_flight: false
                }
            }
        );
    }

    #[test]
    fn an_acquire_answer_for_another_identity_or_round_is_ignored() {
        let (mut m, a) = Machine::start(params(), t(0));
        let ticket = list_ticket(&a);
        let a = m.handle(
            t(10),
            Event::Listed {
                ticket,
                available: vec![name("m0-v1"), name("m0-v2")],
            },
        );
        let asked = tried(&a)[0].to_string();
        let other = if asked == "m0-v1" { "m0-v2" } else { "m0-v1" };
        let before = m.state().clone();
        assert!(m.handle(t(20), acquired(ticket, other, 15)).is_empty());
        assert!(m
            .handle(t(21), acquired(Ticket(ticket.0 + 7), &asked, 15))
            .is_empty());
        assert!(m
            .handle(
                t(22),
                Event::Listed {
                    ticket,
                    available: vec![]
                }
            )
            .is_empty());
        assert_eq!(m.state(), &before);
    }

    // ---- quarantine ----

    #[test]
    fn quarantine_done_arms_the_guard_before_the_hand_off() {
        let (mut m, lease) = quarantined(params(), 100);
        let a = m.handle(
            t(2_200),
            Event::QuarantineDone {
                ticket: lease.ticket,
            },
        );
        assert_eq!(
            a,
            vec![
                Action::ExtendGuard {
                    deadline: t(10_100)
                },
                Action::FetchKeyAndHandOff {
                    lease: lease.clone()
                },
                status(StateKind::Holding, Some("m0-v1")),
                Action::ScheduleWake { at: t(5_100) },
            ]
        );
        assert!(!m.state().is_serving(), "not serving until the client runs");
        let a = m.handle(
            t(2_300),
            Event::ClientStarted {
                ticket: lease.ticket,
            },
        );
        assert_eq!(a, vec![Action::ScheduleWake { at: t(5_100) }]);
        assert!(m.state().is_serving());
    }

    #[test]
    fn quarantine_renews_without_touching_the_guard() {
        let (mut m, lease) = quarantined(params(), 100);
        let a = m.handle(t(5_100), Event::Tick);
        assert_eq!(
            a,
            vec![
                Action::SendRenew {
                    lease: lease.clone()
                },
                Action::ScheduleWake { at: t(10_100) }
            ]
        );
        let a = m.handle(t(5_200), renewed(lease.ticket, 5_100));
        assert_eq!(a, vec![Action::ScheduleWake { at: t(10_100) }]);
        assert_eq!(fence_at(&m), t(15_100));
    }

    #[test]
    fn lease_lost_in_quarantine_seeks_again_without_fence_or_release() {
        let (mut m, lease) = quarantined(params(), 100);
        m.handle(t(5_100), Event::Tick);
        let a = m.handle(t(5_200), renew_failed(lease.ticket, RenewOutcome::Lost));
        assert_eq!(fence_reason(&a), None);
        assert!(!has_release(&a));
        let ticket = list_ticket(&a);
        assert_ne!(ticket, lease.ticket);
        assert_eq!(m.state().kind(), StateKind::Seeking);
        // The quarantine ending late changes nothing.
        assert!(m
            .handle(
                t(5_300),
                Event::QuarantineDone {
                    ticket: lease.ticket
                }
            )
            .is_empty());
    }

    #[test]
    fn quarantine_past_the_deadline_releases_and_seeks_without_a_fence() {
        let (mut m, lease) = quarantined(params(), 100);
        // The quarantine check hangs and the store stops answering.
        let a = m.handle(t(5_100), Event::Tick);
        assert_eq!(renews(&a), 1);
        let a = m.handle(t(10_100), Event::Tick);
        assert_eq!(fence_reason(&a), None);
        assert_eq!(
            a[0],
            Action::Release {
                lease: lease.clone()
            }
        );
        list_ticket(&a);
        // Its answer, late, hands nothing over.
        let a = m.handle(
            t(10_200),
            Event::QuarantineDone {
                ticket: lease.ticket,
            },
        );
        assert!(a.is_empty(), "{a:?}");
    }

    // ---- holding: renew timing ----

    #[test]
    fn renews_every_r_from_the_time_the_request_was_sent() {
        let (mut m, lease) = holding(100);
        assert_eq!(
            m.handle(t(5_099), Event::Tick),
            vec![Action::ScheduleWake { at: t(5_100) }]
        );
        let a = m.handle(t(5_100), Event::Tick);
        assert_eq!(
            a,
            vec![
                Action::SendRenew {
                    lease: lease.clone()
                },
                Action::ScheduleWake { at: t(10_100) }
            ]
        );
        // One renew at a time, however many ticks.
        assert_eq!(renews(&m.handle(t(5_150), Event::Tick)), 0);
        // Sent at 5 100, answered at 7 000: t_ok is the sending time.
        let a = m.handle(t(7_000), renewed(lease.ticket, 5_100));
        assert_eq!(
            a,
            vec![
                Action::ExtendGuard {
                    deadline: t(15_100)
                },
                Action::ScheduleWake { at: t(10_100) }
            ]
        );
        let r = m.state().renewal().unwrap();
        assert_eq!(
            (r.t_ok, r.fence_at, r.next_renew),
            (t(5_100), t(15_100), t(10_100))
        );
    }

    #[test]
    fn an_older_success_never_moves_t_ok_back() {
        let (mut m, lease) = holding(100);
        m.handle(t(5_100), Event::Tick);
        m.handle(t(5_200), renewed(lease.ticket, 5_100));
        // A duplicate answer about a request sent before the last success.
        let a = m.handle(t(5_300), renewed(lease.ticket, 4_000));
        assert_eq!(fence_at(&m), t(15_100));
        assert!(a.contains(&Action::ExtendGuard {
            deadline: t(15_100)
        }));
    }

    /// Drives renew attempts: every renew sent is answered 100 ms later with the outcome
    /// `answer` gives for the time it was sent, until the machine fences or `end` passes.
    /// Returns the times renews were sent and the fence (time, reason), if any.
    fn drive_renews(
        m: &mut Machine,
        lease: &Lease,
        end: u64,
        answer: impl Fn(u64) -> RenewOutcome,
    ) -> (Vec<u64>, Option<(u64, FenceReason)>) {
        let mut sent = Vec::new();
        let mut now = 0;
        let mut actions = m.handle(t(now), Event::Tick);
        let mut steps = 0;
        while now <= end {
            steps += 1;
            assert!(
                steps < 1_000,
                "time stopped advancing at {now} ms: {actions:?}"
            );
            if let Some(reason) = fence_reason(&actions) {
                return (sent, Some((now, reason)));
            }
            if renews(&actions) > 0 {
                sent.push(now);
                let at = now;
                now += 100;
                actions = m.handle(t(now), renew_failed(lease.ticket, answer(at)));
                continue;
            }
            let Some(Action::ScheduleWake { at }) = actions.last().cloned() else {
                panic!("no wake-up in {actions:?}")
            };
            now = at.since_origin().as_millis() as u64;
            if now > end {
                break;
            }
            actions = m.handle(t(now), Event::Tick);
        }
        (sent, None)
    }

    #[test]
    fn transient_failures_retry_fast_until_f_then_fence() {
        let (mut m, lease) = holding(100);
        let (sent, fence) = drive_renews(&mut m, &lease, 60_000, |_| RenewOutcome::Transient);
        // Due at 5 100, then every retry interval (1 s) after each failed answer.
        assert_eq!(sent, [5_100, 6_200, 7_300, 8_400, 9_500]);
        // Fenced at F exactly, not a tick later.
        assert_eq!(fence, Some((10_100, FenceReason::DeadlineMissed)));
        assert_eq!(m.state().kind(), StateKind::Fenced);
    }

    #[test]
    fn a_renew_that_succeeds_just_before_f_keeps_holding() {
        let (mut m, lease) = holding(100);
        let (sent, fence) = drive_renews(&mut m, &lease, 9_999, |_| RenewOutcome::Transient);
        assert_eq!(fence, None);
        assert_eq!(sent.last(), Some(&9_500));
        // Another attempt sent at 9 900 succeeds, answered 1 ms before F = 10 100.
        let a = m.handle(t(10_099), renewed(lease.ticket, 9_900));
        assert_eq!(fence_reason(&a), None);
        assert_eq!(
            a[0],
            Action::ExtendGuard {
                deadline: t(19_900)
            }
        );
        assert!(m.state().is_serving());
        // And F moved: the old deadline passes without a fence.
        assert_eq!(fence_reason(&m.handle(t(10_100), Event::Tick)), None);
        assert_eq!(m.state().kind(), StateKind::Holding);
    }

    #[test]
    fn lease_lost_fences_at_once() {
        let (mut m, lease) = holding(100);
        m.handle(t(5_100), Event::Tick);
        let a = m.handle(t(5_150), renew_failed(lease.ticket, RenewOutcome::Lost));
        assert_eq!(
            a,
            vec![
                Action::Fence {
                    lease: lease.clone(),
                    reason: FenceReason::LeaseLost
                },
                status(StateKind::Fenced, Some("m0-v1")),
            ]
        );
        // A lost lease is not released: straight back to seeking once fenced.
        let a = m.handle(
            t(5_300),
            Event::FenceDone {
                ticket: lease.ticket,
            },
        );
        assert!(!has_release(&a));
        let ticket = list_ticket(&a);
        assert_eq!(
            a,
            vec![
                Action::ListCandidates { ticket },
                status(StateKind::Seeking, None)
            ]
        );
    }

    #[test]
    fn a_renew_that_succeeds_after_f_does_not_resume_signing() {
        let (mut m, lease) = holding(100);
        m.handle(t(5_100), Event::Tick);
        // The daemon is frozen: no tick runs at F. The renew's success arrives after F.
        let a = m.handle(t(10_500), renewed(lease.ticket, 5_100));
        assert_eq!(
            a,
            vec![
                Action::Fence {
                    lease: lease.clone(),
                    reason: FenceReason::DeadlineMissed
                },
                status(StateKind::Fenced, Some("m0-v1")),
            ],
            "no guard extension, no renew, only the fence"
        );
        // Further successes are ignored too: never renew back.
        assert!(m
            .handle(t(10_600), renewed(lease.ticket, 10_550))
            .is_empty());
        assert_eq!(m.state().kind(), StateKind::Fenced);
    }

    #[test]
    fn a_renew_answer_at_exactly_f_fences() {
        let (mut m, lease) = holding(100);
        m.handle(t(5_100), Event::Tick);
        let a = m.handle(t(10_100), renewed(lease.ticket, 9_000));
        assert_eq!(fence_reason(&a), Some(FenceReason::DeadlineMissed));
        assert!(!a.iter().any(|a| matches!(a, Action::ExtendGuard { .. })));
    }

    #[test]
    fn after_a_fence_only_a_fresh_acquire_and_quarantine_lead_back() {
        let (mut m, lease) = holding(100);
        m.handle(t(5_100), Event::Tick);
        let a = m.handle(t(10_100), Event::Tick);
        assert_eq!(fence_reason(&a), Some(FenceReason::DeadlineMissed));
        // Fenced: events about the old lease change nothing.
        for ev in [
            renewed(lease.ticket, 9_000),
            Event::ClientStarted {
                ticket: lease.ticket,
            },
            Event::QuarantineDone {
                ticket: lease.ticket,
            },
            Event::ReleaseDone {
                ticket: lease.ticket,
            },
            Event::Tick,
        ] {
            assert!(m.handle(t(10_200), ev).is_empty());
        }
        // Fence done → release (the lease may still be live: let a standby have it).
        let a = m.handle(
            t(10_300),
            Event::FenceDone {
                ticket: lease.ticket,
            },
        );
        assert_eq!(
            a,
            vec![Action::Release {
                lease: lease.clone()
            }]
        );
        let a = m.handle(
            t(10_400),
            Event::ReleaseDone {
                ticket: lease.ticket,
            },
        );
        let ticket = list_ticket(&a);
        assert_ne!(ticket, lease.ticket);
        // The fenced identity cools down (item 8 of issue 10): another one is tried.
        let a = m.handle(
            t(10_500),
            Event::Listed {
                ticket,
                available: vec![lease.identity.clone(), name("m0-v9")],
            },
        );
        assert_eq!(
            a.iter().find_map(|a| match a {
                Action::TryAcquire { identity, .. } => Some(identity.clone()),
                _ => None,
            }),
            Some(name("m0-v9"))
        );
        let a = m.handle(t(10_600), acquired(ticket, "m0-v9", 10_500));
        assert!(a
            .iter()
            .any(|a| matches!(a, Action::BeginQuarantine { .. })));
        assert_eq!(m.state().kind(), StateKind::Quarantine);
        // The old lease's answers cannot skip the new quarantine.
        let wake = vec![Action::ScheduleWake { at: t(15_500) }];
        let a = m.handle(
            t(10_700),
            Event::QuarantineDone {
                ticket: lease.ticket,
            },
        );
        assert_eq!(a, wake);
        assert_eq!(m.handle(t(10_800), renewed(lease.ticket, 10_700)), wake);
        assert_eq!(m.state().renewal().unwrap().t_ok, t(10_500));
        assert_eq!(m.state().kind(), StateKind::Quarantine);
    }

    #[test]
    fn stale_answers_are_ignored_while_holding() {
        let (mut m, lease) = holding(100);
        let stale = Ticket(lease.ticket.0 + 100);
        m.handle(t(5_100), Event::Tick);
        let before = m.state().clone();
        for ev in [
            renewed(stale, 5_100),
            renew_failed(stale, RenewOutcome::Lost),
            Event::ClientExited { ticket: stale },
            Event::HandOffFailed { ticket: stale },
            Event::FenceDone { ticket: stale },
            Event::ListFailed { ticket: stale },
        ] {
            let a = m.handle(t(5_200), ev.clone());
            assert_eq!(a, vec![Action::ScheduleWake { at: t(10_100) }], "{ev:?}");
        }
        assert_eq!(m.state(), &before);
    }

    #[test]
    fn a_hand_off_failure_fences_and_leaves_the_identity_alone_for_a_while() {
        let (mut m, lease) = quarantined(params(), 100);
        m.handle(
            t(2_200),
            Event::QuarantineDone {
                ticket: lease.ticket,
            },
        );
        let a = m.handle(
            t(2_300),
            Event::HandOffFailed {
                ticket: lease.ticket,
            },
        );
        assert_eq!(fence_reason(&a), Some(FenceReason::HandOffFailed));
        m.handle(
            t(2_400),
            Event::FenceDone {
                ticket: lease.ticket,
            },
        );
        let a = m.handle(
            t(2_500),
            Event::ReleaseDone {
                ticket: lease.ticket,
            },
        );
        let ticket = list_ticket(&a);
        let a = m.handle(
            t(2_600),
            Event::Listed {
                ticket,
                available: vec![name("m0-v1")],
            },
        );
        assert!(tried(&a).is_empty(), "{a:?}");
    }

    /// Issue 10, item 6: a client that is gone before it was reported running (its guard
    /// died, or exited) is a failed hand-off, not an exit to restart forever.
    #[test]
    fn item06_a_client_gone_before_it_started_is_a_failed_hand_off() {
        let (mut m, lease) = quarantined(params(), 100);
        m.handle(
            t(2_200),
            Event::QuarantineDone {
                ticket: lease.ticket,
            },
        );
        let a = m.handle(
            t(2_300),
            Event::ClientExited {
                ticket: lease.ticket,
            },
        );
        assert_eq!(fence_reason(&a), Some(FenceReason::HandOffFailed));
    }

    /// Issue 10, item 6: a hand-off that has not started the client within the start
    /// timeout fails, even if nothing ever answers.
    #[test]
    fn item06_a_hand_off_that_never_answers_fails_at_the_start_timeout() {
        let mut p = params();
        p.start_timeout = Duration::from_secs(4);
        let (mut m, lease) = quarantined(p, 100);
        let a = m.handle(
            t(2_200),
            Event::QuarantineDone {
                ticket: lease.ticket,
            },
        );
        // The wake-up covers the start deadline (2.2 s + 4 s), before the renew at 5.1 s.
        assert_eq!(a.last(), Some(&Action::ScheduleWake { at: t(5_100) }));
        let a = m.handle(t(5_100), Event::Tick);
        assert!(
            matches!(a.last(), Some(Action::ScheduleWake { at }) if *at == t(6_200)),
            "{a:?}"
        );
        m.handle(t(5_150), renewed(lease.ticket, 5_100));
        let a = m.handle(t(6_200), Event::Tick);
        assert_eq!(fence_reason(&a), Some(FenceReason::HandOffFailed));
        // A restart (after a client exit) is held to the same limit.
        let (mut m, lease) = holding(100);
        m.handle(
            t(1_000),
            Event::ClientExited {
                ticket: lease.ticket,
            },
        );
        let a = m.handle(t(2_000), Event::Tick);
        assert!(a.contains(&Action::RestartClient {
            lease: lease.clone()
        }));
        m.handle(t(2_100), renewed(lease.ticket, 2_050));
        let a = m.handle(t(12_000), Event::Tick);
        assert_eq!(fence_reason(&a), Some(FenceReason::HandOffFailed), "{a:?}");
    }

    /// Issue 10, item 8: renews fail while acquires work. After the deadline fence this node
    /// leaves the identity alone for one lease, so that a healthy standby, polling at its
    /// own pace, gets it; after that it may take it again.
    #[test]
    fn item08_a_deadline_fence_cools_the_identity_down_for_one_lease() {
        let (mut m, lease) = holding(100);
        m.handle(t(5_100), Event::Tick);
        let a = m.handle(t(10_100), Event::Tick);
        assert_eq!(fence_reason(&a), Some(FenceReason::DeadlineMissed));
        m.handle(
            t(10_200),
            Event::FenceDone {
                ticket: lease.ticket,
            },
        );
        let a = m.handle(
            t(10_300),
            Event::ReleaseDone {
                ticket: lease.ticket,
            },
        );
        let listed = |m: &mut Machine, at: u64, ticket: Ticket| {
            m.handle(
                t(at),
                Event::Listed {
                    ticket,
                    available: vec![lease.identity.clone()],
                },
            )
        };
        let a = listed(&mut m, 10_400, list_ticket(&a));
        assert!(tried(&a).is_empty(), "won straight back: {a:?}");
        // Still cooling down just before D has passed since the fence...
        let a = m.handle(t(25_000), Event::Tick);
        let a = listed(&mut m, 25_050, list_ticket(&a));
        assert!(tried(&a).is_empty(), "{a:?}");
        // ...and free to try it again after.
        let a = m.handle(t(25_600), Event::Tick);
        let a = listed(&mut m, 25_650, list_ticket(&a));
        assert_eq!(tried(&a), vec![lease.identity.as_str()]);
    }

    /// Issue 10, item 8, before the hand-off: a quarantine whose renews fail gives the
    /// lease up at F and cools the identity down the same way.
    #[test]
    fn item08_a_quarantine_that_cannot_renew_cools_the_identity_down() {
        let mut p = params();
        p.quarantine = Duration::from_secs(30);
        let (mut m, lease) = quarantined(p, 100);
        m.handle(t(5_100), Event::Tick);
        let a = m.handle(t(10_100), Event::Tick);
        assert!(
            a.contains(&Action::Release {
                lease: lease.clone()
            }),
            "{a:?}"
        );
        let a = m.handle(
            t(10_300),
            Event::Listed {
                ticket: list_ticket(&a),
                available: vec![lease.identity.clone()],
            },
        );
        assert!(tried(&a).is_empty(), "{a:?}");
    }

    /// Found while breaking the daemon (beyond issue 10's list): a holder whose lease an
    /// operator broke fenced at its next renew, then won the identity straight back when
    /// the break ended, undoing the break. A lost lease is left to others for one lease.
    #[test]
    fn beyond_a_lost_lease_is_left_to_others_for_one_lease() {
        let (mut m, lease) = holding(100);
        m.handle(t(5_100), Event::Tick);
        let a = m.handle(
            t(5_200),
            Event::RenewResult {
                ticket: lease.ticket,
                outcome: RenewOutcome::Lost,
            },
        );
        assert_eq!(fence_reason(&a), Some(FenceReason::LeaseLost));
        let a = m.handle(
            t(5_300),
            Event::FenceDone {
                ticket: lease.ticket,
            },
        );
        let a = m.handle(
            t(5_400),
            Event::Listed {
                ticket: list_ticket(&a),
                available: vec![lease.identity.clone()],
            },
        );
        assert!(
            tried(&a).is_empty(),
            "took the broken lease straight back: {a:?}"
        );
        let a = m.handle(t(20_400), Event::Tick);
        let a = m.handle(
            t(20_450),
            Event::Listed {
                ticket: list_ticket(&a),
                available: vec![lease.identity.clone()],
            },
        );
        assert_eq!(tried(&a), vec![lease.identity.as_str()]);
    }

    // ---- crash loop ----

    fn exit_and_restart(m: &mut Machine, lease: &Lease, exit_ms: u64) -> Vec<Action> {
        m.handle(
            t(exit_ms),
            Event::ClientExited {
                ticket: lease.ticket,
            },
        )
    }

    #[test]
    fn client_exits_restart_with_doubling_backoff() {
        let (mut m, lease) = holding(100);
        let a = exit_and_restart(&mut m, &lease, 1_000);
        assert_eq!(a, vec![Action::ScheduleWake { at: t(2_000) }]);
        assert!(!m.state().is_serving());
        // A second exit report before the restart is not counted.
        assert_eq!(
            exit_and_restart(&mut m, &lease, 1_500),
            vec![Action::ScheduleWake { at: t(2_000) }]
        );
        let a = m.handle(t(2_000), Event::Tick);
        assert_eq!(
            a,
            vec![
                Action::RestartClient {
                    lease: lease.clone()
                },
                Action::ScheduleWake { at: t(5_100) }
            ]
        );
        m.handle(
            t(2_100),
            Event::ClientStarted {
                ticket: lease.ticket,
            },
        );
        assert!(m.state().is_serving());
        let a = exit_and_restart(&mut m, &lease, 2_500);
        // Second recent exit: 2 s.
        assert_eq!(a, vec![Action::ScheduleWake { at: t(4_500) }]);
        assert_eq!(
            restart_delay(Duration::from_secs(1), 3),
            Duration::from_secs(4)
        );
        assert_eq!(
            restart_delay(Duration::from_secs(1), 40),
            Duration::from_secs(32)
        );
    }

    #[test]
    fn k_exits_within_the_window_give_the_identity_up() {
        let (mut m, lease) = holding(100);
        exit_and_restart(&mut m, &lease, 1_000);
        m.handle(t(2_000), Event::Tick);
        m.handle(
            t(2_000),
            Event::ClientStarted {
                ticket: lease.ticket,
            },
        );
        exit_and_restart(&mut m, &lease, 2_500);
        m.handle(t(4_500), Event::Tick);
        m.handle(
            t(4_500),
            Event::ClientStarted {
                ticket: lease.ticket,
            },
        );
        // Third exit within 60 s: K = 3.
        let a = exit_and_restart(&mut m, &lease, 4_800);
        assert_eq!(
            a,
            vec![
                Action::Fence {
                    lease: lease.clone(),
                    reason: FenceReason::CrashLoop
                },
                status(StateKind::Fenced, Some("m0-v1")),
            ]
        );
        let a = m.handle(
            t(4_900),
            Event::FenceDone {
                ticket: lease.ticket,
            },
        );
        assert_eq!(
            a,
            vec![Action::Release {
                lease: lease.clone()
            }]
        );
        let a = m.handle(
            t(5_000),
            Event::ReleaseDone {
                ticket: lease.ticket,
            },
        );
        let ticket = list_ticket(&a);
        // The identity is left to other nodes for the window; others are still tried.
        let a = m.handle(
            t(5_100),
            Event::Listed {
                ticket,
                available: vec![name("m0-v1"), name("m0-v2")],
            },
        );
        assert_eq!(tried(&a), ["m0-v2"]);
        let a = m.handle(
            t(5_200),
            Event::AcquireResult {
                ticket,
                identity: name("m0-v2"),
                outcome: AcquireOutcome::HeldByOther,
            },
        );
        assert!(tried(&a).is_empty());
        // After the window (60 s from the give-up at 4 800) it is a candidate again.
        let a = m.handle(t(64_799), Event::Tick);
        let ticket = list_ticket(&a);
        let a = m.handle(
            t(64_799),
            Event::Listed {
                ticket,
                available: vec![name("m0-v1")],
            },
        );
        assert!(tried(&a).is_empty());
        let a = m.handle(t(65_299), Event::Tick);
        let ticket = list_ticket(&a);
        let a = m.handle(
            t(65_300),
            Event::Listed {
                ticket,
                available: vec![name("m0-v1")],
            },
        );
        assert_eq!(tried(&a), ["m0-v1"]);
    }

    #[test]
    fn exits_spread_wider_than_the_window_do_not_give_up() {
        let mut p = params();
        p.crash_loop_window = Duration::from_secs(3);
        let (mut m, lease) = holding_with(p, 100);
        exit_and_restart(&mut m, &lease, 1_000);
        m.handle(t(2_000), Event::Tick);
        m.handle(
            t(2_000),
            Event::ClientStarted {
                ticket: lease.ticket,
            },
        );
        exit_and_restart(&mut m, &lease, 3_000);
        m.handle(t(5_000), Event::Tick);
        m.handle(
            t(5_000),
            Event::ClientStarted {
                ticket: lease.ticket,
            },
        );
        // The exit at 1 000 is 3 s old: only two exits are recent.
        let a = exit_and_restart(&mut m, &lease, 4_000 + 1_000);
        assert_eq!(fence_reason(&a), None, "{a:?}");
        assert_eq!(m.state().kind(), StateKind::Holding);
    }

    // ---- SIGTERM in every state ----

    fn stopped_exits(a: &[Action]) {
        assert_eq!(
            &a[a.len() - 2..],
            &[status(StateKind::Stopped, None), Action::Exit],
            "{a:?}"
        );
    }

    #[test]
    fn sigterm_while_seeking_idle_or_listing_stops_at_once() {
        let (mut m, a) = Machine::start(params(), t(0));
        let ticket = list_ticket(&a);
        let a = m.handle(t(10), Event::Terminate);
        assert_eq!(a, vec![status(StateKind::Stopped, None), Action::Exit]);
        // The list answer, late, does nothing.
        assert!(m
            .handle(
                t(20),
                Event::Listed {
                    ticket,
                    available: vec![name("m0-v1")]
                }
            )
            .is_empty());

        let (mut m, a) = Machine::start(params(), t(0));
        m.handle(
            t(10),
            Event::Listed {
                ticket: list_ticket(&a),
                available: vec![],
            },
        );
        stopped_exits(&m.handle(t(20), Event::Terminate));
    }

    #[test]
    fn sigterm_while_acquiring_releases_what_the_acquire_brings() {
        let (mut m, a) = Machine::start(params(), t(0));
        let ticket = list_ticket(&a);
        m.handle(
            t(10),
            Event::Listed {
                ticket,
                available: vec![name("m0-v1")],
            },
        );
        let a = m.handle(t(20), Event::Terminate);
        assert_eq!(a, vec![status(StateKind::Releasing, None)]);
        let a = m.handle(t(30), acquired(ticket, "m0-v1", 15));
        let lease = Lease {
            ticket,
            identity: name("m0-v1"),
            id: lease_id(),
        };
        assert_eq!(
            a,
            vec![
                Action::Release {
                    lease: lease.clone()
                },
                status(StateKind::Releasing, Some("m0-v1"))
            ]
        );
        stopped_exits(&m.handle(t(40), Event::ReleaseDone { ticket }));

        // An acquire that fails needs no release.
        let (mut m, a) = Machine::start(params(), t(0));
        let ticket = list_ticket(&a);
        m.handle(
            t(10),
            Event::Listed {
                ticket,
                available: vec![name("m0-v1")],
            },
        );
        m.handle(t(20), Event::Terminate);
        let a = m.handle(
            t(30),
            Event::AcquireResult {
                ticket,
                identity: name("m0-v1"),
                outcome: AcquireOutcome::HeldByOther,
            },
        );
        assert!(!has_release(&a));
        stopped_exits(&a);
    }

    #[test]
    fn sigterm_in_quarantine_releases_then_stops() {
        let (mut m, lease) = quarantined(params(), 100);
        let a = m.handle(t(1_000), Event::Terminate);
        assert_eq!(
            a,
            vec![
                Action::Release {
                    lease: lease.clone()
                },
                status(StateKind::Releasing, Some("m0-v1"))
            ]
        );
        // No renewing, no hand-off while stopping.
        assert!(m.handle(t(6_000), Event::Tick).is_empty());
        assert!(m
            .handle(
                t(6_000),
                Event::QuarantineDone {
                    ticket: lease.ticket
                }
            )
            .is_empty());
        stopped_exits(&m.handle(
            t(6_100),
            Event::ReleaseDone {
                ticket: lease.ticket,
            },
        ));
    }

    #[test]
    fn sigterm_while_holding_fences_then_releases_then_stops() {
        let (mut m, lease) = holding(100);
        let a = m.handle(t(1_000), Event::Terminate);
        assert_eq!(
            a,
            vec![
                Action::Fence {
                    lease: lease.clone(),
                    reason: FenceReason::Shutdown
                },
                status(StateKind::Releasing, Some("m0-v1"))
            ]
        );
        // Nothing is renewed or restarted while stopping; release waits for the fence.
        assert!(m.handle(t(5_100), Event::Tick).is_empty());
        assert!(m
            .handle(
                t(5_100),
                Event::ClientExited {
                    ticket: lease.ticket
                }
            )
            .is_empty());
        assert!(m
            .handle(
                t(5_100),
                Event::ReleaseDone {
                    ticket: lease.ticket
                }
            )
            .is_empty());
        let a = m.handle(
            t(5_200),
            Event::FenceDone {
                ticket: lease.ticket,
            },
        );
        assert_eq!(
            a,
            vec![Action::Release {
                lease: lease.clone()
            }]
        );
        stopped_exits(&m.handle(
            t(5_300),
            Event::ReleaseDone {
                ticket: lease.ticket,
            },
        ));
        assert_eq!(m.state(), &State::Stopped);
    }

    #[test]
    fn sigterm_while_fencing_finishes_the_fence_then_releases() {
        let (mut m, lease) = holding(100);
        m.handle(t(5_100), Event::Tick);
        m.handle(t(10_100), Event::Tick);
        let a = m.handle(t(10_150), Event::Terminate);
        assert_eq!(a, vec![status(StateKind::Releasing, Some("m0-v1"))]);
        let a = m.handle(
            t(10_200),
            Event::FenceDone {
                ticket: lease.ticket,
            },
        );
        assert_eq!(
            a,
            vec![Action::Release {
                lease: lease.clone()
            }]
        );
        stopped_exits(&m.handle(
            t(10_300),
            Event::ReleaseDone {
                ticket: lease.ticket,
            },
        ));
    }

    #[test]
    fn sigterm_while_fencing_a_lost_lease_stops_without_release() {
        let (mut m, lease) = holding(100);
        m.handle(t(5_100), Event::Tick);
        m.handle(t(5_200), renew_failed(lease.ticket, RenewOutcome::Lost));
        m.handle(t(5_250), Event::Terminate);
        let a = m.handle(
            t(5_300),
            Event::FenceDone {
                ticket: lease.ticket,
            },
        );
        assert!(!has_release(&a));
        stopped_exits(&a);
    }

    #[test]
    fn sigterm_while_releasing_after_a_fence_stops_when_released() {
        let (mut m, lease) = holding(100);
        m.handle(t(5_100), Event::Tick);
        m.handle(t(10_100), Event::Tick);
        m.handle(
            t(10_200),
            Event::FenceDone {
                ticket: lease.ticket,
            },
        );
        let a = m.handle(t(10_250), Event::Terminate);
        assert_eq!(a, vec![status(StateKind::Releasing, Some("m0-v1"))]);
        stopped_exits(&m.handle(
            t(10_300),
            Event::ReleaseDone {
                ticket: lease.ticket,
            },
        ));
    }

    #[test]
    fn sigterm_while_releasing_or_stopped_changes_nothing() {
        let (mut m, lease) = holding(100);
        m.handle(t(1_000), Event::Terminate);
        let before = m.state().clone();
        assert!(m.handle(t(1_100), Event::Terminate).is_empty());
        assert_eq!(m.state(), &before);
        m.handle(
            t(1_200),
            Event::FenceDone {
                ticket: lease.ticket,
            },
        );
        m.handle(
            t(1_300),
            Event::ReleaseDone {
                ticket: lease.ticket,
            },
        );
        assert_eq!(m.state(), &State::Stopped);
        // Exit is said once.
        for ev in [Event::Terminate, Event::Tick, renewed(lease.ticket, 1_300)] {
            assert!(m.handle(t(1_400), ev).is_empty());
        }
    }

    // ---- candidate order ----

    #[test]
    fn candidate_order_is_a_deterministic_permutation() {
        let ids: Vec<Name> = (0..10).map(|i| name(&format!("m0-v{i}"))).collect();
        let a = candidate_order("vm-1", 7, &ids);
        assert_eq!(a, candidate_order("vm-1", 7, &ids));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, ids);
        // Duplicates are dropped; input order does not matter.
        let mut doubled: Vec<Name> = ids.iter().rev().cloned().collect();
        doubled.extend(ids.iter().cloned());
        assert_eq!(candidate_order("vm-1", 7, &doubled), a);
        assert!(candidate_order("vm-1", 7, &[]).is_empty());
    }

    #[test]
    fn candidate_order_differs_between_nodes_and_rounds() {
        let ids: Vec<Name> = (0..10).map(|i| name(&format!("m0-v{i}"))).collect();
        // A scale set of 40 nodes starting together does not all try one identity first.
        let mut firsts: Vec<Name> = (0..40)
            .map(|n| candidate_order(&format!("vm-{n}"), 0, &ids)[0].clone())
            .collect();
        firsts.sort();
        firsts.dedup();
        assert!(firsts.len() >= 6, "first choices: {firsts:?}");
        // One node's order changes from round to round.
        let orders: Vec<Vec<Name>> = (0..5).map(|s| candidate_order("vm-1", s, &ids)).collect();
        assert!(orders.windows(2).all(|w| w[0] != w[1]));
    }

    // ---- classifying store answers ----

    #[test]
    fn store_errors_map_to_outcomes_failing_closed() {
        use shared::lease::{LeaseState, LostReason};
        let id = name("m0-v1");
        let lost = LeaseError::Lost {
            identity: id.clone(),
            reason: LostReason::IdMismatch,
        };
        let held = LeaseError::HeldByOther {
            identity: id.clone(),
            state: LeaseState::Leased,
        };
        let missing = LeaseError::NotFound {
            identity: id.clone(),
        };
        let transient = LeaseError::Transient {
            message: "timeout".into(),
            source: None,
        };
        let backend = LeaseError::Backend {
            message: "disk".into(),
            source: None,
        };
        let invalid = LeaseError::Invalid("bad".into());

        let r = |e| RenewOutcome::from_result(Err(e), t(5));
        assert_eq!(
            RenewOutcome::from_result(Ok(()), t(5)),
            RenewOutcome::Renewed { sent_at: t(5) }
        );
        for e in [&lost, &held, &missing, &invalid] {
            assert_eq!(r(e), RenewOutcome::Lost, "{e}");
        }
        for e in [&transient, &backend] {
            assert_eq!(r(e), RenewOutcome::Transient, "{e}");
        }

        let a = |e| AcquireOutcome::from_result(Err(e), t(5));
        assert_eq!(
            AcquireOutcome::from_result(Ok(lease_id()), t(5)),
            AcquireOutcome::Acquired {
                id: lease_id(),
                sent_at: t(5)
            }
        );
        assert_eq!(a(&held), AcquireOutcome::HeldByOther);
        assert_eq!(a(&lost), AcquireOutcome::HeldByOther);
        assert_eq!(a(&missing), AcquireOutcome::NotFound);
        for e in [&transient, &backend, &invalid] {
            assert_eq!(a(e), AcquireOutcome::Transient, "{e}");
        }
    }

    #[test]
    fn names_are_stable() {
        assert_eq!(StateKind::Quarantine.to_string(), "quarantine");
        assert_eq!(FenceReason::DeadlineMissed.to_string(), "deadline_missed");
        assert_eq!(Ticket(3).to_string(), "#3");
    }
}
