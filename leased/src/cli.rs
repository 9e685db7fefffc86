//! The `leased` command line: the daemon, the on-call commands, and the hidden guard.
//! In the library so that test hosts run exactly the CLI the binary runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::config::{Config, Overrides};

/// Keeps each validator identity signing on exactly one VM.
///
/// `leased run` takes a lease on one unused identity of its pool, hands the key to the
/// local Ethereum client, renews the lease, and stops the client before the lease can
/// lapse; on SIGTERM it fences, releases and exits 0, so a standby takes over at once.
/// `leased status` and `leased break` are for on-call engineers, from any host that can
/// read the lease store; `leased check-config` checks a configuration and reaches what it
/// names before the unit is enabled.
///
/// Exit status: 0 success, 64 bad configuration or usage, 69 a store or the HTTP
/// listener unavailable, 75 another daemon holds the runtime directory.
#[derive(Debug, Parser)]
#[command(name = "leased", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    log: crate::logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the systemd unit's ExecStart).
    ///
    /// Reads the configuration, takes a lease on one unused identity of its pool, hands
    /// the key to the local Ethereum client, renews, and fences before the lease can lapse.
    /// Check a new configuration first with `leased check-config`.
    ///
    /// The client runs under a guard, `leased-guard` from beside this program (or
    /// `leased guard` if it is missing): it stops the client and deletes the key file at
    /// the fence deadline, even if the daemon is killed or frozen.
    ///
    /// Example: leased run --config /etc/leased/leased.toml
    Run(RunArgs),
    Status(crate::oncall::StatusArgs),
    Break(crate::oncall::BreakArgs),
    CheckConfig(crate::check_config::CheckConfigArgs),
    /// The fence guard the daemon starts for each hand-off; not for people.
    #[command(hide = true)]
    Guard(crate::guard::GuardArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// TOML configuration; see ops/leased.example.toml for every setting.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Overrides `node`.
    #[arg(long)]
    node: Option<String>,
    /// Overrides `runtime_dir`.
    #[arg(long, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    /// Overrides `store.leases`.
    #[arg(long, value_name = "SPEC")]
    leases: Option<String>,
    /// Overrides `store.secrets`.
    #[arg(long, value_name = "SPEC")]
    secrets: Option<String>,
    /// Overrides `identity.pool`.
    #[arg(long, value_name = "PREFIX")]
    pool: Option<String>,
    /// Overrides `lease.duration_secs`.
    #[arg(long, value_name = "SECONDS")]
    duration_secs: Option<u64>,
    /// Overrides `http.listen`.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
}

/// The whole command tree, for man pages, completions and help checks (the integration
/// tests' gen-assets); the binary itself never calls it.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Parses the process's arguments and runs the command; returns the exit status.
pub fn main() -> ExitCode {
    // The guard's client launcher and key janitor take their own, untouched argument
    // lists (the client's argv follows `--`); they are not for people and have no help.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = crate::guard::hidden_subcommand(&args) {
        return code;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return shared::exit::clap_error("leased", e),
    };
    crate::logging::init(cli.log.log_format);
    match cli.command {
        Command::Run(args) => run(args),
        Command::Status(args) => crate::oncall::run_status(args),
        Command::Break(args) => crate::oncall::run_break(args),
        Command::CheckConfig(args) => crate::check_config::run_check_config(args),
        Command::Guard(args) => crate::guard::run_guard(args.into_config()),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let overrides = Overrides {
        node: args.node,
        runtime_dir: args.runtime_dir,
        leases: args.leases,
        secrets: args.secrets,
        pool: args.pool,
        duration_secs: args.duration_secs,
        listen: args.listen,
    };
    match Config::load(&args.config, &overrides) {
        Ok(config) => crate::daemon::run_daemon(config),
        Err(problems) => {
            let lines: Vec<String> = problems
                .as_slice()
                .iter()
                .map(ToString::to_string)
                .collect();
            shared::exit::report_problems("leased", &args.config.display().to_string(), &lines)
        }
    }
}
