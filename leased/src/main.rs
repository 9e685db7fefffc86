//! `leased`, the per-VM lease daemon; the command line is [`leased::cli`].

fn main() -> std::process::ExitCode {
    leased::cli::main()
}
