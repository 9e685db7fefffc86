//! `leased check-config --config FILE`: is this configuration ready for `leased run`?
//!
//! It reads the file with the daemon's own reader ([`Config::parse`]), then, unless
//! `--offline`, reaches what the file names: it lists the lease store and finds the pool's
//! identities there, lists the secret store and reads one pool identity's metadata (its
//! tags and content type), and looks for the client command (an executable file at an
//! absolute path, else on `PATH`). Every problem is collected and listed together.
//!
//! It must never:
//! - write to a store, or create one: a missing `sqlite:` file or `dir:` directory is a
//!   problem here, not something to make (opening them would create them);
//! - print a secret's value. It asks the secret store only for its list of secrets'
//!   properties (Key Vault's "list secret properties" carries no values; the `dir:` store
//!   decodes each file to find its tags and drops the value unread, zeroized);
//! - start the client, or check the runtime directory, which systemd creates when the unit
//!   starts and which may not exist, or belong to the user running this check, yet.
//!
//! # Exit status
//!
//! 0 every check passed; 64 a problem with the configuration or with what it names (a
//! pool with no identities, a missing client command); 69 only that a store cannot be
//! reached (retrying may help); 71 the runtime could not start; 74 stdout could not be
//! written.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use shared::exit::{Failure, Status};
use shared::lease::LeaseStore;
use shared::secret::{SecretProperties, SecretStore};
use shared::spec::{LeaseStoreSpec, SecretStoreSpec};

use crate::config::{Config, Overrides, Substitutions};

/// Longest a store may take to answer one list before it counts as unreachable.
const STORE_TIMEOUT: Duration = Duration::from_secs(20);
/// The configuration file's size limit (as the daemon's reader).
const MAX_FILE_BYTES: usize = 1 << 20;

/// Arguments of `leased check-config`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Check a configuration file, and reach the stores and the client it names",
    long_about = "\
Check a configuration file before `leased run` uses it: every setting, as the daemon reads
it, then (unless --offline) what the file names: the lease store is listed and must hold
identities of the pool; the secret store is listed and one pool identity's metadata (tags,
content type; never its value) is read; the client command must exist (an executable at an
absolute path, or found on PATH). Every problem is listed, not only the first. It never
writes to a store and never creates one.

Run it as the user the daemon runs as, with the same environment (e.g.
sudo -u leased leased check-config --config /etc/leased/leased.toml), before enabling the
unit.

Example: leased check-config --config /etc/leased/leased.toml",
    after_long_help = "\
Exit status: 0 fine; 64 the configuration, or what it names, is wrong (all problems are
listed); 69 only that a store cannot be reached; 71 the runtime could not start; 74 cannot
write stdout."
)]
pub struct CheckConfigArgs {
    /// The daemon's TOML configuration, e.g. /etc/leased/leased.toml.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Check the file and the client command only: do not reach the stores.
    #[arg(long)]
    pub offline: bool,
}

/// What one problem is about: the exit status is 69 only when every problem is a store
/// that could not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The configuration, or what it names, is wrong.
    Config,
    /// A store could not be reached or did not answer.
    Unreachable,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: Kind,
    pub message: String,
}

impl Problem {
    fn config(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Config,
            message: message.into(),
        }
    }

    fn unreachable(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Unreachable,
            message: message.into(),
        }
    }
}

/// What the checks found: the lines to print when all is well, and every problem.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub ok: Vec<String>,
    pub problems: Vec<Problem>,
}

impl Report {
    /// 0, 64, or 69 when the only problems are stores out of reach.
    pub fn status(&self) -> Status {
        if self.problems.is_empty() {
            Status::Ok
        } else if self.problems.iter().all(|p| p.kind == Kind::Unreachable) {
            Status::Unavailable
        } else {
            Status::Usage
        }
    }
}

/// Whether `program` names an executable: a path (with a `/`) to an executable file, or a
/// name found as one in a directory of `path_var` (`PATH`).
pub fn find_program(program: &str, path_var: Option<&std::ffi::OsStr>) -> Result<PathBuf, String> {
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.is_empty() {
        return Err("client.command: the program is empty".into());
    }
    if program.contains('/') {
        let p = PathBuf::from(program);
        return match std::fs::metadata(&p) {
            Err(e) => Err(format!("client.command: {program}: {e}")),
            Ok(_) if !executable(&p) => Err(format!(
                "client.command: {program} is not an executable file"
            )),
            Ok(_) => Ok(p),
        };
    }
    let dirs = path_var.map(std::env::split_paths).into_iter().flatten();
    for dir in dirs {
        let candidate = dir.join(program);
        if executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(format!(
        "client.command: {program} is not found on PATH (give an absolute path, or install it)"
    ))
}

/// The client command's program, with its placeholders filled with stand-ins.
fn client_program(config: &Config) -> String {
    let argv = config.client.command.render(&Substitutions {
        key_file: Path::new("/nonexistent/key"),
        password_file: config.client.password_file.as_deref(),
        address: "0x0000000000000000000000000000000000000000",
    });
    argv.into_iter().next().unwrap_or_default()
}

/// The checks that need no store: the client command and the password file.
pub fn check_local(config: &Config, path_var: Option<&std::ffi::OsStr>, report: &mut Report) {
    match find_program(&client_program(config), path_var) {
        Ok(p) => report
            .ok
            .push(format!("client command {} found", p.display())),
        Err(e) => report.problems.push(Problem::config(e)),
    }
    if let Some(file) = &config.client.password_file {
        match std::fs::metadata(file) {
            Ok(m) if m.is_file() => report
                .ok
                .push(format!("client.password_file {} exists", file.display())),
            Ok(_) => report.problems.push(Problem::config(format!(
                "client.password_file: {} is not a file",
                file.display()
            ))),
            Err(e) => report.problems.push(Problem::config(format!(
                "client.password_file: {}: {e}",
                file.display()
            ))),
        }
    }
}

/// The pool's lease records: problems when the store cannot be listed or holds none.
pub async fn check_leases(store: &dyn LeaseStore, config: &Config, report: &mut Report) {
    let what = config.store.leases.to_string();
    let list = match tokio::time::timeout(STORE_TIMEOUT, store.list()).await {
        Ok(Ok(list)) => list,
        Ok(Err(e)) => {
            return report.problems.push(Problem::unreachable(format!(
                "store.leases {what}: cannot list the lease records: {e}"
            )))
        }
        Err(_) => {
            return report.problems.push(Problem::unreachable(format!(
                "store.leases {what}: no answer within {} s",
                STORE_TIMEOUT.as_secs()
            )))
        }
    };
    let pool = &config.identity.pool;
    let ids: Vec<String> = list
        .iter()
        .map(|r| r.identity.to_string())
        .filter(|id| id.starts_with(pool.as_str()))
        .collect();
    if ids.is_empty() {
        report.problems.push(Problem::config(format!(
            "store.leases {what}: no lease record of pool {pool:?} ({} records in all; was \
             `orchestrator init` run with these stores and this member?)",
            list.len()
        )));
    } else {
        report.ok.push(format!(
            "store.leases {what}: {} identities of pool {pool:?} ({})",
            ids.len(),
            ids.join(", ")
        ));
    }
}

/// The pool's secrets: one identity's metadata (never its value), and the password secret
/// when one is configured.
pub async fn check_secrets(store: &dyn SecretStore, config: &Config, report: &mut Report) {
    let what = config.store.secrets.to_string();
    let list = match tokio::time::timeout(STORE_TIMEOUT, store.list()).await {
        Ok(Ok(list)) => list,
        Ok(Err(e)) => {
            return report.problems.push(Problem::unreachable(format!(
                "store.secrets {what}: cannot list the secrets: {e}"
            )))
        }
        Err(_) => {
            return report.problems.push(Problem::unreachable(format!(
                "store.secrets {what}: no answer within {} s",
                STORE_TIMEOUT.as_secs()
            )))
        }
    };
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let password = config.client.password_secret.as_ref().map(|n| n.as_str());
    if let Some(name) = password {
        if !list.iter().any(|p| same(p.name.as_str(), name)) {
            report.problems.push(Problem::config(format!(
                "client.password_secret: no secret {name} in {what}"
            )));
        }
    }
    let pool = &config.identity.pool;
    let first: Option<&SecretProperties> = list.iter().find(|p| {
        p.name.as_str().starts_with(pool.as_str())
            && !password.is_some_and(|n| same(p.name.as_str(), n))
    });
    match first {
        None => report.problems.push(Problem::config(format!(
            "store.secrets {what}: no secret of pool {pool:?} ({} secrets in all)",
            list.len()
        ))),
        Some(p) => {
            let address = p.tags.get("address").map(String::as_str);
            let format = p.content_type.as_deref().unwrap_or("no content type");
            match address {
                Some(a) => report.ok.push(format!(
                    "store.secrets {what}: {} readable ({format}, address {a})",
                    p.name
                )),
                None => report.problems.push(Problem::config(format!(
                    "store.secrets {what}: {} has no address tag (not made by orchestrator?)",
                    p.name
                ))),
            }
        }
    }
}

/// Opens the lease store without creating it: a `sqlite:` file must exist.
fn open_leases(config: &Config) -> Result<std::sync::Arc<dyn LeaseStore>, Problem> {
    let spec = &config.store.leases;
    if let LeaseStoreSpec::Sqlite(path) = spec {
        if !path.is_file() {
            return Err(Problem::config(format!(
                "store.leases {spec}: no lease store file at {} (orchestrator init creates it)",
                path.display()
            )));
        }
    }
    spec.open(&config.store.azure)
        .map_err(|e| Problem::unreachable(format!("store.leases {spec}: cannot open: {e}")))
}

/// Opens the secret store without creating it: a `dir:` directory must exist.
fn open_secrets(config: &Config) -> Result<std::sync::Arc<dyn SecretStore>, Problem> {
    let spec = &config.store.secrets;
    if let SecretStoreSpec::Dir(path) = spec {
        if !path.is_dir() {
            return Err(Problem::config(format!(
                "store.secrets {spec}: no directory at {} (orchestrator init creates it)",
                path.display()
            )));
        }
    }
    spec.open(&config.store.azure)
        .map_err(|e| Problem::unreachable(format!("store.secrets {spec}: cannot open: {e}")))
}

/// Every check of a parsed `config`; the stores only when `online`.
pub async fn check(config: &Config, online: bool, path_var: Option<&std::ffi::OsStr>) -> Report {
    let mut report = Report::default();
    check_local(config, path_var, &mut report);
    if !online {
        report.ok.push("stores not checked (--offline)".to_owned());
        return report;
    }
    match open_leases(config) {
        Ok(store) => check_leases(store.as_ref(), config, &mut report).await,
        Err(p) => report.problems.push(p),
    }
    match open_secrets(config) {
        Ok(store) => check_secrets(store.as_ref(), config, &mut report).await,
        Err(p) => report.problems.push(p),
    }
    report
}

/// Reads and parses `path` as the daemon does, without looking at the runtime directory.
pub fn read_config(path: &Path) -> Result<Config, Vec<String>> {
    let text = shared::fsutil::read_limited(path, MAX_FILE_BYTES)
        .map_err(|e| e.to_string())
        .and_then(|b| String::from_utf8(b).map_err(|_| "the file is not UTF-8 text".to_owned()))
        .map_err(|e| vec![format!("{}: {e}", path.display())])?;
    Config::parse(&text, &Overrides::default())
        .map_err(|ps| ps.as_slice().iter().map(ToString::to_string).collect())
}

/// `leased check-config`: what passed on stdout; every problem on stderr.
pub fn run_check_config(args: CheckConfigArgs) -> ExitCode {
    let shown = args.config.display().to_string();
    let config = match read_config(&args.config) {
        Ok(c) => c,
        Err(problems) => return shared::exit::report_problems("leased", &shown, &problems),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return Failure::new(Status::OsErr, format!("cannot start the runtime: {e}"))
                .report("leased")
        }
    };
    let path_var = std::env::var_os("PATH");
    let report = rt.block_on(check(&config, !args.offline, path_var.as_deref()));
    let mut out = io::stdout().lock();
    let written = report
        .ok
        .iter()
        .try_for_each(|line| writeln!(out, "ok: {line}"));
    if let Err(e) = written {
        return Failure::new(Status::IoErr, format!("cannot write to stdout: {e}"))
            .report("leased");
    }
    match report.status() {
        Status::Ok => {
            let _ = writeln!(out, "{shown}: fine");
            ExitCode::SUCCESS
        }
        status => {
            let lines: Vec<String> = report.problems.iter().map(|p| p.message.clone()).collect();
            let _ = shared::exit::report_problems("leased", &shown, &lines);
            status.into()
        }
    }
}

#[cfg(test)]
mod tests;
