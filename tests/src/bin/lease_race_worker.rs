//! One racer of the process race test (`tests/tests/lease_sqlite.rs`): opens the SQLite lease
//! store named by its argument with the real clock, says `ready`, then for every stdin line
//! `acquire NAME` tries one infinite lease and answers one line: `won LEASE_ID`, `held`, or
//! `error MESSAGE`. Ends at end of input.
//!
//! It must stay this thin: the race is between processes, so all the logic under test is
//! the store's, and every answer is flushed before the next command is read.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use shared::lease::sqlite::SqliteLeaseStore;
use shared::lease::{LeaseDuration, LeaseError, LeaseStore};
use shared::Name;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: lease-race-worker SQLITE_FILE");
        return ExitCode::from(64);
    };
    match run(path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lease-race-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = io::stdout().lock();
    let store = match SqliteLeaseStore::open(&path) {
        Ok(store) => store,
        Err(e) => {
            writeln!(out, "error {}", one_line(&e))?;
            return out.flush();
        }
    };
    writeln!(out, "ready")?;
    out.flush()?;

    for line in io::stdin().lock().lines() {
        let line = line?;
        let answer = match line.split_once(' ') {
            Some(("acquire", name)) => match Name::new(name) {
                Ok(name) => {
                    match rt.block_on(store.acquire(&name, LeaseDuration::Infinite, None)) {
                        Ok(id) => format!("won {id}"),
                        Err(LeaseError::HeldByOther { .. }) => "held".to_string(),
                        Err(e) => format!("error {}", one_line(&e)),
                    }
                }
                Err(e) => format!("error bad name {name:?}: {e}"),
            },
            _ => format!("error unknown command {line:?}"),
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    Ok(())
}

fn one_line(e: &dyn std::error::Error) -> String {
    e.to_string().replace('\n', " ")
}
