//! The real-process chaos run (see `integration_tests::chaos`):
//!
//! ```text
//! cargo run --release -p integration-tests --bin chaos -- --store sqlite|blob|sqlite,blob \
//!     --minutes M --seed S [--out DIR] [--daemons N] [--identities N] [--every-secs LO,HI]
//! ```
//!
//! `cargo run` builds this binary alone, so it carries what it runs: `chaos run|break|
//! guard|client-exec …` is `leased` itself, and `chaos standin-client …` the stand-in
//! client.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use integration_tests::chaos::{self, Options, StoreKind};
use integration_tests::cluster::Programs;

const USAGE: &str = "usage: chaos --store sqlite|blob|sqlite,blob --minutes M --seed S \
[--out DIR] [--daemons N] [--identities N] [--every-secs LO,HI]";

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("standin-client") => return integration_tests::standin::main(&["standin-client"]),
        // `leased`'s own commands, the daemon's global `--log-format` before them, and the
        // guard's hidden helpers (launcher, key janitor).
        Some(
            "run"
            | "break"
            | "status"
            | "guard"
            | "--log-format"
            | leased::guard::LAUNCHER_SUBCOMMAND
            | leased::guard::JANITOR_SUBCOMMAND,
        ) => return leased::cli::main(),
        _ => {}
    }
    let options = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("chaos: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    eprintln!(
        "chaos: stores {}, {:.1} min, seed {}, reports in {}",
        options
            .stores
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(","),
        options.duration.as_secs_f64() / 60.0,
        options.seed,
        options.out.display()
    );
    match chaos::run(&options) {
        Ok(summary) => {
            for f in &summary.known {
                eprintln!("chaos: known gap, not failing the run: {f}");
            }
            for f in &summary.failures {
                eprintln!("chaos: FAILED {f}");
            }
            for line in &summary.stories {
                eprintln!("chaos: {line}");
            }
            eprintln!("chaos: report {}", summary.report.display());
            let _ = writeln!(std::io::stdout(), "{}", summary.line);
            if summary.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "chaos: {} check(s) failed; replay with --seed {}",
                    summary.failures.len(),
                    options.seed
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("chaos: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse() -> Result<Options, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut stores = None;
    let mut minutes = None;
    let mut seed = None;
    let mut out = None;
    let mut daemons = 8;
    let mut identities = 5;
    let mut every = (Duration::from_millis(1000), Duration::from_millis(3000));
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--store" => {
                let v = value()?;
                let mut list = Vec::new();
                for s in v.split(',') {
                    list.push(match s {
                        "sqlite" => StoreKind::Sqlite,
                        "blob" => StoreKind::Blob,
                        other => return Err(format!("--store: unknown store {other:?}")),
                    });
                }
                stores = Some(list);
            }
            "--minutes" => {
                let v = value()?;
                let m: f64 = v.parse().map_err(|_| format!("--minutes: {v:?}"))?;
                if !(m > 0.0 && m <= 24.0 * 60.0) {
                    return Err(format!("--minutes: {v} is out of range"));
                }
                minutes = Some(m);
            }
            "--seed" => {
                let v = value()?;
                seed = Some(v.parse::<u64>().map_err(|_| format!("--seed: {v:?}"))?);
            }
            "--out" => out = Some(PathBuf::from(value()?)),
            "--daemons" => {
                let v = value()?;
                daemons = v.parse().map_err(|_| format!("--daemons: {v:?}"))?;
            }
            "--identities" => {
                let v = value()?;
                identities = v.parse().map_err(|_| format!("--identities: {v:?}"))?;
            }
            "--every-secs" => {
                let v = value()?;
                let (lo, hi) = v
                    .split_once(',')
                    .and_then(|(a, b)| Some((a.parse::<f64>().ok()?, b.parse::<f64>().ok()?)))
                    .filter(|(a, b)| *a > 0.0 && a <= b)
                    .ok_or_else(|| format!("--every-secs: {v:?} is not LO,HI"))?;
                every = (Duration::from_secs_f64(lo), Duration::from_secs_f64(hi));
            }
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if identities < 1 || daemons <= identities {
        return Err("--daemons must exceed --identities (standbys are needed)".into());
    }
    let out = out.unwrap_or_else(|| {
        integration_tests::tools::workspace_root()
            .join("target")
            .join("chaos")
    });
    Ok(Options {
        stores: stores.ok_or("--store is required")?,
        duration: Duration::from_secs_f64(minutes.ok_or("--minutes is required")? * 60.0),
        seed: seed.ok_or("--seed is required")?,
        out,
        daemons,
        identities,
        every,
        programs: Programs {
            leased: exe.clone(),
            standin: vec![exe.display().to_string(), "standin-client".into()],
        },
    })
}
