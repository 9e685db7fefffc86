//! `leased status` and `leased break`: the on-call commands, run from any host that can
//! open the lease store.
//!
//! This module owns what a person on call sees of the lease store (one row per identity:
//! who holds it, since when, for how long more) and the one write an operator may make,
//! breaking a lease. The rendering is pure ([`status_row`], [`render_table`],
//! [`render_json`], [`explain_break`], [`render_break`]); the store calls are thin
//! ([`status`], [`break_identity`]); [`run_status`] and [`run_break`] add the process edge
//! (open the store, a runtime, stdout, exit status).
//!
//! It must never:
//! - open the secret store, or print anything but lease records. Those hold only what the
//!   daemon writes under its lease (node, host, boot id, pid, acquired-at, epoch, the
//!   public validator address), so nothing here can be secret; keep it that way;
//! - acquire, renew, change or release a lease: those belong to the daemon;
//! - create a lease store: opening `sqlite:PATH` creates the file, so a mistyped path is
//!   refused here before it can become an empty store;
//! - break without `--yes`;
//! - let a standby acquire while the holder may still sign, unless `--force-overlap` says
//!   so in as many words: a `--period` shorter than the holder's time left is refused, and
//!   a period it accepts is never sent to the store (see [`break_on`]).
//!
//! # `leased status --json`
//!
//! An array, one object per identity sorted by identity, with exactly these fields:
//!
//! | field             | type           | value |
//! |-------------------|----------------|-------|
//! | `identity`        | string         | the identity id, e.g. `m0-v1` |
//! | `address`         | string or null | its validator address, as the last holder wrote it (EIP-55); null before the first acquire |
//! | `state`           | string         | `available`, `leased`, `expired`, `breaking` or `broken` |
//! | `holder`          | string or null | `leased`, `breaking`: `NODE (pid PID)`; `expired`: `NODE (pid PID, stale)`. NODE is `holder_node`, else `holder_host`. Null in the other states, or when the holder wrote neither |
//! | `epoch`           | integer or null| the generation counter the last holder wrote; null before the first acquire |
//! | `held_for_secs`   | integer or null| `leased` only: whole seconds since `acquired_at`, on this host's clock (0 if that is in the future) |
//! | `expires_in_secs` | integer or null| `leased`: seconds left on the lease, rounded up, null for an infinite lease; `breaking`: seconds until it is broken; null otherwise, and whenever the store does not report it (a `blob:` store never does) |
//! | `last_fence`      | string or null | why the last daemon to give the identity up did so, as it wrote it under its lease just before releasing: `hand_off_failed`, `crash_loop`, `deadline_missed`, `lease_lost`, or `shutdown` (a normal stop); null when none did since the last holder's metadata was written, which replaces it |
//! | `last_fence_detail` | string or null | that daemon's one-line detail, e.g. `cannot start the client …` |
//! | `last_fence_by`   | string or null | that daemon, `NODE (pid PID)` as in `holder`; null without `last_fence` |
//!
//! The holder columns are what the holder wrote just *after* acquiring: for a moment after
//! a take-over, and for a lease taken by a tool that writes no metadata, they still name the
//! previous holder. The epoch tells generations apart.
//!
//! # Exit status (sysexits)
//!
//! 0 done; 64 bad arguments, `break` without `--yes`, or a `break --period` that could let
//! two VMs sign without `--force-overlap`; 66 no lease record for that identity, or no
//! lease store file at that path; 69 the store cannot serve (damaged file, permissions,
//! backend not built); 70 the store answered something unexpected; 71 the runtime could
//! not start; 74 stdout could not be written; 75 the store stayed busy, try again.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use shared::azure::{AzureOptions, CredentialKind};
use shared::exit::{Failure, Status};
use shared::lease::{
    meta, LeaseDuration, LeaseError, LeaseRecord, LeaseState, LeaseStore, LostReason,
    MAX_BREAK_PERIOD, MAX_LEASE, MIN_LEASE,
};
use shared::spec::LeaseStoreSpec;
use shared::Name;

const EXIT_STATUS_HELP: &str = "\
Exit status: 0 done; 64 bad arguments (and break without --yes, or with a --period that
could let two VMs sign and no --force-overlap); 66 no such identity, or no lease store at
that path; 69 lease store unavailable; 70 unexpected answer from the store; 74 cannot
write stdout; 75 store busy, try again.";

/// Arguments of `leased status`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Show who holds each validator identity: one row per identity",
    long_about = "\
Show who holds each validator identity: one row per identity with its address, lease
state, holder (node and pid), epoch, how long it has been held and when the lease expires.

Run it from any host that can open the lease store; it only reads. States: leased (held),
available (nobody holds it), expired (the holder stopped renewing; any standby may take it),
breaking (an operator broke it; locked until EXPIRES-IN runs out), broken (anyone may take
it). EXPIRED, BREAKING and BROKEN are shown in capitals, with a note under the table.
A note also names a daemon that gave an identity up (its hand-off failed, its client kept
crashing, it missed its fence deadline or lost the lease) with the reason it wrote; a
daemon that was stopped is not noted.
EXPIRES-IN shows <=15s (a bound: the holder's lease duration) where the store does not
report the time left, as a blob: store never does.",
    after_long_help = EXIT_STATUS_HELP
)]
pub struct StatusArgs {
    /// Lease store to read, as in the daemons' `store.leases`: sqlite:PATH or
    /// blob:https://ACCOUNT.blob.core.windows.net/CONTAINER. A sqlite file must already
    /// exist: this command never creates one.
    #[arg(long, value_name = "SPEC")]
    pub leases: String,
    /// Print a JSON array instead of the table, one object per identity with the fields
    /// identity, address, state, holder, epoch, held_for_secs, expires_in_secs, last_fence,
    /// last_fence_detail and last_fence_by (null when unknown or not applicable).
    #[arg(long)]
    pub json: bool,
    /// How to authenticate to a blob: store: managed-identity (the default, on a VM) or
    /// developer-tools (your `az login`). The storage emulator needs neither: set
    /// AZURE_STORAGE_CONNECTION_STRING to its connection string.
    #[arg(long, value_name = "KIND", value_parser = parse_credential)]
    pub azure_credential: Option<CredentialKind>,
}

/// Arguments of `leased break`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Break a stuck lease so that a standby can take the identity (needs --yes)",
    long_about = "\
Break a stuck lease so that a standby can take the identity. Without --yes nothing is
changed: it explains what breaking would do to this identity, shows its row, and exits 64.

Breaking takes the lease from its holder without the holder's lease id. The holder's next
renew fails and its daemon fences (stops its client, deletes the key file). The lease stays
\"breaking\" for the break period, then any standby may acquire it. A holder that cannot
reach the store never sees the break; its fence guard stops its client at its own deadline,
which is always before the current lease would have ended. So the default period (the rest
of the current lease) is safe.

A --period shorter than the time the holder may still sign is refused (exit 64, nothing
changed): a standby could then sign while the holder still signs. That time is the rest of
the lease as the store reports it (sqlite:); a blob: store does not report it, so it is the
holder's lease duration as its daemon wrote it (lease_secs), else 60 s, Azure's longest
lease. The refusal shows the window during which two VMs may sign and the command with
--force-overlap, which breaks anyway: only for a holder whose VM is known to be off. A
--period at least that long is the same as none, as the store never locks a lease past its
end.

Prefer stopping the holder's daemon when you can reach its VM (systemctl stop leased): it
fences and releases, and a standby takes over within about a second. A holder that died
loses its lease by itself within one lease duration.",
    after_long_help = EXIT_STATUS_HELP
)]
pub struct BreakArgs {
    /// The identity whose lease to break, e.g. m0-v1 (see `leased status`).
    #[arg(value_name = "IDENTITY")]
    pub identity: String,
    /// Lease store, as in the daemons' `store.leases`: sqlite:PATH or
    /// blob:https://ACCOUNT.blob.core.windows.net/CONTAINER.
    #[arg(long, value_name = "SPEC")]
    pub leases: String,
    /// Really break it. Without this flag nothing is changed.
    #[arg(long)]
    pub yes: bool,
    /// Seconds (0-60) the lease stays locked before a standby may acquire it. Default: the
    /// rest of the current lease, the only safe choice while the holder's VM may still be
    /// running. A period shorter than the time the holder may still sign is refused unless
    /// --force-overlap is given.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=60))]
    pub period: Option<u64>,
    /// Break with a --period shorter than the time the holder may still sign, although a
    /// standby may then sign while the holder still does: two signers on one identity.
    /// Only for a holder whose VM is known to be off. Prints the window as a warning.
    #[arg(long, requires = "period")]
    pub force_overlap: bool,
    /// How to authenticate to a blob: store: managed-identity (the default, on a VM) or
    /// developer-tools (your `az login`). The storage emulator needs neither: set
    /// AZURE_STORAGE_CONNECTION_STRING to its connection string.
    #[arg(long, value_name = "KIND", value_parser = parse_credential)]
    pub azure_credential: Option<CredentialKind>,
}

/// One identity as `leased status` shows it; also its JSON object (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusRow {
    pub identity: String,
    pub address: Option<String>,
    #[serde(serialize_with = "state_name")]
    pub state: LeaseState,
    pub holder: Option<String>,
    pub epoch: Option<u64>,
    pub held_for_secs: Option<u64>,
    pub expires_in_secs: Option<u64>,
    pub last_fence: Option<String>,
    pub last_fence_detail: Option<String>,
    pub last_fence_by: Option<String>,
    /// `leased`, `breaking`: how long its holder may still sign at most (not in the JSON).
    #[serde(skip)]
    pub sign_bound: Option<SignBound>,
}

/// At most how long the holder of a lease may still sign, as far as its record tells.
///
/// A holder's guard stops its client by its fence deadline F = t_ok + D − M, before the
/// store's lease ends at t_ok + D; so the time left on the lease bounds the time to F, and
/// the lease duration D bounds the time left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignBound {
    /// Whole seconds from when the record was read, rounded up.
    pub secs: u64,
    pub basis: BoundBasis,
}

/// Where a [`SignBound`] comes from, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundBasis {
    /// The time left on the lease (or on the running break) as the store reports it.
    Remaining,
    /// The lease duration the store reports.
    Duration,
    /// The lease duration the holder's daemon wrote under `lease_secs` (Azure reports
    /// neither the time left on a fixed lease nor its duration).
    LeaseSecs,
    /// Nothing says: the longest lease Azure grants.
    AzureMax,
}

impl BoundBasis {
    /// What the bound is, in a few words: `at most 15s (…)`.
    fn short(self) -> &'static str {
        match self {
            Self::Remaining => "the time left",
            Self::Duration => "the lease duration",
            Self::LeaseSecs => "the lease duration its daemon wrote",
            Self::AzureMax => "Azure's longest lease",
        }
    }

    /// Why the bound is what it is, for the window `leased break` prints.
    fn explain(self) -> &'static str {
        match self {
            Self::Remaining => "the time left on its lease, as the store reports it",
            Self::Duration => "its lease duration, as the store reports it",
            Self::LeaseSecs => {
                "its lease duration, as its daemon wrote it; the store does not report the \
                 time left"
            }
            Self::AzureMax => {
                "the longest lease Azure grants; the store reports neither the time left \
                 nor the lease duration"
            }
        }
    }
}

/// How long the holder of `record` may still sign at most; `None` when nobody holds it
/// (available, expired, broken) and for an infinite lease, which only a tool takes and
/// which breaks at once.
///
/// The time left, when the store reports it; otherwise the lease duration D, the larger of
/// the store's and the `lease_secs` the holder wrote (metadata can lag a take-over by a
/// moment, and a value outside Azure's 15–60 s is ignored); otherwise 60 s.
pub fn sign_bound(record: &LeaseRecord) -> Option<SignBound> {
    let bound = |secs, basis| Some(SignBound { secs, basis });
    if !matches!(record.state, LeaseState::Leased | LeaseState::Breaking) {
        return None;
    }
    if let Some(left) = record.remaining {
        return bound(ceil_secs(left), BoundBasis::Remaining);
    }
    let stored = match record.duration {
        Some(LeaseDuration::Infinite) if record.state == LeaseState::Leased => return None,
        // A break of an infinite lease runs at most the longest break period.
        Some(LeaseDuration::Infinite) => {
            return bound(MAX_BREAK_PERIOD.as_secs(), BoundBasis::AzureMax)
        }
        Some(LeaseDuration::Fixed(d)) => Some(ceil_secs(d)),
        None => None,
    };
    let written = record
        .metadata
        .get(meta::LEASE_SECS)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| (MIN_LEASE.as_secs()..=MAX_LEASE.as_secs()).contains(s));
    match (stored, written) {
        (Some(d), Some(w)) if w > d => bound(w, BoundBasis::LeaseSecs),
        (Some(d), _) => bound(d, BoundBasis::Duration),
        (None, Some(w)) => bound(w, BoundBasis::LeaseSecs),
        (None, None) => bound(MAX_LEASE.as_secs(), BoundBasis::AzureMax),
    }
}

/// A break period after which a standby may acquire while the holder may still sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlap {
    /// Whole seconds until a standby may acquire: the break period.
    pub standby_in: u64,
    /// How long the holder may still sign at most.
    pub holder: SignBound,
}

impl Overlap {
    /// At most how many seconds two VMs may sign at once.
    pub fn two_signers_secs(&self) -> u64 {
        self.holder.secs.saturating_sub(self.standby_in)
    }
}

/// The overlap a break with `period` allows, when its holder may sign for `bound` more;
/// `None` when there is no holder or the period outlasts it.
pub fn overlap(bound: Option<SignBound>, period: Duration) -> Option<Overlap> {
    let holder = bound?;
    let standby_in = ceil_secs(period);
    (standby_in < holder.secs).then_some(Overlap { standby_in, holder })
}

/// `a standby may acquire m0-v1 in 0 s; vm-1 (pid 4242) may sign until up to 12 s from now
/// (WHY): up to 12 s with two signers`
fn window(id: &str, who: &str, o: &Overlap) -> String {
    format!(
        "a standby may acquire {id} in {} s; {who} may sign until up to {} s from now ({}): \
         up to {} s with two signers",
        o.standby_in,
        o.holder.secs,
        o.holder.basis.explain(),
        o.two_signers_secs()
    )
}

fn state_name<S: serde::Serializer>(state: &LeaseState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.as_str())
}

/// Reads every lease record and turns each into a row; `now_unix` (seconds) measures
/// how long leases have been held.
pub async fn status(store: &dyn LeaseStore, now_unix: u64) -> Result<Vec<StatusRow>, LeaseError> {
    Ok(store
        .list()
        .await?
        .iter()
        .map(|r| status_row(r, now_unix))
        .collect())
}

/// What on-call sees of one record at `now_unix` (seconds since the Unix epoch).
pub fn status_row(record: &LeaseRecord, now_unix: u64) -> StatusRow {
    let text = |key: &str| {
        record
            .metadata
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let number = |key: &str| text(key).and_then(|v| v.parse::<u64>().ok());
    let state = record.state;
    let node = text(meta::HOLDER_NODE).or_else(|| text(meta::HOLDER_HOST));
    let pid = number(meta::HOLDER_PID);
    let last_fence = text(meta::LAST_FENCE);
    // Written in one piece with the holder keys, so they name the daemon that gave it up.
    let last_fence_by = last_fence
        .as_ref()
        .and_then(|_| holder_label(node.clone(), pid, false));
    let holder = match state {
        LeaseState::Leased | LeaseState::Breaking => holder_label(node, pid, false),
        LeaseState::Expired => holder_label(node, pid, true),
        LeaseState::Available | LeaseState::Broken => None,
    };
    let held_for_secs = match state {
        LeaseState::Leased => number(meta::ACQUIRED_AT).map(|t| now_unix.saturating_sub(t)),
        _ => None,
    };
    let expires_in_secs = match state {
        LeaseState::Leased | LeaseState::Breaking => record.remaining.map(ceil_secs),
        _ => None,
    };
    StatusRow {
        identity: record.identity.to_string(),
        address: text(meta::ADDRESS),
        state,
        holder,
        epoch: number(meta::EPOCH),
        held_for_secs,
        expires_in_secs,
        last_fence,
        last_fence_detail: text(meta::LAST_FENCE_DETAIL),
        last_fence_by,
        sign_bound: sign_bound(record),
    }
}

/// `vm-1 (pid 4242)`, `vm-1 (pid 4242, stale)`, `vm-1`; nothing without a node or host
/// (a pid alone names no process anyone can find).
fn holder_label(node: Option<String>, pid: Option<u64>, stale: bool) -> Option<String> {
    let node = node?;
    let mut notes = Vec::new();
    if let Some(pid) = pid {
        notes.push(format!("pid {pid}"));
    }
    if stale {
        notes.push("stale".to_owned());
    }
    Some(if notes.is_empty() {
        node
    } else {
        format!("{node} ({})", notes.join(", "))
    })
}

/// Rounded up, so that a live lease never shows 0 seconds left.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `45s`, `12m03s`, `3h04m`, `2d05h`: exact below a minute, two units above.
fn human_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Metadata comes from whoever wrote the record; a terminal must not obey it.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// States that need a person's attention are shouted.
fn state_cell(state: LeaseState) -> String {
    match state {
        LeaseState::Available | LeaseState::Leased => state.as_str().to_owned(),
        LeaseState::Expired | LeaseState::Breaking | LeaseState::Broken => {
            state.as_str().to_ascii_uppercase()
        }
    }
}

const HEADERS: [&str; 7] = [
    "IDENTITY",
    "ADDRESS",
    "STATE",
    "HOLDER",
    "EPOCH",
    "HELD-FOR",
    "EXPIRES-IN",
];
/// Index of the EPOCH column, the one right-aligned column.
const EPOCH_COLUMN: usize = 4;

fn cells(row: &StatusRow) -> [String; 7] {
    let dash = || "-".to_owned();
    let holder = match (&row.holder, row.state) {
        (Some(h), _) => printable(h),
        (None, LeaseState::Leased | LeaseState::Breaking | LeaseState::Expired) => {
            "unknown".to_owned()
        }
        (None, _) => dash(),
    };
    let expires = expires_cell(row);
    [
        printable(&row.identity),
        row.address.as_deref().map_or_else(dash, printable),
        state_cell(row.state),
        holder,
        row.epoch.map_or_else(dash, |e| e.to_string()),
        row.held_for_secs.map_or_else(dash, human_secs),
        expires,
    ]
}

/// EXPIRES-IN: the time left; `<=15s` when the store does not say (a blob: store never
/// does) but the lease duration bounds it; `never` for an infinite lease.
fn expires_cell(row: &StatusRow) -> String {
    match (row.expires_in_secs, row.sign_bound, row.state) {
        (Some(s), _, _) => human_secs(s),
        (None, Some(b), _) => format!("<={}", human_secs(b.secs)),
        (None, None, LeaseState::Leased) => "never".to_owned(),
        (None, None, _) => "-".to_owned(),
    }
}

/// The aligned table alone: a header line and one line per row.
fn table(rows: &[StatusRow]) -> String {
    let body: Vec<[String; 7]> = rows.iter().map(cells).collect();
    let mut widths = HEADERS.map(str::len);
    for line in &body {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADERS.map(str::to_owned);
    for line in std::iter::once(&header).chain(&body) {
        let mut text = String::new();
        for (i, (cell, width)) in line.iter().zip(widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let _ = if i == EPOCH_COLUMN {
                write!(text, "{cell:>width$}")
            } else {
                write!(text, "{cell:<width$}")
            };
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `3 identities: 2 held, 1 available`: held first, then the states that need attention,
/// then available; states with no identity are left out.
fn summary(rows: &[StatusRow]) -> String {
    if rows.is_empty() {
        return "0 identities: the lease store has no records (was `orchestrator init` run \
                with this --leases?)"
            .to_owned();
    }
    let count = |s: LeaseState| rows.iter().filter(|r| r.state == s).count();
    let parts: Vec<String> = [
        (LeaseState::Leased, "held"),
        (LeaseState::Breaking, "breaking"),
        (LeaseState::Expired, "expired"),
        (LeaseState::Broken, "broken"),
        (LeaseState::Available, "available"),
    ]
    .into_iter()
    .map(|(s, word)| (count(s), word))
    .filter(|(n, _)| *n > 0)
    .map(|(n, word)| format!("{n} {word}"))
    .collect();
    format!(
        "{}: {}",
        plural(rows.len(), "identity", "identities"),
        parts.join(", ")
    )
}

/// A fence reason that is no news: the daemon was told to stop.
const NORMAL_STOP: &str = "shutdown";
/// Characters of a daemon's fence detail the table shows; the JSON has all of it.
const DETAIL_CHARS: usize = 200;

/// `! m0-v0: vm-1 (pid 4242) gave it up: hand_off_failed: cannot start the client …`, for a
/// row whose last daemon gave it up for any reason but a normal stop.
fn fence_note(r: &StatusRow) -> Option<String> {
    let reason = r.last_fence.as_deref().filter(|f| *f != NORMAL_STOP)?;
    let who = r
        .last_fence_by
        .as_deref()
        .map_or_else(|| "its last holder".to_owned(), printable);
    let mut note = format!(
        "! {}: {who} gave it up: {}",
        printable(&r.identity),
        printable(reason)
    );
    match r.last_fence_detail.as_deref() {
        Some(detail) if detail.chars().count() > DETAIL_CHARS => {
            let cut: String = detail.chars().take(DETAIL_CHARS).collect();
            note.push_str(&format!(": {}...", printable(cut.trim_end())));
        }
        Some(detail) => note.push_str(&format!(": {}", printable(detail))),
        None => note.push('.'),
    }
    Some(note)
}

/// A note per row that needs attention, saying what it means and what happens next.
fn notes(rows: &[StatusRow]) -> Vec<String> {
    rows.iter()
        .flat_map(|r| [state_note(r), fence_note(r)])
        .flatten()
        .collect()
}

/// What an attention state means and what happens next.
fn state_note(r: &StatusRow) -> Option<String> {
    let id = printable(&r.identity);
    let holder = r.holder.as_deref().map(printable);
    let who = holder.as_deref().unwrap_or("its holder");
    match r.state {
        LeaseState::Expired => Some(format!(
            "! {id} EXPIRED: {who} stopped renewing; a standby may take it now (if none \
             does, none is running)."
        )),
        LeaseState::Breaking => Some(format!(
            "! {id} BREAKING: {who} lost the lease and is fencing; acquirable in {}.",
            expires_cell(r)
        )),
        LeaseState::Broken => Some(format!(
            "! {id} BROKEN: acquirable now; no daemon has taken it yet."
        )),
        LeaseState::Available | LeaseState::Leased => None,
    }
}

/// The text of `leased status`: the table, a summary line, and a note per row in an
/// attention state or given up by its daemon, wrapped to 80 columns. Every line ends with
/// a newline.
pub fn render_table(rows: &[StatusRow]) -> String {
    let mut out = String::new();
    if !rows.is_empty() {
        out.push_str(&table(rows));
        out.push('\n');
    }
    out.push_str(&summary(rows));
    out.push('\n');
    for note in notes(rows) {
        out.push_str(&wrap(&note, "  "));
    }
    out
}

/// The text of `leased status --json`: a JSON array (see the module docs), no trailing
/// newline.
pub fn render_json(rows: &[StatusRow]) -> String {
    serde_json::to_string_pretty(rows).expect("status rows are plain strings and integers")
}

/// What a break did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakOutcome {
    /// Broken now: any daemon may acquire it.
    Broken,
    /// Locked for the rest of the break period, then broken.
    Breaking { acquirable_in: Duration },
    /// There was no lease to break (available, or released meanwhile): acquirable now.
    NoLease,
}

impl BreakOutcome {
    /// How long until a standby may acquire the identity.
    pub fn acquirable_in(self) -> Duration {
        match self {
            Self::Breaking { acquirable_in } => acquirable_in,
            Self::Broken | Self::NoLease => Duration::ZERO,
        }
    }
}

/// The result of [`break_identity`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakReport {
    pub identity: Name,
    /// The record as read just before the break (a separate call: it may have moved on).
    pub before: LeaseRecord,
    pub outcome: BreakOutcome,
}

/// Breaks the lease on `identity`; `period` (0–60 s) as [`LeaseStore::break_lease`]:
/// `None` keeps it locked for the rest of the current lease.
///
/// An identity with no record is [`LeaseError::NotFound`]; one with no lease to break is
/// [`BreakOutcome::NoLease`], not an error: it is already acquirable.
pub async fn break_identity(
    store: &dyn LeaseStore,
    identity: &Name,
    period: Option<Duration>,
) -> Result<BreakReport, LeaseError> {
    if let Some(p) = period.filter(|p| *p > MAX_BREAK_PERIOD) {
        return Err(LeaseError::Invalid(format!(
            "break period {}s is outside 0-60 seconds",
            p.as_secs_f64()
        )));
    }
    // Read first, so that an unknown identity is named as such and the report can say
    // whom the break took the lease from.
    let before = store.read(identity).await?;
    let outcome = match store.break_lease(identity, period).await {
        Ok(left) if left.is_zero() => BreakOutcome::Broken,
        Ok(left) => BreakOutcome::Breaking {
            acquirable_in: left,
        },
        Err(LeaseError::Lost {
            reason: LostReason::NotPresent,
            ..
        }) => BreakOutcome::NoLease,
        Err(e) => return Err(e),
    };
    Ok(BreakReport {
        identity: identity.clone(),
        before,
        outcome,
    })
}

/// What `leased break` prints after breaking: `m0-v1 broken; acquirable in 0 s` or
/// `m0-v1 breaking; acquirable in 12 s`, then whom it was taken from.
pub fn render_break(report: &BreakReport) -> String {
    let id = &report.identity;
    let secs = ceil_secs(report.outcome.acquirable_in());
    let before = status_row(&report.before, 0);
    let holder = before
        .holder
        .unwrap_or_else(|| "an unknown holder".to_owned());
    let epoch = before
        .epoch
        .map_or_else(String::new, |e| format!(", epoch {e}"));
    let head = match report.outcome {
        BreakOutcome::NoLease => {
            return format!("{id} had no lease to break; acquirable in 0 s\n");
        }
        BreakOutcome::Broken => format!("{id} broken; acquirable in {secs} s\n"),
        BreakOutcome::Breaking { .. } => format!("{id} breaking; acquirable in {secs} s\n"),
    };
    let tail = match report.before.state {
        LeaseState::Leased | LeaseState::Breaking => format!(
            "It was held by {}{epoch}. That daemon fences at its next renew, or by its own \
             fence deadline if it cannot reach the store.\n",
            printable(&holder)
        ),
        LeaseState::Expired => format!(
            "It had expired; its last holder, {}{epoch}, can no longer renew it back.\n",
            printable(&holder)
        ),
        LeaseState::Broken | LeaseState::Available => String::new(),
    };
    head + &tail
}

/// Width the explanation is wrapped to: readable in an 80-column terminal.
const WRAP: usize = 80;

/// Word-wraps `text` to [`WRAP`] columns; continuation lines get `indent`. Words longer
/// than a line (an address, a long host name) stay whole.
fn wrap(text: &str, indent: &str) -> String {
    let mut out = String::new();
    let mut col = 0;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if col > 0 && col + 1 + len > WRAP {
            out.push('\n');
            out.push_str(indent);
            col = indent.len();
        } else if col > 0 {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += len;
    }
    out.push('\n');
    out
}

/// What `leased break` prints without `--yes`: what breaking this identity would do, with
/// its current row. `period` is the `--period` given, if any. Nothing here touches a store.
pub fn explain_break(row: &StatusRow, period: Option<Duration>) -> String {
    let id = printable(&row.identity);
    let holder = row.holder.as_deref().map(printable);
    let who = holder.as_deref().unwrap_or("the holder");
    let mut out = format!("Not breaking {id}: breaking needs --yes. Its lease now:\n\n");
    out.push_str(&table(std::slice::from_ref(row)));
    out.push('\n');
    let para = |out: &mut String, text: &str| {
        out.push_str(&wrap(text, ""));
        out.push('\n');
    };

    match row.state {
        LeaseState::Available => {
            para(
                &mut out,
                &format!(
                    "{id} is available: there is no lease to break, and any daemon may \
                     acquire it."
                ),
            );
            return out;
        }
        LeaseState::Broken => {
            para(
                &mut out,
                &format!(
                    "{id} is already broken: any daemon may acquire it; breaking again \
                     changes nothing."
                ),
            );
            return out;
        }
        LeaseState::Expired => para(
            &mut out,
            &format!(
                "The lease has expired: any standby may acquire it already. Breaking it \
                 makes it broken at once, so that {who} can no longer renew it back."
            ),
        ),
        LeaseState::Breaking => para(
            &mut out,
            &format!(
                "A break is already running: acquirable in {}. Another break can only \
                 shorten it (--period).",
                expires_cell(row)
            ),
        ),
        LeaseState::Leased => {
            let rest = match (row.expires_in_secs, row.sign_bound) {
                (Some(s), _) => format!("the rest of the current lease, {}", human_secs(s)),
                (None, Some(b)) => format!(
                    "the rest of the current lease, which the store does not report: at \
                     most {} ({})",
                    human_secs(b.secs),
                    b.basis.short()
                ),
                (None, None) => {
                    "none: an infinite lease (a tool's, never the daemon's) breaks at once"
                        .to_owned()
                }
            };
            out.push_str("What breaking does:\n");
            for (n, step) in [
                format!(
                    "The lease turns \"breaking\" at once. The next renew of {who} fails, so \
                     its daemon, if it can reach the store, fences within one renew period: \
                     it stops its client and deletes the key file."
                ),
                format!(
                    "When the break period ends the lease is \"broken\" and a standby may \
                     acquire it. Without --period the period is {rest}."
                ),
                "A holder that cannot reach the store (frozen, cut off) never sees the \
                 break. Its fence guard stops its client by its own deadline, which comes \
                 before the current lease would have ended; until then its client may \
                 still sign."
                    .to_owned(),
            ]
            .iter()
            .enumerate()
            {
                out.push_str(&wrap(&format!("{}. {step}", n + 1), "   "));
            }
            out.push('\n');
            para(
                &mut out,
                "Prefer stopping the holder's daemon if you can reach its VM (systemctl \
                 stop leased): it fences and releases, and a standby takes over within \
                 about a second. A holder that died loses its lease by itself within one \
                 lease duration; breaking does not make that faster.",
            );
        }
    }
    if let Some(o) = period.and_then(|p| overlap(row.sign_bound, p)) {
        para(
            &mut out,
            &format!(
                "WARNING: with --period {}, {}. With --yes such a period is refused unless \
                 --force-overlap is given too, which is only for a holder whose VM is known \
                 to be off.",
                o.standby_in,
                window(&id, who, &o)
            ),
        );
    }
    out.push_str(&format!(
        "To break it: leased break {id} --leases SPEC --yes [--period SECONDS]\n"
    ));
    out
}

/// What `leased break --yes --period P` prints when it refuses: why, the window during
/// which two VMs may sign, and `forced`, the command that breaks anyway.
pub fn refuse_break(row: &StatusRow, o: &Overlap, forced: &str) -> String {
    let id = printable(&row.identity);
    let holder = row.holder.as_deref().map(printable);
    let who = holder.as_deref().unwrap_or("the holder");
    let mut out = format!(
        "Not breaking {id}: --period {} could let two VMs sign with it. Its lease now:\n\n",
        o.standby_in
    );
    out.push_str(&table(std::slice::from_ref(row)));
    out.push('\n');
    for text in [
        format!("With --period {}, {}.", o.standby_in, window(&id, who, o)),
        match row.state {
            LeaseState::Breaking => format!(
                "Nothing was changed: the running break goes on, and {id} is acquirable in \
                 {}.",
                expires_cell(row)
            ),
            _ => format!(
                "Nothing was changed. Without --period a break keeps the lease locked until \
                 it ends, and {who} stops signing before then, whether or not it can reach \
                 the store."
            ),
        },
        format!(
            "Only if the holder's VM is known to be off (stopped, deallocated, deleted), \
             break it anyway, accepting up to {} s with two signers:",
            o.two_signers_secs()
        ),
    ] {
        out.push_str(&wrap(&text, ""));
        out.push('\n');
    }
    out.truncate(out.len() - 1);
    out.push_str(&format!("    {}\n", printable(forced)));
    out
}

/// A store error as a failed command: the sysexits status that fits it.
fn lease_failure(e: LeaseError) -> Failure {
    let status = match &e {
        LeaseError::NotFound { identity } => {
            return Failure::new(
                Status::NoInput,
                format!(
                    "no lease record for identity {identity} in this store \
                     (leased status lists them)"
                ),
            )
        }
        LeaseError::Transient { .. } => Status::TempFail,
        LeaseError::Backend { .. } => Status::Unavailable,
        LeaseError::Invalid(_) => Status::Usage,
        LeaseError::HeldByOther { .. } | LeaseError::Lost { .. } => Status::Software,
    };
    Failure::new(status, e.to_string())
}

fn stdout_failure(e: io::Error) -> Failure {
    Failure::new(Status::IoErr, format!("cannot write to stdout: {e}"))
}

fn exit(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report("leased"),
    }
}

fn parse_credential(s: &str) -> Result<CredentialKind, String> {
    match s {
        "managed-identity" => Ok(CredentialKind::ManagedIdentity),
        "developer-tools" => Ok(CredentialKind::DeveloperTools),
        _ => Err("expected managed-identity or developer-tools".into()),
    }
}

fn azure_options(credential: Option<CredentialKind>) -> AzureOptions {
    AzureOptions {
        credential: credential.unwrap_or_default(),
        ..Default::default()
    }
}

/// Opens the store `spec` names, refusing to create a missing sqlite file.
fn open_store(spec: &str, azure: &AzureOptions) -> Result<Arc<dyn LeaseStore>, Failure> {
    let spec: LeaseStoreSpec = spec
        .parse()
        .map_err(|e| Failure::new(Status::Usage, format!("--leases: {e}")))?;
    if let LeaseStoreSpec::Sqlite(path) = &spec {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(Failure::new(
                    Status::NoInput,
                    format!("--leases {spec}: {} is not a file", path.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Failure::new(
                    Status::NoInput,
                    format!(
                        "--leases {spec}: no lease store at {} (use the daemons' store.leases; \
                         orchestrator init creates it)",
                        path.display()
                    ),
                ))
            }
            Err(e) => {
                return Err(Failure::new(
                    Status::Unavailable,
                    format!("--leases {spec}: cannot read {}: {e}", path.display()),
                ))
            }
        }
    }
    spec.open(azure).map_err(lease_failure)
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Status::OsErr, format!("cannot start the runtime: {e}")))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `leased status`: prints the table (or JSON) on stdout; errors as one line on stderr.
pub fn run_status(args: StatusArgs) -> ExitCode {
    exit((|| {
        let store = open_store(&args.leases, &azure_options(args.azure_credential))?;
        runtime()?.block_on(status_on(
            store.as_ref(),
            args.json,
            now_unix(),
            &mut io::stdout().lock(),
        ))
    })())
}

/// `leased break`: without `--yes` explains and exits 64; with it breaks and says so.
pub fn run_break(args: BreakArgs) -> ExitCode {
    exit((|| {
        let identity = Name::new(args.identity.as_str())
            .map_err(|e| Failure::new(Status::Usage, format!("identity: {e}")))?;
        let period = match args.period {
            Some(p) if Duration::from_secs(p) > MAX_BREAK_PERIOD => {
                return Err(Failure::new(
                    Status::Usage,
                    format!("--period {p}: the break period is 0-60 seconds"),
                ))
            }
            p => p.map(Duration::from_secs),
        };
        let request = BreakRequest::from_args(&args, identity, period);
        let store = open_store(&args.leases, &azure_options(args.azure_credential))?;
        runtime()?.block_on(break_on(
            store.as_ref(),
            &request,
            now_unix(),
            &mut io::stdout().lock(),
        ))
    })())
}

async fn status_on(
    store: &dyn LeaseStore,
    json: bool,
    now_unix: u64,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let rows = status(store, now_unix).await.map_err(lease_failure)?;
    if json {
        writeln!(out, "{}", render_json(&rows)).map_err(stdout_failure)
    } else {
        out.write_all(render_table(&rows).as_bytes())
            .map_err(stdout_failure)
    }
}

/// What `leased break` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BreakRequest {
    identity: Name,
    /// `--yes`: without it nothing is changed.
    yes: bool,
    period: Option<Duration>,
    force_overlap: bool,
    /// The arguments naming the store (`--leases SPEC`, a credential), shell-quoted, for
    /// the command that breaks anyway.
    store_args: String,
}

impl BreakRequest {
    fn from_args(args: &BreakArgs, identity: Name, period: Option<Duration>) -> Self {
        let mut store_args = format!("--leases {}", shell_word(&args.leases));
        if let Some(kind) = args.azure_credential {
            store_args.push_str(" --azure-credential ");
            store_args.push_str(kind.as_str());
        }
        Self {
            identity,
            yes: args.yes,
            period,
            force_overlap: args.force_overlap,
            store_args,
        }
    }

    /// The command that breaks with `period` seconds, accepting two signers.
    fn forced_command(&self, period: u64) -> String {
        format!(
            "leased break {} {} --yes --period {period} --force-overlap",
            self.identity, self.store_args
        )
    }
}

/// `s` as one POSIX shell word: as it is when plain, else single-quoted.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:=@%+,".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `leased break` on a store.
///
/// The `--period` check reads the record first, and the holder may renew between that read
/// and the break. So a period the check accepts is not sent: the break goes with the
/// store's default, the rest of the lease at the moment it breaks, which is atomic, never
/// longer than an accepted period when nothing moved, and safe when something did. A
/// `--period` reaches the store only with `--force-overlap` (see [`force_break`]).
async fn break_on(
    store: &dyn LeaseStore,
    req: &BreakRequest,
    now_unix: u64,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let id = &req.identity;
    let record = store.read(id).await.map_err(lease_failure)?;
    let row = status_row(&record, now_unix);
    if !req.yes {
        out.write_all(explain_break(&row, req.period).as_bytes())
            .map_err(stdout_failure)?;
        return Err(Failure::new(
            Status::Usage,
            format!("{id} not broken: add --yes to break it"),
        ));
    }
    match req.period.and_then(|p| overlap(row.sign_bound, p)) {
        Some(o) if !req.force_overlap => {
            let text = refuse_break(&row, &o, &req.forced_command(o.standby_in));
            out.write_all(text.as_bytes()).map_err(stdout_failure)?;
            Err(Failure::new(
                Status::Usage,
                format!(
                    "{id} not broken: --period {} could let two VMs sign for up to {} s; add \
                     --force-overlap only if the holder's VM is off",
                    o.standby_in,
                    o.two_signers_secs()
                ),
            ))
        }
        Some(o) => force_break(store, id, &o, out).await,
        None => {
            let report = break_identity(store, id, None)
                .await
                .map_err(lease_failure)?;
            let mut text = render_break(&report);
            if let Some(p) = req.period.filter(|p| report.outcome.acquirable_in() > *p) {
                text.push_str(&wrap(
                    &format!(
                        "It stays locked longer than --period {}: the lease had more time \
                         left than the check allowed for (its holder renewed meanwhile, or \
                         its lease is longer than it wrote), and a shorter lock could let \
                         two VMs sign.",
                        p.as_secs()
                    ),
                    "",
                ));
            }
            out.write_all(text.as_bytes()).map_err(stdout_failure)
        }
    }
}

/// Breaks allowing the overlap `o`, in two steps: first with the store's default period,
/// which stops the holder renewing and says how long its lease had left, then shortened to
/// the period. The warning's bound is the later of what the check read and what the break
/// found, so a renew that raced the check cannot make it understate the window. If the
/// second step fails, the lease stays breaking for the rest of the lease: the safe side.
async fn force_break(
    store: &dyn LeaseStore,
    id: &Name,
    o: &Overlap,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let first = break_identity(store, id, None)
        .await
        .map_err(lease_failure)?;
    if first.outcome == BreakOutcome::NoLease {
        // Released meanwhile: its holder fenced first, and there is nothing to shorten.
        return out
            .write_all(render_break(&first).as_bytes())
            .map_err(stdout_failure);
    }
    let left = first.outcome.acquirable_in();
    let period = Duration::from_secs(o.standby_in);
    let outcome = if period < left {
        match store.break_lease(id, Some(period)).await {
            Ok(l) if l.is_zero() => BreakOutcome::Broken,
            Ok(l) => BreakOutcome::Breaking { acquirable_in: l },
            Err(e) => {
                out.write_all(render_break(&first).as_bytes())
                    .map_err(stdout_failure)?;
                let failure = lease_failure(e);
                return Err(Failure::new(
                    failure.status(),
                    format!(
                        "{id} is breaking for the rest of its lease (acquirable in {} s), \
                         which is safe; shortening that to --period {} failed: {}",
                        ceil_secs(left),
                        o.standby_in,
                        failure.message()
                    ),
                ));
            }
        }
    } else {
        first.outcome
    };
    let found = SignBound {
        secs: ceil_secs(left),
        basis: BoundBasis::Remaining,
    };
    let holder = if found.secs > o.holder.secs {
        found
    } else {
        o.holder
    };
    let report = BreakReport { outcome, ..first };
    let mut text = render_break(&report);
    let actual = Overlap {
        standby_in: ceil_secs(outcome.acquirable_in()),
        holder,
    };
    if actual.two_signers_secs() > 0 {
        let before = status_row(&report.before, 0);
        let who = before
            .holder
            .as_deref()
            .map_or_else(|| "its holder".to_owned(), printable);
        text.push_str(&wrap(
            &format!(
                "WARNING: two VMs may sign with {id}: {}.",
                window(id.as_str(), &who, &actual)
            ),
            "",
        ));
    }
    out.write_all(text.as_bytes()).map_err(stdout_failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    use shared::lease::sqlite::SqliteLeaseStore;
    use shared::lease::{LeaseDuration, LeaseId, ManualStoreClock, Metadata};

    /// Store time at the start of every test, in seconds since the Unix epoch.
    const T0: u64 = 1_700_000_000;
    const ADDR: [&str; 4] = [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ];

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    /// `text` with every run of whitespace made one space, so phrases match across wraps.
    fn flat(text: &str) -> String {
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A sqlite store in a temporary directory on a clock that moves only when told.
    struct Fixture {
        _dir: tempfile::TempDir,
        clock: Arc<ManualStoreClock>,
        store: SqliteLeaseStore,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let clock = Arc::new(ManualStoreClock::new(T0 * 1000));
            let store =
                SqliteLeaseStore::open_with_clock(&dir.path().join("leases.db"), clock.clone())
                    .unwrap();
            Self {
                _dir: dir,
                clock,
                store,
            }
        }

        fn now(&self) -> u64 {
            self.clock.now_millis() / 1000
        }

        /// Acquires `id` and writes the metadata a daemon writes, with the given holder.
        async fn hold(
            &self,
            id: &str,
            duration: LeaseDuration,
            holder: &[(&str, &str)],
            epoch: u64,
            address: &str,
        ) -> LeaseId {
            let n = name(id);
            self.store.create_record(&n).await.unwrap();
            let lease = self.store.acquire(&n, duration, None).await.unwrap();
            let mut md: Metadata = holder
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            md.insert(meta::ACQUIRED_AT.into(), self.now().to_string());
            md.insert(meta::EPOCH.into(), epoch.to_string());
            md.insert(meta::ADDRESS.into(), address.into());
            self.store.write_metadata(&n, &lease, &md).await.unwrap();
            lease
        }
    }

    fn fixed(s: u64) -> LeaseDuration {
        LeaseDuration::from_secs(s).unwrap()
    }

    fn node(n: &str, pid: &str) -> Vec<(&'static str, String)> {
        vec![
            (meta::HOLDER_NODE, n.to_owned()),
            (meta::HOLDER_HOST, format!("{n}.internal")),
            (
                meta::HOLDER_BOOT_ID,
                "0b8e6f1c-7d5e-4c1a-9a57-3f0e2d1c4b5a".to_owned(),
            ),
            (meta::HOLDER_PID, pid.to_owned()),
        ]
    }

    fn pairs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        v.iter().map(|(k, s)| (*k, s.as_str())).collect()
    }

    /// Seven identities, one per state (two available), observed at T0 + 20 s:
    /// - m0-v0: never leased;
    /// - m0-v1: leased at +10 for 15 s (5 s left), vm-1 pid 4242, epoch 3;
    /// - m0-v2: leased at +0 for 15 s, expired at +15, vm-2 pid 77, epoch 7;
    /// - m0-v3: leased at +0, broken at +10 with period 0;
    /// - m0-v4: leased at +10 for 15 s, broken at +18 with period 4 (2 s left at +20);
    /// - m0-v5: infinite lease at +0 by a holder that wrote only its host;
    /// - m0-v6: leased at +0 and released at +5: available, last holder's metadata kept.
    async fn every_state() -> Fixture {
        let f = Fixture::new();
        f.store.create_record(&name("m0-v0")).await.unwrap();
        f.hold("m0-v2", fixed(15), &pairs(&node("vm-2", "77")), 7, ADDR[2])
            .await;
        f.hold("m0-v3", fixed(15), &pairs(&node("vm-3", "31")), 2, ADDR[3])
            .await;
        f.hold(
            "m0-v5",
            LeaseDuration::Infinite,
            &[(meta::HOLDER_HOST, "host-5")],
            1,
            ADDR[0],
        )
        .await;
        let v6 = f
            .hold("m0-v6", fixed(15), &pairs(&node("vm-6", "66")), 2, ADDR[1])
            .await;
        f.clock.advance(secs(5));
        f.store.release(&name("m0-v6"), &v6).await.unwrap();
        f.clock.advance(secs(5));
        f.store
            .break_lease(&name("m0-v3"), Some(Duration::ZERO))
            .await
            .unwrap();
        f.hold(
            "m0-v1",
            fixed(15),
            &pairs(&node("vm-1", "4242")),
            3,
            ADDR[1],
        )
        .await;
        f.hold("m0-v4", fixed(15), &pairs(&node("vm-4", "9")), 5, ADDR[0])
            .await;
        f.clock.advance(secs(8));
        let left = f
            .store
            .break_lease(&name("m0-v4"), Some(secs(4)))
            .await
            .unwrap();
        assert_eq!(left, secs(4));
        f.clock.advance(secs(2));
        assert_eq!(f.now(), T0 + 20);
        f
    }

    fn row(
        identity: &str,
        address: Option<&str>,
        state: LeaseState,
        holder: Option<&str>,
        epoch: Option<u64>,
        held_for_secs: Option<u64>,
        expires_in_secs: Option<u64>,
    ) -> StatusRow {
        StatusRow {
            identity: identity.into(),
            address: address.map(Into::into),
            state,
            holder: holder.map(Into::into),
            epoch,
            held_for_secs,
            expires_in_secs,
            last_fence: None,
            last_fence_detail: None,
            last_fence_by: None,
            // As on sqlite: the store reports the time left on every live lease.
            sign_bound: expires_in_secs.map(|secs| SignBound {
                secs,
                basis: BoundBasis::Remaining,
            }),
        }
    }

    fn expected_rows() -> Vec<StatusRow> {
        use LeaseState::*;
        vec![
            row("m0-v0", None, Available, None, None, None, None),
            row(
                "m0-v1",
                Some(ADDR[1]),
                Leased,
                Some("vm-1 (pid 4242)"),
                Some(3),
                Some(10),
                Some(5),
            ),
            row(
                "m0-v2",
                Some(ADDR[2]),
                Expired,
                Some("vm-2 (pid 77, stale)"),
                Some(7),
                None,
                None,
            ),
            row("m0-v3", Some(ADDR[3]), Broken, None, Some(2), None, None),
            row(
                "m0-v4",
                Some(ADDR[0]),
                Breaking,
                Some("vm-4 (pid 9)"),
                Some(5),
                None,
                Some(2),
            ),
            row(
                "m0-v5",
                Some(ADDR[0]),
                Leased,
                Some("host-5"),
                Some(1),
                Some(20),
                None,
            ),
            row("m0-v6", Some(ADDR[1]), Available, None, Some(2), None, None),
        ]
    }

    #[tokio::test]
    async fn a_row_per_identity_in_every_state() {
        let f = every_state().await;
        let rows = status(&f.store, f.now()).await.unwrap();
        assert_eq!(rows, expected_rows());
    }

    #[test]
    fn rows_round_up_remaining_time_and_never_go_negative() {
        let mut md = Metadata::new();
        md.insert(meta::ACQUIRED_AT.into(), (T0 + 30).to_string());
        md.insert(meta::HOLDER_PID.into(), "not-a-pid".into());
        md.insert(meta::HOLDER_NODE.into(), "  ".into());
        md.insert(meta::HOLDER_HOST.into(), "vm-9".into());
        md.insert(meta::EPOCH.into(), "x".into());
        let record = LeaseRecord {
            identity: name("m0-v9"),
            state: LeaseState::Leased,
            duration: Some(fixed(15)),
            remaining: Some(Duration::from_millis(4_001)),
            metadata: md,
        };
        let r = status_row(&record, T0);
        assert_eq!(r.expires_in_secs, Some(5));
        assert_eq!(
            r.held_for_secs,
            Some(0),
            "acquired_at ahead of this host's clock"
        );
        assert_eq!(
            r.holder.as_deref(),
            Some("vm-9"),
            "blank node falls back to host"
        );
        assert_eq!(r.epoch, None, "an unreadable epoch is unknown, not 0");
    }

    /// A record as a `blob:` store reads it: no time left, no duration for a fixed lease.
    fn blob_record(state: LeaseState, metadata: &[(&str, &str)]) -> LeaseRecord {
        LeaseRecord {
            identity: name("m0-v1"),
            state,
            duration: None,
            remaining: None,
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_holders_bound_is_the_time_left_else_the_lease_duration_else_60s() {
        use BoundBasis::*;
        let bound = |r: &LeaseRecord| sign_bound(r).map(|b| (b.secs, b.basis));
        let leased = |md: &[(&str, &str)]| blob_record(LeaseState::Leased, md);

        let mut sqlite = leased(&[(meta::LEASE_SECS, "60")]);
        sqlite.duration = Some(fixed(15));
        sqlite.remaining = Some(std::time::Duration::from_millis(4_001));
        assert_eq!(bound(&sqlite), Some((5, Remaining)), "the store knows best");

        assert_eq!(
            bound(&leased(&[(meta::LEASE_SECS, "20")])),
            Some((20, LeaseSecs))
        );
        assert_eq!(
            bound(&leased(&[(meta::LEASE_SECS, " 45 ")])),
            Some((45, LeaseSecs))
        );
        for junk in ["", "5", "14", "61", "3600", "-15", "15.5", "fifteen"] {
            assert_eq!(
                bound(&leased(&[(meta::LEASE_SECS, junk)])),
                Some((60, AzureMax)),
                "lease_secs {junk:?} is not a lease duration"
            );
        }
        assert_eq!(bound(&leased(&[])), Some((60, AzureMax)));

        let mut stored = leased(&[(meta::LEASE_SECS, "20")]);
        stored.duration = Some(fixed(30));
        assert_eq!(bound(&stored), Some((30, Duration)));
        stored.duration = Some(fixed(15));
        assert_eq!(
            bound(&stored),
            Some((20, LeaseSecs)),
            "the longer of the two, whichever is stale"
        );

        let mut breaking = blob_record(LeaseState::Breaking, &[(meta::LEASE_SECS, "15")]);
        assert_eq!(bound(&breaking), Some((15, LeaseSecs)));
        breaking.duration = Some(LeaseDuration::Infinite);
        assert_eq!(
            bound(&breaking),
            Some((60, AzureMax)),
            "a break lasts 60 s at most"
        );

        let mut infinite = leased(&[(meta::LEASE_SECS, "15")]);
        infinite.duration = Some(LeaseDuration::Infinite);
        assert_eq!(bound(&infinite), None, "a tool's lease: it breaks at once");
        for state in [
            LeaseState::Available,
            LeaseState::Expired,
            LeaseState::Broken,
        ] {
            assert_eq!(
                bound(&blob_record(state, &[(meta::LEASE_SECS, "15")])),
                None
            );
        }
    }

    #[test]
    fn without_the_time_left_the_table_shows_its_bound_never_never() {
        let node = node("vm-1", "4242");
        let mut md = pairs(&node);
        md.push((meta::LEASE_SECS, "15"));
        let blob = status_row(&blob_record(LeaseState::Leased, &md), T0);
        assert_eq!(blob.expires_in_secs, None);
        let text = render_table(std::slice::from_ref(&blob));
        assert!(text.lines().nth(1).unwrap().ends_with("<=15s"), "{text}");
        let text = flat(&explain_break(&blob, None));
        assert!(
            text.contains(
                "Without --period the period is the rest of the current lease, which the \
                 store does not report: at most 15s (the lease duration its daemon wrote)."
            ),
            "{text}"
        );
        assert!(!text.contains("infinite"), "{text}");

        let mut breaking = blob_record(LeaseState::Breaking, &md);
        breaking.metadata.remove(meta::LEASE_SECS);
        let text = render_table(&[status_row(&breaking, T0)]);
        assert!(text.contains("BREAKING  vm-1 (pid 4242)"), "{text}");
        assert!(flat(&text).ends_with("acquirable in <=1m00s."), "{text}");
    }

    #[tokio::test]
    async fn json_has_exactly_the_snake_case_fields() {
        let f = every_state().await;
        let rows = status(&f.store, f.now()).await.unwrap();
        let json: serde_json::Value = serde_json::from_str(&render_json(&rows)).unwrap();
        let array = json.as_array().expect("an array");
        assert_eq!(array.len(), 7);
        let want = [
            "address",
            "epoch",
            "expires_in_secs",
            "held_for_secs",
            "holder",
            "identity",
            "last_fence",
            "last_fence_by",
            "last_fence_detail",
            "state",
        ];
        for object in array {
            let keys: Vec<&str> = object
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys, want);
        }
        assert_eq!(
            array[1],
            serde_json::json!({
                "identity": "m0-v1",
                "address": ADDR[1],
                "state": "leased",
                "holder": "vm-1 (pid 4242)",
                "epoch": 3,
                "held_for_secs": 10,
                "expires_in_secs": 5,
                "last_fence": null,
                "last_fence_detail": null,
                "last_fence_by": null,
            })
        );
        assert_eq!(
            array[0],
            serde_json::json!({
                "identity": "m0-v0",
                "address": null,
                "state": "available",
                "holder": null,
                "epoch": null,
                "held_for_secs": null,
                "expires_in_secs": null,
                "last_fence": null,
                "last_fence_detail": null,
                "last_fence_by": null,
            })
        );
        assert_eq!(array[2]["state"], "expired");
        assert_eq!(array[2]["holder"], "vm-2 (pid 77, stale)");
        assert_eq!(array[4]["state"], "breaking");
        assert_eq!(array[4]["expires_in_secs"], 2);
        assert_eq!(render_json(&[]), "[]");
    }

    #[tokio::test]
    async fn the_table_shows_holders_attention_states_and_a_summary() {
        let f = every_state().await;
        let rows = status(&f.store, f.now()).await.unwrap();
        let text = render_table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("IDENTITY  ADDRESS"), "{text}");

        // Aligned: every state cell starts where the STATE header does.
        let state_at = lines[0].find("STATE").unwrap();
        for (line, want) in lines[1..8].iter().zip([
            "available",
            "leased",
            "EXPIRED",
            "BROKEN",
            "BREAKING",
            "leased",
            "available",
        ]) {
            assert_eq!(&line[state_at..state_at + want.len()], want, "{text}");
        }
        assert!(lines[2].contains("vm-1 (pid 4242)") && lines[2].contains(ADDR[1]));
        assert!(
            lines[2].contains("10s") && lines[2].ends_with("5s"),
            "{text}"
        );
        assert!(lines[3].contains("vm-2 (pid 77, stale)"), "{text}");
        assert!(lines[6].ends_with("never"), "infinite lease: {text}");
        assert!(
            !lines[7].contains("vm-6"),
            "no holder once released: {text}"
        );
        assert!(lines.iter().all(|l| l == &l.trim_end()));
        assert_eq!(lines[8], "");
        assert_eq!(
            lines[9],
            "7 identities: 2 held, 1 breaking, 1 expired, 1 broken, 2 available"
        );
        // Notes are wrapped to 80 columns, continuations indented.
        assert_eq!(
            lines[10..],
            [
                "! m0-v2 EXPIRED: vm-2 (pid 77, stale) stopped renewing; a standby may take it",
                "  now (if none does, none is running).",
                "! m0-v3 BROKEN: acquirable now; no daemon has taken it yet.",
                "! m0-v4 BREAKING: vm-4 (pid 9) lost the lease and is fencing; acquirable in 2s.",
            ],
            "{text}"
        );
    }

    impl Fixture {
        /// What a daemon does when it gives `id` up: acquires it (as `holder`), writes its
        /// holder keys with `last_fence` and its detail, and releases it.
        async fn given_up(&self, id: &str, holder: &[(&str, &str)], fence: &[(&str, &str)]) {
            let mut md = holder.to_vec();
            md.extend_from_slice(fence);
            let lease = self.hold(id, fixed(15), &md, 1, ADDR[0]).await;
            self.store.release(&name(id), &lease).await.unwrap();
        }
    }

    const NO_CLIENT: &str =
        "cannot start the client /nonexistent/client: No such file or directory (os error 2)";

    /// m0-v0 given up (hand-off failed), m0-v1 stopped, m0-v2 given up (crash loop), m0-v3 given up with a long one, m0-v4 given up and taken by a healthy node,
    /// m0-v5 given up by a writer that named no holder.
    async fn given_up() -> Fixture {
        let f = Fixture::new();
        let (vm1, vm2, vm3) = (node("vm-1", "4242"), node("vm-2", "77"), node("vm-3", "31"));
        let fence = |reason, detail| {
            vec![
                (meta::LAST_FENCE, reason),
                (meta::LAST_FENCE_DETAIL, detail),
            ]
        };
        f.given_up("m0-v0", &pairs(&vm1), &fence("hand_off_failed", NO_CLIENT))
            .await;
        f.given_up("m0-v1", &pairs(&vm2), &fence("shutdown", "SIGTERM"))
            .await;
        f.given_up(
            "m0-v2",
            &pairs(&vm3),
            &fence("crash_loop", "the client exited 5 times within 60 s"),
        )
        .await;
        let long = format!("key unreadable: {}end", "x ".repeat(150));
        f.given_up("m0-v3", &pairs(&vm1), &fence("deadline_missed", &long))
            .await;
        f.given_up("m0-v4", &pairs(&vm1), &fence("hand_off_failed", NO_CLIENT))
            .await;
        f.hold("m0-v4", fixed(15), &pairs(&vm2), 2, ADDR[0]).await;
        f.given_up("m0-v5", &[], &[(meta::LAST_FENCE, "lease_lost")])
            .await;
        f
    }

    #[tokio::test]
    async fn a_daemon_that_gave_an_identity_up_is_named_with_its_reason() {
        let f = given_up().await;
        let rows = status(&f.store, f.now()).await.unwrap();
        let fence = |r: &StatusRow| {
            (
                r.last_fence.clone(),
                r.last_fence_detail.clone(),
                r.last_fence_by.clone(),
            )
        };
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            fence(&rows[0]),
            (
                some("hand_off_failed"),
                some(NO_CLIENT),
                some("vm-1 (pid 4242)")
            )
        );
        assert_eq!(rows[0].state, LeaseState::Available);
        assert_eq!(rows[0].holder, None, "nobody holds it");
        assert_eq!(
            fence(&rows[1]),
            (some("shutdown"), some("SIGTERM"), some("vm-2 (pid 77)"))
        );
        assert_eq!(
            fence(&rows[4]),
            (None, None, None),
            "the next holder's metadata replaces it"
        );
        assert_eq!(rows[4].holder.as_deref(), Some("vm-2 (pid 77)"));
        assert_eq!(fence(&rows[5]), (some("lease_lost"), None, None));

        let text = render_table(&rows);
        let notes: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("6 identities"))
            .skip(1)
            .collect();
        assert!(notes.iter().all(|l| l.chars().count() <= WRAP), "{text}");
        let notes = notes.join("\n");
        assert!(
            notes.starts_with(
                "! m0-v0: vm-1 (pid 4242) gave it up: hand_off_failed: cannot start the client\n  \
                 /nonexistent/client: No such file or directory (os error 2)\n"
            ),
            "{text}"
        );
        assert!(!notes.contains("m0-v1"), "a stop is no news: {text}");
        assert!(
            flat(&notes).contains(
                "! m0-v2: vm-3 (pid 31) gave it up: crash_loop: the client exited 5 times \
                 within 60 s"
            ),
            "{text}"
        );
        assert!(
            flat(&notes).contains(&format!(
                "! m0-v3: vm-1 (pid 4242) gave it up: deadline_missed: key unreadable: {}x...",
                "x ".repeat(91)
            )),
            "the detail is cut to 200 characters: {text}"
        );
        assert!(!notes.contains("m0-v4"), "{text}");
        assert!(
            notes.ends_with("! m0-v5: its last holder gave it up: lease_lost."),
            "{text}"
        );

        let json: serde_json::Value = serde_json::from_str(&render_json(&rows)).unwrap();
        assert_eq!(json[0]["last_fence"], "hand_off_failed");
        assert_eq!(json[0]["last_fence_detail"], NO_CLIENT);
        assert_eq!(json[0]["last_fence_by"], "vm-1 (pid 4242)");
        assert_eq!(
            json[1]["last_fence"], "shutdown",
            "the JSON has every reason"
        );
        assert_eq!(json[2]["last_fence"], "crash_loop");
        assert!(json[3]["last_fence_detail"].as_str().unwrap().len() > 300);
        assert!(json[4]["last_fence"].is_null() && json[4]["last_fence_by"].is_null());
        assert!(json[5]["last_fence_by"].is_null() && json[5]["last_fence_detail"].is_null());
    }

    #[test]
    fn summaries_and_durations_read_well() {
        assert!(render_table(&[]).starts_with("0 identities: the lease store has no records"));
        let one = row(
            "m0-v0",
            None,
            LeaseState::Leased,
            None,
            None,
            Some(7325),
            None,
        );
        let text = render_table(std::slice::from_ref(&one));
        assert!(text.ends_with("\n\n1 identity: 1 held\n"), "{text}");
        assert!(
            text.contains("unknown"),
            "a leased row with no holder: {text}"
        );
        assert!(text.contains("2h02m"), "{text}");
        assert_eq!(
            [0, 59, 60, 61, 3599, 3600, 86_399, 86_400, 200_000].map(human_secs),
            ["0s", "59s", "1m00s", "1m01s", "59m59s", "1h00m", "23h59m", "1d00h", "2d07h"]
        );
    }

    #[test]
    fn the_table_does_not_pass_control_characters_through() {
        let evil = row(
            "m0-v0",
            Some("0x\u{1b}]0;pwned\u{7}"),
            LeaseState::Leased,
            Some("vm\u{1b}[31m-1\r\n"),
            None,
            None,
            None,
        );
        let text = render_table(std::slice::from_ref(&evil)) + &explain_break(&evil, None);
        assert!(!text.contains('\u{1b}') && !text.contains('\r') && !text.contains('\u{7}'));
        assert!(text.contains("vm?[31m-1??"), "{text}");

        // The stores take only printable ASCII metadata; whoever else wrote this is not
        // obeyed either.
        let mut given_up = evil;
        given_up.state = LeaseState::Available;
        given_up.last_fence = Some("crash_loop\u{1b}[2J".into());
        given_up.last_fence_detail = Some("client exited\r\n5 times\u{7}".into());
        given_up.last_fence_by = given_up.holder.take();
        let text = render_table(&[given_up]);
        assert!(!text.contains(['\u{1b}', '\r', '\u{7}']), "{text}");
        assert!(
            flat(&text).contains(
                "! m0-v0: vm?[31m-1?? gave it up: crash_loop?[2J: client exited??5 times?"
            ),
            "{text}"
        );
    }

    /// Runs `leased break ID --leases SPEC [--yes] [--period P] [--force-overlap]` on `store`;
    /// the result and what it printed.
    async fn ask(
        store: &dyn LeaseStore,
        id: &str,
        yes: bool,
        period: Option<u64>,
        force_overlap: bool,
        now_unix: u64,
    ) -> (Result<(), Failure>, String) {
        let request = BreakRequest {
            identity: name(id),
            yes,
            period: period.map(secs),
            force_overlap,
            store_args: "--leases SPEC".into(),
        };
        let mut out = Vec::new();
        let result = break_on(store, &request, now_unix, &mut out).await;
        (result, String::from_utf8(out).unwrap())
    }

    #[tokio::test]
    async fn break_without_yes_explains_and_changes_nothing() {
        let f = every_state().await;
        let v1 = name("m0-v1");
        let (result, out) = ask(&f.store, "m0-v1", false, None, false, f.now()).await;
        let err = result.unwrap_err();
        assert_eq!(err.status(), Status::Usage);
        assert!(err.message().contains("m0-v1") && err.message().contains("--yes"));
        let text = flat(&out);
        assert!(text.starts_with("Not breaking m0-v1: breaking needs --yes"));
        assert!(text.contains("vm-1 (pid 4242)"), "shows the row: {text}");
        assert!(text.contains("the rest of the current lease, 5s"), "{text}");
        assert!(text.contains("stopping the holder's daemon"), "{text}");
        assert!(!text.contains("WARNING"), "{text}");
        let after = f.store.read(&v1).await.unwrap();
        assert_eq!(after.state, LeaseState::Leased);
        assert_eq!(after.remaining, Some(secs(5)));
    }

    #[test]
    fn the_explanation_fits_the_state_and_warns_about_short_periods() {
        let leased = row(
            "m0-v1",
            Some(ADDR[1]),
            LeaseState::Leased,
            Some("vm-1 (pid 4242)"),
            Some(3),
            Some(10),
            Some(12),
        );
        let raw = explain_break(&leased, Some(secs(3)));
        for line in raw
            .lines()
            .filter(|l| !l.contains(ADDR[1]) && !l.starts_with("IDENTITY"))
        {
            assert!(line.chars().count() <= WRAP, "{line:?} is too long");
        }
        let text = flat(&raw);
        assert!(
            text.contains(
                "WARNING: with --period 3, a standby may acquire m0-v1 in 3 s; vm-1 (pid \
                 4242) may sign until up to 12 s from now (the time left on its lease, as \
                 the store reports it): up to 9 s with two signers. With --yes such a \
                 period is refused unless --force-overlap is given too"
            ),
            "{text}"
        );
        assert!(!explain_break(&leased, Some(secs(12))).contains("WARNING"));
        assert!(!explain_break(&leased, None).contains("WARNING"));
        assert!(raw.ends_with("leased break m0-v1 --leases SPEC --yes [--period SECONDS]\n"));

        let mut available = leased.clone();
        available.state = LeaseState::Available;
        assert!(flat(&explain_break(&available, None)).contains("no lease to break"));
        let mut broken = leased.clone();
        broken.state = LeaseState::Broken;
        assert!(flat(&explain_break(&broken, None)).contains("already broken"));
        let mut expired = leased.clone();
        expired.state = LeaseState::Expired;
        assert!(flat(&explain_break(&expired, None)).contains("can no longer renew it back"));
        let mut breaking = leased;
        breaking.state = LeaseState::Breaking;
        assert!(
            flat(&explain_break(&breaking, None)).contains("already running: acquirable in 12s")
        );
        assert!(flat(&explain_break(&breaking, Some(secs(2))))
            .contains("WARNING: with --period 2, a standby may acquire m0-v1 in 2 s"));
    }

    #[test]
    fn wrapping_keeps_words_whole_and_indents_continuations() {
        let text = "word ".repeat(40);
        let wrapped = wrap(&format!("1. {text}"), "   ");
        let lines: Vec<&str> = wrapped.lines().collect();
        assert!(lines.len() > 2, "{wrapped}");
        assert!(lines.iter().all(|l| l.len() <= WRAP && !l.ends_with(' ')));
        assert!(
            lines[1..].iter().all(|l| l.starts_with("   word")),
            "{wrapped}"
        );
        assert_eq!(flat(&wrapped), flat(&format!("1. {text}")));
        let long = "x".repeat(WRAP + 5);
        assert_eq!(wrap(&format!("a {long} b"), ""), format!("a\n{long}\nb\n"));
    }

    #[tokio::test]
    async fn break_with_a_period_keeps_it_locked_for_that_long() {
        let f = Fixture::new();
        let v1 = name("m0-v1");
        f.hold(
            "m0-v1",
            fixed(15),
            &pairs(&node("vm-1", "4242")),
            3,
            ADDR[1],
        )
        .await;
        f.clock.advance(secs(3)); // 12 s left

        let report = break_identity(&f.store, &v1, Some(secs(5))).await.unwrap();
        assert_eq!(
            report.outcome,
            BreakOutcome::Breaking {
                acquirable_in: secs(5)
            }
        );
        assert_eq!(report.before.state, LeaseState::Leased);
        assert_eq!(
            render_break(&report),
            "m0-v1 breaking; acquirable in 5 s\nIt was held by vm-1 (pid 4242), epoch 3. \
             That daemon fences at its next renew, or by its own fence deadline if it \
             cannot reach the store.\n"
        );
        let now = f.store.read(&v1).await.unwrap();
        assert_eq!(
            (now.state, now.remaining),
            (LeaseState::Breaking, Some(secs(5)))
        );
        assert!(
            f.store.acquire(&v1, fixed(15), None).await.is_err(),
            "locked during the period"
        );

        // Another break may only shorten it; 0 breaks it now.
        let report = break_identity(&f.store, &v1, Some(Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(report.outcome, BreakOutcome::Broken);
        assert!(render_break(&report).starts_with("m0-v1 broken; acquirable in 0 s\n"));
        f.store.acquire(&v1, fixed(15), None).await.unwrap();
    }

    #[tokio::test]
    async fn break_without_a_period_waits_out_the_lease_and_says_so() {
        let f = Fixture::new();
        f.hold(
            "m0-v1",
            fixed(15),
            &pairs(&node("vm-1", "4242")),
            3,
            ADDR[1],
        )
        .await;
        f.clock.advance(Duration::from_millis(4_500));
        let (result, text) = ask(&f.store, "m0-v1", true, None, false, f.now()).await;
        result.unwrap();
        assert!(
            text.starts_with("m0-v1 breaking; acquirable in 11 s\n"),
            "10.5 s rounds up: {text}"
        );

        // An identity with no lease: nothing to break, and that is not an error.
        let v0 = name("m0-v0");
        f.store.create_record(&v0).await.unwrap();
        let report = break_identity(&f.store, &v0, None).await.unwrap();
        assert_eq!(report.outcome, BreakOutcome::NoLease);
        assert_eq!(
            render_break(&report),
            "m0-v0 had no lease to break; acquirable in 0 s\n"
        );
    }

    /// What a real store may do that the fixture's does not: a holder renewing between the
    /// command's read and its break, a `blob:` store reporting neither the time left nor the
    /// duration of a fixed lease, a break failing. Records the break periods it is sent.
    struct Twisted<'a> {
        inner: &'a SqliteLeaseStore,
        /// Renewed just before the next break, as by a holder racing the command.
        renew_before_break: std::sync::Mutex<Option<(Name, LeaseId)>>,
        /// Reads as a `blob:` store does.
        blind: bool,
        /// Breaks with a period fail as a busy store's would.
        fail_period_break: bool,
        breaks: std::sync::Mutex<Vec<Option<Duration>>>,
    }

    impl<'a> Twisted<'a> {
        fn new(inner: &'a SqliteLeaseStore) -> Self {
            Self {
                inner,
                renew_before_break: Default::default(),
                blind: false,
                fail_period_break: false,
                breaks: Default::default(),
            }
        }

        fn breaks(&self) -> Vec<Option<Duration>> {
            self.breaks.lock().unwrap().clone()
        }

        fn seen(&self, mut r: LeaseRecord) -> LeaseRecord {
            if self.blind {
                r.remaining = None;
                r.duration = r.duration.filter(|d| *d == LeaseDuration::Infinite);
            }
            r
        }
    }

    #[async_trait::async_trait]
    impl LeaseStore for Twisted<'_> {
        async fn create_record(
            &self,
            identity: &Name,
        ) -> Result<shared::lease::RecordCreated, LeaseError> {
            self.inner.create_record(identity).await
        }
        async fn acquire(
            &self,
            identity: &Name,
            duration: LeaseDuration,
            proposed: Option<&LeaseId>,
        ) -> Result<LeaseId, LeaseError> {
            self.inner.acquire(identity, duration, proposed).await
        }
        async fn renew(&self, identity: &Name, lease: &LeaseId) -> Result<(), LeaseError> {
            self.inner.renew(identity, lease).await
        }
        async fn release(&self, identity: &Name, lease: &LeaseId) -> Result<(), LeaseError> {
            self.inner.release(identity, lease).await
        }
        async fn change(
            &self,
            identity: &Name,
            lease: &LeaseId,
            proposed: &LeaseId,
        ) -> Result<LeaseId, LeaseError> {
            self.inner.change(identity, lease, proposed).await
        }
        async fn break_lease(
            &self,
            identity: &Name,
            period: Option<Duration>,
        ) -> Result<Duration, LeaseError> {
            self.breaks.lock().unwrap().push(period);
            let racer = self.renew_before_break.lock().unwrap().take();
            if let Some((id, lease)) = racer {
                self.inner.renew(&id, &lease).await.unwrap();
            }
            if self.fail_period_break && period.is_some() {
                return Err(LeaseError::Transient {
                    message: "database is locked".into(),
                    source: None,
                });
            }
            self.inner.break_lease(identity, period).await
        }
        async fn write_metadata(
            &self,
            identity: &Name,
            lease: &LeaseId,
            metadata: &Metadata,
        ) -> Result<(), LeaseError> {
            self.inner.write_metadata(identity, lease, metadata).await
        }
        async fn read(&self, identity: &Name) -> Result<LeaseRecord, LeaseError> {
            Ok(self.seen(self.inner.read(identity).await?))
        }
        async fn list(&self) -> Result<Vec<LeaseRecord>, LeaseError> {
            let records = self.inner.list().await?;
            Ok(records.into_iter().map(|r| self.seen(r)).collect())
        }
    }

    /// m0-v1 held by vm-1 (pid 4242), epoch 3, for 15 s, with `left` of it to go.
    async fn held_with(left: u64, extra: &[(&str, &str)]) -> (Fixture, LeaseId) {
        let f = Fixture::new();
        let holder = node("vm-1", "4242");
        let mut md = pairs(&holder);
        md.extend_from_slice(extra);
        let lease = f.hold("m0-v1", fixed(15), &md, 3, ADDR[1]).await;
        f.clock.advance(secs(15 - left));
        (f, lease)
    }

    async fn state_of(store: &dyn LeaseStore, id: &str) -> (LeaseState, Option<Duration>) {
        let r = store.read(&name(id)).await.unwrap();
        (r.state, r.remaining)
    }

    #[tokio::test]
    async fn a_period_shorter_than_the_holders_time_left_is_refused_and_changes_nothing() {
        let (f, _) = held_with(12, &[]).await;
        for p in [0, 11] {
            let (result, out) = ask(&f.store, "m0-v1", true, Some(p), false, f.now()).await;
            let err = result.unwrap_err();
            assert_eq!(err.status(), Status::Usage);
            assert!(
                err.message().starts_with("m0-v1 not broken: --period")
                    && err.message().contains(&format!("for up to {} s", 12 - p))
                    && err.message().contains("--force-overlap"),
                "{}",
                err.message()
            );
            let text = flat(&out);
            assert!(
                text.starts_with(&format!(
                    "Not breaking m0-v1: --period {p} could let two VMs sign with it."
                )),
                "{out}"
            );
            assert!(
                text.contains("leased vm-1 (pid 4242) 3 3s 12s"),
                "shows the row: {out}"
            );
            assert!(
                text.contains(&format!(
                    "With --period {p}, a standby may acquire m0-v1 in {p} s; vm-1 (pid 4242) \
                     may sign until up to 12 s from now (the time left on its lease, as the \
                     store reports it): up to {} s with two signers. Nothing was changed.",
                    12 - p
                )),
                "{out}"
            );
            let command =
                format!("leased break m0-v1 --leases SPEC --yes --period {p} --force-overlap");
            assert!(
                out.ends_with(&format!(
                    "accepting up to {} s with two signers:\n    {command}\n",
                    12 - p
                )),
                "{out}"
            );
            for line in out
                .lines()
                .filter(|l| !l.contains(ADDR[1]) && !l.starts_with("IDENTITY"))
            {
                assert!(line.chars().count() <= WRAP, "{line:?} is too long");
            }
            assert_eq!(
                state_of(&f.store, "m0-v1").await,
                (LeaseState::Leased, Some(secs(12)))
            );
        }
    }

    #[tokio::test]
    async fn a_period_the_check_accepts_is_not_sent_so_a_racing_renew_cannot_shorten_the_lock() {
        let (f, _) = held_with(12, &[]).await;
        let store = Twisted::new(&f.store);
        let (result, out) = ask(&store, "m0-v1", true, Some(12), false, f.now()).await;
        result.unwrap();
        assert!(
            out.starts_with("m0-v1 breaking; acquirable in 12 s\n"),
            "{out}"
        );
        assert!(
            !out.contains("WARNING") && !out.contains("longer than"),
            "{out}"
        );
        assert_eq!(store.breaks(), [None], "the store's default, not --period");

        // 3 s left when read, so --period 5 passes; the holder renews before the break.
        let (f, lease) = held_with(3, &[]).await;
        let store = Twisted::new(&f.store);
        *store.renew_before_break.lock().unwrap() = Some((name("m0-v1"), lease));
        let (result, out) = ask(&store, "m0-v1", true, Some(5), false, f.now()).await;
        result.unwrap();
        assert!(
            out.starts_with("m0-v1 breaking; acquirable in 15 s\n"),
            "{out}"
        );
        assert!(
            flat(&out).contains(
                "It stays locked longer than --period 5: the lease had more time left than \
                 the check allowed for (its holder renewed meanwhile"
            ),
            "{out}"
        );
        assert_eq!(store.breaks(), [None]);
        assert_eq!(
            state_of(&f.store, "m0-v1").await,
            (LeaseState::Breaking, Some(secs(15)))
        );
    }

    #[tokio::test]
    async fn force_overlap_breaks_and_prints_the_window_as_a_warning() {
        let (f, _) = held_with(12, &[]).await;
        let store = Twisted::new(&f.store);
        let (result, out) = ask(&store, "m0-v1", true, Some(4), true, f.now()).await;
        result.unwrap();
        assert!(
            out.starts_with("m0-v1 breaking; acquirable in 4 s\n"),
            "{out}"
        );
        assert!(
            flat(&out).ends_with(
                "WARNING: two VMs may sign with m0-v1: a standby may acquire m0-v1 in 4 s; \
                 vm-1 (pid 4242) may sign until up to 12 s from now (the time left on its \
                 lease, as the store reports it): up to 8 s with two signers."
            ),
            "{out}"
        );
        let warning = &out[out.find("WARNING").unwrap()..];
        assert!(warning.lines().all(|l| l.chars().count() <= WRAP), "{out}");
        // First the safe break, which stops renewals and says what was left; then shorter.
        assert_eq!(store.breaks(), [None, Some(secs(4))]);
        assert_eq!(
            state_of(&f.store, "m0-v1").await,
            (LeaseState::Breaking, Some(secs(4)))
        );

        // A holder that renewed after the read may sign for a whole lease: the warning says so.
        let (f, lease) = held_with(3, &[]).await;
        let store = Twisted::new(&f.store);
        *store.renew_before_break.lock().unwrap() = Some((name("m0-v1"), lease));
        let (result, out) = ask(&store, "m0-v1", true, Some(0), true, f.now()).await;
        result.unwrap();
        assert!(
            out.starts_with("m0-v1 broken; acquirable in 0 s\n"),
            "{out}"
        );
        assert!(
            flat(&out).contains("may sign until up to 15 s from now")
                && flat(&out).contains("up to 15 s with two signers"),
            "{out}"
        );
        assert_eq!(state_of(&f.store, "m0-v1").await.0, LeaseState::Broken);
    }

    #[tokio::test]
    async fn when_shortening_a_forced_break_fails_the_safe_break_stays() {
        let (f, _) = held_with(12, &[]).await;
        let mut store = Twisted::new(&f.store);
        store.fail_period_break = true;
        let (result, out) = ask(&store, "m0-v1", true, Some(0), true, f.now()).await;
        let err = result.unwrap_err();
        assert_eq!(err.status(), Status::TempFail);
        assert!(
            err.message().starts_with(
                "m0-v1 is breaking for the rest of its lease (acquirable in 12 s), which is \
                 safe; shortening that to --period 0 failed: "
            ),
            "{}",
            err.message()
        );
        assert!(
            out.starts_with("m0-v1 breaking; acquirable in 12 s\n"),
            "{out}"
        );
        assert!(!out.contains("WARNING"), "{out}");
        assert_eq!(
            state_of(&f.store, "m0-v1").await,
            (LeaseState::Breaking, Some(secs(12)))
        );
    }

    #[tokio::test]
    async fn no_flag_is_needed_where_no_holder_can_sign_past_the_period() {
        let f = every_state().await;
        for (id, starts) in [
            ("m0-v0", "m0-v0 had no lease to break"),
            ("m0-v2", "m0-v2 broken; acquirable in 0 s"),
            ("m0-v3", "m0-v3 broken; acquirable in 0 s"),
            ("m0-v5", "m0-v5 broken; acquirable in 0 s"),
            ("m0-v4", "m0-v4 breaking; acquirable in 2 s"),
        ] {
            let period = if id == "m0-v4" { 2 } else { 0 };
            let (result, out) = ask(&f.store, id, true, Some(period), false, f.now()).await;
            result.unwrap_or_else(|e| panic!("{id}: {e:?}\n{out}"));
            assert!(out.starts_with(starts), "{id}: {out}");
            assert!(!out.contains("WARNING"), "{id}: {out}");
        }
        // Shortening a running break is shortening the holder's time to fence.
        let (result, out) = ask(&f.store, "m0-v4", true, Some(0), false, f.now()).await;
        assert_eq!(result.unwrap_err().status(), Status::Usage);
        assert!(
            flat(&out).contains(
                "up to 2 s with two signers. Nothing was changed: the running break goes on, \
                 and m0-v4 is acquirable in 2s."
            ),
            "{out}"
        );
    }

    #[tokio::test]
    async fn on_a_blob_store_the_period_is_checked_against_the_holders_lease_duration() {
        // 5 s left in truth, but the store does not say; the holder wrote D = 15 s.
        let (f, _) = held_with(5, &[(meta::LEASE_SECS, "15")]).await;
        let mut store = Twisted::new(&f.store);
        store.blind = true;
        let (result, out) = ask(&store, "m0-v1", true, Some(14), false, f.now()).await;
        assert_eq!(result.unwrap_err().status(), Status::Usage);
        assert!(
            flat(&out).contains(
                "may sign until up to 15 s from now (its lease duration, as its daemon \
                 wrote it; the store does not report the time left): up to 1 s with two \
                 signers."
            ),
            "{out}"
        );
        assert!(store.breaks().is_empty());
        let (result, out) = ask(&store, "m0-v1", true, Some(15), false, f.now()).await;
        result.unwrap();
        assert!(
            out.starts_with("m0-v1 breaking; acquirable in 5 s\n"),
            "the store's rest of the lease: {out}"
        );

        // No lease_secs: only Azure's longest lease bounds it.
        let (f, _) = held_with(5, &[]).await;
        let mut store = Twisted::new(&f.store);
        store.blind = true;
        let (result, out) = ask(&store, "m0-v1", true, Some(59), false, f.now()).await;
        assert_eq!(result.unwrap_err().status(), Status::Usage);
        assert!(
            flat(&out).contains(
                "may sign until up to 60 s from now (the longest lease Azure grants; the \
                 store reports neither the time left nor the lease duration): up to 1 s"
            ),
            "{out}"
        );
        let (result, _) = ask(&store, "m0-v1", true, Some(60), false, f.now()).await;
        result.unwrap();
        assert_eq!(store.breaks(), [None]);
    }

    #[test]
    fn the_command_to_break_anyway_repeats_the_store_arguments_quoted() {
        let args = |extra: &[&str]| {
            let mut argv = vec!["break", "m0-v1", "--yes", "--period", "0"];
            argv.extend_from_slice(extra);
            match parse(&argv).unwrap() {
                Command::Break(a) => a,
                other => panic!("{other:?}"),
            }
        };
        let plain = args(&["--leases", "sqlite:/var/lib/leased/leases.db"]);
        let request = BreakRequest::from_args(&plain, name("m0-v1"), Some(secs(0)));
        assert_eq!(
            request.forced_command(0),
            "leased break m0-v1 --leases sqlite:/var/lib/leased/leases.db --yes --period 0 \
             --force-overlap"
        );
        let odd = args(&[
            "--leases",
            "sqlite:/srv/my leases/it's.db",
            "--azure-credential",
            "developer-tools",
        ]);
        let request = BreakRequest::from_args(&odd, name("m0-v1"), Some(secs(0)));
        assert_eq!(
            request.forced_command(3),
            "leased break m0-v1 --leases 'sqlite:/srv/my leases/it'\\''s.db' \
             --azure-credential developer-tools --yes --period 3 --force-overlap"
        );
        assert_eq!(shell_word(""), "''");
    }

    #[tokio::test]
    async fn breaking_an_unknown_identity_names_it() {
        let f = every_state().await;
        let ghost = name("m9-v9");
        let err = break_identity(&f.store, &ghost, None).await.unwrap_err();
        assert!(matches!(&err, LeaseError::NotFound { identity } if *identity == ghost));
        for yes in [true, false] {
            let (result, out) = ask(&f.store, "m9-v9", yes, Some(0), yes, f.now()).await;
            let failure = result.unwrap_err();
            assert_eq!(failure.status(), Status::NoInput);
            assert!(failure.message().contains("m9-v9"), "{}", failure.message());
            assert!(out.is_empty());
        }
        let err = break_identity(&f.store, &name("m0-v1"), Some(secs(61)))
            .await
            .unwrap_err();
        assert!(matches!(err, LeaseError::Invalid(_)));
        assert_eq!(
            f.store.read(&name("m0-v1")).await.unwrap().state,
            LeaseState::Leased
        );
    }

    #[tokio::test]
    async fn status_output_is_json_or_the_table() {
        let f = every_state().await;
        let mut json = Vec::new();
        status_on(&f.store, true, f.now(), &mut json).await.unwrap();
        let json = String::from_utf8(json).unwrap();
        assert!(json.starts_with('[') && json.ends_with("]\n"), "{json}");
        let mut table = Vec::new();
        status_on(&f.store, false, f.now(), &mut table)
            .await
            .unwrap();
        assert!(String::from_utf8(table).unwrap().starts_with("IDENTITY"));
    }

    #[test]
    fn store_errors_map_to_sysexits() {
        let transient = LeaseError::Transient {
            message: "locked".into(),
            source: None,
        };
        let backend = LeaseError::Backend {
            message: "corrupt".into(),
            source: None,
        };
        assert_eq!(lease_failure(transient).status(), Status::TempFail);
        assert_eq!(lease_failure(backend).status(), Status::Unavailable);
        assert_eq!(
            lease_failure(LeaseError::Invalid("x".into())).status(),
            Status::Usage
        );
        let lost = LeaseError::Lost {
            identity: name("m0-v1"),
            reason: LostReason::Broken,
        };
        assert_eq!(lease_failure(lost).status(), Status::Software);
        assert!(!Failure::new(Status::Software, "a\nb")
            .message()
            .contains('\n'));
    }

    #[test]
    fn a_missing_store_is_refused_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("typo.db");
        let spec = format!("sqlite:{}", path.display());
        let none = AzureOptions::default();
        let err = open_store(&spec, &none).err().unwrap();
        assert_eq!(err.status(), Status::NoInput);
        assert!(
            err.message().contains("no lease store at"),
            "{}",
            err.message()
        );
        assert!(!path.exists());

        let err = open_store(&format!("sqlite:{}", dir.path().display()), &none)
            .err()
            .unwrap();
        assert_eq!(err.status(), Status::NoInput);
        assert_eq!(
            open_store("s3:bucket", &none).err().unwrap().status(),
            Status::Usage
        );
        // Opening a blob: store sends nothing yet; it fails at the first call instead.
        assert!(open_store("blob:https://a.blob.core.windows.net/c", &none).is_ok());

        drop(SqliteLeaseStore::open(&path).unwrap());
        assert!(open_store(&spec, &none).is_ok());
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Command {
        Status(StatusArgs),
        Break(BreakArgs),
    }

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        use clap::Parser as _;
        Cli::try_parse_from(std::iter::once("leased").chain(args.iter().copied()))
            .map(|c| c.command)
    }

    #[test]
    fn arguments_parse_and_help_teaches() {
        match parse(&["status", "--leases", "sqlite:l.db", "--json"]).unwrap() {
            Command::Status(a) => assert_eq!((a.leases.as_str(), a.json), ("sqlite:l.db", true)),
            other => panic!("{other:?}"),
        }
        match parse(&["break", "m0-v1", "--leases", "sqlite:l.db", "--period", "0"]).unwrap() {
            Command::Break(a) => {
                assert_eq!(a.identity, "m0-v1");
                assert_eq!((a.yes, a.period), (false, Some(0)));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["break", "m0-v1", "--leases", "x", "--period", "61"]).is_err());
        assert!(
            parse(&["break", "m0-v1", "--leases", "x", "--force-overlap"]).is_err(),
            "--force-overlap alone allows nothing"
        );
        match parse(&[
            "break",
            "m0-v1",
            "--leases",
            "x",
            "--period",
            "0",
            "--force-overlap",
        ])
        .unwrap()
        {
            Command::Break(a) => assert!(a.force_overlap && a.period == Some(0)),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["break", "--leases", "sqlite:l.db", "--yes"]).is_err());
        assert!(parse(&["status"]).is_err(), "--leases is required");

        let help = parse(&["break", "--help"]).unwrap_err().to_string();
        for phrase in [
            "Without --yes nothing is",
            "fence guard",
            "systemctl stop leased",
            "--period <SECONDS>",
            "--force-overlap",
            "is refused (exit 64, nothing",
            "(lease_secs)",
            "the window during which two VMs may sign",
            "Exit status: 0 done; 64",
        ] {
            assert!(help.contains(phrase), "{phrase:?} missing from:\n{help}");
        }
        let help = parse(&["status", "--help"]).unwrap_err().to_string();
        assert!(help.contains("held_for_secs") && help.contains("Exit status"));
        assert!(help.contains("last_fence_detail") && help.contains("gave an identity up"));
    }
}
