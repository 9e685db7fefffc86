//! The `sqlite:PATH` lease store: every identity's lease record in one SQLite file, with the
//! Azure Blob lease semantics documented in [`super`].
//!
//! It owns the file's schema, the mapping from a stored row to the state a caller sees, and
//! the per-operation transitions. Several processes on one host may share the file (several
//! daemons, the orchestrator, the on-call tools), so every operation that writes is exactly
//! one `BEGIN IMMEDIATE` transaction that reads the row, decides, and writes: SQLite's write
//! lock is what makes two racing acquirers see one winner.
//!
//! Reads never block writers. `read` and `list` run in a read transaction, which in WAL mode
//! works on a snapshot and never takes the write lock, so a reader that is slow or stopped
//! mid-transaction (a frozen `leased status`, a standby frozen while listing) delays no
//! renew on the host. A file that cannot be put in WAL mode is refused for that reason.
//!
//! It must never:
//! - decide on a row read outside the transaction that writes the decision;
//! - take the write lock to read;
//! - measure a lease on the wall clock, or compare instants of two boots (see Time);
//! - store a state that depends on the clock (expired, or broken once a break period ends):
//!   only the instants are stored, and `effective` derives the state at read time;
//! - act on a row it cannot make sense of: an inconsistent row is a `Backend` error, never a
//!   guess (fail closed);
//! - hold key material: rows carry lease ids and holder metadata only.
//!
//! The decisions are pure functions over `Lease`, one per operation, unit-tested below
//! without a database; each store method loads the row, calls one, and writes the result.
//!
//! # Time
//!
//! Time comes from the injected [`StoreClock`], which plays the lease service's clock. The
//! real one, [`MonotonicStoreClock`], is the host's `CLOCK_MONOTONIC` with the host's boot
//! id, and instants are stored as integer milliseconds on it:
//!
//! - **Never the wall clock.** A step of the wall clock (an operator's `date -s`, a VM
//!   resumed and corrected, NTP stepping at boot) moves no lease: had expiry been on the wall
//!   clock, a forward step longer than the holder's fence margin would let a standby acquire
//!   before the holder fences. The monotonic clock cannot step, every process on the host
//!   reads the same one, and it is the clock the holders fence on, so the store's idea of a
//!   lease's end and the holder's fence deadline run at one rate. (`CLOCK_BOOTTIME` would
//!   not: it runs on while the host is suspended and the holders' deadlines do not.)
//! - **A reboot expires everything.** The monotonic clock restarts at boot, so its readings
//!   mean nothing across a reboot, and every process that held a lease died with it. The
//!   file records the boot its instants belong to (`store_clock`). A transaction that finds
//!   another boot there treats every stored instant as past: a fixed lease has expired (its
//!   id is kept, as for any expired lease) and a break has ended; an infinite lease has no
//!   instant and stays. A write transaction rewrites the rows that way and records the
//!   current boot; a read-only one only computes the states that way. On the same boot
//!   nothing is rewritten, so the file changes only when a lease does.
//! - **One host, one time namespace.** Every process using the file must share the host's
//!   kernel and `CLOCK_MONOTONIC`: the file is not for a network file system (WAL mode does
//!   not work there anyway), and not for containers in time namespaces with their own clock
//!   offsets.
//!
//! # Versions
//!
//! The schema version is SQLite's `user_version`; a file of any version this build does
//! not know is refused, never misread. Version 1 stored wall-clock instants (ms since the
//! Unix epoch) in table `leases`. Opening one converts it in place, in one transaction: each
//! instant becomes the instant on the monotonic clock with the same time left, so a lease
//! held across the upgrade ends when it would have, neither later nor earlier, and the table
//! becomes `lease_records`. A process of the old version that still has the file open then
//! fails every operation (its table is gone), so its holders fence rather than read
//! monotonic instants as wall-clock ones; an old binary opening the file refuses version 2.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{
    params, Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};

use super::{
    BreakPeriod, LeaseDuration, LeaseError, LeaseId, LeaseRecord, LeaseState, LeaseStore,
    LostReason, Metadata, MonotonicStoreClock, RecordCreated, StoreClock, StoreTime,
};
use crate::name::Name;

/// How long an operation waits for another process's transaction before it reports
/// [`LeaseError::Transient`].
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Bumped whenever the table layout or the meaning of a column changes; a file with another
/// version is refused rather than misread (version 1 is converted, see the module docs).
const SCHEMA_VERSION: i64 = 2;

/// `duration_secs` of an infinite lease. NULL is taken: it means "never leased", which
/// [`LeaseRecord::duration`] must report as `None`.
const INFINITE_SECS: i64 = -1;

const SCHEMA: &str = "
CREATE TABLE lease_records (
    identity       TEXT PRIMARY KEY NOT NULL,
    lease_state    TEXT NOT NULL
                   CHECK (lease_state IN ('available', 'leased', 'breaking', 'broken')),
    lease_id       TEXT,
    -- The current or last lease's duration: seconds, -1 for infinite, NULL if never leased.
    duration_secs  INTEGER,
    -- Leased with a fixed duration: when it expires (ms on the store clock, see store_clock).
    expires_at_ms  INTEGER,
    -- Breaking: when it becomes broken (ms on the store clock).
    break_until_ms INTEGER,
    -- User metadata: a JSON object of strings.
    metadata       TEXT NOT NULL DEFAULT '{}'
) STRICT;
";

/// The boot whose clock the instants are measured on; its one row is written with the file.
const CLOCK_TABLE: &str = "
CREATE TABLE store_clock (
    -- Exactly one row.
    only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
    -- The host's boot id: every instant in lease_records is on CLOCK_MONOTONIC of that boot.
    boot_id  TEXT NOT NULL
) STRICT;
";

/// Where an instant stored in an earlier boot is put: the origin of a boot's clock, which
/// no reading in the boot precedes, so the instant is past for the whole boot.
const BOOT_START_MS: i64 = 0;

const SELECT_ROW: &str = "SELECT identity, lease_state, lease_id, duration_secs, expires_at_ms, \
                          break_until_ms, metadata FROM lease_records";

/// Leases in one SQLite file, shared by every process on the host that opens it.
///
/// Each handle (and its clones) holds one connection, on which its operations run one at a
/// time; operations from other handles and processes are serialised by SQLite's write lock.
///
/// An operation whose future is dropped (a caller's timeout) still runs to completion on its
/// blocking thread, exactly as a request already sent to a remote service would.
#[derive(Debug, Clone)]
pub struct SqliteLeaseStore {
    path: Arc<Path>,
    conn: Arc<Mutex<Connection>>,
    clock: Arc<dyn StoreClock>,
}

impl SqliteLeaseStore {
    /// Where the network info is published: `networkinfo.json` in the SQLite file's
    /// directory.
    pub fn network_info_path(&self) -> std::path::PathBuf {
        self.beside(super::NETWORK_INFO)
    }

    /// The path of `name` in the SQLite file's directory.
    fn beside(&self, name: &str) -> std::path::PathBuf {
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        dir.join(name)
    }

    /// Opens (creating if missing, converting a version 1 file) the lease file at `path`, on
    /// the host's monotonic clock ([`MonotonicStoreClock`]).
    ///
    /// Blocks while it sets up the file; call it at start-up or from a blocking task.
    pub fn open(path: &Path) -> Result<Self, LeaseError> {
        let clock = MonotonicStoreClock::new()
            .map_err(|e| backend(path, format!("cannot use the host's clock: {e}"), None))?;
        Self::open_with_clock(path, Arc::new(clock))
    }

    /// As [`SqliteLeaseStore::open`], measuring every lease instant on `clock`.
    ///
    /// A new file is created with mode 0600. The parent directory must exist: creating it
    /// here would turn a mistyped path into an empty store that every daemon acquires from.
    pub fn open_with_clock(path: &Path, clock: Arc<dyn StoreClock>) -> Result<Self, LeaseError> {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !parent.is_dir() {
            return Err(backend(
                path,
                format!(
                    "cannot open: directory {} does not exist (create it first)",
                    parent.display()
                ),
                None,
            ));
        }
        create_private_file(path)?;

        // No SQLITE_OPEN_CREATE: the file exists by now, and if it vanished in between, an
        // error beats a fresh empty store with the default permissions.
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql_error(path, "open", e))?;
        conn.busy_timeout(DEFAULT_BUSY_TIMEOUT)
            .map_err(|e| sql_error(path, "open", e))?;
        // SQLite quietly opens a write-protected file read-only; a lease store that cannot
        // write must say so now, not on the first acquire.
        if conn
            .is_readonly("main")
            .map_err(|e| sql_error(path, "open", e))?
        {
            return Err(backend(path, "the file is not writable".into(), None));
        }
        let conn = init_schema(path, conn, clock.as_ref())?;
        Ok(Self {
            path: Arc::from(path),
            conn: Arc::new(Mutex::new(conn)),
            clock,
        })
    }

    /// Sets how long each operation waits for another process's transaction before it
    /// fails with [`LeaseError::Transient`] (default [`DEFAULT_BUSY_TIMEOUT`]).
    pub fn with_busy_timeout(self, timeout: Duration) -> Result<Self, LeaseError> {
        if timeout.as_millis() > i32::MAX as u128 {
            return Err(LeaseError::Invalid(format!(
                "busy timeout {timeout:?} is too long"
            )));
        }
        self.lock()
            .busy_timeout(timeout)
            .map_err(|e| sql_error(&self.path, "set busy timeout", e))?;
        Ok(self)
    }

    /// The file this store uses.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held unwound through the open transaction's drop,
        // which rolled it back, so the connection is clean.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `op` as one write transaction (`BEGIN IMMEDIATE`) on a blocking thread. `op`
    /// gets the store time, with the rows already brought into the current boot; the
    /// transaction commits only if `op` returns `Ok`.
    async fn write<T, F>(&self, what: &'static str, op: F) -> Result<T, LeaseError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, i64) -> Result<T, OpError> + Send + 'static,
    {
        self.transaction(what, TransactionBehavior::Immediate, move |tx, clock| {
            // Read the clock only once the write lock is held: an operation that waited
            // behind another process must decide at the time it actually runs.
            let now = read_clock(clock)?;
            forget_earlier_boot(tx, &now)?;
            op(tx, to_millis_i64(now.millis))
        })
        .await
    }

    /// Runs `op` as one read transaction (`BEGIN DEFERRED`, then only reads) on a blocking
    /// thread. Its first read takes a snapshot of the file and no lock a writer waits for
    /// (WAL mode), so a reader however slow, or stopped in the middle (a frozen `leased
    /// status`), never delays a renew. `op` gets the store time, read after that snapshot.
    async fn read_only<T, F>(&self, what: &'static str, op: F) -> Result<T, LeaseError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, TxTime) -> Result<T, OpError> + Send + 'static,
    {
        self.transaction(what, TransactionBehavior::Deferred, move |tx, clock| {
            let stored_boot = stored_boot_id(tx)?;
            let now = read_clock(clock)?;
            let time = TxTime {
                now: to_millis_i64(now.millis),
                earlier_boot: stored_boot != now.boot_id,
            };
            op(tx, time)
        })
        .await
    }

    async fn transaction<T, F>(
        &self,
        what: &'static str,
        behavior: TransactionBehavior,
        op: F,
    ) -> Result<T, LeaseError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, &dyn StoreClock) -> Result<T, OpError> + Send + 'static,
    {
        let store = self.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut conn = store.lock();
            let result = (|| {
                let tx = conn.transaction_with_behavior(behavior)?;
                let out = op(&tx, &*store.clock)?;
                tx.commit()?;
                Ok(out)
            })();
            result.map_err(|e| store.op_error(what, e))
        });
        task.await.map_err(|e| {
            backend(
                &self.path,
                format!("{what}: the blocking task failed: {e}"),
                None,
            )
        })?
    }

    fn op_error(&self, what: &str, e: OpError) -> LeaseError {
        match e {
            OpError::Sql(e) => sql_error(&self.path, what, e),
            OpError::Lease(e) => e,
            OpError::Clock(e) => backend(
                &self.path,
                format!("cannot read the store clock: {e}"),
                Some(Box::new(e)),
            ),
            OpError::Damaged(problem) => backend(&self.path, problem, None),
            OpError::Corrupt { identity, problem } => backend(
                &self.path,
                format!("record {identity:?} is corrupt: {problem}"),
                None,
            ),
        }
    }
}

/// Creates `path` with mode 0600 unless it exists. SQLite gives its `-wal` and `-shm`
/// files the database file's mode, so they stay private too.
fn create_private_file(path: &Path) -> Result<(), LeaseError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(backend(
            path,
            format!("cannot create the file: {e}"),
            Some(Box::new(e)),
        )),
    }
}

fn init_schema(
    path: &Path,
    mut conn: Connection,
    clock: &dyn StoreClock,
) -> Result<Connection, LeaseError> {
    let err = |e| sql_error(path, "open", e);
    // WAL is what keeps readers from blocking writers. In a rollback journal a reader's
    // shared lock holds off every commit, so one stopped `leased status` would make every
    // holder on the host fence: refuse such a file (some network and FUSE file systems
    // cannot share the memory WAL needs; the store belongs on a local disk anyway).
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(backend(
            path,
            format!(
                "cannot use WAL mode (journal mode stays {mode:?}); the lease file needs a \
                 local file system"
            ),
            None,
        ));
    }
    // An acquire reported to the caller must survive a crash: fsync on every commit.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    // Immediate, so that two processes creating (or converting) the file at once do not
    // both do it: the second waits, then sees the current version.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    let clock_error = |e: io::Error| {
        backend(
            path,
            format!("open: cannot read the store clock: {e}"),
            Some(Box::new(e)),
        )
    };
    match version {
        0 => {
            let objects: i64 = tx
                .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
                .map_err(err)?;
            if objects != 0 {
                return Err(backend(
                    path,
                    "the file is a SQLite database but not a lease store".into(),
                    None,
                ));
            }
            let now = clock.now().map_err(clock_error)?;
            tx.execute_batch(SCHEMA).map_err(err)?;
            tx.execute_batch(CLOCK_TABLE).map_err(err)?;
            tx.execute(
                "INSERT INTO store_clock (only_row, boot_id) VALUES (1, ?1)",
                params![now.boot_id],
            )
            .map_err(err)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(err)?;
        }
        1 => {
            // Both clocks read back to back, so the time left carries over to the ms.
            let now = clock.now().map_err(clock_error)?;
            let wall_now_ms = wall_clock_millis();
            migrate_from_v1(&tx, &now, wall_now_ms)
                .map_err(|e| sql_error(path, "convert the file from schema version 1", e))?;
        }
        SCHEMA_VERSION => {}
        other => {
            return Err(backend(
                path,
                format!(
                    "the schema version is {other}; this build reads version {SCHEMA_VERSION} \
                     (and converts version 1)"
                ),
                None,
            ))
        }
    }
    tx.commit().map_err(err)?;
    Ok(conn)
}

/// Milliseconds since the Unix epoch on the wall clock: only to convert a version 1 file.
fn wall_clock_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, duration_to_ms)
}

/// Converts a version 1 file to version 2 inside the caller's transaction (module docs,
/// Versions): wall-clock instants become instants on `now`'s clock with the same time left,
/// the table is renamed so that old processes fail instead of misreading, and the boot is
/// recorded.
fn migrate_from_v1(
    tx: &Transaction<'_>,
    now: &StoreTime,
    wall_now_ms: i64,
) -> rusqlite::Result<()> {
    tx.execute_batch("ALTER TABLE leases RENAME TO lease_records")?;
    tx.execute_batch(CLOCK_TABLE)?;
    let boot_now_ms = to_millis_i64(now.millis);
    let rows = tx
        .prepare(
            "SELECT identity, expires_at_ms, break_until_ms FROM lease_records \
             WHERE expires_at_ms IS NOT NULL OR break_until_ms IS NOT NULL",
        )?
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let rebase = |at: Option<i64>| at.map(|at| rebase_wall_instant(at, wall_now_ms, boot_now_ms));
    for (identity, expires_at_ms, break_until_ms) in rows {
        tx.execute(
            "UPDATE lease_records SET expires_at_ms = ?2, break_until_ms = ?3 WHERE identity = ?1",
            params![identity, rebase(expires_at_ms), rebase(break_until_ms)],
        )?;
    }
    tx.execute(
        "INSERT INTO store_clock (only_row, boot_id) VALUES (1, ?1)",
        params![now.boot_id],
    )?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
}

/// A version 1 instant (`at`, wall clock) as the instant on the store clock with the same
/// time left (or gone): `boot_now_ms + (at - wall_now_ms)`. One already past stays past; no
/// instant goes below the boot's origin.
fn rebase_wall_instant(at: i64, wall_now_ms: i64, boot_now_ms: i64) -> i64 {
    boot_now_ms
        .saturating_add(at.saturating_sub(wall_now_ms))
        .max(BOOT_START_MS)
}

fn read_clock(clock: &dyn StoreClock) -> Result<StoreTime, OpError> {
    clock.now().map_err(OpError::Clock)
}

/// The boot the file's instants belong to.
fn stored_boot_id(tx: &Transaction<'_>) -> Result<String, OpError> {
    let ids = tx
        .prepare("SELECT boot_id FROM store_clock")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    match <[String; 1]>::try_from(ids) {
        Ok([id]) => Ok(id),
        Err(ids) => Err(OpError::Damaged(format!(
            "table store_clock has {} rows instead of one",
            ids.len()
        ))),
    }
}

/// In a write transaction, before anything else: when the file's instants belong to an
/// earlier boot, rewrites every row as [`after_reboot`] has it and records the current
/// boot. On the same boot it writes nothing.
fn forget_earlier_boot(tx: &Transaction<'_>, now: &StoreTime) -> Result<(), OpError> {
    if stored_boot_id(tx)? == now.boot_id {
        return Ok(());
    }
    for (identity, row) in load_all(tx)? {
        let after = after_reboot(&row.lease);
        if after != row.lease {
            save(tx, &identity, &after)?;
        }
    }
    tx.execute("UPDATE store_clock SET boot_id = ?1", params![now.boot_id])?;
    Ok(())
}

#[async_trait]
impl LeaseStore for SqliteLeaseStore {
    async fn create_record(&self, identity: &Name) -> Result<RecordCreated, LeaseError> {
        let identity = identity.clone();
        self.write("create record", move |tx, _now| {
            let inserted = tx.execute(
                "INSERT INTO lease_records (identity, lease_state) VALUES (?1, 'available') \
                 ON CONFLICT (identity) DO NOTHING",
                params![identity.as_str()],
            )?;
            Ok(if inserted == 1 {
                RecordCreated::Created
            } else {
                RecordCreated::AlreadyExisted
            })
        })
        .await
    }

    async fn acquire(
        &self,
        identity: &Name,
        duration: LeaseDuration,
        proposed: Option<&LeaseId>,
    ) -> Result<LeaseId, LeaseError> {
        check_duration(duration).map_err(LeaseError::Invalid)?;
        let identity = identity.clone();
        let proposed = proposed.cloned();
        self.write("acquire", move |tx, now| {
            let row = load(tx, &identity)?;
            let fresh = LeaseId::random();
            let (lease, id) = acquire(&row.lease, now, duration, proposed.as_ref(), fresh)
                .map_err(|r| r.into_error(&identity))?;
            save(tx, &identity, &lease)?;
            Ok(id)
        })
        .await
    }

    async fn renew(&self, identity: &Name, lease: &LeaseId) -> Result<(), LeaseError> {
        let identity = identity.clone();
        let id = lease.clone();
        self.write("renew", move |tx, now| {
            let row = load(tx, &identity)?;
            let lease = renew(&row.lease, now, &id).map_err(|r| r.into_error(&identity))?;
            save(tx, &identity, &lease)?;
            Ok(())
        })
        .await
    }

    async fn release(&self, identity: &Name, lease: &LeaseId) -> Result<(), LeaseError> {
        let identity = identity.clone();
        let id = lease.clone();
        self.write("release", move |tx, now| {
            let row = load(tx, &identity)?;
            let lease = release(&row.lease, now, &id).map_err(|r| r.into_error(&identity))?;
            save(tx, &identity, &lease)?;
            Ok(())
        })
        .await
    }

    async fn change(
        &self,
        identity: &Name,
        lease: &LeaseId,
        proposed: &LeaseId,
    ) -> Result<LeaseId, LeaseError> {
        let identity = identity.clone();
        let (current, proposed) = (lease.clone(), proposed.clone());
        self.write("change", move |tx, now| {
            let row = load(tx, &identity)?;
            let lease = change(&row.lease, now, &current, &proposed)
                .map_err(|r| r.into_error(&identity))?;
            save(tx, &identity, &lease)?;
            Ok(proposed)
        })
        .await
    }

    async fn break_lease(
        &self,
        identity: &Name,
        period: Option<BreakPeriod>,
    ) -> Result<Duration, LeaseError> {
        let period_ms = period.map(|p| duration_to_ms(p.as_duration()));
        let identity = identity.clone();
        self.write("break", move |tx, now| {
            let row = load(tx, &identity)?;
            let (lease, left_ms) =
                break_lease(&row.lease, now, period_ms).map_err(|r| r.into_error(&identity))?;
            save(tx, &identity, &lease)?;
            Ok(ms_to_duration(left_ms))
        })
        .await
    }

    async fn write_metadata(
        &self,
        identity: &Name,
        lease: &LeaseId,
        metadata: &Metadata,
    ) -> Result<(), LeaseError> {
        let json = serde_json::to_string(metadata)
            .map_err(|e| LeaseError::Invalid(format!("cannot encode metadata: {e}")))?;
        let identity = identity.clone();
        let id = lease.clone();
        self.write("write metadata", move |tx, now| {
            let row = load(tx, &identity)?;
            may_write_metadata(&row.lease, now, &id).map_err(|r| r.into_error(&identity))?;
            tx.execute(
                "UPDATE lease_records SET metadata = ?2 WHERE identity = ?1",
                params![identity.as_str(), json],
            )?;
            Ok(())
        })
        .await
    }

    async fn read(&self, identity: &Name) -> Result<LeaseRecord, LeaseError> {
        let identity = identity.clone();
        self.read_only("read", move |tx, time| {
            let row = load(tx, &identity)?;
            Ok(row.into_record(identity, time))
        })
        .await
    }

    async fn list(&self) -> Result<Vec<LeaseRecord>, LeaseError> {
        self.read_only("list", move |tx, time| {
            Ok(load_all(tx)?
                .into_iter()
                .map(|(identity, row)| row.into_record(identity, time))
                .collect())
        })
        .await
    }

    async fn put_network_info(&self, document: &[u8]) -> Result<(), LeaseError> {
        let path = self.network_info_path();
        let bytes = document.to_vec();
        let dir = self.path.clone();
        tokio::task::spawn_blocking(move || crate::fsutil::replace_public(&path, &bytes))
            .await
            .map_err(|e| backend(&dir, format!("publishing the network info: {e}"), None))?
            .map_err(|e| {
                backend(
                    &self.path,
                    format!("cannot write {}: {e}", self.network_info_path().display()),
                    None,
                )
            })
    }

    async fn get_network_info(&self, max: usize) -> Result<Option<Vec<u8>>, LeaseError> {
        let path = self.network_info_path();
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || crate::fsutil::read_limited(&path, max))
                .await
                .map_err(|e| backend(&self.path, format!("reading the network info: {e}"), None))?
        };
        match read {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(backend(
                &self.path,
                format!("cannot read {}: {e}", path.display()),
                None,
            )),
        }
    }

    async fn announce_standby(&self, node: &str, address: &str) -> Result<(), LeaseError> {
        let path = self.beside(&super::standby_entry_name(node));
        let bytes = address.as_bytes().to_vec();
        let shown = path.display().to_string();
        tokio::task::spawn_blocking(move || crate::fsutil::replace_public(&path, &bytes))
            .await
            .map_err(|e| backend(&self.path, format!("announcing a standby: {e}"), None))?
            .map_err(|e| backend(&self.path, format!("cannot write {shown}: {e}"), None))
    }

    async fn withdraw_standby(&self, node: &str) -> Result<(), LeaseError> {
        let path = self.beside(&super::standby_entry_name(node));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(backend(
                &self.path,
                format!("cannot remove {}: {e}", path.display()),
                None,
            )),
        }
    }

    async fn standbys(&self) -> Result<Vec<(String, String)>, LeaseError> {
        let dir = self.beside("");
        let read =
            tokio::task::spawn_blocking(move || -> std::io::Result<Vec<(String, String)>> {
                let mut out = Vec::new();
                for entry in std::fs::read_dir(&dir)? {
                    let entry = entry?;
                    let Some(node) = entry
                        .file_name()
                        .to_str()
                        .and_then(super::standby_entry_node)
                    else {
                        continue;
                    };
                    // An entry is an address: anything longer is not one of ours.
                    if let Ok(bytes) = crate::fsutil::read_limited(&entry.path(), 256) {
                        if let Ok(address) = String::from_utf8(bytes) {
                            out.push((node, address));
                        }
                    }
                    if out.len() == super::MAX_STANDBYS {
                        break;
                    }
                }
                Ok(out)
            })
            .await
            .map_err(|e| backend(&self.path, format!("reading the standbys: {e}"), None))?;
        read.map_err(|e| backend(&self.path, format!("reading the standbys: {e}"), None))
    }
}

/// What an operation inside a transaction can fail with; [`SqliteLeaseStore::run`] turns
/// it into a [`LeaseError`] naming the file.
#[derive(Debug)]
enum OpError {
    Sql(rusqlite::Error),
    Lease(LeaseError),
    Corrupt {
        identity: String,
        problem: String,
    },
    /// The store clock could not be read.
    Clock(io::Error),
    /// The file is damaged outside any one record.
    Damaged(String),
}

impl From<rusqlite::Error> for OpError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<LeaseError> for OpError {
    fn from(e: LeaseError) -> Self {
        Self::Lease(e)
    }
}

fn load(tx: &Transaction<'_>, identity: &Name) -> Result<Row, OpError> {
    let raw = tx
        .query_row(
            &format!("{SELECT_ROW} WHERE identity = ?1"),
            params![identity.as_str()],
            RawRow::from_sql,
        )
        .optional()?
        .ok_or_else(|| LeaseError::NotFound {
            identity: identity.clone(),
        })?;
    raw.decode().map_err(|problem| raw.corrupt(problem))
}

/// Every row, decoded, sorted by identity.
fn load_all(tx: &Transaction<'_>) -> Result<Vec<(Name, Row)>, OpError> {
    let raws = tx
        .prepare(&format!("{SELECT_ROW} ORDER BY identity"))?
        .query_map([], RawRow::from_sql)?
        .collect::<Result<Vec<_>, _>>()?;
    raws.into_iter()
        .map(|raw| {
            let identity = Name::new(raw.identity.as_str())
                .map_err(|e| raw.corrupt(format!("invalid name: {e}")))?;
            let row = raw.decode().map_err(|problem| raw.corrupt(problem))?;
            Ok((identity, row))
        })
        .collect()
}

/// Writes the lease columns (never the metadata, which only `write_metadata` changes).
fn save(tx: &Transaction<'_>, identity: &Name, lease: &Lease) -> Result<(), OpError> {
    let (state, id, expires_at_ms, break_until_ms) = match &lease.phase {
        Phase::Available => ("available", None, None, None),
        Phase::Leased { id, expires_at_ms } => ("leased", Some(id), *expires_at_ms, None),
        Phase::Breaking { id, until_ms } => ("breaking", Some(id), None, Some(*until_ms)),
        Phase::Broken { id } => ("broken", Some(id), None, None),
    };
    let duration_secs = lease.duration.map(|d| match d {
        LeaseDuration::Fixed(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        LeaseDuration::Infinite => INFINITE_SECS,
    });
    let updated = tx.execute(
        "UPDATE lease_records SET lease_state = ?2, lease_id = ?3, duration_secs = ?4, \
         expires_at_ms = ?5, break_until_ms = ?6 WHERE identity = ?1",
        params![
            identity.as_str(),
            state,
            id.map(LeaseId::as_str),
            duration_secs,
            expires_at_ms,
            break_until_ms
        ],
    )?;
    if updated != 1 {
        // The row was read in this same transaction, so this cannot happen short of a bug;
        // refuse rather than report a lease that was not stored.
        return Err(OpError::Corrupt {
            identity: identity.to_string(),
            problem: format!("updating it changed {updated} rows"),
        });
    }
    Ok(())
}

/// One row as SQLite returns it, before any checking.
#[derive(Debug)]
struct RawRow {
    identity: String,
    lease_state: String,
    lease_id: Option<String>,
    duration_secs: Option<i64>,
    expires_at_ms: Option<i64>,
    break_until_ms: Option<i64>,
    metadata: String,
}

impl RawRow {
    fn from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            identity: r.get(0)?,
            lease_state: r.get(1)?,
            lease_id: r.get(2)?,
            duration_secs: r.get(3)?,
            expires_at_ms: r.get(4)?,
            break_until_ms: r.get(5)?,
            metadata: r.get(6)?,
        })
    }

    fn corrupt(&self, problem: String) -> OpError {
        OpError::Corrupt {
            identity: self.identity.clone(),
            problem,
        }
    }

    /// Accepts exactly the rows [`save`] writes; anything else is corruption or a foreign
    /// writer, and is refused.
    fn decode(&self) -> Result<Row, String> {
        let duration = match self.duration_secs {
            None => None,
            Some(INFINITE_SECS) => Some(LeaseDuration::Infinite),
            Some(s) => Some(
                u64::try_from(s)
                    .ok()
                    .and_then(|s| LeaseDuration::from_secs(s).ok())
                    .ok_or_else(|| format!("duration_secs {s} is not a lease duration"))?,
            ),
        };
        let id = || -> Result<LeaseId, String> {
            let s = self
                .lease_id
                .as_deref()
                .ok_or_else(|| format!("{} without a lease id", self.lease_state))?;
            LeaseId::parse(s).map_err(|e| e.to_string())
        };
        let held_duration =
            || duration.ok_or_else(|| format!("{} without a lease duration", self.lease_state));
        let phase = match (
            self.lease_state.as_str(),
            self.expires_at_ms,
            self.break_until_ms,
        ) {
            ("available", None, None) if self.lease_id.is_none() => Phase::Available,
            ("leased", expires_at_ms, None) => {
                match (held_duration()?, expires_at_ms) {
                    (LeaseDuration::Fixed(_), Some(_)) | (LeaseDuration::Infinite, None) => {}
                    _ => return Err("leased, with an expiry that contradicts its duration".into()),
                }
                Phase::Leased {
                    id: id()?,
                    expires_at_ms,
                }
            }
            ("breaking", None, Some(until_ms)) => {
                held_duration()?;
                Phase::Breaking {
                    id: id()?,
                    until_ms,
                }
            }
            ("broken", None, None) => {
                held_duration()?;
                Phase::Broken { id: id()? }
            }
            (state, expires, until) => {
                return Err(format!(
                    "state {state:?} with lease id {:?}, expires_at_ms {expires:?}, \
                     break_until_ms {until:?}",
                    self.lease_id
                ))
            }
        };
        // Not checked against the metadata rule: a file may hold what a `leased` wrote
        // before the rule was shared (edge spaces in values were allowed here then), and
        // its records must stay readable.
        let metadata = serde_json::from_str(&self.metadata)
            .map(Metadata::from_store)
            .map_err(|e| format!("metadata is not a JSON object of strings: {e}"))?;
        Ok(Row {
            lease: Lease { phase, duration },
            metadata,
        })
    }
}

/// A row that passed [`RawRow::decode`].
#[derive(Debug)]
struct Row {
    lease: Lease,
    metadata: Metadata,
}

/// The store time inside one read-only transaction.
#[derive(Debug, Clone, Copy)]
struct TxTime {
    /// Milliseconds on the store clock.
    now: i64,
    /// The file's instants belong to an earlier boot: every one is past ([`after_reboot`]).
    earlier_boot: bool,
}

impl Row {
    fn into_record(self, identity: Name, time: TxTime) -> LeaseRecord {
        let lease = if time.earlier_boot {
            after_reboot(&self.lease)
        } else {
            self.lease
        };
        let state = effective(&lease.phase, time.now);
        LeaseRecord {
            identity,
            state: state.state(),
            duration: lease.duration,
            remaining: state.remaining_ms().map(ms_to_duration),
            metadata: self.metadata,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The pure part: stored lease + now + request -> new stored lease, or a refusal.
// ---------------------------------------------------------------------------------------

/// The lease as stored. Expired, and broken once a break period ends, are not stored:
/// [`effective`] derives them from the instants.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Never leased, or released.
    Available,
    /// Leased until `expires_at_ms`, or until released or broken when that is `None`.
    Leased {
        id: LeaseId,
        expires_at_ms: Option<i64>,
    },
    /// Being broken: locked until `until_ms`, broken after.
    Breaking { id: LeaseId, until_ms: i64 },
    /// Broken; the id is kept because the old holder may still release with it.
    Broken { id: LeaseId },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Lease {
    phase: Phase,
    /// The current or last lease's duration; `None` until first acquired.
    duration: Option<LeaseDuration>,
}

/// The state the service reports at one instant: [`LeaseState`] with the data each state
/// carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effective<'a> {
    Available,
    /// `remaining_ms` is `None` for an infinite lease, else positive.
    Leased {
        id: &'a LeaseId,
        remaining_ms: Option<i64>,
    },
    Expired {
        id: &'a LeaseId,
    },
    /// `remaining_ms` is positive.
    Breaking {
        id: &'a LeaseId,
        remaining_ms: i64,
    },
    Broken {
        id: &'a LeaseId,
    },
}

impl Effective<'_> {
    fn state(&self) -> LeaseState {
        match self {
            Self::Available => LeaseState::Available,
            Self::Leased { .. } => LeaseState::Leased,
            Self::Expired { .. } => LeaseState::Expired,
            Self::Breaking { .. } => LeaseState::Breaking,
            Self::Broken { .. } => LeaseState::Broken,
        }
    }

    fn remaining_ms(&self) -> Option<i64> {
        match self {
            Self::Leased { remaining_ms, .. } => *remaining_ms,
            Self::Breaking { remaining_ms, .. } => Some(*remaining_ms),
            _ => None,
        }
    }
}

/// The state at `now`. A lease ends at its expiry instant, not a millisecond later: at
/// `expires_at_ms` it is already acquirable, as a break period's end is.
fn effective(phase: &Phase, now: i64) -> Effective<'_> {
    match phase {
        Phase::Available => Effective::Available,
        Phase::Leased {
            id,
            expires_at_ms: None,
        } => Effective::Leased {
            id,
            remaining_ms: None,
        },
        Phase::Leased {
            id,
            expires_at_ms: Some(at),
        } if now < *at => Effective::Leased {
            id,
            remaining_ms: Some(at - now),
        },
        Phase::Leased { id, .. } => Effective::Expired { id },
        Phase::Breaking { id, until_ms } if now < *until_ms => Effective::Breaking {
            id,
            remaining_ms: until_ms - now,
        },
        Phase::Breaking { id, .. } | Phase::Broken { id } => Effective::Broken { id },
    }
}

/// The lease once the boot its instants were measured in is over, so that every instant is
/// past: a fixed lease has expired (keeping its id, as any expired lease does) and a break
/// has ended. An infinite lease has no instant and stays leased.
fn after_reboot(lease: &Lease) -> Lease {
    let phase = match &lease.phase {
        Phase::Leased {
            id,
            expires_at_ms: Some(_),
        } => Phase::Leased {
            id: id.clone(),
            expires_at_ms: Some(BOOT_START_MS),
        },
        Phase::Breaking { id, .. } => Phase::Broken { id: id.clone() },
        other => other.clone(),
    };
    Lease {
        phase,
        duration: lease.duration,
    }
}

/// Why an operation was refused, before it is tied to an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Held(LeaseState),
    Lost(LostReason),
}

impl Refusal {
    fn into_error(self, identity: &Name) -> LeaseError {
        let identity = identity.clone();
        match self {
            Self::Held(state) => LeaseError::HeldByOther { identity, state },
            Self::Lost(reason) => LeaseError::Lost { identity, reason },
        }
    }
}

fn expiry(now: i64, duration: LeaseDuration) -> Option<i64> {
    match duration {
        LeaseDuration::Fixed(d) => Some(now.saturating_add(duration_to_ms(d))),
        LeaseDuration::Infinite => None,
    }
}

/// Acquire: a new lease on an acquirable record (`proposed`, else `fresh`), or a restart of
/// the live lease when `proposed` is its id. Returns the new lease and its id.
fn acquire(
    lease: &Lease,
    now: i64,
    duration: LeaseDuration,
    proposed: Option<&LeaseId>,
    fresh: LeaseId,
) -> Result<(Lease, LeaseId), Refusal> {
    let id = match effective(&lease.phase, now) {
        Effective::Available | Effective::Expired { .. } | Effective::Broken { .. } => {
            proposed.cloned().unwrap_or(fresh)
        }
        Effective::Leased { id, .. } if proposed == Some(id) => id.clone(),
        Effective::Leased { .. } => return Err(Refusal::Held(LeaseState::Leased)),
        Effective::Breaking { .. } => return Err(Refusal::Held(LeaseState::Breaking)),
    };
    let next = Lease {
        phase: Phase::Leased {
            id: id.clone(),
            expires_at_ms: expiry(now, duration),
        },
        duration: Some(duration),
    };
    Ok((next, id))
}

/// Renew: restarts the lease's duration, on a live lease and on an expired one nobody took.
fn renew(lease: &Lease, now: i64, id: &LeaseId) -> Result<Lease, Refusal> {
    match effective(&lease.phase, now) {
        Effective::Leased { id: held, .. } | Effective::Expired { id: held } if held == id => {
            // A decoded leased row always has a duration; without one, refusing is the
            // safe answer (the holder fences) where guessing could extend a lease.
            let duration = lease
                .duration
                .ok_or(Refusal::Lost(LostReason::NotPresent))?;
            Ok(Lease {
                phase: Phase::Leased {
                    id: id.clone(),
                    expires_at_ms: expiry(now, duration),
                },
                duration: Some(duration),
            })
        }
        Effective::Breaking { id: held, .. } | Effective::Broken { id: held } if held == id => {
            Err(Refusal::Lost(LostReason::Broken))
        }
        Effective::Leased { .. }
        | Effective::Expired { .. }
        | Effective::Breaking { .. }
        | Effective::Broken { .. } => Err(Refusal::Lost(LostReason::IdMismatch)),
        Effective::Available => Err(Refusal::Lost(LostReason::NotPresent)),
    }
}

/// Change: gives a live lease a new id, keeping its expiry. Idempotent: a retry after a
/// lost reply finds the id already changed and succeeds.
fn change(
    lease: &Lease,
    now: i64,
    current: &LeaseId,
    proposed: &LeaseId,
) -> Result<Lease, Refusal> {
    match effective(&lease.phase, now) {
        Effective::Leased { id, .. } if id == current || id == proposed => {
            let expires_at_ms = match &lease.phase {
                Phase::Leased { expires_at_ms, .. } => *expires_at_ms,
                _ => None,
            };
            Ok(Lease {
                phase: Phase::Leased {
                    id: proposed.clone(),
                    expires_at_ms,
                },
                duration: lease.duration,
            })
        }
        Effective::Leased { .. } => Err(Refusal::Lost(LostReason::IdMismatch)),
        Effective::Breaking { .. } => Err(Refusal::Lost(LostReason::Breaking)),
        Effective::Available | Effective::Expired { .. } | Effective::Broken { .. } => {
            Err(Refusal::Lost(LostReason::NotPresent))
        }
    }
}

/// Release: makes the record available at once, from any state that has a lease id.
fn release(lease: &Lease, now: i64, id: &LeaseId) -> Result<Lease, Refusal> {
    match effective(&lease.phase, now) {
        Effective::Available => Err(Refusal::Lost(LostReason::NotPresent)),
        Effective::Leased { id: held, .. }
        | Effective::Expired { id: held }
        | Effective::Breaking { id: held, .. }
        | Effective::Broken { id: held } => {
            if held != id {
                return Err(Refusal::Lost(LostReason::IdMismatch));
            }
            Ok(Lease {
                phase: Phase::Available,
                duration: lease.duration,
            })
        }
    }
}

/// Break: locks the lease for `period_ms` (default: the rest of a fixed lease, nothing for
/// an infinite one), then it is broken. A running break may only be shortened. Returns the
/// new lease and the milliseconds until it can be acquired.
fn break_lease(lease: &Lease, now: i64, period_ms: Option<i64>) -> Result<(Lease, i64), Refusal> {
    let broken = |id: &LeaseId| Lease {
        phase: Phase::Broken { id: id.clone() },
        duration: lease.duration,
    };
    let breaking_until = |id: &LeaseId, until_ms: i64| {
        if until_ms <= now {
            (broken(id), 0)
        } else {
            let next = Lease {
                phase: Phase::Breaking {
                    id: id.clone(),
                    until_ms,
                },
                duration: lease.duration,
            };
            (next, until_ms - now)
        }
    };
    match effective(&lease.phase, now) {
        Effective::Available => Err(Refusal::Lost(LostReason::NotPresent)),
        Effective::Expired { id } | Effective::Broken { id } => Ok((broken(id), 0)),
        Effective::Leased { id, remaining_ms } => {
            let period = match (period_ms, remaining_ms) {
                (None, remaining) => remaining.unwrap_or(0),
                (Some(p), None) => p,
                (Some(p), Some(remaining)) => p.min(remaining),
            };
            Ok(breaking_until(id, now.saturating_add(period)))
        }
        Effective::Breaking { id, remaining_ms } => {
            let until = now.saturating_add(remaining_ms);
            let until = period_ms.map_or(until, |p| until.min(now.saturating_add(p)));
            Ok(breaking_until(id, until))
        }
    }
}

/// Metadata may be written only under the live lease (leased, or breaking: the holder
/// still has it until the break ends).
fn may_write_metadata(lease: &Lease, now: i64, id: &LeaseId) -> Result<(), Refusal> {
    match effective(&lease.phase, now) {
        Effective::Leased { id: held, .. } | Effective::Breaking { id: held, .. } => {
            if held == id {
                Ok(())
            } else {
                Err(Refusal::Lost(LostReason::IdMismatch))
            }
        }
        Effective::Available | Effective::Expired { .. } | Effective::Broken { .. } => {
            Err(Refusal::Lost(LostReason::NotPresent))
        }
    }
}

/// `LeaseDuration::Fixed` is a public variant, so a duration may reach the store without
/// passing [`LeaseDuration::fixed`]; the store checks again.
fn check_duration(duration: LeaseDuration) -> Result<(), String> {
    match duration {
        LeaseDuration::Fixed(d) => LeaseDuration::fixed(d).map(drop).map_err(|e| e.to_string()),
        LeaseDuration::Infinite => Ok(()),
    }
}

fn duration_to_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn ms_to_duration(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn to_millis_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn backend(
    path: &Path,
    problem: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
) -> LeaseError {
    LeaseError::Backend {
        message: format!("sqlite lease store {}: {problem}", path.display()),
        source,
    }
}

/// Busy and locked mean another process held the write lock for the whole busy timeout:
/// worth retrying. Everything else is a broken store.
fn sql_error(path: &Path, what: &str, e: rusqlite::Error) -> LeaseError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => LeaseError::Transient {
            message: format!(
                "sqlite lease store {}: {what}: the database stayed locked by another connection",
                path.display()
            ),
            source: Some(Box::new(e)),
        },
        Some(ErrorCode::NotADatabase) => backend(
            path,
            format!("{what}: the file is not a SQLite database"),
            Some(Box::new(e)),
        ),
        Some(ErrorCode::ReadOnly) => backend(
            path,
            format!("{what}: the file is read-only: {e}"),
            Some(Box::new(e)),
        ),
        _ => backend(path, format!("{what}: {e}"), Some(Box::new(e))),
    }
}

#[cfg(test)]
mod tests;
