//! The `orchestrator`: the deployment pipeline's one-shot tool.
//!
//! The library parts are [`provision`] (identities into the secret and lease stores),
//! [`contracts`] (the governance contract's committed artifacts and genesis state) and
//! [`genesis`] (AuRa, QBFT and Clique genesis rendering); `governance` sends the
//! contract's votes and validator changes to a running network. The command line, here, parses
//! arguments and dispatches to the command modules. Every failure is printed
//! as a single line on stderr, prefixed `orchestrator: error:`, with a sysexits-style exit
//! status, so a deployment pipeline can tell bad input (64/65/66) from an environment
//! problem (73/74). Nothing here prints key material.

mod bootnodes_cmd;
pub mod contracts;
mod exit;
pub mod genesis;
mod governance;
mod key_cmd;
mod leased_check;
mod network_cmd;
pub mod networkinfo;
pub mod provision;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

pub use exit::Failure;

/// Sets up the validator identities of a proof-of-authority consortium member.
///
/// Exit status: 0 success, 64 bad usage, 65 bad data (invalid key, wrong password,
/// damaged keystore), 66 input file missing or unreadable, 73 output exists or cannot be
/// created, 74 other I/O error.
#[derive(Debug, Parser)]
#[command(name = "orchestrator", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    log: shared::logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate and inspect validator key files (secp256k1).
    ///
    /// Example: orchestrator key generate --out ./validator.key
    #[command(subcommand)]
    Key(key_cmd::KeyCommand),
    /// Start a consortium: this member's identities into the stores, genesis for each
    /// flavour, networkinfo.json and deployment-output.json.
    ///
    /// Safe to re-run: existing identities are checked and kept, never regenerated, and
    /// files already in --out must match byte for byte. Bad input writes nothing (exit 64).
    ///
    /// Example: orchestrator init --member 0 --validators 4 --admin 0xADDR
    /// --secrets dir:./secrets --leases sqlite:./leases.db --out ./network
    Init(network_cmd::InitArgs),
    /// Join a consortium from another member's networkinfo.json: create only this member's
    /// identities, copy the network's genesis, and print what the existing admins must vote in.
    ///
    /// Example: orchestrator join --member 1 --validators 4 --admin 0xADDR
    /// --consortium-data ./network/networkinfo.json --secrets dir:./secrets1
    /// --leases sqlite:./leases1.db --out ./member1
    Join(network_cmd::JoinArgs),
    /// The governance contract on a running network: status, admin votes, and each
    /// admin's validators, as signed transactions over JSON-RPC.
    ///
    /// Example: orchestrator governance status --rpc http://127.0.0.1:8545
    #[command(subcommand)]
    Governance(governance::GovernanceCommand),
    /// The live bootnode list: the enodes that the holders of leased identities registered
    /// (leased's `[client] enode`), in the forms clients take.
    ///
    /// Example: orchestrator bootnodes --leases sqlite:./leases.db --form bootnodes
    Bootnodes(bootnodes_cmd::BootnodesArgs),
}

/// The whole command tree, for man pages, completions and help checks (the integration
/// tests' gen-assets); the binary itself never calls it.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Runs the CLI on `args` (including the program name) and returns the exit status.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return exit::clap_error(e),
    };
    shared::logging::init(cli.log.log_format);
    let result = match cli.command {
        Command::Key(cmd) => key_cmd::run(cmd),
        Command::Init(args) => network_cmd::run_init(args),
        Command::Join(args) => network_cmd::run_join(args),
        Command::Governance(cmd) => governance::run(cmd),
        Command::Bootnodes(args) => bootnodes_cmd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => crate::exit::report(failure),
    }
}

/// The one-thread runtime the commands run their store and network calls on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::io(format!("cannot start the async runtime: {e}")))
}
