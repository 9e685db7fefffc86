//! The on-call commands against real daemons: `leased break` (the `leased-host` binary, the
//! same command line) on a SQLite lease store that two `leased` daemons share, one identity,
//! one holder and one standby. What is checked is what matters at 3 a.m.: a break that could
//! let two VMs sign is refused unless asked for in so many words, and when it is asked for,
//! the window it prints bounds what really happens.
//!
//! The scenarios run one at a time: they measure signing intervals on a small machine.

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use integration_tests::cluster::{mono_now, wait_for, Cluster, ClusterSpec, SignLine};

static SERIAL: Mutex<()> = Mutex::new(());

/// The cluster's lease duration D.
const D: Duration = Duration::from_secs(15);
/// The renew period R = D/3: within one R of a break a reachable holder has seen it.
const R: Duration = Duration::from_secs(5);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// One identity, a holder and a standby, with the identity signing.
fn holder_and_standby() -> (Cluster, String, String) {
    let cluster = Cluster::start(ClusterSpec {
        identities: 1,
        daemons: 2,
        duration_secs: D.as_secs(),
        ..ClusterSpec::default()
    });
    let signers = cluster.wait_all_signing(0, Duration::from_secs(20));
    let (address, holder) = signers.into_iter().next().expect("one identity");
    (cluster, address, holder)
}

fn leases_spec(cluster: &Cluster) -> String {
    format!("sqlite:{}", cluster.dir.path().join("leases.db").display())
}

/// Runs `leased ARGS`; exit code, stdout, stderr.
fn leased(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(integration_tests::bin_path("leased-host"))
        .args(args)
        .output()
        .expect("run leased-host");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn lines_of(cluster: &Cluster, address: &str, since: u64) -> Vec<SignLine> {
    cluster
        .sign_lines()
        .into_iter()
        .filter(|l| l.address == address && l.at > since)
        .collect()
}

/// `text` with every run of whitespace made one space, so phrases match across wraps.
fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The whole seconds N in the first `BEFORE N AFTER` of `text` (flattened).
fn number_between(text: &str, before: &str, after: &str) -> Option<u64> {
    let text = flat(text);
    let rest = &text[text.find(before)? + before.len()..];
    rest[..rest.find(after)?].trim().parse().ok()
}

fn secs(nanos: u64) -> f64 {
    Duration::from_nanos(nanos).as_secs_f64()
}

#[test]
fn item04_break_with_period_0_on_a_live_holder_is_refused_and_the_holder_keeps_signing() {
    let _serial = serial();
    let (cluster, address, holder) = holder_and_standby();
    let leases = leases_spec(&cluster);
    let asked_at = mono_now();
    let (code, stdout, stderr) = leased(&[
        "break", "m0-v0", "--leases", &leases, "--yes", "--period", "0",
    ]);
    eprintln!("leased break m0-v0 --yes --period 0: exit {code}\n{stdout}{stderr}");

    // Past the holder's next renew, and then long enough for a standby's hand-off: had the
    // lease been broken, the holder would have fenced and the standby would be signing.
    std::thread::sleep(R + Duration::from_secs(2));
    let report = cluster.assert_no_overlap();
    let after = lines_of(&cluster, &address, asked_at);
    let others: Vec<&SignLine> = after.iter().filter(|l| l.node != holder).collect();
    assert!(
        others.is_empty(),
        "another node signed with {address} after the refused break: {:?}\n{}",
        others.first(),
        cluster.diagnostics()
    );
    let kept_until = after.iter().map(|l| l.at).max().unwrap_or(asked_at);
    assert!(
        secs(kept_until - asked_at) > R.as_secs_f64(),
        "{holder} stopped signing {:.3} s after the command\n{}",
        secs(kept_until - asked_at),
        cluster.diagnostics()
    );

    assert_eq!(code, 64, "refused as a usage error:\n{stdout}{stderr}");
    let text = flat(&stdout);
    assert!(text.starts_with("Not breaking m0-v0"), "{stdout}");
    assert!(text.contains("with two signers"), "the window: {stdout}");
    let retry = format!("leased break m0-v0 --leases {leases} --yes --period 0 --force-overlap");
    assert!(text.contains(&retry), "the exact command:\n{stdout}");
    assert!(stderr.contains("--force-overlap"), "{stderr}");
    let holders = cluster.holders();
    assert_eq!(
        holders.get("m0-v0"),
        Some(&holder),
        "the lease is untouched: {holders:?}"
    );
    eprintln!(
        "{holder} signed on for {:.3} s after the refused break; {} signing intervals, none overlapping",
        secs(kept_until - asked_at),
        report.intervals.len()
    );
}

#[test]
fn item04_break_with_force_overlap_on_a_frozen_holder_prints_a_window_that_bounds_the_overlap() {
    let _serial = serial();
    let (mut cluster, address, holder) = holder_and_standby();
    let leases = leases_spec(&cluster);
    // Frozen, its daemon never sees the break; only its guard stops its client, at F.
    cluster.daemon(&holder).stop();
    let asked_at = mono_now();
    let (code, stdout, stderr) = leased(&[
        "break",
        "m0-v0",
        "--leases",
        &leases,
        "--yes",
        "--period",
        "0",
        "--force-overlap",
    ]);
    eprintln!("leased break m0-v0 --yes --period 0 --force-overlap: exit {code}\n{stdout}{stderr}");
    assert_eq!(code, 0, "{stdout}{stderr}");
    let holder_for = number_between(&stdout, "may sign until up to", "s from now")
        .unwrap_or_else(|| panic!("no holder bound in:\n{stdout}"));
    let both_for = number_between(&stdout, ": up to", "s with two signers")
        .unwrap_or_else(|| panic!("no overlap bound in:\n{stdout}"));
    assert!(flat(&stdout).contains("WARNING"), "{stdout}");
    assert!(
        holder_for <= D.as_secs() && both_for <= holder_for,
        "{stdout}"
    );

    let taken = cluster.wait_taken_over(&address, &holder, asked_at, Duration::from_secs(5));
    // The holder's guard stops its client by F; give it until the bound it was told, plus
    // one signing period and scheduling slack, to fall silent.
    let silent = wait_for(Duration::from_secs(holder_for + 2), || {
        let last = lines_of(&cluster, &address, asked_at)
            .iter()
            .filter(|l| l.node == holder)
            .map(|l| l.at)
            .max()?;
        (mono_now() - last > 500_000_000).then_some(last)
    });
    let last = silent.unwrap_or_else(|| {
        panic!(
            "{holder}'s client still signs {holder_for} s after the break\n{}",
            cluster.diagnostics()
        )
    });
    let slack = 0.3;
    assert!(
        secs(last - asked_at) <= holder_for as f64 + slack,
        "{holder} signed {:.3} s after the break; the warning said up to {holder_for} s",
        secs(last - asked_at)
    );
    let overlap = secs(last.saturating_sub(taken.at));
    assert!(
        overlap <= both_for as f64 + slack,
        "two signers for {overlap:.3} s; the warning said up to {both_for} s"
    );
    eprintln!(
        "holder silent {:.3} s after the forced break (bound {holder_for} s); standby signing \
         after {:.3} s; two signers for {overlap:.3} s (bound {both_for} s)",
        secs(last - asked_at),
        secs(taken.at - asked_at)
    );
}

// ---------------------------------------------------------------------------------------
// `leased check-config` and `leased status --secrets/--watch` on dir: and sqlite:, as the
// binary runs them. No daemons: `orchestrator init` provisions the stores.

const ADMIN: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

/// A member provisioned by `orchestrator init` (2 identities m0-v0, m0-v1) on `dir:` and
/// `sqlite:` under a temporary directory: (dir, secrets spec, leases spec, [(id, address)]).
fn provisioned() -> (tempfile::TempDir, String, String, Vec<(String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let secrets = format!("dir:{}", dir.path().join("secrets").display());
    let leases = format!("sqlite:{}", dir.path().join("leases.db").display());
    let out = dir.path().join("out");
    let run = Command::new(integration_tests::bin_path("orchestrator-host"))
        .args([
            "init",
            "--member",
            "0",
            "--validators",
            "2",
            "--admin",
            ADMIN,
        ])
        .args([
            "--flavour",
            "clique",
            "--secrets",
            &secrets,
            "--leases",
            &leases,
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let deployment: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("deployment-output.json")).unwrap())
            .unwrap();
    let ids = deployment["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["address"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (dir, secrets, leases, ids)
}

/// A leased.toml under `dir` with these settings (TOML values).
fn write_config(
    dir: &std::path::Path,
    leases: &str,
    secrets: &str,
    pool: &str,
    command: &str,
) -> String {
    let path = dir.join("leased.toml");
    std::fs::write(
        &path,
        format!(
            "node = \"vm-1\"\nruntime_dir = {:?}\n[store]\nleases = {leases:?}\nsecrets = \
             {secrets:?}\n[identity]\npool = {pool:?}\n[lease]\nduration_secs = 15\n[client]\n\
             format = \"raw-hex\"\ncommand = [{command:?}, \"--key={{key_file}}\"]\n[http]\n\
             listen = \"127.0.0.1:0\"\n",
            dir.join("run").display().to_string()
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// Every secret value in a `dir:` store's files, for checking that none is printed.
fn secret_values(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir.join("secrets"))
        .unwrap()
        .map(|e| {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            let (_, value) = shared::secret::dir::decode_secret_file(&bytes).unwrap();
            value.expose().to_owned()
        })
        .collect()
}

#[test]
fn check_config_passes_on_a_provisioned_member_and_prints_no_secret() {
    let (dir, secrets, leases, ids) = provisioned();
    let client = integration_tests::bin_path("standin-client");
    let config = write_config(
        dir.path(),
        &leases,
        &secrets,
        "m0-",
        &client.display().to_string(),
    );
    let (code, stdout, stderr) = leased(&["check-config", "--config", &config]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("2 identities of pool \"m0-\" (m0-v0, m0-v1)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("address {}", ids[0].1)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("client command {} found", client.display())),
        "{stdout}"
    );
    for value in secret_values(dir.path()) {
        assert!(
            !stdout.contains(&value) && !stderr.contains(&value),
            "a secret value was printed"
        );
    }
    // Read-only: the check wrote nothing to the stores.
    let (code, status, _) = leased(&["status", "--leases", &leases, "--json"]);
    assert_eq!(code, 0);
    assert!(status.matches("\"available\"").count() == 2, "{status}");
}

#[test]
fn check_config_lists_every_problem_at_once() {
    let (dir, secrets, _, _) = provisioned();
    // A pool nobody provisioned, a client that is not installed, a lease store not there.
    let missing = format!("sqlite:{}", dir.path().join("nope.db").display());
    let config = write_config(dir.path(), &missing, &secrets, "m7-", "no-such-client-xyz");
    let (code, stdout, stderr) = leased(&["check-config", "--config", &config]);
    assert_eq!(code, 64, "{stdout}\n{stderr}");
    let text = flat(&stderr);
    assert!(text.contains("has 3 problems"), "{stderr}");
    assert!(
        text.contains("no-such-client-xyz is not found on PATH"),
        "{stderr}"
    );
    assert!(text.contains("no lease store file"), "{stderr}");
    assert!(text.contains("no secret of pool \"m7-\""), "{stderr}");
    assert!(
        !dir.path().join("nope.db").exists(),
        "check-config created a lease store"
    );

    // A file the reader refuses: every bad setting is named, and nothing is reached.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[store]\nleases = \"s3:x\"\nsecrets = \"dir:/x\"\n[identity]\npool = \"\"\n[lease]\n\
         duration_secs = 5\n[client]\nformat = \"raw-hex\"\ncommand = [\"geth\"]\n",
    )
    .unwrap();
    let (code, _, stderr) = leased(&["check-config", "--config", &bad.display().to_string()]);
    assert_eq!(code, 64, "{stderr}");
    for key in ["store.leases", "identity.pool", "lease.duration_secs"] {
        assert!(stderr.contains(key), "{key} not named:\n{stderr}");
    }
}

#[test]
fn status_shows_the_addresses_of_unheld_identities_from_the_secrets() {
    let (dir, secrets, leases, ids) = provisioned();
    let (code, stdout, stderr) = leased(&[
        "status",
        "--leases",
        &leases,
        "--secrets",
        &secrets,
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for (row, (id, address)) in rows.as_array().unwrap().iter().zip(&ids) {
        assert_eq!(row["identity"], id.as_str());
        assert_eq!(row["state"], "available");
        assert_eq!(row["address"], address.as_str(), "{row}");
    }
    for value in secret_values(dir.path()) {
        assert!(!stdout.contains(&value), "a secret value was printed");
    }
    let (_, table, _) = leased(&["status", "--leases", &leases, "--secrets", &secrets]);
    assert!(table.contains(&ids[1].1), "{table}");
    // Without --secrets, as before.
    let (_, stdout, _) = leased(&["status", "--leases", &leases, "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["address"].is_null()),
        "{stdout}"
    );
}

#[test]
fn status_watch_redraws_every_second_and_ctrl_c_ends_it_with_0() {
    use std::io::Read;
    let (_dir, _, leases, _) = provisioned();
    let mut child = Command::new(integration_tests::bin_path("leased-host"))
        .args(["status", "--leases", &leases, "--watch"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2600));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{out}");
    // Not a terminal: frames one after another, no escape codes.
    let frames = out.matches("leased status at ").count();
    assert!((2..=4).contains(&frames), "{frames} frames:\n{out}");
    assert_eq!(
        out.matches("2 identities: 2 available").count(),
        frames,
        "{out}"
    );
    assert!(!out.contains('\x1b'), "{out:?}");
}
