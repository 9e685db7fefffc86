//! What the daemon shows about itself: the status snapshot behind `/status`, `/readyz` and
//! the systemd STATUS line, and the counters behind `/metrics` (Prometheus text format).
//!
//! The control loop writes, the HTTP server reads; one mutex each, held for microseconds.
//! Nothing here ever holds key material: identities and addresses are public.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use crate::machine::{MonoTime, StateKind};

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

/// A latency histogram in Prometheus' cumulative form.
#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if s <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += s;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, count) in LATENCY_BUCKETS.iter().zip(self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// Counters since the daemon started.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub acquisitions: u64,
    pub renewals: u64,
    /// Renew failures by kind: `lost`, `transient`.
    pub renew_failures: BTreeMap<&'static str, u64>,
    /// Fences by reason (the machine's reason names).
    pub fences: BTreeMap<&'static str, u64>,
    /// Every request made to the lease or secret store, by operation.
    pub store_requests: BTreeMap<&'static str, u64>,
    pub client_starts: u64,
    pub client_exits: u64,
    /// Fences the guard did not confirm in time, so the daemon killed the client itself.
    pub backstop_kills: u64,
    renew_latency: Histogram,
    hand_off_latency: Histogram,
}

impl Metrics {
    pub fn observe_renew(&mut self, d: Duration) {
        self.renew_latency.observe(d);
    }

    pub fn observe_hand_off(&mut self, d: Duration) {
        self.hand_off_latency.observe(d);
    }

    pub fn store_request(&mut self, op: &'static str) {
        *self.store_requests.entry(op).or_default() += 1;
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {value}");
        };
        let _ = writeln!(
            out,
            "# HELP leased_state 1 for the control loop's current state, 0 for the others."
        );
        let _ = writeln!(out, "# TYPE leased_state gauge");
        for kind in [
            StateKind::Seeking,
            StateKind::Quarantine,
            StateKind::Holding,
            StateKind::Fenced,
            StateKind::Releasing,
            StateKind::Stopped,
        ] {
            let on = u8::from(snapshot.state == Some(kind));
            let _ = writeln!(out, "leased_state{{state=\"{}\"}} {on}", kind.as_str());
        }
        let _ = writeln!(
            out,
            "# HELP leased_serving 1 while holding an identity with the client running."
        );
        let _ = writeln!(out, "# TYPE leased_serving gauge");
        let _ = writeln!(out, "leased_serving {}", u8::from(snapshot.serving));
        counter(
            &mut out,
            "leased_acquisitions_total",
            "Leases acquired.",
            self.acquisitions,
        );
        counter(
            &mut out,
            "leased_renewals_total",
            "Successful lease renewals.",
            self.renewals,
        );
        let labelled = |out: &mut String,
                        name: &str,
                        help: &str,
                        label: &str,
                        values: &BTreeMap<&'static str, u64>,
                        known: &[&'static str]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let mut keys: Vec<&str> = known.to_vec();
            keys.extend(values.keys().copied().filter(|k| !known.contains(k)));
            for k in keys {
                let v = values.get(k).copied().unwrap_or(0);
                let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {v}");
            }
        };
        labelled(
            &mut out,
            "leased_renew_failures_total",
            "Failed lease renewals, by kind.",
            "kind",
            &self.renew_failures,
            &["lost", "transient"],
        );
        labelled(
            &mut out,
            "leased_fences_total",
            "Times the client's key was taken away, by reason.",
            "reason",
            &self.fences,
            &[
                "deadline_missed",
                "lease_lost",
                "crash_loop",
                "hand_off_failed",
                "shutdown",
            ],
        );
        labelled(
            &mut out,
            "leased_store_requests_total",
            "Requests to the lease and secret stores, by operation.",
            "op",
            &self.store_requests,
            &[],
        );
        counter(
            &mut out,
            "leased_client_starts_total",
            "Client starts, including restarts.",
            self.client_starts,
        );
        counter(
            &mut out,
            "leased_client_exits_total",
            "Client exits the daemon did not ask for.",
            self.client_exits,
        );
        counter(
            &mut out,
            "leased_backstop_kills_total",
            "Fences the guard did not confirm in time, so the daemon killed the client itself.",
            self.backstop_kills,
        );
        self.renew_latency.render(
            &mut out,
            "leased_renew_latency_seconds",
            "Time from sending a renew to its answer.",
        );
        self.hand_off_latency.render(
            &mut out,
            "leased_hand_off_latency_seconds",
            "Time from acquiring a lease to the client running with its key.",
        );
        out
    }
}

/// The snapshot and counters, shared between the loop and the HTTP server.
#[derive(Debug, Default)]
pub struct Telemetry {
    pub snapshot: Mutex<Snapshot>,
    pub metrics: Mutex<Metrics>,
}

impl Telemetry {
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn update_snapshot(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut self.snapshot.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn metrics(&self, f: impl FnOnce(&mut Metrics)) {
        f(&mut self.metrics.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn render_metrics(&self) -> String {
        let snapshot = self.snapshot();
        self.metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .render(&snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_every_family_with_cumulative_buckets() {
        let mut m = Metrics {
            acquisitions: 2,
            ..Metrics::default()
        };
        m.observe_renew(Duration::from_millis(3));
        m.observe_renew(Duration::from_millis(300));
        *m.fences.entry("lease_lost").or_default() += 1;
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
