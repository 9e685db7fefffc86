//! The command-line surface of both binaries: every visible command's `--help` gives an
//! example, and the man pages and completions generated from the same trees (gen-assets,
//! for the Debian package) cover every visible command and no hidden one.

use std::path::Path;
use std::process::Command;

/// `leased run`, `orchestrator key new`, …: every visible command under `cmd` (clap's own
/// `help` excepted), with its path from the binary's name.
fn visible_commands(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let name = format!("{path} {}", sub.get_name());
        visible_commands(sub, &name, out);
        out.push((name, sub.clone()));
    }
}

fn all_commands() -> Vec<(String, clap::Command)> {
    let mut out = Vec::new();
    for (name, mut cmd) in [
        ("leased", leased::cli::command()),
        ("orchestrator", orchestrator::command()),
    ] {
        cmd.build();
        visible_commands(&cmd, name, &mut out);
    }
    out
}

/// Commands whose long help (`--help`) gives no "Example".
fn without_example(commands: &[(String, clap::Command)]) -> Vec<String> {
    commands
        .iter()
        .filter_map(|(name, cmd)| {
            let help = cmd.clone().render_long_help().to_string();
            (!help.contains("Example")).then(|| name.clone())
        })
        .collect()
}

#[test]
fn every_visible_subcommand_gives_an_example() {
    let commands = all_commands();
    // The walk itself must find the nested ones, or this test proves nothing.
    for expected in [
        "leased run",
        "leased status",
        "leased check-config",
        "orchestrator key generate",
        "orchestrator governance status",
    ] {
        assert!(
            commands.iter().any(|(n, _)| n == expected),
            "{expected} not found in the command trees"
        );
    }
    assert!(!commands.iter().any(|(n, _)| n == "leased guard"));
    let missing = without_example(&commands);
    assert!(
        missing.is_empty(),
        "these commands' --help gives no \"Example\": {missing:?}"
    );
}

#[test]
fn the_check_finds_a_command_without_an_example() {
    let bare = clap::Command::new("x")
        .subcommand(clap::Command::new("a").about("Example: x a"))
        .subcommand(clap::Command::new("b").about("does b"));
    let mut commands = Vec::new();
    visible_commands(&bare, "x", &mut commands);
    assert_eq!(without_example(&commands), ["x b"]);
}

#[test]
fn gen_assets_writes_a_page_per_visible_command_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_gen-assets"))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let man = dir.path().join("man");
    let mut pages: Vec<String> = std::fs::read_dir(&man)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    let mut expected: Vec<String> = all_commands()
        .iter()
        .map(|(n, _)| format!("{}.1", n.replace(' ', "-")))
        .chain(["leased.1".to_owned(), "orchestrator.1".to_owned()])
        .collect();
    expected.sort();
    assert_eq!(pages, expected);
    assert!(!pages.iter().any(|p| p.contains("guard")));
    let run = std::fs::read_to_string(man.join("leased-run.1")).unwrap();
    assert!(run.starts_with(".ie \\n(.g .ds Aq") || run.contains(".TH"));
    assert!(run.contains("leased\\-run") || run.contains("leased-run"));
    for file in [
        "leased.bash",
        "_leased",
        "leased.fish",
        "orchestrator.bash",
        "_orchestrator",
        "orchestrator.fish",
    ] {
        let path = dir.path().join("completions").join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", Path::new(file).display()));
        assert!(
            text.contains("check-config")
                || file.starts_with("orchestrator")
                || file.starts_with("_orchestrator"),
            "{file} does not complete check-config"
        );
        assert!(!text.contains("guard"), "{file} completes the hidden guard");
    }
}
