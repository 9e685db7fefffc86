//! End to end on the Azure APIs: `orchestrator init` provisions a member with `keyvault:`
//! (the Key Vault double, Entra ID client-secret credential) and `blob:` (Azurite); then 3
//! real `leased` daemons, authenticating with a managed identity (the App Service flavour,
//! served by the double), serve the 2 identities. kill -9 of a holder hands its identity
//! to the standby, and the overlap checker runs over the clients' sign log.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration_tests::azurite::Azurite;
use integration_tests::cluster::{mono_now, Cluster, ClusterSpec, Stores};
use integration_tests::kv_double::{KvDouble, IDENTITY_HEADER_SECRET, TENANT_ID};
use shared::azure::AzureOptions;
use shared::config::Section;
use shared::lease::LeaseState;
use shared::spec::{LeaseStoreSpec, SecretStoreSpec};
use shared::{Address, Name};

const D: Duration = Duration::from_secs(15);
const ADMIN: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
/// The client id of the VMs' user-assigned managed identity.
const VM_IDENTITY: &str = "00000000-0000-0000-0000-0000000000bb";

fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

/// The `[azure]` lines both the pipeline and the tests' own handles use.
fn pipeline_azure_toml(kv: &KvDouble, az: &Azurite, secret_file: &Path) -> String {
    format!(
        "credential = \"client-secret\"\ntenant_id = {}\nclient_id = \"00000000-0000-0000-0000-0000000000aa\"\n\
         client_secret_file = {}\nauthority_host = {}\nca_file = {}\nconnection_string = {}\n",
        toml_str(TENANT_ID),
        toml_str(&secret_file.display().to_string()),
        toml_str(&kv.url()),
        toml_str(&kv.ca_file().display().to_string()),
        toml_str(&az.connection_string()),
    )
}

fn orchestrator(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(integration_tests::bin_path("orchestrator-host"))
        .args(args)
        .output()
        .expect("run orchestrator-host");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn leased(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let out = Command::new(integration_tests::bin_path("leased-host"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run leased-host");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn orchestrator_and_daemons_on_key_vault_and_blob_storage_survive_a_kill_9() {
    let az = Azurite::start();
    let kv = KvDouble::start();
    let work = tempfile::tempdir().unwrap();
    let secret_file = work.path().join("pipeline-sp-secret");
    std::fs::write(&secret_file, "not-a-real-secret\n").unwrap();
    let leases = format!("blob:{}/validators", az.blob_endpoint());
    let secrets = format!("keyvault:{}", kv.url());
    let config = work.path().join("orchestrator.toml");
    std::fs::write(
        &config,
        format!(
            "secrets = {}\nleases = {}\n\n[azure]\n{}",
            toml_str(&secrets),
            toml_str(&leases),
            pipeline_azure_toml(&kv, &az, &secret_file)
        ),
    )
    .unwrap();
    let out = work.path().join("out");
    let out_s = out.display().to_string();
    let config_s = config.display().to_string();
    let init = [
        "init",
        "--config",
        &config_s,
        "--member",
        "0",
        "--validators",
        "2",
        "--admin",
        ADMIN,
        "--flavour",
        "clique",
        "--out",
        &out_s,
    ];

    // 1. The pipeline provisions the member; the container does not exist yet.
    let (code, stdout, stderr) = orchestrator(&init);
    assert_eq!(code, 0, "orchestrator init failed:\n{stdout}\n{stderr}");
    let mut printed = format!("{stdout}{stderr}");
    let deployment: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("deployment-output.json")).unwrap())
            .unwrap();
    let identities: Vec<(Name, Address)> = deployment["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                Name::new(i["id"].as_str().unwrap()).unwrap(),
                i["address"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(identities.len(), 2);

    // What the stores hold, read through the backends as the tests' own client.
    let table = shared::config::parse(&pipeline_azure_toml(&kv, &az, &secret_file)).unwrap();
    let mut report = shared::config::Report::default();
    let azure = AzureOptions::read(&mut report, "azure", Section::read(table));
    assert!(report.is_empty(), "{:?}", report.problems());
    let azure = azure.unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (records, listed) = rt.block_on(async {
        let l = leases
            .parse::<LeaseStoreSpec>()
            .unwrap()
            .open(&azure)
            .unwrap();
        let s = secrets
            .parse::<SecretStoreSpec>()
            .unwrap()
            .open(&azure)
            .unwrap();
        (l.list().await.unwrap(), s.list().await.unwrap())
    });
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records.iter().all(|r| r.state == LeaseState::Available));
    for ((id, address), props) in identities.iter().zip(&listed) {
        assert_eq!(&props.name, id);
        assert_eq!(props.tags["address"], address.to_string());
    }
    // The pipeline authenticated with its client secret: every vault call after the
    // challenge carried a token the double's Entra ID endpoint issued.
    let vault_calls: Vec<_> = kv
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/secrets"))
        .collect();
    assert!(vault_calls
        .iter()
        .filter(|r| r.authorized)
        .all(|r| r.token_issued_here));

    // 2. A re-run changes nothing.
    let versions_before: Vec<usize> = identities
        .iter()
        .map(|(id, _)| kv.versions(id.as_str()).len())
        .collect();
    let (code, stdout, stderr) = orchestrator(&init);
    assert_eq!(code, 0, "re-run failed:\n{stdout}\n{stderr}");
    printed.push_str(&stdout);
    printed.push_str(&stderr);
    assert!(
        format!("{stdout}{stderr}").contains("0 created, 2 already existed"),
        "{stdout}\n{stderr}"
    );
    let versions_after: Vec<usize> = identities
        .iter()
        .map(|(id, _)| kv.versions(id.as_str()).len())
        .collect();
    assert_eq!(versions_before, versions_after, "a re-run wrote a secret");

    // 3. Three daemons with a managed identity serve the two identities.
    let daemon_azure_toml = format!(
        "credential = \"managed-identity\"\nmanaged_identity_client_id = {}\nca_file = {}\nconnection_string = {}\n",
        toml_str(VM_IDENTITY),
        toml_str(&kv.ca_file().display().to_string()),
        toml_str(&az.connection_string()),
    );
    let issued_before = kv.tokens_issued();
    let spec = ClusterSpec {
        identities: 2,
        daemons: 3,
        duration_secs: D.as_secs(),
        stores: Stores::Specs {
            leases: leases.clone(),
            secrets: secrets.clone(),
            azure: Box::new(azure.clone()),
            azure_toml: daemon_azure_toml,
        },
        provisioned: Some(identities.clone()),
        env: vec![
            ("IDENTITY_ENDPOINT".into(), kv.msi_endpoint()),
            ("IDENTITY_HEADER".into(), IDENTITY_HEADER_SECRET.into()),
            // Every event of every crate, the Azure SDK's and the HTTP stack's included:
            // the redaction check below holds at the most verbose level.
            ("RUST_LOG".into(), "trace".into()),
        ],
        ..ClusterSpec::default()
    };
    let mut cluster = Cluster::start(spec);
    let signers = cluster.wait_all_signing(0, Duration::from_secs(30));
    assert_eq!(signers.len(), 2);
    for (_, address) in &identities {
        assert!(
            signers.contains_key(&address.to_string().to_ascii_lowercase()),
            "{address} is not signing: {signers:?}"
        );
    }
    assert!(
        kv.tokens_issued() > issued_before,
        "the daemons did not fetch managed-identity tokens"
    );
    let msi = kv.msi_client_ids();
    assert!(!msi.is_empty(), "no managed-identity token request");
    assert!(
        msi.iter().all(|c| c.as_deref() == Some(VM_IDENTITY)),
        "the user-assigned identity's client id was not asked for: {msi:?}"
    );
    let holders = cluster.holders();
    assert_eq!(holders.len(), 2, "{holders:?}");

    // The on-call view of the blob store.
    let env = [("AZURE_STORAGE_CONNECTION_STRING", az.connection_string())];
    let (code, stdout_status, stderr) = leased(&["status", "--leases", &leases, "--json"], &env);
    assert_eq!(code, 0, "leased status:\n{stdout_status}\n{stderr}");
    let rows: serde_json::Value = serde_json::from_str(&stdout_status).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["state"], "leased", "{row}");
        assert!(
            row["holder"].as_str().is_some_and(|h| h.starts_with("vm-")),
            "{row}"
        );
    }

    // 4. kill -9 of a holder: the standby takes the identity over within about D.
    let (address, victim) = signers
        .iter()
        .next()
        .map(|(a, n)| (a.clone(), n.clone()))
        .unwrap();
    let killed_at = mono_now();
    cluster.daemon(&victim).kill9();
    let taken = cluster.wait_taken_over(&address, &victim, killed_at, D + Duration::from_secs(6));
    let latency = Duration::from_nanos(taken.at - killed_at);
    eprintln!(
        "take-over on Azure APIs after kill -9: {:.3} s",
        latency.as_secs_f64()
    );
    assert!(
        latency <= D + Duration::from_secs(3),
        "take-over took {latency:?}"
    );
    // The survivors keep both identities signing, on distinct nodes.
    cluster.wait_all_signing(taken.at, Duration::from_secs(10));
    let report = cluster.assert_no_overlap();

    // 5. No key, token or signature in anything printed: the orchestrator's output, the
    // on-call output and every daemon's log.
    for d in &cluster.daemons {
        printed.push_str(&d.log_text());
    }
    printed.push_str(&stdout_status);
    let mut secrets_seen = vec![
        ("a bearer token".to_string(), "kvdouble-".to_string()),
        (
            "the managed-identity header secret".to_string(),
            IDENTITY_HEADER_SECRET.to_string(),
        ),
        ("the account key".to_string(), az.account_key().to_string()),
        (
            "the client secret".to_string(),
            "not-a-real-secret".to_string(),
        ),
    ];
    for (id, _) in &identities {
        for v in kv.versions(id.as_str()) {
            secrets_seen.push((format!("{id}'s key"), v.value.clone()));
        }
    }
    for (what, needle) in &secrets_seen {
        // Where it was printed, up to the secret itself (which is not shown).
        let at = printed
            .lines()
            .find_map(|l| l.find(needle.as_str()).map(|i| &l[..i]));
        assert!(at.is_none(), "{what} was printed, after: {at:?}");
    }
    // A SAS signature may be named in a logged URL only with its value redacted (the Azure
    // SDK's logging policy does that for every query parameter it does not know to be safe).
    for (i, _) in printed.match_indices("sig=") {
        assert!(
            printed[i + 4..].starts_with("REDACTED"),
            "a SAS signature was printed, after: {:?}",
            printed[..i].lines().last()
        );
    }
    // Not vacuous: the Azure SDK's request log (debug) and trace events were there.
    assert!(
        printed.contains(" DEBUG ") && printed.contains("==> Request: url:"),
        "RUST_LOG=trace did not show the Azure SDK's request log"
    );
    assert!(
        printed.contains(" TRACE "),
        "RUST_LOG=trace showed no trace event"
    );
    eprintln!(
        "overlap check: {} signing intervals, none overlapping",
        report.intervals.len()
    );
}
