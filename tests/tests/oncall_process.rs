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
