//! leased take-over latency, idle memory and store load, measured on real daemons with the
//! SQLite lease store. A benchmark, not a test: it prints figures and asserts nothing.
//!
//! - crash take-over: kill -9 of the holder until the standby's client signs (target p99 ≤
//!   D + 1 s);
//! - graceful take-over: SIGTERM of the holder until the standby's client signs (target p99
//!   ≤ 1 s);
//! - the idle RSS of a holding daemon (target ≤ 15 MB), and of its guard;
//! - store requests per minute of a holder and of a standby, from their /metrics.
//!
//! Run: `cargo bench -p integration-tests --bench takeover [-- --trials 20]`. The crash
//! trials wait out a 15 s lease each, so 20 of them take about six minutes.

// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use integration_tests::cluster::{http_get, mono_now, rss_kib, Cluster, ClusterSpec};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    println!(
        "{name:<22} n={:<3} min {:>7.3}s  p50 {:>7.3}s  p99 {:>7.3}s  max {:>7.3}s",
        v.len(),
        v[0],
        percentile(&v, 50.0),
        percentile(&v, 99.0),
        v[v.len() - 1]
    );
}

/// One identity, a holder and a standby; returns (holder node, address).
fn holder(cluster: &Cluster) -> (String, String) {
    let signers = cluster.wait_all_signing(0, Duration::from_secs(30));
    let (address, node) = signers.into_iter().next().expect("one identity");
    (node, address)
}

fn trial(cluster: &mut Cluster, crash: bool) -> f64 {
    let since = mono_now().saturating_sub(1);
    let lines = cluster.signers_since(since.saturating_sub(500_000_000));
    let (address, node) = match lines.into_iter().next() {
        Some((a, l)) => (a, l.node),
        None => {
            let (n, a) = holder(cluster);
            (a, n)
        }
    };
    let t0 = mono_now();
    if crash {
        cluster.daemon(&node).kill9();
    } else {
        cluster.daemon(&node).term();
    }
    let taken = cluster.wait_taken_over(&address, &node, t0, Duration::from_secs(40));
    let latency = Duration::from_nanos(taken.at - t0).as_secs_f64();
    if !crash {
        cluster.daemon(&node).wait_exit(Duration::from_secs(10));
    }
    // The old holder comes back as the new standby.
    cluster.restart(&node);
    std::thread::sleep(Duration::from_millis(300));
    latency
}

fn main() {
    let mut trials = 20;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--trials" {
            trials = args
                .next()
                .and_then(|n| n.parse().ok())
                .expect("--trials N");
        }
    }
    let spec = ClusterSpec {
        identities: 1,
        daemons: 2,
        http: true,
        ..ClusterSpec::default()
    };
    println!(
        "leased take-over, 1 identity, holder + standby, D = 15 s, sqlite:, {trials} trials each"
    );

    let mut cluster = Cluster::start(spec.clone());
    holder(&cluster);
    let graceful: Vec<f64> = (0..trials).map(|_| trial(&mut cluster, false)).collect();
    summary("graceful take-over", graceful);
    let crash: Vec<f64> = (0..trials).map(|_| trial(&mut cluster, true)).collect();
    summary("crash take-over", crash);
    cluster.assert_no_overlap();
    drop(cluster);

    // Memory and store load of a settled holder and standby.
    let mut cluster = Cluster::start(spec);
    let (node, _) = holder(&cluster);
    let standby = if node == "vm-1" { "vm-2" } else { "vm-1" };
    std::thread::sleep(Duration::from_secs(10));
    let count = |c: &mut Cluster, n: &str| -> f64 {
        let addr = c.daemon(n).http.expect("http port");
        let text = http_get(addr, "/metrics").expect("metrics");
        text.lines()
            .filter(|l| l.starts_with("leased_store_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (h0, s0) = (count(&mut cluster, &node), count(&mut cluster, standby));
    std::thread::sleep(Duration::from_secs(60));
    let (h1, s1) = (count(&mut cluster, &node), count(&mut cluster, standby));
    let pid = cluster.daemon(&node).pid().expect("running").as_raw() as u32;
    let daemon_rss = rss_kib(pid).unwrap_or(0);
    let guard_rss: u64 = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| rss_kib(p.parse().ok()?))
        .sum();
    println!(
        "holding daemon RSS     {:.1} MB (its guard {:.1} MB)",
        daemon_rss as f64 / 1024.0,
        guard_rss as f64 / 1024.0
    );
    println!(
        "store requests/minute  holder {:.0}, standby {:.0}",
        h1 - h0,
        s1 - s0
    );
}
