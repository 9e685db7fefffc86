//! The operations artifacts of issue 16, checked as the operator's tools read them:
//!
//! - `ops/leased.service`: `systemd-analyze security --offline=true` at most
//!   [`UNIT_MAX_EXPOSURE`], with each client drop-in of `ops/clients/` at most
//!   [`DROP_IN_MAX_EXPOSURE`], and `systemd-analyze verify` without a complaint;
//! - `ops/cloud-init/validator.yaml`: `cloud-init schema` (Debian's), and the leased.toml
//!   its provisioning script renders, read by leased's own config reader;
//! - `ops/azure/azuredeploy.json`: exactly the role assignments of the README's "Azure RBAC"
//!   table, on the scopes it names, and nothing broader;
//! - `ops/azure/deploy.sh`: shellcheck, a dry run that runs no `az`, and the pipeline's
//!   orchestrator step for real against Azurite and the Key Vault double (loopback only).
//!
//! systemd-analyze comes with the host's systemd (offline mode needs no systemd running);
//! cloud-init and shellcheck are unpacked into `.tools/deb` by `ops/install-test-deps.sh`.
//! A missing tool fails the test and says where to get it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use integration_tests::azurite::Azurite;
use integration_tests::kv_double::{KvDouble, TENANT_ID};
use integration_tests::tools;
use serde_json::Value;

/// The bound issue 16 sets for the unit as shipped.
const UNIT_MAX_EXPOSURE: f64 = 2.5;
/// The bound for the unit with one client's drop-in applied: a client may relax a little
/// (the JIT clients need writable and executable memory), never a lot.
const DROP_IN_MAX_EXPOSURE: f64 = 3.0;

fn root() -> PathBuf {
    tools::workspace_root()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(cmd: &mut Command, what: &str) -> Output {
    cmd.output().unwrap_or_else(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            panic!("{what} is not installed ({cmd:?}): {e}");
        }
        panic!("cannot run {what} ({cmd:?}): {e}")
    })
}

// ---------------------------------------------------------------------------------------
// The unit.

/// `systemd-analyze` of the host (Debian: package systemd). `--offline=true` reads unit
/// files only, so it needs no systemd running as PID 1.
fn systemd_analyze() -> Command {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("systemd-analyze"))
        .find(|p| p.is_file());
    match found {
        Some(path) => Command::new(path),
        None => panic!(
            "systemd-analyze is not on PATH: install systemd (Debian 12: apt-get install systemd), \
             the one tool of these checks that ops/install-test-deps.sh does not unpack"
        ),
    }
}

/// The unit in a directory of its own, with `drop_in` (a file of `ops/clients/`) in
/// `leased.service.d/` beside it, where `systemd-analyze --offline=true` looks for
/// drop-ins; `exec` replaces the ExecStart binary (verify wants one that exists).
fn staged_unit(drop_in: Option<&Path>, exec: Option<&Path>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut unit = read(&root().join("ops/leased.service"));
    if let Some(exec) = exec {
        unit = unit.replace(
            "ExecStart=/usr/bin/leased ",
            &format!("ExecStart={} ", exec.display()),
        );
    }
    let path = dir.path().join("leased.service");
    std::fs::write(&path, unit).unwrap();
    if let Some(drop_in) = drop_in {
        let d = dir.path().join("leased.service.d");
        std::fs::create_dir(&d).unwrap();
        std::fs::copy(drop_in, d.join(drop_in.file_name().unwrap())).unwrap();
    }
    (dir, path)
}

/// `systemd-analyze security --offline=true UNIT`: the overall exposure and the report.
fn exposure(unit: &Path) -> (f64, String) {
    let out = run(
        systemd_analyze()
            .args(["security", "--offline=true", "--no-pager"])
            .arg(unit)
            .env("SYSTEMD_COLORS", "0"),
        "systemd-analyze",
    );
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "systemd-analyze security failed:\n{report}"
    );
    // "→ Overall exposure level for leased.service: 1.2 OK 🙂"
    let score = report
        .lines()
        .find_map(|l| {
            l.split_once("Overall exposure level for ")?
                .1
                .split_once(": ")
        })
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no overall exposure in systemd-analyze's report:\n{report}"));
    (score, report)
}

/// Whether the report flags `setting` (its row starts with ✗).
fn flagged(report: &str, setting: &str) -> bool {
    report
        .lines()
        .filter_map(|l| l.strip_prefix('✗'))
        .any(|l| l.trim_start().starts_with(setting))
}

fn drop_ins() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root().join("ops/clients"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    found.sort();
    assert!(
        ["geth.conf", "besu.conf", "nethermind.conf"]
            .iter()
            .all(|n| found.iter().any(|p| p.ends_with(n))),
        "ops/clients/ lacks a drop-in for geth, Besu or Nethermind: {found:?}"
    );
    found
}

/// `KEY=VALUE` lines of a unit file, comments and section headers left out.
fn settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=VALUE: {l:?}"));
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

#[test]
fn the_unit_scores_at_most_2_5_and_keeps_what_the_daemon_needs() {
    let (_dir, unit) = staged_unit(None, None);
    let (score, report) = exposure(&unit);
    eprintln!("systemd-analyze security: ops/leased.service {score}");
    assert!(
        score <= UNIT_MAX_EXPOSURE,
        "ops/leased.service rates {score} > {UNIT_MAX_EXPOSURE}:\n{report}"
    );
    let set = settings(&read(&root().join("ops/leased.service")));
    for (key, value) in [
        ("Type", "notify"),
        (
            "ExecStart",
            "/usr/bin/leased run --config /etc/leased/leased.toml",
        ),
        ("User", "leased"),
        ("KillMode", "control-group"),
        ("RuntimeDirectory", "leased"),
        ("RuntimeDirectoryMode", "0700"),
        ("ReadWritePaths", "/var/lib/leased"),
        ("WatchdogSec", "4s"),
        ("LimitCORE", "0"),
        ("UMask", "0077"),
        ("CapabilityBoundingSet", ""),
        ("NoNewPrivileges", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallFilter", "@system-service"),
        // sd_notify, the loopback HTTP listener, Azure over HTTPS and the UDP nudge.
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ] {
        assert!(
            set.iter().any(|(k, v)| k == key && v == value),
            "ops/leased.service lacks {key}={value}"
        );
    }
    // leased reads /proc/sys/kernel/random/boot_id; the guard reads /proc/PID/stat.
    assert!(!set.iter().any(|(k, _)| k == "ProcSubset"));
}

#[test]
fn each_client_drop_in_scores_at_most_3_0_and_relaxes_only_client_settings() {
    // What a client may need that the unit denies; everything else stays as the unit says.
    const RELAXABLE: &[&str] = &[
        "MemoryDenyWriteExecute",
        "RestrictAddressFamilies",
        "StateDirectory",
        "StateDirectoryMode",
        "LogsDirectory",
        "LogsDirectoryMode",
        "CacheDirectory",
        "CacheDirectoryMode",
        "ReadWritePaths",
        "LimitNOFILE",
    ];
    for drop_in in drop_ins() {
        let name = drop_in.file_name().unwrap().to_string_lossy().into_owned();
        let set = settings(&read(&drop_in));
        for (key, value) in &set {
            assert!(
                RELAXABLE.contains(&key.as_str()),
                "{name} sets {key}={value}: a drop-in may relax only {RELAXABLE:?}"
            );
        }
        let (_dir, unit) = staged_unit(Some(&drop_in), None);
        let (score, report) = exposure(&unit);
        eprintln!("systemd-analyze security: ops/leased.service + ops/clients/{name} {score}");
        assert!(
            score <= DROP_IN_MAX_EXPOSURE,
            "ops/leased.service with {name} rates {score} > {DROP_IN_MAX_EXPOSURE}:\n{report}"
        );
        // The drop-in was read: writable and executable memory is flagged exactly when it
        // allows it.
        let allows_wx = set
            .iter()
            .any(|(k, v)| k == "MemoryDenyWriteExecute" && v == "no");
        assert_eq!(
            flagged(&report, "MemoryDenyWriteExecute="),
            allows_wx,
            "{name}: systemd-analyze did not apply the drop-in:\n{report}"
        );
    }
}

#[test]
fn systemd_analyze_verify_accepts_the_unit_and_each_drop_in() {
    // verify checks that ExecStart's binary exists: any executable stands in for the
    // package's /usr/bin/leased, which this machine need not have.
    let exe = std::env::current_exe().unwrap();
    let mut cases: Vec<Option<PathBuf>> = vec![None];
    cases.extend(drop_ins().into_iter().map(Some));
    for drop_in in cases {
        let (_dir, unit) = staged_unit(drop_in.as_deref(), Some(&exe));
        let out = run(
            systemd_analyze()
                .args(["verify", "--man=no", "--no-pager"])
                .arg(&unit)
                .env("SYSTEMD_COLORS", "0"),
            "systemd-analyze",
        );
        // An unknown key or a bad value is a warning on stderr with exit status 0.
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify of ops/leased.service with {drop_in:?}: {}\n{}",
            out.status,
            text(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Cloud-init.

fn cloud_init_yaml() -> PathBuf {
    root().join("ops/cloud-init/validator.yaml")
}

fn cloud_init_schema(file: &Path) -> Output {
    run(
        tools::cloud_init()
            .args(["schema", "--config-file"])
            .arg(file),
        "cloud-init",
    )
}

#[test]
fn cloud_init_schema_accepts_the_validator_config() {
    let out = cloud_init_schema(&cloud_init_yaml());
    assert!(
        out.status.success() && text(&out.stdout).contains("Valid cloud-config"),
        "cloud-init schema rejected ops/cloud-init/validator.yaml ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    // And it is a real check: a type error in the same file is refused.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        read(&cloud_init_yaml()).replace("runcmd:\n  - [", "runcmd: 5\nx:\n  - ["),
    )
    .unwrap();
    let out = cloud_init_schema(&broken);
    assert!(
        !out.status.success(),
        "cloud-init schema accepted runcmd: 5:\n{}",
        text(&out.stdout)
    );
}

/// The files validator.yaml writes, path → content, read with the YAML reader of
/// cloud-init's own Python (PyYAML from `.tools/deb`).
fn cloud_init_document() -> Value {
    let script = "import json, sys, yaml\n\
                  json.dump(yaml.safe_load(open(sys.argv[1], encoding='utf-8')), sys.stdout)\n";
    let mut python = tools::cloud_init_python();
    python.arg("-c").arg(script).arg(cloud_init_yaml());
    let out = run(&mut python, "cloud-init's Python");
    assert!(
        out.status.success(),
        "cannot read validator.yaml: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("validator.yaml as JSON")
}

fn written_file(doc: &Value, path: &str) -> String {
    doc["write_files"]
        .as_array()
        .expect("write_files")
        .iter()
        .find(|f| f["path"] == path)
        .and_then(|f| f["content"].as_str())
        .unwrap_or_else(|| panic!("validator.yaml writes no {path}"))
        .to_owned()
}

#[test]
fn the_validator_config_renders_a_leased_toml_that_leased_accepts() {
    let doc = cloud_init_document();
    let dir = tempfile::tempdir().unwrap();
    let env = written_file(&doc, "/etc/leased/provision.env");
    let template = written_file(&doc, "/etc/leased/leased.toml.in");
    let script = written_file(&doc, "/usr/local/sbin/leased-provision");
    // The sample values, with two sync peers instead of none.
    let env = env.replace(
        "LEASED_SYNC_WITH=\"\"",
        "LEASED_SYNC_WITH=\"http://10.0.1.5:8545 http://10.0.1.6:8545\"",
    );
    assert!(
        env.contains("10.0.1.6"),
        "provision.env has no LEASED_SYNC_WITH=\"\""
    );
    for (name, content) in [
        ("provision.env", &env),
        ("leased.toml.in", &template),
        ("leased-provision", &script),
    ] {
        std::fs::write(dir.path().join(name), content).unwrap();
    }

    // The script is shellcheck-clean, like every ops script.
    let out = run(
        Command::new(tools::shellcheck())
            .args(["--shell=bash"])
            .arg(dir.path().join("leased-provision")),
        "shellcheck",
    );
    assert!(
        out.status.success(),
        "shellcheck leased-provision:\n{}",
        text(&out.stdout)
    );

    // `render` with the node given, so Azure's metadata service is never asked.
    let out = run(
        Command::new("bash")
            .arg(dir.path().join("leased-provision"))
            .arg("render")
            .env("LEASED_PROVISION_ENV", dir.path().join("provision.env"))
            .env("LEASED_TOML_TEMPLATE", dir.path().join("leased.toml.in"))
            .env("LEASED_NODE", "validators_3"),
        "bash",
    );
    assert!(
        out.status.success(),
        "leased-provision render: {}",
        text(&out.stderr)
    );
    let toml = text(&out.stdout);
    let config = leased::config::Config::parse(&toml, &Default::default())
        .unwrap_or_else(|p| panic!("leased rejects the rendered leased.toml: {p}\n---\n{toml}"));
    assert_eq!(config.node, "validators_3");
    assert_eq!(config.identity.pool, "m0-");
    assert_eq!(
        config.store.leases,
        "blob:https://contosovalidators.blob.core.windows.net/leases"
            .parse()
            .unwrap()
    );
    assert_eq!(
        config.store.secrets,
        "keyvault:https://contoso-validators.vault.azure.net"
            .parse()
            .unwrap()
    );
    assert_eq!(
        config.store.azure.credential,
        shared::azure::CredentialKind::ManagedIdentity
    );
    assert_eq!(
        config.store.azure.managed_identity_client_id.as_deref(),
        Some("00000000-0000-0000-0000-000000000000")
    );
    assert_eq!(
        config.client.sync_with,
        ["http://10.0.1.5:8545", "http://10.0.1.6:8545"]
    );

    // A value that would end its TOML string is refused, not written.
    std::fs::write(
        dir.path().join("provision.env"),
        env.replace("LEASED_POOL=\"m0-\"", "LEASED_POOL='m0-\" x'"),
    )
    .unwrap();
    let out = run(
        Command::new("bash")
            .arg(dir.path().join("leased-provision"))
            .arg("render")
            .env("LEASED_PROVISION_ENV", dir.path().join("provision.env"))
            .env("LEASED_TOML_TEMPLATE", dir.path().join("leased.toml.in"))
            .env("LEASED_NODE", "validators_3"),
        "bash",
    );
    assert!(
        !out.status.success(),
        "a quote in the pool was rendered:\n{}",
        text(&out.stdout)
    );

    // The client's drop-in is ops/clients/geth.conf as it is.
    assert_eq!(
        written_file(&doc, "/etc/systemd/system/leased.service.d/geth.conf"),
        read(&root().join("ops/clients/geth.conf")),
        "validator.yaml's geth drop-in differs from ops/clients/geth.conf"
    );
    // cloud-init runs the script; the script checks the config before enabling the unit.
    assert_eq!(
        doc["runcmd"],
        serde_json::json!([["/usr/local/sbin/leased-provision"]])
    );
    let check = script
        .find("leased check-config --config \"$config\"")
        .expect("leased-provision runs leased check-config");
    let enable = script
        .find("systemctl enable --now leased.service")
        .expect("leased-provision enables leased.service");
    assert!(
        check < enable,
        "leased-provision enables the unit before checking its config"
    );
}

// ---------------------------------------------------------------------------------------
// The template.

/// Built-in role definition ids (the same in every subscription).
const KEY_VAULT_SECRETS_USER: &str = "4633458b-17de-408a-b874-0445c86b69e6";
const KEY_VAULT_SECRETS_OFFICER: &str = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7";
const STORAGE_BLOB_DATA_CONTRIBUTOR: &str = "ba92f5b4-2d11-453d-a403-e96b0029c9fe";
const STORAGE_BLOB_DATA_READER: &str = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1";
/// Roles no one here may get.
const FORBIDDEN: &[(&str, &str)] = &[
    ("Owner", "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"),
    ("Contributor", "b24988ac-6180-42a0-ab88-20f7382dd24c"),
    (
        "Key Vault Administrator",
        "00482a5a-887f-4fb3-b363-3b7fe8e74483",
    ),
];

fn role_id(name: &str) -> Option<&'static str> {
    match name {
        "Key Vault Secrets User" => Some(KEY_VAULT_SECRETS_USER),
        "Key Vault Secrets Officer" => Some(KEY_VAULT_SECRETS_OFFICER),
        "Storage Blob Data Contributor" => Some(STORAGE_BLOB_DATA_CONTRIBUTOR),
        "Storage Blob Data Reader" => Some(STORAGE_BLOB_DATA_READER),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Principal {
    ValidatorVms,
    Pipeline,
    OnCall,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Vault,
    StorageAccount,
    Container,
}

/// One row of the README's "Azure RBAC" table: who, on what, which role. `scopes` lists
/// the scopes the row allows (the pipeline's: the account, or the container).
#[derive(Debug)]
struct Grant {
    who: Principal,
    scopes: Vec<Scope>,
    role: &'static str,
}

/// The README's table, read from the README: the first built-in role each row names is
/// the standing grant (on-call's Contributor for `leased break` is just in time).
fn readme_rbac_table() -> Vec<Grant> {
    let readme = read(&root().join("README.md"));
    let section = readme
        .split_once("### Azure RBAC")
        .expect("README has a section \"### Azure RBAC\"")
        .1;
    let names = [
        "Key Vault Secrets User",
        "Key Vault Secrets Officer",
        "Storage Blob Data Contributor",
        "Storage Blob Data Reader",
    ];
    let mut grants = Vec::new();
    for row in section.lines().take_while(|l| !l.starts_with('#')) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        if cells.len() < 5 || cells[1] == "who" || cells[1].starts_with("---") {
            continue;
        }
        let (who, on, role) = (cells[1], cells[2], cells[3]);
        let who = if who.starts_with("validator VMs") {
            Principal::ValidatorVms
        } else if who.starts_with("deployment pipeline") {
            Principal::Pipeline
        } else if who.starts_with("on-call") {
            Principal::OnCall
        } else {
            panic!("README RBAC table: who is {who:?}?")
        };
        let scopes = if on == "the vault" {
            vec![Scope::Vault]
        } else if on == "the lease container" {
            vec![Scope::Container]
        } else if on.starts_with("the storage account") && on.contains("the container") {
            vec![Scope::StorageAccount, Scope::Container]
        } else {
            panic!("README RBAC table: scope {on:?}?")
        };
        let role = names
            .iter()
            .filter_map(|n| role.find(n).map(|at| (at, *n)))
            .min()
            .map(|(_, n)| role_id(n).unwrap())
            .unwrap_or_else(|| panic!("README RBAC table: no built-in role in {role:?}"));
        grants.push(Grant { who, scopes, role });
    }
    assert_eq!(grants.len(), 5, "README RBAC table rows: {grants:?}");
    grants
}

fn template() -> Value {
    let path = root().join("ops/azure/azuredeploy.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `[variables('NAME')]` inside `expr` replaced by the variable's own expression, once.
fn resolve(template: &Value, expr: &str) -> String {
    let mut out = expr.to_owned();
    if let Some(vars) = template["variables"].as_object() {
        for (name, value) in vars {
            if let Some(v) = value.as_str() {
                out = out.replace(&format!("variables('{name}')"), v.trim_matches(['[', ']']));
            }
        }
        if let Some(roles) = vars.get("roles").and_then(Value::as_object) {
            for (name, id) in roles {
                out = out.replace(
                    &format!("variables('roles').{name}"),
                    &format!("'{}'", id.as_str().unwrap()),
                );
            }
        }
    }
    out
}

/// Every role assignment of the template: who, where, which role.
fn template_grants(t: &Value) -> BTreeSet<(Principal, Scope, String)> {
    let mut found = BTreeSet::new();
    for r in t["resources"].as_array().expect("resources") {
        if r["type"] != "Microsoft.Authorization/roleAssignments" {
            continue;
        }
        let props = &r["properties"];
        let principal = resolve(t, props["principalId"].as_str().expect("principalId"));
        let who = if principal.contains("userAssignedIdentities") {
            Principal::ValidatorVms
        } else if principal.contains("parameters('pipelinePrincipalId')") {
            Principal::Pipeline
        } else if principal.contains("parameters('onCallGroupId')") {
            Principal::OnCall
        } else {
            panic!(
                "role assignment {} for an unknown principal {principal}",
                r["name"]
            )
        };
        // No scope means the resource group: broader than any row of the table.
        let scope = resolve(
            t,
            r["scope"].as_str().unwrap_or_else(|| {
                panic!(
                    "role assignment {} has no scope: the whole resource group",
                    r["name"]
                )
            }),
        );
        let scope =
            if scope.contains("Microsoft.KeyVault/vaults/{0}'") && !scope.contains("/secrets/") {
                Scope::Vault
            } else if scope.contains("/blobServices/default/containers/{1}'") {
                Scope::Container
            } else if scope.contains("Microsoft.Storage/storageAccounts/{0}'") {
                Scope::StorageAccount
            } else {
                panic!(
                    "role assignment {} on an unexpected scope {scope}",
                    r["name"]
                )
            };
        let role = resolve(
            t,
            props["roleDefinitionId"]
                .as_str()
                .expect("roleDefinitionId"),
        );
        let role = [
            KEY_VAULT_SECRETS_USER,
            KEY_VAULT_SECRETS_OFFICER,
            STORAGE_BLOB_DATA_CONTRIBUTOR,
            STORAGE_BLOB_DATA_READER,
        ]
        .into_iter()
        .find(|id| role.contains(id))
        .unwrap_or_else(|| {
            panic!(
                "role assignment {} grants a role outside the README's table: {role}",
                r["name"]
            )
        });
        assert!(
            found.insert((who, scope, role.to_owned())),
            "{who:?} gets {role} on {scope:?} twice"
        );
    }
    found
}

#[test]
fn the_template_grants_the_readme_rbac_table_and_nothing_broader() {
    let t = template();
    let raw = read(&root().join("ops/azure/azuredeploy.json"));
    for (name, id) in FORBIDDEN {
        assert!(!raw.contains(id), "the template mentions {name} ({id})");
    }
    let grants = template_grants(&t);
    let table = readme_rbac_table();
    // Every row of the table is granted, on a scope the row allows.
    for row in &table {
        assert!(
            grants
                .iter()
                .any(|(w, s, r)| *w == row.who && row.scopes.contains(s) && r == row.role),
            "the template lacks {row:?}; it grants {grants:?}"
        );
    }
    // And nothing else: every grant is a row of the table.
    for (who, scope, role) in &grants {
        assert!(
            table
                .iter()
                .any(|row| row.who == *who && row.scopes.contains(scope) && row.role == role),
            "the template grants {who:?} {role} on {scope:?}, which the README's table does not"
        );
    }
    // The VMs never get more than reading secrets.
    assert!(grants
        .iter()
        .filter(|(w, ..)| *w == Principal::ValidatorVms)
        .all(|(_, s, r)| *s != Scope::Vault || r == KEY_VAULT_SECRETS_USER));

    let resource = |kind: &str| -> &Value {
        t["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == kind)
            .unwrap_or_else(|| panic!("the template creates no {kind}"))
    };
    let vault = &resource("Microsoft.KeyVault/vaults")["properties"];
    assert_eq!(vault["enableRbacAuthorization"], true);
    assert_eq!(vault["enableSoftDelete"], true);
    assert_eq!(vault["enablePurgeProtection"], true);
    assert_eq!(vault["accessPolicies"], serde_json::json!([]));
    let storage = &resource("Microsoft.Storage/storageAccounts")["properties"];
    assert_eq!(storage["allowSharedKeyAccess"], false);
    assert_eq!(storage["supportsHttpsTrafficOnly"], true);
    assert_eq!(storage["minimumTlsVersion"], "TLS1_2");
    assert_eq!(storage["allowBlobPublicAccess"], false);
    let container = resource("Microsoft.Storage/storageAccounts/blobServices/containers");
    assert_eq!(container["properties"]["publicAccess"], "None");
    resource("Microsoft.ManagedIdentity/userAssignedIdentities");
    for output in ["secretsSpec", "leasesSpec", "identityClientId"] {
        assert!(
            t["outputs"][output].is_object(),
            "the template outputs no {output}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// deploy.sh.

fn deploy_sh() -> PathBuf {
    root().join("ops/azure/deploy.sh")
}

#[test]
fn deploy_sh_passes_shellcheck() {
    // Default severity: infos and style notes count too. (leased-provision, the script
    // validator.yaml writes, is checked where it is rendered.)
    let out = run(
        Command::new(tools::shellcheck()).arg(deploy_sh()),
        "shellcheck",
    );
    assert!(
        out.status.success(),
        "shellcheck ops/azure/deploy.sh:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A directory with an `az` and an `orchestrator` that only leave a mark that they ran.
fn fake_tools() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for tool in ["az", "orchestrator"] {
        let path = dir.path().join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"$0 $*\" >> '{}/ran'\necho 'fake {tool} must not run' >&2\nexit 1\n",
                dir.path().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

fn deploy(args: &[&str], fakes: &Path) -> Output {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(
        std::iter::once(fakes.to_path_buf()).chain(std::env::split_paths(&path)),
    )
    .unwrap();
    run(
        Command::new(deploy_sh())
            .args(args)
            .env("PATH", path)
            .env_remove("ORCHESTRATOR"),
        "ops/azure/deploy.sh",
    )
}

const AZURE_ARGS: &[&str] = &[
    "--resource-group",
    "rg-member0",
    "--vault",
    "contoso-validators",
    "--storage-account",
    "contosovalidators",
    "--pipeline-principal-id",
    "11111111-1111-1111-1111-111111111111",
    "--on-call-group-id",
    "22222222-2222-2222-2222-222222222222",
    "--location",
    "westeurope",
];

#[test]
fn the_dry_run_prints_every_az_call_and_runs_none() {
    let fakes = fake_tools();
    let mut args = vec!["--dry-run"];
    args.extend(AZURE_ARGS);
    args.extend([
        "--",
        "--member",
        "0",
        "--validators",
        "4",
        "--out",
        "out dir",
    ]);
    let out = deploy(&args, fakes.path());
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "deploy.sh --dry-run: {}\n{stdout}{}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        !fakes.path().join("ran").exists(),
        "the dry run ran: {}",
        read(&fakes.path().join("ran"))
    );
    let template = root().join("ops/azure/azuredeploy.json");
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("dry-run: "))
        .collect();
    let expected = [
        "dry-run: az account show".to_owned(),
        "dry-run: az group create --name rg-member0 --location westeurope".to_owned(),
        format!(
            "dry-run: az deployment group create --resource-group rg-member0 --name leased-member \
             --mode Incremental --template-file {} --parameters vaultName=contoso-validators \
             storageAccountName=contosovalidators containerName=leases \
             identityName=leased-validators \
             pipelinePrincipalId=11111111-1111-1111-1111-111111111111 \
             onCallGroupId=22222222-2222-2222-2222-222222222222",
            template.display()
        ),
        "dry-run: orchestrator init --secrets keyvault:https://contoso-validators.vault.azure.net \
         --leases blob:https://contosovalidators.blob.core.windows.net/leases --publish \
         --member 0 --validators 4 --out out\\ dir"
            .to_owned(),
    ];
    assert_eq!(lines.len(), expected.len(), "dry-run lines:\n{stdout}");
    for (line, want) in lines.iter().zip(&expected) {
        assert!(
            line.starts_with(want.as_str()),
            "expected {want:?}\n     got {line:?}"
        );
    }

    // The fake az does catch a call: without --dry-run the script runs it, and fails.
    let out = deploy(&args[1..], fakes.path());
    assert!(!out.status.success());
    assert!(read(&fakes.path().join("ran")).contains("az account show"));

    // --help, and a usage error is exit 64 naming what is missing.
    let out = deploy(&["--help"], fakes.path());
    assert!(out.status.success() && text(&out.stdout).contains("--dry-run"));
    let out = deploy(&["--vault", "v"], fakes.path());
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("--resource-group"),
        "{}",
        text(&out.stderr)
    );
}

const ADMIN: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

#[test]
fn the_pipeline_in_local_mode_provisions_a_member_on_azurite_and_the_key_vault_double() {
    let az = Azurite::start();
    let kv = KvDouble::start();
    let work = tempfile::tempdir().unwrap();
    let secret_file = work.path().join("pipeline-sp-secret");
    std::fs::write(&secret_file, "not-a-real-secret\n").unwrap();
    // The service principal's credential, as the pipeline's --config holds it.
    let config = work.path().join("pipeline.toml");
    let azure_table = format!(
        "credential = \"client-secret\"\ntenant_id = {:?}\n\
         client_id = \"00000000-0000-0000-0000-0000000000aa\"\nclient_secret_file = {:?}\n\
         authority_host = {:?}\nca_file = {:?}\nconnection_string = {:?}\n",
        TENANT_ID,
        secret_file.display().to_string(),
        kv.url(),
        kv.ca_file().display().to_string(),
        az.connection_string(),
    );
    std::fs::write(&config, format!("[azure]\n{azure_table}")).unwrap();
    let leases = format!("blob:{}/validators", az.blob_endpoint());
    let secrets = format!("keyvault:{}", kv.url());
    let out_dir = work.path().join("out");
    let orchestrator = env!("CARGO_BIN_EXE_orchestrator-host");
    let config_s = config.display().to_string();
    let out_s = out_dir.display().to_string();
    let args = [
        "--local-secrets",
        &secrets,
        "--local-leases",
        &leases,
        "--orchestrator",
        orchestrator,
        "--",
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
    // No az on this path either: local mode must not call it.
    let fakes = fake_tools();
    let first = deploy(&args, fakes.path());
    assert!(
        first.status.success(),
        "deploy.sh (local mode): {}\n{}{}",
        first.status,
        text(&first.stdout),
        text(&first.stderr)
    );
    assert!(!fakes.path().join("ran").exists(), "local mode ran az");
    assert!(
        text(&first.stdout).contains(&format!("secrets = \"{secrets}\"")),
        "{}",
        text(&first.stdout)
    );

    let deployment: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("deployment-output.json")).unwrap())
            .unwrap();
    let identities: Vec<String> = deployment["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(identities, ["m0-v0", "m0-v1"]);

    // What the stores hold: a secret and a lease record per identity, and the network
    // info published beside the records (--publish).
    let table = shared::config::parse(&azure_table).unwrap();
    let mut report = shared::config::Report::default();
    let azure = shared::azure::AzureOptions::read(
        &mut report,
        "azure",
        shared::config::Section::read(table),
    );
    assert!(report.is_empty(), "{:?}", report.problems());
    let azure = azure.unwrap();
    let (records, listed, info) = integration_tests::on_own_runtime(async {
        let l = leases
            .parse::<shared::spec::LeaseStoreSpec>()
            .unwrap()
            .open(&azure)
            .unwrap();
        let s = secrets
            .parse::<shared::spec::SecretStoreSpec>()
            .unwrap()
            .open(&azure)
            .unwrap();
        (
            l.list().await.unwrap(),
            s.list().await.unwrap(),
            l.get_network_info(1 << 20).await.unwrap(),
        )
    });
    let mut ids: Vec<String> = records.iter().map(|r| r.identity.to_string()).collect();
    ids.sort();
    assert_eq!(ids, identities);
    assert_eq!(listed.len(), 2);
    let info: Value = serde_json::from_slice(&info.expect("no network info was published"))
        .expect("the published network info is JSON");
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("networkinfo.json")).unwrap()).unwrap();
    assert_eq!(info, on_disk);

    // A second run of the same pipeline changes nothing.
    let versions: Vec<usize> = identities.iter().map(|id| kv.versions(id).len()).collect();
    let second = deploy(&args, fakes.path());
    assert!(
        second.status.success(),
        "second run: {}\n{}",
        second.status,
        text(&second.stderr)
    );
    let said = format!("{}{}", text(&second.stdout), text(&second.stderr));
    assert!(said.contains("0 created, 2 already existed"), "{said}");
    let again: Vec<usize> = identities.iter().map(|id| kv.versions(id).len()).collect();
    assert_eq!(versions, again, "the second run wrote a secret");
}
