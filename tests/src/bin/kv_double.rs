//! Runs the Key Vault double (`integration_tests::kv_double`) as a process of its own.
//!
//! ```text
//! kv-double [--page-size N]
//! ```
//!
//! Prints one line, `url=https://127.0.0.1:PORT ca_file=PATH`, then serves until its stdin
//! closes or it gets SIGTERM, and exits 0. Exit 64 on bad arguments.

use std::io::Write;
use std::process::ExitCode;
use std::sync::mpsc;

use integration_tests::kv_double::{KvDouble, KvDoubleOptions};
use nix::sys::signal::{SigSet, Signal};

const USAGE: &str = "usage: kv-double [--page-size N]";

fn parse_args() -> Result<KvDoubleOptions, String> {
    let mut options = KvDoubleOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--page-size" => {
                let raw = args.next().ok_or("--page-size needs a value")?;
                options.page_size = raw
                    .parse()
                    .ok()
                    .filter(|n| (1..=25).contains(n))
                    .ok_or_else(|| format!("--page-size must be 1 to 25, not {raw:?}"))?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}

#[allow(clippy::print_stdout)]
fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("kv-double: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    // Blocked before the double starts its threads, so they inherit the mask and only the
    // waiting thread below takes SIGTERM.
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    if let Err(e) = term.thread_block() {
        eprintln!("kv-double: cannot block SIGTERM: {e}");
        return ExitCode::from(71);
    }
    let kv = KvDouble::start_with(options);
    println!("url={} ca_file={}", kv.url(), kv.ca_file().display());
    if std::io::stdout().flush().is_err() {
        return ExitCode::from(74);
    }

    let (stop, stopped) = mpsc::channel::<()>();
    let on_eof = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = on_eof.send(());
    });
    std::thread::spawn(move || {
        if term.wait().is_ok() {
            let _ = stop.send(());
        }
    });
    let _ = stopped.recv();
    drop(kv);
    ExitCode::SUCCESS
}
