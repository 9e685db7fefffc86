//! Runs the fence guard (`leased::guard`) as its own process, exactly as `leased guard`
//! does, for the guard's process-level tests (`tests/tests/guard.rs`). A test crate cannot
//! locate another package's binary, so this host links the same library function instead.

fn main() -> std::process::ExitCode {
    leased::guard::main_from_args(std::env::args_os())
}
