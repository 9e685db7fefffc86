//! The lease-store conformance suite: the Azure Blob lease semantics of
//! [`shared::lease`], cell by cell from one state × operation table that mirrors the one in
//! its module docs (a case per cell, `cell_<state>_<operation>`, with matching and
//! mismatching lease ids; a test fails when the two tables differ), then what is not one
//! cell: timing, break periods, metadata under a lease, records and listing, request
//! validation, and races between independent handles. Written once; a backend's test file provides a [`LeaseHarness`] and
//! expands [`lease_conformance_suite!`](crate::lease_conformance_suite) with it:
//!
//! ```ignore
//! integration_tests::lease_conformance_suite!(SqliteHarness::new());
//! integration_tests::lease_conformance_suite!(AzuriteHarness::new().await);
//! ```
//!
//! The suite must never rely on a backend's internals or on time passing by itself: every
//! wait is [`LeaseHarness::advance`], so the SQLite backend runs it in milliseconds on a
//! manual clock and a real service runs it by sleeping. Where a real service cannot be
//! exact (it reports no remaining time, its clock is not ours), the checks of instants
//! loosen to [`TOLERANCE`] unless [`LeaseHarness::exact_time`] says otherwise; the checks of
//! states and refusals never loosen.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use shared::lease::{
    meta, BreakPeriod, LeaseDuration, LeaseError, LeaseId, LeaseRecord, LeaseState, LeaseStore,
    LostReason, Metadata, RecordCreated, MAX_BREAK_PERIOD, MAX_LEASE, MAX_METADATA_BYTES,
    MIN_LEASE,
};
use shared::Name;

/// A boxed future, so that [`LeaseHarness`] stays object-safe without `async-trait`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a backend provides to the suite. One harness serves one test.
pub trait LeaseHarness: Send + Sync {
    /// The store under test.
    fn store(&self) -> Arc<dyn LeaseStore>;

    /// Another handle on the same store, as independent as another process's would be
    /// (its own connection or client); the races run one per racer.
    fn open_another(&self) -> Arc<dyn LeaseStore>;

    /// A record name this store has never seen (no record is created).
    fn new_identity(&self) -> Name;

    /// Lets at least `d` pass on the store's clock: exactly `d` on a manual clock; a real
    /// service sleeps `d` plus a margin for its clock and the requests' latency.
    fn advance(&self, d: Duration) -> BoxFuture<'_, ()>;

    /// True when [`LeaseHarness::advance`] is exact and the store reports
    /// [`LeaseRecord::remaining`]: instants are then checked to the millisecond.
    fn exact_time(&self) -> bool;

    /// True when the store reports how long a fixed lease lasts. Azure says only "fixed",
    /// and its backend reports `duration: None` then; the suite checks the kind instead.
    fn reports_fixed_durations(&self) -> bool {
        true
    }
}

/// How far an instant may be off when [`LeaseHarness::exact_time`] is false.
pub const TOLERANCE: Duration = Duration::from_secs(5);

/// Racing handles in the race cases.
pub const RACERS: usize = 8;
/// Rounds of the plain acquire race (one fresh record per round).
pub const RACE_ROUNDS: usize = 100;
/// Records in the expiry races (all set up at once, so a real service sleeps only once).
pub const EXPIRY_RACE_ROUNDS: usize = 25;

/// The break period the `breaking` set-up uses; longer than any wait in a case that
/// expects the break still running.
const BREAK_PERIOD: Duration = Duration::from_secs(40);

fn short() -> LeaseDuration {
    LeaseDuration::fixed(MIN_LEASE).unwrap()
}

fn long() -> LeaseDuration {
    LeaseDuration::fixed(MAX_LEASE).unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A break period of `d`, which the case knows to be valid.
fn period(d: Duration) -> Option<BreakPeriod> {
    Some(BreakPeriod::new(d).unwrap())
}

/// Metadata of `pairs`, which the case knows to be valid.
#[track_caller]
fn metadata(pairs: &[(&str, &str)]) -> Metadata {
    try_metadata(pairs).unwrap()
}

fn try_metadata(pairs: &[(&str, &str)]) -> Result<Metadata, LeaseError> {
    Metadata::from_pairs(pairs.iter().copied())
}

// --- assertions -------------------------------------------------------------------------

#[track_caller]
fn assert_lost<T: Debug>(result: Result<T, LeaseError>, name: &Name, reason: LostReason) {
    match result {
        Err(LeaseError::Lost {
            identity,
            reason: got,
        }) if &identity == name && got == reason => {}
        other => panic!("expected lost ({reason:?}) on {name}, got {other:?}"),
    }
}

#[track_caller]
fn assert_held<T: Debug>(result: Result<T, LeaseError>, name: &Name, state: LeaseState) {
    match result {
        Err(LeaseError::HeldByOther {
            identity,
            state: got,
        }) if &identity == name && got == state => {}
        other => panic!("expected held ({state}) on {name}, got {other:?}"),
    }
}

#[track_caller]
fn assert_not_found<T: Debug>(result: Result<T, LeaseError>, name: &Name) {
    match result {
        Err(LeaseError::NotFound { identity }) if &identity == name => {}
        other => panic!("expected not found on {name}, got {other:?}"),
    }
}

#[track_caller]
fn assert_invalid<T: Debug>(result: Result<T, LeaseError>) {
    match result {
        Err(LeaseError::Invalid(_)) => {}
        other => panic!("expected invalid, got {other:?}"),
    }
}

/// `actual` equals `expected` (exact time), or is within [`TOLERANCE`] of it.
#[track_caller]
fn assert_about(h: &dyn LeaseHarness, what: &str, actual: Duration, expected: Duration) {
    if h.exact_time() {
        assert_eq!(actual, expected, "{what}");
    } else {
        assert!(
            actual <= expected + TOLERANCE && actual + TOLERANCE >= expected,
            "{what}: {actual:?}, expected about {expected:?}"
        );
    }
}

/// `rec.remaining` equals `expected` (exact time); otherwise checked only where both the
/// store and the case give one.
#[track_caller]
fn assert_remaining(h: &dyn LeaseHarness, rec: &LeaseRecord, expected: Option<Duration>) {
    if h.exact_time() {
        assert_eq!(
            rec.remaining, expected,
            "remaining time of {}",
            rec.identity
        );
    } else if let (Some(actual), Some(expected)) = (rec.remaining, expected) {
        assert_about(h, "remaining time", actual, expected);
    }
}

/// `rec.duration` is `expected`, or, where the store cannot tell a fixed lease's length,
/// `None` for a fixed one.
#[track_caller]
fn assert_duration(h: &dyn LeaseHarness, rec: &LeaseRecord, expected: LeaseDuration) {
    match expected {
        LeaseDuration::Fixed(_) if !h.reports_fixed_durations() => assert_eq!(
            rec.duration, None,
            "a fixed lease on {} (the store does not say how long)",
            rec.identity
        ),
        _ => assert_eq!(rec.duration, Some(expected), "duration of {}", rec.identity),
    }
}

async fn read(h: &dyn LeaseHarness, name: &Name) -> LeaseRecord {
    let rec = h.store().read(name).await.unwrap();
    assert_eq!(&rec.identity, name);
    rec
}

async fn assert_state(h: &dyn LeaseHarness, name: &Name, state: LeaseState) {
    let rec = read(h, name).await;
    assert_eq!(rec.state, state, "state of {name}: {rec:?}");
}

// --- set-ups: one record in each state, checked before the case uses it ------------------

async fn record(h: &dyn LeaseHarness) -> Name {
    let name = h.new_identity();
    let created = h.store().create_record(&name).await.unwrap();
    assert_eq!(created, RecordCreated::Created, "{name} was not fresh");
    name
}

async fn leased_for(h: &dyn LeaseHarness, duration: LeaseDuration) -> (Name, LeaseId) {
    let name = record(h).await;
    let id = h.store().acquire(&name, duration, None).await.unwrap();
    assert_state(h, &name, LeaseState::Leased).await;
    (name, id)
}

/// Leased for 60 s.
async fn leased(h: &dyn LeaseHarness) -> (Name, LeaseId) {
    leased_for(h, long()).await
}

/// Leased for 15 s, then left to expire.
async fn expired(h: &dyn LeaseHarness) -> (Name, LeaseId) {
    let (name, id) = leased_for(h, short()).await;
    h.advance(MIN_LEASE).await;
    assert_state(h, &name, LeaseState::Expired).await;
    (name, id)
}

/// Leased for 60 s, then broken with a 40 s period.
async fn breaking(h: &dyn LeaseHarness) -> (Name, LeaseId) {
    let (name, id) = leased(h).await;
    let left = h
        .store()
        .break_lease(&name, period(BREAK_PERIOD))
        .await
        .unwrap();
    assert_about(h, "break period", left, BREAK_PERIOD);
    assert_state(h, &name, LeaseState::Breaking).await;
    (name, id)
}

/// Leased for 60 s, then broken at once.
async fn broken(h: &dyn LeaseHarness) -> (Name, LeaseId) {
    let (name, id) = leased(h).await;
    let left = h
        .store()
        .break_lease(&name, period(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(left, Duration::ZERO);
    assert_state(h, &name, LeaseState::Broken).await;
    (name, id)
}

/// Leased for 15 s, then released.
async fn released(h: &dyn LeaseHarness) -> (Name, LeaseId) {
    let (name, id) = leased_for(h, short()).await;
    h.store().release(&name, &id).await.unwrap();
    assert_state(h, &name, LeaseState::Available).await;
    (name, id)
}

// --- the state × operation table ----------------------------------------------------------
//
// The table in `shared::lease`'s module documentation (shared/src/lease/mod.rs), cell for
// cell: a row per lease state, a column per operation, and in each cell the documented text
// with the probes that hold the stores to it. `the_state_operation_table_is_the_documented_one`
// (a test every conformance target runs) reads the documented table and fails when the two
// differ in shape or in text, or when a cell's probes do not do what its text says: neither
// table can be edited without the other.
//
// A probe is one operation on a fresh record in the row's state (set up as `leased`,
// `expired`, `breaking` and `broken` above; `available` twice, as a record never leased and
// as a released one), its expected outcome, the state afterwards, and follow-up operations
// that show who holds the lease then. `run_cell` drives them; a cell's case names its state
// and operation in every failure. Everything that is not one cell (timing, break periods,
// metadata, listing, races) has a case of its own below.

/// The operations, in the order of the documented table's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Acquire,
    Renew,
    Change,
    Release,
    Break,
}

impl Op {
    const ALL: [Op; 5] = [Op::Acquire, Op::Renew, Op::Change, Op::Release, Op::Break];

    /// The column's heading in the documented table.
    fn heading(self) -> &'static str {
        match self {
            Op::Acquire => "acquire",
            Op::Renew => "renew (id)",
            Op::Change => "change (id)",
            Op::Release => "release (id)",
            Op::Break => "break",
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Acquire => "acquire",
            Op::Renew => "renew",
            Op::Change => "change",
            Op::Release => "release",
            Op::Break => "break",
        })
    }
}

/// A lease id a probe names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// The id the set-up leased the record under (for a record never leased, an id nobody
    /// ever held).
    Holder,
    /// An id nobody holds.
    Other,
    /// A second id nobody holds, for a change to propose.
    New,
    /// The id the probe's operation returned (for its follow-ups).
    Returned,
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Who::Holder => "the holder's id",
            Who::Other => "another id",
            Who::New => "a new id",
            Who::Returned => "the id it returned",
        })
    }
}

/// A lease duration an acquire asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dur {
    /// 15 s.
    Short,
    /// 60 s.
    Long,
    Infinite,
}

impl Dur {
    fn get(self) -> LeaseDuration {
        match self {
            Dur::Short => short(),
            Dur::Long => long(),
            Dur::Infinite => LeaseDuration::Infinite,
        }
    }
}

/// One call on the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// Acquire for a duration, proposing an id or not.
    Acquire(Dur, Option<Who>),
    Renew(Who),
    /// Change the lease named by the first id to the second.
    Change(Who, Who),
    Release(Who),
    /// Break with a period of so many seconds, or Azure's default.
    Break(Option<u64>),
}

/// Which id a call names, as the documented cells distinguish them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    /// An acquire that proposes no id; every break.
    NoId,
    /// The holder's id.
    Holders,
    /// Any other id.
    Anothers,
}

impl Call {
    fn op(self) -> Op {
        match self {
            Call::Acquire(..) => Op::Acquire,
            Call::Renew(_) => Op::Renew,
            Call::Change(..) => Op::Change,
            Call::Release(_) => Op::Release,
            Call::Break(_) => Op::Break,
        }
    }

    fn naming(self) -> Naming {
        let of = |who: Who| match who {
            Who::Holder => Naming::Holders,
            _ => Naming::Anothers,
        };
        match self {
            Call::Acquire(_, None) | Call::Break(_) => Naming::NoId,
            Call::Acquire(_, Some(who))
            | Call::Renew(who)
            | Call::Change(who, _)
            | Call::Release(who) => of(who),
        }
    }
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dur = |d: Dur| match d {
            Dur::Short => "15 s",
            Dur::Long => "60 s",
            Dur::Infinite => "ever",
        };
        match *self {
            Call::Acquire(d, None) => write!(f, "acquire for {}, proposing no id", dur(d)),
            Call::Acquire(d, Some(who)) => write!(f, "acquire for {}, proposing {who}", dur(d)),
            Call::Renew(who) => write!(f, "renew with {who}"),
            Call::Change(from, to) => write!(f, "change {from} to {to}"),
            Call::Release(who) => write!(f, "release with {who}"),
            Call::Break(None) => write!(f, "break with the default period"),
            Call::Break(Some(s)) => write!(f, "break with a {s} s period"),
        }
    }
}

/// What a successful call gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gives {
    /// `()`: renew and release.
    Nothing,
    /// This lease id: acquire and change.
    Id(Who),
    /// A lease id the store chose: a GUID, and none of the probe's ids.
    FreshId,
    /// Break: about this long until the record can be acquired.
    Wait(Duration),
    /// Break: acquirable at once (exactly zero).
    AtOnce,
}

/// The outcome a call must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Succeeds(Gives),
    Lost(LostReason),
    Held(LeaseState),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Succeeds(Gives::Nothing) => write!(f, "ok"),
            Expect::Succeeds(Gives::Id(who)) => write!(f, "ok, giving {who}"),
            Expect::Succeeds(Gives::FreshId) => write!(f, "ok, giving an id of its own"),
            Expect::Succeeds(Gives::Wait(d)) => write!(f, "ok, acquirable in about {d:?}"),
            Expect::Succeeds(Gives::AtOnce) => write!(f, "ok, acquirable at once"),
            Expect::Lost(reason) => write!(f, "lost ({reason:?})"),
            Expect::Held(state) => write!(f, "held ({state})"),
        }
    }
}

/// One call on a fresh record in the row's state, what it must give, the state it must
/// leave, and calls that follow it with what they must give.
#[derive(Debug, Clone, Copy)]
struct Probe {
    call: Call,
    expect: Expect,
    after: LeaseState,
    then: &'static [(Call, Expect)],
}

impl Probe {
    const fn then(self, then: &'static [(Call, Expect)]) -> Self {
        Probe { then, ..self }
    }
}

/// A cell: the documented text, and the probes that hold a store to it.
#[derive(Debug, Clone, Copy)]
struct Cell {
    doc: &'static str,
    probes: &'static [Probe],
}

/// A row: a state, and its cells in the order of [`Op::ALL`].
#[derive(Debug, Clone, Copy)]
struct Row {
    state: LeaseState,
    cells: [Cell; 5],
}

/// The table, in the words and the order of `shared/src/lease/mod.rs`'s module docs (keep
/// the two in step: `the_state_operation_table_is_the_documented_one` compares them).
const TABLE: [Row; 5] = table::TABLE;

mod table {
    use super::{Call::*, Cell, Dur::*, Expect, Gives, Probe, Row, Who::*, BREAK_PERIOD};
    use shared::lease::LeaseState::{self, *};
    use shared::lease::LostReason;
    use std::time::Duration;

    const OK: Expect = Expect::Succeeds(Gives::Nothing);
    const FRESH: Expect = Expect::Succeeds(Gives::FreshId);
    const AT_ONCE: Expect = Expect::Succeeds(Gives::AtOnce);
    const MISMATCH: Expect = Expect::Lost(LostReason::IdMismatch);
    const NOT_PRESENT: Expect = Expect::Lost(LostReason::NotPresent);
    const LOST_BROKEN: Expect = Expect::Lost(LostReason::Broken);
    const LOST_BREAKING: Expect = Expect::Lost(LostReason::Breaking);
    const HELD_LEASED: Expect = Expect::Held(Leased);
    const HELD_BREAKING: Expect = Expect::Held(Breaking);

    const fn gives(who: super::Who) -> Expect {
        Expect::Succeeds(Gives::Id(who))
    }

    const fn waits(d: Duration) -> Expect {
        Expect::Succeeds(Gives::Wait(d))
    }

    const fn probe(call: super::Call, expect: Expect, after: LeaseState) -> Probe {
        Probe {
            call,
            expect,
            after,
            then: &[],
        }
    }

    const fn cell(doc: &'static str, probes: &'static [Probe]) -> Cell {
        Cell { doc, probes }
    }

    /// The running break of the `breaking` set-up, in seconds.
    const BREAKING_FOR: u64 = BREAK_PERIOD.as_secs();

    // Laid out by hand, a cell to a `cell(…)`, as the documented table is.
    #[rustfmt::skip]
    pub(super) const TABLE: [Row; 5] = [
        Row {
            state: Available,
            cells: [
                cell("ok", &[
                    probe(Acquire(Short, None), FRESH, Leased)
                        .then(&[(Renew(Returned), OK), (Renew(Holder), MISMATCH)]),
                    probe(Acquire(Long, Some(Holder)), gives(Holder), Leased)
                        .then(&[(Renew(Holder), OK)]),
                    probe(Acquire(Long, Some(Other)), gives(Other), Leased)
                        .then(&[(Renew(Other), OK), (Renew(Holder), MISMATCH)]),
                ]),
                cell("lost: not present", &[
                    probe(Renew(Holder), NOT_PRESENT, Available),
                    probe(Renew(Other), NOT_PRESENT, Available),
                ]),
                cell("lost: not present", &[
                    probe(Change(Holder, New), NOT_PRESENT, Available),
                    probe(Change(Other, New), NOT_PRESENT, Available),
                ]),
                cell("lost: not present", &[
                    probe(Release(Holder), NOT_PRESENT, Available),
                    probe(Release(Other), NOT_PRESENT, Available),
                ]),
                cell("lost: not present", &[
                    probe(Break(None), NOT_PRESENT, Available),
                    probe(Break(Some(0)), NOT_PRESENT, Available),
                ]),
            ],
        },
        Row {
            state: Leased,
            cells: [
                cell("same id only, else held", &[
                    // Restarted, with the duration it asks for.
                    probe(Acquire(Short, Some(Holder)), gives(Holder), Leased),
                    probe(Acquire(Short, None), HELD_LEASED, Leased)
                        .then(&[(Renew(Holder), OK)]),
                    probe(Acquire(Long, Some(Other)), HELD_LEASED, Leased)
                        .then(&[(Renew(Holder), OK), (Renew(Other), MISMATCH)]),
                    probe(Acquire(Infinite, None), HELD_LEASED, Leased)
                        .then(&[(Renew(Holder), OK)]),
                ]),
                cell("ok / lost: mismatch", &[
                    probe(Renew(Holder), OK, Leased),
                    probe(Renew(Other), MISMATCH, Leased).then(&[(Renew(Holder), OK)]),
                ]),
                cell("ok / lost: mismatch", &[
                    probe(Change(Holder, New), gives(New), Leased).then(&[
                        (Renew(Holder), MISMATCH),
                        (Release(Holder), MISMATCH),
                        (Renew(New), OK),
                    ]),
                    probe(Change(Other, New), MISMATCH, Leased)
                        .then(&[(Renew(New), MISMATCH), (Renew(Holder), OK)]),
                ]),
                cell("ok / mismatch", &[
                    probe(Release(Holder), OK, Available)
                        .then(&[(Acquire(Short, None), FRESH)]),
                    probe(Release(Other), MISMATCH, Leased).then(&[(Renew(Holder), OK)]),
                ]),
                cell("breaking or broken", &[
                    probe(Break(Some(BREAKING_FOR)), waits(BREAK_PERIOD), Breaking)
                        .then(&[
                            (Renew(Holder), LOST_BROKEN),
                            (Acquire(Short, None), HELD_BREAKING),
                        ]),
                    probe(Break(Some(0)), AT_ONCE, Broken)
                        .then(&[(Renew(Holder), LOST_BROKEN), (Acquire(Short, None), FRESH)]),
                ]),
            ],
        },
        Row {
            state: Expired,
            cells: [
                cell("ok (any id)", &[
                    probe(Acquire(Long, None), FRESH, Leased).then(&[
                        (Renew(Holder), MISMATCH),
                        (Release(Holder), MISMATCH),
                        (Renew(Returned), OK),
                    ]),
                    probe(Acquire(Long, Some(Holder)), gives(Holder), Leased),
                    probe(Acquire(Short, Some(Other)), gives(Other), Leased)
                        .then(&[(Renew(Holder), MISMATCH)]),
                ]),
                cell("ok, same id: resumes", &[
                    probe(Renew(Holder), OK, Leased).then(&[(Acquire(Short, None), HELD_LEASED)]),
                    probe(Renew(Other), MISMATCH, Expired),
                ]),
                cell("lost: not present", &[
                    probe(Change(Holder, New), NOT_PRESENT, Expired),
                ]),
                cell("ok / mismatch", &[
                    probe(Release(Holder), OK, Available),
                    probe(Release(Other), MISMATCH, Expired).then(&[(Release(Holder), OK)]),
                ]),
                cell("broken", &[
                    // Broken, the old holder can no longer resume it.
                    probe(Break(Some(60)), AT_ONCE, Broken).then(&[(Renew(Holder), LOST_BROKEN)]),
                    probe(Break(None), AT_ONCE, Broken),
                ]),
            ],
        },
        Row {
            state: Breaking,
            cells: [
                cell("held (breaking)", &[
                    probe(Acquire(Short, None), HELD_BREAKING, Breaking),
                    probe(Acquire(Short, Some(Holder)), HELD_BREAKING, Breaking),
                    probe(Acquire(Short, Some(Other)), HELD_BREAKING, Breaking),
                ]),
                cell("lost: broken", &[
                    probe(Renew(Holder), LOST_BROKEN, Breaking),
                    probe(Renew(Other), MISMATCH, Breaking),
                ]),
                cell("lost: breaking", &[
                    probe(Change(Holder, New), LOST_BREAKING, Breaking)
                        .then(&[(Release(Holder), OK)]),
                ]),
                cell("ok / mismatch", &[
                    // Available now, not at the end of the break period.
                    probe(Release(Holder), OK, Available)
                        .then(&[(Acquire(Short, None), FRESH)]),
                    probe(Release(Other), MISMATCH, Breaking).then(&[(Release(Holder), OK)]),
                ]),
                cell("shorten only", &[
                    probe(Break(Some(60)), waits(BREAK_PERIOD), Breaking),
                    probe(Break(None), waits(BREAK_PERIOD), Breaking),
                    probe(Break(Some(20)), waits(Duration::from_secs(20)), Breaking),
                    probe(Break(Some(0)), AT_ONCE, Broken),
                ]),
            ],
        },
        Row {
            state: Broken,
            cells: [
                cell("ok", &[
                    probe(Acquire(Short, None), FRESH, Leased)
                        .then(&[(Release(Holder), MISMATCH), (Renew(Returned), OK)]),
                    probe(Acquire(Long, Some(Holder)), gives(Holder), Leased)
                        .then(&[(Renew(Holder), OK)]),
                    probe(Acquire(Long, Some(Other)), gives(Other), Leased)
                        .then(&[(Release(Holder), MISMATCH)]),
                ]),
                cell("lost: broken", &[
                    probe(Renew(Holder), LOST_BROKEN, Broken),
                    probe(Renew(Other), MISMATCH, Broken),
                ]),
                cell("lost: not present", &[
                    probe(Change(Holder, New), NOT_PRESENT, Broken),
                ]),
                cell("ok / mismatch", &[
                    probe(Release(Holder), OK, Available),
                    probe(Release(Other), MISMATCH, Broken).then(&[(Release(Holder), OK)]),
                ]),
                cell("broken", &[
                    probe(Break(Some(60)), AT_ONCE, Broken),
                    probe(Break(None), AT_ONCE, Broken),
                ]),
            ],
        },
    ];
}

/// The cell of `state` × `op`.
fn cell_of(state: LeaseState, op: Op) -> &'static Cell {
    let row = TABLE
        .iter()
        .find(|row| row.state == state)
        .unwrap_or_else(|| panic!("the table has no row {state}"));
    let column = Op::ALL.iter().position(|o| *o == op).expect("a column");
    &row.cells[column]
}

/// The lease a set-up in `state` runs on, for a probe that renews it.
fn set_up_lease(state: LeaseState) -> LeaseDuration {
    match state {
        LeaseState::Expired => short(),
        _ => long(),
    }
}

/// A record set up for one probe.
struct Subject {
    name: Name,
    holder: LeaseId,
    how: &'static str,
}

/// `n` records in `state`, set up together so that a real service waits out the expiry
/// once; for `available`, `n` never leased and `n` released, alternately.
async fn subjects(h: &dyn LeaseHarness, state: LeaseState, n: usize) -> Vec<Subject> {
    let mut subjects = Vec::new();
    for _ in 0..n {
        let (name, holder, how) = match state {
            LeaseState::Available => {
                let name = record(h).await;
                subjects.push(Subject {
                    name,
                    holder: LeaseId::random(),
                    how: "a record never leased",
                });
                let (name, holder) = released(h).await;
                (name, holder, "a released record")
            }
            LeaseState::Leased => {
                let (name, holder) = leased(h).await;
                (name, holder, "leased for 60 s")
            }
            LeaseState::Expired => {
                let (name, holder) = leased_for(h, short()).await;
                (name, holder, "leased for 15 s, then left to expire")
            }
            LeaseState::Breaking => {
                let (name, holder) = breaking(h).await;
                (
                    name,
                    holder,
                    "leased for 60 s, then broken with a 40 s period",
                )
            }
            LeaseState::Broken => {
                let (name, holder) = broken(h).await;
                (name, holder, "leased for 60 s, then broken at once")
            }
        };
        subjects.push(Subject { name, holder, how });
    }
    if state == LeaseState::Expired {
        h.advance(MIN_LEASE).await;
        for s in &subjects {
            assert_state(h, &s.name, LeaseState::Expired).await;
        }
    }
    subjects
}

/// The ids one probe names.
struct Ids {
    holder: LeaseId,
    other: LeaseId,
    new: LeaseId,
    returned: Option<LeaseId>,
}

impl Ids {
    fn get(&self, who: Who) -> &LeaseId {
        match who {
            Who::Holder => &self.holder,
            Who::Other => &self.other,
            Who::New => &self.new,
            Who::Returned => self
                .returned
                .as_ref()
                .expect("the table names the returned id only after a call that returns one"),
        }
    }
}

/// What a call gave.
#[derive(Debug)]
enum Got {
    Nothing,
    Id(LeaseId),
    Wait(Duration),
}

async fn perform(
    store: &dyn LeaseStore,
    name: &Name,
    call: Call,
    ids: &Ids,
) -> Result<Got, LeaseError> {
    match call {
        Call::Acquire(d, proposed) => store
            .acquire(name, d.get(), proposed.map(|who| ids.get(who)))
            .await
            .map(Got::Id),
        Call::Renew(who) => store.renew(name, ids.get(who)).await.map(|()| Got::Nothing),
        Call::Change(from, to) => store
            .change(name, ids.get(from), ids.get(to))
            .await
            .map(Got::Id),
        Call::Release(who) => store
            .release(name, ids.get(who))
            .await
            .map(|()| Got::Nothing),
        Call::Break(secs) => store
            .break_lease(name, secs.map(|s| BreakPeriod::from_secs(s).unwrap()))
            .await
            .map(Got::Wait),
    }
}

/// Whether `actual` is `expected`: exactly on an exact clock, else within [`TOLERANCE`].
fn about(h: &dyn LeaseHarness, actual: Duration, expected: Duration) -> bool {
    if h.exact_time() {
        actual == expected
    } else {
        actual <= expected + TOLERANCE && actual + TOLERANCE >= expected
    }
}

/// Whether a record's `remaining` fits `expected`: none must be none on every store; a
/// time is checked as [`assert_remaining`] does.
fn remaining_fits(
    h: &dyn LeaseHarness,
    actual: Option<Duration>,
    expected: Option<Duration>,
) -> bool {
    match (actual, expected) {
        (actual, None) => actual.is_none(),
        (Some(actual), Some(expected)) => about(h, actual, expected),
        (None, Some(_)) => !h.exact_time(),
    }
}

/// Checks `got` against `expect`; the error says what was wrong.
fn check(
    h: &dyn LeaseHarness,
    name: &Name,
    ids: &Ids,
    expect: Expect,
    got: &Result<Got, LeaseError>,
) -> Result<(), String> {
    let fits = match (expect, got) {
        (Expect::Succeeds(Gives::Nothing), Ok(Got::Nothing)) => true,
        (Expect::Succeeds(Gives::Id(who)), Ok(Got::Id(id))) => id == ids.get(who),
        (Expect::Succeeds(Gives::FreshId), Ok(Got::Id(id))) => {
            LeaseId::parse(id.as_str()).ok().as_ref() == Some(id)
                && ![&ids.holder, &ids.other, &ids.new].contains(&id)
        }
        (Expect::Succeeds(Gives::Wait(d)), Ok(Got::Wait(left))) => about(h, *left, d),
        (Expect::Succeeds(Gives::AtOnce), Ok(Got::Wait(left))) => left.is_zero(),
        (
            Expect::Lost(reason),
            Err(LeaseError::Lost {
                identity,
                reason: got,
            }),
        ) => identity == name && *got == reason,
        (
            Expect::Held(state),
            Err(LeaseError::HeldByOther {
                identity,
                state: got,
            }),
        ) => identity == name && *got == state,
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(format!("expected {expect}, got {got:?}"))
    }
}

/// Runs one probe on `subject`; the error says every check that failed.
async fn run_probe(
    h: &dyn LeaseHarness,
    state: LeaseState,
    probe: &Probe,
    subject: &Subject,
) -> Result<(), String> {
    let Subject { name, holder, .. } = subject;
    let mut ids = Ids {
        holder: holder.clone(),
        other: LeaseId::random(),
        new: LeaseId::random(),
        returned: None,
    };
    let before = read(h, name).await;
    let got = perform(&*h.store(), name, probe.call, &ids).await;
    let mut failed = Vec::new();
    if let Err(e) = check(h, name, &ids, probe.expect, &got) {
        failed.push(e);
    }
    let rec = read(h, name).await;
    if rec.state != probe.after {
        failed.push(format!(
            "left it {}, not {}: {rec:?}",
            rec.state, probe.after
        ));
    }
    match &got {
        // A refusal changes nothing.
        Err(_) => {
            let same = rec.state == before.state
                && rec.duration == before.duration
                && rec.metadata == before.metadata
                && (!h.exact_time() || rec.remaining == before.remaining);
            if !same {
                failed.push(format!(
                    "the refusal changed the record from {before:?} to {rec:?}"
                ));
            }
        }
        Ok(got) => {
            let remaining = match (probe.call, got) {
                (Call::Acquire(d, _), _) => match d.get() {
                    LeaseDuration::Fixed(d) => Some(d),
                    LeaseDuration::Infinite => None,
                },
                (Call::Renew(_), _) => match set_up_lease(state) {
                    LeaseDuration::Fixed(d) => Some(d),
                    LeaseDuration::Infinite => None,
                },
                (Call::Change(..), _) => before.remaining,
                (Call::Break(_), Got::Wait(left)) if !left.is_zero() => Some(*left),
                (Call::Release(_) | Call::Break(_), _) => None,
            };
            if !remaining_fits(h, rec.remaining, remaining) {
                failed.push(format!(
                    "left {:?} remaining, not {remaining:?}",
                    rec.remaining
                ));
            }
            if let (Call::Acquire(d, _), Got::Id(id)) = (probe.call, got) {
                let duration = match d.get() {
                    LeaseDuration::Fixed(_) if !h.reports_fixed_durations() => None,
                    d => Some(d),
                };
                if rec.duration != duration {
                    failed.push(format!(
                        "left a lease of {:?}, not {duration:?}",
                        rec.duration
                    ));
                }
                ids.returned = Some(id.clone());
            }
            if let (Call::Change(..), Got::Id(id)) = (probe.call, got) {
                ids.returned = Some(id.clone());
            }
        }
    }
    for (call, expect) in probe.then {
        // A follow-up acquire is another node's.
        let store = match call {
            Call::Acquire(..) => h.open_another(),
            _ => h.store(),
        };
        let got = perform(&*store, name, *call, &ids).await;
        if let Err(e) = check(h, name, &ids, *expect, &got) {
            failed.push(format!("then {call}: {e}"));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// Runs every probe of the cell `state` × `op`, each on a fresh record, and fails naming the
/// cell and every probe that failed.
async fn run_cell(h: &dyn LeaseHarness, state: LeaseState, op: Op) {
    let cell = cell_of(state, op);
    assert!(
        !cell.probes.is_empty(),
        "{state} × {op}: a cell without probes"
    );
    let per_probe = if state == LeaseState::Available { 2 } else { 1 };
    let subjects = subjects(h, state, cell.probes.len()).await;
    let mut failed = Vec::new();
    for (probe, subjects) in cell.probes.iter().zip(subjects.chunks(per_probe)) {
        for subject in subjects {
            if let Err(e) = run_probe(h, state, probe, subject).await {
                failed.push(format!(
                    "{state} × {op} ({}), {}: {e}",
                    subject.how, probe.call
                ));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "the state × operation table, cell {state} × {op} (documented as {:?}): {} of {} \
         probes failed:\n{}",
        cell.doc,
        failed.len(),
        cell.probes.len() * per_probe,
        failed.join("\n")
    );
}

/// One case per cell, each named `cell_<state>_<operation>`.
macro_rules! cell_cases {
    ($($case:ident => $state:ident, $op:ident;)*) => {
        $(
            #[doc = concat!(
                "The cell ", stringify!($state), " × ", stringify!($op),
                " of the state × operation table (`shared::lease`'s module docs).",
            )]
            pub async fn $case(h: &dyn LeaseHarness) {
                run_cell(h, LeaseState::$state, Op::$op).await;
            }
        )*

        /// Every cell's case, by name.
        const CELL_CASES: &[(&str, LeaseState, Op)] =
            &[$((stringify!($case), LeaseState::$state, Op::$op)),*];
    };
}

cell_cases! {
    cell_available_acquire => Available, Acquire;
    cell_available_renew => Available, Renew;
    cell_available_change => Available, Change;
    cell_available_release => Available, Release;
    cell_available_break => Available, Break;
    cell_leased_acquire => Leased, Acquire;
    cell_leased_renew => Leased, Renew;
    cell_leased_change => Leased, Change;
    cell_leased_release => Leased, Release;
    cell_leased_break => Leased, Break;
    cell_expired_acquire => Expired, Acquire;
    cell_expired_renew => Expired, Renew;
    cell_expired_change => Expired, Change;
    cell_expired_release => Expired, Release;
    cell_expired_break => Expired, Break;
    cell_breaking_acquire => Breaking, Acquire;
    cell_breaking_renew => Breaking, Renew;
    cell_breaking_change => Breaking, Change;
    cell_breaking_release => Breaking, Release;
    cell_breaking_break => Breaking, Break;
    cell_broken_acquire => Broken, Acquire;
    cell_broken_renew => Broken, Renew;
    cell_broken_change => Broken, Change;
    cell_broken_release => Broken, Release;
    cell_broken_break => Broken, Break;
}

/// Every cell of the table has exactly one case, and `listed` (the cases a conformance
/// target runs) holds every one of them.
pub fn assert_every_cell_is_a_case(listed: &[&str]) {
    for row in &TABLE {
        for op in Op::ALL {
            let cases: Vec<&str> = CELL_CASES
                .iter()
                .filter(|(_, s, o)| *s == row.state && *o == op)
                .map(|(case, ..)| *case)
                .collect();
            assert_eq!(cases.len(), 1, "{} × {op}: cases {cases:?}", row.state);
            assert!(
                listed.contains(&cases[0]),
                "{} × {op}: the suite does not run {}",
                row.state,
                cases[0]
            );
        }
    }
    assert_eq!(CELL_CASES.len(), TABLE.len() * Op::ALL.len());
}

/// The source whose module docs hold the documented table.
const DOCUMENTED_IN: &str = include_str!("../../shared/src/lease/mod.rs");

/// The documented table's rows, cells trimmed: the `//! |` lines of `shared::lease`.
fn documented_table() -> Vec<Vec<String>> {
    DOCUMENTED_IN
        .lines()
        .filter_map(|line| line.strip_prefix("//!"))
        .map(str::trim)
        .filter(|line| line.starts_with('|'))
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_string())
                .collect()
        })
        .collect()
}

/// What a documented cell says about the calls naming one kind of id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Succeeds, leaving one of these states.
    Succeeds(&'static [LeaseState]),
    Lost(LostReason),
    Held(LeaseState),
}

/// One phrase of the documented table, in the cell `state` × `op`.
fn read_phrase(state: LeaseState, op: Op, phrase: &str) -> Option<Claim> {
    use LeaseState::{Available, Breaking, Broken, Leased};
    let succeeds = match op {
        Op::Release => &[Available][..],
        Op::Break => &[Breaking, Broken],
        Op::Acquire | Op::Renew | Op::Change => &[Leased],
    };
    Some(match phrase {
        "ok" | "ok (any id)" => Claim::Succeeds(succeeds),
        "broken" => Claim::Succeeds(&[Broken]),
        "breaking or broken" | "shorten only" => Claim::Succeeds(&[Breaking, Broken]),
        "mismatch" | "lost: mismatch" => Claim::Lost(LostReason::IdMismatch),
        "lost: not present" => Claim::Lost(LostReason::NotPresent),
        "lost: broken" => Claim::Lost(LostReason::Broken),
        "lost: breaking" => Claim::Lost(LostReason::Breaking),
        "held" => Claim::Held(state),
        held => Claim::Held(LeaseState::parse(
            held.strip_prefix("held (")?.strip_suffix(')')?,
        )?),
    })
}

/// What a documented cell says, by the kind of id a call names: `a / b` is `a` with the
/// holder's id and `b` with another; `x only, else y` and `ok, same id: …` likewise; any
/// other text is about the holder's id (an acquire's and a break's: about every call).
fn read_cell(state: LeaseState, op: Op, doc: &str) -> Result<Vec<(Naming, Claim)>, String> {
    let phrase = |p: &str| {
        read_phrase(state, op, p).ok_or_else(|| {
            format!(
                "{state} × {op}: the documented phrase {p:?} means nothing to the suite; teach \
                 `read_phrase` what it claims"
            )
        })
    };
    Ok(if let Some((holders, others)) = doc.split_once(" / ") {
        vec![
            (Naming::Holders, phrase(holders)?),
            (Naming::Anothers, phrase(others)?),
        ]
    } else if let Some(others) = doc.strip_prefix("same id only, else ") {
        vec![
            (Naming::Holders, phrase("ok")?),
            (Naming::Anothers, phrase(others)?),
            (Naming::NoId, phrase(others)?),
        ]
    } else if let Some(how) = doc.strip_prefix("ok, same id: ") {
        let resumes = match how {
            "resumes" => Claim::Succeeds(&[LeaseState::Leased]),
            _ => phrase(how)?,
        };
        vec![(Naming::Holders, resumes)]
    } else {
        let claim = phrase(doc)?;
        match op {
            Op::Acquire => vec![
                (Naming::NoId, claim),
                (Naming::Holders, claim),
                (Naming::Anothers, claim),
            ],
            Op::Break => vec![(Naming::NoId, claim)],
            Op::Renew | Op::Change | Op::Release => vec![(Naming::Holders, claim)],
        }
    })
}

/// Whether a probe does what a claim says.
fn keeps(probe: &Probe, claim: Claim) -> bool {
    match (claim, probe.expect) {
        (Claim::Succeeds(states), Expect::Succeeds(_)) => states.contains(&probe.after),
        (Claim::Lost(a), Expect::Lost(b)) => a == b,
        (Claim::Held(a), Expect::Held(b)) => a == b,
        _ => false,
    }
}

/// The suite's table is the documented one: the same rows, columns and text, and every
/// cell's probes do what its text says (with a probe for every kind of id the text speaks
/// of); every probe calls its column's operation, and a refused one leaves its row's state.
pub fn assert_table_is_documented() {
    let documented = documented_table();
    let mut headings = vec!["state"];
    headings.extend(Op::ALL.map(Op::heading));
    assert!(
        documented.len() == TABLE.len() + 2,
        "shared/src/lease/mod.rs documents a table of {} lines (heading and separator \
         included), the suite's has {} rows: {documented:?}",
        documented.len(),
        TABLE.len()
    );
    assert_eq!(
        documented[0], headings,
        "the documented table's columns are not the suite's"
    );
    assert!(
        documented[1]
            .iter()
            .all(|c| !c.is_empty() && c.chars().all(|c| c == '-' || c == ':')),
        "the documented table's second line is not a separator: {:?}",
        documented[1]
    );
    let mut wrong = Vec::new();
    for (row, line) in TABLE.iter().zip(&documented[2..]) {
        let state = row.state;
        if line.len() != 1 + Op::ALL.len() || line[0] != state.as_str() {
            wrong.push(format!(
                "the documented row {line:?} is not the suite's row {state}"
            ));
            continue;
        }
        for ((op, cell), doc) in Op::ALL.iter().zip(&row.cells).zip(&line[1..]) {
            if cell.doc != doc {
                wrong.push(format!(
                    "{state} × {op}: documented as {doc:?}, the suite's table says {:?}",
                    cell.doc
                ));
            }
            for probe in cell.probes {
                if probe.call.op() != *op {
                    wrong.push(format!("{state} × {op}: a probe calls {}", probe.call));
                }
                if !matches!(probe.expect, Expect::Succeeds(_)) && probe.after != state {
                    wrong.push(format!(
                        "{state} × {op}: {} is refused yet leaves the record {}",
                        probe.call, probe.after
                    ));
                }
            }
            let claims = match read_cell(state, *op, cell.doc) {
                Ok(claims) => claims,
                Err(e) => {
                    wrong.push(e);
                    continue;
                }
            };
            for (naming, claim) in claims {
                let probes: Vec<&Probe> = cell
                    .probes
                    .iter()
                    .filter(|p| p.call.naming() == naming)
                    .collect();
                if probes.is_empty() {
                    wrong.push(format!(
                        "{state} × {op}: documented as {:?}, yet no probe calls it with \
                         {naming:?}",
                        cell.doc
                    ));
                }
                for probe in probes.into_iter().filter(|p| !keeps(p, claim)) {
                    wrong.push(format!(
                        "{state} × {op}: documented as {:?}, yet the suite expects {} to \
                         be {} and leave it {}",
                        cell.doc, probe.call, probe.expect, probe.after
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the state × operation table of the suite and of shared/src/lease/mod.rs differ:\n{}",
        wrong.join("\n")
    );
}

// --- acquire ------------------------------------------------------------------------------

pub async fn acquire_leased_with_its_own_id_restarts_it(h: &dyn LeaseHarness) {
    let (name, id) = leased(h).await;
    h.advance(secs(10)).await;
    let got = h.store().acquire(&name, short(), Some(&id)).await.unwrap();
    assert_eq!(got, id);
    let rec = read(h, &name).await;
    assert_eq!(rec.state, LeaseState::Leased);
    // Restarted with the new duration.
    assert_duration(h, &rec, short());
    assert_remaining(h, &rec, Some(MIN_LEASE));
    // The new, shorter duration is the one that runs out.
    h.advance(MIN_LEASE).await;
    assert_state(h, &name, LeaseState::Expired).await;
}

pub async fn infinite_lease_never_expires(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, id) = leased_for(h, LeaseDuration::Infinite).await;
    h.advance(MAX_LEASE + secs(1)).await;
    let rec = read(h, &name).await;
    assert_eq!(rec.state, LeaseState::Leased);
    assert_duration(h, &rec, LeaseDuration::Infinite);
    assert_remaining(h, &rec, None);
    assert_held(
        s.acquire(&name, short(), None).await,
        &name,
        LeaseState::Leased,
    );
    s.renew(&name, &id).await.unwrap();
}

// --- renew --------------------------------------------------------------------------------

pub async fn renew_leased_restarts_the_duration(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, id) = leased_for(h, short()).await;
    h.advance(secs(10)).await;
    s.renew(&name, &id).await.unwrap();
    assert_remaining(h, &read(h, &name).await, Some(MIN_LEASE));
    // 20 s after the acquire: a 15 s lease lives only because it was renewed.
    h.advance(secs(10)).await;
    let rec = read(h, &name).await;
    assert_eq!(rec.state, LeaseState::Leased);
    assert_remaining(h, &rec, Some(secs(5)));
    assert_held(
        s.acquire(&name, short(), None).await,
        &name,
        LeaseState::Leased,
    );
    h.advance(secs(5)).await;
    assert_state(h, &name, LeaseState::Expired).await;
}

/// Also a probe of the table's expired × renew cell, kept as a case because the `blob:`
/// target excuses that whole cell (Azurite renews an expired lease under any id), and the
/// resume it gets right.
pub async fn renew_expired_untaken_resumes_the_lease(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, id) = expired(h).await;
    s.renew(&name, &id).await.unwrap();
    let rec = read(h, &name).await;
    assert_eq!(rec.state, LeaseState::Leased);
    assert_remaining(h, &rec, Some(MIN_LEASE));
    assert_held(
        s.acquire(&name, short(), None).await,
        &name,
        LeaseState::Leased,
    );
}

pub async fn renew_after_another_holder_acquired_is_lost(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, old) = expired(h).await;
    let new = h
        .open_another()
        .acquire(&name, short(), None)
        .await
        .unwrap();
    assert_lost(s.renew(&name, &old).await, &name, LostReason::IdMismatch);
    // Still lost once the new holder's lease has expired in turn: the record's id moved on.
    h.advance(MIN_LEASE).await;
    assert_lost(s.renew(&name, &old).await, &name, LostReason::IdMismatch);
    s.renew(&name, &new).await.unwrap();
}

// --- change -------------------------------------------------------------------------------

pub async fn change_leased_replaces_the_id_and_keeps_the_expiry(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, old) = leased_for(h, short()).await;
    h.advance(secs(5)).await;
    let proposed = LeaseId::random();
    let got = s.change(&name, &old, &proposed).await.unwrap();
    assert_eq!(got, proposed);
    let rec = read(h, &name).await;
    assert_eq!(rec.state, LeaseState::Leased);
    assert_remaining(h, &rec, Some(secs(10)));
    assert_lost(s.renew(&name, &old).await, &name, LostReason::IdMismatch);
    assert_lost(s.release(&name, &old).await, &name, LostReason::IdMismatch);
    // Change does not renew: the lease still ends 15 s after the acquire.
    h.advance(secs(10)).await;
    assert_state(h, &name, LeaseState::Expired).await;
    s.renew(&name, &proposed).await.unwrap();
}

pub async fn change_leased_to_its_current_id_succeeds(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, old) = leased(h).await;
    let proposed = LeaseId::random();
    s.change(&name, &old, &proposed).await.unwrap();
    // A retry whose first attempt landed.
    assert_eq!(s.change(&name, &old, &proposed).await.unwrap(), proposed);
    // Whatever the first id, asking for the id the lease already has succeeds.
    let unrelated = LeaseId::random();
    assert_eq!(
        s.change(&name, &unrelated, &proposed).await.unwrap(),
        proposed
    );
    s.renew(&name, &proposed).await.unwrap();
}

// --- release ------------------------------------------------------------------------------

/// The table's leased × release cell, and past it: a second release with the same id, after
/// another holder has acquired, finds that holder's lease.
pub async fn release_leased_makes_it_available_at_once(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, id) = leased(h).await;
    s.release(&name, &id).await.unwrap();
    let rec = read(h, &name).await;
    assert_eq!(rec.state, LeaseState::Available);
    assert_eq!(rec.remaining, None);
    let next = h
        .open_another()
        .acquire(&name, short(), None)
        .await
        .unwrap();
    assert_ne!(next, id);
    // Released twice: the second finds the next holder's lease.
    assert_lost(s.release(&name, &id).await, &name, LostReason::IdMismatch);
}

// --- break --------------------------------------------------------------------------------

pub async fn break_fixed_lease_by_default_waits_out_the_lease(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, id) = leased_for(h, short()).await;
    h.advance(secs(5)).await;
    let left = s.break_lease(&name, None).await.unwrap();
    assert_about(h, "time until acquirable", left, secs(10));
    let rec = read(h, &name).await;
    assert_eq!(rec.state, LeaseState::Breaking);
    assert_remaining(h, &rec, Some(secs(10)));
    assert_lost(s.renew(&name, &id).await, &name, LostReason::Broken);
    assert_held(
        s.acquire(&name, short(), None).await,
        &name,
        LeaseState::Breaking,
    );
    h.advance(secs(10)).await;
    assert_state(h, &name, LeaseState::Broken).await;
    assert_lost(s.renew(&name, &id).await, &name, LostReason::Broken);
    s.acquire(&name, short(), None).await.unwrap();
}

pub async fn break_infinite_lease_by_default_is_immediate(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, id) = leased_for(h, LeaseDuration::Infinite).await;
    assert_eq!(s.break_lease(&name, None).await.unwrap(), Duration::ZERO);
    assert_state(h, &name, LeaseState::Broken).await;
    assert_lost(s.renew(&name, &id).await, &name, LostReason::Broken);
    s.acquire(&name, short(), None).await.unwrap();
}

pub async fn break_with_a_period_locks_for_that_period(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, _) = leased(h).await;
    let left = s.break_lease(&name, period(secs(20))).await.unwrap();
    assert_about(h, "time until acquirable", left, secs(20));
    let rec = read(h, &name).await;
    assert_eq!(rec.state, LeaseState::Breaking);
    assert_remaining(h, &rec, Some(secs(20)));
    h.advance(secs(10)).await;
    assert_held(
        s.acquire(&name, short(), None).await,
        &name,
        LeaseState::Breaking,
    );
    h.advance(secs(10)).await;
    assert_state(h, &name, LeaseState::Broken).await;
    s.acquire(&name, short(), None).await.unwrap();
}

pub async fn break_period_is_capped_by_the_rest_of_the_lease(h: &dyn LeaseHarness) {
    let (name, _) = leased_for(h, short()).await;
    let left = h
        .store()
        .break_lease(&name, period(MAX_LEASE))
        .await
        .unwrap();
    assert_about(h, "time until acquirable", left, MIN_LEASE);
    h.advance(MIN_LEASE).await;
    assert_state(h, &name, LeaseState::Broken).await;
}

pub async fn break_with_zero_period_is_immediate(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, id) = leased(h).await;
    assert_eq!(
        s.break_lease(&name, period(Duration::ZERO)).await.unwrap(),
        Duration::ZERO
    );
    let rec = read(h, &name).await;
    assert_eq!(rec.state, LeaseState::Broken);
    assert_eq!(rec.remaining, None);
    assert_lost(s.renew(&name, &id).await, &name, LostReason::Broken);
    s.acquire(&name, short(), None).await.unwrap();
}

pub async fn break_breaking_can_only_shorten(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, _) = breaking(h).await;
    let left = s.break_lease(&name, period(MAX_LEASE)).await.unwrap();
    assert_about(h, "a longer period is ignored", left, BREAK_PERIOD);
    let left = s.break_lease(&name, None).await.unwrap();
    assert_about(h, "no period keeps the break", left, BREAK_PERIOD);
    let left = s.break_lease(&name, period(secs(20))).await.unwrap();
    assert_about(h, "a shorter period shortens", left, secs(20));
    let rec = read(h, &name).await;
    assert_eq!(rec.state, LeaseState::Breaking);
    assert_remaining(h, &rec, Some(secs(20)));
    let left = s.break_lease(&name, period(Duration::ZERO)).await.unwrap();
    assert_eq!(left, Duration::ZERO);
    assert_state(h, &name, LeaseState::Broken).await;
}

/// A break period is 0-60 whole seconds, as Azure's `x-ms-lease-break-period`: the one rule
/// is [`BreakPeriod`]'s, which refuses anything else before any store sees it, so no store
/// can take a period another refuses.
pub async fn break_period_outside_0_to_60_whole_seconds_is_invalid(h: &dyn LeaseHarness) {
    for bad in [
        secs(61),
        secs(3600),
        Duration::from_millis(1500),
        Duration::from_millis(60_001),
        Duration::from_nanos(1),
    ] {
        assert_invalid(BreakPeriod::new(bad));
    }
    for bad in [61, 3600, u64::MAX] {
        assert_invalid(BreakPeriod::from_secs(bad));
    }
    for bad in ["61", "-1", "1.5", "", " 5", "5s", "ten"] {
        assert_invalid(bad.parse::<BreakPeriod>());
    }
    // The edges are periods.
    assert_eq!(BreakPeriod::from_secs(0).unwrap(), BreakPeriod::ZERO);
    assert_eq!(
        BreakPeriod::new(MAX_BREAK_PERIOD).unwrap(),
        BreakPeriod::MAX
    );
    assert_eq!("60".parse::<BreakPeriod>().unwrap(), BreakPeriod::MAX);
    assert_eq!(BreakPeriod::MAX.as_duration(), secs(60));
    // Nothing above touched the store.
    let (name, id) = leased(h).await;
    h.store().renew(&name, &id).await.unwrap();
}

/// The edges of the range reach the store as they are: 60 s locks an infinite lease (no
/// rest of a lease to cap it) for the full 60 s, and 0 s then breaks it at once.
pub async fn break_period_edges_0_and_60_seconds_are_honoured(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, id) = leased_for(h, LeaseDuration::Infinite).await;
    let left = s.break_lease(&name, Some(BreakPeriod::MAX)).await.unwrap();
    assert_about(h, "the longest break period", left, MAX_BREAK_PERIOD);
    let rec = read(h, &name).await;
    assert_eq!(rec.state, LeaseState::Breaking);
    assert_remaining(h, &rec, Some(MAX_BREAK_PERIOD));
    assert_lost(s.renew(&name, &id).await, &name, LostReason::Broken);
    assert_eq!(
        s.break_lease(&name, Some(BreakPeriod::ZERO)).await.unwrap(),
        Duration::ZERO
    );
    assert_state(h, &name, LeaseState::Broken).await;
    s.acquire(&name, short(), None).await.unwrap();
}

// --- metadata -----------------------------------------------------------------------------

pub async fn metadata_written_under_the_lease_is_read_back(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, id) = leased(h).await;
    let md = metadata(&[
        (meta::HOLDER_HOST, "vm-1"),
        (meta::HOLDER_PID, "4242"),
        (meta::EPOCH, "7"),
    ]);
    s.write_metadata(&name, &id, &md).await.unwrap();
    let rec = read(h, &name).await;
    assert_eq!(rec.metadata, md);
    assert_eq!(rec.epoch(), 7);
    // A write replaces the metadata; it does not merge.
    let md2 = metadata(&[(meta::EPOCH, "8")]);
    s.write_metadata(&name, &id, &md2).await.unwrap();
    assert_eq!(read(h, &name).await.metadata, md2);
    assert_eq!(
        h.open_another().read(&name).await.unwrap().metadata,
        md2,
        "another handle sees it"
    );
}

pub async fn metadata_with_another_id_is_lost(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, id) = leased(h).await;
    s.write_metadata(&name, &id, &metadata(&[(meta::EPOCH, "1")]))
        .await
        .unwrap();
    assert_lost(
        s.write_metadata(&name, &LeaseId::random(), &metadata(&[(meta::EPOCH, "99")]))
            .await,
        &name,
        LostReason::IdMismatch,
    );
    assert_eq!(
        read(h, &name).await.epoch(),
        1,
        "the refused write changed nothing"
    );
}

pub async fn metadata_while_breaking_needs_the_holders_id(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, id) = breaking(h).await;
    s.write_metadata(&name, &id, &metadata(&[(meta::EPOCH, "3")]))
        .await
        .unwrap();
    assert_lost(
        s.write_metadata(&name, &LeaseId::random(), &metadata(&[]))
            .await,
        &name,
        LostReason::IdMismatch,
    );
    assert_eq!(read(h, &name).await.epoch(), 3);
}

pub async fn metadata_without_a_live_lease_is_lost(h: &dyn LeaseHarness) {
    let s = h.store();
    let md = metadata(&[(meta::EPOCH, "5")]);
    let never = record(h).await;
    assert_lost(
        s.write_metadata(&never, &LeaseId::random(), &md).await,
        &never,
        LostReason::NotPresent,
    );
    let (rel, rel_id) = released(h).await;
    assert_lost(
        s.write_metadata(&rel, &rel_id, &md).await,
        &rel,
        LostReason::NotPresent,
    );
    let (exp, exp_id) = expired(h).await;
    assert_lost(
        s.write_metadata(&exp, &exp_id, &md).await,
        &exp,
        LostReason::NotPresent,
    );
    let (brk, brk_id) = broken(h).await;
    assert_lost(
        s.write_metadata(&brk, &brk_id, &md).await,
        &brk,
        LostReason::NotPresent,
    );
    for name in [&never, &rel, &exp, &brk] {
        assert_eq!(read(h, name).await.epoch(), 0, "{name} kept no metadata");
    }
}

pub async fn metadata_survives_release_and_the_next_holder_sees_it(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, first) = leased(h).await;
    assert_eq!(read(h, &name).await.epoch(), 0, "never written");
    let md = metadata(&[(meta::HOLDER_HOST, "vm-1"), (meta::EPOCH, "1")]);
    s.write_metadata(&name, &first, &md).await.unwrap();
    s.release(&name, &first).await.unwrap();
    assert_eq!(read(h, &name).await.metadata, md, "kept by the release");

    let other = h.open_another();
    let second = other.acquire(&name, short(), None).await.unwrap();
    let seen = other.read(&name).await.unwrap();
    assert_eq!(seen.metadata, md, "kept by the acquire");
    let next = metadata(&[
        (meta::HOLDER_HOST, "vm-2"),
        (meta::EPOCH, &(seen.epoch() + 1).to_string()),
    ]);
    other.write_metadata(&name, &second, &next).await.unwrap();
    assert_eq!(read(h, &name).await.epoch(), 2);
    // The first holder cannot overwrite it any more.
    assert_lost(
        s.write_metadata(&name, &first, &md).await,
        &name,
        LostReason::IdMismatch,
    );
    // Nor does expiry lose it.
    h.advance(MIN_LEASE).await;
    let rec = read(h, &name).await;
    assert_eq!(rec.state, LeaseState::Expired);
    assert_eq!(rec.metadata, next);
}

/// `md`, as written, is what every way of reading the record gives back: a read, a read on
/// another handle, and the list.
async fn assert_reads_back(h: &dyn LeaseHarness, name: &Name, md: &Metadata) {
    assert_eq!(&read(h, name).await.metadata, md, "read back");
    let other = h.open_another();
    assert_eq!(
        &other.read(name).await.unwrap().metadata,
        md,
        "read back on another handle"
    );
    let list = other.list().await.unwrap();
    let listed = list.iter().find(|r| &r.identity == name).unwrap();
    assert_eq!(&listed.metadata, md, "listed");
}

/// The metadata rule is [`Metadata`]'s, applied before any store sees the metadata, so
/// that what one store takes every store takes, and Blob Storage does: names are
/// lower-case identifiers starting with a letter.
pub async fn metadata_with_a_bad_name_is_invalid(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, id) = leased(h).await;
    let before = metadata(&[(meta::EPOCH, "1")]);
    for bad in [
        "holder-host",
        "9lives",
        "has space",
        "",
        "caf\u{e9}",
        "a.b",
        "x$",
        "Holder_host",
        "HOLDER",
        "_x",
        "_",
    ] {
        assert_invalid(try_metadata(&[(bad, "x")]));
        let mut md = before.clone();
        assert_invalid(md.insert(bad, "x"));
        assert_eq!(md, before, "a refused insert of {bad:?} changed nothing");
    }
    // The edges of the rule: one letter, digits and underscores after the first, a
    // trailing underscore. Everything the rule takes reads back the same from every store.
    let md = metadata(&[("x", "a"), ("x9", "b"), ("a_", "c"), ("holder_host_2", "d")]);
    s.write_metadata(&name, &id, &md).await.unwrap();
    assert_reads_back(h, &name, &md).await;
}

/// Names that differ only in case would be one HTTP header: an upper-case name is invalid
/// (so no two names can collide that way), as is a name given twice. Replacing a name's
/// value is not a repeat.
pub async fn metadata_names_are_lower_case_and_given_once(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, id) = leased(h).await;
    assert_invalid(try_metadata(&[
        ("holder_host", "vm-1"),
        ("Holder_Host", "vm-2"),
    ]));
    assert_invalid(try_metadata(&[(meta::EPOCH, "1"), (meta::EPOCH, "2")]));
    let mut md = metadata(&[("holder_host", "vm-1")]);
    assert_invalid(md.insert("HOLDER_HOST", "vm-2"));
    assert_eq!(md, metadata(&[("holder_host", "vm-1")]));
    assert_eq!(
        md.insert("holder_host", "vm-2").unwrap().as_deref(),
        Some("vm-1")
    );
    // Names that differ in more than case stand side by side.
    md.insert("holder_hosts", "vm-3").unwrap();
    assert_eq!(
        md,
        metadata(&[("holder_host", "vm-2"), ("holder_hosts", "vm-3")])
    );
    s.write_metadata(&name, &id, &md).await.unwrap();
    assert_reads_back(h, &name, &md).await;
}

/// Values travel as HTTP header values: printable ASCII, no leading or trailing space.
pub async fn metadata_values_must_be_printable_ascii_without_edge_spaces(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, id) = leased(h).await;
    for bad in [
        "caf\u{e9}",
        "a\nb",
        "tab\there",
        "nul\0",
        "del\u{7f}",
        " lead",
        "trail ",
        " ",
        "  both  ",
    ] {
        assert_invalid(try_metadata(&[("note", bad)]));
        let mut md = metadata(&[(meta::EPOCH, "1")]);
        assert_invalid(md.insert("note", bad));
        assert_eq!(md, metadata(&[(meta::EPOCH, "1")]));
    }
    // Inner spaces, every printable character, and the shortest values are fine.
    let md = metadata(&[
        ("note", "a b ~!@#$%^&*()[]{}<>?/|\\'\";:,.=+-_`"),
        ("spaced", "a  b"),
        ("one", "x"),
        ("empty", ""),
    ]);
    s.write_metadata(&name, &id, &md).await.unwrap();
    assert_reads_back(h, &name, &md).await;
}

/// At most 8 KiB of names and values together, as on Blob Storage; exactly 8 KiB is fine.
pub async fn metadata_over_8_kib_is_invalid(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, id) = leased(h).await;
    let limit = MAX_METADATA_BYTES;
    let over = "x".repeat(limit - "big".len() + 1);
    assert_invalid(try_metadata(&[("big", &over)]));
    // An insert that would pass the limit is refused, one that reaches it is not.
    let half = "y".repeat(limit / 2 - "a".len());
    let mut md = metadata(&[("a", &half)]);
    assert_invalid(md.insert("b", format!("{half}y")));
    assert_eq!(md, metadata(&[("a", &half)]));
    md.insert("b", half.as_str()).unwrap();
    let total: usize = md.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert_eq!(total, limit);
    s.write_metadata(&name, &id, &md).await.unwrap();
    assert_reads_back(h, &name, &md).await;
    // One value of exactly the limit, with its name.
    let exact = metadata(&[("big", &"z".repeat(limit - "big".len()))]);
    s.write_metadata(&name, &id, &exact).await.unwrap();
    assert_reads_back(h, &name, &exact).await;
}

// --- records ------------------------------------------------------------------------------

pub async fn new_record_is_available_and_empty(h: &dyn LeaseHarness) {
    let name = record(h).await;
    let rec = read(h, &name).await;
    assert_eq!(
        rec,
        LeaseRecord {
            identity: name.clone(),
            state: LeaseState::Available,
            duration: None,
            remaining: None,
            metadata: Metadata::new(),
        }
    );
    assert_eq!(rec.epoch(), 0);
}

pub async fn create_record_is_idempotent(h: &dyn LeaseHarness) {
    let s = h.store();
    let (name, id) = leased(h).await;
    s.write_metadata(&name, &id, &metadata(&[(meta::EPOCH, "4")]))
        .await
        .unwrap();
    for store in [s.clone(), h.open_another()] {
        assert_eq!(
            store.create_record(&name).await.unwrap(),
            RecordCreated::AlreadyExisted
        );
    }
    // Finding the record changed nothing about its lease or metadata.
    let rec = read(h, &name).await;
    assert_eq!(rec.state, LeaseState::Leased);
    assert_eq!(rec.epoch(), 4);
    s.renew(&name, &id).await.unwrap();
}

pub async fn unknown_record_is_not_found(h: &dyn LeaseHarness) {
    let s = h.store();
    let name = h.new_identity();
    let id = LeaseId::random();
    assert_not_found(s.read(&name).await, &name);
    assert_not_found(s.acquire(&name, short(), None).await, &name);
    assert_not_found(
        s.acquire(&name, LeaseDuration::Infinite, Some(&id)).await,
        &name,
    );
    assert_not_found(s.renew(&name, &id).await, &name);
    assert_not_found(s.change(&name, &id, &LeaseId::random()).await, &name);
    assert_not_found(s.release(&name, &id).await, &name);
    assert_not_found(s.break_lease(&name, None).await, &name);
    assert_not_found(s.write_metadata(&name, &id, &Metadata::new()).await, &name);
    // Nothing above created it.
    assert_not_found(s.read(&name).await, &name);
    assert!(s.list().await.unwrap().iter().all(|r| r.identity != name));
}

pub async fn list_returns_every_record_with_its_state(h: &dyn LeaseHarness) {
    // Expired first: it is the one set-up that waits, and the others must not age with it.
    let (expired, _) = expired(h).await;
    let available = record(h).await;
    let (leased, _) = leased(h).await;
    let (breaking, _) = breaking(h).await;
    let (broken, _) = broken(h).await;
    let (released, _) = released(h).await;
    let want = [
        (&expired, LeaseState::Expired),
        (&available, LeaseState::Available),
        (&leased, LeaseState::Leased),
        (&breaking, LeaseState::Breaking),
        (&broken, LeaseState::Broken),
        (&released, LeaseState::Available),
    ];
    for store in [h.store(), h.open_another()] {
        let list = store.list().await.unwrap();
        let names: Vec<&Name> = list.iter().map(|r| &r.identity).collect();
        assert!(
            names.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates: {names:?}"
        );
        for (name, state) in want {
            let rec = list
                .iter()
                .find(|r| &r.identity == name)
                .unwrap_or_else(|| panic!("{name} missing from the list"));
            assert_eq!(rec.state, state, "{name}");
            let alone = read(h, name).await;
            if h.exact_time() {
                assert_eq!(rec, &alone, "list and read agree on {name}");
            } else {
                assert_eq!(
                    (&rec.duration, &rec.metadata),
                    (&alone.duration, &alone.metadata),
                    "list and read agree on {name}"
                );
            }
        }
    }
}

pub async fn invalid_requests_are_rejected(h: &dyn LeaseHarness) {
    let s = h.store();
    for n in [0, 14, 61, 3600] {
        assert_invalid(LeaseDuration::from_secs(n));
    }
    assert_invalid(LeaseDuration::fixed(Duration::from_millis(15_500)));
    for bad in [
        "",
        "not-a-guid",
        "0f8fad5b-d9cb-469f-a165-70867728950",
        "0f8fad5b_d9cb_469f_a165_70867728950e",
    ] {
        assert_invalid(LeaseId::parse(bad));
    }
    // The variant is public, so a bad fixed duration can reach the store: it refuses it.
    let name = record(h).await;
    for bad in [
        Duration::from_secs(5),
        Duration::from_secs(61),
        Duration::from_millis(15_500),
    ] {
        assert_invalid(s.acquire(&name, LeaseDuration::Fixed(bad), None).await);
    }
    assert_state(h, &name, LeaseState::Available).await;
    assert_invalid(BreakPeriod::from_secs(61));
    assert_invalid(try_metadata(&[("bad-name", "x")]));
}

pub async fn handles_see_each_others_writes(h: &dyn LeaseHarness) {
    let (a, b) = (h.store(), h.open_another());
    let name = h.new_identity();
    assert_eq!(
        a.create_record(&name).await.unwrap(),
        RecordCreated::Created
    );
    assert_eq!(
        b.create_record(&name).await.unwrap(),
        RecordCreated::AlreadyExisted
    );
    let id = b.acquire(&name, long(), None).await.unwrap();
    assert_eq!(a.read(&name).await.unwrap().state, LeaseState::Leased);
    assert_held(
        a.acquire(&name, long(), None).await,
        &name,
        LeaseState::Leased,
    );
    a.release(&name, &id).await.unwrap();
    assert_eq!(b.read(&name).await.unwrap().state, LeaseState::Available);
}

// --- races --------------------------------------------------------------------------------

/// What one racer does in one round.
#[derive(Debug, Clone)]
enum RaceOp {
    Acquire,
    Renew(LeaseId),
}

/// One racer's result: the lease id it won, or `None` for a successful renew.
type RaceResult = Result<Option<LeaseId>, LeaseError>;

/// Runs `plan(racer, round)` for every racer and round on its own OS thread, own runtime
/// and own store handle; a barrier starts each round on every thread at once. Returns the
/// results by round, then racer.
async fn race(
    handles: Vec<Arc<dyn LeaseStore>>,
    names: Vec<Name>,
    plan: impl Fn(usize, usize) -> RaceOp + Send + Sync + 'static,
) -> Vec<Vec<RaceResult>> {
    let rounds = names.len();
    let by_racer = tokio::task::spawn_blocking(move || {
        let barrier = Barrier::new(handles.len());
        std::thread::scope(|scope| {
            let threads: Vec<_> = handles
                .iter()
                .enumerate()
                .map(|(racer, store)| {
                    let (barrier, names, plan) = (&barrier, &names, &plan);
                    scope.spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("a runtime per racer");
                        names
                            .iter()
                            .enumerate()
                            .map(|(round, name)| {
                                let op = plan(racer, round);
                                barrier.wait();
                                rt.block_on(async {
                                    match op {
                                        RaceOp::Acquire => {
                                            store.acquire(name, long(), None).await.map(Some)
                                        }
                                        RaceOp::Renew(id) => {
                                            store.renew(name, &id).await.map(|()| None)
                                        }
                                    }
                                })
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("a racer panicked"))
                .collect::<Vec<_>>()
        })
    })
    .await
    .expect("the race task panicked");
    let mut by_racer: Vec<_> = by_racer.into_iter().map(Vec::into_iter).collect();
    (0..rounds)
        .map(|_| {
            by_racer
                .iter_mut()
                .map(|r| r.next().expect("a result per round"))
                .collect()
        })
        .collect()
}

fn racers(h: &dyn LeaseHarness) -> Vec<Arc<dyn LeaseStore>> {
    (0..RACERS).map(|_| h.open_another()).collect()
}

/// Checks that exactly one acquirer won the round and every other was told the record is
/// leased; returns the winner's lease id.
#[track_caller]
fn one_winner(round: usize, name: &Name, results: &[RaceResult]) -> LeaseId {
    let mut winners = Vec::new();
    for (racer, result) in results.iter().enumerate() {
        match result {
            Ok(Some(id)) => winners.push(id.clone()),
            Err(LeaseError::HeldByOther {
                identity,
                state: LeaseState::Leased,
            }) if identity == name => {}
            other => panic!("round {round} ({name}), racer {racer}: unexpected {other:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "round {round} ({name}): {} winners: {results:?}",
        winners.len()
    );
    winners.remove(0)
}

pub async fn race_to_acquire_has_one_winner_per_round(h: &dyn LeaseHarness) {
    let mut names = Vec::new();
    for _ in 0..RACE_ROUNDS {
        names.push(record(h).await);
    }
    let results = race(racers(h), names.clone(), |_, _| RaceOp::Acquire).await;
    for (round, (name, results)) in names.iter().zip(&results).enumerate() {
        let winner = one_winner(round, name, results);
        // The winner's id is the one the store holds.
        h.store().renew(name, &winner).await.unwrap();
    }
}

pub async fn race_to_take_over_expired_leases_has_one_winner_per_round(h: &dyn LeaseHarness) {
    let mut names = Vec::new();
    let mut old = Vec::new();
    for _ in 0..EXPIRY_RACE_ROUNDS {
        let name = record(h).await;
        old.push(h.store().acquire(&name, short(), None).await.unwrap());
        names.push(name);
    }
    h.advance(MIN_LEASE).await;
    let results = race(racers(h), names.clone(), |_, _| RaceOp::Acquire).await;
    for (round, (name, results)) in names.iter().zip(&results).enumerate() {
        let winner = one_winner(round, name, results);
        h.store().renew(name, &winner).await.unwrap();
        assert_lost(
            h.store().renew(name, &old[round]).await,
            name,
            LostReason::IdMismatch,
        );
    }
}

/// The daemon's hazard: an old holder renews its expired lease at the instant standbys try
/// to take it over. Either the renew wins and every acquire is refused, or the renew is
/// lost and exactly one acquirer wins; never both.
pub async fn race_renew_against_takeover_has_one_holder(h: &dyn LeaseHarness) {
    let mut names = Vec::new();
    let mut old = Vec::new();
    for _ in 0..EXPIRY_RACE_ROUNDS {
        let name = record(h).await;
        old.push(h.store().acquire(&name, short(), None).await.unwrap());
        names.push(name);
    }
    h.advance(MIN_LEASE).await;
    let ids = old.clone();
    let results = race(racers(h), names.clone(), move |racer, round| {
        if racer == 0 {
            RaceOp::Renew(ids[round].clone())
        } else {
            RaceOp::Acquire
        }
    })
    .await;
    for (round, (name, results)) in names.iter().zip(&results).enumerate() {
        let (renew, acquires) = results.split_first().expect("racers");
        match renew {
            Ok(None) => {
                for (racer, r) in acquires.iter().enumerate() {
                    assert!(
                        matches!(
                            r,
                            Err(LeaseError::HeldByOther {
                                state: LeaseState::Leased,
                                ..
                            })
                        ),
                        "round {round} ({name}): the renew won, yet acquirer {} got {r:?}",
                        racer + 1
                    );
                }
                h.store().renew(name, &old[round]).await.unwrap();
            }
            Err(LeaseError::Lost {
                reason: LostReason::IdMismatch,
                identity,
            }) if identity == name => {
                let winner = one_winner(round, name, acquires);
                h.store().renew(name, &winner).await.unwrap();
            }
            other => panic!("round {round} ({name}): renew got {other:?}"),
        }
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each with a fresh harness from
/// `$harness` (an expression, evaluated inside the async test, so it may `.await`).
#[macro_export]
macro_rules! lease_conformance_suite {
    (concurrent, setup: $setup:expr, harness: |$shared:ident| $make:expr,
     deviations: [$($dev:ident),* $(,)?]) => {
        $crate::lease_conformance_suite!(@list [concurrent $setup; $shared; $make; [$($dev),*]]);
    };
    ($harness:expr) => {
        $crate::lease_conformance_suite!(@list [per_test $harness]);
    };
    (@list $mode:tt) => {
        $crate::lease_conformance_suite!(@cases $mode;
            cell_available_acquire,
            cell_available_renew,
            cell_available_change,
            cell_available_release,
            cell_available_break,
            cell_leased_acquire,
            cell_leased_renew,
            cell_leased_change,
            cell_leased_release,
            cell_leased_break,
            cell_expired_acquire,
            cell_expired_renew,
            cell_expired_change,
            cell_expired_release,
            cell_expired_break,
            cell_breaking_acquire,
            cell_breaking_renew,
            cell_breaking_change,
            cell_breaking_release,
            cell_breaking_break,
            cell_broken_acquire,
            cell_broken_renew,
            cell_broken_change,
            cell_broken_release,
            cell_broken_break,
            acquire_leased_with_its_own_id_restarts_it,
            infinite_lease_never_expires,
            renew_leased_restarts_the_duration,
            renew_expired_untaken_resumes_the_lease,
            renew_after_another_holder_acquired_is_lost,
            change_leased_replaces_the_id_and_keeps_the_expiry,
            change_leased_to_its_current_id_succeeds,
            release_leased_makes_it_available_at_once,
            break_fixed_lease_by_default_waits_out_the_lease,
            break_infinite_lease_by_default_is_immediate,
            break_with_a_period_locks_for_that_period,
            break_period_is_capped_by_the_rest_of_the_lease,
            break_with_zero_period_is_immediate,
            break_breaking_can_only_shorten,
            break_period_outside_0_to_60_whole_seconds_is_invalid,
            break_period_edges_0_and_60_seconds_are_honoured,
            metadata_written_under_the_lease_is_read_back,
            metadata_with_another_id_is_lost,
            metadata_while_breaking_needs_the_holders_id,
            metadata_without_a_live_lease_is_lost,
            metadata_survives_release_and_the_next_holder_sees_it,
            metadata_with_a_bad_name_is_invalid,
            metadata_names_are_lower_case_and_given_once,
            metadata_values_must_be_printable_ascii_without_edge_spaces,
            metadata_over_8_kib_is_invalid,
            new_record_is_available_and_empty,
            create_record_is_idempotent,
            unknown_record_is_not_found,
            list_returns_every_record_with_its_state,
            invalid_requests_are_rejected,
            handles_see_each_others_writes,
            race_to_acquire_has_one_winner_per_round,
            race_to_take_over_expired_leases_has_one_winner_per_round,
            race_renew_against_takeover_has_one_holder,
        );
    };
    (@cases [concurrent $setup:expr; $shared:ident; $make:expr; [$($dev:ident),*]];
     $($case:ident),* $(,)?) => {
        /// The shared lease conformance suite (`integration_tests::lease_conformance`), every
        /// case at once in one test: for a real service, where the cases mostly wait out
        /// leases, one shared `setup` (say, one emulator) and a harness per case from it.
        ///
        /// `deviations` names the cases where the service itself departs from Azure's
        /// documented semantics (an emulator's bug): those must still fail, so that a fixed
        /// emulator is noticed and the case rejoins the suite.
        mod lease_conformance {
            #[allow(unused_imports)]
            use super::*;

            /// The suite's state × operation table is the one `shared::lease` documents.
            #[test]
            fn the_state_operation_table_is_the_documented_one() {
                $crate::lease_conformance::assert_table_is_documented();
            }

            /// This target runs a case for every cell of the table.
            #[test]
            fn every_cell_of_the_state_operation_table_is_a_case() {
                $crate::lease_conformance::assert_every_cell_is_a_case(&[$(stringify!($case)),*]);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn every_case_concurrently() {
                let shared = std::sync::Arc::new($setup);
                let mut tasks = Vec::new();
                $(
                    {
                        let $shared = shared.clone();
                        tasks.push((
                            stringify!($case),
                            tokio::spawn(async move {
                                let harness = $make;
                                $crate::lease_conformance::$case(&harness).await;
                            }),
                        ));
                    }
                )*
                let total = tasks.len();
                let deviations: &[&str] = &[$(stringify!($dev)),*];
                for d in deviations {
                    assert!(
                        tasks.iter().any(|(case, _)| case == d),
                        "deviation {d} names no conformance case"
                    );
                }
                let mut failed = Vec::new();
                for (case, task) in tasks {
                    let outcome = task.await;
                    if deviations.contains(&case) {
                        if outcome.is_ok() {
                            failed.push(format!(
                                "{case}: passes now, so the service no longer deviates; remove it from `deviations`"
                            ));
                        }
                        continue;
                    }
                    if let Err(e) = outcome {
                        let why = match e.try_into_panic() {
                            Ok(p) => p
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_else(|| "a panic without a message".into()),
                            Err(e) => e.to_string(),
                        };
                        failed.push(format!("{case}: {why}"));
                    }
                }
                assert!(
                    failed.is_empty(),
                    "{} of {total} conformance cases failed:\n{}",
                    failed.len(),
                    failed.join("\n")
                );
                drop(shared);
            }
        }
    };
    (@cases [per_test $harness:expr]; $($case:ident),* $(,)?) => {
        /// The shared lease conformance suite (`integration_tests::lease_conformance`).
        mod lease_conformance {
            #[allow(unused_imports)]
            use super::*;

            /// The suite's state × operation table is the one `shared::lease` documents.
            #[test]
            fn the_state_operation_table_is_the_documented_one() {
                $crate::lease_conformance::assert_table_is_documented();
            }

            /// This target runs a case for every cell of the table.
            #[test]
            fn every_cell_of_the_state_operation_table_is_a_case() {
                $crate::lease_conformance::assert_every_cell_is_a_case(&[$(stringify!($case)),*]);
            }
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let harness = $harness;
                    $crate::lease_conformance::$case(&harness).await;
                }
            )*
        }
    };
}
