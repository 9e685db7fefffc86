//! `orchestrator`: parses the command line and hands over to the library.

fn main() -> std::process::ExitCode {
    orchestrator::main_with_args(std::env::args_os())
}
