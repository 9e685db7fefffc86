//! Provisioning identities into the embedded stores: what a first run creates, that a
//! second changes nothing, that an interrupted run is completed without regenerating a key,
//! and that another network's or member's state is refused.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use orchestrator::provision::{
    provision, tag, Plan, ProvisionError, Quiet, RateLimiter, SecretFormat, MAX_VALIDATORS,
};
use shared::keyfile::CONTENT_TYPE_RAW_HEX;
use shared::lease::sqlite::SqliteLeaseStore;
use shared::lease::{LeaseState, LeaseStore};
use shared::secret::dir::DirSecretStore;
use shared::secret::{
    CreateOutcome, Secret, SecretError, SecretProperties, SecretStore, SecretValue, Tags,
};
use shared::{Name, ValidatorKey};

fn plan(validators: u32) -> Plan {
    Plan {
        member: 0,
        validators,
        network_id: 10_101_010,
        admin: ADMIN.parse().unwrap(),
        format: SecretFormat::RawHex,
    }
}

const ADMIN: &str = "0x00000000000000000000000000000000000a0001";

fn stores(dir: &Path) -> (DirSecretStore, SqliteLeaseStore) {
    (
        DirSecretStore::open(&dir.join("secrets")).unwrap(),
        SqliteLeaseStore::open(&dir.join("leases.db")).unwrap(),
    )
}

fn limiter() -> RateLimiter {
    RateLimiter::key_vault_creates()
}

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_first_run_stores_a_tagged_key_and_a_lease_record_per_identity() {
    let d = tempfile::tempdir().unwrap();
    let (secrets, leases) = stores(d.path());
    let ids = provision(&plan(4), &secrets, &leases, &mut limiter(), &mut Quiet)
        .await
        .unwrap();
    assert_eq!(ids.len(), 4);
    let names: Vec<&str> = ids.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(names, ["m0-v0", "m0-v1", "m0-v2", "m0-v3"]);
    assert!(ids.iter().all(|i| i.key_created && i.record_created));
    let mut addresses: Vec<_> = ids.iter().map(|i| i.address).collect();
    addresses.dedup();
    assert_eq!(addresses.len(), 4, "distinct keys");

    for i in &ids {
        let s = secrets.get(&i.id).await.unwrap();
        let key = ValidatorKey::from_hex(s.value.expose()).unwrap();
        assert_eq!(key.address(), i.address);
        assert_eq!(
            s.properties.content_type.as_deref(),
            Some(CONTENT_TYPE_RAW_HEX)
        );
        assert_eq!(s.properties.tags[tag::ADDRESS], i.address.to_string());
        assert_eq!(s.properties.tags[tag::MEMBER], "0");
        assert_eq!(s.properties.tags[tag::INDEX], i.index.to_string());
        assert_eq!(s.properties.tags[tag::NETWORK_ID], "10101010");
    }
    let records = leases.list().await.unwrap();
    assert_eq!(records.len(), 4);
    assert!(records.iter().all(|r| r.state == LeaseState::Available));
}

#[tokio::test]
async fn a_second_run_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let (secrets, leases) = stores(d.path());
    let first = provision(&plan(3), &secrets, &leases, &mut limiter(), &mut Quiet)
        .await
        .unwrap();
    let secret_files = snapshot(&d.path().join("secrets"));
    let records = leases.list().await.unwrap();

    let second = provision(&plan(3), &secrets, &leases, &mut limiter(), &mut Quiet)
        .await
        .unwrap();
    assert!(second.iter().all(|i| !i.key_created && !i.record_created));
    let addr =
        |v: &[orchestrator::provision::Identity]| v.iter().map(|i| i.address).collect::<Vec<_>>();
    assert_eq!(addr(&first), addr(&second));
    assert_eq!(snapshot(&d.path().join("secrets")), secret_files);
    assert_eq!(leases.list().await.unwrap(), records);
}

/// A secret store that fails every create after the first `allow`, as a run killed or cut
/// off half-way would.
struct FailingAfter {
    inner: DirSecretStore,
    allow: usize,
    creates: AtomicUsize,
}

#[async_trait]
impl SecretStore for FailingAfter {
    async fn create_if_absent(
        &self,
        name: &Name,
        value: &SecretValue,
        content_type: Option<&str>,
        tags: &Tags,
    ) -> Result<CreateOutcome, SecretError> {
        if self.creates.fetch_add(1, Ordering::SeqCst) >= self.allow {
            return Err(SecretError::Transient {
                message: "injected outage".into(),
                source: None,
            });
        }
        self.inner
            .create_if_absent(name, value, content_type, tags)
            .await
    }
    async fn get(&self, name: &Name) -> Result<Secret, SecretError> {
        self.inner.get(name).await
    }
    async fn list(&self) -> Result<Vec<SecretProperties>, SecretError> {
        self.inner.list().await
    }
}

#[tokio::test]
async fn an_interrupted_run_is_completed_without_regenerating_keys() {
    let d = tempfile::tempdir().unwrap();
    let (secrets, leases) = stores(d.path());
    let flaky = FailingAfter {
        inner: secrets.clone(),
        allow: 2,
        creates: AtomicUsize::new(0),
    };
    let err = provision(&plan(5), &flaky, &leases, &mut limiter(), &mut Quiet)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProvisionError::Secret(SecretError::Transient { .. })),
        "{err}"
    );
    let before = snapshot(&d.path().join("secrets"));
    assert_eq!(before.len(), 2);

    let ids = provision(&plan(5), &secrets, &leases, &mut limiter(), &mut Quiet)
        .await
        .unwrap();
    let created: Vec<bool> = ids.iter().map(|i| i.key_created).collect();
    assert_eq!(created, [false, false, true, true, true]);
    let after = snapshot(&d.path().join("secrets"));
    for (name, bytes) in &before {
        assert_eq!(&after[name], bytes, "{name} was rewritten");
    }
    assert_eq!(leases.list().await.unwrap().len(), 5);
}

#[tokio::test]
async fn another_network_or_member_is_refused_and_nothing_is_added() {
    let d = tempfile::tempdir().unwrap();
    let (secrets, leases) = stores(d.path());
    provision(&plan(2), &secrets, &leases, &mut limiter(), &mut Quiet)
        .await
        .unwrap();
    let before = snapshot(&d.path().join("secrets"));

    let other_network = Plan {
        network_id: 77,
        validators: 3,
        ..plan(3)
    };
    match provision(
        &other_network,
        &secrets,
        &leases,
        &mut limiter(),
        &mut Quiet,
    )
    .await
    {
        Err(ProvisionError::Conflict {
            id,
            tag,
            found,
            wanted,
        }) => {
            assert_eq!(id.as_str(), "m0-v0");
            assert_eq!(tag, "network-id");
            assert_eq!((found.as_str(), wanted.as_str()), ("10101010", "77"));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(snapshot(&d.path().join("secrets")), before);
}

#[tokio::test]
async fn a_secret_whose_key_does_not_match_its_address_tag_stops_the_run() {
    let d = tempfile::tempdir().unwrap();
    let (secrets, leases) = stores(d.path());
    let key = ValidatorKey::generate();
    let tags: Tags = [
        (tag::ADDRESS, ValidatorKey::generate().address().to_string()),
        (tag::MEMBER, "0".into()),
        (tag::INDEX, "0".into()),
        (tag::NETWORK_ID, "10101010".into()),
        (tag::ADMIN, ADMIN.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    secrets
        .create_if_absent(
            &Name::new("m0-v0").unwrap(),
            &SecretValue::new(key.expose_hex()),
            Some(CONTENT_TYPE_RAW_HEX),
            &tags,
        )
        .await
        .unwrap();
    let err = provision(&plan(2), &secrets, &leases, &mut limiter(), &mut Quiet)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProvisionError::AddressMismatch { .. }),
        "{err}"
    );
    assert!(!err.to_string().contains(key.expose_hex().as_str()));
}

#[tokio::test]
async fn validator_counts_outside_2_to_15_are_refused_before_any_write() {
    let d = tempfile::tempdir().unwrap();
    let (secrets, leases) = stores(d.path());
    for n in [0, 1, MAX_VALIDATORS + 1] {
        let err = provision(&plan(n), &secrets, &leases, &mut limiter(), &mut Quiet)
            .await
            .unwrap_err();
        assert!(matches!(err, ProvisionError::ValidatorCount(c) if c == n));
    }
    assert!(snapshot(&d.path().join("secrets")).is_empty());
    assert!(leases.list().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_rate_limiter_keeps_to_its_window() {
    let mut limiter = RateLimiter::new(3, Duration::from_secs(10));
    let start = tokio::time::Instant::now();
    let mut at = Vec::new();
    for _ in 0..7 {
        limiter.acquire().await;
        at.push(start.elapsed().as_secs());
    }
    // Three at once, three more when the first window has passed, then one more.
    assert_eq!(at, [0, 0, 0, 10, 10, 10, 20]);
    // Never more than 3 in any 10 s window.
    for (i, t) in at.iter().enumerate() {
        let in_window = at.iter().skip(i).filter(|u| **u < t + 10).count();
        assert!(in_window <= 3);
    }
}

fn keystore_plan(validators: u32, password: &str) -> Plan {
    Plan {
        format: SecretFormat::KeystoreV3 {
            password: zeroize::Zeroizing::new(password.as_bytes().to_vec()),
            kdf: shared::keystore::KdfParams::scrypt_fast_for_tests(),
        },
        ..plan(validators)
    }
}

#[tokio::test]
async fn keystore_secrets_decrypt_to_the_reported_addresses_and_rerun_reuses_them() {
    let d = tempfile::tempdir().unwrap();
    let (secrets, leases) = stores(d.path());
    let first = provision(
        &keystore_plan(3, "pw-one"),
        &secrets,
        &leases,
        &mut limiter(),
        &mut Quiet,
    )
    .await
    .unwrap();
    for identity in &first {
        let stored = secrets.get(&identity.id).await.unwrap();
        assert_eq!(
            stored.properties.content_type.as_deref(),
            Some(shared::keystore::CONTENT_TYPE)
        );
        let key = shared::keystore::decrypt(stored.value.expose().as_bytes(), b"pw-one").unwrap();
        assert_eq!(key.address(), identity.address);
    }
    let before = snapshot(&d.path().join("secrets"));
    let second = provision(
        &keystore_plan(3, "pw-one"),
        &secrets,
        &leases,
        &mut limiter(),
        &mut Quiet,
    )
    .await
    .unwrap();
    assert!(second.iter().all(|i| !i.key_created && !i.record_created));
    assert_eq!(
        first.iter().map(|i| i.address).collect::<Vec<_>>(),
        second.iter().map(|i| i.address).collect::<Vec<_>>()
    );
    assert_eq!(before, snapshot(&d.path().join("secrets")));

    // The wrong password, or the other format, is refused and adds nothing.
    let err = provision(
        &keystore_plan(3, "pw-two"),
        &secrets,
        &leases,
        &mut limiter(),
        &mut Quiet,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ProvisionError::BadSecret { .. }), "{err}");
    let err = provision(&plan(3), &secrets, &leases, &mut limiter(), &mut Quiet)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProvisionError::FormatConflict { .. }),
        "{err}"
    );
    assert_eq!(before, snapshot(&d.path().join("secrets")));
}

#[tokio::test]
async fn another_admin_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (secrets, leases) = stores(d.path());
    provision(&plan(2), &secrets, &leases, &mut limiter(), &mut Quiet)
        .await
        .unwrap();
    let other = Plan {
        admin: "0x00000000000000000000000000000000000a0002"
            .parse()
            .unwrap(),
        ..plan(2)
    };
    let err = provision(&other, &secrets, &leases, &mut limiter(), &mut Quiet)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProvisionError::Conflict { tag: "admin", .. }),
        "{err}"
    );
}
