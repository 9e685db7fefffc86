//! `leased`, the per-VM lease daemon.
//!
//! The control loop (acquire, hand off, renew, fence, release) and the on-call commands
//! (`status`, `break`) are built in the daemon issue on top of `shared::lease::LeaseStore`.
//! Until then this binary says so plainly and exits with EX_UNAVAILABLE, so nothing can
//! mistake it for a working daemon.

use std::process::ExitCode;

const HELP: &str = "\
leased: the per-VM validator lease daemon

Not built yet: the control loop and the on-call commands (status, break) arrive with
the daemon issue. The lease store it will use (sqlite:PATH) is in the shared library.
";

#[allow(clippy::print_stdout)] // the help text is this program's output
fn main() -> ExitCode {
    let wants_help = std::env::args()
        .skip(1)
        .any(|a| a == "--help" || a == "-h" || a == "help");
    if wants_help {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    eprintln!("leased: error: the daemon is not built yet (see leased --help)");
    ExitCode::from(69)
}
