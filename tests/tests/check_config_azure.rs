//! `leased check-config` on the Azure backends: Azurite for `blob:` and the Key Vault double
//! for `keyvault:`, reached with a managed identity as on a validator VM. It passes on a
//! provisioned member, reads one secret's tags but never a value, and exits 69 when all
//! that is wrong is a store out of reach.

use std::process::Command;

use integration_tests::azurite::Azurite;
use integration_tests::kv_double::{KvDouble, IDENTITY_HEADER_SECRET, TENANT_ID};

const ADMIN: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
const VM_IDENTITY: &str = "00000000-0000-0000-0000-0000000000bb";

fn run(bin: &str, args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let out = Command::new(integration_tests::bin_path(bin))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_reaches_blob_storage_and_key_vault() {
    let mut az = Azurite::start();
    let kv = KvDouble::start();
    let work = tempfile::tempdir().unwrap();
    let secret_file = work.path().join("pipeline-sp-secret");
    std::fs::write(&secret_file, "not-a-real-secret\n").unwrap();
    let leases = format!("blob:{}/validators", az.blob_endpoint());
    let secrets = format!("keyvault:{}", kv.url());
    let ca = kv.ca_file().display().to_string();

    // The pipeline provisions member 0 (client-secret credential).
    let pipeline = work.path().join("orchestrator.toml");
    std::fs::write(
        &pipeline,
        format!(
            "secrets = {secrets:?}\nleases = {leases:?}\n\n[azure]\ncredential = \"client-secret\"\n\
             tenant_id = {TENANT_ID:?}\nclient_id = \"00000000-0000-0000-0000-0000000000aa\"\n\
             client_secret_file = {:?}\nauthority_host = {:?}\nca_file = {ca:?}\n\
             connection_string = {:?}\n",
            secret_file.display().to_string(),
            kv.url(),
            az.connection_string(),
        ),
    )
    .unwrap();
    let out = work.path().join("out").display().to_string();
    let (code, stdout, stderr) = run(
        "orchestrator-host",
        &[
            "init",
            "--config",
            &pipeline.display().to_string(),
            "--member",
            "0",
            "--validators",
            "2",
            "--admin",
            ADMIN,
            "--flavour",
            "clique",
            "--out",
            &out,
        ],
        &[],
    );
    assert_eq!(code, 0, "orchestrator init:\n{stdout}\n{stderr}");
    let deployment: serde_json::Value = serde_json::from_slice(
        &std::fs::read(work.path().join("out/deployment-output.json")).unwrap(),
    )
    .unwrap();
    let first_address = deployment["identities"][0]["address"]
        .as_str()
        .unwrap()
        .to_owned();

    // A VM's configuration: a managed identity, the client on PATH.
    let config = work.path().join("leased.toml");
    std::fs::write(
        &config,
        format!(
            "node = \"vm-1\"\nruntime_dir = {:?}\n[store]\nleases = {leases:?}\nsecrets = \
             {secrets:?}\n[identity]\npool = \"m0-\"\n[lease]\nduration_secs = 15\n[client]\n\
             format = \"raw-hex\"\ncommand = [\"standin-client\", \"{{key_file}}\"]\n[http]\n\
             listen = \"127.0.0.1:0\"\n[azure]\ncredential = \"managed-identity\"\n\
             managed_identity_client_id = {VM_IDENTITY:?}\nca_file = {ca:?}\n\
             connection_string = {:?}\n",
            work.path().join("run").display().to_string(),
            az.connection_string(),
        ),
    )
    .unwrap();
    let bin_dir = integration_tests::bin_path("standin-client")
        .parent()
        .unwrap()
        .display()
        .to_string();
    let env = [
        ("IDENTITY_ENDPOINT", kv.msi_endpoint()),
        ("IDENTITY_HEADER", IDENTITY_HEADER_SECRET.to_owned()),
        ("PATH", format!("{bin_dir}:/usr/bin:/bin")),
    ];
    let config_s = config.display().to_string();
    let before = kv.requests().len();
    let (code, stdout, stderr) = run(
        "leased-host",
        &["check-config", "--config", &config_s],
        &env,
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("2 identities of pool \"m0-\""), "{stdout}");
    assert!(
        stdout.contains(&format!("address {first_address}")),
        "{stdout}"
    );
    assert!(stdout.contains("standin-client found"), "{stdout}");
    // Only the list of properties was asked for: no request for a secret (its value).
    let secret_requests: Vec<String> = kv.requests()[before..]
        .iter()
        .filter(|r| r.path.contains("/secrets"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(!secret_requests.is_empty());
    assert!(
        secret_requests
            .iter()
            .all(|r| r.trim_end_matches('/').ends_with(" /secrets")),
        "{secret_requests:?}"
    );

    // The lease store out of reach, and nothing else wrong: 69, try again later.
    az.stop();
    let (code, stdout, stderr) = run(
        "leased-host",
        &["check-config", "--config", &config_s],
        &env,
    );
    assert_eq!(code, 69, "{stdout}\n{stderr}");
    assert!(stderr.contains("store.leases blob:"), "{stderr}");
    assert!(!stderr.contains("store.secrets"), "{stderr}");
}
