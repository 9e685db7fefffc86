//! The etcd baseline of the fleet benchmark (`integration_tests::etcd_lock`) against the
//! real etcd 3.4: one crash and one graceful trial, asserting what etcd does, which is not
//! what `leased` does. Needs etcd from `ops/install-test-deps.sh`; without it the test
//! fails and says so. About a minute, most of it the graceful trial giving up.

use integration_tests::etcd_lock::{
    crash_trials, graceful_trials, Etcd, GIVE_UP, LOCK_TTL_SECS, OBSERVE,
};

#[test]
fn etcdctl_lock_moves_a_crashed_holders_lock_but_stops_no_client() {
    let etcd = Etcd::start();
    let ttl = LOCK_TTL_SECS as f64;
    // The holder signs only while the standby watches: any overlap is the holder's.
    let whole_window = OBSERVE.as_secs_f64() - 0.1;

    // SIGKILL of the holder's etcdctl: its session lease is no longer kept alive, so the
    // lock moves when the lease runs out, never before, and within a TTL (plus etcd's
    // expiry tick and the standby's start). The holder's client is orphaned, not stopped.
    let crash = crash_trials(&etcd, 1).remove(0);
    eprintln!("ETCD_FIGURES crash: {crash:?}");
    let latency = crash
        .latency
        .expect("the standby took the lock after the crash");
    let remaining = crash
        .remaining_at_fault
        .expect("etcd told the holder's lease time to live");
    assert!((0.0..=ttl).contains(&remaining), "{crash:?}");
    // etcd rounds the time left down, so the lease ran at least `remaining` more.
    assert!(latency >= remaining, "the lock moved early: {crash:?}");
    assert!(latency <= ttl + 3.0, "{crash:?}");
    assert!(!crash.holder_etcdctl_survived, "{crash:?}");
    assert!(crash.holder_client_survived, "{crash:?}");
    assert!(
        crash.overlap_secs.is_some_and(|o| o >= whole_window),
        "the orphaned client should have kept signing beside the standby: {crash:?}"
    );

    // SIGTERM of the holder's etcdctl: etcdctl 3.4 catches it (to abandon a lock it is
    // still waiting for) but, once it runs the command, only waits for the command. So
    // the holder's etcdctl, its session and its client all carry on, and the standby
    // never gets the lock: a graceful stop must stop the client (the whole group) instead.
    let graceful = graceful_trials(&etcd, 1).remove(0);
    eprintln!("ETCD_FIGURES graceful: {graceful:?}");
    assert_eq!(
        graceful.latency, None,
        "the standby took the lock within {GIVE_UP:?} of a SIGTERM: {graceful:?}"
    );
    assert_eq!(graceful.overlap_secs, None, "{graceful:?}");
    assert!(graceful.holder_etcdctl_survived, "{graceful:?}");
    assert!(graceful.holder_client_survived, "{graceful:?}");
}
