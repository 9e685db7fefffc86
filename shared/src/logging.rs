//! One `tracing` subscriber for every process of the project (`leased`'s daemon, guard and
//! on-call commands, and `orchestrator`): events on stderr, one line each, with a level.
//!
//! - Text by default, for journald: no ANSI colours unless stderr is a terminal, and no
//!   timestamp when journald records the stream (it stamps every line itself).
//! - `--log-format json`, one JSON object per line, for log shippers.
//! - `RUST_LOG` filters (e.g. `RUST_LOG=debug`, `RUST_LOG=leased=trace`); by default our
//!   own crates log at `info` and everything else, the Azure SDK included, at `warn`.
//!
//! What must never be logged, at any level: key material, tokens, SAS signatures, account
//! keys, client secrets. Every value logged is public (identities, addresses, lease ids are
//! not secrets) or an error message built to carry none (`shared/tests/redaction.rs`).

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The `--log-format` option every binary takes (flattened into its command line).
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct LogArgs {
    /// How log lines on stderr look: text (one line per event, for journald) or json (one
    /// object per line, for log shippers). RUST_LOG filters them, e.g. RUST_LOG=debug.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
}

/// The filter when `RUST_LOG` is unset or unusable.
pub const DEFAULT_FILTER: &str = "warn,leased=info,shared=info,orchestrator=info";

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (journald).
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// The filter from `RUST_LOG`, or [`DEFAULT_FILTER`] (with a warning) when it is unusable.
/// Directives are `target=level` (or a bare level), comma-separated: `tracing`'s per-target
/// filter, without `EnvFilter`'s span and field matching and the regex engine it carries.
fn filter() -> (Targets, Option<String>) {
    let default = || DEFAULT_FILTER.parse::<Targets>().unwrap_or_default();
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match spec.parse::<Targets>() {
            Ok(f) => (f, None),
            Err(e) => (
                default(),
                Some(format!(
                    "RUST_LOG {spec:?} is not a filter ({e}); using {DEFAULT_FILTER:?}"
                )),
            ),
        },
        _ => (default(), None),
    }
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The format this process logs in (text until [`init`] says otherwise); the daemon starts
/// its guards with the same.
pub fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// Installs the process's subscriber. Call once, first thing; a second call does nothing.
pub fn init(format: LogFormat) {
    let _ = FORMAT.set(format);
    let (filter, problem) = filter();
    // The builder's own level would cut everything below info; the targets decide.
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        .with_target(false);
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .finish()
            .with(filter)
            .try_init(),
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal();
            let builder = builder.with_ansi(ansi);
            if std::env::var_os("JOURNAL_STREAM").is_some() {
                builder.without_time().finish().with(filter).try_init()
            } else {
                builder.finish().with(filter).try_init()
            }
        }
    };
    if installed.is_ok() {
        if let Some(problem) = problem {
            tracing::warn!("{problem}");
        }
    }
}
