//! The `dir:` secret store: the shared conformance suite, plus what only a directory has
//! (file modes, atomic files, refusal of a directory others can read).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use integration_tests::secret_conformance::SecretHarness;
use integration_tests::secret_conformance_suite;
use shared::secret::dir::DirSecretStore;
use shared::secret::{SecretError, SecretStore, SecretValue, Tags};
use shared::spec::SecretStoreSpec;
use shared::Name;
use zeroize::Zeroizing;

struct DirHarness {
    _tmp: tempfile::TempDir,
    dir: Mutex<Option<PathBuf>>,
    root: PathBuf,
}

impl DirHarness {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        Self {
            _tmp: tmp,
            dir: Mutex::new(None),
            root,
        }
    }
}

impl SecretHarness for DirHarness {
    fn store(&self) -> Arc<dyn SecretStore> {
        let dir = self.root.join("secrets");
        *self.dir.lock().unwrap() = Some(dir.clone());
        Arc::new(DirSecretStore::open(&dir).unwrap())
    }

    fn open_another(&self) -> Arc<dyn SecretStore> {
        let dir = self.dir.lock().unwrap().clone().expect("store() first");
        Arc::new(DirSecretStore::open(&dir).unwrap())
    }
}

secret_conformance_suite!(DirHarness::new());

fn value(s: &str) -> SecretValue {
    SecretValue::new(Zeroizing::new(s.to_string()))
}

#[tokio::test]
async fn files_are_0600_in_a_0700_directory_with_no_temporaries_left() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new/secrets");
    let spec: SecretStoreSpec = format!("dir:{}", dir.display()).parse().unwrap();
    let store = spec.open(&Default::default()).unwrap();
    assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    for i in 0..5 {
        let n = Name::new(format!("m0-v{i}")).unwrap();
        store
            .create_if_absent(&n, &value("x"), None, &Tags::new())
            .await
            .unwrap();
    }
    let entries: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap()).collect();
    assert_eq!(entries.len(), 5);
    for e in entries {
        assert!(!e.file_name().to_string_lossy().starts_with('.'));
        assert_eq!(e.metadata().unwrap().mode() & 0o777, 0o600);
    }
}

#[test]
fn a_directory_others_can_read_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let err = DirSecretStore::open(&dir).unwrap_err();
    assert!(matches!(err, SecretError::Backend { .. }));
    assert!(err.to_string().contains("must be 0700"), "{err}");
}

#[tokio::test]
async fn a_secret_file_others_can_read_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let store = DirSecretStore::open(&dir).unwrap();
    let n = Name::new("m0-v0").unwrap();
    store
        .create_if_absent(&n, &value("x"), None, &Tags::new())
        .await
        .unwrap();
    fs::set_permissions(dir.join("m0-v0"), fs::Permissions::from_mode(0o644)).unwrap();
    let err = store.get(&n).await.unwrap_err();
    assert!(err.to_string().contains("must be 0600"), "{err}");
}

#[tokio::test]
async fn a_damaged_secret_file_is_reported_with_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let store = DirSecretStore::open(&dir).unwrap();
    shared::fsutil::write_new_private(&dir.join("m0-v0"), b"{\"name\":").unwrap();
    let err = store.get(&Name::new("m0-v0").unwrap()).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("m0-v0") && msg.contains("not a secret file"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_damaged_secret_file_never_echoes_its_contents() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let store = DirSecretStore::open(&dir).unwrap();
    let hex = shared::ValidatorKey::generate().expose_hex();
    // The key where an object is expected: serde would quote it in its own message.
    let body = format!(
        "{{\"name\":\"m0-v0\",\"value\":\"x\",\"tags\":\"{}\"}}",
        *hex
    );
    shared::fsutil::write_new_private(&dir.join("m0-v0"), body.as_bytes()).unwrap();
    let err = store.get(&Name::new("m0-v0").unwrap()).await.unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(msg.contains("not a secret file"), "{msg}");
    assert!(
        !msg.contains(&hex[..16]),
        "key material in the error: {msg}"
    );
}
