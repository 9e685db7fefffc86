//! What a store's run shows: the overlap check over the sign log, each fault's fence lag
//! and take-over, every gap in an identity's signing held against the bound of the faults
//! that explain it, and the hygiene findings.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::faults::{Kind, Timing};
use super::nanos;
use super::world::{FaultRecord, Outcome};
use crate::overlap::{self, CheckParams, Interval};

/// Whether a key file left on a node whose daemon is frozen and whose guard was killed
/// fails the run. The run found such files (nothing of the node ran to delete them until
/// the daemon thawed); the guard's key janitor now deletes them when the guard dies, so
/// they fail the run like any other key file on a fenced node. They are still reported
/// under their own name, `key_files_while_daemon_frozen_and_guard_killed`.
pub const FROZEN_DAEMON_KEY_FILE_FAILS: bool = true;

/// A span of one node signing one identity, for the timeline and the analysis: lines at
/// most 1 s apart belong together.
#[derive(Debug, Clone)]
pub struct Span {
    pub identity: String,
    pub node: String,
    pub start: u64,
    pub end: u64,
}

/// What one fault did to the identity its target held.
#[derive(Debug, Clone)]
pub struct FaultResult {
    pub fault: usize,
    pub identity: String,
    /// Seconds from the fault to the holder's client's last signature.
    pub fence_lag: Option<f64>,
    /// Seconds from the fault (from its end, for storage faults) to the identity's next
    /// signature, by any node.
    pub takeover: Option<f64>,
    /// The bound on `takeover`, before any extension for a missing standby.
    pub bound: f64,
}

/// One store's findings.
#[derive(Debug)]
pub struct Analysis {
    pub spans: Vec<Span>,
    pub overlaps: Vec<String>,
    pub results: Vec<FaultResult>,
    /// Gaps in an identity's signing longer than the faults explain.
    pub liveness: Vec<String>,
    /// The same gaps: (identity name, signing stopped, signing resumed or the teardown).
    pub gap_windows: Vec<(String, u64, u64)>,
    /// Fence lags longer than their fault's bound.
    pub late_fences: Vec<String>,
    pub faults_by_kind: BTreeMap<String, usize>,
    pub injected: usize,
}

pub fn analyse(o: &Outcome, timing: &Timing) -> Analysis {
    let signings = match overlap::parse_log("sign.log", &o.sign_log) {
        Ok(s) => s,
        Err(e) => {
            return Analysis {
                spans: Vec::new(),
                overlaps: vec![format!("the sign log cannot be read: {e}")],
                results: Vec::new(),
                liveness: Vec::new(),
                gap_windows: Vec::new(),
                late_fences: Vec::new(),
                faults_by_kind: BTreeMap::new(),
                injected: 0,
            }
        }
    };
    // A killed client's signing ends where its daemon saw its process group gone, when
    // that came before the end the tail would give it.
    let signings =
        overlap::end_at_groups_gone(&signings, &o.groups_gone, CheckParams::default().tail);
    let overlaps = match overlap::check(&signings, CheckParams::default()) {
        Ok(_) => Vec::new(),
        Err(msg) => vec![msg],
    };
    let loose = CheckParams {
        max_gap: Duration::from_secs(1),
        tail: Duration::from_millis(50),
    };
    // One span per client process: a node whose client is restarted (or whose daemon is,
    // and takes the identity back) starts a new span.
    let by_client: Vec<overlap::Signing> = signings
        .iter()
        .map(|s| overlap::Signing {
            writer: format!("{} {}", s.writer, s.pid.unwrap_or(0)),
            ..s.clone()
        })
        .collect();
    let spans: Vec<Span> = overlap::intervals(&by_client, loose)
        .into_iter()
        .map(|i: Interval| Span {
            identity: i.identity,
            node: i
                .writer
                .split_once(' ')
                .map_or(i.writer.clone(), |(n, _)| n.to_string()),
            start: i.start,
            end: i.end,
        })
        .collect();
    let mut faults_by_kind = BTreeMap::new();
    let mut injected = 0;
    for f in &o.faults {
        if f.detail.starts_with("not injected") {
            continue;
        }
        let name = match f.group {
            Some((g, c)) if g == f.id => c.as_str().to_string(),
            Some(_) => continue,
            None => f.kind.as_str().to_string(),
        };
        *faults_by_kind.entry(name).or_insert(0) += 1;
        injected += 1;
    }
    let mut results = Vec::new();
    let mut late_fences = Vec::new();
    for span in spans.iter().filter(|s| s.end < o.teardown) {
        let Some(f) = cause(o, span, timing) else {
            continue;
        };
        let identity = span.identity.clone();
        let reference = if f.kind.is_storage() {
            f.cleared.max(f.at)
        } else {
            f.at
        };
        let lag = span.end.saturating_sub(f.at);
        let fence_lag = (!matches!(
            f.kind,
            Kind::ClientKill | Kind::ClientTerm | Kind::ClientStop
        ))
        .then_some(secs(lag));
        let next = spans
            .iter()
            .filter(|s| s.identity == identity && s.start >= span.end)
            .map(|s| s.start)
            .min();
        let deadline = timing.takeover_deadline(f.kind, f.at, f.cleared);
        results.push(FaultResult {
            fault: f.id,
            identity,
            fence_lag,
            takeover: next
                .filter(|n| *n < o.teardown)
                .map(|n| secs(n.saturating_sub(reference))),
            bound: secs(deadline.saturating_sub(reference)),
        });
    }
    for f in &o.faults {
        late_fences.extend(late_fence(o, &spans, f, timing));
    }
    let (liveness, gap_windows) = gaps(o, &spans, timing);
    Analysis {
        spans,
        overlaps,
        results,
        liveness,
        gap_windows,
        late_fences,
        faults_by_kind,
        injected,
    }
}

/// The fault that ended `span`: of the faults that could have (on its node or its identity
/// and recent enough for their fence window, or storage), the latest on its node or
/// identity, else the latest storage fault.
fn cause<'a>(o: &'a Outcome, span: &Span, timing: &Timing) -> Option<&'a FaultRecord> {
    let slack = nanos(Duration::from_millis(200));
    let could = |f: &&FaultRecord| {
        let from = if f.kind == Kind::Break {
            f.cleared.max(f.at)
        } else {
            f.at
        };
        f.at <= span.end + slack
            && f.at + slack >= span.start
            && span.end <= from + nanos(timing.fence_window(f.kind)) + slack
    };
    let specific = o
        .faults
        .iter()
        .filter(could)
        .filter(|f| match f.kind {
            Kind::Break => f.took_effect && f.identity.as_deref() == Some(span.identity.as_str()),
            k if k.is_process() => f.node.as_deref() == Some(span.node.as_str()),
            _ => false,
        })
        .max_by_key(|f| f.at);
    specific.or_else(|| {
        o.faults
            .iter()
            .filter(could)
            .filter(|f| f.kind.is_storage())
            .max_by_key(|f| f.at)
    })
}

/// Whether fault `f` takes its target's right to sign away for certain, whatever else
/// happens: then the holder's client must stop within the fault's fence window.
fn must_fence(f: &FaultRecord, timing: &Timing) -> bool {
    if !f.took_effect {
        return false;
    }
    let lasted = f.cleared.saturating_sub(f.at) >= nanos(timing.fence_window(f.kind));
    match f.kind {
        Kind::DaemonKill
        | Kind::DaemonTerm
        | Kind::GuardKill
        | Kind::GuardTerm
        | Kind::ClientKill
        | Kind::ClientTerm
        | Kind::Break
        | Kind::ContainerRecreate => true,
        Kind::DaemonStop
        | Kind::BlackHole
        | Kind::Status503
        | Kind::Status429
        | Kind::Resets
        | Kind::AzuriteRestart
        | Kind::SqliteLocked => lasted,
        // A frozen client stops at once and may resume: nothing to hold it to.
        Kind::ClientStop | Kind::GuardStop | Kind::Slow | Kind::BadConfig => false,
    }
}

/// A holder that signed on past the fence window of a fault that must fence it.
fn late_fence(o: &Outcome, spans: &[Span], f: &FaultRecord, timing: &Timing) -> Vec<String> {
    if !must_fence(f, timing) {
        return Vec::new();
    }
    let mut window = nanos(timing.fence_window(f.kind));
    let slack = nanos(Duration::from_millis(100));
    // A break counts from when its command finished (it may have waited for the store).
    let from = if f.kind == Kind::Break {
        f.cleared.max(f.at)
    } else {
        f.at
    };
    // A storage fault that begins inside the window can hold back the very renew that
    // would learn of the fault (found by seed 2830828511: a break, then the sqlite file
    // write-locked for 11 s); the holder then fences by F, as for that storage fault.
    if !f.kind.is_storage() {
        for g in o.faults.iter().filter(|g| g.kind.is_storage()) {
            if g.at <= from + window && g.cleared.max(g.at) >= from {
                let by_storage = g.at + nanos(timing.fence_window(g.kind));
                window = window.max(by_storage.saturating_sub(from));
            }
        }
    }
    spans
        .iter()
        .filter(|s| s.start + slack <= f.at && f.at <= s.end && s.end > from + window)
        .filter(|s| s.end < o.teardown || f.at + window < o.teardown)
        .filter(|s| match (f.kind, &f.node, &f.identity) {
            (k, _, _) if k.is_storage() => true,
            (Kind::Break, _, Some(id)) => &s.identity == id,
            (_, Some(node), _) => &s.node == node,
            _ => false,
        })
        .map(|s| {
            format!(
                "fault #{} {} ({}) at +{:.1} s: {} went on signing {} for {:.3} s, bound {:.3} s",
                f.id,
                f.kind.as_str(),
                f.node.as_deref().unwrap_or("storage"),
                secs(f.at.saturating_sub(o.started)),
                s.node,
                s.identity,
                secs(s.end.saturating_sub(f.at)),
                secs(window + from - f.at)
            )
        })
        .collect()
}

/// Every gap in every identity's signing, held against the faults that explain it.
fn gaps(o: &Outcome, spans: &[Span], timing: &Timing) -> (Vec<String>, Vec<(String, u64, u64)>) {
    let mut out = Vec::new();
    let mut windows = Vec::new();
    for (name, address) in &o.identities {
        let mut mine: Vec<&Span> = spans.iter().filter(|s| &s.identity == address).collect();
        mine.sort_by_key(|s| s.start);
        // Coverage: the union of the spans.
        let mut covered: Vec<(u64, u64, &str)> = Vec::new();
        for s in mine {
            match covered.last_mut() {
                Some(last) if s.start <= last.1 => {
                    if s.end > last.1 {
                        last.1 = s.end;
                        last.2 = &s.node;
                    }
                }
                _ => covered.push((s.start, s.end, &s.node)),
            }
        }
        if covered.is_empty() {
            out.push(format!("{name} ({address}) never signed"));
            continue;
        }
        for (i, (_, e, node)) in covered.iter().enumerate() {
            let e = *e;
            if e >= o.teardown {
                break;
            }
            let n = covered.get(i + 1).map_or(o.teardown, |c| c.0);
            let (deadline, reasons) = deadline_for_gap(o, spans, timing, address, node, e, n);
            if n > deadline {
                windows.push((name.clone(), e, n));
                out.push(format!(
                    "{name} ({address}) was not signed for {:.3} s after {node} stopped at +{:.3} s; \
                     bound {:.3} s ({})",
                    secs(n - e),
                    secs(e.saturating_sub(o.started)),
                    secs(deadline.saturating_sub(e)),
                    if reasons.is_empty() {
                        "no fault explains the gap".to_string()
                    } else {
                        reasons.join("; ")
                    }
                ));
            }
        }
    }
    (out, windows)
}

/// What the daemons said about identity `name` from `lead` before `from` until `to`, and
/// the faults injected then, one line each on the run's clock (`+secs node: message`), so
/// that a failed gap can be understood from CI's output alone.
pub fn story(o: &Outcome, name: &str, from: u64, to: u64) -> Vec<String> {
    const LEAD: Duration = Duration::from_secs(20);
    const MOST: usize = 80;
    let from = from.saturating_sub(nanos(LEAD));
    let wall0 = o
        .wall_started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, nanos);
    let mut lines: Vec<(u64, String)> = o
        .faults
        .iter()
        .filter(|f| from <= f.at && f.at <= to)
        .map(|f| {
            (
                f.at,
                format!(
                    "fault #{} {} {}: {}",
                    f.id,
                    f.kind.as_str(),
                    f.node.as_deref().unwrap_or("storage"),
                    f.detail
                ),
            )
        })
        .collect();
    let mentions = |line: &str| {
        line.match_indices(name).any(|(i, _)| {
            !line[i + name.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
        })
    };
    let files = o
        .logs
        .as_deref()
        .and_then(|d| std::fs::read_dir(d).ok())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "stderr"));
    for path in files {
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        let node = file.split('.').next().unwrap_or_default().to_string();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines().filter(|l| mentions(l)) {
            let Some((stamp, rest)) = line.split_once(' ') else {
                continue;
            };
            let Some(wall) = rfc3339_nanos(stamp) else {
                continue;
            };
            let at = o.started + wall.saturating_sub(wall0);
            if wall >= wall0 && from <= at && at <= to {
                let message: String = rest.trim_start().chars().take(220).collect();
                lines.push((at, format!("{node}: {message}")));
            }
        }
    }
    lines.sort_by_key(|(at, _)| *at);
    let skip = lines.len().saturating_sub(MOST);
    lines
        .into_iter()
        .skip(skip)
        .map(|(at, text)| format!("+{:.3} {text}", secs(at.saturating_sub(o.started))))
        .collect()
}

/// Nanoseconds since the epoch of a UTC time stamp as `tracing` writes it
/// (`2026-12-01T05:29:56.999772Z`).
fn rfc3339_nanos(stamp: &str) -> Option<u64> {
    let stamp = stamp.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let digits: String = frac.chars().take(9).collect();
    let sub = digits.parse::<u64>().ok()? * 10u64.pow(9 - digits.len() as u32);
    // Days from the civil date (the proleptic Gregorian calendar, years from March).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(((days * 24 + hh) * 60 + mm) * 60 * 1_000_000_000 + ss * 1_000_000_000 + sub)
}

/// By when identity `address`, last signed by `node` until `e`, must be signed again; and
/// what explains the gap.
fn deadline_for_gap(
    o: &Outcome,
    spans: &[Span],
    timing: &Timing,
    address: &str,
    node: &str,
    e: u64,
    n: u64,
) -> (u64, Vec<String>) {
    // A gap nothing explains may last as long as a client's scheduling hiccup.
    let mut deadline = e + nanos(Duration::from_secs(3));
    let mut reasons = Vec::new();
    let lookback =
        |k: Kind| e.saturating_sub(nanos(timing.fence_window(k) + Duration::from_secs(1)));
    for f in &o.faults {
        let relevant = match (f.kind, &f.node, &f.identity) {
            (k, _, _) if k.is_storage() => f.cleared.max(f.at) >= lookback(k) && f.at <= n,
            (Kind::Break, _, Some(id)) => {
                f.took_effect
                    && id == address
                    && f.cleared.max(f.at) >= lookback(Kind::Break)
                    && f.at <= n
            }
            (Kind::BadConfig, _, _) => f.cleared >= e && f.at <= n,
            (k, Some(target), _) if k.is_process() => {
                (target == node && f.at >= lookback(k) && f.at <= n)
                    // A standby hit after it acquired this identity, before it signed.
                    || (target != node && !f.holder && f.at >= e && f.at <= n)
            }
            _ => false,
        };
        if relevant {
            let d = timing.takeover_deadline(f.kind, f.at, f.cleared);
            deadline = deadline.max(d);
            reasons.push(format!(
                "#{} {} {} at +{:.1} s",
                f.id,
                f.kind.as_str(),
                f.node.as_deref().unwrap_or(""),
                secs(f.at.saturating_sub(o.started))
            ));
        }
    }
    // Whenever no healthy standby could take it, the bound starts again from then.
    let step = nanos(Duration::from_millis(250));
    let mut t = e;
    let mut without = None;
    while t <= deadline.min(n) {
        if !has_standby(o, spans, timing, address, t) {
            deadline = deadline.max(t + nanos(timing.resume()));
            without.get_or_insert(t);
        }
        t += step;
    }
    if let Some(t) = without {
        reasons.push(format!(
            "no healthy standby from +{:.1} s",
            secs(t.saturating_sub(o.started))
        ));
    }
    (deadline, reasons)
}

/// Whether some node could take `address` at `t`: its daemon up and not frozen (and not
/// just restarted), signing nothing else, and not the one that gave it up lately.
fn has_standby(o: &Outcome, spans: &[Span], timing: &Timing, address: &str, t: u64) -> bool {
    let settle = nanos(Duration::from_secs(1));
    o.nodes.iter().any(|node| {
        let down = o
            .down
            .iter()
            .any(|w| &w.node == node && w.from <= t && t <= w.to + settle);
        let busy = spans.iter().any(|s| {
            &s.node == node
                && s.identity != address
                && s.start.saturating_sub(settle) <= t
                && t <= s.end + settle
        });
        let cooling = spans.iter().any(|s| {
            &s.node == node
                && s.identity == address
                && s.end <= t
                && t <= s.end + nanos(timing.crash_window)
        });
        !down && !busy && !cooling
    })
}

fn secs(ns: u64) -> f64 {
    Duration::from_nanos(ns).as_secs_f64()
}

/// The p50, p99 and max of `values` (seconds), or `None` when there are none.
pub fn percentiles(values: &[f64]) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    };
    Some((at(0.50), at(0.99), v[v.len() - 1]))
}

impl Analysis {
    pub fn takeovers(&self) -> Vec<f64> {
        self.results.iter().filter_map(|r| r.takeover).collect()
    }

    pub fn fence_lags(&self) -> Vec<f64> {
        self.results.iter().filter_map(|r| r.fence_lag).collect()
    }

    /// Every failed check, one line each.
    pub fn failures(&self, o: &Outcome) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(self.overlaps.iter().map(|m| format!("overlap: {m}")));
        out.extend(self.liveness.iter().map(|m| format!("liveness: {m}")));
        out.extend(self.late_fences.iter().map(|m| format!("late fence: {m}")));
        out.extend(o.key_file_findings.iter().map(|m| format!("key file: {m}")));
        if FROZEN_DAEMON_KEY_FILE_FAILS {
            out.extend(o.key_file_known.iter().map(|m| format!("key file: {m}")));
        }
        out.extend(
            o.key_files_left
                .iter()
                .map(|m| format!("key file left: {m}")),
        );
        out.extend(
            o.key_bytes_in_logs
                .iter()
                .map(|m| format!("key bytes: {m}")),
        );
        out.extend(
            o.processes_after
                .iter()
                .map(|m| format!("process left: {m}")),
        );
        out.extend(o.unexpected.iter().map(|m| format!("unexpected: {m}")));
        out.extend(
            o.not_signing_at_end
                .iter()
                .map(|m| format!("not signing at the end: {m}")),
        );
        out
    }

    /// Findings of the known gap that do not fail the run while
    /// [`FROZEN_DAEMON_KEY_FILE_FAILS`] is `false`.
    pub fn known_gaps(&self, o: &Outcome) -> Vec<String> {
        if FROZEN_DAEMON_KEY_FILE_FAILS {
            return Vec::new();
        }
        o.key_file_known
            .iter()
            .map(|m| format!("key file (known gap): {m}"))
            .collect()
    }

    /// The store's part of the JSON report.
    pub fn to_json(&self, o: &Outcome, timing: &Timing) -> Value {
        let pct = |v: &[f64]| {
            percentiles(v)
                .map(|(p50, p99, max)| json!({"p50": p50, "p99": p99, "max": max, "n": v.len()}))
        };
        let rel = |t: u64| secs(t.saturating_sub(o.started));
        let by_fault: BTreeMap<usize, Vec<&FaultResult>> =
            self.results.iter().fold(BTreeMap::new(), |mut m, r| {
                m.entry(r.fault).or_insert_with(Vec::new).push(r);
                m
            });
        let faults: Vec<Value> = o
            .faults
            .iter()
            .map(|f| {
                let results: Vec<Value> = by_fault
                    .get(&f.id)
                    .map(|rs| {
                        rs.iter()
                            .map(|r| {
                                json!({
                                    "identity": r.identity,
                                    "fence_lag_secs": r.fence_lag,
                                    "takeover_secs": r.takeover,
                                    "takeover_bound_secs": r.bound,
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                json!({
                    "id": f.id,
                    "kind": f.kind.as_str(),
                    "compound": f.group.map(|(g, c)| json!({"group": g, "name": c.as_str()})),
                    "node": f.node,
                    "identity": f.identity,
                    "holder": f.holder,
                    "at_secs": rel(f.at),
                    "cleared_secs": rel(f.cleared),
                    "detail": f.detail,
                    "took_effect": f.took_effect,
                    "fence_window_secs": timing.fence_window(f.kind).as_secs_f64(),
                    "disrupted": results,
                })
            })
            .collect();
        let mut per_kind: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for r in &self.results {
            let k = o.faults[r.fault].kind.as_str();
            let e = per_kind.entry(k).or_default();
            e.0.extend(r.takeover);
            e.1.extend(r.fence_lag);
        }
        let per_kind: BTreeMap<&str, Value> = per_kind
            .into_iter()
            .map(|(k, (t, f))| (k, json!({"takeover": pct(&t), "fence_lag": pct(&f)})))
            .collect();
        json!({
            "store": o.store.as_str(),
            "seed": o.seed,
            "faults_injected": self.injected,
            "faults_by_kind": self.faults_by_kind,
            "overlaps": self.overlaps.len(),
            "overlap_details": self.overlaps,
            "takeover_secs": pct(&self.takeovers()),
            "fence_lag_secs": pct(&self.fence_lags()),
            "per_kind": per_kind,
            "liveness_violations": self.liveness,
            "late_fences": self.late_fences,
            "key_files_on_fenced_nodes": o.key_file_findings,
            "key_files_while_daemon_frozen_and_guard_killed": o.key_file_known,
            "key_files_left": o.key_files_left,
            "key_bytes_in_logs": o.key_bytes_in_logs,
            "processes_before": o.processes_before,
            "processes_after": o.processes_after.len(),
            "processes_left": o.processes_after,
            "unexpected": o.unexpected,
            "not_signing_at_end": o.not_signing_at_end,
            "run_secs": rel(o.teardown),
            "faults_secs": secs(o.faults_ended.saturating_sub(o.started)),
            "signing_spans": self.spans.len(),
            "faults": faults,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{must_fence, rfc3339_nanos};
    use crate::chaos::faults::{Kind, Timing};
    use crate::chaos::world::FaultRecord;
    use std::time::Duration;

    #[test]
    fn only_a_break_that_took_effect_must_fence_its_holder() {
        let timing = Timing::for_lease(Duration::from_secs(15));
        let mut f = FaultRecord {
            id: 80,
            kind: Kind::Break,
            group: None,
            node: Some("vm-1".into()),
            identity: Some("0x21".into()),
            holder: true,
            at: 1_000,
            cleared: 5_000_000_000,
            detail: "leased break m0-v1 --yes".into(),
            took_effect: true,
        };
        assert!(must_fence(&f, &timing));
        f.took_effect = false;
        assert!(!must_fence(&f, &timing));
    }

    #[test]
    fn tracing_time_stamps_become_nanoseconds_since_the_epoch() {
        assert_eq!(rfc3339_nanos("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_nanos("2026-12-01T05:29:56.999772Z"),
            Some(1_796_102_996_999_772_000)
        );
        assert_eq!(
            rfc3339_nanos("2000-02-29T23:59:59Z"),
            Some(951_868_799_000_000_000)
        );
        assert_eq!(rfc3339_nanos("2026-12-01 05:29:56Z"), None);
        assert_eq!(rfc3339_nanos("INFO"), None);
    }
}
