//! An in-memory lease store with the blob-lease semantics of [`shared::lease`], for the
//! deterministic simulation (`crate::sim`).
//!
//! It is a faithful model rather than a mock because it passes the same conformance suite
//! as `sqlite:` and `blob:` (`tests/tests/simulation.rs` instantiates it). Two things set it
//! apart from those backends:
//!
//! - Every operation also exists as a plain synchronous method (`acquire_now`, …), so a
//!   single-threaded simulator calls it without a runtime; the [`LeaseStore`] impl is a thin
//!   async wrapper over them. Each call is atomic (one mutex), so independent handles race
//!   exactly as processes on one SQLite file do.
//! - Nothing in it is random or reads a real clock: time comes from the injected
//!   [`StoreClock`], and the lease ids it chooses itself (an acquire without a proposed id)
//!   are a counter in GUID form. One seed therefore replays one run exactly.
//!
//! Instants are milliseconds of the store clock within one boot, as in `sqlite:`: when the
//! clock reports another boot id, every fixed lease of the earlier boot has expired and
//! every break has ended.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use shared::lease::{
    BreakPeriod, LeaseDuration, LeaseError, LeaseId, LeaseRecord, LeaseState, LeaseStore,
    LostReason, Metadata, RecordCreated, StoreClock,
};
use shared::Name;

/// Where a record's lease is. `Expired` and the end of a break are not stored: they follow
/// from the instants and the clock (see [`Phase::effective`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Available,
    /// Leased until `until` (store milliseconds), or with no end when `None` (infinite).
    Leased {
        id: LeaseId,
        until: Option<u64>,
    },
    /// Locked until `until`, broken from then on.
    Breaking {
        id: LeaseId,
        until: u64,
    },
    Broken {
        id: LeaseId,
    },
}

/// A [`Phase`] seen at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen<'a> {
    Available,
    Leased { id: &'a LeaseId, left: Option<u64> },
    Expired { id: &'a LeaseId },
    Breaking { id: &'a LeaseId, left: u64 },
    Broken { id: &'a LeaseId },
}

impl Phase {
    fn effective(&self, now: u64) -> Seen<'_> {
        match self {
            Self::Available => Seen::Available,
            Self::Leased { id, until: None } => Seen::Leased { id, left: None },
            Self::Leased {
                id,
                until: Some(end),
            } if now < *end => Seen::Leased {
                id,
                left: Some(end - now),
            },
            Self::Leased { id, .. } => Seen::Expired { id },
            Self::Breaking { id, until } if now < *until => Seen::Breaking {
                id,
                left: until - now,
            },
            Self::Breaking { id, .. } | Self::Broken { id } => Seen::Broken { id },
        }
    }

    /// The same lease once the boot its instants belong to is over.
    fn after_reboot(&self) -> Self {
        match self {
            Self::Leased { id, until: Some(_) } => Self::Leased {
                id: id.clone(),
                until: Some(0),
            },
            Self::Breaking { id, .. } => Self::Broken { id: id.clone() },
            other => other.clone(),
        }
    }
}

impl Seen<'_> {
    fn state(&self) -> LeaseState {
        match self {
            Self::Available => LeaseState::Available,
            Self::Leased { .. } => LeaseState::Leased,
            Self::Expired { .. } => LeaseState::Expired,
            Self::Breaking { .. } => LeaseState::Breaking,
            Self::Broken { .. } => LeaseState::Broken,
        }
    }

    fn remaining(&self) -> Option<Duration> {
        match self {
            Self::Leased { left, .. } => left.map(Duration::from_millis),
            Self::Breaking { left, .. } => Some(Duration::from_millis(*left)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Record {
    phase: Phase,
    /// The current or last lease's duration; `None` until first acquired.
    duration: Option<LeaseDuration>,
    metadata: Metadata,
}

#[derive(Debug, Default)]
struct Records {
    /// The boot of the store clock the stored instants were measured in.
    boot: Option<String>,
    by_name: BTreeMap<Name, Record>,
}

/// The in-memory store. [`MemoryLeaseStore::handle`] gives another handle on the same
/// records (the conformance suite's "another process").
#[derive(Debug, Clone)]
pub struct MemoryLeaseStore {
    records: Arc<Mutex<Records>>,
    clock: Arc<dyn StoreClock>,
    ids: Arc<AtomicU64>,
}

impl MemoryLeaseStore {
    /// An empty store whose leases run on `clock`.
    pub fn new(clock: Arc<dyn StoreClock>) -> Self {
        Self {
            records: Arc::new(Mutex::new(Records::default())),
            clock,
            ids: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Another handle on the same records and clock.
    pub fn handle(&self) -> Self {
        self.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Records> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The records, with the clock read: instants of an earlier boot are all past.
    fn at_now(&self) -> Result<(MutexGuard<'_, Records>, u64), LeaseError> {
        let now = self.clock.now().map_err(|e| LeaseError::Backend {
            message: format!("the store clock cannot be read: {e}"),
            source: None,
        })?;
        let mut records = self.lock();
        if records.boot.as_deref() != Some(now.boot_id.as_str()) {
            if records.boot.is_some() {
                for record in records.by_name.values_mut() {
                    record.phase = record.phase.after_reboot();
                }
            }
            records.boot = Some(now.boot_id);
        }
        Ok((records, now.millis))
    }

    /// A lease id the store chose itself: a counter, in GUID form.
    fn fresh_id(&self) -> LeaseId {
        let n = self.ids.fetch_add(1, Ordering::Relaxed) + 1;
        LeaseId::parse(&format!(
            "00000000-0000-4000-8000-{:012x}",
            n & 0xffff_ffff_ffff
        ))
        .expect("a GUID")
    }

    pub fn create_record_now(&self, identity: &Name) -> Result<RecordCreated, LeaseError> {
        let (mut records, _) = self.at_now()?;
        if records.by_name.contains_key(identity) {
            return Ok(RecordCreated::AlreadyExisted);
        }
        records.by_name.insert(
            identity.clone(),
            Record {
                phase: Phase::Available,
                duration: None,
                metadata: Metadata::new(),
            },
        );
        Ok(RecordCreated::Created)
    }

    pub fn acquire_now(
        &self,
        identity: &Name,
        duration: LeaseDuration,
        proposed: Option<&LeaseId>,
    ) -> Result<LeaseId, LeaseError> {
        if let LeaseDuration::Fixed(d) = duration {
            LeaseDuration::fixed(d)?;
        }
        let (mut records, now) = self.at_now()?;
        let record = found(&mut records, identity)?;
        let id = match record.phase.effective(now) {
            Seen::Available | Seen::Expired { .. } | Seen::Broken { .. } => match proposed {
                Some(p) => p.clone(),
                None => self.fresh_id(),
            },
            Seen::Leased { id, .. } if proposed == Some(id) => id.clone(),
            seen @ (Seen::Leased { .. } | Seen::Breaking { .. }) => {
                return Err(LeaseError::HeldByOther {
                    identity: identity.clone(),
                    state: seen.state(),
                })
            }
        };
        record.phase = Phase::Leased {
            id: id.clone(),
            until: end_of(now, duration),
        };
        record.duration = Some(duration);
        Ok(id)
    }

    pub fn renew_now(&self, identity: &Name, lease: &LeaseId) -> Result<(), LeaseError> {
        let (mut records, now) = self.at_now()?;
        let record = found(&mut records, identity)?;
        let refusal = match record.phase.effective(now) {
            Seen::Leased { id, .. } | Seen::Expired { id } if id == lease => {
                // A leased record always has a duration; without one, refusing (the holder
                // fences) is the safe answer where guessing could stretch a lease.
                let Some(duration) = record.duration else {
                    return Err(lost(identity, LostReason::NotPresent));
                };
                record.phase = Phase::Leased {
                    id: lease.clone(),
                    until: end_of(now, duration),
                };
                return Ok(());
            }
            Seen::Breaking { id, .. } | Seen::Broken { id } if id == lease => LostReason::Broken,
            Seen::Available => LostReason::NotPresent,
            _ => LostReason::IdMismatch,
        };
        Err(lost(identity, refusal))
    }

    pub fn release_now(&self, identity: &Name, lease: &LeaseId) -> Result<(), LeaseError> {
        let (mut records, now) = self.at_now()?;
        let record = found(&mut records, identity)?;
        let held = match record.phase.effective(now) {
            Seen::Available => return Err(lost(identity, LostReason::NotPresent)),
            Seen::Leased { id, .. }
            | Seen::Expired { id }
            | Seen::Breaking { id, .. }
            | Seen::Broken { id } => id,
        };
        if held != lease {
            return Err(lost(identity, LostReason::IdMismatch));
        }
        record.phase = Phase::Available;
        Ok(())
    }

    pub fn change_now(
        &self,
        identity: &Name,
        lease: &LeaseId,
        proposed: &LeaseId,
    ) -> Result<LeaseId, LeaseError> {
        let (mut records, now) = self.at_now()?;
        let record = found(&mut records, identity)?;
        let reason = match record.phase.effective(now) {
            Seen::Leased { id, .. } if id == lease || id == proposed => {
                if let Phase::Leased { id, .. } = &mut record.phase {
                    *id = proposed.clone();
                }
                return Ok(proposed.clone());
            }
            Seen::Leased { .. } => LostReason::IdMismatch,
            Seen::Breaking { .. } => LostReason::Breaking,
            Seen::Available | Seen::Expired { .. } | Seen::Broken { .. } => LostReason::NotPresent,
        };
        Err(lost(identity, reason))
    }

    pub fn break_now(
        &self,
        identity: &Name,
        period: Option<BreakPeriod>,
    ) -> Result<Duration, LeaseError> {
        let period = period.map(|p| p.as_duration().as_millis() as u64);
        let (mut records, now) = self.at_now()?;
        let record = found(&mut records, identity)?;
        let (id, until) = match record.phase.effective(now) {
            Seen::Available => return Err(lost(identity, LostReason::NotPresent)),
            Seen::Expired { id } | Seen::Broken { id } => (id.clone(), now),
            Seen::Leased { id, left } => {
                let lock = match (period, left) {
                    (None, left) => left.unwrap_or(0),
                    (Some(p), None) => p,
                    (Some(p), Some(left)) => p.min(left),
                };
                (id.clone(), now + lock)
            }
            Seen::Breaking { id, left } => {
                let lock = period.map_or(left, |p| p.min(left));
                (id.clone(), now + lock)
            }
        };
        record.phase = if until > now {
            Phase::Breaking { id, until }
        } else {
            Phase::Broken { id }
        };
        Ok(Duration::from_millis(until - now))
    }

    pub fn write_metadata_now(
        &self,
        identity: &Name,
        lease: &LeaseId,
        metadata: &Metadata,
    ) -> Result<(), LeaseError> {
        let (mut records, now) = self.at_now()?;
        let record = found(&mut records, identity)?;
        match record.phase.effective(now) {
            Seen::Leased { id, .. } | Seen::Breaking { id, .. } if id == lease => {
                record.metadata = metadata.clone();
                Ok(())
            }
            Seen::Leased { .. } | Seen::Breaking { .. } => {
                Err(lost(identity, LostReason::IdMismatch))
            }
            Seen::Available | Seen::Expired { .. } | Seen::Broken { .. } => {
                Err(lost(identity, LostReason::NotPresent))
            }
        }
    }

    pub fn read_now(&self, identity: &Name) -> Result<LeaseRecord, LeaseError> {
        let (mut records, now) = self.at_now()?;
        let record = found(&mut records, identity)?;
        Ok(to_record(identity, record, now))
    }

    pub fn list_now(&self) -> Result<Vec<LeaseRecord>, LeaseError> {
        let (records, now) = self.at_now()?;
        Ok(records
            .by_name
            .iter()
            .map(|(name, record)| to_record(name, record, now))
            .collect())
    }

    /// One record's state and lease id (the current or last one), without copying its
    /// metadata; `None` when there is no such record.
    pub fn lease_now(
        &self,
        identity: &Name,
    ) -> Result<Option<(LeaseState, Option<LeaseId>)>, LeaseError> {
        let (records, now) = self.at_now()?;
        Ok(records.by_name.get(identity).map(|record| {
            let seen = record.phase.effective(now);
            let id = match seen {
                Seen::Available => None,
                Seen::Leased { id, .. }
                | Seen::Expired { id }
                | Seen::Breaking { id, .. }
                | Seen::Broken { id } => Some(id.clone()),
            };
            (seen.state(), id)
        }))
    }

    /// Until when (store milliseconds) `identity` stays leased, or breaking, under `lease`
    /// unless someone acts on it; `None` if it is not so now. `u64::MAX` for an infinite
    /// lease. The simulation asks this to know how long a signer is covered.
    pub fn covered_until_now(
        &self,
        identity: &Name,
        lease: &LeaseId,
    ) -> Result<Option<u64>, LeaseError> {
        let (records, now) = self.at_now()?;
        Ok(records.by_name.get(identity).and_then(|record| {
            match (record.phase.effective(now), &record.phase) {
                (Seen::Leased { id, left }, _) if id == lease => {
                    Some(left.map_or(u64::MAX, |left| now + left))
                }
                (Seen::Breaking { id, left }, _) if id == lease => Some(now + left),
                _ => None,
            }
        }))
    }

    /// Calls `f` with each record's name and state, in name order: what
    /// [`MemoryLeaseStore::list_now`] says, without copying names or metadata.
    pub fn each_state_now(&self, mut f: impl FnMut(&Name, LeaseState)) -> Result<(), LeaseError> {
        let (records, now) = self.at_now()?;
        for (name, record) in &records.by_name {
            f(name, record.phase.effective(now).state());
        }
        Ok(())
    }

    /// What [`MemoryLeaseStore::list_now`] says of each record's state, without copying
    /// the metadata: the simulated standbys list every poll.
    pub fn states_now(&self) -> Result<Vec<(Name, LeaseState)>, LeaseError> {
        let (records, now) = self.at_now()?;
        Ok(records
            .by_name
            .iter()
            .map(|(name, record)| (name.clone(), record.phase.effective(now).state()))
            .collect())
    }
}

fn found<'a>(records: &'a mut Records, identity: &Name) -> Result<&'a mut Record, LeaseError> {
    records
        .by_name
        .get_mut(identity)
        .ok_or_else(|| LeaseError::NotFound {
            identity: identity.clone(),
        })
}

fn lost(identity: &Name, reason: LostReason) -> LeaseError {
    LeaseError::Lost {
        identity: identity.clone(),
        reason,
    }
}

fn end_of(now: u64, duration: LeaseDuration) -> Option<u64> {
    match duration {
        LeaseDuration::Fixed(d) => Some(now + d.as_millis() as u64),
        LeaseDuration::Infinite => None,
    }
}

fn to_record(identity: &Name, record: &Record, now: u64) -> LeaseRecord {
    let seen = record.phase.effective(now);
    LeaseRecord {
        identity: identity.clone(),
        state: seen.state(),
        duration: record.duration,
        remaining: seen.remaining(),
        metadata: record.metadata.clone(),
    }
}

#[async_trait]
impl LeaseStore for MemoryLeaseStore {
    async fn create_record(&self, identity: &Name) -> Result<RecordCreated, LeaseError> {
        self.create_record_now(identity)
    }

    async fn acquire(
        &self,
        identity: &Name,
        duration: LeaseDuration,
        proposed: Option<&LeaseId>,
    ) -> Result<LeaseId, LeaseError> {
        self.acquire_now(identity, duration, proposed)
    }

    async fn renew(&self, identity: &Name, lease: &LeaseId) -> Result<(), LeaseError> {
        self.renew_now(identity, lease)
    }

    async fn release(&self, identity: &Name, lease: &LeaseId) -> Result<(), LeaseError> {
        self.release_now(identity, lease)
    }

    async fn change(
        &self,
        identity: &Name,
        lease: &LeaseId,
        proposed: &LeaseId,
    ) -> Result<LeaseId, LeaseError> {
        self.change_now(identity, lease, proposed)
    }

    async fn break_lease(
        &self,
        identity: &Name,
        period: Option<BreakPeriod>,
    ) -> Result<Duration, LeaseError> {
        self.break_now(identity, period)
    }

    async fn write_metadata(
        &self,
        identity: &Name,
        lease: &LeaseId,
        metadata: &Metadata,
    ) -> Result<(), LeaseError> {
        self.write_metadata_now(identity, lease, metadata)
    }

    async fn read(&self, identity: &Name) -> Result<LeaseRecord, LeaseError> {
        self.read_now(identity)
    }

    async fn list(&self) -> Result<Vec<LeaseRecord>, LeaseError> {
        self.list_now()
    }
}
