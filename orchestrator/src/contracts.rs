//! The governance contract (`orchestrator/contracts/ValidatorGovernance.sol`) as genesis
//! needs it: the committed solc artifacts, the fixed address it lives at, and its initial
//! state in the two pre-deployed forms.
//!
//! - Constructor form: [`deploy_code`] is init code plus ABI-encoded constructor arguments,
//!   which a client runs at genesis (the AuRa chainspec `constructor` field).
//! - Code + storage form: [`runtime_code`] plus [`storage_for`], the storage a constructor
//!   run would have left, computed slot by slot after solc's layout
//!   (`ValidatorGovernance.storage.json`; a test here holds the two together).
//!
//! This module never compiles anything: the artifacts are committed, and
//! `tests/contracts_compile.rs` proves they are what the pinned solc makes of the source.

use std::collections::BTreeMap;

use sha3::{Digest, Keccak256};
use shared::Address;

/// Where genesis puts the contract. Not the 2018 spec's `0x…06`: since Byzantium that is
/// the bn256 addition precompile, which a modern client calls instead. `0x…2000` is well
/// clear of every precompile (`0x01`–`0x11`, and `0x100` for P-256) and of the system
/// contracts of later forks, which live at hash-derived addresses.
pub const CONTRACT_ADDRESS: Address = Address([
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0x00,
]);

/// The only caller `finalizeChange` accepts: AuRa's system transactions come from it.
pub const SYSTEM_ADDRESS: Address = Address([
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xfe,
]);

/// Solidity source, for publishing beside the bytecode.
pub const SOURCE: &str = include_str!("../contracts/ValidatorGovernance.sol");
/// Init code as hex without `0x`, constructor arguments not appended.
pub const INIT_CODE_HEX: &str = include_str!("../contracts/ValidatorGovernance.init.hex");
/// Runtime code as hex without `0x`.
pub const RUNTIME_CODE_HEX: &str = include_str!("../contracts/ValidatorGovernance.runtime.hex");
/// The contract ABI (JSON), as network info's `adminContractABI` publishes it.
pub const ABI_JSON: &str = include_str!("../contracts/ValidatorGovernance.abi.json");
/// solc's `storageLayout` output, which [`storage_for`] follows.
pub const STORAGE_LAYOUT_JSON: &str = include_str!("../contracts/ValidatorGovernance.storage.json");

// Slots of the state variables, in declaration order (see STORAGE_LAYOUT_JSON).
const SLOT_ADMINS: u64 = 0;
const SLOT_ADMIN_POSITION: u64 = 1;
const SLOT_VALIDATORS_OF: u64 = 2;
const SLOT_ADMIN_OF: u64 = 3;
const SLOT_CURRENT_VALIDATORS: u64 = 4;
const SLOT_AWAIT_FINALIZE: u64 = 5;
// pendingValidators (6), changePending (7) and proposals (8) start empty, i.e. all zero.

/// How a validator-set change takes effect; fixed at genesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeMode {
    /// AuRa: a change is announced with `InitiateChange` and takes effect when the engine
    /// calls `finalizeChange` from [`SYSTEM_ADDRESS`].
    AwaitFinalize,
    /// QBFT validator-contract mode: nothing calls `finalizeChange`, so a change takes
    /// effect in the transaction that makes it.
    Immediate,
}

/// One admin and the validators it runs, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub admin: Address,
    pub validators: Vec<Address>,
}

/// Why an initial state is one the contract would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitialStateError {
    #[error("the governance contract needs at least one admin")]
    NoAdmins,
    #[error("the first admin has no validators, so the validator set would be empty")]
    NoValidators,
    #[error("the zero address cannot be an admin or a validator")]
    ZeroAddress,
    #[error("admin {0} is listed twice")]
    DuplicateAdmin(Address),
    #[error("validator {0} is listed twice")]
    DuplicateValidator(Address),
    #[error("admin {admin} has {count} validators, more than the first admin's {cap}")]
    OverCap {
        admin: Address,
        count: usize,
        cap: usize,
    },
}

/// Init code, decoded from the committed hex.
pub fn init_code() -> Vec<u8> {
    decode_artifact(INIT_CODE_HEX)
}

/// Runtime code, decoded from the committed hex.
pub fn runtime_code() -> Vec<u8> {
    decode_artifact(RUNTIME_CODE_HEX)
}

fn decode_artifact(text: &str) -> Vec<u8> {
    hex::decode(text.trim()).expect("committed contract artifacts are hex")
}

/// ABI encoding of `constructor(address firstAdmin, address[] firstValidators, bool
/// awaitFinalize)`.
pub fn constructor_args(first: &Member, mode: ChangeMode) -> Result<Vec<u8>, InitialStateError> {
    check(std::slice::from_ref(first))?;
    let mut out = Vec::with_capacity(32 * (4 + first.validators.len()));
    out.extend_from_slice(&address_word(&first.admin));
    // Head: the array's offset from the start of the arguments, after three head words.
    out.extend_from_slice(&u64_word(3 * 32));
    out.extend_from_slice(&u64_word(u64::from(mode == ChangeMode::AwaitFinalize)));
    out.extend_from_slice(&u64_word(first.validators.len() as u64));
    for v in &first.validators {
        out.extend_from_slice(&address_word(v));
    }
    Ok(out)
}

/// The constructor form: init code followed by its arguments, run at genesis.
pub fn deploy_code(first: &Member, mode: ChangeMode) -> Result<Vec<u8>, InitialStateError> {
    let mut code = init_code();
    code.extend(constructor_args(first, mode)?);
    Ok(code)
}

/// The code + storage form's storage: every non-zero slot the contract holds with
/// `members` as admins (in order; the first sets the cap) running their validators. The
/// validator set (`getValidators`) is the members' validators, member by member. Equal to
/// what the constructor leaves when `members` is one member.
pub fn storage_for(
    members: &[Member],
    mode: ChangeMode,
) -> Result<BTreeMap<[u8; 32], [u8; 32]>, InitialStateError> {
    check(members)?;
    let mut storage = BTreeMap::new();
    let mut put = |slot: [u8; 32], value: [u8; 32]| {
        storage.insert(slot, value);
    };

    put(u64_word(SLOT_ADMINS), u64_word(members.len() as u64));
    let validators: Vec<&Address> = members.iter().flat_map(|m| &m.validators).collect();
    put(
        u64_word(SLOT_CURRENT_VALIDATORS),
        u64_word(validators.len() as u64),
    );
    for (i, v) in validators.iter().enumerate() {
        put(
            array_element(u64_word(SLOT_CURRENT_VALIDATORS), i as u64),
            address_word(v),
        );
    }
    for (i, m) in members.iter().enumerate() {
        put(
            array_element(u64_word(SLOT_ADMINS), i as u64),
            address_word(&m.admin),
        );
        put(
            mapping_entry(&m.admin, SLOT_ADMIN_POSITION),
            u64_word(i as u64 + 1),
        );
        if !m.validators.is_empty() {
            let own = mapping_entry(&m.admin, SLOT_VALIDATORS_OF);
            put(own, u64_word(m.validators.len() as u64));
            for (j, v) in m.validators.iter().enumerate() {
                put(array_element(own, j as u64), address_word(v));
                put(mapping_entry(v, SLOT_ADMIN_OF), address_word(&m.admin));
            }
        }
    }
    if mode == ChangeMode::AwaitFinalize {
        put(u64_word(SLOT_AWAIT_FINALIZE), u64_word(1));
    }
    Ok(storage)
}

/// The contract's own rules for a state it could reach, checked before genesis holds one
/// it could not.
fn check(members: &[Member]) -> Result<(), InitialStateError> {
    let first = members.first().ok_or(InitialStateError::NoAdmins)?;
    if first.validators.is_empty() {
        return Err(InitialStateError::NoValidators);
    }
    let cap = first.validators.len();
    let mut admins = std::collections::BTreeSet::new();
    let mut validators = std::collections::BTreeSet::new();
    let zero = Address([0; 20]);
    for m in members {
        if m.admin == zero || m.validators.contains(&zero) {
            return Err(InitialStateError::ZeroAddress);
        }
        if !admins.insert(m.admin) {
            return Err(InitialStateError::DuplicateAdmin(m.admin));
        }
        if m.validators.len() > cap {
            return Err(InitialStateError::OverCap {
                admin: m.admin,
                count: m.validators.len(),
                cap,
            });
        }
        for v in &m.validators {
            if !validators.insert(*v) {
                return Err(InitialStateError::DuplicateValidator(*v));
            }
        }
    }
    Ok(())
}

fn u64_word(n: u64) -> [u8; 32] {
    let mut w = [0; 32];
    w[24..].copy_from_slice(&n.to_be_bytes());
    w
}

/// An address right-aligned in a word, as both storage and the ABI hold it.
fn address_word(a: &Address) -> [u8; 32] {
    let mut w = [0; 32];
    w[12..].copy_from_slice(a.as_bytes());
    w
}

fn keccak(parts: &[&[u8; 32]]) -> [u8; 32] {
    let mut h = Keccak256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Element `i` of a dynamic array whose length sits at `slot`: keccak256(slot) + i. An
/// address fills its own slot (two do not fit in 32 bytes).
fn array_element(slot: [u8; 32], i: u64) -> [u8; 32] {
    let mut word = keccak(&[&slot]);
    let mut carry = u128::from(i);
    for byte in word.iter_mut().rev() {
        if carry == 0 {
            break;
        }
        let sum = u128::from(*byte) + (carry & 0xff);
        *byte = sum as u8;
        carry = (carry >> 8) + (sum >> 8);
    }
    word
}

/// Entry `key` of a mapping declared at `slot`: keccak256(pad32(key) ‖ pad32(slot)).
fn mapping_entry(key: &Address, slot: u64) -> [u8; 32] {
    keccak(&[&address_word(key), &u64_word(slot)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> Address {
        let mut a = [0; 20];
        a[0] = 0xa0;
        a[19] = n;
        Address(a)
    }

    fn word_hex(w: &[u8; 32]) -> String {
        hex::encode(w)
    }

    /// The slots above are the ones solc assigned; a reordered or retyped variable in the
    /// source must show up here, not as a wrong genesis.
    #[test]
    fn slots_match_the_committed_solc_layout() {
        let layout: serde_json::Value = serde_json::from_str(STORAGE_LAYOUT_JSON).unwrap();
        let vars: Vec<(String, String, u64, u64)> = layout["storage"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["label"].as_str().unwrap().to_owned(),
                    v["type"].as_str().unwrap().to_owned(),
                    v["slot"].as_str().unwrap().parse().unwrap(),
                    v["offset"].as_u64().unwrap(),
                )
            })
            .collect();
        let expected = [
            ("admins", "t_array(t_address)dyn_storage", SLOT_ADMINS),
            (
                "adminPosition",
                "t_mapping(t_address,t_uint256)",
                SLOT_ADMIN_POSITION,
            ),
            (
                "validatorsOf",
                "t_mapping(t_address,t_array(t_address)dyn_storage)",
                SLOT_VALIDATORS_OF,
            ),
            ("adminOf", "t_mapping(t_address,t_address)", SLOT_ADMIN_OF),
            (
                "currentValidators",
                "t_array(t_address)dyn_storage",
                SLOT_CURRENT_VALIDATORS,
            ),
            ("awaitFinalize", "t_bool", SLOT_AWAIT_FINALIZE),
            ("pendingValidators", "t_array(t_address)dyn_storage", 6),
            ("changePending", "t_bool", 7),
        ];
        for (label, ty, slot) in expected {
            let found = vars.iter().find(|v| v.0 == label);
            assert_eq!(
                found,
                Some(&(label.to_owned(), ty.to_owned(), slot, 0)),
                "state variable {label} in the committed storage layout"
            );
        }
        assert_eq!(
            vars.len(),
            expected.len() + 1,
            "proposals is the only other"
        );
        assert_eq!(vars.last().unwrap().0, "proposals");
    }

    #[test]
    fn array_and_mapping_slots_follow_solidity() {
        // keccak256(uint256(0)): where the elements of an array declared at slot 0 start.
        assert_eq!(
            word_hex(&array_element(u64_word(0), 0)),
            "290decd9548b62a8d60345a988386fc84ba6bc95484008f6362f93160ef3e563"
        );
        assert_eq!(
            word_hex(&array_element(u64_word(0), 2)),
            "290decd9548b62a8d60345a988386fc84ba6bc95484008f6362f93160ef3e565"
        );
        // The addition carries across bytes.
        assert_eq!(
            word_hex(&array_element(u64_word(0), 0x1_0000 - 0xe563)),
            "290decd9548b62a8d60345a988386fc84ba6bc95484008f6362f93160ef40000"
        );
        let mut key_then_slot = [0u8; 64];
        key_then_slot[12..32].copy_from_slice(addr(1).as_bytes());
        key_then_slot[63] = 3;
        let direct: [u8; 32] = Keccak256::digest(key_then_slot).into();
        assert_eq!(mapping_entry(&addr(1), 3), direct);
    }

    #[test]
    fn storage_counts_every_entry() {
        let members = [
            Member {
                admin: addr(1),
                validators: vec![addr(11), addr(12)],
            },
            Member {
                admin: addr(2),
                validators: vec![addr(21)],
            },
        ];
        let s = storage_for(&members, ChangeMode::AwaitFinalize).unwrap();
        // admins: length + 2 + 2 positions; current set: length + 3; validatorsOf: 2
        // lengths + 3; adminOf: 3; awaitFinalize: 1.
        assert_eq!(s.len(), 5 + 4 + 5 + 3 + 1);
        assert_eq!(s[&u64_word(SLOT_CURRENT_VALIDATORS)], u64_word(3));
        assert_eq!(
            s[&array_element(u64_word(SLOT_CURRENT_VALIDATORS), 2)],
            address_word(&addr(21))
        );
        let immediate = storage_for(&members, ChangeMode::Immediate).unwrap();
        assert!(!immediate.contains_key(&u64_word(SLOT_AWAIT_FINALIZE)));
        assert_eq!(immediate.len(), s.len() - 1);
    }

    #[test]
    fn refuses_states_the_contract_would_refuse() {
        let m = |admin: u8, vs: &[u8]| Member {
            admin: addr(admin),
            validators: vs.iter().map(|v| addr(*v)).collect(),
        };
        let mode = ChangeMode::Immediate;
        assert_eq!(storage_for(&[], mode), Err(InitialStateError::NoAdmins));
        assert_eq!(
            storage_for(&[m(1, &[])], mode),
            Err(InitialStateError::NoValidators)
        );
        assert_eq!(
            storage_for(&[m(1, &[11]), m(2, &[21, 22])], mode),
            Err(InitialStateError::OverCap {
                admin: addr(2),
                count: 2,
                cap: 1
            })
        );
        assert_eq!(
            storage_for(&[m(1, &[11]), m(1, &[21])], mode),
            Err(InitialStateError::DuplicateAdmin(addr(1)))
        );
        assert_eq!(
            storage_for(&[m(1, &[11]), m(2, &[11])], mode),
            Err(InitialStateError::DuplicateValidator(addr(11)))
        );
        let zero = Member {
            admin: Address([0; 20]),
            validators: vec![addr(11)],
        };
        assert_eq!(
            constructor_args(&zero, mode),
            Err(InitialStateError::ZeroAddress)
        );
        assert!(storage_for(&[m(1, &[11, 12]), m(2, &[]), m(3, &[31, 32])], mode).is_ok());
    }

    #[test]
    fn constructor_args_are_abi_encoded() {
        let first = Member {
            admin: addr(1),
            validators: vec![addr(11), addr(12)],
        };
        let args = constructor_args(&first, ChangeMode::AwaitFinalize).unwrap();
        let words: Vec<String> = args.chunks(32).map(hex::encode).collect();
        let a = |n: u8| format!("000000000000000000000000a0{}{n:02x}", "00".repeat(18));
        assert_eq!(
            words,
            [
                a(1),
                format!("{:064x}", 0x60),
                format!("{:064x}", 1),
                format!("{:064x}", 2),
                a(11),
                a(12),
            ]
        );
        let code = deploy_code(&first, ChangeMode::Immediate).unwrap();
        assert_eq!(code.len(), init_code().len() + args.len());
        assert!(code.starts_with(&init_code()));
    }

    #[test]
    fn artifacts_decode_and_fit_in_an_account() {
        assert!(!runtime_code().is_empty());
        // EIP-170 limit: a client refuses a larger account code.
        assert!(runtime_code().len() <= 24_576);
        let abi: serde_json::Value = serde_json::from_str(ABI_JSON).unwrap();
        let names: Vec<&str> = abi
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        for needed in ["getValidators", "finalizeChange", "InitiateChange"] {
            assert!(names.contains(&needed), "ABI lacks {needed}");
        }
    }
}
