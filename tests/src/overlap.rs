//! The overlap checker: reads stand-in client sign logs and asserts the project's safety
//! invariant, that for every identity the signing intervals of different writers never
//! overlap.
//!
//! A log line is `signing with ADDR at T [key=value …]` or `stopped with ADDR at T
//! [key=value …]` (see `src/bin/standin_client.rs`), T being `CLOCK_MONOTONIC` nanoseconds.
//! The writer of a line is its `node=` field when it has one, else the label the caller gave
//! its log (one log per daemon works without `node=`; one shared log needs it). Identities
//! compare case-insensitively.
//!
//! A writer's consecutive lines for one identity form one interval while they are at most
//! `max_gap` apart. The interval ends at its `stopped` line when it has one (a graceful stop,
//! timed exactly), and otherwise `tail` after its last line, because a killed signer may
//! have signed once more just before it died. Intervals of different writers for one
//! identity must be disjoint (touching ends are allowed).
//!
//! The checker must never pass what it cannot read: an unknown line is an error, not noise.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// How lines group into intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckParams {
    /// Lines of one writer further apart than this start a new interval.
    pub max_gap: Duration,
    /// How long after its last `signing` line an interval without a `stopped` line ends.
    pub tail: Duration,
}

impl CheckParams {
    /// For a signer that writes every `period`: gap 3 × period, tail one period.
    pub fn for_period(period: Duration) -> Self {
        Self {
            max_gap: period * 3,
            tail: period,
        }
    }
}

impl Default for CheckParams {
    /// The stand-in's 50 ms period.
    fn default() -> Self {
        Self::for_period(Duration::from_millis(50))
    }
}

/// One parsed log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signing {
    /// Lower-case identity (address).
    pub identity: String,
    pub writer: String,
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub at: u64,
    /// A `stopped` line rather than a `signing` line.
    pub stop: bool,
    /// The writing process (`pid=`), when the line names it.
    pub pid: Option<u32>,
    /// Where it came from, for messages: `LABEL:LINE`.
    pub origin: String,
}

/// A span during which one writer held one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub identity: String,
    pub writer: String,
    pub start: u64,
    pub end: u64,
    /// Signing lines in it.
    pub lines: usize,
    /// Origin of its first and last line.
    pub first: String,
    pub last: String,
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} by {}: [{}, {}] ({:.3} s, {} lines, {} .. {})",
            self.identity,
            self.writer,
            self.start,
            self.end,
            Duration::from_nanos(self.end - self.start).as_secs_f64(),
            self.lines,
            self.first,
            self.last
        )
    }
}

/// Why the logs could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: not a sign-log line: {line:?}")]
    BadLine { origin: String, line: String },
}

/// Parses one log's text. `label` names the writer of lines without `node=`.
pub fn parse_log(label: &str, text: &str) -> Result<Vec<Signing>, LogError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let origin = format!("{label}:{}", i + 1);
        let bad = || LogError::BadLine {
            origin: origin.clone(),
            line: line.chars().take(200).collect(),
        };
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        let (stop, identity, at, fields) = match words.as_slice() {
            ["signing", "with", id, "at", t, rest @ ..] => (false, *id, *t, rest),
            ["stopped", "with", id, "at", t, rest @ ..] => (true, *id, *t, rest),
            _ => return Err(bad()),
        };
        let at: u64 = at.parse().map_err(|_| bad())?;
        let mut writer = label.to_string();
        let mut pid = None;
        for field in fields {
            let (k, v) = field.split_once('=').ok_or_else(bad)?;
            match k {
                "node" => writer = v.to_string(),
                "pid" => pid = Some(v.parse().map_err(|_| bad())?),
                _ => {}
            }
        }
        out.push(Signing {
            identity: identity.to_ascii_lowercase(),
            writer,
            at,
            stop,
            pid,
            origin,
        });
    }
    Ok(out)
}

/// A daemon saw no process of its client's group left (`client_pid=… gone_mono_ns=…` in
/// its log): the client `pid` of `writer` signed nothing at or after `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupGone {
    pub writer: String,
    pub pid: u32,
    pub at: u64,
    /// Where it came from, for messages.
    pub origin: String,
}

/// Reads the `GroupGone` records of one daemon log (`writer`'s).
pub fn groups_gone(writer: &str, label: &str, log: &str) -> Vec<GroupGone> {
    let mut out = Vec::new();
    for (i, line) in log.lines().enumerate() {
        let field = |name: &str| {
            line.split_ascii_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.trim_end_matches(',').parse::<u64>().ok())
        };
        if let (Some(pid), Some(at)) = (field("client_pid"), field("gone_mono_ns")) {
            if let Ok(pid) = u32::try_from(pid) {
                out.push(GroupGone {
                    writer: writer.to_string(),
                    pid,
                    at,
                    origin: format!("{label}:{}", i + 1),
                });
            }
        }
    }
    out
}

/// Ends killed clients' signing where their daemon saw their group gone, instead of
/// `tail` after their last line: for each record, a `stopped` line at `at` for the
/// identity the process signed last, when `at` falls within `tail` after that process's
/// last line and before any later line of its writer on that identity. A record that does
/// not fit (no such process, a line of its writer in between, or later than the tail's
/// end, which then ends the interval first) changes nothing: a record can only shorten a
/// tail, never add signing time.
pub fn end_at_groups_gone(
    signings: &[Signing],
    gone: &[GroupGone],
    tail: Duration,
) -> Vec<Signing> {
    let tail = nanos(tail);
    let mut out = signings.to_vec();
    for g in gone {
        let last = signings
            .iter()
            .filter(|s| s.writer == g.writer && s.pid == Some(g.pid))
            .max_by_key(|s| (s.at, s.stop));
        let Some(last) =
            last.filter(|l| !l.stop && l.at <= g.at && g.at < l.at.saturating_add(tail))
        else {
            continue;
        };
        let in_between = signings.iter().any(|s| {
            s.writer == g.writer && s.identity == last.identity && s.at > last.at && s.at <= g.at
        });
        if !in_between {
            out.push(Signing {
                identity: last.identity.clone(),
                writer: g.writer.clone(),
                at: g.at,
                stop: true,
                pid: Some(g.pid),
                origin: format!("{} (client {}'s group gone)", g.origin, g.pid),
            });
        }
    }
    out
}

/// Builds every writer's intervals for every identity.
pub fn intervals(signings: &[Signing], params: CheckParams) -> Vec<Interval> {
    let mut by_key: BTreeMap<(&str, &str), Vec<&Signing>> = BTreeMap::new();
    for s in signings {
        by_key.entry((&s.identity, &s.writer)).or_default().push(s);
    }
    let max_gap = nanos(params.max_gap);
    let tail = nanos(params.tail);
    // While an interval is open its `end` is its last line; `finish` adds the tail unless
    // a `stopped` line ended it.
    let finish = |(mut iv, stopped): (Interval, bool)| {
        if !stopped {
            iv.end = iv.end.saturating_add(tail);
        }
        iv
    };
    let mut out = Vec::new();
    for ((identity, writer), mut lines) in by_key {
        lines.sort_by_key(|s| (s.at, s.stop));
        let mut current: Option<(Interval, bool)> = None;
        for s in lines {
            let continues = matches!(&current,
                Some((iv, stopped)) if !stopped && s.at.saturating_sub(iv.end) <= max_gap);
            if !continues {
                out.extend(current.take().map(finish));
                let iv = Interval {
                    identity: identity.to_string(),
                    writer: writer.to_string(),
                    start: s.at,
                    end: s.at,
                    lines: 0,
                    first: s.origin.clone(),
                    last: s.origin.clone(),
                };
                current = Some((iv, false));
            }
            if let Some((iv, stopped)) = current.as_mut() {
                iv.end = s.at;
                iv.last.clone_from(&s.origin);
                *stopped = s.stop;
                if !s.stop {
                    iv.lines += 1;
                }
            }
        }
        out.extend(current.map(finish));
    }
    out.sort_by(|a, b| (&a.identity, a.start).cmp(&(&b.identity, b.start)));
    out
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Every pair of intervals of different writers on one identity that overlap.
pub fn overlaps(intervals: &[Interval]) -> Vec<(Interval, Interval)> {
    let mut sorted: Vec<&Interval> = intervals.iter().collect();
    sorted.sort_by(|a, b| (&a.identity, a.start).cmp(&(&b.identity, b.start)));
    let mut out = Vec::new();
    for (i, a) in sorted.iter().enumerate() {
        for b in &sorted[i + 1..] {
            if b.identity != a.identity || b.start >= a.end {
                break;
            }
            if b.writer != a.writer {
                out.push(((*a).clone(), (*b).clone()));
            }
        }
    }
    out
}

/// What a passing check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub intervals: Vec<Interval>,
}

impl Report {
    /// Intervals of `identity` (any case), in time order.
    pub fn of(&self, identity: &str) -> Vec<&Interval> {
        let id = identity.to_ascii_lowercase();
        self.intervals.iter().filter(|i| i.identity == id).collect()
    }
}

/// Checks parsed lines: `Ok` with the intervals, or `Err` with a message listing every
/// overlapping pair.
pub fn check(signings: &[Signing], params: CheckParams) -> Result<Report, String> {
    let intervals = intervals(signings, params);
    let bad = overlaps(&intervals);
    if bad.is_empty() {
        return Ok(Report { intervals });
    }
    let mut msg = format!(
        "{} overlapping signing interval pair(s): two writers signed with one identity at once\n",
        bad.len()
    );
    for (a, b) in &bad {
        let overlap = Duration::from_nanos(a.end.min(b.end) - b.start);
        msg.push_str(&format!(
            "  overlap of {:.3} s:\n    {a}\n    {b}\n",
            overlap.as_secs_f64()
        ));
    }
    Err(msg)
}

/// Reads the logs (label, path) and checks them together. A missing log counts as empty:
/// its client never signed.
pub fn check_logs(logs: &[(&str, &Path)], params: CheckParams) -> Result<Report, String> {
    let mut all = Vec::new();
    for (label, path) in logs {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(LogError::Read {
                    path: path.display().to_string(),
                    source,
                }
                .to_string())
            }
        };
        all.extend(parse_log(label, &text).map_err(|e| e.to_string())?);
    }
    check(&all, params)
}

/// [`check_logs`], panicking with the overlaps.
pub fn assert_no_overlap(logs: &[(&str, &Path)], params: CheckParams) -> Report {
    match check_logs(logs, params) {
        Ok(report) => report,
        Err(msg) => panic!("{msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const A: &str = "0xAbC0000000000000000000000000000000000001";

    fn log(node: &str, id: &str, times_ms: &[u64]) -> String {
        times_ms
            .iter()
            .map(|t| format!("signing with {id} at {} node={node} pid=1\n", t * MS))
            .collect()
    }

    fn parse(texts: &[(&str, String)]) -> Vec<Signing> {
        texts
            .iter()
            .flat_map(|(label, t)| parse_log(label, t).expect("parses"))
            .collect()
    }

    #[test]
    fn a_handover_with_a_gap_passes() {
        let s = parse(&[
            ("a", log("vm-1", A, &[0, 50, 100, 150])),
            ("b", log("vm-2", &A.to_lowercase(), &[1200, 1250])),
        ]);
        let report = check(&s, CheckParams::default()).expect("no overlap");
        let ivs = report.of(A);
        assert_eq!(ivs.len(), 2);
        assert_eq!((ivs[0].start, ivs[0].end), (0, 200 * MS), "tail added");
        assert_eq!(ivs[0].writer, "vm-1");
        assert_eq!(ivs[1].lines, 2);
    }

    #[test]
    fn simultaneous_signers_are_detected() {
        let s = parse(&[
            ("a", log("vm-1", A, &[0, 50, 100, 150, 200])),
            ("b", log("vm-2", A, &[120, 170, 220])),
        ]);
        let err = check(&s, CheckParams::default()).expect_err("overlap");
        assert!(err.contains("1 overlapping"), "{err}");
        assert!(err.contains("by vm-1") && err.contains("by vm-2"), "{err}");
    }

    #[test]
    fn a_signer_that_resumes_after_a_gap_is_caught_inside_anothers_interval() {
        // vm-1 pauses (SIGSTOP) and resumes signing while vm-2 holds the identity.
        let s = parse(&[
            ("a", log("vm-1", A, &[0, 50, 100, 3000])),
            (
                "b",
                log("vm-2", A, &[2000, 2050, 2100, 2150, 2200, 2250, 3000, 3050]),
            ),
        ]);
        let intervals = intervals(&s, CheckParams::default());
        assert_eq!(intervals.iter().filter(|i| i.writer == "vm-1").count(), 2);
        assert!(check(&s, CheckParams::default()).is_err());
    }

    #[test]
    fn the_tail_counts_a_kill_right_after_the_last_line() {
        // vm-2 starts 20 ms after vm-1's last line: vm-1 may still have been signing.
        let s = parse(&[
            ("a", log("vm-1", A, &[0, 50, 100])),
            ("b", log("vm-2", A, &[120, 170])),
        ]);
        assert!(check(&s, CheckParams::default()).is_err());
    }

    /// A daemon log line as `leased` writes it (text format, inside its spans).
    fn gone_line(pid: u32, at_ms: u64) -> String {
        format!(
            "2026-11-30T20:00:00.000000Z  INFO daemon{{node=vm-1}}:lease{{identity=v0 epoch=3}}: \
             leased::daemon: the client's process group is gone client_pid={pid} gone_mono_ns={}\n",
            at_ms * MS
        )
    }

    #[test]
    fn a_group_seen_gone_ends_a_killed_clients_interval_there() {
        // The chaos run's case: vm-1's client SIGKILLed right after its line at 100 ms,
        // its group gone at 104 ms, and vm-2 signing from 130 ms, inside the tail.
        let s = parse(&[
            ("a", log("vm-1", A, &[0, 50, 100])),
            ("b", log("vm-2", A, &[130, 180])),
        ]);
        assert!(check(&s, CheckParams::default()).is_err(), "the tail alone");
        let gone = groups_gone("vm-1", "vm-1.stderr", &gone_line(1, 104));
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].pid, gone[0].at), (1, 104 * MS));
        let report = check(&end_at_groups_gone(&s, &gone, MS50), CheckParams::default())
            .expect("no overlap once the group was seen gone");
        assert_eq!(report.of(A)[0].end, 104 * MS);
        // Seen gone only after vm-2 began: still an overlap.
        let late = groups_gone("vm-1", "vm-1.stderr", &gone_line(1, 140));
        assert!(check(&end_at_groups_gone(&s, &late, MS50), CheckParams::default()).is_err());
    }

    const MS50: Duration = Duration::from_millis(50);

    /// Found by the 30-minute chaos run: a client frozen (SIGSTOP) long before it was
    /// killed is seen gone long after its last line, while another node signs; the record
    /// must not open a signing interval of its own there.
    #[test]
    fn a_group_seen_gone_after_the_tail_adds_no_signing() {
        let s = parse(&[
            ("a", log("vm-1", A, &[0, 50, 100])),
            ("b", log("vm-2", A, &[5_000, 5_050, 5_100])),
        ]);
        let gone = groups_gone("vm-1", "vm-1.stderr", &gone_line(1, 5_020));
        let ended = end_at_groups_gone(&s, &gone, MS50);
        assert_eq!(ended, s);
        check(&ended, CheckParams::default()).expect("no overlap");
    }

    #[test]
    fn a_group_record_that_does_not_fit_changes_nothing() {
        let s = parse(&[
            ("a", log("vm-1", A, &[0, 50, 100])),
            ("b", log("vm-2", A, &[130, 180])),
        ]);
        // Another process, a time before the last line, and another writer.
        for (writer, pid, at) in [("vm-1", 2, 104), ("vm-1", 1, 60), ("vm-3", 1, 104)] {
            let gone = groups_gone(writer, "log", &gone_line(pid, at));
            assert_eq!(
                end_at_groups_gone(&s, &gone, MS50),
                s,
                "{writer} {pid} {at}"
            );
        }
        assert!(groups_gone("vm-1", "log", "client_pid=1 and nothing else\n").is_empty());
    }

    #[test]
    fn a_stopped_line_ends_the_interval_exactly() {
        let mut a = log("vm-1", A, &[0, 50, 100]);
        a.push_str(&format!(
            "stopped with {A} at {} node=vm-1 pid=1\n",
            105 * MS
        ));
        let s = parse(&[("a", a), ("b", log("vm-2", A, &[110, 160]))]);
        let report = check(&s, CheckParams::default()).expect("no overlap");
        assert_eq!(report.of(A)[0].end, 105 * MS);
        assert_eq!(report.of(A)[0].lines, 3);
    }

    #[test]
    fn a_gap_splits_and_each_part_gets_its_tail() {
        let s = parse(&[("a", log("vm-1", A, &[0, 50, 1000, 1050]))]);
        let ivs = intervals(&s, CheckParams::default());
        assert_eq!(ivs.len(), 2);
        assert_eq!((ivs[0].start, ivs[0].end), (0, 100 * MS));
        assert_eq!((ivs[1].start, ivs[1].end), (1000 * MS, 1100 * MS));
    }

    #[test]
    fn identities_and_writers_are_independent() {
        let s = parse(&[
            ("a", log("vm-1", A, &[0, 50, 100])),
            ("b", log("vm-2", "0x02", &[0, 50, 100])),
            // The same writer twice (a client restart) is not an overlap.
            ("c", log("vm-1", A, &[100, 150])),
        ]);
        assert!(check(&s, CheckParams::default()).is_ok());
    }

    #[test]
    fn without_node_the_label_is_the_writer() {
        let s = parse_log("daemon-3", &format!("signing with {A} at 5\n")).expect("parses");
        assert_eq!(s[0].writer, "daemon-3");
        assert_eq!(s[0].identity, A.to_lowercase());
    }

    #[test]
    fn unreadable_lines_fail_the_check() {
        assert!(parse_log("a", "signing with 0x1 at soon\n").is_err());
        assert!(parse_log("a", "hello\n").is_err());
        assert!(parse_log("a", "signing with 0x1 at 5 junk\n").is_err());
        assert!(parse_log("a", "\n\n").expect("blank is fine").is_empty());
    }

    #[test]
    fn logs_are_read_from_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.log");
        let b = dir.path().join("b.log");
        std::fs::write(&a, log("vm-1", A, &[0, 50])).expect("write");
        std::fs::write(&b, log("vm-2", A, &[60])).expect("write");
        let missing = dir.path().join("never.log");
        let err = check_logs(
            &[("a", &a), ("b", &b), ("c", &missing)],
            CheckParams::default(),
        )
        .expect_err("overlap");
        assert!(err.contains("a:1 .. a:2"), "{err}");
    }
}
