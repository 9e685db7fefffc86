//! The guard program of `leased-host`, as `leased-guard` is of `leased`: the daemon under
//! test finds it beside itself (its own name with `-guard`) and runs its guards from it,
//! so that the process-level tests run the guard the way a VM does.

fn main() -> std::process::ExitCode {
    leased::guard::main_from_args(std::env::args_os())
}
