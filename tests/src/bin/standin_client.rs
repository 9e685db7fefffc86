//! The stand-in validator client (see `integration_tests::standin`).

fn main() -> std::process::ExitCode {
    integration_tests::standin::main(&[])
}
