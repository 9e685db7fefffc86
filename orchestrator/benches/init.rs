//! Seconds per identity for `orchestrator init --validators 15` on the embedded backends,
//! for each secret format, first run and re-run. A benchmark, not a test: it prints figures
//! and asserts nothing about time.
//!
//! Run: `cargo bench -p orchestrator --bench init` (add `-- --runs N` for more runs).

// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const VALIDATORS: u32 = 15;
const ADMIN: &str = "0x00000000000000000000000000000000000a0001";

fn init(dir: &Path, extra: &[&str]) -> Duration {
    let validators = VALIDATORS.to_string();
    let start = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args([
            "init",
            "--member",
            "0",
            "--validators",
            &validators,
            "--admin",
            ADMIN,
            "--secrets",
            "dir:secrets",
            "--leases",
            "sqlite:leases.db",
            "--out",
            "net",
        ])
        .args(extra)
        .current_dir(dir)
        .output()
        .expect("run orchestrator");
    let took = start.elapsed();
    assert!(
        o.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut runs = 3;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--runs" {
            runs = args.next().and_then(|n| n.parse().ok()).expect("--runs N");
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("orchestrator init, {VALIDATORS} validators, dir: + sqlite:, {cores} cores, median of {runs} runs");
    println!(
        "{:<34} {:>10} {:>14} {:>14}",
        "secret format", "first run", "per identity", "re-run"
    );
    let formats: [(&str, &[&str]); 3] = [
        ("raw-hex", &[]),
        (
            "keystore-v3 scrypt n=2^18",
            &["--secret-format", "keystore-v3", "--password-file", "pw"],
        ),
        (
            "keystore-v3 pbkdf2 600k",
            &[
                "--secret-format",
                "keystore-v3",
                "--password-file",
                "pw",
                "--kdf",
                "pbkdf2",
            ],
        ),
    ];
    for (name, extra) in formats {
        let mut first = Vec::new();
        let mut again = Vec::new();
        for _ in 0..runs {
            let d = tempfile::tempdir().expect("tempdir");
            std::fs::write(d.path().join("pw"), "bench-password\n").expect("password file");
            first.push(init(d.path(), extra));
            again.push(init(d.path(), extra));
        }
        let first = median(first);
        let again = median(again);
        println!(
            "{:<34} {:>9.3}s {:>13.4}s {:>13.3}s",
            name,
            first.as_secs_f64(),
            first.as_secs_f64() / f64::from(VALIDATORS),
            again.as_secs_f64()
        );
    }
}
