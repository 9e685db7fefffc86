//! The `leased` command line, built inside the tests crate so that process-level tests
//! find it next to the stand-in client (a test cannot name another package's binary).
//! It runs exactly `leased::cli::main`, guard included.

fn main() -> std::process::ExitCode {
    leased::cli::main()
}
