//! Genesis documents for the three client flavours, rendered from one [`Consortium`].
//!
//! Owns the consortium description, its whole-input validation, and the pure renderers:
//! AuRa chainspec (OpenEthereum / Nethermind), QBFT genesis (Besu) and Clique genesis
//! (geth style). Rendering is a pure function of its input: no I/O, no clock, no
//! randomness, so the same consortium always yields byte-identical JSON once serialised.
//!
//! It must never guess through a conflict: when a user-supplied base genesis already sets
//! something the consortium decides (chain id, signers, the governance contract, the admin
//! account), the two must agree or rendering fails with every disagreement listed. Settings
//! the consortium only defaults (fork blocks, builtins, difficulty, ...) are taken from the
//! base when it has them.
//!
//! Conventions shared by all flavours: addresses and account keys are lower-case hex with
//! `0x` (every client parses that; some choke on checksums in keys); byte strings are
//! lower-case `0x` hex; quantities are minimal `0x` hex, except where a client requires a
//! JSON number (geth/Besu `config`).

mod aura;
mod clique;
mod qbft;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde_json::{Map, Value};
use shared::Address;

pub use qbft::{decode_qbft_extra_data, QbftExtraDataError};

/// Chain and network id range the consortium accepts.
pub const NETWORK_ID_RANGE: RangeInclusive<u64> = 5..=999_999_999;
/// Chain and network id when none is given.
pub const DEFAULT_NETWORK_ID: u64 = 10_101_010;
/// 30M gas: mainnet's target at London, ample for governance transactions and contract
/// deployment, and well inside every client's limits.
pub const DEFAULT_GAS_LIMIT: u64 = 30_000_000;
/// The minimum gas limit the AuRa chainspec declares (`minGasLimit`), and so the floor.
pub const MIN_GAS_LIMIT: u64 = 5_000;
/// Nethermind holds the gas limit in a signed 64-bit integer.
pub const MAX_GAS_LIMIT: u64 = i64::MAX as u64;
/// Seconds between blocks (AuRa step, Clique period, QBFT block period) when none is given.
pub const DEFAULT_BLOCK_PERIOD_SECS: u64 = 5;
/// Clique epoch and QBFT epoch length, in blocks, when none is given (geth's default).
pub const DEFAULT_EPOCH: u64 = 30_000;
/// Upper bound on initial signers. Far above a consortium's needs; it keeps a Clique
/// extraData and a contract's storage to a sane size.
pub const MAX_VALIDATORS: usize = 256;
/// EIP-1559's initial base fee (1 gwei), written out so that every client and every
/// genesis-hash tool starts from the same value instead of its own default.
pub const INITIAL_BASE_FEE: u64 = 1_000_000_000;

/// A client flavour we render genesis for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flavour {
    /// OpenEthereum / Nethermind chainspec with the AuthorityRound engine.
    Aura,
    /// Besu genesis with QBFT.
    Qbft,
    /// geth-style genesis with Clique.
    Clique,
}

impl Flavour {
    pub const ALL: [Flavour; 3] = [Flavour::Aura, Flavour::Qbft, Flavour::Clique];

    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::Aura => "aura",
            Flavour::Qbft => "qbft",
            Flavour::Clique => "clique",
        }
    }
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Flavour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Flavour::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown flavour {s:?}; expected aura, qbft or clique"))
    }
}

/// The governance contract pre-deployed in genesis. Its bytecode is an input: this module
/// places it, it does not know what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractAccount {
    /// Where the contract lives. Must be clear of every precompile.
    pub address: Address,
    /// Deployed (runtime) bytecode, for the code-plus-storage form.
    pub runtime_code: Vec<u8>,
    /// Initial storage for the code-plus-storage form (slot → value, both 32 bytes).
    pub storage: BTreeMap<[u8; 32], [u8; 32]>,
    /// Init code with constructor arguments appended, for AuRa's constructor form.
    pub constructor: Option<Vec<u8>>,
}

/// An account funded at genesis so that someone can pay for the first governance
/// transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admin {
    pub address: Address,
    pub balance_wei: u128,
}

/// How the AuRa chainspec carries the governance contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuraContractForm {
    /// `constructor`: the client runs the init code at genesis. Both OpenEthereum and
    /// Nethermind accept it.
    #[default]
    Constructor,
    /// `code` + `storage`: the state is written directly.
    CodeAndStorage,
}

/// Which AuRa validator-set kind names the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuraValidatorKind {
    /// `safeContract`: the client calls `getValidators()` and `finalizeChange()` and
    /// listens for `InitiateChange`. The interface our contract implements.
    #[default]
    SafeContract,
    /// `contract`: as `safeContract`, plus the client reports misbehaviour to the contract
    /// (`reportBenign` / `reportMalicious`), which the contract must then implement.
    Contract,
}

/// AuRa-only rendering choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuraOptions {
    pub contract_form: AuraContractForm,
    pub validator_kind: AuraValidatorKind,
}

/// Where Besu takes the validator set from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QbftValidatorMode {
    /// `config.qbft.validatorcontractaddress` names the contract, and Besu calls its
    /// `getValidators()` for every block including genesis. extraData lists no validators,
    /// as Besu itself writes contract-mode headers (it warns and ignores any it finds).
    #[default]
    Contract,
    /// Validators are listed in extraData and voted on in block headers; no contract
    /// address is configured (the contract is still deployed).
    BlockHeader,
}

/// QBFT-only rendering choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QbftOptions {
    pub validator_mode: QbftValidatorMode,
    /// Round timeout; `None` means twice the block period, the ratio Besu documents.
    pub request_timeout_secs: Option<u64>,
}

/// Everything the genesis of a consortium network depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct Consortium {
    /// Chain id and network id (kept equal).
    pub network_id: u64,
    /// Initial signers, in the order the contract reports them.
    pub validators: Vec<Address>,
    pub admin: Option<Admin>,
    pub contract: ContractAccount,
    /// `None`: the base genesis's gas limit, else [`DEFAULT_GAS_LIMIT`].
    pub gas_limit: Option<u64>,
    /// AuRa `stepDuration`, Clique `period`, QBFT `blockperiodseconds`.
    pub block_period_secs: u64,
    /// Clique `epoch`, QBFT `epochlength`.
    pub epoch: u64,
    pub aura: AuraOptions,
    pub qbft: QbftOptions,
    /// A user-supplied genesis (of the flavour being rendered) to inject into.
    pub base: Option<Value>,
}

impl Consortium {
    /// A consortium with every setting at its default.
    pub fn new(validators: Vec<Address>, contract: ContractAccount) -> Self {
        Consortium {
            network_id: DEFAULT_NETWORK_ID,
            validators,
            admin: None,
            contract,
            gas_limit: None,
            block_period_secs: DEFAULT_BLOCK_PERIOD_SECS,
            epoch: DEFAULT_EPOCH,
            aura: AuraOptions::default(),
            qbft: QbftOptions::default(),
            base: None,
        }
    }

    /// Every problem that stops `flavour` from rendering, base-genesis conflicts aside
    /// (those surface from [`render`]). Empty means valid.
    pub fn validate(&self, flavour: Flavour) -> Vec<Problem> {
        let mut problems = Vec::new();
        if !NETWORK_ID_RANGE.contains(&self.network_id) {
            problems.push(Problem::NetworkIdOutOfRange {
                found: self.network_id,
            });
        }
        if self.validators.is_empty() {
            problems.push(Problem::NoValidators);
        }
        if self.validators.len() > MAX_VALIDATORS {
            problems.push(Problem::TooManyValidators {
                found: self.validators.len(),
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut reported = std::collections::BTreeSet::new();
        for v in &self.validators {
            if !seen.insert(*v) && reported.insert(*v) {
                problems.push(Problem::DuplicateValidator { address: *v });
            }
        }
        let contract = self.contract.address;
        if is_reserved(&contract) {
            problems.push(Problem::ContractAddressReserved { address: contract });
        }
        if self.validators.contains(&contract) {
            problems.push(Problem::ContractIsValidator { address: contract });
        }
        if let Some(admin) = &self.admin {
            if admin.address == contract {
                problems.push(Problem::AdminIsContract { address: contract });
            }
            if is_reserved(&admin.address) {
                problems.push(Problem::AdminAddressReserved {
                    address: admin.address,
                });
            }
        }
        let constructor_form =
            flavour == Flavour::Aura && self.aura.contract_form == AuraContractForm::Constructor;
        if constructor_form {
            if self.contract.constructor.as_ref().is_none_or(Vec::is_empty) {
                problems.push(Problem::MissingConstructor);
            }
        } else if self.contract.runtime_code.is_empty() {
            problems.push(Problem::EmptyRuntimeCode { flavour });
        }
        if self.block_period_secs == 0 {
            problems.push(Problem::ZeroBlockPeriod);
        }
        if self.epoch == 0 && flavour != Flavour::Aura {
            problems.push(Problem::ZeroEpoch);
        }
        if let Some(gas) = self.gas_limit {
            if !(MIN_GAS_LIMIT..=MAX_GAS_LIMIT).contains(&gas) {
                problems.push(Problem::GasLimitOutOfRange { found: gas });
            }
        }
        if flavour == Flavour::Qbft && self.qbft.request_timeout_secs == Some(0) {
            problems.push(Problem::ZeroRequestTimeout);
        }
        if let Some(base) = &self.base {
            if !base.is_object() {
                problems.push(Problem::BaseShape {
                    path: "(top level)".into(),
                    expected: "a JSON object",
                });
            }
        }
        problems
    }
}

/// Precompiles, present and future, sit at small addresses (0x01–0x11 today, 0x100 for
/// P-256). Everything up to 0x0fff is treated as theirs, which leaves the governance
/// contract's 0x2000 clear with room to spare.
fn is_reserved(address: &Address) -> bool {
    address.0[..18].iter().all(|b| *b == 0) && address.0[18] < 0x10
}

/// One reason a consortium cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    #[error(
        "network id {found} is out of range {}..={}",
        NETWORK_ID_RANGE.start(),
        NETWORK_ID_RANGE.end()
    )]
    NetworkIdOutOfRange { found: u64 },
    #[error("no validators: genesis needs at least one initial signer")]
    NoValidators,
    #[error("{found} validators is more than the {MAX_VALIDATORS} a genesis accepts")]
    TooManyValidators { found: usize },
    #[error("validator {address} is listed more than once")]
    DuplicateValidator { address: Address },
    #[error("contract address {address} is in the precompile range; choose one well clear of it")]
    ContractAddressReserved { address: Address },
    #[error("contract address {address} is also a validator")]
    ContractIsValidator { address: Address },
    #[error("admin address {address} is the contract address")]
    AdminIsContract { address: Address },
    #[error("admin address {address} is in the precompile range")]
    AdminAddressReserved { address: Address },
    #[error("the aura constructor form needs the contract's init code, which is missing")]
    MissingConstructor,
    #[error("the {flavour} genesis needs the contract's runtime code, which is empty")]
    EmptyRuntimeCode { flavour: Flavour },
    #[error("block period must be at least 1 second")]
    ZeroBlockPeriod,
    #[error("epoch must be at least 1 block")]
    ZeroEpoch,
    #[error("qbft request timeout must be at least 1 second")]
    ZeroRequestTimeout,
    #[error("gas limit {found} is out of range {MIN_GAS_LIMIT}..={MAX_GAS_LIMIT}")]
    GasLimitOutOfRange { found: u64 },
    #[error("base genesis: {path} must be {expected}")]
    BaseShape {
        path: String,
        expected: &'static str,
    },
    #[error("base genesis: {path} selects {found}, which a {flavour} genesis cannot use")]
    BaseWrongEngine {
        path: String,
        found: String,
        flavour: Flavour,
    },
    #[error("base genesis: {path} is {base}, but the consortium needs {ours}")]
    BaseConflict {
        path: String,
        base: String,
        ours: String,
    },
    #[error("base genesis: account {address} ({role}) already has a different {field}")]
    BaseAccountConflict {
        address: String,
        role: &'static str,
        field: &'static str,
    },
}

/// Every problem found, in the order found. Displays as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Renders the genesis of `flavour`: validation first, then the document.
pub fn render(consortium: &Consortium, flavour: Flavour) -> Result<Value, Problems> {
    match flavour {
        Flavour::Aura => render_aura(consortium),
        Flavour::Qbft => render_qbft(consortium),
        Flavour::Clique => render_clique(consortium),
    }
}

/// AuRa chainspec for OpenEthereum and Nethermind.
pub fn render_aura(consortium: &Consortium) -> Result<Value, Problems> {
    with_validation(consortium, Flavour::Aura, aura::render)
}

/// Besu QBFT genesis.
pub fn render_qbft(consortium: &Consortium) -> Result<Value, Problems> {
    with_validation(consortium, Flavour::Qbft, qbft::render)
}

/// geth-style Clique genesis.
pub fn render_clique(consortium: &Consortium) -> Result<Value, Problems> {
    with_validation(consortium, Flavour::Clique, clique::render)
}

fn with_validation(
    consortium: &Consortium,
    flavour: Flavour,
    render: fn(&Consortium, &mut Builder) -> Map<String, Value>,
) -> Result<Value, Problems> {
    let problems = consortium.validate(flavour);
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    let mut builder = Builder {
        flavour,
        problems: Vec::new(),
    };
    let doc = render(consortium, &mut builder);
    if builder.problems.is_empty() {
        Ok(Value::Object(doc))
    } else {
        Err(Problems(builder.problems))
    }
}

// ---------------------------------------------------------------------------------------
// Shared building blocks for the flavour modules.

/// `0x`-prefixed lower-case hex of bytes.
pub(crate) fn hex_data(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// Minimal `0x` hex of a quantity (`0x0` for zero).
pub(crate) fn hex_quantity(value: u128) -> String {
    format!("{value:#x}")
}

/// Lower-case `0x` address.
pub(crate) fn hex_address(address: &Address) -> String {
    hex_data(address.as_bytes())
}

/// Who decides a setting when the base genesis also has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The consortium: the base may repeat it but not contradict it.
    Consortium,
    /// Only a default of ours: the base's value wins.
    Default,
}

/// How to compare a base value with ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compare {
    /// Numbers by value whether written as JSON numbers, hex or decimal strings; other
    /// strings case-insensitively; containers element-wise.
    Loose,
    /// Hex byte strings, exactly (case aside): `0x00ab` is not `0xab`.
    Bytes,
}

/// Collects the base-genesis problems met while building one document.
#[derive(Debug)]
pub(crate) struct Builder {
    pub(crate) flavour: Flavour,
    pub(crate) problems: Vec<Problem>,
}

impl Builder {
    /// The base document (or an empty one) as the starting object.
    pub(crate) fn start(&mut self, consortium: &Consortium) -> Map<String, Value> {
        match &consortium.base {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        }
    }

    /// The object at `obj[key]`, created when absent. `None` (and a problem) when the base
    /// has something else there.
    pub(crate) fn object<'m>(
        &mut self,
        obj: &'m mut Map<String, Value>,
        path: &str,
        key: &str,
    ) -> Option<&'m mut Map<String, Value>> {
        let entry = obj
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if entry.is_null() {
            *entry = Value::Object(Map::new());
        }
        match entry {
            Value::Object(map) => Some(map),
            _ => {
                self.problems.push(Problem::BaseShape {
                    path: join_path(path, key),
                    expected: "an object",
                });
                None
            }
        }
    }

    /// Sets `obj[key]` to `ours`, or checks the base's value against it.
    pub(crate) fn set(
        &mut self,
        obj: &mut Map<String, Value>,
        path: &str,
        key: &str,
        ours: Value,
        owner: Owner,
        compare: Compare,
    ) {
        match obj.get(key) {
            Some(existing) if !is_blank(existing) => {
                if owner == Owner::Consortium && !same(existing, &ours, compare) {
                    self.problems.push(Problem::BaseConflict {
                        path: join_path(path, key),
                        base: existing.to_string(),
                        ours: ours.to_string(),
                    });
                }
            }
            _ => {
                obj.insert(key.to_string(), ours);
            }
        }
    }

    /// [`Builder::set`] for a setting the consortium decides, compared loosely.
    pub(crate) fn owned(
        &mut self,
        obj: &mut Map<String, Value>,
        path: &str,
        key: &str,
        ours: Value,
    ) {
        self.set(obj, path, key, ours, Owner::Consortium, Compare::Loose);
    }

    /// [`Builder::set`] for a default of ours that the base may override.
    pub(crate) fn fill(
        &mut self,
        obj: &mut Map<String, Value>,
        path: &str,
        key: &str,
        ours: Value,
    ) {
        self.set(obj, path, key, ours, Owner::Default, Compare::Loose);
    }

    /// Refuses a base that sets `key`, which the consortium needs absent.
    pub(crate) fn forbid(&mut self, obj: &Map<String, Value>, path: &str, key: &str) {
        if let Some(existing) = obj.get(key).filter(|v| !is_blank(v)) {
            self.problems.push(Problem::BaseConflict {
                path: join_path(path, key),
                base: existing.to_string(),
                ours: "it unset".into(),
            });
        }
    }

    /// Refuses a base whose `obj` selects any engine in `others`.
    pub(crate) fn refuse_engines(&mut self, obj: &Map<String, Value>, path: &str, others: &[&str]) {
        for key in others {
            if obj.contains_key(*key) {
                self.problems.push(Problem::BaseWrongEngine {
                    path: path.to_string(),
                    found: (*key).to_string(),
                    flavour: self.flavour,
                });
            }
        }
    }

    /// Places an account in an `alloc`/`accounts` object. Base accounts are found under
    /// any spelling of the address. Code, constructor and storage must match exactly
    /// (absent counts as empty); a balance we set must match; everything else of the base
    /// account stays.
    pub(crate) fn account(
        &mut self,
        accounts: &mut Map<String, Value>,
        address: &Address,
        role: &'static str,
        ours: Map<String, Value>,
    ) {
        let key = hex_address(address);
        let existing_key = accounts
            .keys()
            .find(|k| normalise_address_key(k).as_deref() == Some(&key[2..]))
            .cloned();
        let Some(existing_key) = existing_key else {
            accounts.insert(key, Value::Object(ours));
            return;
        };
        let Some(existing) = accounts
            .get_mut(&existing_key)
            .and_then(Value::as_object_mut)
        else {
            self.problems.push(Problem::BaseShape {
                path: format!("account {existing_key}"),
                expected: "an object",
            });
            return;
        };
        let mut conflicts = Vec::new();
        for field in ["code", "constructor"] {
            let theirs = existing.get(field).and_then(Value::as_str).map(hex_norm);
            let mine = ours.get(field).and_then(Value::as_str).map(hex_norm);
            if theirs.filter(|s| !s.is_empty()) != mine.filter(|s| !s.is_empty()) {
                conflicts.push(field);
            }
        }
        if storage_norm(existing.get("storage")) != storage_norm(ours.get("storage")) {
            conflicts.push("storage");
        }
        if let (Some(theirs), Some(mine)) = (existing.get("balance"), ours.get("balance")) {
            if !is_blank(theirs) && !same(theirs, mine, Compare::Loose) {
                conflicts.push("balance");
            }
        }
        if !conflicts.is_empty() {
            for field in conflicts {
                self.problems.push(Problem::BaseAccountConflict {
                    address: key.clone(),
                    role,
                    field,
                });
            }
            return;
        }
        for (k, v) in ours {
            existing.entry(k).or_insert(v);
        }
    }

    /// Places an account only where the base has none; fills missing fields of a base
    /// account at that address otherwise (the base wins field by field).
    pub(crate) fn default_account(
        &mut self,
        accounts: &mut Map<String, Value>,
        address: &Address,
        ours: Map<String, Value>,
    ) {
        let key = hex_address(address);
        let existing_key = accounts
            .keys()
            .find(|k| normalise_address_key(k).as_deref() == Some(&key[2..]))
            .cloned()
            .unwrap_or(key);
        match accounts
            .entry(existing_key.clone())
            .or_insert_with(|| Value::Object(Map::new()))
        {
            Value::Object(existing) => {
                for (k, v) in ours {
                    existing.entry(k).or_insert(v);
                }
            }
            _ => self.problems.push(Problem::BaseShape {
                path: format!("account {existing_key}"),
                expected: "an object",
            }),
        }
    }
}

/// The header fields and `alloc` that the geth-style files (Clique, and Besu's QBFT) share:
/// the gas limit, defaults a base genesis may override, the contract in code + storage
/// form, and the optional prefunded admin. Only the mix hash differs between them.
pub(crate) fn header_and_alloc(
    c: &Consortium,
    b: &mut Builder,
    doc: &mut Map<String, Value>,
    mix_hash: Value,
) {
    let (gas, owner) = gas_limit(c);
    b.set(doc, "", "gasLimit", gas, owner, Compare::Loose);
    let defaults = [
        ("nonce", serde_json::json!("0x0")),
        ("timestamp", serde_json::json!("0x0")),
        ("difficulty", serde_json::json!("0x1")),
        ("mixHash", mix_hash),
        ("coinbase", serde_json::json!(hex_data(&[0u8; 20]))),
        (
            "baseFeePerGas",
            serde_json::json!(format!("{INITIAL_BASE_FEE:#x}")),
        ),
    ];
    for (key, value) in defaults {
        b.fill(doc, "", key, value);
    }
    if let Some(alloc) = b.object(doc, "", "alloc") {
        let contract = contract_code_account(&c.contract);
        b.account(
            alloc,
            &c.contract.address,
            "validator-set contract",
            contract,
        );
        place_admin(b, alloc, c);
    }
}

/// The JSON for the governance contract in code-plus-storage form.
pub(crate) fn contract_code_account(contract: &ContractAccount) -> Map<String, Value> {
    let mut account = Map::new();
    account.insert("balance".into(), Value::String("0x0".into()));
    account.insert(
        "code".into(),
        Value::String(hex_data(&contract.runtime_code)),
    );
    if !contract.storage.is_empty() {
        let storage = contract
            .storage
            .iter()
            .map(|(k, v)| (hex_data(k), Value::String(hex_data(v))))
            .collect();
        account.insert("storage".into(), Value::Object(storage));
    }
    account
}

/// The JSON for the prefunded admin.
pub(crate) fn admin_account(admin: &Admin) -> Map<String, Value> {
    let mut account = Map::new();
    account.insert(
        "balance".into(),
        Value::String(hex_quantity(admin.balance_wei)),
    );
    account
}

/// Places the admin account, when there is one.
pub(crate) fn place_admin(
    builder: &mut Builder,
    accounts: &mut Map<String, Value>,
    consortium: &Consortium,
) {
    if let Some(admin) = &consortium.admin {
        builder.account(accounts, &admin.address, "admin", admin_account(admin));
    }
}

/// The gas limit to write, and whether the consortium insists on it.
pub(crate) fn gas_limit(consortium: &Consortium) -> (Value, Owner) {
    match consortium.gas_limit {
        Some(gas) => (Value::String(hex_quantity(gas.into())), Owner::Consortium),
        None => (
            Value::String(hex_quantity(DEFAULT_GAS_LIMIT.into())),
            Owner::Default,
        ),
    }
}

fn join_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Null, `""` and `"0x"` say "not set" in the genesis files people hand around.
fn is_blank(value: &Value) -> bool {
    matches!(value, Value::Null) || matches!(value.as_str(), Some("" | "0x" | "0X"))
}

fn hex_norm(s: &str) -> String {
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    s.to_ascii_lowercase()
}

/// An alloc key as 40 lower-case hex digits, if it is an address at all.
fn normalise_address_key(key: &str) -> Option<String> {
    let h = hex_norm(key);
    (h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit())).then_some(h)
}

/// Storage as a map of minimal lower-case hex slot → value, zero values dropped (a zero
/// slot is no slot in the state trie).
fn storage_norm(storage: Option<&Value>) -> BTreeMap<String, String> {
    fn minimal(v: &Value) -> String {
        let s = match v {
            Value::String(s) => hex_norm(s),
            other => other.to_string(),
        };
        let t = s.trim_start_matches('0');
        t.to_string()
    }
    storage
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (minimal(&Value::String(k.clone())), minimal(v)))
                .filter(|(_, v)| !v.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// A JSON number, a `0x` hex string or a decimal string, as an integer.
fn as_quantity(value: &Value) -> Option<u128> {
    match value {
        Value::Number(n) => n.as_u64().map(u128::from),
        Value::String(s) => match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(h) if !h.is_empty() => u128::from_str_radix(h, 16).ok(),
            Some(_) => None,
            None => s.parse().ok(),
        },
        _ => None,
    }
}

fn same(a: &Value, b: &Value, compare: Compare) -> bool {
    match compare {
        Compare::Bytes => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => hex_norm(x) == hex_norm(y),
            _ => false,
        },
        Compare::Loose => {
            if let (Some(x), Some(y)) = (as_quantity(a), as_quantity(b)) {
                return x == y;
            }
            match (a, b) {
                (Value::String(x), Value::String(y)) => x.eq_ignore_ascii_case(y),
                (Value::Array(x), Value::Array(y)) => {
                    x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q, compare))
                }
                (Value::Object(x), Value::Object(y)) => {
                    x.len() == y.len()
                        && x.iter()
                            .all(|(k, v)| y.get(k).is_some_and(|w| same(v, w, compare)))
                }
                _ => a == b,
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub(crate) fn addr(last: u8) -> Address {
        let mut a = [0x11u8; 20];
        a[19] = last;
        Address(a)
    }

    pub(crate) fn consortium() -> Consortium {
        let mut storage = BTreeMap::new();
        storage.insert([0u8; 32], {
            let mut v = [0u8; 32];
            v[31] = 3;
            v
        });
        let contract = ContractAccount {
            address: Address([0x42; 20]),
            runtime_code: vec![0x60, 0x00, 0x60, 0x00, 0xf3],
            storage,
            constructor: Some(vec![0x60, 0x05, 0x60, 0x0c, 0x60, 0x00, 0x39]),
        };
        let mut c = Consortium::new(vec![addr(3), addr(1), addr(2)], contract);
        c.admin = Some(Admin {
            address: addr(0xaa),
            balance_wei: 1_000_000_000_000_000_000,
        });
        c
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_valid_for_every_flavour() {
        let c = consortium();
        for f in Flavour::ALL {
            assert_eq!(c.validate(f), vec![], "{f}");
        }
    }

    #[test]
    fn network_id_bounds() {
        let mut c = consortium();
        for (id, ok) in [
            (4, false),
            (5, true),
            (999_999_999, true),
            (1_000_000_000, false),
        ] {
            c.network_id = id;
            assert_eq!(c.validate(Flavour::Clique).is_empty(), ok, "id {id}");
        }
    }

    #[test]
    fn validation_reports_every_problem() {
        let mut c = consortium();
        c.network_id = 1;
        c.validators = vec![addr(1), addr(1), addr(1), c.contract.address];
        c.contract.address = Address([0; 20]);
        c.validators.push(c.contract.address);
        c.block_period_secs = 0;
        c.epoch = 0;
        c.gas_limit = Some(10);
        c.contract.runtime_code.clear();
        c.base = Some(json!([1, 2]));
        let problems = c.validate(Flavour::Qbft);
        let text = Problems(problems.clone()).to_string();
        assert_eq!(problems.len(), 9, "{text}");
        assert!(text.contains("network id 1 is out of range 5..=999999999"));
        assert_eq!(
            problems
                .iter()
                .filter(|p| matches!(p, Problem::DuplicateValidator { .. }))
                .count(),
            1,
            "a thrice-listed validator is reported once"
        );
        assert!(!text.contains('\n'), "one line: {text}");
    }

    #[test]
    fn constructor_form_needs_init_code_and_code_form_needs_runtime_code() {
        let mut c = consortium();
        c.contract.constructor = None;
        assert_eq!(c.validate(Flavour::Aura), vec![Problem::MissingConstructor]);
        assert!(c.validate(Flavour::Clique).is_empty());
        c.aura.contract_form = AuraContractForm::CodeAndStorage;
        assert!(c.validate(Flavour::Aura).is_empty());
        c.contract.runtime_code.clear();
        assert_eq!(
            c.validate(Flavour::Aura),
            vec![Problem::EmptyRuntimeCode {
                flavour: Flavour::Aura
            }]
        );
    }

    #[test]
    fn contract_must_be_clear_of_precompiles() {
        let mut c = consortium();
        let mut a = [0u8; 20];
        a[19] = 6; // the 2018 spec's address: bn256 add since Byzantium
        c.contract.address = Address(a);
        assert!(matches!(
            c.validate(Flavour::Aura)[..],
            [Problem::ContractAddressReserved { .. }]
        ));
        a[18] = 1; // 0x…0106: P-256 is at 0x100, so this block stays reserved
        c.contract.address = Address(a);
        assert!(!c.validate(Flavour::Aura).is_empty());
        c.contract.address = crate::contracts::CONTRACT_ADDRESS; // 0x…2000
        assert!(c.validate(Flavour::Aura).is_empty());
    }

    #[test]
    fn loose_comparison_matches_numbers_across_spellings() {
        assert!(same(&json!(16), &json!("0x10"), Compare::Loose));
        assert!(same(&json!("16"), &json!("0x10"), Compare::Loose));
        assert!(!same(&json!(17), &json!("0x10"), Compare::Loose));
        assert!(same(&json!("0xAbC"), &json!("0xabc"), Compare::Loose));
        assert!(!same(&json!("0x00ab"), &json!("0xab"), Compare::Bytes));
        assert!(same(&json!("0xAB"), &json!("0xab"), Compare::Bytes));
    }

    #[test]
    fn storage_comparison_ignores_padding_and_zero_slots() {
        let a = json!({"0x00": "0x0001", "0x05": "0x0"});
        let b = json!({"0x0000000000000000000000000000000000000000000000000000000000000000":
            "0x0000000000000000000000000000000000000000000000000000000000000001"});
        assert_eq!(storage_norm(Some(&a)), storage_norm(Some(&b)));
        assert_ne!(storage_norm(Some(&a)), storage_norm(None));
    }

    #[test]
    fn flavour_round_trips_through_text() {
        for f in Flavour::ALL {
            assert_eq!(f.as_str().parse::<Flavour>(), Ok(f));
        }
        assert!("ibft".parse::<Flavour>().is_err());
    }
}
