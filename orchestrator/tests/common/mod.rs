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
