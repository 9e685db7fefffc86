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
//! - print anything but lease records and public addresses. Lease records hold only what
//!   the daemon writes under its lease (node, host, boot id, pid, acquired-at, epoch, the
//!   public validator address), so nothing there can be secret; keep it that way;
//! - read a secret's value. With `leased status --secrets SPEC` it lists the secret store's
//!   properties (names and tags: Key Vault's "list secret properties" carries no values)
//!   for the `address` tag `orchestrator` wrote, and nothing else, and never creates a
//!   `dir:` store;
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
//! | `address`         | string or null | its validator address, as the last holder wrote it (EIP-55); before the first acquire, its secret's `address` tag when `--secrets` is given, else null |
//! | `state`           | string         | `available`, `leased`, `expired`, `breaking` or `broken` |
//! | `holder`          | string or null | `leased`, `breaking`: `NODE (pid PID)`; `expired`: `NODE (pid PID, stale)`. NODE is `holder_node`, else `holder_host`. Null in the other states, or when the holder wrote neither |
//! | `epoch`           | integer or null| the generation counter the last holder wrote; null before the first acquire |
//! | `held_for_secs`   | integer or null| `leased` only: whole seconds since `acquired_at`, on this host's clock (0 if that is in the future) |
//! | `expires_in_secs` | integer or null| `leased`: seconds left on the lease, rounded up, null for an infinite lease; `breaking`: seconds until it is broken; null otherwise, and whenever the store does not report it (a `blob:` store never does) |
//! | `last_fence`      | string or null | why the last daemon to give the identity up did so, as it wrote it under its lease just before releasing: `hand_off_failed`, `crash_loop`, `deadline_missed`, `lease_lost`, or `shutdown` (a normal stop); null when none did since the last holder's metadata was written, which replaces it |
//! | `last_fence_detail` | string or null | that daemon's one-line detail, e.g. `cannot start the client …` |
//! | `last_fence_by`   | string or null | that daemon, `NODE (pid PID)` as in `holder`; null without `last_fence` |
//! | `enode`           | string or null | `leased` only: the holder's client's enode URL, as it registered it (`[client] enode`); null otherwise, or when it is not a well-formed enode URL |
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
    meta, BreakPeriod, LeaseDuration, LeaseError, LeaseRecord, LeaseState, LeaseStore, LostReason,
    MAX_BREAK_PERIOD, MAX_LEASE, MIN_LEASE,
};
use shared::secret::{SecretProperties, SecretStore};
use shared::spec::{LeaseStoreSpec, SecretStoreSpec};
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
report the time left, as a blob: store never does.

The ADDRESS of an identity no daemon has held yet is empty unless --secrets names the
secret store: then it is read from the identity's secret's tags (never its value).

--watch redraws the table every second until Ctrl-C (exit 0): in a terminal it clears the
screen each time; when stdout is not a terminal it writes each table after the last, under
a time line, so it can be logged.

Example: leased status --leases sqlite:/var/lib/leased/leases.db
  --secrets dir:/var/lib/leased/secrets --watch",
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
    /// Secret store to read the addresses of identities nobody has held yet from, as in
    /// the daemons' `store.secrets`: dir:PATH or keyvault:https://NAME.vault.azure.net.
    /// Only the secrets' tags are read, never a value; a store that cannot be listed is
    /// noted on stderr and the table shown without those addresses.
    #[arg(long, value_name = "SPEC")]
    pub secrets: Option<String>,
    /// Redraw every second until Ctrl-C (see above).
    #[arg(long, conflicts_with = "json")]
    pub watch: bool,
    /// How to authenticate to a blob: or keyvault: store: managed-identity (the default,
    /// on a VM) or developer-tools (your `az login`). The storage emulator needs neither:
    /// set AZURE_STORAGE_CONNECTION_STRING to its connection string.
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
loses its lease by itself within one lease duration.

Example: leased break m0-v1 --leases sqlite:/var/lib/leased/leases.db --yes",
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
    #[arg(long, value_name = "SECONDS", value_parser = parse_break_period)]
    pub period: Option<BreakPeriod>,
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
    /// `leased` only: the holder's client's enode, as the holder registered it.
    pub enode: Option<String>,
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
pub fn overlap(bound: Option<SignBound>, period: BreakPeriod) -> Option<Overlap> {
    let holder = bound?;
    let standby_in = period.as_secs();
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

/// The tag `orchestrator` writes on each identity's secret with its address
/// (`orchestrator::provision::tag::ADDRESS`).
pub const ADDRESS_TAG: &str = "address";

/// Gives each row without an address (nobody has held it yet) the `address` tag of its
/// identity's secret in `secrets`; a row whose holder wrote one keeps it.
pub fn fill_addresses(rows: &mut [StatusRow], secrets: &[SecretProperties]) {
    for row in rows.iter_mut().filter(|r| r.address.is_none()) {
        row.address = secrets
            .iter()
            .find(|p| p.name.as_str().eq_ignore_ascii_case(&row.identity))
            .and_then(|p| p.tags.get(ADDRESS_TAG))
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty());
    }
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
        enode: match state {
            LeaseState::Leased => text(meta::ENODE).filter(|e| shared::enode::is_enode_url(e)),
            _ => None,
        },
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
    // The live bootnode list: whole URLs, one a line, for copying.
    let live: Vec<&StatusRow> = rows.iter().filter(|r| r.enode.is_some()).collect();
    if !live.is_empty() {
        out.push_str("live enodes (held leases):\n");
        for r in live {
            out.push_str(&format!(
                "  {}  {}\n",
                printable(&r.identity),
                r.enode.as_deref().map(printable).unwrap_or_default()
            ));
        }
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

/// Breaks the lease on `identity`; `period` as [`LeaseStore::break_lease`]: `None` keeps it
/// locked for the rest of the current lease.
///
/// An identity with no record is [`LeaseError::NotFound`]; one with no lease to break is
/// [`BreakOutcome::NoLease`], not an error: it is already acquirable.
pub async fn break_identity(
    store: &dyn LeaseStore,
    identity: &Name,
    period: Option<BreakPeriod>,
) -> Result<BreakReport, LeaseError> {
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
pub fn explain_break(row: &StatusRow, period: Option<BreakPeriod>) -> String {
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

/// `--period`: whole seconds, 0 to 60, as a [`BreakPeriod`].
fn parse_break_period(s: &str) -> Result<BreakPeriod, String> {
    s.parse().map_err(|_| {
        format!(
            "a break period is whole seconds from 0 to {}",
            MAX_BREAK_PERIOD.as_secs()
        )
    })
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

/// Opens the secret store `spec` names for `--secrets`, refusing to create a missing `dir:`.
fn open_secrets(spec: &str, azure: &AzureOptions) -> Result<Arc<dyn SecretStore>, Failure> {
    let spec: SecretStoreSpec = spec
        .parse()
        .map_err(|e| Failure::new(Status::Usage, format!("--secrets: {e}")))?;
    if let SecretStoreSpec::Dir(path) = &spec {
        if !path.is_dir() {
            return Err(Failure::new(
                Status::NoInput,
                format!(
                    "--secrets {spec}: no secret store directory at {} (use the daemons' \
                     store.secrets)",
                    path.display()
                ),
            ));
        }
    }
    spec.open(azure).map_err(|e| {
        Failure::new(
            Status::Unavailable,
            format!("--secrets {spec}: cannot open: {e}"),
        )
    })
}

/// `leased status`: prints the table (or JSON) on stdout, once or every second with
/// `--watch`; errors as one line on stderr.
pub fn run_status(args: StatusArgs) -> ExitCode {
    exit((|| {
        let azure = azure_options(args.azure_credential);
        let store = open_store(&args.leases, &azure)?;
        let secrets = args
            .secrets
            .as_deref()
            .map(|spec| open_secrets(spec, &azure))
            .transpose()?;
        let stores = StatusStores {
            leases: store.as_ref(),
            secrets: secrets.as_deref(),
        };
        let rt = runtime()?;
        if args.watch {
            let terminal = io::IsTerminal::is_terminal(&io::stdout());
            return rt.block_on(watch_on(
                stores,
                terminal,
                Duration::from_secs(1),
                &mut io::stdout().lock(),
                async {
                    // No handler means no Ctrl-C to wait for: run until killed.
                    if tokio::signal::ctrl_c().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                },
            ));
        }
        rt.block_on(status_on(
            stores,
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
        let request = BreakRequest::from_args(&args, identity, args.period);
        let store = open_store(&args.leases, &azure_options(args.azure_credential))?;
        runtime()?.block_on(break_on(
            store.as_ref(),
            &request,
            now_unix(),
            &mut io::stdout().lock(),
        ))
    })())
}

/// The stores `leased status` reads: the lease store, and the secret store's tags when
/// `--secrets` names one.
#[derive(Clone, Copy)]
struct StatusStores<'a> {
    leases: &'a dyn LeaseStore,
    secrets: Option<&'a dyn SecretStore>,
}

/// The rows, with the addresses of unheld identities from the secrets' tags where the
/// secret store can be listed; a note for stderr when it cannot.
async fn status_rows(
    stores: StatusStores<'_>,
    now_unix: u64,
) -> Result<(Vec<StatusRow>, Option<String>), Failure> {
    let mut rows = status(stores.leases, now_unix)
        .await
        .map_err(lease_failure)?;
    let mut note = None;
    if let Some(secrets) = stores.secrets {
        if rows.iter().any(|r| r.address.is_none()) {
            match tokio::time::timeout(SECRETS_TIMEOUT, secrets.list()).await {
                Ok(Ok(list)) => fill_addresses(&mut rows, &list),
                Ok(Err(e)) => {
                    note = Some(format!(
                        "addresses of identities nobody has held are not shown: {e}"
                    ))
                }
                Err(_) => {
                    note = Some(format!(
                        "addresses of identities nobody has held are not shown: the secret \
                         store did not answer within {} s",
                        SECRETS_TIMEOUT.as_secs()
                    ))
                }
            }
        }
    }
    Ok((rows, note))
}

/// Longest `--secrets` may take to list before the table is shown without its addresses.
const SECRETS_TIMEOUT: Duration = Duration::from_secs(10);

fn warn(note: &str) {
    let _ = writeln!(io::stderr(), "leased: warning: {note}");
}

async fn status_on(
    stores: StatusStores<'_>,
    json: bool,
    now_unix: u64,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let (rows, note) = status_rows(stores, now_unix).await?;
    if let Some(note) = note {
        warn(&note);
    }
    if json {
        writeln!(out, "{}", render_json(&rows)).map_err(stdout_failure)
    } else {
        out.write_all(render_table(&rows).as_bytes())
            .map_err(stdout_failure)
    }
}

/// Moves a terminal's cursor home and clears the screen.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// `HH:MM:SS UTC` of `unix` seconds.
fn utc_time(unix: u64) -> String {
    let s = unix % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s % 3600 / 60, s % 60)
}

/// One `--watch` frame: in a terminal, a clear screen first; always a time line, then the
/// table, or the error that kept it from being read (the watch goes on).
fn watch_frame(terminal: bool, now_unix: u64, body: Result<String, String>) -> String {
    let mut frame = String::new();
    if terminal {
        frame.push_str(CLEAR_SCREEN);
    }
    frame.push_str(&format!(
        "leased status at {} (every 1s; Ctrl-C to stop)\n\n",
        utc_time(now_unix)
    ));
    match body {
        Ok(table) => frame.push_str(&table),
        Err(e) => frame.push_str(&format!("cannot read the lease store: {e}\n")),
    }
    if !terminal {
        frame.push('\n');
    }
    frame
}

/// `leased status --watch`: a frame every `every` until `shutdown` (Ctrl-C) completes,
/// which ends it with success, even in the middle of a store call. A store error is shown
/// in its frame, not fatal; only a failed write to stdout ends the watch with an error.
async fn watch_on(
    stores: StatusStores<'_>,
    terminal: bool,
    every: Duration,
    out: &mut dyn Write,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Failure> {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = now_unix();
        let body = tokio::select! {
            () = &mut shutdown => return Ok(()),
            r = status_rows(stores, now) => r,
        };
        let body = body
            .map(|(rows, note)| {
                let mut text = render_table(&rows);
                if let Some(note) = note {
                    text.push_str(&format!("warning: {note}\n"));
                }
                text
            })
            .map_err(|f| f.message().to_owned());
        out.write_all(watch_frame(terminal, now, body).as_bytes())
            .and_then(|()| out.flush())
            .map_err(stdout_failure)?;
    }
}

/// What `leased break` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BreakRequest {
    identity: Name,
    /// `--yes`: without it nothing is changed.
    yes: bool,
    period: Option<BreakPeriod>,
    force_overlap: bool,
    /// The arguments naming the store (`--leases SPEC`, a credential), shell-quoted, for
    /// the command that breaks anyway.
    store_args: String,
}

impl BreakRequest {
    fn from_args(args: &BreakArgs, identity: Name, period: Option<BreakPeriod>) -> Self {
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
            if let Some(p) = req
                .period
                .filter(|p| report.outcome.acquirable_in() > p.as_duration())
            {
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
    // `standby_in` is the seconds of a --period, so this cannot fail.
    let period = BreakPeriod::from_secs(o.standby_in).map_err(lease_failure)?;
    let outcome = if period.as_duration() < left {
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
mod tests;
