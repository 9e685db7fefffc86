//! The governance contract run in revm with London rules, the newest fork our genesis
//! enables: both pre-deployed forms give the same contract, and the admin and validator
//! rules hold. Calls are encoded and results decoded by a few hand-written ABI helpers
//! below; every failing call is checked for its revert reason, so a test cannot pass on a
//! revert for the wrong cause.

use std::collections::BTreeMap;

use orchestrator::contracts::{self, ChangeMode, Member};
use revm::bytecode::Bytecode;
use revm::context::result::{ExecutionResult, Output};
use revm::context::TxEnv;
use revm::database::{CacheDB, EmptyDB};
use revm::primitives::hardfork::SpecId;
use revm::primitives::{Address as EvmAddress, Bytes, Log, TxKind, B256, U256};
use revm::state::AccountInfo;
use revm::{Context, DatabaseRef, ExecuteCommitEvm, MainBuilder, MainContext, SystemCallCommitEvm};
use sha3::{Digest, Keccak256};
use shared::Address;

const BLOCK: u64 = 100;

fn addr(tag: u8, n: u8) -> Address {
    let mut a = [0x11; 20];
    a[0] = tag;
    a[19] = n;
    Address(a)
}
fn admin(n: u8) -> Address {
    addr(0xad, n)
}
fn validator(n: u8) -> Address {
    addr(0x7a, n)
}
fn evm_addr(a: &Address) -> EvmAddress {
    EvmAddress::from(*a.as_bytes())
}

fn keccak(bytes: &[u8]) -> [u8; 32] {
    Keccak256::digest(bytes).into()
}

// ---- ABI helpers ----

/// Calldata for a function whose arguments are all static (addresses, bools).
fn call(signature: &str, args: &[[u8; 32]]) -> Vec<u8> {
    let mut data = keccak(signature.as_bytes())[..4].to_vec();
    for a in args {
        data.extend_from_slice(a);
    }
    data
}
fn word_address(a: &Address) -> [u8; 32] {
    let mut w = [0; 32];
    w[12..].copy_from_slice(a.as_bytes());
    w
}
fn word(data: &[u8], index: usize) -> &[u8] {
    &data[32 * index..32 * (index + 1)]
}
fn as_usize(w: &[u8]) -> usize {
    assert!(w[..24].iter().all(|b| *b == 0), "word too large: {w:02x?}");
    u64::from_be_bytes(w[24..].try_into().unwrap()) as usize
}
fn as_address(w: &[u8]) -> Address {
    assert!(w[..12].iter().all(|b| *b == 0), "not an address: {w:02x?}");
    Address(w[12..].try_into().unwrap())
}
fn as_bool(w: &[u8]) -> bool {
    assert!(w[..31].iter().all(|b| *b == 0) && w[31] <= 1, "not a bool");
    w[31] == 1
}
/// The dynamic array whose offset is head word `head` of `data`.
fn dyn_array(data: &[u8], head: usize) -> Vec<&[u8]> {
    let start = as_usize(word(data, head));
    let body = &data[start..];
    let len = as_usize(word(body, 0));
    (0..len).map(|i| word(body, 1 + i)).collect()
}
fn addresses(data: &[u8], head: usize) -> Vec<Address> {
    dyn_array(data, head).into_iter().map(as_address).collect()
}
/// The message of a `require(..., "message")` revert (`Error(string)`).
fn revert_reason(output: &[u8]) -> String {
    assert_eq!(
        output[..4],
        keccak(b"Error(string)")[..4],
        "not an Error(string) revert"
    );
    let body = &output[4..];
    let start = as_usize(word(body, 0));
    let len = as_usize(word(&body[start..], 0));
    String::from_utf8(body[start + 32..start + 32 + len].to_vec()).unwrap()
}

// ---- The chain ----

/// What a transaction did, committed.
#[derive(Debug)]
enum Outcome {
    Ok { output: Vec<u8>, logs: Vec<Log> },
    Reverted(String),
}

impl Outcome {
    fn logs(self) -> Vec<Log> {
        match self {
            Outcome::Ok { logs, .. } => logs,
            Outcome::Reverted(reason) => panic!("call reverted: {reason}"),
        }
    }
    fn output(self) -> Vec<u8> {
        match self {
            Outcome::Ok { output, .. } => output,
            Outcome::Reverted(reason) => panic!("call reverted: {reason}"),
        }
    }
    fn reason(self) -> String {
        match self {
            Outcome::Reverted(reason) => reason,
            Outcome::Ok { .. } => panic!("call succeeded but should have reverted"),
        }
    }
}

struct Chain {
    db: CacheDB<EmptyDB>,
    contract: Address,
}

impl Chain {
    /// Code + storage form: runtime code and `storage_for` at the fixed address.
    fn with_storage(members: &[Member], mode: ChangeMode) -> Self {
        let mut db = CacheDB::new(EmptyDB::default());
        let address = evm_addr(&contracts::CONTRACT_ADDRESS);
        let code = Bytecode::new_raw(Bytes::from(contracts::runtime_code()));
        db.insert_account_info(address, AccountInfo::from_bytecode(code));
        for (slot, value) in contracts::storage_for(members, mode).unwrap() {
            db.insert_account_storage(
                address,
                U256::from_be_bytes(slot),
                U256::from_be_bytes(value),
            )
            .unwrap();
        }
        Chain {
            db,
            contract: contracts::CONTRACT_ADDRESS,
        }
    }

    /// Constructor form: the init code with constructor arguments, run by a deployer.
    fn with_constructor(first: &Member, mode: ChangeMode) -> Self {
        let mut chain = Chain {
            db: CacheDB::new(EmptyDB::default()),
            contract: Address([0; 20]),
        };
        let result = chain.execute(
            addr(0xde, 1),
            TxKind::Create,
            contracts::deploy_code(first, mode).unwrap(),
        );
        match result {
            ExecutionResult::Success {
                output: Output::Create(_, Some(created)),
                ..
            } => chain.contract = Address(created.into_array()),
            other => panic!("deployment failed: {other:?}"),
        }
        chain
    }

    fn execute(&mut self, from: Address, kind: TxKind, data: Vec<u8>) -> ExecutionResult {
        let tx = TxEnv::builder()
            .caller(evm_addr(&from))
            .kind(kind)
            .data(Bytes::from(data))
            .gas_limit(30_000_000)
            .gas_price(0)
            .build()
            .unwrap();
        self.evm().transact_commit(tx).unwrap()
    }

    fn evm(
        &mut self,
    ) -> revm::handler::MainnetEvm<revm::handler::MainnetContext<&mut CacheDB<EmptyDB>>> {
        Context::mainnet()
            .with_db(&mut self.db)
            .modify_cfg_chained(|cfg| {
                cfg.spec = SpecId::LONDON;
                cfg.disable_nonce_check = true;
            })
            .modify_block_chained(|block| block.number = U256::from(BLOCK))
            .build_mainnet()
    }

    fn send(&mut self, from: Address, data: Vec<u8>) -> Outcome {
        let to = TxKind::Call(evm_addr(&self.contract));
        outcome(self.execute(from, to, data))
    }

    /// `finalizeChange()` as AuRa's engine calls it: a system call from 0xff…fe.
    fn finalize_as_system(&mut self) -> Outcome {
        let to = evm_addr(&self.contract);
        let data = Bytes::from(call("finalizeChange()", &[]));
        outcome(self.evm().system_call_commit(to, data).unwrap())
    }

    fn view(&mut self, data: Vec<u8>) -> Vec<u8> {
        self.send(addr(0x99, 0x99), data).output()
    }
    fn validators(&mut self) -> Vec<Address> {
        addresses(&self.view(call("getValidators()", &[])), 0)
    }
    fn admins(&mut self) -> Vec<Address> {
        addresses(&self.view(call("getAdmins()", &[])), 0)
    }
    fn validators_of(&mut self, who: Address) -> Vec<Address> {
        let data = call("getValidatorsOf(address)", &[word_address(&who)]);
        addresses(&self.view(data), 0)
    }
    fn is_admin(&mut self, who: Address) -> bool {
        as_bool(&self.view(call("isAdmin(address)", &[word_address(&who)])))
    }
    /// Open proposals: (subject, add, votes).
    fn proposals(&mut self) -> Vec<(Address, bool, usize)> {
        let out = self.view(call("getProposals()", &[]));
        let subjects = addresses(&out, 0);
        let adds: Vec<bool> = dyn_array(&out, 1).into_iter().map(as_bool).collect();
        let votes: Vec<usize> = dyn_array(&out, 2).into_iter().map(as_usize).collect();
        assert_eq!((subjects.len(), adds.len()), (votes.len(), votes.len()));
        (0..subjects.len())
            .map(|i| (subjects[i], adds[i], votes[i]))
            .collect()
    }
    fn change_pending(&mut self) -> bool {
        as_bool(&self.view(call("changePending()", &[])))
    }

    fn vote_add(&mut self, from: Address, candidate: Address) -> Outcome {
        self.send(
            from,
            call("voteAddAdmin(address)", &[word_address(&candidate)]),
        )
    }
    fn vote_remove(&mut self, from: Address, subject: Address) -> Outcome {
        self.send(
            from,
            call("voteRemoveAdmin(address)", &[word_address(&subject)]),
        )
    }
    fn add_validator(&mut self, from: Address, v: Address) -> Outcome {
        self.send(from, call("addValidator(address)", &[word_address(&v)]))
    }
    fn remove_validator(&mut self, from: Address, v: Address) -> Outcome {
        self.send(from, call("removeValidator(address)", &[word_address(&v)]))
    }

    /// The contract's storage, non-zero slots only (a cleared slot is the same as none).
    fn storage(&self) -> BTreeMap<[u8; 32], [u8; 32]> {
        let account = &self.db.cache.accounts[&evm_addr(&self.contract)];
        account
            .storage
            .iter()
            .filter(|(_, v)| !v.is_zero())
            .map(|(k, v)| (k.to_be_bytes::<32>(), v.to_be_bytes::<32>()))
            .collect()
    }
    fn code(&self) -> Vec<u8> {
        let account = &self.db.cache.accounts[&evm_addr(&self.contract)];
        let code = account.info.code.as_ref().expect("contract has code");
        code.original_bytes().to_vec()
    }
}

fn outcome(result: ExecutionResult) -> Outcome {
    match result {
        ExecutionResult::Success { output, logs, .. } => Outcome::Ok {
            output: output.into_data().to_vec(),
            logs,
        },
        ExecutionResult::Revert { output, .. } => Outcome::Reverted(revert_reason(&output)),
        ExecutionResult::Halt { reason, .. } => panic!("EVM halted: {reason:?}"),
    }
}

fn topic(signature: &str) -> B256 {
    B256::from(keccak(signature.as_bytes()))
}

/// The sets announced by `InitiateChange` in `logs`, each with its parent-hash topic.
fn initiated_changes(logs: &[Log]) -> Vec<(B256, Vec<Address>)> {
    let initiate = topic("InitiateChange(bytes32,address[])");
    logs.iter()
        .filter(|l| l.topics().first() == Some(&initiate))
        .map(|l| {
            assert_eq!(
                l.topics().len(),
                2,
                "InitiateChange indexes the parent hash"
            );
            (l.topics()[1], addresses(&l.data.data, 0))
        })
        .collect()
}

fn has_event(logs: &[Log], signature: &str, indexed: &[Address]) -> bool {
    let t0 = topic(signature);
    logs.iter().any(|l| {
        let topics = l.topics();
        topics.first() == Some(&t0)
            && topics.len() == 1 + indexed.len()
            && indexed
                .iter()
                .zip(&topics[1..])
                .all(|(a, t)| t.0 == word_address(a))
    })
}

fn member(a: Address, validators: &[Address]) -> Member {
    Member {
        admin: a,
        validators: validators.to_vec(),
    }
}

/// Three admins with 2, 1 and 0 validators, in the code + storage form.
fn three_admins(mode: ChangeMode) -> Chain {
    Chain::with_storage(
        &[
            member(admin(1), &[validator(11), validator(12)]),
            member(admin(2), &[validator(21)]),
            member(admin(3), &[]),
        ],
        mode,
    )
}

// ---- The two forms ----

#[test]
fn constructor_form_returns_the_validators_in_order_and_equals_code_plus_storage() {
    let vs: Vec<Address> = [4, 2, 9, 1].map(validator).to_vec();
    for mode in [ChangeMode::AwaitFinalize, ChangeMode::Immediate] {
        let first = member(admin(1), &vs);
        let mut chain = Chain::with_constructor(&first, mode);
        assert_eq!(chain.validators(), vs);
        assert_eq!(chain.admins(), [admin(1)]);
        assert_eq!(chain.validators_of(admin(1)), vs);
        // Same code as the committed runtime code, and the very storage `storage_for`
        // computes: the two genesis forms hold one contract in one state.
        assert_eq!(chain.code(), contracts::runtime_code());
        assert_eq!(
            chain.storage(),
            contracts::storage_for(&[first], mode).unwrap()
        );
    }
}

#[test]
fn code_plus_storage_form_answers_at_the_fixed_address() {
    let mut chain = three_admins(ChangeMode::AwaitFinalize);
    assert_eq!(
        contracts::CONTRACT_ADDRESS.to_string(),
        "0x0000000000000000000000000000000000002000"
    );
    assert_eq!(
        chain.validators(),
        [validator(11), validator(12), validator(21)]
    );
    assert_eq!(chain.admins(), [admin(1), admin(2), admin(3)]);
    assert_eq!(chain.validators_of(admin(2)), [validator(21)]);
    assert_eq!(chain.validators_of(admin(3)), []);
    let owner = chain.view(call("getAdminOf(address)", &[word_address(&validator(12))]));
    assert_eq!(as_address(&owner), admin(1));
    assert!(chain.is_admin(admin(3)));
    assert!(!chain.is_admin(validator(11)));
    assert!(!chain.change_pending());
    assert_eq!(chain.proposals(), []);
}

// ---- Admin votes ----

#[test]
fn a_strict_majority_adds_an_admin() {
    let mut chain = three_admins(ChangeMode::AwaitFinalize);
    let logs = chain.vote_add(admin(1), admin(4)).logs();
    assert!(has_event(
        &logs,
        "AdminVoted(address,address,bool,uint256)",
        &[admin(1), admin(4)]
    ));
    assert!(!chain.is_admin(admin(4)), "1 of 3 is not a majority");
    assert_eq!(chain.proposals(), [(admin(4), true, 1)]);
    assert_eq!(chain.vote_add(admin(1), admin(4)).reason(), "already voted");

    let logs = chain.vote_add(admin(3), admin(4)).logs();
    assert!(has_event(&logs, "AdminAdded(address)", &[admin(4)]));
    assert!(chain.is_admin(admin(4)));
    assert_eq!(chain.admins(), [admin(1), admin(2), admin(3), admin(4)]);
    assert_eq!(chain.proposals(), [], "an executed proposal closes");

    // With four admins, two votes are only half: strict majority needs three.
    chain.vote_add(admin(1), admin(5)).logs();
    chain.vote_add(admin(2), admin(5)).logs();
    assert!(!chain.is_admin(admin(5)), "2 of 4 is not a strict majority");
    assert_eq!(chain.proposals(), [(admin(5), true, 2)]);
    chain.vote_add(admin(4), admin(5)).logs();
    assert!(chain.is_admin(admin(5)));
    // Admins change nothing in the validator set by themselves.
    assert!(!chain.change_pending());
}

#[test]
fn a_non_admin_cannot_vote_or_add_validators() {
    let mut chain = three_admins(ChangeMode::AwaitFinalize);
    let outsider = addr(0x0e, 1);
    assert_eq!(chain.vote_add(outsider, outsider).reason(), "not an admin");
    assert_eq!(
        chain.vote_remove(outsider, admin(2)).reason(),
        "not an admin"
    );
    assert_eq!(
        chain.add_validator(outsider, validator(99)).reason(),
        "not an admin"
    );
    assert_eq!(
        chain.add_validator(validator(11), validator(99)).reason(),
        "not an admin",
        "a validator is not an admin"
    );
    assert_eq!(chain.proposals(), []);
    assert_eq!(
        chain.vote_add(admin(1), admin(2)).reason(),
        "already an admin"
    );
}

#[test]
fn a_strict_majority_removes_an_admin_with_its_validators() {
    let mut chain = three_admins(ChangeMode::AwaitFinalize);
    // admin 3's open vote stops counting once admin 3 is gone.
    chain.vote_add(admin(3), admin(7)).logs();
    chain.vote_remove(admin(1), admin(2)).logs();
    chain.vote_remove(admin(2), admin(3)).logs();
    assert_eq!(chain.admins(), [admin(1), admin(2), admin(3)]);
    assert_eq!(chain.proposals().len(), 3);

    let logs = chain.vote_remove(admin(1), admin(3)).logs();
    assert!(has_event(&logs, "AdminRemoved(address)", &[admin(3)]));
    assert_eq!(chain.admins(), [admin(1), admin(2)]);
    assert!(!chain.is_admin(admin(3)));
    assert_eq!(chain.proposals(), [(admin(2), false, 1)]);
    assert!(!chain.change_pending(), "admin 3 ran no validators");

    // Removing admin 2 takes its validator out of the set, through InitiateChange.
    let logs = chain.vote_remove(admin(2), admin(2)).logs();
    assert!(has_event(&logs, "AdminRemoved(address)", &[admin(2)]));
    assert!(has_event(
        &logs,
        "ValidatorRemoved(address,address)",
        &[admin(2), validator(21)]
    ));
    let changes = initiated_changes(&logs);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].1, [validator(11), validator(12)]);
    chain.finalize_as_system().logs();
    assert_eq!(chain.validators(), [validator(11), validator(12)]);
    assert_eq!(
        chain.view(call("getAdminOf(address)", &[word_address(&validator(21))])),
        word_address(&Address([0; 20]))
    );
    assert_eq!(chain.vote_remove(admin(1), admin(1)).reason(), "last admin");
}

#[test]
fn removing_the_first_admin_makes_the_next_one_first() {
    let mut chain = three_admins(ChangeMode::Immediate);
    chain.vote_remove(admin(2), admin(1)).logs();
    chain.vote_remove(admin(3), admin(1)).logs();
    assert_eq!(chain.admins(), [admin(2), admin(3)]);
    assert_eq!(chain.validators(), [validator(21)]);
    // admin 2 (one validator) now sets the cap.
    chain.add_validator(admin(3), validator(31)).logs();
    assert_eq!(
        chain.add_validator(admin(3), validator(32)).reason(),
        "over the first admin's count"
    );
}

// ---- Validator changes ----

#[test]
fn an_added_validator_appears_only_after_the_system_finalizes() {
    let mut chain = three_admins(ChangeMode::AwaitFinalize);
    let before = [validator(11), validator(12), validator(21)];
    let after = [validator(11), validator(12), validator(21), validator(22)];

    let logs = chain.add_validator(admin(2), validator(22)).logs();
    assert!(has_event(
        &logs,
        "ValidatorAdded(address,address)",
        &[admin(2), validator(22)]
    ));
    let changes = initiated_changes(&logs);
    assert_eq!(changes.len(), 1);
    let parent = chain.db.block_hash_ref(BLOCK - 1).unwrap();
    assert_eq!(changes[0], (parent, after.to_vec()));
    assert_eq!(chain.validators(), before, "not before finalizeChange");
    assert!(chain.change_pending());
    assert_eq!(
        chain.validators_of(admin(2)),
        [validator(21), validator(22)]
    );

    // One change in flight at a time, and only the system finalizes it.
    assert_eq!(
        chain.add_validator(admin(1), validator(13)).reason(),
        "a change is pending"
    );
    assert_eq!(
        chain.send(admin(1), call("finalizeChange()", &[])).reason(),
        "only the system"
    );
    assert_eq!(chain.validators(), before);

    let logs = chain.finalize_as_system().logs();
    assert!(logs
        .iter()
        .any(|l| l.topics() == [topic("ChangeFinalized(address[])")]));
    assert_eq!(chain.validators(), after);
    assert!(!chain.change_pending());
    assert_eq!(
        chain.finalize_as_system().reason(),
        "no change pending",
        "a second finalize has nothing to apply"
    );
}

#[test]
fn in_immediate_mode_a_change_takes_effect_at_once() {
    let mut chain = three_admins(ChangeMode::Immediate);
    let logs = chain.add_validator(admin(2), validator(22)).logs();
    let expected = [validator(11), validator(12), validator(21), validator(22)];
    assert_eq!(initiated_changes(&logs)[0].1, expected);
    assert_eq!(chain.validators(), expected);
    assert!(!chain.change_pending());
    chain.remove_validator(admin(1), validator(11)).logs();
    assert_eq!(
        chain.validators(),
        [validator(12), validator(21), validator(22)]
    );
}

#[test]
fn no_admin_runs_more_validators_than_the_first() {
    let mut chain = three_admins(ChangeMode::Immediate);
    // admin 1 runs 2: admin 3 may reach 2 and no more.
    chain.add_validator(admin(3), validator(31)).logs();
    chain.add_validator(admin(3), validator(32)).logs();
    assert_eq!(
        chain.add_validator(admin(3), validator(33)).reason(),
        "over the first admin's count"
    );
    assert_eq!(
        chain.validators_of(admin(3)),
        [validator(31), validator(32)]
    );
    // The first admin is not capped, and raising its count raises the cap.
    chain.add_validator(admin(1), validator(13)).logs();
    chain.add_validator(admin(3), validator(33)).logs();
    assert_eq!(
        chain.validators(),
        [11, 12, 13, 21, 31, 32, 33].map(validator)
    );
    // A validator has one admin.
    assert_eq!(
        chain.add_validator(admin(2), validator(31)).reason(),
        "already a validator"
    );
}

#[test]
fn an_admin_removes_only_its_own_validators() {
    let mut chain = three_admins(ChangeMode::AwaitFinalize);
    assert_eq!(
        chain.remove_validator(admin(2), validator(11)).reason(),
        "not your validator"
    );
    let logs = chain.remove_validator(admin(1), validator(11)).logs();
    assert!(has_event(
        &logs,
        "ValidatorRemoved(address,address)",
        &[admin(1), validator(11)]
    ));
    assert_eq!(
        initiated_changes(&logs)[0].1,
        [validator(12), validator(21)]
    );
    assert_eq!(
        chain.validators(),
        [validator(11), validator(12), validator(21)]
    );
    chain.finalize_as_system().logs();
    assert_eq!(chain.validators(), [validator(12), validator(21)]);
    assert_eq!(chain.validators_of(admin(1)), [validator(12)]);

    // The set can never become empty.
    let mut solo =
        Chain::with_storage(&[member(admin(1), &[validator(11)])], ChangeMode::Immediate);
    assert_eq!(
        solo.remove_validator(admin(1), validator(11)).reason(),
        "the set would be empty"
    );
}

// ---- The chainspec `orchestrator init` writes ----

/// Runs `orchestrator init --flavour aura` with `form`, and returns the chainspec's
/// governance account and the validators the run reports.
fn chainspec_contract_account(form: &str) -> (serde_json::Value, Vec<Address>) {
    let d = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args([
            "init",
            "--member",
            "0",
            "--validators",
            "4",
            "--admin",
            &admin(1).to_string(),
            "--secrets",
            "dir:secrets",
            "--leases",
            "sqlite:leases.db",
            "--out",
            "net",
            "--flavour",
            "aura",
            "--aura-contract-form",
            form,
        ])
        .current_dir(d.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |p: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(d.path().join(p)).unwrap()).unwrap()
    };
    let spec = read("net/genesis/aura.json");
    let account = spec["accounts"][contracts::CONTRACT_ADDRESS.to_plain_hex()].clone();
    let account = if account.is_null() {
        spec["accounts"][contracts::CONTRACT_ADDRESS.to_string()].clone()
    } else {
        account
    };
    assert!(
        account.is_object(),
        "no governance account in the chainspec"
    );
    let validators = read("net/deployment-output.json")["validators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect();
    (account, validators)
}

fn unhex(v: &serde_json::Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap().trim_start_matches("0x")).unwrap()
}

#[test]
fn the_chainspecs_constructor_account_runs_to_the_generated_validator_set() {
    let (account, generated) = chainspec_contract_account("constructor");
    let mut chain = Chain {
        db: CacheDB::new(EmptyDB::default()),
        contract: Address([0; 20]),
    };
    match chain.execute(
        addr(0xde, 2),
        TxKind::Create,
        unhex(&account["constructor"]),
    ) {
        ExecutionResult::Success {
            output: Output::Create(_, Some(created)),
            ..
        } => chain.contract = Address(created.into_array()),
        other => panic!("the chainspec's constructor failed: {other:?}"),
    }
    assert_eq!(chain.validators(), generated);
    assert_eq!(chain.admins(), vec![admin(1)]);
}

#[test]
fn the_chainspecs_code_and_storage_account_holds_the_generated_validator_set() {
    let (account, generated) = chainspec_contract_account("code-and-storage");
    let mut db = CacheDB::new(EmptyDB::default());
    let address = evm_addr(&contracts::CONTRACT_ADDRESS);
    let code = Bytecode::new_raw(Bytes::from(unhex(&account["code"])));
    db.insert_account_info(address, AccountInfo::from_bytecode(code));
    for (slot, value) in account["storage"].as_object().unwrap() {
        let slot = U256::from_be_slice(&hex::decode(slot.trim_start_matches("0x")).unwrap());
        db.insert_account_storage(address, slot, U256::from_be_slice(&unhex(value)))
            .unwrap();
    }
    let mut chain = Chain {
        db,
        contract: contracts::CONTRACT_ADDRESS,
    };
    assert_eq!(chain.validators(), generated);
    assert_eq!(chain.admins(), vec![admin(1)]);
}
