//! Failures of the CLI: the workspace's one failure type ([`shared::exit`]), reported as
//! `orchestrator: error: …` with a sysexits(3) status.

use std::process::ExitCode;

pub use shared::exit::Failure;

/// The program name in error lines.
pub(crate) const PROGRAM: &str = "orchestrator";

/// Prints the failure's line and returns its exit status.
pub(crate) fn report(failure: Failure) -> ExitCode {
    failure.report(PROGRAM)
}

/// Turns a clap parse failure into our one-line form; help and version go to stdout as usual.
pub(crate) fn clap_error(e: clap::Error) -> ExitCode {
    shared::exit::clap_error(PROGRAM, e)
}
