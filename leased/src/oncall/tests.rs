use super::*;

use shared::lease::sqlite::SqliteLeaseStore;
use shared::lease::{LeaseDuration, LeaseId, ManualStoreClock, Metadata};

/// Store time at the start of every test, in seconds since the Unix epoch.
const T0: u64 = 1_700_000_000;
const ADDR: [&str; 4] = [
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
];

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

/// `text` with every run of whitespace made one space, so phrases match across wraps.
fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A `--period` of `s` seconds.
fn period(s: u64) -> BreakPeriod {
    BreakPeriod::from_secs(s).unwrap()
}

/// Metadata as a store reads it back, where nothing checks it: `pairs` put straight into an
/// SQLite file, as an older `leased` or another writer may have left them. The checked
/// constructors refuse such metadata, so a record holds it only when a store read it.
fn stored_metadata(pairs: &[(&str, &str)]) -> Metadata {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.db");
    let store = SqliteLeaseStore::open(&path).unwrap();
    let n = name("m0-v0");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(store.create_record(&n)).unwrap();
    let map: std::collections::BTreeMap<&str, &str> = pairs.iter().copied().collect();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE lease_records SET metadata = ?1",
            [serde_json::to_string(&map).unwrap()],
        )
        .unwrap();
    rt.block_on(store.read(&n)).unwrap().metadata
}

/// A sqlite store in a temporary directory on a clock that moves only when told.
struct Fixture {
    _dir: tempfile::TempDir,
    clock: Arc<ManualStoreClock>,
    store: SqliteLeaseStore,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualStoreClock::new(T0 * 1000));
        let store = SqliteLeaseStore::open_with_clock(&dir.path().join("leases.db"), clock.clone())
            .unwrap();
        Self {
            _dir: dir,
            clock,
            store,
        }
    }

    fn now(&self) -> u64 {
        self.clock.now_millis() / 1000
    }

    /// Acquires `id` and writes the metadata a daemon writes, with the given holder.
    async fn hold(
        &self,
        id: &str,
        duration: LeaseDuration,
        holder: &[(&str, &str)],
        epoch: u64,
        address: &str,
    ) -> LeaseId {
        let n = name(id);
        self.store.create_record(&n).await.unwrap();
        let lease = self.store.acquire(&n, duration, None).await.unwrap();
        let mut md = Metadata::from_pairs(holder.iter().copied()).unwrap();
        md.insert(meta::ACQUIRED_AT, self.now().to_string())
            .unwrap();
        md.insert(meta::EPOCH, epoch.to_string()).unwrap();
        md.insert(meta::ADDRESS, address).unwrap();
        self.store.write_metadata(&n, &lease, &md).await.unwrap();
        lease
    }
}

fn fixed(s: u64) -> LeaseDuration {
    LeaseDuration::from_secs(s).unwrap()
}

fn node(n: &str, pid: &str) -> Vec<(&'static str, String)> {
    vec![
        (meta::HOLDER_NODE, n.to_owned()),
        (meta::HOLDER_HOST, format!("{n}.internal")),
        (
            meta::HOLDER_BOOT_ID,
            "0b8e6f1c-7d5e-4c1a-9a57-3f0e2d1c4b5a".to_owned(),
        ),
        (meta::HOLDER_PID, pid.to_owned()),
    ]
}

fn pairs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, s)| (*k, s.as_str())).collect()
}

/// Seven identities, one per state (two available), observed at T0 + 20 s:
/// - m0-v0: never leased;
/// - m0-v1: leased at +10 for 15 s (5 s left), vm-1 pid 4242, epoch 3;
/// - m0-v2: leased at +0 for 15 s, expired at +15, vm-2 pid 77, epoch 7;
/// - m0-v3: leased at +0, broken at +10 with period 0;
/// - m0-v4: leased at +10 for 15 s, broken at +18 with period 4 (2 s left at +20);
/// - m0-v5: infinite lease at +0 by a holder that wrote only its host;
/// - m0-v6: leased at +0 and released at +5: available, last holder's metadata kept.
async fn every_state() -> Fixture {
    let f = Fixture::new();
    f.store.create_record(&name("m0-v0")).await.unwrap();
    f.hold("m0-v2", fixed(15), &pairs(&node("vm-2", "77")), 7, ADDR[2])
        .await;
    f.hold("m0-v3", fixed(15), &pairs(&node("vm-3", "31")), 2, ADDR[3])
        .await;
    f.hold(
        "m0-v5",
        LeaseDuration::Infinite,
        &[(meta::HOLDER_HOST, "host-5")],
        1,
        ADDR[0],
    )
    .await;
    let v6 = f
        .hold("m0-v6", fixed(15), &pairs(&node("vm-6", "66")), 2, ADDR[1])
        .await;
    f.clock.advance(secs(5));
    f.store.release(&name("m0-v6"), &v6).await.unwrap();
    f.clock.advance(secs(5));
    f.store
        .break_lease(&name("m0-v3"), Some(BreakPeriod::ZERO))
        .await
        .unwrap();
    f.hold(
        "m0-v1",
        fixed(15),
        &pairs(&node("vm-1", "4242")),
        3,
        ADDR[1],
    )
    .await;
    f.hold("m0-v4", fixed(15), &pairs(&node("vm-4", "9")), 5, ADDR[0])
        .await;
    f.clock.advance(secs(8));
    let left = f
        .store
        .break_lease(&name("m0-v4"), Some(period(4)))
        .await
        .unwrap();
    assert_eq!(left, secs(4));
    f.clock.advance(secs(2));
    assert_eq!(f.now(), T0 + 20);
    f
}

fn row(
    identity: &str,
    address: Option<&str>,
    state: LeaseState,
    holder: Option<&str>,
    epoch: Option<u64>,
    held_for_secs: Option<u64>,
    expires_in_secs: Option<u64>,
) -> StatusRow {
    StatusRow {
        identity: identity.into(),
        address: address.map(Into::into),
        state,
        holder: holder.map(Into::into),
        epoch,
        held_for_secs,
        expires_in_secs,
        last_fence: None,
        last_fence_detail: None,
        last_fence_by: None,
        enode: None,
        // As on sqlite: the store reports the time left on every live lease.
        sign_bound: expires_in_secs.map(|secs| SignBound {
            secs,
            basis: BoundBasis::Remaining,
        }),
    }
}

fn expected_rows() -> Vec<StatusRow> {
    use LeaseState::*;
    vec![
        row("m0-v0", None, Available, None, None, None, None),
        row(
            "m0-v1",
            Some(ADDR[1]),
            Leased,
            Some("vm-1 (pid 4242)"),
            Some(3),
            Some(10),
            Some(5),
        ),
        row(
            "m0-v2",
            Some(ADDR[2]),
            Expired,
            Some("vm-2 (pid 77, stale)"),
            Some(7),
            None,
            None,
        ),
        row("m0-v3", Some(ADDR[3]), Broken, None, Some(2), None, None),
        row(
            "m0-v4",
            Some(ADDR[0]),
            Breaking,
            Some("vm-4 (pid 9)"),
            Some(5),
            None,
            Some(2),
        ),
        row(
            "m0-v5",
            Some(ADDR[0]),
            Leased,
            Some("host-5"),
            Some(1),
            Some(20),
            None,
        ),
        row("m0-v6", Some(ADDR[1]), Available, None, Some(2), None, None),
    ]
}

#[tokio::test]
async fn a_row_per_identity_in_every_state() {
    let f = every_state().await;
    let rows = status(&f.store, f.now()).await.unwrap();
    assert_eq!(rows, expected_rows());
}

#[test]
fn rows_round_up_remaining_time_and_never_go_negative() {
    let acquired_at = (T0 + 30).to_string();
    let md = stored_metadata(&[
        (meta::ACQUIRED_AT, &acquired_at),
        (meta::HOLDER_PID, "not-a-pid"),
        (meta::HOLDER_NODE, "  "),
        (meta::HOLDER_HOST, "vm-9"),
        (meta::EPOCH, "x"),
    ]);
    let record = LeaseRecord {
        identity: name("m0-v9"),
        state: LeaseState::Leased,
        duration: Some(fixed(15)),
        remaining: Some(Duration::from_millis(4_001)),
        metadata: md,
    };
    let r = status_row(&record, T0);
    assert_eq!(r.expires_in_secs, Some(5));
    assert_eq!(
        r.held_for_secs,
        Some(0),
        "acquired_at ahead of this host's clock"
    );
    assert_eq!(
        r.holder.as_deref(),
        Some("vm-9"),
        "blank node falls back to host"
    );
    assert_eq!(r.epoch, None, "an unreadable epoch is unknown, not 0");
}

/// A record as a `blob:` store reads it: no time left, no duration for a fixed lease.
fn blob_record(state: LeaseState, metadata: &[(&str, &str)]) -> LeaseRecord {
    LeaseRecord {
        identity: name("m0-v1"),
        state,
        duration: None,
        remaining: None,
        metadata: stored_metadata(metadata),
    }
}

#[test]
fn the_holders_bound_is_the_time_left_else_the_lease_duration_else_60s() {
    use BoundBasis::*;
    let bound = |r: &LeaseRecord| sign_bound(r).map(|b| (b.secs, b.basis));
    let leased = |md: &[(&str, &str)]| blob_record(LeaseState::Leased, md);

    let mut sqlite = leased(&[(meta::LEASE_SECS, "60")]);
    sqlite.duration = Some(fixed(15));
    sqlite.remaining = Some(std::time::Duration::from_millis(4_001));
    assert_eq!(bound(&sqlite), Some((5, Remaining)), "the store knows best");

    assert_eq!(
        bound(&leased(&[(meta::LEASE_SECS, "20")])),
        Some((20, LeaseSecs))
    );
    assert_eq!(
        bound(&leased(&[(meta::LEASE_SECS, " 45 ")])),
        Some((45, LeaseSecs))
    );
    for junk in ["", "5", "14", "61", "3600", "-15", "15.5", "fifteen"] {
        assert_eq!(
            bound(&leased(&[(meta::LEASE_SECS, junk)])),
            Some((60, AzureMax)),
            "lease_secs {junk:?} is not a lease duration"
        );
    }
    assert_eq!(bound(&leased(&[])), Some((60, AzureMax)));

    let mut stored = leased(&[(meta::LEASE_SECS, "20")]);
    stored.duration = Some(fixed(30));
    assert_eq!(bound(&stored), Some((30, Duration)));
    stored.duration = Some(fixed(15));
    assert_eq!(
        bound(&stored),
        Some((20, LeaseSecs)),
        "the longer of the two, whichever is stale"
    );

    let mut breaking = blob_record(LeaseState::Breaking, &[(meta::LEASE_SECS, "15")]);
    assert_eq!(bound(&breaking), Some((15, LeaseSecs)));
    breaking.duration = Some(LeaseDuration::Infinite);
    assert_eq!(
        bound(&breaking),
        Some((60, AzureMax)),
        "a break lasts 60 s at most"
    );

    let mut infinite = leased(&[(meta::LEASE_SECS, "15")]);
    infinite.duration = Some(LeaseDuration::Infinite);
    assert_eq!(bound(&infinite), None, "a tool's lease: it breaks at once");
    for state in [
        LeaseState::Available,
        LeaseState::Expired,
        LeaseState::Broken,
    ] {
        assert_eq!(
            bound(&blob_record(state, &[(meta::LEASE_SECS, "15")])),
            None
        );
    }
}

#[test]
fn without_the_time_left_the_table_shows_its_bound_never_never() {
    let node = node("vm-1", "4242");
    let mut md = pairs(&node);
    md.push((meta::LEASE_SECS, "15"));
    let blob = status_row(&blob_record(LeaseState::Leased, &md), T0);
    assert_eq!(blob.expires_in_secs, None);
    let text = render_table(std::slice::from_ref(&blob));
    assert!(text.lines().nth(1).unwrap().ends_with("<=15s"), "{text}");
    let text = flat(&explain_break(&blob, None));
    assert!(
        text.contains(
            "Without --period the period is the rest of the current lease, which the \
             store does not report: at most 15s (the lease duration its daemon wrote)."
        ),
        "{text}"
    );
    assert!(!text.contains("infinite"), "{text}");

    let mut breaking = blob_record(LeaseState::Breaking, &md);
    breaking.metadata.remove(meta::LEASE_SECS);
    let text = render_table(&[status_row(&breaking, T0)]);
    assert!(text.contains("BREAKING  vm-1 (pid 4242)"), "{text}");
    assert!(flat(&text).ends_with("acquirable in <=1m00s."), "{text}");
}

#[tokio::test]
async fn json_has_exactly_the_snake_case_fields() {
    let f = every_state().await;
    let rows = status(&f.store, f.now()).await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&render_json(&rows)).unwrap();
    let array = json.as_array().expect("an array");
    assert_eq!(array.len(), 7);
    let want = [
        "address",
        "enode",
        "epoch",
        "expires_in_secs",
        "held_for_secs",
        "holder",
        "identity",
        "last_fence",
        "last_fence_by",
        "last_fence_detail",
        "state",
    ];
    for object in array {
        let keys: Vec<&str> = object
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, want);
    }
    assert_eq!(
        array[1],
        serde_json::json!({
            "identity": "m0-v1",
            "address": ADDR[1],
            "state": "leased",
            "holder": "vm-1 (pid 4242)",
            "epoch": 3,
            "held_for_secs": 10,
            "expires_in_secs": 5,
            "last_fence": null,
            "last_fence_detail": null,
            "last_fence_by": null,
            "enode": null,
        })
    );
    assert_eq!(
        array[0],
        serde_json::json!({
            "identity": "m0-v0",
            "address": null,
            "state": "available",
            "holder": null,
            "epoch": null,
            "held_for_secs": null,
            "expires_in_secs": null,
            "last_fence": null,
            "last_fence_detail": null,
            "last_fence_by": null,
            "enode": null,
        })
    );
    assert_eq!(array[2]["state"], "expired");
    assert_eq!(array[2]["holder"], "vm-2 (pid 77, stale)");
    assert_eq!(array[4]["state"], "breaking");
    assert_eq!(array[4]["expires_in_secs"], 2);
    assert_eq!(render_json(&[]), "[]");
}

#[tokio::test]
async fn the_table_shows_holders_attention_states_and_a_summary() {
    let f = every_state().await;
    let rows = status(&f.store, f.now()).await.unwrap();
    let text = render_table(&rows);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("IDENTITY  ADDRESS"), "{text}");

    // Aligned: every state cell starts where the STATE header does.
    let state_at = lines[0].find("STATE").unwrap();
    for (line, want) in lines[1..8].iter().zip([
        "available",
        "leased",
        "EXPIRED",
        "BROKEN",
        "BREAKING",
        "leased",
        "available",
    ]) {
        assert_eq!(&line[state_at..state_at + want.len()], want, "{text}");
    }
    assert!(lines[2].contains("vm-1 (pid 4242)") && lines[2].contains(ADDR[1]));
    assert!(
        lines[2].contains("10s") && lines[2].ends_with("5s"),
        "{text}"
    );
    assert!(lines[3].contains("vm-2 (pid 77, stale)"), "{text}");
    assert!(lines[6].ends_with("never"), "infinite lease: {text}");
    assert!(
        !lines[7].contains("vm-6"),
        "no holder once released: {text}"
    );
    assert!(lines.iter().all(|l| l == &l.trim_end()));
    assert_eq!(lines[8], "");
    assert_eq!(
        lines[9],
        "7 identities: 2 held, 1 breaking, 1 expired, 1 broken, 2 available"
    );
    // Notes are wrapped to 80 columns, continuations indented.
    assert_eq!(
        lines[10..],
        [
            "! m0-v2 EXPIRED: vm-2 (pid 77, stale) stopped renewing; a standby may take it",
            "  now (if none does, none is running).",
            "! m0-v3 BROKEN: acquirable now; no daemon has taken it yet.",
            "! m0-v4 BREAKING: vm-4 (pid 9) lost the lease and is fencing; acquirable in 2s.",
        ],
        "{text}"
    );
}

impl Fixture {
    /// What a daemon does when it gives `id` up: acquires it (as `holder`), writes its
    /// holder keys with `last_fence` and its detail, and releases it.
    async fn given_up(&self, id: &str, holder: &[(&str, &str)], fence: &[(&str, &str)]) {
        let mut md = holder.to_vec();
        md.extend_from_slice(fence);
        let lease = self.hold(id, fixed(15), &md, 1, ADDR[0]).await;
        self.store.release(&name(id), &lease).await.unwrap();
    }
}

const NO_CLIENT: &str =
    "cannot start the client /nonexistent/client: No such file or directory (os error 2)";

/// m0-v0 given up (hand-off failed), m0-v1 stopped, m0-v2 given up (crash loop), m0-v3 given up with a long one, m0-v4 given up and taken by a healthy node,
/// m0-v5 given up by a writer that named no holder.
async fn given_up() -> Fixture {
    let f = Fixture::new();
    let (vm1, vm2, vm3) = (node("vm-1", "4242"), node("vm-2", "77"), node("vm-3", "31"));
    let fence = |reason, detail| {
        vec![
            (meta::LAST_FENCE, reason),
            (meta::LAST_FENCE_DETAIL, detail),
        ]
    };
    f.given_up("m0-v0", &pairs(&vm1), &fence("hand_off_failed", NO_CLIENT))
        .await;
    f.given_up("m0-v1", &pairs(&vm2), &fence("shutdown", "SIGTERM"))
        .await;
    f.given_up(
        "m0-v2",
        &pairs(&vm3),
        &fence("crash_loop", "the client exited 5 times within 60 s"),
    )
    .await;
    let long = format!("key unreadable: {}end", "x ".repeat(150));
    f.given_up("m0-v3", &pairs(&vm1), &fence("deadline_missed", &long))
        .await;
    f.given_up("m0-v4", &pairs(&vm1), &fence("hand_off_failed", NO_CLIENT))
        .await;
    f.hold("m0-v4", fixed(15), &pairs(&vm2), 2, ADDR[0]).await;
    f.given_up("m0-v5", &[], &[(meta::LAST_FENCE, "lease_lost")])
        .await;
    f
}

#[tokio::test]
async fn a_daemon_that_gave_an_identity_up_is_named_with_its_reason() {
    let f = given_up().await;
    let rows = status(&f.store, f.now()).await.unwrap();
    let fence = |r: &StatusRow| {
        (
            r.last_fence.clone(),
            r.last_fence_detail.clone(),
            r.last_fence_by.clone(),
        )
    };
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        fence(&rows[0]),
        (
            some("hand_off_failed"),
            some(NO_CLIENT),
            some("vm-1 (pid 4242)")
        )
    );
    assert_eq!(rows[0].state, LeaseState::Available);
    assert_eq!(rows[0].holder, None, "nobody holds it");
    assert_eq!(
        fence(&rows[1]),
        (some("shutdown"), some("SIGTERM"), some("vm-2 (pid 77)"))
    );
    assert_eq!(
        fence(&rows[4]),
        (None, None, None),
        "the next holder's metadata replaces it"
    );
    assert_eq!(rows[4].holder.as_deref(), Some("vm-2 (pid 77)"));
    assert_eq!(fence(&rows[5]), (some("lease_lost"), None, None));

    let text = render_table(&rows);
    let notes: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("6 identities"))
        .skip(1)
        .collect();
    assert!(notes.iter().all(|l| l.chars().count() <= WRAP), "{text}");
    let notes = notes.join("\n");
    assert!(
        notes.starts_with(
            "! m0-v0: vm-1 (pid 4242) gave it up: hand_off_failed: cannot start the client\n  \
             /nonexistent/client: No such file or directory (os error 2)\n"
        ),
        "{text}"
    );
    assert!(!notes.contains("m0-v1"), "a stop is no news: {text}");
    assert!(
        flat(&notes).contains(
            "! m0-v2: vm-3 (pid 31) gave it up: crash_loop: the client exited 5 times \
             within 60 s"
        ),
        "{text}"
    );
    assert!(
        flat(&notes).contains(&format!(
            "! m0-v3: vm-1 (pid 4242) gave it up: deadline_missed: key unreadable: {}x...",
            "x ".repeat(91)
        )),
        "the detail is cut to 200 characters: {text}"
    );
    assert!(!notes.contains("m0-v4"), "{text}");
    assert!(
        notes.ends_with("! m0-v5: its last holder gave it up: lease_lost."),
        "{text}"
    );

    let json: serde_json::Value = serde_json::from_str(&render_json(&rows)).unwrap();
    assert_eq!(json[0]["last_fence"], "hand_off_failed");
    assert_eq!(json[0]["last_fence_detail"], NO_CLIENT);
    assert_eq!(json[0]["last_fence_by"], "vm-1 (pid 4242)");
    assert_eq!(
        json[1]["last_fence"], "shutdown",
        "the JSON has every reason"
    );
    assert_eq!(json[2]["last_fence"], "crash_loop");
    assert!(json[3]["last_fence_detail"].as_str().unwrap().len() > 300);
    assert!(json[4]["last_fence"].is_null() && json[4]["last_fence_by"].is_null());
    assert!(json[5]["last_fence_by"].is_null() && json[5]["last_fence_detail"].is_null());
}

#[test]
fn summaries_and_durations_read_well() {
    assert!(render_table(&[]).starts_with("0 identities: the lease store has no records"));
    let one = row(
        "m0-v0",
        None,
        LeaseState::Leased,
        None,
        None,
        Some(7325),
        None,
    );
    let text = render_table(std::slice::from_ref(&one));
    assert!(text.ends_with("\n\n1 identity: 1 held\n"), "{text}");
    assert!(
        text.contains("unknown"),
        "a leased row with no holder: {text}"
    );
    assert!(text.contains("2h02m"), "{text}");
    assert_eq!(
        [0, 59, 60, 61, 3599, 3600, 86_399, 86_400, 200_000].map(human_secs),
        ["0s", "59s", "1m00s", "1m01s", "59m59s", "1h00m", "23h59m", "1d00h", "2d07h"]
    );
}

#[test]
fn the_table_does_not_pass_control_characters_through() {
    let evil = row(
        "m0-v0",
        Some("0x\u{1b}]0;pwned\u{7}"),
        LeaseState::Leased,
        Some("vm\u{1b}[31m-1\r\n"),
        None,
        None,
        None,
    );
    let text = render_table(std::slice::from_ref(&evil)) + &explain_break(&evil, None);
    assert!(!text.contains('\u{1b}') && !text.contains('\r') && !text.contains('\u{7}'));
    assert!(text.contains("vm?[31m-1??"), "{text}");

    // The stores take only printable ASCII metadata; whoever else wrote this is not
    // obeyed either.
    let mut given_up = evil;
    given_up.state = LeaseState::Available;
    given_up.last_fence = Some("crash_loop\u{1b}[2J".into());
    given_up.last_fence_detail = Some("client exited\r\n5 times\u{7}".into());
    given_up.last_fence_by = given_up.holder.take();
    let text = render_table(&[given_up]);
    assert!(!text.contains(['\u{1b}', '\r', '\u{7}']), "{text}");
    assert!(
        flat(&text)
            .contains("! m0-v0: vm?[31m-1?? gave it up: crash_loop?[2J: client exited??5 times?"),
        "{text}"
    );
}

/// Runs `leased break ID --leases SPEC [--yes] [--period P] [--force-overlap]` on `store`;
/// the result and what it printed.
async fn ask(
    store: &dyn LeaseStore,
    id: &str,
    yes: bool,
    period: Option<u64>,
    force_overlap: bool,
    now_unix: u64,
) -> (Result<(), Failure>, String) {
    let request = BreakRequest {
        identity: name(id),
        yes,
        period: period.map(self::period),
        force_overlap,
        store_args: "--leases SPEC".into(),
    };
    let mut out = Vec::new();
    let result = break_on(store, &request, now_unix, &mut out).await;
    (result, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn break_without_yes_explains_and_changes_nothing() {
    let f = every_state().await;
    let v1 = name("m0-v1");
    let (result, out) = ask(&f.store, "m0-v1", false, None, false, f.now()).await;
    let err = result.unwrap_err();
    assert_eq!(err.status(), Status::Usage);
    assert!(err.message().contains("m0-v1") && err.message().contains("--yes"));
    let text = flat(&out);
    assert!(text.starts_with("Not breaking m0-v1: breaking needs --yes"));
    assert!(text.contains("vm-1 (pid 4242)"), "shows the row: {text}");
    assert!(text.contains("the rest of the current lease, 5s"), "{text}");
    assert!(text.contains("stopping the holder's daemon"), "{text}");
    assert!(!text.contains("WARNING"), "{text}");
    let after = f.store.read(&v1).await.unwrap();
    assert_eq!(after.state, LeaseState::Leased);
    assert_eq!(after.remaining, Some(secs(5)));
}

#[test]
fn the_explanation_fits_the_state_and_warns_about_short_periods() {
    let leased = row(
        "m0-v1",
        Some(ADDR[1]),
        LeaseState::Leased,
        Some("vm-1 (pid 4242)"),
        Some(3),
        Some(10),
        Some(12),
    );
    let raw = explain_break(&leased, Some(period(3)));
    for line in raw
        .lines()
        .filter(|l| !l.contains(ADDR[1]) && !l.starts_with("IDENTITY"))
    {
        assert!(line.chars().count() <= WRAP, "{line:?} is too long");
    }
    let text = flat(&raw);
    assert!(
        text.contains(
            "WARNING: with --period 3, a standby may acquire m0-v1 in 3 s; vm-1 (pid \
             4242) may sign until up to 12 s from now (the time left on its lease, as \
             the store reports it): up to 9 s with two signers. With --yes such a \
             period is refused unless --force-overlap is given too"
        ),
        "{text}"
    );
    assert!(!explain_break(&leased, Some(period(12))).contains("WARNING"));
    assert!(!explain_break(&leased, None).contains("WARNING"));
    assert!(raw.ends_with("leased break m0-v1 --leases SPEC --yes [--period SECONDS]\n"));

    let mut available = leased.clone();
    available.state = LeaseState::Available;
    assert!(flat(&explain_break(&available, None)).contains("no lease to break"));
    let mut broken = leased.clone();
    broken.state = LeaseState::Broken;
    assert!(flat(&explain_break(&broken, None)).contains("already broken"));
    let mut expired = leased.clone();
    expired.state = LeaseState::Expired;
    assert!(flat(&explain_break(&expired, None)).contains("can no longer renew it back"));
    let mut breaking = leased;
    breaking.state = LeaseState::Breaking;
    assert!(flat(&explain_break(&breaking, None)).contains("already running: acquirable in 12s"));
    assert!(flat(&explain_break(&breaking, Some(period(2))))
        .contains("WARNING: with --period 2, a standby may acquire m0-v1 in 2 s"));
}

#[test]
fn wrapping_keeps_words_whole_and_indents_continuations() {
    let text = "word ".repeat(40);
    let wrapped = wrap(&format!("1. {text}"), "   ");
    let lines: Vec<&str> = wrapped.lines().collect();
    assert!(lines.len() > 2, "{wrapped}");
    assert!(lines.iter().all(|l| l.len() <= WRAP && !l.ends_with(' ')));
    assert!(
        lines[1..].iter().all(|l| l.starts_with("   word")),
        "{wrapped}"
    );
    assert_eq!(flat(&wrapped), flat(&format!("1. {text}")));
    let long = "x".repeat(WRAP + 5);
    assert_eq!(wrap(&format!("a {long} b"), ""), format!("a\n{long}\nb\n"));
}

#[tokio::test]
async fn break_with_a_period_keeps_it_locked_for_that_long() {
    let f = Fixture::new();
    let v1 = name("m0-v1");
    f.hold(
        "m0-v1",
        fixed(15),
        &pairs(&node("vm-1", "4242")),
        3,
        ADDR[1],
    )
    .await;
    f.clock.advance(secs(3)); // 12 s left

    let report = break_identity(&f.store, &v1, Some(period(5)))
        .await
        .unwrap();
    assert_eq!(
        report.outcome,
        BreakOutcome::Breaking {
            acquirable_in: secs(5)
        }
    );
    assert_eq!(report.before.state, LeaseState::Leased);
    assert_eq!(
        render_break(&report),
        "m0-v1 breaking; acquirable in 5 s\nIt was held by vm-1 (pid 4242), epoch 3. \
         That daemon fences at its next renew, or by its own fence deadline if it \
         cannot reach the store.\n"
    );
    let now = f.store.read(&v1).await.unwrap();
    assert_eq!(
        (now.state, now.remaining),
        (LeaseState::Breaking, Some(secs(5)))
    );
    assert!(
        f.store.acquire(&v1, fixed(15), None).await.is_err(),
        "locked during the period"
    );

    // Another break may only shorten it; 0 breaks it now.
    let report = break_identity(&f.store, &v1, Some(BreakPeriod::ZERO))
        .await
        .unwrap();
    assert_eq!(report.outcome, BreakOutcome::Broken);
    assert!(render_break(&report).starts_with("m0-v1 broken; acquirable in 0 s\n"));
    f.store.acquire(&v1, fixed(15), None).await.unwrap();
}

#[tokio::test]
async fn break_without_a_period_waits_out_the_lease_and_says_so() {
    let f = Fixture::new();
    f.hold(
        "m0-v1",
        fixed(15),
        &pairs(&node("vm-1", "4242")),
        3,
        ADDR[1],
    )
    .await;
    f.clock.advance(Duration::from_millis(4_500));
    let (result, text) = ask(&f.store, "m0-v1", true, None, false, f.now()).await;
    result.unwrap();
    assert!(
        text.starts_with("m0-v1 breaking; acquirable in 11 s\n"),
        "10.5 s rounds up: {text}"
    );

    // An identity with no lease: nothing to break, and that is not an error.
    let v0 = name("m0-v0");
    f.store.create_record(&v0).await.unwrap();
    let report = break_identity(&f.store, &v0, None).await.unwrap();
    assert_eq!(report.outcome, BreakOutcome::NoLease);
    assert_eq!(
        render_break(&report),
        "m0-v0 had no lease to break; acquirable in 0 s\n"
    );
}

/// What a real store may do that the fixture's does not: a holder renewing between the
/// command's read and its break, a `blob:` store reporting neither the time left nor the
/// duration of a fixed lease, a break failing. Records the break periods it is sent.
struct Twisted<'a> {
    inner: &'a SqliteLeaseStore,
    /// Renewed just before the next break, as by a holder racing the command.
    renew_before_break: std::sync::Mutex<Option<(Name, LeaseId)>>,
    /// Reads as a `blob:` store does.
    blind: bool,
    /// Breaks with a period fail as a busy store's would.
    fail_period_break: bool,
    breaks: std::sync::Mutex<Vec<Option<BreakPeriod>>>,
}

impl<'a> Twisted<'a> {
    fn new(inner: &'a SqliteLeaseStore) -> Self {
        Self {
            inner,
            renew_before_break: Default::default(),
            blind: false,
            fail_period_break: false,
            breaks: Default::default(),
        }
    }

    fn breaks(&self) -> Vec<Option<BreakPeriod>> {
        self.breaks.lock().unwrap().clone()
    }

    fn seen(&self, mut r: LeaseRecord) -> LeaseRecord {
        if self.blind {
            r.remaining = None;
            r.duration = r.duration.filter(|d| *d == LeaseDuration::Infinite);
        }
        r
    }
}

#[async_trait::async_trait]
impl LeaseStore for Twisted<'_> {
    async fn create_record(
        &self,
        identity: &Name,
    ) -> Result<shared::lease::RecordCreated, LeaseError> {
        self.inner.create_record(identity).await
    }
    async fn acquire(
        &self,
        identity: &Name,
        duration: LeaseDuration,
        proposed: Option<&LeaseId>,
    ) -> Result<LeaseId, LeaseError> {
        self.inner.acquire(identity, duration, proposed).await
    }
    async fn renew(&self, identity: &Name, lease: &LeaseId) -> Result<(), LeaseError> {
        self.inner.renew(identity, lease).await
    }
    async fn release(&self, identity: &Name, lease: &LeaseId) -> Result<(), LeaseError> {
        self.inner.release(identity, lease).await
    }
    async fn change(
        &self,
        identity: &Name,
        lease: &LeaseId,
        proposed: &LeaseId,
    ) -> Result<LeaseId, LeaseError> {
        self.inner.change(identity, lease, proposed).await
    }
    async fn break_lease(
        &self,
        identity: &Name,
        period: Option<BreakPeriod>,
    ) -> Result<Duration, LeaseError> {
        self.breaks.lock().unwrap().push(period);
        let racer = self.renew_before_break.lock().unwrap().take();
        if let Some((id, lease)) = racer {
            self.inner.renew(&id, &lease).await.unwrap();
        }
        if self.fail_period_break && period.is_some() {
            return Err(LeaseError::Transient {
                message: "database is locked".into(),
                source: None,
            });
        }
        self.inner.break_lease(identity, period).await
    }
    async fn write_metadata(
        &self,
        identity: &Name,
        lease: &LeaseId,
        metadata: &Metadata,
    ) -> Result<(), LeaseError> {
        self.inner.write_metadata(identity, lease, metadata).await
    }
    async fn read(&self, identity: &Name) -> Result<LeaseRecord, LeaseError> {
        Ok(self.seen(self.inner.read(identity).await?))
    }
    async fn list(&self) -> Result<Vec<LeaseRecord>, LeaseError> {
        let records = self.inner.list().await?;
        Ok(records.into_iter().map(|r| self.seen(r)).collect())
    }
}

/// m0-v1 held by vm-1 (pid 4242), epoch 3, for 15 s, with `left` of it to go.
async fn held_with(left: u64, extra: &[(&str, &str)]) -> (Fixture, LeaseId) {
    let f = Fixture::new();
    let holder = node("vm-1", "4242");
    let mut md = pairs(&holder);
    md.extend_from_slice(extra);
    let lease = f.hold("m0-v1", fixed(15), &md, 3, ADDR[1]).await;
    f.clock.advance(secs(15 - left));
    (f, lease)
}

async fn state_of(store: &dyn LeaseStore, id: &str) -> (LeaseState, Option<Duration>) {
    let r = store.read(&name(id)).await.unwrap();
    (r.state, r.remaining)
}

#[tokio::test]
async fn a_period_shorter_than_the_holders_time_left_is_refused_and_changes_nothing() {
    let (f, _) = held_with(12, &[]).await;
    for p in [0, 11] {
        let (result, out) = ask(&f.store, "m0-v1", true, Some(p), false, f.now()).await;
        let err = result.unwrap_err();
        assert_eq!(err.status(), Status::Usage);
        assert!(
            err.message().starts_with("m0-v1 not broken: --period")
                && err.message().contains(&format!("for up to {} s", 12 - p))
                && err.message().contains("--force-overlap"),
            "{}",
            err.message()
        );
        let text = flat(&out);
        assert!(
            text.starts_with(&format!(
                "Not breaking m0-v1: --period {p} could let two VMs sign with it."
            )),
            "{out}"
        );
        assert!(
            text.contains("leased vm-1 (pid 4242) 3 3s 12s"),
            "shows the row: {out}"
        );
        assert!(
            text.contains(&format!(
                "With --period {p}, a standby may acquire m0-v1 in {p} s; vm-1 (pid 4242) \
                 may sign until up to 12 s from now (the time left on its lease, as the \
                 store reports it): up to {} s with two signers. Nothing was changed.",
                12 - p
            )),
            "{out}"
        );
        let command =
            format!("leased break m0-v1 --leases SPEC --yes --period {p} --force-overlap");
        assert!(
            out.ends_with(&format!(
                "accepting up to {} s with two signers:\n    {command}\n",
                12 - p
            )),
            "{out}"
        );
        for line in out
            .lines()
            .filter(|l| !l.contains(ADDR[1]) && !l.starts_with("IDENTITY"))
        {
            assert!(line.chars().count() <= WRAP, "{line:?} is too long");
        }
        assert_eq!(
            state_of(&f.store, "m0-v1").await,
            (LeaseState::Leased, Some(secs(12)))
        );
    }
}

#[tokio::test]
async fn a_period_the_check_accepts_is_not_sent_so_a_racing_renew_cannot_shorten_the_lock() {
    let (f, _) = held_with(12, &[]).await;
    let store = Twisted::new(&f.store);
    let (result, out) = ask(&store, "m0-v1", true, Some(12), false, f.now()).await;
    result.unwrap();
    assert!(
        out.starts_with("m0-v1 breaking; acquirable in 12 s\n"),
        "{out}"
    );
    assert!(
        !out.contains("WARNING") && !out.contains("longer than"),
        "{out}"
    );
    assert_eq!(store.breaks(), [None], "the store's default, not --period");

    // 3 s left when read, so --period 5 passes; the holder renews before the break.
    let (f, lease) = held_with(3, &[]).await;
    let store = Twisted::new(&f.store);
    *store.renew_before_break.lock().unwrap() = Some((name("m0-v1"), lease));
    let (result, out) = ask(&store, "m0-v1", true, Some(5), false, f.now()).await;
    result.unwrap();
    assert!(
        out.starts_with("m0-v1 breaking; acquirable in 15 s\n"),
        "{out}"
    );
    assert!(
        flat(&out).contains(
            "It stays locked longer than --period 5: the lease had more time left than \
             the check allowed for (its holder renewed meanwhile"
        ),
        "{out}"
    );
    assert_eq!(store.breaks(), [None]);
    assert_eq!(
        state_of(&f.store, "m0-v1").await,
        (LeaseState::Breaking, Some(secs(15)))
    );
}

#[tokio::test]
async fn force_overlap_breaks_and_prints_the_window_as_a_warning() {
    let (f, _) = held_with(12, &[]).await;
    let store = Twisted::new(&f.store);
    let (result, out) = ask(&store, "m0-v1", true, Some(4), true, f.now()).await;
    result.unwrap();
    assert!(
        out.starts_with("m0-v1 breaking; acquirable in 4 s\n"),
        "{out}"
    );
    assert!(
        flat(&out).ends_with(
            "WARNING: two VMs may sign with m0-v1: a standby may acquire m0-v1 in 4 s; \
             vm-1 (pid 4242) may sign until up to 12 s from now (the time left on its \
             lease, as the store reports it): up to 8 s with two signers."
        ),
        "{out}"
    );
    let warning = &out[out.find("WARNING").unwrap()..];
    assert!(warning.lines().all(|l| l.chars().count() <= WRAP), "{out}");
    // First the safe break, which stops renewals and says what was left; then shorter.
    assert_eq!(store.breaks(), [None, Some(period(4))]);
    assert_eq!(
        state_of(&f.store, "m0-v1").await,
        (LeaseState::Breaking, Some(secs(4)))
    );

    // A holder that renewed after the read may sign for a whole lease: the warning says so.
    let (f, lease) = held_with(3, &[]).await;
    let store = Twisted::new(&f.store);
    *store.renew_before_break.lock().unwrap() = Some((name("m0-v1"), lease));
    let (result, out) = ask(&store, "m0-v1", true, Some(0), true, f.now()).await;
    result.unwrap();
    assert!(
        out.starts_with("m0-v1 broken; acquirable in 0 s\n"),
        "{out}"
    );
    assert!(
        flat(&out).contains("may sign until up to 15 s from now")
            && flat(&out).contains("up to 15 s with two signers"),
        "{out}"
    );
    assert_eq!(state_of(&f.store, "m0-v1").await.0, LeaseState::Broken);
}

#[tokio::test]
async fn when_shortening_a_forced_break_fails_the_safe_break_stays() {
    let (f, _) = held_with(12, &[]).await;
    let mut store = Twisted::new(&f.store);
    store.fail_period_break = true;
    let (result, out) = ask(&store, "m0-v1", true, Some(0), true, f.now()).await;
    let err = result.unwrap_err();
    assert_eq!(err.status(), Status::TempFail);
    assert!(
        err.message().starts_with(
            "m0-v1 is breaking for the rest of its lease (acquirable in 12 s), which is \
             safe; shortening that to --period 0 failed: "
        ),
        "{}",
        err.message()
    );
    assert!(
        out.starts_with("m0-v1 breaking; acquirable in 12 s\n"),
        "{out}"
    );
    assert!(!out.contains("WARNING"), "{out}");
    assert_eq!(
        state_of(&f.store, "m0-v1").await,
        (LeaseState::Breaking, Some(secs(12)))
    );
}

#[tokio::test]
async fn no_flag_is_needed_where_no_holder_can_sign_past_the_period() {
    let f = every_state().await;
    for (id, starts) in [
        ("m0-v0", "m0-v0 had no lease to break"),
        ("m0-v2", "m0-v2 broken; acquirable in 0 s"),
        ("m0-v3", "m0-v3 broken; acquirable in 0 s"),
        ("m0-v5", "m0-v5 broken; acquirable in 0 s"),
        ("m0-v4", "m0-v4 breaking; acquirable in 2 s"),
    ] {
        let period = if id == "m0-v4" { 2 } else { 0 };
        let (result, out) = ask(&f.store, id, true, Some(period), false, f.now()).await;
        result.unwrap_or_else(|e| panic!("{id}: {e:?}\n{out}"));
        assert!(out.starts_with(starts), "{id}: {out}");
        assert!(!out.contains("WARNING"), "{id}: {out}");
    }
    // Shortening a running break is shortening the holder's time to fence.
    let (result, out) = ask(&f.store, "m0-v4", true, Some(0), false, f.now()).await;
    assert_eq!(result.unwrap_err().status(), Status::Usage);
    assert!(
        flat(&out).contains(
            "up to 2 s with two signers. Nothing was changed: the running break goes on, \
             and m0-v4 is acquirable in 2s."
        ),
        "{out}"
    );
}

#[tokio::test]
async fn on_a_blob_store_the_period_is_checked_against_the_holders_lease_duration() {
    // 5 s left in truth, but the store does not say; the holder wrote D = 15 s.
    let (f, _) = held_with(5, &[(meta::LEASE_SECS, "15")]).await;
    let mut store = Twisted::new(&f.store);
    store.blind = true;
    let (result, out) = ask(&store, "m0-v1", true, Some(14), false, f.now()).await;
    assert_eq!(result.unwrap_err().status(), Status::Usage);
    assert!(
        flat(&out).contains(
            "may sign until up to 15 s from now (its lease duration, as its daemon \
             wrote it; the store does not report the time left): up to 1 s with two \
             signers."
        ),
        "{out}"
    );
    assert!(store.breaks().is_empty());
    let (result, out) = ask(&store, "m0-v1", true, Some(15), false, f.now()).await;
    result.unwrap();
    assert!(
        out.starts_with("m0-v1 breaking; acquirable in 5 s\n"),
        "the store's rest of the lease: {out}"
    );

    // No lease_secs: only Azure's longest lease bounds it.
    let (f, _) = held_with(5, &[]).await;
    let mut store = Twisted::new(&f.store);
    store.blind = true;
    let (result, out) = ask(&store, "m0-v1", true, Some(59), false, f.now()).await;
    assert_eq!(result.unwrap_err().status(), Status::Usage);
    assert!(
        flat(&out).contains(
            "may sign until up to 60 s from now (the longest lease Azure grants; the \
             store reports neither the time left nor the lease duration): up to 1 s"
        ),
        "{out}"
    );
    let (result, _) = ask(&store, "m0-v1", true, Some(60), false, f.now()).await;
    result.unwrap();
    assert_eq!(store.breaks(), [None]);
}

#[test]
fn the_command_to_break_anyway_repeats_the_store_arguments_quoted() {
    let args = |extra: &[&str]| {
        let mut argv = vec!["break", "m0-v1", "--yes", "--period", "0"];
        argv.extend_from_slice(extra);
        match parse(&argv).unwrap() {
            Command::Break(a) => a,
            other => panic!("{other:?}"),
        }
    };
    let plain = args(&["--leases", "sqlite:/var/lib/leased/leases.db"]);
    let request = BreakRequest::from_args(&plain, name("m0-v1"), Some(BreakPeriod::ZERO));
    assert_eq!(
        request.forced_command(0),
        "leased break m0-v1 --leases sqlite:/var/lib/leased/leases.db --yes --period 0 \
         --force-overlap"
    );
    let odd = args(&[
        "--leases",
        "sqlite:/srv/my leases/it's.db",
        "--azure-credential",
        "developer-tools",
    ]);
    let request = BreakRequest::from_args(&odd, name("m0-v1"), Some(BreakPeriod::ZERO));
    assert_eq!(
        request.forced_command(3),
        "leased break m0-v1 --leases 'sqlite:/srv/my leases/it'\\''s.db' \
         --azure-credential developer-tools --yes --period 3 --force-overlap"
    );
    assert_eq!(shell_word(""), "''");
}

#[tokio::test]
async fn breaking_an_unknown_identity_names_it() {
    let f = every_state().await;
    let ghost = name("m9-v9");
    let err = break_identity(&f.store, &ghost, None).await.unwrap_err();
    assert!(matches!(&err, LeaseError::NotFound { identity } if *identity == ghost));
    for yes in [true, false] {
        let (result, out) = ask(&f.store, "m9-v9", yes, Some(0), yes, f.now()).await;
        let failure = result.unwrap_err();
        assert_eq!(failure.status(), Status::NoInput);
        assert!(failure.message().contains("m9-v9"), "{}", failure.message());
        assert!(out.is_empty());
    }
}

#[tokio::test]
async fn status_output_is_json_or_the_table() {
    let f = every_state().await;
    let mut json = Vec::new();
    status_on(leases_only(&f.store), true, f.now(), &mut json)
        .await
        .unwrap();
    let json = String::from_utf8(json).unwrap();
    assert!(json.starts_with('[') && json.ends_with("]\n"), "{json}");
    let mut table = Vec::new();
    status_on(leases_only(&f.store), false, f.now(), &mut table)
        .await
        .unwrap();
    assert!(String::from_utf8(table).unwrap().starts_with("IDENTITY"));
}

fn leases_only(store: &dyn LeaseStore) -> StatusStores<'_> {
    StatusStores {
        leases: store,
        secrets: None,
    }
}

/// A `dir:` secret store holding, for each `(identity, address)`, a secret with that
/// address tag (or no tags for an empty address).
async fn secrets_with(
    dir: &std::path::Path,
    ids: &[(&str, &str)],
) -> shared::secret::dir::DirSecretStore {
    let store = shared::secret::dir::DirSecretStore::open(dir).unwrap();
    for (id, address) in ids {
        let mut tags = shared::secret::Tags::new();
        if !address.is_empty() {
            tags.insert(ADDRESS_TAG.to_owned(), (*address).to_owned());
        }
        let value = shared::secret::SecretValue::new(zeroize::Zeroizing::new("ab".repeat(32)));
        store
            .create_if_absent(&name(id), &value, Some("application/x-raw-hex"), &tags)
            .await
            .unwrap();
    }
    store
}

#[tokio::test]
async fn unheld_identities_get_their_address_from_the_secret_tags() {
    let f = every_state().await;
    let dir = tempfile::tempdir().unwrap();
    // m0-v0 was never held; m0-v1's holder wrote ADDR[1], which its tag must not replace.
    let secrets = secrets_with(
        &dir.path().join("s"),
        &[("m0-v0", ADDR[3]), ("m0-v1", ADDR[0])],
    )
    .await;
    let stores = StatusStores {
        leases: &f.store,
        secrets: Some(&secrets),
    };
    let mut out = Vec::new();
    status_on(stores, true, f.now(), &mut out).await.unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let row = |id: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["identity"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(row("m0-v0")["state"], "available");
    assert_eq!(row("m0-v0")["address"], ADDR[3]);
    assert_eq!(row("m0-v1")["address"], ADDR[1]);
    // The secret's value is never shown.
    assert!(!String::from_utf8(out).unwrap().contains(&"ab".repeat(32)));

    // Without --secrets, as before: no address until a holder writes one.
    let mut out = Vec::new();
    status_on(leases_only(&f.store), true, f.now(), &mut out)
        .await
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let v0 = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["identity"] == "m0-v0")
        .unwrap();
    assert!(v0["address"].is_null());
}

#[test]
fn fill_addresses_ignores_missing_tags_and_matches_names_in_any_case() {
    let row = |id: &str, address: Option<&str>| StatusRow {
        identity: id.to_owned(),
        address: address.map(str::to_owned),
        state: LeaseState::Available,
        holder: None,
        epoch: None,
        held_for_secs: None,
        expires_in_secs: None,
        last_fence: None,
        last_fence_detail: None,
        last_fence_by: None,
        enode: None,
        sign_bound: None,
    };
    let props = |n: &str, tags: &[(&str, &str)]| SecretProperties {
        name: name(n),
        content_type: None,
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    let mut rows = vec![
        row("m0-v0", None),
        row("m0-v1", None),
        row("m0-v2", Some("0xkept")),
    ];
    fill_addresses(
        &mut rows,
        &[
            props("M0-V0", &[(ADDRESS_TAG, "0xaa")]),
            props("m0-v1", &[("member", "0")]),
            props("m0-v2", &[(ADDRESS_TAG, "0xbb")]),
        ],
    );
    let got: Vec<Option<&str>> = rows.iter().map(|r| r.address.as_deref()).collect();
    assert_eq!(got, [Some("0xaa"), None, Some("0xkept")]);
}

#[tokio::test(start_paused = true)]
async fn watch_redraws_every_second_until_shutdown() {
    let f = every_state().await;
    let mut out = Vec::new();
    let shutdown = tokio::time::sleep(Duration::from_millis(2500));
    watch_on(leases_only(&f.store), false, secs(1), &mut out, shutdown)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    // Frames at 0 s, 1 s and 2 s; none after the shutdown at 2.5 s.
    assert_eq!(text.matches("leased status at ").count(), 3, "{text}");
    assert_eq!(text.matches("IDENTITY").count(), 3, "{text}");
    assert!(
        !text.contains('\x1b'),
        "escape codes without a terminal: {text:?}"
    );

    let mut out = Vec::new();
    let shutdown = tokio::time::sleep(Duration::from_millis(500));
    watch_on(leases_only(&f.store), true, secs(1), &mut out, shutdown)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with(CLEAR_SCREEN), "{text:?}");
    assert_eq!(text.matches(CLEAR_SCREEN).count(), 1);
}

#[test]
fn a_missing_secrets_dir_is_refused_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let spec = format!("dir:{}", missing.display());
    let err = open_secrets(&spec, &AzureOptions::default()).err().unwrap();
    assert_eq!(err.status(), Status::NoInput);
    assert!(!missing.exists());
    assert_eq!(
        open_secrets("s3:bucket", &AzureOptions::default())
            .err()
            .unwrap()
            .status(),
        Status::Usage
    );
}

#[test]
fn store_errors_map_to_sysexits() {
    let transient = LeaseError::Transient {
        message: "locked".into(),
        source: None,
    };
    let backend = LeaseError::Backend {
        message: "corrupt".into(),
        source: None,
    };
    assert_eq!(lease_failure(transient).status(), Status::TempFail);
    assert_eq!(lease_failure(backend).status(), Status::Unavailable);
    assert_eq!(
        lease_failure(LeaseError::Invalid("x".into())).status(),
        Status::Usage
    );
    let lost = LeaseError::Lost {
        identity: name("m0-v1"),
        reason: LostReason::Broken,
    };
    assert_eq!(lease_failure(lost).status(), Status::Software);
    assert!(!Failure::new(Status::Software, "a\nb")
        .message()
        .contains('\n'));
}

#[test]
fn a_missing_store_is_refused_and_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.db");
    let spec = format!("sqlite:{}", path.display());
    let none = AzureOptions::default();
    let err = open_store(&spec, &none).err().unwrap();
    assert_eq!(err.status(), Status::NoInput);
    assert!(
        err.message().contains("no lease store at"),
        "{}",
        err.message()
    );
    assert!(!path.exists());

    let err = open_store(&format!("sqlite:{}", dir.path().display()), &none)
        .err()
        .unwrap();
    assert_eq!(err.status(), Status::NoInput);
    assert_eq!(
        open_store("s3:bucket", &none).err().unwrap().status(),
        Status::Usage
    );
    // Opening a blob: store sends nothing yet; it fails at the first call instead.
    assert!(open_store("blob:https://a.blob.core.windows.net/c", &none).is_ok());

    drop(SqliteLeaseStore::open(&path).unwrap());
    assert!(open_store(&spec, &none).is_ok());
}

#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    Status(StatusArgs),
    Break(BreakArgs),
}

fn parse(args: &[&str]) -> Result<Command, clap::Error> {
    use clap::Parser as _;
    Cli::try_parse_from(std::iter::once("leased").chain(args.iter().copied())).map(|c| c.command)
}

#[test]
fn arguments_parse_and_help_teaches() {
    match parse(&["status", "--leases", "sqlite:l.db", "--json"]).unwrap() {
        Command::Status(a) => assert_eq!((a.leases.as_str(), a.json), ("sqlite:l.db", true)),
        other => panic!("{other:?}"),
    }
    match parse(&["break", "m0-v1", "--leases", "sqlite:l.db", "--period", "0"]).unwrap() {
        Command::Break(a) => {
            assert_eq!(a.identity, "m0-v1");
            assert_eq!((a.yes, a.period), (false, Some(BreakPeriod::ZERO)));
        }
        other => panic!("{other:?}"),
    }
    match parse(&["break", "m0-v1", "--leases", "x", "--period", "60"]).unwrap() {
        Command::Break(a) => assert_eq!(a.period, Some(BreakPeriod::MAX)),
        other => panic!("{other:?}"),
    }
    for bad in ["61", "3600", "1.5", "5s", "", "ten"] {
        let err = parse(&["break", "m0-v1", "--leases", "x", "--period", bad]).unwrap_err();
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::ValueValidation,
            "{bad:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("invalid value '{bad}' for '--period <SECONDS>'"))
                && text.contains("a break period is whole seconds from 0 to 60"),
            "{text}"
        );
    }
    assert!(
        parse(&["break", "m0-v1", "--leases", "x", "--force-overlap"]).is_err(),
        "--force-overlap alone allows nothing"
    );
    match parse(&[
        "break",
        "m0-v1",
        "--leases",
        "x",
        "--period",
        "0",
        "--force-overlap",
    ])
    .unwrap()
    {
        Command::Break(a) => assert!(a.force_overlap && a.period == Some(BreakPeriod::ZERO)),
        other => panic!("{other:?}"),
    }
    assert!(parse(&["break", "--leases", "sqlite:l.db", "--yes"]).is_err());
    assert!(parse(&["status"]).is_err(), "--leases is required");

    let help = parse(&["break", "--help"]).unwrap_err().to_string();
    for phrase in [
        "Without --yes nothing is",
        "fence guard",
        "systemctl stop leased",
        "--period <SECONDS>",
        "--force-overlap",
        "is refused (exit 64, nothing",
        "(lease_secs)",
        "the window during which two VMs may sign",
        "Exit status: 0 done; 64",
    ] {
        assert!(help.contains(phrase), "{phrase:?} missing from:\n{help}");
    }
    let help = parse(&["status", "--help"]).unwrap_err().to_string();
    assert!(help.contains("held_for_secs") && help.contains("Exit status"));
    assert!(help.contains("last_fence_detail") && help.contains("gave an identity up"));
}

/// The live bootnode list: a held lease's enode is shown, in the JSON and below the table;
/// an ended lease's is not, nor a value that is not an enode URL.
#[test]
fn a_held_lease_shows_its_enode_and_an_ended_one_does_not() {
    let enode = format!("enode://{}@10.0.1.5:30303", "ab".repeat(64));
    let record = |identity: &str, state: LeaseState, value: &str| LeaseRecord {
        identity: Name::new(identity).unwrap(),
        state,
        duration: None,
        remaining: None,
        metadata: Metadata::from_pairs([(meta::ENODE, value), (meta::HOLDER_NODE, "vm-1")])
            .unwrap(),
    };
    let rows = [
        status_row(&record("m0-v0", LeaseState::Leased, &enode), 0),
        status_row(&record("m0-v1", LeaseState::Expired, &enode), 0),
        status_row(&record("m0-v2", LeaseState::Leased, "enode://not-one"), 0),
    ];
    assert_eq!(rows[0].enode.as_deref(), Some(enode.as_str()));
    assert_eq!(rows[1].enode, None);
    assert_eq!(rows[2].enode, None);
    let json: serde_json::Value = serde_json::from_str(&render_json(&rows)).unwrap();
    assert_eq!(json[0]["enode"], enode.as_str());
    assert!(json[1]["enode"].is_null());
    let text = render_table(&rows);
    assert!(
        text.contains(&format!("live enodes (held leases):\n  m0-v0  {enode}\n")),
        "{text}"
    );
    assert!(!text.contains("m0-v1  enode"), "{text}");
}
