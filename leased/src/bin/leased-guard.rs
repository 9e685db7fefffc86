//! `leased-guard`, the fence guard in a program of its own (see [`leased::guard`]). The
//! daemon runs it from beside its own binary; it takes the arguments of `leased guard`
//! and runs the client launcher and the key janitor the same way. It links only the
//! guard's part of the library, so a guard and its janitor cost a VM little memory.

fn main() -> std::process::ExitCode {
    leased::guard::main_from_args(std::env::args_os())
}
