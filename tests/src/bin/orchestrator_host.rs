//! The `orchestrator` command line, built inside the tests crate so that the end-to-end
//! tests find it next to `leased-host` (a test cannot name another package's binary).

fn main() -> std::process::ExitCode {
    orchestrator::main_with_args(std::env::args_os())
}
