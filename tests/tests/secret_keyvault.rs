//! The `keyvault:` secret store through the official SDK client against the Key Vault
//! double (`integration_tests::kv_double`): the shared conformance suite, then what only
//! Key Vault has: the first-version rule under concurrent creators, throttling with
//! `Retry-After`, soft-deleted names, and the Entra ID client-secret credential at work.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration_tests::kv_double::{KvDouble, TENANT_ID};
use integration_tests::secret_conformance::SecretHarness;
use integration_tests::secret_conformance_suite;
use shared::azure::{AzureOptions, Budget, CredentialKind};
use shared::secret::keyvault::KeyVaultSecretStore;
use shared::secret::{CreateOutcome, SecretError, SecretStore, SecretValue, Tags};
use shared::Name;
use zeroize::Zeroizing;

/// The double stamps versions with its own clock, to the second: 1.1 s settles every
/// race there. (The production wait, two seconds, adds a second for the service's front
/// ends' clocks.)
const SETTLE: Duration = Duration::from_millis(1100);

/// The pipeline's settings: a client secret, with Entra ID played by the double.
fn pipeline_options(kv: &KvDouble, dir: &tempfile::TempDir) -> AzureOptions {
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, "not-a-real-secret\n").unwrap();
    AzureOptions {
        credential: CredentialKind::ClientSecret,
        tenant_id: Some(TENANT_ID.into()),
        client_id: Some("00000000-0000-0000-0000-0000000000aa".into()),
        client_secret_file: Some(secret_file),
        authority_host: Some(kv.url()),
        ca_file: Some(kv.ca_file().to_path_buf()),
        ..Default::default()
    }
}

fn open(kv: &KvDouble, azure: &AzureOptions) -> KeyVaultSecretStore {
    KeyVaultSecretStore::open(&kv.url(), azure, Budget::interactive())
        .expect("the double's vault opens")
        .with_settle(SETTLE)
}

struct KvHarness {
    kv: Mutex<KvDouble>,
    azure: AzureOptions,
    _dir: tempfile::TempDir,
}

impl KvHarness {
    fn new() -> Self {
        let kv = KvDouble::start();
        let dir = tempfile::tempdir().unwrap();
        let azure = pipeline_options(&kv, &dir);
        Self {
            kv: Mutex::new(kv),
            azure,
            _dir: dir,
        }
    }
}

impl SecretHarness for KvHarness {
    fn store(&self) -> Arc<dyn SecretStore> {
        Arc::new(open(&self.kv.lock().unwrap(), &self.azure))
    }

    fn open_another(&self) -> Arc<dyn SecretStore> {
        self.store()
    }
}

secret_conformance_suite!(KvHarness::new());

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn value(s: &str) -> SecretValue {
    SecretValue::new(Zeroizing::new(s.to_string()))
}

fn tags(address: &str) -> Tags {
    [("address".to_string(), address.to_string())].into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creators_agree_on_the_first_version_and_retire_the_others() {
    let kv = KvDouble::start();
    let dir = tempfile::tempdir().unwrap();
    let azure = pipeline_options(&kv, &dir);
    const RACERS: usize = 4;
    const ROUNDS: usize = 5;
    let stores: Vec<Arc<KeyVaultSecretStore>> =
        (0..RACERS).map(|_| Arc::new(open(&kv, &azure))).collect();
    // Each handle answers its challenge and fetches its token first, so that the racers
    // start their creates together rather than one authentication apart.
    for s in &stores {
        s.list().await.unwrap();
    }
    // A round races only when at least two creators write before one of them reads the
    // winner back; under load one may finish first, so several rounds are run and at
    // least one must have raced.
    let mut raced = 0;
    for round in 0..ROUNDS {
        let id = name(&format!("m0-v{round}"));
        let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
        let tasks: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (s, id, barrier) = (s.clone(), id.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let out = s
                        .create_if_absent(
                            &id,
                            &value(&format!("key-{i}")),
                            Some("text/plain"),
                            &tags(&format!("0x{i}")),
                        )
                        .await
                        .unwrap();
                    (i, out)
                })
            })
            .collect();
        let mut created = Vec::new();
        let mut reported = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (i, CreateOutcome::Created) => created.push(i),
                (_, CreateOutcome::AlreadyExists(p)) => reported.push(p.tags["address"].clone()),
            }
        }
        assert_eq!(created.len(), 1, "exactly one creator wins: {created:?}");
        let winner = created[0];
        // Every loser reports the winner's identity, so every run prints the same address.
        for address in &reported {
            assert_eq!(address, &format!("0x{winner}"));
        }
        // Readers resolve the winner's key, from any handle.
        for s in &stores {
            let got = s.get(&id).await.unwrap();
            assert_eq!(got.value.expose(), format!("key-{winner}"));
            assert_eq!(got.properties.tags, tags(&format!("0x{winner}")));
        }
        // On the service: the first version (earliest `created` second, then the smaller
        // version id) is the winner's and enabled; every other version that carries another
        // key is disabled; the latest is the winner's key again.
        let versions = kv.versions(id.as_str());
        if versions.len() < 2 {
            // One racer was done before the others wrote: nothing to retire this round.
            continue;
        }
        raced += 1;
        let first = versions
            .iter()
            .min_by(|a, b| (a.created, &a.version).cmp(&(b.created, &b.version)))
            .unwrap();
        assert_eq!(first.value, format!("key-{winner}"));
        assert!(first.enabled);
        for v in &versions {
            if v.value != format!("key-{winner}") {
                assert!(!v.enabled, "a losing key is still enabled: {}", v.version);
            }
        }
        assert_eq!(
            versions.last().unwrap().value,
            format!("key-{winner}"),
            "latest shows the winner's key"
        );
    }
    assert!(
        raced > 0,
        "in none of {ROUNDS} rounds did two creators write: the race was not exercised"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_after_the_time_the_service_asks() {
    let kv = KvDouble::start();
    let dir = tempfile::tempdir().unwrap();
    let store = open(&kv, &pipeline_options(&kv, &dir));
    // Authenticate first, so that the fault hits a real request, not the challenge.
    store.list().await.unwrap();
    kv.fail_next(1, 429, Some(2));
    let started = std::time::Instant::now();
    let out = store
        .create_if_absent(&name("m0-v3"), &value("k"), None, &tags("0x3"))
        .await
        .unwrap();
    assert_eq!(out, CreateOutcome::Created);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "retried before Retry-After: {:?}",
        started.elapsed()
    );
    assert_eq!(kv.throttled_count(), 1);
    let statuses: Vec<u16> = kv
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/secrets/m0-v3"))
        .map(|r| r.status)
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(kv.versions("m0-v3").len(), 1, "one version after the retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_secret_credential_fetches_the_token_every_request_carries() {
    let kv = KvDouble::start();
    let dir = tempfile::tempdir().unwrap();
    let store = open(&kv, &pipeline_options(&kv, &dir));
    store
        .create_if_absent(&name("m0-v0"), &value("k"), None, &tags("0x0"))
        .await
        .unwrap();
    store.get(&name("m0-v0")).await.unwrap();
    assert!(kv.tokens_issued() >= 1, "no token was fetched");
    let vault: Vec<_> = kv
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/secrets"))
        .collect();
    assert!(
        !vault[0].authorized,
        "the first request collects the challenge"
    );
    for r in &vault[1..] {
        assert!(
            r.token_issued_here,
            "{} {} carried a token the credential did not fetch",
            r.method, r.path
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_deleted_name_is_reported_with_what_to_do() {
    let kv = KvDouble::start();
    let dir = tempfile::tempdir().unwrap();
    let azure = pipeline_options(&kv, &dir);
    let store = open(&kv, &azure);
    store
        .create_if_absent(&name("m0-v1"), &value("k"), None, &tags("0x1"))
        .await
        .unwrap();
    assert!(kv.delete_secret("m0-v1"));
    match store
        .create_if_absent(&name("m0-v1"), &value("k2"), None, &tags("0x1"))
        .await
    {
        Err(SecretError::Backend { message, .. }) => {
            assert!(message.contains("soft-delete"), "{message}");
            assert!(message.contains("recover"), "{message}");
        }
        other => panic!("create over a soft-deleted name: {other:?}"),
    }
    assert!(matches!(
        store.get(&name("m0-v1")).await,
        Err(SecretError::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused() {
    let kv = KvDouble::start();
    let dir = tempfile::tempdir().unwrap();
    let azure = AzureOptions {
        ca_file: None,
        ..pipeline_options(&kv, &dir)
    };
    // Without the double's CA the credential cannot even be created against its authority
    // over TLS: the first call fails, and says it is a certificate problem.
    let store = KeyVaultSecretStore::open(&kv.url(), &azure, Budget::interactive()).unwrap();
    let e = store.list().await.unwrap_err().to_string();
    assert!(
        e.to_ascii_lowercase().contains("certificate") || e.contains("UnknownIssuer"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_developer_tools_credential_says_which_login_it_needs() {
    // No `az` or `azd` login can exist in a test: the first call must fail, say that the
    // developer-tools credential failed, and never reach the vault with a token.
    let kv = KvDouble::start();
    let azure = AzureOptions {
        credential: CredentialKind::DeveloperTools,
        ca_file: Some(kv.ca_file().to_path_buf()),
        ..Default::default()
    };
    let store = KeyVaultSecretStore::open(&kv.url(), &azure, Budget::interactive()).unwrap();
    let e = store.list().await.unwrap_err().to_string();
    assert!(
        e.contains("AzureCliCredential") && e.contains("AzureDeveloperCliCredential"),
        "{e}"
    );
    assert!(
        kv.requests().iter().all(|r| !r.authorized),
        "{:?}",
        kv.requests()
    );
}
