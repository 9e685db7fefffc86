//! `gen-assets DIR`: the man pages and shell completions of `leased` and `orchestrator`,
//! generated from their clap command trees (`leased::cli::command`,
//! `orchestrator::command`), for the Debian package (ops/package.sh).
//!
//! Writes `DIR/man/leased.1`, `leased-run.1`, `leased-status.1`, …, `orchestrator.1`,
//! `orchestrator-key-new.1`, … (one page per visible command; hidden ones such as
//! `leased guard` get none) and `DIR/completions/` with each binary's bash (`NAME.bash`),
//! zsh (`_NAME`) and fish (`NAME.fish`) completions. It lives here, not in the binaries, so
//! the generators never add to the shipped binaries' size.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap_complete::Shell;

/// `cmd` without its hidden subcommands. clap_complete lists hidden subcommands in the
/// zsh and bash scripts (under `help` and in the dispatch tables), so the completions are
/// generated from a tree that never had them.
fn without_hidden(name: &'static str, cmd: &clap::Command) -> clap::Command {
    let mut visible = clap::Command::new(name)
        .args(cmd.get_arguments().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = cmd.get_about() {
        visible = visible.about(about.clone());
    }
    if cmd.get_version().is_some() {
        // Only whether `-V` exists matters to a completion script.
        visible = visible.version(env!("CARGO_PKG_VERSION"));
    }
    visible
}

fn generate(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        // Stale pages of a renamed command must not be packaged.
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
    }
    let mut written = Vec::new();
    for (name, cmd) in [
        ("leased", leased::cli::command()),
        ("orchestrator", orchestrator::command()),
    ] {
        clap_mangen::generate_to(cmd.clone(), &man)?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut cmd = without_hidden(name, &cmd);
            written.push(clap_complete::generate_to(
                shell,
                &mut cmd,
                name,
                &completions,
            )?);
        }
    }
    for entry in std::fs::read_dir(&man)? {
        written.push(entry?.path());
    }
    written.sort();
    Ok(written)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out] = args.as_slice() else {
        eprintln!("usage: gen-assets DIR   (writes DIR/man/*.1 and DIR/completions/*)");
        return ExitCode::from(64);
    };
    match generate(Path::new(out)) {
        Ok(files) => {
            eprintln!("gen-assets: {} files in {out}", files.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen-assets: error: cannot write into {out}: {e}");
            ExitCode::from(73)
        }
    }
}
