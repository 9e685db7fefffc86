//! A schedule: everything one seed decides before the run starts. The configuration (drawn
//! from the ranges `leased`'s config accepts and checked by its real parser), the clocks'
//! rates, and the list of faults with their times. Randomness during the run (latencies,
//! how a client answers SIGTERM) comes from the same seed through another stream.
//!
//! Faults are a plain list so that a failing schedule can be shrunk by dropping faults and
//! replayed with only the ones that matter (`SIM_FAULTS`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use leased::config::{Config, Overrides};
use leased::machine::Params;
use shared::lease::LeaseDuration;

use super::rng::Rng;

/// Simulated time: microseconds of true time since the run began.
pub type Us = u64;

pub const MS: Us = 1_000;
pub const SEC: Us = 1_000_000;

/// The clock-rate bound: every clock runs within ±this many parts per million of true time
/// (10 000 ppm = ±1 %).
pub const DRIFT_PPM: u64 = 10_000;

/// systemd's `TimeoutStopSec` in `ops/leased.service`: what is left of a stopping unit is
/// SIGKILLed this long after the stop began.
pub const TIMEOUT_STOP_SEC: Us = 20 * SEC;

/// `leased`'s settings for one schedule, parsed by `leased::config` from a rendered file.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `[lease]` and `[client]` lines that differ from the defaults, for the trace.
    pub summary: String,
    /// The machine's parameters (node name and seed filled in per node).
    pub params: Params,
    pub lease: LeaseDuration,
    /// `client.fence_grace_millis`.
    pub grace: Duration,
    /// Every store call's timeout, as `daemon.rs` sets it: min(R/2, 5 s).
    pub op_timeout: Duration,
}

impl Settings {
    pub fn d(&self) -> Us {
        us(self.params.lease)
    }
}

pub fn us(d: Duration) -> Us {
    d.as_micros() as Us
}

/// What a freeze stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frozen {
    /// The daemon process (SIGSTOP): its loop and its store calls. The guard runs on.
    Daemon,
    /// The guard process alone: the daemon's backstop must stop the client.
    Guard,
    /// The whole VM (hypervisor pause): daemon, guard and client.
    Vm,
}

/// What a crash kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Killed {
    /// kill -9 of the daemon; systemd stops the rest of the unit and restarts it.
    Daemon,
    /// kill -9 of the guard; the client dies with it (parent-death signal).
    Guard,
    /// The client crashes once.
    Client,
    /// Power loss: everything on the VM at once; it boots again later.
    Vm,
}

/// How the lease store misbehaves during an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Every request is answered at once with a transient error (503).
    Errors,
    /// Requests vanish: not applied, never answered.
    BlackHole,
    /// Requests are applied, but every answer takes this much longer.
    Slow(Us),
}

/// A liveness probe: at its time, if an identity is served and a healthy standby waits, the
/// holder is hit like this, and the identity must be served again within the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Crash,
    FreezeDaemon,
    FreezeVm,
    Terminate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Freeze {
        node: usize,
        what: Frozen,
        len: Us,
    },
    Crash {
        node: usize,
        what: Killed,
        /// For a VM: how long until it boots again.
        down: Us,
    },
    /// SIGTERM to the daemon; with `unit`, to every process of the unit at once
    /// (`systemctl stop`). systemd starts it again `down` later.
    Terminate {
        node: usize,
        unit: bool,
        down: Us,
    },
    /// `leased break` with its default period (the rest of the holder's lease).
    Break {
        identity: usize,
    },
    Outage {
        mode: Outage,
        len: Us,
    },
    /// The node's network drops everything, both ways.
    Partition {
        node: usize,
        len: Us,
    },
    /// Every answer to the node takes `extra` longer (answers after F).
    SlowLink {
        node: usize,
        len: Us,
        extra: Us,
    },
    /// Each client started on the node exits within a second (a crash loop).
    CrashLoop {
        node: usize,
        len: Us,
    },
    /// The client cannot be executed on the node (the guard reports `failed`).
    CannotStart {
        node: usize,
        len: Us,
    },
    /// The secret store refuses the node's key fetches.
    SecretsDown {
        node: usize,
        len: Us,
    },
    Probe(Probe),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub at: Us,
    pub kind: FaultKind,
}

impl Fault {
    /// When the fault's direct effect ends (its start for instantaneous ones): a slow
    /// link's or a slow store's last delayed request and answer included.
    pub fn end(&self) -> Us {
        self.at
            + match self.kind {
                FaultKind::SlowLink { len, extra, .. } => len + 2 * extra,
                FaultKind::Outage {
                    len,
                    mode: Outage::Slow(by),
                } => len + 2 * by,
                FaultKind::Freeze { len, .. }
                | FaultKind::Outage { len, .. }
                | FaultKind::Partition { len, .. }
                | FaultKind::CrashLoop { len, .. }
                | FaultKind::CannotStart { len, .. }
                | FaultKind::SecretsDown { len, .. } => len,
                FaultKind::Crash { down, .. } | FaultKind::Terminate { down, .. } => down,
                FaultKind::Break { .. } | FaultKind::Probe(_) => 0,
            }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", secs(self.at))?;
        match self.kind {
            FaultKind::Freeze { node, what, len } => {
                write!(f, "freeze {what:?} of vm-{node} for {}", secs(len))
            }
            FaultKind::Crash { node, what, down } => match what {
                Killed::Vm => write!(f, "power loss of vm-{node}, down {}", secs(down)),
                _ => write!(f, "kill -9 {what:?} of vm-{node}"),
            },
            FaultKind::Terminate { node, unit, down } => write!(
                f,
                "SIGTERM to vm-{node}'s {}, started again after {}",
                if unit { "whole unit" } else { "daemon" },
                secs(down)
            ),
            FaultKind::Break { identity } => write!(f, "leased break m0-v{identity}"),
            FaultKind::Outage { mode, len } => {
                write!(f, "store outage {mode:?} for {}", secs(len))
            }
            FaultKind::Partition { node, len } => {
                write!(f, "vm-{node} partitioned for {}", secs(len))
            }
            FaultKind::SlowLink { node, len, extra } => write!(
                f,
                "answers to vm-{node} {} late for {}",
                secs(extra),
                secs(len)
            ),
            FaultKind::CrashLoop { node, len } => {
                write!(f, "vm-{node}'s client crash-loops for {}", secs(len))
            }
            FaultKind::CannotStart { node, len } => {
                write!(f, "vm-{node}'s client cannot start for {}", secs(len))
            }
            FaultKind::SecretsDown { node, len } => {
                write!(f, "vm-{node} cannot fetch keys for {}", secs(len))
            }
            FaultKind::Probe(p) => write!(f, "liveness probe: {p:?} of a holder"),
        }
    }
}

/// Seconds with millisecond precision, for traces.
pub fn secs(t: Us) -> String {
    format!("{}.{:03}s", t / SEC, (t % SEC) / MS)
}

/// One schedule.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub settings: Arc<Settings>,
    pub nodes: usize,
    pub identities: usize,
    /// Each node's clock rate in parts per million of true time, then the store's.
    pub node_ppm: Vec<u64>,
    pub store_ppm: u64,
    /// When each node's daemon first starts.
    pub starts: Vec<Us>,
    /// How wild the latencies are: 0 calm, 1 normal, 2 wild.
    pub weather: u8,
    /// Permille of requests and of answers lost outside outages.
    pub loss_permille: u64,
    pub horizon: Us,
    /// From here on (a liveness probe's window) latencies are calm and nothing is lost.
    pub calm_from: Us,
    pub faults: Vec<Fault>,
    /// A bug planted in the simulator's model of the driver; `None` in every drawn plan.
    pub planted: Planted,
}

/// Bugs that tests plant in the simulator's model of `daemon.rs` (never in a drawn plan),
/// to show that the checks and the shrinker bite. The real machine is never altered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Planted {
    #[default]
    None,
    /// The driver before 505d280, which did not take the lease's epoch from one decision:
    /// every metadata write reads the record's epoch itself (the holder write stores it + 1,
    /// the address write stores it as read), the writes under one lease do not take turns,
    /// and the note before a release carries the machine's epoch if it has one, else none.
    EpochReadPerWrite,
}

/// The `[lease]` knobs of one `leased` configuration file (and the two settings checked
/// against them), parsed once each by the real parser: the parse is most of the cost of
/// drawing a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LeaseKnobs {
    d: u64,
    margin: Option<u64>,
    renew: Option<u64>,
    poll_ms: u64,
    quarantine: u64,
    grace_ms: Option<u64>,
}

/// The `[client]` knobs that no other setting constrains.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKnobs {
    max_exits: u64,
    window: u64,
    backoff_ms: u64,
    start_timeout: u64,
}

impl LeaseKnobs {
    fn draw(rng: &mut Rng) -> Self {
        // Most schedules at the default D = 15 s; longer leases make longer schedules.
        let d: u64 = if rng.percent(75) {
            15
        } else {
            rng.pick(&[20, 20, 30, 30, 45, 60])
        };
        // margin_secs: 2 ≤ M < D/2; the default, the ends, and between.
        let widest = d.div_ceil(2) - 1;
        let margin = (!rng.percent(60)).then(|| rng.pick(&[2, 3, (d / 4).max(2), widest]));
        let m_ms = margin.map_or_else(
            || leased::machine::default_margin(Duration::from_secs(d)).as_millis() as u64,
            |m| m * 1_000,
        );
        // renew_every_secs: 1 ≤ R ≤ (D − M)/2, whole seconds.
        let longest = (d * 1_000 - m_ms) / 2_000;
        let renew = (!rng.percent(70)).then(|| rng.pick(&[1, 2.min(longest), longest]));
        // standby_poll_millis: 100 ms ≤ poll ≤ D, mostly the default 500 ms. A fast poll
        // costs events, so the fastest come with the shortest lease.
        let poll_ms = if d == 15 {
            rng.pick(&[
                100, 250, 250, 500, 500, 500, 500, 500, 1_000, 1_000, 1_000, 1_000, 2_000, 2_000,
                2_000, 2_000, 5_000, 5_000, 5_000, 5_000,
            ])
        } else {
            rng.pick(&[500, 500, 1_000, 2_000, 5_000])
        };
        let quarantine = if rng.percent(80) {
            0
        } else {
            rng.pick(&[1, 3])
        };
        // fence_grace_millis: 1 ≤ grace ≤ M/2 and within what the margin covers with the
        // backstop and clock drift (leased's config rule); the extremes most of all.
        let widest_grace = (m_ms / 2).min(
            leased::config::max_fence_grace(Duration::from_millis(m_ms), Duration::from_secs(d))
                .as_millis() as u64,
        );
        let grace_ms = match rng.below(5) {
            0 | 1 => None,
            2 => Some(widest_grace),
            3 => Some(1),
            _ => Some((m_ms / 8).min(widest_grace)),
        };
        Self {
            d,
            margin,
            renew,
            poll_ms,
            quarantine,
            grace_ms,
        }
    }
}

impl ClientKnobs {
    fn draw(rng: &mut Rng) -> Self {
        Self {
            max_exits: rng.pick(&[1, 2, 3, 5]),
            window: rng.pick(&[10, 30, 60]),
            backoff_ms: rng.pick(&[100, 500, 1_000]),
            start_timeout: rng.pick(&[2, 5, 10]),
        }
    }

    fn defaults() -> Self {
        Self {
            max_exits: 5,
            window: 60,
            backoff_ms: 1_000,
            start_timeout: 10,
        }
    }
}

/// A configuration file with these knobs.
fn file(lease: &LeaseKnobs, client: &ClientKnobs) -> String {
    let mut lease_lines = format!(
        "duration_secs = {}\nstandby_poll_millis = {}\n",
        lease.d, lease.poll_ms
    );
    if let Some(m) = lease.margin {
        lease_lines += &format!("margin_secs = {m}\n");
    }
    if let Some(r) = lease.renew {
        lease_lines += &format!("renew_every_secs = {r}\n");
    }
    let mut client_lines = format!(
        "crash_loop_max_exits = {}\ncrash_loop_window_secs = {}\nrestart_backoff_millis = {}\nstart_timeout_secs = {}\n",
        client.max_exits, client.window, client.backoff_ms, client.start_timeout
    );
    if let Some(g) = lease.grace_ms {
        client_lines += &format!("fence_grace_millis = {g}\n");
    }
    format!(
        "node = \"sim\"\nruntime_dir = \"/run/leased\"\n\
         [store]\nleases = \"sqlite:/var/lib/leased/leases.db\"\nsecrets = \"dir:/var/lib/leased/secrets\"\n\
         [identity]\npool = \"m0-\"\nquarantine_secs = {}\n\
         [lease]\n{lease_lines}\
         [client]\ncommand = [\"client\", \"{{key_file}}\"]\n{client_lines}",
        lease.quarantine
    )
}

fn parse(lease: &LeaseKnobs, client: &ClientKnobs) -> Config {
    let text = file(lease, client);
    Config::parse(&text, &Overrides::default()).unwrap_or_else(|problems| {
        panic!("the simulator drew a configuration leased refuses:\n{text}\n{problems:?}")
    })
}

/// Parsed configurations, shared by the threads of a run.
static LEASE_CONFIGS: LazyLock<Mutex<HashMap<LeaseKnobs, Arc<Config>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
static CLIENT_CONFIGS: LazyLock<Mutex<HashMap<ClientKnobs, Arc<Config>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn cached<K: Clone + Eq + std::hash::Hash>(
    cache: &Mutex<HashMap<K, Arc<Config>>>,
    key: &K,
    make: impl FnOnce() -> Config,
) -> Arc<Config> {
    if let Some(c) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
        return c.clone();
    }
    let config = Arc::new(make());
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.clone(), config.clone());
    config
}

/// The settings of a schedule: the `[lease]` knobs' configuration, with the `[client]`
/// crash-loop, backoff and start-timeout settings as the real parser read them from a file
/// of their own (they depend on no other setting).
fn settings_for(lease: &LeaseKnobs, client: &ClientKnobs) -> Settings {
    let base = cached(&LEASE_CONFIGS, lease, || {
        parse(lease, &ClientKnobs::defaults())
    });
    let own = cached(&CLIENT_CONFIGS, client, || {
        parse(
            &LeaseKnobs {
                d: 15,
                margin: None,
                renew: None,
                poll_ms: 500,
                quarantine: 0,
                grace_ms: None,
            },
            client,
        )
    });
    let mut params = base.machine_params(0);
    let theirs = own.machine_params(0);
    params.crash_loop_max_exits = theirs.crash_loop_max_exits;
    params.crash_loop_window = theirs.crash_loop_window;
    params.restart_backoff = theirs.restart_backoff;
    params.start_timeout = theirs.start_timeout;
    let summary = format!(
        "D {}s, R {}s, M {}s, grace {}ms, poll {}ms, quarantine {}s, crash loop {} in {}s, backoff {}ms, start timeout {}s",
        params.lease.as_secs_f64(),
        params.renew_every.as_secs_f64(),
        params.margin.as_secs_f64(),
        base.client.fence_grace.as_millis(),
        params.standby_poll.as_millis(),
        params.quarantine.as_secs(),
        params.crash_loop_max_exits,
        params.crash_loop_window.as_secs(),
        params.restart_backoff.as_millis(),
        params.start_timeout.as_secs(),
    );
    Settings {
        summary,
        lease: base.lease_duration(),
        grace: base.client.fence_grace,
        op_timeout: (params.renew_every / 2).min(Duration::from_secs(5)),
        params,
    }
}

/// A clock rate within the bound, at one of its ends half of the time.
fn draw_ppm(rng: &mut Rng) -> u64 {
    match rng.below(4) {
        0 => 1_000_000 - DRIFT_PPM,
        1 => 1_000_000 + DRIFT_PPM,
        _ => rng.range(1_000_000 - DRIFT_PPM, 1_000_000 + DRIFT_PPM),
    }
}

/// The longest one-way latency outside outages and slow links.
pub fn max_latency(settings: &Settings) -> Us {
    2 * us(settings.op_timeout)
}

/// How long a liveness probe waits for the identity to be served again, and why.
pub fn probe_bound(settings: &Settings, probe: Probe) -> Us {
    let p = &settings.params;
    let poll = us(p.standby_poll + p.poll_jitter);
    let quarantine = us(p.quarantine);
    let base = match probe {
        // The store's lease must run out first: D + R, per the bound.
        Probe::Crash | Probe::FreezeDaemon | Probe::FreezeVm => {
            us(p.lease) + us(p.renew_every) + poll + quarantine
        }
        // A graceful stop releases: the fence (at most the grace), then a standby's poll.
        Probe::Terminate => us(settings.grace) + poll + quarantine,
    };
    // Clock rates (each clock within the bound), and a second for the requests of the
    // list, the acquire, the key fetch and the client's start, all calm.
    base + base * 2 * DRIFT_PPM / 1_000_000 + SEC
}

impl Plan {
    /// The schedule of `seed`.
    pub fn draw(seed: u64) -> Self {
        let mut rng = Rng::new(seed, 1);
        let lease = LeaseKnobs::draw(&mut rng);
        let client = ClientKnobs::draw(&mut rng);
        let settings = Arc::new(settings_for(&lease, &client));
        // One to three identities, and mostly one or two standbys (polling standbys are
        // most of a schedule's events); now and then none.
        let identities = rng.pick(&[1, 1, 2, 2, 2, 3]) as usize;
        let nodes = identities + rng.pick(&[0, 1, 1, 1, 1, 1, 2]) as usize;
        let node_ppm = (0..nodes).map(|_| draw_ppm(&mut rng)).collect();
        let store_ppm = draw_ppm(&mut rng);
        let starts = (0..nodes).map(|_| rng.below(2 * SEC)).collect();
        let weather = rng.pick(&[0, 1, 1, 1, 2]);
        let loss_permille = rng.pick(&[0, 0, 5, 20, 100]);
        let d = settings.d();
        // Faults fall in the first part; a liveness probe, if any, comes after it.
        let chaos = d * rng.range(10, 20) / 10 + 3 * SEC;
        let mut horizon = chaos;
        let mut faults = Vec::new();

        // The probe's window (from `lead` before it to its bound after it) stays free of
        // other faults, and so do the requests' latencies.
        let lead = max_latency(&settings) + SEC;
        let mut windows = Vec::new();
        if rng.percent(40) {
            let probe = rng.pick(&[
                Probe::Crash,
                Probe::FreezeDaemon,
                Probe::FreezeVm,
                Probe::Terminate,
            ]);
            let bound = probe_bound(&settings, probe);
            let at = chaos + rng.range(lead, lead + d / 2);
            horizon = at + bound + SEC;
            windows.push((at - lead, horizon));
            faults.push(Fault {
                at,
                kind: FaultKind::Probe(probe),
            });
        }
        let quiet = |at: Us, end: Us| windows.iter().all(|&(a, b)| end < a || at > b);

        let count = rng.pick(&[0, 1, 2, 3, 3, 4, 5, 6, 8]);
        for _ in 0..count {
            let at = rng.below(chaos);
            let node = rng.below(nodes as u64) as usize;
            let len = match rng.below(3) {
                0 => rng.range(100 * MS, SEC),
                1 => rng.range(SEC, d),
                _ => rng.range(d / 2, 2 * d),
            };
            let kind = match rng.below(100) {
                0..=19 => FaultKind::Freeze {
                    node,
                    what: rng.pick(&[Frozen::Daemon, Frozen::Daemon, Frozen::Guard, Frozen::Vm]),
                    len,
                },
                20..=34 => {
                    let what =
                        rng.pick(&[Killed::Daemon, Killed::Guard, Killed::Client, Killed::Vm]);
                    FaultKind::Crash {
                        node,
                        what,
                        down: rng.range(5 * SEC, 30 * SEC),
                    }
                }
                35..=44 => FaultKind::Terminate {
                    node,
                    unit: rng.percent(50),
                    down: rng.range(2 * SEC, 10 * SEC),
                },
                45..=54 => FaultKind::Break {
                    identity: rng.below(identities as u64) as usize,
                },
                55..=66 => FaultKind::Outage {
                    mode: match rng.below(3) {
                        0 => Outage::Errors,
                        1 => Outage::BlackHole,
                        _ => Outage::Slow(rng.range(100 * MS, 2 * us(settings.op_timeout))),
                    },
                    len,
                },
                67..=74 => FaultKind::Partition { node, len },
                75..=86 => FaultKind::SlowLink {
                    node,
                    len,
                    extra: rng.range(us(settings.op_timeout) / 2, d),
                },
                87..=91 => FaultKind::CrashLoop { node, len },
                92..=95 => FaultKind::CannotStart { node, len },
                _ => FaultKind::SecretsDown { node, len },
            };
            let fault = Fault { at, kind };
            // The daemon and the guard stopped at once while the client runs is outside
            // the design: each is the other's backstop, and nothing else on the VM can stop
            // the client before systemd's TimeoutStopSec (see docs/architecture.md). Such
            // overlaps are not drawn: two freezes, or a guard frozen while a killed daemon
            // waits for its unit to empty (found by seed 11154021 before this rule).
            let dead_daemon = |f: &Fault, g: &Fault| match (f.kind, g.kind) {
                (
                    FaultKind::Crash {
                        node: a,
                        what: Killed::Daemon,
                        ..
                    },
                    FaultKind::Freeze {
                        node: b,
                        what: Frozen::Guard,
                        ..
                    },
                ) => a == b && g.at < f.at + TIMEOUT_STOP_SEC && f.at < g.end(),
                _ => false,
            };
            let both_stopped = faults
                .iter()
                .any(|f: &Fault| dead_daemon(f, &fault) || dead_daemon(&fault, f))
                || faults.iter().any(|f: &Fault| match (f.kind, fault.kind) {
                    (
                        FaultKind::Freeze {
                            node: a, what: x, ..
                        },
                        FaultKind::Freeze {
                            node: b, what: y, ..
                        },
                    ) => {
                        a == b
                            && x != y
                            && x != Frozen::Vm
                            && y != Frozen::Vm
                            && f.at < fault.end()
                            && fault.at < f.end()
                    }
                    _ => false,
                });
            if !both_stopped && quiet(fault.at.saturating_sub(lead), fault.end() + lead) {
                faults.push(fault);
            }
        }
        faults.sort_by_key(|f| f.at);
        Self {
            seed,
            settings,
            nodes,
            identities,
            node_ppm,
            store_ppm,
            starts,
            weather,
            loss_permille,
            horizon,
            calm_from: windows.first().map_or(Us::MAX, |w| w.0),
            faults,
            planted: Planted::None,
        }
    }

    /// The same schedule with only the faults whose indices are in `keep`.
    pub fn with_faults(&self, keep: &[usize]) -> Self {
        let mut plan = self.clone();
        plan.faults = keep.iter().map(|&i| self.faults[i]).collect();
        plan
    }

    /// The same schedule run against a model with `bug` planted.
    pub fn with_planted(&self, bug: Planted) -> Self {
        Self {
            planted: bug,
            ..self.clone()
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: {} nodes, {} identities, horizon {}; {}",
            self.seed,
            self.nodes,
            self.identities,
            secs(self.horizon),
            self.settings.summary
        )?;
        let rates: Vec<String> = self
            .node_ppm
            .iter()
            .map(|p| format!("{:+.2}%", (*p as f64 - 1e6) / 1e4))
            .collect();
        writeln!(
            f,
            "  clock rates: nodes {}, store {:+.2}%; latency {}, loss {}‰",
            rates.join(" "),
            (self.store_ppm as f64 - 1e6) / 1e4,
            ["calm", "normal", "wild"][self.weather as usize],
            self.loss_permille
        )?;
        if self.planted != Planted::None {
            writeln!(f, "  planted in the model: {:?}", self.planted)?;
        }
        for (i, fault) in self.faults.iter().enumerate() {
            writeln!(f, "  fault {i}: {fault}")?;
        }
        Ok(())
    }
}
