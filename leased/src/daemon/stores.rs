//! The daemon's store calls. Each is a future that the loop spawns and whose answer it
//! feeds to the machine: bounded by a timeout (at most R/2, so the loop is never kept
//! from the fence deadline), logged where an on-call engineer needs the reason, and
//! counted in the metrics. None of them decides anything.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shared::lease::{meta, LeaseError, LeaseId, LeaseRecord, LeaseState, LeaseStore, Metadata};
use shared::secret::{Secret, SecretStore};
use shared::Name;

use super::nudge::Nudger;
use super::Clock;
use crate::machine::{AcquireOutcome, Event, FenceReason, Lease, RenewOutcome, Ticket};
use crate::telemetry::{RenewFailure, Telemetry};

/// The stores and what every call needs.
#[derive(Clone)]
pub(super) struct Stores {
    pub(super) leases: Arc<dyn LeaseStore>,
    pub(super) secrets: Arc<dyn SecretStore>,
    /// Every store call's bound.
    pub(super) timeout: Duration,
    pub(super) telemetry: Arc<Telemetry>,
    pub(super) clock: Clock,
    /// The last list failure logged (`None`: listing works), so that a standby polling a
    /// broken store logs the failure once, not every poll.
    last_list_error: Arc<Mutex<Option<String>>>,
    /// The release nudge's socket, when the daemon has one.
    nudger: Option<Arc<Nudger>>,
}

/// Waits for `work` (a store call) at most `timeout`; `None` when it did not finish in
/// time, and the call is dropped. No extra thread is needed for the timer to cut a call
/// short: the stores that block (SQLite waiting out its busy timeout, the `dir:` store's
/// files) do that work on the blocking pool themselves, and the Azure stores' calls are
/// asynchronous, so the loop's thread never waits inside one.
pub(super) async fn within<T>(timeout: Duration, work: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(timeout, work).await.ok()
}

/// When a record that is not acquirable may become so, if the store says: the lease or
/// break time it reports left (`sqlite:`); zero for a break of unknown length (Azure
/// reports neither), which may end at any moment. For an Azure lease, the end of its first
/// term, from the holder's `acquired_at_ms` and `lease_secs`, while that is ahead: until
/// its first renew (at the next instant of the renew grid) it ends off the grid. Another
/// VM's clock wrote it, so the look comes 100 ms later for skew.
fn free_in(r: LeaseRecord, now_ms: u64) -> Option<(Name, Duration)> {
    match (r.state, r.remaining) {
        (_, Some(left)) => Some((r.identity, left)),
        (LeaseState::Breaking, None) => Some((r.identity, Duration::ZERO)),
        (LeaseState::Leased, None) => {
            let number = |k: &str| r.metadata.get(k).and_then(|v| v.parse::<u64>().ok());
            let ends = number(meta::ACQUIRED_AT_MS)?
                .checked_add(number(meta::LEASE_SECS)?.checked_mul(1000)?)?;
            let left = ends.checked_sub(now_ms).filter(|l| *l > 0)?;
            (left <= shared::lease::MAX_LEASE.as_millis() as u64)
                .then(|| (r.identity, Duration::from_millis(left + 100)))
        }
        _ => None,
    }
}

impl Stores {
    pub(super) fn new(
        leases: Arc<dyn LeaseStore>,
        secrets: Arc<dyn SecretStore>,
        timeout: Duration,
        telemetry: Arc<Telemetry>,
        clock: Clock,
    ) -> Self {
        Self {
            leases,
            secrets,
            timeout,
            telemetry,
            clock,
            last_list_error: Arc::default(),
            nudger: None,
        }
    }

    /// Releases nudge the standbys through `nudger`.
    pub(super) fn with_nudger(mut self, nudger: Option<Arc<Nudger>>) -> Self {
        self.nudger = nudger;
        self
    }

    /// Removes this node's standby entry, best-effort: it is stopping.
    pub(super) async fn withdraw_standby(&self, node: &str) {
        if self.nudger.is_none() {
            return;
        }
        self.telemetry
            .metrics(|m| m.store_request("withdraw_standby"));
        match within(self.timeout, self.leases.withdraw_standby(node)).await {
            Some(Ok(())) => {}
            Some(Err(e)) => tracing::info!("removing this standby's nudge entry: {e}"),
            None => tracing::info!("removing this standby's nudge entry: timed out"),
        }
    }

    pub(super) fn list(&self, ticket: Ticket) -> impl Future<Output = Event> + Send + 'static {
        let s = self.clone();
        s.telemetry.metrics(|m| m.store_request("list"));
        async move {
            let store = s.leases.clone();
            let result = within(s.timeout, async move { store.list().await }).await;
            // A standby lists every poll: log a failure when it changes, and the recovery.
            let error = match &result {
                Some(Ok(_)) => None,
                Some(Err(e)) => Some(e.to_string()),
                None => Some(format!(
                    "the lease store did not answer within {:.1} s",
                    s.timeout.as_secs_f64()
                )),
            };
            {
                let mut last = s.last_list_error.lock().unwrap_or_else(|e| e.into_inner());
                if *last != error {
                    match &error {
                        Some(e) => tracing::info!("cannot list the lease records: {e}"),
                        None => tracing::info!("listing the lease records works again"),
                    }
                    *last = error;
                }
            }
            match result {
                Some(Ok(records)) => {
                    let (free, taken): (Vec<_>, Vec<_>) =
                        records.into_iter().partition(|r| r.state.is_acquirable());
                    Event::Listed {
                        ticket,
                        available: free.into_iter().map(|r| r.identity).collect(),
                        free_in: taken
                            .into_iter()
                            .filter_map(|r| free_in(r, unix_now_ms()))
                            .collect(),
                    }
                }
                _ => Event::ListFailed { ticket },
            }
        }
    }

    pub(super) fn acquire(
        &self,
        ticket: Ticket,
        identity: Name,
        duration: shared::lease::LeaseDuration,
    ) -> impl Future<Output = Event> + Send + 'static {
        let s = self.clone();
        s.telemetry.metrics(|m| m.store_request("acquire"));
        async move {
            let (store, id) = (s.leases.clone(), identity.clone());
            let sent_at = (s.clock)();
            let call = async move { store.acquire(&id, duration, Some(&LeaseId::random())).await };
            let outcome = match within(s.timeout, call).await {
                Some(result) => AcquireOutcome::from_result(result.as_ref().cloned(), sent_at),
                None => AcquireOutcome::Transient,
            };
            match outcome {
                AcquireOutcome::Acquired { .. } => {
                    s.telemetry.metrics(|m| m.acquisitions.inc());
                }
                AcquireOutcome::HeldByOther => {
                    s.telemetry.metrics(|m| m.acquire_conflicts.inc());
                }
                _ => {}
            }
            Event::AcquireResult {
                ticket,
                identity,
                outcome,
            }
        }
    }

    pub(super) fn renew(&self, lease: Lease) -> impl Future<Output = Event> + Send + 'static {
        let s = self.clone();
        s.telemetry.metrics(|m| m.store_request("renew"));
        async move {
            let (ticket, identity) = (lease.ticket, lease.identity.clone());
            let sent_at = (s.clock)();
            let store = s.leases.clone();
            let call = async move { store.renew(&lease.identity, &lease.id).await };
            let outcome = match within(s.timeout, call).await {
                Some(result) => {
                    let outcome = RenewOutcome::from_result(result.as_ref().map(|_| ()), sent_at);
                    // Say why, so that the fence or the retries that follow are explained.
                    if let Err(e) = &result {
                        match outcome {
                            RenewOutcome::Lost => tracing::info!("renew of {identity} failed: {e}"),
                            _ => tracing::info!(
                                "renew of {identity} failed, retrying until the fence deadline: {e}"
                            ),
                        }
                    }
                    outcome
                }
                None => {
                    tracing::info!(
                        "renew of {identity}: no answer within {:.1} s, retrying until the fence deadline",
                        s.timeout.as_secs_f64()
                    );
                    RenewOutcome::Transient
                }
            };
            let took = (s.clock)().saturating_duration_since(sent_at);
            if let RenewOutcome::Renewed { .. } = outcome {
                tracing::debug!(took_ms = took.as_millis(), "renewed {identity}");
            }
            s.telemetry.metrics(|m| {
                m.observe_renew(took);
                match outcome {
                    RenewOutcome::Renewed { .. } => {
                        m.renewals.inc();
                    }
                    RenewOutcome::Lost => m.renew_failure(RenewFailure::Lost),
                    RenewOutcome::Transient => m.renew_failure(RenewFailure::Transient),
                }
            });
            Event::RenewResult { ticket, outcome }
        }
    }

    /// Reads the record's epoch for the machine, which numbers the lease.
    pub(super) fn read_epoch(&self, lease: Lease) -> impl Future<Output = Event> + Send + 'static {
        let s = self.clone();
        s.telemetry.metrics(|m| m.store_request("read"));
        async move {
            let store = s.leases.clone();
            let identity = lease.identity.clone();
            let record_epoch =
                match within(s.timeout, async move { store.read(&identity).await }).await {
                    Some(Ok(record)) => Some(record.epoch()),
                    Some(Err(e)) => {
                        tracing::info!("reading the record of {}: {e}", lease.identity);
                        None
                    }
                    None => {
                        tracing::info!("reading the record of {}: timed out", lease.identity);
                        None
                    }
                };
            Event::EpochRead {
                ticket: lease.ticket,
                record_epoch,
            }
        }
    }

    /// Writes `meta`'s latest content under `lease` (see [`LeaseMeta`]); logs a failure.
    pub(super) fn write_metadata(
        &self,
        lease: Lease,
        meta: Arc<LeaseMeta>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let s = self.clone();
        async move {
            let identity = lease.identity.clone();
            let store = s.leases.clone();
            let count = || s.telemetry.metrics(|m| m.store_request("write_metadata"));
            match within(s.timeout, meta.write_latest(store.as_ref(), &lease, count)).await {
                Some(Ok(())) => {}
                Some(Err(e)) => tracing::info!("metadata for {identity}: {e}"),
                None => tracing::info!("metadata for {identity}: timed out"),
            }
        }
    }

    /// Releases `lease`, best-effort; first records why it is given up, when `note` says.
    pub(super) fn release(
        &self,
        lease: Lease,
        note: Option<(Arc<LeaseMeta>, FenceReason, String)>,
    ) -> impl Future<Output = Event> + Send + 'static {
        let s = self.clone();
        s.telemetry.metrics(|m| m.store_request("release"));
        let note = note.filter(|(meta, _, _)| meta.epoch().is_some());
        async move {
            let (ticket, identity) = (lease.ticket, lease.identity.clone());
            if let Some((meta, reason, detail)) = note {
                meta.set(meta::LAST_FENCE, reason.as_str());
                meta.set(meta::LAST_FENCE_DETAIL, &metadata_text(&detail));
                // Its client no longer runs: out of the live bootnode list.
                meta.remove(meta::ENODE);
                let store = s.leases.clone();
                let count = || s.telemetry.metrics(|m| m.store_request("write_metadata"));
                if let Some(Err(e)) =
                    within(s.timeout, meta.write_latest(store.as_ref(), &lease, count)).await
                {
                    tracing::info!("recording why {identity} is given up: {e}");
                }
            }
            let store = s.leases.clone();
            let call = async move { store.release(&lease.identity, &lease.id).await };
            // The standbys are read while the release is on its way: the nudges then go
            // out the moment it is done.
            let standbys = async {
                let nudger = s.nudger.as_ref()?;
                s.telemetry.metrics(|m| m.store_request("standbys"));
                match within(s.timeout, s.leases.standbys()).await {
                    Some(Ok(list)) => Some((nudger, list)),
                    _ => None,
                }
            };
            let (released, standbys) = tokio::join!(within(s.timeout, call), standbys);
            match released {
                Some(Ok(())) => {
                    tracing::info!("released {identity}");
                    if let Some((nudger, list)) = standbys {
                        let sent = nudger.nudge(&list, &identity).await;
                        tracing::debug!("nudged {sent} standbys");
                    }
                }
                Some(Err(e)) => tracing::info!("release of {identity}: {e}"),
                None => tracing::info!("release of {identity}: timed out"),
            }
            Event::ReleaseDone { ticket }
        }
    }

    /// Fetches `identity`'s secret; never puts key material in the error.
    pub(super) fn fetch_secret(
        &self,
        identity: Name,
    ) -> impl Future<Output = Result<Secret, String>> + Send + 'static {
        let s = self.clone();
        s.telemetry.metrics(|m| m.store_request("get_secret"));
        async move {
            let store = s.secrets.clone();
            match within(s.timeout, async move { store.get(&identity).await }).await {
                Some(Ok(secret)) => Ok(secret),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("the secret store did not answer in time".into()),
            }
        }
    }
}

/// The metadata of one lease: its content, and the epoch the machine decided for it. Writes
/// under the lease (holder, address, why it was given up) are serialised, and each writes
/// the content as it is when its turn comes, so the last write carries everything known;
/// a write whose turn finds nothing changed since the last one sent nothing. Nothing is
/// written before the epoch is decided: a write without one would set the record's epoch
/// back to 0.
#[derive(Default)]
pub(super) struct LeaseMeta {
    /// The fields, the epoch, and a count of changes to either.
    content: Mutex<(BTreeMap<String, String>, Option<u64>, u64)>,
    /// The turn to write, and the count of changes the last write carried.
    written: tokio::sync::Mutex<Option<u64>>,
}

impl LeaseMeta {
    /// The holder's fields, for a lease acquired now by `node`, of `lease_secs`.
    pub(super) fn holder(node: &str, lease_secs: u64) -> Self {
        let mut fields = BTreeMap::new();
        fields.insert(meta::HOLDER_NODE.into(), node.to_string());
        fields.insert(meta::HOLDER_HOST.into(), hostname());
        fields.insert(meta::HOLDER_BOOT_ID.into(), boot_id());
        fields.insert(meta::HOLDER_PID.into(), std::process::id().to_string());
        fields.insert(meta::ACQUIRED_AT.into(), unix_now().to_string());
        fields.insert(meta::ACQUIRED_AT_MS.into(), unix_now_ms().to_string());
        fields.insert(meta::LEASE_SECS.into(), lease_secs.to_string());
        Self {
            content: Mutex::new((fields, None, 0)),
            written: tokio::sync::Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (BTreeMap<String, String>, Option<u64>, u64)> {
        self.content.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set(&self, key: &str, value: &str) {
        let mut c = self.lock();
        if c.0.get(key).map(String::as_str) != Some(value) {
            c.0.insert(key.to_string(), value.to_string());
            c.2 += 1;
        }
    }

    pub(super) fn remove(&self, key: &str) {
        let mut c = self.lock();
        if c.0.remove(key).is_some() {
            c.2 += 1;
        }
    }

    /// Sets the epoch; true the first time.
    pub(super) fn set_epoch(&self, epoch: u64) -> bool {
        let mut c = self.lock();
        c.2 += 1;
        c.1.replace(epoch).is_none()
    }

    pub(super) fn epoch(&self) -> Option<u64> {
        self.lock().1
    }

    /// Writes the content if it changed since the last write, calling `sending` just
    /// before the request goes out.
    async fn write_latest(
        &self,
        store: &dyn LeaseStore,
        lease: &Lease,
        sending: impl FnOnce(),
    ) -> Result<(), LeaseError> {
        let mut written = self.written.lock().await;
        let (mut fields, epoch, version) = self.lock().clone();
        let Some(epoch) = epoch else {
            return Ok(());
        };
        if *written == Some(version) {
            return Ok(());
        }
        fields.insert(meta::EPOCH.into(), epoch.to_string());
        let fields = Metadata::try_from(fields)?;
        sending();
        store
            .write_metadata(&lease.identity, &lease.id, &fields)
            .await?;
        *written = Some(version);
        Ok(())
    }
}

/// `text` as a metadata value (`shared::lease::Metadata`): printable ASCII without
/// leading or trailing spaces (what an HTTP header, and so Azure blob metadata, can carry),
/// at most 200 characters.
fn metadata_text(text: &str) -> String {
    let printable: String = text
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .take(200)
        .collect();
    printable.trim().to_string()
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Now, in whole seconds since the epoch (also block timestamps' clock).
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        state: LeaseState,
        remaining: Option<Duration>,
        pairs: &[(&str, &str)],
    ) -> LeaseRecord {
        LeaseRecord {
            identity: Name::new("m0-v1").unwrap(),
            state,
            duration: None,
            remaining,
            metadata: Metadata::from_pairs(pairs.iter().copied()).unwrap(),
        }
    }

    #[test]
    fn a_standby_learns_when_a_lease_can_end_from_the_store_or_the_holders_first_term() {
        let ms = Duration::from_millis;
        let now = 1_800_000_000_000;
        // sqlite: the store states it.
        let r = record(LeaseState::Leased, Some(ms(4_200)), &[]);
        assert_eq!(free_in(r, now).map(|f| f.1), Some(ms(4_200)));
        // Azure, a break of unknown length: any moment.
        let r = record(LeaseState::Breaking, None, &[]);
        assert_eq!(free_in(r, now).map(|f| f.1), Some(Duration::ZERO));
        // Azure, a lease acquired 2 s ago for 15 s, not renewed yet: 13 s, and 100 ms for
        // the clocks of two VMs.
        let at = (now - 2_000).to_string();
        let r = record(
            LeaseState::Leased,
            None,
            &[(meta::ACQUIRED_AT_MS, &at), (meta::LEASE_SECS, "15")],
        );
        assert_eq!(free_in(r, now).map(|f| f.1), Some(ms(13_100)));
        // Past its first term (renewed on the grid since), or written by an older leased,
        // or nonsense: nothing stated.
        let at = (now - 20_000).to_string();
        for pairs in [
            vec![
                (meta::ACQUIRED_AT_MS, at.as_str()),
                (meta::LEASE_SECS, "15"),
            ],
            vec![(meta::ACQUIRED_AT, "1800000000"), (meta::LEASE_SECS, "15")],
            vec![(meta::ACQUIRED_AT_MS, "soon"), (meta::LEASE_SECS, "15")],
            vec![
                (meta::ACQUIRED_AT_MS, "99999999999999999999"),
                (meta::LEASE_SECS, "15"),
            ],
        ] {
            let r = record(LeaseState::Leased, None, &pairs);
            assert_eq!(free_in(r, now), None, "{pairs:?}");
        }
    }
}
