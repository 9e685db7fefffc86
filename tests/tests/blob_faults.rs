//! Storage faults under real `leased` daemons on Azure Blob leases: Azurite behind a
//! [`FaultProxy`], every daemon's `blob:` lease store pointed at the proxy (secrets stay in
//! a local `dir:`), each daemon supervising a stand-in client that logs its signing.
//!
//! The faults: storage that stops answering altogether, a renew that hangs, a 503 storm
//! longer than the margin, a renew that reaches the store only after the fence deadline,
//! and a lease record or its whole container deleted under the holder. What every scenario
//! proves is the protocol's timing (docs/architecture.md), with D = 15 s, M = 5 s, R = 5 s and
//! the default fence grace M/4:
//!
//! - a holder whose renews stop succeeding has its client stopped by
//!   `F = t_ok + D − M` (plus the grace, should SIGTERM not suffice);
//! - after a fence the lease is never renewed back: signing resumes only after a fresh
//!   acquire;
//! - a lost record fences at the next renew, not at F;
//! - and, at the end of each, the overlap checker over the sign log: for every identity,
//!   the signing intervals of different daemons never overlap.
//!
//! `t_ok` is measured at the proxy: when it received the last acquire or renew of the
//! record that Azurite accepted and whose answer went back before the fence. The daemon
//! sent that request a little earlier, so its own `F` is no later than the one computed
//! here and the bound holds for it too. The proxy stamps `Instant`s and the sign log
//! `CLOCK_MONOTONIC` nanoseconds; on Linux both read the same clock (see [`MonoClock`]).
//!
//! The scenarios run one at a time (they measure on a small machine); each starts its own
//! Azurite and proxy and uses them throughout. Nothing here talks to anything but
//! 127.0.0.1.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::thread::sleep;
use std::time::{Duration, Instant};

use integration_tests::azurite::{self, Azurite, ACCOUNT_NAME};
use integration_tests::cluster::{mono_now, wait_for, Cluster, ClusterSpec, SignLine, Stores};
use integration_tests::fault_proxy::{Action, FaultProxy, Match, ProxiedRequest, Rule};
use integration_tests::overlap::{self, Signing};
use shared::azure::{AzureOptions, Budget};
use shared::lease::blob::BlobLeaseStore;
use shared::lease::{LeaseDuration, LeaseError, LeaseStore, LostReason};
use shared::Name;

static SERIAL: Mutex<()> = Mutex::new(());

/// D, the lease duration.
const D: Duration = Duration::from_secs(15);
/// M, the default margin: D/3.
const M: Duration = Duration::from_secs(5);
/// R, the default renew period: D/3.
const R: Duration = Duration::from_secs(5);
/// The default fence grace, M/4: SIGTERM to SIGKILL.
const GRACE: Duration = Duration::from_millis(1250);
/// The bound on t_ok → client stopped: D − M, plus the grace should SIGTERM not suffice.
const FENCE_BOUND: Duration = D.saturating_sub(M).saturating_add(GRACE);

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn secs(nanos: u64) -> f64 {
    Duration::from_nanos(nanos).as_secs_f64()
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).expect("a test duration fits in u64 nanoseconds")
}

/// Maps the proxy's `Instant`s onto the sign log's `CLOCK_MONOTONIC` nanoseconds.
///
/// `std::time::Instant` reads `CLOCK_MONOTONIC` on Linux, so the two differ by a constant
/// offset, fixed here by one pair of readings taken back to back (microseconds apart).
#[derive(Debug, Clone, Copy)]
struct MonoClock {
    instant: Instant,
    mono: u64,
}

impl MonoClock {
    fn sample() -> MonoClock {
        let instant = Instant::now();
        let mono = mono_now();
        MonoClock { instant, mono }
    }

    fn mono(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.instant) {
            Some(after) => self.mono + nanos(after),
            None => self.mono - nanos(self.instant - at),
        }
    }
}

/// One scenario's storage: Azurite, the proxy in front of it, the container the daemons'
/// lease records live in, and a local directory for the secrets.
struct Rig {
    az: Azurite,
    proxy: FaultProxy,
    container: String,
    clock: MonoClock,
    secrets: tempfile::TempDir,
    begun: Instant,
}

impl Rig {
    fn start(container: &str) -> Rig {
        let begun = Instant::now();
        let az = Azurite::start();
        let proxy = FaultProxy::start(az.addr());
        Rig {
            az,
            proxy,
            container: container.into(),
            clock: MonoClock::sample(),
            secrets: tempfile::tempdir().expect("a directory for the secrets"),
            begun,
        }
    }

    /// Provisions `identities` fresh identities and starts `daemons` daemons, all on the
    /// proxy; waits until every identity is signing. Returns the cluster and the first
    /// identity with its (lower-case) address.
    fn cluster(&self, identities: usize, daemons: usize) -> (Cluster, Name, String) {
        let connection_string = azurite::connection_string_at(self.proxy.addr());
        let secrets: PathBuf = self.secrets.path().join("secrets");
        let cluster = Cluster::start(ClusterSpec {
            identities,
            daemons,
            duration_secs: D.as_secs(),
            stores: Stores::Specs {
                leases: format!(
                    "blob:http://{}/{ACCOUNT_NAME}/{}",
                    self.proxy.addr(),
                    self.container
                ),
                secrets: format!("dir:{}", secrets.display()),
                azure: Box::new(AzureOptions {
                    connection_string: Some(connection_string.clone()),
                    ..Default::default()
                }),
                azure_toml: format!("connection_string = {connection_string:?}"),
            },
            ..ClusterSpec::default()
        });
        cluster.wait_all_signing(0, Duration::from_secs(40));
        let (identity, address) = cluster.identities[0].clone();
        (cluster, identity, address.to_string().to_ascii_lowercase())
    }

    fn mono(&self, at: Instant) -> u64 {
        self.clock.mono(at)
    }

    /// The proxy's log entries for lease operations on `identity`'s record (any
    /// `x-ms-lease-action`), in arrival order.
    fn lease_ops(&self, identity: &Name) -> Vec<ProxiedRequest> {
        let record = format!("/{ACCOUNT_NAME}/{}/{identity}?", self.container);
        self.proxy
            .log()
            .into_iter()
            .filter(|r| r.lease_action.is_some() && r.path_and_query.starts_with(&record))
            .collect()
    }

    /// Successful (2xx) lease operations on `identity`'s record.
    fn successes(&self, identity: &Name) -> Vec<ProxiedRequest> {
        self.lease_ops(identity)
            .into_iter()
            .filter(|r| r.upstream_status.is_some_and(|s| (200..300).contains(&s)))
            .collect()
    }

    /// t_ok as the proxy saw it, on the sign log's clock: when the last acquire or renew of
    /// `identity` that Azurite accepted arrived, among those answered before `fenced_at`
    /// (an answer that came back after the fence cannot have moved the daemon's F).
    fn t_ok(&self, identity: &Name, fenced_at: u64) -> u64 {
        self.successes(identity)
            .iter()
            .filter(|r| is_action(r, "acquire") || is_action(r, "renew"))
            .filter(|r| r.responded_at.is_some_and(|t| self.mono(t) <= fenced_at))
            .map(|r| self.mono(r.at))
            .max()
            .unwrap_or_else(|| panic!("no acquire or renew of {identity} succeeded"))
    }

    /// Waits for a renew of `identity` that Azurite accepted and that arrived after
    /// `after`; when it arrived.
    fn wait_renewed(&self, identity: &Name, after: Instant) -> Instant {
        wait_for(R + Duration::from_secs(5), || {
            self.successes(identity)
                .into_iter()
                .find(|r| is_action(r, "renew") && r.at > after && r.responded_at.is_some())
                .map(|r| r.at)
        })
        .unwrap_or_else(|| panic!("no renew of {identity} succeeded within R + 5 s"))
    }

    /// How long the scenario has run.
    fn elapsed(&self) -> f64 {
        self.begun.elapsed().as_secs_f64()
    }
}

fn is_action(r: &ProxiedRequest, action: &str) -> bool {
    r.lease_action
        .as_deref()
        .is_some_and(|a| a.eq_ignore_ascii_case(action))
}

fn describe(rig: &Rig, ops: &[ProxiedRequest]) -> String {
    ops.iter()
        .map(|r| {
            format!(
                "  {:.3} {} {} → {:?}\n",
                secs(rig.mono(r.at)),
                r.lease_action.as_deref().unwrap_or("-"),
                r.action_taken,
                r.upstream_status
            )
        })
        .collect()
}

/// Every line of the sign log, `signing` and `stopped` alike.
fn sign_log(cluster: &Cluster) -> Vec<Signing> {
    let text = std::fs::read_to_string(&cluster.sign_log).unwrap_or_default();
    // A client may be writing its next line right now: only whole lines count.
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    overlap::parse_log("sign.log", whole).expect("the sign log parses")
}

/// The first `signing` line of `address` after `since`, by any node.
fn wait_signing(cluster: &Cluster, address: &str, since: u64, timeout: Duration) -> SignLine {
    wait_for(timeout, || {
        cluster
            .sign_lines()
            .into_iter()
            .find(|l| l.address == address && l.at > since)
    })
    .unwrap_or_else(|| {
        panic!(
            "nobody signed with {address} within {timeout:?}\n{}",
            cluster.diagnostics()
        )
    })
}

/// `signing` lines of `address` in the open interval (`from`, `to`), by any node.
fn signing_between(cluster: &Cluster, address: &str, from: u64, to: u64) -> Vec<SignLine> {
    cluster
        .sign_lines()
        .into_iter()
        .filter(|l| l.address == address && l.at > from && l.at < to)
        .collect()
}

/// How a holder's client ended.
#[derive(Debug, Clone, Copy)]
struct ClientStop {
    /// Its `stopped` line (the guard's SIGTERM reached it), or else its last `signing`
    /// line.
    at: u64,
    /// Its last `signing` line.
    last_signing: u64,
}

/// Waits until `node`'s client for `address` stops after `since`: its `stopped` line, or,
/// should it have been killed outright, its last `signing` line once a second has passed
/// without another.
fn wait_client_stop(
    cluster: &Cluster,
    node: &str,
    address: &str,
    since: u64,
    timeout: Duration,
) -> ClientStop {
    let quiet = nanos(Duration::from_secs(1));
    wait_for(timeout, || {
        let lines: Vec<Signing> = sign_log(cluster)
            .into_iter()
            .filter(|s| s.writer == node && s.identity == address && s.at > since)
            .collect();
        let stopped = lines.iter().find(|s| s.stop).map(|s| s.at);
        // Lines after the stop belong to a later hand-off to the same node.
        let last_signing = lines
            .iter()
            .filter(|s| !s.stop && stopped.is_none_or(|stop| s.at < stop))
            .map(|s| s.at)
            .max()?;
        match stopped {
            Some(at) => Some(ClientStop { at, last_signing }),
            None => (mono_now().saturating_sub(last_signing) > quiet).then_some(ClientStop {
                at: last_signing,
                last_signing,
            }),
        }
    })
    .unwrap_or_else(|| {
        panic!(
            "{node}'s client for {address} did not stop within {timeout:?}\n{}",
            cluster.diagnostics()
        )
    })
}

/// Sleeps until `at` on the sign log's clock.
fn sleep_until_mono(at: u64) {
    let now = mono_now();
    if at > now {
        sleep(Duration::from_nanos(at - now));
    }
}

/// Asserts that t_ok → client stopped is within D − M + grace; the figure, in seconds.
fn assert_fenced_by_f(what: &str, t_ok: u64, stop: ClientStop) -> f64 {
    let took = secs(stop.at.saturating_sub(t_ok));
    eprintln!(
        "{what}: t_ok → client stopped {took:.3} s (last signing line {:.3} s; bound D − M + \
         grace = {:.3} s)",
        secs(stop.last_signing.saturating_sub(t_ok)),
        FENCE_BOUND.as_secs_f64()
    );
    assert!(
        stop.at >= t_ok && took <= FENCE_BOUND.as_secs_f64(),
        "{what}: the client stopped {took:.3} s after t_ok, bound {:.3} s",
        FENCE_BOUND.as_secs_f64()
    );
    took
}

/// How many times `node` fenced `identity` for `reason`, by its log.
fn fences(cluster: &Cluster, node: &str, identity: &Name, reason: &str) -> usize {
    let line = format!("fencing {identity}: {reason}");
    cluster
        .daemon_log(node)
        .lines()
        .filter(|l| l.contains(&line))
        .count()
}

/// Acceptance criterion: with the storage endpoint black-holed, the holder's client stops
/// by F in every trial, the standby cannot take over even after the lease has ended at the
/// store, and signing resumes once storage is back.
#[test]
fn black_holed_storage_fences_the_holder_by_f_in_every_trial() {
    let _serial = serial();
    let rig = Rig::start("blackhole");
    let (cluster, identity, address) = rig.cluster(1, 2);
    let mut since = 0;
    let mut figures = Vec::new();
    // The storage goes dark at a different point of the renew cycle in each trial: just
    // after a renew, half-way to the next, and just before it.
    for (trial, phase) in [(1, 200), (2, 2500), (3, 4700)] {
        let holder = wait_signing(&cluster, &address, since, D + Duration::from_secs(10)).node;
        let renewed = rig.wait_renewed(&identity, Instant::now());
        sleep_until_mono(rig.mono(renewed) + nanos(Duration::from_millis(phase)));
        let fault = mono_now();
        rig.proxy.set_rule(Rule::new(Match::All, Action::BlackHole));
        let stop = wait_client_stop(&cluster, &holder, &address, fault, D + M);
        let t_ok = rig.t_ok(&identity, stop.at);
        figures.push(assert_fenced_by_f(
            &format!("black hole, trial {trial} ({holder}, dark {phase} ms after a renew)"),
            t_ok,
            stop,
        ));

        // Dark until after the lease has ended at the store too: a standby that could
        // reach the store would acquire by now.
        sleep_until_mono(t_ok + nanos(D + Duration::from_secs(1)));
        let dark_end = mono_now();
        let in_the_dark: Vec<SignLine> = signing_between(&cluster, &address, fault, dark_end)
            .into_iter()
            .filter(|l| l.node != holder || l.at > stop.at)
            .collect();
        assert!(
            in_the_dark.is_empty(),
            "trial {trial}: signed while storage was black-holed: {in_the_dark:?}\n{}",
            cluster.diagnostics()
        );

        rig.proxy.clear_rules();
        since = mono_now();
        let back = wait_signing(&cluster, &address, since, Duration::from_secs(20));
        eprintln!(
            "black hole, trial {trial}: storage back, {} signing {:.3} s later",
            back.node,
            secs(back.at - since)
        );
        since = back.at;
    }
    let fenced: usize = ["vm-1", "vm-2"]
        .iter()
        .map(|node| fences(&cluster, node, &identity, "deadline_missed"))
        .sum();
    assert_eq!(fenced, 3, "{}", cluster.diagnostics());
    eprintln!(
        "black hole: t_ok → client stopped, per trial: {}; scenario took {:.1} s",
        figures
            .iter()
            .map(|f| format!("{f:.3} s"))
            .collect::<Vec<_>>()
            .join(", "),
        rig.elapsed()
    );
    cluster.assert_no_overlap();
}

/// Only renews hang (acquire and release still work): the holder fences by F, and the
/// identity is signed again only through a fresh acquire made after the old client
/// stopped, once the store has let the old lease go.
#[test]
fn a_hanging_renew_fences_by_f_and_the_identity_moves_on_by_a_fresh_acquire() {
    let _serial = serial();
    let rig = Rig::start("renewhang");
    let (cluster, identity, address) = rig.cluster(1, 2);
    let holder = wait_signing(&cluster, &address, 0, Duration::from_secs(5)).node;
    let fault = mono_now();
    let fault_instant = Instant::now();
    rig.proxy.set_rule(Rule::new(
        Match::LeaseAction("renew".into()),
        Action::BlackHole,
    ));
    let stop = wait_client_stop(&cluster, &holder, &address, fault, D + M);
    let t_ok = rig.t_ok(&identity, stop.at);
    assert_fenced_by_f(&format!("hanging renew ({holder})"), t_ok, stop);

    let next = wait_signing(&cluster, &address, stop.at, D + Duration::from_secs(10));
    rig.proxy.clear_rules();
    let successes: Vec<ProxiedRequest> = rig
        .successes(&identity)
        .into_iter()
        .filter(|r| r.at > fault_instant)
        .collect();
    let ops = describe(&rig, &rig.lease_ops(&identity));
    let acquire = successes
        .iter()
        .find(|r| is_action(r, "acquire"))
        .unwrap_or_else(|| panic!("signing resumed without an acquire:\n{ops}"));
    let acquired_at = rig.mono(acquire.at);
    assert!(
        acquired_at > stop.at && acquired_at < next.at,
        "the acquire at {:.3} s is not between the old client's stop at {:.3} s and the \
         next signing at {:.3} s:\n{ops}",
        secs(acquired_at),
        secs(stop.at),
        secs(next.at)
    );
    assert!(
        successes.iter().all(|r| !is_action(r, "renew")),
        "a renew succeeded while renews hung:\n{ops}"
    );
    // The store let the old lease go: the old holder released it after fencing (release
    // still works here), or it expired.
    let released = successes
        .iter()
        .find(|r| is_action(r, "release"))
        .and_then(|r| r.responded_at)
        .map(|t| rig.mono(t));
    assert!(
        released.is_some_and(|r| r <= acquired_at) || acquired_at >= t_ok + nanos(D),
        "acquired at {:.3} s, before the old lease ended at the store:\n{ops}",
        secs(acquired_at)
    );
    let quiet = signing_between(&cluster, &address, stop.at, acquired_at);
    assert!(
        quiet.is_empty(),
        "signed between fence and acquire: {quiet:?}"
    );
    assert_eq!(
        fences(&cluster, &holder, &identity, "deadline_missed"),
        1,
        "{}",
        cluster.diagnostics()
    );
    eprintln!(
        "hanging renew: released {}, acquired {:.3} s after the stop ({:.3} s after t_ok), \
         {} signing {:.3} s after the stop; scenario took {:.1} s",
        released.map_or("never".into(), |r| format!(
            "{:.3} s after the stop",
            secs(r.saturating_sub(stop.at))
        )),
        secs(acquired_at - stop.at),
        secs(acquired_at - t_ok),
        next.node,
        secs(next.at - stop.at),
        rig.elapsed()
    );
    cluster.assert_no_overlap();
}

/// Issue 10, item 8. Renews hang while acquires and releases still work (what a fault on
/// the holder's own path to the store can look like): the holder fences at F and releases,
/// and must then leave the identity alone for one lease instead of winning it straight back
/// (about 10 ms after the release, long before a standby's next poll). The standby takes
/// it.
#[test]
fn item08_renews_failing_while_acquires_work_hand_the_identity_to_the_standby() {
    let _serial = serial();
    let rig = Rig::start("renewonly");
    let (cluster, identity, address) = rig.cluster(1, 2);
    let holder = wait_signing(&cluster, &address, 0, Duration::from_secs(5)).node;
    let fault = mono_now();
    rig.proxy.set_rule(Rule::new(
        Match::LeaseAction("renew".into()),
        Action::BlackHole,
    ));
    let stop = wait_client_stop(&cluster, &holder, &address, fault, D + M);
    let next = wait_signing(&cluster, &address, stop.at, D + Duration::from_secs(10));
    rig.proxy.clear_rules();
    assert_ne!(
        next.node,
        holder,
        "{holder} fenced for deadline_missed and won {identity} straight back ({:.3} s after \
         its client stopped); the standby never got it\n{}",
        secs(next.at - stop.at),
        cluster.diagnostics()
    );
    eprintln!(
        "renew-only outage: {} signing {:.3} s after {holder}'s client stopped",
        next.node,
        secs(next.at - stop.at)
    );
    cluster.assert_no_overlap();
}

/// Every request answered 503 for 8 s (longer than M), placed to cover the next renew and
/// every retry up to F: the holder fences by F, and once the storm is over the first lease
/// operation the store accepts for the record is a fresh acquire, never a renew of the
/// fenced lease.
#[test]
fn a_503_storm_longer_than_the_margin_fences_by_f_and_only_a_fresh_acquire_resumes() {
    const STORM: Duration = Duration::from_secs(8);
    let _serial = serial();
    let rig = Rig::start("storm");
    let (cluster, identity, address) = rig.cluster(1, 2);
    let holder = wait_signing(&cluster, &address, 0, Duration::from_secs(5)).node;
    // The storm starts 3 s after a renew and ends 11 s after it: it covers the next renew
    // (due R = 5 s after) and every retry until F = 10 s after.
    let renewed = rig.wait_renewed(&identity, Instant::now());
    sleep_until_mono(rig.mono(renewed) + nanos(Duration::from_secs(3)));
    let fault = mono_now();
    rig.proxy.set_rule(Rule::new(
        Match::All,
        Action::Status {
            code: 503,
            retry_after: None,
        },
    ));
    sleep(STORM);
    rig.proxy.clear_rules();
    let over = mono_now();
    let stop = wait_client_stop(&cluster, &holder, &address, fault, Duration::from_secs(5));
    let t_ok = rig.t_ok(&identity, stop.at);
    assert_fenced_by_f(&format!("503 storm ({holder})"), t_ok, stop);
    assert!(
        stop.at < over,
        "the client stopped only after the storm ({:.3} s after it)",
        secs(stop.at - over)
    );

    let next = wait_signing(&cluster, &address, over, D + Duration::from_secs(10));
    let ops = describe(&rig, &rig.lease_ops(&identity));
    let first = rig
        .successes(&identity)
        .into_iter()
        .find(|r| rig.mono(r.at) > stop.at)
        .unwrap_or_else(|| panic!("no lease operation succeeded after the fence:\n{ops}"));
    assert!(
        is_action(&first, "acquire") && rig.mono(first.at) > over,
        "the first lease operation accepted after the fence was {:?} at {:.3} s (storm over \
         at {:.3} s), not a fresh acquire after the storm:\n{ops}",
        first.lease_action,
        secs(rig.mono(first.at)),
        secs(over)
    );
    let acquired_at = rig.mono(first.at);
    let quiet = signing_between(&cluster, &address, stop.at, acquired_at);
    assert!(
        quiet.is_empty(),
        "signed between fence and acquire: {quiet:?}"
    );
    assert!(acquired_at < next.at);
    assert_eq!(
        fences(&cluster, &holder, &identity, "deadline_missed"),
        1,
        "{}",
        cluster.diagnostics()
    );
    eprintln!(
        "503 storm: fresh acquire {:.3} s after the storm ({:.3} s after t_ok), {} signing \
         {:.3} s after the storm; scenario took {:.1} s",
        secs(acquired_at - over),
        secs(acquired_at - t_ok),
        next.node,
        secs(next.at - over),
        rig.elapsed()
    );
    cluster.assert_no_overlap();
}

/// A renew that Azurite accepts only after F, and whose success reaches the daemon after
/// F: the holder has fenced by then and does not sign again until a fresh acquire.
///
/// The proxy drops a delayed request whose client hung up before the delay ran out (it
/// never reaches Azurite), so "late" is arranged with two delays. The next renew is held
/// 3.5 s: the daemon gives up after R/2 = 2.5 s and retries 1 s later, at about F − 1.5 s.
/// That retry is held 2 s: Azurite renews the lease about 0.5 s after F, and the answer
/// reaches the daemon inside its 2.5 s timeout. Releases are black-holed, so the store
/// keeps the late-renewed lease and nobody may acquire until it ends.
#[test]
fn a_renew_that_succeeds_after_f_never_resumes_signing() {
    const LATE: Duration = Duration::from_secs(2);
    let _serial = serial();
    let rig = Rig::start("laterenew");
    let (cluster, identity, address) = rig.cluster(1, 2);
    let holder = wait_signing(&cluster, &address, 0, Duration::from_secs(5)).node;
    let renewed = rig.wait_renewed(&identity, Instant::now());
    let fault = mono_now();
    let renew = || Match::LeaseAction("renew".into());
    rig.proxy
        .set_rule(Rule::new(renew(), Action::Delay(Duration::from_millis(3500))).times(1));
    rig.proxy
        .set_rule(Rule::new(renew(), Action::Delay(LATE)).times(1));
    rig.proxy.set_rule(Rule::new(
        Match::LeaseAction("release".into()),
        Action::BlackHole,
    ));
    let stop = wait_client_stop(&cluster, &holder, &address, fault, D + M);
    let t_ok = rig.t_ok(&identity, stop.at);
    assert_eq!(
        t_ok,
        rig.mono(renewed),
        "t_ok is not the renew before the fault"
    );
    assert_fenced_by_f(&format!("late renew ({holder})"), t_ok, stop);

    // The late renew: forwarded after F, accepted, answered to the daemon after its fence.
    let late = wait_for(Duration::from_secs(5), || {
        rig.successes(&identity)
            .into_iter()
            .find(|r| is_action(r, "renew") && r.at > renewed)
    })
    .unwrap_or_else(|| {
        panic!(
            "no delayed renew reached Azurite:\n{}",
            describe(&rig, &rig.lease_ops(&identity))
        )
    });
    let forwarded = rig.mono(late.at + LATE);
    let answered = rig.mono(late.responded_at.expect("an accepted renew was answered"));
    let f = t_ok + nanos(D - M);
    assert!(
        forwarded > f && answered > stop.at,
        "the delayed renew was not late: forwarded {:.3} s after F, answered {:.3} s after \
         the client stopped",
        secs(forwarded) - secs(f),
        secs(answered) - secs(stop.at)
    );

    // The store holds the late-renewed lease until forwarded + D; only then may anyone
    // acquire, and the old holder signs again only after a fresh acquire of its own.
    let next = wait_signing(&cluster, &address, stop.at, D + Duration::from_secs(10));
    rig.proxy.clear_rules();
    let ops = describe(&rig, &rig.lease_ops(&identity));
    let first = rig
        .successes(&identity)
        .into_iter()
        .find(|r| r.at > late.at)
        .unwrap_or_else(|| panic!("no lease operation succeeded after the late renew:\n{ops}"));
    let acquired_at = rig.mono(first.at);
    assert!(
        is_action(&first, "acquire"),
        "the first lease operation accepted after the late renew was {:?}:\n{ops}",
        first.lease_action
    );
    // Azurite's clock: the lease it renewed when the request was forwarded ends D later.
    assert!(
        acquired_at + nanos(Duration::from_millis(500)) >= forwarded + nanos(D),
        "acquired {:.3} s after the late renew, before the lease it renewed ended:\n{ops}",
        secs(acquired_at - forwarded)
    );
    let quiet = signing_between(&cluster, &address, stop.at, acquired_at);
    assert!(
        quiet.is_empty(),
        "signed between the fence and the next acquire: {quiet:?}"
    );
    if next.node == holder {
        let acquired_lines = cluster
            .daemon_log(&holder)
            .lines()
            .filter(|l| l.contains(&format!("acquired {identity} ")))
            .count();
        assert!(
            acquired_lines >= 2,
            "{holder} signed again without logging a fresh acquire\n{}",
            cluster.diagnostics()
        );
    }
    assert_eq!(
        fences(&cluster, &holder, &identity, "deadline_missed"),
        1,
        "{}",
        cluster.diagnostics()
    );
    eprintln!(
        "late renew: forwarded {:.3} s after F, answered {:.3} s after the client stopped; \
         fresh acquire {:.3} s after the late renew, {} signing; scenario took {:.1} s",
        secs(forwarded - f),
        secs(answered - stop.at),
        secs(acquired_at - forwarded),
        next.node,
        rig.elapsed()
    );
    cluster.assert_no_overlap();
}

/// Deletes the holder's lease record 1 s before its next renew is due: the holder fences
/// at that renew, well before F, for a lost lease.
#[test]
fn a_deleted_lease_record_fences_the_holder_at_its_next_renew() {
    let _serial = serial();
    let rig = Rig::start("deletedblob");
    let (cluster, identity, address) = rig.cluster(1, 2);
    let holder = wait_signing(&cluster, &address, 0, Duration::from_secs(5)).node;
    let renewed = rig.wait_renewed(&identity, Instant::now());
    sleep_until_mono(rig.mono(renewed) + nanos(R - Duration::from_secs(1)));
    let deleted = mono_now();
    rig.az.delete_blob(&rig.container, identity.as_str());
    let stop = wait_client_stop(&cluster, &holder, &address, deleted, D);
    assert_fenced_at_next_renew(&rig, &cluster, &identity, &address, &holder, deleted, stop);
    // What the holder says: why its renew failed, then the fence.
    let log = cluster.daemon_log(&holder);
    assert!(
        log.contains(&format!(
            "renew of {identity} failed: no lease record for {identity}"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("fencing {identity}: lease_lost")),
        "{log}"
    );
    eprintln!(
        "deleted record: {holder}'s log after the deletion:\n{}",
        log_after_fence(&log, &identity)
    );
    eprintln!("deleted record: scenario took {:.1} s", rig.elapsed());
    cluster.assert_no_overlap();
}

/// Deletes the container holding the lease records 1 s before the holder's next renew:
/// the holder fences at that renew, well before F, for a lost lease.
#[test]
fn a_deleted_container_fences_the_holder_at_its_next_renew() {
    let _serial = serial();
    let rig = Rig::start("deletedcontainer");
    let (cluster, identity, address) = rig.cluster(1, 2);
    let holder = wait_signing(&cluster, &address, 0, Duration::from_secs(5)).node;
    let renewed = rig.wait_renewed(&identity, Instant::now());
    sleep_until_mono(rig.mono(renewed) + nanos(R - Duration::from_secs(1)));
    let deleted = mono_now();
    rig.az.delete_container(&rig.container);
    let stop = wait_client_stop(&cluster, &holder, &address, deleted, D);
    assert_fenced_at_next_renew(&rig, &cluster, &identity, &address, &holder, deleted, stop);
    // What the holder says: why its renew failed, the fence, and then, once, that the
    // records cannot be listed while the container is missing.
    let log = cluster.daemon_log(&holder);
    assert!(
        log.contains(&format!(
            "renew of {identity} failed: lease on {identity} lost: the container holding the lease records was deleted"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("fencing {identity}: lease_lost")),
        "{log}"
    );
    let list_failures = log.matches("cannot list the lease records: ").count();
    assert!(
        list_failures >= 1 && log.contains("does not exist"),
        "the missing container is not reported:\n{log}"
    );
    assert!(
        list_failures <= 3,
        "a list failure is logged on every poll ({list_failures} times):\n{log}"
    );
    eprintln!(
        "deleted container: {holder}'s log after the deletion:\n{}",
        log_after_fence(&log, &identity)
    );
    eprintln!("deleted container: scenario took {:.1} s", rig.elapsed());
    cluster.assert_no_overlap();
}

/// Issue 11, found by the chaos run (`chaos --store blob --seed 1`, a container deleted and
/// re-created 1.4 s later): the container is deleted right after the holder's renew, and
/// the records are re-created at once as a re-run of `orchestrator init` does. The holder
/// only learns of the loss at its next renew, up to R later; a standby that acquired a
/// fresh record at once would sign beside it. Re-created records of existing keys are
/// created leased for the longest lease, so nobody signs again until every holder of the
/// lost records has fenced.
#[test]
fn chaos_seed1_records_recreated_at_once_stay_locked_until_the_old_holders_fenced() {
    let _serial = serial();
    let rig = Rig::start("recreated");
    let (cluster, identity, address) = rig.cluster(2, 4);
    let holder = wait_signing(&cluster, &address, 0, Duration::from_secs(5)).node;
    rig.wait_renewed(&identity, Instant::now());
    let holders = cluster.signers_since(0);
    let deleted = mono_now();
    rig.az.delete_container(&rig.container);
    let store = BlobLeaseStore::open(
        &format!("{}/{}", rig.az.blob_endpoint(), rig.container),
        &AzureOptions {
            connection_string: Some(rig.az.connection_string()),
            ..Default::default()
        },
        Budget::interactive(),
    )
    .expect("the emulator's container opens");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for (id, _) in &cluster.identities {
            orchestrator::provision::create_lease_record(&store, id, true)
                .await
                .expect("re-create the record");
        }
    });
    let recreated = mono_now();
    eprintln!(
        "records re-created {:.3} s after the deletion",
        secs(recreated - deleted)
    );
    let stop = wait_client_stop(
        &cluster,
        &holder,
        &address,
        deleted,
        R + Duration::from_secs(5),
    );
    eprintln!(
        "{holder} stopped {:.3} s after the deletion",
        secs(stop.at.saturating_sub(deleted))
    );
    // Every holder has fenced by its next renew; no other node has signed since.
    sleep(R + Duration::from_secs(3));
    for (a, old) in &holders {
        let others: Vec<SignLine> = signing_between(&cluster, a, deleted, mono_now())
            .into_iter()
            .filter(|l| l.node != old.node)
            .collect();
        assert!(
            others.is_empty(),
            "{a} was signed by another node while the re-created record was locked: {:?}\n{}",
            others.first(),
            cluster.diagnostics()
        );
    }
    cluster.assert_no_overlap();
}

/// The holder's client stopped at the first renew after `deleted` (due 1 s after it), far
/// before F; nobody signed afterwards, there being no record to acquire.
fn assert_fenced_at_next_renew(
    rig: &Rig,
    cluster: &Cluster,
    identity: &Name,
    address: &str,
    holder: &str,
    deleted: u64,
    stop: ClientStop,
) {
    let t_ok = rig.t_ok(identity, stop.at);
    let f = t_ok + nanos(D - M);
    let after_delete = secs(stop.at.saturating_sub(deleted));
    eprintln!(
        "{holder}: client stopped {after_delete:.3} s after the deletion, {:.3} s after t_ok, \
         {:.3} s before F",
        secs(stop.at - t_ok),
        secs(f.saturating_sub(stop.at))
    );
    // The next renew is due R after t_ok, 1 s after the deletion; 1.5 s covers its answer,
    // the fence and a loaded machine.
    assert!(
        stop.at <= t_ok + nanos(R + Duration::from_millis(1500)),
        "{holder} fenced {after_delete:.3} s after the deletion, not at its next renew\n{}",
        cluster.diagnostics()
    );
    assert!(
        cluster
            .daemon_log(holder)
            .lines()
            .all(|l| !l.contains("deadline_missed")),
        "{}",
        cluster.diagnostics()
    );
    sleep(Duration::from_secs(3));
    let after = signing_between(cluster, address, stop.at, mono_now());
    assert!(
        after.is_empty(),
        "signed after the record was deleted: {after:?}"
    );
}

/// The daemon's log lines from its first fence of `identity` on.
fn log_after_fence(log: &str, identity: &Name) -> String {
    let needle = format!("fencing {identity}");
    log.lines()
        .skip_while(|l| !l.contains(&needle))
        .take(12)
        .map(|l| format!("  {l}\n"))
        .collect()
}

/// The operator's tools the scenarios rely on do what they say, seen through the backend:
/// a broken lease cannot be renewed, a deleted blob is a missing record, a deleted
/// container is the store deleted.
#[test]
fn the_emulators_admin_helpers_break_and_delete() {
    let _serial = serial();
    let az = Azurite::start();
    let container = "admin";
    let store = BlobLeaseStore::open(
        &format!("{}/{container}", az.blob_endpoint()),
        &AzureOptions {
            connection_string: Some(az.connection_string()),
            ..Default::default()
        },
        Budget::interactive(),
    )
    .expect("the emulator's container opens");
    let id = Name::new("m0-v0").expect("a name");
    let other = Name::new("m0-v1").expect("a name");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let d = LeaseDuration::from_secs(60).expect("a duration");
        store.create_record(&id).await.expect("a record");
        store.create_record(&other).await.expect("a record");

        let lease = store.acquire(&id, d, None).await.expect("acquire");
        az.break_lease(container, id.as_str(), 0);
        match store.renew(&id, &lease).await {
            Err(LeaseError::Lost {
                reason: LostReason::Broken,
                ..
            }) => {}
            other => panic!("renew of a broken lease: {other:?}"),
        }

        // A leased record and an unleased one both go.
        let lease = store.acquire(&id, d, None).await.expect("acquire again");
        az.delete_blob(container, id.as_str());
        az.delete_blob(container, other.as_str());
        match store.renew(&id, &lease).await {
            Err(LeaseError::NotFound { identity }) if identity == id => {}
            other => panic!("renew of a deleted record: {other:?}"),
        }
        assert!(store.list().await.expect("list").is_empty());

        store.create_record(&id).await.expect("a record");
        let lease = store.acquire(&id, d, None).await.expect("acquire");
        az.delete_container(container);
        match store.renew(&id, &lease).await {
            Err(LeaseError::Lost {
                reason: LostReason::StoreDeleted,
                ..
            }) => {}
            other => panic!("renew in a deleted container: {other:?}"),
        }
    });
}
