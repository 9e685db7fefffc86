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
//! - store a state that depends on the clock (expired, or broken once a break period ends):
//!   only the instants are stored, and `effective` derives the state at read time;
//! - act on a row it cannot make sense of: an inconsistent row is a `Backend` error, never a
//!   guess (fail closed);
//! - hold key material: rows carry lease ids and holder metadata only.
//!
//! Time comes from the injected [`StoreClock`], which plays the lease service's clock, and is
//! stored as integer milliseconds since the Unix epoch. The real clock is the host's wall
//! clock, shared by every process on the host, which is what makes expiry agree between them.
//! It also means a step of that clock moves every lease with it: a forward step longer than
//! the daemon's fence margin lets a standby acquire before the old holder fences, so hosts
//! running several daemons on one file must slew their clock (chrony, NTP), never step it.
//!
//! The decisions are pure functions over `Lease`, one per operation, unit-tested below
//! without a database; each store method loads the row, calls one, and writes the result.

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
    LeaseDuration, LeaseError, LeaseId, LeaseRecord, LeaseState, LeaseStore, LostReason, Metadata,
    RecordCreated, StoreClock, SystemStoreClock, MAX_BREAK_PERIOD,
};
use crate::name::Name;

/// How long an operation waits for another process's transaction before it reports
/// [`LeaseError::Transient`].
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Bumped whenever the table layout changes; a file with another version is refused rather
/// than misread.
const SCHEMA_VERSION: i64 = 1;

/// `duration_secs` of an infinite lease. NULL is taken: it means "never leased", which
/// [`LeaseRecord::duration`] must report as `None`.
const INFINITE_SECS: i64 = -1;

const SCHEMA: &str = "
CREATE TABLE leases (
    identity       TEXT PRIMARY KEY NOT NULL,
    lease_state    TEXT NOT NULL
                   CHECK (lease_state IN ('available', 'leased', 'breaking', 'broken')),
    lease_id       TEXT,
    -- The current or last lease's duration: seconds, -1 for infinite, NULL if never leased.
    duration_secs  INTEGER,
    -- Leased with a fixed duration: when it expires (ms since the Unix epoch).
    expires_at_ms  INTEGER,
    -- Breaking: when it becomes broken (ms since the Unix epoch).
    break_until_ms INTEGER,
    -- User metadata: a JSON object of strings.
    metadata       TEXT NOT NULL DEFAULT '{}'
) STRICT;
";

const SELECT_ROW: &str = "SELECT identity, lease_state, lease_id, duration_secs, expires_at_ms, \
                          break_until_ms, metadata FROM leases";

/// Azure's limit on a blob's metadata (names and values), enforced here too so that what
/// works on SQLite does not fail on Blob Storage.
const MAX_METADATA_BYTES: usize = 8 * 1024;

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
    /// Opens (creating if missing) the lease file at `path`, on the host's real-time clock.
    ///
    /// Blocks while it sets up the file; call it at start-up or from a blocking task.
    pub fn open(path: &Path) -> Result<Self, LeaseError> {
        Self::open_with_clock(path, Arc::new(SystemStoreClock))
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
        let conn = init_schema(path, conn)?;
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
    /// gets the store time; the transaction commits only if `op` returns `Ok`.
    async fn write<T, F>(&self, what: &'static str, op: F) -> Result<T, LeaseError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, i64) -> Result<T, OpError> + Send + 'static,
    {
        self.transaction(what, TransactionBehavior::Immediate, move |tx, clock| {
            // Read the clock only once the write lock is held: an operation that waited
            // behind another process must decide at the time it actually runs.
            let now = to_millis_i64(clock.now_millis());
            op(tx, now)
        })
        .await
    }

    /// Runs `op` as one read transaction (`BEGIN DEFERRED`, then only reads) on a blocking
    /// thread. Its first read takes a snapshot of the file and no lock a writer waits for
    /// (WAL mode), so a reader however slow, or stopped in the middle (a frozen `leased
    /// status`), never delays a renew. `op` reads the clock itself, after its first read.
    async fn read_only<T, F>(&self, what: &'static str, op: F) -> Result<T, LeaseError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, &dyn StoreClock) -> Result<T, OpError> + Send + 'static,
    {
        self.transaction(what, TransactionBehavior::Deferred, op)
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

fn init_schema(path: &Path, mut conn: Connection) -> Result<Connection, LeaseError> {
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
    // Immediate, so that two processes creating the file at once do not both create the
    // table: the second waits, then sees version 1.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
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
            tx.execute_batch(SCHEMA).map_err(err)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(err)?;
        }
        SCHEMA_VERSION => {}
        other => {
            return Err(backend(
                path,
                format!("the schema version is {other}; this build reads version {SCHEMA_VERSION}"),
                None,
            ))
        }
    }
    tx.commit().map_err(err)?;
    Ok(conn)
}

#[async_trait]
impl LeaseStore for SqliteLeaseStore {
    async fn create_record(&self, identity: &Name) -> Result<RecordCreated, LeaseError> {
        let identity = identity.clone();
        self.write("create record", move |tx, _now| {
            let inserted = tx.execute(
                "INSERT INTO leases (identity, lease_state) VALUES (?1, 'available') \
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
        period: Option<Duration>,
    ) -> Result<Duration, LeaseError> {
        let period_ms = check_break_period(period).map_err(LeaseError::Invalid)?;
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
        check_metadata(metadata).map_err(LeaseError::Invalid)?;
        let json = serde_json::to_string(metadata)
            .map_err(|e| LeaseError::Invalid(format!("cannot encode metadata: {e}")))?;
        let identity = identity.clone();
        let id = lease.clone();
        self.write("write metadata", move |tx, now| {
            let row = load(tx, &identity)?;
            may_write_metadata(&row.lease, now, &id).map_err(|r| r.into_error(&identity))?;
            tx.execute(
                "UPDATE leases SET metadata = ?2 WHERE identity = ?1",
                params![identity.as_str(), json],
            )?;
            Ok(())
        })
        .await
    }

    async fn read(&self, identity: &Name) -> Result<LeaseRecord, LeaseError> {
        let identity = identity.clone();
        self.read_only("read", move |tx, clock| {
            let row = load(tx, &identity)?;
            let now = to_millis_i64(clock.now_millis());
            Ok(row.into_record(identity, now))
        })
        .await
    }

    async fn list(&self) -> Result<Vec<LeaseRecord>, LeaseError> {
        self.read_only("list", move |tx, clock| {
            let mut stmt = tx.prepare(&format!("{SELECT_ROW} ORDER BY identity"))?;
            let raws = stmt
                .query_map([], RawRow::from_sql)?
                .collect::<Result<Vec<_>, _>>()?;
            let now = to_millis_i64(clock.now_millis());
            raws.into_iter()
                .map(|raw| {
                    let identity = Name::new(raw.identity.as_str())
                        .map_err(|e| raw.corrupt(format!("invalid name: {e}")))?;
                    let row = raw.decode().map_err(|problem| raw.corrupt(problem))?;
                    Ok(row.into_record(identity, now))
                })
                .collect()
        })
        .await
    }
}

/// What an operation inside a transaction can fail with; [`SqliteLeaseStore::run`] turns
/// it into a [`LeaseError`] naming the file.
#[derive(Debug)]
enum OpError {
    Sql(rusqlite::Error),
    Lease(LeaseError),
    Corrupt { identity: String, problem: String },
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
        "UPDATE leases SET lease_state = ?2, lease_id = ?3, duration_secs = ?4, \
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
        let metadata: Metadata = serde_json::from_str(&self.metadata)
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

impl Row {
    fn into_record(self, identity: Name, now: i64) -> LeaseRecord {
        let state = effective(&self.lease.phase, now);
        LeaseRecord {
            identity,
            state: state.state(),
            duration: self.lease.duration,
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

/// Azure takes a break period in whole seconds, 0–60.
fn check_break_period(period: Option<Duration>) -> Result<Option<i64>, String> {
    match period {
        None => Ok(None),
        Some(p) if p > MAX_BREAK_PERIOD || p.subsec_nanos() != 0 => Err(format!(
            "break period {}s is outside 0-{} whole seconds",
            p.as_secs_f64(),
            MAX_BREAK_PERIOD.as_secs()
        )),
        Some(p) => Ok(Some(duration_to_ms(p))),
    }
}

/// Blob metadata rules, so that what works here works on Blob Storage: names are C#
/// identifiers (letters, digits, `_`, not starting with a digit), unique ignoring case;
/// values are printable ASCII (they travel as HTTP headers); at most 8 KiB in all.
fn check_metadata(metadata: &Metadata) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut size = 0;
    for (name, value) in metadata {
        let mut chars = name.chars();
        let starts_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !starts_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "metadata name {name:?} is not an identifier (letters, digits and '_', not starting with a digit)"
            ));
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(format!(
                "metadata name {name:?} repeats another name, ignoring case"
            ));
        }
        if let Some(bad) = value.chars().find(|c| !(' '..='~').contains(c)) {
            return Err(format!(
                "metadata value of {name:?} holds {bad:?}; only printable ASCII is allowed"
            ));
        }
        size += name.len() + value.len();
    }
    if size > MAX_METADATA_BYTES {
        return Err(format!(
            "metadata is {size} bytes; at most {MAX_METADATA_BYTES} are allowed"
        ));
    }
    Ok(())
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
mod tests {
    use super::*;

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

        assert_eq!(check_break_period(None), Ok(None));
        assert_eq!(check_break_period(Some(Duration::ZERO)), Ok(Some(0)));
        assert_eq!(
            check_break_period(Some(Duration::from_secs(60))),
            Ok(Some(60 * SEC))
        );
        assert!(check_break_period(Some(Duration::from_secs(61))).is_err());
        assert!(check_break_period(Some(Duration::from_millis(1500))).is_err());

        let md = |pairs: &[(&str, &str)]| -> Metadata {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(
            check_metadata(&md(&[("holder_host", "vm-1"), ("epoch", "7"), ("_x9", "")])).is_ok()
        );
        for bad in [
            md(&[("holder-host", "x")]),
            md(&[("9lives", "x")]),
            md(&[("", "x")]),
            md(&[("Epoch", "1"), ("epoch", "2")]),
            md(&[("note", "caf\u{e9}")]),
            md(&[("note", "a\nb")]),
            md(&[("big", &"x".repeat(MAX_METADATA_BYTES))]),
        ] {
            assert!(check_metadata(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rows_round_trip_and_inconsistent_rows_are_refused() {
        let raw = |state: &str,
                   lid: Option<&str>,
                   dur: Option<i64>,
                   exp: Option<i64>,
                   brk: Option<i64>| RawRow {
            identity: "m0-v0".into(),
            lease_state: state.into(),
            lease_id: lid.map(str::to_string),
            duration_secs: dur,
            expires_at_ms: exp,
            break_until_ms: brk,
            metadata: "{}".into(),
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
    }

    // Store-level checks that need SQLite itself; the behaviour shared with every backend
    // is in the conformance suite (tests/src/lease_conformance.rs).

    fn temp_store() -> (tempfile::TempDir, SqliteLeaseStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteLeaseStore::open_with_clock(
            &dir.path().join("leases.db"),
            Arc::new(super::super::ManualStoreClock::new(T0 as u64)),
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
            .execute("UPDATE leases SET lease_state = 'leased'", [])
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

    #[test]
    fn other_schema_versions_and_foreign_databases_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.db");
        drop(SqliteLeaseStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 2)
            .unwrap();
        let err = SqliteLeaseStore::open(&path).unwrap_err();
        assert!(err.to_string().contains("schema version is 2"), "{err}");

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
}
