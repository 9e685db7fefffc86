//! The `blob:` lease store against Azurite (the Azure Storage emulator, from npm), through
//! the official SDK: the whole shared conformance suite, every case at once on one
//! emulator, each case in a container of its own. Then what only this backend has: the
//! emulator's connection-string forms and a container that vanishes under a holder.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration_tests::azurite::Azurite;
use integration_tests::lease_conformance::{BoxFuture, LeaseHarness};
use integration_tests::lease_conformance_suite;
use shared::azure::{AzureOptions, Budget};
use shared::lease::blob::BlobLeaseStore;
use shared::lease::{LeaseDuration, LeaseError, LeaseStore, LostReason, RecordCreated};
use shared::Name;

/// Extra sleep on top of every wait: the emulator runs on this host's clock, so this only
/// covers request latency on a loaded CI machine.
const CLOCK_MARGIN: Duration = Duration::from_millis(1500);

static CONTAINERS: AtomicU32 = AtomicU32::new(0);

fn emulator_options(az: &Azurite) -> AzureOptions {
    AzureOptions {
        connection_string: Some(az.connection_string()),
        ..Default::default()
    }
}

fn open(az: &Azurite, container: &str) -> BlobLeaseStore {
    BlobLeaseStore::open(
        &format!("{}/{container}", az.blob_endpoint()),
        &emulator_options(az),
        Budget::interactive(),
    )
    .expect("the emulator's container opens")
}

/// One container per case on the shared emulator.
struct BlobHarness {
    az: Arc<Azurite>,
    container: String,
    store: Arc<BlobLeaseStore>,
    next: AtomicU32,
}

impl BlobHarness {
    async fn new(az: Arc<Azurite>) -> Self {
        let container = format!("case{}", CONTAINERS.fetch_add(1, Ordering::Relaxed));
        let store = Arc::new(open(&az, &container));
        store.ensure_container().await.expect("a fresh container");
        Self {
            az,
            container,
            store,
            next: AtomicU32::new(0),
        }
    }
}

impl LeaseHarness for BlobHarness {
    fn store(&self) -> Arc<dyn LeaseStore> {
        self.store.clone()
    }

    fn open_another(&self) -> Arc<dyn LeaseStore> {
        Arc::new(open(&self.az, &self.container))
    }

    fn new_identity(&self) -> Name {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Name::new(format!("m0-v{n}")).unwrap()
    }

    fn advance(&self, d: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(d + CLOCK_MARGIN))
    }

    fn exact_time(&self) -> bool {
        false
    }

    fn reports_fixed_durations(&self) -> bool {
        false
    }
}

// Azurite 3.35 departs from the service in three places (its `dist/src/blob/lease/`):
// - `LeaseExpiredState.renew` ignores the lease id, so a renew with another id succeeds on
//   an expired lease, even one another holder has taken since. Azure answers
//   `LeaseIdMismatchWithLeaseOperation`. The daemon is safe either way: it never renews
//   after its fence deadline, and its lease has not expired before that.
// - `LeaseAvailableState.renew` and `.release` answer `LeaseIdMismatchWithLeaseOperation`
//   where Azure answers `LeaseNotPresentWithLeaseOperation`; both are "lost" to the daemon.
// (The third, `LeaseAlreadyPresent` for an acquire during a break, the backend corrects
// with a read.) The deviating cases (cells of the state × operation table are cases) must
// keep failing, so a fixed emulator is noticed.
lease_conformance_suite!(
    concurrent,
    setup: Azurite::start(),
    harness: |az| BlobHarness::new(az).await,
    deviations: [
        cell_expired_renew,
        renew_after_another_holder_acquired_is_lost,
        cell_available_renew,
        cell_available_release,
    ]
);

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_storage_shorthand_and_the_env_variable_work() {
    let az = Azurite::start();
    // `UseDevelopmentStorage=true` means 127.0.0.1:10000, which this run's emulator is not
    // on: the shorthand must be refused for another endpoint rather than sent elsewhere.
    let dev = AzureOptions {
        connection_string: Some("UseDevelopmentStorage=true".into()),
        ..Default::default()
    };
    let e = BlobLeaseStore::open(
        &format!("{}/c", az.blob_endpoint()),
        &dev,
        Budget::interactive(),
    )
    .expect_err("another endpoint than the shorthand's");
    assert!(e.to_string().contains("not a container of"), "{e}");

    // The AccountName/AccountKey/BlobEndpoint form, with a container created on demand.
    let store = open(&az, "records");
    let id = name("m3-v0");
    assert_eq!(
        store.create_record(&id).await.unwrap(),
        RecordCreated::Created
    );
    assert_eq!(
        store.create_record(&id).await.unwrap(),
        RecordCreated::AlreadyExisted
    );
    let lease = store
        .acquire(&id, LeaseDuration::from_secs(15).unwrap(), None)
        .await
        .unwrap();
    // A leased record still reads as existing to a second create.
    assert_eq!(
        store.create_record(&id).await.unwrap(),
        RecordCreated::AlreadyExisted
    );
    store.release(&id, &lease).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_record_or_container_is_reported_as_lost() {
    let az = Azurite::start();
    let store = open(&az, "vanishing");
    let id = name("m0-v0");
    store.create_record(&id).await.unwrap();
    let lease = store
        .acquire(&id, LeaseDuration::from_secs(60).unwrap(), None)
        .await
        .unwrap();
    // Another party deletes the container (as `az storage container delete` would).
    az.delete_container("vanishing");
    match store.renew(&id, &lease).await {
        Err(LeaseError::Lost {
            reason: LostReason::StoreDeleted,
            identity,
        }) if identity == id => {}
        other => panic!("renew after the container vanished: {other:?}"),
    }
    let listed = store.list().await.unwrap_err().to_string();
    assert!(listed.contains("does not exist"), "{listed}");
}

/// The network info published beside the records (`--publish`): replaced whole, read back
/// within a size limit, absent before the first publish, and never listed as a record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_info_is_a_blob_beside_the_records_and_no_record() {
    let az = Azurite::start();
    let store = open(&az, "published");
    // Before the container exists: nothing published.
    assert_eq!(store.get_network_info(1 << 20).await.unwrap(), None);
    // Publishing creates the container if needed.
    store.put_network_info(b"{\"v\":1}\n").await.unwrap();
    store.put_network_info(b"{\"v\":2}\n").await.unwrap();
    assert_eq!(
        store.get_network_info(1 << 20).await.unwrap().as_deref(),
        Some(&b"{\"v\":2}\n"[..])
    );
    let e = store.get_network_info(4).await.unwrap_err();
    assert!(e.to_string().contains("over 4 bytes"), "{e}");
    assert_eq!(
        store.create_record(&name("m0-v0")).await.unwrap(),
        RecordCreated::Created
    );
    let listed: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.identity.to_string())
        .collect();
    assert_eq!(listed, ["m0-v0"]);
}

/// What the chaos run's `azurite-restart` fault relies on: Azurite (on disk) expires every
/// lease when it starts again, a 60 s lease 2 s old included, and another client can take
/// it. Azure never does this, so the chaos run keeps Azurite down past D, by when every
/// holder has fenced on its own; starting it sooner made overlaps only the emulator caused
/// (`Later::StartAzurite` in `integration_tests::chaos`). If this test fails, Azurite kept
/// the lease, and that rule could go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_expires_every_lease_when_it_starts_again() {
    use integration_tests::azurite::AzuriteOptions;
    let mut az = Azurite::start_with(AzuriteOptions {
        persistent: true,
        debug_log: false,
    });
    let store = open(&az, "restart");
    store.ensure_container().await.unwrap();
    let id = name("m0-v0");
    store.create_record(&id).await.unwrap();
    let long = LeaseDuration::Fixed(Duration::from_secs(60));
    store.acquire(&id, long, None).await.unwrap();
    assert_eq!(
        store.read(&id).await.unwrap().state,
        shared::lease::LeaseState::Leased
    );
    az.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    az.start_again();
    while !az.poll_ready() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        store.read(&id).await.unwrap().state,
        shared::lease::LeaseState::Expired
    );
    store
        .acquire(&id, long, None)
        .await
        .expect("another client takes the lease the restart dropped");
}
