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

/// The ticket of the machine's current hand-off (a ticket nothing uses when it has none).
fn run(m: &Machine) -> Ticket {
    match m.state() {
        State::Holding { run, .. } => run.ticket,
        _ => Ticket(u64::MAX),
    }
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
            free_in: Vec::new(),
        },
    );
    assert_eq!(tried(&a), ["m0-v1"]);
    m.handle(t(sent_ms + 20), acquired(ticket, "m0-v1", sent_ms));
    let lease = m.state().lease().cloned().unwrap();
    // The record's epoch is read once: the lease is number 8.
    let a = m.handle(
        t(sent_ms + 25),
        Event::EpochRead {
            ticket,
            record_epoch: Some(7),
        },
    );
    assert_eq!(
        a[0],
        Action::WriteMetadata {
            lease: lease.clone(),
            epoch: 8
        }
    );
    (m, lease)
}

/// The quarantine of `lease` ends at `ms`: the key is handed over.
fn quarantine_done(m: &mut Machine, lease: &Lease, ms: u64) -> Vec<Action> {
    m.handle(
        t(ms),
        Event::QuarantineDone {
            ticket: lease.ticket,
        },
    )
}

/// A machine Holding m0-v1 with the client running; t_ok = `sent_ms`.
fn holding_with(p: Params, sent_ms: u64) -> (Machine, Lease) {
    let (mut m, lease) = quarantined(p, sent_ms);
    let tk = lease.ticket;
    m.handle(t(sent_ms + 30), Event::QuarantineDone { ticket: tk });
    m.handle(t(sent_ms + 40), Event::ClientStarted { run: run(&m) });
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

/// The pool is the machine's decision: of what the store lists, only the identities whose
/// name starts with the pool prefix are ever tried.
#[test]
fn only_identities_of_the_pool_are_tried() {
    let mut p = params();
    p.pool = "m1-".into();
    let (mut m, a) = Machine::start(p, t(0));
    let ticket = list_ticket(&a);
    let listed = |ticket| Event::Listed {
        ticket,
        available: vec![name("m0-v1"), name("m1-v1"), name("m10-v1")],
        free_in: Vec::new(),
    };
    let a = m.handle(t(10), listed(ticket));
    assert_eq!(tried(&a), ["m1-v1"]);
    let a = m.handle(
        t(20),
        Event::AcquireResult {
            ticket,
            identity: name("m1-v1"),
            outcome: AcquireOutcome::HeldByOther,
        },
    );
    // Nothing else of the pool: a standby poll, not another member's identity.
    assert!(tried(&a).is_empty(), "{a:?}");
    // Without a pool, every listed identity is a candidate.
    let (mut m, a) = Machine::start(params(), t(0));
    let ticket = list_ticket(&a);
    let a = m.handle(t(10), listed(ticket));
    assert_eq!(tried(&a).len(), 1);
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
            free_in: Vec::new(),
        },
    );
    let first = tried(&a)[0].to_string();
    let mut seen = vec![first.clone()];
    let mut current = first;
    // No record, twice: each moves to the next one on the list.
    for i in 0..3u64 {
        let a = m.handle(
            t(20 + i),
            Event::AcquireResult {
                ticket,
                identity: name(&current),
                outcome: AcquireOutcome::NotFound,
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
fn a_lost_race_lists_again_at_once_a_few_times_then_walks_the_list() {
    let (mut m, a) = Machine::start(params(), t(0));
    let mut ticket = list_ticket(&a);
    let available: Vec<Name> = (0..6).map(|i| name(&format!("m0-v{i}"))).collect();
    // Three lost races: each time the node lists again at once (a fresh view skips
    // whatever the winners took) instead of trying the next name of a stale list.
    for i in 0..3u64 {
        let a = m.handle(
            t(10 + 2 * i),
            Event::Listed {
                ticket,
                available: available.clone(),
                free_in: Vec::new(),
            },
        );
        let first = tried(&a)[0];
        let a = m.handle(
            t(11 + 2 * i),
            Event::AcquireResult {
                ticket,
                identity: name(first),
                outcome: AcquireOutcome::HeldByOther,
            },
        );
        let again = list_ticket(&a);
        assert_ne!(again, ticket);
        assert_eq!(a, vec![Action::ListCandidates { ticket: again }]);
        ticket = again;
    }
    // The fourth in a row walks the list: a store that lists a record as free but
    // refuses it cannot keep the node listing in a loop.
    let a = m.handle(
        t(20),
        Event::Listed {
            ticket,
            available: available.clone(),
            free_in: Vec::new(),
        },
    );
    let first = tried(&a)[0];
    let a = m.handle(
        t(21),
        Event::AcquireResult {
            ticket,
            identity: name(first),
            outcome: AcquireOutcome::HeldByOther,
        },
    );
    let next = tried(&a);
    assert_eq!(next.len(), 1, "{a:?}");
    assert_ne!(next[0], first);
}

#[test]
fn the_first_candidate_follows_candidate_order() {
    // The order is pinned: it is stable by design (no std hasher), so a node's choices
    // do not change with a toolchain, and a change to the generator shows here.
    const PINNED: [&str; 8] = [
        "m0-v5", "m0-v2", "m0-v4", "m0-v0", "m0-v1", "m0-v3", "m0-v6", "m0-v7",
    ];
    let (mut m, a) = Machine::start(params(), t(0));
    let ticket = list_ticket(&a);
    let available: Vec<Name> = (0..8).map(|i| name(&format!("m0-v{i}"))).collect();
    let a = m.handle(
        t(1),
        Event::Listed {
            ticket,
            available: available.clone(),
            free_in: Vec::new(),
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
        .map(|n| candidate_order(&format!("vm-{n}"), &available)[0].clone())
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
            free_in: Vec::new(),
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
            free_in: Vec::new(),
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
                free_in: Vec::new(),
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
            free_in: Vec::new(),
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
            Action::ReadEpoch {
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
            free_in: Vec::new(),
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
                available: vec![],
                free_in: Vec::new(),
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
                lease: lease.clone(),
                run: run(&m),
            },
            status(StateKind::Holding, Some("m0-v1")),
            Action::ScheduleWake { at: t(5_100) },
        ]
    );
    assert!(!m.state().is_serving(), "not serving until the client runs");
    let a = m.handle(t(2_300), Event::ClientStarted { run: run(&m) });
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
        Event::ClientStarted { run: run(&m) },
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
            free_in: Vec::new(),
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
        Event::ClientExited { run: stale },
        Event::HandOffFailed { run: stale },
        Event::GuardGone { run: stale },
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
    quarantine_done(&mut m, &lease, 2_200);
    let a = m.handle(t(2_300), Event::HandOffFailed { run: run(&m) });
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
            free_in: Vec::new(),
        },
    );
    assert!(tried(&a).is_empty(), "{a:?}");
}

/// Issue 10, item 6: a client that is gone before it was reported running (its guard
/// died, or exited) is a failed hand-off, not an exit to restart forever.
#[test]
fn item06_a_client_gone_before_it_started_is_a_failed_hand_off() {
    let (mut m, lease) = quarantined(params(), 100);
    quarantine_done(&mut m, &lease, 2_200);
    let a = m.handle(t(2_300), Event::ClientExited { run: run(&m) });
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
    m.handle(t(1_000), Event::ClientExited { run: run(&m) });
    let a = m.handle(t(2_000), Event::Tick);
    assert!(a.contains(&Action::RestartClient {
        lease: lease.clone(),
        run: run(&m),
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
                free_in: Vec::new(),
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
            free_in: Vec::new(),
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
            free_in: Vec::new(),
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
            free_in: Vec::new(),
        },
    );
    assert_eq!(tried(&a), vec![lease.identity.as_str()]);
}

// ---- crash loop ----

fn exit_and_restart(m: &mut Machine, _lease: &Lease, exit_ms: u64) -> Vec<Action> {
    let run = run(m);
    m.handle(t(exit_ms), Event::ClientExited { run })
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
                lease: lease.clone(),
                run: run(&m),
            },
            Action::ScheduleWake { at: t(5_100) }
        ]
    );
    m.handle(t(2_100), Event::ClientStarted { run: run(&m) });
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
    m.handle(t(2_000), Event::ClientStarted { run: run(&m) });
    exit_and_restart(&mut m, &lease, 2_500);
    m.handle(t(4_500), Event::Tick);
    m.handle(t(4_500), Event::ClientStarted { run: run(&m) });
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
            free_in: Vec::new(),
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
    // The lost race lists again; the fresh list offers only the cooled-down one.
    let ticket = list_ticket(&a);
    let a = m.handle(
        t(5_250),
        Event::Listed {
            ticket,
            available: vec![name("m0-v1")],
            free_in: Vec::new(),
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
            free_in: Vec::new(),
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
            free_in: Vec::new(),
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
    m.handle(t(2_000), Event::ClientStarted { run: run(&m) });
    exit_and_restart(&mut m, &lease, 3_000);
    m.handle(t(5_000), Event::Tick);
    m.handle(t(5_000), Event::ClientStarted { run: run(&m) });
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
                available: vec![name("m0-v1")],
                free_in: Vec::new(),
            }
        )
        .is_empty());

    let (mut m, a) = Machine::start(params(), t(0));
    m.handle(
        t(10),
        Event::Listed {
            ticket: list_ticket(&a),
            available: vec![],
            free_in: Vec::new(),
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
            free_in: Vec::new(),
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
            free_in: Vec::new(),
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
        .handle(t(5_100), Event::ClientExited { run: run(&m) })
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
    let a = candidate_order("vm-1", &ids);
    assert_eq!(a, candidate_order("vm-1", &ids));
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, ids);
    // Duplicates are dropped; input order does not matter.
    let mut doubled: Vec<Name> = ids.iter().rev().cloned().collect();
    doubled.extend(ids.iter().cloned());
    assert_eq!(candidate_order("vm-1", &doubled), a);
    assert!(candidate_order("vm-1", &[]).is_empty());
}

#[test]
fn candidate_order_spreads_nodes_and_keeps_each_nodes_preference() {
    let ids: Vec<Name> = (0..10).map(|i| name(&format!("m0-v{i}"))).collect();
    // A scale set of 40 nodes starting together does not all try one identity first.
    let mut firsts: Vec<Name> = (0..40)
        .map(|n| candidate_order(&format!("vm-{n}"), &ids)[0].clone())
        .collect();
    firsts.sort();
    firsts.dedup();
    assert!(firsts.len() >= 6, "first choices: {firsts:?}");
    // Rendezvous: taking an identity away leaves the order of the others as it was,
    // so a node that lists again after losing a race keeps its preferences.
    let full = candidate_order("vm-3", &ids);
    let fewer: Vec<Name> = ids.iter().filter(|n| **n != full[0]).cloned().collect();
    assert_eq!(candidate_order("vm-3", &fewer), full[1..].to_vec());
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

// ---- the guard's end, hand-off tickets ----

fn hand_offs(actions: &[Action]) -> Vec<Ticket> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::FetchKeyAndHandOff { run, .. } => Some(*run),
            _ => None,
        })
        .collect()
}

#[test]
fn a_guard_gone_while_its_client_runs_is_an_exit_and_the_restart_is_a_new_hand_off() {
    let (mut m, lease) = holding(100);
    let first = run(&m);
    let a = m.handle(t(1_000), Event::GuardGone { run: first });
    assert!(
        a.iter().all(|a| !matches!(a, Action::Fence { .. })),
        "{a:?}"
    );
    // Backoff of 1 s, then a new hand-off (the guard that could restart it is gone).
    let a = m.handle(t(2_000), Event::Tick);
    let second = hand_offs(&a);
    assert_eq!(second.len(), 1, "{a:?}");
    assert_ne!(second[0], first);
    assert!(!a.iter().any(|a| matches!(a, Action::RestartClient { .. })));
    // What the old guard's hand-off says now changes nothing.
    let before = m.state().clone();
    for ev in [
        Event::ClientStarted { run: first },
        Event::ClientExited { run: first },
        Event::HandOffFailed { run: first },
        Event::GuardGone { run: first },
    ] {
        m.handle(t(2_100), ev);
        assert_eq!(m.state(), &before);
    }
    m.handle(t(2_200), Event::ClientStarted { run: second[0] });
    assert!(m.state().is_serving());
    assert_eq!(m.state().lease(), Some(&lease));
}

#[test]
fn a_client_exit_with_its_guard_still_up_restarts_through_that_guard() {
    let (mut m, lease) = holding(100);
    let first = run(&m);
    m.handle(t(1_000), Event::ClientExited { run: first });
    let a = m.handle(t(2_000), Event::Tick);
    assert!(a.contains(&Action::RestartClient {
        lease: lease.clone(),
        run: first
    }));
    assert!(hand_offs(&a).is_empty());
    // The guard dies before the client is back: the restart failed, the identity goes.
    let a = m.handle(t(2_100), Event::GuardGone { run: first });
    assert_eq!(fence_reason(&a), Some(FenceReason::HandOffFailed));
}

#[test]
fn a_guard_gone_before_its_client_started_fails_the_hand_off() {
    let (mut m, lease) = quarantined(params(), 100);
    quarantine_done(&mut m, &lease, 200);
    let a = m.handle(t(300), Event::GuardGone { run: run(&m) });
    assert_eq!(fence_reason(&a), Some(FenceReason::HandOffFailed));
}

#[test]
fn a_guard_gone_after_the_client_exited_makes_the_restart_a_new_hand_off() {
    let (mut m, _) = holding(100);
    let first = run(&m);
    m.handle(t(1_000), Event::ClientExited { run: first });
    m.handle(t(1_100), Event::GuardGone { run: first });
    let a = m.handle(t(2_000), Event::Tick);
    assert_eq!(hand_offs(&a).len(), 1, "{a:?}");
    assert!(!a.iter().any(|a| matches!(a, Action::RestartClient { .. })));
}

// ---- the epoch ----

fn epoch_actions(actions: &[Action]) -> Vec<&Action> {
    actions
        .iter()
        .filter(|a| matches!(a, Action::ReadEpoch { .. } | Action::WriteMetadata { .. }))
        .collect()
}

#[test]
fn the_epoch_is_the_records_plus_one_decided_once_for_the_lease() {
    let (mut m, lease) = holding(100);
    assert_eq!(m.epoch(), Some(8));
    // A second answer (a read sent twice) changes nothing: every write carries 8.
    let a = m.handle(
        t(1_000),
        Event::EpochRead {
            ticket: lease.ticket,
            record_epoch: Some(41),
        },
    );
    assert!(epoch_actions(&a).is_empty(), "{a:?}");
    assert_eq!(m.epoch(), Some(8));
    let a = m.handle(t(5_200), renewed(lease.ticket, 5_150));
    assert!(epoch_actions(&a).is_empty(), "{a:?}");
}

#[test]
fn a_failed_epoch_read_is_tried_again_after_the_next_renew() {
    let (mut m, a) = Machine::start(params(), t(0));
    let ticket = list_ticket(&a);
    m.handle(
        t(5),
        Event::Listed {
            ticket,
            available: vec![name("m0-v1")],
            free_in: Vec::new(),
        },
    );
    let a = m.handle(t(120), acquired(ticket, "m0-v1", 100));
    let lease = m.state().lease().cloned().unwrap();
    assert!(a.contains(&Action::ReadEpoch {
        lease: lease.clone()
    }));
    let a = m.handle(
        t(150),
        Event::EpochRead {
            ticket,
            record_epoch: None,
        },
    );
    assert!(epoch_actions(&a).is_empty(), "{a:?}");
    assert_eq!(m.epoch(), None);
    // A transient renew failure does not read; a success does.
    let a = m.handle(t(5_150), renew_failed(ticket, RenewOutcome::Transient));
    assert!(epoch_actions(&a).is_empty(), "{a:?}");
    let a = m.handle(t(5_300), renewed(ticket, 5_250));
    assert_eq!(
        epoch_actions(&a),
        [&Action::ReadEpoch {
            lease: lease.clone()
        }]
    );
    let a = m.handle(
        t(5_400),
        Event::EpochRead {
            ticket,
            record_epoch: Some(0),
        },
    );
    assert_eq!(
        epoch_actions(&a),
        [&Action::WriteMetadata { lease, epoch: 1 }]
    );
}

#[test]
fn no_epoch_is_decided_or_written_for_a_lease_given_up() {
    let (mut m, a) = Machine::start(params(), t(0));
    let ticket = list_ticket(&a);
    m.handle(
        t(5),
        Event::Listed {
            ticket,
            available: vec![name("m0-v1")],
            free_in: Vec::new(),
        },
    );
    m.handle(t(120), acquired(ticket, "m0-v1", 100));
    m.handle(t(200), renew_failed(ticket, RenewOutcome::Lost));
    let a = m.handle(
        t(300),
        Event::EpochRead {
            ticket,
            record_epoch: Some(3),
        },
    );
    assert!(epoch_actions(&a).is_empty(), "{a:?}");
    assert_eq!(m.epoch(), None);
}

// ---- the engine signer ----

fn signer_attempts(actions: &[Action]) -> Vec<Ticket> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SetEngineSigner { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect()
}

#[test]
fn without_an_engine_signer_nothing_is_set() {
    let (mut m, lease) = quarantined(params(), 100);
    quarantine_done(&mut m, &lease, 130);
    let a = m.handle(t(140), Event::ClientStarted { run: run(&m) });
    assert!(signer_attempts(&a).is_empty());
}

#[test]
fn the_engine_signer_is_set_at_every_client_start_and_the_client_serves_only_once_it_is() {
    let mut p = params();
    p.engine_signer = true;
    let (mut m, lease) = quarantined(p, 100);
    quarantine_done(&mut m, &lease, 130);
    let a = m.handle(t(140), Event::ClientStarted { run: run(&m) });
    let [first] = signer_attempts(&a)[..] else {
        panic!("{a:?}")
    };
    assert!(
        !m.state().is_serving(),
        "serving before the client has its key"
    );
    // Fails: tried again SIGNER_RETRY later, not before.
    let a = m.handle(
        t(200),
        Event::EngineSignerResult {
            attempt: first,
            set: false,
        },
    );
    assert!(a.contains(&Action::ScheduleWake { at: t(450) }), "{a:?}");
    assert!(signer_attempts(&m.handle(t(449), Event::Tick)).is_empty());
    let a = m.handle(t(450), Event::Tick);
    let [second] = signer_attempts(&a)[..] else {
        panic!("{a:?}")
    };
    // The first attempt's late answer is not the second's.
    m.handle(
        t(460),
        Event::EngineSignerResult {
            attempt: first,
            set: true,
        },
    );
    assert!(!m.state().is_serving());
    m.handle(
        t(500),
        Event::EngineSignerResult {
            attempt: second,
            set: true,
        },
    );
    assert!(m.state().is_serving());
    // The client restarts: its signer is empty again, and it serves once it is set.
    let r = run(&m);
    m.handle(t(600), Event::ClientExited { run: r });
    m.handle(t(1_600), Event::Tick);
    let a = m.handle(t(1_700), Event::ClientStarted { run: r });
    assert_eq!(signer_attempts(&a).len(), 1, "{a:?}");
    assert!(!m.state().is_serving());
}

#[test]
fn an_engine_signer_not_set_within_the_start_timeout_fails_the_hand_off() {
    let mut p = params();
    p.engine_signer = true;
    let (mut m, lease) = quarantined(p, 100);
    quarantine_done(&mut m, &lease, 130);
    let a = m.handle(t(140), Event::ClientStarted { run: run(&m) });
    let mut attempt = signer_attempts(&a)[0];
    let mut now = 140;
    loop {
        now += 100;
        // The lease stays renewed; the client never takes the key.
        m.handle(t(now), renewed(lease.ticket, now - 1));
        m.handle(
            t(now),
            Event::EngineSignerResult {
                attempt,
                set: false,
            },
        );
        now += 250;
        let a = m.handle(t(now), Event::Tick);
        if let Some(reason) = fence_reason(&a) {
            assert_eq!(reason, FenceReason::HandOffFailed);
            break;
        }
        attempt = signer_attempts(&a)[0];
    }
    // The start timeout (10 s) from the hand-off at 130 ms.
    assert!((10_130..10_600).contains(&now), "gave up at {now} ms");
}

// ---- doppelganger ----

#[test]
fn a_seal_seen_in_quarantine_releases_without_a_hand_off_and_leaves_the_identity_for_a_lease() {
    let (mut m, lease) = quarantined(params(), 100);
    let a = m.handle(
        t(1_000),
        Event::SealSeen {
            ticket: lease.ticket,
        },
    );
    assert!(has_release(&a), "{a:?}");
    assert!(hand_offs(&a).is_empty());
    assert!(!a.iter().any(|a| matches!(a, Action::ExtendGuard { .. })));
    assert_eq!(m.state().kind(), StateKind::Seeking);
    // Left to others for one lease (D = 15 s), then tried again.
    let mut ms = 1_000;
    let tried_at = loop {
        ms += 100;
        assert!(ms < 30_000, "never tried again");
        m.handle(t(ms), Event::Tick);
        if let State::Seeking {
            phase: SeekPhase::Listing { ticket },
        } = m.state().clone()
        {
            let a = m.handle(
                t(ms),
                Event::Listed {
                    ticket,
                    available: vec![name("m0-v1")],
                    free_in: Vec::new(),
                },
            );
            if tried(&a) == ["m0-v1"] {
                break ms;
            }
        }
    };
    assert!(
        (16_000..17_000).contains(&tried_at),
        "tried again at {tried_at} ms (cool-down of D from 1 000)"
    );
}

#[test]
fn a_stale_seal_report_changes_nothing() {
    let (mut m, lease) = holding(100);
    let before = m.state().clone();
    let a = m.handle(
        t(1_000),
        Event::SealSeen {
            ticket: lease.ticket,
        },
    );
    assert!(!has_release(&a));
    assert_eq!(m.state(), &before);
}

// ---- the renew grid, a standby's looks, the release nudge ----

/// `params()` on the renew grid: instants where since_origin + 2 s is a multiple of R = 5 s
/// (…, 3 s, 8 s, 13 s, …).
fn grid_params() -> Params {
    let mut p = params();
    p.quarantine = Duration::ZERO;
    p.renew_grid = Some(Duration::from_secs(2));
    p
}

fn wake(actions: &[Action]) -> Option<MonoTime> {
    actions.iter().find_map(|a| match a {
        Action::ScheduleWake { at } => Some(*at),
        _ => None,
    })
}

#[test]
fn on_the_grid_a_holder_renews_at_the_grid_instant_within_r_of_its_last_success() {
    let p = grid_params();
    // Acquired at 1.234 s: the grid instant in (1.234, 6.234] is 3 s.
    assert_eq!(p.next_renew(t(1_234)), t(3_000));
    // A renew sent on the grid is followed by the next instant, R later.
    assert_eq!(p.next_renew(t(3_000)), t(8_000));
    assert_eq!(p.next_renew(t(3_004)), t(8_000));
    // A retry that worked at 9.1 s: back on the grid at 13 s, never later than R.
    assert_eq!(p.next_renew(t(9_100)), t(13_000));
    for ms in (0..20_000).step_by(137) {
        let next = p.next_renew(t(ms));
        assert!(next > t(ms) && next <= t(ms + 5_000), "{ms}: {next:?}");
        assert_eq!(
            (next.since_origin() + Duration::from_secs(2)).as_millis() % 5_000,
            0
        );
    }
    // Off the grid: R after the last success, as before.
    assert_eq!(params().next_renew(t(1_234)), t(6_234));
}

#[test]
fn on_the_grid_a_standby_that_finds_nothing_looks_when_a_lease_can_next_end() {
    let (mut m, a) = Machine::start(grid_params(), t(0));
    let ticket = list_ticket(&a);
    // Leases renewed on the grid (…, 3 s, 8 s, …) end D = 15 s after a renew: at 3 s,
    // 8 s, 13 s, … too (D is a multiple of R). Listed at 4 s: the next end is 8 s.
    let a = m.handle(
        t(4_000),
        Event::Listed {
            ticket,
            available: Vec::new(),
            free_in: Vec::new(),
        },
    );
    assert_eq!(wake(&a), Some(t(8_000) + GRID_LOOK_DELAY));
    // Still held just after 8 s: once more at 8.7 s (the last renew may have been slow to
    // reach the store), then at the next end. Two looks per R: 24 a minute, not the 120
    // of a 500 ms poll.
    let a = m.handle(t(8_150), Event::Tick);
    let ticket = list_ticket(&a);
    let a = m.handle(
        t(8_160),
        Event::Listed {
            ticket,
            available: Vec::new(),
            free_in: Vec::new(),
        },
    );
    assert_eq!(wake(&a), Some(t(8_000) + GRID_SECOND_LOOK));
    let a = m.handle(t(8_700), Event::Tick);
    let ticket = list_ticket(&a);
    let a = m.handle(
        t(8_710),
        Event::Listed {
            ticket,
            available: Vec::new(),
            free_in: Vec::new(),
        },
    );
    assert_eq!(wake(&a), Some(t(13_000) + GRID_LOOK_DELAY));
    // A list that fails is retried at the old poll, not at the grid.
    let a = m.handle(t(13_150), Event::Tick);
    let ticket = list_ticket(&a);
    let a = m.handle(t(13_200), Event::ListFailed { ticket });
    assert_eq!(wake(&a), Some(t(13_700)));
}

#[test]
fn a_stated_end_or_an_unknown_break_brings_the_look_forward() {
    let (mut m, a) = Machine::start(grid_params(), t(0));
    let ticket = list_ticket(&a);
    // sqlite: m0-v1's lease has 1.2 s left: look just after it ends, not at 8 s.
    let a = m.handle(
        t(4_000),
        Event::Listed {
            ticket,
            available: Vec::new(),
            free_in: vec![
                (name("m0-v1"), Duration::from_millis(1_200)),
                (name("m0-v2"), Duration::from_millis(9_000)),
            ],
        },
    );
    assert_eq!(wake(&a), Some(t(5_200) + STATED_END_LOOK_DELAY));
    // Azure: a break of unknown length may end any moment: a poll.
    let a = m.handle(t(5_250), Event::Tick);
    let ticket = list_ticket(&a);
    let a = m.handle(
        t(5_300),
        Event::Listed {
            ticket,
            available: Vec::new(),
            free_in: vec![(name("m0-v2"), Duration::ZERO)],
        },
    );
    assert_eq!(wake(&a), Some(t(5_800)));
    // Another pool's records do not bring anything forward.
    let mut p = grid_params();
    p.pool = "m0-".into();
    let (mut m, a) = Machine::start(p, t(0));
    let ticket = list_ticket(&a);
    let a = m.handle(
        t(4_000),
        Event::Listed {
            ticket,
            available: Vec::new(),
            free_in: vec![(name("m1-v1"), Duration::from_millis(100))],
        },
    );
    assert_eq!(wake(&a), Some(t(8_000) + GRID_LOOK_DELAY));
}

#[test]
fn a_nudge_makes_a_waiting_standby_try_that_identity_at_once() {
    let mut p = grid_params();
    p.pool = "m0-".into();
    let (mut m, a) = Machine::start(p, t(0));
    let ticket = list_ticket(&a);
    m.handle(
        t(4_000),
        Event::Listed {
            ticket,
            available: Vec::new(),
            free_in: Vec::new(),
        },
    );
    // Another pool's identity: a forged or stray nudge does nothing.
    let a = m.handle(
        t(4_100),
        Event::Nudge {
            identity: name("m1-v1"),
        },
    );
    assert!(tried(&a).is_empty(), "{a:?}");
    // Its own pool: one acquire at once, through the store as always.
    let a = m.handle(
        t(4_200),
        Event::Nudge {
            identity: name("m0-v3"),
        },
    );
    assert_eq!(tried(&a), ["m0-v3"]);
    // A second nudge while that acquire is out does not start another.
    let a = m.handle(
        t(4_201),
        Event::Nudge {
            identity: name("m0-v3"),
        },
    );
    assert!(tried(&a).is_empty(), "{a:?}");
    let ticket = match m.state() {
        State::Seeking {
            phase: SeekPhase::Acquiring { ticket, .. },
        } => *ticket,
        other => panic!("{other:?}"),
    };
    m.handle(t(4_210), acquired(ticket, "m0-v3", 4_200));
    assert_eq!(m.state().identity(), Some(&name("m0-v3")));
    // A node with a lease ignores nudges.
    let a = m.handle(
        t(4_300),
        Event::Nudge {
            identity: name("m0-v4"),
        },
    );
    assert!(tried(&a).is_empty(), "{a:?}");
}

#[test]
fn a_nudge_for_an_identity_this_node_gave_up_lately_is_ignored() {
    let mut m = Machine::start(grid_params(), t(0)).0;
    m.cooldowns.push((name("m0-v3"), t(60_000)));
    m.state = State::Seeking {
        phase: SeekPhase::Waiting { until: t(8_000) },
    };
    let a = m.handle(
        t(4_000),
        Event::Nudge {
            identity: name("m0-v3"),
        },
    );
    assert!(tried(&a).is_empty(), "{a:?}");
    let a = m.handle(
        t(60_001),
        Event::Nudge {
            identity: name("m0-v3"),
        },
    );
    assert_eq!(tried(&a), ["m0-v3"]);
}

#[test]
fn a_node_stands_by_only_after_a_list_offered_it_nothing_and_stops_when_it_acquires() {
    let mut p = grid_params();
    p.pool = "m0-".into();
    let (mut m, a) = Machine::start(p, t(0));
    // Just started: not a standby yet, so a herd that finds identities announces nothing.
    assert!(!m.is_standing_by());
    let ticket = list_ticket(&a);
    let a = m.handle(
        t(100),
        Event::Listed {
            ticket,
            available: vec![name("m0-v1")],
            free_in: Vec::new(),
        },
    );
    assert_eq!(tried(&a), ["m0-v1"]);
    assert!(!m.is_standing_by(), "on its way to an identity");
    let ticket = match m.state() {
        State::Seeking {
            phase: SeekPhase::Acquiring { ticket, .. },
        } => *ticket,
        other => panic!("{other:?}"),
    };
    m.handle(t(110), acquired(ticket, "m0-v1", 100));
    assert!(!m.is_standing_by(), "holding");

    // A second node whose list offers nothing is a standby until it acquires.
    let mut p = grid_params();
    p.pool = "m0-".into();
    let (mut m, a) = Machine::start(p, t(0));
    let ticket = list_ticket(&a);
    m.handle(
        t(4_000),
        Event::Listed {
            ticket,
            available: Vec::new(),
            free_in: Vec::new(),
        },
    );
    assert!(m.is_standing_by());
    let a = m.handle(
        t(4_200),
        Event::Nudge {
            identity: name("m0-v3"),
        },
    );
    assert_eq!(tried(&a), ["m0-v3"]);
    assert!(
        m.is_standing_by(),
        "still a standby while the acquire is out"
    );
    let ticket = match m.state() {
        State::Seeking {
            phase: SeekPhase::Acquiring { ticket, .. },
        } => *ticket,
        other => panic!("{other:?}"),
    };
    m.handle(t(4_210), acquired(ticket, "m0-v3", 4_200));
    assert!(!m.is_standing_by());
}

#[test]
fn a_renew_offset_moves_the_holder_after_the_grid_instant_and_still_within_r() {
    let mut p = grid_params();
    p.renew_offset = Duration::from_millis(700);
    // Grid instants at 3 s, 8 s, 13 s …: this holder renews at 3.7 s, 8.7 s, ….
    assert_eq!(p.next_renew(t(1_234)), t(3_700));
    assert_eq!(p.next_renew(t(3_700)), t(8_700));
    assert_eq!(p.next_renew(t(3_500)), t(3_700));
    for ms in (0..20_000).step_by(137) {
        let next = p.next_renew(t(ms));
        assert!(next > t(ms) && next <= t(ms + 5_000), "{ms}: {next:?}");
        assert_eq!(
            (next.since_origin() + Duration::from_millis(1_300)).as_millis() % 5_000,
            0
        );
    }
    // Node offsets spread over the width, the same on every start.
    let width = Duration::from_secs(1);
    let offsets: Vec<Duration> = (0..100)
        .map(|i| spread(&format!("vm-{i}"), width))
        .collect();
    assert!(offsets.iter().all(|o| *o < width));
    assert_eq!(spread("vm-7", width), offsets[7]);
    let mut tenths = [0; 10];
    for o in &offsets {
        tenths[usize::try_from(o.as_millis() / 100).unwrap()] += 1;
    }
    assert!(tenths.iter().all(|n| *n >= 3), "{tenths:?}");
    assert_eq!(spread("vm-1", Duration::ZERO), Duration::ZERO);
}
