//! The in-memory lease store of the deterministic simulation passes the same conformance
//! suite as `sqlite:` and `blob:`: that is what makes it a model of blob leases, not a mock.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration_tests::lease_conformance::{BoxFuture, LeaseHarness};
use integration_tests::lease_conformance_suite;
use integration_tests::memory_store::MemoryLeaseStore;
use shared::lease::{LeaseStore, ManualStoreClock};
use shared::Name;

/// The in-memory store on a manual clock, for the conformance suite.
struct MemoryHarness {
    clock: Arc<ManualStoreClock>,
    store: MemoryLeaseStore,
    next: AtomicU32,
}

impl MemoryHarness {
    fn new() -> Self {
        let clock = Arc::new(ManualStoreClock::new(1_700_000_000_000));
        Self {
            store: MemoryLeaseStore::new(clock.clone()),
            clock,
            next: AtomicU32::new(0),
        }
    }
}

impl LeaseHarness for MemoryHarness {
    fn store(&self) -> Arc<dyn LeaseStore> {
        Arc::new(self.store.handle())
    }

    fn open_another(&self) -> Arc<dyn LeaseStore> {
        Arc::new(self.store.handle())
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

lease_conformance_suite!(MemoryHarness::new());
