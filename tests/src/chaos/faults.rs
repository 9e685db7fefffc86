//! The faults the chaos run injects, and the bounds the protocol sets on what follows each.
//!
//! Timing, with the daemons' defaults for D = 15 s: R = M = D/3 = 5 s, fence grace G = M/4 =
//! 1.25 s; a standby looks at least every P = R + 0.15 s (on the renew grid, just after a
//! lease can end), plus up to 62.5 ms of jitter, and at once when a release nudges it; the
//! bounds below write that longest wait as P·1.25 for short, though the jitter is smaller.
//! Store calls time out after
//! T = min(R/2, 5 s) = 2.5 s, renews are retried every min(R/5, 1 s) = 1 s, a client that
//! exits is restarted after 1 s, doubled for each recent exit, and K = 5 exits in W = 60 s
//! give the identity up. S is slack for starting processes on a loaded two-core machine.
//!
//! For each fault two bounds follow from the protocol (ARCHITECTURE.md, "The lease
//! protocol"); [`Timing::fence_window`] and [`Timing::takeover_deadline`] compute them:
//!
//! | fault on the holder | its client stops within (from the fault) | the identity is signed again by (with a healthy standby) |
//! |---|---|---|
//! | daemon kill -9 | G + 0.5 s: the guard sees its pipe close | the lease ends by fault + D; then a poll: fault + D + P·1.25 + S |
//! | daemon SIGTERM | G + 1 s: fence first (the daemon's backstop 0.5 s after the grace if the guard is frozen) | the release frees it at once: fault + G + T + P·1.25 + S |
//! | daemon SIGSTOP | D − M + G + 0.5 s: the guard holds F = t_ok + D − M, t_ok ≤ fault | fault + D + P·1.25 + S |
//! | guard kill -9 or SIGTERM | 0.5 s: the client dies with its guard, or is fenced | a restart after at most 8 s of backoff (or a crash-loop release): fault + 8 s + S |
//! | guard SIGSTOP, thawed at c | not stopped: the client keeps its right to sign | only if something else fences it: fault + D + P·1.25 + S; and a guard thawed after its deadline fences at once (its deadline comes before the extensions queued in its pipe), so the client is restarted: c + 8 s + S |
//! | client kill -9 or SIGTERM | at once | restarted after the backoff: fault + 8 s + S |
//! | client SIGSTOP for s | at once (frozen) | it resumes: fault + s + S |
//! | `leased break` (default period) | R + T + G + 2 s: lost at the next renew (its answer within T), the guard's grace or the daemon's backstop 0.5 s later, and 1 s for the command to start and reach the store | the break period ends by fault + D: fault + D + P·1.25 + S |
//! | storage black-holed, slow, 503/429, resets, Azurite down, SQLite locked, from a to c | D − M + G + 0.5 s from a, if it lasts that long | max(a + D, c + T) + P·1.25 + S |
//! | container deleted at a, re-created at c | R + T + G + 1 s | re-created records stay leased for 60 s (`orchestrator::provision::create_lease_record`): c + 60 s + T + P·1.25 + S |
//!
//! A bound counts only while the identity has a healthy standby: a running, unfrozen
//! daemon that signs nothing else and has not itself given this identity up within W.
//! Whenever there is none, the deadline moves to that moment + T + P·1.25 + S.

use std::time::Duration;

/// The protocol's timing for the chaos cluster (D = 15 s, the daemons' defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub d: Duration,
    pub r: Duration,
    pub m: Duration,
    pub grace: Duration,
    pub poll: Duration,
    pub op_timeout: Duration,
    pub max_backoff: Duration,
    pub crash_window: Duration,
    pub slack: Duration,
}

impl Timing {
    /// The defaults that follow from lease duration `d`.
    pub fn for_lease(d: Duration) -> Timing {
        let r = d / 3;
        let m = (d / 3).max(Duration::from_secs(2));
        Timing {
            d,
            r,
            m,
            grace: m / 4,
            // The longest wait between a standby's looks: on the renew grid, R and the
            // look's delay after the instant a lease can end.
            poll: r + Duration::from_millis(150),
            op_timeout: (r / 2).min(Duration::from_secs(5)),
            // 1 s doubled for each of the K − 1 = 4 exits before the crash loop: 1, 2, 4, 8.
            max_backoff: Duration::from_secs(8),
            crash_window: Duration::from_secs(60),
            slack: Duration::from_secs(2),
        }
    }

    /// A standby's longest wait between looks, with its largest jitter.
    pub fn poll_max(&self) -> Duration {
        self.poll + Duration::from_micros(62_500)
    }

    /// From a standby becoming able to act to its client signing.
    pub fn resume(&self) -> Duration {
        self.op_timeout + self.poll_max() + self.slack
    }

    /// How long after the fault (its start) the holder's client may go on signing.
    pub fn fence_window(&self, kind: Kind) -> Duration {
        let half = Duration::from_millis(500);
        match kind {
            Kind::DaemonKill | Kind::GuardTerm => self.grace + half,
            // Plus the daemon's backstop slack, should the guard be frozen.
            Kind::DaemonTerm => self.grace + half + half,
            Kind::GuardKill | Kind::ClientKill | Kind::ClientTerm | Kind::ClientStop => half,
            Kind::DaemonStop | Kind::GuardStop => self.d - self.m + self.grace + half,
            // Plus the daemon's backstop slack, should the guard be frozen; a break also
            // needs the `leased break` command to start and reach the store, which on a
            // loaded machine took up to 0.11 s more than 2 s (seed 2830828511, blob).
            Kind::Break => self.r + self.op_timeout + self.grace + half * 5,
            Kind::ContainerRecreate => self.r + self.op_timeout + self.grace + half + half,
            Kind::BlackHole
            | Kind::Slow
            | Kind::Status503
            | Kind::Status429
            | Kind::Resets
            | Kind::AzuriteRestart
            | Kind::SqliteLocked => self.d - self.m + self.grace + half,
            Kind::BadConfig => Duration::ZERO,
        }
    }

    /// By when the identity must be signed again after fault `kind` that began at `at`
    /// and whose condition ended at `cleared` (the same for instantaneous faults), as
    /// nanoseconds on `CLOCK_MONOTONIC`.
    pub fn takeover_deadline(&self, kind: Kind, at: u64, cleared: u64) -> u64 {
        let n = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let poll = n(self.poll_max() + self.slack);
        match kind {
            Kind::DaemonKill | Kind::DaemonStop => at + n(self.d) + poll,
            // Found by the 30-minute run (seed 2830828511): a guard frozen past its
            // deadline fenced its (also frozen) client as it thawed, and the restart came
            // 2.3 s after the client's own thaw.
            Kind::GuardStop => {
                (at + n(self.d) + poll).max(cleared + n(self.max_backoff + self.slack))
            }
            // From when the `leased break` command finished: it may wait for the store.
            Kind::Break => cleared.max(at) + n(self.d) + poll,
            Kind::DaemonTerm => at + n(self.grace + self.op_timeout) + poll,
            Kind::GuardKill | Kind::GuardTerm | Kind::ClientKill | Kind::ClientTerm => {
                at + n(self.max_backoff + self.slack)
            }
            Kind::ClientStop => cleared.max(at) + n(self.slack),
            Kind::BlackHole
            | Kind::Slow
            | Kind::Status503
            | Kind::Status429
            | Kind::Resets
            | Kind::AzuriteRestart
            | Kind::SqliteLocked => (at + n(self.d)).max(cleared + n(self.op_timeout)) + poll,
            // The re-created records stay locked for the longest lease.
            Kind::ContainerRecreate => {
                cleared + n(shared::lease::MAX_LEASE + self.op_timeout) + poll
            }
            Kind::BadConfig => cleared.max(at) + n(self.resume()),
        }
    }
}

/// One fault the run can inject. A compound fault is two of these at once, recorded as two
/// components of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    DaemonKill,
    DaemonTerm,
    DaemonStop,
    GuardKill,
    GuardTerm,
    GuardStop,
    ClientKill,
    ClientTerm,
    ClientStop,
    /// `leased break IDENTITY --yes`, the default (safe) period.
    Break,
    /// A daemon started beside the others with a bad configuration.
    BadConfig,
    /// Every storage request held unanswered.
    BlackHole,
    /// Every storage request delayed.
    Slow,
    /// A 503 `ServerBusy` storm.
    Status503,
    /// A 429 storm.
    Status429,
    /// Storage connections reset mid-request.
    Resets,
    /// Azurite stopped and started again on the same data.
    AzuriteRestart,
    /// The container of the lease records deleted, and re-created (with every record)
    /// later, as `orchestrator init` would.
    ContainerRecreate,
    /// The SQLite lease file write-locked by another process: writers time out.
    SqliteLocked,
}

impl Kind {
    /// A stable name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::DaemonKill => "daemon-kill9",
            Kind::DaemonTerm => "daemon-sigterm",
            Kind::DaemonStop => "daemon-sigstop",
            Kind::GuardKill => "guard-kill9",
            Kind::GuardTerm => "guard-sigterm",
            Kind::GuardStop => "guard-sigstop",
            Kind::ClientKill => "client-kill9",
            Kind::ClientTerm => "client-sigterm",
            Kind::ClientStop => "client-sigstop",
            Kind::Break => "leased-break",
            Kind::BadConfig => "bad-config-daemon",
            Kind::BlackHole => "storage-black-hole",
            Kind::Slow => "storage-slow",
            Kind::Status503 => "storage-503-storm",
            Kind::Status429 => "storage-429-storm",
            Kind::Resets => "storage-resets",
            Kind::AzuriteRestart => "azurite-restart",
            Kind::ContainerRecreate => "container-recreate",
            Kind::SqliteLocked => "sqlite-write-locked",
        }
    }

    /// Storage for every node at once.
    pub fn is_storage(self) -> bool {
        matches!(
            self,
            Kind::BlackHole
                | Kind::Slow
                | Kind::Status503
                | Kind::Status429
                | Kind::Resets
                | Kind::AzuriteRestart
                | Kind::ContainerRecreate
                | Kind::SqliteLocked
        )
    }

    /// Aimed at one node's daemon, guard or client.
    pub fn is_process(self) -> bool {
        matches!(
            self,
            Kind::DaemonKill
                | Kind::DaemonTerm
                | Kind::DaemonStop
                | Kind::GuardKill
                | Kind::GuardTerm
                | Kind::GuardStop
                | Kind::ClientKill
                | Kind::ClientTerm
                | Kind::ClientStop
        )
    }
}

/// The compound faults: two at once on one node or one identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Compound {
    /// The holder's guard frozen, then its identity broken: the daemon must kill the client
    /// itself at the lost renew.
    GuardStopThenBreak,
    /// The holder's daemon frozen, then its guard killed: the client dies with its guard.
    DaemonStopThenGuardKill,
    /// The holder's daemon frozen, then its identity broken.
    DaemonStopThenBreak,
    /// The holder's daemon frozen, then storage lost.
    DaemonStopThenStorage,
    /// The holder's client frozen, then its daemon killed.
    ClientStopThenDaemonKill,
    /// The holder's guard frozen, then its daemon stopped with SIGTERM.
    GuardStopThenDaemonTerm,
}

impl Compound {
    pub const ALL: [Compound; 6] = [
        Compound::GuardStopThenBreak,
        Compound::DaemonStopThenGuardKill,
        Compound::DaemonStopThenBreak,
        Compound::DaemonStopThenStorage,
        Compound::ClientStopThenDaemonKill,
        Compound::GuardStopThenDaemonTerm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Compound::GuardStopThenBreak => "compound:guard-sigstop+break",
            Compound::DaemonStopThenGuardKill => "compound:daemon-sigstop+guard-kill9",
            Compound::DaemonStopThenBreak => "compound:daemon-sigstop+break",
            Compound::DaemonStopThenStorage => "compound:daemon-sigstop+storage-outage",
            Compound::ClientStopThenDaemonKill => "compound:client-sigstop+daemon-kill9",
            Compound::GuardStopThenDaemonTerm => "compound:guard-sigstop+daemon-sigterm",
        }
    }
}

/// The bad configurations a daemon is started with beside the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadConfig {
    /// `lease.duration_secs = 10`: refused at start (exit 64).
    LeaseTooShort,
    /// The runtime directory of a running daemon: refused by its lock (exit 75), and it
    /// must not touch that daemon's key file.
    SharedRuntimeDir,
    /// A secret store with no secrets: every hand-off fails and is given up.
    MissingSecrets,
    /// A pool no identity is in: it waits for ever.
    EmptyPool,
}

impl BadConfig {
    pub const ALL: [BadConfig; 4] = [
        BadConfig::LeaseTooShort,
        BadConfig::SharedRuntimeDir,
        BadConfig::MissingSecrets,
        BadConfig::EmptyPool,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BadConfig::LeaseTooShort => "lease-too-short",
            BadConfig::SharedRuntimeDir => "shared-runtime-dir",
            BadConfig::MissingSecrets => "missing-secrets",
            BadConfig::EmptyPool => "empty-pool",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// The 30-minute run's case (seed 2830828511): the guard frozen at +431.0 s for 24.1 s,
    /// past its deadline, and its client frozen meanwhile; the identity was signed again
    /// 4.0 s after the guard's thaw. A short freeze keeps the lease's bound.
    #[test]
    fn a_guard_frozen_past_its_deadline_is_allowed_the_restart_after_its_thaw() {
        let t = Timing::for_lease(Duration::from_secs(15));
        let (at, cleared) = (431 * S, 455 * S + S / 7);
        let deadline = t.takeover_deadline(Kind::GuardStop, at, cleared);
        assert!(deadline >= cleared + 4 * S, "{}", deadline as f64 / 1e9);
        assert_eq!(
            t.takeover_deadline(Kind::GuardStop, at, at + S),
            at + u64::try_from((t.d + t.poll_max() + t.slack).as_nanos()).unwrap()
        );
    }
}
