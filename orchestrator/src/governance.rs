//! `orchestrator governance …`: the consortium's admin votes and validator changes, sent as
//! signed transactions to the governance contract (`contracts/ValidatorGovernance.sol`) over
//! JSON-RPC, and the contract's state for people.
//!
//! Every change is checked against the contract's state before anything is signed, so that
//! a repeated command reports what is already so instead of sending it again, and a change
//! the contract would refuse is refused here with the contract's reason in one sentence.
//! Then the transaction is simulated (`eth_estimateGas`, which runs it), sent, and its
//! receipt awaited; the contract's events in the receipt say what happened. alloy does the
//! ABI (`alloy-sol-types`), the signing (`alloy-signer-local`) and the transactions and
//! their fees (`alloy-provider`: EIP-1559 where the chain has a base fee, legacy where it
//! has none).
//!
//! The admin key comes only from `--key-file` (raw hex, or keystore-v3 with
//! `--password-file`); it never reaches an error message or the output.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy_network::EthereumWallet;
use alloy_primitives::{Address as EthAddress, Bytes};
use alloy_provider::{Provider, ProviderBuilder};
use alloy_rpc_types_eth::{TransactionReceipt, TransactionRequest};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{sol, SolCall, SolEvent};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use shared::{fsutil, keyfile, Address};

use crate::contracts::CONTRACT_ADDRESS;
use crate::exit::Failure;
use crate::provision::tag;

sol! {
    function getValidators() external view returns (address[] memory);
    function getAdmins() external view returns (address[] memory);
    function getValidatorsOf(address admin) external view returns (address[] memory);
    function getAdminOf(address validator) external view returns (address);
    function getProposals() external view returns (address[] memory subjects, bool[] memory adds, uint256[] memory votes);
    function getVoters(address subject, bool add) external view returns (address[] memory);
    function changePending() external view returns (bool);
    function voteAddAdmin(address candidate) external;
    function voteRemoveAdmin(address admin) external;
    function addValidator(address validator) external;
    function removeValidator(address validator) external;
    event AdminVoted(address indexed voter, address indexed subject, bool add, uint256 votes);
    event AdminAdded(address indexed admin);
    event AdminRemoved(address indexed admin);
    event ValidatorAdded(address indexed admin, address indexed validator);
    event ValidatorRemoved(address indexed admin, address indexed validator);
}

/// Longest key or password file read.
const MAX_KEY_FILE: usize = 64 * 1024;
/// Every JSON-RPC request: connect within this, answer within [`REQUEST_TIMEOUT`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The consortium's governance contract: votes on admins, each admin's validators.
#[derive(Debug, Subcommand)]
pub(crate) enum GovernanceCommand {
    /// Admins, each admin's validators, the validator set, open proposals with their votes,
    /// and the per-member cap (the first admin's validator count).
    ///
    /// Example: orchestrator governance status --rpc http://127.0.0.1:8545
    Status(Common),
    /// Vote to make ADDRESS an admin; a strict majority of the admins adds it.
    ///
    /// Example: orchestrator governance vote-add-admin 0xNEW --rpc URL --key-file admin.key
    VoteAddAdmin(Vote),
    /// Vote to remove admin ADDRESS; a strict majority removes it, with its validators.
    ///
    /// Example: orchestrator governance vote-remove-admin 0xOLD --rpc URL --key-file admin.key
    VoteRemoveAdmin(Vote),
    /// Add validators run by the signing admin: the addresses given, or the identities of
    /// `--member N` in `--secrets`. Each is one transaction.
    ///
    /// Example: orchestrator governance add-validator --secrets dir:./secrets1 --member 1
    /// --rpc URL --key-file admin1.key
    AddValidator(Validators),
    /// Remove validators of the signing admin.
    ///
    /// Example: orchestrator governance remove-validator 0xADDR --rpc URL --key-file admin1.key
    RemoveValidator(Validators),
}

/// What every governance command takes.
#[derive(Debug, Args)]
pub(crate) struct Common {
    /// The JSON-RPC endpoint of a node of the network (http:// or https://).
    #[arg(long, value_name = "URL")]
    rpc: String,
    /// The governance contract; the address `init` pre-deploys it at by default.
    #[arg(long, value_name = "0xADDRESS")]
    contract: Option<String>,
    /// Print one JSON document instead of lines for people.
    #[arg(long)]
    json: bool,
}

/// How a change is signed and sent.
#[derive(Debug, Args)]
pub(crate) struct Signing {
    /// The admin's key: raw hex, or a keystore-v3 file with --password-file.
    #[arg(long, value_name = "FILE")]
    key_file: PathBuf,
    /// The keystore's password, for a keystore-v3 --key-file.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// How long to wait for each transaction's receipt.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    receipt_timeout_secs: u64,
}

#[derive(Debug, Args)]
pub(crate) struct Vote {
    /// The admin voted on.
    #[arg(value_name = "0xADDRESS")]
    subject: String,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    signing: Signing,
}

#[derive(Debug, Args)]
pub(crate) struct Validators {
    /// Validator addresses.
    #[arg(value_name = "0xADDRESS", required_unless_present = "member")]
    addresses: Vec<String>,
    /// Take the validators of member N from --secrets (their `address` tags), instead of
    /// addresses on the command line.
    #[arg(
        long,
        value_name = "N",
        requires = "secrets",
        conflicts_with = "addresses"
    )]
    member: Option<u32>,
    /// The secret store `init` or `join` put member N's identities in.
    #[arg(long, value_name = "SPEC", requires = "member")]
    secrets: Option<String>,
    /// A TOML file whose `[azure]` table says how to reach a keyvault: store (as for init).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    signing: Signing,
}

pub(crate) fn run(cmd: GovernanceCommand) -> Result<(), Failure> {
    let runtime = crate::runtime()?;
    runtime.block_on(async {
        match cmd {
            GovernanceCommand::Status(common) => status(common).await,
            GovernanceCommand::VoteAddAdmin(v) => vote(v, true).await,
            GovernanceCommand::VoteRemoveAdmin(v) => vote(v, false).await,
            GovernanceCommand::AddValidator(v) => validators(v, true).await,
            GovernanceCommand::RemoveValidator(v) => validators(v, false).await,
        }
    })
}

// ---------------------------------------------------------------------------------------
// The chain.

/// The contract on one node, read and (with a key) written.
struct Chain {
    provider: alloy_provider::DynProvider,
    contract: EthAddress,
    rpc: String,
    /// The signing admin, when there is a key.
    from: Option<EthAddress>,
    receipt_timeout: Duration,
}

/// The contract's state.
#[derive(Debug, Clone)]
struct State {
    admins: Vec<EthAddress>,
    validators_of: Vec<Vec<EthAddress>>,
    validators: Vec<EthAddress>,
    proposals: Vec<Proposal>,
    change_pending: bool,
}

#[derive(Debug, Clone)]
struct Proposal {
    subject: EthAddress,
    add: bool,
    voters: Vec<EthAddress>,
}

impl State {
    fn is_admin(&self, who: EthAddress) -> bool {
        self.admins.contains(&who)
    }

    /// The per-member cap: the first admin's validator count.
    fn cap(&self) -> usize {
        self.validators_of.first().map_or(0, Vec::len)
    }

    fn validators_of(&self, admin: EthAddress) -> &[EthAddress] {
        self.admins
            .iter()
            .position(|a| *a == admin)
            .map_or(&[], |i| &self.validators_of[i])
    }

    fn admin_of(&self, validator: EthAddress) -> Option<EthAddress> {
        self.admins
            .iter()
            .zip(&self.validators_of)
            .find(|(_, vs)| vs.contains(&validator))
            .map(|(a, _)| *a)
    }

    fn voters(&self, subject: EthAddress, add: bool) -> &[EthAddress] {
        self.proposals
            .iter()
            .find(|p| p.subject == subject && p.add == add)
            .map_or(&[], |p| &p.voters)
    }

    fn to_json(&self) -> Value {
        json!({
            "admins": self.admins.iter().zip(&self.validators_of).map(|(a, vs)| json!({
                "admin": a.to_checksum(None),
                "validators": vs.iter().map(|v| v.to_checksum(None)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "validators": self.validators.iter().map(|v| v.to_checksum(None)).collect::<Vec<_>>(),
            "cap": self.cap(),
            "changePending": self.change_pending,
            "proposals": self.proposals.iter().map(|p| json!({
                "subject": p.subject.to_checksum(None),
                "action": if p.add { "add-admin" } else { "remove-admin" },
                "votes": p.voters.len(),
                "needed": self.admins.len() / 2 + 1,
                "voters": p.voters.iter().map(|v| v.to_checksum(None)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

impl Chain {
    async fn connect(common: &Common, signer: Option<PrivateKeySigner>) -> Result<Self, Failure> {
        let url: reqwest::Url = common
            .rpc
            .parse()
            .ok()
            .filter(|u: &reqwest::Url| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                Failure::usage(format!(
                    "--rpc {:?} is not an http:// or https:// URL",
                    common.rpc
                ))
            })?;
        let contract = match &common.contract {
            Some(text) => parse_address("--contract", text)?,
            None => EthAddress::from(CONTRACT_ADDRESS.0),
        };
        let builder = match url.scheme() {
            "https" => shared::net::https_client_builder(None, CONNECT_TIMEOUT, REQUEST_TIMEOUT),
            _ => shared::net::http_client_builder(CONNECT_TIMEOUT, REQUEST_TIMEOUT),
        }
        .map_err(|e| Failure::io(format!("--rpc {}: {e}", common.rpc)))?;
        // A node on loopback is reached directly, never through a proxy.
        let builder = match shared::net::is_loopback(&url) {
            true => builder.no_proxy(),
            false => builder,
        };
        let client = builder
            .build()
            .map_err(|e| Failure::io(format!("--rpc {}: {e}", common.rpc)))?;
        let transport = alloy_transport_http::Http::with_client(client, url);
        let rpc_client = alloy_rpc_client::RpcClient::new(transport, false);
        let from = signer.as_ref().map(PrivateKeySigner::address);
        let provider = match signer {
            Some(signer) => ProviderBuilder::new()
                .wallet(EthereumWallet::from(signer))
                .connect_client(rpc_client)
                .erased(),
            None => ProviderBuilder::new().connect_client(rpc_client).erased(),
        };
        let chain = Self {
            provider,
            contract,
            rpc: common.rpc.clone(),
            from,
            receipt_timeout: Duration::from_secs(120),
        };
        // A node that answers, with our contract at the address.
        let code = chain
            .provider
            .get_code_at(contract)
            .await
            .map_err(|e| chain.unreachable(e))?;
        if code.is_empty() {
            return Err(Failure::data(format!(
                "{}: there is no contract at {} on this chain (wrong --rpc or --contract?)",
                chain.rpc,
                contract.to_checksum(None)
            )));
        }
        Ok(chain)
    }

    fn unreachable(&self, e: impl fmt::Display) -> Failure {
        Failure::new(
            shared::exit::Status::Unavailable,
            format!("--rpc {}: {}", self.rpc, one_line(&e.to_string())),
        )
    }

    async fn view<C: SolCall>(&self, call: C) -> Result<C::Return, Failure> {
        let tx = TransactionRequest::default()
            .to(self.contract)
            .input(Bytes::from(call.abi_encode()).into());
        let answer = self
            .provider
            .call(tx)
            .await
            .map_err(|e| self.unreachable(e))?;
        C::abi_decode_returns(&answer).map_err(|e| {
            Failure::data(format!(
                "{}: {} answered something that is not the governance contract's: {e}",
                self.rpc,
                C::SIGNATURE
            ))
        })
    }

    async fn state(&self) -> Result<State, Failure> {
        let admins = self.view(getAdminsCall {}).await?;
        let mut validators_of = Vec::with_capacity(admins.len());
        for admin in &admins {
            validators_of.push(self.view(getValidatorsOfCall { admin: *admin }).await?);
        }
        let validators = self.view(getValidatorsCall {}).await?;
        let open = self.view(getProposalsCall {}).await?;
        let mut proposals = Vec::new();
        for (subject, add) in open.subjects.iter().zip(&open.adds) {
            let voters = self
                .view(getVotersCall {
                    subject: *subject,
                    add: *add,
                })
                .await?;
            proposals.push(Proposal {
                subject: *subject,
                add: *add,
                voters,
            });
        }
        let change_pending = self.view(changePendingCall {}).await?;
        Ok(State {
            admins,
            validators_of,
            validators,
            proposals,
            change_pending,
        })
    }

    /// Simulates, signs, sends and awaits `call`; the receipt, or the contract's reason.
    async fn send<C: SolCall>(&self, call: C, what: &str) -> Result<TransactionReceipt, Failure> {
        let from = self.from.expect("a signing chain");
        let tx = TransactionRequest::default()
            .from(from)
            .to(self.contract)
            .input(Bytes::from(call.abi_encode()).into());
        // eth_estimateGas runs the call: a revert is reported before anything is signed.
        let gas = self
            .provider
            .estimate_gas(tx.clone())
            .await
            .map_err(|e| self.refused(what, &e))?;
        let pending = self
            .provider
            .send_transaction(tx.gas_limit(gas + gas / 5))
            .await
            .map_err(|e| self.refused(what, &e))?;
        let hash = *pending.tx_hash();
        let receipt = pending
            .with_timeout(Some(self.receipt_timeout))
            .get_receipt()
            .await
            .map_err(|e| {
                Failure::new(
                    shared::exit::Status::TempFail,
                    format!(
                        "{what}: transaction {hash} was sent, but no receipt came within {:?} ({}); \
                         run the command again to see whether it took effect",
                        self.receipt_timeout,
                        one_line(&e.to_string())
                    ),
                )
            })?;
        if !receipt.status() {
            return Err(Failure::data(format!(
                "{what}: transaction {hash} was mined but reverted (the state changed since it was checked); run the command again"
            )));
        }
        Ok(receipt)
    }

    /// A send that failed before it was mined, in one sentence.
    fn refused(&self, what: &str, e: &alloy_transport::TransportError) -> Failure {
        if let Some(payload) = e.as_error_resp() {
            let revert = payload
                .as_revert_data()
                .and_then(|data| alloy_sol_types::decode_revert_reason(&data));
            let message = payload.message.to_string();
            let reason = revert.unwrap_or_else(|| {
                message
                    .strip_prefix("execution reverted: ")
                    .unwrap_or(&message)
                    .to_string()
            });
            let lower = reason.to_ascii_lowercase();
            if lower.contains("insufficient funds") {
                return Failure::data(format!(
                    "{what}: the admin account {} cannot pay for gas: {}",
                    self.from.map(|a| a.to_checksum(None)).unwrap_or_default(),
                    one_line(&reason)
                ));
            }
            if lower.contains("nonce") {
                return Failure::new(
                    shared::exit::Status::TempFail,
                    format!(
                        "{what}: the node refused the transaction's nonce ({}); another transaction from this admin may be pending: wait for it, then run the command again",
                        one_line(&reason)
                    ),
                );
            }
            return Failure::data(format!(
                "{what}: the contract refused it: {}",
                plain_reason(&reason)
            ));
        }
        self.unreachable(e)
    }
}

/// The contract's `require` messages as sentences for people.
fn plain_reason(reason: &str) -> String {
    let reason = reason
        .trim()
        .trim_start_matches("execution reverted")
        .trim_start_matches(':')
        .trim();
    match reason {
        "" => "it reverted without a reason".into(),
        r => r.to_string(),
    }
}

fn one_line(text: &str) -> String {
    let line: String = text.replace(['\n', '\r'], " ");
    line.chars().take(300).collect()
}

fn parse_address(what: &str, text: &str) -> Result<EthAddress, Failure> {
    let address: Address = text
        .parse()
        .map_err(|e| Failure::usage(format!("{what} {text:?}: {e}")))?;
    if address.0 == [0; 20] {
        return Err(Failure::usage(format!("{what} is the zero address")));
    }
    Ok(EthAddress::from(address.0))
}

// ---------------------------------------------------------------------------------------
// The commands.

async fn status(common: Common) -> Result<(), Failure> {
    let chain = Chain::connect(&common, None).await?;
    let state = chain.state().await?;
    if common.json {
        return print(&serde_json::to_string_pretty(&state.to_json()).expect("JSON"));
    }
    let mut out = String::new();
    let needed = state.admins.len() / 2 + 1;
    out.push_str(&format!(
        "contract    {} on {}\n",
        chain.contract.to_checksum(None),
        chain.rpc
    ));
    out.push_str(&format!(
        "admins      {} (a vote passes with {needed})\n",
        state.admins.len()
    ));
    for (i, (admin, vs)) in state.admins.iter().zip(&state.validators_of).enumerate() {
        let first = if i == 0 {
            "  (first: sets the cap)"
        } else {
            ""
        };
        out.push_str(&format!(
            "  {}  {} validator{}{first}\n",
            admin.to_checksum(None),
            vs.len(),
            if vs.len() == 1 { "" } else { "s" }
        ));
        for v in vs {
            out.push_str(&format!("      {}\n", v.to_checksum(None)));
        }
    }
    out.push_str(&format!(
        "validators  {} in the set{}\n",
        state.validators.len(),
        if state.change_pending {
            " (a change awaits finalizeChange)"
        } else {
            ""
        }
    ));
    out.push_str(&format!(
        "cap         {} validators per member (the first admin's count)\n",
        state.cap()
    ));
    if state.proposals.is_empty() {
        out.push_str("proposals   none open\n");
    } else {
        out.push_str("proposals\n");
        for p in &state.proposals {
            out.push_str(&format!(
                "  {} admin {}: {} of {needed} votes ({})\n",
                if p.add { "add" } else { "remove" },
                p.subject.to_checksum(None),
                p.voters.len(),
                p.voters
                    .iter()
                    .map(|v| v.to_checksum(None))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    print(out.trim_end())
}

async fn vote(args: Vote, add: bool) -> Result<(), Failure> {
    let subject = parse_address("the admin", &args.subject)?;
    let signer = load_signer(&args.signing)?;
    let mut chain = Chain::connect(&args.common, Some(signer)).await?;
    chain.receipt_timeout = Duration::from_secs(args.signing.receipt_timeout_secs);
    let me = chain.from.expect("signing");
    let state = chain.state().await?;
    let subject_text = subject.to_checksum(None);
    let what = format!(
        "vote to {} admin {subject_text}",
        if add { "add" } else { "remove" }
    );
    if !state.is_admin(me) {
        return Err(Failure::data(format!(
            "{what}: {} is not an admin, so it cannot vote",
            me.to_checksum(None)
        )));
    }
    // Already so, or already voted: reported, not sent.
    let already = match (add, state.is_admin(subject)) {
        (true, true) => Some(format!("{subject_text} is already an admin; nothing sent")),
        (false, false) => Some(format!("{subject_text} is not an admin; nothing sent")),
        _ if state.voters(subject, add).contains(&me) => Some(format!(
            "{} already voted to {} {subject_text} ({} of {} votes); nothing sent",
            me.to_checksum(None),
            if add { "add" } else { "remove" },
            state.voters(subject, add).len(),
            state.admins.len() / 2 + 1
        )),
        _ => None,
    };
    if let Some(line) = already {
        return report(
            &args.common,
            json!({"action": what, "sent": false, "result": line}),
            &line,
        );
    }
    if !add && state.admins.len() == 1 {
        return Err(Failure::data(format!(
            "{what}: it is the last admin, which the contract keeps"
        )));
    }
    let receipt = if add {
        chain
            .send(voteAddAdminCall { candidate: subject }, &what)
            .await?
    } else {
        chain
            .send(voteRemoveAdminCall { admin: subject }, &what)
            .await?
    };
    let events = events(&receipt, chain.contract);
    let line = match (
        add,
        events
            .iter()
            .any(|e| e.starts_with("admin added") || e.starts_with("admin removed")),
    ) {
        (true, true) => format!("{subject_text} is now an admin"),
        (false, true) => format!("{subject_text} is no longer an admin"),
        _ => {
            let votes = events
                .iter()
                .find_map(|e| e.strip_prefix("votes "))
                .unwrap_or("?")
                .to_string();
            format!(
                "vote recorded: {votes} of {} needed to {} {subject_text}",
                state.admins.len() / 2 + 1,
                if add { "add" } else { "remove" }
            )
        }
    };
    report(
        &args.common,
        json!({"action": what, "sent": true, "transaction": receipt.transaction_hash.to_string(),
               "block": receipt.block_number, "events": events, "result": line}),
        &format!("{line} (transaction {})", receipt.transaction_hash),
    )
}

async fn validators(args: Validators, add: bool) -> Result<(), Failure> {
    let mut wanted = Vec::new();
    for text in &args.addresses {
        wanted.push(parse_address("validator", text)?);
    }
    let signer = load_signer(&args.signing)?;
    let me_key = signer.address();
    if let (Some(member), Some(spec)) = (args.member, &args.secrets) {
        wanted = member_validators(spec, member, args.config.as_deref(), me_key).await?;
    }
    let mut seen = std::collections::HashSet::new();
    wanted.retain(|a| seen.insert(*a));
    let mut chain = Chain::connect(&args.common, Some(signer)).await?;
    chain.receipt_timeout = Duration::from_secs(args.signing.receipt_timeout_secs);
    let me = me_key;
    let state = chain.state().await?;
    let verb = if add { "add" } else { "remove" };
    if !state.is_admin(me) {
        return Err(Failure::data(format!(
            "{verb} validators: {} is not an admin (vote it in first: orchestrator governance vote-add-admin)",
            me.to_checksum(None)
        )));
    }
    if state.change_pending {
        return Err(Failure::new(
            shared::exit::Status::TempFail,
            format!("{verb} validators: a validator-set change awaits finalizeChange by the engine; try again in a few blocks"),
        ));
    }
    // Decide every address before sending any: nothing is half-done for a reason known now.
    let mut to_send = Vec::new();
    let mut skipped = Vec::new();
    let mine = state.validators_of(me).len();
    for v in &wanted {
        let text = v.to_checksum(None);
        match (add, state.admin_of(*v)) {
            (true, Some(a)) if a == me => skipped.push(format!("{text} is already your validator")),
            (true, Some(a)) => {
                return Err(Failure::data(format!(
                    "add validator {text}: it is already a validator of admin {}",
                    a.to_checksum(None)
                )))
            }
            (false, None) => skipped.push(format!("{text} is not a validator")),
            (false, Some(a)) if a != me => {
                return Err(Failure::data(format!(
                    "remove validator {text}: it is a validator of admin {}, not yours",
                    a.to_checksum(None)
                )))
            }
            _ => to_send.push(*v),
        }
    }
    // A batch that would cross the cap part-way is refused here, so that none of it is
    // sent; an admin already at the cap is refused by the contract itself.
    let first = state.admins.first().copied();
    if add && first != Some(me) && mine < state.cap() && mine + to_send.len() > state.cap() {
        return Err(Failure::data(format!(
            "add validators: would exceed the first member's {} validators: you run {mine}, and {} more would make {}",
            state.cap(),
            to_send.len(),
            mine + to_send.len()
        )));
    }
    if !add {
        let total: usize = state.validators_of.iter().map(Vec::len).sum();
        if total == to_send.len() {
            return Err(Failure::data(
                "remove validators: the set would be empty, which the contract refuses".to_string(),
            ));
        }
    }
    let mut done = Vec::new();
    for v in &to_send {
        let text = v.to_checksum(None);
        let what = format!("{verb} validator {text}");
        let result = if add {
            chain.send(addValidatorCall { validator: *v }, &what).await
        } else {
            chain
                .send(removeValidatorCall { validator: *v }, &what)
                .await
        };
        // The contract's words for its cap, in the member's terms.
        let result =
            result.map_err(
                |e| match e.message().contains("over the first admin's count") {
                    true => Failure::data(format!(
                "{what}: the contract refused it: would exceed the first member's {} validators",
                state.cap()
            )),
                    false => e,
                },
            );
        match result {
            Ok(receipt) => done.push((text, receipt.transaction_hash.to_string())),
            Err(e) if done.is_empty() => return Err(e),
            Err(e) => {
                let list = done
                    .iter()
                    .map(|(t, _)| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Failure::new(
                    e.status(),
                    format!(
                        "{} (already done: {list}; running the command again skips them)",
                        e.message()
                    ),
                ));
            }
        }
    }
    let mut lines: Vec<String> = done
        .iter()
        .map(|(t, h)| {
            format!(
                "{t} {}ed (transaction {h})",
                if add { "add" } else { "remov" }
            )
        })
        .collect();
    lines.extend(skipped.iter().map(|s| format!("{s}; nothing sent")));
    if lines.is_empty() {
        lines.push("no validators given".into());
    }
    let after = chain.view(getValidatorsCall {}).await?;
    lines.push(format!("the validator set now has {}", after.len()));
    report(
        &args.common,
        json!({
            "action": format!("{verb}-validator"),
            "sent": done.iter().map(|(t, h)| json!({"validator": t, "transaction": h})).collect::<Vec<_>>(),
            "skipped": skipped,
            "validators": after.iter().map(|v| v.to_checksum(None)).collect::<Vec<_>>(),
        }),
        &lines.join("\n"),
    )
}

/// Member `member`'s validator addresses, from the `address` tags of its identities in the
/// secret store (no key is read). Each must name `admin` as its admin.
async fn member_validators(
    spec: &str,
    member: u32,
    config: Option<&Path>,
    admin: EthAddress,
) -> Result<Vec<EthAddress>, Failure> {
    let store_spec: shared::spec::SecretStoreSpec = spec
        .parse()
        .map_err(|e| Failure::usage(format!("--secrets {spec}: {e}")))?;
    let azure = crate::network_cmd::azure_options(config)?;
    let store = store_spec
        .open(&azure)
        .map_err(|e| Failure::no_input(format!("--secrets {spec}: {e}")))?;
    let listed = store.list().await.map_err(|e| {
        Failure::new(
            shared::exit::Status::Unavailable,
            format!("--secrets {spec}: {e}"),
        )
    })?;
    let mut found = Vec::new();
    for props in listed {
        if props.tags.get(tag::MEMBER).map(String::as_str) != Some(&member.to_string()) {
            continue;
        }
        let name = props.name.to_string();
        let address = props
            .tags
            .get(tag::ADDRESS)
            .ok_or_else(|| Failure::data(format!("--secrets {spec}: {name} has no address tag")))
            .and_then(|a| parse_address(&name, a))?;
        if let Some(tagged) = props.tags.get(tag::ADMIN) {
            let tagged = parse_address(&name, tagged)?;
            if tagged != admin {
                return Err(Failure::data(format!(
                    "{name} belongs to admin {}, but --key-file is {}'s key",
                    tagged.to_checksum(None),
                    admin.to_checksum(None)
                )));
            }
        }
        found.push((name, address));
    }
    if found.is_empty() {
        return Err(Failure::data(format!(
            "--secrets {spec} has no identities of member {member}"
        )));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, a)| a).collect())
}

/// The contract's events in `receipt`, one short line each.
fn events(receipt: &TransactionReceipt, contract: EthAddress) -> Vec<String> {
    let mut out = Vec::new();
    for log in receipt.inner.logs() {
        if log.address() != contract {
            continue;
        }
        let data = &log.inner;
        if let Ok(e) = AdminVoted::decode_log_data(&data.data) {
            out.push(format!("votes {}", e.votes));
        } else if let Ok(e) = AdminAdded::decode_log_data(&data.data) {
            out.push(format!("admin added {}", e.admin.to_checksum(None)));
        } else if let Ok(e) = AdminRemoved::decode_log_data(&data.data) {
            out.push(format!("admin removed {}", e.admin.to_checksum(None)));
        } else if let Ok(e) = ValidatorAdded::decode_log_data(&data.data) {
            out.push(format!("validator added {}", e.validator.to_checksum(None)));
        } else if let Ok(e) = ValidatorRemoved::decode_log_data(&data.data) {
            out.push(format!(
                "validator removed {}",
                e.validator.to_checksum(None)
            ));
        }
    }
    out
}

/// The admin's key as a signer; the key is read into wiped memory, then handed to alloy.
fn load_signer(signing: &Signing) -> Result<PrivateKeySigner, Failure> {
    let path = &signing.key_file;
    let bytes = Zeroizing::new(fsutil::read_limited(path, MAX_KEY_FILE).map_err(|e| {
        Failure::no_input(format!("cannot read --key-file {}: {e}", path.display()))
    })?);
    let password = match &signing.password_file {
        Some(p) => Some(fsutil::read_password_file(p).map_err(|e| {
            Failure::no_input(format!("cannot read --password-file {}: {e}", p.display()))
        })?),
        None => None,
    };
    let (key, _) = keyfile::decode(&bytes, password.as_ref().map(|p| p.as_slice()))
        .map_err(|e| Failure::data(format!("--key-file {}: {e}", path.display())))?;
    let secret = key.expose_bytes();
    PrivateKeySigner::from_slice(&secret[..]).map_err(|_| {
        Failure::data(format!(
            "--key-file {}: not a usable secp256k1 key",
            path.display()
        ))
    })
}

fn report(common: &Common, doc: Value, line: &str) -> Result<(), Failure> {
    match common.json {
        true => print(&serde_json::to_string_pretty(&doc).expect("JSON")),
        false => print(line),
    }
}

fn print(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| Failure::io(format!("cannot write to stdout: {e}")))
}
