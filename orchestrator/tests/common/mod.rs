//! Helpers shared by the CLI tests: run the binary, read its output, and check the shape
//! of a failure.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

pub(crate) fn orchestrator(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run orchestrator")
}

/// [`orchestrator`] with extra environment variables.
pub(crate) fn orchestrator_with_env(args: &[&str], cwd: &Path, env: &[(&str, &Path)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(args)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .output()
        .expect("run orchestrator")
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Asserts a failure: the given exit status, exactly one line on stderr naming the problem,
/// nothing on stdout, and no trace of `secret_hex` anywhere.
pub(crate) fn assert_one_line_failure(o: &Output, code: i32, needle: &str, secret_hex: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("orchestrator: error: "), "{err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert!(stdout(o).is_empty(), "stdout: {}", stdout(o));
    if !secret_hex.is_empty() {
        let all = format!("{err}{}", stdout(o)).to_lowercase();
        assert!(
            !all.contains(&secret_hex[..32]),
            "key material in output: {all}"
        );
    }
}

pub(crate) fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `address` (EIP-55 form) with one letter's case flipped, so that it stays mixed case and
/// its checksum fails; `None` when it has too few letters for that (all-lower and all-upper
/// addresses carry no checksum).
pub(crate) fn break_checksum(address: &str) -> Option<String> {
    let letters = address[2..]
        .chars()
        .filter(char::is_ascii_alphabetic)
        .count();
    if letters < 2 {
        return None;
    }
    let at = address
        .char_indices()
        .skip(2)
        .find(|(_, c)| c.is_ascii_alphabetic())
        .map(|(i, _)| i)?;
    let c = address.as_bytes()[at] as char;
    let swapped = if c.is_ascii_lowercase() {
        c.to_ascii_uppercase()
    } else {
        c.to_ascii_lowercase()
    };
    let mut out = address.to_string();
    out.replace_range(at..=at, &swapped.to_string());
    let rest: String = out[2..].chars().filter(char::is_ascii_alphabetic).collect();
    (rest != rest.to_ascii_lowercase() && rest != rest.to_ascii_uppercase()).then_some(out)
}

/// Replaces the first address in `list` that can carry a broken checksum; panics if none can.
pub(crate) fn break_one_checksum(list: &mut [serde_json::Value]) {
    for slot in list.iter_mut() {
        if let Some(broken) = slot.as_str().and_then(break_checksum) {
            *slot = broken.into();
            return;
        }
    }
    panic!("no address in the list can carry a broken checksum");
}
