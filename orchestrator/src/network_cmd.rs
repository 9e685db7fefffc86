//! `orchestrator init` and `orchestrator join`: a member's identities into the stores, its
//! genesis files and its network-info document.
//!
//! Both commands run in the same order, so that bad input writes nothing and an interrupted
//! run is completed by the next:
//!
//! 1. settle the settings (flags over `--config`), listing every problem at once (exit 64);
//! 2. read the inputs (base genesis, password, another member's network info) and render
//!    the genesis once with stand-in validators, so a malformed base genesis is refused
//!    before any store is touched;
//! 3. provision the identities (create-if-absent; existing keys are checked, never replaced);
//! 4. render the outputs and compare them with what `--out` already holds: every file is
//!    either absent, or byte-identical, or the run stops (exit 73) before writing any;
//! 5. write the missing files atomically, and report what was created and what existed.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use shared::azure::{AzureOptions, AzureTable};
use shared::config::{Field, Report, Section};
use shared::keystore::KdfParams;
use shared::net::{self, Url};
use shared::spec::{LeaseStoreSpec, SecretStoreSpec};
use shared::{fsutil, Address};

use crate::contracts::{self, ChangeMode, Member};
use crate::exit::Failure;
use crate::genesis::{
    self, Admin, AuraContractForm, Consortium, ContractAccount, Flavour, NETWORK_ID_RANGE,
};
use crate::leased_check;
use crate::networkinfo::{self, printable, AddressList, MemberInfo, NetworkInfo};
use crate::provision::{
    self, Identity, Plan, Progress, RateLimiter, SecretFormat, MAX_VALIDATORS, MIN_VALIDATORS,
};

/// Longest base genesis or config file accepted.
const MAX_INPUT_FILE: usize = 4 << 20;
/// Time allowed to connect, and between two reads, when fetching network info over HTTP.
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);
/// Time allowed for the whole fetch: a server that trickles its answer is cut off.
const FETCH_TOTAL_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings shared by `init` and `join`. Every one can also come from `--config`.
#[derive(Debug, Args)]
pub(crate) struct CommonArgs {
    /// TOML file with any of these settings, named as the flags with `_` for `-`
    /// (`member = 0`, `network_id = 10101010`, `flavours = ["aura", "clique"]`,
    /// `[base_genesis] aura = "base.json"`). Flags given on the command line win. Relative
    /// paths are taken from the working directory. An `[azure]` table says how to reach
    /// keyvault: and blob: stores: `credential = "developer-tools"` (az login; the
    /// default is "managed-identity"), or "client-secret" with `tenant_id`, `client_id` and
    /// `client_secret_file`; `ca_file` for an extra CA; `connection_string` for the
    /// storage emulator only (or AZURE_STORAGE_CONNECTION_STRING). See the README.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// This member's number; its identities are named m<MEMBER>-v<INDEX>.
    #[arg(long, value_name = "N")]
    member: Option<u32>,
    /// How many validator identities this member runs (2–15).
    #[arg(long, value_name = "N")]
    validators: Option<u32>,
    /// This member's admin account (EIP-55 checksummed if mixed case). It votes in the
    /// governance contract.
    #[arg(long, value_name = "0xADDRESS")]
    admin: Option<String>,
    /// Secret store for the keys: dir:PATH or keyvault:https://NAME.vault.azure.net.
    #[arg(long, value_name = "SPEC")]
    secrets: Option<String>,
    /// Lease store for the lease records: sqlite:PATH or blob:https://ACCOUNT.blob.core.windows.net/CONTAINER.
    #[arg(long, value_name = "SPEC")]
    leases: Option<String>,
    /// Output directory for genesis/, networkinfo.json and deployment-output.json.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// enode URL of a node that accepts peers, published in networkinfo.json. Repeatable.
    #[arg(long = "bootnode", value_name = "ENODE")]
    bootnodes: Vec<String>,
    /// How keys are stored: raw-hex (the secret store protects them) or keystore-v3
    /// (encrypted under --password-file; the KDF runs on every core).
    #[arg(long, value_enum)]
    secret_format: Option<SecretFormatArg>,
    /// Password for keystore-v3 secrets (one trailing newline is ignored).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// KDF for keystore-v3 secrets: scrypt n=262144 r=8 p=1 (default) or pbkdf2 600,000 rounds.
    #[arg(long, value_enum)]
    kdf: Option<KdfArg>,
    /// The leased.toml of this member's VMs, to warn if its [identity] pool or [client]
    /// password settings cannot use the secrets stored here.
    #[arg(long, value_name = "FILE")]
    leased_config: Option<PathBuf>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Also publish networkinfo.json into the lease store, for `leased` to serve at
    /// /networkinfo: a blob beside the lease records on blob:, a file beside the SQLite
    /// file on sqlite:.
    #[arg(long)]
    publish: bool,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Chain id and network id (5–999999999) [default: 10101010].
    #[arg(long, value_name = "ID")]
    network_id: Option<u64>,
    /// Genesis flavour to render; repeatable [default: all three].
    #[arg(long = "flavour", value_enum, value_name = "FLAVOUR")]
    flavours: Vec<FlavourArg>,
    /// Prefund the admin account with this many wei at genesis.
    #[arg(long, value_name = "WEI")]
    admin_balance_wei: Option<u128>,
    /// AuRa step duration, Clique period and QBFT block period, in seconds [default: 5].
    #[arg(long, value_name = "SECONDS")]
    block_period_secs: Option<u64>,
    /// How the AuRa chainspec carries the governance contract: its init code run by the
    /// client at genesis (constructor), or its runtime code and storage (code-and-storage).
    #[arg(long, value_enum, value_name = "FORM")]
    aura_contract_form: Option<AuraFormArg>,
    /// A genesis of that flavour to render into (its other settings are kept); repeatable,
    /// e.g. --base-genesis qbft=besu-base.json.
    #[arg(long = "base-genesis", value_name = "FLAVOUR=FILE")]
    base_genesis: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct JoinArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Another member's networkinfo.json: a file path, or an https:// (or http://) URL;
    /// https:// trusts the system's CAs, or those SSL_CERT_FILE names. Untrusted: it is
    /// size-limited (1 MiB) and checked against the schema before use.
    #[arg(long, value_name = "URL_OR_PATH")]
    consortium_data: Option<String>,
    /// Refuse the consortium data unless its network id is this one.
    #[arg(long, value_name = "ID")]
    network_id: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum SecretFormatArg {
    RawHex,
    KeystoreV3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum KdfArg {
    Scrypt,
    Pbkdf2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum AuraFormArg {
    Constructor,
    CodeAndStorage,
}

/// In `Flavour`'s order, so that a `[base_genesis]` table can be keyed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum FlavourArg {
    Aura,
    Qbft,
    Clique,
}

impl From<FlavourArg> for Flavour {
    fn from(f: FlavourArg) -> Self {
        match f {
            FlavourArg::Aura => Flavour::Aura,
            FlavourArg::Qbft => Flavour::Qbft,
            FlavourArg::Clique => Flavour::Clique,
        }
    }
}

/// The `--config` file as written: the flags' settings, all optional ([`shared::config`]).
#[derive(Default, Deserialize)]
struct ConfigFile {
    member: Field<u32>,
    validators: Field<u32>,
    admin: Field<String>,
    secrets: Field<String>,
    leases: Field<String>,
    out: Field<PathBuf>,
    bootnodes: Field<Vec<String>>,
    secret_format: Field<SecretFormatArg>,
    password_file: Field<PathBuf>,
    kdf: Field<KdfArg>,
    leased_config: Field<PathBuf>,
    network_id: Field<u64>,
    flavours: Field<Vec<FlavourArg>>,
    admin_balance_wei: Field<u128>,
    block_period_secs: Field<u64>,
    aura_contract_form: Field<AuraFormArg>,
    base_genesis: Field<BTreeMap<FlavourArg, PathBuf>>,
    consortium_data: Field<String>,
    azure: Section<AzureTable>,
}

/// The `--config` file's settings that are set and of the right type.
#[derive(Debug, Default)]
struct FileConfig {
    member: Option<u32>,
    validators: Option<u32>,
    admin: Option<String>,
    secrets: Option<String>,
    leases: Option<String>,
    out: Option<PathBuf>,
    bootnodes: Option<Vec<String>>,
    secret_format: Option<SecretFormatArg>,
    password_file: Option<PathBuf>,
    kdf: Option<KdfArg>,
    leased_config: Option<PathBuf>,
    network_id: Option<u64>,
    flavours: Option<Vec<FlavourArg>>,
    admin_balance_wei: Option<u128>,
    block_period_secs: Option<u64>,
    aura_contract_form: Option<AuraFormArg>,
    base_genesis: Option<BTreeMap<FlavourArg, PathBuf>>,
    consortium_data: Option<String>,
    /// `[azure]`: how to reach Key Vault and Blob Storage (shared::azure::AzureOptions).
    azure: Option<AzureOptions>,
    /// The keys of the settings the file has wrong: reported already, so not reported
    /// again as missing.
    wrong: Vec<String>,
}

impl FileConfig {
    fn is_wrong(&self, key: &str) -> bool {
        self.wrong.iter().any(|k| k == key)
    }
}

/// Settings every command needs, checked.
struct Settled {
    member: u32,
    validators: u32,
    admin: Address,
    secrets: SecretStoreSpec,
    secrets_text: String,
    leases: LeaseStoreSpec,
    leases_text: String,
    out: PathBuf,
    bootnodes: Vec<String>,
    format: SecretFormat,
    leased_config: Option<PathBuf>,
    json: bool,
    publish: bool,
    azure: AzureOptions,
}

/// Reads `--config`, if given: the settings it has right, and a line for each problem
/// (wrong type, unknown key, bad `[azure]` value), for the caller to list with its own.
/// Only a file that cannot be read or parsed at all fails here.
fn load_config(path: Option<&Path>) -> Result<(FileConfig, Vec<String>), Failure> {
    let Some(path) = path else {
        return Ok((FileConfig::default(), Vec::new()));
    };
    let bytes = read_input(path, "--config")?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Failure::usage(format!("{}: is not UTF-8 text", path.display())))?;
    let table = shared::config::parse(text)
        .map_err(|p| Failure::usage(format!("{}: {p}", path.display())))?;
    let mut r = Report::default();
    let (f, unknown) = r.open("", Section::<ConfigFile>::read(table));
    let file = FileConfig {
        member: r.optional("member", f.member).flatten(),
        validators: r.optional("validators", f.validators).flatten(),
        admin: r.optional("admin", f.admin).flatten(),
        secrets: r.optional("secrets", f.secrets).flatten(),
        leases: r.optional("leases", f.leases).flatten(),
        out: r.optional("out", f.out).flatten(),
        bootnodes: r.optional("bootnodes", f.bootnodes).flatten(),
        secret_format: r.optional("secret_format", f.secret_format).flatten(),
        password_file: r.optional("password_file", f.password_file).flatten(),
        kdf: r.optional("kdf", f.kdf).flatten(),
        leased_config: r.optional("leased_config", f.leased_config).flatten(),
        network_id: r.optional("network_id", f.network_id).flatten(),
        flavours: r.optional("flavours", f.flavours).flatten(),
        admin_balance_wei: r
            .optional("admin_balance_wei", f.admin_balance_wei)
            .flatten(),
        block_period_secs: r
            .optional("block_period_secs", f.block_period_secs)
            .flatten(),
        aura_contract_form: r
            .optional("aura_contract_form", f.aura_contract_form)
            .flatten(),
        base_genesis: r.optional("base_genesis", f.base_genesis).flatten(),
        consortium_data: r.optional("consortium_data", f.consortium_data).flatten(),
        azure: AzureOptions::read(&mut r, "azure", f.azure),
        wrong: Vec::new(),
    };
    r.finish(unknown);
    let problems = r.into_problems();
    let lines = problems
        .iter()
        .map(|p| format!("{}: {p}", path.display()))
        .collect();
    let wrong = problems.into_iter().filter_map(|p| p.key).collect();
    Ok((FileConfig { wrong, ..file }, lines))
}

/// The `[azure]` settings of a `--config` file (the defaults without one); any problem in
/// the file is a usage error.
pub(crate) fn azure_options(path: Option<&Path>) -> Result<AzureOptions, Failure> {
    let (file, problems) = load_config(path)?;
    if let Some(first) = problems.first() {
        return Err(Failure::usage(first.clone()));
    }
    Ok(file.azure.unwrap_or_default())
}

/// Flags over config file; every missing or bad setting is collected.
fn settle(args: CommonArgs, file: &FileConfig, problems: &mut Vec<String>) -> Option<Settled> {
    let member = args.member.or(file.member);
    let validators = args.validators.or(file.validators);
    let admin = args.admin.or_else(|| file.admin.clone());
    let secrets = args.secrets.or_else(|| file.secrets.clone());
    let leases = args.leases.or_else(|| file.leases.clone());
    let out = args.out.or_else(|| file.out.clone());
    let bootnodes = if args.bootnodes.is_empty() {
        file.bootnodes.clone().unwrap_or_default()
    } else {
        args.bootnodes
    };
    let format = args
        .secret_format
        .or(file.secret_format)
        .unwrap_or(SecretFormatArg::RawHex);
    let password_file = args.password_file.or_else(|| file.password_file.clone());
    let kdf = args.kdf.or(file.kdf);
    let leased_config = args.leased_config.or_else(|| file.leased_config.clone());

    // A setting the file has wrong is reported as such, not again as missing.
    let require = |name: &str, problems: &mut Vec<String>| {
        let key = name.replace('-', "_");
        if !file.is_wrong(&key) {
            problems.push(format!("--{name} is required (or `{key}` in --config)"));
        }
    };
    if member.is_none() {
        require("member", problems);
    }
    match validators {
        None => require("validators", problems),
        Some(n) if !(MIN_VALIDATORS..=MAX_VALIDATORS).contains(&n) => problems.push(format!(
            "--validators {n} is outside {MIN_VALIDATORS}-{MAX_VALIDATORS}"
        )),
        Some(_) => {}
    }
    let admin = match admin {
        None => {
            require("admin", problems);
            None
        }
        Some(text) => match text.parse::<Address>() {
            Ok(a) if a == Address([0; 20]) => {
                problems.push("--admin cannot be the zero address".into());
                None
            }
            Ok(a) => Some(a),
            Err(e) => {
                problems.push(format!("--admin: {e}"));
                None
            }
        },
    };
    let secrets_spec = match &secrets {
        None => {
            require("secrets", problems);
            None
        }
        Some(s) => s
            .parse::<SecretStoreSpec>()
            .map_err(|e| problems.push(format!("--secrets: {e}")))
            .ok(),
    };
    let leases_spec = match &leases {
        None => {
            require("leases", problems);
            None
        }
        Some(s) => s
            .parse::<LeaseStoreSpec>()
            .map_err(|e| problems.push(format!("--leases: {e}")))
            .ok(),
    };
    if out.is_none() {
        require("out", problems);
    }
    let azure = file.azure.clone().unwrap_or_default();
    let uses_azure = secrets_spec.as_ref().is_some_and(SecretStoreSpec::is_azure)
        || leases_spec.as_ref().is_some_and(LeaseStoreSpec::is_azure);
    if uses_azure {
        problems.extend(azure.problem_lines());
    }
    for (i, b) in bootnodes.iter().enumerate() {
        if !networkinfo::is_enode_url(b) {
            problems.push(format!(
                "bootnode {} is not an enode://<128 hex digits>@host:port URL",
                i + 1
            ));
        }
    }
    let format = match (format, password_file, kdf) {
        (SecretFormatArg::RawHex, None, None) => Some(SecretFormat::RawHex),
        (SecretFormatArg::RawHex, _, _) => {
            problems
                .push("--password-file and --kdf apply only to --secret-format keystore-v3".into());
            None
        }
        (SecretFormatArg::KeystoreV3, None, _) => {
            problems.push("--secret-format keystore-v3 needs --password-file".into());
            None
        }
        (SecretFormatArg::KeystoreV3, Some(path), kdf) => match read_password(&path) {
            Ok(password) => Some(SecretFormat::KeystoreV3 {
                password,
                kdf: match kdf.unwrap_or(KdfArg::Scrypt) {
                    KdfArg::Scrypt => KdfParams::scrypt_default(),
                    KdfArg::Pbkdf2 => KdfParams::pbkdf2_default(),
                },
            }),
            Err(message) => {
                problems.push(message);
                None
            }
        },
    };
    Some(Settled {
        member: member?,
        validators: validators?,
        admin: admin?,
        secrets: secrets_spec?,
        secrets_text: secrets?,
        leases: leases_spec?,
        leases_text: leases?,
        out: out?,
        bootnodes,
        format: format?,
        leased_config,
        json: args.json,
        publish: args.publish,
        azure,
    })
}

/// Warns when the secrets about to be stored do not suit the member's `leased` config.
fn warn_about_leased(settled: &Settled) {
    let keystores = matches!(settled.format, SecretFormat::KeystoreV3 { .. });
    for w in leased_check::warnings(settled.member, keystores, settled.leased_config.as_deref()) {
        tracing::warn!("{w}");
    }
}

fn read_password(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let bytes = fsutil::read_password_file(path)
        .map_err(|e| format!("--password-file {}: {e}", path.display()))?;
    if bytes.is_empty() {
        return Err(format!("--password-file {}: is empty", path.display()));
    }
    Ok(bytes)
}

fn read_input(path: &Path, what: &str) -> Result<Vec<u8>, Failure> {
    fsutil::read_limited(path, MAX_INPUT_FILE).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => {
            Failure::no_input(format!("{what} {}: {e}", path.display()))
        }
        _ => Failure::usage(format!("{what} {}: {e}", path.display())),
    })
}

fn problems_failure(problems: Vec<String>) -> Failure {
    Failure::usage(problems.join("; "))
}

/// The governance contract account for `flavour`, with `members` in its initial state.
fn contract_account(flavour: Flavour, first: &Member) -> Result<ContractAccount, Failure> {
    let mode = match flavour {
        Flavour::Aura => ChangeMode::AwaitFinalize,
        // Besu never calls finalizeChange; Clique ignores the contract's set entirely.
        Flavour::Qbft | Flavour::Clique => ChangeMode::Immediate,
    };
    let usage = |e: contracts::InitialStateError| Failure::usage(e.to_string());
    Ok(ContractAccount {
        address: contracts::CONTRACT_ADDRESS,
        runtime_code: contracts::runtime_code(),
        storage: contracts::storage_for(std::slice::from_ref(first), mode).map_err(usage)?,
        constructor: Some(contracts::deploy_code(first, mode).map_err(usage)?),
    })
}

struct GenesisInputs {
    network_id: u64,
    flavours: Vec<Flavour>,
    admin_balance_wei: Option<u128>,
    block_period_secs: Option<u64>,
    aura_form: AuraContractForm,
    bases: BTreeMap<Flavour, Value>,
}

fn render_all(
    inputs: &GenesisInputs,
    admin: Address,
    validators: &[Address],
) -> Result<BTreeMap<Flavour, String>, Failure> {
    let first = Member {
        admin,
        validators: validators.to_vec(),
    };
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for &flavour in &inputs.flavours {
        let mut c = Consortium::new(validators.to_vec(), contract_account(flavour, &first)?);
        c.network_id = inputs.network_id;
        c.admin = inputs.admin_balance_wei.map(|balance_wei| Admin {
            address: admin,
            balance_wei,
        });
        if let Some(p) = inputs.block_period_secs {
            c.block_period_secs = p;
        }
        c.aura.contract_form = inputs.aura_form;
        c.base = inputs.bases.get(&flavour).cloned();
        match genesis::render(&c, flavour) {
            Ok(doc) => {
                let mut text = serde_json::to_string_pretty(&doc).expect("genesis serialises");
                text.push('\n');
                out.insert(flavour, text);
            }
            Err(ps) => problems.push(format!("{flavour} genesis: {ps}")),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems_failure(problems))
    }
}

/// Stand-in validators for the dry render: distinct, non-zero, clear of the precompiles.
fn stand_in_validators(n: u32) -> Vec<Address> {
    (0..n)
        .map(|i| {
            let mut a = [0x11u8; 20];
            a[19] = i as u8;
            Address(a)
        })
        .collect()
}

/// `orchestrator init`.
pub(crate) fn run_init(args: InitArgs) -> Result<(), Failure> {
    let (file, mut problems) = load_config(args.common.config.as_deref())?;
    if file.consortium_data.is_some() {
        problems.push("consortium_data in --config belongs to `join`, not `init`".into());
    }
    let network_id = args
        .network_id
        .or(file.network_id)
        .unwrap_or(genesis::DEFAULT_NETWORK_ID);
    if !NETWORK_ID_RANGE.contains(&network_id) {
        problems.push(format!(
            "--network-id {network_id} is outside {}..={}",
            NETWORK_ID_RANGE.start(),
            NETWORK_ID_RANGE.end()
        ));
    }
    let mut flavours: Vec<Flavour> = if args.flavours.is_empty() {
        file.flavours
            .clone()
            .map(|f| f.into_iter().map(Flavour::from).collect())
            .unwrap_or_else(|| Flavour::ALL.to_vec())
    } else {
        args.flavours.iter().map(|f| Flavour::from(*f)).collect()
    };
    flavours.sort();
    flavours.dedup();
    if flavours.is_empty() {
        problems.push("flavours is empty; name at least one of aura, qbft, clique".into());
    }
    let mut base_paths: BTreeMap<Flavour, PathBuf> = file
        .base_genesis
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(f, p)| (Flavour::from(f), p))
        .collect();
    for spec in &args.base_genesis {
        match spec.split_once('=') {
            Some((f, path)) if !path.is_empty() => match f.parse::<Flavour>() {
                Ok(f) => {
                    base_paths.insert(f, PathBuf::from(path));
                }
                Err(e) => problems.push(format!("--base-genesis {f}=…: {e}")),
            },
            _ => problems.push(format!(
                "--base-genesis takes FLAVOUR=FILE, e.g. qbft=base.json; got {:?}",
                spec.chars().take(80).collect::<String>()
            )),
        }
    }
    for f in base_paths.keys() {
        if !flavours.contains(f) {
            problems.push(format!(
                "--base-genesis {f}=… is given, but {f} is not among the flavours rendered"
            ));
        }
    }
    let block_period_secs = args.block_period_secs.or(file.block_period_secs);
    let admin_balance_wei = args.admin_balance_wei.or(file.admin_balance_wei);
    let settled = settle(args.common, &file, &mut problems);
    if !problems.is_empty() {
        return Err(problems_failure(problems));
    }
    let settled = settled.expect("no problems means every setting is present");
    warn_about_leased(&settled);

    let mut bases = BTreeMap::new();
    for (flavour, path) in &base_paths {
        let bytes = read_input(path, "--base-genesis")?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Failure::usage(format!(
                "--base-genesis {flavour}={}: not JSON (line {}, column {})",
                path.display(),
                e.line(),
                e.column()
            ))
        })?;
        bases.insert(*flavour, value);
    }
    let inputs = GenesisInputs {
        network_id,
        flavours,
        admin_balance_wei,
        block_period_secs,
        aura_form: match args.aura_contract_form.or(file.aura_contract_form) {
            None | Some(AuraFormArg::Constructor) => AuraContractForm::Constructor,
            Some(AuraFormArg::CodeAndStorage) => AuraContractForm::CodeAndStorage,
        },
        bases,
    };
    // Dry run: a base genesis or setting the renderer refuses stops us before any write.
    render_all(
        &inputs,
        settled.admin,
        &stand_in_validators(settled.validators),
    )?;

    let plan = Plan {
        member: settled.member,
        validators: settled.validators,
        network_id,
        admin: settled.admin,
        format: settled.format.clone(),
    };
    let identities = provision_identities(&settled, &plan)?;
    let validators: Vec<Address> = identities.iter().map(|i| i.address).collect();
    let genesis = render_all(&inputs, settled.admin, &validators)?;

    let info = NetworkInfo {
        major_version: networkinfo::MAJOR_VERSION,
        minor_version: networkinfo::MINOR_VERSION,
        bootnodes: settled.bootnodes.clone(),
        val_set_contract: contracts::CONTRACT_ADDRESS,
        admin_contract: contracts::CONTRACT_ADDRESS,
        admin_contract_abi: compact_abi(),
        parity_spec: genesis.get(&Flavour::Aura).cloned().unwrap_or_default(),
        error_message: String::new(),
        address_list: AddressList {
            addresses: validators.clone(),
        },
        network_id,
        members: vec![MemberInfo {
            member: settled.member,
            admin: settled.admin,
            validators: validators.clone(),
        }],
        genesis: genesis
            .iter()
            .map(|(f, text)| (f.to_string(), text.clone()))
            .collect(),
    };
    finish(&settled, network_id, &identities, &genesis, &info, None)
}

/// `orchestrator join`.
pub(crate) fn run_join(args: JoinArgs) -> Result<(), Failure> {
    let (file, mut problems) = load_config(args.common.config.as_deref())?;
    for (set, name) in [
        (file.flavours.is_some(), "flavours"),
        (file.base_genesis.is_some(), "base_genesis"),
        (file.admin_balance_wei.is_some(), "admin_balance_wei"),
        (file.block_period_secs.is_some(), "block_period_secs"),
        (file.aura_contract_form.is_some(), "aura_contract_form"),
    ] {
        if set {
            problems.push(format!(
                "{name} in --config belongs to `init`; a joining member takes the genesis from the consortium data"
            ));
        }
    }
    let wanted_network = args.network_id.or(file.network_id);
    let source = args
        .consortium_data
        .or_else(|| file.consortium_data.clone());
    if source.is_none() && !file.is_wrong("consortium_data") {
        problems.push("--consortium-data is required (or `consortium_data` in --config)".into());
    }
    let settled = settle(args.common, &file, &mut problems);
    if !problems.is_empty() {
        return Err(problems_failure(problems));
    }
    let settled = settled.expect("no problems means every setting is present");
    warn_about_leased(&settled);
    let source = source.expect("checked above");

    let bytes = fetch_consortium_data(&source)?;
    let mut info = networkinfo::parse_untrusted(&bytes).map_err(|ps| {
        Failure::usage(format!(
            "consortium data {}: {}",
            shown_source(&source),
            ps.join("; ")
        ))
    })?;
    let mut problems = Vec::new();
    if let Some(id) = wanted_network {
        if id != info.network_id {
            problems.push(format!(
                "the consortium data is for network {}, not --network-id {id}",
                info.network_id
            ));
        }
    }
    let cap = info.first_member().validators.len() as u32;
    if settled.validators > cap {
        problems.push(format!(
            "--validators {} is more than the first member's {cap}; the governance contract would refuse the extra ones",
            settled.validators
        ));
    }
    let existing = info
        .members
        .iter()
        .find(|m| m.member == settled.member)
        .cloned();
    match &existing {
        Some(m) if m.admin != settled.admin => problems.push(format!(
            "member {} is already in the consortium with admin {}",
            m.member, m.admin
        )),
        Some(m) if m.validators.len() != settled.validators as usize => problems.push(format!(
            "member {} is already in the consortium with {} validators",
            m.member,
            m.validators.len()
        )),
        Some(_) => {}
        None => {
            if let Some(m) = info.members.iter().find(|m| m.admin == settled.admin) {
                problems.push(format!(
                    "admin {} already speaks for member {}",
                    settled.admin, m.member
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems_failure(problems));
    }

    let plan = Plan {
        member: settled.member,
        validators: settled.validators,
        network_id: info.network_id,
        admin: settled.admin,
        format: settled.format.clone(),
    };
    let identities = provision_identities(&settled, &plan)?;
    let validators: Vec<Address> = identities.iter().map(|i| i.address).collect();
    match existing {
        Some(m) if m.validators != validators => {
            return Err(Failure::data(format!(
                "member {} is listed in the consortium data with other validators than the secret store holds",
                m.member
            )))
        }
        Some(_) => {}
        None => {
            if let Some(a) = validators
                .iter()
                .find(|a| info.address_list.addresses.contains(a))
            {
                return Err(Failure::data(format!(
                    "validator {a} is already listed by another member"
                )));
            }
            info.members.push(MemberInfo {
                member: settled.member,
                admin: settled.admin,
                validators: validators.clone(),
            });
            info.address_list.addresses.extend(validators.iter().copied());
        }
    }
    for b in &settled.bootnodes {
        if !info.bootnodes.contains(b) {
            info.bootnodes.push(b.clone());
        }
    }
    let genesis: BTreeMap<Flavour, String> = info
        .genesis
        .iter()
        .map(|(f, text)| (f.parse().expect("checked by parse_untrusted"), text.clone()))
        .collect();
    let network_id = info.network_id;
    finish(
        &settled,
        network_id,
        &identities,
        &genesis,
        &info,
        Some(&validators),
    )
}

fn compact_abi() -> String {
    let abi: Value = serde_json::from_str(contracts::ABI_JSON).expect("committed ABI is JSON");
    serde_json::to_string(&abi).expect("ABI serialises")
}

fn provision_identities(settled: &Settled, plan: &Plan) -> Result<Vec<Identity>, Failure> {
    let secrets = settled
        .secrets
        .open(&settled.azure)
        .map_err(|e| Failure::cant_create(format!("--secrets {}: {e}", settled.secrets_text)))?;
    let leases = settled
        .leases
        .open(&settled.azure)
        .map_err(|e| Failure::cant_create(format!("--leases {}: {e}", settled.leases_text)))?;
    let runtime = crate::runtime()?;
    let mut progress = StderrProgress::new();
    let result = runtime.block_on(provision::provision(
        plan,
        secrets.as_ref(),
        leases.as_ref(),
        &mut RateLimiter::key_vault_creates(),
        &mut progress,
    ));
    result.map_err(|e| match e {
        provision::ProvisionError::ValidatorCount(_) => Failure::usage(e.to_string()),
        provision::ProvisionError::Conflict { .. }
        | provision::ProvisionError::FormatConflict { .. } => Failure::usage(e.to_string()),
        provision::ProvisionError::AddressMismatch { .. }
        | provision::ProvisionError::BadSecret { .. } => Failure::data(e.to_string()),
        _ => Failure::io(e.to_string()),
    })
}

/// `--publish`: the network info into the lease store, replacing what was there.
fn publish(settled: &Settled, info: &NetworkInfo) -> Result<(), Failure> {
    let leases = settled
        .leases
        .open(&settled.azure)
        .map_err(|e| Failure::cant_create(format!("--leases {}: {e}", settled.leases_text)))?;
    let runtime = crate::runtime()?;
    runtime
        .block_on(leases.put_network_info(info.to_pretty_json().as_bytes()))
        .map_err(|e| {
            Failure::cant_create(format!(
                "--publish: the network info could not be published in {}: {e}",
                settled.leases_text
            ))
        })?;
    tracing::info!("published networkinfo.json in {}", settled.leases_text);
    Ok(())
}

/// Progress on stderr: a line per identity, and a counter while keystore KDFs run when
/// stderr is a terminal.
struct StderrProgress {
    terminal: bool,
}

impl StderrProgress {
    fn new() -> Self {
        Self {
            terminal: io::stderr().is_terminal(),
        }
    }
}

impl Progress for StderrProgress {
    fn key_prepared(&mut self, done: usize, total: usize) {
        if self.terminal {
            let mut err = io::stderr().lock();
            let _ = write!(err, "\rpreparing keys (keystore KDF): {done}/{total}");
            if done == total {
                let _ = writeln!(err);
            }
        }
    }

    fn identity_done(&mut self, done: usize, total: usize, identity: &Identity) {
        let key = if identity.key_created {
            "key created"
        } else {
            "key existed"
        };
        let record = if identity.record_created {
            "lease record created"
        } else {
            "lease record existed"
        };
        tracing::info!(
            identity = %identity.id,
            address = %identity.address,
            "[{done}/{total}] {key}, {record}"
        );
    }
}

/// One output file: where, and what it must hold.
struct Output {
    relative: PathBuf,
    contents: String,
}

/// Checks every output against `--out`, writes the missing ones, and reports.
fn finish(
    settled: &Settled,
    network_id: u64,
    identities: &[Identity],
    genesis: &BTreeMap<Flavour, String>,
    info: &NetworkInfo,
    to_vote_in: Option<&[Address]>,
) -> Result<(), Failure> {
    let mut outputs: Vec<Output> = genesis
        .iter()
        .map(|(f, text)| Output {
            relative: Path::new("genesis").join(format!("{f}.json")),
            contents: text.clone(),
        })
        .collect();
    outputs.push(Output {
        relative: "networkinfo.json".into(),
        contents: info.to_pretty_json(),
    });
    let deployment = json!({
        "member": settled.member,
        "networkId": network_id,
        "admin": settled.admin,
        "secrets": settled.secrets_text,
        "leases": settled.leases_text,
        "secretContentType": settled.format.content_type(),
        "identities": identities.iter().map(|i| json!({
            "id": i.id.as_str(),
            "index": i.index,
            "address": i.address,
        })).collect::<Vec<_>>(),
        "validators": identities.iter().map(|i| i.address).collect::<Vec<_>>(),
        "genesis": genesis.keys().map(|f| (f.to_string(), format!("genesis/{f}.json"))).collect::<BTreeMap<_, _>>(),
        "networkInfo": "networkinfo.json",
    });
    let mut text = serde_json::to_string_pretty(&deployment).expect("deployment output serialises");
    text.push('\n');
    outputs.push(Output {
        relative: "deployment-output.json".into(),
        contents: text,
    });

    // All or nothing: a differing file stops the run before anything is written.
    let mut status = Vec::new();
    for o in &outputs {
        let path = settled.out.join(&o.relative);
        match fs::read(&path) {
            Ok(existing) if existing == o.contents.as_bytes() => status.push(false),
            Ok(_) => {
                return Err(Failure::cant_create(format!(
                    "{} exists with other content; it describes another run. Move it away to write this one",
                    path.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => status.push(true),
            Err(e) => return Err(Failure::io(format!("{}: {e}", path.display()))),
        }
    }
    for (o, &missing) in outputs.iter().zip(&status) {
        if missing {
            write_public(&settled.out.join(&o.relative), o.contents.as_bytes())?;
        }
    }
    if settled.publish {
        publish(settled, info)?;
    }

    let created: Vec<&str> = identities
        .iter()
        .filter(|i| i.key_created)
        .map(|i| i.id.as_str())
        .collect();
    let existed: Vec<&str> = identities
        .iter()
        .filter(|i| !i.key_created)
        .map(|i| i.id.as_str())
        .collect();
    let mut stdout = io::stdout().lock();
    let write = |out: &mut io::StdoutLock<'_>, s: String| {
        writeln!(out, "{s}").map_err(|e| Failure::io(format!("stdout: {e}")))
    };
    if settled.json {
        let report = json!({
            "networkId": network_id,
            "member": settled.member,
            "identities": identities.iter().map(|i| json!({
                "id": i.id.as_str(),
                "address": i.address,
                "keyCreated": i.key_created,
                "recordCreated": i.record_created,
            })).collect::<Vec<_>>(),
            "files": outputs.iter().zip(&status).map(|(o, &w)| json!({
                "path": o.relative.to_string_lossy(),
                "written": w,
            })).collect::<Vec<_>>(),
            "voteIn": to_vote_in.map(|v| json!({"admin": settled.admin, "validators": v})),
        });
        write(&mut stdout, report.to_string())?;
        return Ok(());
    }
    write(
        &mut stdout,
        format!(
            "network {network_id}, member {}: {} identities ({} created, {} already existed{})",
            settled.member,
            identities.len(),
            created.len(),
            existed.len(),
            if existed.is_empty() {
                String::new()
            } else {
                format!(": {}", existed.join(", "))
            }
        ),
    )?;
    for (o, &w) in outputs.iter().zip(&status) {
        write(
            &mut stdout,
            format!(
                "{} {}",
                if w { "wrote    " } else { "unchanged" },
                settled.out.join(&o.relative).display()
            ),
        )?;
    }
    if let Some(validators) = to_vote_in {
        write(
            &mut stdout,
            format!(
                "existing admins must vote in admin {} (voteAddAdmin on {}); once in, it adds its validators with addValidator:",
                settled.admin,
                contracts::CONTRACT_ADDRESS
            ),
        )?;
        for v in validators {
            write(&mut stdout, format!("  {v}"))?;
        }
        write(
            &mut stdout,
            format!(
                "  each existing admin: orchestrator governance vote-add-admin {} --rpc URL --key-file ADMIN_KEY\n  \
                 then this member:     orchestrator governance add-validator --secrets {} --member {} --rpc URL --key-file ADMIN_KEY",
                settled.admin, settled.secrets_text, settled.member
            ),
        )?;
    }
    Ok(())
}

/// Mode of the published outputs (genesis, network info, deployment output): world-readable.
const PUBLIC_FILE_MODE: u32 = 0o644;

/// Writes a new world-readable file atomically and durably ([`fsutil::write_new`]), never
/// over a file that appeared meanwhile.
fn write_public(path: &Path, contents: &[u8]) -> Result<(), Failure> {
    let dir = path.parent().expect("outputs live in a directory");
    fs::create_dir_all(dir).map_err(|e| Failure::cant_create(format!("{}: {e}", dir.display())))?;
    fsutil::write_new(path, contents, PUBLIC_FILE_MODE).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => Failure::cant_create(format!(
            "{}: appeared while this run wrote it",
            path.display()
        )),
        io::ErrorKind::NotFound
        | io::ErrorKind::PermissionDenied
        | io::ErrorKind::ReadOnlyFilesystem => {
            Failure::cant_create(format!("{}: {e}", path.display()))
        }
        _ => Failure::io(format!("{}: {e}", path.display())),
    })
}

/// Reads the consortium data from a path or an `http://` or `https://` URL, at most
/// [`networkinfo::MAX_BYTES`] + 1 bytes, so that an oversized document is refused unread.
fn fetch_consortium_data(source: &str) -> Result<Vec<u8>, Failure> {
    let limit = networkinfo::MAX_BYTES;
    if source.starts_with("http://") || source.starts_with("https://") {
        let url = data_api_url(source);
        return fetch_url(&url, limit).map_err(|e| {
            Failure::no_input(format!("--consortium-data {}: {e}", shown_source(&url)))
        });
    }
    let path = Path::new(source);
    let f = fs::File::open(path)
        .map_err(|e| Failure::no_input(format!("--consortium-data {}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    f.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::io(format!("--consortium-data {}: {e}", path.display())))?;
    Ok(bytes)
}

/// The Data API's convention: a consortium data URL is a base, and the document is at
/// `<URL>/networkinfo` (what `leased` serves); a URL that already names a document (its
/// path ends in `/networkinfo` or `.json`, a published blob say) is taken as it is.
fn data_api_url(source: &str) -> String {
    let Ok(mut url) = Url::parse(source) else {
        return source.to_string();
    };
    let path = url.path().trim_end_matches('/').to_string();
    if path.ends_with("/networkinfo") || path.ends_with(".json") {
        return source.to_string();
    }
    url.set_path(&format!("{path}/networkinfo"));
    url.to_string()
}

/// The consortium data's source as error messages show it: printable, cut short, and
/// without a URL's query, which may hold a token (a SAS, for a blob), or its password.
fn shown_source(source: &str) -> String {
    let Ok(mut url) = Url::parse(source) else {
        return printable(source);
    };
    if url.password().is_none() && url.query().is_none() {
        return printable(source);
    }
    if url.password().is_some() {
        let _ = url.set_password(Some("redacted"));
    }
    if url.query().is_none() {
        return printable(url.as_str());
    }
    url.set_query(None);
    url.set_fragment(None);
    printable(&format!("{url}?<query redacted>"))
}

/// One GET with the shared transport ([`shared::net`]): status 200 only, no redirects, a
/// deadline on connecting, on every read and on the whole exchange, and the body read up
/// to `limit` + 1 bytes and no further. `https://` trusts the system's roots (or those
/// `SSL_CERT_FILE` names); `http://` needs no CA bundle.
fn fetch_url(text: &str, limit: usize) -> Result<Vec<u8>, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if url.host().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err("the URL needs a host, and no user info".into());
    }
    let builder = match url.scheme() {
        "https" => net::https_client_builder(None, FETCH_TIMEOUT, FETCH_TOTAL_TIMEOUT)?,
        _ => net::http_client_builder(FETCH_TIMEOUT, FETCH_TOTAL_TIMEOUT)?,
    };
    // A proxy (HTTPS_PROXY and the like) cannot reach this machine's loopback, and a fetch
    // from loopback must not leave the machine.
    let builder = if net::is_loopback(&url) {
        builder.no_proxy()
    } else {
        builder
    };
    let client = builder
        .read_timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|e| format!("HTTP client set-up failed: {}", describe_http(e)))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let mut response = client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(describe_http)?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(format!("the server answered {status}"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe_http)? {
            body.extend_from_slice(&chunk);
            if body.len() > limit {
                // Enough to know it is too large; the rest is never read.
                body.truncate(limit + 1);
                break;
            }
        }
        Ok(body)
    })
}

/// A reqwest error on one line, its causes included, without the URL (shown once, by the
/// caller, without its query).
fn describe_http(e: reqwest::Error) -> String {
    let e = e.without_url();
    if e.is_timeout() {
        return format!(
            "no answer within {} s (or the transfer took longer than {} s)",
            FETCH_TIMEOUT.as_secs(),
            FETCH_TOTAL_TIMEOUT.as_secs()
        );
    }
    let mut parts: Vec<String> = Vec::new();
    let mut cause: Option<&dyn std::error::Error> = Some(&e);
    while let Some(c) = cause {
        let text = printable(&c.to_string());
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Init {
        #[command(flatten)]
        args: InitArgs,
    }

    /// Every problem in the file (two unknown keys, each with the name it was probably
    /// meant to be, and a value of the wrong type) is listed at once, on the one line that
    /// also lists the problems with the flags; the wrong setting is not called missing.
    #[test]
    fn every_problem_in_the_config_file_is_listed_with_the_flags_problems() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("member.toml");
        fs::write(
            &path,
            "validatorz = 3\nmember = \"zero\"\nflavour = [\"clique\"]\nnetwork_id = 4242\n",
        )
        .unwrap();
        let init = Init::try_parse_from([
            "init".as_ref(),
            "--config".as_ref(),
            path.as_os_str(),
            "--validators".as_ref(),
            "40".as_ref(),
        ])
        .unwrap();
        let failure = run_init(init.args).unwrap_err();
        assert_eq!(failure.status(), shared::exit::Status::Usage);
        let shown = path.display();
        let lines: Vec<&str> = failure.message().split("; ").collect();
        assert_eq!(
            lines[..3],
            [
                format!("{shown}: member: must be a whole number, not a string"),
                format!("{shown}: flavour: unknown setting (did you mean flavours?)"),
                format!("{shown}: validatorz: unknown setting (did you mean validators?)"),
            ],
            "{failure}"
        );
        assert!(
            lines.contains(&"--validators 40 is outside 2-15"),
            "{failure}"
        );
        assert!(
            lines.contains(&"--admin is required (or `admin` in --config)"),
            "{failure}"
        );
        assert!(!failure.message().contains("--member"), "{failure}");
    }

    /// A SAS token travels in the query, a password in the user info: neither may reach an
    /// error line. Anything else is shown as typed.
    #[test]
    fn a_shown_source_hides_query_and_password_only() {
        for (source, shown) in [
            (
                "https://acct.blob.core.windows.net/c/networkinfo.json?sv=1&sig=SECRET#x",
                "https://acct.blob.core.windows.net/c/networkinfo.json?<query redacted>",
            ),
            (
                "http://user:SECRET@127.0.0.1:8080/n.json",
                "http://user:redacted@127.0.0.1:8080/n.json",
            ),
            (
                "http://127.0.0.1:8080/n.json",
                "http://127.0.0.1:8080/n.json",
            ),
            (
                "./member0/out/networkinfo.json",
                "./member0/out/networkinfo.json",
            ),
        ] {
            assert_eq!(shown_source(source), shown, "{source}");
        }
    }

    #[test]
    fn a_consortium_data_base_url_means_its_networkinfo() {
        for (given, fetched) in [
            (
                "https://m0.example/api",
                "https://m0.example/api/networkinfo",
            ),
            ("https://m0.example/", "https://m0.example/networkinfo"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/networkinfo"),
            (
                "https://m0.example/networkinfo",
                "https://m0.example/networkinfo",
            ),
            (
                "https://a.blob.core.windows.net/c/networkinfo.json?sv=1",
                "https://a.blob.core.windows.net/c/networkinfo.json?sv=1",
            ),
        ] {
            assert_eq!(data_api_url(given), fetched, "{given}");
        }
    }
}
