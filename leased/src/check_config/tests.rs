use std::os::unix::fs::PermissionsExt;

use shared::lease::sqlite::SqliteLeaseStore;
use shared::secret::dir::DirSecretStore;
use shared::secret::{SecretValue, Tags};
use shared::Name;
use zeroize::Zeroizing;

use super::*;

/// A config on `dir:` and `sqlite:` under `root`, running `program`.
fn config(root: &Path, program: &str) -> Config {
    let text = format!(
        r#"
node = "vm-1"
runtime_dir = "{root}/run"
[store]
leases  = "sqlite:{root}/leases.db"
secrets = "dir:{root}/secrets"
[identity]
pool = "m0-"
[lease]
duration_secs = 15
[client]
format  = "raw-hex"
command = ["{program}", "--key={{key_file}}"]
[http]
listen = "127.0.0.1:9797"
"#,
        root = root.display()
    );
    Config::parse(&text, &Overrides::default()).expect("a valid config")
}

/// An executable file at `dir/name`.
fn executable(dir: &Path, name: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// Stores under `root` with identities `ids`, each secret tagged with an address.
async fn provision(root: &Path, ids: &[&str]) {
    let leases = SqliteLeaseStore::open(&root.join("leases.db")).unwrap();
    let secrets = DirSecretStore::open(&root.join("secrets")).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let name = Name::new(*id).unwrap();
        leases.create_record(&name).await.unwrap();
        let tags: Tags = [("address".to_owned(), format!("0x{:040x}", i + 1))].into();
        let value = SecretValue::new(Zeroizing::new("11".repeat(32)));
        secrets
            .create_if_absent(&name, &value, Some("raw-hex"), &tags)
            .await
            .unwrap();
    }
}

#[test]
fn exit_status_is_69_only_when_every_problem_is_an_unreachable_store() {
    let mut r = Report::default();
    assert_eq!(r.status(), Status::Ok);
    r.problems.push(Problem::unreachable("x"));
    assert_eq!(r.status(), Status::Unavailable);
    r.problems.push(Problem::config("y"));
    assert_eq!(r.status(), Status::Usage);
}

#[test]
fn programs_are_found_by_path_or_on_path() {
    let dir = tempfile::tempdir().unwrap();
    let exe = executable(dir.path(), "client", 0o755);
    let plain = executable(dir.path(), "plain", 0o644);
    let path_var = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
    assert_eq!(find_program(exe.to_str().unwrap(), None), Ok(exe.clone()));
    assert_eq!(find_program("client", Some(&path_var)), Ok(exe));
    assert!(find_program(plain.to_str().unwrap(), None)
        .unwrap_err()
        .contains("not an executable"));
    assert!(find_program("plain", Some(&path_var))
        .unwrap_err()
        .contains("not found on PATH"));
    assert!(find_program("client", None).is_err());
    assert!(find_program("/nonexistent/geth", None).is_err());
}

#[tokio::test]
async fn a_provisioned_member_passes_and_names_what_it_saw() {
    let dir = tempfile::tempdir().unwrap();
    let exe = executable(dir.path(), "geth", 0o755);
    provision(dir.path(), &["m0-v0", "m0-v1", "m1-v0"]).await;
    let report = check(&config(dir.path(), exe.to_str().unwrap()), true, None).await;
    assert_eq!(report.problems, [], "{report:?}");
    assert_eq!(report.status(), Status::Ok);
    let ok = report.ok.join("\n");
    assert!(
        ok.contains("2 identities of pool \"m0-\" (m0-v0, m0-v1)"),
        "{ok}"
    );
    assert!(
        ok.contains("m0-v0 readable (raw-hex, address 0x0000000000000000000000000000000000000001)"),
        "{ok}"
    );
    // The secret's value is never shown.
    assert!(!ok.contains(&"11".repeat(32)), "{ok}");
}

#[tokio::test]
async fn every_problem_is_listed_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let report = check(&config(dir.path(), "no-such-client-here"), true, None).await;
    let messages: Vec<&str> = report.problems.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(messages[0].contains("no-such-client-here is not found on PATH"));
    assert!(messages[1].contains("no lease store file"));
    assert!(messages[2].contains("no directory"));
    assert_eq!(report.status(), Status::Usage);
    assert!(!dir.path().join("leases.db").exists());
    assert!(!dir.path().join("secrets").exists());
}

#[tokio::test]
async fn an_empty_pool_and_an_untagged_secret_are_problems() {
    let dir = tempfile::tempdir().unwrap();
    let exe = executable(dir.path(), "geth", 0o755);
    provision(dir.path(), &["m1-v0"]).await;
    let secrets = DirSecretStore::open(&dir.path().join("secrets")).unwrap();
    let value = SecretValue::new(Zeroizing::new("22".repeat(32)));
    secrets
        .create_if_absent(
            &Name::new("m0-v0").unwrap(),
            &value,
            Some("raw-hex"),
            &Tags::new(),
        )
        .await
        .unwrap();
    let report = check(&config(dir.path(), exe.to_str().unwrap()), true, None).await;
    let messages: Vec<&str> = report.problems.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].contains("no lease record of pool \"m0-\" (1 records in all"));
    assert!(messages[1].contains("m0-v0 has no address tag"));
}

#[tokio::test]
async fn offline_checks_only_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let exe = executable(dir.path(), "geth", 0o755);
    let report = check(&config(dir.path(), exe.to_str().unwrap()), false, None).await;
    assert_eq!(report.problems, []);
    assert!(report.ok.iter().any(|l| l.contains("--offline")));
}
