//! A wall-clock step on one host cannot put two signers on one identity: real `leased`
//! daemons on one `sqlite:` lease file, one of them running with its wall clock 30 s ahead
//! of the other's (more than the lease, D = 15 s).
//!
//! The step comes from libfaketime, preloaded into that daemon alone with
//! `FAKETIME_DONT_FAKE_MONOTONIC=1`: its `CLOCK_REALTIME` reads 30 s ahead while its
//! monotonic clocks stay the host's, which is what a forward step of the host clock does to
//! a process that started before it. `ops/install-test-deps.sh` unpacks the library into
//! `.tools/deb`; without it this test fails, naming that script.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use integration_tests::cluster::{mono_now, Cluster, ClusterSpec};
use integration_tests::tools;
use shared::azure::AzureOptions;
use shared::lease::meta;
use shared::spec::LeaseStoreSpec;

const D: Duration = Duration::from_secs(15);
const STEP_SECS: u64 = 30;
/// How long the stepped standby is watched while the holder runs: many standby polls
/// (500 ms) and at least one renew of the holder (every D/3 = 5 s).
const WATCH: Duration = Duration::from_secs(7);

#[test]
fn item05_a_standby_whose_wall_clock_runs_30s_ahead_never_takes_a_held_identity() {
    let faketime = tools::libfaketime();
    let mut cluster = Cluster::start(ClusterSpec {
        identities: 1,
        daemons: 1,
        duration_secs: D.as_secs(),
        ..ClusterSpec::default()
    });
    let signers = cluster.wait_all_signing(0, Duration::from_secs(20));
    let (address, holder) = signers.into_iter().next().expect("one identity");

    let env = [
        ("LD_PRELOAD", faketime.display().to_string()),
        ("FAKETIME", format!("+{STEP_SECS}s")),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let watch_from = mono_now();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let standby = cluster.spawn_daemon_with("vm-stepped", |text| text, &env, None);
    cluster.daemons.push(standby);
    std::thread::sleep(WATCH);

    // A standby that saw the holder's lease as expired would have taken it, and its client
    // would have signed until the holder's next renew failed.
    cluster.assert_no_overlap();
    let stepped_signed = cluster
        .sign_lines()
        .into_iter()
        .any(|l| l.node == "vm-stepped");
    assert!(
        !stepped_signed,
        "the stepped standby signed while {holder} held the identity\n{}",
        cluster.diagnostics()
    );
    assert!(
        cluster.daemon("vm-stepped").is_running(),
        "the stepped standby exited\n{}",
        cluster.diagnostics()
    );
    let held_on = cluster
        .signers_since(mono_now() - 1_000_000_000)
        .get(&address)
        .map(|l| l.node.clone());
    assert_eq!(
        held_on.as_deref(),
        Some(holder.as_str()),
        "the holder stopped signing\n{}",
        cluster.diagnostics()
    );

    // The stepped standby still works: it takes over from a dead holder, after the lease
    // runs out on the store's clock.
    let killed_at = mono_now();
    cluster.daemon(&holder).kill9();
    let taken = cluster.wait_taken_over(&address, &holder, killed_at, D + Duration::from_secs(4));
    assert_eq!(taken.node, "vm-stepped");
    cluster.assert_no_overlap();

    // And its wall clock really was ahead: it wrote acquired-at on that clock. (Its
    // client's sign-log times are `CLOCK_MONOTONIC`, and the overlap check above read them
    // on the same scale as the holder's.)
    let leases = LeaseStoreSpec::Sqlite(cluster.dir.path().join("leases.db"));
    let name = cluster.identities[0].0.clone();
    let record = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = leases.open(&AzureOptions::default()).unwrap();
            // The daemon writes its metadata just after acquiring.
            for _ in 0..100 {
                let rec = store.read(&name).await.unwrap();
                if rec.metadata.get(meta::HOLDER_NODE).map(String::as_str) == Some("vm-stepped") {
                    return Some(rec);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None
        })
        .expect("the stepped standby wrote its metadata");
    let acquired_at: u64 = record.metadata[meta::ACQUIRED_AT].parse().unwrap();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ahead = acquired_at as i64 - wall as i64;
    assert!(
        (STEP_SECS as i64 - 5..=STEP_SECS as i64 + 5).contains(&ahead),
        "the stepped daemon's wall clock was {ahead} s ahead, not about {STEP_SECS} s: \
         libfaketime did not step it"
    );
    eprintln!(
        "wall clock +{STEP_SECS} s: the stepped standby stayed a standby for {:.1} s, \
         then took over {:.1} s after the holder's kill -9",
        (killed_at - watch_from) as f64 / 1e9,
        (taken.at - killed_at) as f64 / 1e9
    );
}
