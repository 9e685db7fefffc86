//! The deterministic simulation at scale: `cargo run --release -p integration-tests --bin
//! simulate -- [--schedules N] [--seed BASE] [--threads T] [--keep-going]`. Prints
//! schedules per second as it goes and a summary at the end; on the first failing schedule
//! prints its report (seed, shrunk schedule, trace) and exits 1. With `--keep-going` it
//! runs every schedule and also lists each failing seed. Without `--seed` the base seed is
//! drawn at random and printed, so every run explores new schedules.

use std::process::ExitCode;
use std::time::Instant;

use integration_tests::sim;

const USAGE: &str = "usage: simulate [--schedules N] [--seed BASE] [--threads T] [--keep-going]";

fn main() -> ExitCode {
    let mut schedules: u64 = 10_000_000;
    let mut base: Option<u64> = None;
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut keep_going = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--keep-going" {
            keep_going = true;
            continue;
        }
        let value = args.next();
        let parsed = value
            .as_deref()
            .and_then(|v| v.replace('_', "").parse::<u64>().ok());
        match (arg.as_str(), parsed) {
            ("--schedules", Some(n)) => schedules = n,
            ("--seed", Some(n)) => base = Some(n),
            ("--threads", Some(n)) if n > 0 => threads = n as usize,
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(64);
            }
        }
    }
    let base = base.unwrap_or_else(|| {
        let mut bytes = [0u8; 8];
        getrandom_seed(&mut bytes);
        u64::from_le_bytes(bytes) >> 16
    });
    eprintln!("simulate: {schedules} schedules from seed {base} on {threads} threads");
    let started = Instant::now();
    // A line every 100 000 schedules, or every 10 s if that comes first.
    let last = std::sync::Mutex::new((0u64, Instant::now()));
    let progress = |done: u64| {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if done >= last.0 + 100_000 || last.1.elapsed().as_secs() >= 10 {
            *last = (done, Instant::now());
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "simulate: {done} schedules in {secs:.0} s ({:.0}/s)",
                done as f64 / secs
            );
        }
    };
    let report = sim::explore(base, schedules, threads, keep_going, &progress);
    eprintln!("simulate: {}", report.summary(threads));
    for (kind, line) in sim::probe_summary(&report.stats) {
        eprintln!("simulate: take-over after {kind:?}: {line}");
    }
    let mut failures = report.failures.clone();
    failures.sort_unstable();
    for (seed, kind) in &failures {
        eprintln!("simulate: seed {seed} fails: {kind:?}");
    }
    if keep_going {
        eprintln!(
            "simulate: {} of {} schedules failed",
            failures.len(),
            report.schedules
        );
    }
    match report.failure {
        None => ExitCode::SUCCESS,
        Some(f) => {
            eprintln!(
                "simulate: schedule {} (seed {}) failed after {} schedules\n{}",
                f.index,
                f.seed,
                report.schedules,
                sim::describe(&sim::Plan::draw(f.seed), &f.violation)
            );
            ExitCode::from(1)
        }
    }
}

/// A random base seed from the OS, through the std hasher's random keys (no extra
/// dependency).
fn getrandom_seed(bytes: &mut [u8; 8]) {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    *bytes = h.finish().to_le_bytes();
}
