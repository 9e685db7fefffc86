//! The stand-in validator client the daemon and guard tests supervise instead of a real
//! Ethereum client. It is the `standin-client` binary, and also a subcommand of the chaos
//! harness's binary (`chaos standin-client …`), which must run without its siblings.
//!
//! ```text
//! standin-client --address ADDR --log FILE [--node NAME] [--key-file F [--password-file P]]
//!                [--period-ms 50] [--ignore-sigterm] [--exit-after-ms N [--exit-code C]]
//!                [--spawn-child] [--spawn-escaped-child] [--setsid] [--env-file F]
//! ```
//!
//! While it runs it appends `signing with ADDR at T node=NAME pid=PID` to FILE every period,
//! T being `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the host, which
//! neither NTP steps nor skew tests move, so logs of several daemons compare exactly (the
//! wall clock does not). On SIGTERM it appends `stopped with ADDR at T …` and exits 0 at
//! once, so the overlap checker knows exactly when a graceful stop ended the signing; a
//! SIGKILLed stand-in just stops. Each line is one `write` on an `O_APPEND` file, so any
//! number of stand-ins can share one log without interleaving and a kill never leaves half
//! a line.
//!
//! With `--key-file` it reads the key at start, as a real client does, and refuses to sign
//! (exit 65) unless the key's address is ADDR, or 66 if it cannot read it: a stand-in that
//! signs proves the hand-off. It never prints the key.
//!
//! Test knobs: `--ignore-sigterm` (only SIGKILL stops it), `--exit-after-ms` (exit by itself
//! with `--exit-code`), `--spawn-child` (first start a copy of itself that ignores SIGTERM in
//! the same process group, as a client wrapper's child would be), `--spawn-escaped-child`
//! (the same, but the copy leaves for a session and process group of its own, as a
//! daemonizing wrapper's would), `--setsid` (do that itself first), `--env-file` (write the
//! environment it was started with to F, one `NAME=VALUE` per line, before it signs).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use nix::time::{clock_gettime, ClockId};

struct Args {
    address: String,
    log: PathBuf,
    node: String,
    key_file: Option<PathBuf>,
    password_file: Option<PathBuf>,
    period: Duration,
    ignore_sigterm: bool,
    exit_after: Option<Duration>,
    exit_code: u8,
    spawn_child: bool,
    spawn_escaped_child: bool,
    setsid: bool,
    env_file: Option<PathBuf>,
}

const USAGE: &str = "usage: standin-client --address ADDR --log FILE [--node NAME] \
[--key-file F [--password-file P]] [--period-ms N] [--ignore-sigterm] \
[--exit-after-ms N [--exit-code C]] [--spawn-child] [--spawn-escaped-child] [--setsid] \
[--env-file F]";

fn parse_args(skip: usize) -> Result<Args, String> {
    let mut address = None;
    let mut log = None;
    let mut args = Args {
        address: String::new(),
        log: PathBuf::new(),
        node: String::from("-"),
        key_file: None,
        password_file: None,
        period: Duration::from_millis(50),
        ignore_sigterm: false,
        exit_after: None,
        exit_code: 0,
        spawn_child: false,
        spawn_escaped_child: false,
        setsid: false,
        env_file: None,
    };
    let mut it = std::env::args_os().skip(skip);
    while let Some(flag) = it.next() {
        let flag = flag.to_string_lossy().into_owned();
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value"))
                .map(|v| v.to_string_lossy().into_owned())
        };
        let millis = |v: String| {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("{flag}: not a number of milliseconds: {v}"))
        };
        match flag.as_str() {
            "--address" => address = Some(value()?),
            "--log" => log = Some(PathBuf::from(value()?)),
            "--node" => args.node = value()?,
            "--key-file" => args.key_file = Some(PathBuf::from(value()?)),
            "--password-file" => args.password_file = Some(PathBuf::from(value()?)),
            "--period-ms" => args.period = millis(value()?)?,
            "--exit-after-ms" => args.exit_after = Some(millis(value()?)?),
            "--exit-code" => {
                let v = value()?;
                args.exit_code = v.parse().map_err(|_| format!("bad exit code {v}"))?;
            }
            "--ignore-sigterm" => args.ignore_sigterm = true,
            "--spawn-child" => args.spawn_child = true,
            "--spawn-escaped-child" => args.spawn_escaped_child = true,
            "--setsid" => args.setsid = true,
            "--env-file" => args.env_file = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    args.address = address.ok_or("--address is required")?;
    args.log = log.ok_or("--log is required")?;
    if args.node.split_whitespace().count() != 1 {
        return Err("--node must be one word".into());
    }
    Ok(args)
}

/// Runs the stand-in with this process's arguments. `prefix` is what precedes the
/// stand-in's own arguments after the program name (`["standin-client"]` in a multi-call
/// binary, else empty); a copy of itself (`--spawn-child`) is started with it too.
pub fn main(prefix: &[&str]) -> ExitCode {
    let args = match parse_args(1 + prefix.len()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("standin-client: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    // Blocked before any thread exists, so every thread inherits the mask: SIGTERM is then
    // either never delivered (--ignore-sigterm) or taken only by the stopper thread.
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    if let Err(e) = term.thread_block() {
        eprintln!("standin-client: cannot block SIGTERM: {e}");
        return ExitCode::from(71);
    }
    if args.setsid {
        if let Err(e) = nix::unistd::setsid() {
            eprintln!("standin-client: setsid: {e}");
            return ExitCode::from(71);
        }
    }
    if let Some(path) = &args.env_file {
        let text: String = std::env::vars_os()
            .map(|(k, v)| format!("{}={}\n", k.to_string_lossy(), v.to_string_lossy()))
            .collect();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("standin-client: cannot write {}: {e}", path.display());
            return ExitCode::from(73);
        }
    }
    if let Some(path) = &args.key_file {
        if let Err((code, e)) = check_key(path, args.password_file.as_deref(), &args.address) {
            eprintln!("standin-client: {e}");
            return ExitCode::from(code);
        }
    }
    let log = match OpenOptions::new().append(true).create(true).open(&args.log) {
        Ok(f) => Arc::new(Mutex::new(f)),
        Err(e) => {
            eprintln!("standin-client: cannot open {}: {e}", args.log.display());
            return ExitCode::from(73);
        }
    };
    if args.spawn_child || args.spawn_escaped_child {
        if let Err(e) = spawn_stubborn_child(prefix, args.spawn_escaped_child) {
            eprintln!("standin-client: cannot start the child: {e}");
            return ExitCode::from(71);
        }
    }
    let suffix = format!("node={} pid={}", args.node, std::process::id());
    if !args.ignore_sigterm {
        let log = Arc::clone(&log);
        let line_start = format!("stopped with {}", args.address);
        let suffix = suffix.clone();
        std::thread::spawn(move || {
            if term.wait().is_ok() {
                // Holding the lock until exit: no signing line can follow this one.
                let mut file = log.lock().unwrap_or_else(|p| p.into_inner());
                let line = format!("{line_start} at {} {suffix}\n", now_nanos());
                let _ = file.write_all(line.as_bytes());
                std::process::exit(0);
            }
        });
    }
    let started = now_nanos();
    loop {
        let now = now_nanos();
        if let Some(after) = args.exit_after {
            if now.saturating_sub(started) >= after.as_nanos() {
                return ExitCode::from(args.exit_code);
            }
        }
        let line = format!("signing with {} at {now} {suffix}\n", args.address);
        {
            let mut file = log.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = write_line(&mut file, &line) {
                eprintln!("standin-client: cannot write the log: {e}");
                return ExitCode::from(74);
            }
        }
        std::thread::sleep(args.period);
    }
}

fn write_line(file: &mut File, line: &str) -> std::io::Result<()> {
    // One write(2) on an O_APPEND file: atomic with respect to other appenders.
    let n = file.write(line.as_bytes())?;
    if n != line.len() {
        return Err(std::io::Error::other("short write to the log"));
    }
    Ok(())
}

fn now_nanos() -> u128 {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is readable");
    u128::try_from(ts.tv_sec()).unwrap_or(0) * 1_000_000_000
        + u128::try_from(ts.tv_nsec()).unwrap_or(0)
}

fn check_key(
    path: &std::path::Path,
    password_file: Option<&std::path::Path>,
    address: &str,
) -> Result<(), (u8, String)> {
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(path).map_err(|e| (66, format!("cannot read the key file: {e}")))?,
    );
    let password = match password_file {
        Some(p) => {
            Some(zeroize::Zeroizing::new(std::fs::read(p).map_err(|e| {
                (66, format!("cannot read the password file: {e}"))
            })?))
        }
        None => None,
    };
    let password = password.as_ref().map(|p| trim_newline(p));
    let (key, _format) = shared::keyfile::decode(&bytes, password)
        .map_err(|e| (65, format!("the key file does not hold a key: {e}")))?;
    let want: shared::key::Address = address
        .parse()
        .map_err(|e| (64, format!("--address: {e}")))?;
    if key.address() != want {
        return Err((
            65,
            format!(
                "the key file holds the key of {}, not {address}",
                key.address().to_checksum()
            ),
        ));
    }
    Ok(())
}

fn trim_newline(bytes: &[u8]) -> &[u8] {
    bytes.strip_suffix(b"\n").unwrap_or(bytes)
}

/// Starts a copy of this program with the same arguments, minus `--spawn-child` and
/// `--spawn-escaped-child`, plus `--ignore-sigterm` (and `--setsid` when `escaped`: it
/// then leaves our process group). It is not waited for.
fn spawn_stubborn_child(prefix: &[&str], escaped: bool) -> std::io::Result<()> {
    let exe = std::env::current_exe()?;
    let extra: &[&str] = if escaped {
        &["--ignore-sigterm", "--setsid"]
    } else {
        &["--ignore-sigterm"]
    };
    let args: Vec<std::ffi::OsString> = prefix
        .iter()
        .map(Into::into)
        .chain(std::env::args_os().skip(1 + prefix.len()))
        .filter(|a| a != "--spawn-child" && a != "--spawn-escaped-child")
        .chain(extra.iter().map(Into::into))
        .collect();
    std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .spawn()
        .map(drop)
}
