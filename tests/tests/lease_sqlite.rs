//! The `sqlite:` lease store: the shared conformance suite on a manual clock, plus what only
//! a file shared by several processes has: a race between processes, handles that see each
//! other's writes, and clear errors for files it cannot use.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use integration_tests::lease_conformance::{BoxFuture, LeaseHarness};
use integration_tests::lease_conformance_suite;
use shared::lease::sqlite::SqliteLeaseStore;
use shared::lease::{
    meta, LeaseDuration, LeaseError, LeaseId, LeaseState, LeaseStore, LostReason, ManualStoreClock,
    Metadata, RecordCreated, StoreClock, StoreTime,
};
use shared::Name;

/// One fresh file and manual clock per test.
struct SqliteHarness {
    _dir: tempfile::TempDir,
    path: PathBuf,
    clock: Arc<ManualStoreClock>,
    store: Arc<SqliteLeaseStore>,
    next: AtomicU32,
}

impl SqliteHarness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.db");
        let clock = Arc::new(ManualStoreClock::new(1_700_000_000_000));
        let store = Arc::new(SqliteLeaseStore::open_with_clock(&path, clock.clone()).unwrap());
        Self {
            _dir: dir,
            path,
            clock,
            store,
            next: AtomicU32::new(0),
        }
    }
}

impl LeaseHarness for SqliteHarness {
    fn store(&self) -> Arc<dyn LeaseStore> {
        self.store.clone()
    }

    fn open_another(&self) -> Arc<dyn LeaseStore> {
        Arc::new(SqliteLeaseStore::open_with_clock(&self.path, self.clock.clone()).unwrap())
    }

    fn new_identity(&self) -> Name {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Name::new(format!("m0-v{n}")).unwrap()
    }

    fn advance(&self, d: Duration) -> BoxFuture<'_, ()> {
        self.clock.advance(d);
        Box::pin(async {})
    }

    fn exact_time(&self) -> bool {
        true
    }
}

lease_conformance_suite!(SqliteHarness::new());

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

// --- the process race ---------------------------------------------------------------------

const PROCESSES: usize = 8;
const ROUNDS: usize = 200;

/// A running `lease-race-worker`; killed if the test fails before it finishes.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn start(db: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lease-race-worker"))
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start lease-race-worker");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn answer(&mut self) -> String {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).unwrap();
        assert!(n > 0, "worker {} exited early", self.child.id());
        line.trim_end().to_string()
    }

    /// Ends input and checks the worker exits cleanly.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "worker exited with {status}");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn processes_racing_on_one_file_have_exactly_one_winner_per_round() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("leases.db");
    let store = SqliteLeaseStore::open(&db).unwrap();
    let names: Vec<Name> = (0..ROUNDS).map(|i| name(&format!("race-{i:03}"))).collect();
    rt.block_on(async {
        for n in &names {
            assert_eq!(
                store.create_record(n).await.unwrap(),
                RecordCreated::Created
            );
        }
    });

    let mut workers: Vec<Worker> = (0..PROCESSES).map(|_| Worker::start(&db)).collect();
    // Every worker has its connection open before the first round, so each round races
    // acquires only.
    for w in &mut workers {
        assert_eq!(w.answer(), "ready");
    }

    let started = Instant::now();
    let mut wins = [0usize; PROCESSES];
    let mut winners = Vec::new();
    for (round, n) in names.iter().enumerate() {
        let command = format!("acquire {n}");
        for w in &mut workers {
            w.send(&command);
        }
        let answers: Vec<String> = workers.iter_mut().map(Worker::answer).collect();
        let mut won = None;
        for (p, answer) in answers.iter().enumerate() {
            match answer.split_once(' ') {
                Some(("won", id)) => {
                    assert!(
                        won.is_none(),
                        "round {round} ({n}): two winners: {answers:?}"
                    );
                    won = Some(LeaseId::parse(id).unwrap());
                    wins[p] += 1;
                }
                None if answer == "held" => {}
                _ => panic!("round {round} ({n}), process {p}: {answer:?}"),
            }
        }
        let id = won.unwrap_or_else(|| panic!("round {round} ({n}): no winner: {answers:?}"));
        winners.push(id);
    }
    let elapsed = started.elapsed();
    for w in workers {
        w.finish();
    }

    // Each reported winner holds the lease the file records.
    rt.block_on(async {
        for (n, id) in names.iter().zip(&winners) {
            let rec = store.read(n).await.unwrap();
            assert_eq!(rec.state, LeaseState::Leased, "{n}");
            assert_eq!(rec.duration, Some(LeaseDuration::Infinite), "{n}");
            store.renew(n, id).await.unwrap();
        }
    });
    eprintln!(
        "lease process race: {ROUNDS} rounds x {PROCESSES} processes on one SQLite file, \
         exactly one winner each, in {:.2?} ({:.2?} per round); wins per process: {wins:?}",
        elapsed,
        elapsed / ROUNDS as u32
    );
}

// --- handles and files --------------------------------------------------------------------

#[tokio::test]
async fn two_handles_see_each_others_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("leases.db");
    let a = SqliteLeaseStore::open(&db).unwrap();
    let b = SqliteLeaseStore::open(&db).unwrap();
    let n = name("m0-v0");

    assert_eq!(a.create_record(&n).await.unwrap(), RecordCreated::Created);
    assert_eq!(
        b.create_record(&n).await.unwrap(),
        RecordCreated::AlreadyExisted
    );
    let id = a
        .acquire(&n, LeaseDuration::from_secs(60).unwrap(), None)
        .await
        .unwrap();
    let md = Metadata::from_pairs([(meta::EPOCH, "1")]).unwrap();
    a.write_metadata(&n, &id, &md).await.unwrap();

    let seen = b.read(&n).await.unwrap();
    assert_eq!(seen.state, LeaseState::Leased);
    assert_eq!(seen.metadata, md);
    assert!(matches!(
        b.acquire(&n, LeaseDuration::Infinite, None).await,
        Err(LeaseError::HeldByOther {
            state: LeaseState::Leased,
            ..
        })
    ));
    // B changes the id; A's old id is then lost, as a remote holder's would be.
    let new = LeaseId::random();
    b.change(&n, &id, &new).await.unwrap();
    assert!(matches!(
        a.renew(&n, &id).await,
        Err(LeaseError::Lost {
            reason: LostReason::IdMismatch,
            ..
        })
    ));
    b.release(&n, &new).await.unwrap();
    assert_eq!(a.read(&n).await.unwrap().state, LeaseState::Available);

    // And it is all in the file: a handle opened afterwards sees it too.
    drop((a, b));
    let c = SqliteLeaseStore::open(&db).unwrap();
    let rec = c.read(&n).await.unwrap();
    assert_eq!(rec.state, LeaseState::Available);
    assert_eq!(rec.metadata, md);
}

// --- readers never block writers -----------------------------------------------------------

/// A manual clock whose next reading, once armed, blocks until released: the store reads
/// its clock inside each transaction, so this freezes one operation exactly there, as a
/// SIGSTOP of a process in the middle of `leased status` would.
#[derive(Debug)]
struct FreezingClock {
    inner: Arc<ManualStoreClock>,
    gate: Mutex<Gate>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Gate {
    armed: bool,
    frozen: bool,
    released: bool,
}

impl FreezingClock {
    fn new(inner: Arc<ManualStoreClock>) -> Self {
        Self {
            inner,
            gate: Mutex::new(Gate::default()),
            changed: Condvar::new(),
        }
    }

    fn freeze_next_reading(&self) {
        *self.gate.lock().unwrap() = Gate {
            armed: true,
            ..Gate::default()
        };
    }

    /// Whether a reading is frozen now, waiting up to `timeout` for one.
    fn wait_frozen(&self, timeout: Duration) -> bool {
        let gate = self.gate.lock().unwrap();
        let (gate, _) = self
            .changed
            .wait_timeout_while(gate, timeout, |g| !g.frozen)
            .unwrap();
        gate.frozen
    }

    fn release(&self) {
        self.gate.lock().unwrap().released = true;
        self.changed.notify_all();
    }
}

impl StoreClock for FreezingClock {
    /// Freezes right after taking the reading, as a process stopped there would.
    fn now(&self) -> std::io::Result<StoreTime> {
        let now = self.inner.now();
        let mut gate = self.gate.lock().unwrap();
        if gate.armed {
            gate.armed = false;
            gate.frozen = true;
            self.changed.notify_all();
            gate = self.changed.wait_while(gate, |g| !g.released).unwrap();
            gate.frozen = false;
        }
        now
    }
}

#[tokio::test]
async fn item09_a_reader_frozen_mid_transaction_blocks_no_holder() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("leases.db");
    let clock = Arc::new(ManualStoreClock::new(1_700_000_000_000));
    let freezing = Arc::new(FreezingClock::new(clock.clone()));
    // The reader: `leased status`, or a standby listing the records.
    let reader = SqliteLeaseStore::open_with_clock(&db, freezing.clone()).unwrap();
    // The holders' handle waits far less than a renew may take, so a renew that queues
    // behind the reader fails rather than hides the wait.
    let holders = SqliteLeaseStore::open_with_clock(&db, clock.clone())
        .unwrap()
        .with_busy_timeout(Duration::from_millis(200))
        .unwrap();
    let d = LeaseDuration::from_secs(15).unwrap();
    let mut held = Vec::new();
    for i in 0..3 {
        let n = name(&format!("m0-v{i}"));
        holders.create_record(&n).await.unwrap();
        let id = holders.acquire(&n, d, None).await.unwrap();
        held.push((n, id));
    }
    let spare = name("m0-v3");
    holders.create_record(&spare).await.unwrap();

    for what in ["read", "list"] {
        freezing.freeze_next_reading();
        let frozen = {
            let (reader, n) = (reader.clone(), held[0].0.clone());
            tokio::spawn(async move {
                match what {
                    "read" => reader.read(&n).await.map(|r| vec![r]),
                    _ => reader.list().await,
                }
            })
        };
        let waiting = freezing.clone();
        let frozen_in_time =
            tokio::task::spawn_blocking(move || waiting.wait_frozen(Duration::from_secs(5)))
                .await
                .unwrap();
        assert!(frozen_in_time, "{what} never read the clock");
        // The reader is frozen inside its transaction; every holder keeps renewing.
        for round in 0..3 {
            clock.advance(Duration::from_secs(5));
            for (n, id) in &held {
                if let Err(e) = holders.renew(n, id).await {
                    freezing.release();
                    panic!("renew of {n} (round {round}) while a {what} is frozen: {e}");
                }
            }
        }
        // And a standby can still take a free identity.
        let taken = holders.acquire(&spare, d, None).await;
        let taken = match taken {
            Ok(id) => id,
            Err(e) => {
                freezing.release();
                panic!("acquire while a {what} is frozen: {e}");
            }
        };
        holders.release(&spare, &taken).await.unwrap();

        freezing.release();
        let records = frozen.await.unwrap().unwrap();
        assert!(!records.is_empty(), "{what}");
        for rec in records.iter().filter(|r| r.identity != spare) {
            assert_eq!(rec.state, LeaseState::Leased, "{what}: {rec:?}");
        }
    }
}

#[track_caller]
fn assert_backend_error(result: Result<SqliteLeaseStore, LeaseError>, path: &Path, says: &str) {
    match result {
        Err(e @ LeaseError::Backend { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()) && msg.contains(says),
                "{msg:?} should name {} and say {says:?}",
                path.display()
            );
        }
        Err(e) => panic!("expected a backend error for {}, got {e:?}", path.display()),
        Ok(_) => panic!("{} opened", path.display()),
    }
}

#[test]
fn unusable_paths_give_a_clear_backend_error() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("no-such-dir/leases.db");
    assert_backend_error(SqliteLeaseStore::open(&missing), &missing, "does not exist");
    assert!(!missing.parent().unwrap().exists(), "nothing was created");

    let a_dir = dir.path().join("a-dir");
    std::fs::create_dir(&a_dir).unwrap();
    assert_backend_error(SqliteLeaseStore::open(&a_dir), &a_dir, "");

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![b'x'; 4096]).unwrap();
    assert_backend_error(
        SqliteLeaseStore::open(&garbage),
        &garbage,
        "not a SQLite database",
    );

    // Places no user may create files in, root included.
    for p in ["/proc/leases.db", "/sys/leases.db"] {
        let p = Path::new(p);
        assert_backend_error(SqliteLeaseStore::open(p), p, "cannot create the file");
    }

    // Permission bits bind only unprivileged users; as root these cases would open.
    let ro_file = dir.path().join("read-only.db");
    drop(SqliteLeaseStore::open(&ro_file).unwrap());
    std::fs::set_permissions(&ro_file, std::fs::Permissions::from_mode(0o400)).unwrap();
    let ro_dir = dir.path().join("read-only-dir");
    std::fs::create_dir(&ro_dir).unwrap();
    std::fs::set_permissions(&ro_dir, std::fs::Permissions::from_mode(0o500)).unwrap();
    let privileged = std::fs::OpenOptions::new()
        .write(true)
        .open(&ro_file)
        .is_ok();
    if privileged {
        eprintln!("running with privileges that ignore file modes: skipping the chmod cases");
    } else {
        assert_backend_error(SqliteLeaseStore::open(&ro_file), &ro_file, "not writable");
        let in_ro_dir = ro_dir.join("leases.db");
        assert_backend_error(
            SqliteLeaseStore::open(&in_ro_dir),
            &in_ro_dir,
            "cannot create the file",
        );
    }
    std::fs::set_permissions(&ro_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
}
