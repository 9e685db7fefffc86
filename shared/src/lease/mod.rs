//! The lease store: one lease record per validator identity, with Azure Blob lease semantics.
//!
//! The trait models the Blob Storage "Lease Blob" operation so that the embedded SQLite
//! backend and the Azure backend are interchangeable and pass one conformance suite
//! (`tests/src/lease_conformance.rs`). The semantics, per lease state:
//!
//! | state     | acquire               | renew (id)          | change (id)        | release (id) | break        |
//! |-----------|-----------------------|---------------------|--------------------|--------------|--------------|
//! | available | ok                    | lost: not present   | lost: not present  | lost: not present | lost: not present |
//! | leased    | same id only, else held | ok / lost: mismatch | ok / lost: mismatch | ok / mismatch | breaking or broken |
//! | expired   | ok (any id)           | ok, same id: resumes | lost: not present  | ok / mismatch | broken       |
//! | breaking  | held (breaking)       | lost: broken        | lost: breaking     | ok / mismatch | shorten only |
//! | broken    | ok                    | lost: broken        | lost: not present  | ok / mismatch | broken       |
//!
//! The conformance suite runs this table cell for cell from its own copy (`TABLE` in
//! `tests/src/lease_conformance.rs`), and a test there fails when the two differ: edit both.
//!
//! Note the `expired` row: a renew with the old id succeeds on an expired lease that nobody
//! took. The daemon must therefore never "renew back" after it fenced; it re-enters only by
//! a fresh acquire (docs/architecture.md).
//!
//! Lease ids never carry key material; metadata is written only under a live lease, and only
//! holds who holds the lease (never key material).

pub mod blob;
pub mod sqlite;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::name::Name;

/// Shortest fixed lease Azure grants.
pub const MIN_LEASE: Duration = Duration::from_secs(15);
/// Longest fixed lease Azure grants.
pub const MAX_LEASE: Duration = Duration::from_secs(60);
/// Longest break period Azure accepts.
pub const MAX_BREAK_PERIOD: Duration = Duration::from_secs(60);

/// How long a lease lasts once acquired or renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseDuration {
    /// 15–60 s; checked by [`LeaseDuration::fixed`].
    Fixed(Duration),
    /// Held until released or broken. For on-call tools and tests, never for the daemon.
    Infinite,
}

impl LeaseDuration {
    /// A fixed duration, checked against Azure's 15–60 s range (whole seconds).
    pub fn fixed(d: Duration) -> Result<Self, LeaseError> {
        if d < MIN_LEASE || d > MAX_LEASE || d.subsec_nanos() != 0 {
            return Err(LeaseError::Invalid(format!(
                "lease duration {}s is outside 15-60 whole seconds",
                d.as_secs_f64()
            )));
        }
        Ok(Self::Fixed(d))
    }

    pub fn from_secs(secs: u64) -> Result<Self, LeaseError> {
        Self::fixed(Duration::from_secs(secs))
    }
}

impl fmt::Display for LeaseDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(d) => write!(f, "{}s", d.as_secs()),
            Self::Infinite => f.write_str("infinite"),
        }
    }
}

/// How long a break keeps a lease locked before it is broken: 0–60 whole seconds, as
/// Azure's `x-ms-lease-break-period` takes it. Checked when made, so every store takes any
/// `BreakPeriod` as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BreakPeriod(u8);

impl BreakPeriod {
    /// Broken at once.
    pub const ZERO: Self = Self(0);
    /// The longest break period Azure accepts, [`MAX_BREAK_PERIOD`].
    pub const MAX: Self = Self(MAX_BREAK_PERIOD.as_secs() as u8);

    /// `secs` seconds; invalid above 60.
    pub fn from_secs(secs: u64) -> Result<Self, LeaseError> {
        Self::new(Duration::from_secs(secs))
    }

    /// `d`; invalid above 60 s or when not whole seconds.
    pub fn new(d: Duration) -> Result<Self, LeaseError> {
        if d > MAX_BREAK_PERIOD || d.subsec_nanos() != 0 {
            return Err(LeaseError::Invalid(format!(
                "break period {}s is outside 0-{} whole seconds",
                d.as_secs_f64(),
                MAX_BREAK_PERIOD.as_secs()
            )));
        }
        Ok(Self(d.as_secs() as u8))
    }

    pub fn as_secs(self) -> u64 {
        u64::from(self.0)
    }

    pub fn as_duration(self) -> Duration {
        Duration::from_secs(self.as_secs())
    }
}

impl TryFrom<Duration> for BreakPeriod {
    type Error = LeaseError;

    fn try_from(d: Duration) -> Result<Self, LeaseError> {
        Self::new(d)
    }
}

impl std::str::FromStr for BreakPeriod {
    type Err = LeaseError;

    /// Whole seconds, as a command line gives them: `0` to `60`.
    fn from_str(s: &str) -> Result<Self, LeaseError> {
        let secs = s.parse::<u64>().map_err(|_| {
            LeaseError::Invalid(format!(
                "break period {s:?} is not a whole number of seconds (0-{})",
                MAX_BREAK_PERIOD.as_secs()
            ))
        })?;
        Self::from_secs(secs)
    }
}

impl fmt::Display for BreakPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

/// A lease id: a GUID, as Azure requires for `x-ms-proposed-lease-id`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LeaseId(String);

impl LeaseId {
    /// A fresh random (version 4) GUID from the OS CSPRNG.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// Parses the canonical 8-4-4-4-12 GUID form; stored lower-case so ids compare equal
    /// whatever case a caller used, as Azure's do.
    pub fn parse(s: &str) -> Result<Self, LeaseError> {
        let groups: Vec<&str> = s.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        let ok = groups.len() == 5
            && groups
                .iter()
                .zip(lens)
                .all(|(g, n)| g.len() == n && g.bytes().all(|c| c.is_ascii_hexdigit()));
        if !ok {
            return Err(LeaseError::Invalid(format!(
                "lease id {s:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
            )));
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({})", self.0)
    }
}

/// The five blob lease states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseState {
    /// Never leased, or released: anyone may acquire.
    Available,
    /// Held under a live lease.
    Leased,
    /// The holder stopped renewing; anyone may acquire, and the old holder may still renew.
    Expired,
    /// Broken, but locked until the break period ends.
    Breaking,
    /// Broken and the break period has passed: anyone may acquire.
    Broken,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Leased => "leased",
            Self::Expired => "expired",
            Self::Breaking => "breaking",
            Self::Broken => "broken",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "available" => Self::Available,
            "leased" => Self::Leased,
            "expired" => Self::Expired,
            "breaking" => Self::Breaking,
            "broken" => Self::Broken,
            _ => return None,
        })
    }

    /// Whether a new holder may acquire now.
    pub fn is_acquirable(self) -> bool {
        matches!(self, Self::Available | Self::Expired | Self::Broken)
    }
}

impl fmt::Display for LeaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Azure's limit on a blob's metadata, names and values together.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

/// User metadata stored with a lease record (Azure: blob metadata), valid by construction:
/// every way to build or change one applies the one rule all stores share, so that what a
/// store accepts locally (`sqlite:`, the in-memory test store) Blob Storage accepts too.
///
/// The rule: names are lower-case C# identifiers that start with a letter (`a`-`z`, then
/// `a`-`z`, `0`-`9` and `_`). Azure takes any C# identifier but ignores case, names come
/// back lower-case through HTTP header maps, and Azurite lists a name `_` as XML text, so
/// only this subset reads back the same from every store. Values are printable ASCII
/// without leading or trailing spaces (header values); at most [`MAX_METADATA_BYTES`] of
/// names and values in all. A break of it is [`LeaseError::Invalid`].
///
/// The one exception is metadata read back from a store (`LeaseRecord::metadata`), which
/// is taken as the store holds it (the stores' `Metadata::from_store`): reading a record must
/// never fail because another writer was laxer.
///
/// Serialized as a JSON object of strings; deserializing applies the rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "BTreeMap<String, String>")]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    /// No metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Metadata of `pairs`; a name given twice is invalid, as one differing only in case
    /// is.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, LeaseError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut map = BTreeMap::new();
        for (name, value) in pairs {
            let name = name.into();
            if map.contains_key(&name) {
                return Err(LeaseError::Invalid(format!(
                    "metadata name {name:?} is given twice"
                )));
            }
            map.insert(name, value.into());
        }
        Self::try_from(map)
    }

    /// Metadata as a store read it back, without applying the rule. Only for the stores'
    /// read paths: a blob may carry metadata another tool wrote, and an SQLite file may hold
    /// what an older `leased` wrote before the rule was shared (edge spaces in values, once
    /// allowed there); a record that holds such metadata must still be readable, and
    /// on-call tools must be able to show it. Outside this crate every `Metadata` comes
    /// from the checked constructors or from a store read; only writing a record's metadata
    /// back unchanged could hand a store unchecked metadata (nothing does), and an
    /// [`insert`](Self::insert) into it checks the whole.
    pub(crate) fn from_store(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }

    /// Sets `name` to `value`, replacing its value if it is there; invalid (and nothing
    /// changed) when the result would break the rule. Returns the value it replaced.
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Option<String>, LeaseError> {
        let (name, value) = (name.into(), value.into());
        let mut next = self.0.clone();
        let old = next.insert(name, value);
        check_metadata(&next)?;
        self.0 = next;
        Ok(old)
    }

    /// Removes `name`, returning its value if it was there.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    /// The value of `name` (exactly that name: case matters, as names are stored as given).
    pub fn get(&self, name: &str) -> Option<&String> {
        self.0.get(name)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// Names and values, by name.
    pub fn iter(&self) -> std::collections::btree_map::Iter<'_, String, String> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn into_inner(self) -> BTreeMap<String, String> {
        self.0
    }
}

impl TryFrom<BTreeMap<String, String>> for Metadata {
    type Error = LeaseError;

    /// Applies the rule (see [`Metadata`]).
    fn try_from(map: BTreeMap<String, String>) -> Result<Self, LeaseError> {
        check_metadata(&map)?;
        Ok(Self(map))
    }
}

impl From<Metadata> for BTreeMap<String, String> {
    fn from(metadata: Metadata) -> Self {
        metadata.0
    }
}

impl serde::Serialize for Metadata {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'a> IntoIterator for &'a Metadata {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl std::ops::Index<&str> for Metadata {
    type Output = String;

    /// The value of `name`; panics when there is none, as a map's index does.
    fn index(&self, name: &str) -> &String {
        &self.0[name]
    }
}

/// The metadata rule (see [`Metadata`]); its only caller is the type, so that it is applied
/// in one place.
fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), LeaseError> {
    let invalid = |why: String| Err(LeaseError::Invalid(why));
    let mut bytes = 0;
    for (name, value) in metadata {
        let mut chars = name.chars();
        let identifier = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !identifier {
            return invalid(format!(
                "metadata name {name:?} is not a lower-case identifier (a-z, then a-z, 0-9 \
                 and '_')"
            ));
        }
        if !value.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
            return invalid(format!("metadata value of {name:?} is not printable ASCII"));
        }
        if value.starts_with(' ') || value.ends_with(' ') {
            return invalid(format!(
                "metadata value of {name:?} has a leading or trailing space"
            ));
        }
        bytes += name.len() + value.len();
    }
    if bytes > MAX_METADATA_BYTES {
        return invalid(format!(
            "metadata is {bytes} bytes; at most {MAX_METADATA_BYTES} are allowed"
        ));
    }
    Ok(())
}

/// Well-known metadata keys written by the daemon under its lease.
pub mod meta {
    pub const HOLDER_HOST: &str = "holder_host";
    pub const HOLDER_BOOT_ID: &str = "holder_boot_id";
    pub const HOLDER_PID: &str = "holder_pid";
    pub const ACQUIRED_AT: &str = "acquired_at";
    /// The same in Unix milliseconds: a standby reads when a lease not yet renewed can
    /// end (Azure does not say), so it looks then rather than a renew period later.
    pub const ACQUIRED_AT_MS: &str = "acquired_at_ms";
    pub const EPOCH: &str = "epoch";
    /// The daemon's node name (`node` in its config; the hostname by default).
    pub const HOLDER_NODE: &str = "holder_node";
    /// The identity's validator address (public), so that on-call tools can show it
    /// without reading the secret store.
    pub const ADDRESS: &str = "address";
    /// The holder's lease duration D in whole seconds. Azure does not report a fixed
    /// lease's length, so `leased break` reads it here to tell how long the holder may
    /// still sign.
    pub const LEASE_SECS: &str = "lease_secs";
    /// Why the last holder gave the identity up (a fence reason such as
    /// `hand_off_failed`), written under the lease just before it is released.
    pub const LAST_FENCE: &str = "last_fence";
    /// One printable line with the detail of [`LAST_FENCE`] (never key material).
    pub const LAST_FENCE_DETAIL: &str = "last_fence_detail";
    /// The holder's client's enode URL, while it holds (`[client] enode`): the live
    /// bootnode list is the enodes of the held leases ([`crate::enode::live`]).
    pub const ENODE: &str = "enode";
}

/// What the store says about one identity's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub identity: Name,
    pub state: LeaseState,
    /// The duration of the current or last lease; `None` when never leased, or when the
    /// store does not say how long a fixed lease is (Azure reports only "fixed").
    pub duration: Option<LeaseDuration>,
    /// For `Leased`: time left on the lease as the store sees it. For `Breaking`: time left
    /// until it becomes `Broken`. Otherwise `None`.
    pub remaining: Option<Duration>,
    /// As the store holds it, not checked again on the way back (a record must stay
    /// readable whoever wrote it; see [`Metadata`]).
    pub metadata: Metadata,
}

impl LeaseRecord {
    /// The generation counter written under the lease; 0 when never written.
    pub fn epoch(&self) -> u64 {
        self.metadata
            .get(meta::EPOCH)
            .and_then(|e| e.parse().ok())
            .unwrap_or(0)
    }
}

/// Why the caller no longer holds (or never held) the lease it named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// The record is leased (or expired) under another lease id
    /// (`LeaseIdMismatchWithLeaseOperation`).
    IdMismatch,
    /// There is no lease to operate on (`LeaseNotPresentWithLeaseOperation`).
    NotPresent,
    /// The lease was broken (`LeaseIsBrokenAndCannotBeRenewed`).
    Broken,
    /// The lease is being broken (`LeaseIsBreakingAndCannotBeChanged`).
    Breaking,
    /// The service says the lease is gone for another reason (`LeaseLost`).
    Lost,
    /// The store that held the record is gone (Azure: `ContainerNotFound`): someone
    /// deleted the container, and every lease in it with it.
    StoreDeleted,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::IdMismatch => "the record is leased under another lease id",
            Self::NotPresent => "there is no lease on the record",
            Self::Broken => "the lease was broken",
            Self::Breaking => "the lease is being broken",
            Self::Lost => "the lease was lost",
            Self::StoreDeleted => "the container holding the lease records was deleted",
        })
    }
}

/// Lease store errors, split so the daemon can tell *someone else holds it* from *you lost
/// it* (fence now) from *try again* (retry until the fence deadline).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Acquire refused: another holder has it, or it is breaking (`LeaseAlreadyPresent`,
    /// `LeaseIsBreakingAndCannotBeAcquired`).
    #[error("{identity} is {state} by another holder")]
    HeldByOther { identity: Name, state: LeaseState },
    /// The caller's lease is gone; a holder must fence at once.
    #[error("lease on {identity} lost: {reason}")]
    Lost { identity: Name, reason: LostReason },
    /// No lease record for the identity.
    #[error("no lease record for {identity}")]
    NotFound { identity: Name },
    /// Worth retrying: timeouts, busy database, 5xx, 429.
    #[error("lease store temporarily unavailable: {message}")]
    Transient {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The request itself is wrong (bad duration, lease id, break period or metadata).
    #[error("invalid lease request: {0}")]
    Invalid(String),
    /// The store cannot serve requests (corrupt file, permissions, misconfiguration).
    #[error("lease store failed: {message}")]
    Backend {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl LeaseError {
    /// True for errors that mean the caller's lease is gone.
    pub fn is_lost(&self) -> bool {
        matches!(self, Self::Lost { .. })
    }

    /// True for errors worth retrying before the fence deadline.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }
}

/// Whether [`LeaseStore::create_record`] made the record or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordCreated {
    Created,
    AlreadyExisted,
}

/// One lease record per identity, with Azure Blob lease semantics (see the module docs).
///
/// Every method is one atomic operation on the store: two callers racing on one identity
/// see a single winner. Callers on the lease path wrap each call in their own timeout.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Creates the record (state `available`, no metadata) unless it exists.
    async fn create_record(&self, identity: &Name) -> Result<RecordCreated, LeaseError>;

    /// Acquires a lease. Succeeds on `available`, `expired` and `broken`, and on `leased`
    /// when `proposed` equals the current lease id (which restarts it with `duration`).
    /// Without `proposed`, the store chooses a random id.
    async fn acquire(
        &self,
        identity: &Name,
        duration: LeaseDuration,
        proposed: Option<&LeaseId>,
    ) -> Result<LeaseId, LeaseError>;

    /// Restarts the lease's duration. Succeeds on `leased` and on `expired` with the same id.
    async fn renew(&self, identity: &Name, lease: &LeaseId) -> Result<(), LeaseError>;

    /// Ends the lease at once: the record becomes `available`.
    async fn release(&self, identity: &Name, lease: &LeaseId) -> Result<(), LeaseError>;

    /// Replaces the lease id of a live lease; succeeds too when the lease already has
    /// `proposed` as its id.
    async fn change(
        &self,
        identity: &Name,
        lease: &LeaseId,
        proposed: &LeaseId,
    ) -> Result<LeaseId, LeaseError>;

    /// Breaks the lease without its id. `period` is how long it stays locked (capped by the
    /// rest of a fixed lease); `None` is Azure's default: the rest of a fixed lease, or at
    /// once for an infinite one. A second break may only shorten a running break. Returns
    /// the time until it can be acquired.
    async fn break_lease(
        &self,
        identity: &Name,
        period: Option<BreakPeriod>,
    ) -> Result<Duration, LeaseError>;

    /// Replaces the record's metadata; allowed only under the live lease `lease`. The
    /// metadata is valid by construction ([`Metadata`]), so every store takes what one does.
    async fn write_metadata(
        &self,
        identity: &Name,
        lease: &LeaseId,
        metadata: &Metadata,
    ) -> Result<(), LeaseError>;

    /// Reads one record.
    async fn read(&self, identity: &Name) -> Result<LeaseRecord, LeaseError>;

    /// All records, sorted by identity.
    async fn list(&self) -> Result<Vec<LeaseRecord>, LeaseError>;

    /// Publishes the network-info document beside the records ([`NETWORK_INFO`]),
    /// replacing any earlier one whole: a blob in the container, or a file beside the
    /// SQLite file. A store without a place for it says so.
    async fn put_network_info(&self, _document: &[u8]) -> Result<(), LeaseError> {
        Err(LeaseError::Invalid(
            "this lease store cannot hold the network info".into(),
        ))
    }

    /// The published network-info document; `None` when none was published. A document
    /// over `max` bytes is an error, read no further than that.
    async fn get_network_info(&self, _max: usize) -> Result<Option<Vec<u8>>, LeaseError> {
        Err(LeaseError::Invalid(
            "this lease store cannot hold the network info".into(),
        ))
    }

    /// Records that standby `node` wants a nudge at `address` (a UDP `ip:port`) when a
    /// lease is released, replacing its earlier entry: a blob `standby.<node>` in the
    /// container, or a file in a directory beside the SQLite file. Only a hint for speed:
    /// nothing about who holds what depends on it. A store without a place keeps nothing.
    async fn announce_standby(&self, _node: &str, _address: &str) -> Result<(), LeaseError> {
        Ok(())
    }

    /// Removes `node`'s entry, if any.
    async fn withdraw_standby(&self, _node: &str) -> Result<(), LeaseError> {
        Ok(())
    }

    /// The announced standbys, as (node, address), at most [`MAX_STANDBYS`] of them.
    async fn standbys(&self) -> Result<Vec<(String, String)>, LeaseError> {
        Ok(Vec::new())
    }
}

/// How many standby entries a release nudges at most.
pub const MAX_STANDBYS: usize = 256;

/// The prefix of a standby's entry name beside the records: not an identity name (it has
/// a dot), so no record can collide with it.
pub const STANDBY_PREFIX: &str = "standby.";

/// `node` as part of a blob or file name: letters, digits, `-` and `_` as they are, every
/// other byte as `~` and two hex digits (so `/` makes no folder and `.` no hidden file).
pub fn standby_entry_name(node: &str) -> String {
    let mut out = String::from(STANDBY_PREFIX);
    for b in node.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("~{b:02x}"));
        }
    }
    out
}

/// The node of a standby entry named `name`; `None` for other names.
pub fn standby_entry_node(name: &str) -> Option<String> {
    let rest = name.strip_prefix(STANDBY_PREFIX)?.as_bytes();
    let mut out = Vec::with_capacity(rest.len());
    let mut i = 0;
    while i < rest.len() {
        if rest[i] == b'~' {
            let hex = std::str::from_utf8(rest.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(rest[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|n| !n.is_empty())
}

/// The name the network-info document is published under, beside the lease records. Not
/// an identity name (it has a dot), so no record can collide with it.
pub const NETWORK_INFO: &str = "networkinfo.json";

/// One reading of a [`StoreClock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreTime {
    /// Which run of the clock the reading belongs to: the host's boot id for the real clock.
    /// Readings with different boot ids cannot be compared.
    pub boot_id: String,
    /// Milliseconds since the clock's origin in that boot.
    pub millis: u64,
}

/// The lease *service*'s clock, for the embedded backend (Azure keeps time on the server):
/// lease expiry and break periods are measured on it.
///
/// It must never step, and never run faster than the clock the holders fence on
/// (`CLOCK_MONOTONIC`, see `leased`'s guard): if it ran ahead, a standby would see a lease
/// expire before its holder's fence deadline. Readings count from an origin that only a
/// reboot resets; [`StoreTime::boot_id`] tells the boots apart. It is injected so the
/// conformance suite can expire a 15 s lease without waiting 15 s, and simulate a reboot.
pub trait StoreClock: Send + Sync + fmt::Debug {
    /// The time now; an error when the clock cannot be read (the store then refuses the
    /// operation rather than guess).
    fn now(&self) -> std::io::Result<StoreTime>;
}

/// Where Linux publishes the id of the current boot.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// The host's `CLOCK_MONOTONIC` and boot id: shared by every process on the host, never
/// stepped (a change of the wall clock does not move it), and on the same clock as the
/// holders' fence deadlines. It stops while the host is suspended, as the holders' deadlines
/// do; `CLOCK_BOOTTIME` would not, and would expire every lease across a suspend before its
/// holder fenced.
#[derive(Debug, Clone)]
pub struct MonotonicStoreClock {
    boot_id: std::sync::Arc<str>,
}

impl MonotonicStoreClock {
    /// Reads the boot id, once: a process does not outlive its boot.
    pub fn new() -> std::io::Result<Self> {
        let text = std::fs::read_to_string(BOOT_ID_PATH).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot read the boot id from {BOOT_ID_PATH}: {e}"),
            )
        })?;
        let boot_id = text.trim();
        let plausible = !boot_id.is_empty()
            && boot_id.len() <= 64
            && boot_id.bytes().all(|b| b.is_ascii_graphic());
        if !plausible {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{BOOT_ID_PATH} holds {boot_id:?}, not a boot id"),
            ));
        }
        Ok(Self {
            boot_id: boot_id.into(),
        })
    }
}

impl StoreClock for MonotonicStoreClock {
    fn now(&self) -> std::io::Result<StoreTime> {
        let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map_err(std::io::Error::from)?;
        let millis = u64::try_from(ts.tv_sec())
            .ok()
            .and_then(|s| s.checked_mul(1000))
            .and_then(|ms| ms.checked_add(u64::try_from(ts.tv_nsec()).ok()? / 1_000_000))
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "CLOCK_MONOTONIC read out of range",
                )
            })?;
        Ok(StoreTime {
            boot_id: self.boot_id.to_string(),
            millis,
        })
    }
}

/// A clock that moves only when told, in a boot that changes only when told; for tests.
#[derive(Debug)]
pub struct ManualStoreClock {
    millis: std::sync::atomic::AtomicU64,
    boot_id: std::sync::Mutex<String>,
}

impl ManualStoreClock {
    /// The boot id of a new manual clock.
    pub const FIRST_BOOT: &'static str = "manual-boot-1";

    pub fn new(start_millis: u64) -> Self {
        Self {
            millis: std::sync::atomic::AtomicU64::new(start_millis),
            boot_id: std::sync::Mutex::new(Self::FIRST_BOOT.to_string()),
        }
    }

    pub fn advance(&self, d: Duration) {
        self.millis
            .fetch_add(d.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }

    /// The current reading, in milliseconds.
    pub fn now_millis(&self) -> u64 {
        self.millis.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A simulated reboot: from now on readings belong to `boot_id` and start at
    /// `start_millis`.
    pub fn reboot(&self, boot_id: &str, start_millis: u64) {
        let mut current = self
            .boot_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = boot_id.to_string();
        self.millis
            .store(start_millis, std::sync::atomic::Ordering::SeqCst);
    }
}

impl StoreClock for ManualStoreClock {
    fn now(&self) -> std::io::Result<StoreTime> {
        let boot_id = self
            .boot_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(StoreTime {
            boot_id: boot_id.clone(),
            millis: self.now_millis(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_is_the_hosts_and_never_goes_back() {
        let clock = MonotonicStoreClock::new().unwrap();
        let a = clock.now().unwrap();
        let b = clock.now().unwrap();
        let boot = std::fs::read_to_string(BOOT_ID_PATH).unwrap();
        assert_eq!(a.boot_id, boot.trim());
        assert_eq!(a.boot_id, b.boot_id);
        assert!(a.millis <= b.millis);
        // The same clock the guard fences on.
        let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
        let mono_ms = ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000;
        assert!(
            b.millis <= mono_ms && mono_ms - b.millis < 1000,
            "{b:?} {mono_ms}"
        );
    }

    #[test]
    fn a_manual_clock_reboots_when_told() {
        let clock = ManualStoreClock::new(5_000);
        clock.advance(Duration::from_millis(250));
        assert_eq!(
            clock.now().unwrap(),
            StoreTime {
                boot_id: ManualStoreClock::FIRST_BOOT.into(),
                millis: 5_250
            }
        );
        clock.reboot("second", 7);
        assert_eq!(
            clock.now().unwrap(),
            StoreTime {
                boot_id: "second".into(),
                millis: 7
            }
        );
    }

    #[test]
    fn standby_entry_names_round_trip_and_stay_flat() {
        for node in ["vm-1", "vm_2", "a/b", "../x", "scale set.7", "é"] {
            let name = standby_entry_name(node);
            assert!(name.starts_with(STANDBY_PREFIX));
            let rest = &name[STANDBY_PREFIX.len()..];
            assert!(!rest.contains(['/', '.', ' ']), "{name}");
            assert_eq!(standby_entry_node(&name).as_deref(), Some(node));
        }
        assert_eq!(standby_entry_name("a/b"), "standby.a~2fb");
        assert_eq!(standby_entry_node("networkinfo.json"), None);
        assert_eq!(standby_entry_node("standby."), None);
        assert_eq!(standby_entry_node("standby.~4"), None);
    }

    #[test]
    fn durations_follow_azure_limits() {
        assert!(LeaseDuration::from_secs(14).is_err());
        assert!(LeaseDuration::from_secs(15).is_ok());
        assert!(LeaseDuration::from_secs(60).is_ok());
        assert!(LeaseDuration::from_secs(61).is_err());
        assert!(LeaseDuration::fixed(Duration::from_millis(15_500)).is_err());
    }

    #[test]
    fn break_periods_are_0_to_60_whole_seconds() {
        assert_eq!(BreakPeriod::from_secs(0).unwrap(), BreakPeriod::ZERO);
        assert_eq!(BreakPeriod::from_secs(60).unwrap(), BreakPeriod::MAX);
        assert_eq!(BreakPeriod::MAX.as_duration(), MAX_BREAK_PERIOD);
        assert_eq!(BreakPeriod::from_secs(17).unwrap().as_secs(), 17);
        assert_eq!(BreakPeriod::from_secs(17).unwrap().to_string(), "17s");
        assert_eq!(
            BreakPeriod::try_from(Duration::from_secs(5)).unwrap(),
            BreakPeriod::from_secs(5).unwrap()
        );
        assert_eq!("60".parse::<BreakPeriod>().unwrap(), BreakPeriod::MAX);
        for bad in [61, 256, u64::MAX] {
            assert!(BreakPeriod::from_secs(bad).is_err(), "{bad}");
        }
        let err = BreakPeriod::new(Duration::from_millis(1500)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid lease request: break period 1.5s is outside 0-60 whole seconds"
        );
        for bad in ["61", "-1", "1.5", "", "x", " 1"] {
            assert!(matches!(
                bad.parse::<BreakPeriod>(),
                Err(LeaseError::Invalid(_))
            ));
        }
    }

    fn md(pairs: &[(&str, &str)]) -> Result<Metadata, LeaseError> {
        Metadata::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn metadata_is_valid_by_construction() {
        let good = md(&[("holder_host", "vm-1"), ("epoch", "7"), ("x9_", "")]).unwrap();
        assert_eq!(good.get("epoch").map(String::as_str), Some("7"));
        assert_eq!(&good["holder_host"], "vm-1");
        assert_eq!(good.len(), 3);
        assert!(Metadata::new().is_empty());
        let names: Vec<&String> = good.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["epoch", "holder_host", "x9_"]);
        let map = good.clone().into_inner();
        assert_eq!(Metadata::try_from(map.clone()).unwrap(), good);
        assert_eq!(good.as_map(), &map);
        for bad in [
            &[("holder-host", "x")][..],
            &[("9lives", "x")],
            &[("", "x")],
            &[("Epoch", "1"), ("epoch", "2")],
            &[("Epoch", "1")],
            &[("_x", "1")],
            &[("epoch", "1"), ("epoch", "1")],
            &[("note", "caf\u{e9}")],
            &[("note", "a\nb")],
            &[("note", " a")],
            &[("note", "a ")],
            &[("big", &"x".repeat(MAX_METADATA_BYTES - 2))],
        ] {
            assert!(matches!(md(bad), Err(LeaseError::Invalid(_))), "{bad:?}");
            let map: BTreeMap<String, String> = bad
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if map.len() == bad.len() {
                assert!(Metadata::try_from(map).is_err(), "{bad:?}");
            }
        }
        assert!(md(&[("big", &"x".repeat(MAX_METADATA_BYTES - 3))]).is_ok());
    }

    #[test]
    fn a_refused_insert_changes_nothing() {
        let mut m = md(&[("epoch", "1")]).unwrap();
        assert_eq!(m.insert("epoch", "2").unwrap().as_deref(), Some("1"));
        assert_eq!(m.insert("holder_pid", "42").unwrap(), None);
        let before = m.clone();
        for (name, value) in [("EPOCH", "3"), ("a-b", "x"), ("note", " x"), ("note", "\t")] {
            assert!(m.insert(name, value).is_err(), "{name:?} {value:?}");
            assert_eq!(m, before);
        }
        assert_eq!(m.remove("epoch").as_deref(), Some("2"));
        assert!(!m.contains_key("epoch"));
    }

    #[test]
    fn metadata_serializes_as_a_json_object_and_deserializing_checks_it() {
        let m = md(&[("epoch", "7"), ("holder_node", "vm-1")]).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"epoch":"7","holder_node":"vm-1"}"#);
        assert_eq!(serde_json::from_str::<Metadata>(&json).unwrap(), m);
        for bad in [
            r#"{"a-b":"x"}"#,
            r#"{"a":" x"}"#,
            r#"{"a":"1","A":"2"}"#,
            "[1]",
        ] {
            assert!(serde_json::from_str::<Metadata>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_from_a_store_is_taken_as_it_is() {
        let foreign: BTreeMap<String, String> =
            [("note".to_string(), " spaced ".to_string())].into();
        let m = Metadata::from_store(foreign);
        assert_eq!(m.get("note").map(String::as_str), Some(" spaced "));
        // Building on it applies the rule to the whole.
        let mut m2 = m.clone();
        assert!(m2.insert("epoch", "1").is_err());
        assert_eq!(m2, m);
    }

    #[test]
    fn lease_ids_are_v4_guids() {
        let a = LeaseId::random();
        let b = LeaseId::random();
        assert_ne!(a, b);
        assert_eq!(LeaseId::parse(a.as_str()).unwrap(), a);
        assert_eq!(&a.as_str()[14..15], "4");
        let upper = LeaseId::parse("0F8FAD5B-D9CB-469F-A165-70867728950E").unwrap();
        assert_eq!(upper.as_str(), "0f8fad5b-d9cb-469f-a165-70867728950e");
        for bad in [
            "",
            "x",
            "0f8fad5b-d9cb-469f-a165-70867728950",
            "0f8fad5bd9cb469fa16570867728950e0000",
        ] {
            assert!(LeaseId::parse(bad).is_err(), "{bad}");
        }
    }
}
