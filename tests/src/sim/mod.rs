//! The deterministic simulation of the lease protocol (issue 11, part 1).
//!
//! Each schedule drives N instances of the real `leased::machine::Machine` against the
//! conformance-tested [`MemoryLeaseStore`](crate::memory_store::MemoryLeaseStore) in virtual
//! time, with drifting clocks, guards, clients, and faults drawn from one seed, and checks
//! at every event that no two clients may sign with one identity, that a client signs only
//! under a live lease, that no renew follows a fence, that a lost lease fences at once,
//! that epochs never go back, that no node holds two identities, and that an identity with
//! a healthy standby is served again within the bound. See [`world`] for what is real and
//! what is modelled, and [`plan`] for what a schedule holds.
//!
//! A failing schedule is shrunk (faults dropped while it still fails) and reported with
//! its seed, the faults that matter and a readable trace; `SIM_SEED=… SIM_FAULTS=…`
//! replays it exactly (see `tests/tests/simulation.rs`).

pub mod plan;
pub mod rng;
pub mod world;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use plan::{Plan, Planted, Probe};
pub use world::{Outcome, ProbeTime, Stats, Violation, ViolationKind};

/// Runs one schedule; with `trace`, the outcome carries a readable trace.
pub fn run(plan: &Plan, trace: bool) -> Outcome {
    world::World::new(plan, trace).run()
}

/// A schedule that broke an invariant.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Which schedule of the run it was (0 is the first).
    pub index: u64,
    pub seed: u64,
    pub violation: Violation,
}

/// What a run of many schedules found.
#[derive(Debug)]
pub struct Report {
    /// Schedules run (up to and including the first failure, if any).
    pub schedules: u64,
    pub elapsed: Duration,
    /// The failure with the lowest index, if any.
    pub failure: Option<Failure>,
    /// With `keep_going`, every failing schedule: seed and kind, in no particular order.
    pub failures: Vec<(u64, ViolationKind)>,
    pub stats: Stats,
}

impl Report {
    /// One line of what the run did: schedules, speed and the events the checks are about.
    pub fn summary(&self, threads: usize) -> String {
        let s = &self.stats;
        format!(
            "{} schedules in {:.1} s ({:.0}/s on {threads} threads); {} events, {} acquisitions, {} deadline fences, {} lease-lost fences, {} guard deadline kills, {} late-fence kills, {} backstop kills, {} renews answered after F, {} renews of an expired lease, {} failed hand-offs, {} crash loops, {} probes ({} skipped)",
            self.schedules,
            self.elapsed.as_secs_f64(),
            self.per_second(),
            s.events,
            s.take_overs,
            s.deadline_fences,
            s.lost_fences,
            s.guard_deadline_kills,
            s.late_fence_kills,
            s.backstop_kills,
            s.late_renew_successes,
            s.renews_after_expiry,
            s.hand_off_failures,
            s.crash_loops,
            s.probes,
            s.probes_skipped,
        )
    }

    pub fn per_second(&self) -> f64 {
        self.schedules as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The seed of schedule `index` of a run from `base`.
pub fn seed_of(base: u64, index: u64) -> u64 {
    base.wrapping_add(index)
}

/// Runs schedules `0..count` from `base` on `threads` threads (each schedule alone is
/// single-threaded and deterministic; threads only run different schedules at once), and
/// stops at the first failure: the reported one is the failing schedule with the lowest
/// index, so a run finds the same first failure whatever the number of threads.
/// `progress` is called now and then with the number of schedules done. With
/// `keep_going`, the run does not stop at a failure but runs all `count` schedules and
/// lists every failing one.
pub fn explore(
    base: u64,
    count: u64,
    threads: usize,
    keep_going: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Report {
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let first_failure = AtomicU64::new(u64::MAX);
    let failure: Mutex<Option<Failure>> = Mutex::new(None);
    let failures: Mutex<Vec<(u64, ViolationKind)>> = Mutex::new(Vec::new());
    let total: Mutex<Stats> = Mutex::new(Stats::default());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                let mut stats = Stats::default();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= count
                        || (!keep_going && index > first_failure.load(Ordering::Relaxed))
                    {
                        break;
                    }
                    let seed = seed_of(base, index);
                    let plan = Plan::draw(seed);
                    let outcome = run(&plan, false);
                    stats.add(&outcome.stats);
                    if let Some(violation) = outcome.violation {
                        if keep_going {
                            failures
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((seed, violation.kind));
                        }
                        let mut slot = failure.lock().unwrap_or_else(|e| e.into_inner());
                        if slot.as_ref().is_none_or(|f| index < f.index) {
                            first_failure.fetch_min(index, Ordering::Relaxed);
                            *slot = Some(Failure {
                                index,
                                seed,
                                violation,
                            });
                        }
                    }
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_multiple_of(10_000) {
                        progress(n);
                    }
                }
                total.lock().unwrap_or_else(|e| e.into_inner()).add(&stats);
            });
        }
    });
    let failure = failure.into_inner().unwrap_or_else(|e| e.into_inner());
    let schedules = match &failure {
        Some(f) if !keep_going => f.index + 1,
        _ => done.load(Ordering::Relaxed),
    };
    Report {
        schedules,
        elapsed: started.elapsed(),
        failure,
        failures: failures.into_inner().unwrap_or_else(|e| e.into_inner()),
        stats: total.into_inner().unwrap_or_else(|e| e.into_inner()),
    }
}

/// `plan` cut down to the faults that matter: faults are dropped one at a time, and the
/// horizon brought to just past the violation, as long as the schedule still fails with
/// the same kind of violation. Returns the smaller plan and the indices of the faults it
/// kept (for `SIM_FAULTS`).
pub fn shrink(plan: &Plan, kind: ViolationKind) -> (Plan, Vec<usize>) {
    let fails = |p: &Plan| {
        run(p, false)
            .violation
            .filter(|v| v.kind == kind)
            .map(|v| v.at)
    };
    let mut keep: Vec<usize> = (0..plan.faults.len()).collect();
    let mut best = plan.clone();
    let Some(mut at) = fails(&best) else {
        return (best, keep);
    };
    loop {
        let mut progressed = false;
        let mut i = 0;
        while i < keep.len() {
            let mut fewer = keep.clone();
            fewer.remove(i);
            let mut candidate = plan.with_faults(&fewer);
            candidate.horizon = best.horizon;
            if let Some(t) = fails(&candidate) {
                keep = fewer;
                best = candidate;
                at = t;
                progressed = true;
            } else {
                i += 1;
            }
        }
        if !progressed {
            break;
        }
    }
    let mut shorter = best.clone();
    shorter.horizon = at + plan::SEC;
    if fails(&shorter).is_some() {
        best = shorter;
    }
    (best, keep)
}

/// The report of a failing schedule: the seed and how to replay it, the schedule and its
/// shrunk form, and the trace of the shrunk run up to the violation.
pub fn describe(plan: &Plan, violation: &Violation) -> String {
    let seed = plan.seed;
    let (small, keep) = shrink(plan, violation.kind);
    let outcome = run(&small, true);
    let kept: Vec<String> = keep.iter().map(|i| i.to_string()).collect();
    let mut text = format!(
        "simulation: {:?} at {}: {}\n\nreplay: SIM_SEED={seed} cargo test -p integration-tests --test simulation -- --nocapture\n\
         replay the shrunk schedule: SIM_SEED={seed} SIM_FAULTS={} cargo test -p integration-tests --test simulation -- --nocapture\n\n\
         the schedule:\n{plan}\nshrunk to {} of {} faults, horizon {}:\n{small}\n",
        violation.kind,
        plan::secs(violation.at),
        violation.detail,
        if kept.is_empty() { "none".to_string() } else { kept.join(",") },
        keep.len(),
        plan.faults.len(),
        plan::secs(small.horizon),
    );
    match &outcome.violation {
        Some(v) => {
            text += &format!(
                "trace of the shrunk schedule (violation {:?} at {}):\n",
                v.kind,
                plan::secs(v.at)
            );
        }
        None => text += "the shrunk schedule no longer fails (report this as a simulator bug):\n",
    }
    const SHOWN: usize = 400;
    let skip = outcome.trace.len().saturating_sub(SHOWN);
    if skip > 0 {
        text += &format!("  … {skip} earlier lines\n");
    }
    for line in &outcome.trace[skip..] {
        text += line;
        text.push('\n');
    }
    text
}

/// Parses `SIM_FAULTS` ("none", or indices separated by commas).
pub fn parse_fault_list(text: &str) -> Result<Vec<usize>, String> {
    let text = text.trim();
    if text.is_empty() || text == "none" {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| format!("SIM_FAULTS: {s:?} is not a fault index"))
        })
        .collect()
}

/// Take-over times of the liveness probes, by kind: percentiles at the default D = 15 s,
/// and the largest share of its bound any probe used.
pub fn probe_summary(stats: &Stats) -> Vec<(Probe, String)> {
    let kinds = [
        Probe::Crash,
        Probe::FreezeDaemon,
        Probe::FreezeVm,
        Probe::Terminate,
    ];
    kinds
        .into_iter()
        .filter_map(|kind| {
            let of_kind = stats.probe_times.iter().filter(|p| p.kind == kind);
            let mut times: Vec<u64> = of_kind
                .clone()
                .filter(|p| p.lease == Duration::from_secs(15))
                .map(|p| p.took)
                .collect();
            let worst = of_kind
                .map(|p| p.took as f64 / p.bound as f64)
                .fold(0.0, f64::max);
            if times.is_empty() {
                return None;
            }
            times.sort_unstable();
            let at = |q: f64| {
                let i = ((times.len() - 1) as f64 * q).round() as usize;
                plan::secs(times[i])
            };
            Some((
                kind,
                format!(
                    "at D = 15 s: n {}, p50 {}, p99 {}, max {}; at any D, at most {:.0}% of the bound",
                    times.len(),
                    at(0.5),
                    at(0.99),
                    at(1.0),
                    worst * 100.0
                ),
            ))
        })
        .collect()
}
