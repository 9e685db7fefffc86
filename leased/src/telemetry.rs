//! What the daemon shows about itself: the status snapshot behind `/status`, `/readyz` and
//! the systemd STATUS line, and the counters behind `/metrics` (Prometheus text format).
//!
//! The control loop writes, the HTTP server reads: the snapshot behind one mutex held for
//! microseconds, the metrics in `prometheus-client`'s atomics. The label values of the
//! metrics are the machine's own enums ([`FenceReason`], [`StateKind`]), so a new reason
//! or state cannot be forgotten on the metrics page. Nothing here ever holds key material:
//! identities and addresses are public.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

use crate::machine::{FenceReason, MonoTime, StateKind};

/// Upper bounds (seconds) of the latency histograms' buckets.
const LATENCY_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// The control loop's view of itself, refreshed after every event.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub node: String,
    pub state: Option<StateKind>,
    pub identity: Option<String>,
    pub address: Option<String>,
    pub epoch: Option<u64>,
    /// When the last successful acquire or renew request was sent.
    pub t_ok: Option<MonoTime>,
    /// The fence deadline F.
    pub fence_at: Option<MonoTime>,
    /// The lease duration D, to tell when the store's lease ends at the earliest.
    pub lease: Duration,
    /// Holding with the client running.
    pub serving: bool,
    /// The last time the control loop ran.
    pub heartbeat: Option<MonoTime>,
    /// The last fence: its reason, a detail line (may be empty) and when.
    pub last_fence: Option<(String, String, MonoTime)>,
}

impl Snapshot {
    /// `/status`: seconds are relative to `now`, so the reader needs no clock of ours.
    pub fn to_json(&self, now: MonoTime) -> Value {
        let secs_until = |t: Option<MonoTime>| {
            t.map(|t| {
                if t >= now {
                    t.saturating_duration_since(now).as_secs_f64()
                } else {
                    -now.saturating_duration_since(t).as_secs_f64()
                }
            })
        };
        json!({
            "node": self.node,
            "state": self.state.map(StateKind::as_str),
            "identity": self.identity,
            "address": self.address,
            "epoch": self.epoch,
            "serving": self.serving,
            "lease_expires_in_secs": secs_until(self.t_ok.map(|t| t + self.lease)),
            "last_renew_secs_ago": self.t_ok.map(|t| now.saturating_duration_since(t).as_secs_f64()),
            "fence_deadline_in_secs": secs_until(self.fence_at),
            "last_fence": self.last_fence.as_ref().map(|(reason, detail, at)| json!({
                "reason": reason,
                "detail": detail,
                "secs_ago": now.saturating_duration_since(*at).as_secs_f64(),
            })),
        })
    }

    /// The systemd STATUS line.
    pub fn status_line(&self) -> String {
        let state = self.state.map_or("starting", StateKind::as_str);
        match (&self.identity, &self.address) {
            (Some(id), Some(address)) => format!("{state} {id} ({address})"),
            (Some(id), None) => format!("{state} {id}"),
            _ => state.to_string(),
        }
    }
}

/// Why a renew failed, as the `kind` label of `leased_renew_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RenewFailure {
    /// The store said the lease is gone.
    Lost,
    /// No answer, or one that says neither way.
    Transient,
}

impl RenewFailure {
    const ALL: [Self; 2] = [Self::Lost, Self::Transient];

    fn as_str(self) -> &'static str {
        match self {
            Self::Lost => "lost",
            Self::Transient => "transient",
        }
    }
}

/// Every fence reason, so that each has a series from the start. The match makes a new
/// reason a compile error here until it is listed.
const FENCE_REASONS: [FenceReason; 5] = {
    const fn listed(r: FenceReason) -> FenceReason {
        match r {
            FenceReason::DeadlineMissed
            | FenceReason::LeaseLost
            | FenceReason::CrashLoop
            | FenceReason::HandOffFailed
            | FenceReason::Shutdown => r,
        }
    }
    [
        listed(FenceReason::DeadlineMissed),
        listed(FenceReason::LeaseLost),
        listed(FenceReason::CrashLoop),
        listed(FenceReason::HandOffFailed),
        listed(FenceReason::Shutdown),
    ]
};

/// Every state, for the `leased_state` gauge (same exhaustiveness check).
const STATES: [StateKind; 6] = {
    const fn listed(k: StateKind) -> StateKind {
        match k {
            StateKind::Seeking
            | StateKind::Quarantine
            | StateKind::Holding
            | StateKind::Fenced
            | StateKind::Releasing
            | StateKind::Stopped => k,
        }
    }
    [
        listed(StateKind::Seeking),
        listed(StateKind::Quarantine),
        listed(StateKind::Holding),
        listed(StateKind::Fenced),
        listed(StateKind::Releasing),
        listed(StateKind::Stopped),
    ]
};

// The label values are the domain's own enums, written with their stable names.
impl EncodeLabelValue for FenceReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for StateKind {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for RenewFailure {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: StateKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FenceLabels {
    reason: FenceReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RenewFailureLabels {
    kind: RenewFailure,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

/// The daemon's metrics (`prometheus-client`), registered once; counters since start.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    state: Family<StateLabels, Gauge>,
    serving: Gauge,
    pub acquisitions: Counter,
    /// Acquires refused because another node holds the record (a lost race: 409 on Azure).
    pub acquire_conflicts: Counter,
    pub renewals: Counter,
    renew_failures: Family<RenewFailureLabels, Counter>,
    fences: Family<FenceLabels, Counter>,
    store_requests: Family<OpLabels, Counter>,
    pub client_starts: Counter,
    pub client_exits: Counter,
    /// Fences the guard did not confirm in time, so the daemon killed the client itself.
    pub backstop_kills: Counter,
    /// Quarantines that saw the identity sealing elsewhere, or could not watch the chain.
    pub doppelgangers: Counter,
    renew_latency: Histogram,
    hand_off_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let state = Family::<StateLabels, Gauge>::default();
        for s in STATES {
            let _ = state.get_or_create(&StateLabels { state: s });
        }
        registry.register(
            "leased_state",
            "1 for the control loop's current state, 0 for the others",
            state.clone(),
        );
        let serving = Gauge::default();
        registry.register(
            "leased_serving",
            "1 while holding an identity with the client running",
            serving.clone(),
        );
        let acquisitions = Counter::default();
        registry.register(
            "leased_acquisitions",
            "Leases acquired",
            acquisitions.clone(),
        );
        let acquire_conflicts = Counter::default();
        registry.register(
            "leased_acquire_conflicts",
            "Acquires refused because another node held the record (lost races)",
            acquire_conflicts.clone(),
        );
        let renewals = Counter::default();
        registry.register(
            "leased_renewals",
            "Successful lease renewals",
            renewals.clone(),
        );
        let renew_failures = Family::<RenewFailureLabels, Counter>::default();
        for kind in RenewFailure::ALL {
            let _ = renew_failures.get_or_create(&RenewFailureLabels { kind });
        }
        registry.register(
            "leased_renew_failures",
            "Failed lease renewals, by kind",
            renew_failures.clone(),
        );
        let fences = Family::<FenceLabels, Counter>::default();
        for reason in FENCE_REASONS {
            let _ = fences.get_or_create(&FenceLabels { reason });
        }
        registry.register(
            "leased_fences",
            "Times the client's key was taken away, by reason",
            fences.clone(),
        );
        let store_requests = Family::<OpLabels, Counter>::default();
        registry.register(
            "leased_store_requests",
            "Requests to the lease and secret stores, by operation",
            store_requests.clone(),
        );
        let client_starts = Counter::default();
        registry.register(
            "leased_client_starts",
            "Client starts, including restarts",
            client_starts.clone(),
        );
        let client_exits = Counter::default();
        registry.register(
            "leased_client_exits",
            "Client exits the daemon did not ask for",
            client_exits.clone(),
        );
        let backstop_kills = Counter::default();
        registry.register(
            "leased_backstop_kills",
            "Fences the guard did not confirm in time, so the daemon killed the client itself",
            backstop_kills.clone(),
        );
        let doppelgangers = Counter::default();
        registry.register(
            "leased_doppelgangers",
            "Leases given up in quarantine because the chain showed the identity sealing \
             elsewhere, or could not be watched",
            doppelgangers.clone(),
        );
        let renew_latency = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            "leased_renew_latency_seconds",
            "Time from sending a renew to its answer",
            renew_latency.clone(),
        );
        let hand_off_latency = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            "leased_hand_off_latency_seconds",
            "Time from acquiring a lease to the client running with its key",
            hand_off_latency.clone(),
        );
        Self {
            registry,
            state,
            serving,
            acquisitions,
            acquire_conflicts,
            renewals,
            renew_failures,
            fences,
            store_requests,
            client_starts,
            client_exits,
            backstop_kills,
            doppelgangers,
            renew_latency,
            hand_off_latency,
        }
    }
}

impl Metrics {
    pub fn observe_renew(&self, d: Duration) {
        self.renew_latency.observe(d.as_secs_f64());
    }

    pub fn observe_hand_off(&self, d: Duration) {
        self.hand_off_latency.observe(d.as_secs_f64());
    }

    pub fn store_request(&self, op: &'static str) {
        self.store_requests.get_or_create(&OpLabels { op }).inc();
    }

    pub fn fence(&self, reason: FenceReason) {
        self.fences.get_or_create(&FenceLabels { reason }).inc();
    }

    pub fn renew_failure(&self, kind: RenewFailure) {
        self.renew_failures
            .get_or_create(&RenewFailureLabels { kind })
            .inc();
    }

    /// The OpenMetrics text exposition, with the gauges set from `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        for s in STATES {
            let on = i64::from(snapshot.state == Some(s));
            self.state.get_or_create(&StateLabels { state: s }).set(on);
        }
        self.serving.set(i64::from(snapshot.serving));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The snapshot and counters, shared between the loop and the HTTP server.
#[derive(Debug, Default)]
pub struct Telemetry {
    pub snapshot: Mutex<Snapshot>,
    pub metrics: Metrics,
}

impl Telemetry {
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Shows the machine's state (and `address`, the identity's, once known) as of `now`;
    /// returns the status line.
    pub fn show(
        &self,
        machine: &crate::machine::Machine,
        address: Option<String>,
        now: MonoTime,
    ) -> String {
        let state = machine.state();
        let renewal = state.renewal().copied();
        let mut line = String::new();
        self.update_snapshot(|s| {
            s.state = Some(state.kind());
            s.identity = state.identity().map(|n| n.to_string());
            s.address = address;
            s.epoch = machine.epoch();
            s.t_ok = renewal.map(|r| r.t_ok);
            s.fence_at = renewal.map(|r| r.fence_at);
            s.serving = state.is_serving();
            s.heartbeat = Some(now);
            line = s.status_line();
        });
        line
    }

    pub fn update_snapshot(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut self.snapshot.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn metrics<T>(&self, f: impl FnOnce(&Metrics) -> T) -> T {
        f(&self.metrics)
    }

    pub fn render_metrics(&self) -> String {
        let snapshot = self.snapshot();
        self.metrics.render(&snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_every_family_with_cumulative_buckets() {
        let m = Metrics::default();
        m.acquisitions.inc();
        m.acquisitions.inc();
        m.observe_renew(Duration::from_millis(3));
        m.observe_renew(Duration::from_millis(300));
        m.fence(FenceReason::LeaseLost);
        let s = Snapshot {
            state: Some(StateKind::Holding),
            serving: true,
            ..Snapshot::default()
        };
        let text = m.render(&s);
        assert!(text.contains("leased_state{state=\"holding\"} 1"));
        assert!(text.contains("leased_state{state=\"seeking\"} 0"));
        assert!(text.contains("leased_acquisitions_total 2"));
        assert!(text.contains("leased_fences_total{reason=\"lease_lost\"} 1"));
        assert!(text.contains("leased_fences_total{reason=\"shutdown\"} 0"));
        assert!(text.contains("leased_renew_failures_total{kind=\"transient\"} 0"));
        assert!(text.contains("leased_renew_latency_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("leased_renew_latency_seconds_bucket{le=\"0.5\"} 2"));
        assert!(text.contains("leased_renew_latency_seconds_count 2"));
        assert!(text.contains("# TYPE leased_hand_off_latency_seconds histogram"));
    }

    #[test]
    fn status_counts_down_to_the_deadlines() {
        let s = Snapshot {
            state: Some(StateKind::Holding),
            identity: Some("m0-v1".into()),
            t_ok: Some(MonoTime::from_millis(10_000)),
            fence_at: Some(MonoTime::from_millis(20_000)),
            lease: Duration::from_secs(15),
            ..Snapshot::default()
        };
        let v = s.to_json(MonoTime::from_millis(12_000));
        assert_eq!(v["lease_expires_in_secs"], 13.0);
        assert_eq!(v["last_renew_secs_ago"], 2.0);
        assert_eq!(v["fence_deadline_in_secs"], 8.0);
        assert_eq!(v["identity"], "m0-v1");
        assert_eq!(s.status_line(), "holding m0-v1");
    }
}
