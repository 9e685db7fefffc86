use super::*;
use crate::lease::ManualStoreClock;

const T0: i64 = 1_700_000_000_000;
const SEC: i64 = 1000;

fn id(n: u8) -> LeaseId {
    LeaseId::parse(&format!("00000000-0000-4000-8000-0000000000{n:02x}")).unwrap()
}

fn fixed(secs: u64) -> LeaseDuration {
    LeaseDuration::from_secs(secs).unwrap()
}

fn available() -> Lease {
    Lease {
        phase: Phase::Available,
        duration: None,
    }
}

/// Leased with id 1 for 15 s from T0.
fn leased() -> Lease {
    acquire(&available(), T0, fixed(15), Some(&id(1)), id(99))
        .unwrap()
        .0
}

fn leased_infinite() -> Lease {
    acquire(
        &available(),
        T0,
        LeaseDuration::Infinite,
        Some(&id(1)),
        id(99),
    )
    .unwrap()
    .0
}

/// Leased with id 1 for 60 s from T0, broken at T0 with a 30 s period: breaking
/// until T0 + 30 s.
fn breaking() -> Lease {
    let l = acquire(&available(), T0, fixed(60), Some(&id(1)), id(99))
        .unwrap()
        .0;
    break_lease(&l, T0, Some(30 * SEC)).unwrap().0
}

fn broken() -> Lease {
    break_lease(&leased(), T0, Some(0)).unwrap().0
}

const EXPIRED_AT: i64 = T0 + 15 * SEC;
const DURING_BREAK: i64 = T0 + 10 * SEC;

fn lost(r: LostReason) -> Refusal {
    Refusal::Lost(r)
}

#[test]
fn effective_state_derives_expiry_and_break_end_from_the_clock() {
    let l = leased();
    assert_eq!(
        effective(&l.phase, T0),
        Effective::Leased {
            id: &id(1),
            remaining_ms: Some(15 * SEC)
        }
    );
    assert_eq!(
        effective(&l.phase, EXPIRED_AT - 1),
        Effective::Leased {
            id: &id(1),
            remaining_ms: Some(1)
        }
    );
    assert_eq!(
        effective(&l.phase, EXPIRED_AT),
        Effective::Expired { id: &id(1) }
    );
    assert_eq!(
        effective(&leased_infinite().phase, i64::MAX),
        Effective::Leased {
            id: &id(1),
            remaining_ms: None
        }
    );
    let b = breaking();
    assert_eq!(
        effective(&b.phase, T0 + 30 * SEC - 1),
        Effective::Breaking {
            id: &id(1),
            remaining_ms: 1
        }
    );
    assert_eq!(
        effective(&b.phase, T0 + 30 * SEC),
        Effective::Broken { id: &id(1) }
    );
    assert_eq!(
        effective(&broken().phase, T0),
        Effective::Broken { id: &id(1) }
    );
    assert_eq!(effective(&Phase::Available, T0), Effective::Available);
}

#[test]
fn acquire_by_state() {
    let fresh = || id(99);
    // Acquirable states take the proposed id, else the fresh one.
    for (name, lease, now) in [
        ("available", available(), T0),
        ("expired", leased(), EXPIRED_AT),
        ("broken", broken(), T0),
    ] {
        let (l, got) = acquire(&lease, now, fixed(20), Some(&id(2)), fresh()).unwrap();
        assert_eq!(got, id(2), "{name}");
        assert_eq!(
            l,
            Lease {
                phase: Phase::Leased {
                    id: id(2),
                    expires_at_ms: Some(now + 20 * SEC)
                },
                duration: Some(fixed(20))
            },
            "{name}"
        );
        let (_, got) = acquire(&lease, now, fixed(20), None, fresh()).unwrap();
        assert_eq!(got, id(99), "{name}");
    }
    // Leased: only the same id, which restarts with the new duration.
    let (l, got) = acquire(&leased(), T0 + 5 * SEC, fixed(60), Some(&id(1)), fresh()).unwrap();
    assert_eq!(got, id(1));
    assert_eq!(
        effective(&l.phase, T0 + 5 * SEC).remaining_ms(),
        Some(60 * SEC)
    );
    assert_eq!(l.duration, Some(fixed(60)));
    for proposed in [None, Some(id(2))] {
        assert_eq!(
            acquire(&leased(), T0, fixed(15), proposed.as_ref(), fresh()),
            Err(Refusal::Held(LeaseState::Leased))
        );
    }
    // Breaking refuses everyone, the holder too.
    for proposed in [None, Some(id(1)), Some(id(2))] {
        assert_eq!(
            acquire(
                &breaking(),
                DURING_BREAK,
                fixed(15),
                proposed.as_ref(),
                fresh()
            ),
            Err(Refusal::Held(LeaseState::Breaking))
        );
    }
    // Once the break period is over, anyone.
    assert!(acquire(&breaking(), T0 + 30 * SEC, fixed(15), None, fresh()).is_ok());
}

#[test]
fn renew_by_state() {
    let renewed = renew(&leased(), T0 + 10 * SEC, &id(1)).unwrap();
    assert_eq!(
        renewed.phase,
        Phase::Leased {
            id: id(1),
            expires_at_ms: Some(T0 + 25 * SEC)
        }
    );
    // The expired-but-untaken case: the old holder resumes.
    let resumed = renew(&leased(), EXPIRED_AT + 60 * SEC, &id(1)).unwrap();
    assert_eq!(
        effective(&resumed.phase, EXPIRED_AT + 60 * SEC).state(),
        LeaseState::Leased
    );
    let inf = renew(&leased_infinite(), T0, &id(1)).unwrap();
    assert_eq!(inf, leased_infinite());

    assert_eq!(
        renew(&leased(), T0, &id(2)),
        Err(lost(LostReason::IdMismatch))
    );
    assert_eq!(
        renew(&leased(), EXPIRED_AT, &id(2)),
        Err(lost(LostReason::IdMismatch))
    );
    assert_eq!(
        renew(&breaking(), DURING_BREAK, &id(1)),
        Err(lost(LostReason::Broken))
    );
    assert_eq!(
        renew(&breaking(), DURING_BREAK, &id(2)),
        Err(lost(LostReason::IdMismatch))
    );
    assert_eq!(renew(&broken(), T0, &id(1)), Err(lost(LostReason::Broken)));
    assert_eq!(
        renew(&broken(), T0, &id(2)),
        Err(lost(LostReason::IdMismatch))
    );
    assert_eq!(
        renew(&available(), T0, &id(1)),
        Err(lost(LostReason::NotPresent))
    );
    let released = release(&leased(), T0, &id(1)).unwrap();
    assert_eq!(
        renew(&released, T0, &id(1)),
        Err(lost(LostReason::NotPresent))
    );
}

#[test]
fn renew_without_a_stored_duration_fails_closed() {
    let l = Lease {
        phase: Phase::Leased {
            id: id(1),
            expires_at_ms: Some(T0 + SEC),
        },
        duration: None,
    };
    assert_eq!(renew(&l, T0, &id(1)), Err(lost(LostReason::NotPresent)));
}

#[test]
fn change_by_state() {
    let now = T0 + 5 * SEC;
    let changed = change(&leased(), now, &id(1), &id(2)).unwrap();
    assert_eq!(
        changed.phase,
        Phase::Leased {
            id: id(2),
            expires_at_ms: Some(EXPIRED_AT)
        },
        "change keeps the expiry"
    );
    // Retried after the first change landed.
    assert_eq!(change(&changed, now, &id(1), &id(2)), Ok(changed.clone()));
    assert_eq!(
        change(&leased(), now, &id(3), &id(2)),
        Err(lost(LostReason::IdMismatch))
    );
    assert_eq!(
        change(&breaking(), DURING_BREAK, &id(1), &id(2)),
        Err(lost(LostReason::Breaking))
    );
    assert_eq!(
        change(&available(), T0, &id(1), &id(2)),
        Err(lost(LostReason::NotPresent))
    );
    assert_eq!(
        change(&leased(), EXPIRED_AT, &id(1), &id(2)),
        Err(lost(LostReason::NotPresent))
    );
    assert_eq!(
        change(&broken(), T0, &id(1), &id(2)),
        Err(lost(LostReason::NotPresent))
    );
}

#[test]
fn release_by_state() {
    for (name, lease, now) in [
        ("leased", leased(), T0),
        ("expired", leased(), EXPIRED_AT),
        ("breaking", breaking(), DURING_BREAK),
        ("broken", broken(), T0),
    ] {
        let released = release(&lease, now, &id(1)).unwrap();
        assert_eq!(released.phase, Phase::Available, "{name}");
        assert_eq!(
            released.duration, lease.duration,
            "{name} keeps the last duration"
        );
        assert_eq!(
            release(&lease, now, &id(2)),
            Err(lost(LostReason::IdMismatch)),
            "{name}"
        );
    }
    assert_eq!(
        release(&available(), T0, &id(1)),
        Err(lost(LostReason::NotPresent))
    );
}

#[test]
fn break_by_state() {
    assert_eq!(
        break_lease(&available(), T0, None),
        Err(lost(LostReason::NotPresent))
    );
    // Expired and broken: broken at once.
    for (lease, now) in [(leased(), EXPIRED_AT), (broken(), T0)] {
        let (l, left) = break_lease(&lease, now, Some(30 * SEC)).unwrap();
        assert_eq!((l.phase, left), (Phase::Broken { id: id(1) }, 0));
    }
    // Fixed lease, default period: the rest of the lease.
    let (l, left) = break_lease(&leased(), T0 + 5 * SEC, None).unwrap();
    assert_eq!(left, 10 * SEC);
    assert_eq!(
        l.phase,
        Phase::Breaking {
            id: id(1),
            until_ms: EXPIRED_AT
        }
    );
    // A period longer than the rest of the lease is cut to it; a shorter one is kept.
    assert_eq!(
        break_lease(&leased(), T0, Some(60 * SEC)).unwrap().1,
        15 * SEC
    );
    assert_eq!(
        break_lease(&leased(), T0, Some(4 * SEC)).unwrap().1,
        4 * SEC
    );
    // Infinite: at once by default, else the period.
    let (l, left) = break_lease(&leased_infinite(), T0, None).unwrap();
    assert_eq!((l.phase, left), (Phase::Broken { id: id(1) }, 0));
    assert_eq!(
        break_lease(&leased_infinite(), T0, Some(60 * SEC))
            .unwrap()
            .1,
        60 * SEC
    );
    // Zero: broken now.
    let (l, left) = break_lease(&leased(), T0, Some(0)).unwrap();
    assert_eq!((l.phase, left), (Phase::Broken { id: id(1) }, 0));
}

#[test]
fn a_running_break_can_only_be_shortened() {
    let now = DURING_BREAK; // 20 s left of the break
    let (l, left) = break_lease(&breaking(), now, Some(60 * SEC)).unwrap();
    assert_eq!((l, left), (breaking(), 20 * SEC));
    let (l, left) = break_lease(&breaking(), now, None).unwrap();
    assert_eq!((l, left), (breaking(), 20 * SEC));
    let (l, left) = break_lease(&breaking(), now, Some(5 * SEC)).unwrap();
    assert_eq!(left, 5 * SEC);
    assert_eq!(
        l.phase,
        Phase::Breaking {
            id: id(1),
            until_ms: now + 5 * SEC
        }
    );
    let (l, left) = break_lease(&breaking(), now, Some(0)).unwrap();
    assert_eq!((l.phase, left), (Phase::Broken { id: id(1) }, 0));
}

#[test]
fn metadata_only_under_the_live_lease() {
    assert_eq!(may_write_metadata(&leased(), T0, &id(1)), Ok(()));
    assert_eq!(
        may_write_metadata(&breaking(), DURING_BREAK, &id(1)),
        Ok(())
    );
    assert_eq!(
        may_write_metadata(&leased(), T0, &id(2)),
        Err(lost(LostReason::IdMismatch))
    );
    assert_eq!(
        may_write_metadata(&breaking(), DURING_BREAK, &id(2)),
        Err(lost(LostReason::IdMismatch))
    );
    for (lease, now) in [
        (available(), T0),
        (leased(), EXPIRED_AT),
        (broken(), T0),
        (breaking(), T0 + 30 * SEC),
    ] {
        assert_eq!(
            may_write_metadata(&lease, now, &id(1)),
            Err(lost(LostReason::NotPresent))
        );
    }
}

#[test]
fn request_checks() {
    assert!(check_duration(LeaseDuration::Fixed(Duration::from_secs(5))).is_err());
    assert!(check_duration(LeaseDuration::Fixed(Duration::from_millis(15_001))).is_err());
    assert!(check_duration(fixed(15)).is_ok());
    assert!(check_duration(LeaseDuration::Infinite).is_ok());
}

#[test]
fn rows_round_trip_and_inconsistent_rows_are_refused() {
    let raw =
        |state: &str, lid: Option<&str>, dur: Option<i64>, exp: Option<i64>, brk: Option<i64>| {
            RawRow {
                identity: "m0-v0".into(),
                lease_state: state.into(),
                lease_id: lid.map(str::to_string),
                duration_secs: dur,
                expires_at_ms: exp,
                break_until_ms: brk,
                metadata: "{}".into(),
            }
        };
    let lid = id(1).to_string();
    let lid = Some(lid.as_str());
    let ok = [
        raw("available", None, None, None, None),
        raw("available", None, Some(-1), None, None),
        raw("leased", lid, Some(15), Some(T0), None),
        raw("leased", lid, Some(-1), None, None),
        raw("breaking", lid, Some(15), None, Some(T0)),
        raw("broken", lid, Some(-1), None, None),
    ];
    for r in &ok {
        assert!(r.decode().is_ok(), "{r:?}");
    }
    let bad = [
        raw("available", lid, None, None, None),
        raw("leased", None, Some(15), Some(T0), None),
        raw("leased", Some("not-a-guid"), Some(15), Some(T0), None),
        raw("leased", lid, Some(15), None, None),
        raw("leased", lid, Some(-1), Some(T0), None),
        raw("leased", lid, None, Some(T0), None),
        raw("leased", lid, Some(5), Some(T0), None),
        raw("breaking", lid, Some(15), None, None),
        raw("broken", lid, None, None, None),
        raw("expired", lid, Some(15), Some(T0), None),
    ];
    for r in &bad {
        assert!(r.decode().is_err(), "{r:?}");
    }
    let mut r = raw("available", None, None, None, None);
    r.metadata = "[1]".into();
    assert!(r.decode().is_err());
    // Metadata an older leased wrote before the rule was shared (a value with a trailing
    // space) is read back as it is: the record stays readable.
    r.metadata = r#"{"last_fence_detail":"timed out "}"#.into();
    let row = r.decode().unwrap();
    assert_eq!(row.metadata.get("last_fence_detail").unwrap(), "timed out ");
}

#[test]
fn after_a_reboot_every_instant_is_past() {
    let expired = after_reboot(&leased());
    assert_eq!(
        expired,
        Lease {
            phase: Phase::Leased {
                id: id(1),
                expires_at_ms: Some(BOOT_START_MS)
            },
            duration: Some(fixed(15))
        }
    );
    // Past from the very first reading of the new boot on; the old id may still
    // release it, as for any expired lease.
    assert_eq!(
        effective(&expired.phase, BOOT_START_MS),
        Effective::Expired { id: &id(1) }
    );
    assert_eq!(
        after_reboot(&breaking()),
        Lease {
            phase: Phase::Broken { id: id(1) },
            duration: Some(fixed(60))
        }
    );
    for unchanged in [available(), leased_infinite(), broken()] {
        assert_eq!(after_reboot(&unchanged), unchanged);
    }
}

#[test]
fn a_version_1_instant_keeps_its_time_left() {
    let wall = T0; // version 1 instants: ms since the Unix epoch
    let boot = 3_600 * SEC; // an hour after boot
    assert_eq!(
        rebase_wall_instant(wall + 12 * SEC, wall, boot),
        boot + 12 * SEC
    );
    assert_eq!(rebase_wall_instant(wall, wall, boot), boot);
    assert_eq!(
        rebase_wall_instant(wall - 5 * SEC, wall, boot),
        boot - 5 * SEC
    );
    // Long past: no earlier than the boot's origin, and still past.
    assert_eq!(rebase_wall_instant(0, wall, boot), BOOT_START_MS);
    assert_eq!(rebase_wall_instant(i64::MIN, wall, boot), BOOT_START_MS);
    // Far future: no overflow.
    assert_eq!(
        rebase_wall_instant(i64::MAX, wall, boot),
        i64::MAX - wall + boot
    );
}

// Store-level checks that need SQLite itself; the behaviour shared with every backend
// is in the conformance suite (tests/src/lease_conformance.rs).

fn temp_store() -> (tempfile::TempDir, SqliteLeaseStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteLeaseStore::open_with_clock(
        &dir.path().join("leases.db"),
        Arc::new(ManualStoreClock::new(T0 as u64)),
    )
    .unwrap();
    (dir, store)
}

#[tokio::test]
async fn a_locked_database_is_transient() {
    let (dir, store) = temp_store();
    let store = store.with_busy_timeout(Duration::from_millis(50)).unwrap();
    let name = Name::new("m0-v0").unwrap();
    store.create_record(&name).await.unwrap();

    let other = Connection::open(dir.path().join("leases.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = store
        .acquire(&name, LeaseDuration::Infinite, None)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    other.execute_batch("ROLLBACK").unwrap();
    store
        .acquire(&name, LeaseDuration::Infinite, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_corrupt_row_is_a_backend_error() {
    let (dir, store) = temp_store();
    let name = Name::new("m0-v0").unwrap();
    store.create_record(&name).await.unwrap();
    let other = Connection::open(dir.path().join("leases.db")).unwrap();
    other
        .execute("UPDATE lease_records SET lease_state = 'leased'", [])
        .unwrap();
    for err in [
        store
            .acquire(&name, LeaseDuration::Infinite, None)
            .await
            .unwrap_err(),
        store.read(&name).await.unwrap_err(),
        store.list().await.unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(matches!(err, LeaseError::Backend { .. }), "{msg}");
        assert!(msg.contains("leases.db") && msg.contains("m0-v0"), "{msg}");
    }
}

fn manual_store() -> (tempfile::TempDir, Arc<ManualStoreClock>, SqliteLeaseStore) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualStoreClock::new(T0 as u64));
    let store =
        SqliteLeaseStore::open_with_clock(&dir.path().join("leases.db"), clock.clone()).unwrap();
    (dir, clock, store)
}

fn stored_boot(dir: &tempfile::TempDir) -> String {
    Connection::open(dir.path().join("leases.db"))
        .unwrap()
        .query_row("SELECT boot_id FROM store_clock", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn a_reboot_expires_every_fixed_lease_and_ends_every_break() {
    let (dir, clock, store) = manual_store();
    let [fixed_one, breaking_one, infinite_one, free_one] =
        ["m0-v0", "m0-v1", "m0-v2", "m0-v3"].map(|n| Name::new(n).unwrap());
    for n in [&fixed_one, &breaking_one, &infinite_one, &free_one] {
        store.create_record(n).await.unwrap();
    }
    let a = store.acquire(&fixed_one, fixed(60), None).await.unwrap();
    store.acquire(&breaking_one, fixed(60), None).await.unwrap();
    store
        .break_lease(&breaking_one, Some(BreakPeriod::MAX))
        .await
        .unwrap();
    store
        .acquire(&infinite_one, LeaseDuration::Infinite, None)
        .await
        .unwrap();
    assert_eq!(stored_boot(&dir), ManualStoreClock::FIRST_BOOT);

    // A new boot whose clock reads less than the old boot's instants: without the
    // boot id these leases would look live for most of an hour.
    clock.reboot("manual-boot-2", 5 * SEC as u64);
    let states = |records: Vec<LeaseRecord>| -> Vec<(String, LeaseState)> {
        records
            .into_iter()
            .map(|r| (r.identity.to_string(), r.state))
            .collect()
    };
    let expected = vec![
        ("m0-v0".to_string(), LeaseState::Expired),
        ("m0-v1".to_string(), LeaseState::Broken),
        ("m0-v2".to_string(), LeaseState::Leased),
        ("m0-v3".to_string(), LeaseState::Available),
    ];
    // Read-only transactions compute it, and write nothing.
    assert_eq!(states(store.list().await.unwrap()), expected);
    assert_eq!(store.read(&fixed_one).await.unwrap().remaining, None);
    assert_eq!(stored_boot(&dir), ManualStoreClock::FIRST_BOOT);

    // The first write rewrites every row and records the new boot.
    store.create_record(&free_one).await.unwrap();
    assert_eq!(stored_boot(&dir), "manual-boot-2");
    assert_eq!(states(store.list().await.unwrap()), expected);
    let raw: (Option<i64>, Option<i64>) = Connection::open(dir.path().join("leases.db"))
        .unwrap()
        .query_row(
            "SELECT expires_at_ms, break_until_ms FROM lease_records WHERE identity = 'm0-v0'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(raw, (Some(BOOT_START_MS), None));

    // From then on the new boot's clock counts: a new lease lasts its full duration.
    let b = store.acquire(&fixed_one, fixed(15), None).await.unwrap();
    assert_ne!(a, b);
    clock.advance(Duration::from_secs(14));
    assert_eq!(
        store.read(&fixed_one).await.unwrap().remaining,
        Some(Duration::from_secs(1))
    );
    assert!(matches!(
        store.acquire(&fixed_one, fixed(15), None).await,
        Err(LeaseError::HeldByOther { .. })
    ));
    store.acquire(&breaking_one, fixed(15), None).await.unwrap();
}

#[tokio::test]
async fn operations_on_the_same_boot_leave_the_file_unchanged() {
    let (dir, clock, store) = manual_store();
    let n = Name::new("m0-v0").unwrap();
    store.create_record(&n).await.unwrap();
    let changes = |c: &Connection| -> i64 {
        c.query_row("PRAGMA data_version", [], |r| r.get(0))
            .unwrap()
    };
    // data_version moves when another connection commits a change to the file.
    let watcher = Connection::open(dir.path().join("leases.db")).unwrap();
    let before = changes(&watcher);
    clock.advance(Duration::from_secs(3600));
    store.create_record(&n).await.unwrap();
    store.read(&n).await.unwrap();
    store.list().await.unwrap();
    drop(SqliteLeaseStore::open_with_clock(
        &dir.path().join("leases.db"),
        clock.clone(),
    ));
    assert_eq!(changes(&watcher), before, "the file changed");
    assert_eq!(stored_boot(&dir), ManualStoreClock::FIRST_BOOT);
}

/// Version 1's table, as that version created it.
const SCHEMA_V1: &str = "
        CREATE TABLE leases (
            identity       TEXT PRIMARY KEY NOT NULL,
            lease_state    TEXT NOT NULL
                           CHECK (lease_state IN ('available', 'leased', 'breaking', 'broken')),
            lease_id       TEXT,
            duration_secs  INTEGER,
            expires_at_ms  INTEGER,
            break_until_ms INTEGER,
            metadata       TEXT NOT NULL DEFAULT '{}'
        ) STRICT;
        PRAGMA user_version = 1;
    ";

#[tokio::test]
async fn a_version_1_file_is_converted_in_place_keeping_each_leases_time_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    let old = Connection::open(&path).unwrap();
    old.execute_batch(SCHEMA_V1).unwrap();
    old.pragma_update(None, "journal_mode", "WAL").unwrap();
    let wall = wall_clock_millis();
    let lid = id(1).to_string();
    let insert = |name: &str, state: &str, dur: Option<i64>, exp: Option<i64>, brk: Option<i64>| {
        let lid = (state != "available").then_some(lid.as_str());
        old.execute(
            "INSERT INTO leases VALUES (?1, ?2, ?3, ?4, ?5, ?6, '{\"epoch\":\"3\"}')",
            params![name, state, lid, dur, exp, brk],
        )
        .unwrap();
    };
    insert("m0-v0", "leased", Some(60), Some(wall + 40 * SEC), None);
    insert("m0-v1", "breaking", Some(60), None, Some(wall + 20 * SEC));
    insert("m0-v2", "leased", Some(15), Some(wall - 5 * SEC), None);
    insert("m0-v3", "leased", Some(-1), None, None);
    insert("m0-v4", "available", None, None, None);

    // A new build opens it, on a clock an hour into its boot.
    let clock = Arc::new(ManualStoreClock::new(3_600 * SEC as u64));
    let store = SqliteLeaseStore::open_with_clock(&path, clock.clone()).unwrap();
    let records = store.list().await.unwrap();
    let about = |left: Option<Duration>, secs: u64| {
        // The wall clock moved on between writing the rows and the conversion.
        left.is_some_and(|l| l <= Duration::from_secs(secs) && l > Duration::from_secs(secs - 2))
    };
    assert_eq!(records[0].state, LeaseState::Leased);
    assert!(about(records[0].remaining, 40), "{:?}", records[0]);
    assert_eq!(records[1].state, LeaseState::Breaking);
    assert!(about(records[1].remaining, 20), "{:?}", records[1]);
    assert_eq!(records[2].state, LeaseState::Expired);
    assert_eq!(records[3].state, LeaseState::Leased);
    assert_eq!(records[3].remaining, None);
    assert_eq!(records[4].state, LeaseState::Available);
    assert!(records.iter().all(|r| r.epoch() == 3), "metadata kept");
    // The instants are on the new clock now, and run out on it.
    clock.advance(Duration::from_secs(40));
    assert_eq!(
        store.read(&records[0].identity).await.unwrap().state,
        LeaseState::Expired
    );
    let stored: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, SCHEMA_VERSION);
    assert_eq!(stored_boot(&dir), ManualStoreClock::FIRST_BOOT);

    // A process of the old version that had the file open fails from now on, rather
    // than reading the new instants as wall-clock ones.
    let err = old
        .query_row("SELECT count(*) FROM leases", [], |r| r.get::<_, i64>(0))
        .unwrap_err();
    assert!(err.to_string().contains("no such table: leases"), "{err}");
}

#[test]
fn other_schema_versions_and_foreign_databases_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    drop(SqliteLeaseStore::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 3)
        .unwrap();
    let err = SqliteLeaseStore::open(&path).unwrap_err();
    assert!(err.to_string().contains("schema version is 3"), "{err}");

    let foreign = dir.path().join("other.db");
    Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let err = SqliteLeaseStore::open(&foreign).unwrap_err();
    assert!(err.to_string().contains("not a lease store"), "{err}");
}

#[test]
fn a_new_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    let store = SqliteLeaseStore::open(&path).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    // Open connections keep the WAL and shared-memory files; they hold lease data too.
    for side in ["leases.db-wal", "leases.db-shm"] {
        assert_eq!(mode(&dir.path().join(side)), 0o600, "{side}");
    }
    drop(store);
}
