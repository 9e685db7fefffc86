//! `ops/demo-geth.sh`: a real validator network on the embedded stores. `orchestrator init`
//! makes 3 identities and the Clique genesis; 4 `leased` daemons (vm-1 … vm-4) each
//! supervise a geth 1.13.15 that seals with the identity its daemon leased; the holder of
//! m0-v0 is killed with kill -9, and the standby's geth takes m0-v0 over, syncs, is
//! unlocked and seals again. Prints who holds what, the newest blocks with their sealer
//! and the VM that sealed them, and the take-over's figures. Exit 0 when the identity
//! sealed again with no equivocation; everything runs in a temporary directory on
//! loopback and stops on exit.

// A demo for a terminal: its narration is its output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use integration_tests::geth::network::{Fault, LeaseStore, Plan, ValidatorNetwork};
use integration_tests::geth::{self};
use serde_json::json;

const IDENTITIES: usize = 3;
const VMS: usize = 4;
const D_SECS: u64 = 15;

fn say(line: &str) {
    println!("\n\x1b[1m== {line}\x1b[0m");
}

fn main() -> ExitCode {
    let geth = match geth::locate() {
        Ok(path) => path,
        Err(line) => {
            eprintln!("{line}");
            return ExitCode::from(2);
        }
    };
    say("orchestrator init: 3 identities in dir: secrets, lease records in sqlite:, the Clique genesis with the governance contract");
    let mut net = ValidatorNetwork::provision(Plan {
        geth: &geth,
        identities: IDENTITIES,
        vms: VMS,
        duration_secs: D_SECS,
        leases: LeaseStore::Sqlite,
    });
    for (name, address) in &net.identities {
        println!("  {name}  {address}");
    }
    println!("  (everything in {})", net.dir.path().display());

    say("4 leased daemons, each supervising a geth: 3 lease an identity, unlock geth once it has synced, and seal; 1 stands by");
    let started = Instant::now();
    if let Err(e) = net.start_all(Duration::from_secs(90)) {
        eprintln!("{e}\n{}", net.diagnostics());
        return ExitCode::FAILURE;
    }
    println!(
        "  every identity sealed twice {:.1} s after the daemons started",
        started.elapsed().as_secs_f64()
    );
    show(&net);

    let victim = net.holders().get("m0-v0").cloned().unwrap_or_default();
    say(&format!(
        "kill -9 of {victim}'s daemon, the holder of m0-v0: its guard stops geth; the standby acquires m0-v0 once the lease lapses (D = {D_SECS} s), starts geth, waits for it to sync, unlocks it"
    ));
    let bound = Duration::from_secs(D_SECS + 30);
    let figures = match net.take_over(0, Fault::Kill9, bound) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}\n{}", net.diagnostics());
            return ExitCode::FAILURE;
        }
    };
    show(&net);

    say("figures");
    println!("  {figures}");
    let checker = net.sampler.snapshot();
    let equivocations = ValidatorNetwork::equivocations(&checker);
    match equivocations.is_empty() {
        true => println!(
            "  no signer sealed two blocks at one height in any VM's view ({} samples of every VM's chain)",
            checker.samples()
        ),
        false => println!("  EQUIVOCATION:\n{equivocations}"),
    }
    let holder = net.holders().values().next().cloned().unwrap_or_default();
    let rpc = net.vms[net.vm_index(&holder)].rpc;
    match net.governance_validators(&rpc) {
        Ok(list) => println!(
            "  getValidators() at {} on {holder}: {}",
            net.contract,
            list.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) => println!("  getValidators(): {e}"),
    }
    for d in &mut net.cluster.daemons {
        d.term();
    }
    for d in &mut net.cluster.daemons {
        d.wait_exit(Duration::from_secs(10));
    }
    match equivocations.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}

/// The holders as `leased status` would show them, and the newest blocks on a holder's
/// chain: height, sealer (identity) and the VM named in the block's vanity, which the
/// daemon sets when it unlocks geth.
fn show(net: &ValidatorNetwork) {
    let holders = net.holders();
    println!("  holders:");
    for (identity, vm) in &holders {
        println!("    {identity} -> {vm}");
    }
    let Some(view) = holders.values().next() else {
        return;
    };
    let rpc = net.vms[net.vm_index(view)].rpc;
    let Ok(head) = rpc.block_number() else {
        return;
    };
    println!("  newest blocks on {view}'s chain:");
    let chain = net.sampler.with(|c| {
        c.chain(view)
            .into_iter()
            .map(|s| (s.number, s.signer))
            .collect::<Vec<_>>()
    });
    for number in head.saturating_sub(7)..=head {
        let Some((_, signer)) = chain.iter().find(|(n, _)| *n == number) else {
            continue;
        };
        let identity = net
            .identities
            .iter()
            .find(|(_, a)| a == signer)
            .map_or("?".to_string(), |(n, _)| n.to_string());
        let vanity = rpc
            .call(
                "eth_getBlockByNumber",
                json!([format!("0x{number:x}"), false]),
            )
            .ok()
            .and_then(|b| b["extraData"].as_str().map(vanity_text))
            .unwrap_or_default();
        println!("    #{number:<4} sealed by {identity} ({signer})  vanity {vanity:?}");
    }
}

/// The printable start of a Clique `extraData`'s 32-byte vanity.
fn vanity_text(extra: &str) -> String {
    let hex = extra.trim_start_matches("0x");
    (0..hex.len().min(64))
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .take_while(|b| *b != 0)
        .map(char::from)
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect()
}
